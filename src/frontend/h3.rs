//! HTTP/3 (RFC 9114) over QUIC through quinn and h3.
//!
//! Same shape as the Pingora adapter: we own the socket and the accept loop,
//! h3 speaks the protocol, and every request is answered by [`Edge::handle`],
//! so the cache, coalescing, metrics and access log are shared with h1/h2.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h3::error::{ConnectionError, StreamError};
use h3::server::{RequestResolver, RequestStream};
use http::Method;
use quinn::crypto::rustls::QuicServerConfig;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::edge::{Edge, RequestLog};
use crate::error::EdgeError;
use crate::frontend::ResponseSink;
use crate::metrics::{H3Metrics, OutcomeLabels};
use crate::request::{path, ObjectKind, Protocol};
use crate::units::ByteSize;
use quic::BodyChunk;

mod quic;

/// The `[server.h3]` section: HTTP/3 on UDP, same port as each `tls_listen`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct H3Config {
    /// Serve HTTP/3 on the `tls_listen` addresses and advertise it with Alt-Svc.
    pub enabled: bool,
    /// Open QUIC connections per listener; new ones beyond this are refused.
    pub max_connections: usize,
    /// Requests (bidirectional streams) one connection may have open at once.
    pub max_streams_per_connection: u32,
    /// A connection with no traffic for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest request header section accepted (SETTINGS_MAX_FIELD_SECTION_SIZE,
    /// counted as RFC 9114 §4.2.2 does: name, value and 32 bytes per field);
    /// larger requests get 431 from the HTTP/3 layer. The edge's own limit on
    /// every protocol is lower ([`crate::request::MAX_HEADER_BYTES`]), so by default every head
    /// the other front doors accept reaches the core, and heads between the
    /// two get the core's 431 (counted, logged, with Via) as on h1 and h2.
    /// Below that limit HTTP/3 refuses heads that h1 and h2 serve.
    pub max_header_size: ByteSize,
    /// Once this many connections are open, a client must prove its address
    /// with a stateless Retry (one more round trip) before it gets state on
    /// the edge; 0 asks every client.
    pub retry_above_connections: usize,
    /// Accept requests in TLS early data (0-RTT) from resuming clients. Only
    /// GET and HEAD of playlists, manifests and segments are served from early
    /// data; anything else gets 425 Too Early (RFC 8470), because early data
    /// can be replayed.
    pub early_data: bool,
    /// `ma` of the `Alt-Svc: h3=":PORT"` header sent on HTTP/1.1 and HTTP/2 responses.
    #[serde(with = "humantime_serde")]
    pub alt_svc_max_age: Duration,
    /// Largest UDP payload that path MTU discovery (RFC 8899) probes for, and
    /// that we tell peers we accept. Connections start at 1200 bytes and only
    /// grow once a probe of the larger size is acknowledged, so a bound above
    /// the real path MTU costs a few lost probes, never a black hole. At most
    /// 6500: see `MAX_UDP_PAYLOAD`.
    pub max_udp_payload: u16,
}

impl Default for H3Config {
    fn default() -> Self {
        H3Config {
            enabled: true,
            max_connections: 10_000,
            max_streams_per_connection: 100,
            idle_timeout: Duration::from_secs(30),
            // Pingora's HTTP/2 bound on decoded header lists.
            max_header_size: ByteSize(64 * 1024),
            retry_above_connections: 1_000,
            early_data: false,
            alt_svc_max_age: Duration::from_secs(24 * 3600),
            max_udp_payload: MAX_UDP_PAYLOAD,
        }
    }
}

impl H3Config {
    /// Checks serde cannot express: `(key, message)` of the first problem.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_connections == 0 {
            return Err(("server.h3.max_connections", "must be at least 1".into()));
        }
        if self.max_streams_per_connection == 0 {
            return Err((
                "server.h3.max_streams_per_connection",
                "must be at least 1".into(),
            ));
        }
        if self.max_header_size.0 < 1024 {
            return Err((
                "server.h3.max_header_size",
                format!("{} is too small (at least 1KiB)", self.max_header_size),
            ));
        }
        if self.idle_timeout.is_zero() || self.idle_timeout > Duration::from_secs(600) {
            return Err((
                "server.h3.idle_timeout",
                "must be between 1ms and 10m".into(),
            ));
        }
        if !(MIN_UDP_PAYLOAD..=MAX_UDP_PAYLOAD).contains(&self.max_udp_payload) {
            return Err((
                "server.h3.max_udp_payload",
                format!("must be between {MIN_UDP_PAYLOAD} and {MAX_UDP_PAYLOAD}"),
            ));
        }
        Ok(())
    }

    /// The `Alt-Svc` value advertising HTTP/3 on `port`.
    pub fn alt_svc(&self, port: u16) -> http::HeaderValue {
        let value = format!("h3=\":{port}\"; ma={}", self.alt_svc_max_age.as_secs());
        http::HeaderValue::from_str(&value).unwrap_or(http::HeaderValue::from_static("clear"))
    }

    fn endpoint_config(
        &self,
        tls: &rustls::ServerConfig,
    ) -> Result<quinn::ServerConfig, std::io::Error> {
        let mut tls = tls.clone();
        tls.alpn_protocols = vec![b"h3".to_vec()];
        // QUIC allows only 0 or u32::MAX here (RFC 9001 §4.6.1).
        tls.max_early_data_size = if self.early_data { u32::MAX } else { 0 };
        // Returning players resume (and, with early_data, send 0-RTT) only
        // while their session is remembered; rustls keeps 256 by default.
        // Stateful sessions are also what makes a 0-RTT ticket single-use.
        tls.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
        let crypto = QuicServerConfig::try_from(tls)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let mut transport = quinn::TransportConfig::default();
        transport
            .max_concurrent_bidi_streams(self.max_streams_per_connection.into())
            // Control stream and the two QPACK streams, plus room for extensions.
            .max_concurrent_uni_streams(8u32.into())
            .max_idle_timeout(Some(
                quinn::IdleTimeout::try_from(self.idle_timeout)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ))
            // Start at QUIC's 1200-byte minimum (safe on any path) and let
            // PLPMTUD climb to what the path really carries, up to
            // max_udp_payload (jumbo frames in a data centre, loopback).
            .mtu_discovery_config(Some({
                let mut mtu = quinn::MtuDiscoveryConfig::default();
                mtu.upper_bound(self.max_udp_payload);
                mtu
            }))
            // Streams of a connection are not sent round-robin but in the
            // order of their priorities, which h3::quic gives by arrival
            // (`SendOrder`): a player's segment finishes as soon as it can
            // instead of all concurrent ones finishing late together (and
            // ABR measures per-segment throughput).
            .send_fairness(false);
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(Arc::new(transport));
        Ok(config)
    }
}

/// QUIC's smallest allowed datagram payload (RFC 9000 §14).
const MIN_UDP_PAYLOAD: u16 = 1200;
/// The largest UDP payload we probe for. quinn 0.11 hands the kernel up to
/// 10 packets per GSO send, and one send must fit a single 64 KiB IP
/// datagram, so about 10 x 6550 is the most that works. With larger packets
/// the batched sends are refused (quinn-udp drops EMSGSIZE silently), loss
/// looks like a black hole and quinn falls back to 1200 bytes for a minute:
/// on loopback, bounds of 8952, 16384 and 65527 all left the edge sending
/// 1200-byte packets, half as fast as quinn's default 1452.
const MAX_UDP_PAYLOAD: u16 = 6500;

/// TLS sessions remembered for resumption (a few hundred bytes each).
const SESSION_CACHE: usize = 32 * 1024;

/// Serve HTTP/3 on `socket` until `shutdown` turns true; then send GOAWAY on
/// every connection, let the requests already accepted finish, and close the
/// endpoint. The caller bounds the drain (abort the task when grace is over).
pub async fn serve(
    socket: std::net::UdpSocket,
    edge: Arc<Edge>,
    tls: Arc<rustls::ServerConfig>,
    limits: H3Config,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let server_config = limits.endpoint_config(&tls)?;
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        // What we accept; never below quinn's default of 1472.
        .max_udp_payload_size(limits.max_udp_payload.max(1472))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let endpoint = quinn::Endpoint::new(
        endpoint_config,
        Some(server_config),
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    let limits = Arc::new(limits);
    let mut connections = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        let incoming = tokio::select! {
            incoming = endpoint.accept() => incoming,
            _ = stopping(&mut stop) => break,
            // Reap finished connection tasks so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let Some(incoming) = incoming else { break };
        let metrics = &edge.metrics().h3;
        let open = endpoint.open_connections();
        if open >= limits.max_connections {
            metrics.incoming.get_or_create(&outcome("refused")).inc();
            incoming.refuse();
            continue;
        }
        if open >= limits.retry_above_connections && !incoming.remote_address_validated() {
            metrics.incoming.get_or_create(&outcome("retry")).inc();
            // Fails only for an attempt that already carries a Retry token.
            if let Err(e) = incoming.retry() {
                e.into_incoming().ignore();
            }
            continue;
        }
        metrics.incoming.get_or_create(&outcome("accepted")).inc();
        let connecting = match incoming.accept() {
            Ok(c) => c,
            Err(e) => {
                metrics.handshakes.get_or_create(&outcome("failed")).inc();
                tracing::debug!(error = %e, "QUIC accept failed");
                continue;
            }
        };
        connections.spawn(serve_connection(
            connecting,
            edge.clone(),
            limits.clone(),
            shutdown.clone(),
        ));
    }
    // No new connections; the open ones send GOAWAY and finish their requests.
    endpoint.set_server_config(None);
    while connections.join_next().await.is_some() {}
    endpoint.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"shutting down");
    let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    Ok(())
}

/// Resolves once shutdown is asked for (or its sender is gone).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|s| *s).await;
}

/// HTTP/3's "no error" code (RFC 9114 §8.1).
const H3_NO_ERROR: u32 = 0x100;

fn outcome(outcome: &'static str) -> OutcomeLabels {
    OutcomeLabels { outcome }
}

/// Whether a connection ended the way connections normally end: the peer or
/// we closed it with a no-error code (clients send `ApplicationClose: 0x0` or
/// H3_NO_ERROR), or it went idle.
fn is_normal_close(e: &ConnectionError) -> bool {
    use h3::quic::ConnectionErrorIncoming as Incoming;
    if e.is_h3_no_error() {
        return true;
    }
    match e {
        ConnectionError::Remote {
            0: Incoming::ApplicationClose { error_code: 0 },
            ..
        }
        | ConnectionError::Remote {
            0: Incoming::Timeout,
            ..
        }
        | ConnectionError::Timeout { .. } => true,
        ConnectionError::Remote {
            0: Incoming::Undefined(inner),
            ..
        } => match inner.downcast_ref::<quinn::ConnectionError>() {
            Some(quinn::ConnectionError::LocallyClosed) => true,
            Some(quinn::ConnectionError::ConnectionClosed(close)) => {
                close.error_code == quinn::TransportErrorCode::NO_ERROR
            }
            _ => false,
        },
        _ => false,
    }
}

/// One QUIC connection: handshake, then requests until the peer leaves or we
/// shut down.
async fn serve_connection(
    connecting: quinn::Connecting,
    edge: Arc<Edge>,
    limits: Arc<H3Config>,
    mut shutdown: watch::Receiver<bool>,
) {
    let metrics = &edge.metrics().h3;
    let conn = if limits.early_data {
        let Ok((conn, accepted)) = connecting.into_0rtt() else {
            // A server-side connection always converts (0.5-RTT).
            return;
        };
        let watched = conn.clone();
        let edge = edge.clone();
        tokio::spawn(async move {
            let ok = accepted.await && watched.close_reason().is_none();
            let label = if ok { "ok" } else { "failed" };
            edge.metrics()
                .h3
                .handshakes
                .get_or_create(&outcome(label))
                .inc();
        });
        conn
    } else {
        match connecting.await {
            Ok(conn) => {
                metrics.handshakes.get_or_create(&outcome("ok")).inc();
                conn
            }
            Err(e) => {
                metrics.handshakes.get_or_create(&outcome("failed")).inc();
                tracing::debug!(error = %e, "QUIC handshake failed");
                return;
            }
        }
    };
    metrics.connections.inc();
    let client = conn.remote_address();
    let mut sampler = PathSampler { lost_reported: 0 };
    let mut sample_every = tokio::time::interval_at(Instant::now() + SAMPLE_EVERY, SAMPLE_EVERY);

    let built = h3::server::builder()
        .max_field_section_size(limits.max_header_size.0)
        .build::<_, BodyChunk>(quic::Connection::new(conn.clone()))
        .await;
    match built {
        Ok(mut h3) => {
            let mut draining = false;
            // Owned here so that cutting this connection (grace over) cuts its requests too.
            let mut requests = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = h3.accept() => match accepted {
                        Ok(Some(resolver)) => {
                            metrics.streams.inc();
                            let early = limits.early_data && !handshake_complete(&conn);
                            requests.spawn(serve_request(resolver, edge.clone(), client, early));
                        }
                        // GOAWAY exchanged and every accepted request done.
                        Ok(None) => break,
                        Err(e) => {
                            if !is_normal_close(&e) {
                                tracing::debug!(%client, error = ?e, "HTTP/3 connection failed");
                            }
                            break;
                        }
                    },
                    Some(_) = requests.join_next(), if !requests.is_empty() => {}
                    _ = sample_every.tick() => sampler.sample(metrics, &conn),
                    _ = stopping(&mut shutdown), if !draining => {
                        draining = true;
                        // GOAWAY: requests already accepted finish, no new ones.
                        if let Err(e) = h3.shutdown(0).await {
                            if !is_normal_close(&e) {
                                tracing::debug!(%client, error = ?e, "HTTP/3 GOAWAY failed");
                            }
                            break;
                        }
                    }
                }
            }
            while requests.join_next().await.is_some() {}
            if draining {
                // The last response's final packets may still be unacknowledged;
                // give the client a moment to close before we do.
                let linger = (conn.rtt() * 3).max(Duration::from_millis(100));
                let _ = tokio::time::timeout(linger, conn.closed()).await;
                conn.close(quinn::VarInt::from_u32(H3_NO_ERROR), b"");
            } else {
                let _ = tokio::time::timeout(limits.idle_timeout, conn.closed()).await;
            }
        }
        Err(e) => {
            if !is_normal_close(&e) {
                tracing::debug!(%client, error = ?e, "HTTP/3 setup failed");
            }
        }
    }
    sampler.sample(metrics, &conn);
    metrics.connections.dec();
}

/// Whether the client's Finished has been received. A request accepted before
/// that came in early data, which an attacker could have replayed; one
/// accepted after it is safe even if its bytes were sent in 0-RTT, because a
/// replayed ClientHello never completes a handshake (RFC 8470 §3). TLS
/// exporters become available exactly then (RFC 8446 §7.5), so probing one
/// asks rustls directly, with no lag behind the connection state.
fn handshake_complete(conn: &quinn::Connection) -> bool {
    conn.export_keying_material(&mut [0u8; 1], b"strata handshake probe", b"")
        .is_ok()
}

/// How often a long-lived connection (a player watching for hours) reports
/// its RTT and losses, besides once when it closes.
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

/// Path statistics of one connection, reported as it goes.
struct PathSampler {
    lost_reported: u64,
}

impl PathSampler {
    fn sample(&mut self, metrics: &H3Metrics, conn: &quinn::Connection) {
        let path = conn.stats().path;
        metrics.rtt.observe(path.rtt.as_secs_f64());
        metrics
            .lost_packets
            .inc_by(path.lost_packets.saturating_sub(self.lost_reported));
        self.lost_reported = self.lost_reported.max(path.lost_packets);
    }
}

/// What may be answered from early data: a fetch that changes nothing and
/// whose answer is the same for everyone (RFC 8470 §3: safe, and replaying it
/// gains an attacker nothing).
fn allowed_in_early_data(parts: &http::request::Parts) -> bool {
    if parts.method != Method::GET && parts.method != Method::HEAD {
        return false;
    }
    let Ok(path) = path::canonical(parts.uri.path()) else {
        return false;
    };
    matches!(
        ObjectKind::from_path(&path),
        ObjectKind::Playlist | ObjectKind::Manifest | ObjectKind::Init | ObjectKind::Segment
    )
}

type Stream = RequestStream<quic::BidiStream, BodyChunk>;

/// Largest request body the edge forwards (licence requests are small).
const MAX_REQUEST_BODY: usize = 64 * 1024;

async fn read_body(stream: &mut Stream) -> Result<Bytes, EdgeError> {
    use bytes::Buf;
    let mut body = bytes::BytesMut::new();
    loop {
        match stream.recv_data().await {
            Ok(Some(mut chunk)) => {
                if body.len() + chunk.remaining() > MAX_REQUEST_BODY {
                    return Err(EdgeError::BodyTooLarge(MAX_REQUEST_BODY));
                }
                while chunk.has_remaining() {
                    let piece = chunk.chunk();
                    body.extend_from_slice(piece);
                    let n = piece.len();
                    chunk.advance(n);
                }
            }
            Ok(None) => return Ok(body.freeze()),
            Err(_) => return Err(EdgeError::BadRequest("unreadable request body")),
        }
    }
}

async fn serve_request(
    resolver: RequestResolver<quic::Connection, BodyChunk>,
    edge: Arc<Edge>,
    client: SocketAddr,
    early: bool,
) {
    let (request, mut stream) = match resolver.resolve_request().await {
        Ok(pair) => pair,
        Err(e) => {
            // h3 already answered 431 or reset the stream for malformed heads.
            if !e.is_h3_no_error() {
                tracing::debug!(%client, error = ?e, "unreadable HTTP/3 request");
            }
            return;
        }
    };
    let started = Instant::now();
    let (parts, ()) = request.into_parts();
    let (response, log) = if early && !allowed_in_early_data(&parts) {
        let log = RequestLog {
            method: parts.method.clone(),
            target: parts.uri.path().to_owned(),
            protocol: Protocol::Http3,
            client,
        };
        (EdgeError::TooEarly.into_response(), log)
    } else if crate::request::passes_through(&parts.method) {
        // Passed through (licence requests): the only bodies the edge forwards.
        match read_body(&mut stream).await {
            Ok(body) => {
                edge.handle_with_body(&parts, body, client, Protocol::Http3)
                    .await
            }
            Err(e) => edge.refuse(&parts, e, client, Protocol::Http3),
        }
    } else {
        edge.handle(&parts, client, Protocol::Http3).await
    };
    let mut sink = H3Sink {
        stream: &mut stream,
        log: &log,
    };
    crate::frontend::deliver(&edge, &mut sink, response, &log, started).await;
}

/// HTTP/3 through one h3 request stream.
struct H3Sink<'a> {
    stream: &'a mut Stream,
    log: &'a RequestLog,
}

impl ResponseSink for H3Sink<'_> {
    const FIRST_PIECE: Option<usize> = None;

    async fn send_head(&mut self, status: http::StatusCode, headers: http::HeaderMap) -> bool {
        let mut head = http::Response::new(());
        *head.status_mut() = status;
        *head.headers_mut() = headers;
        match self.stream.send_response(head).await {
            Ok(()) => true,
            Err(e) => {
                log_stream_error(self.log, &e);
                false
            }
        }
    }

    async fn send_chunk(&mut self, bytes: Bytes) -> bool {
        match self.stream.send_data(BodyChunk::from(bytes)).await {
            Ok(()) => true,
            Err(e) => {
                log_stream_error(self.log, &e);
                false
            }
        }
    }

    async fn abort(&mut self, cut: bool, _streamed: bool) {
        // Reset the stream so the client sees a truncated response.
        if cut {
            self.stream.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
        }
        self.stream.stop_sending(h3::error::Code::H3_NO_ERROR);
    }

    async fn finish(&mut self) -> bool {
        let finished = self.stream.finish().await.is_ok();
        // We never read request bodies. If the client's FIN has not arrived yet,
        // stop it with H3_NO_ERROR (RFC 9114 §4.1) rather than quinn's implicit 0.
        self.stream.stop_sending(h3::error::Code::H3_NO_ERROR);
        finished
    }
}

fn log_stream_error(log: &RequestLog, e: &StreamError) {
    // A client that stops reading (seek, quality switch) resets its stream.
    if !e.is_h3_no_error() && !matches!(e, StreamError::RemoteTerminate { .. }) {
        tracing::debug!(path = %log.target, error = ?e, "HTTP/3 response not delivered");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::MAX_HEADER_BYTES;

    fn parts(method: Method, uri: &str) -> http::request::Parts {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .expect("request")
            .into_parts()
            .0
    }

    #[test]
    fn early_data_serves_only_safe_fetches_of_cacheable_objects() {
        assert!(allowed_in_early_data(&parts(
            Method::GET,
            "https://e/live/a/seg1.m4s?token=x"
        )));
        assert!(allowed_in_early_data(&parts(
            Method::HEAD,
            "https://e/live/a/master.m3u8"
        )));
        assert!(!allowed_in_early_data(&parts(
            Method::POST,
            "https://e/live/a/seg1.m4s"
        )));
        assert!(!allowed_in_early_data(&parts(
            Method::GET,
            "https://e/drm/key1"
        )));
        assert!(!allowed_in_early_data(&parts(
            Method::GET,
            "https://e/admin"
        )));
    }

    #[test]
    fn by_default_every_head_the_core_accepts_gets_past_the_http3_limit() {
        // The largest head the core takes, as RFC 9114 §4.2.2 counts it: the
        // core counts 4 bytes per field where HTTP/3 counts 32, and HTTP/3
        // adds the pseudo-headers. 100 fields is more than any player sends.
        let fields = 100 + 4;
        let h3_size = MAX_HEADER_BYTES + fields * (32 - 4);
        assert!(
            H3Config::default().max_header_size.0 as usize >= h3_size,
            "HTTP/3 would refuse heads that HTTP/1.1 and HTTP/2 serve"
        );
    }

    #[test]
    fn alt_svc_names_the_port_and_max_age() {
        let config = H3Config {
            alt_svc_max_age: Duration::from_secs(3600),
            ..H3Config::default()
        };
        assert_eq!(config.alt_svc(8443), "h3=\":8443\"; ma=3600");
    }

    #[test]
    fn the_section_parses_and_errors_name_the_key() {
        use crate::config::EdgeConfig;
        let upstream = "[upstream]\nurls = [\"http://127.0.0.1:8081\"]\n";
        let config = EdgeConfig::parse(&format!(
            "[server.h3]\nidle_timeout = \"5s\"\nmax_header_size = \"8KiB\"\n{upstream}"
        ))
        .expect("valid");
        assert_eq!(config.server.h3.idle_timeout, Duration::from_secs(5));
        assert_eq!(config.server.h3.max_header_size, ByteSize(8192));
        assert!(config.server.h3.enabled && !config.server.h3.early_data);
        let typo = EdgeConfig::parse(&format!("[server.h3]\nmax_conections = 1\n{upstream}"))
            .expect_err("typo");
        assert!(typo.to_string().contains("max_conections"), "{typo}");
        let zero = EdgeConfig::parse(&format!("[server.h3]\nmax_connections = 0\n{upstream}"))
            .expect_err("zero");
        assert!(
            zero.to_string().starts_with("server.h3.max_connections"),
            "{zero}"
        );
    }

    #[test]
    fn limits_are_validated() {
        assert!(H3Config::default().validate().is_ok());
        let zero = H3Config {
            max_connections: 0,
            ..H3Config::default()
        };
        assert_eq!(
            zero.validate().map_err(|(k, _)| k),
            Err("server.h3.max_connections")
        );
        for bad in [1199, 6501, 9000] {
            let mtu = H3Config {
                max_udp_payload: bad,
                ..H3Config::default()
            };
            assert_eq!(
                mtu.validate().map_err(|(k, _)| k),
                Err("server.h3.max_udp_payload"),
                "{bad}"
            );
        }
        for good in [1200, 1452, 6500] {
            let mtu = H3Config {
                max_udp_payload: good,
                ..H3Config::default()
            };
            assert!(mtu.validate().is_ok(), "{good}");
        }
    }
}
