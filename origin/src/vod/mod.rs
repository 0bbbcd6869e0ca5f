//! Video on demand: HLS and DASH made on request from a local MP4 library.
//!
//! - `mp4` — a progressive MP4/MOV's `moov` → per-track sample tables (pure)
//! - `fragments` — the same for fragmented MP4 (`moof` boxes) (pure)
//! - `hevc` — HEVC sample entries: `hvcC` → decoder parameters, codec string (pure)
//! - `hevc_cenc` — which bytes of an HEVC sample cbcs/cenc encrypt (slice headers clear) (pure)
//! - `plan` — sample tables → segments cut at keyframes, output timing (pure)
//! - `set` — mapped titles: the JSON set file naming a title's files (pure)
//! - `subtitles` — `.vtt`/`.srt` side files → WebVTT cues and segments (pure)
//! - `presentation` — the renditions and subtitles one master playlist/MPD names
//! - `manifest` — a presentation → HLS VOD playlists and a static DASH MPD (pure)
//! - `library` — the root directory, path checks, the bounded index cache, reads
//! - `ts` — MPEG-TS playlists and segments through the live TS muxer
//! - `protect` — encrypted titles: the live key service and schemes, per title
//! - `source` — where a title's bytes come from: a local file or a remote store
//! - `remote` — HTTP(S) object stores read by byte range (`[[vod.remote]]`)
//! - `sigv4` — AWS Signature V4 of a request (pure; `[vod.remote.s3]` signs with it)
//! - `thumbnail` — a JPEG of the frame at a time, decoded by ffmpeg
//! - `http` — `/vod/{path}/…`, VOD licences and keys, and the `strata_origin_vod_*` metrics
//!
//! # URL names under `/vod/{path}/`, `{path}` an MP4 or a set file relative to `vod.root`
//!
//! | path | what |
//! | --- | --- |
//! | `master.m3u8` | HLS multivariant playlist (fMP4/CMAF) |
//! | `manifest.mpd` | DASH MPD, `type="static"`, SegmentTemplate + SegmentTimeline |
//! | `t{id}.m3u8` | media playlist of rendition `{id}` (an MP4's `tkhd` ID; a set's entry number), `EXT-X-PLAYLIST-TYPE:VOD` |
//! | `t{id}/init.mp4` | CMAF header of that rendition |
//! | `t{id}/{n}.m4s` | CMAF fragment `n` (from 1) of that rendition |
//! | `i{id}.m3u8` | I-frame-only playlist of video rendition `{id}` |
//! | `i{id}/{k}.m4s` | CMAF fragment holding only keyframe `k` (from 1) |
//! | `s{id}.m3u8` | subtitle playlist of a set's subtitle file `{id}` (from 1) |
//! | `s{id}/{n}.vtt` | WebVTT segment `n` (from 1) of it |
//! | `s{id}.vtt` | the whole subtitle file as WebVTT (DASH) |
//! | `master-ts.m3u8` | HLS multivariant playlist, MPEG-TS (as live's `master-ts.m3u8`) |
//! | `t{id}/ts.m3u8` | MPEG-TS media playlist of video rendition `{id}` (audio-only titles: audio rendition `{id}`) |
//! | `t{id}/{n}.ts` | MPEG-TS segment `n`: that rendition's fragment `n` with the default audio muxed in |
//! | `key/{kid}.key` | an AES-128 title's key (HLS `EXT-X-KEY`), for a viewer with a token |
//! | `thumb/{ms}.jpg` | JPEG of the frame shown at `{ms}` (`?width=` scales it) |
//!
//! Only `master.m3u8` and `manifest.mpd` are a contract; the rest is named
//! here and reached through them. The first path component whose name ends
//! in `.mp4`, `.m4v`, `.m4a`, `.mov` or (a set) `.json` ends `{path}`.

pub mod fragments;
pub mod hevc;
pub mod hevc_cenc;
pub mod http;
pub mod library;
pub mod manifest;
pub mod mp4;
pub mod plan;
pub mod presentation;
pub mod protect;
pub mod remote;
pub mod set;
pub mod sigv4;
pub mod source;
pub mod subtitles;
pub mod thumbnail;
pub mod ts;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use library::Library;

/// The `[vod]` section. Absent: no `/vod/` routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VodConfig {
    /// The library: `/vod/{path}/…` serves `{root}/{path}`. Nothing outside
    /// it is ever read (symbolic links leading out are refused). Optional
    /// when `[[vod.remote]]` stores are configured: without it, a path
    /// outside every store's prefix is a 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
    /// Segments are cut at the first keyframe at or after this much media
    /// since the previous cut.
    #[serde(with = "humantime_serde", default = "default_segment_duration")]
    pub segment_duration: Duration,
    /// Parsed MP4 indexes kept in memory (least recently used go first).
    #[serde(default = "default_index_cache_entries")]
    pub index_cache_entries: usize,
    /// Bytes of parsed indexes kept in memory (about 32 bytes per sample).
    #[serde(default = "default_index_cache_bytes")]
    pub index_cache_bytes: u64,
    /// Largest `moov` box read; bigger files are refused with a 500.
    #[serde(default = "default_max_moov_bytes")]
    pub max_moov_bytes: u64,
    /// Which titles are encrypted and how (`[vod.encryption]`); keys and
    /// licences come from `[keys]` and `[encryption]`, as live's.
    #[serde(default)]
    pub encryption: protect::VodEncryption,
    /// Remote stores (`[[vod.remote]]`), each under its own path prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<remote::RemoteStoreConfig>,
    /// `thumb/{ms}.jpg`: the ffmpeg run that decodes a frame, and its cache.
    #[serde(default)]
    pub thumbnails: thumbnail::ThumbnailConfig,
}

fn default_segment_duration() -> Duration {
    Duration::from_secs(6)
}

fn default_index_cache_entries() -> usize {
    256
}

fn default_index_cache_bytes() -> u64 {
    256 << 20
}

fn default_max_moov_bytes() -> u64 {
    64 << 20
}

impl VodConfig {
    /// Checks serde cannot express; errors name the key.
    pub fn validate(&self) -> Result<(), String> {
        match &self.root {
            Some(root) if !root.is_absolute() => {
                return Err(format!(
                    "vod.root: must be an absolute path, got {}",
                    root.display()
                ));
            }
            Some(root) if !root.is_dir() => {
                return Err(format!(
                    "vod.root: {} is not a readable directory",
                    root.display()
                ));
            }
            None if self.remote.is_empty() => {
                return Err(
                    "vod.root: required unless [[vod.remote]] stores are configured".into(),
                );
            }
            _ => {}
        }
        if self.segment_duration < Duration::from_secs(1)
            || self.segment_duration > Duration::from_secs(30)
        {
            return Err("vod.segment_duration: must be between 1s and 30s".into());
        }
        if self.index_cache_entries == 0 || self.index_cache_bytes == 0 {
            return Err(
                "vod.index_cache_entries, vod.index_cache_bytes: must be above zero".into(),
            );
        }
        if self.max_moov_bytes < 4096 {
            return Err("vod.max_moov_bytes: must be at least 4096".into());
        }
        source::validate_stores(&self.remote)?;
        self.thumbnails.validate()
    }
}

/// Why a `/vod/` request has no media; [`VodError::status`] is the one
/// place these become HTTP statuses.
#[derive(Debug, thiserror::Error)]
pub enum VodError {
    /// The path is malformed or tries to leave the library: the client's fault.
    #[error("bad VOD path: {0}")]
    BadPath(&'static str),
    /// No such title or object.
    #[error("not found")]
    NotFound,
    /// The MP4 is corrupt, too large or in a form Strata does not package.
    #[error(transparent)]
    Mp4(#[from] mp4::Mp4Error),
    /// A set file that cannot be used (malformed, escaping, naming missing files).
    #[error(transparent)]
    Set(#[from] set::SetError),
    /// A subtitle side file that cannot be used.
    #[error(transparent)]
    Subtitles(#[from] subtitles::SubtitleError),
    /// The disk failed us.
    #[error("reading the title failed")]
    Io(#[source] std::io::Error),
    /// The title's encryption: not offered for this object (DASH of an
    /// AES-128 title, MPEG-TS of a cbcs one), or the keys failed us.
    #[error("encryption: {0}")]
    Protect(#[from] crate::drm::ProtectError),
    /// A remote store failed us (or has no such object).
    #[error(transparent)]
    Remote(#[from] remote::RemoteError),
    /// The thumbnail decoder failed, timed out or is too busy.
    #[error(transparent)]
    Thumbnail(#[from] thumbnail::ThumbnailError),
}

impl VodError {
    pub fn status(&self) -> u16 {
        match self {
            VodError::BadPath(_) => 400,
            VodError::NotFound => 404,
            VodError::Mp4(mp4::Mp4Error::Unsupported(_)) => 501,
            VodError::Set(e) => e.status(),
            VodError::Subtitles(_) => 500,
            VodError::Mp4(_) | VodError::Io(_) => 500,
            VodError::Protect(crate::drm::ProtectError::NotOffered) => 404,
            VodError::Protect(_) => 500,
            VodError::Remote(e) => e.status(),
            VodError::Thumbnail(e) => e.status(),
        }
    }

    /// A metric label for what went wrong.
    pub fn reason(&self) -> &'static str {
        match self {
            VodError::BadPath(_) => "bad_path",
            VodError::NotFound => "not_found",
            VodError::Mp4(mp4::Mp4Error::Corrupt(_)) => "corrupt",
            VodError::Mp4(mp4::Mp4Error::Unsupported(_) | mp4::Mp4Error::Fragmented) => {
                "unsupported"
            }
            VodError::Mp4(mp4::Mp4Error::TooLarge(_)) => "too_large",
            VodError::Set(e) => e.reason(),
            VodError::Subtitles(_) => "bad_subtitles",
            VodError::Io(_) => "io",
            VodError::Protect(crate::drm::ProtectError::NotOffered) => "not_offered",
            VodError::Protect(_) => "encryption",
            VodError::Remote(e) => e.reason(),
            VodError::Thumbnail(e) => e.reason(),
        }
    }
}

/// What a path under `/vod/{path}/` names. Parsed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VodObject {
    Master,
    Manifest,
    MediaPlaylist {
        track: u32,
    },
    Init {
        track: u32,
    },
    Fragment {
        track: u32,
        number: u32,
    },
    IFramePlaylist {
        track: u32,
    },
    KeyFrame {
        track: u32,
        number: u32,
    },
    SubtitlePlaylist {
        id: u32,
    },
    SubtitleSegment {
        id: u32,
        number: u32,
    },
    SubtitleFile {
        id: u32,
    },
    MasterTs,
    TsPlaylist {
        track: u32,
    },
    TsSegment {
        track: u32,
        number: u32,
    },
    Key {
        kid: crate::keys::KeyId,
    },
    /// The frame shown at `ms` as a JPEG, `width` pixels wide (`?width=`).
    Thumbnail {
        ms: u64,
        width: Option<u32>,
    },
}

/// A request under `/vod/`: the title's path relative to the root (plain
/// components only), the clip asked for, and the object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VodRequest {
    pub title: PathBuf,
    pub clip: Option<Clip>,
    pub object: VodObject,
}

/// `/vod/{path}/clipFrom/{ms}/clipTo/{ms}/…` (either may be left out):
/// the part of the title from `from` to `to` milliseconds, cut on keyframes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clip {
    pub from: u64,
    pub to: Option<u64>,
}

const TITLE_EXTENSIONS: [&str; 5] = [".mp4", ".m4v", ".m4a", ".mov", ".json"];

impl std::str::FromStr for VodRequest {
    type Err = VodError;

    /// `path` is what follows `/vod/`, already percent-decoded once.
    fn from_str(path: &str) -> Result<Self, VodError> {
        if path.contains('\0') || path.contains('\\') {
            return Err(VodError::BadPath("NUL or backslash in path"));
        }
        if path.starts_with('/') {
            return Err(VodError::BadPath("absolute path"));
        }
        let parts: Vec<&str> = path.split('/').collect();
        for p in &parts {
            if p.is_empty() || *p == "." || *p == ".." {
                return Err(VodError::BadPath("empty, '.' or '..' path component"));
            }
            // A second round of decoding anywhere must not turn into `..`.
            if p.contains('%') {
                return Err(VodError::BadPath("percent sign in path"));
            }
        }
        let file = parts
            .iter()
            .position(|p| {
                let lower = p.to_ascii_lowercase();
                TITLE_EXTENSIONS.iter().any(|e| lower.ends_with(e))
            })
            .ok_or(VodError::NotFound)?;
        let title: PathBuf = parts[..=file].iter().collect();
        let mut rest = &parts[file + 1..];
        let mut clip = None;
        if let ["clipFrom", ms, tail @ ..] = rest {
            clip = Some(Clip {
                from: millis(ms)?,
                to: None,
            });
            rest = tail;
        }
        if let ["clipTo", ms, tail @ ..] = rest {
            let to = millis(ms)?;
            let from = clip.map_or(0, |c| c.from);
            if to <= from {
                return Err(VodError::BadPath("clipTo must be after clipFrom"));
            }
            clip = Some(Clip { from, to: Some(to) });
            rest = tail;
        }
        let object = match rest {
            ["master.m3u8"] => VodObject::Master,
            ["manifest.mpd"] => VodObject::Manifest,
            ["master-ts.m3u8"] => VodObject::MasterTs,
            ["key", file] => VodObject::Key {
                kid: file
                    .strip_suffix(".key")
                    .filter(|k| k.len() == 32)
                    .and_then(|k| k.parse().ok())
                    .ok_or(VodError::NotFound)?,
            },
            [dir, "ts.m3u8"] => VodObject::TsPlaylist {
                track: track_number(dir)?,
            },
            [name] => {
                if let Some(stem) = name.strip_suffix(".m3u8") {
                    match numbered(stem)? {
                        ('t', track) => VodObject::MediaPlaylist { track },
                        ('i', track) => VodObject::IFramePlaylist { track },
                        ('s', id) => VodObject::SubtitlePlaylist { id },
                        _ => return Err(VodError::NotFound),
                    }
                } else {
                    match numbered(name.strip_suffix(".vtt").ok_or(VodError::NotFound)?)? {
                        ('s', id) => VodObject::SubtitleFile { id },
                        _ => return Err(VodError::NotFound),
                    }
                }
            }
            ["thumb", name] => VodObject::Thumbnail {
                ms: thumbnail::parse_ms(name)?,
                width: None,
            },
            [dir, "init.mp4"] => VodObject::Init {
                track: track_number(dir)?,
            },
            [dir, name] => match (numbered(dir)?, name.rsplit_once('.')) {
                (('t', track), Some((n, "m4s"))) => VodObject::Fragment {
                    track,
                    number: plain_number(n)?,
                },
                (('i', track), Some((n, "m4s"))) => VodObject::KeyFrame {
                    track,
                    number: plain_number(n)?,
                },
                (('t', track), Some((n, "ts"))) => VodObject::TsSegment {
                    track,
                    number: plain_number(n)?,
                },
                (('s', id), Some((n, "vtt"))) => VodObject::SubtitleSegment {
                    id,
                    number: plain_number(n)?,
                },
                _ => return Err(VodError::NotFound),
            },
            _ => return Err(VodError::NotFound),
        };
        Ok(VodRequest {
            title,
            clip,
            object,
        })
    }
}

/// `t{n}` → n.
fn track_number(s: &str) -> Result<u32, VodError> {
    plain_number(s.strip_prefix('t').ok_or(VodError::NotFound)?)
}

/// Milliseconds of a clip: digits, no sign, no leading zero.
fn millis(s: &str) -> Result<u64, VodError> {
    if s.is_empty()
        || (s.len() > 1 && s.starts_with('0'))
        || !s.bytes().all(|b| b.is_ascii_digit())
        || s.len() > 12
    {
        return Err(VodError::BadPath(
            "clipFrom/clipTo take milliseconds: digits without a leading zero",
        ));
    }
    s.parse()
        .map_err(|_| VodError::BadPath("clipFrom/clipTo out of range"))
}

/// `t12` → ('t', 12).
fn numbered(s: &str) -> Result<(char, u32), VodError> {
    let mut chars = s.chars();
    let prefix = chars.next().ok_or(VodError::NotFound)?;
    Ok((prefix, plain_number(chars.as_str())?))
}

/// Digits without sign or leading zero.
fn plain_number(s: &str) -> Result<u32, VodError> {
    if s.is_empty() || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VodError::NotFound);
    }
    s.parse().map_err(|_| VodError::NotFound)
}

#[cfg(test)]
mod tests;
