//! What every function's HTTP side shares: the JSON extractor that answers problem+json,
//! the middleware stack (request id, a span per request, timeout, body limit, panics),
//! `/healthz`, and serving with graceful shutdown on SIGTERM.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

use crate::domain::Invalid;
use crate::error::{ApiError, problem};
use crate::telemetry::LogThrottle;

/// Largest request body any function accepts.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Largest request header section (names and values) any function accepts: far above what a
/// browser, the load balancer and Pub/Sub send, far below what would cost us memory.
pub const HEADER_LIMIT: usize = 16 * 1024;

/// `Json<T>` whose rejections are problem+json: 400 malformed, 413 too large, 415 not JSON,
/// 422 wrong shape or types.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::JsonDataError(e)) => {
                Err(ApiError::Invalid(Invalid::new("body", e.body_text())))
            }
            Err(JsonRejection::JsonSyntaxError(_)) => {
                Err(ApiError::BadRequest("The body is not valid JSON.".into()))
            }
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::PayloadTooLarge),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

async fn not_found() -> Response {
    problem(
        StatusCode::NOT_FOUND,
        "not-found",
        "Not found",
        "No such resource.",
    )
}

async fn method_not_allowed() -> Response {
    problem(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "This resource does not support that method.",
    )
}

fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "Something went wrong on our side.",
    )
}

/// Adds `/healthz`, problem+json fallbacks and the middleware stack to a function's routes.
///
/// The stack is short on purpose: one `observe` layer does request id, span and metrics
/// (tower-http's four layers for the same cost three times as much CPU per request on the
/// availability hot path, see docs/DECISIONS.md), then panics, timeout and body limit.
pub fn finish(router: Router) -> Router {
    crate::metrics::handle();
    router
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn(observe))
}

/// A request id: the caller's `X-Request-Id` when it is sane, else a new one made of a
/// per-process random prefix and a counter (unique without a random draw per request).
fn request_id(req: &Request) -> HeaderValue {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if let Some(v) = req.headers().get(REQUEST_ID) {
        let ok = (1..=128).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_owned());
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    HeaderValue::try_from(format!("{prefix}-{n:x}")).expect("hex is a valid header value")
}

const REQUEST_ID: &str = "x-request-id";

/// Per request: the request id (set on the request for handlers and on every answer), a span
/// carrying method, route, request id and the Cloud Trace context, the header size limit
/// (431), and the HTTP metrics.
async fn observe(mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = request_id(&req);
    req.headers_mut().insert(REQUEST_ID, id.clone());
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let rid = id.to_str().unwrap_or_default();
    // Fields are formatted to JSON when the span opens: record the trace only when there is one.
    let span = match crate::telemetry::trace_context(req.headers()) {
        Some((trace_id, span_id)) => tracing::info_span!(
            "request",
            method = method.as_str(),
            path = route,
            request_id = rid,
            trace_id,
            span_id
        ),
        None => tracing::info_span!(
            "request",
            method = method.as_str(),
            path = route,
            request_id = rid
        ),
    };
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    let mut res = if header_bytes > HEADER_LIMIT {
        problem(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request headers too large",
            "The request's headers are larger than 16 KiB.",
        )
    } else {
        next.run(req).instrument(span.clone()).await
    };
    let status = res.status();
    crate::metrics::observe_request(route, &method, status, start.elapsed());
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            latency_us = start.elapsed().as_micros() as u64,
            "answered"
        );
    });
    res.headers_mut().insert(REQUEST_ID, id);
    res
}

/// Resolves on SIGTERM (Cloud Run's stop) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { () = ctrl_c => {}, () = term => {} }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Serves `app` on `0.0.0.0:port` until SIGTERM, then drains in-flight requests.
pub async fn serve(app: Router, port: u16) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on port {port}: {e}"))?;
    tracing::info!(port, "listening");
    crate::metrics::spawn_upkeep();
    // The peer address is what the rate limiter keys on when no trusted proxy is in front.
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    Ok(())
}

/// Turns any error into a 503 with Retry-After (dependency down) after logging it once.
pub fn unavailable(what: &'static str, err: &dyn std::fmt::Display) -> ApiError {
    // Once per second per dependency at most: during an outage every request lands here, and
    // one dependency's outage must not hide another's.
    static THROTTLES: OnceLock<Mutex<HashMap<&'static str, LogThrottle>>> = OnceLock::new();
    let occurrences = THROTTLES
        .get_or_init(Default::default)
        .lock()
        .expect("throttle lock")
        .entry(what)
        .or_insert_with(|| LogThrottle::new(1000))
        .throttled();
    if let Some(occurrences) = occurrences {
        tracing::warn!(error = %err, dependency = what, occurrences, "dependency unavailable");
    }
    ApiError::Unavailable {
        detail: format!("The {what} is busy or unavailable; please retry shortly."),
        retry_after_secs: 2,
    }
}

impl From<crate::gate::GateError> for ApiError {
    fn from(e: crate::gate::GateError) -> Self {
        match e {
            crate::gate::GateError::Unavailable(_) => unavailable("ticket gate", &e),
            crate::gate::GateError::Protocol(_) => ApiError::Internal(e.into()),
        }
    }
}

/// Lets handlers answer `impl IntoResponse` from either side.
pub type ApiResult<T> = Result<T, ApiError>;
