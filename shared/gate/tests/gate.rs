//! The gate's Lua scripts against the real Redis started by scripts/test: every transition,
//! expiry, limits, idempotency and concurrency, with the invariant checked after each.

use gate::{
    Admission, AdmissionRules, Approval, Gate, PayBegin, PaymentFlow, ReadModel, ReserveOutcome,
    Stock, ratelimit::RateLimit,
};
use std::time::Duration;

use chrono::Utc;
use domain::{
    Email, Event, IdempotencyKey, OrderId, OrderMessage, OrderStatus, Quantity, TicketTypeId,
};
use testkit::TestEnv;

fn tt(s: &str) -> TicketTypeId {
    TicketTypeId::parse(s).unwrap()
}
fn email(s: &str) -> Email {
    Email::parse(s).unwrap()
}
fn key() -> IdempotencyKey {
    IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
}
fn q(n: i64) -> Quantity {
    Quantity::parse(n).unwrap()
}

async fn stock(gate: &Gate, ev: &Event, t: &str) -> Stock {
    let snap = gate.refresh(&ev.id).await.unwrap().unwrap();
    let s = snap.stock[t];
    assert_eq!(s.delta(), 0, "invariant broken: {s:?}");
    s
}

async fn reserve(gate: &Gate, ev: &Event, t: &str, n: i64, who: &str) -> ReserveOutcome {
    reserve_keyed(gate, ev, t, n, who, &key()).await
}

/// [`reserve`] under a given Idempotency-Key.
async fn reserve_keyed(
    gate: &Gate,
    ev: &Event,
    t: &str,
    n: i64,
    who: &str,
    k: &IdempotencyKey,
) -> ReserveOutcome {
    gate.reserve(
        &ev.id,
        &tt(t),
        q(n),
        &email(who),
        k,
        &AdmissionRules::default(),
    )
    .await
    .unwrap()
}

/// The database's answer to a first delivery of `msg`.
fn persisted(
    msg: &OrderMessage,
    status: OrderStatus,
    tickets: &[String],
) -> domain::books::Persisted {
    domain::books::Persisted {
        status,
        tickets: tickets.to_vec(),
        duplicate: false,
        payment_ref: msg.payment_ref.clone(),
    }
}

fn order_id(o: &ReserveOutcome) -> OrderId {
    match o {
        ReserveOutcome::Reserved { order_id, .. } => *order_id,
        other => panic!("expected a reservation, got {other:?}"),
    }
}

#[tokio::test]
async fn reserve_moves_stock_to_held_and_records_the_order() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let gate = env.gate().await;
    let before = Utc::now();
    let r = reserve(&gate, &ev, "vip-3-day", 3, "fan@example.at").await;
    let id = order_id(&r);
    let ReserveOutcome::Reserved {
        hold_expires_at, ..
    } = r
    else {
        unreachable!()
    };
    assert!(hold_expires_at > before + chrono::Duration::seconds(590));
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held, s.confirming, s.sold), (7, 3, 0, 0));
    let view = gate.order(&ev.id, id).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Reserved);
    assert_eq!(view.quantity.get(), 3);
    assert_eq!(view.amount_cents, 3 * ev.ticket_types[0].price_cents);
    assert_eq!(gate.event_of(id).await.unwrap(), Some(ev.id.clone()));
}

#[tokio::test]
async fn refuses_before_the_sale_opens_and_unknown_things() {
    let env = TestEnv::get();
    let ev = env.seed(10, 60, 600).await;
    let gate = env.gate().await;
    match reserve(&gate, &ev, "vip-3-day", 1, "a@b.at").await {
        ReserveOutcome::TooEarly { opens_in_ms } => {
            assert!((55_000..=60_000).contains(&opens_in_ms), "{opens_in_ms}")
        }
        other => panic!("{other:?}"),
    }
    // The sale gate comes first: nothing about the catalog leaks before opening.
    assert!(matches!(
        reserve(&gate, &ev, "no-such-type", 1, "a@b.at").await,
        ReserveOutcome::TooEarly { .. }
    ));
    let open = env.seed(10, -1, 600).await;
    assert_eq!(
        reserve(&gate, &open, "no-such-type", 1, "a@b.at").await,
        ReserveOutcome::UnknownTicketType
    );
    let ghost = domain::EventId::parse("never-seeded").unwrap();
    let r = gate
        .reserve(
            &ghost,
            &tt("vip-3-day"),
            q(1),
            &email("a@b.at"),
            &key(),
            &AdmissionRules::default(),
        )
        .await
        .unwrap();
    assert_eq!(r, ReserveOutcome::UnknownEvent);
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.available, 10);
}

#[tokio::test]
async fn idempotency_key_replays_the_first_answer_and_refuses_a_different_body() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let gate = env.gate().await;
    let k = key();
    let first = gate
        .reserve(
            &ev.id,
            &tt("vip-3-day"),
            q(2),
            &email("fan@x.at"),
            &k,
            &AdmissionRules::default(),
        )
        .await
        .unwrap();
    let ReserveOutcome::Reserved {
        order_id,
        hold_expires_at,
    } = first
    else {
        panic!("{first:?}")
    };
    // Same body (the e-mail normalises to the same address): the first answer again.
    let again = gate
        .reserve(
            &ev.id,
            &tt("vip-3-day"),
            q(2),
            &email(" FAN@x.at"),
            &k,
            &AdmissionRules::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        ReserveOutcome::Replayed {
            order_id,
            hold_expires_at
        }
    );
    let other = gate
        .reserve(
            &ev.id,
            &tt("vip-3-day"),
            q(3),
            &email("fan@x.at"),
            &k,
            &AdmissionRules::default(),
        )
        .await
        .unwrap();
    assert_eq!(other, ReserveOutcome::IdempotencyConflict);
    assert_eq!(
        stock(&gate, &ev, "vip-3-day").await.held,
        2,
        "replays must not hold more"
    );
}

#[tokio::test]
async fn per_customer_limit_counts_held_and_bought_and_frees_on_release() {
    let env = TestEnv::get();
    let ev = env.seed(50, -1, 600).await; // vip-3-day limit 4
    let gate = env.gate().await;
    let a = order_id(&reserve(&gate, &ev, "vip-3-day", 3, "limit@x.at").await);
    assert_eq!(
        reserve(&gate, &ev, "vip-3-day", 2, "LIMIT@x.at").await,
        ReserveOutcome::Limit {
            limit: 4,
            remaining: 1
        }
    );
    order_id(&reserve(&gate, &ev, "vip-3-day", 1, "limit@x.at").await);
    // Another ticket type has its own limit.
    order_id(&reserve(&gate, &ev, "vip-camping", 4, "limit@x.at").await);
    assert_eq!(
        gate.cancel(&ev.id, a, None).await.unwrap(),
        Some((OrderStatus::Cancelled, true))
    );
    order_id(&reserve(&gate, &ev, "vip-3-day", 3, "limit@x.at").await);
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.held, 4);
}

#[tokio::test]
async fn sold_out_and_not_enough_left() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let gate = env.gate().await;
    order_id(&reserve(&gate, &ev, "vip-3-day", 3, "a@x.at").await);
    assert_eq!(
        reserve(&gate, &ev, "vip-3-day", 3, "b@x.at").await,
        ReserveOutcome::NotEnough { available: 2 }
    );
    order_id(&reserve(&gate, &ev, "vip-3-day", 2, "b@x.at").await);
    assert_eq!(
        reserve(&gate, &ev, "vip-3-day", 1, "c@x.at").await,
        ReserveOutcome::SoldOut
    );
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (0, 5));
}

#[tokio::test]
async fn expired_holds_return_to_stock_exactly_once() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 1).await;
    let gate = env.gate().await;
    let id = order_id(&reserve(&gate, &ev, "vip-3-day", 2, "slow@x.at").await);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Every path that meets the expired hold agrees, and stock comes back once.
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.available, 5);
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.available, 5);
    assert_eq!(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
        PayBegin::State(OrderStatus::Expired)
    );
    assert_eq!(
        gate.cancel(&ev.id, id, None).await.unwrap(),
        Some((OrderStatus::Expired, false))
    );
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (5, 0));
    // The customer's limit was released too.
    order_id(&reserve(&gate, &ev, "vip-3-day", 4, "slow@x.at").await);
}

#[tokio::test]
async fn expiry_without_a_refresh_happens_inside_the_next_reservation() {
    let env = TestEnv::get();
    let ev = env.seed(2, -1, 1).await;
    let gate = env.gate().await;
    order_id(&reserve(&gate, &ev, "vip-3-day", 2, "a@x.at").await);
    assert_eq!(
        reserve(&gate, &ev, "vip-3-day", 1, "b@x.at").await,
        ReserveOutcome::SoldOut
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    order_id(&reserve(&gate, &ev, "vip-3-day", 2, "b@x.at").await);
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.held, 2);
}

#[tokio::test]
async fn cancel_twice_returns_stock_once() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let gate = env.gate().await;
    let id = order_id(&reserve(&gate, &ev, "vip-3-day", 2, "a@x.at").await);
    assert_eq!(
        gate.cancel(&ev.id, id, None).await.unwrap(),
        Some((OrderStatus::Cancelled, true))
    );
    assert_eq!(
        gate.cancel(&ev.id, id, None).await.unwrap(),
        Some((OrderStatus::Cancelled, false))
    );
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (5, 0));
    assert_eq!(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
        PayBegin::State(OrderStatus::Cancelled)
    );
    assert_eq!(
        gate.cancel(&ev.id, OrderId::new(), None).await.unwrap(),
        None
    );
}

fn attempt_of(p: PayBegin) -> domain::PaymentAttempt {
    match p {
        PayBegin::Charge { attempt, .. } => attempt,
        other => panic!("expected a charge, got {other:?}"),
    }
}

/// A Redis that goes back in time (a failover to a lagging replica, a snapshot restored) must
/// not hand out an attempt a charge already used: the provider, idempotent per attempt, would
/// answer with that charge, refunded since as stale, and the books would confirm the order on
/// money the fan got back (reproduced by DUMP and RESTORE of the order around a payment).
#[tokio::test]
async fn an_attempt_is_never_handed_out_again_after_redis_went_back_in_time() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let gate = env.gate().await;
    let id = order_id(&reserve(&gate, &ev, "vip-3-day", 1, "back@x.at").await);
    let key = format!("{{ev:{}}}:order:{id}", ev.id);
    let mut redis = gate.connection();
    let before: Vec<u8> = redis::cmd("DUMP")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    let first = attempt_of(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
    );
    // The order as it was before its payment began.
    let _: () = redis::cmd("RESTORE")
        .arg(&key)
        .arg(0)
        .arg(before)
        .arg("REPLACE")
        .query_async(&mut redis)
        .await
        .unwrap();
    let again = attempt_of(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
    );
    assert_ne!(
        again, first,
        "the provider would answer with the first charge"
    );
    assert_eq!(
        gate.pay_approved(&ev.id, id, &first, "ref-first", Utc::now())
            .await
            .unwrap(),
        Approval::Stale(Some(OrderStatus::Confirming)),
        "the first attempt's late approval is not this attempt's"
    );
}

#[tokio::test]
async fn payment_walks_reserved_confirming_confirmed() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let gate = env.gate().await;
    let id = order_id(&reserve(&gate, &ev, "vip-3-day", 2, "payer@x.at").await);
    let price = ev.ticket_types[0].price_cents;

    // Declined: back to reserved, still held.
    let begun = gate
        .pay_begin(&ev.id, id, "tok_decline", None)
        .await
        .unwrap();
    let first = attempt_of(begun.clone());
    assert_eq!(
        begun,
        PayBegin::Charge {
            amount_cents: 2 * price,
            token: "tok_decline".into(),
            attempt: first.clone()
        }
    );
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.confirming, 2);
    assert_eq!(
        gate.cancel(&ev.id, id, None).await.unwrap(),
        Some((OrderStatus::Confirming, false)),
        "no cancel mid-charge"
    );
    assert_eq!(
        gate.pay_abort(&ev.id, id, &first).await.unwrap(),
        Some(OrderStatus::Reserved)
    );
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.held, s.confirming), (2, 0));

    // A second attempt, never the first again; a late answer for the first changes nothing.
    let second = attempt_of(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
    );
    assert_ne!(second, first);
    assert_eq!(
        gate.pay_abort(&ev.id, id, &first).await.unwrap(),
        None,
        "stale abort ignored"
    );
    assert_eq!(
        gate.pay_approved(&ev.id, id, &first, "ref-old", Utc::now())
            .await
            .unwrap(),
        Approval::Stale(Some(OrderStatus::Confirming)),
        "a stale approval is refused (the caller hands it to the books)"
    );
    // The relay (empty token) resumes the pending attempt with the stored token.
    assert_eq!(
        gate.pay_begin(&ev.id, id, "", None).await.unwrap(),
        PayBegin::Charge {
            amount_cents: 2 * price,
            token: "tok_approve".into(),
            attempt: second.clone()
        }
    );
    // ...and, past the give-up age, reports it stuck.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        gate.pay_begin(&ev.id, id, "", Some(Duration::from_millis(10)))
            .await
            .unwrap(),
        PayBegin::Stuck {
            attempt: second.clone()
        }
    );
    let paid_at = Utc::now();
    let Approval::Recorded(rec) = gate
        .pay_approved(&ev.id, id, &second, "ref-1", paid_at)
        .await
        .unwrap()
    else {
        panic!("not recorded")
    };
    assert_eq!(rec.payment_ref, "ref-1");
    assert!(matches!(
        gate.pay_approved(&ev.id, id, &second, "ref-1", Utc::now())
            .await
            .unwrap(),
        Approval::Recorded(_)
    ));
    assert_eq!(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
        PayBegin::AlreadyPaid { published: false }
    );
    assert_eq!(
        gate.outbox(&ev.id, Duration::ZERO, 10).await.unwrap(),
        vec![id]
    );
    gate.mark_published(&ev.id, id, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
        PayBegin::AlreadyPaid { published: true }
    );
    assert!(
        gate.outbox(&ev.id, Duration::ZERO, 10)
            .await
            .unwrap()
            .is_empty(),
        "published: not due until the redelivery time"
    );
    // Not persisted in time (a message the broker lost): due again for the relay.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        gate.outbox(&ev.id, Duration::ZERO, 10).await.unwrap(),
        vec![id]
    );

    let msg = OrderMessage {
        order_id: id,
        event: ev.id.clone(),
        ticket_type: tt("vip-3-day"),
        quantity: domain::Quantity::parse(2).unwrap(),
        email: domain::Email::parse("payer@x.at").unwrap(),
        amount_cents: 2 * price,
        payment_ref: "ref-1".into(),
        paid_at,
        trace: None,
    };
    let codes = vec!["FRQ-A".to_string(), "FRQ-B".to_string()];
    assert!(
        testkit::finalize(
            &gate,
            &msg,
            &persisted(&msg, OrderStatus::Confirmed, &codes)
        )
        .await
        .unwrap()
    );
    assert!(
        !testkit::finalize(
            &gate,
            &msg,
            &persisted(&msg, OrderStatus::Confirmed, &codes)
        )
        .await
        .unwrap(),
        "second finalize is a no-op"
    );
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held, s.confirming, s.sold), (3, 0, 0, 2));
    let view = gate.order(&ev.id, id).await.unwrap().unwrap();
    assert_eq!(view.status, OrderStatus::Confirmed);
    assert_eq!(view.tickets, codes);
    assert_eq!(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
        PayBegin::State(OrderStatus::Confirmed)
    );
}

#[tokio::test]
async fn a_rejection_by_the_database_returns_stock_and_the_limit() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let gate = env.gate().await;
    let id = order_id(&reserve(&gate, &ev, "backstage-lounge", 2, "r@x.at").await);
    let attempt = attempt_of(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
    );
    assert!(matches!(
        gate.pay_approved(&ev.id, id, &attempt, "ref", Utc::now())
            .await
            .unwrap(),
        Approval::Recorded(_)
    ));
    let msg = OrderMessage {
        order_id: id,
        event: ev.id.clone(),
        ticket_type: tt("backstage-lounge"),
        quantity: domain::Quantity::parse(2).unwrap(),
        email: domain::Email::parse("r@x.at").unwrap(),
        amount_cents: 1,
        payment_ref: "ref".into(),
        paid_at: Utc::now(),
        trace: None,
    };
    assert!(
        testkit::finalize(&gate, &msg, &persisted(&msg, OrderStatus::Rejected, &[]))
            .await
            .unwrap()
    );
    let s = stock(&gate, &ev, "backstage-lounge").await;
    assert_eq!((s.available, s.confirming, s.sold), (3, 0, 0));
    order_id(&reserve(&gate, &ev, "backstage-lounge", 2, "r@x.at").await);
}

#[tokio::test]
async fn a_declined_payment_after_the_deadline_expires_the_hold() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 1).await;
    let gate = env.gate().await;
    let id = order_id(&reserve(&gate, &ev, "vip-3-day", 1, "late@x.at").await);
    let attempt = attempt_of(
        gate.pay_begin(&ev.id, id, "tok_decline", None)
            .await
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // Frozen while charging: the refresh must not expire it.
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.confirming, 1);
    assert_eq!(
        gate.pay_abort(&ev.id, id, &attempt).await.unwrap(),
        Some(OrderStatus::Expired)
    );
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held, s.confirming), (5, 0, 0));
}

#[tokio::test]
async fn concurrent_reservations_never_oversell() {
    let env = TestEnv::get();
    let ev = env.seed(50, -1, 600).await;
    let gate = env.gate().await;
    let tasks: Vec<_> = (0..300)
        .map(|i| {
            let gate = gate.clone();
            let ev = ev.id.clone();
            tokio::spawn(async move {
                gate.reserve(
                    &ev,
                    &tt("vip-3-day"),
                    q(1),
                    &email(&format!("fan{i}@x.at")),
                    &key(),
                    &AdmissionRules::default(),
                )
                .await
                .unwrap()
            })
        })
        .collect();
    let mut reserved = 0;
    let mut sold_out = 0;
    for t in tasks {
        match t.await.unwrap() {
            ReserveOutcome::Reserved { .. } => reserved += 1,
            ReserveOutcome::SoldOut => sold_out += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((reserved, sold_out), (50, 250));
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (0, 50));
}

#[tokio::test]
async fn seeding_twice_is_a_no_op_and_a_different_catalog_is_refused() {
    let env = TestEnv::get();
    let ev = env.seed(5, -1, 600).await;
    let gate = env.gate().await;
    assert!(!gate.seed(&ev).await.unwrap());
    let mut changed = ev.clone();
    changed.ticket_types[0].capacity = 6;
    assert!(gate.seed(&changed).await.is_err());
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.capacity, 5);
}

#[tokio::test]
async fn gcra_allows_a_burst_refuses_the_next_and_refills_at_the_sustained_rate() {
    use gate::ratelimit::{Decision, Policy, RateLimiter};
    let env = TestEnv::get();
    let limiter = RateLimiter::new(
        env.gate().await.connection(),
        std::time::Duration::from_millis(500),
    );
    // 600 per minute = one every 100 ms, 2 at once.
    let p = Policy {
        per_minute: 600,
        burst: 2,
    };
    let subject = format!("test:{}", uuid::Uuid::new_v4());
    let mut remaining = vec![];
    for _ in 0..2 {
        match limiter.check(&subject, p).await.unwrap() {
            Decision::Allowed { remaining: r, .. } => remaining.push(r),
            d => panic!("refused within the burst: {d:?}"),
        }
    }
    assert_eq!(remaining, vec![1, 0]);
    let retry = match limiter.check(&subject, p).await.unwrap() {
        Decision::Limited { retry_after } => retry_after,
        d => panic!("allowed beyond the burst: {d:?}"),
    };
    assert!(retry.as_millis() <= 100, "{retry:?}");
    // Refusals consume nothing: after one interval exactly one more gets through.
    tokio::time::sleep(std::time::Duration::from_millis(120)).await;
    assert!(matches!(
        limiter.check(&subject, p).await.unwrap(),
        Decision::Allowed { .. }
    ));
    assert!(matches!(
        limiter.check(&subject, p).await.unwrap(),
        Decision::Limited { .. }
    ));
    // A disabled policy never refuses and never touches Redis.
    let off = Policy {
        per_minute: 0,
        burst: 0,
    };
    assert!(matches!(
        limiter.check(&subject, off).await.unwrap(),
        Decision::Allowed { .. }
    ));
}

#[tokio::test]
async fn an_order_is_found_in_its_event_even_one_seeded_after_the_list_was_read() {
    let env = TestEnv::get();
    let gate = env.gate().await;
    let first = env.seed(10, -1, 600).await;
    let a = order_id(&reserve(&gate, &first, "vip-3-day", 1, "a@x.at").await);
    assert_eq!(gate.event_of(a).await.unwrap(), Some(first.id.clone()));
    // Seeded after `event_of` read the events: found all the same, not after a delay.
    let second = env.seed(10, -1, 600).await;
    let b = order_id(&reserve(&gate, &second, "vip-3-day", 1, "b@x.at").await);
    assert_eq!(gate.event_of(b).await.unwrap(), Some(second.id.clone()));
    assert_eq!(gate.event_of(a).await.unwrap(), Some(first.id.clone()));
    assert_eq!(gate.event_of(OrderId::new()).await.unwrap(), None);
}

/// Reservations arriving together are decided in batches (one script call each); every one of
/// them must come out as if it had been alone: keys, limits and stock across the batch.
#[tokio::test]
async fn reservations_decided_together_each_get_their_own_answer() {
    let env = TestEnv::get();
    let ev = env.seed(200, -1, 600).await;
    let other = env.seed(5, -1, 600).await;
    let gate = env.gate().await;
    let shared_key = key();
    let mut calls = Vec::new();
    for i in 0..300 {
        let (gate, ev, other, shared_key) =
            (gate.clone(), ev.clone(), other.clone(), shared_key.clone());
        calls.push(tokio::spawn(async move {
            let (event, who, k) = match i % 5 {
                // The same attempt sent 60 times: one order, 59 replays of it.
                0 => (&ev, "same@x.at".to_owned(), shared_key),
                // One customer, 60 attempts: the limit of 4 per customer holds.
                1 => (&ev, "greedy@x.at".to_owned(), key()),
                // 60 fans for 5 tickets of another event.
                2 => (&other, format!("o{i}@x.at"), key()),
                _ => (&ev, format!("f{i}@x.at"), key()),
            };
            (
                i % 5,
                reserve_keyed(&gate, event, "vip-3-day", 1, &who, &k).await,
            )
        }));
    }
    let mut results = Vec::new();
    for c in calls {
        results.push(c.await.unwrap());
    }
    let of = |class: i32| {
        results
            .iter()
            .filter(move |(c, _)| *c == class)
            .map(|(_, o)| o)
    };
    let same: std::collections::HashSet<OrderId> = of(0)
        .map(|o| match o {
            ReserveOutcome::Reserved { order_id, .. }
            | ReserveOutcome::Replayed { order_id, .. } => *order_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(same.len(), 1, "one order for one key");
    assert_eq!(
        of(0)
            .filter(|o| matches!(o, ReserveOutcome::Reserved { .. }))
            .count(),
        1
    );
    assert_eq!(
        of(1)
            .filter(|o| matches!(o, ReserveOutcome::Reserved { .. }))
            .count(),
        4,
        "the per-customer limit"
    );
    for o in of(1) {
        assert!(
            matches!(
                o,
                ReserveOutcome::Reserved { .. } | ReserveOutcome::Limit { .. }
            ),
            "{o:?}"
        );
    }
    assert_eq!(
        of(2)
            .filter(|o| matches!(o, ReserveOutcome::Reserved { .. }))
            .count(),
        5
    );
    assert!(of(2).all(|o| matches!(o, ReserveOutcome::Reserved { .. } | ReserveOutcome::SoldOut)));
    let fans = of(3)
        .chain(of(4))
        .filter(|o| matches!(o, ReserveOutcome::Reserved { .. }))
        .count();
    assert_eq!(fans, 120);
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (200 - 1 - 4 - 120, 1 + 4 + 120));
    let s = stock(&gate, &other, "vip-3-day").await;
    assert_eq!((s.available, s.held), (0, 5));
}

#[tokio::test]
async fn the_per_email_limit_is_part_of_the_reservation_and_never_counts_a_replay() {
    let env = TestEnv::get();
    let ev = env.seed(50, -1, 600).await;
    let gate = env.gate().await;
    let policy = gate::ratelimit::Policy {
        per_minute: 6,
        burst: 2,
    };
    let limited = |k: &IdempotencyKey, who: &'static str| {
        let (gate, ev, k) = (gate.clone(), ev.clone(), k.clone());
        async move {
            gate.reserve(
                &ev.id,
                &tt("vip-3-day"),
                q(1),
                &email(who),
                &k,
                &gate::AdmissionRules {
                    per_email: Some(policy),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let first = key();
    order_id(&limited(&first, "bot@x.at").await);
    order_id(&limited(&key(), "bot@x.at").await);
    match limited(&key(), "bot@x.at").await {
        ReserveOutcome::RateLimited { retry_after } => {
            assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(10))
        }
        other => panic!("expected the limit, got {other:?}"),
    }
    // A retry of an attempt already made is answered as before, not refused.
    assert!(matches!(
        limited(&first, "bot@x.at").await,
        ReserveOutcome::Replayed { .. }
    ));
    // Other fans are not affected, and the refusal took no stock.
    order_id(&limited(&key(), "fan@x.at").await);
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (47, 3));
}

/// Order ids come from the Idempotency-Key and the event's own secret salt: a key is one
/// order per event, and the id says nothing about the key.
#[tokio::test]
async fn an_idempotency_key_is_one_order_per_event() {
    let env = TestEnv::get();
    let gate = env.gate().await;
    let (a, b) = (env.seed(10, -1, 600).await, env.seed(10, -1, 600).await);
    let k = key();
    let in_a = order_id(&reserve_keyed(&gate, &a, "vip-3-day", 1, "k@x.at", &k).await);
    let in_b = order_id(&reserve_keyed(&gate, &b, "vip-3-day", 1, "k@x.at", &k).await);
    assert_ne!(in_a, in_b);
    assert!(!in_a.to_string().contains(k.as_str()));
    assert_eq!(gate.event_of(in_a).await.unwrap(), Some(a.id.clone()));
    assert_eq!(gate.event_of(in_b).await.unwrap(), Some(b.id.clone()));
    match reserve_keyed(&gate, &a, "vip-3-day", 1, "k@x.at", &k).await {
        ReserveOutcome::Replayed { order_id, .. } => assert_eq!(order_id, in_a),
        other => panic!("expected a replay, got {other:?}"),
    }
}

/// Two buy instances derive the same order id from a key: the one that did not make the
/// event's salt learns it from its first call (which writes nothing) and decides again.
#[tokio::test]
async fn a_second_instance_learns_the_salt_and_replays_the_first_ones_order() {
    let env = TestEnv::get();
    let (first, second) = (env.gate().await, env.gate().await);
    let ev = env.seed(10, -1, 600).await;
    let k = key();
    let id = order_id(&reserve_keyed(&first, &ev, "vip-3-day", 1, "two@x.at", &k).await);
    match reserve_keyed(&second, &ev, "vip-3-day", 1, "two@x.at", &k).await {
        ReserveOutcome::Replayed { order_id, .. } => assert_eq!(order_id, id),
        other => panic!("expected a replay, got {other:?}"),
    }
    // The second instance's own reservations are counted once, under the event's salt.
    let other = order_id(&reserve(&second, &ev, "vip-3-day", 2, "three@x.at").await);
    assert_eq!(
        second
            .order(&ev.id, other)
            .await
            .unwrap()
            .unwrap()
            .quantity
            .get(),
        2
    );
    let s = stock(&first, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (7, 3));
}

/// An event seeded before salts existed adopts none: its reservations answer paused until the
/// one-off `ops gate-upgrade` (`upgrade_salt`) draws its salt, then they are taken.
#[tokio::test]
async fn an_event_without_a_salt_is_paused_until_the_upgrade_draws_one() {
    let env = TestEnv::get();
    let gate = env.gate().await;
    let ev = env.seed(10, -1, 600).await;
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HDEL")
        .arg(format!("{{ev:{}}}:meta", ev.id.as_str()))
        .arg("oid_salt")
        .query_async(&mut conn)
        .await
        .unwrap();
    let fresh = env.gate().await;
    assert_eq!(
        reserve(&fresh, &ev, "vip-3-day", 1, "early@x.at").await,
        ReserveOutcome::Paused
    );
    assert!(gate.upgrade_salt(&ev.id).await.unwrap(), "a salt drawn");
    assert!(!gate.upgrade_salt(&ev.id).await.unwrap(), "safe to re-run");
    let id = order_id(&reserve(&fresh, &ev, "vip-3-day", 1, "early@x.at").await);
    assert!(fresh.order(&ev.id, id).await.unwrap().is_some());
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.held, 1);
}

/// After the sell-out, a retry of the reservation that took the last ticket still gets its
/// order back, also when it is decided in a batch of refusals.
#[tokio::test]
async fn a_retry_after_the_sell_out_replays_even_among_refusals() {
    let env = TestEnv::get();
    let ev = env.seed(1, -1, 600).await;
    let gate = env.gate().await;
    let k = key();
    let id = order_id(&reserve_keyed(&gate, &ev, "vip-3-day", 1, "last@x.at", &k).await);
    let mut calls = Vec::new();
    for i in 0..40 {
        let (gate, ev, k) = (gate.clone(), ev.clone(), k.clone());
        calls.push(tokio::spawn(async move {
            let (who, k) = if i % 4 == 0 {
                ("last@x.at".to_owned(), k)
            } else {
                (format!("late{i}@x.at"), key())
            };
            (
                i % 4 == 0,
                reserve_keyed(&gate, &ev, "vip-3-day", 1, &who, &k).await,
            )
        }));
    }
    for c in calls {
        match c.await.unwrap() {
            (true, ReserveOutcome::Replayed { order_id, .. }) => assert_eq!(order_id, id),
            (false, ReserveOutcome::SoldOut) => {}
            other => panic!("{other:?}"),
        }
    }
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (0, 1));
}

/// One reservation failing inside Redis (here a customer key of another type) is answered
/// with an error alone: the others decided with it keep their holds and the books balance.
#[tokio::test]
async fn one_failing_reservation_does_not_spoil_its_batch() {
    let env = TestEnv::get();
    let ev = env.seed(100, -1, 600).await;
    let gate = env.gate().await;
    let mut conn = gate.connection();
    let _: () =
        redis::AsyncCommands::set(&mut conn, format!("{{ev:{}}}:cust:odd@x.at", ev.id), "x")
            .await
            .unwrap();
    let mut calls = Vec::new();
    for i in 0..30 {
        let (gate, ev) = (gate.clone(), ev.clone());
        calls.push(tokio::spawn(async move {
            let who = if i == 15 {
                "odd@x.at".to_owned()
            } else {
                format!("ok{i}@x.at")
            };
            (
                i,
                gate.reserve(
                    &ev.id,
                    &tt("vip-3-day"),
                    q(1),
                    &email(&who),
                    &key(),
                    &AdmissionRules::default(),
                )
                .await,
            )
        }));
    }
    for c in calls {
        match c.await.unwrap() {
            (15, Err(gate::GateError::Protocol(_))) => {}
            (15, other) => panic!("{other:?}"),
            (_, Ok(ReserveOutcome::Reserved { .. })) => {}
            (_, other) => panic!("{other:?}"),
        }
    }
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (71, 29));
}

/// An event seeded before orders were written as one `r` field (its meta hash has no
/// `orders = r`) may hold orders in the older layout, which the order's HSETNX cannot see: a
/// retry of such an order must still replay it, and a different request under its key be
/// refused, with the stock untouched.
#[tokio::test]
async fn a_key_of_an_order_in_the_older_layout_replays_it_once_upgraded() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let gate = env.gate().await;
    let k = key();
    let first = reserve_keyed(&gate, &ev, "vip-3-day", 2, "old@x.at", &k).await;
    let (id, hold) = match first {
        ReserveOutcome::Reserved {
            order_id,
            hold_expires_at,
        } => (order_id, hold_expires_at),
        other => panic!("{other:?}"),
    };
    // Rewrite the event and the order as the previous version left them.
    let mut conn = gate.connection();
    let order = format!("{{ev:{}}}:order:{id}", ev.id);
    let meta = format!("{{ev:{}}}:meta", ev.id);
    let _: () = redis::cmd("HDEL")
        .arg(&meta)
        .arg("orders")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&order)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg(&order)
        .arg(&[
            "status",
            "reserved",
            "fp",
            "vip-3-day\n2\nold@x.at",
            "amount",
            "69800",
        ])
        .arg("hold_expires_at")
        .arg(hold.timestamp_millis())
        .query_async(&mut conn)
        .await
        .unwrap();
    // `ops gate-upgrade` rewrites it as `r`, once.
    assert_eq!(gate.upgrade_orders(&ev.id).await.unwrap(), 1);
    assert_eq!(gate.upgrade_orders(&ev.id).await.unwrap(), 0);
    let before = stock(&gate, &ev, "vip-3-day").await;
    match reserve_keyed(&gate, &ev, "vip-3-day", 2, "old@x.at", &k).await {
        ReserveOutcome::Replayed {
            order_id,
            hold_expires_at,
        } => {
            assert_eq!((order_id, hold_expires_at), (id, hold));
        }
        other => panic!("expected a replay, got {other:?}"),
    }
    assert_eq!(
        reserve_keyed(&gate, &ev, "vip-3-day", 1, "old@x.at", &k).await,
        ReserveOutcome::IdempotencyConflict
    );
    let after = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!(
        (after.available, after.held),
        (before.available, before.held)
    );
    assert_eq!((after.available, after.held), (8, 2));
    // The upgraded order is read, paid for and released as before.
    let view = gate.order(&ev.id, id).await.unwrap().unwrap();
    assert_eq!(
        (view.status, view.quantity.get(), view.amount_cents),
        (OrderStatus::Reserved, 2, 69800)
    );
    gate.cancel(&ev.id, id, None).await.unwrap();
    let s = stock(&gate, &ev, "vip-3-day").await;
    assert_eq!((s.available, s.held), (10, 0));
}

#[tokio::test]
async fn a_confirmed_order_in_the_oldest_layout_reads_the_same_once_upgraded() {
    let env = TestEnv::get();
    let ev = env.seed(10, -1, 600).await;
    let gate = env.gate().await;
    let id = OrderId::new();
    let mut conn = gate.connection();
    let _: () = redis::cmd("HSET")
        .arg(format!("{{ev:{}}}:order:{id}", ev.id))
        .arg(&[
            "status",
            "confirmed",
            "tt",
            "vip-camping",
            "qty",
            "3",
            "email",
            "oldest@x.at",
            "amount",
            "104700",
            "hold_expires_at",
            "1700000000000",
            "tickets",
            "[\"FRQ-A\",\"FRQ-B\",\"FRQ-C\"]",
        ])
        .query_async(&mut conn)
        .await
        .unwrap();
    // Code that reads only `r` does not see it until the upgrade.
    assert_eq!(gate.order(&ev.id, id).await.unwrap(), None);
    assert_eq!(gate.upgrade_orders(&ev.id).await.unwrap(), 1);
    let view = gate.order(&ev.id, id).await.unwrap().unwrap();
    assert_eq!(
        (
            view.status,
            view.ticket_type.as_str(),
            view.quantity.get(),
            view.email.as_str(),
            view.amount_cents,
            view.tickets.len()
        ),
        (
            OrderStatus::Confirmed,
            "vip-camping",
            3,
            "oldest@x.at",
            104700,
            3
        )
    );
    assert_eq!(
        view.hold_expires_at.map(|t| t.timestamp_millis()),
        Some(1_700_000_000_000)
    );
}

/// Pays a hold through the gate and mirrors `status` as the books would decide it.
async fn decided(gate: &Gate, ev: &Event, id: OrderId, who: &str, status: OrderStatus) {
    let attempt = attempt_of(
        gate.pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap(),
    );
    let Approval::Recorded(_) = gate
        .pay_approved(&ev.id, id, &attempt, "ref", Utc::now())
        .await
        .unwrap()
    else {
        panic!("approval")
    };
    let msg = OrderMessage {
        order_id: id,
        event: ev.id.clone(),
        ticket_type: tt("vip-3-day"),
        quantity: domain::Quantity::parse(1).unwrap(),
        email: domain::Email::parse(who).unwrap(),
        amount_cents: 1,
        payment_ref: "ref".into(),
        paid_at: Utc::now(),
        trace: None,
    };
    let tickets = if status == OrderStatus::Confirmed {
        vec!["FRQ-TEST-0000-0001".to_owned()]
    } else {
        vec![]
    };
    testkit::finalize(gate, &msg, &persisted(&msg, status, &tickets))
        .await
        .unwrap();
}

/// Redis' memory is bounded: holds that expire or are cancelled, and orders the books reject,
/// leave nothing behind for good (bots can make any number of them); what a confirmed order
/// needs stays (at most one per ticket sold). Reserve-and-cancel, which the per-client cap no
/// longer bounds, leaves its orders ten minutes and its customers only as long as the
/// per-e-mail rate limit remembers them.
#[tokio::test]
async fn ended_holds_and_orders_leave_no_key_behind_for_good() {
    let env = TestEnv::get();
    let ev = env.seed(100, -1, 1).await;
    let gate = env.gate().await;
    // With the per-e-mail rate limit on, a customer's hash keeps its arrival time.
    let admission = gate::AdmissionRules {
        per_email: Some(gate::ratelimit::Policy {
            per_minute: 600,
            burst: 50,
        }),
        ..Default::default()
    };
    let mut held = vec![];
    for i in 0..30 {
        let who = format!("bot{i}@x.at");
        let o = gate
            .reserve(
                &ev.id,
                &tt("vip-3-day"),
                q(1),
                &email(&who),
                &key(),
                &admission,
            )
            .await
            .unwrap();
        held.push((order_id(&o), who));
    }
    for (id, _) in &held[..10] {
        gate.cancel(&ev.id, *id, None).await.unwrap();
    }
    for (id, who) in &held[10..12] {
        decided(&gate, &ev, *id, who, OrderStatus::Rejected).await;
    }
    let (kept, buyer) = &held[12];
    decided(&gate, &ev, *kept, buyer, OrderStatus::Confirmed).await;
    // The rest expire (one-second holds) and are reaped.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    gate.refresh(&ev.id).await.unwrap();
    assert_eq!(stock(&gate, &ev, "vip-3-day").await.held, 0);

    let mut redis = gate.connection();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{{ev:{}}}:*", ev.id))
        .query_async(&mut redis)
        .await
        .unwrap();
    const DAY: i64 = 86_400_000;
    let cancelled = |what: &str| {
        held[..10]
            .iter()
            .any(|(id, _)| what == format!("order:{id}"))
    };
    let (mut orders, mut customers) = (0, 0);
    for k in keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(&k)
            .query_async(&mut redis)
            .await
            .unwrap();
        let what = k.split_once("}:").unwrap().1;
        if what == format!("order:{kept}") || what == format!("cust:{buyer}") {
            assert_eq!(ttl, -1, "{what}: a confirmed order and its customer stay");
        } else if what.starts_with("order:") {
            let rejected = held[10..12]
                .iter()
                .any(|(id, _)| what == format!("order:{id}"));
            let limit = match () {
                _ if rejected => 7 * DAY,
                _ if cancelled(what) => 600_000,
                _ => DAY,
            };
            assert!(0 < ttl && ttl <= limit, "{what} lives {ttl} ms");
            orders += 1;
        } else if what.starts_with("cust:") {
            // Only its rate limit's arrival time is left: 50 requests 100 ms apart at most
            // (-2: it ended between the listing and this look).
            assert!(
                ttl == -2 || (0..=5_000).contains(&ttl),
                "{what} lives {ttl} ms"
            );
            customers += 1;
        } else {
            // The event, its stock and its ledgers: bounded by the sale, not by attempts (the
            // marks: a field per consume-order process).
            assert!(
                ["meta", "holds", "outbox", "marks"].contains(&what) || what.starts_with("tt:"),
                "{what} (ttl {ttl})"
            );
        }
    }
    // 29 orders that ended; of the customers of all but the buyer, those whose arrival time
    // has not passed yet.
    assert_eq!(orders, 29);
    assert!(customers <= 29, "{customers}");
    // An ended order still reads as ended meanwhile.
    let first = gate.order(&ev.id, held[0].0).await.unwrap().unwrap();
    assert_eq!(first.status, OrderStatus::Cancelled);
}
