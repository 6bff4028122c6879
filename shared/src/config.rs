//! Configuration from the environment (flags work too), validated at start: a missing or bad
//! variable stops the service with clap's one-line error, before anything is served.

use std::time::Duration;

/// Where the function listens (Cloud Run sets `PORT`).
#[derive(clap::Args, Debug, Clone)]
pub struct HttpArgs {
    /// TCP port to listen on, on all interfaces.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
}

/// The Redis gate.
#[derive(clap::Args, Clone)]
pub struct RedisArgs {
    /// Redis URL, e.g. `redis://127.0.0.1:6379` or `rediss://:AUTH@10.0.0.3:6378`.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: String,
    /// Deadline for one Redis command, in milliseconds (then the answer is 503).
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 500)]
    pub redis_timeout_ms: u64,
    /// PEM of the CA that signed the server's certificate, for `rediss://` (Memorystore's
    /// in-transit encryption); unset: the system's trust store.
    #[arg(long, env = "REDIS_CA_CERT")]
    pub redis_ca_cert: Option<String>,
}

impl RedisArgs {
    /// The per-command deadline.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// Connects the gate; the error says Redis is unreachable, without the URL (it may hold AUTH).
    pub async fn gate(&self) -> anyhow::Result<crate::gate::Gate> {
        crate::gate::Gate::connect_with_ca(
            &self.redis_url,
            self.timeout(),
            self.redis_ca_cert.as_deref(),
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach Redis: {e}"))
    }
}

// The URL may carry the AUTH password: never print it.
impl std::fmt::Debug for RedisArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisArgs")
            .field("redis_timeout_ms", &self.redis_timeout_ms)
            .finish_non_exhaustive()
    }
}

/// Bot protection on buy: GCRA limits per client IP and per e-mail address (0 disables one).
#[derive(clap::Args, Clone, Debug)]
pub struct RateLimitArgs {
    /// Sustained buy requests per minute from one client IP (an IPv6 /64 counts as one).
    /// Generous: festival crowds share addresses behind carrier NAT.
    #[arg(long, env = "RATE_LIMIT_IP_PER_MINUTE", default_value_t = 300)]
    pub ip_per_minute: u32,
    /// Requests one client IP may send at once.
    #[arg(long, env = "RATE_LIMIT_IP_BURST", default_value_t = 60)]
    pub ip_burst: u32,
    /// Sustained reservation attempts per minute for one e-mail address.
    #[arg(long, env = "RATE_LIMIT_EMAIL_PER_MINUTE", default_value_t = 10)]
    pub email_per_minute: u32,
    /// Reservation attempts one e-mail address may make at once.
    #[arg(long, env = "RATE_LIMIT_EMAIL_BURST", default_value_t = 5)]
    pub email_burst: u32,
    /// Proxies in front that append to `X-Forwarded-For` (Google's HTTPS load balancer appends
    /// the client and itself: 2). 0: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXY_HOPS", default_value_t = 0)]
    pub trusted_proxy_hops: usize,
    /// Holds one client IP may take within a hold time, whatever e-mail addresses it gives
    /// (0: no cap). Generous for the same reason as the per-IP rate.
    #[arg(long, env = "HOLDS_PER_CLIENT", default_value_t = 20)]
    pub holds_per_client: u32,
}

impl RateLimitArgs {
    /// The per-IP policy.
    pub fn per_ip(&self) -> crate::ratelimit::Policy {
        crate::ratelimit::Policy {
            per_minute: self.ip_per_minute,
            burst: self.ip_burst,
        }
    }
    /// The per-e-mail policy.
    pub fn per_email(&self) -> crate::ratelimit::Policy {
        crate::ratelimit::Policy {
            per_minute: self.email_per_minute,
            burst: self.email_burst,
        }
    }
}

/// The order store: PostgreSQL (`DATABASE_URL`) or Cloud Spanner (`SPANNER_DATABASE`),
/// exactly one of them.
#[derive(clap::Args, Clone)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. `postgres://tickets@127.0.0.1:5432/tickets`.
    #[arg(
        long,
        env = "DATABASE_URL",
        required_unless_present = "spanner_database",
        conflicts_with = "spanner_database"
    )]
    pub database_url: Option<String>,
    /// Cloud Spanner database, `projects/P/instances/I/databases/D` (instead of DATABASE_URL).
    #[arg(long, env = "SPANNER_DATABASE")]
    pub spanner_database: Option<String>,
    /// host:port of the Spanner emulator; unset in the cloud (Application Default Credentials).
    #[arg(long, env = "SPANNER_EMULATOR_HOST")]
    pub spanner_emulator_host: Option<String>,
    /// Connections in the pool (Spanner: sessions).
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value_t = 16)]
    pub database_pool_size: usize,
    /// Deadline to get or open a connection, in milliseconds.
    #[arg(long, env = "DATABASE_TIMEOUT_MS", default_value_t = 3000)]
    pub database_timeout_ms: u64,
}

impl std::fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field("spanner_database", &self.spanner_database)
            .field("pool", &self.database_pool_size)
            .finish_non_exhaustive()
    }
}

/// Which engine holds the books.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Spanner,
}

impl DatabaseArgs {
    /// The engine configured.
    pub fn backend(&self) -> Backend {
        if self.spanner_database.is_some() {
            Backend::Spanner
        } else {
            Backend::Postgres
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.database_timeout_ms)
    }

    /// The emulator's host:port; an empty variable counts as unset (the cloud).
    fn emulator_host(&self) -> Option<&str> {
        self.spanner_emulator_host
            .as_deref()
            .filter(|h| !h.trim().is_empty())
    }

    fn spanner_path(
        &self,
    ) -> Result<Option<crate::repo::spanner::DatabasePath>, crate::repo::RepoError> {
        self.spanner_database
            .as_deref()
            .map(crate::repo::spanner::DatabasePath::parse)
            .transpose()
    }

    /// The configured repository, connecting lazily (call `ping` at start): an error only
    /// when the configuration itself is bad (a malformed URL or database path).
    pub fn repository(
        &self,
    ) -> Result<std::sync::Arc<dyn crate::repo::OrderRepository>, crate::repo::RepoError> {
        Ok(match self.spanner_path()? {
            Some(path) => std::sync::Arc::new(crate::repo::spanner::SpannerRepository::new(
                &path,
                self.emulator_host(),
                self.database_pool_size,
                self.timeout(),
            )),
            None => std::sync::Arc::new(self.postgres()?),
        })
    }

    /// The Postgres repository (lazily connecting); an error when Spanner is configured.
    pub fn postgres(&self) -> Result<crate::repo::postgres::PgRepository, crate::repo::RepoError> {
        let url = self
            .database_url
            .as_deref()
            .ok_or_else(|| crate::repo::RepoError::Permanent("DATABASE_URL is not set".into()))?;
        crate::repo::postgres::PgRepository::connect(url, self.database_pool_size, self.timeout())
    }

    /// Applies the schema (idempotent): refinery migrations on Postgres, the DDL statements
    /// missing on Spanner (creating the emulator's instance and database when needed).
    pub async fn migrate(&self) -> Result<(), crate::repo::RepoError> {
        match self.spanner_path()? {
            Some(path) => crate::repo::spanner::migrate(&path, self.emulator_host()).await,
            None => self.postgres()?.migrate().await,
        }
    }
}

/// The orders topic.
#[derive(clap::Args, Debug, Clone)]
pub struct PubSubArgs {
    /// Google Cloud project of the topic.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    pub project: String,
    /// Topic id of paid orders.
    #[arg(long, env = "ORDERS_TOPIC", default_value = "orders")]
    pub orders_topic: String,
    /// host:port of the Pub/Sub emulator; unset in the cloud.
    #[arg(long, env = "PUBSUB_EMULATOR_HOST")]
    pub pubsub_emulator_host: Option<String>,
    /// Deadline for one publish, in milliseconds.
    #[arg(long, env = "PUBLISH_TIMEOUT_MS", default_value_t = 3000)]
    pub publish_timeout_ms: u64,
    /// At most this many paid orders in one message (ADR 34).
    #[arg(long, env = "PUBLISH_BATCH_MAX_ORDERS", default_value_t = 500)]
    pub publish_batch_max_orders: usize,
    /// How long a message with room left waits for more paid orders while the sale is busy
    /// (the last message carried more than one), in milliseconds.
    #[arg(long, env = "PUBLISH_LINGER_MS", default_value_t = 20)]
    pub publish_linger_ms: u64,
    /// Publishes in flight at once; orders paid meanwhile leave together in the next message.
    #[arg(long, env = "PUBLISH_IN_FLIGHT", default_value_t = 1)]
    pub publish_in_flight: usize,
    /// The secret messages are signed with, which consume-order checks (ADR 40; at least 32
    /// characters). Unset: messages go unsigned (a consumer that checks refuses them).
    #[arg(long, env = "ORDER_SIGNING_KEY", hide_env_values = true, value_parser = crate::signing::MessageKey::parse)]
    pub order_signing_key: Option<crate::signing::MessageKey>,
}

impl PubSubArgs {
    /// `projects/P/topics/T`.
    pub fn topic_path(&self) -> String {
        format!("projects/{}/topics/{}", self.project, self.orders_topic)
    }

    /// Connects the publisher.
    pub async fn publisher(&self) -> anyhow::Result<crate::publisher::PubSubPublisher> {
        crate::publisher::PubSubPublisher::connect(
            &self.topic_path(),
            self.pubsub_emulator_host.as_deref(),
            Duration::from_millis(self.publish_timeout_ms),
            crate::publisher::Batching {
                max_orders: self.publish_batch_max_orders.max(1),
                linger: Duration::from_millis(self.publish_linger_ms),
                in_flight: self.publish_in_flight.max(1),
                ..Default::default()
            },
            self.order_signing_key.clone(),
        )
        .await
    }
}
