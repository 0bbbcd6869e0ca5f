//! The edge cache against an in-process origin: coalescing, HTTP semantics,
//! failure handling, tiering.

use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{client, content, metric, start_edge, start_origin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_on_one_uncached_object_make_one_upstream_request() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "herd-edge", |_| {}).await;
    let url = edge.url("/obj/herd.m4s?size=2000000&delay=5");
    let client = client();
    let requests = (0..200).map(|i| {
        let client = client.clone();
        // Tokens and CMCD differ per viewer and must not split the herd.
        let url = format!("{url}&token=viewer{i}&CMCD=sid%3D{i}");
        tokio::spawn(async move {
            let response = client.get(url).send().await.expect("response");
            assert_eq!(response.status(), 200);
            response.bytes().await.expect("body")
        })
    });
    let bodies = futures::future::join_all(requests).await;
    let expected = content("herd.m4s", 2_000_000);
    for body in bodies {
        assert_eq!(
            body.expect("task"),
            expected,
            "every client gets identical, complete bytes"
        );
    }
    assert_eq!(
        origin.state.hits("/obj/herd.m4s"),
        1,
        "one upstream request for 200 clients"
    );
    // Each response is counted once its last byte is written, which can be
    // just after the client has it: wait for all 200, bounded.
    let mut counted = (0.0, 0.0);
    for _ in 0..200 {
        let metrics = edge.metrics().await;
        let followers =
            metric(&metrics, "strata_edge_coalesced_followers_total").expect("followers metric");
        let all = metrics
            .lines()
            .filter(|l| l.starts_with("strata_edge_requests_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        let hits = metric(
            &metrics,
            "strata_edge_requests_total{status=\"2xx\",cache=\"hit\",protocol=\"h1\"}",
        )
        .unwrap_or(0.0);
        counted = (followers, hits);
        if all >= 200.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        counted.0 + counted.1,
        199.0,
        "every other client either joined the fill or hit the cache"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_gets_bytes_while_the_slow_upstream_is_still_sending() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "slow-edge", |_| {}).await;
    // 16 chunks of 64 KiB, 150 ms apart: about 2.3 s of body.
    let url = edge.url("/obj/slow.m4s?size=1048576&delay=150");
    let mut leader = client()
        .get(&url)
        .send()
        .await
        .expect("leader")
        .bytes_stream();
    let first = leader
        .next()
        .await
        .expect("leader chunk")
        .expect("leader bytes");
    assert!(!first.is_empty());
    let follower = client().get(&url).send().await.expect("follower");
    assert_eq!(follower.status(), 200);
    let status = follower
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        status.contains("collapsed"),
        "follower joined the fill: {status}"
    );
    let mut follower = follower.bytes_stream();
    let chunk = follower
        .next()
        .await
        .expect("follower chunk")
        .expect("follower bytes");
    assert!(!chunk.is_empty());
    assert!(
        !origin.state.slow_finished.load(Ordering::SeqCst),
        "the follower's first byte came while the upstream was still sending"
    );
    let mut rest = chunk.len();
    while let Some(c) = follower.next().await {
        rest += c.expect("bytes").len();
    }
    assert_eq!(rest, 1_048_576);
    assert_eq!(origin.state.hits("/obj/slow.m4s"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_head_and_conditional_requests() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "range-edge", |_| {}).await;
    let client = client();
    let url = edge.url("/obj/r.m4s?size=10000&etag=v1");
    let expected = content("r.m4s", 10_000);

    // A range on a miss is cut from the fill.
    let r = client
        .get(&url)
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect("range");
    assert_eq!(r.status(), 206);
    assert_eq!(r.headers()["content-range"], "bytes 100-199/10000");
    assert_eq!(r.bytes().await.expect("body"), expected.slice(100..200));
    // And on a hit.
    let r = client
        .get(&url)
        .header("range", "bytes=-10")
        .send()
        .await
        .expect("suffix");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.expect("body"), expected.slice(9990..));
    let r = client
        .get(&url)
        .header("range", "bytes=20000-")
        .send()
        .await
        .expect("416");
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["content-range"], "bytes */10000");
    // Absurd numbers: not a panic, not a range we serve.
    let r = client
        .get(&url)
        .header("range", "bytes=99999999999999999999999999-")
        .send()
        .await
        .expect("absurd");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").len(), 10_000);

    let r = client.head(&url).send().await.expect("head");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "10000");
    assert!(r.bytes().await.expect("head body").is_empty());

    let r = client
        .get(&url)
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .expect("inm");
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()["etag"], "\"v1\"");
    let r = client
        .get(&url)
        .header("if-none-match", "\"other\"")
        .send()
        .await
        .expect("inm miss");
    assert_eq!(r.status(), 200);
    assert_eq!(
        origin.state.hits("/obj/r.m4s"),
        1,
        "all of it from one fetch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copies_serve_while_the_origin_is_down_and_revalidation_uses_etags() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "stale-edge", |_| {}).await;
    let client = client();
    // Immediately stale, but may be served for a minute if the origin fails.
    let url = edge.url("/obj/s.m3u8?size=500&cc=max-age%3D0%2C%20stale-if-error%3D60&etag=e1");
    let first = client.get(&url).send().await.expect("first");
    assert_eq!(first.status(), 200);
    let body = first.bytes().await.expect("body");

    // Revalidation: the origin answers 304 and the stored body is served.
    let again = client.get(&url).send().await.expect("revalidate");
    let status = again.headers()["cache-status"]
        .to_str()
        .expect("status")
        .to_owned();
    assert!(status.contains("fwd=stale; fwd-status=304"), "{status}");
    assert_eq!(again.bytes().await.expect("body"), body);
    let sent = origin
        .state
        .last_headers
        .lock()
        .get("/obj/s.m3u8")
        .cloned()
        .expect("headers");
    assert_eq!(sent["if-none-match"], "\"e1\"");

    origin.state.down.store(true, Ordering::SeqCst);
    let stale = client.get(&url).send().await.expect("stale");
    assert_eq!(stale.status(), 200);
    let status = stale.headers()["cache-status"]
        .to_str()
        .expect("status")
        .to_owned();
    assert!(status.contains("stale-if-error"), "{status}");
    assert_eq!(stale.bytes().await.expect("body"), body);

    // Without a stale copy the client gets a clear 502.
    let missing = client
        .get(edge.url("/obj/never.m4s"))
        .send()
        .await
        .expect("502");
    assert_eq!(missing.status(), 502);
    let text = missing.text().await.expect("text");
    assert!(text.contains("all upstreams failed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_between_two_origins() {
    let good = start_origin().await;
    let bad = start_origin().await;
    bad.state.down.store(true, Ordering::SeqCst);
    let edge = start_edge(&[bad.url(), good.url()], "failover-edge", |_| {}).await;
    let client = client();
    for i in 0..20 {
        let r = client
            .get(edge.url(&format!("/obj/f{i}.m4s?size=100")))
            .send()
            .await
            .expect("response");
        assert_eq!(r.status(), 200, "object {i} served by the healthy origin");
        assert_eq!(
            r.bytes().await.expect("body"),
            content(&format!("f{i}.m4s"), 100)
        );
    }
    assert_eq!(good.state.total.load(Ordering::SeqCst), 20);
    assert!(
        bad.state.total.load(Ordering::SeqCst) >= 1,
        "hashing sent some first attempts to the failing origin"
    );
    let metrics = edge.metrics().await;
    assert!(
        metrics.contains("outcome=\"http-5xx\""),
        "failed attempts are counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_through_one_shield_fetch_each_object_from_the_origin_once() {
    let origin = start_origin().await;
    let shield = start_edge(&[origin.url()], "shield-1", |_| {}).await;
    let shield_url = format!("http://{}", shield.addr);
    let edge_a = start_edge(&[shield_url.clone()], "edge-a", |_| {}).await;
    let edge_b = start_edge(&[shield_url], "edge-b", |_| {}).await;
    let client = client();
    for edge in [&edge_a, &edge_b, &edge_a] {
        let r = client
            .get(edge.url("/obj/tier.m4s?size=3000"))
            .send()
            .await
            .expect("response");
        assert_eq!(r.status(), 200);
        let via = r
            .headers()
            .get_all("via")
            .iter()
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .collect::<Vec<_>>()
            .join(", ");
        assert!(
            via.contains("shield-1"),
            "response passed the shield: {via}"
        );
        assert_eq!(r.bytes().await.expect("body"), content("tier.m4s", 3000));
    }
    assert_eq!(origin.state.hits("/obj/tier.m4s"), 1);
    let seen = origin
        .state
        .last_headers
        .lock()
        .get("/obj/tier.m4s")
        .cloned()
        .expect("headers");
    let via = seen["via"].to_str().expect("via");
    assert!(
        via.contains("edge-a") && via.contains("shield-1"),
        "origin sees the whole chain: {via}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_loop_between_tiers_is_refused() {
    let origin = start_origin().await;
    // An edge that lists itself (by name) upstream: the second pass sees its own Via.
    let edge = start_edge(&[origin.url()], "loop-edge", |_| {}).await;
    let r = client()
        .get(edge.url("/obj/l.m4s"))
        .header("via", "1.1 other, 1.1 loop-edge")
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 508);
    assert_eq!(origin.state.total.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_is_never_served_from_cache() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "cut-edge", |_| {}).await;
    let url = edge.url("/obj/cut.m4s?size=300000&cut=100000");
    let result = async { client().get(&url).send().await?.bytes().await }.await;
    match result {
        Ok(body) => assert_ne!(
            body.len(),
            300_000,
            "a truncated body must not look complete"
        ),
        Err(_) => {} // the client saw the connection abort: truncation detected
    }
    let again = async { client().get(&url).send().await?.bytes().await }.await;
    assert!(again.map(|b| b.len() != 300_000).unwrap_or(true));
    assert_eq!(
        origin.state.hits("/obj/cut.m4s"),
        2,
        "the broken copy was not cached"
    );
    // Everyone else is still served.
    let ok = client()
        .get(edge.url("/obj/fine.m4s?size=10"))
        .send()
        .await
        .expect("ok");
    assert_eq!(ok.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_is_cached_briefly_and_no_store_is_not_cached() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "neg-edge", |_| {}).await;
    let client = client();
    for _ in 0..3 {
        let r = client
            .get(edge.url("/obj/nf.m4s?status=404"))
            .send()
            .await
            .expect("404");
        assert_eq!(r.status(), 404);
    }
    assert_eq!(
        origin.state.hits("/obj/nf.m4s"),
        1,
        "404 cached for the negative TTL"
    );
    for _ in 0..2 {
        let r = client
            .get(edge.url("/obj/ns.m4s?cc=no-store"))
            .send()
            .await
            .expect("no-store");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(origin.state.hits("/obj/ns.m4s"), 2);
    let r = client
        .get(edge.url("/obj/ns.m4s"))
        .send()
        .await
        .expect("other key");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_and_http1_share_one_cache() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "h2-edge", |_| {}).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .no_proxy()
        .build()
        .expect("h2 client");
    let r = h2
        .get(edge.url("/obj/both.m4s?size=70000"))
        .send()
        .await
        .expect("h2");
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.bytes().await.expect("body"), content("both.m4s", 70_000));
    let r = client()
        .get(edge.url("/obj/both.m4s?size=70000"))
        .send()
        .await
        .expect("h1");
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    assert!(r.headers()["cache-status"]
        .to_str()
        .expect("cs")
        .contains("hit"));
    assert_eq!(origin.state.hits("/obj/both.m4s"), 1);
    let metrics = edge.metrics().await;
    for series in [
        "strata_edge_requests_total{status=\"2xx\",cache=\"miss\",protocol=\"h2\"} 1",
        "strata_edge_requests_total{status=\"2xx\",cache=\"hit\",protocol=\"h1\"} 1",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_oversized_requests_get_400_and_others_are_still_served() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "bad-edge", |_| {}).await;
    let mut raw = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    raw.write_all(b"\x16\x03\x01garbage that is not http\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), raw.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );

    let huge = format!(
        "GET /obj/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let mut raw = tokio::net::TcpStream::connect(edge.addr)
        .await
        .expect("connect");
    let _ = raw.write_all(huge.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), raw.read_to_end(&mut answer)).await;
    let text = String::from_utf8_lossy(&answer);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 4"), "{text}");

    let r = client()
        .get(edge.url("/../../etc/passwd"))
        .send()
        .await
        .expect("traversal");
    assert!(
        r.status() == 400 || r.status() == 502 || r.status() == 404,
        "{}",
        r.status()
    );
    let r = client()
        .post(edge.url("/obj/x"))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 405);
    let r = client()
        .get(edge.url("/obj/ok.m4s?size=5"))
        .send()
        .await
        .expect("ok");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_response_finish() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "drain-edge", |_| {}).await;
    let url = edge.url("/obj/drain.m4s?size=524288&delay=100");
    let response = client().get(&url).send().await.expect("response");
    let admin = edge.admin;
    let shutdown = tokio::spawn(edge.shutdown());
    let body = response.bytes().await.expect("in-flight body completes");
    assert_eq!(body, content("drain.m4s", 524_288));
    shutdown.await.expect("shutdown");
    assert!(
        reqwest::get(format!("http://{admin}/healthz"))
            .await
            .is_err(),
        "admin closed after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_metrics_health_and_readiness() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "admin-edge", |_| {}).await;
    client()
        .get(edge.url("/obj/m.m4s?size=10"))
        .send()
        .await
        .expect("req");
    // The request is counted once its last byte is written, which can be
    // just after the client has it: wait for that event, bounded.
    let mut m = edge.metrics().await;
    for _ in 0..100 {
        if m.contains("strata_edge_requests_total{") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = edge.metrics().await;
    }
    for name in [
        "strata_edge_requests_total",
        "strata_edge_response_body_bytes_total",
        "strata_edge_upstream_requests_total",
        "strata_edge_upstream_response_seconds_bucket",
        "strata_edge_cache_objects",
        "strata_edge_cache_bytes",
        "strata_edge_cache_evictions_total",
        "strata_edge_upstream_healthy",
        "strata_edge_coalesced_followers_total",
    ] {
        assert!(m.contains(name), "missing {name} in\n{m}");
    }
    assert_eq!(metric(&m, "strata_edge_cache_objects"), Some(1.0));
    let h = reqwest::get(format!("http://{}/healthz", edge.admin))
        .await
        .expect("healthz");
    assert_eq!(h.status(), 200);
    let r = reqwest::get(format!("http://{}/readyz", edge.admin))
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licence_posts_are_proxied_uncached_and_other_posts_refused() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "post-edge", |_| {}).await;
    let client = client();
    for i in 0..2 {
        let body = format!("{{\"kids\":[\"k{i}\"]}}");
        let r = client
            .post(edge.url("/drm/clearkey"))
            .body(body.clone())
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["cache-control"], "private, no-store");
        assert_eq!(r.text().await.expect("text"), body);
    }
    assert_eq!(
        origin.state.hits("/drm/clearkey"),
        2,
        "licence requests are never cached or coalesced"
    );
    let big = client
        .post(edge.url("/drm/clearkey"))
        .body(vec![b'x'; 100_000])
        .send()
        .await
        .expect("big");
    assert_eq!(big.status(), 413);
    let elsewhere = client
        .post(edge.url("/live/a/master.m3u8"))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_eq!(elsewhere.status(), 405);
    assert_eq!(origin.state.hits("/drm/clearkey"), 2);
}

/// A listener that answers every connection with `reply` (or nothing at all).
async fn raw_upstream(reply: Option<&'static [u8]>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match reply {
                    Some(bytes) => {
                        let _ = socket.write_all(bytes).await;
                    }
                    // Never answer: hold the connection open.
                    None => tokio::time::sleep(Duration::from_secs(60)).await,
                }
            });
        }
    });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_sends_garbage_is_a_502_and_one_that_never_answers_a_504() {
    let garbage = raw_upstream(Some(b"\x00\x01this is not HTTP at all\r\n\r\n")).await;
    let edge = start_edge(&[garbage], "garbage-edge", |_| {}).await;
    let r = client()
        .get(edge.url("/obj/g.m4s"))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 502);
    assert!(r
        .text()
        .await
        .expect("text")
        .contains("all upstreams failed"));

    let silent = raw_upstream(None).await;
    let edge = start_edge(&[silent], "silent-edge", |c| {
        c.upstream.header_timeout = Duration::from_millis(500);
        c.upstream.max_attempts = 1;
    })
    .await;
    let r = client()
        .get(edge.url("/obj/s.m4s"))
        .send()
        .await
        .expect("response");
    assert_eq!(r.status(), 504);
    let m = edge.metrics().await;
    assert!(m.contains("outcome=\"timeout\""), "timeouts are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_above_the_size_limit_stream_through_uncached() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "big-edge", |c| {
        c.cache.max_object_size = strata::config::ByteSize(100_000);
    })
    .await;
    for _ in 0..2 {
        let r = client()
            .get(edge.url("/obj/big.m4s?size=300000"))
            .send()
            .await
            .expect("big");
        assert_eq!(r.bytes().await.expect("body"), content("big.m4s", 300_000));
    }
    assert_eq!(origin.state.hits("/obj/big.m4s"), 2, "too big to store");
    for _ in 0..2 {
        let r = client()
            .get(edge.url("/obj/small.m4s?size=1000"))
            .send()
            .await
            .expect("small");
        assert_eq!(r.status(), 200);
    }
    assert_eq!(origin.state.hits("/obj/small.m4s"), 1);
}
