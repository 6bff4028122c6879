//! Redis going back in time, for tests: the keys of an event (or a few of them) as Redis holds
//! them now, and Redis put back to that state later, as a failover to a replica that lagged or a
//! restored snapshot does.

use domain::EventId;

/// Some keys as they were, read with DUMP (a key that did not exist is left out).
pub struct Snapshot(Vec<(String, Vec<u8>)>);

async fn connect(redis_url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url)
        .expect("a redis URL")
        .get_multiplexed_async_connection()
        .await
        .expect("redis")
}

fn event_keys(event: &EventId) -> String {
    format!("{{ev:{event}}}:*")
}

/// Every key of `event` as Redis holds it now.
pub async fn snapshot(redis_url: &str, event: &EventId) -> Snapshot {
    let mut redis = connect(redis_url).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(event_keys(event))
        .query_async(&mut redis)
        .await
        .expect("KEYS");
    snapshot_keys(redis_url, &keys).await
}

/// These keys as Redis holds them now.
pub async fn snapshot_keys(redis_url: &str, keys: &[String]) -> Snapshot {
    let mut redis = connect(redis_url).await;
    let mut taken = vec![];
    for key in keys {
        let dump: Option<Vec<u8>> = redis::cmd("DUMP")
            .arg(key)
            .query_async(&mut redis)
            .await
            .expect("DUMP");
        taken.extend(dump.map(|d| (key.clone(), d)));
    }
    Snapshot(taken)
}

/// Puts the snapshot's keys back as they were (the other keys as they are now).
pub async fn restore(redis_url: &str, snapshot: &Snapshot) {
    let mut redis = connect(redis_url).await;
    for (key, dump) in &snapshot.0 {
        let _: () = redis::cmd("RESTORE")
            .arg(key)
            .arg(0)
            .arg(dump.as_slice())
            .arg("REPLACE")
            .query_async(&mut redis)
            .await
            .expect("RESTORE");
    }
}

/// The event's order-id salt as Redis holds it: a repair that went without a pause keeps it.
pub async fn order_id_salt(redis_url: &str, event: &EventId) -> Option<String> {
    let mut redis = connect(redis_url).await;
    redis::cmd("HGET")
        .arg(format!("{{ev:{event}}}:meta"))
        .arg("oid_salt")
        .query_async(&mut redis)
        .await
        .expect("HGET")
}

/// `event` goes back to `snapshot` whole: its keys written since are gone.
pub async fn go_back(redis_url: &str, event: &EventId, snapshot: &Snapshot) {
    let mut redis = connect(redis_url).await;
    let now: Vec<String> = redis::cmd("KEYS")
        .arg(event_keys(event))
        .query_async(&mut redis)
        .await
        .expect("KEYS");
    for key in now {
        let _: () = redis::cmd("DEL")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .expect("DEL");
    }
    restore(redis_url, snapshot).await;
}
