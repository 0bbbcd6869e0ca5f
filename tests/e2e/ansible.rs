//! The Ansible role deploys a node for real (into a scratch prefix, no
//! systemd) and refuses a configuration `strata check` rejects.

use std::path::PathBuf;
use std::process::Command;

fn ansible_playbook() -> PathBuf {
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/.venv/bin/ansible-playbook"
    ));
    assert!(
        venv.exists(),
        "ansible-playbook not found: run scripts/install-test-deps.sh (pip install ansible-core into .venv)"
    );
    venv
}

fn deploy(prefix: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let root = env!("CARGO_MANIFEST_DIR");
    Command::new(ansible_playbook())
        .current_dir(format!("{root}/ansible"))
        .args([
            "-i",
            "localhost,",
            "-c",
            "local",
            "site.yml",
            "-e",
            "@examples/local.yml",
        ])
        .arg("-e")
        .arg(format!("strata_prefix={}", prefix.display()))
        .arg("-e")
        .arg(format!(
            "strata_binary_src={}",
            env!("CARGO_BIN_EXE_strata")
        ))
        .arg("-e")
        .arg(format!(
            "ansible_python_interpreter={root}/.venv/bin/python"
        ))
        .args(extra)
        .env("ANSIBLE_NOCOLOR", "1")
        .output()
        .expect("run ansible-playbook")
}

#[test]
fn the_role_installs_a_checked_config_and_refuses_a_bad_one() {
    let prefix = std::env::temp_dir().join(format!("strata-ansible-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&prefix);
    let out = deploy(&prefix, &[]);
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "playbook failed:\n{log}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config = prefix.join("etc/edge.toml");
    let text = std::fs::read_to_string(&config).expect("edge.toml installed");
    assert!(
        text.contains("node_id = \"edge-local\"") && text.contains("http://127.0.0.1:8081"),
        "{text}"
    );
    let check = Command::new(prefix.join("bin/strata"))
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .expect("installed binary runs");
    assert!(check.status.success());

    // A second run that changes nothing reports nothing changed.
    let again = deploy(&prefix, &[]);
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("changed=0"),
        "idempotent"
    );

    // An upstream strata check refuses never replaces the working config.
    let bad = deploy(&prefix, &["-e", r#"{"strata_upstreams": ["ftp://nope"]}"#]);
    assert!(
        !bad.status.success(),
        "a config strata check refuses must fail the play"
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("config"),
        text,
        "old config kept"
    );
    let _ = std::fs::remove_dir_all(&prefix);
}
