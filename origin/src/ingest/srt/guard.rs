//! The first look at every SRT datagram, before any srt-protocol state sees it.
//!
//! srt-protocol 0.4 panics on some malformed packets (`bytes` "advance out of
//! bounds", `unimplemented!()` for unknown handshake extensions), has
//! `todo!()`s for control types a peer may send, and logs a warning for each
//! odd packet. [`inspect`] runs its pure parser on a copy of the datagram under
//! [`std::panic::catch_unwind`], with its log output diverted, and refuses
//! anything the parser rejects, panics on or warns about, and the control types
//! that reach a `todo!()` in its connection code. What passes is parsed again
//! by the peer's own listener (see [`super::relay`]), identically and quietly.

use std::cell::Cell;
use std::io::Cursor;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Once, OnceLock};

use srt_protocol::packet::{ControlTypes, Packet, ShakeType, SrtControlPacket};
use tracing::{span, Dispatch, Event, Level, Metadata, Subscriber};

/// Largest datagram an SRT peer sends (libsrt's default MSS).
pub const MAX_DATAGRAM: usize = 1500;
/// An SRT header is 16 bytes.
const HEADER: usize = 16;

/// What a datagram that passed [`inspect`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Datagram {
    /// The caller's first handshake: the only packet that may open a peer.
    Induction,
    /// Anything else a peer in a handshake or a connection may send.
    Other,
}

/// Why a datagram was dropped unseen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("shorter than an SRT header")]
    Short,
    #[error("longer than an SRT packet")]
    Long,
    #[error("not a valid SRT packet")]
    Unparsable,
    #[error("SRT packet that makes srt-protocol panic")]
    ParserPanic,
    #[error("SRT packet that makes srt-protocol warn")]
    Suspicious,
    #[error("SRT control packet this receive-only listener does not handle")]
    Unsupported,
}

impl Malformed {
    /// Label for the dropped-packets metric.
    pub fn label(self) -> &'static str {
        match self {
            Malformed::Short => "short",
            Malformed::Long => "long",
            Malformed::Unparsable => "unparsable",
            Malformed::ParserPanic => "parser_panic",
            Malformed::Suspicious => "suspicious",
            Malformed::Unsupported => "unsupported_control",
        }
    }
}

/// Classifies one datagram, or says why it must be dropped. Never panics
/// and logs nothing.
pub fn inspect(datagram: &[u8]) -> Result<Datagram, Malformed> {
    if datagram.len() < HEADER {
        return Err(Malformed::Short);
    }
    if datagram.len() > MAX_DATAGRAM {
        return Err(Malformed::Long);
    }
    let (parsed, warned) = quietly(|| {
        // `false`: peers' listeners sit on IPv4 loopback and parse that way.
        Packet::parse(&mut Cursor::new(datagram), false)
    })?;
    if warned {
        return Err(Malformed::Suspicious);
    }
    let packet = parsed.map_err(|_| Malformed::Unparsable)?;
    let Packet::Control(control) = packet else {
        return Ok(Datagram::Other);
    };
    match control.control_type {
        ControlTypes::Handshake(hs) if hs.shake_type == ShakeType::Induction => {
            Ok(Datagram::Induction)
        }
        // `todo!()` in srt-protocol's connection; NAKs come from receivers,
        // and this listener only receives.
        ControlTypes::CongestionWarning | ControlTypes::PeerError(_) | ControlTypes::Nak(_) => {
            Err(Malformed::Unsupported)
        }
        // Any other SRT extension after the handshake is `unimplemented!()`.
        ControlTypes::Srt(
            SrtControlPacket::KeyRefreshRequest(_) | SrtControlPacket::KeyRefreshResponse(_),
        ) => Ok(Datagram::Other),
        ControlTypes::Srt(_) => Err(Malformed::Unsupported),
        _ => Ok(Datagram::Other),
    }
}

/// Runs `f` with panics caught and unreported, and with log events diverted:
/// whether it emitted a warning or error comes back instead.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<(T, bool), Malformed> {
    install_panic_filter();
    WARNED.with(|w| w.set(false));
    let dispatch = SILENT.get_or_init(|| Dispatch::new(WarnDetector));
    IN_GUARD.with(|g| g.set(true));
    let result =
        tracing::dispatcher::with_default(dispatch, || panic::catch_unwind(AssertUnwindSafe(f)));
    IN_GUARD.with(|g| g.set(false));
    let value = result.map_err(|_| Malformed::ParserPanic)?;
    Ok((value, WARNED.with(Cell::get)))
}

thread_local! {
    /// Set while this thread runs srt-protocol's parser under [`quietly`].
    static IN_GUARD: Cell<bool> = const { Cell::new(false) };
    /// Whether the parser logged a warning or error during [`quietly`].
    static WARNED: Cell<bool> = const { Cell::new(false) };
}

/// Built once: creating a `Dispatch` rebuilds tracing's callsite cache.
static SILENT: OnceLock<Dispatch> = OnceLock::new();

/// A caught parser panic must not print a backtrace per attacker packet, so
/// the process's panic hook skips panics raised inside [`quietly`] and passes
/// every other panic to the hook that was there before.
fn install_panic_filter() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !IN_GUARD.with(Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Records whether anything at warn level or above was logged; shows nothing.
/// srt-protocol logs through `log`, which `tracing-log` forwards to the
/// current dispatcher.
struct WarnDetector;

impl Subscriber for WarnDetector {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, _: &Event<'_>) {
        WARNED.with(|w| w.set(true));
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A libsrt (HSv5) caller's induction, as ffmpeg sends it.
    pub(crate) fn induction() -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(&4u32.to_be_bytes()); // UDT version 4 for induction
        p.extend_from_slice(&[0, 0, 0, 2]); // socket type DGRAM
        p.extend_from_slice(&0x1234u32.to_be_bytes()); // initial sequence number
        p.extend_from_slice(&1500u32.to_be_bytes());
        p.extend_from_slice(&8192u32.to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes()); // induction
        p.extend_from_slice(&0x55u32.to_be_bytes()); // socket id
        p.extend_from_slice(&0u32.to_be_bytes()); // cookie
        p.extend_from_slice(&[127, 0, 0, 1]);
        p.extend_from_slice(&[0; 12]);
        p
    }

    #[test]
    fn accepts_an_induction_and_refuses_junk_quietly() {
        // As in the binary: `log` records reach tracing (srt-protocol uses `log`).
        let _ = tracing_subscriber::fmt().with_test_writer().try_init();
        assert_eq!(inspect(&induction()), Ok(Datagram::Induction));
        assert_eq!(inspect(&[0x80; 4]), Err(Malformed::Short));
        assert_eq!(inspect(&[0; 1501]), Err(Malformed::Long));
        let mut truncated = induction();
        truncated.truncate(40);
        assert_eq!(inspect(&truncated), Err(Malformed::Unparsable));
        // A conclusion with a config extension srt-protocol does not
        // implement (type 6, congestion control): `unimplemented!()` in its parser.
        let mut conclusion = induction();
        conclusion[16..20].copy_from_slice(&5u32.to_be_bytes());
        conclusion[20..24].copy_from_slice(&[0, 0, 0, 4]); // CONFIG flag
        conclusion[36..40].copy_from_slice(&(-1i32).to_be_bytes());
        conclusion.extend_from_slice(&[0, 6, 0, 1, b'e', b'v', b'i', b'l']);
        assert_eq!(inspect(&conclusion), Err(Malformed::ParserPanic));
        // Unknown key length: srt-protocol warns and carries on.
        let mut odd_key = conclusion.clone();
        odd_key.truncate(64);
        odd_key[20..22].copy_from_slice(&[0, 1]);
        assert_eq!(inspect(&odd_key), Err(Malformed::Suspicious));
        // Congestion warning (control type 4) reaches a `todo!()`.
        let mut cw = vec![0x80, 4];
        cw.extend_from_slice(&[0; 14]);
        assert_eq!(inspect(&cw), Err(Malformed::Unsupported));
        // A data packet passes.
        let mut data = vec![0, 0, 0, 1, 0xc0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x55];
        data.extend_from_slice(&[0x47; 188]);
        assert_eq!(inspect(&data), Ok(Datagram::Other));
    }
}
