//! `strata edge` upgraded in place by SIGUSR2 (src/server/upgrade.rs): the
//! real binary, copied to a temporary directory and replaced there by
//! rename, while clients keep asking. No request may fail and no connection
//! may be refused.

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::harness::{content, metric, start_edge, start_origin, TestCert};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// A TCP port whose UDP twin is free too (HTTP/3 shares the TLS port).
fn free_tcp_udp_port() -> u16 {
    loop {
        let port = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Orphans of this test process (an upgraded edge whose parent exited) are
/// reparented to it, so their exit status can be read.
fn become_subreaper() {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .expect("PR_SET_CHILD_SUBREAPER");
}

fn signal(pid: i32, sig: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(pid).expect("pid");
    rustix::process::kill_process(pid, sig).expect("kill");
}

/// Exit code of `pid` (a child or an adopted orphan of this process).
async fn exit_code(pid: i32, limit: Duration) -> i32 {
    let waited = tokio::task::spawn_blocking(move || {
        let pid = rustix::process::Pid::from_raw(pid).expect("pid");
        rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
    });
    let (_, status) = tokio::time::timeout(limit, waited)
        .await
        .unwrap_or_else(|_| panic!("pid {pid} still running after {limit:?}"))
        .expect("join")
        .expect("waitpid")
        .expect("a status");
    status
        .exit_status()
        .unwrap_or_else(|| panic!("pid {pid} did not exit normally: {status:?}"))
}

/// One `strata edge` started from a copy of the binary, and its successors.
struct UpgradableEdge {
    dir: PathBuf,
    exe: PathBuf,
    config: PathBuf,
    pid_file: PathBuf,
    http: u16,
    tls: u16,
    admin: u16,
    pid: i32,
}

impl UpgradableEdge {
    async fn start(name: &str, upstream: &str, cert: &TestCert) -> UpgradableEdge {
        Self::start_with_env(name, upstream, cert, &[]).await
    }

    async fn start_with_env(
        name: &str,
        upstream: &str,
        cert: &TestCert,
        env: &[(&str, &Path)],
    ) -> UpgradableEdge {
        become_subreaper();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strata-upgrade-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let exe = dir.join("strata");
        std::fs::copy(env!("CARGO_BIN_EXE_strata"), &exe).expect("copy the binary");
        let (http, tls, admin) = (free_port(), free_tcp_udp_port(), free_port());
        let mut edge = UpgradableEdge {
            config: dir.join("edge.toml"),
            pid_file: dir.join("strata.pid"),
            dir,
            exe,
            http,
            tls,
            admin,
            pid: 0,
        };
        edge.write_config(name, upstream, cert, "");
        let log = std::fs::File::create(edge.dir.join("edge.log")).expect("log");
        let child = std::process::Command::new(&edge.exe)
            .args(["edge", "--config"])
            .arg(&edge.config)
            .env("RUST_LOG", "info")
            .envs(env.iter().map(|(k, v)| (*k, *v)))
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn strata edge");
        // Waited for by pid (exit_code), like its successors.
        let pid = child.id() as i32;
        drop(child);
        edge.pid = edge.wait_pid_other_than(0).await;
        assert_eq!(edge.pid, pid, "the pid file names the process started");
        edge
    }

    fn write_config(&self, name: &str, upstream: &str, cert: &TestCert, extra: &str) {
        let text = format!(
            r#"[server]
listen = ["127.0.0.1:{http}"]
tls_listen = ["127.0.0.1:{tls}"]
certificates = [{{ cert = "{cert}", key = "{key}" }}]
admin = "127.0.0.1:{admin}"
node_id = "{name}"
pid_file = "{pid_file}"
drain_timeout = "10s"
{extra}
[upstream]
urls = ["{upstream}"]
"#,
            http = self.http,
            tls = self.tls,
            admin = self.admin,
            cert = cert.config.cert.display(),
            key = cert.config.key.display(),
            pid_file = self.pid_file.display(),
        );
        std::fs::write(&self.config, text).expect("write config");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }

    fn tls_url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.tls)
    }

    fn quic_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.tls))
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("edge.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn pid_in_file(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok())
    }

    /// The pid the pid file names once it names another than `old`.
    async fn wait_pid_other_than(&self, old: i32) -> i32 {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Some(pid) = self.pid_in_file().filter(|p| *p != old) {
                return pid;
            }
            assert!(
                Instant::now() < deadline,
                "pid file {} still names {old}\n{}",
                self.pid_file.display(),
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Puts `replacement` at the binary's path the way package managers do:
    /// a new file renamed over the old one (the running process keeps its
    /// now-deleted inode). Returns the new file's inode.
    fn replace_binary(&self, replacement: &Path) -> u64 {
        let next = self.dir.join("strata.next");
        std::fs::copy(replacement, &next).expect("copy the new binary");
        std::fs::rename(&next, &self.exe).expect("rename over the binary");
        std::fs::metadata(&self.exe).expect("stat").ino()
    }

    async fn metrics(&self) -> String {
        crate::harness::client()
            .get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// SIGUSR2 with a fresh copy of the binary in place; checks the new
    /// process runs the new file, says so in its metrics, and that the old
    /// one exits 0 after its drain.
    async fn upgrade(&mut self) {
        let inode = self.replace_binary(Path::new(env!("CARGO_BIN_EXE_strata")));
        let old = self.pid;
        signal(old, rustix::process::Signal::USR2);
        let new = self.wait_pid_other_than(old).await;
        let running = std::fs::metadata(format!("/proc/{new}/exe"))
            .expect("stat /proc/PID/exe")
            .ino();
        assert_eq!(
            running, inode,
            "the new process runs the file now at the path"
        );
        let code = exit_code(old, Duration::from_secs(30)).await;
        assert_eq!(code, 0, "the old process exits 0\n{}", self.log_tail());
        self.pid = new;
        let metrics = self.metrics().await;
        assert_eq!(
            metric(&metrics, "strata_edge_upgrades_total{result=\"ok\"}"),
            Some(1.0),
            "the new process counts its upgrade"
        );
    }

    async fn stop(&mut self) {
        if self.pid != 0 {
            signal(self.pid, rustix::process::Signal::TERM);
            let code = exit_code(self.pid, Duration::from_secs(30)).await;
            self.pid = 0;
            assert_eq!(code, 0, "SIGTERM: exit 0 after the drain");
            assert!(!self.pid_file.exists(), "the pid file is removed on exit");
        }
    }
}

impl Drop for UpgradableEdge {
    fn drop(&mut self) {
        if self.pid != 0 {
            let pid = rustix::process::Pid::from_raw(self.pid).expect("pid");
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            let _ = rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failures: Mutex<Vec<String>>,
}

/// GETs `url` and checks the body is `content(name, size)`.
async fn check(client: &reqwest::Client, url: &str, name: &str, size: usize) -> Result<(), String> {
    let fetch = async {
        let response = client.get(url).send().await.map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("body: {e:?}"))?;
        if status != 200 {
            return Err(format!("status {status}"));
        }
        if body != content(name, size) {
            return Err(format!("body of {} bytes differs", body.len()));
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), fetch)
        .await
        .unwrap_or_else(|_| Err("no answer within 30 s".into()))
}

/// Clients that ask until `stop`: kept-alive HTTP/1.1 and HTTP/2 (cleartext
/// and TLS), and one that opens a new connection for every request; cached
/// objects and uncached ones alternate.
fn hammer(
    edge: &UpgradableEdge,
    cert: &TestCert,
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let plain = |b: reqwest::ClientBuilder| b.no_proxy().build().expect("client");
    let clients: Vec<(&str, reqwest::Client, bool)> = vec![
        ("h1", plain(reqwest::Client::builder().http1_only()), false),
        (
            "h1-b",
            plain(reqwest::Client::builder().http1_only()),
            false,
        ),
        (
            "h2c",
            plain(reqwest::Client::builder().http2_prior_knowledge()),
            false,
        ),
        (
            "new-conn",
            plain(reqwest::Client::builder().pool_max_idle_per_host(0)),
            false,
        ),
        ("tls-h1", cert.https_client(false), true),
        ("tls-h2", cert.https_client(true), true),
    ];
    clients
        .into_iter()
        .map(|(label, client, tls)| {
            let stop = stop.clone();
            let tally = tally.clone();
            let base = if tls { edge.tls_url("") } else { edge.url("") };
            tokio::spawn(async move {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let (name, size, url) = if i.is_multiple_of(2) {
                        let name = format!("cached-{}", i % 8);
                        let url = format!("{base}/obj/{name}?size=40000&cc=max-age%3D600");
                        (name, 40000, url)
                    } else {
                        let name = format!("fresh-{label}-{i}");
                        let url = format!("{base}/obj/{name}?size=3000&cc=no-store");
                        (name, 3000, url)
                    };
                    match check(&client, &url, &name, size).await {
                        Ok(()) => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(e) => tally.failures.lock().push(format!("{label} {url}: {e}")),
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_upgrades_under_load_fail_no_request() {
    let origin = start_origin().await;
    let cert = TestCert::localhost();
    let mut edge = UpgradableEdge::start("edge-up", &origin.url(), &cert).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let clients = hammer(&edge, &cert, stop.clone(), tally.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut pids = vec![edge.pid];
    for round in 1..=3 {
        let before = tally.ok.load(Ordering::SeqCst);
        edge.upgrade().await;
        pids.push(edge.pid);
        // Answers keep coming from the new process.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tally.ok.load(Ordering::SeqCst) < before + 50 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no answers after the upgrade"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("client task");
    }
    let failures = tally.failures.lock().clone();
    let ok = tally.ok.load(Ordering::SeqCst);
    println!("upgrade: {ok} requests answered across 3 upgrades, pids {pids:?}");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed:\n{}\n--- edge log ---\n{}",
        failures.len(),
        ok + failures.len() as u64,
        failures[..failures.len().min(20)].join("\n"),
        edge.log_tail()
    );
    let mut distinct = pids.clone();
    distinct.dedup();
    assert_eq!(distinct.len(), 4, "a new pid each time: {pids:?}");
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_response_started_before_the_upgrade_completes_intact() {
    let origin = start_origin().await;
    let cert = TestCert::localhost();
    let mut edge = UpgradableEdge::start("edge-slow", &origin.url(), &cert).await;
    // 3 MB in 64 KiB chunks every 80 ms: about 4 s, most of it after USR2.
    let size = 3_000_000;
    let mut bodies = Vec::new();
    for (label, client, url) in [
        (
            "h1",
            crate::harness::client(),
            edge.url(&format!("/obj/slow-h1?size={size}&delay=80")),
        ),
        (
            "tls-h2",
            cert.https_client(true),
            edge.tls_url(&format!("/obj/slow-h2?size={size}&delay=80")),
        ),
    ] {
        let response = client.get(&url).send().await.expect("slow response head");
        assert_eq!(response.status(), 200, "{label}");
        // Read as it comes: the old process waits for the client, not the
        // other way round.
        bodies.push((label, tokio::spawn(response.bytes())));
    }
    edge.upgrade().await;
    for (label, body) in bodies {
        let body = body
            .await
            .expect("join")
            .unwrap_or_else(|e| panic!("{label}: body cut: {e:?}\n{}", edge.log_tail()));
        let name = if label == "h1" { "slow-h1" } else { "slow-h2" };
        assert!(
            body == content(name, size),
            "{label}: {} bytes, intact: false",
            body.len()
        );
    }
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_upgrade_leaves_the_old_process_serving() {
    let origin = start_origin().await;
    let cert = TestCert::localhost();
    // systemd's side of sd_notify(3).
    let notify_path =
        std::env::temp_dir().join(format!("strata-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&notify_path);
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    let mut edge = UpgradableEdge::start_with_env(
        "edge-fail",
        &origin.url(),
        &cert,
        &[("NOTIFY_SOCKET", notify_path.as_path())],
    )
    .await;
    assert_eq!(next_notice(&notify).await, "READY=1\n");
    let client = crate::harness::client();
    let pid = edge.pid;
    let failed = "strata_edge_upgrades_total{result=\"failed\"}";

    // 1. The new binary does not start at all; a second USR2 during the
    // attempt is ignored (one failure counted, not two).
    let script = edge.dir.join("broken.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho broken build >&2\nsleep 2\nexit 1\n",
    )
    .expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    edge.replace_binary(&script);
    signal(pid, rustix::process::Signal::USR2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(pid, rustix::process::Signal::USR2);
    wait_metric(&edge, failed, 1.0).await;
    let log = std::fs::read_to_string(edge.dir.join("edge.log")).expect("log");
    assert!(
        log.contains("SIGUSR2 ignored: an upgrade is already in progress"),
        "the second USR2 is logged as ignored"
    );
    // 2. The binary is fine but the configuration no longer validates.
    edge.replace_binary(Path::new(env!("CARGO_BIN_EXE_strata")));
    std::fs::write(&edge.config, "[server]\nno_such_key = 1\n").expect("break config");
    signal(pid, rustix::process::Signal::USR2);
    wait_metric(&edge, failed, 2.0).await;
    // No third attempt came out of the ignored signal.
    assert_eq!(metric(&edge.metrics().await, failed), Some(2.0));

    assert_eq!(
        edge.pid_in_file(),
        Some(pid),
        "the pid file still names the old process"
    );
    check(&client, &edge.url("/obj/still?size=5000"), "still", 5000)
        .await
        .expect("the old process still serves");
    let metrics = edge.metrics().await;
    assert_eq!(
        metric(&metrics, "strata_edge_upgrades_total{result=\"ok\"}"),
        None
    );

    // 3. Fixed: the next upgrade goes through.
    edge.write_config("edge-fail", &origin.url(), &cert, "");
    edge.upgrade().await;
    check(&client, &edge.url("/obj/after?size=5000"), "after", 5000)
        .await
        .expect("the new process serves");
    assert_eq!(
        next_notice(&notify).await,
        format!("MAINPID={}\nREADY=1\n", edge.pid),
        "systemd learns the new main pid"
    );
    edge.stop().await;
    let _ = std::fs::remove_file(&notify_path);
}

/// The next datagram the edge sent to `NOTIFY_SOCKET`.
async fn next_notice(socket: &tokio::net::UnixDatagram) -> String {
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(30), socket.recv(&mut buf))
        .await
        .expect("a notice within 30 s")
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn wait_metric(edge: &UpgradableEdge, name: &str, value: f64) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        if metric(&edge.metrics().await, name) == Some(value) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never reached {value}\n{}",
            edge.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP/3 connection that may be refused or told to go away.
async fn h3_connect(
    endpoint: &quinn::Endpoint,
    addr: SocketAddr,
) -> Result<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>, String> {
    let quic = endpoint
        .connect(addr, "localhost")
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(quic))
        .await
        .map_err(|e| format!("h3 setup: {e}"))?;
    tokio::spawn(async move {
        let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
    });
    Ok(send)
}

/// Whether the request was refused before the server took it (the client
/// may send it again on a new connection, RFC 9114 §5.2), or broken after.
enum H3Failure {
    NotTaken(String),
    Broken(String),
}

async fn h3_get(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    path: &str,
) -> Result<Bytes, H3Failure> {
    let request = crate::quic_client::request("GET", path, &[]);
    let mut stream = send
        .send_request(request)
        .await
        .map_err(|e| H3Failure::NotTaken(format!("send: {e}")))?;
    let _ = stream.finish().await;
    let head = stream.recv_response().await.map_err(|e| {
        // A stream the server never processed (GOAWAY) is refused with
        // H3_REQUEST_REJECTED; anything else is a broken request.
        let text = format!("{e}");
        if ["H3_REQUEST_REJECTED", "GOAWAY", "H3_NO_ERROR", "0x100"]
            .iter()
            .any(|known| text.contains(known))
        {
            H3Failure::NotTaken(text)
        } else {
            H3Failure::Broken(format!("head: {text}"))
        }
    })?;
    if head.status() != 200 {
        return Err(H3Failure::Broken(format!("status {}", head.status())));
    }
    let mut body = BytesMut::new();
    while let Some(mut chunk) = stream
        .recv_data()
        .await
        .map_err(|e| H3Failure::Broken(format!("body: {e}")))?
    {
        body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    Ok(body.freeze())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn http3_clients_keep_getting_answers_across_an_upgrade() {
    let origin = start_origin().await;
    let cert = TestCert::localhost();
    let mut edge = UpgradableEdge::start("edge-h3", &origin.url(), &cert).await;
    let endpoint =
        crate::quic_client::endpoint(crate::quic_client::client_config(&cert.der, false));
    let addr = edge.quic_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let broken = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut tasks = Vec::new();
    for worker in 0..3 {
        let (endpoint, stop, answered, reconnects, broken) = (
            endpoint.clone(),
            stop.clone(),
            answered.clone(),
            reconnects.clone(),
            broken.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut send = h3_connect(&endpoint, addr)
                .await
                .expect("first h3 connection");
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let (name, size) = if i.is_multiple_of(2) {
                    (format!("h3-cached-{}", i % 4), 30000)
                } else {
                    (format!("h3-fresh-{worker}-{i}"), 2000)
                };
                let cc = if i.is_multiple_of(2) {
                    "max-age%3D600"
                } else {
                    "no-store"
                };
                let path = format!("/obj/{name}?size={size}&cc={cc}");
                // The same request until it is answered: a request the old
                // process did not take goes to a new connection.
                loop {
                    match h3_get(&mut send, &path).await {
                        Ok(body) => {
                            if body != content(&name, size) {
                                broken.lock().push(format!("{path}: body differs"));
                            }
                            answered.fetch_add(1, Ordering::SeqCst);
                            break;
                        }
                        Err(H3Failure::Broken(e)) => {
                            broken.lock().push(format!("{path}: {e}"));
                            break;
                        }
                        Err(H3Failure::NotTaken(why)) => {
                            println!("RETRY h3 worker {worker}: {why}; reconnecting");
                            reconnects.fetch_add(1, Ordering::SeqCst);
                            match tokio::time::timeout(
                                Duration::from_secs(30),
                                h3_connect(&endpoint, addr),
                            )
                            .await
                            {
                                Ok(Ok(next)) => send = next,
                                Ok(Err(e)) => {
                                    broken.lock().push(format!("reconnect: {e}"));
                                    return;
                                }
                                Err(_) => {
                                    broken.lock().push("reconnect: no handshake in 30 s".into());
                                    return;
                                }
                            }
                        }
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    edge.upgrade().await;
    let before = answered.load(Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::SeqCst) < before + 30 {
        assert!(
            Instant::now() < deadline,
            "no HTTP/3 answers after the upgrade\n{}",
            edge.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("h3 worker");
    }
    let broken = broken.lock().clone();
    println!(
        "upgrade h3: {} answered, {} reconnects after GOAWAY",
        answered.load(Ordering::SeqCst),
        reconnects.load(Ordering::SeqCst)
    );
    assert!(
        broken.is_empty(),
        "broken HTTP/3 requests: {broken:#?}\n{}",
        edge.log_tail()
    );
    assert!(
        reconnects.load(Ordering::SeqCst) >= 3,
        "each client moved to the new process"
    );
    edge.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_upgraded_under_load_costs_the_origin_nothing_behind_a_shield() {
    let origin = start_origin().await;
    let shield = start_edge(&[origin.url()], "shield-up", |_| {}).await;
    let cert = TestCert::localhost();
    let mut edge = UpgradableEdge::start("edge-behind-shield", &shield.url(""), &cert).await;
    let objects: Vec<String> = (0..24).map(|i| format!("shielded-{i}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let mut tasks = Vec::new();
    for worker in 0..4 {
        let (stop, tally, objects) = (stop.clone(), tally.clone(), objects.clone());
        let base = edge.url("");
        tasks.push(tokio::spawn(async move {
            let client = crate::harness::client();
            let mut i = worker;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let name = &objects[i % objects.len()];
                let url = format!("{base}/obj/{name}?size=20000&cc=max-age%3D600");
                match check(&client, &url, name, 20000).await {
                    Ok(()) => {
                        tally.ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => tally.failures.lock().push(format!("{url}: {e}")),
                }
            }
        }));
    }
    // Every object cached in the edge and the shield before the upgrade.
    let deadline = Instant::now() + Duration::from_secs(20);
    while objects
        .iter()
        .any(|o| origin.state.hits(&format!("/obj/{o}")) == 0)
    {
        assert!(Instant::now() < deadline, "objects never fetched");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shield_before = requests(&shield.metrics().await);
    edge.upgrade().await;
    let before = tally.ok.load(Ordering::SeqCst);
    while tally.ok.load(Ordering::SeqCst) < before + 200 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::SeqCst);
    for task in tasks {
        task.await.expect("client");
    }
    let failures = tally.failures.lock().clone();
    assert!(failures.is_empty(), "failed: {failures:#?}");
    let fetches: Vec<(String, u64)> = objects
        .iter()
        .map(|o| (o.clone(), origin.state.hits(&format!("/obj/{o}"))))
        .collect();
    println!("upgrade behind a shield: origin fetches per object {fetches:?}");
    for (object, hits) in &fetches {
        assert_eq!(
            *hits, 1,
            "{object}: the shield absorbs the new edge's empty cache"
        );
    }
    let shield_after = requests(&shield.metrics().await);
    assert!(
        shield_after >= shield_before + objects.len() as f64,
        "the new edge refilled from the shield"
    );
    println!("shield requests: {shield_before} before the upgrade, {shield_after} after");
    edge.stop().await;
}

/// Requests a node answered, all labels summed.
fn requests(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("strata_edge_requests_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
