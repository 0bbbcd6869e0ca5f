//! RTMP publish server: TCP ↔ `rml_rtmp`'s sans-IO handshake and
//! [`ServerSession`], FLV tag bodies → [`FlvDemuxer`] → [`MediaSink`].
//!
//! One connection publishes one stream (`rtmp://HOST:1935/live/{channel}`,
//! see the naming contract in [`crate::ingest`]). Playback over RTMP is not
//! offered. Every failure — garbage bytes, truncated chunks, a refused name,
//! an unsupported codec — ends that connection only, with one log line.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinSet};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::log_budget::LogBudget;
use super::rtmp_chunks::{ChunkError, ChunkGate};
use super::rtmp_guard;
use super::{
    ConnectionPermit, IngestAuth, IngestMetrics, MediaSink, PublishRefused, PublishRequest,
    PublishTarget, PublisherInfo, SinkError, APP,
};
use crate::media::flv::FlvDemuxer;
use crate::media::{MediaError, MediaEvent};

const PROTOCOL: &str = "rtmp";
/// A publisher that sends nothing for this long is gone (encoders send
/// audio every ~20 ms).
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A publishing connection whose last read was smaller than
/// [`COALESCE_BELOW`] waits until this long after that read before reading
/// again, so the socket delivers what arrived meanwhile in one read: an
/// encoder's ~3 Mbit/s arrives as ~280 TCP segments a second, each a wake-up
/// and a `recv` when read as it comes, and reading it every 20 ms makes that
/// ~50. 20 ms is far below a segment, a low-latency part (0.5 s) or SRT's
/// own latency; the kernel's receive buffer holds the bytes meanwhile.
const READ_COALESCE: Duration = Duration::from_millis(20);
/// A read at least this big is read again at once (a high-bitrate or
/// catching-up publisher never waits).
const COALESCE_BELOW: usize = 32 * 1024;
/// Largest RTMP message before a publish is authorised: commands are a few
/// hundred bytes.
const PRE_PUBLISH_MAX_MESSAGE: usize = 64 * 1024;

/// Why one RTMP connection ended.
#[derive(Debug, thiserror::Error)]
enum ConnectionEnd {
    #[error("connection closed by publisher")]
    Eof,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("no data for {0:?}")]
    Timeout(Duration),
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    #[error("{0}")]
    Chunk(ChunkError),
    #[error("no authorised publish within {0:?} of connecting")]
    PublishDeadline(Duration),
    #[error("publish refused: {0}")]
    Refused(PublishRefused),
    #[error("media refused: {0}")]
    Media(MediaError),
    #[error("publisher was kicked or replaced")]
    Kicked,
    #[error("server shutting down")]
    Shutdown,
}

impl ConnectionEnd {
    /// Label for the refusals metric, for ends that are the publisher's fault.
    fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            ConnectionEnd::Handshake(_) | ConnectionEnd::Protocol(_) => Some("protocol_error"),
            ConnectionEnd::Chunk(ChunkError::TooLarge { .. }) => Some("message_too_large"),
            ConnectionEnd::Chunk(_) => Some("protocol_error"),
            ConnectionEnd::PublishDeadline(_) => Some("publish_deadline"),
            ConnectionEnd::Refused(r) => Some(r.reason()),
            ConnectionEnd::Media(MediaError::UnsupportedCodec(_)) => Some("unsupported_codec"),
            ConnectionEnd::Media(_) => Some("malformed_media"),
            _ => None,
        }
    }
}

struct Shared {
    target: Arc<dyn PublishTarget>,
    auth: Arc<IngestAuth>,
    metrics: IngestMetrics,
    /// Lines about connections that never published: anyone can provoke
    /// them. A std Mutex, held to count one line, never across `.await`.
    unpublished_log: Mutex<LogBudget>,
}

/// A connection that has not started an authorised publish yet.
struct Pending {
    task: AbortHandle,
    progress: Arc<Progress>,
    remote: SocketAddr,
}

/// How far a connection got, for choosing whom to close to make room.
#[derive(Default)]
struct Progress {
    /// Set once a publish is authorised: no longer pending.
    publishing: AtomicBool,
    /// Complete RTMP messages received. A real encoder sends its first
    /// (`connect`) within a round trip of the handshake; a slow-loris client
    /// trickling bytes has none.
    messages: AtomicU64,
}

/// Connections without a publish, oldest first; see [`Pending`].
#[derive(Default)]
struct PendingPool(VecDeque<Pending>);

impl PendingPool {
    fn prune(&mut self) {
        self.0
            .retain(|p| !p.task.is_finished() && !p.progress.publishing.load(Ordering::Acquire));
    }

    /// Closes the pending connection (from `ip` only, when given) that got
    /// least far, the oldest of those; its address, if there was one.
    fn evict(&mut self, ip: Option<std::net::IpAddr>) -> Option<SocketAddr> {
        let (i, _) = self
            .0
            .iter()
            .enumerate()
            .filter(|(_, p)| ip.is_none_or(|ip| p.remote.ip() == ip))
            .min_by_key(|(i, p)| (p.progress.messages.load(Ordering::Acquire), *i))?;
        let p = self.0.remove(i)?;
        p.task.abort();
        Some(p.remote)
    }
}

/// Accepts RTMP publishers on `listener` until `shutdown` resolves, then
/// closes every connection and returns.
pub async fn serve(
    listener: TcpListener,
    target: Arc<dyn PublishTarget>,
    auth: Arc<IngestAuth>,
    metrics: IngestMetrics,
    shutdown: impl Future<Output = ()>,
) {
    let shared = Arc::new(Shared {
        target,
        auth,
        metrics,
        unpublished_log: Mutex::new(LogBudget::new(20, Duration::from_secs(10))),
    });
    let max_pending = shared.auth.limits().max_pending_connections;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut pending = PendingPool::default();
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "RTMP ingest listening");
    }
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, remote) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        warn!(error = %e, "RTMP accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Some(permit) = admit(&shared, &mut pending, max_pending, remote) else {
                    continue;
                };
                let progress = Arc::new(Progress::default());
                let task = {
                    let (shared, stop, progress) = (shared.clone(), stop_rx.clone(), progress.clone());
                    connections.spawn(async move {
                        let _permit = permit;
                        connection(stream, remote, &shared, stop, progress).await;
                    })
                };
                pending.0.push_back(Pending { task, progress, remote });
            }
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    // Cancelled: closed to make room (see above).
                    if e.is_panic() {
                        tracing::error!(error = %e, "RTMP connection task failed");
                    }
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// A slot for a new connection from `remote`. When the pending pool or a
/// connection cap is full, the pending connection that got least far (fewest
/// RTMP messages, then oldest) is closed and the newcomer takes its slot (for
/// the per-address cap, only one from the same address). A real encoder
/// completes a message within a round trip of its handshake, so trickling
/// clients go first, and a newcomer is the last of its rank to go.
fn admit(
    shared: &Shared,
    pending: &mut PendingPool,
    max_pending: usize,
    remote: SocketAddr,
) -> Option<ConnectionPermit> {
    pending.prune();
    let evicted = |shared: &Shared, victim: SocketAddr| {
        shared.metrics.refused(PROTOCOL, "pending_evicted");
        shared.log_unpublished(
            || debug!(remote = %victim, "RTMP connection without a publish closed to make room"),
        );
    };
    if pending.0.len() >= max_pending {
        if let Some(victim) = pending.evict(None) {
            evicted(shared, victim);
        }
    }
    match shared.auth.admit_from(PROTOCOL, remote.ip()) {
        Ok(permit) => Some(permit),
        Err(cap) => {
            let same_address = (cap == "max_address_connections").then_some(remote.ip());
            match pending.evict(same_address) {
                Some(victim) => {
                    evicted(shared, victim);
                    // The evicted task releases its slot when it next runs.
                    Some(shared.auth.admit_in_place_of_evicted(PROTOCOL, remote.ip()))
                }
                None => {
                    shared.metrics.refused(PROTOCOL, cap);
                    shared.log_unpublished(
                        || warn!(%remote, reason = cap, "RTMP connection refused"),
                    );
                    None
                }
            }
        }
    }
}

impl Shared {
    /// Runs `log` if the budget for lines about unpublished connections allows.
    fn log_unpublished(&self, log: impl FnOnce()) {
        let allowed = self
            .unpublished_log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .allow(std::time::Instant::now());
        if let Some(held_back) = allowed {
            if held_back > 0 {
                warn!(
                    held_back,
                    "RTMP: log lines about unpublished connections held back"
                );
            }
            log();
        }
    }
}

async fn connection(
    stream: TcpStream,
    remote: SocketAddr,
    shared: &Shared,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
) {
    let _ = stream.set_nodelay(true);
    let deadline = Instant::now() + shared.auth.limits().publish_deadline;
    let mut conn = Connection {
        remote,
        shared,
        stream,
        session: None,
        out: Vec::new(),
        publish: None,
        requested: None,
        chunks: ChunkGate::default(),
        deadline,
        progress,
    };
    let end = conn.run(stop).await;
    let requested = conn.requested.take();
    let published = conn.publish.take().map(|p| p.name);
    if published.is_some() {
        shared.metrics.disconnected(PROTOCOL);
    }
    if let Some(reason) = end.refusal_reason() {
        shared.metrics.refused(PROTOCOL, reason);
    }
    match (&end, published) {
        (ConnectionEnd::Eof | ConnectionEnd::Shutdown, Some(name)) => {
            info!(%remote, stream = %name, reason = %end, "RTMP publisher disconnected");
        }
        (ConnectionEnd::Eof, None) => debug!(%remote, "RTMP connection closed"),
        (_, Some(name)) => {
            warn!(%remote, stream = %name, reason = %end, "RTMP connection closed");
        }
        (_, None) => {
            let stream = requested.unwrap_or_default();
            shared.log_unpublished(
                || warn!(%remote, stream, reason = %end, "RTMP connection closed"),
            );
        }
    }
}

/// A publish in progress on this connection.
struct Publishing {
    name: super::StreamName,
    sink: Box<dyn MediaSink>,
    demux: FlvDemuxer,
}

struct Connection<'a> {
    remote: SocketAddr,
    shared: &'a Shared,
    stream: TcpStream,
    session: Option<ServerSession>,
    /// Bytes for the peer, written after each batch of input; refusals are
    /// flushed before the connection closes.
    out: Vec<u8>,
    publish: Option<Publishing>,
    /// The stream key of the last publish request, without its query (which
    /// holds credentials), for logs.
    requested: Option<String>,
    chunks: ChunkGate,
    /// When an authorised publish must have started.
    deadline: Instant,
    /// Read by the pending-connection pool.
    progress: Arc<Progress>,
}

impl Connection<'_> {
    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> ConnectionEnd {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let handshake_deadline = self.deadline.min(Instant::now() + HANDSHAKE_TIMEOUT);
        let remaining =
            match tokio::time::timeout_at(handshake_deadline, self.handshake(&mut buf)).await {
                Ok(Ok(rest)) => rest,
                Ok(Err(e)) => return e,
                Err(_) if handshake_deadline == self.deadline => return self.deadline_passed(),
                Err(_) => return ConnectionEnd::Timeout(HANDSHAKE_TIMEOUT),
            };
        let (session, results) = match ServerSession::new(ServerSessionConfig::new()) {
            Ok(x) => x,
            Err(e) => return ConnectionEnd::Protocol(e.to_string()),
        };
        self.session = Some(session);
        let first = self.handle_results(results);
        let first = first.and_then(|()| self.input(&remaining));
        if let Err(e) = self.flush().await.map_err(ConnectionEnd::from).and(first) {
            return e;
        }
        let mut kicked: Option<watch::Receiver<bool>> = None;
        // When the next read may start (publishing: see READ_COALESCE).
        let mut read_after: Option<Instant> = None;
        loop {
            buf.clear();
            let kicked_fut = async {
                match kicked.as_mut() {
                    // A dropped sender means nobody can kick any more.
                    Some(rx) => {
                        if rx.wait_for(|&k| k).await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            let idle_until = Instant::now() + IDLE_TIMEOUT;
            let until = match &self.publish {
                Some(_) => idle_until,
                None => idle_until.min(self.deadline),
            };
            let stream = &mut self.stream;
            let read = async {
                if let Some(at) = read_after {
                    tokio::time::sleep_until(at).await;
                }
                tokio::time::timeout_at(until, stream.read_buf(&mut buf)).await
            };
            let read = tokio::select! {
                r = read => r,
                () = kicked_fut => return ConnectionEnd::Kicked,
                _ = stop.wait_for(|&s| s) => return ConnectionEnd::Shutdown,
            };
            match read {
                Err(_) if self.publish.is_none() && Instant::now() >= self.deadline => {
                    return self.deadline_passed()
                }
                Err(_) => return ConnectionEnd::Timeout(IDLE_TIMEOUT),
                Ok(Err(e)) => return ConnectionEnd::Io(e),
                Ok(Ok(0)) => return ConnectionEnd::Eof,
                Ok(Ok(n)) => {
                    self.shared.metrics.bytes_in(PROTOCOL, n);
                    read_after = (self.publish.is_some() && n < COALESCE_BELOW)
                        .then(|| Instant::now() + READ_COALESCE);
                }
            }
            let had_publish = self.publish.is_some();
            let result = self.input(&buf);
            if let Err(e) = self.flush().await.map_err(ConnectionEnd::from).and(result) {
                return e;
            }
            match (&self.publish, had_publish) {
                (Some(p), false) => kicked = Some(p.sink.kicked()),
                (None, true) => kicked = None,
                _ => {}
            }
        }
    }

    /// RTMP handshake (C0/C1/C2 ↔ S0/S1/S2); returns bytes that followed it.
    async fn handshake(&mut self, buf: &mut BytesMut) -> Result<Vec<u8>, ConnectionEnd> {
        let mut handshake = Handshake::new(PeerType::Server);
        loop {
            buf.clear();
            if self.stream.read_buf(buf).await? == 0 {
                return Err(ConnectionEnd::Handshake(
                    "connection closed during handshake".into(),
                ));
            }
            self.shared.metrics.bytes_in(PROTOCOL, buf.len());
            match handshake.process_bytes(buf) {
                Ok(HandshakeProcessResult::InProgress { response_bytes }) => {
                    self.stream.write_all(&response_bytes).await?;
                }
                Ok(HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                }) => {
                    self.stream.write_all(&response_bytes).await?;
                    return Ok(remaining_bytes);
                }
                Err(e) => return Err(ConnectionEnd::Handshake(format!("{e:?}"))),
            }
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.out.clear();
        }
        Ok(())
    }

    fn session(&mut self) -> Result<&mut ServerSession, ConnectionEnd> {
        self.session
            .as_mut()
            .ok_or_else(|| ConnectionEnd::Protocol("no session".into()))
    }

    fn deadline_passed(&self) -> ConnectionEnd {
        ConnectionEnd::PublishDeadline(self.shared.auth.limits().publish_deadline)
    }

    /// Hands `bytes` to `rml_rtmp` one message at a time, each checked by the
    /// [`ChunkGate`] (size, before anything is buffered) and the
    /// [`rtmp_guard`] (AMF nesting, on the AMF messages the gate kept) first.
    fn input(&mut self, mut bytes: &[u8]) -> Result<(), ConnectionEnd> {
        while !bytes.is_empty() {
            let limit = match self.publish {
                Some(_) => self.shared.auth.limits().rtmp_max_message_size,
                None => PRE_PUBLISH_MAX_MESSAGE,
            };
            let n = self
                .chunks
                .advance(bytes, limit)
                .map_err(ConnectionEnd::Chunk)?;
            let (now, rest) = bytes.split_at(n);
            bytes = rest;
            self.progress
                .messages
                .store(self.chunks.messages(), Ordering::Release);
            if let Some((type_id, data)) = self.chunks.take_amf() {
                rtmp_guard::check(type_id, &data).map_err(ConnectionEnd::Protocol)?;
            }
            let session = self.session()?;
            // rml_rtmp can still panic on input the chunk gate lets through
            // (a capacity overflow in its deserializer, found by the
            // rtmp_chunks fuzz target): that ends this connection, as any
            // protocol error does, never the task or the process.
            let results = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                session.handle_input(now)
            }))
            .map_err(|_| {
                ConnectionEnd::Protocol("malformed RTMP input (rml_rtmp panicked)".into())
            })?
            .map_err(|e| ConnectionEnd::Protocol(e.to_string()))?;
            self.handle_results(results)?;
        }
        Ok(())
    }

    fn handle_results(&mut self, results: Vec<ServerSessionResult>) -> Result<(), ConnectionEnd> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    self.out.extend_from_slice(&packet.bytes)
                }
                ServerSessionResult::RaisedEvent(event) => self.event(event)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn accept(&mut self, request_id: u32) -> Result<(), ConnectionEnd> {
        let results = self
            .session()?
            .accept_request(request_id)
            .map_err(|e| ConnectionEnd::Protocol(e.to_string()))?;
        self.handle_results(results)
    }

    /// Sends an error status (e.g. `NetStream.Publish.BadName`) for `request_id`.
    fn reject(&mut self, request_id: u32, code: &str, why: &str) -> Result<(), ConnectionEnd> {
        let results = self
            .session()?
            .reject_request(request_id, code, why)
            .map_err(|e| ConnectionEnd::Protocol(e.to_string()))?;
        self.handle_results(results)
    }

    fn event(&mut self, event: ServerSessionEvent) -> Result<(), ConnectionEnd> {
        match event {
            ServerSessionEvent::ConnectionRequested {
                request_id,
                app_name,
            } => {
                if app_name.split('?').next() == Some(APP) {
                    self.accept(request_id)
                } else {
                    let why = format!(
                        "unknown application {:?}, expected {APP:?}",
                        super::redact(&app_name)
                    );
                    self.reject(request_id, "NetConnection.Connect.Rejected", &why)?;
                    Err(ConnectionEnd::Refused(PublishRefused::BadName(why)))
                }
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                // `rtmp://host/live?key=K` + stream key `news` is `news?key=K`.
                let key = match app_name.split_once('?') {
                    Some((_, query)) if !stream_key.contains('?') => {
                        format!("{stream_key}?{query}")
                    }
                    _ => stream_key,
                };
                self.publish(request_id, &key)
            }
            ServerSessionEvent::PublishStreamFinished { .. } => {
                if let Some(p) = self.publish.take() {
                    info!(remote = %self.remote, stream = %p.name, "RTMP publish finished");
                    self.shared.metrics.disconnected(PROTOCOL);
                }
                Ok(())
            }
            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                let why = "this server only takes publishes; play over HLS or DASH";
                self.reject(request_id, "NetStream.Play.Failed", why)?;
                Err(ConnectionEnd::Refused(PublishRefused::BadName(why.into())))
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } => {
                debug!(remote = %self.remote, ?metadata, "RTMP stream metadata");
                Ok(())
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } => self.media(|d| d.video(timestamp.value, &data)),
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } => self.media(|d| d.audio(timestamp.value, &data)),
            _ => Ok(()),
        }
    }

    fn publish(&mut self, request_id: u32, stream_key: &str) -> Result<(), ConnectionEnd> {
        let shared = self.shared;
        self.requested = Some(super::redact(stream_key));
        let attempt = if self.publish.is_some() {
            Err(PublishRefused::BadName(
                "this connection already publishes a stream".into(),
            ))
        } else {
            PublishRequest::from_key(stream_key).and_then(|req| {
                shared.auth.check(&req, SystemTime::now())?;
                let info = PublisherInfo {
                    remote: self.remote,
                    protocol: PROTOCOL,
                };
                let sink = shared.target.publish(&req.name, info)?;
                Ok((req.name, sink))
            })
        };
        match attempt {
            Ok((name, sink)) => {
                self.accept(request_id)?;
                info!(remote = %self.remote, stream = %name, "RTMP publish started");
                shared.metrics.connected(PROTOCOL);
                self.progress.publishing.store(true, Ordering::Release);
                self.publish = Some(Publishing {
                    name,
                    sink,
                    demux: FlvDemuxer::new(),
                });
                Ok(())
            }
            Err(refused) => {
                let code = match refused {
                    PublishRefused::Unauthorised(_) => "NetStream.Publish.BadConnection",
                    PublishRefused::BadName(_) | PublishRefused::Busy(_) => {
                        "NetStream.Publish.BadName"
                    }
                };
                self.reject(request_id, code, &refused.to_string())?;
                Err(ConnectionEnd::Refused(refused))
            }
        }
    }

    fn media(
        &mut self,
        parse: impl FnOnce(&mut FlvDemuxer) -> Result<Vec<MediaEvent>, MediaError>,
    ) -> Result<(), ConnectionEnd> {
        let metrics = &self.shared.metrics;
        let Some(p) = self.publish.as_mut() else {
            return Ok(());
        };
        let late_before = p.demux.late_frames();
        let parsed = parse(&mut p.demux);
        metrics.late(PROTOCOL, p.demux.late_frames() - late_before);
        let events = match parsed {
            Ok(events) => events,
            Err(e @ MediaError::UnsupportedCodec(_)) => return Err(ConnectionEnd::Media(e)),
            Err(e) => {
                debug!(remote = %self.remote, error = %e, "dropping malformed FLV tag");
                metrics.dropped(PROTOCOL, "malformed");
                return Ok(());
            }
        };
        deliver(p.sink.as_mut(), events, metrics, PROTOCOL).map_err(|_| ConnectionEnd::Kicked)
    }
}

/// Hands parsed events to a sink; `Err` when the sink is closed.
pub(crate) fn deliver(
    sink: &mut dyn MediaSink,
    events: Vec<MediaEvent>,
    metrics: &IngestMetrics,
    protocol: &'static str,
) -> Result<(), SinkError> {
    for event in events {
        match event {
            MediaEvent::Params(params) => sink.params(params),
            MediaEvent::Sample(kind, sample) => {
                metrics.frame(protocol, kind);
                match sink.sample(kind, sample) {
                    Ok(()) => {}
                    Err(SinkError::NoParams(_)) => metrics.dropped(protocol, "no_params"),
                    Err(e @ SinkError::Closed) => return Err(e),
                }
            }
        }
    }
    Ok(())
}
