//! One fleet change as it travels: a JSON envelope naming the fleet state
//! version it creates, signed with HMAC-SHA256 under the fleet secret. Pure
//! functions, no I/O.

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};

use crate::cache::freshness::TtlOverride;
use crate::policy::GeoRuleConfig;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The NATS header carrying the envelope's signature (lowercase hex).
pub const SIGNATURE_HEADER: &str = "Strata-Signature";

/// An optional field that, when present, must not be `null`: `{"allow":
/// null}` is a mistake to report, not a way to say "absent".
pub(crate) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// One geo rule, as the API shows and takes it (the `[[geo.rules]]` shape).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoRule {
    pub prefix: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub deny: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow: Option<Vec<String>>,
}

impl From<&GeoRuleConfig> for GeoRule {
    fn from(rule: &GeoRuleConfig) -> Self {
        GeoRule {
            prefix: rule.prefix.clone(),
            deny: rule.deny.clone(),
            allow: rule.allow.clone(),
        }
    }
}

impl From<&GeoRule> for GeoRuleConfig {
    fn from(rule: &GeoRule) -> Self {
        GeoRuleConfig {
            prefix: rule.prefix.clone(),
            deny: rule.deny.clone(),
            allow: rule.allow.clone(),
        }
    }
}

/// What a purge selects, as the operator gave it: each node turns URLs into
/// its own cache keys (its `cache.ignore_params` may differ).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeSpec {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub urls: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub prefix: Option<String>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub surrogate_keys: Option<Vec<String>>,
    #[serde(default)]
    pub soft: bool,
}

/// A change to the fleet state: everything the control API can change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    Purge(PurgeSpec),
    AddTokenKey { id: String, secret: String },
    RetireTokenKey { id: String },
    SetGeoRules { rules: Vec<GeoRule> },
    SetTtlOverrides { overrides: Vec<TtlOverride> },
}

impl Change {
    /// The `kind` label of metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Purge(_) => "purge",
            Change::AddTokenKey { .. } => "add_token_key",
            Change::RetireTokenKey { .. } => "retire_token_key",
            Change::SetGeoRules { .. } => "set_geo_rules",
            Change::SetTtlOverrides { .. } => "set_ttl_overrides",
        }
    }
}

/// A change and the fleet state version it creates. With NATS the version
/// is the stream sequence the publisher expects the message to land at
/// (`Nats-Expected-Last-Sequence`), so a signed envelope is valid at one
/// place in the stream only: republished anywhere else it is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    pub version: u64,
    /// Who issued it (a node id, or `ctl`), for logs.
    pub issuer: String,
    pub change: Change,
}

/// Why a received message was not applied; the `reason` label of
/// `strata_fleet_changes_refused_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing or wrong signature")]
    Signature,
    #[error("not a fleet change envelope")]
    Malformed,
    #[error("replayed: version already applied")]
    Replayed,
    #[error("out of order: version does not match its place in the stream")]
    OutOfOrder,
}

impl Refusal {
    pub const ALL: [Refusal; 4] = [
        Refusal::Signature,
        Refusal::Malformed,
        Refusal::Replayed,
        Refusal::OutOfOrder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Signature => "signature",
            Refusal::Malformed => "malformed",
            Refusal::Replayed => "replayed",
            Refusal::OutOfOrder => "out_of_order",
        }
    }
}

/// The shared fleet signing secret (`fleet.secret`); never printed.
#[derive(Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct FleetSecret(String);

impl FleetSecret {
    pub const MIN_LEN: usize = 32;

    pub fn new(secret: &str) -> Result<FleetSecret, String> {
        if secret.len() < Self::MIN_LEN {
            return Err(format!(
                "at least {} characters (e.g. `openssl rand -hex 32`)",
                Self::MIN_LEN
            ));
        }
        Ok(FleetSecret(secret.to_owned()))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes a key of any length.
        HmacSha256::new_from_slice(self.0.as_bytes()).expect("HMAC accepts any key length")
    }

    /// The signature of `payload`, lowercase hex.
    pub fn sign(&self, payload: &[u8]) -> String {
        let mut mac = self.mac();
        mac.update(payload);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Whether `signature` (hex) is this secret's over `payload`, compared in
    /// constant time.
    pub fn verifies(&self, payload: &[u8], signature: &str) -> bool {
        let Ok(tag) = hex::decode(signature.trim()) else {
            return false;
        };
        let mut mac = self.mac();
        mac.update(payload);
        mac.verify_slice(&tag).is_ok()
    }
}

impl TryFrom<String> for FleetSecret {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        FleetSecret::new(&s)
    }
}

impl std::fmt::Debug for FleetSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FleetSecret(..)")
    }
}

/// The payload bytes and their signature.
pub fn seal(secret: &FleetSecret, envelope: &Envelope) -> (Vec<u8>, String) {
    let payload = serde_json::to_vec(envelope).expect("an envelope always serialises");
    let signature = secret.sign(&payload);
    (payload, signature)
}

/// Check and parse a message found at stream sequence `sequence`, for a node
/// whose last applied version is `applied`.
pub fn open(
    secret: &FleetSecret,
    payload: &[u8],
    signature: Option<&str>,
    sequence: u64,
    applied: u64,
) -> Result<Envelope, Refusal> {
    let signature = signature.ok_or(Refusal::Signature)?;
    if !secret.verifies(payload, signature) {
        return Err(Refusal::Signature);
    }
    let envelope: Envelope = serde_json::from_slice(payload).map_err(|_| Refusal::Malformed)?;
    if envelope.version <= applied {
        return Err(Refusal::Replayed);
    }
    if envelope.version != sequence {
        return Err(Refusal::OutOfOrder);
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> FleetSecret {
        FleetSecret::new("0123456789abcdef0123456789abcdef").expect("secret")
    }

    fn envelope(version: u64) -> Envelope {
        Envelope {
            version,
            issuer: "test".into(),
            change: Change::Purge(PurgeSpec {
                prefix: Some("/live/".into()),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_sealed_change_opens_at_its_place_only() {
        let (payload, sig) = seal(&secret(), &envelope(5));
        assert_eq!(open(&secret(), &payload, Some(&sig), 5, 4), Ok(envelope(5)));
        // The same bytes again, later in the stream: a replay.
        assert_eq!(
            open(&secret(), &payload, Some(&sig), 9, 5),
            Err(Refusal::Replayed)
        );
        // Valid signature, but not where it claims to be.
        assert_eq!(
            open(&secret(), &payload, Some(&sig), 6, 4),
            Err(Refusal::OutOfOrder)
        );
    }

    #[test]
    fn wrong_key_missing_signature_and_garbage_are_refused() {
        let (payload, _) = seal(&secret(), &envelope(1));
        let other = FleetSecret::new("ffffffffffffffffffffffffffffffff").expect("secret");
        let forged = other.sign(&payload);
        assert_eq!(
            open(&secret(), &payload, Some(&forged), 1, 0),
            Err(Refusal::Signature)
        );
        assert_eq!(
            open(&secret(), &payload, None, 1, 0),
            Err(Refusal::Signature)
        );
        assert_eq!(
            open(&secret(), &payload, Some("zz"), 1, 0),
            Err(Refusal::Signature)
        );
        let junk = br#"{"version":1,"change":"purge everything"}"#;
        let sig = secret().sign(junk);
        assert_eq!(
            open(&secret(), junk, Some(&sig), 1, 0),
            Err(Refusal::Malformed)
        );
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert!(FleetSecret::new("short").is_err());
        assert!(!format!("{:?}", secret()).contains("0123"));
    }
}
