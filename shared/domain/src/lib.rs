//! Domain types: validated newtypes (parse, don't validate) and the catalog of the sale.

pub mod books;
pub mod room;
pub mod signing;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

/// Why a value from outside was refused; the message is safe to show a fan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    /// The request field the problem is about (JSON name).
    pub field: &'static str,
    /// What is wrong, in words a fan understands.
    pub message: String,
}

impl Invalid {
    /// A refusal of `field` with a human message.
    pub fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

fn slug(field: &'static str, raw: &str, max: usize) -> Result<String, Invalid> {
    let ok = !raw.is_empty()
        && raw.len() <= max
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !raw.starts_with('-');
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(Invalid::new(
            field,
            format!("must be 1-{max} characters of a-z, 0-9 and '-'"),
        ))
    }
}

macro_rules! slug_newtype {
    ($(#[$doc:meta])* $name:ident, $field:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Parses a slug: lowercase ASCII letters, digits and dashes.
            pub fn parse(raw: &str) -> Result<Self, Invalid> {
                slug($field, raw, 64).map(Self)
            }
            /// The slug as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl TryFrom<String> for $name {
            type Error = Invalid;
            fn try_from(s: String) -> Result<Self, Invalid> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
        // Lets maps keyed by the newtype be probed with a raw `&str` (same hash and equality).
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

slug_newtype!(
    /// An event, e.g. `frequency-2027`.
    EventId,
    "event"
);
slug_newtype!(
    /// A ticket type within an event, e.g. `vip-3-day`.
    TicketTypeId,
    "ticket_type"
);

/// An order's id: a UUID, never a sequence, so keys do not hotspot (random, or derived from the
/// Idempotency-Key for a reservation: ADR 30).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OrderId(pub Uuid);

impl OrderId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
    /// Parses the hyphenated UUID form.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| Invalid::new("order_id", "must be a UUID"))
    }
}

impl Default for OrderId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// How many tickets one order asks for (1..=20; the ticket type's own limit applies on top).
/// Read from a message through [`Quantity::parse`] too: a number out of range never gets in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Quantity(u32);

impl TryFrom<u32> for Quantity {
    type Error = Invalid;
    fn try_from(n: u32) -> Result<Self, Invalid> {
        Self::parse(i64::from(n))
    }
}

impl From<Quantity> for u32 {
    fn from(q: Quantity) -> u32 {
        q.0
    }
}

impl Quantity {
    /// The most any single order may ask for, whatever the ticket type.
    pub const MAX: u32 = 20;
    /// Parses a requested quantity.
    pub fn parse(n: i64) -> Result<Self, Invalid> {
        if (1..=i64::from(Self::MAX)).contains(&n) {
            Ok(Self(n as u32))
        } else {
            Err(Invalid::new(
                "quantity",
                format!("must be between 1 and {}", Self::MAX),
            ))
        }
    }
    /// The number.
    pub fn get(self) -> u32 {
        self.0
    }
}

/// A fan's e-mail address as the mailbox it reaches: trimmed, lower-cased, without a `+tag`,
/// and for Gmail without dots. The per-customer limit and the per-e-mail rate limit key on
/// it, so `Fan+1@x.at` is `fan@x.at` (docs/DECISIONS.md, ADR 38). Read from a message
/// through [`Email::parse`] too (a normalised address parses to itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Email(String);

/// What a message or the gate gives back is an address `parse` accepted when the order was
/// made, perhaps under an older rule (before NFKC, say): read it as it was stored when today's
/// rule would refuse it, so a paid order is never lost to a rule that changed since. Anything
/// no rule could have produced is still refused.
impl TryFrom<String> for Email {
    type Error = Invalid;
    fn try_from(s: String) -> Result<Self, Invalid> {
        Self::parse(&s).or_else(|e| Self::as_stored(s).ok_or(e))
    }
}

impl Email {
    /// An address as an earlier `parse` left it: lower-cased, trimmed, no spaces, one `@`
    /// between a local part and a dotted domain.
    fn as_stored(s: String) -> Option<Self> {
        let (local, domain) = s.split_once('@')?;
        let plausible = s.len() <= 254
            && s == s.trim()
            && s == s.to_lowercase()
            && !s.chars().any(|c| c.is_whitespace() || c.is_control())
            && !local.is_empty()
            && domain.contains('.')
            && !domain.contains('@');
        plausible.then_some(Self(s))
    }
}

impl From<Email> for String {
    fn from(e: Email) -> String {
        e.0
    }
}

impl Email {
    /// Parses a plausible address: one `@`, a dotted domain, no spaces, at most 254 bytes.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let s = raw.trim();
        // Nearly every address is ASCII: byte-wise lowercasing and checks decide the same as
        // the Unicode ones and cost far less, on every reservation.
        let (s, spaced) = if s.is_ascii() {
            let s = s.to_ascii_lowercase();
            let spaced = s
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control());
            (s, spaced)
        } else {
            // One mailbox, one spelling (ADR 38): NFKC folds the compatibility forms a bot may
            // vary (full-width letters, ligatures), and an invisible character (a zero-width
            // space or joiner, a direction mark) is refused rather than counted apart.
            let s = s.nfkc().collect::<String>().to_lowercase();
            let spaced = s
                .chars()
                .any(|c| c.is_whitespace() || c.is_control() || invisible(c));
            (s, spaced)
        };
        let bad = || Invalid::new("email", "must be a valid e-mail address");
        if s.len() > 254 || spaced {
            return Err(bad());
        }
        let (local, domain) = s.split_once('@').ok_or_else(bad)?;
        let domain_ok = domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
            && !domain.contains('@');
        if local.is_empty() || local.len() > 64 || !domain_ok {
            return Err(bad());
        }
        let gmail = matches!(domain, "gmail.com" | "googlemail.com");
        if gmail || local.contains('+') {
            return mailbox(local, domain, gmail).map(Self).ok_or_else(bad);
        }
        Ok(Self(s))
    }
    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A format character that shows as nothing: soft hyphen, zero-width space, joiners and
/// marks, directional controls, word joiner and invisible operators, byte-order mark.
fn invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
    )
}

/// The mailbox an address is delivered to (`None`: nothing is left of its local part). A
/// sub-address (`+tag`) reaches the base address's mailbox at the providers that have them
/// (Gmail, Outlook, iCloud, Fastmail, Proton, …); where a provider has none, a `+` in a local
/// part is rare enough to count with the base address. Gmail ignores dots, and googlemail.com
/// is gmail.com. Other domains keep their dots: one hosted by Google Workspace ignores them
/// too, but nothing in the address says so (the per-client hold cap bounds what is left).
fn mailbox(local: &str, domain: &str, gmail: bool) -> Option<String> {
    let base = local.split_once('+').map_or(local, |(base, _)| base);
    let (base, domain) = if gmail {
        (base.replace('.', ""), "gmail.com")
    } else {
        (base.to_owned(), domain)
    };
    (!base.is_empty()).then(|| format!("{base}@{domain}"))
}

/// One try at paying an order: with the order, the payment provider's idempotency key. Drawn at
/// random, never counted: a Redis that went back in time must not hand out again an attempt a
/// charge already used, or the provider answers with that charge (perhaps refunded since) and
/// the order is paid with money the fan got back.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PaymentAttempt(String);

impl PaymentAttempt {
    /// A fresh attempt.
    pub fn new() -> Self {
        Self(Uuid::new_v4().simple().to_string())
    }
    /// An attempt as the gate stored it: 1-64 visible ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new(
                "attempt",
                "must be 1-64 visible ASCII characters",
            ))
        }
    }
    /// The attempt as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PaymentAttempt {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PaymentAttempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `Idempotency-Key` a client sends with a reservation: 8-128 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Parses the header value.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let ok = (8..=128).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(Invalid::new(
                "Idempotency-Key",
                "must be 8-128 visible ASCII characters (a UUID is ideal)",
            ))
        }
    }
    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An opaque token from the payment form (a secret: never logged).
#[derive(Clone, Debug)]
pub struct PaymentToken(secrecy::SecretString);

impl PaymentToken {
    /// Parses a token: 1-256 visible ASCII characters.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        if (1..=256).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Self(raw.into()))
        } else {
            Err(Invalid::new(
                "payment_token",
                "must be 1-256 visible ASCII characters",
            ))
        }
    }
    /// The token.
    pub fn expose(&self) -> &str {
        secrecy::ExposeSecret::expose_secret(&self.0)
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    /// Tickets held for the fan until the hold deadline.
    Reserved,
    /// Paid (or being charged); on its way through Pub/Sub to the database.
    Confirming,
    /// Persisted with ticket codes.
    Confirmed,
    /// The hold ran out before payment.
    Expired,
    /// The fan let the hold go.
    Cancelled,
    /// The database refused it (no capacity left); the payment is refunded.
    Rejected,
}

impl OrderStatus {
    /// The wire / storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Confirming => "confirming",
            Self::Confirmed => "confirmed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }
    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserved" => Self::Reserved,
            "confirming" => Self::Confirming,
            "confirmed" => Self::Confirmed,
            "expired" => Self::Expired,
            "cancelled" => Self::Cancelled,
            "rejected" => Self::Rejected,
            _ => return None,
        })
    }
}

/// One kind of ticket on sale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TicketType {
    /// Slug, unique within the event.
    pub id: TicketTypeId,
    /// Display name.
    pub name: String,
    /// What the pass includes.
    pub description: String,
    /// Price per ticket in EUR cents.
    pub price_cents: i64,
    /// How many exist.
    pub capacity: u32,
    /// The most one e-mail address may hold or buy of this type.
    pub per_customer_limit: u32,
    /// How long a reservation is held before it returns to stock.
    pub hold_seconds: u32,
}

/// An event with its ticket types: what `ops seed` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Slug.
    pub id: EventId,
    /// Display name.
    pub name: String,
    /// Where it happens.
    pub venue: String,
    /// When reservations open.
    pub sale_opens_at: DateTime<Utc>,
    /// What is on sale.
    pub ticket_types: Vec<TicketType>,
}

impl Event {
    /// Frequency Festival's VIP sale with every capacity multiplied by `scale`
    /// (capacities 1 : 1 : 0.5 × `base_capacity`).
    pub fn frequency(
        id: EventId,
        base_capacity: u32,
        sale_opens_at: DateTime<Utc>,
        hold_seconds: u32,
    ) -> Self {
        let tt = |id: &str,
                  name: &str,
                  description: &str,
                  price_cents: i64,
                  capacity: u32,
                  limit: u32| TicketType {
            id: TicketTypeId::parse(id).expect("static slug"),
            name: name.into(),
            description: description.into(),
            price_cents,
            capacity: capacity.max(1),
            per_customer_limit: limit,
            hold_seconds,
        };
        Self {
            id,
            name: "Frequency Festival 2027".into(),
            venue: "VAZ St. Pölten, Austria".into(),
            sale_opens_at,
            ticket_types: vec![
                tt(
                    "vip-3-day",
                    "VIP 3-Day",
                    "Three days, VIP entrance, VIP area with bars and viewing platform at the Space Stage.",
                    34_900,
                    base_capacity,
                    4,
                ),
                tt(
                    "vip-camping",
                    "VIP Camping",
                    "3-Day VIP pass plus a pitch in the quiet VIP camp with hot showers and lockers.",
                    44_900,
                    base_capacity,
                    4,
                ),
                tt(
                    "backstage-lounge",
                    "Backstage Lounge",
                    "Everything VIP plus the backstage lounge, complimentary drinks and an artist meet & greet lottery.",
                    89_900,
                    base_capacity.div_ceil(2),
                    2,
                ),
            ],
        }
    }
}

/// What travels through Pub/Sub from `buy` to `consume-order`: a paid order to persist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderMessage {
    /// The order.
    pub order_id: OrderId,
    /// Its event.
    pub event: EventId,
    /// Its ticket type.
    pub ticket_type: TicketTypeId,
    /// How many tickets.
    pub quantity: Quantity,
    /// The buyer.
    pub email: Email,
    /// What was charged, EUR cents.
    pub amount_cents: i64,
    /// The payment provider's reference of the charge.
    pub payment_ref: String,
    /// When the payment was approved.
    pub paid_at: DateTime<Utc>,
    /// The trace of the fan's payment request, so the consumer's work on this order shows in
    /// that trace (absent when the relay published it, or the request carried none). A
    /// malformed one reads as none: it must never cost a paid order its delivery.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_trace"
    )]
    pub trace: Option<TraceContext>,
}

fn lenient_trace<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<TraceContext>, D::Error> {
    Ok(serde_json::Value::deserialize(d)
        .ok()
        .and_then(|v| serde_json::from_value(v).ok()))
}

/// Where an order's work belongs in Cloud Trace: a trace id (32 hex digits) and the span that
/// started the work (as the request's trace header gave it: 16 hex digits from `traceparent`,
/// or Cloud Trace's decimal span id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TraceWire", into = "TraceWire")]
pub struct TraceContext {
    trace_id: String,
    span_id: String,
}

#[derive(Serialize, Deserialize)]
struct TraceWire {
    trace_id: String,
    span_id: String,
}

impl TraceContext {
    /// Checks both ids' shapes (they end up in log fields).
    pub fn parse(trace_id: &str, span_id: &str) -> Result<Self, Invalid> {
        let hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit());
        if trace_id.len() != 32 || !hex(trace_id) || trace_id.bytes().all(|b| b == b'0') {
            return Err(Invalid::new("trace_id", "not a 32-digit hex trace id"));
        }
        if span_id.is_empty() || span_id.len() > 20 || !hex(span_id) {
            return Err(Invalid::new("span_id", "not a span id"));
        }
        Ok(Self {
            trace_id: trace_id.to_ascii_lowercase(),
            span_id: span_id.to_owned(),
        })
    }

    /// The trace id.
    pub fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The span that started the work.
    pub fn span_id(&self) -> &str {
        &self.span_id
    }
}

impl TryFrom<TraceWire> for TraceContext {
    type Error = String;
    fn try_from(w: TraceWire) -> Result<Self, String> {
        Self::parse(&w.trace_id, &w.span_id).map_err(|e| e.message)
    }
}

impl From<TraceContext> for TraceWire {
    fn from(t: TraceContext) -> Self {
        Self {
            trace_id: t.trace_id,
            span_id: t.span_id,
        }
    }
}

/// One charge of an order at the payment provider. The books settle every charge they learn
/// of (ADR 53): the one that paid a confirmed order is kept, any other is owed back (ADR 39).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderCharge {
    /// The order the charge was for.
    pub order_id: OrderId,
    /// The payment provider's reference of the charge (a charge is refunded once).
    pub payment_ref: String,
    /// What was charged, EUR cents.
    pub amount_cents: i64,
}

/// What one Pub/Sub message carries since orders travel in batches (ADR 34): the paid orders
/// buy coalesced while its previous publish was in flight, or, in a message of their own,
/// charges buy holds but cannot match to a live payment attempt, for the books to settle (ADR
/// 53; on the wire as `refunds`, the name they had when buy owed them itself).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrderBatch {
    pub orders: Vec<OrderMessage>,
    #[serde(default, rename = "refunds", skip_serializing_if = "Vec::is_empty")]
    pub charges: Vec<OrderCharge>,
}

impl OrderBatch {
    /// Reads a message's data: a batch (buy has published nothing else since ADR 34; the
    /// one-order form is read no more, see docs/DEPLOY.md's one-off steps).
    pub fn decode(data: &[u8]) -> Result<OrderBatch, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn trace_contexts_are_checked_and_travel_with_the_order_only_when_present() {
        let t =
            TraceContext::parse("4BF92F3577B34DA6A3CE929D0E0E4736", "00f067aa0ba902b7").unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        for (trace, span) in [
            ("short", "1"),
            ("00000000000000000000000000000000", "1"),
            ("4bf92f3577b34da6a3ce929d0e0e473g", "1"),
            ("4bf92f3577b34da6a3ce929d0e0e4736", ""),
            ("4bf92f3577b34da6a3ce929d0e0e4736", "{\"x\":1}"),
        ] {
            assert!(TraceContext::parse(trace, span).is_err(), "{trace} {span}");
        }
        let order = r#"{"order_id":"00000000-0000-4000-8000-000000000001","event":"frequency-2027",
            "ticket_type":"vip-3-day","quantity":1,"email":"fan@example.at","amount_cents":34900,
            "payment_ref":"sim_1","paid_at":"2026-12-07T10:00:00Z"}"#;
        let without: OrderMessage = serde_json::from_str(order).unwrap();
        assert_eq!(without.trace, None);
        assert!(!serde_json::to_string(&without).unwrap().contains("trace"));
        let with = OrderMessage {
            trace: Some(t),
            ..without
        };
        let back: OrderMessage =
            serde_json::from_str(&serde_json::to_string(&with).unwrap()).unwrap();
        assert_eq!(back, with);
        let forged = order.replace("}", r#","trace":{"trace_id":"not-hex","span_id":"1"}}"#);
        let read: OrderMessage = serde_json::from_str(&forged).expect("the order still reads");
        assert_eq!(read.trace, None);
    }

    #[test]
    fn an_order_message_is_read_through_the_newtypes_parse() {
        let order = |quantity: &str, email: &str| {
            format!(
                r#"{{"order_id":"00000000-0000-4000-8000-000000000001","event":"frequency-2027",
                "ticket_type":"vip-3-day","quantity":{quantity},"email":"{email}","amount_cents":34900,
                "payment_ref":"sim_1","paid_at":"2026-12-07T10:00:00Z"}}"#
            )
        };
        let read = |q, e| serde_json::from_str::<OrderMessage>(&order(q, e));
        let ok = read("2", "Fan+vip@Example.at").expect("a good order");
        assert_eq!(
            (ok.quantity.get(), ok.email.as_str()),
            (2, "fan@example.at")
        );
        let back: OrderMessage = serde_json::from_str(&serde_json::to_string(&ok).unwrap())
            .expect("a normalised address parses to itself");
        assert_eq!(back, ok);
        for (q, e) in [
            ("0", "fan@example.at"),
            ("21", "fan@example.at"),
            ("-1", "fan@example.at"),
            ("1", "not-an-address"),
            ("1", "fan@example"),
        ] {
            let err = read(q, e).expect_err("refused at the edge").to_string();
            let named = ["quantity", "email", "expected u32"];
            assert!(named.iter().any(|n| err.contains(n)), "{q} {e}: {err}");
        }
    }

    #[test]
    fn slugs() {
        assert!(EventId::parse("frequency-2027").is_ok());
        for bad in ["", "-x", "Upper", "a b", "ä", &"x".repeat(65), "a:b", "{a}"] {
            assert!(EventId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn quantity_bounds() {
        assert!(Quantity::parse(0).is_err());
        assert!(Quantity::parse(-1).is_err());
        assert!(Quantity::parse(21).is_err());
        assert_eq!(Quantity::parse(20).unwrap().get(), 20);
        assert_eq!(Quantity::parse(1).unwrap().get(), 1);
    }

    #[test]
    fn emails() {
        assert_eq!(
            Email::parse("  Fan@Example.AT ").unwrap().as_str(),
            "fan@example.at"
        );
        for bad in [
            "",
            "fan",
            "fan@",
            "@x.at",
            "fan@at",
            "a b@x.at",
            "fan@x..at",
            "fan@.x.at",
            "a@b@c.at",
            "+tag@x.at",
            "..@gmail.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// One mailbox, one customer: the forms a provider delivers to the same mailbox are one
    /// address (the issue's reproduction: each of these got a fresh per-customer limit).
    #[test]
    fn addresses_are_the_mailboxes_they_reach() {
        let same = |a: &str, b: &str| {
            assert_eq!(
                Email::parse(a).unwrap(),
                Email::parse(b).unwrap(),
                "{a} vs {b}"
            )
        };
        same("fan@x.at", "Fan+1@x.at");
        same("fan@x.at", "FAN+festival+vip@X.AT");
        same("fan@gmail.com", "f.a.n+vip@gmail.com");
        same("fan@gmail.com", "F.an@GoogleMail.com");
        assert_eq!(
            Email::parse("F.an+2@gmail.com").unwrap().as_str(),
            "fan@gmail.com"
        );
        // Dots are the provider's business elsewhere: f.an@x.at may be another person.
        assert_ne!(
            Email::parse("f.an@x.at").unwrap(),
            Email::parse("fan@x.at").unwrap()
        );
        // Another Unicode spelling of the same address is the same address: full-width
        // letters and at sign, a ligature, a composed and a decomposed accent.
        same("fan@x.at", "\u{FF46}\u{FF41}\u{FF4E}\u{FF20}x.at");
        same("fin@x.at", "\u{FB01}n@x.at");
        same("ren\u{E9}@x.at", "rene\u{301}@x.at");
        // An address stored under the rules before these (a message in flight, an order in
        // Redis) still reads, as it was stored: a paid order is never lost to a new rule.
        for stored in ["f\u{200B}an@x.at", "ren\u{B4}@x.at"] {
            let read: Email = serde_json::from_value(serde_json::json!(stored)).expect(stored);
            assert_eq!(read.as_str(), stored);
            assert!(
                Email::parse(stored).is_err(),
                "today's rule refuses {stored:?}"
            );
        }
        // An invisible character does not make another customer: it is refused.
        for hidden in [
            "\u{200B}", "\u{200D}", "\u{FEFF}", "\u{00AD}", "\u{2060}", "\u{202E}",
        ] {
            let raw = format!("f{hidden}an@x.at");
            assert!(Email::parse(&raw).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn idempotency_keys() {
        assert!(IdempotencyKey::parse("0b6f4f1e-0c4e-4a53-9c62-3a1f1d7f8e10").is_ok());
        assert!(IdempotencyKey::parse("short").is_err());
        assert!(IdempotencyKey::parse("has space in it").is_err());
        assert!(IdempotencyKey::parse(&"k".repeat(129)).is_err());
    }

    #[test]
    fn token_is_not_printed() {
        let t = PaymentToken::parse("pm_card_approve").unwrap();
        assert!(!format!("{t:?}").contains("approve"));
    }

    #[test]
    fn status_round_trips() {
        for s in [
            "reserved",
            "confirming",
            "confirmed",
            "expired",
            "cancelled",
            "rejected",
        ] {
            assert_eq!(OrderStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(OrderStatus::parse("paid").is_none());
    }

    proptest! {
        #[test]
        fn parsed_emails_are_normalised(s in "\\PC{0,80}") {
            if let Ok(e) = Email::parse(&s) {
                prop_assert_eq!(e.as_str(), e.as_str().trim().to_lowercase());
                prop_assert_eq!(e.as_str().matches('@').count(), 1);
                prop_assert!(e.as_str().len() <= 254);
                prop_assert!(!e.as_str().split('@').next().unwrap_or("").contains('+'));
                // Parsing the mailbox again finds the same mailbox.
                prop_assert_eq!(Email::parse(e.as_str()).ok(), Some(e));
            }
        }

        /// The ASCII fast path decides as the Unicode rules (the parser before it) would.
        #[test]
        fn ascii_emails_parse_as_by_the_unicode_rules(s in "[ Aa.@\t\x0b\x7f\u{e4}\u{c4}\u{a0}]{1,24}") {
            let unicode = |raw: &str| {
                let s = raw.trim().to_lowercase();
                let spaced = s.chars().any(|c| c.is_whitespace() || c.is_control());
                let (local, domain) = s.split_once('@')?;
                let ok = s.len() <= 254 && !spaced && !local.is_empty() && local.len() <= 64
                    && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
                    && !domain.contains("..") && !domain.contains('@');
                ok.then_some(s)
            };
            prop_assert_eq!(Email::parse(&s).ok().map(|e| e.0), unicode(&s));
        }

        #[test]
        fn slugs_never_contain_hash_tag_or_key_separators(s in "\\PC{0,70}") {
            if let Ok(id) = EventId::parse(&s) {
                let bad = ['{', '}', ':', ' '];
                prop_assert!(!id.as_str().contains(bad), "{}", id);
            }
        }
    }
}
