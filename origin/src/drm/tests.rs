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
        ..KeysConfig::default()
    })
    .expect("keys");
    let config = EncryptionConfig {
        default: scheme,
        widevine_licence_url: Some("https://wv.example/licence".into()),
        playready_licence_url: Some("https://pr.example/licence".into()),
        // Entitlement has tests of its own (`licences_and_keys_need_a_token`).
        licence_auth: LicenceAuth::None,
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
    let text = playlist_with_sample_aes(MEDIA_PLAYLIST, |_| {
        Ok(drm.signalling("news", EncryptionScheme::Cbcs, &key))
    })
    .expect("playlist");
    let clearkey = text
        .find("KEYFORMAT=\"org.w3.clearkey\"")
        .expect("clearkey");
    assert!(text.contains(&format!("METHOD=SAMPLE-AES,KEYFORMAT=\"org.w3.clearkey\",KEYFORMATVERSIONS=\"1\",URI=\"data:text/plain;base64,{}\",KEYID=0x{}", STANDARD.encode(key.kid.0), key.kid.hex())), "{text}");
    assert!(text.contains(&format!("KEYFORMAT=\"urn:uuid:{WIDEVINE_UUID}\"")));
    assert!(clearkey < text.find("#EXT-X-MAP").expect("map"));
    let ctr = playlist_with_sample_aes(MEDIA_PLAYLIST, |_| {
        Ok(drm.signalling("news", EncryptionScheme::Cenc, &key))
    })
    .expect("playlist");
    assert_eq!(
        ctr.matches("KEYFORMAT=\"org.w3.clearkey\"").count(),
        1,
        "one key, one tag: {ctr}"
    );
    assert!(ctr.contains("METHOD=SAMPLE-AES-CTR"));
}

/// Our MPD's shape: a video set with a Representation per rendition, an
/// audio set, each Representation's SegmentTemplate naming its init.
const LADDER_MPD: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>
<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" type=\"static\">
  <Period id=\"1\" start=\"PT0S\">
    <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\">
      <Representation id=\"1080p\" codecs=\"avc1.640028\" bandwidth=\"5000000\">
        <SegmentTemplate timescale=\"90000\" startNumber=\"100\" initialization=\"1080p/video/init-100.mp4\" media=\"1080p/video/$Number$.m4s\">
        </SegmentTemplate>
      </Representation>
      <Representation id=\"480p\" codecs=\"avc1.64001e\" bandwidth=\"1000000\">
        <SegmentTemplate timescale=\"90000\" startNumber=\"100\" initialization=\"480p/video/init-101.mp4\" media=\"480p/video/$Number$.m4s\">
        </SegmentTemplate>
      </Representation>
      <Representation id=\"720p\" codecs=\"avc1.64001f\" bandwidth=\"3000000\">
        <SegmentTemplate timescale=\"90000\" startNumber=\"100\" initialization=\"720p/video/init-102.mp4\" media=\"720p/video/$Number$.m4s\">
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\">
      <Representation id=\"1080p-audio\" codecs=\"mp4a.40.2\" bandwidth=\"128000\">
        <SegmentTemplate timescale=\"48000\" startNumber=\"100\" initialization=\"1080p/audio/init-100.mp4\" media=\"1080p/audio/$Number$.m4s\">
        </SegmentTemplate>
      </Representation>
    </AdaptationSet>
  </Period>
</MPD>
";

#[test]
fn mpds_carry_content_protection_in_every_adaptation_set() {
    let mpd = LADDER_MPD;
    let (drm, _) = drm(EncryptionScheme::Cenc, 0);
    let key = drm.keys.key_for("news", None).expect("key");
    let out = mpd_with_protection(mpd, |_| {
        Ok(drm.signalling("news", EncryptionScheme::Cenc, &key))
    })
    .expect("mpd");
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
    let rotating = cfg("[keys]\nstate_dir = \"/tmp/x\"\nrotate_every = 5\n[encryption]\nlicence_auth = \"none\"\n[encryption.channels.p]\nscheme = \"cenc\"\n")
        .expect("rotation with cenc");
    assert_eq!(rotating.keys.rotate_every, 5);
    let ok = cfg(
        "[keys]\nstate_dir = \"/tmp/x\"\n[encryption.licence_token]\nkeys = [{ id = \"k\", secret = \"00112233445566778899aabbccddeeff\" }]\n[encryption.channels.premium]\nscheme = \"aes-128\"\n",
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
    assert!(drm.keys.keys_of("news").is_empty());
    let _sink = publish(&drm, "main");
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

/// A cbcs or cenc service with `[encryption]` groups SD/HD and audio apart.
fn grouped(scheme: EncryptionScheme, rotate_every: u64) -> Drm {
    let (mut drm, _) = drm(scheme, rotate_every);
    drm.config.key_groups = [
        ("hd".to_owned(), vec!["720p".to_owned(), "1080p".to_owned()]),
        ("sd".to_owned(), vec!["480p".to_owned()]),
    ]
    .into();
    drm.config.separate_audio_key = true;
    drm
}

#[test]
fn key_groups_give_audio_sd_and_hd_their_own_keys() {
    let drm = grouped(EncryptionScheme::Cbcs, 0);
    let c = &drm.config;
    assert_eq!(c.key_group("news", "720p", TrackKind::Video), Some("hd"));
    assert_eq!(c.key_group("news", "480p", TrackKind::Video), Some("sd"));
    assert_eq!(c.key_group("news", "main", TrackKind::Video), None);
    assert_eq!(c.key_group("news", "720p", TrackKind::Audio), Some("audio"));
    let out = mpd_with_protection(LADDER_MPD, |r| {
        let key = drm.default_key("news", &r.rendition, r.kind, r.init_id)?;
        Ok(drm.signalling("news", EncryptionScheme::Cbcs, &key))
    })
    .expect("mpd");
    let doc = roxmltree::Document::parse(&out).expect("well-formed XML");
    let sets: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("AdaptationSet"))
        .collect();
    // HD (1080p, 720p), SD (480p), audio: one set per key, first use first.
    let ids: Vec<&str> = sets.iter().filter_map(|s| s.attribute("id")).collect();
    assert_eq!(ids, ["0", "100", "1"], "{out}");
    let kid_of = |set: &roxmltree::Node| {
        set.children()
            .find(|n| n.attribute("schemeIdUri") == Some("urn:mpeg:dash:mp4protection:2011"))
            .and_then(|n| n.attribute(("urn:mpeg:cenc:2013", "default_KID")))
            .map(str::to_owned)
            .expect("default_KID")
    };
    let reps = |set: &roxmltree::Node| -> Vec<String> {
        set.children()
            .filter(|n| n.has_tag_name("Representation"))
            .filter_map(|n| n.attribute("id").map(str::to_owned))
            .collect()
    };
    let key = |group| drm.keys.group_key("news", Some(group), None).expect("key");
    assert_eq!(reps(&sets[0]), ["1080p", "720p"]);
    assert_eq!(kid_of(&sets[0]), key("hd").kid.uuid());
    assert_eq!(reps(&sets[1]), ["480p"]);
    assert_eq!(kid_of(&sets[1]), key("sd").kid.uuid());
    assert_eq!(kid_of(&sets[2]), key("audio").kid.uuid());
    let distinct: std::collections::BTreeSet<String> = sets.iter().map(kid_of).collect();
    assert_eq!(distinct.len(), 3);
    // The two video sets may be switched between.
    for (set, other) in [(&sets[0], "100"), (&sets[1], "0")] {
        let switching = set
            .children()
            .find(|n| n.has_tag_name("SupplementalProperty"))
            .expect("adaptation-set-switching");
        assert_eq!(
            switching.attribute("schemeIdUri"),
            Some("urn:mpeg:dash:adaptation-set-switching:2016")
        );
        assert_eq!(switching.attribute("value"), Some(other));
    }
    assert!(!sets[2]
        .children()
        .any(|n| n.has_tag_name("SupplementalProperty")));
    // Each HLS media playlist carries its own group's key.
    for (rendition, kind, group) in [
        ("720p", TrackKind::Video, "hd"),
        ("480p", TrackKind::Video, "sd"),
        ("720p", TrackKind::Audio, "audio"),
    ] {
        let text = playlist_with_sample_aes(MEDIA_PLAYLIST, |seq| {
            let key = drm.segment_key("news", rendition, kind, seq)?;
            Ok(drm.signalling("news", EncryptionScheme::Cbcs, &key))
        })
        .expect("playlist");
        assert!(
            text.contains(&format!("KEYID=0x{}", key(group).kid.hex())),
            "{rendition} {kind:?}: {text}"
        );
    }
}

#[test]
fn rotating_playlists_change_key_where_the_period_changes() {
    // rotate_every 2: 100, 101 in period 50; 102 in period 51.
    let drm = grouped(EncryptionScheme::Cenc, 2);
    let text = playlist_with_sample_aes(MEDIA_PLAYLIST, |seq| {
        let key = drm.segment_key("news", "720p", TrackKind::Video, seq)?;
        Ok(drm.signalling("news", EncryptionScheme::Cenc, &key))
    })
    .expect("playlist");
    let p50 = drm
        .keys
        .group_key("news", Some("hd"), Some(50))
        .expect("50");
    let p51 = drm
        .keys
        .group_key("news", Some("hd"), Some(51))
        .expect("51");
    assert_ne!(p50.kid, p51.kid);
    // Each segment is preceded by its own period's key lines.
    let key_before = |uri: &str| {
        let at = text.find(uri).expect("segment");
        let tag = text[..at]
            .rfind("#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,KEYFORMAT=\"org.w3.clearkey\"")
            .expect("a key before");
        text[tag..].split("KEYID=0x").nth(1).expect("keyid")[..32].to_owned()
    };
    assert_eq!(key_before("video/100.m4s"), p50.kid.hex(), "{text}");
    assert_eq!(key_before("video/101.m4s"), p50.kid.hex());
    assert_eq!(key_before("video/102.m4s"), p51.kid.hex());
    // One set of tags per key change, each before the segment's own tags.
    assert_eq!(
        text.matches("KEYFORMAT=\"org.w3.clearkey\"").count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches(&format!("urn:uuid:{WIDEVINE_UUID}")).count(),
        2
    );
    let change = text.find(&p51.kid.hex()).expect("p51");
    assert!(change < text.find("#EXT-X-DISCONTINUITY\n").expect("discontinuity"));
    assert!(change > text.find("video/101.m4s").expect("101"));
    // A window starting inside period 51 starts with period 51's key.
    let late = MEDIA_PLAYLIST
        .replace("#EXT-X-MEDIA-SEQUENCE:100", "#EXT-X-MEDIA-SEQUENCE:103")
        .replace("video/100.m4s", "video/103.m4s");
    let late = playlist_with_sample_aes(&late, |seq| {
        let key = drm.segment_key("news", "720p", TrackKind::Video, seq)?;
        Ok(drm.signalling("news", EncryptionScheme::Cenc, &key))
    })
    .expect("playlist");
    let first_key = late.find("#EXT-X-KEY").expect("key");
    assert!(first_key < late.find("#EXT-X-MAP").expect("map"), "{late}");
    assert!(late[first_key..].starts_with(&format!(
        "#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,KEYFORMAT=\"org.w3.clearkey\",KEYFORMATVERSIONS=\"1\",URI=\"data:text/plain;base64,{}\",KEYID=0x{}",
        STANDARD.encode(p51.kid.0),
        p51.kid.hex()
    )));
}

#[test]
fn rotating_channels_keep_one_default_kid_and_name_each_period_in_band() {
    let drm = grouped(EncryptionScheme::Cbcs, 1);
    // The MPD's default KID is the group's first period key, whatever the
    // init's number, so Representations of a group agree.
    let out = mpd_with_protection(LADDER_MPD, |r| {
        let key = drm.default_key("news", &r.rendition, r.kind, r.init_id)?;
        Ok(drm.signalling("news", EncryptionScheme::Cbcs, &key))
    })
    .expect("mpd");
    let hd_first = drm
        .keys
        .group_key("news", Some("hd"), Some(100))
        .expect("hd");
    assert!(out.contains(&format!("cenc:default_KID=\"{}\"", hd_first.kid.uuid())));
    assert_eq!(
        drm.default_key("news", "720p", TrackKind::Video, 500)
            .expect("default"),
        hd_first,
        "later inits keep the group's default KID"
    );
    // Fragments of later periods carry their own key in a seig group.
    let (params, video) = demo_video();
    let init = crate::media::fmp4::init_segment(crate::package::VIDEO_TRACK_ID, &params);
    let clear = crate::media::fmp4::media_segment(1, crate::package::VIDEO_TRACK_ID, 0, &video);
    let protect = |path: &str, body: &bytes::Bytes| {
        drm.protect(
            "news",
            path,
            Rendered::new(body.clone(), "video/mp4", crate::package::IMMUTABLE.into()),
        )
        .expect("protect")
        .body
    };
    let sealed_init = protect("720p/video/init-100.mp4", &init);
    let tenc_kid = find_after(&sealed_init, b"tenc", 8);
    assert_eq!(tenc_kid, hd_first.kid.0);
    for sequence in [100u64, 101, 102] {
        let sealed = protect(&format!("720p/video/{sequence}.m4s"), &clear);
        let period_key = drm
            .keys
            .group_key("news", Some("hd"), Some(sequence))
            .expect("period key");
        assert_eq!(
            find_after(&sealed, b"sgpd", 20),
            period_key.kid.0,
            "{sequence}"
        );
        // The in-band common pssh (version 1) lists the same KID.
        assert_eq!(find_after(&sealed, b"pssh", 24), period_key.kid.0);
    }
    // Without rotation, fragments carry no sample groups.
    let still = grouped(EncryptionScheme::Cbcs, 0);
    let sealed = still
        .protect(
            "news",
            "720p/video/100.m4s",
            Rendered::new(clear.clone(), "video/mp4", crate::package::IMMUTABLE.into()),
        )
        .expect("protect");
    assert!(!sealed.body.windows(4).any(|w| w == b"sgpd"));
}

fn demo_video() -> (crate::media::TrackParams, Vec<crate::media::Sample>) {
    let demo = include_bytes!("../../assets/demo.flv");
    let mut params = None;
    let mut video = Vec::new();
    for e in crate::media::flv::file_events(bytes::Bytes::from_static(demo)).expect("flv") {
        match e {
            crate::media::MediaEvent::Params(p) if p.kind() == TrackKind::Video => params = Some(p),
            crate::media::MediaEvent::Sample(TrackKind::Video, s) if video.len() < 25 => {
                video.push(s)
            }
            _ => {}
        }
    }
    (params.expect("video params"), video)
}

/// 16 bytes at `offset` past the start of the first `fourcc` box's body.
fn find_after(data: &[u8], fourcc: &[u8; 4], offset: usize) -> [u8; 16] {
    let at = data
        .windows(4)
        .position(|w| w == fourcc)
        .unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(fourcc)))
        + 4;
    data[at + offset..at + offset + 16].try_into().expect("16")
}

#[tokio::test]
async fn licences_hand_out_every_period_and_group_key_by_kid() {
    let drm = grouped(EncryptionScheme::Cenc, 1);
    let keys: Vec<ContentKey> = [
        (Some("hd"), Some(7)),
        (Some("hd"), Some(8)),
        (Some("audio"), Some(8)),
        (None, Some(9)),
    ]
    .into_iter()
    .map(|(g, p)| drm.keys.group_key("news", g, p).expect("key"))
    .collect();
    let other = drm
        .keys
        .group_key("sport", Some("hd"), Some(8))
        .expect("sport");
    let router = http::playback_routes(Arc::new(drm));
    let kids: Vec<String> = keys
        .iter()
        .chain([&other])
        .map(|k| format!("\"{}\"", k.kid.base64url()))
        .collect();
    let request = Request::post("/drm/clearkey/news")
        .body(Body::from(format!("{{\"kids\":[{}]}}", kids.join(","))))
        .expect("request");
    let (status, body, _) = call(&router, request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jwks: serde_json::Value = serde_json::from_str(&body).expect("json");
    let answered: Vec<&str> = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    let expected: Vec<String> = keys.iter().map(|k| k.kid.base64url()).collect();
    assert_eq!(answered, expected, "every key of news, none of sport");
}

#[test]
fn key_group_config_errors_name_the_key() {
    let cfg = |text: &str| {
        crate::config::OriginConfig::parse(&format!("[keys]\nstate_dir = \"/tmp/x\"\n{text}"))
    };
    for (text, expected) in [
        (
            "[encryption]\ndefault = \"cbcs\"\nkey_groups = { sd = [\"480p\"], hd = [\"720p\", \"480p\"] }\n",
            "encryption.key_groups.sd: rendition \"480p\" is already in key group \"hd\"",
        ),
        (
            "[encryption]\ndefault = \"cbcs\"\nkey_groups = { hd = [\"720p\", \"720p\"] }\n",
            "encryption.key_groups.hd: rendition \"720p\" is listed twice",
        ),
        (
            "[encryption.channels.news]\nscheme = \"cenc\"\nkey_groups = { hd = [\"7 20p\"] }\n",
            "encryption.channels.news.key_groups.hd: \"7 20p\" is not a rendition name",
        ),
        (
            "[encryption.channels.news]\nscheme = \"cenc\"\nkey_groups = { audio = [\"main\"] }\n",
            "encryption.channels.news.key_groups.audio:",
        ),
        (
            "[encryption.channels.news]\nscheme = \"cenc\"\nkey_groups = { hd = [] }\n",
            "encryption.channels.news.key_groups.hd: lists no renditions",
        ),
        (
            "[encryption.channels.news]\nscheme = \"aes-128\"\nkey_groups = { hd = [\"720p\"] }\n",
            "encryption.channels.news.key_groups: per-rendition keys need scheme cbcs or cenc",
        ),
        (
            "[encryption.channels.news]\nscheme = \"aes-128\"\nseparate_audio_key = true\n",
            "encryption.channels.news.separate_audio_key:",
        ),
        (
            "[encryption]\ndefault = \"cbcs\"\nkey_group = { hd = [\"720p\"] }\n",
            "key_group",
        ),
    ] {
        let err = cfg(text).expect_err(text).to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
    let ok = cfg("[encryption]\ndefault = \"cbcs\"\nlicence_auth = \"none\"\nseparate_audio_key = true\nkey_groups = { sd = [\"480p\"], hd = [\"720p\", \"1080p\"] }\n[encryption.channels.radio]\nscheme = \"cenc\"\nseparate_audio_key = false\nkey_groups = {}\n")
        .expect("valid");
    let e = &ok.encryption;
    assert_eq!(e.key_group("tv", "1080p", TrackKind::Video), Some("hd"));
    assert_eq!(e.key_group("tv", "1080p", TrackKind::Audio), Some("audio"));
    assert_eq!(e.key_group("radio", "1080p", TrackKind::Video), None);
    assert_eq!(e.key_group("radio", "1080p", TrackKind::Audio), None);
}

#[test]
fn a_first_publish_creates_the_renditions_group_keys() {
    let drm = Arc::new(grouped(EncryptionScheme::Cenc, 0));
    let _sink = publish(&drm, "720p");
    let groups: Vec<Option<String>> = drm
        .keys
        .entries_of("news")
        .into_iter()
        .map(|e| e.group)
        .collect();
    assert_eq!(groups, [Some("audio".to_owned()), Some("hd".to_owned())]);
}

/// `live/news.{rendition}` published through [`KeyOnPublish`].
fn publish(drm: &Arc<Drm>, rendition: &str) -> Box<dyn MediaSink> {
    let target = KeyOnPublish {
        inner: crate::store::Store::new(crate::store::StoreConfig::default()),
        drm: drm.clone(),
    };
    let name = StreamName {
        channel: "news".into(),
        rendition: rendition.into(),
    };
    let info = PublisherInfo {
        remote: std::net::SocketAddr::from(([127, 0, 0, 1], 1935)),
        protocol: "rtmp",
    };
    target.publish(&name, info).expect("publish")
}

/// A store holding `seconds` of `news.720p` video with a publisher still
/// on (1 s segments, a 3 s DVR window), and the publisher's sink.
fn live_store(seconds: u32) -> (crate::store::Store, Box<dyn MediaSink>) {
    use crate::store::{ManualClock, Store, StoreConfig};
    use std::time::{Duration, SystemTime};
    let (params, video) = demo_video();
    let start = SystemTime::now();
    let clock = ManualClock::new(start);
    let config = StoreConfig {
        dvr_window: Duration::from_secs(3),
        target_duration: Duration::from_secs(1),
        ..StoreConfig::default()
    };
    let store = Store::with_clock(config, Arc::new(clock.clone()));
    let name = StreamName {
        channel: "news".into(),
        rendition: "720p".into(),
    };
    let info = PublisherInfo {
        remote: std::net::SocketAddr::from(([127, 0, 0, 1], 1935)),
        protocol: "rtmp",
    };
    let mut sink = store.publish(&name, info).expect("publish");
    sink.params(params);
    // The first second of the demo, looped: a keyframe every second.
    for i in 0..seconds * 25 {
        let mut sample = video[(i % 25) as usize].clone();
        sample.dts = video[0].dts + i64::from(i) * 3600;
        clock.set(start + Duration::from_millis(u64::from(i) * 40));
        sink.sample(TrackKind::Video, sample).expect("sample");
    }
    (store, sink)
}

fn answered_kids(body: &str) -> Vec<String> {
    let jwks: serde_json::Value = serde_json::from_str(body).expect("json");
    jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(|k| k["kid"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn rotating_licences_carry_the_groups_next_and_current_keys_only() {
    let (store, _sink) = live_store(12);
    let drm = grouped(EncryptionScheme::Cenc, 1).with_store(store.clone());
    let span = store.segment_spans("news").pop().expect("segments");
    assert!(span.newest >= span.oldest + 2, "{span:?}");
    let (old, live) = (span.oldest, span.newest);
    let asked = drm
        .keys
        .group_key("news", Some("hd"), Some(old))
        .expect("hd");
    // Keys a licence for `asked` must not carry: other groups, other channels.
    let strangers: Vec<ContentKey> = [
        ("news", Some("audio"), live),
        ("news", Some("sd"), live),
        ("news", None, live),
        ("sport", Some("hd"), live),
    ]
    .into_iter()
    .map(|(c, g, p)| drm.keys.group_key(c, g, Some(p)).expect("key"))
    .collect();
    let keys = drm.keys.clone();
    let router = http::playback_routes(Arc::new(drm));
    let licence = |kid: KeyId| {
        Request::post("/drm/clearkey/news")
            .body(Body::from(format!(
                "{{\"kids\":[\"{}\"]}}",
                kid.base64url()
            )))
            .expect("request")
    };

    let (status, body, _) = call(&router, licence(asked.kid)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hd = |p: u64| {
        keys.existing_key("news", Some("hd"), p)
            .map(|k| k.kid.base64url())
    };
    let expected: Vec<String> = [old, old + 1, live, live + 1]
        .into_iter()
        .map(|p| hd(p).unwrap_or_else(|| panic!("hd key of period {p} created")))
        .collect();
    assert_eq!(
        answered_kids(&body),
        expected,
        "asked, next, current, next after current"
    );
    for key in &strangers {
        assert!(
            !body.contains(&key.kid.base64url()),
            "{:?} handed out",
            key.kid
        );
    }
    // The next period's key is created once and kept: asking again gives the same.
    let (_, again, _) = call(&router, licence(asked.kid)).await;
    assert_eq!(answered_kids(&again), expected);

    // Asking for the newest key never creates keys further ahead.
    let newest = keys
        .existing_key("news", Some("hd"), live + 1)
        .expect("next");
    let (status, body, _) = call(&router, licence(newest.kid)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(keys.existing_key("news", Some("hd"), live + 2), None);
    assert_eq!(answered_kids(&body)[0], newest.kid.base64url());

    // A channel-scoped URL still refuses another channel's key cleanly.
    let sport = &strangers[3];
    assert_eq!(
        call(&router, licence(sport.kid)).await.0,
        StatusCode::NOT_FOUND
    );
}

#[test]
fn pruning_follows_the_stores_window_and_keeps_the_default_key() {
    let (store, _sink) = live_store(12);
    let (drm, registry) = drm(EncryptionScheme::Cenc, 1);
    let drm = drm.with_store(store.clone());
    let span = store.segment_spans("news").pop().expect("segments");
    // 3 s window of 1 s segments: 4 segments, 1 period each, plus one.
    assert_eq!(drm.key_margin(), 5);
    let first = span.oldest - 40;
    let default = drm
        .keys
        .default_key("news", None, Some(first))
        .expect("default");
    let keys: Vec<(u64, ContentKey)> = (first..=span.newest + 1)
        .map(|p| (p, drm.keys.key_for("news", Some(p)).expect("key")))
        .collect();
    let floor = span.oldest - 5;
    let pruned = drm.prune_keys();
    assert_eq!(
        pruned as u64,
        floor - first - 1,
        "every period between the default and the floor"
    );
    for (p, key) in &keys {
        let kept = *p == first || *p >= floor;
        assert_eq!(drm.keys.lookup(&key.kid).is_some(), kept, "period {p}");
    }
    assert_eq!(
        drm.keys
            .default_key("news", None, Some(span.newest))
            .expect("default"),
        default
    );
    assert_eq!(drm.prune_keys(), 0);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
    assert!(
        text.contains(&format!("strata_origin_drm_keys_pruned_total {pruned}")),
        "{text}"
    );
}

fn derived(rotate_every: u64, secret: &str) -> Drm {
    let mut drm = grouped(EncryptionScheme::Cbcs, rotate_every);
    drm.keys = KeyService::open(&KeysConfig {
        rotate_every,
        key_secret: Some(crate::keys::KeySecret::new(secret).expect("secret")),
        ..KeysConfig::default()
    })
    .expect("keys");
    drm
}

#[test]
fn a_redundant_origin_answers_for_keys_the_other_one_handed_out() {
    const SECRET: &str = "shared-by-origin-a-and-origin-b-0123456789";
    let (store, _sink) = live_store(12);
    let a = derived(1, SECRET).with_store(store.clone());
    let b = derived(1, SECRET).with_store(store.clone());
    let span = store.segment_spans("news").pop().expect("segments");
    // A served the live segment (creating its key); the player then
    // switched to B, which never rendered that period.
    let live = a
        .segment_key("news", "720p", TrackKind::Video, span.newest)
        .expect("a's key");
    assert!(b.keys.lookup(&live.kid).is_none(), "not created on B yet");
    let at = b.locate_key(&live.kid, Some("news")).expect("derived on B");
    assert_eq!(at.entry.key, live);
    assert_eq!(at.entry.group.as_deref(), Some("hd"));
    assert_eq!(b.keys.lookup(&live.kid), Some(live), "and kept");
    // Not for another channel, a period far ahead, or another secret.
    assert!(b.locate_key(&live.kid, Some("sport")).is_none());
    let ahead = b
        .keys
        .derived_key("news", Some("hd"), Some(span.newest + 50))
        .expect("derivable");
    assert!(b.locate_key(&ahead.kid, Some("news")).is_none());
    let stranger = derived(1, "some-other-deployment-0123456789abcdef").with_store(store);
    let theirs = stranger
        .segment_key("news", "720p", TrackKind::Video, span.newest)
        .expect("key");
    assert_ne!(theirs, live);
    assert!(b.locate_key(&theirs.kid, Some("news")).is_none());
}

#[test]
fn without_a_secret_unknown_keys_stay_unknown() {
    let (store, _sink) = live_store(6);
    let a = grouped(EncryptionScheme::Cbcs, 1).with_store(store.clone());
    let b = grouped(EncryptionScheme::Cbcs, 1).with_store(store.clone());
    let span = store.segment_spans("news").pop().expect("segments");
    let key = a
        .segment_key("news", "720p", TrackKind::Video, span.newest)
        .expect("key");
    assert!(b.locate_key(&key.kid, Some("news")).is_none());
    assert_ne!(
        b.segment_key("news", "720p", TrackKind::Video, span.newest)
            .expect("b's own"),
        key,
        "random keys differ per origin"
    );
}

const LICENCE_SECRET: &str = "00112233445566778899aabbccddeeff";

#[test]
fn a_config_that_would_hand_keys_to_anyone_is_refused() {
    let cfg = |text: &str| crate::config::OriginConfig::parse(text);
    let encrypted =
        "[keys]\nstate_dir = \"/tmp/x\"\n[encryption.channels.premium]\nscheme = \"cenc\"\n";
    let err = cfg(encrypted).expect_err("keys to anyone");
    assert!(
        err.to_string()
            .starts_with("encryption.licence_token.keys:")
            && err.to_string().contains("licence_auth = \"none\""),
        "{err}"
    );
    let open = encrypted.replace(
        "[encryption.channels",
        "[encryption]\nlicence_auth = \"none\"\n[encryption.channels",
    );
    cfg(&open).expect("explicitly open");
    let err = cfg(&format!(
        "{encrypted}[encryption.licence_token]\nkeys = [{{ id = \"k\", secret = \"zz\" }}]\n"
    ))
    .expect_err("bad key");
    assert!(
        err.to_string()
            .starts_with("encryption.licence_token.keys[0].secret"),
        "{err}"
    );
    // Nothing encrypted: nothing to protect, no keys needed.
    cfg("[encryption]\nclearkey = true\n").expect("clear channels");
}

#[tokio::test]
async fn licences_and_keys_need_a_token_whose_acl_covers_them() {
    let (mut drm, registry) = drm(EncryptionScheme::Cenc, 0);
    drm.config.licence_auth = LicenceAuth::Token;
    drm.config.licence_token.keys = vec![strata_edgeauth::KeyConfig {
        id: "k".into(),
        secret: LICENCE_SECRET.into(),
    }];
    let drm = Drm::new(drm.config.clone(), drm.keys.clone(), drm.metrics.clone());
    let key = drm.keys.key_for("news", None).expect("key");
    let router = http::playback_routes(Arc::new(drm));
    let now = std::time::SystemTime::now();
    let token = |acl: &str| {
        strata_edgeauth::sign(
            LICENCE_SECRET,
            acl,
            std::time::Duration::from_secs(300),
            now,
            None,
            None,
        )
        .expect("token")
    };
    let body = || format!("{{\"kids\":[\"{}\"]}}", key.kid.base64url());
    let post = |uri: String, cookie: Option<String>| {
        let mut r = Request::post(uri).header("content-type", "application/json");
        if let Some(c) = cookie {
            r = r.header("cookie", c);
        }
        r.body(Body::from(body())).expect("request")
    };
    let reason = |r: &axum::response::Response| {
        r.headers()
            .get("strata-reject-reason")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // No token, or one for another channel: no licence, no key in the body.
    for (uri, want) in [
        ("/drm/clearkey/news".to_owned(), "missing"),
        (
            format!("/drm/clearkey/news?token={}", token("/drm/clearkey/sport")),
            "acl",
        ),
    ] {
        let r = router
            .clone()
            .oneshot(post(uri.clone(), None))
            .await
            .expect("infallible");
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{uri}");
        assert_eq!(reason(&r).as_deref(), Some(want), "{uri}");
        let body = axum::body::to_bytes(r.into_body(), 1 << 16)
            .await
            .expect("body");
        assert!(!String::from_utf8_lossy(&body).contains(&URL_SAFE_NO_PAD_TEST.encode(key.key)));
    }
    // A forged signature.
    let mut forged = token("/drm/*");
    let last = forged.pop().expect("hex digit");
    forged.push(if last == '0' { '1' } else { '0' });
    let r = router
        .clone()
        .oneshot(post(format!("/drm/clearkey/news?token={forged}"), None))
        .await
        .expect("infallible");
    assert_eq!(reason(&r).as_deref(), Some("signature"));
    // A token for the channel, in the query or a cookie: the licence.
    for (uri, cookie) in [
        (
            format!("/drm/clearkey/news?token={}", token("/drm/clearkey/news")),
            None,
        ),
        (
            "/drm/clearkey/news".to_owned(),
            Some(format!("token={}", token("/drm/*"))),
        ),
    ] {
        let (status, body, _) = call(&router, post(uri.clone(), cookie)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert!(
            body.contains(&URL_SAFE_NO_PAD_TEST.encode(key.key)),
            "{body}"
        );
    }
    // HLS keys: the same rule on the key URI.
    let get = |uri: String| Request::get(uri).body(Body::empty()).expect("request");
    let path = format!("/live/news/key/{}.key", key.kid.hex());
    let r = router
        .clone()
        .oneshot(get(path.clone()))
        .await
        .expect("infallible");
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = router
        .clone()
        .oneshot(get(format!("{path}?token={}", token("/live/news/*"))))
        .await
        .expect("infallible");
    assert_eq!(r.status(), StatusCode::OK);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).expect("metrics");
    assert!(
        text.contains("strata_origin_drm_licence_requests_total{outcome=\"unauthorised\"} 3")
            && text.contains("strata_origin_drm_key_requests_total{outcome=\"unauthorised\"} 1"),
        "{text}"
    );
}

/// A 25-frame segment of the demo video cut into three LL parts.
fn demo_parts(sequence: u64) -> Vec<Arc<crate::package::Part>> {
    let (params, video) = demo_video();
    let init = Arc::new(crate::package::Init::new(sequence, params));
    let mut at = 0u64;
    video
        .chunks(9)
        .enumerate()
        .map(|(index, samples)| {
            let duration: u64 = samples.iter().map(|s| u64::from(s.duration)).sum();
            let track = crate::package::TrackSegment {
                init: init.clone(),
                base_decode_time: at,
                duration,
                period_offset: 0,
                samples: samples.to_vec(),
                bytes: samples.iter().map(|s| s.data.len()).sum(),
            };
            at += duration;
            Arc::new(crate::package::Part::new(
                sequence,
                index as u32,
                TrackKind::Video,
                track,
            ))
        })
        .collect()
}

/// The child boxes of `data[from..to]` named `fourcc`, in order.
fn child_boxes(data: &[u8], from: usize, to: usize, fourcc: &[u8; 4]) -> Vec<cenc::BoxRange> {
    cenc::boxes(data, from, to)
        .expect("boxes")
        .into_iter()
        .filter(|b| &b.fourcc == fourcc)
        .collect()
}

/// Decrypts a `cenc` part from its own `senc` (CTR: encrypting again with
/// the same IVs is decrypting) and returns its samples' bytes; also
/// returns the IVs it read.
fn decrypt_cenc_part(part: &[u8], p: &TrackProtection) -> (Vec<u8>, Vec<Vec<u8>>) {
    let moof = child_boxes(part, 0, part.len(), b"moof").remove(0);
    let mdat = child_boxes(part, 0, part.len(), b"mdat").remove(0);
    let traf = child_boxes(part, moof.body, moof.end, b"traf").remove(0);
    for aux in [b"senc", b"saiz", b"saio"] {
        assert_eq!(child_boxes(part, traf.body, traf.end, aux).len(), 1);
    }
    let senc = child_boxes(part, traf.body, traf.end, b"senc").remove(0);
    let u32_at = |at: usize| u32::from_be_bytes(part[at..at + 4].try_into().expect("4"));
    let flags = u32_at(senc.body);
    assert_eq!(flags & 2, 2, "video: subsamples listed");
    let count = u32_at(senc.body + 4) as usize;
    let mut at = senc.body + 8;
    let mut media = part[mdat.body..mdat.end].to_vec();
    let (mut sample_at, mut ivs) = (0, Vec::new());
    for _ in 0..count {
        let iv = part[at..at + 8].to_vec();
        let n = u16::from_be_bytes([part[at + 8], part[at + 9]]) as usize;
        at += 10;
        let mut layout = Vec::new();
        for _ in 0..n {
            let clear = u16::from_be_bytes([part[at], part[at + 1]]);
            layout.push((clear, u32_at(at + 2)));
            at += 6;
        }
        let size: usize = layout
            .iter()
            .map(|(c, e)| usize::from(*c) + *e as usize)
            .sum();
        cenc::encrypt_subsamples(p, &iv, &mut media[sample_at..sample_at + size], layout);
        sample_at += size;
        ivs.push(iv);
    }
    assert_eq!(sample_at, media.len(), "senc covers every sample");
    (media, ivs)
}

#[test]
fn ll_parts_of_cenc_channels_decrypt_with_their_segments_key_and_ivs_never_repeat() {
    let (drm, _registry) = drm(EncryptionScheme::Cenc, 0);
    let key = drm
        .segment_key("news", "main", TrackKind::Video, 40)
        .expect("key");
    let p = drm.track_protection(EncryptionScheme::Cenc, TrackKind::Video, &key, false);
    let mut ivs = std::collections::HashSet::new();
    for sequence in [40u64, 41] {
        for part in demo_parts(sequence) {
            let path = part.path("main");
            assert_eq!(path, format!("main/video/{sequence}.{}.m4s", part.index));
            let sealed = drm
                .protect("news", &path, part.render())
                .expect("a cenc part");
            assert_ne!(sealed.body, part.render().body);
            let (media, part_ivs) = decrypt_cenc_part(&sealed.body, &p);
            let clear: Vec<u8> = part
                .track
                .samples
                .iter()
                .flat_map(|s| s.data.iter().copied())
                .collect();
            assert!(media == clear, "part {path} decrypts to its samples");
            for iv in part_ivs {
                assert!(ivs.insert(iv), "an IV used twice under one key ({path})");
            }
        }
    }
}

#[test]
fn a_chunked_segment_is_its_protected_parts_streamed_or_whole() {
    for scheme in [EncryptionScheme::Cbcs, EncryptionScheme::Cenc] {
        let (drm, _registry) = drm(scheme, 0);
        let parts = demo_parts(40);
        // What a request streamed while the segment was cut was sent ...
        let streamed: Vec<u8> = parts
            .iter()
            .enumerate()
            .flat_map(|(i, part)| {
                drm.protect_chunk("news", "main", part, i == 0)
                    .expect("chunk")
                    .to_vec()
            })
            .collect();
        // ... is the finished segment's protected render.
        let clear = crate::package::chunked_fragment(&parts);
        let whole = drm
            .protect(
                "news",
                "main/video/40-ll.m4s",
                Rendered::new(clear.clone(), "video/mp4", IMMUTABLE.into()),
            )
            .expect("the whole chunked segment");
        assert!(whole.body == streamed, "{scheme:?}: streamed == whole");
        let top: Vec<[u8; 4]> = cenc::boxes(&whole.body, 0, whole.body.len())
            .expect("tiles")
            .iter()
            .map(|b| b.fourcc)
            .collect();
        assert_eq!(top.len(), 1 + 2 * parts.len(), "{scheme:?}");
        assert_eq!(&top[0], b"styp");
        // Every chunk carries its own sample auxiliary information.
        for moof in child_boxes(&whole.body, 0, whole.body.len(), b"moof") {
            let traf = child_boxes(&whole.body, moof.body, moof.end, b"traf").remove(0);
            assert_eq!(
                child_boxes(&whole.body, traf.body, traf.end, b"senc").len(),
                1,
                "{scheme:?}"
            );
        }
        // The clear parts were not what left.
        assert!(whole.body != clear);
    }
    // AES-128 channels have no parts.
    let (drm, _registry) = drm(EncryptionScheme::Aes128, 0);
    let part = demo_parts(40).remove(0);
    assert!(matches!(
        drm.protect("news", &part.path("main"), part.render()),
        Err(ProtectError::NotOffered)
    ));
}

#[test]
fn ll_playlists_key_each_segments_parts_before_the_first_of_them() {
    // rotate_every 2: 100, 101 in period 50; 102 (open) in period 51.
    let drm = grouped(EncryptionScheme::Cbcs, 2);
    let playlist = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.500,CAN-SKIP-UNTIL=12.000
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:100
#EXT-X-DISCONTINUITY-SEQUENCE:0
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MAP:URI=\"video/init-5.mp4\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:00.000Z
#EXTINF:2.000,
video/100.m4s
#EXT-X-PART:DURATION=1.000,URI=\"video/101.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=1.000,URI=\"video/101.1.m4s\"
#EXT-X-PROGRAM-DATE-TIME:2026-11-25T10:00:02.000Z
#EXTINF:2.000,
video/101.m4s
#EXT-X-PART:DURATION=1.000,URI=\"video/102.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"video/102.1.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"../480p/video.m3u8\",LAST-MSN=102,LAST-PART=0
";
    let text = playlist_with_sample_aes(playlist, |seq| {
        let key = drm.segment_key("news", "720p", TrackKind::Video, seq)?;
        Ok(drm.signalling("news", EncryptionScheme::Cbcs, &key))
    })
    .expect("playlist");
    let p50 = drm
        .keys
        .group_key("news", Some("hd"), Some(50))
        .expect("50");
    let p51 = drm
        .keys
        .group_key("news", Some("hd"), Some(51))
        .expect("51");
    let key_before = |uri: &str| {
        let at = text.find(uri).unwrap_or_else(|| panic!("{uri} in {text}"));
        let tag = text[..at]
            .rfind("#EXT-X-KEY:METHOD=SAMPLE-AES,KEYFORMAT=\"org.w3.clearkey\"")
            .expect("a key before");
        text[tag..].split("KEYID=0x").nth(1).expect("keyid")[..32].to_owned()
    };
    for uri in ["video/100.m4s", "video/101.0.m4s", "video/101.m4s"] {
        assert_eq!(key_before(uri), p50.kid.hex(), "{uri}: {text}");
    }
    // The open segment's parts and the hinted one are in the next period.
    for uri in ["video/102.0.m4s", "video/102.1.m4s"] {
        assert_eq!(key_before(uri), p51.kid.hex(), "{uri}: {text}");
    }
    assert_eq!(
        text.matches("KEYFORMAT=\"org.w3.clearkey\"").count(),
        2,
        "{text}"
    );
    // Nothing was lost or reordered but the key tags added.
    let without: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("#EXT-X-KEY"))
        .collect();
    assert_eq!(without, playlist.lines().collect::<Vec<_>>());
}
