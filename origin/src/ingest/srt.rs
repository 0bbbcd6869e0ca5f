//! SRT publish listener: `srt-tokio` sockets carrying MPEG-TS → [`TsDemuxer`]
//! → [`MediaSink`](super::MediaSink).
//!
//! # Stream id
//!
//! SRT Access Control syntax (Haivision `docs/features/access-control.md`):
//! `#!::r=live/{channel}[.{rendition}],m=publish[,s={key}][,token={token}]`.
//! `key={key}` works as well as `s=`, and `r` may carry the same
//! `?key=…&token=…` query as an RTMP stream name. A plain `live/{channel}`
//! (with or without that query) is accepted too. `m` may be omitted; any
//! mode other than `publish` is refused, as is an unknown `t` type.
//!
//! # Passphrase
//!
//! With a configured passphrase, callers must encrypt with it (any key
//! length, `pbkeylen=16|24|32`); without one they must not encrypt. A wrong
//! passphrase fails the SRT handshake (`BadSecret`).

pub mod guard;
mod relay;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{SinkExt, StreamExt};
use srt_protocol::settings::KeySettings;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::{KeySize, Passphrase};
use srt_tokio::{ConnectionRequest, SrtListener, SrtSocket};
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::rtmp::deliver;
use super::{
    percent_decode, redact, IngestAuth, IngestConfig, IngestMetrics, PublishRefused,
    PublishRequest, PublishTarget, PublisherInfo, StreamName,
};
use crate::media::ts_demux::{TsDemuxer, TsStats};
use crate::media::MediaError;

pub use relay::RelayLimits;

const PROTOCOL: &str = "srt";
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a refused peer's listener stays to repeat its rejection.
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// SRT transport settings (from [`IngestConfig`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SrtSettings {
    pub latency: Duration,
    pub passphrase: Option<String>,
    /// Bounds on peers still in handshake.
    pub limits: RelayLimits,
}

impl Default for SrtSettings {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(120),
            passphrase: None,
            limits: RelayLimits::default(),
        }
    }
}

impl IngestConfig {
    pub fn srt_settings(&self) -> SrtSettings {
        SrtSettings {
            latency: self.srt_latency,
            passphrase: self.srt_passphrase.clone(),
            limits: RelayLimits::default(),
        }
    }
}

/// Parses an SRT stream id into a publish request (see the module docs).
pub fn parse_stream_id(stream_id: &str) -> Result<PublishRequest, PublishRefused> {
    // Some tools send the whole id %-encoded (`%23!::r=…`); a key may hold a
    // `%` of its own, so only an id that is not already `#!::` is decoded.
    let decoded;
    let stream_id = match percent_decode(stream_id) {
        Some(d) if !stream_id.starts_with("#!::") && d.starts_with("#!::") => {
            decoded = d;
            decoded.as_str()
        }
        _ => stream_id,
    };
    let Some(pairs) = stream_id.strip_prefix("#!::") else {
        return stream_id.parse();
    };
    let mut resource = None;
    let mut key = None;
    let mut token = None;
    for pair in pairs.split(',') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "r" => resource = Some(v),
            "s" | "key" => key = Some(v),
            "token" => token = Some(v),
            "m" if v != "publish" => {
                return Err(PublishRefused::BadName(format!(
                    "SRT mode {v:?}: this listener only takes m=publish"
                )))
            }
            "t" if v != "stream" => {
                return Err(PublishRefused::BadName(format!(
                    "SRT type {v:?}: only t=stream"
                )))
            }
            _ => {}
        }
    }
    let resource = resource.ok_or_else(|| {
        PublishRefused::BadName("SRT stream id has no r=live/{channel}".to_owned())
    })?;
    let mut req: PublishRequest = resource.parse()?;
    if let Some(k) = key {
        req.credentials.key = Some(k.to_owned());
    }
    if let Some(t) = token {
        req.credentials.token = Some(t.to_owned());
    }
    Ok(req)
}

struct Shared {
    target: Arc<dyn PublishTarget>,
    auth: Arc<IngestAuth>,
    metrics: IngestMetrics,
    passphrase: Option<String>,
    latency: Duration,
}

/// Takes SRT publishers on `socket` (already bound; tests use
/// `127.0.0.1:0`) until `shutdown` resolves. Every remote peer gets its own
/// protocol state (see [`relay`]), so no packet can disconnect another peer.
pub async fn serve(
    socket: UdpSocket,
    settings: SrtSettings,
    target: Arc<dyn PublishTarget>,
    auth: Arc<IngestAuth>,
    metrics: IngestMetrics,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let local = socket.local_addr()?;
    let shared = Arc::new(Shared {
        target,
        auth,
        metrics,
        passphrase: settings.passphrase,
        latency: settings.latency,
    });
    info!(addr = %local, "SRT ingest listening");
    relay::run(socket, shared, settings.limits, shutdown).await;
    Ok(())
}

/// One remote peer: its own srt-tokio listener on `socket` (fed by the
/// relay), one connection request, and its publish. `remote` is the peer's
/// real address, for logs, auth and limits.
async fn serve_peer(
    remote: SocketAddr,
    socket: UdpSocket,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
    publishing: Arc<AtomicBool>,
) {
    let local = match socket.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    let bound = SrtListener::builder()
        .latency(shared.latency)
        .socket(socket)
        .bind(local)
        .await;
    let Ok((listener, mut incoming)) = bound else {
        return;
    };
    // `None`: the listener's task ended (srt-protocol panicked on this peer).
    if let Some(request) = incoming.incoming().next().await {
        handle_request(request, remote, &shared, stop, &publishing).await;
        if !publishing.load(Ordering::Acquire) {
            // Refused: let the listener send its rejection and answer the
            // caller's repeated conclusions with it before it goes away.
            tokio::time::sleep(REJECT_LINGER).await;
        }
    }
    // Dropping (not `close()`, which unwraps the task's result) ends its task.
    drop(listener);
}

/// Decides a connection request before the SRT handshake completes: the
/// publish request and key settings, or the reject code, metric label and why.
fn admit_request(
    request: &ConnectionRequest,
    shared: &Shared,
) -> Result<(PublishRequest, Option<KeySettings>), (ServerRejectReason, &'static str, String)> {
    let stream_id = request.stream_id().map(|s| s.as_str()).unwrap_or_default();
    let req = parse_stream_id(stream_id)
        .map_err(|e| (ServerRejectReason::BadRequest, e.reason(), e.to_string()))?;
    shared
        .auth
        .check(&req, SystemTime::now())
        .map_err(|e| (ServerRejectReason::Unauthorized, e.reason(), e.to_string()))?;
    // Decided here because srt-protocol 0.4 panics on these mismatches
    // instead of refusing them.
    let keys = match (&shared.passphrase, request.key_size()) {
        (None, KeySize::Unspecified) => None,
        (None, _) => {
            return Err((
                ServerRejectReason::Unauthorized,
                "unauthorised",
                "caller encrypts but no SRT passphrase is configured".into(),
            ))
        }
        (Some(_), KeySize::Unspecified) => {
            return Err((
                ServerRejectReason::Unauthorized,
                "unauthorised",
                "SRT passphrase required".into(),
            ))
        }
        (Some(p), key_size) => Some(KeySettings {
            key_size,
            passphrase: Passphrase::from(p.as_str()),
        }),
    };
    Ok((req, keys))
}

async fn handle_request(
    request: ConnectionRequest,
    remote: SocketAddr,
    shared: &Shared,
    stop: watch::Receiver<bool>,
    publishing: &AtomicBool,
) {
    let stream_id = request
        .stream_id()
        .map(|s| redact(s.as_str()))
        .unwrap_or_default();
    let Some(_permit) = shared.auth.admit() else {
        warn!(%remote, reason = "max_connections", "SRT connection refused");
        shared.metrics.refused(PROTOCOL, "max_connections");
        let _ = request
            .reject(RejectReason::Server(ServerRejectReason::Overload))
            .await;
        return;
    };
    let (req, keys) = match admit_request(&request, shared) {
        Ok(x) => x,
        Err((code, label, why)) => {
            warn!(%remote, stream_id, reason = %why, "SRT publish refused");
            shared.metrics.refused(PROTOCOL, label);
            let _ = request.reject(RejectReason::Server(code)).await;
            return;
        }
    };
    let socket = match request.accept(keys).await {
        Ok(s) => s,
        Err(e) => {
            // Typically a wrong passphrase: the handshake fails after our accept.
            warn!(%remote, stream_id, reason = %e, "SRT handshake failed (wrong passphrase?)");
            shared.metrics.refused(PROTOCOL, "handshake_failed");
            return;
        }
    };
    publishing.store(true, Ordering::Release);
    // Publish only after the handshake, so a caller with a wrong passphrase
    // can never displace the live publisher.
    let info = PublisherInfo {
        remote,
        protocol: PROTOCOL,
    };
    let sink = match shared.target.publish(&req.name, info) {
        Ok(sink) => sink,
        Err(e) => {
            warn!(%remote, stream = %req.name, reason = %e, "SRT publish refused");
            shared.metrics.refused(PROTOCOL, e.reason());
            return;
        }
    };
    info!(%remote, stream = %req.name, "SRT publish started");
    shared.metrics.connected(PROTOCOL);
    let end = receive(socket, sink, &req.name, shared, stop).await;
    shared.metrics.disconnected(PROTOCOL);
    match end {
        Ok(why) => info!(%remote, stream = %req.name, reason = why, "SRT publisher disconnected"),
        Err(e) => {
            if let MediaError::UnsupportedCodec(_) = e {
                shared.metrics.refused(PROTOCOL, "unsupported_codec");
            }
            warn!(%remote, stream = %req.name, reason = %e, "SRT connection closed");
        }
    }
}

/// Reads TS from one socket until it ends; `Ok` carries a benign reason.
async fn receive(
    mut socket: SrtSocket,
    mut sink: Box<dyn super::MediaSink>,
    name: &StreamName,
    shared: &Shared,
    mut stop: watch::Receiver<bool>,
) -> Result<&'static str, MediaError> {
    let mut demux = TsDemuxer::new();
    let mut kicked = sink.kicked();
    let mut reported = TsStats::default();
    let metrics = &shared.metrics;
    let kicked_fut = async {
        // A dropped sender means nobody can kick any more.
        if kicked.wait_for(|&k| k).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(kicked_fut);
    let end = loop {
        let next = tokio::select! {
            n = tokio::time::timeout(IDLE_TIMEOUT, socket.next()) => n,
            () = &mut kicked_fut => break Ok("kicked or replaced"),
            _ = stop.wait_for(|&s| s) => break Ok("server shutting down"),
        };
        let data = match next {
            Err(_) => break Ok("idle timeout"),
            Ok(None) => break Ok("connection closed by publisher"),
            Ok(Some(Err(e))) => {
                debug!(stream = %name, error = %e, "SRT receive error");
                break Ok("connection error");
            }
            Ok(Some(Ok((_, data)))) => data,
        };
        metrics.bytes_in(PROTOCOL, data.len());
        let events = demux.push(&data)?;
        let stats = demux.stats();
        for _ in reported.dropped_frames..stats.dropped_frames {
            metrics.dropped(PROTOCOL, "malformed");
        }
        for _ in reported.discontinuities..stats.discontinuities {
            metrics.dropped(PROTOCOL, "discontinuity");
        }
        metrics.late(PROTOCOL, stats.late_frames - reported.late_frames);
        reported = stats;
        if deliver(sink.as_mut(), events, metrics, PROTOCOL).is_err() {
            break Ok("kicked or replaced");
        }
    };
    if end.is_ok() {
        let _ = deliver(sink.as_mut(), demux.flush(), metrics, PROTOCOL);
    }
    let stats = demux.stats();
    if stats != TsStats::default() {
        info!(stream = %name, ?stats, "MPEG-TS damage seen on this publish");
    }
    let _ = socket.close().await;
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids() {
        let r = parse_stream_id("#!::r=live/news.720p,m=publish,s=s3cret").expect("valid");
        assert_eq!(r.name.channel, "news");
        assert_eq!(r.name.rendition, "720p");
        assert_eq!(r.credentials.key.as_deref(), Some("s3cret"));
        let r = parse_stream_id("#!::u=bob,r=live/news,token=1.ab").expect("valid");
        assert_eq!(r.credentials.token.as_deref(), Some("1.ab"));
        let r = parse_stream_id("%23!::r=live/news,m=publish").expect("%-encoded #");
        assert_eq!(r.name.channel, "news");
        let r = parse_stream_id("%23%21%3A%3Ar%3Dlive%2Fnews%2Cs%3Dk%25").expect("all encoded");
        assert_eq!(r.credentials.key.as_deref(), Some("k%"));
        let r = parse_stream_id("#!::r=live/news,s=50%off").expect("raw % in a key");
        assert_eq!(r.credentials.key.as_deref(), Some("50%off"));
        let r = parse_stream_id("live/news?key=k").expect("valid");
        assert_eq!(r.credentials.key.as_deref(), Some("k"));
        for bad in [
            "",
            "#!::m=publish",
            "#!::r=live/news,m=request",
            "#!::r=vod/news,m=publish",
            "#!::r=live/news,t=file",
            "news",
        ] {
            assert!(parse_stream_id(bad).is_err(), "{bad}");
        }
    }
}
