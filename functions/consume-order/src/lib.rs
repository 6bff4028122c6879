//! consume-order: the Pub/Sub push endpoint. Decodes the envelope, then `handle`s the paid
//! order: persist it and its tickets in one transaction (the database is the authority and
//! refuses to oversell), then mirror the outcome in the gate's read model.
//! 2xx acks; a retryable failure answers 503 so Pub/Sub redelivers; a permanently bad
//! message is acked, logged and counted (it would never succeed).

use anyhow::Context;
use std::sync::Arc;
#[cfg(feature = "testing")]
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use domain::signing::{Accepted, MessageKey};
use domain::{EventId, OrderCharge, OrderMessage, OrderStatus};
use gate::{GateError, PaymentFlow, RedisArgs};
use payments::ledger::PaymentArgs;
use payments::{ChargeList, PaymentProvider, SimulatedPayments};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use store::DatabaseArgs;
use store::{OrderRepository, Outcome, Persisted, Refused, RepoError};
use tracing::Instrument;
use web::{ApiError, HttpArgs};

/// How consume-order authenticates a push request (`PUSH_AUTH`).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushAuthMode {
    /// `?token=` must equal `PUSH_TOKEN` (locally).
    Token,
    /// Cloud Run's IAM has verified Pub/Sub's OIDC token before the request arrives.
    Iam,
}

/// Configuration from the environment.
#[derive(clap::Parser, Debug)]
pub struct Config {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub payments: PaymentArgs,
    /// Shared secret the push subscription sends as `?token=` (locally). In the cloud, Cloud
    /// Run IAM verifies Pub/Sub's OIDC token before the request arrives; set `PUSH_AUTH=iam`.
    #[arg(long, env = "PUSH_TOKEN", hide_env_values = true)]
    pub push_token: Option<SecretString>,
    /// How a push request is authenticated.
    #[arg(long, env = "PUSH_AUTH", value_enum, default_value_t = PushAuthMode::Token)]
    pub push_auth: PushAuthMode,
    /// The secret buy signs messages with (ADR 40): a message without its valid signature is
    /// refused. Required with `PUSH_AUTH=iam`, where anyone allowed to publish to the topic
    /// reaches this endpoint.
    #[arg(long, env = "ORDER_SIGNING_KEY", hide_env_values = true, value_parser = MessageKey::parse)]
    pub order_signing_key: Option<MessageKey>,
    /// The key buy signed with before the current one, accepted too while a rotation rolls
    /// out (ADR 40); unset otherwise.
    #[arg(long, env = "ORDER_SIGNING_KEY_PREVIOUS", hide_env_values = true, value_parser = MessageKey::parse)]
    pub order_signing_key_previous: Option<MessageKey>,
    /// How often to check that Redis still holds every event in the database (it rebuilds
    /// an event Redis lost, see `recovery`), in seconds; 0 turns the check off.
    #[arg(long, env = "GATE_WATCH_SECS", default_value_t = 5)]
    pub gate_watch_secs: u64,
    /// A rebuilt event reopens once the books have not changed for this many seconds.
    #[arg(long, env = "GATE_RESTORE_QUIET_SECS", default_value_t = 30)]
    pub gate_restore_quiet_secs: u64,
    /// An event whose Redis counts fewer tickets sold or being paid than the books sold this
    /// many seconds ago was rolled back, and is rebuilt.
    #[arg(long, env = "GATE_BEHIND_SECS", default_value_t = 90)]
    pub gate_behind_secs: u64,
    /// How often the refunder asks the provider again for refunds still owed, in seconds.
    #[arg(long, env = "REFUND_RETRY_SECS", default_value_t = 10)]
    pub refund_retry_secs: u64,
    /// How often the provider's list of charges is swept for charges the books never heard of
    /// (a payment whose record Redis lost), in seconds; 0 turns the sweep off. Needs the
    /// provider's list (`PAYMENTS_LEDGER_URL` for the simulated one).
    #[arg(long, env = "CHARGE_SWEEP_SECS", default_value_t = 60)]
    pub charge_sweep_secs: u64,
    /// A charge unknown to the books this long after it was made is owed back: longer than
    /// any charge takes to reach them on its own (buy gives up on an unknown outcome after 5
    /// minutes; the money audit's grace is the same).
    #[arg(long, env = "CHARGE_GRACE_SECS", default_value_t = 900)]
    pub charge_grace_secs: u64,
}

/// The outcome counters, for tests to read: production reads `consumer_messages_total`.
#[cfg(feature = "testing")]
#[derive(Debug, Default)]
pub struct Stats {
    pub persisted: AtomicU64,
    pub duplicates: AtomicU64,
    pub rejected: AtomicU64,
    pub retryable: AtomicU64,
    pub permanent: AtomicU64,
}

#[cfg(feature = "testing")]
impl Stats {
    fn add(&self, outcome: &str) {
        let counter = match outcome {
            "persisted" => &self.persisted,
            "duplicate" => &self.duplicates,
            "rejected" => &self.rejected,
            "retryable" => &self.retryable,
            "permanent" => &self.permanent,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How push requests are authenticated.
#[derive(Clone, Debug)]
pub enum PushAuth {
    /// `?token=` must equal this.
    Token(SecretString),
    /// Cloud Run IAM already verified Pub/Sub's OIDC token.
    CloudRunIam,
}

/// Shared state.
#[derive(Clone)]
pub struct AppState {
    pub repo: Arc<dyn OrderRepository>,
    pub gate: Arc<dyn PaymentFlow>,
    pub payments: Arc<dyn PaymentProvider>,
    pub auth: PushAuth,
    /// Messages must carry this key's signature (`None`: not checked; local runs only).
    pub signing: Option<MessageKey>,
    /// A key whose signatures are accepted too, while a rotation rolls out.
    pub signing_previous: Option<MessageKey>,
    /// How long a refund waits after a failed attempt before it is due again (doubling per
    /// attempt, see `store::refund_lease`).
    pub refund_lease: Duration,
    #[cfg(feature = "testing")]
    pub stats: Arc<Stats>,
}

impl AppState {
    /// State with the simulated payment provider (for refunds) and fresh counters.
    pub fn new(
        repo: Arc<dyn OrderRepository>,
        gate: impl PaymentFlow + 'static,
        auth: PushAuth,
    ) -> Self {
        Self {
            repo,
            gate: Arc::new(gate),
            payments: Arc::new(SimulatedPayments),
            auth,
            signing: None,
            signing_previous: None,
            refund_lease: REFUND_LEASE,
            #[cfg(feature = "testing")]
            stats: Arc::default(),
        }
    }
}

/// How long a claimed refund waits before it is due again after its first attempt (doubling
/// with each one after, up to ten minutes).
pub const REFUND_LEASE: Duration = Duration::from_secs(10);

/// Largest push body accepted: a message of buy's largest batch (1 MB of JSON,
/// `pubsub::Batching`), base64-encoded inside its envelope, with room to spare.
pub const PUSH_BODY_LIMIT: usize = 4 * 1024 * 1024;

/// The routes.
pub fn app(state: AppState) -> Router {
    // One Arc for the state: each request takes a clone of it, not of the keys and clients.
    let state = Arc::new(state);
    web::http::finish(
        Router::new()
            .route(
                "/pubsub/orders",
                post(push).layer(DefaultBodyLimit::max(PUSH_BODY_LIMIT)),
            )
            .with_state(state),
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

/// Why a message was not handled. Every cause is the error's source; the push handler logs
/// it once, with the message's span.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The books could not decide the orders: retry (Pub/Sub redelivers with backoff).
    #[error("the books: {0}")]
    Books(#[from] RepoError),
    /// The charges could not be settled: retry, nothing is acked before they are.
    #[error("settling charges: {0}")]
    Charges(#[source] RepoError),
    /// The books decided and the gate could not mirror it: retry (the redelivery finishes it).
    #[error("the gate: {0}")]
    Gate(#[from] GateError),
    /// Redis went back in time and the repair from the books failed: retry (the watcher
    /// repairs meanwhile).
    #[error("repairing the gate from the books: {0:#}")]
    Repair(#[source] anyhow::Error),
    /// The books refuse some orders of the message for good; they are retried, then wait in
    /// the dead-letter topic (their neighbours are done).
    #[error("{refused} of {total} orders refused by the books")]
    Refused { refused: usize, total: usize },
    /// The message can never be read (acked, logged, counted).
    #[error("undecodable message: {0:#}")]
    Undecodable(#[source] anyhow::Error),
}

impl HandleError {
    /// Whether a redelivery may succeed (the answer is then non-2xx).
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Self::Undecodable(_))
    }
}

fn counted(
    #[cfg_attr(not(feature = "testing"), allow(unused_variables))] state: &AppState,
    outcome: &'static str,
) {
    metrics::counter!("consumer_messages_total", "outcome" => outcome).increment(1);
    #[cfg(feature = "testing")]
    state.stats.add(outcome);
}

/// A message's orders as decoded: the valid ones, and why any others were not.
#[derive(Debug, Default)]
pub struct Decoded {
    pub orders: Vec<OrderMessage>,
    /// Charges buy could not match to a live payment attempt, for the books to settle (ADR 53).
    pub charges: Vec<OrderCharge>,
    /// Orders that can never be valid (a field that does not decode, a quantity out of range):
    /// acked, logged with what they were, and counted.
    pub invalid: Vec<String>,
}

/// Decodes the message's data: a batch of orders, or charges to settle (ADR 34, ADR 53). Each
/// order is read on its own: one that cannot be valid (a field that does not decode, a quantity
/// out of range) is reported in `invalid` and its neighbours go on; only a message that is no
/// batch at all is undecodable.
pub fn decode(bytes: &[u8]) -> Result<Decoded, HandleError> {
    #[derive(Deserialize)]
    struct Wire {
        orders: Vec<Box<serde_json::value::RawValue>>,
        #[serde(default, rename = "refunds")]
        charges: Vec<OrderCharge>,
    }
    let Wire { orders, charges } = serde_json::from_slice(bytes).map_err(|e| {
        HandleError::Undecodable(anyhow::Error::new(e).context("not an order batch"))
    })?;
    if orders.is_empty() && charges.is_empty() {
        return Err(HandleError::Undecodable(anyhow::anyhow!(
            "a batch of no orders"
        )));
    }
    let mut decoded = Decoded {
        charges,
        ..Decoded::default()
    };
    for raw in orders {
        match serde_json::from_str::<OrderMessage>(raw.get()) {
            Ok(o) => decoded.orders.push(o),
            // The order as it came, for whoever reconciles it with the payment provider.
            Err(e) => decoded.invalid.push(format!("{e}: {}", raw.get())),
        }
    }
    Ok(decoded)
}

/// Persists the orders of one message, refunds the rejected ones and mirrors every outcome in
/// the gate in one script call per event. Idempotent per order. `Ok` (each order's status, in
/// input order) once every order has its outcome: the message may be acked. An order the books
/// refuse for good does not hold its neighbours back: they are persisted and mirrored all the
/// same, and the message is then answered `Retryable` for that order alone to be tried again
/// (and end in the dead-letter topic, ADR 34).
///
/// The orders go in parts of what the books decide all or nothing (one transaction: the whole
/// message on PostgreSQL, 250 orders on Spanner), each persisted, owed and mirrored before the
/// next: an error leaves nothing of its part decided, and every part before it owed and
/// mirrored, on every engine (the redelivery finds those parts' orders decided).
pub async fn handle_batch(
    state: &AppState,
    orders: &[OrderMessage],
) -> Result<Vec<OrderStatus>, HandleError> {
    let mut statuses = Vec::with_capacity(orders.len());
    let mut refused = 0;
    for part in orders.chunks(state.repo.atomic_batch().max(1)) {
        match handle_part(state, part).await {
            Ok(s) => statuses.extend(s),
            Err(HandleError::Refused { refused: n, .. }) => refused += n,
            Err(e) => return Err(e),
        }
    }
    if refused > 0 {
        return Err(HandleError::Refused {
            refused,
            total: orders.len(),
        });
    }
    Ok(statuses)
}

/// [`handle_batch`] of one part the books decide all or nothing.
async fn handle_part(
    state: &AppState,
    orders: &[OrderMessage],
) -> Result<Vec<OrderStatus>, HandleError> {
    // A decoded order is a paid order: never drop it. Even a refusal that looks permanent
    // (e.g. its ticket type missing from the database after a partial seed) is answered
    // non-2xx, so after the retries it waits in the dead-letter topic for an operator.
    let outcomes = persist_isolating(state.repo.as_ref(), orders).await?;
    let mut refused = vec![];
    let mut decided: Vec<(&OrderMessage, &Persisted)> = Vec::with_capacity(orders.len());
    for (msg, outcome) in orders.iter().zip(&outcomes) {
        match outcome {
            Ok(p) => {
                count(state, msg, p);
                decided.push((msg, p));
            }
            Err(Refused(why)) => {
                tracing::error!(order_id = %msg.order_id, reason = why.as_str(), "the books refuse this paid order; it will be redelivered");
                refused.push(msg.order_id);
            }
        }
    }
    // Every refund owed is in the books before the gate shows "rejected" (ADR 39); the
    // provider is asked at once, and the refunder asks again for any it could not make. Owed:
    // the charge of a rejected order, and a charge the books do not keep for a confirmed one
    // (a second attempt after Redis went back in time, ADR 52: the first charge paid it). The
    // books settle them by their one rule (ADR 53), as they do any charge buy hands over.
    let owed: Vec<OrderCharge> = decided
        .iter()
        .filter(|(msg, p)| p.status == OrderStatus::Rejected || p.payment_ref != msg.payment_ref)
        .map(|(msg, _)| OrderCharge {
            order_id: msg.order_id,
            payment_ref: msg.payment_ref.clone(),
            amount_cents: msg.amount_cents,
        })
        .collect();
    settle_and_refund(state, &owed).await?;
    // If Redis fails here the database already holds the orders; the redelivery finds them
    // persisted and finishes this step.
    let mut events: Vec<&EventId> = decided.iter().map(|(m, _)| &m.event).collect();
    events.sort_unstable();
    events.dedup();
    for event in events {
        let of_event: Vec<_> = decided
            .iter()
            .filter(|(m, _)| &m.event == event)
            .copied()
            .collect();
        mirror(state, event, &of_event).await?;
    }
    if !refused.is_empty() {
        return Err(HandleError::Refused {
            refused: refused.len(),
            total: orders.len(),
        });
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.map_or(OrderStatus::Rejected, |p| p.status))
        .collect())
}

/// Mirrors the books' decisions for orders of one event in the gate. A Redis found gone back in
/// time (ADR 56) is first repaired from the books, every order of the event, live: the fans of
/// orders it lost read their outcome again, and no ticket the books sold stays on sale there.
async fn mirror(
    state: &AppState,
    event: &EventId,
    orders: &[(&OrderMessage, &Persisted)],
) -> Result<(), HandleError> {
    match state.gate.finalize_all(event, orders).await {
        Err(GateError::WentBack(_)) => {
            recovery::repair_and_raise(state.gate.as_ref(), state.repo.as_ref(), event)
                .await
                .map_err(HandleError::Repair)?;
            state.gate.finalize_all(event, orders).await?;
        }
        other => {
            other?;
        }
    }
    Ok(())
}

/// Has the books settle `charges` (ADR 53): each is kept if it paid its order, confirmed, and
/// owed back otherwise (the message is retried if that fails: nothing is acked before the debt
/// is durable). Then asks the provider for each refund still open; one it cannot make now
/// stays owed for the refunder ([`refund_due`]).
pub async fn settle_and_refund(
    state: &AppState,
    charges: &[OrderCharge],
) -> Result<(), HandleError> {
    if charges.is_empty() {
        return Ok(());
    }
    let open = state
        .repo
        .settle_charges(charges, state.refund_lease)
        .await
        .map_err(HandleError::Charges)?;
    futures::future::join_all(open.iter().map(|r| refund_one(state, r))).await;
    Ok(())
}

/// Asks the provider for one refund and records it done; logs and counts a failure (the
/// refund stays owed).
async fn refund_one(state: &AppState, r: &OrderCharge) -> bool {
    match state
        .payments
        .refund(r.order_id, &r.payment_ref, r.amount_cents)
        .await
    {
        Ok(()) => {
            metrics::counter!("refunds_total", "outcome" => "done").increment(1);
            if let Err(e) = state.repo.refund_done(&r.payment_ref).await {
                // The provider refunds a charge once: asking again later is harmless.
                tracing::warn!(order_id = %r.order_id, error = %e, "refund made, but not yet recorded as done");
            }
            true
        }
        Err(e) => {
            metrics::counter!("refunds_total", "outcome" => "failed").increment(1);
            tracing::warn!(order_id = %r.order_id, error = %e, "refund failed; it stays owed and is retried");
            false
        }
    }
}

/// One pass of the refunder: claims the refunds that are due (each leased for longer after
/// every failed attempt) and asks the provider for them. Returns how many were made.
pub async fn refund_due(state: &AppState) -> Result<usize, RepoError> {
    let due = state.repo.claim_refunds(100, state.refund_lease).await?;
    let done = futures::future::join_all(due.iter().map(|r| refund_one(state, r))).await;
    Ok(done.into_iter().filter(|d| *d).count())
}

/// Runs the refunder forever, and keeps the gauges of refunds owed (`refunds_outstanding`,
/// `refunds_oldest_seconds`) current for the alert.
pub async fn refunder(state: AppState, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match refund_due(&state).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(refunds = n, "refunder made refunds owed"),
            Err(e) => tracing::warn!(error = %e, "refunder pass failed"),
        }
        if let Ok((n, oldest)) = state.repo.refunds_outstanding().await {
            metrics::gauge!("refunds_outstanding").set(n as f64);
            let age = oldest.map_or(0.0, |t| (chrono::Utc::now() - t).as_seconds_f64());
            metrics::gauge!("refunds_oldest_seconds").set(age);
        }
    }
}

/// One pass of the charge sweeper: the provider's charges from `grace` ago that the books never
/// heard of (Redis went back in time between a charge and its order's publication, and lost
/// the payment's record) are handed to the books, which owe them back (ADR 53), and refunded.
/// Returns how many were found. Each charge is looked at in three passes (the window), so a
/// pass that fails leaves it to the next.
pub async fn sweep_charges(
    state: &AppState,
    list: &dyn ChargeList,
    grace: Duration,
    every: Duration,
) -> anyhow::Result<usize> {
    let now = chrono::Utc::now();
    let unknown =
        recovery::money::unknown_charges(list, state.repo.as_ref(), now, grace, every * 3).await?;
    for c in &unknown {
        tracing::warn!(order_id = %c.order_id, payment_ref = c.payment_ref, amount_cents = c.amount_cents, "a charge the books never heard of (Redis lost its payment's record): owing it back");
    }
    metrics::counter!("charges_unknown_total").increment(unknown.len() as u64);
    settle_and_refund(state, &unknown).await?;
    Ok(unknown.len())
}

/// Runs the charge sweeper forever ([`sweep_charges`]).
pub async fn charge_sweeper(
    state: AppState,
    list: Arc<dyn ChargeList>,
    grace: Duration,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_charges(&state, list.as_ref(), grace, every).await {
            tracing::warn!(error = %e, "charge sweep failed; the next pass looks again");
        }
    }
}

/// Counts and logs what the books decided for one order. The line is written in a span of the
/// order's own, in the trace of the fan's payment when the message carries it: Cloud Logging
/// and Cloud Trace show it beside that fan's reserve and pay, while the message's own lines
/// stay in the push request's trace.
fn count(state: &AppState, msg: &OrderMessage, p: &Persisted) {
    let _in_fans_trace = match &msg.trace {
        Some(t) => tracing::info_span!(
            "order",
            order_id = %msg.order_id,
            trace_id = t.trace_id(),
            span_id = t.span_id()
        ),
        None => tracing::info_span!("order", order_id = %msg.order_id),
    }
    .entered();
    if p.duplicate {
        counted(state, "duplicate");
        tracing::debug!(status = p.status.as_str(), "duplicate delivery absorbed");
    } else if p.status == OrderStatus::Rejected {
        counted(state, "rejected");
        tracing::warn!("database refused the order: no capacity left; refunding");
    } else {
        counted(state, "persisted");
        // Payment approved -> order persisted: what a fan waits for after paying.
        let waited = (chrono::Utc::now() - msg.paid_at)
            .to_std()
            .unwrap_or_default();
        metrics::histogram!("order_end_to_end_seconds").record(waited.as_secs_f64());
        // One line per order (thousands a sale, not millions): the fan's trace shows the end.
        tracing::info!(tickets = p.tickets.len(), "order persisted");
    }
}

/// Persists `orders` as one batch. When the batch as a whole fails for a reason that is not
/// worth retrying as it is (a value the database refuses that no check before the write
/// foresaw), it is halved until the order at fault stands alone and is refused, so that its
/// neighbours are still persisted.
fn persist_isolating<'a>(
    repo: &'a dyn OrderRepository,
    orders: &'a [OrderMessage],
) -> futures::future::BoxFuture<'a, Result<Vec<Outcome>, RepoError>> {
    Box::pin(async move {
        match repo.persist_batch(orders).await {
            Err(e) if !e.is_retryable() => {
                if let [only] = orders {
                    tracing::warn!(order_id = %only.order_id, error = %e, "the database refuses this order");
                    return Ok(vec![Err(Refused(e.to_string()))]);
                }
                let (a, b) = orders.split_at(orders.len() / 2);
                let mut outcomes = persist_isolating(repo, a).await?;
                outcomes.extend(persist_isolating(repo, b).await?);
                Ok(outcomes)
            }
            other => other,
        }
    })
}

#[derive(Deserialize)]
pub struct AuthQuery {
    token: Option<String>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A push message's data, decoded from base64 once: what the signature covers and what the
/// orders are read from.
pub fn message_data(msg: &PushMessage) -> Result<Vec<u8>, HandleError> {
    let data = msg
        .data
        .as_deref()
        .ok_or_else(|| HandleError::Undecodable(anyhow::anyhow!("no data")))?;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| HandleError::Undecodable(anyhow::Error::new(e).context("data is not base64")))
}

/// `POST /pubsub/orders`
pub async fn push(
    State(state): State<Arc<AppState>>,
    Query(q): Query<AuthQuery>,
    body: axum::body::Bytes,
) -> Response {
    if let PushAuth::Token(expected) = &state.auth {
        let ok = q
            .token
            .as_deref()
            .is_some_and(|t| constant_time_eq(t.as_bytes(), expected.expose_secret().as_bytes()));
        if !ok {
            return web::ApiError::Unauthorized.into_response();
        }
    }
    let envelope: Envelope = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => {
            counted(&state, "permanent");
            tracing::error!(error = %e, "push body is not a Pub/Sub envelope; acked and dropped");
            return StatusCode::NO_CONTENT.into_response();
        }
    };
    let data = message_data(&envelope.message);
    let signature = envelope
        .message
        .attributes
        .get(domain::signing::SIGNATURE_ATTRIBUTE)
        .map(String::as_str);
    if let Some(current) = &state.signing
        && !data.as_deref().is_ok_and(|d| {
            let accepted = Accepted {
                current,
                previous: state.signing_previous.as_ref(),
            };
            accepted.signed(d, signature)
        })
    {
        // Not buy's: acked so it never comes back, never persisted, and loud.
        counted(&state, "forged");
        tracing::error!(message_id = envelope.message.message_id(), attributes = ?envelope.message.attributes, "message without a valid signature refused; acked and dropped");
        return StatusCode::NO_CONTENT.into_response();
    }
    let span = tracing::info_span!(
        "message",
        message_id = %envelope.message.message_id(),
        delivery_attempt = envelope.delivery_attempt,
        orders = tracing::field::Empty,
        order_id = tracing::field::Empty,
    );
    async move {
        let result = match data.and_then(|d| decode(&d)) {
            Ok(decoded) => {
                let span = tracing::Span::current();
                span.record("orders", decoded.orders.len());
                if let [only] = decoded.orders.as_slice() {
                    span.record("order_id", tracing::field::display(only.order_id));
                }
                for reason in &decoded.invalid {
                    counted(&state, "permanent");
                    tracing::error!(reason, "permanently bad order in the message; dropped");
                }
                match settle_and_refund(&state, &decoded.charges).await {
                    Err(e) => Err(e),
                    Ok(()) if decoded.orders.is_empty() => Ok(vec![]),
                    Ok(()) => handle_batch(&state, &decoded.orders).await,
                }
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(statuses) => {
                if !statuses.is_empty() {
                    let confirmed = statuses
                        .iter()
                        .filter(|s| **s == OrderStatus::Confirmed)
                        .count();
                    tracing::info!(
                        confirmed,
                        rejected = statuses.len() - confirmed,
                        "orders persisted"
                    );
                }
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) if !e.is_retryable() => {
                counted(&state, "permanent");
                tracing::error!(error = %e, "permanently bad message; acked and dropped");
                StatusCode::NO_CONTENT.into_response()
            }
            Err(e) => {
                counted(&state, "retryable");
                // Logged here once, in the message's span; Pub/Sub reads only the status.
                tracing::warn!(error = %e, "will be redelivered");
                ApiError::Unavailable {
                    detail: "The order could not be processed yet; it will be redelivered.".into(),
                    retry_after_secs: 2,
                }
                .into_response()
            }
        }
    }
    .instrument(span)
    .await
}

/// Checks the config, then serves (readiness first, see `web::http::serve_when_ready`) until
/// SIGTERM. A bad config stops the service at once; an unreachable database or Redis is waited
/// for.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let auth = match (config.push_auth, config.push_token.clone()) {
        (PushAuthMode::Iam, _) => PushAuth::CloudRunIam,
        (PushAuthMode::Token, Some(t)) if t.expose_secret().len() >= 16 => PushAuth::Token(t),
        (PushAuthMode::Token, _) => {
            anyhow::bail!("PUSH_TOKEN must be set (at least 16 characters) when PUSH_AUTH=token")
        }
    };
    if matches!(auth, PushAuth::CloudRunIam) && config.order_signing_key.is_none() {
        anyhow::bail!("ORDER_SIGNING_KEY must be set with PUSH_AUTH=iam (ADR 40)");
    }
    let repo = config.db.repository()?;
    web::http::serve_when_ready(config.http.port, web::http::Peers::Ignored, || {
        start(&config, repo.clone(), auth.clone())
    })
    .await
}

/// Connects the database and Redis, starts the gate watcher and the refunder, and returns the
/// router.
async fn start(
    config: &Config,
    repo: Arc<dyn OrderRepository>,
    auth: PushAuth,
) -> anyhow::Result<axum::Router> {
    repo.ping().await.context("cannot reach the database")?;
    let gate = config.redis.gate().await?;
    if config.gate_watch_secs > 0 {
        let secs = std::time::Duration::from_secs;
        let opts = recovery::WatchOptions {
            every: secs(config.gate_watch_secs),
            behind_after: secs(config.gate_behind_secs),
            restore: recovery::RestoreOptions {
                quiet: secs(config.gate_restore_quiet_secs),
                ..Default::default()
            },
        };
        tokio::spawn(recovery::watch(gate.clone(), repo.clone(), opts));
    }
    let (payments, charges) = config.payments.provider_and_list().await?;
    let state = AppState {
        signing: config.order_signing_key.clone(),
        signing_previous: config.order_signing_key_previous.clone(),
        payments,
        ..AppState::new(repo, gate, auth)
    };
    tokio::spawn(refunder(
        state.clone(),
        Duration::from_secs(config.refund_retry_secs.max(1)),
    ));
    match charges {
        Some(list) if config.charge_sweep_secs > 0 => {
            tokio::spawn(charge_sweeper(
                state.clone(),
                list,
                Duration::from_secs(config.charge_grace_secs),
                Duration::from_secs(config.charge_sweep_secs),
            ));
        }
        _ => tracing::info!(
            "no sweep of the provider's charges (no list of them, or CHARGE_SWEEP_SECS=0): `ops audit` reports a charge the books never heard of"
        ),
    }
    Ok(app(state))
}
