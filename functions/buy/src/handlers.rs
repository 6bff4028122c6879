//! The routes: reserve, pay, cancel.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::{
    Email, EventId, IdempotencyKey, OrderId, OrderStatus, PaymentToken, Quantity, TicketTypeId,
    TraceContext,
};
use gate::{AdmissionRules, ReserveOutcome};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use web::ApiError;
use web::http::ApiJson;
use web::openapi::{Always, BodyRefusals, Busy, OrderNotFound, Problem};
use web::rfc3339;

use crate::limits::{Client, limited, refused};
use crate::settle::{Caller, settle};
use crate::{AppState, gate_error};

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
pub(crate) struct Reserved {
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
    // The Admission-Token header is described here rather than as a parameter: a fuzzer's
    // "invalid" optional header is sent as no header at all, a valid request (scripts/apifuzz).
    description = "While the event's waiting room is on, send the `Admission-Token` header: the token the room's join (`POST /v1/events/{event}/room`) gave this fan once admitted, for reservations to the address it joined with. Without one, or with one that does not hold (expired, another event's or another address', not ours), the answer is 403 `/problems/not-admitted`; a token that does not hold is refused even when the room is off.",
    params(
        ("event" = String, Path, description = "Event slug, e.g. `frequency-2027`"),
        ("Idempotency-Key" = String, Header, pattern = "^[!-~]{8,128}$", description = "A fresh UUID per purchase attempt, sent again unchanged on every retry of that attempt: the same key with the same body answers the first answer again"),
    ),
    request_body = ReserveBody,
    responses(
        (status = 202, description = "Held", body = Reserved,
            headers(("Location" = String, description = "The order's status URL"))),
        (status = 403, description = "The event's waiting room is on and the request brought no valid admission token (`/problems/not-admitted`: missing, expired, another event's or another address')", body = Problem, content_type = "application/problem+json"),
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
    // The waiting room's admission, checked here; whether the room is on, the script knows. A
    // token that does not hold is bad input, refused whether or not the room is on.
    let admitted = crate::room::admitted(&state, &headers, &event, &email)
        .map_err(|why| crate::room::not_admitted(&event, Some(why)))?;
    let admission = AdmissionRules {
        per_email,
        holds_per_client: state.limits.as_ref().map_or(0, |l| l.holds_per_client),
        client,
        admitted,
    };
    let outcome = state
        .gate
        .reserve(&event, &ticket_type, quantity, &email, &key, &admission)
        .await
        .map_err(gate_error)?;
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
        ReserveOutcome::NotAdmitted => {
            return Err(crate::room::not_admitted(&event, None));
        }
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
        ReserveOutcome::NotAdmitted => "not_admitted",
    };
    metrics::counter!("reservations_total", "outcome" => outcome).increment(1);
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
pub(crate) struct OrderState {
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
        .await
        .map_err(gate_error)?
        .ok_or(ApiError::NotFound("order"))?;
    Ok((ev, id))
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
    Client(client): Client,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (event, id) = event_of(&state, &id).await?;
    let cancelled = state.gate.cancel(&event, id, client.as_deref());
    match cancelled.await.map_err(gate_error)? {
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
