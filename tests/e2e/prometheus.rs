//! The real Prometheus (Debian's) scrapes the edge's /metrics: the
//! exposition must parse and the series must be queryable.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{client, start_edge, start_origin};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_edge_metrics() {
    let binary = which("prometheus").expect(
        "prometheus not found: run scripts/install-test-deps.sh (apt-get install prometheus)",
    );
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "prom-edge", |_| {}).await;
    for _ in 0..3 {
        client()
            .get(edge.url("/obj/p.m4s?size=100"))
            .send()
            .await
            .expect("request");
    }
    let dir = std::env::temp_dir().join(format!(
        "strata-prom-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: strata-edge\n    static_configs:\n      - targets: ['{}']\n",
        edge.admin
    );
    std::fs::write(dir.join("prometheus.yml"), config).expect("config");
    let port = free_port();
    let mut prometheus = Command::new(binary)
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let query = format!("http://127.0.0.1:{port}/api/v1/query?query=strata_edge_requests_total%7Bcache%3D%22hit%22%7D");
    let mut answer = String::new();
    // Wait for the first scrape to land, bounded.
    for _ in 0..120 {
        if let Ok(r) = client().get(&query).send().await {
            answer = r.text().await.unwrap_or_default();
            if answer.contains("prom-edge") || answer.contains("\"value\"") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let targets = client()
        .get(format!("http://127.0.0.1:{port}/api/v1/targets"))
        .send()
        .await
        .map(|r| r.status())
        .ok();
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(targets.is_some());
    assert!(
        answer.contains("\"value\""),
        "Prometheus has the hit counter: {answer}"
    );
    assert!(
        answer.contains("\"2\"") || answer.contains("\"3\""),
        "two hits after one miss: {answer}"
    );
}

fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}
