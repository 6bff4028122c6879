//! `OrderRepository` on PostgreSQL (tokio-postgres + deadpool), migrated with refinery.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::error::SqlState;
use tokio_postgres::{IsolationLevel, NoTls};
use uuid::Uuid;

use super::{
    CustomerTotal, Inventory, OrderRepository, Persisted, RepoError, Seeded, StoredOrder,
    ticket_code,
};
use crate::domain::{Event, EventId, OrderId, OrderMessage, OrderStatus, TicketTypeId};

mod embedded {
    refinery::embed_migrations!("migrations/postgres");
}

/// The Postgres repository: a connection pool.
#[derive(Clone)]
pub struct PgRepository {
    pool: Pool,
}

fn classify(e: tokio_postgres::Error) -> RepoError {
    match e.code() {
        Some(c) if *c == SqlState::FOREIGN_KEY_VIOLATION || *c == SqlState::CHECK_VIOLATION => {
            RepoError::Permanent(e.to_string())
        }
        Some(c)
            if *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            RepoError::Contended(e.to_string())
        }
        Some(_) => RepoError::Other(anyhow::Error::new(e)),
        None => RepoError::Unavailable(e.to_string()),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> RepoError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => classify(e),
        other => RepoError::Unavailable(other.to_string()),
    }
}

impl PgRepository {
    /// Builds a pool for `url` (connections are opened lazily, with timeouts).
    pub fn connect(url: &str, max_size: usize, timeout: Duration) -> Result<Self, RepoError> {
        let mut cfg: tokio_postgres::Config = url.parse().map_err(|e: tokio_postgres::Error| {
            RepoError::Permanent(format!("DATABASE_URL: {e}"))
        })?;
        cfg.connect_timeout(timeout);
        cfg.options("-c statement_timeout=10000 -c idle_in_transaction_session_timeout=30000");
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(max_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| RepoError::Other(anyhow::anyhow!("pool: {e}")))?;
        Ok(Self { pool })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), RepoError> {
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        let client: &mut tokio_postgres::Client = &mut obj;
        embedded::migrations::runner()
            .run_async(client)
            .await
            .map_err(|e| RepoError::Other(anyhow::anyhow!("migration failed: {e}")))?;
        Ok(())
    }

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

    async fn persist_once(&self, msg: &OrderMessage) -> Result<Persisted, RepoError> {
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        self.record_pool();
        let tx = obj
            .build_transaction()
            .isolation_level(IsolationLevel::ReadCommitted)
            .start()
            .await
            .map_err(classify)?;
        let oid = msg.order_id.0;
        let qty =
            i32::try_from(msg.quantity).map_err(|_| RepoError::Permanent("quantity".into()))?;
        // The order row first: a concurrent delivery of the same message blocks on its
        // primary key here and then sees a conflict, so exactly one of them claims tickets.
        let inserted = tx
            .execute(
                "INSERT INTO orders (id, event_id, ticket_type_id, quantity, email, amount_cents, payment_ref, paid_at, status)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'confirmed') ON CONFLICT (id) DO NOTHING",
                &[
                    &oid,
                    &msg.event.as_str(),
                    &msg.ticket_type.as_str(),
                    &qty,
                    &msg.email,
                    &msg.amount_cents,
                    &msg.payment_ref,
                    &msg.paid_at,
                ],
            )
            .await
            .map_err(classify)?;
        if inserted == 0 {
            let status: String = tx
                .query_one("SELECT status FROM orders WHERE id = $1", &[&oid])
                .await
                .map_err(classify)?
                .get(0);
            let tickets = Self::load_tickets(tx.client(), oid).await?;
            tx.commit().await.map_err(classify)?;
            return Ok(Persisted {
                status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Rejected),
                tickets,
                duplicate: true,
            });
        }
        let free: Vec<Uuid> = tx
            .query(
                "SELECT id FROM tickets WHERE event_id = $1 AND ticket_type_id = $2 AND order_id IS NULL
                 LIMIT $3 FOR UPDATE SKIP LOCKED",
                &[&msg.event.as_str(), &msg.ticket_type.as_str(), &i64::from(qty)],
            )
            .await
            .map_err(classify)?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if free.len() < msg.quantity as usize {
            // Rows locked by in-flight transactions were skipped: only refuse when the
            // committed books agree there is no room, otherwise let Pub/Sub retry.
            let unclaimed: i64 = tx
                .query_one(
                    "SELECT count(*) FROM tickets WHERE event_id = $1 AND ticket_type_id = $2 AND order_id IS NULL",
                    &[&msg.event.as_str(), &msg.ticket_type.as_str()],
                )
                .await
                .map_err(classify)?
                .get(0);
            if unclaimed >= i64::from(qty) {
                tx.rollback().await.map_err(classify)?;
                return Err(RepoError::Contended(format!(
                    "{} of {qty} tickets free but locked by other transactions",
                    free.len()
                )));
            }
            tx.execute(
                "UPDATE orders SET status = 'rejected' WHERE id = $1",
                &[&oid],
            )
            .await
            .map_err(classify)?;
            tx.commit().await.map_err(classify)?;
            return Ok(Persisted {
                status: OrderStatus::Rejected,
                tickets: vec![],
                duplicate: false,
            });
        }
        let mut codes: Vec<String> = free.iter().map(|_| ticket_code()).collect();
        tx.execute(
            "UPDATE tickets SET order_id = $1, code = c.code, claimed_at = now()
             FROM unnest($2::uuid[], $3::text[]) AS c(id, code) WHERE tickets.id = c.id",
            &[&oid, &free, &codes],
        )
        .await
        .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        codes.sort();
        Ok(Persisted {
            status: OrderStatus::Confirmed,
            tickets: codes,
            duplicate: false,
        })
    }
}

#[async_trait]
impl OrderRepository for PgRepository {
    async fn ping(&self) -> Result<(), RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        obj.simple_query("SELECT 1").await.map_err(classify)?;
        Ok(())
    }

    async fn seed(&self, event: &Event) -> Result<Seeded, RepoError> {
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        let tx = obj.transaction().await.map_err(classify)?;
        // Generating a million ticket rows takes longer than a request may.
        tx.batch_execute("SET LOCAL statement_timeout = 0")
            .await
            .map_err(classify)?;
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
            tx.execute(
                "INSERT INTO tickets (id, event_id, ticket_type_id)
                 SELECT gen_random_uuid(), $1, $2 FROM generate_series(1, $3)",
                &[&event.id.as_str(), &t.id.as_str(), &capacity],
            )
            .await
            .map_err(classify)?;
        }
        tx.commit().await.map_err(classify)?;
        Ok(Seeded::Created)
    }

    async fn reset(&self, event: &EventId) -> Result<(), RepoError> {
        let mut obj = self.pool.get().await.map_err(pool_error)?;
        let tx = obj.transaction().await.map_err(classify)?;
        tx.execute(
            "DELETE FROM tickets WHERE event_id = $1",
            &[&event.as_str()],
        )
        .await
        .map_err(classify)?;
        tx.execute("DELETE FROM events WHERE id = $1", &[&event.as_str()])
            .await
            .map_err(classify)?;
        tx.commit().await.map_err(classify)?;
        Ok(())
    }

    async fn persist(&self, msg: &OrderMessage) -> Result<Persisted, RepoError> {
        // A duplicate racing us can surface as a unique violation on a ticket code (never
        // in practice) or a serialization failure: one more try resolves both.
        match self.persist_once(msg).await {
            Err(RepoError::Contended(_)) | Err(RepoError::Other(_)) => self.persist_once(msg).await,
            other => other,
        }
    }

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

    async fn inventory(&self, event: &EventId) -> Result<Vec<Inventory>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let rows = obj
            .query(
                "SELECT tt.id, tt.capacity::bigint,
                   (SELECT count(*) FROM tickets t WHERE t.event_id = tt.event_id AND t.ticket_type_id = tt.id),
                   (SELECT count(*) FROM tickets t WHERE t.event_id = tt.event_id AND t.ticket_type_id = tt.id AND t.order_id IS NOT NULL),
                   (SELECT coalesce(sum(quantity), 0)::bigint FROM orders o WHERE o.event_id = tt.event_id AND o.ticket_type_id = tt.id AND o.status = 'confirmed'),
                   (SELECT count(*) FROM orders o WHERE o.event_id = tt.event_id AND o.ticket_type_id = tt.id AND o.status = 'confirmed'),
                   (SELECT count(*) FROM orders o WHERE o.event_id = tt.event_id AND o.ticket_type_id = tt.id AND o.status = 'rejected')
                 FROM ticket_types tt WHERE tt.event_id = $1 ORDER BY tt.id",
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

    async fn events(&self) -> Result<Vec<Event>, RepoError> {
        let obj = self.pool.get().await.map_err(pool_error)?;
        let rows = obj
            .query("SELECT catalog FROM events ORDER BY id", &[])
            .await
            .map_err(classify)?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(r.get::<_, &str>(0))
                    .map_err(|e| RepoError::Other(anyhow::anyhow!("stored catalog: {e}")))
            })
            .collect()
    }

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
}
