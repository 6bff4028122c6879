//! Publishing paid orders to Pub/Sub (the official client; the emulator via its endpoint).

use std::time::Duration;

use async_trait::async_trait;
use google_cloud_pubsub::client::Publisher;
use google_cloud_pubsub::model::Message;

use crate::domain::OrderMessage;

/// Publishing failed or timed out; the order stays in the outbox and is published later.
#[derive(Debug, thiserror::Error)]
#[error("publish failed: {0}")]
pub struct PublishError(pub String);

/// Where paid orders go.
#[async_trait]
pub trait OrderPublisher: Send + Sync {
    /// Publishes one order; returns the message id.
    async fn publish(&self, msg: &OrderMessage) -> Result<String, PublishError>;
}

/// Publishes to a Pub/Sub topic.
pub struct PubSubPublisher {
    publisher: Publisher,
    timeout: Duration,
}

impl PubSubPublisher {
    /// `topic` is `projects/P/topics/T`; `emulator_host` (host:port) switches to the emulator
    /// with anonymous credentials; otherwise Application Default Credentials are used.
    pub async fn connect(
        topic: &str,
        emulator_host: Option<&str>,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        // Small batches keep the payment answer fast while letting a spike share requests.
        let mut builder = Publisher::builder(topic.to_owned())
            .set_delay_threshold(Duration::from_millis(5))
            .set_message_count_threshold(100);
        if let Some(host) = emulator_host {
            builder = builder
                .with_endpoint(format!("http://{host}"))
                .with_credentials(
                    google_cloud_auth::credentials::anonymous::Builder::new().build(),
                );
        }
        let publisher = builder.build().await?;
        Ok(Self { publisher, timeout })
    }
}

#[async_trait]
impl OrderPublisher for PubSubPublisher {
    async fn publish(&self, msg: &OrderMessage) -> Result<String, PublishError> {
        let data = serde_json::to_vec(msg).map_err(|e| PublishError(e.to_string()))?;
        let message = Message::new().set_data(data).set_attributes([
            ("order_id", msg.order_id.to_string()),
            ("event", msg.event.to_string()),
        ]);
        match tokio::time::timeout(self.timeout, self.publisher.publish(message)).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(PublishError(e.to_string())),
            Err(_) => Err(PublishError(format!("no answer within {:?}", self.timeout))),
        }
    }
}
