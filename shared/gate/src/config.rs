//! Configuration from the environment (flags work too), validated at start: a missing or bad
//! variable stops the service with clap's one-line error, before anything is served.

use anyhow::Context;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

/// The Redis gate.
#[derive(clap::Args, Clone, Debug)]
pub struct RedisArgs {
    /// Redis URL, e.g. `redis://127.0.0.1:6379` or `rediss://:AUTH@10.0.0.3:6378` (it may
    /// carry the AUTH password: a secret, never printed).
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: SecretString,
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
    pub async fn gate(&self) -> anyhow::Result<crate::Gate> {
        crate::Gate::connect_with_ca(
            self.redis_url.expose_secret(),
            self.timeout(),
            self.redis_ca_cert.as_deref(),
        )
        .await
        .context("cannot reach Redis")
    }
}

/// Bot protection on buy: GCRA limits per client IP and per e-mail address (0 disables one).
#[derive(clap::Args, Clone, Debug)]
pub struct RateLimitArgs {
    /// Sustained buy requests per minute from one client IP (an IPv6 /56 counts as one).
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
