//! Player QoE at the edge: CMCD on every request ([`cmcd`]) and beacons
//! ([`beacon`]) become `strata_qoe_*` metrics ([`metrics`]), with per-session
//! state for startup time and the rebuffer ratio ([`sessions`]).
//!
//! The edge calls [`Qoe::observe`] once per request, whatever the front door
//! (h1, h2, h3), and [`Qoe::beacon`] for its beacon path. CMCD is read only:
//! it never changes the cache key (`CMCD` stays in `cache.ignore_params`) and
//! is never sent upstream. Malformed CMCD is counted and ignored.

pub mod beacon;
pub mod cmcd;
pub mod metrics;
pub mod sessions;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName};
use prometheus_client::registry::Registry;
use serde::Deserialize;
use tokio::time::Instant;

use crate::policy::{client_ip, GeoDb};
use crate::request::{MediaRequest, Protocol};
use cmcd::{Cmcd, EventType, Malformed, ObjectType, PlayerState};
use metrics::{Cells, MalformedLabels, Place, QoeMetrics};
use sessions::{Sessions, Signal};

/// The `[qoe]` section of the edge's config.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QoeConfig {
    /// Read CMCD and serve the beacon; off, requests pass untouched.
    pub enabled: bool,
    /// This node's CDN/pathway id (the `cdn` label) when a player names none;
    /// the same id as the origin's `[[steering.pathways]]` entry for this CDN.
    pub pathway: String,
    /// Other pathway ids a player may name (CMCD `cdn`, `_HLS_pathway`,
    /// `_DASH_pathway`, a beacon's `cdn`) and be counted under; any other
    /// name counts as `other`, so players cannot mint label values.
    pub pathways: Vec<String>,
    /// Where players POST beacons, on the playback listeners.
    pub beacon_path: String,
    /// Sessions tracked at once; sessions beyond it are counted, not tracked.
    pub max_sessions: usize,
    /// A session silent this long is over.
    #[serde(with = "humantime_serde")]
    pub session_idle: Duration,
}

impl Default for QoeConfig {
    fn default() -> Self {
        QoeConfig {
            enabled: true,
            pathway: "default".into(),
            pathways: Vec::new(),
            beacon_path: "/qoe/beacon".into(),
            max_sessions: 100_000,
            session_idle: Duration::from_secs(60),
        }
    }
}

impl QoeConfig {
    /// Checks serde cannot express: `(key, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, message: &str| Err((format!("qoe.{key}"), message.to_owned()));
        let id_ok = |id: &str| {
            !id.is_empty()
                && id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !id_ok(&self.pathway) {
            return bad("pathway", "must be 1-64 letters, digits, '-', '_' or '.'");
        }
        if let Some(i) = self.pathways.iter().position(|p| !id_ok(p)) {
            return bad(
                &format!("pathways[{i}]"),
                "must be 1-64 letters, digits, '-', '_' or '.'",
            );
        }
        if !self.beacon_path.starts_with('/') || self.beacon_path.contains(['?', '#']) {
            return bad("beacon_path", "must be a path starting with '/'");
        }
        if self.max_sessions == 0 {
            return bad("max_sessions", "must be at least 1");
        }
        if self.session_idle < Duration::from_secs(1) {
            return bad("session_idle", "must be at least 1s");
        }
        Ok(())
    }
}

static CMCD_HEADERS: [HeaderName; 4] = [
    HeaderName::from_static("cmcd-object"),
    HeaderName::from_static("cmcd-request"),
    HeaderName::from_static("cmcd-session"),
    HeaderName::from_static("cmcd-status"),
];

/// The live QoE collector of one edge.
pub struct Qoe {
    config: QoeConfig,
    metrics: QoeMetrics,
    cells: Cells,
    sessions: Sessions,
    geo: Option<Arc<GeoDb>>,
    trusted_proxies: Vec<ipnet::IpNet>,
}

impl Qoe {
    /// Registers `strata_qoe_*` in `registry`. `geo` and `trusted_proxies`
    /// are the edge's own (`[geo]`), so countries match its geo rules.
    pub fn new(
        config: QoeConfig,
        registry: &mut Registry,
        geo: Option<Arc<GeoDb>>,
        trusted_proxies: Vec<ipnet::IpNet>,
    ) -> Qoe {
        let metrics = QoeMetrics::register(registry);
        metrics.initialise(&config.pathway);
        let mut pathways = vec![config.pathway.clone()];
        pathways.extend(
            config
                .pathways
                .iter()
                .filter(|p| **p != config.pathway)
                .cloned(),
        );
        Qoe {
            sessions: Sessions::new(config.max_sessions, config.session_idle),
            cells: Cells::new(pathways.clone()),
            config: QoeConfig { pathways, ..config },
            metrics,
            geo,
            trusted_proxies,
        }
    }

    pub fn config(&self) -> &QoeConfig {
        &self.config
    }

    pub fn metrics(&self) -> &QoeMetrics {
        &self.metrics
    }

    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }

    /// Expire idle sessions until the task is aborted.
    pub fn expire_forever(self: Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let every = (self.config.session_idle / 4).max(Duration::from_secs(1));
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                self.sessions.expire(Instant::now());
            }
        })
    }

    /// Read the CMCD a request carries, if any, and count it: from the
    /// request as the edge parsed it (its query) and its `CMCD-*` headers.
    pub fn observe(&self, request: &MediaRequest, headers: &HeaderMap) {
        let query = request.query.as_deref().unwrap_or("");
        let mut cmcd = Cmcd::default();
        let mut seen = false;
        let mut pathway = None;
        // `memchr` finds the separators with SIMD: the query is mostly the
        // CMCD payload, scanned here once before the parser reads it.
        let pairs = memchr::memchr_iter(b'&', query.as_bytes())
            .chain([query.len()])
            .scan(0, |from, to| {
                let pair = query.get(*from..to).unwrap_or("");
                *from = to + 1;
                Some(pair)
            });
        for pair in pairs {
            let (name, value) = match memchr::memchr(b'=', pair.as_bytes()) {
                Some(at) => (
                    pair.get(..at).unwrap_or(""),
                    pair.get(at + 1..).unwrap_or(""),
                ),
                None => (pair, ""),
            };
            if name.eq_ignore_ascii_case("CMCD") {
                seen = true;
                if let Err(e) = cmcd.parse_query_value(value) {
                    return self.malformed("query", e);
                }
            } else if name == "_HLS_pathway" || name == "_DASH_pathway" {
                pathway = Some(value);
            }
        }
        // Most requests carry no `CMCD-*` header: one pass over the names
        // says so, cheaper than four lookups.
        let has_headers = headers
            .keys()
            .any(|name| name.as_str().starts_with("cmcd-"));
        for name in CMCD_HEADERS.iter().filter(|_| has_headers) {
            for value in headers.get_all(name) {
                seen = true;
                let parsed = value
                    .to_str()
                    .map_err(|_| Malformed::Encoding)
                    .and_then(|text| cmcd.parse_into(text));
                if let Err(e) = parsed {
                    return self.malformed("header", e);
                }
            }
        }
        if !seen {
            return;
        }
        let named = cmcd.cdn.as_deref().or(pathway);
        let place = self.place(headers, request.client, request.protocol, named);
        self.record(&cmcd, place, Instant::now());
    }

    fn malformed(&self, source: &'static str, e: Malformed) {
        tracing::debug!(source, error = %e, "malformed CMCD ignored");
        self.metrics
            .malformed
            .get_or_create(&MalformedLabels {
                source,
                reason: e.as_str(),
            })
            .inc();
    }

    /// Where a report comes from: CDN/pathway, protocol and country.
    fn place(
        &self,
        headers: &HeaderMap,
        client: SocketAddr,
        protocol: Protocol,
        named: Option<&str>,
    ) -> Place {
        let pathways = &self.config.pathways;
        let cdn = match named {
            None => 0,
            Some(name) => pathways
                .iter()
                .position(|p| p == name)
                .unwrap_or(pathways.len()),
        };
        let country = self
            .geo
            .as_ref()
            .and_then(|db| db.country(self.client_ip(headers, client)).ok().flatten())
            .and_then(|c| c.as_str().as_bytes().try_into().ok())
            .unwrap_or([0, 0]);
        Place {
            cdn: u16::try_from(cdn).unwrap_or(u16::MAX),
            protocol: match protocol {
                Protocol::Http1 => 0,
                Protocol::Http2 => 1,
                Protocol::Http3 => 2,
            },
            country,
        }
    }

    fn client_ip(&self, headers: &HeaderMap, client: SocketAddr) -> IpAddr {
        if self.trusted_proxies.is_empty() {
            return client.ip().to_canonical();
        }
        client_ip(client, headers, &self.trusted_proxies)
    }

    /// Count one report (a request's CMCD or a v2 event line).
    pub fn record(&self, cmcd: &Cmcd, place: Place, now: Instant) {
        let cell = self.cells.get(&self.metrics, place);
        if cmcd.event.is_none() {
            cell.request(&self.metrics, cmcd.sf, cmcd.ot);
        }
        if cmcd.bs {
            cell.starvation.inc();
        }
        if cmcd.su {
            cell.startup_requests.inc();
        }
        // Buffer and bitrate describe the picture: video objects, or event
        // reports that name no object.
        let video = cmcd.ot.is_none_or(ObjectType::is_media);
        if video {
            if let Some(bl) = cmcd.bl {
                cell.buffer_length.observe(bl as f64 / 1000.0);
            }
            if let Some(br) = cmcd.br {
                cell.bitrate.observe(br as f64 * 1000.0);
            }
        }
        if let Some(mtp) = cmcd.mtp {
            cell.throughput.observe(mtp as f64 * 1000.0);
        }
        if let Some(dl) = cmcd.dl {
            cell.deadline.observe(dl as f64 / 1000.0);
        }
        let Some(sid) = cmcd.sid.as_deref() else {
            return;
        };
        // What the player states outright goes before what its flags imply.
        let mut signals = Signals::default();
        if let Some(msd) = cmcd.msd {
            signals.push(Signal::Started(Some(cmcd::ms(msd))));
        }
        match cmcd.sta {
            Some(PlayerState::Playing) => signals.push(Signal::Started(None)),
            Some(PlayerState::Rebuffering) => signals.push(Signal::RebufferStart),
            Some(PlayerState::FatalError) => signals.push(Signal::Error { fatal: true }),
            Some(PlayerState::Ended | PlayerState::Quit) => signals.push(Signal::End),
            _ => {}
        }
        if let Some(bsd) = cmcd.bsd {
            signals.push(Signal::RebufferEnd(Some(cmcd::ms(bsd))));
        }
        if cmcd.event == Some(EventType::Error) || cmcd.error {
            signals.push(Signal::Error { fatal: false });
        }
        signals.push(Signal::Request {
            su: cmcd.su,
            bs: cmcd.bs && cmcd.bl.is_none_or(|bl| bl < 1000),
            media: cmcd.ot.is_none_or(|ot| {
                matches!(
                    ot,
                    ObjectType::Audio | ObjectType::Video | ObjectType::Muxed
                )
            }),
            video_bitrate: cmcd.br.filter(|_| video),
        });
        if !self.sessions.update(sid, now, &cell, signals.as_slice()) {
            self.metrics.sessions_untracked.inc();
        }
    }
}

/// The few signals one report can carry, without a heap allocation.
struct Signals {
    items: [Signal; 6],
    len: usize,
}

impl Default for Signals {
    fn default() -> Self {
        Signals {
            items: [Signal::End; 6],
            len: 0,
        }
    }
}

impl Signals {
    fn push(&mut self, signal: Signal) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = signal;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[Signal] {
        &self.items[..self.len]
    }
}

#[cfg(test)]
mod tests;
