//! Upgrading a running edge without refusing a connection (nginx-style).
//!
//! `kill -USR2 $(cat PID_FILE)` makes the running process (the *parent*)
//! start the binary at the path it was itself started from — so a binary
//! replaced on disk by `rename` is the new one — with the same arguments and
//! environment, plus `STRATA_UPGRADE_SOCKET`: the name of an abstract Unix
//! socket the parent listens on for this one upgrade. Over it:
//!
//! 1. the child connects (the parent checks it runs as the same user) and
//!    receives every listening socket — cleartext and TLS TCP, admin, and the
//!    UDP sockets of HTTP/3 — as `SCM_RIGHTS`, with one line per socket,
//!    `KIND CONFIGURED_ADDR BOUND_ADDR`, ending with an empty line. The child
//!    uses an inherited socket where its configuration names that address (or
//!    the address it is bound to), binds what is new, and closes the rest: it
//!    never binds a port the parent holds. (Passing over a socket rather
//!    than by clearing `FD_CLOEXEC` keeps the project free of `unsafe`.)
//! 2. when it serves, the child writes the pid file, tells systemd
//!    (`MAINPID=`, `READY=1`) and writes `ready PID` to the parent.
//! 3. the parent closes its copies of the listeners (the kernel keeps the
//!    sockets, and their queued connections, open in the child), answers
//!    its in-flight requests, closes kept-alive connections gracefully and
//!    exits 0 when they are done or `server.drain_timeout` has passed.
//! 4. HTTP/3: two processes cannot read one UDP socket without stealing each
//!    other's packets (and answering them with stateless resets), so the child
//!    reads its inherited UDP sockets only after the parent writes `released`
//!    (or exits): once its QUIC connections got GOAWAY and finished their
//!    requests. Meanwhile new QUIC handshakes go unanswered and clients
//!    retransmit their Initial packets (RFC 9000 §6.2.1 — a delay, not a
//!    refusal).
//!
//! A child that exits, or is not ready within [`READY_TIMEOUT`], is killed;
//! the parent keeps serving as before and counts the attempt as `failed` in
//! `strata_edge_upgrades_total{result}` (the child counts `ok`).

use std::ffi::OsString;
use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{oneshot, watch};

use super::{EdgeListeners, Lifecycle};
use crate::config::ServerConfig;

/// The environment variable that tells a process it is an upgrade's child.
pub const SOCKET_ENV: &str = "STRATA_UPGRADE_SOCKET";
/// How long a child may take to say it is ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// More sockets than any configuration has; bounds the control message.
const MAX_SOCKETS: usize = 64;

/// Which listener a socket is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// `server.listen` (TCP).
    Http,
    /// `server.tls_listen` (TCP).
    Tls,
    /// HTTP/3 at a `server.tls_listen` address (UDP).
    Quic,
    /// `server.admin` (TCP).
    Admin,
}

impl SocketKind {
    fn as_str(self) -> &'static str {
        match self {
            SocketKind::Http => "http",
            SocketKind::Tls => "tls",
            SocketKind::Quic => "quic",
            SocketKind::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<SocketKind> {
        Some(match text {
            "http" => SocketKind::Http,
            "tls" => SocketKind::Tls,
            "quic" => SocketKind::Quic,
            "admin" => SocketKind::Admin,
            _ => return None,
        })
    }
}

/// One listening socket as handed over: what it is and where.
struct HandedSocket {
    kind: SocketKind,
    /// The address the configuration names (may have port 0).
    configured: SocketAddr,
    /// The address it is bound to.
    bound: SocketAddr,
    fd: OwnedFd,
}

/// Sockets received from the process this one upgrades, until taken.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<HandedSocket>,
    /// Whether a UDP socket was taken (then HTTP/3 waits for the parent).
    took_quic: bool,
}

impl Inherited {
    /// The socket of `kind` configured at, or bound to, `want`.
    pub(crate) fn take(&mut self, kind: SocketKind, want: SocketAddr) -> Option<OwnedFd> {
        let at = self
            .sockets
            .iter()
            .position(|s| s.kind == kind && (s.configured == want || s.bound == want))?;
        let socket = self.sockets.remove(at);
        tracing::info!(kind = kind.as_str(), addr = %socket.bound, "using the listening socket handed over by the old process");
        if kind == SocketKind::Quic {
            self.took_quic = true;
        }
        Some(socket.fd)
    }

    pub fn took_quic(&self) -> bool {
        self.took_quic
    }

    /// Closes what the new configuration no longer listens on.
    pub fn close_unused(&mut self) {
        for socket in self.sockets.drain(..) {
            tracing::info!(kind = socket.kind.as_str(), addr = %socket.bound, "closing a handed-over socket the configuration no longer names");
        }
    }
}

/// How this process was started, as resolved at startup: the path to run
/// again on upgrade and its arguments.
pub struct Invocation {
    exe: PathBuf,
    args: Vec<OsString>,
}

impl Invocation {
    /// The path this process was started from — not `/proc/self/exe`, which
    /// keeps pointing at the old (possibly deleted) file after a rename.
    pub fn at_startup() -> Invocation {
        let mut argv = std::env::args_os();
        let argv0 = argv.next().map(PathBuf::from);
        let args = argv.collect();
        let exe = argv0
            .as_deref()
            .and_then(resolve_argv0)
            .or_else(|| std::env::current_exe().ok())
            .unwrap_or_else(|| PathBuf::from("/proc/self/exe"));
        Invocation { exe, args }
    }
}

/// `argv[0]` as a path: made absolute when it has a slash, looked up in
/// `PATH` when it has none (as the shell did).
fn resolve_argv0(argv0: &Path) -> Option<PathBuf> {
    if argv0.components().count() > 1 || argv0.is_absolute() {
        // `components` drops the `.` of `./strata`; symlinks stay as given,
        // so a link switched to a new release is followed on upgrade.
        return std::env::current_dir()
            .ok()
            .map(|cwd| cwd.join(argv0).components().collect());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(argv0))
        .find(|candidate| candidate.is_file())
        .map(|found| match found.is_absolute() {
            true => found,
            false => std::env::current_dir().unwrap_or_default().join(found),
        })
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    /// `ok` (counted by the new process) or `failed` (by the old one).
    result: &'static str,
}

/// The connection to the process that started this one as its upgrade.
pub struct ParentLink {
    stream: std::os::unix::net::UnixStream,
}

impl ParentLink {
    /// When started as an upgrade (`STRATA_UPGRADE_SOCKET` set): connects
    /// to the old process and receives its listening sockets.
    pub fn from_env() -> std::io::Result<(Option<ParentLink>, Inherited)> {
        let Some(name) = std::env::var_os(SOCKET_ENV) else {
            return Ok((None, Inherited::default()));
        };
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_encoded_bytes())?;
        let stream = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("upgrade: connect to the old process: {e}"),
            )
        })?;
        stream.set_read_timeout(Some(READY_TIMEOUT))?;
        let (fds, mut text) = receive_sockets(&stream)?;
        let mut rest = [0u8; 1024];
        while !text.ends_with(b"\n\n") {
            if text.len() > 64 * 1024 {
                return Err(bad_handover("socket list too long"));
            }
            let n = (&stream).read(&mut rest)?;
            if n == 0 {
                return Err(bad_handover(
                    "the old process closed before the socket list ended",
                ));
            }
            text.extend_from_slice(&rest[..n]);
        }
        stream.set_read_timeout(None)?;
        let text = String::from_utf8(text).map_err(|_| bad_handover("socket list not UTF-8"))?;
        let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
        if lines.len() != fds.len() {
            return Err(bad_handover("socket list and sockets differ in number"));
        }
        let mut sockets = Vec::with_capacity(fds.len());
        for (line, fd) in lines.into_iter().zip(fds) {
            let mut words = line.split(' ');
            let (Some(kind), Some(configured), Some(bound), None) =
                (words.next(), words.next(), words.next(), words.next())
            else {
                return Err(bad_handover("malformed socket line"));
            };
            sockets.push(HandedSocket {
                kind: SocketKind::parse(kind).ok_or_else(|| bad_handover("unknown socket kind"))?,
                configured: configured
                    .parse()
                    .map_err(|_| bad_handover("bad configured address"))?,
                bound: bound
                    .parse()
                    .map_err(|_| bad_handover("bad bound address"))?,
                fd,
            });
        }
        tracing::info!(
            sockets = sockets.len(),
            "upgrade: received the old process's listening sockets"
        );
        Ok((
            Some(ParentLink { stream }),
            Inherited {
                sockets,
                took_quic: false,
            },
        ))
    }
}

fn bad_handover(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("upgrade: {why}"))
}

/// The first message: the sockets (closed on exec) and the start of the list.
fn receive_sockets(
    stream: &std::os::unix::net::UnixStream,
) -> std::io::Result<(Vec<OwnedFd>, Vec<u8>)> {
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut buf = vec![0u8; 16 * 1024];
    let received = rustix::net::recvmsg(
        stream,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    let mut fds = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    if received.flags.contains(rustix::net::ReturnFlags::CTRUNC) {
        return Err(bad_handover("more sockets than this build accepts"));
    }
    buf.truncate(received.bytes);
    Ok((fds, buf))
}

/// The parent's copy of one listener, to hand over on upgrade.
struct Listener {
    kind: SocketKind,
    configured: SocketAddr,
    bound: SocketAddr,
    fd: OwnedFd,
}

/// Everything the upgrade machinery of one process needs.
pub struct Upgrader {
    invocation: Invocation,
    listeners: Vec<Listener>,
    pid_file: Option<PathBuf>,
    parent: Option<ParentLink>,
    /// This process's HTTP/3 must wait for the parent to let go of its sockets.
    quic_waits: bool,
    upgrades: Family<ResultLabels, Counter>,
}

/// What [`Upgrader::start`] hands back to the caller of `run`.
pub struct Started {
    pub lifecycle: Lifecycle,
    /// Resolves when a new process has taken over: time to drain and exit.
    pub handed_over: oneshot::Receiver<()>,
    /// Removed on exit when it still names this process.
    pub pid_file: Option<PidFile>,
}

impl Upgrader {
    /// Keeps a copy of every listener (to hand over later) before `run` takes them.
    pub fn new(
        invocation: Invocation,
        server: &ServerConfig,
        listeners: &EdgeListeners,
        parent: Option<ParentLink>,
        quic_waits: bool,
    ) -> std::io::Result<Upgrader> {
        let mut kept = Vec::new();
        let mut keep = |kind, configured: SocketAddr, fd: OwnedFd, bound| {
            kept.push(Listener {
                kind,
                configured,
                bound,
                fd,
            });
        };
        for (configured, l) in server.listen.iter().zip(&listeners.http) {
            keep(
                SocketKind::Http,
                *configured,
                l.try_clone()?.into(),
                l.local_addr()?,
            );
        }
        for (configured, l) in server.tls_listen.iter().zip(&listeners.tls) {
            keep(
                SocketKind::Tls,
                *configured,
                l.try_clone()?.into(),
                l.local_addr()?,
            );
        }
        for (configured, s) in server.tls_listen.iter().zip(&listeners.quic) {
            keep(
                SocketKind::Quic,
                *configured,
                s.try_clone()?.into(),
                s.local_addr()?,
            );
        }
        if let (Some(configured), Some(l)) = (server.admin, &listeners.admin) {
            keep(
                SocketKind::Admin,
                configured,
                l.try_clone()?.into(),
                l.local_addr()?,
            );
        }
        Ok(Upgrader {
            invocation,
            listeners: kept,
            pid_file: server.pid_file.clone(),
            parent,
            quic_waits,
            upgrades: Family::default(),
        })
    }

    /// The hooks `run` calls; spawns nothing until the node is ready.
    pub fn start(self) -> Started {
        let (handed_tx, handed_over) = oneshot::channel();
        let (quic_go_tx, quic_go) = watch::channel(!self.quic_waits);
        // Set once a child took over; told when our QUIC sockets are free.
        let successor: Arc<parking_lot::Mutex<Option<tokio::net::UnixStream>>> = Arc::default();
        let pid_file = self.pid_file.clone().map(PidFile);
        let upgrades = self.upgrades.clone();
        let release_to = successor.clone();
        let on_ready = {
            let pid_file = pid_file.clone();
            Box::new(move || {
                // Before the pid file says we can take a USR2.
                let usr2 =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2());
                if let Some(pid_file) = &pid_file {
                    match pid_file.write() {
                        Ok(()) => tracing::info!(path = %pid_file.0.display(), "pid file written"),
                        Err(e) => {
                            tracing::error!(path = %pid_file.0.display(), error = %e, "cannot write the pid file")
                        }
                    }
                }
                let pid = std::process::id();
                let Upgrader {
                    invocation,
                    listeners,
                    parent,
                    upgrades,
                    ..
                } = self;
                if let Some(parent) = parent {
                    upgrades.get_or_create(&ResultLabels { result: "ok" }).inc();
                    sd_notify(&format!("MAINPID={pid}\nREADY=1\n"));
                    tokio::spawn(follow_parent(parent, quic_go_tx));
                } else {
                    sd_notify("READY=1\n");
                }
                match usr2 {
                    Ok(usr2) => {
                        let supervisor = Supervisor {
                            invocation,
                            listeners,
                            upgrades,
                            successor,
                        };
                        tokio::spawn(supervisor.serve(usr2, handed_tx));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot watch SIGUSR2: upgrades off"),
                }
            }) as Box<dyn FnOnce() + Send>
        };
        let on_quic_released = Box::new(move || {
            if let Some(mut child) = release_to.lock().take() {
                tokio::spawn(async move {
                    let _ = child.write_all(b"released\n").await;
                    // Kept open until we exit: EOF would say the same.
                    std::future::pending::<()>().await;
                    drop(child);
                });
            }
        }) as Box<dyn FnOnce() + Send>;
        Started {
            lifecycle: Lifecycle {
                register: Some(Box::new(move |registry: &mut Registry| {
                    registry.sub_registry_with_prefix("strata_edge").register(
                        "upgrades",
                        "Binary upgrades by SIGUSR2: ok (counted by the new process), failed (by the old one, which keeps serving)",
                        upgrades,
                    );
                })),
                on_ready: Some(on_ready),
                quic_go: Some(quic_go),
                on_quic_released: Some(on_quic_released),
            },
            handed_over,
            pid_file,
        }
    }
}

/// Tells the parent we are ready, then waits for it to release its QUIC
/// sockets (`released`, or EOF when it exits).
async fn follow_parent(parent: ParentLink, quic_go: watch::Sender<bool>) {
    let pid = std::process::id();
    let stream = parent
        .stream
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixStream::from_std(parent.stream));
    let mut stream = match stream {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "upgrade: lost the link to the old process");
            let _ = quic_go.send(true);
            return;
        }
    };
    if let Err(e) = stream.write_all(format!("ready {pid}\n").as_bytes()).await {
        tracing::error!(error = %e, "upgrade: cannot tell the old process we are ready");
    }
    let mut lines = BufReader::new(stream).lines();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) if line == "released" => break,
            Ok(Some(_)) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    if !*quic_go.borrow() {
        tracing::info!("upgrade: the old process released its HTTP/3 sockets; serving HTTP/3");
    }
    let _ = quic_go.send(true);
}

/// Watches SIGUSR2 in a running node and carries out upgrades.
struct Supervisor {
    invocation: Invocation,
    listeners: Vec<Listener>,
    upgrades: Family<ResultLabels, Counter>,
    successor: Arc<parking_lot::Mutex<Option<tokio::net::UnixStream>>>,
}

impl Supervisor {
    async fn serve(self, mut usr2: tokio::signal::unix::Signal, handed_over: oneshot::Sender<()>) {
        while usr2.recv().await.is_some() {
            tracing::info!(exe = %self.invocation.exe.display(), "SIGUSR2: upgrading: starting the new binary");
            let attempt = self.attempt();
            tokio::pin!(attempt);
            let outcome = loop {
                tokio::select! {
                    outcome = &mut attempt => break outcome,
                    Some(()) = usr2.recv() => {
                        tracing::warn!("SIGUSR2 ignored: an upgrade is already in progress");
                    }
                }
            };
            match outcome {
                Ok((child_pid, link)) => {
                    tracing::info!(
                        child_pid,
                        "upgrade: the new process is ready; draining this one"
                    );
                    *self.successor.lock() = Some(link);
                    let _ = handed_over.send(());
                    // Draining now: nothing more to start.
                    while usr2.recv().await.is_some() {
                        tracing::warn!(
                            "SIGUSR2 ignored: this process is draining after an upgrade"
                        );
                    }
                    return;
                }
                Err(why) => {
                    tracing::error!(why = %why, "upgrade failed: this process keeps serving");
                    self.upgrades
                        .get_or_create(&ResultLabels { result: "failed" })
                        .inc();
                }
            }
        }
    }

    /// Starts the child and hands it the sockets; `Ok` once it is ready.
    async fn attempt(&self) -> Result<(u32, tokio::net::UnixStream), String> {
        let name = format!(
            "strata-upgrade-{}-{:016x}",
            std::process::id(),
            rand::random::<u64>()
        );
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .map_err(|e| format!("socket name: {e}"))?;
        let listener = std::os::unix::net::UnixListener::bind_addr(&addr)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                tokio::net::UnixListener::from_std(l)
            })
            .map_err(|e| format!("listen for the new process: {e}"))?;
        let mut child = tokio::process::Command::new(&self.invocation.exe)
            .args(&self.invocation.args)
            .env(SOCKET_ENV, &name)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.invocation.exe.display()))?;
        let child_pid = child.id().unwrap_or_default();
        // Should this process stop (SIGTERM) mid-attempt, the half-started
        // one must not stay behind serving on its own.
        let mut guard = KillUnlessReady(Some(child_pid));
        let handshake = async {
            let (stream, _) = listener
                .accept()
                .await
                .map_err(|e| format!("accept: {e}"))?;
            let peer = rustix::net::sockopt::socket_peercred(&stream)
                .map_err(|e| format!("peer credentials: {e}"))?;
            if peer.uid != rustix::process::getuid() {
                return Err(format!(
                    "a process of another user (uid {}) connected",
                    peer.uid.as_raw()
                ));
            }
            let stream = stream.into_std().map_err(|e| e.to_string())?;
            stream.set_nonblocking(false).map_err(|e| e.to_string())?;
            send_sockets(&stream, &self.listeners).map_err(|e| format!("send sockets: {e}"))?;
            stream.set_nonblocking(true).map_err(|e| e.to_string())?;
            let stream = tokio::net::UnixStream::from_std(stream).map_err(|e| e.to_string())?;
            let mut reader = BufReader::new(stream);
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .await
                .map_err(|e| format!("read: {e}"))?;
            if !line.starts_with("ready ") {
                return Err("the new process closed the link before it was ready".to_owned());
            }
            Ok(reader.into_inner())
        };
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(READY_TIMEOUT, handshake) => match outcome {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("the new process was not ready within {READY_TIMEOUT:?}")),
            },
            status = child.wait() => Err(match status {
                Ok(status) => format!("the new process exited ({status}) before it was ready"),
                Err(e) => format!("the new process: {e}"),
            }),
        };
        match outcome {
            Ok(link) => {
                guard.0 = None;
                Ok((child_pid, link))
            }
            Err(why) => {
                // Killed and reaped here; its pid may be reused after.
                guard.0 = None;
                let _ = child.start_kill();
                let _ = child.wait().await;
                Err(why)
            }
        }
    }
}

/// Kills the child it names when dropped armed.
struct KillUnlessReady(Option<u32>);

impl Drop for KillUnlessReady {
    fn drop(&mut self) {
        let pid = self
            .0
            .and_then(|pid| rustix::process::Pid::from_raw(pid as i32));
        if let Some(pid) = pid {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// One message with every socket, then the list that names them.
fn send_sockets(
    stream: &std::os::unix::net::UnixStream,
    listeners: &[Listener],
) -> std::io::Result<()> {
    let mut text = String::new();
    for l in listeners {
        text.push_str(&format!(
            "{} {} {}\n",
            l.kind.as_str(),
            l.configured,
            l.bound
        ));
    }
    text.push('\n');
    let fds: Vec<_> = listeners.iter().map(|l| l.fd.as_fd()).collect();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)) {
        return Err(bad_handover("too many sockets"));
    }
    let sent = rustix::net::sendmsg(
        stream,
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        rustix::net::SendFlags::empty(),
    )?;
    (&*stream).write_all(&text.as_bytes()[sent..])
}

/// The pid file (`server.pid_file`, `--pid-file`).
#[derive(Clone)]
pub struct PidFile(pub PathBuf);

impl PidFile {
    /// Written whole or not at all: a temporary file renamed over it.
    fn write(&self) -> std::io::Result<()> {
        let mut tmp = self.0.clone().into_os_string();
        tmp.push(format!(".{}.tmp", std::process::id()));
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
        std::fs::rename(&tmp, &self.0).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }

    /// On exit: removed unless a newer process has written its own pid.
    pub fn remove_if_ours(&self) {
        let ours = std::fs::read_to_string(&self.0)
            .map(|text| text.trim() == std::process::id().to_string())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// `sd_notify(3)`: a datagram to `NOTIFY_SOCKET` when systemd gave one
/// (`Type=notify`; an upgrade's `MAINPID=` needs `NotifyAccess=all`).
pub fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = (|| {
        let socket = std::os::unix::net::UnixDatagram::unbound()?;
        let bytes = path.as_encoded_bytes();
        let addr = match bytes.strip_prefix(b"@") {
            Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name)?,
            None => std::os::unix::net::SocketAddr::from_pathname(&path)?,
        };
        socket.send_to_addr(state.as_bytes(), &addr)
    })();
    if let Err(e) = sent {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

#[cfg(test)]
mod tests {
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
}
