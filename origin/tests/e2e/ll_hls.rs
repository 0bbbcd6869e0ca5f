//! LL-HLS from the origin: ffmpeg publishes over RTMP to a whole origin
//! (`server::run`) with `store.part_target = "0.5s"`; Python `m3u8` (an
//! independent parser with LL-HLS support) reads the playlists; blocking
//! reloads, hinted parts, delta updates and bad directives go over HTTP/1.1.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use strata_origin::config::OriginConfig;
use strata_origin::server::{run, OriginListeners, RunOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

use crate::support::{ffmpeg, ffmpeg_publish, init_logs};

struct Origin {
    http: SocketAddr,
    rtmp: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start() -> Origin {
    init_logs();
    let config = OriginConfig::parse("[store]\npart_target = \"0.5s\"\ntarget_duration = \"2s\"\n")
        .expect("config");
    let bind = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let listeners = OriginListeners {
        http: bind(),
        admin: None,
        rtmp: Some(bind()),
        srt: None,
    };
    let http = listeners.http.local_addr().expect("addr");
    let rtmp = listeners
        .rtmp
        .as_ref()
        .expect("rtmp")
        .local_addr()
        .expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        demo: false,
        open_ingest: true,
    };
    tokio::spawn(async move {
        let shutdown = async {
            let _ = stopped.await;
        };
        run(config, listeners, options, shutdown)
            .await
            .expect("origin runs");
    });
    Origin {
        http,
        rtmp,
        _stop: stop,
    }
}

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// `GET path` over HTTP/1.1 with `Connection: close`.
async fn get(addr: SocketAddr, path: &str) -> Reply {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("write");
    let mut reply = Vec::new();
    tcp.read_to_end(&mut reply).await.expect("read");
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&reply[..split]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = reply[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    Reply { status, head, body }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = b.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + size]);
        b = &b[eol + 2 + size + 2..];
    }
    out
}

/// The repo's `.venv` Python (scripts/install-test-deps.sh installs `m3u8`).
fn python() -> String {
    std::env::var("STRATA_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python").to_owned())
}

/// What Python `m3u8` reads in a media playlist.
const M3U8_SCRIPT: &str = r#"
import json, sys, m3u8
p = m3u8.loads(sys.stdin.read())
def part(x):
    return {"uri": x.uri, "duration": x.duration, "independent": x.independent}
print(json.dumps({
    "target_duration": p.target_duration,
    "media_sequence": p.media_sequence,
    "part_target": p.part_inf.part_target if p.part_inf else None,
    "server_control": {
        "can_block_reload": p.server_control.can_block_reload,
        "part_hold_back": p.server_control.part_hold_back,
        "can_skip_until": p.server_control.can_skip_until,
    } if p.server_control else None,
    "skipped": p.skip.skipped_segments if p.skip else None,
    "segments": [{
        "uri": s.uri,
        "duration": s.duration,
        "date": s.program_date_time.isoformat() if s.program_date_time else None,
        "parts": [part(x) for x in s.parts],
    } for s in p.segments],
    "preload_hint": {"type": p.preload_hint.hint_type, "uri": p.preload_hint.uri} if p.preload_hint else None,
    "reports": [{"uri": r.uri, "last_msn": r.last_msn, "last_part": r.last_part} for r in p.rendition_reports],
}))
"#;

async fn parse_m3u8(text: &str) -> Value {
    let python = python();
    assert!(
        std::path::Path::new(&python).exists() || std::env::var("STRATA_PYTHON").is_ok(),
        "{python} missing: run scripts/install-test-deps.sh (pip install m3u8 into .venv)"
    );
    let mut child = tokio::process::Command::new(&python)
        .args(["-c", M3U8_SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{python}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(text.as_bytes()).await.expect("write");
    drop(stdin);
    let out = child.wait_with_output().await.expect("python runs");
    assert!(
        out.status.success(),
        "m3u8 failed (pip install m3u8 into .venv): {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json")
}

/// `(msn, part)` of a part URI `video/{msn}.{part}.m4s`.
fn part_position(uri: &str) -> (u64, u32) {
    let name = uri.rsplit('/').next().and_then(|f| f.strip_suffix(".m4s"));
    let (msn, part) = name.and_then(|n| n.split_once('.')).expect(uri);
    (msn.parse().expect(uri), part.parse().expect(uri))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ll_hls_parts_blocking_reload_and_delta_updates_from_a_live_publish() {
    let origin = start().await;
    let url = format!("rtmp://{}/live/ll", origin.rtmp);
    let mut ffmpeg_child = ffmpeg_publish(&url, "flv", 40);
    let playlist = "/live/ll/main/video.m3u8";

    // The first playlist is held until the channel can honour its delay.
    let mut first = get(origin.http, playlist).await;
    let mut tries = 0;
    while first.status != 200 {
        tries += 1;
        assert!(tries < 40, "no playlist: {} {}", first.status, first.text());
        println!("RETRY: playlist answered {}, asking again", first.status);
        let _ =
            tokio::time::timeout(Duration::from_millis(500), std::future::pending::<()>()).await;
        first = get(origin.http, playlist).await;
    }
    let parsed = parse_m3u8(&first.text()).await;
    println!("{}", first.text());
    assert_eq!(parsed["part_target"], 0.5);
    let control = &parsed["server_control"];
    assert_eq!(control["can_block_reload"], "YES", "{parsed}");
    assert!(control["part_hold_back"].as_f64().expect("PART-HOLD-BACK") >= 1.0);
    let target = parsed["target_duration"].as_f64().expect("target");
    assert!(control["can_skip_until"].as_f64().expect("CAN-SKIP-UNTIL") >= 6.0 * target);
    let segments = parsed["segments"].as_array().expect("segments");
    let complete: Vec<&Value> = segments.iter().filter(|s| s["uri"].is_string()).collect();
    assert!(complete.len() >= 3, "{parsed}");
    assert!(
        complete.iter().all(|s| s["date"].is_string()),
        "PROGRAM-DATE-TIME on each"
    );
    let parts: Vec<&Value> = segments
        .iter()
        .flat_map(|s| s["parts"].as_array().expect("parts"))
        .collect();
    assert!(!parts.is_empty(), "{parsed}");
    for p in &parts {
        let d = p["duration"].as_f64().expect("DURATION");
        assert!(d > 0.0 && d <= 0.5, "{p}");
    }
    // ffmpeg's GOP is 1 s: some parts start with a keyframe, not all.
    assert!(parts.iter().any(|p| p["independent"] == "YES"));
    assert!(parts.iter().any(|p| p["independent"] != "YES"));
    // The segments' own parts add up to them.
    for s in complete
        .iter()
        .filter(|s| !s["parts"].as_array().expect("parts").is_empty())
    {
        let sum: f64 = s["parts"]
            .as_array()
            .expect("parts")
            .iter()
            .map(|p| p["duration"].as_f64().expect("DURATION"))
            .sum();
        let d = s["duration"].as_f64().expect("EXTINF");
        assert!((sum - d).abs() < 0.01, "parts {sum} vs segment {d}");
    }
    let reports = parsed["reports"].as_array().expect("reports");
    assert!(
        reports
            .iter()
            .any(|r| r["uri"] == "audio.m3u8" && r["last_msn"].is_number()),
        "{parsed}"
    );
    // A listed part is CMAF moof+mdat.
    let a_part = parts.last().expect("a part")["uri"]
        .as_str()
        .expect("uri")
        .to_owned();
    let bytes = get(origin.http, &format!("/live/ll/main/{a_part}")).await;
    assert_eq!(bytes.status, 200);
    let has = |b: &[u8], t: &[u8]| b.windows(4).any(|w| w == t);
    assert!(has(&bytes.body, b"moof") && has(&bytes.body, b"mdat"));

    // Blocking reload for the hinted part, and the hinted part itself, both
    // held until the part is cut, then answered.
    let hint = parsed["preload_hint"]["uri"]
        .as_str()
        .expect("PRELOAD-HINT")
        .to_owned();
    assert_eq!(parsed["preload_hint"]["type"], "PART");
    let (msn, part) = part_position(&hint);
    let reload = format!("{playlist}?_HLS_msn={msn}&_HLS_part={part}");
    let hinted_path = format!("/live/ll/main/{hint}");
    let (held, hinted) = tokio::join!(get(origin.http, &reload), get(origin.http, &hinted_path));
    assert_eq!(held.status, 200, "{}", held.text());
    assert!(
        held.text().contains(&format!("URI=\"{hint}\"")),
        "the answer holds the part asked for:\n{}",
        held.text()
    );
    let max_age = held.header("cache-control").unwrap_or_default();
    assert_eq!(max_age, "public, max-age=1", "cacheable for about a part");
    assert_eq!(hinted.status, 200);
    assert!(has(&hinted.body, b"moof"));
    let parsed_held = parse_m3u8(&held.text()).await;
    let (next_msn, next_part) =
        part_position(parsed_held["preload_hint"]["uri"].as_str().expect("hint"));
    assert!((next_msn, next_part) > (msn, part));

    // Tune-in (`store.fresh_tune_in`, on by default): a playlist asked for
    // without directives is answered as the next part is cut, so asked right
    // after a blocking answer it already lists the part that answer hinted
    // (answered at once, it would not: parts are half a second apart).
    let hint_of = |text: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))
            .and_then(|l| l.split("URI=\"").nth(1))
            .and_then(|u| u.split('"').next())
            .expect("PRELOAD-HINT")
            .to_owned()
    };
    let (m, p) = part_position(&hint_of(&held.text()));
    let blocked = get(
        origin.http,
        &format!("{playlist}?_HLS_msn={m}&_HLS_part={p}"),
    )
    .await;
    assert_eq!(blocked.status, 200, "{}", blocked.text());
    let coming = hint_of(&blocked.text());
    let asked = std::time::Instant::now();
    let plain = get(origin.http, playlist).await;
    assert_eq!(plain.status, 200);
    let listed = |text: &str, uri: &str| {
        text.lines()
            .any(|l| l.starts_with("#EXT-X-PART:") && l.contains(&format!("URI=\"{uri}\"")))
    };
    assert!(
        listed(&plain.text(), &coming),
        "a tune-in playlist lists the part cut after it was asked for ({coming}):\n{}",
        plain.text()
    );
    println!("tune-in playlist answered after {:?}", asked.elapsed());

    // Bad directives are the client's fault; the far future is refused.
    for bad in [
        "_HLS_msn=abc".to_owned(),
        "_HLS_msn=-1".to_owned(),
        "_HLS_msn=99999999999999999999999".to_owned(),
        "_HLS_part=1".to_owned(),
        format!("_HLS_msn={msn}&_HLS_part=-3"),
        "_HLS_skip=NO".to_owned(),
        format!("_HLS_msn={}", msn + 10),
    ] {
        let reply = get(origin.http, &format!("{playlist}?{bad}")).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
    }

    // ffmpeg still plays the channel from the same origin.
    let master = format!("http://{}/live/ll/master.m3u8", origin.http);
    let out = tokio::task::spawn_blocking(move || {
        ffmpeg(&["-v", "error", "-i", &master, "-t", "3", "-f", "null", "-"])
    })
    .await
    .expect("ffmpeg task");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Delta updates once the playlist is longer than CAN-SKIP-UNTIL (12 s).
    let mut delta;
    let mut round = 0;
    loop {
        let now = parse_m3u8(&get(origin.http, playlist).await.text()).await;
        let hint = now["preload_hint"]["uri"]
            .as_str()
            .expect("hint")
            .to_owned();
        let (m, p) = part_position(&hint);
        delta = get(
            origin.http,
            &format!("{playlist}?_HLS_msn={m}&_HLS_part={p}&_HLS_skip=YES"),
        )
        .await;
        assert_eq!(delta.status, 200);
        if delta.text().contains("#EXT-X-SKIP") {
            break;
        }
        round += 1;
        assert!(round < 60, "no delta update: {}", delta.text());
    }
    let parsed_delta = parse_m3u8(&delta.text()).await;
    let skipped = parsed_delta["skipped"].as_u64().expect("SKIPPED-SEGMENTS");
    assert!(skipped >= 1);
    let full = parse_m3u8(&get(origin.http, playlist).await.text()).await;
    assert_eq!(parsed_delta["media_sequence"], full["media_sequence"]);

    // The publisher leaves: a reload for a part that will not come is
    // answered (503 at the spec's limit), never left hanging.
    ffmpeg_child.kill().await.expect("kill ffmpeg");
    let now = parse_m3u8(&get(origin.http, playlist).await.text()).await;
    let (m, _) = part_position(now["preload_hint"]["uri"].as_str().expect("hint"));
    let gone = get(
        origin.http,
        &format!("{playlist}?_HLS_msn={}&_HLS_part=0", m + 1),
    )
    .await;
    assert_eq!(gone.status, 503, "{}", gone.text());
    assert_eq!(gone.header("cache-control").as_deref(), Some("no-store"));
}
