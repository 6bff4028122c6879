//! buy: `REDIS_URL=… GOOGLE_CLOUD_PROJECT=… PUBSUB_EMULATOR_HOST=… PORT=8082 cargo run -p buy`

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _logs = shared::telemetry::init();
    buy::run(buy::Config::parse()).await
}
