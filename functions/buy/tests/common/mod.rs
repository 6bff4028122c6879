//! Test helpers shared by buy's integration tests: Pub/Sub resources on the emulator (each test
//! its own topic), serving an app on a free port, and the three functions' states.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use payments::SimulatedPayments;
use pubsub::PubSubPublisher;
use serde_json::{Value, json};
use testkit::TestEnv;

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub fn admin(env: &TestEnv, path: &str) -> String {
    format!(
        "http://{}/v1/projects/{}/{path}",
        env.pubsub_host, env.project
    )
}

/// Creates a topic; returns its id.
pub async fn topic(env: &TestEnv) -> String {
    let id = unique("orders");
    let res = reqwest::Client::new()
        .put(admin(env, &format!("topics/{id}")))
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "create topic: {}",
        res.text().await.unwrap()
    );
    id
}

/// Creates a subscription with `body` (topic filled in); returns its id.
pub async fn subscription(env: &TestEnv, topic: &str, mut body: Value) -> String {
    let id = unique("sub");
    body["topic"] = json!(format!("projects/{}/topics/{topic}", env.project));
    let res = reqwest::Client::new()
        .put(admin(env, &format!("subscriptions/{id}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        res.status().is_success(),
        "create subscription: {}",
        res.text().await.unwrap()
    );
    id
}

/// A push subscription to `endpoint` with a dead-letter topic after `max_attempts`;
/// returns the pull subscription on the dead-letter topic.
pub async fn push_with_dead_letter(
    env: &TestEnv,
    topic: &str,
    endpoint: &str,
    max_attempts: u32,
) -> String {
    let dead = self::topic(env).await;
    let dead_sub = subscription(env, &dead, json!({"ackDeadlineSeconds": 10})).await;
    subscription(
        env,
        topic,
        json!({
            "pushConfig": {"pushEndpoint": endpoint},
            "ackDeadlineSeconds": 10,
            "retryPolicy": {"minimumBackoff": "1s", "maximumBackoff": "2s"},
            "deadLetterPolicy": {
                "deadLetterTopic": format!("projects/{}/topics/{dead}", env.project),
                "maxDeliveryAttempts": max_attempts
            }
        }),
    )
    .await;
    dead_sub
}

/// Pulls (and acks) up to 10 messages from a subscription.
pub async fn pull(env: &TestEnv, sub: &str) -> Vec<Value> {
    let c = reqwest::Client::new();
    let res: Value = c
        .post(admin(env, &format!("subscriptions/{sub}:pull")))
        .json(&json!({"maxMessages": 10, "returnImmediately": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msgs = res["receivedMessages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let acks: Vec<Value> = msgs.iter().map(|m| m["ackId"].clone()).collect();
    if !acks.is_empty() {
        c.post(admin(env, &format!("subscriptions/{sub}:acknowledge")))
            .json(&json!({"ackIds": acks}))
            .send()
            .await
            .unwrap();
    }
    msgs
}

pub async fn publisher(env: &TestEnv, topic: &str) -> PubSubPublisher {
    PubSubPublisher::connect(
        &format!("projects/{}/topics/{topic}", env.project),
        Some(&env.pubsub_host),
        Duration::from_secs(5),
        Default::default(),
        Some(testkit::signing_key()),
    )
    .await
    .unwrap()
}

pub async fn buy_state(env: &TestEnv, topic: &str) -> buy::AppState {
    buy::AppState {
        gate: Arc::new(env.gate().await),
        publisher: Arc::new(publisher(env, topic).await),
        payments: Arc::new(SimulatedPayments),
        limits: None,
        redeliver_after: std::time::Duration::from_secs(300),
        confirm_wait: std::time::Duration::from_secs(1),
        seen_events: Default::default(),
        room_keys: None,
    }
}

pub const PUSH_TOKEN: &str = "test-push-token-0123456789";

/// consume-order as deployed: it refuses messages without buy's signature.
pub async fn consumer_state(env: &TestEnv) -> consume_order::AppState {
    consume_order::AppState {
        signing: Some(testkit::signing_key()),
        ..consume_order::AppState::new(
            Arc::new(env.repo()),
            env.gate().await,
            consume_order::PushAuth::Token(PUSH_TOKEN.into()),
        )
    }
}

/// Serves `app` on a free loopback port; returns `http://127.0.0.1:PORT`.
pub async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}
