//! Ingest counters, registered under the `ingest` prefix.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::media::TrackKind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    protocol: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrackLabels {
    protocol: &'static str,
    track: &'static str,
}

/// Publisher and media counters shared by the RTMP, SRT and demo ingests.
/// Cloning shares the counters. `Default` gives unregistered counters.
#[derive(Clone, Debug, Default)]
pub struct IngestMetrics {
    connects: Family<ProtocolLabels, Counter>,
    disconnects: Family<ProtocolLabels, Counter>,
    refusals: Family<ReasonLabels, Counter>,
    frames: Family<TrackLabels, Counter>,
    bytes: Family<ProtocolLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
    late: Family<ProtocolLabels, Counter>,
    dropped_packets: Family<ReasonLabels, Counter>,
}

impl IngestMetrics {
    /// Registers the counters as `ingest_*` in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let r = registry.sub_registry_with_prefix("ingest");
        r.register(
            "publisher_connects",
            "Publisher connections accepted, by protocol",
            m.connects.clone(),
        );
        r.register(
            "publisher_disconnects",
            "Publisher connections closed, by protocol",
            m.disconnects.clone(),
        );
        r.register(
            "publish_refusals",
            "Connections or publishes refused, by protocol and reason",
            m.refusals.clone(),
        );
        r.register(
            "frames",
            "Samples received, by protocol and track",
            m.frames.clone(),
        );
        r.register(
            "bytes",
            "Bytes received from publishers, by protocol",
            m.bytes.clone(),
        );
        r.register(
            "dropped_frames",
            "Samples dropped (late, malformed, before parameters), by protocol and reason",
            m.dropped.clone(),
        );
        r.register(
            "late_frames",
            "Samples whose timestamps went backwards and were re-timed to keep decode order",
            m.late.clone(),
        );
        r.register(
            "dropped_packets",
            "Datagrams dropped before any protocol state saw them (malformed, unknown peer), by protocol and reason",
            m.dropped_packets.clone(),
        );
        m
    }

    /// `reason`: `short`, `long`, `unparsable`, `parser_panic`, `suspicious`,
    /// `unsupported_control`, `unknown_peer` or `relay_full`.
    pub fn packet_dropped(&self, protocol: &'static str, reason: &'static str) {
        self.dropped_packets
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }

    pub fn connected(&self, protocol: &'static str) {
        self.connects
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    pub fn disconnected(&self, protocol: &'static str) {
        self.disconnects
            .get_or_create(&ProtocolLabels { protocol })
            .inc();
    }

    /// `reason` is a short label such as `bad_name`, `unauthorised`,
    /// `busy`, `max_connections`, `unsupported_codec` or `protocol_error`.
    pub fn refused(&self, protocol: &'static str, reason: &'static str) {
        self.refusals
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }

    pub fn frame(&self, protocol: &'static str, kind: TrackKind) {
        let track = match kind {
            TrackKind::Video => "video",
            TrackKind::Audio => "audio",
        };
        self.frames
            .get_or_create(&TrackLabels { protocol, track })
            .inc();
    }

    pub fn bytes_in(&self, protocol: &'static str, n: usize) {
        self.bytes
            .get_or_create(&ProtocolLabels { protocol })
            .inc_by(n as u64);
    }

    pub fn late(&self, protocol: &'static str, n: u64) {
        if n > 0 {
            self.late
                .get_or_create(&ProtocolLabels { protocol })
                .inc_by(n);
        }
    }

    /// `reason`: `malformed`, `no_params` or `discontinuity`.
    pub fn dropped(&self, protocol: &'static str, reason: &'static str) {
        self.dropped
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_and_encodes() {
        let mut registry = Registry::default();
        let m = IngestMetrics::register(&mut registry);
        m.connected("rtmp");
        m.refused("srt", "unauthorised");
        m.frame("rtmp", TrackKind::Video);
        m.bytes_in("rtmp", 42);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        assert!(text.contains("ingest_publisher_connects_total{protocol=\"rtmp\"} 1"));
        assert!(text
            .contains("ingest_publish_refusals_total{protocol=\"srt\",reason=\"unauthorised\"} 1"));
        assert!(text.contains("ingest_bytes_total{protocol=\"rtmp\"} 42"));
    }
}
