//! The simulated provider with a ledger of its own, as a real provider keeps one: every charge
//! it approved and every refund, listable by time. It lives in PostgreSQL, in a schema of its own
//! (`sim_provider`) apart from the shop's books, and each shop is an `account` there, as at a
//! real provider (tests take one each). Locally the shop's PostgreSQL hosts it; in the cloud a
//! real provider keeps its own list (docs/DEPLOY.md).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{
    Charge, ChargeList, PaymentProvider, PaymentUnavailable, ProviderCharge, SimulatedPayments,
};
use domain::{OrderId, PaymentAttempt};

/// Where the simulated provider keeps its ledger (buy charges, consume-order refunds, `ops audit`
/// lists).
#[derive(clap::Args, Debug, Clone)]
pub struct PaymentArgs {
    /// The simulated provider's ledger, a PostgreSQL URL: every charge and refund is recorded
    /// there, and `ops audit` reconciles it with the books. Unset: the provider keeps no ledger.
    #[arg(long, env = "PAYMENTS_LEDGER_URL", hide_env_values = true)]
    pub payments_ledger_url: Option<String>,
    /// The shop's account at the provider.
    #[arg(long, env = "PAYMENTS_ACCOUNT", default_value = "frequency-tickets")]
    pub payments_account: String,
}

impl PaymentArgs {
    /// The provider: with a ledger when one is configured.
    pub async fn provider(&self) -> Result<Arc<dyn PaymentProvider>, PaymentUnavailable> {
        Ok(self.provider_and_list().await?.0)
    }

    /// The provider, and its list of charges when it keeps one (the ledger is both, as a real
    /// provider has both).
    pub async fn provider_and_list(
        &self,
    ) -> Result<(Arc<dyn PaymentProvider>, Option<Arc<dyn ChargeList>>), PaymentUnavailable> {
        Ok(match self.ledger().await? {
            Some(l) => (Arc::new(l.clone()), Some(Arc::new(l))),
            None => (Arc::new(SimulatedPayments), None),
        })
    }

    /// The provider's ledger, when one is configured.
    pub async fn ledger(&self) -> Result<Option<LedgeredPayments>, PaymentUnavailable> {
        match self
            .payments_ledger_url
            .as_deref()
            .filter(|u| !u.is_empty())
        {
            Some(url) => Ok(Some(
                LedgeredPayments::connect(url, &self.payments_account).await?,
            )),
            None => Ok(None),
        }
    }
}

/// The simulated provider, recording what it does.
#[derive(Clone)]
pub struct LedgeredPayments {
    pool: Pool,
    account: String,
}

fn unavailable(e: impl std::fmt::Display) -> PaymentUnavailable {
    PaymentUnavailable(format!("the provider's ledger: {e}"))
}

impl LedgeredPayments {
    /// Connects to the ledger at `url` for `account`, creating its table on first use.
    pub async fn connect(url: &str, account: &str) -> Result<Self, PaymentUnavailable> {
        let mut cfg: tokio_postgres::Config = url.parse().map_err(unavailable)?;
        cfg.connect_timeout(Duration::from_secs(5));
        // A simulation of someone else's service on the shop's own database: it should cost the
        // sale as little as it can, so no wait for the disk per charge (a crash here loses the
        // last charges of a simulated provider, nothing of the shop's).
        cfg.options("-c synchronous_commit=off");
        let mgr = Manager::from_config(
            cfg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr)
            .max_size(16)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(unavailable)?;
        let ledger = Self {
            pool,
            account: account.to_owned(),
        };
        // Two processes starting at once may race to create it: the second try finds it.
        if ledger.create().await.is_err() {
            ledger.create().await?;
        }
        Ok(ledger)
    }

    async fn create(&self) -> Result<(), PaymentUnavailable> {
        let client = self.pool.get().await.map_err(unavailable)?;
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS sim_provider;
                 CREATE TABLE IF NOT EXISTS sim_provider.charges (
                   account      TEXT        NOT NULL,
                   payment_ref  TEXT        NOT NULL,
                   order_id     UUID        NOT NULL,
                   amount_cents BIGINT      NOT NULL,
                   created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
                   refunded_at  TIMESTAMPTZ,
                   PRIMARY KEY (account, payment_ref));
                 CREATE INDEX IF NOT EXISTS charges_by_time
                   ON sim_provider.charges (account, created_at);",
            )
            .await
            .map_err(unavailable)
    }
}

#[async_trait]
impl PaymentProvider for LedgeredPayments {
    async fn charge(
        &self,
        order: OrderId,
        attempt: &PaymentAttempt,
        amount_cents: i64,
        token: &str,
    ) -> Result<Charge, PaymentUnavailable> {
        let charge = SimulatedPayments
            .charge(order, attempt, amount_cents, token)
            .await?;
        if let Charge::Approved { payment_ref } = &charge {
            // Asked again about one attempt, the provider has made one charge.
            let client = self.pool.get().await.map_err(unavailable)?;
            let insert = client
                .prepare_cached(
                    "INSERT INTO sim_provider.charges (account, payment_ref, order_id, amount_cents)
                     VALUES ($1, $2, $3, $4) ON CONFLICT (account, payment_ref) DO NOTHING",
                )
                .await
                .map_err(unavailable)?;
            let made = client
                .execute(
                    &insert,
                    &[&self.account, payment_ref, &order.0, &amount_cents],
                )
                .await
                .map_err(unavailable)?;
            if made == 1 && token == "tok_approve_lost" {
                // The money is taken; the answer never reaches the shop.
                return Err(PaymentUnavailable(
                    "simulated: the answer to a charge was lost".into(),
                ));
            }
        }
        Ok(charge)
    }

    async fn refund(
        &self,
        order: OrderId,
        payment_ref: &str,
        _amount_cents: i64,
    ) -> Result<(), PaymentUnavailable> {
        let client = self.pool.get().await.map_err(unavailable)?;
        // Once per charge; asked again, the refund is already made.
        let row = client
            .query_opt(
                "UPDATE sim_provider.charges SET refunded_at = coalesce(refunded_at, now())
                 WHERE account = $1 AND payment_ref = $2 RETURNING order_id",
                &[&self.account, &payment_ref],
            )
            .await
            .map_err(unavailable)?;
        match row {
            Some(_) => Ok(()),
            None => {
                tracing::error!(order_id = %order, payment_ref, "refund asked for a charge the provider never made");
                Err(PaymentUnavailable(format!("no such charge: {payment_ref}")))
            }
        }
    }
}

#[async_trait]
impl ChargeList for LedgeredPayments {
    async fn charges_created(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<ProviderCharge>, PaymentUnavailable> {
        let client = self.pool.get().await.map_err(unavailable)?;
        let rows = client
            .query(
                "SELECT payment_ref, order_id, amount_cents, created_at, refunded_at
                 FROM sim_provider.charges
                 WHERE account = $1 AND created_at >= $2 AND created_at < $3
                 ORDER BY created_at, payment_ref",
                &[&self.account, &since, &until],
            )
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| ProviderCharge {
                payment_ref: r.get(0),
                order_id: OrderId(r.get::<_, uuid::Uuid>(1)),
                amount_cents: r.get(2),
                created_at: r.get(3),
                refunded_at: r.get(4),
            })
            .collect())
    }
}
