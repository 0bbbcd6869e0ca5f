//! `POST /qoe/beacon` (`qoe.beacon_path`): players that report events rather
//! than (or as well as) CMCD on each request.
//!
//! Two bodies are accepted, by `Content-Type`:
//! - `application/cmcd`: CMCD v2 event mode (CTA-5004-B §5), one payload per
//!   line, each with its `e=` event key, as @svta/cml-cmcd's reporter sends.
//! - anything else is read as JSON: one event object or an array of at most
//!   [`MAX_EVENTS`], each
//!   `{"session": "…", "event": "start" | "rebuffer_start" | "rebuffer_end" |
//!   "bitrate_switch" | "error" | "end", …}` with the optional fields of
//!   [`BeaconEvent`].
//!
//! A good body gets `204`; a bad one `400` with the reason, counted in
//! `strata_qoe_malformed_total{source="beacon"}` and
//! `strata_qoe_beacons_total{outcome="bad"}`, and none of it is used.

use std::net::SocketAddr;

use http::{header, request::Parts, HeaderValue, Method, StatusCode};
use serde::Deserialize;
use tokio::time::Instant;

use super::cmcd::{self, Cmcd, MAX_PAYLOAD};
use super::metrics::{BeaconLabels, MalformedLabels};
use super::sessions::Signal;
use super::Qoe;
use crate::request::Protocol;
use crate::response::{EdgeResponse, Outcome};

/// Events in one beacon body.
pub const MAX_EVENTS: usize = 64;

/// One JSON beacon event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconEvent {
    /// The playback session (the same id as CMCD `sid` if the player sends both).
    pub session: String,
    pub event: BeaconKind,
    /// `start`: the player's own measure from play request to first frame.
    #[serde(default)]
    pub startup_ms: Option<u64>,
    /// `rebuffer_end`: how long the stall lasted.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// `start`, `bitrate_switch`: the video bitrate now playing.
    #[serde(default)]
    pub bitrate_kbps: Option<u64>,
    /// `error`: whether playback stopped.
    #[serde(default)]
    pub fatal: Option<bool>,
    /// `error`: the player's code; logged, never a label.
    #[serde(default)]
    pub code: Option<String>,
    /// The CDN/pathway the player is on (one of `qoe.pathways`), if it knows.
    #[serde(default)]
    pub cdn: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BeaconKind {
    Start,
    RebufferStart,
    RebufferEnd,
    BitrateSwitch,
    Error,
    End,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Batch {
    One(BeaconEvent),
    Many(Vec<BeaconEvent>),
}

/// Why a beacon body was refused.
struct Refusal {
    reason: &'static str,
    message: String,
}

impl Qoe {
    /// Answer a request for the beacon path; `None` for any other path.
    pub fn beacon(
        &self,
        parts: &Parts,
        body: &[u8],
        client: SocketAddr,
        protocol: Protocol,
    ) -> Option<EdgeResponse> {
        if parts.uri.path() != self.config.beacon_path {
            return None;
        }
        let response = match parts.method {
            Method::POST => match self.take_beacon(parts, body, client, protocol) {
                Ok(()) => {
                    self.count_beacon("ok");
                    local(StatusCode::NO_CONTENT, "", None)
                }
                Err(refusal) => {
                    tracing::debug!(reason = refusal.reason, message = %refusal.message, "bad QoE beacon");
                    self.count_beacon("bad");
                    self.metrics
                        .malformed
                        .get_or_create(&MalformedLabels {
                            source: "beacon",
                            reason: refusal.reason,
                        })
                        .inc();
                    local(
                        StatusCode::BAD_REQUEST,
                        &format!("bad beacon: {}", refusal.message),
                        Some("bad-beacon"),
                    )
                }
            },
            Method::OPTIONS => {
                let mut r = local(StatusCode::NO_CONTENT, "", None);
                let h = &mut r.head.headers;
                h.remove(header::CONTENT_TYPE);
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_METHODS,
                    HeaderValue::from_static("POST, OPTIONS"),
                );
                h.insert(
                    header::ACCESS_CONTROL_ALLOW_HEADERS,
                    HeaderValue::from_static("Content-Type"),
                );
                h.insert(
                    header::ACCESS_CONTROL_MAX_AGE,
                    HeaderValue::from_static("86400"),
                );
                r
            }
            _ => {
                let mut r = local(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "the QoE beacon takes POST",
                    Some("method"),
                );
                r.head
                    .headers
                    .insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
                r
            }
        };
        Some(response)
    }

    fn count_beacon(&self, outcome: &'static str) {
        self.metrics
            .beacons
            .get_or_create(&BeaconLabels { outcome })
            .inc();
    }

    fn take_beacon(
        &self,
        parts: &Parts,
        body: &[u8],
        client: SocketAddr,
        protocol: Protocol,
    ) -> Result<(), Refusal> {
        let content_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let now = Instant::now();
        if content_type == "application/cmcd" {
            return self.take_cmcd_events(parts, body, client, protocol, now);
        }
        let events = match serde_json::from_slice::<Batch>(body) {
            Ok(Batch::One(event)) => vec![event],
            Ok(Batch::Many(events)) => events,
            Err(e) => {
                return Err(Refusal {
                    reason: "json",
                    message: format!(
                        "not a beacon event or array of them ({e}); see README \"QoE beacon\""
                    ),
                })
            }
        };
        if events.is_empty() || events.len() > MAX_EVENTS {
            return Err(Refusal {
                reason: "json",
                message: format!("1 to {MAX_EVENTS} events per beacon"),
            });
        }
        for event in &events {
            let len = event.session.chars().count();
            if len == 0 || len > 128 {
                return Err(Refusal {
                    reason: "json",
                    message: "session must be 1 to 128 characters".into(),
                });
            }
            if event.cdn.as_ref().is_some_and(|c| c.len() > 128)
                || event.code.as_ref().is_some_and(|c| c.len() > 128)
            {
                return Err(Refusal {
                    reason: "json",
                    message: "cdn and code are at most 128 characters".into(),
                });
            }
        }
        for event in events {
            let place = self.place(&parts.headers, client, protocol, event.cdn.as_deref());
            let cell = self.cells.get(&self.metrics, place);
            if let Some(kbps) = event.bitrate_kbps {
                cell.bitrate.observe(kbps as f64 * 1000.0);
            }
            let signal = match event.event {
                BeaconKind::Start => Signal::Started(event.startup_ms.map(cmcd::ms)),
                BeaconKind::RebufferStart => Signal::RebufferStart,
                BeaconKind::RebufferEnd => Signal::RebufferEnd(event.duration_ms.map(cmcd::ms)),
                BeaconKind::BitrateSwitch => Signal::BitrateSwitch(event.bitrate_kbps),
                BeaconKind::Error => {
                    if let Some(code) = &event.code {
                        tracing::debug!(code, session = %event.session, "player error beaconed");
                    }
                    Signal::Error {
                        fatal: event.fatal.unwrap_or(false),
                    }
                }
                BeaconKind::End => Signal::End,
            };
            let mut signals = vec![signal];
            if let (BeaconKind::Start, Some(kbps)) = (event.event, event.bitrate_kbps) {
                signals.push(Signal::Request {
                    su: false,
                    bs: false,
                    media: true,
                    video_bitrate: Some(kbps),
                });
            }
            if !self.sessions.update(&event.session, now, &cell, &signals) {
                self.metrics.sessions_untracked.inc();
            }
        }
        Ok(())
    }

    /// CMCD v2 event mode: all lines or none.
    fn take_cmcd_events(
        &self,
        parts: &Parts,
        body: &[u8],
        client: SocketAddr,
        protocol: Protocol,
        now: Instant,
    ) -> Result<(), Refusal> {
        let text = std::str::from_utf8(body).map_err(|_| Refusal {
            reason: "encoding",
            message: "body is not UTF-8".into(),
        })?;
        let mut reports = Vec::new();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            if reports.len() == MAX_EVENTS {
                return Err(Refusal {
                    reason: "too-long",
                    message: format!("at most {MAX_EVENTS} reports per beacon"),
                });
            }
            let mut report = Cmcd::default();
            report.parse_into(line).map_err(|e| Refusal {
                reason: e.as_str(),
                message: e.to_string(),
            })?;
            if report.event.is_none() {
                return Err(Refusal {
                    reason: "value",
                    message: "a CMCD event report needs its e= key".into(),
                });
            }
            reports.push(report);
        }
        if reports.is_empty() {
            return Err(Refusal {
                reason: "syntax",
                message: format!(
                    "no CMCD report in the body (one per line, each at most {MAX_PAYLOAD} bytes)"
                ),
            });
        }
        for report in &reports {
            let place = self.place(&parts.headers, client, protocol, report.cdn.as_deref());
            self.record(report, place, now);
        }
        Ok(())
    }
}

fn local(status: StatusCode, message: &str, reason: Option<&'static str>) -> EdgeResponse {
    EdgeResponse::local(
        status,
        message,
        Outcome {
            cache: crate::response::CacheStatus::Pass,
            upstream: None,
            reason,
        },
    )
}
