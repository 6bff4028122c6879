//! Bot protection for buy: a GCRA rate limit per client IP and per e-mail address, kept in
//! Redis (one atomic script per check), so every buy instance shares the same budget.
//!
//! A limit refuses with 429, `Retry-After` and the IETF `RateLimit` / `RateLimit-Policy`
//! fields. When Redis cannot answer, the limiter lets the request through: the gate behind it
//! (which needs the same Redis) then answers 503 itself, and an outage of the limiter must not
//! refuse fans on its own.

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

/// One limit: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Requests per minute, sustained. 0 disables the limit.
    pub per_minute: u32,
    /// Requests allowed at once on top of the spacing (at least 1).
    pub burst: u32,
}

impl Policy {
    /// Is this limit switched on?
    pub fn enabled(self) -> bool {
        self.per_minute > 0
    }
    /// The spacing of the sustained rate, in milliseconds.
    pub fn interval_ms(self) -> u64 {
        (60_000 / u64::from(self.per_minute.max(1))).max(1)
    }
}

/// The answer to one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; `remaining` more may come at once, the budget is full again in `reset`.
    Allowed { remaining: u64, reset: Duration },
    /// Refused; retry after `retry_after`.
    Limited { retry_after: Duration },
}

/// A rate limit over subjects (e.g. `ip:203.0.113.7`), each under its own budget.
#[async_trait::async_trait]
pub trait RateLimit: Send + Sync {
    /// One check for `subject` under `policy`. `None` when the limiter could not answer in
    /// time (the caller lets the request through).
    async fn check(&self, subject: &str, policy: Policy) -> Option<Decision>;
}

impl Decision {
    /// The answer under a policy that is switched off.
    pub const UNLIMITED: Self = Self::Allowed {
        remaining: u64::MAX,
        reset: Duration::ZERO,
    };
}

/// Checks subjects against their policies in Redis.
#[derive(Clone)]
pub struct RateLimiter {
    conn: ConnectionManager,
    script: std::sync::Arc<Script>,
    timeout: Duration,
}

/// Failing open is logged once per second at most (every request fails open during an outage).
static FAIL_OPEN_LOG: telemetry::LogThrottle = telemetry::LogThrottle::new(1000);

impl RateLimiter {
    /// A limiter over the gate's Redis connection.
    pub fn new(conn: ConnectionManager, timeout: Duration) -> Self {
        Self {
            conn,
            script: std::sync::Arc::new(Script::new(&format!(
                "{}\n{}",
                crate::GCRA,
                include_str!("ratelimit/limit.lua")
            ))),
            timeout,
        }
    }
}

#[async_trait::async_trait]
impl RateLimit for RateLimiter {
    async fn check(&self, subject: &str, policy: Policy) -> Option<Decision> {
        if !policy.enabled() {
            return Some(Decision::UNLIMITED);
        }
        let mut conn = self.conn.clone();
        // Each subject is its own hash tag, so the keys spread over a Redis Cluster.
        let key = format!("rl:{{{subject}}}");
        let mut inv = self.script.key(key);
        inv.arg(policy.interval_ms()).arg(policy.burst.max(1));
        let call = inv.invoke_async::<(i64, i64, i64, i64)>(&mut conn);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((allowed, remaining, retry_ms, reset_ms))) => Some(if allowed == 1 {
                Decision::Allowed {
                    remaining: u64::try_from(remaining).unwrap_or(0),
                    reset: Duration::from_millis(u64::try_from(reset_ms).unwrap_or(0)),
                }
            } else {
                Decision::Limited {
                    retry_after: Duration::from_millis(u64::try_from(retry_ms).unwrap_or(0)),
                }
            }),
            Ok(Err(e)) => {
                if let Some(occurrences) = FAIL_OPEN_LOG.throttled() {
                    tracing::warn!(error = %e, occurrences, "rate limiter unavailable; letting the request through");
                }
                None
            }
            Err(_) => {
                if let Some(occurrences) = FAIL_OPEN_LOG.throttled() {
                    tracing::warn!(
                        occurrences,
                        "rate limiter timed out; letting the request through"
                    );
                }
                None
            }
        }
    }
}
