//! Akamai EdgeAuth 2.0 tokens: parsing and verification.
//!
//! Wire format, as akamai-edgeauth (the reference generator) writes it:
//! `[ip=…~][st=…~]exp=…~acl=…[~id=…][~data=…]~hmac=…`, fields separated by
//! `~`, ACL entries by `!`, `*` a wildcard. The HMAC is HMAC-SHA256 keyed with
//! the hex-decoded secret over every field before `~hmac=`; a `url=` token
//! carries no `acl` and signs `~url=<path>` appended to that body instead.

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::path::{normalize_path, percent_decode_strict};

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 4096;

/// Secrets shorter than this (in bytes, after hex decoding) are refused.
const MIN_SECRET_LEN: usize = 16;

type HmacSha256 = Hmac<Sha256>;

/// Why a key could not be added to or removed from a verifier: `field`
/// (`id` or `secret`) names the part of the key at fault, so a caller can
/// prefix where the key came from (`token.keys[0].secret: not hex`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct KeyError {
    /// `id` or `secret`.
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl KeyError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        KeyError {
            field,
            message: message.into(),
        }
    }
}

/// Why a token could not even be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is not an EdgeAuth 2.0 token; the text says which rule it broke.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
}

/// Why a request was refused by the token check. [`Rejection::as_str`] is the
/// `Strata-Reject-Reason` header value and the metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// The path needs a token and the request carried none.
    Missing,
    /// The token could not be parsed.
    Malformed,
    /// `exp` (plus the clock-skew allowance) is in the past.
    Expired,
    /// `st` (minus the clock-skew allowance) is in the future.
    NotYetValid,
    /// No ACL entry matches the normalised path, or the path cannot be normalised.
    Acl,
    /// The token is bound to another client address, or carries none while `bind_ip` is on.
    Ip,
    /// No configured key produced the token's HMAC.
    Signature,
}

impl Rejection {
    /// Every reason, in a stable order (for pre-creating metric series).
    pub const ALL: [Rejection; 7] = [
        Rejection::Missing,
        Rejection::Malformed,
        Rejection::Expired,
        Rejection::NotYetValid,
        Rejection::Acl,
        Rejection::Ip,
        Rejection::Signature,
    ];

    /// The reason as it appears in the `Strata-Reject-Reason` header and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Missing => "missing",
            Rejection::Malformed => "malformed",
            Rejection::Expired => "expired",
            Rejection::NotYetValid => "not-yet-valid",
            Rejection::Acl => "acl",
            Rejection::Ip => "ip",
            Rejection::Signature => "signature",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<TokenError> for Rejection {
    fn from(_: TokenError) -> Self {
        Rejection::Malformed
    }
}

/// Where the ACL text lives: usually verbatim inside the token text, decoded
/// separately only when it contained percent-escapes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AclText {
    Verbatim(Range<usize>),
    Decoded(Box<str>),
}

/// A parsed (not yet verified) EdgeAuth 2.0 token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The token as its generator wrote it (transport encoding removed).
    text: Box<str>,
    /// `text[..body_len]` is what the HMAC covers.
    body_len: usize,
    ip: Option<IpAddr>,
    start: Option<u64>,
    expires: u64,
    acl: Option<AclText>,
    id: Option<Range<usize>>,
    data: Option<Range<usize>>,
    hmac: [u8; 32],
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("ip", &self.ip)
            .field("start", &self.start)
            .field("expires", &self.expires)
            .field("acl", &self.acl())
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl Token {
    /// The token as its generator wrote it.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The client address the token is bound to (`ip=`), if any.
    pub fn ip(&self) -> Option<IpAddr> {
        self.ip
    }

    /// `st=`: seconds since the Unix epoch before which the token is not valid.
    pub fn start(&self) -> Option<u64> {
        self.start
    }

    /// `exp=`: seconds since the Unix epoch from which the token is expired.
    pub fn expires(&self) -> u64 {
        self.expires
    }

    /// The `acl=` value (percent-decoded), `!`-separated; `None` for a `url=` token.
    pub fn acl(&self) -> Option<&str> {
        match self.acl.as_ref()? {
            AclText::Verbatim(r) => Some(&self.text[r.clone()]),
            AclText::Decoded(s) => Some(s),
        }
    }

    /// `id=`: the session id, as written by the generator.
    pub fn id(&self) -> Option<&str> {
        self.id.clone().map(|r| &self.text[r])
    }

    /// `data=`: the opaque payload, as written by the generator.
    pub fn data(&self) -> Option<&str> {
        self.data.clone().map(|r| &self.text[r])
    }

    fn body(&self) -> &[u8] {
        &self.text.as_bytes()[..self.body_len]
    }

    /// One text per signed token: the signed fields as signed, then the HMAC
    /// in lower-case hex. Every re-encoding of a token (percent-encoded
    /// separators, upper-case hex digits) has the same canonical form.
    fn canonical(&self) -> String {
        let mut text = String::with_capacity(self.body_len + 70);
        text.push_str(&self.text[..self.body_len]);
        text.push_str("~hmac=");
        text.push_str(&hex::encode(self.hmac));
        text
    }
}

impl FromStr for Token {
    type Err = TokenError;

    /// Parses a token as found in a query parameter or cookie. A token whose
    /// `=` separators arrive percent-encoded (`exp%3D…`, as `encodeURIComponent`
    /// or `quote_plus` write it) is decoded once first; one that arrives as the
    /// generator wrote it is taken verbatim, so escape-early fields keep the
    /// bytes that were signed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use TokenError::Malformed;
        if s.is_empty() {
            return Err(Malformed("empty"));
        }
        if s.len() > MAX_TOKEN_LEN {
            return Err(Malformed("longer than 4096 bytes"));
        }
        let decoded =
            percent_decode_strict(s.as_bytes()).ok_or(Malformed("bad percent-encoding"))?;
        let text: String = if s.contains("hmac=") {
            s.to_owned()
        } else {
            String::from_utf8(decoded.into_owned()).map_err(|_| Malformed("not UTF-8"))?
        };
        parse_fields(text)
    }
}

const F_IP: u8 = 1;
const F_ST: u8 = 2;
const F_EXP: u8 = 4;
const F_ACL: u8 = 8;
const F_ID: u8 = 16;
const F_DATA: u8 = 32;

fn parse_fields(text: String) -> Result<Token, TokenError> {
    use TokenError::Malformed;
    let mut seen = 0u8;
    let mut token = Token {
        text: Box::from(""),
        body_len: 0,
        ip: None,
        start: None,
        expires: 0,
        acl: None,
        id: None,
        data: None,
        hmac: [0; 32],
    };
    let mut hmac_found = false;
    let mut pos = 0usize;
    for field in text.split('~') {
        let field_start = pos;
        pos += field.len() + 1;
        if hmac_found {
            return Err(Malformed("hmac must be the last field"));
        }
        let (name, value) = field
            .split_once('=')
            .ok_or(Malformed("field without '='"))?;
        if value.is_empty() {
            return Err(Malformed("empty field"));
        }
        let value_range = field_start + name.len() + 1..field_start + field.len();
        let bit = match name {
            "ip" => {
                let ip = percent_decode_strict(value.as_bytes())
                    .ok_or(Malformed("bad percent-encoding"))?;
                let ip = std::str::from_utf8(&ip).map_err(|_| Malformed("not UTF-8"))?;
                token.ip = Some(ip.parse().map_err(|_| Malformed("ip is not an address"))?);
                F_IP
            }
            "st" => {
                token.start = Some(parse_seconds(value)?);
                F_ST
            }
            "exp" => {
                token.expires = parse_seconds(value)?;
                F_EXP
            }
            "acl" => {
                token.acl = Some(if value.contains('%') {
                    let acl = percent_decode_strict(value.as_bytes())
                        .ok_or(Malformed("bad percent-encoding"))?;
                    let acl =
                        String::from_utf8(acl.into_owned()).map_err(|_| Malformed("not UTF-8"))?;
                    AclText::Decoded(acl.into_boxed_str())
                } else {
                    AclText::Verbatim(value_range)
                });
                F_ACL
            }
            "id" => {
                token.id = Some(value_range);
                F_ID
            }
            "data" => {
                token.data = Some(value_range);
                F_DATA
            }
            "hmac" => {
                if value.len() != 64 || hex::decode_to_slice(value, &mut token.hmac).is_err() {
                    return Err(Malformed("hmac is not 64 hex digits"));
                }
                hmac_found = true;
                token.body_len = field_start.saturating_sub(1);
                continue;
            }
            _ => return Err(Malformed("unknown field")),
        };
        if seen & bit != 0 {
            return Err(Malformed("duplicate field"));
        }
        seen |= bit;
    }
    if seen & F_EXP == 0 {
        return Err(Malformed("missing exp"));
    }
    if !hmac_found {
        return Err(Malformed("missing hmac"));
    }
    token.text = text.into_boxed_str();
    Ok(token)
}

fn parse_seconds(value: &str) -> Result<u64, TokenError> {
    if value.len() > 19 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TokenError::Malformed("time is not decimal seconds"));
    }
    value
        .parse()
        .map_err(|_| TokenError::Malformed("time is not decimal seconds"))
}

/// `*` matches any run of bytes, `/` included; everything else is literal.
pub fn acl_entry_matches(pattern: &str, path: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), path.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// A signing key, as configured: `{ id = "2026-11", secret = "<hex>" }`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// A name for the key, unique among the keys, used to retire it later.
    pub id: String,
    /// The shared secret, hex-encoded exactly as given to akamai-edgeauth's `key`.
    pub secret: String,
}

impl fmt::Debug for KeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyConfig")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// One verification key: the HMAC state after absorbing the secret, cloned
/// per token so the key schedule is not recomputed on every request.
#[derive(Clone)]
struct VerifyKey {
    id: Box<str>,
    mac: HmacSha256,
}

/// Verifies tokens against a set of keys. Immutable: key changes build a new
/// verifier ([`TokenVerifier::with_key`], [`TokenVerifier::without_key`]).
#[derive(Clone)]
pub struct TokenVerifier {
    keys: Vec<VerifyKey>,
    clock_skew: Duration,
    bind_ip: bool,
    verified: Verified,
}

/// ACL tokens whose signature already checked out under this verifier's keys,
/// by their canonical text ([`Token::canonical`]), parsed.
///
/// A player sends the same token with every playlist and segment request, so
/// after the first one parsing and the HMAC (~0.7 µs together) become a hash
/// lookup. Only the parse and the signature are remembered: validity window,
/// client binding and ACL are checked on every request. The whole canonical
/// token (its HMAC included) is the key, so a forged token never matches a
/// remembered one; only tokens with a valid signature are ever inserted, and
/// only under their canonical text, so nobody can fill the map with keys of
/// their choosing, not even by re-encoding one valid token in many ways
/// (which is also why a fast unkeyed-by-request hasher is fine here). A token
/// that arrives in its canonical form, as generators write it, is found
/// without being parsed; another encoding is parsed, then found. A clone (what every key
/// change makes) starts empty, so a retired key's tokens are checked again,
/// and fail.
#[derive(Default)]
struct Verified(
    parking_lot::Mutex<
        std::collections::HashMap<Box<str>, Arc<Token>, foldhash::fast::RandomState>,
    >,
);

/// Remembered tokens before the map is emptied and starts over.
const VERIFIED_MAX: usize = 64 * 1024;

impl Clone for Verified {
    fn clone(&self) -> Self {
        Verified::default()
    }
}

impl Verified {
    fn len(&self) -> usize {
        self.0.lock().len()
    }

    fn get(&self, raw: &str) -> Option<Arc<Token>> {
        self.0.lock().get(raw).cloned()
    }

    fn insert(&self, raw: &str, token: Arc<Token>) {
        let mut map = self.0.lock();
        if map.len() >= VERIFIED_MAX {
            map.clear();
        }
        map.insert(raw.into(), token);
    }
}

impl fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("keys", &self.key_ids().collect::<Vec<_>>())
            .field("clock_skew", &self.clock_skew)
            .field("bind_ip", &self.bind_ip)
            .finish()
    }
}

impl TokenVerifier {
    /// A verifier with no keys yet (it refuses every token as `signature`).
    pub fn new(clock_skew: Duration, bind_ip: bool) -> Self {
        TokenVerifier {
            keys: Vec::new(),
            clock_skew,
            bind_ip,
            verified: Verified::default(),
        }
    }

    /// How many verified tokens are remembered now.
    pub fn remembered(&self) -> usize {
        self.verified.len()
    }

    /// The ids of the keys, in the order they are tried.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| &*k.id)
    }

    /// This verifier plus one key. Errors are relative (`id: …`, `secret: …`)
    /// so the caller can prefix where the key came from.
    pub fn with_key(&self, id: &str, secret_hex: &str) -> Result<TokenVerifier, KeyError> {
        if id.is_empty() {
            return Err(KeyError::new("id", "empty"));
        }
        if self.keys.iter().any(|k| &*k.id == id) {
            return Err(KeyError::new("id", format!("duplicate key id {id:?}")));
        }
        let secret = decode_secret(secret_hex).map_err(|m| KeyError::new("secret", m))?;
        let mac = HmacSha256::new_from_slice(&secret)
            .map_err(|_| KeyError::new("secret", "unusable as an HMAC key"))?;
        let mut next = self.clone();
        next.keys.push(VerifyKey { id: id.into(), mac });
        Ok(next)
    }

    /// This verifier without the key `id`. Refuses to remove the last key,
    /// which would turn every protected path into a 403.
    pub fn without_key(&self, id: &str) -> Result<TokenVerifier, KeyError> {
        let at = self
            .keys
            .iter()
            .position(|k| &*k.id == id)
            .ok_or_else(|| KeyError::new("id", format!("no key with id {id:?}")))?;
        if self.keys.len() == 1 {
            return Err(KeyError::new("id", "cannot retire the only key"));
        }
        let mut next = self.clone();
        next.keys.remove(at);
        Ok(next)
    }

    /// Checks signature, validity window, client binding and ACL, in that
    /// order. `path` is the request path as received (percent-encoded, no
    /// query); the ACL is matched against its normalised form and a `url=`
    /// token's signature covers it verbatim.
    pub fn verify(
        &self,
        token: &Token,
        path: &str,
        client_ip: IpAddr,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        if !self.signature_matches(token, path) {
            return Err(Rejection::Signature);
        }
        let acl_path = normalize_path(path).map_err(|_| Rejection::Acl)?;
        self.check_claims(token, &acl_path, Some(client_ip), now)
    }

    /// [`TokenVerifier::verify`] for a token as received (query parameter or
    /// cookie value), remembering ACL tokens whose signature checked out.
    pub fn verify_raw(
        &self,
        raw: &str,
        path: &str,
        client_ip: IpAddr,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        let acl_path = normalize_path(path).map_err(|_| Rejection::Acl)?;
        self.verify_normalised(raw, path, &acl_path, client_ip, now)
    }

    /// [`TokenVerifier::verify_raw`] for a request whose path is already
    /// normalised and decoded (`acl_path`, what the ACL is matched against;
    /// see [`crate::path`]); `signed_path` is the path as received,
    /// which a `url=` token's signature covers verbatim.
    pub fn verify_normalised(
        &self,
        raw: &str,
        signed_path: &str,
        acl_path: &str,
        client_ip: IpAddr,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        self.verify_remembered(raw, signed_path, acl_path, Some(client_ip), now)
    }

    /// [`TokenVerifier::verify_normalised`] for a node that cannot see the
    /// viewer's address, behind an edge that checked it (an origin sees the
    /// edge's): signature, validity window and ACL, but not `ip=` nor
    /// `bind_ip`.
    pub fn verify_behind_edge(
        &self,
        raw: &str,
        signed_path: &str,
        acl_path: &str,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        self.verify_remembered(raw, signed_path, acl_path, None, now)
    }

    fn verify_remembered(
        &self,
        raw: &str,
        signed_path: &str,
        acl_path: &str,
        client_ip: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        if let Some(token) = self.verified.get(raw) {
            return self.check_claims(&token, acl_path, client_ip, now);
        }
        let token: Token = raw.parse()?;
        let canonical = token.canonical();
        if canonical != raw {
            if let Some(known) = self.verified.get(&canonical) {
                return self.check_claims(&known, acl_path, client_ip, now);
            }
        }
        if !self.signature_matches(&token, signed_path) {
            return Err(Rejection::Signature);
        }
        let token = Arc::new(token);
        // url= tokens cover one path each: not worth remembering.
        if token.acl.is_some() {
            self.verified.insert(&canonical, token.clone());
        }
        self.check_claims(&token, acl_path, client_ip, now)
    }

    /// Everything but the signature: validity window, client binding
    /// (unless `client_ip` is `None`), ACL (matched against `path`,
    /// normalised and decoded by the caller).
    fn check_claims(
        &self,
        token: &Token,
        path: &str,
        client_ip: Option<IpAddr>,
        now: SystemTime,
    ) -> Result<(), Rejection> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let skew = self.clock_skew.as_secs();
        if let Some(start) = token.start {
            if now.saturating_add(skew) < start {
                return Err(Rejection::NotYetValid);
            }
        }
        if now >= token.expires.saturating_add(skew) {
            return Err(Rejection::Expired);
        }
        match (token.ip, client_ip) {
            (Some(bound), Some(client)) if bound.to_canonical() != client.to_canonical() => {
                return Err(Rejection::Ip)
            }
            (None, Some(_)) if self.bind_ip => return Err(Rejection::Ip),
            _ => {}
        }
        match token.acl() {
            Some(acl) if acl.split('!').any(|entry| acl_entry_matches(entry, path)) => Ok(()),
            Some(_) => Err(Rejection::Acl),
            // A url= token: the signature already pinned the exact path.
            None => Ok(()),
        }
    }

    fn signature_matches(&self, token: &Token, path: &str) -> bool {
        self.keys.iter().any(|key| {
            let mut mac = key.mac.clone();
            mac.update(token.body());
            if token.acl.is_none() {
                mac.update(b"~url=");
                mac.update(path.as_bytes());
            }
            let tag = mac.finalize().into_bytes();
            bool::from(tag.as_slice().ct_eq(&token.hmac))
        })
    }
}

/// Hex secret → key bytes, with the reasons a config error should give.
pub fn decode_secret(secret_hex: &str) -> Result<Vec<u8>, &'static str> {
    let secret = hex::decode(secret_hex.trim()).map_err(|_| "not hex")?;
    if secret.len() < MIN_SECRET_LEN {
        return Err("shorter than 16 bytes (32 hex digits)");
    }
    Ok(secret)
}
