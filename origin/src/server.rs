//! Run the origin: ingest listeners, the store, playback and admin HTTP.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::{OriginConfig, OriginConfigError};
use crate::http::{admin_router, playback_router, AdminState, HttpMetrics, PlaybackState};
use crate::ingest::{self, IngestAuth, IngestMetrics, PublishTarget};
use crate::store::Store;

/// Sockets the origin serves on, bound by the caller (tests bind port 0).
pub struct OriginListeners {
    pub http: std::net::TcpListener,
    pub admin: Option<std::net::TcpListener>,
    pub rtmp: Option<std::net::TcpListener>,
    pub srt: Option<std::net::UdpSocket>,
}

impl OriginListeners {
    pub fn bind(config: &OriginConfig) -> std::io::Result<OriginListeners> {
        let tcp = |addr: std::net::SocketAddr| {
            std::net::TcpListener::bind(addr)
                .map_err(|e| std::io::Error::new(e.kind(), format!("bind {addr}: {e}")))
        };
        Ok(OriginListeners {
            http: tcp(config.server.http)?,
            admin: config.server.admin.map(tcp).transpose()?,
            rtmp: Some(tcp(config.ingest.rtmp_listen)?),
            srt: Some(
                std::net::UdpSocket::bind(config.ingest.srt_listen).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("bind udp {}: {e}", config.ingest.srt_listen),
                    )
                })?,
            ),
        })
    }
}

/// Extras for the embedded default (`strata up`).
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOptions {
    /// Loop the bundled clip as channel `demo`.
    pub demo: bool,
    /// Let anyone publish (loopback demo only).
    pub open_ingest: bool,
}

fn io(e: std::io::Error) -> OriginConfigError {
    OriginConfigError::Invalid(e.to_string())
}

/// Run the origin until `shutdown` resolves.
pub async fn run(
    config: OriginConfig,
    listeners: OriginListeners,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), OriginConfigError> {
    config.validate()?;
    let auth = Arc::new(if options.open_ingest {
        IngestAuth::open()
    } else {
        config
            .ingest
            .init()
            .map_err(|e| OriginConfigError::Invalid(e.to_string()))?
    });
    let mut registry = Registry::default();
    let ingest_metrics =
        IngestMetrics::register(registry.sub_registry_with_prefix("strata_origin"));
    let http_metrics = HttpMetrics::register(&mut registry);
    let drm_metrics = crate::drm::http::DrmMetrics::register(&mut registry);
    let keys = crate::keys::KeyService::open(&config.keys)
        .map_err(|e| OriginConfigError::Invalid(format!("keys.state_dir: {e}")))?;
    let store = Store::new(config.store.clone());
    let drm = Arc::new(
        crate::drm::Drm::new(config.encryption.clone(), keys, drm_metrics)
            .with_store(store.clone()),
    );
    store
        .metrics()
        .register(registry.sub_registry_with_prefix("strata_origin"));
    registry
        .sub_registry_with_prefix("strata_origin")
        .register_collector(Box::new(crate::channel_metrics::ChannelCollector::new(
            store.clone(),
        )));
    let target: Arc<dyn PublishTarget> = Arc::new(crate::drm::KeyOnPublish {
        inner: store.clone(),
        drm: drm.clone(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = Vec::new();

    if let Some(rtmp) = listeners.rtmp {
        rtmp.set_nonblocking(true).map_err(io)?;
        let rtmp = tokio::net::TcpListener::from_std(rtmp).map_err(io)?;
        tasks.push(tokio::spawn(ingest::rtmp::serve(
            rtmp,
            target.clone(),
            auth.clone(),
            ingest_metrics.clone(),
            stopped(stop_rx.clone()),
        )));
    }
    if let Some(srt) = listeners.srt {
        srt.set_nonblocking(true).map_err(io)?;
        let srt = tokio::net::UdpSocket::from_std(srt).map_err(io)?;
        let settings = config.ingest.srt_settings();
        let (target, auth, metrics, stop) = (
            target.clone(),
            auth.clone(),
            ingest_metrics.clone(),
            stopped(stop_rx.clone()),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ingest::srt::serve(srt, settings, target, auth, metrics, stop).await {
                tracing::error!(error = %e, "SRT ingest stopped");
            }
        }));
    }
    if options.demo {
        let (target, metrics, stop) = (
            target.clone(),
            ingest_metrics.clone(),
            stopped(stop_rx.clone()),
        );
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ingest::demo::run(target, metrics, stop).await {
                tracing::error!(error = %e, "demo channel stopped");
            }
        }));
    }

    // Reclaim ended channels nobody asks for any more, and rotating keys
    // no player can ask for any more.
    let sweeper = {
        let (store, drm) = (store.clone(), drm.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                store.sweep(SystemTime::now());
                drm.prune_keys();
            }
        })
    };

    listeners.http.set_nonblocking(true).map_err(io)?;
    let http = tokio::net::TcpListener::from_std(listeners.http).map_err(io)?;
    let playback_addr = http.local_addr().map_err(io)?;
    tracing::info!(addr = %playback_addr, "origin playback listening");
    let mut playback = playback_router(Arc::new(PlaybackState {
        store: store.clone(),
        metrics: http_metrics,
        drm: drm.clone(),
    }));
    let mut vod = None;
    if let Some(section) = config.vod.clone() {
        let metrics = crate::vod::http::VodMetrics::register(&mut registry);
        let titles = crate::vod::protect::TitleDrm::new(section.encryption.clone(), drm.clone());
        let library =
            crate::vod::Library::new(section, metrics).map_err(OriginConfigError::Invalid)?;
        let state = Arc::new(crate::vod::http::Vod {
            library: Arc::new(library),
            drm: Some(Arc::new(titles)),
        });
        playback = playback.merge(crate::vod::http::protected_routes(
            state.library.clone(),
            state.drm.clone(),
        ));
        vod = Some(state);
    }
    let steering = match config.steering.clone() {
        Some(section) => Some(Arc::new(
            section
                .init(
                    playback_addr,
                    crate::steering::metrics::SteeringMetrics::register(&mut registry),
                )
                .map_err(OriginConfigError::Invalid)?,
        )),
        None => None,
    };
    if let Some(steering) = &steering {
        playback = playback
            .merge(crate::steering::http::playback_routes(steering.clone()))
            .layer(axum::middleware::from_fn_with_state(
                steering.clone(),
                crate::steering::http::tag_manifests,
            ));
        tasks.push(tokio::spawn(crate::steering::probe::run(
            steering.clone(),
            store.clone(),
            stopped(stop_rx.clone()),
        )));
    }
    let redundancy_metrics = crate::redundancy::RedundancyMetrics::register(&mut registry);
    tasks.push(tokio::spawn(crate::redundancy::run(
        config.redundancy.clone(),
        store.clone(),
        redundancy_metrics,
        stopped(stop_rx.clone()),
    )));
    let stop = stopped(stop_rx.clone());
    tasks.push(tokio::spawn(async move {
        let service = playback.into_make_service_with_connect_info::<std::net::SocketAddr>();
        let _ = axum::serve(http, service)
            .with_graceful_shutdown(stop)
            .await;
    }));
    if let Some(admin) = listeners.admin {
        admin.set_nonblocking(true).map_err(io)?;
        let admin = tokio::net::TcpListener::from_std(admin).map_err(io)?;
        tracing::info!(addr = %admin.local_addr().map_err(io)?, "origin admin listening");
        let router = admin_router(Arc::new(AdminState {
            store: store.clone(),
            registry,
            api_token: config.server.api_token.clone(),
        }))
        .merge(crate::redundancy::admin_routes(store.clone()))
        .merge(crate::drm::http::admin_routes(
            drm.clone(),
            config.server.api_token.clone(),
        ));
        let router = match vod {
            Some(vod) => router.merge(crate::vod::http::admin_routes(
                vod,
                config.server.api_token.clone(),
            )),
            None => router,
        };
        let router = match &steering {
            Some(s) => router.merge(crate::steering::http::admin_routes(
                s.clone(),
                config.server.api_token.clone(),
            )),
            None => router,
        };
        let stop = stopped(stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            let _ = axum::serve(admin, router)
                .with_graceful_shutdown(stop)
                .await;
        }));
    }

    shutdown.await;
    tracing::info!("origin shutting down");
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    sweeper.abort();
    Ok(())
}
