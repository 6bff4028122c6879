//! The consumer's throughput on one backend: `handle` (persist the paid order and its tickets
//! in one transaction, then mirror it in the gate) for N paid orders from C concurrent
//! workers, as Pub/Sub push would drive it, without the HTTP hop. A benchmark, not a test:
//! `scripts/bench-consumer` starts the engines and runs it on PostgreSQL and on Spanner.
//!
//!   REDIS_URL=… DATABASE_URL=… cargo run --release -p consume-order --example bench -- --orders 2000
//!   REDIS_URL=… SPANNER_DATABASE=… SPANNER_EMULATOR_HOST=… cargo run … --example bench

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use shared::config::{Backend, DatabaseArgs, RedisArgs};
use shared::domain::{Event, EventId, OrderId, OrderMessage, OrderStatus, TicketTypeId};
use shared::repo::OrderRepository;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    redis: RedisArgs,
    /// Paid orders to persist (one ticket each; capacity is large enough for all).
    #[arg(long, default_value_t = 2000)]
    orders: usize,
    /// Concurrent consumers (Pub/Sub push delivers many messages at once).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The process-wide recorder: the Spanner repository counts its retried aborts there.
    let prom = shared::metrics::handle();
    let repo = args.db.repository()?;
    repo.ping()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach the database: {e}"))?;
    let gate = args.redis.gate().await?;
    let id = EventId::parse(&format!(
        "bench-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ))?;
    let capacity = u32::try_from(args.orders)? + 10;
    let event = Event::frequency(id, capacity, chrono::Utc::now(), 600);
    repo.seed(&event).await?;
    gate.seed(&event).await?;
    let state = consume_order::AppState::new(
        repo.clone(),
        gate,
        consume_order::PushAuth::Token("bench-token-0123456789".into()),
    );
    let msgs: Arc<Vec<OrderMessage>> = Arc::new(
        (0..args.orders)
            .map(|i| OrderMessage {
                order_id: OrderId::new(),
                event: event.id.clone(),
                ticket_type: TicketTypeId::parse("vip-3-day").expect("slug"),
                quantity: 1,
                email: format!("fan{i}@example.at"),
                amount_cents: 34_900,
                payment_ref: format!("sim_ch_{i}"),
                paid_at: chrono::Utc::now(),
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (state, msgs, next) = (state.clone(), msgs.clone(), next.clone());
            tokio::spawn(async move {
                let mut latencies = vec![];
                let mut redeliveries = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(msg) = msgs.get(i) else { break };
                    let t = Instant::now();
                    // A retryable failure is what Pub/Sub would redeliver: count and go again.
                    loop {
                        match consume_order::handle(&state, msg).await {
                            Ok(OrderStatus::Confirmed) => break,
                            Ok(other) => anyhow::bail!("order {} ended {other:?}", msg.order_id),
                            Err(_) if Instant::now() < deadline => redeliveries += 1,
                            Err(e) => anyhow::bail!("gave up: {e}"),
                        }
                    }
                    latencies.push(t.elapsed());
                }
                Ok((latencies, redeliveries))
            })
        })
        .collect();
    let mut latencies = vec![];
    let mut redeliveries = 0;
    for w in workers {
        let (l, r) = w.await??;
        latencies.extend(l);
        redeliveries += r;
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let books = repo.inventory(&event.id).await?;
    let vip = books
        .iter()
        .find(|i| i.ticket_type.as_str() == "vip-3-day")
        .ok_or_else(|| anyhow::anyhow!("no books"))?;
    anyhow::ensure!(
        vip.sold == args.orders as i64 && vip.confirmed_orders == args.orders as i64,
        "books do not match: {vip:?}"
    );
    // Aborted Spanner transactions retried inside the repository (not redeliveries).
    let tx_retries: u64 = prom
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("spanner_transaction_retries_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let backend = match args.db.backend() {
        Backend::Postgres => "postgres",
        Backend::Spanner => "spanner",
    };
    println!(
        "{}",
        serde_json::json!({
            "backend": backend,
            "orders": args.orders,
            "concurrency": args.concurrency,
            "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
            "orders_per_second": (args.orders as f64 / elapsed.as_secs_f64()).round(),
            "p50_ms": (pct(0.50) * 10.0).round() / 10.0,
            "p99_ms": (pct(0.99) * 10.0).round() / 10.0,
            "redeliveries": redeliveries,
            "aborts_retried": tx_retries,
        })
    );
    repo.reset(&event.id).await?;
    Ok(())
}
