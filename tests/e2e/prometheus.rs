//! The real Prometheus (Debian's) scrapes the edge's /metrics: the
//! exposition must parse and the series must be queryable. [`Prometheus`]
//! runs it for other tests too.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{client, start_edge, start_origin};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_edge_metrics() {
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "prom-edge", |_| {}).await;
    for _ in 0..3 {
        client()
            .get(edge.url("/obj/p.m4s?size=100"))
            .send()
            .await
            .expect("request");
    }
    let admin = edge.admin.to_string();
    let prometheus = Prometheus::start(&[("strata-edge", &admin)]);
    let hits = prometheus
        .wait_for(
            r#"strata_edge_requests_total{cache="hit"}"#,
            2.0,
            Duration::from_secs(30),
        )
        .await;
    assert!(
        hits == 2.0 || hits == 3.0,
        "two hits after one miss: {hits}"
    );
    let targets = client()
        .get(format!("{}/api/v1/targets", prometheus.url))
        .send()
        .await
        .expect("targets");
    assert!(targets.status().is_success());
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn on_path(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// The real Prometheus, scraping every second.
pub struct Prometheus {
    child: std::process::Child,
    dir: std::path::PathBuf,
    pub url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Prometheus {
    /// `jobs`: (job name, admin address) pairs.
    pub fn start(jobs: &[(&str, &str)]) -> Prometheus {
        let binary = on_path("prometheus").expect(
            "prometheus not found: run scripts/install-test-deps.sh (apt-get install prometheus)",
        );
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("strata-qoe-prom-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let mut config = String::from("global:\n  scrape_interval: 1s\nscrape_configs:\n");
        for (job, target) in jobs {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
        }
        std::fs::write(dir.join("prometheus.yml"), config).expect("config");
        let child = std::process::Command::new(binary)
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
        Prometheus {
            child,
            dir,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// An instant query: `(labels, value)` of each sample, or the API's error.
    pub async fn query(&self, promql: &str) -> Result<Vec<(serde_json::Value, f64)>, String> {
        let answer: serde_json::Value = client()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", promql)])
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if answer["status"] != "success" {
            return Err(answer.to_string());
        }
        Ok(answer["data"]["result"]
            .as_array()
            .map(|samples| {
                samples
                    .iter()
                    .map(|s| {
                        let value = s["value"][1].as_str().and_then(|v| v.parse().ok());
                        (s["metric"].clone(), value.unwrap_or(f64::NAN))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The sum of a query's samples once it reaches `at_least`, polling (bounded).
    pub async fn wait_for(&self, promql: &str, at_least: f64, limit: Duration) -> f64 {
        let deadline = Instant::now() + limit;
        let mut last = Err(String::from("not asked yet"));
        while Instant::now() < deadline {
            last = self.query(promql).await;
            if let Ok(samples) = &last {
                let sum: f64 = samples.iter().map(|(_, v)| v).sum();
                if sum >= at_least {
                    return sum;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("Prometheus never had {promql} >= {at_least} within {limit:?}: {last:?}");
    }
}
