//! Encryption per channel, applied just in time to what the packagers
//! render: HLS AES-128 (whole segments), CMAF Common Encryption (`cbcs`,
//! `cenc`) with ClearKey and commercial DRM signalling in HLS and DASH.
//!
//! The store renders clear objects (and memoises them); [`Drm::protect`]
//! turns one into its protected form for the channel's scheme. Playlist and
//! MPD changes are textual insertions, so the packagers stay unaware of DRM.
//!
//! | scheme | HLS | DASH | MPEG-TS |
//! | --- | --- | --- | --- |
//! | `none` | clear | clear | clear |
//! | `aes-128` | `EXT-X-KEY:METHOD=AES-128`, segments AES-128-CBC whole; init clear | not offered (404) | `EXT-X-KEY:METHOD=AES-128` |
//! | `cbcs` | `METHOD=SAMPLE-AES` (ClearKey, FairPlay, Widevine KEYFORMATs) | `ContentProtection` | not offered (404) |
//! | `cenc` | `METHOD=SAMPLE-AES-CTR` (ClearKey, Widevine) | `ContentProtection` | not offered (404) |
//!
//! # Low latency
//!
//! LL-HLS parts and LL-DASH chunks of `cbcs`/`cenc` channels are protected
//! as whole fragments are: each part's `moof`+`mdat` gets its own `senc`,
//! `saiz` and `saio` under its segment's key (one `EXT-X-KEY` covers a
//! segment's parts and the segment), `cbcs` with the key's constant IV,
//! `cenc` with IVs counted up from a hash of the part's path. An LL-DASH
//! segment is its protected parts' chunks, streamed or whole alike.
//! AES-128 channels get no parts (`strata check` refuses them): RFC 8216bis
//! encrypts a Media Segment as one AES-128-CBC run whose IV (absent an `IV`
//! attribute) is its media sequence number, and a Partial Segment under the
//! same `EXT-X-KEY` gets that same IV (hls.js decrypts each part with its
//! segment's key and IV). Parts encrypted each as a CBC unit would reuse one
//! key and IV for every part of a segment and for the segment itself;
//! giving each part its own IV takes an `EXT-X-KEY` before every part,
//! which players apply per segment, not per part. `cbcs` (HLS `SAMPLE-AES`)
//! is the low-latency answer for HLS-only players and FairPlay.
//!
//! Which key protects what: each track of each rendition belongs to a key
//! group ([`EncryptionConfig::key_group`]: the channel's own key, a named
//! group of renditions, or `audio`), and with `keys.rotate_every` each
//! group has a key per key period. Signalling per key: [`signalling`].

pub mod entitlement;
pub mod http;
pub mod signalling;

pub use signalling::{
    content_protection, mpd_with_protection, playlist_with_sample_aes, sample_aes_tags,
    RepresentationInit, Signalling,
};

use std::collections::BTreeMap;
use std::sync::Arc;

use aes::Aes128;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ingest::{MediaSink, PublishRefused, PublishTarget, PublisherInfo, StreamName};
use crate::keys::{ContentKey, KeyError, KeyId, KeyLocation, KeyService, KeysConfig, AUDIO_GROUP};
use crate::media::cenc::{self, Pssh, Scheme, TrackProtection};
use crate::media::TrackKind;
use crate::package::{valid_name, Object, RenderError, Rendered, IMMUTABLE};
use crate::store::Store;

/// W3C ClearKey system ID (DASH `ContentProtection@schemeIdUri`).
pub const CLEARKEY_UUID: &str = "e2719d58-a985-b3c9-781a-b030af78d30e";
pub const WIDEVINE_UUID: &str = "edef8ba9-79d6-4ace-a3c8-27dcd51d21ed";
pub const PLAYREADY_UUID: &str = "9a04f079-9840-4286-ab92-e65be0885f95";
pub const FAIRPLAY_UUID: &str = "94ce86fb-07ff-4f43-adb8-93d2fa968ca2";

/// How a channel's output is encrypted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EncryptionScheme {
    #[default]
    #[serde(rename = "none")]
    None,
    #[serde(rename = "aes-128")]
    Aes128,
    #[serde(rename = "cbcs")]
    Cbcs,
    #[serde(rename = "cenc")]
    Cenc,
}

/// `[encryption.channels.NAME]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEncryption {
    /// `none`, `aes-128`, `cbcs` or `cenc`.
    pub scheme: EncryptionScheme,
    /// This channel's key groups, in place of `[encryption] key_groups`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_groups: Option<KeyGroups>,
    /// This channel's choice, in place of `[encryption] separate_audio_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separate_audio_key: Option<bool>,
}

/// Key group name → the renditions (the `{rendition}` of a publish name
/// `live/{channel}.{rendition}`) whose video it protects.
pub type KeyGroups = BTreeMap<String, Vec<String>>;

/// The `[encryption]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EncryptionConfig {
    /// Scheme of channels not listed under `channels`.
    pub default: EncryptionScheme,
    /// Signal W3C ClearKey in manifests and answer `POST /drm/clearkey`.
    pub clearkey: bool,
    /// ClearKey licence URL written into MPDs (`dashif:laurl`); `{channel}`
    /// is replaced by the channel name. Relative URLs resolve against the
    /// MPD, so they work through edges too.
    pub clearkey_licence_url: String,
    /// Widevine licence server: signals Widevine (`pssh`, ContentProtection, HLS KEYFORMAT).
    pub widevine_licence_url: Option<String>,
    /// PlayReady licence server: signals PlayReady in MPDs.
    pub playready_licence_url: Option<String>,
    /// FairPlay key server (`skd://` URI in HLS, cbcs channels only).
    pub fairplay_licence_url: Option<String>,
    /// cbcs/cenc channels: renditions keyed apart from the channel's own
    /// key, e.g. `{ sd = ["360p", "480p"], hd = ["720p", "1080p"] }`; each
    /// group gets its own key (per key period when keys rotate).
    /// Renditions in no group use the channel's own key.
    pub key_groups: KeyGroups,
    /// cbcs/cenc channels: audio gets a key of its own (group `audio`)
    /// rather than its rendition's.
    pub separate_audio_key: bool,
    /// Per-channel schemes.
    pub channels: BTreeMap<String, ChannelEncryption>,
    /// Who gets a ClearKey licence or an HLS key: `token` (a viewer's
    /// EdgeAuth token, checked with `licence_token`), or `none` (anyone who
    /// asks, for a licence service of your own in front of the origin).
    pub licence_auth: LicenceAuth,
    /// How licence and key requests carry the viewer's token, and the keys
    /// that verify it: the edges' `[token]` keys.
    pub licence_token: LicenceTokenConfig,
}

/// `[encryption] licence_auth`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LicenceAuth {
    /// A licence or key needs an EdgeAuth token whose ACL covers its URL.
    #[default]
    Token,
    /// Keys go to anyone who asks.
    None,
}

/// `[encryption.licence_token]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LicenceTokenConfig {
    /// Query parameter (and cookie) that carries the token, as the edges'
    /// `token.param`.
    pub param: String,
    /// Also accept the token from a cookie named `param`.
    pub cookie: bool,
    /// EdgeAuth HMAC keys (hex), the edges' `token.keys`; a token signed by
    /// any of them is accepted. Never serialised.
    #[serde(skip_serializing)]
    pub keys: Vec<strata_edgeauth::KeyConfig>,
    /// How far `st` and `exp` may be off because clocks disagree.
    #[serde(with = "humantime_serde")]
    pub clock_skew: std::time::Duration,
}

impl Default for LicenceTokenConfig {
    fn default() -> Self {
        LicenceTokenConfig {
            param: "token".into(),
            cookie: true,
            keys: Vec::new(),
            clock_skew: std::time::Duration::from_secs(30),
        }
    }
}

impl LicenceTokenConfig {
    /// The verifier for its keys; errors name the key.
    pub fn verifier(&self) -> Result<strata_edgeauth::TokenVerifier, String> {
        let valid_param = !self.param.is_empty()
            && self
                .param
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid_param {
            return Err(
                "encryption.licence_token.param: must be non-empty letters, digits, '_', '-' or '.'"
                    .into(),
            );
        }
        // bind_ip is the edge's to check: the origin sees the edge's address.
        let mut verifier = strata_edgeauth::TokenVerifier::new(self.clock_skew, false);
        for (i, key) in self.keys.iter().enumerate() {
            verifier = verifier
                .with_key(&key.id, &key.secret)
                .map_err(|e| format!("encryption.licence_token.keys[{i}].{e}"))?;
        }
        Ok(verifier)
    }
}

impl Default for EncryptionConfig {
    fn default() -> Self {
        EncryptionConfig {
            default: EncryptionScheme::None,
            clearkey: true,
            clearkey_licence_url: "/drm/clearkey/{channel}".into(),
            widevine_licence_url: None,
            playready_licence_url: None,
            fairplay_licence_url: None,
            key_groups: KeyGroups::new(),
            separate_audio_key: false,
            channels: BTreeMap::new(),
            licence_auth: LicenceAuth::Token,
            licence_token: LicenceTokenConfig::default(),
        }
    }
}

impl EncryptionConfig {
    pub fn scheme(&self, channel: &str) -> EncryptionScheme {
        self.channels
            .get(channel)
            .map_or(self.default, |c| c.scheme)
    }

    /// The key group of `rendition`'s `kind` track in `channel`: `audio`
    /// for audio when it is keyed apart, the group listing the rendition,
    /// or `None` (the channel's own key). AES-128 channels have one key.
    pub fn key_group(&self, channel: &str, rendition: &str, kind: TrackKind) -> Option<&str> {
        if !matches!(
            self.scheme(channel),
            EncryptionScheme::Cbcs | EncryptionScheme::Cenc
        ) {
            return None;
        }
        let own = self.channels.get(channel);
        let separate_audio = own
            .and_then(|c| c.separate_audio_key)
            .unwrap_or(self.separate_audio_key);
        if kind == TrackKind::Audio && separate_audio {
            return Some(AUDIO_GROUP);
        }
        own.and_then(|c| c.key_groups.as_ref())
            .unwrap_or(&self.key_groups)
            .iter()
            .find(|(_, renditions)| renditions.iter().any(|r| r == rendition))
            .map(|(group, _)| group.as_str())
    }

    fn any_encrypted(&self) -> bool {
        self.default != EncryptionScheme::None
            || self
                .channels
                .values()
                .any(|c| c.scheme != EncryptionScheme::None)
    }

    /// Checks serde cannot express; errors name the key.
    pub fn validate(&self, keys: &KeysConfig) -> Result<(), String> {
        for name in self.channels.keys() {
            if !valid_name(name) {
                return Err(format!(
                    "encryption.channels.{name}: not a channel name (letters, digits, - and _)"
                ));
            }
        }
        if self.any_encrypted() && keys.state_dir.is_none() {
            return Err(
                "keys.state_dir: required when encryption is on, so that keys survive a restart"
                    .into(),
            );
        }
        validate_key_groups("encryption.key_groups", &self.key_groups)?;
        for (name, channel) in &self.channels {
            let cmaf = matches!(
                channel.scheme,
                EncryptionScheme::Cbcs | EncryptionScheme::Cenc
            );
            if let Some(groups) = &channel.key_groups {
                let key = format!("encryption.channels.{name}.key_groups");
                if !cmaf && !groups.is_empty() {
                    return Err(format!(
                        "{key}: per-rendition keys need scheme cbcs or cenc"
                    ));
                }
                validate_key_groups(&key, groups)?;
            }
            if !cmaf && channel.separate_audio_key == Some(true) {
                return Err(format!(
                    "encryption.channels.{name}.separate_audio_key: needs scheme cbcs or cenc (MPEG-TS and AES-128 segments mux audio with video)"
                ));
            }
        }
        if self.clearkey_licence_url.is_empty() {
            return Err("encryption.clearkey_licence_url: must not be empty".into());
        }
        self.licence_token.verifier()?;
        if self.any_encrypted()
            && self.licence_auth == LicenceAuth::Token
            && self.licence_token.keys.is_empty()
        {
            return Err(
                "encryption.licence_token.keys: encryption is on, so a licence or key goes only to a viewer with an EdgeAuth token: give the edges' [token] keys here, or set encryption.licence_auth = \"none\" to serve keys to anyone who asks"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Group and rendition names are names, `audio` is taken, and a rendition
/// is in one group at most.
fn validate_key_groups(key: &str, groups: &KeyGroups) -> Result<(), String> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (group, renditions) in groups {
        if !valid_name(group) {
            return Err(format!(
                "{key}.{group}: not a key group name (letters, digits, - and _)"
            ));
        }
        if group == AUDIO_GROUP {
            return Err(format!(
                "{key}.{group}: \"{AUDIO_GROUP}\" is the separate audio key's group (separate_audio_key = true)"
            ));
        }
        if renditions.is_empty() {
            return Err(format!("{key}.{group}: lists no renditions"));
        }
        for rendition in renditions {
            if !valid_name(rendition) {
                return Err(format!(
                    "{key}.{group}: {rendition:?} is not a rendition name (the part after the dot of live/{{channel}}.{{rendition}})"
                ));
            }
            if let Some(other) = seen.insert(rendition, group) {
                return Err(if other == group {
                    format!("{key}.{group}: rendition {rendition:?} is listed twice")
                } else {
                    format!(
                        "{key}.{group}: rendition {rendition:?} is already in key group {other:?}"
                    )
                });
            }
        }
    }
    Ok(())
}

/// Why a protected object could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProtectError {
    /// The object does not exist in this channel's scheme (DASH for AES-128, say).
    #[error("not offered with this channel's encryption")]
    NotOffered,
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Cenc(#[from] cenc::CencError),
}

impl ProtectError {
    /// The playback response for it: a client asking for what is not offered
    /// gets a 404, our faults are logged (without key material) and 404 too,
    /// so players never see clear media instead.
    pub fn into_render_error(self, channel: &str, path: &str) -> RenderError {
        if !matches!(self, ProtectError::NotOffered) {
            tracing::error!(channel, path, error = %self, "cannot encrypt");
        }
        RenderError::no_such_object()
    }
}

/// The live encryption service: config, keys and metrics.
#[derive(Clone)]
pub struct Drm {
    pub config: EncryptionConfig,
    pub keys: KeyService,
    pub metrics: http::DrmMetrics,
    /// Who may have a licence or a key.
    entitlement: Arc<entitlement::Entitlement>,
    /// The segments channels hold, for the key periods players can ask
    /// for (licences under rotation, key pruning); see [`Drm::with_store`].
    store: Option<Store>,
    /// Protected segments and init segments, so one is encrypted (and
    /// hashed for its ETag) once, not on every request.
    // std Mutex: held for a map lookup or insert only, never across .await.
    memo: Arc<std::sync::Mutex<SegmentMemo>>,
}

/// Protected immutable objects by (channel, path), each with the ETag of the
/// clear object it was made from; dropped wholesale past [`MEMO_BYTES`].
#[derive(Default)]
struct SegmentMemo {
    entries: std::collections::HashMap<(String, String), (Option<String>, Rendered)>,
    bytes: usize,
}

/// Memory for memoised protected segments.
const MEMO_BYTES: usize = 64 << 20;

impl Drm {
    pub fn new(config: EncryptionConfig, keys: KeyService, metrics: http::DrmMetrics) -> Drm {
        Drm {
            entitlement: Arc::new(entitlement::Entitlement::new(&config)),
            config,
            keys,
            metrics,
            store: None,
            memo: Arc::default(),
        }
    }

    /// The service reading the segments `store` holds: rotating licences
    /// then carry the current and next period keys, and
    /// [`Drm::prune_keys`] knows which periods are gone.
    pub fn with_store(mut self, store: Store) -> Drm {
        self.store = Some(store);
        self
    }

    /// Key periods kept behind the oldest segment a channel holds: one
    /// more DVR window, plus one period, for edges still caching a segment
    /// the origin has dropped and players holding an older playlist or
    /// licence. Counted at the target duration; shorter segments (a
    /// publisher reconnecting) only ever cut into this margin.
    pub fn key_margin(&self) -> u64 {
        let Some(store) = &self.store else {
            return u64::MAX;
        };
        let config = store.config();
        let target = config.target_duration.as_secs_f64().max(0.001);
        let segments = (config.dvr_window.as_secs_f64() / target).ceil() as u64 + 1;
        segments.div_ceil(self.keys.rotate_every().max(1)) + 1
    }

    /// Drops period keys of every channel the store holds that lie more
    /// than [`Drm::key_margin`] periods behind the oldest segment of any of
    /// its renditions ([`KeyService::prune`] keeps each group's default
    /// key). Channels the store no longer holds keep their keys: nothing
    /// rotates there. Returns how many keys went.
    pub fn prune_keys(&self) -> usize {
        let Some(store) = &self.store else {
            return 0;
        };
        if self.keys.rotate_every() == 0 {
            return 0;
        }
        let margin = self.key_margin();
        let mut pruned = 0;
        for channel in store.channel_names() {
            let Some(oldest) = store.segment_spans(&channel).iter().map(|s| s.oldest).min() else {
                continue;
            };
            let Some(period) = self.keys.period_of(oldest) else {
                continue;
            };
            match self.keys.prune(&channel, period.saturating_sub(margin)) {
                Ok(n) => pruned += n,
                Err(e) => tracing::error!(channel, error = %e, "cannot prune old keys"),
            }
        }
        self.metrics.keys_pruned.inc_by(pruned as u64);
        pruned
    }

    /// A key by ID for a licence or key request. With derived keys
    /// (`keys.key_secret`) a key this origin has not created yet, because a
    /// redundant origin did and a player switched over, is created here when
    /// it belongs to `channel`'s window: one of its key groups, in a key
    /// period of its segments or the next one. Never further, so requests
    /// cannot walk the key space. With `channel`, only that channel's keys.
    pub fn locate_key(&self, kid: &KeyId, channel: Option<&str>) -> Option<KeyLocation> {
        const MAX_PERIODS: u64 = 64;
        if let Some(at) = self.keys.locate(kid) {
            return channel.is_none_or(|c| at.channel == c).then_some(at);
        }
        let channel = channel?;
        if self.config.scheme(channel) == EncryptionScheme::None {
            return None;
        }
        for span in self.store.as_ref()?.segment_spans(channel) {
            let periods: Vec<Option<u64>> = match (
                self.keys.period_of(span.oldest),
                self.keys.period_of(span.newest),
            ) {
                (Some(old), Some(new)) => {
                    let old = old.max(new.saturating_sub(MAX_PERIODS));
                    (old..=new.saturating_add(1)).map(Some).collect()
                }
                _ => vec![None],
            };
            for kind in [TrackKind::Video, TrackKind::Audio] {
                let group = self.config.key_group(channel, &span.rendition, kind);
                for period in &periods {
                    let derived = self.keys.derived_key(channel, group, *period)?;
                    if derived.kid == *kid {
                        if let Err(e) = self.keys.group_key(channel, group, *period) {
                            tracing::error!(channel, ?group, ?period, error = %e, "cannot keep a derived key");
                        }
                        return self.keys.locate(kid);
                    }
                }
            }
        }
        None
    }

    /// way commercial licence servers handle rotation: the same group's key
    /// for the period after it, and the group's current period key (the
    /// newest segment of each rendition in the group) and the next one, so
    /// a player that asks for one period while it needs the next (hls.js
    /// 1.7 pairs in-band ClearKey `pssh` events with sessions blindly) has
    /// it all the same. Keys up to the next period after the live edge are
    /// created if missing (persisted like any other, so they never change);
    /// never further, so requests cannot walk the key space forward. Never
    /// another group's or channel's keys. Empty for keys that do not rotate.
    pub fn rotation_companions(&self, at: &KeyLocation) -> Vec<ContentKey> {
        let (Some(period), true) = (at.entry.period, self.keys.rotate_every() > 0) else {
            return Vec::new();
        };
        let channel = at.channel.as_str();
        let group = at.entry.group.as_deref();
        let current: Vec<u64> = self
            .store
            .as_ref()
            .map(|s| s.segment_spans(channel))
            .unwrap_or_default()
            .iter()
            .filter(|span| {
                [TrackKind::Video, TrackKind::Audio]
                    .into_iter()
                    .any(|kind| self.config.key_group(channel, &span.rendition, kind) == group)
            })
            .filter_map(|span| self.keys.period_of(span.newest))
            .collect();
        let limit = current.iter().max().map(|c| c.saturating_add(1));
        let mut wanted = vec![period.saturating_add(1)];
        for c in &current {
            wanted.extend([*c, c.saturating_add(1)]);
        }
        let mut out: Vec<ContentKey> = Vec::new();
        for p in wanted {
            if p == period {
                continue;
            }
            let key = match self.keys.existing_key(channel, group, p) {
                Some(key) => Some(key),
                None if limit.is_some_and(|l| p <= l) => {
                    match self.keys.group_key(channel, group, Some(p)) {
                        Ok(key) => Some(key),
                        Err(e) => {
                            tracing::error!(channel, ?group, period = p, error = %e, "cannot create a period key");
                            None
                        }
                    }
                }
                None => None,
            };
            if let Some(key) = key.filter(|k| !out.contains(k)) {
                out.push(key);
            }
        }
        out
    }

    /// `rendered` (clear, from the store) in the channel's encryption.
    pub fn protect(
        &self,
        channel: &str,
        path: &str,
        rendered: Rendered,
    ) -> Result<Rendered, ProtectError> {
        let scheme = self.config.scheme(channel);
        if scheme == EncryptionScheme::None {
            return Ok(rendered);
        }
        let Some(object) = Object::parse(path) else {
            return Ok(rendered);
        };
        let immutable = matches!(
            object,
            Object::Init { .. }
                | Object::Fragment { .. }
                | Object::TsSegment { .. }
                | Object::Part { .. }
                | Object::ChunkedFragment { .. }
        );
        let memo_key = (channel.to_owned(), path.to_owned());
        if immutable {
            let memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((clear_etag, protected)) = memo.entries.get(&memo_key) {
                if *clear_etag == rendered.etag {
                    return Ok(protected.clone());
                }
            }
        }
        let clear_etag = rendered.etag.clone();
        let body = match (scheme, &object) {
            (_, Object::Master) => return Ok(rendered),
            (EncryptionScheme::Aes128, Object::MasterTs) => return Ok(rendered),
            (EncryptionScheme::Aes128, Object::Manifest) => return Err(ProtectError::NotOffered),
            (
                EncryptionScheme::Aes128,
                Object::MediaPlaylist { .. } | Object::TsPlaylist { .. },
            ) => {
                let text = String::from_utf8_lossy(&rendered.body);
                self.aes128_playlist(channel, &text)?.into_bytes().into()
            }
            (EncryptionScheme::Aes128, Object::Init { .. }) => return Ok(rendered),
            (
                EncryptionScheme::Aes128,
                Object::Fragment { sequence, .. } | Object::TsSegment { sequence, .. },
            ) => {
                let key = self.keys.key_for(channel, self.keys.period_of(*sequence))?;
                aes128_segment(&key.key, *sequence, &rendered.body).into()
            }
            (_, Object::MasterTs | Object::TsPlaylist { .. } | Object::TsSegment { .. }) => {
                return Err(ProtectError::NotOffered)
            }
            // Config refuses LL on AES-128 channels (see "Low latency" above).
            (EncryptionScheme::Aes128, Object::Part { .. } | Object::ChunkedFragment { .. }) => {
                return Err(ProtectError::NotOffered)
            }
            (
                _,
                Object::Part {
                    rendition,
                    kind,
                    sequence,
                    ..
                },
            ) => {
                self.protect_fragment(channel, path, rendition, *kind, *sequence, &rendered.body)?
            }
            (
                _,
                Object::ChunkedFragment {
                    rendition,
                    kind,
                    sequence,
                },
            ) => {
                // Each chunk exactly as its part is protected, so this is the
                // same object a request streamed while it was cut was sent.
                let parts = crate::package::fragment_parts(&rendered.body)
                    .ok_or(cenc::CencError("not a chunked CMAF fragment"))?;
                let mut body = bytes::BytesMut::with_capacity(rendered.body.len() + 1024);
                for (index, part) in parts.into_iter().enumerate() {
                    let path = crate::package::part_path(rendition, *kind, *sequence, index as u32);
                    let clear = Rendered::new(part, rendered.content_type, IMMUTABLE.into());
                    let protected = self.protect(channel, &path, clear)?;
                    body.extend_from_slice(&crate::package::chunk_of(protected.body, index == 0));
                }
                body.freeze()
            }
            (_, Object::Manifest) => {
                let text = String::from_utf8_lossy(&rendered.body);
                mpd_with_protection(&text, |r| {
                    let key = self.default_key(channel, &r.rendition, r.kind, r.init_id)?;
                    Ok(self.signalling(channel, scheme, &key))
                })?
                .into_bytes()
                .into()
            }
            (_, Object::MediaPlaylist { rendition, kind }) => {
                let text = String::from_utf8_lossy(&rendered.body);
                playlist_with_sample_aes(&text, |sequence| {
                    let key = self.segment_key(channel, rendition, *kind, sequence)?;
                    Ok(self.signalling(channel, scheme, &key))
                })?
                .into_bytes()
                .into()
            }
            (
                _,
                Object::Init {
                    rendition,
                    kind,
                    id,
                },
            ) => {
                let key = self.default_key(channel, rendition, *kind, *id)?;
                let p = self.track_protection(scheme, *kind, &key, false);
                cenc::protect_init(&rendered.body, &p)?
            }
            (
                _,
                Object::Fragment {
                    rendition,
                    kind,
                    sequence,
                },
            ) => {
                self.protect_fragment(channel, path, rendition, *kind, *sequence, &rendered.body)?
            }
        };
        let protected = Rendered::new(body, rendered.content_type, rendered.cache_control);
        if immutable {
            let mut memo = self.memo.lock().unwrap_or_else(|p| p.into_inner());
            if memo.bytes + protected.body.len() > MEMO_BYTES {
                memo.entries.clear();
                memo.bytes = 0;
            }
            memo.bytes += protected.body.len();
            memo.entries
                .insert(memo_key, (clear_etag, protected.clone()));
        }
        Ok(protected)
    }

    /// A CMAF fragment or LL part of segment `sequence` (at `path`) in the
    /// channel's cbcs/cenc encryption: the segment's key, so a segment and
    /// its parts need one licence; `cenc` IVs count up from a hash of the
    /// path, so every fragment and every part draws its own (a part's
    /// samples never share an IV with its siblings').
    fn protect_fragment(
        &self,
        channel: &str,
        path: &str,
        rendition: &str,
        kind: TrackKind,
        sequence: u64,
        clear: &[u8],
    ) -> Result<Bytes, ProtectError> {
        let key = self.segment_key(channel, rendition, kind, sequence)?;
        let rotating = self.keys.rotate_every() > 0;
        let p = self.track_protection(self.config.scheme(channel), kind, &key, rotating);
        let seed = Sha256::digest(format!("{channel}/{path}").as_bytes());
        let mut s = [0u8; 8];
        s.copy_from_slice(&seed[..8]);
        Ok(cenc::protect_fragment(clear, &p, u64::from_be_bytes(s))?)
    }

    /// LL: `part` of `rendition` as a chunk of its segment's fragment in
    /// the channel's encryption ([`crate::package::chunk_of`]), the bytes
    /// the finished segment's `{seq}-ll.m4s` holds; clear when the channel
    /// is. Memoised with the part.
    pub fn protect_chunk(
        &self,
        channel: &str,
        rendition: &str,
        part: &crate::package::Part,
        first: bool,
    ) -> Result<Bytes, ProtectError> {
        let protected = self.protect(channel, &part.path(rendition), part.render())?;
        Ok(crate::package::chunk_of(protected.body, first))
    }

    /// Whether the request for `uri` may have a key or licence
    /// (`encryption.licence_auth`): the check live keys get, for VOD's.
    pub(crate) fn entitled(
        &self,
        uri: &axum::http::Uri,
        headers: &axum::http::HeaderMap,
    ) -> Result<(), entitlement::NotEntitled> {
        self.entitlement
            .check(uri, headers, std::time::SystemTime::now())
    }

    /// The default key of a track whose init segment is `init_id` (`tenc`,
    /// `cenc:default_KID`): see [`KeyService::default_key`].
    fn default_key(
        &self,
        channel: &str,
        rendition: &str,
        kind: TrackKind,
        init_id: u64,
    ) -> Result<ContentKey, KeyError> {
        let group = self.config.key_group(channel, rendition, kind);
        self.keys
            .default_key(channel, group, self.keys.period_of(init_id))
    }

    /// The key that encrypts segment `sequence` of a track.
    fn segment_key(
        &self,
        channel: &str,
        rendition: &str,
        kind: TrackKind,
        sequence: u64,
    ) -> Result<ContentKey, KeyError> {
        let group = self.config.key_group(channel, rendition, kind);
        self.keys
            .group_key(channel, group, self.keys.period_of(sequence))
    }

    /// `in_band`: the fragment names `key` itself (key rotation).
    pub(crate) fn track_protection(
        &self,
        scheme: EncryptionScheme,
        kind: TrackKind,
        key: &ContentKey,
        in_band: bool,
    ) -> TrackProtection {
        TrackProtection {
            scheme: match scheme {
                EncryptionScheme::Cbcs => Scheme::Cbcs,
                _ => Scheme::Cenc,
            },
            kind,
            kid: key.kid.0,
            key: key.key,
            constant_iv: constant_iv(key),
            pssh: self.pssh_boxes(scheme, key),
            in_band,
        }
    }

    /// The common (W3C EME `cenc` init data) box always, Widevine's when configured.
    fn pssh_boxes(&self, scheme: EncryptionScheme, key: &ContentKey) -> Vec<Pssh> {
        let mut boxes = vec![Pssh {
            system_id: cenc::COMMON_SYSTEM_ID,
            kids: vec![key.kid.0],
            data: Vec::new(),
        }];
        if self.config.widevine_licence_url.is_some() {
            boxes.push(widevine_pssh(key));
        }
        if let Some(url) = &self.config.playready_licence_url {
            boxes.push(playready_pssh(key, scheme, url));
        }
        boxes
    }

    pub(crate) fn signalling(
        &self,
        channel: &str,
        scheme: EncryptionScheme,
        key: &ContentKey,
    ) -> Signalling {
        Signalling {
            scheme,
            key: *key,
            clearkey_licence_url: self.config.clearkey.then(|| {
                self.config
                    .clearkey_licence_url
                    .replace("{channel}", channel)
            }),
            widevine: self
                .config
                .widevine_licence_url
                .clone()
                .map(|url| (url, widevine_pssh(key))),
            playready: self.config.playready_licence_url.clone().map(|url| {
                let pssh = playready_pssh(key, scheme, &url);
                (url, pssh)
            }),
            fairplay: self.config.fairplay_licence_url.clone(),
        }
    }

    /// RFC 8216 §4.3.2.4: one `EXT-X-KEY` per key period, no IV (the media
    /// sequence number is the IV), and `METHOD=NONE` before each
    /// `EXT-X-MAP` so initialisation sections stay clear.
    fn aes128_playlist(&self, channel: &str, text: &str) -> Result<String, ProtectError> {
        let mut out = String::with_capacity(text.len() + 256);
        let mut current: Option<String> = None;
        for line in text.lines() {
            if line.starts_with("#EXT-X-MAP:") {
                if current.is_some() {
                    out.push_str("#EXT-X-KEY:METHOD=NONE\n");
                    current = None;
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                if let Some(sequence) = segment_number(line) {
                    let key = self.keys.key_for(channel, self.keys.period_of(sequence))?;
                    let tag = format!(
                        "#EXT-X-KEY:METHOD=AES-128,URI=\"../key/{}.key\"",
                        key.kid.hex()
                    );
                    if current.as_deref() != Some(tag.as_str()) {
                        out.push_str(&tag);
                        out.push('\n');
                        current = Some(tag);
                    }
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }
}

/// Creates an encrypted channel's key when a publisher is accepted, so the
/// key exists (and can be exported as CPIX) before any player asks; a CPIX
/// import must come before the channel's first publish.
pub struct KeyOnPublish<T> {
    pub inner: T,
    pub drm: Arc<Drm>,
}

impl<T: PublishTarget> PublishTarget for KeyOnPublish<T> {
    fn publish(
        &self,
        name: &StreamName,
        info: PublisherInfo,
    ) -> Result<Box<dyn MediaSink>, PublishRefused> {
        let sink = self.inner.publish(name, info)?;
        // Rotating keys belong to segment numbers: those come on first use.
        let scheme = self.drm.config.scheme(&name.channel);
        if scheme != EncryptionScheme::None && self.drm.keys.rotate_every() == 0 {
            let groups: std::collections::BTreeSet<Option<&str>> =
                [TrackKind::Video, TrackKind::Audio]
                    .into_iter()
                    .map(|kind| {
                        self.drm
                            .config
                            .key_group(&name.channel, &name.rendition, kind)
                    })
                    .collect();
            for group in groups {
                if let Err(e) = self.drm.keys.group_key(&name.channel, group, None) {
                    tracing::error!(channel = %name.channel, ?group, error = %e, "cannot create the channel's key");
                }
            }
        }
        Ok(sink)
    }
}

/// The segment an LL-HLS part's URI belongs to: `video/123.4.m4s` → 123.
pub(crate) fn part_segment_number(uri: &str) -> Option<u64> {
    let file = uri.rsplit('/').next()?;
    let (sequence, index) = file.strip_suffix(".m4s")?.split_once('.')?;
    index.parse::<u32>().ok()?;
    sequence.parse().ok()
}

/// `video/123.m4s`, `123.ts` → 123.
pub(crate) fn segment_number(uri: &str) -> Option<u64> {
    let file = uri.rsplit('/').next()?;
    let stem = file
        .strip_suffix(".m4s")
        .or_else(|| file.strip_suffix(".ts"))?;
    stem.parse().ok()
}

/// A cbcs constant IV tied to the key (never reused with another key).
fn constant_iv(key: &ContentKey) -> [u8; 16] {
    let digest = Sha256::digest([b"strata cbcs iv".as_slice(), &key.kid.0].concat());
    let mut iv = [0u8; 16];
    iv.copy_from_slice(&digest[..16]);
    iv
}

/// Widevine `pssh` data: WidevinePsshData protobuf with one `key_id` (field 2).
pub fn widevine_pssh(key: &ContentKey) -> Pssh {
    let mut data = vec![0x12, 0x10];
    data.extend_from_slice(&key.kid.0);
    Pssh {
        system_id: cenc::WIDEVINE_SYSTEM_ID,
        kids: vec![key.kid.0],
        data,
    }
}

/// PlayReady `pssh` (PlayReady Header Specification): its data is a
/// PlayReady Object with one Rights Management Header record (type 1), a
/// UTF-16LE `WRMHEADER` — v4.0 with `AESCTR` for cenc, v4.3 with `AESCBC`
/// for cbcs — naming the key (GUID bytes, little-endian, base64) and the
/// licence URL.
pub fn playready_pssh(key: &ContentKey, scheme: EncryptionScheme, licence_url: &str) -> Pssh {
    let k = key.kid.0;
    let guid: Vec<u8> = [k[3], k[2], k[1], k[0], k[5], k[4], k[7], k[6]]
        .into_iter()
        .chain(k[8..].iter().copied())
        .collect();
    let kid = STANDARD.encode(guid);
    let url = signalling::xml_attr(licence_url);
    let ns = "http://schemas.microsoft.com/DRM/2007/03/PlayReadyHeader";
    let header = if scheme == EncryptionScheme::Cbcs {
        format!("<WRMHEADER xmlns=\"{ns}\" version=\"4.3.0.0\"><DATA><PROTECTINFO><KIDS><KID ALGID=\"AESCBC\" VALUE=\"{kid}\"></KID></KIDS></PROTECTINFO><LA_URL>{url}</LA_URL></DATA></WRMHEADER>")
    } else {
        format!("<WRMHEADER xmlns=\"{ns}\" version=\"4.0.0.0\"><DATA><PROTECTINFO><KEYLEN>16</KEYLEN><ALGID>AESCTR</ALGID></PROTECTINFO><KID>{kid}</KID><LA_URL>{url}</LA_URL></DATA></WRMHEADER>")
    };
    let record: Vec<u8> = header.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut object = Vec::with_capacity(record.len() + 10);
    object.extend_from_slice(&((record.len() + 10) as u32).to_le_bytes());
    object.extend_from_slice(&1u16.to_le_bytes()); // record count
    object.extend_from_slice(&1u16.to_le_bytes()); // Rights Management Header
    object.extend_from_slice(&(record.len() as u16).to_le_bytes());
    object.extend_from_slice(&record);
    Pssh {
        system_id: cenc::PLAYREADY_SYSTEM_ID,
        kids: vec![key.kid.0],
        data: object,
    }
}

/// RFC 8216 §5.2: AES-128-CBC with PKCS#7 padding over the whole segment,
/// IV = the media sequence number as a 128-bit big-endian integer.
pub fn aes128_segment(key: &[u8; 16], sequence: u64, clear: &[u8]) -> Vec<u8> {
    let iv = u128::from(sequence).to_be_bytes();
    cbc::Encryptor::<Aes128>::new(key.into(), &iv.into())
        .encrypt_padded_vec_mut::<cbc::cipher::block_padding::Pkcs7>(clear)
}

#[cfg(test)]
mod tests;
