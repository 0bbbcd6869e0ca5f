//! The `[steering]` section of the origin's configuration.

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[steering]`: write HLS/DASH content steering tags into every
/// multivariant playlist and MPD, and serve the steering manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringConfig {
    /// What players are told to wait between steering reloads (`TTL`, whole seconds).
    #[serde(with = "humantime_serde", default = "default_ttl")]
    pub ttl: Duration,
    /// Public base URL of the steering service players call (`http(s)://host[:port]`);
    /// default: this origin's own playback listener (`server.http`).
    #[serde(default)]
    pub server: Option<String>,
    /// Active health probes of every pathway, this often.
    #[serde(with = "humantime_serde", default = "default_probe_interval")]
    pub probe_interval: Duration,
    /// The CDNs, in the order used when nothing else tells them apart.
    pub pathways: Vec<PathwayConfig>,
    /// Per-country preferences: where the client address is looked up.
    #[serde(default)]
    pub geo: Option<SteeringGeoConfig>,
}

/// `[[steering.pathways]]`: one CDN.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathwayConfig {
    /// `PATHWAY-ID` / `serviceLocation`: letters, digits, `.`, `-`, `_`.
    pub id: String,
    /// The CDN's base URL; playlists and MPDs name `{base_url}/live/{channel}/…`.
    pub base_url: String,
    /// Share of new sessions among equally good pathways (default 1);
    /// 0: a backup, used only when no weighted pathway is as good.
    #[serde(default)]
    pub weight: Option<u32>,
    /// ISO 3166-1 alpha-2 countries where this pathway is preferred.
    #[serde(default)]
    pub countries: Vec<String>,
    /// Path probed through this CDN (a playlist, or anything that answers
    /// 200); default: a live channel's media playlist and its newest segment.
    #[serde(default)]
    pub probe_path: Option<String>,
}

/// `[steering.geo]`: the same kind of MaxMind database the edge's `[geo]` uses.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SteeringGeoConfig {
    /// MaxMind DB file (GeoIP2/GeoLite2 Country or City).
    pub database: std::path::PathBuf,
    /// Peers whose `X-Forwarded-For` is believed: networks or single addresses.
    #[serde(default = "default_trusted")]
    pub trusted_proxies: Vec<String>,
}

fn default_ttl() -> Duration {
    Duration::from_secs(10)
}

fn default_probe_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_trusted() -> Vec<String> {
    vec!["127.0.0.1/32".to_owned()]
}

/// `PATHWAY-ID` characters (RFC 8216bis §4.4.6.6).
pub(crate) fn valid_pathway_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

/// `http(s)://authority[/path]` without query or fragment, trailing `/` removed.
pub(crate) fn parse_base_url(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next().unwrap_or("");
    let bad = |c: char| c.is_whitespace() || matches!(c, '?' | '#' | '"' | '<' | '>' | '\\');
    if authority.is_empty() || authority.contains('@') || url.contains(bad) {
        return None;
    }
    authority.parse::<http::uri::Authority>().ok()?;
    Some(url.trim_end_matches('/').to_owned())
}

impl SteeringConfig {
    /// Every error names its key. `playback` is `server.http`.
    pub fn validate(&self, playback: SocketAddr) -> Result<(), String> {
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(86_400) {
            return Err("steering.ttl: between 1s and 24h (whole seconds)".into());
        }
        if self.probe_interval < Duration::from_millis(100) {
            return Err("steering.probe_interval: at least 100ms".into());
        }
        match &self.server {
            Some(server) if parse_base_url(server).is_none() => {
                return Err(format!(
                    "steering.server: {server:?} is not an http(s)://host[:port] URL"
                ))
            }
            None if playback.ip().is_unspecified() => {
                return Err(format!(
                    "steering.server: required, since server.http ({playback}) listens on every address and names no host players can reach"
                ))
            }
            _ => {}
        }
        if self.pathways.is_empty() {
            return Err("steering.pathways: list at least one pathway".into());
        }
        for (i, p) in self.pathways.iter().enumerate() {
            let key = format!("steering.pathways[{i}]");
            if !valid_pathway_id(&p.id) {
                return Err(format!(
                    "{key}.id: {:?} must be 1-64 letters, digits, '.', '-' or '_'",
                    p.id
                ));
            }
            if self.pathways[..i].iter().any(|q| q.id == p.id) {
                return Err(format!("{key}.id: {:?} is listed twice", p.id));
            }
            if parse_base_url(&p.base_url).is_none() {
                return Err(format!(
                    "{key}.base_url: {:?} is not an http(s)://host[:port][/path] URL",
                    p.base_url
                ));
            }
            if let Some(c) = p
                .countries
                .iter()
                .find(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()))
            {
                return Err(format!(
                    "{key}.countries: {c:?} is not an ISO 3166-1 alpha-2 code"
                ));
            }
            if p.probe_path
                .as_deref()
                .is_some_and(|path| !path.starts_with('/') || path.contains(char::is_whitespace))
            {
                return Err(format!("{key}.probe_path: must start with '/'"));
            }
        }
        if let Some(geo) = &self.geo {
            super::geo::Geo::open(geo).map_err(|e| format!("steering.geo.{e}"))?;
        }
        Ok(())
    }

    /// How long a pathway must pass its probes before it is ranked back:
    /// one TTL or three probe intervals, whichever is longer.
    pub fn hysteresis(&self) -> Duration {
        self.ttl.max(self.probe_interval * 3)
    }
}
