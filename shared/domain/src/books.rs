//! What the books decided, as the gate and the store both read it.

use chrono::{DateTime, Utc};

use crate::{EventId, OrderId, OrderStatus, TicketTypeId};

/// The outcome of persisting a paid order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// `Confirmed` with tickets, or `Rejected` when no capacity was left.
    pub status: OrderStatus,
    /// The ticket codes (empty when rejected).
    pub tickets: Vec<String>,
    /// True when the order was already persisted by an earlier delivery.
    pub duplicate: bool,
    /// The charge the books hold for the order: the one that paid it (confirmed) or is
    /// refunded (rejected). A delivery of the order with another charge (a second attempt
    /// after Redis went back in time, ADR 52) carries money the books do not keep.
    pub payment_ref: String,
}

/// A persisted order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrder {
    pub order_id: OrderId,
    pub event: EventId,
    pub ticket_type: TicketTypeId,
    pub quantity: u32,
    pub email: String,
    pub amount_cents: i64,
    pub status: OrderStatus,
    pub payment_ref: String,
    pub persisted_at: DateTime<Utc>,
    pub tickets: Vec<String>,
}

/// Confirmed tickets of one customer for one ticket type: what the gate's per-customer
/// counter is rebuilt from after Redis lost its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerTotal {
    pub ticket_type: TicketTypeId,
    pub email: String,
    /// Sum of quantities of the customer's confirmed orders.
    pub quantity: i64,
}

/// What a consume-order process was last answered by Redis' `marks` for an event (ADR 56): its
/// field there only grows within the event's epoch (its order-id salt), so a Redis whose field
/// is below this went back in time and lost the process's writes. The books keep each one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateMark {
    pub writer: String,
    pub epoch: String,
    pub mark: i64,
}
