//! Helpers for the integration tests: where the engines started by `scripts/test` are, and
//! a freshly seeded event per test (its own id, so tests never share state).

#[cfg(feature = "engines")]
mod engines;
pub mod memory;
pub mod rollback;
pub mod router;

#[cfg(feature = "engines")]
pub use engines::{spanner_repo, spanner_unreachable_repo};

use chrono::{Duration, Utc};

use domain::{
    Email, Event, EventId, IdempotencyKey, OrderCharge, OrderId, OrderMessage, Quantity,
    TicketTypeId,
};
use gate::{Admission, AdmissionRules, Approval, Gate, PayBegin, PaymentFlow, ReserveOutcome};
use store::{CustomerTotal, Inventory, OrderRepository, Outcome, RepoError, Seeded, StoredOrder};

/// The engines `scripts/test` started.
#[derive(Debug, Clone)]
pub struct TestEnv {
    pub database_url: String,
    pub redis_url: String,
    pub pubsub_host: String,
    pub project: String,
}

pub(crate) fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests with scripts/test, which starts the engines")
    })
}

impl TestEnv {
    /// Reads `TEST_*` variables; panics with a pointer to `scripts/test` when missing.
    pub fn get() -> Self {
        telemetry::init_for_tests();
        Self {
            database_url: var("TEST_DATABASE_URL"),
            redis_url: var("TEST_REDIS_URL"),
            pubsub_host: var("TEST_PUBSUB_EMULATOR_HOST"),
            project: var("TEST_PROJECT"),
        }
    }

    /// A connected gate.
    pub async fn gate(&self) -> Gate {
        Gate::connect(&self.redis_url, std::time::Duration::from_secs(2))
            .await
            .expect("redis")
    }

    /// The audit against `repo` (e.g. a Spanner repository) and this Redis.
    pub async fn assert_audit_clean_in(&self, repo: &dyn OrderRepository, event: &EventId) {
        let report = recovery::audit::audit(&self.gate().await, repo, event)
            .await
            .expect("audit");
        assert!(
            report.violations.is_empty() && report.quiet,
            "{}",
            report.render()
        );
    }

    /// Seeds a new event with a unique id in Redis only (for the read side, which reads
    /// nothing else).
    pub async fn seed_gate(&self, capacity: u32, opens_in_secs: i64, hold_seconds: u32) -> Event {
        let event = new_event(capacity, opens_in_secs, hold_seconds);
        self.gate().await.seed(&event).await.expect("seed redis");
        event
    }

    /// Seeds a new event with a unique id in `repo` and Redis.
    pub async fn seed_in(
        &self,
        repo: &dyn OrderRepository,
        capacity: u32,
        opens_in_secs: i64,
        hold_seconds: u32,
    ) -> Event {
        let event = new_event(capacity, opens_in_secs, hold_seconds);
        repo.seed(&event).await.expect("seed db");
        self.gate().await.seed(&event).await.expect("seed redis");
        event
    }
}

/// An event with a unique id (seeded nowhere yet).
pub fn new_event(capacity: u32, opens_in_secs: i64, hold_seconds: u32) -> Event {
    let id = EventId::parse(&format!(
        "t-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))
    .expect("slug");
    Event::frequency(
        id,
        capacity,
        Utc::now() + Duration::seconds(opens_in_secs),
        hold_seconds,
    )
}

/// Holds `n` VIP 3-Day passes of `event` for `email` in `gate` under a fresh key and no rules;
/// panics unless they are held.
pub async fn hold(gate: &dyn Admission, event: &EventId, n: i64, email: &str) -> OrderId {
    let outcome = gate
        .reserve(
            event,
            &TicketTypeId::parse("vip-3-day").expect("slug"),
            Quantity::parse(n).expect("a quantity"),
            &Email::parse(email).expect("an e-mail"),
            &IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string()).expect("a key"),
            &AdmissionRules::default(),
        )
        .await
        .expect("the gate answers");
    match outcome {
        ReserveOutcome::Reserved { order_id, .. } => order_id,
        other => panic!("not held: {other:?}"),
    }
}

/// Pays the hold `order` in `gate` as buy does when the provider approves it with
/// `payment_ref`: returns the message buy then publishes. Panics unless the gate records it.
pub async fn pay(
    gate: &dyn PaymentFlow,
    event: &EventId,
    order: OrderId,
    payment_ref: &str,
) -> OrderMessage {
    let begun = gate.pay_begin(event, order, "tok_approve", None).await;
    let Ok(PayBegin::Charge { attempt, .. }) = begun else {
        panic!("not charging: {begun:?}")
    };
    let recorded = gate
        .pay_approved(event, order, &attempt, payment_ref, chrono::Utc::now())
        .await;
    let Ok(Approval::Recorded(a)) = recorded else {
        panic!("not recorded: {recorded:?}")
    };
    OrderMessage {
        order_id: order,
        event: event.clone(),
        ticket_type: a.ticket_type,
        quantity: a.quantity,
        email: a.email,
        amount_cents: a.amount_cents,
        payment_ref: a.payment_ref,
        paid_at: a.paid_at,
        trace: None,
    }
}

/// The books of one ticket type of an event in `repo`.
pub async fn books_in(repo: &dyn OrderRepository, event: &EventId, ticket_type: &str) -> Inventory {
    repo.inventory(event)
        .await
        .expect("inventory")
        .into_iter()
        .find(|i| i.ticket_type.as_str() == ticket_type)
        .expect("ticket type in the database")
}

/// A Redis of a test's own (the real server binary), so the test can crash and restart it.
/// Append-only persistence in a temporary folder: a restart comes back with the data, as a
/// crashed process does (acknowledged writes are in the AOF before the reply).
pub struct OwnRedis {
    child: Option<std::process::Child>,
    port: u16,
    dir: std::path::PathBuf,
    /// `redis://127.0.0.1:PORT`
    pub url: String,
}

impl OwnRedis {
    /// Starts one on a free port.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("own-redis-{port}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut me = Self {
            child: None,
            port,
            dir,
            url: format!("redis://127.0.0.1:{port}"),
        };
        me.restart().await;
        me
    }

    /// Kills the server (SIGKILL, like a crash).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server, deletes its data and starts it again: Redis coming back empty, as
    /// after a failover or restart without persistence.
    pub async fn wipe_and_restart(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).expect("temp dir");
        self.restart().await;
    }

    /// (Re)starts the server on the same port and folder, and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--dir"])
            .arg(&self.dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (installed by scripts/test)");
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("redis-server did not start on port {}", self.port);
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The books as one test sees them: `events` lists only the test's own events (the database
/// is shared by every test running at once), everything else is the repository's. A watcher
/// started by a test then restores and compares only what the test owns.
pub struct Scoped<R> {
    pub repo: R,
    pub events: Vec<EventId>,
}

#[async_trait::async_trait]
impl<R: OrderRepository> OrderRepository for Scoped<R> {
    async fn ping(&self) -> Result<(), RepoError> {
        self.repo.ping().await
    }
    async fn seed(&self, event: &Event) -> Result<Seeded, RepoError> {
        self.repo.seed(event).await
    }
    async fn reset(&self, event: &EventId) -> Result<(), RepoError> {
        self.repo.reset(event).await
    }
    fn atomic_batch(&self) -> usize {
        self.repo.atomic_batch()
    }
    async fn persist_batch(&self, orders: &[OrderMessage]) -> Result<Vec<Outcome>, RepoError> {
        self.repo.persist_batch(orders).await
    }
    async fn order(&self, id: OrderId) -> Result<Option<StoredOrder>, RepoError> {
        self.repo.order(id).await
    }
    async fn inventory(&self, event: &EventId) -> Result<Vec<Inventory>, RepoError> {
        self.repo.inventory(event).await
    }
    async fn events(&self) -> Result<Vec<Event>, RepoError> {
        let mut all = self.repo.events().await?;
        all.retain(|e| self.events.contains(&e.id));
        Ok(all)
    }
    async fn customer_totals(&self, event: &EventId) -> Result<Vec<CustomerTotal>, RepoError> {
        self.repo.customer_totals(event).await
    }
    async fn decided_orders(&self, event: &EventId) -> Result<Vec<StoredOrder>, RepoError> {
        self.repo.decided_orders(event).await
    }
    async fn settle_charges(
        &self,
        charges: &[OrderCharge],
        lease: std::time::Duration,
    ) -> Result<Vec<OrderCharge>, RepoError> {
        self.repo.settle_charges(charges, lease).await
    }
    async fn charges(&self, payment_refs: &[String]) -> Result<Vec<store::LedgerEntry>, RepoError> {
        self.repo.charges(payment_refs).await
    }
    async fn claim_refunds(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<OrderCharge>, RepoError> {
        self.repo.claim_refunds(limit, lease).await
    }
    async fn refund_done(&self, payment_ref: &str) -> Result<(), RepoError> {
        self.repo.refund_done(payment_ref).await
    }
    async fn refunds_outstanding(&self) -> Result<(i64, Option<chrono::DateTime<Utc>>), RepoError> {
        self.repo.refunds_outstanding().await
    }
    async fn save_mark(&self, event: &EventId, mark: &store::GateMark) -> Result<(), RepoError> {
        self.repo.save_mark(event, mark).await
    }
    async fn marks(&self, event: &EventId) -> Result<Vec<store::GateMark>, RepoError> {
        self.repo.marks(event).await
    }
}

/// The key the tests' publishers sign with and their consumers check (ADR 40).
pub fn signing_key() -> domain::signing::MessageKey {
    domain::signing::MessageKey::parse("test-order-signing-key-0123456789abcdef").expect("key")
}

/// Log lines as the services write them, captured for tests.
#[derive(Clone, Default)]
pub struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Lines {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON lines the services would write (tracing-stackdriver) at info and above, captured
/// on this thread while the guard lives.
pub fn capture_logs() -> (Lines, tracing::subscriber::DefaultGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_subscriber::EnvFilter::new("info"))
        .with(tracing_stackdriver::layer().with_writer(move || writer.clone()));
    (lines, tracing::subscriber::set_default(subscriber))
}

impl Lines {
    /// The lines written since the last take, as their raw bytes.
    pub fn take_raw(&self) -> Vec<Vec<u8>> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// The lines written since the last take, each parsed as JSON.
    pub fn take(&self) -> Vec<serde_json::Value> {
        let bytes = std::mem::take(&mut *self.0.lock().unwrap());
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Fails unless `committed` (a path from the workspace root) holds `doc`;
/// with `UPDATE_OPENAPI=1` it writes the file instead.
pub fn assert_openapi_committed(doc: &utoipa::openapi::OpenApi, committed: &str) {
    // The checkout the test runs in, found at run time: a build cache shared between
    // checkouts (CI's) may hold a binary compiled in another, since deleted, folder.
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::current_dir().ok())
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let root = start
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .unwrap_or(&start)
        .to_path_buf();
    let path = root.join(committed);
    let want = format!("{}\n", doc.to_pretty_json().expect("serialises"));
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &want).expect("write the document");
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "{committed} is not the document the code generates; run `UPDATE_OPENAPI=1 cargo nextest run openapi` and commit it"
    );
}

/// Mirrors one order's decision in the gate, as consume-order does for a batch of one: `true`
/// the first time it changes the gate.
pub async fn finalize(
    gate: &dyn gate::PaymentFlow,
    msg: &OrderMessage,
    persisted: &domain::books::Persisted,
) -> Result<bool, gate::GateError> {
    let changed = gate.finalize_all(&msg.event, &[(msg, persisted)]).await?;
    Ok(changed.first().copied().unwrap_or(false))
}
