//! The pipeline with an injected clock.

use std::time::SystemTime;

use super::*;
use crate::policy::PolicyConfig;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

/// An edge named `node_id` over an upstream nobody listens on.
fn edge_with(node_id: &str, policy: Option<Policy>) -> Edge {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Arc::new(EdgeMetrics::register(&mut registry));
    let upstream = crate::upstream::UpstreamConfig {
        urls: vec!["http://127.0.0.1:1".into()],
        ..Default::default()
    };
    let pool =
        Arc::new(UpstreamPool::new(upstream, metrics.upstream.clone()).expect("upstream pool"));
    Edge::new(
        node_id.into(),
        CacheConfig::default(),
        pool,
        metrics,
        policy,
    )
    .expect("edge")
}

/// Token windows move with the edge's clock, not the machine's: a
/// token's whole life is checked here without sleeping.
#[tokio::test]
async fn token_windows_follow_the_injected_clock() {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_600_000);
    let token = toml::from_str(&format!(
        "keys = [{{ id = \"k\", secret = \"{SECRET}\" }}]\nrequire = [\"/live/\"]\n"
    ))
    .expect("token config");
    let policy = Policy::init(PolicyConfig {
        token: Some(token),
        geo: None,
    })
    .expect("policy");
    let mut edge = edge_with("clock-edge", Some(policy));
    let clock = Clock::manual(start);
    edge.set_clock(clock.clone());
    let edge = Arc::new(edge);
    let signed = crate::policy::sign(
        SECRET,
        "/live/a/*",
        Duration::from_secs(60),
        start,
        None,
        None,
    )
    .expect("sign");
    let parts = http::Request::get(format!("/live/a/1.m4s?token={signed}"))
        .body(())
        .expect("request")
        .into_parts()
        .0;
    let client = SocketAddr::from(([192, 0, 2, 1], 40000));
    let reason = |response: &EdgeResponse| {
        response
            .head
            .header_str(crate::policy::REJECT_REASON_HEADER)
            .map(str::to_owned)
    };

    // Valid now: past the policy (the upstream is unreachable: 502).
    let (response, _) = edge.handle(&parts, client, Protocol::Http1).await;
    assert_eq!(reason(&response), None);
    assert_eq!(response.head.status, StatusCode::BAD_GATEWAY);
    // An hour later it has expired (clock skew allowance included).
    clock.advance(Duration::from_secs(3600));
    let (response, _) = edge.handle(&parts, client, Protocol::Http1).await;
    assert_eq!(response.head.status, StatusCode::FORBIDDEN);
    assert_eq!(reason(&response).as_deref(), Some("expired"));
}

/// `Cache-Status` is built by hand on the hit path: it reads as RFC 9211's
/// `node; detail[; ttl=N]`, a negative remaining lifetime included.
#[test]
fn cache_status_values_read_as_rfc_9211() {
    let edge = edge_with("edge-7", None);
    assert_eq!(
        edge.cache_status("hit", Some(3600)),
        "edge-7; hit; ttl=3600"
    );
    assert_eq!(edge.cache_status("hit", Some(-4)), "edge-7; hit; ttl=-4");
    assert_eq!(
        edge.cache_status("fwd=miss; stored", None),
        "edge-7; fwd=miss; stored"
    );
    assert_eq!(super::respond::CACHE_STATUS.as_str(), "cache-status");
}
