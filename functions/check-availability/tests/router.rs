//! The fast tier: check-availability's router driven with `oneshot` over the test kit's
//! in-memory gate (held to the Redis gate by `shared/gate/tests/contract.rs`). No engine is
//! needed: `cargo test -p check-availability --test router`. The same routes over the real
//! Redis are in `read.rs`.

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use check_availability::{AppState, app};
use testkit::memory::MemoryGate;
use testkit::new_event;
use testkit::router::{Answer, call};

fn get(uri: &str, etag: Option<&str>) -> Request<Body> {
    let mut req = Request::get(uri);
    if let Some(e) = etag {
        req = req.header(header::IF_NONE_MATCH, e);
    }
    req.body(Body::empty()).unwrap()
}

fn vip(a: &Answer) -> &serde_json::Value {
    a.body["ticket_types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "vip-3-day")
        .unwrap()
}

#[tokio::test]
async fn availability_is_the_last_snapshot_with_an_etag_that_moves_with_the_stock() {
    let gate = MemoryGate::new();
    let ev = new_event(40, -60, 600);
    gate.seed(&ev);
    let state = AppState::new(gate.clone());
    state.refresh().await.unwrap();
    let router = app(state.clone());
    let uri = format!("/v1/events/{}/availability", ev.id);

    let a = call(&router, get(&uri, None)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(vip(&a)["available"], 40);
    assert_eq!(vip(&a)["status"], "on_sale");
    assert_eq!(a.body["stale"], false);
    let etag = a.headers[header::ETAG].to_str().unwrap().to_owned();
    let same = call(&router, get(&uri, Some(&etag))).await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);

    testkit::hold(&gate, &ev.id, 3, "fan@example.at").await;
    let before = call(&router, get(&uri, None)).await;
    assert_eq!(vip(&before)["available"], 40, "served from the snapshot");
    state.refresh().await.unwrap();
    let after = call(&router, get(&uri, Some(&etag))).await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(vip(&after)["available"], 37);
    assert_ne!(after.headers[header::ETAG], etag.as_str());
}

#[tokio::test]
async fn a_gate_outage_serves_the_last_numbers_marked_stale() {
    let gate = MemoryGate::new();
    let ev = new_event(10, -60, 600);
    gate.seed(&ev);
    let state = AppState::new(gate.clone());
    state.refresh().await.unwrap();
    let router = app(state.clone());
    gate.set_down(true);
    assert!(state.refresh().await.is_err());
    let a = call(
        &router,
        get(&format!("/v1/events/{}/availability", ev.id), None),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["stale"], true);
    assert_eq!(vip(&a)["available"], 10);
}

#[tokio::test]
async fn an_order_reads_back_and_unknown_ones_are_404() {
    let gate = MemoryGate::new();
    let ev = new_event(10, -60, 600);
    gate.seed(&ev);
    let router = app(AppState::new(gate.clone()));
    let order_id = testkit::hold(&gate, &ev.id, 2, "fan@example.at").await;
    let a = call(&router, get(&format!("/v1/orders/{order_id}"), None)).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    assert_eq!(a.body["status"], "reserved");
    assert_eq!(a.body["quantity"], 2);
    assert_eq!(a.body["amount_cents"], 2 * 34_900);
    assert!(a.body["hold_expires_at"].is_string());
    assert_eq!(a.headers[header::CACHE_CONTROL], "no-store");

    for uri in [
        format!("/v1/orders/{}", uuid::Uuid::new_v4()),
        "/v1/orders/not-a-uuid".to_owned(),
        "/v1/events/no-such-event/availability".to_owned(),
    ] {
        let a = call(&router, get(&uri, None)).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{uri}");
        assert_eq!(a.headers[header::CONTENT_TYPE], "application/problem+json");
    }
    gate.set_down(true);
    let a = call(&router, get(&format!("/v1/orders/{order_id}"), None)).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(a.headers.contains_key(header::RETRY_AFTER));
}
