//! `room`: the waiting room's spike (ADR 59). `--fans` fans arrive evenly over `--arrive-secs`
//! starting at `--arrive-at-ms` (around the opening), each joins the room at buy, then watches
//! the room's progress in the availability snapshot, as a fan's page does. The snapshot is read
//! once per `--edge-ms` for all fans: in production the CDN serves it (`max-age=1`), so the
//! shop sees one read per edge per second, not one per fan. When the snapshot says a fan's place
//! is admitted, the fan joins again to claim its admission token, reserves one ticket with it
//! and pays. A fan told sold out while waiting stops.
//!
//! The summary (JSON, `--out`): join latency; the admission curve per second (admitted so far,
//! joined, tickets available) against the reservations the shop received that second; the
//! shuffle's fairness (Spearman's rank correlation of arrival and place among the fans who
//! joined before the opening); when the last ticket was held, and how long after it each
//! waiting fan read "sold out"; every admitted fan's journey to tickets or a clear answer.
//!
//!   room --read-url http://127.0.0.1:8081 --buy-url http://127.0.0.1:8082 \
//!        --event frequency-2027 --fans 50000 --arrive-secs 5 --arrive-at-ms 1765000000000

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};
use tokio::sync::watch;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    read_url: String,
    #[arg(long)]
    buy_url: String,
    #[arg(long, default_value = "frequency-2027")]
    event: String,
    #[arg(long, default_value_t = 50_000)]
    fans: u64,
    /// Fans arrive evenly over this many seconds...
    #[arg(long, default_value_t = 5.0)]
    arrive_secs: f64,
    /// ...from this moment (Unix ms; default: now).
    #[arg(long)]
    arrive_at_ms: Option<u64>,
    /// How often the edge reads the availability snapshot for every fan, in ms.
    #[arg(long, default_value_t = 1000)]
    edge_ms: u64,
    /// How often a fan's page looks at the edge's copy, in ms (the site reads it every 750 ms
    /// while waiting).
    #[arg(long, default_value_t = 500)]
    look_ms: u64,
    /// The whole run ends after this many seconds at most.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    seconds: u64,
    #[arg(long)]
    out: Option<String>,
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(0)
}

/// What one fan went through.
#[derive(Default)]
struct Fan {
    /// The first join: latency (µs) and status code (0: transport error).
    join_us: u32,
    join_code: u16,
    /// Joined before the sale opened (its place is drawn at the opening): its queue id.
    early: Option<String>,
    place: u64,
    /// Claims of the admission token (joins after the first), and their latencies.
    claim_us: Vec<u32>,
    admitted: bool,
    /// Unix ms of each reservation sent, and the answer.
    reserved_at: Option<u64>,
    reserve_code: u16,
    paid_code: u16,
    /// Unix ms when the fan read sold out while waiting (not admitted).
    told_sold_out_at: Option<u64>,
    /// Unix ms when a reservation answered 202: a ticket held.
    held_at: Option<u64>,
    /// Admitted, then refused with a problem a fan cannot act on (not a sold out).
    stuck: Option<String>,
}

/// The edge's copy of the room (from the availability snapshot).
#[derive(Clone, Default)]
struct Edge {
    upto: u64,
    status: String,
    sold_out: bool,
    /// Ticket types with tickets available.
    open_tiers: Vec<String>,
    /// Once drawn: the pre-queue's salt and the key of its last admitted place.
    draw: Option<(String, u64)>,
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, Value, u32) {
    let started = std::time::Instant::now();
    let mut req = client.post(url).json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (code, body) = match req.send().await {
        Ok(res) => {
            let code = res.status().as_u16();
            (code, res.json::<Value>().await.unwrap_or(Value::Null))
        }
        Err(_) => (0, Value::Null),
    };
    let us = u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX);
    (code, body, us)
}

struct Shared {
    args: Args,
    client: reqwest::Client,
    opens_at_ms: AtomicU64,
}

async fn fan(
    i: u64,
    s: Arc<Shared>,
    mut edge: watch::Receiver<Edge>,
    arrive_at: u64,
    until: u64,
) -> Fan {
    let mut f = Fan::default();
    let wait = arrive_at.saturating_sub(now_ms());
    tokio::time::sleep(Duration::from_millis(wait)).await;
    let email = format!("fan{i}@room.example");
    let join_url = format!("{}/v1/events/{}/room", s.args.buy_url, s.args.event);
    let (code, body, us) = post(&s.client, &join_url, json!({ "email": email }), &[]).await;
    (f.join_us, f.join_code) = (us, code);
    if code != 200 {
        return f;
    }
    f.place = body["place"].as_u64().unwrap_or(0);
    let queue_id = body["queue_id"].as_str().unwrap_or_default().to_owned();
    if body["status"] == "pending" {
        f.early = Some(queue_id.clone());
    }
    let mut answer = body;
    let mut backoff = s.args.look_ms;
    loop {
        if now_ms() > until {
            return f;
        }
        if answer["status"] == "admitted" {
            break;
        }
        // Read in place: 50,000 fans look every second.
        let (sold_out, turn) = {
            let e = edge.borrow_and_update();
            // Claim when the snapshot says this fan's turn came: its place is admitted or,
            // joined before the opening (no place yet), its draw key is at most the last
            // admitted one.
            let turn = if f.place > 0 {
                f.place <= e.upto
            } else {
                e.draw
                    .as_ref()
                    .is_some_and(|(salt, key)| gate::draw_key(salt, &queue_id) <= *key)
            };
            (e.sold_out && e.open_tiers.is_empty(), turn)
        };
        if sold_out {
            f.told_sold_out_at = Some(now_ms());
            return f;
        }
        let mut wait = s.args.look_ms;
        if turn {
            let (code, body, us) = post(&s.client, &join_url, json!({ "email": email }), &[]).await;
            f.claim_us.push(us);
            if code == 200 {
                backoff = s.args.look_ms;
                f.place = body["place"].as_u64().unwrap_or(f.place);
                answer = body;
                if answer["status"] == "admitted" {
                    continue;
                }
            } else {
                // As the page does: back off from a shop that is struggling.
                backoff = (backoff * 2).min(8_000);
                wait = backoff;
            }
        }
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    f.admitted = true;
    let token = answer["admission_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    // One ticket of a tier the snapshot says has some (the fan's page shows the same).
    let tiers = edge.borrow().open_tiers.clone();
    let tiers = if tiers.is_empty() {
        vec!["vip-3-day".to_owned()]
    } else {
        tiers
    };
    let reserve_url = format!("{}/v1/events/{}/orders", s.args.buy_url, s.args.event);
    for attempt in 0..tiers.len().max(3) {
        let tier = &tiers[(usize::try_from(i).unwrap_or(0) + attempt) % tiers.len()];
        let key = uuid::Uuid::new_v4().to_string();
        f.reserved_at = Some(now_ms());
        // Transient failures are retried with the same key, as the page does.
        let (mut code, mut body) = (0, Value::Null);
        for retry in 0..5_u32 {
            (code, body, _) = post(
                &s.client,
                &reserve_url,
                json!({"ticket_type": tier, "quantity": 1, "email": email}),
                &[("idempotency-key", &key), ("admission-token", &token)],
            )
            .await;
            if code != 0 && code != 429 && code < 500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500 << retry)).await;
        }
        f.reserve_code = code;
        if code == 202 {
            f.held_at = Some(now_ms());
            let id = body["order_id"].as_str().unwrap_or_default();
            // Paying again is safe (one charge per order); transient failures are retried.
            for retry in 0..5_u32 {
                (f.paid_code, _, _) = post(
                    &s.client,
                    &format!("{}/v1/orders/{id}/payment", s.args.buy_url),
                    json!({"payment_token": "tok_approve"}),
                    &[],
                )
                .await;
                if f.paid_code != 0 && f.paid_code != 429 && f.paid_code < 500 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(500 << retry)).await;
            }
            return f;
        }
        if code == 409 {
            continue; // that tier sold out meanwhile: another one
        }
        f.stuck = Some(format!("reserve {code}: {}", body["type"]));
        return f;
    }
    f
}

/// Reads the snapshot every `edge_ms` for every fan; records the admission curve.
async fn edge_loop(s: Arc<Shared>, tx: watch::Sender<Edge>, until: u64) -> Vec<Value> {
    let url = format!(
        "{}/v1/events/{}/availability",
        s.args.read_url, s.args.event
    );
    let mut curve = vec![];
    let mut tick = tokio::time::interval(Duration::from_millis(s.args.edge_ms));
    while now_ms() < until && !tx.is_closed() {
        tick.tick().await;
        let Ok(res) = s.client.get(&url).send().await else {
            continue;
        };
        let Ok(v) = res.json::<Value>().await else {
            continue;
        };
        if let Some(at) = v["sale_opens_at"].as_str().and_then(parse_rfc3339_ms) {
            s.opens_at_ms.store(at, Ordering::Relaxed);
        }
        let room = &v["room"];
        let tiers: Vec<(String, i64)> = v["ticket_types"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|t| {
                        (
                            t["id"].as_str().unwrap_or_default().to_owned(),
                            t["available"].as_i64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let e = Edge {
            upto: room["admitted_upto"].as_u64().unwrap_or(0),
            status: room["status"].as_str().unwrap_or("off").to_owned(),
            draw: room["draw"]["salt"].as_str().map(|salt| {
                (
                    salt.to_owned(),
                    room["draw"]["admitted_key"].as_u64().unwrap_or(0),
                )
            }),
            sold_out: room["sold_out"].as_bool().unwrap_or(false),
            open_tiers: tiers
                .iter()
                .filter(|(_, n)| *n > 0)
                .map(|(id, _)| id.clone())
                .collect(),
        };
        curve.push(json!({
            "at_ms": now_ms(), "status": e.status, "admitted_upto": e.upto,
            "joined": room["joined"], "shopping": room["shopping"],
            "available": tiers.iter().map(|(_, n)| n).sum::<i64>(), "sold_out": e.sold_out,
            "draw_salt": e.draw.as_ref().map(|(salt, _)| salt.clone()),
        }));
        let _ = tx.send(e);
    }
    curve
}

/// `2027-06-01T12:00:00.123Z` as Unix ms (the API's RFC 3339 in UTC).
fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>().ok());
    let (h, mi, sec) = (t.next()??, t.next()??, t.next()??);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms).ok()
}

fn pct(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted[i]) / 1000.0
}

/// Spearman's rank correlation of arrival order and place; `places` in arrival order, each any
/// value that orders as the place does (a place, or a draw key).
fn spearman(places: &[u64]) -> Option<f64> {
    let n = places.len() as f64;
    if n < 3.0 {
        return None;
    }
    // The places of the early fans are 1..=n in some order: rank them to be safe.
    let mut order: Vec<usize> = (0..places.len()).collect();
    order.sort_by_key(|&i| places[i]);
    let mut rank = vec![0.0; places.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r as f64 + 1.0;
    }
    let d2: f64 = rank
        .iter()
        .enumerate()
        .map(|(i, r)| (i as f64 + 1.0 - r).powi(2))
        .sum();
    Some(1.0 - 6.0 * d2 / (n * (n * n - 1.0)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(15))
        .build()?;
    let start = args.arrive_at_ms.unwrap_or_else(now_ms);
    let until = now_ms() + args.seconds * 1000;
    let s = Arc::new(Shared {
        args,
        client,
        opens_at_ms: AtomicU64::new(u64::MAX),
    });
    let (tx, rx) = watch::channel(Edge::default());
    let edge = tokio::spawn(edge_loop(s.clone(), tx, until));
    let n = s.args.fans;
    let spacing_us = (s.args.arrive_secs * 1e6 / n as f64).max(0.0);
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let arrive = start + (i as f64 * spacing_us / 1000.0) as u64;
            tokio::spawn(fan(i, s.clone(), rx.clone(), arrive, until))
        })
        .collect();
    drop(rx);
    let mut fans = Vec::with_capacity(tasks.len());
    for t in tasks {
        fans.push(t.await?);
    }
    let curve = edge.await?;
    let opens_at = s.opens_at_ms.load(Ordering::Relaxed);

    let mut joins: Vec<u32> = fans
        .iter()
        .filter(|f| f.join_code != 0)
        .map(|f| f.join_us)
        .collect();
    joins.sort_unstable();
    let mut claims: Vec<u32> = fans
        .iter()
        .flat_map(|f| f.claim_us.iter().copied())
        .collect();
    claims.sort_unstable();
    let mut join_codes: BTreeMap<String, u64> = BTreeMap::new();
    for f in &fans {
        *join_codes.entry(f.join_code.to_string()).or_default() += 1;
    }
    // Reservations the shop received per second (by when they were sent).
    let mut per_sec: BTreeMap<u64, u64> = BTreeMap::new();
    for f in &fans {
        if let Some(at) = f.reserved_at {
            *per_sec.entry(at / 1000).or_default() += 1;
        }
    }
    // Every pre-queue fan's place, as the room ranks them: by draw key (the salt is public once
    // drawn), in arrival order of the fans (their index).
    let salt = curve
        .iter()
        .rev()
        .find_map(|p| p["draw_salt"].as_str().map(str::to_owned));
    let keys: Vec<u64> = match &salt {
        Some(salt) => fans
            .iter()
            .filter_map(|f| f.early.as_deref())
            .map(|id| gate::draw_key(salt, id))
            .collect(),
        None => vec![],
    };
    let early = keys.len();
    let rho = spearman(&keys);
    let last_hold = fans.iter().filter_map(|f| f.held_at).max();
    let mut told: Vec<u32> = fans
        .iter()
        .filter_map(|f| f.told_sold_out_at)
        .map(|t| {
            u32::try_from(t.saturating_sub(last_hold.unwrap_or(t)))
                .unwrap_or(u32::MAX)
                .saturating_mul(1000)
        })
        .collect();
    told.sort_unstable();
    let admitted = fans.iter().filter(|f| f.admitted).count();
    let held = fans.iter().filter(|f| f.held_at.is_some()).count();
    let paid = fans.iter().filter(|f| f.paid_code == 202).count();
    let admitted_sold_out = fans
        .iter()
        .filter(|f| f.admitted && f.held_at.is_none() && f.reserve_code == 409)
        .count();
    let stuck: Vec<&String> = fans.iter().filter_map(|f| f.stuck.as_ref()).collect();
    let never_answered = fans
        .iter()
        .filter(|f| f.join_code == 200 && !f.admitted && f.told_sold_out_at.is_none())
        .count();
    let summary = json!({
        "fans": n, "arrive_secs": s.args.arrive_secs, "arrive_at_ms": start, "opens_at_ms": opens_at,
        "edge_ms": s.args.edge_ms,
        "join": {"count": joins.len(), "codes": join_codes, "p50_ms": pct(&joins, 0.5),
                 "p95_ms": pct(&joins, 0.95), "p99_ms": pct(&joins, 0.99), "max_ms": pct(&joins, 1.0)},
        "claim": {"count": claims.len(), "p50_ms": pct(&claims, 0.5), "p99_ms": pct(&claims, 0.99)},
        "early_fans": early, "rank_correlation": rho,
        "admitted": admitted, "held": held, "paid": paid, "admitted_then_sold_out": admitted_sold_out,
        "stuck": stuck.len(), "stuck_examples": stuck.iter().take(5).collect::<Vec<_>>(),
        "waiting_without_answer": never_answered,
        "last_hold_at_ms": last_hold,
        "told_sold_out": {"count": told.len(), "p50_ms": pct(&told, 0.5), "p99_ms": pct(&told, 0.99), "max_ms": pct(&told, 1.0)},
        "reservations_per_second": per_sec.iter().map(|(s, c)| json!([s * 1000, c])).collect::<Vec<_>>(),
        "curve": curve,
    });
    println!(
        "{n} fans: joins p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms {join_codes:?}; {} early (rank correlation {rho:?}); {admitted} admitted, {held} held, {paid} paid, {admitted_sold_out} admitted then sold out, {} stuck; {} told sold out (after the last hold: p99 {:.0} ms, max {:.0} ms); {never_answered} left waiting",
        pct(&joins, 0.5),
        pct(&joins, 0.99),
        pct(&joins, 1.0),
        early,
        stuck.len(),
        told.len(),
        pct(&told, 0.99),
        pct(&told, 1.0),
    );
    if let Some(out) = &s.args.out {
        std::fs::write(out, serde_json::to_vec_pretty(&summary)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_read_as_unix_ms() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2026-12-07T21:30:00.125Z"),
            Some(1_796_679_000_125)
        );
    }

    #[test]
    fn the_rank_correlation_is_one_for_arrival_order_and_minus_one_reversed() {
        assert_eq!(spearman(&[1, 2, 3, 4]), Some(1.0));
        assert_eq!(spearman(&[4, 3, 2, 1]), Some(-1.0));
    }
}
