//! Per-session state (keyed by CMCD `sid` or the beacon's `session`): what
//! startup time, stalls and the rebuffer ratio need and single requests
//! cannot say. Bounded (`qoe.max_sessions`) and expiring (`qoe.session_idle`).
//!
//! From CMCD v1 alone the timeline is inferred the way players set the keys:
//! hls.js, dash.js and Shaka flag `su` on every request while the player is
//! buffering to start or to recover, and `bs` on the first request after it
//! ran dry. So startup ends at the first request of a session no longer
//! flagged `su`, and a stall runs from a `bs` request to the next request
//! flagged neither. A `bs` whose `bl` says a second or more is buffered is not
//! taken as a stall: dash.js flags `bs,su` again after a manifest refresh
//! with a full buffer, while the picture never stopped. v2 keys (`msd`, `sta`, `bsd`) and beacons say it outright
//! and win.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use tokio::time::Instant;

use super::metrics::{Cell, SessionExemplar};

/// Longest gap between two reports of a session counted as watched (or
/// stalled) time; a longer silence is a pause or a player in the background.
pub const MAX_GAP: Duration = Duration::from_secs(10);

/// What one request or event says about its session.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Signal {
    /// A request's CMCD flags, and its encoded bitrate if it is video.
    Request {
        su: bool,
        /// `bs` on a request whose buffer (`bl`) is under a second or not given.
        bs: bool,
        /// The object is media (audio, video or unknown), not a manifest,
        /// init segment or key: only media requests end startup.
        media: bool,
        video_bitrate: Option<u64>,
    },
    /// Playback began; with the player's own measure of startup, if given.
    Started(Option<Duration>),
    RebufferStart,
    /// A stall ended; with its duration, if the player measured it.
    RebufferEnd(Option<Duration>),
    /// The player switched to this video bitrate (kbps).
    BitrateSwitch(Option<u64>),
    Error {
        fatal: bool,
    },
    /// The session ended (player stopped, quit or gave up).
    End,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Startup {
    /// Waiting for playback; `flagged` once a request said `su`.
    Pending {
        flagged: bool,
    },
    Done,
}

struct Session {
    cell: Arc<Cell>,
    first_seen: Instant,
    last_seen: Instant,
    startup: Startup,
    /// Since when, and how much of it is already counted.
    stall: Option<Duration>,
    video_bitrate: Option<u64>,
}

/// The live sessions.
pub struct Sessions {
    // Held for one lookup-and-update of a map entry, never across `.await`.
    map: Mutex<HashMap<Box<str>, Session, foldhash::fast::RandomState>>,
    max: usize,
    idle: Duration,
}

impl Sessions {
    pub fn new(max: usize, idle: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::default()),
            max,
            idle,
        }
    }

    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Apply what a request or event said about session `sid`. `false`: the
    /// session was not tracked (too many live ones).
    pub fn update(&self, sid: &str, now: Instant, cell: &Arc<Cell>, signals: &[Signal]) -> bool {
        let mut map = self.map.lock();
        if !map.contains_key(sid) {
            if map.len() >= self.max {
                expire_locked(&mut map, now, self.idle);
                if map.len() >= self.max {
                    return false;
                }
            }
            cell.sessions_started.inc();
            cell.sessions_active.inc();
            map.insert(
                sid.into(),
                Session {
                    cell: cell.clone(),
                    first_seen: now,
                    last_seen: now,
                    startup: Startup::Pending { flagged: false },
                    stall: None,
                    video_bitrate: None,
                },
            );
        }
        let Some(session) = map.get_mut(sid) else {
            return false;
        };
        if session.cell.place != cell.place {
            // Steered to another CDN (or moved country): count it there from now on.
            session.cell.sessions_active.dec();
            cell.sessions_active.inc();
            session.cell = cell.clone();
        }
        session.elapse(now);
        let mut ended = false;
        for signal in signals {
            ended |= session.apply(*signal, now, sid);
        }
        if ended {
            if let Some(session) = map.remove(sid) {
                session.cell.sessions_active.dec();
            }
        }
        true
    }

    /// Forget sessions silent for longer than `qoe.session_idle`.
    pub fn expire(&self, now: Instant) {
        expire_locked(&mut self.map.lock(), now, self.idle);
    }
}

fn expire_locked(
    map: &mut HashMap<Box<str>, Session, foldhash::fast::RandomState>,
    now: Instant,
    idle: Duration,
) {
    map.retain(|_, s| {
        let keep = now.saturating_duration_since(s.last_seen) < idle;
        if !keep {
            s.cell.sessions_active.dec();
        }
        keep
    });
}

impl Session {
    /// Count the time since the last report as watched, and stalled if it was.
    fn elapse(&mut self, now: Instant) {
        let gap = now.saturating_duration_since(self.last_seen).min(MAX_GAP);
        self.last_seen = now;
        if self.startup != Startup::Done || gap.is_zero() {
            return;
        }
        self.cell.watch.inc_by(gap.as_secs_f64());
        if let Some(counted) = &mut self.stall {
            self.cell.rebuffer.inc_by(gap.as_secs_f64());
            *counted += gap;
        }
    }

    fn started(&mut self, took: Duration, sid: &str) {
        self.startup = Startup::Done;
        let exemplar = SessionExemplar {
            session: sid.chars().take(64).collect(),
        };
        self.cell
            .startup
            .observe(took.as_secs_f64(), Some(exemplar), Some(SystemTime::now()));
    }

    fn stall_starts(&mut self) {
        if self.startup == Startup::Done && self.stall.is_none() {
            self.stall = Some(Duration::ZERO);
            self.cell.rebuffers.inc();
        }
    }

    fn stall_ends(&mut self, measured: Option<Duration>) {
        match (self.stall.take(), measured) {
            // The player's measure wins over what the gaps between its reports said.
            (Some(counted), Some(d)) => {
                if let Some(more) = d.checked_sub(counted) {
                    self.cell.rebuffer.inc_by(more.as_secs_f64());
                }
            }
            (Some(_), None) => {}
            (None, Some(d)) if !d.is_zero() => {
                self.cell.rebuffers.inc();
                self.cell.rebuffer.inc_by(d.as_secs_f64());
            }
            (None, _) => {}
        }
    }

    /// `true` when the session is over.
    fn apply(&mut self, signal: Signal, now: Instant, sid: &str) -> bool {
        match signal {
            Signal::Request {
                su,
                bs,
                media,
                video_bitrate,
            } => {
                match self.startup {
                    Startup::Pending { .. } if su => {
                        self.startup = Startup::Pending { flagged: true }
                    }
                    // dash.js asks for the MPD without `su`, then flags the rest.
                    Startup::Pending { .. } if !media => {}
                    Startup::Pending { flagged: true } => {
                        self.started(now.saturating_duration_since(self.first_seen), sid)
                    }
                    // A player that never flags startup: nothing to time.
                    Startup::Pending { flagged: false } => self.startup = Startup::Done,
                    Startup::Done if bs => self.stall_starts(),
                    Startup::Done if !su && self.stall.is_some() => self.stall_ends(None),
                    Startup::Done => {}
                }
                if let Some(bitrate) = video_bitrate {
                    if self.video_bitrate.is_some_and(|b| b != bitrate) {
                        self.cell.bitrate_switches.inc();
                    }
                    self.video_bitrate = Some(bitrate);
                }
            }
            Signal::Started(took) => {
                if let Startup::Pending { .. } = self.startup {
                    let took = took.unwrap_or(now.saturating_duration_since(self.first_seen));
                    self.started(took, sid);
                }
                self.stall_ends(None);
            }
            Signal::RebufferStart => self.stall_starts(),
            Signal::RebufferEnd(d) => self.stall_ends(d),
            Signal::BitrateSwitch(bitrate) => {
                self.cell.bitrate_switches.inc();
                if bitrate.is_some() {
                    self.video_bitrate = bitrate;
                }
            }
            Signal::Error { fatal: true } => {
                self.cell.fatal_errors.inc();
            }
            Signal::Error { fatal: false } => {
                self.cell.errors.inc();
            }
            Signal::End => {
                self.stall_ends(None);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qoe::metrics::{Cells, Place, QoeMetrics};
    use prometheus_client::registry::Registry;

    fn setup() -> (Registry, QoeMetrics, Cells) {
        let mut registry = Registry::default();
        let metrics = QoeMetrics::register(&mut registry);
        (
            registry,
            metrics,
            Cells::new(vec!["cdn-a".into(), "cdn-b".into()]),
        )
    }

    fn text(registry: &Registry) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).expect("encode");
        text
    }

    fn request(su: bool, bs: bool) -> Signal {
        Signal::Request {
            su,
            bs,
            media: true,
            video_bitrate: Some(800),
        }
    }

    fn place(cdn: u16) -> Place {
        Place {
            cdn,
            protocol: 0,
            country: *b"GB",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn v1_flags_give_startup_stalls_and_watch_time() {
        let (registry, metrics, cells) = setup();
        let cell = cells.get(&metrics, place(0));
        let sessions = Sessions::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Startup: the manifest, two su requests, then playing at t=2.
        let manifest = Signal::Request {
            su: false,
            bs: false,
            media: false,
            video_bitrate: None,
        };
        sessions.update("s1", at(0), &cell, &[manifest]);
        sessions.update("s1", at(0), &cell, &[request(true, false)]);
        sessions.update("s1", at(1), &cell, &[request(true, false)]);
        sessions.update("s1", at(2), &cell, &[request(false, false)]);
        // Plays 4 s, stalls (bs) at 6, recovers at 9.
        sessions.update("s1", at(6), &cell, &[request(true, true)]);
        sessions.update("s1", at(7), &cell, &[request(true, false)]);
        sessions.update("s1", at(9), &cell, &[request(false, false)]);
        sessions.update("s1", at(11), &cell, &[request(false, false)]);
        let t = text(&registry);
        for line in [
            r#"strata_qoe_startup_seconds_count{cdn="cdn-a",country="GB"} 1"#,
            r#"strata_qoe_startup_seconds_sum{cdn="cdn-a",country="GB"} 2.0"#,
            r#"strata_qoe_rebuffers_total{cdn="cdn-a",country="GB"} 1"#,
            r#"strata_qoe_rebuffer_seconds_total{cdn="cdn-a",country="GB"} 3.0"#,
            r#"strata_qoe_watch_seconds_total{cdn="cdn-a",country="GB"} 9.0"#,
            r#"strata_qoe_sessions_active{cdn="cdn-a",country="GB"} 1"#,
            r#"strata_qoe_sessions_started_total{cdn="cdn-a",country="GB"} 1"#,
        ] {
            assert!(t.contains(line), "{line} missing from\n{t}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn beacons_and_v2_keys_win_and_sessions_end_expire_and_are_bounded() {
        let (registry, metrics, cells) = setup();
        let (a, b) = (cells.get(&metrics, place(0)), cells.get(&metrics, place(1)));
        let sessions = Sessions::new(2, Duration::from_secs(30));
        let now = Instant::now();
        sessions.update(
            "x",
            now,
            &a,
            &[Signal::Started(Some(Duration::from_millis(1500)))],
        );
        sessions.update("x", now, &a, &[Signal::RebufferStart]);
        sessions.update(
            "x",
            now,
            &a,
            &[Signal::RebufferEnd(Some(Duration::from_millis(700)))],
        );
        sessions.update(
            "x",
            now,
            &a,
            &[
                Signal::BitrateSwitch(Some(3000)),
                Signal::Error { fatal: false },
            ],
        );
        // Steered to cdn-b: the active gauge follows.
        sessions.update("x", now, &b, &[Signal::Error { fatal: true }]);
        sessions.update("y", now, &a, &[Signal::Started(None)]);
        assert!(!sessions.update("z", now, &a, &[]), "bounded at 2");
        let t = text(&registry);
        for line in [
            r#"strata_qoe_startup_seconds_sum{cdn="cdn-a",country="GB"} 1.5"#,
            r#"strata_qoe_rebuffer_seconds_total{cdn="cdn-a",country="GB"} 0.7"#,
            r#"strata_qoe_bitrate_switches_total{cdn="cdn-a",country="GB"} 1"#,
            r#"strata_qoe_player_errors_total{cdn="cdn-a",country="GB",fatal="false"} 1"#,
            r#"strata_qoe_player_errors_total{cdn="cdn-b",country="GB",fatal="true"} 1"#,
            r#"strata_qoe_sessions_active{cdn="cdn-a",country="GB"} 1"#,
            r#"strata_qoe_sessions_active{cdn="cdn-b",country="GB"} 1"#,
        ] {
            assert!(t.contains(line), "{line} missing from\n{t}");
        }
        sessions.update("x", now, &b, &[Signal::End]);
        assert_eq!(sessions.len(), 1);
        sessions.expire(now + Duration::from_secs(31));
        assert!(sessions.is_empty());
        let t = text(&registry);
        assert!(
            t.contains(r#"strata_qoe_sessions_active{cdn="cdn-a",country="GB"} 0"#),
            "{t}"
        );
        assert!(
            t.contains(r#"strata_qoe_sessions_active{cdn="cdn-b",country="GB"} 0"#),
            "{t}"
        );
        // Room again once the idle ones are gone.
        assert!(sessions.update("z", now + Duration::from_secs(31), &a, &[]));
    }
}
