//! Encryption per channel: AES-128 against `openssl enc`, playlist and MPD
//! signalling, and the key and licence endpoints' answers to bad input.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use prometheus_client::registry::Registry;
use tower::ServiceExt;

use super::*;
use crate::keys::KeyId;

fn drm(scheme: EncryptionScheme, rotate_every: u64) -> (Drm, Registry) {
    let mut registry = Registry::default();
    let metrics = http::DrmMetrics::register(&mut registry);
    let keys = KeyService::open(&KeysConfig {
        state_dir: None,
        rotate_every,
    })
    .expect("keys");
    let config = EncryptionConfig {
        default: scheme,
        widevine_licence_url: Some("https://wv.example/licence".into()),
        playready_licence_url: Some("https://pr.example/licence".into()),
        ..EncryptionConfig::default()
    };
    (Drm::new(config, keys, metrics), registry)
}

#[test]
fn aes128_segments_match_openssl_enc() {
    // openssl enc -aes-128-cbc -K 000102…0f -iv 00…07 (PKCS#7 is its default padding)
    let key: [u8; 16] = std::array::from_fn(|i| i as u8);
    let clear = b"hello strata segment bytes 0123456789";
    let expected = "7b59282f38cd54707acb2f62198b7f47aeb257f04dba7c860cdbd84c1214809abafc9ce996452c1b32029e57ed9d9f5b";
    assert_eq!(hex::encode(aes128_segment(&key, 7, clear)), expected);
    // And against the tool itself where it is installed.
    let tmp = std::env::temp_dir().join(format!("strata-aes-{}", std::process::id()));
    std::fs::write(&tmp, clear).expect("write");
    if let Ok(out) = std::process::Command::new("openssl")
        .args(["enc", "-aes-128-cbc", "-K", &hex::encode(key), "-iv"])
        .arg(format!("{:032x}", 7))
        .arg("-in")
        .arg(&tmp)
        .output()
    {
        if out.status.success() {
            assert_eq!(hex::encode(out.stdout), expected);
        }
    }
    let _ = std::fs::remove_file(&tmp);
}

const MEDIA_PLAYLIST: &str = "#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"video/init-5.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:00.000Z
#EXTINF:2.000,
video/100.m4s
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:02.000Z
#EXTINF:2.000,
video/101.m4s
#EXT-X-DISCONTINUITY
#EXT-X-MAP:URI=\"video/init-7.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:04.000Z
#EXTINF:2.000,
video/102.m4s
";

#[test]
fn aes128_playlists_key_every_segment_and_leave_init_clear() {
    let (drm, _) = drm(EncryptionScheme::Aes128, 0);
    let text = drm
        .aes128_playlist("news", MEDIA_PLAYLIST)
        .expect("playlist");
    let kid = drm.keys.key_for("news", None).expect("key").kid;
    let tag = format!("#EXT-X-KEY:METHOD=AES-128,URI=\"../key/{}.key\"", kid.hex());
    assert_eq!(text.matches(&tag).count(), 2, "{text}");
    assert_eq!(text.matches("#EXT-X-KEY:METHOD=NONE").count(), 1, "{text}");
    // The key applies before each MAP's segments, never to a MAP itself.
    let none = text.find("METHOD=NONE").expect("none");
    let second_map = text.find("init-7").expect("map");
    assert!(none < second_map);
    assert!(text.find(&tag).expect("tag") > text.find("init-5").expect("first map"));
}

#[test]
fn aes128_rotation_signals_each_new_key() {
    let (drm, _) = drm(EncryptionScheme::Aes128, 2);
    let text = drm
        .aes128_playlist("news", MEDIA_PLAYLIST)
        .expect("playlist");
    // 100 and 101 share period 50; 102 opens period 51 with a new key.
    let keys: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("#EXT-X-KEY:METHOD=AES-128"))
        .collect();
    assert_eq!(keys.len(), 2, "{text}");
    assert_ne!(
        drm.keys.key_for("news", Some(50)).expect("a"),
        drm.keys.key_for("news", Some(51)).expect("b")
    );
}

#[test]
fn sample_aes_playlists_signal_clearkey_and_widevine_before_the_first_map() {
    let (drm, _) = drm(EncryptionScheme::Cbcs, 0);
    let key = drm.keys.key_for("news", None).expect("key");
    let text = playlist_with_sample_aes(
        MEDIA_PLAYLIST,
        &drm.signalling("news", EncryptionScheme::Cbcs, &key),
    );
    let clearkey = text
        .find("KEYFORMAT=\"org.w3.clearkey\"")
        .expect("clearkey");
    assert!(text.contains(&format!("METHOD=SAMPLE-AES,KEYFORMAT=\"org.w3.clearkey\",KEYFORMATVERSIONS=\"1\",URI=\"data:text/plain;base64,{}\",KEYID=0x{}", STANDARD.encode(key.kid.0), key.kid.hex())), "{text}");
    assert!(text.contains(&format!("KEYFORMAT=\"urn:uuid:{WIDEVINE_UUID}\"")));
    assert!(clearkey < text.find("#EXT-X-MAP").expect("map"));
    let ctr = playlist_with_sample_aes(
        MEDIA_PLAYLIST,
        &drm.signalling("news", EncryptionScheme::Cenc, &key),
    );
    assert!(ctr.contains("METHOD=SAMPLE-AES-CTR"));
}

#[test]
fn mpds_carry_content_protection_in_every_adaptation_set() {
    let mpd = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\">
  <Period id=\"1\" start=\"PT0S\">
    <AdaptationSet id=\"0\" contentType=\"video\">
    </AdaptationSet>
    <AdaptationSet id=\"1\" contentType=\"audio\">
    </AdaptationSet>
  </Period>
</MPD>
";
    let (drm, _) = drm(EncryptionScheme::Cenc, 0);
    let key = drm.keys.key_for("news", None).expect("key");
    let out = mpd_with_protection(mpd, &drm.signalling("news", EncryptionScheme::Cenc, &key));
    let doc = roxmltree::Document::parse(&out).expect("well-formed XML");
    let protections: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("ContentProtection"))
        .collect();
    assert_eq!(protections.len(), 8, "{out}");
    let mp4 = protections[0];
    assert_eq!(
        mp4.attribute("schemeIdUri"),
        Some("urn:mpeg:dash:mp4protection:2011")
    );
    assert_eq!(mp4.attribute("value"), Some("cenc"));
    assert_eq!(
        mp4.attribute(("urn:mpeg:cenc:2013", "default_KID")),
        Some(key.kid.uuid().as_str())
    );
    assert_eq!(
        protections[1].attribute("schemeIdUri"),
        Some(format!("urn:uuid:{CLEARKEY_UUID}").as_str())
    );
    let laurl = protections[1]
        .descendants()
        .find(|n| n.has_tag_name(("https://dashif.org/CPS", "laurl")))
        .and_then(|n| n.text());
    assert_eq!(laurl, Some("/drm/clearkey/news"));
    assert!(protections[2]
        .descendants()
        .any(|n| n.has_tag_name(("urn:mpeg:cenc:2013", "pssh"))));
    assert_eq!(
        protections[3].attribute("schemeIdUri"),
        Some(format!("urn:uuid:{PLAYREADY_UUID}").as_str())
    );
    assert!(protections[3]
        .descendants()
        .any(|n| n.has_tag_name(("urn:microsoft:playready", "pro"))));
}

#[test]
fn config_errors_name_the_key() {
    let cfg = |text: &str| crate::config::OriginConfig::parse(text);
    let err = cfg("[encryption]\ndefault = \"cbcs\"\n").expect_err("no state dir");
    assert!(err.to_string().starts_with("keys.state_dir"), "{err}");
    let err = cfg("[encryption]\ndefault = \"rot13\"\n").expect_err("bad scheme");
    assert!(err.to_string().contains("rot13"), "{err}");
    let err = cfg("[encryption.channels.premium]\nschema = \"cbcs\"\n").expect_err("typo");
    assert!(err.to_string().contains("schema"), "{err}");
    let err = cfg("[keys]\nstate_dir = \"/tmp/x\"\nrotate_every = 5\n[encryption.channels.p]\nscheme = \"cenc\"\n")
        .expect_err("rotation with cenc");
    assert!(err.to_string().starts_with("keys.rotate_every"), "{err}");
    let ok = cfg(
        "[keys]\nstate_dir = \"/tmp/x\"\n[encryption.channels.premium]\nscheme = \"aes-128\"\n",
    )
    .expect("valid");
    assert_eq!(ok.encryption.scheme("premium"), EncryptionScheme::Aes128);
    assert_eq!(ok.encryption.scheme("other"), EncryptionScheme::None);
}

async fn call(
    router: &axum::Router,
    request: Request<Body>,
) -> (StatusCode, String, Option<String>) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let cc = response
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, String::from_utf8_lossy(&body).into_owned(), cc)
}

fn licence_request(body: impl Into<Body>) -> Request<Body> {
    Request::post("/drm/clearkey")
        .header("content-type", "application/json")
        .body(body.into())
        .expect("request")
}

#[tokio::test]
async fn clearkey_licences_answer_known_keys_and_refuse_bad_input() {
    let (drm, registry) = drm(EncryptionScheme::Cenc, 0);
    let key = drm.keys.key_for("news", None).expect("key");
    let router = http::playback_routes(Arc::new(drm));

    let good = format!(
        "{{\"kids\":[\"{}\"],\"type\":\"temporary\"}}",
        key.kid.base64url()
    );
    let (status, body, cc) = call(&router, licence_request(good)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cc.as_deref(), Some("private, no-store"));
    let jwks: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(jwks["type"], "temporary");
    assert_eq!(jwks["keys"][0]["kty"], "oct");
    assert_eq!(jwks["keys"][0]["kid"], key.kid.base64url());
    assert_eq!(
        URL_SAFE_NO_PAD_TEST
            .decode(jwks["keys"][0]["k"].as_str().expect("k"))
            .expect("b64"),
        key.key
    );

    let unknown = format!("{{\"kids\":[\"{}\"]}}", KeyId([9; 16]).base64url());
    for (request, expected) in [
        (unknown, StatusCode::NOT_FOUND),
        ("{not json".to_owned(), StatusCode::BAD_REQUEST),
        ("{\"kids\":[\"***\"]}".to_owned(), StatusCode::BAD_REQUEST),
        ("{\"kids\":[\"AAAA\"]}".to_owned(), StatusCode::BAD_REQUEST),
        ("{\"kids\":[]}".to_owned(), StatusCode::BAD_REQUEST),
        ("[]".to_owned(), StatusCode::BAD_REQUEST),
        (
            format!("{{\"kids\":[\"{}\"]}}", "A".repeat(20_000)),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ] {
        let (status, body, cc) = call(&router, licence_request(request.clone())).await;
        assert_eq!(status, expected, "{request:.60}: {body}");
        assert_eq!(cc.as_deref(), Some("private, no-store"));
        assert!(!body.contains(&URL_SAFE_NO_PAD_TEST.encode(key.key)));
    }
    // The service still answers after all that.
    let good = format!("{{\"kids\":[\"{}\"]}}", key.kid.base64url());
    assert_eq!(call(&router, licence_request(good)).await.0, StatusCode::OK);

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains("strata_origin_drm_licence_requests_total{outcome=\"bad_request\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("strata_origin_drm_licence_requests_total{outcome=\"too_large\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strata_origin_drm_licence_requests_total{outcome=\"unknown_key\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("strata_origin_drm_licence_requests_total{outcome=\"ok\"} 2"),
        "{text}"
    );
}

use base64::engine::general_purpose::URL_SAFE_NO_PAD as URL_SAFE_NO_PAD_TEST;

#[tokio::test]
async fn hls_keys_are_served_raw_and_private_to_their_channel() {
    let (drm, _) = drm(EncryptionScheme::Aes128, 0);
    let key = drm.keys.key_for("news", None).expect("key");
    let router = http::playback_routes(Arc::new(drm));
    let get = |path: String| Request::get(path).body(Body::empty()).expect("request");
    let response = router
        .clone()
        .oneshot(get(format!("/live/news/key/{}.key", key.kid.hex())))
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "private, no-store");
    let body = axum::body::to_bytes(response.into_body(), 64)
        .await
        .expect("body");
    assert_eq!(&body[..], &key.key);
    for path in [
        format!("/live/sport/key/{}.key", key.kid.hex()),
        format!("/live/news/key/{}.key", KeyId([1; 16]).hex()),
        "/live/news/key/zzz.key".to_owned(),
        format!("/live/news/key/{}", key.kid.hex()),
    ] {
        let (status, body, cc) = call(&router, get(path.clone())).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(cc.as_deref(), Some("private, no-store"));
        assert!(!body.contains(&hex::encode(key.key)));
    }
}

#[tokio::test]
async fn cpix_export_and_import_need_the_bearer_token() {
    let (drm, _) = drm(EncryptionScheme::Cenc, 0);
    let drm = Arc::new(drm);
    let router = http::admin_routes(drm.clone(), Some("a-very-long-api-token".into()));
    let cpix = include_str!("../../tests/fixtures/cpix/ClearContentKeysOnly.xml");
    let put = |token: &str, body: &str| {
        Request::put("/api/channels/movie/keys")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::from(body.to_owned()))
            .expect("request")
    };
    assert_eq!(
        call(&router, put("wrong", cpix)).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body, _) = call(&router, put("a-very-long-api-token", cpix)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("40d02dd1-61a3-4787-a155-572325d47b80"));
    assert_eq!(
        call(&router, put("a-very-long-api-token", cpix)).await.0,
        StatusCode::CONFLICT
    );
    let empty = include_str!("../../tests/fixtures/cpix/EmptyDocument.xml");
    let (status, body, _) = call(&router, put("a-very-long-api-token", empty)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("no content keys"), "{body}");

    let get = Request::get("/api/channels/movie/keys")
        .header("authorization", "Bearer a-very-long-api-token")
        .body(Body::empty())
        .expect("request");
    let (status, body, cc) = call(&router, get).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cc.as_deref(), Some("private, no-store"));
    assert_eq!(crate::keys::parse_cpix(&body).expect("cpix").len(), 4);
    let anonymous = Request::get("/api/channels/movie/keys")
        .body(Body::empty())
        .expect("request");
    assert_eq!(call(&router, anonymous).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn channel_licence_urls_answer_only_that_channels_keys() {
    let (drm, _) = drm(EncryptionScheme::Cenc, 0);
    let news = drm.keys.key_for("news", None).expect("news");
    let sport = drm.keys.key_for("sport", None).expect("sport");
    let router = http::playback_routes(Arc::new(drm));
    let request = |path: &str, kid: &KeyId| {
        Request::post(path)
            .body(Body::from(format!(
                "{{\"kids\":[\"{}\"]}}",
                kid.base64url()
            )))
            .expect("request")
    };
    assert_eq!(
        call(&router, request("/drm/clearkey/news", &news.kid))
            .await
            .0,
        StatusCode::OK
    );
    let (status, body, _) = call(&router, request("/drm/clearkey/news", &sport.kid)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!body.contains(&URL_SAFE_NO_PAD_TEST.encode(sport.key)));
    assert_eq!(
        call(&router, request("/drm/clearkey", &sport.kid)).await.0,
        StatusCode::OK
    );
}

#[test]
fn an_encrypted_channel_gets_its_key_on_first_publish() {
    let (drm, _) = drm(EncryptionScheme::Cbcs, 0);
    let drm = Arc::new(drm);
    let target = KeyOnPublish {
        inner: crate::store::Store::new(crate::store::StoreConfig::default()),
        drm: drm.clone(),
    };
    assert!(drm.keys.keys_of("news").is_empty());
    let name = StreamName {
        channel: "news".into(),
        rendition: "main".into(),
    };
    let info = PublisherInfo {
        remote: std::net::SocketAddr::from(([127, 0, 0, 1], 1935)),
        protocol: "rtmp",
    };
    let _sink = target.publish(&name, info).expect("publish");
    assert_eq!(drm.keys.keys_of("news").len(), 1);
}

#[test]
fn protected_segments_are_encrypted_once() {
    let (drm, _) = drm(EncryptionScheme::Aes128, 0);
    let clear = Rendered::new(
        bytes::Bytes::from_static(b"clear segment bytes"),
        "video/mp2t",
        crate::package::IMMUTABLE.into(),
    );
    let first = drm
        .protect("news", "main/7.ts", clear.clone())
        .expect("first");
    let again = drm.protect("news", "main/7.ts", clear).expect("again");
    assert_eq!(
        first.body.as_ptr(),
        again.body.as_ptr(),
        "served from the memo"
    );
    let key = drm.keys.key_for("news", None).expect("key");
    assert_eq!(
        &first.body[..],
        aes128_segment(&key.key, 7, b"clear segment bytes")
    );
    let other = Rendered::new(
        bytes::Bytes::from_static(b"other bytes"),
        "video/mp2t",
        crate::package::IMMUTABLE.into(),
    );
    let changed = drm.protect("news", "main/7.ts", other).expect("changed");
    assert_eq!(
        &changed.body[..],
        aes128_segment(&key.key, 7, b"other bytes")
    );
}

#[test]
fn playready_objects_carry_the_kid_little_endian_and_the_licence_url() {
    let key = ContentKey {
        kid: "40d02dd1-61a3-4787-a155-572325d47b80".parse().expect("kid"),
        key: [0; 16],
    };
    let pssh = playready_pssh(
        &key,
        EncryptionScheme::Cenc,
        "https://pr.example/rightsmanager.asmx?a=1&b=2",
    );
    let data = &pssh.data;
    assert_eq!(
        u32::from_le_bytes(data[..4].try_into().expect("4")) as usize,
        data.len()
    );
    assert_eq!(&data[4..8], &[1, 0, 1, 0]);
    let len = usize::from(u16::from_le_bytes([data[8], data[9]]));
    assert_eq!(len, data.len() - 10);
    let units: Vec<u16> = data[10..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let header = String::from_utf16(&units).expect("UTF-16LE");
    let doc = roxmltree::Document::parse(&header).expect("XML");
    let kid = doc
        .descendants()
        .find(|n| n.has_tag_name("KID"))
        .and_then(|n| n.text());
    // GUID 40d02dd1-61a3-4787-… little-endian: d12dd040 a361 8747 a155…
    assert_eq!(
        STANDARD.decode(kid.expect("KID")).expect("b64"),
        hex::decode("d12dd040a3618747a155572325d47b80").expect("hex")
    );
    let url = doc
        .descendants()
        .find(|n| n.has_tag_name("LA_URL"))
        .and_then(|n| n.text());
    assert_eq!(url, Some("https://pr.example/rightsmanager.asmx?a=1&b=2"));
    let cbcs = playready_pssh(&key, EncryptionScheme::Cbcs, "https://pr.example/");
    assert!(String::from_utf16_lossy(
        &cbcs.data[10..]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect::<Vec<_>>()
    )
    .contains("ALGID=\"AESCBC\""));
}
