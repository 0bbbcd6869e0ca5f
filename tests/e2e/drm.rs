//! Keys through the edge: a real origin (demo channel, HLS AES-128) behind a
//! real edge with tokens on. Keys reach only token holders, pass through
//! `private, no-store`, and the edge's cache never keeps them.

use std::time::{Duration, SystemTime};

use strata::policy::{sign, TokenConfig};
use strata_origin::config::OriginConfig;
use strata_origin::drm::{ChannelEncryption, EncryptionScheme};
use strata_origin::server::{OriginListeners, RunOptions};
use tokio::sync::oneshot;

use crate::harness::{client, metric, start_edge};

const SECRET: &str = "0123456789abcdef0123456789abcdef";
const API_TOKEN: &str = "drm-e2e-api-token-0123456789";

struct Origin {
    http: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _stop: oneshot::Sender<()>,
    _dir: TempDir,
}

struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The origin with its looping demo channel encrypted with `scheme`.
async fn start_encrypting_origin(scheme: EncryptionScheme) -> Origin {
    static ORIGINS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = ORIGINS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!(
        "strata-e2e-drm-{}-{n}-{scheme:?}",
        std::process::id(),
    ));
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = OriginConfig::default();
    config.keys.state_dir = Some(dir.clone());
    config.server.api_token = Some(API_TOKEN.into());
    // The origin checks the viewer's token again before a key leaves it:
    // the edges' token key.
    config.encryption.licence_token.keys = vec![strata::policy::KeyConfig {
        id: "k".into(),
        secret: SECRET.into(),
    }];
    config.encryption.channels.insert(
        "demo".into(),
        ChannelEncryption {
            scheme,
            ..ChannelEncryption::default()
        },
    );
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let (http, admin) = (bind(), bind());
    let addrs = (
        http.local_addr().expect("addr"),
        admin.local_addr().expect("addr"),
    );
    let listeners = OriginListeners {
        http,
        admin: Some(admin),
        rtmp: None,
        srt: None,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        demo: true,
        open_ingest: false,
    };
    tokio::spawn(async move {
        strata_origin::server::run(config, listeners, options, async move {
            let _ = stopped.await;
        })
        .await
        .expect("origin run");
    });
    Origin {
        http: addrs.0,
        admin: addrs.1,
        _stop: stop,
        _dir: TempDir(dir),
    }
}

fn hex_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Unpadded base64url (RFC 4648 §5), as W3C ClearKey JWKs use.
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn token_config() -> TokenConfig {
    toml::from_str(&format!(
        "keys = [{{ id = \"k\", secret = \"{SECRET}\" }}]\nrequire = [\"/live/\", \"/drm/\"]\n"
    ))
    .expect("token config")
}

/// The media playlist once the demo channel has published a segment.
async fn media_playlist(url: &str) -> String {
    let client = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut last: String;
    loop {
        match client.get(url).send().await {
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                if status == 200 && text.contains("#EXT-X-KEY") {
                    return text;
                }
                last = format!("{status}: {text}");
            }
            Err(e) => last = e.to_string(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no encrypted playlist at {url}; last answer {last}"
        );
        // The demo publishes a segment every ~2 s; poll for it.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_keys_pass_the_edge_only_with_a_token_and_are_never_cached() {
    let origin = start_encrypting_origin(EncryptionScheme::Aes128).await;
    let edge = start_edge(&[format!("http://{}", origin.http)], "drm-edge", |c| {
        c.token = Some(token_config())
    })
    .await;
    let token = sign(
        SECRET,
        "/live/demo/*!/drm/*",
        Duration::from_secs(300),
        SystemTime::now(),
        None,
        None,
    )
    .expect("sign");
    let playlist_url = edge.url(&format!("/live/demo/main/video.m3u8?token={token}"));
    let playlist = media_playlist(&playlist_url).await;
    let key_line = playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-KEY:METHOD=AES-128"))
        .expect("key tag");
    let uri = key_line
        .split("URI=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("key URI");
    assert!(
        uri.contains("token="),
        "the edge carries the token on: {uri}"
    );
    let key_url = reqwest::Url::parse(&playlist_url)
        .expect("url")
        .join(uri)
        .expect("key url");

    let client = client();
    let mut keys = Vec::new();
    for _ in 0..3 {
        let r = client.get(key_url.clone()).send().await.expect("key");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["cache-control"].to_str().expect("ascii"),
            "private, no-store"
        );
        keys.push(r.bytes().await.expect("key bytes"));
    }
    assert_eq!(keys[0].len(), 16);
    assert!(keys.iter().all(|k| k == &keys[0]));
    // Every request reached the origin: the edge's cache holds no key.
    let origin_metrics = text(&client, &format!("http://{}/metrics", origin.admin)).await;
    assert_eq!(
        metric(
            &origin_metrics,
            "strata_origin_drm_key_requests_total{outcome=\"ok\"}"
        ),
        Some(3.0),
        "{origin_metrics}"
    );

    // No token, no key.
    let mut bare = key_url.clone();
    bare.set_query(None);
    let r = client.get(bare).send().await.expect("bare");
    assert_eq!(r.status(), 403);
    // ClearKey licences: POST passes through the edge (uncached) with a
    // token, and only then.
    let kid_hex = uri
        .split("key/")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .expect("kid in key URI");
    let kid = base64_url(&hex_bytes(kid_hex));
    let body = format!("{{\"kids\":[\"{kid}\"],\"type\":\"temporary\"}}");
    let r = client
        .post(edge.url("/drm/clearkey/demo"))
        .body(body.clone())
        .send()
        .await
        .expect("licence without token");
    assert_eq!(r.status(), 403, "a licence needs a token");
    for _ in 0..2 {
        let r = client
            .post(edge.url(&format!("/drm/clearkey/demo?token={token}")))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("licence");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["cache-control"].to_str().expect("ascii"),
            "private, no-store"
        );
        let jwks: serde_json::Value =
            serde_json::from_slice(&r.bytes().await.expect("body")).expect("JWKS");
        assert_eq!(jwks["keys"][0]["kid"], kid.as_str());
        assert_eq!(jwks["keys"][0]["k"], base64_url(&keys[0]).as_str());
    }
    let r = client
        .post(edge.url(&format!("/drm/clearkey/demo?token={token}")))
        .body("{not json")
        .send()
        .await
        .expect("bad licence");
    assert_eq!(r.status(), 400);
    let origin_metrics = text(&client, &format!("http://{}/metrics", origin.admin)).await;
    assert_eq!(
        metric(
            &origin_metrics,
            "strata_origin_drm_licence_requests_total{outcome=\"ok\"}"
        ),
        Some(2.0),
        "both licences came from the origin: {origin_metrics}"
    );
    // The origin checks the token again: straight to it, around the edge,
    // no token gets no key and no licence.
    let direct_key = format!("http://{}{}", origin.http, key_url.path());
    let r = client.get(&direct_key).send().await.expect("direct key");
    assert_eq!(r.status(), 403, "the origin wants a token for a key too");
    assert_eq!(r.headers()["strata-reject-reason"], "missing");
    let r = client
        .post(format!("http://{}/drm/clearkey/demo", origin.http))
        .body(body.clone())
        .send()
        .await
        .expect("direct licence");
    assert_eq!(r.status(), 403, "the origin wants a token for a licence");
    let r = client
        .get(format!("{direct_key}?token={token}"))
        .send()
        .await
        .expect("direct key with token");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("key"), keys[0]);
    edge.shutdown().await;
}

/// `play.mjs` with ClearKey keys, one Chromium at a time; its JSON report.
async fn play_clearkey(player: &str, url: &str, clearkey: &str) -> serde_json::Value {
    let _turn = crate::stack::BROWSER.lock().await;
    let browser = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let out = tokio::process::Command::new("node")
        .arg(browser.join("play.mjs"))
        .args([
            "--player",
            player,
            "--url",
            url,
            "--seconds",
            "6",
            "--timeout",
            "50",
        ])
        .args(["--clearkey", clearkey])
        .current_dir(&browser)
        .kill_on_drop(true)
        .output()
        .await
        .expect("node — run scripts/install-test-deps.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "play.mjs printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// Real players through a tokened edge: hls.js plays AES-128 HLS (keys via
/// the edge, token carried on by the edge's playlist rewrite), Shaka plays
/// ClearKey cenc DASH with the key the operator exported as CPIX.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_play_encrypted_live_through_a_tokened_edge() {
    crate::stack::require_peers();
    let token = sign(
        SECRET,
        "/live/demo/*!/drm/*",
        Duration::from_secs(300),
        SystemTime::now(),
        None,
        None,
    )
    .expect("sign");

    let aes = start_encrypting_origin(EncryptionScheme::Aes128).await;
    let edge = start_edge(&[format!("http://{}", aes.http)], "drm-aes", |c| {
        c.token = Some(token_config())
    })
    .await;
    media_playlist(&edge.url(&format!("/live/demo/main/video.m3u8?token={token}"))).await;
    crate::stack::assert_plays(
        "hls",
        &edge.url(&format!("/live/demo/master.m3u8?token={token}")),
        6,
    )
    .await;
    edge.shutdown().await;

    let cenc = start_encrypting_origin(EncryptionScheme::Cenc).await;
    let edge = start_edge(&[format!("http://{}", cenc.http)], "drm-cenc", |c| {
        c.token = Some(token_config())
    })
    .await;
    media_playlist(&edge.url(&format!("/live/demo/main/video.m3u8?token={token}"))).await;
    let cpix = client()
        .get(format!("http://{}/api/channels/demo/keys", cenc.admin))
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .expect("CPIX export")
        .text()
        .await
        .expect("CPIX text");
    let keys = strata_origin::keys::parse_cpix(&cpix).expect("CPIX");
    let pair = format!("{}:{}", keys[0].kid.hex(), hex_string(&keys[0].key));
    let report = play_clearkey(
        "shaka",
        &edge.url(&format!("/live/demo/manifest.mpd?token={token}")),
        &pair,
    )
    .await;
    assert_eq!(report["ok"], true, "{report}");
    edge.shutdown().await;
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The body of a GET as text.
async fn text(client: &reqwest::Client, url: &str) -> String {
    client
        .get(url)
        .send()
        .await
        .expect("response")
        .text()
        .await
        .expect("text")
}
