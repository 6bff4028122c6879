//! The sale end to end over real sockets: buy and check-availability serving HTTP, paid
//! orders through the real Pub/Sub emulator pushing to consume-order, Postgres and Redis (the
//! thousand fans also with the Spanner emulator as the order store).

mod common;

use gate::ReadModel;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;

use domain::{Event, OrderId, OrderMessage, OrderStatus};
use pubsub::OrderPublisher;
use serde_json::{Value, json};
use store::OrderRepository;
use testkit::{TestEnv, books_in};

/// How long a relay keeps an order it took (the default of `RELAY_LEASE_MS`).
const RELAY_LEASE: Duration = Duration::from_secs(30);

struct Stack {
    buy: String,
    read: String,
    topic: String,
}

/// Serves the three functions for `ev`, with a push subscription from a fresh topic to the
/// consumer (dead-lettering after 5 attempts). Returns the URLs and the dead-letter pull sub.
async fn stack(env: &TestEnv, ev: &Event) -> (Stack, String) {
    stack_with(env, ev, Arc::new(env.repo())).await
}

/// `stack` with `repo` as the consumer's order store.
async fn stack_with(env: &TestEnv, ev: &Event, repo: Arc<dyn OrderRepository>) -> (Stack, String) {
    let consumer = common::serve(consume_order::app(consume_order::AppState::new(
        repo,
        env.gate().await,
        consume_order::PushAuth::Token(common::PUSH_TOKEN.into()),
    )))
    .await;
    let topic = common::topic(env).await;
    let push = format!("{consumer}/pubsub/orders?token={}", common::PUSH_TOKEN);
    let dead = common::push_with_dead_letter(env, &topic, &push, 5).await;
    let buy = common::serve(buy::app(common::buy_state(env, &topic).await)).await;
    let read_state = check_availability::AppState::new(env.gate().await);
    read_state.refresh().await.unwrap();
    read_state.spawn_refresher(Duration::from_millis(100));
    let read = common::serve(check_availability::app(read_state)).await;
    let _ = ev;
    (Stack { buy, read, topic }, dead)
}

/// Waits until no order of the event is `confirming` (the queue has drained).
async fn drain(env: &TestEnv, ev: &Event, within: Duration) {
    let gate = env.gate().await;
    let start = Instant::now();
    loop {
        let snap = gate.refresh(&ev.id).await.unwrap().unwrap();
        if snap.stock.values().all(|s| s.confirming == 0) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "queue did not drain: {:?}",
            snap.stock
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Fan {
    Paid,
    SoldOut,
    Other(u16),
}

async fn fan(http: reqwest::Client, buy: String, ev: Event, i: usize) -> (Fan, Option<String>) {
    let res = http
        .post(format!("{buy}/v1/events/{}/orders", ev.id))
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"ticket_type": "vip-3-day", "quantity": 1, "email": format!("fan{i}@example.at")}))
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    match status {
        202 => {}
        409 if body["type"] == "/problems/sold-out" => return (Fan::SoldOut, None),
        s => return (Fan::Other(s), None),
    }
    let id = body["order_id"].as_str().unwrap().to_owned();
    let res = http
        .post(format!("{buy}/v1/orders/{id}/payment"))
        .json(&json!({"payment_token": "tok_approve"}))
        .send()
        .await
        .unwrap();
    match res.status().as_u16() {
        202 => (Fan::Paid, Some(id)),
        s => (Fan::Other(s), Some(id)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_fans_two_hundred_tickets_exactly_two_hundred_orders() {
    let env = TestEnv::get();
    a_thousand_fans(&env, Arc::new(env.repo())).await;
}

/// The same sale with Cloud Spanner (the emulator) as the order store.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_fans_two_hundred_tickets_on_spanner() {
    let env = TestEnv::get();
    a_thousand_fans(&env, Arc::new(testkit::spanner_repo().await)).await;
}

async fn a_thousand_fans(env: &TestEnv, repo: Arc<dyn OrderRepository>) {
    let ev = env.seed_in(&*repo, 200, -1, 600).await;
    let (stack, _dead) = stack_with(env, &ev, repo.clone()).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()
        .unwrap();

    let fans: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(fan(http.clone(), stack.buy.clone(), ev.clone(), i)))
        .collect();
    let mut paid = vec![];
    let mut sold_out = 0;
    for f in fans {
        match f.await.unwrap() {
            (Fan::Paid, Some(id)) => paid.push(id),
            (Fan::SoldOut, _) => sold_out += 1,
            other => panic!("a fan got an unclear answer: {other:?}"),
        }
    }
    assert_eq!(paid.len(), 200, "exactly the capacity is sold");
    assert_eq!(sold_out, 800, "every other fan is told it is sold out");

    drain(env, &ev, Duration::from_secs(90)).await;
    let vip = books_in(&*repo, &ev.id, "vip-3-day").await;
    assert_eq!(
        (vip.sold, vip.confirmed_orders, vip.rejected_orders),
        (200, 200, 0)
    );

    // Every fan who was told "confirming" has exactly one persisted order with one ticket,
    // and the read path says so.
    let mut codes = HashSet::new();
    for id in &paid {
        let stored = repo
            .order(OrderId::parse(id).unwrap())
            .await
            .unwrap()
            .expect("paid order persisted");
        assert_eq!(stored.status, OrderStatus::Confirmed);
        assert_eq!(stored.tickets.len(), 1);
        assert!(
            codes.insert(stored.tickets[0].clone()),
            "duplicate ticket code"
        );
    }
    let some = &paid[0];
    let view: Value = reqwest::get(format!("{}/v1/orders/{some}", stack.read))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["status"], "confirmed");
    assert_eq!(view["tickets"].as_array().unwrap().len(), 1);

    env.assert_audit_clean_in(&*repo, &ev.id).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    let avail: Value = reqwest::get(format!("{}/v1/events/{}/availability", stack.read, ev.id))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vip = avail["ticket_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "vip-3-day")
        .unwrap()
        .clone();
    assert_eq!(vip["available"], 0);
    assert_eq!(vip["status"], "sold_out");
}

#[tokio::test]
async fn a_message_the_consumer_keeps_failing_ends_in_the_dead_letter_topic() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    // A consumer whose database is down answers 503 to every delivery.
    let dead_db = env.unreachable_repo();
    let failing = consume_order::AppState::new(
        Arc::new(dead_db),
        env.gate().await,
        consume_order::PushAuth::Token(common::PUSH_TOKEN.into()),
    );
    let stats = failing.stats.clone();
    let consumer = common::serve(consume_order::app(failing)).await;
    let topic = common::topic(&env).await;
    let push = format!("{consumer}/pubsub/orders?token={}", common::PUSH_TOKEN);
    let dead = common::push_with_dead_letter(&env, &topic, &push, 5).await;
    let msg = OrderMessage {
        order_id: OrderId::new(),
        event: ev.id.clone(),
        ticket_type: domain::TicketTypeId::parse("vip-3-day").unwrap(),
        quantity: domain::Quantity::parse(1).unwrap(),
        email: domain::Email::parse("poison@example.at").unwrap(),
        amount_cents: 1,
        payment_ref: "ref".into(),
        paid_at: chrono::Utc::now(),
        trace: None,
    };
    common::publisher(&env, &topic)
        .await
        .publish(&msg)
        .await
        .unwrap();
    let start = Instant::now();
    let dead_lettered = loop {
        let got = common::pull(&env, &dead).await;
        if !got.is_empty() {
            break got;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(dead_lettered.len(), 1);
    let m = &dead_lettered[0]["message"];
    assert_eq!(m["attributes"]["order_id"], msg.order_id.to_string());
    assert_eq!(
        m["attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"],
        "5"
    );
    assert!(stats.retryable.load(std::sync::atomic::Ordering::Relaxed) >= 5);
}

#[tokio::test]
async fn a_failed_publish_after_payment_loses_nothing_and_the_relay_finishes_it() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let (stack, _dead) = stack(&env, &ev).await;
    // buy with Pub/Sub unreachable.
    let broken = buy::AppState {
        gate: Arc::new(env.gate().await),
        publisher: Arc::new(
            pubsub::PubSubPublisher::connect(
                &format!("projects/{}/topics/{}", env.project, stack.topic),
                Some("127.0.0.1:1"),
                Duration::from_millis(500),
                Default::default(),
                Some(testkit::signing_key()),
            )
            .await
            .unwrap(),
        ),
        payments: Arc::new(payments::SimulatedPayments),
        limits: None,
        redeliver_after: std::time::Duration::from_secs(300),
        confirm_wait: std::time::Duration::from_secs(1),
        seen_events: Default::default(),
        room_keys: None,
    };
    let buy_down = common::serve(buy::app(broken)).await;
    let http = reqwest::Client::new();
    let (outcome, id) = fan(http.clone(), buy_down.clone(), ev.clone(), 1).await;
    assert_eq!(outcome, Fan::Other(503), "the fan is told to retry");
    let id = id.unwrap();
    let oid = OrderId::parse(&id).unwrap();
    let view = env.gate().await.order(&ev.id, oid).await.unwrap().unwrap();
    assert_eq!(
        view.status,
        OrderStatus::Confirming,
        "payment kept, tickets still frozen for the fan"
    );

    // Either the fan's retry or the relay finishes it; the relay here, with Pub/Sub back.
    let healthy = common::buy_state(&env, &stack.topic).await;
    // (The relay serves every event in this Redis: tests running beside this one may have paid
    // orders of their own in flight, so it finishes at least ours.)
    assert!(
        buy::relay_once(&healthy, Duration::ZERO, RELAY_LEASE)
            .await
            .unwrap()
            >= 1
    );
    drain(&env, &ev, Duration::from_secs(30)).await;
    // A late retry by the fan is answered, and does not duplicate anything.
    let res = http
        .post(format!("{}/v1/orders/{id}/payment", stack.buy))
        .json(&json!({"payment_token": "tok_approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 409, "already paid and confirmed");
    let stored = env.repo().order(oid).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Confirmed);
    env.assert_audit_clean(&ev.id).await;
    let inv = env.repo().inventory(&ev.id).await.unwrap();
    assert_eq!(inv.iter().map(|i| i.confirmed_orders).sum::<i64>(), 1);
}

/// Sums the samples of `name` whose labels include every pair in `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())
            .flatten()
        })
        .sum()
}

#[tokio::test]
async fn metrics_tell_the_story_of_a_sale() {
    let env = TestEnv::get();
    let ev = env.seed(3, -1, 600).await;
    let (stack, _dead) = stack(&env, &ev).await;
    let http = reqwest::Client::new();
    let mut outcomes = vec![];
    for i in 0..5 {
        outcomes.push(fan(http.clone(), stack.buy.clone(), ev.clone(), i).await.0);
    }
    assert_eq!(outcomes.iter().filter(|o| **o == Fan::Paid).count(), 3);
    drain(&env, &ev, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a snapshot refresh after the drain

    // One process serves all three functions here, so one scrape sees the whole sale.
    let text = reqwest::get(format!("{}/metrics", stack.buy))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = |name: &str, labels: &[(&str, &str)]| metric(&text, name, labels);
    assert_eq!(
        m("reservations_total", &[("outcome", "reserved")]),
        3.0,
        "{text}"
    );
    assert_eq!(m("reservations_total", &[("outcome", "sold_out")]), 2.0);
    assert_eq!(m("payments_total", &[("outcome", "approved")]), 3.0);
    assert_eq!(m("orders_published_total", &[]), 3.0);
    assert_eq!(m("publish_duration_seconds_count", &[]), 3.0);
    assert_eq!(
        m("consumer_messages_total", &[("outcome", "persisted")]),
        3.0
    );
    assert_eq!(m("order_end_to_end_seconds_count", &[]), 3.0);
    assert_eq!(
        m(
            "http_requests_total",
            &[
                ("route", "/v1/events/{event}/orders"),
                ("method", "POST"),
                ("status", "202")
            ]
        ),
        3.0
    );
    assert_eq!(
        m(
            "http_requests_total",
            &[("route", "/v1/events/{event}/orders"), ("status", "409")]
        ),
        2.0
    );
    assert_eq!(
        m(
            "http_requests_total",
            &[("route", "/pubsub/orders"), ("status", "204")]
        ),
        3.0
    );
    // One call per reservation, and the first one again: it taught this instance the event's
    // order-id salt (ADR 30).
    assert_eq!(
        m("gate_command_duration_seconds_count", &[("op", "reserve")]),
        6.0
    );
    let event = ev.id.as_str();
    assert_eq!(
        m(
            "inventory_tickets",
            &[
                ("event", event),
                ("ticket_type", "vip-3-day"),
                ("state", "sold")
            ]
        ),
        3.0
    );
    assert_eq!(
        m(
            "inventory_invariant_delta",
            &[("event", event), ("ticket_type", "vip-3-day")]
        ),
        0.0
    );
    assert!(m("snapshot_last_success_timestamp_seconds", &[]) > 1.7e9);
    assert!(m("db_pool_connections", &[("state", "open")]) >= 1.0);
}

#[tokio::test]
async fn a_dead_letter_replayed_after_the_fix_is_persisted_exactly_once() {
    use pubsub::deadletters::{Action, Choice};
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    // The consumer's database is down: every delivery fails and the order is dead-lettered.
    let failing = consume_order::AppState::new(
        Arc::new(env.unreachable_repo()),
        env.gate().await,
        consume_order::PushAuth::Token(common::PUSH_TOKEN.into()),
    );
    let broken = common::serve(consume_order::app(failing)).await;
    let topic = common::topic(&env).await;
    let dead_topic = common::topic(&env).await;
    let dead = common::subscription(&env, &dead_topic, json!({"ackDeadlineSeconds": 10})).await;
    let push = common::subscription(
        &env,
        &topic,
        json!({
            "pushConfig": {"pushEndpoint": format!("{broken}/pubsub/orders?token={}", common::PUSH_TOKEN)},
            "ackDeadlineSeconds": 10,
            "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "2s"},
            "deadLetterPolicy": {
                "deadLetterTopic": format!("projects/{}/topics/{dead_topic}", env.project),
                "maxDeliveryAttempts": 5
            }
        }),
    )
    .await;
    let buy = common::serve(buy::app(common::buy_state(&env, &topic).await)).await;
    let (outcome, id) = fan(reqwest::Client::new(), buy, ev.clone(), 1).await;
    assert_eq!(outcome, Fan::Paid);
    let id = domain::OrderId::parse(&id.unwrap()).unwrap();

    let dead_path = format!("projects/{}/subscriptions/{dead}", env.project);
    let publisher = common::publisher(&env, &topic).await;
    let host = env.pubsub_host.clone();
    let key = testkit::signing_key();
    let accepted = domain::signing::Accepted {
        current: &key,
        previous: None,
    };
    let run = |choice: Choice| {
        let (dead_path, host, publisher, accepted) = (&dead_path, &host, &publisher, &accepted);
        async move {
            pubsub::deadletters::run(
                dead_path,
                Some(host),
                publisher,
                Some(accepted),
                &choice,
                100,
                Duration::from_secs(2),
                Duration::from_secs(20),
            )
            .await
            .unwrap()
        }
    };
    // Listing shows it and leaves it there.
    let start = Instant::now();
    let listed = loop {
        let seen = run(Choice::None).await;
        if !seen.is_empty() {
            break seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never dead-lettered"
        );
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].action, Action::Kept);
    assert_eq!(listed[0].orders.as_ref().unwrap()[0].order_id, id);
    assert_eq!(
        run(Choice::None).await.len(),
        1,
        "listing must not remove it"
    );

    // The fix: the push subscription now reaches a healthy consumer.
    let healthy = common::serve(consume_order::app(common::consumer_state(&env).await)).await;
    let res = reqwest::Client::new()
        .post(common::admin(&env, &format!("subscriptions/{push}:modifyPushConfig")))
        .json(&json!({"pushConfig": {"pushEndpoint": format!("{healthy}/pubsub/orders?token={}", common::PUSH_TOKEN)}}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());

    let replayed = run(Choice::Orders([id].into())).await;
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].action, Action::Replayed);
    drain(&env, &ev, Duration::from_secs(30)).await;
    let stored = env.repo().order(id).await.unwrap().expect("persisted");
    assert_eq!(stored.status, domain::OrderStatus::Confirmed);
    assert!(run(Choice::All).await.is_empty(), "the dead letter is gone");

    // Replaying it again (an operator's double run) changes nothing: still one order.
    let msg: OrderMessage = listed[0].orders.clone().unwrap()[0].clone();
    publisher.publish(&msg).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let books = env.books(&ev.id, "vip-3-day").await;
    assert_eq!((books.confirmed_orders, books.sold), (1, 1));
    env.assert_audit_clean(&ev.id).await;
}

#[tokio::test]
async fn a_published_order_the_broker_lost_is_published_again_and_persisted_once() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let (stack, _dead) = stack(&env, &ev).await;
    // buy publishes to a topic nobody subscribes to: the message is lost, though "published".
    let lost_topic = common::topic(&env).await;
    let lossy = buy::AppState {
        redeliver_after: Duration::from_millis(200),
        seen_events: Default::default(),
        room_keys: None,
        ..common::buy_state(&env, &lost_topic).await
    };
    let buy_lossy = common::serve(buy::app(lossy)).await;
    let (outcome, id) = fan(reqwest::Client::new(), buy_lossy, ev.clone(), 1).await;
    assert_eq!(outcome, Fan::Paid);
    let id = OrderId::parse(&id.unwrap()).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let gate = env.gate().await;
    assert_eq!(
        gate.order(&ev.id, id).await.unwrap().unwrap().status,
        OrderStatus::Confirming,
        "nothing persisted it"
    );
    // The relay (here over the topic the consumer listens to) publishes it once more.
    let relay = buy::AppState {
        redeliver_after: Duration::from_millis(200),
        seen_events: Default::default(),
        room_keys: None,
        ..common::buy_state(&env, &stack.topic).await
    };
    assert_eq!(
        buy::relay_once(&relay, Duration::ZERO, RELAY_LEASE)
            .await
            .unwrap(),
        1
    );
    drain(&env, &ev, Duration::from_secs(20)).await;
    assert_eq!(
        gate.order(&ev.id, id).await.unwrap().unwrap().status,
        OrderStatus::Confirmed
    );
    // Persisted: out of the outbox for good.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        buy::relay_once(&relay, Duration::ZERO, RELAY_LEASE)
            .await
            .unwrap(),
        0
    );
    let books = env.books(&ev.id, "vip-3-day").await;
    assert_eq!((books.confirmed_orders, books.sold), (1, 1));
    env.assert_audit_clean(&ev.id).await;
}

/// Pub/Sub down: every publish fails at once, so paid orders stay in the outbox.
struct Down;

#[async_trait::async_trait]
impl OrderPublisher for Down {
    async fn publish(&self, _: &OrderMessage) -> Result<String, pubsub::PublishError> {
        Err(pubsub::PublishError::Unavailable("down"))
    }
    async fn publish_charge(
        &self,
        _: &domain::OrderCharge,
    ) -> Result<String, pubsub::PublishError> {
        Err(pubsub::PublishError::Unavailable("down"))
    }
}

/// Records what it publishes (to nowhere).
#[derive(Default)]
struct Recording(std::sync::Mutex<Vec<OrderId>>);

#[async_trait::async_trait]
impl OrderPublisher for Recording {
    async fn publish(&self, msg: &OrderMessage) -> Result<String, pubsub::PublishError> {
        self.0.lock().unwrap().push(msg.order_id);
        Ok("recorded".into())
    }
    async fn publish_charge(
        &self,
        _: &domain::OrderCharge,
    ) -> Result<String, pubsub::PublishError> {
        Err(pubsub::PublishError::Unavailable("records orders only"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_over_one_outbox_publish_each_due_order_once() {
    let env = TestEnv::get();
    let ev = env.seed(20, -1, 600).await;
    let topic = common::topic(&env).await;
    let with = |publisher: Arc<dyn OrderPublisher>| {
        let env = &env;
        let topic = &topic;
        async move {
            buy::AppState {
                publisher,
                ..common::buy_state(env, topic).await
            }
        }
    };
    // Eight fans pay while Pub/Sub is down: their orders wait in the outbox.
    let buy = common::serve(buy::app(with(Arc::new(Down)).await)).await;
    let mut paid = HashSet::new();
    for i in 0..8 {
        let (outcome, id) = fan(reqwest::Client::new(), buy.clone(), ev.clone(), i).await;
        assert_eq!(outcome, Fan::Other(503), "payment taken, publish delayed");
        paid.insert(OrderId::parse(&id.unwrap()).unwrap());
    }
    // A relay that still cannot publish holds them for its lease: the other passes over them.
    let lease = Duration::from_millis(400);
    let stuck = with(Arc::new(Down)).await;
    assert_eq!(
        buy::relay_once(&stuck, Duration::ZERO, lease)
            .await
            .unwrap(),
        0
    );
    let (a, b) = (
        Arc::new(Recording::default()),
        Arc::new(Recording::default()),
    );
    let (relay_a, relay_b) = (with(a.clone()).await, with(b.clone()).await);
    assert_eq!(
        buy::relay_once(&relay_a, Duration::ZERO, lease)
            .await
            .unwrap(),
        0
    );
    // Once the lease has run out, two instances' relays at once publish each order once.
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let (na, nb) = tokio::join!(
        buy::relay_once(&relay_a, Duration::ZERO, lease),
        buy::relay_once(&relay_b, Duration::ZERO, lease)
    );
    assert_eq!(na.unwrap() + nb.unwrap(), 8);
    let mut published: Vec<OrderId> = a.0.lock().unwrap().clone();
    published.extend(b.0.lock().unwrap().iter());
    assert_eq!(published.len(), 8, "each due order published once");
    assert_eq!(published.into_iter().collect::<HashSet<_>>(), paid);
    // Published: nothing is due again until the redelivery time (five minutes here).
    tokio::time::sleep(lease + Duration::from_millis(100)).await;
    let (na, nb) = tokio::join!(
        buy::relay_once(&relay_a, Duration::ZERO, lease),
        buy::relay_once(&relay_b, Duration::ZERO, lease)
    );
    assert_eq!((na.unwrap(), nb.unwrap()), (0, 0));
}

/// Reserves `quantity` VIP 3-Day passes for `email` and pays: the order id, the payment's
/// answer and how long the payment took.
async fn reserve_and_pay(
    http: &reqwest::Client,
    buy: &str,
    ev: &Event,
    email: &str,
    quantity: u32,
) -> (String, Value, Duration) {
    let res = http
        .post(format!("{buy}/v1/events/{}/orders", ev.id))
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&json!({"ticket_type": "vip-3-day", "quantity": quantity, "email": email}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let id = res.json::<Value>().await.unwrap()["order_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let started = Instant::now();
    let res = http
        .post(format!("{buy}/v1/orders/{id}/payment"))
        .json(&json!({"payment_token": "tok_approve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    (id, res.json().await.unwrap(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_answers_with_the_outcome_when_it_comes_in_time() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let (stack, _dead) = stack(&env, &ev).await;
    let http = reqwest::Client::new();
    // Warm the consumer's path once: the first message through a fresh subscription is slow.
    assert_eq!(
        fan(http.clone(), stack.buy.clone(), ev.clone(), 0).await.0,
        Fan::Paid
    );
    drain(&env, &ev, Duration::from_secs(20)).await;
    let (id, body, _) = reserve_and_pay(&http, &stack.buy, &ev, "quick@example.at", 2).await;
    assert_eq!(body["status"], "confirmed", "{body}");
    // Its tickets are there at once.
    let order: Value = http
        .get(format!("{}/v1/orders/{id}", stack.read))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(order["status"], "confirmed");
    assert_eq!(order["tickets"].as_array().unwrap().len(), 2);
    env.assert_audit_clean(&ev.id).await;
}

#[tokio::test]
async fn a_payment_whose_outcome_is_late_answers_confirming_after_the_wait() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    // Nobody consumes this topic: the outcome never comes.
    let topic = common::topic(&env).await;
    let state = buy::AppState {
        confirm_wait: Duration::from_millis(300),
        ..common::buy_state(&env, &topic).await
    };
    let buy = common::serve(buy::app(state)).await;
    let http = reqwest::Client::new();
    let (_, body, waited) = reserve_and_pay(&http, &buy, &ev, "late@example.at", 1).await;
    assert_eq!(body["status"], "confirming");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

/// A replay re-signs what it republishes, so what it republishes must have been buy's: a
/// message on the dead-letter topic signed by no accepted key (a forgery, or a key long
/// retired) is refused, reported and left where it is; one signed by the previous key of a
/// rotation is replayed.
#[tokio::test]
async fn a_dead_letter_no_accepted_key_signed_is_never_replayed() {
    use domain::signing::Accepted;
    use pubsub::deadletters::{Action, Choice};
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let dead_topic = common::topic(&env).await;
    let dead = common::subscription(&env, &dead_topic, json!({"ackDeadlineSeconds": 10})).await;
    let orders_topic = common::topic(&env).await;
    let orders = common::subscription(&env, &orders_topic, json!({"ackDeadlineSeconds": 10})).await;
    let order = |cents: i64| OrderMessage {
        order_id: domain::OrderId::new(),
        event: ev.id.clone(),
        ticket_type: domain::TicketTypeId::parse("vip-3-day").unwrap(),
        quantity: domain::Quantity::parse(2).unwrap(),
        email: domain::Email::parse("forger@example.at").unwrap(),
        amount_cents: cents,
        payment_ref: "sim_forged".into(),
        paid_at: chrono::Utc::now(),
        trace: None,
    };
    let signed_by = |key: Option<domain::signing::MessageKey>| {
        let (env, dead_topic) = (&env, &dead_topic);
        async move {
            pubsub::PubSubPublisher::connect(
                &format!("projects/{}/topics/{dead_topic}", env.project),
                Some(&env.pubsub_host),
                Duration::from_secs(5),
                Default::default(),
                key,
            )
            .await
            .unwrap()
        }
    };
    let other =
        domain::signing::MessageKey::parse("a-key-that-is-not-buys-0123456789abcdef").unwrap();
    let previous =
        domain::signing::MessageKey::parse("the-previous-key-of-a-rotation-0123456789").unwrap();
    let (forged, unsigned, rotated) = (order(1), order(1), order(2 * 34_900));
    signed_by(Some(other)).await.publish(&forged).await.unwrap();
    signed_by(None).await.publish(&unsigned).await.unwrap();
    signed_by(Some(previous.clone()))
        .await
        .publish(&rotated)
        .await
        .unwrap();

    let republisher = common::publisher(&env, &orders_topic).await;
    let key = testkit::signing_key();
    let accepted = Accepted {
        current: &key,
        previous: Some(&previous),
    };
    let dead_path = format!("projects/{}/subscriptions/{dead}", env.project);
    let run = |choice: Choice| {
        let (dead_path, republisher, accepted) = (&dead_path, &republisher, &accepted);
        let host = env.pubsub_host.clone();
        async move {
            pubsub::deadletters::run(
                dead_path,
                Some(&host),
                republisher,
                Some(accepted),
                &choice,
                100,
                Duration::from_secs(3),
                Duration::from_secs(20),
            )
            .await
            .unwrap()
        }
    };
    let seen = run(Choice::All).await;
    let action_of = |o: &OrderMessage| {
        seen.iter()
            .find(|d| {
                d.orders
                    .as_ref()
                    .is_ok_and(|os| os[0].order_id == o.order_id)
            })
            .map(|d| d.action)
    };
    assert_eq!(action_of(&forged), Some(Action::Refused), "{seen:?}");
    assert_eq!(action_of(&unsigned), Some(Action::Refused), "{seen:?}");
    assert_eq!(action_of(&rotated), Some(Action::Replayed), "{seen:?}");

    // Only the genuine one reached the orders topic, under buy's current key.
    let start = Instant::now();
    let mut republished = vec![];
    while republished.is_empty() && start.elapsed() < Duration::from_secs(10) {
        republished = common::pull(&env, &orders).await;
    }
    assert_eq!(republished.len(), 1, "{republished:?}");
    let data = base64::engine::general_purpose::STANDARD
        .decode(republished[0]["message"]["data"].as_str().unwrap())
        .unwrap();
    let batch = domain::OrderBatch::decode(&data).unwrap();
    assert_eq!(batch.orders[0].order_id, rotated.order_id);
    let sig = republished[0]["message"]["attributes"]["signature"]
        .as_str()
        .unwrap();
    assert!(key.verify(&data, sig), "re-signed with the current key");

    // The refused ones stay for whoever investigates them.
    let left = run(Choice::None).await;
    assert_eq!(left.len(), 2, "{left:?}");
}
