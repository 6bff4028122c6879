//! Configuration from the environment (flags work too), validated at start: a missing or bad
//! variable stops the service with clap's one-line error, before anything is served.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The order store: PostgreSQL (`DATABASE_URL`) or Cloud Spanner (`SPANNER_DATABASE`),
/// exactly one of them.
#[derive(clap::Args, Clone, Debug)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, e.g. `postgres://tickets@127.0.0.1:5432/tickets` (it may carry the
    /// password: a secret, never printed).
    #[arg(
        long,
        env = "DATABASE_URL",
        hide_env_values = true,
        required_unless_present = "spanner_database",
        conflicts_with = "spanner_database"
    )]
    pub database_url: Option<SecretString>,
    /// PEM of the CA bundle that signs the PostgreSQL server's certificate (Cloud SQL's server
    /// CA): connections use TLS verified against it (`verify-ca`); unset, plain text.
    #[arg(long, env = "DATABASE_CA_CERT")]
    pub database_ca_cert: Option<String>,
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

    fn spanner_path(&self) -> Result<Option<crate::spanner::DatabasePath>, crate::ConfigError> {
        self.spanner_database
            .as_deref()
            .map(crate::spanner::DatabasePath::parse)
            .transpose()
    }

    /// The configured repository, connecting lazily (call `ping` at start): an error only
    /// when the configuration itself is bad (a malformed URL or database path).
    pub fn repository(
        &self,
    ) -> Result<std::sync::Arc<dyn crate::OrderRepository>, crate::ConfigError> {
        Ok(match self.spanner_path()? {
            Some(path) => std::sync::Arc::new(crate::spanner::SpannerRepository::new(
                &path,
                self.emulator_host(),
                self.database_pool_size,
                self.timeout(),
            )),
            None => std::sync::Arc::new(self.postgres()?),
        })
    }

    /// The Postgres repository (lazily connecting); an error when Spanner is configured.
    pub fn postgres(&self) -> Result<crate::postgres::PgRepository, crate::ConfigError> {
        let url = self
            .database_url
            .as_ref()
            .ok_or_else(|| crate::ConfigError("DATABASE_URL is not set".into()))?
            .expose_secret();
        crate::postgres::PgRepository::connect_with_ca(
            url,
            self.database_ca_cert.as_deref(),
            self.database_pool_size,
            self.timeout(),
        )
    }

    /// Applies the schema (idempotent): refinery migrations on Postgres, the DDL statements
    /// missing on Spanner (creating the emulator's instance and database when needed).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        match self.spanner_path()? {
            Some(path) => crate::spanner::migrate(&path, self.emulator_host()).await?,
            None => self.postgres()?.migrate().await?,
        }
        Ok(())
    }
}
