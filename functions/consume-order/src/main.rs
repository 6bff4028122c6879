//! consume-order: `REDIS_URL=… DATABASE_URL=… PUSH_TOKEN=… PORT=8083 cargo run -p consume-order`

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = shared::telemetry::init();
    consume_order::run(consume_order::Config::parse()).await
}
