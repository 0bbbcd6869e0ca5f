//! Unit tests of the steering service: tag writers, configuration, request
//! parsing, ranking and hysteresis (on tokio's paused clock), countries, HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request, StatusCode};
use tower::ServiceExt;

use super::probe::Outcome;
use super::query::{QueryError, SteeringQuery};
use super::rank::{Reason, Session};
use super::*;
use crate::config::OriginConfig;
use crate::package::{dash, hls};

const PLAYBACK: &str = "127.0.0.1:8081";

fn geo_db() -> String {
    format!(
        "{}/../tests/fixtures/geoip/GeoIP2-Country-Test.mmdb",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn config(extra: &str) -> SteeringConfig {
    let text = format!(
        r#"
[server]
http = "{PLAYBACK}"
[steering]
ttl = "10s"
probe_interval = "2s"
{extra}
[[steering.pathways]]
id = "cdn-a"
base_url = "https://a.cdn.example.com"
[[steering.pathways]]
id = "cdn-b"
base_url = "https://b.cdn.example.com/"
countries = ["GB", "se"]
"#
    );
    OriginConfig::parse(&text)
        .expect("config")
        .steering
        .expect("[steering]")
}

fn steering(extra: &str) -> Steering {
    config(extra)
        .init(PLAYBACK.parse().expect("addr"), SteeringMetrics::default())
        .expect("init")
}

fn fail() -> Outcome {
    Outcome::failed("connection refused")
}

fn pass() -> Outcome {
    Outcome {
        ok: true,
        status: Some(200),
        ttfb: Some(Duration::from_millis(5)),
        bits_per_second: Some(50e6),
        ..Outcome::default()
    }
}

const MASTER: &str = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"main/audio.m3u8\"
#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=800000,CODECS=\"avc1.64001f,mp4a.40.2\",RESOLUTION=1280x720,FRAME-RATE=25.000,AUDIO=\"audio\"
main/video.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=400000,AVERAGE-BANDWIDTH=350000,CODECS=\"avc1.64001e,mp4a.40.2\",RESOLUTION=640x360,FRAME-RATE=25.000,AUDIO=\"audio\"
low/video.m3u8
";

#[tokio::test]
async fn hls_master_lists_every_variant_once_per_pathway() {
    let s = steering("");
    let tags = s.tags("news", Format::Hls);
    let out = hls::with_steering(MASTER, &tags);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[3],
        "#EXT-X-CONTENT-STEERING:SERVER-URI=\"http://127.0.0.1:8081/steering/news.json\",PATHWAY-ID=\"cdn-a\""
    );
    let uris = hls::check::multivariant(&out);
    assert_eq!(
        uris,
        [
            "https://a.cdn.example.com/live/news/main/video.m3u8",
            "https://a.cdn.example.com/live/news/low/video.m3u8",
            "https://b.cdn.example.com/live/news/main/video.m3u8",
            "https://b.cdn.example.com/live/news/low/video.m3u8",
        ]
    );
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("#EXT-X-STREAM-INF:") {
            let pathway = if lines[i + 1].contains("//a.") {
                "cdn-a"
            } else {
                "cdn-b"
            };
            assert!(
                l.ends_with(&format!(
                    ",AUDIO=\"audio-{pathway}\",PATHWAY-ID=\"{pathway}\""
                )),
                "{l}"
            );
        }
    }
    assert!(out.contains(
        "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio-cdn-b\",NAME=\"main\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\",URI=\"https://b.cdn.example.com/live/news/main/audio.m3u8\"\n"
    ));
    assert_eq!(out.matches("#EXT-X-CONTENT-STEERING").count(), 1);
    assert_eq!(out.matches("#EXT-X-VERSION").count(), 1);
}

#[tokio::test]
async fn mpd_names_a_base_url_per_pathway_and_the_steering_server() {
    let s = steering("");
    let mpd = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"dynamic\">\n  <Period id=\"1\" start=\"PT0S\"/>\n  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"/time\"/>\n</MPD>\n";
    let out = dash::with_steering(mpd, &s.tags("news", Format::Dash));
    let doc = roxmltree::Document::parse(&out).expect("well-formed XML");
    let root = doc.root_element();
    let children: Vec<roxmltree::Node> = root.children().filter(|n| n.is_element()).collect();
    let names: Vec<&str> = children.iter().map(|n| n.tag_name().name()).collect();
    assert_eq!(
        names,
        [
            "BaseURL",
            "BaseURL",
            "Location",
            "Location",
            "ContentSteering",
            "Period",
            "UTCTiming"
        ]
    );
    assert_eq!(children[0].attribute("serviceLocation"), Some("cdn-a"));
    assert_eq!(
        children[0].text(),
        Some("https://a.cdn.example.com/live/news/")
    );
    assert_eq!(children[1].attribute("serviceLocation"), Some("cdn-b"));
    assert_eq!(children[3].attribute("serviceLocation"), Some("cdn-b"));
    assert_eq!(
        children[3].text(),
        Some("https://b.cdn.example.com/live/news/manifest.mpd")
    );
    assert_eq!(
        children[4].attribute("defaultServiceLocation"),
        Some("cdn-a")
    );
    assert_eq!(children[4].attribute("queryBeforeStart"), Some("true"));
    assert_eq!(
        children[4].text(),
        Some("http://127.0.0.1:8081/steering/news/dash.json")
    );
}

#[test]
fn configuration_errors_name_the_key() {
    let bad = |section: &str| {
        let text = format!("[server]\nhttp = \"{PLAYBACK}\"\n[steering]\n{section}");
        OriginConfig::parse(&text).expect_err(section).to_string()
    };
    let one = "[[steering.pathways]]\nid = \"a\"\nbase_url = \"http://a.example\"\n";
    assert!(bad("").contains("pathways"));
    assert!(bad(&format!("ttl = \"0s\"\n{one}")).starts_with("steering.ttl"));
    assert!(bad(&format!("server = \"ftp://x\"\n{one}")).starts_with("steering.server"));
    assert!(bad(&format!("{one}{one}")).contains("steering.pathways[1].id"));
    assert!(
        bad("[[steering.pathways]]\nid = \"a b\"\nbase_url = \"http://a\"\n")
            .starts_with("steering.pathways[0].id")
    );
    assert!(
        bad("[[steering.pathways]]\nid = \"a\"\nbase_url = \"a.example\"\n")
            .starts_with("steering.pathways[0].base_url")
    );
    assert!(
        bad(&format!("{one}countries = [\"USA\"]\n")).starts_with("steering.pathways[0].countries")
    );
    assert!(bad(&format!("{one}probe_path = \"x\"\n")).contains("probe_path"));
    assert!(bad(&format!("{one}wieght = 2\n")).contains("wieght"));
    assert!(bad(&format!(
        "[steering.geo]\ndatabase = \"/nonexistent.mmdb\"\n{one}"
    ))
    .starts_with("steering.geo.database"));
    // Listening on every address, the origin cannot name itself to players.
    let err = OriginConfig::parse(&format!(
        "[server]\nhttp = \"0.0.0.0:8081\"\n[steering]\n{one}"
    ))
    .expect_err("no server");
    assert!(err.to_string().starts_with("steering.server"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_failing_pathway_drops_at_once_and_comes_back_after_the_hysteresis() {
    let s = steering("");
    let hysteresis = s.config().hysteresis();
    assert_eq!(hysteresis, Duration::from_secs(10));
    let ranking = |s: &Steering| s.ids(&s.state().ranking(None));
    assert_eq!(ranking(&s), ["cdn-a", "cdn-b"]);
    s.record_probe(0, &fail());
    assert_eq!(
        ranking(&s),
        ["cdn-b", "cdn-a"],
        "one failed probe is enough"
    );
    // Passing again, but not for long enough: still last.
    s.record_probe(0, &pass());
    tokio::time::advance(hysteresis / 2).await;
    s.record_probe(0, &pass());
    assert_eq!(ranking(&s), ["cdn-b", "cdn-a"]);
    // A failure restarts the clock.
    s.record_probe(0, &fail());
    tokio::time::advance(hysteresis / 2).await;
    s.record_probe(0, &pass());
    tokio::time::advance(hysteresis / 2).await;
    s.record_probe(0, &pass());
    assert_eq!(ranking(&s), ["cdn-b", "cdn-a"], "flapping keeps it down");
    tokio::time::advance(hysteresis / 2).await;
    s.record_probe(0, &pass());
    assert_eq!(
        ranking(&s),
        ["cdn-a", "cdn-b"],
        "ranked back after the hysteresis"
    );
    let snapshot = s.snapshot();
    assert_eq!(snapshot["pathways"][0]["failed_probes"], 2);
    assert_eq!(snapshot["ranking"]["default"][0], "cdn-a");
}

#[tokio::test]
async fn sessions_keep_their_pathway_until_it_fails_and_split_by_weight() {
    let s = steering("");
    let session = |id, pathway| Session { id, pathway };
    let first = s.decide(&session(7, None), None, Format::Hls);
    assert_eq!(first.reason, Reason::New);
    let mine = first.priority[0];
    let again = s.decide(&session(7, Some(mine)), None, Format::Hls);
    assert_eq!((again.priority[0], again.reason), (mine, Reason::Kept));
    s.record_probe(mine, &fail());
    let moved = s.decide(&session(7, Some(mine)), None, Format::Hls);
    assert_eq!(moved.reason, Reason::Moved);
    assert_ne!(moved.priority[0], mine);
    assert_eq!(
        *moved.priority.last().expect("two"),
        mine,
        "the dead pathway is last"
    );

    // Equal weights: new sessions spread over both; weight 3:1 skews it.
    let s = steering("");
    let share = |s: &Steering| {
        (0..1000u64)
            .filter(|id| {
                s.decide(&session(id * 7919, None), None, Format::Dash)
                    .priority[0]
                    == 0
            })
            .count()
    };
    let even = share(&s);
    assert!((400..=600).contains(&even), "{even}");
    let mut c = config("");
    c.pathways[0].weight = Some(3);
    let s = c
        .init(PLAYBACK.parse().expect("addr"), SteeringMetrics::default())
        .expect("init");
    let skewed = share(&s);
    assert!((650..=850).contains(&skewed), "{skewed}");
    // A QoE penalty of 1 makes a pathway a last resort among the healthy.
    s.set_qoe_penalty("cdn-a", 1.0);
    assert_eq!(s.ids(&s.state().ranking(None)), ["cdn-b", "cdn-a"]);
}

#[tokio::test]
async fn countries_prefer_their_pathways_and_only_trusted_proxies_are_believed() {
    let s = steering(&format!(
        "[steering.geo]\ndatabase = \"{}\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n",
        geo_db()
    ));
    let xff = |v: &str| {
        let mut h = axum::http::HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().expect("value"));
        h
    };
    let proxy: SocketAddr = "10.1.2.3:5000".parse().expect("addr");
    let stranger: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
    assert_eq!(s.country(proxy, &xff("81.2.69.142")).as_deref(), Some("GB"));
    assert_eq!(
        s.country(proxy, &xff("216.160.83.56")).as_deref(),
        Some("US")
    );
    assert_eq!(
        s.country(stranger, &xff("81.2.69.142")),
        None,
        "untrusted peer"
    );
    let gb = s.decide(
        &Session {
            id: 0,
            pathway: Some(0),
        },
        Some("GB"),
        Format::Hls,
    );
    assert_eq!(s.ids(&gb.priority), ["cdn-b", "cdn-a"]);
    assert_eq!(gb.reason, Reason::Moved);
    let us = s.decide(
        &Session {
            id: 0,
            pathway: Some(0),
        },
        Some("US"),
        Format::Hls,
    );
    assert_eq!((us.priority[0], us.reason), (0, Reason::Kept));
    // Health first: a dead preferred pathway is last in its country too.
    s.record_probe(1, &fail());
    assert_eq!(s.ids(&s.state().ranking(Some("GB"))), ["cdn-a", "cdn-b"]);
    assert_eq!(s.snapshot()["ranking"]["GB"][0], "cdn-a");
}

#[tokio::test]
async fn steering_queries_ignore_garbage_and_keep_foreign_parameters() {
    let s = steering("");
    let parse = |q: &str| SteeringQuery::parse(&s, Some(q), || 0xabc).expect("parsed");
    // dash.js: every service location, quoted, with a throughput each.
    let q = parse("_DASH_pathway=%22cdn-a,cdn-b%22&_DASH_throughput=5000000,&token=t%3D1");
    assert_eq!(q.throughput, [(0, 5_000_000)]);
    assert_eq!(q.kept, ["token=t%3D1"]);
    assert!(!q.known_session);
    assert_eq!(q.session.id, 0xabc);
    let reload = q.reload_uri("http://o/steering/c.json", "cdn-b");
    assert_eq!(
        reload,
        "http://o/steering/c.json?session=0000000000000abc&pathway=cdn-b&token=t%3D1"
    );
    // The reload carries the session back.
    let back = parse(reload.split_once('?').expect("query").1);
    assert!(back.known_session);
    assert_eq!(
        back.session,
        Session {
            id: 0xabc,
            pathway: Some(1)
        }
    );
    // Garbage: ignored, counted, never an error.
    for garbage in [
        "_HLS_pathway=%00%ff&_HLS_throughput=lots",
        "_HLS_pathway=cdn-z&_HLS_throughput=1000",
        "_HLS_pathway=cdn-a&_HLS_throughput=-5",
        "_HLS_pathway=cdn-a&_HLS_throughput=NaN",
        "_HLS_throughput=1e400",
        "session=zz&pathway=%22;drop",
        "&&&=&==",
    ] {
        let q = parse(garbage);
        assert!(q.throughput.is_empty(), "{garbage}");
        assert!(!q.known_session && q.session.pathway.is_none(), "{garbage}");
    }
    let huge = format!("token={}", "x".repeat(10_000));
    assert_eq!(
        SteeringQuery::parse(&s, Some(&huge), || 1),
        Err(QueryError::TooLong)
    );
}

async fn call(
    router: axum::Router,
    uri: &str,
    peer: &str,
) -> (StatusCode, axum::http::HeaderMap, String) {
    let mut request = Request::get(uri).body(Body::empty()).expect("request");
    request
        .extensions_mut()
        .insert(ConnectInfo(peer.parse::<SocketAddr>().expect("peer")));
    let response = router.oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn the_steering_service_answers_per_session_and_never_5xx() {
    let s = Arc::new(steering(""));
    let routes = || super::http::playback_routes(s.clone());
    let (status, headers, body) = call(
        routes(),
        "/steering/news/dash.json?_DASH_pathway=%22cdn-a%22&_DASH_throughput=2000000&token=abc",
        "127.0.0.1:1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["VERSION"], 1);
    assert_eq!(json["TTL"], 10);
    assert_eq!(json["PATHWAY-PRIORITY"], json["SERVICE-LOCATION-PRIORITY"]);
    let reload = json["RELOAD-URI"].as_str().expect("reload");
    assert!(reload.starts_with("http://127.0.0.1:8081/steering/news/dash.json?session="));
    assert!(reload.ends_with("&token=abc"), "{reload}");
    assert_eq!(
        s.snapshot()["pathways"][0]["player_throughput_bps"],
        2_000_000.0
    );

    let (status, _, body) = call(routes(), "/steering/news.json", "127.0.0.1:1").await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert!(json.get("SERVICE-LOCATION-PRIORITY").is_none());

    let huge = format!("/steering/news.json?_HLS_pathway={}", "a".repeat(5000));
    assert_eq!(
        call(routes(), &huge, "127.0.0.1:1").await.0,
        StatusCode::URI_TOO_LONG
    );
    assert_eq!(
        call(routes(), "/steering/..%2Fetc.json", "127.0.0.1:1")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
    let (status, _, _) = call(
        routes(),
        "/steering/news.json?_HLS_pathway=%ff%fe&_HLS_throughput=%%%",
        "127.0.0.1:1",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "garbage is ignored");

    let (status, headers, _) = call(
        routes(),
        "/live/news/steer/master.m3u8?token=abc",
        "127.0.0.1:1",
    )
    .await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers[header::LOCATION],
        "https://a.cdn.example.com/live/news/master.m3u8?token=abc"
    );
    s.record_probe(0, &fail());
    let (_, headers, _) = call(routes(), "/live/news/steer/manifest.mpd", "127.0.0.1:1").await;
    assert_eq!(
        headers[header::LOCATION],
        "https://b.cdn.example.com/live/news/manifest.mpd"
    );
}

#[tokio::test(start_paused = true)]
async fn thin_pathways_rank_after_fat_ones_while_the_reports_are_fresh() {
    let s = steering("");
    let ranking = |s: &Steering| s.ids(&s.state().ranking(None));
    s.report_throughput(0, 1_000_000);
    s.report_throughput(1, 10_000_000);
    assert_eq!(
        ranking(&s),
        ["cdn-b", "cdn-a"],
        "a quarter of the best is thin"
    );
    // Reports three TTLs old no longer count.
    tokio::time::advance(s.config().ttl * 3).await;
    s.record_probe(0, &pass());
    assert_eq!(ranking(&s), ["cdn-a", "cdn-b"]);
    assert_eq!(s.snapshot()["pathways"][0]["degraded"], false);
}

#[test]
fn the_commented_example_in_conf_origin_toml_is_valid() {
    let shipped = include_str!("../../../conf/origin.toml");
    let at = shipped.find("# [steering]").expect("a [steering] example");
    // The example runs to the first blank line; other sections follow it.
    let example: String = shipped[at..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.strip_prefix("# ").unwrap_or(l))
        .map(|l| l.replace("/var/lib/strata/GeoLite2-Country.mmdb", &geo_db()))
        .collect::<Vec<_>>()
        .join("\n");
    let text = format!("{}\n{example}\n", &shipped[..at]);
    let config = OriginConfig::parse(&text).expect("uncommented example");
    let steering = config.steering.expect("[steering]");
    assert_eq!(steering.pathways.len(), 2);
    assert_eq!(steering.pathways[1].countries, ["US", "CA"]);
}

#[tokio::test]
async fn tagged_manifests_get_their_own_etag_and_revalidate() {
    let s = Arc::new(steering(""));
    let inner = axum::Router::new().route(
        "/live/{channel}/master.m3u8",
        axum::routing::get(|| async { ([(header::ETAG, "\"untagged\"")], MASTER).into_response() }),
    );
    use axum::response::IntoResponse;
    let app = inner.layer(axum::middleware::from_fn_with_state(
        s.clone(),
        super::http::tag_manifests,
    ));
    let (status, headers, body) = call(app.clone(), "/live/news/master.m3u8", "127.0.0.1:1").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("#EXT-X-CONTENT-STEERING:"), "{body}");
    let etag = headers[header::ETAG].to_str().expect("etag").to_owned();
    assert_ne!(etag, "\"untagged\"");
    assert_eq!(
        headers[header::CONTENT_LENGTH],
        body.len().to_string().as_str()
    );

    let request = |method: &str, inm: Option<&str>| {
        let mut r = Request::builder()
            .method(method)
            .uri("/live/news/master.m3u8");
        if let Some(inm) = inm {
            r = r.header(header::IF_NONE_MATCH, inm);
        }
        r.body(Body::empty()).expect("request")
    };
    let response = app
        .clone()
        .oneshot(request("GET", Some(&etag)))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    // A ranking change changes the tags, so the old ETag no longer matches.
    s.record_probe(0, &fail());
    let response = app
        .clone()
        .oneshot(request("GET", Some(&etag)))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let response = app.oneshot(request("HEAD", None)).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_ne!(response.headers()[header::CONTENT_LENGTH], "0");
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    assert!(body.is_empty(), "HEAD has no body");
}

#[tokio::test]
async fn the_qoe_penalty_is_set_through_the_admin_api_with_the_bearer_token() {
    let s = Arc::new(steering(""));
    let put = |token: Option<&str>, id: &str, body: &str| {
        let app = super::http::admin_routes(s.clone(), token.map(str::to_owned));
        let request = Request::put(format!("/api/steering/pathways/{id}/qoe_penalty"))
            .header(header::AUTHORIZATION, "Bearer admin-token-0123456789")
            .body(Body::from(body.to_owned()))
            .expect("request");
        async move { app.oneshot(request).await.expect("response").status() }
    };
    let token = Some("admin-token-0123456789");
    assert_eq!(
        put(None, "cdn-a", r#"{"penalty":1}"#).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(
            Some("another-token-0123456789"),
            "cdn-a",
            r#"{"penalty":1}"#
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        put(token, "cdn-z", r#"{"penalty":1}"#).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        put(token, "cdn-a", r#"{"penalty":2}"#).await,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        put(token, "cdn-a", "nonsense").await,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        put(token, "cdn-a", r#"{"penalty":1}"#).await,
        StatusCode::OK
    );
    let (status, _, body) = call(
        super::http::admin_routes(s.clone(), None),
        "/api/steering",
        "127.0.0.1:1",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let view: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(view["ranking"]["default"][0], "cdn-b");
    assert_eq!(view["pathways"][0]["qoe_penalty"], 1.0);
}

fn cloned() -> Steering {
    let text = format!(
        r#"
[server]
http = "{PLAYBACK}"
[steering]
[[steering.pathways]]
id = "cdn-a"
base_url = "https://a.cdn.example.com/edge"
[[steering.pathways]]
id = "cdn-b"
base_url = "https://b.cdn.example.com"
[[steering.pathways]]
id = "cdn-a-eu"
clone = {{ base = "cdn-a", host = "eu.a.cdn.example.com", params = {{ region = "eu", "k 2" = "v&w" }} }}
"#
    );
    OriginConfig::parse(&text)
        .expect("config")
        .steering
        .expect("[steering]")
        .init(PLAYBACK.parse().expect("addr"), SteeringMetrics::default())
        .expect("init")
}

/// hls.js 1.7's `performUriReplacement` (content-steering-controller.ts) as
/// it treats these URLs: the hostname replaced, port and path kept, each
/// parameter set in key order, `encodeURIComponent`-encoded.
fn as_hls_js_clones(uri: &str, host: &str, params: &[(&str, &str)]) -> String {
    let (scheme, rest) = uri.split_once("://").expect("absolute");
    let path = &rest[rest.find('/').expect("path")..];
    let mut out = format!("{scheme}://{host}{path}");
    let mut sorted = params.to_vec();
    sorted.sort();
    for (i, (k, v)) in sorted.iter().enumerate() {
        let enc = |s: &str| s.replace(' ', "%20").replace('&', "%26");
        out.push(if i == 0 { '?' } else { '&' });
        out.push_str(&format!("{}={}", enc(k), enc(v)));
    }
    out
}

#[tokio::test]
async fn a_clone_is_ranked_and_described_in_steering_manifests_but_not_listed_in_playlists() {
    let s = Arc::new(cloned());
    // Playlists and MPDs list only the pathways with a base_url.
    let master = hls::with_steering(MASTER, &s.tags("news", Format::Hls));
    assert!(
        !master.contains("cdn-a-eu") && !master.contains("eu.a."),
        "{master}"
    );
    let tags = s.tags("news", Format::Dash);
    assert_eq!(
        tags.pathways
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>(),
        ["cdn-a", "cdn-b"]
    );
    let expected = serde_json::json!([{
        "BASE-ID": "cdn-a",
        "ID": "cdn-a-eu",
        "URI-REPLACEMENT": { "HOST": "eu.a.cdn.example.com", "PARAMS": { "k 2": "v&w", "region": "eu" } },
    }]);
    for path in ["/steering/news.json", "/steering/news/dash.json"] {
        let (status, _, body) =
            call(super::http::playback_routes(s.clone()), path, "127.0.0.1:1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(json["PATHWAY-CLONES"], expected, "{path}: {body}");
        // New sessions are spread over equally good pathways, clones included.
        let mut priority: Vec<&str> = json["PATHWAY-PRIORITY"]
            .as_array()
            .expect("PATHWAY-PRIORITY")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        priority.sort_unstable();
        assert_eq!(priority, ["cdn-a", "cdn-a-eu", "cdn-b"], "{path}");
    }
    // What hls.js derives from cdn-a's variant is the clone's own base URL,
    // the one its probes ask.
    let variant = hls::check::multivariant(&master)
        .into_iter()
        .find(|u| u.starts_with("https://a."))
        .expect("a cdn-a variant");
    assert_eq!(
        variant,
        "https://a.cdn.example.com/edge/live/news/main/video.m3u8"
    );
    assert_eq!(s.base_url(2), "https://eu.a.cdn.example.com/edge");
    assert_eq!(
        as_hls_js_clones(
            &variant,
            "eu.a.cdn.example.com",
            &[("region", "eu"), ("k 2", "v&w")]
        ),
        "https://eu.a.cdn.example.com/edge/live/news/main/video.m3u8?k%202=v%26w&region=eu"
    );
    // A clone is a pathway like the others: probed, ranked, first when the rest fail.
    s.record_probe(0, &fail());
    s.record_probe(1, &fail());
    assert_eq!(
        s.ids(&s.state().ranking(None)),
        ["cdn-a-eu", "cdn-a", "cdn-b"]
    );
    // Playlists still name a listed pathway (the best of those) to start on.
    assert_eq!(s.tags("news", Format::Hls).default_pathway, "cdn-a");
    assert_eq!(s.best_base(None).1, "https://eu.a.cdn.example.com/edge");
    assert_eq!(s.snapshot()["pathways"][2]["clone_of"], "cdn-a");
    // Without clones, no PATHWAY-CLONES key at all.
    assert!(steering("").pathway_clones().is_empty());
}

#[test]
fn clone_errors_name_the_key() {
    let bad = |pathways: &str| {
        let text = format!(
            "[server]\nhttp = \"{PLAYBACK}\"\n[steering]\n[[steering.pathways]]\nid = \"a\"\nbase_url = \"https://a.example\"\n[[steering.pathways]]\nid = \"p\"\nbase_url = \"http://p.example:8080\"\n{pathways}"
        );
        OriginConfig::parse(&text)
            .map(drop)
            .map_err(|e| e.to_string())
    };
    let clone = |body: &str| format!("[[steering.pathways]]\nid = \"c\"\nclone = {{ {body} }}\n");
    assert_eq!(bad(&clone("base = \"a\", host = \"c.example\"")), Ok(()));
    for (pathways, key) in [
        (
            "[[steering.pathways]]\nid = \"c\"\nbase_url = \"https://c.example\"\nclone = { base = \"a\", host = \"c.example\" }\n".to_owned(),
            "steering.pathways[2].base_url",
        ),
        (clone("base = \"nope\", host = \"c.example\""), "steering.pathways[2].clone.base"),
        (clone("base = \"p\", host = \"c.example\""), "steering.pathways[2].clone.base"),
        (clone("base = \"a\", host = \"c.example:8443\""), "steering.pathways[2].clone.host"),
        (clone("base = \"a\", host = \"https://c.example\""), "steering.pathways[2].clone.host"),
        (clone("base = \"a\", host = \"\""), "steering.pathways[2].clone.host"),
        (clone("base = \"a\", host = \"c.example\", params = { \"\" = \"x\" }"), "steering.pathways[2].clone.params"),
        (clone("base = \"a\", host = \"c.example\", params = { k = \"a\\nb\" }"), "steering.pathways[2].clone.params"),
        (clone("base = \"a\", host = \"c.example\", hots = \"x\""), "hots"),
        (
            format!("{}[[steering.pathways]]\nid = \"d\"\nclone = {{ base = \"c\", host = \"d.example\" }}\n", clone("base = \"a\", host = \"c.example\"")),
            "steering.pathways[3].clone.base",
        ),
        (
            "[[steering.pathways]]\nid = \"c\"\n".to_owned(),
            "steering.pathways[2].base_url",
        ),
    ] {
        let err = bad(&pathways).expect_err(&pathways);
        assert!(err.contains(key), "{pathways}: {err}");
    }
}
