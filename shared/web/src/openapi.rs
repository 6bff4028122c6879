//! The API's OpenAPI documents. Each public function describes its own routes with utoipa
//! annotations on its handlers, serves the document at `GET /openapi.json`, and keeps the
//! committed copy in `docs/openapi/` equal to it (a test fails when they drift). The
//! schemathesis run in scripts/test fuzzes the running stack against them.

use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use serde::Serialize;
use utoipa::ToSchema;

/// An RFC 9457 problem: the body of every refusal and error (`application/problem+json`).
#[derive(Serialize, ToSchema)]
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

/// Test helper: fails unless `committed` (a path from the workspace root) holds `doc`;
/// with `UPDATE_OPENAPI=1` it writes the file instead.
pub fn assert_committed(doc: &utoipa::openapi::OpenApi, committed: &str) {
    // The checkout the test runs in, found at run time: a build cache shared between
    // checkouts (CI's) may hold a binary compiled in another, since deleted, folder.
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let root = start
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(&start)
        .to_path_buf();
    let path = root.join(committed);
    let want = format!("{}\n", doc.to_pretty_json().expect("serialises"));
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &want).expect("write the document");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{committed} is not the document the code generates; run `UPDATE_OPENAPI=1 cargo nextest run openapi` and commit it"
    );
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
