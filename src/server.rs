//! The composition root: builds the edge from its configuration and runs
//! its front doors and admin listener until shutdown. `main` calls [`run`];
//! tests call it with sockets bound to port 0.

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
        let bind = |addr: &std::net::SocketAddr| {
            std::net::TcpListener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("bind {addr}: {e}")))
        };
        let tls: Vec<std::net::TcpListener> = server
            .tls_listen
            .iter()
            .map(bind)
            .collect::<Result<_, _>>()?;
        // UDP on the port TCP got, so `tls_listen = ["[::]:0"]` works too.
        let quic = if server.h3.enabled {
            tls.iter()
                .map(|l| {
                    let addr = l.local_addr()?;
                    std::net::UdpSocket::bind(addr)
                        .map_err(|e| std::io::Error::new(e.kind(), format!("bind udp {addr}: {e}")))
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(EdgeListeners {
            http: server.listen.iter().map(bind).collect::<Result<_, _>>()?,
            tls,
            admin: server.admin.as_ref().map(bind).transpose()?,
            quic,
        })
    }
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Run an edge until `shutdown` resolves, then drain for `shutdown_grace`.
pub async fn run(
    config: EdgeConfig,
    listeners: EdgeListeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ConfigError> {
    install_crypto_provider();
    config.validate()?;
    let mut registry = Registry::default();
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
    let app = Arc::new(PingoraApp::new(
        edge.clone(),
        config.server.h2c,
        config.server.proxy_protocol_nets()?,
        admission,
    ));
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
            h3_tasks.push(tokio::spawn(async move {
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

    shutdown.await;
    tracing::info!(grace = ?config.server.shutdown_grace, "shutting down: no new connections, draining");
    admin_state.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    // Connections finish their current response; give them the grace period.
    let deadline = tokio::time::Instant::now() + config.server.shutdown_grace;
    while Arc::strong_count(&app) > 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // HTTP/3 listeners sent GOAWAY and drain on their own; cut what is left at the deadline.
    for mut task in h3_tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            task.abort();
        }
    }
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
