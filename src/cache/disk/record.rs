//! A cached object as the disk tier stores it: everything the memory tier
//! keeps, with the time it was received as wall-clock time (an `Instant`
//! means nothing to the next process), and the purge generation of the
//! fill that fetched it (see [`super::journal`]).
//!
//! Layout, big-endian: magic `STRD`, version, generation, received (ms since
//! the Unix epoch), initial age, freshness, status, headers, surrogate keys,
//! variant, body. foyer checksums each entry, so a torn or corrupt entry
//! never reaches [`decode`]; a version or layout this build does not know is
//! an error, which the tier counts and treats as a miss.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::cache::body::StoredBody;
use crate::cache::freshness::Freshness;
use crate::cache::vary::{Variant, Vary};
use crate::cache::CachedObject;
use crate::response::ResponseHead;

const MAGIC: &[u8; 4] = b"STRD";
const VERSION: u8 = 1;
/// Longest string field (a header value, a key) a record may hold.
const MAX_FIELD: u32 = 1 << 20;
/// Most headers, surrogate keys or `Vary` names a record may hold.
const MAX_ITEMS: u32 = 4096;

/// One stored object, as written and as read back.
#[derive(Debug)]
pub struct DiskRecord {
    /// The purge generation current when its fill started.
    pub generation: u64,
    /// When it was received, by the wall clock.
    pub received: SystemTime,
    pub object: Arc<CachedObject>,
}

impl DiskRecord {
    /// Bytes it will take, close enough for foyer's buffer accounting.
    pub fn estimated_size(&self) -> usize {
        let o = &self.object;
        let headers: usize = o
            .head
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 8)
            .sum();
        let tags: usize = o.surrogate_keys.iter().map(|t| t.len() + 4).sum();
        64 + headers + tags + o.body.len()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn put_u8(w: &mut impl Write, v: u8) -> std::io::Result<()> {
    w.write_all(&[v])
}

fn put_u16(w: &mut impl Write, v: u16) -> std::io::Result<()> {
    w.write_all(&v.to_be_bytes())
}

fn put_u32(w: &mut impl Write, v: u32) -> std::io::Result<()> {
    w.write_all(&v.to_be_bytes())
}

fn put_u64(w: &mut impl Write, v: u64) -> std::io::Result<()> {
    w.write_all(&v.to_be_bytes())
}

fn put_bytes(w: &mut impl Write, b: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(b.len()).map_err(|_| invalid("field too long"))?;
    put_u32(w, len)?;
    w.write_all(b)
}

fn put_count(w: &mut impl Write, n: usize) -> std::io::Result<()> {
    put_u32(w, u32::try_from(n).map_err(|_| invalid("too many items"))?)
}

/// Write `record` in the layout above.
pub fn encode(record: &DiskRecord, w: &mut impl Write) -> std::io::Result<()> {
    let o = &record.object;
    w.write_all(MAGIC)?;
    put_u8(w, VERSION)?;
    put_u64(w, record.generation)?;
    let received = record
        .received
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    put_u64(w, ms(received))?;
    put_u64(w, ms(o.initial_age))?;
    let f = &o.freshness;
    put_u8(w, u8::from(f.storable))?;
    put_u64(w, ms(f.ttl))?;
    put_u64(w, ms(f.stale_while_revalidate))?;
    put_u64(w, ms(f.stale_if_error))?;
    put_u16(w, o.head.status.as_u16())?;
    put_count(w, o.head.headers.len())?;
    for (name, value) in &o.head.headers {
        put_bytes(w, name.as_str().as_bytes())?;
        put_bytes(w, value.as_bytes())?;
    }
    put_count(w, o.surrogate_keys.len())?;
    for tag in &o.surrogate_keys {
        put_bytes(w, tag.as_bytes())?;
    }
    match o.variant.as_deref() {
        None => put_u8(w, 0)?,
        Some(variant) => {
            match &variant.vary {
                Vary::Any => put_u8(w, 1)?,
                Vary::Headers(names) => {
                    put_u8(w, 2)?;
                    put_count(w, names.len())?;
                    for name in names.iter() {
                        put_bytes(w, name.as_str().as_bytes())?;
                    }
                }
            }
            match &variant.selected {
                None => put_u8(w, 0)?,
                Some(selected) => {
                    put_u8(w, 1)?;
                    put_bytes(w, selected.as_bytes())?;
                }
            }
        }
    }
    put_u64(w, o.body.len() as u64)?;
    w.write_all(&o.body)
}

fn invalid(why: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned())
}

fn get_u8(r: &mut impl Read) -> std::io::Result<u8> {
    let mut b = [0; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

fn get_u16(r: &mut impl Read) -> std::io::Result<u16> {
    let mut b = [0; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

fn get_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

fn get_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn get_bytes(r: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let len = get_u32(r)?;
    if len > MAX_FIELD {
        return Err(invalid("field too long"));
    }
    let mut b = vec![0; len as usize];
    r.read_exact(&mut b)?;
    Ok(b)
}

fn get_string(r: &mut impl Read) -> std::io::Result<String> {
    String::from_utf8(get_bytes(r)?).map_err(|_| invalid("not UTF-8"))
}

fn get_count(r: &mut impl Read) -> std::io::Result<u32> {
    let n = get_u32(r)?;
    if n > MAX_ITEMS {
        return Err(invalid("too many items"));
    }
    Ok(n)
}

fn get_name(r: &mut impl Read) -> std::io::Result<HeaderName> {
    HeaderName::from_bytes(&get_bytes(r)?).map_err(|_| invalid("bad header name"))
}

/// Read a record written by [`encode`]. Its object's `stored_at` is a
/// placeholder: the tier places it on tokio's clock from `received`.
pub fn decode(r: &mut impl Read) -> std::io::Result<DiskRecord> {
    let mut magic = [0; 4];
    r.read_exact(&mut magic)?;
    if &magic != MAGIC {
        return Err(invalid("not a Strata disk record"));
    }
    if get_u8(r)? != VERSION {
        return Err(invalid("unknown record version"));
    }
    let generation = get_u64(r)?;
    let received = SystemTime::UNIX_EPOCH + Duration::from_millis(get_u64(r)?);
    let initial_age = Duration::from_millis(get_u64(r)?);
    let freshness = Freshness {
        storable: get_u8(r)? != 0,
        ttl: Duration::from_millis(get_u64(r)?),
        stale_while_revalidate: Duration::from_millis(get_u64(r)?),
        stale_if_error: Duration::from_millis(get_u64(r)?),
    };
    let status = StatusCode::from_u16(get_u16(r)?).map_err(|_| invalid("bad status"))?;
    let mut headers = HeaderMap::new();
    for _ in 0..get_count(r)? {
        let name = get_name(r)?;
        let value = HeaderValue::from_bytes(&get_bytes(r)?).map_err(|_| invalid("bad value"))?;
        headers.append(name, value);
    }
    let mut surrogate_keys = Vec::new();
    for _ in 0..get_count(r)? {
        surrogate_keys.push(get_string(r)?);
    }
    let variant = match get_u8(r)? {
        0 => None,
        kind => {
            let vary = match kind {
                1 => Vary::Any,
                2 => {
                    let mut names = Vec::new();
                    for _ in 0..get_count(r)? {
                        names.push(get_name(r)?);
                    }
                    Vary::Headers(names.into_boxed_slice())
                }
                _ => return Err(invalid("bad variant")),
            };
            let selected = match get_u8(r)? {
                0 => None,
                _ => Some(get_string(r)?),
            };
            Some(Arc::new(Variant { vary, selected }))
        }
    };
    let len = get_u64(r)?;
    let body = match usize::try_from(len) {
        // Memory of its own, as a fill's body (see `cache::body`); a
        // mapping is only paid for as it is written, so a record whose
        // length is corrupt costs nothing before its read fails.
        Ok(n) if n <= 1 << 30 => {
            let mut body = StoredBody::new(n);
            r.read_exact(body.bytes_mut())
                .map_err(|_| invalid("body cut short"))?;
            body.freeze()
        }
        _ => {
            let mut body = Vec::with_capacity(1 << 30);
            r.take(len).read_to_end(&mut body)?;
            if body.len() as u64 != len {
                return Err(invalid("body cut short"));
            }
            Bytes::from(body)
        }
    };
    let object = CachedObject {
        head: ResponseHead { status, headers },
        body,
        stored_at: tokio::time::Instant::now(),
        initial_age,
        freshness,
        surrogate_keys,
        variant,
        generation,
    };
    Ok(DiskRecord {
        generation,
        received,
        object: Arc::new(object),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let mut head = ResponseHead::new(StatusCode::OK);
        head.headers
            .insert(http::header::ETAG, HeaderValue::from_static("\"v1\""));
        head.headers
            .append("x-multi", HeaderValue::from_static("a"));
        head.headers
            .append("x-multi", HeaderValue::from_static("b"));
        let now = tokio::time::Instant::now();
        let object = CachedObject {
            head,
            body: Bytes::from_static(b"segment bytes"),
            stored_at: now,
            initial_age: Duration::from_secs(3),
            freshness: Freshness {
                storable: true,
                ttl: Duration::from_secs(60),
                stale_while_revalidate: Duration::from_secs(5),
                stale_if_error: Duration::from_secs(30),
            },
            surrogate_keys: vec!["ch-1".into(), "title-9".into()],
            variant: Some(Arc::new(Variant {
                vary: Vary::Headers(vec![HeaderName::from_static("accept-language")].into()),
                selected: Some("accept-language:fr\u{2}".into()),
            })),
            generation: 7,
        };
        let received = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_600_000_123);
        let record = DiskRecord {
            generation: 7,
            received,
            object: Arc::new(object),
        };
        let mut bytes = Vec::new();
        encode(&record, &mut bytes).expect("encode");
        let back = decode(&mut bytes.as_slice()).expect("decode");
        assert_eq!(back.generation, 7);
        assert_eq!(back.received, received);
        let (a, b) = (&record.object, &back.object);
        assert_eq!(a.head.headers, b.head.headers);
        assert_eq!(a.body, b.body);
        assert_eq!(a.freshness, b.freshness);
        assert_eq!(a.initial_age, b.initial_age);
        assert_eq!(a.surrogate_keys, b.surrogate_keys);
        assert_eq!(a.variant, b.variant);
        // Anything cut short is an error, never a shorter object.
        for cut in [3, 20, bytes.len() - 1] {
            assert!(decode(&mut &bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
