//! The fleet state a node runs, as saved in `fleet.state_file`: the version,
//! the stream position read up to, and the runtime changes to token keys,
//! geo rules and TTL overrides (purges need no saving: the cache is in
//! memory and starts empty).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::change::Change;
use super::change::GeoRule;
use crate::cache::freshness::TtlOverride;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FleetState {
    /// The version of the last change applied (0: none).
    pub version: u64,
    /// The last stream sequence read, applied or refused.
    pub cursor: u64,
    /// Keys added at run time, by id (hex secrets: the file is 0600).
    pub token_keys_added: BTreeMap<String, String>,
    /// Keys retired at run time, including ones from the config file.
    pub token_keys_retired: BTreeSet<String>,
    /// The geo rules set at run time, replacing the config file's.
    pub geo_rules: Option<Vec<GeoRule>>,
    /// The TTL overrides set at run time, replacing the config file's.
    pub ttl_overrides: Option<Vec<TtlOverride>>,
}

impl FleetState {
    /// Record what `change` leaves behind (purges leave nothing).
    pub fn record(&mut self, change: &Change) {
        match change {
            Change::Purge(_) => {}
            Change::AddTokenKey { id, secret } => {
                self.token_keys_retired.remove(id);
                self.token_keys_added.insert(id.clone(), secret.clone());
            }
            Change::RetireTokenKey { id } => {
                self.token_keys_added.remove(id);
                self.token_keys_retired.insert(id.clone());
            }
            Change::SetGeoRules { rules } => self.geo_rules = Some(rules.clone()),
            Change::SetTtlOverrides { overrides } => self.ttl_overrides = Some(overrides.clone()),
        }
    }

    /// Read `path`; a missing file is the empty state, anything unreadable
    /// is an error naming the file.
    pub fn load(path: &Path) -> Result<FleetState, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FleetState::default()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Write `path` whole or not at all (temporary file, fsync, rename),
    /// readable by the owner only: it holds token secrets.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_changes_fold_and_the_file_round_trips() {
        let dir = std::env::temp_dir().join(format!("strata-fleet-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.json");
        let mut state = FleetState::load(&path).expect("missing file is empty");
        assert_eq!(state, FleetState::default());
        state.record(&Change::AddTokenKey {
            id: "k2".into(),
            secret: "00".into(),
        });
        state.record(&Change::RetireTokenKey { id: "k1".into() });
        state.record(&Change::RetireTokenKey { id: "k2".into() });
        state.version = 3;
        state.save(&path).expect("save");
        let back = FleetState::load(&path).expect("load");
        assert_eq!(back, state);
        assert!(back.token_keys_added.is_empty());
        assert_eq!(back.token_keys_retired.len(), 2);
        std::fs::write(&path, "{not json").expect("write");
        assert!(FleetState::load(&path)
            .expect_err("corrupt")
            .contains("state.json"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
