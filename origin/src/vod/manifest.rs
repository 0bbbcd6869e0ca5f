//! A title's HLS playlists (RFC 8216bis, `EXT-X-PLAYLIST-TYPE:VOD`) and its
//! static DASH MPD (ISO/IEC 23009-1, live profile with SegmentTemplate and
//! SegmentTimeline, as the live MPD). Text only, from the plan: no media is
//! read to write them.

use std::fmt::Write;

use super::mp4::TrackIndex;
use super::plan;
use super::presentation::{Presentation, Rendition, SubtitleRendition};
use crate::media::{TrackKind, TrackParams};
use crate::package::format_duration;

const AUDIO_GROUP: &str = "audio";
const SUBTITLE_GROUP: &str = "subs";

fn frame_rate(t: &TrackIndex) -> f64 {
    let seconds = t.duration_seconds();
    if seconds > 0.0 {
        t.samples.len() as f64 / seconds
    } else {
        0.0
    }
}

/// `master.m3u8`: one variant per video rendition, every audio rendition a
/// member of one group (`DEFAULT=YES` on the default one), every subtitle
/// file a member of one subtitle group, and an I-frame playlist per video
/// rendition. Audio-only titles list their audio playlists as variants.
pub fn master(p: &Presentation) -> String {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let audio: Vec<&Rendition> = p.of_kind(TrackKind::Audio).collect();
    let videos: Vec<&Rendition> = p.of_kind(TrackKind::Video).collect();
    for s in &p.subtitles {
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID=\"{SUBTITLE_GROUP}\",NAME=\"{}\",LANGUAGE=\"{}\",DEFAULT={},AUTOSELECT=YES,URI=\"s{}.m3u8\"",
            s.name,
            s.language,
            yes_no(s.default),
            s.id
        );
    }
    let subtitles = if p.subtitles.is_empty() {
        String::new()
    } else {
        format!(",SUBTITLES=\"{SUBTITLE_GROUP}\"")
    };
    if videos.is_empty() {
        for r in audio {
            let _ = writeln!(
                out,
                "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"{subtitles}",
                r.plan().peak_bitrate().max(1),
                r.plan().average_bitrate().max(1),
                r.track().params.codec()
            );
            let _ = writeln!(out, "t{}.m3u8", r.id);
        }
        return out;
    }
    for r in &audio {
        let channels = match &r.track().params {
            TrackParams::Audio(a) => a.channels,
            TrackParams::Video(_) => 0,
        };
        let _ = writeln!(
            out,
            "#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"{AUDIO_GROUP}\",NAME=\"{}\",LANGUAGE=\"{}\",DEFAULT={},AUTOSELECT=YES,CHANNELS=\"{channels}\",URI=\"t{}.m3u8\"",
            r.name,
            r.language,
            yes_no(r.default),
            r.id
        );
    }
    let audio_peak = audio
        .iter()
        .map(|r| r.plan().peak_bitrate())
        .max()
        .unwrap_or(0);
    let audio_avg = audio
        .iter()
        .map(|r| r.plan().average_bitrate())
        .max()
        .unwrap_or(0);
    let mut audio_codecs: Vec<&str> = audio.iter().map(|r| r.track().params.codec()).collect();
    audio_codecs.dedup();
    for r in &videos {
        let (t, plan) = (r.track(), r.plan());
        let codecs: Vec<&str> = std::iter::once(t.params.codec())
            .chain(audio_codecs.iter().copied())
            .collect();
        let _ = write!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={},AVERAGE-BANDWIDTH={},CODECS=\"{}\"",
            (plan.peak_bitrate() + audio_peak).max(1),
            (plan.average_bitrate() + audio_avg).max(1),
            codecs.join(",")
        );
        if let TrackParams::Video(v) = &t.params {
            let _ = write!(out, ",RESOLUTION={}x{}", v.width, v.height);
        }
        let fps = frame_rate(t);
        if fps > 0.0 {
            let _ = write!(out, ",FRAME-RATE={fps:.3}");
        }
        if !audio.is_empty() {
            let _ = write!(out, ",AUDIO=\"{AUDIO_GROUP}\"");
        }
        let _ = writeln!(out, "{subtitles}\nt{}.m3u8", r.id);
    }
    for r in &videos {
        let t = r.track();
        let _ = write!(
            out,
            "#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={},CODECS=\"{}\"",
            iframe_bitrate(t).max(1),
            t.params.codec()
        );
        if let TrackParams::Video(v) = &t.params {
            let _ = write!(out, ",RESOLUTION={}x{}", v.width, v.height);
        }
        let _ = writeln!(out, ",URI=\"i{}.m3u8\"", r.id);
    }
    out
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "YES"
    } else {
        "NO"
    }
}

/// The head every VOD media playlist shares.
fn playlist_head(out: &mut String, longest: f64) {
    out.push_str("#EXTM3U\n#EXT-X-VERSION:7\n");
    // §4.4.3.1: EXTINF rounded to the nearest integer must not exceed it.
    let _ = writeln!(
        out,
        "#EXT-X-TARGETDURATION:{}",
        longest.round().max(1.0) as u64
    );
    out.push_str("#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n");
}

/// `t{id}.m3u8`: every segment, then `EXT-X-ENDLIST`.
pub fn media_playlist(r: &Rendition) -> String {
    let p = r.plan();
    let longest = p.segments.iter().map(|s| p.seconds(s)).fold(0.0, f64::max);
    let mut out = String::new();
    playlist_head(&mut out, longest);
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"t{}/init.mp4\"", r.id);
    for (n, s) in p.segments.iter().enumerate() {
        let _ = writeln!(out, "#EXTINF:{:.3},\nt{}/{}.m4s", p.seconds(s), r.id, n + 1);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// Highest bits per second of one keyframe over the time it stands for.
fn iframe_bitrate(t: &TrackIndex) -> u64 {
    let timescale = f64::from(t.timescale.max(1));
    let keyframes = plan::keyframes(t);
    keyframes
        .iter()
        .enumerate()
        .map(|(k, &i)| {
            let seconds = plan::keyframe_ticks(t, &keyframes, k) as f64 / timescale;
            (f64::from(t.samples[i].size) * 8.0 / seconds.max(0.001)) as u64
        })
        .max()
        .unwrap_or(0)
}

/// `i{id}.m3u8` (RFC 8216bis §4.4.3.6 `EXT-X-I-FRAMES-ONLY`): one segment
/// per keyframe, `i{id}/{k}.m4s`, a CMAF fragment holding only that
/// keyframe and lasting until the next one.
pub fn iframe_playlist(r: &Rendition) -> String {
    let t = r.track();
    let timescale = f64::from(t.timescale.max(1));
    let keyframes = plan::keyframes(t);
    let seconds: Vec<f64> = (0..keyframes.len())
        .map(|k| plan::keyframe_ticks(t, &keyframes, k) as f64 / timescale)
        .collect();
    let mut out = String::new();
    playlist_head(&mut out, seconds.iter().copied().fold(0.0, f64::max));
    out.push_str("#EXT-X-I-FRAMES-ONLY\n");
    let _ = writeln!(out, "#EXT-X-MAP:URI=\"t{}/init.mp4\"", r.id);
    for (k, s) in seconds.iter().enumerate() {
        let _ = writeln!(out, "#EXTINF:{s:.3},\ni{}/{}.m4s", r.id, k + 1);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// `s{id}.m3u8`: WebVTT segments cut where the media is cut
/// ([`Presentation::subtitle_cuts`]), the last one to the end of the title.
pub fn subtitle_playlist(p: &Presentation, s: &SubtitleRendition) -> String {
    let cuts = p.subtitle_cuts();
    let end = p.end_ms();
    let seconds: Vec<f64> = cuts
        .iter()
        .enumerate()
        .map(|(k, &from)| {
            let to = cuts.get(k + 1).copied().unwrap_or(end.max(from + 1));
            (to - from) as f64 / 1000.0
        })
        .collect();
    let mut out = String::new();
    playlist_head(&mut out, seconds.iter().copied().fold(0.0, f64::max));
    for (k, d) in seconds.iter().enumerate() {
        let _ = writeln!(out, "#EXTINF:{d:.3},\ns{}/{}.vtt", s.id, k + 1);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    out
}

/// `manifest.mpd`: one Period, a video AdaptationSet with a Representation
/// per video rendition, an audio AdaptationSet per audio rendition (its
/// `lang`, `Label`, and `Role` main on the default), a text AdaptationSet
/// (`text/vtt`, the whole file as BaseURL) per subtitle file.
pub fn mpd(p: &Presentation) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"static\" mediaPresentationDuration=\"{}\" minBufferTime=\"{}\">",
        format_duration(p.duration()),
        format_duration(p.target_duration)
    );
    out.push_str("  <Period id=\"0\" start=\"PT0S\">\n");
    let videos: Vec<_> = p.of_kind(TrackKind::Video).collect();
    let mut set = 0;
    if !videos.is_empty() {
        let _ = writeln!(out, "    <AdaptationSet id=\"{set}\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">");
        for r in videos {
            write_representation(&mut out, r, p.clip_start_ms);
        }
        out.push_str("    </AdaptationSet>\n");
        set += 1;
    }
    for r in p.of_kind(TrackKind::Audio) {
        let _ = writeln!(out, "    <AdaptationSet id=\"{set}\" contentType=\"audio\" mimeType=\"audio/mp4\" lang=\"{}\" segmentAlignment=\"true\" startWithSAP=\"1\"{}>", r.language, if r.default { " selectionPriority=\"2\"" } else { "" });
        let _ = writeln!(out, "      <Label>{}</Label>", r.name);
        if r.default {
            out.push_str("      <Role schemeIdUri=\"urn:mpeg:dash:role:2011\" value=\"main\"/>\n");
        }
        write_representation(&mut out, r, p.clip_start_ms);
        out.push_str("    </AdaptationSet>\n");
        set += 1;
    }
    for s in &p.subtitles {
        let _ = writeln!(
            out,
            "    <AdaptationSet id=\"{set}\" contentType=\"text\" mimeType=\"text/vtt\" lang=\"{}\">",
            s.language
        );
        let _ = writeln!(out, "      <Label>{}</Label>", s.name);
        out.push_str("      <Role schemeIdUri=\"urn:mpeg:dash:role:2011\" value=\"subtitle\"/>\n");
        let _ = writeln!(
            out,
            "      <Representation id=\"s{id}\" bandwidth=\"256\">\n        <BaseURL>s{id}.vtt</BaseURL>\n      </Representation>",
            id = s.id
        );
        out.push_str("    </AdaptationSet>\n");
        set += 1;
    }
    out.push_str("  </Period>\n</MPD>\n");
    out
}

/// §5.3.5 Representation with §5.3.9.4 SegmentTemplate and §5.3.9.6 SegmentTimeline.
/// `clip_start_ms`: a clip's start, the Period's start on the media timeline
/// (`presentationTimeOffset`).
fn write_representation(out: &mut String, r: &Rendition, clip_start_ms: Option<u64>) {
    let (t, p) = (r.track(), r.plan());
    let _ = write!(
        out,
        "      <Representation id=\"t{}\" codecs=\"{}\" bandwidth=\"{}\"",
        r.id,
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
    let pto = clip_start_ms
        .map(|ms| {
            format!(
                " presentationTimeOffset=\"{}\"",
                ms * u64::from(p.out_timescale) / 1000
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "        <SegmentTemplate timescale=\"{}\"{pto} startNumber=\"1\" initialization=\"t{id}/init.mp4\" media=\"t{id}/$Number$.m4s\">",
        p.out_timescale,
        id = r.id
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
