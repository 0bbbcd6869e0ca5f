//! `strata`: one binary for every role. Parses the command line, loads the
//! configuration, and calls the role's `run`; nothing else lives here.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use strata::config::{ByteSize, CertificateConfig, EdgeConfig};
use strata::EdgeListeners;

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
    /// Validate a configuration file and exit, like `nginx -t`.
    Check {
        /// The file to check.
        #[arg(long)]
        config: PathBuf,
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
    /// Admin listener (/metrics, /healthz, /readyz).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// Cache memory, e.g. 512MiB or 4GB.
    #[arg(long)]
    cache_size: Option<ByteSize>,
    /// This node's name in Via and Cache-Status.
    #[arg(long)]
    node_id: Option<String>,
}

impl EdgeArgs {
    fn into_config(self) -> Result<EdgeConfig, strata::config::ConfigError> {
        let mut config = match &self.config {
            Some(path) => EdgeConfig::load(path)?,
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
        config.validate()?;
        Ok(config)
    }
}

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(true)
        .init();
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result: anyhow::Result<()> = match cli.command {
        Command::Check { config } => check(&config),
        Command::Edge(args) => edge(args),
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

fn check(path: &std::path::Path) -> anyhow::Result<()> {
    EdgeConfig::load(path)?;
    println!("{}: ok (edge configuration)", path.display());
    Ok(())
}

fn edge(args: EdgeArgs) -> anyhow::Result<()> {
    let config = args.into_config()?;
    let listeners = EdgeListeners::bind(&config.server)?;
    runtime()?.block_on(strata::run(config, listeners, shutdown_signal()))?;
    Ok(())
}
