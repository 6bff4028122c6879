//! The Redis admission gate: one atomic Lua script per transition of an order
//! (reserve, pay, cancel, expire, finalize), plus the read of an event's stock.
//!
//! Keys of one event share the hash tag `{ev:EVENT}` (one Redis Cluster slot), so every script
//! is atomic over everything it touches. Expired holds go back to stock inside the scripts
//! themselves (`reap` in reserve and refresh), so no sweeper is needed for correctness.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, Value};

mod batch;
mod config;
mod finalized;
pub mod ratelimit;
mod room;
pub mod tls;
mod traits;
mod wire;

pub use config::{RateLimitArgs, RedisArgs};
pub use room::{RoomSettings, RoomStatus, RoomView, WaitingRoom, draw_key};
pub use traits::{Admission, Checkout, Finalized, PaymentFlow, ReadModel};
use wire::{catalog_args, order_view, text};

use domain::{
    Email, Event, EventId, IdempotencyKey, OrderId, OrderStatus, PaymentAttempt, Quantity,
    TicketTypeId,
};

const PRELUDE: &str = include_str!("lua/prelude.lua");
/// GCRA, once for every script that limits a rate (`lua/gcra.lua`).
pub(crate) const GCRA: &str = include_str!("lua/gcra.lua");

/// A gate operation failed for infrastructure reasons (Redis down, slow or answering nonsense).
/// Cloned when one Redis call fails a whole batch of reservations, so the cause is shared.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GateError {
    /// Redis refused the connection or failed the command. (The cause shows in the message
    /// too: every log line that prints this error says what Redis said.)
    #[error("redis unavailable: {0}")]
    Redis(#[source] std::sync::Arc<redis::RedisError>),
    /// Redis did not answer within the deadline, or the reservation queue could not take the
    /// call.
    #[error("redis unavailable: {0}")]
    Unavailable(&'static str),
    /// Redis answered something the scripts never return.
    #[error("unexpected gate reply: {0}")]
    Protocol(String),
    /// A reply that does not decode, or an argument that does not encode: where, and why.
    #[error("unexpected gate reply: {what}: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: std::sync::Arc<dyn std::error::Error + Send + Sync>,
    },
    /// `seed` found the event in Redis with another catalog.
    #[error("event {0} is already seeded in Redis with a different catalog; re-seed with --reset")]
    CatalogConflict(domain::EventId),
    /// The server did not prove it is the instance `REDIS_CA_CERT` names (ADR 48).
    #[error("redis TLS: {0}")]
    Tls(#[source] rustls::Error),
    /// Redis went back in time for this event (ADR 56): nothing more is mirrored there until
    /// [`PaymentFlow::repair`] has brought it up to the books.
    #[error("redis went back in time for event {0}: repair it from the books first")]
    WentBack(domain::EventId),
}

impl GateError {
    /// Whether Redis is down or busy (try again later), as opposed to answering nonsense.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Redis(_) | Self::Unavailable(_) | Self::Tls(_))
    }

    /// A [`GateError::Malformed`] at `what`, caused by `source`.
    pub(crate) fn malformed(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Malformed {
            what,
            source: std::sync::Arc::new(source),
        }
    }
}

impl From<redis::RedisError> for GateError {
    fn from(e: redis::RedisError) -> Self {
        Self::Redis(std::sync::Arc::new(e))
    }
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Held until the deadline.
    Reserved {
        order_id: OrderId,
        hold_expires_at: DateTime<Utc>,
    },
    /// The same Idempotency-Key with the same request: the first answer again.
    Replayed {
        order_id: OrderId,
        hold_expires_at: DateTime<Utc>,
    },
    /// The same Idempotency-Key with a different request.
    IdempotencyConflict,
    /// The sale opens in this many milliseconds.
    TooEarly { opens_in_ms: u64 },
    /// The event is not on sale here.
    UnknownEvent,
    /// The ticket type is not part of the event.
    UnknownTicketType,
    /// Nothing left.
    SoldOut,
    /// Fewer left than asked for.
    NotEnough { available: u64 },
    /// The per-customer limit would be exceeded.
    Limit { limit: u64, remaining: u64 },
    /// The gate is being rebuilt after Redis lost its state: try again shortly.
    Paused,
    /// The per-e-mail rate limit refused it; nothing was consumed.
    RateLimited { retry_after: Duration },
    /// The client took as many holds as it may within a hold time (`window`); its oldest
    /// ends after `retry_after`.
    ClientHolds {
        retry_after: Duration,
        window: Duration,
    },
    /// The event's waiting room is on and the fan brought no admission (ADR 59).
    NotAdmitted,
}

/// What a reservation is checked against besides stock and the per-customer limit.
#[derive(Debug, Clone, Default)]
pub struct AdmissionRules {
    /// The per-e-mail rate limit.
    pub per_email: Option<crate::ratelimit::Policy>,
    /// The most holds one client may take within a hold time (0: no cap).
    pub holds_per_client: u32,
    /// The client's address (`None`: unknown, and not capped).
    pub client: Option<String>,
    /// The place of the fan's admission token, verified by the caller (`None`: no token).
    /// Required while the event's waiting room is on (ADR 59).
    pub admitted: Option<u64>,
}

/// Whether the gate holds an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Seeded or restored, on sale.
    Live,
    /// Being rebuilt from the database (paused).
    Restoring,
    /// Not in Redis.
    Absent,
}

/// What one restore pass found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restore {
    /// The event is live in the gate: nothing was written.
    Live,
    /// Rewritten from the books; still paused.
    Restoring,
    /// Rewritten from the books and reopened.
    Resumed,
}

/// What the first pass of a restore writes besides the stock, read from the books.
#[derive(Debug, Clone, Copy)]
pub struct Books<'a> {
    /// Every order the books decided, with its tickets.
    pub orders: &'a [domain::books::StoredOrder],
    /// The confirmed quantity per customer and ticket type.
    pub customers: &'a [domain::books::CustomerTotal],
}

/// The answer to the start of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayBegin {
    /// Charge this amount with this token as payment attempt `attempt` (the hold is now
    /// frozen in `confirming`; a pending attempt is resumed with its stored token).
    Charge {
        amount_cents: i64,
        token: String,
        attempt: PaymentAttempt,
    },
    /// A pending attempt older than the give-up age: its outcome is unknown, release it.
    Stuck { attempt: PaymentAttempt },
    /// Already paid earlier; `published` says whether its message is known to be in Pub/Sub.
    AlreadyPaid { published: bool },
    /// No such order.
    NotFound,
    /// The order is in another state (expired, cancelled, confirmed, rejected).
    State(OrderStatus),
}

/// What the gate made of an approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Approval {
    /// Recorded for the current attempt (or recorded before with the same reference).
    Recorded(Approved),
    /// Not the current attempt, or the order moved on: Redis cannot place this charge, and
    /// the books decide whether it is kept or refunded (ADR 53). Carries the order's status
    /// (None: the gate does not know the order).
    Stale(Option<OrderStatus>),
}

/// An approved payment as the gate recorded it, with what the order's message carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The provider's reference.
    pub payment_ref: String,
    /// When it was approved (the first approval, if recorded twice).
    pub paid_at: DateTime<Utc>,
    pub ticket_type: TicketTypeId,
    pub quantity: Quantity,
    pub email: Email,
    pub amount_cents: i64,
}

/// The gate's view of one order (the read model behind `GET /v1/orders/{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub order_id: OrderId,
    pub event: EventId,
    pub status: OrderStatus,
    pub ticket_type: TicketTypeId,
    pub quantity: Quantity,
    pub email: Email,
    pub amount_cents: i64,
    pub hold_expires_at: Option<DateTime<Utc>>,
    pub payment_ref: Option<String>,
    pub paid_at: Option<DateTime<Utc>>,
    pub tickets: Vec<String>,
}

/// Stock of one ticket type. `available + held + confirming + sold == capacity` at all times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Stock {
    pub capacity: i64,
    pub available: i64,
    pub held: i64,
    pub confirming: i64,
    pub sold: i64,
}

impl Stock {
    /// `available + held + confirming + sold - capacity`: zero when the books balance.
    pub fn delta(&self) -> i64 {
        self.available + self.held + self.confirming + self.sold - self.capacity
    }
}

/// One consistent read of an event (after expiring due holds).
#[derive(Debug, Clone, PartialEq)]
pub struct EventSnapshot {
    /// The catalog as seeded.
    pub catalog: Event,
    /// Redis' clock when read.
    pub read_at: DateTime<Utc>,
    /// Stock per ticket type, in catalog order.
    pub stock: BTreeMap<String, Stock>,
    /// Being rebuilt after Redis lost its state: reservations are refused until it resumes.
    pub paused: bool,
}

struct Scripts {
    pay_begin: Script,
    pay_abort: Script,
    pay_approved: Script,
    published: Script,
    outbox_claim: Script,
    cancel: Script,
    finalize: Script,
    refresh: Script,
    seed: Script,
    restore: Script,
    restore_customers: Script,
    restore_orders: Script,
    restore_holds: Script,
    rebuild: Script,
    raise_marks: Script,
    room: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}\n{GCRA}\n{body}"))
}

/// The gate: a Redis connection (multiplexed, reconnecting), the scripts, and the queue of
/// reservations waiting for their batch (see `batch`).
#[derive(Clone)]
pub struct Gate(std::sync::Arc<Inner>);

/// One Arc behind the gate: every request clones it.
struct Inner {
    conn: ConnectionManager,
    scripts: Scripts,
    timeout: Duration,
    reservations: tokio::sync::mpsc::Sender<batch::Pending>,
    /// The seeded events as `event_of` last read them.
    events: std::sync::Mutex<Option<(std::time::Instant, Vec<EventId>)>>,
    /// Who waits for which order's outcome (see [`PaymentFlow::finalized`]).
    finalized: std::sync::Arc<finalized::Listener>,
    /// This process's marks in each event's `marks` (ADR 56).
    marks: Marks,
}

/// What this process wrote to each event's `marks` hash, the one thing that tells a Redis that
/// went back in time (ADR 56): its own field (`writer`, random per process) only grows within
/// an epoch of the event (its order-id salt), so a value below the highest one it was answered
/// in that epoch means Redis lost its writes since.
struct Marks {
    writer: String,
    /// Per event: the epoch and the highest mark answered in it.
    known: std::sync::Mutex<std::collections::HashMap<EventId, (String, u64)>>,
    /// Events found gone back in time and not repaired yet.
    behind: std::sync::Mutex<std::collections::HashSet<EventId>>,
}

impl Marks {
    fn new() -> Self {
        Self {
            writer: uuid::Uuid::new_v4().simple().to_string(),
            known: std::sync::Mutex::default(),
            behind: std::sync::Mutex::default(),
        }
    }

    fn known(&self, event: &EventId) -> Option<(String, u64)> {
        self.known.lock().expect("marks").get(event).cloned()
    }

    /// Redis answered `mark` in `epoch` (a new epoch starts the count again).
    fn answered(&self, event: &EventId, epoch: String, mark: u64) {
        let mut known = self.known.lock().expect("marks");
        match known.get_mut(event) {
            Some((e, k)) if *e == epoch => *k = (*k).max(mark),
            _ => {
                known.insert(event.clone(), (epoch, mark));
            }
        }
    }

    /// Redis went back to `mark`: from there on it is what this process knows, and the event
    /// waits for its repair.
    fn went_back(&self, event: &EventId, mark: u64) {
        if let Some((_, k)) = self.known.lock().expect("marks").get_mut(event) {
            *k = mark;
        }
        self.behind.lock().expect("marks").insert(event.clone());
    }

    fn is_behind(&self, event: &EventId) -> bool {
        self.behind.lock().expect("marks").contains(event)
    }

    fn repaired(&self, event: &EventId) {
        self.behind.lock().expect("marks").remove(event);
    }
}

impl Gate {
    /// Redis went back in time for `event`, to this process's `mark` (ADR 56).
    fn went_back(&self, event: &EventId, mark: u64) {
        self.0.marks.went_back(event, mark);
        metrics::counter!("gate_went_back_total").increment(1);
        tracing::error!(event = %event, mark, "Redis went back in time (it lost writes of a process it had answered); repairing the event from the books");
    }

    /// One `finalize.lua` call for `orders`, with the mark this process knows in `epoch` (or
    /// `repair`); the mark it answers is taken in.
    async fn finalize_call(
        &self,
        event: &EventId,
        known: &str,
        epoch: &str,
        orders: &[(&domain::OrderMessage, &domain::books::Persisted)],
    ) -> Result<wire::Finalized, GateError> {
        let args = wire::finalize_args(&self.0.marks.writer, known, epoch, orders)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = self
            .run("finalize", &self.0.scripts.finalize, event, &args)
            .await?;
        let answer = wire::finalize_reply(reply, orders.len())?;
        if let wire::Finalized::Done(_, mark, epoch) = &answer {
            self.0.marks.answered(event, epoch.clone(), *mark);
        }
        Ok(answer)
    }

    /// This process's marks (ADR 56): per event, the epoch and the highest mark Redis answered
    /// it there. The watcher saves them in the books, so that a rollback of this process's
    /// writes is found after it is gone ([`Gate::went_back_below`]).
    pub fn own_marks(&self) -> Vec<(EventId, domain::books::GateMark)> {
        let marks = &self.0.marks;
        let known = marks.known.lock().expect("marks");
        known
            .iter()
            .map(|(event, (epoch, mark))| {
                let saved = domain::books::GateMark {
                    writer: marks.writer.clone(),
                    epoch: epoch.clone(),
                    mark: i64::try_from(*mark).unwrap_or(i64::MAX),
                };
                (event.clone(), saved)
            })
            .collect()
    }

    /// Whether Redis went back in time for `event`: its field in `marks` below what this process
    /// was answered there, or below a mark the books saved for any process (`saved`: a process
    /// may be gone, and its lost writes with it). Marks of another epoch (a seed, a restore, a
    /// rebuild since) do not count. The event then waits for its repair; true also while an
    /// earlier finding waits for it. One read of Redis.
    pub async fn went_back_below(
        &self,
        event: &EventId,
        saved: &[domain::books::GateMark],
    ) -> Result<bool, GateError> {
        let marks = &self.0.marks;
        let own = marks
            .known(event)
            .map(|(epoch, known)| domain::books::GateMark {
                writer: marks.writer.clone(),
                epoch,
                mark: i64::try_from(known).unwrap_or(i64::MAX),
            });
        if own.is_none() && saved.is_empty() {
            return Ok(marks.is_behind(event));
        }
        let mut conn = self.0.conn.clone();
        let (epoch, fields): (Option<String>, std::collections::HashMap<String, u64>) = self
            .bounded(
                redis::pipe()
                    .cmd("HGET")
                    .arg(meta_key(event))
                    .arg("oid_salt")
                    .cmd("HGETALL")
                    .arg(format!("{{ev:{event}}}:marks"))
                    .query_async(&mut conn),
            )
            .await?;
        let field = |writer: &str| fields.get(writer).copied().unwrap_or(0);
        let lost = own.iter().chain(saved).find(|m| {
            Some(m.epoch.as_str()) == epoch.as_deref()
                && i64::try_from(field(&m.writer)).unwrap_or(i64::MAX) < m.mark
        });
        if let Some(m) = lost {
            tracing::warn!(event = %event, writer = m.writer, known = m.mark, redis = field(&m.writer), "the mark Redis lost: below what its writer was answered");
            self.went_back(event, field(&marks.writer));
        }
        Ok(marks.is_behind(event))
    }

    /// Whether Redis went back in time for `event` since this process last wrote there
    /// ([`Gate::went_back_below`] with no saved marks).
    pub async fn went_back_since(&self, event: &EventId) -> Result<bool, GateError> {
        self.went_back_below(event, &[]).await
    }
}

/// Customers per `restore_customers.lua` call, orders per `restore_orders.lua` call and holds
/// per `restore_holds.lua` call: a few milliseconds of Redis each.
const RESTORE_CHUNK: usize = 2_000;
const RESTORE_ORDERS_CHUNK: usize = 500;
const RESTORE_HOLDS_CHUNK: usize = 500;

/// How long `event_of` trusts its copy of the seeded events before reading them again.
const EVENTS_TTL: Duration = Duration::from_secs(1);

/// `{ev:EVENT}:meta`: the key every script is routed by.
fn meta_key(event: &EventId) -> String {
    format!("{{ev:{event}}}:meta")
}

/// `{ev:EVENT}:order:ID`: an order's hash (the read model).
fn order_key(event: &EventId, order: OrderId) -> String {
    format!("{{ev:{event}}}:order:{order}")
}

const EVENTS_KEY: &str = "events";

/// One script call within `timeout`, timed and counted as `op` (`gate_command_duration_seconds`,
/// `gate_errors_total`).
async fn timed(
    op: &'static str,
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<Value>>,
) -> Result<Value, GateError> {
    let start = std::time::Instant::now();
    let result = tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| GateError::Unavailable("timed out"))
        .and_then(|r| r.map_err(GateError::from));
    metrics::histogram!("gate_command_duration_seconds", "op" => op)
        .record(start.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!("gate_errors_total", "op" => op).increment(1);
    }
    result
}

impl Gate {
    /// Connects (lazily reconnecting later) with a per-command deadline.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, GateError> {
        Self::connect_with_ca(url, timeout, None).await
    }

    /// Like [`Gate::connect`]; for a `rediss://` URL, `root_ca_pem` is the CA to trust instead
    /// of the system's (Memorystore signs its server certificate with its own CA).
    pub async fn connect_with_ca(
        url: &str,
        timeout: Duration,
        root_ca_pem: Option<&str>,
    ) -> Result<Self, GateError> {
        let client = match root_ca_pem {
            Some(pem) => Self::instance_client(url, pem, timeout).await?,
            None => redis::Client::open(url).map_err(GateError::from)?,
        };
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = tokio::time::timeout(
            timeout * 4,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| GateError::Unavailable("connect timed out"))??;
        Ok(Self(std::sync::Arc::new(Inner {
            finalized: std::sync::Arc::new(finalized::Listener::new(client)),
            reservations: batch::spawn(
                conn.clone(),
                script(include_str!("lua/reserve.lua")),
                timeout,
            ),
            events: std::sync::Mutex::default(),
            marks: Marks::new(),
            conn,
            timeout,
            scripts: Scripts {
                pay_begin: script(include_str!("lua/pay_begin.lua")),
                pay_abort: script(include_str!("lua/pay_abort.lua")),
                pay_approved: script(include_str!("lua/pay_approved.lua")),
                published: script(include_str!("lua/published.lua")),
                outbox_claim: script(include_str!("lua/outbox_claim.lua")),
                cancel: script(include_str!("lua/cancel.lua")),
                finalize: script(include_str!("lua/finalize.lua")),
                refresh: script(include_str!("lua/refresh.lua")),
                seed: script(include_str!("lua/seed.lua")),
                restore: script(include_str!("lua/restore.lua")),
                restore_customers: script(include_str!("lua/restore_customers.lua")),
                restore_orders: script(include_str!("lua/restore_orders.lua")),
                restore_holds: script(include_str!("lua/restore_holds.lua")),
                rebuild: script(include_str!("lua/rebuild.lua")),
                raise_marks: script(include_str!("lua/raise_marks.lua")),
                room: script(include_str!("lua/room.lua")),
            },
        })))
    }

    /// A client for a `rediss://` server whose certificate comes from the instance's own CA
    /// `pem` (Memorystore): the server is first checked by a handshake under the name rule of
    /// [`tls`]; the client's connections then verify the chain against `pem` only, with its
    /// name check off (it would refuse Memorystore's common-name-only certificate).
    async fn instance_client(
        url: &str,
        pem: &str,
        timeout: Duration,
    ) -> Result<redis::Client, GateError> {
        use redis::{ConnectionAddr, IntoConnectionInfo};
        let client = redis::Client::build_with_tls(
            url,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(pem.as_bytes().to_vec()),
            },
        )?;
        let info = client.get_connection_info().clone();
        let mut addr = info.addr().clone();
        let ConnectionAddr::TcpTls { host, port, .. } = &addr else {
            return Err(GateError::Unavailable(
                "REDIS_CA_CERT is set but REDIS_URL is not rediss://",
            ));
        };
        tls::check_server(host, *port, pem, timeout * 2)
            .await
            .map_err(GateError::Tls)?;
        addr.set_danger_accept_invalid_hostnames(true);
        Ok(redis::Client::open(
            info.set_addr(addr).into_connection_info()?,
        )?)
    }

    /// Awaits one Redis call within the per-command deadline.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, GateError> {
        tokio::time::timeout(self.0.timeout, call)
            .await
            .map_err(|_| GateError::Unavailable("timed out"))?
            .map_err(GateError::from)
    }

    /// A clone of the connection for commands outside the scripts.
    pub fn connection(&self) -> ConnectionManager {
        self.0.conn.clone()
    }

    async fn run(
        &self,
        op: &'static str,
        script: &Script,
        event: &EventId,
        args: &[&str],
    ) -> Result<Value, GateError> {
        let mut conn = self.0.conn.clone();
        let mut inv = script.key(meta_key(event));
        for a in args {
            inv.arg(*a);
        }
        timed(op, self.0.timeout, inv.invoke_async::<Value>(&mut conn)).await
    }

    /// Is Redis answering?
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn ping(&self) -> Result<(), GateError> {
        let mut conn = self.0.conn.clone();
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await?;
        Ok(())
    }

    /// Writes the event and its stock once (re-running is a no-op). `Err` when the event is
    /// already live in Redis with a different catalog.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn seed(&self, event: &Event) -> Result<bool, GateError> {
        let salt = [uuid::Uuid::new_v4().simple().to_string()];
        let args =
            catalog_args(event, &salt, |_| None).map_err(|e| GateError::malformed("seed", e))?;
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = self
            .run("seed", &self.0.scripts.seed, &event.id, &refs)
            .await?;
        let mut conn = self.0.conn.clone();
        let _: () = conn.sadd(EVENTS_KEY, event.id.as_str()).await?;
        match text(&reply).as_deref() {
            Some("seeded") => Ok(true),
            Some("unchanged") => Ok(false),
            Some("conflict") => Err(GateError::CatalogConflict(event.id.clone())),
            other => Err(GateError::Protocol(format!("seed: {other:?}"))),
        }
    }

    /// One pass of rebuilding an event the gate lost, or holds behind the books, from the
    /// database's books: `sold` per ticket type, and in the first pass (`books`) the decided
    /// orders and the confirmed quantity per customer. Writes only an absent event or one
    /// being restored (paused); `resume` reopens it. See `recovery`.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn restore(
        &self,
        event: &Event,
        sold: &BTreeMap<String, i64>,
        books: Option<Books<'_>>,
        resume: bool,
    ) -> Result<Restore, GateError> {
        // The stock first (pausing the event), then the orders, the holds the books do not
        // know and the customers in chunks, each one short call (Redis runs one script at a
        // time: one call for a big sale's customers held it for hundreds of milliseconds), and
        // the reopening only once they are all written.
        let Some(books) = books else {
            return self.restore_stock(event, sold, resume).await;
        };
        if self.restore_stock(event, sold, false).await? == Restore::Live {
            return Ok(Restore::Live);
        }
        for chunk in books.orders.chunks(RESTORE_ORDERS_CHUNK) {
            let mut args = Vec::with_capacity(chunk.len() * 7);
            for o in chunk {
                args.extend([
                    o.order_id.to_string(),
                    o.status.as_str().to_owned(),
                    o.amount_cents.to_string(),
                    o.ticket_type.to_string(),
                    o.quantity.to_string(),
                    o.email.clone(),
                    serde_json::to_string(&o.tickets)
                        .map_err(|e| GateError::malformed("restore_orders", e))?,
                ]);
            }
            if self
                .restore_call(&self.0.scripts.restore_orders, event, &args)
                .await?
                == Restore::Live
            {
                return Ok(Restore::Live);
            }
        }
        // Holds left from an older state (the books decided the others just now).
        loop {
            let limit = [RESTORE_HOLDS_CHUNK.to_string()];
            let refs: Vec<&str> = limit.iter().map(String::as_str).collect();
            let left = self
                .run("restore", &self.0.scripts.restore_holds, &event.id, &refs)
                .await?;
            match left {
                Value::Int(-1) => return Ok(Restore::Live),
                Value::Int(0) => break,
                Value::Int(_) => {}
                other => return Err(GateError::Protocol(format!("restore_holds: {other:?}"))),
            }
        }
        for chunk in books.customers.chunks(RESTORE_CHUNK) {
            let mut args = Vec::with_capacity(chunk.len() * 3);
            for c in chunk {
                args.extend([
                    c.ticket_type.to_string(),
                    c.email.clone(),
                    c.quantity.to_string(),
                ]);
            }
            if self
                .restore_call(&self.0.scripts.restore_customers, event, &args)
                .await?
                == Restore::Live
            {
                return Ok(Restore::Live);
            }
        }
        if resume {
            self.restore_stock(event, sold, true).await
        } else {
            Ok(Restore::Restoring)
        }
    }

    /// One chunk of a restore (`restore_orders.lua`, `restore_customers.lua`).
    async fn restore_call(
        &self,
        script: &Script,
        event: &Event,
        args: &[String],
    ) -> Result<Restore, GateError> {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = self.run("restore", script, &event.id, &refs).await?;
        Ok(match text(&reply).as_deref() {
            Some("live") => Restore::Live,
            _ => Restore::Restoring,
        })
    }

    /// Tickets per ticket type that Redis holds as sold or being paid (`confirming`: paid, the
    /// books' outcome not yet mirrored). The watcher compares them with the books' sold: a
    /// ticket still `confirming` is off sale and its order is finalized by a redelivery or the
    /// relay's republish, so only a ticket Redis lost (back on sale, its order gone) shows it
    /// went back in time.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn sold_or_paying(&self, event: &Event) -> Result<BTreeMap<String, i64>, GateError> {
        let mut pipe = redis::pipe();
        for t in &event.ticket_types {
            pipe.cmd("HMGET")
                .arg(format!("{{ev:{}}}:tt:{}", event.id, t.id))
                .arg("sold")
                .arg("confirming");
        }
        let mut conn = self.0.conn.clone();
        let counts: Vec<(Option<i64>, Option<i64>)> =
            self.bounded(pipe.query_async(&mut conn)).await?;
        Ok(event
            .ticket_types
            .iter()
            .zip(counts)
            .map(|(t, (sold, paying))| (t.id.to_string(), sold.unwrap_or(0) + paying.unwrap_or(0)))
            .collect())
    }

    /// Pauses a live event whose state in Redis is behind the books (rolled back to an older
    /// snapshot) so that a restore rebuilds it (`recovery::watch`). False when the
    /// event is absent (the restore of a lost event takes it from there).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn rebuild(&self, event: &EventId) -> Result<bool, GateError> {
        let salt = uuid::Uuid::new_v4().simple().to_string();
        let reply = self
            .run("restore", &self.0.scripts.rebuild, event, &[salt.as_str()])
            .await?;
        Ok(text(&reply).as_deref() == Some("restoring"))
    }

    /// One-off (with `upgrade_orders`): gives an event seeded before salts existed its order-id
    /// salt, which reservations then need (until then they answer paused). `true` when it had
    /// none; safe to re-run.
    pub async fn upgrade_salt(&self, event: &EventId) -> Result<bool, GateError> {
        let mut conn = self.0.conn.clone();
        let salt = uuid::Uuid::new_v4().simple().to_string();
        let added: bool = self
            .bounded(
                redis::cmd("HSETNX")
                    .arg(format!("{{ev:{}}}:meta", event.as_str()))
                    .arg("oid_salt")
                    .arg(salt)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(added)
    }

    /// Rewrites the event's orders still in a layout from before `r` (ADR 32) as `r`; returns
    /// how many. A one-off for `ops gate-upgrade` (issue 20), run before code that reads only
    /// `r` is deployed; delete it once every environment has run it.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn upgrade_orders(&self, event: &EventId) -> Result<u64, GateError> {
        let upgrade = script(include_str!("lua/upgrade_orders.lua"));
        let prefix = format!("{{ev:{}}}:order:", event.as_str());
        let mut conn = self.0.conn.clone();
        let mut cursor = 0u64;
        let mut upgraded = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = self
                .bounded(
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(format!("{prefix}*"))
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn),
                )
                .await?;
            let ids: Vec<&str> = keys
                .iter()
                .filter_map(|k| k.strip_prefix(&prefix))
                .collect();
            if !ids.is_empty() {
                upgraded += match self.run("upgrade", &upgrade, event, &ids).await? {
                    Value::Int(n) => n as u64,
                    other => return Err(GateError::Protocol(format!("upgrade: {other:?}"))),
                };
            }
            if next == 0 {
                return Ok(upgraded);
            }
            cursor = next;
        }
    }

    /// One `restore.lua` pass: the catalog and the stock from the books, paused, or reopened.
    async fn restore_stock(
        &self,
        event: &Event,
        sold: &BTreeMap<String, i64>,
        resume: bool,
    ) -> Result<Restore, GateError> {
        let header = [
            if resume { "1" } else { "0" }.to_owned(),
            event.ticket_types.len().to_string(),
            uuid::Uuid::new_v4().simple().to_string(),
        ];
        let args = catalog_args(event, &header, |t| {
            Some(sold.get(t.id.as_str()).copied().unwrap_or(0).to_string())
        })
        .map_err(|e| GateError::malformed("restore", e))?;
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let reply = self
            .run("restore", &self.0.scripts.restore, &event.id, &refs)
            .await?;
        let outcome = match text(&reply).as_deref() {
            Some("live") => return Ok(Restore::Live),
            Some("restoring") => Restore::Restoring,
            Some("resumed") => Restore::Resumed,
            other => return Err(GateError::Protocol(format!("restore: {other:?}"))),
        };
        let mut conn = self.0.conn.clone();
        self.bounded(conn.sadd::<_, _, ()>(EVENTS_KEY, event.id.as_str()))
            .await?;
        Ok(outcome)
    }

    /// Whether the gate holds the event: absent after Redis restarted empty, restoring while
    /// [`Gate::restore`] rebuilds it.
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn presence(&self, event: &EventId) -> Result<Presence, GateError> {
        let mut conn = self.0.conn.clone();
        let (catalog, restoring): (Option<String>, Option<String>) = self
            .bounded(
                redis::cmd("HMGET")
                    .arg(meta_key(event))
                    .arg("tt_ids")
                    .arg("restoring")
                    .query_async(&mut conn),
            )
            .await?;
        Ok(match (catalog, restoring) {
            (None, _) => Presence::Absent,
            (Some(_), Some(_)) => Presence::Restoring,
            (Some(_), None) => Presence::Live,
        })
    }

    /// Removes every key of the event (tests and `ops seed --reset`; never during a sale).
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn reset(&self, event: &EventId) -> Result<(), GateError> {
        let mut conn = self.0.conn.clone();
        let pattern = format!("{{ev:{event}}}:*");
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            if !keys.is_empty() {
                let _: () = conn.del(keys).await?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let _: () = conn.srem(EVENTS_KEY, event.as_str()).await?;
        Ok(())
    }

    /// The seeded events as last read, if at most [`EVENTS_TTL`] old.
    fn cached_events(&self) -> Option<Vec<EventId>> {
        self.0
            .events
            .lock()
            .expect("events lock")
            .as_ref()
            .filter(|(at, _)| at.elapsed() < EVENTS_TTL)
            .map(|(_, evs)| evs.clone())
    }

    /// Reads the seeded events again (and keeps the copy); returns those not in `cached`.
    async fn events_since(&self, cached: Option<&[EventId]>) -> Result<Vec<EventId>, GateError> {
        let fresh = self.events().await?;
        *self.0.events.lock().expect("events lock") =
            Some((std::time::Instant::now(), fresh.clone()));
        Ok(match cached {
            Some(c) => fresh.into_iter().filter(|e| !c.contains(e)).collect(),
            None => fresh,
        })
    }

    /// The order's view in the first of `events` that holds it, and Redis' clock.
    async fn read_in(
        &self,
        order: OrderId,
        events: &[EventId],
    ) -> Result<Option<(OrderView, DateTime<Utc>)>, GateError> {
        if events.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for e in events {
            pipe.hgetall(order_key(e, order));
        }
        let mut conn = self.0.conn.clone();
        let (time, hashes): ((i64, i64), Vec<std::collections::HashMap<String, String>>) = {
            let replies: Vec<Value> = self.bounded(pipe.query_async(&mut conn)).await?;
            let bad = |e: redis::ParsingError| GateError::malformed("orders", e);
            let mut replies = replies.into_iter();
            let time =
                redis::from_redis_value(replies.next().unwrap_or(Value::Nil)).map_err(bad)?;
            let hashes = replies
                .map(|v| redis::from_redis_value(v).map_err(bad))
                .collect::<Result<_, _>>()?;
            (time, hashes)
        };
        let now = Utc
            .timestamp_opt(time.0, u32::try_from(time.1 * 1000).unwrap_or(0))
            .single()
            .ok_or_else(|| GateError::Protocol(format!("TIME {time:?}")))?;
        for (e, h) in events.iter().zip(hashes) {
            if let Some(view) = order_view(e, order, &h)? {
                return Ok(Some((view, now)));
            }
        }
        Ok(None)
    }

    /// The first of `events` that holds `order`.
    async fn probe(
        &self,
        order: OrderId,
        events: &[EventId],
    ) -> Result<Option<EventId>, GateError> {
        if events.is_empty() {
            return Ok(None);
        }
        let mut pipe = redis::pipe();
        for e in events {
            pipe.exists(order_key(e, order));
        }
        let mut conn = self.0.conn.clone();
        let found: Vec<bool> = self.bounded(pipe.query_async(&mut conn)).await?;
        Ok(events
            .iter()
            .zip(found)
            .find_map(|(e, f)| f.then(|| e.clone())))
    }

    /// Orders due in the outbox more than `older_than` ago by Redis' clock (the clock the
    /// outbox scores are written with): paid but not known to be published, or published long
    /// enough ago and still not persisted. What the relay claims (`claim_outbox`), read without
    /// claiming: for tests (feature `testing`).
    #[cfg(feature = "testing")]
    #[tracing::instrument(level = "debug", skip_all)]
    pub async fn outbox(
        &self,
        event: &EventId,
        older_than: Duration,
        limit: usize,
    ) -> Result<Vec<OrderId>, GateError> {
        let mut conn = self.0.conn.clone();
        let key = format!("{{ev:{event}}}:outbox");
        let (secs, micros): (i64, i64) = self
            .bounded(redis::cmd("TIME").query_async(&mut conn))
            .await?;
        let cutoff = secs * 1000 + micros / 1000 - older_than.as_millis() as i64;
        let ids: Vec<String> = self
            .bounded(
                redis::cmd("ZRANGE")
                    .arg(&key)
                    .arg("-inf")
                    .arg(cutoff)
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(ids.iter().filter_map(|s| OrderId::parse(s).ok()).collect())
    }
}

#[async_trait]
impl ReadModel for Gate {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn events(&self) -> Result<Vec<EventId>, GateError> {
        let mut conn = self.0.conn.clone();
        let ids: Vec<String> = self.bounded(conn.smembers(EVENTS_KEY)).await?;
        Ok(ids.iter().filter_map(|s| EventId::parse(s).ok()).collect())
    }

    /// An order lives in its event's slot, so each seeded event is asked (one pipelined call:
    /// a shop sells a handful of events at a time), from a copy of the list at most
    /// [`EVENTS_TTL`] old; an order not found there is looked for again in events seeded since.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn event_of(&self, order: OrderId) -> Result<Option<EventId>, GateError> {
        let cached = self.cached_events();
        if let Some(evs) = &cached
            && let Some(found) = self.probe(order, evs).await?
        {
            return Ok(Some(found));
        }
        let unseen = self.events_since(cached.as_deref()).await?;
        self.probe(order, &unseen).await
    }

    /// The order's hash read in each seeded event in one pipelined call with Redis' `TIME` (one
    /// round trip where `event_of` then `order` take two), as `event_of` looks.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn find_order(
        &self,
        order: OrderId,
    ) -> Result<Option<(OrderView, DateTime<Utc>)>, GateError> {
        let cached = self.cached_events();
        if let Some(evs) = &cached
            && let Some(found) = self.read_in(order, evs).await?
        {
            return Ok(Some(found));
        }
        let unseen = self.events_since(cached.as_deref()).await?;
        self.read_in(order, &unseen).await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn order(&self, event: &EventId, order: OrderId) -> Result<Option<OrderView>, GateError> {
        let mut conn = self.0.conn.clone();
        let h: std::collections::HashMap<String, String> =
            self.bounded(conn.hgetall(order_key(event, order))).await?;
        order_view(event, order, &h)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn refresh(&self, event: &EventId) -> Result<Option<EventSnapshot>, GateError> {
        let reply = self
            .run("refresh", &self.0.scripts.refresh, event, &[])
            .await?;
        wire::snapshot(reply)
    }
}

#[async_trait]
impl Admission for Gate {
    /// Decided in a batch with the reservations that arrive at the same time (`batch`); the
    /// rules are checked inside the same script.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn reserve(
        &self,
        event: &EventId,
        ticket_type: &TicketTypeId,
        quantity: Quantity,
        email: &Email,
        key: &IdempotencyKey,
        rules: &AdmissionRules,
    ) -> Result<ReserveOutcome, GateError> {
        let (interval_ms, burst) = rules
            .per_email
            .filter(|p| p.enabled())
            .map_or((0, 1), |p| (p.interval_ms(), p.burst.max(1)));
        let client = rules.client.as_deref().unwrap_or_default();
        let batch_rules = batch::Rules {
            interval_ms,
            burst,
            holds_per_client: if client.is_empty() {
                0
            } else {
                rules.holds_per_client
            },
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let pending = batch::Pending {
            event: event.clone(),
            rules: batch_rules,
            args: [
                ticket_type.as_str().to_owned(),
                quantity.get().to_string(),
                email.as_str().to_owned(),
                key.as_str().to_owned(),
                client.to_owned(),
                rules.admitted.map(|p| p.to_string()).unwrap_or_default(),
            ],
            reply,
            since: std::time::Instant::now(),
        };
        let gone = || GateError::Unavailable("the reservation queue stopped");
        // A full queue means Redis is not keeping up: answer busy now rather than queue the
        // fan behind thousands (the queue holds a few calls' worth).
        self.0.reservations.try_send(pending).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => {
                GateError::Unavailable("the reservation queue is full")
            }
            tokio::sync::mpsc::error::TrySendError::Closed(_) => gone(),
        })?;
        let (order_id, line) = answer.await.map_err(|_| gone())??;
        wire::reserve_outcome(order_id, &line)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn cancel(
        &self,
        event: &EventId,
        order: OrderId,
        client: Option<&str>,
    ) -> Result<Option<(OrderStatus, bool)>, GateError> {
        let reply = self
            .run(
                "cancel",
                &self.0.scripts.cancel,
                event,
                &[&order.to_string(), client.unwrap_or_default()],
            )
            .await?;
        wire::cancel(reply)
    }
}

#[async_trait]
impl PaymentFlow for Gate {
    fn finalized(&self, order: OrderId) -> Finalized {
        Box::pin(self.0.finalized.wait(order))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn pay_begin(
        &self,
        event: &EventId,
        order: OrderId,
        token: &str,
        give_up: Option<Duration>,
    ) -> Result<PayBegin, GateError> {
        let give_up_ms = give_up.map_or(0, |d| d.as_millis()).to_string();
        // Used only if this call starts an attempt (ADR 52).
        let attempt = PaymentAttempt::new();
        let reply = self
            .run(
                "pay_begin",
                &self.0.scripts.pay_begin,
                event,
                &[&order.to_string(), token, &give_up_ms, attempt.as_str()],
            )
            .await?;
        wire::pay_begin(reply)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn pay_abort(
        &self,
        event: &EventId,
        order: OrderId,
        attempt: &PaymentAttempt,
    ) -> Result<Option<OrderStatus>, GateError> {
        let reply = self
            .run(
                "pay_abort",
                &self.0.scripts.pay_abort,
                event,
                &[&order.to_string(), attempt.as_str()],
            )
            .await?;
        wire::pay_abort(reply)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn pay_approved(
        &self,
        event: &EventId,
        order: OrderId,
        attempt: &PaymentAttempt,
        payment_ref: &str,
        paid_at: DateTime<Utc>,
    ) -> Result<Approval, GateError> {
        let reply = self
            .run(
                "pay_approved",
                &self.0.scripts.pay_approved,
                event,
                &[
                    &order.to_string(),
                    attempt.as_str(),
                    payment_ref,
                    &paid_at.to_rfc3339(),
                ],
            )
            .await?;
        wire::approval(reply)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn mark_published(
        &self,
        event: &EventId,
        order: OrderId,
        redeliver_after: Duration,
    ) -> Result<(), GateError> {
        self.run(
            "published",
            &self.0.scripts.published,
            event,
            &[&order.to_string(), &redeliver_after.as_millis().to_string()],
        )
        .await?;
        Ok(())
    }

    /// In one script call. An order the gate lost (Redis restarted empty) gets its read model
    /// back; if the event has been restored, a first persist (not a redelivery of an order the
    /// database already held, which the restore counted) is added to the stock, once.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn finalize_all(
        &self,
        event: &EventId,
        orders: &[(&domain::OrderMessage, &domain::books::Persisted)],
    ) -> Result<Vec<bool>, GateError> {
        debug_assert!(orders.iter().all(|(msg, _)| &msg.event == event));
        let marks = &self.0.marks;
        if marks.is_behind(event) {
            return Err(GateError::WentBack(event.clone()));
        }
        let (epoch, known) = marks.known(event).unwrap_or_default();
        let known = if epoch.is_empty() {
            String::new()
        } else {
            known.to_string()
        };
        let w = match self.finalize_call(event, &known, &epoch, orders).await? {
            wire::Finalized::Done(w, ..) => w,
            wire::Finalized::WentBack(mark) => {
                self.went_back(event, mark);
                return Err(GateError::WentBack(event.clone()));
            }
            wire::Finalized::Restoring => {
                return Err(GateError::Protocol("finalize: 'restoring' unasked".into()));
            }
        };
        if w.iter().any(|r| r == "behind") {
            metrics::counter!("gate_orders_behind_total")
                .increment(w.iter().filter(|r| *r == "behind").count() as u64);
            tracing::warn!(
                event = %event,
                "Redis held older states of paid orders than the books (rolled back?); mirrored the books"
            );
        }
        Ok(w.iter().map(|r| r != "already").collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn repair(
        &self,
        event: &EventId,
        orders: &[(&domain::OrderMessage, &domain::books::Persisted)],
    ) -> Result<bool, GateError> {
        let marks = &self.0.marks;
        let mut changed = 0;
        for chunk in orders.chunks(RESTORE_ORDERS_CHUNK) {
            match self.finalize_call(event, "repair", "", chunk).await? {
                wire::Finalized::Done(w, ..) => {
                    changed += w.iter().filter(|r| *r != "already").count();
                }
                wire::Finalized::Restoring => {
                    marks.repaired(event);
                    return Ok(false);
                }
                wire::Finalized::WentBack(_) => {
                    return Err(GateError::Protocol(
                        "finalize: 'went_back' in a repair".into(),
                    ));
                }
            }
        }
        marks.repaired(event);
        metrics::counter!("gate_orders_repaired_total").increment(changed as u64);
        tracing::warn!(event = %event, orders = orders.len(), changed, "repaired the gate from the books after Redis went back in time");
        Ok(true)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn raise_marks(
        &self,
        event: &EventId,
        saved: &[domain::books::GateMark],
    ) -> Result<(), GateError> {
        let mut by_epoch: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
        for m in saved {
            let args = by_epoch.entry(&m.epoch).or_default();
            args.extend([m.writer.clone(), m.mark.to_string()]);
        }
        for (epoch, pairs) in by_epoch {
            let mut args = vec![epoch];
            args.extend(pairs.iter().map(String::as_str));
            self.run("raise_marks", &self.0.scripts.raise_marks, event, &args)
                .await?;
        }
        Ok(())
    }

    /// Due by Redis' clock, the clock the outbox scores are written with.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn claim_outbox(
        &self,
        event: &EventId,
        older_than: Duration,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OrderId>, GateError> {
        let reply = self
            .run(
                "outbox_claim",
                &self.0.scripts.outbox_claim,
                event,
                &[
                    &older_than.as_millis().to_string(),
                    &limit.to_string(),
                    &lease.as_millis().to_string(),
                ],
            )
            .await?;
        wire::order_ids(reply)
    }
}
