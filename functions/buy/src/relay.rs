//! The outbox relay, a background job: finishes paid orders whose publish failed or whose
//! instance died mid-payment, and publishes again what was published but not persisted in
//! time. Its errors are its own (logged), never an HTTP answer.

use std::time::Duration;

use gate::GateError;

use crate::AppState;
use crate::settle::{Caller, settle};

/// A relay pass could not list the events or claim their outbox.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Gate(#[from] GateError),
}

/// One pass of the outbox relay: finishes payments older than `grace` whose message is not
/// known to be published (publish failed, or the instance died mid-payment), and publishes
/// again what was published but not persisted in time. Each order it takes is leased for
/// `lease`, so the relays of all buy instances together take it once per period.
pub async fn relay_once(
    state: &AppState,
    grace: Duration,
    lease: Duration,
) -> Result<usize, RelayError> {
    let mut done = 0;
    for event in state.gate.events().await? {
        for id in state.gate.claim_outbox(&event, grace, 100, lease).await? {
            match settle(state, &event, id, Caller::Relay).await {
                Ok(_) => {
                    metrics::counter!("relay_orders_total").increment(1);
                    done += 1;
                }
                Err(e) => {
                    tracing::warn!(order_id = %id, error = %e, "relay could not finish the order yet")
                }
            }
        }
    }
    Ok(done)
}

/// Runs the relay forever.
pub fn spawn_relay(
    state: AppState,
    every: Duration,
    grace: Duration,
    lease: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match relay_once(&state, grace, lease).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(orders = n, "relay finished paid orders"),
                Err(e) => tracing::warn!(error = %e, "relay pass failed"),
            }
        }
    })
}
