//! Logs as Cloud Logging JSON (tracing-stackdriver) on stdout, filtered by `RUST_LOG`.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

pub use tracing_appender::non_blocking::WorkerGuard;

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber for a service. Lines are written by a background thread so
/// request threads never wait on stdout; when its buffer is full they do wait (nothing is
/// dropped). Keep the guard alive until exit: dropping it flushes.
pub fn init() -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    // Cloud Logging needs the project in the trace field; Cloud Run deployments set it.
    let project: std::sync::Arc<str> = std::env::var("GOOGLE_CLOUD_PROJECT")
        .unwrap_or_else(|_| "local".into())
        .into();
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(tracing_stackdriver::layer().with_writer(CloudTrace {
            inner: writer,
            project,
        }))
        .try_init();
    guard
}

/// Installs a synchronous subscriber once (later calls are no-ops): for tests.
pub fn init_for_tests() {
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(tracing_stackdriver::layer())
        .try_init();
}

/// The trace a request belongs to, from `traceparent` (W3C) or `X-Cloud-Trace-Context`
/// (`TRACE_ID/SPAN_ID;o=1`, which Google's load balancer and Cloud Run set).
pub fn trace_context(headers: &http::HeaderMap) -> Option<(String, String)> {
    // Names made once: a `&str` name is parsed again on every lookup.
    use http::HeaderName;
    const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
    const CLOUD_TRACE: HeaderName = HeaderName::from_static("x-cloud-trace-context");
    if let Some(tp) = headers.get(TRACEPARENT).and_then(|v| v.to_str().ok()) {
        let parts: Vec<&str> = tp.split('-').collect();
        if parts.len() == 4 && parts[1].len() == 32 && parts[2].len() == 16 {
            return Some((parts[1].to_owned(), parts[2].to_owned()));
        }
    }
    let cloud = headers.get(CLOUD_TRACE)?.to_str().ok()?;
    let (trace, rest) = cloud.split_once('/').unwrap_or((cloud, ""));
    let span = rest.split(';').next().unwrap_or_default();
    let ok = trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| (trace.to_owned(), span.to_owned()))
}

/// Moves a request span's `trace_id` / `span_id` into the fields Cloud Logging correlates
/// on (`logging.googleapis.com/trace` = `projects/P/traces/T`, `…/spanId`), so one order can be
/// followed across the three functions. Lines without a trace pass through untouched.
pub fn lift_trace(line: &[u8], project: &str) -> Option<Vec<u8>> {
    if !line.windows(8).any(|w| w == b"trace_id") {
        return None;
    }
    let mut entry: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line).ok()?;
    let spans = entry.get("spans")?.as_array()?;
    // The innermost span with a trace: an order's own (the fan's) inside a message's request.
    let with_trace = spans.iter().rev().find(|s| s.get("trace_id").is_some())?;
    let trace = with_trace
        .get("trace_id")?
        .as_str()
        .filter(|t| !t.is_empty())?
        .to_owned();
    let span = with_trace
        .get("span_id")
        .and_then(|s| s.as_str())
        .map(str::to_owned);
    entry.insert(
        "logging.googleapis.com/trace".into(),
        serde_json::Value::String(format!("projects/{project}/traces/{trace}")),
    );
    if let Some(span) = span.filter(|s| !s.is_empty()) {
        entry.insert(
            "logging.googleapis.com/spanId".into(),
            serde_json::Value::String(span),
        );
    }
    let mut out = serde_json::to_vec(&entry).ok()?;
    out.push(b'\n');
    Some(out)
}

/// A writer that applies [`lift_trace`] to each line it is given.
pub struct CloudTraceWriter<W> {
    inner: W,
    project: std::sync::Arc<str>,
}

impl<W: std::io::Write> std::io::Write for CloudTraceWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match lift_trace(buf, &self.project) {
            Some(fixed) => self.inner.write_all(&fixed)?,
            None => self.inner.write_all(buf)?,
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Makes [`CloudTraceWriter`]s over another writer maker.
#[derive(Clone)]
pub struct CloudTrace<M> {
    inner: M,
    project: std::sync::Arc<str>,
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for CloudTrace<M>
{
    type Writer = CloudTraceWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        CloudTraceWriter {
            inner: self.inner.make_writer(),
            project: self.project.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testkit::Lines;

    #[test]
    fn reads_both_trace_headers() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-cloud-trace-context",
            "105445aa7843bc8bf206b12000100000/1;o=1".parse().unwrap(),
        );
        assert_eq!(
            trace_context(&h),
            Some(("105445aa7843bc8bf206b12000100000".into(), "1".into()))
        );
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        assert_eq!(
            trace_context(&h),
            Some((
                "4bf92f3577b34da6a3ce929d0e0e4736".into(),
                "00f067aa0ba902b7".into()
            ))
        );
        assert_eq!(trace_context(&http::HeaderMap::new()), None);
    }

    #[test]
    fn lifts_the_trace_to_the_fields_cloud_logging_reads() {
        let line = br#"{"severity":"INFO","message":"reserved","spans":[{"name":"request","trace_id":"abc","span_id":"7"}]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&lift_trace(line, "proj").unwrap()).unwrap();
        assert_eq!(
            out["logging.googleapis.com/trace"],
            "projects/proj/traces/abc"
        );
        assert_eq!(out["logging.googleapis.com/spanId"], "7");
        assert_eq!(out["message"], "reserved");
        assert!(lift_trace(br#"{"message":"no trace here"}"#, "proj").is_none());
    }

    /// A line about one order of a message goes to the fan's trace (its own span's), not to the
    /// push request's that holds the message.
    #[test]
    fn the_innermost_trace_wins() {
        let line = br#"{"message":"order persisted","spans":[{"name":"request","trace_id":"push","span_id":"1"},{"name":"message"},{"name":"order","trace_id":"fan","span_id":"2"}]}"#;
        let out: serde_json::Value =
            serde_json::from_slice(&lift_trace(line, "proj").unwrap()).unwrap();
        assert_eq!(
            out["logging.googleapis.com/trace"],
            "projects/proj/traces/fan"
        );
        assert_eq!(out["logging.googleapis.com/spanId"], "2");
    }

    /// A span's fields, of every kind, reach each line written in it as JSON.
    #[test]
    fn span_fields_are_written_as_json() {
        let buf = Lines::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(tracing_stackdriver::layer().with_writer(move || out.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                path = "/v1/\"odd\"\\path\n\u{1}\tü€",
                r#type = "x",
                dbg = ?Some("q\"uote"),
                later = tracing::field::Empty,
            );
            span.in_scope(|| tracing::info!(k = 1, "inside"));
            span.record("later", "set");
            span.in_scope(|| tracing::warn!("after record"));
        });
        let lines = buf.take();
        assert_eq!(lines.len(), 2, "{lines:?}");
        let span = &lines[0]["spans"][0];
        assert_eq!(span["path"], "/v1/\"odd\"\\path\n\u{1}\tü€");
        assert_eq!(span["type"], "x");
        assert_eq!(span["dbg"], "Some(\"q\\\"uote\")");
        assert_eq!(lines[1]["spans"][0]["later"], "set");
    }
}

/// At most one log line per `every` for a repeated condition (a dependency down answers every
/// request with the same warning: at on-sale rates that would flood the logs). `throttled`
/// returns how many occurrences the line stands for (itself plus the ones skipped since the
/// last), or `None` when this one is skipped.
pub struct LogThrottle {
    last_ms: std::sync::atomic::AtomicI64,
    skipped: std::sync::atomic::AtomicU64,
    every_ms: i64,
}

impl LogThrottle {
    /// One line per `every_ms` milliseconds.
    pub const fn new(every_ms: i64) -> Self {
        Self {
            last_ms: std::sync::atomic::AtomicI64::new(i64::MIN),
            skipped: std::sync::atomic::AtomicU64::new(0),
            every_ms,
        }
    }

    /// Whether to log now; `Some(n)`: this line stands for `n` occurrences.
    pub fn throttled(&self) -> Option<u64> {
        use std::sync::atomic::Ordering;
        let now = chrono::Utc::now().timestamp_millis();
        let last = self.last_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.every_ms
            && self
                .last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            Some(self.skipped.swap(0, Ordering::Relaxed) + 1)
        } else {
            self.skipped.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod throttle_tests {
    #[test]
    fn one_line_per_window_counting_the_skipped() {
        let t = super::LogThrottle::new(60_000);
        assert_eq!(t.throttled(), Some(1));
        assert_eq!(t.throttled(), None);
        assert_eq!(t.throttled(), None);
        let t0 = super::LogThrottle::new(0);
        assert_eq!(t0.throttled(), Some(1));
        assert_eq!(t0.throttled(), Some(1));
    }
}
