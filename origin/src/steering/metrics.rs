//! `strata_steering_*`: every probe result and every decision.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use super::probe::Outcome;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathwayLabels {
    pub pathway: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub pathway: String,
    /// `ok`, `refused` (401/403: available, unmeasured), `status` (other
    /// failing status), `timeout`, `error` (connect, TLS, body)
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    pub pathway: String,
    /// `up` or `down`
    pub to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `hls`, `dash` or `redirect`
    pub format: &'static str,
    /// The pathway put first.
    pub pathway: String,
    /// `new`, `kept`, `moved`
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RankLabels {
    pub pathway: String,
    /// A country some pathway prefers, or `default`.
    pub country: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BadInputLabels {
    /// `pathway`, `throughput`, `session`, `query_too_long`, `channel`
    pub what: &'static str,
}

/// Steering metrics, registered under `strata_steering`.
#[derive(Clone)]
pub struct SteeringMetrics {
    probes: Family<ProbeLabels, Counter>,
    probe_ttfb: Family<PathwayLabels, Histogram, fn() -> Histogram>,
    probe_throughput: Family<PathwayLabels, Gauge<f64, AtomicU64>>,
    up: Family<PathwayLabels, Gauge>,
    transitions: Family<TransitionLabels, Counter>,
    rank: Family<RankLabels, Gauge>,
    decisions: Family<DecisionLabels, Counter>,
    reported: Family<PathwayLabels, Histogram, fn() -> Histogram>,
    qoe_penalty: Family<PathwayLabels, Gauge<f64, AtomicU64>>,
    bad_input: Family<BadInputLabels, Counter>,
}

fn ttfb_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 14))
}

fn throughput_histogram() -> Histogram {
    Histogram::new(exponential_buckets(250_000.0, 2.0, 12))
}

impl Default for SteeringMetrics {
    /// Unregistered (tests).
    fn default() -> Self {
        SteeringMetrics {
            probes: Family::default(),
            probe_ttfb: Family::new_with_constructor(ttfb_histogram),
            probe_throughput: Family::default(),
            up: Family::default(),
            transitions: Family::default(),
            rank: Family::default(),
            decisions: Family::default(),
            reported: Family::new_with_constructor(throughput_histogram),
            qoe_penalty: Family::default(),
            bad_input: Family::default(),
        }
    }
}

impl SteeringMetrics {
    /// `registry` is the origin's root registry; names get `strata_steering_`.
    pub fn register(registry: &mut Registry) -> SteeringMetrics {
        let m = SteeringMetrics::default();
        let r = registry.sub_registry_with_prefix("strata_steering");
        r.register(
            "probes",
            "Probes of each pathway by result",
            m.probes.clone(),
        );
        r.register(
            "probe_ttfb_seconds",
            "Time to first byte of passed probes",
            m.probe_ttfb.clone(),
        );
        r.register(
            "probe_throughput_bits_per_second",
            "Throughput of the last passed probe's body",
            m.probe_throughput.clone(),
        );
        r.register(
            "pathway_up",
            "1 while a pathway is in service",
            m.up.clone(),
        );
        r.register(
            "pathway_transitions",
            "A pathway taken out of (down) or back into (up) service",
            m.transitions.clone(),
        );
        r.register(
            "pathway_rank",
            "Current position of each pathway (1 = first) per country",
            m.rank.clone(),
        );
        r.register(
            "decisions",
            "Steering answers by the pathway put first and why",
            m.decisions.clone(),
        );
        r.register(
            "reported_throughput_bits_per_second",
            "Throughput players report in steering requests",
            m.reported.clone(),
        );
        r.register(
            "qoe_penalty",
            "QoE penalty (0-1) applied to a pathway's score",
            m.qoe_penalty.clone(),
        );
        r.register(
            "bad_input",
            "Steering request values refused or ignored",
            m.bad_input.clone(),
        );
        m
    }

    fn labels(pathway: &str) -> PathwayLabels {
        PathwayLabels {
            pathway: pathway.to_owned(),
        }
    }

    pub fn probe(&self, pathway: &str, outcome: &Outcome) {
        self.probes
            .get_or_create(&ProbeLabels {
                pathway: pathway.to_owned(),
                result: outcome.result(),
            })
            .inc();
        if let Some(ttfb) = outcome.ttfb.filter(|_| outcome.ok) {
            self.probe_ttfb
                .get_or_create(&Self::labels(pathway))
                .observe(ttfb.as_secs_f64());
        }
        if let Some(bps) = outcome.bits_per_second.filter(|_| outcome.ok) {
            self.probe_throughput
                .get_or_create(&Self::labels(pathway))
                .set(bps);
        }
    }

    pub fn up(&self, pathway: &str, up: bool) {
        self.up
            .get_or_create(&Self::labels(pathway))
            .set(i64::from(up));
    }

    pub fn transition(&self, pathway: &str, up: bool) {
        self.transitions
            .get_or_create(&TransitionLabels {
                pathway: pathway.to_owned(),
                to: if up { "up" } else { "down" },
            })
            .inc();
    }

    pub fn rank(&self, pathway: &str, country: &str, rank: i64) {
        self.rank
            .get_or_create(&RankLabels {
                pathway: pathway.to_owned(),
                country: country.to_owned(),
            })
            .set(rank);
    }

    pub fn decision(&self, format: &'static str, pathway: &str, reason: &'static str) {
        self.decisions
            .get_or_create(&DecisionLabels {
                format,
                pathway: pathway.to_owned(),
                reason,
            })
            .inc();
    }

    pub fn reported_throughput(&self, pathway: &str, bps: u64) {
        self.reported
            .get_or_create(&Self::labels(pathway))
            .observe(bps as f64);
    }

    pub fn qoe_penalty(&self, pathway: &str, penalty: f64) {
        self.qoe_penalty
            .get_or_create(&Self::labels(pathway))
            .set(penalty);
    }

    pub fn bad_input(&self, what: &'static str) {
        self.bad_input.get_or_create(&BadInputLabels { what }).inc();
    }
}
