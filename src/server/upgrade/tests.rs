//! Unit tests of the handover's pure parts; the upgrade itself is tested
//! end to end in tests/e2e/upgrade.rs.

use super::*;

fn socket(kind: SocketKind, configured: &str) -> HandedSocket {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    HandedSocket {
        kind,
        configured: configured.parse().expect("addr"),
        bound: listener.local_addr().expect("addr"),
        fd: listener.into(),
    }
}

#[test]
fn a_socket_is_taken_by_kind_and_configured_or_bound_address() {
    let by_bound = socket(SocketKind::Http, "127.0.0.1:0");
    let bound = by_bound.bound;
    let mut inherited = Inherited {
        sockets: vec![
            by_bound,
            socket(SocketKind::Admin, "127.0.0.1:0"),
            socket(SocketKind::Quic, "127.0.0.1:0"),
        ],
        took_quic: false,
    };
    let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
    assert!(
        inherited.take(SocketKind::Tls, any).is_none(),
        "no TLS socket was handed over"
    );
    assert!(
        inherited.take(SocketKind::Http, bound).is_some(),
        "matched by the bound address"
    );
    assert!(
        inherited.take(SocketKind::Http, any).is_none(),
        "taken once"
    );
    assert!(
        inherited.take(SocketKind::Admin, any).is_some(),
        "matched by the configured address"
    );
    assert!(!inherited.took_quic());
    assert!(inherited.take(SocketKind::Quic, any).is_some());
    assert!(
        inherited.took_quic(),
        "HTTP/3 then waits for the old process"
    );
}

#[test]
fn socket_kinds_read_back_what_they_write() {
    for kind in [
        SocketKind::Http,
        SocketKind::Tls,
        SocketKind::Quic,
        SocketKind::Admin,
    ] {
        assert_eq!(SocketKind::parse(kind.as_str()), Some(kind));
    }
    assert_eq!(SocketKind::parse("ftp"), None);
}

#[test]
fn argv0_with_a_slash_is_made_absolute_and_keeps_its_name() {
    let cwd = std::env::current_dir().expect("cwd");
    assert_eq!(
        resolve_argv0(Path::new("./bin/strata")),
        Some(cwd.join("bin/strata"))
    );
    assert_eq!(
        resolve_argv0(Path::new("/opt/strata/current/strata")),
        Some(PathBuf::from("/opt/strata/current/strata")),
        "a symlinked release directory is not resolved: the link is followed at upgrade"
    );
}

#[test]
fn the_pid_file_is_replaced_whole_and_removed_only_by_its_process() {
    let dir = std::env::temp_dir().join(format!("strata-pidfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let pid_file = PidFile(dir.join("edge.pid"));
    pid_file.write().expect("write");
    assert_eq!(
        std::fs::read_to_string(&pid_file.0).expect("read"),
        format!("{}\n", std::process::id())
    );
    assert_eq!(
        std::fs::read_dir(&dir).expect("list").count(),
        1,
        "no temporary left"
    );
    std::fs::write(&pid_file.0, "1\n").expect("a newer process's pid");
    pid_file.remove_if_ours();
    assert!(pid_file.0.exists(), "another process's pid file stays");
    pid_file.write().expect("write");
    pid_file.remove_if_ours();
    assert!(!pid_file.0.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
