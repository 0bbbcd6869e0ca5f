//! Counters of the control API (`strata_edge_purges_total`,
//! `strata_admin_requests_total`): a leaf the fleet can use without the API.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PurgeLabels {
    /// `url`, `prefix`, `surrogate-key`
    kind: &'static str,
    /// `hard` (dropped) or `soft` (marked stale)
    mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct AdminRequestLabels {
    /// The route template (`/api/token/keys/{id}`), or `unmatched`.
    pub(super) route: String,
    pub(super) method: String,
    pub(super) status: u16,
}

/// Counters of the control API; registered, not global.
#[derive(Clone, Default)]
pub struct AdminMetrics {
    purges: Family<PurgeLabels, Counter>,
    pub(super) requests: Family<AdminRequestLabels, Counter>,
}

impl AdminMetrics {
    /// Registers `strata_edge_purges_total{kind,mode}` and
    /// `strata_admin_requests_total{route,method,status}`.
    pub fn register(registry: &mut Registry) -> AdminMetrics {
        let metrics = AdminMetrics::default();
        for kind in ["url", "prefix", "surrogate-key"] {
            for mode in ["hard", "soft"] {
                let _ = metrics.purges.get_or_create(&PurgeLabels { kind, mode });
            }
        }
        registry.sub_registry_with_prefix("strata_edge").register(
            "purges",
            "Purge requests applied, by what they selected and how",
            metrics.purges.clone(),
        );
        registry.sub_registry_with_prefix("strata_admin").register(
            "requests",
            "Admin listener requests, by route, method and status",
            metrics.requests.clone(),
        );
        metrics
    }

    pub(crate) fn purged(&self, kind: &'static str, soft: bool) {
        let mode = if soft { "soft" } else { "hard" };
        self.purges.get_or_create(&PurgeLabels { kind, mode }).inc();
    }
}
