//! The one error type every handler returns, answered as RFC 9457 problem+json.
//!
//! Refusals (4xx) are expected outcomes during an on-sale and are not logged as errors;
//! internal failures are logged once, with context, and answered as an opaque 500/503.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use domain::Invalid;

/// Everything a handler can answer besides success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the body is not JSON, or a required header is missing.
    #[error("{0}")]
    BadRequest(String),
    /// 401: the caller did not present the expected credential.
    #[error("unauthorized")]
    Unauthorized,
    /// 403: the event's waiting room is on and the request brought no valid admission (the
    /// detail says why and what to do).
    #[error("{0}")]
    NotAdmitted(String),
    /// 402: the payment provider declined the charge.
    #[error("payment declined")]
    PaymentDeclined,
    /// 404: no such event, ticket type or order.
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 409: sold out.
    #[error("sold out")]
    SoldOut,
    /// 409: fewer tickets left than asked for.
    #[error("only {available} left")]
    NotEnoughLeft {
        /// How many are left.
        available: u64,
    },
    /// 409: the order is in a state that forbids this (cancelled, already paid, …).
    #[error("{0}")]
    Conflict(String),
    /// 410: the hold ran out before payment.
    #[error("hold expired")]
    HoldExpired,
    /// 413: the body is larger than the limit.
    #[error("payload too large")]
    PayloadTooLarge,
    /// 415: the body is not declared as JSON.
    #[error("unsupported media type")]
    UnsupportedMediaType,
    /// 422: a field is invalid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// 422: the per-customer limit would be exceeded.
    #[error("limit exceeded")]
    LimitExceeded {
        /// The limit per e-mail address for this ticket type.
        limit: u64,
        /// How many more this address may still reserve.
        remaining: u64,
    },
    /// 422: the Idempotency-Key was used before with a different request.
    #[error("idempotency key reused")]
    IdempotencyKeyReused,
    /// 425: the sale has not opened yet.
    #[error("too early")]
    TooEarly {
        /// Seconds until the sale opens.
        retry_after_secs: u64,
    },
    /// 429: a rate limit (per client IP or per e-mail) refused the request.
    #[error("rate limited")]
    RateLimited {
        /// Which limit: `per-ip`, `per-email` or `per-client` (the hold cap).
        policy: &'static str,
        /// Requests allowed at once.
        burst: u32,
        /// Seconds to refill a whole burst.
        window_secs: u64,
        /// Seconds to wait before retrying.
        retry_after_secs: u64,
    },
    /// 503: a dependency is unavailable; the answer says when to retry.
    #[error("{detail}")]
    Unavailable {
        /// What the fan should know (safe to show).
        detail: String,
        /// Seconds to wait before retrying.
        retry_after_secs: u64,
    },
    /// 500: anything else; details are logged, never answered.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// The HTTP status of this answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::PaymentDeclined => StatusCode::PAYMENT_REQUIRED,
            Self::NotAdmitted(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::SoldOut | Self::NotEnoughLeft { .. } | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::HoldExpired => StatusCode::GONE,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Invalid(_) | Self::LimitExceeded { .. } | Self::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::TooEarly { .. } => StatusCode::TOO_EARLY,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short, stable slug naming the problem type (`/problems/{slug}`).
    pub fn slug(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::Unauthorized => "unauthorized",
            Self::PaymentDeclined => "payment-declined",
            Self::NotAdmitted(_) => "not-admitted",
            Self::NotFound(_) => "not-found",
            Self::SoldOut => "sold-out",
            Self::NotEnoughLeft { .. } => "not-enough-left",
            Self::Conflict(_) => "conflict",
            Self::HoldExpired => "hold-expired",
            Self::PayloadTooLarge => "payload-too-large",
            Self::UnsupportedMediaType => "unsupported-media-type",
            Self::Invalid(_) => "invalid-input",
            Self::LimitExceeded { .. } => "limit-exceeded",
            Self::IdempotencyKeyReused => "idempotency-key-reused",
            Self::TooEarly { .. } => "sale-not-open",
            Self::RateLimited { .. } => "rate-limited",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The body this error is answered with.
    pub fn problem(&self) -> Problem {
        let mut p = Problem::default();
        let (title, detail) = match self {
            Self::BadRequest(d) => ("Bad request", d.clone()),
            Self::Unauthorized => ("Unauthorized", "Missing or wrong credential.".into()),
            Self::PaymentDeclined => (
                "Payment declined",
                "The payment was declined. Your tickets stay held until the hold expires; try another payment method.".into(),
            ),
            Self::NotAdmitted(d) => ("Not admitted yet", d.clone()),
            Self::NotFound(what) => ("Not found", format!("No such {what}.")),
            Self::SoldOut => ("Sold out", "This ticket type is sold out.".into()),
            Self::NotEnoughLeft { available } => {
                p.available = Some(*available);
                ("Not enough tickets left", format!("Only {available} left; ask for fewer."))
            }
            Self::Conflict(d) => ("Conflict", d.clone()),
            Self::HoldExpired => (
                "Hold expired",
                "The hold on these tickets ran out and they went back on sale.".into(),
            ),
            Self::PayloadTooLarge => ("Payload too large", "The request body is too large.".into()),
            Self::UnsupportedMediaType => (
                "Unsupported media type",
                "Send the body as JSON with Content-Type: application/json.".into(),
            ),
            Self::Invalid(inv) => {
                p.field = Some(inv.field.to_owned());
                ("Invalid input", inv.to_string())
            }
            Self::LimitExceeded { limit, remaining } => {
                (p.limit, p.remaining) = (Some(*limit), Some(*remaining));
                (
                    "Per-customer limit exceeded",
                    format!("At most {limit} per customer for this ticket type; you may reserve {remaining} more."),
                )
            }
            Self::IdempotencyKeyReused => (
                "Idempotency-Key reused",
                "This Idempotency-Key was already used for a different request.".into(),
            ),
            Self::TooEarly { retry_after_secs } => {
                p.retry_after = Some(*retry_after_secs);
                ("Sale not open yet", format!("The sale opens in {retry_after_secs} s."))
            }
            Self::RateLimited {
                retry_after_secs, ..
            } => {
                p.retry_after = Some(*retry_after_secs);
                (
                    "Too many requests",
                    format!("Too many requests; please retry in {retry_after_secs} s."),
                )
            }
            Self::Unavailable { detail, retry_after_secs } => {
                p.retry_after = Some(*retry_after_secs);
                ("Service unavailable", detail.clone())
            }
            Self::Internal(_) => ("Internal error", "Something went wrong on our side.".into()),
        };
        Problem {
            kind: format!("/problems/{}", self.slug()),
            title: title.to_owned(),
            status: self.status().as_u16(),
            detail,
            ..p
        }
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::TooEarly { retry_after_secs }
            | Self::RateLimited {
                retry_after_secs, ..
            }
            | Self::Unavailable {
                retry_after_secs, ..
            } => Some((*retry_after_secs).max(1)),
            _ => None,
        }
    }
}

/// A problem+json body with any status (used by layers that answer before a handler runs).
pub fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    Problem {
        kind: format!("/problems/{slug}"),
        title: title.to_owned(),
        status: status.as_u16(),
        detail: detail.to_owned(),
        ..Problem::default()
    }
    .into_response()
}

/// An RFC 9457 problem: the body of every refusal and error (`application/problem+json`).
#[derive(Debug, Default, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "/problems/sold-out",
    "title": "Sold out",
    "status": 409,
    "detail": "This ticket type is sold out."
}))]
pub struct Problem {
    /// `/problems/{slug}`: stable and machine-readable (e.g. `/problems/sold-out`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human-readable summary.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What happened and what to do, safe to show to a fan.
    pub detail: String,
    /// Invalid input: which field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// Not enough left: how many are.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<u64>,
    /// Per-customer limit exceeded: the limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Per-customer limit exceeded: how many more this address may reserve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remaining: Option<u64>,
    /// 425, 429, 503: seconds to wait (also in the `Retry-After` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_string(&self).expect("a problem serialises");
        let mut res = (status, body).into_response();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        res
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // The boundary: an internal error is logged here, once, with its whole chain, inside
        // the request's span; the answer says nothing of it.
        if let Self::Internal(e) = &self {
            tracing::error!(error = format!("{e:?}"), "internal error");
        }
        let mut res = self.problem().into_response();
        let headers = res.headers_mut();
        if let Some(secs) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Self::RateLimited {
            policy,
            burst,
            window_secs,
            retry_after_secs,
        } = &self
        {
            // draft-ietf-httpapi-ratelimit-headers: the policy, and what is left of it.
            let fields = [
                (
                    "ratelimit-policy",
                    format!("\"{policy}\";q={burst};w={window_secs}"),
                ),
                (
                    "ratelimit",
                    format!("\"{policy}\";r=0;t={retry_after_secs}"),
                ),
            ];
            for (name, value) in fields {
                if let Ok(v) = HeaderValue::try_from(value) {
                    headers.insert(name, v);
                }
            }
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn internal_errors_do_not_leak() {
        let res =
            ApiError::Internal(anyhow::anyhow!("password=hunter2 at db:5432")).into_response();
        assert_eq!(res.status(), 500);
        let body = axum::body::to_bytes(res.into_body(), 10_000).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("/problems/internal"));
    }

    #[tokio::test]
    async fn too_early_has_retry_after() {
        let res = ApiError::TooEarly {
            retry_after_secs: 42,
        }
        .into_response();
        assert_eq!(res.status(), 425);
        assert_eq!(res.headers()[header::RETRY_AFTER], "42");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
}
