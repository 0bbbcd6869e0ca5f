use std::net::SocketAddr;

use http::{request::Parts, Method, StatusCode};
use prometheus_client::registry::Registry;

use super::{Qoe, QoeConfig};
use crate::request::{MediaRequest, Protocol};

fn qoe() -> (Registry, Qoe) {
    let mut registry = Registry::default();
    let config = QoeConfig {
        pathway: "cdn-a".into(),
        pathways: vec!["cdn-b".into()],
        ..QoeConfig::default()
    };
    let qoe = Qoe::new(config, &mut registry, None, Vec::new());
    (registry, qoe)
}

fn parts(method: Method, uri: &str, headers: &[(&str, &str)]) -> Parts {
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(()).expect("request").into_parts().0
}

/// What the edge does: parse the request once, then let QoE read it.
fn observe(qoe: &Qoe, parts: &Parts, protocol: Protocol) {
    let ignored = ["CMCD".to_owned()];
    let request =
        MediaRequest::parse(parts, client(), protocol, &ignored, None).expect("request parses");
    qoe.observe(&request, &parts.headers);
}

fn client() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 40000))
}

fn text(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
    text
}

fn assert_has(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
}

#[test]
fn query_and_header_cmcd_count_alike_on_every_protocol() {
    let (registry, qoe) = qoe();
    let query = "/live/a/v1/seg-1.m4s?token=x&CMCD=bl%3D4000%2Cbr%3D800%2Cbs%2Cmtp%3D5000%2Cot%3Dv%2Csf%3Dh%2Csid%3D%22s1%22%2Csu";
    observe(&qoe, &parts(Method::GET, query, &[]), Protocol::Http1);
    let headers = [
        ("cmcd-object", "br=800,ot=v"),
        ("cmcd-request", "bl=4000,mtp=5000,dl=3000"),
        ("cmcd-session", "sf=d,sid=\"s2\""),
    ];
    for protocol in [Protocol::Http2, Protocol::Http3] {
        observe(
            &qoe,
            &parts(Method::GET, "/live/a/v1/seg-2.m4s", &headers),
            protocol,
        );
    }
    // No CMCD: nothing counted.
    observe(
        &qoe,
        &parts(Method::GET, "/live/a/v1/seg-3.m4s", &[]),
        Protocol::Http1,
    );
    let t = text(&registry);
    assert_has(
        &t,
        &[
            r#"strata_qoe_requests_total{cdn="cdn-a",protocol="h1",country="unknown",format="hls",object="video"} 1"#,
            r#"strata_qoe_requests_total{cdn="cdn-a",protocol="h2",country="unknown",format="dash",object="video"} 1"#,
            r#"strata_qoe_requests_total{cdn="cdn-a",protocol="h3",country="unknown",format="dash",object="video"} 1"#,
            r#"strata_qoe_buffer_starvation_total{cdn="cdn-a",protocol="h1",country="unknown"} 1"#,
            r#"strata_qoe_startup_requests_total{cdn="cdn-a",protocol="h1",country="unknown"} 1"#,
            r#"strata_qoe_encoded_bitrate_bits_per_second_count{cdn="cdn-a",country="unknown"} 3"#,
            r#"strata_qoe_encoded_bitrate_bits_per_second_bucket{le="800000.0",cdn="cdn-a",country="unknown"} 3"#,
            r#"strata_qoe_measured_throughput_bits_per_second_count{cdn="cdn-a",country="unknown"} 3"#,
            r#"strata_qoe_buffer_length_seconds_sum{cdn="cdn-a",country="unknown"} 12.0"#,
            r#"strata_qoe_deadline_seconds_count{cdn="cdn-a",country="unknown"} 2"#,
            r#"strata_qoe_sessions_active{cdn="cdn-a",country="unknown"} 2"#,
        ],
    );
    assert!(
        !t.contains("s1") && !t.contains("s2\""),
        "no session id in labels:\n{t}"
    );
}

#[test]
fn players_name_only_configured_pathways() {
    let (registry, qoe) = qoe();
    for (uri, cdn) in [
        ("/x.m4s?CMCD=cdn%3D%22cdn-b%22%2Cot%3Dv", "cdn-b"),
        ("/x.m4s?_HLS_pathway=cdn-b&CMCD=ot%3Dv", "cdn-b"),
        (
            "/x.m4s?CMCD=cdn%3D%22evil-%F0%9F%98%80%22%2Cot%3Dv",
            "never",
        ),
        ("/x.m4s?CMCD=cdn%3D%22made-up%22%2Cot%3Dv", "other"),
    ] {
        observe(&qoe, &parts(Method::GET, uri, &[]), Protocol::Http1);
        if cdn != "never" {
            let t = text(&registry);
            assert!(t.contains(&format!("cdn=\"{cdn}\"")), "{uri}: {t}");
        }
    }
    let t = text(&registry);
    assert!(!t.contains("made-up"), "{t}");
}

#[test]
fn malformed_cmcd_is_counted_and_ignored() {
    let (registry, qoe) = qoe();
    for (uri, headers) in [
        ("/a.m4s?CMCD=br%3Dabc", vec![]),
        ("/a.m4s?CMCD=%FF%FE", vec![]),
        ("/a.m4s", vec![("cmcd-request", "bl=(1 2")]),
        ("/a.m4s", vec![("cmcd-session", "sid=\"unterminated")]),
    ] {
        observe(&qoe, &parts(Method::GET, uri, &headers), Protocol::Http1);
    }
    let huge = format!("/a.m4s?CMCD={}", "br%3D1%2C".repeat(3000));
    observe(&qoe, &parts(Method::GET, &huge, &[]), Protocol::Http1);
    let t = text(&registry);
    assert_has(
        &t,
        &[
            r#"strata_qoe_malformed_total{source="query",reason="value"} 1"#,
            r#"strata_qoe_malformed_total{source="query",reason="encoding"} 1"#,
            r#"strata_qoe_malformed_total{source="query",reason="too-long"} 1"#,
            r#"strata_qoe_malformed_total{source="header",reason="syntax"} 2"#,
        ],
    );
    assert!(
        !t.contains("strata_qoe_requests_total{"),
        "nothing recorded:\n{t}"
    );
}

#[test]
fn the_beacon_takes_json_and_cmcd_event_mode_and_refuses_the_rest() {
    let (registry, qoe) = qoe();
    let post = |body: &str, content_type: &str| {
        let p = parts(
            Method::POST,
            "/qoe/beacon",
            &[("content-type", content_type)],
        );
        qoe.beacon(&p, body.as_bytes(), client(), Protocol::Http2)
            .expect("the beacon path is answered")
            .head
            .status
    };
    let json = "application/json";
    assert_eq!(
        post(
            r#"{"session":"b1","event":"start","startup_ms":1200,"bitrate_kbps":2500}"#,
            json
        ),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post(
            r#"[{"session":"b1","event":"rebuffer_start"},{"session":"b1","event":"rebuffer_end","duration_ms":900},
                {"session":"b1","event":"bitrate_switch","bitrate_kbps":800},{"session":"b1","event":"error","fatal":false,"code":"NET"},
                {"session":"b1","event":"end"}]"#,
            "text/plain"
        ),
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post("e=ps,sta=p,msd=700,sid=\"c1\",ts=1700000000000,v=2\ne=e,ec=(\"X\"),sid=\"c1\",ts=1700000000001,v=2\n", "application/cmcd"),
        StatusCode::NO_CONTENT
    );
    for (body, content_type) in [
        ("not json", json),
        (r#"{"session":"b1","event":"explode"}"#, json),
        (r#"{"session":"","event":"end"}"#, json),
        (r#"{"session":"b1","event":"end","extra":1}"#, json),
        ("[]", json),
        ("sta=p,sid=\"c2\"", "application/cmcd"),
        ("e=ps,sid=unquoted", "application/cmcd"),
    ] {
        assert_eq!(post(body, content_type), StatusCode::BAD_REQUEST, "{body}");
    }
    let t = text(&registry);
    assert_has(
        &t,
        &[
            r#"strata_qoe_beacons_total{outcome="ok"} 3"#,
            r#"strata_qoe_beacons_total{outcome="bad"} 7"#,
            r#"strata_qoe_malformed_total{source="beacon",reason="json"} 5"#,
            r#"strata_qoe_startup_seconds_count{cdn="cdn-a",country="unknown"} 2"#,
            r#"strata_qoe_startup_seconds_sum{cdn="cdn-a",country="unknown"} 1.9"#,
            r#"strata_qoe_rebuffers_total{cdn="cdn-a",country="unknown"} 1"#,
            r#"strata_qoe_rebuffer_seconds_total{cdn="cdn-a",country="unknown"} 0.9"#,
            r#"strata_qoe_bitrate_switches_total{cdn="cdn-a",country="unknown"} 1"#,
            r#"strata_qoe_player_errors_total{cdn="cdn-a",country="unknown",fatal="false"} 2"#,
            r#"strata_qoe_sessions_active{cdn="cdn-a",country="unknown"} 1"#,
            r#"strata_qoe_sessions_started_total{cdn="cdn-a",country="unknown"} 2"#,
        ],
    );
    // Other paths are not the beacon's; other methods are refused.
    let get = parts(Method::GET, "/qoe/beacon", &[]);
    let answer = qoe
        .beacon(&get, b"", client(), Protocol::Http1)
        .expect("answered");
    assert_eq!(answer.head.status, StatusCode::METHOD_NOT_ALLOWED);
    let other = parts(Method::POST, "/drm/clearkey", &[]);
    assert!(qoe
        .beacon(&other, b"{}", client(), Protocol::Http1)
        .is_none());
}
