//! One conformance suite for `OrderRepository`, written once against the trait and run on both
//! backends on real engines started by `scripts/test`: PostgreSQL, and Google's Spanner
//! emulator (each Spanner test creates and migrates a database of its own); and on the test
//! kit's in-memory books, so the double the router tests use decides as the real ones do.
//! `cargo nextest run -p store --test repo_conformance` (filter `postgres::`, `spanner::` or
//! `memory::`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::{Event, OrderCharge, OrderId, OrderMessage, OrderStatus, TicketTypeId};
use store::{OrderRepository, Outcome, Persisted, Refused, RepoError, Seeded};
use testkit::{TestEnv, books_in, new_event};

type Repo = Arc<dyn OrderRepository>;

/// The repository under test and one whose database is down.
struct Backend {
    repo: Repo,
    dead: Repo,
}

async fn postgres() -> Backend {
    let env = TestEnv::get();
    Backend {
        repo: Arc::new(env.repo()),
        dead: Arc::new(env.unreachable_repo()),
    }
}

async fn spanner() -> Backend {
    Backend {
        repo: Arc::new(testkit::spanner_repo().await),
        dead: Arc::new(testkit::spanner_unreachable_repo()),
    }
}

/// The test kit's in-memory books, which the functions' fast router tests use: held here to
/// what the real backends do.
async fn memory() -> Backend {
    let dead = testkit::memory::MemoryRepository::default();
    dead.set_down(true);
    Backend {
        repo: Arc::new(testkit::memory::MemoryRepository::default()),
        dead: Arc::new(dead),
    }
}

/// Each case as a test per backend: `postgres::case`, `spanner::case` and `memory::case`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(super::postgres().await).await
                }
            )*
        }
        mod spanner {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(super::spanner().await).await
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(super::memory().await).await
                }
            )*
        }
    };
}

conformance!(
    persists_an_order_with_its_tickets_once,
    concurrent_duplicate_deliveries_make_one_order,
    never_sells_beyond_capacity_under_many_concurrent_consumers,
    mixed_quantities_are_refused_only_when_they_no_longer_fit,
    a_rejected_order_stays_rejected_on_redelivery,
    an_order_for_an_unknown_ticket_type_is_a_permanent_failure,
    seeding_is_idempotent_and_refuses_another_catalog,
    reset_removes_the_event_and_its_orders,
    events_and_customer_totals_read_back,
    decided_orders_read_back_with_their_tickets,
    refunds_owed_are_recorded_once_leased_when_claimed_and_done_once,
    an_unreachable_database_is_retryable,
    a_batch_with_duplicates_inside_delivered_twice_makes_each_order_once,
    a_batch_larger_than_the_stock_left_confirms_what_fits_first_paid_first,
    a_batch_with_an_order_the_books_refuse_persists_its_neighbours,
    an_order_not_paid_at_the_catalog_price_is_refused_and_takes_nothing,
    a_delivery_with_another_charge_reads_back_the_charge_the_books_keep,
    a_batch_larger_than_one_transaction_is_persisted_whole,
    concurrent_overlapping_batches_never_oversell,
    a_charge_is_kept_when_it_paid_its_confirmed_order_and_owed_back_otherwise,
    an_order_paid_with_a_charge_the_books_owe_back_is_rejected_and_takes_nothing,
    a_settlement_racing_its_charges_order_never_keeps_and_owes_it,
    a_saved_mark_only_grows_within_its_epoch_and_goes_with_its_event,
    an_order_paid_before_this_sale_opened_is_rejected_and_its_charge_owed_back,
);

/// The charge of `msg`, as buy hands it to the books.
fn charge_of(msg: &OrderMessage) -> OrderCharge {
    OrderCharge {
        order_id: msg.order_id,
        payment_ref: msg.payment_ref.clone(),
        amount_cents: msg.amount_cents,
    }
}

/// What the books decided for one charge (`None`: not in the ledger).
async fn verdict(repo: &Repo, payment_ref: &str) -> Option<store::Verdict> {
    let mut entries = repo.charges(&[payment_ref.to_owned()]).await.unwrap();
    assert!(entries.len() <= 1, "{entries:?}");
    entries.pop().map(|e| e.verdict)
}

fn paid(ev: &Event, tt: &str, quantity: u32) -> OrderMessage {
    let order_id = OrderId::new();
    OrderMessage {
        order_id,
        event: ev.id.clone(),
        ticket_type: TicketTypeId::parse(tt).unwrap(),
        quantity: domain::Quantity::parse(i64::from(quantity)).unwrap(),
        email: domain::Email::parse("fan@example.at").unwrap(),
        // The catalog's price, as buy charges it.
        amount_cents: ev
            .ticket_types
            .iter()
            .find(|t| t.id.as_str() == tt)
            .map_or(34_900, |t| t.price_cents)
            * i64::from(quantity),
        // One charge per order, as the provider makes them.
        payment_ref: format!("sim_ch_{}", order_id.0.simple()),
        paid_at: Utc::now(),
        trace: None,
    }
}

async fn seeded(repo: &Repo, capacity: u32) -> Event {
    let ev = new_event(capacity, -1, 600);
    assert_eq!(repo.seed(&ev).await.unwrap(), Seeded::Created);
    ev
}

/// Persists, retrying `Contended` as Pub/Sub would redeliver (bounded in count and time: the
/// Spanner emulator runs one transaction at a time, and 60 consumers retrying its aborts took
/// 39–62 s on this machine's slower hours).
async fn persist_until_decided(repo: &Repo, msg: &OrderMessage) -> Persisted {
    let mut outcomes = persist_batch_until_decided(repo, std::slice::from_ref(msg)).await;
    outcomes.pop().unwrap().unwrap()
}

/// [`persist_until_decided`] for a batch.
async fn persist_batch_until_decided(repo: &Repo, orders: &[OrderMessage]) -> Vec<Outcome> {
    let start = Instant::now();
    for _ in 0..2_000 {
        match repo.persist_batch(orders).await {
            Err(RepoError::Contended(_)) if start.elapsed() < Duration::from_secs(120) => {
                tokio::time::sleep(Duration::from_millis(5)).await
            }
            other => return other.unwrap(),
        }
    }
    panic!("{} orders still contended after 2,000 tries", orders.len());
}

/// Runs `msgs` concurrently, each as its own consumer.
async fn persist_all(repo: &Repo, msgs: &[OrderMessage]) -> Vec<Persisted> {
    let tasks: Vec<_> = msgs
        .iter()
        .cloned()
        .map(|msg| {
            let repo = repo.clone();
            tokio::spawn(async move { persist_until_decided(&repo, &msg).await })
        })
        .collect();
    let mut out = vec![];
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

mod cases {
    use super::*;

    pub async fn persists_an_order_with_its_tickets_once(b: Backend) {
        let ev = seeded(&b.repo, 10).await;
        let msg = paid(&ev, "vip-3-day", 3);
        let first = b.repo.persist(&msg).await.unwrap();
        assert_eq!(first.status, OrderStatus::Confirmed);
        assert_eq!(first.tickets.len(), 3);
        assert!(!first.duplicate);
        assert_eq!(
            first.tickets.iter().collect::<HashSet<_>>().len(),
            3,
            "three different codes"
        );
        assert!(first.tickets.iter().all(|c| c.starts_with("FRQ-")));
        let again = b.repo.persist(&msg).await.unwrap();
        assert!(again.duplicate);
        assert_eq!(again.status, OrderStatus::Confirmed);
        assert_eq!(
            again.tickets, first.tickets,
            "a redelivery returns the same tickets"
        );

        // The status read.
        let stored = b.repo.order(msg.order_id).await.unwrap().unwrap();
        assert_eq!(stored.order_id, msg.order_id);
        assert_eq!(stored.event, ev.id);
        assert_eq!(stored.ticket_type.as_str(), "vip-3-day");
        assert_eq!(stored.status, OrderStatus::Confirmed);
        assert_eq!(stored.tickets, first.tickets);
        assert_eq!(stored.quantity, 3);
        assert_eq!(stored.email, msg.email.as_str());
        assert_eq!(stored.amount_cents, msg.amount_cents);
        assert_eq!(stored.payment_ref, msg.payment_ref);
        let age = Utc::now() - stored.persisted_at;
        assert!(
            age < chrono::Duration::minutes(5) && age > chrono::Duration::minutes(-5),
            "persisted_at {}",
            stored.persisted_at
        );
        assert!(b.repo.order(OrderId::new()).await.unwrap().is_none());

        // The audit's books: every type, the untouched ones too.
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!(
            (
                vip.capacity,
                vip.tickets,
                vip.sold,
                vip.confirmed_quantity,
                vip.confirmed_orders,
                vip.rejected_orders
            ),
            (10, 10, 3, 3, 1, 0)
        );
        let inventory = b.repo.inventory(&ev.id).await.unwrap();
        assert_eq!(inventory.len(), ev.ticket_types.len());
        for i in inventory
            .iter()
            .filter(|i| i.ticket_type.as_str() != "vip-3-day")
        {
            assert_eq!((i.tickets, i.sold, i.confirmed_orders), (i.capacity, 0, 0));
        }
    }

    pub async fn concurrent_duplicate_deliveries_make_one_order(b: Backend) {
        let ev = seeded(&b.repo, 10).await;
        let msg = paid(&ev, "vip-3-day", 2);
        let results = persist_all(&b.repo, &vec![msg.clone(); 8]).await;
        assert!(results.iter().all(|p| p.status == OrderStatus::Confirmed));
        assert_eq!(results.iter().filter(|p| !p.duplicate).count(), 1);
        assert!(
            results.iter().all(|p| p.tickets == results[0].tickets),
            "every delivery sees the same tickets"
        );
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!((vip.sold, vip.confirmed_orders), (2, 1));
    }

    pub async fn never_sells_beyond_capacity_under_many_concurrent_consumers(b: Backend) {
        let ev = seeded(&b.repo, 20).await;
        // 60 paid orders for 20 tickets, as if the gate had been wrong: never oversell.
        let msgs: Vec<_> = (0..60).map(|_| paid(&ev, "vip-3-day", 1)).collect();
        let results = persist_all(&b.repo, &msgs).await;
        let mut codes = HashSet::new();
        for p in results
            .iter()
            .filter(|p| p.status == OrderStatus::Confirmed)
        {
            for c in &p.tickets {
                assert!(
                    codes.insert(c.clone()),
                    "a ticket code was handed out twice"
                );
            }
        }
        let confirmed = results
            .iter()
            .filter(|p| p.status == OrderStatus::Confirmed)
            .count();
        assert_eq!(confirmed, 20, "exactly the capacity is sold");
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!(
            (
                vip.tickets,
                vip.sold,
                vip.confirmed_orders,
                vip.rejected_orders
            ),
            (20, 20, 20, 40)
        );
    }

    pub async fn mixed_quantities_are_refused_only_when_they_no_longer_fit(b: Backend) {
        let ev = seeded(&b.repo, 25).await;
        let msgs: Vec<_> = (0..30)
            .map(|i| paid(&ev, "vip-3-day", 1 + (i % 3)))
            .collect();
        let results = persist_all(&b.repo, &msgs).await;
        let sold: u32 = msgs
            .iter()
            .zip(&results)
            .filter(|(_, p)| p.status == OrderStatus::Confirmed)
            .map(|(m, p)| {
                assert_eq!(p.tickets.len(), m.quantity.get() as usize);
                m.quantity.get()
            })
            .sum();
        assert!(sold <= 25, "oversold: {sold}");
        // A refusal means the order did not fit when it was decided, and stock only shrinks.
        let left = 25 - sold;
        for (m, p) in msgs.iter().zip(&results) {
            if p.status == OrderStatus::Rejected {
                assert!(
                    m.quantity.get() > left,
                    "{} refused with {left} left",
                    m.quantity.get()
                );
                assert!(p.tickets.is_empty());
            }
        }
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!((vip.tickets, vip.sold), (25, i64::from(sold)));
        assert_eq!(vip.confirmed_quantity, vip.sold);
    }

    pub async fn a_rejected_order_stays_rejected_on_redelivery(b: Backend) {
        let ev = seeded(&b.repo, 2).await;
        let big = paid(&ev, "vip-3-day", 3);
        let first = b.repo.persist(&big).await.unwrap();
        assert_eq!(
            (first.status, first.duplicate),
            (OrderStatus::Rejected, false)
        );
        assert!(first.tickets.is_empty());
        let again = b.repo.persist(&big).await.unwrap();
        assert_eq!(
            (again.status, again.duplicate),
            (OrderStatus::Rejected, true)
        );
        let stored = b.repo.order(big.order_id).await.unwrap().unwrap();
        assert_eq!(stored.status, OrderStatus::Rejected);
        assert!(stored.tickets.is_empty());
        // What was refused does not use up stock: two single orders still fit.
        for _ in 0..2 {
            let p = b.repo.persist(&paid(&ev, "vip-3-day", 1)).await.unwrap();
            assert_eq!(p.status, OrderStatus::Confirmed);
        }
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!(
            (vip.sold, vip.confirmed_orders, vip.rejected_orders),
            (2, 2, 1)
        );
    }

    pub async fn an_order_for_an_unknown_ticket_type_is_a_permanent_failure(b: Backend) {
        let ev = seeded(&b.repo, 5).await;
        let err = b
            .repo
            .persist(&paid(&ev, "no-such-type", 1))
            .await
            .unwrap_err();
        assert!(matches!(err, RepoError::Permanent(_)), "{err:?}");
        assert!(!err.is_retryable());
        let mut unseeded = paid(&ev, "vip-3-day", 1);
        unseeded.event = new_event(5, -1, 600).id;
        let err = b.repo.persist(&unseeded).await.unwrap_err();
        assert!(matches!(err, RepoError::Permanent(_)), "{err:?}");
    }

    pub async fn seeding_is_idempotent_and_refuses_another_catalog(b: Backend) {
        let ev = seeded(&b.repo, 5).await;
        assert_eq!(b.repo.seed(&ev).await.unwrap(), Seeded::Unchanged);
        let mut other = ev.clone();
        other.ticket_types[0].capacity = 6;
        let err = b.repo.seed(&other).await.unwrap_err();
        assert!(matches!(err, RepoError::Permanent(_)), "{err:?}");
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!((vip.capacity, vip.tickets), (5, 5));
    }

    pub async fn reset_removes_the_event_and_its_orders(b: Backend) {
        let ev = seeded(&b.repo, 5).await;
        let msg = paid(&ev, "vip-3-day", 2);
        b.repo.persist(&msg).await.unwrap();
        b.repo.reset(&ev.id).await.unwrap();
        assert!(b.repo.inventory(&ev.id).await.unwrap().is_empty());
        assert!(b.repo.order(msg.order_id).await.unwrap().is_none());
        // And it can be seeded afresh, with the whole capacity back.
        assert_eq!(b.repo.seed(&ev).await.unwrap(), Seeded::Created);
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!((vip.tickets, vip.sold), (5, 0));
    }

    pub async fn events_and_customer_totals_read_back(b: Backend) {
        let ev = seeded(&b.repo, 10).await;
        let events = b.repo.events().await.unwrap();
        assert_eq!(events.iter().find(|e| e.id == ev.id), Some(&ev));
        let mut a = paid(&ev, "vip-3-day", 2);
        a.email = domain::Email::parse("a@example.at").unwrap();
        let mut a2 = paid(&ev, "vip-3-day", 1);
        a2.email = domain::Email::parse("a@example.at").unwrap();
        let mut refused = paid(&ev, "vip-3-day", 9);
        refused.email = domain::Email::parse("b@example.at").unwrap();
        for m in [&a, &a2, &refused] {
            b.repo.persist(m).await.unwrap();
        }
        let totals = b.repo.customer_totals(&ev.id).await.unwrap();
        assert_eq!(totals.len(), 1, "{totals:?}");
        assert_eq!(
            (totals[0].email.as_str(), totals[0].quantity),
            ("a@example.at", 3)
        );
    }

    pub async fn decided_orders_read_back_with_their_tickets(b: Backend) {
        let ev = seeded(&b.repo, 3).await;
        let (sold, refused) = (paid(&ev, "vip-3-day", 2), paid(&ev, "vip-3-day", 2));
        b.repo.persist(&sold).await.unwrap();
        b.repo.persist(&refused).await.unwrap();
        let other = seeded(&b.repo, 3).await;
        b.repo.persist(&paid(&other, "vip-3-day", 1)).await.unwrap();
        let mut got = b.repo.decided_orders(&ev.id).await.unwrap();
        got.sort_by_key(|o| o.status != OrderStatus::Confirmed);
        assert_eq!(
            got.iter().map(|o| o.order_id).collect::<Vec<_>>(),
            vec![sold.order_id, refused.order_id]
        );
        // Each as the single-order read has it.
        for o in &got {
            assert_eq!(Some(o), b.repo.order(o.order_id).await.unwrap().as_ref());
        }
        assert_eq!(
            (
                got[0].status,
                got[0].tickets.len(),
                got[1].status,
                got[1].tickets.len()
            ),
            (OrderStatus::Confirmed, 2, OrderStatus::Rejected, 0)
        );
    }

    pub async fn refunds_owed_are_recorded_once_leased_when_claimed_and_done_once(b: Backend) {
        let owed = |n: i64| OrderCharge {
            order_id: OrderId::new(),
            payment_ref: format!("ref-{}", uuid::Uuid::new_v4()),
            amount_cents: n,
        };
        let (a, d) = (owed(100), owed(200));
        let lease = Duration::from_secs(60);
        // Recorded once per charge, and leased to the caller that asks the provider now.
        let open = b
            .repo
            .settle_charges(&[a.clone(), a.clone()], lease)
            .await
            .unwrap();
        assert_eq!(open, vec![a.clone()]);
        assert_eq!(
            b.repo
                .settle_charges(std::slice::from_ref(&a), lease)
                .await
                .unwrap(),
            vec![a.clone()]
        );
        // One owed without a lease is due at once: a refunder claims it (the shared database may
        // hold others' too), with what was owed, and leases it.
        assert_eq!(
            b.repo
                .settle_charges(std::slice::from_ref(&d), Duration::ZERO)
                .await
                .unwrap(),
            vec![d.clone()]
        );
        let (n, oldest) = b.repo.refunds_outstanding().await.unwrap();
        assert!(n >= 2 && oldest.is_some());
        let mut claimed = vec![];
        let started = Instant::now();
        while !claimed.contains(&d) {
            claimed.extend(b.repo.claim_refunds(100, lease).await.unwrap());
            assert!(started.elapsed() < Duration::from_secs(10), "{claimed:?}");
        }
        assert!(!claimed.contains(&a), "leased when owed");
        let later = b.repo.claim_refunds(1000, lease).await.unwrap();
        assert!(!later.contains(&d), "leased when claimed");
        // Done: no longer owed.
        b.repo.refund_done(&d.payment_ref).await.unwrap();
        b.repo.refund_done(&d.payment_ref).await.unwrap();
        assert_eq!(
            b.repo
                .settle_charges(&[d.clone(), a.clone()], lease)
                .await
                .unwrap(),
            vec![a]
        );
    }

    pub async fn an_unreachable_database_is_retryable(b: Backend) {
        let ev = new_event(5, -1, 600);
        let started = Instant::now();
        let err = b
            .dead
            .persist(&paid(&ev, "vip-3-day", 1))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(b.dead.ping().await.is_err());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "fails within its timeout"
        );
    }

    pub async fn a_batch_with_duplicates_inside_delivered_twice_makes_each_order_once(b: Backend) {
        let ev = seeded(&b.repo, 10).await;
        let (x, y) = (paid(&ev, "vip-3-day", 2), paid(&ev, "vip-3-day", 1));
        let batch = vec![x.clone(), y.clone(), x.clone()];
        let first = b.repo.persist_batch(&batch).await.unwrap();
        let first: Vec<Persisted> = first.into_iter().map(Result::unwrap).collect();
        assert_eq!(first.len(), 3);
        assert_eq!(
            first
                .iter()
                .map(|p| (p.status, p.duplicate))
                .collect::<Vec<_>>(),
            [
                (OrderStatus::Confirmed, false),
                (OrderStatus::Confirmed, false),
                (OrderStatus::Confirmed, true)
            ],
            "the copy inside the message is the first one's duplicate"
        );
        assert_eq!(first[0].tickets.len(), 2);
        assert_eq!(first[0].tickets, first[2].tickets);
        // The same message again: every order read back, nothing sold twice.
        let again = b.repo.persist_batch(&batch).await.unwrap();
        for (a, f) in again.iter().zip(&first) {
            let a = a.as_ref().unwrap();
            assert!(a.duplicate);
            assert_eq!((a.status, &a.tickets), (f.status, &f.tickets));
        }
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!(
            (
                vip.tickets,
                vip.sold,
                vip.confirmed_orders,
                vip.confirmed_quantity
            ),
            (10, 3, 2, 3)
        );
    }

    pub async fn a_batch_larger_than_the_stock_left_confirms_what_fits_first_paid_first(
        b: Backend,
    ) {
        let ev = seeded(&b.repo, 5).await;
        let early = Utc::now() - chrono::Duration::seconds(10);
        // Paid in this order: 3, 3, 1, 2 (listed out of order in the message).
        let mut orders: Vec<OrderMessage> = [3, 3, 1, 2]
            .iter()
            .enumerate()
            .map(|(i, q)| {
                let mut o = paid(&ev, "vip-3-day", *q);
                o.paid_at = early + chrono::Duration::milliseconds(i as i64);
                o
            })
            .collect();
        orders.reverse();
        let out: Vec<Persisted> = b
            .repo
            .persist_batch(&orders)
            .await
            .unwrap()
            .into_iter()
            .map(Result::unwrap)
            .collect();
        // The first 3 fits, the second 3 does not, the 1 does, the 2 does not (1 left).
        let status: Vec<(u32, OrderStatus)> = orders
            .iter()
            .zip(&out)
            .map(|(o, p)| (o.quantity.get(), p.status))
            .rev()
            .collect();
        assert_eq!(
            status,
            [
                (3, OrderStatus::Confirmed),
                (3, OrderStatus::Rejected),
                (1, OrderStatus::Confirmed),
                (2, OrderStatus::Rejected)
            ]
        );
        for (o, p) in orders.iter().zip(&out) {
            let expected = if p.status == OrderStatus::Confirmed {
                o.quantity.get() as usize
            } else {
                0
            };
            assert_eq!(p.tickets.len(), expected);
        }
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!(
            (
                vip.tickets,
                vip.sold,
                vip.confirmed_quantity,
                vip.confirmed_orders,
                vip.rejected_orders
            ),
            (5, 4, 4, 2, 2)
        );
        // The one ticket left is still for sale; then nothing is.
        let last = b.repo.persist(&paid(&ev, "vip-3-day", 1)).await.unwrap();
        assert_eq!(last.status, OrderStatus::Confirmed);
        let none = b.repo.persist(&paid(&ev, "vip-3-day", 1)).await.unwrap();
        assert_eq!(none.status, OrderStatus::Rejected);
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-3-day").await.sold, 5);
    }

    pub async fn a_batch_with_an_order_the_books_refuse_persists_its_neighbours(b: Backend) {
        let ev = seeded(&b.repo, 5).await;
        let good = paid(&ev, "vip-3-day", 1);
        let stray = paid(&ev, "no-such-type", 1);
        let other = paid(&ev, "vip-camping", 2);
        let batch = vec![good.clone(), stray.clone(), other.clone()];
        let out = b.repo.persist_batch(&batch).await.unwrap();
        assert_eq!(out[0].as_ref().unwrap().status, OrderStatus::Confirmed);
        assert!(matches!(&out[1], Err(Refused(_))), "{:?}", out[1]);
        assert_eq!(out[2].as_ref().unwrap().status, OrderStatus::Confirmed);
        assert!(b.repo.order(stray.order_id).await.unwrap().is_none());
        // Delivered again: the neighbours are duplicates, the stray is refused again.
        let again = b.repo.persist_batch(&batch).await.unwrap();
        assert!(again[0].as_ref().unwrap().duplicate && again[2].as_ref().unwrap().duplicate);
        assert!(again[1].is_err());
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-3-day").await.sold, 1);
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-camping").await.sold, 2);
    }

    pub async fn a_delivery_with_another_charge_reads_back_the_charge_the_books_keep(b: Backend) {
        let ev = seeded(&b.repo, 1).await;
        let kept = paid(&ev, "vip-3-day", 1);
        let late = paid(&ev, "vip-3-day", 1);
        for msg in [&kept, &late] {
            let p = persist_until_decided(&b.repo, msg).await;
            assert!(!p.duplicate);
            assert_eq!(
                p.payment_ref, msg.payment_ref,
                "a first delivery keeps its charge"
            );
        }
        assert_eq!(
            persist_until_decided(&b.repo, &late).await.status,
            OrderStatus::Rejected
        );
        for first in [&kept, &late] {
            let again = OrderMessage {
                payment_ref: format!("{}-second-attempt", first.payment_ref),
                ..first.clone()
            };
            let p = persist_until_decided(&b.repo, &again).await;
            assert!(p.duplicate);
            assert_eq!(
                p.payment_ref, first.payment_ref,
                "the books keep the first charge"
            );
        }
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-3-day").await.sold, 1);
    }

    pub async fn a_charge_is_kept_when_it_paid_its_confirmed_order_and_owed_back_otherwise(
        b: Backend,
    ) {
        use store::Verdict::{Kept, Owed, Refunded};
        let ev = seeded(&b.repo, 1).await;
        let kept = paid(&ev, "vip-3-day", 1);
        let rejected = paid(&ev, "vip-3-day", 1);
        for msg in [&kept, &rejected] {
            persist_until_decided(&b.repo, msg).await;
        }
        // Each decided order's charge is in the ledger with the decision, and the rejected
        // order's refund is owed in the transaction that rejected it.
        assert_eq!(verdict(&b.repo, &kept.payment_ref).await, Some(Kept));
        assert_eq!(verdict(&b.repo, &rejected.payment_ref).await, Some(Owed));
        let second = OrderCharge {
            payment_ref: format!("{}-second-attempt", kept.payment_ref),
            ..charge_of(&kept)
        };
        let never_seen = OrderCharge {
            order_id: OrderId::new(),
            payment_ref: format!("ref-{}", uuid::Uuid::new_v4()),
            amount_cents: 100,
        };
        assert_eq!(verdict(&b.repo, &never_seen.payment_ref).await, None);
        // Handed over again (a stale approval of the attempt that paid): kept, nothing owed.
        // Every other charge is owed back: the rejected order's, a second charge of the
        // confirmed one, one for an order the books never saw.
        let owed = [charge_of(&rejected), second.clone(), never_seen.clone()];
        let all: Vec<OrderCharge> = [charge_of(&kept)].into_iter().chain(owed.clone()).collect();
        let lease = Duration::from_secs(60);
        assert_eq!(
            b.repo.settle_charges(&all, lease).await.unwrap(),
            owed.to_vec()
        );
        assert_eq!(
            b.repo.settle_charges(&all, lease).await.unwrap(),
            owed.to_vec(),
            "settling again changes nothing"
        );
        for c in &owed {
            assert_eq!(verdict(&b.repo, &c.payment_ref).await, Some(Owed));
        }
        assert_eq!(verdict(&b.repo, &kept.payment_ref).await, Some(Kept));
        b.repo.refund_done(&second.payment_ref).await.unwrap();
        assert_eq!(verdict(&b.repo, &second.payment_ref).await, Some(Refunded));
        let entries = b
            .repo
            .charges(std::slice::from_ref(&second.payment_ref))
            .await
            .unwrap();
        assert_eq!(
            entries[0].charge, second,
            "the ledger holds what was charged"
        );
        let order = b.repo.order(kept.order_id).await.unwrap().unwrap();
        assert_eq!(
            (order.status, order.payment_ref),
            (OrderStatus::Confirmed, kept.payment_ref.clone())
        );
    }

    pub async fn an_order_paid_with_a_charge_the_books_owe_back_is_rejected_and_takes_nothing(
        b: Backend,
    ) {
        let ev = seeded(&b.repo, 5).await;
        let msg = paid(&ev, "vip-3-day", 2);
        // The charge reaches the books first (buy handed it over as stale, say): owed back.
        let lease = Duration::from_secs(60);
        assert_eq!(
            b.repo
                .settle_charges(&[charge_of(&msg)], lease)
                .await
                .unwrap(),
            vec![charge_of(&msg)]
        );
        // The order it paid arrives later: the charge is owed back (maybe refunded already), so
        // it pays for nothing.
        let p = persist_until_decided(&b.repo, &msg).await;
        assert_eq!((p.status, p.duplicate), (OrderStatus::Rejected, false));
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-3-day").await.sold, 0);
        assert_eq!(
            verdict(&b.repo, &msg.payment_ref).await,
            Some(store::Verdict::Owed)
        );
        // One charge pays one order: a second order paid with the same charge, in one batch,
        // is rejected too, while the first takes its tickets.
        let first = paid(&ev, "vip-3-day", 1);
        let same_charge = OrderMessage {
            order_id: OrderId::new(),
            paid_at: first.paid_at + chrono::Duration::milliseconds(1),
            ..first.clone()
        };
        let out = persist_batch_until_decided(&b.repo, &[same_charge.clone(), first.clone()]).await;
        let statuses: Vec<OrderStatus> = out.iter().map(|o| o.as_ref().unwrap().status).collect();
        assert_eq!(statuses, [OrderStatus::Rejected, OrderStatus::Confirmed]);
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-3-day").await.sold, 1);
    }

    /// A charge handed over while the order it paid is being decided: whichever commits first,
    /// the books end with the order confirmed and the charge kept, or the order rejected and
    /// the charge owed, never tickets on a charge that is refunded.
    pub async fn a_settlement_racing_its_charges_order_never_keeps_and_owes_it(b: Backend) {
        let ev = seeded(&b.repo, 50).await;
        let orders: Vec<OrderMessage> = (0..12).map(|_| paid(&ev, "vip-3-day", 1)).collect();
        let lease = Duration::from_secs(60);
        let tasks: Vec<_> = orders
            .iter()
            .cloned()
            .flat_map(|msg| {
                let (repo, charge) = (b.repo.clone(), charge_of(&msg));
                let settle = tokio::spawn(async move {
                    let started = Instant::now();
                    loop {
                        match repo
                            .settle_charges(std::slice::from_ref(&charge), lease)
                            .await
                        {
                            Err(e)
                                if e.is_retryable()
                                    && started.elapsed() < Duration::from_secs(120) =>
                            {
                                tokio::time::sleep(Duration::from_millis(5)).await
                            }
                            other => break other.map(|_| ()).unwrap(),
                        }
                    }
                });
                let repo = b.repo.clone();
                let persist = tokio::spawn(async move {
                    persist_until_decided(&repo, &msg).await;
                });
                [settle, persist]
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut kept = 0;
        for msg in &orders {
            let order = b.repo.order(msg.order_id).await.unwrap().unwrap();
            let v = verdict(&b.repo, &msg.payment_ref).await.unwrap();
            match order.status {
                OrderStatus::Confirmed => {
                    assert_eq!(v, store::Verdict::Kept, "{msg:?}");
                    kept += 1;
                }
                _ => assert_eq!(v, store::Verdict::Owed, "{msg:?}"),
            }
        }
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-3-day").await.sold, kept);
    }

    pub async fn an_order_not_paid_at_the_catalog_price_is_refused_and_takes_nothing(b: Backend) {
        let ev = seeded(&b.repo, 5).await;
        let good = paid(&ev, "vip-3-day", 2);
        let cheap = OrderMessage {
            order_id: OrderId::new(),
            amount_cents: 1,
            ..good.clone()
        };
        let dear = OrderMessage {
            order_id: OrderId::new(),
            amount_cents: good.amount_cents + 1,
            ..good.clone()
        };
        let out = b
            .repo
            .persist_batch(&[cheap.clone(), good.clone(), dear.clone()])
            .await
            .unwrap();
        for (i, refused) in [(0, &cheap), (2, &dear)] {
            let Err(Refused(why)) = &out[i] else {
                panic!("not refused: {:?}", out[i])
            };
            assert!(why.contains("cents"), "{why}");
            assert!(b.repo.order(refused.order_id).await.unwrap().is_none());
        }
        assert_eq!(out[1].as_ref().unwrap().status, OrderStatus::Confirmed);
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-3-day").await.sold, 2);
    }

    /// A message of an earlier sale of the event (paid before a reset, never persisted then)
    /// takes nothing from this one: rejected, its charge owed back (ADR 57). A clock a little
    /// behind is not an earlier sale.
    pub async fn an_order_paid_before_this_sale_opened_is_rejected_and_its_charge_owed_back(
        b: Backend,
    ) {
        let ev = seeded(&b.repo, 5).await;
        let at = |secs: i64| ev.sale_opens_at + chrono::Duration::seconds(secs);
        let earlier_sale = OrderMessage {
            paid_at: at(-3600),
            ..paid(&ev, "vip-3-day", 2)
        };
        let clock_behind = OrderMessage {
            paid_at: at(-20),
            ..paid(&ev, "vip-3-day", 1)
        };
        let out = b
            .repo
            .persist_batch(&[earlier_sale.clone(), clock_behind.clone()])
            .await
            .unwrap();
        assert_eq!(out[0].as_ref().unwrap().status, OrderStatus::Rejected);
        assert_eq!(out[1].as_ref().unwrap().status, OrderStatus::Confirmed);
        assert_eq!(books_in(&*b.repo, &ev.id, "vip-3-day").await.sold, 1);
        assert_eq!(
            verdict(&b.repo, &earlier_sale.payment_ref).await,
            Some(store::Verdict::Owed)
        );
        // One charge on two orders, the first paid before the opening: neither is confirmed
        // with it (it goes to the first, owed back).
        let early = OrderMessage {
            paid_at: at(-3600),
            ..paid(&ev, "vip-3-day", 1)
        };
        let same_charge = OrderMessage {
            order_id: OrderId::new(),
            paid_at: Utc::now(),
            ..early.clone()
        };
        let out = b
            .repo
            .persist_batch(&[early.clone(), same_charge])
            .await
            .unwrap();
        let statuses: Vec<_> = out.iter().map(|o| o.as_ref().unwrap().status).collect();
        assert_eq!(statuses, [OrderStatus::Rejected, OrderStatus::Rejected]);
        assert_eq!(
            verdict(&b.repo, &early.payment_ref).await,
            Some(store::Verdict::Owed)
        );
    }

    pub async fn a_batch_larger_than_one_transaction_is_persisted_whole(b: Backend) {
        let n = store::MAX_ORDERS_PER_TRANSACTION + 30;
        let ev = seeded(&b.repo, n as u32 - 10).await;
        let orders: Vec<OrderMessage> = (0..n).map(|_| paid(&ev, "vip-3-day", 1)).collect();
        let out = b.repo.persist_batch(&orders).await.unwrap();
        let confirmed = out
            .iter()
            .filter(|o| o.as_ref().unwrap().status == OrderStatus::Confirmed)
            .count();
        assert_eq!(confirmed, n - 10);
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert_eq!(
            (
                vip.tickets,
                vip.sold,
                vip.confirmed_orders,
                vip.rejected_orders
            ),
            (n as i64 - 10, n as i64 - 10, n as i64 - 10, 10)
        );
    }

    pub async fn concurrent_overlapping_batches_never_oversell(b: Backend) {
        let ev = seeded(&b.repo, 30).await;
        let orders: Vec<OrderMessage> =
            (0..40).map(|i| paid(&ev, "vip-3-day", 1 + i % 2)).collect();
        // Four consumers, each with an overlapping slice (as redeliveries and retries make).
        let tasks: Vec<_> = (0..4)
            .map(|k| {
                let repo = b.repo.clone();
                let slice: Vec<OrderMessage> = orders[k * 8..k * 8 + 16].to_vec();
                tokio::spawn(async move { persist_batch_until_decided(&repo, &slice).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let vip = books_in(&*b.repo, &ev.id, "vip-3-day").await;
        assert!(vip.sold <= 30, "{vip:?}");
        assert_eq!(vip.confirmed_quantity, vip.sold);
        assert_eq!(vip.tickets, 30);
        // Every order of the 40 that was delivered is decided exactly once.
        assert_eq!(vip.confirmed_orders + vip.rejected_orders, 40);
    }

    pub async fn a_saved_mark_only_grows_within_its_epoch_and_goes_with_its_event(b: Backend) {
        let ev = seeded(&b.repo, 5).await;
        let mark = |writer: &str, epoch: &str, mark| store::GateMark {
            writer: writer.into(),
            epoch: epoch.into(),
            mark,
        };
        let saved = || async {
            let mut m = b.repo.marks(&ev.id).await.unwrap();
            m.sort_by(|a, b| a.writer.cmp(&b.writer));
            m
        };
        assert!(saved().await.is_empty());
        b.repo.save_mark(&ev.id, &mark("a", "e1", 5)).await.unwrap();
        b.repo.save_mark(&ev.id, &mark("b", "e1", 2)).await.unwrap();
        // A late save of a lower mark (an older tick) does not lower it.
        b.repo.save_mark(&ev.id, &mark("a", "e1", 3)).await.unwrap();
        assert_eq!(saved().await, [mark("a", "e1", 5), mark("b", "e1", 2)]);
        b.repo.save_mark(&ev.id, &mark("a", "e1", 9)).await.unwrap();
        // A new epoch (a seed, a restore) starts the count again.
        b.repo.save_mark(&ev.id, &mark("b", "e2", 1)).await.unwrap();
        assert_eq!(saved().await, [mark("a", "e1", 9), mark("b", "e2", 1)]);
        b.repo.reset(&ev.id).await.unwrap();
        assert!(saved().await.is_empty(), "the marks go with the event");
    }
}

/// The books refuse to sell beyond capacity by themselves, whatever the code in front of them
/// decides: PostgreSQL's CHECK on the counter (Spanner's is `TicketShardsRemaining >= 0`).
#[tokio::test]
async fn postgres_itself_refuses_a_counter_beyond_capacity() {
    let env = TestEnv::get();
    let repo: Repo = Arc::new(env.repo());
    let ev = seeded(&repo, 3).await;
    let (client, conn) = tokio_postgres::connect(&env.database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let err = client
        .execute(
            "UPDATE ticket_types SET sold = capacity + 1 WHERE event_id = $1 AND id = 'vip-3-day'",
            &[&ev.id.as_str()],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::CHECK_VIOLATION),
        "{err}"
    );
    assert_eq!(books_in(&*repo, &ev.id, "vip-3-day").await.sold, 0);
}
