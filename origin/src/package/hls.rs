//! HLS playlists (RFC 8216bis): multivariant and media playlists for CMAF
//! renditions, and a legacy MPEG-TS set. Text only; one writer per tag family.

use std::fmt::Write;

use super::{format_datetime, measure, ChannelWindow, LowLatency, Part, RenditionWindow, Segment};
use crate::media::{TrackKind, TrackParams};

/// Audio rendition group shared by every CMAF variant.
const AUDIO_GROUP: &str = "audio";
/// MPEG-TS packetization (4 header bytes per 184, PES and ADTS headers)
/// over the media bytes, for the TS variants' BANDWIDTH.
const TS_OVERHEAD: f64 = 1.1;

/// `master.m3u8`; `None` until a rendition has a segment.
pub fn master(w: &ChannelWindow) -> Option<String> {
    let audio = w.audio_source();
    let audio_peak = audio.map_or(0, |a| {
        measure(a.segments.iter(), Some(TrackKind::Audio)).peak_bitrate
    });
    let audio_avg = audio.map_or(0, |a| {
        measure(a.segments.iter(), Some(TrackKind::Audio)).average_bitrate
    });
    let video: Vec<&RenditionWindow> = w
        .renditions
        .iter()
        .filter(|r| r.segments.iter().any(|s| s.video.is_some()))
        .collect();
    let mut out = header(7);
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    if video.is_empty() {
        // Audio-only channel: each rendition's audio playlist is a variant.
        let mut any = false;
        for r in w
            .renditions
            .iter()
            .filter(|r| r.segments.iter().any(|s| s.audio.is_some()))
        {
            let m = measure(r.segments.iter(), Some(TrackKind::Audio));
            write_stream_inf(
                &mut out,
                m.peak_bitrate,
                m.average_bitrate,
                &codecs(None, r.audio.as_ref()),
                None,
                None,
            );
            let _ = writeln!(out, "{}/audio.m3u8", r.name);
            any = true;
        }
        return any.then_some(out);
    }
    if let Some(a) = audio {
        write_audio_media(&mut out, a);
    }
    for r in video {
        let m = measure(r.segments.iter(), Some(TrackKind::Video));
        let audio_params = audio.and_then(|a| a.audio.as_ref());
        write_stream_inf(
            &mut out,
            m.peak_bitrate + audio_peak,
            m.average_bitrate + audio_avg,
            &codecs(r.video.as_ref(), audio_params),
            Some((r.video.as_ref(), m.frame_rate)),
            audio.map(|_| AUDIO_GROUP),
        );
        let _ = writeln!(out, "{}/video.m3u8", r.name);
    }
    Some(out)
}

/// `master-ts.m3u8`: each rendition's own audio and video muxed.
pub fn master_ts(w: &ChannelWindow) -> Option<String> {
    let mut out = header(3);
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut any = false;
    for r in w.renditions.iter().filter(|r| !r.segments.is_empty()) {
        let m = measure(r.segments.iter(), None);
        let with_video = r.segments.iter().any(|s| s.video.is_some());
        let with_audio = r.segments.iter().any(|s| s.audio.is_some());
        write_stream_inf(
            &mut out,
            (m.peak_bitrate as f64 * TS_OVERHEAD) as u64,
            (m.average_bitrate as f64 * TS_OVERHEAD) as u64,
            &codecs(
                r.video.as_ref().filter(|_| with_video),
                r.audio.as_ref().filter(|_| with_audio),
            ),
            with_video.then_some((r.video.as_ref(), m.frame_rate)),
            None,
        );
        let _ = writeln!(out, "{}/ts.m3u8", r.name);
        any = true;
    }
    any.then_some(out)
}

/// `{rendition}/video.m3u8` or `{rendition}/audio.m3u8` (CMAF); with
/// `skip`, the delta update a client asks for with `_HLS_skip=YES`.
pub fn media_playlist(
    w: &ChannelWindow,
    r: &RenditionWindow,
    kind: TrackKind,
    skip: bool,
) -> Option<String> {
    let dir = match kind {
        TrackKind::Video => "video",
        TrackKind::Audio => "audio",
    };
    // From the first segment with this track on; a later segment without it
    // stays in the list as a gap, so media sequence numbers (implicit by
    // position) keep matching segment numbers and the other playlists.
    let segments: Vec<&Segment> = r
        .segments
        .iter()
        .map(|s| &**s)
        .skip_while(|s| s.track(kind).is_none())
        .collect();
    // An ended channel's playlist is complete: nothing to block on.
    let ll = r.low_latency.as_ref().filter(|_| !w.ended);
    let parts = ll.map_or(&[][..], |ll| ll.parts(kind));
    let first = segments
        .first()
        .map(|s| s.sequence)
        .or_else(|| parts.first().map(|p| p.sequence))?;
    let mut out = header(if ll.is_some() { 9 } else { 7 });
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", r.target_duration);
    let skip_until = r.target_duration as f64 * CAN_SKIP_TARGETS;
    if let Some(ll) = ll {
        write_low_latency_header(&mut out, ll, skip_until);
    }
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{first}");
    let _ = writeln!(
        out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        r.discontinuity_sequence
    );
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let open_parts = parts
        .iter()
        .filter(|p| ll.is_some_and(|ll| p.sequence == ll.open_sequence));
    let total: f64 = segments.iter().map(|s| s.duration).sum::<f64>()
        + open_parts.map(|p| p.seconds()).sum::<f64>();
    // RFC 8216bis §6.2.5.1: skip the segments that start more than
    // CAN-SKIP-UNTIL before the playlist's end.
    let skipped = if skip && ll.is_some() {
        let mut start = 0.0;
        segments
            .iter()
            .take_while(|s| {
                let skippable = total - start > skip_until;
                start += s.duration;
                skippable
            })
            .count()
    } else {
        0
    };
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }
    // §4.4.4.9: parts only within three target durations of the end.
    let parts_from = total - 3.0 * r.target_duration as f64;
    let mut start: f64 = segments[..skipped].iter().map(|s| s.duration).sum();
    let mut current_init = None;
    for s in segments.iter().skip(skipped) {
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let uri = format!("{dir}/{}.m4s", s.sequence);
        let Some(track) = s.track(kind) else {
            // RFC 8216bis §4.4.4.7: no media here; clients must not load it.
            out.push_str("#EXT-X-GAP\n");
            write_segment(&mut out, s, s.duration, &uri);
            continue;
        };
        if current_init != Some(track.init.id) {
            // RFC 8216bis §4.4.4.5: applies to every segment until the next MAP.
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{dir}/init-{}.mp4\"", track.init.id);
            current_init = Some(track.init.id);
        }
        if start + s.duration > parts_from {
            for p in parts.iter().filter(|p| p.sequence == s.sequence) {
                write_part(&mut out, dir, p);
            }
        }
        start += s.duration;
        write_segment(&mut out, s, track.seconds(), &uri);
    }
    if let Some(ll) = ll {
        let open: Vec<_> = parts
            .iter()
            .filter(|p| p.sequence == ll.open_sequence)
            .collect();
        if let Some(first) = open.first() {
            if ll.open_discontinuity {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            if current_init != Some(first.track.init.id) {
                let _ = writeln!(
                    out,
                    "#EXT-X-MAP:URI=\"{dir}/init-{}.mp4\"",
                    first.track.init.id
                );
            }
        }
        for p in open {
            write_part(&mut out, dir, p);
        }
        let (sequence, index) = ll.next_part(kind);
        let _ = writeln!(
            out,
            "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{dir}/{sequence}.{index}.m4s\""
        );
        write_rendition_reports(&mut out, w, r, kind);
    }
    if w.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    Some(out)
}

/// CAN-SKIP-UNTIL in target durations: the least RFC 8216bis §4.4.3.8 allows.
const CAN_SKIP_TARGETS: f64 = 6.0;

/// §4.4.3.8 EXT-X-SERVER-CONTROL (`PART-HOLD-BACK` from
/// `store.part_hold_back`) and §4.4.3.7 EXT-X-PART-INF.
fn write_low_latency_header(out: &mut String, ll: &LowLatency, skip_until: f64) {
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={skip_until:.3},PART-HOLD-BACK={:.3}",
        ll.part_hold_back
    );
    let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={:.3}", ll.part_target);
}

/// §4.4.4.9 EXT-X-PART.
fn write_part(out: &mut String, dir: &str, p: &Part) {
    let _ = write!(
        out,
        "#EXT-X-PART:DURATION={:.3},URI=\"{dir}/{}.{}.m4s\"",
        p.seconds(),
        p.sequence,
        p.index
    );
    if p.independent {
        out.push_str(",INDEPENDENT=YES");
    }
    out.push('\n');
}

/// §4.4.5.4 EXT-X-RENDITION-REPORT for every other media playlist the
/// multivariant playlist lists, with its last segment and part.
fn write_rendition_reports(
    out: &mut String,
    w: &ChannelWindow,
    me: &RenditionWindow,
    my_kind: TrackKind,
) {
    let has = |r: &RenditionWindow, kind| r.segments.iter().any(|s| s.track(kind).is_some());
    let any_video = w.renditions.iter().any(|r| has(r, TrackKind::Video));
    let mut listed: Vec<(&RenditionWindow, TrackKind)> = Vec::new();
    if any_video {
        listed.extend(
            w.renditions
                .iter()
                .filter(|r| has(r, TrackKind::Video))
                .map(|r| (r, TrackKind::Video)),
        );
        listed.extend(w.audio_source().map(|a| (a, TrackKind::Audio)));
    } else {
        listed.extend(
            w.renditions
                .iter()
                .filter(|r| has(r, TrackKind::Audio))
                .map(|r| (r, TrackKind::Audio)),
        );
    }
    for (r, kind) in listed {
        if r.name == me.name && kind == my_kind {
            continue;
        }
        let Some(last) = r.low_latency.as_ref().and_then(|ll| ll.parts(kind).last()) else {
            continue;
        };
        let file = match kind {
            TrackKind::Video => "video.m3u8",
            TrackKind::Audio => "audio.m3u8",
        };
        let uri = if r.name == me.name {
            file.to_owned()
        } else {
            format!("../{}/{file}", r.name)
        };
        let _ = writeln!(
            out,
            "#EXT-X-RENDITION-REPORT:URI=\"{uri}\",LAST-MSN={},LAST-PART={}",
            last.sequence, last.index
        );
    }
}

/// `{rendition}/ts.m3u8`.
pub fn ts_playlist(w: &ChannelWindow, r: &RenditionWindow) -> Option<String> {
    let mut out = header(3);
    write_media_header(&mut out, r, r.segments.first()?.sequence);
    for s in &r.segments {
        if s.discontinuity {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        write_segment(&mut out, s, s.duration, &format!("{}.ts", s.sequence));
    }
    if w.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    Some(out)
}

fn header(version: u8) -> String {
    format!("#EXTM3U\n#EXT-X-VERSION:{version}\n")
}

/// RFC 8216bis §4.4.3: tags that apply to the whole media playlist.
fn write_media_header(out: &mut String, r: &RenditionWindow, media_sequence: u64) {
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{}", r.target_duration);
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{media_sequence}");
    let _ = writeln!(
        out,
        "#EXT-X-DISCONTINUITY-SEQUENCE:{}",
        r.discontinuity_sequence
    );
}

/// §4.4.4.6 program date time on every segment, §4.4.4.1 EXTINF, then the URI.
fn write_segment(out: &mut String, s: &Segment, seconds: f64, uri: &str) {
    let _ = writeln!(
        out,
        "#EXT-X-PROGRAM-DATE-TIME:{}",
        format_datetime(s.program_date_time)
    );
    let _ = writeln!(out, "#EXTINF:{seconds:.3},");
    out.push_str(uri);
    out.push('\n');
}

/// §4.4.6.1 EXT-X-MEDIA for the shared audio rendition.
fn write_audio_media(out: &mut String, a: &RenditionWindow) {
    let channels = match &a.audio {
        Some(TrackParams::Audio(p)) => format!(",CHANNELS=\"{}\"", p.channels),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"{}\",DEFAULT=YES,AUTOSELECT=YES{channels},URI=\"{}/audio.m3u8\"",
        a.name, a.name
    );
}

/// §4.4.6.2 EXT-X-STREAM-INF.
fn write_stream_inf(
    out: &mut String,
    peak: u64,
    average: u64,
    codecs: &str,
    video: Option<(Option<&TrackParams>, f64)>,
    audio_group: Option<&str>,
) {
    let _ = write!(
        out,
        "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{codecs}\"",
        peak.max(1),
        average.max(1)
    );
    if let Some((params, fps)) = video {
        if let Some(TrackParams::Video(v)) = params {
            let _ = write!(out, ",RESOLUTION={}x{}", v.width, v.height);
        }
        if fps > 0.0 {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
    }
    if let Some(group) = audio_group {
        let _ = write!(out, ",AUDIO=\"{group}\"");
    }
    out.push('\n');
}

fn codecs(video: Option<&TrackParams>, audio: Option<&TrackParams>) -> String {
    video
        .into_iter()
        .chain(audio)
        .map(|p| p.codec())
        .collect::<Vec<_>>()
        .join(",")
}

/// HLS Content Steering (RFC 8216bis §4.4.6.6, Apple Content Steering 1.2):
/// `master` with `EXT-X-CONTENT-STEERING` after its header tags, and its
/// variants and renditions listed once per pathway, best first: each
/// `EXT-X-STREAM-INF` gets that pathway's `PATHWAY-ID`, rendition groups are
/// renamed `{group}-{pathway}` so each pathway has its own, and every URI
/// becomes absolute on that pathway's base (`{base_url}/live/{channel}/`).
pub fn with_steering(master: &str, tags: &crate::steering::Tags) -> String {
    let lines: Vec<&str> = master.lines().collect();
    let variants = lines
        .iter()
        .position(|l| {
            [
                "#EXT-X-MEDIA:",
                "#EXT-X-STREAM-INF:",
                "#EXT-X-I-FRAME-STREAM-INF:",
            ]
            .iter()
            .any(|t| l.starts_with(t))
        })
        .unwrap_or(lines.len());
    let mut out = String::with_capacity(master.len() * (tags.pathways.len() + 1));
    for line in &lines[..variants] {
        out.push_str(line);
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "#EXT-X-CONTENT-STEERING:SERVER-URI=\"{}\",PATHWAY-ID=\"{}\"",
        tags.server_uri, tags.default_pathway
    );
    for (id, base) in &tags.pathways {
        for line in &lines[variants..] {
            if let Some(attrs) = line.strip_prefix("#EXT-X-MEDIA:") {
                out.push_str("#EXT-X-MEDIA:");
                out.push_str(&steer_attributes(attrs, id, base, &["GROUP-ID"]));
            } else if let Some(attrs) = line.strip_prefix("#EXT-X-STREAM-INF:") {
                out.push_str("#EXT-X-STREAM-INF:");
                let groups = ["AUDIO", "VIDEO", "SUBTITLES", "CLOSED-CAPTIONS"];
                out.push_str(&steer_attributes(attrs, id, base, &groups));
                let _ = write!(out, ",PATHWAY-ID=\"{id}\"");
            } else if let Some(attrs) = line.strip_prefix("#EXT-X-I-FRAME-STREAM-INF:") {
                out.push_str("#EXT-X-I-FRAME-STREAM-INF:");
                out.push_str(&steer_attributes(attrs, id, base, &["VIDEO"]));
                let _ = write!(out, ",PATHWAY-ID=\"{id}\"");
            } else if line.starts_with('#') || line.trim().is_empty() {
                out.push_str(line);
            } else {
                out.push_str(&absolute(base, line.trim()));
            }
            out.push('\n');
        }
    }
    out
}

/// `URI="…"` made absolute on `base`; the quoted group attributes in
/// `groups` (not `NONE`) suffixed with `-{pathway}`.
fn steer_attributes(attrs: &str, pathway: &str, base: &str, groups: &[&str]) -> String {
    let mut out = String::with_capacity(attrs.len() + 64);
    let mut rest = attrs;
    while let Some((name, after)) = rest.split_once('=') {
        // A quoted value runs to its closing quote, an unquoted one to the comma.
        let (value, quoted, tail) = match after.strip_prefix('"') {
            Some(q) => {
                let end = q.find('"').unwrap_or(q.len());
                (&q[..end], true, q.get(end + 1..).unwrap_or(""))
            }
            None => {
                let end = after.find(',').unwrap_or(after.len());
                (&after[..end], false, &after[end..])
            }
        };
        let _ = write!(out, "{name}=");
        match (quoted, name) {
            (true, "URI") => {
                let _ = write!(out, "\"{}\"", absolute(base, value));
            }
            (true, _) if groups.contains(&name) && value != "NONE" => {
                let _ = write!(out, "\"{value}-{pathway}\"");
            }
            (true, _) => {
                let _ = write!(out, "\"{value}\"");
            }
            (false, _) => out.push_str(value),
        }
        match tail.strip_prefix(',') {
            Some(t) => {
                out.push(',');
                rest = t;
            }
            None => return out,
        }
    }
    out.push_str(rest);
    out
}

/// `uri` resolved against `base` (which ends in `/`); absolute URIs stay.
fn absolute(base: &str, uri: &str) -> String {
    if uri.contains("://") {
        return uri.to_owned();
    }
    if let Some(path) = uri.strip_prefix('/') {
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let host_end = base[scheme_end..]
            .find('/')
            .map_or(base.len(), |i| scheme_end + i);
        return format!("{}/{path}", &base[..host_end]);
    }
    format!("{base}{uri}")
}

/// Checks shared by the store's tests: playlist structure per RFC 8216bis.
#[cfg(test)]
pub(crate) mod check {
    /// §4.3/§4.4: EXTM3U first; one VERSION, TARGETDURATION, MEDIA-SEQUENCE
    /// and DISCONTINUITY-SEQUENCE, all before the first segment; every EXTINF
    /// followed by a URI and no longer (rounded) than the target; a MAP
    /// before the first fMP4 segment; ENDLIST last. Returns the segments
    /// that carry media (not EXT-X-GAP).
    pub fn media_playlist(text: &str) -> Vec<(String, f64)> {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#EXTM3U");
        let once = |tag: &str| {
            let at: Vec<usize> = lines
                .iter()
                .enumerate()
                .filter(|(_, l)| l.starts_with(tag))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(at.len(), 1, "{tag} once in\n{text}");
            at[0]
        };
        let first_segment = lines
            .iter()
            .position(|l| l.starts_with("#EXTINF"))
            .expect("segments");
        let target: f64 = lines[once("#EXT-X-TARGETDURATION:")]["#EXT-X-TARGETDURATION:".len()..]
            .parse()
            .expect("integer target duration");
        for tag in [
            "#EXT-X-VERSION:",
            "#EXT-X-MEDIA-SEQUENCE:",
            "#EXT-X-DISCONTINUITY-SEQUENCE:",
        ] {
            assert!(once(tag) < first_segment, "{tag} before segments");
        }
        let fmp4 = text.contains(".m4s");
        if fmp4 {
            let map = lines
                .iter()
                .position(|l| l.starts_with("#EXT-X-MAP:URI=\""));
            assert!(map.is_some_and(|m| m < first_segment), "EXT-X-MAP first");
        }
        let mut segments = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if let Some(v) = l.strip_prefix("#EXTINF:") {
                let gap =
                    i > 0 && lines[i - 1] == "#EXT-X-GAP" || i > 1 && lines[i - 2] == "#EXT-X-GAP";
                let (d, _) = v.split_once(',').expect("EXTINF:<duration>,");
                assert_eq!(d.split('.').nth(1).map(str::len), Some(3), "3 decimals");
                let d: f64 = d.parse().expect("decimal");
                assert!(d.round() <= target, "EXTINF {d} over target {target}");
                let uri = lines[i + 1];
                assert!(!uri.starts_with('#') && !uri.is_empty(), "URI after EXTINF");
                if !gap {
                    segments.push((uri.to_owned(), d));
                }
            }
            if let Some(v) = l.strip_prefix("#EXT-X-PROGRAM-DATE-TIME:") {
                assert!(v.len() == 24 && v.ends_with('Z'), "date-time {v}");
            }
        }
        if let Some(end) = lines.iter().position(|l| *l == "#EXT-X-ENDLIST") {
            assert_eq!(end, lines.len() - 1, "ENDLIST last");
        }
        segments
    }

    /// §4.4.6.2: each STREAM-INF carries BANDWIDTH and CODECS and is followed by a URI.
    pub fn multivariant(text: &str) -> Vec<String> {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "#EXTM3U");
        assert!(!text.contains("#EXTINF"), "no media segment tags");
        let mut uris = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            if l.starts_with("#EXT-X-STREAM-INF:") {
                assert!(l.contains("BANDWIDTH=") && l.contains("CODECS=\""), "{l}");
                assert!(!lines[i + 1].starts_with('#'));
                uris.push(lines[i + 1].to_owned());
            }
        }
        uris
    }
}
