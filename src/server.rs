//! The composition root: builds the edge from its configuration and runs
//! its front doors and admin listener until shutdown. `main` calls [`run`];
//! tests call it with sockets bound to port 0. [`upgrade`] hands a running
//! node's sockets to a new binary (SIGUSR2).

pub mod upgrade;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pingora::listeners::tls::Acceptor;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::cache::disk::DiskTier;
use crate::config::{ConfigError, EdgeConfig, ServerConfig};
use crate::edge::Edge;
use crate::frontend::pingora::PingoraApp;
use crate::metrics::EdgeMetrics;
use crate::upstream::UpstreamPool;
use crate::{admin, frontend};

/// Install the one TLS crypto provider Strata uses (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Sockets the edge serves on, bound by the caller (tests bind port 0).
pub struct EdgeListeners {
    pub http: Vec<std::net::TcpListener>,
    pub tls: Vec<std::net::TcpListener>,
    pub admin: Option<std::net::TcpListener>,
    /// HTTP/3 (QUIC) sockets, on the same addresses as `tls`.
    pub quic: Vec<std::net::UdpSocket>,
}

impl EdgeListeners {
    pub fn bind(server: &ServerConfig) -> std::io::Result<EdgeListeners> {
        Self::bind_inheriting(server, &mut upgrade::Inherited::default())
    }

    /// Like [`EdgeListeners::bind`], but an address the old process of an
    /// upgrade listens on is taken from `inherited` instead of bound.
    pub fn bind_inheriting(
        server: &ServerConfig,
        inherited: &mut upgrade::Inherited,
    ) -> std::io::Result<EdgeListeners> {
        use upgrade::SocketKind;
        let mut tcp =
            |kind: SocketKind, addr: &std::net::SocketAddr| match inherited.take(kind, *addr) {
                Some(fd) => Ok(std::net::TcpListener::from(fd)),
                None => std::net::TcpListener::bind(addr)
                    .map_err(|e| std::io::Error::new(e.kind(), format!("bind {addr}: {e}"))),
            };
        let tls: Vec<std::net::TcpListener> = server
            .tls_listen
            .iter()
            .map(|addr| tcp(SocketKind::Tls, addr))
            .collect::<Result<_, _>>()?;
        let http = server
            .listen
            .iter()
            .map(|addr| tcp(SocketKind::Http, addr))
            .collect::<Result<_, _>>()?;
        let admin = server
            .admin
            .as_ref()
            .map(|addr| tcp(SocketKind::Admin, addr))
            .transpose()?;
        // UDP on the port TCP got, so `tls_listen = ["[::]:0"]` works too.
        let quic = if server.h3.enabled {
            server
                .tls_listen
                .iter()
                .zip(&tls)
                .map(|(configured, l)| {
                    let addr = l.local_addr()?;
                    let inherited = inherited
                        .take(SocketKind::Quic, *configured)
                        .or_else(|| inherited.take(SocketKind::Quic, addr));
                    match inherited {
                        Some(fd) => Ok(std::net::UdpSocket::from(fd)),
                        None => std::net::UdpSocket::bind(addr).map_err(|e| {
                            std::io::Error::new(e.kind(), format!("bind udp {addr}: {e}"))
                        }),
                    }
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(EdgeListeners {
            http,
            tls,
            admin,
            quic,
        })
    }
}

/// Adds metrics to a node's registry.
pub type RegisterMetrics = Box<dyn FnOnce(&mut Registry) + Send>;

/// Hooks around [`run_with`] for the process that owns the node (`strata
/// edge`): its upgrade machinery ([`upgrade`]). Tests leave them empty.
#[derive(Default)]
pub struct Lifecycle {
    /// Adds metrics to the node's registry.
    pub register: Option<RegisterMetrics>,
    /// Called once the node serves: every listener up, configuration loaded.
    pub on_ready: Option<Box<dyn FnOnce() + Send>>,
    /// HTTP/3 reads its sockets only once this turns true (or its sender is
    /// gone): an upgrade's new process waits for the old one to let go.
    pub quic_go: Option<watch::Receiver<bool>>,
    /// Called during the drain once this node no longer reads its HTTP/3 sockets.
    pub on_quic_released: Option<Box<dyn FnOnce() + Send>>,
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Run an edge until `shutdown` resolves, then drain for `drain_timeout`.
pub async fn run(
    config: EdgeConfig,
    listeners: EdgeListeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    run_with(config, listeners, shutdown, Lifecycle::default()).await
}

/// [`run`], telling `lifecycle` when the node is ready and how it drains.
pub async fn run_with(
    config: EdgeConfig,
    listeners: EdgeListeners,
    shutdown: impl Future<Output = ()>,
    mut lifecycle: Lifecycle,
) -> Result<(), ConfigError> {
    install_crypto_provider();
    config.validate()?;
    let mut registry = Registry::default();
    if let Some(register) = lifecycle.register.take() {
        register(&mut registry);
    }
    let metrics = Arc::new(EdgeMetrics::register(&mut registry));
    let admin_metrics = admin::AdminMetrics::register(&mut registry);
    let fleet_metrics = crate::fleet::FleetMetrics::register(&mut registry);
    let pool = Arc::new(
        UpstreamPool::new(config.upstream.clone(), metrics.upstream.clone())
            .map_err(|e| invalid("upstream.urls", e.to_string()))?,
    );
    let policy = config.policy(&mut registry)?;
    let geo_watch = policy
        .as_ref()
        .and_then(|p| p.geo_db())
        .map(|db| db.watch(std::time::Duration::from_secs(5)));
    let mut edge = Edge::new(
        config.server.node_id.clone(),
        config.cache.clone(),
        pool.clone(),
        metrics,
        policy,
    )?;
    if let Some(disk) = &config.cache.disk {
        let opened = DiskTier::open(
            disk,
            config.cache.max_object_size.0,
            edge.metrics().cache.clone(),
        )
        .await;
        edge.set_disk(match opened {
            Ok(tier) => {
                tracing::info!(path = %disk.path.display(), size = %disk.size, "disk cache open");
                Some(Arc::new(tier))
            }
            Err(e) => {
                // Never a reason not to serve: memory alone, counted.
                tracing::error!(error = %e, "disk cache unusable: serving from memory and upstream only");
                let op = crate::metrics::OpLabels { op: "open" };
                edge.metrics().cache.disk.errors.get_or_create(&op).inc();
                None
            }
        });
    }
    let qoe = config.qoe.enabled.then(|| {
        let (geo, trusted) = policy_geo(&edge);
        Arc::new(crate::qoe::Qoe::new(
            config.qoe.clone(),
            &mut registry,
            geo,
            trusted,
        ))
    });
    let qoe_expiry = qoe.clone().map(crate::qoe::Qoe::expire_forever);
    edge.set_qoe(qoe);
    if let Some(quic) = listeners.quic.first() {
        let port = quic
            .local_addr()
            .map_err(|e| invalid("server.tls_listen", e.to_string()))?
            .port();
        edge.set_alt_svc(Some(config.server.h3.alt_svc(port)));
    }
    let edge = Arc::new(edge);
    // The saved fleet state first, then the stream read to its end (or the
    // engine given up on): nothing is served on a state older than the
    // fleet's when the engine can say what the fleet's is.
    let fleet = crate::fleet::Fleet::start(
        edge.clone(),
        config.server.node_id.clone(),
        config.fleet.clone(),
        admin::configured_geo_rules(&config),
        fleet_metrics,
        admin_metrics.clone(),
    )
    .await
    .map_err(|e| invalid("fleet.state_file", e))?;
    fleet.catch_up().await;
    let sighup = tokio::spawn(reload_on_sighup(edge.clone()));
    let health = tokio::spawn(pool.clone().check_health_forever());

    let admission =
        frontend::admission::Admission::new(config.server.limits.clone(), &mut registry);
    let app = Arc::new(
        PingoraApp::new(
            edge.clone(),
            config.server.h2c,
            config.server.proxy_protocol_nets()?,
            admission,
        )
        .with_http1(config.server.http1),
    );
    let tls = if listeners.tls.is_empty() {
        None
    } else {
        let rustls_config =
            frontend::tls::server_config(&config.server.certificates, &[b"h2", b"http/1.1"])
                .map_err(|e| invalid("server.certificates", e))?;
        Some(Arc::new(Acceptor::from_server_config(rustls_config)))
    };

    let h3_tls = if listeners.quic.is_empty() {
        None
    } else {
        Some(
            frontend::tls::server_config(&config.server.certificates, &[b"h3"])
                .map_err(|e| invalid("server.certificates", e))?,
        )
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let to_tokio = |l: std::net::TcpListener| -> Result<tokio::net::TcpListener, ConfigError> {
        l.set_nonblocking(true)
            .map_err(|e| invalid("server.listen", e.to_string()))?;
        tokio::net::TcpListener::from_std(l).map_err(|e| invalid("server.listen", e.to_string()))
    };
    for listener in listeners.http {
        let listener = to_tokio(listener)?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "edge listening (http/1.1, h2c)");
        tasks.push(tokio::spawn(frontend::pingora::serve(
            listener,
            app.clone(),
            None,
            stop_rx.clone(),
        )));
    }
    for listener in listeners.tls {
        let listener = to_tokio(listener)?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "edge listening (tls: h2, http/1.1)");
        tasks.push(tokio::spawn(frontend::pingora::serve(
            listener,
            app.clone(),
            tls.clone(),
            stop_rx.clone(),
        )));
    }
    let mut h3_tasks = Vec::new();
    if let Some(rustls_config) = h3_tls {
        for socket in listeners.quic {
            let addr = socket
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_default();
            tracing::info!(%addr, "edge listening (quic: h3)");
            let serve = frontend::h3::serve(
                socket,
                edge.clone(),
                rustls_config.clone(),
                config.server.h3.clone(),
                stop_rx.clone(),
            );
            let mut go = lifecycle.quic_go.clone();
            let mut stop = stop_rx.clone();
            h3_tasks.push(tokio::spawn(async move {
                if let Some(go) = go.as_mut() {
                    tokio::select! {
                        _ = go.wait_for(|go| *go) => {}
                        // Stopped before the old process let go: never read.
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
                if let Err(e) = serve.await {
                    tracing::error!(%addr, error = %e, "HTTP/3 listener failed");
                }
            }));
        }
    }
    let admin_state = Arc::new(admin::AdminState {
        registry,
        edge: edge.clone(),
        ready: AtomicBool::new(true),
        control: admin::Control::new(&config, admin_metrics, fleet),
    });
    if let Some(listener) = listeners.admin {
        let listener = to_tokio(listener)?;
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin listening");
        let router = admin::router(admin_state.clone());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
    }

    if let Some(ready) = lifecycle.on_ready.take() {
        ready();
    }

    shutdown.await;
    let drain = config.server.drain_timeout;
    tracing::info!(
        ?drain,
        "draining: listeners closed, in-flight requests finish"
    );
    admin_state.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    let deadline = tokio::time::Instant::now() + drain;
    // HTTP/3 connections got GOAWAY and drain on their own; cut what is left
    // at the deadline. Then a successor may read the UDP sockets.
    let quic_released = lifecycle.on_quic_released.take();
    let quic_drain = async move {
        for mut task in h3_tasks {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
                let _ = task.await;
            }
        }
        if let Some(released) = quic_released {
            // The endpoint's driver stops reading once it sees the endpoint gone.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            released();
        }
    };
    // Connections finish their current response (kept-alive HTTP/1.1 ones
    // close after it, HTTP/2 ones got GOAWAY); give them until the deadline.
    let tcp_drain = async {
        for task in tasks {
            let _ = task.await;
        }
        while Arc::strong_count(&app) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    };
    tokio::join!(quic_drain, tcp_drain);
    tracing::info!(
        open = Arc::strong_count(&app) - 1,
        "drained (connections still open are cut)"
    );
    admin_state.control.fleet().stop();
    edge.cache().close().await;
    health.abort();
    sighup.abort();
    if let Some(task) = qoe_expiry {
        task.abort();
    }
    if let Some(watch) = geo_watch {
        watch.abort();
    }
    Ok(())
}

/// The edge's geo database and trusted proxies, for QoE's country label.
fn policy_geo(edge: &Edge) -> (Option<Arc<crate::policy::GeoDb>>, Vec<ipnet::IpNet>) {
    edge.policy()
        .map(|p| (p.geo_db(), p.trusted_proxies()))
        .unwrap_or_default()
}

/// SIGHUP reloads the geo database; a bad file keeps the old one.
async fn reload_on_sighup(edge: Arc<Edge>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        let Some(db) = edge.policy().and_then(|p| p.geo_db()) else {
            continue;
        };
        match tokio::task::spawn_blocking(move || db.reload()).await {
            Ok(Ok(())) => tracing::info!("SIGHUP: geo database reloaded"),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "SIGHUP: geo database reload failed, keeping the old one")
            }
            Err(e) => tracing::warn!(error = %e, "SIGHUP: geo reload task failed"),
        }
    }
}
