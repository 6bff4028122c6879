//! Redis restarting empty, on the real Redis and PostgreSQL started by scripts/test: the gate
//! is rebuilt from the database plus the paid orders still in flight, without overselling,
//! with the per-customer limit intact, and by itself (the watcher consume-order runs).

use gate::{
    Admission, AdmissionRules, Approval, Gate, PayBegin, PaymentFlow, Presence, ReadModel,
    ReserveOutcome, Stock,
};
use std::time::Duration;

use chrono::Utc;
use domain::TicketTypeId;
use domain::{Email, Event, IdempotencyKey, OrderId, OrderMessage, OrderStatus, Quantity};
use recovery::{RestoreOptions, RestoreReport, WatchOptions, restore_event};
use store::OrderRepository;
use testkit::{OwnRedis, Scoped, TestEnv, rollback};

const TT: &str = "vip-3-day";

async fn reserve(gate: &Gate, ev: &Event, n: i64, who: &str) -> ReserveOutcome {
    gate.reserve(
        &ev.id,
        &TicketTypeId::parse(TT).unwrap(),
        Quantity::parse(n).unwrap(),
        &Email::parse(who).unwrap(),
        &IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap(),
        &AdmissionRules::default(),
    )
    .await
    .unwrap()
}

fn order_id(o: &ReserveOutcome) -> OrderId {
    match o {
        ReserveOutcome::Reserved { order_id, .. } => *order_id,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

/// Reserves and pays through the gate: the message buy would publish.
async fn paid(gate: &Gate, ev: &Event, n: i64, who: &str) -> OrderMessage {
    let id = order_id(&reserve(gate, ev, n, who).await);
    pay(gate, ev, id, n, who).await
}

/// Pays a hold through the gate: the message buy would publish.
async fn pay(gate: &Gate, ev: &Event, id: OrderId, n: i64, who: &str) -> OrderMessage {
    let PayBegin::Charge {
        amount_cents,
        attempt,
        ..
    } = gate
        .pay_begin(&ev.id, id, "tok_approve", None)
        .await
        .unwrap()
    else {
        panic!("pay_begin")
    };
    let paid_at = Utc::now();
    let reference = format!("ref-{id}");
    let Approval::Recorded(_) = gate
        .pay_approved(&ev.id, id, &attempt, &reference, paid_at)
        .await
        .unwrap()
    else {
        panic!("approval")
    };
    OrderMessage {
        order_id: id,
        event: ev.id.clone(),
        ticket_type: TicketTypeId::parse(TT).unwrap(),
        quantity: domain::Quantity::parse(n).unwrap(),
        email: domain::Email::parse(who).unwrap(),
        amount_cents,
        payment_ref: reference,
        paid_at,
        trace: None,
    }
}

/// What consume-order does with a delivery: persist, then mirror in the gate (repairing the
/// event from the books first when Redis went back in time, ADR 56).
async fn deliver(repo: &dyn OrderRepository, gate: &Gate, msg: &OrderMessage) -> OrderStatus {
    let p = repo.persist(msg).await.unwrap();
    match testkit::finalize(gate, msg, &p).await {
        Err(gate::GateError::WentBack(ev)) => {
            recovery::repair(gate, repo, &ev).await.unwrap();
            testkit::finalize(gate, msg, &p).await.unwrap();
        }
        other => {
            other.unwrap();
        }
    }
    p.status
}

async fn stock(gate: &Gate, ev: &Event) -> Stock {
    let s = gate.refresh(&ev.id).await.unwrap().unwrap().stock[TT];
    assert_eq!(s.delta(), 0, "invariant broken: {s:?}");
    s
}

async fn wait_for(gate: &Gate, ev: &Event, want: Presence, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if gate.presence(&ev.id).await.unwrap() == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} never became {want:?}",
            ev.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn quick(quiet_ms: u64) -> RestoreOptions {
    RestoreOptions {
        quiet: Duration::from_millis(quiet_ms),
        poll: Duration::from_millis(100),
        max_wait: Duration::from_secs(60),
    }
}

/// The watcher over `gate` and the books of the test's own `events` only (the database is
/// shared by every test running at once).
fn watch_only(
    gate: &Gate,
    env: &TestEnv,
    events: &[&Event],
    opts: WatchOptions,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(recovery::watch(
        gate.clone(),
        std::sync::Arc::new(Scoped {
            repo: env.repo(),
            events: events.iter().map(|e| e.id.clone()).collect(),
        }),
        opts,
    ))
}

#[tokio::test]
async fn an_event_redis_lost_is_rebuilt_from_the_books_and_in_flight_orders() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let (gate, repo) = (env.gate().await, env.repo());
    let limit = i64::from(ev.ticket_types[0].per_customer_limit);

    // Before the loss: one order persisted, one paid and still in Pub/Sub, one only held.
    let done = paid(&gate, &ev, 2, "alice@x.at").await;
    assert_eq!(deliver(&repo, &gate, &done).await, OrderStatus::Confirmed);
    let in_flight = paid(&gate, &ev, 3, "bob@x.at").await;
    let held = order_id(&reserve(&gate, &ev, 2, "carol@x.at").await);

    // Redis restarts empty: every key of the event is gone.
    gate.reset(&ev.id).await.unwrap();
    assert_eq!(gate.presence(&ev.id).await.unwrap(), Presence::Absent);
    assert_eq!(
        reserve(&gate, &ev, 1, "dave@x.at").await,
        ReserveOutcome::UnknownEvent
    );

    let restore = {
        let (gate, repo, ev) = (gate.clone(), env.repo(), ev.clone());
        tokio::spawn(async move { restore_event(&gate, &repo, &ev, quick(3000)).await })
    };
    wait_for(&gate, &ev, Presence::Restoring, Duration::from_secs(10)).await;
    // Paused while the books may still move: no hold against them.
    assert_eq!(
        reserve(&gate, &ev, 1, "dave@x.at").await,
        ReserveOutcome::Paused
    );
    let s = stock(&gate, &ev).await;
    assert_eq!((s.available, s.held, s.confirming, s.sold), (8, 0, 0, 2));

    // The in-flight order arrives while paused; the next pass counts it.
    assert_eq!(
        deliver(&repo, &gate, &in_flight).await,
        OrderStatus::Confirmed
    );
    let report = tokio::time::timeout(Duration::from_secs(30), restore)
        .await
        .expect("restore finishes once the books are quiet")
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            report,
            RestoreReport::Resumed {
                sold: 5,
                forced: false,
                ..
            }
        ),
        "{report:?}"
    );
    assert_eq!(gate.presence(&ev.id).await.unwrap(), Presence::Live);
    let s = stock(&gate, &ev).await;
    assert_eq!((s.available, s.held, s.confirming, s.sold), (5, 0, 0, 5));

    // The lost hold is gone (its fan reserves again); the limit still counts alice's tickets.
    assert!(gate.order(&ev.id, held).await.unwrap().is_none());
    assert!(matches!(
        reserve(&gate, &ev, limit - 1, "alice@x.at").await,
        ReserveOutcome::Limit { remaining, .. } if remaining == (limit - 2) as u64
    ));

    // Sell out the rest: the database sells exactly the capacity, rejects nothing.
    for (n, who) in [(2, "alice@x.at"), (3, "erin@x.at")] {
        let msg = paid(&gate, &ev, n, who).await;
        assert_eq!(deliver(&repo, &gate, &msg).await, OrderStatus::Confirmed);
    }
    assert_eq!(
        reserve(&gate, &ev, 1, "frank@x.at").await,
        ReserveOutcome::SoldOut
    );
    let books = env.books(&ev.id, TT).await;
    assert_eq!((books.sold, books.rejected_orders), (10, 0));
    env.assert_audit_clean(&ev.id).await;
}

#[tokio::test]
async fn a_late_delivery_after_reopening_is_counted_once_and_a_live_gate_is_never_overwritten() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let (gate, repo) = (env.gate().await, env.repo());
    let late = paid(&gate, &ev, 2, "late@x.at").await;
    gate.reset(&ev.id).await.unwrap();

    let report = restore_event(&gate, &repo, &ev, quick(200)).await.unwrap();
    assert!(
        matches!(report, RestoreReport::Resumed { sold: 0, .. }),
        "{report:?}"
    );
    let held = order_id(&reserve(&gate, &ev, 1, "new@x.at").await);

    // The order paid before the loss arrives after reopening (a slow redelivery).
    for _ in 0..2 {
        assert_eq!(deliver(&repo, &gate, &late).await, OrderStatus::Confirmed);
        let s = stock(&gate, &ev).await;
        assert_eq!((s.available, s.held, s.sold), (7, 1, 2), "counted once");
    }
    let view = gate.order(&ev.id, late.order_id).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Confirmed);
    assert_eq!(view.tickets.len(), 2);

    // Restoring a live event is refused: the hold taken after reopening stays.
    let again = restore_event(&gate, &repo, &ev, quick(0)).await.unwrap();
    assert_eq!(again, RestoreReport::AlreadyLive);
    assert_eq!(
        gate.order(&ev.id, held).await.unwrap().unwrap().status,
        OrderStatus::Reserved
    );
    assert_eq!(stock(&gate, &ev).await.held, 1);
}

#[tokio::test]
async fn a_redelivery_of_an_order_the_books_held_is_not_counted_twice() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let (gate, repo) = (env.gate().await, env.repo());
    // Persisted, but Redis died before finalize: Pub/Sub will deliver it again.
    let msg = paid(&gate, &ev, 3, "twice@x.at").await;
    assert!(!repo.persist(&msg).await.unwrap().duplicate);
    gate.reset(&ev.id).await.unwrap();
    let report = restore_event(&gate, &repo, &ev, quick(200)).await.unwrap();
    assert!(
        matches!(report, RestoreReport::Resumed { sold: 3, .. }),
        "{report:?}"
    );

    // The redelivery after reopening: the restore counted it already.
    assert_eq!(deliver(&repo, &gate, &msg).await, OrderStatus::Confirmed);
    let s = stock(&gate, &ev).await;
    assert_eq!((s.available, s.sold), (7, 3), "counted once");
    // And the fan's status read finds the order again (its index was lost with Redis).
    assert_eq!(
        gate.event_of(msg.order_id).await.unwrap(),
        Some(ev.id.clone())
    );
    let view = gate.order(&ev.id, msg.order_id).await.unwrap().unwrap();
    assert_eq!(
        (view.status, view.tickets.len()),
        (OrderStatus::Confirmed, 3)
    );
    env.assert_audit_clean(&ev.id).await;
}

#[tokio::test]
async fn the_watcher_rebuilds_an_event_when_redis_restarts_empty() {
    let env = TestEnv::get();
    // A Redis of the test's own, restarted without its data (a failover without persistence).
    let mut redis = OwnRedis::start().await;
    let gate = Gate::connect(&redis.url, Duration::from_secs(2))
        .await
        .unwrap();
    let repo = env.repo();
    let ev = env.seed(10, -1, 600).await;
    gate.seed(&ev).await.unwrap();
    let msg = paid(&gate, &ev, 3, "w@x.at").await;
    assert_eq!(deliver(&repo, &gate, &msg).await, OrderStatus::Confirmed);

    let watcher = watch_only(
        &gate,
        &env,
        &[&ev],
        WatchOptions {
            every: Duration::from_millis(200),
            restore: quick(300),
            ..Default::default()
        },
    );
    redis.wipe_and_restart().await;
    // Caught on two checks in a row, rebuilt paused, reopened once quiet.
    wait_for(&gate, &ev, Presence::Live, Duration::from_secs(20)).await;
    let s = stock(&gate, &ev).await;
    assert_eq!((s.available, s.held, s.confirming, s.sold), (7, 0, 0, 3));
    // The fan reads the confirmed order again, with no message to bring it back.
    let view = gate.order(&ev.id, msg.order_id).await.unwrap().unwrap();
    assert_eq!(
        (view.status, view.tickets),
        (
            OrderStatus::Confirmed,
            repo.order(msg.order_id).await.unwrap().unwrap().tickets
        )
    );
    assert!(matches!(
        reserve(&gate, &ev, 2, "w@x.at").await,
        ReserveOutcome::Limit { remaining: 1, .. }
    ));
    order_id(&reserve(&gate, &ev, 1, "w@x.at").await);
    watcher.abort();
}

/// A Redis of the test's own (its rollbacks touch no other test), a gate over it and a plain
/// connection to read what it holds.
async fn own_gate() -> (OwnRedis, Gate, redis::aio::MultiplexedConnection) {
    let own = OwnRedis::start().await;
    let gate = Gate::connect(&own.url, Duration::from_secs(2))
        .await
        .unwrap();
    let redis = redis::Client::open(own.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (own, gate, redis)
}

/// The tickets of the VIP type Redis counts sold, read as they are stored.
async fn sold_in(redis: &mut redis::aio::MultiplexedConnection, ev: &Event) -> i64 {
    let sold: Option<i64> = redis::cmd("HGET")
        .arg(format!("{{ev:{}}}:tt:{TT}", ev.id))
        .arg("sold")
        .query_async(redis)
        .await
        .unwrap();
    sold.unwrap_or(0)
}

/// Redis rolled back to an older snapshot while the sale is quiet: no finalize comes to find it.
/// The watcher of the process whose writes Redis lost sees its mark gone back (ADR 56) on its
/// next check and repairs the event live, order by order: no pause, no new order-id salt, the
/// paid order reads confirmed again and its tickets are off sale. Holds are not the books':
/// one Redis brought back (a hold its fan had cancelled) lasts until its deadline.
#[tokio::test]
async fn the_watcher_repairs_an_event_gone_back_in_time_live() {
    let env = TestEnv::get();
    let (own, gate, mut redis) = own_gate().await;
    let repo = env.repo();
    let ev = env.seed(10, -1, 600).await;
    gate.seed(&ev).await.unwrap();
    let first = paid(&gate, &ev, 1, "f@x.at").await;
    assert_eq!(deliver(&repo, &gate, &first).await, OrderStatus::Confirmed);
    let a = order_id(&reserve(&gate, &ev, 2, "a@x.at").await);
    let b = order_id(&reserve(&gate, &ev, 1, "b@x.at").await);
    let salt_before = rollback::order_id_salt(&own.url, &ev.id).await;
    let taken = rollback::snapshot(&own.url, &ev.id).await;
    let msg = pay(&gate, &ev, a, 2, "a@x.at").await;
    assert_eq!(deliver(&repo, &gate, &msg).await, OrderStatus::Confirmed);
    gate.cancel(&ev.id, b, None).await.unwrap();
    rollback::go_back(&own.url, &ev.id, &taken).await;
    assert_eq!(sold_in(&mut redis, &ev).await, 1, "rolled back");

    let started = std::time::Instant::now();
    let watcher = watch_only(
        &gate,
        &env,
        &[&ev],
        WatchOptions {
            every: Duration::from_millis(100),
            ..WatchOptions::default()
        },
    );
    while sold_in(&mut redis, &ev).await != 3 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never repaired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
    let s = stock(&gate, &ev).await;
    assert_eq!(
        (s.available, s.held, s.confirming, s.sold),
        (6, 1, 0, 3),
        "the books' sales; b's hold back until its deadline"
    );
    let snap = gate.refresh(&ev.id).await.unwrap().unwrap();
    assert!(!snap.paused, "repaired live");
    assert_eq!(
        rollback::order_id_salt(&own.url, &ev.id).await,
        salt_before,
        "the same order-id salt"
    );
    let stored = repo.order(a).await.unwrap().unwrap();
    let view = gate.order(&ev.id, a).await.unwrap().unwrap();
    assert_eq!(
        (view.status, &view.tickets),
        (OrderStatus::Confirmed, &stored.tickets)
    );
}

/// Redis rolled back to an older snapshot (a failover to a replica that lagged, a restore
/// from RDB): the event is there, but behind the books, and no message is in flight to heal
/// it. A watcher that wrote no mark there (its process started since, so the marks cannot tell,
/// ADR 56) finds it by the books' sales and rebuilds it from the books (the fans' orders too);
/// an event that is only busy is left alone.
#[tokio::test]
async fn the_watcher_rebuilds_an_event_redis_rolled_back() {
    let env = TestEnv::get();
    let (own, gate, mut redis) = own_gate().await;
    let repo = env.repo();
    let (ev, calm) = (env.seed(10, -1, 600).await, env.seed(10, -1, 600).await);
    gate.seed(&ev).await.unwrap();
    gate.seed(&calm).await.unwrap();
    // The snapshot: `a` holds 2 (and will pay), `b` holds 1 (and will let it lapse), `p` has
    // paid for 1 and its order is still on its way to the books.
    let a = order_id(&reserve(&gate, &ev, 2, "a@x.at").await);
    let b = order_id(&reserve(&gate, &ev, 1, "b@x.at").await);
    let in_flight = paid(&gate, &ev, 1, "p@x.at").await;
    let taken = rollback::snapshot(&own.url, &ev.id).await;
    let msg = pay(&gate, &ev, a, 2, "a@x.at").await;
    assert_eq!(deliver(&repo, &gate, &msg).await, OrderStatus::Confirmed);
    gate.cancel(&ev.id, b, None).await.unwrap();
    let busy = paid(&gate, &calm, 1, "c@x.at").await;
    assert_eq!(deliver(&repo, &gate, &busy).await, OrderStatus::Confirmed);
    rollback::go_back(&own.url, &ev.id, &taken).await;
    assert_eq!(sold_in(&mut redis, &ev).await, 0, "rolled back");

    let started = std::time::Instant::now();
    let fresh = Gate::connect(&own.url, Duration::from_secs(2))
        .await
        .unwrap();
    let watcher = watch_only(
        &fresh,
        &env,
        &[&ev, &calm],
        WatchOptions {
            every: Duration::from_millis(100),
            behind_after: Duration::from_millis(600),
            restore: quick(300),
        },
    );
    loop {
        if sold_in(&mut redis, &ev).await == 2
            && gate.presence(&ev.id).await.unwrap() == Presence::Live
        {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "never rebuilt");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let s = stock(&gate, &ev).await;
    assert_eq!(
        (s.available, s.held, s.confirming, s.sold),
        (7, 0, 1, 2),
        "the books' stock, no stale hold, and the payment in flight still counted"
    );
    // `a` reads what the books decided, `b`'s stale hold is over.
    let stored = repo.order(a).await.unwrap().unwrap();
    let view = gate.order(&ev.id, a).await.unwrap().unwrap();
    assert_eq!(
        (view.status, &view.tickets),
        (OrderStatus::Confirmed, &stored.tickets)
    );
    let view = gate.order(&ev.id, b).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Expired);
    // The per-customer counters are the books': `a`'s 2 count, `b`'s stale hold does not.
    let limit = i64::from(ev.ticket_types[0].per_customer_limit);
    assert!(matches!(
        reserve(&gate, &ev, limit - 1, "a@x.at").await,
        ReserveOutcome::Limit { .. }
    ));
    order_id(&reserve(&gate, &ev, limit, "b@x.at").await);
    // The payment in flight lands after the reopening and is counted where it was.
    assert_eq!(
        deliver(&repo, &gate, &in_flight).await,
        OrderStatus::Confirmed
    );
    let s = stock(&gate, &ev).await;
    let b_holds = i64::from(ev.ticket_types[0].per_customer_limit);
    assert_eq!(
        (s.available, s.held, s.confirming, s.sold),
        (7 - b_holds, b_holds, 0, 3),
        "b's new hold aside"
    );
    // The gate and the books agree.
    let report = recovery::audit::audit(&gate, &repo, &ev.id).await.unwrap();
    assert!(report.violations.is_empty(), "{}", report.render());
    // The busy event was compared just as long, and left alone.
    let restored: Option<String> = redis::cmd("HGET")
        .arg(format!("{{ev:{}}}:meta", calm.id))
        .arg("restored_at")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(restored, None);
    watcher.abort();
}

/// A paid order whose finalize is late (Redis trouble for consume-order, a dead-lettered
/// message) is not a rollback: its ticket is off sale in Redis (`confirming`) and a redelivery
/// or the relay's republish mirrors it. The watcher leaves the event alone: no rebuild, no new
/// salt, no hold ended, no pause.
#[tokio::test]
async fn a_late_finalize_is_not_taken_for_a_rollback() {
    let env = TestEnv::get();
    let gate = env.gate().await;
    let ev = env.seed(10, -1, 600).await;
    let held = order_id(&reserve(&gate, &ev, 1, "h@x.at").await);
    let late = paid(&gate, &ev, 2, "late@x.at").await;
    // The books decided it; the mirror never came.
    assert_eq!(
        env.repo().persist(&late).await.unwrap().status,
        OrderStatus::Confirmed
    );
    let watcher = watch_only(
        &gate,
        &env,
        &[&ev],
        WatchOptions {
            every: Duration::from_millis(100),
            behind_after: Duration::from_millis(600),
            restore: quick(300),
        },
    );
    // Several judgements `behind_after` apart.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    watcher.abort();
    let mut redis = gate.connection();
    let restored: Option<String> = redis::cmd("HGET")
        .arg(format!("{{ev:{}}}:meta", ev.id))
        .arg("restored_at")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(restored, None, "rebuilt as if rolled back");
    assert_eq!(gate.presence(&ev.id).await.unwrap(), Presence::Live);
    let hold = gate.order(&ev.id, held).await.unwrap().unwrap();
    assert_eq!(hold.status, OrderStatus::Reserved, "a live hold kept");
    let s = stock(&gate, &ev).await;
    assert_eq!((s.held, s.confirming, s.sold), (1, 2, 0));
}

/// A key retried across the loss makes a new order, never one with the id of an order the
/// database already holds: the restore draws a new salt, and an instance that knew the old
/// one learns it (ADR 30).
#[tokio::test]
async fn a_key_retried_after_the_loss_never_derives_a_persisted_orders_id() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let (gate, repo) = (env.gate().await, env.repo());
    let key = IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let (tt, q, who) = (
        TicketTypeId::parse(TT).unwrap(),
        Quantity::parse(1).unwrap(),
        Email::parse("retry@x.at").unwrap(),
    );
    let before = order_id(
        &gate
            .reserve(&ev.id, &tt, q, &who, &key, &AdmissionRules::default())
            .await
            .unwrap(),
    );
    gate.reset(&ev.id).await.unwrap();
    restore_event(&gate, &repo, &ev, quick(200)).await.unwrap();
    let after = order_id(
        &gate
            .reserve(&ev.id, &tt, q, &who, &key, &AdmissionRules::default())
            .await
            .unwrap(),
    );
    assert_ne!(after, before);
    // Under the new salt the key is again one order.
    match gate
        .reserve(&ev.id, &tt, q, &who, &key, &AdmissionRules::default())
        .await
        .unwrap()
    {
        ReserveOutcome::Replayed { order_id, .. } => assert_eq!(order_id, after),
        other => panic!("expected a replay, got {other:?}"),
    }
}

/// A big sale's restore finishes: 100,000 customers' counters do not fit one short script call
/// under the gate's deadline, so they go in bounded chunks, and the event reopens once quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_sales_restore_reopens_within_the_quiet_time() {
    let env = TestEnv::get();
    const CUSTOMERS: usize = 100_000;
    let ev = env.seed(CUSTOMERS as u32 + 100, -1, 600).await;
    // The production deadline of one gate call (`REDIS_TIMEOUT_MS`).
    let gate = Gate::connect(&env.redis_url, Duration::from_millis(500))
        .await
        .unwrap();
    let repo = env.repo();
    let orders: Vec<OrderMessage> = (0..CUSTOMERS)
        .map(|i| OrderMessage {
            order_id: OrderId::new(),
            event: ev.id.clone(),
            ticket_type: TicketTypeId::parse(TT).unwrap(),
            quantity: domain::Quantity::parse(1).unwrap(),
            email: domain::Email::parse(&format!("fan-{i}@example.at")).unwrap(),
            amount_cents: 34_900,
            payment_ref: format!("sim_{i}"),
            paid_at: Utc::now(),
            trace: None,
        })
        .collect();
    for batch in orders.chunks(pubsub::Batching::default().max_orders) {
        repo.persist_batch(batch).await.unwrap();
    }
    gate.reset(&ev.id).await.unwrap();
    // Redis runs one script at a time: a long one stalls every fan of every event.
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut redis = client.get_multiplexed_async_connection().await.unwrap();
    let started = std::time::Instant::now();
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        restore_event(&gate, &repo, &ev, quick(1_000)),
    )
    .await
    .expect("the restore finishes")
    .unwrap();
    assert!(
        matches!(report, RestoreReport::Resumed { forced: false, .. }),
        "{report:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "reopened {:?} after the start (quiet time 1 s)",
        started.elapsed()
    );
    assert_eq!(gate.presence(&ev.id).await.unwrap(), Presence::Live);
    // SLOWLOG: id, time, duration (µs), arguments, … per command over 10 ms.
    let slow: Vec<Vec<redis::Value>> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(1000)
        .query_async(&mut redis)
        .await
        .unwrap();
    let ours = |args: &redis::Value| {
        match args {
        redis::Value::Array(a) => a.iter().any(|v| {
            matches!(v, redis::Value::BulkString(b) if String::from_utf8_lossy(b).contains(ev.id.as_str()))
        }),
        _ => false,
    }
    };
    let longest = slow
        .iter()
        .filter(|e| e.get(3).is_some_and(ours))
        .filter_map(|e| match e.get(2) {
            Some(redis::Value::Int(us)) => Some(*us),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert!(
        longest < 100_000,
        "one restore call held Redis for {longest} µs"
    );
    // Every customer's count is back: the first and the last are at their limit's reach.
    let limit = ev.ticket_types[0].per_customer_limit as u64;
    for who in [
        "fan-0@example.at",
        &format!("fan-{}@example.at", CUSTOMERS - 1),
    ] {
        let refused = reserve(&gate, &ev, limit as i64, who).await;
        assert!(
            matches!(refused, ReserveOutcome::Limit { remaining, .. } if remaining == limit - 1),
            "{who}: {refused:?}"
        );
    }
}

/// At a quiet point the audit compares every order the books decided with what Redis shows
/// its fan: a confirmed order Redis reads as held is named.
#[tokio::test]
async fn the_audit_names_an_order_redis_reads_otherwise_than_the_books() {
    let env = TestEnv::get();
    let (gate, repo) = (env.gate().await, env.repo());
    let ev = env.seed(10, -1, 600).await;
    let id = order_id(&reserve(&gate, &ev, 2, "held@x.at").await);
    let held = rollback::snapshot(&env.redis_url, &ev.id).await;
    let msg = pay(&gate, &ev, id, 2, "held@x.at").await;
    assert_eq!(deliver(&repo, &gate, &msg).await, OrderStatus::Confirmed);
    let report = recovery::audit::audit(&gate, &repo, &ev.id).await.unwrap();
    assert!(report.violations.is_empty(), "{}", report.render());
    assert_eq!(report.orders_compared, 1);

    // Redis back at the hold: nothing in flight, so the audit compares, and names the order.
    rollback::restore(&env.redis_url, &held).await;
    let report = recovery::audit::audit(&gate, &repo, &ev.id).await.unwrap();
    let named = report
        .violations
        .iter()
        .find(|v| v.contains(&id.to_string()));
    assert!(
        named.is_some_and(|v| v.contains("confirmed in the books, reserved in Redis")),
        "{}",
        report.render()
    );
}

/// Redis went back in time and took writes only of a process that is gone (killed after it
/// mirrored the order): no live process' mark tells. The books kept that process's mark (its
/// watcher saved it), so another process's watcher finds the field below it and repairs the
/// event live; the field is raised after the repair, so the same loss is not repaired twice.
#[tokio::test]
async fn a_rollback_of_a_gone_process_writes_is_found_by_the_marks_the_books_saved() {
    let env = TestEnv::get();
    let own = OwnRedis::start().await;
    let connect = || Gate::connect(&own.url, Duration::from_secs(2));
    let (gone, survivor) = (connect().await.unwrap(), connect().await.unwrap());
    let repo = env.repo();
    let ev = env.seed(10, -1, 600).await;
    gone.seed(&ev).await.unwrap();
    let mut redis = redis::Client::open(own.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let a = order_id(&reserve(&gone, &ev, 2, "a@x.at").await);
    let taken = rollback::snapshot(&own.url, &ev.id).await;
    let msg = pay(&gone, &ev, a, 2, "a@x.at").await;
    assert_eq!(deliver(&repo, &gone, &msg).await, OrderStatus::Confirmed);
    // The gone process's watcher saved its mark before it was killed.
    let gone_watcher = watch_only(&gone, &env, &[&ev], WatchOptions::default());
    let started = std::time::Instant::now();
    while repo.marks(&ev.id).await.unwrap().is_empty() {
        assert!(started.elapsed() < Duration::from_secs(5), "never saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gone_watcher.abort();
    drop(gone);
    rollback::go_back(&own.url, &ev.id, &taken).await;
    assert_eq!(sold_in(&mut redis, &ev).await, 0, "rolled back");

    let watcher = watch_only(
        &survivor,
        &env,
        &[&ev],
        WatchOptions {
            every: Duration::from_millis(100),
            ..WatchOptions::default()
        },
    );
    let started = std::time::Instant::now();
    while sold_in(&mut redis, &ev).await != 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never repaired"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let view = survivor.order(&ev.id, a).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Confirmed);
    // The repair raised the gone process's field: nothing is found missing any more.
    let started = std::time::Instant::now();
    let saved = repo.marks(&ev.id).await.unwrap();
    while survivor.went_back_below(&ev.id, &saved).await.unwrap() {
        assert!(started.elapsed() < Duration::from_secs(5), "found again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    watcher.abort();
    let snap = survivor.refresh(&ev.id).await.unwrap().unwrap();
    assert!(!snap.paused, "repaired live");
    assert_eq!(stock(&survivor, &ev).await.sold, 2, "counted once");
}

/// An order the books decide while an event is being restored, whose mirroring never comes
/// (consume-order killed right after the commit): the restore's reopening pass writes it with
/// the stock it counts, so its redelivery finds it and a later repair counts nothing twice.
#[tokio::test]
async fn an_order_persisted_during_a_restore_without_its_finalize_is_written_when_it_reopens() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let (gate, repo) = (env.gate().await, env.repo());
    let in_flight = paid(&gate, &ev, 2, "bob@x.at").await;
    gate.reset(&ev.id).await.unwrap();
    let restore = {
        let (gate, repo, ev) = (gate.clone(), env.repo(), ev.clone());
        tokio::spawn(async move { restore_event(&gate, &repo, &ev, quick(1000)).await })
    };
    wait_for(&gate, &ev, Presence::Restoring, Duration::from_secs(10)).await;
    // Persisted after the first pass read the books; its finalize never runs.
    let p = repo.persist(&in_flight).await.unwrap();
    assert_eq!(p.status, OrderStatus::Confirmed);
    tokio::time::timeout(Duration::from_secs(30), restore)
        .await
        .expect("restore finishes once the books are quiet")
        .unwrap()
        .unwrap();
    let view = gate.order(&ev.id, in_flight.order_id).await.unwrap();
    assert_eq!(view.map(|v| v.status), Some(OrderStatus::Confirmed));
    // The redelivery, then a repair (as after a later rollback): counted once.
    let again = domain::books::Persisted {
        duplicate: true,
        ..p
    };
    testkit::finalize(&gate, &in_flight, &again).await.unwrap();
    recovery::repair(&gate, &repo, &ev.id).await.unwrap();
    assert_eq!(stock(&gate, &ev).await.sold, 2);
    env.assert_audit_clean(&ev.id).await;
}
