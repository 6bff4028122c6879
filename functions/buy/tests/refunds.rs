//! Refunds are never forgotten (ADR 39) and are decided by the books (ADR 53), on the real
//! engines: buy hands an approval that arrives for an attempt that no longer counts to the books
//! through Pub/Sub, never refunding it on Redis' word; consume-order settles it there (owed:
//! the order is paid by another charge), and the refunder asks the provider again until it
//! confirms the refund, once.

mod common;

use gate::{PaymentFlow, ReadModel};
use testkit::router::call;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use domain::{OrderBatch, OrderCharge, OrderId, OrderStatus, PaymentAttempt};
use payments::{Charge, PaymentProvider, PaymentUnavailable};
use serde_json::{Value, json};
use store::OrderRepository;
use testkit::TestEnv;
use tower::ServiceExt;

/// Approves every charge, holding the first attempt's answer back until released; fails the
/// first `fail_first` refunds of each charge; counts the refunds it made.
struct Provider {
    release: tokio::sync::Notify,
    first: Mutex<Option<PaymentAttempt>>,
    fail_first: u32,
    asked: Mutex<HashMap<String, u32>>,
    refunded: Mutex<HashMap<String, u32>>,
}

#[async_trait::async_trait]
impl PaymentProvider for Provider {
    async fn charge(
        &self,
        order: OrderId,
        attempt: &PaymentAttempt,
        _: i64,
        _: &str,
    ) -> Result<Charge, PaymentUnavailable> {
        let first = self
            .first
            .lock()
            .unwrap()
            .get_or_insert_with(|| attempt.clone())
            == attempt;
        if first {
            self.release.notified().await;
        }
        Ok(Charge::Approved {
            payment_ref: format!("ref-{order}-{attempt}"),
        })
    }
    async fn refund(
        &self,
        _: OrderId,
        payment_ref: &str,
        _: i64,
    ) -> Result<(), PaymentUnavailable> {
        let mut asked = self.asked.lock().unwrap();
        let n = asked.entry(payment_ref.to_owned()).or_default();
        *n += 1;
        if *n <= self.fail_first {
            return Err(PaymentUnavailable("provider down".into()));
        }
        *self
            .refunded
            .lock()
            .unwrap()
            .entry(payment_ref.to_owned())
            .or_default() += 1;
        Ok(())
    }
}

fn pay(id: OrderId) -> Request<Body> {
    Request::post(format!("/v1/orders/{id}/payment"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"payment_token":"tok_approve"}"#))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_approval_goes_to_the_books_and_is_refunded_exactly_once() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let topic = common::topic(&env).await;
    let tap = common::subscription(&env, &topic, json!({"ackDeadlineSeconds": 10})).await;
    let provider = Arc::new(Provider {
        release: tokio::sync::Notify::new(),
        first: Mutex::default(),
        fail_first: 2,
        asked: Mutex::default(),
        refunded: Mutex::default(),
    });
    let buy = buy::app(buy::AppState {
        payments: provider.clone(),
        ..common::buy_state(&env, &topic).await
    });
    let reserve = Request::post(format!("/v1/events/{}/orders", ev.id))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(Body::from(
            json!({"ticket_type": "vip-3-day", "quantity": 2, "email": "late@example.at"})
                .to_string(),
        ))
        .unwrap();
    let a = call(&buy, reserve).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = OrderId::parse(a.body["order_id"].as_str().unwrap()).unwrap();

    // Attempt 1 is charging (its answer held back) when the gate gives it up, and the fan's
    // second attempt is approved and published.
    let first = tokio::spawn(call_owned(buy.clone(), pay(id)));
    let gate = env.gate().await;
    let started = Instant::now();
    // Charging: the gate holds it confirming and the provider was asked.
    while gate.order(&ev.id, id).await.unwrap().unwrap().status != OrderStatus::Confirming
        || provider.first.lock().unwrap().is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "attempt 1 never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let attempt = provider.first.lock().unwrap().clone().expect("charging");
    assert_eq!(
        gate.pay_abort(&ev.id, id, &attempt).await.unwrap(),
        Some(OrderStatus::Reserved)
    );
    assert_eq!(call(&buy, pay(id)).await.status, StatusCode::ACCEPTED);
    // Attempt 1's approval arrives now: stale. buy does not refund it, and the fan is not told
    // 503.
    provider.release.notify_one();
    let answer = first.await.unwrap();
    assert_eq!(answer.0, StatusCode::ACCEPTED, "{}", answer.1);
    let stale_ref = format!("ref-{id}-{attempt}");
    assert!(
        provider.asked.lock().unwrap().is_empty(),
        "buy refunds nothing itself"
    );

    // The charge travelled to the books in a message of its own.
    let mut refund_message = None;
    let started = Instant::now();
    while refund_message.is_none() {
        for m in common::pull(&env, &tap).await {
            let data = base64::engine::general_purpose::STANDARD
                .decode(m["message"]["data"].as_str().unwrap())
                .unwrap();
            if !OrderBatch::decode(&data).unwrap().charges.is_empty() {
                refund_message = Some(m);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no refund message"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let envelope = json!({"message": refund_message.unwrap()["message"].clone(),
        "subscription": "projects/p/subscriptions/s"})
    .to_string();

    // consume-order has the books settle it: owed, since the order is paid by attempt 2's
    // charge. Its own try to refund fails (the provider is down) and it acks.
    let consumer = consume_order::AppState {
        payments: provider.clone(),
        refund_lease: Duration::from_millis(20),
        ..common::consumer_state(&env).await
    };
    let app = consume_order::app(consumer.clone());
    assert_eq!(push(&app, &envelope).await, StatusCode::NO_CONTENT);
    let owed = OrderCharge {
        order_id: id,
        payment_ref: stale_ref.clone(),
        amount_cents: 2 * ev.ticket_types[0].price_cents,
    };
    assert_eq!(
        env.repo()
            .settle_charges(std::slice::from_ref(&owed), Duration::ZERO)
            .await
            .unwrap(),
        vec![owed.clone()],
        "owed, with its amount, and not done yet"
    );
    assert!(provider.refunded.lock().unwrap().get(&stale_ref).is_none());

    // The refunder asks again until the provider confirms, then never again.
    let started = Instant::now();
    while provider.refunded.lock().unwrap().get(&stale_ref).is_none() {
        consume_order::refund_due(&consumer).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never refunded"
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    for _ in 0..3 {
        consume_order::refund_due(&consumer).await.unwrap();
    }
    assert_eq!(
        push(&app, &envelope).await,
        StatusCode::NO_CONTENT,
        "a redelivery"
    );
    assert_eq!(
        provider.refunded.lock().unwrap()[&stale_ref],
        1,
        "done once"
    );
    assert!(
        env.repo()
            .settle_charges(std::slice::from_ref(&owed), Duration::ZERO)
            .await
            .unwrap()
            .is_empty(),
        "recorded as done"
    );
    // The attempt that counts was never refunded.
    let asked: Vec<String> = provider.asked.lock().unwrap().keys().cloned().collect();
    assert_eq!(asked, vec![stale_ref], "only the stale charge");
}

async fn call_owned(app: axum::Router, req: Request<Body>) -> (StatusCode, Value) {
    let a = call(&app, req).await;
    (a.status, a.body)
}

async fn push(app: &axum::Router, envelope: &str) -> StatusCode {
    app.clone()
        .oneshot(
            Request::post(format!("/pubsub/orders?token={}", common::PUSH_TOKEN))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(envelope.to_owned()))
                .unwrap(),
        )
        .await
        .unwrap()
        .status()
}
