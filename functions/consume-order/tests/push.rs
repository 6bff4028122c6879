//! consume-order's push endpoint with `oneshot`, over the real Postgres and Redis:
//! authentication, envelope variants, bad messages, duplicate and failed deliveries.

use gate::{PaymentFlow, ReadModel};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use chrono::Utc;
use consume_order::{AppState, PushAuth};
use domain::{Event, OrderBatch, OrderId, OrderMessage, OrderStatus, TicketTypeId};
use serde_json::{Value, json};
use store::OrderRepository;
use testkit::{TestEnv, rollback};
use tower::ServiceExt;

const TOKEN: &str = "push-token-for-tests-0123";

async fn state(env: &TestEnv) -> AppState {
    AppState::new(
        Arc::new(env.repo()),
        env.gate().await,
        PushAuth::Token(TOKEN.into()),
    )
}

/// A reserved and paid order in the gate, and the message buy would publish for it.
async fn paid_order(env: &TestEnv, ev: &Event) -> OrderMessage {
    paid_order_by(env, ev, "fan@example.at").await
}

/// [`paid_order`] of two VIP 3-Day passes for `email`.
async fn paid_order_by(env: &TestEnv, ev: &Event, email: &str) -> OrderMessage {
    pay(env, ev, held_by(env, ev, email).await).await
}

/// Two VIP 3-Day passes held for `email`.
async fn held_by(env: &TestEnv, ev: &Event, email: &str) -> OrderId {
    testkit::hold(&env.gate().await, &ev.id, 2, email).await
}

/// Pays the hold `order_id` in the gate (a charge of its own, as the provider makes them);
/// the message buy would publish for it.
async fn pay(env: &TestEnv, ev: &Event, order_id: OrderId) -> OrderMessage {
    let payment_ref = format!("sim_ref_{}", order_id.0.simple());
    testkit::pay(&env.gate().await, &ev.id, order_id, &payment_ref).await
}

fn envelope(msg: &OrderMessage, snake_case: bool) -> Value {
    let batch = OrderBatch {
        orders: vec![msg.clone()],
        charges: vec![],
    };
    let data =
        base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&batch).unwrap());
    if snake_case {
        // What the emulator sends: every field twice, no deliveryAttempt.
        json!({"message": {"data": data, "messageId": "42", "message_id": "42", "publishTime": "2026-01-01T00:00:00Z",
            "publish_time": "2026-01-01T00:00:00Z", "attributes": {"order_id": msg.order_id.to_string()}},
            "subscription": "projects/p/subscriptions/s"})
    } else {
        json!({"message": {"data": data, "messageId": "42", "publishTime": "2026-01-01T00:00:00Z"}, "subscription": "projects/p/subscriptions/s", "deliveryAttempt": 2})
    }
}

/// A push envelope carrying `orders` as one message, as buy publishes them since ADR 34.
fn batch_envelope(orders: &[OrderMessage]) -> Value {
    let data = serde_json::to_vec(&OrderBatch {
        orders: orders.to_vec(),
        charges: vec![],
    })
    .unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(data);
    json!({"message": {"data": data, "messageId": "43", "publishTime": "2026-01-01T00:00:00Z",
        "attributes": {"orders": orders.len().to_string()}}, "subscription": "projects/p/subscriptions/s"})
}

/// Delivers `msg` alone in a message, with the push credential.
async fn deliver(state: &AppState, msg: &OrderMessage) -> StatusCode {
    let body = batch_envelope(std::slice::from_ref(msg)).to_string();
    push(state, Some(TOKEN), body).await
}

async fn push(state: &AppState, token: Option<&str>, body: impl Into<Body>) -> StatusCode {
    let uri = token.map_or_else(
        || "/pubsub/orders".to_owned(),
        |t| format!("/pubsub/orders?token={t}"),
    );
    let req = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap();
    consume_order::app(state.clone())
        .oneshot(req)
        .await
        .unwrap()
        .status()
}

#[tokio::test]
async fn refuses_calls_without_the_push_credential() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let st = state(&env).await;
    let msg = paid_order(&env, &ev).await;
    let body = envelope(&msg, false).to_string();
    assert_eq!(
        push(&st, None, body.clone()).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        push(&st, Some("wrong-token-wrong-token-00"), body).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(env.repo().order(msg.order_id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_duplicate_delivery_makes_one_order_in_either_envelope_dialect() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let st = state(&env).await;
    let msg = paid_order(&env, &ev).await;
    assert_eq!(
        push(&st, Some(TOKEN), envelope(&msg, false).to_string()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        push(&st, Some(TOKEN), envelope(&msg, true).to_string()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(st.stats.persisted.load(Ordering::Relaxed), 1);
    assert_eq!(st.stats.duplicates.load(Ordering::Relaxed), 1);
    let stored = env.repo().order(msg.order_id).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Confirmed);
    assert_eq!(stored.tickets.len(), 2);
    let view = env
        .gate()
        .await
        .order(&ev.id, msg.order_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.status, OrderStatus::Confirmed);
    assert_eq!(view.tickets, stored.tickets);
    env.assert_audit_clean(&ev.id).await;
}

#[tokio::test]
async fn a_consumer_that_fails_once_then_succeeds_makes_one_order() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let msg = paid_order(&env, &ev).await;
    let body = envelope(&msg, false).to_string();
    // First delivery: the database is unreachable -> non-2xx, so Pub/Sub redelivers.
    let dead_db = env.unreachable_repo();
    let down = AppState::new(
        Arc::new(dead_db),
        env.gate().await,
        PushAuth::Token(TOKEN.into()),
    );
    assert_eq!(
        push(&down, Some(TOKEN), body.clone()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(down.stats.retryable.load(Ordering::Relaxed), 1);
    // Redelivered twice to a healthy consumer: one order.
    let up = state(&env).await;
    assert_eq!(
        push(&up, Some(TOKEN), body.clone()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(push(&up, Some(TOKEN), body).await, StatusCode::NO_CONTENT);
    let vip = env.books(&ev.id, "vip-3-day").await;
    assert_eq!((vip.confirmed_orders, vip.sold), (1, 2));
}

#[tokio::test]
async fn undecodable_messages_are_acked_and_counted_but_paid_orders_never_dropped() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let st = state(&env).await;
    let bad = [
        "not json at all".to_owned(),
        json!({"message": {"data": "!!!not-base64!!!", "messageId": "1"}}).to_string(),
        json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode("{\"hello\":1}"), "messageId": "2"}}).to_string(),
        json!({"message": {"messageId": "3"}}).to_string(),
    ];
    for b in &bad {
        assert_eq!(
            push(&st, Some(TOKEN), b.clone()).await,
            StatusCode::NO_CONTENT,
            "{b}"
        );
    }
    assert_eq!(st.stats.permanent.load(Ordering::Relaxed), 4);
    // A decoded paid order is never dropped, even when the database refuses it for good (its
    // ticket type is missing): non-2xx, so it ends in the dead-letter topic for an operator.
    let mut msg = paid_order(&env, &ev).await;
    msg.ticket_type = TicketTypeId::parse("no-such-type").unwrap();
    assert_eq!(
        push(&st, Some(TOKEN), envelope(&msg, false).to_string()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(st.stats.retryable.load(Ordering::Relaxed), 1);
    assert_eq!(st.stats.persisted.load(Ordering::Relaxed), 0);
}

async fn view(env: &TestEnv, msg: &OrderMessage) -> gate::OrderView {
    env.gate()
        .await
        .order(&msg.event, msg.order_id)
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn a_batch_with_a_duplicate_inside_delivered_twice_makes_each_order_once() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let st = state(&env).await;
    let a = paid_order_by(&env, &ev, "a@example.at").await;
    let b = paid_order_by(&env, &ev, "b@example.at").await;
    let body = batch_envelope(&[a.clone(), b.clone(), a.clone()]).to_string();
    assert_eq!(
        push(&st, Some(TOKEN), body.clone()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(push(&st, Some(TOKEN), body).await, StatusCode::NO_CONTENT);
    assert_eq!(st.stats.persisted.load(Ordering::Relaxed), 2);
    assert_eq!(st.stats.duplicates.load(Ordering::Relaxed), 4);
    for m in [&a, &b] {
        let stored = env.repo().order(m.order_id).await.unwrap().unwrap();
        assert_eq!(
            (stored.status, stored.tickets.len()),
            (OrderStatus::Confirmed, 2)
        );
        let v = view(&env, m).await;
        assert_eq!(
            (v.status, &v.tickets),
            (OrderStatus::Confirmed, &stored.tickets)
        );
    }
    let vip = env.books(&ev.id, "vip-3-day").await;
    assert_eq!((vip.confirmed_orders, vip.sold), (2, 4));
    env.assert_audit_clean(&ev.id).await;
}

#[tokio::test]
async fn a_batch_larger_than_the_stock_left_confirms_what_fits_and_refunds_the_rest() {
    let env = TestEnv::get();
    // The gate believes in six VIP 3-Day passes, the books hold four: the gate lets one order
    // too many through (as after a rollback, say), and the books must not follow it.
    let ev = testkit::new_event(6, -1, 600);
    env.gate().await.seed(&ev).await.unwrap();
    let mut books_ev = ev.clone();
    books_ev.ticket_types[0].capacity = 4;
    env.repo().seed(&books_ev).await.unwrap();
    let refunds = Arc::new(testkit::memory::RecordedRefunds::default());
    let st = AppState {
        payments: refunds.clone(),
        ..state(&env).await
    };
    let mut orders = vec![];
    for who in ["a", "b", "c"] {
        orders.push(paid_order_by(&env, &ev, &format!("{who}@example.at")).await);
    }
    assert_eq!(
        push(&st, Some(TOKEN), batch_envelope(&orders).to_string()).await,
        StatusCode::NO_CONTENT
    );
    let statuses: Vec<OrderStatus> = {
        let mut v = vec![];
        for o in &orders {
            v.push(env.repo().order(o.order_id).await.unwrap().unwrap().status);
        }
        v
    };
    // First paid, first served: a and b.
    assert_eq!(
        statuses,
        [
            OrderStatus::Confirmed,
            OrderStatus::Confirmed,
            OrderStatus::Rejected
        ]
    );
    let refunded: Vec<OrderId> = refunds.refunds().iter().map(|r| r.order_id).collect();
    assert_eq!(refunded, [orders[2].order_id]);
    assert_eq!(view(&env, &orders[2]).await.status, OrderStatus::Rejected);
    let vip = env.books(&ev.id, "vip-3-day").await;
    assert_eq!(
        (
            vip.capacity,
            vip.tickets,
            vip.sold,
            vip.confirmed_quantity,
            vip.rejected_orders
        ),
        (4, 4, 4, 4, 1)
    );
    // The gate took the rejected order's tickets back.
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    let stock = snap.stock["vip-3-day"];
    assert_eq!((stock.sold, stock.confirming, stock.available), (4, 0, 2));
}

#[tokio::test]
async fn a_batch_with_an_order_the_books_refuse_does_not_hold_its_neighbours() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let st = state(&env).await;
    let a = paid_order_by(&env, &ev, "a@example.at").await;
    let b = paid_order_by(&env, &ev, "b@example.at").await;
    let mut stray = paid_order_by(&env, &ev, "c@example.at").await;
    stray.ticket_type = TicketTypeId::parse("no-such-type").unwrap();
    let body = batch_envelope(&[a.clone(), stray.clone(), b.clone()]).to_string();
    // The neighbours are persisted and shown confirmed at once; the message is not acked, so
    // the refused order is tried again and finally dead-lettered for an operator.
    assert_eq!(
        push(&st, Some(TOKEN), body.clone()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    for m in [&a, &b] {
        assert_eq!(view(&env, m).await.status, OrderStatus::Confirmed);
    }
    assert_eq!(view(&env, &stray).await.status, OrderStatus::Confirming);
    assert!(env.repo().order(stray.order_id).await.unwrap().is_none());
    assert_eq!(
        push(&st, Some(TOKEN), body).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(st.stats.persisted.load(Ordering::Relaxed), 2);
    assert_eq!(st.stats.duplicates.load(Ordering::Relaxed), 2);
    assert_eq!(st.stats.retryable.load(Ordering::Relaxed), 2);
    let vip = env.books(&ev.id, "vip-3-day").await;
    assert_eq!((vip.confirmed_orders, vip.sold), (2, 4));
}

#[tokio::test]
async fn a_crash_between_the_commit_and_the_gate_is_finished_by_the_redelivery() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let st = state(&env).await;
    let a = paid_order_by(&env, &ev, "a@example.at").await;
    let b = paid_order_by(&env, &ev, "b@example.at").await;
    // The transaction committed, then the consumer died before the Redis step.
    let committed = env
        .repo()
        .persist_batch(&[a.clone(), b.clone()])
        .await
        .unwrap();
    assert!(committed.iter().all(|o| !o.as_ref().unwrap().duplicate));
    assert_eq!(view(&env, &a).await.status, OrderStatus::Confirming);
    let body = batch_envelope(&[a.clone(), b.clone()]).to_string();
    assert_eq!(
        push(&st, Some(TOKEN), body.clone()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(push(&st, Some(TOKEN), body).await, StatusCode::NO_CONTENT);
    for (m, c) in [&a, &b].into_iter().zip(&committed) {
        let v = view(&env, m).await;
        assert_eq!(
            (v.status, &v.tickets),
            (OrderStatus::Confirmed, &c.as_ref().unwrap().tickets)
        );
    }
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    assert_eq!(snap.stock["vip-3-day"].sold, 4, "counted once");
    assert_eq!(st.stats.duplicates.load(Ordering::Relaxed), 4);
    env.assert_audit_clean(&ev.id).await;
}

/// The one-order form buy published before batching (ADR 34) is read no more: such a message
/// is undecodable (acked, counted, logged); docs/DEPLOY.md's one-off step drains any left.
#[tokio::test]
async fn a_message_in_the_old_one_order_form_is_undecodable() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let st = state(&env).await;
    let msg = paid_order(&env, &ev).await;
    let bare = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(&msg).unwrap());
    let old_form = json!({"message": {"data": bare, "messageId": "41"}, "subscription": "projects/p/subscriptions/s"});
    assert_eq!(
        push(&st, Some(TOKEN), old_form.to_string()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(st.stats.permanent.load(Ordering::Relaxed), 1);
    assert_eq!(st.stats.persisted.load(Ordering::Relaxed), 0);
    // The same order in a batch is persisted.
    assert_eq!(deliver(&st, &msg).await, StatusCode::NO_CONTENT);
    assert_eq!(st.stats.persisted.load(Ordering::Relaxed), 1);
    assert_eq!(view(&env, &msg).await.status, OrderStatus::Confirmed);
    env.assert_audit_clean(&ev.id).await;
}

#[tokio::test]
async fn a_message_of_the_largest_batch_fits_the_push_body_limit() {
    let env = TestEnv::get();
    let ev = env.seed(500, -1, 600).await;
    let st = state(&env).await;
    let n = pubsub::Batching::default().max_orders;
    let orders: Vec<OrderMessage> = (0..n)
        .map(|i| OrderMessage {
            order_id: OrderId::new(),
            event: ev.id.clone(),
            ticket_type: TicketTypeId::parse("vip-3-day").unwrap(),
            quantity: domain::Quantity::parse(1).unwrap(),
            email: domain::Email::parse(&format!(
                "a-rather-long-address-of-fan-number-{i}@example.at"
            ))
            .unwrap(),
            amount_cents: 34_900,
            payment_ref: format!("sim_ch_{}", uuid::Uuid::new_v4()),
            paid_at: Utc::now(),
            trace: None,
        })
        .collect();
    let body = batch_envelope(&orders).to_string();
    assert!(body.len() > 100_000, "{} bytes", body.len());
    assert_eq!(push(&st, Some(TOKEN), body).await, StatusCode::NO_CONTENT);
    let vip = env.books(&ev.id, "vip-3-day").await;
    assert_eq!((vip.confirmed_orders, vip.sold), (n as i64, n as i64));
}

#[tokio::test]
async fn a_finalized_order_wakes_whoever_waits_for_it_and_no_one_else() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let st = state(&env).await;
    let a = paid_order_by(&env, &ev, "a@example.at").await;
    let b = paid_order_by(&env, &ev, "b@example.at").await;
    // buy's gate, in another instance: it waits for both outcomes.
    let buy_gate = env.gate().await;
    let waits_a = buy_gate.finalized(a.order_id);
    let waits_b = buy_gate.finalized(b.order_id);
    // The subscription starts with the first waiter; give it a moment to be in place.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(deliver(&st, &a).await, StatusCode::NO_CONTENT);
    tokio::time::timeout(std::time::Duration::from_secs(5), waits_a)
        .await
        .expect("a's outcome is heard");
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), waits_b)
            .await
            .is_err(),
        "b is not decided yet"
    );
}

/// A paid order persisted and shown confirmed, then Redis rolled back to a snapshot taken while
/// it was held: the order's hash, its ticket type's and the hold ledger put back as they were
/// (DUMP/RESTORE). Returns the order's message and its push body.
async fn confirmed_then_rolled_back(
    env: &TestEnv,
    ev: &Event,
    st: &AppState,
) -> (OrderMessage, String) {
    let order_id = held_by(env, ev, "rolled@example.at").await;
    let keys: Vec<String> = [
        format!("order:{order_id}"),
        "tt:vip-3-day".into(),
        "holds".into(),
    ]
    .iter()
    .map(|what| format!("{{ev:{}}}:{what}", ev.id))
    .collect();
    let snapshot = rollback::snapshot_keys(&env.redis_url, &keys).await;
    let msg = pay(env, ev, order_id).await;
    let body = batch_envelope(std::slice::from_ref(&msg)).to_string();
    assert_eq!(
        push(st, Some(TOKEN), body.clone()).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(view(env, &msg).await.status, OrderStatus::Confirmed);
    rollback::restore(&env.redis_url, &snapshot).await;
    (msg, body)
}

/// After the redelivery: the order reads confirmed with the books' tickets, nothing is back on
/// sale, and the audit is exact.
async fn assert_mirrors_the_books(env: &TestEnv, ev: &Event, msg: &OrderMessage) {
    let v = view(env, msg).await;
    let stored = env.repo().order(msg.order_id).await.unwrap().unwrap();
    assert_eq!(
        (v.status, &v.tickets),
        (OrderStatus::Confirmed, &stored.tickets)
    );
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    let vip = snap.stock["vip-3-day"];
    assert_eq!(
        (vip.available, vip.held, vip.confirming, vip.sold),
        (8, 0, 0, 2),
        "nothing went back on sale"
    );
    env.assert_audit_clean(&ev.id).await;
}

#[tokio::test]
async fn a_redis_rolled_back_to_the_hold_is_brought_up_to_the_books_by_the_redelivery() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let st = state(&env).await;
    let (msg, body) = confirmed_then_rolled_back(&env, &ev, &st).await;
    assert_eq!(view(&env, &msg).await.status, OrderStatus::Reserved);
    // The redelivery (or the relay's republish) mirrors the books again.
    assert_eq!(push(&st, Some(TOKEN), body).await, StatusCode::NO_CONTENT);
    assert_mirrors_the_books(&env, &ev, &msg).await;
}

#[tokio::test]
async fn a_rolled_back_hold_that_expired_in_redis_is_taken_back_from_sale() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 1).await;
    let st = state(&env).await;
    let (msg, body) = confirmed_then_rolled_back(&env, &ev, &st).await;
    // Its one-second hold runs out in the rolled-back Redis: the tickets go back on sale there.
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    assert_eq!(snap.stock["vip-3-day"].available, 10);
    assert_eq!(view(&env, &msg).await.status, OrderStatus::Expired);
    assert_eq!(push(&st, Some(TOKEN), body).await, StatusCode::NO_CONTENT);
    assert_mirrors_the_books(&env, &ev, &msg).await;
}

/// A Redis that went back in time whole (a failover to a replica that lagged, a snapshot
/// restored) is found by the next finalize, whatever it is for: this process's mark is lower
/// than it was answered (ADR 56). The event is repaired from the books there and then, live and
/// order by order: the paid order Redis lost reads confirmed again and its tickets are off sale,
/// with no pause and no new order-id salt (issue 28, item 3).
#[tokio::test]
async fn a_redis_gone_back_in_time_is_found_by_the_next_finalize_and_repaired_live() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let st = state(&env).await;
    let lost = held_by(&env, &ev, "lost@example.at").await;
    let first = paid_order_by(&env, &ev, "first@example.at").await;
    assert_eq!(deliver(&st, &first).await, StatusCode::NO_CONTENT);
    let before = rollback::snapshot(&env.redis_url, &ev.id).await;
    let salt_before = rollback::order_id_salt(&env.redis_url, &ev.id).await;
    // `lost` is paid and confirmed; then Redis goes back to before it was paid.
    let lost = pay(&env, &ev, lost).await;
    assert_eq!(deliver(&st, &lost).await, StatusCode::NO_CONTENT);
    rollback::go_back(&env.redis_url, &ev.id, &before).await;
    assert_eq!(view(&env, &lost).await.status, OrderStatus::Reserved);

    // Another fan's order is the next finalize.
    let next = paid_order_by(&env, &ev, "next@example.at").await;
    assert_eq!(deliver(&st, &next).await, StatusCode::NO_CONTENT);
    let stored = env.repo().order(lost.order_id).await.unwrap().unwrap();
    let v = view(&env, &lost).await;
    assert_eq!(
        (v.status, &v.tickets),
        (OrderStatus::Confirmed, &stored.tickets)
    );
    assert_eq!(view(&env, &next).await.status, OrderStatus::Confirmed);
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    let vip = snap.stock["vip-3-day"];
    assert_eq!(
        (vip.available, vip.held, vip.confirming, vip.sold),
        (4, 0, 0, 6),
        "the books' sales, none back on sale"
    );
    assert!(!snap.paused, "repaired live");
    assert_eq!(
        rollback::order_id_salt(&env.redis_url, &ev.id).await,
        salt_before,
        "Idempotency-Key replays still work"
    );
    env.assert_audit_clean(&ev.id).await;
}

/// With no finalize coming (a quiet moment of the sale), the mark check the watcher makes
/// finds it, and the repair it then runs brings the event up to the books (the watcher itself:
/// `the_watcher_repairs_an_event_gone_back_in_time_live` in recovery's tests).
#[tokio::test]
async fn a_redis_gone_back_in_time_in_a_quiet_moment_is_found_by_the_mark_check() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let gate = env.gate().await;
    let repo: Arc<dyn OrderRepository> = Arc::new(env.repo());
    let st = AppState::new(repo.clone(), gate.clone(), PushAuth::Token(TOKEN.into()));
    let first = paid_order_by(&env, &ev, "first@example.at").await;
    assert_eq!(deliver(&st, &first).await, StatusCode::NO_CONTENT);
    let before = rollback::snapshot(&env.redis_url, &ev.id).await;
    let lost = paid_order_by(&env, &ev, "lost@example.at").await;
    assert_eq!(deliver(&st, &lost).await, StatusCode::NO_CONTENT);
    assert!(!gate.went_back_since(&ev.id).await.unwrap());
    rollback::go_back(&env.redis_url, &ev.id, &before).await;
    assert!(gate.went_back_since(&ev.id).await.unwrap());
    assert!(
        recovery::repair(&gate, repo.as_ref(), &ev.id)
            .await
            .unwrap()
    );
    assert!(!gate.went_back_since(&ev.id).await.unwrap(), "repaired");
    assert_eq!(view(&env, &lost).await.status, OrderStatus::Confirmed);
    let snap = gate.refresh(&ev.id).await.unwrap().unwrap();
    assert_eq!(snap.stock["vip-3-day"].sold, 4);
    env.assert_audit_clean(&ev.id).await;
}

/// A new epoch of the event (seeded again, or restored after Redis came back empty: a new
/// order-id salt, no marks) starts the marks again: no process takes it for Redis going back in
/// time, and nothing is repaired.
#[tokio::test]
async fn marks_start_again_in_a_new_epoch_of_the_event() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let gate = env.gate().await;
    let repo: Arc<dyn OrderRepository> = Arc::new(env.repo());
    let st = AppState::new(repo, gate.clone(), PushAuth::Token(TOKEN.into()));
    for who in ["a@example.at", "b@example.at"] {
        let msg = paid_order_by(&env, &ev, who).await;
        assert_eq!(deliver(&st, &msg).await, StatusCode::NO_CONTENT);
    }
    gate.reset(&ev.id).await.unwrap();
    gate.seed(&ev).await.unwrap();
    assert!(!gate.went_back_since(&ev.id).await.unwrap());
    let msg = paid_order_by(&env, &ev, "c@example.at").await;
    assert_eq!(deliver(&st, &msg).await, StatusCode::NO_CONTENT);
    assert_eq!(view(&env, &msg).await.status, OrderStatus::Confirmed);
    assert!(!gate.went_back_since(&ev.id).await.unwrap());
}

/// A push envelope of `orders` whose `signature` attribute is `signature` (or none).
fn envelope_signed(orders: &[OrderMessage], signature: Option<String>) -> String {
    let data = serde_json::to_vec(&OrderBatch {
        orders: orders.to_vec(),
        charges: vec![],
    })
    .unwrap();
    let mut attributes = json!({"orders": orders.len().to_string()});
    if let Some(sig) = signature {
        attributes["signature"] = json!(sig);
    }
    json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(&data),
        "messageId": "44", "attributes": attributes}, "subscription": "projects/p/subscriptions/s"})
    .to_string()
}

fn data_of(orders: &[OrderMessage]) -> Vec<u8> {
    serde_json::to_vec(&OrderBatch {
        orders: orders.to_vec(),
        charges: vec![],
    })
    .unwrap()
}

/// A message cannot mint tickets: one that is not signed by buy's key (anyone allowed to
/// publish to the topic could send it) is acked and dropped, never persisted; buy's own is.
#[tokio::test]
async fn a_forged_message_is_refused_and_a_signed_one_persisted() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let key = testkit::signing_key();
    let st = AppState {
        signing: Some(key.clone()),
        ..state(&env).await
    };
    // A fresh order id nobody reserved, with a made-up payment reference.
    let forged = OrderMessage {
        order_id: OrderId::new(),
        event: ev.id.clone(),
        ticket_type: TicketTypeId::parse("vip-3-day").unwrap(),
        quantity: domain::Quantity::parse(4).unwrap(),
        email: domain::Email::parse("thief@example.at").unwrap(),
        amount_cents: 1,
        payment_ref: "made-up".into(),
        paid_at: Utc::now(),
        trace: None,
    };
    let other =
        domain::signing::MessageKey::parse("another-key-of-at-least-32-characters").unwrap();
    let genuine = paid_order_by(&env, &ev, "fan@example.at").await;
    let mine = std::slice::from_ref(&forged);
    for envelope in [
        envelope_signed(mine, None),
        envelope_signed(mine, Some(other.sign(&data_of(mine)))),
        envelope_signed(mine, Some("not-base64!".into())),
        // buy's signature of another message, replayed on this one.
        envelope_signed(
            mine,
            Some(key.sign(&data_of(std::slice::from_ref(&genuine)))),
        ),
    ] {
        assert_eq!(
            push(&st, Some(TOKEN), envelope).await,
            StatusCode::NO_CONTENT
        );
    }
    assert!(env.repo().order(forged.order_id).await.unwrap().is_none());
    assert!(
        env.gate()
            .await
            .order(&ev.id, forged.order_id)
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(env.books(&ev.id, "vip-3-day").await.sold, 0);
    // The genuine one, signed by buy's key, is persisted.
    let theirs = std::slice::from_ref(&genuine);
    let envelope = envelope_signed(theirs, Some(key.sign(&data_of(theirs))));
    assert_eq!(
        push(&st, Some(TOKEN), envelope).await,
        StatusCode::NO_CONTENT
    );
    let stored = env.repo().order(genuine.order_id).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Confirmed);
    env.assert_audit_clean(&ev.id).await;
}

/// A rotation: while it rolls out, consume-order takes the previous key's signatures too
/// (messages buy signed before it got the new key), and only while it is configured.
#[tokio::test]
async fn during_a_rotation_the_previous_keys_signatures_are_accepted() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let old = domain::signing::MessageKey::parse("the-key-before-the-rotation-0123456789").unwrap();
    let signed_by_old = |m: &OrderMessage| {
        let one = std::slice::from_ref(m);
        envelope_signed(one, Some(old.sign(&data_of(one))))
    };
    let rotating = AppState {
        signing: Some(testkit::signing_key()),
        signing_previous: Some(old.clone()),
        ..state(&env).await
    };
    let late = paid_order_by(&env, &ev, "late@example.at").await;
    assert_eq!(
        push(&rotating, Some(TOKEN), signed_by_old(&late)).await,
        StatusCode::NO_CONTENT
    );
    assert!(env.repo().order(late.order_id).await.unwrap().is_some());
    // Once the rotation is done, the old key signs nothing that counts.
    let done = AppState {
        signing_previous: None,
        ..rotating
    };
    let later = paid_order_by(&env, &ev, "later@example.at").await;
    assert_eq!(
        push(&done, Some(TOKEN), signed_by_old(&later)).await,
        StatusCode::NO_CONTENT
    );
    assert!(env.repo().order(later.order_id).await.unwrap().is_none());
}

/// A charge whose payment Redis forgot (it went back in time between the charge and the
/// order's publication) reaches the books only through the provider's list: the sweep owes it
/// back and refunds it, and leaves the charge that paid a confirmed order alone.
#[tokio::test]
async fn the_sweep_refunds_a_charge_the_books_never_heard_of_and_nothing_else() {
    use payments::{ChargeList, PaymentProvider};
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let account = format!("test-{}", uuid::Uuid::new_v4().simple());
    let provider = payments::ledger::LedgeredPayments::connect(&env.database_url, &account)
        .await
        .unwrap();
    let state = AppState {
        payments: Arc::new(provider.clone()),
        ..state(&env).await
    };
    let charge = |order| {
        let p = provider.clone();
        async move {
            match p
                .charge(order, &domain::PaymentAttempt::new(), 1000, "tok_approve")
                .await
                .unwrap()
            {
                payments::Charge::Approved { payment_ref } => payment_ref,
                other => panic!("{other:?}"),
            }
        }
    };
    // A paid order, confirmed by the books on its charge.
    let held = held_by(&env, &ev, "kept@example.at").await;
    let kept = charge(held).await;
    let msg = testkit::pay(&env.gate().await, &ev.id, held, &kept).await;
    assert_eq!(deliver(&state, &msg).await, StatusCode::NO_CONTENT);
    // A charge for an order Redis forgot: nothing of it ever reached the books.
    let forgotten = OrderId::new();
    let orphan = charge(forgotten).await;

    let minute = std::time::Duration::from_secs(60);
    let found = consume_order::sweep_charges(&state, &provider, minute, minute);
    assert_eq!(
        found.await.unwrap(),
        0,
        "younger than the grace: left alone"
    );
    let found = consume_order::sweep_charges(&state, &provider, std::time::Duration::ZERO, minute);
    assert_eq!(found.await.unwrap(), 1);
    let listed = provider
        .charges_created(Utc::now() - chrono::Duration::minutes(5), Utc::now())
        .await
        .unwrap();
    let refunded = |r: &str| {
        listed
            .iter()
            .any(|c| c.payment_ref == r && c.refunded_at.is_some())
    };
    assert!(refunded(&orphan), "the forgotten charge is refunded");
    assert!(!refunded(&kept), "the confirmed order's charge is kept");
    let ledger = env
        .repo()
        .charges(&[orphan.clone(), kept.clone()])
        .await
        .unwrap();
    let verdict = |r: &str| {
        ledger
            .iter()
            .find(|e| e.charge.payment_ref == r)
            .map(|e| e.verdict)
    };
    assert_eq!(verdict(&orphan), Some(store::Verdict::Refunded));
    assert_eq!(verdict(&kept), Some(store::Verdict::Kept));
    let again = consume_order::sweep_charges(&state, &provider, std::time::Duration::ZERO, minute);
    assert_eq!(again.await.unwrap(), 0, "settled once");
}

/// An order confirmed, then lost by a Redis gone back to before its hold, then delivered again
/// to a consumer that never wrote to the event: the event, the order and that consumer.
async fn lost_then_redelivered(env: &TestEnv) -> (Event, OrderMessage, AppState) {
    let ev = env.seed(10, -1, 600).await;
    let before = rollback::snapshot(&env.redis_url, &ev.id).await;
    let msg = paid_order(env, &ev).await;
    assert_eq!(
        deliver(&state(env).await, &msg).await,
        StatusCode::NO_CONTENT
    );
    rollback::go_back(&env.redis_url, &ev.id, &before).await;
    let other = state(env).await;
    assert_eq!(deliver(&other, &msg).await, StatusCode::NO_CONTENT);
    (ev, msg, other)
}

/// Redis went back to before an order was even held, and a process that never wrote to the
/// event (so no mark of its own tells) receives the order's message again before any repair:
/// the order reads confirmed, but whether the stock counts it cannot be told then. It is
/// marked, and the repair from the books counts it: nothing the books sold stays on sale.
#[tokio::test]
async fn a_lost_order_redelivered_before_the_repair_is_counted_by_the_repair() {
    let env = TestEnv::get();
    let (ev, msg, other) = lost_then_redelivered(&env).await;
    assert_eq!(view(&env, &msg).await.status, OrderStatus::Confirmed);
    let repo = env.repo();
    recovery::repair(other.gate.as_ref(), &repo, &ev.id)
        .await
        .unwrap();
    assert_mirrors_the_books(&env, &ev, &msg).await;
    // A second repair finds nothing left to count.
    recovery::repair(other.gate.as_ref(), &repo, &ev.id)
        .await
        .unwrap();
    assert_mirrors_the_books(&env, &ev, &msg).await;
}

/// An order marked uncounted (see above) that a restore from the books writes again is counted
/// by the restore itself: a repair after it does not count it a second time.
#[tokio::test]
async fn a_restore_counts_an_uncounted_order_once() {
    let env = TestEnv::get();
    let (ev, msg, other) = lost_then_redelivered(&env).await;

    let (gate, repo) = (env.gate().await, env.repo());
    assert!(gate.rebuild(&ev.id).await.unwrap());
    let quick = recovery::RestoreOptions {
        quiet: std::time::Duration::from_millis(100),
        poll: std::time::Duration::from_millis(50),
        max_wait: std::time::Duration::from_secs(10),
    };
    recovery::restore_event(&gate, &repo, &ev, quick)
        .await
        .unwrap();
    recovery::repair(other.gate.as_ref(), &repo, &ev.id)
        .await
        .unwrap();
    assert_mirrors_the_books(&env, &ev, &msg).await;
}
