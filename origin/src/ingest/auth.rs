//! Who may publish: stream keys, signed publish tokens, and how many
//! connections (per protocol, per address) may be open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{KeyInit, Mac};
use subtle::ConstantTimeEq;

use super::{PublishRefused, StreamName};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Credentials a publisher presented with its stream name.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A static stream key (`key=`, or `s=` in an SRT stream id).
    pub key: Option<String>,
    /// A signed publish token `{expiry}.{hex hmac}` (`token=`).
    pub token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    // Keys are secrets: logs show only whether one was given.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("key", &self.key.as_ref().map(|_| "…"))
            .field("token", &self.token.as_ref().map(|_| "…"))
            .finish()
    }
}

/// A stream name plus credentials, as a publisher asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishRequest {
    pub name: StreamName,
    pub credentials: Credentials,
}

impl PublishRequest {
    /// From the part after `live/` plus optional `?key=…&token=…` (OBS users
    /// type `news?key=s3cret` into the "Stream Key" field). Other query
    /// parameters are ignored; values are taken verbatim (no %-decoding).
    pub fn from_key(key_and_query: &str) -> Result<Self, PublishRefused> {
        let (key, query) = key_and_query.split_once('?').unwrap_or((key_and_query, ""));
        let name = StreamName::from_key(key)?;
        let mut credentials = Credentials::default();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("key", v)) => credentials.key = Some(v.to_owned()),
                Some(("token", v)) => credentials.token = Some(v.to_owned()),
                _ => {}
            }
        }
        Ok(Self { name, credentials })
    }
}

/// `live/{channel}[.{rendition}][?key=…][&token=…]`.
impl FromStr for PublishRequest {
    type Err = PublishRefused;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim_start_matches('/').split_once('/') {
            Some((super::APP, rest)) => Self::from_key(rest),
            _ => Err(PublishRefused::BadName(format!(
                "{:?}: expected {}/{{channel}}[.{{rendition}}]",
                super::redact(s.split('?').next().unwrap_or_default()),
                super::APP
            ))),
        }
    }
}

/// Decides which publishes are let in, for RTMP and SRT alike.
///
/// A publish to channel `C` is accepted when one of these holds:
///
/// 1. **Static key**: `key` equals one of the keys configured for `C`
///    (`rtmp://host/live/C?key=K`, SRT `#!::r=live/C,m=publish,s=K` or `key=K`).
/// 2. **Signed token**: `token` is `{expiry}.{sig}` where `expiry` is Unix
///    seconds in the future and `sig` is the lowercase hex of
///    HMAC-SHA256(secret, `"C:{expiry}"`), the secret being the configured
///    hex string decoded to bytes. A token covers every rendition of `C`.
///    [`IngestAuth::sign_token`] mints one.
/// 3. **Anonymous**: no credentials were given, `allow_anonymous` is set
///    and `C` has no static keys.
///
/// Keys and signatures are compared in constant time. It also caps the
/// number of concurrent ingest connections, overall, per protocol and per
/// remote address ([`IngestAuth::admit_from`]), and carries the other
/// [`IngestLimits`] the listeners apply before a publish is authorised.
pub struct IngestAuth {
    keys: HashMap<String, Vec<String>>,
    token_secret: Option<Vec<u8>>,
    allow_anonymous: bool,
    limits: IngestLimits,
    counts: Arc<Mutex<ConnectionCounts>>,
}

/// What a publisher, authorised or not, may hold (from `[ingest]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngestLimits {
    /// Most RTMP plus SRT connections.
    pub max_connections: usize,
    /// Most RTMP connections.
    pub rtmp_max_connections: usize,
    /// Most SRT connections.
    pub srt_max_connections: usize,
    /// Most connections from one IP address, RTMP and SRT together.
    pub max_connections_per_ip: usize,
    /// Most connections per protocol that have not started publishing; when
    /// full, the oldest of them is closed to make room.
    pub max_pending_connections: usize,
    /// Time from accept to an authorised publish.
    pub publish_deadline: Duration,
    /// Largest RTMP message an authorised publisher may send; before that,
    /// 64 KiB.
    pub rtmp_max_message_size: usize,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_connections: 256,
            rtmp_max_connections: 128,
            srt_max_connections: 128,
            max_connections_per_ip: 32,
            max_pending_connections: 64,
            publish_deadline: Duration::from_secs(10),
            rtmp_max_message_size: 8 << 20,
        }
    }
}

#[derive(Debug, Default)]
struct ConnectionCounts {
    total: usize,
    by_protocol: HashMap<&'static str, usize>,
    by_ip: HashMap<IpAddr, usize>,
}

impl std::fmt::Debug for IngestAuth {
    // Keys and the token secret stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestAuth")
            .field("channels_with_keys", &self.keys.keys().collect::<Vec<_>>())
            .field("tokens", &self.token_secret.is_some())
            .field("allow_anonymous", &self.allow_anonymous)
            .field("limits", &self.limits)
            .finish()
    }
}

/// Holds one of [`IngestAuth`]'s connection slots until dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    counts: Arc<Mutex<ConnectionCounts>>,
    protocol: Option<&'static str>,
    ip: Option<IpAddr>,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut c = lock(&self.counts);
        c.total -= 1;
        if let Some(p) = self.protocol {
            if let Some(n) = c.by_protocol.get_mut(p) {
                *n -= 1;
            }
        }
        if let Some(ip) = self.ip {
            if let Some(n) = c.by_ip.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    c.by_ip.remove(&ip);
                }
            }
        }
    }
}

/// Why a publisher without credentials was refused, naming the config key
/// that lets it in (the operator reads this in the log, not the encoder).
fn refusal_hint(channel: &str, no_keys: bool) -> String {
    if no_keys {
        format!(
            "channel {channel} needs a stream key or publish token: anonymous publishing is off \
             (set ingest.allow_anonymous = true to allow it for channels without keys, give the \
             channel keys in [ingest.channels.{channel}] keys = [...], or sign publish tokens \
             with ingest.publish_token_secret)"
        )
    } else {
        format!(
            "channel {channel} needs a stream key or publish token: it has keys \
             (ingest.channels.{channel}.keys; publish with ?key=KEY), or sign a publish token \
             with ingest.publish_token_secret"
        )
    }
}

// A std Mutex: held for a few counter updates, never across `.await`; a
// panic while holding it cannot leave the counts torn, so poison is ignored.
fn lock(counts: &Mutex<ConnectionCounts>) -> MutexGuard<'_, ConnectionCounts> {
    counts
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl IngestAuth {
    pub fn new(
        keys: HashMap<String, Vec<String>>,
        token_secret: Option<Vec<u8>>,
        allow_anonymous: bool,
        max_connections: usize,
    ) -> Self {
        Self {
            keys,
            token_secret,
            allow_anonymous,
            limits: IngestLimits {
                max_connections,
                ..IngestLimits::default()
            },
            counts: Arc::default(),
        }
    }

    /// Replaces the connection limits.
    pub fn with_limits(mut self, limits: IngestLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Anyone may publish anything: for `strata up` on loopback and tests.
    pub fn open() -> Self {
        Self::new(HashMap::new(), None, true, 1024)
    }

    /// Takes a connection slot, or `None` when `max_connections` are open.
    pub fn admit(&self) -> Option<ConnectionPermit> {
        let mut c = lock(&self.counts);
        if c.total >= self.limits.max_connections {
            return None;
        }
        c.total += 1;
        Some(ConnectionPermit {
            counts: self.counts.clone(),
            protocol: None,
            ip: None,
        })
    }

    /// Takes a slot for a `protocol` (`rtmp`, `srt`) connection from `ip`,
    /// or names the cap that is full (a refusals metric label).
    pub fn admit_from(
        &self,
        protocol: &'static str,
        ip: IpAddr,
    ) -> Result<ConnectionPermit, &'static str> {
        let l = &self.limits;
        let protocol_max = match protocol {
            "rtmp" => l.rtmp_max_connections,
            "srt" => l.srt_max_connections,
            _ => l.max_connections,
        };
        let c = lock(&self.counts);
        if c.total >= l.max_connections {
            return Err("max_connections");
        }
        if c.by_protocol.get(protocol).copied().unwrap_or(0) >= protocol_max {
            return Err("max_protocol_connections");
        }
        if c.by_ip.get(&ip).copied().unwrap_or(0) >= l.max_connections_per_ip {
            return Err("max_address_connections");
        }
        drop(c);
        Ok(self.admit_in_place_of_evicted(protocol, ip))
    }

    /// Takes a slot whatever the caps say: only for a connection that
    /// replaces one just closed to make room (whose slot is released when its
    /// task ends), so the counts exceed a cap by at most the evictions in flight.
    pub fn admit_in_place_of_evicted(
        &self,
        protocol: &'static str,
        ip: IpAddr,
    ) -> ConnectionPermit {
        let mut c = lock(&self.counts);
        c.total += 1;
        *c.by_protocol.entry(protocol).or_default() += 1;
        *c.by_ip.entry(ip).or_default() += 1;
        ConnectionPermit {
            counts: self.counts.clone(),
            protocol: Some(protocol),
            ip: Some(ip),
        }
    }

    /// Checks a publish request at time `now`.
    pub fn check(&self, req: &PublishRequest, now: SystemTime) -> Result<(), PublishRefused> {
        let channel = &req.name.channel;
        let channel_keys = self.keys.get(channel).map(Vec::as_slice).unwrap_or(&[]);
        let creds = &req.credentials;
        if let Some(key) = &creds.key {
            // Every key is compared, each as a digest (no early exit, no
            // length leak).
            let matched = channel_keys.iter().fold(false, |acc, k| {
                acc | crate::http::same_secret(key.as_bytes(), k.as_bytes())
            });
            if matched {
                return Ok(());
            }
            if creds.token.is_none() {
                return Err(PublishRefused::Unauthorised(format!(
                    "wrong stream key for channel {channel}"
                )));
            }
        }
        if let Some(token) = &creds.token {
            return self.check_token(channel, token, now);
        }
        if self.allow_anonymous && channel_keys.is_empty() {
            return Ok(());
        }
        Err(PublishRefused::Unauthorised(refusal_hint(
            channel,
            channel_keys.is_empty(),
        )))
    }

    fn check_token(
        &self,
        channel: &str,
        token: &str,
        now: SystemTime,
    ) -> Result<(), PublishRefused> {
        let refuse = |why: &str| {
            Err(PublishRefused::Unauthorised(format!(
                "publish token for channel {channel}: {why}"
            )))
        };
        let Some(secret) = &self.token_secret else {
            return refuse("tokens are not enabled");
        };
        let Some((expiry, sig)) = token.split_once('.') else {
            return refuse("malformed, expected {expiry}.{hex signature}");
        };
        let (Ok(expiry), Ok(sig)) = (expiry.parse::<u64>(), hex::decode(sig)) else {
            return refuse("malformed, expected {expiry}.{hex signature}");
        };
        let expected = token_mac(secret, channel, expiry);
        if !bool::from(expected.as_slice().ct_eq(&sig)) {
            return refuse("bad signature");
        }
        let now = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if expiry <= now {
            return refuse("expired");
        }
        Ok(())
    }

    /// Mints a publish token for `channel` valid until `expires`, when a
    /// secret is configured.
    pub fn sign_token(&self, channel: &str, expires: SystemTime) -> Option<String> {
        let secret = self.token_secret.as_ref()?;
        let expiry = expires
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        Some(format!(
            "{expiry}.{}",
            hex::encode(token_mac(secret, channel, expiry))
        ))
    }
}

fn token_mac(secret: &[u8], channel: &str, expiry: u64) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("{channel}:{expiry}").as_bytes());
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> IngestAuth {
        let keys = HashMap::from([("news".to_owned(), vec!["s3cret".to_owned()])]);
        IngestAuth::new(keys, Some(b"0123456789abcdef".to_vec()), false, 2)
    }

    fn req(s: &str) -> PublishRequest {
        s.parse().expect("valid name")
    }

    #[test]
    fn static_keys() {
        let a = auth();
        let now = SystemTime::now();
        assert!(a.check(&req("live/news?key=s3cret"), now).is_ok());
        assert!(a
            .check(&req("live/news.720p?foo=1&key=s3cret"), now)
            .is_ok());
        assert!(a.check(&req("live/news?key=nope"), now).is_err());
        assert!(a.check(&req("live/news"), now).is_err());
        assert!(a.check(&req("live/sport?key=s3cret"), now).is_err());
        let open = IngestAuth::open();
        assert!(open.check(&req("live/anything"), now).is_ok());
    }

    #[test]
    fn signed_tokens() {
        let a = auth();
        let now = SystemTime::now();
        let token = a
            .sign_token("sport", now + Duration::from_secs(60))
            .expect("secret set");
        assert!(a
            .check(&req(&format!("live/sport.480p?token={token}")), now)
            .is_ok());
        // Bound to the channel, expiry and secret.
        assert!(a
            .check(&req(&format!("live/news?token={token}")), now)
            .is_err());
        let later = now + Duration::from_secs(61);
        assert!(a
            .check(&req(&format!("live/sport?token={token}")), later)
            .is_err());
        let forged = token.replace('.', ".0");
        assert!(a
            .check(&req(&format!("live/sport?token={forged}")), now)
            .is_err());
        assert!(a.check(&req("live/sport?token=garbage"), now).is_err());
    }

    /// Issue 13: the quick start's origin refuses every publisher (a good
    /// default); the refusal names the config keys that open the door.
    #[test]
    fn a_refusal_names_the_key_that_opens_the_door() {
        let a = auth();
        let now = SystemTime::now();
        let Err(PublishRefused::Unauthorised(why)) = a.check(&req("live/sport"), now) else {
            panic!("anonymous publishing is off by default");
        };
        for key in [
            "ingest.allow_anonymous",
            "[ingest.channels.sport]",
            "ingest.publish_token_secret",
        ] {
            assert!(why.contains(key), "{key} missing from {why:?}");
        }
        let Err(PublishRefused::Unauthorised(why)) = a.check(&req("live/news"), now) else {
            panic!("news has keys");
        };
        assert!(why.contains("ingest.channels.news.keys"), "{why}");
    }

    #[test]
    fn connection_cap() {
        let a = auth();
        let p1 = a.admit().expect("first");
        let _p2 = a.admit().expect("second");
        assert!(a.admit().is_none());
        drop(p1);
        assert!(a.admit().is_some());
    }

    #[test]
    fn per_protocol_and_per_address_caps() {
        let a = IngestAuth::open().with_limits(IngestLimits {
            max_connections: 5,
            rtmp_max_connections: 3,
            srt_max_connections: 3,
            max_connections_per_ip: 2,
            ..IngestLimits::default()
        });
        let (one, two, three) = (
            IpAddr::from([10, 0, 0, 1]),
            IpAddr::from([10, 0, 0, 2]),
            IpAddr::from([10, 0, 0, 3]),
        );
        let r1 = a.admit_from("rtmp", one).expect("first");
        let _r2 = a.admit_from("rtmp", one).expect("second from one");
        assert_eq!(
            a.admit_from("srt", one).err(),
            Some("max_address_connections")
        );
        let _r3 = a.admit_from("rtmp", two).expect("third RTMP");
        assert_eq!(
            a.admit_from("rtmp", three).err(),
            Some("max_protocol_connections")
        );
        let _s1 = a.admit_from("srt", three).expect("SRT has its own cap");
        let _s2 = a.admit_from("srt", two).expect("fifth");
        assert_eq!(a.admit_from("srt", three).err(), Some("max_connections"));
        drop(r1);
        assert!(a.admit_from("srt", one).is_ok());
    }

    #[test]
    fn credentials_are_not_logged() {
        let r = req("live/news?key=s3cret");
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
