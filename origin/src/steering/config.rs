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
    /// Left out for a clone (its base pathway's URL with the clone's host).
    #[serde(default)]
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
    /// Makes this pathway a clone of another (HLS Content Steering 1.2
    /// `PATHWAY-CLONES`): it is not written into playlists and MPDs; the
    /// steering manifests tell players to derive its URIs from its base's.
    #[serde(default)]
    pub clone: Option<CloneConfig>,
}

/// `[steering.pathways.clone]`: one `PATHWAY-CLONES` entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloneConfig {
    /// `BASE-ID`: the listed (not cloned) pathway whose URIs are copied.
    pub base: String,
    /// `URI-REPLACEMENT` `HOST`: the hostname put in place of the base's;
    /// scheme, port and path stay the base's. A hostname only: hls.js and
    /// Shaka replace only the hostname (a port in it is ignored), dash.js
    /// the whole authority, so the base's URL must use its scheme's default
    /// port for all three to reach the same place.
    pub host: String,
    /// `URI-REPLACEMENT` `PARAMS`: query parameters hls.js and dash.js add to
    /// the copied URIs (Shaka 5.2 ignores them: do not rely on them for access).
    #[serde(default)]
    pub params: std::collections::BTreeMap<String, String>,
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

/// A DNS name or IPv4 address: what a player's `URL.hostname` takes from a
/// steering manifest's `HOST` (no port).
fn valid_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn authority_of(url: &str) -> Option<http::uri::Authority> {
    let rest = url.split_once("://")?.1;
    rest.split('/').next()?.parse().ok()
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
            if let Some(clone) = &p.clone {
                self.validate_clone(&key, p, clone)?;
            } else if parse_base_url(&p.base_url).is_none() {
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

    fn validate_clone(
        &self,
        key: &str,
        p: &PathwayConfig,
        clone: &CloneConfig,
    ) -> Result<(), String> {
        if !p.base_url.is_empty() {
            return Err(format!(
                "{key}.base_url: leave it out for a clone (its URL is {:?}'s with host {:?})",
                clone.base, clone.host
            ));
        }
        let Some(base) = self
            .pathways
            .iter()
            .find(|b| b.id == clone.base && b.clone.is_none())
        else {
            return Err(format!(
                "{key}.clone.base: {:?} is not a listed pathway (a clone copies a pathway that is not itself a clone)",
                clone.base
            ));
        };
        if !valid_hostname(&clone.host) {
            return Err(format!(
                "{key}.clone.host: {:?} is not a hostname (no scheme, port or path: players keep the base's)",
                clone.host
            ));
        }
        if parse_base_url(&base.base_url)
            .and_then(|url| authority_of(&url))
            .is_some_and(|a| a.port_u16().is_some())
        {
            return Err(format!(
                "{key}.clone.base: {:?}'s base_url names a port; a clone needs the scheme's default port (dash.js drops the port when it applies HOST, hls.js and Shaka keep it)",
                clone.base
            ));
        }
        let bad = |t: &str| t.len() > 256 || t.chars().any(char::is_control);
        if let Some((name, _)) = clone
            .params
            .iter()
            .find(|(k, v)| k.is_empty() || bad(k) || bad(v))
        {
            return Err(format!(
                "{key}.clone.params: {name:?}: names and values up to 256 characters without control characters, names not empty"
            ));
        }
        Ok(())
    }

    /// A clone's base URL: its base pathway's with the hostname replaced
    /// (what players derive, and what the probes ask).
    pub(crate) fn clone_base_url(&self, clone: &CloneConfig) -> Option<String> {
        let base = self.pathways.iter().find(|b| b.id == clone.base)?;
        let url = parse_base_url(&base.base_url)?;
        let (scheme, rest) = url.split_once("://")?;
        let path = &rest[rest.find('/').unwrap_or(rest.len())..];
        let port = authority_of(&url)?
            .port_u16()
            .map(|p| format!(":{p}"))
            .unwrap_or_default();
        Some(format!("{scheme}://{}{port}{path}", clone.host))
    }

    /// How long a pathway must pass its probes before it is ranked back:
    /// one TTL or three probe intervals, whichever is longer.
    pub fn hysteresis(&self) -> Duration {
        self.ttl.max(self.probe_interval * 3)
    }
}
