use std::cell::Cell;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use h3::quic::{BidiStream as _, Connection as _, SendStream as _};
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use super::*;

thread_local! {
    /// Bytes that `SendStream::enqueue` copied on this thread; a
    /// `#[tokio::test]` runs its whole runtime on the test's own thread.
    pub(super) static COPIED: Cell<usize> = const { Cell::new(0) };
}

/// What `WriteBuf` looks like to the adapter: header bytes, then the payload.
fn frame(header: &'static [u8], payload: impl Buf) -> impl Buf {
    Bytes::from_static(header).chain(payload)
}

fn flatten(pieces: &[Bytes]) -> Vec<u8> {
    pieces.iter().flat_map(|p| p.iter().copied()).collect()
}

#[test]
fn the_payload_is_queued_by_reference_and_only_the_header_copied() {
    let payload = Bytes::from(vec![7u8; 1 << 20]);
    let mut queued = Vec::new();
    let copied = wire_pieces(
        frame(
            &[0x00, 0x80, 0x10, 0x00, 0x00],
            BodyChunk::from(payload.clone()),
        ),
        &mut queued,
    );
    assert_eq!(copied, 5);
    assert_eq!(queued.len(), 2);
    assert_eq!(&queued[0][..], &[0x00, 0x80, 0x10, 0x00, 0x00]);
    assert_eq!(queued[1].as_ptr(), payload.as_ptr(), "payload was copied");
    assert_eq!(queued[1].len(), payload.len());
}

#[test]
fn a_partly_consumed_payload_lends_only_what_is_left() {
    let payload = Bytes::from_static(b"0123456789");
    let mut chunk = BodyChunk::from(payload.clone());
    chunk.advance(4);
    let mut queued = Vec::new();
    let copied = wire_pieces(frame(b"\x00\x06", chunk), &mut queued);
    assert_eq!(copied, 2);
    assert_eq!(flatten(&queued), b"\x00\x06456789");
    assert_eq!(queued[1].as_ptr(), payload[4..].as_ptr());
}

#[test]
fn payloads_that_are_not_body_chunks_are_copied() {
    // HEADERS blocks reach the adapter as plain `Bytes` inside the WriteBuf.
    let mut queued = Vec::new();
    let copied = wire_pieces(
        frame(b"\x01\x05", Bytes::from_static(b"block")),
        &mut queued,
    );
    assert_eq!(copied, 7);
    assert_eq!(flatten(&queued), b"\x01\x05block");
}

#[test]
fn a_body_chunk_lends_nothing_when_nobody_listens() {
    let chunk = BodyChunk::from(Bytes::from_static(b"abc"));
    assert_eq!(chunk.chunk(), b"abc");
    assert!(LENDING.with(|slot| slot.lent.take()).is_none());
    let mut chunk = chunk;
    assert_eq!(&chunk.copy_to_bytes(2)[..], b"ab");
    assert_eq!(chunk.remaining(), 1);
}

/// A connected pair over loopback: (server side, client side). The client
/// grants at most `stream_window` bytes per stream, so larger writes block.
async fn connected(
    stream_window: u32,
) -> (quinn::Connection, quinn::Connection, [quinn::Endpoint; 2]) {
    crate::install_crypto_provider();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let cert_der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key.into())
        .expect("server TLS");
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = QuicServerConfig::try_from(tls).expect("server QUIC TLS");
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let server =
        quinn::Endpoint::server(quinn::ServerConfig::with_crypto(Arc::new(crypto)), loopback)
            .expect("server endpoint");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let mut tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = QuicClientConfig::try_from(tls).expect("client QUIC TLS");
    let mut client_config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(stream_window.into())
        .receive_window((stream_window * 4).into());
    client_config.transport_config(Arc::new(transport));
    let client = quinn::Endpoint::client(loopback).expect("client endpoint");
    let addr = server.local_addr().expect("server address");

    let (server_side, client_side) = tokio::join!(
        async {
            let incoming = server.accept().await.expect("incoming");
            incoming.await.expect("server handshake")
        },
        async {
            let connecting = client
                .connect_with(client_config, addr, "localhost")
                .expect("connect");
            connecting.await.expect("client handshake")
        }
    );
    (server_side, client_side, [server, client])
}

/// Hand what is queued to quinn; how many times flow control made it wait.
async fn flush(stream: &mut SendStream) -> usize {
    let mut blocked = 0;
    poll_fn(|cx| {
        let ready = stream.poll_ready(cx);
        blocked += usize::from(ready.is_pending());
        ready
    })
    .await
    .expect("written");
    blocked
}

/// The server writes `frames` (as h3 would: queue one, wait until quinn has
/// it, queue the next) on a stream the client opened; returns what the client
/// read and how often the server had to wait.
async fn send_frames(
    stream_window: u32,
    frames: Vec<(&'static [u8], BodyChunk)>,
) -> (Vec<u8>, usize) {
    let (server, client, _endpoints) = connected(stream_window).await;
    let (mut request, mut response) = client.open_bi().await.expect("open");
    // A stream exists for the peer once it carries data.
    request.write_all(b"GET").await.expect("request");
    request.finish().expect("finish");

    let mut conn = Connection::new(server);
    let accepted = poll_fn(|cx| conn.poll_accept_bidi(cx))
        .await
        .expect("accept");
    let (mut send, _recv) = accepted.split();
    let write = async move {
        let mut blocked = 0;
        for (header, payload) in frames {
            send.enqueue(frame(header, payload));
            blocked += flush(&mut send).await;
        }
        poll_fn(|cx| send.poll_finish(cx)).await.expect("finish");
        blocked
    };
    let read = async { response.read_to_end(usize::MAX).await.expect("response") };
    let (blocked, received) = tokio::join!(write, read);
    (received, blocked)
}

#[tokio::test]
async fn a_large_body_waits_for_flow_control_and_arrives_whole() {
    let payload: Bytes = (0..(1u32 << 20))
        .map(|i| (i % 251) as u8)
        .collect::<Vec<_>>()
        .into();
    let (received, blocked) = send_frames(
        16 * 1024,
        vec![(b"\x00\x80\x10\x00\x00", payload.clone().into())],
    )
    .await;
    assert!(
        blocked > 0,
        "a 1 MiB write into a 16 KiB window never waited"
    );
    assert_eq!(&received[..5], b"\x00\x80\x10\x00\x00");
    assert!(received[5..] == payload[..], "body differs");
}

#[tokio::test]
async fn many_small_chunks_then_one_large_arrive_in_order() {
    let mut frames = Vec::new();
    let mut expected = BytesMut::new();
    for i in 0..500u32 {
        let payload = Bytes::from(vec![(i % 256) as u8; 100]);
        expected.extend_from_slice(b"\x00\x40\x64");
        expected.extend_from_slice(&payload);
        frames.push((&b"\x00\x40\x64"[..], payload.into()));
    }
    let large: Bytes = (0..(256u32 << 10))
        .map(|i| (i % 13) as u8)
        .collect::<Vec<_>>()
        .into();
    expected.extend_from_slice(b"\x00\x80\x04\x00\x00");
    expected.extend_from_slice(&large);
    frames.push((&b"\x00\x80\x04\x00\x00"[..], large.into()));
    let (received, _) = send_frames(8 * 1024, frames).await;
    assert_eq!(received.len(), expected.len());
    assert!(received == expected[..], "body differs");
}

#[tokio::test]
async fn h3_response_bodies_reach_quinn_without_a_copy() {
    let (server, client, _endpoints) = connected(1 << 20).await;
    COPIED.with(|c| c.set(0));
    let body: Vec<Bytes> = (0..3u8).map(|i| Bytes::from(vec![i; 1 << 20])).collect();
    let expected: Vec<u8> = body.iter().flat_map(|b| b.iter().copied()).collect();

    let serve = async {
        let mut h3 = h3::server::builder()
            .build::<_, BodyChunk>(Connection::new(server))
            .await
            .expect("h3 server");
        let resolver = h3.accept().await.expect("accept").expect("a request");
        let (_request, mut stream) = resolver.resolve_request().await.expect("request");
        stream
            .send_response(http::Response::new(()))
            .await
            .expect("response head");
        for chunk in body {
            stream.send_data(chunk.into()).await.expect("body");
        }
        stream.finish().await.expect("finish");
        // Keep the connection until the client has read everything.
        h3
    };
    let fetch = async {
        let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(client))
            .await
            .expect("h3 client");
        tokio::spawn(async move { poll_fn(|cx| driver.poll_close(cx)).await });
        let request = http::Request::get("https://localhost/seg.m4s")
            .body(())
            .expect("request");
        let mut stream = send.send_request(request).await.expect("send");
        stream.finish().await.expect("finish");
        let response = stream.recv_response().await.expect("response");
        let mut received = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await.expect("body") {
            while chunk.has_remaining() {
                let piece = chunk.chunk();
                received.extend_from_slice(piece);
                let n = piece.len();
                chunk.advance(n);
            }
        }
        (response.status(), received)
    };
    let (_h3, (status, received)) = tokio::join!(serve, fetch);
    assert_eq!(status, http::StatusCode::OK);
    assert!(received == expected, "body differs");
    let copied = COPIED.with(Cell::get);
    // The HEADERS frame and the frame headers, never the 3 MiB of body.
    assert!(copied > 0 && copied < 4096, "copied {copied} bytes");
}

#[test]
fn the_first_in_line_is_the_earliest_stream_with_bytes_waiting() {
    let order = SendOrder::default();
    let (a, b, c) = (order.join(), order.join(), order.join());
    assert!(a < b && b < c);
    // Nobody waits: everyone may hand quinn everything.
    assert!(order.is_first(b));
    order.wait(c);
    order.wait(b);
    assert!(order.is_first(b) && !order.is_first(c));
    order.leave(b);
    assert!(order.is_first(c));
    // A stream that comes back keeps its place ahead of later ones.
    order.wait(a);
    assert!(order.is_first(a) && !order.is_first(c));
    assert!(priority(a) > priority(b) && priority(b) > priority(c));
    assert_eq!(priority(u64::MAX), -i32::MAX);
}

#[test]
fn a_share_is_a_view_of_the_front_and_dropping_it_keeps_the_rest() {
    let queued = vec![
        Bytes::from_static(b"hdr"),
        Bytes::from_static(b"0123456789"),
    ];
    let share = front_share(&queued, 6);
    assert_eq!(flatten(&share), b"hdr012");
    assert_eq!(
        share[1].as_ptr(),
        queued[1].as_ptr(),
        "the share was copied"
    );
    let mut rest = queued.clone();
    drop_front(&mut rest, 6);
    assert_eq!(flatten(&rest), b"3456789");
    drop_front(&mut rest, 7);
    assert!(rest.is_empty());
    let mut rest = queued;
    drop_front(&mut rest, 3);
    assert_eq!(flatten(&rest), b"0123456789");
}

/// Two requests on one connection; the server answers both with `size`
/// bytes, the earlier one first in line. Returns the two streams' server
/// halves' write tasks and the client's receiving halves.
async fn two_responses(
    stream_window: u32,
    size: usize,
) -> (
    [quinn::RecvStream; 2],
    tokio::task::JoinHandle<()>,
    [quinn::Endpoint; 2],
    quinn::Connection,
) {
    let (server, client, endpoints) = connected(stream_window).await;
    let mut received = Vec::new();
    for _ in 0..2 {
        let (mut request, response) = client.open_bi().await.expect("open");
        request.write_all(b"GET").await.expect("request");
        request.finish().expect("finish");
        received.push(response);
    }
    let mut conn = Connection::new(server);
    let mut sends = Vec::new();
    for _ in 0..2 {
        let accepted = poll_fn(|cx| conn.poll_accept_bidi(cx))
            .await
            .expect("accept");
        sends.push(accepted.split().0);
    }
    let body = Bytes::from(vec![3u8; size]);
    let writer = tokio::spawn(async move {
        let writes = sends.into_iter().map(|mut send| {
            let body = body.clone();
            async move {
                // The head, then the body, as h3 writes them.
                send.enqueue(frame(b"\x01\x01", Bytes::from_static(b"h")));
                flush(&mut send).await;
                send.enqueue(frame(b"\x00", BodyChunk::from(body)));
                flush(&mut send).await;
                poll_fn(|cx| send.poll_finish(cx)).await.expect("finish");
                // Keep the stream (and its connection) until the client read it.
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        });
        futures::future::join_all(writes).await;
    });
    let received: [quinn::RecvStream; 2] = received.try_into().expect("two streams");
    (received, writer, endpoints, client)
}

#[tokio::test]
async fn a_stream_its_client_stopped_reading_does_not_hold_back_the_next() {
    // The client never reads the first response, whose 1 MiB cannot fit its
    // 64 KiB stream window; the second must still arrive whole.
    let ([_unread, mut second], writer, _endpoints, _client) =
        two_responses(64 * 1024, 1 << 20).await;
    let read = tokio::time::timeout(Duration::from_secs(20), second.read_to_end(usize::MAX))
        .await
        .expect("the second response waited for the unread first one")
        .expect("second response");
    assert_eq!(read.len(), 3 + 1 + (1 << 20));
    writer.abort();
}

#[tokio::test]
async fn responses_on_one_connection_finish_in_the_order_they_were_asked() {
    let ([first, second], writer, _endpoints, _client) = two_responses(8 << 20, 4 << 20).await;
    let finished = Mutex::new(Vec::new());
    let read = |mut stream: quinn::RecvStream, name: &'static str| {
        let finished = &finished;
        async move {
            let body = stream.read_to_end(usize::MAX).await.expect("response");
            finished.lock().expect("lock").push(name);
            body.len()
        }
    };
    let (a, b) = tokio::join!(read(first, "first"), read(second, "second"));
    assert_eq!((a, b), (4 + (4 << 20), 4 + (4 << 20)));
    assert_eq!(*finished.lock().expect("lock"), ["first", "second"]);
    writer.abort();
}
