//! The waiting room through buy's routes (ADR 59): join, the admission token, and reserve
//! refusing a fan without a valid one while the room is on. Each journey runs over the real
//! Redis gate and over the in-memory double (the fast tier), with the same assertions.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, header};
use chrono::Utc;
use domain::room::AdmissionToken;
use domain::signing::MessageKey;
use domain::{Email, Event, EventId};
use gate::{Checkout, RoomSettings};
use serde_json::{Value, json};
use testkit::memory::{MemoryGate, MemoryPublisher};
use testkit::router::{Answer, assert_problem, call};
use testkit::{TestEnv, new_event, signing_key};

struct Room {
    gate: Arc<dyn Checkout>,
    app: axum::Router,
    ev: Event,
}

fn app(gate: Arc<dyn Checkout>) -> axum::Router {
    buy::app(buy::AppState {
        gate,
        publisher: Arc::new(MemoryPublisher::default()),
        payments: Arc::new(payments::SimulatedPayments),
        limits: None,
        redeliver_after: Duration::from_secs(300),
        confirm_wait: Duration::ZERO,
        seen_events: Default::default(),
        room_keys: Some(buy::RoomKeys {
            current: signing_key(),
            previous: None,
        }),
    })
}

async fn on_redis(capacity: u32) -> Room {
    let env = TestEnv::get();
    let ev = env.seed(capacity, -1, 600).await;
    let gate: Arc<dyn Checkout> = Arc::new(env.gate().await);
    Room {
        app: app(gate.clone()),
        gate,
        ev,
    }
}

fn in_memory(capacity: u32) -> Room {
    let gate = Arc::new(MemoryGate::new());
    let ev = new_event(capacity, -1, 600);
    gate.seed(&ev);
    Room {
        app: app(gate.clone()),
        gate,
        ev,
    }
}

fn post(uri: &str, headers: &[(&str, &str)], body: &Value) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Body::from(body.to_string())).unwrap()
}

impl Room {
    async fn on(&self, rate_per_sec: u32) {
        let settings = RoomSettings {
            rate_per_sec,
            cap: 1000,
            window: Duration::from_secs(60),
            claim: Duration::from_secs(30),
        };
        self.gate.room_on(&self.ev.id, settings).await.unwrap();
    }

    async fn join(&self, email: &str) -> Answer {
        let uri = format!("/v1/events/{}/room", self.ev.id);
        call(&self.app, post(&uri, &[], &json!({ "email": email }))).await
    }

    async fn reserve(&self, email: &str, token: Option<&str>) -> Answer {
        let key = uuid::Uuid::new_v4().to_string();
        let mut headers = vec![("idempotency-key", key.as_str())];
        if let Some(t) = token {
            headers.push((buy::ADMISSION_HEADER, t));
        }
        let body = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": email});
        let uri = format!("/v1/events/{}/orders", self.ev.id);
        call(&self.app, post(&uri, &headers, &body)).await
    }

    async fn available(&self) -> i64 {
        let snap = self.gate.refresh(&self.ev.id).await.unwrap().unwrap();
        snap.stock["vip-3-day"].available
    }

    /// A token for `email` signed with `key`, as the room would not have issued it.
    fn token(
        &self,
        event: &EventId,
        email: &str,
        expires_in_secs: i64,
        key: &MessageKey,
    ) -> String {
        AdmissionToken {
            event: event.clone(),
            email: Email::parse(email).unwrap(),
            place: 1,
            expires_at: Utc::now() + chrono::Duration::seconds(expires_in_secs),
        }
        .issue(key)
    }
}

async fn a_fan_reserves_only_with_its_own_valid_admission(r: Room) {
    // The room off: the shop is open to all, and join says so.
    let off = r.join("early@x.at").await;
    assert_eq!(off.body["status"], "off", "{:?}", off.body);
    assert_eq!(r.reserve("early@x.at", None).await.status, 202);
    let before = r.available().await;

    r.on(1000).await;
    let refused = r.reserve("fan@x.at", None).await;
    assert_problem(&refused, 403, "not-admitted");
    assert!(
        refused.body["detail"].as_str().unwrap().contains("/room"),
        "{:?}",
        refused.body
    );

    let joined = r.join("Fan@X.at").await;
    assert_eq!(joined.status, 200, "{:?}", joined.body);
    assert_eq!(joined.body["status"], "admitted", "{:?}", joined.body);
    let token = joined.body["admission_token"].as_str().unwrap().to_owned();
    assert!(joined.body["admitted_until"].is_string());
    let again = r.join("fan@x.at").await;
    assert_eq!(
        again.body["queue_id"], joined.body["queue_id"],
        "one place per address"
    );

    // Another address with this fan's token, a forged one, a garbled one, another event's,
    // an expired one.
    let (ours, theirs) = (signing_key(), MessageKey::parse(&"f".repeat(32)).unwrap());
    for (email, token, says) in [
        ("bot@x.at", token.clone(), "another e-mail"),
        (
            "fan@x.at",
            r.token(&r.ev.id, "fan@x.at", 60, &theirs),
            "not ours",
        ),
        ("fan@x.at", format!("{token}!"), "malformed"),
        (
            "fan@x.at",
            r.token(
                &EventId::parse("other-2027").unwrap(),
                "fan@x.at",
                60,
                &ours,
            ),
            "another event",
        ),
        (
            "fan@x.at",
            r.token(&r.ev.id, "fan@x.at", -1, &ours),
            "has ended",
        ),
    ] {
        let a = r.reserve(email, Some(&token)).await;
        assert_problem(&a, 403, "not-admitted");
        let detail = a.body["detail"].as_str().unwrap();
        assert!(detail.contains(says), "{says}: {detail}");
    }
    assert_eq!(r.available().await, before, "refusals take nothing");

    let held = r.reserve("fan@x.at", Some(&token)).await;
    assert_eq!(held.status, 202, "{:?}", held.body);
    assert_eq!(r.available().await, before - 1);

    // Bad input to join: a clear 422, and no place taken.
    let bad = r.join("not-an-address").await;
    assert_problem(&bad, 422, "invalid-input");
}

async fn a_waiting_fan_learns_its_place_and_an_honest_estimate(r: Room) {
    r.on(1).await;
    let first = r.join("one@x.at").await;
    assert_eq!(first.body["status"], "admitted", "{:?}", first.body);
    let mut last = Value::Null;
    for i in 0..4 {
        last = r.join(&format!("w{i}@x.at")).await.body;
    }
    assert_eq!(last["status"], "waiting", "{last:?}");
    assert_eq!(last["place"], 5);
    let ahead = last["ahead"].as_u64().unwrap();
    assert!((2..=3).contains(&ahead), "{last:?}");
    assert_eq!(last["estimate_secs"], ahead + 1, "at 1 a second: {last:?}");
    assert!(last.get("admission_token").is_none());
    let refused = r.reserve("w3@x.at", None).await;
    assert_problem(&refused, 403, "not-admitted");
}

#[tokio::test]
async fn redis_a_fan_reserves_only_with_its_own_valid_admission() {
    a_fan_reserves_only_with_its_own_valid_admission(on_redis(10).await).await;
}

#[tokio::test]
async fn memory_a_fan_reserves_only_with_its_own_valid_admission() {
    a_fan_reserves_only_with_its_own_valid_admission(in_memory(10)).await;
}

#[tokio::test]
async fn redis_a_waiting_fan_learns_its_place_and_an_honest_estimate() {
    a_waiting_fan_learns_its_place_and_an_honest_estimate(on_redis(10).await).await;
}

#[tokio::test]
async fn memory_a_waiting_fan_learns_its_place_and_an_honest_estimate() {
    a_waiting_fan_learns_its_place_and_an_honest_estimate(in_memory(10)).await;
}
