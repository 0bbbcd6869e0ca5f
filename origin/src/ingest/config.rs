//! The `[ingest]` section of the origin's configuration.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{is_valid_name_part, IngestAuth, IngestLimits};

/// Publishing: RTMP and SRT listeners and who may publish.
///
/// ```toml
/// [ingest]
/// rtmp_listen = "0.0.0.0:1935"
/// srt_listen = "0.0.0.0:9000"
/// srt_latency = "120ms"
/// publish_token_secret = "00112233445566778899aabbccddeeff"
///
/// [ingest.channels.news]
/// keys = ["s3cret"]
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Address of the RTMP listener (`rtmp://HOST:PORT/live/{channel}`).
    pub rtmp_listen: SocketAddr,
    /// UDP address of the SRT listener.
    pub srt_listen: SocketAddr,
    /// SRT passphrase (10 to 79 characters); when set, SRT publishers must
    /// encrypt with it (`passphrase=…&pbkeylen=16|24|32`), when unset they
    /// must not encrypt.
    pub srt_passphrase: Option<String>,
    /// SRT receive latency: how long SRT may spend recovering lost packets.
    #[serde(with = "humantime_serde")]
    pub srt_latency: Duration,
    /// Static stream keys per channel name.
    pub channels: BTreeMap<String, ChannelKeys>,
    /// Hex-encoded HMAC-SHA256 secret (at least 16 bytes) for signed publish
    /// tokens; tokens are refused when unset.
    pub publish_token_secret: Option<String>,
    /// Let publishers without credentials into channels that have no keys.
    pub allow_anonymous: bool,
    /// Most concurrent RTMP plus SRT connections; more are closed at once.
    pub max_connections: usize,
    /// Most concurrent RTMP connections.
    pub rtmp_max_connections: usize,
    /// Most concurrent SRT connections.
    pub srt_max_connections: usize,
    /// Most concurrent connections from one IP address (RTMP and SRT).
    pub max_connections_per_ip: usize,
    /// Most connections per protocol that have not yet started an authorised
    /// publish; when full, the oldest is closed to make room for a new one.
    pub max_pending_connections: usize,
    /// Time from accepting a connection to an authorised publish (RTMP
    /// handshake and commands, SRT handshake); slower peers are closed.
    #[serde(with = "humantime_serde")]
    pub publish_deadline: Duration,
    /// Largest RTMP message (bytes) an authorised publisher may send, checked
    /// on its chunk header before anything is buffered; before the publish is
    /// authorised the limit is 64 KiB.
    pub rtmp_max_message_size: usize,
}

impl std::fmt::Debug for IngestConfig {
    // Passphrase, keys and token secret stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field("rtmp_listen", &self.rtmp_listen)
            .field("srt_listen", &self.srt_listen)
            .field("srt_passphrase", &self.srt_passphrase.as_ref().map(|_| "…"))
            .field("srt_latency", &self.srt_latency)
            .field("channels", &self.channels.keys().collect::<Vec<_>>())
            .field(
                "publish_token_secret",
                &self.publish_token_secret.as_ref().map(|_| "…"),
            )
            .field("allow_anonymous", &self.allow_anonymous)
            .field("max_connections", &self.max_connections)
            .field("rtmp_max_connections", &self.rtmp_max_connections)
            .field("srt_max_connections", &self.srt_max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("max_pending_connections", &self.max_pending_connections)
            .field("publish_deadline", &self.publish_deadline)
            .field("rtmp_max_message_size", &self.rtmp_max_message_size)
            .finish()
    }
}

/// The static keys of one channel.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelKeys {
    /// Any of these keys lets a publisher into the channel.
    pub keys: Vec<String>,
}

impl std::fmt::Debug for ChannelKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChannelKeys({} keys)", self.keys.len())
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        let limits = IngestLimits::default();
        Self {
            rtmp_listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            srt_listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            srt_passphrase: None,
            srt_latency: Duration::from_millis(120),
            channels: BTreeMap::new(),
            publish_token_secret: None,
            allow_anonymous: false,
            max_connections: limits.max_connections,
            rtmp_max_connections: limits.rtmp_max_connections,
            srt_max_connections: limits.srt_max_connections,
            max_connections_per_ip: limits.max_connections_per_ip,
            max_pending_connections: limits.max_pending_connections,
            publish_deadline: limits.publish_deadline,
            rtmp_max_message_size: limits.rtmp_max_message_size,
        }
    }
}

/// A value in `[ingest]` that cannot work; names the key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IngestConfigError {
    #[error("ingest.channels: {0:?} is not a channel name ([A-Za-z0-9_-]{{1,64}})")]
    ChannelName(String),
    #[error("ingest.channels.{0}.keys: keys must be non-empty and free of '&', ',' and '?'")]
    Key(String),
    #[error("ingest.publish_token_secret: {0}")]
    TokenSecret(String),
    #[error("ingest.srt_passphrase: SRT needs 10 to 79 characters")]
    Passphrase,
    #[error("ingest.{0}: must be at least 1")]
    Limit(&'static str),
    #[error("ingest.rtmp_max_message_size: from 65536 to 16777215 bytes")]
    MessageSize,
}

impl IngestConfig {
    /// The connection limits of this section.
    pub fn limits(&self) -> IngestLimits {
        IngestLimits {
            max_connections: self.max_connections,
            rtmp_max_connections: self.rtmp_max_connections,
            srt_max_connections: self.srt_max_connections,
            max_connections_per_ip: self.max_connections_per_ip,
            max_pending_connections: self.max_pending_connections,
            publish_deadline: self.publish_deadline,
            rtmp_max_message_size: self.rtmp_max_message_size,
        }
    }

    /// Binds the RTMP (TCP) and SRT (UDP) listen addresses, for
    /// [`super::rtmp::serve`] and [`super::srt::serve`].
    pub async fn bind(&self) -> std::io::Result<(tokio::net::TcpListener, tokio::net::UdpSocket)> {
        let rtmp = tokio::net::TcpListener::bind(self.rtmp_listen).await?;
        let srt = tokio::net::UdpSocket::bind(self.srt_listen).await?;
        Ok((rtmp, srt))
    }

    /// Checks the section and builds the publish gate from it.
    pub fn init(&self) -> Result<IngestAuth, IngestConfigError> {
        let mut keys = HashMap::new();
        for (channel, c) in &self.channels {
            if !is_valid_name_part(channel) {
                return Err(IngestConfigError::ChannelName(channel.clone()));
            }
            // These characters would end the key inside a URL query or SRT stream id.
            if c.keys
                .iter()
                .any(|k| k.is_empty() || k.contains(['&', ',', '?']))
            {
                return Err(IngestConfigError::Key(channel.clone()));
            }
            keys.insert(channel.clone(), c.keys.clone());
        }
        let token_secret = match &self.publish_token_secret {
            None => None,
            Some(h) => {
                let bytes =
                    hex::decode(h).map_err(|e| IngestConfigError::TokenSecret(e.to_string()))?;
                if bytes.len() < 16 {
                    return Err(IngestConfigError::TokenSecret(
                        "at least 16 bytes (32 hex digits)".into(),
                    ));
                }
                Some(bytes)
            }
        };
        if let Some(p) = &self.srt_passphrase {
            if !(10..=79).contains(&p.len()) {
                return Err(IngestConfigError::Passphrase);
            }
        }
        for (key, value) in [
            ("max_connections", self.max_connections),
            ("rtmp_max_connections", self.rtmp_max_connections),
            ("srt_max_connections", self.srt_max_connections),
            ("max_connections_per_ip", self.max_connections_per_ip),
            ("max_pending_connections", self.max_pending_connections),
        ] {
            if value == 0 {
                return Err(IngestConfigError::Limit(key));
            }
        }
        if self.publish_deadline.is_zero() {
            return Err(IngestConfigError::Limit("publish_deadline"));
        }
        // RTMP message lengths are 24-bit (RTMP spec §5.3.1.2.1).
        if !(64 * 1024..=0xff_ffff).contains(&self.rtmp_max_message_size) {
            return Err(IngestConfigError::MessageSize);
        }
        Ok(IngestAuth::new(
            keys,
            token_secret,
            self.allow_anonymous,
            self.max_connections,
        )
        .with_limits(self.limits()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_toml_with_defaults_and_refuses_unknown_keys() {
        let c: IngestConfig = toml::from_str(
            r#"
            srt_latency = "200ms"
            publish_token_secret = "00112233445566778899aabbccddeeff"
            [channels.news]
            keys = ["s3cret"]
            "#,
        )
        .expect("valid");
        assert_eq!(c.srt_latency, Duration::from_millis(200));
        assert_eq!(c.rtmp_listen.port(), 1935);
        assert!(c.init().is_ok());
        let shown = format!("{c:?} {:?}", c.init());
        assert!(
            !shown.contains("s3cret") && !shown.contains("00112233"),
            "{shown}"
        );
        let err = toml::from_str::<IngestConfig>("rtmp_port = 1").expect_err("unknown key");
        assert!(err.to_string().contains("rtmp_port"));
        let bad = IngestConfig {
            publish_token_secret: Some("abcd".into()),
            ..IngestConfig::default()
        };
        assert!(matches!(bad.init(), Err(IngestConfigError::TokenSecret(_))));
        let c: IngestConfig = toml::from_str(
            r#"
            publish_deadline = "5s"
            rtmp_max_connections = 10
            max_connections_per_ip = 4
            rtmp_max_message_size = 1048576
            "#,
        )
        .expect("valid");
        let auth = c.init().expect("valid");
        assert_eq!(auth.limits().publish_deadline, Duration::from_secs(5));
        assert_eq!(auth.limits().rtmp_max_connections, 10);
        assert_eq!(auth.limits().srt_max_connections, 128);
        let bad = IngestConfig {
            rtmp_max_message_size: 16 << 20,
            ..IngestConfig::default()
        };
        assert_eq!(bad.init().err(), Some(IngestConfigError::MessageSize));
        let bad = IngestConfig {
            max_connections_per_ip: 0,
            ..IngestConfig::default()
        };
        assert_eq!(
            bad.init().err(),
            Some(IngestConfigError::Limit("max_connections_per_ip"))
        );
    }
}
