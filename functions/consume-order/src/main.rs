//! consume-order: `REDIS_URL=… DATABASE_URL=… PUSH_TOKEN=… PORT=8083 cargo run -p consume-order`

use clap::Parser;

// mimalloc: glibc's malloc contends between worker threads under load (ADR 18).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = telemetry::init();
    consume_order::run(consume_order::Config::parse()).await
}
