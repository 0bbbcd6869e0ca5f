//! The epoch rule: how wall-clock values in playlists and MPDs follow from
//! media time, so that two origins fed by one encoder (redundant origins:
//! ffmpeg `tee`, OBS multiple outputs, two SRT callers) publish the same
//! ones and a shield can take any request from either.
//!
//! Every wall-clock value the packagers print (`EXT-X-PROGRAM-DATE-TIME`,
//! DASH `availabilityStartTime`, Period `start`, `publishTime`) is
//! `epoch + output media time`, and every segment number is the rendition's
//! first number plus a count of segments, itself `epoch seconds + output
//! time / target duration` at the rendition's first sample
//! ([`first_sequence`]). Output media time is the publisher's timestamps
//! (the channel's first session keeps them as they are), identical on both
//! origins. The only input from the arrival clock is the epoch, and it is
//! quantised:
//!
//! `epoch = ceil_to_second(arrival of a sample − its output time)`
//!
//! Two origins that receive the same sample within a few hundred
//! milliseconds compute the same epoch unless a whole second of UTC falls
//! between their two estimates: with estimates δ apart the chance is δ / 1 s
//! (about 1 in 250 for ffmpeg `tee` on one host, where δ is a few ms). No
//! rule without a message between the origins can do better, since any
//! rounding has boundaries: the message is [`crate::redundancy`], which
//! settles the epoch with the peers before the first segment is cut (the
//! store re-numbers what it holds, [`crate::store::Store::settle_epoch`]).
//! Rounding up means wall clock never runs behind
//! the media: a DASH player never computes a segment as available before it
//! can exist; the price is under a second of extra DASH latency.
//!
//! The epoch is re-derived only when the arrival clock and `epoch + media
//! time` drift more than [`DRIFT_TOLERANCE`] apart: after a publisher was
//! away (a reconnect's gap) or when the encoder's clock runs off wall clock.
//! Both origins do this at the same segment as long as their arrival clocks
//! agree to well within the tolerance. Where alignment cannot be exact (an
//! encoder restarting on one side only gives that side new timestamps) the
//! two sides differ from that discontinuity on: the restarted side opens a
//! new Period and discontinuity, so a player switched between them sees a
//! clean discontinuity, and each side still serves every name its own
//! playlists list.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::media::VIDEO_TIMESCALE;

/// How far apart arrival time and `epoch + media time` may drift before the
/// epoch is re-derived. Above the quantum (rounding up puts media time up
/// to a second ahead of arrival), so a freshly derived epoch never flaps.
pub const DRIFT_TOLERANCE: Duration = Duration::from_secs(2);

/// The epoch (wall clock of output time 0) implied by a sample at output
/// time `at` (90 kHz) arriving at `arrival`, rounded up to a whole second.
pub fn derive(arrival: SystemTime, at: i64) -> SystemTime {
    let estimate = signed_nanos(estimate(arrival, at));
    let second = 1_000_000_000i128;
    let ceiled = estimate.div_euclid(second) * second
        + if estimate.rem_euclid(second) == 0 {
            0
        } else {
            second
        };
    from_signed_nanos(ceiled)
}

/// The unrounded epoch a sample at output time `at` (90 kHz) arriving at
/// `arrival` implies: the arrival less the media time.
pub fn estimate(arrival: SystemTime, at: i64) -> SystemTime {
    let at_ns = i128::from(at) * 1_000_000_000 / i128::from(VIDEO_TIMESCALE);
    from_signed_nanos(signed_nanos(arrival) - at_ns)
}

/// Wall clock `t` under epoch `from` as it reads under epoch `to`: the
/// same media time.
pub fn moved(t: SystemTime, from: SystemTime, to: SystemTime) -> SystemTime {
    from_signed_nanos(signed_nanos(t) + signed_nanos(to) - signed_nanos(from))
}

/// Wall clock of output time `at` (90 kHz) under `epoch`.
pub fn wall_at(epoch: SystemTime, at: i64) -> SystemTime {
    let at_ns = i128::from(at) * 1_000_000_000 / i128::from(VIDEO_TIMESCALE);
    from_signed_nanos(signed_nanos(epoch) + at_ns)
}

/// Whether `arrival` and the media-derived `wall` drifted beyond the tolerance.
pub fn drifted(arrival: SystemTime, wall: SystemTime) -> bool {
    let gap = match arrival.duration_since(wall) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    gap > DRIFT_TOLERANCE
}

/// The first segment number of a rendition whose first sample is at output
/// time `at` (90 kHz) under `epoch`: the epoch in whole UTC seconds plus
/// the count of `target`-long segments before `at`, rounded. An origin that
/// joins an encoder late (a restarted origin) thus numbers its first segment
/// as the other origin numbered the same media, exactly so while the
/// encoder's segments are `target` long (a keyframe every `target`); numbers
/// of a later channel never repeat an earlier one's (they start from a later
/// epoch and a target under a second counts as one).
pub fn first_sequence(epoch: SystemTime, at: i64, target: Duration) -> u64 {
    let epoch_secs = signed_nanos(epoch).div_euclid(1_000_000_000);
    let target_90k = (target.as_secs_f64().max(1.0) * f64::from(VIDEO_TIMESCALE)) as i128;
    let count = (2 * i128::from(at) + target_90k).div_euclid(2 * target_90k);
    u64::try_from(epoch_secs + count.max(0)).unwrap_or(0)
}

fn signed_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

fn from_signed_nanos(ns: i128) -> SystemTime {
    let magnitude = Duration::new(
        (ns.unsigned_abs() / 1_000_000_000).min(u128::from(u64::MAX)) as u64,
        (ns.unsigned_abs() % 1_000_000_000) as u32,
    );
    if ns >= 0 {
        UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
    } else {
        UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_796_000_000;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    #[test]
    fn origins_receiving_a_sample_ms_apart_agree_on_the_epoch() {
        // The first sample (output time 0) reaches origin A at .120 and
        // origin B at .160 (the ~40 ms measured with ffmpeg tee).
        let a = derive(at(T, 120), 0);
        let b = derive(at(T, 160), 0);
        assert_eq!(a, b);
        assert_eq!(a, at(T + 1, 0), "rounded up to the next whole second");
        // The same holds for a sample later in the stream.
        let media = 90_000 * 30 + 45_000; // 30.5 s
        assert_eq!(
            derive(at(T + 30, 620), media),
            derive(at(T + 30, 900), media)
        );
        assert_eq!(derive(at(T + 30, 620), media), at(T + 1, 0));
    }

    #[test]
    fn wall_clock_and_numbers_follow_media_time_from_the_epoch() {
        let epoch = derive(at(T, 500), 0);
        assert_eq!(wall_at(epoch, 0), at(T + 1, 0));
        assert_eq!(wall_at(epoch, 90_000 * 4 + 9_000), at(T + 5, 100));
        let two = Duration::from_secs(2);
        assert_eq!(first_sequence(epoch, 0, two), T + 1);
        // A late joiner numbers media at 10 s as the 5th two-second segment,
        // with a keyframe a little early or late all the same.
        assert_eq!(first_sequence(epoch, 90_000 * 10, two), T + 1 + 5);
        assert_eq!(first_sequence(epoch, 90_000 * 10 - 3600, two), T + 1 + 5);
        assert_eq!(first_sequence(epoch, 90_000 * 10 + 3600, two), T + 1 + 5);
        // Sub-second targets count whole seconds, so numbers never outrun
        // UTC seconds and a later channel cannot reuse them.
        assert_eq!(
            first_sequence(epoch, 90_000 * 10, Duration::from_millis(500)),
            T + 11
        );
    }

    #[test]
    fn a_whole_second_between_the_estimates_is_the_documented_limit() {
        // Estimates straddling a UTC second round to different epochs: the
        // chance is the arrival gap over one second, as the module says.
        assert_ne!(derive(at(T, 990), 0), derive(at(T + 1, 10), 0));
        // Exactly on a second stays there: rounding up never adds a second.
        assert_eq!(derive(at(T, 0), 0), at(T, 0));
    }

    #[test]
    fn wall_clock_never_runs_behind_media_after_deriving() {
        for millis in [0, 1, 499, 999] {
            let arrival = at(T, millis);
            let epoch = derive(arrival, 90_000 * 12);
            let wall = wall_at(epoch, 90_000 * 12);
            assert!(wall >= arrival, "{millis}");
            assert!(!drifted(arrival, wall), "a fresh epoch is within tolerance");
        }
    }

    #[test]
    fn drift_beyond_the_tolerance_asks_for_a_new_epoch() {
        let epoch = at(T, 0);
        // The publisher was away 10 s and the timeline continued.
        assert!(drifted(at(T + 70, 0), wall_at(epoch, 90_000 * 60)));
        assert!(!drifted(at(T + 61, 900), wall_at(epoch, 90_000 * 60)));
        assert!(drifted(at(T + 57, 0), wall_at(epoch, 90_000 * 60)));
    }

    #[test]
    fn dates_before_1970_and_huge_media_times_do_not_panic() {
        let before = UNIX_EPOCH - Duration::from_millis(1500);
        assert_eq!(derive(before, 0), UNIX_EPOCH - Duration::from_secs(1));
        let _ = wall_at(UNIX_EPOCH, i64::MAX);
        let _ = first_sequence(UNIX_EPOCH, i64::MIN, Duration::ZERO);
    }
}
