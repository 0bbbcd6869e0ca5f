//! Protocol parity (issue 6): the same cases over HTTP/1.1, HTTP/2 and
//! HTTP/3 against one TLS edge, so that no feature exists on one protocol
//! and not on another. Each test runs its case over every protocol in turn
//! and names the protocol in every assertion.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use parking_lot::Mutex;
use serde_json::json;

use crate::control::{purge, with_admin_token};
use crate::harness::{content, metric, start_tls_edge, TestEdge, TestOrigin};
use crate::policy::{geo_config, geo_rules, token, token_config, SECRET};
use crate::quic_client::{client_config, endpoint, request, H3Connection};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
    H3,
}

impl Proto {
    pub const ALL: [Proto; 3] = [Proto::H1, Proto::H2, Proto::H3];

    /// The `protocol` label of the edge's metrics and access log.
    pub fn label(self) -> &'static str {
        match self {
            Proto::H1 => "h1",
            Proto::H2 => "h2",
            Proto::H3 => "h3",
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A whole response, whichever protocol carried it.
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

/// One origin, one edge serving h1 and h2 over TLS and h3 on the same port,
/// and one client (one connection) per protocol.
pub struct Matrix {
    pub origin: TestOrigin,
    pub edge: TestEdge,
    h1: reqwest::Client,
    h2: reqwest::Client,
    h3: H3Connection,
    tls_port: u16,
    _endpoint: quinn::Endpoint,
}

impl Matrix {
    pub async fn start(
        node_id: &str,
        tweak: impl FnOnce(&mut strata::config::EdgeConfig),
    ) -> Matrix {
        let (origin, edge, cert) = start_tls_edge(node_id, tweak).await;
        let endpoint = endpoint(client_config(&cert.der, false));
        let h3 = H3Connection::connect(&endpoint, edge.quic.expect("edge serves HTTP/3")).await;
        Matrix {
            tls_port: edge.tls.expect("edge serves TLS").port(),
            origin,
            edge,
            h1: cert.https_client(false),
            h2: cert.https_client(true),
            h3,
            _endpoint: endpoint,
        }
    }

    /// `method path` over `proto` with `headers` and `body` (none if empty);
    /// `Err` when no response came back.
    pub async fn try_send(
        &self,
        proto: Proto,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<Response, String> {
        let (client, version) = match proto {
            Proto::H1 => (&self.h1, reqwest::Version::HTTP_11),
            Proto::H2 => (&self.h2, reqwest::Version::HTTP_2),
            Proto::H3 => {
                let fetched = self
                    .h3
                    .fetch_with_body(request(method, path, headers), body)
                    .await?;
                return Ok(Response {
                    status: fetched.status(),
                    headers: fetched.head.headers().clone(),
                    body: fetched.body,
                });
            }
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let url = format!("https://localhost:{}{path}", self.tls_port);
        let mut builder = client.request(method, url).body(body);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = builder.send().await.map_err(|e| format!("{e:?}"))?;
        assert_eq!(
            response.version(),
            version,
            "{proto} spoke another protocol"
        );
        Ok(Response {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.bytes().await.map_err(|e| format!("{e:?}"))?,
        })
    }

    pub async fn send(
        &self,
        proto: Proto,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        self.try_send(proto, method, path, headers, Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("{proto} {method} {path}: {e}"))
    }

    pub async fn get(&self, proto: Proto, path: &str) -> Response {
        self.send(proto, "GET", path, &[]).await
    }

    /// How often the origin was asked for the test object `/obj/{name}`.
    pub fn fetches_of(&self, name: &str) -> u64 {
        self.origin.state.hits(&format!("/obj/{name}"))
    }

    /// The edge's metrics once `ready` holds for them. Each response is
    /// counted after its last byte is written, which can be just after the
    /// client has it, so wait (bounded) for the count to catch up.
    pub async fn metrics_once(&self, ready: impl Fn(&str) -> bool) -> String {
        let mut metrics = self.edge.metrics().await;
        for _ in 0..100 {
            if ready(&metrics) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            metrics = self.edge.metrics().await;
        }
        metrics
    }
}

fn requests_total(status: &str, cache: &str, proto: Proto) -> String {
    format!(
        "strata_edge_requests_total{{status=\"{status}\",cache=\"{cache}\",protocol=\"{proto}\"}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_miss_then_a_hit_with_cache_status_age_and_via_and_both_are_counted() {
    let m = Matrix::start("matrix-hit", |_| {}).await;
    for p in Proto::ALL {
        let name = format!("hit-{p}.m4s");
        let path = format!("/obj/{name}?size=200000");
        let expected = content(&name, 200_000);

        let miss = m.get(p, &path).await;
        assert_eq!(miss.status, 200, "{p}");
        assert_eq!(miss.body, expected, "{p}");
        assert_eq!(miss.header("content-length"), "200000", "{p}");
        assert!(
            miss.header("cache-status")
                .starts_with("matrix-hit; fwd=miss"),
            "{p}: {}",
            miss.header("cache-status")
        );
        assert_eq!(miss.header("age"), "0", "{p}");
        assert_eq!(miss.header("via"), "1.1 matrix-hit", "{p}");
        assert_eq!(miss.header("access-control-allow-origin"), "*", "{p}");

        let hit = m.get(p, &path).await;
        assert_eq!(hit.status, 200, "{p}");
        assert_eq!(hit.body, expected, "{p}");
        let status = hit.header("cache-status");
        assert!(
            status.starts_with("matrix-hit; hit") && !status.contains("fwd="),
            "{p}: {status}"
        );
        assert!(hit.header("age").parse::<u64>().is_ok(), "{p}: Age");
        assert_eq!(hit.header("via"), "1.1 matrix-hit", "{p}");
        assert_eq!(m.fetches_of(&name), 1, "{p}");
    }
    let counted = |metrics: &str| {
        Proto::ALL.iter().all(|&p| {
            metric(metrics, &requests_total("2xx", "miss", p)) == Some(1.0)
                && metric(metrics, &requests_total("2xx", "hit", p)) == Some(1.0)
        })
    };
    let metrics = m.metrics_once(counted).await;
    for p in Proto::ALL {
        assert_eq!(
            metric(&metrics, &requests_total("2xx", "miss", p)),
            Some(1.0),
            "{p} miss counted"
        );
        assert_eq!(
            metric(&metrics, &requests_total("2xx", "hit", p)),
            Some(1.0),
            "{p} hit counted"
        );
        let bytes = format!("strata_edge_response_body_bytes_total{{protocol=\"{p}\"}}");
        assert!(
            metric(&metrics, &bytes) >= Some(400_000.0),
            "{p} bytes counted: {:?}",
            metric(&metrics, &bytes)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_range_is_cut_from_the_cache_and_an_unsatisfiable_one_gets_416() {
    let m = Matrix::start("matrix-range", |_| {}).await;
    for p in Proto::ALL {
        let name = format!("range-{p}.m4s");
        let path = format!("/obj/{name}?size=100000");
        let expected = content(&name, 100_000);

        // On a miss, the range is cut from the fill.
        let first = m.send(p, "GET", &path, &[("range", "bytes=0-99")]).await;
        assert_eq!(first.status, 206, "{p}");
        assert_eq!(first.header("content-range"), "bytes 0-99/100000", "{p}");
        assert_eq!(first.body, expected.slice(0..100), "{p}");
        // The fill may still be running: read the whole object, then it is stored.
        assert_eq!(m.get(p, &path).await.body, expected, "{p}");

        let range = m
            .send(p, "GET", &path, &[("range", "bytes=1000-1999")])
            .await;
        assert_eq!(range.status, 206, "{p}");
        assert_eq!(
            range.header("content-range"),
            "bytes 1000-1999/100000",
            "{p}"
        );
        assert_eq!(range.header("content-length"), "1000", "{p}");
        assert_eq!(range.body, expected.slice(1000..2000), "{p}");
        assert!(
            range.header("cache-status").contains("hit"),
            "{p}: {}",
            range.header("cache-status")
        );

        let beyond = m.send(p, "GET", &path, &[("range", "bytes=200000-")]).await;
        assert_eq!(beyond.status, 416, "{p}");
        assert_eq!(beyond.header("content-range"), "bytes */100000", "{p}");
        assert_eq!(m.fetches_of(&name), 1, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_the_headers_without_a_body() {
    let m = Matrix::start("matrix-head", |_| {}).await;
    for p in Proto::ALL {
        let name = format!("head-{p}.m4s");
        let path = format!("/obj/{name}?size=50000");
        for attempt in ["miss", "hit"] {
            let head = m.send(p, "HEAD", &path, &[]).await;
            assert_eq!(head.status, 200, "{p} {attempt}");
            assert_eq!(head.header("content-length"), "50000", "{p} {attempt}");
            assert_eq!(head.header("content-type"), "video/mp4", "{p} {attempt}");
            assert!(head.body.is_empty(), "{p} {attempt}: a HEAD has no body");
        }
        let get = m.get(p, &path).await;
        assert_eq!(get.body, content(&name, 50_000), "{p}");
        assert_eq!(m.fetches_of(&name), 1, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matching_if_none_match_gets_304() {
    let m = Matrix::start("matrix-inm", |_| {}).await;
    for p in Proto::ALL {
        let name = format!("inm-{p}.m4s");
        let path = format!("/obj/{name}?size=5000&etag=v1");
        let first = m.get(p, &path).await;
        assert_eq!(first.header("etag"), "\"v1\"", "{p}");

        let same = m
            .send(p, "GET", &path, &[("if-none-match", "\"v1\"")])
            .await;
        assert_eq!(same.status, 304, "{p}");
        assert_eq!(same.header("etag"), "\"v1\"", "{p}");
        assert!(same.body.is_empty(), "{p}: a 304 has no body");

        let other = m
            .send(p, "GET", &path, &[("if-none-match", "\"v0\"")])
            .await;
        assert_eq!(other.status, 200, "{p}");
        assert_eq!(other.body, content(&name, 5000), "{p}");
        assert_eq!(m.fetches_of(&name), 1, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_cmcd_do_not_split_the_cache() {
    let m = Matrix::start("matrix-key", |_| {}).await;
    for p in Proto::ALL {
        let name = format!("key-{p}.m4s");
        for viewer in 1..=3 {
            let path = format!("/obj/{name}?size=3000&token=viewer{viewer}&CMCD=sid%3D{viewer}");
            let r = m.get(p, &path).await;
            assert_eq!(r.status, 200, "{p} viewer {viewer}");
            assert_eq!(r.body, content(&name, 3000), "{p} viewer {viewer}");
        }
        assert_eq!(
            m.fetches_of(&name),
            1,
            "{p}: one cache entry for every viewer"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_cached_for_the_negative_ttl() {
    let m = Matrix::start("matrix-404", |_| {}).await;
    for p in Proto::ALL {
        let name = format!("nf-{p}.m4s");
        for attempt in 0..3 {
            let r = m.get(p, &format!("/obj/{name}?status=404")).await;
            assert_eq!(r.status, 404, "{p} attempt {attempt}");
            assert_eq!(r.body, "status as asked", "{p} attempt {attempt}");
        }
        assert_eq!(m.fetches_of(&name), 1, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_checked_and_expire() {
    let m = Matrix::start("matrix-token", |c| c.token = Some(token_config())).await;
    let now = SystemTime::now();
    let good = token("/live/ch/*", now, 300, None, SECRET);
    let expired = token(
        "/live/ch/*",
        now - Duration::from_secs(600),
        60,
        None,
        SECRET,
    );
    for p in Proto::ALL {
        let segment = format!("/live/ch/main/{p}.m4s");
        let missing = m.get(p, &segment).await;
        assert_eq!(missing.status, 403, "{p}");
        assert_eq!(missing.header("strata-reject-reason"), "missing", "{p}");
        assert_eq!(missing.header("access-control-allow-origin"), "*", "{p}");

        let old = m.get(p, &format!("{segment}?token={expired}")).await;
        assert_eq!(old.status, 403, "{p}");
        assert_eq!(old.header("strata-reject-reason"), "expired", "{p}");
        assert_eq!(m.origin.state.hits(&segment), 0, "{p}: refused at the edge");

        let ok = m.get(p, &format!("{segment}?token={good}")).await;
        assert_eq!(ok.status, 200, "{p}");
        assert_eq!(ok.body, content(&segment, 1000), "{p}");

        // In a cookie too, also split into crumbs as browsers send cookies
        // over h2 and h3 (RFC 9113 §8.2.3, RFC 9114 §4.2.1).
        let cookie = format!("other=1; token={good}");
        let crumb = format!("token={good}");
        for cookies in [vec![cookie.as_str()], vec!["other=1", crumb.as_str()]] {
            let headers: Vec<_> = cookies.iter().map(|c| ("cookie", *c)).collect();
            let r = m.send(p, "GET", &segment, &headers).await;
            assert_eq!(r.status, 200, "{p} {cookies:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn country_rules_apply_to_every_protocol() {
    let rules = geo_rules("r = [{ prefix = \"/live/\", deny = [\"GB\"] }]");
    let m = Matrix::start("matrix-geo", |c| c.geo = Some(geo_config(rules, 451))).await;
    for p in Proto::ALL {
        let segment = format!("/live/ch/{p}.m4s");
        // The test client connects from 127.0.0.1, a trusted proxy here.
        let gb = m
            .send(p, "GET", &segment, &[("x-forwarded-for", "81.2.69.142")])
            .await;
        assert_eq!(gb.status, 451, "{p}");
        assert_eq!(gb.header("strata-reject-reason"), "geo", "{p}");
        let se = m
            .send(p, "GET", &segment, &[("x-forwarded-for", "89.160.20.112")])
            .await;
        assert_eq!(se.status, 200, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_master_playlist_carries_the_token_into_its_child_uris() {
    let m = Matrix::start("matrix-prop", |c| c.token = Some(token_config())).await;
    for p in Proto::ALL {
        let channel = format!("/live/ch-{p}");
        let t = token(
            &format!("{channel}/*"),
            SystemTime::now(),
            300,
            None,
            SECRET,
        );
        let master = m.get(p, &format!("{channel}/master.m3u8?token={t}")).await;
        assert_eq!(master.status, 200, "{p}");
        assert!(
            master.header("cache-control").starts_with("private"),
            "{p}: {}",
            master.header("cache-control")
        );
        let text = String::from_utf8_lossy(&master.body);
        assert!(
            text.contains(&format!("\nmain/video.m3u8?token={t}\n")),
            "{p}: {text}"
        );
        assert!(
            text.contains(&format!("URI=\"main/audio.m3u8?token={t}\"")),
            "{p}: {text}"
        );
        assert_eq!(
            master.header("content-length"),
            master.body.len().to_string(),
            "{p}"
        );
        let child = m
            .get(p, &format!("{channel}/main/video.m3u8?token={t}"))
            .await;
        assert_eq!(
            child.status, 200,
            "{p}: the URI the player follows is accepted"
        );

        let mpd = m.get(p, &format!("{channel}/manifest.mpd?token={t}")).await;
        let text = String::from_utf8_lossy(&mpd.body);
        assert!(
            text.contains(&format!("media=\"main/video/$Number$.m4s?token={t}\"")),
            "{p}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_purge_the_next_request_is_a_miss() {
    let m = Matrix::start("matrix-purge", with_admin_token).await;
    for p in Proto::ALL {
        let name = format!("purge-{p}.m4s");
        let path = format!("/obj/{name}?size=2000");
        m.get(p, &path).await;
        assert!(
            m.get(p, &path).await.header("cache-status").contains("hit"),
            "{p}"
        );
        assert_eq!(purge(&m.edge, json!({ "urls": [path] })).await, 1, "{p}");
        let after = m.get(p, &path).await;
        assert_eq!(after.status, 200, "{p}");
        assert!(
            after.header("cache-status").contains("fwd=miss"),
            "{p}: {}",
            after.header("cache-status")
        );
        assert_eq!(after.body, content(&name, 2000), "{p}");
        assert_eq!(m.fetches_of(&name), 2, "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn licence_posts_are_proxied_and_never_cached() {
    let m = Matrix::start("matrix-licence", |_| {}).await;
    for p in Proto::ALL {
        let path = format!("/drm/clearkey-{p}");
        for i in 0..2 {
            let body = format!("{{\"kids\":[\"{p}-{i}\"]}}");
            let r = m
                .try_send(
                    p,
                    "POST",
                    &path,
                    &[("content-type", "application/json")],
                    Bytes::from(body.clone()),
                )
                .await
                .unwrap_or_else(|e| panic!("{p} POST: {e}"));
            assert_eq!(r.status, 200, "{p}");
            assert_eq!(r.header("cache-control"), "private, no-store", "{p}");
            assert_eq!(r.body, body, "{p}: the origin's answer, unchanged");
        }
        assert_eq!(m.origin.state.hits(&path), 2, "{p}");

        let big = m
            .try_send(p, "POST", &path, &[], Bytes::from(vec![b'x'; 100_000]))
            .await
            .unwrap_or_else(|e| panic!("{p} large POST: {e}"));
        assert_eq!(big.status, 413, "{p}");
        let elsewhere = m
            .try_send(p, "POST", "/live/a/master.m3u8", &[], Bytes::from("x"))
            .await
            .unwrap_or_else(|e| panic!("{p} POST outside pass_through: {e}"));
        assert_eq!(elsewhere.status, 405, "{p}");
        assert_eq!(elsewhere.header("allow"), "GET, HEAD, OPTIONS", "{p}");
        assert_eq!(
            m.origin.state.hits(&path),
            2,
            "{p}: refusals never reach the origin"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_is_a_502_that_says_why() {
    let m = Matrix::start("matrix-502", |c| c.upstream.max_attempts = 1).await;
    m.origin
        .state
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for p in Proto::ALL {
        let r = m.get(p, &format!("/obj/down-{p}.m4s")).await;
        assert_eq!(r.status, 502, "{p}");
        let text = String::from_utf8_lossy(&r.body);
        assert!(text.contains("all upstreams failed"), "{p}: {text}");
        assert_eq!(r.header("via"), "1.1 matrix-502", "{p}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_the_limit_get_431_and_the_connection_still_serves() {
    let m = Matrix::start("matrix-431", |_| {}).await;
    let large = "x".repeat(24 * 1024);
    let too_large = "x".repeat(40 * 1024);
    for p in Proto::ALL {
        let path = format!("/obj/big-{p}.m4s?size=10");
        // Under the edge's limit (a player's many cookies): served everywhere.
        let r = m.send(p, "GET", &path, &[("x-padding", &large)]).await;
        assert_eq!(r.status, 200, "{p}: 24 KiB of headers");
        let r = m.send(p, "GET", &path, &[("x-padding", &too_large)]).await;
        assert_eq!(r.status, 431, "{p}: 40 KiB of headers");
        assert_eq!(r.header("via"), "1.1 matrix-431", "{p}");
        assert_eq!(m.get(p, &path).await.status, 200, "{p}: still serving");
    }
}

/// Every access-log line (target `strata::access`) any edge in this test
/// binary writes from now on.
fn access_log() -> Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("strata::access=info"))
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .try_init()
            .expect("the only global subscriber in the e2e binary");
        log
    })
    .clone()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_names_the_protocol() {
    let log = access_log();
    let m = Matrix::start("matrix-log", |_| {}).await;
    for p in Proto::ALL {
        m.get(p, &format!("/obj/log-{p}.m4s?size=10&token=secret-{p}"))
            .await;
    }
    let line_for = |text: &str, p: Proto| {
        text.lines()
            .find(|l| l.contains(&format!("path=/obj/log-{p}.m4s")))
            .map(str::to_owned)
    };
    // A response is logged once its last byte is written, which can be just
    // after the client has it: wait (bounded) for all three lines.
    let mut text = String::new();
    for _ in 0..100 {
        text = String::from_utf8_lossy(&log.lock()).into_owned();
        if Proto::ALL.iter().all(|&p| line_for(&text, p).is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in Proto::ALL {
        let line = line_for(&text, p).unwrap_or_else(|| panic!("{p} not logged: {text}"));
        assert!(line.contains(&format!("protocol=\"{p}\"")), "{p}: {line}");
        assert!(line.contains("status=200"), "{p}: {line}");
        assert!(
            !line.contains("secret"),
            "{p}: tokens never reach the log: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_upstream_is_never_delivered_as_complete() {
    let m = Matrix::start("matrix-cut", |_| {}).await;
    for p in Proto::ALL {
        let name = format!("cut-{p}.m4s");
        // Slow enough that the head and the first bytes are out before the cut.
        let path = format!("/obj/{name}?size=300000&cut=100000&delay=30");
        match m.try_send(p, "GET", &path, &[], Bytes::new()).await {
            Ok(r) => panic!(
                "{p}: a truncated body ended like a complete one: {} with {} bytes",
                r.status,
                r.body.len()
            ),
            Err(e) => assert!(!e.is_empty(), "{p}"),
        }
        // Not cached: the next request goes upstream again.
        assert!(
            m.try_send(p, "GET", &path, &[], Bytes::new())
                .await
                .is_err(),
            "{p}"
        );
        assert_eq!(m.fetches_of(&name), 2, "{p}");
        let fine = m.get(p, &format!("/obj/fine-{p}.m4s?size=10")).await;
        assert_eq!(fine.status, 200, "{p}: the edge still serves");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_by_the_edge() {
    let m = Matrix::start("matrix-cors", |_| {}).await;
    for p in Proto::ALL {
        let preflight = m
            .send(
                p,
                "OPTIONS",
                &format!("/obj/cors-{p}.m4s"),
                &[
                    ("origin", "https://player.example"),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "range"),
                ],
            )
            .await;
        assert_eq!(preflight.status, 204, "{p}");
        assert_eq!(preflight.header("access-control-allow-origin"), "*", "{p}");
        assert!(
            preflight
                .header("access-control-allow-headers")
                .contains("Range"),
            "{p}"
        );
        assert_eq!(m.origin.state.hits(&format!("/obj/cors-{p}.m4s")), 0, "{p}");
    }
}

/// Seconds between an HTTP `Date` value and now.
fn seconds_from_now(date: &str) -> u64 {
    let date = httpdate::parse_http_date(date).unwrap_or_else(|e| panic!("{date:?}: {e}"));
    let now = SystemTime::now();
    now.duration_since(date)
        .or_else(|_| date.duration_since(now))
        .expect("comparable")
        .as_secs()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_is_dated_when_it_leaves_the_edge() {
    let m = Matrix::start("matrix-date", |_| {}).await;
    // The origin made this copy long ago; its age travels in Age.
    let old = "Mon,%2001%20Jan%202024%2000:00:00%20GMT";
    for p in Proto::ALL {
        let path = format!("/obj/date-{p}.m4s?size=10&cc=max-age%3D600&date={old}");
        let miss = m.get(p, &path).await;
        let hit = m.get(p, &path).await;
        assert!(hit.header("cache-status").contains("hit"), "{p}");
        let refused = m
            .try_send(p, "POST", &path, &[], Bytes::from("x"))
            .await
            .unwrap_or_else(|e| panic!("{p} POST: {e}"));
        assert_eq!(refused.status, 405, "{p}");
        for (what, r) in [("miss", &miss), ("hit", &hit), ("405", &refused)] {
            assert!(
                seconds_from_now(r.header("date")) < 60,
                "{p} {what}: Date {:?}",
                r.header("date")
            );
        }
    }
}
