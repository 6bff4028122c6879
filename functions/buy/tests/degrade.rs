//! Graceful degradation on real engines: Redis crashes mid-sale and comes back.

mod common;

use gate::ReadModel;
use testkit::router::call;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use domain::{Event, EventId, OrderBatch, OrderId, OrderStatus};
use serde_json::json;
use store::OrderRepository;
use testkit::{OwnRedis, TestEnv};

fn reserve(ev: &Event, email: &str) -> Request<Body> {
    Request::post(format!("/v1/events/{}/orders", ev.id))
        .header(header::CONTENT_TYPE, "application/json")
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .body(Body::from(
            json!({"ticket_type": "vip-3-day", "quantity": 2, "email": email}).to_string(),
        ))
        .unwrap()
}

#[tokio::test]
async fn redis_down_buy_refuses_fast_the_consumer_still_persists_and_the_gate_catches_up() {
    let env = TestEnv::get();
    let mut redis = OwnRedis::start().await;
    let gate = gate::Gate::connect(&redis.url, Duration::from_millis(300))
        .await
        .unwrap();
    let ev = Event::frequency(
        EventId::parse(&common::unique("degrade")).unwrap(),
        10,
        chrono::Utc::now() - chrono::Duration::minutes(1),
        600,
    );
    env.repo().seed(&ev).await.unwrap();
    gate.seed(&ev).await.unwrap();
    let topic = common::topic(&env).await;
    let tap = common::subscription(&env, &topic, json!({"ackDeadlineSeconds": 10})).await;
    let buy = buy::app(buy::AppState {
        gate: Arc::new(gate.clone()),
        publisher: Arc::new(common::publisher(&env, &topic).await),
        payments: Arc::new(payments::SimulatedPayments),
        limits: None,
        redeliver_after: std::time::Duration::from_secs(300),
        confirm_wait: std::time::Duration::from_secs(1),
        seen_events: Default::default(),
        room_keys: None,
    });

    // A fan reserves and pays while everything is up.
    let a = call(&buy, reserve(&ev, "early@example.at")).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let id = OrderId::parse(a.body["order_id"].as_str().unwrap()).unwrap();
    let pay = Request::post(format!("/v1/orders/{id}/payment"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"payment_token":"tok_approve"}"#))
        .unwrap();
    assert_eq!(call(&buy, pay).await.status, StatusCode::ACCEPTED);
    let published = {
        let start = Instant::now();
        loop {
            let got = common::pull(&env, &tap).await;
            if let Some(m) = got.first() {
                let data = base64::engine::general_purpose::STANDARD
                    .decode(m["message"]["data"].as_str().unwrap())
                    .unwrap();
                break OrderBatch::decode(&data).unwrap().orders.remove(0);
            }
            assert!(start.elapsed() < Duration::from_secs(10), "not published");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(published.order_id, id);

    // Redis crashes. buy answers a clear 503 with Retry-After, quickly: no hanging request.
    redis.kill();
    let started = Instant::now();
    let a = call(&buy, reserve(&ev, "during@example.at")).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.body["type"], "/problems/unavailable");
    assert!(a.headers.contains_key(header::RETRY_AFTER));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The consumer still persists: the database is the authority. Mirroring the result in the
    // gate fails, so the delivery is answered "retry" and Pub/Sub will bring it again.
    let consumer = consume_order::AppState::new(
        Arc::new(env.repo()),
        gate.clone(),
        consume_order::PushAuth::Token(common::PUSH_TOKEN.into()),
    );
    let first = consume_order::handle_batch(&consumer, std::slice::from_ref(&published)).await;
    assert!(
        matches!(first, Err(consume_order::HandleError::Gate(_))),
        "{first:?}"
    );
    let stored = env.repo().order(id).await.unwrap().expect("persisted");
    assert_eq!(stored.status, OrderStatus::Confirmed);

    // Redis returns with its data; the redelivery finds the order persisted and catches the
    // gate's read model up: the fan sees "confirmed" with the ticket codes, the books balance.
    redis.restart().await;
    let start = Instant::now();
    let again = loop {
        match consume_order::handle_batch(&consumer, std::slice::from_ref(&published)).await {
            Ok(statuses) => break statuses[0],
            Err(e) => {
                assert!(start.elapsed() < Duration::from_secs(15), "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert_eq!(again, OrderStatus::Confirmed);
    let order = gate.order(&ev.id, id).await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.tickets.len(), 2);
    let report = recovery::audit::audit(&gate, &env.repo(), &ev.id)
        .await
        .unwrap();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    assert!(report.quiet);
    let line = report
        .lines
        .iter()
        .find(|l| l.ticket_type == "vip-3-day")
        .unwrap();
    assert_eq!((line.redis.sold, line.db.as_ref().unwrap().sold), (2, 2));

    // And the sale goes on.
    assert_eq!(
        call(&buy, reserve(&ev, "after@example.at")).await.status,
        StatusCode::ACCEPTED
    );
}
