//! DASH MPD (ISO/IEC 23009-1) for the CMAF renditions, live profile
//! (`urn:mpeg:dash:profile:isoff-live:2011`): per Period one video
//! AdaptationSet (a Representation per rendition) and one audio
//! AdaptationSet, SegmentTemplate `$Number$` with a SegmentTimeline.
//! A discontinuity opens a new Period; an ended channel turns `static`.

use std::collections::BTreeSet;
use std::fmt::Write;
use std::time::SystemTime;

use super::{
    format_datetime, format_duration, measure, ChannelWindow, RenditionWindow, Segment,
    TrackSegment,
};
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
            format_duration(w.presentation_delay().as_secs_f64()),
        );
    }
    let _ = writeln!(out, " minBufferTime=\"{}\">", format_duration(target));
    let low_latency = low_latency(w);
    if let Some(ll) = &low_latency {
        write_service_description(&mut out, ll);
    }
    let audio_source = w.audio_source();
    for period in periods {
        write_period(&mut out, w, period, audio_source, low_latency.as_ref());
    }
    // §5.8.4.11: UTCTiming comes after the Periods in the MPD schema. The
    // configured clock URL first (relative by default, so it resolves against
    // the MPD's own URL on every edge host name); `with_direct_clock` adds
    // the time itself for clients that cannot resolve it.
    let _ = writeln!(
        out,
        "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"{}\"/>",
        xml_escape(&w.utc_timing_url)
    );
    out.push_str("</MPD>\n");
    Some(out)
}

/// A dynamic MPD with a second `UTCTiming`, `urn:mpeg:dash:utc:direct:2014`
/// carrying `now`, for clients that fail on the http-iso URL: some resolve a
/// relative URL against the page rather than the MPD (ISO/IEC 23009-1
/// §5.6.4), others not at all. It goes after the http-iso one, so a client
/// that can fetch the clock does (§5.8.4.11: clients use the first scheme
/// they support); a cached copy's `direct` time is as stale as the copy (the
/// MPD's `max-age`), which is why it is only the fallback. `None` for a
/// static MPD or one without `</MPD>`.
pub fn with_direct_clock(mpd: &str, now: SystemTime) -> Option<String> {
    if !mpd.contains(" type=\"dynamic\"") {
        return None;
    }
    let end = mpd.rfind("</MPD>")?;
    let mut out = String::with_capacity(mpd.len() + 96);
    out.push_str(&mpd[..end]);
    let _ = writeln!(
        out,
        "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"{}\"/>",
        format_datetime(now)
    );
    out.push_str(&mpd[end..]);
    Some(out)
}

/// LL-DASH on a live channel with parts (`store.part_target`): what the MPD
/// says about it (DASH-IF IOP Low-latency Modes; ISO/IEC 23009-1 §5.3.9.5.3
/// for `availabilityTimeOffset`).
#[derive(Clone, Copy, Debug, PartialEq)]
struct LowLatencyDash {
    /// Seconds of part (chunk) target.
    part: f64,
    /// Seconds of segment target.
    segment: f64,
    /// Seconds behind the live edge LL-HLS players aim (`PART-HOLD-BACK`).
    hold_back: f64,
}

impl LowLatencyDash {
    /// A segment's first chunk exists one part after its start, so it may
    /// be asked for that long after it starts instead of after it ends.
    fn availability_time_offset(&self) -> f64 {
        (self.segment - self.part).max(0.0)
    }

    /// `ServiceDescription` `Latency@target`, ms: LL-HLS's `PART-HOLD-BACK`
    /// (`store.part_hold_back`, three parts by default) behind the live
    /// edge, and at least a second.
    fn target_ms(&self) -> u64 {
        (self.hold_back.max(1.0) * 1000.0).round() as u64
    }
}

fn low_latency(w: &ChannelWindow) -> Option<LowLatencyDash> {
    if w.ended {
        return None;
    }
    let ll = w.renditions.iter().find_map(|r| r.low_latency.as_ref())?;
    Some(LowLatencyDash {
        part: ll.part_target,
        segment: w.target_duration.as_secs_f64(),
        hold_back: ll.part_hold_back,
    })
}

/// DASH-IF IOP Low-latency Modes §9.X.4.2 / ISO/IEC 23009-1 Annex K:
/// `ServiceDescription` with the latency players aim for (dash.js takes it
/// as its live delay) and how far they may change the playback rate to
/// keep it.
fn write_service_description(out: &mut String, ll: &LowLatencyDash) {
    let target = ll.target_ms();
    let _ = writeln!(
        out,
        "  <ServiceDescription id=\"0\">\n    <Latency target=\"{target}\" min=\"{}\" max=\"{}\"/>\n    <PlaybackRate min=\"0.96\" max=\"1.04\"/>\n  </ServiceDescription>",
        ((ll.part * 2.0) * 1000.0).round() as u64,
        target + (ll.segment * 2000.0).round() as u64,
    );
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
    ll: Option<&LowLatencyDash>,
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
            write_representation(out, r, &segments, TrackKind::Video, ll);
        }
        out.push_str("    </AdaptationSet>\n");
    }
    if let Some(a) = audio_source {
        let segments = in_period(a, TrackKind::Audio);
        if !segments.is_empty() {
            out.push_str("    <AdaptationSet id=\"1\" contentType=\"audio\" mimeType=\"audio/mp4\" segmentAlignment=\"true\" startWithSAP=\"1\">\n");
            write_representation(out, a, &segments, TrackKind::Audio, ll);
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
    ll: Option<&LowLatencyDash>,
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
    let _ = write!(
        out,
        "        <SegmentTemplate timescale=\"{}\" presentationTimeOffset=\"{}\" startNumber=\"{}\" initialization=\"{}/{dir}/init-{}.mp4\" media=\"{}/{dir}/$Number${}.m4s\"",
        first.timescale(),
        first.period_offset,
        segments[0].sequence,
        r.name,
        first.init.id,
        r.name,
        // LL-DASH: the chunked CMAF names, streamed while being cut.
        if ll.is_some() { "-ll" } else { "" }
    );
    if let Some(ll) = ll {
        let _ = write!(
            out,
            " availabilityTimeOffset=\"{}\" availabilityTimeComplete=\"false\"",
            format_seconds(ll.availability_time_offset())
        );
    }
    out.push_str(">\n");
    out.push_str("          <SegmentTimeline>\n");
    let mut timeline: Vec<&Segment> = segments.to_vec();
    let announced = ll.map_or(Vec::new(), |_| announced(r, segments, kind));
    timeline.extend(announced.iter());
    write_timeline(out, &timeline, kind, first.timescale());
    out.push_str("          </SegmentTimeline>\n");
    out.push_str("        </SegmentTemplate>\n");
    out.push_str("      </Representation>\n");
}

/// LL-DASH: the segment being cut and the one after it, as the timeline's
/// last entries, so a player asks for them (their availability starts one
/// part after they start, `availabilityTimeOffset`) without waiting for an
/// MPD that lists them. Their durations are the last segment's (an encoder
/// with a steady keyframe interval cuts every segment alike), audio's with
/// one AAC frame of slack, as its frames straddle the cut (an estimate a
/// little long lands a player's next lookup in the next segment, never back
/// in this one); the next MPD lists the real ones. Only at the live end
/// of the window, when the open segment continues the Period.
fn announced(r: &RenditionWindow, segments: &[&Segment], kind: TrackKind) -> Vec<Segment> {
    let (Some(ll), Some(last), Some(newest)) = (&r.low_latency, segments.last(), r.segments.last())
    else {
        return Vec::new();
    };
    if last.sequence != newest.sequence
        || ll.open_sequence != last.sequence + 1
        || ll.open_discontinuity
    {
        return Vec::new();
    }
    let Some(track) = last.track(kind) else {
        return Vec::new();
    };
    let slack = match kind {
        TrackKind::Video => 0,
        // Up to one AAC frame (1024 samples) more than the last segment.
        TrackKind::Audio => 1024,
    };
    let duration = track.duration + slack;
    let mut start = track.base_decode_time + track.duration;
    (0..2)
        .map(|i| {
            let t = TrackSegment {
                init: track.init.clone(),
                base_decode_time: start,
                duration,
                period_offset: track.period_offset,
                samples: Vec::new(),
                bytes: 0,
            };
            start += duration;
            let (video, audio) = match kind {
                TrackKind::Video => (Some(t), None),
                TrackKind::Audio => (None, Some(t)),
            };
            Segment::new(
                ll.open_sequence + i,
                false,
                last.period,
                last.period_start,
                last.program_date_time,
                duration as f64 / f64::from(track.timescale()),
                video,
                audio,
            )
        })
        .collect()
}

/// Seconds as a decimal without trailing zeros (`1.5`, `2`).
fn format_seconds(s: f64) -> String {
    let ms = (s * 1000.0).round() as u64;
    if ms.is_multiple_of(1000) {
        (ms / 1000).to_string()
    } else {
        format!("{}", ms as f64 / 1000.0)
    }
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
    fn direct_clock_follows_the_http_clock_in_dynamic_mpds_only() {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_764_063_000_123);
        let mpd = "<MPD type=\"dynamic\">\n  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:http-iso:2014\" value=\"/time\"/>\n</MPD>\n";
        let out = with_direct_clock(mpd, at).expect("dynamic");
        let http = out.find("http-iso").expect("http-iso kept");
        let direct = out
            .find("<UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"2025-11-25T09:30:00.123Z\"/>\n</MPD>\n")
            .expect("direct before </MPD>");
        assert!(http < direct, "{out}");
        assert_eq!(
            with_direct_clock(&mpd.replace("dynamic", "static"), at),
            None
        );
    }

    #[test]
    fn escapes_attribute_values() {
        assert_eq!(
            xml_escape("/time?a=1&b=\"2\""),
            "/time?a=1&amp;b=&quot;2&quot;"
        );
    }
}
