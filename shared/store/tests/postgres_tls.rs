//! PostgreSQL over TLS, as Cloud SQL serves it (ADR 48): scripts/test starts the test database
//! with TLS on and a certificate from a CA of its own that names the instance, not the address
//! (as Cloud SQL's do).

use std::time::Duration;

use store::OrderRepository;
use store::postgres::PgRepository;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run scripts/test"))
}

/// The test database's URL with `sslmode` set.
fn url(mode: &str) -> String {
    let url = var("TEST_DATABASE_URL");
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}sslmode={mode}")
}

/// How many sessions of the server run over TLS, by the server's own account (asked over a
/// plain connection of the test's own).
async fn encrypted_sessions() -> i64 {
    let (client, conn) = tokio_postgres::connect(&url("disable"), tokio_postgres::NoTls)
        .await
        .expect("plain connection");
    tokio::spawn(conn);
    client
        .query_one("SELECT count(*) FROM pg_stat_ssl WHERE ssl", &[])
        .await
        .expect("pg_stat_ssl")
        .get(0)
}

#[tokio::test]
async fn requires_tls_verified_against_the_instance_ca_only() {
    let ca = std::fs::read_to_string(var("TEST_DATABASE_CA")).unwrap();
    let timeout = Duration::from_secs(3);

    let repo = PgRepository::connect_with_ca(&url("require"), Some(&ca), 2, timeout).unwrap();
    let before = encrypted_sessions().await;
    repo.ping().await.expect("TLS with the instance's CA");
    // The pool keeps its session open: one more encrypted session on the server.
    assert_eq!(
        encrypted_sessions().await,
        before + 1,
        "the session is not encrypted"
    );

    // Another CA (even one with the same name) is not trusted.
    let other = std::fs::read_to_string(var("TEST_DATABASE_OTHER_CA")).unwrap();
    let repo = PgRepository::connect_with_ca(&url("require"), Some(&other), 2, timeout).unwrap();
    let err = repo
        .ping()
        .await
        .expect_err("another CA's trust reached the server");
    assert!(format!("{err:#}").contains("certificate"), "{err:#}");

    // Without a CA, `sslmode=require` cannot be met: no plain-text fallback.
    let repo = PgRepository::connect(&url("require"), 2, timeout).unwrap();
    assert!(
        repo.ping().await.is_err(),
        "required TLS fell back to plain text"
    );
}
