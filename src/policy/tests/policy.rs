use std::net::{IpAddr, SocketAddr};

use http::{Request, StatusCode};
use prometheus_client::registry::Registry;

use super::{at, geoip, KEY};
use crate::error::EdgeError;
use crate::policy::{Denied, GeoRuleConfig, Policy, PolicyConfig, PolicyMetrics, Propagate};
use crate::request::{MediaRequest, PathError, Protocol};

const TOKEN: &str = "st=1700000000~exp=4070908800~acl=/live/*~hmac=e2bac91ac3155eb6a9e28836547361297d4e3231874ba34815e01b01f88ecfcc";
const NOW: u64 = 1795600000;

fn policy(extra_token: &str) -> Policy {
    let text = format!(
        r#"[token]
keys = [{{ id = "2026-11", secret = "{KEY}" }}]
{extra_token}

[geo]
database = {:?}
status = 451
rules = [{{ prefix = "/live/", deny = ["GB"] }}]
"#,
        geoip("GeoIP2-Country-Test.mmdb")
    );
    let cfg: PolicyConfig = toml::from_str(&text).expect("toml");
    Policy::init(cfg).expect("valid")
}

fn check(p: &Policy, uri: &str, cookie: Option<&str>, ip: &str) -> Result<Option<String>, Denied> {
    let mut req = Request::get(uri);
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let parts = req.body(()).expect("request").into_parts().0;
    let ip: IpAddr = ip.parse().expect("ip");
    p.check(&parsed(p, &parts), ip, at(NOW)).map(|g| g.token)
}

/// The request as the edge parses it before asking the policy.
fn parsed(p: &Policy, parts: &http::request::Parts) -> MediaRequest {
    let client = SocketAddr::from(([192, 0, 2, 1], 40000));
    MediaRequest::parse(parts, client, Protocol::Http1, &[], p.token_source()).expect("parses")
}

const US: &str = "216.160.83.56";
const GB: &str = "81.2.69.142";

#[test]
fn token_and_geo_decide_together() {
    let p = policy("");
    let with_token = format!("/live/a/master.m3u8?token={TOKEN}");
    assert_eq!(check(&p, &with_token, None, US), Ok(Some(TOKEN.to_owned())));
    assert_eq!(
        check(&p, &with_token, None, GB),
        Err(Denied {
            status: StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            reason: "geo"
        })
    );
    let reason = |uri: &str| check(&p, uri, None, US).expect_err(uri).reason;
    assert_eq!(reason("/live/a/master.m3u8"), "missing");
    assert_eq!(reason("/live/a/master.m3u8?token=garbage"), "malformed");
    assert_eq!(
        reason(&format!(
            "/live/a/x.ts?token={}",
            TOKEN.replace("hmac=e", "hmac=f")
        )),
        "signature"
    );
    // A path with no normal form never reaches the policy: 400 before it.
    let escapes = Request::get("/live/%2e%2e/%2e%2e/etc")
        .body(())
        .expect("request")
        .into_parts()
        .0;
    assert!(matches!(
        MediaRequest::parse(
            &escapes,
            "192.0.2.1:1".parse().expect("addr"),
            Protocol::Http1,
            &[],
            p.token_source()
        ),
        Err(EdgeError::BadPath(PathError::EscapesRoot))
    ));
    assert_eq!(
        check(&p, "/vod/a.mp4", None, GB),
        Ok(None),
        "no token needed, no geo rule"
    );
    assert_eq!(
        check(&p, "/live/a/x.ts", Some(&format!("token={TOKEN}")), US),
        Ok(Some(TOKEN.to_owned())),
        "cookie"
    );
    // A traversal cannot move a protected path out of /live/ or an open one in.
    assert_eq!(
        check(&p, "/vod/../live/a.ts", None, US)
            .expect_err("protected")
            .reason,
        "missing"
    );
}

#[test]
fn cookie_off_and_propagate_off() {
    let p = policy("cookie = false\npropagate = \"off\"");
    assert_eq!(
        check(&p, "/live/a/x.ts", Some(&format!("token={TOKEN}")), US)
            .expect_err("no cookies")
            .reason,
        "missing"
    );
    assert_eq!(
        check(&p, &format!("/live/a/x.ts?token={TOKEN}"), None, US),
        Ok(None)
    );
}

#[test]
fn rejections_are_counted_by_reason() {
    let mut registry = Registry::default();
    let metrics = PolicyMetrics::register(&mut registry);
    let p = policy("").with_metrics(metrics.clone());
    let _ = check(&p, "/live/a.m3u8", None, US);
    let _ = check(&p, "/live/a.m3u8", None, US);
    let _ = check(&p, &format!("/live/a.m3u8?token={TOKEN}"), None, GB);
    let _ = check(&p, &format!("/live/a.m3u8?token={TOKEN}"), None, US);
    assert_eq!(metrics.rejections("missing"), 2);
    assert_eq!(metrics.rejections("geo"), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains("policy_rejections_total{reason=\"missing\"} 2"),
        "{text}"
    );
    assert!(text.contains("policy_rejections_total{reason=\"not-yet-valid\"} 0"));
}

#[test]
fn keys_and_geo_rules_change_at_run_time() {
    let p = policy("");
    let uri = format!("/live/a.m3u8?token={TOKEN}");
    let other = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    assert_eq!(
        p.add_key("bad", "zz").expect_err("not hex").to_string(),
        "key.secret: not hex"
    );
    p.add_key("2026-12", other).expect("added");
    assert_eq!(p.key_ids(), ["2026-11", "2026-12"]);
    p.retire_key("2026-11").expect("retired");
    assert_eq!(
        check(&p, &uri, None, US).expect_err("old key gone").reason,
        "signature"
    );
    assert!(p.retire_key("2026-12").is_err(), "the last key stays");
    p.add_key("2026-11", KEY).expect("back");
    assert!(check(&p, &uri, None, US).is_ok());

    let bad = vec![GeoRuleConfig {
        prefix: "/live/".into(),
        deny: Some(vec!["GBR".into()]),
        allow: None,
    }];
    assert_eq!(
        p.set_geo_rules(&bad).expect_err("bad code").to_string(),
        "rules[0].deny[0]: \"GBR\" is not a two-letter country code"
    );
    assert!(
        check(&p, &uri, None, GB).is_err(),
        "a refused update changes nothing"
    );
    let rules = vec![GeoRuleConfig {
        prefix: "/live/".into(),
        deny: None,
        allow: Some(vec!["GB".into()]),
    }];
    p.set_geo_rules(&rules).expect("valid");
    assert!(check(&p, &uri, None, GB).is_ok());
    assert_eq!(check(&p, &uri, None, US).expect_err("US").reason, "geo");
    assert!(p.geo_db().is_some());
    assert_eq!(
        p.trusted_proxies(),
        [ipnet::IpNet::from(IpAddr::from([127, 0, 0, 1]))]
    );
}

#[test]
fn empty_config_lets_everything_through() {
    let p = Policy::init(PolicyConfig::default()).expect("empty");
    assert_eq!(check(&p, "/live/a.m3u8", None, GB), Ok(None));
    assert!(p.add_key("a", KEY).is_err());
    assert!(p.set_geo_rules(&[]).is_err());
    assert_eq!(p.token_param(), None);
    let grant = policy("propagate = \"cookie\"");
    let mut req = Request::get(format!("/live/a?token={TOKEN}"))
        .body(())
        .expect("req")
        .into_parts()
        .0;
    req.headers.clear();
    let g = grant
        .check(&parsed(&grant, &req), US.parse().expect("ip"), at(NOW))
        .expect("granted");
    assert_eq!(g.propagate, Propagate::Cookie);
}

#[test]
fn policy_config_refuses_unknown_sections() {
    assert!(toml::from_str::<PolicyConfig>("[tokens]\nkeys = []").is_err());
}

#[test]
fn policy_is_shared_across_request_tasks() {
    fn shared<T: Send + Sync + 'static>() {}
    shared::<Policy>();
    shared::<PolicyMetrics>();
    shared::<crate::policy::Token>();
}
