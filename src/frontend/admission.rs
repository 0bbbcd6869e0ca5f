//! Connection admission for the TCP front door: a global and a per-address
//! cap on open connections, and deadlines for a request head, so idle and
//! slow-header floods (slowloris) cannot hold every slot.
//!
//! A connection holds a [`ConnectionPermit`] for as long as it is open; the
//! permit's `Drop` gives the slot back, so no path can leak one. Over the cap,
//! a cleartext HTTP/1.1 client is told `503` with `Retry-After` (it can try
//! again or go elsewhere) and a TLS client is closed before the handshake
//! costs anything.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;

/// `[server.limits]`: how much of the edge one client, and all of them, may hold.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open TCP connections (HTTP/1.1, HTTP/2, TLS) the node accepts at once.
    pub max_connections: usize,
    /// Open TCP connections from one client address (players behind one NAT
    /// share an address: keep this well above one household).
    pub max_connections_per_address: usize,
    /// Time a new connection has to deliver its first complete request head
    /// (TLS handshake excluded; it has its own 10 s).
    #[serde(with = "humantime_serde")]
    pub request_head_timeout: Duration,
    /// Idle time allowed between requests on a kept-alive HTTP/1.1
    /// connection; the next head then has `request_head_timeout` more.
    #[serde(with = "humantime_serde")]
    pub keepalive_timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 50_000,
            max_connections_per_address: 512,
            request_head_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(30),
        }
    }
}

impl LimitsConfig {
    /// Why the section is unusable, naming the key.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_connections == 0 {
            return Err(("server.limits.max_connections", "must be at least 1".into()));
        }
        if self.max_connections_per_address == 0 {
            return Err((
                "server.limits.max_connections_per_address",
                "must be at least 1".into(),
            ));
        }
        for (key, d) in [
            (
                "server.limits.request_head_timeout",
                self.request_head_timeout,
            ),
            ("server.limits.keepalive_timeout", self.keepalive_timeout),
        ] {
            if d < Duration::from_millis(100) || d > Duration::from_secs(3600) {
                return Err((key, format!("{d:?} is outside 100ms..1h")));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// Why a connection was not admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// `max_connections` reached.
    Full,
    /// `max_connections_per_address` reached for this client.
    PerAddress,
}

impl Refusal {
    fn label(self) -> &'static str {
        match self {
            Refusal::Full => "max_connections",
            Refusal::PerAddress => "max_connections_per_address",
        }
    }
}

/// The live admission state of one edge (shared by its TCP listeners).
pub struct Admission {
    config: LimitsConfig,
    open: AtomicUsize,
    // A std Mutex: held for one map update, never across an await.
    per_address: std::sync::Mutex<HashMap<IpAddr, usize>>,
    open_gauge: Gauge,
    refused: Family<RefusalLabels, Counter>,
    head_timeouts: Counter,
}

/// One admitted connection's slot; dropping it frees the slot.
#[must_use = "the slot is freed when the permit is dropped"]
pub struct ConnectionPermit {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Admission {
    pub fn new(config: LimitsConfig, registry: &mut Registry) -> Arc<Admission> {
        let admission = Admission {
            config,
            open: AtomicUsize::new(0),
            per_address: std::sync::Mutex::new(HashMap::new()),
            open_gauge: Gauge::default(),
            refused: Family::default(),
            head_timeouts: Counter::default(),
        };
        let edge = registry.sub_registry_with_prefix("strata_edge");
        edge.register(
            "connections_open",
            "TCP connections open now (HTTP/1.1, HTTP/2, TLS)",
            admission.open_gauge.clone(),
        );
        edge.register(
            "connections_refused",
            "TCP connections refused at accept, by reason (max_connections, max_connections_per_address)",
            admission.refused.clone(),
        );
        edge.register(
            "request_head_timeouts",
            "Connections closed because a request head did not arrive in time",
            admission.head_timeouts.clone(),
        );
        // Both reasons exported from the start, so a quiet panel shows 0.
        for reason in [Refusal::Full, Refusal::PerAddress] {
            drop(admission.refused.get_or_create(&RefusalLabels {
                reason: reason.label(),
            }));
        }
        Arc::new(admission)
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    /// A slot for a connection from `address`, or why there is none (counted).
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Result<ConnectionPermit, Refusal> {
        let refusal = self.try_admit(address).err();
        if let Some(refusal) = refusal {
            self.refused
                .get_or_create(&RefusalLabels {
                    reason: refusal.label(),
                })
                .inc();
            return Err(refusal);
        }
        self.open_gauge.inc();
        Ok(ConnectionPermit {
            admission: self.clone(),
            address,
        })
    }

    fn try_admit(&self, address: IpAddr) -> Result<(), Refusal> {
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.config.max_connections {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Full);
        }
        let mut per_address = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let count = per_address.entry(address).or_insert(0);
        if *count >= self.config.max_connections_per_address {
            drop(per_address);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::PerAddress);
        }
        *count += 1;
        Ok(())
    }

    /// Counts a connection closed for a late request head.
    pub fn head_timed_out(&self) {
        self.head_timeouts.inc();
    }

    /// How long the next request head may take: a fresh connection gets
    /// `request_head_timeout`; a kept-alive one also its idle allowance.
    pub fn head_deadline(&self, kept_alive: bool) -> Duration {
        let head = self.config.request_head_timeout;
        if kept_alive {
            head + self.config.keepalive_timeout
        } else {
            head
        }
    }

    pub fn open_connections(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let admission = &self.admission;
        {
            let mut per_address = admission
                .per_address
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(count) = per_address.get_mut(&self.address) {
                *count -= 1;
                if *count == 0 {
                    per_address.remove(&self.address);
                }
            }
        }
        admission.open.fetch_sub(1, Ordering::AcqRel);
        admission.open_gauge.dec();
    }
}

/// What a cleartext client over the cap is told before the close.
pub const OVERLOADED_RESPONSE: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
Retry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: 28\r\nConnection: close\r\n\r\n\
too many connections, retry\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(max: usize, per_address: usize) -> Arc<Admission> {
        let config = LimitsConfig {
            max_connections: max,
            max_connections_per_address: per_address,
            ..LimitsConfig::default()
        };
        Admission::new(config, &mut Registry::default())
    }

    #[test]
    fn caps_hold_and_dropped_permits_free_their_slots() {
        let a = admission(3, 2);
        let one: IpAddr = "192.0.2.1".parse().expect("ip");
        let two: IpAddr = "192.0.2.2".parse().expect("ip");
        let p1 = a.admit(one).expect("first");
        let p2 = a.admit(one).expect("second from one address");
        assert_eq!(a.admit(one).err(), Some(Refusal::PerAddress));
        let p3 = a.admit(two).expect("another address");
        assert_eq!(a.admit(two).err(), Some(Refusal::Full));
        assert_eq!(a.open_connections(), 3);
        drop(p1);
        let p4 = a.admit(two).expect("a freed slot is reusable");
        drop((p2, p3, p4));
        assert_eq!(a.open_connections(), 0);
        assert!(
            a.per_address.lock().expect("lock").is_empty(),
            "no address left behind"
        );
    }

    #[test]
    fn the_overload_answer_is_well_framed() {
        let text = std::str::from_utf8(OVERLOADED_RESPONSE).expect("ascii");
        let (head, body) = text.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 503"));
        assert!(head.contains("Retry-After: 1"));
        let declared: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|v| v.parse().ok())
            .expect("length");
        assert_eq!(declared, body.len());
    }

    #[test]
    fn bad_limits_name_their_key() {
        let zero = LimitsConfig {
            max_connections: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(
            zero.check().expect_err("zero").0,
            "server.limits.max_connections"
        );
        assert!(LimitsConfig::default().check().is_ok());
    }
}
