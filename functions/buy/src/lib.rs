//! buy: a fan's writes. Reserve (the Redis gate decides atomically), pay (the provider
//! charges, then the order goes to Pub/Sub), cancel. A background relay publishes paid
//! orders whose publish failed, so a Pub/Sub outage never loses an order.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use domain::{
    Email, EventId, IdempotencyKey, OrderId, OrderMessage, OrderStatus, PaymentToken, Quantity,
    RefundOwed, TicketTypeId, TraceContext,
};
use gate::ratelimit::{Decision, Policy, RateLimit, RateLimiter};
use gate::{
    AdmissionRules, Approval, Checkout, PayBegin, RateLimitArgs, RedisArgs, ReserveOutcome,
};
use payments::{Charge, PaymentProvider, SimulatedPayments};
use pubsub::OrderPublisher;
use pubsub::PubSubArgs;
use serde::{Deserialize, Serialize};
use utoipa::{OpenApi, ToSchema};
use web::ApiError;
use web::HttpArgs;
use web::http::{ApiJson, unavailable};
use web::openapi::{Always, BodyRefusals, Busy, OrderNotFound, Problem};
use web::rfc3339;

/// Configuration from the environment.
#[derive(clap::Parser, Debug)]
pub struct Config {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    #[command(flatten)]
    pub pubsub: PubSubArgs,
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
}

/// Rate limits (bot protection) and where they come from.
#[derive(Clone)]
pub struct Limits {
    pub limiter: Arc<dyn RateLimit>,
    pub per_ip: Policy,
    pub per_email: Policy,
    /// See [`RateLimitArgs::trusted_proxy_hops`].
    pub trusted_proxy_hops: usize,
    /// See [`RateLimitArgs::holds_per_client`].
    pub holds_per_client: u32,
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
}

/// See [`AppState::seen_events`].
#[derive(Clone, Default)]
pub struct SeenEvents(Arc<std::sync::RwLock<std::collections::HashSet<EventId>>>);

impl SeenEvents {
    fn saw(&self, event: &EventId) {
        if !self.knows(event) {
            self.0.write().expect("lock").insert(event.clone());
        }
    }
    fn knows(&self, event: &EventId) -> bool {
        self.0.read().expect("lock").contains(event)
    }
}

/// buy's OpenAPI document (served at `/openapi.json`, committed as docs/openapi/buy.json).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Frequency Festival VIP tickets: buy",
        version = "1",
        description = "A fan's writes: reserve (a hold of a few minutes), pay, cancel. Every refusal is RFC 9457 problem+json. Payment tokens of the simulated provider: `tok_approve` approves, `tok_decline` declines, `tok_unavailable` acts as a provider outage."
    ),
    paths(reserve, pay, cancel),
    components(schemas(ReserveBody, Reserved, PayBody, OrderState, OrderStatus, Problem))
)]
pub struct ApiDoc;

/// The routes.
pub fn app(state: AppState) -> Router {
    // One Arc for the state: the handlers and the middleware each take a clone per request.
    let state = Arc::new(state);
    let fans = Router::new()
        .route("/v1/events/{event}/orders", post(reserve))
        .route("/v1/orders/{id}/payment", post(pay))
        .route("/v1/orders/{id}/cancel", post(cancel));
    // Without a per-IP limit the layer would only pass every request on.
    let per_ip = state.limits.as_ref().is_some_and(|l| l.per_ip.enabled());
    let fans = if per_ip {
        fans.route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            per_ip_limit,
        ))
    } else {
        fans
    };
    web::http::finish(
        fans.route("/openapi.json", web::openapi::route(&ApiDoc::openapi()))
            .with_state(state),
    )
}

/// The client's address: the TCP peer, or with `hops` trusted proxies in front, the entry they
/// appended to `X-Forwarded-For` (entries before it are the client's own say and are ignored).
/// IPv6 clients count per /64, the block one subscriber gets. `None` when neither is known
/// (a request made in process, as in tests).
pub fn client_ip(headers: &HeaderMap, extensions: &Extensions, hops: usize) -> Option<String> {
    let forwarded = (hops > 0)
        .then(|| headers.get("x-forwarded-for")?.to_str().ok())
        .flatten()
        .and_then(|xff| {
            let parts: Vec<&str> = xff.split(',').map(str::trim).collect();
            parts.len().checked_sub(hops)?;
            parts[parts.len() - hops].parse::<IpAddr>().ok()
        });
    let ip = forwarded.or_else(|| {
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
    })?;
    Some(match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        ip => ip.to_string(),
    })
}

/// The client's address for the per-client hold cap (`None` when there is no cap).
pub struct Client(Option<String>);

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(state.limits.as_ref().and_then(|l| {
            (l.holds_per_client > 0)
                .then(|| client_ip(&parts.headers, &parts.extensions, l.trusted_proxy_hops))
                .flatten()
        })))
    }
}

fn limited(policy: &'static str, p: Policy, retry_after: Duration) -> ApiError {
    let window_secs = (u64::from(p.burst) * 60).div_ceil(u64::from(p.per_minute.max(1)));
    refused(policy, p.burst, window_secs, retry_after)
}

/// A 429 under `policy`: `burst` allowed per `window_secs`, counted.
fn refused(policy: &'static str, burst: u32, window_secs: u64, retry_after: Duration) -> ApiError {
    metrics::counter!("rate_limited_total", "policy" => policy).increment(1);
    ApiError::RateLimited {
        policy,
        burst,
        window_secs,
        retry_after_secs: retry_after.as_millis().div_ceil(1000).max(1) as u64,
    }
}

/// Refuses a client IP over its budget before any work is done.
async fn per_ip_limit(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if let Some(l) = &state.limits {
        let ip = client_ip(req.headers(), req.extensions(), l.trusted_proxy_hops);
        let ip = ip.as_deref().unwrap_or("unknown");
        if let Some(Decision::Limited { retry_after }) =
            l.limiter.check(&format!("ip:{ip}"), l.per_ip).await
        {
            return limited("per-ip", l.per_ip, retry_after).into_response();
        }
    }
    next.run(req).await
}

/// Body of `POST /v1/events/{event}/orders`.
#[derive(Deserialize, ToSchema)]
pub struct ReserveBody {
    /// A ticket type of the event, e.g. `vip-3-day`.
    #[schema(example = "vip-3-day", pattern = "^[a-z0-9-]{1,64}$")]
    pub ticket_type: String,
    /// How many tickets, 1 to 20 (and at most the ticket type's per-customer limit).
    #[schema(minimum = 1, maximum = 20, example = 2)]
    pub quantity: i64,
    /// Where the tickets go; the per-customer limit counts per address.
    #[schema(example = "fan@example.at", min_length = 3, max_length = 254)]
    pub email: String,
}

/// A hold: pay before `hold_expires_at`.
#[derive(Serialize, ToSchema)]
struct Reserved {
    order_id: String,
    status: OrderStatus,
    hold_expires_at: String,
    server_time: String,
}

/// `POST /v1/events/{event}/orders` with `Idempotency-Key`.
#[utoipa::path(
    post,
    path = "/v1/events/{event}/orders",
    summary = "Reserve tickets (a hold until hold_expires_at)",
    params(
        ("event" = String, Path, description = "Event slug, e.g. `frequency-2027`"),
        ("Idempotency-Key" = String, Header, pattern = "^[!-~]{8,128}$", description = "A fresh UUID per purchase attempt, sent again unchanged on every retry of that attempt: the same key with the same body answers the first answer again"),
    ),
    request_body = ReserveBody,
    responses(
        (status = 202, description = "Held", body = Reserved,
            headers(("Location" = String, description = "The order's status URL"))),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Sold out, or fewer left than asked for (`available`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid field or ticket type, the per-customer limit (`limit`, `remaining`), or the Idempotency-Key reused with another body", body = Problem, content_type = "application/problem+json"),
        (status = 425, description = "The sale has not opened yet; `Retry-After` says when it does", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds until the sale opens"))),
        BodyRefusals,
        Busy,
        Always,
    )
)]
pub async fn reserve(
    State(state): State<Arc<AppState>>,
    Path(event): Path<String>,
    headers: HeaderMap,
    Client(client): Client,
    ApiJson(body): ApiJson<ReserveBody>,
) -> Result<Response, ApiError> {
    let event = EventId::parse(&event).map_err(|_| ApiError::NotFound("event"))?;
    let key = headers
        .get("idempotency-key")
        .ok_or_else(|| {
            ApiError::BadRequest(
                "The Idempotency-Key header is required (a fresh UUID per purchase attempt)."
                    .into(),
            )
        })?
        .to_str()
        .map_err(|_| domain::Invalid::new("Idempotency-Key", "must be visible ASCII"))
        .and_then(IdempotencyKey::parse)?;
    let ticket_type = TicketTypeId::parse(&body.ticket_type)?;
    let quantity = Quantity::parse(body.quantity)?;
    let email = Email::parse(&body.email)?;
    // The per-e-mail limit and the per-client cap are checked inside the reservation script
    // (one Redis call).
    let per_email = state.limits.as_ref().map(|l| l.per_email);
    let admission = AdmissionRules {
        per_email,
        holds_per_client: state.limits.as_ref().map_or(0, |l| l.holds_per_client),
        client,
    };
    let outcome = state
        .gate
        .reserve(&event, &ticket_type, quantity, &email, &key, &admission)
        .await?;
    count_reservation(&outcome);
    if outcome != ReserveOutcome::UnknownEvent {
        state.seen_events.saw(&event);
    }
    let (order_id, hold_expires_at, replayed) = match outcome {
        ReserveOutcome::Reserved {
            order_id,
            hold_expires_at,
        } => (order_id, hold_expires_at, false),
        ReserveOutcome::Replayed {
            order_id,
            hold_expires_at,
        } => (order_id, hold_expires_at, true),
        ReserveOutcome::IdempotencyConflict => return Err(ApiError::IdempotencyKeyReused),
        ReserveOutcome::TooEarly { opens_in_ms } => {
            return Err(ApiError::TooEarly {
                retry_after_secs: opens_in_ms.div_ceil(1000),
            });
        }
        ReserveOutcome::UnknownEvent if state.seen_events.knows(&event) => {
            return Err(paused());
        }
        ReserveOutcome::UnknownEvent => return Err(ApiError::NotFound("event")),
        ReserveOutcome::UnknownTicketType => {
            return Err(
                domain::Invalid::new("ticket_type", "no such ticket type in this event").into(),
            );
        }
        ReserveOutcome::SoldOut => return Err(ApiError::SoldOut),
        ReserveOutcome::NotEnough { available } => {
            return Err(ApiError::NotEnoughLeft { available });
        }
        ReserveOutcome::Limit { limit, remaining } => {
            return Err(ApiError::LimitExceeded { limit, remaining });
        }
        ReserveOutcome::RateLimited { retry_after } => {
            // The script answers this only under the limit it was given.
            return Err(per_email.map_or_else(
                || ApiError::Internal(anyhow::anyhow!("rate limited without a per-e-mail limit")),
                |policy| limited("per-email", policy, retry_after),
            ));
        }
        ReserveOutcome::ClientHolds {
            retry_after,
            window,
        } => {
            return Err(refused(
                "per-client",
                admission.holds_per_client,
                window.as_secs().max(1),
                retry_after,
            ));
        }
        ReserveOutcome::Paused => return Err(paused()),
    };
    if !replayed {
        // Debug: holds are many and most expire; payments and persistence are logged at info.
        tracing::debug!(%order_id, %event, %ticket_type, quantity = quantity.get(), "reserved");
    }
    let id = order_id.to_string();
    let location = format!("/v1/orders/{id}");
    let body = Reserved {
        order_id: id,
        status: OrderStatus::Reserved,
        hold_expires_at: rfc3339::format(hold_expires_at),
        server_time: rfc3339::format(Utc::now()),
    };
    let mut res = (
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response();
    if replayed {
        res.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(res)
}

/// The gate is being rebuilt from the database after Redis lost its data.
fn paused() -> ApiError {
    ApiError::Unavailable {
        detail:
            "The sale is paused for a moment while the ticket gate recovers; please retry shortly."
                .into(),
        retry_after_secs: 5,
    }
}

/// `reservations_total` by outcome.
fn count_reservation(o: &ReserveOutcome) {
    let outcome = match o {
        ReserveOutcome::Reserved { .. } => "reserved",
        ReserveOutcome::Replayed { .. } => "replayed",
        ReserveOutcome::IdempotencyConflict => "idempotency_conflict",
        ReserveOutcome::TooEarly { .. } => "too_early",
        ReserveOutcome::UnknownEvent | ReserveOutcome::UnknownTicketType => "unknown",
        ReserveOutcome::SoldOut => "sold_out",
        ReserveOutcome::NotEnough { .. } => "not_enough",
        ReserveOutcome::Limit { .. } => "limit",
        ReserveOutcome::Paused => "paused",
        ReserveOutcome::RateLimited { .. } | ReserveOutcome::ClientHolds { .. } => "rate_limited",
    };
    metrics::counter!("reservations_total", "outcome" => outcome).increment(1);
}

fn payment(outcome: &'static str) {
    metrics::counter!("payments_total", "outcome" => outcome).increment(1);
}

/// Body of `POST /v1/orders/{id}/payment`.
#[derive(Deserialize, ToSchema)]
pub struct PayBody {
    /// The payment provider's one-time token (simulated: `tok_approve` approves, `tok_decline`
    /// declines).
    #[schema(example = "tok_approve", pattern = "^[!-~]{1,256}$")]
    pub payment_token: String,
}

/// An order's state after a write.
#[derive(Serialize, ToSchema)]
struct OrderState {
    order_id: String,
    status: OrderStatus,
}

fn order_state(id: OrderId, status: OrderStatus) -> OrderState {
    OrderState {
        order_id: id.to_string(),
        status,
    }
}

async fn event_of(state: &AppState, id: &str) -> Result<(EventId, OrderId), ApiError> {
    let id = OrderId::parse(id).map_err(|_| ApiError::NotFound("order"))?;
    let ev = state
        .gate
        .event_of(id)
        .await?
        .ok_or(ApiError::NotFound("order"))?;
    Ok((ev, id))
}

/// Publishes an order paid earlier (read back from the gate) and records that it is published.
async fn publish(state: &AppState, event: &EventId, id: OrderId) -> Result<(), ApiError> {
    let o = state
        .gate
        .order(event, id)
        .await?
        .ok_or(ApiError::NotFound("order"))?;
    let (Some(payment_ref), Some(paid_at)) = (o.payment_ref, o.paid_at) else {
        return Err(ApiError::Internal(anyhow::anyhow!(
            "order {id} confirming without a payment record"
        )));
    };
    let msg = OrderMessage {
        order_id: id,
        event: event.clone(),
        ticket_type: o.ticket_type,
        quantity: o.quantity,
        email: o.email,
        amount_cents: o.amount_cents,
        payment_ref,
        paid_at,
        trace: None,
    };
    publish_message(state, &msg).await
}

/// Publishes an approved order and records that it is published.
async fn publish_message(state: &AppState, msg: &OrderMessage) -> Result<(), ApiError> {
    let (event, id) = (&msg.event, msg.order_id);
    let start = std::time::Instant::now();
    let published = state.publisher.publish(msg).await;
    metrics::histogram!("publish_duration_seconds").record(start.elapsed().as_secs_f64());
    match published {
        Ok(message_id) => {
            metrics::counter!("orders_published_total").increment(1);
            // Debug: the publisher writes one line per message at info.
            tracing::debug!(order_id = %id, message_id, "published");
            state
                .gate
                .mark_published(event, id, state.redeliver_after)
                .await?;
            Ok(())
        }
        Err(e) => {
            metrics::counter!("publish_failures_total").increment(1);
            tracing::warn!(order_id = %id, error = %e, "publish failed; the order stays in the outbox");
            Err(ApiError::Unavailable {
                detail: "Your payment was received and your order is saved, but confirming it is delayed. \
                         Retry this request, or check the order's status: it will be confirmed."
                    .into(),
                retry_after_secs: 3,
            })
        }
    }
}

/// How long a charge may stay unresolved (provider unreachable) before the relay releases it.
pub const PAYMENT_GIVE_UP: Duration = Duration::from_secs(300);

fn state_answer(status: OrderStatus) -> Result<OrderStatus, ApiError> {
    match status {
        OrderStatus::Confirming => Ok(OrderStatus::Confirming),
        OrderStatus::Expired => Err(ApiError::HoldExpired),
        OrderStatus::Cancelled => Err(ApiError::Conflict("This order was cancelled.".into())),
        OrderStatus::Confirmed => Err(ApiError::Conflict(
            "This order is already paid and confirmed.".into(),
        )),
        OrderStatus::Rejected => Err(ApiError::Conflict(
            "This order could not be fulfilled and its payment is refunded (the payment provider may take a moment to show it).".into(),
        )),
        OrderStatus::Reserved => Err(ApiError::Conflict(
            "Another payment attempt for this order is under way or was declined; try again."
                .into(),
        )),
    }
}

/// Who takes an order through payment.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// A fan paying with a token, in a request of this trace (if it carried one).
    Fan {
        token: &'a str,
        trace: Option<&'a TraceContext>,
    },
    /// The outbox relay resuming a payment that stopped: it gives up on a charge whose outcome
    /// stays unknown past [`PAYMENT_GIVE_UP`], and publishes again what was published but not
    /// persisted in time.
    Relay,
}

/// Takes an order through payment, from wherever it stopped. Shared by the handler and the
/// relay; every step is idempotent and bound to one payment attempt, so a retry or a second
/// caller only finishes the work and never charges twice.
pub async fn settle(
    state: &AppState,
    event: &EventId,
    id: OrderId,
    caller: Caller<'_>,
) -> Result<OrderStatus, ApiError> {
    let (token, give_up, republish, trace) = match caller {
        Caller::Fan { token, trace } => (token, None, false, trace),
        Caller::Relay => ("", Some(PAYMENT_GIVE_UP), true, None),
    };
    let (amount_cents, token, attempt) = match state
        .gate
        .pay_begin(event, id, token, give_up)
        .await?
    {
        PayBegin::NotFound => return Err(ApiError::NotFound("order")),
        PayBegin::State(s) => return state_answer(s),
        PayBegin::AlreadyPaid { published: true } if !republish => {
            return Ok(OrderStatus::Confirming);
        }
        PayBegin::AlreadyPaid { published: true } => {
            // The relay found it published long ago and still not persisted.
            metrics::counter!("orders_redelivered_total").increment(1);
            tracing::warn!(order_id = %id, "published but not persisted in time; publishing again");
            publish(state, event, id).await?;
            return Ok(OrderStatus::Confirming);
        }
        PayBegin::AlreadyPaid { published: false } => {
            publish(state, event, id).await?;
            return Ok(OrderStatus::Confirming);
        }
        PayBegin::Stuck { attempt } => {
            payment("given_up");
            tracing::error!(order_id = %id, attempt, "payment outcome unknown for too long; releasing the hold (reconcile with the provider)");
            return match state.gate.pay_abort(event, id, attempt).await? {
                Some(s) => state_answer(s),
                None => Ok(OrderStatus::Confirming),
            };
        }
        PayBegin::Charge {
            amount_cents,
            token,
            attempt,
        } => (amount_cents, token, attempt),
    };
    let charge = match state
        .payments
        .charge(id, attempt, amount_cents, &token)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            payment("unknown");
            // The outcome is unknown (the money may be taken): keep the hold frozen and the
            // order in the outbox; a retry or the relay asks the provider again.
            tracing::warn!(order_id = %id, attempt, error = %e, "payment outcome unknown");
            return Err(ApiError::Unavailable {
                detail: "We could not confirm your payment yet. Your tickets stay held while we \
                         check; look at the order's status in a moment."
                    .into(),
                retry_after_secs: 5,
            });
        }
    };
    match charge {
        Charge::Declined { reason } => {
            payment("declined");
            tracing::info!(order_id = %id, attempt, reason, "payment declined");
            match state.gate.pay_abort(event, id, attempt).await? {
                Some(OrderStatus::Expired) => Err(ApiError::HoldExpired),
                _ => Err(ApiError::PaymentDeclined),
            }
        }
        Charge::Approved { payment_ref } => {
            match state
                .gate
                .pay_approved(event, id, attempt, &payment_ref, Utc::now())
                .await?
            {
                Approval::Recorded(approved) => {
                    payment("approved");
                    let msg = OrderMessage {
                        order_id: id,
                        event: event.clone(),
                        ticket_type: approved.ticket_type,
                        quantity: approved.quantity,
                        email: approved.email,
                        amount_cents: approved.amount_cents,
                        payment_ref: approved.payment_ref,
                        paid_at: approved.paid_at,
                        trace: trace.cloned(),
                    };
                    publish_message(state, &msg).await?;
                    Ok(OrderStatus::Confirming)
                }
                Approval::Stale(status) => {
                    payment("stale_refunded");
                    // Money taken for an attempt that no longer counts: give it back.
                    tracing::warn!(order_id = %id, attempt, payment_ref, "stale approval; refunding");
                    let owed = RefundOwed {
                        order_id: id,
                        payment_ref,
                        amount_cents,
                    };
                    refund_stale(state, &owed).await?;
                    state_answer(status.ok_or(ApiError::NotFound("order"))?)
                }
            }
        }
    }
}

/// Refunds a stale approval's charge at once, or, when the provider cannot do it now, hands
/// the debt to consume-order, which records it in the books and retries it until the provider
/// confirms (ADR 39). Only if both fail is the fan answered 503 (the debt is in the log line).
async fn refund_stale(state: &AppState, owed: &RefundOwed) -> Result<(), ApiError> {
    let Err(e) = state
        .payments
        .refund(owed.order_id, &owed.payment_ref, owed.amount_cents)
        .await
    else {
        return Ok(());
    };
    tracing::warn!(order_id = %owed.order_id, error = %e, "refund failed; handing it to the refunder");
    match state.publisher.publish_refund(owed).await {
        Ok(_) => Ok(()),
        Err(p) => {
            tracing::error!(order_id = %owed.order_id, payment_ref = owed.payment_ref, amount_cents = owed.amount_cents, error = %p, "refund owed could neither be made nor handed on (reconcile with the provider)");
            Err(unavailable("payment provider", &e))
        }
    }
}

/// `POST /v1/orders/{id}/payment`
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/payment",
    summary = "Pay for a held order",
    params(("id" = String, Path, description = "The order id from the reservation")),
    request_body = PayBody,
    responses(
        (status = 202, description = "Paid. The answer waits a moment for the outcome: usually the order is `confirmed` (read `GET /v1/orders/{id}` for the ticket codes) or, rarely, `rejected` and refunded; if it takes longer the order is `confirming`: poll `GET /v1/orders/{id}`", body = OrderState),
        (status = 402, description = "Declined: the tickets stay held until the hold expires; try another card", body = Problem, content_type = "application/problem+json"),
        OrderNotFound,
        (status = 409, description = "Cancelled, already paid, or another attempt under way", body = Problem, content_type = "application/problem+json"),
        (status = 410, description = "The hold expired; the tickets went back on sale", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An invalid payment token", body = Problem, content_type = "application/problem+json"),
        BodyRefusals,
        Busy,
        Always,
    )
)]
pub async fn pay(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PayBody>,
) -> Result<Response, ApiError> {
    let token = PaymentToken::parse(&body.payment_token)?;
    let (event, id) = event_of(&state, &id).await?;
    // Listening before the order is published: its outcome cannot arrive first.
    let finalized = state.gate.finalized(id);
    let trace = telemetry::trace_context(&headers)
        .and_then(|(trace_id, span_id)| TraceContext::parse(&trace_id, &span_id).ok());
    let caller = Caller::Fan {
        token: token.expose(),
        trace: trace.as_ref(),
    };
    let mut status = settle(&state, &event, id, caller).await?;
    if status == OrderStatus::Confirming {
        status = outcome(&state, &event, id, finalized).await;
    }
    Ok((StatusCode::ACCEPTED, Json(order_state(id, status))).into_response())
}

/// Waits up to [`AppState::confirm_wait`] for consume-order to decide a paid order, so that a
/// fan usually learns the outcome in the payment's answer instead of polling for it (ADR 35).
/// Anything but a decision in time answers `confirming`, as without the wait.
async fn outcome(
    state: &AppState,
    event: &EventId,
    id: OrderId,
    finalized: gate::Finalized,
) -> OrderStatus {
    let decided = !state.confirm_wait.is_zero()
        && tokio::time::timeout(state.confirm_wait, finalized)
            .await
            .is_ok();
    metrics::counter!("payment_answers_total", "outcome" => if decided { "decided" } else { "confirming" })
        .increment(1);
    if !decided {
        return OrderStatus::Confirming;
    }
    match state.gate.order(event, id).await {
        Ok(Some(o)) => o.status,
        _ => OrderStatus::Confirming,
    }
}

/// `POST /v1/orders/{id}/cancel`: releases the hold; cancelling again answers the same.
#[utoipa::path(
    post,
    path = "/v1/orders/{id}/cancel",
    summary = "Release a hold (idempotent)",
    params(("id" = String, Path, description = "The order id from the reservation")),
    responses(
        (status = 200, description = "Released (or had already expired or been cancelled)", body = OrderState),
        OrderNotFound,
        (status = 409, description = "Paid or being paid: it can no longer be cancelled", body = Problem, content_type = "application/problem+json"),
        Busy,
        Always,
    )
)]
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (event, id) = event_of(&state, &id).await?;
    match state.gate.cancel(&event, id).await? {
        None => Err(ApiError::NotFound("order")),
        Some((s @ (OrderStatus::Cancelled | OrderStatus::Expired), released)) => {
            if released {
                tracing::info!(order_id = %id, status = s.as_str(), "hold released");
            }
            Ok(Json(order_state(id, s)).into_response())
        }
        Some((s, _)) => Err(ApiError::Conflict(format!(
            "This order is {} and can no longer be cancelled.",
            s.as_str()
        ))),
    }
}

/// One pass of the outbox relay: finishes payments older than `grace` whose message is not
/// known to be published (publish failed, or the instance died mid-payment), and publishes
/// again what was published but not persisted in time. Each order it takes is leased for
/// `lease`, so the relays of all buy instances together take it once per period.
pub async fn relay_once(
    state: &AppState,
    grace: Duration,
    lease: Duration,
) -> Result<usize, ApiError> {
    let mut done = 0;
    for event in state.gate.events().await? {
        for id in state.gate.claim_outbox(&event, grace, 100, lease).await? {
            match settle(state, &event, id, Caller::Relay).await {
                Ok(_) => {
                    metrics::counter!("relay_orders_total").increment(1);
                    done += 1;
                }
                Err(e) => {
                    tracing::warn!(order_id = %id, error = %e, "relay could not finish the order yet")
                }
            }
        }
    }
    Ok(done)
}

/// Runs the relay forever.
pub fn spawn_relay(
    state: AppState,
    every: Duration,
    grace: Duration,
    lease: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match relay_once(&state, grace, lease).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(orders = n, "relay finished paid orders"),
                Err(e) => tracing::warn!(error = %e, "relay pass failed"),
            }
        }
    })
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
        payments: Arc::new(SimulatedPayments),
        limits: Some(limits),
        redeliver_after: Duration::from_millis(config.redeliver_after_ms),
        confirm_wait: Duration::from_millis(config.pay_confirm_wait_ms),
        seen_events: SeenEvents::default(),
    };
    spawn_relay(
        state.clone(),
        Duration::from_millis(config.relay_interval_ms),
        Duration::from_millis(config.relay_grace_ms),
        Duration::from_millis(config.relay_lease_ms),
    );
    Ok(app(state))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The client's address as buy reads it from a request with this peer and header.
    fn seen(peer: &str, xff: Option<&str>, hops: usize) -> Option<String> {
        let mut r = Request::new(axum::body::Body::empty());
        r.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        if let Some(x) = xff {
            r.headers_mut()
                .insert("x-forwarded-for", x.parse().unwrap());
        }
        client_ip(r.headers(), r.extensions(), hops)
    }

    /// How a deployment shape hands a request to buy: the TCP peer buy sees, the
    /// `X-Forwarded-For` it receives for a client at `client` that sent `supplied`, and the
    /// `TRUSTED_PROXY_HOPS` it runs with.
    struct Shape {
        name: &'static str,
        hops: usize,
        peer: &'static str,
        forward: fn(supplied: Option<&str>, client: &str) -> String,
    }

    /// What a proxy appending the client (and more) does to a header the client sent.
    fn after(supplied: Option<&str>, appended: &str) -> String {
        supplied.map_or_else(|| appended.to_owned(), |s| format!("{s}, {appended}"))
    }

    const SHAPES: [Shape; 4] = [
        // Google's external Application Load Balancer with a serverless NEG (terraform/, 2
        // hops): "<supplied>,<client-ip>,<load-balancer-ip>" reaches Cloud Run.
        Shape {
            name: "load balancer + serverless NEG",
            hops: 2,
            peer: "169.254.1.1:40000",
            forward: |s, c| after(s, &format!("{c}, 34.120.0.1")),
        },
        // The run.app URL directly (closed by the ingress setting in production; diagnostics):
        // Cloud Run's front end appends the client.
        Shape {
            name: "run.app",
            hops: 1,
            peer: "169.254.1.1:40000",
            forward: |s, c| after(s, c),
        },
        // scripts/dev: nginx with `$proxy_add_x_forwarded_for` appends `$remote_addr`.
        Shape {
            name: "local nginx",
            hops: 1,
            peer: "127.0.0.1:51000",
            forward: |s, c| after(s, c),
        },
        // No proxy: k6 and the tests on loopback. The client's own header is not looked at.
        Shape {
            name: "no proxy",
            hops: 0,
            peer: "203.0.113.7:5000",
            forward: |s, _| s.unwrap_or("").to_owned(),
        },
    ];

    /// Per deployment shape: the entry the trusted proxies appended is the client's, and no
    /// header a client sends picks another bucket or puts different clients in one.
    #[test]
    fn each_deployment_shape_finds_the_client_whatever_it_sends() {
        let spoofs = [
            None,
            Some("1.2.3.4"),
            Some("1.2.3.4, 5.6.7.8"),
            Some("garbage"),
            Some(" , ,"),
            Some("10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1, 10.0.0.1"),
        ];
        for shape in &SHAPES {
            // Without a proxy the client is the peer itself.
            let (a, b) = if shape.hops == 0 {
                ("203.0.113.7", "203.0.113.7")
            } else {
                ("198.51.100.9", "198.51.100.10")
            };
            for supplied in spoofs {
                for client in [a, b] {
                    let peer = if shape.hops == 0 {
                        format!("{client}:5000")
                    } else {
                        shape.peer.to_owned()
                    };
                    let xff = (shape.forward)(supplied, client);
                    let xff = (!xff.is_empty()).then_some(xff.as_str());
                    assert_eq!(
                        seen(&peer, xff, shape.hops).as_deref(),
                        Some(client),
                        "{}: client {client} sent {supplied:?}",
                        shape.name
                    );
                }
            }
        }
        // Why the setting must match the shape: behind the load balancer with no trusted hop,
        // every client is the front end's address (one bucket for everyone), and with one hop
        // too few it is the load balancer's.
        let lb = &SHAPES[0];
        let xff = (lb.forward)(None, "198.51.100.9");
        assert_eq!(seen(lb.peer, Some(&xff), 0).as_deref(), Some("169.254.1.1"));
        assert_eq!(seen(lb.peer, Some(&xff), 1).as_deref(), Some("34.120.0.1"));
    }

    #[test]
    fn the_client_counts_per_ipv6_subscriber_and_as_ipv4_when_mapped() {
        assert_eq!(
            seen("[2001:db8:1:2:aaaa::1]:443", None, 0).as_deref(),
            Some("2001:db8:1:2::/64")
        );
        assert_eq!(
            seen("[::ffff:192.0.2.1]:443", None, 0).as_deref(),
            Some("192.0.2.1")
        );
        // Nothing known (a request made in process): no client.
        let r = Request::new(axum::body::Body::empty());
        assert_eq!(client_ip(r.headers(), r.extensions(), 2), None);
    }
}
