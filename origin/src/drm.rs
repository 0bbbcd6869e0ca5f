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

pub mod http;

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use aes::Aes128;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cbc::cipher::{BlockEncryptMut, KeyIvInit};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ingest::{MediaSink, PublishRefused, PublishTarget, PublisherInfo, StreamName};
use crate::keys::{ContentKey, KeyError, KeyService, KeysConfig};
use crate::media::cenc::{self, Pssh, Scheme, TrackProtection};
use crate::media::TrackKind;
use crate::package::{valid_name, Object, RenderError, Rendered};

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
}

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
    /// Per-channel schemes.
    pub channels: BTreeMap<String, ChannelEncryption>,
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
            channels: BTreeMap::new(),
        }
    }
}

impl EncryptionConfig {
    pub fn scheme(&self, channel: &str) -> EncryptionScheme {
        self.channels
            .get(channel)
            .map_or(self.default, |c| c.scheme)
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
        if keys.rotate_every > 0 {
            let rotating_cmaf = [self.default]
                .into_iter()
                .chain(self.channels.values().map(|c| c.scheme))
                .any(|s| matches!(s, EncryptionScheme::Cbcs | EncryptionScheme::Cenc));
            if rotating_cmaf {
                return Err(
                    "keys.rotate_every: key rotation is supported with aes-128 only".into(),
                );
            }
        }
        if self.clearkey_licence_url.is_empty() {
            return Err("encryption.clearkey_licence_url: must not be empty".into());
        }
        Ok(())
    }
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
            config,
            keys,
            metrics,
            memo: Arc::default(),
        }
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
            Object::Init { .. } | Object::Fragment { .. } | Object::TsSegment { .. }
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
            (_, Object::Manifest) => {
                let key = self.keys.key_for(channel, None)?;
                let text = String::from_utf8_lossy(&rendered.body);
                mpd_with_protection(&text, &self.signalling(channel, scheme, &key))
                    .into_bytes()
                    .into()
            }
            (_, Object::MediaPlaylist { .. }) => {
                let key = self.keys.key_for(channel, None)?;
                let text = String::from_utf8_lossy(&rendered.body);
                playlist_with_sample_aes(&text, &self.signalling(channel, scheme, &key))
                    .into_bytes()
                    .into()
            }
            (_, Object::Init { kind, .. }) => {
                let p = self.track_protection(channel, scheme, *kind)?;
                cenc::protect_init(&rendered.body, &p)?
            }
            (_, Object::Fragment { kind, .. }) => {
                let p = self.track_protection(channel, scheme, *kind)?;
                let seed = Sha256::digest(format!("{channel}/{path}").as_bytes());
                let mut s = [0u8; 8];
                s.copy_from_slice(&seed[..8]);
                cenc::protect_fragment(&rendered.body, &p, u64::from_be_bytes(s))?
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

    fn track_protection(
        &self,
        channel: &str,
        scheme: EncryptionScheme,
        kind: TrackKind,
    ) -> Result<TrackProtection, ProtectError> {
        let key = self.keys.key_for(channel, None)?;
        Ok(TrackProtection {
            scheme: match scheme {
                EncryptionScheme::Cbcs => Scheme::Cbcs,
                _ => Scheme::Cenc,
            },
            kind,
            kid: key.kid.0,
            key: key.key,
            constant_iv: constant_iv(&key),
            pssh: self.pssh_boxes(scheme, &key),
        })
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

    fn signalling(&self, channel: &str, scheme: EncryptionScheme, key: &ContentKey) -> Signalling {
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
            if let Err(e) = self.drm.keys.key_for(&name.channel, None) {
                tracing::error!(channel = %name.channel, error = %e, "cannot create the channel's key");
            }
        }
        Ok(sink)
    }
}

/// `video/123.m4s`, `123.ts` → 123.
fn segment_number(uri: &str) -> Option<u64> {
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
    let url = xml_attr(licence_url);
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

/// What manifests say about a protected channel.
#[derive(Clone, Debug)]
pub struct Signalling {
    pub scheme: EncryptionScheme,
    pub key: ContentKey,
    pub clearkey_licence_url: Option<String>,
    pub widevine: Option<(String, Pssh)>,
    /// Licence URL and `pssh` (whose data is the PlayReady Object).
    pub playready: Option<(String, Pssh)>,
    pub fairplay: Option<String>,
}

fn pssh_base64(pssh: &Pssh) -> String {
    let mut buf = bytes::BytesMut::new();
    cenc::write_pssh(&mut buf, pssh);
    STANDARD.encode(&buf)
}

fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `ContentProtection` elements (ISO/IEC 23009-1 §5.8.4.1, DASH-IF IOP
/// §7.7.2) inserted at the top of every AdaptationSet, plus the `cenc` and
/// `dashif` namespaces on the MPD element.
pub fn mpd_with_protection(mpd: &str, s: &Signalling) -> String {
    let value = if s.scheme == EncryptionScheme::Cbcs {
        "cbcs"
    } else {
        "cenc"
    };
    let kid = s.key.kid.uuid();
    let mut elements = String::new();
    let _ = writeln!(
        elements,
        "      <ContentProtection schemeIdUri=\"urn:mpeg:dash:mp4protection:2011\" value=\"{value}\" cenc:default_KID=\"{kid}\"/>"
    );
    if let Some(url) = &s.clearkey_licence_url {
        let _ = writeln!(
            elements,
            "      <ContentProtection schemeIdUri=\"urn:uuid:{CLEARKEY_UUID}\" value=\"ClearKey1.0\"><dashif:laurl Lic_type=\"EME-1.0\">{}</dashif:laurl></ContentProtection>",
            xml_attr(url)
        );
    }
    if let Some((url, pssh)) = &s.widevine {
        let _ = writeln!(
            elements,
            "      <ContentProtection schemeIdUri=\"urn:uuid:{WIDEVINE_UUID}\" value=\"Widevine\"><cenc:pssh>{}</cenc:pssh><dashif:laurl>{}</dashif:laurl></ContentProtection>",
            pssh_base64(pssh),
            xml_attr(url)
        );
    }
    if let Some((url, pssh)) = &s.playready {
        let _ = writeln!(
            elements,
            "      <ContentProtection schemeIdUri=\"urn:uuid:{PLAYREADY_UUID}\" value=\"MSPR 2.0\"><cenc:pssh>{}</cenc:pssh><mspr:pro>{}</mspr:pro><dashif:laurl>{}</dashif:laurl></ContentProtection>",
            pssh_base64(pssh),
            STANDARD.encode(&pssh.data),
            xml_attr(url)
        );
    }
    if let (Some(url), EncryptionScheme::Cbcs) = (&s.fairplay, s.scheme) {
        let _ = writeln!(
            elements,
            "      <ContentProtection schemeIdUri=\"urn:uuid:{FAIRPLAY_UUID}\" value=\"FairPlay\"><dashif:laurl>{}</dashif:laurl></ContentProtection>",
            xml_attr(url)
        );
    }
    let mut out = String::with_capacity(mpd.len() + elements.len() * 4);
    for line in mpd.lines() {
        if let Some(rest) = line.strip_prefix("<MPD ") {
            out.push_str(
                "<MPD xmlns:cenc=\"urn:mpeg:cenc:2013\" xmlns:dashif=\"https://dashif.org/CPS\" xmlns:mspr=\"urn:microsoft:playready\" ",
            );
            out.push_str(rest);
            out.push('\n');
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("<AdaptationSet ") {
            out.push_str(&elements);
        }
    }
    out
}

/// `EXT-X-KEY` tags for SAMPLE-AES (cbcs) or SAMPLE-AES-CTR (cenc), one per
/// key system, before the first `EXT-X-MAP`.
pub fn playlist_with_sample_aes(playlist: &str, s: &Signalling) -> String {
    let method = if s.scheme == EncryptionScheme::Cbcs {
        "SAMPLE-AES"
    } else {
        "SAMPLE-AES-CTR"
    };
    let hex = s.key.kid.hex();
    let mut tags = String::new();
    if s.clearkey_licence_url.is_some() {
        // hls.js 1.x reads the KID from the data URI and KEYID.
        let _ = writeln!(
            tags,
            "#EXT-X-KEY:METHOD={method},KEYFORMAT=\"org.w3.clearkey\",KEYFORMATVERSIONS=\"1\",URI=\"data:text/plain;base64,{}\",KEYID=0x{hex}",
            STANDARD.encode(s.key.kid.0)
        );
    }
    if let Some((_, pssh)) = &s.widevine {
        let _ = writeln!(
            tags,
            "#EXT-X-KEY:METHOD={method},KEYFORMAT=\"urn:uuid:{WIDEVINE_UUID}\",KEYFORMATVERSIONS=\"1\",URI=\"data:text/plain;base64,{}\",KEYID=0x{hex}",
            pssh_base64(pssh)
        );
    }
    if let (Some(_), EncryptionScheme::Cbcs) = (&s.fairplay, s.scheme) {
        let _ = writeln!(
            tags,
            "#EXT-X-KEY:METHOD=SAMPLE-AES,KEYFORMAT=\"com.apple.streamingkeydelivery\",KEYFORMATVERSIONS=\"1\",URI=\"skd://{hex}\""
        );
    }
    let mut out = String::with_capacity(playlist.len() + tags.len());
    let mut placed = false;
    for line in playlist.lines() {
        if !placed
            && (line == "#EXT-X-DISCONTINUITY"
                || [
                    "#EXT-X-MAP:",
                    "#EXT-X-GAP",
                    "#EXT-X-PROGRAM-DATE-TIME",
                    "#EXTINF",
                ]
                .iter()
                .any(|tag| line.starts_with(tag)))
        {
            out.push_str(&tags);
            placed = true;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests;
