//! TLS for the front doors: one rustls configuration, a certificate per SNI name.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::CertificateConfig;

/// Picks the certificate whose names match the SNI; the first one otherwise.
#[derive(Debug)]
pub struct SniResolver {
    certs: Vec<(Vec<String>, Arc<CertifiedKey>)>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(name) = hello.server_name() {
            let name = name.to_ascii_lowercase();
            for (names, key) in &self.certs {
                if names.iter().any(|n| matches_name(n, &name)) {
                    return Some(key.clone());
                }
            }
        }
        self.certs.first().map(|(_, k)| k.clone())
    }
}

fn matches_name(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name.split_once('.').is_some_and(|(_, rest)| rest == suffix),
        None => pattern == name,
    }
}

fn load_certified_key(
    config: &CertificateConfig,
) -> Result<(Vec<String>, Arc<CertifiedKey>), String> {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let cert_pem = read(&config.cert)?;
    let key_pem = read(&config.key)?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", config.cert.display()))?;
    if chain.is_empty() {
        return Err(format!(
            "{}: no PEM certificate found",
            config.cert.display()
        ));
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| format!("{}: {e}", config.key.display()))?
        .ok_or_else(|| format!("{}: no PEM private key found", config.key.display()))?;
    let signing_key =
        any_supported_type(&key).map_err(|e| format!("{}: {e}", config.key.display()))?;
    let names = certificate_names(&chain[0]);
    Ok((names, Arc::new(CertifiedKey::new(chain, signing_key))))
}

/// DNS names of a certificate, read from its subjectAltName by a small DER walk
/// (enough for SNI matching; rustls verifies nothing on our side here).
fn certificate_names(cert: &CertificateDer<'_>) -> Vec<String> {
    // OID 2.5.29.17 (subjectAltName), then dNSName entries [2] IMPLICIT IA5String.
    const SAN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x1d, 0x11];
    let der = cert.as_ref();
    let Some(at) = der.windows(SAN_OID.len()).position(|w| w == SAN_OID) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut i = at + SAN_OID.len();
    // Skip an optional `critical` BOOLEAN, then the OCTET STRING header, then the SEQUENCE header.
    if der.get(i) == Some(&0x01) {
        i += 3;
    }
    let skip_header = |i: usize| -> Option<(usize, usize)> {
        let len0 = *der.get(i + 1)? as usize;
        if len0 < 0x80 {
            Some((i + 2, len0))
        } else {
            let n = len0 & 0x7f;
            let mut len = 0usize;
            for k in 0..n {
                len = (len << 8) | *der.get(i + 2 + k)? as usize;
            }
            Some((i + 2 + n, len))
        }
    };
    let Some((seq, _)) = skip_header(i) else {
        return names;
    };
    let Some((mut j, seq_len)) = skip_header(seq) else {
        return names;
    };
    let end = (j + seq_len).min(der.len());
    while j < end {
        let tag = der[j];
        let Some((content, len)) = skip_header(j) else {
            break;
        };
        if tag == 0x82 {
            if let Some(bytes) = der.get(content..content + len) {
                names.push(String::from_utf8_lossy(bytes).to_ascii_lowercase());
            }
        }
        j = content + len;
    }
    names
}

/// A rustls server configuration for the given certificates and ALPN protocols.
pub fn server_config(
    certs: &[CertificateConfig],
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs = certs
        .iter()
        .map(load_certified_key)
        .collect::<Result<Vec<_>, _>>()?;
    if certs.is_empty() {
        return Err("no certificate configured".into());
    }
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver { certs }));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_one_label() {
        assert!(matches_name("*.example.com", "cdn.example.com"));
        assert!(!matches_name("*.example.com", "a.b.example.com"));
        assert!(matches_name("example.com", "example.com"));
    }
}
