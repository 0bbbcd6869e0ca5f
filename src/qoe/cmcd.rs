//! Common Media Client Data (CTA-5004, and the CTA-5004-B "v2" keys): what a
//! player says about itself on each request, parsed into [`Cmcd`].
//!
//! A payload is a comma-separated list of `key[=value]` members in RFC 8941
//! structured-field syntax (CTA-5004 §3.2): integers, decimals, quoted
//! strings, tokens, booleans (a bare key is TRUE, `?0`/`?1`), and in v2 inner
//! lists such as `br=(3200;v 128;a)`. It travels in the `CMCD` query
//! parameter (percent-encoded) or split across the `CMCD-Object`,
//! `CMCD-Request`, `CMCD-Session` and `CMCD-Status` headers (§4); v2 event
//! reports are lines of payloads in a POST body (`application/cmcd`).
//!
//! Parsing is all or nothing: a payload with a syntax error or a value of the
//! wrong type for a known key is [`Malformed`] and none of it is used. Unknown
//! and custom (`vendor-key`) keys are checked for syntax and otherwise ignored,
//! as §3.3 asks of receivers.

use std::time::Duration;

/// Longest payload accepted from one source (query, header or body line).
pub const MAX_PAYLOAD: usize = 4 * 1024;
/// Longest string value (CTA-5004-B allows 128 characters for `sid`, `cid`, `cdn`).
const MAX_STRING: usize = 128;

/// Why a payload was not used (a metric label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("CMCD payload longer than {MAX_PAYLOAD} bytes")]
    TooLong,
    #[error("CMCD payload is not valid percent-encoded UTF-8")]
    Encoding,
    #[error("CMCD syntax error")]
    Syntax,
    #[error("CMCD value of the wrong type for its key")]
    Value,
}

impl Malformed {
    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::TooLong => "too-long",
            Malformed::Encoding => "encoding",
            Malformed::Syntax => "syntax",
            Malformed::Value => "value",
        }
    }
}

/// `ot`: what the requested object is (CTA-5004 §3.3, Object type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectType {
    Manifest,
    Audio,
    Video,
    Muxed,
    Init,
    Caption,
    TimedText,
    Key,
    Other,
}

impl ObjectType {
    pub const ALL: [ObjectType; 9] = [
        ObjectType::Manifest,
        ObjectType::Audio,
        ObjectType::Video,
        ObjectType::Muxed,
        ObjectType::Init,
        ObjectType::Caption,
        ObjectType::TimedText,
        ObjectType::Key,
        ObjectType::Other,
    ];

    fn from_token(token: &str) -> ObjectType {
        match token {
            "m" => ObjectType::Manifest,
            "a" => ObjectType::Audio,
            "v" => ObjectType::Video,
            "av" => ObjectType::Muxed,
            "i" => ObjectType::Init,
            "c" => ObjectType::Caption,
            "tt" => ObjectType::TimedText,
            "k" => ObjectType::Key,
            _ => ObjectType::Other,
        }
    }

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Manifest => "manifest",
            ObjectType::Audio => "audio",
            ObjectType::Video => "video",
            ObjectType::Muxed => "muxed",
            ObjectType::Init => "init",
            ObjectType::Caption => "caption",
            ObjectType::TimedText => "timed-text",
            ObjectType::Key => "key",
            ObjectType::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// Objects whose bitrate and buffer say something about picture quality.
    pub fn is_media(self) -> bool {
        matches!(self, ObjectType::Video | ObjectType::Muxed)
    }
}

/// `sf`: the streaming format (§3.3, Streaming format).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamingFormat {
    Dash,
    Hls,
    Smooth,
    Other,
}

impl StreamingFormat {
    pub const ALL: [StreamingFormat; 4] = [
        StreamingFormat::Dash,
        StreamingFormat::Hls,
        StreamingFormat::Smooth,
        StreamingFormat::Other,
    ];

    fn from_token(token: &str) -> StreamingFormat {
        match token {
            "d" => StreamingFormat::Dash,
            "h" => StreamingFormat::Hls,
            "s" => StreamingFormat::Smooth,
            _ => StreamingFormat::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StreamingFormat::Dash => "dash",
            StreamingFormat::Hls => "hls",
            StreamingFormat::Smooth => "smooth",
            StreamingFormat::Other => "other",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// `sta` (v2): the player's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlayerState {
    Starting,
    Playing,
    Seeking,
    Rebuffering,
    Paused,
    Waiting,
    Ended,
    FatalError,
    Quit,
    Preloading,
    Other,
}

impl PlayerState {
    fn from_token(token: &str) -> PlayerState {
        match token {
            "s" => PlayerState::Starting,
            "p" => PlayerState::Playing,
            "k" => PlayerState::Seeking,
            "r" => PlayerState::Rebuffering,
            "a" => PlayerState::Paused,
            "w" => PlayerState::Waiting,
            "e" => PlayerState::Ended,
            "f" => PlayerState::FatalError,
            "q" => PlayerState::Quit,
            "d" => PlayerState::Preloading,
            _ => PlayerState::Other,
        }
    }
}

/// `e` (v2 event mode): what happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    BitrateChange,
    PlayState,
    Error,
    TimeInterval,
    ResponseReceived,
    Other,
}

impl EventType {
    fn from_token(token: &str) -> EventType {
        match token {
            "bc" => EventType::BitrateChange,
            "ps" => EventType::PlayState,
            "e" => EventType::Error,
            "t" => EventType::TimeInterval,
            "rr" => EventType::ResponseReceived,
            _ => EventType::Other,
        }
    }
}

/// What one request (or one event report) said, merged from every source.
/// Numbers are as the player sent them: kbps for bitrates, ms for times.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Cmcd {
    /// `v`: 1 when absent.
    pub version: Option<u64>,
    /// `br`: encoded bitrate of the requested object, kbps.
    pub br: Option<u64>,
    /// `bl`: buffer length, ms.
    pub bl: Option<u64>,
    /// `mtp`: measured throughput, kbps.
    pub mtp: Option<u64>,
    /// `dl`: deadline, ms.
    pub dl: Option<u64>,
    /// `d`: object duration, ms.
    pub d: Option<u64>,
    /// `tb`: top bitrate, kbps.
    pub tb: Option<u64>,
    /// `bs`: the buffer was starved since the previous request.
    pub bs: bool,
    /// `su`: the object is needed for startup (or recovery from a stall).
    pub su: bool,
    pub ot: Option<ObjectType>,
    pub sf: Option<StreamingFormat>,
    /// `st`: `true` for live (`l`), `false` for VOD (`v`).
    pub live: Option<bool>,
    /// `sid`: the playback session id (never a metric label).
    pub sid: Option<String>,
    /// `cdn` (v2): the CDN the player believes it is using.
    pub cdn: Option<String>,
    /// `sta` (v2).
    pub sta: Option<PlayerState>,
    /// `e` (v2 event mode).
    pub event: Option<EventType>,
    /// `msd` (v2): media start delay, ms, sent once per session.
    pub msd: Option<u64>,
    /// `bsd` (v2): durations of stalls that ended since the last report, ms, summed.
    pub bsd: Option<u64>,
    /// `ec` (v2): the player reported error codes.
    pub error: bool,
}

impl Cmcd {
    /// Whether any key at all was seen.
    pub fn is_empty(&self) -> bool {
        *self == Cmcd::default()
    }

    /// Parse one payload into `self`, keys already present being overwritten.
    /// On error `self` may be partly filled: callers drop it.
    pub fn parse_into(&mut self, payload: &str) -> Result<(), Malformed> {
        if payload.len() > MAX_PAYLOAD {
            return Err(Malformed::TooLong);
        }
        let mut p = Parser {
            s: payload.as_bytes(),
            i: 0,
        };
        p.skip_ws();
        if p.done() {
            return Ok(());
        }
        loop {
            let key = p.key()?;
            let value = if p.eat(b'=') {
                p.bare_item_or_list()?
            } else {
                Value::Bool(true)
            };
            p.params()?;
            self.set(key, value)?;
            p.skip_ws();
            if p.done() {
                return Ok(());
            }
            if !p.eat(b',') {
                return Err(Malformed::Syntax);
            }
            p.skip_ws();
            if p.done() {
                // A trailing comma (RFC 8941 §4.2.1.2 forbids it).
                return Err(Malformed::Syntax);
            }
        }
    }

    /// The `CMCD` query parameter's value, percent-encoded as it arrived;
    /// decoded into a copy only when it holds a `%`.
    pub fn parse_query_value(&mut self, raw: &str) -> Result<(), Malformed> {
        if raw.len() > MAX_PAYLOAD * 3 {
            return Err(Malformed::TooLong);
        }
        match percent_decoded(raw)? {
            std::borrow::Cow::Borrowed(text) => self.parse_into(text),
            std::borrow::Cow::Owned(text) => self.parse_into(&text),
        }
    }

    fn set(&mut self, key: &str, value: Value<'_>) -> Result<(), Malformed> {
        match key {
            "v" => self.version = Some(value.integer()?),
            "br" => self.br = Some(value.preferred_number()?),
            "bl" => self.bl = Some(value.preferred_number()?),
            "mtp" => self.mtp = Some(value.preferred_number()?),
            "tb" => self.tb = Some(value.preferred_number()?),
            "dl" => self.dl = Some(value.number()?),
            "d" => self.d = Some(value.number()?),
            "msd" => self.msd = Some(value.number()?),
            "bsd" => self.bsd = Some(value.list_sum()?),
            "bs" => self.bs = value.boolean()?,
            "su" => self.su = value.boolean()?,
            "ot" => self.ot = Some(ObjectType::from_token(value.token()?)),
            "sf" => self.sf = Some(StreamingFormat::from_token(value.token()?)),
            "st" => self.live = Some(value.token()? == "l"),
            "sta" => self.sta = Some(PlayerState::from_token(value.token()?)),
            "e" => self.event = Some(EventType::from_token(value.token()?)),
            "sid" => self.sid = Some(value.string()?),
            "cdn" => self.cdn = Some(value.string()?),
            "ec" => {
                value.string_list()?;
                self.error = true;
            }
            // Typed keys whose values are checked but not used.
            "cid" | "nor" | "nrr" | "h" | "url" | "cs" | "cen" => value.check_string()?,
            "pr" | "rtp" | "ltc" | "sn" | "dfa" | "ts" | "pt" | "rc" | "ttfb" | "ttfbb"
            | "ttlb" => {
                value.decimal()?;
            }
            "bg" | "nr" => {
                value.boolean()?;
            }
            "ab" | "lb" | "lab" | "tab" | "tpb" | "tbl" | "pb" | "bsa" | "bsda" => {
                value.list_sum()?;
            }
            // Unknown and custom keys: any well-formed value.
            _ => {}
        }
        Ok(())
    }
}

/// A parsed bare item or inner list, borrowing from the payload.
#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    Bool(bool),
    Integer(i64),
    Decimal(f64),
    /// The characters between the quotes, escapes still in.
    String(&'a str),
    Token(&'a str),
    /// The text between the parentheses, already checked for syntax.
    List(&'a str),
}

impl<'a> Value<'a> {
    fn integer(self) -> Result<u64, Malformed> {
        match self {
            Value::Integer(n) if n >= 0 => Ok(n as u64),
            _ => Err(Malformed::Value),
        }
    }

    /// A non-negative integer; decimals are rounded (hls.js sends `mtp` unrounded).
    fn number(self) -> Result<u64, Malformed> {
        match self {
            Value::Integer(n) if n >= 0 => Ok(n as u64),
            Value::Decimal(x) if x >= 0.0 => Ok(x.round() as u64),
            _ => Err(Malformed::Value),
        }
    }

    fn decimal(self) -> Result<f64, Malformed> {
        match self {
            Value::Integer(n) => Ok(n as f64),
            Value::Decimal(x) => Ok(x),
            _ => Err(Malformed::Value),
        }
    }

    /// A number, or from a v2 inner list the item marked `;v`, else `;av`,
    /// else the first.
    fn preferred_number(self) -> Result<u64, Malformed> {
        let Value::List(inner) = self else {
            return self.number();
        };
        let mut first = None;
        let mut muxed = None;
        for item in list_items(inner) {
            let (value, tag) = item?;
            let n = value.number()?;
            first.get_or_insert(n);
            match tag {
                Some("v") => return Ok(n),
                Some("av") => muxed = muxed.or(Some(n)),
                _ => {}
            }
        }
        muxed.or(first).ok_or(Malformed::Value)
    }

    /// The sum of a number or an inner list of numbers.
    fn list_sum(self) -> Result<u64, Malformed> {
        let Value::List(inner) = self else {
            return self.number();
        };
        let mut sum = 0u64;
        for item in list_items(inner) {
            sum = sum.saturating_add(item?.0.number()?);
        }
        Ok(sum)
    }

    fn boolean(self) -> Result<bool, Malformed> {
        match self {
            Value::Bool(b) => Ok(b),
            // CTA-5004 v1 examples write `bs=true`; accept the spelled-out forms.
            Value::Token("true") => Ok(true),
            Value::Token("false") => Ok(false),
            _ => Err(Malformed::Value),
        }
    }

    fn token(self) -> Result<&'a str, Malformed> {
        match self {
            Value::Token(t) => Ok(t),
            _ => Err(Malformed::Value),
        }
    }

    fn string(self) -> Result<String, Malformed> {
        let Value::String(raw) = self else {
            return Err(Malformed::Value);
        };
        let text = if raw.contains('\\') {
            raw.replace("\\\"", "\"").replace("\\\\", "\\")
        } else {
            raw.to_owned()
        };
        if text.chars().count() > MAX_STRING {
            return Err(Malformed::Value);
        }
        Ok(text)
    }

    /// A string within the length limit, not copied (for keys only checked).
    fn check_string(self) -> Result<(), Malformed> {
        match self {
            Value::String(raw) if raw.len() <= 2 * MAX_STRING => {
                if raw.len() <= MAX_STRING || raw.chars().count() <= MAX_STRING {
                    Ok(())
                } else {
                    self.string().map(drop)
                }
            }
            _ => Err(Malformed::Value),
        }
    }

    fn string_list(self) -> Result<(), Malformed> {
        let Value::List(inner) = self else {
            return self.check_string();
        };
        for item in list_items(inner) {
            item?.0.check_string()?;
        }
        Ok(())
    }
}

/// The items of an inner list: each value and its object-type tag (`;v`).
fn list_items(inner: &str) -> impl Iterator<Item = Result<(Value<'_>, Option<&str>), Malformed>> {
    let mut p = Parser {
        s: inner.as_bytes(),
        i: 0,
    };
    std::iter::from_fn(move || {
        p.skip_sp();
        if p.done() {
            return None;
        }
        let item = p.bare_item().and_then(|v| Ok((v, p.params()?)));
        if item.is_err() {
            p.i = p.s.len();
        }
        Some(item)
    })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn text(&self, from: usize) -> &'a str {
        // Only ASCII bytes were consumed between `from` and `i`.
        std::str::from_utf8(&self.s[from..self.i]).unwrap_or("")
    }

    /// RFC 8941 §3.1.2 key: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
    fn key(&mut self) -> Result<&'a str, Malformed> {
        let from = self.i;
        match self.peek() {
            Some(b'a'..=b'z' | b'*') => self.i += 1,
            _ => return Err(Malformed::Syntax),
        }
        while matches!(
            self.peek(),
            Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
        ) {
            self.i += 1;
        }
        Ok(self.text(from))
    }

    /// `;key[=value]` parameters; returns the first key (the object-type tag in CMCD lists).
    fn params(&mut self) -> Result<Option<&'a str>, Malformed> {
        let mut first = None;
        while self.eat(b';') {
            self.skip_sp();
            let key = self.key()?;
            first.get_or_insert(key);
            if self.eat(b'=') {
                self.bare_item()?;
            }
        }
        Ok(first)
    }

    fn bare_item_or_list(&mut self) -> Result<Value<'a>, Malformed> {
        if !self.eat(b'(') {
            return self.bare_item();
        }
        let from = self.i;
        loop {
            self.skip_sp();
            if self.eat(b')') {
                let inner = &self.s[from..self.i - 1];
                return Ok(Value::List(std::str::from_utf8(inner).unwrap_or("")));
            }
            self.bare_item()?;
            self.params()?;
            if !matches!(self.peek(), Some(b' ' | b')')) {
                return Err(Malformed::Syntax);
            }
        }
    }

    fn bare_item(&mut self) -> Result<Value<'a>, Malformed> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b'?') => {
                self.i += 1;
                match self.peek() {
                    Some(b'0') => {
                        self.i += 1;
                        Ok(Value::Bool(false))
                    }
                    Some(b'1') => {
                        self.i += 1;
                        Ok(Value::Bool(true))
                    }
                    _ => Err(Malformed::Syntax),
                }
            }
            Some(b'a'..=b'z' | b'A'..=b'Z' | b'*') => {
                let from = self.i;
                self.i += 1;
                while matches!(
                    self.peek(),
                    Some(c) if c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&c)
                ) {
                    self.i += 1;
                }
                Ok(Value::Token(self.text(from)))
            }
            _ => Err(Malformed::Syntax),
        }
    }

    /// RFC 8941 §4.2.4: at most 15 integer digits, or 12 + 3 for a decimal.
    fn number(&mut self) -> Result<Value<'a>, Malformed> {
        let from = self.i;
        let negative = self.eat(b'-');
        let digits = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        let whole = self.i - digits;
        if whole == 0 {
            return Err(Malformed::Syntax);
        }
        if self.eat(b'.') {
            let frac_from = self.i;
            while matches!(self.peek(), Some(b'0'..=b'9')) {
                self.i += 1;
            }
            let frac = self.i - frac_from;
            if whole > 12 || frac == 0 || frac > 3 {
                return Err(Malformed::Syntax);
            }
            let x: f64 = self.text(from).parse().map_err(|_| Malformed::Syntax)?;
            return Ok(Value::Decimal(x));
        }
        if whole > 15 {
            return Err(Malformed::Syntax);
        }
        let n: i64 = self.text(digits).parse().map_err(|_| Malformed::Syntax)?;
        Ok(Value::Integer(if negative { -n } else { n }))
    }

    fn string(&mut self) -> Result<Value<'a>, Malformed> {
        self.i += 1;
        let from = self.i;
        loop {
            match self.peek() {
                None => return Err(Malformed::Syntax),
                Some(b'"') => {
                    let raw = self.text(from);
                    self.i += 1;
                    return Ok(Value::String(raw));
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(b'"' | b'\\') => self.i += 1,
                        _ => return Err(Malformed::Syntax),
                    }
                }
                // Printable ASCII only (RFC 8941 §3.3.3).
                Some(0x20..=0x7e) => self.i += 1,
                Some(_) => return Err(Malformed::Syntax),
            }
        }
    }
}

/// `raw` with its `%XX` escapes decoded (RFC 3986 §2.1); a `%` not followed
/// by two hex digits stays as it is. `+` is not a space here: CMCD payloads
/// are percent-encoded (CTA-5004 §4.2). Runs without escapes are copied whole.
fn percent_decoded(raw: &str) -> Result<std::borrow::Cow<'_, str>, Malformed> {
    let bytes = raw.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'%') else {
        return Ok(std::borrow::Cow::Borrowed(raw));
    };
    let hex = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .position(|&b| b == b'%')
            .map_or(bytes.len(), |n| i + n);
        out.extend_from_slice(&bytes[i..run]);
        i = run;
        if i >= bytes.len() {
            break;
        }
        match (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (Some(hi), Some(lo)) => {
                out.push(hi << 4 | lo);
                i += 3;
            }
            _ => {
                out.push(b'%');
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(std::borrow::Cow::Owned)
        .map_err(|_| Malformed::Encoding)
}

/// Milliseconds as a `Duration`.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(payload: &str) -> Result<Cmcd, Malformed> {
        let mut cmcd = Cmcd::default();
        cmcd.parse_into(payload).map(|()| cmcd)
    }

    #[test]
    fn a_v1_payload_as_hls_js_sends_it() {
        let cmcd = parse(
            r#"br=3200,bs,cid="faec5fc2-ac30-11eabb37-0242ac130002",d=4004,dl=18500,mtp=48100,nor="../300kbps/track.m4v",nrr="12323-48763",ot=v,pr=1.08,rtp=12000,sf=d,sid="6e2fb550-c457-11e9-bb97-0800200c9a66",st=v,su,tb=6000,bl=21300"#,
        )
        .expect("parses");
        assert_eq!(cmcd.br, Some(3200));
        assert_eq!(cmcd.bl, Some(21300));
        assert_eq!(cmcd.mtp, Some(48100));
        assert_eq!(cmcd.dl, Some(18500));
        assert!(cmcd.bs && cmcd.su);
        assert_eq!(cmcd.ot, Some(ObjectType::Video));
        assert_eq!(cmcd.sf, Some(StreamingFormat::Dash));
        assert_eq!(cmcd.live, Some(false));
        assert_eq!(
            cmcd.sid.as_deref(),
            Some("6e2fb550-c457-11e9-bb97-0800200c9a66")
        );
    }

    #[test]
    fn the_query_parameter_is_percent_decoded() {
        let mut cmcd = Cmcd::default();
        cmcd.parse_query_value("bl%3D21300%2Cbr%3D3200%2Cot%3Dv%2Csid%3D%22a%2Cb%22%2Csu")
            .expect("parses");
        assert_eq!(cmcd.br, Some(3200));
        assert_eq!(cmcd.sid.as_deref(), Some("a,b"), "a comma inside a string");
        assert!(cmcd.su);
    }

    #[test]
    fn percent_decoding_matches_rfc_3986() {
        for (raw, decoded) in [
            ("br=3200", "br=3200"),
            ("br%3D3200%2cbs", "br=3200,bs"),
            ("%", "%"),
            ("a%2", "a%2"),
            ("a%zz%41", "a%zzA"),
            ("sid%3D%22%C3%A9%22", "sid=\"é\""),
            ("a+b", "a+b"),
        ] {
            assert_eq!(percent_decoded(raw).as_deref(), Ok(decoded), "{raw}");
        }
        assert!(matches!(
            percent_decoded("br=1"),
            Ok(std::borrow::Cow::Borrowed(_))
        ));
        assert_eq!(percent_decoded("%FF"), Err(Malformed::Encoding));
    }

    #[test]
    fn headers_merge_into_one_report() {
        let mut cmcd = Cmcd::default();
        for shard in [
            "br=3200,d=4004,ot=v,tb=6000",
            "bl=21300,dl=18500,mtp=48100,su",
            "sf=h,sid=\"x\",st=l",
            "bs,rtp=12000",
        ] {
            cmcd.parse_into(shard).expect("shard parses");
        }
        assert_eq!(cmcd.live, Some(true));
        assert_eq!(cmcd.sf, Some(StreamingFormat::Hls));
        assert!(cmcd.bs);
        assert_eq!(cmcd.tb, Some(6000));
    }

    #[test]
    fn v2_inner_lists_and_event_keys() {
        let cmcd = parse(
            r#"v=2,br=(128;a 3200;v),bl=(21300;v 19000;a),mtp=(48100),e=ps,sta=r,msd=850,bsd=(1200 300),cdn="cdn-b",ec=("E1" "E2"),ts=1700000000000"#,
        )
        .expect("parses");
        assert_eq!(cmcd.version, Some(2));
        assert_eq!(cmcd.br, Some(3200), "the video item wins");
        assert_eq!(cmcd.bl, Some(21300));
        assert_eq!(cmcd.mtp, Some(48100));
        assert_eq!(cmcd.event, Some(EventType::PlayState));
        assert_eq!(cmcd.sta, Some(PlayerState::Rebuffering));
        assert_eq!(cmcd.msd, Some(850));
        assert_eq!(cmcd.bsd, Some(1500));
        assert_eq!(cmcd.cdn.as_deref(), Some("cdn-b"));
        assert!(cmcd.error);
    }

    #[test]
    fn booleans_custom_keys_and_unrounded_numbers() {
        let cmcd = parse("bs=?1,su=?0,com.example-myid=\"x\",mtp=4810.375").expect("parses");
        assert!(cmcd.bs);
        assert!(!cmcd.su);
        assert_eq!(cmcd.mtp, Some(4810));
    }

    #[test]
    fn malformed_payloads_are_refused_whole() {
        for bad in [
            "br=",
            "br=abc",
            "br=-5",
            "BR=3200",
            "sid=unquoted",
            "sid=\"unterminated",
            "ot=\"v\"",
            "br=3200,,bl=100",
            "br=3200,",
            "br=(1 2",
            "bs=maybe",
            "br=1234567890123456",
            "sid=\"é\"",
            "=3",
            "su=?2",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be malformed");
        }
        let long = format!("sid=\"{}\"", "x".repeat(200));
        assert_eq!(parse(&long), Err(Malformed::Value));
        let huge = "br=1,".repeat(2000);
        assert_eq!(parse(&huge), Err(Malformed::TooLong));
        let mut cmcd = Cmcd::default();
        assert_eq!(
            cmcd.parse_query_value("sid%3D%22%FF%22"),
            Err(Malformed::Encoding)
        );
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: every prefix and every single-byte
        // mutation of a full payload parses or is refused, never panics.
        let base = r#"v=2,br=(128;a 3200;v),bl=21300,bs,cid="c",d=4004,dl=18500,mtp=48100,ot=v,sf=h,sid="s\"q",st=l,su,tb=6000,e=ps,sta=p"#;
        for end in 0..=base.len() {
            let _ = parse(&base[..end]);
        }
        let bytes = base.as_bytes();
        for i in 0..bytes.len() {
            for b in [
                b'"', b'(', b')', b';', b'=', b',', b'\\', b'?', b'-', b'.', b' ', 0x80,
            ] {
                let mut mutated = bytes.to_vec();
                mutated[i] = b;
                if let Ok(text) = std::str::from_utf8(&mutated) {
                    let _ = parse(text);
                }
            }
        }
    }
}
