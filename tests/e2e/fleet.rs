//! The fleet control plane against a real `nats-server` (JetStream) started
//! by each test on a free port: one purge honoured by every edge, an edge
//! that was down catching up before it serves, forged/replayed/out-of-order
//! messages refused and counted, edges serving through a NATS outage and
//! catching up after it, and a single node without NATS keeping its runtime
//! changes across a restart.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use strata::config::EdgeConfig;
use strata::fleet::change::{seal, Change, Envelope, FleetSecret, PurgeSpec, SIGNATURE_HEADER};
use strata::fleet::nats::{STREAM, SUBJECT};
use strata::policy::TokenConfig;

use crate::control::{api, with_admin_token};
use crate::harness::{client, metric, start_edge, start_origin, TestEdge};

const FLEET_SECRET: &str = "fleet-secret-0123456789abcdef-0123456789";
const WRONG_SECRET: &str = "not-the-fleet-secret-0123456789abcdef0123";

fn nats_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.exists())
        .expect(
            "nats-server not found: run scripts/install-test-deps.sh (apt-get install nats-server)",
        )
}

/// A `nats-server -js` on a free loopback port, with its own store.
struct Nats {
    port: u16,
    store: PathBuf,
    child: Option<Child>,
}

impl Nats {
    fn start(name: &str) -> Nats {
        let store = std::env::temp_dir().join(format!(
            "strata-nats-{name}-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut nats = Nats {
            port,
            store,
            child: None,
        };
        nats.run();
        nats
    }

    fn run(&mut self) {
        let child = Command::new(nats_binary())
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the engine vanishes mid-whatever.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// A client once the server answers (JetStream ready).
    async fn client(&self) -> async_nats::jetstream::Context {
        let mut attempt = 0;
        loop {
            let error = match async_nats::connect(self.url()).await {
                Ok(client) => {
                    let js = async_nats::jetstream::new(client);
                    let secret = FleetSecret::new(FLEET_SECRET).expect("secret");
                    match strata::fleet::nats::Engine::connect_now(&self.url(), secret).await {
                        // The fleet stream as the edges make it; its info parses.
                        Ok(engine) => match engine.last_version().await {
                            Ok(_) => return js,
                            Err(e) => e.to_string(),
                        },
                        Err(e) => e.to_string(),
                    }
                }
                Err(e) => e.to_string(),
            };
            attempt += 1;
            assert!(attempt < 200, "nats-server never became ready: {error}");
            if attempt % 20 == 0 {
                println!(
                    "retry: waiting for nats-server on {} ({attempt}): {error}",
                    self.url()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.store);
    }
}

fn rand_suffix() -> u64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn state_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "strata-fleet-{name}-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir).expect("state dir");
    dir
}

fn fleet_config(config: &mut EdgeConfig, nats: Option<&str>, state_file: &Path) {
    with_admin_token(config);
    config.fleet.nats = nats.map(str::to_owned);
    config.fleet.secret = Some(FleetSecret::new(FLEET_SECRET).expect("secret"));
    config.fleet.state_file = Some(state_file.to_owned());
    config.fleet.catch_up_timeout = Duration::from_secs(20);
}

async fn fleet_status(edge: &TestEdge) -> Value {
    let (status, body) = api(edge, Method::GET, "/api/fleet", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Poll `/api/fleet` until `field` satisfies `done`.
async fn wait_fleet(edge: &TestEdge, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    for attempt in 0..600 {
        let status = fleet_status(edge).await;
        if done(&status) {
            return status;
        }
        if attempt > 0 && attempt % 50 == 0 {
            println!("retry: {what}: still {status} ({attempt})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: never reached: {}", fleet_status(edge).await);
}

async fn wait_version(edge: &TestEdge, version: u64) {
    wait_fleet(edge, &format!("version {version}"), |s| {
        s["version"].as_u64() >= Some(version)
    })
    .await;
}

/// GET a path; whether the edge answered from its cache.
async fn served_from_cache(edge: &TestEdge, path: &str) -> bool {
    let response = client().get(edge.url(path)).send().await.expect("get");
    assert_eq!(response.status(), StatusCode::OK, "{path}");
    let status = response.headers()["cache-status"]
        .to_str()
        .expect("ascii")
        .to_owned();
    response.bytes().await.expect("body");
    status.contains("; hit")
}

async fn cache(edge: &TestEdge, path: &str) {
    served_from_cache(edge, path).await;
    assert!(
        served_from_cache(edge, path).await,
        "{path} cached on {}",
        edge.addr
    );
}

async fn purge_prefix(edge: &TestEdge, prefix: &str) -> u64 {
    let (status, body) = api(
        edge,
        Method::POST,
        "/api/purge",
        Some(json!({ "prefix": prefix })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["version"].as_u64().expect("version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_through_one_edge_is_honoured_by_three_edges() {
    let nats = Nats::start("three");
    nats.client().await;
    let origin = start_origin().await;
    let dir = state_dir("three");
    let mut edges = Vec::new();
    for i in 0..3 {
        let state = dir.join(format!("edge{i}.json"));
        let url = nats.url();
        edges.push(
            start_edge(&[origin.url()], &format!("fleet-edge-{i}"), |c| {
                fleet_config(c, Some(&url), &state)
            })
            .await,
        );
    }
    for edge in &edges {
        wait_fleet(edge, "connected", |s| s["connected"] == json!(true)).await;
        cache(edge, "/obj/fleet-a").await;
        cache(edge, "/obj/other").await;
    }
    assert_eq!(origin.state.hits("/obj/fleet-a"), 3);

    let version = purge_prefix(&edges[1], "/obj/fleet-").await;
    for edge in &edges {
        wait_version(edge, version).await;
        assert!(
            !served_from_cache(edge, "/obj/fleet-a").await,
            "{} still served the purged object",
            edge.addr
        );
        assert!(
            served_from_cache(edge, "/obj/other").await,
            "outside the prefix"
        );
        let metrics = edge.metrics().await;
        assert_eq!(
            metric(&metrics, "strata_fleet_state_version "),
            Some(version as f64)
        );
        assert_eq!(
            metric(
                &metrics,
                "strata_fleet_changes_applied_total{kind=\"purge\"}"
            ),
            Some(1.0)
        );
    }
    assert_eq!(
        origin.state.hits("/obj/fleet-a"),
        6,
        "each edge refetched once"
    );

    // State changes travel the same way: TTL overrides set on edge 2 are in force on edge 0.
    let (status, body) = api(
        &edges[2],
        Method::PUT,
        "/api/cache/ttl-overrides",
        Some(json!({ "overrides": [{ "prefix": "/live/", "ttl": "3s" }] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_version(&edges[0], version + 1).await;
    let (_, body) = api(&edges[0], Method::GET, "/api/cache/ttl-overrides", None).await;
    assert_eq!(body["overrides"][0]["prefix"], "/live/", "{body}");

    // Bad input is refused before it reaches the fleet.
    let (status, _) = api(
        &edges[0],
        Method::POST,
        "/api/purge",
        Some(json!({ "prefix": "no-slash" })),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(fleet_status(&edges[1]).await["version"], json!(version + 1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_down_during_a_purge_catches_up_before_it_serves() {
    let nats = Nats::start("down");
    nats.client().await;
    let origin = start_origin().await;
    let dir = state_dir("down");
    let (state_a, state_b) = (dir.join("a.json"), dir.join("b.json"));
    let url = nats.url();
    let a = start_edge(&[origin.url()], "fleet-a", |c| {
        fleet_config(c, Some(&url), &state_a)
    })
    .await;
    let b = start_edge(&[origin.url()], "fleet-b", |c| {
        fleet_config(c, Some(&url), &state_b)
    })
    .await;
    wait_fleet(&b, "connected", |s| s["connected"] == json!(true)).await;
    cache(&b, "/obj/down-1").await;
    b.shutdown().await;

    let purged = purge_prefix(&a, "/obj/down-").await;
    let (status, body) = api(
        &a,
        Method::PUT,
        "/api/cache/ttl-overrides",
        Some(json!({ "overrides": [{ "prefix": "/obj/", "ttl": "7s" }] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // B comes back on the state it saved; its first answer, admin or player,
    // comes after it read what it missed.
    let b = start_edge(&[origin.url()], "fleet-b", |c| {
        fleet_config(c, Some(&url), &state_b)
    })
    .await;
    let status = fleet_status(&b).await;
    assert_eq!(status["caught_up"], json!(true), "{status}");
    assert_eq!(status["version"], json!(purged + 1), "{status}");
    assert!(
        !served_from_cache(&b, "/obj/down-1").await,
        "the old object is not served"
    );
    let (_, body) = api(&b, Method::GET, "/api/cache/ttl-overrides", None).await;
    assert_eq!(body["overrides"][0]["ttl"], "7s", "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_malformed_and_out_of_order_messages_are_refused_and_counted() {
    let nats = Nats::start("forged");
    let js = nats.client().await;
    let origin = start_origin().await;
    let dir = state_dir("forged");
    let url = nats.url();
    let state = dir.join("edge.json");
    let edge = start_edge(&[origin.url()], "fleet-forged", |c| {
        fleet_config(c, Some(&url), &state)
    })
    .await;
    wait_fleet(&edge, "connected", |s| s["connected"] == json!(true)).await;
    cache(&edge, "/obj/keep").await;
    // A real change first, to replay later.
    let version = purge_prefix(&edge, "/obj/nothing-here/").await;
    cache(&edge, "/obj/keep").await;

    let purge_all = Change::Purge(PurgeSpec {
        prefix: Some("/".into()),
        ..Default::default()
    });
    let send = |payload: Vec<u8>, signature: Option<String>| {
        let js = js.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(sig) = signature {
                headers.insert(SIGNATURE_HEADER, sig.as_str());
            }
            js.publish_with_headers(SUBJECT, headers, payload.into())
                .await
                .expect("publish")
                .await
                .expect("ack")
                .sequence
        }
    };
    let good = FleetSecret::new(FLEET_SECRET).expect("secret");
    let wrong = FleetSecret::new(WRONG_SECRET).expect("secret");
    let envelope = |version| Envelope {
        version,
        issuer: "attacker".into(),
        change: purge_all.clone(),
    };
    // From the wrong key, at the right place.
    let (payload, sig) = seal(&wrong, &envelope(version + 1));
    send(payload, Some(sig)).await;
    // Unsigned.
    let (payload, _) = seal(&good, &envelope(version + 2));
    send(payload, None).await;
    // Signed garbage.
    let junk = b"{\"version\": \"lots\"}".to_vec();
    let sig = good.sign(&junk);
    send(junk, Some(sig)).await;
    // The real change's exact bytes again.
    let mut stream = js.get_stream(STREAM).await.expect("stream");
    let original = stream.get_raw_message(version).await.expect("original");
    let original_sig = original
        .headers
        .get(SIGNATURE_HEADER)
        .expect("signed")
        .as_str()
        .to_owned();
    send(original.payload.to_vec(), Some(original_sig)).await;
    // Validly signed, but claiming a place it does not land at.
    let (payload, sig) = seal(&good, &envelope(version + 50));
    let last = send(payload, Some(sig)).await;

    wait_fleet(&edge, "read to the end", |s| {
        s["cursor"].as_u64() >= Some(last)
    })
    .await;
    let status = fleet_status(&edge).await;
    assert_eq!(
        status["version"],
        json!(version),
        "nothing applied: {status}"
    );
    assert!(
        served_from_cache(&edge, "/obj/keep").await,
        "no forged purge"
    );
    let metrics = edge.metrics().await;
    let refused = |reason: &str| {
        metric(
            &metrics,
            &format!("strata_fleet_changes_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(refused("signature"), Some(2.0), "{metrics}");
    assert_eq!(refused("malformed"), Some(1.0));
    assert_eq!(refused("replayed"), Some(1.0));
    assert_eq!(refused("out_of_order"), Some(1.0));
    assert_eq!(stream.info().await.expect("info").state.last_sequence, last);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_serve_through_a_nats_outage_and_catch_up_after_it() {
    let mut nats = Nats::start("outage");
    nats.client().await;
    let origin = start_origin().await;
    let dir = state_dir("outage");
    let url = nats.url();
    let mut edges = Vec::new();
    for i in 0..2 {
        let state = dir.join(format!("edge{i}.json"));
        edges.push(
            start_edge(&[origin.url()], &format!("fleet-outage-{i}"), |c| {
                fleet_config(c, Some(&url), &state)
            })
            .await,
        );
    }
    for edge in &edges {
        wait_fleet(edge, "connected", |s| s["connected"] == json!(true)).await;
    }
    let before = purge_prefix(&edges[0], "/obj/none/").await;
    for edge in &edges {
        wait_version(edge, before).await;
        cache(edge, "/obj/outage").await;
    }

    nats.kill();
    for edge in &edges {
        wait_fleet(edge, "disconnected", |s| s["connected"] == json!(false)).await;
        assert!(
            served_from_cache(edge, "/obj/outage").await,
            "still serving the last known state"
        );
    }
    // No engine, no change: refused, and nothing half-done anywhere.
    let (status, body) = api(
        &edges[1],
        Method::POST,
        "/api/purge",
        Some(json!({ "prefix": "/obj/" })),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    for edge in &edges {
        assert!(served_from_cache(edge, "/obj/outage").await);
        assert_eq!(fleet_status(edge).await["version"], json!(before));
    }

    nats.run();
    nats.client().await;
    for edge in &edges {
        wait_fleet(edge, "reconnected", |s| s["connected"] == json!(true)).await;
    }
    let after = purge_prefix(&edges[1], "/obj/outage").await;
    assert!(after > before);
    for edge in &edges {
        wait_version(edge, after).await;
        assert!(!served_from_cache(edge, "/obj/outage").await);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_without_nats_keeps_its_runtime_changes_across_a_restart() {
    let origin = start_origin().await;
    let dir = state_dir("single");
    let state = dir.join("state.json");
    let configure = |c: &mut EdgeConfig| {
        fleet_config(c, None, &state);
        c.fleet.secret = None;
        c.token = Some(
            toml::from_str::<TokenConfig>(
                "keys = [{ id = \"2026-11\", secret = \"0123456789abcdef0123456789abcdef\" }]\nrequire = [\"/live/\"]\n",
            )
            .expect("token config"),
        );
    };
    let edge = start_edge(&[origin.url()], "single", configure).await;
    assert_eq!(fleet_status(&edge).await["engine"], "none");
    let (status, body) = api(
        &edge,
        Method::POST,
        "/api/token/keys",
        Some(json!({ "id": "2026-12", "secret": "fedcba9876543210fedcba9876543210" })),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) = api(&edge, Method::DELETE, "/api/token/keys/2026-11", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = api(
        &edge,
        Method::PUT,
        "/api/cache/ttl-overrides",
        Some(json!({ "overrides": [{ "prefix": "/obj/", "ttl": "9s" }] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(fleet_status(&edge).await["version"], json!(3));
    edge.shutdown().await;
    let text = std::fs::read_to_string(&state).expect("state file");
    assert!(text.contains("2026-12"), "{text}");

    let edge = start_edge(&[origin.url()], "single", configure).await;
    let status = fleet_status(&edge).await;
    assert_eq!(status["version"], json!(3), "{status}");
    let (_, keys) = api(&edge, Method::GET, "/api/token/keys", None).await;
    assert_eq!(keys, json!({ "keys": [{ "id": "2026-12" }] }));
    let (_, body) = api(&edge, Method::GET, "/api/cache/ttl-overrides", None).await;
    assert_eq!(body["overrides"][0]["ttl"], "9s", "{body}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `strata ctl` with the given arguments; (success, stdout + stderr).
fn ctl(nats: &Nats, secret: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("ctl")
        .args(["--nats", &nats.url(), "--secret", secret])
        .args(args)
        .env_remove("STRATA_FLEET_SECRET")
        .output()
        .expect("run strata ctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strata_ctl_purges_the_fleet_and_a_wrong_secret_changes_nothing() {
    let nats = Nats::start("ctl");
    nats.client().await;
    let origin = start_origin().await;
    let dir = state_dir("ctl");
    let url = nats.url();
    let state = dir.join("edge.json");
    let edge = start_edge(&[origin.url()], "fleet-ctl", |c| {
        fleet_config(c, Some(&url), &state)
    })
    .await;
    wait_fleet(&edge, "connected", |s| s["connected"] == json!(true)).await;
    cache(&edge, "/obj/ctl-1").await;

    // Signed with the wrong secret: published, refused by the edge.
    let (ok, out) = ctl(&nats, WRONG_SECRET, &["purge", "--prefix", "/obj/"]);
    assert!(ok, "{out}");
    let (ok, out) = ctl(&nats, FLEET_SECRET, &["status"]);
    assert!(ok && out.contains("fleet version 1"), "{out}");
    wait_fleet(&edge, "read the forged purge", |s| s["cursor"] == json!(1)).await;
    assert!(
        served_from_cache(&edge, "/obj/ctl-1").await,
        "forged purge ignored"
    );
    assert_eq!(
        metric(
            &edge.metrics().await,
            "strata_fleet_changes_refused_total{reason=\"signature\"}"
        ),
        Some(1.0)
    );

    let (ok, out) = ctl(&nats, FLEET_SECRET, &["purge", "/obj/ctl-1"]);
    assert!(ok && out.contains("fleet version 2"), "{out}");
    wait_version(&edge, 2).await;
    assert!(!served_from_cache(&edge, "/obj/ctl-1").await);

    let (ok, out) = ctl(&nats, FLEET_SECRET, &["ttl-overrides", "/live/=4s"]);
    assert!(ok, "{out}");
    wait_version(&edge, 3).await;
    let (_, body) = api(&edge, Method::GET, "/api/cache/ttl-overrides", None).await;
    assert_eq!(body["overrides"][0]["ttl"], "4s", "{body}");

    // Bad input never reaches the fleet.
    let (ok, out) = ctl(&nats, FLEET_SECRET, &["ttl-overrides", "live=forever"]);
    assert!(!ok, "{out}");
    let (ok, out) = ctl(&nats, "short", &["status"]);
    assert!(!ok && out.contains("--secret"), "{out}");
    let (ok, out) = ctl(&nats, FLEET_SECRET, &["status"]);
    assert!(ok && out.contains("fleet version 3"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
