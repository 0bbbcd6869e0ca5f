//! Prometheus metrics of the edge, registered into a registry passed in.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `1xx` … `5xx`
    pub status: &'static str,
    /// `hit`, `miss`, `collapsed`, `stale`, `revalidated`, `pass`, `error`, `denied`
    pub cache: &'static str,
    /// `h1`, `h2`, `h3`
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabels {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabels {
    pub upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOutcomeLabels {
    pub upstream: String,
    /// `ok`, `http-5xx`, `connect`, `timeout`, `body`
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
}

pub struct RequestMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub bytes: Family<ProtocolLabels, Counter>,
    pub duration: Family<ProtocolLabels, Histogram, fn() -> Histogram>,
    pub coalesced_followers: Counter,
    pub errors: Family<ReasonLabels, Counter>,
    /// LL-HLS part prefetches by outcome (see `Edge::prefetch_parts`).
    pub ll_prefetches: Family<OutcomeLabels, Counter>,
}

impl RequestMetrics {
    fn new() -> Self {
        RequestMetrics {
            requests: Family::default(),
            bytes: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            coalesced_followers: Counter::default(),
            errors: Family::default(),
            ll_prefetches: Family::default(),
        }
    }
}

/// Handles into [`RequestMetrics`] resolved once per label set, so counting a
/// request bumps atomics instead of hashing three label sets under the
/// families' locks (a measurable share of a cached 1 KiB hit). The handles
/// share their values with the families, which export them as usual.
pub struct RequestHandles {
    /// Indexed by [`RequestHandles::cell`]; filled on first use.
    requests: Box<[std::sync::OnceLock<Counter>]>,
    /// Per protocol, in [`PROTOCOLS`] order.
    bytes: [Counter; 3],
    duration: [Histogram; 3],
}

const PROTOCOLS: [&str; 3] = ["h1", "h2", "h3"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Cache statuses with a resolved cell; any other goes through the family.
const CACHE_STATUSES: [&str; 8] = [
    "hit",
    "miss",
    "collapsed",
    "stale",
    "revalidated",
    "pass",
    "error",
    "denied",
];

impl RequestHandles {
    pub fn new(m: &RequestMetrics) -> Self {
        let per_protocol = |p: &'static str| ProtocolLabels { protocol: p };
        RequestHandles {
            requests: (0..PROTOCOLS.len() * STATUS_CLASSES.len() * CACHE_STATUSES.len())
                .map(|_| std::sync::OnceLock::new())
                .collect(),
            bytes: PROTOCOLS.map(|p| m.bytes.get_or_create(&per_protocol(p)).clone()),
            duration: PROTOCOLS.map(|p| m.duration.get_or_create(&per_protocol(p)).clone()),
        }
    }

    fn protocol(protocol: &str) -> Option<usize> {
        PROTOCOLS.iter().position(|p| *p == protocol)
    }

    fn cell(labels: &RequestLabels) -> Option<usize> {
        let p = Self::protocol(labels.protocol)?;
        let s = STATUS_CLASSES.iter().position(|c| *c == labels.status)?;
        let c = CACHE_STATUSES.iter().position(|c| *c == labels.cache)?;
        Some((p * STATUS_CLASSES.len() + s) * CACHE_STATUSES.len() + c)
    }

    /// One response: its request counter, bytes and duration.
    pub fn record(&self, m: &RequestMetrics, labels: RequestLabels, bytes: u64, seconds: f64) {
        match Self::cell(&labels) {
            Some(i) => self.requests[i]
                .get_or_init(|| m.requests.get_or_create(&labels).clone())
                .inc(),
            None => m.requests.get_or_create(&labels).inc(),
        };
        match Self::protocol(labels.protocol) {
            Some(p) => {
                self.bytes[p].inc_by(bytes);
                self.duration[p].observe(seconds);
            }
            None => {
                let protocol = ProtocolLabels {
                    protocol: labels.protocol,
                };
                m.bytes.get_or_create(&protocol).inc_by(bytes);
                m.duration.get_or_create(&protocol).observe(seconds);
            }
        }
    }
}

#[derive(Default)]
pub struct CacheMetrics {
    pub objects: Gauge,
    pub bytes: Gauge,
    pub evictions: Counter,
    pub disk: DiskMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabels {
    /// `open`, `read`, `journal`
    pub op: &'static str,
}

/// The disk tier (`[cache.disk]`): all zero without one.
#[derive(Default)]
pub struct DiskMetrics {
    /// 1 while the disk tier is in use.
    pub up: Gauge,
    pub hits: Counter,
    pub misses: Counter,
    pub hit_bytes: Counter,
    /// Objects written to the disk tier (its queue flushed past them), and their bytes.
    pub writes: Counter,
    pub write_bytes: Counter,
    /// Objects the disk tier did not store, by reason (`unavailable`,
    /// `too-large`, `queue-full`).
    pub dropped: Family<ReasonLabels, Counter>,
    /// Objects found on disk that a purge had selected since they were stored.
    pub purged: Counter,
    pub errors: Family<OpLabels, Counter>,
}

pub struct UpstreamMetrics {
    pub requests: Family<UpstreamOutcomeLabels, Counter>,
    pub latency: Family<UpstreamLabels, Histogram, fn() -> Histogram>,
    pub healthy: Family<UpstreamLabels, Gauge>,
}

/// The HTTP/3 front door's connection-level view (requests are counted with
/// everyone else's in [`RequestMetrics`], labelled `protocol="h3"`).
pub struct H3Metrics {
    /// `ok`, `failed`
    pub handshakes: Family<OutcomeLabels, Counter>,
    /// What was done with a new connection attempt: `accepted`, `retry`, `refused`.
    pub incoming: Family<OutcomeLabels, Counter>,
    pub connections: Gauge,
    pub streams: Counter,
    /// Smoothed RTT of each connection, sampled periodically and when it closes.
    pub rtt: Histogram,
    pub lost_packets: Counter,
}

impl H3Metrics {
    fn register(edge: &mut Registry) -> H3Metrics {
        let m = H3Metrics {
            handshakes: Family::default(),
            incoming: Family::default(),
            connections: Gauge::default(),
            streams: Counter::default(),
            rtt: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            lost_packets: Counter::default(),
        };
        edge.register(
            "h3_handshakes",
            "QUIC handshakes, by outcome (ok, failed)",
            m.handshakes.clone(),
        );
        edge.register(
            "h3_incoming",
            "New QUIC connection attempts, by what the edge did (accepted, retry, refused)",
            m.incoming.clone(),
        );
        edge.register(
            "h3_connections",
            "Open HTTP/3 connections",
            m.connections.clone(),
        );
        edge.register(
            "h3_streams",
            "HTTP/3 request streams accepted",
            m.streams.clone(),
        );
        edge.register(
            "h3_rtt_seconds",
            "Smoothed round-trip time of HTTP/3 connections, sampled every 15 s and at close",
            m.rtt.clone(),
        );
        edge.register(
            "h3_lost_packets",
            "QUIC packets declared lost on HTTP/3 connections",
            m.lost_packets.clone(),
        );
        m
    }
}

/// Everything the edge counts.
pub struct EdgeMetrics {
    pub requests: RequestMetrics,
    pub h3: H3Metrics,
    pub cache: std::sync::Arc<CacheMetrics>,
    pub upstream: std::sync::Arc<UpstreamMetrics>,
}

impl EdgeMetrics {
    pub fn register(registry: &mut Registry) -> EdgeMetrics {
        let edge = registry.sub_registry_with_prefix("strata_edge");
        let requests = RequestMetrics::new();
        edge.register(
            "requests",
            "Requests answered, by status class, cache status and protocol",
            requests.requests.clone(),
        );
        edge.register(
            "response_body_bytes",
            "Response body bytes sent to clients",
            requests.bytes.clone(),
        );
        edge.register(
            "request_duration_seconds",
            "Time from request to last byte sent",
            requests.duration.clone(),
        );
        edge.register(
            "coalesced_followers",
            "Requests that joined another request's in-flight upstream fetch",
            requests.coalesced_followers.clone(),
        );
        edge.register(
            "errors",
            "Requests the edge refused or failed, by reason",
            requests.errors.clone(),
        );
        edge.register(
            "ll_prefetches",
            "LL-HLS parts fetched ahead of players, by outcome: started (one upstream fill), \
             hit (a client asked for it), wasted (nobody did within a minute), cached and \
             inflight (already there: no fetch), dropped (tracking table full)",
            requests.ll_prefetches.clone(),
        );

        let cache = std::sync::Arc::new(CacheMetrics::default());
        edge.register(
            "cache_objects",
            "Objects in the cache",
            cache.objects.clone(),
        );
        edge.register(
            "cache_bytes",
            "Weighted bytes in the cache",
            cache.bytes.clone(),
        );
        edge.register(
            "cache_evictions",
            "Objects evicted for space",
            cache.evictions.clone(),
        );
        let disk = &cache.disk;
        for (name, help, metric) in [
            (
                "cache_disk_hits",
                "Memory misses answered by the disk tier",
                &disk.hits,
            ),
            (
                "cache_disk_misses",
                "Memory misses the disk tier could not answer",
                &disk.misses,
            ),
            (
                "cache_disk_hit_bytes",
                "Body bytes read from the disk tier",
                &disk.hit_bytes,
            ),
            (
                "cache_disk_writes",
                "Objects written to the disk tier",
                &disk.writes,
            ),
            (
                "cache_disk_write_bytes",
                "Body bytes written to the disk tier",
                &disk.write_bytes,
            ),
            (
                "cache_disk_purged",
                "Objects found on disk that a purge had selected",
                &disk.purged,
            ),
        ] {
            edge.register(name, help, metric.clone());
        }
        edge.register(
            "cache_disk_up",
            "1 while the disk tier is in use",
            disk.up.clone(),
        );
        edge.register(
            "cache_disk_dropped",
            "Objects the disk tier did not store, by reason",
            disk.dropped.clone(),
        );
        edge.register(
            "cache_disk_errors",
            "Disk tier failures (the request went on without it), by operation",
            disk.errors.clone(),
        );

        let upstream = UpstreamMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            healthy: Family::default(),
        };
        edge.register(
            "upstream_requests",
            "Requests sent upstream, by upstream and outcome",
            upstream.requests.clone(),
        );
        edge.register(
            "upstream_response_seconds",
            "Time to upstream response headers",
            upstream.latency.clone(),
        );
        edge.register(
            "upstream_healthy",
            "1 when the upstream passes health checks",
            upstream.healthy.clone(),
        );
        let h3 = H3Metrics::register(edge);
        EdgeMetrics {
            requests,
            h3,
            cache,
            upstream: std::sync::Arc::new(upstream),
        }
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolved_handles_count_into_the_exported_families() {
        let mut registry = Registry::default();
        let metrics = EdgeMetrics::register(&mut registry);
        let handles = RequestHandles::new(&metrics.requests);
        let labels = |cache, protocol| RequestLabels {
            status: "2xx",
            cache,
            protocol,
        };
        handles.record(&metrics.requests, labels("hit", "h1"), 1024, 0.001);
        handles.record(&metrics.requests, labels("hit", "h1"), 1024, 0.001);
        handles.record(&metrics.requests, labels("miss", "h3"), 10, 0.02);
        // A cache status without a resolved cell still counts.
        handles.record(&metrics.requests, labels("unheard-of", "h2"), 5, 0.5);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        for line in [
            r#"strata_edge_requests_total{status="2xx",cache="hit",protocol="h1"} 2"#,
            r#"strata_edge_requests_total{status="2xx",cache="miss",protocol="h3"} 1"#,
            r#"strata_edge_requests_total{status="2xx",cache="unheard-of",protocol="h2"} 1"#,
            r#"strata_edge_response_body_bytes_total{protocol="h1"} 2048"#,
            r#"strata_edge_response_body_bytes_total{protocol="h3"} 10"#,
            r#"strata_edge_request_duration_seconds_count{protocol="h2"} 1"#,
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
