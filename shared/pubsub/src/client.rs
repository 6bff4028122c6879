//! The Pub/Sub client behind [`OrderPublisher`]: orders coalesced into signed batches.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;
use tokio::sync::{mpsc, oneshot};

use domain::signing::{MessageKey, SIGNATURE_ATTRIBUTE};
use domain::{OrderBatch, OrderCharge, OrderMessage};

use crate::{Batching, OrderPublisher, PublishError};

/// An order waiting for its message, and where its caller waits for the answer.
struct Pending {
    json: Box<serde_json::value::RawValue>,
    order_id: domain::OrderId,
    done: oneshot::Sender<Result<String, PublishError>>,
}

/// Publishes to a Pub/Sub topic, orders coalesced into batches.
pub struct PubSubPublisher {
    queue: mpsc::Sender<Pending>,
    /// For the rare message that is not a batch of orders (a refund).
    publisher: Publisher,
    signing: Option<MessageKey>,
    timeout: Duration,
}

impl PubSubPublisher {
    /// `topic` is `projects/P/topics/T`; `emulator_host` (host:port) switches to the emulator
    /// with anonymous credentials; otherwise Application Default Credentials are used.
    pub async fn connect(
        topic: &str,
        emulator_host: Option<&str>,
        timeout: Duration,
        batching: Batching,
        signing: Option<MessageKey>,
    ) -> anyhow::Result<Self> {
        // The client sends each of our messages at once: the coalescing happens here, into
        // one message, not into one request of many messages.
        let mut builder = Publisher::builder(topic.to_owned()).set_message_count_threshold(1);
        if let Some(host) = emulator_host {
            builder = builder
                .with_endpoint(format!("http://{host}"))
                .with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
        }
        let publisher = builder.build().await?;
        let (queue, rx) = mpsc::channel(batching.max_orders.max(1) * 16);
        tokio::spawn(coalesce(
            rx,
            publisher.clone(),
            batching,
            timeout,
            signing.clone(),
        ));
        Ok(Self {
            queue,
            publisher,
            signing,
            timeout,
        })
    }
}

#[async_trait]
impl OrderPublisher for PubSubPublisher {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn publish(&self, msg: &OrderMessage) -> Result<String, PublishError> {
        let json =
            serde_json::value::to_raw_value(msg).map_err(|e| PublishError::Encode(Arc::new(e)))?;
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            json,
            order_id: msg.order_id,
            done,
        };
        let waited = tokio::time::timeout(self.timeout, async {
            self.queue
                .send(pending)
                .await
                .map_err(|_| PublishError::Unavailable("the publisher stopped"))?;
            answer
                .await
                .map_err(|_| PublishError::Unavailable("the publisher stopped"))?
        })
        .await;
        waited.unwrap_or_else(|_| Err(PublishError::Timeout(self.timeout)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn publish_charge(&self, charge: &OrderCharge) -> Result<String, PublishError> {
        let data = serde_json::to_vec(&OrderBatch {
            orders: vec![],
            charges: vec![charge.clone()],
        })
        .map_err(|e| PublishError::Encode(Arc::new(e)))?;
        let attributes = signed(
            vec![("refund_for", charge.order_id.to_string())],
            self.signing.as_ref(),
            &data,
        );
        let message = Message::new().set_data(data).set_attributes(attributes);
        send(&self.publisher, message, self.timeout).await
    }
}

/// Takes orders off the queue into messages, at most `in_flight` publishes at a time: while
/// they are out, newly paid orders queue up and leave together in the next message.
async fn coalesce(
    mut rx: mpsc::Receiver<Pending>,
    publisher: Publisher,
    batching: Batching,
    timeout: Duration,
    signing: Option<MessageKey>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(batching.in_flight.max(1)));
    // Whether the last message carried more than one order: the sale is busy.
    let mut busy = false;
    while let Some(first) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        let mut bytes = batch[0].json.get().len();
        // Linger only while busy: a lone payment goes at once, and under load the wait fills the
        // message (fewer, larger messages cost the broker and the consumer less per order).
        let linger = tokio::time::Instant::now()
            + if busy {
                batching.linger
            } else {
                Duration::ZERO
            };
        while batch.len() < batching.max_orders && bytes < batching.max_bytes {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Empty) => tokio::time::timeout_at(linger, rx.recv())
                    .await
                    .ok()
                    .flatten(),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
            };
            let Some(p) = next else { break };
            bytes += p.json.get().len() + 1;
            batch.push(p);
        }
        // A caller that gave up (its deadline passed) keeps its order in the outbox: the relay
        // publishes it; sending it now as well would only make a duplicate.
        busy = batch.len() > 1;
        batch.retain(|p| !p.done.is_closed());
        if batch.is_empty() {
            continue;
        }
        let (publisher, signing) = (publisher.clone(), signing.clone());
        tokio::spawn(async move {
            let result = publish_batch(&publisher, &batch, timeout, signing.as_ref()).await;
            metrics::histogram!("publish_batch_orders").record(batch.len() as f64);
            match &result {
                Ok(message_id) => tracing::info!(orders = batch.len(), message_id, "published"),
                Err(e) => tracing::warn!(orders = batch.len(), error = %e, "publish failed"),
            }
            for p in batch {
                let _ = p.done.send(result.clone());
            }
            drop(slot);
        });
    }
}

/// One message for the batch.
async fn publish_batch(
    publisher: &Publisher,
    batch: &[Pending],
    timeout: Duration,
    signing: Option<&MessageKey>,
) -> Result<String, PublishError> {
    #[derive(serde::Serialize)]
    struct Wire<'a> {
        orders: Vec<&'a serde_json::value::RawValue>,
    }
    let data = serde_json::to_vec(&Wire {
        orders: batch.iter().map(|p| p.json.as_ref()).collect(),
    })
    .map_err(|e| PublishError::Encode(Arc::new(e)))?;
    let mut attributes = vec![("orders", batch.len().to_string())];
    if let [only] = batch {
        attributes.push(("order_id", only.order_id.to_string()));
    }
    let attributes = signed(attributes, signing, &data);
    let message = Message::new().set_data(data).set_attributes(attributes);
    send(publisher, message, timeout).await
}

/// `attributes` with the data's signature, when there is a key (ADR 40).
fn signed(
    mut attributes: Vec<(&'static str, String)>,
    signing: Option<&MessageKey>,
    data: &[u8],
) -> Vec<(&'static str, String)> {
    if let Some(key) = signing {
        attributes.push((SIGNATURE_ATTRIBUTE, key.sign(data)));
    }
    attributes
}

/// Publishes one message within `timeout`.
async fn send(
    publisher: &Publisher,
    message: Message,
    timeout: Duration,
) -> Result<String, PublishError> {
    match tokio::time::timeout(timeout, publisher.publish(message)).await {
        Ok(Ok(id)) => Ok(id),
        Ok(Err(e)) => Err(PublishError::Broker(Arc::new(e))),
        Err(_) => Err(PublishError::Timeout(timeout)),
    }
}
