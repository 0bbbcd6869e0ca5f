//! HLS playlists (RFC 8216bis): multivariant and media playlists for CMAF
//! renditions, and a legacy MPEG-TS set. Text only; one writer per tag family.

use std::fmt::Write;

use super::{format_datetime, measure, ChannelWindow, RenditionWindow, Segment};
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

/// `{rendition}/video.m3u8` or `{rendition}/audio.m3u8` (CMAF).
pub fn media_playlist(w: &ChannelWindow, r: &RenditionWindow, kind: TrackKind) -> Option<String> {
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
    let mut out = header(7);
    write_media_header(&mut out, r, segments.first()?.sequence);
    out.push_str(
        "#EXT-X-INDEPENDENT-SEGMENTS
",
    );
    let mut current_init = None;
    for s in segments {
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
        write_segment(&mut out, s, track.seconds(), &uri);
    }
    if w.ended {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    Some(out)
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
