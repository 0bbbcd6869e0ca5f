//! HTTP/1.1 and HTTP/2 (cleartext or TLS) through Pingora's protocol layer.
//!
//! We accept connections ourselves (so tests can hand in listeners bound to
//! port 0, and shutdown is ours), let Pingora speak HTTP, and answer each
//! request from the edge core.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{
    HttpPersistentSettings, HttpServerApp, HttpServerOptions, ReusedHttpStream, ServerApp,
};
use pingora::http::ResponseHeader;
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::socket::SocketAddr as PingoraSocketAddr;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{GetSocketDigest, SocketDigest, Stream};
use pingora::server::ShutdownWatch;
use std::os::fd::AsRawFd;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::edge::Edge;
use crate::error::EdgeError;
use crate::frontend::admission::{Admission, ConnectionPermit, OVERLOADED_RESPONSE};
use crate::frontend::write_buffer::WriteBuffered;
use crate::frontend::ResponseSink;
use crate::request::Protocol;

/// Pingora's view of the edge.
pub struct PingoraApp {
    edge: Arc<Edge>,
    options: HttpServerOptions,
    /// Peers that must open each connection with a PROXY protocol header.
    proxy_from: Vec<ipnet::IpNet>,
    admission: Arc<Admission>,
    /// Which HTTP/1.x implementation answers (`server.http1`).
    http1: Http1Engine,
}

/// `server.http1`: which implementation speaks HTTP/1.x on the TCP front
/// door (HTTP/2 is always Pingora's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Http1Engine {
    /// Strata's own loop ([`super::http1`]): the cheaper hit path.
    #[default]
    Strata,
    /// Pingora's HTTP/1.1 session.
    Pingora,
}

impl PingoraApp {
    pub fn new(
        edge: Arc<Edge>,
        h2c: bool,
        proxy_from: Vec<ipnet::IpNet>,
        admission: Arc<Admission>,
    ) -> Self {
        let mut options = HttpServerOptions::default();
        options.h2c = h2c;
        // An HTTP/2 connection with no stream open is idle; close it like
        // an idle HTTP/1.1 one.
        options.h2_idle_timeout = Some(admission.config().keepalive_timeout);
        PingoraApp {
            edge,
            options,
            proxy_from,
            admission,
            http1: Http1Engine::default(),
        }
    }

    /// Speak HTTP/1.x with `engine`.
    pub fn with_http1(mut self, engine: Http1Engine) -> Self {
        self.http1 = engine;
        self
    }
}

#[async_trait]
impl HttpServerApp for PingoraApp {
    async fn process_new_http(
        self: &Arc<Self>,
        mut session: ServerSession,
        shutdown: &ShutdownWatch,
    ) -> Option<ReusedHttpStream> {
        // A kept-alive HTTP/1.1 stream carries a marker over from the request
        // before; a fresh connection (and every HTTP/2 stream) has none.
        let kept_alive = session.take_connection_user_context().is_some();
        let deadline = self.admission.head_deadline(kept_alive);
        let mut stop = shutdown.clone();
        let draining = async {
            // Only an idle kept-alive connection is closed under a client;
            // one that sends within the allowance gets `Connection: close`.
            if kept_alive {
                let _ = stop.wait_for(|s| *s).await;
                tokio::time::sleep(super::DRAIN_IDLE).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let read = tokio::select! {
            read = tokio::time::timeout(deadline, session.read_request()) => read,
            () = draining => {
                tracing::debug!("idle kept-alive connection closed: draining");
                return None;
            }
        };
        let read = match read {
            Ok(read) => read,
            Err(_) => {
                // Slowloris or an idle connection: the slot goes back now.
                tracing::debug!(?deadline, kept_alive, "request head timed out");
                self.admission.head_timed_out();
                return None;
            }
        };
        match read {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => {
                // Malformed or oversized request head: answer 400 where the
                // connection still allows it, then close.
                tracing::debug!(error = %e, "unreadable request");
                let protocol = if session.is_http2() {
                    Protocol::Http2
                } else {
                    Protocol::Http1
                };
                self.edge.count_unreadable_head(protocol);
                let _ = session.respond_error(400).await;
                return None;
            }
        }
        let started = Instant::now();
        let protocol = if session.is_http2() {
            Protocol::Http2
        } else {
            Protocol::Http1
        };
        let client = session
            .client_addr()
            .and_then(|a| a.as_inet().copied())
            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
        if *shutdown.borrow() {
            session.set_keepalive(None);
        } else if session.get_keepalive().is_some() {
            // Pingora's idle allowance is 60 s, or forever once a client asks
            // for keep-alive; ours is `server.limits.keepalive_timeout`.
            let idle = self.admission.config().keepalive_timeout;
            session.set_keepalive(Some(idle.as_secs().max(1)));
        }
        let framing = match protocol {
            Protocol::Http1 => {
                crate::frontend::h1::framing_error(session.req_header(), &session.to_h1_raw())
            }
            _ => None,
        };
        let (response, log) = if let Some(why) = framing {
            // The rest of the stream cannot be trusted to start where this
            // request ends: answer and close (RFC 9112 §6.1).
            session.set_keepalive(None);
            self.edge.refuse(
                session.req_header(),
                EdgeError::BadRequest(why),
                client,
                protocol,
            )
        } else if crate::request::passes_through(&session.req_header().method) {
            match read_body(&mut session).await {
                Ok(body) => {
                    self.edge
                        .handle_with_body(session.req_header(), body, client, protocol)
                        .await
                }
                Err(e) => self.edge.refuse(session.req_header(), e, client, protocol),
            }
        } else {
            self.edge
                .handle(session.req_header(), client, protocol)
                .await
        };
        let mut sink = PingoraSink(&mut session);
        if !crate::frontend::deliver(&self.edge, &mut sink, response, &log, started).await {
            return None;
        }
        let mut settings = HttpPersistentSettings::for_session(&session);
        settings.set_user_context(Box::new(KeptAlive));
        let reusable = session.finish().await.ok().flatten()?;
        Some(ReusedHttpStream::from_reusable_stream(reusable, settings))
    }

    fn server_options(&self) -> Option<&HttpServerOptions> {
        Some(&self.options)
    }
}

/// HTTP/1.1 and HTTP/2 through Pingora's session.
struct PingoraSink<'a>(&'a mut ServerSession);

impl ResponseSink for PingoraSink<'_> {
    /// As large as what `WriteBuffered` holds back, so the head leaves with
    /// it at once; small enough to be cheap.
    const FIRST_PIECE: Option<usize> = Some(crate::frontend::write_buffer::WRITE_BUFFER);

    async fn send_head(&mut self, status: http::StatusCode, headers: http::HeaderMap) -> bool {
        // The core's header map moves into Pingora's head as it is: no copy
        // of each name and value (and no case map: names go out lower-case,
        // as HTTP/2 and HTTP/3 send them anyway).
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.headers = headers;
        let header = ResponseHeader::from(parts);
        self.0.write_response_header(Box::new(header)).await.is_ok()
    }

    async fn send_chunk(&mut self, bytes: bytes::Bytes) -> bool {
        self.0.write_response_body(bytes, false).await.is_ok()
    }

    async fn abort(&mut self, _cut: bool, streamed: bool) {
        // A streamed body has no length the client can check against on
        // every protocol: close the connection so it cannot look whole.
        if streamed {
            self.0.shutdown().await;
        }
    }

    async fn finish(&mut self) -> bool {
        self.0.finish_body().await.is_ok()
    }
}

/// `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n` (RFC 9113 §3.4).
const H2_PREFACE_LEN: usize = 24;

/// What an HTTP/2 preface starts with, and no HTTP/1.1 request line does.
const H2_PREFACE_START: &[u8] = b"PRI * HTTP/2.0";

/// Reads into `buf` until it holds the 24 bytes of an HTTP/2 preface, a
/// complete (tiny) HTTP/1 head, or the client stops sending.
async fn read_prefix(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    while buf.len() < H2_PREFACE_LEN && !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut chunk = [0u8; H2_PREFACE_LEN];
        let n = tcp.read(&mut chunk[..H2_PREFACE_LEN - buf.len()]).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}

/// Carried from one request to the next on a kept-alive HTTP/1.1 connection.
struct KeptAlive;

/// Largest request body the edge forwards (licence requests are small).
const MAX_REQUEST_BODY: usize = 64 * 1024;

async fn read_body(session: &mut ServerSession) -> Result<bytes::Bytes, EdgeError> {
    let mut body = bytes::BytesMut::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_REQUEST_BODY {
                    return Err(EdgeError::BodyTooLarge(MAX_REQUEST_BODY));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body.freeze()),
            Err(_) => return Err(EdgeError::BadRequest("unreadable request body")),
        }
    }
}

/// Read a PROXY protocol v1/v2 header; returns the original client and any
/// bytes read past the header (the start of the real stream).
async fn read_proxy_header(
    tcp: &mut tokio::net::TcpStream,
) -> Result<(Option<SocketAddr>, Vec<u8>), &'static str> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(256);
    loop {
        let mut chunk = [0u8; 512];
        let n = tcp.read(&mut chunk).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("connection closed before the header ended");
        }
        buf.extend_from_slice(&chunk[..n]);
        match crate::policy::parse_proxy_header(&buf) {
            Ok(header) => return Ok((header.source, buf[header.len..].to_vec())),
            Err(crate::policy::ProxyError::Incomplete) if buf.len() < 4096 => continue,
            Err(crate::policy::ProxyError::Incomplete) => return Err("header too long"),
            Err(crate::policy::ProxyError::Invalid(why)) => return Err(why),
        }
    }
}

/// A slot for a connection from `client`, or `None` when it is over a cap
/// (then a cleartext client is told 503 first, by [`turn_away`]).
fn admit(
    app: &PingoraApp,
    tcp: &mut Option<tokio::net::TcpStream>,
    client: SocketAddr,
    tls: bool,
) -> Option<ConnectionPermit> {
    match app.admission.admit(client.ip()) {
        Ok(permit) => Some(permit),
        Err(refusal) => {
            tracing::debug!(%client, ?refusal, "connection refused: over the limit");
            if let (false, Some(tcp)) = (tls, tcp.take()) {
                tokio::spawn(turn_away(tcp));
            }
            None
        }
    }
}

/// Answers 503 with `Retry-After` and closes without a reset: what the
/// client sent is read and dropped (at most 16 KiB, for at most 1 s), since
/// closing with unread bytes would send RST and could destroy the answer.
async fn turn_away(mut tcp: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let linger = async {
        tcp.write_all(OVERLOADED_RESPONSE).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 16 * 1024 {
            match tcp.read(&mut sink).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), linger).await;
}

/// Accept connections on `listener` until `shutdown` turns true; connections
/// already open finish their current request (HTTP/2 gets GOAWAY).
pub async fn serve(
    listener: TcpListener,
    app: Arc<PingoraApp>,
    tls: Option<Arc<Acceptor>>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (mut tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                // EMFILE and friends: back off rather than spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // A proxy's connections are admitted under the client address its
        // PROXY header names, once it is read.
        let from_proxy = app.proxy_from.iter().any(|net| net.contains(&peer.ip()));
        let permit = if from_proxy {
            None
        } else {
            let mut slot = Some(tcp);
            match admit(&app, &mut slot, peer, tls.is_some()) {
                Some(permit) => {
                    tcp = slot.take().expect("kept when admitted");
                    Some(permit)
                }
                None => continue,
            }
        };
        let _ = tcp.set_nodelay(true);
        let app = app.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            // Held (not read) until the connection ends.
            let mut _permit = permit;
            let mut client = peer;
            let mut replay = Vec::new();
            if from_proxy {
                match tokio::time::timeout(Duration::from_secs(5), read_proxy_header(&mut tcp))
                    .await
                {
                    Ok(Ok((source, rest))) => {
                        client = source.unwrap_or(peer);
                        replay = rest;
                        let mut slot = Some(tcp);
                        _permit = admit(&app, &mut slot, client, tls.is_some());
                        match slot {
                            Some(kept) if _permit.is_some() => tcp = kept,
                            _ => return,
                        }
                    }
                    Ok(Err(why)) => {
                        tracing::warn!(%peer, why, "refusing connection: bad PROXY protocol header");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%peer, "refusing connection: no PROXY protocol header within 5s");
                        return;
                    }
                }
            }
            if tls.is_none() {
                // Pingora waits, unbounded, for 24 bytes to tell h2c from
                // HTTP/1.1: give them the head deadline here, then replay.
                let deadline = app.admission.config().request_head_timeout;
                let head_by = tokio::time::Instant::now() + deadline;
                match tokio::time::timeout(deadline, read_prefix(&mut tcp, &mut replay)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return,
                    Err(_) => {
                        tracing::debug!(%client, "no request within the head deadline");
                        app.admission.head_timed_out();
                        return;
                    }
                }
                if app.http1 == Http1Engine::Strata && !replay.starts_with(H2_PREFACE_START) {
                    let shutdown = shutdown.clone();
                    super::http1::serve(
                        &app.edge,
                        &app.admission,
                        tcp,
                        replay,
                        client,
                        Some(head_by),
                        shutdown,
                    )
                    .await;
                    return;
                }
            }
            let fd = tcp.as_raw_fd();
            let mut l4 = L4Stream::from(tcp);
            let digest = SocketDigest::from_raw_fd(fd);
            let _ = digest.peer_addr.set(Some(PingoraSocketAddr::Inet(client)));
            l4.set_socket_digest(digest);
            if !replay.is_empty() {
                l4.rewind(&replay);
            }
            let stream: Stream = match tls {
                None => Box::new(WriteBuffered::new(l4)),
                Some(acceptor) => {
                    // One deadline, from accept, covers the TLS handshake and
                    // then the client's first bytes (an HTTP/2 preface, which
                    // Pingora's h2 handshake would wait for forever).
                    let head_by =
                        tokio::time::Instant::now() + app.admission.config().request_head_timeout;
                    match tokio::time::timeout_at(head_by, acceptor.tls_handshake(l4)).await {
                        Ok(Ok(tls)) => {
                            use pingora::protocols::{Ssl, ALPN};
                            let h2 = matches!(tls.selected_alpn_proto(), Some(ALPN::H2));
                            if !h2 && app.http1 == Http1Engine::Strata {
                                let shutdown = shutdown.clone();
                                super::http1::serve(
                                    &app.edge,
                                    &app.admission,
                                    tls,
                                    Vec::new(),
                                    client,
                                    Some(head_by),
                                    shutdown,
                                )
                                .await;
                                return;
                            }
                            let stream = WriteBuffered::new(tls);
                            if h2 {
                                // HTTP/1.1 heads have their own deadline
                                // (`process_new_http`).
                                let admission = app.admission.clone();
                                Box::new(stream.with_first_read_deadline(
                                    H2_PREFACE_LEN,
                                    head_by,
                                    move || admission.head_timed_out(),
                                ))
                            } else {
                                Box::new(stream)
                            }
                        }
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            let mut next = app.process_new(stream, &shutdown).await;
            while let Some(stream) = next {
                next = app.process_new(stream, &shutdown).await;
            }
        });
    }
}
