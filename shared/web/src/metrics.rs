//! Prometheus metrics: one recorder per process, rendered at `GET /metrics` on every function.
//! Names follow Prometheus conventions (`_total` counters, `_seconds` histograms); labels are
//! bounded sets (matched route templates, outcomes), never raw paths or ids.

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Latency buckets from 0.5 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Installs the process-wide recorder once and returns its handle.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
                .expect("static buckets")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours renders nothing.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// `GET /metrics`
pub async fn render() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        handle().render(),
    )
        .into_response()
}

/// Counts every request and times it, labelled by matched route, method and status.
pub fn observe_request(route: &str, method: &Method, status: StatusCode, elapsed: Duration) {
    metrics::histogram!("http_request_duration_seconds",
        "route" => route.to_owned(), "method" => method.to_string())
    .record(elapsed.as_secs_f64());
    metrics::counter!("http_requests_total", "route" => route.to_owned(),
        "method" => method.to_string(), "status" => status.as_u16().to_string())
    .increment(1);
}

/// Drains recorded histogram samples into their buckets every few seconds. Without it the
/// exporter keeps every sample until the next scrape, and an unscraped instance (Cloud Run
/// without a collector) would grow without bound.
pub fn spawn_upkeep() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        // A plain thread: independent of whichever runtime happens to call this first.
        let spawned = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(Duration::from_secs(5));
                    handle().run_upkeep();
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread");
        }
    });
}
