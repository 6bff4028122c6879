//! The durable store behind the sale, as a trait the functions and `ops` use, so Postgres
//! and Spanner are interchangeable (one conformance suite runs against both). Only portable
//! types cross it: UUIDs, strings, integers and UTC timestamps.
//!
//! The trait, its types and errors are all a caller that only needs the books' shape (a test's
//! double, `recovery`) compiles; the engines and their configuration are the `engines` feature.

#[cfg(feature = "engines")]
mod config;
#[cfg(feature = "engines")]
pub mod postgres;
#[cfg(feature = "engines")]
pub mod spanner;

#[cfg(feature = "engines")]
pub use config::{Backend, DatabaseArgs};
pub use domain::books::{CustomerTotal, GateMark, Persisted, StoredOrder};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use domain::{Event, EventId, OrderCharge, OrderId, OrderMessage, TicketTypeId};

/// Why the repository could not do what was asked. The database's own error is the source
/// of `Unavailable` and `Contended`, and is shown in their message too, so a log line of the
/// error alone keeps the cause (as `GateError::Redis`, ADR 46). A boxed error rather than
/// `anyhow`: contention is routine under load, and `anyhow` would capture a backtrace for
/// each one wherever `RUST_BACKTRACE` is set.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The database is unreachable or timed out: try again later.
    #[error("database unavailable: {}", Chain(&**.0))]
    Unavailable(#[source] Cause),
    /// Lost a race with a concurrent transaction that may still commit or roll back: retry.
    #[error("contended: {}", Chain(&**.0))]
    Contended(#[source] Cause),
    /// The request can never succeed (e.g. an unknown ticket type).
    #[error("refused: {0}")]
    Permanent(String),
    /// Anything else.
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// The database's error behind a [`RepoError`].
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// An error with its sources, `a: b: c` (tokio-postgres' "error connecting to server" says why
/// only in its source).
struct Chain<'a>(&'a (dyn std::error::Error + Send + Sync + 'static));

impl std::fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {e}")?;
            next = e.source();
        }
        Ok(())
    }
}

impl RepoError {
    /// Whether trying again later may succeed: everything but a refusal of the data. The one
    /// rule for retrying (consume-order answers 503 and the message comes again) and for
    /// isolating an order at fault (consume-order halves a batch only on a refusal).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Permanent(_))
    }
}

/// The database's configuration is wrong (a malformed URL, path or CA): retrying cannot fix
/// it, so a function stops at start with this one line, and nothing is asked of the database.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The books refuse this order for good (its ticket type is not in the database, say): no
/// retry of the same order can succeed. The rest of its batch is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refused(pub String);

/// What the books decided for one order of a batch.
pub type Outcome = Result<Persisted, Refused>;

/// Orders at most this many per Spanner transaction: a commit holds at most 80,000 mutations
/// and an order of 20 tickets makes about 150 (its row, its tickets and their index entries).
pub const MAX_ORDERS_PER_TRANSACTION: usize = 250;

/// Each order once, in first-seen order, and for every input position the index of its
/// order in that list: a message may carry the same order twice, and both copies get the
/// one outcome.
pub fn distinct(orders: &[OrderMessage]) -> (Vec<&OrderMessage>, Vec<usize>) {
    let mut seen = std::collections::HashMap::with_capacity(orders.len());
    let mut unique = Vec::with_capacity(orders.len());
    let positions = orders
        .iter()
        .map(|o| {
            *seen.entry(o.order_id).or_insert_with(|| {
                unique.push(o);
                unique.len() - 1
            })
        })
        .collect();
    (unique, positions)
}

/// The outcomes of [`distinct`] orders back in input order; a repeated order's later copies
/// read as duplicates of the first.
pub fn spread(unique: Vec<Outcome>, positions: &[usize]) -> Vec<Outcome> {
    let mut seen = vec![false; unique.len()];
    positions
        .iter()
        .map(|&u| {
            let again = std::mem::replace(&mut seen[u], true);
            unique[u].clone().map(|p| Persisted {
                duplicate: p.duplicate || again,
                ..p
            })
        })
        .collect()
}

/// What the books know of a ticket type while they decide a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForSale {
    /// Tickets left.
    pub left: i64,
    /// The catalog's price of one ticket, EUR cents.
    pub price_cents: i64,
    /// When this sale of the event opened: an order paid before it (less [`CLOCK_SKEW`]) was
    /// paid in an earlier sale of it, before a reset (ADR 57).
    pub opens_at: DateTime<Utc>,
}

/// How far buy's clock (an order's `paid_at`) may be behind the one the sale's opening is
/// judged by (Redis'): an order paid earlier than this before the opening is of an earlier sale.
pub const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(60);

/// The order a batch is decided in: first paid first served (the id breaks a tie).
fn paid_first(o: &OrderMessage) -> (DateTime<Utc>, uuid::Uuid) {
    (o.paid_at, o.order_id.0)
}

/// Decides a batch against what is left, first paid first served: each new order in `paid_at`
/// order is confirmed if its quantity still fits (a smaller later order may fit where a larger
/// one did not, as when they came one at a time). `types` maps a ticket type to what is left
/// and its price. Refused: an order whose ticket type is missing there, and one whose amount is
/// not the catalog's price for its quantity (buy charges exactly that, so only a message buy
/// did not write, or a bug, differs: the books confirm nothing sold below its price).
/// Rejected without taking stock: an order paid with a charge the books already hold (in
/// `ledger`, or used by an order of the batch paid before it): a charge pays one order once,
/// and one the books already settled may have been refunded (ADR 53); and an order paid
/// before this sale of its event opened (a message of an earlier sale, before a reset: ADR
/// 57). Returns per order (in input order) whether it is confirmed, or the refusal.
pub fn allocate<K: Eq + std::hash::Hash>(
    orders: &[&OrderMessage],
    key: impl Fn(&OrderMessage) -> K,
    types: &mut std::collections::HashMap<K, ForSale>,
    ledger: &std::collections::HashSet<String>,
) -> Vec<Result<bool, Refused>> {
    let mut by_payment: Vec<usize> = (0..orders.len()).collect();
    by_payment.sort_by_key(|&i| paid_first(orders[i]));
    let mut decided = vec![Ok(false); orders.len()];
    let mut used = std::collections::HashSet::new();
    let skew = chrono::TimeDelta::from_std(CLOCK_SKEW).unwrap_or_default();
    for i in by_payment {
        let o = orders[i];
        let n = i64::from(o.quantity.get());
        let known_charge = ledger.contains(&o.payment_ref);
        decided[i] = match types.get_mut(&key(o)) {
            None => Err(Refused(format!(
                "ticket type {} of event {} is not in the database",
                o.ticket_type, o.event
            ))),
            Some(t) if t.price_cents.checked_mul(n) != Some(o.amount_cents) => {
                Err(Refused(format!(
                    "{} cents paid for {n} × {} at {} cents each",
                    o.amount_cents, o.ticket_type, t.price_cents
                )))
            }
            Some(_) if known_charge || !used.insert(o.payment_ref.as_str()) => Ok(false),
            // After the charge is taken as used: an order of the batch paid later with the same
            // charge must not be confirmed with it (the charge goes to this one, owed back).
            Some(t) if o.paid_at < t.opens_at - skew => Ok(false),
            Some(t) if t.left >= n => {
                t.left -= n;
                Ok(true)
            }
            Some(_) => Ok(false),
        };
    }
    decided
}

/// The charges a batch writes to the ledger, each once: those of the orders [`allocate`]
/// decided that the ledger does not hold yet, each with whether its order is confirmed. The
/// batch owes back, in the same transaction, the charge of each one rejected (ADR 53), so a
/// decided part of a message is never left without its refund. A charge two orders of the
/// batch carry goes to the one paid first, as in [`allocate`] (the other is rejected there).
pub fn new_charges<'a>(
    orders: &[&'a OrderMessage],
    decided: &[Result<bool, Refused>],
    ledger: &std::collections::HashSet<String>,
) -> Vec<(&'a OrderMessage, bool)> {
    let mut by_payment: Vec<(&&OrderMessage, &Result<bool, Refused>)> =
        orders.iter().zip(decided).collect();
    by_payment.sort_by_key(|(o, _)| paid_first(o));
    let mut seen = std::collections::HashSet::new();
    by_payment
        .into_iter()
        .filter_map(|(o, d)| match d {
            Ok(confirmed)
                if !ledger.contains(&o.payment_ref) && seen.insert(o.payment_ref.as_str()) =>
            {
                Some((*o, *confirmed))
            }
            _ => None,
        })
        .collect()
}

/// When a refund the books owe as they reject an order is first due to the refunder: the
/// consumer that decided it asks the provider at once, and the refunder only if that failed.
pub const FIRST_REFUND_DUE: std::time::Duration = std::time::Duration::from_secs(10);

/// One charge in the books' ledger and what they decided for it (ADR 53).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub charge: OrderCharge,
    pub verdict: Verdict,
}

/// What the books decided for a charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// It paid its order, confirmed.
    Kept,
    /// It is owed back and the provider has not confirmed the refund yet.
    Owed,
    /// It was owed back and the provider confirmed the refund.
    Refunded,
    /// Not kept, and no refund recorded: nobody owes it back yet (a charge whose order
    /// `reset` deleted, until the charge is settled again).
    Unsettled,
    /// Kept, and owed back too: the one state the books must never reach.
    KeptAndOwed,
}

impl Verdict {
    /// The verdict of a charge the books keep or not, with its refund's state (`None`: none
    /// recorded; `Some(true)`: refunded).
    pub fn of(kept: bool, refund: Option<bool>) -> Self {
        match (kept, refund) {
            (true, None) => Self::Kept,
            (true, Some(_)) => Self::KeptAndOwed,
            (false, Some(true)) => Self::Refunded,
            (false, Some(false)) => Self::Owed,
            (false, None) => Self::Unsettled,
        }
    }
}

/// The database's books for one ticket type (for the audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub ticket_type: TicketTypeId,
    /// Capacity as configured.
    pub capacity: i64,
    /// Tickets that exist: those sold plus what the capacity counters still hold (equal to
    /// `capacity` unless a counter lost or made a ticket).
    pub tickets: i64,
    /// Ticket rows of orders (tickets sold).
    pub sold: i64,
    /// Sum of quantities of confirmed orders (must equal `sold`).
    pub confirmed_quantity: i64,
    /// Number of confirmed orders.
    pub confirmed_orders: i64,
    /// Number of rejected orders.
    pub rejected_orders: i64,
}

/// Whether seeding created or found the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seeded {
    Created,
    Unchanged,
}

/// The durable store.
#[async_trait]
pub trait OrderRepository: Send + Sync {
    /// Is the database answering?
    async fn ping(&self) -> Result<(), RepoError>;
    /// Creates the event, its ticket types and one row per ticket; a no-op when identical.
    async fn seed(&self, event: &Event) -> Result<Seeded, RepoError>;
    /// Deletes the event and everything under it (tests, `ops seed --reset`).
    async fn reset(&self, event: &EventId) -> Result<(), RepoError>;
    /// Persists a batch of paid orders with their tickets in one transaction (Spanner: one per
    /// [`MAX_ORDERS_PER_TRANSACTION`]). Idempotent per order id (a repeated order, in the batch
    /// or from an earlier delivery, reads back as `duplicate`); an order that no longer fits
    /// is `Rejected`, never sold beyond capacity. Each new order's charge enters the ledger in
    /// the same transaction; an order paid with a charge the ledger already holds is
    /// `Rejected` (see [`allocate`]). One outcome per input order, in order. An `Err` means
    /// nothing of the batch was decided (of a batch larger than
    /// [`OrderRepository::atomic_batch`]: nothing of one part, the parts before it decided):
    /// try it all again.
    async fn persist_batch(&self, orders: &[OrderMessage]) -> Result<Vec<Outcome>, RepoError>;
    /// The most orders one [`OrderRepository::persist_batch`] decides all or nothing (one
    /// transaction); a larger batch is decided in parts of this size.
    fn atomic_batch(&self) -> usize {
        usize::MAX
    }
    /// [`OrderRepository::persist_batch`] of one order; a refusal is `RepoError::Permanent`.
    async fn persist(&self, msg: &OrderMessage) -> Result<Persisted, RepoError> {
        let outcome = self
            .persist_batch(std::slice::from_ref(msg))
            .await?
            .pop()
            .ok_or_else(|| RepoError::Other(anyhow::anyhow!("no outcome for the order")))?;
        outcome.map_err(|Refused(why)| RepoError::Permanent(why))
    }
    /// Reads one order.
    async fn order(&self, id: OrderId) -> Result<Option<StoredOrder>, RepoError>;
    /// The books per ticket type.
    async fn inventory(&self, event: &EventId) -> Result<Vec<Inventory>, RepoError>;
    /// Every event in the books, exactly as seeded (the catalog `seed` was given): what a
    /// gate that lost its state is rebuilt from (`recovery`).
    async fn events(&self) -> Result<Vec<Event>, RepoError>;
    /// Confirmed quantity per (ticket type, e-mail) of one event, for the per-customer limit
    /// after a gate rebuild. Rejected orders do not count.
    async fn customer_totals(&self, event: &EventId) -> Result<Vec<CustomerTotal>, RepoError>;
    /// Every order of one event the books decided, with its tickets: the fans' read model
    /// a gate rebuild writes back (`recovery`).
    async fn decided_orders(&self, event: &EventId) -> Result<Vec<StoredOrder>, RepoError>;
    /// Settles charges by the books' one rule (ADR 53): the charge that paid a confirmed order
    /// (the order the ledger records it for, confirmed with it) is kept; every other charge is
    /// owed back. Each charge enters the ledger (once); a refund owed is recorded once per
    /// charge (one already recorded stays as it is), a new one leased for `lease` as if just
    /// claimed (its caller asks the provider now). Serialised with [`persist_batch`] per
    /// charge: a charge is never both kept and owed. Returns the charges owed back and not yet
    /// refunded, each once.
    ///
    /// [`persist_batch`]: OrderRepository::persist_batch
    async fn settle_charges(
        &self,
        charges: &[OrderCharge],
        lease: std::time::Duration,
    ) -> Result<Vec<OrderCharge>, RepoError>;
    /// What the books say of each of these charges the ledger holds (those it does not hold
    /// are left out), in any order: what reconciling with the provider's list of charges
    /// reads.
    async fn charges(&self, payment_refs: &[String]) -> Result<Vec<LedgerEntry>, RepoError>;
    /// Takes up to `limit` refunds that are due: each is then not due again for
    /// [`refund_lease`] of its attempts so far, so one refunder at a time asks the provider and
    /// one that fails is asked again later, less often each time.
    async fn claim_refunds(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<OrderCharge>, RepoError>;
    /// The provider confirmed the refund of this charge.
    async fn refund_done(&self, payment_ref: &str) -> Result<(), RepoError>;
    /// Refunds owed and not yet done, and the age of the oldest.
    async fn refunds_outstanding(&self) -> Result<(i64, Option<DateTime<Utc>>), RepoError>;
    /// Keeps a process's mark for `event` (ADR 56): raised, never lowered, within one epoch; a
    /// mark of another epoch replaces it.
    async fn save_mark(&self, event: &EventId, mark: &GateMark) -> Result<(), RepoError>;
    /// Every process's saved mark for `event`.
    async fn marks(&self, event: &EventId) -> Result<Vec<GateMark>, RepoError>;
}

/// How long a claimed refund waits before it is due again: `base` doubled per earlier
/// attempt, at most ten minutes.
pub fn refund_lease(base: std::time::Duration, attempts: i64) -> std::time::Duration {
    let max = std::time::Duration::from_secs(600);
    let factor = 1u32 << attempts.clamp(0, 16);
    base.saturating_mul(factor).min(max)
}

/// A ticket code fans can read out at the gate: `FRQ-XXXX-XXXX-XXXX` from 60 random bits.
pub fn ticket_code() -> String {
    const ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ"; // no 0/O, 1/I
    let bits = uuid::Uuid::new_v4().as_u128();
    let chars: Vec<u8> = (0..12)
        .map(|i| ALPHABET[((bits >> (5 * i)) & 31) as usize])
        .collect();
    let s = String::from_utf8(chars).expect("ascii");
    format!("FRQ-{}-{}-{}", &s[0..4], &s[4..8], &s[8..12])
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unavailable_database_says_why_in_its_message_and_its_source() {
        #[derive(Debug, thiserror::Error)]
        #[error("error connecting to server")]
        struct Connect(#[source] std::io::Error);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = super::RepoError::Unavailable(Box::new(Connect(refused)));
        assert_eq!(
            e.to_string(),
            "database unavailable: error connecting to server: refused"
        );
        let source = std::error::Error::source(&e).expect("a source");
        assert_eq!(source.to_string(), "error connecting to server");
    }

    #[test]
    fn a_refunds_lease_doubles_per_attempt_up_to_ten_minutes() {
        let base = std::time::Duration::from_secs(10);
        let secs = |a| super::refund_lease(base, a).as_secs();
        assert_eq!((secs(0), secs(1), secs(2), secs(5)), (10, 20, 40, 320));
        assert_eq!((secs(6), secs(60), secs(-1)), (600, 600, 10));
    }

    #[test]
    fn ticket_codes_look_right_and_differ() {
        let a = super::ticket_code();
        let b = super::ticket_code();
        assert_eq!(a.len(), 18);
        assert!(a.starts_with("FRQ-"));
        assert_ne!(a, b);
    }
}
