//! Strata's own HTTP/1.1 connection loop (`server.http1 = "strata"`).
//!
//! Pingora's HTTP/1.1 session costs about 14,000 instructions per request
//! on a 1 KiB cache hit (reading and validating the head, building its own
//! request and response header types, serialising them): as much as the
//! rest of the edge, and most of what separates a hit from nginx's
//! (`benches/hit_instructions.sh`). This loop reads a head with `httparse`
//! straight into `http::request::Parts`, hands it to the same core, and
//! writes the response head in one pass; HTTP/2 stays on Pingora.
//!
//! What it refuses, like the Pingora path (and `super::h1`'s checks): an
//! unparsable head (obs-fold, bare CR, bad names or values), a head over
//! [`MAX_HEAD`], more than one `Content-Length`, a `Transfer-Encoding`
//! other than `chunked`, both framings at once, a missing, doubled or
//! malformed `Host` — with 400 (431 for size) and a closed connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::edge::Edge;
use crate::error::EdgeError;
use crate::frontend::admission::Admission;
use crate::frontend::write_buffer::{WriteBuffered, WRITE_BUFFER};
use crate::frontend::ResponseSink;
use crate::request::Protocol;

/// Largest request head read before answering 431 (the core refuses heads
/// over [`crate::request::MAX_HEADER_BYTES`] itself, with the same status).
pub const MAX_HEAD: usize = 64 * 1024;

/// Header fields a head may carry.
const MAX_FIELDS: usize = 128;

/// Largest request body read (licence requests are small), as on Pingora.
const MAX_BODY: usize = 64 * 1024;

/// Why a connection stops reading requests.
enum Stop {
    /// Closed, timed out, or an answer was already sent.
    Quietly,
    /// Answer with this status, then close.
    Refuse(StatusCode, &'static str),
}

/// Serve HTTP/1.x requests on `stream` until the client or the node is done;
/// `read` holds bytes already read from it (a PROXY header's tail, the
/// bytes read to tell HTTP/1.1 from an h2c preface).
pub async fn serve<S>(
    edge: &Arc<Edge>,
    admission: &Admission,
    stream: S,
    read: Vec<u8>,
    client: SocketAddr,
    protocol_deadline: Option<Instant>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let mut stream = WriteBuffered::new(stream);
    let mut buf = BytesMut::from(&read[..]);
    buf.reserve(4096);
    let mut kept_alive = false;
    let mut first_due = protocol_deadline;
    loop {
        let due = first_due
            .take()
            .unwrap_or_else(|| Instant::now() + admission.head_deadline(kept_alive));
        let head = tokio::select! {
            head = read_head(&mut stream, &mut buf, due) => head,
            () = draining(kept_alive, &mut shutdown) => {
                tracing::debug!("idle kept-alive connection closed: draining");
                return;
            }
        };
        let (parts, head_len) = match head {
            Ok(Some(head)) => head,
            Ok(None) => return,
            Err(Stop::Quietly) => {
                admission.head_timed_out();
                return;
            }
            Err(Stop::Refuse(status, why)) => {
                tracing::debug!(%client, why, "unreadable request");
                edge.count_unreadable_head(Protocol::Http1);
                refuse(&mut stream, status).await;
                return;
            }
        };
        let raw_head = buf.split_to(head_len);
        let started = Instant::now();
        let mut keep_alive = wants_keep_alive(&parts) && !*shutdown.borrow();
        // A body left unread (refused, or its framing is bad) is drained
        // after the answer before the socket closes (see [`linger`]).
        let mut unread_body = false;
        let framing = super::h1::framing_error(&parts, &raw_head)
            .or_else(|| body_framing(&parts.headers).err());
        let (response, log) = match framing {
            Some(why) => {
                keep_alive = false;
                unread_body = true;
                edge.refuse(&parts, EdgeError::BadRequest(why), client, Protocol::Http1)
            }
            None => match read_body(&mut stream, &mut buf, &parts, due_now(admission)).await {
                Err(e) => {
                    keep_alive = false;
                    unread_body = true;
                    edge.refuse(&parts, e, client, Protocol::Http1)
                }
                Ok(body) if crate::request::passes_through(&parts.method) => {
                    edge.handle_with_body(&parts, body, client, Protocol::Http1)
                        .await
                }
                Ok(_) => edge.handle(&parts, client, Protocol::Http1).await,
            },
        };
        let mut sink = Http1Sink {
            stream: &mut stream,
            head_only: parts.method == Method::HEAD,
            http10: parts.version == Version::HTTP_10,
            keep_alive,
            chunked: false,
            sized: false,
        };
        let clean = crate::frontend::deliver(edge, &mut sink, response, &log, started).await;
        if !clean || !sink.keep_alive {
            let _ = stream.shutdown().await;
            if unread_body {
                linger(&mut stream).await;
            }
            return;
        }
        kept_alive = true;
    }
}

/// A fresh deadline for reading a request body.
fn due_now(admission: &crate::frontend::admission::Admission) -> Instant {
    Instant::now() + admission.head_deadline(false)
}

/// Resolves once the node drains and an idle kept-alive connection has had
/// its allowance ([`super::DRAIN_IDLE`]); never for a fresh one.
async fn draining(kept_alive: bool, shutdown: &mut watch::Receiver<bool>) {
    if kept_alive {
        let _ = shutdown.wait_for(|s| *s).await;
        tokio::time::sleep(super::DRAIN_IDLE).await;
    } else {
        std::future::pending::<()>().await;
    }
}

/// Reads until `buf` holds a whole head, and parses it: `Ok(None)` when the
/// client closed before sending anything.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    due: Instant,
) -> Result<Option<(http::request::Parts, usize)>, Stop> {
    loop {
        if !buf.is_empty() {
            if let Some(parsed) = parse_head(buf)? {
                return Ok(Some(parsed));
            }
            if buf.len() >= MAX_HEAD {
                return Err(Stop::Refuse(
                    StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    "request head too large",
                ));
            }
        }
        match tokio::time::timeout_at(due, stream.read_buf(buf)).await {
            Err(_) => return Err(Stop::Quietly),
            // Closed (or reset), with or without part of a head.
            Ok(Ok(0) | Err(_)) => return Ok(None),
            Ok(Ok(_)) => {}
        }
    }
}

/// A complete head as `Parts` and its length, `None` if more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(http::request::Parts, usize)>, Stop> {
    let bad = |why| Stop::Refuse(StatusCode::BAD_REQUEST, why);
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut fields);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Stop::Refuse(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "too many header fields",
            ))
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    let method = Method::from_bytes(request.method.unwrap_or("").as_bytes())
        .map_err(|_| bad("malformed method"))?;
    let uri: http::Uri = request
        .path
        .unwrap_or("")
        .parse()
        .map_err(|_| bad("malformed request target"))?;
    let version = match request.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut headers = HeaderMap::with_capacity(request.headers.len() + 12);
    for field in request.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| bad("malformed header name"))?;
        let value =
            HeaderValue::from_bytes(field.value).map_err(|_| bad("malformed header value"))?;
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some((parts, len)))
}

/// How the request body is framed: `Ok(Some(len))`, `Ok(None)` for chunked,
/// or why the framing is refused (one `Content-Length`, and `chunked` as the
/// only transfer coding, as Pingora accepts).
fn body_framing(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (codings.next(), codings.next()) {
        (None, _) => {}
        (Some(coding), None) if coding.as_bytes().eq_ignore_ascii_case(b"chunked") => {
            return Ok(None)
        }
        _ => return Err("unsupported Transfer-Encoding"),
    }
    match (lengths.next(), lengths.next()) {
        (None, _) => Ok(Some(0)),
        (Some(len), None) => std::str::from_utf8(len.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or("malformed Content-Length"),
        _ => Err("more than one Content-Length"),
    }
}

/// Reads the request body (at most [`MAX_BODY`]), answering
/// `Expect: 100-continue` first.
async fn read_body<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut WriteBuffered<S>,
    buf: &mut BytesMut,
    parts: &http::request::Parts,
    due: Instant,
) -> Result<Bytes, EdgeError> {
    let framing = body_framing(&parts.headers).map_err(EdgeError::BadRequest)?;
    if framing == Some(0) {
        return Ok(Bytes::new());
    }
    let expects = parts
        .headers
        .get(header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if let Some(len) = framing {
        if len > MAX_BODY as u64 {
            return Err(EdgeError::BodyTooLarge(MAX_BODY));
        }
    }
    if expects && parts.version == Version::HTTP_11 {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        let _ = stream.flush().await;
    }
    let unreadable = || EdgeError::BadRequest("unreadable request body");
    let read = tokio::time::timeout_at(due, async {
        match framing {
            Some(len) => {
                fill_to(stream, buf, len as usize).await?;
                Ok(buf.split_to(len as usize).freeze())
            }
            None => read_chunked(stream, buf).await,
        }
    });
    match read.await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(e)) => Err(e.unwrap_or_else(unreadable)),
        Err(_) => Err(unreadable()),
    }
}

/// Reads until `buf` holds `len` bytes; `Err(None)` if the client stops.
async fn fill_to<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    len: usize,
) -> Result<(), Option<EdgeError>> {
    while buf.len() < len {
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Reads one CRLF-terminated line (without it) off `buf`.
async fn read_line<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Bytes, Option<EdgeError>> {
    loop {
        if let Some(at) = buf.windows(2).position(|w| w == b"\r\n") {
            let line = buf.split_to(at).freeze();
            buf.advance(2);
            return Ok(line);
        }
        if buf.len() > 4096 {
            return Err(Some(EdgeError::BadRequest("chunk line too long")));
        }
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return Err(None),
            Ok(_) => {}
        }
    }
}

/// A chunked body (RFC 9112 §7.1), trailers read and dropped.
async fn read_chunked<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Bytes, Option<EdgeError>> {
    let bad = || Some(EdgeError::BadRequest("malformed chunked body"));
    let mut body = BytesMut::new();
    loop {
        let line = read_line(stream, buf).await?;
        let size = line.split(|&b| b == b';').next().unwrap_or(&[]);
        let size = std::str::from_utf8(size)
            .ok()
            .map(str::trim)
            .filter(|s| !s.is_empty() && s.len() <= 8)
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or_else(bad)?;
        if size == 0 {
            while !read_line(stream, buf).await?.is_empty() {}
            return Ok(body.freeze());
        }
        if body.len() + size > MAX_BODY {
            return Err(Some(EdgeError::BodyTooLarge(MAX_BODY)));
        }
        fill_to(stream, buf, size + 2).await?;
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return Err(bad());
        }
        buf.advance(size + 2);
    }
}

/// Whether the client lets the connection carry another request.
fn wants_keep_alive(parts: &http::request::Parts) -> bool {
    let connection = |token: &str| {
        parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match parts.version {
        Version::HTTP_11 => !connection("close"),
        _ => connection("keep-alive"),
    }
}

/// How long, and how many bytes, a connection closing with a request body
/// unread keeps reading (and dropping) what the client still sends.
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(2);
const LINGER_BYTES: usize = 1024 * 1024;

/// Lingering close (as nginx's `lingering_close`): after the answer and our
/// FIN, read and drop what the client is still sending until it closes, for
/// at most [`LINGER_TIME`] and [`LINGER_BYTES`]. Closing a socket with
/// unread bytes in its receive buffer sends a reset, which can destroy the
/// answer (a `413` to a too-large POST) before the client reads it: the
/// client, still writing its body, sees "broken pipe" instead of the status.
async fn linger<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut scratch = [0u8; 16 * 1024];
    let mut dropped = 0;
    let until = Instant::now() + LINGER_TIME;
    while dropped < LINGER_BYTES {
        match tokio::time::timeout_at(until, stream.read(&mut scratch)).await {
            Ok(Ok(n)) if n > 0 => dropped += n,
            _ => return,
        }
    }
}

/// A bare error answer for a head that cannot be handed to the core.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut WriteBuffered<S>, status: StatusCode) {
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// HTTP/1.x on Strata's own loop.
struct Http1Sink<'a, S> {
    stream: &'a mut WriteBuffered<S>,
    head_only: bool,
    http10: bool,
    /// Whether the connection carries another request after this one.
    keep_alive: bool,
    /// The body goes out in chunks (no length known up front).
    chunked: bool,
    /// The head announced the body's length.
    sized: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> ResponseSink for Http1Sink<'_, S> {
    const FIRST_PIECE: Option<usize> = Some(WRITE_BUFFER);

    async fn send_head(&mut self, status: StatusCode, headers: HeaderMap) -> bool {
        let bodiless = self.head_only
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let sized = headers.contains_key(header::CONTENT_LENGTH);
        self.sized = sized;
        if !bodiless && !sized {
            if self.http10 {
                // Only the end of the connection can end this body.
                self.keep_alive = false;
            } else {
                self.chunked = true;
            }
        }
        let mut head = Vec::with_capacity(256 + headers.len() * 48);
        head.extend_from_slice(b"HTTP/1.1 ");
        head.extend_from_slice(status.as_str().as_bytes());
        head.push(b' ');
        head.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        head.extend_from_slice(b"\r\n");
        for (name, value) in &headers {
            if name == header::CONNECTION || name == header::TRANSFER_ENCODING {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if self.chunked {
            head.extend_from_slice(b"transfer-encoding: chunked\r\n");
        }
        head.extend_from_slice(if self.keep_alive {
            b"connection: keep-alive\r\n\r\n"
        } else {
            b"connection: close\r\n\r\n"
        });
        let written = self.stream.write_all(&head).await.is_ok();
        if written && bodiless {
            return self.stream.flush().await.is_ok();
        }
        written
    }

    async fn send_chunk(&mut self, bytes: Bytes) -> bool {
        if self.head_only || bytes.is_empty() {
            return true;
        }
        if self.chunked {
            let size = format!("{:x}\r\n", bytes.len());
            if self.stream.write_all(size.as_bytes()).await.is_err() {
                return false;
            }
        }
        if self.stream.write_all(&bytes).await.is_err() {
            return false;
        }
        if self.chunked && self.stream.write_all(b"\r\n").await.is_err() {
            return false;
        }
        // A body of unknown length is produced as it is sent (an LL-DASH
        // segment being cut, a fill without Content-Length): each piece goes
        // out now, not when 16 KiB have gathered. A sized body may gather.
        self.sized || self.stream.flush().await.is_ok()
    }

    async fn abort(&mut self, _cut: bool, _streamed: bool) {
        // The client must not take a cut body for a whole one: close without
        // the length or the last chunk.
        self.keep_alive = false;
        let _ = self.stream.shutdown().await;
    }

    async fn finish(&mut self) -> bool {
        if self.chunked && !self.head_only && self.stream.write_all(b"0\r\n\r\n").await.is_err() {
            return false;
        }
        self.stream.flush().await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(head: &str) -> Result<Option<(http::request::Parts, usize)>, &'static str> {
        parse_head(head.as_bytes()).map_err(|stop| match stop {
            Stop::Refuse(_, why) => why,
            Stop::Quietly => "quiet",
        })
    }

    #[test]
    fn heads_parse_into_parts() {
        let head =
            "GET /live/a.m3u8?x=1 HTTP/1.1\r\nHost: edge\r\nX-Two: 1\r\nx-two: 2\r\n\r\nNEXT";
        let (parts, len) = parse(head).expect("parsed").expect("complete");
        assert_eq!(len, head.len() - 4);
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri.path(), "/live/a.m3u8");
        assert_eq!(parts.uri.query(), Some("x=1"));
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers.get_all("x-two").iter().count(), 2);
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\n")
            .expect("partial")
            .is_none());
    }

    #[test]
    fn unsafe_heads_are_refused() {
        for head in [
            "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(parse(head).is_err(), "{head:?}");
        }
    }

    #[test]
    fn body_framing_is_unambiguous() {
        let headers = |fields: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in fields {
                map.append(
                    HeaderName::from_bytes(name.as_bytes()).expect("name"),
                    HeaderValue::from_str(value).expect("value"),
                );
            }
            map
        };
        assert_eq!(body_framing(&headers(&[])), Ok(Some(0)));
        assert_eq!(
            body_framing(&headers(&[("content-length", "12")])),
            Ok(Some(12))
        );
        assert_eq!(
            body_framing(&headers(&[("transfer-encoding", "Chunked")])),
            Ok(None)
        );
        for bad in [
            vec![("content-length", "1"), ("content-length", "1")],
            vec![("content-length", "+1")],
            vec![("content-length", "1, 1")],
            vec![("transfer-encoding", "chunked, identity")],
            vec![("transfer-encoding", "gzip")],
        ] {
            assert!(body_framing(&headers(&bad)).is_err(), "{bad:?}");
        }
    }

    /// A body of unknown length reaches the client piece by piece, as it
    /// is produced (LL-DASH streams a segment while it is cut), not when
    /// the write buffer fills or the body ends.
    #[tokio::test]
    async fn an_unsized_body_goes_out_piece_by_piece() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let mut stream = WriteBuffered::new(server);
        let mut sink = Http1Sink {
            stream: &mut stream,
            head_only: false,
            http10: false,
            keep_alive: true,
            chunked: false,
            sized: false,
        };
        assert!(sink.send_head(StatusCode::OK, HeaderMap::new()).await);
        assert!(sink.send_chunk(Bytes::from_static(b"moof")).await);
        let mut seen = Vec::new();
        while !seen.ends_with(b"4\r\nmoof\r\n") {
            let mut piece = [0u8; 256];
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(5), client.read(&mut piece))
                    .await
                    .expect("the first piece arrives before the body ends")
                    .expect("read");
            assert!(n > 0, "closed early");
            seen.extend_from_slice(&piece[..n]);
        }
        let head = String::from_utf8_lossy(&seen);
        assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
        assert!(sink.finish().await);
    }

    #[tokio::test]
    async fn chunked_bodies_are_read_whole_and_bounded() {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client
            .write_all(b"4;ext=1\r\nabcd\r\n2\r\nef\r\n0\r\nTrailer: x\r\n\r\nNEXT")
            .await
            .expect("write");
        let mut stream = WriteBuffered::new(server);
        let mut buf = BytesMut::new();
        let Ok(body) = read_chunked(&mut stream, &mut buf).await else {
            panic!("a well-formed chunked body is read");
        };
        assert_eq!(&body[..], b"abcdef");
        assert_eq!(&buf[..], b"NEXT");

        let mut buf = BytesMut::from(&b"10001\r\n"[..]);
        assert!(matches!(
            read_chunked(&mut stream, &mut buf).await,
            Err(Some(EdgeError::BodyTooLarge(_)))
        ));
    }
}
