//! The key service: one content key and key ID per channel, per key group
//! of the channel (audio, SD, HD…: see `drm::EncryptionConfig::key_group`)
//! and per key period when keys rotate, created on first use or imported
//! from a CPIX document, persisted so that a restart never changes the key
//! of content already served, and exported as CPIX (with content key usage
//! rules for groups and periods) for the operator's DRM provider.
//!
//! Under rotation a channel gains a key per group every `rotate_every`
//! segments; [`KeyService::prune`] drops the periods no player can ask for
//! any more (the origin calls it with a floor behind the channel's DVR
//! window, see `drm::Drm::prune_keys`), so key files stay the size of a
//! window and not of the channel's lifetime.
//!
//! Keys never appear in logs: [`ContentKey`]'s `Debug` prints the key ID only.
//!
//! New keys are random, or with `key_secret` set derived from it
//! ([`derive`]): redundant origins configured with one secret then create
//! the same key for the same channel, group and period, with no shared disk.
//! Keys already held (persisted, or imported from CPIX) are kept either way.

mod derive;

pub use derive::KeySecret;

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::package::valid_name;

/// The `[keys]` section: where keys live and how often they change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysConfig {
    /// Directory for key files (`{state_dir}/keys/{channel}.json`, mode
    /// 0600). Required as soon as any channel is encrypted.
    pub state_dir: Option<PathBuf>,
    /// New key every this many segments (key period = segment number /
    /// rotate_every), for every scheme; 0: never.
    pub rotate_every: u64,
    /// Derive new content keys and key IDs from this secret (HKDF-SHA256 per
    /// channel, key group and key period) instead of drawing them at random,
    /// so every origin given the same secret holds the same keys. At least
    /// 32 characters (`openssl rand -hex 32`); never logged or printed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_secret: Option<KeySecret>,
}

/// A 128-bit key ID (ISO/IEC 23001-7 KID), written as 32 hex digits or a UUID.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 16]);

impl KeyId {
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// `8-4-4-4-12` form (CPIX `kid`, DASH `cenc:default_KID`).
    pub fn uuid(&self) -> String {
        let h = self.hex();
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    /// Unpadded base64url (W3C ClearKey JWK `kid`).
    pub fn base64url(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    pub fn from_base64url(s: &str) -> Option<KeyId> {
        let bytes = URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()?;
        Some(KeyId(bytes.try_into().ok()?))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.hex())
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl FromStr for KeyId {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<KeyId, KeyError> {
        let digits: String = s.chars().filter(|c| *c != '-').collect();
        let bytes = hex::decode(&digits).map_err(|_| KeyError::BadKeyId(s.to_owned()))?;
        Ok(KeyId(
            bytes
                .try_into()
                .map_err(|_| KeyError::BadKeyId(s.to_owned()))?,
        ))
    }
}

/// A content key with its ID.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ContentKey {
    pub kid: KeyId,
    pub key: [u8; 16],
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key itself stays out of logs and panics.
        f.debug_struct("ContentKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl ContentKey {
    pub fn generate() -> Result<ContentKey, KeyError> {
        let mut bytes = [0u8; 32];
        getrandom::getrandom(&mut bytes).map_err(|e| KeyError::Random(e.to_string()))?;
        let mut kid = [0u8; 16];
        let mut key = [0u8; 16];
        kid.copy_from_slice(&bytes[..16]);
        key.copy_from_slice(&bytes[16..]);
        // RFC 4122 version 4 UUID, so the KID reads as one everywhere.
        kid[6] = (kid[6] & 0x0f) | 0x40;
        kid[8] = (kid[8] & 0x3f) | 0x80;
        Ok(ContentKey {
            kid: KeyId(kid),
            key,
        })
    }
}

/// One key of a channel with what it protects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyEntry {
    /// Key group (`None`: the channel's own key).
    pub group: Option<String>,
    /// Key period (`None`: every segment).
    pub period: Option<u64>,
    pub key: ContentKey,
}

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a 128-bit key ID: {0:?}")]
    BadKeyId(String),
    #[error("no random numbers: {0}")]
    Random(String),
    #[error("key store {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path}: {message}")]
    Corrupt { path: String, message: String },
    #[error("CPIX: {0}")]
    Cpix(String),
    #[error(
        "channel {0:?} already has keys in use; content already served would no longer decrypt"
    )]
    InUse(String),
    #[error("not a channel name: {0:?}")]
    BadChannel(String),
    #[error("not a key group name: {0:?}")]
    BadGroup(String),
}

/// One channel's keys as persisted.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct ChannelKeys {
    keys: Vec<StoredKey>,
}

#[derive(Clone, Serialize, Deserialize)]
struct StoredKey {
    /// Key group within the channel; `None`: the channel's own key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    group: Option<String>,
    /// Key period (segment number / rotate_every); `None`: every segment.
    #[serde(default)]
    period: Option<u64>,
    kid: String,
    key: String,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("group", &self.group)
            .field("period", &self.period)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    fn content_key(&self) -> Option<ContentKey> {
        Some(ContentKey {
            kid: self.kid.parse().ok()?,
            key: hex::decode(&self.key).ok()?.try_into().ok()?,
        })
    }

    fn new(group: Option<&str>, period: Option<u64>, key: &ContentKey) -> StoredKey {
        StoredKey {
            group: group.map(str::to_owned),
            period,
            kid: key.kid.hex(),
            key: hex::encode(key.key),
        }
    }
}

struct KeyState {
    channels: HashMap<String, ChannelKeys>,
    by_kid: HashMap<KeyId, KeyLocation>,
}

/// Where a key belongs, for licence requests that name it by ID only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLocation {
    pub channel: String,
    pub entry: KeyEntry,
}

impl KeyState {
    fn index(&mut self, channel: &str, stored: &StoredKey, key: ContentKey) {
        self.by_kid.insert(
            key.kid,
            KeyLocation {
                channel: channel.to_owned(),
                entry: KeyEntry {
                    group: stored.group.clone(),
                    period: stored.period,
                    key,
                },
            },
        );
    }
}

/// Keys per channel; cheap to clone.
#[derive(Clone)]
pub struct KeyService {
    dir: Option<PathBuf>,
    rotate_every: u64,
    secret: Option<KeySecret>,
    // std Mutex: held only for map updates and a small file write, never across .await.
    state: Arc<Mutex<KeyState>>,
}

impl KeyService {
    /// Loads every key file under `{state_dir}/keys/`; in memory only without a state_dir.
    pub fn open(config: &KeysConfig) -> Result<KeyService, KeyError> {
        let dir = config.state_dir.as_ref().map(|d| d.join("keys"));
        let mut state = KeyState {
            channels: HashMap::new(),
            by_kid: HashMap::new(),
        };
        if let Some(dir) = &dir {
            let io = |source| KeyError::Io {
                path: dir.display().to_string(),
                source,
            };
            std::fs::create_dir_all(dir).map_err(io)?;
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                let Some(channel) = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".json"))
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).map_err(|source| KeyError::Io {
                    path: path.display().to_string(),
                    source,
                })?;
                let keys: ChannelKeys =
                    serde_json::from_str(&text).map_err(|e| KeyError::Corrupt {
                        path: path.display().to_string(),
                        message: e.to_string(),
                    })?;
                for stored in &keys.keys {
                    let key = stored.content_key().ok_or_else(|| KeyError::Corrupt {
                        path: path.display().to_string(),
                        message: format!("bad key {}", stored.kid),
                    })?;
                    state.index(channel, stored, key);
                }
                state.channels.insert(channel.to_owned(), keys);
            }
        }
        Ok(KeyService {
            dir,
            rotate_every: config.rotate_every,
            secret: config.key_secret.clone(),
            state: Arc::new(Mutex::new(state)),
        })
    }

    pub fn rotate_every(&self) -> u64 {
        self.rotate_every
    }

    /// The key period a segment falls in; `None` when keys do not rotate.
    pub fn period_of(&self, sequence: u64) -> Option<u64> {
        (self.rotate_every > 0).then(|| sequence / self.rotate_every)
    }

    /// The key for `channel` (in `period` when keys rotate), created and
    /// persisted on first use.
    pub fn key_for(&self, channel: &str, period: Option<u64>) -> Result<ContentKey, KeyError> {
        self.group_key(channel, None, period)
    }

    /// The key of `group` in `channel` (`None`: the channel's own key), in
    /// `period` when keys rotate, created and persisted on first use.
    pub fn group_key(
        &self,
        channel: &str,
        group: Option<&str>,
        period: Option<u64>,
    ) -> Result<ContentKey, KeyError> {
        self.find_or_create(channel, group, |k| k.period == period, period)
    }

    /// The default key of `group` (an init segment's `tenc` KID, a DASH
    /// `cenc:default_KID`): with rotation, the group's first period key
    /// ever created (created for `period` if there is none), so every
    /// rendition of a group shares one default KID for good; without, the
    /// group's only key. With derived keys, exactly the key of `period`
    /// (the init segment's), whatever this origin created first, so
    /// redundant origins write the same init segments.
    pub fn default_key(
        &self,
        channel: &str,
        group: Option<&str>,
        period: Option<u64>,
    ) -> Result<ContentKey, KeyError> {
        if self.secret.is_some() {
            return self.group_key(channel, group, period);
        }
        self.find_or_create(
            channel,
            group,
            |k| k.period.is_some() == period.is_some(),
            period,
        )
    }

    fn find_or_create(
        &self,
        channel: &str,
        group: Option<&str>,
        matches: impl Fn(&StoredKey) -> bool,
        period: Option<u64>,
    ) -> Result<ContentKey, KeyError> {
        if !valid_name(channel) {
            return Err(KeyError::BadChannel(channel.to_owned()));
        }
        if group.is_some_and(|g| !valid_name(g)) {
            return Err(KeyError::BadGroup(group.unwrap_or_default().to_owned()));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = state.channels.get(channel).and_then(|c| {
            c.keys
                .iter()
                .find(|k| k.group.as_deref() == group && matches(k))
                .and_then(StoredKey::content_key)
        }) {
            return Ok(key);
        }
        let key = match &self.secret {
            Some(secret) => secret.content_key(channel, group, period),
            None => ContentKey::generate()?,
        };
        let stored = StoredKey::new(group, period, &key);
        let mut keys = state.channels.get(channel).cloned().unwrap_or_default();
        keys.keys.push(stored.clone());
        self.persist(channel, &keys)?;
        state.channels.insert(channel.to_owned(), keys);
        state.index(channel, &stored, key);
        let derived = self.secret.is_some();
        tracing::info!(channel, ?group, kid = %key.kid, ?period, derived, "content key created");
        Ok(key)
    }

    /// The key `group_key` would create for `channel`, `group` and
    /// `period` when keys derive from a secret, without creating it; `None`
    /// when keys are random.
    pub fn derived_key(
        &self,
        channel: &str,
        group: Option<&str>,
        period: Option<u64>,
    ) -> Option<ContentKey> {
        Some(self.secret.as_ref()?.content_key(channel, group, period))
    }

    /// Any key this service holds, by ID (licence and key requests).
    pub fn lookup(&self, kid: &KeyId) -> Option<ContentKey> {
        self.locate(kid).map(|l| l.entry.key)
    }

    /// The channel a key belongs to.
    pub fn channel_of(&self, kid: &KeyId) -> Option<String> {
        self.locate(kid).map(|l| l.channel)
    }

    /// A key by ID with its channel, group and period.
    pub fn locate(&self, kid: &KeyId) -> Option<KeyLocation> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.by_kid.get(kid).cloned()
    }

    /// The key of `group` in `channel` for `period` if it exists; never creates one.
    pub fn existing_key(
        &self,
        channel: &str,
        group: Option<&str>,
        period: u64,
    ) -> Option<ContentKey> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.channels.get(channel).and_then(|c| {
            c.keys
                .iter()
                .find(|k| k.group.as_deref() == group && k.period == Some(period))
                .and_then(StoredKey::content_key)
        })
    }

    /// Forgets `channel`'s period keys older than `floor` (key periods no
    /// player can ask for any more) and rewrites its file if any went.
    /// Every group keeps its first period key, the default KID that init
    /// segments and MPDs name for as long as the channel exists, and keys
    /// without a period stay. Returns how many keys went.
    pub fn prune(&self, channel: &str, floor: u64) -> Result<usize, KeyError> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(current) = state.channels.get(channel) else {
            return Ok(0);
        };
        let mut defaults: Vec<Option<&str>> = Vec::new();
        let mut kept = ChannelKeys::default();
        let mut gone = Vec::new();
        for k in &current.keys {
            let first_of_group = k.period.is_some() && !defaults.contains(&k.group.as_deref());
            if first_of_group {
                defaults.push(k.group.as_deref());
            }
            if first_of_group || k.period.is_none_or(|p| p >= floor) {
                kept.keys.push(k.clone());
            } else {
                gone.push(k.kid.clone());
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        self.persist(channel, &kept)?;
        state.channels.insert(channel.to_owned(), kept);
        for kid in &gone {
            if let Ok(kid) = kid.parse::<KeyId>() {
                state.by_kid.remove(&kid);
            }
        }
        tracing::debug!(
            channel,
            floor,
            pruned = gone.len(),
            "old period keys pruned"
        );
        Ok(gone.len())
    }

    /// Every key of `channel`, oldest first.
    pub fn keys_of(&self, channel: &str) -> Vec<ContentKey> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .channels
            .get(channel)
            .map(|c| c.keys.iter().filter_map(StoredKey::content_key).collect())
            .unwrap_or_default()
    }

    /// Every key of `channel` with its group and period, oldest first.
    pub fn entries_of(&self, channel: &str) -> Vec<KeyEntry> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state
            .channels
            .get(channel)
            .map(|c| {
                c.keys
                    .iter()
                    .filter_map(|k| {
                        Some(KeyEntry {
                            group: k.group.clone(),
                            period: k.period,
                            key: k.content_key()?,
                        })
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Takes a CPIX document's clear keys for a channel that has none yet;
    /// the first becomes the channel's content key. Returns their IDs.
    pub fn import_cpix(&self, channel: &str, document: &str) -> Result<Vec<KeyId>, KeyError> {
        if !valid_name(channel) {
            return Err(KeyError::BadChannel(channel.to_owned()));
        }
        let imported = parse_cpix(document)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state
            .channels
            .get(channel)
            .is_some_and(|c| !c.keys.is_empty())
        {
            return Err(KeyError::InUse(channel.to_owned()));
        }
        // Imported keys have no period: they serve every segment (rotating
        // channels draw generated keys per period instead).
        let keys = ChannelKeys {
            keys: imported
                .iter()
                .map(|k| StoredKey::new(None, None, k))
                .collect(),
        };
        self.persist(channel, &keys)?;
        for (stored, key) in keys.keys.iter().zip(&imported) {
            state.index(channel, stored, *key);
        }
        state.channels.insert(channel.to_owned(), keys);
        tracing::info!(
            channel,
            keys = imported.len(),
            "content keys imported from CPIX"
        );
        Ok(imported.iter().map(|k| k.kid).collect())
    }

    /// tmp + rename, mode 0600: a crash leaves the old file or the new one.
    fn persist(&self, channel: &str, keys: &ChannelKeys) -> Result<(), KeyError> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(format!("{channel}.json"));
        let tmp = dir.join(format!(".{channel}.json.tmp"));
        let io = |source| KeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let text = serde_json::to_string_pretty(keys).map_err(|e| KeyError::Corrupt {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        // The directory may have been removed under us; keys must still land.
        std::fs::create_dir_all(dir).map_err(io)?;
        write_private(&tmp, text.as_bytes()).map_err(io)?;
        std::fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(bytes)?;
    file.sync_all()
}

const CPIX_NS: &str = "urn:dashif:org:cpix";
const PSKC_NS: &str = "urn:ietf:params:xml:ns:keyprov:pskc";

/// The clear content keys of a CPIX document (DASH-IF CPIX 2.3 §5.3.3:
/// `ContentKey/@kid` with `Data/pskc:Secret/pskc:PlainValue`, base64).
pub fn parse_cpix(document: &str) -> Result<Vec<ContentKey>, KeyError> {
    let document = document.trim_start_matches('\u{feff}');
    let doc = roxmltree::Document::parse(document).map_err(|e| KeyError::Cpix(e.to_string()))?;
    let root = doc.root_element();
    if root.tag_name().namespace() != Some(CPIX_NS) || root.tag_name().name() != "CPIX" {
        return Err(KeyError::Cpix("the root element is not cpix:CPIX".into()));
    }
    let mut keys = Vec::new();
    for content_key in root
        .descendants()
        .filter(|n| n.has_tag_name((CPIX_NS, "ContentKey")))
    {
        let kid: KeyId = content_key
            .attribute("kid")
            .ok_or_else(|| KeyError::Cpix("ContentKey without kid".into()))?
            .parse()?;
        let secret = content_key
            .descendants()
            .find(|n| n.has_tag_name((PSKC_NS, "Secret")));
        let plain = secret
            .and_then(|s| {
                s.children()
                    .find(|n| n.has_tag_name((PSKC_NS, "PlainValue")))
            })
            .and_then(|n| n.text());
        let Some(plain) = plain else {
            let encrypted = secret.is_some_and(|s| {
                s.children()
                    .any(|n| n.has_tag_name((PSKC_NS, "EncryptedValue")))
            });
            return Err(KeyError::Cpix(if encrypted {
                format!(
                    "key {} is encrypted; only clear keys are supported",
                    kid.uuid()
                )
            } else {
                format!("key {} has no value", kid.uuid())
            }));
        };
        let key = STANDARD
            .decode(plain.trim())
            .ok()
            .and_then(|b| <[u8; 16]>::try_from(b).ok())
            .ok_or_else(|| {
                KeyError::Cpix(format!("key {} is not 16 bytes of base64", kid.uuid()))
            })?;
        keys.push(ContentKey { kid, key });
    }
    if keys.is_empty() {
        return Err(KeyError::Cpix("the document holds no content keys".into()));
    }
    Ok(keys)
}

/// A CPIX document with `keys` in the clear, for the operator's DRM provider.
pub fn write_cpix(keys: &[ContentKey]) -> String {
    let entries: Vec<KeyEntry> = keys
        .iter()
        .map(|key| KeyEntry {
            group: None,
            period: None,
            key: *key,
        })
        .collect();
    write_cpix_entries(&entries)
}

/// Label of the key group that [`AUDIO_GROUP`] names in CPIX rules.
pub const AUDIO_GROUP: &str = "audio";

/// A CPIX document with a channel's keys in the clear, and when they differ
/// by group or period, what each protects (DASH-IF CPIX 2.3 §5.3.4
/// `ContentKeyPeriodList`, §5.3.5 `ContentKeyUsageRuleList`): a
/// `KeyPeriodFilter` per rotating key; an `AudioFilter` for the audio key,
/// a `LabelFilter` with the group's name (the renditions it lists carry
/// that label) and a `VideoFilter` for a rendition group's key; a
/// `VideoFilter` for the channel's own key when audio has its own.
pub fn write_cpix_entries(entries: &[KeyEntry]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<cpix:CPIX xmlns:cpix=\"{CPIX_NS}\" xmlns:pskc=\"{PSKC_NS}\">\n  <cpix:ContentKeyList>\n"
    ));
    for entry in entries {
        out.push_str(&format!(
            "    <cpix:ContentKey kid=\"{}\"><cpix:Data><pskc:Secret><pskc:PlainValue>{}</pskc:PlainValue></pskc:Secret></cpix:Data></cpix:ContentKey>\n",
            entry.key.kid.uuid(),
            STANDARD.encode(entry.key.key)
        ));
    }
    out.push_str("  </cpix:ContentKeyList>\n");
    let periods: std::collections::BTreeSet<u64> =
        entries.iter().filter_map(|e| e.period).collect();
    if !periods.is_empty() {
        out.push_str("  <cpix:ContentKeyPeriodList>\n");
        for p in &periods {
            out.push_str(&format!(
                "    <cpix:ContentKeyPeriod id=\"keyPeriod_{p}\" index=\"{p}\"/>\n"
            ));
        }
        out.push_str("  </cpix:ContentKeyPeriodList>\n");
    }
    let audio_apart = entries
        .iter()
        .any(|e| e.group.as_deref() == Some(AUDIO_GROUP));
    if entries
        .iter()
        .any(|e| e.group.is_some() || e.period.is_some())
    {
        out.push_str("  <cpix:ContentKeyUsageRuleList>\n");
        for entry in entries {
            let mut filters = String::new();
            if let Some(p) = entry.period {
                filters.push_str(&format!(
                    "<cpix:KeyPeriodFilter periodId=\"keyPeriod_{p}\"/>"
                ));
            }
            let track_type = match entry.group.as_deref() {
                Some(AUDIO_GROUP) => {
                    filters.push_str("<cpix:AudioFilter/>");
                    "AUDIO".to_owned()
                }
                Some(group) => {
                    filters.push_str(&format!(
                        "<cpix:LabelFilter label=\"{group}\"/><cpix:VideoFilter/>"
                    ));
                    group.to_owned()
                }
                None if audio_apart => {
                    filters.push_str("<cpix:VideoFilter/>");
                    "VIDEO".to_owned()
                }
                None => "ALL".to_owned(),
            };
            out.push_str(&format!(
                "    <cpix:ContentKeyUsageRule kid=\"{}\" intendedTrackType=\"{track_type}\">{filters}</cpix:ContentKeyUsageRule>\n",
                entry.key.kid.uuid()
            ));
        }
        out.push_str("  </cpix:ContentKeyUsageRuleList>\n");
    }
    out.push_str("</cpix:CPIX>\n");
    out
}

#[cfg(test)]
mod tests;
