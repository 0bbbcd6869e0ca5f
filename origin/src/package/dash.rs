//! DASH MPD (ISO/IEC 23009-1) for the CMAF renditions, live profile
//! (`urn:mpeg:dash:profile:isoff-live:2011`): per Period one video
//! AdaptationSet (a Representation per rendition) and one audio
//! AdaptationSet, SegmentTemplate `$Number$` with a SegmentTimeline.
//! A discontinuity opens a new Period; an ended channel turns `static`.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::SystemTime;

use super::{format_datetime, format_duration, measure, ChannelWindow, RenditionWindow, Segment};
use crate::media::{TrackKind, TrackParams};

/// `manifest.mpd`; `None` until a rendition has a segment.
pub fn manifest(w: &ChannelWindow) -> Option<String> {
    let periods: BTreeSet<u64> = w
        .renditions
        .iter()
        .flat_map(|r| r.segments.iter().map(|s| s.period))
        .collect();
    if periods.is_empty() {
        return None;
    }
    let target = w.target_duration.as_secs_f64();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    // §5.3.1.2 MPD attributes; dynamic needs availabilityStartTime and publishTime.
    let _ = write!(
        out,
        "<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" type=\"{}\" availabilityStartTime=\"{}\" publishTime=\"{}\"",
        if w.ended { "static" } else { "dynamic" },
        format_datetime(w.availability_start),
        format_datetime(w.updated),
    );
    if w.ended {
        let end = w
            .renditions
            .iter()
            .filter_map(|r| r.segments.last())
            .map(|s| seconds_between(w.availability_start, s.program_date_time) + s.duration)
            .fold(0.0, f64::max);
        let _ = write!(
            out,
            " mediaPresentationDuration=\"{}\"",
            format_duration(end)
        );
    } else {
        let _ = write!(
            out,
            " minimumUpdatePeriod=\"{}\" timeShiftBufferDepth=\"{}\" suggestedPresentationDelay=\"{}\"",
            format_duration(target),
            format_duration(w.time_shift_buffer.as_secs_f64()),
            format_duration(target * 3.0),
        );
    }
    let _ = writeln!(out, " minBufferTime=\"{}\">", format_duration(target));
    let audio_source = w.audio_source();
    for period in periods {
        write_period(&mut out, w, period, audio_source);
    }
    // §5.8.4.11: UTCTiming comes after the Periods in the MPD schema.
    let _ = writeln!(
        out,
        "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{}\"/>",
        xml_escape(&w.utc_timing_url)
    );
    out.push_str("</MPD>\n");
    Some(out)
}

fn seconds_between(a: SystemTime, b: SystemTime) -> f64 {
    match b.duration_since(a) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// §5.3.2 Period with `start` relative to availabilityStartTime.
fn write_period(
    out: &mut String,
    w: &ChannelWindow,
    period: u64,
    audio_source: Option<&RenditionWindow>,
) {
    let in_period = |r, kind| segments_in(r, period, kind);
    let Some(start) = w
        .renditions
        .iter()
        .flat_map(|r| r.segments.iter())
        .find(|s| s.period == period)
        .map(|s| s.period_start)
    else {
        return;
    };
    let _ = writeln!(
        out,
        "  <Period id=\"{period}\" start=\"{}\">",
        format_duration(seconds_between(w.availability_start, start))
    );
    let videos: Vec<(&RenditionWindow, Vec<&Segment>)> = w
        .renditions
        .iter()
        .map(|r| (r, in_period(r, TrackKind::Video)))
        .filter(|(_, s)| !s.is_empty())
        .collect();
    if !videos.is_empty() {
        out.push_str("    <AdaptationSet id=\"0\" contentType=\"video\" mimeType=\"video/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">\n");
        for (r, segments) in videos {
            write_representation(out, r, &segments, TrackKind::Video);
        }
        out.push_str("    </AdaptationSet>\n");
    }
    if let Some(a) = audio_source {
        let segments = in_period(a, TrackKind::Audio);
        if !segments.is_empty() {
            out.push_str("    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">\n");
            write_representation(out, a, &segments, TrackKind::Audio);
            out.push_str("    </AdaptationSet>\n");
        }
    }
    out.push_str("  </Period>\n");
}

/// The Period's segments that carry `kind`, with any gaps between them
/// (segments without that track) kept so `$Number$` stays in step.
fn segments_in(r: &RenditionWindow, period: u64, kind: TrackKind) -> Vec<&Segment> {
    let mut segments: Vec<&Segment> = r
        .segments
        .iter()
        .map(|s| &**s)
        .filter(|s| s.period == period)
        .skip_while(|s| s.track(kind).is_none())
        .collect();
    while segments.last().is_some_and(|s| s.track(kind).is_none()) {
        segments.pop();
    }
    segments
}

/// §5.3.5 Representation with §5.3.9.4 SegmentTemplate and §5.3.9.6 SegmentTimeline.
fn write_representation(
    out: &mut String,
    r: &RenditionWindow,
    segments: &[&Segment],
    kind: TrackKind,
) {
    let Some(first) = segments.first().and_then(|s| s.track(kind)) else {
        return;
    };
    let m = measure(
        r.segments.iter().filter(|s| s.track(kind).is_some()),
        Some(kind),
    );
    let (dir, id) = match kind {
        TrackKind::Video => ("video", r.name.clone()),
        TrackKind::Audio => ("audio", format!("{}-audio", r.name)),
    };
    let _ = write!(
        out,
        "      <Representation id=\"{id}\" codecs=\"{}\" bandwidth=\"{}\"",
        first.init.params.codec(),
        m.peak_bitrate.max(1)
    );
    let mut children = String::new();
    match &first.init.params {
        TrackParams::Video(v) => {
            let _ = write!(out, " width=\"{}\" height=\"{}\"", v.width, v.height);
            if m.frame_rate > 0.0 {
                let _ = write!(out, " frameRate=\"{}\"", frame_rate(m.frame_rate));
            }
        }
        TrackParams::Audio(a) => {
            let _ = write!(out, " audioSamplingRate=\"{}\"", a.sample_rate);
            let _ = writeln!(
                children,
                "        <AudioChannelConfiguration schemeIdUri=\"urn:mpeg:dash:23003:3:audio_channel_configuration:2011\" value=\"{}\"/>",
                a.channels
            );
        }
    }
    out.push_str(">\n");
    out.push_str(&children);
    let _ = writeln!(
        out,
        "        <SegmentTemplate timescale=\"{}\" presentationTimeOffset=\"{}\" startNumber=\"{}\" initialization=\"{}/{dir}/init-{}.mp4\" media=\"{}/{dir}/$Number$.m4s\">",
        first.timescale(),
        first.period_offset,
        segments[0].sequence,
        r.name,
        first.init.id,
        r.name
    );
    out.push_str("          <SegmentTimeline>\n");
    write_timeline(out, segments, kind, first.timescale());
    out.push_str("          </SegmentTimeline>\n");
    out.push_str("        </SegmentTemplate>\n");
    out.push_str("      </Representation>\n");
}

/// `<S t d r>` runs: `t` where the timeline does not continue, `r` for repeats.
/// Numbers are implicit, so a gap in sequence numbers starts a new `t` too.
fn write_timeline(out: &mut String, segments: &[&Segment], kind: TrackKind, timescale: u32) {
    let mut runs: Vec<(u64, u64, u32)> = Vec::new();
    let mut expect: Option<(u64, u64)> = None; // (next t, next sequence)
    for s in segments {
        let (start, duration) = match s.track(kind) {
            Some(t) => (t.base_decode_time, t.duration),
            // A gap (EXT-X-GAP in HLS): its number's URL has no media.
            None => match expect {
                Some((next, _)) => (next, (s.duration * f64::from(timescale)).round() as u64),
                None => continue,
            },
        };
        let contiguous = expect == Some((start, s.sequence));
        match runs.last_mut() {
            Some((_, d, r)) if contiguous && *d == duration => *r += 1,
            _ => runs.push((start, duration, 0)),
        }
        expect = Some((start + duration, s.sequence + 1));
    }
    let mut next_t = None;
    for (t, d, r) in runs {
        out.push_str("            <S");
        if next_t != Some(t) {
            let _ = write!(out, " t=\"{t}\"");
        }
        let _ = write!(out, " d=\"{d}\"");
        if r > 0 {
            let _ = write!(out, " r=\"{r}\"");
        }
        out.push_str("/>\n");
        next_t = Some(t + d * (u64::from(r) + 1));
    }
}

/// FrameRateType (§5.3.12): an integer or a fraction.
fn frame_rate(fps: f64) -> String {
    let milli = (fps * 1000.0).round() as u64;
    if milli.is_multiple_of(1000) {
        (milli / 1000).to_string()
    } else {
        format!("{milli}/1000")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// DASH-IF Content Steering: `mpd` with one MPD-level
/// `<BaseURL serviceLocation=…>` per pathway (best first, each the pathway's
/// `{base_url}/live/{channel}/`), one `<Location serviceLocation=…>` per
/// pathway for MPD updates, and `<ContentSteering>` naming the steering
/// server, right after the `MPD` start tag (ahead of every Period).
pub fn with_steering(mpd: &str, tags: &crate::steering::Tags) -> String {
    let Some(open) = mpd
        .find("<MPD")
        .and_then(|at| mpd[at..].find('>').map(|e| at + e + 1))
    else {
        return mpd.to_owned();
    };
    let mut out = String::with_capacity(mpd.len() + 512);
    out.push_str(&mpd[..open]);
    out.push('\n');
    for (id, base) in &tags.pathways {
        let _ = writeln!(
            out,
            "  <BaseURL serviceLocation=\"{}\">{}</BaseURL>",
            xml_escape(id),
            xml_escape(base)
        );
    }
    // MPD updates follow steering too, so a dead CDN never holds the MPD.
    for (id, base) in &tags.pathways {
        let _ = writeln!(
            out,
            "  <Location serviceLocation=\"{}\">{}manifest.mpd</Location>",
            xml_escape(id),
            xml_escape(base)
        );
    }
    let _ = write!(
        out,
        "  <ContentSteering defaultServiceLocation=\"{}\" queryBeforeStart=\"true\">{}</ContentSteering>",
        xml_escape(&tags.default_pathway),
        xml_escape(&tags.server_uri)
    );
    let rest = &mpd[open..];
    if !rest.starts_with('\n') {
        out.push('\n');
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_rates_are_integers_or_fractions() {
        assert_eq!(frame_rate(25.0), "25");
        assert_eq!(frame_rate(29.97003), "29970/1000");
    }

    #[test]
    fn escapes_attribute_values() {
        assert_eq!(
            xml_escape("/time?a=1&b=\"2\""),
            "/time?a=1&amp;b=&quot;2&quot;"
        );
    }
}
