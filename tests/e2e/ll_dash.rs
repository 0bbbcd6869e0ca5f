//! LL-DASH through a shield and an edge: an origin with
//! `store.part_target = "0.5s"` writes chunked CMAF and an MPD with
//! `availabilityTimeOffset`, `availabilityTimeComplete="false"`, a
//! `ServiceDescription` and `UTCTiming`; a segment asked for while it is cut
//! streams through both tiers chunk by chunk, and dash.js (default settings:
//! dash.js 5 turns low-latency mode on from the MPD) plays it.

use std::time::Duration;

use crate::harness::{client, start_edge};
use crate::ll_hls::preload_hint;
use crate::stack::{require_peers, start_play, start_stack, wait_for_body, Publisher};

/// Top-level box types of an ISO BMFF byte string, in order.
pub(crate) fn boxes(mut b: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
        out.push(String::from_utf8_lossy(&b[4..8]).into_owned());
        if size < 8 || size > b.len() {
            break;
        }
        b = &b[size..];
    }
    out
}

/// An independent reading of the MPD: Python's XML parser, namespaces
/// resolved, the LL-DASH attributes where ISO/IEC 23009-1 puts them.
async fn check_mpd_with_python(mpd: &str) {
    const SCRIPT: &str = r#"
import sys, xml.etree.ElementTree as ET
ns = {"d": "urn:mpeg:dash:schema:mpd:2011"}
root = ET.fromstring(sys.stdin.read())
assert root.get("type") == "dynamic", root.attrib
sd = root.find("d:ServiceDescription", ns)
lat = sd.find("d:Latency", ns)
assert int(lat.get("min")) <= int(lat.get("target")) <= int(lat.get("max")), lat.attrib
children = [c.tag.split("}")[1] for c in root]
assert children.index("ServiceDescription") < children.index("Period") < children.index("UTCTiming"), children
templates = root.findall(".//d:SegmentTemplate", ns)
assert templates
for t in templates:
    assert float(t.get("availabilityTimeOffset")) == 1.5, t.attrib
    assert t.get("availabilityTimeComplete") == "false", t.attrib
    assert t.find("d:SegmentTimeline/d:S", ns) is not None
print("ok", len(templates))
"#;
    let mut child = tokio::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (Debian python3) runs");
    let mut stdin = child.stdin.take().expect("stdin");
    tokio::io::AsyncWriteExt::write_all(&mut stdin, mpd.as_bytes())
        .await
        .expect("write MPD");
    drop(stdin);
    let out = child.wait_with_output().await.expect("python3 output");
    assert!(
        out.status.success(),
        "Python's reading of the MPD disagrees:\n{}\n{mpd}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_in_progress_segment_streams_through_shield_and_edge_and_dash_js_plays_low_latency() {
    require_peers();
    let stack = start_stack(|c| c.store.part_target = Duration::from_millis(500)).await;
    let shield = start_edge(&[stack.origin("")], "ll-shield", |_| {}).await;
    let edge = start_edge(&[shield.url("")], "ll-edge", |_| {}).await;
    let publisher = Publisher::start(&stack.rtmp_url("lld"), "flv", "640x360");

    // The MPD says LL-DASH, through both tiers.
    let mpd = wait_for_body(
        &edge.url("/live/lld/manifest.mpd"),
        "an LL-DASH MPD",
        Duration::from_secs(30),
        |b| b.contains("<S "),
    )
    .await;
    for wanted in [
        "availabilityTimeOffset=\"1.5\"",
        "availabilityTimeComplete=\"false\"",
        "<ServiceDescription id=\"0\">",
        "<Latency target=\"1500\"",
        "<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\"",
    ] {
        assert!(mpd.contains(wanted), "MPD lacks {wanted}:\n{mpd}");
    }

    check_mpd_with_python(&mpd).await;

    // The segment after the one being cut, asked for through edge → shield
    // → origin before it exists: held, then its first chunk arrives while
    // the origin is still cutting it.
    let playlist = stack.origin("/live/lld/main/video.m3u8");
    let now = wait_for_body(&playlist, "an LL playlist", Duration::from_secs(30), |b| {
        b.contains("#EXT-X-PRELOAD-HINT")
    })
    .await;
    let (open, _) = preload_hint(&now);
    let next = open + 1;
    let path = format!("/live/lld/main/video/{next}-ll.m4s");
    let mut response = client()
        .get(edge.url(&path))
        .send()
        .await
        .expect("in-progress segment through the edge");
    assert_eq!(
        response.status().as_u16(),
        200,
        "{path}: {:?}",
        response.headers()
    );
    let first = response
        .chunk()
        .await
        .expect("first chunk")
        .expect("a first chunk");
    let then = client()
        .get(&playlist)
        .send()
        .await
        .expect("playlist")
        .text()
        .await
        .expect("playlist text");
    let (cutting, _) = preload_hint(&then);
    assert_eq!(
        cutting, next,
        "the first chunk of segment {next} reached the player through two tiers while the origin was still cutting it:\n{then}"
    );
    let mut body = first.to_vec();
    while let Some(more) = response.chunk().await.expect("rest of the segment") {
        body.extend_from_slice(&more);
    }
    assert!(
        body.len() > first.len(),
        "the segment kept coming after its first chunk"
    );
    let kinds = boxes(&body);
    assert_eq!(kinds.first().map(String::as_str), Some("styp"), "{kinds:?}");
    let moofs = kinds.iter().filter(|k| *k == "moof").count();
    assert!(
        moofs >= 3,
        "a 2 s segment at 0.5 s parts is several chunks: {kinds:?}"
    );
    // The streamed copy is the segment: the origin's finished one and the
    // edge's cached one are the same bytes.
    let whole = client()
        .get(stack.origin(&path))
        .send()
        .await
        .expect("finished segment")
        .bytes()
        .await
        .expect("body");
    assert_eq!(whole.as_ref(), body.as_slice(), "streamed == finished");
    let again = client()
        .get(edge.url(&path))
        .send()
        .await
        .expect("segment again");
    // RFC 9211: the cache nearest the client (the edge) comes last.
    let cache_status: Vec<String> = again
        .headers()
        .get_all("cache-status")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|e| e.trim().to_owned()))
        .collect();
    let at_edge = cache_status.last().cloned().unwrap_or_default();
    assert_eq!(again.bytes().await.expect("body").as_ref(), body.as_slice());
    assert!(
        at_edge.starts_with("ll-edge; hit"),
        "the streamed segment was kept whole at the edge: {cache_status:?}"
    );

    // Far in the future: a 404 at once, not a held request.
    let far = client()
        .get(edge.url(&format!("/live/lld/main/video/{}-ll.m4s", next + 50)))
        .send()
        .await
        .expect("far-future segment");
    assert_eq!(far.status().as_u16(), 404);

    // dash.js with its default settings plays through shield and edge.
    let report = start_play("dash", &edge.url("/live/lld/manifest.mpd"), 30)
        .await
        .finish()
        .await;
    let latency = &report["playerLatency"];
    println!("dash.js through shield + edge, part_target 0.5s: latency {latency}, report {report}");
    assert_eq!(report["stalls"], 0, "{report}");
    let mean = latency["mean"]
        .as_f64()
        .expect("dash.js reported its live latency");
    // The issue's goal for dash.js: < 2.5 s (1.5-2.0 s seen here, mean 1.7;
    // the MPD's Latency@target is 1.5 s).
    assert!(mean < 2.5, "mean latency {mean} s");

    // A player without LL decodes the same channel: ffmpeg, its HLS output.
    // (Not its MPD: ffmpeg's dashdec restarts from the window's start, see
    // `assert_live_mpd_plays`; and GStreamer's dashdemux, run here on this
    // LL MPD after dash.js, rendered 0.9 s and then nothing for 40 s in two
    // runs beside the ll_hls tests, while it played alone: not understood
    // yet, left open in issue 10's note.)
    crate::stack::assert_decodes(&edge.url("/live/lld/master.m3u8"), 4).await;

    publisher.stop().await;
    edge.shutdown().await;
    shield.shutdown().await;
}
