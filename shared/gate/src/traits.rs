//! What the functions ask of the gate, as traits: [`crate::Gate`] implements them over Redis,
//! and the test kit's in-memory double does too, so each function's router is tested without
//! an engine (the real-engine tests stay beside those).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;

use domain::books::{GateMark, Persisted};
use domain::{
    Email, EventId, IdempotencyKey, OrderId, OrderMessage, OrderStatus, PaymentAttempt, Quantity,
    TicketTypeId,
};

use crate::{
    AdmissionRules, Approval, EventSnapshot, GateError, OrderView, PayBegin, ReserveOutcome,
};

/// Resolves once an order's outcome is in the gate (see [`PaymentFlow::finalized`]).
pub type Finalized = BoxFuture<'static, ()>;

/// The read model: events, their stock, and orders as fans see them.
#[async_trait]
pub trait ReadModel: Send + Sync {
    /// Events seeded in the gate.
    async fn events(&self) -> Result<Vec<EventId>, GateError>;

    /// Expires due holds, then reads the event's catalog and stock in one atomic step (None:
    /// the event is not in the gate).
    async fn refresh(&self, event: &EventId) -> Result<Option<EventSnapshot>, GateError>;

    /// Which event an order belongs to (None: unknown order).
    async fn event_of(&self, order: OrderId) -> Result<Option<EventId>, GateError>;

    /// The read model of one order of `event`.
    async fn order(&self, event: &EventId, order: OrderId) -> Result<Option<OrderView>, GateError>;

    /// The read model of an order wherever it lives, with the gate's clock at the read: the
    /// one clock holds are judged by, so a fan is never told a hold expired that a payment
    /// would still find valid (or the reverse) because this instance's clock drifted.
    async fn find_order(
        &self,
        order: OrderId,
    ) -> Result<Option<(OrderView, DateTime<Utc>)>, GateError>;
}

/// Admission: taking a hold (stock, the per-customer limit and `rules` decided at once) and
/// releasing it.
#[async_trait]
pub trait Admission: Send + Sync {
    /// Reserves `quantity` tickets for `email` under `rules`, or says why not. A replay of the
    /// same key answers the first answer again and is never counted or refused by the rules.
    async fn reserve(
        &self,
        event: &EventId,
        ticket_type: &TicketTypeId,
        quantity: Quantity,
        email: &Email,
        key: &IdempotencyKey,
        rules: &AdmissionRules,
    ) -> Result<ReserveOutcome, GateError>;

    /// Releases a hold. Returns the order's status afterwards and whether this call released
    /// it (None: unknown order). When `client` is the address that took the hold, the hold no
    /// longer counts against that client's cap.
    async fn cancel(
        &self,
        event: &EventId,
        order: OrderId,
        client: Option<&str>,
    ) -> Result<Option<(OrderStatus, bool)>, GateError>;
}

/// The payment transitions of an order: reserved → confirming (paying) → paid → published,
/// then confirmed or rejected as the books decide; and the outbox of paid orders.
#[async_trait]
pub trait PaymentFlow: Send + Sync {
    /// Resolves once consume-order has mirrored `order`'s outcome in the gate (ADR 35). Call
    /// it before the work that leads there, and bound the wait with a timeout: a notification
    /// can be missed, and then it never resolves.
    fn finalized(&self, order: OrderId) -> Finalized;

    /// Starts paying: freezes the hold so it cannot expire while the provider decides.
    /// `give_up` (the relay's) reports a pending attempt older than that as `Stuck`.
    async fn pay_begin(
        &self,
        event: &EventId,
        order: OrderId,
        token: &str,
        give_up: Option<Duration>,
    ) -> Result<PayBegin, GateError>;

    /// Attempt `attempt` was declined (or never resolved): the order is `reserved` again, or
    /// `expired` if its time ran out. None: a later attempt is under way, nothing changed.
    async fn pay_abort(
        &self,
        event: &EventId,
        order: OrderId,
        attempt: &PaymentAttempt,
    ) -> Result<Option<OrderStatus>, GateError>;

    /// Records attempt `attempt`'s approved charge (idempotent for the same reference).
    async fn pay_approved(
        &self,
        event: &EventId,
        order: OrderId,
        attempt: &PaymentAttempt,
        payment_ref: &str,
        paid_at: DateTime<Utc>,
    ) -> Result<Approval, GateError>;

    /// The order's message is in Pub/Sub. It stays in the outbox, due again after
    /// `redeliver_after`: unless the consumer has persisted it by then, the relay publishes it
    /// once more.
    async fn mark_published(
        &self,
        event: &EventId,
        order: OrderId,
        redeliver_after: Duration,
    ) -> Result<(), GateError>;

    /// Claims up to `limit` orders due in the outbox more than `older_than` ago for `lease`:
    /// the relays of other instances pass over them until then.
    async fn claim_outbox(
        &self,
        event: &EventId,
        older_than: Duration,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OrderId>, GateError>;

    /// Mirrors the database's decisions for orders of one event; per order, true the first
    /// time it changes the gate. `GateError::WentBack` when Redis went back in time for the
    /// event (ADR 56): nothing is mirrored until [`PaymentFlow::repair`].
    async fn finalize_all(
        &self,
        event: &EventId,
        orders: &[(&OrderMessage, &Persisted)],
    ) -> Result<Vec<bool>, GateError>;

    /// Brings the event up to the books after Redis went back in time (ADR 56): `orders` are
    /// every order the books decided for it, each mirrored from wherever Redis left it (one
    /// Redis lost altogether is counted sold, its hold lost with it). False when the event is
    /// absent or being restored, which mirrors the books itself.
    async fn repair(
        &self,
        event: &EventId,
        orders: &[(&OrderMessage, &Persisted)],
    ) -> Result<bool, GateError>;

    /// After a repair: the marks the books saved for the event (`saved`, read before the
    /// repair read the books) raised in the gate, so the writes they count, mirrored again, are
    /// not found missing a second time (ADR 56).
    async fn raise_marks(&self, event: &EventId, saved: &[GateMark]) -> Result<(), GateError>;
}

/// Everything buy asks of the gate (the waiting room included: buy's join hands out the
/// admission reserve asks for).
pub trait Checkout: ReadModel + Admission + PaymentFlow + crate::WaitingRoom {}

impl<T: ReadModel + Admission + PaymentFlow + crate::WaitingRoom + ?Sized> Checkout for T {}
