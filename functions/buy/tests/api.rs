//! buy's router driven with `oneshot` (no socket) over the real Redis and Pub/Sub emulator:
//! every refusal is a clear problem+json 4xx and changes nothing.

mod common;

use gate::ReadModel;
use testkit::router::{assert_problem, call};

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use domain::Event;
use serde_json::{Value, json};
use testkit::TestEnv;

fn post(uri: &str, key: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(uri).header(header::CONTENT_TYPE, "application/json");
    if let Some(k) = key {
        b = b.header("idempotency-key", k);
    }
    b.body(body.into()).unwrap()
}

fn reserve_req(ev: &Event, key: &str, body: Value) -> Request<Body> {
    post(
        &format!("/v1/events/{}/orders", ev.id),
        Some(key),
        body.to_string(),
    )
}

fn fresh_key() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn setup(capacity: u32, opens_in: i64, hold: u32) -> (TestEnv, Event, axum::Router) {
    let env = TestEnv::get();
    let ev = env.seed(capacity, opens_in, hold).await;
    let topic = common::topic(&env).await;
    let app = buy::app(common::buy_state(&env, &topic).await);
    (env, ev, app)
}

async fn untouched(env: &TestEnv, ev: &Event) {
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    for (tt, s) in snap.stock {
        assert_eq!(
            (s.available, s.held, s.confirming, s.sold),
            (s.capacity, 0, 0, 0),
            "{tt} changed"
        );
    }
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    let (env, ev, app) = setup(10, -1, 600).await;
    let ok = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "fan@example.at"});
    let uri = format!("/v1/events/{}/orders", ev.id);

    assert_problem(
        &call(&app, post(&uri, Some(&fresh_key()), "{not json")).await,
        400,
        "bad-request",
    );
    assert_problem(
        &call(&app, post(&uri, None, ok.to_string())).await,
        400,
        "bad-request",
    );
    assert_problem(
        &call(&app, post(&uri, Some("short"), ok.to_string())).await,
        422,
        "invalid-input",
    );
    let no_type = Request::post(&uri)
        .header("idempotency-key", fresh_key())
        .body(Body::from(ok.to_string()))
        .unwrap();
    assert_problem(&call(&app, no_type).await, 415, "unsupported-media-type");
    let huge = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "a".repeat(40_000)});
    assert_problem(
        &call(&app, reserve_req(&ev, &fresh_key(), huge)).await,
        413,
        "payload-too-large",
    );

    let cases = [
        (
            json!({"ticket_type": "vip-3-day", "quantity": "two", "email": "fan@example.at"}),
            "body",
        ),
        (
            json!({"ticket_type": "vip-3-day", "quantity": 1.5, "email": "fan@example.at"}),
            "body",
        ),
        (
            json!({"ticket_type": "vip-3-day", "email": "fan@example.at"}),
            "body",
        ),
        (json!([1, 2, 3]), "body"),
        (
            json!({"ticket_type": "vip-3-day", "quantity": 0, "email": "fan@example.at"}),
            "quantity",
        ),
        (
            json!({"ticket_type": "vip-3-day", "quantity": -1, "email": "fan@example.at"}),
            "quantity",
        ),
        (
            json!({"ticket_type": "vip-3-day", "quantity": 21, "email": "fan@example.at"}),
            "quantity",
        ),
        (
            json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "not-an-email"}),
            "email",
        ),
        (
            json!({"ticket_type": "VIP 3 Day!", "quantity": 1, "email": "fan@example.at"}),
            "ticket_type",
        ),
        (
            json!({"ticket_type": "no-such-type", "quantity": 1, "email": "fan@example.at"}),
            "ticket_type",
        ),
    ];
    for (body, field) in cases {
        let a = call(&app, reserve_req(&ev, &fresh_key(), body.clone())).await;
        assert_problem(&a, 422, "invalid-input");
        assert_eq!(a.body["field"], field, "{body}");
    }
    // Over the per-customer limit (4 for VIP 3-Day).
    let a = call(
        &app,
        reserve_req(
            &ev,
            &fresh_key(),
            json!({"ticket_type": "vip-3-day", "quantity": 5, "email": "fan@example.at"}),
        ),
    )
    .await;
    assert_problem(&a, 422, "limit-exceeded");
    assert_eq!(a.body["limit"], 4);

    let ghost = post(
        "/v1/events/no-such-event/orders",
        Some(&fresh_key()),
        ok.to_string(),
    );
    assert_problem(&call(&app, ghost).await, 404, "not-found");
    let bad_id = post(
        "/v1/orders/not-a-uuid/payment",
        None,
        json!({"payment_token": "tok_approve"}).to_string(),
    );
    assert_problem(&call(&app, bad_id).await, 404, "not-found");
    let get = Request::get(&uri).body(Body::empty()).unwrap();
    assert_problem(&call(&app, get).await, 405, "method-not-allowed");

    untouched(&env, &ev).await;
}

#[tokio::test]
async fn reserve_replays_with_the_same_key_and_refuses_a_different_body() {
    let (env, ev, app) = setup(10, -1, 600).await;
    let key = fresh_key();
    let body = json!({"ticket_type": "vip-3-day", "quantity": 2, "email": "fan@example.at"});
    let first = call(&app, reserve_req(&ev, &key, body.clone())).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{:?}", first.body);
    assert_eq!(first.body["status"], "reserved");
    let id = first.body["order_id"].as_str().unwrap().to_owned();
    assert_eq!(first.headers[header::LOCATION], format!("/v1/orders/{id}"));
    let again = call(&app, reserve_req(&ev, &key, body)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["order_id"], id.as_str());
    assert_eq!(again.body["hold_expires_at"], first.body["hold_expires_at"]);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    let other = json!({"ticket_type": "vip-3-day", "quantity": 3, "email": "fan@example.at"});
    assert_problem(
        &call(&app, reserve_req(&ev, &key, other)).await,
        422,
        "idempotency-key-reused",
    );
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    assert_eq!(snap.stock["vip-3-day"].held, 2);
}

#[tokio::test]
async fn too_early_sold_out_and_not_enough() {
    let (_env, early, app) = setup(10, 120, 600).await;
    let body = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "fan@example.at"});
    let a = call(&app, reserve_req(&early, &fresh_key(), body.clone())).await;
    assert_problem(&a, 425, "sale-not-open");
    let retry: u64 = a.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((115..=120).contains(&retry), "{retry}");

    let (_env, ev, app) = setup(3, -1, 600).await;
    let two = json!({"ticket_type": "vip-3-day", "quantity": 2, "email": "a@example.at"});
    assert_eq!(
        call(&app, reserve_req(&ev, &fresh_key(), two.clone()))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    let b = json!({"ticket_type": "vip-3-day", "quantity": 2, "email": "b@example.at"});
    let a = call(&app, reserve_req(&ev, &fresh_key(), b)).await;
    assert_problem(&a, 409, "not-enough-left");
    assert_eq!(a.body["available"], 1);
    let c = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "c@example.at"});
    assert_eq!(
        call(&app, reserve_req(&ev, &fresh_key(), c)).await.status,
        StatusCode::ACCEPTED
    );
    let d = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "d@example.at"});
    assert_problem(
        &call(&app, reserve_req(&ev, &fresh_key(), d)).await,
        409,
        "sold-out",
    );
}

async fn reserve_one(app: &axum::Router, ev: &Event, email: &str) -> String {
    let body = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": email});
    let a = call(app, reserve_req(ev, &fresh_key(), body)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    a.body["order_id"].as_str().unwrap().to_owned()
}

fn pay(id: &str, token: &str) -> Request<Body> {
    post(
        &format!("/v1/orders/{id}/payment"),
        None,
        json!({"payment_token": token}).to_string(),
    )
}

fn cancel(id: &str) -> Request<Body> {
    Request::post(format!("/v1/orders/{id}/cancel"))
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn payment_declined_then_approved_then_idempotent() {
    let (_env, ev, app) = setup(10, -1, 600).await;
    let id = reserve_one(&app, &ev, "payer@example.at").await;
    assert_problem(
        &call(&app, pay(&id, "tok_decline")).await,
        402,
        "payment-declined",
    );
    assert_problem(&call(&app, pay(&id, "")).await, 422, "invalid-input");
    let a = call(&app, pay(&id, "tok_approve")).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    assert_eq!(a.body["status"], "confirming");
    // A retry of the payment (network glitch) gets the same answer and is not charged twice.
    let again = call(&app, pay(&id, "tok_approve")).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_problem(&call(&app, cancel(&id)).await, 409, "conflict");
}

#[tokio::test]
async fn an_unknown_payment_outcome_keeps_the_hold_frozen() {
    let (env, ev, app) = setup(10, -1, 600).await;
    let id = reserve_one(&app, &ev, "unsure@example.at").await;
    // The provider cannot be reached: the money may or may not be taken, so nothing is
    // released and a retry (even with another card) asks about the same attempt again.
    for token in ["tok_unavailable", "tok_approve"] {
        assert_problem(&call(&app, pay(&id, token)).await, 503, "unavailable");
    }
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    assert_eq!(
        (
            snap.stock["vip-3-day"].confirming,
            snap.stock["vip-3-day"].held
        ),
        (1, 0)
    );
    assert_problem(&call(&app, cancel(&id)).await, 409, "conflict");
}

#[tokio::test]
async fn cancel_is_idempotent_and_blocks_payment() {
    let (env, ev, app) = setup(10, -1, 600).await;
    let id = reserve_one(&app, &ev, "c@example.at").await;
    for _ in 0..2 {
        let a = call(&app, cancel(&id)).await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.body["status"], "cancelled");
    }
    assert_problem(&call(&app, pay(&id, "tok_approve")).await, 409, "conflict");
    untouched(&env, &ev).await;
    assert_problem(
        &call(&app, cancel(&uuid::Uuid::new_v4().to_string())).await,
        404,
        "not-found",
    );
}

#[tokio::test]
async fn paying_after_the_hold_expired_is_gone() {
    let (env, ev, app) = setup(10, -1, 1).await;
    let id = reserve_one(&app, &ev, "late@example.at").await;
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    assert_problem(
        &call(&app, pay(&id, "tok_approve")).await,
        410,
        "hold-expired",
    );
    untouched(&env, &ev).await;
}

#[tokio::test]
async fn every_answer_carries_a_request_id_and_a_sane_caller_id_is_kept() {
    let (_env, ev, app) = setup(10, -1, 600).await;
    // Refusals, unknown routes and successes alike carry an id, and ids differ.
    let a = call(&app, post("/v1/events/x/orders", None, "{")).await;
    let b = call(&app, Request::get("/nope").body(Body::empty()).unwrap()).await;
    let c = call(
        &app,
        reserve_req(
            &ev,
            &fresh_key(),
            json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "rid@example.com"}),
        ),
    )
    .await;
    assert_eq!(c.status, StatusCode::ACCEPTED);
    let ids: Vec<String> = [&a, &b, &c]
        .iter()
        .map(|x| x.headers["x-request-id"].to_str().unwrap().to_owned())
        .collect();
    assert!(ids.iter().all(|i| !i.is_empty()), "{ids:?}");
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "{ids:?}");

    let mut req = Request::get("/healthz").body(Body::empty()).unwrap();
    req.headers_mut()
        .insert("x-request-id", "lb-1234-abcd".parse().unwrap());
    assert_eq!(
        call(&app, req).await.headers["x-request-id"],
        "lb-1234-abcd"
    );
    // An id with spaces or over 128 characters is replaced, not echoed.
    for bad in ["has space", &"x".repeat(129)] {
        let mut req = Request::get("/healthz").body(Body::empty()).unwrap();
        req.headers_mut()
            .insert("x-request-id", bad.parse().unwrap());
        let got = call(&app, req).await.headers["x-request-id"].clone();
        assert_ne!(got, bad);
        assert!(!got.is_empty());
    }
}

async fn limited_app(
    per_ip: gate::ratelimit::Policy,
    per_email: gate::ratelimit::Policy,
) -> (TestEnv, Event, axum::Router) {
    capped_app(per_ip, per_email, 0).await
}

async fn capped_app(
    per_ip: gate::ratelimit::Policy,
    per_email: gate::ratelimit::Policy,
    holds_per_client: u32,
) -> (TestEnv, Event, axum::Router) {
    let env = TestEnv::get();
    let ev = env.seed(50, -1, 600).await;
    let topic = common::topic(&env).await;
    let mut state = common::buy_state(&env, &topic).await;
    state.limits = Some(buy::Limits {
        limiter: std::sync::Arc::new(gate::ratelimit::RateLimiter::new(
            env.gate().await.connection(),
            std::time::Duration::from_millis(500),
        )),
        per_ip,
        per_email,
        trusted_proxy_hops: 1,
        holds_per_client,
    });
    (env, ev, buy::app(state))
}

/// A documentation-range address of its own per test run, so runs never share a budget.
fn fresh_ip() -> String {
    let b = uuid::Uuid::new_v4().into_bytes();
    format!("198.51.{}.{}", b[0], b[1])
}

fn from_ip(mut req: Request<Body>, xff: &str) -> Request<Body> {
    req.headers_mut()
        .insert("x-forwarded-for", xff.parse().unwrap());
    req
}

fn fan_body(email: &str) -> Value {
    json!({"ticket_type": "vip-3-day", "quantity": 1, "email": email})
}

#[tokio::test]
async fn a_client_ip_over_its_budget_gets_429_with_retry_after_and_nothing_changes() {
    use gate::ratelimit::Policy;
    let per_ip = Policy {
        per_minute: 6,
        burst: 3,
    };
    let off = Policy {
        per_minute: 0,
        burst: 0,
    };
    let (env, ev, app) = limited_app(per_ip, off).await;
    let ip = fresh_ip();
    for i in 0..3 {
        let req = reserve_req(&ev, &fresh_key(), fan_body(&format!("ip{i}@example.com")));
        let a = call(&app, from_ip(req, &ip)).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    let req = reserve_req(&ev, &fresh_key(), fan_body("ip3@example.com"));
    let a = call(&app, from_ip(req, &ip)).await;
    assert_problem(&a, 429, "rate-limited");
    let retry: u64 = a.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=10).contains(&retry), "retry after {retry}");
    assert_eq!(a.headers["ratelimit-policy"], "\"per-ip\";q=3;w=30");
    assert!(
        a.headers["ratelimit"]
            .to_str()
            .unwrap()
            .starts_with("\"per-ip\";r=0;t=")
    );
    // The refused request changed nothing: three held, the rest available.
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    let s = snap.stock["vip-3-day"];
    assert_eq!((s.held, s.available), (3, s.capacity - 3));
    // Another address has its own budget; a spoofed entry before the trusted hop is ignored.
    let req = reserve_req(&ev, &fresh_key(), fan_body("other@example.com"));
    let a = call(&app, from_ip(req, &format!("{ip}, {}", fresh_ip()))).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    // Payment and cancel count against the same budget.
    let a = call(
        &app,
        from_ip(cancel(&uuid::Uuid::new_v4().to_string()), &ip),
    )
    .await;
    assert_problem(&a, 429, "rate-limited");
}

#[tokio::test]
async fn one_email_reserving_too_often_is_limited_but_others_are_not() {
    use gate::ratelimit::Policy;
    let off = Policy {
        per_minute: 0,
        burst: 0,
    };
    let per_email = Policy {
        per_minute: 2,
        burst: 2,
    };
    let (_env, ev, app) = limited_app(off, per_email).await;
    let bot = format!("bot-{}@example.com", fresh_key());
    for _ in 0..2 {
        let a = call(&app, reserve_req(&ev, &fresh_key(), fan_body(&bot))).await;
        // The second is refused by the per-customer limit logic only if over the ticket limit;
        // here each attempt is a new key for one ticket, within the limit of 4.
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    let a = call(&app, reserve_req(&ev, &fresh_key(), fan_body(&bot))).await;
    assert_problem(&a, 429, "rate-limited");
    assert_eq!(a.headers["ratelimit-policy"], "\"per-email\";q=2;w=60");
    let a = call(
        &app,
        reserve_req(&ev, &fresh_key(), fan_body("someone-else@example.com")),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    // Bad input is refused before the limiter: it spends no budget and changes nothing.
    let a = call(
        &app,
        reserve_req(
            &ev,
            &fresh_key(),
            json!({"ticket_type": "vip-3-day", "quantity": 0, "email": "x@example.com"}),
        ),
    )
    .await;
    assert_problem(&a, 422, "invalid-input");
}

/// One mailbox, one limit: the spellings its provider delivers to that mailbox share the
/// per-customer limit (the reproduction: each spelling got a limit of its own).
#[tokio::test]
async fn one_mailbox_under_many_spellings_has_one_limit() {
    let (env, ev, app) = setup(50, -1, 600).await;
    let limit = ev.ticket_types[0].per_customer_limit;
    let tt = ev.ticket_types[0].id.to_string();
    let body = |email: &str| json!({"ticket_type": tt, "quantity": limit, "email": email});
    let a = call(
        &app,
        reserve_req(&ev, &fresh_key(), body("f.an+vip@gmail.com")),
    )
    .await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    for same in ["fan@gmail.com", "Fan+1@GoogleMail.com", "F.A.N@gmail.com"] {
        let a = call(&app, reserve_req(&ev, &fresh_key(), body(same))).await;
        assert_problem(&a, 422, "limit-exceeded");
    }
    let a = call(&app, reserve_req(&ev, &fresh_key(), body("fan+2@x.at"))).await;
    assert_eq!(
        a.status,
        StatusCode::ACCEPTED,
        "another mailbox: {:?}",
        a.body
    );
    let a = call(&app, reserve_req(&ev, &fresh_key(), body("FAN@x.at"))).await;
    assert_problem(&a, 422, "limit-exceeded");
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    assert_eq!(snap.stock[tt.as_str()].held, 2 * i64::from(limit));
}

/// One client cannot sit on the stock under many addresses: it takes at most
/// `HOLDS_PER_CLIENT` holds within a hold time, then hears 429 until its oldest ends.
#[tokio::test]
async fn one_client_holding_too_much_under_many_addresses_is_capped() {
    use gate::ratelimit::Policy;
    let off = Policy {
        per_minute: 0,
        burst: 0,
    };
    let (env, ev, app) = capped_app(off, off, 3).await;
    let ip = fresh_ip();
    let first = fresh_key();
    for (i, key) in [first.clone(), fresh_key(), fresh_key()].iter().enumerate() {
        let req = reserve_req(&ev, key, fan_body(&format!("bot{i}@example.com")));
        let a = call(&app, from_ip(req, &ip)).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    }
    let req = reserve_req(&ev, &fresh_key(), fan_body("bot3@example.com"));
    let a = call(&app, from_ip(req, &ip)).await;
    assert_problem(&a, 429, "rate-limited");
    assert_eq!(a.headers["ratelimit-policy"], "\"per-client\";q=3;w=600");
    let retry: u64 = a.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((590..=600).contains(&retry), "retry after {retry}");
    // Refused, it took nothing; a retry of an attempt it made is answered as before.
    let snap = env.gate().await.refresh(&ev.id).await.unwrap().unwrap();
    assert_eq!(snap.stock["vip-3-day"].held, 3);
    let req = reserve_req(&ev, &first, fan_body("bot0@example.com"));
    let a = call(&app, from_ip(req, &ip)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    // Another client is not affected, nor one that spoofs the capped one's address.
    let req = reserve_req(&ev, &fresh_key(), fan_body("fan@example.com"));
    let a = call(&app, from_ip(req, &format!("{ip}, {}", fresh_ip()))).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{:?}", a.body);
    // The client's ledger ends with its holds: nothing stays in Redis for good.
    let mut redis = env.gate().await.connection();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{{ev:{}}}:client:{ip}", ev.id))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!((1..=600_000).contains(&ttl), "ttl {ttl}");
}

#[tokio::test]
async fn headers_over_the_limit_are_refused_with_431_and_a_request_id() {
    let (env, ev, app) = setup(10, -1, 600).await;
    let ok = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "fan@example.at"});
    let mut req = reserve_req(&ev, &fresh_key(), ok);
    req.headers_mut()
        .insert("x-padding", "p".repeat(17 * 1024).parse().unwrap());
    let a = call(&app, req).await;
    assert_problem(&a, 431, "headers-too-large");
    assert!(a.headers.contains_key("x-request-id"));
    untouched(&env, &ev).await;
}

#[tokio::test]
async fn the_openapi_document_is_served_and_committed() {
    use utoipa::OpenApi;
    let (_env, _ev, app) = setup(10, -1, 600).await;
    let a = call(
        &app,
        Request::get("/openapi.json").body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let paths = a.body["paths"].as_object().expect("paths");
    for p in [
        "/v1/events/{event}/orders",
        "/v1/orders/{id}/payment",
        "/v1/orders/{id}/cancel",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }
    assert_eq!(
        a.body["paths"]["/v1/events/{event}/orders"]["post"]["responses"]["409"]["content"]["application/problem+json"]
            ["schema"]["$ref"],
        "#/components/schemas/Problem"
    );
    testkit::assert_openapi_committed(&buy::ApiDoc::openapi(), "docs/openapi/buy.json");
}

#[tokio::test]
async fn an_event_seen_then_lost_by_redis_is_busy_not_unknown() {
    let (env, ev, app) = setup(10, -1, 600).await;
    let ok = json!({"ticket_type": "vip-3-day", "quantity": 1, "email": "fan@example.at"});
    let a = call(&app, reserve_req(&ev, &fresh_key(), ok.clone())).await;
    assert_eq!(a.status, StatusCode::ACCEPTED);
    // Redis restarts empty: until consume-order has rebuilt the event, fans are told to retry.
    env.gate().await.reset(&ev.id).await.unwrap();
    let a = call(&app, reserve_req(&ev, &fresh_key(), ok)).await;
    assert_problem(&a, 503, "unavailable");
    assert!(a.headers.contains_key(header::RETRY_AFTER));
}
