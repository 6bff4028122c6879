//! Rebuilding the gate after Redis restarted empty (a restart or failover without
//! persistence): the database's books plus the paid orders still in flight in Pub/Sub are the
//! truth, and this module brings the gate back to them without overselling. (A partial loss,
//! some keys of an event kept and others not, is not detected: the event counts as live.)
//!
//! The procedure (docs/ARCHITECTURE.md, "Redis restarted empty"):
//! 1. The event is written back **paused** from the books: `sold` per ticket type, the
//!    per-customer counters from confirmed orders, nothing held (holds and payments in
//!    progress lived only in Redis; their fans are told to start again).
//! 2. While paused, reservations answer 503 + Retry-After; paid orders still in flight keep
//!    arriving through Pub/Sub, the consumer persists them (the database refuses to oversell)
//!    and each pass rewrites the stock from the books.
//! 3. When the books have not moved for `quiet` (the in-flight orders have drained), the last
//!    pass reopens the sale. A late redelivery after that is still counted once (finalize).
//!
//! [`restore_event`] is one run of it (`ops gate-restore`); [`watch`] runs it by itself in
//! consume-order when an event the database knows goes missing from Redis.

pub mod audit;
pub mod money;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use domain::{Event, EventId, TicketTypeId};
use gate::{Books, Gate, Presence, Restore};
use store::OrderRepository;
use store::{CustomerTotal, Inventory};

/// How a restore waits for the books to settle.
#[derive(Debug, Clone, Copy)]
pub struct RestoreOptions {
    /// Reopen once the books have not changed for this long.
    pub quiet: Duration,
    /// Time between passes.
    pub poll: Duration,
    /// Reopen after this long even if orders keep arriving (the database still refuses to
    /// oversell; a fan may then be refunded instead of refused up front).
    pub max_wait: Duration,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            quiet: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            max_wait: Duration::from_secs(600),
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestoreReport {
    /// The gate already held the event live: nothing written.
    AlreadyLive,
    /// Rebuilt and reopened.
    Resumed {
        /// Passes written.
        passes: u32,
        /// Tickets sold per the books when it reopened.
        sold: i64,
        /// Reopened at `max_wait` while orders were still arriving.
        forced: bool,
    },
}

/// Rebuilds `event` in the gate from the books and reopens it once they settle.
pub async fn restore_event(
    gate: &Gate,
    repo: &dyn OrderRepository,
    event: &Event,
    opts: RestoreOptions,
) -> anyhow::Result<RestoreReport> {
    let started = Instant::now();
    let mut last: Option<i64> = None;
    let mut settled_since = started;
    let mut passes = 0;
    loop {
        let inventory = repo.inventory(&event.id).await?;
        let mut sold = sold_of(&inventory);
        let total: i64 = sold.values().sum();
        if last != Some(total) {
            last = Some(total);
            settled_since = Instant::now();
        }
        let quiet = settled_since.elapsed() >= opts.quiet;
        let forced = !quiet && started.elapsed() >= opts.max_wait;
        let resume = quiet || forced;
        // The orders on the first pass and again on the one that reopens, each time with the
        // stock counted from those very orders: every order the reopened stock counts is then
        // in Redis (a redelivery of it finds it, ADR 56), and one persisted after this read is
        // neither written nor counted (its finalize counts it). Passes between only rewrite the
        // stock. The per-customer counters once (one key per buyer: a big write).
        let (orders, customers) = if passes == 0 || resume {
            let orders = repo.decided_orders(&event.id).await?;
            sold = sold_by(&orders, &sold);
            let customers = if passes == 0 {
                by_mailbox(repo.customer_totals(&event.id).await?)
            } else {
                vec![]
            };
            (orders, customers)
        } else {
            (vec![], vec![])
        };
        let books = (passes == 0 || resume).then_some(Books {
            orders: &orders,
            customers: &customers,
        });
        passes += 1;
        match gate.restore(event, &sold, books, resume).await? {
            Restore::Live => return Ok(RestoreReport::AlreadyLive),
            Restore::Resumed => {
                metrics::counter!("gate_restores_total").increment(1);
                if forced {
                    tracing::warn!(event = %event.id, sold = total, "gate restore: reopened at the time limit while orders were still arriving");
                }
                return Ok(RestoreReport::Resumed {
                    passes,
                    sold: total,
                    forced,
                });
            }
            Restore::Restoring => {
                if passes == 1 {
                    tracing::warn!(event = %event.id, sold = total, "gate restore: event rebuilt from the database, paused until in-flight orders settle");
                }
            }
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// Tickets sold per ticket type (those of `types`) as `orders` count them: their confirmed
/// quantities.
fn sold_by(orders: &[store::StoredOrder], types: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    let mut sold: BTreeMap<String, i64> = types.keys().map(|t| (t.clone(), 0)).collect();
    for o in orders
        .iter()
        .filter(|o| o.status == domain::OrderStatus::Confirmed)
    {
        *sold.entry(o.ticket_type.to_string()).or_default() += i64::from(o.quantity);
    }
    sold
}

/// The books' customer totals counted per mailbox, as the gate keys them (ADR 38): orders
/// stored before addresses were read as mailboxes may spell one differently.
fn by_mailbox(totals: Vec<CustomerTotal>) -> Vec<CustomerTotal> {
    let mut sum: BTreeMap<(TicketTypeId, String), i64> = BTreeMap::new();
    for t in totals {
        let email = domain::Email::parse(&t.email)
            .map(|e| e.as_str().to_owned())
            .unwrap_or(t.email);
        *sum.entry((t.ticket_type, email)).or_default() += t.quantity;
    }
    sum.into_iter()
        .map(|((ticket_type, email), quantity)| CustomerTotal {
            ticket_type,
            email,
            quantity,
        })
        .collect()
}

/// How the watcher checks the gate against the books.
#[derive(Debug, Clone, Copy)]
pub struct WatchOptions {
    /// Time between checks that every event is in the gate.
    pub every: Duration,
    /// An event whose Redis counts fewer tickets sold or being paid than the books sold this
    /// long ago is behind them (Redis rolled back) and is rebuilt. A sale mirrors the books within
    /// milliseconds; a message whose mirroring failed is redelivered within about a minute
    /// (the subscription's backoff), and would heal its own order.
    pub behind_after: Duration,
    /// How a rebuild waits for the books to settle.
    pub restore: RestoreOptions,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(5),
            behind_after: Duration::from_secs(90),
            restore: RestoreOptions::default(),
        }
    }
}

/// The books' `sold` per ticket type as read over time, per event: what Redis must have
/// mirrored `behind_after` later.
#[derive(Debug, Default)]
pub struct BooksSeen(HashMap<EventId, VecDeque<(Instant, SoldPerType)>>);

/// Tickets sold per ticket type id.
type SoldPerType = BTreeMap<String, i64>;

/// What the books sold per ticket type.
fn sold_of(inventory: &[Inventory]) -> SoldPerType {
    inventory
        .iter()
        .map(|i| (i.ticket_type.to_string(), i.sold))
        .collect()
}

impl BooksSeen {
    /// Records the books' `sold` read at `now` and says whether Redis' `sold` (read at `now`
    /// too) is below what the books held at least `behind_after` ago for some ticket type.
    pub fn behind(
        &mut self,
        event: &EventId,
        now: Instant,
        books: SoldPerType,
        redis: &SoldPerType,
        behind_after: Duration,
    ) -> bool {
        let seen = self.0.entry(event.clone()).or_default();
        // The newest reading old enough to judge by; older ones are of no more use.
        let old_enough = |at: &Instant| now.saturating_duration_since(*at) >= behind_after;
        while seen.len() > 1 && seen.get(1).is_some_and(|(at, _)| old_enough(at)) {
            seen.pop_front();
        }
        let behind = seen.front().is_some_and(|(at, then)| {
            old_enough(at)
                && then
                    .iter()
                    .any(|(tt, sold)| redis.get(tt).copied().unwrap_or(0) < *sold)
        });
        seen.push_back((now, books));
        behind
    }

    /// Whether the books of `event` were last read at least `spacing` ago (or never).
    pub fn due(&self, event: &EventId, now: Instant, spacing: Duration) -> bool {
        self.0
            .get(event)
            .and_then(|seen| seen.back())
            .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= spacing)
    }

    /// Forgets an event (rebuilt: its history no longer applies).
    pub fn forget(&mut self, event: &EventId) {
        self.0.remove(event);
    }
}

/// Checks every `every` that each event in the books is in the gate and not behind it. An
/// event missing on two checks in a row (so not one that `ops seed` is writing right now) is
/// restored; one whose Redis counts fewer sales than the books did `behind_after` ago (rolled
/// back to an older snapshot) is paused and rebuilt the same way. Runs until the task is
/// dropped. Errors are logged once per outage.
pub async fn watch(gate: Gate, repo: Arc<dyn OrderRepository>, opts: WatchOptions) {
    let running: Arc<Mutex<HashSet<EventId>>> = Arc::default();
    let mut missing_before: HashSet<EventId> = HashSet::new();
    let mut books_seen = BooksSeen::default();
    let mut failing = false;
    let mut tick = tokio::time::interval(opts.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut save = tokio::time::interval(MARKS_SAVED_EVERY);
    save.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut saved = HashMap::new();
    loop {
        tokio::select! {
            _ = save.tick() => {
                save_marks(&gate, repo.as_ref(), &mut saved).await;
                continue;
            }
            _ = tick.tick() => {}
        }
        let events = match repo.events().await {
            Ok(e) => e,
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "gate watch: cannot read the events from the database");
                }
                failing = true;
                continue;
            }
        };
        let mut missing_now = HashSet::new();
        for event in events {
            let presence = gate.presence(&event.id).await;
            if presence.is_ok() {
                failing = false;
            }
            match presence {
                // Redis lost writes of this process, or of any whose mark the books saved (ADR
                // 56), while no finalize came to find it: repaired live, order by order.
                Ok(Presence::Live) if went_back(&gate, repo.as_ref(), &event.id).await => {
                    books_seen.forget(&event.id);
                    if let Err(e) = repair_and_raise(&gate, repo.as_ref(), &event.id).await {
                        tracing::warn!(event = %event.id, error = %e, "gate watch: cannot repair the event yet; will try again");
                    }
                }
                Ok(Presence::Live) => {
                    match behind(&gate, repo.as_ref(), &event, &mut books_seen, opts).await {
                        Ok(false) => {}
                        Ok(true) => {
                            books_seen.forget(&event.id);
                            metrics::counter!("gate_behind_total").increment(1);
                            tracing::error!(event = %event.id, "gate watch: Redis counts fewer tickets sold or being paid than the books sold; it was rolled back. Pausing the event to rebuild it from the database");
                            match gate.rebuild(&event.id).await {
                                Ok(true) => {
                                    if running.lock().expect("lock").insert(event.id.clone()) {
                                        spawn_restore(&gate, &repo, event, opts.restore, &running);
                                    }
                                }
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(event = %event.id, error = %e, "gate watch: cannot pause the event to rebuild it; will try again")
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(event = %event.id, error = %e, "gate watch: cannot compare the gate with the books")
                        }
                    }
                }
                // A restore left unfinished (its process stopped): carry it on.
                Ok(Presence::Restoring) => {
                    books_seen.forget(&event.id);
                    if running.lock().expect("lock").insert(event.id.clone()) {
                        spawn_restore(&gate, &repo, event, opts.restore, &running);
                    }
                }
                Ok(Presence::Absent) => {
                    books_seen.forget(&event.id);
                    let again = missing_before.contains(&event.id);
                    missing_now.insert(event.id.clone());
                    if again && running.lock().expect("lock").insert(event.id.clone()) {
                        spawn_restore(&gate, &repo, event, opts.restore, &running);
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "gate watch: Redis unavailable");
                    }
                    failing = true;
                    missing_now.clear();
                    break;
                }
            }
        }
        missing_before = missing_now;
    }
}

/// How often a process's marks are saved in the books (ADR 56): a rollback that takes only
/// writes of a process gone since is found if they were saved, so this is short.
pub const MARKS_SAVED_EVERY: Duration = Duration::from_secs(1);

/// Saves this process's marks that changed since `saved` (what was saved last) in the books.
async fn save_marks(
    gate: &Gate,
    repo: &dyn OrderRepository,
    saved: &mut HashMap<EventId, store::GateMark>,
) {
    for (event, mark) in gate.own_marks() {
        if saved.get(&event) == Some(&mark) {
            continue;
        }
        match repo.save_mark(&event, &mark).await {
            Ok(()) => {
                saved.insert(event, mark);
            }
            Err(e) => {
                tracing::debug!(event = %event, error = %e, "gate watch: cannot save this process's mark yet");
            }
        }
    }
}

/// Whether Redis went back in time for a live `event`: below this process's own mark, or below
/// a mark the books saved for any process. Unknown (Redis or the books unreachable): not yet.
async fn went_back(gate: &Gate, repo: &dyn OrderRepository, event: &EventId) -> bool {
    // Without the books' marks, this process's own still count.
    let saved = repo.marks(event).await.unwrap_or_default();
    gate.went_back_below(event, &saved).await.unwrap_or(false)
}

/// [`repair`], then the marks the books saved raised in Redis (the writes they count are
/// mirrored again).
pub async fn repair_and_raise(
    gate: &dyn gate::PaymentFlow,
    repo: &dyn OrderRepository,
    event: &EventId,
) -> anyhow::Result<bool> {
    // Read first: a mark saved after the repair's read of the books may count writes it did
    // not mirror.
    let saved = repo.marks(event).await?;
    if !repair(gate, repo, event).await? {
        return Ok(false);
    }
    gate.raise_marks(event, &saved).await?;
    Ok(true)
}

/// Brings an event's gate up to the books after Redis went back in time (ADR 56): every order
/// the books decided is mirrored in Redis from wherever Redis left it, live, without a pause.
/// False when the event is absent or being restored (the restore mirrors the books itself).
pub async fn repair(
    gate: &dyn gate::PaymentFlow,
    repo: &dyn OrderRepository,
    event: &EventId,
) -> anyhow::Result<bool> {
    let decided = repo.decided_orders(event).await?;
    let mut pairs = Vec::with_capacity(decided.len());
    for o in decided {
        let msg = domain::OrderMessage {
            order_id: o.order_id,
            event: o.event,
            ticket_type: o.ticket_type,
            quantity: domain::Quantity::parse(i64::from(o.quantity))?,
            email: domain::Email::try_from(o.email)?,
            amount_cents: o.amount_cents,
            payment_ref: o.payment_ref.clone(),
            paid_at: o.persisted_at,
            trace: None,
        };
        // Not a duplicate: an order Redis lost altogether lost its hold with it, and is counted.
        let persisted = domain::books::Persisted {
            status: o.status,
            tickets: o.tickets,
            duplicate: false,
            payment_ref: o.payment_ref,
        };
        pairs.push((msg, persisted));
    }
    let pairs: Vec<_> = pairs.iter().map(|(m, p)| (m, p)).collect();
    Ok(gate.repair(event, &pairs).await?)
}

/// Whether a live event's Redis is behind the books (see [`BooksSeen::behind`]).
async fn behind(
    gate: &Gate,
    repo: &dyn OrderRepository,
    event: &Event,
    seen: &mut BooksSeen,
    opts: WatchOptions,
) -> anyhow::Result<bool> {
    // A few readings per `behind_after` are enough (the books' read counts every ticket).
    if !seen.due(&event.id, Instant::now(), opts.behind_after / 6) {
        return Ok(false);
    }
    // Redis first: a sale the books make between the two reads can only make Redis look
    // behind the reading taken now, which is judged `behind_after` later. A paid order whose
    // finalize is late (Redis trouble for consume-order, a dead-lettered message) is still
    // `confirming` there and counts: a late mirror is not a rollback, and curing it as one
    // (a new salt, every hold ended, a pause) would hurt a healthy sale.
    let redis = gate.sold_or_paying(event).await?;
    let books = sold_of(&repo.inventory(&event.id).await?);
    Ok(seen.behind(&event.id, Instant::now(), books, &redis, opts.behind_after))
}

fn spawn_restore(
    gate: &Gate,
    repo: &Arc<dyn OrderRepository>,
    event: Event,
    opts: RestoreOptions,
    running: &Arc<Mutex<HashSet<EventId>>>,
) {
    let (gate, repo, running) = (gate.clone(), repo.clone(), running.clone());
    tokio::spawn(async move {
        tracing::warn!(event = %event.id, "gate watch: the event is missing from Redis; restoring it from the database");
        match restore_event(&gate, repo.as_ref(), &event, opts).await {
            Ok(report) => {
                tracing::warn!(event = %event.id, ?report, "gate watch: restore finished")
            }
            Err(e) => {
                tracing::error!(event = %event.id, error = %e, "gate watch: restore failed; will try again")
            }
        }
        running.lock().expect("lock").remove(&event.id);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sold(n: i64) -> BTreeMap<String, i64> {
        BTreeMap::from([("vip".to_owned(), n)])
    }

    #[test]
    fn redis_is_behind_only_when_it_lacks_what_the_books_held_long_enough_ago() {
        let ev = EventId::parse("frequency-2027").unwrap();
        let lag = Duration::from_secs(90);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut seen = BooksSeen::default();
        // A busy sale: the books run ahead of Redis by the sales of the last moment.
        assert!(!seen.behind(&ev, at(0), sold(10), &sold(8), lag));
        assert!(!seen.behind(&ev, at(60), sold(50), &sold(45), lag));
        // 90 s on, Redis has everything the books held at 0.
        assert!(!seen.behind(&ev, at(90), sold(80), &sold(70), lag));
        // At 150 s it lacks some of what the books held at 60 (rolled back to 30).
        assert!(seen.behind(&ev, at(150), sold(90), &sold(30), lag));
        // A rebuilt event starts over: nothing old enough to judge by.
        seen.forget(&ev);
        assert!(!seen.behind(&ev, at(151), sold(90), &sold(0), lag));
        assert!(seen.due(&ev, at(166), Duration::from_secs(15)));
        assert!(!seen.due(&ev, at(160), Duration::from_secs(15)));
    }
}
