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
    let _ = tracing_subscriber::registry()
        .with(filter())
        .with(tracing_stackdriver::layer().with_writer(writer))
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
