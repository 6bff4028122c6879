//! Operator commands: `ops migrate`, `ops seed`, `ops audit`, `ops dead-letters`,
//! `ops gate-restore`, `ops room`.
//! Run: `cargo run -p ops -- seed --capacity 200 --opens-in 0`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use domain::{Event, EventId};
use gate::{ReadModel, RedisArgs, WaitingRoom};
use pubsub::PubSubArgs;
use pubsub::deadletters::{Action, Choice};
use store::DatabaseArgs;

#[derive(Parser)]
#[command(about = "Operate the ticket sale: migrate, seed, audit, dead letters")]
struct Cli {
    /// How long to keep retrying Redis and the database before giving up, in seconds: a Cloud
    /// Run Job can start before its Direct VPC egress connects.
    #[arg(long, env = "OPS_CONNECT_SECS", default_value_t = 120, global = true)]
    connect_secs: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Retries `attempt` with backoff (250 ms doubling to 5 s) until it succeeds or `within` has
/// passed, logging each failure on stderr; the last error is returned.
async fn retrying<T, E, F, Fut>(what: &str, within: Duration, mut attempt: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: Into<anyhow::Error>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut delay = Duration::from_millis(250);
    loop {
        match attempt().await.map_err(Into::into) {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() + delay < deadline => {
                eprintln!("{what}: {e:#}; retrying in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                return Err(e.context(format!("{what}: gave up after {} s", within.as_secs())));
            }
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Apply database migrations.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Create the event in the database and Redis (safe to re-run).
    Seed {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        /// Event slug.
        #[arg(long, env = "EVENT_ID", default_value = "frequency-2027")]
        event: String,
        /// Capacity of VIP 3-Day and VIP Camping (Backstage Lounge gets half).
        #[arg(long, default_value_t = 2000)]
        capacity: u32,
        /// Sale opens this many seconds from now (ignored with --opens-at).
        #[arg(long, default_value_t = 0)]
        opens_in: i64,
        /// Sale opens at this RFC 3339 time.
        #[arg(long)]
        opens_at: Option<DateTime<Utc>>,
        /// Checkout hold duration.
        #[arg(long, default_value_t = 600)]
        hold_seconds: u32,
        /// Delete the event first (everything sold is lost: tests and rehearsals only).
        #[arg(long)]
        reset: bool,
    },
    /// Check the invariant in Redis and against the database, and, where the provider's list of
    /// charges is configured, money against the books; exit 1 when broken.
    Audit {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        #[command(flatten)]
        payments: payments::ledger::PaymentArgs,
        /// A charge the books do not know yet is in flight this long; older, it is a violation
        /// (consume-order's sweep owes it back past the same grace).
        #[arg(long, env = "CHARGE_GRACE_SECS", default_value_t = 900)]
        charge_grace_secs: u64,
        /// Hand every charge the books never heard of (past the grace) to them: they owe it
        /// back, and consume-order's refunder refunds it (its order, if it ever arrives, is then
        /// rejected: ADR 53).
        #[arg(long)]
        settle_unknown: bool,
        /// Event slug.
        #[arg(long, env = "EVENT_ID", default_value = "frequency-2027")]
        event: String,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// List dead-lettered orders; with --replay, republish them to the orders topic (safe: the
    /// consumer is idempotent), each only if buy's key signed it. Fix the cause first.
    DeadLetters {
        #[command(flatten)]
        pubsub: PubSubArgs,
        /// The key buy signed with before ORDER_SIGNING_KEY, during a rotation: a dead letter
        /// it signed is replayed too (ADR 40).
        #[arg(long, env = "ORDER_SIGNING_KEY_PREVIOUS", hide_env_values = true, value_parser = domain::signing::MessageKey::parse)]
        order_signing_key_previous: Option<domain::signing::MessageKey>,
        /// The dead-letter subscription (id within the project).
        #[arg(
            long,
            env = "DEAD_LETTER_SUBSCRIPTION",
            default_value = "orders-dead-letter-sub"
        )]
        subscription: String,
        /// `all`, or the order ids to republish (separated by commas or given as separate
        /// arguments: `gcloud run jobs execute --args` splits on commas); without it, only list.
        #[arg(long, value_delimiter = ',', num_args = 1..)]
        replay: Option<Vec<String>>,
        /// At most this many messages in one run.
        #[arg(long, default_value_t = 1000)]
        max: usize,
        /// Stop after this many seconds without a new message.
        #[arg(long, default_value_t = 5)]
        idle_secs: u64,
    },
    /// Rebuild events that Redis lost (it restarted empty) from the database: paused until
    /// in-flight orders settle, then reopened. A live event is never touched. consume-order
    /// does this by itself; this is the manual lever (docs/ARCHITECTURE.md).
    GateRestore {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        /// Event slug; without it, every event in the database.
        #[arg(long)]
        event: Option<String>,
        /// Reopen once the books have not changed for this many seconds.
        #[arg(long, default_value_t = 30)]
        quiet_secs: u64,
        /// Reopen after this many seconds even if orders keep arriving.
        #[arg(long, default_value_t = 600)]
        max_wait_secs: u64,
    },
    /// One-off (issue 20, issue 27): rewrites every order Redis still holds in a layout from
    /// before `r` (ADR 32), and draws the order-id salt of an event seeded before salts (ADR 30),
    /// for code that reads only `r` and adopts no salt. Run it once per environment before
    /// deploying that code (docs/DEPLOY.md); safe to re-run.
    GateUpgrade {
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// The event's waiting room (ADR 59): turn it on (again: new settings, the queue kept),
    /// off, pause or resume admission, or show it.
    Room {
        #[command(flatten)]
        redis: RedisArgs,
        /// Event slug.
        #[arg(long, default_value = "frequency-2027")]
        event: String,
        #[command(subcommand)]
        action: RoomAction,
    },
}

#[derive(Subcommand)]
enum RoomAction {
    /// Fans must join the room and be admitted before they reserve.
    On {
        /// Fans admitted per second: what the shop behind the room takes with room to spare.
        #[arg(long, default_value_t = 200)]
        rate: u32,
        /// Fans admitted and still shopping (within their window) at most.
        #[arg(long, default_value_t = 2000)]
        cap: u32,
        /// How long an admitted fan may shop, from its claim of the token, in seconds.
        #[arg(long, default_value_t = 600)]
        window_secs: u64,
        /// How long an admitted fan has to come for its token, in seconds: a fan who left the
        /// queue holds a place among the shopping only this long.
        #[arg(long, default_value_t = 30)]
        claim_secs: u64,
    },
    /// The shop is open to all again (the queue is kept, for a later `on`).
    Off,
    /// Stop admitting; the queue keeps its order.
    Pause,
    /// Admit again after a pause.
    Resume,
    /// Queue length, admitted so far, shopping, rate and stock left.
    Status,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let within = Duration::from_secs(cli.connect_secs);
    // Connections, retried while the network comes up; each subcommand's work runs once.
    let connect_gate =
        |redis: RedisArgs| async move { retrying("Redis", within, || redis.gate()).await };
    let connect_books = |db: DatabaseArgs| async move {
        let repo = db.repository()?;
        retrying("the database", within, || repo.ping()).await?;
        anyhow::Ok(repo)
    };
    match cli.cmd {
        Cmd::Migrate { db } => {
            retrying("the database migrations", within, || db.migrate()).await?;
            println!("migrations applied");
        }
        Cmd::Seed {
            db,
            redis,
            event,
            capacity,
            opens_in,
            opens_at,
            hold_seconds,
            reset,
        } => {
            let id = EventId::parse(&event)?;
            let opens =
                opens_at.unwrap_or_else(|| Utc::now() + chrono::Duration::seconds(opens_in));
            let ev = Event::frequency(id.clone(), capacity, opens, hold_seconds);
            let repo = connect_books(db).await?;
            let gate = connect_gate(redis).await?;
            if reset {
                gate.reset(&id).await?;
                repo.reset(&id).await?;
            }
            let in_db = repo.seed(&ev).await?;
            // The books already hold this event but Redis does not (it lost its data): seeding
            // Redis now would put every ticket back on sale. Rebuild it from the books instead.
            if in_db == store::Seeded::Unchanged
                && gate.presence(&id).await? != gate::Presence::Live
            {
                println!(
                    "event {id}: in the database but not live in Redis; restoring it from the database (ops gate-restore)"
                );
                let report = recovery::restore_event(
                    &gate,
                    repo.as_ref(),
                    &ev,
                    recovery::RestoreOptions::default(),
                )
                .await?;
                println!("event {id}: {report:?}");
                return Ok(());
            }
            let in_redis = gate.seed(&ev).await?;
            println!(
                "event {id}: database {in_db:?}, redis {}; sale opens {}",
                if in_redis { "seeded" } else { "unchanged" },
                ev.sale_opens_at.to_rfc3339()
            );
        }
        Cmd::Audit {
            db,
            redis,
            payments,
            charge_grace_secs,
            settle_unknown,
            event,
            json,
        } => {
            let id = EventId::parse(&event)?;
            let repo = connect_books(db).await?;
            let gate = connect_gate(redis).await?;
            let report = recovery::audit::audit(&gate, repo.as_ref(), &id).await?;
            let money = match payments.ledger().await? {
                Some(provider) => Some(
                    recovery::money::reconcile(
                        &provider,
                        repo.as_ref(),
                        &id,
                        Utc::now(),
                        Duration::from_secs(charge_grace_secs),
                    )
                    .await?,
                ),
                None => None,
            };
            if json {
                let mut out = report.to_json();
                out["money"] = money.as_ref().map(|m| m.to_json()).into();
                println!("{out}");
            } else {
                print!("{}", report.render());
                match &money {
                    Some(m) => print!("{}", m.render()),
                    None => println!(
                        "money: not reconciled (no list of the provider's charges: PAYMENTS_LEDGER_URL)"
                    ),
                }
            }
            if let Some(m) = money
                .as_ref()
                .filter(|m| settle_unknown && !m.unknown.is_empty())
            {
                let owed = repo.settle_charges(&m.unknown, Duration::ZERO).await?;
                eprintln!(
                    "handed {} unknown charges to the books: {} owed back, due to the refunder now",
                    m.unknown.len(),
                    owed.len()
                );
            }
            let money_ok = money.as_ref().is_none_or(|m| m.violations.is_empty());
            if !report.violations.is_empty() || !money_ok {
                std::process::exit(1);
            }
        }
        Cmd::DeadLetters {
            pubsub,
            order_signing_key_previous,
            subscription,
            replay,
            max,
            idle_secs,
        } => {
            let choice = match replay.as_deref() {
                None => Choice::None,
                Some([all]) if all == "all" => Choice::All,
                Some(list) => Choice::Orders(
                    list.iter()
                        .filter(|s| !s.trim().is_empty())
                        .map(|s| domain::OrderId::parse(s.trim()))
                        .collect::<Result<_, _>>()?,
                ),
            };
            // consume-order drops a message without buy's signature (ADR 40): a replay without
            // the key would lose what it republishes (a refund has no outbox to bring it back).
            if !matches!(choice, Choice::None) && pubsub.order_signing_key.is_none() {
                anyhow::bail!("ORDER_SIGNING_KEY must be set to replay dead letters (ADR 40)");
            }
            let publisher = pubsub.publisher().await?;
            let sub = format!("projects/{}/subscriptions/{subscription}", pubsub.project);
            let accepted =
                pubsub
                    .order_signing_key
                    .as_ref()
                    .map(|current| domain::signing::Accepted {
                        current,
                        previous: order_signing_key_previous.as_ref(),
                    });
            let seen = pubsub::deadletters::run(
                &sub,
                pubsub.pubsub_emulator_host.as_deref(),
                &publisher,
                accepted.as_ref(),
                &choice,
                max,
                std::time::Duration::from_secs(idle_secs),
                std::time::Duration::from_secs(600),
            )
            .await?;
            println!(
                "{:<38} {:<38} {:<18} {:>3}  action",
                "message", "order", "ticket type", "qty"
            );
            for d in &seen {
                let action = match d.action {
                    Action::Kept => "kept",
                    Action::Replayed => "REPLAYED",
                    Action::ReplayFailed => "replay FAILED (kept)",
                    Action::Refused => "REFUSED: not signed by buy's key (kept)",
                };
                // A line per order; a batch's orders share its message and its action.
                let rows: Vec<(String, String, String)> = match &d.orders {
                    Ok(os) => os
                        .iter()
                        .map(|o| {
                            (
                                o.order_id.to_string(),
                                o.ticket_type.to_string(),
                                o.quantity.get().to_string(),
                            )
                        })
                        .collect(),
                    Err(e) => vec![(format!("(undecodable: {e})"), String::new(), String::new())],
                };
                for (order, tt, qty) in rows {
                    println!(
                        "{:<38} {order:<38} {tt:<18} {qty:>3}  {action}",
                        d.message_id
                    );
                }
            }
            let replayed = seen.iter().filter(|d| d.action == Action::Replayed).count();
            println!("{} dead letters seen, {replayed} replayed", seen.len());
            let refused = seen.iter().filter(|d| d.action == Action::Refused).count();
            if refused > 0 {
                // Someone who may publish to the dead-letter topic wrote it: a security matter.
                eprintln!(
                    "{refused} dead letters refused: no accepted key signed them; they stay for investigation"
                );
            }
            if seen
                .iter()
                .any(|d| matches!(d.action, Action::ReplayFailed | Action::Refused))
            {
                std::process::exit(1);
            }
        }
        Cmd::GateRestore {
            db,
            redis,
            event,
            quiet_secs,
            max_wait_secs,
        } => {
            let repo = connect_books(db).await?;
            let gate = connect_gate(redis).await?;
            let wanted = event.as_deref().map(EventId::parse).transpose()?;
            let opts = recovery::RestoreOptions {
                quiet: std::time::Duration::from_secs(quiet_secs),
                max_wait: std::time::Duration::from_secs(max_wait_secs),
                ..Default::default()
            };
            let events = repo.events().await?;
            if let Some(w) = &wanted
                && !events.iter().any(|e| &e.id == w)
            {
                anyhow::bail!("event {w} is not in the database");
            }
            for ev in events
                .iter()
                .filter(|e| wanted.as_ref().is_none_or(|w| &e.id == w))
            {
                println!(
                    "event {}: restoring (paused until the books are quiet for {quiet_secs} s)",
                    ev.id
                );
                let report = recovery::restore_event(&gate, repo.as_ref(), ev, opts).await?;
                println!("event {}: {report:?}", ev.id);
            }
        }
        Cmd::Room {
            redis,
            event,
            action,
        } => {
            let id = EventId::parse(&event)?;
            let gate = connect_gate(redis).await?;
            match action {
                RoomAction::On {
                    rate,
                    cap,
                    window_secs,
                    claim_secs,
                } => {
                    let settings = gate::RoomSettings {
                        rate_per_sec: rate,
                        cap,
                        window: Duration::from_secs(window_secs),
                        claim: Duration::from_secs(claim_secs),
                    };
                    gate.room_on(&id, settings).await?;
                }
                RoomAction::Off => gate.room_off(&id).await?,
                RoomAction::Pause => gate.room_pause(&id, true).await?,
                RoomAction::Resume => gate.room_pause(&id, false).await?,
                RoomAction::Status => {}
            }
            let v = gate.room_peek(&id).await?;
            println!(
                "event {id}: room {:?}{}, {} joined, {} admitted, {} waiting, {} shopping, {} a second; {} tickets unsold{}",
                v.status,
                if v.paused { " (paused)" } else { "" },
                v.joined,
                v.upto,
                v.joined.saturating_sub(v.upto),
                v.shopping,
                v.rate_per_sec,
                v.unsold,
                if v.sold_out {
                    ", nothing available"
                } else {
                    ""
                }
            );
        }
        Cmd::GateUpgrade { redis } => {
            let gate = connect_gate(redis).await?;
            for event in gate.events().await? {
                let upgraded = gate.upgrade_orders(&event).await?;
                let salted = gate.upgrade_salt(&event).await?;
                println!(
                    "event {event}: {upgraded} orders rewritten as `r`{}",
                    if salted { "; order-id salt drawn" } else { "" }
                );
            }
        }
    }
    Ok(())
}
