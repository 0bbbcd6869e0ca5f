//! Steering request parameters, parsed once.
//!
//! Players add `_HLS_pathway` and `_HLS_throughput` (hls.js, Shaka) or
//! `_DASH_pathway` and `_DASH_throughput` (dash.js sends every service
//! location it used, quoted and comma-separated, with one throughput each;
//! Shaka one of each). `session` and `pathway` are this service's own state,
//! written into `RELOAD-URI`. Every other parameter (a playback token, say)
//! is carried on into `RELOAD-URI` as it came.

use percent_encoding::percent_decode_str;

use super::rank::Session;
use super::Steering;

/// Longest query accepted; longer is refused with 414.
pub const MAX_QUERY: usize = 4096;
/// Most foreign parameters carried on into `RELOAD-URI`.
const MAX_KEPT: usize = 16;
/// Highest believable throughput (1 Tbit/s).
const MAX_BPS: u64 = 1_000_000_000_000;

/// A steering request's parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SteeringQuery {
    pub session: Session,
    /// Whether `session` came from the request (else it is new).
    pub known_session: bool,
    /// `(pathway index, bits per second)` the player reported.
    pub throughput: Vec<(usize, u64)>,
    /// Other parameters, raw (`name=value`), for `RELOAD-URI`.
    pub kept: Vec<String>,
}

/// Why a query is refused outright.
#[derive(Debug, PartialEq, Eq)]
pub enum QueryError {
    TooLong,
}

fn decode(raw: &str) -> String {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

fn unquote(s: &str) -> &str {
    s.trim()
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s.trim())
}

impl SteeringQuery {
    /// Parses `query`; values that make no sense are ignored and counted.
    /// `fresh_id` supplies a session number when the request has none.
    pub fn parse(
        steering: &Steering,
        query: Option<&str>,
        fresh_id: impl FnOnce() -> u64,
    ) -> Result<SteeringQuery, QueryError> {
        let query = query.unwrap_or("");
        if query.len() > MAX_QUERY {
            steering.metrics.bad_input("query_too_long");
            return Err(QueryError::TooLong);
        }
        let mut out = SteeringQuery::default();
        let (mut pathways, mut throughputs) = (None, None);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            match name {
                "_HLS_pathway" | "_DASH_pathway" => pathways = Some(decode(value)),
                "_HLS_throughput" | "_DASH_throughput" => throughputs = Some(decode(value)),
                "session" => match u64::from_str_radix(value, 16) {
                    Ok(id) if value.len() == 16 => {
                        out.session.id = id;
                        out.known_session = true;
                    }
                    _ => steering.metrics.bad_input("session"),
                },
                "pathway" => match steering.pathway_index(&decode(value)) {
                    Some(i) => out.session.pathway = Some(i),
                    None => steering.metrics.bad_input("session"),
                },
                _ if out.kept.len() < MAX_KEPT => out.kept.push(pair.to_owned()),
                _ => {}
            }
        }
        if !out.known_session {
            out.session = Session {
                id: fresh_id(),
                pathway: None,
            };
        }
        let pathways = pathways.unwrap_or_default();
        let throughputs = throughputs.unwrap_or_default();
        let mut rates = unquote(&throughputs).split(',');
        for id in unquote(&pathways).split(',').map(str::trim) {
            let rate = rates.next().map(str::trim).unwrap_or("");
            if id.is_empty() {
                continue;
            }
            let Some(index) = steering.pathway_index(id) else {
                steering.metrics.bad_input("pathway");
                continue;
            };
            if rate.is_empty() {
                continue;
            }
            match rate.parse::<f64>() {
                Ok(bps) if bps.is_finite() && bps > 0.0 && bps <= MAX_BPS as f64 => {
                    out.throughput.push((index, bps.round() as u64));
                }
                _ => steering.metrics.bad_input("throughput"),
            }
        }
        // A throughput with no pathway to go with it.
        if pathways.is_empty() && !throughputs.is_empty() {
            steering.metrics.bad_input("throughput");
        }
        Ok(out)
    }

    /// `RELOAD-URI` for the next request of this session.
    pub fn reload_uri(&self, base: &str, pathway: &str) -> String {
        let mut uri = format!("{base}?session={:016x}&pathway={pathway}", self.session.id);
        for pair in &self.kept {
            uri.push('&');
            uri.push_str(pair);
        }
        uri
    }
}
