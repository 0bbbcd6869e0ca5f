//! Publishers' connections → samples.
//!
//! Ingest code knows nothing of the store: it asks a [`PublishTarget`] for a
//! [`MediaSink`] when a publisher announces a stream, and feeds it parameters
//! and samples. Dropping the sink means the publisher went away.

use std::net::SocketAddr;

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
