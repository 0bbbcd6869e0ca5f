//! HTTP/3 through the edge: the same cache as h1/h2, Alt-Svc, limits, 0-RTT,
//! graceful shutdown, and an independent client (aioquic).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Buf;

use crate::harness::{content, metric, start_tls_edge, TestCert, TestEdge};
use crate::quic_client::{client_config, endpoint, request, H3Connection};

fn quic_addr(edge: &TestEdge) -> SocketAddr {
    edge.quic.expect("edge serves HTTP/3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_serves_misses_hits_ranges_head_and_404_from_the_edge_cache() {
    let (origin, edge, cert) = start_tls_edge("h3-edge", |_| {}).await;
    let endpoint = endpoint(client_config(&cert.der, false));
    let h3 = H3Connection::connect(&endpoint, quic_addr(&edge)).await;
    let path = "/obj/h3.m4s?size=300000";
    let expected = content("h3.m4s", 300_000);

    let miss = h3.get(path).await;
    assert_eq!(miss.status(), 200);
    assert_eq!(miss.body, expected);
    assert!(
        miss.header("cache-status").contains("fwd=miss"),
        "{}",
        miss.header("cache-status")
    );
    assert_eq!(miss.header("content-length"), "300000");
    assert_eq!(
        miss.header("alt-svc"),
        "",
        "no need to advertise h3 over h3"
    );

    let hit = h3.get(path).await;
    assert_eq!(hit.status(), 200);
    assert_eq!(hit.body, expected);
    assert!(
        hit.header("cache-status").contains("hit"),
        "{}",
        hit.header("cache-status")
    );
    assert_eq!(origin.state.hits("/obj/h3.m4s"), 1);

    let range = h3
        .fetch(request("GET", path, &[("range", "bytes=1000-1999")]))
        .await
        .expect("range");
    assert_eq!(range.status(), 206);
    assert_eq!(range.header("content-range"), "bytes 1000-1999/300000");
    assert_eq!(range.body, expected.slice(1000..2000));

    let head = h3.fetch(request("HEAD", path, &[])).await.expect("head");
    assert_eq!(head.status(), 200);
    assert_eq!(head.header("content-length"), "300000");
    assert!(head.body.is_empty());

    let missing = h3.get("/obj/none.m4s?status=404").await;
    assert_eq!(missing.status(), 404);

    let refused = h3.fetch(request("POST", path, &[])).await.expect("post");
    assert_eq!(refused.status(), 405);
    assert_eq!(origin.state.hits("/obj/h3.m4s"), 1);
    h3.close();

    let metrics = edge.metrics().await;
    let h3_hits = metric(
        &metrics,
        "strata_edge_requests_total{status=\"2xx\",cache=\"hit\",protocol=\"h3\"}",
    );
    assert!(
        h3_hits >= Some(2.0),
        "range, HEAD and the second GET are hits: {h3_hits:?}"
    );
    assert_eq!(
        metric(
            &metrics,
            "strata_edge_requests_total{status=\"4xx\",cache=\"error\",protocol=\"h3\"}"
        ),
        Some(1.0),
        "the POST"
    );
    assert_eq!(
        metric(&metrics, "strata_edge_h3_handshakes_total{outcome=\"ok\"}"),
        Some(1.0)
    );
    assert_eq!(metric(&metrics, "strata_edge_h3_streams_total"), Some(6.0));
    assert!(metrics.contains("strata_edge_h3_rtt_seconds"));
    assert!(metrics.contains("strata_edge_h3_lost_packets_total"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_object_fetched_at_once_over_h1_h2_and_h3_makes_one_upstream_request() {
    let (origin, edge, cert) = start_tls_edge("coalesce-edge", |_| {}).await;
    let tls = edge.tls.expect("tls");
    // 16 chunks 30 ms apart: all three clients arrive while the fill runs.
    let path = "/obj/shared.m4s?size=1048576&delay=30";
    let expected = content("shared.m4s", 1_048_576);
    let https = |http2: bool| {
        let client = cert.https_client(http2);
        let url = format!("https://localhost:{}{path}", tls.port());
        async move {
            let r = client.get(url).send().await.expect("https");
            let version = r.version();
            (version, r.bytes().await.expect("body"))
        }
    };
    let endpoint = endpoint(client_config(&cert.der, false));
    let h3 = H3Connection::connect(&endpoint, quic_addr(&edge)).await;
    let (h1, h2, h3) = tokio::join!(https(false), https(true), h3.get(path));
    assert_eq!(h1.0, reqwest::Version::HTTP_11);
    assert_eq!(h2.0, reqwest::Version::HTTP_2);
    assert_eq!(h1.1, expected);
    assert_eq!(h2.1, expected);
    assert_eq!(h3.status(), 200);
    assert_eq!(h3.body, expected);
    assert_eq!(
        origin.state.hits("/obj/shared.m4s"),
        1,
        "one upstream request for three protocols"
    );
    let metrics = edge.metrics().await;
    for protocol in ["h1", "h2", "h3"] {
        assert!(
            metrics.contains(&format!("protocol=\"{protocol}\"")),
            "{protocol} counted"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_and_http2_responses_advertise_http3_with_alt_svc() {
    let (_origin, edge, cert) = start_tls_edge("alt-svc-edge", |c| {
        c.server.h3.alt_svc_max_age = Duration::from_secs(3600);
    })
    .await;
    let tls = edge.tls.expect("tls");
    let quic = quic_addr(&edge);
    assert_eq!(tls.port(), quic.port(), "TCP and UDP share the port");
    let expected = format!("h3=\":{}\"; ma=3600", quic.port());
    let url = format!("https://localhost:{}/obj/alt.m4s?size=10", tls.port());
    for http2 in [false, true] {
        let r = cert
            .https_client(http2)
            .get(&url)
            .send()
            .await
            .expect("https");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["alt-svc"], expected.as_str(), "http2={http2}");
    }

    let (_origin, edge, _cert) =
        start_tls_edge("no-h3-edge", |c| c.server.h3.enabled = false).await;
    assert!(edge.quic.is_none());
    let r = crate::harness::client()
        .get(edge.url("/obj/alt.m4s?size=10"))
        .send()
        .await
        .expect("h1");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("alt-svc").is_none(),
        "no HTTP/3, no advertisement"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_headers_get_431_and_the_connection_still_serves() {
    let (_origin, edge, cert) = start_tls_edge("h3-limits-edge", |c| {
        c.server.h3.max_header_size = strata::config::ByteSize(2048);
    })
    .await;
    let endpoint = endpoint(client_config(&cert.der, false));
    let h3 = H3Connection::connect(&endpoint, quic_addr(&edge)).await;
    let big = "x".repeat(4096);
    match h3
        .fetch(request(
            "GET",
            "/obj/big.m4s",
            &[("x-padding", big.as_str())],
        ))
        .await
    {
        Ok(r) => assert_eq!(r.status(), 431),
        // The client may refuse to send a section the server said it won't take.
        Err(e) => assert!(e.contains("HeaderTooBig"), "{e}"),
    }
    let ok = h3.get("/obj/small.m4s?size=10").await;
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_are_refused_and_retry_validates_addresses() {
    let (_origin, edge, cert) = start_tls_edge("h3-conn-limit-edge", |c| {
        c.server.h3.max_connections = 1;
        c.server.h3.retry_above_connections = 0;
    })
    .await;
    let endpoint = endpoint(client_config(&cert.der, false));
    let first = H3Connection::connect(&endpoint, quic_addr(&edge)).await;
    assert_eq!(first.get("/obj/one.m4s?size=10").await.status(), 200);
    let second = endpoint
        .connect(quic_addr(&edge), "localhost")
        .expect("connect")
        .await;
    assert!(second.is_err(), "second connection refused");
    let metrics = edge.metrics().await;
    assert!(metric(&metrics, "strata_edge_h3_incoming_total{outcome=\"retry\"}") >= Some(1.0));
    assert!(
        metric(
            &metrics,
            "strata_edge_h3_incoming_total{outcome=\"refused\"}"
        ) >= Some(1.0)
    );
    assert_eq!(metric(&metrics, "strata_edge_h3_connections"), Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_sends_goaway_and_lets_the_response_in_flight_finish() {
    let (_origin, edge, cert) = start_tls_edge("h3-drain-edge", |_| {}).await;
    let endpoint = endpoint(client_config(&cert.der, false));
    let h3 = H3Connection::connect(&endpoint, quic_addr(&edge)).await;
    let mut stream = h3
        .open(request("GET", "/obj/drain.m4s?size=1048576&delay=50", &[]))
        .await;
    let head = stream.recv_response().await.expect("head");
    assert_eq!(head.status(), 200);
    let quic = quic_addr(&edge);
    let stopped = tokio::spawn(edge.shutdown());
    let mut received = 0usize;
    while let Some(chunk) = stream.recv_data().await.expect("body keeps coming") {
        received += chunk.remaining();
    }
    assert_eq!(received, 1_048_576, "the whole response, not a cut one");
    let after_goaway = h3.fetch(request("GET", "/obj/late.m4s?size=10", &[])).await;
    assert!(
        after_goaway.is_err(),
        "GOAWAY: no new requests on this connection"
    );
    drop(stream);
    h3.close();
    stopped.await.expect("edge stopped");
    // Nobody answers a handshake any more: with a 1 s idle timeout (the
    // protocol's own, not a test timer) the attempt must end in an error; a
    // handshake a live edge answers takes milliseconds and would succeed.
    let mut config = client_config(&cert.der, false);
    let mut transport = quinn::TransportConfig::default();
    transport.max_idle_timeout(Some(
        Duration::from_secs(1).try_into().expect("idle timeout"),
    ));
    config.transport_config(std::sync::Arc::new(transport));
    let late = endpoint
        .connect_with(config, quic, "localhost")
        .expect("connect")
        .await;
    assert!(
        matches!(
            late,
            Err(quinn::ConnectionError::TimedOut | quinn::ConnectionError::ConnectionClosed(_))
        ),
        "no new connections after shutdown: {:?}",
        late.map(|c| c.remote_address())
    );
}

/// The interpreter that has aioquic: `$STRATA_PYTHON`, else `python3`.
/// `$STRATA_PYTHON`, else the repo's `.venv` (scripts/install-test-deps.sh), else `python3`.
fn python() -> String {
    std::env::var("STRATA_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
        if std::path::Path::new(venv).exists() {
            venv.into()
        } else {
            "python3".into()
        }
    })
}

async fn aioquic_get(
    cert: &TestCert,
    port: u16,
    path: &str,
    headers: &[&str],
) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/h3_client.py");
    let mut command = tokio::process::Command::new(python());
    command
        .arg(script)
        .arg(format!("https://localhost:{port}{path}"))
        .arg("--ca")
        .arg(&cert.config.cert)
        .arg("--connect")
        .arg("127.0.0.1");
    for header in headers {
        command.arg("--header").arg(header);
    }
    let output = command.output().await.expect("run the aioquic client");
    assert!(
        output.status.success(),
        "aioquic client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("aioquic client prints JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_fetches_a_range_and_a_whole_object_with_tokens() {
    let has_aioquic = tokio::process::Command::new(python())
        .args(["-c", "import aioquic"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    assert!(
        has_aioquic,
        "install aioquic: pip install aioquic (scripts/install-test-deps.sh does it)"
    );
    let (origin, edge, cert) = start_tls_edge("aioquic-edge", |_| {}).await;
    let port = quic_addr(&edge).port();
    let expected = content("py.m4s", 200_000);
    let sha256 = |bytes: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    };

    let range = aioquic_get(
        &cert,
        port,
        "/obj/py.m4s?size=200000&token=viewer1",
        &["range: bytes=100-1099"],
    )
    .await;
    assert_eq!(range["status"], 206, "{range}");
    assert_eq!(range["headers"]["content-range"], "bytes 100-1099/200000");
    assert_eq!(range["body_length"], 1000);
    assert_eq!(range["sha256"], sha256(&expected[100..1100]));

    let whole = aioquic_get(&cert, port, "/obj/py.m4s?size=200000&token=viewer2", &[]).await;
    assert_eq!(whole["status"], 200, "{whole}");
    assert_eq!(whole["body_length"], 200_000);
    assert_eq!(whole["sha256"], sha256(&expected));
    assert!(whole["headers"]["cache-status"]
        .as_str()
        .is_some_and(|s| s.contains("hit")));
    assert_eq!(
        origin.state.hits("/obj/py.m4s"),
        1,
        "tokens do not split the cache"
    );
}

/// A UDP relay in front of the edge that holds every server datagram back for
/// `hold`. The client cannot finish its handshake until then, so what it
/// sends first travels as 0-RTT and reaches the edge before the handshake is
/// complete — on loopback the handshake would otherwise win the race.
async fn slow_return_relay(server: SocketAddr, hold: Duration) -> SocketAddr {
    use std::sync::Arc;
    let front = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("relay"),
    );
    let back = Arc::new(
        tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("relay"),
    );
    back.connect(server).await.expect("relay connect");
    let addr = front.local_addr().expect("relay addr");
    let (client_tx, mut client_rx) = tokio::sync::watch::channel(None::<SocketAddr>);
    let (f, b) = (front.clone(), back.clone());
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = f.recv_from(&mut buf).await {
            client_tx.send_replace(Some(from));
            let _ = b.send(&buf[..n]).await;
        }
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = back.recv(&mut buf).await {
            let datagram = buf[..n].to_vec();
            let Some(client) = *client_rx.borrow_and_update() else {
                continue;
            };
            let front = front.clone();
            tokio::spawn(async move {
                tokio::time::sleep(hold).await;
                let _ = front.send_to(&datagram, client).await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_data_serves_segments_and_answers_anything_else_with_425() {
    let (origin, edge, cert) =
        start_tls_edge("h3-0rtt-edge", |c| c.server.h3.early_data = true).await;
    let endpoint = endpoint(client_config(&cert.der, true));
    // A first, full handshake leaves the client a session ticket.
    let first = H3Connection::connect(&endpoint, quic_addr(&edge)).await;
    assert_eq!(first.get("/obj/warm.m4s?size=10").await.status(), 200);
    first.close();

    let relay = slow_return_relay(quic_addr(&edge), Duration::from_millis(300)).await;
    let (resumed, accepted) = H3Connection::connect_0rtt(&endpoint, relay)
        .await
        .expect("the client resumes with 0-RTT");
    let segment = request("GET", "/obj/early.m4s?size=5000", &[]);
    let post = request("POST", "/obj/early.m4s?size=5000", &[]);
    let key = request("GET", "/drm/key1", &[]);
    let (segment, post, key) = tokio::join!(
        resumed.fetch(segment),
        resumed.fetch(post),
        resumed.fetch(key)
    );
    assert!(accepted.await, "the edge accepted 0-RTT");
    let segment = segment.expect("segment");
    assert_eq!(
        segment.status(),
        200,
        "a safe fetch of a segment is served from early data"
    );
    assert_eq!(segment.body, content("early.m4s", 5000));
    assert_eq!(post.expect("post").status(), 425, "Too Early");
    assert_eq!(key.expect("key").status(), 425, "keys are not replayable");
    assert_eq!(origin.state.hits("/drm/key1"), 0);

    // After the handshake, the same connection serves everything as usual.
    let later = resumed
        .fetch(request("POST", "/obj/early.m4s", &[]))
        .await
        .expect("post");
    assert_eq!(
        later.status(),
        405,
        "past the handshake it is the edge's usual answer"
    );
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(&metrics, "strata_edge_errors_total{reason=\"too-early\"}"),
        Some(2.0)
    );
    resumed.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_body_cut_short_resets_the_http3_stream() {
    let (origin, edge, cert) = start_tls_edge("h3-cut-edge", |_| {}).await;
    let endpoint = endpoint(client_config(&cert.der, false));
    let h3 = H3Connection::connect(&endpoint, quic_addr(&edge)).await;
    // Slow enough that the head and the first bytes are out before the cut.
    let path = "/obj/h3cut.m4s?size=300000&cut=100000&delay=30";
    let cut = h3.fetch(request("GET", path, &[])).await;
    let err = match cut {
        Ok(r) => panic!(
            "a truncated body must not end like a complete one: {} with {} bytes",
            r.status(),
            r.body.len()
        ),
        Err(e) => e,
    };
    assert!(err.contains("response body"), "{err}");
    // The connection survives the reset and the broken copy was not cached.
    assert!(h3.fetch(request("GET", path, &[])).await.is_err());
    assert_eq!(origin.state.hits("/obj/h3cut.m4s"), 2);
    assert_eq!(h3.get("/obj/fine.m4s?size=10").await.status(), 200);
}

/// The sum of the samples of `name` whose labels include every one of `labels`.
fn sum_where(metrics: &str, name: &str, labels: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CMCD over real HTTP/3 (issue 9: "on every protocol"): an independent
/// client (aioquic) sends CMCD as a query parameter and as `CMCD-*` headers;
/// both are counted under protocol `h3`, their buffer lengths land in the
/// histogram, and the two requests and a plain one share one cache entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmcd_over_http3_is_counted_under_h3_and_shares_the_cache_entry() {
    let (origin, edge, cert) = start_tls_edge("cmcd-h3-edge", |_| {}).await;
    let port = quic_addr(&edge).port();
    let path = "/obj/cmcd-h3.m4s?size=5000";
    let query = aioquic_get(
        &cert,
        port,
        &format!("{path}&CMCD=bl%3D4000%2Cbr%3D800%2Cot%3Dv%2Csf%3Dh%2Csid%3D%22h3-q%22%2Csu"),
        &[],
    )
    .await;
    assert_eq!(query["status"], 200, "{query}");
    let headers = aioquic_get(
        &cert,
        port,
        path,
        &[
            "cmcd-request: bl=2500",
            "cmcd-object: br=800,ot=v",
            "cmcd-session: sf=d,sid=\"h3-h\"",
        ],
    )
    .await;
    assert_eq!(headers["status"], 200, "{headers}");
    let plain = aioquic_get(&cert, port, path, &[]).await;
    assert_eq!(plain["status"], 200, "{plain}");
    assert_eq!(
        origin.state.hits("/obj/cmcd-h3.m4s"),
        1,
        "CMCD does not split the cache"
    );

    let metrics = edge.metrics().await;
    let h3 = "protocol=\"h3\"";
    assert_eq!(
        sum_where(&metrics, "strata_qoe_requests_total", &[h3]),
        2.0,
        "both CMCD requests, and only those, under h3:\n{metrics}"
    );
    assert_eq!(
        sum_where(&metrics, "strata_qoe_requests_total", &["protocol=\"h1\""])
            + sum_where(&metrics, "strata_qoe_requests_total", &["protocol=\"h2\""]),
        0.0,
        "{metrics}"
    );
    // sf from the query (h) and from CMCD-Session (d), one request each.
    for format in ["format=\"hls\"", "format=\"dash\""] {
        assert_eq!(
            sum_where(
                &metrics,
                "strata_qoe_requests_total",
                &[h3, format, "object=\"video\""]
            ),
            1.0,
            "{format}:\n{metrics}"
        );
    }
    // The histogram has no protocol label; these two are the edge's only
    // CMCD requests: bl from the query (4 s) and from the header (2.5 s).
    assert_eq!(
        sum_where(&metrics, "strata_qoe_buffer_length_seconds_count", &[]),
        2.0,
        "{metrics}"
    );
    assert_eq!(
        sum_where(&metrics, "strata_qoe_buffer_length_seconds_sum", &[]),
        6.5,
        "{metrics}"
    );
}
