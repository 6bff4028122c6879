//! What every function's HTTP side shares: the JSON extractor that answers problem+json,
//! the middleware stack (request id, a span per request, timeout, body limit, panics),
//! `/healthz`, and serving with graceful shutdown on SIGTERM.

use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, Request};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::domain::Invalid;
use crate::error::{ApiError, problem};

/// Largest request body any function accepts.
pub const BODY_LIMIT: usize = 16 * 1024;

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
pub fn finish(router: Router) -> Router {
    crate::metrics::handle();
    router
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(crate::metrics::track))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(10),
        ))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let path = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
                    let request_id = req
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    let span = tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path,
                        request_id,
                        trace_id = tracing::field::Empty,
                        span_id = tracing::field::Empty,
                    );
                    if let Some((trace, parent)) = crate::telemetry::trace_context(req.headers()) {
                        span.record("trace_id", trace).record("span_id", parent);
                    }
                    span
                })
                // Refusals are normal during an on-sale: responses are logged at debug only.
                .on_response(DefaultOnResponse::new().level(Level::DEBUG)),
        )
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
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
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

/// Turns any error into a 503 with Retry-After (dependency down) after logging it once.
pub fn unavailable(what: &str, err: &dyn std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, dependency = what, "dependency unavailable");
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
