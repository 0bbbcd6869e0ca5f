//! Country rules over a MaxMind DB (GeoIP2/GeoLite2 Country or City), and
//! the `[geo]` config section.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::StatusCode;
use ipnet::IpNet;
use maxminddb::{path, Reader};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use super::ConfigError;

/// Why a database could not be (re)loaded or read.
#[derive(Debug, thiserror::Error)]
pub enum GeoError {
    /// The file could not be read.
    #[error("geo database {path}: {source}")]
    Io {
        /// The configured path.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file is not a valid MaxMind DB.
    #[error("geo database {path}: {source}")]
    Invalid {
        /// The configured path.
        path: PathBuf,
        /// What the reader said.
        source: maxminddb::MaxMindDbError,
    },
    /// A lookup hit corrupt data.
    #[error("geo lookup: {0}")]
    Lookup(#[from] maxminddb::MaxMindDbError),
}

/// An ISO 3166-1 alpha-2 country code, upper case (`"GB"`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Parses two ASCII letters, any case.
    pub fn parse(code: &str) -> Option<CountryCode> {
        match code.as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => Some(CountryCode([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
            ])),
            _ => None,
        }
    }

    /// The code as text.
    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A MaxMind DB that can be replaced while lookups go on. Readers clone the
/// current `Arc` and look up without holding the lock.
pub struct GeoDb {
    path: PathBuf,
    reader: RwLock<Arc<Loaded>>,
    /// mtime of the file currently loaded; only `reload_if_changed` reads it.
    loaded_mtime: Mutex<Option<SystemTime>>,
    /// Counts successful reloads, so watchers can await one.
    reloads: tokio::sync::watch::Sender<u64>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeoDb")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A loaded database and the countries already looked up in it: a player's
/// every request comes from the same address, so after the first one the
/// tree walk (~0.2 µs) is a hash lookup. Lives and dies with its database.
struct Loaded {
    reader: Reader<Vec<u8>>,
    countries: Mutex<HashMap<IpAddr, Option<CountryCode>, foldhash::fast::RandomState>>,
}

/// Remembered addresses before the map is emptied and starts over.
const COUNTRIES_MAX: usize = 64 * 1024;

impl Loaded {
    fn new(reader: Reader<Vec<u8>>) -> Arc<Loaded> {
        Arc::new(Loaded {
            reader,
            countries: Mutex::default(),
        })
    }
}

fn load(path: &Path) -> Result<Reader<Vec<u8>>, GeoError> {
    let bytes = std::fs::read(path).map_err(|source| GeoError::Io {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |source| GeoError::Invalid {
        path: path.to_owned(),
        source,
    };
    let reader = Reader::from_source(bytes).map_err(invalid)?;
    // A full walk, so a corrupt tree or data section is refused here and not
    // discovered by a request.
    reader.verify().map_err(invalid)?;
    Ok(reader)
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl GeoDb {
    /// Opens and fully verifies the database at `path`.
    pub fn open(path: impl Into<PathBuf>) -> Result<GeoDb, GeoError> {
        let path = path.into();
        let before = mtime(&path);
        let reader = load(&path)?;
        Ok(GeoDb {
            path,
            reader: RwLock::new(Loaded::new(reader)),
            loaded_mtime: Mutex::new(before),
            reloads: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The file this database is loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sees the number of successful reloads so far, and every later one.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.reloads.subscribe()
    }

    /// Loads the file again. On any error the database in use stays in use
    /// and the error is returned. Reading and verifying a production
    /// database is blocking work (tens of milliseconds to seconds): call it
    /// from `spawn_blocking`, as [`GeoDb::watch`] does.
    pub fn reload(&self) -> Result<(), GeoError> {
        let before = mtime(&self.path);
        let reader = load(&self.path)?;
        *self.reader.write() = Loaded::new(reader);
        *self.loaded_mtime.lock() = before;
        self.reloads.send_modify(|n| *n += 1);
        tracing::info!(path = %self.path.display(), "geo database reloaded");
        Ok(())
    }

    /// Reloads if the file's mtime differs from the loaded one's. `Ok(true)`
    /// when a new database was swapped in. A failed attempt is not retried
    /// until the file changes again.
    pub fn reload_if_changed(&self) -> Result<bool, GeoError> {
        let now = mtime(&self.path);
        {
            let mut loaded = self.loaded_mtime.lock();
            if now.is_none() || *loaded == now {
                return Ok(false);
            }
            *loaded = now;
        }
        self.reload().map(|()| true)
    }

    /// Polls the file's mtime every `every` and reloads on change, logging
    /// failures; runs until the returned task is aborted.
    pub fn watch(self: Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let db = Arc::clone(&self);
                // Reading and verifying a database is blocking work.
                let outcome = tokio::task::spawn_blocking(move || db.reload_if_changed()).await;
                if let Ok(Err(error)) = outcome {
                    tracing::warn!(%error, "geo database not reloaded; keeping the previous one");
                }
            }
        })
    }

    /// `country.iso_code` for `ip`; `Ok(None)` when the address is not in
    /// the database or has no country.
    pub fn country(&self, ip: IpAddr) -> Result<Option<CountryCode>, GeoError> {
        let loaded = Arc::clone(&self.reader.read());
        let ip = ip.to_canonical();
        if let Some(country) = loaded.countries.lock().get(&ip) {
            return Ok(*country);
        }
        let found = loaded.reader.lookup(ip)?;
        let code: Option<&str> = found.decode_path(&path!["country", "iso_code"])?;
        let country = code.and_then(CountryCode::parse);
        let mut countries = loaded.countries.lock();
        if countries.len() >= COUNTRIES_MAX {
            countries.clear();
        }
        countries.insert(ip, country);
        Ok(country)
    }
}

/// One rule: requests under `prefix` from countries in `deny` are refused,
/// or only those from countries in `allow` are served.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoRuleConfig {
    /// Path prefix (of the normalised path) the rule applies to.
    pub prefix: String,
    /// ISO 3166-1 alpha-2 codes to refuse; set this or `allow`.
    #[serde(default)]
    pub deny: Option<Vec<String>>,
    /// ISO 3166-1 alpha-2 codes to serve, refusing all others; set this or `deny`.
    #[serde(default)]
    pub allow: Option<Vec<String>>,
}

/// What to do with an address whose country is not known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnknownCountry {
    /// Serve it (private ranges, new allocations, satellite providers).
    #[default]
    Allow,
    /// Refuse it wherever a rule applies.
    Deny,
}

/// The `[geo]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// MaxMind DB file (GeoIP2/GeoLite2 Country or City). Reloaded when it changes.
    pub database: PathBuf,
    /// Proxies whose `X-Forwarded-For` is believed: networks (`10.0.0.0/8`)
    /// or single addresses.
    #[serde(default = "default_trusted")]
    pub trusted_proxies: Vec<String>,
    /// Rules, tried in order; the first whose prefix matches decides.
    #[serde(default)]
    pub rules: Vec<GeoRuleConfig>,
    /// Whether an address with no known country passes a rule.
    #[serde(default)]
    pub unknown: UnknownCountry,
    /// Status of a refusal: 403, or 451 (RFC 7725, legal reasons).
    #[serde(default = "default_status")]
    pub status: u16,
}

fn default_trusted() -> Vec<String> {
    vec!["127.0.0.1/32".to_owned()]
}

/// `10.0.0.0/8` or `10.0.0.1` (a single address).
fn parse_net(text: &str) -> Option<IpNet> {
    let text = text.trim();
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}
fn default_status() -> u16 {
    403
}

#[derive(Debug, Clone)]
enum CountrySet {
    Deny(Vec<CountryCode>),
    Allow(Vec<CountryCode>),
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct GeoRule {
    prefix: String,
    countries: CountrySet,
}

/// Validates rules; errors name `<at>[i].<field>`.
pub fn parse_rules(rules: &[GeoRuleConfig], at: &str) -> Result<Vec<GeoRule>, ConfigError> {
    rules
        .iter()
        .enumerate()
        .map(|(i, rule)| {
            let key = |field: &str| format!("{at}[{i}]{field}");
            if !rule.prefix.starts_with('/') {
                return Err(ConfigError::new(key(".prefix"), "must start with '/'"));
            }
            let codes = |list: &[String], field: &str| {
                list.iter()
                    .enumerate()
                    .map(|(j, c)| {
                        CountryCode::parse(c).ok_or_else(|| {
                            ConfigError::new(
                                format!("{}[{j}]", key(field)),
                                format!("{c:?} is not a two-letter country code"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            let countries = match (&rule.deny, &rule.allow) {
                (Some(deny), None) => CountrySet::Deny(codes(deny, ".deny")?),
                (None, Some(allow)) => CountrySet::Allow(codes(allow, ".allow")?),
                _ => {
                    return Err(ConfigError::new(
                        key(""),
                        "set exactly one of allow or deny",
                    ))
                }
            };
            Ok(GeoRule {
                prefix: rule.prefix.clone(),
                countries,
            })
        })
        .collect()
}

/// A refusal by a geo rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeoRejection {
    /// 403 or 451, as configured.
    pub status: StatusCode,
    /// The client's country, if known.
    pub country: Option<CountryCode>,
}

impl GeoRejection {
    /// The `Strata-Reject-Reason` value and metrics label.
    pub fn as_str(&self) -> &'static str {
        "geo"
    }
}

/// Rules over a database. Immutable; rule changes build a new one that
/// shares the database.
#[derive(Debug, Clone)]
pub struct GeoPolicy {
    db: Arc<GeoDb>,
    trusted_proxies: Vec<IpNet>,
    rules: Vec<GeoRule>,
    unknown: UnknownCountry,
    status: StatusCode,
}

impl GeoConfig {
    /// Validates the section and opens the database; a missing or corrupt
    /// database is an error here.
    pub fn init(&self) -> Result<GeoPolicy, ConfigError> {
        let status = match self.status {
            403 => StatusCode::FORBIDDEN,
            451 => StatusCode::UNAVAILABLE_FOR_LEGAL_REASONS,
            _ => return Err(ConfigError::new("geo.status", "must be 403 or 451")),
        };
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, net)| {
                parse_net(net).ok_or_else(|| {
                    ConfigError::new(
                        format!("geo.trusted_proxies[{i}]"),
                        format!("{net:?} is not an address or network"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rules = parse_rules(&self.rules, "geo.rules")?;
        let db = GeoDb::open(&self.database)
            .map_err(|e| ConfigError::new("geo.database", e.to_string()))?;
        Ok(GeoPolicy {
            db: Arc::new(db),
            trusted_proxies,
            rules,
            unknown: self.unknown,
            status,
        })
    }
}

impl GeoPolicy {
    /// The database, for reloading and watching.
    pub fn db(&self) -> &Arc<GeoDb> {
        &self.db
    }

    /// The proxies whose `X-Forwarded-For` is believed, for [`super::client_ip`].
    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.trusted_proxies
    }

    /// The same policy with other rules.
    pub fn with_rules(&self, rules: Vec<GeoRule>) -> GeoPolicy {
        GeoPolicy {
            rules,
            ..self.clone()
        }
    }

    /// Checks `path` (normalised) for a client at `ip`. Addresses are only
    /// looked up when a rule applies; a lookup error counts as unknown.
    pub fn check(&self, path: &str, ip: IpAddr) -> Result<(), GeoRejection> {
        let Some(rule) = self.rules.iter().find(|r| path.starts_with(&r.prefix)) else {
            return Ok(());
        };
        let country = match self.db.country(ip) {
            Ok(country) => country,
            Err(error) => {
                tracing::warn!(%error, %ip, "geo lookup failed; treating the country as unknown");
                None
            }
        };
        let allowed = match (country, &rule.countries) {
            (None, _) => self.unknown == UnknownCountry::Allow,
            (Some(c), CountrySet::Deny(list)) => !list.contains(&c),
            (Some(c), CountrySet::Allow(list)) => list.contains(&c),
        };
        if allowed {
            Ok(())
        } else {
            Err(GeoRejection {
                status: self.status,
                country,
            })
        }
    }
}
