//! One contract for the gate's traits, written once and run on the Redis gate (the real
//! server scripts/test started) and on the test kit's in-memory doubles, so the doubles the
//! functions' router tests use behave as the gate and the per-IP limiter do. Each case runs as
//! `redis::case` and `memory::case`.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use domain::books::Persisted;
use domain::{
    Email, Event, IdempotencyKey, OrderId, OrderMessage, OrderStatus, Quantity, TicketTypeId,
};
use gate::ratelimit::{Decision, Policy, RateLimit, RateLimiter};
use gate::{
    AdmissionRules, Approval, Checkout, Gate, PayBegin, ReserveOutcome, RoomSettings, RoomStatus,
    Stock, WaitingRoom,
};
use testkit::memory::{MemoryGate, MemoryRateLimit};
use testkit::{TestEnv, new_event};

/// The gate under test, and how to put an event on sale in it.
struct Backend {
    gate: Arc<dyn Checkout>,
    room: Arc<dyn WaitingRoom>,
    limiter: Arc<dyn RateLimit>,
    redis: Option<Gate>,
    memory: Option<Arc<MemoryGate>>,
}

async fn redis() -> Backend {
    let gate = TestEnv::get().gate().await;
    Backend {
        gate: Arc::new(gate.clone()),
        room: Arc::new(gate.clone()),
        limiter: Arc::new(RateLimiter::new(gate.connection(), Duration::from_secs(2))),
        redis: Some(gate),
        memory: None,
    }
}

async fn memory() -> Backend {
    let gate = Arc::new(MemoryGate::new());
    Backend {
        gate: gate.clone(),
        room: gate.clone(),
        limiter: Arc::new(MemoryRateLimit::default()),
        redis: None,
        memory: Some(gate),
    }
}

impl Backend {
    /// A new event on sale since a minute (or opening in `opens_in_secs`).
    async fn seed(&self, capacity: u32, opens_in_secs: i64, hold_seconds: u32) -> Event {
        let ev = new_event(capacity, opens_in_secs, hold_seconds);
        if let Some(g) = &self.redis {
            g.seed(&ev).await.expect("seed redis");
        }
        if let Some(m) = &self.memory {
            m.seed(&ev);
        }
        ev
    }

    async fn reserve(&self, ev: &Event, t: &str, n: i64, who: &str) -> ReserveOutcome {
        self.reserve_with(ev, t, n, who, &key(), &AdmissionRules::default())
            .await
    }

    async fn reserve_with(
        &self,
        ev: &Event,
        t: &str,
        n: i64,
        who: &str,
        k: &IdempotencyKey,
        rules: &AdmissionRules,
    ) -> ReserveOutcome {
        self.gate
            .reserve(
                &ev.id,
                &TicketTypeId::parse(t).unwrap(),
                Quantity::parse(n).unwrap(),
                &Email::parse(who).unwrap(),
                k,
                rules,
            )
            .await
            .unwrap()
    }

    /// Pauses a live event as the recovery does when Redis is behind the books.
    async fn pause(&self, ev: &Event) {
        if let Some(g) = &self.redis {
            assert!(g.rebuild(&ev.id).await.expect("pause in redis"));
        }
        if let Some(m) = &self.memory {
            m.set_paused(&ev.id, true);
        }
    }

    /// The stock of one ticket type, with the invariant checked.
    async fn stock(&self, ev: &Event, t: &str) -> Stock {
        let snap = self.gate.refresh(&ev.id).await.unwrap().unwrap();
        let s = snap.stock[t];
        assert_eq!(s.delta(), 0, "invariant broken: {s:?}");
        s
    }

    /// A hold of `n` tickets, paid and approved: the order and its message.
    async fn paid(&self, ev: &Event, n: i64, who: &str) -> OrderMessage {
        let id = held(self.reserve(ev, "vip-3-day", n, who).await);
        testkit::pay(&*self.gate, &ev.id, id, &format!("pay-{id}")).await
    }
}

fn key() -> IdempotencyKey {
    IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
}

fn held(o: ReserveOutcome) -> OrderId {
    match o {
        ReserveOutcome::Reserved { order_id, .. } => order_id,
        other => panic!("not held: {other:?}"),
    }
}

macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(super::redis().await).await
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::cases::$case(super::memory().await).await
                }
            )*
        }
    };
}

contract!(
    a_hold_takes_stock_and_a_retry_gets_the_same_order,
    refusals_take_nothing,
    a_paid_order_is_confirmed_once_and_wakes_its_waiter,
    a_declined_attempt_goes_back_to_reserved_and_its_late_approval_is_stale,
    a_cancel_releases_once,
    an_order_the_books_reject_goes_back_on_sale,
    the_per_email_and_per_client_rules_refuse_without_taking,
    the_outbox_hands_a_paid_order_to_one_relay_per_lease,
    an_expired_hold_cannot_be_paid,
    a_paused_event_takes_no_holds_and_says_so,
    the_rate_limit_allows_a_burst_then_refuses_each_subject_on_its_own,
    the_pre_queue_is_shuffled_once_and_later_joiners_queue_in_arrival_order,
    admission_never_outruns_the_rate_the_cap_or_the_stock,
    sold_out_reaches_every_waiting_fan_and_an_admitted_one_reads_admitted,
    a_large_pre_queue_is_drawn_over_several_calls,
    while_the_room_is_on_only_an_admitted_fan_takes_a_hold,
    a_fan_whose_window_ended_unused_queues_again_at_the_back,
    an_admitted_fan_who_never_comes_for_its_token_frees_its_place_after_the_claim_time,
);

mod cases {
    use super::*;

    pub async fn a_hold_takes_stock_and_a_retry_gets_the_same_order(b: Backend) {
        let ev = b.seed(10, -60, 600).await;
        let k = key();
        let rules = AdmissionRules::default();
        let first = b
            .reserve_with(&ev, "vip-3-day", 2, "a@x.at", &k, &rules)
            .await;
        let id = held(first.clone());
        let again = b
            .reserve_with(&ev, "vip-3-day", 2, "a@x.at", &k, &rules)
            .await;
        let ReserveOutcome::Replayed { order_id, .. } = again else {
            panic!("not replayed: {again:?}")
        };
        assert_eq!(order_id, id);
        assert_eq!(
            b.reserve_with(&ev, "vip-3-day", 3, "a@x.at", &k, &rules)
                .await,
            ReserveOutcome::IdempotencyConflict
        );
        let s = b.stock(&ev, "vip-3-day").await;
        assert_eq!((s.available, s.held), (8, 2));
        assert_eq!(b.gate.event_of(id).await.unwrap(), Some(ev.id.clone()));
        let view = b.gate.order(&ev.id, id).await.unwrap().unwrap();
        assert_eq!(
            (view.status, view.quantity.get(), view.amount_cents),
            (OrderStatus::Reserved, 2, 2 * 34_900)
        );
        let (found, _) = b.gate.find_order(id).await.unwrap().unwrap();
        assert_eq!(found, view);
        assert!(b.gate.events().await.unwrap().contains(&ev.id));
    }

    pub async fn refusals_take_nothing(b: Backend) {
        let ev = b.seed(3, -60, 600).await;
        held(b.reserve(&ev, "vip-3-day", 2, "a@x.at").await);
        assert_eq!(
            b.reserve(&ev, "vip-3-day", 2, "b@x.at").await,
            ReserveOutcome::NotEnough { available: 1 }
        );
        assert_eq!(
            b.reserve(&ev, "vip-3-day", 3, "a@x.at").await,
            ReserveOutcome::Limit {
                limit: 4,
                remaining: 2
            }
        );
        assert_eq!(
            b.reserve(&ev, "no-such-type", 1, "a@x.at").await,
            ReserveOutcome::UnknownTicketType
        );
        held(b.reserve(&ev, "vip-3-day", 1, "c@x.at").await);
        assert_eq!(
            b.reserve(&ev, "vip-3-day", 1, "d@x.at").await,
            ReserveOutcome::SoldOut
        );
        let s = b.stock(&ev, "vip-3-day").await;
        assert_eq!((s.available, s.held), (0, 3));
        let unknown = new_event(1, -60, 600);
        assert_eq!(
            b.reserve(&unknown, "vip-3-day", 1, "a@x.at").await,
            ReserveOutcome::UnknownEvent
        );
        let later = b.seed(3, 3600, 600).await;
        let ReserveOutcome::TooEarly { opens_in_ms } =
            b.reserve(&later, "vip-3-day", 1, "a@x.at").await
        else {
            panic!("not too early")
        };
        assert!((3_500_000..=3_600_000).contains(&opens_in_ms));
    }

    pub async fn a_paid_order_is_confirmed_once_and_wakes_its_waiter(b: Backend) {
        let ev = b.seed(10, -60, 600).await;
        let msg = b.paid(&ev, 2, "a@x.at").await;
        let id = msg.order_id;
        assert_eq!(
            b.gate
                .pay_begin(&ev.id, id, "tok_approve", None)
                .await
                .unwrap(),
            PayBegin::AlreadyPaid { published: false }
        );
        b.gate
            .mark_published(&ev.id, id, Duration::from_secs(300))
            .await
            .unwrap();
        assert_eq!(
            b.gate.pay_begin(&ev.id, id, "", None).await.unwrap(),
            PayBegin::AlreadyPaid { published: true }
        );
        assert_eq!(b.stock(&ev, "vip-3-day").await.confirming, 2);
        let mut waiter = b.gate.finalized(id);
        let persisted = Persisted {
            status: OrderStatus::Confirmed,
            tickets: vec!["T-1".into(), "T-2".into()],
            duplicate: false,
            payment_ref: msg.payment_ref.clone(),
        };
        let batch = [(&msg, &persisted)];
        let finalize = || b.gate.finalize_all(&ev.id, &batch);
        assert_eq!(finalize().await.unwrap(), vec![true]);
        // The wake-up is a shortcut that can be missed while the gate's subscription starts;
        // a redelivery sends it again (and changes nothing else).
        let mut woke = false;
        for _ in 0..50 {
            if tokio::time::timeout(Duration::from_millis(100), &mut waiter)
                .await
                .is_ok()
            {
                woke = true;
                break;
            }
            assert_eq!(finalize().await.unwrap(), vec![false]);
        }
        assert!(woke, "the waiter never woke");
        assert_eq!(
            finalize().await.unwrap(),
            vec![false],
            "a redelivery changes nothing"
        );
        let view = b.gate.order(&ev.id, id).await.unwrap().unwrap();
        assert_eq!(view.status, OrderStatus::Confirmed);
        assert_eq!(view.tickets, persisted.tickets);
        assert_eq!(view.payment_ref, Some(msg.payment_ref.clone()));
        let s = b.stock(&ev, "vip-3-day").await;
        assert_eq!((s.available, s.confirming, s.sold), (8, 0, 2));
        assert_eq!(
            b.gate
                .pay_begin(&ev.id, id, "tok_approve", None)
                .await
                .unwrap(),
            PayBegin::State(OrderStatus::Confirmed)
        );
    }

    pub async fn a_declined_attempt_goes_back_to_reserved_and_its_late_approval_is_stale(
        b: Backend,
    ) {
        let ev = b.seed(10, -60, 600).await;
        let id = held(b.reserve(&ev, "vip-3-day", 1, "a@x.at").await);
        let PayBegin::Charge { attempt, .. } = b
            .gate
            .pay_begin(&ev.id, id, "tok_decline", None)
            .await
            .unwrap()
        else {
            panic!("no charge")
        };
        // A retry while the first attempt is pending resumes it with its own token.
        assert_eq!(
            b.gate
                .pay_begin(&ev.id, id, "tok_other", None)
                .await
                .unwrap(),
            PayBegin::Charge {
                amount_cents: 34_900,
                token: "tok_decline".into(),
                attempt: attempt.clone()
            }
        );
        assert_eq!(
            b.gate.pay_abort(&ev.id, id, &attempt).await.unwrap(),
            Some(OrderStatus::Reserved)
        );
        assert_eq!(b.gate.pay_abort(&ev.id, id, &attempt).await.unwrap(), None);
        assert_eq!(b.stock(&ev, "vip-3-day").await.held, 1);
        let PayBegin::Charge { attempt: next, .. } = b
            .gate
            .pay_begin(&ev.id, id, "tok_approve", None)
            .await
            .unwrap()
        else {
            panic!("no second charge")
        };
        assert_ne!(next, attempt, "a new attempt, never an old one again");
        assert_eq!(
            b.gate
                .pay_approved(&ev.id, id, &attempt, "pay-late", Utc::now())
                .await
                .unwrap(),
            Approval::Stale(Some(OrderStatus::Confirming))
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(
            b.gate
                .pay_begin(&ev.id, id, "", Some(Duration::from_millis(1)))
                .await
                .unwrap(),
            PayBegin::Stuck { attempt: next },
            "the relay gives up on a pending attempt older than its limit"
        );
        assert_eq!(
            b.gate
                .pay_begin(&ev.id, OrderId::new(), "tok", None)
                .await
                .unwrap(),
            PayBegin::NotFound
        );
    }

    pub async fn a_cancel_releases_once(b: Backend) {
        let ev = b.seed(10, -60, 600).await;
        let id = held(b.reserve(&ev, "vip-3-day", 3, "a@x.at").await);
        assert_eq!(
            b.gate.cancel(&ev.id, id, None).await.unwrap(),
            Some((OrderStatus::Cancelled, true))
        );
        assert_eq!(
            b.gate.cancel(&ev.id, id, None).await.unwrap(),
            Some((OrderStatus::Cancelled, false))
        );
        assert_eq!(
            b.gate.cancel(&ev.id, OrderId::new(), None).await.unwrap(),
            None
        );
        let s = b.stock(&ev, "vip-3-day").await;
        assert_eq!((s.available, s.held), (10, 0));
        // The customer's tickets count no more against the limit.
        held(b.reserve(&ev, "vip-3-day", 4, "a@x.at").await);
        let paying = b.paid(&ev, 1, "b@x.at").await;
        assert_eq!(
            b.gate.cancel(&ev.id, paying.order_id, None).await.unwrap(),
            Some((OrderStatus::Confirming, false))
        );
    }

    pub async fn an_order_the_books_reject_goes_back_on_sale(b: Backend) {
        let ev = b.seed(10, -60, 600).await;
        let msg = b.paid(&ev, 2, "a@x.at").await;
        let rejected = Persisted {
            status: OrderStatus::Rejected,
            tickets: vec![],
            duplicate: false,
            payment_ref: msg.payment_ref.clone(),
        };
        assert_eq!(
            b.gate
                .finalize_all(&ev.id, &[(&msg, &rejected)])
                .await
                .unwrap(),
            vec![true]
        );
        let view = b.gate.order(&ev.id, msg.order_id).await.unwrap().unwrap();
        assert_eq!(view.status, OrderStatus::Rejected);
        let s = b.stock(&ev, "vip-3-day").await;
        assert_eq!((s.available, s.confirming, s.sold), (10, 0, 0));
    }

    pub async fn the_per_email_and_per_client_rules_refuse_without_taking(b: Backend) {
        let ev = b.seed(10, -60, 600).await;
        let per_email = AdmissionRules {
            per_email: Some(Policy {
                per_minute: 1,
                burst: 1,
            }),
            ..AdmissionRules::default()
        };
        let k = key();
        held(
            b.reserve_with(&ev, "vip-3-day", 1, "a@x.at", &k, &per_email)
                .await,
        );
        assert!(matches!(
            b.reserve_with(&ev, "vip-3-day", 1, "a@x.at", &key(), &per_email)
                .await,
            ReserveOutcome::RateLimited { .. }
        ));
        assert!(
            matches!(
                b.reserve_with(&ev, "vip-3-day", 1, "a@x.at", &k, &per_email)
                    .await,
                ReserveOutcome::Replayed { .. }
            ),
            "a replay is never refused by the rules"
        );
        let per_client = AdmissionRules {
            holds_per_client: 1,
            client: Some(format!("198.51.100.{}", rand_octet())),
            ..AdmissionRules::default()
        };
        held(
            b.reserve_with(&ev, "vip-3-day", 1, "b@x.at", &key(), &per_client)
                .await,
        );
        assert!(matches!(
            b.reserve_with(&ev, "vip-3-day", 1, "c@x.at", &key(), &per_client)
                .await,
            ReserveOutcome::ClientHolds { .. }
        ));
        assert_eq!(b.stock(&ev, "vip-3-day").await.held, 2);
        // A hold its client cancels no longer counts against the cap (fans behind one carrier
        // NAT who change their minds do not lock each other out); cancelled from another
        // address, it counts until its deadline.
        let (nat, elsewhere) = (
            format!("192.0.2.{}", rand_octet()),
            format!("203.0.113.{}", rand_octet()),
        );
        let rules = AdmissionRules {
            holds_per_client: 1,
            client: Some(nat.clone()),
            ..AdmissionRules::default()
        };
        for who in ["f@x.at", "g@x.at", "h@x.at"] {
            let id = held(
                b.reserve_with(&ev, "vip-3-day", 1, who, &key(), &rules)
                    .await,
            );
            assert_eq!(
                b.gate.cancel(&ev.id, id, Some(nat.as_str())).await.unwrap(),
                Some((OrderStatus::Cancelled, true))
            );
        }
        let id = held(
            b.reserve_with(&ev, "vip-3-day", 1, "i@x.at", &key(), &rules)
                .await,
        );
        b.gate
            .cancel(&ev.id, id, Some(elsewhere.as_str()))
            .await
            .unwrap();
        assert!(matches!(
            b.reserve_with(&ev, "vip-3-day", 1, "j@x.at", &key(), &rules)
                .await,
            ReserveOutcome::ClientHolds { .. }
        ));
        assert_eq!(b.stock(&ev, "vip-3-day").await.held, 2);
    }

    pub async fn the_outbox_hands_a_paid_order_to_one_relay_per_lease(b: Backend) {
        let ev = b.seed(10, -60, 600).await;
        let msg = b.paid(&ev, 1, "a@x.at").await;
        let lease = Duration::from_secs(60);
        assert_eq!(
            b.gate
                .claim_outbox(&ev.id, Duration::ZERO, 10, lease)
                .await
                .unwrap(),
            vec![msg.order_id]
        );
        assert!(
            b.gate
                .claim_outbox(&ev.id, Duration::ZERO, 10, lease)
                .await
                .unwrap()
                .is_empty(),
            "leased to the first relay"
        );
        let done = Persisted {
            status: OrderStatus::Confirmed,
            tickets: vec!["T".into()],
            duplicate: false,
            payment_ref: msg.payment_ref.clone(),
        };
        b.gate.finalize_all(&ev.id, &[(&msg, &done)]).await.unwrap();
        assert!(
            b.gate
                .claim_outbox(&ev.id, Duration::ZERO, 10, Duration::ZERO)
                .await
                .unwrap()
                .is_empty(),
            "a persisted order leaves the outbox"
        );
    }

    pub async fn an_expired_hold_cannot_be_paid(b: Backend) {
        let ev = b.seed(10, -60, 1).await;
        let id = held(b.reserve(&ev, "vip-3-day", 2, "a@x.at").await);
        tokio::time::sleep(Duration::from_millis(1_200)).await;
        assert_eq!(
            b.gate
                .pay_begin(&ev.id, id, "tok_approve", None)
                .await
                .unwrap(),
            PayBegin::State(OrderStatus::Expired)
        );
        let s = b.stock(&ev, "vip-3-day").await;
        assert_eq!((s.available, s.held), (10, 0));
    }

    pub async fn a_paused_event_takes_no_holds_and_says_so(b: Backend) {
        let ev = b.seed(5, -60, 600).await;
        held(b.reserve(&ev, "vip-3-day", 1, "a@x.at").await);
        b.pause(&ev).await;
        assert_eq!(
            b.reserve(&ev, "vip-3-day", 1, "b@x.at").await,
            ReserveOutcome::Paused
        );
        let snap = b.gate.refresh(&ev.id).await.unwrap().unwrap();
        assert!(snap.paused, "the read model says the sale is paused");
        let s = snap.stock["vip-3-day"];
        assert_eq!((s.available, s.held), (4, 1), "a refusal takes nothing");
    }

    pub async fn the_rate_limit_allows_a_burst_then_refuses_each_subject_on_its_own(b: Backend) {
        // One every 10 s, three at once: the test ends long before a token comes back.
        let p = Policy {
            per_minute: 6,
            burst: 3,
        };
        let (one, other) = (subject(), subject());
        for left in [2, 1, 0] {
            let Some(Decision::Allowed { remaining, reset }) = b.limiter.check(&one, p).await
            else {
                panic!("the burst is allowed")
            };
            assert_eq!(remaining, left);
            assert!(
                reset > Duration::ZERO && reset <= Duration::from_secs(30),
                "{reset:?}"
            );
        }
        let Some(Decision::Limited { retry_after }) = b.limiter.check(&one, p).await else {
            panic!("the request after the burst is refused")
        };
        assert!(
            retry_after > Duration::from_secs(8) && retry_after <= Duration::from_secs(10),
            "one interval, less the test's own time: {retry_after:?}"
        );
        assert!(
            matches!(
                b.limiter.check(&other, p).await,
                Some(Decision::Allowed { remaining: 2, .. })
            ),
            "another subject has its own budget"
        );
        let off = Policy {
            per_minute: 0,
            burst: 1,
        };
        for _ in 0..5 {
            assert_eq!(b.limiter.check(&one, off).await, Some(Decision::UNLIMITED));
        }
    }

    /// A limiter subject of this run's own (the Redis is shared by every test).
    fn subject() -> String {
        format!("ip:contract-{}", uuid::Uuid::new_v4())
    }

    /// A client address of this run's own (the Redis is shared by every test).
    fn rand_octet() -> u8 {
        uuid::Uuid::new_v4().as_bytes()[0]
    }

    // The waiting room (ADR 59).

    fn settings(rate_per_sec: u32, cap: u32) -> RoomSettings {
        RoomSettings {
            rate_per_sec,
            cap,
            window: Duration::from_secs(60),
            claim: Duration::from_secs(30),
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

    /// A fan's place once the whole pre-queue is drawn (a chunk at most every 5 ms).
    async fn drawn_place(gate: &dyn WaitingRoom, ev: &domain::EventId, id: &str) -> u64 {
        for _ in 0..500 {
            let v = gate.room_status(ev, id).await.unwrap();
            if v.status != RoomStatus::Pending {
                return v.place;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{id}: no place after 500 calls");
    }

    pub async fn the_pre_queue_is_shuffled_once_and_later_joiners_queue_in_arrival_order(
        b: Backend,
    ) {
        let gate = b.room.clone();
        let ev = b.seed(100, 2, 600).await;
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
        let before = gate.room_status(&ev.id, &ids[3]).await.unwrap();
        assert_eq!(before.status, RoomStatus::Pending);

        until_open(&ev).await;
        let mut places = vec![];
        for id in &ids {
            places.push(drawn_place(&*gate, &ev.id, id).await);
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

    /// A pre-queue larger than one call draws (room.lua draws 250 at most every 5 ms): fans who join
    /// meanwhile queue behind it, and the drawn order is one permutation.
    pub async fn a_large_pre_queue_is_drawn_over_several_calls(b: Backend) {
        let gate = b.room.clone();
        let ev = b.seed(100, 6, 600).await;
        gate.room_on(&ev.id, settings(1000, 1000)).await.unwrap();
        let n = 4_500;
        let mut ids = vec![];
        for i in 0..n {
            ids.push(
                gate.room_join(&ev.id, &format!("big{i}@x.at"))
                    .await
                    .unwrap()
                    .queue_id,
            );
        }
        until_open(&ev).await;
        let late = gate.room_join(&ev.id, "late@x.at").await.unwrap();
        assert_eq!(late.place, n + 1, "{late:?}");
        let mut seen = vec![false; n as usize];
        for id in &ids {
            let place = drawn_place(&*gate, &ev.id, id).await;
            assert!((1..=n).contains(&place), "{place}");
            assert!(
                !std::mem::replace(&mut seen[place as usize - 1], true),
                "{place} twice"
            );
        }
        let peek = gate.room_peek(&ev.id).await.unwrap();
        assert!(
            peek.upto > 0 && peek.upto <= n + 1,
            "admission moves on: {peek:?}"
        );
        // From the snapshot alone, a pre-queue fan tells its own turn: its draw key against
        // the last admitted one (ADR 59), and the keys rise with the places.
        assert_eq!(peek.pre, n);
        let mut by_place = vec![0_u64; n as usize];
        for id in &ids {
            let v = gate.room_status(&ev.id, id).await.unwrap();
            let key = gate::draw_key(&v.draw_salt, id);
            by_place[v.place as usize - 1] = key;
            assert_eq!(
                key <= v.admitted_key,
                v.place <= v.upto,
                "place {} upto {}: key {key} against {}",
                v.place,
                v.upto,
                v.admitted_key
            );
        }
        assert!(
            by_place.windows(2).all(|w| w[0] <= w[1]),
            "keys in place order"
        );
    }

    pub async fn admission_never_outruns_the_rate_the_cap_or_the_stock(b: Backend) {
        let gate = b.room.clone();

        // The rate: 4 a second, at most one second of credit.
        let ev = b.seed(100, -1, 600).await;
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
        let ev = b.seed(100, -1, 600).await;
        gate.room_on(&ev.id, settings(1000, 3)).await.unwrap();
        for i in 0..10 {
            gate.room_join(&ev.id, &format!("c{i}@x.at")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = gate.room_peek(&ev.id).await.unwrap();
        assert_eq!((v.upto, v.shopping), (3, 3));

        // The stock: 5 tickets (2 + 2 + 1), so 5 fans at most, however fast the rate.
        let ev = b.seed(2, -1, 600).await;
        gate.room_on(&ev.id, settings(1000, 1000)).await.unwrap();
        for i in 0..10 {
            gate.room_join(&ev.id, &format!("s{i}@x.at")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let v = gate.room_peek(&ev.id).await.unwrap();
        assert_eq!((v.upto, v.unsold), (5, 5));

        // Paused: nothing moves.
        let ev = b.seed(100, -1, 600).await;
        gate.room_on(&ev.id, settings(1000, 1000)).await.unwrap();
        gate.room_pause(&ev.id, true).await.unwrap();
        for i in 0..10 {
            gate.room_join(&ev.id, &format!("p{i}@x.at")).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let paused = gate.room_peek(&ev.id).await.unwrap();
        assert_eq!((paused.upto, paused.paused), (0, true));
        gate.room_pause(&ev.id, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(gate.room_peek(&ev.id).await.unwrap().upto > 0, "resumed");
    }

    pub async fn sold_out_reaches_every_waiting_fan_and_an_admitted_one_reads_admitted(b: Backend) {
        let gate = b.room.clone();
        let ev = b.seed(2, -1, 600).await;
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
        // Every ticket held by admitted fans (vip-3-day 2, vip-camping 2, backstage 1): nothing
        // available.
        let rules = AdmissionRules {
            admitted: Some(admitted.place),
            ..AdmissionRules::default()
        };
        for (tt, n, who) in [
            ("vip-3-day", 2, "a@x.at"),
            ("vip-camping", 2, "b@x.at"),
            ("backstage-lounge", 1, "c@x.at"),
        ] {
            held(b.reserve_with(&ev, tt, n, who, &key(), &rules).await);
        }
        let upto = gate.room_peek(&ev.id).await.unwrap().upto;
        for f in &fans[1..] {
            let v = gate.room_status(&ev.id, &f.queue_id).await.unwrap();
            assert!(v.sold_out, "{v:?}");
        }
        // Held tickets admit nobody (they come back, and admission with them, if holds expire).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            gate.room_peek(&ev.id).await.unwrap().upto,
            upto,
            "no admission while sold out"
        );
        let peek = gate.room_peek(&ev.id).await.unwrap();
        assert!(
            peek.sold_out && peek.unsold == 5,
            "held tickets may come back: {peek:?}"
        );
    }

    pub async fn while_the_room_is_on_only_an_admitted_fan_takes_a_hold(b: Backend) {
        let gate = b.room.clone();
        let ev = b.seed(100, -1, 600).await;
        gate.room_on(&ev.id, settings(1000, 1000)).await.unwrap();
        let fan = gate.room_join(&ev.id, "in@x.at").await.unwrap();
        assert_eq!(fan.status, RoomStatus::Admitted, "{fan:?}");
        let ends = fan.admitted_until.expect("an admitted fan's window");
        assert!(ends > chrono::Utc::now(), "{ends}");
        assert_eq!(fan.rate_per_sec, 1000);
        let before = gate.room_peek(&ev.id).await.unwrap();
        assert_eq!(before.shopping, 1);

        // No admission: refused, nothing taken.
        let out = b.reserve(&ev, "vip-3-day", 1, "in@x.at").await;
        assert_eq!(out, ReserveOutcome::NotAdmitted);
        assert_eq!(b.stock(&ev, "vip-3-day").await.available, 100);

        // Admitted: held, and no longer counted as shopping (the hold counts in the stock).
        let rules = AdmissionRules {
            admitted: Some(fan.place),
            ..AdmissionRules::default()
        };
        held(
            b.reserve_with(&ev, "vip-3-day", 1, "in@x.at", &key(), &rules)
                .await,
        );
        let after = gate.room_peek(&ev.id).await.unwrap();
        assert_eq!(
            (after.shopping, after.unsold),
            (0, before.unsold),
            "{after:?}"
        );

        // The room off: the shop is open to all again.
        gate.room_off(&ev.id).await.unwrap();
        held(b.reserve(&ev, "vip-3-day", 1, "out@x.at").await);
    }

    pub async fn a_fan_whose_window_ended_unused_queues_again_at_the_back(b: Backend) {
        let gate = b.room.clone();
        let ev = b.seed(100, -1, 600).await;
        let short = RoomSettings {
            window: Duration::from_millis(300),
            claim: Duration::from_millis(300),
            ..settings(1000, 1000)
        };
        gate.room_on(&ev.id, short).await.unwrap();
        let fan = gate.room_join(&ev.id, "late@x.at").await.unwrap();
        assert_eq!((fan.status, fan.place), (RoomStatus::Admitted, 1));
        gate.room_join(&ev.id, "other@x.at").await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        let missed = gate.room_status(&ev.id, &fan.queue_id).await.unwrap();
        assert_eq!(missed.status, RoomStatus::Missed, "{missed:?}");
        let again = gate.room_join(&ev.id, "late@x.at").await.unwrap();
        assert_eq!(again.queue_id, fan.queue_id);
        assert_eq!(again.place, 3, "behind everyone who joined: {again:?}");
        assert_eq!(again.status, RoomStatus::Admitted);
    }

    pub async fn an_admitted_fan_who_never_comes_for_its_token_frees_its_place_after_the_claim_time(
        b: Backend,
    ) {
        let gate = b.room.clone();
        let ev = b.seed(100, -1, 600).await;
        let s = RoomSettings {
            claim: Duration::from_millis(300),
            ..settings(1, 1000)
        };
        gate.room_on(&ev.id, s).await.unwrap();
        // The first fan is admitted as it joins: that join is its claim, a whole window.
        let came = gate.room_join(&ev.id, "came@x.at").await.unwrap();
        assert_eq!(came.status, RoomStatus::Admitted, "{came:?}");
        let until = came.admitted_until.unwrap();
        assert!(
            until > chrono::Utc::now() + chrono::Duration::seconds(50),
            "{until}"
        );
        // The second is admitted a second later by the rate, and never comes.
        let gone = gate.room_join(&ev.id, "gone@x.at").await.unwrap();
        assert_eq!(gone.status, RoomStatus::Waiting);
        let mut admitted = false;
        for _ in 0..30 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if gate.room_peek(&ev.id).await.unwrap().upto >= 2 {
                admitted = true;
                break;
            }
        }
        assert!(admitted, "the second fan's turn");
        assert_eq!(gate.room_peek(&ev.id).await.unwrap().shopping, 2);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let peek = gate.room_peek(&ev.id).await.unwrap();
        assert_eq!(peek.shopping, 1, "only the fan who came: {peek:?}");
        let late = gate.room_status(&ev.id, &gone.queue_id).await.unwrap();
        assert_eq!(late.status, RoomStatus::Missed);
        let still = gate.room_status(&ev.id, &came.queue_id).await.unwrap();
        assert_eq!(still.status, RoomStatus::Admitted);

        // A fan who missed its claim and joins again queues at the back; admitted there at once
        // (a fast rate), that join is its claim: a whole window, not the claim time.
        let ev = b.seed(100, -1, 600).await;
        let s = RoomSettings {
            claim: Duration::from_millis(300),
            ..settings(1000, 1000)
        };
        gate.room_on(&ev.id, s).await.unwrap();
        gate.room_join(&ev.id, "first@x.at").await.unwrap();
        gate.room_pause(&ev.id, true).await.unwrap();
        let slow = gate.room_join(&ev.id, "slow@x.at").await.unwrap();
        assert_eq!(slow.status, RoomStatus::Waiting);
        gate.room_pause(&ev.id, false).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            gate.room_peek(&ev.id).await.unwrap().upto,
            2,
            "admitted, not claimed"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let missed = gate.room_status(&ev.id, &slow.queue_id).await.unwrap();
        assert_eq!(missed.status, RoomStatus::Missed);
        let back = gate.room_join(&ev.id, "slow@x.at").await.unwrap();
        assert_eq!(
            (back.status, back.place),
            (RoomStatus::Admitted, 3),
            "{back:?}"
        );
        let until = back.admitted_until.unwrap();
        assert!(
            until > chrono::Utc::now() + chrono::Duration::seconds(50),
            "a whole window: {until}"
        );
    }
}
