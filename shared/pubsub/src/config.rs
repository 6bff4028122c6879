//! Configuration from the environment (flags work too), validated at start: a missing or bad
//! variable stops the service with clap's one-line error, before anything is served.

use std::time::Duration;

/// The orders topic.
#[derive(clap::Args, Debug, Clone)]
pub struct PubSubArgs {
    /// Google Cloud project of the topic.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    pub project: String,
    /// Topic id of paid orders.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    pub orders_topic: String,
    /// host:port of the Pub/Sub emulator; unset in the cloud.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    pub pubsub_emulator_host: Option<String>,
    /// Deadline for one publish, in milliseconds.
    #[arg(long, env = "PUBLISH_TIMEOUT_MS", default_value_t = 3000)]
    pub publish_timeout_ms: u64,
    /// At most this many paid orders in one message (ADR 34).
    #[arg(long, env = "PUBLISH_BATCH_MAX_ORDERS", default_value_t = 500)]
    pub publish_batch_max_orders: usize,
    /// How long a message with room left waits for more paid orders while the sale is busy
    /// (the last message carried more than one), in milliseconds.
    #[arg(long, env = "PUBLISH_LINGER_MS", default_value_t = 20)]
    pub publish_linger_ms: u64,
    /// Publishes in flight at once; orders paid meanwhile leave together in the next message.
    #[arg(long, env = "PUBLISH_IN_FLIGHT", default_value_t = 1)]
    pub publish_in_flight: usize,
    /// The secret messages are signed with, which consume-order checks (ADR 40; at least 32
    /// characters). Unset: messages go unsigned (a consumer that checks refuses them).
    #[arg(long, env = "ORDER_SIGNING_KEY", hide_env_values = true, value_parser = domain::signing::MessageKey::parse)]
    pub order_signing_key: Option<domain::signing::MessageKey>,
}

impl PubSubArgs {
    /// `projects/P/topics/T`.
    pub fn topic_path(&self) -> String {
        format!("projects/{}/topics/{}", self.project, self.orders_topic)
    }

    /// Connects the publisher.
    pub async fn publisher(&self) -> anyhow::Result<crate::PubSubPublisher> {
        crate::PubSubPublisher::connect(
            &self.topic_path(),
            self.pubsub_emulator_host.as_deref(),
            Duration::from_millis(self.publish_timeout_ms),
            crate::Batching {
                max_orders: self.publish_batch_max_orders.max(1),
                linger: Duration::from_millis(self.publish_linger_ms),
                in_flight: self.publish_in_flight.max(1),
                ..Default::default()
            },
            self.order_signing_key.clone(),
        )
        .await
    }
}
