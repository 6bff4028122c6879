//! What the shop exchanges with the API (README "The API"), decoded leniently: the page keeps
//! working if the API adds fields.

use serde::{Deserialize, Serialize};

/// One tier as the page prerenders it (from the seeded catalog): what it includes and its price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tier {
    /// Ticket type slug, e.g. `vip-3-day`.
    pub id: String,
    /// Display name.
    pub name: String,
    /// What the pass includes.
    pub description: String,
    /// Price per ticket in EUR cents.
    pub price_cents: i64,
    /// The most one e-mail address may buy.
    pub per_customer_limit: u32,
    /// How long a reservation is held, in seconds.
    pub hold_seconds: u32,
}

/// The catalog the page is built from; embedded in the HTML so hydration starts from the same data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Event slug used in the API paths.
    pub event: String,
    /// Display name.
    pub name: String,
    /// Venue.
    pub venue: String,
    /// The tiers, in display order.
    pub tiers: Vec<Tier>,
}

/// `GET /v1/events/{event}/availability`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Availability {
    pub server_time: String,
    pub sale_opens_at: String,
    #[serde(default)]
    pub stale: bool,
    pub ticket_types: Vec<TierAvailability>,
    /// The waiting room, while it is on for the event.
    #[serde(default)]
    pub room: Option<RoomPeek>,
}

/// The waiting room as every fan sees it, in the availability snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoomPeek {
    /// `before`, `pending` (drawing the order of those who joined before the opening), `open`.
    pub status: String,
    pub admitted_upto: u64,
    #[serde(default)]
    pub joined: u64,
    #[serde(default)]
    pub rate_per_sec: u32,
    #[serde(default)]
    pub sold_out: bool,
    #[serde(default)]
    pub paused: bool,
    /// Once the order of the fans who joined before the opening is drawn.
    #[serde(default)]
    pub draw: Option<Draw>,
}

/// The drawn pre-queue: how many, the draw's salt, and the key of the last admitted of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Draw {
    pub drawn: u64,
    pub salt: String,
    pub admitted_key: u64,
}

impl Draw {
    /// A pre-queue fan's key in the draw: the first 52 bits of SHA-1(salt ‖ queue id), as the
    /// shop ranks it (`gate::draw_key`).
    pub fn key(&self, queue_id: &str) -> u64 {
        use sha1::Digest as _;
        let d = sha1::Sha1::digest(format!("{}{queue_id}", self.salt).as_bytes());
        let mut first8 = [0; 8];
        first8.copy_from_slice(&d[..8]);
        u64::from_be_bytes(first8) >> 12
    }

    /// About where the fan with `key` is among the drawn (keys are uniform over 52 bits).
    pub fn place_about(&self, key: u64) -> u64 {
        ((key as f64 / (1_u64 << 52) as f64) * self.drawn as f64)
            .ceil()
            .max(1.0) as u64
    }
}

/// 200 of `POST /v1/events/{event}/room`: where the fan stands.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RoomAnswer {
    /// `off`, `pending`, `waiting`, `admitted`, `missed`, `unknown`.
    pub status: String,
    #[serde(default)]
    pub queue_id: String,
    #[serde(default)]
    pub place: u64,
    #[serde(default)]
    pub ahead: u64,
    #[serde(default)]
    pub estimate_secs: Option<u64>,
    #[serde(default)]
    pub sold_out: bool,
    #[serde(default)]
    pub admission_token: Option<String>,
    #[serde(default)]
    pub admitted_until: Option<String>,
}

/// One ticket type in the availability answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TierAvailability {
    pub id: String,
    pub price_cents: i64,
    pub available: i64,
    pub capacity: i64,
    pub per_customer_limit: u32,
    pub status: String,
}

/// 202 of `POST /v1/events/{event}/orders`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reserved {
    pub order_id: String,
    pub hold_expires_at: String,
    #[serde(default)]
    pub server_time: Option<String>,
}

/// `GET /v1/orders/{id}`
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderStatus {
    pub order_id: String,
    pub status: String,
    #[serde(default)]
    pub hold_expires_at: Option<String>,
    #[serde(default)]
    pub server_time: Option<String>,
    #[serde(default)]
    pub tickets: Vec<String>,
}

/// The body of `POST /v1/events/{event}/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReserveRequest {
    pub ticket_type: String,
    pub quantity: u32,
    pub email: String,
}

/// What came back from one request, as the journey sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// An HTTP answer: status, `Retry-After` in seconds, the body (JSON or empty).
    Http {
        status: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// No answer at all: offline, DNS, connection refused, aborted.
    Network,
}

impl Answer {
    /// A JSON answer (tests and the driver).
    pub fn json(status: u16, body: &str) -> Self {
        Self::Http {
            status,
            retry_after: None,
            body: body.to_owned(),
        }
    }

    /// The problem type's slug (`/problems/sold-out` → `sold-out`), if the body is a problem.
    pub fn problem(&self) -> Option<Problem> {
        let Self::Http { body, .. } = self else {
            return None;
        };
        serde_json::from_str::<Problem>(body).ok()
    }
}

/// An RFC 9457 problem with the extension members the shop uses.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Problem {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub available: Option<i64>,
    #[serde(default)]
    pub remaining: Option<i64>,
    #[serde(default)]
    pub field: Option<String>,
}

impl Problem {
    /// `sold-out` for `/problems/sold-out`.
    pub fn slug(&self) -> &str {
        self.kind.rsplit('/').next().unwrap_or("")
    }
}

/// Milliseconds since the Unix epoch of an RFC 3339 UTC time as the API writes it
/// (`2027-03-01T10:00:00.000Z`, also without fraction or with `+00:00`).
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut ms = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let first3: String = frac[..digits].chars().chain("00".chars()).take(3).collect();
        ms = first3.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    if !matches!(rest, "Z" | "z" | "+00:00") {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3_600 + mi * 60 + sec) * 1_000) + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_time_ms("2027-03-01T10:00:00.250Z"),
            Some(1_803_895_200_250)
        );
        assert_eq!(
            parse_time_ms("2000-02-29T23:59:59.5+00:00"),
            Some(951_868_799_500)
        );
        for bad in [
            "",
            "2027-03-01",
            "2027-13-01T00:00:00Z",
            "2027-03-01T10:00:00+01:00",
            "x".repeat(24).as_str(),
        ] {
            assert_eq!(parse_time_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_draw_key_is_the_shops() {
        // The value the gate's own test checks (`gate::draw_key`, room.lua, Python's hashlib).
        let d = Draw {
            drawn: 1000,
            salt: "5f1c0d2e9a8b47c6b3e2d1f0a9b8c7d6".into(),
            admitted_key: 0,
        };
        let key = d.key("0f9e8d7c6b5a49382716f5e4d3c2b1a0");
        assert_eq!(key, 3_254_027_648_572_774);
        assert_eq!(d.place_about(key), 723);
        assert_eq!(d.place_about(0), 1);
    }

    #[test]
    fn problems() {
        let a = Answer::json(409, r#"{"type":"/problems/not-enough-left","available":3}"#);
        let p = a.problem().unwrap();
        assert_eq!((p.slug(), p.available), ("not-enough-left", Some(3)));
        assert!(Answer::Network.problem().is_none());
        assert!(Answer::json(502, "<html>").problem().is_none());
    }
}
