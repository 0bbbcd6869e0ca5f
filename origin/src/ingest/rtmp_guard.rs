//! Screens RTMP AMF messages before `rml_rtmp` decodes them.
//!
//! `rml_amf0` 0.3 decodes nested AMF0 objects recursively, so a command of a
//! few kilobytes nesting objects a thousand deep overflows the stack and
//! aborts the whole process — before any authentication. The
//! [`ChunkGate`](super::rtmp_chunks::ChunkGate), which follows `rml_rtmp`'s
//! own chunk framing, hands over each complete AMF message (type and
//! payload, exactly as `rml_rtmp` will see them); this refuses any nested
//! deeper than [`MAX_AMF_DEPTH`], checked without recursion.

/// Real commands and `onMetaData` nest two or three levels.
pub const MAX_AMF_DEPTH: usize = 32;

/// RTMP message type ids (RTMP spec §5.4, §7.1).
const AMF3_DATA: u8 = 15;
const AMF3_COMMAND: u8 = 17;
const AMF0_DATA: u8 = 18;
const AMF0_COMMAND: u8 = 20;

/// Checks one complete message of type `type_id`; `Err` names the problem.
pub fn check(type_id: u8, data: &[u8]) -> Result<(), String> {
    match type_id {
        AMF0_DATA | AMF0_COMMAND | AMF3_DATA => amf0_depth_within(data, MAX_AMF_DEPTH),
        // `rml_rtmp` drops a leading zero of AMF3-flagged commands.
        AMF3_COMMAND => match data.first() {
            Some(0) => amf0_depth_within(&data[1..], MAX_AMF_DEPTH),
            _ => amf0_depth_within(data, MAX_AMF_DEPTH),
        },
        _ => Ok(()),
    }
}

enum Container {
    /// Object, ECMA array or typed object: name/value pairs until `00 00 09`.
    Object,
    /// Strict array with this many values left.
    Array(u32),
}

/// Walks AMF0 values (AMF0 spec §2) with an explicit stack. Input that ends
/// early or holds unknown markers is left for the real decoder to reject;
/// only nesting deeper than `limit` is refused here.
pub fn amf0_depth_within(data: &[u8], limit: usize) -> Result<(), String> {
    let mut stack: Vec<Container> = Vec::new();
    let mut pos = 0usize;
    let u16_at = |p: usize| -> Option<usize> {
        data.get(p..p + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    };
    let u32_at = |p: usize| -> Option<u32> {
        data.get(p..p + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    loop {
        match stack.last_mut() {
            Some(Container::Object) => {
                let Some(key_len) = u16_at(pos) else {
                    return Ok(());
                };
                pos += 2;
                if key_len == 0 {
                    // Object end marker (0x09) follows an empty key.
                    pos += 1;
                    stack.pop();
                    continue;
                }
                pos += key_len;
            }
            Some(Container::Array(0)) => {
                stack.pop();
                continue;
            }
            Some(Container::Array(n)) => *n -= 1,
            None if pos >= data.len() => return Ok(()),
            None => {}
        }
        let Some(&marker) = data.get(pos) else {
            return Ok(());
        };
        pos += 1;
        match marker {
            0x00 => pos += 8,
            0x01 => pos += 1,
            0x02 => match u16_at(pos) {
                Some(n) => pos += 2 + n,
                None => return Ok(()),
            },
            0x03 => stack.push(Container::Object),
            0x05 | 0x06 | 0x0d => {}
            0x07 => pos += 2,
            0x08 => {
                pos += 4;
                stack.push(Container::Object);
            }
            0x0a => match u32_at(pos) {
                Some(n) => {
                    pos += 4;
                    stack.push(Container::Array(n));
                }
                None => return Ok(()),
            },
            0x0b => pos += 10,
            0x0c | 0x0f => match u32_at(pos) {
                Some(n) => pos = pos.saturating_add(4).saturating_add(n as usize),
                None => return Ok(()),
            },
            0x10 => match u16_at(pos) {
                Some(n) => {
                    pos += 2 + n;
                    stack.push(Container::Object);
                }
                None => return Ok(()),
            },
            // 0x09 outside an object, AVM+ (0x11), unknown: the decoder stops here.
            _ => return Ok(()),
        }
        if stack.len() > limit {
            return Err(format!(
                "AMF0 value nested deeper than {limit} levels (decoder would overflow its stack)"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut v = vec![0x02, 0, 7];
        v.extend_from_slice(b"connect");
        for _ in 0..depth {
            v.extend_from_slice(&[0x03, 0x00, 0x01, b'a']);
        }
        v
    }

    #[test]
    fn refuses_deep_nesting_and_passes_real_commands() {
        assert!(amf0_depth_within(&nested(10_000), MAX_AMF_DEPTH).is_err());
        assert!(amf0_depth_within(&nested(5), MAX_AMF_DEPTH).is_ok());
        let mut arrays = Vec::new();
        for _ in 0..100 {
            arrays.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
        }
        assert!(amf0_depth_within(&arrays, MAX_AMF_DEPTH).is_err());
        // connect(1, {app: "live", tcUrl: "rtmp://x/live"}) with nested info.
        let values = vec![
            rml_amf0::Amf0Value::Utf8String("connect".into()),
            rml_amf0::Amf0Value::Number(1.0),
            rml_amf0::Amf0Value::Object(
                [
                    (
                        "app".to_owned(),
                        rml_amf0::Amf0Value::Utf8String("live".into()),
                    ),
                    (
                        "info".to_owned(),
                        rml_amf0::Amf0Value::Object(
                            [("n".to_owned(), rml_amf0::Amf0Value::Number(3.0))].into(),
                        ),
                    ),
                    (
                        "list".to_owned(),
                        rml_amf0::Amf0Value::StrictArray(vec![
                            rml_amf0::Amf0Value::Boolean(true),
                            rml_amf0::Amf0Value::Null,
                        ]),
                    ),
                ]
                .into(),
            ),
        ];
        let bytes = rml_amf0::serialize(&values).expect("serializes");
        assert!(amf0_depth_within(&bytes, 2).is_ok());
        assert!(amf0_depth_within(&bytes, 1).is_err());
        for n in 0..bytes.len() {
            assert!(amf0_depth_within(&bytes[..n], MAX_AMF_DEPTH).is_ok());
        }
    }

    #[test]
    fn guard_sees_deep_command_in_chunks() {
        // One AMF0 command message (type 20) on chunk stream 3, 128-byte chunks.
        let payload = nested(2_000);
        let mut wire = vec![0x03, 0, 0, 0];
        let len = payload.len() as u32;
        wire.extend_from_slice(&len.to_be_bytes()[1..]);
        wire.push(AMF0_COMMAND);
        wire.extend_from_slice(&[0, 0, 0, 0]);
        for (i, chunk) in payload.chunks(128).enumerate() {
            if i > 0 {
                wire.push(0xc3);
            }
            wire.extend_from_slice(chunk);
        }
        // The gate hands the guard the whole message once it is complete.
        let mut gate = super::super::rtmp_chunks::ChunkGate::default();
        let (a, b) = wire.split_at(500);
        assert_eq!(gate.advance(a, 1 << 20), Ok(a.len()));
        assert!(gate.take_amf().is_none(), "incomplete message");
        assert_eq!(gate.advance(b, 1 << 20), Ok(b.len()));
        let (type_id, data) = gate.take_amf().expect("complete AMF message");
        assert_eq!((type_id, data.len()), (AMF0_COMMAND, payload.len()));
        assert!(check(type_id, &data).is_err());
        assert!(check(AMF0_COMMAND, &nested(3)).is_ok());
    }
}
