//! The fleet control plane: purges, token keys, geo rules and TTL overrides
//! changed once and applied by every node, at most once and in order.
//!
//! Every change, from the admin API or `strata ctl`, is a [`Change`]. With
//! `fleet.nats` set it is signed and appended to one JetStream stream, and
//! every node applies the stream in order ([`nats`]); without it the node
//! applies it at once. Either way the node saves what it runs to
//! `fleet.state_file`, so a restart loses nothing, and a restarted node
//! reads the stream from where it stopped before it serves.

pub mod change;
pub mod nats;
pub mod state;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::admin::error::ApiError;
use crate::admin::metrics::AdminMetrics;
use crate::cache::freshness::TtlOverrides;
use crate::edge::Edge;
use crate::policy::GeoRuleConfig;
use change::GeoRule;
pub use change::{Change, Envelope, FleetSecret, PurgeSpec, Refusal};
use state::FleetState;

/// The `[fleet]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetConfig {
    /// NATS server(s) with JetStream, e.g. `"nats://127.0.0.1:4222"`
    /// (comma-separated for a cluster). Absent: this node is its own fleet.
    pub nats: Option<String>,
    /// Shared secret every change is signed with (HMAC-SHA256), at least 32
    /// characters; required with `nats`.
    pub secret: Option<FleetSecret>,
    /// Where this node saves the fleet state it runs (JSON, mode 0600).
    pub state_file: Option<PathBuf>,
    /// At start, how long to wait for the stream before serving on the
    /// state saved last time.
    #[serde(with = "humantime_serde")]
    pub catch_up_timeout: Duration,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            nats: None,
            secret: None,
            state_file: None,
            catch_up_timeout: Duration::from_secs(5),
        }
    }
}

impl FleetConfig {
    /// Checks serde cannot express, as `(key, message)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.nats.is_some() && self.secret.is_none() {
            return Err(("fleet.secret", "required with fleet.nats".into()));
        }
        if let Some(url) = &self.nats {
            if url.trim().is_empty() {
                return Err(("fleet.nats", "empty".into()));
            }
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// `strata_fleet_*`; registered, not global.
#[derive(Clone, Default)]
pub struct FleetMetrics {
    version: Gauge,
    connected: Gauge,
    applied: Family<KindLabel, Counter>,
    refused: Family<ReasonLabel, Counter>,
}

impl FleetMetrics {
    pub fn register(registry: &mut Registry) -> FleetMetrics {
        let m = FleetMetrics::default();
        for reason in Refusal::ALL {
            let _ = m.refused.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        let r = registry.sub_registry_with_prefix("strata_fleet");
        r.register(
            "state_version",
            "Version of the fleet state this node runs (last change applied)",
            m.version.clone(),
        );
        r.register(
            "engine_connected",
            "1 while the node is connected to the fleet engine (NATS)",
            m.connected.clone(),
        );
        r.register(
            "changes_applied",
            "Fleet changes applied, by kind",
            m.applied.clone(),
        );
        r.register(
            "changes_refused",
            "Fleet messages refused: bad signature, malformed, replayed, out of order",
            m.refused.clone(),
        );
        m
    }
}

/// What applying one change did on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A purge selected this many cached objects.
    Purged(usize),
    Applied,
    /// Valid, but this node could not apply it (e.g. it has no `[token]`).
    Failed(String),
    /// Published, but this node had not applied it before the API gave up waiting.
    Pending,
}

/// A change as applied: the fleet state version it created.
#[derive(Clone, Debug)]
pub struct Applied {
    pub version: u64,
    pub outcome: Outcome,
}

/// What `GET /api/fleet` shows.
#[derive(Serialize)]
pub struct FleetStatus {
    pub node_id: String,
    /// `nats` or `none`.
    pub engine: &'static str,
    pub connected: bool,
    /// False from start until the node read the stream to its end once.
    pub caught_up: bool,
    pub version: u64,
    pub cursor: u64,
    pub state_file: Option<String>,
}

/// How many recent outcomes are kept for the API call that is waiting on one.
const OUTCOMES_KEPT: usize = 256;

pub struct Fleet {
    edge: Arc<Edge>,
    node_id: String,
    config: FleetConfig,
    /// The state and the lock that serialises applying: one change at a
    /// time, in order. An async mutex, held across the purge's `.await`.
    state: tokio::sync::Mutex<FleetState>,
    /// The stream position read up to; the API waits on it.
    cursor: watch::Sender<u64>,
    /// Recent `(sequence, outcome)`; never held across `.await`.
    outcomes: parking_lot::Mutex<VecDeque<(u64, Outcome)>>,
    /// The geo rules as last applied, to echo them back (the policy keeps
    /// only their parsed form); never held across `.await`.
    geo_rules: parking_lot::Mutex<Vec<GeoRule>>,
    metrics: FleetMetrics,
    admin_metrics: AdminMetrics,
    engine: Option<nats::Engine>,
    connected: Arc<AtomicBool>,
    caught_up: AtomicBool,
    /// The task reading the stream, stopped with the node; never held across `.await`.
    follower: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Fleet {
    /// Restore the saved state onto `edge` and connect to the engine (in the
    /// background: an unreachable engine is not an error).
    pub async fn start(
        edge: Arc<Edge>,
        node_id: String,
        config: FleetConfig,
        initial_geo_rules: Vec<GeoRule>,
        metrics: FleetMetrics,
        admin_metrics: AdminMetrics,
    ) -> Result<Arc<Fleet>, String> {
        let state = match &config.state_file {
            Some(path) => FleetState::load(path)?,
            None => FleetState::default(),
        };
        let connected = Arc::new(AtomicBool::new(false));
        let engine = match (&config.nats, &config.secret) {
            (Some(url), Some(secret)) => Some(
                nats::Engine::connect(
                    url,
                    secret.clone(),
                    node_id.clone(),
                    connected.clone(),
                    metrics.connected.clone(),
                )
                .await
                .map_err(|e| format!("fleet.nats: {e}"))?,
            ),
            _ => None,
        };
        let fleet = Fleet {
            edge,
            node_id,
            config,
            cursor: watch::Sender::new(state.cursor),
            outcomes: parking_lot::Mutex::new(VecDeque::new()),
            geo_rules: parking_lot::Mutex::new(initial_geo_rules),
            metrics,
            admin_metrics,
            engine,
            connected,
            caught_up: AtomicBool::new(false),
            follower: parking_lot::Mutex::new(None),
            state: tokio::sync::Mutex::new(FleetState::default()),
        };
        fleet.restore(&state).await;
        fleet.metrics.version.set(state.version as i64);
        *fleet.state.lock().await = state;
        let fleet = Arc::new(fleet);
        if fleet.engine.is_some() {
            *fleet.follower.lock() = Some(tokio::spawn(nats::follow(fleet.clone())));
        } else {
            fleet.caught_up.store(true, Ordering::Relaxed);
        }
        Ok(fleet)
    }

    /// Stop reading the stream (the node is shutting down); a change being
    /// applied is cut at an `.await`, and read again at the next start.
    pub fn stop(&self) {
        if let Some(task) = self.follower.lock().take() {
            task.abort();
        }
    }

    /// Wait until the node has read the stream to its end once, or
    /// `catch_up_timeout`; true when caught up.
    pub async fn catch_up(&self) -> bool {
        let deadline = tokio::time::Instant::now() + self.config.catch_up_timeout;
        while !self.caught_up.load(Ordering::Relaxed) {
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(
                    timeout = ?self.config.catch_up_timeout,
                    "fleet: engine not reached in time; serving the saved fleet state"
                );
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Re-apply the runtime changes saved last time.
    async fn restore(&self, state: &FleetState) {
        let policy = self.edge.policy();
        let ids = policy.map(|p| p.key_ids()).unwrap_or_default();
        for (id, secret) in &state.token_keys_added {
            if !ids.contains(id) {
                self.restore_one(Change::AddTokenKey {
                    id: id.clone(),
                    secret: secret.clone(),
                })
                .await;
            }
        }
        for id in &state.token_keys_retired {
            if ids.contains(id) || state.token_keys_added.contains_key(id) {
                self.restore_one(Change::RetireTokenKey { id: id.clone() })
                    .await;
            }
        }
        if let Some(rules) = &state.geo_rules {
            self.restore_one(Change::SetGeoRules {
                rules: rules.clone(),
            })
            .await;
        }
        if let Some(overrides) = &state.ttl_overrides {
            self.restore_one(Change::SetTtlOverrides {
                overrides: overrides.clone(),
            })
            .await;
        }
        if state.version > 0 {
            tracing::info!(version = state.version, "fleet: saved state restored");
        }
    }

    async fn restore_one(&self, change: Change) {
        if let Outcome::Failed(e) = self.apply(&change).await {
            tracing::warn!(kind = change.kind(), error = %e, "fleet: a saved change no longer applies");
        }
    }

    pub fn status(&self) -> FleetStatus {
        let (version, cursor) = match self.state.try_lock() {
            Ok(s) => (s.version, s.cursor),
            Err(_) => (self.metrics.version.get() as u64, *self.cursor.borrow()),
        };
        FleetStatus {
            node_id: self.node_id.clone(),
            engine: if self.engine.is_some() {
                "nats"
            } else {
                "none"
            },
            connected: self.connected.load(Ordering::Relaxed),
            caught_up: self.caught_up.load(Ordering::Relaxed),
            version,
            cursor,
            state_file: self
                .config
                .state_file
                .as_ref()
                .map(|p| p.display().to_string()),
        }
    }

    pub fn geo_rules(&self) -> Vec<GeoRule> {
        self.geo_rules.lock().clone()
    }

    /// Validate `change` here, then apply it fleet-wide (through the engine)
    /// or on this node (without one).
    pub async fn submit(&self, change: Change) -> Result<Applied, ApiError> {
        self.check(&change)?;
        let Some(engine) = &self.engine else {
            let mut state = self.state.lock().await;
            let outcome = self.apply(&change).await;
            if let Outcome::Failed(e) = outcome {
                return Err(ApiError::Conflict(e));
            }
            state.version += 1;
            state.cursor = state.version;
            state.record(&change);
            self.finish(&state, change.kind());
            return Ok(Applied {
                version: state.version,
                outcome,
            });
        };
        let sequence = engine.publish(&change).await.map_err(|e| {
            ApiError::Unavailable(format!(
                "fleet engine: {e}; the change was not confirmed (GET /api/fleet shows the version)"
            ))
        })?;
        tracing::info!(
            kind = change.kind(),
            version = sequence,
            "fleet: change published"
        );
        let mut cursor = self.cursor.subscribe();
        let reached =
            tokio::time::timeout(Duration::from_secs(10), cursor.wait_for(|c| *c >= sequence))
                .await;
        let outcome = match reached {
            Ok(Ok(_)) => self
                .outcomes
                .lock()
                .iter()
                .find(|(s, _)| *s == sequence)
                .map(|(_, o)| o.clone())
                .unwrap_or(Outcome::Pending),
            _ => Outcome::Pending,
        };
        Ok(Applied {
            version: sequence,
            outcome,
        })
    }

    /// Save, publish the version, count.
    fn finish(&self, state: &FleetState, kind: &'static str) {
        self.metrics
            .applied
            .get_or_create(&KindLabel { kind })
            .inc();
        self.metrics.version.set(state.version as i64);
        self.save(state);
        self.cursor.send_replace(state.cursor);
    }

    fn save(&self, state: &FleetState) {
        if let Some(path) = &self.config.state_file {
            if let Err(e) = state.save(path) {
                tracing::error!(path = %path.display(), error = %e, "fleet: cannot save the fleet state");
            }
        }
    }

    /// One message read from the stream at `sequence`.
    pub(crate) async fn receive(&self, sequence: u64, payload: &[u8], signature: Option<&str>) {
        let mut state = self.state.lock().await;
        if sequence <= state.cursor {
            return; // delivered again after a reconnect: already handled
        }
        state.cursor = sequence;
        let secret = self.config.secret.as_ref().expect("an engine has a secret");
        match change::open(secret, payload, signature, sequence, state.version) {
            Err(refusal) => {
                self.metrics
                    .refused
                    .get_or_create(&ReasonLabel {
                        reason: refusal.as_str(),
                    })
                    .inc();
                tracing::warn!(
                    sequence,
                    reason = refusal.as_str(),
                    "fleet: message refused"
                );
                self.save(&state);
                self.cursor.send_replace(sequence);
            }
            Ok(envelope) => {
                let outcome = self.apply(&envelope.change).await;
                if let Outcome::Failed(e) = &outcome {
                    tracing::warn!(sequence, kind = envelope.change.kind(), error = %e, "fleet: change does not apply on this node");
                } else {
                    state.record(&envelope.change);
                }
                state.version = envelope.version;
                tracing::info!(
                    version = state.version,
                    kind = envelope.change.kind(),
                    issuer = %envelope.issuer,
                    "fleet: change applied"
                );
                {
                    let mut outcomes = self.outcomes.lock();
                    if outcomes.len() == OUTCOMES_KEPT {
                        outcomes.pop_front();
                    }
                    outcomes.push_back((sequence, outcome));
                }
                self.finish(&state, envelope.change.kind());
            }
        }
    }

    /// The stream starts after changes this node never read (the engine
    /// dropped them): what they purged cannot be known, so drop everything.
    pub(crate) async fn missed_changes(&self, first_available: u64) {
        let mut state = self.state.lock().await;
        tracing::error!(
            cursor = state.cursor,
            first_available,
            "fleet: changes were lost before this node read them; purging the whole cache"
        );
        let purged = self
            .edge
            .purge(crate::cache::purge::PurgeTarget::Prefix("/".into()), false)
            .await;
        tracing::warn!(purged, "fleet: cache dropped");
        state.cursor = first_available.saturating_sub(1);
        self.save(&state);
    }

    /// The stream is behind this node (the engine lost its data): follow
    /// it from its end rather than refuse every new change as a replay.
    pub(crate) async fn rewind(&self, last: u64) {
        let mut state = self.state.lock().await;
        tracing::error!(
            cursor = state.cursor,
            stream_end = last,
            "fleet: the stream is behind this node (engine data lost?); following it from its end"
        );
        state.cursor = last;
        state.version = last;
        self.metrics.version.set(last as i64);
        self.save(&state);
        self.cursor.send_replace(last);
    }

    pub(crate) async fn cursor_now(&self) -> u64 {
        self.state.lock().await.cursor
    }

    pub(crate) fn set_caught_up(&self) {
        if !self.caught_up.swap(true, Ordering::Relaxed) {
            tracing::info!("fleet: caught up with the stream");
        }
    }

    pub(crate) fn engine(&self) -> Option<&nats::Engine> {
        self.engine.as_ref()
    }

    /// Whether `change` would apply here; the API's 4xx answers.
    fn check(&self, change: &Change) -> Result<(), ApiError> {
        match change {
            Change::Purge(spec) => purge_target(&self.edge, spec).map(|_| ()),
            Change::AddTokenKey { id, secret } => {
                let policy = token_policy(&self.edge)?;
                if policy.key_ids().contains(id) {
                    return Err(ApiError::Conflict(format!(
                        "id: a key {id:?} already exists; retire it first"
                    )));
                }
                // Errors are `id: …` / `secret: …`; the secret itself is never echoed.
                policy
                    .check_new_key(id, secret)
                    .map_err(|e| ApiError::Invalid(e.to_string()))
            }
            Change::RetireTokenKey { id } => {
                let ids = token_policy(&self.edge)?.key_ids();
                if !ids.contains(id) {
                    return Err(ApiError::NotFound(format!("id: no key {id:?}")));
                }
                if ids.len() == 1 {
                    return Err(ApiError::Conflict(format!(
                        "id: {id:?} is the only key; add its successor first"
                    )));
                }
                Ok(())
            }
            Change::SetGeoRules { rules } => {
                geo_policy(&self.edge)?;
                let configs: Vec<GeoRuleConfig> = rules.iter().map(GeoRuleConfig::from).collect();
                crate::policy::geo::parse_rules(&configs, "rules")
                    .map(|_| ())
                    .map_err(|e| ApiError::Invalid(e.to_string()))
            }
            Change::SetTtlOverrides { overrides } => TtlOverrides::new(overrides, "overrides")
                .map(|_| ())
                .map_err(|e| ApiError::Invalid(e.to_string())),
        }
    }

    /// Apply one change to this node.
    async fn apply(&self, change: &Change) -> Outcome {
        let failed = |e: &dyn std::fmt::Display| Outcome::Failed(e.to_string());
        match change {
            Change::Purge(spec) => match purge_target(&self.edge, spec) {
                Ok(target) => {
                    let kind = target.kind();
                    let purged = self.edge.purge(target, spec.soft).await;
                    self.admin_metrics.purged(kind, spec.soft);
                    tracing::info!(kind, soft = spec.soft, purged, "purge");
                    Outcome::Purged(purged)
                }
                Err(e) => failed(&e),
            },
            Change::AddTokenKey { id, secret } => match token_policy(&self.edge) {
                Ok(policy) if policy.key_ids().contains(id) => Outcome::Applied,
                Ok(policy) => match policy.add_key(id, secret) {
                    Ok(()) => {
                        tracing::info!(%id, "token key added");
                        Outcome::Applied
                    }
                    Err(e) => failed(&e),
                },
                Err(e) => failed(&e),
            },
            Change::RetireTokenKey { id } => match token_policy(&self.edge) {
                Ok(policy) if !policy.key_ids().contains(id) => Outcome::Applied,
                Ok(policy) => match policy.retire_key(id) {
                    Ok(()) => {
                        tracing::info!(%id, "token key retired");
                        Outcome::Applied
                    }
                    Err(e) => failed(&e),
                },
                Err(e) => failed(&e),
            },
            Change::SetGeoRules { rules } => match geo_policy(&self.edge) {
                Ok(policy) => {
                    let configs: Vec<GeoRuleConfig> =
                        rules.iter().map(GeoRuleConfig::from).collect();
                    let mut shown = self.geo_rules.lock();
                    match policy.set_geo_rules(&configs) {
                        Ok(()) => {
                            *shown = rules.clone();
                            tracing::info!(rules = rules.len(), "geo rules replaced");
                            Outcome::Applied
                        }
                        Err(e) => failed(&e),
                    }
                }
                Err(e) => failed(&e),
            },
            Change::SetTtlOverrides { overrides } => {
                match self.edge.set_ttl_overrides(overrides, "overrides") {
                    Ok(applied) => {
                        tracing::info!(
                            overrides = applied.entries().len(),
                            "TTL overrides replaced"
                        );
                        Outcome::Applied
                    }
                    Err(e) => failed(&e),
                }
            }
        }
    }
}

pub(crate) fn token_policy(edge: &Edge) -> Result<&crate::policy::Policy, ApiError> {
    edge.policy()
        .filter(|p| p.token_param().is_some())
        .ok_or_else(|| ApiError::Conflict("token: this edge has no [token] section".into()))
}

pub(crate) fn geo_policy(edge: &Edge) -> Result<&crate::policy::Policy, ApiError> {
    edge.policy()
        .filter(|p| p.geo_db().is_some())
        .ok_or_else(|| ApiError::Conflict("geo: this edge has no [geo] section".into()))
}

/// What a purge selects, in the cache's own terms.
pub(crate) fn purge_target(
    edge: &Edge,
    spec: &PurgeSpec,
) -> Result<crate::cache::purge::PurgeTarget, ApiError> {
    use crate::cache::purge::PurgeTarget;
    match (&spec.urls, &spec.prefix, &spec.surrogate_keys) {
        (Some(urls), None, None) => {
            if urls.is_empty() {
                return Err(ApiError::Invalid("urls: empty".into()));
            }
            let keys = urls
                .iter()
                .enumerate()
                .map(|(i, url)| {
                    edge.cache_key_for(url)
                        .map_err(|e| ApiError::Invalid(format!("urls[{i}]: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(PurgeTarget::Keys(keys))
        }
        (None, Some(prefix), None) => {
            if !prefix.starts_with('/') {
                return Err(ApiError::Invalid("prefix: must start with '/'".into()));
            }
            // The normal form the cache keys are in, so `/a/%2e%2e/b/` purges `/b/…`.
            let prefix = crate::request::path::canonical(prefix)
                .map_err(|e| ApiError::Invalid(format!("prefix: {e}")))?
                .into_owned();
            Ok(PurgeTarget::Prefix(prefix))
        }
        (None, None, Some(tags)) => {
            if tags.is_empty() {
                return Err(ApiError::Invalid("surrogate_keys: empty".into()));
            }
            // Surrogate-Key is a header of space-separated tokens.
            if let Some(i) = tags
                .iter()
                .position(|t| t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()))
            {
                return Err(ApiError::Invalid(format!(
                    "surrogate_keys[{i}]: must be visible ASCII, without spaces"
                )));
            }
            Ok(PurgeTarget::SurrogateKeys(tags.clone()))
        }
        _ => Err(ApiError::BadRequest(
            "body: give exactly one of urls, prefix, surrogate_keys".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::EdgeConfig;

    #[test]
    fn the_fleet_section_parses_and_errors_name_the_key() {
        let base = "[upstream]\nurls = [\"http://127.0.0.1:1\"]\n";
        let config = EdgeConfig::parse(&format!(
            "{base}[fleet]\nnats = \"nats://127.0.0.1:4222\"\nsecret = \"0123456789abcdef0123456789abcdef\"\nstate_file = \"/tmp/s.json\"\ncatch_up_timeout = \"2s\"\n"
        ))
        .expect("valid");
        assert_eq!(config.fleet.nats.as_deref(), Some("nats://127.0.0.1:4222"));
        assert!(!format!("{config:?}").contains("0123456789abcdef0123"));
        let err = EdgeConfig::parse(&format!("{base}[fleet]\nnats = \"nats://x:4222\"\n"))
            .expect_err("no secret");
        assert!(err.to_string().starts_with("fleet.secret"), "{err}");
        let err = EdgeConfig::parse(&format!("{base}[fleet]\nsecret = \"short\"\n"))
            .expect_err("short secret");
        assert!(err.to_string().contains("secret"), "{err}");
        let err = EdgeConfig::parse(&format!("{base}[fleet]\nnatz = \"x\"\n")).expect_err("typo");
        assert!(err.to_string().contains("natz"), "{err}");
    }
}
