//! The waiting room in the availability snapshot (ADR 59): every fan reads the room's progress
//! from the snapshot (cache-friendly, no Redis call per fan), over the real Redis gate and over
//! the in-memory double.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use check_availability::{AppState, app};
use domain::Event;
use gate::{RoomSettings, WaitingRoom};
use testkit::memory::MemoryGate;
use testkit::router::{Answer, call};
use testkit::{TestEnv, new_event};

async fn read(router: &axum::Router, ev: &Event, etag: Option<&str>) -> Answer {
    let mut req = Request::get(format!("/v1/events/{}/availability", ev.id));
    if let Some(e) = etag {
        req = req.header(header::IF_NONE_MATCH, e);
    }
    call(router, req.body(Body::empty()).unwrap()).await
}

async fn the_snapshot_carries_the_room_and_its_etag_moves_with_admission(
    gate: Arc<dyn WaitingRoom>,
    state: Arc<AppState>,
    ev: Event,
) {
    let router = app(state.clone());
    state.refresh().await.unwrap();
    let off = read(&router, &ev, None).await;
    assert!(off.body.get("room").is_none(), "no room: {:?}", off.body);

    let settings = RoomSettings {
        rate_per_sec: 1,
        cap: 100,
        window: Duration::from_secs(60),
        claim: Duration::from_secs(30),
    };
    gate.room_on(&ev.id, settings).await.unwrap();
    gate.room_join(&ev.id, "a@x.at").await.unwrap();
    state.refresh().await.unwrap();
    let first = read(&router, &ev, None).await;
    assert_eq!(first.status, StatusCode::OK);
    let room = &first.body["room"];
    assert_eq!(room["status"], "open", "{room:?}");
    assert_eq!(
        (room["admitted_upto"].as_u64(), room["joined"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(room["rate_per_sec"], 1);
    assert_eq!(room["sold_out"], false);
    let etag = first.headers[header::ETAG].to_str().unwrap().to_owned();

    // More fans join: the stock did not move, the room did, and so does the ETag.
    for i in 0..3 {
        gate.room_join(&ev.id, &format!("w{i}@x.at")).await.unwrap();
    }
    state.refresh().await.unwrap();
    let later = read(&router, &ev, Some(&etag)).await;
    assert_eq!(later.status, StatusCode::OK, "not a 304: the room moved");
    assert_eq!(later.body["room"]["joined"], 4);

    // The operator pauses admission: nothing else moves, and the tag does (a page or the edge
    // revalidating with the old tag would otherwise keep reading "admitting").
    let etag = later.headers[header::ETAG].to_str().unwrap().to_owned();
    gate.room_pause(&ev.id, true).await.unwrap();
    state.refresh().await.unwrap();
    let paused = read(&router, &ev, Some(&etag)).await;
    assert_eq!(paused.status, StatusCode::OK, "not a 304: admission paused");
    assert_eq!(paused.body["room"]["paused"], true);
    assert_eq!(
        paused.body["room"]["joined"], later.body["room"]["joined"],
        "only the pause moved"
    );

    // A refresh that reads the same numbers (only its clock, `as_of`, moves) keeps the tag
    // within the second it read them in: a 304. The tag moves with the second, so across a
    // second's edge the test looks again (three times at most).
    let mut not_modified = false;
    for _ in 0..3 {
        let seen = read(&router, &ev, None).await;
        let etag = seen.headers[header::ETAG].to_str().unwrap().to_owned();
        state.refresh().await.unwrap();
        if read(&router, &ev, Some(&etag)).await.status == StatusCode::NOT_MODIFIED {
            not_modified = true;
            break;
        }
    }
    assert!(not_modified, "the same numbers in the same second: a 304");
}

#[tokio::test]
async fn redis_the_snapshot_carries_the_room_and_its_etag_moves_with_admission() {
    let env = TestEnv::get();
    let ev = env.seed_gate(40, -1, 600).await;
    let gate = Arc::new(env.gate().await);
    let state = AppState::new((*gate).clone());
    the_snapshot_carries_the_room_and_its_etag_moves_with_admission(gate, state, ev).await;
}

#[tokio::test]
async fn memory_the_snapshot_carries_the_room_and_its_etag_moves_with_admission() {
    let gate = MemoryGate::new();
    let ev = new_event(40, -1, 600);
    gate.seed(&ev);
    let state = AppState::new(gate.clone());
    the_snapshot_carries_the_room_and_its_etag_moves_with_admission(Arc::new(gate), state, ev)
        .await;
}
