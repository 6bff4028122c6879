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

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{Event, EventId};
use crate::gate::{Gate, Presence, Restore};
use crate::repo::OrderRepository;

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
        // The per-customer counters once (one key per buyer: a big write); later passes leave
        // them to `finalize`, which counts each order persisted after this read.
        let customers = if passes == 0 {
            repo.customer_totals(&event.id).await?
        } else {
            vec![]
        };
        let sold: BTreeMap<String, i64> = inventory
            .iter()
            .map(|i| (i.ticket_type.to_string(), i.sold))
            .collect();
        let total: i64 = sold.values().sum();
        if last != Some(total) {
            last = Some(total);
            settled_since = Instant::now();
        }
        let quiet = settled_since.elapsed() >= opts.quiet;
        let forced = !quiet && started.elapsed() >= opts.max_wait;
        let resume = quiet || forced;
        passes += 1;
        match gate.restore(event, &sold, &customers, resume).await? {
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

/// Checks every `every` that each event in the books is in the gate; an event missing on two
/// checks in a row (so not one that `ops seed` is writing right now) is restored. Runs until
/// the task is dropped. Errors are logged once per outage.
pub async fn watch(
    gate: Gate,
    repo: Arc<dyn OrderRepository>,
    every: Duration,
    opts: RestoreOptions,
) {
    let running: Arc<Mutex<HashSet<EventId>>> = Arc::default();
    let mut missing_before: HashSet<EventId> = HashSet::new();
    let mut failing = false;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
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
                Ok(Presence::Live) => {}
                // A restore left unfinished (its process stopped): carry it on.
                Ok(Presence::Restoring) => {
                    if running.lock().expect("lock").insert(event.id.clone()) {
                        spawn_restore(&gate, &repo, event, opts, &running);
                    }
                }
                Ok(Presence::Absent) => {
                    let again = missing_before.contains(&event.id);
                    missing_now.insert(event.id.clone());
                    if again && running.lock().expect("lock").insert(event.id.clone()) {
                        spawn_restore(&gate, &repo, event, opts, &running);
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
