//! Encrypted VOD end to end: one ffmpeg-made title under three prefixes
//! (`aes/`, `cbcs/`, `cenc/`, each its own title with its own key),
//! packaged by the origin behind an edge that requires EdgeAuth tokens.
//! hls.js, dash.js and Shaka play it through the edge in headless Chromium
//! with licences through the edge from the origin's ClearKey server (the
//! token in the licence URL, as a site configures it), seeking ahead; ffmpeg decodes the AES-128 title
//! (fMP4 and MPEG-TS) with the key fetched through the edge. Keys reach only
//! token holders.

use std::time::{Duration, SystemTime};

use strata::policy::{sign, TokenConfig};
use strata_origin::drm::EncryptionScheme;
use strata_origin::vod::protect::VodEncryption;

use crate::harness::client;
use crate::stack::{require_peers, start_stack_with};
use crate::vod::make_library_in;

const SECRET: &str = "0123456789abcdef0123456789abcdef";

struct KeyDir(std::path::PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn token_config() -> TokenConfig {
    toml::from_str(&format!(
        "keys = [{{ id = \"k\", secret = \"{SECRET}\" }}]\nrequire = [\"/vod/\", \"/drm/\"]\n"
    ))
    .expect("token config")
}

/// Plays `url` with `player`, licences from `licence` (if any), seeking to
/// 14 s of the 20 s title after 5 s of play; the report.
async fn play_and_seek(player: &str, url: &str, licence: Option<&str>) -> serde_json::Value {
    let mut extra = vec!["--seek".to_owned(), "14".to_owned()];
    if let Some(licence) = licence {
        extra.extend(["--licence-url".to_owned(), licence.to_owned()]);
    }
    let report = crate::stack::start_play_with(player, url, 5, &extra)
        .await
        .finish()
        .await;
    assert!(
        report["seek"]["reached"]
            .as_f64()
            .is_some_and(|t| t >= 16.0),
        "{player} on {url}: seeking to 14 s played on past 16 s: {report}"
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_vod_plays_in_every_player_and_keys_need_a_token() {
    require_peers();
    let library = make_library_in("strata-vod-drm").await;
    let root = library.0.clone();
    for prefix in ["aes", "cbcs", "cenc"] {
        std::fs::create_dir_all(root.join(prefix)).expect("prefix dir");
        std::os::unix::fs::symlink("../title.mp4", root.join(prefix).join("title.mp4"))
            .expect("symlink");
    }
    let keys = KeyDir(std::env::temp_dir().join(format!("strata-vod-keys-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&keys.0);
    let state_dir = keys.0.clone();
    let stack = start_stack_with(
        move |c| {
            c.keys.state_dir = Some(state_dir);
            c.encryption.licence_token.keys = vec![strata::policy::KeyConfig {
                id: "k".into(),
                secret: SECRET.into(),
            }];
            c.vod = Some(strata_origin::vod::VodConfig {
                encryption: VodEncryption {
                    prefixes: [
                        ("aes".to_owned(), EncryptionScheme::Aes128),
                        ("cbcs".to_owned(), EncryptionScheme::Cbcs),
                        ("cenc".to_owned(), EncryptionScheme::Cenc),
                    ]
                    .into_iter()
                    .collect(),
                    ..VodEncryption::default()
                },
                ..crate::vod::test_vod_config(root)
            });
        },
        |e| e.token = Some(token_config()),
    )
    .await;
    let token = sign(
        SECRET,
        "/vod/*!/drm/*",
        Duration::from_secs(600),
        SystemTime::now(),
        None,
        None,
    )
    .expect("sign");
    let http = client();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(&url).send().await.expect("GET");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };

    // The clear title stays clear; each prefix has a key of its own.
    let (status, clear) = get(stack.origin("/vod/title.mp4/t1.m3u8")).await;
    assert_eq!(status, 200, "{clear}");
    assert!(!clear.contains("#EXT-X-KEY"), "{clear}");
    let (status, aes_playlist) = get(stack.origin("/vod/aes/title.mp4/t1.m3u8")).await;
    assert_eq!(status, 200, "{aes_playlist}");
    let key_line = aes_playlist
        .lines()
        .find(|l| l.starts_with("#EXT-X-KEY:METHOD=AES-128,URI=\"key/"))
        .unwrap_or_else(|| panic!("AES-128 key tag: {aes_playlist}"))
        .to_owned();
    let key_path = key_line
        .split("URI=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .expect("key URI");
    assert_eq!(
        get(stack.origin("/vod/aes/title.mp4/manifest.mpd")).await.0,
        404,
        "no DASH for an AES-128 title"
    );

    // Keys and licences go only to token holders, at the origin too.
    let key_url = format!("/vod/aes/title.mp4/{key_path}");
    let (status, _) = get(stack.origin(&key_url)).await;
    assert_eq!(status, 403, "a key without a token");
    let r = http
        .get(stack.origin(&format!("{key_url}?token={token}")))
        .send()
        .await
        .expect("key");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "private, no-store",
        "keys are never cached"
    );
    assert_eq!(r.bytes().await.expect("key").len(), 16);
    let (status, mpd) = get(stack.origin("/vod/cenc/title.mp4/manifest.mpd")).await;
    assert_eq!(status, 200, "{mpd}");
    let kid = mpd
        .split("cenc:default_KID=\"")
        .nth(1)
        .and_then(|v| v.split('"').next())
        .unwrap_or_else(|| panic!("default_KID in {mpd}"))
        .replace('-', "");
    assert!(
        mpd.contains("/drm/clearkey/vod/cenc/title.mp4"),
        "the licence URL names the title: {mpd}"
    );
    let kid_b64 = {
        let bytes: Vec<u8> = (0..16)
            .map(|i| u8::from_str_radix(&kid[2 * i..2 * i + 2], 16).expect("hex"))
            .collect();
        base64_url(&bytes)
    };
    let licence_body = format!("{{\"kids\":[\"{kid_b64}\"],\"type\":\"temporary\"}}");
    let post = |url: String| {
        let (http, body) = (http.clone(), licence_body.clone());
        async move {
            let r = http.post(&url).body(body).send().await.expect("POST");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
    };
    let (status, _) = post(stack.origin("/drm/clearkey/vod/cenc/title.mp4")).await;
    assert_eq!(status, 403, "a licence without a token");
    let (status, licence) =
        post(stack.origin(&format!("/drm/clearkey/vod/cenc/title.mp4?token={token}"))).await;
    assert_eq!(status, 200, "{licence}");
    assert!(licence.contains(&kid_b64), "{licence}");
    let (status, _) =
        post(stack.origin(&format!("/drm/clearkey/vod/cbcs/title.mp4?token={token}"))).await;
    assert_eq!(status, 404, "a licence names one title's keys only");
    // Through the edge, which checks the token and keeps it on the way up
    // (a VOD licence URL ends in `.mp4`: it was taken for a segment and the
    // token dropped, so the origin said 403).
    let (status, licence) =
        post(stack.edge(&format!("/drm/clearkey/vod/cenc/title.mp4?token={token}"))).await;
    assert_eq!(status, 200, "a licence through the edge: {licence}");
    assert!(licence.contains(&kid_b64), "{licence}");
    let (status, _) = post(stack.edge("/drm/clearkey/vod/cenc/title.mp4")).await;
    assert_eq!(status, 403, "a licence through the edge without a token");

    // The operator's CPIX export holds the key the MPD names.
    let cpix = http
        .get(stack.api("/api/vod/keys/cenc/title.mp4"))
        .bearer_auth(crate::stack::API_TOKEN)
        .send()
        .await
        .expect("CPIX")
        .text()
        .await
        .expect("CPIX text");
    let exported = strata_origin::keys::parse_cpix(&cpix).expect("CPIX parses");
    assert_eq!(exported.len(), 1, "{cpix}");
    assert_eq!(exported[0].kid.hex(), kid);

    // ffmpeg decodes the AES-128 title through the edge, fMP4 and MPEG-TS,
    // fetching its key there with the token the edge writes into the playlist.
    for master in ["master.m3u8", "master-ts.m3u8"] {
        crate::stack::assert_decodes(
            &stack.edge(&format!("/vod/aes/title.mp4/{master}?token={token}")),
            8,
        )
        .await;
    }

    let edge = |path: &str| stack.edge(&format!("{path}?token={token}"));
    play_and_seek("hls", &edge("/vod/aes/title.mp4/master.m3u8"), None).await;
    for scheme in ["cbcs", "cenc"] {
        // As a site configures its players: licences through the CDN, the
        // viewer's token in the URL.
        let licence = stack.edge(&format!(
            "/drm/clearkey/vod/{scheme}/title.mp4?token={token}"
        ));
        play_and_seek(
            "hls",
            &edge(&format!("/vod/{scheme}/title.mp4/master.m3u8")),
            Some(&licence),
        )
        .await;
        for player in ["dash", "shaka"] {
            play_and_seek(
                player,
                &edge(&format!("/vod/{scheme}/title.mp4/manifest.mpd")),
                Some(&licence),
            )
            .await;
        }
    }
}

/// Unpadded base64url (RFC 4648 §5), as W3C ClearKey licence requests use.
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

/// The CMAF of rendition 1 of `title` fetched from `base` (an origin URL
/// ending in `/vod/`): one file per fragment its playlist lists, each the
/// init segment and that fragment, under `dir`; their paths. (ffmpeg 5.1's
/// mov demuxer applies the last-read `moof`'s sample encryption to earlier
/// samples of a file of several fragments, so each is decrypted alone.)
async fn fetch_cmaf(base: &str, title: &str, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let http = client();
    let get = |url: String| {
        let http = http.clone();
        async move {
            let r = http.get(&url).send().await.expect("GET");
            let status = r.status().as_u16();
            let body = r.bytes().await.expect("body");
            assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
            body
        }
    };
    let playlist = get(format!("{base}{title}/t1.m3u8")).await;
    let init = get(format!("{base}{title}/t1/init.mp4")).await;
    let text = String::from_utf8_lossy(&playlist).into_owned();
    let fragments: Vec<&str> = text.lines().filter(|l| l.ends_with(".m4s")).collect();
    assert!(fragments.len() >= 2, "{text}");
    let mut files = Vec::new();
    for (n, f) in fragments.into_iter().enumerate() {
        let mut out = init.to_vec();
        out.extend_from_slice(&get(format!("{base}{title}/{f}")).await);
        let path = dir.join(format!("{}-{n}.mp4", title.replace('/', "-")));
        std::fs::write(&path, &out).expect("write CMAF");
        files.push(path);
    }
    files
}

/// framemd5 of the video decoded from `file` (with `key`, hex, if given);
/// panics on any error ffmpeg reports.
async fn framemd5(files: &[std::path::PathBuf], key: Option<&str>) -> Vec<String> {
    let mut frames = Vec::new();
    for file in files {
        frames.extend(framemd5_of(file, key).await);
    }
    frames
}

async fn framemd5_of(file: &std::path::Path, key: Option<&str>) -> Vec<String> {
    let mut cmd = tokio::process::Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-nostdin", "-loglevel", "error"]);
    if let Some(key) = key {
        cmd.args(["-decryption_key", key]);
    }
    let out = cmd
        .arg("-i")
        .arg(file)
        .args(["-map", "0:v", "-f", "framemd5", "-"])
        .output()
        .await
        .expect("ffmpeg — run scripts/install-test-deps.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "ffmpeg decoding {}: {stderr}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

/// Encrypted HEVC (cbcs and cenc): the init segment is an `encv` over
/// `hvcC` with the scheme's `sinf`; ffmpeg, given the title's key (from the
/// CPIX export), decodes the encrypted CMAF without an error into exactly
/// the frames of the clear title's; without the key it cannot (the slices
/// are encrypted); the DASH MPD carries ContentProtection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_hevc_vod_decrypts_to_the_clear_titles_frames() {
    require_peers();
    let library = crate::vod::make_hevc_library_in("strata-vod-hevc-drm").await;
    let root = library.0.clone();
    for prefix in ["cbcs", "cenc"] {
        std::fs::create_dir_all(root.join(prefix)).expect("prefix dir");
        std::os::unix::fs::symlink("../hevc.mp4", root.join(prefix).join("hevc.mp4"))
            .expect("symlink");
    }
    let keys =
        KeyDir(std::env::temp_dir().join(format!("strata-vod-hevc-keys-{}", std::process::id())));
    let _ = std::fs::remove_dir_all(&keys.0);
    let state_dir = keys.0.clone();
    let library_root = root.clone();
    let stack = start_stack_with(
        move |c| {
            c.keys.state_dir = Some(state_dir);
            c.encryption.licence_auth = strata_origin::drm::LicenceAuth::None;
            c.vod = Some(strata_origin::vod::VodConfig {
                encryption: VodEncryption {
                    prefixes: [
                        ("cbcs".to_owned(), EncryptionScheme::Cbcs),
                        ("cenc".to_owned(), EncryptionScheme::Cenc),
                    ]
                    .into_iter()
                    .collect(),
                    ..VodEncryption::default()
                },
                ..crate::vod::test_vod_config(library_root)
            });
        },
        |_| {},
    )
    .await;
    let base = stack.origin("/vod/");
    let clear_files = fetch_cmaf(&base, "hevc.mp4", &root).await;
    let clear = framemd5(&clear_files, None).await;
    assert!(clear.len() >= 200, "10 s at 25 fps: {} frames", clear.len());
    for scheme in ["cbcs", "cenc"] {
        let title = format!("{scheme}/hevc.mp4");
        let files = fetch_cmaf(&base, &title, &root).await;
        let bytes = std::fs::read(&files[0]).expect("read");
        let has = |fourcc: &[u8]| bytes.windows(4).any(|w| w == fourcc);
        assert!(
            has(b"encv") && has(b"hvcC") && has(b"frma") && has(scheme.as_bytes()),
            "{title}: an encv sample entry over hvcC with a {scheme} sinf"
        );
        assert!(!has(b"hvc1\0"), "no clear sample entry left");
        let cpix = client()
            .get(stack.api(&format!("/api/vod/keys/{title}")))
            .bearer_auth(crate::stack::API_TOKEN)
            .send()
            .await
            .expect("CPIX")
            .text()
            .await
            .expect("CPIX text");
        let exported = strata_origin::keys::parse_cpix(&cpix).expect("CPIX parses");
        let key = hex::encode(exported[0].key);
        let decrypted = framemd5(&files, Some(&key)).await;
        assert_eq!(
            decrypted.len(),
            clear.len(),
            "{title}: as many frames as the clear title"
        );
        let differing = clear.iter().zip(&decrypted).filter(|(a, b)| a != b).count();
        assert_eq!(
            differing, 0,
            "{title}: every decrypted frame is the clear title's"
        );
        // Without the key the slice data is noise: the decoder complains or
        // the pictures differ.
        let out = tokio::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-nostdin", "-loglevel", "error", "-i"])
            .arg(&files[0])
            .args(["-map", "0:v", "-f", "framemd5", "-"])
            .output()
            .await
            .expect("ffmpeg");
        let undecrypted: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(str::to_owned)
            .collect();
        assert!(
            !out.status.success()
                || !out.stderr.is_empty()
                || undecrypted.iter().zip(&clear).any(|(a, b)| a != b),
            "{title} is encrypted"
        );
        let (status, mpd) = {
            let r = client()
                .get(stack.origin(&format!("/vod/{title}/manifest.mpd")))
                .send()
                .await
                .expect("GET mpd");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        };
        assert_eq!(status, 200, "{mpd}");
        assert!(
            mpd.contains("cenc:default_KID") && mpd.contains("codecs=\"hvc1."),
            "{mpd}"
        );
    }
}
