//! The waiting room's side of buy (ADR 59): a fan joins with an e-mail address and asks again
//! to learn where it stands; once admitted the answer carries the admission token, which
//! reserve checks (signature, expiry, event, mailbox) with no Redis call of its own, and hands
//! its place to the reservation script.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chrono::Utc;
use domain::room::{AdmissionToken, TokenRefused};
use domain::signing::{Accepted, MessageKey};
use domain::{Email, EventId};
use gate::{RoomStatus, RoomView};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use web::ApiError;
use web::http::ApiJson;
use web::openapi::{Always, BodyRefusals, Busy, Problem};
use web::rfc3339;

use crate::{AppState, gate_error};

/// The header a fan's reservation carries its admission token in.
pub const ADMISSION_HEADER: &str = "admission-token";

/// The keys admission tokens are signed with: the orders' key (`ORDER_SIGNING_KEY`), and
/// during a rotation the one before it, still accepted.
#[derive(Clone)]
pub struct RoomKeys {
    pub current: MessageKey,
    pub previous: Option<MessageKey>,
}

impl RoomKeys {
    fn accepted(&self) -> Accepted<'_> {
        Accepted {
            current: &self.current,
            previous: self.previous.as_ref(),
        }
    }
}

/// Body of `POST /v1/events/{event}/room`.
#[derive(Deserialize, ToSchema)]
pub struct JoinBody {
    /// The fan's address: one place per address (joining again answers the same place), and
    /// the admission is for reservations to this address only.
    #[schema(example = "fan@example.at", min_length = 3, max_length = 254)]
    pub email: String,
}

/// Where a fan stands in the waiting room.
#[derive(Serialize, ToSchema)]
pub struct RoomAnswer {
    /// `off` (no room: reserve as usual), `pending` (joined before the opening: the order is
    /// drawn at the opening; the snapshot's `room.draw` then tells the fan's turn), `waiting`,
    /// `admitted` (reserve with `admission_token` until `admitted_until`). A fan whose
    /// admission lapsed unused is queued again at the back by this same call.
    #[schema(example = "waiting")]
    status: &'static str,
    /// The fan's queue id (the same on every join with this address).
    queue_id: String,
    /// The fan's place from 1 (0: not drawn yet).
    place: u64,
    /// Fans ahead still waiting.
    ahead: u64,
    /// Every place up to this one has been admitted.
    admitted_upto: u64,
    /// Fans who joined.
    joined: u64,
    /// Tickets not sold yet (available and held: a hold may expire).
    unsold: i64,
    /// Nothing available now: waiting longer is unlikely to help.
    sold_out: bool,
    /// Fans admitted per second.
    rate_per_sec: u32,
    /// The operator paused admission for a moment; the queue keeps its order.
    paused: bool,
    /// The earliest wait at the admission rate, in seconds (admission can also wait for fans
    /// shopping and for tickets to come back).
    #[serde(skip_serializing_if = "Option::is_none")]
    estimate_secs: Option<u64>,
    /// Admitted: send it as the `Admission-Token` header of each reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    admission_token: Option<String>,
    /// Admitted: when the admission ends (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    admitted_until: Option<String>,
}

/// `POST /v1/events/{event}/room`
#[utoipa::path(
    post,
    path = "/v1/events/{event}/room",
    summary = "Join the waiting room, or ask where you stand (the same call)",
    params(("event" = String, Path, description = "Event slug, e.g. `frequency-2027`")),
    request_body = JoinBody,
    responses(
        (status = 200, description = "Where the fan stands; once admitted, with the admission token", body = RoomAnswer),
        (status = 422, description = "An invalid e-mail address", body = Problem, content_type = "application/problem+json"),
        BodyRefusals,
        Busy,
        Always,
    )
)]
pub async fn join(
    State(state): State<Arc<AppState>>,
    Path(event): Path<String>,
    ApiJson(body): ApiJson<JoinBody>,
) -> Result<Json<RoomAnswer>, ApiError> {
    let event = EventId::parse(&event).map_err(|_| ApiError::NotFound("event"))?;
    let email = Email::parse(&body.email)?;
    let view = state
        .gate
        .room_join(&event, email.as_str())
        .await
        .map_err(gate_error)?;
    metrics::counter!("room_joins_total", "status" => view.status.as_str()).increment(1);
    let token = match (view.status, view.admitted_until) {
        (RoomStatus::Admitted, Some(until)) => {
            let keys = state.room_keys.as_ref().ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!(
                    "the waiting room admitted a fan but ORDER_SIGNING_KEY is not set: no admission token can be signed"
                ))
            })?;
            let token = AdmissionToken {
                event,
                email,
                place: view.place,
                expires_at: until,
            };
            Some((token.issue(&keys.current), until))
        }
        _ => None,
    };
    Ok(Json(answer(&view, token)))
}

fn answer(v: &RoomView, token: Option<(String, chrono::DateTime<Utc>)>) -> RoomAnswer {
    let ahead = v.ahead();
    let waiting = v.status == RoomStatus::Waiting;
    RoomAnswer {
        status: v.status.as_str(),
        queue_id: v.queue_id.clone(),
        place: v.place,
        ahead,
        admitted_upto: v.upto,
        joined: v.joined,
        unsold: v.unsold,
        sold_out: v.sold_out,
        rate_per_sec: v.rate_per_sec,
        paused: v.paused,
        estimate_secs: (waiting && v.rate_per_sec > 0)
            .then(|| (ahead + 1).div_ceil(u64::from(v.rate_per_sec))),
        admitted_until: token.as_ref().map(|(_, until)| rfc3339::format(*until)),
        admission_token: token.map(|(t, _)| t),
    }
}

/// The place of the reservation's admission token (`None`: it brought none), or why the token
/// does not hold.
pub(crate) fn admitted(
    state: &AppState,
    headers: &HeaderMap,
    event: &EventId,
    email: &Email,
) -> Result<Option<u64>, TokenRefused> {
    let Some(raw) = headers.get(ADMISSION_HEADER) else {
        return Ok(None);
    };
    let raw = raw.to_str().map_err(|_| TokenRefused::Malformed)?;
    // No key: no token can be genuine.
    let keys = state.room_keys.as_ref().ok_or(TokenRefused::Forged)?;
    AdmissionToken::verify(raw, keys.accepted(), event, email, Utc::now()).map(|t| Some(t.place))
}

/// The answer to a reservation refused by the room: what was wrong and what to do.
pub(crate) fn not_admitted(event: &EventId, why: Option<TokenRefused>) -> ApiError {
    let join = format!(
        "join the waiting room (POST /v1/events/{event}/room) and reserve with the admission token it gives you, in the Admission-Token header"
    );
    ApiError::NotAdmitted(match why {
        None => format!("This sale has a waiting room: {join}."),
        Some(TokenRefused::Expired) => {
            format!("Your admission has ended: {join} again (you queue at the back).")
        }
        Some(why) => format!("{why}: {join}."),
    })
}
