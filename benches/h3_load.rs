//! HTTP/3 vs HTTP/2 vs HTTP/1.1 through one edge, in one run.
//!
//! Starts an in-process origin and edge (TLS + QUIC on one port), warms the
//! cache with one 2 MB segment, then drives each protocol for a fixed time
//! with the same number of concurrent requests and prints throughput, latency
//! percentiles and the h3/h2 and h3/h1 ratios. All of it over loopback, so it
//! measures the edge's per-protocol cost, not a network.
//!
//! `cargo bench --bench h3_load`; tune with H3_LOAD_SECS (default 10),
//! H3_LOAD_CONCURRENCY (requests in flight, default 32) and
//! H3_LOAD_CONNECTIONS (connections that h2 and h3 spread them over, default 4;
//! h1 uses one connection per request in flight).
//!
//! To compare HTTP/3 transport settings in one session: H3_LOAD_EDGE=default
//! runs the edge with quinn's default 1452-byte MTU bound (as before
//! `server.h3.max_udp_payload`), H3_LOAD_EDGE_MTU=N sets that bound,
//! H3_LOAD_CLIENT=default uses an untuned QUIC client (it accepts only
//! 1472-byte datagrams, so the edge cannot send bigger ones), and
//! H3_LOAD_SHARED_ENDPOINT=1 puts all h3 client connections on one UDP
//! socket (by default each has its own, as in a browser),
//! H3_LOAD_STATS=1 prints one client connection's path statistics,
//! H3_LOAD_TRACE=1 where in the run the slow h3 and h2 requests were, and
//! H3_LOAD_H1=0 skips HTTP/1.1.

#[path = "../tests/e2e/harness.rs"]
#[allow(dead_code)]
mod harness;
#[path = "../tests/e2e/quic_client.rs"]
#[allow(dead_code)]
mod quic_client;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

const SEGMENT: usize = 2 * 1024 * 1024;
const PATH: &str = "/obj/bench.m4s?size=2097152&cc=max-age%3D3600";

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Run {
    requests: usize,
    bytes: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// `(start since the run began, latency)` of every complete request.
    samples: Vec<(Duration, Duration)>,
    errors: usize,
}

impl Run {
    fn req_per_s(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }

    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }

    /// H3_LOAD_TRACE=1: where the slow requests are. p99 of the requests
    /// started after the first second (fresh connections warming up) and,
    /// per 0.5 s of the run, how many requests started and how many of them
    /// took longer than the run's p99.
    fn trace(&self, name: &str) {
        let p99 = Duration::from_secs_f64(self.percentile(0.99) / 1000.0);
        let mut steady: Vec<Duration> = self
            .samples
            .iter()
            .filter(|(start, _)| *start >= Duration::from_secs(1))
            .map(|&(_, latency)| latency)
            .collect();
        steady.sort();
        let pct = |v: &[Duration], p: f64| {
            v.get(((v.len() as f64 - 1.0) * p).round() as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        };
        eprintln!(
            "{name} trace: after 1 s: n {} p50 {:.1} p90 {:.1} p99 {:.1} p99.9 {:.1} max {:.1} ms; mean {:.1} ms",
            steady.len(),
            pct(&steady, 0.5),
            pct(&steady, 0.9),
            pct(&steady, 0.99),
            pct(&steady, 0.999),
            pct(&steady, 1.0),
            self.latencies.iter().map(|d| d.as_secs_f64()).sum::<f64>() * 1000.0
                / self.latencies.len().max(1) as f64,
        );
        let buckets = (self.elapsed.as_millis() / 500 + 1) as usize;
        let mut started = vec![0usize; buckets];
        let mut slow = vec![0usize; buckets];
        for &(start, latency) in &self.samples {
            let b = (start.as_millis() / 500) as usize;
            started[b.min(buckets - 1)] += 1;
            if latency > p99 {
                slow[b.min(buckets - 1)] += 1;
            }
        }
        let cells: Vec<String> = started
            .iter()
            .zip(&slow)
            .map(|(n, s)| format!("{s}/{n}"))
            .collect();
        eprintln!("{name} trace: > p99 per 0.5 s: {}", cells.join(" "));
    }
}

/// One worker's loop: issue requests back to back until `until`.
/// What one worker brings back: `(start since the run began, latency)` of
/// each complete request, bytes received, failed requests.
type WorkerResult = (Vec<(Duration, Duration)>, u64, usize);

async fn worker<F, Fut>(begun: Instant, until: Instant, mut fetch: F) -> WorkerResult
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, String>>,
{
    let mut latencies = Vec::new();
    let mut bytes = 0;
    let mut errors = 0;
    while Instant::now() < until {
        let started = Instant::now();
        match fetch().await {
            Ok(n) if n == SEGMENT as u64 => {
                latencies.push((started - begun, started.elapsed()));
                bytes += n;
            }
            Ok(n) => {
                errors += 1;
                eprintln!("short body: {n} bytes");
            }
            Err(e) => {
                errors += 1;
                eprintln!("request failed: {e}");
            }
        }
        if errors >= 10 {
            // Its connection is gone: each further try fails at once.
            eprintln!("a worker stops after {errors} failed requests");
            break;
        }
    }
    (latencies, bytes, errors)
}

async fn collect(started: Instant, tasks: Vec<tokio::task::JoinHandle<WorkerResult>>) -> Run {
    let mut run = Run {
        requests: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
        samples: Vec::new(),
        errors: 0,
    };
    for task in tasks {
        let (samples, bytes, errors) = task.await.expect("worker");
        run.requests += samples.len();
        run.latencies
            .extend(samples.iter().map(|&(_, latency)| latency));
        run.samples.extend(samples);
        run.bytes += bytes;
        run.errors += errors;
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    run
}

async fn drive_h3(
    addr: SocketAddr,
    cert: &harness::TestCert,
    secs: u64,
    n: usize,
    conns: usize,
) -> Run {
    // Same flow-control windows as the HTTP/2 client below: 4 MiB per stream, 16 MiB per connection.
    let mut config = quic_client::client_config(&cert.der, false);
    let mut transport = quinn::TransportConfig::default();
    transport
        .stream_receive_window(quinn::VarInt::from_u32(4 << 20))
        .receive_window(quinn::VarInt::from_u32(16 << 20));
    let tuned = std::env::var("H3_LOAD_CLIENT").map_or(true, |v| v != "default");
    if tuned {
        // The same UDP tuning as the edge's defaults (see H3Config): PLPMTUD
        // up to 6500 bytes.
        let mut mtu = quinn::MtuDiscoveryConfig::default();
        mtu.upper_bound(6500);
        transport.mtu_discovery_config(Some(mtu));
    }
    config.transport_config(Arc::new(transport));
    // Each connection has its own UDP socket, as each browser connection
    // does; H3_LOAD_SHARED_ENDPOINT=1 puts them all on one client socket
    // (the bench's set-up until 2026-12-04), where the client's single
    // endpoint serves its connections unevenly and adds its own tail.
    let shared = std::env::var("H3_LOAD_SHARED_ENDPOINT").is_ok_and(|v| v == "1");
    let new_endpoint = || {
        if tuned {
            tuned_endpoint(config.clone())
        } else {
            quic_client::endpoint(config.clone())
        }
    };
    let mut endpoints = vec![new_endpoint()];
    let mut connections = Vec::new();
    for i in 0..conns {
        if i > 0 && !shared {
            endpoints.push(new_endpoint());
        }
        let endpoint = endpoints.last().expect("an endpoint");
        connections.push(quic_client::H3Connection::connect(endpoint, addr).await);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let tasks = (0..n)
        .map(|i| {
            let conn = connections[i % conns].clone();
            tokio::spawn(worker(started, until, move || {
                let conn = conn.clone();
                async move {
                    let mut stream = conn.open(quic_client::request("GET", PATH, &[])).await;
                    let head = stream.recv_response().await.map_err(|e| format!("{e:?}"))?;
                    if head.status() != 200 {
                        return Err(format!("status {}", head.status()));
                    }
                    let mut n = 0u64;
                    while let Some(chunk) =
                        stream.recv_data().await.map_err(|e| format!("{e:?}"))?
                    {
                        n += chunk.remaining() as u64;
                    }
                    Ok(n)
                }
            }))
        })
        .collect();
    let run = collect(started, tasks).await;
    if std::env::var("H3_LOAD_STATS").is_ok() {
        let s = connections[0].quic.stats();
        eprintln!(
            "h3 client conn0: rx {} datagrams {} bytes ({} B avg), mtu {}, lost {}, cwnd {}, congestion events {}, rtt {:?}",
            s.udp_rx.datagrams,
            s.udp_rx.bytes,
            s.udp_rx.bytes / s.udp_rx.datagrams.max(1),
            s.path.current_mtu,
            s.path.lost_packets,
            s.path.cwnd,
            s.path.congestion_events,
            s.path.rtt
        );
    }
    for c in &connections {
        c.close();
    }
    run
}

/// A client endpoint that accepts 64 KiB datagrams (the transport parameter
/// that lets the edge's PLPMTUD go above 1472 bytes).
fn tuned_endpoint(config: quinn::ClientConfig) -> quinn::Endpoint {
    let socket = std::net::UdpSocket::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let mut endpoint_config = quinn::EndpointConfig::default();
    endpoint_config
        .max_udp_payload_size(65527)
        .expect("max_udp_payload_size");
    let mut endpoint =
        quinn::Endpoint::new(endpoint_config, None, socket, Arc::new(quinn::TokioRuntime))
            .expect("client endpoint");
    endpoint.set_default_client_config(config);
    endpoint
}

async fn tls_stream(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("tcp connect");
    tcp.set_nodelay(true).expect("nodelay");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("tls handshake");
    TokioIo::new(stream)
}

fn tls_config(cert: &harness::TestCert, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der.clone()).expect("root");
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

fn get() -> http::Request<Empty<Bytes>> {
    http::Request::builder()
        .uri(format!("https://localhost{PATH}"))
        .body(Empty::new())
        .expect("request")
}

/// HTTP/1.1 wants a `Host` header beside the absolute-form target (RFC 9112
/// §3.2: the edge answers 400 without one, and hyper's client does not add it).
fn get_h1() -> http::Request<Empty<Bytes>> {
    let mut request = get();
    request.headers_mut().insert(
        http::header::HOST,
        http::HeaderValue::from_static("localhost"),
    );
    request
}

async fn count_body(response: http::Response<hyper::body::Incoming>) -> Result<u64, String> {
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    let mut body = response.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|e| e.to_string())?.into_data() {
            n += data.len() as u64;
        }
    }
    Ok(n)
}

async fn drive_h2(
    addr: SocketAddr,
    cert: &harness::TestCert,
    secs: u64,
    n: usize,
    conns: usize,
) -> Run {
    let tls = tls_config(cert, b"h2");
    let mut senders = Vec::new();
    for _ in 0..conns {
        let io = tls_stream(addr, tls.clone()).await;
        let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(4 << 20)
            .initial_connection_window_size(16 << 20)
            .handshake(io)
            .await
            .expect("h2 handshake");
        tokio::spawn(connection);
        senders.push(sender);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let tasks = (0..n)
        .map(|i| {
            let sender = senders[i % conns].clone();
            tokio::spawn(worker(started, until, move || {
                let mut sender = sender.clone();
                async move {
                    let response = sender
                        .send_request(get())
                        .await
                        .map_err(|e| e.to_string())?;
                    count_body(response).await
                }
            }))
        })
        .collect();
    collect(started, tasks).await
}

async fn drive_h1(addr: SocketAddr, cert: &harness::TestCert, secs: u64, n: usize) -> Run {
    let tls = tls_config(cert, b"http/1.1");
    let mut senders = Vec::new();
    for _ in 0..n {
        let io = tls_stream(addr, tls.clone()).await;
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .expect("h1 handshake");
        tokio::spawn(connection);
        senders.push(Arc::new(tokio::sync::Mutex::new(sender)));
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let tasks = senders
        .into_iter()
        .map(|sender| {
            tokio::spawn(worker(started, until, move || {
                let sender = sender.clone();
                async move {
                    // One request at a time per connection; the lock is never contended.
                    let mut sender = sender.lock().await;
                    sender.ready().await.map_err(|e| e.to_string())?;
                    let response = sender
                        .send_request(get_h1())
                        .await
                        .map_err(|e| e.to_string())?;
                    count_body(response).await
                }
            }))
        })
        .collect();
    collect(started, tasks).await
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this
    // binary without it, and a load run does not belong in the test suite.
    if !std::env::args().any(|a| a == "--bench") {
        println!("h3_load: skipped outside `cargo bench --bench h3_load`");
        return;
    }
    let secs = env("H3_LOAD_SECS", 10);
    let n = env("H3_LOAD_CONCURRENCY", 32) as usize;
    let conns = (env("H3_LOAD_CONNECTIONS", 4) as usize).clamp(1, n);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        strata::install_crypto_provider();
        let origin = harness::start_origin().await;
        let cert = harness::TestCert::localhost();
        let certificate = cert.config.clone();
        let edge = harness::start_edge(&[origin.url()], "bench-edge", |c| {
            c.server.certificates = vec![certificate];
            c.cache.size = strata::config::ByteSize(256 << 20);
            // H3_LOAD_EDGE=default: the edge's HTTP/3 transport as it was
            // before these knobs (quinn defaults), to compare in one session.
            if std::env::var("H3_LOAD_EDGE").is_ok_and(|v| v == "default") {
                c.server.h3.max_udp_payload = 1452;
            }
            if let Some(mtu) = std::env::var("H3_LOAD_EDGE_MTU").ok().and_then(|v| v.parse().ok()) {
                c.server.h3.max_udp_payload = mtu;
            }
        })
        .await;
        let tls = edge.tls.expect("tls");
        let quic = edge.quic.expect("quic");
        let warm = quic_client::H3Connection::connect(
            &quic_client::endpoint(quic_client::client_config(&cert.der, false)),
            quic,
        )
        .await
        .get(PATH)
        .await;
        assert_eq!(warm.body.len(), SEGMENT, "cache warm");
        assert_eq!(origin.state.hits("/obj/bench.m4s"), 1);

        println!(
            "h3_load: {} s per protocol, {n} requests in flight ({conns} connections for h2/h3, {n} for h1), {} MB object, cache hits over loopback TLS, {} cores",
            secs,
            SEGMENT as f64 / 1e6,
            std::thread::available_parallelism().map_or(0, |p| p.get()),
        );
        let h3 = drive_h3(quic, &cert, secs, n, conns).await;
        let h2 = drive_h2(tls, &cert, secs, n, conns).await;
        // H3_LOAD_H1=0: skip HTTP/1.1 (shorter runs when comparing h3 with h2).
        let h1 = if std::env::var("H3_LOAD_H1").is_ok_and(|v| v == "0") {
            Run {
                requests: 0,
                bytes: 0,
                elapsed: Duration::from_secs(secs),
                latencies: Vec::new(),
                samples: Vec::new(),
                errors: 0,
            }
        } else {
            drive_h1(tls, &cert, secs, n).await
        };
        println!(
            "{:<9} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "protocol", "req/s", "MB/s", "p50 ms", "p99 ms", "errors"
        );
        for (name, run) in [("HTTP/3", &h3), ("HTTP/2", &h2), ("HTTP/1.1", &h1)] {
            println!(
                "{:<9} {:>9.1} {:>9.1} {:>9.2} {:>9.2} {:>7}",
                name,
                run.req_per_s(),
                run.mb_per_s(),
                run.percentile(0.50),
                run.percentile(0.99),
                run.errors
            );
        }
        if std::env::var("H3_LOAD_TRACE").is_ok() {
            h3.trace("HTTP/3");
            h2.trace("HTTP/2");
        }
        let ratio_h2 = h3.req_per_s() / h2.req_per_s();
        println!(
            "h3/h2 = {:.2}  h3/h1 = {:.2}  (target h3/h2 >= 0.80: {})",
            ratio_h2,
            h3.req_per_s() / h1.req_per_s(),
            if ratio_h2 >= 0.8 { "met" } else { "NOT met" }
        );
        assert_eq!(origin.state.hits("/obj/bench.m4s"), 1, "every request was a hit");
        // A protocol whose requests failed measured nothing: say so, not a ratio.
        for (name, run) in [("HTTP/3", &h3), ("HTTP/2", &h2), ("HTTP/1.1", &h1)] {
            assert_eq!(run.errors, 0, "{name}: {} requests failed (first errors above)", run.errors);
        }
        edge.shutdown().await;
    });
}
