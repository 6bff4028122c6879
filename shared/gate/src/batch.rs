//! Reservations that arrive together go to Redis together: one `reserve.lua` call decides a
//! batch of them, one after the other, atomically (ADR 29).
//!
//! At the on-sale spike thousands of reservations a second meet one Redis thread. A script
//! call's fixed cost (parsing, the call into Lua, the event's and ticket types' reads) is most
//! of a single reservation's cost, so sharing it is what lets one Redis keep up; buy likewise
//! sends one command instead of one per fan. Nothing waits for a batch to fill: a batch is
//! whatever queued while the previous calls were in flight, so at low load each reservation
//! goes alone and at high load batches grow by themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{Script, Value};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::wire::{self, BatchReply};
use super::{GateError, meta_key, timed};
use domain::{EventId, OrderId};

/// Most reservations one call decides: bounds how long Redis is busy with one call (well
/// under a millisecond).
pub(super) const MAX_BATCH: usize = 64;

/// Calls in flight at once; more reservations than that wait for the next call. A few, so a
/// Redis that is far away (a cloud round trip) is still kept busy.
const IN_FLIGHT: usize = 4;

/// What a call's reservations are checked against besides stock and the per-customer limit,
/// as the script reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rules {
    /// The per-e-mail rate limit's interval in ms (0: none) and burst.
    pub interval_ms: u64,
    pub burst: u32,
    /// The most holds one client may take within a hold time (0: no cap).
    pub holds_per_client: u32,
}

/// One reservation waiting for its call.
pub(super) struct Pending {
    pub event: EventId,
    pub rules: Rules,
    /// ticket_type, quantity, email, idempotency_key, client ('': unknown), the place of the
    /// fan's admission token ('': none).
    pub args: [String; 6],
    /// When it was queued: one that waited longer than the gate's timeout is answered busy
    /// instead of being sent (its fan has been waiting long enough).
    pub since: std::time::Instant,
    /// The order id the key derives to, and the script's line for it (words split by tabs).
    pub reply: oneshot::Sender<Result<(OrderId, String), GateError>>,
}

/// Each event's order-id salt as Redis keeps it, learnt from the first call (ADR 30).
type Salts = Arc<Mutex<HashMap<EventId, String>>>;

/// An order's id: a version-8 UUID of the first 16 bytes of `SHA-1(salt ‖ "\n" ‖ key)`.
pub(super) fn order_id(salt: &str, key: &str) -> OrderId {
    use sha1::Digest as _;
    // RustCrypto's SHA-1 uses the CPU's SHA instructions where it has them (x86 SHA-NI, ARMv8):
    // a tenth of a portable implementation's cost, on the path of every reservation.
    let digest = sha1::Sha1::new()
        .chain_update(salt.as_bytes())
        .chain_update(b"\n")
        .chain_update(key.as_bytes())
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    OrderId(uuid::Uuid::new_v8(b))
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
    let call = Call {
        conn,
        script,
        salts: Salts::default(),
        timeout,
    };
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
                let _ = p.reply.send(Err(GateError::Unavailable("queued too long")));
            }
            let mut batches = group(fresh);
            let Some(last) = batches.pop() else {
                continue;
            };
            for batch in batches {
                let Ok(extra) = slots.clone().acquire_owned().await else {
                    return;
                };
                tokio::spawn(call.clone().send(batch, extra));
            }
            tokio::spawn(call.clone().send(last, slot));
        }
    });
    tx
}

/// Splits by event and rules (one script call serves one event's slot under one set of rules),
/// keeping arrival order within each.
fn group(queued: Vec<Pending>) -> Vec<Vec<Pending>> {
    let mut batches: Vec<Vec<Pending>> = Vec::new();
    for p in queued {
        match batches
            .iter_mut()
            .find(|b| b[0].event == p.event && b[0].rules == p.rules)
        {
            Some(b) => b.push(p),
            None => batches.push(vec![p]),
        }
    }
    batches
}

/// What a batch's call needs (one per gate, cloned per call).
#[derive(Clone)]
struct Call {
    conn: ConnectionManager,
    script: Arc<Script>,
    salts: Salts,
    timeout: Duration,
}

impl Call {
    /// One call for one batch; every reservation in it gets its own reply, or the call's error.
    async fn send(mut self, batch: Vec<Pending>, _slot: tokio::sync::OwnedSemaphorePermit) {
        let event = batch[0].event.clone();
        let known = self.salts.lock().expect("salts lock").get(&event).cloned();
        // An event's first reservation keeps the salt it is sent with (see reserve.lua).
        let mut salt = known.unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let mut answer = self.call(&batch, &salt).await;
        // This instance has not met the event yet (or Redis drew a new salt since): learn the
        // event's salt and decide the batch under it. Nothing was written by the first call.
        if let Ok((_, Some(theirs))) = &answer {
            salt = theirs.clone();
            answer = self.call(&batch, &salt).await;
        }
        let replies = match answer {
            Ok((ids, None)) => Ok(ids),
            // Redis was rebuilt between the two calls: a moment's state, so busy, not broken.
            Ok((_, Some(_))) => Err(GateError::Unavailable("the event's salt changed twice")),
            Err(e) => Err(e),
        };
        match replies {
            Ok(replies) => {
                self.salts.lock().expect("salts lock").insert(event, salt);
                for (p, r) in batch.into_iter().zip(replies) {
                    let _ = p.reply.send(Ok(r));
                }
            }
            Err(e) => {
                for p in batch {
                    let _ = p.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// The script's answer for `batch` with ids derived from `salt`: a reply per reservation,
    /// or the event's own salt when it is not `salt`.
    #[allow(clippy::type_complexity)]
    async fn call(
        &mut self,
        batch: &[Pending],
        salt: &str,
    ) -> Result<(Vec<(OrderId, String)>, Option<String>), GateError> {
        let mut inv = self.script.key(meta_key(&batch[0].event));
        let rules = batch[0].rules;
        inv.arg(rules.interval_ms)
            .arg(rules.burst)
            .arg(salt)
            .arg(rules.holds_per_client);
        let ids: Vec<OrderId> = batch.iter().map(|p| order_id(salt, &p.args[3])).collect();
        let mut buf = uuid::Uuid::encode_buffer();
        for (p, id) in batch.iter().zip(&ids) {
            inv.arg(p.args[0].as_str())
                .arg(p.args[1].as_str())
                .arg(p.args[2].as_str())
                .arg(&*id.0.hyphenated().encode_lower(&mut buf))
                .arg(p.args[4].as_str())
                .arg(p.args[5].as_str());
        }
        metrics::histogram!("gate_reserve_batch_size").record(batch.len() as f64);
        let reply = timed(
            "reserve",
            self.timeout,
            inv.invoke_async::<Value>(&mut self.conn),
        )
        .await?;
        match wire::batch_reply(reply, batch.len()) {
            Ok(BatchReply::Salt(theirs)) => Ok((vec![], Some(theirs))),
            Ok(BatchReply::Lines(lines)) => Ok((ids.into_iter().zip(lines).collect(), None)),
            Err(e) => {
                metrics::counter!("gate_errors_total", "op" => "reserve").increment(1);
                Err(e)
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
            rules: Rules {
                interval_ms: limit,
                burst: 1,
                holds_per_client: 0,
            },
            args: [
                n.into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ],
            since: std::time::Instant::now(),
            reply: oneshot::channel().0,
        }
    }

    #[test]
    fn order_ids_are_the_documented_derivation() {
        // Computed by the Lua that derived ids before buy did (and by Python's hashlib).
        let id = order_id("0f1e2d3c4b5a69788796a5b4c3d2e1f0", "fan-retry-key-1");
        assert_eq!(id.to_string(), "b905ec11-cdac-859f-a0ae-84ff7a2d457f");
        assert_eq!(id.0.get_version_num(), 8);
        assert_ne!(id, order_id("another salt", "fan-retry-key-1"));
    }

    #[test]
    fn batches_split_by_event_and_rules_and_keep_arrival_order() {
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
