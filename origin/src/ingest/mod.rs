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
                "{key:?}: expected {{channel}} or {{channel}}.{{rendition}}, each [A-Za-z0-9_-]{{1,64}}"
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
                "{s:?}: expected {APP}/{{channel}}[.{{rendition}}]"
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
