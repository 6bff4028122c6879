//! check-availability's routes with `oneshot` over the real Redis, through the router `run`
//! serves.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use check_availability::{AppState, app};
use domain::{Email, IdempotencyKey, Quantity, TicketTypeId};
use gate::{Admission, AdmissionRules, ReserveOutcome};
use serde_json::Value;
use testkit::TestEnv;
use tower::ServiceExt;

async fn get(
    app: &Router,
    uri: &str,
    etag: Option<&str>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let mut req = Request::get(uri);
    if let Some(e) = etag {
        req = req.header(header::IF_NONE_MATCH, e);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let bytes = axum::body::to_bytes(res.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn availability_comes_from_the_snapshot_with_an_etag() {
    let env = TestEnv::get();
    let ev = env.seed_gate(40, -1, 600).await;
    let state = AppState::new(env.gate().await);
    state.refresh().await.unwrap();
    let router = app(state.clone());
    let uri = format!("/v1/events/{}/availability", ev.id);
    let (status, headers, body) = get(&router, &uri, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        headers[header::CACHE_CONTROL]
            .to_str()
            .unwrap()
            .contains("max-age=1")
    );
    assert_eq!(body["event"], ev.id.as_str());
    assert_eq!(body["sale_open"], true);
    assert_eq!(body["stale"], false);
    assert!(body["server_time"].as_str().unwrap().ends_with('Z'));
    let types = body["ticket_types"].as_array().unwrap();
    assert_eq!(types.len(), 3);
    assert_eq!(types[0]["id"], "vip-3-day");
    assert_eq!(types[0]["available"], 40);
    assert_eq!(types[0]["price_cents"], 34_900);
    assert_eq!(types[0]["status"], "on_sale");
    assert_eq!(types[2]["capacity"], 20);

    let etag = headers[header::ETAG].to_str().unwrap().to_owned();
    let (status, _, _) = get(&router, &uri, Some(&etag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // A reservation is visible after the next refresh, with a new ETag.
    let gate = env.gate().await;
    let r = gate
        .reserve(
            &ev.id,
            &TicketTypeId::parse("vip-3-day").unwrap(),
            Quantity::parse(4).unwrap(),
            &Email::parse("a@b.at").unwrap(),
            &IdempotencyKey::parse("key-key-key-1").unwrap(),
            &AdmissionRules::default(),
        )
        .await
        .unwrap();
    let ReserveOutcome::Reserved { order_id, .. } = r else {
        panic!("{r:?}")
    };
    let (_, _, stale_read) = get(&router, &uri, None).await;
    assert_eq!(
        stale_read["ticket_types"][0]["available"], 40,
        "served from the snapshot, not Redis"
    );
    state.refresh().await.unwrap();
    let (status, headers, body) = get(&router, &uri, Some(&etag)).await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(headers[header::ETAG].to_str().unwrap(), etag);
    assert_eq!(body["ticket_types"][0]["available"], 36);

    let (status, headers, order) = get(&router, &format!("/v1/orders/{order_id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(order["status"], "reserved");
    assert_eq!(order["quantity"], 4);
    assert!(order["hold_expires_at"].is_string());
    assert!(
        order.get("email").is_none(),
        "no personal data on the read path"
    );
    // The hold is judged by Redis' clock, and `server_time` is that clock (read in the same
    // round trip), so the fan's countdown runs against the clock the scripts use.
    let mut redis = env.gate().await.connection();
    let redis_now = |t: (i64, i64)| t.0 * 1_000_000 + t.1;
    let before: (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    let (_, _, order) = get(&router, &format!("/v1/orders/{order_id}"), None).await;
    let after: (i64, i64) = redis::cmd("TIME").query_async(&mut redis).await.unwrap();
    let server_time = chrono::DateTime::parse_from_rfc3339(order["server_time"].as_str().unwrap())
        .unwrap()
        .timestamp_micros();
    // RFC 3339 in milliseconds: the bracket widened by one.
    assert!(
        redis_now(before) - 1_000 <= server_time && server_time <= redis_now(after),
        "{before:?} <= {server_time} <= {after:?}"
    );
}

/// An event reset and seeded again with other numbers (`ops seed --reset`) counts its stock's
/// moves from the start again; its tag still changes, as its answer did.
#[tokio::test]
async fn a_reseeded_event_gets_a_new_etag() {
    let env = TestEnv::get();
    let ev = env.seed_gate(40, -1, 600).await;
    let gate = env.gate().await;
    let state = AppState::new(gate.clone());
    state.refresh().await.unwrap();
    let router = app(state.clone());
    let uri = format!("/v1/events/{}/availability", ev.id);
    let etag = get(&router, &uri, None).await.1[header::ETAG]
        .to_str()
        .unwrap()
        .to_owned();

    gate.reset(&ev.id).await.unwrap();
    let mut smaller = ev.clone();
    smaller.ticket_types[0].capacity = 2;
    gate.seed(&smaller).await.unwrap();
    state.refresh().await.unwrap();
    let (status, _, body) = get(&router, &uri, Some(&etag)).await;
    assert_eq!(status, StatusCode::OK, "not a 304: the answer changed");
    assert_eq!(body["ticket_types"][0]["capacity"], 2);
}

/// Every kind of request on the availability route gets its answer through the router's
/// stack: a request id, a Content-Length that matches the body, and the status it should.
#[tokio::test]
async fn the_availability_route_answers_every_kind_of_request() {
    let env = TestEnv::get();
    let ev = env.seed_gate(40, -1, 600).await;
    let state = AppState::new(env.gate().await);
    state.refresh().await.unwrap();
    let router = app(state);
    let uri = format!("/v1/events/{}/availability", ev.id);
    let current = get(&router, &uri, None).await.1[header::ETAG].clone();
    let current = current.to_str().unwrap();
    let encoded = uri.replacen('-', "%2D", 1);
    let requests: Vec<(&str, &str, Option<&str>, StatusCode)> = vec![
        ("GET", &uri, None, StatusCode::OK),
        ("GET", &uri, Some(current), StatusCode::NOT_MODIFIED),
        ("GET", &uri, Some("W/\"other\""), StatusCode::OK),
        ("HEAD", &uri, None, StatusCode::OK),
        ("POST", &uri, None, StatusCode::METHOD_NOT_ALLOWED),
        ("GET", &encoded, None, StatusCode::OK),
        (
            "GET",
            "/v1/events/never-seeded/availability",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/v1/events//availability",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/v1/events/a/b/availability",
            None,
            StatusCode::NOT_FOUND,
        ),
        (
            "GET",
            "/v1/events/availability",
            None,
            StatusCode::NOT_FOUND,
        ),
    ];
    for (method, uri, etag, want) in requests {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(e) = etag {
            req = req.header(header::IF_NONE_MATCH, e);
        }
        let res = router
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = res.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        assert_eq!(parts.status, want, "{method} {uri}");
        assert!(parts.headers.contains_key("x-request-id"), "{method} {uri}");
        // (HEAD: the length of the body a GET would get.)
        if let Some(n) = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .filter(|_| method != "HEAD")
        {
            assert_eq!(
                n.to_str().unwrap(),
                bytes.len().to_string(),
                "{method} {uri}"
            );
        }
        if want == StatusCode::OK && method == "GET" {
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(body["event"], ev.id.to_string(), "{method} {uri}");
            assert_eq!(parts.headers[header::ETAG], current, "{method} {uri}");
        }
    }
}

#[tokio::test]
async fn before_the_sale_and_unknown_things() {
    let env = TestEnv::get();
    let ev = env.seed_gate(10, 3600, 600).await;
    let state = AppState::new(env.gate().await);
    state.refresh().await.unwrap();
    let router = app(state);
    let (_, _, body) = get(&router, &format!("/v1/events/{}/availability", ev.id), None).await;
    assert_eq!(body["sale_open"], false);
    assert_eq!(body["ticket_types"][0]["status"], "not_on_sale_yet");
    for uri in [
        "/v1/events/never-seeded/availability".to_owned(),
        "/v1/events/BAD%20ID/availability".to_owned(),
        "/v1/orders/not-a-uuid".to_owned(),
        format!("/v1/orders/{}", uuid::Uuid::new_v4()),
    ] {
        let (status, headers, body) = get(&router, &uri, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(body["status"], 404);
    }
}

/// A Redis of the test's own with one event seeded and a first snapshot taken: the test can
/// crash or wipe it.
struct OwnStack {
    redis: testkit::OwnRedis,
    gate: gate::Gate,
    ev: domain::Event,
    state: std::sync::Arc<AppState>,
    router: Router,
    uri: String,
}

async fn own_stack(event: &str, timeout_ms: u64) -> OwnStack {
    let redis = testkit::OwnRedis::start().await;
    let gate = gate::Gate::connect(&redis.url, std::time::Duration::from_millis(timeout_ms))
        .await
        .unwrap();
    let ev = domain::Event::frequency(
        domain::EventId::parse(event).unwrap(),
        10,
        chrono::Utc::now(),
        600,
    );
    gate.seed(&ev).await.unwrap();
    let state = AppState::new(gate.clone());
    state.refresh().await.unwrap();
    let router = app(state.clone());
    let uri = format!("/v1/events/{}/availability", ev.id);
    OwnStack {
        redis,
        gate,
        ev,
        state,
        router,
        uri,
    }
}

#[tokio::test]
async fn redis_down_serves_the_last_snapshot_marked_stale() {
    let OwnStack {
        mut redis,
        state,
        router,
        uri,
        ..
    } = own_stack("stale-check", 300).await;
    let (_, fresh_headers, body) = get(&router, &uri, None).await;
    assert_eq!(body["stale"], false);

    redis.kill();
    assert!(
        state.refresh().await.is_err(),
        "refresh must fail with Redis down"
    );
    let (status, headers, body) = get(&router, &uri, None).await;
    assert_eq!(status, StatusCode::OK, "readers keep being served");
    assert_eq!(body["stale"], true);
    assert_eq!(body["ticket_types"][0]["available"], 10);
    assert_ne!(
        headers[header::ETAG],
        fresh_headers[header::ETAG],
        "a stale answer is a different representation"
    );
    // The order read path cannot answer without Redis: a clear, quick 503.
    let started = std::time::Instant::now();
    let (status, headers, _) = get(
        &router,
        &format!("/v1/orders/{}", uuid::Uuid::new_v4()),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "no hanging request"
    );
}

/// Retries `call` while the gate reconnects to a restarted Redis (at most 4 s): whether it
/// went through.
async fn once_reconnected<T, E, F: std::future::Future<Output = Result<T, E>>>(
    mut call: impl FnMut() -> F,
) -> bool {
    for _ in 0..40 {
        if call().await.is_ok() {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn redis_restarting_empty_keeps_the_last_snapshot_marked_stale() {
    let OwnStack {
        mut redis,
        gate,
        ev,
        state,
        router,
        uri,
    } = own_stack("empty-restart", 500).await;

    // Redis comes back without the event: no 404 while consume-order rebuilds it.
    redis.wipe_and_restart().await;
    assert!(
        once_reconnected(|| state.refresh()).await,
        "the gate reconnects to the restarted Redis"
    );
    let (status, _, body) = get(&router, &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["stale"], true);

    // Once the event is back, the snapshot is live again.
    gate.seed(&ev).await.unwrap();
    state.refresh().await.unwrap();
    let (_, _, body) = get(&router, &uri, None).await;
    assert_eq!(body["stale"], false);
}

#[tokio::test]
async fn a_gate_being_rebuilt_is_shown_paused() {
    let OwnStack {
        mut redis,
        gate,
        ev,
        state,
        router,
        uri,
    } = own_stack("paused-restore", 500).await;
    let (_, headers, _) = get(&router, &uri, None).await;
    let live_etag = headers[header::ETAG].to_str().unwrap().to_owned();

    // Redis lost the event; consume-order's watcher rebuilds it from the books, paused.
    redis.wipe_and_restart().await;
    let sold = std::collections::BTreeMap::from([("vip-3-day".to_owned(), 3)]);
    assert!(
        once_reconnected(|| gate.restore(&ev, &sold, None, false)).await,
        "the gate reconnects to the restarted Redis"
    );
    state.refresh().await.unwrap();
    let (status, headers, body) = get(&router, &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["paused"], true, "{body}");
    assert_eq!(body["stale"], false);
    let types = body["ticket_types"].as_array().unwrap();
    assert!(types.iter().all(|t| t["status"] == "paused"), "{body}");
    assert_eq!(
        types[0]["available"], 7,
        "the books' numbers, shown while paused"
    );
    let paused_etag = headers[header::ETAG].to_str().unwrap().to_owned();
    assert_ne!(paused_etag, live_etag);

    // The last pass resumes the sale: the same numbers, on sale again, under a new ETag.
    gate.restore(&ev, &sold, None, true).await.unwrap();
    state.refresh().await.unwrap();
    let (_, headers, body) = get(&router, &uri, Some(&paused_etag)).await;
    assert_eq!(body["paused"], false, "{body}");
    assert_eq!(body["ticket_types"][0]["status"], "on_sale");
    assert_eq!(body["ticket_types"][0]["available"], 7);
    assert_ne!(headers[header::ETAG].to_str().unwrap(), paused_etag);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_committed() {
    use utoipa::OpenApi;
    let env = TestEnv::get();
    let router = app(AppState::new(env.gate().await));
    let (status, _, body) = get(&router, "/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for p in ["/v1/events/{event}/availability", "/v1/orders/{id}"] {
        assert!(body["paths"].get(p).is_some(), "{p} missing");
    }
    testkit::assert_openapi_committed(
        &check_availability::ApiDoc::openapi(),
        "docs/openapi/check-availability.json",
    );
}
