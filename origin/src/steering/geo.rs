//! Client country for per-country rankings: the peer's address, or the
//! `X-Forwarded-For` entry a trusted proxy vouches for, looked up in a
//! MaxMind database (the same rules as the edge's `[geo]`).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;
use ipnet::IpNet;
use maxminddb::{path, Reader};

use super::config::SteeringGeoConfig;

/// The database and the proxies whose `X-Forwarded-For` is believed.
pub struct Geo {
    reader: Reader<Vec<u8>>,
    trusted: Vec<IpNet>,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl Geo {
    /// Opens and verifies the database; errors start with the key's name.
    pub fn open(config: &SteeringGeoConfig) -> Result<Geo, String> {
        let mut trusted = Vec::new();
        for (i, text) in config.trusted_proxies.iter().enumerate() {
            let net = text
                .trim()
                .parse::<IpNet>()
                .ok()
                .or_else(|| text.trim().parse::<IpAddr>().ok().map(IpNet::from))
                .ok_or_else(|| {
                    format!("trusted_proxies[{i}]: {text:?} is not an address or network")
                })?;
            trusted.push(net);
        }
        let path = &config.database;
        let bytes =
            std::fs::read(path).map_err(|e| format!("database: {}: {e}", path.display()))?;
        let reader = Reader::from_source(bytes)
            .and_then(|r| r.verify().map(|()| r))
            .map_err(|e| format!("database: {}: {e}", path.display()))?;
        Ok(Geo { reader, trusted })
    }

    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client: the peer, unless it is a trusted proxy; then the
    /// rightmost `X-Forwarded-For` entry that is not one.
    pub fn client_ip(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.ip().to_canonical();
        if !self.trusted(client) {
            return client;
        }
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .flat_map(|line| line.to_str().unwrap_or("").rsplit(','));
        for entry in entries.map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry
                .parse::<IpAddr>()
                .ok()
                .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()));
            let Some(ip) = parsed else { return client };
            client = ip.to_canonical();
            if !self.trusted(client) {
                return client;
            }
        }
        client
    }

    /// Upper-case ISO country code of `ip`, if the database knows it.
    pub fn country(&self, ip: IpAddr) -> Option<String> {
        let found = self.reader.lookup(ip).ok()?;
        let code: Option<&str> = found.decode_path(&path!["country", "iso_code"]).ok()?;
        code.filter(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()))
            .map(str::to_ascii_uppercase)
    }
}
