//! Bad database configuration stops consume-order at start with one clear error, before it
//! serves anything: an unreachable Spanner emulator, a missing Spanner database, a malformed
//! database path, PostgreSQL down. Uses the Spanner emulator `scripts/test` started.

use clap::Parser;
use testkit::TestEnv;

async fn start_error(db: &[&str]) -> String {
    let env = TestEnv::get();
    let mut args = vec![
        "consume-order",
        "--port",
        "0",
        "--redis-url",
        &env.redis_url,
        "--push-token",
        "test-push-token-0123456789",
    ];
    args.extend_from_slice(db);
    let config = consume_order::Config::try_parse_from(args).expect("arguments parse");
    let started = std::time::Instant::now();
    let err = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        consume_order::run(config),
    )
    .await
    .expect("gives up within its timeout")
    .expect_err("must not start");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    line
}

#[tokio::test]
async fn an_unreachable_spanner_emulator_stops_it_with_one_line() {
    let line = start_error(&[
        "--spanner-database",
        "projects/p/instances/dev/databases/tickets",
        "--spanner-emulator-host",
        "127.0.0.1:1",
        "--database-timeout-ms",
        "1000",
    ])
    .await;
    assert!(line.starts_with("cannot reach the database"), "{line}");
    assert!(line.contains("127.0.0.1:1"), "{line}");
}

#[tokio::test]
async fn a_missing_spanner_database_stops_it_with_one_line() {
    let host = std::env::var("TEST_SPANNER_EMULATOR_HOST")
        .expect("TEST_SPANNER_EMULATOR_HOST: run the tests with scripts/test");
    let line = start_error(&[
        "--spanner-database",
        "projects/p/instances/nowhere/databases/missing",
        "--spanner-emulator-host",
        &host,
    ])
    .await;
    assert!(line.contains("not found (run ops migrate)"), "{line}");
}

#[tokio::test]
async fn a_malformed_database_path_or_postgres_down_stops_it_with_one_line() {
    let line = start_error(&["--spanner-database", "tickets"]).await;
    assert!(
        line.contains("projects/P/instances/I/databases/D"),
        "{line}"
    );
    let line = start_error(&[
        "--database-url",
        "postgres://tickets@127.0.0.1:1/tickets",
        "--database-timeout-ms",
        "500",
    ])
    .await;
    assert!(line.starts_with("cannot reach the database"), "{line}");
}

#[test]
fn both_or_neither_store_is_refused_by_the_parser() {
    let base = ["consume-order", "--redis-url", "redis://127.0.0.1:1"];
    let mut both = base.to_vec();
    both.extend([
        "--database-url",
        "postgres://x",
        "--spanner-database",
        "projects/p/instances/i/databases/d",
    ]);
    assert!(consume_order::Config::try_parse_from(both).is_err());
    assert!(consume_order::Config::try_parse_from(base).is_err());
}

/// Behind Cloud Run's IAM anyone allowed to publish reaches the endpoint: without the key to
/// check buy's signatures, consume-order does not start (ADR 40).
#[tokio::test]
async fn iam_push_auth_without_a_signing_key_stops_it_with_one_line() {
    let env = TestEnv::get();
    let config = consume_order::Config::try_parse_from([
        "consume-order",
        "--port",
        "0",
        "--redis-url",
        &env.redis_url,
        "--push-auth",
        "iam",
        "--database-url",
        &env.database_url,
    ])
    .expect("arguments parse");
    let err = consume_order::run(config)
        .await
        .expect_err("must not start");
    let line = err.to_string();
    assert!(line.contains("ORDER_SIGNING_KEY"), "{line}");
    assert!(!line.contains('\n'), "one line: {line}");
}

/// A message of the largest batch buy publishes takes this many Spanner transactions, and
/// their retry budget must end before the push request that persists them times out.
#[test]
fn the_retry_budget_of_the_largest_batch_ends_before_its_request_does() {
    let transactions = pubsub::Batching::default()
        .max_orders
        .div_ceil(store::MAX_ORDERS_PER_TRANSACTION) as u32;
    assert!(store::spanner::TX_DEADLINE * transactions < web::http::REQUEST_TIMEOUT);
}
