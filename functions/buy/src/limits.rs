//! Bot protection: the per-IP rate limit before any work is done, and the client's address
//! handed to the reservation script's per-client hold cap (the per-e-mail limit is the
//! script's too).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use gate::ratelimit::{Decision, Policy, RateLimit};
use web::ApiError;

use crate::AppState;
use crate::client::ClientAddr;

/// Rate limits (bot protection) and where they come from.
#[derive(Clone)]
pub struct Limits {
    pub limiter: Arc<dyn RateLimit>,
    pub per_ip: Policy,
    pub per_email: Policy,
    /// See [`RateLimitArgs::trusted_proxy_hops`].
    pub trusted_proxy_hops: usize,
    /// See [`RateLimitArgs::holds_per_client`].
    pub holds_per_client: u32,
}

impl Limits {
    /// Whether a request's client address is needed: a per-IP limit or a hold cap is on.
    pub fn needs_client(&self) -> bool {
        self.per_ip.enabled() || self.holds_per_client > 0
    }
}

/// Finds the client's address once per request (kept in the request's extensions for
/// [`Client`]) and refuses a client IP over its budget before any work is done.
pub async fn admit_client(
    State(state): State<Arc<AppState>>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(l) = &state.limits {
        let client = ClientAddr::of(req.headers(), req.extensions(), l.trusted_proxy_hops);
        if l.per_ip.enabled() {
            let ip = client.as_ref().map_or("unknown", ClientAddr::as_str);
            if let Some(Decision::Limited { retry_after }) =
                l.limiter.check(&format!("ip:{ip}"), l.per_ip).await
            {
                return limited("per-ip", l.per_ip, retry_after).into_response();
            }
        }
        if let Some(client) = client {
            req.extensions_mut().insert(client);
        }
    }
    next.run(req).await
}

/// The client's address for the per-client hold cap (`None` when there is no cap, or the
/// address is unknown).
pub struct Client(pub Option<String>);

impl FromRequestParts<Arc<AppState>> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, Self::Rejection> {
        let capped = state
            .limits
            .as_ref()
            .is_some_and(|l| l.holds_per_client > 0);
        Ok(Self(
            capped
                .then(|| parts.extensions.get::<ClientAddr>())
                .flatten()
                .map(|c| c.as_str().to_owned()),
        ))
    }
}

pub(crate) fn limited(policy: &'static str, p: Policy, retry_after: Duration) -> ApiError {
    let window_secs = (u64::from(p.burst) * 60).div_ceil(u64::from(p.per_minute.max(1)));
    refused(policy, p.burst, window_secs, retry_after)
}

/// A 429 under `policy`: `burst` allowed per `window_secs`, counted.
pub(crate) fn refused(
    policy: &'static str,
    burst: u32,
    window_secs: u64,
    retry_after: Duration,
) -> ApiError {
    metrics::counter!("rate_limited_total", "policy" => policy).increment(1);
    ApiError::RateLimited {
        policy,
        burst,
        window_secs,
        retry_after_secs: retry_after.as_millis().div_ceil(1000).max(1) as u64,
    }
}
