//! Payments behind a trait, so a real provider plugs in later. The simulated provider is
//! deterministic per token, and idempotent per (order, attempt) like a real provider's
//! idempotency key. With the `ledger` feature it also keeps a ledger of its own, as a real
//! provider does ([`ledger`]), which the money audit reconciles with the books.
//!
//! Test tokens (shown on the demo site): `tok_approve` (and any token starting with
//! `tok_approve`) is approved; `tok_decline` is declined; `tok_unavailable` answers as if the
//! provider could not be reached. Anything else is declined as an unknown card.
//!
//! Two approving tokens misbehave as real providers do, for the nemesis run (scripts/chaos):
//! `tok_approve_slow` is approved after [`SLOW_APPROVAL`]; `tok_approve_lost`, with the ledger,
//! takes the money and loses the answer the first time (the shop hears "unavailable"; asked
//! again about the same attempt, the provider answers with the charge it made).

#[cfg(feature = "ledger")]
pub mod ledger;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use domain::{OrderId, PaymentAttempt};

/// What the provider decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Charge {
    /// Money taken; `payment_ref` identifies the charge.
    Approved { payment_ref: String },
    /// Not taken; the reason is safe to show.
    Declined { reason: String },
}

/// The provider could not be asked (timeout, outage): the outcome is unknown, ask again.
#[derive(Debug, thiserror::Error)]
#[error("payment provider unavailable: {0}")]
pub struct PaymentUnavailable(pub String);

/// A payment provider. Charges are idempotent per (order, attempt): asking again about the
/// same attempt returns its first outcome; a new attempt (another card after a decline) is a
/// new charge. Refunds are idempotent per payment reference.
#[async_trait]
pub trait PaymentProvider: Send + Sync {
    /// Charges `amount_cents` for attempt `attempt` of `order` with the fan's `token`.
    async fn charge(
        &self,
        order: OrderId,
        attempt: &PaymentAttempt,
        amount_cents: i64,
        token: &str,
    ) -> Result<Charge, PaymentUnavailable>;
    /// Refunds a charge (an order the database rejected, or a stale attempt's approval).
    async fn refund(
        &self,
        order: OrderId,
        payment_ref: &str,
        amount_cents: i64,
    ) -> Result<(), PaymentUnavailable>;
}

/// One charge as the provider lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderCharge {
    /// The provider's reference of the charge.
    pub payment_ref: String,
    /// The order it was made for (the metadata the shop gave it).
    pub order_id: OrderId,
    pub amount_cents: i64,
    pub created_at: DateTime<Utc>,
    /// When it was refunded, if it was.
    pub refunded_at: Option<DateTime<Utc>>,
}

/// The provider's list of charges: what reconciling money with the books reads. A real
/// provider pages through its list API by creation time (Stripe: `GET /v1/charges` with
/// `created[gte]` and `created[lt]`, each charge's `refunded` flag and its
/// `metadata.order_id`).
#[async_trait]
pub trait ChargeList: Send + Sync {
    /// The charges created at or after `since` and before `until`, oldest first.
    async fn charges_created(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<ProviderCharge>, PaymentUnavailable>;
}

/// How long `tok_approve_slow` keeps the shop waiting for its approval.
pub const SLOW_APPROVAL: std::time::Duration = std::time::Duration::from_millis(2_500);

/// The simulated provider, without a ledger: it answers by token and forgets.
#[derive(Debug, Clone, Default)]
pub struct SimulatedPayments;

#[async_trait]
impl PaymentProvider for SimulatedPayments {
    async fn charge(
        &self,
        order: OrderId,
        attempt: &PaymentAttempt,
        amount_cents: i64,
        token: &str,
    ) -> Result<Charge, PaymentUnavailable> {
        if amount_cents <= 0 {
            return Ok(Charge::Declined {
                reason: "invalid amount".into(),
            });
        }
        if token == "tok_approve_slow" {
            tokio::time::sleep(SLOW_APPROVAL).await;
        }
        match token {
            t if t.starts_with("tok_approve") => Ok(Charge::Approved {
                // Derived from the attempt: asking twice about one attempt is the same charge.
                payment_ref: format!("sim_ch_{}_{attempt}", order.0.simple()),
            }),
            "tok_unavailable" => Err(PaymentUnavailable("simulated outage".into())),
            "tok_decline" => Ok(Charge::Declined {
                reason: "card declined".into(),
            }),
            _ => Ok(Charge::Declined {
                reason: "unknown test card".into(),
            }),
        }
    }

    async fn refund(
        &self,
        _order: OrderId,
        _payment_ref: &str,
        _amount_cents: i64,
    ) -> Result<(), PaymentUnavailable> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tokens_decide_and_charges_are_idempotent_per_attempt() {
        let p = SimulatedPayments;
        let o = OrderId::new();
        let (one, two) = (PaymentAttempt::new(), PaymentAttempt::new());
        let a = p.charge(o, &one, 100, "tok_approve").await.unwrap();
        assert_eq!(a, p.charge(o, &one, 100, "tok_approve").await.unwrap());
        assert_ne!(a, p.charge(o, &two, 100, "tok_approve").await.unwrap());
        assert!(matches!(
            p.charge(o, &one, 100, "tok_decline").await.unwrap(),
            Charge::Declined { .. }
        ));
        assert!(matches!(
            p.charge(o, &one, 100, "4111111111111111").await.unwrap(),
            Charge::Declined { .. }
        ));
        assert!(p.charge(o, &one, 100, "tok_unavailable").await.is_err());
    }

    #[tokio::test]
    async fn a_slow_approval_comes_after_the_shop_would_have_waited_half_as_long() {
        let (p, o, one) = (SimulatedPayments, OrderId::new(), PaymentAttempt::new());
        let slow = p.charge(o, &one, 100, "tok_approve_slow");
        let waited = tokio::time::timeout(SLOW_APPROVAL / 2, slow).await;
        assert!(waited.is_err(), "not answered yet");
        let answer = p.charge(o, &one, 100, "tok_approve_slow").await.unwrap();
        assert!(matches!(answer, Charge::Approved { .. }));
    }
}
