//! `OrderRepository` on PostgreSQL (tokio-postgres + deadpool), migrated with refinery.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{IsolationLevel, NoTls};
use uuid::Uuid;

use super::{
    CustomerTotal, ForSale, GateMark, Inventory, LedgerEntry, OrderRepository, Outcome, Persisted,
    Refused, RepoError, Seeded, StoredOrder, Verdict, allocate, distinct, new_charges, spread,
    ticket_code,
};
use domain::{Event, EventId, OrderCharge, OrderId, OrderMessage, OrderStatus, TicketTypeId};

/// TLS to PostgreSQL as Cloud SQL serves it (ADR 48): the chain must verify against the
/// instance's server CA bundle (`DATABASE_CA_CERT`, a Terraform output) and nothing else; the
/// name is not checked (libpq's `verify-ca`), because Cloud SQL's per-instance CA issues
/// certificates for that instance alone and does not put its private IP in them.
pub mod tls {
    use std::sync::Arc;

    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{CertificateError, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

    /// The connector for a pool: TLS under [`InstanceCa`].
    pub fn connector(
        ca_pem: &str,
    ) -> Result<tokio_postgres_rustls::MakeRustlsConnect, crate::ConfigError> {
        let verifier = InstanceCa::new(ca_pem)
            .map_err(|e| crate::ConfigError(format!("DATABASE_CA_CERT: {e}")))?;
        let config = rustls::ClientConfig::builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
    }

    /// Accepts a server whose chain verifies against the configured CA bundle, whatever name
    /// it carries.
    #[derive(Debug)]
    pub struct InstanceCa {
        inner: Arc<WebPkiServerVerifier>,
    }

    impl InstanceCa {
        /// Trusts exactly the certificates in `ca_pem` (one or more: Cloud SQL lists the next CA
        /// beside the current one before it rotates).
        pub fn new(ca_pem: &str) -> Result<Self, Error> {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
                roots.add(cert.map_err(|e| Error::General(e.to_string()))?)?;
            }
            if roots.is_empty() {
                return Err(Error::General("no certificate".into()));
            }
            let inner = WebPkiServerVerifier::builder(Arc::new(roots))
                .build()
                .map_err(|e| Error::General(e.to_string()))?;
            Ok(Self { inner })
        }
    }

    impl ServerCertVerifier for InstanceCa {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp_response: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            // webpki checks the chain before the name: a name error means the chain held.
            match self.inner.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ) {
                Err(Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    }
}

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The Postgres repository: a connection pool.
#[derive(Clone)]
pub struct PgRepository {
    pool: Pool,
}

fn classify(e: tokio_postgres::Error) -> RepoError {
    let Some(code) = e.code() else {
        return RepoError::Unavailable(e.into());
    };
    match Sqlstate::of(code.code()) {
        Sqlstate::Contended => RepoError::Contended(e.into()),
        Sqlstate::Permanent => RepoError::Permanent(e.to_string()),
        Sqlstate::Transient => RepoError::Unavailable(e.into()),
        Sqlstate::Other => RepoError::Other(anyhow::Error::new(e)),
    }
}

/// What a server error's SQLSTATE says about trying again.
#[derive(Debug, PartialEq, Eq)]
enum Sqlstate {
    /// Lost a race (serialization failure, deadlock, a concurrent insert of the same key).
    Contended,
    /// This statement can never succeed as it is: a value the database refuses (class 22, data
    /// exception) or a constraint it breaks (class 23).
    Permanent,
    /// The database could not do it now: connection lost (08), out of resources (53), stopped
    /// or cancelled by the operator or a timeout, as in a failover (57), a system error (58),
    /// a lock not available (55).
    Transient,
    /// Anything else (an undefined table before `ops migrate`, say): retried like a transient
    /// one, never taken for a refusal of the data.
    Other,
}

impl Sqlstate {
    fn of(code: &str) -> Self {
        match code {
            "40001" | "40P01" | "23505" => Self::Contended,
            _ => match code.get(..2) {
                Some("22" | "23") => Self::Permanent,
                Some("08" | "53" | "55" | "57" | "58") => Self::Transient,
                _ => Self::Other,
            },
        }
    }
}

/// A transaction at READ COMMITTED, which the reasoning about locks and racing keys in this
/// file assumes (whatever the server's default).
async fn read_committed(
    obj: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, RepoError> {
    obj.build_transaction()
        .isolation_level(IsolationLevel::ReadCommitted)
        .start()
        .await
        .map_err(classify)
}

/// The payment references a query of `refs` answers (its first column).
async fn payment_refs(
    client: &impl deadpool_postgres::GenericClient,
    sql: &str,
    refs: &[&str],
) -> Result<std::collections::HashSet<String>, RepoError> {
    let rows = client.query(sql, &[&refs]).await.map_err(classify)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

fn pool_error(e: deadpool_postgres::PoolError) -> RepoError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        other => RepoError::Unavailable(other.into()),
    }
}

impl PgRepository {
    /// Builds a pool for `url` (connections are opened lazily, with timeouts), in plain text.
    pub fn connect(
        url: &str,
        max_size: usize,
        timeout: Duration,
    ) -> Result<Self, crate::ConfigError> {
        Self::connect_with_ca(url, None, max_size, timeout)
    }

    /// [`PgRepository::connect`]; with `ca_pem`, over TLS whenever the server offers it (the
    /// URL's `sslmode=require` makes it mandatory), the server's chain verified against
    /// `ca_pem` only (see [`tls`]).
    pub fn connect_with_ca(
        url: &str,
        ca_pem: Option<&str>,
        max_size: usize,
        timeout: Duration,
    ) -> Result<Self, crate::ConfigError> {
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e: tokio_postgres::Error| crate::ConfigError(format!("DATABASE_URL: {e}")))?;
        cfg.connect_timeout(timeout);
        cfg.options("-c statement_timeout=10000 -c idle_in_transaction_session_timeout=30000");
        let manager = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let mgr = match ca_pem {
            Some(pem) => Manager::from_config(cfg, tls::connector(pem)?, manager),
            None => Manager::from_config(cfg, NoTls, manager),
        };
        let pool = Pool::builder(mgr)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| crate::ConfigError(format!("DATABASE_URL: the pool: {e}")))?;
        Ok(Self { pool })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), RepoError> {
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        let client: &mut tokio_postgres::Client = &mut obj;
        embedded::migrations::runner()
            .run_async(client)
            .await
            .map_err(|e| RepoError::Other(anyhow::Error::new(e).context("migration failed")))?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn load_tickets(
        client: &tokio_postgres::Client,
        order: Uuid,
    ) -> Result<Vec<String>, RepoError> {
        let rows = client
            .query(
                "SELECT code FROM tickets WHERE order_id = $1 ORDER BY code",
                &[&order],
            )
            .await
            .map_err(classify)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Pool gauges: connections open, in use, and requests waiting for one.
    fn record_pool(&self) {
        let s = self.pool.status();
        metrics::gauge!("db_pool_connections", "state" => "open").set(s.size as f64);
        metrics::gauge!("db_pool_connections", "state" => "in_use")
            .set(s.size.saturating_sub(s.available) as f64);
        metrics::gauge!("db_pool_connections", "state" => "waiting").set(s.waiting as f64);
    }

    /// One transaction for a batch of distinct orders, in a constant number of round trips
    /// whatever its size: lock the ticket types it sells, read which orders the books hold
    /// already and which of the others' charges the ledger holds, decide the rest, write
    /// orders, tickets, charges and counters in one statement.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn persist_distinct(&self, orders: &[&OrderMessage]) -> Result<Vec<Outcome>, RepoError> {
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        self.record_pool();
        let tx = read_committed(&mut obj).await?;
        // Locked in key order, so two batches never wait on each other crosswise. From here on
        // this transaction alone sells these types (another delivery of one of its orders waits
        // here too), so what it reads next is what it decides on.
        let mut types: Vec<(&str, &str)> = orders
            .iter()
            .map(|o| (o.event.as_str(), o.ticket_type.as_str()))
            .collect();
        types.sort_unstable();
        types.dedup();
        let (events, type_ids): (Vec<&str>, Vec<&str>) = types.into_iter().unzip();
        let mut types: HashMap<(String, String), ForSale> = tx
            .query(
                "SELECT tt.event_id, tt.id, tt.capacity - tt.sold, tt.price_cents, e.sale_opens_at
                 FROM ticket_types tt
                 JOIN unnest($1::text[], $2::text[]) AS k(event_id, id) USING (event_id, id)
                 JOIN events e ON e.id = tt.event_id
                 ORDER BY tt.event_id, tt.id FOR UPDATE OF tt",
                &[&events, &type_ids],
            )
            .await
            .map_err(classify)?
            .iter()
            .map(|r| {
                let left = i64::from(r.get::<_, i32>(2));
                let sale = ForSale {
                    left,
                    price_cents: r.get(3),
                    opens_at: r.get(4),
                };
                ((r.get(0), r.get(1)), sale)
            })
            .collect();
        // The orders an earlier delivery persisted, with their tickets.
        let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id.0).collect();
        let mut known: HashMap<Uuid, Persisted> = HashMap::new();
        for r in tx
            .query(
                "SELECT o.id, o.status, t.code, o.payment_ref FROM orders o
                 LEFT JOIN tickets t ON t.order_id = o.id
                 WHERE o.id = ANY($1) ORDER BY o.id, t.code",
                &[&ids],
            )
            .await
            .map_err(classify)?
        {
            let order = known.entry(r.get(0)).or_insert_with(|| Persisted {
                status: OrderStatus::parse(r.get(1)).unwrap_or(OrderStatus::Rejected),
                tickets: vec![],
                duplicate: true,
                payment_ref: r.get(3),
            });
            order.tickets.extend(r.get::<_, Option<String>>(2));
        }
        let fresh: Vec<&OrderMessage> = orders
            .iter()
            .copied()
            .filter(|o| !known.contains_key(&o.order_id.0))
            .collect();
        // A settlement that records one of these charges after this read makes the write below
        // fail on the ledger's key, and the batch is decided again (`persist_batch`).
        let refs: Vec<&str> = fresh.iter().map(|o| o.payment_ref.as_str()).collect();
        let ledger = payment_refs(
            &tx,
            "SELECT payment_ref FROM charges WHERE payment_ref = ANY($1)",
            &refs,
        )
        .await?;
        let decided = allocate(
            &fresh,
            |o| (o.event.to_string(), o.ticket_type.to_string()),
            &mut types,
            &ledger,
        );
        let mut rows = NewRows::default();
        for (o, confirmed) in new_charges(&fresh, &decided, &ledger) {
            rows.charge_refs.push(o.payment_ref.clone());
            rows.charge_orders.push(o.order_id.0);
            rows.charge_amounts.push(o.amount_cents);
            rows.charge_kept.push(confirmed);
        }
        let mut outcomes: HashMap<Uuid, Outcome> = HashMap::with_capacity(fresh.len());
        for (o, decision) in fresh.iter().zip(decided) {
            let outcome = decision.and_then(|confirmed| rows.add(o, confirmed));
            outcomes.insert(o.order_id.0, outcome);
        }
        if !rows.order_ids.is_empty() {
            rows.write(&tx).await?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(orders
            .iter()
            .map(|o| match known.remove(&o.order_id.0) {
                Some(p) => Ok(p),
                None => outcomes
                    .remove(&o.order_id.0)
                    .unwrap_or_else(|| Err(Refused("no decision".into()))),
            })
            .collect())
    }
}

/// The rows a batch adds, column by column (each column one array parameter).
#[derive(Default)]
struct NewRows {
    order_ids: Vec<Uuid>,
    events: Vec<String>,
    ticket_types: Vec<String>,
    quantities: Vec<i32>,
    emails: Vec<String>,
    amounts: Vec<i64>,
    payment_refs: Vec<String>,
    paid_at: Vec<DateTime<Utc>>,
    statuses: Vec<&'static str>,
    codes: Vec<String>,
    code_orders: Vec<Uuid>,
    charge_refs: Vec<String>,
    charge_orders: Vec<Uuid>,
    charge_amounts: Vec<i64>,
    /// Per charge: kept (its order confirmed), or owed back at once.
    charge_kept: Vec<bool>,
    sold: HashMap<(String, String), i32>,
}

impl NewRows {
    /// Adds an order, confirmed (with fresh ticket codes) or rejected; returns its outcome.
    fn add(&mut self, o: &OrderMessage, confirmed: bool) -> Outcome {
        let qty = i32::try_from(o.quantity.get()).map_err(|_| Refused("quantity".into()))?;
        self.order_ids.push(o.order_id.0);
        self.events.push(o.event.to_string());
        self.ticket_types.push(o.ticket_type.to_string());
        self.quantities.push(qty);
        self.emails.push(o.email.as_str().to_owned());
        self.amounts.push(o.amount_cents);
        self.payment_refs.push(o.payment_ref.clone());
        self.paid_at.push(o.paid_at);
        if !confirmed {
            self.statuses.push("rejected");
            return Ok(Persisted {
                status: OrderStatus::Rejected,
                tickets: vec![],
                duplicate: false,
                payment_ref: o.payment_ref.clone(),
            });
        }
        self.statuses.push("confirmed");
        let mut tickets: Vec<String> = (0..qty).map(|_| ticket_code()).collect();
        self.codes.extend(tickets.iter().cloned());
        self.code_orders
            .extend(std::iter::repeat_n(o.order_id.0, tickets.len()));
        *self
            .sold
            .entry((o.event.to_string(), o.ticket_type.to_string()))
            .or_default() += qty;
        tickets.sort();
        Ok(Persisted {
            status: OrderStatus::Confirmed,
            tickets,
            duplicate: false,
            payment_ref: o.payment_ref.clone(),
        })
    }

    /// Orders, tickets, charges, the refunds of rejected orders and counters in one statement.
    /// The counters' CHECK (sold <= capacity) is the database's own refusal to oversell,
    /// whatever the code above decided; the ledger's key refuses a charge settled since it was
    /// read (23505: decided again).
    #[tracing::instrument(level = "debug", skip_all)]
    async fn write(&self, tx: &tokio_postgres::Transaction<'_>) -> Result<(), RepoError> {
        let (types, counts): (Vec<&(String, String)>, Vec<i32>) = self.sold.iter().unzip();
        let (sold_events, sold_types): (Vec<&str>, Vec<&str>) =
            types.iter().map(|(e, t)| (e.as_str(), t.as_str())).unzip();
        tx.execute(
            "WITH new_orders AS (
               INSERT INTO orders (id, event_id, ticket_type_id, quantity, email, amount_cents, payment_ref, paid_at, status)
               SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::int[], $5::text[], $6::bigint[], $7::text[], $8::timestamptz[], $9::text[])
             ), new_tickets AS (
               INSERT INTO tickets (code, order_id) SELECT * FROM unnest($10::text[], $11::uuid[])
             ), new_charges AS (
               INSERT INTO charges (payment_ref, order_id, amount_cents)
               SELECT * FROM unnest($15::text[], $16::uuid[], $17::bigint[])
             ), new_refunds AS (
               INSERT INTO refunds (payment_ref, order_id, amount_cents, attempts, next_at)
               SELECT r, o, a, 1, now() + make_interval(secs => $19)
               FROM unnest($15::text[], $16::uuid[], $17::bigint[], $18::bool[]) AS c(r, o, a, kept)
               WHERE NOT kept
             )
             UPDATE ticket_types tt SET sold = tt.sold + s.n
             FROM unnest($12::text[], $13::text[], $14::int[]) AS s(event_id, id, n)
             WHERE tt.event_id = s.event_id AND tt.id = s.id",
            &[
                &self.order_ids,
                &self.events,
                &self.ticket_types,
                &self.quantities,
                &self.emails,
                &self.amounts,
                &self.payment_refs,
                &self.paid_at,
                &self.statuses,
                &self.codes,
                &self.code_orders,
                &sold_events,
                &sold_types,
                &counts,
                &self.charge_refs,
                &self.charge_orders,
                &self.charge_amounts,
                &self.charge_kept,
                &super::FIRST_REFUND_DUE.as_secs_f64(),
            ],
        )
        .await
        .map_err(classify)?;
        Ok(())
    }
}

#[async_trait]
impl OrderRepository for PgRepository {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn ping(&self) -> Result<(), RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        obj.simple_query("SELECT 1").await.map_err(classify)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn seed(&self, event: &Event) -> Result<Seeded, RepoError> {
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        let tx = obj.transaction().await.map_err(classify)?;
        let catalog = serde_json::to_string(event).map_err(|e| RepoError::Other(e.into()))?;
        let existing = tx
            .query_opt(
                "SELECT catalog FROM events WHERE id = $1 FOR UPDATE",
                &[&event.id.as_str()],
            )
            .await
            .map_err(classify)?;
        if let Some(row) = existing {
            let stored: String = row.get(0);
            return if stored == catalog {
                Ok(Seeded::Unchanged)
            } else {
                Err(RepoError::Permanent(format!(
                    "event {} is already seeded with a different catalog; re-seed with --reset",
                    event.id
                )))
            };
        }
        tx.execute(
            "INSERT INTO events (id, name, venue, sale_opens_at, catalog) VALUES ($1, $2, $3, $4, $5)",
            &[&event.id.as_str(), &event.name, &event.venue, &event.sale_opens_at, &catalog],
        )
        .await
        .map_err(classify)?;
        for t in &event.ticket_types {
            let capacity =
                i32::try_from(t.capacity).map_err(|_| RepoError::Permanent("capacity".into()))?;
            tx.execute(
                "INSERT INTO ticket_types (event_id, id, name, price_cents, capacity, per_customer_limit, hold_seconds)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &event.id.as_str(),
                    &t.id.as_str(),
                    &t.name,
                    &t.price_cents,
                    &capacity,
                    &(t.per_customer_limit as i32),
                    &(t.hold_seconds as i32),
                ],
            )
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(Seeded::Created)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn reset(&self, event: &EventId) -> Result<(), RepoError> {
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        let tx = obj.transaction().await.map_err(classify)?;
        // Ticket types, orders and tickets go with the event (ON DELETE CASCADE).
        tx.execute("DELETE FROM events WHERE id = $1", &[&event.as_str()])
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn persist_batch(&self, orders: &[OrderMessage]) -> Result<Vec<Outcome>, RepoError> {
        let (unique, positions) = distinct(orders);
        // A concurrent delivery that inserted one of these orders first, a charge settled
        // between its read and the write, or a ticket code drawn twice (never in practice),
        // fails the transaction: one more try resolves each.
        let outcomes = match self.persist_distinct(&unique).await {
            Err(RepoError::Contended(_)) | Err(RepoError::Other(_)) => {
                self.persist_distinct(&unique).await?
            }
            other => other?,
        };
        Ok(spread(outcomes, &positions))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn order(&self, id: OrderId) -> Result<Option<StoredOrder>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let Some(r) = obj
            .query_opt(
                "SELECT event_id, ticket_type_id, quantity, email, amount_cents, status, payment_ref, persisted_at
                 FROM orders WHERE id = $1",
                &[&id.0],
            )
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        let parse = |s: String| EventId::parse(&s).map_err(|e| RepoError::Other(e.into()));
        let status: String = r.get(5);
        let persisted_at: DateTime<Utc> = r.get(7);
        Ok(Some(StoredOrder {
            order_id: id,
            event: parse(r.get(0))?,
            ticket_type: TicketTypeId::parse(r.get::<_, &str>(1))
                .map_err(|e| RepoError::Other(e.into()))?,
            quantity: r.get::<_, i32>(2) as u32,
            email: r.get(3),
            amount_cents: r.get(4),
            status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Rejected),
            payment_ref: r.get(6),
            persisted_at,
            tickets: Self::load_tickets(&obj, id.0).await?,
        }))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn inventory(&self, event: &EventId) -> Result<Vec<Inventory>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let rows = obj
            .query(
                "WITH sold AS (
                   SELECT o.ticket_type_id, count(*) AS n FROM tickets t JOIN orders o ON o.id = t.order_id
                   WHERE o.event_id = $1 GROUP BY o.ticket_type_id)
                 SELECT tt.id, tt.capacity::bigint,
                   -- Tickets that exist: the sold rows plus what the counter still holds, so the
                   -- audit's tickets == capacity checks that the counter lost or made none.
                   coalesce(s.n, 0) + tt.capacity - tt.sold,
                   coalesce(s.n, 0),
                   (SELECT coalesce(sum(quantity), 0)::bigint FROM orders o WHERE o.event_id = tt.event_id AND o.ticket_type_id = tt.id AND o.status = 'confirmed'),
                   (SELECT count(*) FROM orders o WHERE o.event_id = tt.event_id AND o.ticket_type_id = tt.id AND o.status = 'confirmed'),
                   (SELECT count(*) FROM orders o WHERE o.event_id = tt.event_id AND o.ticket_type_id = tt.id AND o.status = 'rejected')
                 FROM ticket_types tt LEFT JOIN sold s ON s.ticket_type_id = tt.id
                 WHERE tt.event_id = $1 ORDER BY tt.id",
                &[&event.as_str()],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(Inventory {
                    ticket_type: TicketTypeId::parse(r.get::<_, &str>(0))
                        .map_err(|e| RepoError::Other(e.into()))?,
                    capacity: r.get(1),
                    tickets: r.get(2),
                    sold: r.get(3),
                    confirmed_quantity: r.get(4),
                    confirmed_orders: r.get(5),
                    rejected_orders: r.get(6),
                })
            })
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn events(&self) -> Result<Vec<Event>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let rows = obj
            .query("SELECT catalog FROM events ORDER BY id", &[])
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r.get::<_, &str>(0))
                    .map_err(|e| RepoError::Other(anyhow::Error::new(e).context("stored catalog")))
            })
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn customer_totals(&self, event: &EventId) -> Result<Vec<CustomerTotal>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let rows = obj
            .query(
                "SELECT ticket_type_id, email, sum(quantity)::bigint FROM orders
                 WHERE event_id = $1 AND status = 'confirmed'
                 GROUP BY ticket_type_id, email ORDER BY ticket_type_id, email",
                &[&event.as_str()],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                Ok(CustomerTotal {
                    ticket_type: TicketTypeId::parse(r.get::<_, &str>(0))
                        .map_err(|e| RepoError::Other(e.into()))?,
                    email: r.get(1),
                    quantity: r.get(2),
                })
            })
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn decided_orders(&self, event: &EventId) -> Result<Vec<StoredOrder>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let rows = obj
            .query(
                "SELECT o.id, o.ticket_type_id, o.quantity, o.email, o.amount_cents, o.status,
                   o.payment_ref, o.persisted_at,
                   coalesce(array_agg(t.code ORDER BY t.code) FILTER (WHERE t.code IS NOT NULL), '{}')
                 FROM orders o LEFT JOIN tickets t ON t.order_id = o.id
                 WHERE o.event_id = $1 GROUP BY o.id ORDER BY o.id",
                &[&event.as_str()],
            )
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                let status: &str = r.get(5);
                Ok(StoredOrder {
                    order_id: OrderId(r.get(0)),
                    event: event.clone(),
                    ticket_type: TicketTypeId::parse(r.get::<_, &str>(1))
                        .map_err(|e| RepoError::Other(e.into()))?,
                    quantity: r.get::<_, i32>(2) as u32,
                    email: r.get(3),
                    amount_cents: r.get(4),
                    status: OrderStatus::parse(status).unwrap_or(OrderStatus::Rejected),
                    payment_ref: r.get(6),
                    persisted_at: r.get(7),
                    tickets: r.get(8),
                })
            })
            .collect()
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
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        let tx = read_committed(&mut obj).await?;
        let refs: Vec<&str> = charges.iter().map(|c| c.payment_ref.as_str()).collect();
        let orders: Vec<Uuid> = charges.iter().map(|c| c.order_id.0).collect();
        let amounts: Vec<i64> = charges.iter().map(|c| c.amount_cents).collect();
        // Into the ledger first: a batch deciding one of these charges right now holds its key,
        // so this waits for that batch, and the verdict below reads what it decided.
        tx.execute(
            "INSERT INTO charges (payment_ref, order_id, amount_cents)
             SELECT * FROM unnest($1::text[], $2::uuid[], $3::bigint[])
             ON CONFLICT (payment_ref) DO NOTHING",
            &[&refs, &orders, &amounts],
        )
        .await
        .map_err(classify)?;
        let kept = payment_refs(
            &tx,
            "SELECT c.payment_ref FROM charges c
             JOIN orders o ON o.id = c.order_id AND o.payment_ref = c.payment_ref
             WHERE c.payment_ref = ANY($1) AND o.status = 'confirmed'",
            &refs,
        )
        .await?;
        let owed: Vec<&OrderCharge> = charges
            .iter()
            .filter(|c| !kept.contains(&c.payment_ref))
            .collect();
        let refs: Vec<&str> = owed.iter().map(|c| c.payment_ref.as_str()).collect();
        let orders: Vec<Uuid> = owed.iter().map(|c| c.order_id.0).collect();
        let amounts: Vec<i64> = owed.iter().map(|c| c.amount_cents).collect();
        tx.execute(
            "INSERT INTO refunds (payment_ref, order_id, amount_cents, attempts, next_at)
             SELECT r, o, a, 1, now() + make_interval(secs => $4)
             FROM unnest($1::text[], $2::uuid[], $3::bigint[]) AS t(r, o, a)
             ON CONFLICT (payment_ref) DO NOTHING",
            &[&refs, &orders, &amounts, &lease.as_secs_f64()],
        )
        .await
        .map_err(classify)?;
        let open = payment_refs(
            &tx,
            "SELECT payment_ref FROM refunds WHERE payment_ref = ANY($1) AND refunded_at IS NULL",
            &refs,
        )
        .await?;
        tx.commit().await.map_err(classify)?;
        let mut once = std::collections::HashSet::new();
        Ok(owed
            .into_iter()
            .filter(|c| open.contains(&c.payment_ref) && once.insert(&c.payment_ref))
            .cloned()
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn charges(&self, payment_refs: &[String]) -> Result<Vec<LedgerEntry>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let rows = obj
            .query(
                "SELECT c.payment_ref, c.order_id, c.amount_cents,
                   o.status = 'confirmed' AND o.payment_ref = c.payment_ref,
                   CASE WHEN r.payment_ref IS NOT NULL THEN r.refunded_at IS NOT NULL END
                 FROM charges c
                 LEFT JOIN orders o ON o.id = c.order_id
                 LEFT JOIN refunds r ON r.payment_ref = c.payment_ref
                 WHERE c.payment_ref = ANY($1)",
                &[&payment_refs],
            )
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .map(|r| LedgerEntry {
                charge: OrderCharge {
                    payment_ref: r.get(0),
                    order_id: OrderId(r.get(1)),
                    amount_cents: r.get(2),
                },
                verdict: Verdict::of(
                    r.get::<_, Option<bool>>(3) == Some(true),
                    r.get::<_, Option<bool>>(4),
                ),
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn claim_refunds(
        &self,
        limit: usize,
        lease: std::time::Duration,
    ) -> Result<Vec<OrderCharge>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        // SKIP LOCKED: refunders of other instances take other rows meanwhile.
        let rows = obj
            .query(
                "UPDATE refunds r SET attempts = r.attempts + 1,
                   next_at = now() + least(make_interval(secs => $2 * power(2, least(r.attempts, 16))),
                                           interval '10 minutes')
                 WHERE r.payment_ref IN (
                   SELECT payment_ref FROM refunds
                   WHERE refunded_at IS NULL AND next_at <= now()
                   ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                 RETURNING r.payment_ref, r.order_id, r.amount_cents",
                &[&(limit as i64), &lease.as_secs_f64()],
            )
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .map(|r| OrderCharge {
                payment_ref: r.get(0),
                order_id: OrderId(r.get(1)),
                amount_cents: r.get(2),
            })
            .collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn refund_done(&self, payment_ref: &str) -> Result<(), RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        obj.execute(
            "UPDATE refunds SET refunded_at = now()
             WHERE payment_ref = $1 AND refunded_at IS NULL",
            &[&payment_ref],
        )
        .await
        .map_err(classify)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn refunds_outstanding(&self) -> Result<(i64, Option<DateTime<Utc>>), RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let r = obj
            .query_one(
                "SELECT count(*), min(owed_at) FROM refunds WHERE refunded_at IS NULL",
                &[],
            )
            .await
            .map_err(classify)?;
        Ok((r.get(0), r.get(1)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn save_mark(&self, event: &EventId, mark: &GateMark) -> Result<(), RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        obj.execute(
            "INSERT INTO gate_marks (event_id, writer, epoch, mark) VALUES ($1, $2, $3, $4)
             ON CONFLICT (event_id, writer) DO UPDATE SET
               mark = CASE WHEN gate_marks.epoch = EXCLUDED.epoch
                           THEN greatest(gate_marks.mark, EXCLUDED.mark) ELSE EXCLUDED.mark END,
               epoch = EXCLUDED.epoch, saved_at = now()",
            &[&event.as_str(), &mark.writer, &mark.epoch, &mark.mark],
        )
        .await
        .map_err(classify)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn marks(&self, event: &EventId) -> Result<Vec<GateMark>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let rows = obj
            .query(
                "SELECT writer, epoch, mark FROM gate_marks WHERE event_id = $1",
                &[&event.as_str()],
            )
            .await
            .map_err(classify)?;
        Ok(rows
            .iter()
            .map(|r| GateMark {
                writer: r.get(0),
                epoch: r.get(1),
                mark: r.get(2),
            })
            .collect())
    }
}

#[cfg(test)]
mod sqlstate_tests {
    use super::Sqlstate;

    #[test]
    fn only_a_refused_value_or_constraint_is_permanent() {
        for (code, want) in [
            ("40001", Sqlstate::Contended),
            ("40P01", Sqlstate::Contended),
            ("23505", Sqlstate::Contended),
            ("23503", Sqlstate::Permanent),
            ("23514", Sqlstate::Permanent),
            ("22003", Sqlstate::Permanent),
            // A statement timeout, a failover's admin shutdown, a lost connection, no memory.
            ("57014", Sqlstate::Transient),
            ("57P01", Sqlstate::Transient),
            ("08006", Sqlstate::Transient),
            ("53200", Sqlstate::Transient),
            ("42P01", Sqlstate::Other),
        ] {
            assert_eq!(Sqlstate::of(code), want, "{code}");
        }
    }
}
