//! The API's OpenAPI documents. Each public function describes its own routes with utoipa
//! annotations on its handlers, serves the document at `GET /openapi.json`, and keeps the
//! committed copy in `docs/openapi/` equal to it (a test fails when they drift). The
//! schemathesis run in scripts/test fuzzes the running stack against them.

use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};

pub use crate::error::Problem;

/// `GET /openapi.json`: the document, rendered once.
pub fn route<S: Clone + Send + Sync + 'static>(doc: &utoipa::openapi::OpenApi) -> MethodRouter<S> {
    let body = doc.to_pretty_json().expect("the document serialises");
    get(move || {
        let body = body.clone();
        async move {
            (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body,
            )
                .into_response()
        }
    })
}

/// Refusals every JSON-body route can answer.
#[derive(utoipa::IntoResponses)]
pub enum BodyRefusals {
    /// The body is not JSON, or a required header is missing.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// The body is larger than 16 KiB.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body is not declared as `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
}

/// Answers of a busy or recovering system: wait `Retry-After` seconds and try again.
#[derive(utoipa::IntoResponses)]
pub enum Busy {
    /// A rate limit (per client IP or per e-mail); `RateLimit-Policy` and `RateLimit` say which.
    #[response(
        status = 429,
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait"))
    )]
    RateLimited(Problem),
    /// A dependency is slow or down, or the sale is paused while the gate recovers.
    #[response(
        status = 503,
        content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait"))
    )]
    Unavailable(Problem),
}

/// What any route can answer before its handler runs.
#[derive(utoipa::IntoResponses)]
pub enum Always {
    /// The request's headers are larger than 16 KiB (over 100 headers, the HTTP server itself
    /// refuses with a bare 431).
    #[response(status = 431, content_type = "application/problem+json")]
    HeadersTooLarge(Problem),
}

/// The order id names no order (also a malformed id).
#[derive(utoipa::IntoResponses)]
pub enum OrderNotFound {
    /// No such order
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
}
