//! Mapped titles: a JSON "set" file in the library naming the files of one
//! title — an MP4 per video rendition, an MP4 (or a track of one) per audio
//! language, a `.vtt`/`.srt` side file per subtitle language — so the title
//! has one master playlist and one MPD (the job of nginx-vod-module's mapped
//! mode). Pure: parsing and checks; [`super::library`] opens the files.
//!
//! ```json
//! {
//!   "video": [{"file": "film-720p.mp4"}, {"file": "film-360p.mp4"}],
//!   "audio": [
//!     {"file": "film-en.m4a", "language": "en", "name": "English", "default": true},
//!     {"file": "film-360p.mp4", "track": 2, "language": "fr", "name": "Français"}
//!   ],
//!   "subtitles": [
//!     {"file": "film-en.vtt", "language": "en", "name": "English"},
//!     {"file": "film-fr.srt", "language": "fr", "name": "Français"}
//!   ]
//! }
//! ```
//!
//! `file` is relative to the set file's directory and may not leave it
//! upwards (`..`), be absolute, or lead outside the library root.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::subtitles::SubtitleFormat;

/// Largest set file read.
pub const MAX_SET_BYTES: u64 = 64 << 10;

/// A set file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetFile {
    /// One entry per video rendition (its first video track unless `track`).
    #[serde(default)]
    pub video: Vec<SetTrack>,
    /// One entry per audio rendition (its first audio track unless `track`).
    #[serde(default)]
    pub audio: Vec<SetTrack>,
    #[serde(default)]
    pub subtitles: Vec<SetSubtitle>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetTrack {
    pub file: String,
    /// The `tkhd` track ID inside `file`.
    pub track: Option<u32>,
    /// BCP 47 language tag (`en`, `fr`, `pt-BR`); default the MP4's `mdhd` language.
    pub language: Option<String>,
    /// What a player shows in its menu; default the language.
    pub name: Option<String>,
    /// The audio rendition players pick first (default: the first).
    #[serde(default)]
    pub default: bool,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetSubtitle {
    pub file: String,
    pub language: String,
    pub name: Option<String>,
    /// Shown without the viewer asking (HLS `DEFAULT=YES`, DASH `Role main`).
    #[serde(default)]
    pub default: bool,
}

/// Why a set file cannot be used: the library's content is at fault.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SetError {
    #[error("malformed set file: {0}")]
    Malformed(String),
    #[error("set file names a path outside its directory: {0}")]
    Escapes(String),
    #[error("set file names a missing file: {0}")]
    Missing(String),
}

impl SetError {
    pub fn status(&self) -> u16 {
        match self {
            SetError::Missing(_) => 404,
            SetError::Malformed(_) | SetError::Escapes(_) => 422,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            SetError::Malformed(_) => "set_malformed",
            SetError::Escapes(_) => "set_escape",
            SetError::Missing(_) => "set_missing_file",
        }
    }
}

/// A checked set: files as plain relative paths, names and languages safe to
/// quote in a playlist or an MPD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSet {
    pub video: Vec<Member>,
    pub audio: Vec<Member>,
    pub subtitles: Vec<SubtitleMember>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub file: PathBuf,
    pub track: Option<u32>,
    pub language: Option<String>,
    pub name: Option<String>,
    pub default: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubtitleMember {
    pub file: PathBuf,
    pub format: SubtitleFormat,
    pub language: String,
    pub name: String,
    pub default: bool,
}

/// Parses and checks a set file's bytes.
pub fn parse(bytes: &[u8]) -> Result<MediaSet, SetError> {
    let raw: SetFile =
        serde_json::from_slice(bytes).map_err(|e| SetError::Malformed(e.to_string()))?;
    if raw.video.is_empty() && raw.audio.is_empty() {
        return Err(SetError::Malformed(
            "names no video and no audio: at least one of \"video\", \"audio\" is needed".into(),
        ));
    }
    if raw.video.len() + raw.audio.len() + raw.subtitles.len() > 64 {
        return Err(SetError::Malformed("more than 64 entries".into()));
    }
    if raw.audio.iter().filter(|a| a.default).count() > 1 {
        return Err(SetError::Malformed(
            "more than one audio entry has \"default\": true".into(),
        ));
    }
    let member = |t: &SetTrack, kind: &str| -> Result<Member, SetError> {
        if let Some(l) = &t.language {
            check_language(l, kind)?;
        }
        if let Some(n) = &t.name {
            check_name(n, kind)?;
        }
        Ok(Member {
            file: relative(&t.file)?,
            track: t.track,
            language: t.language.clone(),
            name: t.name.clone(),
            default: t.default,
        })
    };
    let video = raw
        .video
        .iter()
        .map(|t| member(t, "video"))
        .collect::<Result<Vec<_>, _>>()?;
    let audio = raw
        .audio
        .iter()
        .map(|t| member(t, "audio"))
        .collect::<Result<Vec<_>, _>>()?;
    let subtitles = raw
        .subtitles
        .iter()
        .map(|s| {
            check_language(&s.language, "subtitles")?;
            if let Some(n) = &s.name {
                check_name(n, "subtitles")?;
            }
            let file = relative(&s.file)?;
            let format = SubtitleFormat::from_path(&file).ok_or_else(|| {
                SetError::Malformed(format!(
                    "subtitles: {:?} is neither a .vtt nor a .srt file",
                    s.file
                ))
            })?;
            Ok(SubtitleMember {
                file,
                format,
                language: s.language.clone(),
                name: s.name.clone().unwrap_or_else(|| s.language.clone()),
                default: s.default,
            })
        })
        .collect::<Result<Vec<_>, SetError>>()?;
    let mut names: Vec<&str> = subtitles.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(SetError::Malformed(
            "two subtitle entries have the same name".into(),
        ));
    }
    Ok(MediaSet {
        video,
        audio,
        subtitles,
    })
}

/// A member's path: relative, plain components only.
fn relative(file: &str) -> Result<PathBuf, SetError> {
    if file.is_empty() || file.contains('\0') || file.contains('\\') {
        return Err(SetError::Malformed(format!(
            "file {file:?}: empty, or a NUL or backslash in it"
        )));
    }
    let path = Path::new(file);
    if !path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(SetError::Escapes(file.escape_debug().to_string()));
    }
    Ok(path.to_owned())
}

/// BCP 47 in its plain form: letters, digits and `-`.
fn check_language(l: &str, kind: &str) -> Result<(), SetError> {
    if l.is_empty() || l.len() > 35 || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(SetError::Malformed(format!(
            "{kind}: language {:?} is not a BCP 47 tag",
            l.escape_debug().to_string()
        )));
    }
    Ok(())
}

/// Names are quoted in playlists and written into XML.
fn check_name(n: &str, kind: &str) -> Result<(), SetError> {
    if n.is_empty()
        || n.chars().count() > 64
        || n.chars()
            .any(|c| c.is_control() || matches!(c, '"' | '<' | '>' | '&'))
    {
        return Err(SetError::Malformed(format!(
            "{kind}: name {:?} is empty, over 64 characters, or holds a control character, '\"', '<', '>' or '&'",
            n.escape_debug().to_string()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let set = parse(
            r#"{
  "video": [{"file": "film-720p.mp4"}, {"file": "film-360p.mp4"}],
  "audio": [
    {"file": "film-en.m4a", "language": "en", "name": "English", "default": true},
    {"file": "film-360p.mp4", "track": 2, "language": "fr", "name": "Français"}
  ],
  "subtitles": [
    {"file": "film-en.vtt", "language": "en", "name": "English"},
    {"file": "subs/film-fr.srt", "language": "fr", "name": "Français"}
  ]
}"#
            .as_bytes(),
        )
        .expect("parses");
        assert_eq!(set.video.len(), 2);
        assert_eq!(set.audio[1].track, Some(2));
        assert!(set.audio[0].default);
        assert_eq!(set.subtitles[1].format, SubtitleFormat::SubRip);
        assert_eq!(set.subtitles[1].file, PathBuf::from("subs/film-fr.srt"));
    }

    #[test]
    fn refuses_bad_sets_with_a_reason() {
        for (json, reason) in [
            ("{", "set_malformed"),
            ("{}", "set_malformed"),
            (
                r#"{"video": [{"file": "a.mp4", "bitrate": 1}]}"#,
                "set_malformed",
            ),
            (r#"{"video": [{"file": "../a.mp4"}]}"#, "set_escape"),
            (r#"{"video": [{"file": "x/../../a.mp4"}]}"#, "set_escape"),
            (r#"{"video": [{"file": "/etc/passwd"}]}"#, "set_escape"),
            (r#"{"video": [{"file": "a\\..\\b.mp4"}]}"#, "set_malformed"),
            (
                r#"{"audio": [{"file": "a.mp4", "language": "en\"x"}]}"#,
                "set_malformed",
            ),
            (
                r#"{"audio": [{"file": "a.mp4", "name": "<b>"}]}"#,
                "set_malformed",
            ),
            (
                r#"{"video": [{"file": "a.mp4"}], "subtitles": [{"file": "a.txt", "language": "en"}]}"#,
                "set_malformed",
            ),
        ] {
            let e = parse(json.as_bytes()).expect_err(json);
            assert_eq!(e.reason(), reason, "{json}: {e}");
        }
    }
}
