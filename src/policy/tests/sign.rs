use std::time::Duration;

use super::{at, edgeauth, KEY};
use crate::policy::{sign, SignError, Token, TokenVerifier};

#[test]
fn sign_matches_akamai_edgeauth_byte_for_byte() {
    let cases: [(&str, Option<&str>, Option<&str>); 4] = [
        ("/live/*", None, None),
        ("/live/chan1/*!/live/chan2/master.m3u8", None, None),
        ("/live/chan1/*", Some("203.0.113.7"), Some("sess-42")),
        ("/live/*", Some("2001:db8::7"), None),
    ];
    for (acl, ip, id) in cases {
        let mut args =
            serde_json::json!({ "key": KEY, "start_time": 1795600000u64, "window_seconds": 3600 });
        if let Some(ip) = ip {
            args["ip"] = ip.into();
        }
        if let Some(id) = id {
            args["session_id"] = id.into();
        }
        let reference = edgeauth("acl", acl, args);
        let ours = sign(
            KEY,
            acl,
            Duration::from_secs(3600),
            at(1795600000),
            ip.map(|ip| ip.parse().expect("ip")),
            id,
        )
        .expect("signs");
        assert_eq!(ours, reference, "acl={acl} ip={ip:?} id={id:?}");
    }
}

#[test]
fn signed_token_verifies() {
    let token = sign(
        KEY,
        "/live/a/*",
        Duration::from_secs(60),
        at(1795600000),
        None,
        None,
    )
    .expect("signs");
    let token: Token = token.parse().expect("parses");
    let v = TokenVerifier::new(Duration::ZERO, false)
        .with_key("k", KEY)
        .expect("key");
    v.verify(
        &token,
        "/live/a/master.m3u8",
        "192.0.2.1".parse().expect("ip"),
        at(1795600030),
    )
    .expect("valid");
}

#[test]
fn sign_refuses_bad_input() {
    let s = |secret: &str, acl: &str, ttl: u64, id: Option<&str>| {
        sign(
            secret,
            acl,
            Duration::from_secs(ttl),
            at(1795600000),
            None,
            id,
        )
    };
    assert_eq!(
        s("xyz", "/live/*", 60, None),
        Err(SignError::Secret("not hex"))
    );
    assert_eq!(s(KEY, "", 60, None), Err(SignError::EmptyAcl));
    assert_eq!(
        s(KEY, "/live/*~exp=9", 60, None),
        Err(SignError::Separator("acl"))
    );
    assert_eq!(
        s(KEY, "/live/*", 60, Some("a~b")),
        Err(SignError::Separator("id"))
    );
    assert_eq!(s(KEY, "/live/*", 0, None), Err(SignError::Ttl));
    assert_eq!(
        sign(KEY, "/live/*", Duration::from_secs(60), at(0), None, None),
        Err(SignError::Start)
    );
}
