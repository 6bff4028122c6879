//! buy: `REDIS_URL=… GOOGLE_CLOUD_PROJECT=… PUBSUB_EMULATOR_HOST=… PORT=8082 cargo run -p buy`

use clap::Parser;

// mimalloc: glibc's malloc contends between worker threads under load (ADR 18).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = telemetry::init();
    buy::run(buy::Config::parse()).await
}
