//! What the access policy costs.
//!
//! 1. `Policy::check` per request (criterion): a valid token plus a geo
//!    lookup in the MaxMind test database, and each half alone.
//! 2. Cache-hit throughput of an in-process edge with the policy off and on
//!    (token required + geo rules), for a 1 KB and a 2 MB object, in one run:
//!    N keep-alive HTTP/1.1 clients in a loop, req/s and the on/off ratio.
//!    Both edges get the same URL with a valid token (the off edge leaves it
//!    out of the cache key and checks nothing).
//!
//! `cargo bench --bench policy`; `STRATA_BENCH_SECS` (default 3) sets each
//! throughput round. Without `--bench` (as `cargo test --all-targets` runs
//! it) it exits at once.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::Path;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use bytes::Bytes;
use std::hint::black_box;

use criterion::Criterion;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use strata::config::EdgeConfig;
use strata::policy::{sign, GeoConfig, Policy, PolicyConfig, TokenConfig};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const CLIENTS: usize = 32;

fn geoip_db() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geoip/GeoIP2-Country-Test.mmdb")
}

fn token_config(require: &str) -> TokenConfig {
    toml::from_str(&format!(
        "keys = [{{ id = \"k1\", secret = \"{SECRET}\" }}]\nrequire = [\"{require}\"]\n"
    ))
    .expect("token config")
}

fn geo_config(prefix: &str) -> GeoConfig {
    toml::from_str(&format!(
        "database = \"{}\"\nrules = [{{ prefix = \"{prefix}\", deny = [\"GB\", \"CN\"] }}, {{ prefix = \"/vod/\", allow = [\"SE\"] }}]\n",
        geoip_db().display()
    ))
    .expect("geo config")
}

fn token(acl: &str) -> String {
    sign(
        SECRET,
        acl,
        Duration::from_secs(3600),
        SystemTime::now(),
        None,
        None,
    )
    .expect("sign")
}

fn policy_check(c: &mut Criterion) {
    let parts = |uri: &str| {
        http::Request::builder()
            .uri(uri)
            .body(())
            .expect("request")
            .into_parts()
            .0
    };
    let path = "/live/ch/main/1.m4s";
    let with_token = parts(&format!("{path}?token={}", token("/live/ch/*")));
    let se: IpAddr = "89.160.20.112".parse().expect("ip");
    let cases = [
        (
            "token+geo",
            Some(token_config("/live/")),
            Some(geo_config("/live/")),
        ),
        ("token", Some(token_config("/live/")), None),
        ("geo", None, Some(geo_config("/live/"))),
    ];
    let mut group = c.benchmark_group("policy_check");
    for (name, token, geo) in cases {
        let policy = Policy::init(PolicyConfig { token, geo }).expect("policy");
        assert!(policy
            .check(&with_token, path, se, SystemTime::now())
            .is_ok());
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(policy.check(
                    black_box(&with_token),
                    black_box(path),
                    black_box(se),
                    SystemTime::now(),
                ))
            })
        });
    }
    group.finish();
}

async fn start_origin() -> SocketAddr {
    let app = axum::Router::new().route(
        "/obj/{name}",
        get(|Path(name): Path<String>| async move {
            let size = if name.starts_with("2m") {
                2 << 20
            } else {
                1000
            };
            (
                [
                    (header::CONTENT_TYPE, "video/mp4"),
                    (header::CACHE_CONTROL, "max-age=3600"),
                ],
                Bytes::from(vec![7u8; size]),
            )
                .into_response()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

fn start_edge(origin: SocketAddr, policy: bool) -> SocketAddr {
    let mut config = EdgeConfig::default();
    config.upstream.urls = vec![format!("http://{origin}")];
    config.server.node_id = if policy { "bench-on" } else { "bench-off" }.into();
    if policy {
        config.token = Some(token_config("/obj/"));
        config.geo = Some(geo_config("/obj/"));
    }
    let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = http.local_addr().expect("addr");
    config.server.listen = vec![addr];
    let listeners = strata::EdgeListeners {
        http: vec![http],
        tls: vec![],
        quic: vec![],
        admin: None,
    };
    tokio::spawn(async move {
        strata::run(config, listeners, std::future::pending())
            .await
            .expect("edge")
    });
    addr
}

/// Requests per second from `CLIENTS` keep-alive clients for `secs`.
async fn load(url: String, secs: Duration) -> f64 {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(CLIENTS)
        .build_http();
    let uri: http::Uri = url.parse().expect("uri");
    // Warm: the object is cached and the connections are open.
    let warm = client.get(uri.clone()).await.expect("warm");
    assert_eq!(warm.status(), 200, "{url}");
    warm.into_body().collect().await.expect("warm body");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + secs;
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let client = client.clone();
            let uri = uri.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let response = client.get(uri.clone()).await.expect("request");
                    assert_eq!(response.status(), 200);
                    response.into_body().collect().await.expect("body");
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

fn hit_throughput() {
    let secs = Duration::from_secs(
        std::env::var("STRATA_BENCH_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(3),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        strata::install_crypto_provider();
        let origin = start_origin().await;
        let off = start_edge(origin, false);
        let on = start_edge(origin, true);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let query = format!("?token={}", token("/obj/*"));
        println!("\ncache-hit throughput, {CLIENTS} keep-alive HTTP/1.1 clients, {secs:?} per round, rounds alternate off/on");
        for object in ["1k", "2m"] {
            let (mut total_off, mut total_on) = (0.0, 0.0);
            for round in 0..3 {
                // Both edges get the same tokened URL, as players send it
                // whether or not the edge checks it: the difference is the
                // cost of checking, not of a longer request line.
                let off_rps = load(format!("http://{off}/obj/{object}-{round}{query}"), secs).await;
                let on_rps = load(format!("http://{on}/obj/{object}-{round}{query}"), secs).await;
                total_off += off_rps;
                total_on += on_rps;
                println!("  {object} round {round}: policy off {off_rps:>9.0} req/s, on {on_rps:>9.0} req/s");
            }
            println!(
                "{object}: policy off {:.0} req/s, policy on {:.0} req/s, on/off = {:.3} (cost {:+.1}%)",
                total_off / 3.0,
                total_on / 3.0,
                total_on / total_off,
                (1.0 - total_on / total_off) * 100.0
            );
        }
    });
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    policy_check(&mut criterion);
    criterion.final_summary();
    hit_throughput();
}
