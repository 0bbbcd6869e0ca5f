//! The track store: per channel, per rendition, a sliding window of samples
//! cut into segments, which the packagers render on request.
//!
//! Ingest reaches the store through [`PublishTarget`]; players through
//! [`Store::render`]; operators through [`Store::channels`] and
//! [`Store::kick`]. Nothing here awaits: each channel sits behind its own
//! short-held std `Mutex`, and building a segment's bytes happens after the
//! lock is released (each segment builds once, in a `OnceLock`).
//!
//! Lifecycle: a publisher that drops leaves the channel live for
//! `reconnect_timeout`; one that returns continues it (sequence numbers go on,
//! the next segment is a discontinuity). After the timeout the channel ends
//! (EXT-X-ENDLIST, static MPD), stays playable for `ended_retention`, and is
//! then removed. Time comes from a [`Clock`] so tests are deterministic;
//! nothing runs in the background, so the HTTP layer should call
//! [`Store::sweep`] now and then to reclaim channels nobody asks for.
//!
//! Timing: each rendition keeps an output timeline that never goes back.
//! Publisher sessions and timestamp jumps are rebased onto it; renditions
//! from one encoder share one offset (so an ABR ladder's segments align);
//! late frames are dropped and counted. Program-date-time, DASH times and
//! segment numbers follow media time from a quantised epoch ([`epoch`]), so
//! redundant origins fed by one encoder agree on them.

pub mod epoch;
mod rendition;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::ingest::{
    MediaSink, PublishRefused, PublishTarget, PublisherInfo, SinkError, StreamName,
};
use crate::media::{Sample, TrackKind, TrackParams};
use crate::package::{
    self, dash, hls, measure, ChannelWindow, LowLatency, Object, RenderError, Rendered,
    RenditionWindow,
};
use rendition::{Publisher, Rendition, Timeline};

/// The store's section of the origin configuration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// How much of a live channel stays available behind the live edge
    /// (HLS playlist length, DASH timeShiftBufferDepth).
    #[serde(with = "humantime_serde")]
    pub dvr_window: Duration,
    /// Segments are cut at the first keyframe at least this long after the
    /// segment's start (audio-only renditions: on duration alone).
    #[serde(with = "humantime_serde")]
    pub target_duration: Duration,
    /// How long a channel whose publishers all left waits for one to return
    /// before it ends.
    #[serde(with = "humantime_serde")]
    pub reconnect_timeout: Duration,
    /// How long an ended channel stays playable before it is removed.
    #[serde(with = "humantime_serde")]
    pub ended_retention: Duration,
    /// Let a second publisher on a live rendition replace the first
    /// (otherwise it is refused as busy).
    pub takeover: bool,
    /// URL of the origin's clock for DASH `UTCTiming` (urn:mpeg:dash:utc:http-iso:2014).
    /// Relative (the default, `/time`) it resolves against the MPD's own URL,
    /// so it works on every host name an edge serves; live MPDs add a
    /// `urn:mpeg:dash:utc:direct:2014` value after it for clients that cannot
    /// resolve it. Absolute, it names one clock for every viewer.
    pub utc_timing_url: String,
    /// Low-latency HLS: each fMP4 segment is also offered as parts of about
    /// this long (at most this long), with blocking playlist reload. `0s` (the
    /// default) turns low latency off.
    #[serde(with = "humantime_serde")]
    pub part_target: Duration,
    /// LL-HLS `PART-HOLD-BACK`: how far behind the live edge players aim
    /// (hls.js and AVPlayer take it as their latency target; LL-DASH's
    /// `ServiceDescription` latency target follows it). `0s` (the default)
    /// is three part targets, what RFC 8216bis §4.4.3.8 recommends; the
    /// least it takes is two part targets, what the RFC requires. Lower is
    /// closer to live, with less buffer against a late part.
    #[serde(with = "humantime_serde")]
    pub part_hold_back: Duration,
    /// LL-HLS tune-in: a media playlist asked for without `_HLS_msn` (a
    /// player's first load) is answered as the next part is cut, at most two
    /// part targets later, so the live edge the player starts from is not up
    /// to a part old (true, the default). `false`: answered at once.
    pub fresh_tune_in: bool,
    /// Per-channel settings, `[store.channels.NAME]`, over the ones above.
    pub channels: BTreeMap<String, ChannelStoreConfig>,
}

/// `[store.channels.NAME]`: what one channel sets differently.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelStoreConfig {
    /// This channel's `part_target` (`0s`: low latency off here).
    #[serde(with = "humantime_serde")]
    pub part_target: Option<Duration>,
    /// This channel's `part_hold_back` (`0s`: three part targets).
    #[serde(with = "humantime_serde")]
    pub part_hold_back: Option<Duration>,
}

/// Shortest part target taken: shorter parts cost more requests than the
/// latency they save, and frames of 30 fps video are 33 ms.
pub const MIN_PART_TARGET: Duration = Duration::from_millis(100);

/// `PART-HOLD-BACK` in part targets when `store.part_hold_back` is `0s`:
/// what RFC 8216bis §4.4.3.8 recommends (at least two are required).
pub const PART_HOLD_BACK_TARGETS: u32 = 3;

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dvr_window: Duration::from_secs(60),
            target_duration: Duration::from_secs(2),
            reconnect_timeout: Duration::from_secs(30),
            ended_retention: Duration::from_secs(3600),
            takeover: false,
            utc_timing_url: "/time".into(),
            part_target: Duration::ZERO,
            part_hold_back: Duration::ZERO,
            fresh_tune_in: true,
            channels: BTreeMap::new(),
        }
    }
}

impl StoreConfig {
    /// The live store this section configures.
    pub fn init(self) -> Store {
        Store::new(self)
    }

    /// The part target of `channel`; `None` when low latency is off there.
    pub fn part_target(&self, channel: &str) -> Option<Duration> {
        let part = self
            .channels
            .get(channel)
            .and_then(|c| c.part_target)
            .unwrap_or(self.part_target);
        (!part.is_zero()).then_some(part)
    }

    /// The `PART-HOLD-BACK` of `channel`; `None` when low latency is off there.
    pub fn part_hold_back(&self, channel: &str) -> Option<Duration> {
        let part = self.part_target(channel)?;
        let hold_back = self
            .channels
            .get(channel)
            .and_then(|c| c.part_hold_back)
            .unwrap_or(self.part_hold_back);
        Some(if hold_back.is_zero() {
            part * PART_HOLD_BACK_TARGETS
        } else {
            hold_back
        })
    }

    /// Checks serde cannot express, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        let check = |key: &str, part: Duration| {
            if part.is_zero() {
                return Ok(());
            }
            if part < MIN_PART_TARGET {
                return Err(format!(
                    "{key}: at least {}ms (or 0s to turn low latency off)",
                    MIN_PART_TARGET.as_millis()
                ));
            }
            if part * 2 > self.target_duration {
                return Err(format!(
                    "{key}: at most half of store.target_duration ({:?})",
                    self.target_duration
                ));
            }
            Ok(())
        };
        check("store.part_target", self.part_target)?;
        let check_hold_back = |key: &str, part: Option<Duration>, hold_back: Duration| {
            match part {
            Some(part) if !hold_back.is_zero() && hold_back < part * 2 => Err(format!(
                "{key}: at least twice the part target ({:?}), as RFC 8216bis §4.4.3.8 requires (0s: three part targets)",
                part * 2
            )),
            _ => Ok(()),
        }
        };
        check_hold_back(
            "store.part_hold_back",
            (!self.part_target.is_zero()).then_some(self.part_target),
            self.part_hold_back,
        )?;
        for (name, channel) in &self.channels {
            if !package::valid_name(name) {
                return Err(format!(
                    "store.channels.{name}: not a channel name (letters, digits, - and _)"
                ));
            }
            if let Some(part) = channel.part_target {
                check(&format!("store.channels.{name}.part_target"), part)?;
            }
            let key = if channel.part_hold_back.is_some() {
                format!("store.channels.{name}.part_hold_back")
            } else {
                "store.part_hold_back".to_owned()
            };
            let hold_back = channel.part_hold_back.unwrap_or(self.part_hold_back);
            check_hold_back(&key, self.part_target(name), hold_back)?;
        }
        Ok(())
    }
}

/// Where the store reads wall-clock time when ingest calls it.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> SystemTime;
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that moves only when told to, for tests.
#[derive(Clone, Debug)]
pub struct ManualClock {
    // Held for a read or a write of one value, never across anything else.
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(start)),
        }
    }

    pub fn set(&self, t: SystemTime) {
        *lock(&self.now) = t;
    }

    pub fn advance(&self, d: Duration) {
        let mut now = lock(&self.now);
        *now += d;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *lock(&self.now)
    }
}

/// A poisoned lock means a panic elsewhere mid-update; the window data is
/// still structurally sound, so keep serving rather than cascade the panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The track store. Cheap to clone; clones share the same channels.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("config", &self.shared.config)
            .field("channels", &lock(&self.shared.channels).len())
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: StoreConfig,
    clock: Arc<dyn Clock>,
    // Map lock: held only to look up, insert or remove a channel. Channel
    // lock: held for one sample, one cut or one playlist render, never
    // while building segment bytes. Lock order: map, then channel.
    channels: Mutex<HashMap<String, Arc<Mutex<Channel>>>>,
    next_publisher: AtomicU64,
    metrics: Metrics,
}

struct Channel {
    created: SystemTime,
    renditions: BTreeMap<String, Rendition>,
    ended_at: Option<SystemTime>,
    timeline: Timeline,
    /// Playlists and MPDs by object (and whether a delta update), with the
    /// timeline version they show.
    memo: HashMap<(Object, bool), (u64, Rendered)>,
}

/// What became of a channel when it was last looked at.
enum Liveness {
    Live,
    Expired,
}

impl Channel {
    fn new(now: SystemTime, metrics: Metrics) -> Self {
        Channel {
            created: now,
            renditions: BTreeMap::new(),
            ended_at: None,
            timeline: Timeline::new(now, metrics),
            memo: HashMap::new(),
        }
    }

    /// Before the first segment, move the epoch to the earliest one a
    /// sample implied ([`Timeline::earliest`]), re-numbering what the
    /// renditions hold; nothing is published yet, so no player sees it.
    fn refine_epoch(&mut self, cfg: &StoreConfig) {
        let tl = &mut self.timeline;
        let (Some(current), Some(earliest)) = (tl.epoch, tl.earliest) else {
            return;
        };
        if tl.frozen || tl.published || earliest >= current {
            return;
        }
        self.adopt_epoch(earliest, cfg);
    }

    /// Move the channel to epoch `e` before it published anything:
    /// Period starts, and every rendition's numbers, dates and segments.
    fn adopt_epoch(&mut self, e: SystemTime, cfg: &StoreConfig) {
        self.timeline.move_epoch(e);
        for r in self.renditions.values_mut() {
            r.adopt_epoch(e, cfg);
        }
    }

    /// Before anything is published, renditions follow the channel's epoch
    /// when one of them moved it ([`Rendition::cut`] on a long burst).
    fn follow_epoch(&mut self, cfg: &StoreConfig) {
        let Some(e) = self.timeline.epoch else {
            return;
        };
        for r in self.renditions.values_mut() {
            if r.epoch().is_some_and(|own| own != e) {
                r.adopt_epoch(e, cfg);
            }
        }
    }

    /// End the channel once every publisher has been gone for the
    /// reconnect timeout; expire it after the retention.
    fn poll(&mut self, now: SystemTime, cfg: &StoreConfig) -> Liveness {
        if self.ended_at.is_none() && self.renditions.values().all(|r| r.publisher.is_none()) {
            let last_gone = self
                .renditions
                .values()
                .filter_map(|r| r.gone_since)
                .max()
                .unwrap_or(self.created);
            // A timeout too large to add to a date means "never".
            let end = last_gone.checked_add(cfg.reconnect_timeout);
            if let Some(end) = end.filter(|end| now >= *end) {
                self.ended_at = Some(end);
                self.timeline.bump(end);
            }
        }
        match self.ended_at {
            Some(end)
                if end
                    .checked_add(cfg.ended_retention)
                    .is_some_and(|gone| now >= gone) =>
            {
                Liveness::Expired
            }
            _ => Liveness::Live,
        }
    }

    fn window(&self, cfg: &StoreConfig) -> ChannelWindow {
        let availability_start = self
            .timeline
            .period_starts
            .values()
            .next()
            .map(|(wall, _)| *wall)
            .unwrap_or(self.created);
        ChannelWindow {
            renditions: self
                .renditions
                .iter()
                .map(|(name, r)| RenditionWindow {
                    name: name.clone(),
                    video: r.params(TrackKind::Video).cloned(),
                    audio: r.params(TrackKind::Audio).cloned(),
                    segments: r.segments.iter().cloned().collect(),
                    discontinuity_sequence: r.discontinuity_sequence,
                    target_duration: r.target_duration(cfg),
                    low_latency: r.part_target.map(|part_target| {
                        let (open_sequence, open_discontinuity) = r.open_segment();
                        LowLatency {
                            part_target,
                            part_hold_back: r
                                .part_hold_back
                                .unwrap_or(part_target * f64::from(PART_HOLD_BACK_TARGETS)),
                            video: r.parts(TrackKind::Video).iter().cloned().collect(),
                            audio: r.parts(TrackKind::Audio).iter().cloned().collect(),
                            open_sequence,
                            open_discontinuity,
                        }
                    }),
                })
                .collect(),
            ended: self.ended_at.is_some(),
            availability_start,
            updated: self.published(availability_start),
            time_shift_buffer: cfg.dvr_window,
            target_duration: cfg.target_duration,
            utc_timing_url: cfg.utc_timing_url.clone(),
        }
    }
}

impl Channel {
    /// DASH publishTime: the wall clock ([`epoch`]) of the newest media,
    /// which a redundant origin computes alike, unlike the arrival clock.
    fn published(&self, availability_start: SystemTime) -> SystemTime {
        self.renditions
            .values()
            .filter_map(|r| r.segments.back())
            .filter_map(|s| {
                s.program_date_time
                    .checked_add(Duration::try_from_secs_f64(s.duration).ok()?)
            })
            .max()
            .unwrap_or(availability_start)
    }
}

impl Rendition {
    /// EXT-X-TARGETDURATION: the longest segment or the configured target,
    /// whole seconds.
    fn target_duration(&self, cfg: &StoreConfig) -> u64 {
        (self.max_segment.round() as u64)
            .max(cfg.target_duration.as_secs_f64().round() as u64)
            .max(1)
    }
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        Store::with_clock(config, Arc::new(SystemClock))
    }

    pub fn with_clock(config: StoreConfig, clock: Arc<dyn Clock>) -> Self {
        Store {
            shared: Arc::new(Shared {
                config,
                clock,
                channels: Mutex::new(HashMap::new()),
                next_publisher: AtomicU64::new(1),
                metrics: Metrics::default(),
            }),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// The store's counters; register them once with [`Metrics::register`].
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// End channels past their reconnect timeout and remove those past
    /// retention. Render and publish do this for the channels they touch;
    /// call it periodically to reclaim channels nobody asks for.
    pub fn sweep(&self, now: SystemTime) {
        let cfg = &self.shared.config;
        let mut channels = lock(&self.shared.channels);
        channels.retain(|_, ch| matches!(lock(ch).poll(now, cfg), Liveness::Live));
        self.shared.metrics.channels.set(channels.len() as i64);
    }

    fn channel(&self, name: &str, now: SystemTime) -> Option<Arc<Mutex<Channel>>> {
        let mut channels = lock(&self.shared.channels);
        let ch = channels.get(name)?.clone();
        let expired = matches!(lock(&ch).poll(now, &self.shared.config), Liveness::Expired);
        if expired {
            channels.remove(name);
            self.shared.metrics.channels.set(channels.len() as i64);
            return None;
        }
        Some(ch)
    }

    /// A receiver that changes whenever `channel`'s playlists would (a new
    /// segment, a publisher leaving, the end): for blocking playlist reloads
    /// and waiting on a segment instead of polling.
    pub fn updates(&self, channel: &str) -> Option<watch::Receiver<u64>> {
        let ch = self.channel(channel, self.shared.clock.now())?;
        let rx = lock(&ch).timeline.updates.subscribe();
        Some(rx)
    }

    /// Whether `channel`'s playlists and MPD can honour their presentation
    /// delay yet ([`package::presentable`]); false for an unknown channel.
    pub fn presentable(&self, channel: &str) -> bool {
        let cfg = &self.shared.config;
        let Some(ch) = self.channel(channel, self.shared.clock.now()) else {
            return false;
        };
        let ch = lock(&ch);
        package::presentable(
            ch.ended_at.is_some(),
            ch.renditions.values().map(|r| {
                let media: f64 = r.segments.iter().map(|s| s.duration).sum();
                (media, r.target_duration(cfg))
            }),
            cfg.dvr_window,
        )
    }

    /// Disconnect every publisher of `channel`; false when it had none.
    pub fn kick(&self, channel: &str) -> bool {
        let now = self.shared.clock.now();
        let Some(ch) = self.channel(channel, now) else {
            return false;
        };
        let mut ch = lock(&ch);
        let ch = &mut *ch;
        let mut kicked = false;
        for r in ch.renditions.values_mut() {
            if let Some(p) = &r.publisher {
                // Ignored error: the ingest side may already be gone.
                let _ = p.kick.send(true);
                let id = p.id;
                kicked |= r.end_session(id, now, &self.shared.config, &mut ch.timeline);
            }
        }
        kicked
    }

    /// The segment numbers each rendition of `channel` holds now, oldest
    /// and newest (renditions without segments are left out); empty when
    /// the channel does not exist. What the key service needs to know which
    /// key periods players can still ask for.
    pub fn segment_spans(&self, channel: &str) -> Vec<SegmentSpan> {
        let Some(ch) = self.channel(channel, self.shared.clock.now()) else {
            return Vec::new();
        };
        let guard = lock(&ch);
        guard
            .renditions
            .iter()
            .filter_map(|(name, r)| {
                Some(SegmentSpan {
                    rendition: name.clone(),
                    oldest: r.segments.front()?.sequence,
                    newest: r.segments.back()?.sequence,
                })
            })
            .collect()
    }

    /// `channel`'s epoch ([`epoch`]) and whether anything was published
    /// under it; `None` before its first sample.
    pub fn epoch_of(&self, channel: &str) -> Option<ChannelEpoch> {
        let ch = self.channel(channel, self.shared.clock.now())?;
        let ch = lock(&ch);
        Some(ChannelEpoch {
            epoch: ch.timeline.epoch?,
            published: ch.timeline.published,
        })
    }

    /// Channels whose epoch is derived but not published yet (no playlist
    /// or MPD rendered) and that started within [`SETTLE_WINDOW`]: the ones
    /// to settle with redundant peers. A channel nobody watches is not
    /// asked about for ever.
    pub fn unsettled_epochs(&self) -> Vec<String> {
        let now = self.shared.clock.now();
        let channels = self.snapshot();
        channels
            .into_iter()
            .filter(|(_, ch)| {
                let ch = lock(ch);
                let young = now
                    .duration_since(ch.created)
                    .map_or(true, |age| age < SETTLE_WINDOW);
                young && ch.timeline.epoch.is_some() && !ch.timeline.published
            })
            .map(|(name, _)| name)
            .collect()
    }

    /// Settle `channel`'s epoch with a redundant peer's: adopt the peer's
    /// when it published under it already (we are the late joiner), or
    /// when neither did and the peer's is the earlier one, so a pair that
    /// each hear the other converges on one epoch whichever asks first.
    /// Only before this origin publishes anything (the first playlist waits
    /// for the presentation delay, seconds of media: [`Store::presentable`]),
    /// and only for an epoch
    /// within the drift tolerance of ours (further apart, it is another
    /// session of the encoder, not the same one seen a little later).
    pub fn settle_epoch(&self, channel: &str, peer: ChannelEpoch) -> Settled {
        let Some(ch) = self.channel(channel, self.shared.clock.now()) else {
            return Settled::Unknown;
        };
        let mut guard = lock(&ch);
        let ch = &mut *guard;
        let Some(ours) = ch.timeline.epoch else {
            return Settled::Unknown;
        };
        if ours == peer.epoch {
            return Settled::Agreed;
        }
        if ch.timeline.published {
            return Settled::Disagreed;
        }
        let apart = match ours.duration_since(peer.epoch) {
            Ok(d) => d,
            Err(e) => e.duration(),
        };
        if apart > epoch::DRIFT_TOLERANCE || !(peer.published || peer.epoch < ours) {
            return Settled::Kept;
        }
        // A published epoch is the pair's for good; an unpublished one may
        // still move earlier here, and the peer follows by the same rule.
        ch.timeline.frozen |= peer.published;
        ch.timeline.from_peer = peer.published;
        ch.adopt_epoch(peer.epoch, &self.shared.config);
        ch.timeline.bump(self.shared.clock.now());
        Settled::Adopted
    }

    /// Every channel with its name, taken under the map lock alone so each
    /// can then be locked in turn.
    fn snapshot(&self) -> Vec<(String, Arc<Mutex<Channel>>)> {
        lock(&self.shared.channels)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Names of the channels held (live, reconnecting or ended).
    pub fn channel_names(&self) -> Vec<String> {
        lock(&self.shared.channels).keys().cloned().collect()
    }

    /// Status of every channel, for the channel API.
    pub fn channels(&self) -> Vec<ChannelStatus> {
        let now = self.shared.clock.now();
        self.sweep(now);
        let channels = self.snapshot();
        let mut out: Vec<ChannelStatus> = channels
            .into_iter()
            .map(|(name, ch)| status(&name, &lock(&ch), now))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Per channel: whether a publisher is connected and when ingest last
    /// made progress, for `strata_origin_channel_*` ([`crate::channel_metrics`]).
    pub fn ingest_progress(&self) -> Vec<IngestProgress> {
        let channels = self.snapshot();
        channels
            .into_iter()
            .map(|(channel, ch)| {
                let ch = lock(&ch);
                let mut progress = IngestProgress {
                    channel,
                    publishing: false,
                    last_progress: None,
                };
                for r in ch.renditions.values() {
                    let publish = r.publisher.as_ref().map(|p| p.since);
                    progress.publishing |= publish.is_some();
                    let cut = r.segments.back().map(|s| {
                        s.program_date_time
                            + Duration::try_from_secs_f64(s.duration).unwrap_or_default()
                    });
                    progress.last_progress = progress.last_progress.max(publish).max(cut);
                }
                progress
            })
            .collect()
    }

    /// Render what `path` (after `/live/{channel}/`) names, as of `now`.
    pub fn render(
        &self,
        channel: &str,
        path: &str,
        now: SystemTime,
    ) -> Result<Rendered, RenderError> {
        self.render_with(channel, path, now, false)
    }

    /// How long a blocking playlist reload or a hinted part is held before
    /// a 503: three target durations (RFC 8216bis §6.2.5.2).
    pub fn reload_limit(&self) -> Duration {
        self.shared.config.target_duration * 3
    }

    /// The part target of `channel` (LL-HLS on), or `None`.
    pub fn part_target(&self, channel: &str) -> Option<Duration> {
        self.shared.config.part_target(channel)
    }

    /// Whether a blocking playlist reload (RFC 8216bis §6.2.5.2) for
    /// `rendition`'s `kind` playlist can be answered: the playlist holds
    /// segment `msn` whole or, with `part`, that part of it (or anything
    /// later). `None`: no such channel or rendition.
    pub fn reload(
        &self,
        channel: &str,
        rendition: &str,
        kind: TrackKind,
        msn: u64,
        part: Option<u32>,
    ) -> Option<Reload> {
        let ch = self.channel(channel, self.shared.clock.now())?;
        let guard = lock(&ch);
        let r = guard.renditions.get(rendition)?;
        if guard.ended_at.is_some() {
            return Some(Reload::Ready);
        }
        let (open, _) = r.open_segment();
        // §6.2.5.2: more than two segments past the playlist's last one.
        if msn > open.saturating_add(2) {
            return Some(Reload::TooFar);
        }
        let ready = match part {
            None => msn < open,
            Some(part) => {
                let parts = r.parts(kind);
                let trimmed = parts.front().is_some_and(|p| msn < p.sequence);
                trimmed || parts.iter().any(|p| (p.sequence, p.index) >= (msn, part))
            }
        };
        Some(if ready { Reload::Ready } else { Reload::Wait })
    }

    /// The part of `rendition`'s `kind` track cut next, `(sequence, index)`
    /// (what its playlist's `EXT-X-PRELOAD-HINT` names). `None`: no such
    /// channel or rendition, or the channel has ended.
    pub fn next_part(&self, channel: &str, rendition: &str, kind: TrackKind) -> Option<(u64, u32)> {
        let ch = self.channel(channel, self.shared.clock.now())?;
        let guard = lock(&ch);
        if guard.ended_at.is_some() {
            return None;
        }
        let r = guard.renditions.get(rendition)?;
        let (open, _) = r.open_segment();
        Some(match r.parts(kind).back() {
            Some(p) if p.sequence == open => (p.sequence, p.index + 1),
            _ => (open, 0),
        })
    }

    /// Where segment `sequence` of `rendition`'s `kind` track stands on an
    /// LL channel: cut, or being cut (the open segment, or the one after it,
    /// which a player may ask for a moment early). Anything further ahead,
    /// an ended channel's next segment or an unknown rendition is a `404`
    /// at once.
    pub fn segment_progress(
        &self,
        channel: &str,
        rendition: &str,
        kind: TrackKind,
        sequence: u64,
    ) -> Result<SegmentProgress, RenderError> {
        let ch = self
            .channel(channel, self.shared.clock.now())
            .ok_or(RenderError::ChannelNotFound)?;
        let guard = lock(&ch);
        let r = guard
            .renditions
            .get(rendition)
            .ok_or_else(RenderError::not_yet)?;
        let (open, _) = r.open_segment();
        if sequence < open {
            let segment = r
                .segment(sequence)
                .ok_or_else(RenderError::no_such_object)?;
            return Ok(SegmentProgress::Complete(segment.parts(kind).to_vec()));
        }
        if guard.ended_at.is_some() || sequence > open.saturating_add(1) {
            return Err(RenderError::not_yet());
        }
        let parts = r
            .parts(kind)
            .iter()
            .filter(|p| p.sequence == sequence)
            .cloned()
            .collect();
        Ok(SegmentProgress::Open(parts))
    }

    /// [`Store::render`], and for a media playlist with `skip`, the delta
    /// update (`_HLS_skip=YES`, RFC 8216bis §6.2.5.1).
    pub fn render_with(
        &self,
        channel: &str,
        path: &str,
        now: SystemTime,
        skip: bool,
    ) -> Result<Rendered, RenderError> {
        let ch = self
            .channel(channel, now)
            .ok_or(RenderError::ChannelNotFound)?;
        let object = Object::parse(path).ok_or_else(RenderError::no_such_object)?;
        let mut guard = lock(&ch);
        let cfg = &self.shared.config;
        if object.lists_segments() {
            // Names and dates go out with it: the epoch is final (an LL
            // channel shows its first playlist before its first segment).
            guard.timeline.published = true;
            guard.timeline.frozen = true;
        }
        match &object {
            Object::Init {
                rendition,
                kind,
                id,
            } => {
                let init = guard
                    .renditions
                    .get(rendition)
                    .and_then(|r| r.init(*kind, *id))
                    .ok_or_else(RenderError::no_such_object)?;
                drop(guard);
                Ok(init.render())
            }
            Object::Fragment {
                rendition,
                sequence,
                kind,
            } => {
                let segment = find_segment(&guard, rendition, *sequence)?;
                drop(guard);
                segment
                    .fragment(*kind)
                    .ok_or_else(RenderError::no_such_object)
            }
            Object::ChunkedFragment {
                rendition,
                sequence,
                kind,
            } => {
                let segment = find_segment(&guard, rendition, *sequence)?;
                drop(guard);
                segment
                    .chunked(*kind)
                    .ok_or_else(RenderError::no_such_object)
            }
            Object::TsSegment {
                rendition,
                sequence,
            } => {
                let segment = find_segment(&guard, rendition, *sequence)?;
                drop(guard);
                Ok(segment.transport_stream())
            }
            Object::Part {
                rendition,
                kind,
                sequence,
                index,
            } => {
                let r = guard
                    .renditions
                    .get(rendition)
                    .ok_or_else(RenderError::not_yet)?;
                let found = r
                    .parts(*kind)
                    .iter()
                    .find(|p| p.sequence == *sequence && p.index == *index)
                    .cloned();
                let (open, _) = r.open_segment();
                drop(guard);
                match found {
                    Some(part) => Ok(part.render()),
                    // The open segment's next parts, or the next segment's.
                    None if *sequence >= open => Err(RenderError::not_yet()),
                    None => Err(RenderError::no_such_object()),
                }
            }
            _ => {
                let skip = skip && matches!(object, Object::MediaPlaylist { .. });
                let version = guard.timeline.version;
                let key = (object, skip);
                if let Some((v, r)) = guard.memo.get(&key) {
                    if *v == version {
                        return Ok(r.clone());
                    }
                }
                let window = guard.window(cfg);
                let rendered = render_manifest(&window, &key.0, skip)?;
                guard.memo.insert(key, (version, rendered.clone()));
                Ok(rendered)
            }
        }
    }
}

fn find_segment(
    ch: &Channel,
    rendition: &str,
    sequence: u64,
) -> Result<Arc<package::Segment>, RenderError> {
    let r = ch
        .renditions
        .get(rendition)
        .ok_or_else(RenderError::not_yet)?;
    if sequence >= r.next_sequence {
        // Even an ended channel may be revived and reach this number: a
        // future segment's absence is never cached for long.
        return Err(RenderError::not_yet());
    }
    r.segment(sequence).ok_or_else(RenderError::no_such_object)
}

/// Where an LL channel's segment stands, for a request that may stream it
/// while it is cut (LL-DASH, [`Store::segment_progress`]).
#[derive(Clone, Debug)]
pub enum SegmentProgress {
    /// Cut: its parts of the track asked for, all of them (empty when the
    /// segment was not cut into parts; then it is answered whole).
    Complete(Vec<Arc<package::Part>>),
    /// The open segment (or the next one): its parts so far.
    Open(Vec<Arc<package::Part>>),
}

/// Whether a blocking playlist reload can be answered now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reload {
    /// The playlist holds what was asked for (or the channel ended).
    Ready,
    /// Not yet: wait for the store's next update.
    Wait,
    /// More than two segments ahead: a 400 (RFC 8216bis §6.2.5.2).
    TooFar,
}

fn render_manifest(
    window: &ChannelWindow,
    object: &Object,
    skip: bool,
) -> Result<Rendered, RenderError> {
    const M3U8: &str = "application/vnd.apple.mpegurl";
    let rendition = |name: &str| window.renditions.iter().find(|r| r.name == name);
    let (text, content_type) = match object {
        Object::Master => (hls::master(window), M3U8),
        Object::MasterTs => (hls::master_ts(window), M3U8),
        Object::Manifest => (dash::manifest(window), "application/dash+xml"),
        Object::MediaPlaylist { rendition: r, kind } => (
            rendition(r).and_then(|r| hls::media_playlist(window, r, *kind, skip)),
            M3U8,
        ),
        Object::TsPlaylist { rendition: r } => {
            (rendition(r).and_then(|r| hls::ts_playlist(window, r)), M3U8)
        }
        _ => (None, M3U8),
    };
    let text = text.ok_or_else(RenderError::not_yet)?;
    Ok(Rendered::new(
        text.into(),
        content_type,
        window.playlist_cache_control(),
    ))
}

impl PublishTarget for Store {
    fn publish(
        &self,
        name: &StreamName,
        info: PublisherInfo,
    ) -> Result<Box<dyn MediaSink>, PublishRefused> {
        for n in [&name.channel, &name.rendition] {
            if !package::valid_name(n) {
                return Err(PublishRefused::BadName(n.clone()));
            }
        }
        let now = self.shared.clock.now();
        let cfg = &self.shared.config;
        let ch = {
            let mut channels = lock(&self.shared.channels);
            let existing = channels.get(&name.channel).cloned();
            let live = existing.filter(|ch| matches!(lock(ch).poll(now, cfg), Liveness::Live));
            live.unwrap_or_else(|| {
                let ch = Arc::new(Mutex::new(Channel::new(now, self.shared.metrics.clone())));
                channels.insert(name.channel.clone(), ch.clone());
                self.shared.metrics.channels.set(channels.len() as i64);
                ch
            })
        };
        let id = self.shared.next_publisher.fetch_add(1, Ordering::Relaxed);
        let (kick, kicked) = watch::channel(false);
        {
            let mut guard = lock(&ch);
            let ch = &mut *guard;
            let first_sequence = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            let period = ch.timeline.period;
            let r = ch
                .renditions
                .entry(name.rendition.clone())
                .or_insert_with(|| Rendition::new(first_sequence, period));
            r.part_target = cfg.part_target(&name.channel).map(|d| d.as_secs_f64());
            r.part_hold_back = cfg.part_hold_back(&name.channel).map(|d| d.as_secs_f64());
            if r.publisher.is_some() && !cfg.takeover {
                self.shared.metrics.publishes_refused.inc();
                return Err(PublishRefused::Busy(name.channel.clone()));
            }
            self.shared.metrics.publishes.inc();
            r.start_session(
                Publisher {
                    id,
                    info,
                    since: now,
                    kick,
                },
                now,
                cfg,
                &mut ch.timeline,
            );
            if ch.ended_at.take().is_some() {
                ch.timeline.bump(now);
            }
        }
        Ok(Box::new(StoreSink {
            store: self.shared.clone(),
            channel: ch,
            rendition: name.rendition.clone(),
            id,
            kicked,
        }))
    }
}

/// One publisher's way into a rendition.
struct StoreSink {
    store: Arc<Shared>,
    // The channel's lock (see `Shared::channels`), held per call, never across one.
    channel: Arc<Mutex<Channel>>,
    rendition: String,
    id: u64,
    kicked: watch::Receiver<bool>,
}

impl StoreSink {
    /// Run `f` on our rendition if we still hold it.
    fn with_rendition<T>(
        &self,
        f: impl FnOnce(&mut Rendition, SystemTime, &StoreConfig, &mut Timeline) -> T,
    ) -> Result<T, SinkError> {
        let now = self.store.clock.now();
        let mut guard = lock(&self.channel);
        let ch = &mut *guard;
        let r = ch
            .renditions
            .get_mut(&self.rendition)
            .filter(|r| r.publisher.as_ref().map(|p| p.id) == Some(self.id))
            .ok_or(SinkError::Closed)?;
        Ok(f(r, now, &self.store.config, &mut ch.timeline))
    }
}

impl MediaSink for StoreSink {
    fn params(&mut self, params: TrackParams) {
        // Ignored error: a replaced publisher's parameters no longer matter.
        let _ = self.with_rendition(|r, now, cfg, tl| r.set_params(params, now, cfg, tl));
    }

    fn sample(&mut self, kind: TrackKind, sample: Sample) -> Result<(), SinkError> {
        let now = self.store.clock.now();
        let cfg = &self.store.config;
        let mut guard = lock(&self.channel);
        let ch = &mut *guard;
        ch.renditions
            .get_mut(&self.rendition)
            .filter(|r| r.publisher.as_ref().map(|p| p.id) == Some(self.id))
            .ok_or(SinkError::Closed)?
            .push(kind, sample, now, cfg, &mut ch.timeline)?;
        if !ch.timeline.frozen {
            ch.refine_epoch(cfg);
        }
        if !ch.timeline.published && ch.renditions.len() > 1 {
            ch.follow_epoch(cfg);
        }
        Ok(())
    }

    fn kicked(&self) -> watch::Receiver<bool> {
        self.kicked.clone()
    }
}

impl Drop for StoreSink {
    fn drop(&mut self) {
        let id = self.id;
        // Ignored error: already replaced or kicked, nothing to end.
        let _ = self.with_rendition(|r, now, cfg, tl| r.end_session(id, now, cfg, tl));
    }
}

/// What the store counts, for Prometheus.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    segments: Counter,
    late_frames: Counter,
    dropped_frames: Counter,
    discontinuities: Counter,
    publishes: Counter,
    publishes_refused: Counter,
    channels: Gauge,
}

impl Metrics {
    /// Register under `store_` in `registry` (which carries the role's prefix).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("store");
        r.register(
            "segments",
            "Segments cut, all channels",
            self.segments.clone(),
        );
        r.register(
            "late_frames",
            "Samples dropped for arriving behind their track",
            self.late_frames.clone(),
        );
        r.register(
            "dropped_frames",
            "Samples dropped: before a keyframe or with absurd timestamps",
            self.dropped_frames.clone(),
        );
        r.register(
            "discontinuities",
            "Publisher returns, timestamp jumps and parameter changes",
            self.discontinuities.clone(),
        );
        r.register("publishes", "Publishes accepted", self.publishes.clone());
        r.register(
            "publishes_refused",
            "Publishes refused because the rendition was busy",
            self.publishes_refused.clone(),
        );
        r.register(
            "channels",
            "Channels held: live, reconnecting or ended",
            self.channels.clone(),
        );
    }
}

/// How long after a channel starts its origin settles the epoch with
/// redundant peers, if nothing was published sooner: well past a first
/// playlist's wait (the presentation delay, then at most 8 s), short enough
/// that channels nobody watches stop costing the peers requests.
pub const SETTLE_WINDOW: Duration = Duration::from_secs(30);

/// A channel's epoch as redundant peers exchange it
/// (`GET /api/channels/{channel}/epoch`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelEpoch {
    /// Wall clock of output time 0, a whole second.
    pub epoch: SystemTime,
    /// Whether a segment was cut under it: then it never changes.
    pub published: bool,
}

/// What [`Store::settle_epoch`] did with a peer's epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settled {
    /// The same as ours.
    Agreed,
    /// Ours changed to the peer's before anything was published.
    Adopted,
    /// Ours stays (the peer will adopt it, or it is another session).
    Kept,
    /// Both published different epochs: the two origins' names differ.
    Disagreed,
    /// No such channel here, or no sample yet.
    Unknown,
}

impl Settled {
    /// Label value for `strata_origin_redundancy_epoch_checks_total`.
    pub fn label(self) -> &'static str {
        match self {
            Settled::Agreed => "agreed",
            Settled::Adopted => "adopted",
            Settled::Kept => "kept",
            Settled::Disagreed => "disagreed",
            Settled::Unknown => "unknown",
        }
    }
}

/// One channel's ingest, as [`Store::ingest_progress`] sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestProgress {
    pub channel: String,
    /// A publisher is connected to one of its renditions.
    pub publishing: bool,
    /// The latest of: the end (wall clock) of the newest segment cut, the
    /// start of a current publish.
    pub last_progress: Option<SystemTime>,
}

/// The first and last segment number a rendition holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentSpan {
    pub rendition: String,
    pub oldest: u64,
    pub newest: u64,
}

/// A channel as the channel API shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ChannelStatus {
    pub name: String,
    /// `live`, `reconnecting` (no publisher, within the reconnect timeout) or `ended`.
    pub state: &'static str,
    pub live: bool,
    pub uptime_seconds: u64,
    pub renditions: Vec<RenditionStatus>,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RenditionStatus {
    pub name: String,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub width: Option<u16>,
    pub height: Option<u16>,
    /// Measured over the window, bits per second.
    pub bitrate: u64,
    pub peak_bitrate: u64,
    pub frame_rate: f64,
    /// Mean seconds between keyframes.
    pub keyframe_interval: f64,
    pub publisher: Option<PublisherStatus>,
    pub live: bool,
    pub segments: usize,
    pub late_frames: u64,
    pub dropped_frames: u64,
    pub discontinuities: u64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct PublisherStatus {
    pub address: String,
    pub protocol: &'static str,
    pub uptime_seconds: u64,
}

fn status(name: &str, ch: &Channel, now: SystemTime) -> ChannelStatus {
    let since = |t: SystemTime| now.duration_since(t).unwrap_or_default().as_secs();
    let any_publisher = ch.renditions.values().any(|r| r.publisher.is_some());
    let state = match (ch.ended_at, any_publisher) {
        (Some(_), _) => "ended",
        (None, true) => "live",
        (None, false) => "reconnecting",
    };
    ChannelStatus {
        name: name.to_owned(),
        state,
        live: ch.ended_at.is_none(),
        uptime_seconds: since(ch.created),
        renditions: ch
            .renditions
            .iter()
            .map(|(rname, r)| {
                let m = measure(r.segments.iter(), None);
                let video = match r.params(TrackKind::Video) {
                    Some(TrackParams::Video(v)) => Some(v),
                    _ => None,
                };
                RenditionStatus {
                    name: rname.clone(),
                    video_codec: video.map(|v| v.codec.clone()),
                    audio_codec: r.params(TrackKind::Audio).map(|a| a.codec().to_owned()),
                    width: video.map(|v| v.width),
                    height: video.map(|v| v.height),
                    bitrate: m.average_bitrate,
                    peak_bitrate: m.peak_bitrate,
                    frame_rate: (m.frame_rate * 1000.0).round() / 1000.0,
                    keyframe_interval: (m.keyframe_interval * 1000.0).round() / 1000.0,
                    publisher: r.publisher.as_ref().map(|p| PublisherStatus {
                        address: p.info.remote.to_string(),
                        protocol: p.info.protocol,
                        uptime_seconds: since(p.since),
                    }),
                    live: r.publisher.is_some(),
                    segments: r.segments.len(),
                    late_frames: r.late_frames,
                    dropped_frames: r.dropped_frames,
                    discontinuities: r.discontinuities,
                }
            })
            .collect(),
    }
}
