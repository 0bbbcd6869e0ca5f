use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;

use crate::policy::{client_ip, parse_proxy_header, ProxyError, ProxyHeader};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|n| n.parse().expect("net")).collect()
}

fn xff(values: &[&str]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append("x-forwarded-for", v.parse().expect("header"));
    }
    headers
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[test]
fn forwarded_for_is_only_believed_from_trusted_proxies() {
    let trusted = nets(&["127.0.0.1/32", "10.0.0.0/8"]);
    let peer: SocketAddr = "10.1.2.3:5555".parse().expect("peer");
    let stranger: SocketAddr = "198.51.100.9:5555".parse().expect("peer");

    assert_eq!(
        client_ip(stranger, &xff(&["81.2.69.142"]), &trusted),
        ip("198.51.100.9")
    );
    assert_eq!(
        client_ip(peer, &xff(&["81.2.69.142"]), &trusted),
        ip("81.2.69.142")
    );
    // A client-supplied entry left of the real one is not believed.
    assert_eq!(
        client_ip(peer, &xff(&["1.1.1.1, 81.2.69.142, 10.0.0.7"]), &trusted),
        ip("81.2.69.142")
    );
    assert_eq!(
        client_ip(
            peer,
            &xff(&["1.1.1.1", "81.2.69.142:4711", "10.0.0.7"]),
            &trusted
        ),
        ip("81.2.69.142"),
        "several header lines are one list"
    );
    assert_eq!(
        client_ip(peer, &xff(&["[2001:db8::1]:443"]), &trusted),
        ip("2001:db8::1")
    );
    assert_eq!(
        client_ip(peer, &xff(&["garbage, 10.0.0.7"]), &trusted),
        ip("10.0.0.7")
    );
    assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), ip("10.1.2.3"));
    assert_eq!(
        client_ip(peer, &xff(&["10.0.0.8, 10.0.0.7"]), &trusted),
        ip("10.0.0.8")
    );
    let mapped: SocketAddr = "[::ffff:198.51.100.9]:1".parse().expect("peer");
    assert_eq!(
        client_ip(mapped, &HeaderMap::new(), &trusted),
        ip("198.51.100.9")
    );
}

#[test]
fn proxy_protocol_v1() {
    let header = b"PROXY TCP4 81.2.69.142 192.0.2.1 56324 443\r\nGET / HTTP/1.1\r\n";
    let parsed = parse_proxy_header(header).expect("v1");
    assert_eq!(
        parsed.source,
        Some("81.2.69.142:56324".parse().expect("addr"))
    );
    assert_eq!(
        parsed.destination,
        Some("192.0.2.1:443".parse().expect("addr"))
    );
    assert_eq!(&header[parsed.len..], b"GET / HTTP/1.1\r\n");

    let v6 = parse_proxy_header(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n").expect("v6");
    assert_eq!(v6.source, Some("[2001:db8::1]:1".parse().expect("addr")));
    assert_eq!(
        parse_proxy_header(b"PROXY UNKNOWN ffff::1 ::1 1 2\r\n"),
        Ok(ProxyHeader {
            source: None,
            destination: None,
            len: 31
        })
    );
    assert_eq!(
        parse_proxy_header(b"PROXY TCP4 81.2.69.142"),
        Err(ProxyError::Incomplete)
    );
    assert_eq!(parse_proxy_header(b"PRO"), Err(ProxyError::Incomplete));
    assert_eq!(parse_proxy_header(b""), Err(ProxyError::Incomplete));
    for bad in [
        &b"GET / HTTP/1.1\r\n"[..],
        b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
        b"PROXY TCP4 81.2.69.142 192.0.2.1 65536 443\r\n",
        b"PROXY TCP4 81.2.69.142 192.0.2.1 0443 443\r\n",
        b"PROXY TCP4 81.2.69.142 192.0.2.1 1\r\n",
        b"PROXY UDP4 81.2.69.142 192.0.2.1 1 2\r\n",
    ] {
        assert!(
            matches!(parse_proxy_header(bad), Err(ProxyError::Invalid(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
    assert!(matches!(
        parse_proxy_header(&long),
        Err(ProxyError::Invalid(_))
    ));
}

fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x20 | command);
    out.push(family);
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn proxy_protocol_v2() {
    let mut payload = vec![81, 2, 69, 142, 192, 0, 2, 1];
    payload.extend_from_slice(&56324u16.to_be_bytes());
    payload.extend_from_slice(&443u16.to_be_bytes());
    payload.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV (NOOP), skipped
    let mut frame = v2(1, 0x11, &payload);
    frame.extend_from_slice(b"\x16\x03\x01");
    let parsed = parse_proxy_header(&frame).expect("v2");
    assert_eq!(
        parsed.source,
        Some("81.2.69.142:56324".parse().expect("addr"))
    );
    assert_eq!(
        parsed.destination,
        Some("192.0.2.1:443".parse().expect("addr"))
    );
    assert_eq!(&frame[parsed.len..], b"\x16\x03\x01");

    let mut payload6 = Vec::new();
    payload6.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets(),
    );
    payload6.extend_from_slice(
        &"2001:db8::2"
            .parse::<std::net::Ipv6Addr>()
            .expect("v6")
            .octets(),
    );
    payload6.extend_from_slice(&[0x12, 0x34, 0x01, 0xbb]);
    let parsed = parse_proxy_header(&v2(1, 0x21, &payload6)).expect("v2 v6");
    assert_eq!(
        parsed.source,
        Some("[2001:db8::1]:4660".parse().expect("addr"))
    );

    let local = parse_proxy_header(&v2(0, 0x00, &[])).expect("LOCAL");
    assert_eq!((local.source, local.len), (None, 16));
    let frame = v2(1, 0x11, &payload);
    assert_eq!(
        parse_proxy_header(&frame[..20]),
        Err(ProxyError::Incomplete)
    );
    assert_eq!(parse_proxy_header(&frame[..5]), Err(ProxyError::Incomplete));
    assert!(matches!(
        parse_proxy_header(&v2(1, 0x11, &[1, 2, 3])),
        Err(ProxyError::Invalid(_))
    ));
    assert!(matches!(
        parse_proxy_header(&v2(2, 0x11, &payload)),
        Err(ProxyError::Invalid(_))
    ));
    let mut wrong_version = v2(1, 0x11, &payload);
    wrong_version[12] = 0x11;
    assert!(matches!(
        parse_proxy_header(&wrong_version),
        Err(ProxyError::Invalid(_))
    ));
}
