//! Redundant origins settle each channel's epoch with each other.
//!
//! Two origins fed by one encoder derive the same epoch from arrival time
//! unless a whole second of UTC falls between their two estimates
//! ([`crate::store::epoch`]): then every segment number, header name and
//! program-date-time of the channel differ between them for as long as the
//! publish lasts, and a shield that switches origin serves a player names
//! it has never seen. With `[redundancy] peers` set, an origin asks each
//! peer's admin listener for the channel's epoch
//! (`GET /api/channels/{channel}/epoch`) from the channel's first sample
//! until its first playlist or MPD is served (at most
//! [`crate::store::SETTLE_WINDOW`]), and adopts the peer's when the peer
//! published under it already (a restarted origin joining late) or when
//! neither did and the peer's is the earlier one
//! ([`Store::settle_epoch`]). Each asks every `poll_interval`, so a pair
//! that starts together hears each other well before the first playlist
//! and converges on one epoch whichever asks first. The store re-numbers
//! what it holds (segments cut meanwhile too), invisibly to players.
//!
//! A peer that is down, slow or answering garbage leaves the channel on its
//! own epoch, as without peers: redundancy never delays a channel.

use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

use crate::store::{ChannelEpoch, Store};

/// The `[redundancy]` section.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedundancyConfig {
    /// Admin listeners (`http://host:port`) of the other origins the same
    /// encoder publishes to.
    pub peers: Vec<String>,
    /// How often a channel not shown to anyone yet asks them.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long one answer may take before the peer counts as unreachable.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for RedundancyConfig {
    fn default() -> Self {
        RedundancyConfig {
            peers: Vec::new(),
            poll_interval: Duration::from_millis(100),
            timeout: Duration::from_millis(500),
        }
    }
}

impl RedundancyConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (i, peer) in self.peers.iter().enumerate() {
            let uri: http::Uri = peer
                .parse()
                .map_err(|e| format!("redundancy.peers[{i}]: {peer:?} is not a URL: {e}"))?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return Err(format!(
                    "redundancy.peers[{i}]: {peer:?} must be an http:// or https:// URL of a peer's admin listener"
                ));
            }
        }
        if self.poll_interval < Duration::from_millis(10) {
            return Err("redundancy.poll_interval: at least 10ms".into());
        }
        if self.timeout.is_zero() {
            return Err("redundancy.timeout: must be above zero".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    peer: String,
    /// `agreed`, `adopted`, `kept`, `disagreed`, `unknown` ([`Settled`]),
    /// or `absent` (the peer has no epoch for the channel), `unreachable`
    /// (connect, timeout, a 5xx), `bad_answer` (anything unparsable).
    outcome: &'static str,
}

/// `strata_origin_redundancy_*`.
#[derive(Clone, Default)]
pub struct RedundancyMetrics {
    checks: Family<CheckLabels, Counter>,
}

impl RedundancyMetrics {
    /// Register under `strata_origin_redundancy` in `registry` (the root).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = RedundancyMetrics::default();
        registry
            .sub_registry_with_prefix("strata_origin_redundancy")
            .register(
                "epoch_checks",
                "Epoch checks with redundant peers, by peer and outcome",
                metrics.checks.clone(),
            );
        metrics
    }

    fn count(&self, peer: &str, outcome: &'static str) {
        self.checks
            .get_or_create(&CheckLabels {
                peer: peer.to_owned(),
                outcome,
            })
            .inc();
    }
}

/// The epoch endpoint's answer.
#[derive(Debug, Serialize, Deserialize)]
struct EpochAnswer {
    channel: String,
    /// Unix milliseconds of output time 0.
    epoch_unix_ms: u64,
    published: bool,
}

/// `GET /api/channels/{channel}/epoch` for the admin listener: a read, like
/// the rest of the channel API's reads.
pub fn admin_routes(store: Store) -> Router {
    Router::new()
        .route("/api/channels/{channel}/epoch", get(epoch))
        .with_state(store)
}

async fn epoch(State(store): State<Store>, Path(channel): Path<String>) -> Response {
    match store.epoch_of(&channel) {
        Some(e) => Json(EpochAnswer {
            channel,
            epoch_unix_ms: e
                .epoch
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            published: e.published,
        })
        .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "no epoch for this channel yet" })),
        )
            .into_response(),
    }
}

/// Ask the peers about every unsettled channel every `poll_interval` until
/// `stop`.
pub async fn run(
    config: RedundancyConfig,
    store: Store,
    metrics: RedundancyMetrics,
    stop: impl Future<Output = ()>,
) {
    if config.peers.is_empty() {
        return;
    }
    let client = crate::steering::probe::client();
    let mut tick = tokio::time::interval(config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = tick.tick() => {}
        }
        for channel in store.unsettled_epochs() {
            for peer in &config.peers {
                let outcome = match ask(&client, peer, &channel, config.timeout).await {
                    Ok(Some(theirs)) => store.settle_epoch(&channel, theirs).label(),
                    Ok(None) => "absent",
                    Err(outcome) => outcome,
                };
                match outcome {
                    "adopted" => {
                        tracing::info!(%channel, %peer, "epoch: adopted the redundant peer's")
                    }
                    "disagreed" => tracing::warn!(
                        %channel, %peer,
                        "epoch: both origins published different epochs; their segment names differ"
                    ),
                    _ => {}
                }
                metrics.count(peer, outcome);
            }
        }
    }
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// One peer's epoch for `channel`: `None` when it has none (404).
async fn ask(
    client: &Client,
    peer: &str,
    channel: &str,
    timeout: Duration,
) -> Result<Option<ChannelEpoch>, &'static str> {
    let url = format!(
        "{}/api/channels/{}/epoch",
        peer.trim_end_matches('/'),
        percent_encoding::utf8_percent_encode(channel, percent_encoding::NON_ALPHANUMERIC)
    );
    let uri: http::Uri = url.parse().map_err(|_| "bad_answer")?;
    let request = http::Request::get(uri)
        .header(http::header::USER_AGENT, "strata-origin-redundancy")
        .body(Empty::new())
        .map_err(|_| "bad_answer")?;
    let answer = tokio::time::timeout(timeout, async {
        let response = client.request(request).await.map_err(|_| "unreachable")?;
        let status = response.status();
        let body = http_body_util::Limited::new(response.into_body(), 64 << 10)
            .collect()
            .await
            .map_err(|_| "unreachable")?
            .to_bytes();
        Ok::<_, &'static str>((status, body))
    })
    .await
    .map_err(|_| "unreachable")??;
    match answer.0 {
        StatusCode::NOT_FOUND => Ok(None),
        s if s.is_server_error() => Err("unreachable"),
        StatusCode::OK => {
            let theirs: EpochAnswer =
                serde_json::from_slice(&answer.1).map_err(|_| "bad_answer")?;
            if theirs.channel != channel {
                return Err("bad_answer");
            }
            let epoch = UNIX_EPOCH
                .checked_add(Duration::from_millis(theirs.epoch_unix_ms))
                .filter(|e| *e > UNIX_EPOCH)
                .ok_or("bad_answer")?;
            Ok(Some(ChannelEpoch {
                epoch,
                published: theirs.published,
            }))
        }
        _ => Err("bad_answer"),
    }
}
