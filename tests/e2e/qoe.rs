//! Operators see what viewers see (issue 9, parts 2 and 3), end to end:
//! `strata up` as a newcomer runs it (origin and edge, the `demo` channel,
//! plus an ffmpeg RTMP publish) is scraped by the real Prometheus while
//! hls.js, dash.js and Shaka play in headless Chromium with CMCD on as a site
//! turns it on, in query and header mode. Then:
//! - every panel query of the edge, origin and QoE dashboards, evaluated
//!   through Prometheus' HTTP API as Grafana would, returns a finite value,
//!   and every metric it names has series (a `… or on() vector(0)` fallback
//!   cannot hide a metric nobody exports);
//! - the QoE metrics show the sessions, their startup and their bitrates;
//! - CMCD-carrying and plain requests for one object share one cache entry;
//! - malformed CMCD, a huge query and bad beacons are ignored or refused with
//!   a 4xx and counted, never a 5xx.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::harness::client;
use crate::prometheus::{free_port, Prometheus};
use crate::stack::{require_peers, start_play_with, Publisher};

/// `strata up`, as a child process, with every port picked by the kernel.
struct Up {
    _child: Child,
    /// `http://ADDR` of the edge's playback listener.
    edge: String,
    edge_admin: String,
    origin_admin: String,
    rtmp: String,
}

impl Up {
    async fn start() -> Up {
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("up")
            .args(["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0"])
            .args(["--origin-admin", "127.0.0.1:0"])
            .args(["--rtmp", "127.0.0.1:0", "--srt", "127.0.0.1:0"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn strata up");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let (mut edge, mut admins, mut rtmp) = (None, Vec::new(), None);
        let read = async {
            while let Some(line) = lines.next_line().await.expect("read strata up") {
                let words: Vec<&str> = line.split_whitespace().collect();
                if let ["HLS", url] = words.as_slice() {
                    edge = url
                        .strip_suffix("/live/demo/master.m3u8")
                        .map(str::to_owned);
                }
                if let Some(url) = words.iter().find(|w| w.starts_with("rtmp://")) {
                    rtmp = url.strip_suffix("/live/mychannel").map(str::to_owned);
                }
                if words.first() == Some(&"Metrics") {
                    admins = words
                        .iter()
                        .filter_map(|w| w.strip_prefix("http://")?.strip_suffix("/metrics"))
                        .map(str::to_owned)
                        .collect();
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("strata up printed its addresses");
        let [edge_admin, origin_admin] = <[String; 2]>::try_from(admins)
            .expect("strata up prints the edge's and the origin's metrics URLs");
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Up {
            _child: child,
            edge: edge.expect("strata up printed the HLS URL"),
            edge_admin,
            origin_admin,
            rtmp: rtmp.expect("strata up printed the RTMP URL"),
        }
    }
}

/// Each panel query of a Grafana dashboard, with the dashboard's variables
/// set as "All" and `$__rate_interval` as `5m` (the whole test).
pub fn panel_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let mut promql = expr.replace("$__rate_interval", "5m");
            for var in dashboard["templating"]["list"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(name) = var["name"].as_str() {
                    promql = promql.replace(&format!("${name}"), ".*");
                }
            }
            queries.push((
                format!(
                    "{} / {}",
                    panel["title"].as_str().unwrap_or("?"),
                    target["refId"]
                ),
                promql,
            ));
        }
    }
    queries
}

/// `strata_…` series names a query reads.
fn metric_names(promql: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = promql;
    while let Some(at) = rest.find("strata_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// Every panel of `file` shows data: a finite value, from metrics that exist.
pub async fn assert_panels_have_data(prometheus: &Prometheus, file: &str) -> usize {
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/{file}")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let queries = panel_queries(&dashboard);
    assert!(queries.len() >= 5, "{file} has panels");
    let mut empty = Vec::new();
    for (panel, promql) in &queries {
        match prometheus.query(promql).await {
            Ok(samples) if samples.iter().any(|(_, v)| v.is_finite()) => {}
            other => empty.push(format!("{panel}: {promql} → {other:?}")),
        }
        for name in metric_names(promql) {
            let series = prometheus.query(&format!("count({name})")).await;
            if !matches!(&series, Ok(s) if !s.is_empty()) {
                empty.push(format!("{panel}: {name} has no series"));
            }
        }
    }
    assert!(
        empty.is_empty(),
        "{file}: {} of {} panel queries show no data:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );
    queries.len()
}

/// A media playlist's last segment, as an absolute URL.
async fn a_segment(edge: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let master = client()
            .get(format!("{edge}/live/demo/master.m3u8"))
            .send()
            .await
            .expect("master");
        if master.status().is_success() {
            let text = master.text().await.expect("master text");
            if let Some(media) = text.lines().find(|l| !l.is_empty() && !l.starts_with('#')) {
                let media_url = format!("{edge}/live/demo/{media}");
                let playlist = client()
                    .get(&media_url)
                    .send()
                    .await
                    .expect("media")
                    .text()
                    .await
                    .expect("text");
                if let Some(segment) = playlist
                    .lines()
                    .rev()
                    .find(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    let base = media_url.rsplit_once('/').expect("base").0;
                    return format!("{base}/{segment}");
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "strata up's demo channel never had a segment"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn cache_status(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_with_cmcd_fill_the_qoe_metrics_and_every_dashboard_panel() {
    require_peers();
    let up = Up::start().await;
    let prometheus = Prometheus::start(&[
        ("strata-edge", &up.edge_admin),
        ("strata-origin", &up.origin_admin),
    ]);
    let publisher = Publisher::start(&format!("{}/live/cam", up.rtmp), "flv", "320x180");
    let rtmp_publishes = r#"sum(strata_origin_ingest_publisher_connects_total{protocol="rtmp"})"#;
    prometheus
        .wait_for(rtmp_publishes, 1.0, Duration::from_secs(60))
        .await;

    // One cache entry, whatever CMCD a request carries.
    let segment = a_segment(&up.edge).await;
    let first = client().get(&segment).send().await.expect("segment");
    assert_eq!(first.status(), 200, "{segment}");
    // Read to the end: the fill is complete and stored, so what follows is
    // a hit (a request during the fill joins it: `fwd=miss; collapsed`,
    // which CI once saw on a loaded machine).
    first.bytes().await.expect("segment body");
    let cmcd = "CMCD=bl%3D4000%2Cbr%3D800%2Cot%3Dv%2Csf%3Dh%2Csid%3D%22probe%22%2Csu";
    for (how, request) in [
        ("CMCD query", client().get(format!("{segment}?{cmcd}"))),
        (
            "CMCD headers",
            client()
                .get(&segment)
                .header("CMCD-Object", "br=800,ot=v")
                .header("CMCD-Request", "bl=4000,su")
                .header("CMCD-Session", "sf=h,sid=\"probe\""),
        ),
        (
            "malformed CMCD query",
            client().get(format!("{segment}?CMCD=br%3Dabc%2C%2C")),
        ),
        (
            "malformed CMCD header",
            client().get(&segment).header("CMCD-Request", "bl=(1 2"),
        ),
        (
            "a 20 KB CMCD query",
            client().get(format!("{segment}?CMCD={}", "br%3D1%2C".repeat(2300))),
        ),
    ] {
        let response = request.send().await.expect(how);
        assert_eq!(response.status(), 200, "{how}: served as usual");
        let status = cache_status(&response);
        assert!(
            status.contains("hit"),
            "{how}: the plain request's cache entry answers: {status}"
        );
    }
    // Past the edge's request-head limit: refused with a 4xx, never a 5xx.
    let huge = client()
        .get(format!("{segment}?CMCD={}", "x".repeat(40_000)))
        .send()
        .await
        .expect("huge query");
    assert!(
        huge.status().is_client_error(),
        "a 40 KB query: {}",
        huge.status()
    );

    // The beacon: good events are taken, bad bodies refused and counted.
    let beacon = format!("{}/qoe/beacon", up.edge);
    let good = client()
        .post(&beacon)
        .header("content-type", "application/json")
        .body(r#"[{"session":"beacon-1","event":"start","startup_ms":1300,"bitrate_kbps":900},{"session":"beacon-1","event":"bitrate_switch","bitrate_kbps":400}]"#)
        .send()
        .await
        .expect("beacon");
    assert_eq!(good.status(), 204);
    for body in [
        "{",
        r#"{"session":"b","event":"explode"}"#,
        &"x".repeat(100_000),
    ] {
        let bad = client()
            .post(&beacon)
            .body(body.to_owned())
            .send()
            .await
            .expect("bad beacon");
        assert!(
            bad.status().is_client_error(),
            "bad beacon {}: {}",
            &body[..body.len().min(40)],
            bad.status()
        );
    }

    // Real players, CMCD on, one mode each way.
    let master = format!("{}/live/demo/master.m3u8", up.edge);
    let mpd = format!("{}/live/demo/manifest.mpd", up.edge);
    for (player, url, mode) in [
        ("hls", &master, "query"),
        ("dash", &mpd, "headers"),
        ("shaka", &master, "headers"),
        ("shaka", &mpd, "query"),
    ] {
        let started = Instant::now();
        let report = start_play_with(player, url, 8, &["--cmcd".into(), mode.into()])
            .await
            .finish()
            .await;
        eprintln!(
            "{player} ({mode}) on {url}: played in {:?}: {report}",
            started.elapsed()
        );
    }
    publisher.stop().await;
    let rtmp_ends = r#"sum(strata_origin_ingest_publisher_disconnects_total{protocol="rtmp"})"#;
    prometheus
        .wait_for(rtmp_ends, 1.0, Duration::from_secs(60))
        .await;

    // What the players said, as Prometheus has it.
    let limit = Duration::from_secs(60);
    let sessions = prometheus
        .wait_for("sum(strata_qoe_sessions_started_total)", 5.0, limit)
        .await;
    let startups = prometheus
        .wait_for("sum(strata_qoe_startup_seconds_count)", 2.0, limit)
        .await;
    let startup_requests = prometheus
        .wait_for("sum(strata_qoe_startup_requests_total)", 1.0, limit)
        .await;
    let bitrates = prometheus
        .wait_for(
            "sum(strata_qoe_encoded_bitrate_bits_per_second_count)",
            10.0,
            limit,
        )
        .await;
    eprintln!("sessions {sessions}, startups timed {startups}, su requests {startup_requests}, bitrate samples {bitrates}");
    for (what, promql, at_least) in [
        ("hls.js and Shaka (HLS)", r#"sum(strata_qoe_requests_total{format="hls",object="video"})"#, 1.0),
        ("dash.js and Shaka (DASH)", r#"sum(strata_qoe_requests_total{format="dash"})"#, 1.0),
        ("mean video bitrate, bit/s", "sum(strata_qoe_encoded_bitrate_bits_per_second_sum) / sum(strata_qoe_encoded_bitrate_bits_per_second_count)", 100_000.0),
        ("throughput players measured", "sum(strata_qoe_measured_throughput_bits_per_second_count)", 1.0),
        ("buffer lengths", "sum(strata_qoe_buffer_length_seconds_count)", 1.0),
        ("malformed CMCD in queries", r#"sum(strata_qoe_malformed_total{source="query"})"#, 2.0),
        ("malformed CMCD in headers", r#"sum(strata_qoe_malformed_total{source="header"})"#, 1.0),
        ("bad beacons", r#"sum(strata_qoe_beacons_total{outcome="bad"})"#, 2.0),
        ("the beaconed bitrate switch", "sum(strata_qoe_bitrate_switches_total)", 1.0),
    ] {
        let value = prometheus.wait_for(promql, at_least, limit).await;
        eprintln!("{what}: {value}");
    }
    // Bounded labels: no session id became a label value.
    let labels = prometheus
        .query("group by (cdn, country, protocol, format, object) (strata_qoe_requests_total)")
        .await
        .expect("labels");
    let text = format!("{labels:?}");
    assert!(
        !text.contains("probe") && !text.contains("beacon-1"),
        "{text}"
    );
    let five_xx = prometheus
        .query(r#"sum(strata_edge_requests_total{status="5xx"})"#)
        .await
        .expect("5xx");
    assert!(
        five_xx.iter().all(|(_, v)| *v == 0.0),
        "no 5xx for any of it: {five_xx:?}"
    );

    let mut panels = 0;
    for file in [
        "grafana/strata-edge.json",
        "grafana/strata-origin.json",
        "grafana/strata-qoe.json",
    ] {
        panels += assert_panels_have_data(&prometheus, file).await;
    }
    eprintln!("{panels} panel queries, all with data");
}

/// The steering dashboard against a real steering origin: two CDNs that work
/// (a Strata edge reading CMCD, and the origin's own playback listener) and
/// one that is dead, scraped by Prometheus while hls.js and dash.js play
/// through steering with CMCD on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_through_steering_fill_every_steering_panel() {
    use strata_origin::steering::{PathwayConfig, SteeringConfig, SteeringGeoConfig};
    require_peers();
    let tcp = || std::net::TcpListener::bind("127.0.0.1:0").expect("bind tcp");
    let (http, admin, rtmp) = (tcp(), tcp(), tcp());
    let addr = |l: &std::net::TcpListener| l.local_addr().expect("addr");
    let (http_addr, admin_addr, rtmp_addr) = (addr(&http), addr(&admin), addr(&rtmp));
    let edge = crate::harness::start_edge(&[format!("http://{http_addr}")], "cdn-a-edge", |c| {
        c.qoe.pathway = "cdn-a".into();
        c.qoe.pathways = vec!["cdn-b".into(), "cdn-dead".into()];
    })
    .await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let pathway = |id: &str, base_url: String| PathwayConfig {
        id: id.into(),
        base_url,
        weight: None,
        countries: Vec::new(),
        probe_path: None,
        clone: None,
    };
    let mut config = strata_origin::config::OriginConfig::default();
    config.ingest.allow_anonymous = true;
    config.server.api_token = Some(crate::stack::API_TOKEN.into());
    config.server.http = http_addr;
    config.server.admin = Some(admin_addr);
    config.ingest.rtmp_listen = rtmp_addr;
    config.steering = Some(SteeringConfig {
        ttl: Duration::from_secs(2),
        server: None,
        probe_interval: Duration::from_millis(500),
        pathways: vec![
            pathway("cdn-a", edge.url("").trim_end_matches('/').to_owned()),
            pathway("cdn-b", format!("http://{http_addr}")),
            pathway("cdn-dead", dead),
        ],
        geo: Some(SteeringGeoConfig {
            database: format!(
                "{}/tests/fixtures/geoip/GeoIP2-Country-Test.mmdb",
                env!("CARGO_MANIFEST_DIR")
            )
            .into(),
            trusted_proxies: vec!["127.0.0.1/32".into()],
        }),
    });
    let listeners = strata_origin::server::OriginListeners {
        http,
        admin: Some(admin),
        rtmp: Some(rtmp),
        srt: None,
    };
    let _stop = crate::stack::spawn_origin(config, listeners);
    let edge_admin = edge.admin.to_string();
    let origin_admin = admin_addr.to_string();
    let prometheus = Prometheus::start(&[
        ("strata-edge", &edge_admin),
        ("strata-origin", &origin_admin),
    ]);
    let publisher = Publisher::start(&format!("rtmp://{rtmp_addr}/live/steer"), "flv", "320x180");
    let master = edge.url("/live/steer/master.m3u8");
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let response = client().get(&master).send().await.expect("master");
        if response.status().is_success() {
            break response.text().await.expect("master text");
        }
        assert!(
            Instant::now() < deadline,
            "the steered channel never came up"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // The steering server a player calls, with garbage a player might send.
    let server_uri = text
        .lines()
        .find_map(|l| l.strip_prefix("#EXT-X-CONTENT-STEERING:"))
        .and_then(|attrs| attrs.split("SERVER-URI=\"").nth(1))
        .and_then(|rest| rest.split('"').next())
        .expect("the master playlist names its steering server")
        .to_owned();
    let joiner = if server_uri.contains('?') { '&' } else { '?' };
    let garbage = client()
        .get(format!(
            "{server_uri}{joiner}_HLS_pathway=%00%FF&_HLS_throughput=lots"
        ))
        .send()
        .await
        .expect("garbage steering request");
    assert!(
        garbage.status().as_u16() < 500,
        "garbage steering input: {}",
        garbage.status()
    );
    // An operator (or automation reading strata_qoe_*) sets a QoE penalty.
    let penalty = client()
        .put(format!(
            "http://{admin_addr}/api/steering/pathways/cdn-b/qoe_penalty"
        ))
        .bearer_auth(crate::stack::API_TOKEN)
        .body(r#"{"penalty":0.0}"#)
        .send()
        .await
        .expect("qoe penalty");
    assert!(
        penalty.status().is_success(),
        "qoe penalty: {}",
        penalty.status()
    );

    for (player, url, mode) in [
        ("hls", master.clone(), "query"),
        ("dash", edge.url("/live/steer/manifest.mpd"), "headers"),
    ] {
        let report = start_play_with(player, &url, 8, &["--cmcd".into(), mode.into()])
            .await
            .finish()
            .await;
        eprintln!("{player} ({mode}) through steering: {report}");
    }
    publisher.stop().await;
    let limit = Duration::from_secs(60);
    for (what, promql) in [
        ("steering answers", "sum(strata_steering_decisions_total)"),
        (
            "throughput players reported",
            "sum(strata_steering_reported_throughput_bits_per_second_count)",
        ),
        (
            "the dead CDN taken out",
            "sum(strata_steering_pathway_transitions_total{pathway=\"cdn-dead\",to=\"down\"})",
        ),
        (
            "sessions on the edge's pathway",
            "sum(strata_qoe_sessions_started_total{cdn=\"cdn-a\"})",
        ),
    ] {
        let value = prometheus.wait_for(promql, 1.0, limit).await;
        eprintln!("{what}: {value}");
    }
    let panels = assert_panels_have_data(&prometheus, "grafana/strata-steering.json").await;
    eprintln!("{panels} steering panel queries, all with data");
}
