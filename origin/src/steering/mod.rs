//! Multi-CDN content steering (issue 9, part 1).
//!
//! - `config` — the `[steering]` section
//! - `rank` — pathway health with hysteresis, per-country rankings, per-session choices (no I/O)
//! - `probe` — active probes of every pathway through its CDN
//! - `query` — steering request parameters (`_HLS_*`, `_DASH_*`, session state)
//! - `http` — the steering manifests, the 302 entry point, tags on manifests, the admin view
//! - `geo` — client country (MaxMind, trusted `X-Forwarded-For`)
//! - `metrics` — `strata_steering_*`
//!
//! The tag writers are pure functions next to the packagers:
//! [`crate::package::hls::with_steering`] and [`crate::package::dash::with_steering`].

pub mod config;
pub mod geo;
pub mod http;
pub mod metrics;
pub mod probe;
pub mod query;
pub mod rank;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub use config::{CloneConfig, PathwayConfig, SteeringConfig, SteeringGeoConfig};
use metrics::SteeringMetrics;
use rank::{Choice, Pathways, Session};

/// What the tag writers need for one channel's manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tags {
    /// Steering manifest URL (HLS `SERVER-URI`, DASH `<ContentSteering>` text).
    pub server_uri: String,
    /// The pathway players start on (`PATHWAY-ID`, `defaultServiceLocation`).
    pub default_pathway: String,
    /// `(id, "{base_url}/live/{channel}/")`, best first.
    pub pathways: Vec<(String, String)>,
}

/// Manifest format a steering request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Hls,
    Dash,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Hls => "hls",
            Format::Dash => "dash",
        }
    }
}

/// The live steering service: configuration, pathway state, metrics.
pub struct Steering {
    config: SteeringConfig,
    /// Public base of the steering service, no trailing `/`.
    server: String,
    /// Each pathway's base URL, no trailing `/` (a clone's derived from its base's).
    bases: Vec<String>,
    // Held to read or update a few numbers, never across an `.await`.
    pathways: Mutex<Pathways>,
    geo: Option<geo::Geo>,
    pub(crate) metrics: SteeringMetrics,
}

impl std::fmt::Debug for Steering {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Steering")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl SteeringConfig {
    /// The live service. `playback` is the bound playback listener, the
    /// steering server's default address.
    pub fn init(
        self,
        playback: std::net::SocketAddr,
        metrics: SteeringMetrics,
    ) -> Result<Steering, String> {
        self.validate(playback)?;
        let server = match &self.server {
            Some(s) => config::parse_base_url(s).unwrap_or_default(),
            None => format!("http://{playback}"),
        };
        let geo = self
            .geo
            .as_ref()
            .map(geo::Geo::open)
            .transpose()
            .map_err(|e| format!("steering.geo.{e}"))?;
        let pathways = Pathways::new(&self, tokio::time::Instant::now());
        let bases = self
            .pathways
            .iter()
            .map(|p| match &p.clone {
                Some(clone) => self.clone_base_url(clone).unwrap_or_default(),
                None => config::parse_base_url(&p.base_url).unwrap_or_default(),
            })
            .collect();
        let steering = Steering {
            server,
            bases,
            pathways: Mutex::new(pathways),
            geo,
            metrics,
            config: self,
        };
        steering.publish_ranks();
        Ok(steering)
    }
}

impl Steering {
    pub fn config(&self) -> &SteeringConfig {
        &self.config
    }

    fn state(&self) -> MutexGuard<'_, Pathways> {
        self.pathways.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `{server}/steering/{channel}.json` (HLS) or `…/{channel}/dash.json` (DASH).
    pub fn manifest_url(&self, channel: &str, format: Format) -> String {
        match format {
            Format::Hls => format!("{}/steering/{channel}.json", self.server),
            Format::Dash => format!("{}/steering/{channel}/dash.json", self.server),
        }
    }

    /// Pathway `i`'s base URL, no trailing `/`.
    pub fn base_url(&self, i: usize) -> &str {
        self.bases.get(i).map_or("", String::as_str)
    }

    /// Tags for `channel`'s manifests, ranked for no country in particular.
    /// Clones are left out: players learn them from the steering manifest.
    pub fn tags(&self, channel: &str, format: Format) -> Tags {
        let order = self.state().ranking(None);
        let pathways: Vec<(String, String)> = order
            .iter()
            .filter(|&&i| self.config.pathways[i].clone.is_none())
            .map(|&i| {
                let p = &self.config.pathways[i];
                (
                    p.id.clone(),
                    format!("{}/live/{channel}/", self.base_url(i)),
                )
            })
            .collect();
        Tags {
            server_uri: self.manifest_url(channel, format),
            default_pathway: pathways.first().map(|p| p.0.clone()).unwrap_or_default(),
            pathways,
        }
    }

    /// The country of a request, when `[steering.geo]` is set.
    pub fn country(
        &self,
        peer: std::net::SocketAddr,
        headers: &::http::HeaderMap,
    ) -> Option<String> {
        let geo = self.geo.as_ref()?;
        geo.country(geo.client_ip(peer, headers))
    }

    /// Index of pathway `id`.
    pub fn pathway_index(&self, id: &str) -> Option<usize> {
        self.config.pathways.iter().position(|p| p.id == id)
    }

    /// A player's measured throughput on a pathway, from a steering request.
    pub fn report_throughput(&self, pathway: usize, bits_per_second: u64) {
        self.state().report_throughput(
            pathway,
            bits_per_second as f64,
            tokio::time::Instant::now(),
        );
        self.metrics
            .reported_throughput(&self.config.pathways[pathway].id, bits_per_second);
    }

    /// Hook for QoE (issue 9 part 2): a penalty in 0..=1 for a pathway whose
    /// viewers suffer (e.g. its rebuffer ratio); it lowers the pathway's
    /// score among equally healthy ones, 1 making it a last resort there.
    /// Unknown ids and non-finite values are ignored; returns whether applied.
    pub fn set_qoe_penalty(&self, pathway: &str, penalty: f64) -> bool {
        let Some(i) = self.pathway_index(pathway) else {
            return false;
        };
        if !penalty.is_finite() {
            return false;
        }
        self.state().set_penalty(i, penalty.clamp(0.0, 1.0));
        self.metrics.qoe_penalty(pathway, penalty.clamp(0.0, 1.0));
        self.publish_ranks();
        true
    }

    /// Applies one probe result and re-ranks.
    pub fn record_probe(&self, pathway: usize, outcome: &probe::Outcome) {
        let now = tokio::time::Instant::now();
        let hysteresis = self.config.hysteresis();
        let change = self.state().record_probe(pathway, outcome, now, hysteresis);
        let id = &self.config.pathways[pathway].id;
        self.metrics.probe(id, outcome);
        if let Some(up) = change {
            self.metrics.transition(id, up);
            if up {
                tracing::info!(pathway = %id, "steering: pathway passed its probes for the hysteresis; ranked back");
            } else {
                tracing::warn!(pathway = %id, error = %outcome.describe(), "steering: pathway failed its probe; ranked last");
            }
        }
        self.publish_ranks();
    }

    /// Per-session choice for a steering request.
    pub fn decide(&self, session: &Session, country: Option<&str>, format: Format) -> Choice {
        let choice = self.state().decide(session, country);
        let id = &self.config.pathways[choice.priority[0]].id;
        self.metrics
            .decision(format.as_str(), id, choice.reason.as_str());
        choice
    }

    /// Pathway ids in priority order.
    pub fn ids(&self, order: &[usize]) -> Vec<String> {
        order
            .iter()
            .map(|&i| self.config.pathways[i].id.clone())
            .collect()
    }

    /// The best pathway's base URL for `country` (the 302 entry point).
    pub fn best_base(&self, country: Option<&str>) -> (String, String) {
        let order = self.state().ranking(country);
        let i = order[0];
        (
            self.config.pathways[i].id.clone(),
            self.base_url(i).to_owned(),
        )
    }

    /// `PATHWAY-CLONES` (HLS Content Steering 1.2 §"Pathway Cloning"; DASH-IF
    /// CTS reads the same objects), empty when no pathway is a clone.
    pub fn pathway_clones(&self) -> Vec<serde_json::Value> {
        self.config
            .pathways
            .iter()
            .filter_map(|p| {
                let clone = p.clone.as_ref()?;
                let mut replacement = serde_json::json!({ "HOST": clone.host });
                if !clone.params.is_empty() {
                    replacement["PARAMS"] = serde_json::json!(clone.params);
                }
                Some(serde_json::json!({
                    "BASE-ID": clone.base,
                    "ID": p.id,
                    "URI-REPLACEMENT": replacement,
                }))
            })
            .collect()
    }

    /// Countries some pathway prefers, for per-country views.
    pub fn countries(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .config
            .pathways
            .iter()
            .flat_map(|p| p.countries.iter().map(|c| c.to_ascii_uppercase()))
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// Current rank (1 = first) of every pathway, per country, as gauges.
    fn publish_ranks(&self) {
        let countries = self.countries();
        let state = self.state();
        for country in std::iter::once(None).chain(countries.iter().map(|c| Some(c.as_str()))) {
            for (rank, &i) in state.ranking(country).iter().enumerate() {
                self.metrics.rank(
                    &self.config.pathways[i].id,
                    country.unwrap_or("default"),
                    rank as i64 + 1,
                );
            }
        }
        for (i, p) in self.config.pathways.iter().enumerate() {
            self.metrics.up(&p.id, state.is_up(i));
        }
    }

    /// The admin view: pathway states and the ranking per country.
    pub fn snapshot(&self) -> serde_json::Value {
        let now = tokio::time::Instant::now();
        let countries = self.countries();
        let state = self.state();
        let mut ranking = serde_json::Map::new();
        ranking.insert("default".into(), self.ids(&state.ranking(None)).into());
        for c in &countries {
            ranking.insert(c.clone(), self.ids(&state.ranking(Some(c))).into());
        }
        let pathways: Vec<serde_json::Value> = self
            .config
            .pathways
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut v = state.describe(i, now);
                v["id"] = p.id.clone().into();
                v["base_url"] = self.base_url(i).into();
                if let Some(clone) = &p.clone {
                    v["clone_of"] = clone.base.clone().into();
                }
                v["weight"] = p.weight.unwrap_or(1).into();
                v["countries"] = p.countries.clone().into();
                v
            })
            .collect();
        serde_json::json!({
            "ttl_seconds": self.config.ttl.as_secs(),
            "probe_interval_ms": duration_ms(self.config.probe_interval),
            "hysteresis_ms": duration_ms(self.config.hysteresis()),
            "pathways": pathways,
            "ranking": ranking,
        })
    }
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// Shared handle.
pub type SharedSteering = Arc<Steering>;
