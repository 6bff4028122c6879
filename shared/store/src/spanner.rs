//! `OrderRepository` on Cloud Spanner (GoogleSQL) with `gcloud-spanner`, and on Google's
//! Spanner emulator when an emulator host is given. Schema: `migrations/spanner` (ADR 24).
//!
//! Capacity is a sharded counter: a ticket type's capacity is spread over `TicketShards` rows
//! and a read-write transaction takes its tickets from one random shard, so concurrent orders
//! lock different rows. Only when that shard cannot cover the order does the transaction read
//! every shard of the type, and then its verdict (enough or sold out) is exact: Spanner's reads
//! in a read-write transaction are locked and current, so no in-flight order can fool it.
//! Aborted transactions (lock conflicts, wound-wait) are retried here, bounded in count and time.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use gcloud_gax::conn::Environment;
use gcloud_gax::grpc::{Code, Status};
use gcloud_googleapis::spanner::admin::database::v1::{
    CreateDatabaseRequest, GetDatabaseDdlRequest, UpdateDatabaseDdlRequest,
};
use gcloud_googleapis::spanner::admin::instance::v1::{CreateInstanceRequest, Instance};
use gcloud_spanner::admin::AdminClientConfig;
use gcloud_spanner::admin::client::Client as AdminClient;
use gcloud_spanner::client::{Client, ClientConfig, Error as SpannerError};
use gcloud_spanner::key::Key;
use gcloud_spanner::mutation::{insert, update};
use gcloud_spanner::row::Row;
use gcloud_spanner::statement::Statement;
use gcloud_spanner::transaction::Transaction;
use gcloud_spanner::transaction_rw::ReadWriteTransaction;
use gcloud_spanner::value::CommitTimestamp;

use super::{
    CustomerTotal, ForSale, GateMark, Inventory, LedgerEntry, MAX_ORDERS_PER_TRANSACTION,
    OrderRepository, Outcome, Persisted, Refused, RepoError, Seeded, StoredOrder, Verdict,
    allocate, distinct, new_charges, spread, ticket_code,
};
use domain::{Event, EventId, OrderCharge, OrderId, OrderMessage, OrderStatus, TicketTypeId};

/// The schema, in order; each statement creates one table or index.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "V1__sale",
        include_str!("../migrations/spanner/V1__sale.sql"),
    ),
    (
        "V2__refunds_owed",
        include_str!("../migrations/spanner/V2__refunds_owed.sql"),
    ),
    (
        "V3__charge_ledger",
        include_str!("../migrations/spanner/V3__charge_ledger.sql"),
    ),
    (
        "V4__gate_marks",
        include_str!("../migrations/spanner/V4__gate_marks.sql"),
    ),
];

/// At most this many counter rows per ticket type: concurrent orders of one type spread over
/// them (more shards, less contention; the sold-out check reads them all).
pub const MAX_SHARDS: u32 = 32;

/// Retries of one aborted transaction, bounded in count and time (then `Contended`, and
/// Pub/Sub redelivers). The time fits the request that persists a message: its largest batch
/// takes two transactions, and both end before the request's own deadline
/// (`web::http::REQUEST_TIMEOUT`; a test in consume-order keeps them in agreement).
const MAX_ATTEMPTS: u32 = 60;
pub const TX_DEADLINE: Duration = Duration::from_secs(4);

/// A Spanner database path, validated: `projects/P/instances/I/databases/D`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabasePath {
    pub project: String,
    pub instance: String,
    pub database: String,
}

impl DatabasePath {
    /// Parses `projects/P/instances/I/databases/D`.
    pub fn parse(s: &str) -> Result<Self, crate::ConfigError> {
        let bad = || {
            crate::ConfigError(format!(
                "SPANNER_DATABASE must look like projects/P/instances/I/databases/D, not {s:?}"
            ))
        };
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            ["projects", p, "instances", i, "databases", d]
                if [p, i, d].iter().all(|x| {
                    !x.is_empty()
                        && x.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                }) =>
            {
                Ok(Self {
                    project: (*p).into(),
                    instance: (*i).into(),
                    database: (*d).into(),
                })
            }
            _ => Err(bad()),
        }
    }

    /// `projects/P/instances/I`.
    pub fn instance_path(&self) -> String {
        format!("projects/{}/instances/{}", self.project, self.instance)
    }
}

impl std::fmt::Display for DatabasePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/databases/{}", self.instance_path(), self.database)
    }
}

/// The Spanner repository: a client with its session pool, opened on first use (like the
/// Postgres pool), so building one never blocks; `ping` at start surfaces a bad setup.
#[derive(Clone)]
pub struct SpannerRepository {
    client: std::sync::Arc<tokio::sync::OnceCell<Client>>,
    path: DatabasePath,
    emulator_host: Option<String>,
    sessions: usize,
    timeout: Duration,
}

fn status_error(s: &Status) -> RepoError {
    match s.code() {
        Code::Aborted => RepoError::Contended(s.message().into()),
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::ResourceExhausted
        | Code::Unknown => {
            RepoError::Unavailable(format!("{:?}: {}", s.code(), s.message()).into())
        }
        c => RepoError::Other(anyhow::anyhow!("spanner {c:?}: {}", s.message())),
    }
}

fn classify(e: SpannerError) -> RepoError {
    match e {
        SpannerError::GRPC(s) => status_error(&s),
        SpannerError::InvalidSession(s) => RepoError::Unavailable(format!("session: {s}").into()),
        SpannerError::Connection(c) => RepoError::Unavailable(format!("connection: {c}").into()),
        other => RepoError::Other(anyhow::Error::new(other)),
    }
}

fn grpc(s: Status) -> SpannerError {
    SpannerError::GRPC(s)
}

fn is_aborted(e: &SpannerError) -> bool {
    matches!(e, SpannerError::GRPC(s) if s.code() == Code::Aborted)
}

/// A code collision on the unique index: draw new codes.
fn is_already_exists(e: &SpannerError) -> bool {
    matches!(e, SpannerError::GRPC(s) if s.code() == Code::AlreadyExists)
}

fn column<T: gcloud_spanner::row::TryFromValue>(row: &Row, i: usize) -> Result<T, SpannerError> {
    row.column::<T>(i).map_err(SpannerError::ParseError)
}

fn timestamp(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

fn from_timestamp(t: prost_types::Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(t.seconds, t.nanos.max(0) as u32).unwrap_or_default()
}

/// A uniform draw from `0..n` (n > 0), from the v4 UUID generator the crate already uses.
fn random_below(n: u64) -> u64 {
    (uuid::Uuid::new_v4().as_u128() % u128::from(n.max(1))) as u64
}

/// An order's row, confirmed or rejected.
fn order_row(
    oid: &str,
    o: &OrderMessage,
    status: &'static str,
) -> gcloud_googleapis::spanner::v1::Mutation {
    insert(
        "Orders",
        &[
            "OrderId",
            "EventId",
            "TicketTypeId",
            "Quantity",
            "Email",
            "AmountCents",
            "PaymentRef",
            "PaidAt",
            "Status",
            "PersistedAt",
        ],
        &[
            &oid,
            &o.event.as_str(),
            &o.ticket_type.as_str(),
            &i64::from(o.quantity.get()),
            &o.email.as_str(),
            &o.amount_cents,
            &o.payment_ref,
            &timestamp(o.paid_at),
            &status,
            &CommitTimestamp::new(),
        ],
    )
}

/// Splits the DDL into statements (`;`-terminated, `--` comments dropped).
fn statements(ddl: &str) -> Vec<String> {
    let without_comments: String = ddl
        .lines()
        .map(|l| l.split("--").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .collect()
}

/// A charge's row in the ledger.
fn charge_row(
    payment_ref: &str,
    order: &str,
    amount_cents: i64,
) -> gcloud_googleapis::spanner::v1::Mutation {
    insert(
        "Charges",
        &["PaymentRef", "OrderId", "AmountCents", "RecordedAt"],
        &[&payment_ref, &order, &amount_cents, &CommitTimestamp::new()],
    )
}

/// A refund owed, leased to its first ask until `next_at`.
fn refund_row(
    payment_ref: &str,
    order: &str,
    amount_cents: i64,
    owed_at: &prost_types::Timestamp,
    next_at: &prost_types::Timestamp,
) -> gcloud_googleapis::spanner::v1::Mutation {
    insert(
        "Refunds",
        &[
            "PaymentRef",
            "OrderId",
            "AmountCents",
            "OwedAt",
            "Attempts",
            "NextAt",
        ],
        &[&payment_ref, &order, &amount_cents, owed_at, &1i64, next_at],
    )
}

/// The table or index a `CREATE …` statement creates.
fn created_object(stmt: &str) -> Option<String> {
    let words: Vec<&str> = stmt.split_whitespace().collect();
    let pos = words
        .iter()
        .position(|w| w.eq_ignore_ascii_case("TABLE") || w.eq_ignore_ascii_case("INDEX"))?;
    words
        .get(pos + 1)
        .map(|n| n.trim_end_matches('(').to_owned())
}

/// The client libraries read `SPANNER_EMULATOR_HOST` themselves: set but empty, they would
/// aim at an emulator named "" instead of Google Cloud.
fn reject_empty_emulator_env(env: &Environment) -> Result<(), RepoError> {
    match env {
        Environment::Emulator(_) => Err(RepoError::Permanent(
            "SPANNER_EMULATOR_HOST is set but empty: unset it to use Google Cloud".into(),
        )),
        _ => Ok(()),
    }
}

async fn admin_client(emulator_host: Option<&str>) -> Result<AdminClient, RepoError> {
    let mut config = AdminClientConfig::default();
    config.connect_timeout = Duration::from_secs(5);
    config.environment = match emulator_host {
        Some(h) => Environment::Emulator(h.to_owned()),
        None => {
            reject_empty_emulator_env(&config.environment)?;
            config = config
                .with_auth()
                .await
                .map_err(|e| RepoError::Unavailable(format!("Google credentials: {e}").into()))?;
            config.environment
        }
    };
    AdminClient::new(config)
        .await
        .map_err(|e| RepoError::Unavailable(format!("cannot reach Spanner: {e}").into()))
}

/// Applies the schema to `path`, statement by statement, skipping tables and indexes that
/// exist (safe to re-run). On the emulator it first creates the instance and the database when
/// they are missing; in the cloud Terraform creates both.
pub async fn migrate(path: &DatabasePath, emulator_host: Option<&str>) -> Result<(), RepoError> {
    let admin = admin_client(emulator_host).await?;
    let wanted: Vec<String> = MIGRATIONS.iter().flat_map(|(_, d)| statements(d)).collect();
    if emulator_host.is_some() {
        let created = admin
            .instance()
            .create_instance(
                CreateInstanceRequest {
                    parent: format!("projects/{}", path.project),
                    instance_id: path.instance.clone(),
                    instance: Some(Instance {
                        name: path.instance_path(),
                        config: format!(
                            "projects/{}/instanceConfigs/emulator-config",
                            path.project
                        ),
                        display_name: path.instance.clone(),
                        node_count: 1,
                        ..Default::default()
                    }),
                },
                None,
            )
            .await;
        match created {
            Ok(mut op) => {
                op.wait(None).await.map_err(|s| status_error(&s))?;
            }
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(status_error(&s)),
        }
        let created = admin
            .database()
            .create_database(
                CreateDatabaseRequest {
                    parent: path.instance_path(),
                    create_statement: format!("CREATE DATABASE `{}`", path.database),
                    extra_statements: wanted.clone(),
                    ..Default::default()
                },
                None,
            )
            .await;
        match created {
            Ok(mut op) => {
                op.wait(None).await.map_err(|s| status_error(&s))?;
                return Ok(());
            }
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(status_error(&s)),
        }
    }
    let existing = admin
        .database()
        .get_database_ddl(
            GetDatabaseDdlRequest {
                database: path.to_string(),
            },
            None,
        )
        .await
        .map_err(|s| match s.code() {
            Code::NotFound => RepoError::Permanent(format!("Spanner database {path} not found")),
            _ => status_error(&s),
        })?
        .into_inner()
        .statements;
    let have: HashSet<String> = existing.iter().filter_map(|s| created_object(s)).collect();
    let missing: Vec<String> = wanted
        .into_iter()
        .filter(|s| created_object(s).is_none_or(|o| !have.contains(&o)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut op = admin
        .database()
        .update_database_ddl(
            UpdateDatabaseDdlRequest {
                database: path.to_string(),
                statements: missing,
                ..Default::default()
            },
            None,
        )
        .await
        .map_err(|s| status_error(&s))?;
    op.wait(None).await.map_err(|s| status_error(&s))?;
    Ok(())
}

impl SpannerRepository {
    /// A repository for `path`: the emulator at `emulator_host` when given, else Google Cloud
    /// with Application Default Credentials. Nothing is opened yet.
    pub fn new(
        path: &DatabasePath,
        emulator_host: Option<&str>,
        sessions: usize,
        timeout: Duration,
    ) -> Self {
        Self {
            client: Default::default(),
            path: path.clone(),
            emulator_host: emulator_host.map(str::to_owned),
            sessions,
            timeout,
        }
    }

    /// The client, connecting on first use: opens the first sessions, so an unreachable
    /// emulator or a missing database fails here, within the timeout (and is tried again on
    /// the next call).
    #[tracing::instrument(level = "debug", skip_all)]
    async fn client(&self) -> Result<&Client, RepoError> {
        self.client.get_or_try_init(|| self.open()).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn open(&self) -> Result<Client, RepoError> {
        let timeout = self.timeout;
        let mut config = ClientConfig::default();
        config.channel_config.num_channels = 2;
        config.channel_config.connect_timeout = timeout;
        config.channel_config.timeout = Duration::from_secs(30);
        let max = self
            .sessions
            .clamp(1, config.channel_config.num_channels * 100);
        let sc = &mut config.session_config;
        sc.max_opened = max;
        sc.min_opened = max.min(4);
        sc.max_idle = max;
        sc.session_get_timeout = timeout;
        match &self.emulator_host {
            Some(h) => config.environment = Environment::Emulator(h.clone()),
            None => {
                reject_empty_emulator_env(&config.environment)?;
                config = config.with_auth().await.map_err(|e| {
                    RepoError::Unavailable(format!("Google credentials: {e}").into())
                })?;
            }
        }
        let path = &self.path;
        tokio::time::timeout(timeout, Client::new(path.to_string(), config))
            .await
            .map_err(|_| {
                RepoError::Unavailable(
                    format!(
                        "Spanner ({}) did not answer within {timeout:?}",
                        self.emulator_host.as_deref().unwrap_or("Google Cloud")
                    )
                    .into(),
                )
            })?
            .map_err(|e| match e {
                SpannerError::GRPC(s) if s.code() == Code::NotFound => RepoError::Permanent(
                    format!("Spanner database {path} not found (run ops migrate)"),
                ),
                SpannerError::Connection(e) => RepoError::Unavailable(
                    format!(
                        "cannot connect to Spanner ({}): {e}",
                        self.emulator_host.as_deref().unwrap_or("Google Cloud")
                    )
                    .into(),
                ),
                other => classify(other),
            })
    }

    /// The database this repository works on.
    pub fn path(&self) -> &DatabasePath {
        &self.path
    }

    /// Runs `body` in a read-write transaction and commits, retrying aborts (and a ticket
    /// code collision) with jittered backoff, bounded by `MAX_ATTEMPTS` and `TX_DEADLINE`.
    /// `body` gets the transaction and hands it back with its result (so it may borrow what
    /// the caller holds).
    async fn in_transaction<T, F, Fut>(&self, body: F) -> Result<T, RepoError>
    where
        F: Fn(ReadWriteTransaction) -> Fut,
        Fut: std::future::Future<Output = (ReadWriteTransaction, Result<T, SpannerError>)>,
    {
        let start = Instant::now();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let tx = self
                .client()
                .await?
                .begin_read_write_transaction()
                .await
                .map_err(classify)?;
            let (mut tx, result) = body(tx).await;
            match tx.end(result, None).await {
                Ok((_, value)) => {
                    if attempt > 1 {
                        metrics::counter!("spanner_transaction_retries_total")
                            .increment(u64::from(attempt - 1));
                    }
                    return Ok(value);
                }
                Err(e)
                    if (is_aborted(&e) || is_already_exists(&e))
                        && attempt < MAX_ATTEMPTS
                        && start.elapsed() < TX_DEADLINE =>
                {
                    // Jitter spreads the retries of transactions that aborted each other.
                    let cap = 2u64.saturating_pow(attempt.min(7)).min(200);
                    let ms = 1 + random_below(cap);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
                Err(e) => return Err(classify(e)),
            }
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn tickets_of(tx: &mut Transaction, order: &str) -> Result<Vec<String>, SpannerError> {
        let mut stmt =
            Statement::new("SELECT Code FROM Tickets WHERE OrderId = @order ORDER BY Code");
        stmt.add_param("order", &order);
        let mut rows = tx.query(stmt).await.map_err(grpc)?;
        let mut codes = vec![];
        while let Some(row) = rows.next().await.map_err(grpc)? {
            codes.push(column::<String>(&row, 0)?);
        }
        Ok(codes)
    }

    /// The body of `persist_batch`'s transaction for one chunk of distinct orders (called
    /// again on every retry): which orders the books hold already, what is left of each ticket
    /// type the chunk sells, then one write of orders, tickets and counters.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn persist_tx(
        tx: &mut ReadWriteTransaction,
        orders: &[&OrderMessage],
    ) -> Result<Vec<Outcome>, SpannerError> {
        // The order rows decide idempotency: a concurrent delivery of the same message reads
        // the same keys, so one of the two transactions aborts, retries and finds the other's.
        // The ledger's rows of the orders' charges are read (so locked) in the same statement
        // (one round trip: the emulator runs one transaction at a time): a settlement of one of
        // them now aborts one of the two transactions. A ledger row comes back without an order.
        let ids: Vec<String> = orders.iter().map(|o| o.order_id.to_string()).collect();
        let refs: Vec<String> = orders.iter().map(|o| o.payment_ref.clone()).collect();
        let mut stmt = Statement::new(
            "SELECT o.OrderId, o.Status, t.Code, o.PaymentRef FROM Orders o
             LEFT JOIN Tickets t ON t.OrderId = o.OrderId
             WHERE o.OrderId IN UNNEST(@ids)
             UNION ALL
             SELECT CAST(NULL AS STRING), CAST(NULL AS STRING), CAST(NULL AS STRING), c.PaymentRef
             FROM Charges c WHERE c.PaymentRef IN UNNEST(@refs)
             ORDER BY 1, 3",
        );
        stmt.add_param("ids", &ids);
        stmt.add_param("refs", &refs);
        let mut known: HashMap<String, Persisted> = HashMap::new();
        let mut ledger = HashSet::new();
        let mut rows = tx.query(stmt).await.map_err(grpc)?;
        while let Some(r) = rows.next().await.map_err(grpc)? {
            let payment_ref: String = column(&r, 3)?;
            let Some(id) = column::<Option<String>>(&r, 0)? else {
                ledger.insert(payment_ref);
                continue;
            };
            let status: String = column(&r, 1)?;
            let code: Option<String> = column(&r, 2)?;
            let order = known.entry(id).or_insert_with(|| Persisted {
                status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Rejected),
                tickets: vec![],
                duplicate: true,
                payment_ref,
            });
            order.tickets.extend(code);
        }
        drop(rows);
        let fresh: Vec<&OrderMessage> = orders
            .iter()
            .copied()
            .filter(|o| !known.contains_key(&o.order_id.to_string()))
            .collect();
        // Every shard with tickets left of the types sold here. Reading them locks them, so the
        // verdict is exact: no in-flight order can fool it.
        let mut events: Vec<&str> = fresh.iter().map(|o| o.event.as_str()).collect();
        let mut types: Vec<&str> = fresh.iter().map(|o| o.ticket_type.as_str()).collect();
        for v in [&mut events, &mut types] {
            v.sort_unstable();
            v.dedup();
        }
        let mut stmt = Statement::new(
            "SELECT tt.EventId, tt.TicketTypeId, s.Shard, s.Remaining, tt.PriceCents, e.SaleOpensAt
             FROM TicketTypes tt
             JOIN Events e ON e.EventId = tt.EventId
             LEFT JOIN TicketShards s ON s.EventId = tt.EventId
               AND s.TicketTypeId = tt.TicketTypeId AND s.Remaining > 0
             WHERE tt.EventId IN UNNEST(@evs) AND tt.TicketTypeId IN UNNEST(@tts)",
        );
        stmt.add_param("evs", &events);
        stmt.add_param("tts", &types);
        let mut shards: HashMap<(String, String), Vec<(i64, i64)>> = HashMap::new();
        let mut prices: HashMap<(String, String), (i64, DateTime<Utc>)> = HashMap::new();
        let mut rows = tx.query(stmt).await.map_err(grpc)?;
        while let Some(r) = rows.next().await.map_err(grpc)? {
            let k: (String, String) = (column(&r, 0)?, column(&r, 1)?);
            let opens_at: prost_types::Timestamp = column(&r, 5)?;
            prices.insert(k.clone(), (column(&r, 4)?, from_timestamp(opens_at)));
            let free = shards.entry(k).or_default();
            if let (Some(shard), Some(remaining)) = (column(&r, 2)?, column(&r, 3)?) {
                free.push((shard, remaining));
            }
        }
        drop(rows);
        let mut types: HashMap<(String, String), ForSale> = shards
            .iter()
            .map(|(k, free)| {
                let (price_cents, opens_at) = prices[k];
                let sale = ForSale {
                    left: free.iter().map(|(_, r)| r).sum(),
                    price_cents,
                    opens_at,
                };
                (k.clone(), sale)
            })
            .collect();
        let key = |o: &OrderMessage| (o.event.to_string(), o.ticket_type.to_string());
        let decided = allocate(&fresh, key, &mut types, &ledger);
        let mut mutations = vec![];
        let (now, due) = (Utc::now(), super::FIRST_REFUND_DUE);
        let due = timestamp(now + chrono::Duration::from_std(due).unwrap_or_default());
        for (o, confirmed) in new_charges(&fresh, &decided, &ledger) {
            let oid = o.order_id.to_string();
            mutations.push(charge_row(&o.payment_ref, &oid, o.amount_cents));
            if !confirmed {
                mutations.push(refund_row(
                    &o.payment_ref,
                    &oid,
                    o.amount_cents,
                    &timestamp(now),
                    &due,
                ));
            }
        }
        let mut outcomes: HashMap<String, Outcome> = HashMap::with_capacity(fresh.len());
        let mut taken: HashMap<(String, String, i64), i64> = HashMap::new();
        for (o, decision) in fresh.iter().zip(decided) {
            let oid = o.order_id.to_string();
            let outcome = decision.map(|confirmed| {
                let status = if confirmed { "confirmed" } else { "rejected" };
                mutations.push(order_row(&oid, o, status));
                let mut tickets = vec![];
                if confirmed {
                    let free = shards
                        .get_mut(&key(o))
                        .expect("decided against these shards");
                    // Spread over the shards from a random one, so their counts stay even.
                    let start = random_below(free.len() as u64) as usize;
                    free.rotate_left(start);
                    let mut need = i64::from(o.quantity.get());
                    for (shard, remaining) in free.iter_mut().filter(|(_, r)| *r > 0) {
                        let n = need.min(*remaining);
                        *remaining -= n;
                        need -= n;
                        *taken
                            .entry((o.event.to_string(), o.ticket_type.to_string(), *shard))
                            .or_default() += n;
                        for _ in 0..n {
                            let code = ticket_code();
                            mutations.push(insert(
                                "Tickets",
                                &[
                                    "OrderId",
                                    "Code",
                                    "EventId",
                                    "TicketTypeId",
                                    "Shard",
                                    "ClaimedAt",
                                ],
                                &[
                                    &oid,
                                    &code,
                                    &o.event.as_str(),
                                    &o.ticket_type.as_str(),
                                    shard,
                                    &CommitTimestamp::new(),
                                ],
                            ));
                            tickets.push(code);
                        }
                        if need == 0 {
                            break;
                        }
                    }
                    tickets.sort();
                }
                Persisted {
                    status: if confirmed {
                        OrderStatus::Confirmed
                    } else {
                        OrderStatus::Rejected
                    },
                    tickets,
                    duplicate: false,
                    payment_ref: o.payment_ref.clone(),
                }
            });
            outcomes.insert(oid, outcome);
        }
        for ((ev, tt), free) in &shards {
            for (shard, remaining) in free {
                if taken.contains_key(&(ev.clone(), tt.clone(), *shard)) {
                    mutations.push(update(
                        "TicketShards",
                        &["EventId", "TicketTypeId", "Shard", "Remaining"],
                        &[ev, tt, shard, remaining],
                    ));
                }
            }
        }
        if !mutations.is_empty() {
            tx.buffer_write(mutations);
        }
        Ok(ids
            .iter()
            .map(|id| match known.remove(id) {
                Some(p) => Ok(p),
                None => outcomes
                    .remove(id)
                    .unwrap_or_else(|| Err(Refused("no decision".into()))),
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn seed_tx(
        tx: &mut ReadWriteTransaction,
        event: &Event,
        catalog: &str,
    ) -> Result<Result<Seeded, String>, SpannerError> {
        let id = event.id.as_str().to_owned();
        let key = Key::new(&id);
        if let Some(row) = tx
            .read_row("Events", &["Catalog"], key)
            .await
            .map_err(grpc)?
        {
            let stored: String = column(&row, 0)?;
            return Ok(if stored == catalog {
                Ok(Seeded::Unchanged)
            } else {
                Err(format!(
                    "event {} is already seeded with a different catalog; re-seed with --reset",
                    event.id
                ))
            });
        }
        let mut ms = vec![insert(
            "Events",
            &["EventId", "Name", "Venue", "SaleOpensAt", "Catalog"],
            &[
                &id,
                &event.name,
                &event.venue,
                &timestamp(event.sale_opens_at),
                &catalog,
            ],
        )];
        for t in &event.ticket_types {
            let capacity = i64::from(t.capacity);
            let shards = i64::from(t.capacity.clamp(1, MAX_SHARDS));
            ms.push(insert(
                "TicketTypes",
                &[
                    "EventId",
                    "TicketTypeId",
                    "Name",
                    "PriceCents",
                    "Capacity",
                    "PerCustomerLimit",
                    "HoldSeconds",
                    "Shards",
                ],
                &[
                    &id,
                    &t.id.as_str(),
                    &t.name,
                    &t.price_cents,
                    &capacity,
                    &i64::from(t.per_customer_limit),
                    &i64::from(t.hold_seconds),
                    &shards,
                ],
            ));
            // Capacity spread evenly; the first `capacity % shards` shards hold one more.
            for s in 0..shards {
                let share = capacity / shards + i64::from(s < capacity % shards);
                ms.push(insert(
                    "TicketShards",
                    &["EventId", "TicketTypeId", "Shard", "Remaining"],
                    &[&id, &t.id.as_str(), &s, &share],
                ));
            }
        }
        tx.buffer_write(ms);
        Ok(Ok(Seeded::Created))
    }
}

#[async_trait]
impl OrderRepository for SpannerRepository {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn ping(&self) -> Result<(), RepoError> {
        let mut tx = self.client().await?.single().await.map_err(classify)?;
        let mut rows = tx
            .query(Statement::new("SELECT 1"))
            .await
            .map_err(|s| status_error(&s))?;
        while rows.next().await.map_err(|s| status_error(&s))?.is_some() {}
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn seed(&self, event: &Event) -> Result<Seeded, RepoError> {
        if event.ticket_types.iter().any(|t| t.capacity == 0) {
            return Err(RepoError::Permanent("capacity must be positive".into()));
        }
        let catalog = serde_json::to_string(event).map_err(|e| RepoError::Other(e.into()))?;
        let catalog = &catalog;
        self.in_transaction(|mut tx| async move {
            let r = Self::seed_tx(&mut tx, event, catalog).await;
            (tx, r)
        })
        .await?
        .map_err(RepoError::Permanent)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn reset(&self, event: &EventId) -> Result<(), RepoError> {
        let id = event.as_str().to_owned();
        let id = &id;
        self.in_transaction(|mut tx| async move {
            // Tickets go with their orders, ticket types and shards with their event
            // (interleaved, ON DELETE CASCADE).
            let mut orders = Statement::new("DELETE FROM Orders WHERE EventId = @ev");
            orders.add_param("ev", id);
            let mut events = Statement::new("DELETE FROM Events WHERE EventId = @ev");
            events.add_param("ev", id);
            let mut marks = Statement::new("DELETE FROM GateMarks WHERE EventId = @ev");
            marks.add_param("ev", id);
            let r = tx
                .batch_update(vec![orders, events, marks])
                .await
                .map(|_| ())
                .map_err(grpc);
            (tx, r)
        })
        .await
    }

    fn atomic_batch(&self) -> usize {
        MAX_ORDERS_PER_TRANSACTION
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn persist_batch(&self, orders: &[OrderMessage]) -> Result<Vec<Outcome>, RepoError> {
        let (unique, positions) = distinct(orders);
        let mut outcomes = Vec::with_capacity(unique.len());
        for chunk in unique.chunks(MAX_ORDERS_PER_TRANSACTION) {
            outcomes.extend(
                self.in_transaction(|mut tx| async move {
                    let r = Self::persist_tx(&mut tx, chunk).await;
                    (tx, r)
                })
                .await?,
            );
        }
        Ok(spread(outcomes, &positions))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn order(&self, id: OrderId) -> Result<Option<StoredOrder>, RepoError> {
        let oid = id.to_string();
        // One snapshot for the order and its tickets.
        let mut tx = self
            .client()
            .await?
            .read_only_transaction()
            .await
            .map_err(classify)?;
        let key = Key::new(&oid);
        let row = tx
            .read_row(
                "Orders",
                &[
                    "EventId",
                    "TicketTypeId",
                    "Quantity",
                    "Email",
                    "AmountCents",
                    "Status",
                    "PaymentRef",
                    "PersistedAt",
                ],
                key,
            )
            .await
            .map_err(|s| status_error(&s))?;
        let Some(r) = row else {
            return Ok(None);
        };
        let parse_err = |e: SpannerError| classify(e);
        let event: String = column(&r, 0).map_err(parse_err)?;
        let tt: String = column(&r, 1).map_err(parse_err)?;
        let quantity: i64 = column(&r, 2).map_err(parse_err)?;
        let status: String = column(&r, 5).map_err(parse_err)?;
        let persisted_at: prost_types::Timestamp = column(&r, 7).map_err(parse_err)?;
        let tickets = Self::tickets_of(&mut tx, &oid).await.map_err(classify)?;
        Ok(Some(StoredOrder {
            order_id: id,
            event: EventId::parse(&event).map_err(|e| RepoError::Other(e.into()))?,
            ticket_type: TicketTypeId::parse(&tt).map_err(|e| RepoError::Other(e.into()))?,
            quantity: u32::try_from(quantity).unwrap_or_default(),
            email: column(&r, 3).map_err(parse_err)?,
            amount_cents: column(&r, 4).map_err(parse_err)?,
            status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Rejected),
            payment_ref: column(&r, 6).map_err(parse_err)?,
            persisted_at: from_timestamp(persisted_at),
            tickets,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn inventory(&self, event: &EventId) -> Result<Vec<Inventory>, RepoError> {
        let mut tx = self
            .client()
            .await?
            .read_only_transaction()
            .await
            .map_err(classify)?;
        let mut stmt = Statement::new(
            "SELECT tt.TicketTypeId, tt.Capacity,
               (SELECT IFNULL(SUM(s.Remaining), 0) FROM TicketShards s
                 WHERE s.EventId = tt.EventId AND s.TicketTypeId = tt.TicketTypeId),
               (SELECT COUNT(*) FROM Tickets t
                 WHERE t.EventId = tt.EventId AND t.TicketTypeId = tt.TicketTypeId),
               (SELECT IFNULL(SUM(o.Quantity), 0) FROM Orders o
                 WHERE o.EventId = tt.EventId AND o.TicketTypeId = tt.TicketTypeId AND o.Status = 'confirmed'),
               (SELECT COUNT(*) FROM Orders o
                 WHERE o.EventId = tt.EventId AND o.TicketTypeId = tt.TicketTypeId AND o.Status = 'confirmed'),
               (SELECT COUNT(*) FROM Orders o
                 WHERE o.EventId = tt.EventId AND o.TicketTypeId = tt.TicketTypeId AND o.Status = 'rejected')
             FROM TicketTypes tt WHERE tt.EventId = @ev ORDER BY tt.TicketTypeId",
        );
        stmt.add_param("ev", &event.as_str());
        let mut rows = tx.query(stmt).await.map_err(|s| status_error(&s))?;
        let mut out = vec![];
        while let Some(r) = rows.next().await.map_err(|s| status_error(&s))? {
            let get = |i: usize| column::<i64>(&r, i).map_err(classify);
            let tt: String = column(&r, 0).map_err(classify)?;
            let sold = get(3)?;
            out.push(Inventory {
                ticket_type: TicketTypeId::parse(&tt).map_err(|e| RepoError::Other(e.into()))?,
                capacity: get(1)?,
                // Tickets that exist: sold ones plus what the shards still hold. The audit's
                // `tickets == capacity` then checks that no counter lost or made a ticket.
                tickets: sold + get(2)?,
                sold,
                confirmed_quantity: get(4)?,
                confirmed_orders: get(5)?,
                rejected_orders: get(6)?,
            });
        }
        Ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn events(&self) -> Result<Vec<Event>, RepoError> {
        let mut tx = self.client().await?.single().await.map_err(classify)?;
        let mut rows = tx
            .query(Statement::new(
                "SELECT Catalog FROM Events ORDER BY EventId",
            ))
            .await
            .map_err(|s| status_error(&s))?;
        let mut out = vec![];
        while let Some(r) = rows.next().await.map_err(|s| status_error(&s))? {
            let catalog: String = column(&r, 0).map_err(classify)?;
            out.push(
                serde_json::from_str(&catalog).map_err(|e| {
                    RepoError::Other(anyhow::Error::new(e).context("stored catalog"))
                })?,
            );
        }
        Ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn customer_totals(&self, event: &EventId) -> Result<Vec<CustomerTotal>, RepoError> {
        let mut tx = self.client().await?.single().await.map_err(classify)?;
        let mut stmt = Statement::new(
            "SELECT TicketTypeId, Email, SUM(Quantity) FROM Orders
             WHERE EventId = @ev AND Status = 'confirmed'
             GROUP BY TicketTypeId, Email ORDER BY TicketTypeId, Email",
        );
        stmt.add_param("ev", &event.as_str());
        let mut rows = tx.query(stmt).await.map_err(|s| status_error(&s))?;
        let mut out = vec![];
        while let Some(r) = rows.next().await.map_err(|s| status_error(&s))? {
            let tt: String = column(&r, 0).map_err(classify)?;
            out.push(CustomerTotal {
                ticket_type: TicketTypeId::parse(&tt).map_err(|e| RepoError::Other(e.into()))?,
                email: column(&r, 1).map_err(classify)?,
                quantity: column(&r, 2).map_err(classify)?,
            });
        }
        Ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn decided_orders(&self, event: &EventId) -> Result<Vec<StoredOrder>, RepoError> {
        let mut tx = self.client().await?.single().await.map_err(classify)?;
        let mut stmt = Statement::new(
            "SELECT o.OrderId, o.TicketTypeId, o.Quantity, o.Email, o.AmountCents, o.Status,
               o.PaymentRef, o.PersistedAt, t.Code
             FROM Orders o LEFT JOIN Tickets t ON t.OrderId = o.OrderId
             WHERE o.EventId = @ev ORDER BY o.OrderId, t.Code",
        );
        stmt.add_param("ev", &event.as_str());
        let mut rows = tx.query(stmt).await.map_err(|s| status_error(&s))?;
        let mut out: Vec<StoredOrder> = vec![];
        while let Some(r) = rows.next().await.map_err(|s| status_error(&s))? {
            let id = OrderId::parse(&column::<String>(&r, 0).map_err(classify)?)
                .map_err(|e| RepoError::Other(e.into()))?;
            let code: Option<String> = column(&r, 8).map_err(classify)?;
            // One row per ticket: an order's rows come together.
            if out.last().is_none_or(|o| o.order_id != id) {
                let tt: String = column(&r, 1).map_err(classify)?;
                let quantity: i64 = column(&r, 2).map_err(classify)?;
                let status: String = column(&r, 5).map_err(classify)?;
                let persisted_at: prost_types::Timestamp = column(&r, 7).map_err(classify)?;
                out.push(StoredOrder {
                    order_id: id,
                    event: event.clone(),
                    ticket_type: TicketTypeId::parse(&tt)
                        .map_err(|e| RepoError::Other(e.into()))?,
                    quantity: u32::try_from(quantity).unwrap_or_default(),
                    email: column(&r, 3).map_err(classify)?,
                    amount_cents: column(&r, 4).map_err(classify)?,
                    status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Rejected),
                    payment_ref: column(&r, 6).map_err(classify)?,
                    persisted_at: from_timestamp(persisted_at),
                    tickets: vec![],
                });
            }
            if let (Some(code), Some(o)) = (code, out.last_mut()) {
                o.tickets.push(code);
            }
        }
        Ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn settle_charges(
        &self,
        charges: &[OrderCharge],
        lease: Duration,
    ) -> Result<Vec<OrderCharge>, RepoError> {
        if charges.is_empty() {
            return Ok(vec![]);
        }
        self.in_transaction(|mut tx| async move {
            let r = async {
                let refs: Vec<String> = charges.iter().map(|c| c.payment_ref.clone()).collect();
                // Each charge's order as the ledger records it (the one it was first known for).
                let mut stmt = Statement::new(
                    "SELECT PaymentRef, OrderId FROM Charges WHERE PaymentRef IN UNNEST(@refs)",
                );
                stmt.add_param("refs", &refs);
                let mut rows = tx.query(stmt).await.map_err(grpc)?;
                let mut ledger: HashMap<String, String> = HashMap::new();
                while let Some(row) = rows.next().await.map_err(grpc)? {
                    ledger.insert(column(&row, 0)?, column(&row, 1)?);
                }
                drop(rows);
                let order_of = |c: &OrderCharge| {
                    ledger
                        .get(&c.payment_ref)
                        .cloned()
                        .unwrap_or_else(|| c.order_id.to_string())
                };
                let ids: Vec<String> = charges.iter().map(order_of).collect();
                let mut stmt = Statement::new(
                    "SELECT OrderId, PaymentRef FROM Orders
                     WHERE OrderId IN UNNEST(@ids) AND Status = 'confirmed'",
                );
                stmt.add_param("ids", &ids);
                let mut rows = tx.query(stmt).await.map_err(grpc)?;
                let mut paid_by: HashMap<String, String> = HashMap::new();
                while let Some(row) = rows.next().await.map_err(grpc)? {
                    paid_by.insert(column(&row, 0)?, column(&row, 1)?);
                }
                drop(rows);
                let kept = |c: &OrderCharge| paid_by.get(&order_of(c)) == Some(&c.payment_ref);
                let mut stmt = Statement::new(
                    "SELECT PaymentRef, RefundedAt IS NOT NULL FROM Refunds
                     WHERE PaymentRef IN UNNEST(@refs)",
                );
                stmt.add_param("refs", &refs);
                let mut rows = tx.query(stmt).await.map_err(grpc)?;
                let mut known = HashMap::new();
                while let Some(row) = rows.next().await.map_err(grpc)? {
                    known.insert(column::<String>(&row, 0)?, column::<bool>(&row, 1)?);
                }
                drop(rows);
                let now = Utc::now();
                let next = timestamp(now + chrono::Duration::from_std(lease).unwrap_or_default());
                let now = timestamp(now);
                let mut ms = vec![];
                let mut seen = HashSet::new();
                let mut open: Vec<OrderCharge> = vec![];
                for c in charges {
                    if !seen.insert(&c.payment_ref) {
                        continue;
                    }
                    if !ledger.contains_key(&c.payment_ref) {
                        ms.push(charge_row(
                            &c.payment_ref,
                            &c.order_id.to_string(),
                            c.amount_cents,
                        ));
                    }
                    if kept(c) {
                        continue;
                    }
                    match known.get(&c.payment_ref) {
                        Some(true) => continue,
                        Some(false) => {}
                        None => ms.push(refund_row(
                            &c.payment_ref,
                            &c.order_id.to_string(),
                            c.amount_cents,
                            &now,
                            &next,
                        )),
                    }
                    open.push(c.clone());
                }
                if !ms.is_empty() {
                    tx.buffer_write(ms);
                }
                Ok(open)
            }
            .await;
            (tx, r)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn charges(&self, payment_refs: &[String]) -> Result<Vec<LedgerEntry>, RepoError> {
        let mut tx = self.client().await?.single().await.map_err(classify)?;
        let mut stmt = Statement::new(
            "SELECT c.PaymentRef, c.OrderId, c.AmountCents,
               o.Status = 'confirmed' AND o.PaymentRef = c.PaymentRef,
               CASE WHEN r.PaymentRef IS NOT NULL THEN r.RefundedAt IS NOT NULL END
             FROM Charges c
             LEFT JOIN Orders o ON o.OrderId = c.OrderId
             LEFT JOIN Refunds r ON r.PaymentRef = c.PaymentRef
             WHERE c.PaymentRef IN UNNEST(@refs)",
        );
        stmt.add_param("refs", &payment_refs);
        let mut rows = tx.query(stmt).await.map_err(|s| status_error(&s))?;
        let mut out = vec![];
        while let Some(r) = rows.next().await.map_err(|s| status_error(&s))? {
            let order: String = column(&r, 1).map_err(classify)?;
            let kept: Option<bool> = column(&r, 3).map_err(classify)?;
            let refunded: Option<bool> = column(&r, 4).map_err(classify)?;
            out.push(LedgerEntry {
                charge: OrderCharge {
                    payment_ref: column(&r, 0).map_err(classify)?,
                    order_id: OrderId(
                        uuid::Uuid::parse_str(&order).map_err(|e| RepoError::Other(e.into()))?,
                    ),
                    amount_cents: column(&r, 2).map_err(classify)?,
                },
                verdict: Verdict::of(kept == Some(true), refunded),
            });
        }
        Ok(out)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn claim_refunds(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<OrderCharge>, RepoError> {
        self.in_transaction(|mut tx| async move {
            let r = async {
                let mut stmt = Statement::new(
                    "SELECT PaymentRef, OrderId, AmountCents, Attempts FROM Refunds
                     WHERE NextAt <= CURRENT_TIMESTAMP() AND RefundedAt IS NULL
                     ORDER BY NextAt LIMIT @n",
                );
                stmt.add_param("n", &(limit as i64));
                let mut rows = tx.query(stmt).await.map_err(grpc)?;
                let mut claimed = vec![];
                let mut ms = vec![];
                while let Some(row) = rows.next().await.map_err(grpc)? {
                    let payment_ref: String = column(&row, 0)?;
                    let attempts: i64 = column(&row, 3)?;
                    let order: String = column(&row, 1)?;
                    let next = Utc::now()
                        + chrono::Duration::from_std(super::refund_lease(lease, attempts))
                            .unwrap_or_default();
                    ms.push(update(
                        "Refunds",
                        &["PaymentRef", "Attempts", "NextAt"],
                        &[&payment_ref, &(attempts + 1), &timestamp(next)],
                    ));
                    claimed.push(OrderCharge {
                        // Written by `settle_charges` or a batch's rejection from an order id.
                        order_id: OrderId(uuid::Uuid::parse_str(&order).unwrap_or_default()),
                        payment_ref,
                        amount_cents: column(&row, 2)?,
                    });
                }
                if !ms.is_empty() {
                    tx.buffer_write(ms);
                }
                Ok(claimed)
            }
            .await;
            (tx, r)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn refund_done(&self, payment_ref: &str) -> Result<(), RepoError> {
        self.in_transaction(|mut tx| async move {
            let mut stmt = Statement::new(
                "UPDATE Refunds SET RefundedAt = CURRENT_TIMESTAMP(), NextAt = NULL
                 WHERE PaymentRef = @r AND RefundedAt IS NULL",
            );
            stmt.add_param("r", &payment_ref);
            let r = tx.update(stmt).await.map(|_| ()).map_err(grpc);
            (tx, r)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn refunds_outstanding(&self) -> Result<(i64, Option<DateTime<Utc>>), RepoError> {
        let mut tx = self.client().await?.single().await.map_err(classify)?;
        let stmt =
            Statement::new("SELECT COUNT(*), MIN(OwedAt) FROM Refunds WHERE RefundedAt IS NULL");
        let mut rows = tx.query(stmt).await.map_err(|s| status_error(&s))?;
        let Some(r) = rows.next().await.map_err(|s| status_error(&s))? else {
            return Ok((0, None));
        };
        let n: i64 = column(&r, 0).map_err(classify)?;
        let oldest: Option<prost_types::Timestamp> = column(&r, 1).map_err(classify)?;
        Ok((n, oldest.map(from_timestamp)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn save_mark(&self, event: &EventId, mark: &GateMark) -> Result<(), RepoError> {
        let (ev, m) = (event.as_str().to_owned(), mark);
        let ev = &ev;
        self.in_transaction(|mut tx| async move {
            let r = async {
                let mut update = Statement::new(
                    "UPDATE GateMarks SET
                       Mark = IF(Epoch = @epoch, GREATEST(Mark, @mark), @mark),
                       Epoch = @epoch, SavedAt = PENDING_COMMIT_TIMESTAMP()
                     WHERE EventId = @ev AND Writer = @writer",
                );
                let mut insert = Statement::new(
                    "INSERT INTO GateMarks (EventId, Writer, Epoch, Mark, SavedAt)
                     VALUES (@ev, @writer, @epoch, @mark, PENDING_COMMIT_TIMESTAMP())",
                );
                for stmt in [&mut update, &mut insert] {
                    stmt.add_param("ev", ev);
                    stmt.add_param("writer", &m.writer);
                    stmt.add_param("epoch", &m.epoch);
                    stmt.add_param("mark", &m.mark);
                }
                if tx.update(update).await.map_err(grpc)? == 0 {
                    tx.update(insert).await.map_err(grpc)?;
                }
                Ok(())
            }
            .await;
            (tx, r)
        })
        .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn marks(&self, event: &EventId) -> Result<Vec<GateMark>, RepoError> {
        let mut tx = self.client().await?.single().await.map_err(classify)?;
        let mut stmt =
            Statement::new("SELECT Writer, Epoch, Mark FROM GateMarks WHERE EventId = @ev");
        stmt.add_param("ev", &event.as_str());
        let mut rows = tx.query(stmt).await.map_err(|s| status_error(&s))?;
        let mut out = vec![];
        while let Some(r) = rows.next().await.map_err(|s| status_error(&s))? {
            out.push(GateMark {
                writer: column(&r, 0).map_err(classify)?,
                epoch: column(&r, 1).map_err(classify)?,
                mark: column(&r, 2).map_err(classify)?,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_paths_are_validated() {
        let p = DatabasePath::parse("projects/p-1/instances/i/databases/tickets").unwrap();
        assert_eq!(p.instance_path(), "projects/p-1/instances/i");
        assert_eq!(p.to_string(), "projects/p-1/instances/i/databases/tickets");
        for bad in [
            "",
            "tickets",
            "projects/p/instances/i",
            "projects/p/instances//databases/d",
            "projects/p/instances/i/databases/d/extra",
            "projects/p q/instances/i/databases/d",
        ] {
            assert!(DatabasePath::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_ddl_splits_into_named_statements() {
        let all: Vec<String> = MIGRATIONS.iter().flat_map(|(_, d)| statements(d)).collect();
        let names: Vec<String> = all.iter().filter_map(|s| created_object(s)).collect();
        assert_eq!(
            names,
            [
                "Events",
                "TicketTypes",
                "TicketShards",
                "Orders",
                "Tickets",
                "TicketsByCode",
                "Refunds",
                "RefundsDue",
                "Charges",
                "GateMarks"
            ]
        );
        assert!(all.iter().all(|s| !s.contains("--")));
        // What GetDatabaseDdl answers names the same objects.
        assert_eq!(
            created_object("CREATE UNIQUE INDEX TicketsByCode ON Tickets(Code)").as_deref(),
            Some("TicketsByCode")
        );
        assert_eq!(
            created_object("CREATE TABLE Events (\n  EventId STRING(64)").as_deref(),
            Some("Events")
        );
    }

    #[test]
    fn timestamps_round_trip() {
        let t = DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap();
        assert_eq!(from_timestamp(timestamp(t)), t);
    }
}
