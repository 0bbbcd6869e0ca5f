//! `strata ctl`: issue fleet changes from anywhere that reaches NATS and
//! holds the fleet secret, and show the fleet state version.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cache::freshness::{TtlOverride, TtlOverrides};
use crate::fleet::nats::Engine;
use crate::fleet::{Change, FleetSecret, PurgeSpec};

#[derive(Args)]
pub struct CtlArgs {
    /// NATS server of the fleet (e.g. nats://127.0.0.1:4222); default: `fleet.nats` of --config.
    #[arg(long, env = "STRATA_FLEET_NATS")]
    pub nats: Option<String>,
    /// The fleet signing secret; default: `fleet.secret` of --config.
    #[arg(long, env = "STRATA_FLEET_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// An edge config file to take `[fleet]` from.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Subcommand)]
pub enum CtlCommand {
    /// Purge on every node: URLs (or paths), or `--prefix`, or `--key` (surrogate keys).
    Purge {
        urls: Vec<String>,
        #[arg(long, conflicts_with_all = ["urls", "key"])]
        prefix: Option<String>,
        #[arg(long, conflicts_with = "urls")]
        key: Vec<String>,
        /// Mark stale (revalidate) instead of dropping.
        #[arg(long)]
        soft: bool,
    },
    /// Add or retire a playback-token verification key on every node.
    #[command(subcommand)]
    TokenKeys(TokenKeysCommand),
    /// Replace the TTL overrides on every node: `PREFIX=TTL` each (none: clear them).
    TtlOverrides { overrides: Vec<String> },
    /// Replace the geo rules on every node from a JSON file (`{"rules": [...]}`, as the admin API takes).
    GeoRules { file: PathBuf },
    /// The fleet state version and the last change.
    Status,
}

#[derive(Subcommand)]
pub enum TokenKeysCommand {
    Add {
        #[arg(long)]
        id: String,
        /// The key, hex.
        #[arg(long)]
        secret: String,
    },
    Retire {
        id: String,
    },
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GeoRulesFile {
    rules: Vec<crate::admin::GeoRule>,
}

fn change(command: CtlCommand) -> Result<Option<Change>, String> {
    Ok(Some(match command {
        CtlCommand::Purge {
            urls,
            prefix,
            key,
            soft,
        } => {
            let spec = PurgeSpec {
                urls: (!urls.is_empty()).then_some(urls),
                prefix,
                surrogate_keys: (!key.is_empty()).then_some(key),
                soft,
            };
            if let Some(p) = &spec.prefix {
                if !p.starts_with('/') {
                    return Err("--prefix: must start with '/'".into());
                }
            }
            if spec.urls.is_none() && spec.prefix.is_none() && spec.surrogate_keys.is_none() {
                return Err("purge: give URLs, --prefix or --key".into());
            }
            Change::Purge(spec)
        }
        CtlCommand::TokenKeys(TokenKeysCommand::Add { id, secret }) => {
            Change::AddTokenKey { id, secret }
        }
        CtlCommand::TokenKeys(TokenKeysCommand::Retire { id }) => Change::RetireTokenKey { id },
        CtlCommand::TtlOverrides { overrides } => {
            let entries = overrides
                .iter()
                .map(|o| {
                    let (prefix, ttl) = o
                        .split_once('=')
                        .ok_or_else(|| format!("{o:?}: expected PREFIX=TTL"))?;
                    let ttl = humantime::parse_duration(ttl).map_err(|e| format!("{o:?}: {e}"))?;
                    Ok(TtlOverride {
                        prefix: prefix.to_owned(),
                        ttl,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            TtlOverrides::new(&entries, "overrides").map_err(|e| e.to_string())?;
            Change::SetTtlOverrides { overrides: entries }
        }
        CtlCommand::GeoRules { file } => {
            let text =
                std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let parsed: GeoRulesFile =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?;
            Change::SetGeoRules {
                rules: parsed.rules,
            }
        }
        CtlCommand::Status => return Ok(None),
    }))
}

/// Run one `strata ctl` command; what it prints goes to stdout.
pub async fn run(args: CtlArgs) -> Result<(), String> {
    let from_file = match &args.config {
        Some(path) => Some(
            crate::config::EdgeConfig::read(path)
                .map_err(|e| e.to_string())?
                .fleet,
        ),
        None => None,
    };
    let nats = args
        .nats
        .clone()
        .or_else(|| from_file.as_ref().and_then(|f| f.nats.clone()))
        .ok_or("no NATS server: give --nats, STRATA_FLEET_NATS or --config with fleet.nats")?;
    let secret = match &args.secret {
        Some(s) => FleetSecret::new(s).map_err(|e| format!("--secret: {e}"))?,
        None => from_file.and_then(|f| f.secret).ok_or(
            "no fleet secret: give --secret, STRATA_FLEET_SECRET or --config with fleet.secret",
        )?,
    };
    let change = change(args.command)?;
    let engine = Engine::connect_now(&nats, secret)
        .await
        .map_err(|e| format!("{nats}: {e}"))?;
    match change {
        Some(change) => {
            let version = engine
                .publish(&change)
                .await
                .map_err(|e| format!("publish: {e}"))?;
            println!("{} published as fleet version {version}", change.kind());
        }
        None => {
            let version = engine
                .last_version()
                .await
                .map_err(|e| format!("status: {e}"))?;
            println!("fleet version {version}");
        }
    }
    engine.client().flush().await.map_err(|e| e.to_string())?;
    Ok(())
}
