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
    #[error("CMCD payload holds a byte outside ASCII (after percent-decoding)")]
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
        self.parse(Parser::new(payload, false))
    }

    /// The `CMCD` query parameter's value, percent-encoded as it arrived
    /// (RFC 3986 §2.1: `%XX` is decoded, a `%` without two hex digits stands
    /// for itself, `+` is not a space). Decoded as it is parsed, not into a
    /// copy: a request pays for the bytes once.
    pub fn parse_query_value(&mut self, raw: &str) -> Result<(), Malformed> {
        if raw.len() > MAX_PAYLOAD * 3 {
            return Err(Malformed::TooLong);
        }
        self.parse(Parser::new(raw, true))
    }

    fn parse(&mut self, mut p: Parser<'_>) -> Result<(), Malformed> {
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

    fn set(&mut self, key: Key, value: Value<'_>) -> Result<(), Malformed> {
        use keys::*;
        match key.0 {
            V => self.version = Some(value.integer()?),
            BR => self.br = Some(value.preferred_number()?),
            BL => self.bl = Some(value.preferred_number()?),
            MTP => self.mtp = Some(value.preferred_number()?),
            TB => self.tb = Some(value.preferred_number()?),
            DL => self.dl = Some(value.number()?),
            D => self.d = Some(value.number()?),
            MSD => self.msd = Some(value.number()?),
            BSD => self.bsd = Some(value.list_sum()?),
            BS => self.bs = value.boolean()?,
            SU => self.su = value.boolean()?,
            OT => self.ot = Some(ObjectType::from_token(&value.token()?)),
            SF => self.sf = Some(StreamingFormat::from_token(&value.token()?)),
            ST => self.live = Some(value.token()? == "l"),
            STA => self.sta = Some(PlayerState::from_token(&value.token()?)),
            E => self.event = Some(EventType::from_token(&value.token()?)),
            SID => self.sid = Some(value.string()?),
            CDN => self.cdn = Some(value.string()?),
            EC => {
                value.string_list()?;
                self.error = true;
            }
            // Typed keys whose values are checked but not used.
            CID | NOR | NRR | H | URL | CS | CEN => value.check_string()?,
            PR | RTP | LTC | SN | DFA | TS | PT | RC | TTFB | TTFBB | TTLB => {
                value.decimal()?;
            }
            BG | NR => {
                value.boolean()?;
            }
            AB | LB | LAB | TAB | TPB | TBL | PB | BSA | BSDA => {
                value.list_sum()?;
            }
            // Unknown and custom keys: any well-formed value.
            _ => {}
        }
        Ok(())
    }
}

/// A key's characters packed into one integer (up to 8; every CMCD key is
/// shorter, a longer one is 0), so [`Cmcd::set`] dispatches with one integer
/// match instead of comparing strings one after another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key(u64);

impl Key {
    const fn of(name: &[u8]) -> Key {
        let mut packed = 0u64;
        let mut i = 0;
        while i < name.len() {
            packed = packed << 8 | name[i] as u64;
            i += 1;
        }
        Key(if name.len() <= 8 { packed } else { 0 })
    }
}

macro_rules! known_keys {
    ($($name:ident = $text:literal),* $(,)?) => {
        /// The keys CTA-5004 and CTA-5004-B define, as [`Key`] values.
        mod keys {
            $(pub const $name: u64 = super::Key::of($text).0;)*
        }
    };
}

known_keys! {
    V = b"v", BR = b"br", BL = b"bl", MTP = b"mtp", TB = b"tb", DL = b"dl", D = b"d",
    MSD = b"msd", BSD = b"bsd", BS = b"bs", SU = b"su", OT = b"ot", SF = b"sf", ST = b"st",
    STA = b"sta", E = b"e", SID = b"sid", CDN = b"cdn", EC = b"ec", CID = b"cid", NOR = b"nor",
    NRR = b"nrr", H = b"h", URL = b"url", CS = b"cs", CEN = b"cen", PR = b"pr", RTP = b"rtp",
    LTC = b"ltc", SN = b"sn", DFA = b"dfa", TS = b"ts", PT = b"pt", RC = b"rc", TTFB = b"ttfb",
    TTFBB = b"ttfbb", TTLB = b"ttlb", BG = b"bg", NR = b"nr", AB = b"ab", LB = b"lb",
    LAB = b"lab", TAB = b"tab", TPB = b"tpb", TBL = b"tbl", PB = b"pb", BSA = b"bsa",
    BSDA = b"bsda", AV = b"av",
}

/// Text of the payload as it arrived: still percent-encoded when it came
/// from the query. Already checked for syntax, so it is ASCII once decoded.
#[derive(Clone, Copy, Debug)]
struct Raw<'a> {
    text: &'a str,
    encoded: bool,
}

impl<'a> Raw<'a> {
    fn needs_decoding(self) -> bool {
        self.encoded && self.text.contains('%')
    }

    fn parser(self) -> Parser<'a> {
        Parser::new(self.text, self.encoded)
    }

    /// The decoded characters.
    fn chars(self) -> impl Iterator<Item = u8> + 'a {
        let mut p = self.parser();
        std::iter::from_fn(move || {
            let c = p.peek()?;
            p.bump();
            Some(c)
        })
    }

    /// A string's characters, `%XX` and `\\` escapes undone.
    fn unescaped(self) -> impl Iterator<Item = u8> + 'a {
        let mut escaped = false;
        self.chars().filter(move |&c| {
            let keep = escaped || c != b'\\';
            escaped = !escaped && c == b'\\';
            keep
        })
    }

    /// The text with its `%XX` escapes decoded; borrowed when it has none.
    fn decoded(self) -> Result<std::borrow::Cow<'a, str>, Malformed> {
        if !self.needs_decoding() {
            return Ok(std::borrow::Cow::Borrowed(self.text));
        }
        String::from_utf8(self.chars().collect())
            .map(std::borrow::Cow::Owned)
            .map_err(|_| Malformed::Encoding)
    }
}

/// A parsed bare item or inner list, borrowing from the payload.
#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    Bool(bool),
    Integer(i64),
    Decimal(f64),
    /// The characters between the quotes, escapes still in.
    String(Raw<'a>),
    Token(Raw<'a>),
    /// The text between the parentheses, already checked for syntax.
    List(Raw<'a>),
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
            match tag.map(|key| key.0) {
                Some(keys::V) => return Ok(n),
                Some(keys::AV) => muxed = muxed.or(Some(n)),
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
            Value::Token(raw) => match &*raw.decoded()? {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(Malformed::Value),
            },
            _ => Err(Malformed::Value),
        }
    }

    fn token(self) -> Result<std::borrow::Cow<'a, str>, Malformed> {
        match self {
            Value::Token(raw) => raw.decoded(),
            _ => Err(Malformed::Value),
        }
    }

    /// The string's characters, `%XX` and `\` escapes undone.
    fn string(self) -> Result<String, Malformed> {
        let Value::String(raw) = self else {
            return Err(Malformed::Value);
        };
        let text = if !raw.needs_decoding() && !raw.text.contains('\\') {
            raw.text.to_owned()
        } else {
            String::from_utf8(raw.unescaped().collect()).map_err(|_| Malformed::Encoding)?
        };
        if text.len() > MAX_STRING {
            return Err(Malformed::Value);
        }
        Ok(text)
    }

    /// A string within the length limit, not copied (for keys only checked).
    fn check_string(self) -> Result<(), Malformed> {
        match self {
            Value::String(raw) if raw.text.len() <= MAX_STRING => Ok(()),
            Value::String(raw) if raw.text.len() <= 6 * MAX_STRING => {
                if raw.unescaped().count() <= MAX_STRING {
                    Ok(())
                } else {
                    Err(Malformed::Value)
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
fn list_items(inner: Raw<'_>) -> impl Iterator<Item = Result<(Value<'_>, Option<Key>), Malformed>> {
    let mut p = inner.parser();
    std::iter::from_fn(move || {
        p.skip_sp();
        if p.done() {
            return None;
        }
        let item = p.bare_item().and_then(|v| Ok((v, p.params()?)));
        if item.is_err() {
            p.seek(p.s.len());
        }
        Some(item)
    })
}

/// RFC 8941 §3.3.4 `tchar` plus `:` and `/`: what a token may hold after its first character.
const TOKEN_CHAR: [bool; 128] = {
    let mut table = [false; 128];
    let mut c = 0;
    while c < 128 {
        table[c] = (c as u8).is_ascii_alphanumeric();
        c += 1;
    }
    let extra = b"!#$%&'*+-.^_`|~:/";
    let mut i = 0;
    while i < extra.len() {
        table[extra[i] as usize] = true;
        i += 1;
    }
    table
};

/// Bytes that stand for themselves inside a string: printable ASCII but the
/// quote, the backslash and `%` (which may start an escape).
const STRING_PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0x20;
    while c <= 0x7e {
        table[c] = !matches!(c as u8, b'"' | b'\\' | b'%');
        c += 1;
    }
    table
};

/// Each byte's value as a hex digit, or `NOT_HEX`.
const HEX: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut c = 0;
    while c < 256 {
        table[c] = match c as u8 {
            b'0'..=b'9' => c as u8 - b'0',
            b'a'..=b'f' => c as u8 - b'a' + 10,
            b'A'..=b'F' => c as u8 - b'A' + 10,
            _ => NOT_HEX,
        };
        c += 1;
    }
    table
};
const NOT_HEX: u8 = 0xff;

/// An RFC 8941 reader over a payload, decoding `%XX` escapes as it goes when
/// the payload came percent-encoded. The character at `i` is decoded once,
/// when the reader reaches it (`next`).
struct Parser<'a> {
    text: &'a str,
    s: &'a [u8],
    i: usize,
    encoded: bool,
    next: Option<(u8, usize)>,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, encoded: bool) -> Parser<'a> {
        let mut parser = Parser {
            text,
            s: text.as_bytes(),
            i: 0,
            encoded,
            next: None,
        };
        parser.next = parser.decode_at(0);
        parser
    }

    fn done(&self) -> bool {
        self.i >= self.s.len()
    }

    /// The character at `i`, decoded, and how many bytes of the payload it takes.
    #[inline(always)]
    fn decode_at(&self, i: usize) -> Option<(u8, usize)> {
        let b = *self.s.get(i)?;
        if b == b'%' && self.encoded {
            if let Some(&[hi, lo]) = self.s.get(i + 1..i + 3) {
                let (hi, lo) = (HEX[usize::from(hi)], HEX[usize::from(lo)]);
                if hi != NOT_HEX && lo != NOT_HEX {
                    return Some((hi << 4 | lo, 3));
                }
            }
        }
        Some((b, 1))
    }

    /// The next character and its width in the payload.
    #[inline(always)]
    fn next(&self) -> Option<(u8, usize)> {
        self.next
    }

    /// Move past the next character (`width` bytes).
    #[inline(always)]
    fn advance(&mut self, width: usize) {
        self.seek(self.i + width);
    }

    #[inline(always)]
    fn seek(&mut self, i: usize) {
        self.i = i;
        self.next = self.decode_at(i);
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.next().map(|(c, _)| c)
    }

    #[inline]
    fn bump(&mut self) {
        if let Some((_, width)) = self.next() {
            self.advance(width);
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> bool {
        match self.next() {
            Some((next, width)) if next == c => {
                self.advance(width);
                true
            }
            _ => false,
        }
    }

    fn skip_ws(&mut self) {
        while let Some((b' ' | b'\t', width)) = self.next() {
            self.advance(width);
        }
    }

    fn skip_sp(&mut self) {
        while self.eat(b' ') {}
    }

    /// The payload between `from` and `to`, as it arrived.
    fn raw(&self, from: usize, to: usize) -> Raw<'a> {
        Raw {
            // Only ASCII was consumed, so these are character boundaries.
            text: self.text.get(from..to).unwrap_or(""),
            encoded: self.encoded,
        }
    }

    /// RFC 8941 §3.1.2 key: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
    fn key(&mut self) -> Result<Key, Malformed> {
        let (mut packed, mut length) = match self.next() {
            Some((c @ (b'a'..=b'z' | b'*'), width)) => {
                self.advance(width);
                (u64::from(c), 1)
            }
            Some((0x80.., _)) => return Err(Malformed::Encoding),
            _ => return Err(Malformed::Syntax),
        };
        while let Some((c @ (b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*'), width)) =
            self.next()
        {
            self.advance(width);
            packed = packed << 8 | u64::from(c);
            length += 1;
        }
        Ok(Key(if length <= 8 { packed } else { 0 }))
    }

    /// `;key[=value]` parameters; returns the first key (the object-type tag in CMCD lists).
    fn params(&mut self) -> Result<Option<Key>, Malformed> {
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
            let end = self.i;
            if self.eat(b')') {
                return Ok(Value::List(self.raw(from, end)));
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
                self.bump();
                let value = match self.peek() {
                    Some(b'0') => false,
                    Some(b'1') => true,
                    _ => return Err(Malformed::Syntax),
                };
                self.bump();
                Ok(Value::Bool(value))
            }
            Some(b'a'..=b'z' | b'A'..=b'Z' | b'*') => {
                let from = self.i;
                self.bump();
                while let Some((c, width)) = self.next() {
                    if TOKEN_CHAR.get(usize::from(c)) != Some(&true) {
                        break;
                    }
                    self.advance(width);
                }
                Ok(Value::Token(self.raw(from, self.i)))
            }
            Some(0x80..) => Err(Malformed::Encoding),
            _ => Err(Malformed::Syntax),
        }
    }

    /// Up to `max` digits as a number, and how many there were.
    fn digits(&mut self, max: usize) -> Result<(i64, usize), Malformed> {
        let mut n = 0i64;
        let mut count = 0;
        while let Some((c @ b'0'..=b'9', width)) = self.next() {
            count += 1;
            if count > max {
                return Err(Malformed::Syntax);
            }
            n = n * 10 + i64::from(c - b'0');
            self.advance(width);
        }
        Ok((n, count))
    }

    /// RFC 8941 §4.2.4: at most 15 integer digits, or 12 + 3 for a decimal.
    fn number(&mut self) -> Result<Value<'a>, Malformed> {
        let sign = if self.eat(b'-') { -1 } else { 1 };
        let (whole, count) = self.digits(15)?;
        if count == 0 {
            return Err(Malformed::Syntax);
        }
        if !self.eat(b'.') {
            return Ok(Value::Integer(sign * whole));
        }
        let (frac, places) = self.digits(3)?;
        if count > 12 || places == 0 {
            return Err(Malformed::Syntax);
        }
        // One rounding, from an exact integer: the nearest double, as `str::parse` gives.
        let scale = 10i64.pow(places as u32);
        Ok(Value::Decimal(
            (sign * (whole * scale + frac)) as f64 / scale as f64,
        ))
    }

    fn string(&mut self) -> Result<Value<'a>, Malformed> {
        self.bump();
        let from = self.i;
        loop {
            // Runs of plain characters in one step; escapes and the end below.
            let run = self
                .s
                .get(self.i..)
                .unwrap_or_default()
                .iter()
                .position(|&b| !STRING_PLAIN[usize::from(b)])
                .unwrap_or(self.s.len().saturating_sub(self.i));
            if run > 0 {
                self.seek(self.i + run);
            }
            let Some((c, width)) = self.next() else {
                return Err(Malformed::Syntax);
            };
            self.advance(width);
            match c {
                b'"' => return Ok(Value::String(self.raw(from, self.i - width))),
                b'\\' => match self.next() {
                    Some((b'"' | b'\\', width)) => self.advance(width),
                    _ => return Err(Malformed::Syntax),
                },
                // Printable ASCII only (RFC 8941 §3.3.3).
                0x20..=0x7e => {}
                0x80.. => return Err(Malformed::Encoding),
                _ => return Err(Malformed::Syntax),
            }
        }
    }
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
        let sid = |raw: &str| {
            let mut cmcd = Cmcd::default();
            cmcd.parse_query_value(raw).map(|()| cmcd.sid)
        };
        for (raw, decoded) in [
            ("sid=\"a\"", "a"),
            ("sid%3D%22a%2cb%22", "a,b"),
            ("sid%3D%22%25%22", "%"),
            ("sid%3D%22%%22", "%"),
            ("sid%3D%22a%2%22", "a%2"),
            ("sid%3D%22a%zz%41%22", "a%zzA"),
            ("sid%3D%22a+b%22", "a+b"),
            ("sid%3D%22q%5C%22%5C%5C%22", "q\"\\"),
        ] {
            assert_eq!(sid(raw), Ok(Some(decoded.to_owned())), "{raw}");
        }
        assert_eq!(sid("sid%3D%22%FF%22"), Err(Malformed::Encoding));
        assert_eq!(sid("sid%3D%22%C3%A9%22"), Err(Malformed::Encoding));
        // Escaped structure, tokens and numbers read as their characters.
        let mut cmcd = Cmcd::default();
        cmcd.parse_query_value("%62r%3D%33200%2Cot%3D%76%2Cbl%3D(21300%3Bv%20100%3Ba)%2Cpr%3D1.08")
            .expect("parses");
        assert_eq!(cmcd.br, Some(3200));
        assert_eq!(cmcd.ot, Some(ObjectType::Video));
        assert_eq!(cmcd.bl, Some(21300));
    }

    #[test]
    fn decimals_are_the_nearest_double() {
        for text in ["1.08", "0.1", "4810.375", "999999999999.999", "-2.5", "7.0"] {
            let mut p = Parser::new(text, false);
            let Ok(Value::Decimal(x)) = p.number() else {
                panic!("{text} is a decimal");
            };
            assert_eq!(x, text.parse::<f64>().expect("f64"), "{text}");
        }
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
