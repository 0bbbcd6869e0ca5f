//! Subtitle side files: WebVTT (W3C WebVTT §4) and SubRip (`.srt`, turned
//! into WebVTT cues), cut into the WebVTT segments an HLS subtitle playlist
//! names. Pure: the caller reads the file.
//!
//! Blocks that are not cues (`NOTE`, `STYLE`, `REGION`) and cues whose
//! timing line does not parse are skipped, as the WebVTT parsing rules do;
//! only a file that is not text, or a `.vtt` without the `WEBVTT` signature,
//! is refused.

use std::fmt::Write;

/// Which side-file syntax a subtitle file uses (from its extension).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubtitleFormat {
    WebVtt,
    SubRip,
}

impl SubtitleFormat {
    /// `.vtt` or `.srt` (any case), else `None`.
    pub fn from_path(path: &std::path::Path) -> Option<SubtitleFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "vtt" => Some(SubtitleFormat::WebVtt),
            "srt" => Some(SubtitleFormat::SubRip),
            _ => None,
        }
    }
}

/// One cue, times in milliseconds of the title's timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cue {
    pub start: u64,
    pub end: u64,
    /// WebVTT cue settings after the timing (`line:0 align:start`), as given.
    pub settings: String,
    /// Payload lines, joined with `\n`; never empty lines, never `-->`.
    pub text: String,
}

/// Why a subtitle file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unusable subtitle file: {0}")]
pub struct SubtitleError(pub String);

/// The cues of a subtitle file, sorted by start time.
pub fn parse(bytes: &[u8], format: SubtitleFormat) -> Result<Vec<Cue>, SubtitleError> {
    let text =
        std::str::from_utf8(bytes).map_err(|e| SubtitleError(format!("not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let mut blocks = text.split("\n\n").map(|b| b.trim_matches('\n'));
    if format == SubtitleFormat::WebVtt {
        let header = blocks.next().unwrap_or_default();
        let first = header.lines().next().unwrap_or_default();
        if !(first == "WEBVTT" || first.starts_with("WEBVTT ") || first.starts_with("WEBVTT\t")) {
            return Err(SubtitleError(
                "a .vtt file must start with the line WEBVTT".into(),
            ));
        }
    }
    let mut cues = Vec::new();
    for block in blocks {
        let lines: Vec<&str> = block.lines().collect();
        // The timing line is the first or, after an identifier (SRT's index), the second.
        let Some(at) = lines.iter().take(2).position(|l| l.contains("-->")) else {
            continue;
        };
        let Some((start, end, settings)) = timing(lines[at], format) else {
            continue;
        };
        if end <= start {
            continue;
        }
        let text = lines[at + 1..]
            .iter()
            .map(|l| l.replace("-->", "--&gt;"))
            .collect::<Vec<_>>()
            .join("\n");
        if text.trim().is_empty() {
            continue;
        }
        cues.push(Cue {
            start,
            end,
            settings,
            text,
        });
    }
    cues.sort_by_key(|c| (c.start, c.end));
    Ok(cues)
}

/// `00:01:02.500 --> 00:01:04.000 align:start` (SRT: `00:01:02,500 --> 00:01:04,000`).
fn timing(line: &str, format: SubtitleFormat) -> Option<(u64, u64, String)> {
    let (start, rest) = line.split_once("-->")?;
    let rest = rest.trim_start();
    let (end, settings) = rest.split_once([' ', '\t']).unwrap_or((rest, ""));
    let settings = match format {
        SubtitleFormat::WebVtt => settings.split_whitespace().collect::<Vec<_>>().join(" "),
        // SRT's optional `X1:… Y2:…` coordinates have no WebVTT meaning.
        SubtitleFormat::SubRip => String::new(),
    };
    Some((
        timestamp(start.trim(), format)?,
        timestamp(end.trim(), format)?,
        settings,
    ))
}

/// `[hh:]mm:ss.ttt` → milliseconds (SRT: `hh:mm:ss,ttt`).
fn timestamp(s: &str, format: SubtitleFormat) -> Option<u64> {
    let separator = match format {
        SubtitleFormat::WebVtt => '.',
        SubtitleFormat::SubRip => ',',
    };
    let (clock, millis) = s.split_once(separator)?;
    if millis.len() != 3 || !millis.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let parts: Vec<&str> = clock.split(':').collect();
    let digits = |p: &str, len: std::ops::RangeInclusive<usize>| {
        (len.contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u64>().ok())
            .flatten()
    };
    let (h, m, sec) = match parts.as_slice() {
        [m, s] => (0, digits(m, 2..=2)?, digits(s, 2..=2)?),
        [h, m, s] => (digits(h, 1..=6)?, digits(m, 2..=2)?, digits(s, 2..=2)?),
        _ => return None,
    };
    if m > 59 || sec > 59 {
        return None;
    }
    Some(((h * 60 + m) * 60 + sec) * 1000 + millis.parse::<u64>().ok()?)
}

/// `hh:mm:ss.ttt`.
pub fn format_timestamp(ms: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// A whole WebVTT file of `cues` (the DASH side file, and `.srt` converted).
pub fn webvtt(cues: &[Cue]) -> String {
    let mut out = String::from("WEBVTT\n\n");
    write_cues(&mut out, cues.iter());
    out
}

/// The WebVTT segment covering `[from, to)` ms (`to` `None`: to the end):
/// every cue showing at some point of it, with its own times. A cue that
/// spans a boundary is in both segments, as RFC 8216bis §3.1.4 asks.
/// `X-TIMESTAMP-MAP` ties the cue times to the media timeline, which starts
/// at 0 in Strata's CMAF output (§3.5).
pub fn segment(cues: &[Cue], from: u64, to: Option<u64>) -> String {
    let mut out = String::from("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n\n");
    write_cues(
        &mut out,
        cues.iter()
            .filter(|c| c.end > from && to.is_none_or(|to| c.start < to)),
    );
    out
}

fn write_cues<'a>(out: &mut String, cues: impl Iterator<Item = &'a Cue>) {
    for c in cues {
        let _ = write!(
            out,
            "{} --> {}",
            format_timestamp(c.start),
            format_timestamp(c.end)
        );
        if !c.settings.is_empty() {
            let _ = write!(out, " {}", c.settings);
        }
        let _ = write!(out, "\n{}\n\n", c.text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_webvtt_and_skips_what_is_not_a_cue() {
        let vtt = "\u{feff}WEBVTT - a title\r\n\r\nNOTE a comment\r\n\r\nSTYLE\n::cue { color: red }\n\nintro\n00:00.500 --> 00:02.000 align:start  line:0\nHello\nthere\n\n00:00:03.000 --> 00:00:02.000\nbackwards\n\n00:00:01.000 --> 00:00:04.250\nSecond --> line\n";
        let cues = parse(vtt.as_bytes(), SubtitleFormat::WebVtt).expect("parses");
        assert_eq!(
            cues,
            vec![
                Cue {
                    start: 500,
                    end: 2000,
                    settings: "align:start line:0".into(),
                    text: "Hello\nthere".into()
                },
                Cue {
                    start: 1000,
                    end: 4250,
                    settings: String::new(),
                    text: "Second --&gt; line".into()
                },
            ]
        );
        assert!(parse(
            b"1\n00:00:01,000 --> 00:00:02,000\nx\n",
            SubtitleFormat::WebVtt
        )
        .is_err());
        assert!(parse(&[0xff, 0xfe, 0], SubtitleFormat::WebVtt).is_err());
    }

    #[test]
    fn converts_subrip() {
        let srt = "1\n00:00:01,000 --> 00:00:02,500 X1:10 X2:20\nBonjour\n\n2\n01:00:00,000 --> 01:00:01,000\n<i>fin</i>\n\n3\nnot a timing\nx\n";
        let cues = parse(srt.as_bytes(), SubtitleFormat::SubRip).expect("parses");
        assert_eq!(cues.len(), 2);
        assert_eq!((cues[0].start, cues[0].end), (1000, 2500));
        assert_eq!(cues[0].settings, "");
        assert_eq!(cues[1].start, 3_600_000);
        assert_eq!(
            webvtt(&cues),
            "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\nBonjour\n\n01:00:00.000 --> 01:00:01.000\n<i>fin</i>\n\n"
        );
    }

    #[test]
    fn segments_hold_every_cue_showing_during_them() {
        let cue = |start, end| Cue {
            start,
            end,
            settings: String::new(),
            text: format!("{start}"),
        };
        let cues = vec![cue(0, 1000), cue(3500, 4500), cue(9000, 9500)];
        let first = segment(&cues, 0, Some(4000));
        assert!(first.starts_with("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"));
        assert!(first.contains("\n0\n") && first.contains("\n3500\n") && !first.contains("9000"));
        let last = segment(&cues, 4000, None);
        assert!(last.contains("\n3500\n") && last.contains("\n9000\n") && !last.contains("\n0\n"));
    }
}
