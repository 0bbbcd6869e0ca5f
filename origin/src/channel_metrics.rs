//! `strata_origin_channel_*`: each channel's ingest, read from the store at
//! scrape time, so a stalled channel shows among live ones (the ingest
//! counters are per protocol, not per channel) and a removed channel's
//! series go with it.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use crate::store::Store;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

/// Register with the `strata_origin` sub-registry.
pub struct ChannelCollector {
    store: Store,
}

impl ChannelCollector {
    pub fn new(store: Store) -> ChannelCollector {
        ChannelCollector { store }
    }
}

impl fmt::Debug for ChannelCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelCollector").finish_non_exhaustive()
    }
}

impl Collector for ChannelCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let channels = self.store.ingest_progress();
        let label = |channel: &str| ChannelLabels {
            channel: channel.to_owned(),
        };
        {
            let mut family = encoder.encode_descriptor(
                "channel_publishing",
                "1 while a publisher is connected to the channel (any rendition), else 0",
                None,
                MetricType::Gauge,
            )?;
            for c in &channels {
                ConstGauge::new(i64::from(c.publishing))
                    .encode(family.encode_family(&label(&c.channel))?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "channel_last_progress_timestamp_seconds",
            "Unix time ingest last made progress: the end of the newest segment cut, or the start of the current publish if later",
            None,
            MetricType::Gauge,
        )?;
        for c in &channels {
            let Some(at) = c.last_progress else { continue };
            let seconds = at
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            ConstGauge::new(seconds).encode(family.encode_family(&label(&c.channel))?)?;
        }
        Ok(())
    }
}
