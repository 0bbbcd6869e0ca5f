//! RTMP chunk headers read before `rml_rtmp` buffers anything.
//!
//! `rml_rtmp` 0.8's chunk deserializer reserves the whole declared message
//! length (up to 16 MiB) as soon as the first chunk of a message arrives.
//! [`ChunkGate`] follows the same chunk framing (RTMP spec §5.3), refuses a
//! message longer than the limit the caller gives when its header arrives,
//! and hands input on one message at a time, so a limit that changes with a
//! message (once a publish is authorised) applies from the next one. It keeps
//! no media payload: only the payload of AMF messages (commands and data,
//! which [`RtmpGuard`](super::rtmp_guard::RtmpGuard) screens before
//! `rml_rtmp` decodes them), a few header bytes and one entry per chunk
//! stream. (The guard used to run a second `rml_rtmp` deserializer over every
//! byte for that; the gate already knows each message's type and bytes.)

use std::collections::HashMap;

/// Real encoders use chunk streams 2 to 8 or so.
const MAX_CHUNK_STREAMS: usize = 64;
/// RTMP's default chunk size until the peer sends Set Chunk Size.
const DEFAULT_CHUNK_SIZE: usize = 128;
/// Timestamps of 0xFFFFFF mean an extended timestamp follows (§5.3.1.3).
const EXTENDED_TIMESTAMP: u32 = 0xFF_FFFF;
const SET_CHUNK_SIZE: u8 = 1;

/// Message types whose payload `rml_rtmp` decodes as AMF (RTMP spec §7.1).
pub fn is_amf(type_id: u8) -> bool {
    matches!(type_id, 15 | 17 | 18 | 20)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("RTMP message of {declared} bytes declared, limit is {limit}")]
    TooLarge { declared: usize, limit: usize },
    #[error("RTMP chunk on stream {0} continues a message that was never started")]
    NoPreviousChunk(u32),
    #[error("RTMP chunk header disagrees with the message in progress")]
    Inconsistent,
    #[error("more than {MAX_CHUNK_STREAMS} RTMP chunk streams")]
    TooManyStreams,
    #[error("RTMP chunk size {0} is out of range")]
    BadChunkSize(u32),
    #[error("RTMP extended timestamp {0:#x} is below 0xffffff")]
    BadExtendedTimestamp(u32),
    #[error("RTMP AMF message continues a media message on another chunk stream")]
    MixedAmf,
}

#[derive(Clone, Copy, Debug)]
struct Header {
    message_length: usize,
    type_id: u8,
    /// The 24-bit timestamp (or delta) field; decides whether an extended
    /// timestamp follows, also on type 3 chunks that reuse it.
    timestamp_field: u32,
}

#[derive(Debug)]
enum Stage {
    /// Collecting a chunk's header bytes.
    Header,
    /// Skipping `left` payload bytes of the current chunk.
    Payload { left: usize, chunk: usize },
}

/// Follows RTMP chunking over a connection's input; see the module docs.
#[derive(Debug)]
pub struct ChunkGate {
    stage: Stage,
    header_bytes: Vec<u8>,
    current: Option<(u32, Header)>,
    previous: HashMap<u32, Header>,
    /// Payload bytes of the message in progress. `rml_rtmp` keeps one such
    /// buffer for all chunk streams; mirrored so both agree on boundaries.
    received: usize,
    max_chunk: usize,
    /// First payload bytes of the message in progress, whichever chunk
    /// streams they came on: `rml_rtmp` reads a Set Chunk Size from the
    /// start of its one buffer, so that is where the gate reads it too.
    message_head: Vec<u8>,
    messages: u64,
    /// Payload of the message in progress while it is an AMF message (by
    /// its first chunk's type); at most the limit, as its length is.
    amf: Vec<u8>,
    collecting: bool,
    /// An AMF chunk header continued a message begun as media: its bytes
    /// were not kept, so it cannot be screened.
    mixed: bool,
    /// The AMF message (type, payload) the last [`ChunkGate::advance`]
    /// completed.
    completed_amf: Option<(u8, Vec<u8>)>,
}

impl Default for ChunkGate {
    fn default() -> Self {
        Self {
            stage: Stage::Header,
            header_bytes: Vec::with_capacity(18),
            current: None,
            previous: HashMap::new(),
            received: 0,
            max_chunk: DEFAULT_CHUNK_SIZE,
            message_head: Vec::with_capacity(4),
            messages: 0,
            amf: Vec::new(),
            collecting: false,
            mixed: false,
            completed_amf: None,
        }
    }
}

impl ChunkGate {
    /// Messages completed so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// The AMF message (type id, payload as `rml_rtmp` will see it) that
    /// the last [`ChunkGate::advance`] completed, if it completed one.
    pub fn take_amf(&mut self) -> Option<(u8, Vec<u8>)> {
        self.completed_amf.take()
    }

    /// Reads `input` up to and including the end of the first message it
    /// completes (all of it if none), refusing any header that declares a
    /// message longer than `limit`. Returns how many bytes were read: the
    /// caller hands exactly those to `rml_rtmp`, then calls again with the
    /// rest and the limit that now applies.
    pub fn advance(&mut self, input: &[u8], limit: usize) -> Result<usize, ChunkError> {
        let mut pos = 0;
        self.completed_amf = None;
        while pos < input.len() {
            match self.stage {
                Stage::Header => {
                    self.header_bytes.push(input[pos]);
                    pos += 1;
                    if let Some((csid, header)) = self.parse_header()? {
                        self.header_bytes.clear();
                        self.start_chunk(csid, header, limit)?;
                        if self.finish_chunk_if_empty()? {
                            return Ok(pos);
                        }
                    }
                }
                Stage::Payload { left, chunk } => {
                    let take = left.min(input.len() - pos);
                    self.note_payload(&input[pos..pos + take]);
                    pos += take;
                    self.stage = Stage::Payload {
                        left: left - take,
                        chunk,
                    };
                    if left == take && self.end_chunk(chunk)? {
                        return Ok(pos);
                    }
                }
            }
        }
        Ok(pos)
    }

    /// A complete header from `header_bytes`, or `None` if more are needed.
    fn parse_header(&self) -> Result<Option<(u32, Header)>, ChunkError> {
        let b = &self.header_bytes;
        let format = b[0] >> 6;
        let (csid, basic) = match b[0] & 0x3f {
            0 if b.len() < 2 => return Ok(None),
            0 => (u32::from(b[1]) + 64, 2),
            1 if b.len() < 3 => return Ok(None),
            1 => (u32::from(b[2]) * 256 + u32::from(b[1]) + 64, 3),
            n => (u32::from(n), 1),
        };
        let message_header = [11, 7, 3, 0][usize::from(format)];
        if b.len() < basic + message_header {
            return Ok(None);
        }
        let previous = self.previous.get(&csid).copied();
        let h = &b[basic..];
        let u24 = |i: usize| u32::from_be_bytes([0, h[i], h[i + 1], h[i + 2]]);
        let header = match (format, previous) {
            (0, _) => Header {
                timestamp_field: u24(0),
                message_length: u24(3) as usize,
                type_id: h[6],
            },
            (_, None) => return Err(ChunkError::NoPreviousChunk(csid)),
            (1, Some(_)) => Header {
                timestamp_field: u24(0),
                message_length: u24(3) as usize,
                type_id: h[6],
            },
            (2, Some(p)) => Header {
                timestamp_field: u24(0),
                ..p
            },
            (_, Some(p)) => p,
        };
        let extended = if header.timestamp_field >= EXTENDED_TIMESTAMP {
            4
        } else {
            0
        };
        if b.len() < basic + message_header + extended {
            return Ok(None);
        }
        // An extended timestamp carries values from 0xffffff up (§5.3.1.3);
        // `rml_rtmp` subtracts 0xffffff from one that starts a message on a
        // delta header, which overflows (a panic) for a smaller value.
        if extended != 0 && format != 0 && self.received == 0 {
            let at = basic + message_header;
            let value = u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
            if value < EXTENDED_TIMESTAMP {
                return Err(ChunkError::BadExtendedTimestamp(value));
            }
        }
        Ok(Some((csid, header)))
    }

    fn start_chunk(&mut self, csid: u32, header: Header, limit: usize) -> Result<(), ChunkError> {
        if header.message_length > limit {
            return Err(ChunkError::TooLarge {
                declared: header.message_length,
                limit,
            });
        }
        if !self.previous.contains_key(&csid) && self.previous.len() >= MAX_CHUNK_STREAMS {
            return Err(ChunkError::TooManyStreams);
        }
        // `rml_rtmp` subtracts what it holds from the declared length.
        if self.received > header.message_length {
            return Err(ChunkError::Inconsistent);
        }
        if self.received == 0 {
            self.collecting = is_amf(header.type_id);
            self.mixed = false;
            self.amf.clear();
        } else if is_amf(header.type_id) && !self.collecting {
            self.mixed = true;
        }
        let chunk = if header.message_length > self.max_chunk {
            (header.message_length - self.received).min(self.max_chunk)
        } else {
            header.message_length
        };
        self.current = Some((csid, header));
        self.stage = Stage::Payload { left: chunk, chunk };
        Ok(())
    }

    fn finish_chunk_if_empty(&mut self) -> Result<bool, ChunkError> {
        match self.stage {
            Stage::Payload { left: 0, chunk } => self.end_chunk(chunk),
            _ => Ok(false),
        }
    }

    fn note_payload(&mut self, bytes: &[u8]) {
        let room = 4 - self.message_head.len();
        self.message_head
            .extend_from_slice(&bytes[..room.min(bytes.len())]);
        if self.collecting {
            self.amf.extend_from_slice(bytes);
        }
    }

    /// Ends the current chunk; `true` if it completed a message.
    fn end_chunk(&mut self, chunk: usize) -> Result<bool, ChunkError> {
        self.stage = Stage::Header;
        let Some((csid, header)) = self.current.take() else {
            return Ok(false);
        };
        self.previous.insert(csid, header);
        self.received += chunk;
        if self.received != header.message_length {
            return Ok(false);
        }
        self.received = 0;
        self.messages += 1;
        if is_amf(header.type_id) {
            if self.mixed || !self.collecting {
                return Err(ChunkError::MixedAmf);
            }
            self.completed_amf = Some((header.type_id, std::mem::take(&mut self.amf)));
        }
        self.collecting = false;
        let size_bytes = std::mem::take(&mut self.message_head);
        if header.type_id == SET_CHUNK_SIZE {
            if let Ok(b) = <[u8; 4]>::try_from(size_bytes.as_slice()) {
                let size = u32::from_be_bytes(b);
                if size == 0 || size > 0x7fff_ffff {
                    return Err(ChunkError::BadChunkSize(size));
                }
                self.max_chunk = size as usize;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use rml_rtmp::chunk_io::{ChunkDeserializer, ChunkSerializer};
    use rml_rtmp::messages::MessagePayload;
    use rml_rtmp::time::RtmpTimestamp;

    use super::*;

    fn message(type_id: u8, csid_hint: u32, len: usize, ts: u32) -> MessagePayload {
        MessagePayload {
            timestamp: RtmpTimestamp::new(ts),
            type_id,
            message_stream_id: csid_hint,
            data: bytes::Bytes::from(vec![7u8; len]),
        }
    }

    /// Feeds `input` through the gate in pieces of `step` and returns the
    /// byte offsets where it said messages end.
    fn boundaries(input: &[u8], step: usize, limit: usize) -> Result<Vec<usize>, ChunkError> {
        let mut gate = ChunkGate::default();
        let mut ends = Vec::new();
        let mut offset = 0;
        for piece in input.chunks(step) {
            let mut rest = piece;
            while !rest.is_empty() {
                let n = gate.advance(rest, limit)?;
                offset += n;
                rest = &rest[n..];
                if gate.received == 0
                    && matches!(gate.stage, Stage::Header)
                    && gate.header_bytes.is_empty()
                {
                    ends.push(offset);
                }
            }
        }
        ends.dedup();
        Ok(ends)
    }

    #[test]
    fn agrees_with_rml_rtmp_on_message_boundaries() {
        let mut serializer = ChunkSerializer::new();
        let mut wire = Vec::new();
        let mut expected = Vec::new();
        let push = |wire: &mut Vec<u8>, p: rml_rtmp::chunk_io::Packet| {
            wire.extend_from_slice(&p.bytes);
        };
        // Small messages at the default chunk size, then a larger chunk size,
        // a big video message and an extended timestamp.
        for (i, len) in [30usize, 200, 129].into_iter().enumerate() {
            let p = serializer
                .serialize(&message(20, 1, len, i as u32 * 40), false, false)
                .expect("serializes");
            push(&mut wire, p);
            expected.push(wire.len());
        }
        let p = serializer
            .set_max_chunk_size(4096, RtmpTimestamp::new(200))
            .expect("chunk size");
        push(&mut wire, p);
        expected.push(wire.len());
        for (len, ts) in [
            (100_000usize, 240u32),
            (5000, 0x0100_0000),
            (20, 0x0100_0040),
        ] {
            let p = serializer
                .serialize(&message(9, 1, len, ts), false, false)
                .expect("serializes");
            push(&mut wire, p);
            expected.push(wire.len());
        }
        // The real deserializer sees the same messages.
        let mut rml = ChunkDeserializer::new();
        let mut count = 0;
        let mut input: &[u8] = &wire;
        while let Some(m) = rml.get_next_message(input).expect("valid") {
            input = &[];
            count += 1;
            if m.type_id == 1 {
                rml.set_max_chunk_size(4096).expect("size");
            }
        }
        assert_eq!(count, expected.len());
        for step in [1, 7, 128, 4096, wire.len()] {
            assert_eq!(
                boundaries(&wire, step, 1 << 20),
                Ok(expected.clone()),
                "step {step}"
            );
        }
    }

    #[test]
    fn keeps_the_payload_of_amf_messages_only_as_rml_rtmp_sees_it() {
        let mut serializer = ChunkSerializer::new();
        let mut wire = Vec::new();
        // A 300-byte AMF0 data message in three chunks, media around it.
        let data = bytes::Bytes::from((0..300u32).map(|i| i as u8).collect::<Vec<_>>());
        let amf = MessagePayload {
            data: data.clone(),
            ..message(18, 1, 0, 40)
        };
        for m in [message(9, 1, 500, 0), amf, message(8, 1, 200, 80)] {
            let p = serializer.serialize(&m, false, false).expect("serializes");
            wire.extend_from_slice(&p.bytes);
        }
        let mut gate = ChunkGate::default();
        let mut kept = Vec::new();
        let mut rest: &[u8] = &wire;
        while !rest.is_empty() {
            let n = gate.advance(rest, 1 << 20).expect("accepted");
            rest = &rest[n..];
            kept.extend(gate.take_amf());
        }
        assert_eq!(kept, vec![(18, data.to_vec())]);
        assert!(gate.amf.capacity() <= 512, "no media payload kept");

        // An AMF header continuing a message begun as video on another
        // chunk stream: its first bytes were not kept, so it is refused.
        let mut wire = vec![0x04, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0];
        wire.extend_from_slice(&[0u8; 128]);
        wire.extend_from_slice(&[0x05, 0, 0, 0, 0, 1, 0, 20, 1, 0, 0, 0]);
        wire.extend_from_slice(&[0u8; 128]);
        let mut gate = ChunkGate::default();
        let mut rest: &[u8] = &wire;
        let mut result = Ok(0);
        while !rest.is_empty() {
            result = gate.advance(rest, 1 << 16);
            match result {
                Ok(n) => rest = &rest[n..],
                Err(_) => break,
            }
        }
        assert_eq!(result, Err(ChunkError::MixedAmf));
    }

    #[test]
    fn refuses_a_16_mib_header_before_its_payload() {
        // Type 0 header on chunk stream 3: AMF0 command, 16 MiB - 1 bytes.
        let mut wire = vec![0x03, 0, 0, 0, 0xff, 0xff, 0xff, 20, 0, 0, 0, 0];
        wire.extend_from_slice(&[0u8; 128]);
        let mut gate = ChunkGate::default();
        assert_eq!(
            gate.advance(&wire, 64 * 1024),
            Err(ChunkError::TooLarge {
                declared: 0xff_ffff,
                limit: 64 * 1024
            })
        );
        // All it held was the 12 header bytes.
        assert!(gate.header_bytes.capacity() <= 64 && gate.previous.is_empty());
    }

    #[test]
    fn refuses_continuations_and_chunk_sizes_rml_rtmp_would_choke_on() {
        let mut gate = ChunkGate::default();
        assert_eq!(
            gate.advance(&[0xc5], 1 << 16),
            Err(ChunkError::NoPreviousChunk(5))
        );
        let mut gate = ChunkGate::default();
        let set_zero = [0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(
            gate.advance(&set_zero, 1 << 16),
            Err(ChunkError::BadChunkSize(0))
        );
        // A second message header on another stream mid-message, declaring
        // less than is already buffered.
        let mut gate = ChunkGate::default();
        let mut wire = vec![0x04, 0, 0, 0, 0, 1, 0, 9, 1, 0, 0, 0];
        wire.extend_from_slice(&[0u8; 128]);
        wire.extend_from_slice(&[0x05, 0, 0, 0, 0, 0, 10, 9, 1, 0, 0, 0]);
        let mut rest: &[u8] = &wire;
        let mut result = Ok(0);
        while !rest.is_empty() {
            result = gate.advance(rest, 1 << 16);
            match result {
                Ok(n) => rest = &rest[n..],
                Err(_) => break,
            }
        }
        assert_eq!(result, Err(ChunkError::Inconsistent));
    }

    /// Runs `input` through the gate and hands what it lets through to
    /// `rml_rtmp`'s deserializer as `ingest::rtmp` does, with no
    /// `catch_unwind`: returns whether the gate refused it.
    fn gate_then_rml(input: &[u8]) -> Result<(), ChunkError> {
        let mut gate = ChunkGate::default();
        let mut rml = ChunkDeserializer::new();
        let mut rest = input;
        while !rest.is_empty() {
            let n = gate.advance(rest, 64 * 1024)?;
            let (now, after) = rest.split_at(n);
            rest = after;
            let mut input = now;
            loop {
                match rml.get_next_message(input) {
                    Ok(Some(m)) => {
                        input = &[];
                        if m.type_id == SET_CHUNK_SIZE && m.data.len() >= 4 {
                            let d = &m.data;
                            let size = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                            assert_eq!(size as usize, gate.max_chunk, "chunk sizes agree");
                            rml.set_max_chunk_size(size as usize)
                                .expect("gate checked it");
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return Ok(()),
                }
            }
        }
        Ok(())
    }

    #[test]
    fn a_set_chunk_size_split_across_chunk_streams_is_read_as_rml_rtmp_reads_it() {
        // rml_rtmp keeps one payload buffer for every chunk stream: a Set
        // Chunk Size on stream 64 that completes a message begun on stream
        // 70 takes its size from stream 70's bytes (4 here), not its own
        // (1025). The gate used to read 1025, the two fell out of step and
        // rml_rtmp's deserializer panicked (fuzz regression input).
        let seed = include_bytes!("../../../fuzz/corpus/rtmp_chunks/seed-capacity-overflow");
        assert_eq!(gate_then_rml(seed), Err(ChunkError::Inconsistent));
        let mut wire = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0, 0, 0, 0, 16];
        // Stream 70: video, 300 bytes, its first 16-byte chunk starts 00 00 00 04.
        wire.extend_from_slice(&[0x00, 6, 0, 0, 0, 0, 1, 0x2c, 9, 1, 0, 0, 0]);
        wire.extend_from_slice(&[0, 0, 0, 4, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
        // Stream 64: Set Chunk Size declaring 23 bytes, 7 more complete it.
        wire.extend_from_slice(&[0x00, 0, 0, 0, 0, 0, 0, 23, 1, 0, 0, 0, 0]);
        wire.extend_from_slice(&[0, 0, 4, 1, 0, 0, 0]);
        let mut gate = ChunkGate::default();
        let mut rest: &[u8] = &wire;
        while !rest.is_empty() {
            let n = gate.advance(rest, 1 << 16).expect("accepted");
            rest = &rest[n..];
        }
        assert_eq!(gate.max_chunk, 4);
        assert!(gate_then_rml(&wire).is_ok());
    }

    #[test]
    fn refuses_an_extended_timestamp_below_its_threshold_on_a_delta_header() {
        // A full header, then a type 1 header whose delta says "extended"
        // with an extended value of 5: rml_rtmp computes 5 - 0xffffff.
        let mut wire = vec![0x04, 0, 0, 0, 0, 0, 2, 9, 1, 0, 0, 0, 7, 7];
        wire.extend_from_slice(&[0x44, 0xff, 0xff, 0xff, 0, 0, 2, 9, 0, 0, 0, 5, 7, 7]);
        assert_eq!(
            gate_then_rml(&wire),
            Err(ChunkError::BadExtendedTimestamp(5))
        );
        // The same with a real extended value passes.
        let mut ok = wire.clone();
        ok[22..26].copy_from_slice(&[0x01, 0, 0, 0]);
        assert!(gate_then_rml(&ok).is_ok());
    }
}
