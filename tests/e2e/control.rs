//! The CDN control API on the admin listener, through real sockets: purges
//! (hard, soft, in-flight fills), TTL overrides, geo rules and token keys
//! changed at run time, authentication, and refusals of bad input.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use strata::admin::AdminToken;
use strata::cache::freshness::TtlOverride;
use strata::config::EdgeConfig;
use strata::policy::{sign, GeoConfig, TokenConfig};

use crate::harness::{client, content, metric, start_edge, start_origin, TestEdge};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
const SECRET: &str = "0123456789abcdef0123456789abcdef";
const NEXT_SECRET: &str = "fedcba9876543210fedcba9876543210";

pub fn with_admin_token(config: &mut EdgeConfig) {
    config.server.admin_token = Some(AdminToken::new(ADMIN_TOKEN).expect("token"));
}

/// One control API call with the admin token; the status and the JSON body
/// (`Value::Null` when the body is not JSON).
pub async fn api(
    edge: &TestEdge,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client()
        .request(method, format!("http://{}{path}", edge.admin))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status();
    let text = response.text().await.expect("admin body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

pub async fn purge(edge: &TestEdge, body: Value) -> u64 {
    let (status, reply) = api(edge, Method::POST, "/api/purge", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    reply["purged"].as_u64().expect("purged")
}

async fn get(edge: &TestEdge, path: &str) -> reqwest::Response {
    let response = client().get(edge.url(path)).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    response
}

async fn fetch_twice(edge: &TestEdge, paths: &[&str]) {
    for path in paths {
        for _ in 0..2 {
            get(edge, path).await.bytes().await.expect("body");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_by_url_prefix_and_surrogate_key_drop_only_what_they_select() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "purge-edge", with_admin_token).await;
    let tagged = ["/obj/s1?skey=red%20blue", "/obj/s2?skey=green"];
    fetch_twice(
        &edge,
        &["/obj/u1", "/obj/u2", "/obj/p1", "/obj/p2", "/obj/q1"],
    )
    .await;
    fetch_twice(&edge, &tagged).await;
    assert_eq!(origin.state.hits("/obj/u1"), 1, "cached before the purge");

    // A URL as a player sees it: absolute, with a token that is not part of the key.
    let url = format!("{}?token=abc", edge.url("/obj/u1"));
    assert_eq!(purge(&edge, json!({ "urls": [url] })).await, 1);
    fetch_twice(&edge, &["/obj/u1", "/obj/u2"]).await;
    assert_eq!(
        origin.state.hits("/obj/u1"),
        2,
        "purged URL is fetched again"
    );
    assert_eq!(origin.state.hits("/obj/u2"), 1, "other URL stays cached");

    assert_eq!(purge(&edge, json!({ "prefix": "/obj/p" })).await, 2);
    fetch_twice(&edge, &["/obj/p1", "/obj/p2", "/obj/q1"]).await;
    assert_eq!(origin.state.hits("/obj/p1"), 2);
    assert_eq!(origin.state.hits("/obj/p2"), 2);
    assert_eq!(origin.state.hits("/obj/q1"), 1);

    assert_eq!(purge(&edge, json!({ "surrogate_keys": ["blue"] })).await, 1);
    fetch_twice(&edge, &tagged).await;
    assert_eq!(origin.state.hits("/obj/s1"), 2, "tagged blue");
    assert_eq!(origin.state.hits("/obj/s2"), 1, "tagged green only");

    assert_eq!(
        purge(&edge, json!({ "urls": ["/obj/never-fetched"] })).await,
        0
    );
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "strata_edge_purges_total{kind=\"url\",mode=\"hard\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "strata_edge_purges_total{kind=\"prefix\",mode=\"hard\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "strata_edge_purges_total{kind=\"surrogate-key\",mode=\"hard\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_soft_purge_revalidates_and_still_serves_stale_if_error() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "soft-edge", with_admin_token).await;
    let path = "/obj/soft?etag=v1&cc=max-age%3D300%2C%20stale-if-error%3D300";
    fetch_twice(&edge, &[path]).await;
    assert_eq!(origin.state.hits("/obj/soft"), 1);

    assert_eq!(
        purge(&edge, json!({ "urls": [path], "soft": true })).await,
        1
    );
    let revalidated = get(&edge, path).await;
    let status = revalidated.headers()["cache-status"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(
        status.contains("fwd-status=304"),
        "revalidated, not refetched: {status}"
    );
    assert_eq!(
        revalidated.bytes().await.expect("body"),
        content("soft", 1000)
    );
    assert_eq!(origin.state.hits("/obj/soft"), 2);
    let asked = origin.state.last_headers.lock()["/obj/soft"].clone();
    assert_eq!(asked["if-none-match"], "\"v1\"");
    fetch_twice(&edge, &[path]).await;
    assert_eq!(
        origin.state.hits("/obj/soft"),
        2,
        "fresh again after revalidation"
    );

    assert_eq!(
        purge(&edge, json!({ "prefix": "/obj/so", "soft": true })).await,
        1
    );
    origin.state.down.store(true, Ordering::SeqCst);
    let stale = get(&edge, path).await;
    let status = stale.headers()["cache-status"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(status.contains("stale-if-error"), "{status}");
    assert_eq!(stale.bytes().await.expect("body"), content("soft", 1000));
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "strata_edge_purges_total{kind=\"url\",mode=\"soft\"}"
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_reaches_fills_in_flight() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "inflight-edge", with_admin_token).await;
    let size = 1 << 20;

    // A fill that began before the purge serves its reader but is not stored.
    let path = format!("/obj/slow1?size={size}&delay=60");
    let before = get(&edge, &path).await;
    assert_eq!(purge(&edge, json!({ "urls": [path.clone()] })).await, 0);
    assert_eq!(before.bytes().await.expect("body"), content("slow1", size));
    get(&edge, &path).await.bytes().await.expect("body");
    assert_eq!(
        origin.state.hits("/obj/slow1"),
        2,
        "the old fill's result was not stored"
    );

    // Requests after the purge do not join the old fill: they start their own.
    let path = format!("/obj/slow2?size={size}&delay=60&skey=ch2");
    let before = get(&edge, &path).await;
    assert_eq!(purge(&edge, json!({ "surrogate_keys": ["ch2"] })).await, 0);
    let after = get(&edge, &path).await;
    let status = after.headers()["cache-status"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(!status.contains("collapsed"), "{status}");
    assert_eq!(origin.state.hits("/obj/slow2"), 2);
    assert_eq!(before.bytes().await.expect("body"), content("slow2", size));
    assert_eq!(after.bytes().await.expect("body"), content("slow2", size));
    // The fill started after the purge is stored.
    get(&edge, &path).await.bytes().await.expect("body");
    assert_eq!(origin.state.hits("/obj/slow2"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_overrides_win_over_upstream_freshness_and_change_at_run_time() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "ttl-edge", |c| {
        with_admin_token(c);
        c.cache.ttl_overrides = vec![TtlOverride {
            prefix: "/obj/long".into(),
            ttl: Duration::from_secs(3600),
        }];
    })
    .await;
    // `no-cache` would revalidate every time; the override keeps it for an hour.
    fetch_twice(&edge, &["/obj/long1?cc=no-cache"]).await;
    assert_eq!(origin.state.hits("/obj/long1"), 1);
    let (status, body) = api(&edge, Method::GET, "/api/cache/ttl-overrides", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body,
        json!({ "overrides": [{ "prefix": "/obj/long", "ttl": "1h" }] })
    );

    let wanted = json!({ "overrides": [{ "prefix": "/obj/short", "ttl": "0s" }] });
    let (status, body) = api(
        &edge,
        Method::PUT,
        "/api/cache/ttl-overrides",
        Some(wanted.clone()),
    )
    .await;
    assert_eq!((status, &body), (StatusCode::OK, &wanted));
    // An hour from upstream, zero by override: every request goes upstream.
    fetch_twice(&edge, &["/obj/short1?cc=max-age%3D3600"]).await;
    assert_eq!(origin.state.hits("/obj/short1"), 2);

    let (status, body) = api(
        &edge,
        Method::PUT,
        "/api/cache/ttl-overrides",
        Some(json!({ "overrides": [{ "prefix": "short", "ttl": "1s" }] })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("overrides[0].prefix"),
        "{body}"
    );
    let (status, body) = api(
        &edge,
        Method::PUT,
        "/api/cache/ttl-overrides",
        Some(json!({ "overrides": [{ "prefix": "/x/", "ttl": "soon" }] })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("overrides[0].ttl"),
        "{body}"
    );
    let (_, body) = api(&edge, Method::GET, "/api/cache/ttl-overrides", None).await;
    assert_eq!(
        body, wanted,
        "a refused change leaves the overrides as they were"
    );
}

pub fn token_and_geo(config: &mut EdgeConfig) {
    with_admin_token(config);
    config.token = Some(
        toml::from_str::<TokenConfig>(&format!(
            "keys = [{{ id = \"2026-11\", secret = \"{SECRET}\" }}]\nrequire = [\"/live/\"]\n"
        ))
        .expect("token config"),
    );
    let database = geoip_test_db();
    config.geo = Some(
        toml::from_str::<GeoConfig>(&format!(
            "database = \"{database}\"\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
        ))
        .expect("geo config"),
    );
}

/// The MaxMind test database from `tests/fixtures/geoip/` (licences beside it).
pub fn geoip_test_db() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/geoip/GeoIP2-Country-Test.mmdb")
        .display()
        .to_string()
}

fn token(secret: &str) -> String {
    sign(
        secret,
        "/live/*",
        Duration::from_secs(300),
        SystemTime::now(),
        None,
        None,
    )
    .expect("sign")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_rules_and_token_keys_change_at_run_time_all_or_nothing() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "runtime-edge", token_and_geo).await;
    let play = |ip: &'static str, secret: &'static str| {
        let url = edge.url(&format!("/live/ch/1.m4s?token={}", token(secret)));
        async move {
            let response = client()
                .get(url)
                .header("x-forwarded-for", ip)
                .send()
                .await
                .expect("play");
            let reason = response
                .headers()
                .get("strata-reject-reason")
                .map(|v| v.to_str().expect("ascii").to_owned());
            (response.status(), reason)
        }
    };
    const GB: &str = "81.2.69.142";
    const SE: &str = "89.160.20.112";
    assert_eq!(play(GB, SECRET).await.0, StatusCode::OK);

    let (status, body) = api(&edge, Method::GET, "/api/geo/rules", None).await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "rules": [] })));
    let rules = json!({ "rules": [{ "prefix": "/live/", "deny": ["GB"] }] });
    let (status, body) = api(&edge, Method::PUT, "/api/geo/rules", Some(rules.clone())).await;
    assert_eq!((status, &body), (StatusCode::OK, &rules));
    assert_eq!(
        play(GB, SECRET).await,
        (StatusCode::FORBIDDEN, Some("geo".into()))
    );
    assert_eq!(play(SE, SECRET).await.0, StatusCode::OK);
    let bad = json!({ "rules": [{ "prefix": "/vod/", "allow": ["SE"] }, { "prefix": "/live/", "deny": ["GBR"] }] });
    let (status, body) = api(&edge, Method::PUT, "/api/geo/rules", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("rules[1].deny[0]"),
        "{body}"
    );
    let (_, body) = api(&edge, Method::GET, "/api/geo/rules", None).await;
    assert_eq!(
        body, rules,
        "a refused change leaves the rules as they were"
    );
    assert_eq!(play(GB, SECRET).await.0, StatusCode::FORBIDDEN);

    // Key rotation: add the successor, tokens signed with it pass, retire the old one.
    assert_eq!(
        play(SE, NEXT_SECRET).await,
        (StatusCode::FORBIDDEN, Some("signature".into()))
    );
    let (status, body) = api(
        &edge,
        Method::POST,
        "/api/token/keys",
        Some(json!({ "id": "2026-12", "secret": NEXT_SECRET })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({ "keys": [{ "id": "2026-11" }, { "id": "2026-12" }] })
    );
    assert_eq!(play(SE, NEXT_SECRET).await.0, StatusCode::OK);
    let (status, body) = api(&edge, Method::GET, "/api/token/keys", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.to_string().contains(SECRET) && !body.to_string().contains(NEXT_SECRET));
    let (status, body) = api(&edge, Method::DELETE, "/api/token/keys/2026-11", None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({ "keys": [{ "id": "2026-12" }] }))
    );
    assert_eq!(
        play(SE, SECRET).await,
        (StatusCode::FORBIDDEN, Some("signature".into()))
    );

    let (status, _) = api(&edge, Method::DELETE, "/api/token/keys/2026-11", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = api(&edge, Method::DELETE, "/api/token/keys/2026-12", None).await;
    assert_eq!(status, StatusCode::CONFLICT, "the last key stays: {body}");
    let dup = json!({ "id": "2026-12", "secret": SECRET });
    assert_eq!(
        api(&edge, Method::POST, "/api/token/keys", Some(dup))
            .await
            .0,
        StatusCode::CONFLICT
    );
    let (status, body) = api(
        &edge,
        Method::POST,
        "/api/token/keys",
        Some(json!({ "id": "2027-01", "secret": "not-hex-but-secret" })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let error = body["error"].as_str().expect("error");
    assert!(error.starts_with("secret"), "{error}");
    assert!(
        !error.contains("not-hex-but-secret"),
        "secrets are never echoed: {error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_api_is_read_only_and_with_one_it_is_required() {
    let origin = start_origin().await;
    let open = start_edge(&[origin.url()], "no-token-edge", |_| {}).await;
    let client = client();
    let admin = |edge: &TestEdge, path: &str| format!("http://{}{path}", edge.admin);
    let refused = client
        .post(admin(&open, "/api/purge"))
        .json(&json!({ "prefix": "/" }))
        .send()
        .await
        .expect("purge");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let body: Value = refused.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("server.admin_token"),
        "{body}"
    );
    let read = client
        .get(admin(&open, "/api/cache/ttl-overrides"))
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), StatusCode::OK);

    let guarded = start_edge(&[origin.url()], "token-edge", with_admin_token).await;
    for (token, want) in [
        (None, StatusCode::UNAUTHORIZED),
        (Some("test-admin-token-012345678"), StatusCode::UNAUTHORIZED),
        (Some(ADMIN_TOKEN), StatusCode::OK),
    ] {
        let mut request = client
            .post(admin(&guarded, "/api/purge"))
            .json(&json!({ "prefix": "/obj/" }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("purge");
        assert_eq!(response.status(), want, "{token:?}");
        if want == StatusCode::UNAUTHORIZED {
            assert!(response.headers()["www-authenticate"]
                .to_str()
                .expect("ascii")
                .starts_with("Bearer"));
            let body: Value = response.json().await.expect("json");
            assert!(body["error"].is_string());
        }
    }
    let unauthenticated_read = client
        .get(admin(&guarded, "/api/token/keys"))
        .send()
        .await
        .expect("get");
    assert_eq!(unauthenticated_read.status(), StatusCode::UNAUTHORIZED);
    for path in ["/metrics", "/healthz", "/readyz", "/api/openapi.yaml"] {
        let response = client
            .get(admin(&guarded, path))
            .send()
            .await
            .expect("open route");
        assert_eq!(response.status(), StatusCode::OK, "{path} stays open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_admin_requests_get_their_4xx_and_traffic_is_unaffected() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "bad-input-edge", with_admin_token).await;
    get(&edge, "/obj/steady").await.bytes().await.expect("body");
    let raw = |method: Method, path: &str, body: &str| {
        let request = client()
            .request(method, format!("http://{}{path}", edge.admin))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body.to_owned());
        async move {
            let response = request.send().await.expect("admin");
            let status = response.status();
            let allow = response
                .headers()
                .get("allow")
                .map(|v| v.to_str().expect("ascii").to_owned());
            let body: Value = response.json().await.expect("every error is JSON");
            (
                status,
                body["error"].as_str().expect("error field").to_owned(),
                allow,
            )
        }
    };
    let cases = [
        (
            Method::POST,
            "/api/purge",
            "{not json".to_owned(),
            StatusCode::BAD_REQUEST,
            "body",
        ),
        (
            Method::POST,
            "/api/purge",
            r#"{"urls": [1]}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "urls[0]",
        ),
        (
            Method::POST,
            "/api/purge",
            r#"{"url": ["/a"]}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "url",
        ),
        (
            Method::POST,
            "/api/purge",
            r#"{"urls": ["/a"], "prefix": "/"}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "exactly one",
        ),
        (
            Method::POST,
            "/api/purge",
            r#"{"prefix": "live/"}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "prefix",
        ),
        (
            Method::POST,
            "/api/purge",
            r#"{"urls": ["/../x"]}"#.to_owned(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "urls[0]",
        ),
        (
            Method::POST,
            "/api/purge",
            r#"{"prefix": "/", "urls": null}"#.to_owned(),
            StatusCode::BAD_REQUEST,
            "urls",
        ),
        (
            Method::POST,
            "/api/token/keys",
            r#"{"id": "k"}"#.to_owned(),
            StatusCode::CONFLICT,
            "[token]",
        ),
        (
            Method::PUT,
            "/api/cache/ttl-overrides",
            format!(r#"{{"overrides": [], "pad": "{}"}}"#, "x".repeat(70 * 1024)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "larger",
        ),
        (
            Method::GET,
            "/api/nope",
            String::new(),
            StatusCode::NOT_FOUND,
            "no such route",
        ),
        (
            Method::GET,
            "/nope",
            String::new(),
            StatusCode::NOT_FOUND,
            "no such route",
        ),
        (
            Method::GET,
            "/api/purge",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
        ),
        (
            Method::DELETE,
            "/api/cache/ttl-overrides",
            String::new(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method",
        ),
    ];
    for (method, path, body, want, mention) in cases {
        let (status, error, allow) = raw(method.clone(), path, &body).await;
        assert_eq!(status, want, "{method} {path}: {error}");
        assert!(
            error.contains(mention),
            "{method} {path}: {error:?} should mention {mention:?}"
        );
        if want == StatusCode::METHOD_NOT_ALLOWED {
            assert!(
                allow.is_some(),
                "{method} {path}: 405 names what is allowed"
            );
        }
    }
    get(&edge, "/obj/steady")
        .await
        .bytes()
        .await
        .expect("still served");
    assert_eq!(origin.state.hits("/obj/steady"), 1, "still cached");
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "strata_admin_requests_total{route=\"/api/purge\",method=\"POST\",status=\"400\"}"
        ),
        Some(5.0)
    );
    assert_eq!(
        metric(
            &metrics,
            "strata_admin_requests_total{route=\"unmatched\",method=\"GET\",status=\"404\"}"
        ),
        Some(2.0)
    );
}
