//! A payment, from wherever it stopped: charge (once per attempt), record the approval, publish
//! the order. Shared by a fan paying and the outbox relay resuming; its errors are its own,
//! mapped to HTTP answers only for the fan ([`From<SettleError> for ApiError`]).

use std::time::Duration;

use chrono::Utc;
use domain::{EventId, OrderCharge, OrderId, OrderMessage, OrderStatus, TraceContext};
use gate::{Approval, GateError, PayBegin};
use payments::{Charge, PaymentUnavailable};
use pubsub::PublishError;
use web::ApiError;
use web::http::unavailable;

use crate::{AppState, gate_error};

/// Why a payment did not end `confirming`.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    #[error("order not found")]
    NotFound,
    /// The order is past paying (expired, cancelled, confirmed, rejected), or another attempt
    /// holds it (`reserved`: under way or declined).
    #[error("the order is {}", .0.as_str())]
    Settled(OrderStatus),
    #[error("payment declined")]
    Declined,
    /// The provider did not answer: the money may be taken; the hold stays frozen and the order
    /// in the outbox.
    #[error("payment outcome unknown: {0}")]
    PaymentUnknown(#[source] PaymentUnavailable),
    /// Paid, but not published: the order stays in the outbox for the relay.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A stale approval's charge could not be handed to the books (logged with the charge).
    #[error("a stale approval's charge not handed to the books: {0}")]
    ChargeNotHanded(#[source] PublishError),
    #[error(transparent)]
    Gate(#[from] GateError),
    #[error("order {0} is confirming without a payment record")]
    NoPaymentRecord(OrderId),
}

/// What a fan is answered.
impl From<SettleError> for ApiError {
    fn from(e: SettleError) -> Self {
        match e {
            SettleError::NotFound => ApiError::NotFound("order"),
            SettleError::Settled(OrderStatus::Expired) => ApiError::HoldExpired,
            SettleError::Settled(OrderStatus::Cancelled) => {
                ApiError::Conflict("This order was cancelled.".into())
            }
            SettleError::Settled(OrderStatus::Confirmed) => {
                ApiError::Conflict("This order is already paid and confirmed.".into())
            }
            SettleError::Settled(OrderStatus::Rejected) => ApiError::Conflict(
                "This order could not be fulfilled and its payment is refunded (the payment provider may take a moment to show it).".into(),
            ),
            SettleError::Settled(_) => ApiError::Conflict(
                "Another payment attempt for this order is under way or was declined; try again."
                    .into(),
            ),
            SettleError::Declined => ApiError::PaymentDeclined,
            SettleError::PaymentUnknown(_) => ApiError::Unavailable {
                detail: "We could not confirm your payment yet. Your tickets stay held while we \
                         check; look at the order's status in a moment."
                    .into(),
                retry_after_secs: 5,
            },
            SettleError::Publish(_) => ApiError::Unavailable {
                detail: "Your payment was received and your order is saved, but confirming it is delayed. \
                         Retry this request, or check the order's status: it will be confirmed."
                    .into(),
                retry_after_secs: 3,
            },
            SettleError::ChargeNotHanded(e) => unavailable("message broker", &e),
            SettleError::Gate(e) => gate_error(e),
            e @ SettleError::NoPaymentRecord(_) => ApiError::Internal(e.into()),
        }
    }
}

fn payment(outcome: &'static str) {
    metrics::counter!("payments_total", "outcome" => outcome).increment(1);
}

/// Publishes an order paid earlier (read back from the gate) and records that it is published.
async fn publish(state: &AppState, event: &EventId, id: OrderId) -> Result<(), SettleError> {
    let o = state
        .gate
        .order(event, id)
        .await?
        .ok_or(SettleError::NotFound)?;
    let (Some(payment_ref), Some(paid_at)) = (o.payment_ref, o.paid_at) else {
        return Err(SettleError::NoPaymentRecord(id));
    };
    let msg = OrderMessage {
        order_id: id,
        event: event.clone(),
        ticket_type: o.ticket_type,
        quantity: o.quantity,
        email: o.email,
        amount_cents: o.amount_cents,
        payment_ref,
        paid_at,
        trace: None,
    };
    publish_message(state, &msg).await
}

/// Publishes an approved order and records that it is published.
async fn publish_message(state: &AppState, msg: &OrderMessage) -> Result<(), SettleError> {
    let (event, id) = (&msg.event, msg.order_id);
    let start = std::time::Instant::now();
    let published = state.publisher.publish(msg).await;
    metrics::histogram!("publish_duration_seconds").record(start.elapsed().as_secs_f64());
    match published {
        Ok(message_id) => {
            metrics::counter!("orders_published_total").increment(1);
            // Debug: the publisher writes one line per message at info.
            tracing::debug!(order_id = %id, message_id, "published");
            state
                .gate
                .mark_published(event, id, state.redeliver_after)
                .await?;
            Ok(())
        }
        Err(e) => {
            metrics::counter!("publish_failures_total").increment(1);
            tracing::warn!(order_id = %id, error = %e, "publish failed; the order stays in the outbox");
            Err(e.into())
        }
    }
}

/// How long a charge may stay unresolved (provider unreachable) before the relay releases it.
pub const PAYMENT_GIVE_UP: Duration = Duration::from_secs(300);

/// `confirming` goes on; any other status ends the payment.
fn state_answer(status: OrderStatus) -> Result<OrderStatus, SettleError> {
    match status {
        OrderStatus::Confirming => Ok(OrderStatus::Confirming),
        other => Err(SettleError::Settled(other)),
    }
}

/// Who takes an order through payment.
#[derive(Debug, Clone, Copy)]
pub enum Caller<'a> {
    /// A fan paying with a token, in a request of this trace (if it carried one).
    Fan {
        token: &'a str,
        trace: Option<&'a TraceContext>,
    },
    /// The outbox relay resuming a payment that stopped: it gives up on a charge whose outcome
    /// stays unknown past [`PAYMENT_GIVE_UP`], and publishes again what was published but not
    /// persisted in time.
    Relay,
}

/// Takes an order through payment, from wherever it stopped. Shared by the handler and the
/// relay; every step is idempotent and bound to one payment attempt, so a retry or a second
/// caller only finishes the work and never charges twice.
pub async fn settle(
    state: &AppState,
    event: &EventId,
    id: OrderId,
    caller: Caller<'_>,
) -> Result<OrderStatus, SettleError> {
    let (token, give_up, republish, trace) = match caller {
        Caller::Fan { token, trace } => (token, None, false, trace),
        Caller::Relay => ("", Some(PAYMENT_GIVE_UP), true, None),
    };
    let (amount_cents, token, attempt) = match state
        .gate
        .pay_begin(event, id, token, give_up)
        .await?
    {
        PayBegin::NotFound => return Err(SettleError::NotFound),
        PayBegin::State(s) => return state_answer(s),
        PayBegin::AlreadyPaid { published: true } if !republish => {
            return Ok(OrderStatus::Confirming);
        }
        PayBegin::AlreadyPaid { published: true } => {
            // The relay found it published long ago and still not persisted.
            metrics::counter!("orders_redelivered_total").increment(1);
            tracing::warn!(order_id = %id, "published but not persisted in time; publishing again");
            publish(state, event, id).await?;
            return Ok(OrderStatus::Confirming);
        }
        PayBegin::AlreadyPaid { published: false } => {
            publish(state, event, id).await?;
            return Ok(OrderStatus::Confirming);
        }
        PayBegin::Stuck { attempt } => {
            payment("given_up");
            tracing::error!(order_id = %id, %attempt, "payment outcome unknown for too long; releasing the hold (reconcile with the provider)");
            return match state.gate.pay_abort(event, id, &attempt).await? {
                Some(s) => state_answer(s),
                None => Ok(OrderStatus::Confirming),
            };
        }
        PayBegin::Charge {
            amount_cents,
            token,
            attempt,
        } => (amount_cents, token, attempt),
    };
    let charge = match state
        .payments
        .charge(id, &attempt, amount_cents, &token)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            payment("unknown");
            // The outcome is unknown (the money may be taken): keep the hold frozen and the
            // order in the outbox; a retry or the relay asks the provider again.
            tracing::warn!(order_id = %id, %attempt, error = %e, "payment outcome unknown");
            return Err(SettleError::PaymentUnknown(e));
        }
    };
    match charge {
        Charge::Declined { reason } => {
            payment("declined");
            tracing::info!(order_id = %id, %attempt, reason, "payment declined");
            match state.gate.pay_abort(event, id, &attempt).await? {
                Some(OrderStatus::Expired) => Err(SettleError::Settled(OrderStatus::Expired)),
                _ => Err(SettleError::Declined),
            }
        }
        Charge::Approved { payment_ref } => {
            match state
                .gate
                .pay_approved(event, id, &attempt, &payment_ref, Utc::now())
                .await?
            {
                Approval::Recorded(approved) => {
                    payment("approved");
                    let msg = OrderMessage {
                        order_id: id,
                        event: event.clone(),
                        ticket_type: approved.ticket_type,
                        quantity: approved.quantity,
                        email: approved.email,
                        amount_cents: approved.amount_cents,
                        payment_ref: approved.payment_ref,
                        paid_at: approved.paid_at,
                        trace: trace.cloned(),
                    };
                    publish_message(state, &msg).await?;
                    Ok(OrderStatus::Confirming)
                }
                Approval::Stale(status) => {
                    payment("stale");
                    // Money taken for an attempt Redis no longer knows as live. Redis may have
                    // gone back in time, and this may be the charge that paid the order: only
                    // the books can tell, so they decide whether it is refunded (ADR 53).
                    tracing::warn!(order_id = %id, %attempt, payment_ref, "stale approval; handing the charge to the books");
                    let charge = OrderCharge {
                        order_id: id,
                        payment_ref,
                        amount_cents,
                    };
                    hand_to_books(state, &charge).await?;
                    state_answer(status.ok_or(SettleError::NotFound)?)
                }
            }
        }
    }
}

/// Hands a charge to the books through consume-order, which keeps it if it paid its order and
/// refunds it otherwise (ADR 53). If that fails the fan is answered 503; the charge is in the
/// log line, and the provider's list of charges shows it to the money audit.
async fn hand_to_books(state: &AppState, charge: &OrderCharge) -> Result<(), SettleError> {
    state.publisher.publish_charge(charge).await.map_err(|e| {
        tracing::error!(order_id = %charge.order_id, payment_ref = charge.payment_ref, amount_cents = charge.amount_cents, error = %e, "a stale approval's charge could not be handed to the books (reconcile with the provider)");
        SettleError::ChargeNotHanded(e)
    })?;
    Ok(())
}
