//! The fast tier: consume-order's router driven with `oneshot` over the test kit's in-memory
//! gate and books (held to the real ones by `shared/gate/tests/contract.rs` and
//! `shared/store/tests/repo_conformance.rs`). No engine is needed:
//! `cargo test -p consume-order --test router`. The same deliveries over the real engines are
//! in `push.rs`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use chrono::Utc;
use consume_order::{AppState, PushAuth};
use domain::{Event, OrderBatch, OrderMessage, OrderStatus};
use gate::ReadModel;
use serde_json::json;
use store::OrderRepository;
use testkit::memory::{MemoryGate, MemoryRepository};
use testkit::new_event;
use testkit::router::call;

const TOKEN: &str = "push-token-for-tests-0123";

struct Consumer {
    gate: MemoryGate,
    books: MemoryRepository,
    state: AppState,
    ev: Event,
}

/// consume-order over an in-memory gate and books, both with one event on sale.
async fn consumer() -> Consumer {
    let (gate, books) = (MemoryGate::new(), MemoryRepository::default());
    let ev = new_event(6, -60, 600);
    gate.seed(&ev);
    books.seed(&ev).await.unwrap();
    let state = AppState::new(
        Arc::new(books.clone()),
        gate.clone(),
        PushAuth::Token(TOKEN.into()),
    );
    Consumer {
        gate,
        books,
        state,
        ev,
    }
}

/// [`consumer`] whose payment provider records the refunds asked of it.
async fn consumer_recording_refunds() -> (Consumer, Arc<testkit::memory::RecordedRefunds>) {
    let c = consumer().await;
    let refunded = Arc::new(testkit::memory::RecordedRefunds::default());
    let state = AppState {
        payments: refunded.clone(),
        ..c.state.clone()
    };
    (Consumer { state, ..c }, refunded)
}

impl Consumer {
    /// Two VIP 3-Day passes held and paid for `email` in the gate: the message buy publishes.
    async fn paid(&self, email: &str) -> OrderMessage {
        let order = testkit::hold(&self.gate, &self.ev.id, 2, email).await;
        testkit::pay(&self.gate, &self.ev.id, order, &format!("sim_{order}")).await
    }

    /// Delivers `orders` as one push message; the answer's status.
    async fn push(&self, token: Option<&str>, orders: &[OrderMessage]) -> StatusCode {
        let batch = OrderBatch {
            orders: orders.to_vec(),
            charges: vec![],
        };
        self.push_batch(token, &batch).await
    }

    async fn push_batch(&self, token: Option<&str>, batch: &OrderBatch) -> StatusCode {
        let data = serde_json::to_vec(batch).unwrap();
        let envelope = json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(data),
            "messageId": "1", "publishTime": "2026-01-01T00:00:00Z"}, "subscription": "projects/p/subscriptions/s"});
        self.push_body(token, envelope.to_string()).await
    }

    /// The order's status as the gate shows it.
    async fn shown(&self, order: domain::OrderId) -> OrderStatus {
        let view = self.gate.order(&self.ev.id, order).await.unwrap();
        view.expect("the gate knows the order").status
    }

    async fn push_body(&self, token: Option<&str>, body: String) -> StatusCode {
        let uri = token.map_or_else(
            || "/pubsub/orders".to_owned(),
            |t| format!("/pubsub/orders?token={t}"),
        );
        let req = Request::post(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        call(&consume_order::app(self.state.clone()), req)
            .await
            .status
    }
}

#[tokio::test]
async fn a_delivery_without_the_push_credential_is_401_and_changes_nothing() {
    let c = consumer().await;
    let msg = c.paid("fan@example.at").await;
    assert_eq!(
        c.push(None, std::slice::from_ref(&msg)).await,
        StatusCode::UNAUTHORIZED
    );
    let wrong = Some("wrong-token-wrong-token-00");
    assert_eq!(
        c.push(wrong, std::slice::from_ref(&msg)).await,
        StatusCode::UNAUTHORIZED
    );
    assert!(c.books.order(msg.order_id).await.unwrap().is_none());
}

#[tokio::test]
async fn a_paid_order_is_persisted_once_and_mirrored_in_the_gate() {
    let c = consumer().await;
    let msg = c.paid("fan@example.at").await;
    assert_eq!(
        c.push(Some(TOKEN), std::slice::from_ref(&msg)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        c.push(Some(TOKEN), std::slice::from_ref(&msg)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.state.stats.persisted.load(Ordering::Relaxed), 1);
    assert_eq!(c.state.stats.duplicates.load(Ordering::Relaxed), 1);
    let stored = c.books.order(msg.order_id).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Confirmed);
    assert_eq!(stored.tickets.len(), 2);
    let view = c.gate.order(&c.ev.id, msg.order_id).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Confirmed);
    assert_eq!(view.tickets, stored.tickets);
}

/// After Redis went back in time a fan may pay an order again, with a new attempt and so a
/// new charge (ADR 52). The books keep the charge that paid the order and owe the other one
/// back; a delivery again of the kept charge owes nothing.
#[tokio::test]
async fn a_second_charge_for_a_confirmed_order_is_owed_back() {
    let (c, refunded) = consumer_recording_refunds().await;
    let first = c.paid("fan@example.at").await;
    let second = OrderMessage {
        payment_ref: format!("{}-again", first.payment_ref),
        ..first.clone()
    };
    for msg in [&first, &second, &first] {
        assert_eq!(
            c.push(Some(TOKEN), std::slice::from_ref(msg)).await,
            StatusCode::NO_CONTENT
        );
    }
    let stored = c.books.order(first.order_id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.payment_ref.as_str()),
        (OrderStatus::Confirmed, first.payment_ref.as_str())
    );
    let refunded = refunded.refunded_refs();
    assert_eq!(refunded, std::slice::from_ref(&second.payment_ref));
    assert_eq!(c.books.refunds_outstanding().await.unwrap().0, 0);
}

/// buy hands the books every approval it cannot match to a live attempt (ADR 53); after Redis
/// went back in time that may be the very charge that paid the order. The books keep that one
/// and refund the others.
#[tokio::test]
async fn a_charge_handed_over_is_refunded_unless_it_paid_its_order() {
    let (c, refunded) = consumer_recording_refunds().await;
    let msg = c.paid("fan@example.at").await;
    assert_eq!(
        c.push(Some(TOKEN), std::slice::from_ref(&msg)).await,
        StatusCode::NO_CONTENT
    );
    let charge = |payment_ref: &str| domain::OrderCharge {
        order_id: msg.order_id,
        payment_ref: payment_ref.to_owned(),
        amount_cents: msg.amount_cents,
    };
    let stale = format!("{}-an-attempt-redis-forgot", msg.payment_ref);
    let batch = OrderBatch {
        orders: vec![],
        charges: vec![charge(&msg.payment_ref), charge(&stale)],
    };
    for _ in 0..2 {
        assert_eq!(
            c.push_batch(Some(TOKEN), &batch).await,
            StatusCode::NO_CONTENT
        );
    }
    let refunded = refunded.refunded_refs();
    assert_eq!(refunded, [stale], "once, and never the kept charge");
    let stored = c.books.order(msg.order_id).await.unwrap().unwrap();
    assert_eq!(stored.status, OrderStatus::Confirmed);
}

#[tokio::test]
async fn a_database_outage_is_retried_and_the_redelivery_makes_one_order() {
    let c = consumer().await;
    let msg = c.paid("fan@example.at").await;
    c.books.set_down(true);
    assert_eq!(
        c.push(Some(TOKEN), std::slice::from_ref(&msg)).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        c.gate
            .order(&c.ev.id, msg.order_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        OrderStatus::Confirming,
        "nothing mirrored before the books decide"
    );
    c.books.set_down(false);
    assert_eq!(
        c.push(Some(TOKEN), std::slice::from_ref(&msg)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.state.stats.persisted.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn orders_beyond_the_books_stock_are_rejected_and_go_back_on_sale_in_the_gate() {
    let c = consumer().await;
    let mut orders = vec![];
    for who in ["a", "b", "c"] {
        orders.push(c.paid(&format!("{who}@example.at")).await);
    }
    // The books sold two passes elsewhere first (as when the gate was rolled back).
    let other = OrderMessage {
        order_id: domain::OrderId::new(),
        paid_at: Utc::now() - chrono::Duration::minutes(1),
        payment_ref: "sim_other".into(),
        ..orders[0].clone()
    };
    c.books.persist(&other).await.unwrap();
    assert_eq!(c.push(Some(TOKEN), &orders).await, StatusCode::NO_CONTENT);
    let mut statuses = vec![];
    for o in &orders {
        statuses.push(c.books.order(o.order_id).await.unwrap().unwrap().status);
    }
    assert_eq!(
        statuses,
        [
            OrderStatus::Confirmed,
            OrderStatus::Confirmed,
            OrderStatus::Rejected
        ],
        "first paid, first served"
    );
    let snap = c.gate.refresh(&c.ev.id).await.unwrap().unwrap();
    let stock = snap.stock["vip-3-day"];
    assert_eq!((stock.sold, stock.confirming, stock.available), (4, 0, 2));
}

#[tokio::test]
async fn an_undecodable_message_is_acked_and_counted() {
    let c = consumer().await;
    for body in [
        "not json at all".to_owned(),
        json!({"message": {"data": "!!!not-base64!!!", "messageId": "1"}}).to_string(),
    ] {
        assert_eq!(c.push_body(Some(TOKEN), body).await, StatusCode::NO_CONTENT);
    }
    assert_eq!(c.state.stats.permanent.load(Ordering::Relaxed), 2);
}

/// Each order's line about its persistence is written in the trace of the fan's payment (the
/// order carries it), so the fan's trace shows reserve, pay and persistence together; an order
/// without a trace leaves the line in the push request's (here: none).
#[tokio::test]
async fn each_order_is_logged_in_the_trace_of_its_payment() {
    let c = consumer().await;
    let mut traced = c.paid("fan@example.at").await;
    traced.trace = Some(
        domain::TraceContext::parse("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")
            .unwrap(),
    );
    let untraced = c.paid("other@example.at").await;
    let (lines, _guard) = testkit::capture_logs();
    assert_eq!(
        c.push(Some(TOKEN), &[traced.clone(), untraced.clone()])
            .await,
        StatusCode::NO_CONTENT
    );
    let persisted: Vec<serde_json::Value> = lines
        .take_raw()
        .iter()
        .map(|l| {
            let lifted = telemetry::lift_trace(l, "proj").unwrap_or_else(|| l.clone());
            serde_json::from_slice(&lifted).unwrap()
        })
        .filter(|l: &serde_json::Value| l["message"] == "order persisted")
        .collect();
    assert_eq!(persisted.len(), 2, "{persisted:?}");
    let line_of = |id: domain::OrderId| {
        persisted
            .iter()
            .find(|l| {
                l["spans"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["order_id"] == id.to_string())
            })
            .expect("a line per order")
    };
    let fan = line_of(traced.order_id);
    assert_eq!(
        fan["logging.googleapis.com/trace"],
        "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(fan["logging.googleapis.com/spanId"], "00f067aa0ba902b7");
    assert!(
        line_of(untraced.order_id)
            .get("logging.googleapis.com/trace")
            .is_none()
    );
}

/// A batch write the database could not do now (a statement timeout, a failover's shutdown)
/// brings the whole message back; it is never taken for a refusal of its orders, which would
/// halve the batch down to single orders and log them refused (issue 27, item 4).
#[tokio::test]
async fn a_write_the_database_could_not_do_now_is_retried_whole_never_refused() {
    let c = consumer().await;
    let (a, b) = (c.paid("a@example.at").await, c.paid("b@example.at").await);
    c.books.fail_persists_with(Some(|| {
        store::RepoError::Other(anyhow::anyhow!(
            "canceling statement due to statement timeout"
        ))
    }));
    let (lines, _guard) = testkit::capture_logs();
    assert_eq!(
        c.push(Some(TOKEN), &[a.clone(), b.clone()]).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let refusals: Vec<_> = lines
        .take()
        .into_iter()
        .filter(|l| {
            let m = l["message"].as_str().unwrap_or_default();
            m.contains("refuse")
        })
        .collect();
    assert!(refusals.is_empty(), "taken for a refusal: {refusals:?}");

    c.books.fail_persists_with(None);
    assert_eq!(
        c.push(Some(TOKEN), &[a.clone(), b.clone()]).await,
        StatusCode::NO_CONTENT
    );
    for o in [a, b] {
        let stored = c.books.order(o.order_id).await.unwrap().unwrap();
        assert_eq!(stored.status, OrderStatus::Confirmed);
    }
}

/// Where the books decide a message in parts (Spanner: 250 orders per transaction), a part
/// that fails leaves every part before it owed and mirrored before the 503 (issue 28, item 5):
/// a rejected order's refund is made and the gate shows its outcome, though the message comes
/// again; the redelivery finishes the rest.
#[tokio::test]
async fn a_part_of_a_message_that_fails_leaves_the_parts_before_it_owed_and_mirrored() {
    let (c, refunded) = consumer_recording_refunds().await;
    let (late, next) = (c.paid("a@example.at").await, c.paid("b@example.at").await);
    // Sold out in the books (6 tickets) by three orders the gate does not know of.
    for _ in 0..3 {
        let order_id = domain::OrderId::new();
        let other = OrderMessage {
            order_id,
            payment_ref: format!("sim_{order_id}"),
            ..late.clone()
        };
        c.books.persist(&other).await.unwrap();
    }
    c.books.set_atomic_batch(1);
    c.books.fail_persists_after(1, || {
        store::RepoError::Unavailable("the second transaction failed".into())
    });
    assert_eq!(
        c.push(Some(TOKEN), &[late.clone(), next.clone()]).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // The first part: rejected, its refund made, and the gate shows it.
    assert_eq!(c.shown(late.order_id).await, OrderStatus::Rejected);
    let asked = refunded.refunded_refs();
    assert_eq!(asked, std::slice::from_ref(&late.payment_ref));
    // The second: nothing decided.
    assert!(c.books.order(next.order_id).await.unwrap().is_none());
    assert_eq!(c.shown(next.order_id).await, OrderStatus::Confirming);

    c.books.fail_persists_with(None);
    assert_eq!(
        c.push(Some(TOKEN), &[late.clone(), next.clone()]).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(c.shown(next.order_id).await, OrderStatus::Rejected);
}

/// A value the books refuse for good is isolated: the batch is halved until the order at
/// fault stands alone, and the message comes back for it.
#[tokio::test]
async fn a_refused_write_is_isolated_down_to_single_orders() {
    let c = consumer().await;
    let (a, b) = (c.paid("a@example.at").await, c.paid("b@example.at").await);
    c.books.fail_persists_with(Some(|| {
        store::RepoError::Permanent("value out of range".into())
    }));
    let (lines, _guard) = testkit::capture_logs();
    assert_eq!(
        c.push(Some(TOKEN), &[a, b]).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    let refused = lines
        .take()
        .into_iter()
        .filter(|l| l["message"] == "the database refuses this order")
        .count();
    assert_eq!(refused, 2, "each order tried alone");
}

/// One order of a signed batch that cannot be read does not cost its neighbours their
/// delivery: they are persisted, the bad ones are counted and logged with what they were. An
/// order out of the domain's range (no tickets) is refused as it is read, like a broken one.
#[tokio::test]
async fn an_unreadable_order_does_not_drop_its_batch() {
    let c = consumer().await;
    let good = c.paid("fan@example.at").await;
    let mut none = serde_json::to_value(&good).unwrap();
    none["order_id"] = json!(domain::OrderId::new());
    none["quantity"] = json!(0);
    let data = json!({"orders": [
        serde_json::to_value(&good).unwrap(),
        {"order_id": "not-an-order", "quantity": 2},
        none,
    ]});
    let envelope = json!({"message": {"data": base64::engine::general_purpose::STANDARD.encode(data.to_string()),
        "messageId": "7", "publishTime": "2026-01-01T00:00:00Z"}, "subscription": "projects/p/subscriptions/s"});
    assert_eq!(
        c.push_body(Some(TOKEN), envelope.to_string()).await,
        StatusCode::NO_CONTENT
    );
    let stored = c
        .books
        .order(good.order_id)
        .await
        .unwrap()
        .expect("persisted");
    assert_eq!(stored.status, OrderStatus::Confirmed);
    assert_eq!(c.state.stats.persisted.load(Ordering::Relaxed), 1);
    assert_eq!(c.state.stats.permanent.load(Ordering::Relaxed), 2);
}
