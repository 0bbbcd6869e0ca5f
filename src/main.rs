//! `strata`: one binary for every role. Parses the command line, loads the
//! configuration, and calls the role's `run`; nothing else lives here.

/// mimalloc: per-thread free lists, so a buffer freed on another worker than
/// the one that allocated it does not contend on a glibc arena lock.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata::config::{ByteSize, CertificateConfig, EdgeConfig};
use strata::server::upgrade;
use strata::EdgeListeners;
use strata_origin::config::OriginConfig;
use strata_origin::server::{OriginListeners, RunOptions};

#[derive(Parser)]
#[command(
    name = "strata",
    version,
    about = "Streaming CDN: edge/shield cache, live origin, DRM keys"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an edge or shield node (a shield is an edge whose upstream is the origin).
    Edge(EdgeArgs),
    /// Run an origin: RTMP/SRT ingest, just-in-time HLS/DASH, channel API.
    Origin(OriginArgs),
    /// The embedded default: origin and edge in one process on loopback, with
    /// a built-in live channel `demo`.
    Up {
        /// Where players connect (the edge).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The edge's admin listener.
        #[arg(long, default_value = "127.0.0.1:9091")]
        admin: SocketAddr,
        /// The origin's admin listener (its /metrics, the channel API).
        #[arg(long, default_value = "127.0.0.1:9092")]
        origin_admin: SocketAddr,
        /// RTMP publish listener.
        #[arg(long, default_value = "127.0.0.1:1935")]
        rtmp: SocketAddr,
        /// SRT publish listener (UDP).
        #[arg(long, default_value = "127.0.0.1:9000")]
        srt: SocketAddr,
    },
    /// Issue a fleet-wide change (purge, token keys, TTL overrides, geo rules)
    /// through NATS, signed with the fleet secret; or show the fleet version.
    Ctl(strata::ctl::CtlArgs),
    /// Mint a playback token (Akamai EdgeAuth 2.0) that edges with the same key accept.
    Sign {
        /// The shared key, hex.
        #[arg(long)]
        secret: String,
        /// Paths the token opens, `*` wildcard, `!` between several (e.g. `/live/news/*`).
        #[arg(long)]
        acl: String,
        /// Seconds the token stays valid.
        #[arg(long)]
        ttl: u64,
        /// Bind the token to one client address.
        #[arg(long)]
        ip: Option<std::net::IpAddr>,
        /// Optional session id carried in the token.
        #[arg(long)]
        id: Option<String>,
    },
    /// Validate a configuration file and exit, like `nginx -t`.
    Check {
        /// The file to check.
        #[arg(long)]
        config: PathBuf,
        /// Which role the file configures; by default guessed from its sections.
        #[arg(long, value_parser = ["edge", "origin"])]
        role: Option<String>,
    },
}

#[derive(Args)]
struct EdgeArgs {
    /// TOML configuration (conf/edge.toml documents every key); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Cleartext listener (HTTP/1.1 and h2c); repeat for several.
    #[arg(long)]
    listen: Vec<SocketAddr>,
    /// TLS listener (HTTP/2 and HTTP/1.1 by ALPN on TCP, HTTP/3 on UDP at the
    /// same address unless --no-h3); needs --cert and --key.
    #[arg(long, requires_all = ["cert", "key"])]
    tls_listen: Vec<SocketAddr>,
    /// Serve no HTTP/3 (QUIC) on the TLS addresses and advertise none.
    #[arg(long)]
    no_h3: bool,
    /// PEM certificate chain for --tls-listen.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// PEM private key for --tls-listen.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Origin or shield URL; repeat to make a pool.
    #[arg(long)]
    upstream: Vec<String>,
    /// Admin listener (/metrics, /healthz, /readyz, control API under /api).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Bearer token the control API requires (server.admin_token); prefer
    /// the environment variable, which `ps` does not show.
    #[arg(long, env = "STRATA_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// Cache memory, e.g. 512MiB or 4GB.
    #[arg(long)]
    cache_size: Option<ByteSize>,
    /// This node's name in Via and Cache-Status.
    #[arg(long)]
    node_id: Option<String>,
    /// Write the pid here once serving (server.pid_file); `kill -USR2` that
    /// pid to upgrade to the binary now at the path this one was started from.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// On SIGTERM/SIGINT or after an upgrade, how long in-flight responses
    /// may take to finish, e.g. 30s (server.drain_timeout).
    #[arg(long, value_parser = humantime::parse_duration)]
    drain_timeout: Option<std::time::Duration>,
}

#[derive(Args)]
struct OriginArgs {
    /// TOML configuration (conf/origin.toml documents every key); flags override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Playback listener (/live/…, /time).
    #[arg(long)]
    http: Option<SocketAddr>,
    /// RTMP publish listener.
    #[arg(long)]
    rtmp: Option<SocketAddr>,
    /// SRT publish listener (UDP).
    #[arg(long)]
    srt: Option<SocketAddr>,
    /// Admin listener (/metrics, /healthz, /readyz, channel API).
    #[arg(long)]
    admin: Option<SocketAddr>,
}

impl OriginArgs {
    fn into_config(self) -> anyhow::Result<OriginConfig> {
        let mut config = match &self.config {
            Some(path) => OriginConfig::read(path)?,
            None => OriginConfig::default(),
        };
        if let Some(http) = self.http {
            config.server.http = http;
        }
        if let Some(rtmp) = self.rtmp {
            config.ingest.rtmp_listen = rtmp;
        }
        if let Some(srt) = self.srt {
            config.ingest.srt_listen = srt;
        }
        if self.admin.is_some() {
            config.server.admin = self.admin;
        }
        config.validate()?;
        Ok(config)
    }
}

impl EdgeArgs {
    fn into_config(self) -> Result<EdgeConfig, strata::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => EdgeConfig::read(path)?,
            None => EdgeConfig::default(),
        };
        if !self.listen.is_empty() {
            config.server.listen = self.listen;
        }
        if !self.tls_listen.is_empty() {
            config.server.tls_listen = self.tls_listen;
        }
        if let (Some(cert), Some(key)) = (self.cert, self.key) {
            config
                .server
                .certificates
                .insert(0, CertificateConfig { cert, key });
        }
        if !self.upstream.is_empty() {
            config.upstream.urls = self.upstream;
        }
        if self.admin.is_some() {
            config.server.admin = self.admin;
        }
        if let Some(token) = self.admin_token {
            config.server.admin_token =
                Some(strata::admin::AdminToken::new(&token).map_err(|e| {
                    strata::config::ConfigError::Invalid {
                        key: "server.admin_token".into(),
                        message: e.to_string(),
                    }
                })?);
        }
        if let Some(size) = self.cache_size {
            config.cache.size = size;
            config.cache.max_object_size = config.cache.max_object_size.min(size);
        }
        if self.no_h3 {
            config.server.h3.enabled = false;
        }
        if let Some(node_id) = self.node_id {
            config.server.node_id = node_id;
        }
        if self.pid_file.is_some() {
            config.server.pid_file = self.pid_file;
        }
        if let Some(drain) = self.drain_timeout {
            config.server.drain_timeout = drain;
        }
        config.validate()?;
        Ok(config)
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// Transparent huge pages off for this process, as `MIMALLOC_ALLOW_THP=0`
/// does (`MIMALLOC_ALLOW_THP=1` keeps them). mimalloc hands freed memory
/// back to the kernel after a second; with huge pages each piece it takes
/// again comes back as a huge page the kernel zeroes whole. The origin's
/// live store frees and allocates media all the time (~12 MB/s at 32
/// channels), and that zeroing was over half of its CPU: 24 % of a core
/// with huge pages, 14 % without (benches/README.md, "Ingest cost per
/// channel").
fn huge_pages_off() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some_and(|v| v == "1") {
        return;
    }
    if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
        tracing::warn!(error = %e, "could not turn transparent huge pages off for this process");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _log = strata::logging::init();
    huge_pages_off();
    let result: anyhow::Result<()> = match cli.command {
        Command::Check { config, role } => check(&config, role.as_deref()),
        Command::Edge(args) => edge(args),
        Command::Origin(args) => origin(args),
        Command::Ctl(args) => runtime().and_then(|rt| {
            rt.block_on(strata::ctl::run(args))
                .map_err(|e| anyhow::anyhow!("ctl: {e}"))
        }),
        Command::Up {
            listen,
            admin,
            origin_admin,
            rtmp,
            srt,
        } => up(listen, [admin, origin_admin], rtmp, srt),
        Command::Sign {
            secret,
            acl,
            ttl,
            ip,
            id,
        } => strata::policy::sign(
            &secret,
            &acl,
            std::time::Duration::from_secs(ttl),
            std::time::SystemTime::now(),
            ip,
            id.as_deref(),
        )
        .map(|token| println!("{token}"))
        .map_err(|e| anyhow::anyhow!("{e}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("strata: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn check(path: &std::path::Path, role: Option<&str>) -> anyhow::Result<()> {
    let role = match role {
        Some(role) => role.to_owned(),
        None => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let table: toml::Table =
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            let origin = ["ingest", "store", "steering"]
                .iter()
                .any(|k| table.contains_key(*k));
            if origin { "origin" } else { "edge" }.to_owned()
        }
    };
    // `check` has no flags to merge: when a key a flag could supply is what
    // is missing, say so, since `strata ROLE --config FILE --flag` would start.
    let error = if role == "origin" {
        OriginConfig::load(path).err().map(|e| e.to_string())
    } else {
        EdgeConfig::load(path).err().map(|e| e.to_string())
    };
    if let Some(error) = error {
        let flags = if role == "origin" {
            ORIGIN_FLAGS
        } else {
            EDGE_FLAGS
        };
        return Err(match flag_for(&error, flags) {
            Some(flag) => anyhow::anyhow!(
                "{error}\n(no flags are merged by `check`; at start, `strata {role} --config {} {flag}` supplies this key)",
                path.display()
            ),
            None => anyhow::anyhow!("{error}"),
        });
    }
    println!("{}: ok ({role} configuration)", path.display());
    Ok(())
}

/// Config keys the `strata edge` flags set (the flags go on top of the file).
const EDGE_FLAGS: &[(&str, &str)] = &[
    ("upstream.urls", "--upstream URL"),
    ("server.listen", "--listen ADDR"),
    (
        "server.tls_listen",
        "--tls-listen ADDR --cert PEM --key PEM",
    ),
    ("server.certificates", "--cert PEM --key PEM"),
    ("server.admin_token", "--admin-token TOKEN"),
    ("server.admin", "--admin ADDR"),
    ("server.node_id", "--node-id NAME"),
    ("server.pid_file", "--pid-file PATH"),
    ("server.drain_timeout", "--drain-timeout DURATION"),
    ("cache.size", "--cache-size SIZE"),
    ("cache.max_object_size", "--cache-size SIZE"),
];

/// Config keys the `strata origin` flags set.
const ORIGIN_FLAGS: &[(&str, &str)] = &[
    ("server.http", "--http ADDR"),
    ("server.admin", "--admin ADDR"),
    ("ingest.rtmp_listen", "--rtmp ADDR"),
    ("ingest.srt_listen", "--srt ADDR"),
];

/// The flag that sets the key an error message starts with, if one does.
fn flag_for(error: &str, flags: &[(&str, &'static str)]) -> Option<&'static str> {
    let key = error.split(':').next()?.trim();
    flags
        .iter()
        .find(|(k, _)| key == *k || key.starts_with(&format!("{k}[")))
        .map(|(_, flag)| *flag)
}

fn origin(args: OriginArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let listeners = OriginListeners::bind(&config)?;
    runtime()?.block_on(strata_origin::server::run(
        config,
        listeners,
        RunOptions::default(),
        shutdown_signal(),
    ))?;
    Ok(())
}

/// Bind `addr`, or a free port on the same host when it is taken.
fn tcp_or_any(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    std::net::TcpListener::bind(addr)
        .or_else(|_| std::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0)))
}

/// `admin`: the edge's and the origin's admin listeners.
fn up(
    listen: SocketAddr,
    [admin, origin_admin]: [SocketAddr; 2],
    rtmp: SocketAddr,
    srt: SocketAddr,
) -> anyhow::Result<()> {
    let origin_http = std::net::TcpListener::bind(SocketAddr::new(listen.ip(), 0))?;
    let origin_addr = origin_http.local_addr()?;
    let rtmp = tcp_or_any(rtmp)?;
    let srt = std::net::UdpSocket::bind(srt)
        .or_else(|_| std::net::UdpSocket::bind(SocketAddr::new(srt.ip(), 0)))?;
    let (rtmp_addr, srt_addr) = (rtmp.local_addr()?, srt.local_addr()?);
    let origin_admin = tcp_or_any(origin_admin)?;
    let origin_admin_addr = origin_admin.local_addr()?;
    let origin_listeners = OriginListeners {
        http: origin_http,
        admin: Some(origin_admin),
        rtmp: Some(rtmp),
        srt: Some(srt),
    };

    let mut edge = EdgeConfig::default();
    edge.server.node_id = "strata-up".into();
    edge.upstream.urls = vec![format!("http://{origin_addr}")];
    edge.cache.size = ByteSize(256 << 20);
    let edge_http = std::net::TcpListener::bind(listen)
        .map_err(|e| anyhow::anyhow!("bind {listen}: {e} (choose another with --listen)"))?;
    let edge_admin = tcp_or_any(admin)?;
    let (edge_addr, admin_addr) = (edge_http.local_addr()?, edge_admin.local_addr()?);
    edge.server.listen = vec![edge_addr];
    edge.server.admin = Some(admin_addr);
    let edge_listeners = EdgeListeners {
        quic: vec![],
        http: vec![edge_http],
        tls: vec![],
        admin: Some(edge_admin),
    };

    println!("Strata is up: origin and edge on loopback, live channel `demo` playing.");
    println!("  HLS   http://{edge_addr}/live/demo/master.m3u8");
    println!("  DASH  http://{edge_addr}/live/demo/manifest.mpd");
    println!("  HLS (MPEG-TS, legacy players)  http://{edge_addr}/live/demo/master-ts.m3u8");
    println!("Publish your own channel (then play /live/{{channel}}/master.m3u8):");
    println!("  ffmpeg -re -i INPUT -c:v libx264 -g 50 -c:a aac -f flv rtmp://{rtmp_addr}/live/mychannel");
    println!("  srt://{srt_addr}?streamid=#!::r=live/mychannel,m=publish");
    println!("Metrics  http://{admin_addr}/metrics (edge)  http://{origin_admin_addr}/metrics (origin)   (Ctrl-C to stop)");

    runtime()?.block_on(async move {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let options = RunOptions {
            demo: true,
            open_ingest: true,
        };
        let origin = tokio::spawn(strata_origin::server::run(
            OriginConfig::default(),
            origin_listeners,
            options,
            stopped(stop_rx.clone()),
        ));
        let edge = tokio::spawn(strata::run(edge, edge_listeners, stopped(stop_rx.clone())));
        shutdown_signal().await;
        let _ = stop_tx.send(true);
        let (origin, edge) = tokio::join!(origin, edge);
        origin??;
        edge??;
        anyhow::Ok(())
    })
}

/// SIGUSR2 upgrades in place (strata::server::upgrade); SIGTERM drains.
fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    let invocation = upgrade::Invocation::at_startup();
    let config = args.into_config()?;
    let (parent, mut inherited) = upgrade::ParentLink::from_env()?;
    let listeners = EdgeListeners::bind_inheriting(&config.server, &mut inherited)?;
    inherited.close_unused();
    let upgrader = upgrade::Upgrader::new(
        invocation,
        &config.server,
        &listeners,
        parent,
        inherited.took_quic(),
    )?;
    runtime()?.block_on(async move {
        let started = upgrader.start();
        let handed_over = started.handed_over;
        let stop = async move {
            tokio::select! {
                () = shutdown_signal() => {}
                Ok(()) = handed_over => {}
            }
        };
        let result = strata::server::run_with(config, listeners, stop, started.lifecycle).await;
        if let Some(pid_file) = started.pid_file {
            pid_file.remove_if_ours();
        }
        result
    })?;
    Ok(())
}
