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
        .with(SpanFields)
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
        .with(SpanFields)
        .with(tracing_stackdriver::layer())
        .try_init();
}

/// Formats a span's fields to JSON when it opens, exactly where and as tracing-stackdriver's
/// `JsonFields` would, but straight into the string: `JsonFields` goes through serde_json
/// `Value`s and a `fmt::Write` adapter, about 7,000 instructions for a request span's three
/// fields, a fifth of a cached read's whole cost. Installed before the stackdriver layer,
/// which finds the fields formatted and leaves them (tracing-subscriber formats a span's
/// fields only when no layer did yet); recording onto the span later goes through
/// `JsonFields` as before.
pub struct SpanFields;

impl<S> tracing_subscriber::Layer<S> for SpanFields
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let Some(span) = ctx.span(id) else { return };
        let mut json = JsonObject(String::with_capacity(128));
        attrs.record(&mut json);
        let mut fields = json.0;
        fields.push('}');
        if fields.len() == 1 {
            fields.insert(0, '{');
        }
        span.extensions_mut()
            .insert(tracing_subscriber::fmt::FormattedFields::<
                tracing_subscriber::fmt::format::JsonFields,
            >::new(fields));
    }
}

/// A JSON object written field by field (`{` before the first, the caller closes it).
struct JsonObject(String);

impl JsonObject {
    fn key(&mut self, field: &tracing::field::Field) {
        self.0.push(if self.0.is_empty() { '{' } else { ',' });
        let name = field.name();
        json_str(&mut self.0, name.strip_prefix("r#").unwrap_or(name));
        self.0.push(':');
    }
}

/// Appends `s` as a JSON string.
fn json_str(out: &mut String, s: &str) {
    use std::fmt::Write;
    out.push('"');
    let mut plain = 0;
    // Bytes, not chars: every byte that needs escaping is ASCII, so the slices between them
    // stay on char boundaries.
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            b if b < b' ' => "",
            _ => continue,
        };
        out.push_str(&s[plain..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        plain = i + 1;
    }
    out.push_str(&s[plain..]);
    out.push('"');
}

impl tracing::field::Visit for JsonObject {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.key(field);
        json_str(&mut self.0, value);
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.key(field);
        json_str(&mut self.0, &format!("{value:?}"));
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.key(field);
        self.0.push_str(&value.to_string());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.key(field);
        self.0.push_str(&value.to_string());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.key(field);
        self.0.push_str(if value { "true" } else { "false" });
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.key(field);
        self.0.push_str(&serde_json::Value::from(value).to_string());
    }
    fn record_bytes(&mut self, field: &tracing::field::Field, value: &[u8]) {
        self.key(field);
        self.0.push_str(&serde_json::Value::from(value).to_string());
    }
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
    let with_trace = spans.iter().find(|s| s.get("trace_id").is_some())?;
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

    /// The lines one subscriber writes for a span with every kind of field, an event in it,
    /// and a field recorded later.
    fn lines(fast: bool) -> Vec<serde_json::Value> {
        let buf = Lines::default();
        let out = buf.clone();
        let stackdriver = tracing_stackdriver::layer().with_writer(move || out.clone());
        let subscriber = tracing_subscriber::registry()
            .with(EnvFilter::new("info"))
            .with(fast.then_some(SpanFields))
            .with(stackdriver);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                path = "/v1/\"odd\"\\path\n\u{1}\tü€",
                r#type = "x",
                n = -3i64,
                u = 7u64,
                ok = true,
                ratio = 0.5f64,
                dbg = ?Some("q\"uote"),
                shown = %"disp",
                later = tracing::field::Empty,
            );
            span.in_scope(|| tracing::info!(k = 1, "inside"));
            span.record("later", "set");
            span.in_scope(|| tracing::warn!("after record"));
            tracing::info_span!("empty").in_scope(|| tracing::info!("in an empty span"));
        });
        let mut lines = buf.take();
        for v in &mut lines {
            v.as_object_mut().unwrap().remove("time");
        }
        lines
    }

    #[test]
    fn span_fields_formats_a_span_when_it_opens() {
        use tracing_subscriber::registry::LookupSpan;
        let subscriber = tracing_subscriber::registry().with(SpanFields);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("request", request_id = "a\"b", n = 2u64);
            let id = span.id().unwrap();
            tracing::dispatcher::get_default(|d| {
                let registry = d.downcast_ref::<tracing_subscriber::Registry>().unwrap();
                let span = registry.span(&id).unwrap();
                let ext = span.extensions();
                let fields = ext
                    .get::<tracing_subscriber::fmt::FormattedFields<
                        tracing_subscriber::fmt::format::JsonFields,
                    >>()
                    .unwrap();
                assert_eq!(fields.fields, r#"{"request_id":"a\"b","n":2}"#);
            });
        });
    }

    #[test]
    fn span_fields_are_written_as_json_fields_would() {
        let (fast, slow) = (lines(true), lines(false));
        assert_eq!(fast.len(), 3, "{fast:?}");
        assert_eq!(fast, slow);
        let span = &fast[0]["spans"][0];
        assert_eq!(span["path"], "/v1/\"odd\"\\path\n\u{1}\tü€");
        assert_eq!(span["type"], "x");
        assert_eq!(span["dbg"], "Some(\"q\\\"uote\")");
        assert_eq!(fast[1]["spans"][0]["later"], "set");
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
