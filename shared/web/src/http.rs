//! What every function's HTTP side shares: the JSON extractor that answers problem+json,
//! the middleware stack (request id, a span per request, timeout, body limit, panics),
//! `/healthz`, and serving with graceful shutdown on SIGTERM.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::timeout::TimeoutLayer;
use tracing::Instrument;

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

/// `Json<T>` whose rejections are problem+json: 400 malformed, 413 too large, 415 not JSON,
/// 422 wrong shape or types.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        // The common case, `application/json` and a body that parses, goes straight through
        // serde_json: axum's `Json` parses the media type and tracks the path into the body
        // for its error messages, a fifth of a reservation's own CPU. Anything else takes
        // axum's way, so every refusal reads exactly as before.
        let plain = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"application/json"));
        if !plain {
            return Json::<T>::from_request(req, state)
                .await
                .map(|Json(v)| Self(v))
                .map_err(refused);
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge
                } else {
                    ApiError::BadRequest(e.body_text())
                }
            })?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Ok(Self(v)),
            Err(_) => Json::<T>::from_bytes(&bytes)
                .map(|Json(v)| Self(v))
                .map_err(refused),
        }
    }
}

/// A refused JSON body as problem+json.
fn refused(e: JsonRejection) -> ApiError {
    match e {
        JsonRejection::MissingJsonContentType(_) => ApiError::UnsupportedMediaType,
        JsonRejection::JsonDataError(e) => ApiError::Invalid(Invalid::new("body", e.body_text())),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::BadRequest("The body is not valid JSON.".into())
        }
        e if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
        e => ApiError::BadRequest(e.body_text()),
    }
}

/// The name of a header that [`OneHeader`] extracts.
pub trait HeaderNamed {
    const NAME: HeaderName;
}

/// One request header (None when absent), without copying the others as the `HeaderMap`
/// extractor would.
pub struct OneHeader<N>(pub Option<HeaderValue>, pub std::marker::PhantomData<N>);

impl<S: Send + Sync, N: HeaderNamed> axum::extract::FromRequestParts<S> for OneHeader<N> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts.headers.get(N::NAME).cloned(),
            std::marker::PhantomData,
        ))
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

/// The answer to a panic; `observe` logs it, inside the request's span.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let mut res = problem(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "Internal error",
        "Something went wrong on our side.",
    );
    res.extensions_mut().insert(Panicked);
    res
}

/// Adds `/healthz`, problem+json fallbacks and the middleware stack to a function's routes.
///
/// The stack is short on purpose: one `observe` layer does request id, span and metrics
/// (tower-http's four layers for the same cost three times as much CPU per request on the
/// availability hot path, see docs/DECISIONS.md), then panics, timeout and body limit, as one
/// layer: each `Router::layer` call boxes every route once more, and every box is cloned per
/// request.
///
/// `silent` names hot routes whose handlers write no line of their own at info and above (the
/// availability snapshot, a reservation): they open no span, which costs a tenth to a quarter
/// of such a request's CPU, unless a line is written after all. A panic or an internal error
/// is logged here, after the handler, inside the same span any other request gets; under
/// `RUST_LOG=debug` the span opens up front. Lines that sum up many requests (a dependency's
/// throttled outage warning) carry no request's span on these routes. `/healthz` and
/// `/metrics` are always silent.
pub fn finish(router: Router, silent: &'static [&'static str]) -> Router {
    crate::metrics::handle();
    router
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(crate::metrics::render))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(
            tower::ServiceBuilder::new()
                .layer(axum::middleware::from_fn_with_state(
                    Silent(silent),
                    observe,
                ))
                .layer(CatchPanicLayer::custom(panic_response))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    REQUEST_TIMEOUT,
                ))
                .layer(DefaultBodyLimit::max(BODY_LIMIT)),
        )
}

/// The routes that open no span of their own (see [`finish`]).
#[derive(Clone, Copy)]
struct Silent(&'static [&'static str]);

impl Silent {
    fn contains(self, route: &str) -> bool {
        matches!(route, "/healthz" | "/metrics") || self.0.contains(&route)
    }
}

/// Marks a response made from a panic, so that `observe` logs it inside the request's span.
#[derive(Clone, Copy)]
struct Panicked;

/// A request id: the caller's `X-Request-Id` when it is sane, else a new one made of a
/// per-process random prefix and a counter (unique without a random draw per request).
fn request_id(req: &Request) -> HeaderValue {
    static PREFIX: OnceLock<[u8; 12]> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    if let Some(v) = req.headers().get(REQUEST_ID) {
        let ok = (1..=128).contains(&v.len()) && v.as_bytes().iter().all(|b| b.is_ascii_graphic());
        if ok {
            return v.clone();
        }
    }
    let prefix = PREFIX.get_or_init(|| {
        let mut p = [0; 12];
        p.copy_from_slice(&uuid::Uuid::new_v4().simple().to_string().as_bytes()[..12]);
        p
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // `{prefix}-{n:x}` by hand: the formatting machinery was a tenth of a cached read's cost.
    let mut buf = [0u8; 12 + 1 + 16];
    buf[..12].copy_from_slice(prefix);
    buf[12] = b'-';
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        buf[13 + digits - 1 - i] = b"0123456789abcdef"[((n >> (4 * i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&buf[..13 + digits]).expect("hex is a valid header value")
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Per request: the request id (on every answer), a span carrying method, route, request id
/// and the Cloud Trace context (not for silent routes, see [`finish`]), the header size limit
/// (431), and the HTTP metrics.
async fn observe(State(silent): State<Silent>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = request_id(&req);
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let route = matched.as_ref().map_or("unmatched", MatchedPath::as_str);
    let method = req.method().clone();
    let trace = telemetry::trace_context(req.headers());
    let span = |id: &HeaderValue| request_span(id, &method, route, trace.as_ref());
    // With debug enabled anywhere (`RUST_LOG=debug`, or `buy=debug`) every route opens its span
    // up front: handlers' debug lines need it.
    let opened = (!silent.contains(route) || debug_enabled()).then(|| span(&id));
    let res = if header_bytes(req.headers()) > HEADER_LIMIT {
        headers_too_large()
    } else if let Some(span) = &opened {
        next.run(req).instrument(span.clone()).await
    } else {
        next.run(req).await
    };
    answered(start, id, &method, route, opened, span, res)
}

/// Whether debug lines are enabled for any target.
fn debug_enabled() -> bool {
    tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG
}

fn header_bytes(headers: &axum::http::HeaderMap) -> usize {
    headers
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 4)
        .sum()
}

fn headers_too_large() -> Response {
    problem(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers-too-large",
        "Request headers too large",
        "The request's headers are larger than 16 KiB.",
    )
}

fn request_span(
    id: &HeaderValue,
    method: &axum::http::Method,
    route: &str,
    trace: Option<&(String, String)>,
) -> tracing::Span {
    let rid = id.to_str().unwrap_or_default();
    // Fields are formatted to JSON when the span opens: record the trace only when there is one.
    match trace {
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
    }
}

/// After the handler: the metrics, a panic's or an internal error's line (in the request's
/// span, opened now on a silent route), and the request id on the answer.
fn answered(
    start: Instant,
    id: HeaderValue,
    method: &axum::http::Method,
    route: &str,
    mut opened: Option<tracing::Span>,
    span: impl FnOnce(&HeaderValue) -> tracing::Span,
    mut res: Response,
) -> Response {
    let status = res.status();
    crate::metrics::observe_request(route, method, status, start.elapsed());
    let panicked = res.extensions_mut().remove::<Panicked>().is_some();
    let unlogged = res.extensions_mut().remove::<crate::error::Unlogged>();
    if opened.is_none() && (panicked || unlogged.is_some()) {
        opened = Some(span(&id));
    }
    if let Some(span) = opened {
        span.in_scope(|| {
            if panicked {
                tracing::error!("handler panicked");
            }
            if let Some(crate::error::Unlogged(chain)) = unlogged {
                tracing::error!(error = %chain, "internal error");
            }
            tracing::debug!(
                status = status.as_u16(),
                latency_us = start.elapsed().as_micros() as u64,
                "answered"
            );
        });
    }
    res.headers_mut().insert(REQUEST_ID, id);
    res
}

/// What a hot route answers: `Some` for the requests it serves itself, `None` for any other
/// (which then goes through the router, as if there were no hot route).
pub type HotAnswer = Arc<dyn Fn(&str, &axum::http::HeaderMap) -> Option<Response> + Send + Sync>;

/// A service's routes with one `GET` route answered ahead of the router.
///
/// axum's routing and the middleware around each route were about half of the availability
/// read's instructions (ADR 33): matching, the path parameter copied into an `Arc<str>` and a
/// map in the request's extensions, the matched path in another, and a boxed, cloned service
/// and future per middleware layer. The hot route is
/// matched by its fixed prefix and suffix instead, and its handler is a plain function called
/// in place. It gets what every route gets from [`finish`] (request id, metrics, the header
/// limit, a panic answered 500 and logged in the request's span) except the timeout, which a
/// handler that never waits does not need. A request the handler does not answer (`None`: an
/// unknown event, say) and any request while debug lines are enabled go through the router,
/// which answers them exactly as before.
#[derive(Clone)]
pub struct Hot {
    router: Router,
    route: &'static str,
    prefix: &'static str,
    suffix: &'static str,
    answer: HotAnswer,
}

impl Hot {
    /// `route` is the router's pattern with one parameter, e.g. `/v1/events/{event}/availability`;
    /// `answer` gets the parameter's raw text (not percent-decoded: answer `None` for any it
    /// does not know, and the router decodes it).
    pub fn get(router: Router, route: &'static str, answer: HotAnswer) -> Self {
        let (prefix, rest) = route.split_once('{').expect("a route with one parameter");
        let (_, suffix) = rest.split_once('}').expect("a route with one parameter");
        assert!(!suffix.contains('{'), "a route with one parameter");
        Self {
            router,
            route,
            prefix,
            suffix,
            answer,
        }
    }

    fn answer(&self, req: &Request) -> Option<Response> {
        if req.method() != axum::http::Method::GET || debug_enabled() {
            return None;
        }
        let param = req
            .uri()
            .path()
            .strip_prefix(self.prefix)?
            .strip_suffix(self.suffix)?;
        if param.is_empty() || param.contains('/') || header_bytes(req.headers()) > HEADER_LIMIT {
            return None;
        }
        let start = Instant::now();
        let res = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            (self.answer)(param, req.headers())
        })) {
            Ok(res) => res?,
            Err(panic) => panic_response(panic),
        };
        let span = |id: &HeaderValue| {
            let trace = telemetry::trace_context(req.headers());
            request_span(id, req.method(), self.route, trace.as_ref())
        };
        let id = request_id(req);
        Some(answered(
            start,
            id,
            req.method(),
            self.route,
            None,
            span,
            res,
        ))
    }
}

impl tower::Service<Request> for Hot {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = futures::future::Either<
        std::future::Ready<Result<Response, std::convert::Infallible>>,
        <Router as tower::Service<Request>>::Future,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.answer(&req) {
            Some(res) => futures::future::Either::Left(std::future::ready(Ok(res))),
            None => futures::future::Either::Right(tower::Service::call(&mut self.router, req)),
        }
    }
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

/// Serves `app` (a [`Router`], or a [`Hot`] over one) on `0.0.0.0:port` until SIGTERM, then
/// drains in-flight requests.
pub async fn serve<S>(app: S, port: u16) -> anyhow::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let listener = listen(port).await?;
    axum::serve(
        listener,
        axum::ServiceExt::<Request>::into_make_service(app),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    Ok(())
}

/// [`serve`], with each request's peer address as a `ConnectInfo<SocketAddr>` extension: what
/// the rate limiter keys on when no trusted proxy is in front. (Only buy needs it: inserting it
/// costs every request an extension map.)
pub async fn serve_with_peers(app: Router, port: u16) -> anyhow::Result<()> {
    let listener = listen(port).await?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    Ok(())
}

async fn listen(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on port {port}: {e}"))?;
    tracing::info!(port, "listening");
    crate::metrics::spawn_upkeep();
    Ok(listener)
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

impl From<gate::GateError> for ApiError {
    fn from(e: gate::GateError) -> Self {
        match e {
            gate::GateError::Unavailable(_) => unavailable("ticket gate", &e),
            gate::GateError::Protocol(_) => ApiError::Internal(e.into()),
        }
    }
}

/// Lets handlers answer `impl IntoResponse` from either side.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::response::IntoResponse;
    use testkit::Lines;
    use tower::ServiceExt;
    use tracing_subscriber::layer::SubscriberExt;

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
        async fn broken() -> ApiResult<&'static str> {
            Err(ApiError::Internal(
                anyhow::anyhow!("disk on fire").context("saving the order"),
            ))
        }
        finish(
            Router::new()
                .route("/silent", get(|| async { "ok" }))
                .route("/silent-boom", get(boom))
                .route("/silent-broken", get(broken))
                .route("/loud", get(logs))
                .route("/loud-broken", get(broken)),
            &["/silent", "/silent-boom", "/silent-broken"],
        )
    }

    /// The JSON lines written at info and above while the guard lives.
    fn capture() -> (Lines, tracing::subscriber::DefaultGuard) {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::EnvFilter::new("info"))
            .with(tracing_stackdriver::layer().with_writer(move || writer.clone()));
        (lines, tracing::subscriber::set_default(subscriber))
    }

    #[tokio::test]
    async fn silent_routes_log_only_panics_and_internal_errors_in_the_request_span() {
        let (lines, _guard) = capture();
        let app = app();

        assert_eq!(call(&app, "/silent").await, StatusCode::OK);
        assert!(lines.take().is_empty(), "a silent route writes no line");

        assert_eq!(
            call(&app, "/silent-boom").await,
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let logged = lines.take();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert_eq!(logged[0]["message"], "handler panicked");
        assert_eq!(logged[0]["severity"], "ERROR");
        let span = &logged[0]["spans"][0];
        assert_eq!(span["request_id"], "rid-1");
        assert_eq!(span["path"], "/silent-boom");

        // An internal error is logged once, with its whole chain, in the request's span,
        // on a silent route as on any other.
        for path in ["/silent-broken", "/loud-broken"] {
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

        // Any other route's lines carry the request span.
        assert_eq!(call(&app, "/loud").await, StatusCode::OK);
        let logged = lines.take();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert_eq!(logged[0]["message"], "a handler's line");
        assert_eq!(logged[0]["spans"][0]["request_id"], "rid-1");
        assert_eq!(logged[0]["spans"][0]["path"], "/loud");
    }

    /// A hot route's panic is answered and logged as a routed handler's is; what it does not
    /// answer, the router does.
    #[tokio::test]
    async fn a_hot_route_panics_and_passes_on_like_a_routed_one() {
        let (lines, _guard) = capture();
        let hot = Hot::get(
            app(),
            "/hot/{x}/end",
            Arc::new(|x: &str, _: &axum::http::HeaderMap| match x {
                "boom" => panic!("boom"),
                "yes" => Some("hot".into_response()),
                _ => None,
            }),
        );
        let send = |path: &'static str| {
            let hot = hot.clone();
            async move {
                let req = Request::builder()
                    .uri(path)
                    .header(REQUEST_ID, "rid-2")
                    .body(Body::empty())
                    .unwrap();
                let res = hot.oneshot(req).await.unwrap();
                assert_eq!(res.headers()[REQUEST_ID], "rid-2", "{path}");
                let status = res.status();
                let ct = res.headers().get("content-type").cloned();
                let body = axum::body::to_bytes(res.into_body(), 1 << 16)
                    .await
                    .unwrap();
                (status, ct, body)
            }
        };
        let (status, _, body) = send("/hot/yes/end").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hot"[..]));
        assert!(lines.take().is_empty(), "a hot route is silent");

        let (status, ct, _) = send("/hot/boom/end").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(ct.unwrap(), "application/problem+json");
        let logged = lines.take();
        assert_eq!(logged.len(), 1, "{logged:?}");
        assert_eq!(logged[0]["message"], "handler panicked");
        assert_eq!(logged[0]["spans"][0]["request_id"], "rid-2");
        assert_eq!(logged[0]["spans"][0]["path"], "/hot/{x}/end");

        // Not answered by the hot route: the router's routes and fallback.
        assert_eq!(send("/hot/no/end").await.0, StatusCode::NOT_FOUND);
        assert_eq!(send("/silent").await.0, StatusCode::OK);
        assert!(lines.take().is_empty());
    }

    #[test]
    fn generated_request_ids_are_prefix_dash_hex_and_unique() {
        let req = Request::new(Body::empty());
        let a = request_id(&req);
        let b = request_id(&req);
        assert_ne!(a, b);
        for id in [a, b] {
            let (prefix, n) = id.to_str().unwrap().split_once('-').unwrap();
            assert_eq!(prefix.len(), 12);
            assert!(u64::from_str_radix(n, 16).is_ok(), "{id:?}");
            assert!(!n.starts_with('0') || n == "0", "{id:?}");
        }
    }
}
