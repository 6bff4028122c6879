//! What every function's HTTP side shares: the JSON extractor that answers problem+json, the
//! stock middleware stack (request id set and propagated, a span per request, metrics, header
//! and body limits, timeout, panics), `/healthz`, and serving with graceful shutdown on SIGTERM.

use anyhow::Context;
use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request};
use axum::http::{HeaderName, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use tower_http::validate_request::ValidateRequestHeaderLayer;

use crate::error::{ApiError, problem};
use domain::Invalid;
use telemetry::LogThrottle;

/// How long any request may take before it is answered 503 (the Spanner repository's retry
/// budget fits inside it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request body any function accepts.
pub const BODY_LIMIT: usize = 16 * 1024;

/// Largest request header section (names and values) any function accepts: far above what a
/// browser, the load balancer and Pub/Sub send, far below what would cost us memory.
pub const HEADER_LIMIT: usize = 16 * 1024;

/// The request id's header: set when the caller sent none (or one we will not echo), passed on
/// in every answer and carried by the request's span.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// axum's `Json<T>`, whose rejections are problem+json: 400 malformed, 413 too large, 415 not
/// JSON, 422 wrong shape or types.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(value) = Json::<T>::from_request(req, state).await?;
        Ok(Self(value))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> Self {
        match e {
            JsonRejection::MissingJsonContentType(_) => Self::UnsupportedMediaType,
            JsonRejection::JsonDataError(e) => Self::Invalid(Invalid::new("body", e.body_text())),
            JsonRejection::JsonSyntaxError(_) => {
                Self::BadRequest("The body is not valid JSON.".into())
            }
            e if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            e => Self::BadRequest(e.body_text()),
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

/// The answer to a panic, logged in the request's span (the trace layer's span is entered
/// while the handler's future is polled).
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "Something went wrong on our side.",
    )
}

/// Adds `/healthz`, `/metrics`, problem+json fallbacks and the middleware stack to a
/// function's routes: the request id (the caller's when it is sane, else a new UUID) set,
/// carried by a span per request (method, matched route, request id, Cloud Trace context) and
/// returned on every answer; the HTTP metrics; the header limit (431); panics answered 500;
/// the timeout (503); the body limit (413).
pub fn finish(router: Router) -> Router {
    crate::metrics::handle();
    router
        .route("/healthz", get(|| async { "ok" }))
        // Serving the function's routes means its connections were made (`serve_when_ready`).
        .route("/readyz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            ServiceBuilder::new()
                .layer(tower::util::MapRequestLayer::new(drop_unsafe_request_id))
                .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        // A 5xx is logged where it is made (ApiError, panics), once.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(REQUEST_ID))
                .layer(axum::middleware::from_fn(record_metrics))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(ValidateRequestHeaderLayer::custom(limit_headers))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    REQUEST_TIMEOUT,
                ))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
}

/// A caller's request id is kept (the load balancer's follows the request) unless it is empty,
/// longer than 128 characters or not visible ASCII: then it is replaced, not echoed.
fn drop_unsafe_request_id(mut req: Request) -> Request {
    let unsafe_id = req.headers().get(REQUEST_ID).is_some_and(|v| {
        !(1..=128).contains(&v.len()) || !v.as_bytes().iter().all(u8::is_ascii_graphic)
    });
    if unsafe_id {
        req.headers_mut().remove(REQUEST_ID);
    }
    req
}

/// The request's span. Its fields are formatted to JSON when it opens, so it carries only what
/// a log line needs, and the trace context only when there is one.
fn request_span(req: &Request) -> tracing::Span {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let method = req.method().as_str();
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    match telemetry::trace_context(req.headers()) {
        Some((trace_id, span_id)) => tracing::info_span!(
            "request",
            method,
            path = route,
            request_id,
            trace_id,
            span_id
        ),
        None => tracing::info_span!("request", method, path = route, request_id),
    }
}

/// Counts and times every request by matched route, method and status.
async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let method = req.method().clone();
    let res = next.run(req).await;
    crate::metrics::observe_request(&route, &method, res.status(), start.elapsed());
    res
}

/// Refuses a header section over [`HEADER_LIMIT`] with 431 (tower-http's synchronous request
/// check: no boxing per request, unlike a `from_fn` middleware).
#[expect(
    clippy::result_large_err,
    reason = "the signature tower-http's ValidateRequest takes"
)]
fn limit_headers(req: &mut Request) -> Result<(), Response> {
    let bytes: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum();
    if bytes > HEADER_LIMIT {
        return Err(problem(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers-too-large",
            "Request headers too large",
            "The request's headers are larger than 16 KiB.",
        ));
    }
    Ok(())
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

/// Whether the function needs each request's peer address as a `ConnectInfo<SocketAddr>`
/// extension (axum's `into_make_service_with_connect_info`): what the rate limiter keys on when no trusted proxy is in front. (Only buy needs
/// it: inserting it costs every request an extension map.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    Ignored,
    Recorded,
}

/// How long a function keeps serving after SIGTERM before it drains (see `serve_on`).
pub const SHUTDOWN_DELAY: Duration = Duration::from_secs(1);

/// Backoff between two attempts to start: doubling from 250 ms up to 5 s.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// Listens on `port` at once and answers the probes while `start` connects the function's
/// dependencies: `/healthz` 200 (alive), `/readyz` and every other route 503 (Cloud Run's
/// startup probe waits). `start` is retried with backoff until it returns the function's
/// router, however long Redis or the database take to answer (Direct VPC egress can take a
/// minute on a fresh instance); only SIGTERM ends the wait. Then the router is served on the
/// same socket (connections that arrive meanwhile wait in its backlog) until SIGTERM, which
/// drains in-flight requests.
pub async fn serve_when_ready<F, Fut>(port: u16, peers: Peers, start: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Router>>,
{
    serve_on(listen(port).await?, peers, shutdown_signal(), start).await
}

/// [`serve_when_ready`] on a bound listener, until `shutdown` resolves.
pub async fn serve_on<F, Fut>(
    listener: std::net::TcpListener,
    peers: Peers,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    mut start: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Router>>,
{
    let (stop_tx, stop) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // While starting: the probes, served from a copy of the socket.
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    let starting = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
    let waiting = tokio::spawn({
        let stop = stop.clone();
        async move {
            let until = async move {
                let mut ready = ready_rx;
                let _ = ready.wait_for(|r| *r).await;
            };
            axum::serve(starting, starting_router())
                .with_graceful_shutdown(async move {
                    tokio::select! { () = until => {}, () = stopped(stop) => {} }
                })
                .await
        }
    });

    let mut delay = RETRY_FIRST;
    let mut attempt = 1u32;
    let app = loop {
        tokio::select! {
            () = stopped(stop.clone()) => {
                waiting.await??;
                tracing::info!("stopped before the function was ready");
                return Ok(());
            }
            started = start() => match started {
                Ok(app) => break app,
                Err(e) => {
                    tracing::warn!(attempt, retry_in_ms = delay.as_millis() as u64, error = format!("{e:#}"), "not ready: cannot start yet");
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(stop.clone()) => {}
        }
        delay = (delay * 2).min(RETRY_MAX);
        attempt += 1;
    };
    let _ = ready_tx.send(true);
    waiting.await??;
    tracing::info!(attempts = attempt, "ready");

    // After SIGTERM, keep accepting for a moment before draining: a request a client sent just
    // before the signal may still sit unread in the socket's backlog or on an idle keep-alive
    // connection, and closing those would reset it (seen in scripts/rehearse under load).
    // Cloud Run routes nothing new to a stopping instance and allows 10 s.
    let draining = async move {
        stopped(stop).await;
        tokio::time::sleep(SHUTDOWN_DELAY).await;
    };
    let listener = tokio::net::TcpListener::from_std(listener)?;
    match peers {
        Peers::Ignored => {
            axum::serve(listener, app)
                .with_graceful_shutdown(draining)
                .await?;
        }
        Peers::Recorded => {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown(draining)
            .await?;
        }
    }
    Ok(())
}

/// What a function answers before it is ready.
fn starting_router() -> Router {
    let not_ready = || async {
        problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "starting",
            "Starting",
            "The service is connecting to its dependencies; try again shortly.",
        )
    };
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(not_ready))
        .fallback(not_ready)
}

async fn listen(port: u16) -> anyhow::Result<std::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("cannot listen on port {port}"))?
        .into_std()?;
    tracing::info!(port, "listening");
    crate::metrics::spawn_upkeep();
    Ok(listener)
}

/// Turns a dependency's failure into a 503 with Retry-After, after logging it at most once per
/// second per dependency.
pub fn unavailable(what: &'static str, err: &dyn std::fmt::Display) -> ApiError {
    // During an outage every request lands here, and one dependency's outage must not hide
    // another's.
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn call(app: &Router, path: &str) -> StatusCode {
        let req = Request::builder()
            .uri(path)
            .header(REQUEST_ID, "rid-1")
            .body(Body::empty())
            .unwrap();
        app.clone().oneshot(req).await.unwrap().status()
    }

    fn app() -> Router {
        async fn boom() -> &'static str {
            panic!("boom")
        }
        async fn logs() -> &'static str {
            tracing::warn!("a handler's line");
            "ok"
        }
        async fn broken() -> Result<&'static str, ApiError> {
            Err(ApiError::Internal(
                anyhow::anyhow!("disk on fire").context("saving the order"),
            ))
        }
        finish(
            Router::new()
                .route("/quiet", get(|| async { "ok" }))
                .route("/boom", get(boom))
                .route("/broken", get(broken))
                .route("/loud", get(logs))
                .route("/loud-broken", get(broken)),
        )
    }

    /// The status line's code of a plain HTTP/1.1 GET (a fresh connection each time).
    async fn status_of(addr: std::net::SocketAddr, path: &str) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        conn.write_all(req.as_bytes()).await.unwrap();
        let mut answer = String::new();
        conn.read_to_string(&mut answer).await.unwrap();
        answer[9..12].parse().unwrap()
    }

    /// Cloud Run's startup contract: alive at once, not ready (503 everywhere but /healthz)
    /// while the dependencies do not answer, ready and serving once they do; never an exit.
    #[tokio::test]
    async fn probes_are_answered_while_starting_and_the_app_once_started() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (up_tx, up) = tokio::sync::watch::channel(false);
        let attempts = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
        let counted = attempts.clone();
        let server = tokio::spawn(serve_on(
            listener,
            Peers::Ignored,
            async move {
                let _ = stop.await;
            },
            move || {
                let (up, counted) = (*up.borrow(), counted.clone());
                async move {
                    counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    anyhow::ensure!(up, "redis unavailable: connection refused");
                    Ok(finish(Router::new().route("/app", get(|| async { "app" }))))
                }
            },
        ));
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(status_of(addr, "/healthz").await, 200);
        assert_eq!(status_of(addr, "/readyz").await, 503);
        assert_eq!(status_of(addr, "/app").await, 503);
        assert!(
            attempts.load(std::sync::atomic::Ordering::Relaxed) >= 2,
            "retried"
        );
        assert!(
            !server.is_finished(),
            "it exited while its dependencies were down"
        );

        up_tx.send(true).unwrap();
        let mut ready = false;
        for _ in 0..100 {
            if status_of(addr, "/readyz").await == 200 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "never became ready");
        assert_eq!(status_of(addr, "/app").await, 200);
        assert_eq!(status_of(addr, "/healthz").await, 200);
        stop_tx.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn panics_internal_errors_and_handler_lines_are_logged_once_in_the_request_span() {
        let (lines, _guard) = testkit::capture_logs();
        let app = app();

        assert_eq!(call(&app, "/quiet").await, StatusCode::OK);
        assert!(
            lines.take().is_empty(),
            "a request writes no line of its own at info"
        );

        assert_eq!(call(&app, "/boom").await, StatusCode::INTERNAL_SERVER_ERROR);
        let logged = lines.take();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert_eq!(logged[0]["message"], "handler panicked");
        assert_eq!(logged[0]["severity"], "ERROR");
        let span = &logged[0]["spans"][0];
        assert_eq!(span["request_id"], "rid-1");
        assert_eq!(span["path"], "/boom");

        // An internal error is logged once, with its whole chain, in the request's span.
        for path in ["/broken", "/loud-broken"] {
            assert_eq!(call(&app, path).await, StatusCode::INTERNAL_SERVER_ERROR);
            let logged = lines.take();
            assert_eq!(logged.len(), 1, "{path}: {logged:?}");
            assert_eq!(logged[0]["message"], "internal error");
            assert_eq!(logged[0]["severity"], "ERROR");
            let chain = logged[0]["error"].as_str().unwrap();
            assert!(
                chain.contains("saving the order") && chain.contains("disk on fire"),
                "{chain}"
            );
            assert_eq!(logged[0]["spans"][0]["request_id"], "rid-1");
            assert_eq!(logged[0]["spans"][0]["path"], path);
        }

        // A handler's own lines carry the request span.
        assert_eq!(call(&app, "/loud").await, StatusCode::OK);
        let logged = lines.take();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert_eq!(logged[0]["message"], "a handler's line");
        assert_eq!(logged[0]["spans"][0]["request_id"], "rid-1");
        assert_eq!(logged[0]["spans"][0]["path"], "/loud");
    }

    #[tokio::test]
    async fn a_request_without_an_id_gets_a_new_uuid() {
        let res = app()
            .oneshot(Request::get("/quiet").body(Body::empty()).unwrap())
            .await
            .unwrap();
        let id = res.headers()[REQUEST_ID].to_str().unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    }
}
