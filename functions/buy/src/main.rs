//! buy: `REDIS_URL=… GOOGLE_CLOUD_PROJECT=… PUBSUB_EMULATOR_HOST=… PORT=8082 cargo run -p buy`

use clap::Parser;

// glibc malloc was a fifth of buy's CPU under load (arena contention between workers).
#[global_allocator]
static ALLOC: web::Allocator = web::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = telemetry::init();
    buy::run(buy::Config::parse()).await
}
