//! Content keys derived from one configured secret (`[keys] key_secret`),
//! so redundant origins hold the same keys without a shared disk or a
//! message between them.
//!
//! HKDF-SHA256 (RFC 5869): `PRK = HKDF-Extract(salt = "strata content
//! keys v1", IKM = secret)`, then one `HKDF-Expand(PRK, info, 16)` for the
//! key ID and another for the key, with
//! `info = label ‖ 0x00 ‖ channel ‖ 0x00 ‖ group ‖ 0x00 ‖ period`, where the
//! label is `kid` or `key`, `group` is empty for the channel's own key
//! (group names are never empty) and `period` is the decimal key period or
//! `-` when keys do not rotate. The key ID's UUID version bits are then set
//! as for a random ID (RFC 4122 version 4), so IDs read alike either way.
//! Knowing key IDs (they are public, in every init segment) tells nothing of
//! the keys: they come from separate expansions.

use std::fmt;

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ContentKey, KeyId};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

const SALT: &[u8] = b"strata content keys v1";

/// Fewest characters a `key_secret` may have (a hex string of 128 bits).
pub const MIN_SECRET_LEN: usize = 32;

/// The channel secret keys derive from. Never printed: `Debug` and
/// `Serialize` write `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct KeySecret(String);

impl KeySecret {
    pub fn new(secret: impl Into<String>) -> Result<KeySecret, String> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_LEN {
            return Err(format!(
                "keys.key_secret: at least {MIN_SECRET_LEN} characters (e.g. `openssl rand -hex 32`)"
            ));
        }
        Ok(KeySecret(secret))
    }

    /// The key and key ID of `group` (`None`: the channel's own) in
    /// `channel` for `period` (`None`: keys do not rotate).
    pub fn content_key(
        &self,
        channel: &str,
        group: Option<&str>,
        period: Option<u64>,
    ) -> ContentKey {
        let prk = extract(SALT, self.0.as_bytes());
        let info = |label: &str| {
            let period = period.map_or_else(|| "-".to_owned(), |p| p.to_string());
            [label, channel, group.unwrap_or(""), &period].join("\0")
        };
        let mut kid = [0u8; 16];
        let mut key = [0u8; 16];
        expand(&prk, info("kid").as_bytes(), &mut kid);
        expand(&prk, info("key").as_bytes(), &mut key);
        kid[6] = (kid[6] & 0x0f) | 0x40;
        kid[8] = (kid[8] & 0x3f) | 0x80;
        ContentKey {
            kid: KeyId(kid),
            key,
        }
    }
}

impl fmt::Debug for KeySecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeySecret(<redacted>)")
    }
}

impl Serialize for KeySecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for KeySecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<KeySecret, D::Error> {
        KeySecret::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

fn mac(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    <HmacSha256 as KeyInit>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// RFC 5869 §2.2.
fn extract(salt: &[u8], ikm: &[u8]) -> [u8; 32] {
    let mut m = mac(salt);
    m.update(ikm);
    m.finalize().into_bytes().into()
}

/// RFC 5869 §2.3, for outputs of up to 255 hash lengths.
fn expand(prk: &[u8; 32], info: &[u8], out: &mut [u8]) {
    let mut previous: Vec<u8> = Vec::new();
    for (i, chunk) in out.chunks_mut(32).enumerate() {
        let mut m = mac(prk);
        m.update(&previous);
        m.update(info);
        m.update(&[u8::try_from(i + 1).unwrap_or(u8::MAX)]);
        let block: [u8; 32] = m.finalize().into_bytes().into();
        chunk.copy_from_slice(&block[..chunk.len()]);
        previous = block.to_vec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef-news-desk";

    #[test]
    fn hkdf_matches_rfc_5869_test_case_1() {
        let ikm = [0x0b; 22];
        let salt: Vec<u8> = (0x00..=0x0c).collect();
        let info: Vec<u8> = (0xf0..=0xf9).collect();
        let prk = extract(&salt, &ikm);
        assert_eq!(
            hex::encode(prk),
            "077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5"
        );
        let mut okm = [0u8; 42];
        expand(&prk, &info, &mut okm);
        assert_eq!(
            hex::encode(okm),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
        );
    }

    #[test]
    fn the_same_secret_gives_the_same_keys_anywhere() {
        let a = KeySecret::new(SECRET).expect("secret");
        let b = KeySecret::new(SECRET).expect("secret");
        for (group, period) in [
            (None, None),
            (Some("hd"), Some(7)),
            (Some("audio"), Some(0)),
        ] {
            assert_eq!(
                a.content_key("news", group, period),
                b.content_key("news", group, period)
            );
        }
    }

    #[test]
    fn channels_groups_periods_and_secrets_each_get_their_own_key() {
        let s = KeySecret::new(SECRET).expect("secret");
        let other = KeySecret::new(format!("{SECRET}!")).expect("secret");
        let keys = [
            s.content_key("news", None, None),
            s.content_key("sport", None, None),
            s.content_key("news", Some("hd"), None),
            s.content_key("news", Some("sd"), None),
            s.content_key("news", None, Some(0)),
            s.content_key("news", None, Some(1)),
            s.content_key("news", Some("hd"), Some(1)),
            other.content_key("news", None, None),
        ];
        for (i, a) in keys.iter().enumerate() {
            assert_ne!(a.kid, KeyId(a.key), "key ID and key differ");
            for b in &keys[i + 1..] {
                assert_ne!(a.kid, b.kid);
                assert_ne!(a.key, b.key);
            }
        }
        // Field boundaries are unambiguous: "news"+"hd" is not "newsh"+"d".
        assert_ne!(
            s.content_key("news", Some("hd"), None),
            s.content_key("newsh", Some("d"), None)
        );
        let kid = s.content_key("news", None, None).kid;
        assert_eq!(kid.0[6] >> 4, 4, "a version 4 UUID");
    }

    #[test]
    fn the_secret_never_shows_in_debug_or_serialised_config() {
        let s = KeySecret::new(SECRET).expect("secret");
        assert!(!format!("{s:?}").contains("0123456789"));
        let key = s.content_key("news", None, None);
        assert!(!format!("{key:?}").contains(&hex::encode(key.key)));
        let json = serde_json::to_string(&s).expect("json");
        assert_eq!(json, "\"<redacted>\"");
    }

    #[test]
    fn short_secrets_are_refused_naming_the_key() {
        let e = KeySecret::new("short").expect_err("too short");
        assert!(e.contains("keys.key_secret"), "{e}");
        let parsed: Result<KeySecret, _> = serde_json::from_str("\"short\"");
        assert!(parsed.is_err());
    }
}
