//! Reservations that arrive together go to Redis together: one `reserve.lua` call decides a
//! batch of them, one after the other, atomically (ADR 29).
//!
//! At the on-sale spike thousands of reservations a second meet one Redis thread. A script
//! call's fixed cost (parsing, the call into Lua, the event's and ticket types' reads) is most
//! of a single reservation's cost, so sharing it is what lets one Redis keep up; buy likewise
//! sends one command instead of one per fan. Nothing waits for a batch to fill: a batch is
//! whatever queued while the previous calls were in flight, so at low load each reservation
//! goes alone and at high load batches grow by themselves.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{GateError, meta_key, timed, words};
use crate::domain::EventId;

/// Most reservations one call decides: bounds how long Redis is busy with one call (well
/// under a millisecond).
pub(super) const MAX_BATCH: usize = 64;

/// Calls in flight at once; more reservations than that wait for the next call. A few, so a
/// Redis that is far away (a cloud round trip) is still kept busy.
const IN_FLIGHT: usize = 4;

/// One reservation waiting for its call.
pub(super) struct Pending {
    pub event: EventId,
    /// The per-e-mail limit as the script reads it: interval in ms (0: none) and burst.
    pub limit: (u64, u32),
    /// ticket_type, quantity, email, idempotency_key.
    pub args: [String; 4],
    /// When it was queued: one that waited longer than the gate's timeout is answered busy
    /// instead of being sent (its fan has been waiting long enough).
    pub since: std::time::Instant,
    pub reply: oneshot::Sender<Result<Vec<String>, GateError>>,
}

/// Starts the task that sends the queued reservations; it ends when every sender is dropped.
pub(super) fn spawn(
    conn: ConnectionManager,
    script: Script,
    timeout: Duration,
) -> mpsc::Sender<Pending> {
    // Room for more reservations than one instance takes at once (Cloud Run: at most 1,000
    // concurrent requests), so it fills only when calls stall.
    let (tx, mut rx) = mpsc::channel::<Pending>(MAX_BATCH * IN_FLIGHT * 4);
    let script = Arc::new(script);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        let mut queued = Vec::with_capacity(MAX_BATCH);
        loop {
            // Waiting for a free slot first is what lets a batch grow while calls are busy.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            if rx.recv_many(&mut queued, MAX_BATCH).await == 0 {
                return;
            }
            // A caller that gave up (its request was dropped) needs no decision.
            let (fresh, stale): (Vec<_>, Vec<_>) = std::mem::take(&mut queued)
                .into_iter()
                .filter(|p| !p.reply.is_closed())
                .partition(|p| p.since.elapsed() <= timeout);
            for p in stale {
                let _ = p
                    .reply
                    .send(Err(GateError::Unavailable("queued too long".into())));
            }
            let mut batches = group(fresh);
            let Some(last) = batches.pop() else {
                continue;
            };
            for batch in batches {
                let Ok(extra) = slots.clone().acquire_owned().await else {
                    return;
                };
                tokio::spawn(send(conn.clone(), script.clone(), timeout, batch, extra));
            }
            tokio::spawn(send(conn.clone(), script.clone(), timeout, last, slot));
        }
    });
    tx
}

/// Splits by event and limit (one script call serves one event's slot under one limit),
/// keeping arrival order within each.
fn group(queued: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut batches: Vec<Vec<Pending>> = Vec::new();
    for p in queued {
        match batches
            .iter_mut()
            .find(|b| b[0].event == p.event && b[0].limit == p.limit)
        {
            Some(b) => b.push(p),
            None => batches.push(vec![p]),
        }
    }
    batches
}

/// One call for one batch; every reservation in it gets its own reply, or the call's error.
async fn send(
    mut conn: ConnectionManager,
    script: Arc<Script>,
    timeout: Duration,
    batch: Vec<Pending>,
    _slot: tokio::sync::OwnedSemaphorePermit,
) {
    let mut inv = script.key(meta_key(&batch[0].event));
    // The salt is kept only by an event's first reservation (see reserve.lua).
    let salt = uuid::Uuid::new_v4().simple().to_string();
    inv.arg(batch[0].limit.0).arg(batch[0].limit.1).arg(salt);
    for p in &batch {
        for a in &p.args {
            inv.arg(a.as_str());
        }
    }
    metrics::histogram!("gate_reserve_batch_size").record(batch.len() as f64);
    let replies = match timed("reserve", timeout, inv.invoke_async::<Value>(&mut conn)).await {
        Ok(Value::Array(items)) if items.len() == batch.len() => Ok(items),
        Ok(other) => {
            metrics::counter!("gate_errors_total", "op" => "reserve").increment(1);
            Err(GateError::Protocol(format!("reserve: {other:?}")))
        }
        Err(e) => Err(e),
    };
    match replies {
        Ok(items) => {
            for (p, item) in batch.into_iter().zip(items) {
                let _ = p.reply.send(words(item));
            }
        }
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(event: &str, limit: u64, n: &str) -> Pending {
        Pending {
            event: EventId::parse(event).unwrap(),
            limit: (limit, 1),
            args: [n.into(), String::new(), String::new(), String::new()],
            since: std::time::Instant::now(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn batches_split_by_event_and_limit_and_keep_arrival_order() {
        let got = group(vec![
            pending("a-2027", 0, "1"),
            pending("b-2027", 0, "2"),
            pending("a-2027", 0, "3"),
            pending("a-2027", 60, "4"),
            pending("b-2027", 0, "5"),
        ]);
        let ids: Vec<Vec<&str>> = got
            .iter()
            .map(|b| b.iter().map(|p| p.args[0].as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["1", "3"], vec!["2", "5"], vec!["4"]]);
    }
}
