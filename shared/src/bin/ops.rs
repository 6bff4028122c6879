//! Operator commands: `ops migrate`, `ops seed`, `ops audit`.
//! Run: `cargo run -p shared --bin ops -- seed --capacity 200 --opens-in 0`.

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use shared::config::{DatabaseArgs, RedisArgs};
use shared::domain::{Event, EventId};
use shared::repo::OrderRepository;

#[derive(Parser)]
#[command(about = "Operate the ticket sale: migrate, seed, audit")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
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
    /// Check the invariant in Redis and against the database; exit 1 when broken.
    Audit {
        #[command(flatten)]
        db: DatabaseArgs,
        #[command(flatten)]
        redis: RedisArgs,
        /// Event slug.
        #[arg(long, env = "EVENT_ID", default_value = "frequency-2027")]
        event: String,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Migrate { db } => {
            db.repository()?.migrate().await?;
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
            let repo = db.repository()?;
            let gate = redis.gate().await?;
            if reset {
                gate.reset(&id).await?;
                repo.reset(&id).await?;
            }
            let in_db = repo.seed(&ev).await?;
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
            event,
            json,
        } => {
            let id = EventId::parse(&event)?;
            let repo = db.repository()?;
            let gate = redis.gate().await?;
            let report = shared::audit::audit(&gate, &repo, &id).await?;
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.render());
            }
            if !report.violations.is_empty() {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
