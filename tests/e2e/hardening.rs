//! Request smuggling over HTTP/1.1 (RFC 9112 §6.1, §3.2): every head whose
//! framing or Host is ambiguous is refused with 400 and its connection
//! closed, so nothing after it on the stream is read as a request.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "smuggling-edge", |_| {}).await;
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
        assert!(reply.starts_with("HTTP/1.1 400"), "{what}: {reply}");
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
    // Pingora refuses five of the eight itself; the edge refuses the rest.
    assert_eq!(refused("unreadable-head"), 5.0, "{metrics}");
    assert_eq!(refused("bad-request"), 3.0, "{metrics}");
    edge.shutdown().await;
}
