//! What HLS playlists and DASH MPDs say about a protected channel: textual
//! insertions into the packagers' own output, one key (and so one set of
//! tags or elements) at a time.
//!
//! # Key rotation and key groups in DASH
//!
//! DASH keeps its `ContentProtection` at the AdaptationSet level, with
//! `cenc:default_KID` = the `tenc` default KID of the set's init segments
//! (a group's first period key, which never changes once created), and
//! relies on the fragments to announce every later key in band: a `seig`
//! sample group names the KID and the `moof` carries that key's `pssh`
//! (ISO/IEC 23001-7 §6, §8.1), as the DASH-IF IOP describes for key
//! rotation. So the MPD does not change when a key period starts, players
//! see an EME `encrypted` event per new key, and a Period per key period
//! (an MPD that grows by one Period per key, and a player-visible
//! discontinuity at each) is not needed.
//!
//! Renditions protected with different keys (key groups: SD, HD, audio)
//! cannot share an AdaptationSet (DASH-IF IOP: all Representations of a
//! set carry the same default_KID), so a set is split into one set per
//! key, each with its own `ContentProtection`, and the video sets are
//! linked with `urn:mpeg:dash:adaptation-set-switching:2016` so players
//! may still switch between them.

use std::fmt::Write;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use super::{
    EncryptionScheme, ProtectError, CLEARKEY_UUID, FAIRPLAY_UUID, PLAYREADY_UUID, WIDEVINE_UUID,
};
use crate::keys::{ContentKey, KeyId};
use crate::media::cenc::{self, Pssh};
use crate::media::TrackKind;

/// What manifests say about one key of a protected channel.
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

pub(super) fn pssh_base64(pssh: &Pssh) -> String {
    let mut buf = bytes::BytesMut::new();
    cenc::write_pssh(&mut buf, pssh);
    STANDARD.encode(&buf)
}

pub(super) fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// `ContentProtection` elements for one key (ISO/IEC 23009-1 §5.8.4.1,
/// DASH-IF IOP §7.7.2).
pub fn content_protection(s: &Signalling) -> String {
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
    elements
}

/// A Representation of our MPDs, found by its SegmentTemplate's
/// `initialization="{rendition}/{video|audio}/init-{id}.mp4"`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepresentationInit {
    pub rendition: String,
    pub kind: TrackKind,
    pub init_id: u64,
}

fn representation_init(line: &str) -> Option<RepresentationInit> {
    let value = line.split("initialization=\"").nth(1)?.split('"').next()?;
    match crate::package::Object::parse(value)? {
        crate::package::Object::Init {
            rendition,
            kind,
            id,
        } => Some(RepresentationInit {
            rendition,
            kind,
            init_id: id,
        }),
        _ => None,
    }
}

/// One `<Representation>…</Representation>` block and the key it needs.
struct RepresentationBlock {
    lines: Vec<String>,
    signalling: Option<Signalling>,
}

/// The MPD with `ContentProtection` in every AdaptationSet, for the key
/// `signalling_of` names for each Representation's init segment, plus the
/// `cenc`, `dashif` and `mspr` namespaces on the MPD element. A set whose
/// Representations need different keys becomes one set per key (see the
/// module docs).
pub fn mpd_with_protection(
    mpd: &str,
    mut signalling_of: impl FnMut(&RepresentationInit) -> Result<Signalling, ProtectError>,
) -> Result<String, ProtectError> {
    let mut out = String::with_capacity(mpd.len() * 2);
    // Inside an AdaptationSet: its opening line, lines before the first
    // Representation, and the Representations.
    let mut set: Option<(String, Vec<String>, Vec<RepresentationBlock>)> = None;
    for line in mpd.lines() {
        let trimmed = line.trim_start();
        if let Some(rest) = line.strip_prefix("<MPD ") {
            out.push_str(
                "<MPD xmlns:cenc=\"urn:mpeg:cenc:2013\" xmlns:dashif=\"https://dashif.org/CPS\" xmlns:mspr=\"urn:microsoft:playready\" ",
            );
            out.push_str(rest);
            out.push('\n');
            continue;
        }
        if trimmed.starts_with("<AdaptationSet ") {
            set = Some((line.to_owned(), Vec::new(), Vec::new()));
            continue;
        }
        let Some((open, preamble, representations)) = set.as_mut() else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        if trimmed.starts_with("</AdaptationSet>") {
            write_sets(
                &mut out,
                open,
                preamble,
                std::mem::take(representations),
                line,
            )?;
            set = None;
            continue;
        }
        if trimmed.starts_with("<Representation ") {
            representations.push(RepresentationBlock {
                lines: Vec::new(),
                signalling: None,
            });
        }
        match representations.last_mut() {
            Some(r) => {
                if let Some(init) = representation_init(line) {
                    r.signalling = Some(signalling_of(&init)?);
                }
                r.lines.push(line.to_owned());
            }
            None => preamble.push(line.to_owned()),
        }
    }
    Ok(out)
}

/// One AdaptationSet per key among `representations`, in order of first use.
fn write_sets(
    out: &mut String,
    open: &str,
    preamble: &[String],
    representations: Vec<RepresentationBlock>,
    close: &str,
) -> Result<(), ProtectError> {
    if representations.is_empty() {
        // No media, nothing to protect: the set stays as it was.
        for line in std::iter::once(open).chain(preamble.iter().map(String::as_str)) {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str(close);
        out.push('\n');
        return Ok(());
    }
    let mut by_key: Vec<(Signalling, Vec<RepresentationBlock>)> = Vec::new();
    for r in representations {
        let Some(s) = r.signalling.clone() else {
            return Err(ProtectError::Cenc(cenc::CencError(
                "a Representation without an initialization segment",
            )));
        };
        match by_key.iter_mut().find(|(k, _)| k.key.kid == s.key.kid) {
            Some((_, list)) => list.push(r),
            None => by_key.push((s, vec![r])),
        }
    }
    let id: u64 = open
        .split("id=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Extra sets get ids 100 apart from the original, which stay unique
    // next to our other sets (0 video, 1 audio).
    let ids: Vec<u64> = (0..by_key.len() as u64).map(|i| id + 100 * i).collect();
    let video = open.contains("contentType=\"video\"");
    for (i, (signalling, list)) in by_key.iter().enumerate() {
        out.push_str(&open.replacen(&format!("id=\"{id}\""), &format!("id=\"{}\"", ids[i]), 1));
        out.push('\n');
        out.push_str(&content_protection(signalling));
        if video && ids.len() > 1 {
            let others: Vec<String> = ids
                .iter()
                .filter(|other| **other != ids[i])
                .map(u64::to_string)
                .collect();
            let _ = writeln!(
                out,
                "      <SupplementalProperty schemeIdUri=\"urn:mpeg:dash:adaptation-set-switching:2016\" value=\"{}\"/>",
                others.join(",")
            );
        }
        for line in preamble {
            out.push_str(line);
            out.push('\n');
        }
        for r in list {
            for line in &r.lines {
                out.push_str(line);
                out.push('\n');
            }
        }
        out.push_str(close);
        out.push('\n');
    }
    Ok(())
}

/// `EXT-X-KEY` tags for SAMPLE-AES (cbcs) or SAMPLE-AES-CTR (cenc), one per
/// key system.
pub fn sample_aes_tags(s: &Signalling) -> String {
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
    tags
}

/// The quoted `URI` attribute of a tag line.
fn uri_attribute(line: &str) -> Option<&str> {
    let (_, rest) = line.split_once("URI=\"")?;
    rest.split('"').next()
}

/// The media playlist with the key tags of each segment's key (RFC 8216bis
/// §4.4.4.4: an `EXT-X-KEY` applies to every segment after it until the
/// next one with the same KEYFORMAT), placed before the tags of the first
/// segment it covers: once at the top when keys do not change, again at
/// every key change when they rotate, so a window that starts inside a key
/// period starts with that period's key. `signalling_of` gets each
/// segment's number.
pub fn playlist_with_sample_aes(
    playlist: &str,
    mut signalling_of: impl FnMut(u64) -> Result<Signalling, ProtectError>,
) -> Result<String, ProtectError> {
    let mut out = String::with_capacity(playlist.len() + 512);
    let mut current: Option<KeyId> = None;
    // Tags of the segment being read, held until its URI says which key.
    let mut pending: Vec<&str> = Vec::new();
    let mut in_segments = false;
    for line in playlist.lines() {
        in_segments = in_segments
            || line == "#EXT-X-DISCONTINUITY"
            || [
                "#EXT-X-MAP:",
                "#EXT-X-GAP",
                "#EXT-X-PROGRAM-DATE-TIME",
                "#EXTINF",
            ]
            .iter()
            .any(|tag| line.starts_with(tag));
        if !in_segments {
            out.push_str(line);
            out.push('\n');
            continue;
        }
        // RFC 8216bis §4.4.4.4: an EXT-X-KEY applies to the Partial Segments
        // after it as well, so a segment's key comes before its first part
        // (the open segment's parts and the preload hint have no URI line).
        let part = ["#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:TYPE=PART,"]
            .iter()
            .any(|tag| line.starts_with(tag))
            .then(|| uri_attribute(line).and_then(super::part_segment_number))
            .flatten();
        if (line.starts_with('#') || line.is_empty()) && part.is_none() {
            pending.push(line);
            continue;
        }
        if let Some(sequence) = part.or_else(|| super::segment_number(line)) {
            let s = signalling_of(sequence)?;
            if current != Some(s.key.kid) {
                out.push_str(&sample_aes_tags(&s));
                current = Some(s.key.kid);
            }
        }
        for held in pending.drain(..) {
            out.push_str(held);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    for held in pending {
        out.push_str(held);
        out.push('\n');
    }
    Ok(out)
}
