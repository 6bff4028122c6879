//! In-memory doubles for the fast router tests, which need no engine: the gate, the per-IP
//! rate limit, the publisher and the books. The gate makes the same transitions as the Redis
//! scripts, the rate limit the same answers to a burst as the Redis limiter, and the books the same
//! decisions as the databases; each is held to the real one by a suite run against both
//! (`shared/gate/tests/contract.rs`, `shared/store/tests/repo_conformance.rs`). The publisher
//! is not: it only records what it is given, and Pub/Sub's side (batches, signatures, the
//! emulator) is tested in `shared/pubsub` and the real-engine tier. Nor is `RecordedRefunds`,
//! the simulated payment provider with its refunds written down instead of made (there is no
//! real provider here to hold it to).
//!
//! Where the gate is simpler than Redis: order ids are random rather than derived from the key
//! (ADR 30); the per-e-mail rate limit counts holds within a window rather than running GCRA; a
//! hold expires when the next call looks at it; an outcome for an order it does not hold is
//! ignored (Redis writes a lost order back; the recovery tests cover that on Redis). Tests that
//! depend on these belong to the real-engine tier.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use domain::books::Persisted;
use domain::{
    Email, Event, EventId, IdempotencyKey, OrderId, OrderMessage, OrderStatus, PaymentAttempt,
    Quantity, TicketTypeId,
};
use gate::ratelimit::{Decision, Policy, RateLimit};
use gate::{
    Admission, AdmissionRules, Approval, Approved, EventSnapshot, Finalized, GateError, OrderView,
    PayBegin, PaymentFlow, ReadModel, ReserveOutcome, RoomSettings, RoomStatus, RoomView, Stock,
    WaitingRoom,
};
use pubsub::{OrderPublisher, PublishError};

/// A double's outage switch, shared by its clones: while on, every call fails as the real
/// service's outage would.
#[derive(Clone, Default)]
struct Outage(Arc<std::sync::atomic::AtomicBool>);

impl Outage {
    fn set(&self, on: bool) {
        self.0.store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn is_on(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// The gate in memory. Seed events with [`MemoryGate::seed`]. Clones share one gate.
#[derive(Clone, Default)]
pub struct MemoryGate {
    state: Arc<Mutex<State>>,
    /// On: every call fails as if Redis were down.
    down: Outage,
}

#[derive(Default)]
struct State {
    events: BTreeMap<EventId, Sale>,
    /// Payments waiting for an order's outcome (see [`PaymentFlow::finalized`]).
    waiters: HashMap<OrderId, oneshot::Sender<()>>,
    /// Each event's waiting room (see `room.lua`, which this follows).
    rooms: HashMap<EventId, Room>,
}

#[derive(Default)]
struct Room {
    on: bool,
    settings: Option<RoomSettings>,
    paused: bool,
    /// Joined before the opening, in arrival order.
    pre: Vec<String>,
    shuffled: bool,
    /// The draw's salt and the pre-queue's keys in drawn order (`room.lua`'s draw).
    salt: String,
    keys: Vec<u64>,
    joined: u64,
    upto: u64,
    /// Thousandths of a fan, at most one second's worth.
    credit: i64,
    at: Option<DateTime<Utc>>,
    who: HashMap<String, String>,
    place: HashMap<String, u64>,
    /// Admitted places and when their windows end.
    admitted: BTreeMap<u64, DateTime<Utc>>,
    /// Admitted places whose fan came for its token (its window runs from then).
    claimed: std::collections::HashSet<u64>,
}

impl Room {
    /// Brings the room up to `now`; whether the sale is open.
    fn advance(&mut self, sale: &Sale, now: DateTime<Utc>) -> bool {
        let Some(s) = self.settings.filter(|_| self.on) else {
            return false;
        };
        let opens = sale.catalog.sale_opens_at;
        if now < opens {
            return false;
        }
        if !self.shuffled {
            // A salt drawn now: one fair order, decided once, keyed as room.lua keys it.
            self.salt = uuid::Uuid::new_v4().simple().to_string();
            let mut keyed: Vec<(u64, String)> = self
                .pre
                .iter()
                .map(|id| (gate::draw_key(&self.salt, id), id.clone()))
                .collect();
            keyed.sort();
            for (i, (key, id)) in keyed.into_iter().enumerate() {
                self.place.insert(id, i as u64 + 1);
                self.keys.push(key);
            }
            self.shuffled = true;
        }
        self.admitted.retain(|_, until| *until > now);
        if self.paused {
            (self.at, self.credit) = (Some(now), 0);
            return true;
        }
        let rate = i64::from(s.rate_per_sec);
        let elapsed = (now - self.at.unwrap_or(opens)).num_milliseconds().max(0);
        self.credit = (self.credit + rate * elapsed).min(rate * 1000);
        let active = self.admitted.len() as i64;
        let (_, available) = sale.unsold();
        let n = (self.credit / 1000)
            .min(self.joined as i64 - self.upto as i64)
            .min(i64::from(s.cap) - active)
            .min(available - active);
        let claim = chrono::Duration::from_std(s.claim.min(s.window)).unwrap_or_default();
        for place in self.upto + 1..=self.upto + n.max(0) as u64 {
            self.admitted.insert(place, now + claim);
        }
        if n > 0 {
            self.upto += n as u64;
            self.credit -= n * 1000;
        }
        self.at = Some(now);
        true
    }

    fn view(&self, sale: &Sale, status: RoomStatus, place: u64, id: &str) -> RoomView {
        let (unsold, available) = sale.unsold();
        RoomView {
            status,
            queue_id: id.to_owned(),
            place,
            upto: self.upto,
            joined: self.joined,
            shopping: self.admitted.len() as u64,
            unsold,
            sold_out: available == 0,
            rate_per_sec: self.settings.map_or(0, |s| s.rate_per_sec),
            admitted_until: None,
            paused: self.paused,
            pre: if self.shuffled {
                self.keys.len() as u64
            } else {
                0
            },
            draw_salt: self.salt.clone(),
            admitted_key: (self.upto.min(self.keys.len() as u64))
                .checked_sub(1)
                .map_or(0, |i| self.keys[i as usize]),
        }
    }

    fn status_of(&self, sale: &Sale, id: &str, open: bool) -> RoomView {
        match self.place.get(id).copied() {
            None if !open => self.view(sale, RoomStatus::Pending, 0, id),
            None => self.view(sale, RoomStatus::Unknown, 0, id),
            Some(p) if p > self.upto => self.view(sale, RoomStatus::Waiting, p, id),
            Some(p) if self.admitted.contains_key(&p) => RoomView {
                admitted_until: self.admitted.get(&p).copied(),
                ..self.view(sale, RoomStatus::Admitted, p, id)
            },
            Some(p) => self.view(sale, RoomStatus::Missed, p, id),
        }
    }
}

struct Sale {
    catalog: Event,
    stock: BTreeMap<String, Stock>,
    paused: bool,
    orders: HashMap<OrderId, Order>,
    /// Idempotency key → the order it made and what it was first used for.
    keys: HashMap<String, (OrderId, (TicketTypeId, u32, String))>,
    /// Tickets held, being paid or bought per (ticket type, e-mail).
    customers: HashMap<(String, String), u32>,
    /// Holds taken per e-mail and per client: when each was taken.
    taken_by_email: HashMap<String, Vec<DateTime<Utc>>>,
    taken_by_client: HashMap<String, Vec<DateTime<Utc>>>,
    /// Which client took a hold, and when (its entry in `taken_by_client`).
    taken_from: HashMap<OrderId, (String, DateTime<Utc>)>,
    /// Paid or paying orders not known to be persisted, and when each is due for the relay.
    outbox: HashMap<OrderId, DateTime<Utc>>,
}

struct Order {
    view: OrderView,
    attempt: PaymentAttempt,
    /// The current attempt's token and start, while its charge is pending.
    pending: Option<(String, DateTime<Utc>)>,
    published: bool,
}

impl MemoryGate {
    /// An empty gate.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts an event on sale (a no-op when it is already).
    pub fn seed(&self, event: &Event) {
        let mut state = self.state.lock().expect("gate lock");
        state
            .events
            .entry(event.id.clone())
            .or_insert_with(|| Sale {
                stock: event
                    .ticket_types
                    .iter()
                    .map(|t| {
                        let capacity = i64::from(t.capacity);
                        let stock = Stock {
                            capacity,
                            available: capacity,
                            ..Stock::default()
                        };
                        (t.id.to_string(), stock)
                    })
                    .collect(),
                catalog: event.clone(),
                paused: false,
                orders: HashMap::new(),
                keys: HashMap::new(),
                customers: HashMap::new(),
                taken_by_email: HashMap::new(),
                taken_by_client: HashMap::new(),
                taken_from: HashMap::new(),
                outbox: HashMap::new(),
            });
    }

    /// Pauses or resumes an event's sale, as while a gate is rebuilt after Redis lost its data.
    pub fn set_paused(&self, event: &EventId, paused: bool) {
        if let Some(sale) = self.state.lock().expect("gate lock").events.get_mut(event) {
            sale.paused = paused;
        }
    }

    /// Every later call fails as if Redis were down (`false`: back up).
    pub fn set_down(&self, down: bool) {
        self.down.set(down);
    }

    /// The state, or the error Redis being down would give.
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, GateError> {
        if self.down.is_on() {
            return Err(GateError::Unavailable("the in-memory gate is down"));
        }
        let mut state = self.state.lock().expect("gate lock");
        let now = Utc::now();
        for sale in state.events.values_mut() {
            sale.reap(now);
        }
        Ok(state)
    }

    /// The event's sale and the order, when both exist.
    fn with_order<T>(
        &self,
        event: &EventId,
        order: OrderId,
        f: impl FnOnce(&mut Sale, OrderId) -> T,
    ) -> Result<Option<T>, GateError> {
        let mut state = self.lock()?;
        Ok(state
            .events
            .get_mut(event)
            .filter(|s| s.orders.contains_key(&order))
            .map(|s| f(s, order)))
    }
}

impl Sale {
    /// Tickets not sold (available and held) and available, as the room counts them.
    fn unsold(&self) -> (i64, i64) {
        let available: i64 = self.stock.values().map(|s| s.available.max(0)).sum();
        let held: i64 = self.stock.values().map(|s| s.held.max(0)).sum();
        (available + held, available)
    }

    fn stock(&mut self, tt: &TicketTypeId) -> &mut Stock {
        self.stock
            .get_mut(tt.as_str())
            .expect("a seeded ticket type")
    }

    /// Expired holds go back to stock.
    fn reap(&mut self, now: DateTime<Utc>) {
        let due: Vec<OrderId> = self
            .orders
            .values()
            .filter(|o| {
                o.view.status == OrderStatus::Reserved
                    && o.view.hold_expires_at.is_some_and(|t| t <= now)
            })
            .map(|o| o.view.order_id)
            .collect();
        for id in due {
            self.release(id, OrderStatus::Expired);
        }
    }

    /// A held or paying order's tickets back on sale; the order ends as `to`.
    fn release(&mut self, id: OrderId, to: OrderStatus) {
        let o = self.orders.get_mut(&id).expect("the order");
        let (from, tt, qty) = (
            o.view.status,
            o.view.ticket_type.clone(),
            o.view.quantity.get(),
        );
        let email = o.view.email.as_str().to_owned();
        o.view.status = to;
        o.pending = None;
        let stock = self.stock(&tt);
        match from {
            OrderStatus::Reserved => stock.held -= i64::from(qty),
            _ => stock.confirming -= i64::from(qty),
        }
        stock.available += i64::from(qty);
        if let Some(n) = self.customers.get_mut(&(tt.to_string(), email)) {
            *n = n.saturating_sub(qty);
        }
    }
}

/// Taken within the last `window` (older entries dropped).
fn recent(taken: &mut Vec<DateTime<Utc>>, now: DateTime<Utc>, window: Duration) -> usize {
    let since = now - chrono::Duration::from_std(window).expect("a short window");
    taken.retain(|t| *t > since);
    taken.len()
}

#[async_trait]
impl ReadModel for MemoryGate {
    async fn events(&self) -> Result<Vec<EventId>, GateError> {
        Ok(self.lock()?.events.keys().cloned().collect())
    }

    async fn refresh(&self, event: &EventId) -> Result<Option<EventSnapshot>, GateError> {
        Ok(self.lock()?.events.get(event).map(|s| EventSnapshot {
            catalog: s.catalog.clone(),
            read_at: Utc::now(),
            stock: s.stock.clone(),
            paused: s.paused,
        }))
    }

    async fn event_of(&self, order: OrderId) -> Result<Option<EventId>, GateError> {
        Ok(self
            .lock()?
            .events
            .iter()
            .find(|(_, s)| s.orders.contains_key(&order))
            .map(|(e, _)| e.clone()))
    }

    async fn order(&self, event: &EventId, order: OrderId) -> Result<Option<OrderView>, GateError> {
        Ok(self.with_order(event, order, |s, id| s.orders[&id].view.clone())?)
    }

    async fn find_order(
        &self,
        order: OrderId,
    ) -> Result<Option<(OrderView, DateTime<Utc>)>, GateError> {
        let state = self.lock()?;
        Ok(state
            .events
            .values()
            .find_map(|s| s.orders.get(&order))
            .map(|o| (o.view.clone(), Utc::now())))
    }
}

#[async_trait]
impl Admission for MemoryGate {
    async fn reserve(
        &self,
        event: &EventId,
        ticket_type: &TicketTypeId,
        quantity: Quantity,
        email: &Email,
        key: &IdempotencyKey,
        rules: &AdmissionRules,
    ) -> Result<ReserveOutcome, GateError> {
        let mut state = self.lock()?;
        let State { events, rooms, .. } = &mut *state;
        let Some(sale) = events.get_mut(event) else {
            return Ok(ReserveOutcome::UnknownEvent);
        };
        // While the room is on, only an admitted fan takes a hold (reserve.lua).
        let room = rooms.get_mut(event).filter(|r| r.on);
        let now = Utc::now();
        let qty = quantity.get();
        // Every refusal first looks for an earlier answer under the key, as the script does.
        let request = (ticket_type.clone(), qty, email.as_str().to_owned());
        if let Some((id, first)) = sale.keys.get(key.as_str()) {
            if *first != request {
                return Ok(ReserveOutcome::IdempotencyConflict);
            }
            return Ok(ReserveOutcome::Replayed {
                order_id: *id,
                hold_expires_at: sale.orders[id]
                    .view
                    .hold_expires_at
                    .unwrap_or(DateTime::UNIX_EPOCH),
            });
        }
        if sale.paused {
            return Ok(ReserveOutcome::Paused);
        }
        if now < sale.catalog.sale_opens_at {
            let ms = (sale.catalog.sale_opens_at - now).num_milliseconds();
            return Ok(ReserveOutcome::TooEarly {
                opens_in_ms: u64::try_from(ms).unwrap_or(0),
            });
        }
        if room.is_some() && rules.admitted.is_none() {
            return Ok(ReserveOutcome::NotAdmitted);
        }
        let Some(tt) = sale
            .catalog
            .ticket_types
            .iter()
            .find(|t| &t.id == ticket_type)
            .cloned()
        else {
            return Ok(ReserveOutcome::UnknownTicketType);
        };
        let hold = Duration::from_secs(u64::from(tt.hold_seconds));
        if let Some(p) = rules.per_email.filter(|p| p.enabled()) {
            let interval = Duration::from_millis(p.interval_ms());
            let taken = sale
                .taken_by_email
                .entry(email.as_str().to_owned())
                .or_default();
            if recent(taken, now, interval * p.burst.max(1)) >= p.burst.max(1) as usize {
                return Ok(ReserveOutcome::RateLimited {
                    retry_after: interval,
                });
            }
        }
        let have = sale
            .customers
            .get(&(tt.id.to_string(), email.as_str().to_owned()))
            .copied()
            .unwrap_or(0);
        let available = sale.stock[tt.id.as_str()].available;
        if available <= 0 {
            return Ok(ReserveOutcome::SoldOut);
        }
        if have + qty > tt.per_customer_limit {
            return Ok(ReserveOutcome::Limit {
                limit: u64::from(tt.per_customer_limit),
                remaining: u64::from(tt.per_customer_limit.saturating_sub(have)),
            });
        }
        if available < i64::from(qty) {
            return Ok(ReserveOutcome::NotEnough {
                available: u64::try_from(available).unwrap_or(0),
            });
        }
        let client = rules.client.as_deref().filter(|c| !c.is_empty());
        if let Some(c) = client.filter(|_| rules.holds_per_client > 0) {
            let taken = sale.taken_by_client.entry(c.to_owned()).or_default();
            if recent(taken, now, hold) >= rules.holds_per_client as usize {
                let oldest_ends = taken[0] + chrono::Duration::from_std(hold).expect("hold");
                return Ok(ReserveOutcome::ClientHolds {
                    retry_after: (oldest_ends - now).to_std().unwrap_or_default(),
                    window: hold,
                });
            }
            taken.push(now);
        }
        let capped = client.filter(|_| rules.holds_per_client > 0);
        if rules.per_email.is_some_and(|p| p.enabled()) {
            sale.taken_by_email
                .entry(email.as_str().to_owned())
                .or_default()
                .push(now);
        }
        // Holding tickets, the fan no longer counts as shopping in the room.
        if let (Some(room), Some(place)) = (room, rules.admitted) {
            room.admitted.remove(&place);
        }
        let order_id = OrderId::new();
        if let Some(c) = capped {
            sale.taken_from.insert(order_id, (c.to_owned(), now));
        }
        let hold_expires_at = now + chrono::Duration::from_std(hold).expect("hold");
        let stock = sale.stock(&tt.id);
        stock.available -= i64::from(qty);
        stock.held += i64::from(qty);
        *sale
            .customers
            .entry((tt.id.to_string(), email.as_str().to_owned()))
            .or_default() += qty;
        sale.keys
            .insert(key.as_str().to_owned(), (order_id, request));
        sale.orders.insert(
            order_id,
            Order {
                view: OrderView {
                    order_id,
                    event: event.clone(),
                    status: OrderStatus::Reserved,
                    ticket_type: tt.id.clone(),
                    quantity,
                    email: email.clone(),
                    amount_cents: tt.price_cents * i64::from(qty),
                    hold_expires_at: Some(hold_expires_at),
                    payment_ref: None,
                    paid_at: None,
                    tickets: Vec::new(),
                },
                attempt: PaymentAttempt::new(),
                pending: None,
                published: false,
            },
        );
        Ok(ReserveOutcome::Reserved {
            order_id,
            hold_expires_at,
        })
    }

    async fn cancel(
        &self,
        event: &EventId,
        order: OrderId,
        client: Option<&str>,
    ) -> Result<Option<(OrderStatus, bool)>, GateError> {
        self.with_order(event, order, |sale, id| {
            match sale.orders[&id].view.status {
                OrderStatus::Reserved => {
                    // The client that took the hold gets its place under the cap back.
                    if let Some((c, at)) = sale.taken_from.get(&id).cloned()
                        && client == Some(c.as_str())
                        && let Some(taken) = sale.taken_by_client.get_mut(&c)
                    {
                        taken.retain(|t| *t != at);
                    }
                    sale.release(id, OrderStatus::Cancelled);
                    (OrderStatus::Cancelled, true)
                }
                s => (s, false),
            }
        })
    }
}

#[async_trait]
impl PaymentFlow for MemoryGate {
    fn finalized(&self, order: OrderId) -> Finalized {
        let (tx, rx) = oneshot::channel();
        self.state
            .lock()
            .expect("gate lock")
            .waiters
            .insert(order, tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }

    async fn pay_begin(
        &self,
        event: &EventId,
        order: OrderId,
        token: &str,
        give_up: Option<Duration>,
    ) -> Result<PayBegin, GateError> {
        let now = Utc::now();
        let begun = self.with_order(event, order, |sale, id| {
            let o = sale.orders.get_mut(&id).expect("the order");
            match o.view.status {
                // An empty token (the relay) never starts a payment, it only finishes one.
                OrderStatus::Reserved if !token.is_empty() => {
                    o.attempt = PaymentAttempt::new();
                    o.view.status = OrderStatus::Confirming;
                    o.pending = Some((token.to_owned(), now));
                    let (tt, qty, amount, attempt) = (
                        o.view.ticket_type.clone(),
                        i64::from(o.view.quantity.get()),
                        o.view.amount_cents,
                        o.attempt.clone(),
                    );
                    let stock = sale.stock(&tt);
                    stock.held -= qty;
                    stock.confirming += qty;
                    sale.outbox.insert(id, now);
                    PayBegin::Charge {
                        amount_cents: amount,
                        token: token.to_owned(),
                        attempt,
                    }
                }
                OrderStatus::Confirming => match &o.pending {
                    Some((_, since))
                        // A zero limit is none, as in the script.
                        if give_up.is_some_and(|g| {
                            !g.is_zero() && (now - *since).to_std().unwrap_or_default() > g
                        }) =>
                    {
                        PayBegin::Stuck {
                            attempt: o.attempt.clone(),
                        }
                    }
                    Some((stored, _)) => PayBegin::Charge {
                        amount_cents: o.view.amount_cents,
                        token: stored.clone(),
                        attempt: o.attempt.clone(),
                    },
                    None => PayBegin::AlreadyPaid {
                        published: o.published,
                    },
                },
                s => PayBegin::State(s),
            }
        })?;
        Ok(begun.unwrap_or(PayBegin::NotFound))
    }

    async fn pay_abort(
        &self,
        event: &EventId,
        order: OrderId,
        attempt: &PaymentAttempt,
    ) -> Result<Option<OrderStatus>, GateError> {
        let now = Utc::now();
        let aborted = self.with_order(event, order, |sale, id| {
            let o = sale.orders.get_mut(&id).expect("the order");
            if o.view.status != OrderStatus::Confirming
                || o.pending.is_none()
                || &o.attempt != attempt
            {
                return None;
            }
            sale.outbox.remove(&id);
            if o.view.hold_expires_at.is_some_and(|t| t <= now) {
                sale.release(id, OrderStatus::Expired);
                return Some(OrderStatus::Expired);
            }
            o.pending = None;
            o.view.status = OrderStatus::Reserved;
            let (tt, qty) = (o.view.ticket_type.clone(), i64::from(o.view.quantity.get()));
            let stock = sale.stock(&tt);
            stock.confirming -= qty;
            stock.held += qty;
            Some(OrderStatus::Reserved)
        })?;
        Ok(aborted.flatten())
    }

    async fn pay_approved(
        &self,
        event: &EventId,
        order: OrderId,
        attempt: &PaymentAttempt,
        payment_ref: &str,
        paid_at: DateTime<Utc>,
    ) -> Result<Approval, GateError> {
        let approved = self.with_order(event, order, |sale, id| {
            let o = sale.orders.get_mut(&id).expect("the order");
            let current = o.view.status == OrderStatus::Confirming
                && o.pending.is_some()
                && &o.attempt == attempt;
            let again = o.view.payment_ref.as_deref() == Some(payment_ref);
            if !current && !again {
                return Approval::Stale(Some(o.view.status));
            }
            if current {
                o.pending = None;
                o.view.payment_ref = Some(payment_ref.to_owned());
                o.view.paid_at = Some(paid_at);
            }
            Approval::Recorded(Approved {
                payment_ref: payment_ref.to_owned(),
                paid_at: o.view.paid_at.unwrap_or(paid_at),
                ticket_type: o.view.ticket_type.clone(),
                quantity: o.view.quantity,
                email: o.view.email.clone(),
                amount_cents: o.view.amount_cents,
            })
        })?;
        Ok(approved.unwrap_or(Approval::Stale(None)))
    }

    async fn mark_published(
        &self,
        event: &EventId,
        order: OrderId,
        redeliver_after: Duration,
    ) -> Result<(), GateError> {
        let due = Utc::now() + chrono::Duration::from_std(redeliver_after).expect("a duration");
        self.with_order(event, order, |sale, id| {
            sale.orders.get_mut(&id).expect("the order").published = true;
            if let Some(at) = sale.outbox.get_mut(&id) {
                *at = due;
            }
        })?;
        Ok(())
    }

    async fn claim_outbox(
        &self,
        event: &EventId,
        older_than: Duration,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<OrderId>, GateError> {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::from_std(older_than).expect("a duration");
        let until = now + chrono::Duration::from_std(lease).expect("a duration");
        let mut state = self.lock()?;
        let Some(sale) = state.events.get_mut(event) else {
            return Ok(Vec::new());
        };
        let mut due: Vec<(DateTime<Utc>, OrderId)> = sale
            .outbox
            .iter()
            .filter(|(_, at)| **at <= cutoff)
            .map(|(id, at)| (*at, *id))
            .collect();
        due.sort();
        due.truncate(limit);
        // Leased: due again `lease` after `older_than` has passed once more.
        for (_, id) in &due {
            sale.outbox.insert(*id, until);
        }
        Ok(due.into_iter().map(|(_, id)| id).collect())
    }

    async fn finalize_all(
        &self,
        event: &EventId,
        orders: &[(&OrderMessage, &Persisted)],
    ) -> Result<Vec<bool>, GateError> {
        let mut state = self.lock()?;
        let mut changed = Vec::with_capacity(orders.len());
        for (msg, persisted) in orders {
            let id = msg.order_id;
            let Some(sale) = state.events.get_mut(event) else {
                changed.push(false);
                continue;
            };
            sale.outbox.remove(&id);
            let Some(o) = sale.orders.get_mut(&id) else {
                changed.push(false);
                continue;
            };
            if matches!(
                o.view.status,
                OrderStatus::Confirmed | OrderStatus::Rejected
            ) {
                changed.push(false);
                continue;
            }
            // Only paid orders reach the books; Redis' rolled-back states are the real gate's.
            let (tt, qty) = (o.view.ticket_type.clone(), i64::from(o.view.quantity.get()));
            if persisted.status == OrderStatus::Confirmed {
                o.view.status = OrderStatus::Confirmed;
                o.view.tickets = persisted.tickets.clone();
                let stock = sale.stock(&tt);
                stock.confirming -= qty;
                stock.sold += qty;
            } else {
                sale.release(id, OrderStatus::Rejected);
            }
            changed.push(true);
        }
        for (msg, _) in orders {
            if let Some(tx) = state.waiters.remove(&msg.order_id) {
                let _ = tx.send(());
            }
        }
        Ok(changed)
    }

    /// This gate never goes back in time: there is nothing a repair would change that a
    /// finalize does not.
    async fn repair(
        &self,
        event: &EventId,
        orders: &[(&OrderMessage, &Persisted)],
    ) -> Result<bool, GateError> {
        self.finalize_all(event, orders).await.map(|_| true)
    }

    /// Nothing to raise: this gate keeps no marks, as it never goes back in time.
    async fn raise_marks(
        &self,
        _event: &EventId,
        _saved: &[domain::books::GateMark],
    ) -> Result<(), GateError> {
        Ok(())
    }
}

#[async_trait]
impl WaitingRoom for MemoryGate {
    async fn room_on(&self, event: &EventId, settings: RoomSettings) -> Result<(), GateError> {
        let mut state = self.lock()?;
        let room = state.rooms.entry(event.clone()).or_default();
        (room.on, room.settings) = (true, Some(settings));
        Ok(())
    }

    async fn room_off(&self, event: &EventId) -> Result<(), GateError> {
        self.lock()?.rooms.entry(event.clone()).or_default().on = false;
        Ok(())
    }

    async fn room_pause(&self, event: &EventId, paused: bool) -> Result<(), GateError> {
        self.lock()?.rooms.entry(event.clone()).or_default().paused = paused;
        Ok(())
    }

    async fn room_join(&self, event: &EventId, identity: &str) -> Result<RoomView, GateError> {
        let now = Utc::now();
        let mut state = self.lock()?;
        let State { events, rooms, .. } = &mut *state;
        let (Some(sale), Some(room)) = (events.get(event), rooms.get_mut(event)) else {
            return Ok(off());
        };
        if !room.on {
            return Ok(off());
        }
        let open = room.advance(sale, now);
        let id = match room.who.get(identity) {
            Some(id) => id.clone(),
            None => {
                let id = uuid::Uuid::new_v4().simple().to_string();
                room.who.insert(identity.to_owned(), id.clone());
                room.joined += 1;
                if open {
                    room.place.insert(id.clone(), room.joined);
                    // Admission may have stopped only for want of fans.
                    room.advance(sale, now);
                } else {
                    room.pre.push(id.clone());
                }
                id
            }
        };
        if !open {
            // As room.lua: before the opening a join answers its queue id (the room's numbers
            // are in the snapshot).
            return Ok(RoomView {
                status: RoomStatus::Pending,
                queue_id: id,
                joined: room.joined,
                ..off()
            });
        }
        let mut now_at = room.status_of(sale, &id, open);
        if now_at.status == RoomStatus::Missed {
            // Its window ended unused: it queues again, at the back.
            room.joined += 1;
            room.place.insert(id.clone(), room.joined);
            room.advance(sale, now);
            now_at = room.status_of(sale, &id, open);
        }
        // The claim: the first join since the admission starts the fan's window.
        if now_at.status == RoomStatus::Admitted && room.claimed.insert(now_at.place) {
            let window = room.settings.map_or(Duration::ZERO, |s| s.window);
            room.admitted.insert(
                now_at.place,
                now + chrono::Duration::from_std(window).unwrap_or_default(),
            );
            return Ok(room.status_of(sale, &id, open));
        }
        Ok(now_at)
    }

    async fn room_status(&self, event: &EventId, queue_id: &str) -> Result<RoomView, GateError> {
        self.in_room(event, |room, sale, open| {
            room.status_of(sale, queue_id, open)
        })
    }

    async fn room_peek(&self, event: &EventId) -> Result<RoomView, GateError> {
        self.in_room(event, |room, sale, open| {
            let status = if open {
                RoomStatus::Open
            } else {
                RoomStatus::Before
            };
            room.view(sale, status, 0, "")
        })
    }
}

impl MemoryGate {
    /// Brings `event`'s room up to now and answers `f` of it (off when there is none).
    fn in_room(
        &self,
        event: &EventId,
        f: impl FnOnce(&Room, &Sale, bool) -> RoomView,
    ) -> Result<RoomView, GateError> {
        let now = Utc::now();
        let mut state = self.lock()?;
        let State { events, rooms, .. } = &mut *state;
        Ok(match (events.get(event), rooms.get_mut(event)) {
            (Some(sale), Some(room)) if room.on => {
                let open = room.advance(sale, now);
                f(room, sale, open)
            }
            _ => off(),
        })
    }
}

/// What an event without a room answers.
fn off() -> RoomView {
    RoomView {
        status: RoomStatus::Off,
        queue_id: String::new(),
        place: 0,
        upto: 0,
        joined: 0,
        shopping: 0,
        unsold: 0,
        sold_out: false,
        rate_per_sec: 0,
        admitted_until: None,
        paused: false,
        pre: 0,
        draw_salt: String::new(),
        admitted_key: 0,
    }
}

/// A rate limit in memory: each subject may pass `burst` times per window of `burst`
/// intervals (no gradual refill, which router tests do not need).
#[derive(Default)]
pub struct MemoryRateLimit {
    taken: Mutex<HashMap<String, Vec<DateTime<Utc>>>>,
}

#[async_trait]
impl RateLimit for MemoryRateLimit {
    async fn check(&self, subject: &str, policy: Policy) -> Option<Decision> {
        if !policy.enabled() {
            return Some(Decision::UNLIMITED);
        }
        let now = Utc::now();
        let burst = policy.burst.max(1);
        let window = Duration::from_millis(policy.interval_ms()) * burst;
        let mut taken = self.taken.lock().expect("limit lock");
        let taken = taken.entry(subject.to_owned()).or_default();
        let n = recent(taken, now, window);
        if n >= burst as usize {
            return Some(Decision::Limited {
                retry_after: Duration::from_millis(policy.interval_ms()),
            });
        }
        taken.push(now);
        Some(Decision::Allowed {
            remaining: (burst as usize - n - 1) as u64,
            reset: window,
        })
    }
}

/// A publisher in memory: what buy published, in order. [`MemoryPublisher::set_down`] makes
/// every publish fail, as in a Pub/Sub outage.
#[derive(Default)]
pub struct MemoryPublisher {
    orders: Mutex<Vec<OrderMessage>>,
    charges: Mutex<Vec<domain::OrderCharge>>,
    down: Outage,
}

impl MemoryPublisher {
    /// Every later publish fails (`false`: back up).
    pub fn set_down(&self, down: bool) {
        self.down.set(down);
    }

    /// The orders published so far.
    pub fn orders(&self) -> Vec<OrderMessage> {
        self.orders.lock().expect("publisher lock").clone()
    }

    /// The charges handed to the books so far.
    pub fn charges(&self) -> Vec<domain::OrderCharge> {
        self.charges.lock().expect("publisher lock").clone()
    }

    fn up(&self) -> Result<(), PublishError> {
        if self.down.is_on() {
            return Err(PublishError::Unavailable("the in-memory broker is down"));
        }
        Ok(())
    }
}

#[async_trait]
impl OrderPublisher for MemoryPublisher {
    async fn publish(&self, msg: &OrderMessage) -> Result<String, PublishError> {
        self.up()?;
        let mut orders = self.orders.lock().expect("publisher lock");
        orders.push(msg.clone());
        Ok(format!("m-{}", orders.len()))
    }

    async fn publish_charge(&self, charge: &domain::OrderCharge) -> Result<String, PublishError> {
        self.up()?;
        let mut charges = self.charges.lock().expect("publisher lock");
        charges.push(charge.clone());
        Ok(format!("c-{}", charges.len()))
    }
}

/// The books in memory: the same decisions as the PostgreSQL and Spanner repositories (first
/// paid first served, never beyond capacity, idempotent per order), held to them by the
/// repository conformance suite (`shared/store/tests/repo_conformance.rs`). Clones share one
/// store; [`MemoryRepository::set_down`] makes every call fail as a database outage does.
#[derive(Clone, Default)]
pub struct MemoryRepository {
    books: Arc<Mutex<Books>>,
    down: Outage,
    /// An error every batch write fails with while set (the rest works), after the number of
    /// writes still allowed to succeed.
    persist_fault: Arc<Mutex<Option<(usize, Fault)>>>,
    /// What [`store::OrderRepository::atomic_batch`] answers (`None`: no limit).
    atomic_batch: Arc<Mutex<Option<usize>>>,
}

/// Makes the error a faulty write fails with.
pub type Fault = fn() -> store::RepoError;

#[derive(Default)]
struct Books {
    events: BTreeMap<EventId, Event>,
    /// Tickets left and the price per (event, ticket type).
    for_sale: HashMap<(EventId, TicketTypeId), store::ForSale>,
    orders: BTreeMap<OrderId, store::StoredOrder>,
    /// The charge ledger: every charge the books know of, by the provider's reference.
    charges: HashMap<String, domain::OrderCharge>,
    refunds: HashMap<String, Refund>,
    /// Each process's saved mark per event (ADR 56).
    marks: BTreeMap<(EventId, String), store::GateMark>,
}

impl Books {
    /// The books' rule (ADR 53): a charge is kept when its order, as the ledger records it, is
    /// confirmed with it.
    fn kept(&self, payment_ref: &str) -> bool {
        self.charges.get(payment_ref).is_some_and(|c| {
            self.orders
                .get(&c.order_id)
                .is_some_and(|o| o.status == OrderStatus::Confirmed && o.payment_ref == payment_ref)
        })
    }
}

struct Refund {
    owed: domain::OrderCharge,
    owed_at: DateTime<Utc>,
    attempts: i64,
    next_at: DateTime<Utc>,
    done: bool,
}

impl MemoryRepository {
    /// Every later call fails as if the database were down (`false`: back up).
    pub fn set_down(&self, down: bool) {
        self.down.set(down);
    }

    /// Every later batch write fails with `fault()` (a statement timeout, a refused value, …);
    /// `None`: writes work again. Not in the conformance suite: a fault, not a behaviour.
    pub fn fail_persists_with(&self, fault: Option<Fault>) {
        *self.persist_fault.lock().expect("fault lock") = fault.map(|f| (0, f));
    }

    /// The next `ok` batch writes succeed, every later one fails with `fault()`.
    pub fn fail_persists_after(&self, ok: usize, fault: Fault) {
        *self.persist_fault.lock().expect("fault lock") = Some((ok, fault));
    }

    /// Answers `n` as the most orders one batch write decides all or nothing, as Spanner does
    /// (these books decide any batch at once, which keeps that promise for every size).
    pub fn set_atomic_batch(&self, n: usize) {
        *self.atomic_batch.lock().expect("batch lock") = Some(n);
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Books>, store::RepoError> {
        if self.down.is_on() {
            return Err(store::RepoError::Unavailable(
                "the in-memory database is down".into(),
            ));
        }
        Ok(self.books.lock().expect("books lock"))
    }
}

fn later(d: Duration) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::from_std(d).expect("a duration")
}

#[async_trait]
impl store::OrderRepository for MemoryRepository {
    async fn ping(&self) -> Result<(), store::RepoError> {
        self.lock().map(|_| ())
    }

    async fn seed(&self, event: &Event) -> Result<store::Seeded, store::RepoError> {
        let mut books = self.lock()?;
        if let Some(stored) = books.events.get(&event.id) {
            return if stored == event {
                Ok(store::Seeded::Unchanged)
            } else {
                Err(store::RepoError::Permanent(format!(
                    "event {} is already seeded with a different catalog",
                    event.id
                )))
            };
        }
        for t in &event.ticket_types {
            let sale = store::ForSale {
                left: i64::from(t.capacity),
                price_cents: t.price_cents,
                opens_at: event.sale_opens_at,
            };
            books
                .for_sale
                .insert((event.id.clone(), t.id.clone()), sale);
        }
        books.events.insert(event.id.clone(), event.clone());
        Ok(store::Seeded::Created)
    }

    async fn reset(&self, event: &EventId) -> Result<(), store::RepoError> {
        let mut books = self.lock()?;
        books.events.remove(event);
        books.for_sale.retain(|(e, _), _| e != event);
        books.orders.retain(|_, o| &o.event != event);
        books.marks.retain(|(e, _), _| e != event);
        Ok(())
    }

    fn atomic_batch(&self) -> usize {
        self.atomic_batch
            .lock()
            .expect("batch lock")
            .unwrap_or(usize::MAX)
    }

    async fn persist_batch(
        &self,
        orders: &[OrderMessage],
    ) -> Result<Vec<store::Outcome>, store::RepoError> {
        if let Some((ok, fault)) = self.persist_fault.lock().expect("fault lock").as_mut() {
            if *ok == 0 {
                return Err(fault());
            }
            *ok -= 1;
        }
        let mut books = self.lock()?;
        let (unique, positions) = store::distinct(orders);
        let fresh: Vec<&OrderMessage> = unique
            .iter()
            .copied()
            .filter(|o| !books.orders.contains_key(&o.order_id))
            .collect();
        let ledger: HashSet<String> = fresh
            .iter()
            .filter(|o| books.charges.contains_key(&o.payment_ref))
            .map(|o| o.payment_ref.clone())
            .collect();
        let decided = store::allocate(
            &fresh,
            |o| (o.event.clone(), o.ticket_type.clone()),
            &mut books.for_sale,
            &ledger,
        );
        for (o, confirmed) in store::new_charges(&fresh, &decided, &ledger) {
            let charge = domain::OrderCharge {
                order_id: o.order_id,
                payment_ref: o.payment_ref.clone(),
                amount_cents: o.amount_cents,
            };
            books.charges.insert(o.payment_ref.clone(), charge.clone());
            if !confirmed {
                let refund = Refund {
                    owed: charge,
                    owed_at: Utc::now(),
                    attempts: 1,
                    next_at: later(store::FIRST_REFUND_DUE),
                    done: false,
                };
                books.refunds.insert(o.payment_ref.clone(), refund);
            }
        }
        let mut refused = HashMap::new();
        for (o, decision) in fresh.iter().zip(decided) {
            let confirmed = match decision {
                Ok(confirmed) => confirmed,
                Err(why) => {
                    refused.insert(o.order_id, why);
                    continue;
                }
            };
            let status = if confirmed {
                OrderStatus::Confirmed
            } else {
                OrderStatus::Rejected
            };
            // Read back in code order, as the databases answer.
            let mut tickets: Vec<String> = if confirmed {
                (0..o.quantity.get())
                    .map(|_| store::ticket_code())
                    .collect()
            } else {
                Vec::new()
            };
            tickets.sort();
            let stored = store::StoredOrder {
                order_id: o.order_id,
                event: o.event.clone(),
                ticket_type: o.ticket_type.clone(),
                quantity: o.quantity.get(),
                email: o.email.as_str().to_owned(),
                amount_cents: o.amount_cents,
                status,
                payment_ref: o.payment_ref.clone(),
                persisted_at: Utc::now(),
                tickets,
            };
            books.orders.insert(o.order_id, stored);
        }
        let outcomes = unique
            .iter()
            .map(|o| match books.orders.get(&o.order_id) {
                Some(s) => Ok(Persisted {
                    status: s.status,
                    tickets: s.tickets.clone(),
                    duplicate: !fresh.iter().any(|f| f.order_id == o.order_id),
                    payment_ref: s.payment_ref.clone(),
                }),
                None => Err(refused
                    .get(&o.order_id)
                    .cloned()
                    .unwrap_or_else(|| store::Refused("no decision".into()))),
            })
            .collect();
        Ok(store::spread(outcomes, &positions))
    }

    async fn order(&self, id: OrderId) -> Result<Option<store::StoredOrder>, store::RepoError> {
        Ok(self.lock()?.orders.get(&id).cloned())
    }

    async fn inventory(&self, event: &EventId) -> Result<Vec<store::Inventory>, store::RepoError> {
        let books = self.lock()?;
        let Some(ev) = books.events.get(event) else {
            return Ok(Vec::new());
        };
        let mut types: Vec<_> = ev.ticket_types.iter().collect();
        types.sort_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        Ok(types
            .into_iter()
            .map(|t| {
                let of_type = || {
                    books
                        .orders
                        .values()
                        .filter(|o| &o.event == event && o.ticket_type == t.id)
                };
                let confirmed = || of_type().filter(|o| o.status == OrderStatus::Confirmed);
                let sold: i64 = of_type().map(|o| o.tickets.len() as i64).sum();
                let left = books.for_sale[&(event.clone(), t.id.clone())].left;
                store::Inventory {
                    ticket_type: t.id.clone(),
                    capacity: i64::from(t.capacity),
                    tickets: sold + left,
                    sold,
                    confirmed_quantity: confirmed().map(|o| i64::from(o.quantity)).sum(),
                    confirmed_orders: confirmed().count() as i64,
                    rejected_orders: of_type()
                        .filter(|o| o.status == OrderStatus::Rejected)
                        .count() as i64,
                }
            })
            .collect())
    }

    async fn events(&self) -> Result<Vec<Event>, store::RepoError> {
        Ok(self.lock()?.events.values().cloned().collect())
    }

    async fn customer_totals(
        &self,
        event: &EventId,
    ) -> Result<Vec<store::CustomerTotal>, store::RepoError> {
        let books = self.lock()?;
        let mut totals: BTreeMap<(String, String), i64> = BTreeMap::new();
        for o in books
            .orders
            .values()
            .filter(|o| &o.event == event && o.status == OrderStatus::Confirmed)
        {
            *totals
                .entry((o.ticket_type.to_string(), o.email.clone()))
                .or_default() += i64::from(o.quantity);
        }
        Ok(totals
            .into_iter()
            .map(|((tt, email), quantity)| store::CustomerTotal {
                ticket_type: TicketTypeId::parse(&tt).expect("a stored ticket type"),
                email,
                quantity,
            })
            .collect())
    }

    async fn decided_orders(
        &self,
        event: &EventId,
    ) -> Result<Vec<store::StoredOrder>, store::RepoError> {
        Ok(self
            .lock()?
            .orders
            .values()
            .filter(|o| &o.event == event)
            .cloned()
            .collect())
    }

    async fn settle_charges(
        &self,
        charges: &[domain::OrderCharge],
        lease: Duration,
    ) -> Result<Vec<domain::OrderCharge>, store::RepoError> {
        let mut books = self.lock()?;
        let mut open: Vec<domain::OrderCharge> = Vec::new();
        for c in charges {
            books
                .charges
                .entry(c.payment_ref.clone())
                .or_insert_with(|| c.clone());
            if books.kept(&c.payment_ref) {
                continue;
            }
            let entry = books
                .refunds
                .entry(c.payment_ref.clone())
                .or_insert_with(|| Refund {
                    owed: c.clone(),
                    owed_at: Utc::now(),
                    attempts: 1,
                    next_at: later(lease),
                    done: false,
                });
            if !entry.done && !open.iter().any(|o| o.payment_ref == c.payment_ref) {
                open.push(c.clone());
            }
        }
        Ok(open)
    }

    async fn charges(
        &self,
        payment_refs: &[String],
    ) -> Result<Vec<store::LedgerEntry>, store::RepoError> {
        let books = self.lock()?;
        let refs: HashSet<&String> = payment_refs.iter().collect();
        Ok(refs
            .into_iter()
            .filter_map(|r| books.charges.get(r))
            .map(|c| store::LedgerEntry {
                charge: c.clone(),
                verdict: store::Verdict::of(
                    books.kept(&c.payment_ref),
                    books.refunds.get(&c.payment_ref).map(|r| r.done),
                ),
            })
            .collect())
    }

    async fn claim_refunds(
        &self,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<domain::OrderCharge>, store::RepoError> {
        let mut books = self.lock()?;
        let now = Utc::now();
        let mut due: Vec<&mut Refund> = books
            .refunds
            .values_mut()
            .filter(|r| !r.done && r.next_at <= now)
            .collect();
        due.sort_by_key(|r| r.next_at);
        Ok(due
            .into_iter()
            .take(limit)
            .map(|r| {
                r.next_at = later(store::refund_lease(lease, r.attempts));
                r.attempts += 1;
                r.owed.clone()
            })
            .collect())
    }

    async fn refund_done(&self, payment_ref: &str) -> Result<(), store::RepoError> {
        if let Some(r) = self.lock()?.refunds.get_mut(payment_ref) {
            r.done = true;
        }
        Ok(())
    }

    async fn refunds_outstanding(&self) -> Result<(i64, Option<DateTime<Utc>>), store::RepoError> {
        let books = self.lock()?;
        let open = books.refunds.values().filter(|r| !r.done);
        Ok((open.clone().count() as i64, open.map(|r| r.owed_at).min()))
    }

    async fn save_mark(
        &self,
        event: &EventId,
        mark: &store::GateMark,
    ) -> Result<(), store::RepoError> {
        let mut books = self.lock()?;
        let saved = books
            .marks
            .entry((event.clone(), mark.writer.clone()))
            .or_insert_with(|| mark.clone());
        if saved.epoch == mark.epoch {
            saved.mark = saved.mark.max(mark.mark);
        } else {
            *saved = mark.clone();
        }
        Ok(())
    }

    async fn marks(&self, event: &EventId) -> Result<Vec<store::GateMark>, store::RepoError> {
        let books = self.lock()?;
        let of_event = books.marks.iter().filter(|((e, _), _)| e == event);
        Ok(of_event.map(|(_, m)| m.clone()).collect())
    }
}

/// The simulated payment provider, with the refunds it is asked for recorded instead of made.
#[derive(Default)]
pub struct RecordedRefunds(Mutex<Vec<domain::OrderCharge>>);

impl RecordedRefunds {
    /// The refunds asked for so far, in order.
    pub fn refunds(&self) -> Vec<domain::OrderCharge> {
        self.0.lock().expect("refunds lock").clone()
    }

    /// The charges whose refund was asked for so far, in order.
    pub fn refunded_refs(&self) -> Vec<String> {
        self.refunds().into_iter().map(|r| r.payment_ref).collect()
    }
}

#[async_trait]
impl payments::PaymentProvider for RecordedRefunds {
    async fn charge(
        &self,
        order: OrderId,
        attempt: &PaymentAttempt,
        amount_cents: i64,
        token: &str,
    ) -> Result<payments::Charge, payments::PaymentUnavailable> {
        payments::SimulatedPayments
            .charge(order, attempt, amount_cents, token)
            .await
    }

    async fn refund(
        &self,
        order_id: OrderId,
        payment_ref: &str,
        amount_cents: i64,
    ) -> Result<(), payments::PaymentUnavailable> {
        self.0
            .lock()
            .expect("refunds lock")
            .push(domain::OrderCharge {
                order_id,
                payment_ref: payment_ref.to_owned(),
                amount_cents,
            });
        Ok(())
    }
}
