//! The consumer's throughput on one backend. A benchmark, not a test: `scripts/bench-consumer`
//! starts the engines and runs it on PostgreSQL and on Spanner.
//!
//! `--via push` (the default) is the way orders really travel: N paid orders published as buy
//! publishes them (coalesced, `--batch` at most per message) to a topic on Google's Pub/Sub
//! emulator, whose push subscription delivers them to the consumer served on loopback; timed
//! from the first publish until the books hold every order. `--via direct` calls
//! `handle_batch` from C workers without Pub/Sub: the consumer's own ceiling.
//!
//!   REDIS_URL=… DATABASE_URL=… PUBSUB_EMULATOR_HOST=… cargo run --release -p consume-order --example bench
//!   REDIS_URL=… SPANNER_DATABASE=… SPANNER_EMULATOR_HOST=… PUBSUB_EMULATOR_HOST=… cargo run … --example bench

use anyhow::Context;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use domain::{Event, EventId, OrderId, OrderMessage, OrderStatus, TicketTypeId};
use gate::RedisArgs;
use pubsub::{Batching, OrderPublisher, PubSubPublisher};
use serde_json::json;
use store::Backend;
use store::DatabaseArgs;
use store::OrderRepository;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Via {
    Push,
    Direct,
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    db: DatabaseArgs,
    #[command(flatten)]
    redis: RedisArgs,
    /// Paid orders to persist (one ticket each; capacity is large enough for all).
    #[arg(long, default_value_t = 20_000)]
    orders: usize,
    /// At most this many orders per message (buy's `PUBLISH_BATCH_MAX_ORDERS` under load).
    #[arg(long, default_value_t = 100)]
    batch: usize,
    #[arg(long, value_enum, default_value = "push")]
    via: Via,
    /// Concurrent consumers with `--via direct` (the emulator's push keeps two in flight).
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    pubsub_emulator_host: Option<String>,
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT", default_value = "frequency-local")]
    project: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 300)]
    max_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The process-wide recorder: the Spanner repository counts its retried aborts there.
    let prom = web::metrics::handle();
    let repo = args.db.repository()?;
    repo.ping().await.context("cannot reach the database")?;
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
    let order = |i: usize| OrderMessage {
        order_id: OrderId::new(),
        event: event.id.clone(),
        ticket_type: TicketTypeId::parse("vip-3-day").expect("slug"),
        quantity: domain::Quantity::parse(1).unwrap(),
        email: domain::Email::parse(&format!("fan{i}@example.at")).unwrap(),
        amount_cents: 34_900,
        payment_ref: format!("sim_ch_{i}"),
        paid_at: chrono::Utc::now(),
        trace: None,
    };
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    let started = Instant::now();
    let redeliveries = match args.via {
        Via::Direct => {
            let batches: Vec<Vec<OrderMessage>> = (0..args.orders)
                .map(order)
                .collect::<Vec<_>>()
                .chunks(args.batch.max(1))
                .map(<[OrderMessage]>::to_vec)
                .collect();
            direct(&state, Arc::new(batches), args.concurrency, deadline).await?
        }
        Via::Push => {
            let host = args
                .pubsub_emulator_host
                .clone()
                .ok_or_else(|| anyhow::anyhow!("--via push needs PUBSUB_EMULATOR_HOST"))?;
            let orders: Vec<OrderMessage> = (0..args.orders).map(order).collect();
            push(
                &args,
                &host,
                state.clone(),
                orders,
                repo.as_ref(),
                &event,
                deadline,
            )
            .await?;
            state.stats.retryable.load(Ordering::Relaxed) as usize
        }
    };
    let elapsed = started.elapsed();
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
        json!({
            "backend": backend,
            "via": format!("{:?}", args.via).to_lowercase(),
            "orders": args.orders,
            "batch": args.batch,
            "seconds": (elapsed.as_secs_f64() * 100.0).round() / 100.0,
            "orders_per_second": (args.orders as f64 / elapsed.as_secs_f64()).round(),
            "duplicates": state.stats.duplicates.load(Ordering::Relaxed),
            "redeliveries": redeliveries,
            "aborts_retried": tx_retries,
        })
    );
    repo.reset(&event.id).await?;
    Ok(())
}

/// `handle_batch` from `concurrency` workers; a retryable failure is what Pub/Sub would
/// redeliver: counted, and the batch goes again. Returns the redeliveries.
async fn direct(
    state: &consume_order::AppState,
    batches: Arc<Vec<Vec<OrderMessage>>>,
    concurrency: usize,
    deadline: Instant,
) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (state, batches, next) = (state.clone(), batches.clone(), next.clone());
            tokio::spawn(async move {
                let mut redeliveries = 0usize;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(batch) = batches.get(i) else { break };
                    loop {
                        match consume_order::handle_batch(&state, batch).await {
                            Ok(s) if s.iter().all(|s| *s == OrderStatus::Confirmed) => break,
                            Ok(s) => anyhow::bail!("a batch ended {s:?}"),
                            Err(_) if Instant::now() < deadline => redeliveries += 1,
                            Err(e) => anyhow::bail!("gave up: {e}"),
                        }
                    }
                }
                Ok(redeliveries)
            })
        })
        .collect();
    let mut redeliveries = 0;
    for w in workers {
        redeliveries += w.await??;
    }
    Ok(redeliveries)
}

/// Serves the consumer on loopback behind a fresh topic and push subscription on the
/// emulator, publishes every order as buy does, and waits until the books hold them all.
async fn push(
    args: &Args,
    host: &str,
    state: consume_order::AppState,
    orders: Vec<OrderMessage>,
    repo: &dyn OrderRepository,
    event: &Event,
    deadline: Instant,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!(
        "http://{}/pubsub/orders?token=bench-token-0123456789",
        listener.local_addr()?
    );
    tokio::spawn(async move { axum::serve(listener, consume_order::app(state)).await });
    let name = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let admin = format!("http://{host}/v1/projects/{}", args.project);
    let http = reqwest::Client::new();
    for (path, body) in [
        (format!("{admin}/topics/{name}"), json!({})),
        (
            format!("{admin}/subscriptions/{name}"),
            json!({"topic": format!("projects/{}/topics/{name}", args.project),
                   "pushConfig": {"pushEndpoint": endpoint}, "ackDeadlineSeconds": 60}),
        ),
    ] {
        let res = http.put(&path).json(&body).send().await?;
        anyhow::ensure!(res.status().is_success(), "{path}: {}", res.text().await?);
    }
    let publisher = Arc::new(
        PubSubPublisher::connect(
            &format!("projects/{}/topics/{name}", args.project),
            Some(host),
            Duration::from_secs(30),
            Batching {
                max_orders: args.batch.max(1),
                linger: Duration::from_millis(20),
                in_flight: 4,
                ..Default::default()
            },
            None,
        )
        .await?,
    );
    let published: Vec<_> = orders
        .into_iter()
        .map(|o| {
            let publisher = publisher.clone();
            tokio::spawn(async move { publisher.publish(&o).await })
        })
        .collect();
    for p in published {
        p.await??;
    }
    loop {
        let books = repo.inventory(&event.id).await?;
        let sold: i64 = books.iter().map(|b| b.sold).sum();
        if sold >= args.orders as i64 {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {sold} of {} persisted in time",
            args.orders
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    http.delete(format!("{admin}/subscriptions/{name}"))
        .send()
        .await?;
    Ok(())
}
