//! One public UDP socket, one srt-protocol listener per remote peer.
//!
//! srt-tokio 0.4 runs every handshake of a listener in one task; a packet that
//! makes srt-protocol panic there ends that task and with it every connection
//! it delegates packets to. So Strata owns the public socket instead: each
//! datagram is checked by [`guard::inspect`] (malformed ones are dropped,
//! counted and logged within a [`LogBudget`]), and each remote address gets
//! its own srt-tokio listener on loopback, fed through a relay socket that is
//! connected to it. A panic or error in that listener ends one peer only.
//!
//! ```text
//! peer ──UDP──▶ public socket ──inspect──▶ relay (127.0.0.1:a) ──▶ listener (127.0.0.1:b)
//! peer ◀──────── public socket ◀──────────  relay  ◀──────────────  listener
//! ```
//!
//! Only an induction handshake opens a peer. Peers that have not started
//! publishing are capped in number, overall and per IP address, and given
//! [`RelayLimits::handshake_timeout`] to get there; a publishing peer ends
//! with its session (idle timeout, close, kick).

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::{self, JoinSet};
use tracing::instrument::WithSubscriber;
use tracing::{debug, info, warn};

use super::guard::{self, Datagram, MAX_DATAGRAM};
use super::{serve_peer, Shared, PROTOCOL};
use crate::ingest::log_budget::LogBudget;

/// Bounds on peers that have not started publishing yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Most peers in handshake at once.
    pub max_pending: usize,
    /// Most peers in handshake from one IP address.
    pub max_pending_per_ip: usize,
    /// How long a peer may take from its induction to an accepted publish.
    pub handshake_timeout: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_pending: 64,
            max_pending_per_ip: 8,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

struct Peer {
    relay: Arc<UdpSocket>,
    /// Set once the peer's publish was accepted; until then it is pending.
    publishing: Arc<AtomicBool>,
    opened: Instant,
    task: task::AbortHandle,
}

impl Peer {
    fn pending(&self) -> bool {
        !self.publishing.load(Ordering::Acquire)
    }
}

/// Serves SRT publishers on `public` until `shutdown` resolves.
pub(super) async fn run(
    public: UdpSocket,
    shared: Arc<Shared>,
    limits: RelayLimits,
    shutdown: impl Future<Output = ()>,
) {
    let public = Arc::new(public);
    let mut peers: HashMap<SocketAddr, Peer> = HashMap::new();
    let mut by_task: HashMap<task::Id, SocketAddr> = HashMap::new();
    let mut tasks = JoinSet::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut dropped_log = LogBudget::new(10, Duration::from_secs(10));
    let mut sweep = tokio::time::interval(limits.handshake_timeout.min(Duration::from_secs(1)));
    // One byte more than SRT's largest packet, so oversized datagrams show.
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = shutdown.as_mut() => break,
            received = public.recv_from(&mut buf) => {
                let (n, remote) = match received {
                    Ok(x) => x,
                    // e.g. an ICMP error for an earlier reply; the socket is fine.
                    Err(e) => {
                        debug!(error = %e, "SRT receive error");
                        continue;
                    }
                };
                let datagram = &buf[..n];
                let kind = match guard::inspect(datagram) {
                    Ok(kind) => kind,
                    Err(why) => {
                        shared.metrics.packet_dropped(PROTOCOL, why.label());
                        if let Some(held_back) = dropped_log.allow(Instant::now()) {
                            warn!(%remote, reason = %why, held_back, "SRT packet dropped");
                        }
                        continue;
                    }
                };
                if let Some(peer) = peers.get(&remote) {
                    // Never wait on one peer: a full relay buffer drops, as UDP would.
                    if peer.relay.try_send(datagram).is_err() {
                        shared.metrics.packet_dropped(PROTOCOL, "relay_full");
                    }
                    continue;
                }
                if kind != Datagram::Induction {
                    shared.metrics.packet_dropped(PROTOCOL, "unknown_peer");
                    continue;
                }
                let pending = peers.values().filter(|p| p.pending()).count();
                let pending_here = peers
                    .iter()
                    .filter(|(a, p)| a.ip() == remote.ip() && p.pending())
                    .count();
                if pending >= limits.max_pending || pending_here >= limits.max_pending_per_ip {
                    shared.metrics.refused(PROTOCOL, "handshakes_full");
                    if let Some(held_back) = dropped_log.allow(Instant::now()) {
                        warn!(%remote, pending, pending_here, held_back, "SRT handshake refused: too many in progress");
                    }
                    continue;
                }
                match open_peer(remote, &public, &shared, stop_rx.clone(), &mut tasks).await {
                    Ok(peer) => {
                        let _ = peer.relay.try_send(datagram);
                        by_task.insert(peer.task.id(), remote);
                        peers.insert(remote, peer);
                    }
                    Err(e) => warn!(%remote, error = %e, "SRT peer could not be set up"),
                }
            }
            Some(done) = tasks.join_next_with_id(), if !tasks.is_empty() => {
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                let Some(remote) = by_task.remove(&id) else { continue };
                peers.remove(&remote);
                if let Err(e) = done {
                    if e.is_panic() {
                        shared.metrics.refused(PROTOCOL, "peer_panic");
                        warn!(%remote, "SRT peer's protocol task panicked; only this peer was dropped");
                    }
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                for (remote, peer) in &peers {
                    if peer.pending() && now.duration_since(peer.opened) >= limits.handshake_timeout {
                        shared.metrics.refused(PROTOCOL, "handshake_timeout");
                        debug!(%remote, "SRT handshake timed out");
                        peer.task.abort();
                    }
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    for peer in peers.values().filter(|p| p.pending()) {
        peer.task.abort();
    }
    while tasks.join_next().await.is_some() {}
    info!("SRT ingest stopped");
}

/// Binds a peer's loopback listener and relay and starts its task.
async fn open_peer(
    remote: SocketAddr,
    public: &Arc<UdpSocket>,
    shared: &Arc<Shared>,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<()>,
) -> std::io::Result<Peer> {
    let loopback = SocketAddr::from((IpAddr::V4(Ipv4Addr::LOCALHOST), 0));
    let listener = UdpSocket::bind(loopback).await?;
    let relay = UdpSocket::bind(loopback).await?;
    relay.connect(listener.local_addr()?).await?;
    let relay = Arc::new(relay);
    let publishing = Arc::new(AtomicBool::new(false));
    let session = serve_peer(remote, listener, shared.clone(), stop, publishing.clone());
    let replies = forward_replies(relay.clone(), public.clone(), remote);
    let task = tasks.spawn(
        async move {
            tokio::select! {
                () = session => {}
                () = replies => {}
            }
        }
        .with_current_subscriber(),
    );
    Ok(Peer {
        relay,
        publishing,
        opened: Instant::now(),
        task,
    })
}

/// Sends what the peer's listener answers back to the real remote address.
async fn forward_replies(relay: Arc<UdpSocket>, public: Arc<UdpSocket>, remote: SocketAddr) {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    loop {
        match relay.recv(&mut buf).await {
            Ok(n) => {
                let _ = public.send_to(&buf[..n], remote).await;
            }
            // The listener's socket is gone: the session is over.
            Err(_) => return,
        }
    }
}
