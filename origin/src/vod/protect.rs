//! Encrypted titles: the live encryption and key service ([`crate::drm`],
//! [`crate::keys`]) applied to what the VOD packager renders, as live
//! applies it to what the store renders — playlists and MPDs get textual
//! insertions, init segments and fragments are protected on the way out.
//!
//! | scheme | HLS (fMP4) | HLS (MPEG-TS) | DASH |
//! | --- | --- | --- | --- |
//! | `aes-128` | `EXT-X-KEY:METHOD=AES-128` after `EXT-X-MAP` (init clear), fragments AES-128-CBC whole | the same, segments whole | not offered (404) |
//! | `cbcs` | `METHOD=SAMPLE-AES` | not offered (404) | `ContentProtection` |
//! | `cenc` | `METHOD=SAMPLE-AES-CTR` | not offered (404) | `ContentProtection` |
//!
//! One key per title (an MP4 or a set file: every rendition of a set shares
//! it). The key service knows keys by "channel"; a title's is
//! [`key_channel`], `vod-` and a hash of its path, so keys are created,
//! persisted, derived from `keys.key_secret` (two origins with one secret
//! agree) and exported as CPIX exactly as a live channel's. Keys never
//! rotate: a title's key is for every segment.
//!
//! Licences: `POST /drm/clearkey/vod/{path}` (the title's keys only, so an
//! EdgeAuth token's ACL can entitle a viewer to a title or a prefix of
//! titles); HLS AES-128 keys: `GET /vod/{path}/key/{kid}.key`. Both need a
//! token under `encryption.licence_auth = "token"`, as live keys do.

use std::collections::BTreeMap;
use std::path::{Component, Path};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::hevc_cenc::HevcParameterSets;
use super::{VodObject, VodRequest};
use crate::drm::{
    aes128_segment, content_protection, sample_aes_tags, Drm, EncryptionConfig, EncryptionScheme,
    LicenceAuth, ProtectError,
};
use crate::keys::{ContentKey, KeyError, KeysConfig};
use crate::media::{cenc, TrackKind};
use crate::package::Rendered;

/// `[vod.encryption]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VodEncryption {
    /// Scheme of titles no prefix below matches: `none`, `aes-128`, `cbcs`
    /// or `cenc`.
    pub default: EncryptionScheme,
    /// Title path prefix (whole path components, relative to `vod.root`) →
    /// scheme; the longest matching prefix wins, e.g.
    /// `{ "premium" = "cbcs", "premium/trailers" = "none" }`.
    pub prefixes: BTreeMap<String, EncryptionScheme>,
    /// ClearKey licence URL written into MPDs (`dashif:laurl`); `{path}` is
    /// replaced by the title's path (percent-encoded).
    pub clearkey_licence_url: String,
}

impl Default for VodEncryption {
    fn default() -> Self {
        VodEncryption {
            default: EncryptionScheme::None,
            prefixes: BTreeMap::new(),
            clearkey_licence_url: "/drm/clearkey/vod/{path}".into(),
        }
    }
}

impl VodEncryption {
    /// The scheme of a title (its path relative to the root).
    pub fn scheme(&self, title: &Path) -> EncryptionScheme {
        self.prefixes
            .iter()
            .filter(|(prefix, _)| title.starts_with(Path::new(prefix.as_str())))
            .max_by_key(|(prefix, _)| Path::new(prefix.as_str()).components().count())
            .map_or(self.default, |(_, scheme)| *scheme)
    }

    pub fn any_encrypted(&self) -> bool {
        self.default != EncryptionScheme::None
            || self.prefixes.values().any(|s| *s != EncryptionScheme::None)
    }

    /// Checks serde cannot express, with the sections keys come from;
    /// errors name the key.
    pub fn validate(&self, encryption: &EncryptionConfig, keys: &KeysConfig) -> Result<(), String> {
        for prefix in self.prefixes.keys() {
            let plain = !prefix.is_empty()
                && !prefix.contains('\\')
                && Path::new(prefix)
                    .components()
                    .all(|c| matches!(c, Component::Normal(_)));
            if !plain {
                return Err(format!(
                    "vod.encryption.prefixes.{prefix:?}: a relative path of plain components (no '/', '..' or '.' at its start)"
                ));
            }
        }
        if !self.clearkey_licence_url.contains("{path}") {
            return Err(
                "vod.encryption.clearkey_licence_url: must contain {path}, so a licence names its title"
                    .into(),
            );
        }
        if !self.any_encrypted() {
            return Ok(());
        }
        if keys.state_dir.is_none() {
            return Err(
                "keys.state_dir: required when VOD titles are encrypted, so that keys survive a restart"
                    .into(),
            );
        }
        if encryption.licence_auth == LicenceAuth::Token && encryption.licence_token.keys.is_empty()
        {
            return Err(
                "encryption.licence_token.keys: VOD titles are encrypted, so a licence or key goes only to a viewer with an EdgeAuth token: give the edges' [token] keys here, or set encryption.licence_auth = \"none\""
                    .into(),
            );
        }
        Ok(())
    }
}

/// The key service's name for a title's keys: `vod-` and the first 16
/// bytes of SHA-256 of its path, in hex (a valid channel name whatever the
/// path holds, the same on every origin).
pub fn key_channel(title: &Path) -> String {
    let digest = Sha256::digest(title.to_string_lossy().as_bytes());
    format!("vod-{}", hex::encode(&digest[..16]))
}

/// A title path as it goes into a URL: each byte outside RFC 3986's
/// unreserved set and `/` percent-encoded.
pub fn url_path(title: &Path) -> String {
    let mut out = String::new();
    for b in title.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The encryption of titles: the `[vod.encryption]` choice and the live
/// service's keys, signalling and entitlement.
pub struct TitleDrm {
    pub config: VodEncryption,
    pub drm: Arc<Drm>,
}

impl TitleDrm {
    pub fn new(config: VodEncryption, drm: Arc<Drm>) -> TitleDrm {
        TitleDrm { config, drm }
    }

    pub fn scheme(&self, title: &Path) -> EncryptionScheme {
        self.config.scheme(title)
    }

    /// The title's key, created (random, or derived from `keys.key_secret`)
    /// and persisted on first use.
    pub fn key(&self, title: &Path) -> Result<ContentKey, KeyError> {
        self.drm.keys.group_key(&key_channel(title), None, None)
    }

    /// `rendered` (clear, from the packager) in the title's encryption.
    pub fn protect(
        &self,
        request: &VodRequest,
        rendered: Rendered,
    ) -> Result<Rendered, ProtectError> {
        self.protect_with(request, rendered, None)
    }

    /// [`TitleDrm::protect`]; `hevc`: the parameter sets of an HEVC
    /// rendition, whose fragments' slice headers stay clear (without them an
    /// HEVC fragment would be cut as AVC: pass them for every HEVC one).
    pub fn protect_with(
        &self,
        request: &VodRequest,
        rendered: Rendered,
        hevc: Option<&HevcParameterSets>,
    ) -> Result<Rendered, ProtectError> {
        let scheme = self.scheme(&request.title);
        if scheme == EncryptionScheme::None {
            return Ok(rendered);
        }
        let cmaf = scheme != EncryptionScheme::Aes128;
        let body: bytes::Bytes = match &request.object {
            VodObject::Master
            | VodObject::SubtitlePlaylist { .. }
            | VodObject::SubtitleSegment { .. }
            | VodObject::SubtitleFile { .. }
            // A still picture for seek previews, like the subtitles: clear.
            | VodObject::Thumbnail { .. } => return Ok(rendered),
            VodObject::MasterTs | VodObject::TsPlaylist { .. } | VodObject::TsSegment { .. }
                if cmaf =>
            {
                // Sample encryption of MPEG-TS is another format; not made.
                return Err(ProtectError::NotOffered);
            }
            VodObject::MasterTs => return Ok(rendered),
            VodObject::Manifest if !cmaf => return Err(ProtectError::NotOffered),
            VodObject::Manifest => {
                let key = self.key(&request.title)?;
                let elements = content_protection(&self.signalling(request, scheme, &key));
                mpd_with_content_protection(&String::from_utf8_lossy(&rendered.body), &elements)
                    .into_bytes()
                    .into()
            }
            VodObject::MediaPlaylist { .. }
            | VodObject::IFramePlaylist { .. }
            | VodObject::TsPlaylist { .. } => {
                let key = self.key(&request.title)?;
                let text = String::from_utf8_lossy(&rendered.body);
                if cmaf {
                    let tags = sample_aes_tags(&self.signalling(request, scheme, &key));
                    playlist_with_key_tags(&text, &tags, false)
                } else {
                    // `t{id}/ts.m3u8` lies a directory below the others.
                    let up = if matches!(request.object, VodObject::TsPlaylist { .. }) {
                        "../"
                    } else {
                        ""
                    };
                    let tag = format!(
                        "#EXT-X-KEY:METHOD=AES-128,URI=\"{up}key/{}.key\"\n",
                        key.kid.hex()
                    );
                    playlist_with_key_tags(&text, &tag, true)
                }
                .into_bytes()
                .into()
            }
            VodObject::Init { .. } if !cmaf => return Ok(rendered),
            VodObject::Init { .. } => {
                let key = self.key(&request.title)?;
                let p = self
                    .drm
                    .track_protection(scheme, kind_of(&rendered), &key, false);
                cenc::protect_init(&rendered.body, &p)?
            }
            VodObject::Fragment { number, .. }
            | VodObject::KeyFrame { number, .. }
            | VodObject::TsSegment { number, .. }
                if !cmaf =>
            {
                // RFC 8216 §5.2: no IV attribute, so the media sequence
                // number is the IV; our playlists start at 1, as `number`.
                let key = self.key(&request.title)?;
                aes128_segment(&key.key, u64::from(*number), &rendered.body).into()
            }
            VodObject::Fragment { .. } | VodObject::KeyFrame { .. } => {
                let key = self.key(&request.title)?;
                let p = self
                    .drm
                    .track_protection(scheme, kind_of(&rendered), &key, false);
                // The clip and the object are in the seed: no two
                // fragments of a title start their cenc IVs alike.
                let seed = Sha256::digest(format!("vod {request:?}").as_bytes());
                let mut s = [0u8; 8];
                s.copy_from_slice(&seed[..8]);
                match hevc {
                    Some(sets) => cenc::protect_fragment_with(
                        &rendered.body,
                        &p,
                        u64::from_be_bytes(s),
                        &|sample| sets.subsamples(sample, p.scheme),
                    )?,
                    None => cenc::protect_fragment(&rendered.body, &p, u64::from_be_bytes(s))?,
                }
            }
            VodObject::TsSegment { .. } => return Err(ProtectError::NotOffered),
            VodObject::Key { .. } => return Ok(rendered),
        };
        Ok(Rendered::new(
            body,
            rendered.content_type,
            rendered.cache_control,
        ))
    }

    fn signalling(
        &self,
        request: &VodRequest,
        scheme: EncryptionScheme,
        key: &ContentKey,
    ) -> crate::drm::Signalling {
        let mut s = self
            .drm
            .signalling(&key_channel(&request.title), scheme, key);
        s.clearkey_licence_url = self.drm.config.clearkey.then(|| {
            self.config
                .clearkey_licence_url
                .replace("{path}", &url_path(&request.title))
        });
        s
    }
}

/// The packager writes `video/mp4` for video tracks, `audio/mp4` for audio
/// (one track per CMAF file).
fn kind_of(rendered: &Rendered) -> TrackKind {
    if rendered.content_type.starts_with("audio/") {
        TrackKind::Audio
    } else {
        TrackKind::Video
    }
}

/// A VOD media playlist with `tags` where one key starts to apply: before
/// `EXT-X-MAP` (SAMPLE-AES: the tags cover the whole playlist), or, with
/// `after_map` (AES-128), after it so the initialisation section stays
/// clear (RFC 8216bis §4.4.4.4–5: a MAP under a METHOD=AES-128 key would be
/// encrypted too); without a MAP, before the first segment's tags.
pub fn playlist_with_key_tags(playlist: &str, tags: &str, after_map: bool) -> String {
    let mut out = String::with_capacity(playlist.len() + tags.len());
    let mut placed = false;
    for line in playlist.lines() {
        let map = line.starts_with("#EXT-X-MAP:");
        let first_segment = line.starts_with("#EXTINF");
        if !placed && ((map && !after_map) || first_segment) {
            out.push_str(tags);
            placed = true;
        }
        out.push_str(line);
        out.push('\n');
        if !placed && map && after_map {
            out.push_str(tags);
            placed = true;
        }
    }
    out
}

/// A VOD MPD with `elements` (ContentProtection) at the top of every video
/// and audio AdaptationSet, and the `cenc`, `dashif` and `mspr` namespaces
/// on the MPD element.
pub fn mpd_with_content_protection(mpd: &str, elements: &str) -> String {
    let mut out = String::with_capacity(mpd.len() + 4 * elements.len());
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
        let trimmed = line.trim_start();
        if trimmed.starts_with("<AdaptationSet ")
            && (trimmed.contains("contentType=\"video\"")
                || trimmed.contains("contentType=\"audio\""))
        {
            out.push_str(elements);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_whole_component_prefix_decides_a_titles_scheme() {
        let config = VodEncryption {
            default: EncryptionScheme::Aes128,
            prefixes: [
                ("premium".to_owned(), EncryptionScheme::Cbcs),
                ("premium/trailers".to_owned(), EncryptionScheme::None),
            ]
            .into_iter()
            .collect(),
            ..VodEncryption::default()
        };
        let scheme = |p: &str| config.scheme(Path::new(p));
        assert_eq!(scheme("premium/film.mp4"), EncryptionScheme::Cbcs);
        assert_eq!(scheme("premium/trailers/t.mp4"), EncryptionScheme::None);
        assert_eq!(scheme("premiums/film.mp4"), EncryptionScheme::Aes128);
        assert_eq!(scheme("film.mp4"), EncryptionScheme::Aes128);
    }

    #[test]
    fn bad_prefixes_and_keyless_encryption_are_refused_naming_the_key() {
        let keys = KeysConfig {
            state_dir: Some("/tmp/x".into()),
            ..KeysConfig::default()
        };
        let mut encryption = EncryptionConfig {
            licence_auth: LicenceAuth::None,
            ..EncryptionConfig::default()
        };
        for prefix in ["../x", "/abs", "", "a/../b"] {
            let c = VodEncryption {
                prefixes: [(prefix.to_owned(), EncryptionScheme::Cenc)]
                    .into_iter()
                    .collect(),
                ..VodEncryption::default()
            };
            let e = c.validate(&encryption, &keys).expect_err(prefix);
            assert!(e.contains("vod.encryption.prefixes"), "{e}");
        }
        let on = VodEncryption {
            default: EncryptionScheme::Cenc,
            ..VodEncryption::default()
        };
        on.validate(&encryption, &keys).expect("valid");
        let e = on
            .validate(&encryption, &KeysConfig::default())
            .expect_err("no state_dir");
        assert!(e.contains("keys.state_dir"), "{e}");
        encryption.licence_auth = LicenceAuth::Token;
        let e = on.validate(&encryption, &keys).expect_err("no token keys");
        assert!(e.contains("encryption.licence_token.keys"), "{e}");
        VodEncryption::default()
            .validate(&encryption, &KeysConfig::default())
            .expect("clear titles need nothing");
    }

    #[test]
    fn key_channels_are_channel_names_and_differ_per_title() {
        let a = key_channel(Path::new("films/a.mp4"));
        assert!(crate::package::valid_name(&a), "{a}");
        assert_ne!(a, key_channel(Path::new("films/b.mp4")));
        assert_eq!(a, key_channel(Path::new("films/a.mp4")));
        assert_eq!(url_path(Path::new("a b/ç.mp4")), "a%20b/%C3%A7.mp4");
    }

    #[test]
    fn key_tags_go_before_the_map_for_sample_aes_and_after_it_for_aes_128() {
        let playlist = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-MAP:URI=\"t1/init.mp4\"\n#EXTINF:4.000,\nt1/1.m4s\n#EXTINF:4.000,\nt1/2.m4s\n#EXT-X-ENDLIST\n";
        let sample_aes = playlist_with_key_tags(playlist, "#EXT-X-KEY:S\n", false);
        assert!(
            sample_aes.contains("#EXT-X-KEY:S\n#EXT-X-MAP"),
            "{sample_aes}"
        );
        assert_eq!(sample_aes.matches("#EXT-X-KEY").count(), 1);
        let aes = playlist_with_key_tags(playlist, "#EXT-X-KEY:A\n", true);
        assert!(aes.contains("init.mp4\"\n#EXT-X-KEY:A\n#EXTINF"), "{aes}");
        let ts = playlist_with_key_tags(
            "#EXTM3U\n#EXTINF:4.000,\nt1/1.ts\n#EXTINF:4.000,\nt1/2.ts\n",
            "#EXT-X-KEY:A\n",
            true,
        );
        assert!(ts.starts_with("#EXTM3U\n#EXT-X-KEY:A\n#EXTINF"), "{ts}");
    }

    #[test]
    fn content_protection_goes_into_media_sets_only() {
        let mpd = "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\">\n  <Period>\n    <AdaptationSet id=\"0\" contentType=\"video\">\n    </AdaptationSet>\n    <AdaptationSet id=\"1\" contentType=\"audio\">\n    </AdaptationSet>\n    <AdaptationSet id=\"2\" contentType=\"text\">\n    </AdaptationSet>\n  </Period>\n</MPD>\n";
        let out = mpd_with_content_protection(mpd, "<CP/>\n");
        assert_eq!(out.matches("<CP/>").count(), 2, "{out}");
        assert!(out.contains("xmlns:cenc="), "{out}");
        assert!(!out.contains("contentType=\"text\">\n<CP/>"), "{out}");
    }
}
