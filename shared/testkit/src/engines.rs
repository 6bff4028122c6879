//! The parts of the kit that open PostgreSQL and Spanner (the `engines` feature): a router
//! test over the in-memory doubles compiles none of it.

use domain::{Event, EventId};
use store::Inventory;
use store::postgres::PgRepository;
use store::spanner::{DatabasePath, SpannerRepository};

use crate::{TestEnv, books_in, var};

impl TestEnv {
    /// A Postgres repository (migrated by `scripts/test`).
    pub fn repo(&self) -> PgRepository {
        PgRepository::connect(&self.database_url, 32, std::time::Duration::from_secs(5))
            .expect("pool")
    }

    /// A repository whose database is down (nothing listens on port 1).
    pub fn unreachable_repo(&self) -> PgRepository {
        PgRepository::connect(
            "postgres://tickets@127.0.0.1:1/tickets",
            2,
            std::time::Duration::from_millis(300),
        )
        .expect("pool")
    }

    /// The database's books for one ticket type of an event.
    pub async fn books(&self, event: &EventId, ticket_type: &str) -> Inventory {
        books_in(&self.repo(), event, ticket_type).await
    }

    /// Runs the audit and fails the test unless the books balance at a quiet point.
    pub async fn assert_audit_clean(&self, event: &EventId) {
        self.assert_audit_clean_in(&self.repo(), event).await
    }

    /// Seeds a new event with a unique id in both stores.
    pub async fn seed(&self, capacity: u32, opens_in_secs: i64, hold_seconds: u32) -> Event {
        self.seed_in(&self.repo(), capacity, opens_in_secs, hold_seconds)
            .await
    }
}

/// A Spanner repository on a fresh database of its own, created and migrated here on the
/// emulator `scripts/test` started (`TEST_SPANNER_EMULATOR_HOST`).
pub async fn spanner_repo() -> SpannerRepository {
    telemetry::init_for_tests();
    let host = var("TEST_SPANNER_EMULATOR_HOST");
    let path = DatabasePath::parse(&format!(
        "projects/{}/instances/tests/databases/t-{}",
        std::env::var("TEST_PROJECT").unwrap_or_else(|_| "frequency-local".into()),
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))
    .expect("database path");
    store::spanner::migrate(&path, Some(&host))
        .await
        .expect("create and migrate the Spanner test database");
    SpannerRepository::new(&path, Some(&host), 64, std::time::Duration::from_secs(10))
}

/// A Spanner repository whose emulator is down (nothing listens on port 1).
pub fn spanner_unreachable_repo() -> SpannerRepository {
    let path = DatabasePath::parse("projects/p/instances/i/databases/d").expect("path");
    SpannerRepository::new(
        &path,
        Some("127.0.0.1:1"),
        2,
        std::time::Duration::from_millis(500),
    )
}
