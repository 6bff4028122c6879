//! Dead letters: orders the consumer failed `maxDeliveryAttempts` times land on the dead-letter
//! topic. After the cause is fixed, an operator lists them and republishes chosen ones (or all)
//! to the orders topic. Replaying is safe because the consumer is idempotent on the order id.
//!
//! Pub/Sub's REST API (unary pull, acknowledge, modifyAckDeadline) keeps this deterministic: a
//! message is acknowledged only after its republish succeeded; every other one is handed back
//! at the end of the run (ack deadline 0) and stays dead-lettered. Locally against the
//! emulator; in the cloud with Application Default Credentials.
//!
//! A replay re-signs what it republishes, so it first checks the signature the message arrived
//! with (ADR 40): anyone allowed to publish to the dead-letter topic must not get an order
//! confirmed or a charge refunded through an operator's routine replay. A message no accepted
//! key signed is refused, reported and left where it is.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use base64::Engine as _;
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use serde_json::{Value, json};

use futures::future::try_join_all;

use crate::OrderPublisher;
use domain::signing::Accepted;
use domain::signing::SIGNATURE_ATTRIBUTE;
use domain::{OrderBatch, OrderCharge, OrderId, OrderMessage};

/// Which dead letters to republish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// Only show them.
    None,
    /// Every decodable dead letter.
    All,
    /// The dead letters holding any of these orders, whole: their other orders were persisted
    /// when first delivered, so the consumer reads them back as duplicates.
    Orders(HashSet<OrderId>),
}

/// One dead-lettered message as the operator sees it.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub message_id: String,
    /// Its orders (one, or a batch: ADR 34), or why the payload is not an order message
    /// (such a message cannot be replayed).
    pub orders: Result<Vec<OrderMessage>, String>,
    /// Charges it carries for the books to settle (ADR 53): replayed with it.
    pub charges: Vec<OrderCharge>,
    pub attributes: HashMap<String, String>,
    /// What became of it in this run.
    pub action: Action,
}

/// What a run did with a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Left on the dead-letter subscription.
    Kept,
    /// Republished to the orders topic and removed from the dead-letter subscription.
    Replayed,
    /// Chosen, but republishing failed: left on the dead-letter subscription.
    ReplayFailed,
    /// Chosen, but no accepted key signed it: never republished, left on the dead-letter
    /// subscription for whoever investigates it.
    Refused,
}

/// Pub/Sub's REST API, against the emulator (no auth) or Google (ADC).
struct Rest {
    http: reqwest::Client,
    base: String,
    creds: Option<Credentials>,
}

impl Rest {
    fn new(emulator_host: Option<&str>) -> anyhow::Result<Self> {
        let (base, creds) = match emulator_host {
            Some(host) => (format!("http://{host}/v1"), None),
            None => (
                "https://pubsub.googleapis.com/v1".to_owned(),
                Some(google_cloud_auth::credentials::Builder::default().build()?),
            ),
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { http, base, creds })
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let mut req = self.http.post(format!("{}/{path}", self.base)).json(&body);
        if let Some(creds) = &self.creds
            && let CacheableResource::New { data, .. } =
                creds.headers(http::Extensions::new()).await?
        {
            req = req.headers(data);
        }
        let res = req.send().await?;
        let status = res.status();
        let text = res.text().await?;
        anyhow::ensure!(status.is_success(), "Pub/Sub {path}: {status} {text}");
        Ok(if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        })
    }
}

/// Pulls up to `max` dead letters from `subscription` (`projects/P/subscriptions/S`), stopping
/// after `idle` without a new one and after `budget` in all; republishes the chosen ones
/// through `publisher` once a key of `accepted` proves they are buy's; returns what it saw.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    subscription: &str,
    emulator_host: Option<&str>,
    publisher: &dyn OrderPublisher,
    accepted: Option<&Accepted<'_>>,
    choice: &Choice,
    max: usize,
    idle: Duration,
    budget: Duration,
) -> anyhow::Result<Vec<DeadLetter>> {
    let rest = Rest::new(emulator_host)?;
    let started = Instant::now();
    let mut last_new = Instant::now();
    let mut seen: Vec<DeadLetter> = Vec::new();
    let mut ids = HashSet::new();
    let mut hand_back = Vec::new();
    while seen.len() < max && started.elapsed() < budget && last_new.elapsed() < idle {
        let batch = rest
            .post(
                &format!("{subscription}:pull"),
                json!({"maxMessages": (max - seen.len()).min(100), "returnImmediately": true}),
            )
            .await?;
        let received = batch["receivedMessages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if received.is_empty() {
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        for r in received {
            let ack_id = r["ackId"].as_str().unwrap_or_default().to_owned();
            let m = &r["message"];
            let message_id = m["messageId"].as_str().unwrap_or_default().to_owned();
            if !ids.insert(message_id.clone()) {
                hand_back.push(ack_id); // a redelivery of one already seen in this run
                continue;
            }
            last_new = Instant::now();
            let attributes: HashMap<String, String> =
                serde_json::from_value(m["attributes"].clone()).unwrap_or_default();
            let data = base64::engine::general_purpose::STANDARD
                .decode(m["data"].as_str().unwrap_or_default())
                .map_err(|e| format!("data is not base64: {e}"));
            // Without keys nothing can be proven genuine, so nothing is replayed.
            let genuine = data.as_deref().is_ok_and(|d| {
                accepted.is_some_and(|a| {
                    a.signed(d, attributes.get(SIGNATURE_ATTRIBUTE).map(String::as_str))
                })
            });
            let batch = data.and_then(|bytes| {
                OrderBatch::decode(&bytes).map_err(|e| format!("not an order message: {e}"))
            });
            let (orders, charges) = match batch {
                Ok(b) => (Ok(b.orders), b.charges),
                Err(e) => (Err(e), vec![]),
            };
            let chosen = match (&orders, choice) {
                (Ok(_), Choice::All) => true,
                (Ok(os), Choice::Orders(set)) => {
                    os.iter().any(|o| set.contains(&o.order_id))
                        || charges.iter().any(|c| set.contains(&c.order_id))
                }
                _ => false,
            };
            let action = match &orders {
                Ok(_) if chosen && !genuine => {
                    tracing::error!(%message_id, ?attributes, "dead letter without a valid signature refused; it stays");
                    hand_back.push(ack_id);
                    Action::Refused
                }
                Ok(os) if chosen => {
                    let replay = async {
                        try_join_all(os.iter().map(|o| publisher.publish(o))).await?;
                        try_join_all(charges.iter().map(|c| publisher.publish_charge(c))).await
                    };
                    match replay.await {
                        Ok(_) => {
                            // At least once: if this ack is lost the next run replays it again,
                            // which the idempotent consumer absorbs.
                            rest.post(
                                &format!("{subscription}:acknowledge"),
                                json!({"ackIds": [ack_id]}),
                            )
                            .await?;
                            tracing::info!(orders = os.len(), %message_id, "dead letter replayed");
                            Action::Replayed
                        }
                        Err(e) => {
                            tracing::warn!(%message_id, error = %e, "replay failed; the dead letter stays");
                            hand_back.push(ack_id);
                            Action::ReplayFailed
                        }
                    }
                }
                _ => {
                    hand_back.push(ack_id);
                    Action::Kept
                }
            };
            seen.push(DeadLetter {
                message_id,
                orders,
                charges,
                attributes,
                action,
            });
        }
    }
    if !hand_back.is_empty() {
        rest.post(
            &format!("{subscription}:modifyAckDeadline"),
            json!({"ackIds": hand_back, "ackDeadlineSeconds": 0}),
        )
        .await?;
    }
    Ok(seen)
}
