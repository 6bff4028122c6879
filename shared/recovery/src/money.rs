//! The money audit: the provider's list of charges reconciled with the books' ledger (ADR 53).
//! Every charge the provider made for an event's orders is either the one kept charge of a
//! confirmed order, or refunded, or owed back by the books (with its age); the sum kept equals
//! the sum of the confirmed orders' prices. A charge the books never heard of is a violation
//! once it is older than the grace (a payment in flight reaches the books within minutes).

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::{EventId, OrderCharge, OrderStatus};
use payments::ChargeList;
use store::{OrderRepository, Verdict};

/// A charge the books owe back and the provider has not refunded yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owed {
    pub payment_ref: String,
    pub amount_cents: i64,
    pub age: Duration,
}

/// The money audit's result.
#[derive(Debug, Clone, Default)]
pub struct MoneyReport {
    /// Charges at the provider for the event's orders.
    pub charges: usize,
    /// The kept charges: one per confirmed order.
    pub kept: usize,
    pub kept_cents: i64,
    /// Confirmed orders in the books and what they cost.
    pub confirmed_orders: usize,
    pub confirmed_cents: i64,
    /// Charges refunded at the provider.
    pub refunded: usize,
    pub refunded_cents: i64,
    /// Owed back and not refunded yet (the refunder retries them).
    pub owed: Vec<Owed>,
    /// Younger than the grace and not yet in the books (their orders are on their way).
    pub in_flight: usize,
    /// Older than the grace and unknown to the books (each also a violation): what
    /// `ops audit --settle-unknown` hands to the books, which owe them back.
    pub unknown: Vec<OrderCharge>,
    /// Broken money invariants, in words.
    pub violations: Vec<String>,
}

impl MoneyReport {
    /// The same figures for machines.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ok": self.violations.is_empty(),
            "charges": self.charges,
            "kept": self.kept,
            "kept_cents": self.kept_cents,
            "confirmed_orders": self.confirmed_orders,
            "confirmed_cents": self.confirmed_cents,
            "refunded": self.refunded,
            "refunded_cents": self.refunded_cents,
            "owed": self.owed.len(),
            "owed_oldest_seconds": self.owed.iter().map(|o| o.age.as_secs()).max(),
            "in_flight": self.in_flight,
            "violations": self.violations,
        })
    }

    /// A few lines for humans.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "money: {} charges at the provider: {} kept ({} cents) for {} confirmed orders ({} cents), {} refunded ({} cents), {} owed, {} in flight",
            self.charges,
            self.kept,
            self.kept_cents,
            self.confirmed_orders,
            self.confirmed_cents,
            self.refunded,
            self.refunded_cents,
            self.owed.len(),
            self.in_flight
        );
        for o in &self.owed {
            let _ = writeln!(
                s,
                "OWED: {} ({} cents), owed for {} s",
                o.payment_ref,
                o.amount_cents,
                o.age.as_secs()
            );
        }
        if self.violations.is_empty() {
            let _ = writeln!(s, "OK: every charge kept once or refunded");
        }
        for v in &self.violations {
            let _ = writeln!(s, "VIOLATION: {v}");
        }
        s
    }
}

/// Reconciles the provider's charges made since `event`'s sale opened with the books, at `now`;
/// a charge unknown to the books is a violation once older than `grace`.
pub async fn reconcile(
    provider: &dyn ChargeList,
    repo: &dyn OrderRepository,
    event: &EventId,
    now: DateTime<Utc>,
    grace: Duration,
) -> anyhow::Result<MoneyReport> {
    let ev = repo
        .events()
        .await?
        .into_iter()
        .find(|e| &e.id == event)
        .ok_or_else(|| anyhow::anyhow!("event {event} is not in the books"))?;
    // Nothing is charged before the sale opens (a skewed clock aside).
    let since = ev.sale_opens_at - chrono::Duration::minutes(5);
    let listed = provider.charges_created(since, now).await?;
    let refs: Vec<String> = listed.iter().map(|c| c.payment_ref.clone()).collect();
    let ledger: HashMap<String, store::LedgerEntry> = repo
        .charges(&refs)
        .await?
        .into_iter()
        .map(|e| (e.charge.payment_ref.clone(), e))
        .collect();
    let orders: HashMap<domain::OrderId, store::StoredOrder> = repo
        .decided_orders(event)
        .await?
        .into_iter()
        .map(|o| (o.order_id, o))
        .collect();
    let age = |t: DateTime<Utc>| (now - t).to_std().unwrap_or_default();
    let mut r = MoneyReport::default();
    let mut kept_refs = HashSet::new();
    for c in listed {
        let entry = ledger.get(&c.payment_ref);
        let owner = entry.map_or(c.order_id, |e| e.charge.order_id);
        // Another event's order is that event's audit; a charge for an order the books never
        // decided (stale, or lost on its way) is this one's: its order id names no other event.
        if !orders.contains_key(&owner) && repo.order(owner).await?.is_some() {
            continue;
        }
        r.charges += 1;
        let what = format!(
            "charge {} of order {owner} ({} cents)",
            c.payment_ref, c.amount_cents
        );
        match (entry.map(|e| e.verdict), c.refunded_at) {
            (None, None) if age(c.created_at) < grace => r.in_flight += 1,
            (None, None) => {
                r.violations.push(format!(
                    "{what}, made {} s ago, is unknown to the books",
                    age(c.created_at).as_secs()
                ));
                r.unknown.push(OrderCharge {
                    order_id: c.order_id,
                    payment_ref: c.payment_ref,
                    amount_cents: c.amount_cents,
                });
            }
            (None, Some(_)) => r
                .violations
                .push(format!("{what} was refunded without the books owing it")),
            (Some(Verdict::Kept), None) => {
                r.kept += 1;
                r.kept_cents += c.amount_cents;
                kept_refs.insert(c.payment_ref);
            }
            (Some(Verdict::Kept), Some(_)) => r.violations.push(format!(
                "{what} pays a confirmed order but was refunded: tickets unpaid"
            )),
            (Some(Verdict::Owed | Verdict::Refunded), Some(_)) => {
                r.refunded += 1;
                r.refunded_cents += c.amount_cents;
            }
            (Some(Verdict::Owed), None) => r.owed.push(Owed {
                amount_cents: c.amount_cents,
                age: age(c.created_at),
                payment_ref: c.payment_ref,
            }),
            (Some(Verdict::Refunded), None) => r.violations.push(format!(
                "{what}: the books record a refund the provider never made"
            )),
            (Some(Verdict::Unsettled), None) if age(c.created_at) < grace => r.in_flight += 1,
            (Some(Verdict::Unsettled), None) => r
                .violations
                .push(format!("{what} is not kept and no refund of it is owed")),
            (Some(Verdict::Unsettled), Some(_)) => r
                .violations
                .push(format!("{what} was refunded without the books owing it")),
            (Some(Verdict::KeptAndOwed), _) => r.violations.push(format!(
                "{what} pays a confirmed order and is owed back too"
            )),
        }
    }
    for o in orders
        .values()
        .filter(|o| o.status == OrderStatus::Confirmed)
    {
        r.confirmed_orders += 1;
        r.confirmed_cents += o.amount_cents;
        if !kept_refs.contains(&o.payment_ref) {
            r.violations.push(format!(
                "confirmed order {} has no kept charge at the provider ({} listed nothing for it, or it was refunded)",
                o.order_id, o.payment_ref
            ));
        }
    }
    if r.violations.is_empty() && r.kept_cents != r.confirmed_cents {
        r.violations.push(format!(
            "{} cents kept for confirmed orders of {} cents",
            r.kept_cents, r.confirmed_cents
        ));
    }
    Ok(r)
}

/// The charges the provider made between `grace + window` and `grace` before `now` that the
/// books never heard of and the provider has not refunded: the money of a payment whose record
/// Redis lost (it went back in time between the charge and the order's publication). Handed to
/// the books, they are owed back (ADR 53); an order arriving later with one is rejected.
/// `grace` must outlast every way a charge reaches the books on its own: a fan's retry, the
/// outbox relay's resumption of a payment (buy gives up after 5 minutes), a republication.
pub async fn unknown_charges(
    provider: &dyn ChargeList,
    repo: &dyn OrderRepository,
    now: DateTime<Utc>,
    grace: Duration,
    window: Duration,
) -> anyhow::Result<Vec<OrderCharge>> {
    let until = now - chrono::TimeDelta::from_std(grace)?;
    let since = until - chrono::TimeDelta::from_std(window)?;
    let listed = provider.charges_created(since, until).await?;
    let refs: Vec<String> = listed.iter().map(|c| c.payment_ref.clone()).collect();
    let known: HashSet<String> = repo
        .charges(&refs)
        .await?
        .into_iter()
        .map(|e| e.charge.payment_ref)
        .collect();
    Ok(listed
        .into_iter()
        .filter(|c| c.refunded_at.is_none() && !known.contains(&c.payment_ref))
        .map(|c| OrderCharge {
            order_id: c.order_id,
            payment_ref: c.payment_ref,
            amount_cents: c.amount_cents,
        })
        .collect())
}
