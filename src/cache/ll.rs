//! LL-HLS media playlists as a cache sees them: which parts a player that
//! has just read this playlist is about to ask for, so the edge can fetch
//! them before it does (see `Edge::prefetch_parts`).
//!
//! A low-latency player starts `PART-HOLD-BACK` behind the end of the
//! playlist (RFC 8216bis §4.4.3.8), which falls inside the last segment or
//! two, and loads that segment part by part from its first one; then it
//! follows the live edge one part at a time, and some players (Shaka,
//! AVPlayer) load the `EXT-X-PRELOAD-HINT` part ahead. Those parts are what
//! [`parts_to_prefetch`] picks: the parts of every segment (the open one
//! included) that ends within `PART-HOLD-BACK` of the playlist's end, and
//! the hinted part.

use serde::Deserialize;

/// The `[cache.ll]` section: low-latency delivery.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlConfig {
    /// When an LL-HLS media playlist passes through (a blocking reload's
    /// answer or a plain one), start coalesced fills for the parts a
    /// player is about to ask for, so its requests are hits or join a fill
    /// already under way.
    pub prefetch_parts: bool,
    /// At most this many parts per playlist (the newest ones).
    pub prefetch_max: usize,
}

impl Default for LlConfig {
    fn default() -> Self {
        LlConfig {
            prefetch_parts: true,
            prefetch_max: 12,
        }
    }
}

/// How long an LL-HLS media playlist stays fresh here: at most its
/// `PART-TARGET` (the "cacheable for their part duration"), since
/// a new part, and with it a new playlist, comes that often. `Cache-Control`
/// speaks whole seconds (`max-age=1` is the least an origin can say), which
/// would let a player tuning in through this node start from a playlist up
/// to a second behind and aim its hold-back from there. `None` for anything
/// that is not an LL-HLS media playlist (no `EXT-X-PART-INF`).
pub fn playlist_lifetime(body: &[u8]) -> Option<std::time::Duration> {
    // The tag sits in the header, before the first segment.
    let head = &body[..body.len().min(4096)];
    let text = std::str::from_utf8(head)
        .ok()
        .or_else(|| std::str::from_utf8(&head[..head.len().saturating_sub(3)]).ok())?;
    let attrs = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("#EXT-X-PART-INF:"))?;
    let part = attribute(attrs, "PART-TARGET")?.parse::<f64>().ok()?;
    (part.is_finite() && part > 0.0 && part <= 60.0)
        .then(|| std::time::Duration::from_secs_f64(part))
}

/// Part targets in `PART-HOLD-BACK` when a playlist does not say
/// (RFC 8216bis §4.4.3.8 recommends three).
const DEFAULT_HOLD_BACK_PARTS: f64 = 3.0;

/// The URIs (as written) of the parts a player is about to load after
/// reading `playlist`, oldest first, the hinted part last; at most `max`
/// (the newest), preceded by the `EXT-X-MAP` they need. Empty for a
/// playlist without parts (not LL-HLS).
pub fn parts_to_prefetch(playlist: &str, max: usize) -> Vec<String> {
    if max == 0 || !playlist.contains("#EXT-X-PART") {
        return Vec::new();
    }
    let mut hold_back = None;
    let mut part_target = None;
    // Segments' parts with each segment's duration; the open segment
    // (parts after the last whole segment) last.
    let mut segments: Vec<(Vec<String>, f64, Option<String>)> = Vec::new();
    let mut map: Option<String> = None;
    let mut parts: Vec<String> = Vec::new();
    let mut parts_duration = 0.0;
    let mut extinf = None;
    let mut hint = None;
    for line in playlist.lines().map(str::trim) {
        if let Some(attrs) = line.strip_prefix("#EXT-X-SERVER-CONTROL:") {
            hold_back = attribute(attrs, "PART-HOLD-BACK").and_then(|v| v.parse::<f64>().ok());
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PART-INF:") {
            part_target = attribute(attrs, "PART-TARGET").and_then(|v| v.parse::<f64>().ok());
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            let duration = attribute(attrs, "DURATION").and_then(|v| v.parse::<f64>().ok());
            if let Some(duration) = duration.filter(|d| d.is_finite() && *d >= 0.0) {
                parts_duration += duration;
            }
            // A gap has nothing to load; a byte range is part of an object
            // the player loads whole or by range: left to the player.
            let skipped =
                attribute(attrs, "GAP") == Some("YES") || attribute(attrs, "BYTERANGE").is_some();
            if let (Some(uri), false) = (attribute(attrs, "URI"), skipped) {
                parts.push(uri.to_owned());
            }
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-MAP:") {
            // A byte range of a file: left to the player.
            map = attribute(attrs, "URI")
                .filter(|_| attribute(attrs, "BYTERANGE").is_none())
                .map(str::to_owned);
        } else if let Some(attrs) = line.strip_prefix("#EXT-X-PRELOAD-HINT:") {
            let is_part = attribute(attrs, "TYPE") == Some("PART")
                && attribute(attrs, "BYTERANGE-START").is_none();
            if is_part {
                hint = attribute(attrs, "URI").map(str::to_owned);
            }
        } else if let Some(value) = line.strip_prefix("#EXTINF:") {
            extinf = value
                .split(',')
                .next()
                .and_then(|d| d.trim().parse::<f64>().ok())
                .filter(|d| d.is_finite() && *d >= 0.0);
        } else if !line.is_empty() && !line.starts_with('#') {
            // A segment's URI ends it.
            let duration = extinf.take().unwrap_or(parts_duration);
            segments.push((std::mem::take(&mut parts), duration, map.clone()));
            parts_duration = 0.0;
        }
    }
    segments.push((parts, parts_duration, map));
    let Some(hold_back) = hold_back.or(part_target.map(|t| t * DEFAULT_HOLD_BACK_PARTS)) else {
        return Vec::new();
    };
    // From the end back: a segment that ends within `hold_back` of the
    // playlist's end holds where the player starts, or comes after it.
    let mut after = 0.0;
    let mut picked: Vec<&[String]> = Vec::new();
    let mut maps: Vec<String> = Vec::new();
    for (parts, duration, map) in segments.iter().rev() {
        if after >= hold_back {
            break;
        }
        picked.push(parts);
        if let Some(map) = map.as_ref().filter(|m| !maps.contains(m)) {
            maps.insert(0, map.clone());
        }
        after += duration;
    }
    let mut uris: Vec<String> = picked.into_iter().rev().flatten().cloned().collect();
    uris.extend(hint);
    let excess = uris.len().saturating_sub(max);
    uris.drain(..excess);
    if uris.is_empty() {
        return uris;
    }
    // The initialisation section those parts need, first: a player loads
    // it before them.
    maps.append(&mut uris);
    maps
}

/// The value of attribute `name` in an attribute list (RFC 8216bis §4.2),
/// without quotes.
fn attribute<'a>(attrs: &'a str, name: &str) -> Option<&'a str> {
    let mut rest = attrs;
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let (value, tail) = quoted.split_once('"')?;
            (value, tail.trim_start_matches(',').trim_start())
        } else {
            match after.split_once(',') {
                Some((value, tail)) => (value, tail.trim_start()),
                None => (after, ""),
            }
        };
        if key == name {
            return Some(value.trim());
        }
        rest = next;
    }
    None
}

/// The path and query a part URI in the playlist at `playlist_path` names,
/// when it is this host's (relative or absolute path; a URL with a scheme
/// or host may be anyone's and is left alone). The path is not normalised.
pub fn resolve(playlist_path: &str, uri: &str) -> Option<(String, Option<String>)> {
    if uri.is_empty() || uri.contains("://") || uri.starts_with("//") || uri.contains('#') {
        return None;
    }
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (uri, None),
    };
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        let dir = &playlist_path[..playlist_path.rfind('/').map_or(0, |i| i + 1)];
        if !dir.starts_with('/') {
            return None;
        }
        format!("{dir}{path}")
    };
    Some((path, query))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Strata's origin writes with 2 s segments and 0.5 s parts, one
    /// part into segment 13.
    const PLAYLIST: &str = "#EXTM3U
#EXT-X-VERSION:9
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.000,PART-HOLD-BACK=1.500
#EXT-X-PART-INF:PART-TARGET=0.500
#EXT-X-MEDIA-SEQUENCE:10
#EXT-X-MAP:URI=\"video/init-1.mp4\"
#EXTINF:2.000,
video/10.m4s
#EXT-X-PART:DURATION=0.440,URI=\"video/11.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.440,URI=\"video/11.1.m4s\"
#EXT-X-PART:DURATION=0.440,URI=\"video/11.2.m4s\"
#EXT-X-PART:DURATION=0.440,URI=\"video/11.3.m4s\"
#EXT-X-PART:DURATION=0.240,URI=\"video/11.4.m4s\"
#EXTINF:2.000,
video/11.m4s
#EXT-X-PART:DURATION=0.440,URI=\"video/12.0.m4s\",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.440,URI=\"video/12.1.m4s\"
#EXT-X-PART:DURATION=0.440,URI=\"video/12.2.m4s\"
#EXT-X-PART:DURATION=0.440,URI=\"video/12.3.m4s\"
#EXT-X-PART:DURATION=0.240,URI=\"video/12.4.m4s\"
#EXTINF:2.000,
video/12.m4s
#EXT-X-PART:DURATION=0.440,URI=\"video/13.0.m4s\",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"video/13.1.m4s\"
#EXT-X-RENDITION-REPORT:URI=\"audio.m3u8\",LAST-MSN=13,LAST-PART=0
";

    fn names(uris: &[String]) -> Vec<&str> {
        uris.iter().map(String::as_str).collect()
    }

    #[test]
    fn picks_the_segment_where_a_player_starts_and_what_follows() {
        // 1.5 s back from the end is 1.06 s into segment 12: all of its
        // parts, the open segment's, and the hint.
        let uris = parts_to_prefetch(PLAYLIST, 12);
        assert_eq!(
            names(&uris),
            [
                "video/init-1.mp4",
                "video/12.0.m4s",
                "video/12.1.m4s",
                "video/12.2.m4s",
                "video/12.3.m4s",
                "video/12.4.m4s",
                "video/13.0.m4s",
                "video/13.1.m4s"
            ]
        );
    }

    #[test]
    fn keeps_the_newest_parts_under_the_cap() {
        let uris = parts_to_prefetch(PLAYLIST, 3);
        assert_eq!(
            names(&uris),
            [
                "video/init-1.mp4",
                "video/12.4.m4s",
                "video/13.0.m4s",
                "video/13.1.m4s"
            ]
        );
        assert!(parts_to_prefetch(PLAYLIST, 0).is_empty());
    }

    #[test]
    fn a_hold_back_past_the_open_segment_reaches_further_back() {
        let longer = PLAYLIST.replace("PART-HOLD-BACK=1.500", "PART-HOLD-BACK=2.600");
        let uris = parts_to_prefetch(&longer, 20);
        assert_eq!(uris[1], "video/11.0.m4s");
        assert_eq!(uris.len(), 13);
    }

    #[test]
    fn a_new_map_in_the_window_comes_with_the_one_before() {
        let switched = PLAYLIST.replace(
            "#EXT-X-PART:DURATION=0.440,URI=\"video/13.0.m4s\"",
            "#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"video/init-2.mp4\"\n#EXT-X-PART:DURATION=0.440,URI=\"video/13.0.m4s\"",
        );
        let uris = parts_to_prefetch(&switched, 12);
        assert_eq!(
            names(&uris[..3]),
            ["video/init-1.mp4", "video/init-2.mp4", "video/12.0.m4s"]
        );
        let byterange = PLAYLIST.replace("init-1.mp4\"", "init-1.mp4\",BYTERANGE=\"700@0\"");
        assert_eq!(parts_to_prefetch(&byterange, 12)[0], "video/12.0.m4s");
    }

    #[test]
    fn without_part_hold_back_three_part_targets_are_assumed() {
        let no_hold_back = PLAYLIST.replace(",PART-HOLD-BACK=1.500", "");
        assert_eq!(
            parts_to_prefetch(&no_hold_back, 12),
            parts_to_prefetch(PLAYLIST, 12)
        );
    }

    #[test]
    fn a_playlist_at_a_segment_boundary_starts_in_the_last_segment() {
        // Segment 13 just opened: no parts of it yet, only the hint.
        let at_boundary: String = PLAYLIST
            .lines()
            .filter(|l| !l.contains("13.0.m4s"))
            .map(|l| format!("{}\n", l.replace("13.1.m4s", "13.0.m4s")))
            .collect();
        let uris = parts_to_prefetch(&at_boundary, 12);
        assert_eq!(uris[1], "video/12.0.m4s");
        assert_eq!(uris.last().map(String::as_str), Some("video/13.0.m4s"));
        assert_eq!(uris.len(), 7);
    }

    #[test]
    fn plain_playlists_and_odd_lines_give_nothing_or_what_is_sound() {
        let plain = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.ts\n#EXTINF:2.0,\nb.ts\n";
        assert!(parts_to_prefetch(plain, 12).is_empty());
        assert!(parts_to_prefetch("", 12).is_empty());
        // Parts but neither PART-HOLD-BACK nor PART-TARGET: nothing to go by.
        assert!(parts_to_prefetch("#EXTM3U\n#EXT-X-PART:DURATION=0.5,URI=\"a\"\n", 12).is_empty());
        // Gaps, byte ranges, unquoted junk and a map hint are skipped.
        let odd = "#EXTM3U
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-PART:DURATION=0.5,URI=\"gap.m4s\",GAP=YES
#EXT-X-PART:DURATION=0.5,URI=\"whole.mp4\",BYTERANGE=\"100@0\"
#EXT-X-PART:DURATION=nope,URI=\"ok.m4s\"
#EXT-X-PART:DURATION=0.5,URI=\"unterminated
#EXT-X-PRELOAD-HINT:TYPE=MAP,URI=\"init.mp4\"
";
        assert_eq!(names(&parts_to_prefetch(odd, 12)), ["ok.m4s"]);
    }

    #[test]
    fn an_ll_playlist_lives_as_long_as_its_part_target() {
        use std::time::Duration;
        let ll = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-PART-INF:PART-TARGET=0.500\n#EXTINF:2.0,\na.m4s\n";
        assert_eq!(
            playlist_lifetime(ll.as_bytes()),
            Some(Duration::from_millis(500))
        );
        // Not LL, a multivariant playlist, nonsense values: no bound.
        for body in [
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\na.m4s\n",
            "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nv.m3u8\n",
            "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=abc\n",
            "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=-1\n",
            "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=NaN\n",
            "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=1e300\n",
        ] {
            assert_eq!(playlist_lifetime(body.as_bytes()), None, "{body}");
        }
        assert_eq!(playlist_lifetime(&[0xff, 0xfe, 0x00]), None);
    }

    #[test]
    fn attributes_are_read_with_quotes_and_commas() {
        let attrs = "DURATION=0.440,URI=\"a,b.m4s\",INDEPENDENT=YES";
        assert_eq!(attribute(attrs, "URI"), Some("a,b.m4s"));
        assert_eq!(attribute(attrs, "INDEPENDENT"), Some("YES"));
        assert_eq!(attribute(attrs, "DURATION"), Some("0.440"));
        assert_eq!(attribute(attrs, "GAP"), None);
        assert_eq!(attribute("", "URI"), None);
    }

    #[test]
    fn uris_resolve_against_the_playlist_on_this_host_only() {
        let at = "/live/ll/main/video.m3u8";
        assert_eq!(
            resolve(at, "video/12.3.m4s"),
            Some(("/live/ll/main/video/12.3.m4s".into(), None))
        );
        assert_eq!(
            resolve(at, "/other/1.0.m4s?token=x"),
            Some(("/other/1.0.m4s".into(), Some("token=x".into())))
        );
        assert_eq!(resolve(at, "https://cdn.example/1.0.m4s"), None);
        assert_eq!(resolve(at, "//cdn.example/1.0.m4s"), None);
        assert_eq!(resolve(at, ""), None);
        assert_eq!(resolve("relative.m3u8", "a.m4s"), None);
    }
}
