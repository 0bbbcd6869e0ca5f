//! The `strata` binary as operators run it: flags, `check`, `sign`, SIGTERM.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::harness::{client, start_origin};

fn strata() -> Command {
    Command::new(env!("CARGO_BIN_EXE_strata"))
}

/// A loopback port nothing listens on right now, for the child to bind.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

#[test]
fn check_accepts_the_shipped_configs_and_names_the_bad_key() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (file, role) in [("conf/edge.toml", "edge"), ("conf/origin.toml", "origin")] {
        let out = strata()
            .args(["check", "--config", &format!("{root}/{file}")])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("ok ({role}")));
    }
    let dir = std::env::temp_dir().join(format!("strata-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cases = [
        ("[upstream]\nurls = []\n", "upstream.urls"),
        (
            "[cache]\nsize = \"lots\"\n[upstream]\nurls = [\"http://a:1\"]\n",
            "size",
        ),
        ("[server]\nlisten = [\"not an address\"]\n", "listen"),
        ("[store]\ndvr_window = \"1s\"\n", "store.dvr_window"),
        ("this is = = not toml", "expected"),
        // Encryption on and no way to check a viewer's token: keys for anyone.
        (
            "[store]\n[keys]\nstate_dir = \"/tmp/strata-check-keys\"\n[encryption]\ndefault = \"cenc\"\n",
            "encryption.licence_token.keys",
        ),
    ];
    for (i, (text, key)) in cases.iter().enumerate() {
        let path = dir.join(format!("bad{i}.toml"));
        std::fs::write(&path, text).expect("write");
        let out = strata()
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{text} must be refused");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "error for {text:?} names {key}: {err}");
    }
    // Serving keys to anyone is a choice an operator can make, in writing.
    let open = dir.join("open-licences.toml");
    std::fs::write(
        &open,
        "[store]\n[keys]\nstate_dir = \"/tmp/strata-check-keys\"\n[encryption]\ndefault = \"cenc\"\nlicence_auth = \"none\"\n",
    )
    .expect("write");
    let out = strata()
        .args(["check", "--config"])
        .arg(&open)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "licence_auth = \"none\" is explicit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sign_prints_a_token_and_refuses_a_bad_secret() {
    let out = strata()
        .args([
            "sign",
            "--secret",
            "00112233445566778899aabbccddeeff",
            "--acl",
            "/live/*",
            "--ttl",
            "60",
            "--ip",
            "10.0.0.1",
        ])
        .output()
        .expect("run");
    assert!(out.status.success());
    let token = String::from_utf8_lossy(&out.stdout);
    assert!(
        token.starts_with("ip=10.0.0.1~st=") && token.contains("~acl=/live/*~hmac="),
        "{token}"
    );
    let out = strata()
        .args(["sign", "--secret", "nothex", "--acl", "/", "--ttl", "1"])
        .output()
        .expect("run");
    assert!(!out.status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_runs_with_only_listen_and_upstream_and_stops_on_sigterm() {
    let origin = start_origin().await;
    let (port, admin) = (free_port(), free_port());
    let mut child = strata()
        .args([
            "edge",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--upstream",
            &origin.url(),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn strata edge");
    let url = format!("http://127.0.0.1:{port}/obj/cli.m4s?size=100&token=SECRET-TOKEN-7");
    let mut status = None;
    for _ in 0..100 {
        if let Ok(r) = client().get(&url).send().await {
            status = Some(r.status());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, Some(reqwest::StatusCode::OK));
    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let (mut child, exit) = tokio::task::spawn_blocking(move || {
        let exit = child.wait();
        (child, exit)
    })
    .await
    .expect("join");
    let exit = exit.expect("wait");
    assert!(exit.success(), "SIGTERM is a clean shutdown: {exit:?}");
    // Every line logged before the exit is out, the token in none of them.
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().expect("stdout"), &mut log)
        .expect("read log");
    assert!(
        !log.contains("SECRET-TOKEN-7"),
        "a token reached the log:\n{log}"
    );
    let access: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("strata::access"))
        .collect();
    assert_eq!(access.len(), 1, "one access line per request:\n{log}");
    for field in [
        "client=127.0.0.1",
        "method=GET",
        "path=/obj/cli.m4s?size=100 ",
        "status=200",
        "cache=\"miss\"",
        "bytes=100",
        " ms=",
        "upstream=\"http://127.0.0.1:",
        "protocol=\"h1\"",
        "complete=true",
    ] {
        assert!(
            access[0].contains(field),
            "{field} missing from {}",
            access[0]
        );
    }
}

/// Issue 13: file first, flags on top, then one validation. A file with no
/// `[upstream]` (here one with `[token]`, as a real deployment has) starts
/// when `--upstream` supplies it; `check`, which merges no flags, names the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flag_supplies_what_the_config_file_lacks() {
    let origin = start_origin().await;
    let dir = std::env::temp_dir().join(format!("strata-merge-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("edge.toml");
    std::fs::write(
        &file,
        "[cache]\nsize = \"64MiB\"\n\n[token]\nrequire = [\"/private/\"]\n\n\
         [[token.keys]]\nid = \"k1\"\nsecret = \"00112233445566778899aabbccddeeff\"\n",
    )
    .expect("write config");

    let out = strata()
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .expect("run check");
    assert!(!out.status.success(), "check has no flags to merge");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstream.urls") && err.contains("--upstream URL"),
        "check names the key and the flag that supplies it: {err}"
    );

    let (port, admin) = (free_port(), free_port());
    let mut child = strata()
        .arg("edge")
        .arg("--config")
        .arg(&file)
        .args([
            "--upstream",
            &origin.url(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--admin",
            &format!("127.0.0.1:{admin}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn strata edge");
    let url = format!("http://127.0.0.1:{port}/obj/merge.m4s?size=10");
    let mut status = None;
    for _ in 0..100 {
        if let Ok(r) = client().get(&url).send().await {
            status = Some(r.status());
            break;
        }
        if let Ok(Some(exit)) = child.try_wait() {
            let mut err = String::new();
            let _ =
                std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
            panic!("strata edge --config FILE --upstream URL exited ({exit}): {err}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(status, Some(reqwest::StatusCode::OK));
}
