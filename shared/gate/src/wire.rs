//! The gate's wire format on the Rust side: the arguments the scripts read and how their replies
//! and an order's hash are read back. (The other side is in `lua/`.) Every reply is parsed here.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use redis::Value;

use domain::books::Persisted;
use domain::{
    Email, Event, EventId, OrderId, OrderMessage, OrderStatus, PaymentAttempt, Quantity,
    TicketTypeId,
};

use crate::{
    Approval, Approved, EventSnapshot, GateError, OrderView, PayBegin, ReserveOutcome, Stock,
};

/// A batch of reservations' reply: one line per reservation, in order, or the event's order-id
/// salt when the batch was sent with another (nothing was written then; see `batch`).
pub(crate) enum BatchReply {
    Lines(Vec<String>),
    Salt(String),
}

/// Reads `reserve.lua`'s reply for a batch of `n` reservations.
pub(crate) fn batch_reply(reply: Value, n: usize) -> Result<BatchReply, GateError> {
    let bad = |what: String| GateError::Protocol(format!("reserve: {what}"));
    let text = match reply {
        Value::BulkString(b) => {
            String::from_utf8(b).map_err(|e| GateError::malformed("reserve", e))?
        }
        other => return Err(bad(format!("{other:?}"))),
    };
    if let Some(theirs) = text.strip_prefix("salt\t") {
        return Ok(BatchReply::Salt(theirs.to_owned()));
    }
    let lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    if lines.len() != n {
        return Err(bad(format!("{} replies for {n} reservations", lines.len())));
    }
    Ok(BatchReply::Lines(lines))
}

/// One reservation's line of that reply (words separated by tabs).
pub(crate) fn reserve_outcome(order_id: OrderId, line: &str) -> Result<ReserveOutcome, GateError> {
    let w: Vec<&str> = line.split('\t').collect();
    Ok(match w.first().copied() {
        Some("reserved") => ReserveOutcome::Reserved {
            order_id,
            hold_expires_at: ms_to_time(num(&w, 1)?),
        },
        Some("replay") => ReserveOutcome::Replayed {
            order_id,
            hold_expires_at: ms_to_time(num(&w, 1)?),
        },
        Some("idem_conflict") => ReserveOutcome::IdempotencyConflict,
        Some("too_early") => ReserveOutcome::TooEarly {
            opens_in_ms: num(&w, 1)?,
        },
        Some("unknown_event") => ReserveOutcome::UnknownEvent,
        Some("unknown_ticket_type") => ReserveOutcome::UnknownTicketType,
        Some("sold_out") => ReserveOutcome::SoldOut,
        Some("not_enough") => ReserveOutcome::NotEnough {
            available: num(&w, 1)?,
        },
        Some("limit") => ReserveOutcome::Limit {
            limit: num(&w, 1)?,
            remaining: num(&w, 2)?,
        },
        Some("paused") => ReserveOutcome::Paused,
        Some("rate_limited") => ReserveOutcome::RateLimited {
            retry_after: Duration::from_millis(num(&w, 1)?),
        },
        Some("client_holds") => ReserveOutcome::ClientHolds {
            retry_after: Duration::from_millis(num(&w, 1)?),
            window: Duration::from_millis(num(&w, 2)?),
        },
        Some("not_admitted") => ReserveOutcome::NotAdmitted,
        _ => return Err(GateError::Protocol(format!("reserve: {w:?}"))),
    })
}

/// An order's view from its hash (None: no such order). `r`: the hold's deadline, the amount,
/// then ticket type, quantity and e-mail one per line; no `status` yet means reserved (see
/// prelude.lua).
pub(crate) fn order_view(
    event: &EventId,
    order: OrderId,
    h: &std::collections::HashMap<String, String>,
) -> Result<Option<OrderView>, GateError> {
    let Some(r) = h.get("r") else {
        return Ok(None);
    };
    let mut parts = r.splitn(3, '\t');
    let (hold, amount) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let fp = parts.next().unwrap_or("");
    let status = h.get("status").map_or("reserved", String::as_str);
    let mut what = fp.splitn(3, '\n');
    let (tt, qty, email) = (what.next(), what.next(), what.next());
    Ok(Some(OrderView {
        order_id: order,
        event: event.clone(),
        status: status_of(status)?,
        ticket_type: TicketTypeId::parse(tt.unwrap_or_default())
            .map_err(|e| GateError::malformed("order", e))?,
        quantity: Quantity::parse(qty.and_then(|q| q.parse().ok()).unwrap_or(0))
            .map_err(|e| GateError::malformed("order", e))?,
        email: Email::try_from(email.unwrap_or_default().to_owned())
            .map_err(|e| GateError::malformed("order", e))?,
        amount_cents: amount.parse().unwrap_or(0),
        hold_expires_at: hold.parse::<i64>().ok().map(ms_to_time),
        payment_ref: h.get("payment_ref").cloned(),
        paid_at: h
            .get("paid_at")
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc)),
        tickets: h
            .get("tickets")
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_default(),
    }))
}

pub(crate) fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub(crate) fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

pub(crate) fn words(v: Value) -> Result<Vec<String>, GateError> {
    match v {
        Value::Array(items) => Ok(items.iter().map(|i| text(i).unwrap_or_default()).collect()),
        other => Err(GateError::Protocol(format!("{other:?}"))),
    }
}

pub(crate) fn num<T: std::str::FromStr, S: AsRef<str> + std::fmt::Debug>(
    w: &[S],
    i: usize,
) -> Result<T, GateError> {
    w.get(i)
        .and_then(|s| s.as_ref().parse().ok())
        .ok_or_else(|| GateError::Protocol(format!("field {i} of {w:?}")))
}

fn attempt(w: &[String], i: usize) -> Result<PaymentAttempt, GateError> {
    PaymentAttempt::parse(w.get(i).map_or("", String::as_str))
        .map_err(|e| GateError::malformed("pay_begin", e))
}

pub(crate) fn status_of(w: &str) -> Result<OrderStatus, GateError> {
    OrderStatus::parse(w).ok_or_else(|| GateError::Protocol(format!("status {w}")))
}

/// The catalog as `seed.lua` and `restore.lua` read it: opens_at, the catalog JSON, the ticket
/// type ids, then `header`, then per ticket type its id, capacity, limit, hold (ms), price and
/// `extra` (restore: the database's sold).
pub(crate) fn catalog_args(
    event: &Event,
    header: &[String],
    extra: impl Fn(&domain::TicketType) -> Option<String>,
) -> Result<Vec<String>, serde_json::Error> {
    let ids: Vec<&str> = event.ticket_types.iter().map(|t| t.id.as_str()).collect();
    let mut args = vec![
        event.sale_opens_at.timestamp_millis().to_string(),
        serde_json::to_string(event)?,
        ids.join(","),
    ];
    args.extend_from_slice(header);
    for t in &event.ticket_types {
        args.extend([
            t.id.to_string(),
            t.capacity.to_string(),
            t.per_customer_limit.to_string(),
            (u64::from(t.hold_seconds) * 1000).to_string(),
            t.price_cents.to_string(),
        ]);
        args.extend(extra(t));
    }
    Ok(args)
}

/// `pay_begin.lua`'s reply.
pub(crate) fn pay_begin(reply: Value) -> Result<PayBegin, GateError> {
    let w = words(reply)?;
    Ok(match w.first().map(String::as_str) {
        Some("charge") => PayBegin::Charge {
            amount_cents: num(&w, 1)?,
            token: w.get(2).cloned().unwrap_or_default(),
            attempt: attempt(&w, 3)?,
        },
        Some("stuck") => PayBegin::Stuck {
            attempt: attempt(&w, 1)?,
        },
        Some("paid") => PayBegin::AlreadyPaid {
            published: w.get(1).is_some_and(|p| p == "1"),
        },
        Some("not_found") => PayBegin::NotFound,
        Some(s) => PayBegin::State(status_of(s)?),
        None => return Err(GateError::Protocol("pay_begin: empty".into())),
    })
}

/// `pay_abort.lua`'s reply: the order's status if this attempt's abort changed it.
pub(crate) fn pay_abort(reply: Value) -> Result<Option<OrderStatus>, GateError> {
    let w = words(reply)?;
    Ok(match w.first().map(String::as_str) {
        Some("expired") => Some(OrderStatus::Expired),
        Some("reserved") => Some(OrderStatus::Reserved),
        _ => None,
    })
}

/// `pay_approved.lua`'s reply.
pub(crate) fn approval(reply: Value) -> Result<Approval, GateError> {
    let w = words(reply)?;
    if w.first().map(String::as_str) != Some("approved") {
        return Ok(Approval::Stale(
            w.get(1).and_then(|s| OrderStatus::parse(s)),
        ));
    }
    let paid_at = DateTime::parse_from_rfc3339(w.get(2).map_or("", String::as_str))
        .map_err(|e| GateError::malformed("pay_approved", e))?
        .with_timezone(&Utc);
    Ok(Approval::Recorded(Approved {
        payment_ref: w.get(1).cloned().unwrap_or_default(),
        paid_at,
        ticket_type: TicketTypeId::parse(w.get(3).map_or("", String::as_str))
            .map_err(|e| GateError::malformed("pay_approved", e))?,
        quantity: Quantity::parse(num(&w, 4)?)
            .map_err(|e| GateError::malformed("pay_approved", e))?,
        email: Email::try_from(w.get(5).cloned().unwrap_or_default())
            .map_err(|e| GateError::malformed("pay_approved", e))?,
        amount_cents: num(&w, 6)?,
    }))
}

/// `cancel.lua`'s reply: the status afterwards and whether this call released the hold.
pub(crate) fn cancel(reply: Value) -> Result<Option<(OrderStatus, bool)>, GateError> {
    let w = words(reply)?;
    Ok(match (w.first().map(String::as_str), w.get(1)) {
        (Some("not_found"), _) => None,
        (Some("released"), Some(s)) => Some((status_of(s)?, true)),
        (Some("unchanged"), Some(s)) => Some((status_of(s)?, false)),
        _ => return Err(GateError::Protocol(format!("cancel: {w:?}"))),
    })
}

/// `finalize.lua`'s arguments: the writer, the mark it knows (or `repair`) and the epoch it
/// knows it in, then eight per order.
pub(crate) fn finalize_args(
    writer: &str,
    known: &str,
    epoch: &str,
    orders: &[(&OrderMessage, &Persisted)],
) -> Result<Vec<String>, GateError> {
    let mut args = Vec::with_capacity(3 + orders.len() * 8);
    args.extend([writer.to_owned(), known.to_owned(), epoch.to_owned()]);
    for (msg, persisted) in orders {
        let tickets = serde_json::to_string(&persisted.tickets)
            .map_err(|e| GateError::malformed("finalize", e))?;
        args.extend([
            msg.order_id.to_string(),
            persisted.status.as_str().to_owned(),
            tickets,
            msg.ticket_type.to_string(),
            msg.quantity.get().to_string(),
            msg.email.as_str().to_owned(),
            if persisted.duplicate { "0" } else { "1" }.to_owned(),
            msg.amount_cents.to_string(),
        ]);
    }
    Ok(args)
}

/// What `finalize.lua` answered.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Finalized {
    /// One word per order (`applied`, `missing`, `behind`, `already`), the writer's mark and
    /// the event's epoch.
    Done(Vec<String>, u64, String),
    /// The writer's mark is below what it was answered before: Redis went back in time to it.
    WentBack(u64),
    /// A repair found the event absent or being restored.
    Restoring,
}

/// `finalize.lua`'s reply.
pub(crate) fn finalize_reply(reply: Value, n: usize) -> Result<Finalized, GateError> {
    let mut w = words(reply)?;
    match w.first().map(String::as_str) {
        Some("went_back") => return Ok(Finalized::WentBack(num(&w, 1)?)),
        Some("restoring") => return Ok(Finalized::Restoring),
        _ => {}
    }
    if w.len() != n + 2 {
        return Err(GateError::Protocol(format!(
            "finalize: {} answers for {n} orders",
            w.len()
        )));
    }
    let epoch = w.pop().unwrap_or_default();
    let mark = num(&w, n)?;
    w.truncate(n);
    Ok(Finalized::Done(w, mark, epoch))
}

/// A reply listing order ids (the outbox's).
pub(crate) fn order_ids(reply: Value) -> Result<Vec<OrderId>, GateError> {
    Ok(words(reply)?
        .iter()
        .filter_map(|s| OrderId::parse(s).ok())
        .collect())
}

/// `refresh.lua`'s reply (nil: the event is not in the gate): the opening, the catalog, Redis'
/// clock, the pause flag, then six words per ticket type.
pub(crate) fn snapshot(reply: Value) -> Result<Option<EventSnapshot>, GateError> {
    if matches!(reply, Value::Nil) {
        return Ok(None);
    }
    let w = words(reply)?;
    let catalog: Event = serde_json::from_str(w.get(1).map(String::as_str).unwrap_or(""))
        .map_err(|e| GateError::Protocol(format!("catalog: {e}")))?;
    let mut stock = BTreeMap::new();
    let mut i = 4;
    while i + 5 < w.len() {
        stock.insert(
            w[i].clone(),
            Stock {
                capacity: num(&w, i + 1)?,
                available: num(&w, i + 2)?,
                held: num(&w, i + 3)?,
                confirming: num(&w, i + 4)?,
                sold: num(&w, i + 5)?,
            },
        );
        i += 6;
    }
    Ok(Some(EventSnapshot {
        catalog,
        read_at: ms_to_time(num(&w, 2)?),
        stock,
        paused: w.get(3).is_some_and(|p| p == "1"),
    }))
}
