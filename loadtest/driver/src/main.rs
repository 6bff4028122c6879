//! `fans`: N concurrent fans, each doing the purchase journey back to back (availability →
//! reserve → pay → order status) for a fixed time. Closed loop, so it measures what the system
//! sustains rather than what a schedule asks for; it costs far less CPU per request than k6, so
//! on a small machine the system is the limit.
//!
//! With `--confirm` a fan waits for its tickets as a fan does: it polls the order every
//! `--poll-ms` until it reads `confirmed` (or `rejected`) before its next journey, and the run
//! reports reserve → confirmed and paid → confirmed. With `--until-sold-out` each fan stops at
//! the first "sold out" and the run ends when the last one has its tickets: the sell-out.
//!
//!   fans --read-url http://127.0.0.1:8081 --buy-url http://127.0.0.1:8082 \
//!        --event frequency-capacity --fans 256 --seconds 30 --out driver.json
//!   fans … --fans 1000 --confirm --until-sold-out --seconds 600

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    read_url: String,
    #[arg(long)]
    buy_url: String,
    #[arg(long, default_value = "frequency-capacity")]
    event: String,
    /// Concurrent fans (each one journey at a time).
    #[arg(long, default_value_t = 256)]
    fans: usize,
    /// How long to run (bounded: at most an hour).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    /// Where to write the JSON summary.
    #[arg(long)]
    out: Option<String>,
    /// Poll each paid order until it is confirmed before the next journey.
    #[arg(long)]
    confirm: bool,
    /// How often a fan polls its order with `--confirm`, in milliseconds.
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// Each fan stops at the first "sold out"; the run ends when every fan has.
    #[arg(long)]
    until_sold_out: bool,
}

/// How long a fan waits for its order to be confirmed before it counts it as never confirmed.
const CONFIRM_WITHIN: Duration = Duration::from_secs(60);

const STEPS: [&str; 4] = ["availability", "reserve", "pay", "status"];

#[derive(Default)]
struct Tally {
    /// Latency in microseconds per step.
    latencies: [Vec<u32>; 4],
    /// Answers per step and status code (0 = transport error).
    statuses: [BTreeMap<u16, u64>; 4],
    journeys: u64,
    /// With `--confirm`: reserve sent → confirmed read, and pay answered → confirmed read, µs.
    reserve_to_confirmed: Vec<u32>,
    paid_to_confirmed: Vec<u32>,
    /// Paid orders read back `rejected`, or still not confirmed after [`CONFIRM_WITHIN`].
    rejected: u64,
    unconfirmed: u64,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

impl Tally {
    fn record(&mut self, step: usize, started: Instant, status: u16) {
        let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
        self.latencies[step].push(us);
        *self.statuses[step].entry(status).or_default() += 1;
    }
    fn merge(&mut self, other: Tally) {
        for (i, l) in other.latencies.into_iter().enumerate() {
            self.latencies[i].extend(l);
        }
        for (i, s) in other.statuses.into_iter().enumerate() {
            for (k, v) in s {
                *self.statuses[i].entry(k).or_default() += v;
            }
        }
        self.journeys += other.journeys;
        self.reserve_to_confirmed.extend(other.reserve_to_confirmed);
        self.paid_to_confirmed.extend(other.paid_to_confirmed);
        self.rejected += other.rejected;
        self.unconfirmed += other.unconfirmed;
    }
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Option<Value>) {
    match req.send().await {
        Ok(res) => {
            let status = res.status().as_u16();
            let body = res.json::<Value>().await.ok();
            (status, body)
        }
        Err(_) => (0, None),
    }
}

async fn fan(client: reqwest::Client, args: std::sync::Arc<Args>, until: Instant) -> Tally {
    let mut t = Tally::default();
    let avail_url = format!("{}/v1/events/{}/availability", args.read_url, args.event);
    let reserve_url = format!("{}/v1/events/{}/orders", args.buy_url, args.event);
    let mut n: u64 = 0;
    while Instant::now() < until {
        n += 1;
        let s = Instant::now();
        let (code, view) = send(client.get(&avail_url)).await;
        t.record(0, s, code);
        let tier = view.as_ref().and_then(|v| {
            v["ticket_types"]
                .as_array()?
                .iter()
                .filter(|tt| tt["available"].as_i64().unwrap_or(0) > 0)
                .nth(usize::try_from(n % 3).unwrap_or(0))
                .or_else(|| v["ticket_types"].as_array()?.first())
                .and_then(|tt| tt["id"].as_str().map(str::to_owned))
        });
        let any_left = view.as_ref().is_some_and(|v| {
            v["ticket_types"]
                .as_array()
                .is_some_and(|tts| tts.iter().any(|tt| tt["available"].as_i64() > Some(0)))
        });
        if args.until_sold_out && code == 200 && !any_left {
            break;
        }
        let Some(tier) = tier else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let key = uuid::Uuid::new_v4().to_string();
        let reserved_at = Instant::now();
        let (code, body) = send(
            client
                .post(&reserve_url)
                .header("idempotency-key", &key)
                .json(&json!({"ticket_type": tier, "quantity": 1, "email": format!("{key}@driver.example")})),
        )
        .await;
        t.record(1, reserved_at, code);
        let Some(id) = body
            .filter(|_| code == 202)
            .and_then(|b| b["order_id"].as_str().map(str::to_owned))
        else {
            continue;
        };
        let s = Instant::now();
        let (code, _) = send(
            client
                .post(format!("{}/v1/orders/{id}/payment", args.buy_url))
                .json(&json!({"payment_token": "tok_approve"})),
        )
        .await;
        t.record(2, s, code);
        let paid_at = Instant::now();
        let order_url = format!("{}/v1/orders/{id}", args.read_url);
        loop {
            let s = Instant::now();
            let (code, body) = send(client.get(&order_url)).await;
            t.record(3, s, code);
            if !args.confirm || code != 200 && code != 0 && code != 503 {
                break;
            }
            match body.as_ref().and_then(|b| b["status"].as_str()) {
                Some("confirmed") => {
                    t.reserve_to_confirmed.push(micros(reserved_at.elapsed()));
                    t.paid_to_confirmed.push(micros(paid_at.elapsed()));
                    break;
                }
                Some("rejected") => {
                    t.rejected += 1;
                    break;
                }
                _ if paid_at.elapsed() > CONFIRM_WITHIN || Instant::now() >= until => {
                    t.unconfirmed += 1;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(args.poll_ms)).await,
            }
        }
        t.journeys += 1;
    }
    t
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = std::sync::Arc::new(Args::parse());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.fans)
        .timeout(Duration::from_secs(15))
        .build()?;
    let started = Instant::now();
    let until = started + Duration::from_secs(args.seconds);
    let tasks: Vec<_> = (0..args.fans)
        .map(|_| tokio::spawn(fan(client.clone(), args.clone(), until)))
        .collect();
    let mut total = Tally::default();
    for task in tasks {
        total.merge(task.await?);
    }
    let secs = started.elapsed().as_secs_f64();
    let mut steps = serde_json::Map::new();
    let mut requests = 0usize;
    println!(
        "{:<13}{:>10}{:>10}{:>9}{:>9}{:>9}  answers",
        "step", "requests", "req/s", "p50 ms", "p95 ms", "p99 ms"
    );
    for (i, name) in STEPS.iter().enumerate() {
        let mut l = std::mem::take(&mut total.latencies[i]);
        l.sort_unstable();
        requests += l.len();
        let statuses: BTreeMap<String, u64> = total.statuses[i]
            .iter()
            .map(|(k, v)| (k.to_string(), *v))
            .collect();
        println!(
            "{name:<13}{:>10}{:>10.0}{:>9.1}{:>9.1}{:>9.1}  {statuses:?}",
            l.len(),
            l.len() as f64 / secs,
            pct(&l, 0.5),
            pct(&l, 0.95),
            pct(&l, 0.99)
        );
        steps.insert(
            (*name).into(),
            json!({"requests": l.len(), "rps": l.len() as f64 / secs, "p50_ms": pct(&l, 0.5),
                   "p95_ms": pct(&l, 0.95), "p99_ms": pct(&l, 0.99), "statuses": statuses}),
        );
    }
    println!(
        "{} journeys in {secs:.1} s: {:.0} journeys/s, {:.0} req/s with {} fans",
        total.journeys,
        total.journeys as f64 / secs,
        requests as f64 / secs,
        args.fans
    );
    let mut waits = serde_json::Map::new();
    for (name, l) in [
        ("reserve_to_confirmed", &mut total.reserve_to_confirmed),
        ("paid_to_confirmed", &mut total.paid_to_confirmed),
    ] {
        l.sort_unstable();
        if args.confirm {
            println!(
                "{name:<21} p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                pct(l, 0.5),
                pct(l, 0.95),
                pct(l, 0.99),
                pct(l, 1.0)
            );
        }
        waits.insert(
            name.into(),
            json!({"count": l.len(), "p50_ms": pct(l, 0.5), "p95_ms": pct(l, 0.95),
                   "p99_ms": pct(l, 0.99), "max_ms": pct(l, 1.0)}),
        );
    }
    if args.confirm {
        println!(
            "{} confirmed, {} rejected, {} not confirmed within {:?}",
            total.paid_to_confirmed.len(),
            total.rejected,
            total.unconfirmed,
            CONFIRM_WITHIN
        );
    }
    // The driver's own CPU, for the split per process (a sampler cannot read it after exit).
    let cpu_seconds = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let fields: Vec<&str> = s.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0) // USER_HZ: 100 on Linux
        });
    let summary = json!({
        "cpu_seconds": cpu_seconds,
        "fans": args.fans, "seconds": secs, "journeys": total.journeys,
        "journeys_per_s": total.journeys as f64 / secs, "rps": requests as f64 / secs, "steps": steps,
        "confirm": args.confirm, "until_sold_out": args.until_sold_out, "poll_ms": args.poll_ms,
        "confirmed": total.paid_to_confirmed.len(), "rejected": total.rejected,
        "unconfirmed": total.unconfirmed, "waits": waits,
    });
    if let Some(out) = &args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(())
}
