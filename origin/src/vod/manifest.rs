//! A title's HLS playlists (RFC 8216bis, `EXT-X-PLAYLIST-TYPE:VOD`) and its
//! static DASH MPD (ISO/IEC 23009-1, live profile with SegmentTemplate and
//! SegmentTimeline, as the live MPD). Text only, from the plan: no media is
//! read to write them.

use std::fmt::Write;

use super::library::Title;
use super::mp4::TrackIndex;
use super::plan::TrackPlan;
use crate::media::{TrackKind, TrackParams};
use crate::package::format_duration;

const AUDIO_GROUP: &str = "audio";

fn tracks(title: &Title, kind: TrackKind) -> impl Iterator<Item = (&TrackIndex, &TrackPlan)> {
    title
        .index
        .tracks
        .iter()
        .zip(&title.plans)
        .filter(move |(t, p)| t.kind() == kind && !p.segments.is_empty())
}

fn frame_rate(t: &TrackIndex) -> f64 {
    let seconds = t.duration_seconds();
    if seconds > 0.0 {
        t.samples.len() as f64 / seconds
    } else {
        0.0
    }
}

/// `master.m3u8`: one variant per video track, every audio track a rendition
/// of one group (the first the default); audio-only titles list their audio
/// playlists as variants.
pub fn master(title: &Title) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let audio: Vec<_> = tracks(title, TrackKind::Audio).collect();
    let videos: Vec<_> = tracks(title, TrackKind::Video).collect();
    if videos.is_empty() {
        for (t, p) in audio {
            let _ = writeln!(
                out,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
                p.peak_bitrate().max(1),
                p.average_bitrate().max(1),
                t.params.codec()
            );
            let _ = writeln!(out, "t{}.m3u8", t.track_id);
        }
        return out;
    }
    for (i, (t, _)) in audio.iter().enumerate() {
        let channels = match &t.params {
            TrackParams::Audio(a) => a.channels,
            TrackParams::Video(_) => 0,
        };
        let default = if i == 0 { "YES" } else { "NO" };
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"{}-{}\",LANGUAGE=\"{}\",DEFAULT={default},AUTOSELECT=YES,CHANNELS=\"{channels}\",URI=\"t{}.m3u8\"",
            t.language, t.track_id, t.language, t.track_id
        );
    }
    let audio_peak = audio
        .iter()
        .map(|(_, p)| p.peak_bitrate())
        .max()
        .unwrap_or(0);
    let audio_avg = audio
        .iter()
        .map(|(_, p)| p.average_bitrate())
        .max()
        .unwrap_or(0);
    let audio_codec = audio.first().map(|(t, _)| t.params.codec().to_owned());
    for (t, p) in videos {
        let codecs: Vec<&str> = std::iter::once(t.params.codec())
            .chain(audio_codec.as_deref())
            .collect();
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
            (p.peak_bitrate() + audio_peak).max(1),
            (p.average_bitrate() + audio_avg).max(1),
            codecs.join(",")
        );
        if let TrackParams::Video(v) = &t.params {
            let _ = write!(out, ",RESOLUTION={}x{}", v.width, v.height);
        }
        let fps = frame_rate(t);
        if fps > 0.0 {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        if audio_codec.is_some() {
            let _ = write!(out, ",AUDIO=\"{AUDIO_GROUP}\"");
        }
        let _ = writeln!(out, "\nt{}.m3u8", t.track_id);
    }
    out
}

/// `t{track}.m3u8`: every segment, then `EXT-X-ENDLIST`.
pub fn media_playlist(t: &TrackIndex, p: &TrackPlan) -> String {
    let longest = p.segments.iter().map(|s| p.seconds(s)).fold(0.0, f64::max);
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n");
    // §4.4.3.1: EXTINF rounded to the nearest integer must not exceed it.
    let _ = writeln!(
        out,
        "#EXT-X-TARGETDURATION:{}",
        longest.round().max(1.0) as u64
    );
    out.push_str(
        "#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n",
    );
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"t{}/init.mp4\"", t.track_id);
    for (n, s) in p.segments.iter().enumerate() {
        let _ = writeln!(
            out,
            "#EXTINF:{:.3},\nt{}/{}.m4s",
            p.seconds(s),
            t.track_id,
            n + 1
        );
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// `manifest.mpd`: one Period, a video AdaptationSet with a Representation
/// per video track, an audio AdaptationSet per audio track (its language).
pub fn mpd(title: &Title) -> String {
    let duration = title
        .plans
        .iter()
        .map(TrackPlan::total_seconds)
        .fold(0.0, f64::max);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"static\" mediaPresentationDuration=\"{}\" minBufferTime=\"{}\">",
        format_duration(duration),
        format_duration(title.target_duration)
    );
    out.push_str("  <Period id=\"0\" start=\"PT0S\">\n");
    let videos: Vec<_> = tracks(title, TrackKind::Video).collect();
    let mut set = 0;
    if !videos.is_empty() {
        let _ = writeln!(out, "    <AdaptationSet id=\"{set}\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">");
        for (t, p) in videos {
            write_representation(&mut out, t, p);
        }
        out.push_str("    </AdaptationSet>\n");
        set += 1;
    }
    for (t, p) in tracks(title, TrackKind::Audio) {
        let _ = writeln!(out, "    <AdaptationSet id=\"{set}\" contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"{}\" segmentAlignment=\"true\" startWithSAP=\"1\">", t.language);
        write_representation(&mut out, t, p);
        out.push_str("    </AdaptationSet>\n");
        set += 1;
    }
    out.push_str("  </Period>\n</MPD>\n");
    out
}

/// §5.3.5 Representation with §5.3.9.4 SegmentTemplate and §5.3.9.6 SegmentTimeline.
fn write_representation(out: &mut String, t: &TrackIndex, p: &TrackPlan) {
    let _ = write!(
        out,
        "      <Representation id=\"t{}\" codecs=\"{}\" bandwidth=\"{}\"",
        t.track_id,
        t.params.codec(),
        p.peak_bitrate().max(1)
    );
    match &t.params {
        TrackParams::Video(v) => {
            let _ = write!(out, " width=\"{}\" height=\"{}\"", v.width, v.height);
            let fps = frame_rate(t);
            if fps > 0.0 {
                let milli = (fps * 1000.0).round() as u64;
                if milli.is_multiple_of(1000) {
                    let _ = write!(out, " frameRate=\"{}\"", milli / 1000);
                } else {
                    let _ = write!(out, " frameRate=\"{milli}/1000\"");
                }
            }
            out.push_str(">\n");
        }
        TrackParams::Audio(a) => {
            let _ = writeln!(out, " audioSamplingRate=\"{}\">", a.sample_rate);
            let _ = writeln!(
                out,
                "        <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{}\"/>",
                a.channels
            );
        }
    }
    let _ = writeln!(
        out,
        "        <SegmentTemplate timescale=\"{}\" startNumber=\"1\" initialization=\"t{id}/init.mp4\" media=\"t{id}/$Number$.m4s\">",
        p.out_timescale,
        id = t.track_id
    );
    out.push_str("          <SegmentTimeline>\n");
    // Runs of equal durations as `r`; `t` only where the timeline jumps.
    let mut runs: Vec<(u64, u64, u32)> = Vec::new();
    let mut next = None;
    for s in &p.segments {
        match runs.last_mut() {
            Some((_, d, r)) if next == Some(s.start) && *d == s.duration => *r += 1,
            _ => runs.push((s.start, s.duration, 0)),
        }
        next = Some(s.start + s.duration);
    }
    let mut expect = None;
    for (start, d, r) in runs {
        out.push_str("            <S");
        if expect != Some(start) {
            let _ = write!(out, " t=\"{start}\"");
        }
        let _ = write!(out, " d=\"{d}\"");
        if r > 0 {
            let _ = write!(out, " r=\"{r}\"");
        }
        out.push_str("/>\n");
        expect = Some(start + d * (u64::from(r) + 1));
    }
    out.push_str(
        "          </SegmentTimeline>\n        </SegmentTemplate>\n      </Representation>\n",
    );
}
