//! The origin's configuration file: one section per module, composed here.

use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::drm::EncryptionConfig;
use crate::ingest::IngestConfig;
use crate::keys::KeysConfig;
use crate::redundancy::RedundancyConfig;
use crate::steering::SteeringConfig;
use crate::store::StoreConfig;
use crate::vod::VodConfig;

/// The `[server]` section: the origin's HTTP listeners.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Playback listener: `/live/{channel}/…` and `/time`. Edges and shields
    /// use it as their upstream.
    pub http: SocketAddr,
    /// Admin listener: `/metrics`, `/healthz`, `/readyz` and the channel API.
    pub admin: Option<SocketAddr>,
    /// Bearer token for channel API changes (kick). Unset: changes are refused.
    pub api_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            http: SocketAddr::from(([0, 0, 0, 0], 8081)),
            admin: Some(SocketAddr::from(([127, 0, 0, 1], 9092))),
            api_token: None,
        }
    }
}

/// The whole origin configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginConfig {
    pub server: ServerConfig,
    pub ingest: IngestConfig,
    pub store: StoreConfig,
    pub keys: KeysConfig,
    pub encryption: EncryptionConfig,
    /// Multi-CDN content steering; absent: no steering tags, no steering service.
    pub steering: Option<SteeringConfig>,
    /// Video on demand from an MP4 library under `/vod/`; absent: no `/vod/` routes.
    pub vod: Option<VodConfig>,
    /// Redundant origins fed by the same encoder, settling each channel's
    /// epoch with each other; no peers: each derives its own.
    pub redundancy: RedundancyConfig,
}

/// A configuration problem, naming the file or key.
#[derive(Debug, thiserror::Error)]
pub enum OriginConfigError {
    #[error("{path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("{0}")]
    Invalid(String),
}

impl OriginConfig {
    /// Read and validate a file, for `strata check` and callers without flags.
    pub fn load(path: &Path) -> Result<OriginConfig, OriginConfigError> {
        let config = Self::read(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Read a file without validating it: the command line merges its flags
    /// on top first, then validates once, so a flag can supply what the file lacks.
    pub fn read(path: &Path) -> Result<OriginConfig, OriginConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| OriginConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| OriginConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    pub fn parse(text: &str) -> Result<OriginConfig, OriginConfigError> {
        let config: OriginConfig = toml::from_str(text).map_err(|e| OriginConfigError::Parse {
            path: "<config>".into(),
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks serde cannot express; every error names its key.
    pub fn validate(&self) -> Result<(), OriginConfigError> {
        self.ingest
            .init()
            .map_err(|e| OriginConfigError::Invalid(e.to_string()))?;
        self.encryption
            .validate(&self.keys)
            .map_err(OriginConfigError::Invalid)?;
        if let Some(steering) = &self.steering {
            steering
                .validate(self.server.http)
                .map_err(OriginConfigError::Invalid)?;
        }
        if let Some(vod) = &self.vod {
            vod.validate().map_err(OriginConfigError::Invalid)?;
            vod.encryption
                .validate(&self.encryption, &self.keys)
                .map_err(OriginConfigError::Invalid)?;
        }
        self.redundancy
            .validate()
            .map_err(OriginConfigError::Invalid)?;
        let store = &self.store;
        store.validate().map_err(OriginConfigError::Invalid)?;
        if store.target_duration.is_zero() {
            return Err(OriginConfigError::Invalid(
                "store.target_duration: must be above zero".into(),
            ));
        }
        if store.dvr_window < store.target_duration * 3 {
            return Err(OriginConfigError::Invalid(
                "store.dvr_window: must hold at least three target durations".into(),
            ));
        }
        // cbcs/cenc parts are encrypted like whole fragments; AES-128 parts
        // cannot be ([`crate::drm`], "Low latency").
        let names = store.channels.keys().chain(self.encryption.channels.keys());
        for name in std::iter::once("").chain(names.map(String::as_str)) {
            let scheme = self.encryption.scheme(name);
            if store.part_target(name).is_some() && scheme == crate::drm::EncryptionScheme::Aes128 {
                let key = if store
                    .channels
                    .get(name)
                    .is_some_and(|c| c.part_target.is_some())
                {
                    format!("store.channels.{name}.part_target")
                } else {
                    "store.part_target".to_owned()
                };
                let whose = if name.is_empty() {
                    "encryption.default".to_owned()
                } else {
                    format!("channel {name}")
                };
                return Err(OriginConfigError::Invalid(format!(
                    "{key}: low latency is not offered with AES-128 ({whose} is aes-128): a whole-segment CBC key cannot protect parts without reusing the segment's IV; use scheme \"cbcs\" (HLS SAMPLE-AES, FairPlay) or \"cenc\" for LL, or set [store.channels.NAME] part_target = \"0s\" for AES-128 channels"
                )));
            }
        }
        if self
            .server
            .api_token
            .as_deref()
            .is_some_and(|t| t.len() < 16)
        {
            return Err(OriginConfigError::Invalid(
                "server.api_token: use at least 16 characters".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_origin_toml_parses_and_validates() {
        let config =
            OriginConfig::parse(include_str!("../../conf/origin.toml")).expect("conf/origin.toml");
        assert_eq!(config.server.http.port(), 8081);
    }

    #[test]
    fn errors_name_the_key() {
        let err = OriginConfig::parse("[store]\ndvr_window = \"2s\"\n").expect_err("short dvr");
        assert!(err.to_string().starts_with("store.dvr_window"), "{err}");
        let err =
            OriginConfig::parse("[ingest]\nsrt_passphrase = \"short\"\n").expect_err("passphrase");
        assert!(err.to_string().contains("ingest.srt_passphrase"), "{err}");
        let err = OriginConfig::parse("[server]\nhttpp = \"1.2.3.4:1\"\n").expect_err("typo");
        assert!(err.to_string().contains("httpp"), "{err}");
    }

    #[test]
    fn part_target_is_checked_globally_and_per_channel() {
        let ok = OriginConfig::parse(
            "[store]\npart_target = \"0.5s\"\n[store.channels.news]\npart_target = \"0s\"\n",
        )
        .expect("valid");
        assert_eq!(
            ok.store.part_target("sport"),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(ok.store.part_target("news"), None);
        for (text, key) in [
            ("[store]\npart_target = \"10ms\"\n", "store.part_target"),
            ("[store]\npart_target = \"1.5s\"\n", "store.part_target"),
            (
                "[store.channels.news]\npart_target = \"3s\"\n",
                "store.channels.news.part_target",
            ),
            ("[store.channels.\"a b\"]\n", "store.channels.a b"),
            (
                "[store]\npart_target = \"0.5s\"\n[encryption]\nlicence_auth = \"none\"\n[encryption.channels.paid]\nscheme = \"aes-128\"\n[keys]\nstate_dir = \"/tmp\"\n",
                "store.part_target",
            ),
            (
                "[store.channels.paid]\npart_target = \"0.5s\"\n[encryption]\ndefault = \"aes-128\"\nlicence_auth = \"none\"\n[keys]\nstate_dir = \"/tmp\"\n",
                "store.channels.paid.part_target",
            ),
        ] {
            let err = OriginConfig::parse(text).expect_err(text);
            assert!(err.to_string().starts_with(key), "{text}: {err}");
        }
        OriginConfig::parse(
            "[store]\npart_target = \"0.5s\"\n[store.channels.paid]\npart_target = \"0s\"\n[encryption]\nlicence_auth = \"none\"\n[encryption.channels.paid]\nscheme = \"aes-128\"\n[keys]\nstate_dir = \"/tmp\"\n",
        )
        .expect("LL off where AES-128");
        for scheme in ["cbcs", "cenc"] {
            let text = format!("[store]\npart_target = \"0.5s\"\n[encryption]\nlicence_auth = \"none\"\n[encryption.channels.paid]\nscheme = \"{scheme}\"\n[keys]\nstate_dir = \"/tmp\"\n");
            let ok = OriginConfig::parse(&text).expect("LL on a cbcs/cenc channel");
            assert!(ok.store.part_target("paid").is_some(), "{scheme}");
        }
    }
}
