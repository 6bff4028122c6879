//! At start, a bad configuration stops consume-order with one clear error before it serves
//! anything (a malformed database path); a database it cannot use yet (an unreachable Spanner
//! emulator, a missing Spanner database, PostgreSQL down) is waited for: alive, not ready, the
//! cause logged, never an exit (ADR 49). Uses the Spanner emulator `scripts/test` started.

use clap::Parser;
use testkit::TestEnv;

/// consume-order's configuration on `port` with the test Redis, a push token and `db`.
fn config(port: &str, db: &[&str]) -> consume_order::Config {
    let env = TestEnv::get();
    let mut args = vec![
        "consume-order",
        "--port",
        port,
        "--redis-url",
        &env.redis_url,
        "--push-token",
        "test-push-token-0123456789",
    ];
    args.extend_from_slice(db);
    consume_order::Config::try_parse_from(args).expect("arguments parse")
}

async fn start_error(db: &[&str]) -> String {
    let config = config("0", db);
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

/// Runs consume-order with `db` for a few seconds: it must stay up, answer `/healthz` 200 and
/// `/readyz` 503 throughout, and log why it is not ready; returns those log lines' errors.
async fn waits_not_ready(db: &[&str]) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let config = config(&port, db);
    let (lines, _guard) = testkit::capture_logs();
    let server = tokio::spawn(consume_order::run(config));
    let http = reqwest::Client::new();
    let status = |path: &'static str| {
        let (http, port) = (http.clone(), port.clone());
        async move {
            http.get(format!("http://127.0.0.1:{port}{path}"))
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    let mut probed = 0;
    for _ in 0..30 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!server.is_finished(), "it exited: {:?}", server.await);
        if let Some(alive) = status("/healthz").await {
            assert_eq!(alive, 200);
            assert_eq!(
                status("/readyz").await,
                Some(503),
                "ready without its database"
            );
            probed += 1;
        }
    }
    assert!(probed > 10, "it did not answer its probes");
    server.abort();
    let why: Vec<String> = lines
        .take()
        .into_iter()
        .filter(|l| l["message"] == "not ready: cannot start yet")
        .map(|l| l["error"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(!why.is_empty(), "the cause is not logged");
    assert!(
        why.iter().all(|e| !e.contains('\n')),
        "one line each: {why:?}"
    );
    why.join(" | ")
}

#[tokio::test]
async fn an_unreachable_spanner_emulator_is_waited_for_not_ready() {
    let why = waits_not_ready(&[
        "--spanner-database",
        "projects/p/instances/dev/databases/tickets",
        "--spanner-emulator-host",
        "127.0.0.1:1",
        "--database-timeout-ms",
        "500",
    ])
    .await;
    assert!(why.starts_with("cannot reach the database"), "{why}");
    assert!(why.contains("127.0.0.1:1"), "{why}");
}

#[tokio::test]
async fn a_missing_spanner_database_is_waited_for_not_ready() {
    let host = std::env::var("TEST_SPANNER_EMULATOR_HOST")
        .expect("TEST_SPANNER_EMULATOR_HOST: run the tests with scripts/test");
    let why = waits_not_ready(&[
        "--spanner-database",
        "projects/p/instances/nowhere/databases/missing",
        "--spanner-emulator-host",
        &host,
    ])
    .await;
    assert!(why.contains("not found (run ops migrate)"), "{why}");
}

#[tokio::test]
async fn postgres_down_is_waited_for_not_ready() {
    let why = waits_not_ready(&[
        "--database-url",
        "postgres://tickets@127.0.0.1:1/tickets",
        "--database-timeout-ms",
        "500",
    ])
    .await;
    assert!(why.starts_with("cannot reach the database"), "{why}");
}

#[tokio::test]
async fn a_malformed_database_path_stops_it_with_one_line() {
    let line = start_error(&["--spanner-database", "tickets"]).await;
    assert!(
        line.contains("projects/P/instances/I/databases/D"),
        "{line}"
    );
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
