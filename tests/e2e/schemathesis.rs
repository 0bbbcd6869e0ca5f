//! schemathesis (PyPI, pinned in tests/requirements.txt) fuzzes the admin
//! API from `api/openapi.yaml` against a live edge that has every optional
//! section on (tokens, geo, admin token) and a healthy upstream: no 5xx,
//! every status declared, every body and header of the declared shape.
//!
//! The "schema-valid request accepted" check is not asked for: the spec
//! cannot say every semantic limit (a TTL of at most 365 days, a prefix
//! that must start with `/`), and those answers are declared 4xx that
//! `status_code_conformance` still holds to the spec.

use std::time::Duration;

use crate::control::token_and_geo;
use crate::control::ADMIN_TOKEN;
use crate::harness::{client, start_edge, start_origin};

/// A fixed seed keeps CI reproducible; `STRATA_SCHEMATHESIS_SEED` and
/// `STRATA_SCHEMATHESIS_EXAMPLES` widen it for the long run
/// (benches/README.md).
const SEED: &str = "20261203";

fn schemathesis() -> String {
    let python = std::env::var("STRATA_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python").to_owned());
    let bin = std::path::Path::new(&python).with_file_name("schemathesis");
    assert!(
        bin.exists(),
        "{} missing — run scripts/install-test-deps.sh (schemathesis from tests/requirements.txt)",
        bin.display()
    );
    bin.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_survives_schemathesis_with_no_5xx_and_conforming_responses() {
    let bin = schemathesis();
    let origin = start_origin().await;
    let edge = start_edge(&[origin.url()], "schemathesis-edge", token_and_geo).await;
    // Ready first, so /readyz answers its 200 and not the declared 503.
    let ready = format!("http://{}/readyz", edge.admin);
    let mut waited = 0;
    while client()
        .get(&ready)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .ok()
        != Some(200)
    {
        waited += 1;
        assert!(waited < 100, "edge not ready after 10 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seed = std::env::var("STRATA_SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.to_owned());
    let examples =
        std::env::var("STRATA_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "25".to_owned());
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/api/openapi.yaml");
    let out = tokio::process::Command::new(&bin)
        .args(["run", spec, "--url"])
        .arg(format!("http://{}", edge.admin))
        .args(["-H", &format!("Authorization: Bearer {ADMIN_TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance,response_headers_conformance",
        ])
        .args(["--seed", &seed, "--max-examples", &examples])
        .arg("--no-color")
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .expect("spawn schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found failures (seed {seed}):\n{stdout}\n{stderr}"
    );
    // It really exercised the API: every operation tested, cases generated.
    let operations = crate::openapi::operations(&crate::openapi::spec()).len();
    assert!(
        stdout.contains(&format!("Tested: {operations}")),
        "not every one of the {operations} operations was tested:\n{stdout}"
    );
    assert!(
        stdout.contains("generated"),
        "no test cases generated:\n{stdout}"
    );
    edge.shutdown().await;
}
