//! buy: a fan's writes. Reserve (the Redis gate decides atomically), pay (the provider
//! charges, then the order goes to Pub/Sub), cancel. A background relay publishes paid
//! orders whose publish failed, so a Pub/Sub outage never loses an order.
//!
//! By job: [`handlers`] (the routes), [`settle`] (a payment, from wherever it stopped),
//! [`relay`] (the outbox relay, a background job), [`limits`] and [`client`] (who a request
//! is from, and how much it may ask).

mod client;
mod handlers;
mod limits;
mod relay;
mod room;
mod settle;

pub use client::ClientAddr;
pub use handlers::{PayBody, ReserveBody, cancel, pay, reserve};
pub use limits::Limits;
pub use relay::{RelayError, relay_once, spawn_relay};
pub use room::{ADMISSION_HEADER, JoinBody, RoomAnswer, RoomKeys, join};
pub use settle::{Caller, PAYMENT_GIVE_UP, SettleError, settle};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use domain::{EventId, OrderStatus};
use gate::ratelimit::RateLimiter;
use gate::{Checkout, RateLimitArgs, RedisArgs};
use payments::PaymentProvider;
use payments::ledger::PaymentArgs;
use pubsub::OrderPublisher;
use pubsub::PubSubArgs;
use utoipa::OpenApi;
use web::HttpArgs;
use web::openapi::Problem;
// utoipa's path items, named without their module: a module prefix would become the
// operations' tag in the document.
use handlers::{__path_cancel, __path_pay, __path_reserve};
use room::__path_join;

/// Configuration from the environment.
#[derive(clap::Parser, Debug)]
pub struct Config {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub pubsub: PubSubArgs,
    #[command(flatten)]
    pub payments: PaymentArgs,
    /// How often the outbox relay looks for paid orders not yet published, in milliseconds.
    #[arg(long, env = "RELAY_INTERVAL_MS", default_value_t = 2000)]
    pub relay_interval_ms: u64,
    /// A payment older than this without a published message is the relay's to finish, in ms.
    #[arg(long, env = "RELAY_GRACE_MS", default_value_t = 10_000)]
    pub relay_grace_ms: u64,
    /// An order a relay took is left to it this long before another instance's relay may take
    /// it (if the first failed or died), in milliseconds.
    #[arg(long, env = "RELAY_LEASE_MS", default_value_t = 30_000)]
    pub relay_lease_ms: u64,
    /// How long a payment's answer waits for the order's outcome before it says `confirming`
    /// (the fan then polls), in milliseconds; 0 answers at once (ADR 35).
    #[arg(long, env = "PAY_CONFIRM_WAIT_MS", default_value_t = 1_000)]
    pub pay_confirm_wait_ms: u64,
    /// A published order not persisted after this long is published again (the consumer is
    /// idempotent), so a message the broker lost cannot lose a paid order. In ms; longer than
    /// the worst backlog the queue is expected to drain.
    #[arg(long, env = "REDELIVER_AFTER_MS", default_value_t = 300_000)]
    pub redeliver_after_ms: u64,
    #[command(flatten)]
    pub limits: RateLimitArgs,
    /// The key buy signed with before ORDER_SIGNING_KEY, during a rotation: admission tokens
    /// signed with it are still accepted (ADR 59).
    #[arg(long, env = "ORDER_SIGNING_KEY_PREVIOUS", hide_env_values = true, value_parser = domain::signing::MessageKey::parse)]
    pub order_signing_key_previous: Option<domain::signing::MessageKey>,
}

/// Shared state: the gate, the publisher and the payment provider, as trait objects.
#[derive(Clone)]
pub struct AppState {
    pub gate: Arc<dyn Checkout>,
    pub publisher: Arc<dyn OrderPublisher>,
    pub payments: Arc<dyn PaymentProvider>,
    /// `None`: no rate limits (tests of other things).
    pub limits: Option<Limits>,
    /// See [`Config::redeliver_after_ms`].
    pub redeliver_after: Duration,
    /// See [`Config::pay_confirm_wait_ms`].
    pub confirm_wait: Duration,
    /// Events this instance has seen in the gate: one that goes missing from it later is being
    /// rebuilt after Redis lost its data (503, retry), not unknown (404).
    pub seen_events: SeenEvents,
    /// The waiting room's admission tokens are signed and checked with these (`None`: no
    /// token is genuine, so while a room is on nobody is admitted to reserve).
    pub room_keys: Option<RoomKeys>,
}

/// See [`AppState::seen_events`].
/// The gate down or busy is a 503 the fan may retry; anything else it says is ours (500).
fn gate_error(e: gate::GateError) -> web::ApiError {
    if e.is_unavailable() {
        web::http::unavailable("ticket gate", &e)
    } else {
        web::ApiError::Internal(e.into())
    }
}

#[derive(Clone, Default)]
pub struct SeenEvents(Arc<std::sync::RwLock<std::collections::HashSet<EventId>>>);

impl SeenEvents {
    pub(crate) fn saw(&self, event: &EventId) {
        if !self.knows(event) {
            self.0.write().expect("lock").insert(event.clone());
        }
    }
    pub(crate) fn knows(&self, event: &EventId) -> bool {
        self.0.read().expect("lock").contains(event)
    }
}

/// buy's OpenAPI document (served at `/openapi.json`, committed as docs/openapi/buy.json).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Frequency Festival VIP tickets: buy",
        version = "1",
        description = "A fan's writes: join the waiting room, reserve (a hold of a few minutes), pay, cancel. Every refusal is RFC 9457 problem+json. Payment tokens of the simulated provider: `tok_approve` approves, `tok_decline` declines, `tok_unavailable` acts as a provider outage."
    ),
    paths(reserve, pay, cancel, join),
    components(schemas(
        room::JoinBody,
        room::RoomAnswer,
        handlers::ReserveBody,
        handlers::Reserved,
        handlers::PayBody,
        handlers::OrderState,
        OrderStatus,
        Problem
    ))
)]
pub struct ApiDoc;

/// The routes.
pub fn app(state: AppState) -> Router {
    // One Arc for the state: the handlers and the middleware each take a clone per request.
    let state = Arc::new(state);
    let fans = Router::new()
        .route("/v1/events/{event}/orders", post(handlers::reserve))
        .route("/v1/orders/{id}/payment", post(handlers::pay))
        .route("/v1/orders/{id}/cancel", post(handlers::cancel))
        .route("/v1/events/{event}/room", post(room::join));
    // Without a per-IP limit or a hold cap the layer would only pass every request on.
    let fans = if state.limits.as_ref().is_some_and(Limits::needs_client) {
        fans.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::admit_client,
        ))
    } else {
        fans
    };
    web::http::finish(
        fans.route("/openapi.json", web::openapi::route(&ApiDoc::openapi()))
            .with_state(state),
    )
}

/// Builds everything from the config and serves until SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    web::http::serve_when_ready(config.http.port, web::http::Peers::Recorded, || {
        start(&config)
    })
    .await
}

/// Connects Redis and the publisher, starts the outbox relay and returns the router.
async fn start(config: &Config) -> anyhow::Result<axum::Router> {
    let gate = config.redis.gate().await?;
    let publisher = config.pubsub.publisher().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot create the Pub/Sub publisher for {}: {e}",
            config.pubsub.topic_path()
        )
    })?;
    let limits = Limits {
        limiter: Arc::new(RateLimiter::new(gate.connection(), config.redis.timeout())),
        per_ip: config.limits.per_ip(),
        per_email: config.limits.per_email(),
        holds_per_client: config.limits.holds_per_client,
        trusted_proxy_hops: config.limits.trusted_proxy_hops,
    };
    let state = AppState {
        gate: Arc::new(gate),
        publisher: Arc::new(publisher),
        payments: config.payments.provider().await?,
        limits: Some(limits),
        redeliver_after: Duration::from_millis(config.redeliver_after_ms),
        confirm_wait: Duration::from_millis(config.pay_confirm_wait_ms),
        seen_events: SeenEvents::default(),
        room_keys: config
            .pubsub
            .order_signing_key
            .clone()
            .map(|current| RoomKeys {
                current,
                previous: config.order_signing_key_previous.clone(),
            }),
    };
    spawn_relay(
        state.clone(),
        Duration::from_millis(config.relay_interval_ms),
        Duration::from_millis(config.relay_grace_ms),
        Duration::from_millis(config.relay_lease_ms),
    );
    Ok(app(state))
}
