//! The waiting room in front of an event's on-sale (the issue "A fair waiting room"): fans who
//! join before the opening are shuffled once at the opening, later ones queue in arrival order,
//! and admission moves forward at a rate, never past a cap of fans shopping at once nor past
//! the tickets not sold (`lua/room.lua`). Behind [`WaitingRoom`], so that buy and
//! check-availability are tested without Redis.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use redis::Value;

use domain::EventId;

use crate::{Gate, GateError};

/// How the room admits, set by the operator per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoomSettings {
    /// Fans admitted per second.
    pub rate_per_sec: u32,
    /// Fans admitted and still shopping (their window not over) at most.
    pub cap: u32,
    /// How long an admitted fan may shop, from its claim of the token.
    pub window: Duration,
    /// How long an admitted fan has to claim its token (at most `window`): a fan who left the
    /// queue holds a place among the shopping only this long.
    pub claim: Duration,
}

/// Where a fan stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomStatus {
    /// The room is off for the event: the shop is open to all.
    Off,
    /// The room as a whole, before the sale opens (a peek).
    Before,
    /// No place yet: joined before the opening, and the draw has not reached this fan.
    Pending,
    /// In the queue, behind `upto`.
    Waiting,
    /// Admitted: the fan may shop until its window ends.
    Admitted,
    /// Admitted, and the window ended before the fan came.
    Missed,
    /// No such queue id (the room lost it, or it never was).
    Unknown,
    /// The room as a whole, open, its pre-queue drawn (a peek; while drawing a peek reads
    /// `Pending`).
    Open,
}

/// The room as one fan (or a snapshot) sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    pub status: RoomStatus,
    /// The fan's queue id ("" for a peek).
    pub queue_id: String,
    /// The fan's place, from 1 (0: none yet).
    pub place: u64,
    /// Every place up to this one has been admitted.
    pub upto: u64,
    /// Fans who joined.
    pub joined: u64,
    /// Admitted fans whose window is not over.
    pub shopping: u64,
    /// Tickets not sold: available and held (a hold may expire).
    pub unsold: i64,
    /// Nothing available now.
    pub sold_out: bool,
    /// Fans admitted per second (0: the room is off).
    pub rate_per_sec: u32,
    /// When an admitted fan's window ends (`None` unless `Admitted`).
    pub admitted_until: Option<DateTime<Utc>>,
    /// The operator paused admission.
    pub paused: bool,
    /// Once the pre-queue is drawn: how many joined before the opening (places 1 to `pre`),
    /// the draw's salt, and the draw key of the last admitted pre-queue place. A pre-queue fan
    /// whose [`draw_key`] is at most `admitted_key` is admitted (ADR 59).
    pub pre: u64,
    pub draw_salt: String,
    pub admitted_key: u64,
}

/// A pre-queue fan's key in the draw: the first 52 bits of SHA-1(salt ‖ queue id), the score
/// `room.lua` ranks it by (exact in a double).
pub fn draw_key(salt: &str, queue_id: &str) -> u64 {
    use sha1::Digest as _;
    let d = sha1::Sha1::digest(format!("{salt}{queue_id}").as_bytes());
    let first8 = u64::from_be_bytes(d[..8].try_into().expect("a SHA-1 has 20 bytes"));
    first8 >> 12
}

impl RoomView {
    /// Fans ahead of this one.
    pub fn ahead(&self) -> u64 {
        self.place.saturating_sub(self.upto + 1)
    }
}

/// The waiting room of each event.
#[async_trait]
pub trait WaitingRoom: Send + Sync {
    /// Turns the room on for `event` with `settings` (again: new settings, the queue kept).
    async fn room_on(&self, event: &EventId, settings: RoomSettings) -> Result<(), GateError>;
    /// Turns the room off: the shop is open to all.
    async fn room_off(&self, event: &EventId) -> Result<(), GateError>;
    /// Stops (or resumes) admitting; the queue keeps its order.
    async fn room_pause(&self, event: &EventId, paused: bool) -> Result<(), GateError>;
    /// Joins the queue as `identity` (one place per identity: joining again answers it, except
    /// after a window that ended unused: then the fan queues again at the back).
    async fn room_join(&self, event: &EventId, identity: &str) -> Result<RoomView, GateError>;
    /// Where the fan with `queue_id` stands.
    async fn room_status(&self, event: &EventId, queue_id: &str) -> Result<RoomView, GateError>;
    /// The room as a whole.
    async fn room_peek(&self, event: &EventId) -> Result<RoomView, GateError>;
}

fn room_key(event: &EventId) -> String {
    format!("{{ev:{event}}}:room")
}

impl RoomStatus {
    const ALL: [Self; 8] = [
        Self::Off,
        Self::Before,
        Self::Pending,
        Self::Waiting,
        Self::Admitted,
        Self::Missed,
        Self::Unknown,
        Self::Open,
    ];

    /// The word `room.lua` answers, and the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::Before => "before",
            Self::Pending => "pending",
            Self::Waiting => "waiting",
            Self::Admitted => "admitted",
            Self::Missed => "missed",
            Self::Unknown => "unknown",
            Self::Open => "open",
        }
    }
}

fn status(word: &str) -> Result<RoomStatus, GateError> {
    RoomStatus::ALL
        .into_iter()
        .find(|s| s.as_str() == word)
        .ok_or_else(|| GateError::Protocol(format!("room: status {word:?}")))
}

/// `room.lua`'s answer: status, place, upto, joined, shopping, unsold, sold out, queue id,
/// rate, the end of an admitted fan's window, paused, the pre-queue's size, salt and admitted key.
fn view(reply: Value) -> Result<RoomView, GateError> {
    let bad = |what: &str| GateError::Protocol(format!("room: {what}"));
    let Value::Array(v) = reply else {
        return Err(bad("not an array"));
    };
    let text = |i: usize| match v.get(i) {
        Some(Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        Some(Value::SimpleString(s)) => Ok(s.clone()),
        _ => Err(bad("a word expected")),
    };
    let int = |i: usize| match v.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        _ => Err(bad("a number expected")),
    };
    let count = |i: usize| int(i).map(|n| u64::try_from(n).unwrap_or(0));
    Ok(RoomView {
        status: status(&text(0)?)?,
        place: count(1)?,
        upto: count(2)?,
        joined: count(3)?,
        shopping: count(4)?,
        unsold: int(5)?,
        sold_out: int(6)? == 1,
        queue_id: text(7)?,
        rate_per_sec: u32::try_from(int(8)?).unwrap_or(0),
        admitted_until: Some(int(9)?)
            .filter(|ms| *ms > 0)
            .and_then(DateTime::from_timestamp_millis),
        paused: int(10)? == 1,
        pre: count(11)?,
        draw_salt: text(12)?,
        admitted_key: count(13)?,
    })
}

impl Gate {
    /// Sets fields of the room's settings.
    async fn room_set(&self, event: &EventId, fields: &[(&str, &str)]) -> Result<(), GateError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(room_key(event));
        for (field, value) in fields {
            cmd.arg(*field).arg(*value);
        }
        let mut conn = self.0.conn.clone();
        let _: () = self.bounded(cmd.query_async(&mut conn)).await?;
        Ok(())
    }

    async fn room(&self, event: &EventId, args: &[&str]) -> Result<RoomView, GateError> {
        // Drawn by each call; only the shuffle at the opening uses it (room.lua).
        let salt = uuid::Uuid::new_v4().simple().to_string();
        let mut all = vec![args[0], salt.as_str()];
        all.extend(&args[1..]);
        view(self.run("room", &self.0.scripts.room, event, &all).await?)
    }
}

#[async_trait]
impl WaitingRoom for Gate {
    async fn room_on(&self, event: &EventId, s: RoomSettings) -> Result<(), GateError> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).to_string();
        let (rate, cap) = (s.rate_per_sec.to_string(), s.cap.to_string());
        let (window, claim) = (ms(s.window), ms(s.claim));
        self.room_set(
            event,
            &[
                ("on", "1"),
                ("rate", &rate),
                ("cap", &cap),
                ("window_ms", &window),
                ("claim_ms", &claim),
            ],
        )
        .await
    }

    async fn room_off(&self, event: &EventId) -> Result<(), GateError> {
        self.room_set(event, &[("on", "0")]).await
    }

    async fn room_pause(&self, event: &EventId, paused: bool) -> Result<(), GateError> {
        self.room_set(event, &[("paused", if paused { "1" } else { "0" })])
            .await
    }

    async fn room_join(&self, event: &EventId, identity: &str) -> Result<RoomView, GateError> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.room(event, &["join", identity, &id]).await
    }

    async fn room_status(&self, event: &EventId, queue_id: &str) -> Result<RoomView, GateError> {
        self.room(event, &["status", queue_id]).await
    }

    async fn room_peek(&self, event: &EventId) -> Result<RoomView, GateError> {
        self.room(event, &["peek"]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draw_key_is_the_first_52_bits_of_sha1_of_salt_and_queue_id() {
        // As room.lua computes it (and Python's hashlib; the site's page checks the same value).
        let key = draw_key(
            "5f1c0d2e9a8b47c6b3e2d1f0a9b8c7d6",
            "0f9e8d7c6b5a49382716f5e4d3c2b1a0",
        );
        assert_eq!(key, 3_254_027_648_572_774);
    }

    #[test]
    fn ahead_counts_the_places_not_yet_admitted_before_this_one() {
        let v = |place, upto| RoomView {
            status: RoomStatus::Waiting,
            queue_id: String::new(),
            place,
            upto,
            joined: 100,
            shopping: 0,
            unsold: 10,
            sold_out: false,
            rate_per_sec: 10,
            admitted_until: None,
            paused: false,
            pre: 0,
            draw_salt: String::new(),
            admitted_key: 0,
        };
        assert_eq!(v(10, 3).ahead(), 6);
        assert_eq!(v(4, 3).ahead(), 0);
        assert_eq!(v(2, 3).ahead(), 0);
    }
}
