//! check-availability: the read side. Availability is served from an in-process snapshot
//! that a background task refreshes from Redis every `REFRESH_MS`, so a spike of readers
//! costs no Redis round trip per request; order status is read from the gate's read model.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use domain::{EventId, OrderId, OrderStatus};
use gate::{EventSnapshot, ReadModel, RedisArgs, RoomStatus, RoomView, WaitingRoom};
use serde::Serialize;
use serde_json::value::RawValue;
use utoipa::{OpenApi, ToSchema};
use web::ApiError;
use web::HttpArgs;
use web::http::unavailable;
use web::openapi::{Always, OrderNotFound, Problem};
use web::rfc3339;

/// Configuration from the environment.
#[derive(clap::Parser, Debug)]
pub struct Config {
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub redis: RedisArgs,
    /// How often the snapshot is refreshed from Redis, in milliseconds.
    #[arg(long, env = "REFRESH_MS", default_value_t = 250)]
    pub refresh_ms: u64,
}

/// One event's availability as of the last refresh, computed once per refresh: each request
/// adds only the server's clock.
#[derive(Clone)]
struct Snapshot {
    view: AvailabilityView,
    /// The last refresh of this event failed: this is the last good snapshot.
    stale: bool,
    etag: HeaderValue,
}

impl Snapshot {
    fn new(view: AvailabilityView, second: i64, stale: bool) -> Self {
        // The tag is a digest of everything the answer says (the stock, the room's pause and
        // rate, the catalog after a reseed) and the second it was read in (Redis' clock; a
        // stale snapshot: this instance's). A 304 keeps the cached body, `server_time`
        // included, and pages count down by that clock: so a tag holds for a second at most.
        // Instances that read the same numbers in the same second give the same tag
        // (`DefaultHasher::new` has fixed keys in every process of a build).
        let mut digest = DefaultHasher::new();
        (&view, stale).hash(&mut digest);
        let etag = format!("W/\"{:016x}-{second}\"", digest.finish());
        Self {
            etag: HeaderValue::try_from(etag).expect("an ASCII ETag"),
            view,
            stale,
        }
    }

    /// The same numbers, marked stale (no Redis needed). The tag takes this second, not the
    /// last good read's: through an outage it still moves every second, so a revalidation
    /// never keeps an old `server_time`.
    fn staled(&self) -> Self {
        Self::new(self.view.clone(), Utc::now().timestamp(), true)
    }
}

/// The rendered snapshot of every seeded event, swapped whole by each refresh: a reader takes
/// no lock and touches no shared counter (a lock and an `Arc` clone per request were atomic
/// writes to memory both cores share, on the hottest path).
/// A map for the seeded events, read on every request: foldhash instead of SipHash (its keys
/// are our own event ids, so SipHash's flooding resistance buys nothing; ADR 33).
type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

type Cache = ArcSwap<FastMap<EventId, Arc<Snapshot>>>;

/// What check-availability reads of the gate: the stock and the waiting rooms.
pub trait Reads: ReadModel + WaitingRoom {}

impl<T: ReadModel + WaitingRoom + ?Sized> Reads for T {}

/// Shared state: the gate and the snapshot cache, behind one `Arc` (axum clones the state per
/// request).
pub struct AppState {
    gate: Box<dyn Reads>,
    cache: Cache,
}

/// The event's waiting room as every fan sees it (ADR 59): a fan compares its own place with
/// `admitted_upto`, so the position is read from this snapshot, not asked of Redis per fan.
#[derive(Clone, Hash, Serialize, ToSchema)]
struct RoomPeekView {
    /// `before` (the sale has not opened: fans who join now are drawn in a fair random order
    /// at the opening), `pending` (drawing that order), `open`.
    #[schema(pattern = "^(before|pending|open)$")]
    status: &'static str,
    /// Every place up to this one has been admitted.
    admitted_upto: u64,
    /// Fans who joined.
    joined: u64,
    /// Fans admitted and still within their window.
    shopping: u64,
    /// Fans admitted per second.
    rate_per_sec: u32,
    /// Nothing available now: fans still waiting are told so at once.
    sold_out: bool,
    /// The operator paused admission for a moment; the queue keeps its order.
    paused: bool,
    /// Once the order of the fans who joined before the opening is drawn: how many they are
    /// (places 1 to this), the draw's salt, and the draw key of the last of them admitted. Such
    /// a fan's key is the first 52 bits of SHA-1(salt ‖ its queue id): at most `admitted_key`,
    /// its turn has come; key / 2^52 × `drawn` is about its place. So a page learns its turn
    /// from this snapshot, not by asking for its place.
    #[serde(skip_serializing_if = "Option::is_none")]
    draw: Option<DrawView>,
}

/// See [`RoomPeekView::draw`].
#[derive(Clone, Hash, Serialize, ToSchema)]
struct DrawView {
    drawn: u64,
    salt: String,
    admitted_key: u64,
}

fn room_view(v: &RoomView) -> Option<RoomPeekView> {
    // A peek answers off, before, pending or open; off shows no room.
    if v.status == RoomStatus::Off {
        return None;
    }
    Some(RoomPeekView {
        status: v.status.as_str(),
        admitted_upto: v.upto,
        joined: v.joined,
        shopping: v.shopping,
        rate_per_sec: v.rate_per_sec,
        sold_out: v.sold_out,
        paused: v.paused,
        draw: (!v.draw_salt.is_empty()).then(|| DrawView {
            drawn: v.pre,
            salt: v.draw_salt.clone(),
            admitted_key: v.admitted_key,
        }),
    })
}

/// One ticket type's live numbers.
#[derive(Clone, Serialize, ToSchema)]
struct TicketTypeView {
    /// Slug to reserve with, e.g. `vip-3-day`.
    id: String,
    name: String,
    /// Price per ticket in cents of `currency`.
    price_cents: i64,
    #[schema(example = "EUR")]
    currency: &'static str,
    capacity: i64,
    /// Tickets neither held, being paid nor sold.
    available: i64,
    /// At most this many per e-mail address.
    per_customer_limit: u32,
    /// `paused`: the sale stops for a moment while the ticket gate recovers (reservations are
    /// answered 503 with Retry-After meanwhile).
    #[schema(pattern = "^(not_on_sale_yet|on_sale|few_left|sold_out|paused)$")]
    status: &'static str,
}

/// The availability answer as the snapshot holds it.
#[derive(Clone, Serialize, ToSchema)]
struct AvailabilityView {
    event: String,
    name: String,
    venue: String,
    /// When reservations open (RFC 3339, UTC).
    sale_opens_at: String,
    sale_open: bool,
    /// True while the ticket gate is rebuilt after an outage: nothing can be reserved until it
    /// resumes (usually within a minute); every ticket type's status says `paused`.
    paused: bool,
    /// When the numbers were read from the gate (Redis' clock).
    as_of: String,
    /// The waiting room, while it is on for the event: join it at buy's
    /// `POST /v1/events/{event}/room` and reserve with the admission token it gives.
    #[serde(skip_serializing_if = "Option::is_none")]
    room: Option<RoomPeekView>,
    // Serialised once per refresh: the bulk of the answer, the same for every request until
    // the next refresh.
    #[schema(value_type = Vec<TicketTypeView>)]
    ticket_types: Box<RawValue>,
}

impl Hash for AvailabilityView {
    // Every field but `as_of` (the refresh's clock: its second is in the tag); each named, so
    // that a new field is not left out of the ETag by accident.
    fn hash<H: Hasher>(&self, h: &mut H) {
        let Self {
            event,
            name,
            venue,
            sale_opens_at,
            sale_open,
            paused,
            as_of: _,
            room,
            ticket_types,
        } = self;
        (event, name, venue, sale_opens_at, sale_open, paused, room).hash(h);
        ticket_types.get().hash(h);
    }
}

/// `GET /v1/events/{event}/availability`: the snapshot with the server's clock.
#[derive(Serialize, ToSchema)]
struct Availability<'a> {
    /// The server's clock: count down to `sale_opens_at` with it, not the fan's.
    server_time: String,
    /// True when the gate could not be read lately: the numbers are the last known ones.
    stale: bool,
    #[schema(inline)]
    #[serde(flatten)]
    view: &'a AvailabilityView,
}

fn snapshot(snap: &EventSnapshot, room: &RoomView) -> Snapshot {
    let open = snap.read_at >= snap.catalog.sale_opens_at;
    let types: Vec<TicketTypeView> = snap
        .catalog
        .ticket_types
        .iter()
        .map(|t| {
            let s = snap.stock.get(t.id.as_str()).copied().unwrap_or_default();
            let status = if snap.paused {
                "paused"
            } else if !open {
                "not_on_sale_yet"
            } else if s.available <= 0 {
                "sold_out"
            } else if s.available * 10 <= s.capacity {
                "few_left"
            } else {
                "on_sale"
            };
            TicketTypeView {
                id: t.id.to_string(),
                name: t.name.clone(),
                price_cents: t.price_cents,
                currency: "EUR",
                capacity: s.capacity,
                available: s.available.max(0),
                per_customer_limit: t.per_customer_limit,
                status,
            }
        })
        .collect();
    let view = AvailabilityView {
        event: snap.catalog.id.to_string(),
        name: snap.catalog.name.clone(),
        venue: snap.catalog.venue.clone(),
        sale_opens_at: rfc3339::format(snap.catalog.sale_opens_at),
        sale_open: open,
        paused: snap.paused,
        as_of: rfc3339::format(snap.read_at),
        room: room_view(room),
        ticket_types: serde_json::value::to_raw_value(&types)
            .expect("ticket types serialise to JSON"),
    };
    Snapshot::new(view, snap.read_at.timestamp(), false)
}

impl AppState {
    /// State over a gate (Redis, or a double in tests); call [`AppState::refresh`] or spawn
    /// the refresher.
    pub fn new(gate: impl Reads + 'static) -> Arc<Self> {
        Arc::new(Self {
            gate: Box::new(gate),
            cache: Cache::default(),
        })
    }

    /// One refresh of every seeded event. On failure the old snapshots stay, marked stale.
    pub async fn refresh(&self) -> Result<(), gate::GateError> {
        let (gate, cache) = (&self.gate, &self.cache);
        let events = match gate.events().await {
            Ok(events) => events,
            Err(e) => {
                metrics::counter!("snapshot_refresh_failures_total").increment(1);
                let staled = cache
                    .load()
                    .iter()
                    .map(|(ev, r)| (ev.clone(), Arc::new(r.staled())))
                    .collect();
                cache.store(Arc::new(staled));
                return Err(e);
            }
        };
        // Each event on its own: one failing event keeps its last snapshot (stale) and does
        // not hold back the others.
        let mut next = FastMap::default();
        let mut failure = None;
        for ev in events {
            // The room is peeked once per refresh (it also moves admission on), never per fan.
            let read = async {
                Ok::<_, gate::GateError>((gate.refresh(&ev).await?, gate.room_peek(&ev).await?))
            };
            match read.await {
                Ok((Some(snap), room)) => {
                    record_inventory(&snap);
                    record_room(&ev, &room);
                    next.insert(ev, Arc::new(snapshot(&snap, &room)));
                }
                Ok((None, _)) => {}
                Err(e) => {
                    let old = cache.load().get(&ev).cloned();
                    if let Some(old) = old {
                        next.insert(ev, Arc::new(old.staled()));
                    }
                    failure = Some(e);
                }
            }
        }
        // An event that vanished from Redis (it restarted empty; consume-order rebuilds it
        // within seconds) keeps its last snapshot, marked stale, rather than turning 404.
        // One writer (the refresher): reading the old map and storing the new one needs no lock.
        for (ev, old) in cache.load().iter() {
            next.entry(ev.clone())
                .or_insert_with(|| Arc::new(old.staled()));
        }
        cache.store(Arc::new(next));
        match failure {
            None => {
                metrics::gauge!("snapshot_last_success_timestamp_seconds")
                    .set(Utc::now().timestamp_millis() as f64 / 1000.0);
                Ok(())
            }
            Some(e) => {
                metrics::counter!("snapshot_refresh_failures_total").increment(1);
                Err(e)
            }
        }
    }

    /// Refreshes forever at `every`; logs a failure once per outage, not per tick.
    pub fn spawn_refresher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let state = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                match state.refresh().await {
                    Ok(()) if failing => {
                        tracing::info!("snapshot refresh recovered");
                        failing = false;
                    }
                    Err(e) if !failing => {
                        tracing::warn!(error = %e, "snapshot refresh failed; serving the last snapshot as stale");
                        failing = true;
                    }
                    _ => {}
                }
            }
        })
    }
}

/// The waiting room's gauges, while it is on: fans joined, admitted so far and shopping.
fn record_room(event: &EventId, room: &RoomView) {
    if room.status == RoomStatus::Off {
        return;
    }
    let event = event.to_string();
    for (what, n) in [
        ("joined", room.joined),
        ("admitted", room.upto),
        ("shopping", room.shopping),
    ] {
        metrics::gauge!("room_fans", "event" => event.clone(), "state" => what).set(n as f64);
    }
    metrics::gauge!("room_waiting", "event" => event.clone())
        .set(room.joined.saturating_sub(room.upto) as f64);
    metrics::gauge!("room_rate_per_sec", "event" => event).set(f64::from(room.rate_per_sec));
}

/// Inventory gauges per ticket type, and the invariant's delta (0 when the books balance).
fn record_inventory(snap: &EventSnapshot) {
    let event = snap.catalog.id.to_string();
    for (tt, s) in &snap.stock {
        for (state, n) in [
            ("available", s.available),
            ("held", s.held),
            ("confirming", s.confirming),
            ("sold", s.sold),
        ] {
            metrics::gauge!("inventory_tickets", "event" => event.clone(), "ticket_type" => tt.clone(), "state" => state)
                .set(n as f64);
        }
        metrics::gauge!("inventory_capacity", "event" => event.clone(), "ticket_type" => tt.clone()).set(s.capacity as f64);
        metrics::gauge!("inventory_invariant_delta", "event" => event.clone(), "ticket_type" => tt.clone())
            .set(s.delta() as f64);
    }
}

/// check-availability's OpenAPI document (served at `/openapi.json`, committed as
/// docs/openapi/check-availability.json).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Frequency Festival VIP tickets: check-availability",
        version = "1",
        description = "The read side: live availability per VIP tier (from a snapshot refreshed every 250 ms, cache-friendly) and the status of an order. Every refusal is RFC 9457 problem+json."
    ),
    paths(availability, order),
    components(schemas(
        Availability,
        RoomPeekView,
        DrawView,
        OrderStatusView,
        OrderStatus,
        Problem
    ))
)]
pub struct ApiDoc;

/// The routes.
pub fn app(state: Arc<AppState>) -> Router {
    web::http::finish(
        Router::new()
            .route("/v1/events/{event}/availability", get(availability))
            .route("/v1/orders/{id}", get(order))
            .route("/openapi.json", web::openapi::route(&ApiDoc::openapi()))
            .with_state(state),
    )
}

/// `GET /v1/events/{event}/availability`
#[utoipa::path(
    get,
    path = "/v1/events/{event}/availability",
    summary = "Live availability per ticket type",
    params(
        ("event" = String, Path, description = "Event slug, e.g. `frequency-2027`"),
        ("If-None-Match" = Option<String>, Header, description = "The ETag of an earlier answer: 304 while nothing moved"),
    ),
    responses(
        (status = 200, description = "The numbers; `stale: true` when the gate could not be read lately", body = Availability,
            headers(
                ("ETag" = String, description = "Changes whenever the answer does (the stock, the room), and every second: a 304 keeps the cached `server_time`"),
                ("Cache-Control" = String, description = "Short: public, max-age=1, stale-while-revalidate=2"),
            )),
        (status = 304, description = "Not modified since the ETag sent"),
        (status = 404, description = "No such event", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "The answer took longer than 10 s (an overloaded instance); retry", body = Problem, content_type = "application/problem+json"),
        Always,
    )
)]
pub async fn availability(
    State(state): State<Arc<AppState>>,
    Path(event): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // Only seeded events are in the cache, so a malformed id is simply not found there.
    let cache = state.cache.load();
    let Some(snapshot) = cache.get(event.as_str()) else {
        metrics::counter!("snapshot_requests_total", "result" => "miss").increment(1);
        return Err(ApiError::NotFound("event"));
    };
    metrics::counter!("snapshot_requests_total", "result" => "hit").increment(1);
    let headers_out = [
        (header::ETAG, snapshot.etag.clone()),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=1, stale-while-revalidate=2"),
        ),
    ];
    if headers.get(header::IF_NONE_MATCH) == Some(&snapshot.etag) {
        return Ok((StatusCode::NOT_MODIFIED, headers_out).into_response());
    }
    let body = Availability {
        server_time: rfc3339::format(Utc::now()),
        stale: snapshot.stale,
        view: &snapshot.view,
    };
    Ok((headers_out, Json(body)).into_response())
}

/// An order as the fan sees it.
#[derive(Serialize, ToSchema)]
struct OrderStatusView {
    order_id: String,
    event: String,
    status: OrderStatus,
    ticket_type: String,
    quantity: u32,
    amount_cents: i64,
    currency: &'static str,
    /// While `reserved`: when the hold runs out (compare with `server_time`).
    #[serde(skip_serializing_if = "Option::is_none")]
    hold_expires_at: Option<String>,
    server_time: String,
    /// Ticket codes, once `confirmed`.
    tickets: Vec<String>,
}

/// `GET /v1/orders/{id}`
#[utoipa::path(
    get,
    path = "/v1/orders/{id}",
    summary = "An order's status (poll after paying until confirmed)",
    params(("id" = String, Path, description = "The order id from the reservation")),
    responses(
        (status = 200, description = "The order", body = OrderStatusView),
        OrderNotFound,
        (status = 503, description = "The order store is unavailable; retry after `Retry-After` seconds", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
        Always,
    )
)]
pub async fn order(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = OrderId::parse(&id).map_err(|_| ApiError::NotFound("order"))?;
    // Redis' clock, which the scripts judge holds by (not this instance's).
    let (o, now) = state
        .gate
        .find_order(id)
        .await
        .map_err(|e| match e {
            e if e.is_unavailable() => unavailable("ticket gate", &e),
            e => ApiError::Internal(e.into()),
        })?
        .ok_or(ApiError::NotFound("order"))?;
    // A hold past its deadline is expired even before a script has returned it to stock.
    let status = match (o.status, o.hold_expires_at) {
        (OrderStatus::Reserved, Some(d)) if d <= now => OrderStatus::Expired,
        (s, _) => s,
    };
    let view = OrderStatusView {
        order_id: id.to_string(),
        event: o.event.to_string(),
        status,
        ticket_type: o.ticket_type.to_string(),
        quantity: o.quantity.get(),
        amount_cents: o.amount_cents,
        currency: "EUR",
        hold_expires_at: (status == OrderStatus::Reserved)
            .then(|| o.hold_expires_at.map(rfc3339::format))
            .flatten(),
        server_time: rfc3339::format(now),
        tickets: o.tickets,
    };
    Ok((
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        Json(view),
    )
        .into_response())
}

/// Builds everything from the config and serves until SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    web::http::serve_when_ready(config.http.port, web::http::Peers::Ignored, || async {
        let state = AppState::new(config.redis.gate().await?);
        if let Err(e) = state.refresh().await {
            tracing::warn!(error = %e, "first snapshot failed; will keep trying");
        }
        state.spawn_refresher(Duration::from_millis(config.refresh_ms));
        Ok(app(state))
    })
    .await
}
