//! The fan's journey as a plain state machine: every answer the API can give moves it to a
//! state the page can show, and it says which request to make next (and when). No I/O and no
//! clock of its own: the browser driver (`browser.rs`) feeds it answers and the local time in
//! milliseconds, so every path is unit-tested on the native target.
//!
//! Times: `now` is the fan's clock (local ms); API times are the server's. `offset` (server −
//! local, measured at the middle of each request) turns one into the other, so countdowns run on
//! server time even when the fan's clock is wrong.

use crate::api::{
    Answer, Availability, Catalog, OrderStatus, ReserveRequest, Reserved, RoomAnswer, RoomPeek,
    parse_time_ms,
};

/// Automatic retries of one request after a transient failure (429, 503, network), on top of
/// the first try; then the fan decides (with the same Idempotency-Key).
pub const MAX_RETRIES: u32 = 4;
/// Order-status polls while waiting for confirmation before the page stops asking by itself.
pub const MAX_POLLS: u32 = 60;

/// What a tier looks like right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierState {
    /// No live numbers yet (the prerendered page, or availability unreachable).
    Unknown,
    NotOnSaleYet,
    OnSale,
    FewLeft,
    SoldOut,
    /// The sale stopped for a moment while the ticket gate recovers (a reservation meanwhile
    /// is answered 503 + Retry-After, and retried).
    Paused,
}

/// Live numbers of one tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub state: TierState,
    pub available: i64,
    pub price_cents: i64,
    pub limit: u32,
}

/// What the fan typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub tier: String,
    pub quantity: u32,
    pub email: String,
}

/// A field the fan has to fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormError {
    Tier,
    Quantity,
    Email,
}

/// A reservation attempt: the key is drawn once and sent again on every retry of the same
/// request, so a double click or a lost answer never reserves twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub key: String,
    pub request: ReserveRequest,
}

/// A held (or paid) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub order_id: String,
    pub tier: String,
    pub quantity: u32,
    pub email: String,
    pub amount_cents: i64,
    /// Server time (ms) when the hold runs out.
    pub expires_at: i64,
    /// How long the hold was when granted (ms): the full width of the countdown bar.
    pub granted_ms: i64,
}

/// Why a request is being retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    RateLimited,
    Busy,
    Network,
}

/// A retry that is scheduled: why, and when (local ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    pub why: Transient,
    pub at: i64,
    pub attempt: u32,
}

/// The fan's place in the event's waiting room (ADR 59).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// The address the fan joined with: the admission is for reservations to it.
    pub email: String,
    pub queue_id: String,
    /// From 1; 0 until the order of those who joined before the opening is drawn.
    pub place: u64,
    /// Joined before the opening: about where the draw put the fan (from the snapshot's draw,
    /// before the shop is asked for the exact place at its turn).
    pub place_about: Option<u64>,
    /// Fans ahead still waiting.
    pub ahead: u64,
    /// The earliest wait at the admission rate, in seconds.
    pub estimate_secs: Option<u64>,
    /// Once admitted: the token reservations carry, and when it ends (server ms).
    pub token: Option<String>,
    pub until: Option<i64>,
    /// A join is on its way (the next snapshot does not send another).
    pub asking: bool,
    /// Times the shop refused an admission this page held, and the page joined again.
    pub rejoins: u32,
}

/// Where the fan is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// Choosing tier, quantity and e-mail.
    Choosing,
    /// In the waiting room (`Journey::queue`); the reservation (`attempt`) goes out by itself
    /// once the fan is admitted.
    Queued { retry: Option<Retry> },
    /// The reservation is on its way (`attempt` holds the key).
    Reserving { retry: Option<Retry> },
    /// Tickets are held; the fan pays before `expires_at`.
    Held(Hold),
    /// The payment is on its way.
    Paying {
        hold: Hold,
        token: String,
        retry: Option<Retry>,
    },
    /// Paid; waiting for the order to be persisted.
    Confirming {
        hold: Hold,
        polls: u32,
        gave_up: bool,
    },
    /// Done: the ticket codes.
    Confirmed { hold: Hold, tickets: Vec<String> },
}

/// What the page tells the fan about the last thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    SoldOut,
    NotEnoughLeft {
        available: i64,
    },
    TooEarly,
    LimitReached {
        remaining: Option<i64>,
    },
    HoldExpired,
    Declined,
    PaymentIncomplete,
    Rejected,
    Cancelled,
    /// Sold out while the fan waited in the room.
    SoldOutWhileWaiting,
    /// Retries ran out; `Transient` says why. The next click reuses the attempt.
    GaveUp(Transient),
    Unexpected(String),
}

impl Notice {
    /// One sentence for the fan.
    pub fn message(&self) -> String {
        match self {
            Self::SoldOut => "Sold out: every pass of this tier is taken. Another tier may still have some.".into(),
            Self::NotEnoughLeft { available } => format!(
                "Not enough left: only {available} of this tier remain. Choose fewer and try again."
            ),
            Self::TooEarly => "The sale has not opened yet. The countdown shows when it does.".into(),
            Self::LimitReached { remaining: Some(0) } => {
                "You have reached the limit for this tier with this e-mail address.".into()
            }
            Self::LimitReached { remaining: Some(n) } => {
                format!("Over the limit per fan: you can add {n} more of this tier.")
            }
            Self::LimitReached { remaining: None } => "Over the limit per fan for this tier.".into(),
            Self::HoldExpired => {
                "Your hold ran out and the passes went back on sale. You can try again.".into()
            }
            Self::Declined => {
                "Payment declined. Your passes are still held: try another card before the hold runs out.".into()
            }
            Self::PaymentIncomplete => {
                "The payment did not go through. Your passes are still held: try again.".into()
            }
            Self::Rejected => {
                "Sorry, the last passes went to someone else a moment earlier. Your payment has been refunded.".into()
            }
            Self::Cancelled => "Your hold was released.".into(),
            Self::SoldOutWhileWaiting => {
                "Sold out: every VIP pass is taken. Thank you for waiting with us.".into()
            }
            Self::GaveUp(Transient::RateLimited) => {
                "Too many attempts from your connection. Wait a moment, then try again.".into()
            }
            Self::GaveUp(Transient::Busy) => {
                "The shop is very busy right now. Try again in a moment: you will not be charged twice.".into()
            }
            Self::GaveUp(Transient::Network) => {
                "No connection to the shop. Check your network and try again: you will not be charged twice.".into()
            }
            Self::Unexpected(detail) => format!("Something went wrong: {detail}"),
        }
    }

    /// Whether the notice reports a failure (announced assertively) rather than news.
    pub fn is_error(&self) -> bool {
        !matches!(self, Self::Cancelled)
    }
}

/// A request the driver should make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Reserve {
        key: String,
        request: ReserveRequest,
        delay_ms: i64,
    },
    Pay {
        order_id: String,
        token: String,
        delay_ms: i64,
    },
    Poll {
        order_id: String,
        delay_ms: i64,
    },
    Cancel {
        order_id: String,
    },
    /// Join the waiting room (again: where the fan stands, and the token once admitted).
    Join {
        email: String,
        delay_ms: i64,
    },
}

/// The whole page state.
#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    pub catalog: Catalog,
    /// Live numbers per catalog tier (same order), `None` until availability answers.
    pub live: Vec<Option<Live>>,
    /// Server ms when the sale opens.
    pub sale_opens_at: Option<i64>,
    /// Server − local clock, ms.
    pub offset: Option<i64>,
    /// Availability answered from an old snapshot (the shop's store is struggling).
    pub stale: bool,
    /// The last availability request failed.
    pub availability_down: bool,
    pub form: Form,
    pub form_error: Option<FormError>,
    pub stage: Stage,
    pub notice: Option<Notice>,
    pub attempt: Option<Attempt>,
    /// Local ms before which the shop asked us not to try again (Retry-After).
    pub blocked_until: Option<i64>,
    /// The event's waiting room, while it is on (from the availability snapshot).
    pub room: Option<RoomPeek>,
    /// The fan's place in it, once joined.
    pub queue: Option<Queue>,
}

/// Exponential backoff for the n-th retry (0-based): 1 s, 2 s, 4 s, 8 s.
pub fn backoff_ms(n: u32) -> i64 {
    1_000 * (1_i64 << n.min(3))
}

/// Delay before the n-th order-status poll: 0.5 s growing by half each time, at most 5 s.
pub fn poll_delay_ms(n: u32) -> i64 {
    let mut d = 500.0_f64;
    for _ in 0..n.min(10) {
        d *= 1.5;
    }
    (d as i64).min(5_000)
}

/// A plausible e-mail address (the API validates for real).
pub fn plausible_email(s: &str) -> bool {
    let s = s.trim();
    let Some((user, domain)) = s.rsplit_once('@') else {
        return false;
    };
    !user.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.contains(char::is_whitespace)
        && s.len() <= 254
}

fn transient(status: u16) -> Option<Transient> {
    match status {
        429 => Some(Transient::RateLimited),
        500..=599 => Some(Transient::Busy),
        _ => None,
    }
}

/// An answer's status (0: none arrived), `Retry-After`, body, and why it is worth retrying.
fn read(answer: &Answer) -> (u16, Option<u64>, &str, Option<Transient>) {
    match answer {
        Answer::Http {
            status,
            retry_after,
            body,
        } => (*status, *retry_after, body.as_str(), transient(*status)),
        Answer::Network => (0, None, "", Some(Transient::Network)),
    }
}

impl Journey {
    /// The page before any live data: what is prerendered, and where hydration starts.
    pub fn new(catalog: Catalog) -> Self {
        let tier = catalog
            .tiers
            .first()
            .map(|t| t.id.clone())
            .unwrap_or_default();
        Self {
            live: vec![None; catalog.tiers.len()],
            catalog,
            sale_opens_at: None,
            offset: None,
            stale: false,
            availability_down: false,
            form: Form {
                tier,
                quantity: 1,
                email: String::new(),
            },
            form_error: None,
            stage: Stage::Choosing,
            notice: None,
            attempt: None,
            blocked_until: None,
            room: None,
            queue: None,
        }
    }

    fn server_now(&self, now: i64) -> i64 {
        now + self.offset.unwrap_or(0)
    }

    fn learn_clock(&mut self, server_time: Option<&str>, sent: i64, received: i64) {
        if let Some(server) = server_time.and_then(parse_time_ms) {
            self.offset = Some(server - (sent + received) / 2);
        }
    }

    /// Milliseconds until the sale opens by the server's clock (≤ 0 once open), if known.
    pub fn opens_in(&self, now: i64) -> Option<i64> {
        self.sale_opens_at.map(|t| t - self.server_now(now))
    }

    /// Milliseconds left on the hold, while one is running.
    pub fn hold_left(&self, now: i64) -> Option<i64> {
        match &self.stage {
            Stage::Held(h) | Stage::Paying { hold: h, .. } => {
                Some((h.expires_at - self.server_now(now)).max(0))
            }
            _ => None,
        }
    }

    /// Index of a tier in the catalog.
    pub fn tier_index(&self, id: &str) -> Option<usize> {
        self.catalog.tiers.iter().position(|t| t.id == id)
    }

    /// The live state of a tier (Unknown before availability answers).
    pub fn tier_state(&self, i: usize) -> TierState {
        self.live
            .get(i)
            .copied()
            .flatten()
            .map_or(TierState::Unknown, |l| l.state)
    }

    /// Price per ticket: live when known, else the catalog's.
    pub fn price(&self, i: usize) -> i64 {
        self.live.get(i).copied().flatten().map_or_else(
            || self.catalog.tiers.get(i).map_or(0, |t| t.price_cents),
            |l| l.price_cents,
        )
    }

    /// Most tickets the fan can ask for in the chosen tier: the per-fan limit, and no more
    /// than are left.
    pub fn max_quantity(&self) -> u32 {
        let Some(i) = self.tier_index(&self.form.tier) else {
            return 1;
        };
        let live = self.live[i];
        let limit = live.map_or(self.catalog.tiers[i].per_customer_limit, |l| l.limit);
        match live {
            Some(l) if l.available > 0 => limit.min(u32::try_from(l.available).unwrap_or(u32::MAX)),
            _ => limit,
        }
        .max(1)
    }

    /// Whether the buy button does anything now (it is disabled otherwise, also until live
    /// availability has answered once: the prerendered page cannot know the sale's state).
    pub fn can_submit(&self, now: i64) -> bool {
        matches!(self.stage, Stage::Choosing)
            // With a waiting room a fan joins it before the opening too.
            && self.opens_in(now).is_some_and(|ms| ms <= 0 || self.room.is_some())
            && self.blocked_until.is_none_or(|t| t <= now)
            && self
                .tier_index(&self.form.tier)
                .is_some_and(|i| self.tier_state(i) != TierState::SoldOut)
    }

    /// How long until the next availability refresh: every 5 s on sale (the answer is cached
    /// for 1 s at the edge), right at the opening before it, slower while the API is down.
    pub fn availability_delay(&self, now: i64) -> i64 {
        if self.availability_down {
            return 10_000;
        }
        if matches!(self.stage, Stage::Queued { .. }) {
            // The room's progress, from the edge's copy (cached a second): a fan learns its
            // turn, or sold out, within 2 s (refresh 0.25 s + edge 1 s + this).
            return 750;
        }
        match self.opens_in(now) {
            Some(ms) if ms > 0 => (ms + 200).clamp(1_000, 30_000),
            _ => 5_000,
        }
    }

    /// An availability answer (`sent` / `received`: local ms around the request); in the
    /// waiting room it may be the fan's turn: the join that claims the admission.
    pub fn on_availability(
        &mut self,
        answer: &Answer,
        sent: i64,
        received: i64,
    ) -> Option<Command> {
        let parsed = match answer {
            Answer::Http {
                status: 200, body, ..
            } => serde_json::from_str::<Availability>(body).ok(),
            _ => None,
        };
        let Some(a) = parsed else {
            self.availability_down = true;
            return None;
        };
        self.availability_down = false;
        self.stale = a.stale;
        self.learn_clock(Some(&a.server_time), sent, received);
        self.sale_opens_at = parse_time_ms(&a.sale_opens_at).or(self.sale_opens_at);
        let first_answer = self.live.iter().all(Option::is_none);
        for t in &a.ticket_types {
            if let Some(i) = self.tier_index(&t.id) {
                let state = match t.status.as_str() {
                    "not_on_sale_yet" => TierState::NotOnSaleYet,
                    "few_left" => TierState::FewLeft,
                    "sold_out" => TierState::SoldOut,
                    "paused" => TierState::Paused,
                    "on_sale" => TierState::OnSale,
                    _ if t.available <= 0 => TierState::SoldOut,
                    _ => TierState::OnSale,
                };
                self.live[i] = Some(Live {
                    state,
                    available: t.available.max(0),
                    price_cents: t.price_cents,
                    limit: t.per_customer_limit,
                });
            }
        }
        if first_answer {
            self.offer_a_tier_with_passes_left();
        }
        let max = self.max_quantity();
        if self.form.quantity > max {
            self.form.quantity = max;
        }
        self.room = a.room;
        self.queue_step()
    }

    /// The page preselects the first tier; when the first numbers show it sold out, the first
    /// tier with passes left is offered instead. Only then: a tier that sells out while the fan
    /// fills in the form stays chosen (the button says so), never swapped for another price.
    fn offer_a_tier_with_passes_left(&mut self) {
        let default = self.catalog.tiers.first().map(|t| t.id.as_str());
        if self.stage != Stage::Choosing || default != Some(self.form.tier.as_str()) {
            return;
        }
        if self.tier_state(0) != TierState::SoldOut {
            return;
        }
        // A tier the answer did not list (Unknown) is not offered either.
        let left =
            |i: usize| !matches!(self.tier_state(i), TierState::SoldOut | TierState::Unknown);
        if let Some(i) = (0..self.catalog.tiers.len()).find(|&i| left(i)) {
            self.form.tier = self.catalog.tiers[i].id.clone();
        }
    }

    /// Whether every tier is sold out (as far as the page knows).
    fn all_sold_out(&self) -> bool {
        (0..self.catalog.tiers.len()).all(|i| self.tier_state(i) == TierState::SoldOut)
    }

    /// In the room, after a new snapshot: the fan's turn (join again to claim the token), the
    /// order drawn (join again to learn the place), the room switched off (join again: the
    /// answer says so and the reservation goes out), or sold out (the wait ends).
    fn queue_step(&mut self) -> Option<Command> {
        if self.stage != (Stage::Queued { retry: None }) {
            return None;
        }
        let sold_out = self.all_sold_out() && self.room.as_ref().is_none_or(|r| r.sold_out);
        let room = self.room.clone();
        let q = self.queue.as_mut()?;
        if q.asking {
            return None;
        }
        if sold_out {
            return self.end_wait();
        }
        let turn = match &room {
            None => true,
            // Joined before the opening: its own draw key against the last admitted one.
            Some(r) if q.place == 0 => r.draw.as_ref().is_some_and(|d| {
                let key = d.key(&q.queue_id);
                let about = d.place_about(key);
                q.place_about = Some(about);
                q.ahead = about.saturating_sub(r.admitted_upto + 1);
                key <= d.admitted_key
            }),
            Some(r) => {
                q.ahead = q.place.saturating_sub(r.admitted_upto + 1);
                q.place <= r.admitted_upto
            }
        };
        turn.then(|| {
            q.asking = true;
            Command::Join {
                email: q.email.clone(),
                delay_ms: 0,
            }
        })
    }

    /// Sold out while waiting: the wait ends, and so does the attempt it was for.
    fn end_wait(&mut self) -> Option<Command> {
        self.queue = None;
        self.attempt = None;
        self.end(Notice::SoldOutWhileWaiting)
    }

    /// The token a reservation carries, while the fan is admitted (the browser sends it as
    /// the `Admission-Token` header).
    pub fn admission_token(&self) -> Option<&str> {
        self.queue.as_ref()?.token.as_deref()
    }

    /// An admission for `email` that has not ended by the server's clock.
    fn admitted(&self, email: &str, now: i64) -> bool {
        self.queue.as_ref().is_some_and(|q| {
            q.email == email
                && q.token.is_some()
                && q.until.is_some_and(|t| t > self.server_now(now))
        })
    }

    /// Into the room with `email` (again, after an admission the shop no longer takes).
    fn join(&mut self, email: String, rejoins: u32) -> Option<Command> {
        self.queue = Some(Queue {
            email: email.clone(),
            queue_id: String::new(),
            place: 0,
            place_about: None,
            ahead: 0,
            estimate_secs: None,
            token: None,
            until: None,
            asking: true,
            rejoins,
        });
        self.stage = Stage::Queued { retry: None };
        Some(Command::Join { email, delay_ms: 0 })
    }

    /// The reservation the fan asked for, now that it may go out.
    fn reserve_now(&mut self) -> Option<Command> {
        let attempt = self.attempt.clone()?;
        self.stage = Stage::Reserving { retry: None };
        Some(Command::Reserve {
            key: attempt.key,
            request: attempt.request,
            delay_ms: 0,
        })
    }

    /// The answer to a join of the waiting room.
    pub fn on_join(&mut self, email: &str, answer: &Answer, now: i64) -> Option<Command> {
        let Stage::Queued { retry } = self.stage else {
            return None;
        };
        if self.queue.as_ref().is_none_or(|q| q.email != email) {
            return None;
        }
        let (status, retry_after, body, why) = read(answer);
        if let Some(why) = why {
            return match Self::next_retry(retry, why, retry_after, now) {
                Some((r, delay_ms)) => {
                    self.stage = Stage::Queued { retry: Some(r) };
                    Some(Command::Join {
                        email: email.to_owned(),
                        delay_ms,
                    })
                }
                None => {
                    // Joining again later keeps the place (one per address).
                    self.stage = Stage::Choosing;
                    self.notice = Some(Notice::GaveUp(why));
                    None
                }
            };
        }
        self.stage = Stage::Queued { retry: None };
        let parsed = (status == 200)
            .then(|| serde_json::from_str::<RoomAnswer>(body).ok())
            .flatten();
        let Some(r) = parsed else {
            self.queue = None;
            self.stage = Stage::Choosing;
            let problem = answer.problem();
            if problem.as_ref().and_then(|p| p.field.as_deref()) == Some("email") {
                self.form_error = Some(FormError::Email);
            }
            self.notice = Some(Notice::Unexpected(
                problem
                    .and_then(|p| p.detail)
                    .unwrap_or_else(|| format!("the shop answered {status}")),
            ));
            return None;
        };
        let server_now = self.server_now(now);
        let q = self.queue.as_mut()?;
        q.asking = false;
        (q.place, q.ahead, q.estimate_secs) = (r.place, r.ahead, r.estimate_secs);
        if !r.queue_id.is_empty() {
            q.queue_id = r.queue_id;
        }
        match r.status.as_str() {
            // No room (any more): the shop is open to all, and no admission is sent (a token
            // that no longer holds is refused).
            "off" => {
                q.token = None;
                self.room = None;
                self.reserve_now()
            }
            "admitted" => {
                q.token = r.admission_token;
                q.until = r
                    .admitted_until
                    .as_deref()
                    .and_then(parse_time_ms)
                    .or(Some(server_now + 60_000));
                self.reserve_now()
            }
            _ if r.sold_out && self.all_sold_out() => self.end_wait(),
            _ => None,
        }
    }

    /// The fan chose another tier.
    pub fn choose_tier(&mut self, id: &str) {
        if matches!(self.stage, Stage::Choosing) && self.tier_index(id).is_some() {
            self.form.tier = id.to_owned();
            self.form.quantity = self.form.quantity.min(self.max_quantity()).max(1);
            if self.form_error == Some(FormError::Tier) {
                self.form_error = None;
            }
            if matches!(
                self.notice,
                Some(Notice::SoldOut | Notice::NotEnoughLeft { .. } | Notice::LimitReached { .. })
            ) {
                self.notice = None;
            }
        }
    }

    /// The fan clicked "Reserve" (or pressed Enter). `new_key` draws a fresh Idempotency-Key,
    /// called only when this is a new attempt.
    pub fn submit(&mut self, now: i64, new_key: impl FnOnce() -> String) -> Option<Command> {
        if !matches!(self.stage, Stage::Choosing) || self.blocked_until.is_some_and(|t| t > now) {
            return None; // already on its way (double click), or the shop asked us to wait
        }
        if self.opens_in(now).is_some_and(|ms| ms > 0) && self.room.is_none() {
            self.notice = Some(Notice::TooEarly);
            return None;
        }
        let Some(i) = self.tier_index(&self.form.tier) else {
            self.form_error = Some(FormError::Tier);
            return None;
        };
        if self.tier_state(i) == TierState::SoldOut {
            self.notice = Some(Notice::SoldOut);
            return None;
        }
        if self.form.quantity == 0 || self.form.quantity > self.max_quantity() {
            self.form_error = Some(FormError::Quantity);
            return None;
        }
        let email = self.form.email.trim().to_owned();
        if !plausible_email(&email) {
            self.form_error = Some(FormError::Email);
            return None;
        }
        self.form_error = None;
        let request = ReserveRequest {
            ticket_type: self.form.tier.clone(),
            quantity: self.form.quantity,
            email,
        };
        let attempt = match self.attempt.take() {
            Some(a) if a.request == request => a, // a retry of the same request: same key
            _ => Attempt {
                key: new_key(),
                request,
            },
        };
        self.notice = None;
        let email = attempt.request.email.clone();
        self.attempt = Some(attempt);
        // The room first, unless this fan is admitted already (buying more in its window).
        if self.room.is_some() && !self.admitted(&email, now) {
            return self.join(email, 0);
        }
        self.reserve_now()
    }

    /// Schedules the next try after a transient failure, or gives up (returns `None`).
    fn next_retry(
        retry: Option<Retry>,
        why: Transient,
        retry_after: Option<u64>,
        now: i64,
    ) -> Option<(Retry, i64)> {
        let attempt = retry.map_or(0, |r| r.attempt + 1);
        if attempt >= MAX_RETRIES {
            return None;
        }
        let asked = retry_after.map_or(0, |s| i64::try_from(s).unwrap_or(60).min(60) * 1_000);
        let delay = asked.max(backoff_ms(attempt));
        Some((
            Retry {
                why,
                at: now + delay,
                attempt,
            },
            delay,
        ))
    }

    /// The answer to a reservation with `key`.
    pub fn on_reserve(
        &mut self,
        key: &str,
        answer: &Answer,
        sent: i64,
        now: i64,
    ) -> Option<Command> {
        let Stage::Reserving { retry } = self.stage else {
            return None;
        };
        let attempt = self.attempt.clone().filter(|a| a.key == key)?;
        let (status, retry_after, body, why) = read(answer);
        if let Some(why) = why {
            return match Self::next_retry(retry, why, retry_after, now) {
                Some((r, delay_ms)) => {
                    self.stage = Stage::Reserving { retry: Some(r) };
                    Some(Command::Reserve {
                        key: attempt.key,
                        request: attempt.request,
                        delay_ms,
                    })
                }
                None => {
                    // The attempt (and its key) stays: "Try again" sends the same request.
                    self.stage = Stage::Choosing;
                    self.notice = Some(Notice::GaveUp(why));
                    self.blocked_until = retry_after.map(|s| now + s.min(60) as i64 * 1_000);
                    None
                }
            };
        }
        self.stage = Stage::Choosing;
        if status == 202 || status == 200 {
            let Ok(r) = serde_json::from_str::<Reserved>(body) else {
                self.notice = Some(Notice::Unexpected(
                    "the shop's answer was unreadable".into(),
                ));
                return None;
            };
            self.learn_clock(r.server_time.as_deref(), sent, now);
            let i = self.tier_index(&attempt.request.ticket_type).unwrap_or(0);
            let hold_ms =
                i64::from(self.catalog.tiers.get(i).map_or(600, |t| t.hold_seconds)) * 1_000;
            let server_now = self.server_now(now);
            let expires_at = parse_time_ms(&r.hold_expires_at).unwrap_or(server_now + hold_ms);
            self.stage = Stage::Held(Hold {
                order_id: r.order_id,
                tier: attempt.request.ticket_type.clone(),
                quantity: attempt.request.quantity,
                email: attempt.request.email.clone(),
                amount_cents: self.price(i) * i64::from(attempt.request.quantity),
                expires_at,
                granted_ms: (expires_at - server_now).max(1),
            });
            self.attempt = None;
            self.notice = None;
            self.blocked_until = None;
            return None;
        }
        let problem = answer.problem();
        // The waiting room is on (or the admission ended): into the room, the same attempt
        // going out once admitted. A page that keeps being refused stops asking.
        if status == 403 && problem.as_ref().is_some_and(|p| p.slug() == "not-admitted") {
            let rejoins = self.queue.as_ref().map_or(0, |q| q.rejoins + 1);
            if rejoins <= 2 {
                return self.join(attempt.request.email.clone(), rejoins);
            }
        }
        // A definite refusal: the next click is a new attempt with a new key (a replay of this
        // key would only repeat the refusal).
        self.attempt = None;
        let slug = problem
            .as_ref()
            .map(|p| p.slug().to_owned())
            .unwrap_or_default();
        self.notice = Some(match (status, slug.as_str()) {
            (409, "not-enough-left") => {
                let available = problem.as_ref().and_then(|p| p.available).unwrap_or(0);
                if let Some(i) = self.tier_index(&attempt.request.ticket_type)
                    && let Some(l) = self.live[i].as_mut()
                {
                    l.available = available;
                }
                Notice::NotEnoughLeft { available }
            }
            (409, _) => {
                if let Some(i) = self.tier_index(&attempt.request.ticket_type)
                    && let Some(l) = self.live[i].as_mut()
                {
                    l.state = TierState::SoldOut;
                    l.available = 0;
                }
                Notice::SoldOut
            }
            (425, _) => {
                self.blocked_until = retry_after.map(|s| now + s.min(3_600) as i64 * 1_000);
                Notice::TooEarly
            }
            (422, "limit-exceeded") => Notice::LimitReached {
                remaining: problem.and_then(|p| p.remaining),
            },
            (422, "invalid-input") => {
                let field = problem
                    .as_ref()
                    .and_then(|p| p.field.clone())
                    .unwrap_or_default();
                self.form_error = Some(match field.as_str() {
                    "email" => FormError::Email,
                    "quantity" => FormError::Quantity,
                    _ => FormError::Tier,
                });
                Notice::Unexpected(
                    problem
                        .and_then(|p| p.detail)
                        .unwrap_or_else(|| "please check the form".into()),
                )
            }
            (404, _) => Notice::Unexpected("this sale was not found".into()),
            _ => Notice::Unexpected(
                problem
                    .and_then(|p| p.detail)
                    .unwrap_or_else(|| format!("the shop answered {status}")),
            ),
        });
        None
    }

    /// The fan paid with a (simulated) card token.
    pub fn pay(&mut self, token: &str) -> Option<Command> {
        let Stage::Held(hold) = &self.stage else {
            return None;
        };
        let hold = hold.clone();
        self.notice = None;
        let cmd = Command::Pay {
            order_id: hold.order_id.clone(),
            token: token.to_owned(),
            delay_ms: 0,
        };
        self.stage = Stage::Paying {
            hold,
            token: token.to_owned(),
            retry: None,
        };
        Some(cmd)
    }

    fn confirming(&mut self, hold: Hold) -> Option<Command> {
        self.confirming_after(hold, poll_delay_ms(0))
    }

    /// Waits for the confirmation, asking for the order's status first after `delay_ms`.
    fn confirming_after(&mut self, hold: Hold, delay_ms: i64) -> Option<Command> {
        let cmd = Command::Poll {
            order_id: hold.order_id.clone(),
            delay_ms,
        };
        self.stage = Stage::Confirming {
            hold,
            polls: 0,
            gave_up: false,
        };
        Some(cmd)
    }

    /// The answer to a payment of `order_id`.
    pub fn on_pay(&mut self, order_id: &str, answer: &Answer, now: i64) -> Option<Command> {
        let Stage::Paying { hold, token, retry } = &self.stage else {
            return None;
        };
        if hold.order_id != order_id {
            return None;
        }
        let (hold, token, retry) = (hold.clone(), token.clone(), *retry);
        let (status, retry_after, body, why) = read(answer);
        if let Some(why) = why {
            // Paying again is safe (the same order and attempt); when retries run out the
            // order may still be finished by the shop's relay, so ask for its status instead.
            return match Self::next_retry(retry, why, retry_after, now) {
                Some((r, delay_ms)) => {
                    self.stage = Stage::Paying {
                        hold: hold.clone(),
                        token: token.clone(),
                        retry: Some(r),
                    };
                    Some(Command::Pay {
                        order_id: hold.order_id,
                        token,
                        delay_ms,
                    })
                }
                None => self.confirming(hold),
            };
        }
        match status {
            // The answer waits a moment for the outcome: a decided order is read at once for
            // its ticket codes (or why it was refused).
            200..=299
                if serde_json::from_str::<OrderStatus>(body)
                    .is_ok_and(|o| o.status == "confirmed" || o.status == "rejected") =>
            {
                self.confirming_after(hold, 0)
            }
            200..=299 => self.confirming(hold),
            402 => {
                self.stage = Stage::Held(hold);
                self.notice = Some(Notice::Declined);
                None
            }
            410 => {
                self.stage = Stage::Choosing;
                self.notice = Some(Notice::HoldExpired);
                None
            }
            // Already paid, paying, cancelled or rejected: the order's status says which.
            409 => self.confirming(hold),
            _ => {
                self.stage = Stage::Held(hold);
                self.notice = Some(Notice::Unexpected(
                    answer
                        .problem()
                        .and_then(|p| p.detail)
                        .unwrap_or_else(|| format!("the shop answered {status}")),
                ));
                None
            }
        }
    }

    /// The answer to an order-status poll of `order_id`.
    pub fn on_poll(
        &mut self,
        order_id: &str,
        answer: &Answer,
        sent: i64,
        now: i64,
    ) -> Option<Command> {
        let Stage::Confirming { hold, polls, .. } = &self.stage else {
            return None;
        };
        if hold.order_id != order_id {
            return None;
        }
        let (hold, polls) = (hold.clone(), *polls + 1);
        let status = match answer {
            Answer::Http {
                status: 200, body, ..
            } => serde_json::from_str::<OrderStatus>(body).ok(),
            _ => None,
        };
        let again = |j: &mut Self, retry_after: Option<u64>| {
            if polls >= MAX_POLLS {
                j.stage = Stage::Confirming {
                    hold: hold.clone(),
                    polls,
                    gave_up: true,
                };
                return None;
            }
            j.stage = Stage::Confirming {
                hold: hold.clone(),
                polls,
                gave_up: false,
            };
            let asked = retry_after.map_or(0, |s| s.min(30) as i64 * 1_000);
            Some(Command::Poll {
                order_id: hold.order_id.clone(),
                delay_ms: poll_delay_ms(polls).max(asked),
            })
        };
        let Some(o) = status else {
            let retry_after = match answer {
                Answer::Http { retry_after, .. } => *retry_after,
                Answer::Network => None,
            };
            return again(self, retry_after);
        };
        self.learn_clock(o.server_time.as_deref(), sent, now);
        match o.status.as_str() {
            "confirmed" => {
                self.stage = Stage::Confirmed {
                    hold,
                    tickets: o.tickets,
                };
                self.notice = None;
                None
            }
            "reserved" => {
                let mut hold = hold;
                if let Some(t) = o.hold_expires_at.as_deref().and_then(parse_time_ms) {
                    hold.expires_at = t;
                }
                self.stage = Stage::Held(hold);
                self.notice = Some(Notice::PaymentIncomplete);
                None
            }
            "expired" => self.end(Notice::HoldExpired),
            "cancelled" => self.end(Notice::Cancelled),
            "rejected" => self.end(Notice::Rejected),
            _ => again(self, None),
        }
    }

    fn end(&mut self, notice: Notice) -> Option<Command> {
        self.stage = Stage::Choosing;
        self.notice = Some(notice);
        None
    }

    /// "Check again" after polling stopped by itself.
    pub fn poll_again(&mut self) -> Option<Command> {
        let Stage::Confirming {
            hold,
            gave_up: true,
            ..
        } = &self.stage
        else {
            return None;
        };
        let hold = hold.clone();
        self.confirming(hold)
    }

    /// The fan released the hold.
    pub fn cancel(&mut self) -> Option<Command> {
        let Stage::Held(hold) = &self.stage else {
            return None;
        };
        let order_id = hold.order_id.clone();
        self.end(Notice::Cancelled);
        Some(Command::Cancel { order_id })
    }

    /// Every second: a hold that ran out (by server time) ends the held stage.
    pub fn tick(&mut self, now: i64) {
        if matches!(self.stage, Stage::Held(_)) && self.hold_left(now) == Some(0) {
            self.end(Notice::HoldExpired);
        }
        if self.blocked_until.is_some_and(|t| t <= now) {
            self.blocked_until = None;
        }
    }

    /// After the confirmation: buy more (keeps the e-mail).
    pub fn start_over(&mut self) {
        if matches!(self.stage, Stage::Confirmed { .. }) {
            self.stage = Stage::Choosing;
            self.notice = None;
            self.form.quantity = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Tier;

    const T0: i64 = 1_803_895_200_000; // 2027-03-01T10:00:00Z

    fn catalog() -> Catalog {
        let tier = |id: &str, price, limit| Tier {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            price_cents: price,
            per_customer_limit: limit,
            hold_seconds: 600,
        };
        Catalog {
            event: "frequency-2027".into(),
            name: "Frequency".into(),
            venue: "St. Pölten".into(),
            tiers: vec![
                tier("vip-3-day", 34_900, 4),
                tier("backstage-lounge", 89_900, 2),
            ],
        }
    }

    fn availability(server: &str, opens: &str, left: i64, status: &str) -> Answer {
        Answer::json(
            200,
            &format!(
                r#"{{"server_time":"{server}","stale":false,"event":"frequency-2027","sale_opens_at":"{opens}","sale_open":true,
                "ticket_types":[{{"id":"vip-3-day","name":"VIP","price_cents":34900,"currency":"EUR","capacity":100,"available":{left},"per_customer_limit":4,"status":"{status}"}},
                {{"id":"backstage-lounge","name":"B","price_cents":89900,"currency":"EUR","capacity":50,"available":50,"per_customer_limit":2,"status":"on_sale"}}]}}"#
            ),
        )
    }

    /// An open sale, the fan's clock 10 s behind the server's.
    fn open_journey() -> Journey {
        let mut j = Journey::new(catalog());
        j.on_availability(
            &availability(
                "2027-03-01T10:00:10.000Z",
                "2027-03-01T09:00:00Z",
                80,
                "on_sale",
            ),
            T0 - 100,
            T0 + 100,
        );
        j.form.email = "fan@example.at".into();
        j.form.quantity = 2;
        j
    }

    fn keys() -> impl FnMut() -> String {
        let mut n = 0;
        move || {
            n += 1;
            format!("key-{n}")
        }
    }

    fn reserved(order: &str) -> Answer {
        Answer::json(
            202,
            &format!(
                r#"{{"order_id":"{order}","status":"reserved","hold_expires_at":"2027-03-01T10:10:10.000Z","server_time":"2027-03-01T10:00:10.000Z"}}"#
            ),
        )
    }

    fn busy(status: u16, retry_after: Option<u64>) -> Answer {
        Answer::Http {
            status,
            retry_after,
            body: r#"{"type":"/problems/unavailable"}"#.into(),
        }
    }

    fn key_of(c: &Command) -> String {
        match c {
            Command::Reserve { key, .. } => key.clone(),
            other => panic!("not a reserve: {other:?}"),
        }
    }

    #[test]
    fn a_page_opened_after_its_first_tier_sold_out_offers_the_next_one() {
        let first_sold_out = availability(
            "2027-03-01T10:00:00.000Z",
            "2027-03-01T09:00:00Z",
            0,
            "sold_out",
        );
        let mut j = Journey::new(catalog());
        assert_eq!(j.form.tier, "vip-3-day");
        j.on_availability(&first_sold_out, T0, T0);
        assert_eq!(j.form.tier, "backstage-lounge");
        assert!(j.can_submit(T0));

        // A tier that sells out later stays the fan's choice: no other price under its cursor.
        let mut j = open_journey();
        j.on_availability(
            &availability(
                "2027-03-01T10:00:10.000Z",
                "2027-03-01T09:00:00Z",
                0,
                "sold_out",
            ),
            T0,
            T0,
        );
        assert_eq!(j.form.tier, "vip-3-day");
        assert!(!j.can_submit(T0));

        // Everything sold out: nothing to offer, the default stays.
        let everything_sold_out = Answer::json(
            200,
            r#"{"server_time":"2027-03-01T10:00:00.000Z","stale":false,"event":"frequency-2027","sale_opens_at":"2027-03-01T09:00:00Z","sale_open":true,
            "ticket_types":[{"id":"vip-3-day","name":"VIP","price_cents":34900,"currency":"EUR","capacity":100,"available":0,"per_customer_limit":4,"status":"sold_out"},
            {"id":"backstage-lounge","name":"B","price_cents":89900,"currency":"EUR","capacity":50,"available":0,"per_customer_limit":2,"status":"sold_out"}]}"#,
        );
        let mut j = Journey::new(catalog());
        j.on_availability(&everything_sold_out, T0, T0);
        assert_eq!(j.form.tier, "vip-3-day");

        // A tier the answer does not list is not offered.
        let only_the_first = Answer::json(
            200,
            r#"{"server_time":"2027-03-01T10:00:00.000Z","stale":false,"event":"frequency-2027","sale_opens_at":"2027-03-01T09:00:00Z","sale_open":true,
            "ticket_types":[{"id":"vip-3-day","name":"VIP","price_cents":34900,"currency":"EUR","capacity":100,"available":0,"per_customer_limit":4,"status":"sold_out"}]}"#,
        );
        let mut j = Journey::new(catalog());
        j.on_availability(&only_the_first, T0, T0);
        assert_eq!(j.form.tier, "vip-3-day");

        // Not choosing (a page back from the room with its attempt): no swap.
        let mut j = Journey::new(catalog());
        j.stage = Stage::Queued { retry: None };
        j.on_availability(&first_sold_out, T0, T0);
        assert_eq!(j.form.tier, "vip-3-day");
    }

    #[test]
    fn countdown_runs_on_server_time() {
        let mut j = Journey::new(catalog());
        assert_eq!(j.opens_in(T0), None, "unknown before availability answers");
        // The fan's clock is 2 minutes fast; the server says the sale opens in 60 s.
        let local = T0 + 120_000;
        j.on_availability(
            &availability(
                "2027-03-01T10:00:00.000Z",
                "2027-03-01T10:01:00Z",
                0,
                "not_on_sale_yet",
            ),
            local - 50,
            local + 50,
        );
        assert_eq!(j.opens_in(local), Some(60_000));
        assert!(!j.can_submit(local));
        assert_eq!(j.tier_state(0), TierState::NotOnSaleYet);
        // Refresh right at the opening, not 30 s later.
        assert_eq!(j.availability_delay(local), 30_000);
        assert_eq!(j.availability_delay(local + 59_000), 1_200);
        j.form.email = "fan@example.at".into();
        assert_eq!(j.submit(local, keys()), None);
        assert_eq!(j.notice, Some(Notice::TooEarly));
    }

    #[test]
    fn happy_path_reserve_pay_confirm() {
        let mut j = open_journey();
        let now = T0;
        assert!(j.can_submit(now));
        let cmd = j.submit(now, keys()).unwrap();
        assert_eq!(
            cmd,
            Command::Reserve {
                key: "key-1".into(),
                request: ReserveRequest {
                    ticket_type: "vip-3-day".into(),
                    quantity: 2,
                    email: "fan@example.at".into()
                },
                delay_ms: 0
            }
        );
        assert_eq!(j.on_reserve("key-1", &reserved("o1"), now, now + 50), None);
        let Stage::Held(h) = &j.stage else {
            panic!("{:?}", j.stage)
        };
        assert_eq!((h.amount_cents, h.quantity), (69_800, 2));
        // 10 minutes left by the server's clock although the fan's is 10 s behind.
        assert_eq!(j.hold_left(now), Some(600_000 + 25));
        assert!(j.attempt.is_none());
        assert!(matches!(&j.stage, Stage::Held(h) if h.granted_ms == 599_975));

        let pay = j.pay("tok_approve").unwrap();
        assert!(matches!(pay, Command::Pay { ref token, .. } if token == "tok_approve"));
        assert_eq!(
            j.pay("tok_approve"),
            None,
            "a second click while paying does nothing"
        );
        let poll = j
            .on_pay(
                "o1",
                &Answer::json(202, r#"{"order_id":"o1","status":"confirming"}"#),
                now,
            )
            .unwrap();
        assert_eq!(
            poll,
            Command::Poll {
                order_id: "o1".into(),
                delay_ms: 500
            }
        );
        let again = j
            .on_poll(
                "o1",
                &Answer::json(
                    200,
                    r#"{"order_id":"o1","status":"confirming","tickets":[]}"#,
                ),
                now,
                now,
            )
            .unwrap();
        assert_eq!(
            again,
            Command::Poll {
                order_id: "o1".into(),
                delay_ms: 750
            }
        );
        let done = Answer::json(
            200,
            r#"{"order_id":"o1","status":"confirmed","tickets":["FQ-1","FQ-2"]}"#,
        );
        assert_eq!(j.on_poll("o1", &done, now, now), None);
        assert!(
            matches!(&j.stage, Stage::Confirmed { tickets, .. } if tickets == &["FQ-1", "FQ-2"])
        );
        j.start_over();
        assert_eq!(j.stage, Stage::Choosing);
        assert_eq!(j.form.email, "fan@example.at");
    }

    #[test]
    fn a_payment_answered_confirmed_reads_the_tickets_at_once() {
        let mut j = open_journey();
        let now = T0;
        j.submit(now, keys()).unwrap();
        assert_eq!(j.on_reserve("key-1", &reserved("o1"), now, now + 50), None);
        j.pay("tok_approve").unwrap();
        let poll = j
            .on_pay(
                "o1",
                &Answer::json(202, r#"{"order_id":"o1","status":"confirmed"}"#),
                now,
            )
            .unwrap();
        assert_eq!(
            poll,
            Command::Poll {
                order_id: "o1".into(),
                delay_ms: 0
            }
        );
        let done = Answer::json(
            200,
            r#"{"order_id":"o1","status":"confirmed","tickets":["FQ-1","FQ-2"]}"#,
        );
        assert_eq!(j.on_poll("o1", &done, now, now), None);
        assert!(
            matches!(&j.stage, Stage::Confirmed { tickets, .. } if tickets == &["FQ-1", "FQ-2"])
        );
        j.start_over();
        assert_eq!(j.stage, Stage::Choosing);
        assert_eq!(j.form.email, "fan@example.at");
    }

    #[test]
    fn double_click_sends_one_reservation() {
        let mut j = open_journey();
        assert!(j.submit(T0, keys()).is_some());
        assert_eq!(j.submit(T0, keys()), None);
        assert!(!j.can_submit(T0));
    }

    #[test]
    fn retries_reuse_the_key_and_respect_retry_after() {
        let mut j = open_journey();
        let mut k = keys();
        let first = j.submit(T0, &mut k).unwrap();
        // 503 with Retry-After 3: wait 3 s (more than the 1 s backoff), same key.
        let c = j.on_reserve("key-1", &busy(503, Some(3)), T0, T0).unwrap();
        assert!(matches!(&c, Command::Reserve { key, delay_ms: 3_000, .. } if key == "key-1"));
        assert!(matches!(
            j.stage,
            Stage::Reserving {
                retry: Some(Retry {
                    why: Transient::Busy,
                    ..
                })
            }
        ));
        // Network down: backoff grows, still the same key.
        let c = j.on_reserve("key-1", &Answer::Network, T0, T0).unwrap();
        assert!(matches!(&c, Command::Reserve { key, delay_ms: 2_000, .. } if key == "key-1"));
        let c = j.on_reserve("key-1", &busy(429, Some(1)), T0, T0).unwrap();
        assert!(matches!(
            &c,
            Command::Reserve {
                delay_ms: 4_000,
                ..
            }
        ));
        let c = j.on_reserve("key-1", &busy(502, None), T0, T0).unwrap();
        assert!(matches!(
            &c,
            Command::Reserve {
                delay_ms: 8_000,
                ..
            }
        ));
        // Retries exhausted: the fan decides; Retry-After blocks the button meanwhile.
        assert_eq!(j.on_reserve("key-1", &busy(429, Some(5)), T0, T0), None);
        assert_eq!(j.notice, Some(Notice::GaveUp(Transient::RateLimited)));
        assert!(!j.can_submit(T0 + 4_000));
        j.tick(T0 + 5_000);
        assert!(j.can_submit(T0 + 5_000));
        // "Try again" with the same form sends the same key: never two orders.
        let again = j.submit(T0 + 5_000, &mut k).unwrap();
        assert_eq!(key_of(&again), key_of(&first));
        // A changed form is a new attempt with a new key.
        j.on_reserve("key-1", &Answer::Network, T0, T0);
        let mut j2 = j.clone();
        j2.stage = Stage::Choosing;
        j2.form.quantity = 1;
        assert_eq!(key_of(&j2.submit(T0 + 6_000, &mut k).unwrap()), "key-2");
    }

    #[test]
    fn late_answers_of_old_requests_are_ignored() {
        let mut j = open_journey();
        j.submit(T0, keys());
        assert_eq!(j.on_reserve("other-key", &reserved("o9"), T0, T0), None);
        assert!(matches!(j.stage, Stage::Reserving { .. }));
        j.on_reserve("key-1", &reserved("o1"), T0, T0);
        assert_eq!(
            j.on_pay("o1", &Answer::json(202, "{}"), T0),
            None,
            "not paying"
        );
        j.cancel();
        assert_eq!(
            j.on_poll(
                "o1",
                &Answer::json(200, r#"{"order_id":"o1","status":"confirmed"}"#),
                T0,
                T0
            ),
            None
        );
        assert_eq!(j.stage, Stage::Choosing);
    }

    #[test]
    fn refusals_of_the_reservation() {
        let cases = [
            (
                Answer::json(409, r#"{"type":"/problems/sold-out"}"#),
                Notice::SoldOut,
            ),
            (
                Answer::json(409, r#"{"type":"/problems/not-enough-left","available":1}"#),
                Notice::NotEnoughLeft { available: 1 },
            ),
            (
                Answer::json(
                    422,
                    r#"{"type":"/problems/limit-exceeded","limit":4,"remaining":1}"#,
                ),
                Notice::LimitReached { remaining: Some(1) },
            ),
            (
                Answer::Http {
                    status: 425,
                    retry_after: Some(30),
                    body: r#"{"type":"/problems/sale-not-open"}"#.into(),
                },
                Notice::TooEarly,
            ),
        ];
        for (answer, notice) in cases {
            let mut j = open_journey();
            j.submit(T0, keys());
            assert_eq!(j.on_reserve("key-1", &answer, T0, T0), None);
            assert_eq!(j.stage, Stage::Choosing);
            assert_eq!(j.notice.as_ref(), Some(&notice));
            assert!(
                j.attempt.is_none(),
                "a refusal is final: the next click is a new attempt"
            );
            assert!(!notice.message().is_empty());
        }
        // Sold out marks the tier and disables the button for it, not for the others.
        let mut j = open_journey();
        j.submit(T0, keys());
        j.on_reserve(
            "key-1",
            &Answer::json(409, r#"{"type":"/problems/sold-out"}"#),
            T0,
            T0,
        );
        assert_eq!(j.tier_state(0), TierState::SoldOut);
        assert!(!j.can_submit(T0));
        j.choose_tier("backstage-lounge");
        assert!(j.can_submit(T0));
        assert_eq!(j.notice, None);
        // Too early blocks until Retry-After.
        let mut j = open_journey();
        j.submit(T0, keys());
        j.on_reserve(
            "key-1",
            &Answer::Http {
                status: 425,
                retry_after: Some(30),
                body: String::new(),
            },
            T0,
            T0,
        );
        assert_eq!(j.blocked_until, Some(T0 + 30_000));
        // Invalid e-mail from the server marks the field.
        let mut j = open_journey();
        j.submit(T0, keys());
        j.on_reserve(
            "key-1",
            &Answer::json(
                422,
                r#"{"type":"/problems/invalid-input","field":"email","detail":"bad e-mail"}"#,
            ),
            T0,
            T0,
        );
        assert_eq!(j.form_error, Some(FormError::Email));
    }

    #[test]
    fn the_form_is_checked_before_sending() {
        let mut j = open_journey();
        j.form.email = "not-an-address".into();
        assert_eq!(j.submit(T0, keys()), None);
        assert_eq!(j.form_error, Some(FormError::Email));
        j.form.email = " fan@example.at ".into();
        j.form.quantity = 5; // over the limit of 4
        assert_eq!(j.submit(T0, keys()), None);
        assert_eq!(j.form_error, Some(FormError::Quantity));
        j.form.quantity = 4;
        let c = j.submit(T0, keys()).unwrap();
        assert!(
            matches!(c, Command::Reserve { request: ReserveRequest { ref email, .. }, .. } if email == "fan@example.at")
        );
        for (s, ok) in [
            ("a@b.at", true),
            ("a@b", false),
            ("@b.at", false),
            ("a b@c.at", false),
            ("a@.at", false),
        ] {
            assert_eq!(plausible_email(s), ok, "{s}");
        }
    }

    #[test]
    fn quantity_is_capped_by_what_is_left() {
        let mut j = Journey::new(catalog());
        assert_eq!(
            j.max_quantity(),
            4,
            "the catalog's limit before live numbers"
        );
        j.form.quantity = 4;
        j.on_availability(
            &availability(
                "2027-03-01T10:00:00Z",
                "2027-03-01T09:00:00Z",
                3,
                "few_left",
            ),
            T0,
            T0,
        );
        assert_eq!((j.max_quantity(), j.form.quantity), (3, 3));
        assert_eq!(j.tier_state(0), TierState::FewLeft);
        j.on_availability(
            &availability(
                "2027-03-01T10:00:00Z",
                "2027-03-01T09:00:00Z",
                0,
                "sold_out",
            ),
            T0,
            T0,
        );
        assert_eq!(j.tier_state(0), TierState::SoldOut);
        assert!(!j.can_submit(T0));
    }

    #[test]
    fn a_paused_sale_says_so_and_still_lets_the_fan_try() {
        let mut j = open_journey();
        j.on_availability(
            &availability("2027-03-01T10:00:00Z", "2027-03-01T09:00:00Z", 40, "paused"),
            T0,
            T0,
        );
        assert_eq!(j.tier_state(0), TierState::Paused);
        // A reservation meanwhile is answered 503 + Retry-After, which the journey retries with
        // the same key; the numbers are still the last ones read.
        assert!(j.can_submit(T0));
        assert_eq!(j.max_quantity(), 4);
    }

    #[test]
    fn availability_down_keeps_the_last_numbers() {
        let mut j = open_journey();
        j.on_availability(&Answer::Network, T0, T0);
        assert!(j.availability_down);
        assert_eq!(j.tier_state(0), TierState::OnSale);
        assert_eq!(j.availability_delay(T0), 10_000);
        j.on_availability(&Answer::json(503, "{}"), T0, T0);
        assert!(j.availability_down);
    }

    #[test]
    fn hold_expires_by_server_time() {
        let mut j = open_journey();
        j.submit(T0, keys());
        j.on_reserve("key-1", &reserved("o1"), T0, T0);
        j.tick(T0 + 599_000);
        assert!(matches!(j.stage, Stage::Held(_)));
        j.tick(T0 + 600_000);
        assert_eq!(j.stage, Stage::Choosing);
        assert_eq!(j.notice, Some(Notice::HoldExpired));
    }

    #[test]
    fn payment_outcomes() {
        let held = || {
            let mut j = open_journey();
            j.submit(T0, keys());
            j.on_reserve("key-1", &reserved("o1"), T0, T0);
            j.pay("tok_x");
            j
        };
        // Declined: the hold is kept, another card can be tried.
        let mut j = held();
        assert_eq!(
            j.on_pay(
                "o1",
                &Answer::json(402, r#"{"type":"/problems/payment-declined"}"#),
                T0
            ),
            None
        );
        assert!(matches!(j.stage, Stage::Held(_)));
        assert_eq!(j.notice, Some(Notice::Declined));
        assert!(j.pay("tok_approve").is_some());
        // Expired hold.
        let mut j = held();
        j.on_pay(
            "o1",
            &Answer::json(410, r#"{"type":"/problems/hold-expired"}"#),
            T0,
        );
        assert_eq!(
            (j.stage.clone(), j.notice.clone()),
            (Stage::Choosing, Some(Notice::HoldExpired))
        );
        // Provider down: retried with backoff, then the order's status decides.
        let mut j = held();
        let mut cmd = j.on_pay("o1", &busy(503, Some(2)), T0);
        assert!(matches!(
            cmd,
            Some(Command::Pay {
                delay_ms: 2_000,
                ..
            })
        ));
        for _ in 0..MAX_RETRIES {
            cmd = j.on_pay("o1", &Answer::Network, T0);
        }
        assert!(matches!(cmd, Some(Command::Poll { .. })), "{cmd:?}");
        // ... which may say the payment never happened: back to the hold.
        let back = Answer::json(
            200,
            r#"{"order_id":"o1","status":"reserved","hold_expires_at":"2027-03-01T10:09:00Z"}"#,
        );
        assert_eq!(j.on_poll("o1", &back, T0, T0), None);
        assert!(matches!(&j.stage, Stage::Held(h) if h.expires_at == T0 + 540_000));
        assert_eq!(j.notice, Some(Notice::PaymentIncomplete));
        // Conflict (already paid by a retry that got lost): poll.
        let mut j = held();
        assert!(matches!(
            j.on_pay("o1", &Answer::json(409, "{}"), T0),
            Some(Command::Poll { .. })
        ));
        // Rejected after payment (the last tickets went elsewhere): refunded.
        let rejected = Answer::json(200, r#"{"order_id":"o1","status":"rejected"}"#);
        j.on_poll("o1", &rejected, T0, T0);
        assert_eq!(j.notice, Some(Notice::Rejected));
    }

    #[test]
    fn polling_backs_off_and_stops() {
        let mut j = open_journey();
        j.submit(T0, keys());
        j.on_reserve("key-1", &reserved("o1"), T0, T0);
        j.pay("tok_approve");
        j.on_pay("o1", &Answer::json(202, "{}"), T0);
        let mut delays = vec![];
        for _ in 0..MAX_POLLS {
            match j.on_poll("o1", &Answer::Network, T0, T0) {
                Some(Command::Poll { delay_ms, .. }) => delays.push(delay_ms),
                None => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays.len() as u32, MAX_POLLS - 1);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*delays.last().unwrap(), 5_000);
        assert!(matches!(j.stage, Stage::Confirming { gave_up: true, .. }));
        assert!(matches!(
            j.poll_again(),
            Some(Command::Poll { delay_ms: 500, .. })
        ));
        // Retry-After on a 503 stretches the delay.
        let c = j.on_poll("o1", &busy(503, Some(7)), T0, T0);
        assert!(matches!(
            c,
            Some(Command::Poll {
                delay_ms: 7_000,
                ..
            })
        ));
    }

    #[test]
    fn cancel_releases_the_hold() {
        let mut j = open_journey();
        j.submit(T0, keys());
        j.on_reserve("key-1", &reserved("o1"), T0, T0);
        assert_eq!(
            j.cancel(),
            Some(Command::Cancel {
                order_id: "o1".into()
            })
        );
        assert_eq!(j.notice, Some(Notice::Cancelled));
        assert!(!Notice::Cancelled.is_error());
        assert_eq!(j.cancel(), None);
    }

    #[test]
    fn backoffs() {
        assert_eq!(
            (0..5).map(backoff_ms).collect::<Vec<_>>(),
            [1_000, 2_000, 4_000, 8_000, 8_000]
        );
        assert_eq!(poll_delay_ms(0), 500);
        assert_eq!(poll_delay_ms(50), 5_000);
    }

    /// The availability snapshot with a waiting room (`room` is its JSON, or none).
    fn with_room(server: &str, opens: &str, left: i64, status: &str, room: &str) -> Answer {
        let Answer::Http { body, .. } = availability(server, opens, left, status) else {
            unreachable!()
        };
        let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if !room.is_empty() {
            v["room"] = serde_json::from_str(room).unwrap();
        }
        if left == 0 {
            v["ticket_types"][1]["available"] = 0.into();
            v["ticket_types"][1]["status"] = "sold_out".into();
        }
        Answer::json(200, &v.to_string())
    }

    /// The room once drawn: 8 fans joined before the opening; admitted up to the key given.
    fn drawn(upto: u64, admitted_key: u64) -> String {
        format!(
            r#"{{"status":"open","admitted_upto":{upto},"joined":9,"shopping":0,"rate_per_sec":2,"sold_out":false,"paused":false,"draw":{{"drawn":8,"salt":"s","admitted_key":{admitted_key}}}}}"#
        )
    }

    fn room(status: &str, upto: u64, sold_out: bool) -> String {
        format!(
            r#"{{"status":"{status}","admitted_upto":{upto},"joined":9,"shopping":0,"rate_per_sec":2,"sold_out":{sold_out},"paused":false}}"#
        )
    }

    fn joined(status: &str, place: u64, extra: &str) -> Answer {
        Answer::json(
            200,
            &format!(
                r#"{{"status":"{status}","queue_id":"q1","place":{place},"ahead":3,"admitted_upto":1,"joined":9,"unsold":10,"sold_out":false,"rate_per_sec":2{extra}}}"#
            ),
        )
    }

    /// Before the opening, with the room on: the fan joins, learns its place at the opening,
    /// waits, and the reservation goes out by itself with the token once the snapshot says its
    /// turn came.
    #[test]
    fn a_fan_joins_the_room_before_the_opening_waits_and_reserves_when_admitted() {
        let mut j = Journey::new(catalog());
        let before = with_room(
            "2027-03-01T10:00:00.000Z",
            "2027-03-01T10:01:00Z",
            80,
            "not_on_sale_yet",
            &room("before", 0, false),
        );
        assert_eq!(j.on_availability(&before, T0, T0), None);
        j.form.email = "fan@example.at".into();
        assert!(j.can_submit(T0), "a fan joins the room before the opening");
        let cmd = j.submit(T0, keys()).unwrap();
        assert_eq!(
            cmd,
            Command::Join {
                email: "fan@example.at".into(),
                delay_ms: 0
            }
        );
        assert!(matches!(j.stage, Stage::Queued { retry: None }));
        assert_eq!(
            j.on_join("fan@example.at", &joined("pending", 0, ""), T0),
            None
        );
        let q = j.queue.as_ref().unwrap();
        assert_eq!((q.place, q.queue_id.as_str()), (0, "q1"));
        // Drawing: nothing to ask yet. Drawn: the page knows about where the fan is from its
        // own draw key, and asks nothing until that key is admitted.
        let drawing = with_room(
            "2027-03-01T10:01:00.500Z",
            "2027-03-01T10:01:00Z",
            80,
            "on_sale",
            &room("pending", 0, false),
        );
        assert_eq!(j.on_availability(&drawing, T0, T0), None);
        let not_yet = with_room(
            "2027-03-01T10:01:01.000Z",
            "2027-03-01T10:01:00Z",
            80,
            "on_sale",
            &drawn(1, 0),
        );
        assert_eq!(j.on_availability(&not_yet, T0, T0), None);
        let about = j.queue.as_ref().unwrap().place_about.unwrap();
        assert!((1..=8).contains(&about), "{about}");
        let turn = with_room(
            "2027-03-01T10:01:01.500Z",
            "2027-03-01T10:01:00Z",
            80,
            "on_sale",
            &drawn(8, 1 << 52),
        );
        assert!(matches!(
            j.on_availability(&turn, T0, T0),
            Some(Command::Join { .. })
        ));
        assert_eq!(
            j.on_availability(&turn, T0, T0),
            None,
            "one join on its way at a time"
        );
        // The shop's answer is the truth (here: not yet, place 5).
        assert_eq!(
            j.on_join("fan@example.at", &joined("waiting", 5, ""), T0),
            None
        );
        assert_eq!(j.queue.as_ref().unwrap().place, 5);
        // Not yet (admitted up to 3); then its turn: the join that claims the token.
        let three = with_room(
            "2027-03-01T10:01:02.000Z",
            "2027-03-01T10:01:00Z",
            80,
            "on_sale",
            &room("open", 3, false),
        );
        assert_eq!(j.on_availability(&three, T0, T0), None);
        assert_eq!(j.queue.as_ref().unwrap().ahead, 1);
        let five = with_room(
            "2027-03-01T10:01:03.000Z",
            "2027-03-01T10:01:00Z",
            80,
            "on_sale",
            &room("open", 5, false),
        );
        assert!(matches!(
            j.on_availability(&five, T0, T0),
            Some(Command::Join { .. })
        ));
        let admitted = joined(
            "admitted",
            5,
            r#","admission_token":"tok-5","admitted_until":"2027-03-01T10:05:00Z""#,
        );
        let reserve = j.on_join("fan@example.at", &admitted, T0).unwrap();
        assert!(
            matches!(&reserve, Command::Reserve { key, .. } if key == "key-1"),
            "{reserve:?}"
        );
        assert_eq!(j.admission_token(), Some("tok-5"));
        assert!(matches!(j.stage, Stage::Reserving { .. }));
    }

    #[test]
    fn sold_out_ends_the_wait() {
        let mut j = Journey::new(catalog());
        let open = with_room(
            "2027-03-01T10:00:00.000Z",
            "2027-03-01T09:00:00Z",
            80,
            "on_sale",
            &room("open", 1, false),
        );
        j.on_availability(&open, T0, T0);
        j.form.email = "fan@example.at".into();
        assert!(matches!(j.submit(T0, keys()), Some(Command::Join { .. })));
        j.on_join("fan@example.at", &joined("waiting", 40, ""), T0);
        let gone = with_room(
            "2027-03-01T10:00:05.000Z",
            "2027-03-01T09:00:00Z",
            0,
            "sold_out",
            &room("open", 12, true),
        );
        assert_eq!(j.on_availability(&gone, T0, T0), None);
        assert_eq!(j.stage, Stage::Choosing);
        assert_eq!(j.notice, Some(Notice::SoldOutWhileWaiting));
        assert!(j.queue.is_none() && j.attempt.is_none());
    }

    #[test]
    fn a_refused_admission_goes_back_into_the_room_and_a_room_turned_off_lets_the_fan_in() {
        let mut j = open_journey();
        // The page did not know of a room: the shop says there is one.
        let cmd = j.submit(T0, keys()).unwrap();
        let key = key_of(&cmd);
        let refused = Answer::json(403, r#"{"type":"/problems/not-admitted","detail":"join"}"#);
        let join = j.on_reserve(&key, &refused, T0, T0).unwrap();
        assert_eq!(
            join,
            Command::Join {
                email: "fan@example.at".into(),
                delay_ms: 0
            }
        );
        // The room answers off (switched off meanwhile): the same reservation goes out.
        let again = j
            .on_join("fan@example.at", &joined("off", 0, ""), T0)
            .unwrap();
        assert_eq!(key_of(&again), key);
        // Refused again and again: the page stops asking after a few rejoins.
        for _ in 0..3 {
            j.on_reserve(&key, &refused, T0, T0);
            j.on_join("fan@example.at", &joined("off", 0, ""), T0);
        }
        assert_eq!(j.on_reserve(&key, &refused, T0, T0), None);
        assert!(matches!(j.notice, Some(Notice::Unexpected(_))));
    }
}
