//! consume-order's push endpoint with `oneshot`, over the real Postgres and Redis:
//! authentication, envelope variants, bad messages, duplicate and failed deliveries.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use base64::Engine;
use chrono::Utc;
use consume_order::{AppState, PushAuth};
use serde_json::{Value, json};
use shared::domain::{
    Email, Event, IdempotencyKey, OrderMessage, OrderStatus, Quantity, TicketTypeId,
};
use shared::gate::{PayBegin, ReserveOutcome};
use shared::repo::OrderRepository;
use shared::testing::TestEnv;
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
    let gate = env.gate().await;
    let tt = TicketTypeId::parse("vip-3-day").unwrap();
    let email = Email::parse("fan@example.at").unwrap();
    let key = IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    let ReserveOutcome::Reserved { order_id, .. } = gate
        .reserve(&ev.id, &tt, Quantity::parse(2).unwrap(), &email, &key)
        .await
        .unwrap()
    else {
        panic!("not reserved")
    };
    let PayBegin::Charge {
        amount_cents,
        attempt,
        ..
    } = gate
        .pay_begin(&ev.id, order_id, "tok_approve", None)
        .await
        .unwrap()
    else {
        panic!("not charging")
    };
    let paid_at = Utc::now();
    let approval = gate
        .pay_approved(&ev.id, order_id, attempt, "sim_ref", paid_at)
        .await
        .unwrap();
    assert!(matches!(approval, shared::gate::Approval::Recorded(_)));
    OrderMessage {
        order_id,
        event: ev.id.clone(),
        ticket_type: tt,
        quantity: 2,
        email: email.as_str().into(),
        amount_cents,
        payment_ref: "sim_ref".into(),
        paid_at,
    }
}

fn envelope(msg: &OrderMessage, snake_case: bool) -> Value {
    let data = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(msg).unwrap());
    if snake_case {
        // What the emulator sends: every field twice, no deliveryAttempt.
        json!({"message": {"data": data, "messageId": "42", "message_id": "42", "publishTime": "2026-01-01T00:00:00Z",
            "publish_time": "2026-01-01T00:00:00Z", "attributes": {"order_id": msg.order_id.to_string()}},
            "subscription": "projects/p/subscriptions/s"})
    } else {
        json!({"message": {"data": data, "messageId": "42", "publishTime": "2026-01-01T00:00:00Z"}, "subscription": "projects/p/subscriptions/s", "deliveryAttempt": 2})
    }
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
