//! What reading CMCD costs a request (target: under 1 µs, issue 9).
//!
//! `Qoe::observe` (the edge's hook, reading the request the edge already
//! parsed into a `MediaRequest`, which is not timed here) on a segment request with a full CMCD v1 query (every key
//! hls.js sends, a session id included, so the per-session state is updated
//! too), with the same data as CMCD headers, with a v2 payload carrying inner
//! lists, and on a request without CMCD (what every other request pays).
//! Countries come from the MaxMind test database, as on an edge with `[geo]`.
//!
//! `cargo bench --bench qoe`; `benches/qoe_instructions.sh` counts the
//! instructions per call, which a loaded machine does not skew. Without `--bench` (as `cargo test --all-targets`
//! runs it) it exits at once.

use std::hint::black_box;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::Criterion;
use http::request::Parts;
use prometheus_client::registry::Registry;
use strata::policy::GeoDb;
use strata::qoe::{Qoe, QoeConfig};
use strata::request::{MediaRequest, Protocol};

const FULL_QUERY: &str = "/live/news/v720/seg-1234.m4s?token=abc&CMCD=bl%3D21300%2Cbr%3D3200%2Cbs%2Ccid%3D%22faec5fc2-ac30-11eabb37-0242ac130002%22%2Cd%3D4004%2Cdl%3D18500%2Cmtp%3D48100%2Cnor%3D%22..%252F300kbps%252Fsegment35.m4v%22%2Cnrr%3D%2212323-48763%22%2Cot%3Dv%2Cpr%3D1.08%2Crtp%3D12000%2Csf%3Dh%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22%2Cst%3Dl%2Csu%2Ctb%3D6000";

fn geoip_db() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geoip/GeoIP2-Country-Test.mmdb")
}

fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

/// The request as the edge's pipeline parsed it, with its headers.
fn parsed(parts: Parts, client: SocketAddr, protocol: Protocol) -> (MediaRequest, Parts) {
    let ignored = ["CMCD".to_owned()];
    let request = MediaRequest::parse(&parts, client, protocol, &ignored, None).expect("parses");
    (request, parts)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let mut criterion = Criterion::default().configure_from_args();
    let mut registry = Registry::default();
    let geo = Arc::new(GeoDb::open(geoip_db()).expect("geo database"));
    let qoe = Qoe::new(
        QoeConfig {
            pathway: "cdn-a".into(),
            ..QoeConfig::default()
        },
        &mut registry,
        Some(geo),
        Vec::new(),
    );
    // A British address in the test database.
    let client: SocketAddr = "81.2.69.142:40000".parse().expect("addr");
    let full = parsed(parts(FULL_QUERY, &[]), client, Protocol::Http1);
    let headers = parts(
        "/live/news/v720/seg-1234.m4s",
        &[
            ("cmcd-object", "br=3200,d=4004,ot=v,tb=6000"),
            (
                "cmcd-request",
                "bl=21300,dl=18500,mtp=48100,nor=\"..%2F300kbps%2Fsegment35.m4v\",nrr=\"12323-48763\",su",
            ),
            (
                "cmcd-session",
                "cid=\"faec5fc2-ac30-11eabb37-0242ac130002\",pr=1.08,sf=h,sid=\"6e2fb550-c457-11e9-bb97-0800200c9a66\",st=l",
            ),
            ("cmcd-status", "bs,rtp=12000"),
        ],
    );
    let headers = parsed(headers, client, Protocol::Http2);
    let v2 = parts(
        "/live/news/v720/seg-1234.m4s?CMCD=v%3D2%2Cbr%3D(3200%3Bv%20128%3Ba)%2Cbl%3D(21300%3Bv%2019000%3Ba)%2Cmtp%3D(48100)%2Ccdn%3D%22cdn-a%22%2Cot%3Dv%2Csf%3Dh%2Csid%3D%226e2fb550-c457-11e9-bb97-0800200c9a66%22%2Csta%3Dp%2Cst%3Dl",
        &[],
    );
    let v2 = parsed(v2, client, Protocol::Http3);
    let plain = parsed(
        parts("/live/news/v720/seg-1234.m4s?token=abc", &[]),
        client,
        Protocol::Http1,
    );
    let cases = [
        ("full-v1-query", &full),
        ("full-v1-headers", &headers),
        ("v2-query", &v2),
        ("no-cmcd", &plain),
    ];
    // `QOE_CALLS=NAME:N`: call one case N times and nothing else, for
    // `perf stat -e instructions:u` (a count a loaded machine does not skew;
    // run once with N=0 for the set-up's share).
    if let Ok(spec) = std::env::var("QOE_CALLS") {
        let (name, calls) = spec.split_once(':').expect("QOE_CALLS=NAME:N");
        let calls: u64 = calls.parse().expect("a number of calls");
        let (_, (request, parts)) = cases
            .iter()
            .find(|(case, _)| *case == name)
            .expect("a case name");
        for _ in 0..calls {
            qoe.observe(black_box(request), black_box(&parts.headers));
        }
        return;
    }
    let mut group = criterion.benchmark_group("qoe");
    group.bench_function("observe/full-v1-query", |b| {
        b.iter(|| qoe.observe(black_box(&full.0), &full.1.headers))
    });
    group.bench_function("observe/full-v1-headers", |b| {
        b.iter(|| qoe.observe(black_box(&headers.0), &headers.1.headers))
    });
    group.bench_function("observe/v2-query", |b| {
        b.iter(|| qoe.observe(black_box(&v2.0), &v2.1.headers))
    });
    group.bench_function("observe/no-cmcd", |b| {
        b.iter(|| qoe.observe(black_box(&plain.0), &plain.1.headers))
    });
    group.finish();
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains(r#"strata_qoe_requests_total{cdn="cdn-a",protocol="h1",country="GB",format="hls",object="video"}"#),
        "the bench recorded what it measured:\n{text}"
    );
    criterion.final_summary();
}
