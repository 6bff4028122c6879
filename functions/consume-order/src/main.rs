//! consume-order: `REDIS_URL=… DATABASE_URL=… PUSH_TOKEN=… PORT=8083 cargo run -p consume-order`

use clap::Parser;

// glibc malloc was a fifth of buy's CPU under load (arena contention between workers).
#[global_allocator]
static ALLOC: web::Allocator = web::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = telemetry::init();
    consume_order::run(consume_order::Config::parse()).await
}
