//! The edge's configuration file: one section per module, composed here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::cache::CacheConfig;
pub use crate::error::ConfigError;
use crate::frontend::h3::H3Config;
use crate::policy::{GeoConfig, Policy, PolicyConfig, PolicyMetrics, TokenConfig};
pub use crate::units::ByteSize;
use crate::upstream::UpstreamConfig;

/// A certificate and its key; the names it covers come from the certificate.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// The `[server]` section: where the edge listens and what it calls itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Cleartext HTTP listeners (HTTP/1.1, and HTTP/2 with prior knowledge when `h2c`).
    pub listen: Vec<SocketAddr>,
    /// TLS listeners (HTTP/1.1 and HTTP/2 by ALPN).
    pub tls_listen: Vec<SocketAddr>,
    /// Certificates for the TLS listeners; picked by SNI, the first is the default.
    pub certificates: Vec<CertificateConfig>,
    /// Accept cleartext HTTP/2 (prior knowledge) on `listen`.
    pub h2c: bool,
    /// Which implementation speaks HTTP/1.x on `listen` and `tls_listen`:
    /// `"strata"` (default; the edge's own loop, the cheaper hit path) or
    /// `"pingora"` (Pingora's session, as before). HTTP/2 is Pingora's.
    pub http1: crate::frontend::pingora::Http1Engine,
    /// Admin listener: /metrics, /healthz, /readyz and the control API
    /// (/api/…). Keep it off the public network.
    pub admin: Option<SocketAddr>,
    /// Bearer token the control API requires (at least 16 characters);
    /// without one the API is read-only and changes answer 403.
    pub admin_token: Option<crate::admin::token::AdminToken>,
    /// This node's name in `Via` and `Cache-Status`; also how tier loops are detected.
    pub node_id: String,
    /// Peers (CIDR ranges, e.g. a load balancer) that open every connection
    /// with a PROXY protocol v1/v2 header; the client address is taken from
    /// it. Connections from other peers are never parsed for one.
    pub proxy_protocol_from: Vec<String>,
    /// On SIGTERM, SIGINT or a finished upgrade (SIGUSR2): how long in-flight
    /// responses may take to finish once the listeners are closed. Also
    /// read under its old name, `shutdown_grace`.
    #[serde(with = "humantime_serde", alias = "shutdown_grace")]
    pub drain_timeout: Duration,
    /// Where the node writes its pid once it serves (atomically: a temporary
    /// file renamed over it); `kill -USR2 $(cat PID_FILE)` upgrades it.
    pub pid_file: Option<PathBuf>,
    /// HTTP/3 on UDP at each `tls_listen` address, and its limits.
    pub h3: H3Config,
    /// Connection caps and request-head deadlines (`[server.limits]`).
    pub limits: crate::frontend::admission::LimitsConfig,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 8080))],
            tls_listen: Vec::new(),
            certificates: Vec::new(),
            h2c: true,
            http1: Default::default(),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9091))),
            admin_token: None,
            node_id: default_node_id(),
            proxy_protocol_from: Vec::new(),
            drain_timeout: Duration::from_secs(30),
            pid_file: None,
            h3: H3Config::default(),
            limits: Default::default(),
        }
    }
}

impl ServerConfig {
    /// `proxy_protocol_from` parsed; an error names the bad entry.
    pub fn proxy_protocol_nets(&self) -> Result<Vec<ipnet::IpNet>, ConfigError> {
        self.proxy_protocol_from
            .iter()
            .enumerate()
            .map(|(i, net)| {
                net.parse::<ipnet::IpNet>()
                    .or_else(|_| net.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        key: format!("server.proxy_protocol_from[{i}]"),
                        message: format!("{net:?} is not an address or CIDR range"),
                    })
            })
            .collect()
    }
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect();
    if host.is_empty() {
        "strata".into()
    } else {
        format!("strata-{host}")
    }
}

/// The whole edge configuration file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    pub server: ServerConfig,
    pub cache: CacheConfig,
    pub upstream: UpstreamConfig,
    /// Signed playback tokens (Akamai EdgeAuth 2.0); absent: no token checks.
    pub token: Option<TokenConfig>,
    /// Country rules from a MaxMind database; absent: no geo checks.
    pub geo: Option<GeoConfig>,
    /// CMCD and beacons → `strata_qoe_*` metrics.
    pub qoe: crate::qoe::QoeConfig,
    /// The fleet control plane (`[fleet]`): NATS, signing secret, state file.
    pub fleet: crate::fleet::FleetConfig,
}

impl EdgeConfig {
    /// Read and validate a file, for `strata check` and callers without flags.
    pub fn load(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let config = Self::read(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Read a file without validating it: the command line merges its flags
    /// on top first, then validates once ([`EdgeConfig::validate`]), so a
    /// flag can supply what the file lacks.
    pub fn read(path: &Path) -> Result<EdgeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                message,
            },
            other => other,
        })
    }

    /// Parse and validate.
    pub fn parse(text: &str) -> Result<EdgeConfig, ConfigError> {
        let config = Self::from_toml(text)?;
        config.validate()?;
        Ok(config)
    }

    /// Parse without validating (see [`EdgeConfig::read`]).
    pub fn from_toml(text: &str) -> Result<EdgeConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })
    }

    /// The access policy, if `[token]` or `[geo]` is configured.
    pub fn policy(
        &self,
        registry: &mut prometheus_client::registry::Registry,
    ) -> Result<Option<Policy>, ConfigError> {
        if self.token.is_none() && self.geo.is_none() {
            return Ok(None);
        }
        let policy = self.init_policy()?;
        Ok(Some(policy.with_metrics(PolicyMetrics::register(registry))))
    }

    fn init_policy(&self) -> Result<Policy, ConfigError> {
        Policy::init(PolicyConfig {
            token: self.token.clone(),
            geo: self.geo.clone(),
        })
    }

    /// Checks serde cannot express; every error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        if self.server.listen.is_empty() && self.server.tls_listen.is_empty() {
            return Err(invalid(
                "server.listen",
                "no listener: give server.listen or server.tls_listen".into(),
            ));
        }
        if !self.server.tls_listen.is_empty() && self.server.certificates.is_empty() {
            return Err(invalid(
                "server.certificates",
                "server.tls_listen needs at least one certificate".into(),
            ));
        }
        if self.server.node_id.is_empty()
            || self
                .server
                .node_id
                .contains(|c: char| c.is_whitespace() || c == ',')
        {
            return Err(invalid(
                "server.node_id",
                "must be non-empty, without spaces or commas".into(),
            ));
        }
        self.server
            .limits
            .check()
            .map_err(|(key, message)| invalid(key, message))?;
        self.server
            .h3
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        self.server.proxy_protocol_nets()?;
        if self.upstream.urls.is_empty() {
            return Err(invalid(
                "upstream.urls",
                "at least one upstream (origin or shield) is required".into(),
            ));
        }
        for (i, url) in self.upstream.urls.iter().enumerate() {
            crate::upstream::Upstream::parse(url)
                .map_err(|e| invalid(&format!("upstream.urls[{i}]"), e.to_string()))?;
        }
        if self.cache.size.0 < 1024 * 1024 {
            return Err(invalid(
                "cache.size",
                format!("{} is too small (at least 1MiB)", self.cache.size),
            ));
        }
        match &self.cache.disk {
            // Objects larger than memory live on disk only.
            Some(disk) => disk
                .check(self.cache.max_object_size.0)
                .map_err(|(key, message)| invalid(key, message))?,
            None if self.cache.max_object_size > self.cache.size => {
                return Err(invalid(
                    "cache.max_object_size",
                    "larger than cache.size (and no [cache.disk] to hold it)".into(),
                ));
            }
            None => {}
        }
        // LL-HLS delivery directives (RFC 8216bis §6.2.5) name different
        // playlists: left out of the key, every blocking reload would get
        // whatever playlist was cached last.
        if let Some(p) = self.cache.ignore_params.iter().find(|p| {
            crate::cache::LL_HLS_PARAMS
                .iter()
                .any(|ll| ll.eq_ignore_ascii_case(p))
        }) {
            return Err(invalid(
                "cache.ignore_params",
                format!("{p} must stay in the cache key (LL-HLS blocking reload)"),
            ));
        }
        self.qoe
            .validate()
            .map_err(|(key, message)| invalid(&key, message))?;
        crate::cache::freshness::TtlOverrides::new(
            &self.cache.ttl_overrides,
            "cache.ttl_overrides",
        )
        .map_err(|e| invalid(&e.key, e.message))?;
        if self.token.is_some() || self.geo.is_some() {
            // Opens the geo database and parses keys: a bad file or key is a config error at start.
            self.init_policy()?;
        }
        self.fleet
            .validate()
            .map_err(|(key, message)| invalid(key, message))?;
        if self.upstream.max_attempts == 0 {
            return Err(invalid(
                "upstream.max_attempts",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_edge_toml_parses_and_validates() {
        let text = include_str!("../conf/edge.toml");
        let config = EdgeConfig::parse(text).expect("conf/edge.toml");
        assert_eq!(config.cache.size, ByteSize(1 << 30));
        assert!(!config.upstream.urls.is_empty());
    }

    #[test]
    fn drain_timeout_is_also_read_under_its_old_name() {
        let base = "[upstream]\nurls = [\"http://127.0.0.1:1\"]\n";
        let config = EdgeConfig::parse(&format!("[server]\nshutdown_grace = \"7s\"\n{base}"))
            .expect("old name");
        assert_eq!(config.server.drain_timeout, Duration::from_secs(7));
        let config = EdgeConfig::parse(&format!(
            "[server]\ndrain_timeout = \"45s\"\npid_file = \"/run/strata/edge.pid\"\n{base}"
        ))
        .expect("new names");
        assert_eq!(config.server.drain_timeout, Duration::from_secs(45));
        assert_eq!(
            config.server.pid_file.as_deref(),
            Some(Path::new("/run/strata/edge.pid"))
        );
        assert_eq!(
            ServerConfig::default().drain_timeout,
            Duration::from_secs(30)
        );
    }

    #[test]
    fn errors_name_the_key() {
        let err = EdgeConfig::parse("[upstream]\nurls = [\"ftp://x\"]\n").expect_err("bad url");
        assert!(err.to_string().starts_with("upstream.urls[0]"), "{err}");
        let err = EdgeConfig::parse("[cache]\nsize = \"lots\"\n").expect_err("bad size");
        assert!(err.to_string().contains("size"), "{err}");
        let err = EdgeConfig::parse("[cache]\nsiez = 1\n").expect_err("typo");
        assert!(err.to_string().contains("siez"), "{err}");
        let err = EdgeConfig::parse(
            "[upstream]\nurls = [\"http://127.0.0.1:1\"]\n[cache]\nignore_params = [\"token\", \"_hls_msn\"]\n",
        )
            .expect_err("LL-HLS directive ignored");
        assert!(err.to_string().starts_with("cache.ignore_params"), "{err}");
    }

    #[test]
    fn ttl_overrides_and_the_admin_token_parse_and_are_checked() {
        let base = "[upstream]\nurls = [\"http://127.0.0.1:1\"]\n";
        let config = EdgeConfig::parse(&format!(
            "[server]\nadmin_token = \"0123456789abcdef-admin\"\n{base}[[cache.ttl_overrides]]\nprefix = \"/live/\"\nttl = \"2s\"\n"
        ))
        .expect("valid");
        assert_eq!(config.cache.ttl_overrides[0].ttl, Duration::from_secs(2));
        assert!(!format!("{config:?}").contains("0123456789abcdef-admin"));
        let err = EdgeConfig::parse(&format!(
            "{base}[[cache.ttl_overrides]]\nprefix = \"live\"\nttl = \"2s\"\n"
        ))
        .expect_err("relative prefix");
        assert!(
            err.to_string().starts_with("cache.ttl_overrides[0].prefix"),
            "{err}"
        );
        let err = EdgeConfig::parse(&format!("[server]\nadmin_token = \"short\"\n{base}"))
            .expect_err("short token");
        assert!(err.to_string().contains("admin_token"), "{err}");
    }

    #[test]
    fn the_disk_tier_is_optional_and_checked() {
        let base = "[upstream]\nurls = [\"http://127.0.0.1:1\"]\n";
        assert!(EdgeConfig::parse(base).expect("valid").cache.disk.is_none());
        let dir = std::env::temp_dir().join("strata-config-disk");
        let config = EdgeConfig::parse(&format!(
            "{base}[cache]\nsize = \"1MiB\"\nmax_object_size = \"8MiB\"\n[cache.disk]\npath = {:?}\nsize = \"20GiB\"\n",
            dir.display().to_string()
        ))
        .expect("objects larger than memory go to disk");
        let disk = config.cache.disk.expect("disk");
        assert_eq!(disk.size, ByteSize(20 << 30));
        assert_eq!(disk.path, dir);
        let err = EdgeConfig::parse(&format!(
            "{base}[cache.disk]\npath = \"/tmp/x\"\nsize = \"10MiB\"\n"
        ))
        .expect_err("too small");
        assert!(err.to_string().starts_with("cache.disk.size"), "{err}");
        let err = EdgeConfig::parse(&format!("{base}[cache.disk]\nsize = \"1GiB\"\n"))
            .expect_err("no path");
        assert!(err.to_string().contains("path"), "{err}");
        let err = EdgeConfig::parse(&format!(
            "{base}[cache.disk]\npath = \"/tmp/x\"\nsize = \"1GiB\"\nsiez = 1\n"
        ))
        .expect_err("typo");
        assert!(err.to_string().contains("siez"), "{err}");
        let err = EdgeConfig::parse(&format!(
            "{base}[cache.disk]\npath = \"/etc/hostname\"\nsize = \"1GiB\"\n"
        ))
        .expect_err("a file");
        assert!(err.to_string().starts_with("cache.disk.path"), "{err}");
        let err = EdgeConfig::parse(&format!(
            "{base}[cache]\nsize = \"1MiB\"\nmax_object_size = \"8MiB\"\n"
        ))
        .expect_err("larger than memory without a disk");
        assert!(
            err.to_string().starts_with("cache.max_object_size"),
            "{err}"
        );
    }

    #[test]
    fn sizes() {
        assert_eq!("512MiB".parse(), Ok(ByteSize(512 << 20)));
        assert_eq!("2GB".parse(), Ok(ByteSize(2_000_000_000)));
        assert_eq!("1.5k".parse(), Ok(ByteSize(1500)));
        assert!("12 parsecs".parse::<ByteSize>().is_err());
    }
}
