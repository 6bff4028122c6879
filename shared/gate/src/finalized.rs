//! Waiting for an order's outcome. consume-order's `finalize.lua` publishes the ids of the
//! orders it mirrored on `{ev:EVENT}:finalized`; a gate that waits for one listens on one
//! pattern subscription (started on first use) and wakes the waiter. buy's payment answer waits
//! briefly this way, so a fan usually learns the outcome without polling for it (ADR 35).
//!
//! Only a shortcut: a notification that is missed (the subscription reconnecting, another
//! Redis) leaves the waiter to its timeout, and the order's status is read as before.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;

use domain::OrderId;

/// The channels `finalize.lua` publishes on, one per event.
const PATTERN: &str = "{ev:*}:finalized";

/// The orders waited for, and the subscription that wakes them.
pub(super) struct Listener {
    client: redis::Client,
    waiters: Mutex<HashMap<OrderId, oneshot::Sender<()>>>,
    started: OnceLock<()>,
}

impl Listener {
    pub(super) fn new(client: redis::Client) -> Self {
        Self {
            client,
            waiters: Mutex::default(),
            started: OnceLock::new(),
        }
    }

    /// Registers a waiter for `order` (before the work that finalizes it starts, so its
    /// notification cannot come first).
    pub(super) fn wait(self: &Arc<Self>, order: OrderId) -> Waiter {
        self.started.get_or_init(|| {
            tokio::spawn(listen(self.clone()));
        });
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().expect("waiters lock").insert(order, tx);
        Waiter {
            order,
            rx,
            listener: self.clone(),
        }
    }

    fn wake(&self, ids: &str) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        for id in ids.split(' ').filter_map(|id| OrderId::parse(id).ok()) {
            if let Some(tx) = waiters.remove(&id) {
                let _ = tx.send(());
            }
        }
    }
}

/// Keeps the subscription up for as long as the process runs, reconnecting after a second.
async fn listen(listener: Arc<Listener>) {
    loop {
        if let Err(e) = subscribe(&listener).await {
            tracing::warn!(error = %e, "finalized-order notifications lost; payments answer without waiting until they are back");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn subscribe(listener: &Listener) -> redis::RedisResult<()> {
    let mut pubsub = listener.client.get_async_pubsub().await?;
    pubsub.psubscribe(PATTERN).await?;
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        listener.wake(&msg.get_payload::<String>()?);
    }
    Err(redis::RedisError::from((
        redis::ErrorKind::Io,
        "subscription closed",
    )))
}

/// Resolves once the order has been finalized (never, if that is not heard of: bound it with a
/// timeout). Dropping it unregisters the waiter.
pub struct Waiter {
    order: OrderId,
    rx: oneshot::Receiver<()>,
    listener: Arc<Listener>,
}

impl Future for Waiter {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // An error: a later waiter for the same order (another request paying it) took this
        // one's place. Stop waiting; the caller reads the status as it is.
        Pin::new(&mut self.rx).poll(cx).map(|_| ())
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.rx.close();
        let mut waiters = self.listener.waiters.lock().expect("waiters lock");
        // Only this waiter's entry: a later one for the same order keeps its own.
        if waiters.get(&self.order).is_some_and(|tx| tx.is_closed()) {
            waiters.remove(&self.order);
        }
    }
}
