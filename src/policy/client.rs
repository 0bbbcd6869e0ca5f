//! Who the client is: the peer address, or what trusted proxies say it is
//! (`X-Forwarded-For`, PROXY protocol v1/v2).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client address: the peer's, unless the peer is a trusted proxy, in
/// which case the rightmost `X-Forwarded-For` entry that is not itself a
/// trusted proxy. Entries left of it could be written by anyone and are never
/// believed; an unparsable entry stops the walk at the hop that wrote it.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let mut client = peer.ip().to_canonical();
    if !is_trusted(client, trusted) {
        return client;
    }
    // Several header lines form one list, in order (RFC 9110 §5.3).
    let entries = headers
        .get_all("x-forwarded-for")
        .iter()
        .rev()
        .flat_map(|line| line.to_str().unwrap_or("").rsplit(','));
    for entry in entries {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some(ip) = parse_forwarded_addr(entry) else {
            return client;
        };
        client = ip.to_canonical();
        if !is_trusted(client, trusted) {
            return client;
        }
    }
    client
}

/// `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:443`.
fn parse_forwarded_addr(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    entry.parse::<SocketAddr>().ok().map(|s| s.ip())
}

/// What a PROXY protocol header said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The original client, or `None` for `UNKNOWN` (v1) / `LOCAL` (v2) or an
    /// address family other than TCP/UDP over IPv4/IPv6.
    pub source: Option<SocketAddr>,
    /// The address the client connected to, when given.
    pub destination: Option<SocketAddr>,
    /// How many bytes of the input the header took; the stream proper starts there.
    pub len: usize,
}

/// Why bytes are not (yet) a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes so far are a valid prefix; read more and try again.
    #[error("incomplete PROXY protocol header")]
    Incomplete,
    /// Not a PROXY protocol header, or a broken one.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(&'static str),
}

const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (spec §2.1).
const V1_MAX: usize = 107;

/// Parses a PROXY protocol v1 or v2 header at the start of `buf`
/// (haproxy's proxy-protocol.txt).
pub fn parse_proxy_header(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let common = buf.len().min(V2_SIGNATURE.len());
    if buf[..common] == V2_SIGNATURE[..common] && !buf.is_empty() && buf[0] == b'\r' {
        return parse_v2(buf);
    }
    let common = buf.len().min(6);
    if buf[..common] != b"PROXY "[..common] {
        return Err(ProxyError::Invalid("no PROXY protocol signature"));
    }
    parse_v1(buf)
}

fn parse_v1(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let Some(end) = buf.windows(2).take(V1_MAX - 1).position(|w| w == b"\r\n") else {
        return Err(if buf.len() >= V1_MAX {
            ProxyError::Invalid("v1 header longer than 107 bytes")
        } else {
            ProxyError::Incomplete
        });
    };
    let line = std::str::from_utf8(&buf[..end])
        .map_err(|_| ProxyError::Invalid("v1 header is not ASCII"))?;
    let len = end + 2;
    let mut words = line.split(' ');
    words.next(); // "PROXY"
    let family = words
        .next()
        .ok_or(ProxyError::Invalid("v1 header without a protocol"))?;
    if family == "UNKNOWN" {
        return Ok(ProxyHeader {
            source: None,
            destination: None,
            len,
        });
    }
    let want_v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(ProxyError::Invalid(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let mut field = || {
        words
            .next()
            .ok_or(ProxyError::Invalid("v1 header has too few fields"))
    };
    let (src, dst, sport, dport) = (field()?, field()?, field()?, field()?);
    if words.next().is_some() {
        return Err(ProxyError::Invalid("v1 header has too many fields"));
    }
    let addr = |s: &str| -> Result<IpAddr, ProxyError> {
        let ip: IpAddr = s.parse().map_err(|_| ProxyError::Invalid("v1 address"))?;
        if ip.is_ipv6() != want_v6 {
            return Err(ProxyError::Invalid(
                "v1 address does not match the protocol",
            ));
        }
        Ok(ip)
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        // No leading zeros or signs: "1" to "65535" (spec §2.1).
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ProxyError::Invalid("v1 port"));
        }
        s.parse().map_err(|_| ProxyError::Invalid("v1 port"))
    };
    Ok(ProxyHeader {
        source: Some(SocketAddr::new(addr(src)?, port(sport)?)),
        destination: Some(SocketAddr::new(addr(dst)?, port(dport)?)),
        len,
    })
}

fn parse_v2(buf: &[u8]) -> Result<ProxyHeader, ProxyError> {
    if buf.len() < 16 {
        return Err(ProxyError::Incomplete);
    }
    let version_command = buf[12];
    if version_command >> 4 != 2 {
        return Err(ProxyError::Invalid("v2 version is not 2"));
    }
    let family = buf[13];
    let payload_len = u16::from_be_bytes([buf[14], buf[15]]) as usize;
    let len = 16 + payload_len;
    if buf.len() < len {
        return Err(ProxyError::Incomplete);
    }
    let payload = &buf[16..len];
    match version_command & 0x0f {
        // LOCAL: the proxy's own connection (health checks); use the peer.
        0 => {
            return Ok(ProxyHeader {
                source: None,
                destination: None,
                len,
            })
        }
        1 => {}
        _ => return Err(ProxyError::Invalid("v2 command is neither LOCAL nor PROXY")),
    }
    let port = |at: usize| u16::from_be_bytes([payload[at], payload[at + 1]]);
    let (source, destination) = match family {
        // TCP or UDP over IPv4.
        0x11 | 0x12 => {
            if payload.len() < 12 {
                return Err(ProxyError::Invalid("v2 IPv4 addresses truncated"));
            }
            let ip = |at: usize| {
                IpAddr::V4(Ipv4Addr::new(
                    payload[at],
                    payload[at + 1],
                    payload[at + 2],
                    payload[at + 3],
                ))
            };
            (
                SocketAddr::new(ip(0), port(8)),
                SocketAddr::new(ip(4), port(10)),
            )
        }
        // TCP or UDP over IPv6.
        0x21 | 0x22 => {
            if payload.len() < 36 {
                return Err(ProxyError::Invalid("v2 IPv6 addresses truncated"));
            }
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&payload[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            (
                SocketAddr::new(ip(0), port(32)),
                SocketAddr::new(ip(16), port(34)),
            )
        }
        // UNSPEC, UNIX sockets: no address we can use.
        _ => {
            return Ok(ProxyHeader {
                source: None,
                destination: None,
                len,
            })
        }
    };
    Ok(ProxyHeader {
        source: Some(source),
        destination: Some(destination),
        len,
    })
}
