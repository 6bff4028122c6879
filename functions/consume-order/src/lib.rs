//! consume-order: the Pub/Sub push endpoint. Decodes the envelope, then `handle`s the paid
//! order: persist it and its tickets in one transaction (the database is the authority and
//! refuses to oversell), then mirror the outcome in the gate's read model.
//! 2xx acks; a retryable failure answers 503 so Pub/Sub redelivers; a permanently bad
//! message is acked, logged and counted (it would never succeed).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde::Deserialize;
use shared::config::{DatabaseArgs, HttpArgs, RedisArgs};
use shared::domain::{OrderMessage, OrderStatus};
use shared::gate::Gate;
use shared::payment::{PaymentProvider, SimulatedPayments};
use shared::repo::OrderRepository;
use tracing::Instrument;

/// Configuration from the environment.
#[derive(clap::Parser, Debug)]
pub struct Config {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub db: DatabaseArgs,
    /// Shared secret the push subscription sends as `?token=` (locally). In the cloud, Cloud
    /// Run IAM verifies Pub/Sub's OIDC token before the request arrives; set `PUSH_AUTH=iam`.
    #[arg(long, env = "PUSH_TOKEN")]
    pub push_token: Option<String>,
    /// `token` (check `PUSH_TOKEN`) or `iam` (Cloud Run has authenticated the caller).
    #[arg(long, env = "PUSH_AUTH", default_value = "token")]
    pub push_auth: String,
    /// How often to check that Redis still holds every event in the database (it rebuilds
    /// an event Redis lost, see `shared::recovery`), in seconds; 0 turns the check off.
    #[arg(long, env = "GATE_WATCH_SECS", default_value_t = 5)]
    pub gate_watch_secs: u64,
    /// A rebuilt event reopens once the books have not changed for this many seconds.
    #[arg(long, env = "GATE_RESTORE_QUIET_SECS", default_value_t = 30)]
    pub gate_restore_quiet_secs: u64,
}

/// Outcome counters (exported as metrics later; logged now).
#[derive(Debug, Default)]
pub struct Stats {
    pub persisted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub retryable: AtomicU64,
    pub permanent: AtomicU64,
}

/// How push requests are authenticated.
#[derive(Clone, Debug)]
pub enum PushAuth {
    /// `?token=` must equal this.
    Token(String),
    /// Cloud Run IAM already verified Pub/Sub's OIDC token.
    CloudRunIam,
}

/// Shared state.
#[derive(Clone)]
pub struct AppState {
    pub repo: Arc<dyn OrderRepository>,
    pub gate: Gate,
    pub payments: Arc<dyn PaymentProvider>,
    pub auth: PushAuth,
    pub stats: Arc<Stats>,
}

impl AppState {
    /// State with the simulated payment provider (for refunds) and fresh counters.
    pub fn new(repo: Arc<dyn OrderRepository>, gate: Gate, auth: PushAuth) -> Self {
        Self {
            repo,
            gate,
            payments: Arc::new(SimulatedPayments),
            auth,
            stats: Arc::default(),
        }
    }
}

/// The routes.
pub fn app(state: AppState) -> Router {
    shared::http::finish(
        Router::new()
            .route("/pubsub/orders", post(push))
            .with_state(state),
        &[],
    )
}

/// The push envelope. Production sends camelCase; the emulator sends every field in both
/// camelCase and snake_case (so serde aliases would see duplicates) and no `deliveryAttempt`.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    pub message: PushMessage,
    #[serde(default)]
    pub subscription: String,
    #[serde(default, rename = "deliveryAttempt")]
    pub delivery_attempt: Option<u32>,
}

/// The message inside the envelope.
#[derive(Debug, Deserialize)]
pub struct PushMessage {
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default, rename = "messageId")]
    message_id_camel: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(default)]
    pub attributes: std::collections::HashMap<String, String>,
}

impl PushMessage {
    /// The Pub/Sub message id, whichever spelling carried it.
    pub fn message_id(&self) -> &str {
        self.message_id_camel
            .as_deref()
            .or(self.message_id_snake.as_deref())
            .unwrap_or_default()
    }
}

/// Why a message was not handled.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// Try again later (answer non-2xx; Pub/Sub redelivers with backoff).
    #[error("retryable: {0}")]
    Retryable(String),
    /// Will never succeed (ack, log, count).
    #[error("permanent: {0}")]
    Permanent(String),
}

fn counted(outcome: &'static str) {
    metrics::counter!("consumer_messages_total", "outcome" => outcome).increment(1);
}

/// Decodes the message payload.
pub fn decode(msg: &PushMessage) -> Result<OrderMessage, HandleError> {
    let data = msg
        .data
        .as_deref()
        .ok_or_else(|| HandleError::Permanent("no data".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| HandleError::Permanent(format!("data is not base64: {e}")))?;
    let order: OrderMessage = serde_json::from_slice(&bytes)
        .map_err(|e| HandleError::Permanent(format!("not an order: {e}")))?;
    if order.quantity == 0 || order.quantity > shared::domain::Quantity::MAX {
        return Err(HandleError::Permanent(format!(
            "quantity {}",
            order.quantity
        )));
    }
    Ok(order)
}

/// Persists one paid order and mirrors the outcome in the gate. Idempotent.
pub async fn handle(state: &AppState, msg: &OrderMessage) -> Result<OrderStatus, HandleError> {
    // A decoded order is a paid order: never drop it. Even a refusal that looks permanent
    // (e.g. its ticket type missing from the database after a partial seed) is answered
    // non-2xx, so after the retries it waits in the dead-letter topic for an operator.
    let persisted = state
        .repo
        .persist(msg)
        .await
        .map_err(|e| HandleError::Retryable(e.to_string()))?;
    if persisted.duplicate {
        state.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        counted("duplicate");
        tracing::info!(
            status = persisted.status.as_str(),
            "duplicate delivery absorbed"
        );
    } else if persisted.status == OrderStatus::Rejected {
        state.stats.rejected.fetch_add(1, Ordering::Relaxed);
        counted("rejected");
        tracing::warn!("database refused the order: no capacity left; refunding");
    } else {
        state.stats.persisted.fetch_add(1, Ordering::Relaxed);
        counted("persisted");
        // Payment approved -> order persisted: what a fan waits for after paying.
        let waited = (chrono::Utc::now() - msg.paid_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!("order_end_to_end_seconds").record(waited.as_secs_f64());
        tracing::info!(tickets = persisted.tickets.len(), "order persisted");
    }
    if persisted.status == OrderStatus::Rejected {
        // Idempotent at the provider, so a redelivery refunding again is harmless.
        state
            .payments
            .refund(msg.order_id, &msg.payment_ref, msg.amount_cents)
            .await
            .map_err(|e| HandleError::Retryable(e.to_string()))?;
    }
    // If Redis fails here the database already holds the order; the redelivery finds the
    // duplicate and finishes this step.
    state
        .gate
        .finalize(msg, &persisted)
        .await
        .map_err(|e| HandleError::Retryable(format!("gate: {e}")))?;
    Ok(persisted.status)
}

#[derive(Deserialize)]
pub struct AuthQuery {
    token: Option<String>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `POST /pubsub/orders`
pub async fn push(
    State(state): State<AppState>,
    Query(q): Query<AuthQuery>,
    body: axum::body::Bytes,
) -> Response {
    if let PushAuth::Token(expected) = &state.auth {
        let ok = q
            .token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), expected.as_bytes()));
        if !ok {
            return shared::ApiError::Unauthorized.into_response();
        }
    }
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            state.stats.permanent.fetch_add(1, Ordering::Relaxed);
            counted("permanent");
            tracing::error!(error = %e, "push body is not a Pub/Sub envelope; acked and dropped");
            return StatusCode::NO_CONTENT.into_response();
        }
    };
    let span = tracing::info_span!(
        "message",
        message_id = %envelope.message.message_id(),
        delivery_attempt = envelope.delivery_attempt,
        order_id = tracing::field::Empty,
    );
    async move {
        let result = match decode(&envelope.message) {
            Ok(order) => {
                tracing::Span::current()
                    .record("order_id", tracing::field::display(order.order_id));
                handle(&state, &order).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(_) => StatusCode::NO_CONTENT.into_response(),
            Err(HandleError::Permanent(reason)) => {
                state.stats.permanent.fetch_add(1, Ordering::Relaxed);
                counted("permanent");
                tracing::error!(reason, "permanently bad message; acked and dropped");
                StatusCode::NO_CONTENT.into_response()
            }
            Err(HandleError::Retryable(reason)) => {
                state.stats.retryable.fetch_add(1, Ordering::Relaxed);
                counted("retryable");
                tracing::warn!(reason, "will be redelivered");
                shared::http::unavailable("order store", &reason).into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// Builds everything from the config and serves until SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let auth = match (config.push_auth.as_str(), config.push_token) {
        ("iam", _) => PushAuth::CloudRunIam,
        ("token", Some(t)) if t.len() >= 16 => PushAuth::Token(t),
        ("token", _) => {
            anyhow::bail!("PUSH_TOKEN must be set (at least 16 characters) when PUSH_AUTH=token")
        }
        (other, _) => anyhow::bail!("PUSH_AUTH must be `token` or `iam`, not {other:?}"),
    };
    let repo = config.db.repository()?;
    repo.ping()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the database: {e}"))?;
    let gate = config.redis.gate().await?;
    let repo: Arc<dyn OrderRepository> = Arc::new(repo);
    if config.gate_watch_secs > 0 {
        let opts = shared::recovery::RestoreOptions {
            quiet: std::time::Duration::from_secs(config.gate_restore_quiet_secs),
            ..Default::default()
        };
        tokio::spawn(shared::recovery::watch(
            gate.clone(),
            repo.clone(),
            std::time::Duration::from_secs(config.gate_watch_secs),
            opts,
        ));
    }
    let state = AppState::new(repo, gate, auth);
    shared::http::serve(app(state), config.http.port).await
}
