//! A test origin that counts requests and can be slow, fail or cut bodies
//! short, and helpers to run edges in-process on ports picked by the kernel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Notify};

/// Deterministic content for an object name, so every client can check bytes.
pub fn content(name: &str, size: usize) -> Bytes {
    let seed = name
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    Bytes::from(
        (0..size)
            .map(|i| seed.wrapping_add((i % 251) as u8))
            .collect::<Vec<u8>>(),
    )
}

#[derive(Default)]
pub struct OriginState {
    pub hits: Mutex<HashMap<String, u64>>,
    pub total: AtomicU64,
    /// Every request answers 503 while set.
    pub down: AtomicBool,
    /// Set once a slow body has been sent completely.
    pub slow_done: Notify,
    pub slow_finished: AtomicBool,
    /// Request headers of the last request per path.
    pub last_headers: Mutex<HashMap<String, HeaderMap>>,
}

impl OriginState {
    pub fn hits(&self, path: &str) -> u64 {
        self.hits.lock().get(path).copied().unwrap_or(0)
    }
}

pub struct TestOrigin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
    _stop: oneshot::Sender<()>,
}

impl TestOrigin {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

#[derive(serde::Deserialize, Default)]
pub struct ObjQuery {
    size: Option<usize>,
    cc: Option<String>,
    /// Milliseconds between 64 KiB chunks.
    delay: Option<u64>,
    etag: Option<String>,
    /// Send only this many bytes of `size`, then break the connection.
    cut: Option<usize>,
    status: Option<u16>,
    skey: Option<String>,
    /// A `Date` to send instead of the current one.
    date: Option<String>,
}

async fn object(
    State(state): State<Arc<OriginState>>,
    Path(name): Path<String>,
    Query(q): Query<ObjQuery>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/obj/{name}");
    *state.hits.lock().entry(path.clone()).or_default() += 1;
    state.total.fetch_add(1, Ordering::SeqCst);
    state.last_headers.lock().insert(path, headers.clone());
    if state.down.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "origin down").into_response();
    }
    if let Some(status) = q.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, "status as asked").into_response();
        if let Some(cc) = &q.cc {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, cc.parse().expect("cc"));
        }
        return response;
    }
    let size = q.size.unwrap_or(1000);
    let body = content(&name, size);
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "video/mp4")
        .header(header::CONTENT_LENGTH, size);
    if let Some(cc) = &q.cc {
        builder = builder.header(header::CACHE_CONTROL, cc);
    }
    if let Some(skey) = &q.skey {
        builder = builder.header("surrogate-key", skey);
    }
    if let Some(date) = &q.date {
        builder = builder.header(header::DATE, date);
    }
    if let Some(etag) = &q.etag {
        let etag = format!("\"{etag}\"");
        if headers
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            == Some(etag.as_str())
        {
            return Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .header(header::ETAG, etag)
                .header(
                    header::CACHE_CONTROL,
                    q.cc.as_deref().unwrap_or("max-age=60"),
                )
                .body(Body::empty())
                .expect("304");
        }
        builder = builder.header(header::ETAG, etag);
    }
    let delay = q.delay.map(Duration::from_millis);
    let cut = q.cut;
    if delay.is_none() && cut.is_none() {
        return builder.body(Body::from(body)).expect("response");
    }
    let state = state.clone();
    let stream = async_stream(body, delay, cut, state);
    builder.body(Body::from_stream(stream)).expect("response")
}

fn async_stream(
    body: Bytes,
    delay: Option<Duration>,
    cut: Option<usize>,
    state: Arc<OriginState>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    let limit = cut.unwrap_or(body.len());
    futures::stream::unfold(0usize, move |sent| {
        let body = body.clone();
        let state = state.clone();
        async move {
            if sent >= limit {
                if cut.is_some() && sent < body.len() {
                    return Some((
                        Err(std::io::Error::other("cut short on purpose")),
                        usize::MAX,
                    ));
                }
                if sent != usize::MAX {
                    state.slow_finished.store(true, Ordering::SeqCst);
                    state.slow_done.notify_waiters();
                }
                return None;
            }
            if sent > 0 {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
            }
            let end = (sent + 64 * 1024).min(limit);
            Some((Ok(body.slice(sent..end)), end))
        }
    })
}

pub const MASTER: &str = "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"a\",NAME=\"en\",URI=\"main/audio.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=800000,CODECS=\"avc1.4d401f,mp4a.40.2\",AUDIO=\"a\"\nmain/video.m3u8\n";
pub const MPD: &str = "<?xml version=\"1.0\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"dynamic\"><Period id=\"0\"><AdaptationSet><SegmentTemplate timescale=\"90000\" initialization=\"main/video/init-0.mp4\" media=\"main/video/$Number$.m4s\"/><Representation id=\"v\" bandwidth=\"800000\"/></AdaptationSet></Period></MPD>\n";

/// `/live/…`: a fixed multivariant playlist and MPD, and content for anything else.
async fn live(State(state): State<Arc<OriginState>>, Path(path): Path<String>) -> Response {
    let full = format!("/live/{path}");
    *state.hits.lock().entry(full.clone()).or_default() += 1;
    state.total.fetch_add(1, Ordering::SeqCst);
    if path.ends_with(".m3u8") {
        (
            [
                (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
                (header::CACHE_CONTROL, "max-age=1"),
            ],
            MASTER,
        )
            .into_response()
    } else if path.ends_with(".mpd") {
        (
            [
                (header::CONTENT_TYPE, "application/dash+xml"),
                (header::CACHE_CONTROL, "max-age=1"),
            ],
            MPD,
        )
            .into_response()
    } else {
        (
            [(header::CONTENT_TYPE, "video/iso.segment")],
            content(&full, 1000),
        )
            .into_response()
    }
}

/// A stand-in licence server: echoes the request body, never cacheable.
async fn licence(
    State(state): State<Arc<OriginState>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    let full = format!("/drm/{name}");
    *state.hits.lock().entry(full).or_default() += 1;
    state.total.fetch_add(1, Ordering::SeqCst);
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub async fn start_origin() -> TestOrigin {
    let state = Arc::new(OriginState::default());
    let app = Router::new()
        .route("/obj/{name}", get(object))
        .route("/live/{*path}", get(live))
        .route("/drm/{name}", axum::routing::post(licence))
        .route("/health", get(|| async { "ok" }))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind origin");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await;
    });
    TestOrigin {
        addr,
        state,
        _stop: stop,
    }
}

/// A self-signed certificate for `localhost`, made at test time.
#[derive(Clone)]
pub struct TestCert {
    pub config: strata::config::CertificateConfig,
    pub der: rustls::pki_types::CertificateDer<'static>,
}

impl TestCert {
    pub fn localhost() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
            .expect("self-signed certificate");
        Self::write(made.cert, made.key_pair)
    }

    /// A self-signed certificate for `names`.
    #[allow(dead_code)]
    pub fn for_names(names: &[&str]) -> TestCert {
        let made = rcgen::generate_simple_self_signed(
            names.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
        )
        .expect("self-signed certificate");
        Self::write(made.cert, made.key_pair)
    }

    /// A certificate browsers accept when its key is pinned: short validity
    /// (Chromium's QUIC stack refuses decades-long ones) and names for both
    /// `localhost` and `127.0.0.1`.
    #[allow(dead_code)]
    pub fn for_browser() -> TestCert {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
                127, 0, 0, 1,
            ])));
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(7);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("self-signed certificate");
        Self::write(cert, key)
    }

    fn write(cert: rcgen::Certificate, key: rcgen::KeyPair) -> TestCert {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let made = (cert, key);
        let dir = std::env::temp_dir().join(format!(
            "strata-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("cert dir");
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, made.0.pem()).expect("write cert");
        std::fs::write(&key, made.1.serialize_pem()).expect("write key");
        TestCert {
            config: strata::config::CertificateConfig { cert, key },
            der: made.0.der().clone(),
        }
    }

    /// A reqwest client trusting this certificate, speaking HTTP/1.1 only or HTTP/2 only.
    #[allow(dead_code)]
    pub fn https_client(&self, http2: bool) -> reqwest::Client {
        let root = reqwest::Certificate::from_der(&self.der).expect("root");
        let builder = reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .resolve("localhost", SocketAddr::from(([127, 0, 0, 1], 0)));
        let builder = if http2 {
            builder.http2_prior_knowledge()
        } else {
            builder.http1_only()
        };
        builder.build().expect("https client")
    }
}

pub struct TestEdge {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    #[allow(dead_code)] // read by the TLS tests
    pub tls: Option<SocketAddr>,
    /// HTTP/3 (UDP), same port as `tls`.
    #[allow(dead_code)]
    pub quic: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestEdge {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// SIGTERM equivalent: stop accepting, drain, and wait for run() to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for TestEdge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn bind() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind")
}

/// An edge with `upstreams`, configured by `tweak`.
pub async fn start_edge(
    upstreams: &[String],
    node_id: &str,
    tweak: impl FnOnce(&mut strata::config::EdgeConfig),
) -> TestEdge {
    let mut config = strata::config::EdgeConfig::default();
    config.upstream.urls = upstreams.to_vec();
    config.server.node_id = node_id.into();
    config.server.drain_timeout = Duration::from_secs(5);
    config.upstream.header_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let http = bind();
    let admin = bind();
    let addr = http.local_addr().expect("addr");
    let admin_addr = admin.local_addr().expect("addr");
    let (tls, tls_addr, quic) = if config.server.certificates.is_empty() {
        (vec![], None, vec![])
    } else {
        // TCP and UDP on one port number, as in production; retry if another
        // test holds that UDP port.
        loop {
            let l = bind();
            let a = l.local_addr().expect("addr");
            if !config.server.h3.enabled {
                break (vec![l], Some(a), vec![]);
            }
            if let Ok(udp) = std::net::UdpSocket::bind(a) {
                break (vec![l], Some(a), vec![udp]);
            }
        }
    };
    let quic_addr = quic.first().map(|s| s.local_addr().expect("udp addr"));
    config.server.listen = vec![addr];
    config.server.tls_listen = tls_addr.into_iter().collect();
    let listeners = strata::EdgeListeners {
        http: vec![http],
        tls,
        admin: Some(admin),
        quic,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        strata::run(config, listeners, async move {
            let _ = stopped.await;
        })
        .await
        .expect("edge run");
    });
    TestEdge {
        addr,
        admin: admin_addr,
        tls: tls_addr,
        quic: quic_addr,
        stop: Some(stop),
        task: Some(task),
    }
}

/// An origin and an edge that also serves TLS (h1, h2) and HTTP/3 on one
/// port, with a fresh `localhost` certificate; `tweak` configures the edge.
pub async fn start_tls_edge(
    node_id: &str,
    tweak: impl FnOnce(&mut strata::config::EdgeConfig),
) -> (TestOrigin, TestEdge, TestCert) {
    let origin = start_origin().await;
    let cert = TestCert::localhost();
    let certificate = cert.config.clone();
    let edge = start_edge(&[origin.url()], node_id, |c| {
        c.server.certificates = vec![certificate];
        tweak(c);
    })
    .await;
    (origin, edge, cert)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
}

/// The value of one sample line in Prometheus text, e.g. `name{a="b"}`.
pub fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
