//! Publishers' connections → samples.
//!
//! Ingest code knows nothing of the store: it asks a [`PublishTarget`] for a
//! [`MediaSink`] when a publisher announces a stream, and feeds it parameters
//! and samples. Dropping the sink means the publisher went away.
//!
//! # Naming contract
//!
//! A publish names `live/{channel}` (rendition `main`) or
//! `live/{channel}.{rendition}` (one rung of an ABR ladder, e.g. `news.720p`
//! and `news.480p` published side by side). Channel and rendition are
//! `[A-Za-z0-9_-]{1,64}`. RTMP URLs are `rtmp://HOST:1935/live/{channel}`;
//! SRT stream ids are `#!::r=live/{channel},m=publish` or plain `live/{channel}`.
//! Credentials ride along as described in [`IngestAuth`].

pub mod auth;
pub mod config;
pub mod demo;
mod log_budget;
pub mod metrics;
pub mod rtmp;
mod rtmp_guard;
pub mod srt;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

pub use auth::{ConnectionPermit, Credentials, IngestAuth, PublishRequest};
pub use config::{IngestConfig, IngestConfigError};
pub use metrics::IngestMetrics;

use crate::media::{Sample, TrackKind, TrackParams};

/// Who is publishing, for the channel API and logs.
#[derive(Clone, Debug)]
pub struct PublisherInfo {
    pub remote: SocketAddr,
    /// `rtmp`, `srt` or `demo`.
    pub protocol: &'static str,
}

/// A publish request that passed authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamName {
    pub channel: String,
    /// Rendition within the channel's ABR ladder; `main` when not given.
    pub rendition: String,
}

/// The only RTMP application and SRT resource prefix that ingest accepts.
pub const APP: &str = "live";

/// The rendition of a publish that names none.
pub const DEFAULT_RENDITION: &str = "main";

/// Whether `s` may be a channel or rendition name: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl StreamName {
    /// `{channel}` or `{channel}.{rendition}`, the part after `live/`.
    pub fn from_key(key: &str) -> Result<Self, PublishRefused> {
        let (channel, rendition) = match key.split_once('.') {
            Some((c, r)) => (c, r),
            None => (key, DEFAULT_RENDITION),
        };
        if !is_valid_name_part(channel) || !is_valid_name_part(rendition) {
            return Err(PublishRefused::BadName(format!(
                "{:?}: expected {{channel}} or {{channel}}.{{rendition}}, each [A-Za-z0-9_-]{{1,64}}",
                redact(key)
            )));
        }
        Ok(StreamName {
            channel: channel.to_owned(),
            rendition: rendition.to_owned(),
        })
    }
}

/// Parses `live/{channel}` or `live/{channel}.{rendition}` (no query string:
/// see [`PublishRequest`] for names with credentials).
impl FromStr for StreamName {
    type Err = PublishRefused;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim_start_matches('/').split_once('/') {
            Some((APP, key)) => StreamName::from_key(key),
            _ => Err(PublishRefused::BadName(format!(
                "{:?}: expected {APP}/{{channel}}[.{{rendition}}]",
                redact(s)
            ))),
        }
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{APP}/{}.{}", self.channel, self.rendition)
    }
}

/// Where accepted publishes go (the store, or a test double).
pub trait PublishTarget: Send + Sync + 'static {
    /// Open `name` for publishing. Refused when another publisher holds it
    /// and take-over is not allowed.
    fn publish(
        &self,
        name: &StreamName,
        info: PublisherInfo,
    ) -> Result<Box<dyn MediaSink>, PublishRefused>;
}

/// One publisher's stream of parameters and samples.
pub trait MediaSink: Send {
    /// New decoder parameters (sequence header); may arrive again mid-stream.
    fn params(&mut self, params: TrackParams);
    /// Next sample of `kind`, timestamps in that track's timescale.
    fn sample(&mut self, kind: TrackKind, sample: Sample) -> Result<(), SinkError>;
    /// Resolves when an operator kicked this publisher: ingest must then
    /// close the connection.
    fn kicked(&self) -> tokio::sync::watch::Receiver<bool>;
}

/// Fields of a stream id or query string whose values are secrets.
const SECRET_FIELDS: &[&str] = &[
    "s",
    "key",
    "token",
    "passphrase",
    "pass",
    "password",
    "pwd",
    "secret",
    "auth",
    "sig",
    "signature",
];

/// Longest stream id or name a log line shows.
const LOGGED_NAME_MAX: usize = 200;

/// A stream id, RTMP stream name or tcUrl as a log line may show it: every
/// credential value (`s=`, `key=`, `token=`, … in an SRT stream id or a query
/// string, %-encoded or not) replaced by `…`, and cut to a sane length.
pub fn redact(s: &str) -> String {
    let decoded = percent_decode(s);
    let text = decoded.as_deref().unwrap_or(s);
    let mut out = String::with_capacity(text.len().min(LOGGED_NAME_MAX));
    for piece in text.split_inclusive([',', '?', '&', ';']) {
        let (body, sep) = match piece.char_indices().last() {
            Some((i, c)) if [',', '?', '&', ';'].contains(&c) => (&piece[..i], &piece[i..]),
            _ => (piece, ""),
        };
        match body.split_once('=') {
            Some((field, _)) if is_secret_field(field) => {
                out.push_str(field);
                out.push_str("=…");
            }
            _ => out.push_str(body),
        }
        out.push_str(sep);
    }
    if out.len() > LOGGED_NAME_MAX {
        let mut cut = LOGGED_NAME_MAX;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// `#!::s` → `s`, `live/news?key` → `key`.
fn is_secret_field(field: &str) -> bool {
    let name = field.rsplit([':', '/', '?']).next().unwrap_or(field);
    SECRET_FIELDS
        .iter()
        .any(|secret| name.trim().eq_ignore_ascii_case(secret))
}

/// Decodes `%XX` escapes (RFC 3986 §2.1); `None` when one is broken or the
/// result is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishRefused {
    #[error("channel {0} already has a live publisher")]
    Busy(String),
    #[error("bad stream name: {0}")]
    BadName(String),
    #[error("not authorised: {0}")]
    Unauthorised(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SinkError {
    #[error("sample before decoder parameters for {0:?}")]
    NoParams(TrackKind),
    #[error("publisher was replaced or kicked")]
    Closed,
}

impl PublishRefused {
    /// Label for the refusals metric and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            PublishRefused::Busy(_) => "busy",
            PublishRefused::BadName(_) => "bad_name",
            PublishRefused::Unauthorised(_) => "unauthorised",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials_in_any_spelling() {
        for (raw, shown) in [
            ("#!::s=SECRET,r=live/x", "#!::s=…,r=live/x"),
            (
                "#!::r=live/x,m=publish,key=SECRET",
                "#!::r=live/x,m=publish,key=…",
            ),
            ("%23!::r=live/x,token=SECRET", "#!::r=live/x,token=…"),
            ("%23%21%3A%3As%3DSECRET%2Cr%3Dlive%2Fx", "#!::s=…,r=live/x"),
            ("live/x?key=SECRET&token=SECRET", "live/x?key=…&token=…"),
            (
                "live/x?KEY=SECRET;Passphrase=SECRET",
                "live/x?KEY=…;Passphrase=…",
            ),
            ("live/x?user=bob", "live/x?user=bob"),
        ] {
            assert_eq!(redact(raw), shown, "{raw}");
        }
        let long = "live/".to_owned() + &"é".repeat(300);
        assert!(redact(&long).len() <= LOGGED_NAME_MAX + 3);
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn stream_names() {
        let n: StreamName = "live/news".parse().expect("valid");
        assert_eq!((n.channel.as_str(), n.rendition.as_str()), ("news", "main"));
        let n: StreamName = "live/news.720p".parse().expect("valid");
        assert_eq!((n.channel.as_str(), n.rendition.as_str()), ("news", "720p"));
        assert_eq!(n.to_string(), "live/news.720p");
        for bad in [
            "news",
            "vod/news",
            "live/",
            "live/news.",
            "live/.720p",
            "live/a.b.c",
            "live/new s",
            "live/news/x",
            "live/ü",
        ] {
            assert!(
                matches!(bad.parse::<StreamName>(), Err(PublishRefused::BadName(_))),
                "{bad}"
            );
        }
    }
}
