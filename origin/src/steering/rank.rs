//! Pathway health and ranking. No I/O; time comes in as tokio instants, so
//! tests run on a paused clock.
//!
//! Ranking, best first, by in turn:
//! 1. up (a failed probe takes a pathway down at once; it comes back only
//!    after passing every probe for the hysteresis: `max(ttl, 3 × probe_interval)`);
//! 2. not degraded (probe time to first byte above 4× the best up pathway's
//!    and above 250 ms, or players' reported throughput — reports of the
//!    last three TTLs — under a quarter of the best; it recovers below 2× /
//!    above a half, so it does not flap);
//! 3. preferred in the client's country (`countries`);
//! 4. weighted (weight > 0) before backups (weight 0);
//! 5. score `weight × (1 − QoE penalty)`, higher first;
//! 6. configuration order.
//!
//! A session keeps its pathway while that pathway is in the best group
//! (same answers to 1–4 as the first); otherwise it is given one from that
//! group, chosen by its session number in proportion to the scores.

use std::time::Duration;

use tokio::time::Instant;

use super::config::SteeringConfig;
use super::probe::Outcome;

/// Weight of a new sample in the moving averages.
const EWMA: f64 = 0.3;
/// TTFB of a degraded pathway: above this many times the best, and above `SLOW_FLOOR`.
const SLOW_FACTOR: f64 = 4.0;
const SLOW_FLOOR: Duration = Duration::from_millis(250);
/// Reported throughput of a degraded pathway: under the best divided by this.
const THIN_FACTOR: f64 = 4.0;

#[derive(Clone, Debug)]
struct Pathway {
    weight: u32,
    countries: Vec<String>,
    up: bool,
    /// Start of the current run of passed probes.
    passing_since: Option<Instant>,
    /// When `up` last changed (or the service started).
    changed: Instant,
    degraded: bool,
    last_error: Option<String>,
    ttfb: Option<f64>,
    probe_bps: Option<f64>,
    player_bps: Option<f64>,
    /// When a player last reported throughput here.
    player_at: Option<Instant>,
    penalty: f64,
    probes: u64,
    failures: u64,
}

/// Every pathway's state, in configuration order.
#[derive(Clone, Debug)]
pub struct Pathways {
    all: Vec<Pathway>,
    /// How long players' throughput reports count: three TTLs.
    reports_last: Duration,
}

/// What a steering request knew of its session (from `RELOAD-URI`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// Random per session, chosen at its first request.
    pub id: u64,
    /// The pathway this session was given last time.
    pub pathway: Option<usize>,
}

/// Why a session got its first pathway.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// First request of a session.
    New,
    /// Its pathway is still among the best: kept.
    Kept,
    /// Its pathway fell out of the best group: moved.
    Moved,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::New => "new",
            Reason::Kept => "kept",
            Reason::Moved => "moved",
        }
    }
}

/// A steering answer: pathway indices, best first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    pub priority: Vec<usize>,
    pub reason: Reason,
}

fn ewma(old: Option<f64>, new: f64) -> Option<f64> {
    Some(old.map_or(new, |o| o + EWMA * (new - o)))
}

impl Pathways {
    pub fn new(config: &SteeringConfig, now: Instant) -> Pathways {
        Pathways {
            all: config
                .pathways
                .iter()
                .map(|p| Pathway {
                    weight: p.weight.unwrap_or(1),
                    countries: p.countries.iter().map(|c| c.to_ascii_uppercase()).collect(),
                    // Up until a probe says otherwise: a restart must not
                    // send everyone to the last pathway.
                    up: true,
                    passing_since: Some(now),
                    changed: now,
                    degraded: false,
                    last_error: None,
                    ttfb: None,
                    probe_bps: None,
                    player_bps: None,
                    player_at: None,
                    penalty: 0.0,
                    probes: 0,
                    failures: 0,
                })
                .collect(),
            reports_last: config.ttl * 3,
        }
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.all[i].up
    }

    /// Applies a probe result; returns `Some(up)` when the pathway changed state.
    pub fn record_probe(
        &mut self,
        i: usize,
        outcome: &Outcome,
        now: Instant,
        hysteresis: Duration,
    ) -> Option<bool> {
        let p = &mut self.all[i];
        p.probes += 1;
        let change = if outcome.ok {
            p.last_error = None;
            if let Some(ttfb) = outcome.ttfb {
                p.ttfb = ewma(p.ttfb, ttfb.as_secs_f64());
            }
            if let Some(bps) = outcome.bits_per_second {
                p.probe_bps = ewma(p.probe_bps, bps);
            }
            let since = *p.passing_since.get_or_insert(now);
            if !p.up && now.duration_since(since) >= hysteresis {
                p.up = true;
                p.changed = now;
                Some(true)
            } else {
                None
            }
        } else {
            p.failures += 1;
            p.last_error = Some(outcome.describe());
            p.passing_since = None;
            if p.up {
                p.up = false;
                p.changed = now;
                Some(false)
            } else {
                None
            }
        };
        self.update_degraded(now);
        change
    }

    pub fn report_throughput(&mut self, i: usize, bps: f64, now: Instant) {
        let p = &mut self.all[i];
        // A stale average starts over rather than being nudged.
        let fresh = p
            .player_at
            .is_some_and(|at| now.duration_since(at) < self.reports_last);
        p.player_bps = ewma(p.player_bps.filter(|_| fresh), bps);
        p.player_at = Some(now);
        self.update_degraded(now);
    }

    pub fn set_penalty(&mut self, i: usize, penalty: f64) {
        self.all[i].penalty = penalty;
    }

    /// Slow or thin compared with the best up pathway, with a gap between
    /// the thresholds to enter and to leave.
    /// Only reports younger than three TTLs count.
    fn update_degraded(&mut self, now: Instant) {
        let last = self.reports_last;
        let reported = move |p: &Pathway| {
            p.player_bps
                .filter(|_| p.player_at.is_some_and(|at| now.duration_since(at) < last))
        };
        let up = || self.all.iter().filter(|p| p.up);
        let best_ttfb = up().filter_map(|p| p.ttfb).fold(f64::INFINITY, f64::min);
        let best_bps = up().filter_map(reported).fold(0.0, f64::max);
        for p in &mut self.all {
            let player_bps = reported(p);
            let ratio_ttfb = p.ttfb.map_or(1.0, |t| {
                if t < SLOW_FLOOR.as_secs_f64() || !best_ttfb.is_finite() {
                    1.0
                } else {
                    t / best_ttfb.max(1e-6)
                }
            });
            let ratio_bps = player_bps
                .filter(|_| best_bps > 0.0)
                .map_or(1.0, |b| best_bps / b.max(1.0));
            p.degraded = if p.degraded {
                ratio_ttfb > SLOW_FACTOR / 2.0 || ratio_bps > THIN_FACTOR / 2.0
            } else {
                ratio_ttfb > SLOW_FACTOR || ratio_bps > THIN_FACTOR
            };
        }
    }

    /// The group a pathway is in (smaller is better), for `country`.
    fn group(&self, i: usize, country: Option<&str>) -> (bool, bool, bool, bool) {
        let p = &self.all[i];
        let preferred = country.is_some_and(|c| p.countries.iter().any(|x| x == c));
        (!p.up, p.degraded, !preferred, p.weight == 0)
    }

    fn score(&self, i: usize) -> f64 {
        let p = &self.all[i];
        f64::from(p.weight.max(1)) * (1.0 - p.penalty)
    }

    /// Pathway indices, best first, for a client in `country`.
    pub fn ranking(&self, country: Option<&str>) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.all.len()).collect();
        order.sort_by(|&a, &b| {
            self.group(a, country)
                .cmp(&self.group(b, country))
                .then(self.score(b).total_cmp(&self.score(a)))
                .then(a.cmp(&b))
        });
        order
    }

    /// The session's answer: its pathway first while that is among the
    /// best; else one of the best, in proportion to their scores.
    pub fn decide(&self, session: &Session, country: Option<&str>) -> Choice {
        let order = self.ranking(country);
        let best = self.group(order[0], country);
        let group: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| self.group(i, country) == best)
            .collect();
        let (first, reason) = match session.pathway {
            Some(p) if group.contains(&p) => (p, Reason::Kept),
            had => {
                let reason = if had.is_some() {
                    Reason::Moved
                } else {
                    Reason::New
                };
                // Scores in thousandths, so a penalty counts a little too.
                let weights: Vec<u64> = group
                    .iter()
                    .map(|&i| (self.score(i) * 1000.0).round().max(1.0) as u64)
                    .collect();
                let total: u64 = weights.iter().sum();
                let mut ticket = session.id % total.max(1);
                let mut pick = group[0];
                for (&i, &w) in group.iter().zip(&weights) {
                    if ticket < w {
                        pick = i;
                        break;
                    }
                    ticket -= w;
                }
                (pick, reason)
            }
        };
        let mut priority = vec![first];
        priority.extend(order.into_iter().filter(|&i| i != first));
        Choice { priority, reason }
    }

    /// One pathway, for the admin view.
    pub fn describe(&self, i: usize, now: Instant) -> serde_json::Value {
        let p = &self.all[i];
        serde_json::json!({
            "up": p.up,
            "degraded": p.degraded,
            "seconds_in_state": now.duration_since(p.changed).as_secs_f64(),
            "probes": p.probes,
            "failed_probes": p.failures,
            "last_error": p.last_error,
            "ttfb_seconds": p.ttfb,
            "probe_throughput_bps": p.probe_bps.map(f64::round),
            "player_throughput_bps": p.player_bps.map(f64::round),
            "qoe_penalty": p.penalty,
        })
    }
}
