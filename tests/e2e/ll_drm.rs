//! Low latency on encrypted channels: an origin with `store.part_target =
//! "0.5s"` and a `cbcs` or `cenc` channel, an edge in front of it, ffmpeg
//! publishing over RTMP. The LL-HLS parts and LL-DASH chunks that leave are
//! encrypted (each `moof` with its own `senc`), the key tag comes before a
//! segment's first part, an in-progress LL-DASH segment streams through the
//! edge as the same bytes the finished one has, and hls.js (low-latency mode,
//! its default) and dash.js (low-latency mode from the MPD, its default) play
//! it with ClearKey licences from the origin's licence server through the
//! edge.

use std::time::Duration;

use strata_origin::drm::{ChannelEncryption, EncryptionScheme};

use crate::harness::client;
use crate::ll_dash::boxes;
use crate::ll_hls::preload_hint;
use crate::stack::{require_peers, start_play_with, start_stack, wait_for_body, Publisher};

/// The key of the site's licence tokens (the origin's `encryption.licence_token.keys`).
const LICENCE_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// A key directory removed when the test ends.
struct KeyDir(std::path::PathBuf);

impl Drop for KeyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How many times `fourcc` occurs in `body`.
fn count_boxes(body: &[u8], fourcc: &[u8; 4]) -> usize {
    body.windows(4).filter(|w| w == fourcc).count()
}

async fn get_bytes(url: &str) -> (u16, bytes::Bytes) {
    let r = client().get(url).send().await.expect(url);
    let status = r.status().as_u16();
    (status, r.bytes().await.expect("body"))
}

async fn ll_channel_plays_encrypted(scheme: EncryptionScheme, channel: &str) {
    require_peers();
    let keys = KeyDir(std::env::temp_dir().join(format!(
        "strata-e2e-ll-drm-{}-{channel}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&keys.0);
    let state_dir = keys.0.clone();
    let stack = start_stack(|c| {
        c.store.part_target = Duration::from_millis(500);
        c.keys.state_dir = Some(state_dir);
        c.encryption.licence_token.keys = vec![strata::policy::KeyConfig {
            id: "site".into(),
            secret: LICENCE_SECRET.into(),
        }];
        c.encryption.channels.insert(
            channel.into(),
            ChannelEncryption {
                scheme,
                ..ChannelEncryption::default()
            },
        );
    })
    .await;
    let publisher = Publisher::start(&stack.rtmp_url(channel), "flv", "640x360");

    // The LL playlist through the edge: parts, and the key before the first.
    let playlist_url = stack.edge(&format!("/live/{channel}/main/video.m3u8"));
    let playlist = wait_for_body(
        &playlist_url,
        "an encrypted LL playlist",
        Duration::from_secs(30),
        |b| b.contains("#EXT-X-PRELOAD-HINT") && b.contains("#EXT-X-PART:"),
    )
    .await;
    let method = match scheme {
        EncryptionScheme::Cbcs => "#EXT-X-KEY:METHOD=SAMPLE-AES,",
        _ => "#EXT-X-KEY:METHOD=SAMPLE-AES-CTR,",
    };
    let key_at = playlist
        .find(method)
        .unwrap_or_else(|| panic!("no {method} in\n{playlist}"));
    let first_part = playlist.find("#EXT-X-PART:").expect("a part");
    assert!(key_at < first_part, "the key comes first:\n{playlist}");

    // A part through the edge is encrypted: sample auxiliary information.
    let part_uri = playlist
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("#EXT-X-PART:"))
        .and_then(|l| l.split("URI=\"").nth(1))
        .and_then(|u| u.split('"').next())
        .expect("a part URI")
        .to_owned();
    let (status, part) = get_bytes(&stack.edge(&format!("/live/{channel}/main/{part_uri}"))).await;
    assert_eq!(status, 200, "{part_uri}");
    assert_eq!(boxes(&part), ["styp", "moof", "mdat"], "{part_uri}");
    assert_eq!(count_boxes(&part, b"senc"), 1, "{part_uri} is encrypted");

    // LL-DASH: the MPD signals protection; the segment after the one being
    // cut, asked for through the edge, streams as encrypted chunks, the
    // same bytes as the finished segment at the origin.
    let mpd = wait_for_body(
        &stack.edge(&format!("/live/{channel}/manifest.mpd")),
        "an LL-DASH MPD",
        Duration::from_secs(30),
        |b| b.contains("<S "),
    )
    .await;
    assert!(mpd.contains("availabilityTimeComplete=\"false\""), "{mpd}");
    assert!(mpd.contains("cenc:default_KID"), "{mpd}");
    let now = client()
        .get(stack.origin(&format!("/live/{channel}/main/video.m3u8")))
        .send()
        .await
        .expect("playlist")
        .text()
        .await
        .expect("text");
    let (open, _) = preload_hint(&now);
    let path = format!("/live/{channel}/main/video/{}-ll.m4s", open + 1);
    let mut response = client()
        .get(stack.edge(&path))
        .send()
        .await
        .expect("in-progress segment through the edge");
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let mut streamed = Vec::new();
    while let Some(more) = response.chunk().await.expect("the segment's chunks") {
        streamed.extend_from_slice(&more);
    }
    let kinds = boxes(&streamed);
    let moofs = kinds.iter().filter(|k| *k == "moof").count();
    assert!(moofs >= 3, "several chunks: {kinds:?}");
    assert_eq!(
        count_boxes(&streamed, b"senc"),
        moofs,
        "every chunk encrypted"
    );
    let (status, whole) = get_bytes(&stack.origin(&path)).await;
    assert_eq!(status, 200);
    assert!(
        whole.as_ref() == streamed.as_slice(),
        "streamed == finished ({} vs {} bytes)",
        streamed.len(),
        whole.len()
    );

    // Players with ClearKey licences from the origin, through the edge, as
    // a site's page asks for them: with the viewer's token.
    let token = strata::policy::sign(
        LICENCE_SECRET,
        &format!("/drm/clearkey/{channel}"),
        Duration::from_secs(600),
        std::time::SystemTime::now(),
        None,
        None,
    )
    .expect("token");
    let licences = stack.edge(&format!("/drm/clearkey/{channel}?token={token}"));
    let extra = ["--licence-url".to_owned(), licences, "--verbose".to_owned()];
    let master = stack.edge(&format!("/live/{channel}/master.m3u8"));
    let (report, log) = start_play_with("hls", &master, 20, &extra)
        .await
        .finish_with_log()
        .await;
    println!("hls.js, {scheme:?} LL-HLS through the edge: {report}");
    let parts = log
        .lines()
        .filter(|l| l.contains(" 200 ") && l.contains("/video/"))
        .filter(|l| {
            l.rsplit('/')
                .next()
                .and_then(|f| f.strip_suffix(".m4s"))
                .is_some_and(|f| f.contains('.'))
        })
        .count();
    let blocking = log.lines().filter(|l| l.contains("_HLS_msn=")).count();
    assert!(
        parts >= 5 && blocking >= 5,
        "hls.js played low latency: {parts} parts, {blocking} blocking reloads"
    );
    let manifest = stack.edge(&format!("/live/{channel}/manifest.mpd"));
    let (report, log) = start_play_with("dash", &manifest, 20, &extra)
        .await
        .finish_with_log()
        .await;
    println!("dash.js, {scheme:?} LL-DASH through the edge: {report}");
    let chunked = log
        .lines()
        .filter(|l| l.contains(" 200 ") && l.contains("-ll.m4s"))
        .count();
    assert!(chunked >= 5, "dash.js loaded {chunked} LL-DASH segments");
    let latency = report["playerLatency"]["mean"]
        .as_f64()
        .unwrap_or_else(|| panic!("dash.js reported its live latency: {report}"));
    // Without LL, players keep three 2 s targets behind (6 s).
    assert!(latency < 6.0, "dash.js at {latency} s");

    publisher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_and_dash_js_play_a_cbcs_ll_channel_through_an_edge() {
    ll_channel_plays_encrypted(EncryptionScheme::Cbcs, "llcbcs").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hls_js_and_dash_js_play_a_cenc_ll_channel_through_an_edge() {
    ll_channel_plays_encrypted(EncryptionScheme::Cenc, "llcenc").await;
}
