//! Messages on the orders topic are signed by their publisher (buy, `ops dead-letters`) and
//! checked by consume-order (ADR 40): with Cloud Run's IAM in front of the push endpoint,
//! anyone allowed to publish to the topic could otherwise confirm tickets nobody paid for, or
//! have a sold order refunded. HMAC-SHA256 over the message's data, under a secret both read
//! (`ORDER_SIGNING_KEY`, from Secret Manager in the cloud), in the `signature` attribute.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// The attribute that carries a message's signature.
pub const SIGNATURE_ATTRIBUTE: &str = "signature";

/// The shared secret: at least 32 bytes. Never printed.
#[derive(Clone, Debug)]
pub struct MessageKey(SecretString);

impl MessageKey {
    /// Parses the secret as configured (its bytes as given; at least 32 of them).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.len() < 32 {
            return Err("ORDER_SIGNING_KEY must be at least 32 characters".into());
        }
        Ok(Self(raw.into()))
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret().as_bytes())
            .expect("HMAC takes any key length");
        mac.update(data);
        mac
    }

    /// The signature of `data`, as the attribute carries it (base64).
    pub fn sign(&self, data: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.mac(data).finalize().into_bytes())
    }

    /// Whether `signature` (the attribute, base64) is this key's signature of `data`; compared
    /// in constant time.
    pub fn verify(&self, data: &[u8], signature: &str) -> bool {
        base64::engine::general_purpose::STANDARD
            .decode(signature)
            .is_ok_and(|sig| self.mac(data).verify_slice(&sig).is_ok())
    }
}

/// The keys a message's signature is checked against: the current one and, while a rotation
/// rolls out, the one before it (ADR 40). consume-order checks every delivery with them, and a
/// dead-letter replay checks what it is about to re-sign.
#[derive(Debug, Clone, Copy)]
pub struct Accepted<'a> {
    pub current: &'a MessageKey,
    pub previous: Option<&'a MessageKey>,
}

impl Accepted<'_> {
    /// Whether `signature` (the attribute, if the message has one) signs `data` under an
    /// accepted key.
    pub fn signed(&self, data: &[u8], signature: Option<&str>) -> bool {
        signature.is_some_and(|sig| {
            self.current.verify(data, sig) || self.previous.is_some_and(|k| k.verify(data, sig))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_holds_for_its_data_and_key_only() {
        let key = MessageKey::parse("k".repeat(32).as_str()).unwrap();
        let other = MessageKey::parse("o".repeat(32).as_str()).unwrap();
        let sig = key.sign(b"{\"orders\":[]}");
        assert!(key.verify(b"{\"orders\":[]}", &sig));
        assert!(!key.verify(b"{\"orders\":[1]}", &sig), "other data");
        assert!(!other.verify(b"{\"orders\":[]}", &sig), "other key");
        assert!(!key.verify(b"{\"orders\":[]}", "not base64!"));
        assert!(!key.verify(b"{\"orders\":[]}", ""));
        assert!(MessageKey::parse("short").is_err());
        assert!(!format!("{key:?}").contains('k'));
    }
}
