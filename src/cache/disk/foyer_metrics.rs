//! The one foyer counter the edge exports: entries its write queue refused
//! because it was full, counted as `strata_edge_cache_disk_dropped_total
//! {reason="queue-full"}`. foyer reports through `mixtrics`; everything else
//! it reports is discarded here (the edge counts hits, misses and bytes
//! itself, where it knows the request).

use std::borrow::Cow;
use std::sync::Arc;

use mixtrics::metrics::{
    BoxedCounter, BoxedCounterVec, BoxedGauge, BoxedGaugeVec, BoxedHistogram, BoxedHistogramVec,
    CounterOps, CounterVecOps, GaugeOps, GaugeVecOps, HistogramOps, HistogramVecOps, RegistryOps,
};
use prometheus_client::metrics::counter::Counter;

use crate::metrics::CacheMetrics;

/// foyer's counter family, and its `op` values that mean "not written".
const FAMILY: &str = "foyer_storage_inner_op_total";
const QUEUE_FULL: [&str; 2] = ["queue_buffer_overflow", "queue_channel_overflow"];

#[derive(Debug)]
pub struct Bridge {
    queue_full: Counter,
}

impl Bridge {
    pub fn new(metrics: &Arc<CacheMetrics>) -> Bridge {
        Bridge {
            queue_full: metrics
                .disk
                .dropped
                .get_or_create(&crate::metrics::ReasonLabels {
                    reason: "queue-full",
                })
                .clone(),
        }
    }
}

#[derive(Debug)]
struct Ignored;

impl CounterOps for Ignored {
    fn increase(&self, _: u64) {}
}

impl GaugeOps for Ignored {
    fn increase(&self, _: u64) {}
    fn decrease(&self, _: u64) {}
    fn absolute(&self, _: u64) {}
}

impl HistogramOps for Ignored {
    fn record(&self, _: f64) {}
}

impl GaugeVecOps for Ignored {
    fn gauge(&self, _: &[Cow<'static, str>]) -> BoxedGauge {
        Box::new(Ignored)
    }
}

impl HistogramVecOps for Ignored {
    fn histogram(&self, _: &[Cow<'static, str>]) -> BoxedHistogram {
        Box::new(Ignored)
    }
}

impl CounterVecOps for Ignored {
    fn counter(&self, _: &[Cow<'static, str>]) -> BoxedCounter {
        Box::new(Ignored)
    }
}

#[derive(Debug)]
struct Counting(Counter);

impl CounterOps for Counting {
    fn increase(&self, val: u64) {
        self.0.inc_by(val);
    }
}

#[derive(Debug)]
struct Inner(Counter);

impl CounterVecOps for Inner {
    fn counter(&self, labels: &[Cow<'static, str>]) -> BoxedCounter {
        // Labels are `[name, op]`.
        match labels.get(1) {
            Some(op) if QUEUE_FULL.contains(&op.as_ref()) => Box::new(Counting(self.0.clone())),
            _ => Box::new(Ignored),
        }
    }
}

impl RegistryOps for Bridge {
    fn register_counter_vec(
        &self,
        name: Cow<'static, str>,
        _: Cow<'static, str>,
        _: &'static [&'static str],
    ) -> BoxedCounterVec {
        if name == FAMILY {
            Box::new(Inner(self.queue_full.clone()))
        } else {
            Box::new(Ignored)
        }
    }

    fn register_gauge_vec(
        &self,
        _: Cow<'static, str>,
        _: Cow<'static, str>,
        _: &'static [&'static str],
    ) -> BoxedGaugeVec {
        Box::new(Ignored)
    }

    fn register_histogram_vec(
        &self,
        _: Cow<'static, str>,
        _: Cow<'static, str>,
        _: &'static [&'static str],
    ) -> BoxedHistogramVec {
        Box::new(Ignored)
    }

    fn register_histogram_vec_with_buckets(
        &self,
        _: Cow<'static, str>,
        _: Cow<'static, str>,
        _: &'static [&'static str],
        _: Vec<f64>,
    ) -> BoxedHistogramVec {
        Box::new(Ignored)
    }
}
