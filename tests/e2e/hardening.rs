//! Request smuggling over HTTP/1.1 (RFC 9112 §6.1, §3.2): every head whose
//! framing or Host is ambiguous is refused with 400 and its connection
//! closed, so nothing after it on the stream is read as a request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use strata::frontend::pingora::Http1Engine;

use crate::harness::{metric, start_edge, start_origin};

/// Sends `raw` on a fresh connection and returns everything the edge wrote
/// until it closed (or 5 s passed, which fails the test).
async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(raw).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut reply))
        .await
        .expect("the edge closes the connection after refusing")
        .expect("read");
    String::from_utf8_lossy(&reply).into_owned()
}

/// Responses on the stream: lines that start like a status line.
fn status_lines(reply: &str) -> usize {
    reply
        .split("\r\n")
        .filter(|line| line.starts_with("HTTP/1.1 "))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_http1_heads_get_400_and_a_closed_connection() {
    // Both HTTP/1.1 implementations (`server.http1`) hold the line.
    for engine in [Http1Engine::Strata, Http1Engine::Pingora] {
        ambiguous_heads_refused_by(engine).await;
    }
}

async fn ambiguous_heads_refused_by(engine: Http1Engine) {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "smuggling-edge", |cfg| {
        cfg.server.http1 = engine;
    })
    .await;
    // After each bad head, a second request that a desynchronised parser would
    // answer: its 200 must never appear.
    let smuggled = "GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\n\r\n";
    let cases: [(&str, String); 8] = [
        (
            "Content-Length and Transfer-Encoding",
            format!("GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}", 5),
        ),
        (
            "two Content-Length",
            format!("GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}", smuggled.len()),
        ),
        ("obs-fold", format!("GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n{smuggled}")),
        ("bare CR", format!("GET /obj/a?size=10 HTTP/1.1\r\nHost: a\rX: y\r\n\r\n{smuggled}")),
        ("two Host", format!("GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{smuggled}")),
        ("no Host", format!("GET /obj/a?size=10 HTTP/1.1\r\n\r\n{smuggled}")),
        ("malformed Host", format!("GET /obj/a?size=10 HTTP/1.1\r\nHost: a b\r\n\r\n{smuggled}")),
        (
            "unknown transfer coding",
            format!("GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"),
        ),
    ];
    for (what, raw) in &cases {
        let reply = exchange(edge.addr, raw.as_bytes()).await;
        assert!(
            reply.starts_with("HTTP/1.1 400"),
            "{engine:?}, {what}: {reply}"
        );
        assert_eq!(
            status_lines(&reply),
            1,
            "{what}: a second response: {reply:?}"
        );
    }
    // A well-framed request on the same edge is answered as usual (the
    // check is not a blanket refusal).
    let ok = exchange(
        edge.addr,
        b"GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let metrics = edge.metrics().await;
    let refused = |reason: &str| {
        metric(
            &metrics,
            &format!("strata_edge_errors_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0.0)
    };
    // Every one is counted once. The head parser refuses what it cannot
    // parse, the edge's framing checks the rest: Strata's parser refuses
    // obs-fold and bare CR (its framing checks the other six); Pingora's
    // refuses five of the eight itself.
    let parser = match engine {
        Http1Engine::Strata => 2.0,
        Http1Engine::Pingora => 5.0,
    };
    assert_eq!(refused("unreadable-head"), parser, "{engine:?}: {metrics}");
    assert_eq!(
        refused("bad-request"),
        8.0 - parser,
        "{engine:?}: {metrics}"
    );
    edge.shutdown().await;
}

/// Opens `n` connections that send half a request head and then nothing.
async fn half_heads(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /obj/a HTTP/1.1\r\nHost: a\r\nX-Slow: ")
            .await
            .expect("write");
        open.push(stream);
    }
    open
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_are_cut_at_the_deadline_and_caps_answer_503() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "limits-edge", |config| {
        config.server.limits.request_head_timeout = Duration::from_secs(1);
        config.server.limits.max_connections = 40;
        config.server.limits.max_connections_per_address = 30;
    })
    .await;

    // Per address: 30 unfinished heads hold every slot 127.0.0.1 has: 20
    // half heads, 5 connections that send 10 bytes (less than Pingora needs
    // to tell h2c from HTTP/1.1) and 5 that send nothing at all.
    let mut slow = half_heads(edge.addr, 20).await;
    for bytes in [&b"GET /obj/a"[..], b""] {
        for _ in 0..5 {
            let mut stream = TcpStream::connect(edge.addr).await.expect("connect");
            stream.write_all(bytes).await.expect("write");
            slow.push(stream);
        }
    }
    let refused = exchange(edge.addr, b"GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Retry-After: 1"), "{refused}");

    // Every one of them is closed by the edge once the head deadline passes
    // (the 5 s bound only stops a broken edge from hanging the test).
    for stream in &mut slow {
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest))
            .await
            .expect("the edge closes a connection whose head is late")
            .expect("read");
    }
    // Slots are back: a real request gets through.
    let ok = exchange(
        edge.addr,
        b"GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");

    // A slot is released when the connection's task ends, just after the
    // socket closes: poll (bounded) until every one is back, then assert.
    let mut metrics = edge.metrics().await;
    for _ in 0..50 {
        if metric(&metrics, "strata_edge_connections_open") == Some(0.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        metrics = edge.metrics().await;
    }
    assert_eq!(
        metric(&metrics, "strata_edge_request_head_timeouts_total"),
        Some(30.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "strata_edge_connections_refused_total{reason=\"max_connections_per_address\"}"
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "strata_edge_connections_open"),
        Some(0.0),
        "every slot freed: {metrics}"
    );
    edge.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_cap_answers_503_and_frees_slots_on_close() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "cap-edge", |config| {
        config.server.limits.max_connections = 10;
    })
    .await;
    let held = half_heads(edge.addr, 10).await;
    let refused = exchange(edge.addr, b"GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    drop(held);
    // The edge sees the closes asynchronously: poll until a request passes.
    let mut tries = 0;
    loop {
        let reply = exchange(
            edge.addr,
            b"GET /obj/a?size=10 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        )
        .await;
        if reply.starts_with("HTTP/1.1 200") {
            break;
        }
        tries += 1;
        assert!(tries < 50, "slots never came back: {reply}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = edge.metrics().await;
    assert!(
        metric(
            &metrics,
            "strata_edge_connections_refused_total{reason=\"max_connections\"}"
        ) >= Some(1.0),
        "{metrics}"
    );
    edge.shutdown().await;
}

/// A Range on an empty object (the edge_request fuzz target's first find: the
/// window `0..0` made `end - 1` underflow, a panic in a debug build and a
/// `bytes 0-18446744073709551615/0` header in a release one): the whole,
/// empty body with 200, on a miss and on a hit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_on_an_empty_object_gets_the_empty_body() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "empty-range-edge", |_| {}).await;
    for round in ["miss", "hit"] {
        let reply = exchange(
            edge.addr,
            b"GET /obj/empty?size=0 HTTP/1.1\r\nHost: a\r\nRange: bytes=-10\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{round}: {reply}");
        assert!(
            reply.to_ascii_lowercase().contains("content-length: 0\r\n"),
            "{round}: {reply}"
        );
        assert!(
            !reply.to_ascii_lowercase().contains("\r\ncontent-range:"),
            "{round}: {reply}"
        );
    }
    edge.shutdown().await;
}

/// A TLS client that negotiates HTTP/2 and then sends nothing, not even the
/// connection preface: the head deadline, counted from accept, closes it
/// (Pingora's h2 handshake would wait for the preface forever) and its slot
/// comes back. An HTTP/2 client that does send its preface is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_over_tls_connection_without_a_preface_is_closed_at_the_head_deadline() {
    use std::sync::Arc;

    use tokio_rustls::rustls;

    let origin = start_origin().await;
    let cert = crate::harness::TestCert::localhost();
    let certs = vec![cert.config.clone()];
    let edge = start_edge(&[origin.url()], "h2-preface-edge", |config| {
        config.server.certificates = certs;
        config.server.limits.request_head_timeout = Duration::from_secs(1);
    })
    .await;
    let tls_addr = edge.tls.expect("tls listener");

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).expect("root");
    let mut client_config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    client_config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(tls_addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut silent = connector.connect(name, tcp).await.expect("TLS handshake");
    assert_eq!(
        silent.get_ref().1.alpn_protocol(),
        Some(&b"h2"[..]),
        "the edge chose HTTP/2"
    );
    // The edge writes its SETTINGS, then must give up on us (the 10 s
    // bound only stops a broken edge from hanging the test).
    let mut seen = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut seen)).await;
    assert!(
        closed.is_ok(),
        "the edge still holds an HTTP/2 connection that never sent its preface"
    );

    // A real HTTP/2 client on the same listener is served.
    let response = cert
        .https_client(true)
        .get(format!(
            "https://localhost:{}/obj/h2.m4s?size=100",
            tls_addr.port()
        ))
        .send()
        .await
        .expect("h2 request");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);

    let metrics = edge.metrics().await;
    assert_eq!(
        metric(&metrics, "strata_edge_request_head_timeouts_total"),
        Some(1.0),
        "{metrics}"
    );
    edge.shutdown().await;
}
