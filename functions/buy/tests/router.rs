//! The fast tier: buy's router driven with `oneshot` over the test kit's in-memory gate and
//! publisher (held to the Redis gate by `shared/gate/tests/contract.rs`). No engine is needed:
//! `cargo test -p buy --test router`. The same journeys over the real engines are in `api.rs`
//! and `e2e.rs`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use domain::books::Persisted;
use domain::{Event, OrderStatus};
use gate::ratelimit::Policy;
use gate::{PaymentFlow, ReadModel};
use serde_json::{Value, json};
use testkit::memory::{MemoryGate, MemoryPublisher, MemoryRateLimit};
use testkit::new_event;
use testkit::router::{Answer, assert_problem, call};

struct Shop {
    gate: Arc<MemoryGate>,
    publisher: Arc<MemoryPublisher>,
    app: axum::Router,
    ev: Event,
}

/// buy over an in-memory gate with one event on sale; `limits` as given.
fn shop(confirm_wait: Duration, limits: Option<buy::Limits>) -> Shop {
    let gate = Arc::new(MemoryGate::new());
    let ev = new_event(10, -60, 600);
    gate.seed(&ev);
    let publisher = Arc::new(MemoryPublisher::default());
    let state = buy::AppState {
        gate: gate.clone(),
        publisher: publisher.clone(),
        payments: Arc::new(payments::SimulatedPayments),
        limits,
        redeliver_after: Duration::from_secs(300),
        confirm_wait,
        seen_events: Default::default(),
        room_keys: None,
    };
    Shop {
        app: buy::app(state.clone()),
        gate,
        publisher,
        ev,
    }
}

fn post(uri: &str, key: Option<&str>, body: &Value) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

fn fresh_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl Shop {
    async fn reserve(&self, key: &str, quantity: i64, email: &str) -> Answer {
        let body = json!({"ticket_type": "vip-3-day", "quantity": quantity, "email": email});
        let uri = format!("/v1/events/{}/orders", self.ev.id);
        call(&self.app, post(&uri, Some(key), &body)).await
    }

    async fn pay(&self, order: &str, token: &str) -> Answer {
        let uri = format!("/v1/orders/{order}/payment");
        call(
            &self.app,
            post(&uri, None, &json!({"payment_token": token})),
        )
        .await
    }

    async fn cancel(&self, order: &str) -> Answer {
        let uri = format!("/v1/orders/{order}/cancel");
        call(&self.app, post(&uri, None, &json!({}))).await
    }

    async fn available(&self) -> i64 {
        let snap = self.gate.refresh(&self.ev.id).await.unwrap().unwrap();
        snap.stock["vip-3-day"].available
    }
}

#[tokio::test]
async fn a_hold_is_202_with_its_location_and_a_retry_answers_it_again() {
    let s = shop(Duration::ZERO, None);
    let key = fresh_key();
    let a = s.reserve(&key, 2, "fan@example.at").await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    let id = a.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(a.headers[header::LOCATION], format!("/v1/orders/{id}"));
    assert_eq!(a.body["status"], "reserved");
    assert!(a.headers.contains_key("x-request-id"));
    let again = s.reserve(&key, 2, "fan@example.at").await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["order_id"], id.as_str());
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(s.available().await, 8, "the retry took nothing more");
    assert_problem(
        &s.reserve(&key, 3, "fan@example.at").await,
        422,
        "idempotency-key-reused",
    );
}

#[tokio::test]
async fn refusals_are_problems_and_take_nothing() {
    let s = shop(Duration::ZERO, None);
    let uri = format!("/v1/events/{}/orders", s.ev.id);
    let ok = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "fan@example.at"});
    assert_problem(
        &call(&s.app, post(&uri, None, &ok)).await,
        400,
        "bad-request",
    );
    let zero = json!({"ticket_type": "vip-3-day", "quantity": 0, "email": "fan@example.at"});
    let a = call(&s.app, post(&uri, Some(&fresh_key()), &zero)).await;
    assert_problem(&a, 422, "invalid-input");
    assert_eq!(a.body["field"], "quantity");
    let a = s.reserve(&fresh_key(), 5, "fan@example.at").await;
    assert_problem(&a, 422, "limit-exceeded");
    let other = call(
        &s.app,
        post("/v1/events/no-such-event/orders", Some(&fresh_key()), &ok),
    )
    .await;
    assert_problem(&other, 404, "not-found");
    assert_eq!(s.available().await, 10);
    for i in 0..5 {
        let a = s
            .reserve(&fresh_key(), 2, &format!("f{i}@example.at"))
            .await;
        assert_eq!(a.status, StatusCode::ACCEPTED);
    }
    assert_problem(
        &s.reserve(&fresh_key(), 1, "late@example.at").await,
        409,
        "sold-out",
    );
}

#[tokio::test]
async fn a_payment_publishes_the_order_and_answers_its_outcome() {
    let s = shop(Duration::from_secs(5), None);
    let a = s.reserve(&fresh_key(), 2, "fan@example.at").await;
    let id = a.body["order_id"].as_str().unwrap().to_owned();
    // consume-order, played by hand: persists what buy published and mirrors it in the gate.
    let (gate, publisher) = (s.gate.clone(), s.publisher.clone());
    let consumer = tokio::spawn(async move {
        for _ in 0..500 {
            if let Some(msg) = publisher.orders().pop() {
                let done = Persisted {
                    status: OrderStatus::Confirmed,
                    tickets: vec!["T-1".into(), "T-2".into()],
                    duplicate: false,
                    payment_ref: msg.payment_ref.clone(),
                };
                gate.finalize_all(&msg.event, &[(&msg, &done)])
                    .await
                    .unwrap();
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let paid = s.pay(&id, "tok_approve").await;
    consumer.await.unwrap();
    assert_eq!(paid.status, StatusCode::ACCEPTED, "{:?}", paid.body);
    assert_eq!(paid.body["status"], "confirmed", "the answer waited for it");
    let published = s.publisher.orders();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].order_id.to_string(), id);
    assert_eq!(published[0].amount_cents, 2 * 34_900);
    assert_problem(&s.pay(&id, "tok_approve").await, 409, "conflict");
    assert_problem(&s.cancel(&id).await, 409, "conflict");
}

/// The paid order carries the trace of the fan's payment request, so the consumer can write its
/// work on that order into the same trace (issue 26: one trace per order).
#[tokio::test]
async fn a_paid_order_carries_the_trace_of_the_payment_request() {
    let s = shop(Duration::ZERO, None);
    let mut traced = vec![];
    for (header, value) in [
        (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        (
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1234567890;o=1",
        ),
    ] {
        let a = s.reserve(&fresh_key(), 1, "fan@example.at").await;
        let id = a.body["order_id"].as_str().unwrap().to_owned();
        let mut req = post(
            &format!("/v1/orders/{id}/payment"),
            None,
            &json!({"payment_token": "tok_approve"}),
        );
        req.headers_mut().insert(header, value.parse().unwrap());
        let paid = call(&s.app, req).await;
        assert_eq!(paid.status, StatusCode::ACCEPTED, "{:?}", paid.body);
        traced.push(id);
    }
    // And a payment without a trace header publishes none.
    let a = s.reserve(&fresh_key(), 1, "other@example.at").await;
    let untraced = a.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(
        s.pay(&untraced, "tok_approve").await.status,
        StatusCode::ACCEPTED
    );

    let published = s.publisher.orders();
    let trace_of = |id: &str| {
        published
            .iter()
            .find(|m| m.order_id.to_string() == id)
            .expect("published")
            .trace
            .clone()
            .map(|t| (t.trace_id().to_owned(), t.span_id().to_owned()))
    };
    assert_eq!(
        trace_of(&traced[0]),
        Some((
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            "00f067aa0ba902b7".into()
        ))
    );
    assert_eq!(
        trace_of(&traced[1]),
        Some((
            "105445aa7843bc8bf206b12000100000".into(),
            "1234567890".into()
        ))
    );
    assert_eq!(trace_of(&untraced), None);
}

#[tokio::test]
async fn a_decline_keeps_the_hold_and_a_cancel_releases_it() {
    let s = shop(Duration::ZERO, None);
    let a = s.reserve(&fresh_key(), 2, "fan@example.at").await;
    let id = a.body["order_id"].as_str().unwrap().to_owned();
    assert_problem(&s.pay(&id, "tok_decline").await, 402, "payment-declined");
    assert_eq!(s.available().await, 8);
    let c = s.cancel(&id).await;
    assert_eq!(c.status, StatusCode::OK);
    assert_eq!(c.body["status"], "cancelled");
    assert_eq!(s.cancel(&id).await.body["status"], "cancelled");
    assert_eq!(s.available().await, 10);
    assert_problem(&s.pay(&id, "tok_approve").await, 409, "conflict");
    assert_problem(
        &s.pay(&uuid::Uuid::new_v4().to_string(), "tok_approve")
            .await,
        404,
        "not-found",
    );
    assert!(s.publisher.orders().is_empty());
}

#[tokio::test]
async fn a_broker_outage_keeps_the_paid_order_for_the_relay() {
    let s = shop(Duration::ZERO, None);
    let a = s.reserve(&fresh_key(), 1, "fan@example.at").await;
    let id = a.body["order_id"].as_str().unwrap().to_owned();
    s.publisher.set_down(true);
    let paid = s.pay(&id, "tok_approve").await;
    assert_problem(&paid, 503, "unavailable");
    assert!(paid.headers.contains_key(header::RETRY_AFTER));
    s.publisher.set_down(false);
    let state = buy::AppState {
        gate: s.gate.clone(),
        publisher: s.publisher.clone(),
        payments: Arc::new(payments::SimulatedPayments),
        limits: None,
        redeliver_after: Duration::from_secs(300),
        confirm_wait: Duration::ZERO,
        seen_events: Default::default(),
        room_keys: None,
    };
    let relayed = buy::relay_once(&state, Duration::ZERO, Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(relayed, 1);
    assert_eq!(s.publisher.orders()[0].order_id.to_string(), id);
}

#[tokio::test]
async fn a_gate_outage_is_503_with_retry_after() {
    let s = shop(Duration::ZERO, None);
    s.gate.set_down(true);
    let a = s.reserve(&fresh_key(), 1, "fan@example.at").await;
    assert_problem(&a, 503, "unavailable");
    assert!(a.headers.contains_key(header::RETRY_AFTER));
    assert!(
        !a.body["detail"].as_str().unwrap().contains("in-memory"),
        "the cause stays in the log"
    );
}

#[tokio::test]
async fn a_client_over_its_budget_is_429() {
    let per_ip = Policy {
        per_minute: 60,
        burst: 2,
    };
    let limits = buy::Limits {
        limiter: Arc::new(MemoryRateLimit::default()),
        per_ip,
        per_email: Policy {
            per_minute: 0,
            burst: 1,
        },
        trusted_proxy_hops: 1,
        holds_per_client: 0,
    };
    let s = shop(Duration::ZERO, Some(limits));
    let from = |key: &str| {
        let body = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "fan@example.at"});
        let mut req = post(&format!("/v1/events/{}/orders", s.ev.id), Some(key), &body);
        req.headers_mut()
            .insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        req
    };
    for _ in 0..2 {
        let a = call(&s.app, from(&fresh_key())).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    let a = call(&s.app, from(&fresh_key())).await;
    assert_problem(&a, 429, "rate-limited");
    assert!(a.headers.contains_key(header::RETRY_AFTER));
    assert_eq!(s.available().await, 8);
}
