//! Unit tests for the access policy. Fixtures: `tests/fixtures/tokens.json`
//! (vectors made by akamai-edgeauth) and the MaxMind test databases in
//! `tests/fixtures/geoip/` (with their licences).

mod client;
mod geo;
mod policy;
mod sign;
mod token;
mod transport;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub(super) const KEY: &str = "6b2c6f7e1d3a5b4c8e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8091a2b3";

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn geoip(file: &str) -> String {
    format!("{}/tests/fixtures/geoip/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// The Python that has akamai-edgeauth: `$STRATA_PYTHON` (scripts/test.sh
/// points it at .venv/bin/python), else `python3`.
/// `$STRATA_PYTHON`, else the repo's `.venv` (scripts/install-test-deps.sh), else `python3`.
fn python() -> String {
    std::env::var("STRATA_PYTHON").unwrap_or_else(|_| {
        let venv = concat!(env!("CARGO_MANIFEST_DIR"), "/.venv/bin/python");
        if std::path::Path::new(venv).exists() {
            venv.into()
        } else {
            "python3".into()
        }
    })
}

const GENERATE: &str = r#"
import json, sys
try:
    from akamai.edgeauth import EdgeAuth
except ImportError:
    sys.exit(3)
args = json.loads(sys.argv[1])
kind = args.pop("kind")
target = args.pop("target")
generator = EdgeAuth(**args)
print(generator.generate_acl_token(target) if kind == "acl" else generator.generate_url_token(target))
"#;

/// A token from the reference generator, akamai-edgeauth, called with
/// `EdgeAuth(**args)`; `kind` is `acl` or `url`.
pub(super) fn edgeauth(kind: &str, target: &str, mut args: serde_json::Value) -> String {
    args["kind"] = kind.into();
    args["target"] = target.into();
    let python = python();
    let out = Command::new(&python)
        .args(["-c", GENERATE, &args.to_string()])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {python} ({e}); pip install akamai-edgeauth and set STRATA_PYTHON")
        });
    assert!(
        out.status.code() != Some(3),
        "akamai_edgeauth is not importable by {python}: pip install akamai-edgeauth \
         (scripts/test.sh installs it into .venv and exports STRATA_PYTHON=.venv/bin/python)"
    );
    assert!(
        out.status.success(),
        "akamai-edgeauth failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 token")
        .trim()
        .to_owned()
}
