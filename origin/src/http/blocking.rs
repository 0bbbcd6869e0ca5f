//! LL-HLS on the playback listener: the delivery directives of RFC 8216bis
//! §6.2.5 (`_HLS_msn`, `_HLS_part`, `_HLS_skip`) parsed once, and the holds
//! they ask for: a blocking playlist reload waits until the playlist holds
//! the segment or part asked for, and a request for the preload-hinted part
//! until that part is cut. Both wake on the store's updates (no polling) and
//! give up after the spec's limit, three target durations.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::media::TrackKind;
use crate::store::{Reload, Store};

/// `_HLS_msn` values above this are refused outright: media sequence
/// numbers here are Unix seconds, so this is centuries away, and it keeps
/// every sum with it far from overflow.
const MAX_MSN: u64 = 1 << 40;

/// Delivery directives of one playlist request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Directives {
    /// `_HLS_msn`: hold until the playlist holds this segment.
    pub msn: Option<u64>,
    /// `_HLS_part`: … or this part of it.
    pub part: Option<u32>,
    /// `_HLS_skip=YES` (or `v2`): a delta update.
    pub skip: bool,
}

impl Directives {
    /// The directives in `query`; other parameters (tokens, CMCD) are not
    /// ours and pass. Errors say what is wrong, for a 400's body.
    pub fn parse(query: Option<&str>) -> Result<Directives, String> {
        let mut d = Directives::default();
        let mut seen = [false; 3];
        for pair in query.unwrap_or("").split('&') {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match name {
                "_HLS_msn" => 0,
                "_HLS_part" => 1,
                "_HLS_skip" => 2,
                _ => continue,
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(format!("{name}: given more than once"));
            }
            match slot {
                0 => {
                    let msn = number(value).filter(|n| *n <= MAX_MSN).ok_or_else(|| {
                        format!("_HLS_msn: not a media sequence number: {value:.20}")
                    })?;
                    d.msn = Some(msn);
                }
                1 => {
                    let part = number(value)
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| format!("_HLS_part: not a part index: {value:.20}"))?;
                    d.part = Some(part);
                }
                _ => {
                    d.skip = match value {
                        "YES" | "v2" => true,
                        _ => return Err(format!("_HLS_skip: YES or v2, not {value:.20}")),
                    };
                }
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            // RFC 8216bis §6.2.5.2.
            return Err("_HLS_part: needs _HLS_msn".into());
        }
        Ok(d)
    }
}

/// A non-negative decimal integer, as the spec's decimal-integer.
fn number(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// How a held playlist request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    /// Answer with the playlist as it is now.
    Ready,
    /// Asked for more than two segments ahead: 400.
    TooFar,
    /// Not there within the limit: 503.
    TimedOut,
}

/// Hold a blocking playlist reload until the store can answer it.
pub async fn reload(
    store: &Store,
    channel: &str,
    rendition: &str,
    kind: TrackKind,
    msn: u64,
    part: Option<u32>,
    limit: Duration,
) -> Held {
    // Subscribe before looking, so an update between the two is not missed.
    let Some(updates) = store.updates(channel) else {
        return Held::Ready;
    };
    let check = || match store.reload(channel, rendition, kind, msn, part) {
        // No such rendition: the render answers (404).
        None | Some(Reload::Ready) => Some(Held::Ready),
        Some(Reload::TooFar) => Some(Held::TooFar),
        Some(Reload::Wait) => None,
    };
    until(updates, limit, check).await.unwrap_or(Held::TimedOut)
}

/// LL-HLS tune-in (`store.fresh_tune_in`): holds a media playlist asked for
/// without delivery directives until the rendition's next part is cut, for
/// at most two part targets. A player takes the live edge to be the
/// playlist's last part plus the time since the playlist arrived (hls.js:
/// `edge + age`) and starts `PART-HOLD-BACK` behind that; a playlist
/// answered at once is up to a part old (half a part on average, more when
/// a cache in front kept it), and at playback rate 1 the player stays that
/// much further behind for its whole session. Answered as a part is cut,
/// the edge it sees is the live one; tuning in takes up to a part longer.
pub async fn next_part(
    store: &Store,
    channel: &str,
    rendition: &str,
    kind: TrackKind,
    part_target: Duration,
) {
    let Some((msn, part)) = store.next_part(channel, rendition, kind) else {
        return;
    };
    // Ready, timed out (no publisher now) or gone: the render answers.
    let _ = reload(
        store,
        channel,
        rendition,
        kind,
        msn,
        Some(part),
        part_target * 2,
    )
    .await;
}

/// Run `check` now and after each store update until it answers, for at
/// most `limit`; `None` at the limit or when the channel goes away.
pub async fn until<T>(
    mut updates: watch::Receiver<u64>,
    limit: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        updates.borrow_and_update();
        if let Some(answer) = check() {
            return Some(answer);
        }
        match tokio::time::timeout_at(deadline, updates.changed()).await {
            Ok(Ok(())) => {}
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_parse_or_say_why_not() {
        let ok = |q: &str| Directives::parse(Some(q)).expect(q);
        assert_eq!(ok(""), Directives::default());
        assert_eq!(
            ok("token=abc&_HLS_msn=12&_HLS_part=3"),
            Directives {
                msn: Some(12),
                part: Some(3),
                skip: false
            }
        );
        assert!(ok("_HLS_msn=5&_HLS_skip=YES").skip);
        assert!(ok("_HLS_skip=v2").skip);
        for bad in [
            "_HLS_msn=abc",
            "_HLS_msn=-1",
            "_HLS_msn=",
            "_HLS_msn=1e3",
            "_HLS_msn=99999999999999999999999",
            "_HLS_msn=18446744073709551615",
            "_HLS_part=1",
            "_HLS_msn=1&_HLS_part=-2",
            "_HLS_msn=1&_HLS_part=4294967296",
            "_HLS_msn=1&_HLS_msn=2",
            "_HLS_skip=NO",
        ] {
            assert!(Directives::parse(Some(bad)).is_err(), "{bad}");
        }
    }
}
