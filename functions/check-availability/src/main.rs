//! check-availability: `REDIS_URL=redis://127.0.0.1:6379 PORT=8081 cargo run -p check-availability`

use clap::Parser;

// glibc malloc was a fifth of buy's CPU under load (arena contention between workers).
#[global_allocator]
static ALLOC: web::Allocator = web::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = telemetry::init();
    check_availability::run(check_availability::Config::parse()).await
}
