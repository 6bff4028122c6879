//! Publishing paid orders to Pub/Sub (the official client; the emulator via its endpoint).
//!
//! Orders travel in batches (ADR 34): the orders paid while the previous publish was in flight
//! are coalesced into one message, bounded by a count, a size and a short linger under load, the way
//! reservations share one Redis call (ADR 29). Each caller still gets its answer only once the
//! message holding its order is accepted by Pub/Sub.

//!
//! The trait and its error are all a caller that only needs a publisher's shape (a test's
//! double) compiles; the Pub/Sub client, its configuration and the dead-letter replay are the
//! `client` feature.

#[cfg(feature = "client")]
mod client;
#[cfg(feature = "client")]
mod config;
#[cfg(feature = "client")]
pub mod deadletters;

#[cfg(feature = "client")]
pub use client::PubSubPublisher;
#[cfg(feature = "client")]
pub use config::PubSubArgs;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use domain::{OrderCharge, OrderMessage};

/// Publishing failed or timed out; the order stays in the outbox and is published later.
/// Cloned to every caller whose order rode in the failed message, so the cause is shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// Pub/Sub refused or failed the publish; its error is the source (and in the message).
    #[error("publish failed: {0}")]
    Broker(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// No answer within the publish deadline.
    #[error("publish failed: no answer within {0:?}")]
    Timeout(Duration),
    /// Nothing was sent: the publisher stopped (or a test's broker is down).
    #[error("publish failed: {0}")]
    Unavailable(&'static str),
    /// The message could not be encoded.
    #[error("publish failed: cannot encode the message: {0}")]
    Encode(#[source] Arc<serde_json::Error>),
}

/// Where paid orders go.
#[async_trait]
pub trait OrderPublisher: Send + Sync {
    /// Publishes one order (in a message it may share with others); returns the message id.
    async fn publish(&self, msg: &OrderMessage) -> Result<String, PublishError>;
    /// Hands a charge buy cannot match to a live payment attempt to the books, in a message
    /// of its own: consume-order settles it there, and refunds it unless it is the charge that
    /// paid the order (ADR 53); returns the message id.
    async fn publish_charge(&self, charge: &OrderCharge) -> Result<String, PublishError>;
}

/// How orders are coalesced into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// At most this many orders in one message.
    pub max_orders: usize,
    /// At most about this many bytes of JSON in one message (Pub/Sub takes up to 10 MB).
    pub max_bytes: usize,
    /// How long a message with room left waits for more orders before it goes, while the
    /// sale is busy (the last message carried more than one order; otherwise none).
    pub linger: Duration,
    /// Publishes in flight at once; orders paid meanwhile wait for the next message.
    pub in_flight: usize,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_orders: 500,
            max_bytes: 1_000_000,
            linger: Duration::from_millis(20),
            in_flight: 1,
        }
    }
}
