//! The waiting room on the real Redis (`lua/room.lua`): the pre-queue shuffled once into a
//! permutation, later joiners in arrival order, admission within the rate, the cap and the
//! stock, and sold out seen by every waiting fan.

use std::time::Duration;

use gate::{Admission as _, RoomSettings, RoomStatus, WaitingRoom};
use testkit::TestEnv;

fn settings(rate_per_sec: u32, cap: u32) -> RoomSettings {
    RoomSettings {
        rate_per_sec,
        cap,
        window: Duration::from_secs(60),
    }
}

/// Waits until the event's sale has opened (by the test's clock, a little after Redis').
async fn until_open(ev: &domain::Event) {
    let left = (ev.sale_opens_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
}

/// Spearman's rank correlation of `places` (each fan's place, in arrival order) with arrival.
fn rank_correlation(places: &[u64]) -> f64 {
    let n = places.len() as f64;
    let d2: f64 = places
        .iter()
        .enumerate()
        .map(|(i, p)| (i as f64 + 1.0 - *p as f64).powi(2))
        .sum();
    1.0 - 6.0 * d2 / (n * (n * n - 1.0))
}

#[tokio::test]
async fn the_pre_queue_is_shuffled_once_and_later_joiners_queue_in_arrival_order() {
    let env = TestEnv::get();
    let gate = env.gate().await;
    let ev = env.seed_gate(100, 2, 600).await;
    gate.room_on(&ev.id, settings(1000, 1000)).await.unwrap();

    let mut ids = vec![];
    for i in 0..60 {
        let v = gate
            .room_join(&ev.id, &format!("fan{i}@x.at"))
            .await
            .unwrap();
        assert_eq!(
            (v.status, v.place),
            (RoomStatus::Pending, 0),
            "no place before the opening"
        );
        ids.push(v.queue_id);
    }
    let again = gate.room_join(&ev.id, "fan7@x.at").await.unwrap();
    assert_eq!(again.queue_id, ids[7], "one place per identity");

    until_open(&ev).await;
    let mut places = vec![];
    for id in &ids {
        places.push(gate.room_status(&ev.id, id).await.unwrap().place);
    }
    let mut sorted = places.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (1..=60).collect::<Vec<u64>>(),
        "a permutation of the pre-queue"
    );
    assert_ne!(places, sorted, "not the arrival order");
    let rho = rank_correlation(&places);
    assert!(rho.abs() < 0.6, "arrival and place correlate: {rho}");
    for (id, place) in ids.iter().zip(&places) {
        let v = gate.room_status(&ev.id, id).await.unwrap();
        assert_eq!(v.place, *place, "decided once");
    }
    // After the opening: the next places, in arrival order; joining again keeps the place.
    for i in 0..5 {
        let v = gate
            .room_join(&ev.id, &format!("late{i}@x.at"))
            .await
            .unwrap();
        assert_eq!(v.place, 61 + i);
    }
    let again = gate.room_join(&ev.id, "late0@x.at").await.unwrap();
    assert_eq!(again.place, 61);
    let unknown = gate.room_status(&ev.id, "no-such-id").await.unwrap();
    assert_eq!(unknown.status, RoomStatus::Unknown);
}

#[tokio::test]
async fn admission_never_outruns_the_rate_the_cap_or_the_stock() {
    let env = TestEnv::get();
    let gate = env.gate().await;

    // The rate: 4 a second, at most one second of credit.
    let ev = env.seed_gate(100, -1, 600).await;
    gate.room_on(&ev.id, settings(4, 1000)).await.unwrap();
    let mut last = None;
    for i in 0..30 {
        last = Some(gate.room_join(&ev.id, &format!("r{i}@x.at")).await.unwrap());
    }
    let first = last.unwrap();
    assert!(first.upto <= 4, "one second's credit at most: {first:?}");
    let started = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let later = gate.room_peek(&ev.id).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert!(
        (later.upto as f64) <= first.upto as f64 + 4.0 * secs + 1.0,
        "{first:?} then {later:?} after {secs} s"
    );
    assert!(later.upto > first.upto, "admission moves on");

    // The cap: at most 3 shopping at once.
    let ev = env.seed_gate(100, -1, 600).await;
    gate.room_on(&ev.id, settings(1000, 3)).await.unwrap();
    for i in 0..10 {
        gate.room_join(&ev.id, &format!("c{i}@x.at")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = gate.room_peek(&ev.id).await.unwrap();
    assert_eq!((v.upto, v.shopping), (3, 3));

    // The stock: 5 tickets (2 + 2 + 1), so 5 fans at most, however fast the rate.
    let ev = env.seed_gate(2, -1, 600).await;
    gate.room_on(&ev.id, settings(1000, 1000)).await.unwrap();
    for i in 0..10 {
        gate.room_join(&ev.id, &format!("s{i}@x.at")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let v = gate.room_peek(&ev.id).await.unwrap();
    assert_eq!((v.upto, v.unsold), (5, 5));

    // Paused: nothing moves.
    let ev = env.seed_gate(100, -1, 600).await;
    gate.room_on(&ev.id, settings(1000, 1000)).await.unwrap();
    gate.room_pause(&ev.id, true).await.unwrap();
    for i in 0..10 {
        gate.room_join(&ev.id, &format!("p{i}@x.at")).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(gate.room_peek(&ev.id).await.unwrap().upto, 0);
    gate.room_pause(&ev.id, false).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(gate.room_peek(&ev.id).await.unwrap().upto > 0, "resumed");
}

#[tokio::test]
async fn sold_out_reaches_every_waiting_fan_and_an_admitted_one_reads_admitted() {
    let env = TestEnv::get();
    let gate = env.gate().await;
    let ev = env.seed_gate(2, -1, 600).await;
    gate.room_on(&ev.id, settings(1, 1000)).await.unwrap();
    let mut fans = vec![];
    for i in 0..4 {
        fans.push(gate.room_join(&ev.id, &format!("w{i}@x.at")).await.unwrap());
    }
    let admitted = gate.room_status(&ev.id, &fans[0].queue_id).await.unwrap();
    assert_eq!(admitted.status, RoomStatus::Admitted, "{admitted:?}");
    let waiting = gate.room_status(&ev.id, &fans[3].queue_id).await.unwrap();
    assert_eq!(waiting.status, RoomStatus::Waiting);
    assert!(!waiting.sold_out);
    // Every ticket held (vip-3-day 2, vip-camping 2, backstage 1): nothing available.
    testkit::hold(&gate, &ev.id, 2, "a@x.at").await;
    for (tt, n) in [("vip-camping", 2), ("backstage-lounge", 1)] {
        let out = gate
            .reserve(
                &ev.id,
                &domain::TicketTypeId::parse(tt).unwrap(),
                domain::Quantity::parse(n).unwrap(),
                &domain::Email::parse("b@x.at").unwrap(),
                &domain::IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap(),
                &gate::AdmissionRules::default(),
            )
            .await
            .unwrap();
        assert!(
            matches!(out, gate::ReserveOutcome::Reserved { .. }),
            "{out:?}"
        );
    }
    for f in &fans[1..] {
        let v = gate.room_status(&ev.id, &f.queue_id).await.unwrap();
        assert!(v.sold_out, "{v:?}");
    }
    let peek = gate.room_peek(&ev.id).await.unwrap();
    assert!(
        peek.sold_out && peek.unsold == 5,
        "held tickets may come back: {peek:?}"
    );
}
