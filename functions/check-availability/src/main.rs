//! check-availability: `REDIS_URL=redis://127.0.0.1:6379 PORT=8081 cargo run -p check-availability`

use clap::Parser;

// mimalloc: glibc's malloc contends between worker threads under load (ADR 18).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = telemetry::init();
    check_availability::run(check_availability::Config::parse()).await
}
