//! The invariant check: `available + held + confirming + sold == capacity` per ticket type in
//! Redis, and the database agreeing (never beyond capacity, sold tickets == confirmed
//! quantities, Redis' sold == the database's sold at a quiet point, and there every order the
//! books decided reads the same status in Redis: what its fan is shown).

use std::fmt::Write as _;

use domain::EventId;
use gate::{Gate, ReadModel, Stock};
use store::{Inventory, OrderRepository};

/// One ticket type's books on both sides.
#[derive(Debug, Clone)]
pub struct Line {
    pub ticket_type: String,
    pub redis: Stock,
    pub db: Option<Inventory>,
}

/// The audit's result.
#[derive(Debug, Clone)]
pub struct Report {
    pub lines: Vec<Line>,
    /// Broken invariants, in words.
    pub violations: Vec<String>,
    /// True when no order was in flight (nothing `confirming`), so Redis and DB must agree.
    pub quiet: bool,
    /// At a quiet point: the orders the books decided, each compared with Redis.
    pub orders_compared: usize,
}

impl Report {
    /// The same figures for machines (scripts/loadtest reads them).
    pub fn to_json(&self) -> serde_json::Value {
        let lines: Vec<_> = self
            .lines
            .iter()
            .map(|l| {
                serde_json::json!({
                    "ticket_type": l.ticket_type,
                    "capacity": l.redis.capacity,
                    "available": l.redis.available,
                    "held": l.redis.held,
                    "confirming": l.redis.confirming,
                    "sold": l.redis.sold,
                    "db": l.db.as_ref().map(|d| serde_json::json!({
                        "capacity": d.capacity,
                        "tickets": d.tickets,
                        "sold": d.sold,
                        "confirmed_quantity": d.confirmed_quantity,
                        "confirmed_orders": d.confirmed_orders,
                        "rejected_orders": d.rejected_orders,
                    })),
                })
            })
            .collect();
        serde_json::json!({
            "ok": self.violations.is_empty(),
            "quiet": self.quiet,
            "orders_compared": self.orders_compared,
            "violations": self.violations,
            "ticket_types": lines,
        })
    }

    /// A table for humans.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<18} {:>9} {:>9} {:>7} {:>10} {:>9} | {:>9} {:>9} {:>9}",
            "ticket type",
            "capacity",
            "available",
            "held",
            "confirming",
            "sold",
            "db sold",
            "db orders",
            "rejected"
        );
        for l in &self.lines {
            let (sold, orders, rejected) = l.db.as_ref().map_or((-1, -1, -1), |d| {
                (d.sold, d.confirmed_orders, d.rejected_orders)
            });
            let _ = writeln!(
                s,
                "{:<18} {:>9} {:>9} {:>7} {:>10} {:>9} | {:>9} {:>9} {:>9}",
                l.ticket_type,
                l.redis.capacity,
                l.redis.available,
                l.redis.held,
                l.redis.confirming,
                l.redis.sold,
                sold,
                orders,
                rejected
            );
        }
        if self.violations.is_empty() {
            let _ = writeln!(
                s,
                "OK: invariant holds{}",
                if self.quiet {
                    " (quiet point: Redis and database agree, order by order)"
                } else {
                    " (orders in flight: Redis vs database not compared)"
                }
            );
        } else {
            for v in &self.violations {
                let _ = writeln!(s, "VIOLATION: {v}");
            }
        }
        s
    }
}

/// Audits one event.
pub async fn audit(
    gate: &Gate,
    repo: &dyn OrderRepository,
    event: &EventId,
) -> anyhow::Result<Report> {
    let snap = gate
        .refresh(event)
        .await?
        .ok_or_else(|| anyhow::anyhow!("event {event} is not seeded in Redis"))?;
    let inventory = repo.inventory(event).await?;
    let quiet = snap.stock.values().all(|s| s.confirming == 0);
    let mut violations = vec![];
    let mut lines = vec![];
    for (tt, stock) in &snap.stock {
        if stock.delta() != 0 {
            violations.push(format!(
                "{tt}: Redis available+held+confirming+sold-capacity = {}",
                stock.delta()
            ));
        }
        if stock.available < 0 || stock.held < 0 || stock.confirming < 0 || stock.sold < 0 {
            violations.push(format!("{tt}: negative Redis counter {stock:?}"));
        }
        let db = inventory
            .iter()
            .find(|i| i.ticket_type.as_str() == tt)
            .cloned();
        match &db {
            None => violations.push(format!("{tt}: missing in the database")),
            Some(d) => {
                if d.tickets != d.capacity {
                    violations.push(format!(
                        "{tt}: {} tickets (sold and left) for capacity {}",
                        d.tickets, d.capacity
                    ));
                }
                if d.sold > d.capacity {
                    violations.push(format!("{tt}: OVERSOLD {} of {}", d.sold, d.capacity));
                }
                if d.sold != d.confirmed_quantity {
                    violations.push(format!(
                        "{tt}: {} tickets sold but confirmed orders hold {}",
                        d.sold, d.confirmed_quantity
                    ));
                }
                if d.capacity != stock.capacity {
                    violations.push(format!(
                        "{tt}: capacity {} in Redis, {} in the database",
                        stock.capacity, d.capacity
                    ));
                }
                if quiet && d.sold != stock.sold {
                    violations.push(format!(
                        "{tt}: sold {} in Redis, {} in the database",
                        stock.sold, d.sold
                    ));
                }
            }
        }
        lines.push(Line {
            ticket_type: tt.clone(),
            redis: *stock,
            db,
        });
    }
    let orders_compared = if quiet {
        compare_orders(gate, repo, event, &mut violations).await?
    } else {
        0
    };
    Ok(Report {
        lines,
        violations,
        quiet,
        orders_compared,
    })
}

/// Compares every order the books decided for `event` with Redis' copy, which its fan's status
/// page reads; a difference is a violation (a few named). Returns how many were compared.
async fn compare_orders(
    gate: &Gate,
    repo: &dyn OrderRepository,
    event: &EventId,
    violations: &mut Vec<String>,
) -> anyhow::Result<usize> {
    use futures::StreamExt as _;
    let decided = repo.decided_orders(event).await?;
    let views: Vec<_> = futures::stream::iter(&decided)
        .map(|o| gate.order(event, o.order_id))
        .buffered(32)
        .collect()
        .await;
    let mut differ = vec![];
    for (o, view) in decided.iter().zip(views) {
        let redis = view?.map(|v| v.status);
        if redis != Some(o.status) {
            differ.push(format!(
                "{} ({} in the books, {} in Redis)",
                o.order_id,
                o.status.as_str(),
                redis.map_or("missing", |s| s.as_str())
            ));
        }
    }
    if !differ.is_empty() {
        violations.push(format!(
            "{} of {} orders read otherwise in Redis than in the books: {}",
            differ.len(),
            decided.len(),
            differ[..differ.len().min(5)].join(", ")
        ));
    }
    Ok(decided.len())
}
