//! Multi-CDN content steering end to end: one origin with `[steering]`, two
//! `strata edge` processes as two CDNs (tokens required on both), ffmpeg
//! publishing, and hls.js, dash.js and Shaka (default settings) in headless
//! Chromium. The edge a player is on is killed (SIGKILL) while it plays, then
//! brought back on the same port.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::harness::client;
use crate::stack::{get_json, require_peers, segment_count, wait_for_body, Publisher, BROWSER};

const CHANNEL: &str = "steer";
const TOKEN_SECRET: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
/// Longer than the slowest default player's own failover, so "segment
/// requests move to the other edge within one TTL" (issue 9) holds whichever
/// way a player learns of the death. dash.js 5.2 retries a failed segment 3
/// times, 1 s apart, on the same URL (`retryAttempts`/`retryIntervals`
/// MediaSegment) before it blacklists that serviceLocation and takes the next
/// BaseURL; its steering reload comes one TTL after the previous answer. With
/// the 2 s TTL this test had, a kill just after a reload left dash.js 2-3 s
/// on the dead edge: more than one TTL, though nothing was wrong. The
/// steering path alone takes up to detection + one TTL, so only the players'
/// failover can make the bound hold: next segment (≤ 2 s) + 3 s of retries.
const TTL: Duration = Duration::from_secs(6);
/// The default. A probe gets one interval to finish: at 500 ms, probes
/// through a healthy edge timed out on this loaded machine, and with the
/// hysteresis of a 6 s TTL both pathways were seen out of service at once.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// Segment target duration (the stack's default).
const SEGMENT: Duration = Duration::from_secs(2);
/// GB (GeoIP2-Country-Test.mmdb) prefers cdn-b; US has no preference.
const GB: &str = "81.2.69.142";
const US: &str = "216.160.83.56";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn geoip_db() -> String {
    format!(
        "{}/tests/fixtures/geoip/GeoIP2-Country-Test.mmdb",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// A `strata edge` process: a CDN that can die for real.
struct EdgeProcess {
    name: &'static str,
    port: u16,
    admin: u16,
    config: PathBuf,
    child: Option<Child>,
}

impl EdgeProcess {
    fn new(name: &'static str, origin: SocketAddr, dir: &std::path::Path) -> EdgeProcess {
        let (port, admin) = (free_port(), free_port());
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(
            &config,
            format!(
                r#"[server]
listen = ["127.0.0.1:{port}"]
admin = "127.0.0.1:{admin}"
node_id = "{name}"
shutdown_grace = "1s"
[server.h3]
enabled = false
[upstream]
urls = ["http://{origin}"]
[token]
keys = [{{ id = "k1", secret = "{TOKEN_SECRET}" }}]
require = ["/live/"]
propagate = "query"
"#
            ),
        )
        .expect("write edge config");
        EdgeProcess {
            name,
            port,
            admin,
            config,
            child: None,
        }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts the process and waits for its admin listener's `/readyz`.
    async fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .args(["edge", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn strata edge");
        self.child = Some(child);
        let url = format!("http://127.0.0.1:{}/readyz", self.admin);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if client()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("{}: strata edge exited with {status}", self.name);
            }
            assert!(
                Instant::now() < deadline,
                "{}: not ready at {url}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: the CDN is gone, connections and all.
    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("kill edge");
        }
    }
}

/// Origin with `[steering]` naming the two edges; RTMP publish allowed.
struct Origin {
    http: SocketAddr,
    admin: SocketAddr,
    rtmp: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_origin(
    http: std::net::TcpListener,
    pathways: &[(&str, String, &[&str])],
    probe_path: &str,
) -> Origin {
    use strata_origin::steering::{PathwayConfig, SteeringConfig, SteeringGeoConfig};
    let mut config = strata_origin::config::OriginConfig::default();
    config.ingest.allow_anonymous = true;
    let tcp = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let (admin, rtmp) = (tcp(), tcp());
    let addr = |l: &std::net::TcpListener| l.local_addr().expect("addr");
    let (http_addr, admin_addr, rtmp_addr) = (addr(&http), addr(&admin), addr(&rtmp));
    config.server.http = http_addr;
    config.server.admin = Some(admin_addr);
    config.ingest.rtmp_listen = rtmp_addr;
    config.steering = Some(SteeringConfig {
        ttl: TTL,
        server: None,
        probe_interval: PROBE_INTERVAL,
        pathways: pathways
            .iter()
            .map(|(id, base, countries)| PathwayConfig {
                id: (*id).into(),
                base_url: base.clone(),
                weight: None,
                countries: countries.iter().map(|c| (*c).into()).collect(),
                probe_path: Some(probe_path.into()),
                clone: None,
            })
            .collect(),
        geo: Some(SteeringGeoConfig {
            database: geoip_db().into(),
            trusted_proxies: vec!["127.0.0.1/32".into()],
        }),
    });
    let listeners = strata_origin::server::OriginListeners {
        http,
        admin: Some(admin),
        rtmp: Some(rtmp),
        srt: None,
    };
    let stop = crate::stack::spawn_origin(config, listeners);
    Origin {
        http: http_addr,
        admin: admin_addr,
        rtmp: rtmp_addr,
        _stop: stop,
    }
}

impl Origin {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The ranking the admin API shows for `country` (`default` for none).
    async fn ranking(&self, country: &str) -> Vec<String> {
        let view = get_json(&format!("http://{}/api/steering", self.admin)).await;
        view["ranking"][country]
            .as_array()
            .unwrap_or_else(|| panic!("no ranking for {country}: {view}"))
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// `PATHWAY-PRIORITY` of a fresh HLS steering request, sent as a
    /// trusted proxy forwarding for `client`.
    async fn priority_for(&self, client_ip: &str) -> Vec<String> {
        let response = client()
            .get(self.url(&format!("/steering/{CHANNEL}.json")))
            .header("x-forwarded-for", client_ip)
            .send()
            .await
            .expect("steering request");
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["cache-control"], "no-store");
        let json: serde_json::Value = response.json().await.expect("steering JSON");
        json["PATHWAY-PRIORITY"]
            .as_array()
            .expect("PATHWAY-PRIORITY")
            .iter()
            .map(|v| v.as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Waits until pathway `id` is in service (`up`) or out of it.
    async fn wait_state(&self, id: &str, up: bool, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let view = get_json(&format!("http://{}/api/steering", self.admin)).await;
            let now_up = view["pathways"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["id"] == id))
                .map(|p| p["up"] == true);
            if now_up == Some(up) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{id} not up={up} after {limit:?}: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until one view shows `dead` out of service and ranked last.
    /// Polled rather than read once: under load a probe of the live edge
    /// may have timed out just before the kill, and the probe that was
    /// under way at the kill may still rank it back (its hysteresis over).
    async fn wait_ranked_last(&self, dead: &str, alive: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let view = get_json(&format!("http://{}/api/steering", self.admin)).await;
            let down = view["pathways"]
                .as_array()
                .and_then(|all| all.iter().find(|p| p["id"] == dead))
                .is_some_and(|p| p["up"] == false);
            if down && view["ranking"]["default"] == serde_json::json!([alive, dead]) {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < limit,
                "{dead} not out of service and last after {limit:?}: {view}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_ranking(&self, first: &str, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let ranking = self.ranking("default").await;
            if ranking.first().map(String::as_str) == Some(first) {
                return started.elapsed();
            }
            if started.elapsed() >= limit {
                let view = get_json(&format!("http://{}/api/steering", self.admin)).await;
                panic!("{first} not ranked first after {limit:?}: {ranking:?}; {view}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn token() -> String {
    strata::policy::sign(
        TOKEN_SECRET,
        "/live/*",
        Duration::from_secs(3600),
        SystemTime::now(),
        None,
        None,
    )
    .expect("sign")
}

/// A media response play.mjs saw: when, on which port, with what status.
struct Seen {
    at: Instant,
    port: u16,
    status: u16,
    url: String,
}

/// play.mjs with `--verbose`, its stderr read as it comes.
struct LivePlayer {
    child: Child,
    responses: mpsc::UnboundedReceiver<Seen>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    seen: Vec<Seen>,
}

impl LivePlayer {
    async fn start(player: &str, url: &str, seconds: u32) -> LivePlayer {
        let mut child = Command::new("node")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/browser/play.mjs"
            ))
            .args(["--player", player, "--url", url, "--verbose"])
            .args(["--seconds", &seconds.to_string()])
            .args(["--timeout", &(seconds + 40).to_string()])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn node tests/browser/play.mjs");
        let (tx, responses) = mpsc::unbounded_channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                // `play.mjs: +SECONDS response PROTOCOL STATUS URL` (the
                // `+SECONDS` since start is on every --verbose line)
                let mut fields: Vec<&str> = line.split(' ').collect();
                if fields.get(1).is_some_and(|f| f.starts_with('+')) {
                    fields.remove(1);
                }
                if let ["play.mjs:", "response", _, status, url] = fields.as_slice() {
                    let port = url
                        .split("://")
                        .nth(1)
                        .and_then(|rest| rest.split('/').next())
                        .and_then(|host| host.rsplit(':').next())
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                    let _ = tx.send(Seen {
                        at: Instant::now(),
                        port,
                        status: status.parse().unwrap_or(0),
                        url: (*url).to_owned(),
                    });
                } else if let Ok(mut log) = sink.lock() {
                    if log.len() < 64 * 1024 {
                        log.push_str(&line);
                        log.push('\n');
                    }
                }
            }
        });
        LivePlayer {
            child,
            responses,
            log,
            seen: Vec::new(),
        }
    }

    /// Waits for a segment (`.m4s`) answered 200 by `port` at or after
    /// `since`; returns when it came.
    async fn segment_from(&mut self, port: u16, since: Instant, limit: Duration) -> Instant {
        let deadline = Instant::now() + limit;
        if let Some(s) = self
            .seen
            .iter()
            .find(|s| s.port == port && s.at >= since && s.status == 200 && s.url.contains(".m4s"))
        {
            return s.at;
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.responses.recv()).await {
                Ok(Some(s)) => {
                    let hit = s.port == port
                        && s.at >= since
                        && s.status == 200
                        && s.url.contains(".m4s");
                    let at = s.at;
                    self.seen.push(s);
                    if hit {
                        return at;
                    }
                }
                _ => panic!(
                    "no segment from port {port} within {limit:?}; log:\n{}",
                    self.log()
                ),
            }
        }
    }

    /// The port that served the player's last `n` segments, once they agree.
    async fn settled_port(&mut self, n: usize, limit: Duration) -> u16 {
        let deadline = Instant::now() + limit;
        loop {
            let segments: Vec<u16> = self
                .seen
                .iter()
                .filter(|s| s.status == 200 && s.url.contains(".m4s"))
                .map(|s| s.port)
                .collect();
            if segments.len() >= n {
                let last = &segments[segments.len() - n..];
                if last.iter().all(|p| *p == last[0]) {
                    return last[0];
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.responses.recv()).await {
                Ok(Some(s)) => self.seen.push(s),
                _ => panic!(
                    "player never settled on one CDN; responses (port status url): {:?}\nlog:\n{}",
                    self.seen
                        .iter()
                        .map(|s| format!("{} {} {}", s.port, s.status, s.url))
                        .collect::<Vec<_>>(),
                    self.log()
                ),
            }
        }
    }

    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    async fn finish(mut self) -> serde_json::Value {
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            use tokio::io::AsyncReadExt;
            let read = out.read_to_string(&mut stdout);
            tokio::time::timeout(Duration::from_secs(150), read)
                .await
                .expect("play.mjs did not exit")
                .expect("play.mjs stdout");
        }
        let _ = self.child.wait().await;
        serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("play.mjs printed no JSON ({e}): {stdout}\n{}", self.log()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_follow_steering_away_from_a_dead_cdn_and_back() {
    require_peers();
    let dir = std::env::temp_dir().join(format!("strata-steering-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // The origin's playback socket first, so the edges know their upstream;
    // the edges are up before the origin is told their URLs as pathways.
    let origin_http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let origin_addr = origin_http.local_addr().expect("addr");
    let mut a = EdgeProcess::new("edge-a", origin_addr, &dir);
    let mut b = EdgeProcess::new("edge-b", origin_addr, &dir);
    a.start().await;
    b.start().await;
    // The CDNs want tokens: the probes carry one of their own.
    let token = token();
    let probe_path = format!("/live/{CHANNEL}/main/video.m3u8?token={token}");
    let origin = start_origin(
        origin_http,
        &[
            ("cdn-a", a.base_url(), &[]),
            ("cdn-b", b.base_url(), &["GB"]),
        ],
        &probe_path,
    )
    .await;
    let mut publisher = Publisher::start(
        &format!("rtmp://{}/live/{CHANNEL}", origin.rtmp),
        "flv",
        "640x360",
    );
    wait_for_body(
        &origin.url(&format!("/live/{CHANNEL}/main/video.m3u8")),
        "3 segments",
        Duration::from_secs(30),
        |b| segment_count(b) >= 3,
    )
    .await;
    assert!(publisher.exited().is_none(), "ffmpeg stopped publishing");

    // Through edge A with a token: steering tags, every pathway tokenised.
    let master = client()
        .get(format!(
            "{}/live/{CHANNEL}/master.m3u8?token={token}",
            a.base_url()
        ))
        .send()
        .await
        .expect("master via edge A");
    assert_eq!(master.status(), 200);
    let master = master.text().await.expect("master text");
    assert!(
        master.contains(&format!(
            "#EXT-X-CONTENT-STEERING:SERVER-URI=\"http://{origin_addr}/steering/{CHANNEL}.json?token="
        )),
        "{master}"
    );
    for edge in [&a, &b] {
        assert!(
            master.contains(&format!(
                "{}/live/{CHANNEL}/main/video.m3u8?token=",
                edge.base_url()
            )),
            "{master}"
        );
    }

    // Per-country ranking: a trusted proxy forwarding for GB gets cdn-b first.
    assert_eq!(origin.priority_for(GB).await, ["cdn-b", "cdn-a"]);
    assert_eq!(origin.ranking("GB").await, ["cdn-b", "cdn-a"]);
    assert_eq!(origin.ranking("default").await, ["cdn-a", "cdn-b"]);
    let us = origin.priority_for(US).await;
    assert_eq!(us.len(), 2, "{us:?}");
    // Players without steering: a 302 to the best pathway for their country.
    let no_redirects = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (client_ip, edge) in [(US, &a), (GB, &b)] {
        let response = no_redirects
            .get(origin.url(&format!("/live/{CHANNEL}/steer/master.m3u8?token=t")))
            .header("x-forwarded-for", client_ip)
            .send()
            .await
            .expect("entry point");
        assert_eq!(response.status(), 302, "{client_ip}");
        assert_eq!(
            response.headers()["location"],
            format!("{}/live/{CHANNEL}/master.m3u8?token=t", edge.base_url()).as_str()
        );
    }
    // Garbage in a steering request: ignored or a clear 4xx, never a 5xx.
    for query in [
        "_HLS_pathway=%ff%00&_HLS_throughput=lots",
        "_DASH_pathway=%22nope%22&_DASH_throughput=-1,x",
        "_HLS_pathway=cdn-a&_HLS_throughput=lots",
        &format!("_HLS_pathway={}", "x".repeat(6000)),
    ] {
        let status = client()
            .get(origin.url(&format!("/steering/{CHANNEL}.json?{query}")))
            .send()
            .await
            .expect("steering request")
            .status();
        assert!(status == 200 || status == 414, "{query}: {status}");
    }

    let mut moves = Vec::new();
    for (player, file) in [
        ("hls", "master.m3u8"),
        ("dash", "manifest.mpd"),
        ("shaka", "master.m3u8"),
    ] {
        let _turn = BROWSER.lock().await;
        origin.wait_ranking("cdn-a", Duration::from_secs(30)).await;
        let url = format!("{}/live/{CHANNEL}/{file}?token={token}", a.base_url());
        let mut play = LivePlayer::start(player, &url, 30).await;
        let on = play.settled_port(3, Duration::from_secs(90)).await;
        let (dead, alive) = if on == a.port {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        assert_eq!(on, dead.port, "{player}: plays from neither edge");
        let dead_id = if dead.name == "edge-a" {
            "cdn-a"
        } else {
            "cdn-b"
        };
        let alive_id = if dead_id == "cdn-a" { "cdn-b" } else { "cdn-a" };

        // Both in service right before the kill: on a loaded machine a probe
        // that timed out may have taken one out a moment earlier, and its
        // return (hysteresis over) would look like the killed CDN coming
        // back at once (CI saw it "back" 0.9 s after its restart).
        for id in [dead_id, alive_id] {
            let waited = origin.wait_state(id, true, Duration::from_secs(30)).await;
            if waited > Duration::from_millis(100) {
                println!(
                    "RETRY {player}: {id} was out of service before the kill (a probe \
                     under load); waited {waited:?} for it"
                );
            }
        }
        dead.kill().await;
        let killed = Instant::now();
        // The probes take it out within a probe interval of the kill (plus
        // the probe that was under way), and the steering manifest says so.
        let down = origin
            .wait_ranked_last(dead_id, alive_id, PROBE_INTERVAL * 4)
            .await;
        eprintln!("{player}: {dead_id} out of service {down:?} after the kill");
        // The steering manifest agrees. Read again while a probe of the live
        // CDN may still be judging it (CI, loaded, once saw it ranked last
        // too for a moment), printed when it takes more than one read.
        let deadline = Instant::now() + PROBE_INTERVAL * 4;
        loop {
            let priority = origin.priority_for(US).await;
            if priority.last().map(String::as_str) == Some(dead_id) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{player}: {dead_id} not last for US: {priority:?}"
            );
            println!("RETRY {player}: steering manifest for US ranks {priority:?}, reading again");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let moved = play
            .segment_from(alive.port, killed, Duration::from_secs(30))
            .await;
        let took = moved - killed;
        eprintln!("{player}: segments moved from {dead_id} to {alive_id} {took:?} after the kill");
        // Issue 9: within one TTL. Whichever comes first: the player's
        // failover on its next segment request (hls.js at once, Shaka on
        // its next URI, dash.js after its retries) or its steering reload
        // after the ranking changed.
        assert!(
            took <= TTL,
            "{player}: moved after {took:?}, over one TTL ({TTL:?}); segments last {SEGMENT:?}"
        );
        moves.push((player, took));

        // Back: in service again only after passing its probes for the hysteresis.
        // Timed from the spawn: the edge answers probes before its admin
        // listener says ready, so passing probes may start before start() returns.
        let restarted = Instant::now();
        dead.start().await;
        origin
            .wait_state(dead_id, true, Duration::from_secs(30))
            .await;
        let back = restarted.elapsed();
        eprintln!("{player}: {dead_id} back in service {back:?} after its restart");
        assert!(back >= TTL, "{dead_id} ranked back after only {back:?}");
        // Then the configured order again (once its probe figures, slow
        // while the restarted edge warms up, no longer mark it degraded).
        origin.wait_ranking("cdn-a", Duration::from_secs(30)).await;
        let report = play.finish().await;
        assert_eq!(report["ok"], true, "{player}: {report}");
        // No stall longer than 2 s (play.mjs counts those over 1 s).
        let longest = report["longestStall"].as_f64().unwrap_or(f64::INFINITY);
        eprintln!(
            "{player}: {} stalls over 1 s, longest {longest} s",
            report["stalls"]
        );
        assert!(longest <= 2.0, "{player}: stalled {longest} s: {report}");
    }
    eprintln!("CDN death to players moving: {moves:?}");
    let metrics = client()
        .get(format!("http://{}/metrics", origin.admin))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    for name in [
        "strata_steering_probes_total{pathway=\"cdn-a\",result=\"ok\"}",
        "strata_steering_pathway_transitions_total{pathway=\"cdn-a\",to=\"down\"}",
        "strata_steering_bad_input_total{what=\"throughput\"}",
        "strata_steering_bad_input_total{what=\"query_too_long\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(metrics.contains("strata_steering_decisions_total{format=\"dash\""));
    publisher.stop().await;
    a.kill().await;
    b.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
}
