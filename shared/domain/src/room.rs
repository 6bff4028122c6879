//! The waiting room's admission token (ADR 59): what an admitted fan shows reserve while the
//! room is on. buy signs it when the room admits the fan, and checks it with no call to Redis:
//! bound to the event and the fan's mailbox (a second client with another address cannot use
//! it), and short-lived. Signed with the orders' key under a label of its own, so that a token
//! is never a message signature nor the reverse.

use base64::Engine as _;
use chrono::{DateTime, Utc};

use crate::signing::{Accepted, MessageKey};
use crate::{Email, EventId};

/// What the signature covers starts with this, and no order message does (they are JSON).
const LABEL: &str = "room-admission/1\n";

/// An admission to shop, while the room is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionToken {
    pub event: EventId,
    /// The fan's mailbox (`Email`'s normal form).
    pub email: Email,
    /// The fan's place in the queue.
    pub place: u64,
    pub expires_at: DateTime<Utc>,
}

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefused {
    #[error("the admission token is malformed")]
    Malformed,
    #[error("the admission token is not ours")]
    Forged,
    #[error("the admission token has expired")]
    Expired,
    #[error("the admission token is for another event")]
    OtherEvent,
    #[error("the admission token was issued to another e-mail address")]
    OtherFan,
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
}

impl AdmissionToken {
    fn payload(&self) -> String {
        format!(
            "{}\n{}\n{}\n{}",
            self.event,
            self.email.as_str(),
            self.place,
            self.expires_at.timestamp_millis()
        )
    }

    /// The token as the fan carries it: the payload and its signature, both base64url.
    pub fn issue(&self, key: &MessageKey) -> String {
        let payload = self.payload();
        let sig = key.sign(format!("{LABEL}{payload}").as_bytes());
        let sig = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .expect("a signature is base64");
        format!("{}.{}", b64().encode(payload), b64().encode(sig))
    }

    /// Checks `raw` under the accepted keys: genuine, not expired at `now`, for `event` and for
    /// the fan with `email`.
    pub fn verify(
        raw: &str,
        keys: Accepted<'_>,
        event: &EventId,
        email: &Email,
        now: DateTime<Utc>,
    ) -> Result<Self, TokenRefused> {
        let (payload, sig) = raw.split_once('.').ok_or(TokenRefused::Malformed)?;
        let payload = b64().decode(payload).map_err(|_| TokenRefused::Malformed)?;
        let sig = b64().decode(sig).map_err(|_| TokenRefused::Malformed)?;
        let payload = String::from_utf8(payload).map_err(|_| TokenRefused::Malformed)?;
        let signed = [LABEL.as_bytes(), payload.as_bytes()].concat();
        let sig = base64::engine::general_purpose::STANDARD.encode(sig);
        if !keys.signed(&signed, Some(&sig)) {
            return Err(TokenRefused::Forged);
        }
        let mut parts = payload.split('\n');
        let mut next = || parts.next().ok_or(TokenRefused::Malformed);
        let token = Self {
            event: EventId::parse(next()?).map_err(|_| TokenRefused::Malformed)?,
            email: Email::parse(next()?).map_err(|_| TokenRefused::Malformed)?,
            place: next()?.parse().map_err(|_| TokenRefused::Malformed)?,
            expires_at: next()?
                .parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
                .ok_or(TokenRefused::Malformed)?,
        };
        if &token.event != event {
            return Err(TokenRefused::OtherEvent);
        }
        if token.email != *email {
            return Err(TokenRefused::OtherFan);
        }
        if token.expires_at <= now {
            return Err(TokenRefused::Expired);
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(c: char) -> MessageKey {
        MessageKey::parse(&c.to_string().repeat(32)).unwrap()
    }

    fn token(now: DateTime<Utc>) -> AdmissionToken {
        AdmissionToken {
            event: EventId::parse("frequency-2027").unwrap(),
            email: Email::parse("Fan+vip@Example.at").unwrap(),
            place: 42,
            expires_at: now + chrono::Duration::seconds(60),
        }
    }

    #[test]
    fn a_token_is_accepted_for_its_event_and_fan_until_it_expires() {
        let (k, now) = (key('k'), Utc::now());
        let t = token(now);
        let raw = t.issue(&k);
        let accepted = Accepted {
            current: &k,
            previous: None,
        };
        let ev = t.event.clone();
        let fan = Email::parse("fan@example.at").unwrap();
        // Read back to the millisecond, for the fan's mailbox however it is spelled.
        let back = AdmissionToken::verify(&raw, accepted, &ev, &fan, now).unwrap();
        assert_eq!((back.place, &back.email), (42, &t.email));
        let other_fan = Email::parse("other@example.at").unwrap();
        assert_eq!(
            AdmissionToken::verify(&raw, accepted, &ev, &other_fan, now),
            Err(TokenRefused::OtherFan)
        );
        let other_ev = EventId::parse("frequency-2028").unwrap();
        assert_eq!(
            AdmissionToken::verify(&raw, accepted, &other_ev, &fan, now),
            Err(TokenRefused::OtherEvent)
        );
        let later = now + chrono::Duration::seconds(61);
        assert_eq!(
            AdmissionToken::verify(&raw, accepted, &ev, &fan, later),
            Err(TokenRefused::Expired)
        );
    }

    #[test]
    fn a_forged_or_altered_token_is_refused() {
        let (k, now) = (key('k'), Utc::now());
        let raw = token(now).issue(&k);
        let accepted = Accepted {
            current: &k,
            previous: None,
        };
        let (ev, fan) = (token(now).event, token(now).email);
        let other = key('o');
        let forged = token(now).issue(&other);
        assert_eq!(
            AdmissionToken::verify(&forged, accepted, &ev, &fan, now),
            Err(TokenRefused::Forged)
        );
        // The place changed, the signature kept.
        let (payload, sig) = raw.split_once('.').unwrap();
        let text = String::from_utf8(b64().decode(payload).unwrap()).unwrap();
        let altered = format!("{}.{sig}", b64().encode(text.replace("\n42\n", "\n1\n")));
        assert_eq!(
            AdmissionToken::verify(&altered, accepted, &ev, &fan, now),
            Err(TokenRefused::Forged)
        );
        for junk in ["", "abc", "a.b", "...", "%%.%%"] {
            assert!(AdmissionToken::verify(junk, accepted, &ev, &fan, now).is_err());
        }
        // Signed by the previous key during a rotation: accepted.
        let rotating = Accepted {
            current: &other,
            previous: Some(&k),
        };
        assert!(AdmissionToken::verify(&raw, rotating, &ev, &fan, now).is_ok());
    }
}
