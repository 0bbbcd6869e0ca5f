//! Purges: what to drop (or mark stale), and the log that lets a fill which
//! began before a purge know that its result must not be stored.
//!
//! Every purge takes the next *generation*; every in-flight fill remembers the
//! generation current when it started. When the fill ends it asks the log
//! whether a purge newer than its start matches its object, and if so does not
//! store it: its bytes may predate the change the purge announced.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::cache::key::CacheKey;

/// What a purge selects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeTarget {
    /// Exact cache keys (path plus the query parameters that change content).
    Keys(Vec<CacheKey>),
    /// Every object whose normalised path starts with this.
    Prefix(String),
    /// Every object whose upstream response named one of these in `Surrogate-Key`.
    SurrogateKeys(Vec<String>),
}

impl PurgeTarget {
    /// Label for `strata_edge_purges_total{kind}`.
    pub fn kind(&self) -> &'static str {
        match self {
            PurgeTarget::Keys(_) => "url",
            PurgeTarget::Prefix(_) => "prefix",
            PurgeTarget::SurrogateKeys(_) => "surrogate-key",
        }
    }

    /// Whether an object stored under `key` with `surrogate_keys` is selected.
    pub fn matches(&self, key: &CacheKey, surrogate_keys: &[String]) -> bool {
        match self {
            PurgeTarget::Keys(keys) => keys.iter().any(|k| k.as_str() == key.as_str()),
            PurgeTarget::Prefix(prefix) => key.path().starts_with(prefix.as_str()),
            PurgeTarget::SurrogateKeys(tags) => surrogate_keys.iter().any(|s| tags.contains(s)),
        }
    }

    /// Whether a fill whose response head (and so its surrogate keys) is not
    /// known yet might be selected.
    pub fn may_match_unknown_tags(&self, key: &CacheKey) -> bool {
        match self {
            PurgeTarget::SurrogateKeys(_) => true,
            _ => self.matches(key, &[]),
        }
    }
}

/// Purges kept for fills still running. A fill older than the oldest kept
/// purge is treated as purged: an extra upstream fetch is cheaper than a stale
/// object that outlives its purge.
const KEPT_PURGES: usize = 1024;

/// The recent purges, newest last.
#[derive(Default)]
pub struct PurgeLog {
    generation: AtomicU64,
    // Held only to push or scan the list; never across `.await`.
    recent: Mutex<VecDeque<(u64, PurgeTarget)>>,
}

impl PurgeLog {
    /// A log whose generations continue after `last` (the disk tier's
    /// journal keeps them across restarts).
    pub fn starting_at(last: u64) -> PurgeLog {
        PurgeLog {
            generation: AtomicU64::new(last),
            recent: Mutex::default(),
        }
    }

    /// The generation a fill starting now belongs to.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Record a purge; returns its generation (fills started before it are
    /// those whose generation is smaller).
    pub fn record(&self, target: PurgeTarget) -> u64 {
        let mut recent = self.recent.lock();
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        recent.push_back((generation, target));
        while recent.len() > KEPT_PURGES {
            recent.pop_front();
        }
        generation
    }

    /// Whether a purge recorded after a fill of generation `started` selects
    /// the object it produced.
    pub fn purged_since(&self, started: u64, key: &CacheKey, surrogate_keys: &[String]) -> bool {
        if self.generation() == started {
            return false;
        }
        let recent = self.recent.lock();
        if recent
            .front()
            .is_some_and(|(oldest, _)| *oldest > started + 1)
        {
            return true;
        }
        recent
            .iter()
            .rev()
            .take_while(|(generation, _)| *generation > started)
            .any(|(_, target)| target.matches(key, surrogate_keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(path: &str) -> CacheKey {
        CacheKey::new(path, None, &[])
    }

    #[test]
    fn a_fill_sees_only_the_purges_recorded_after_it_started() {
        let log = PurgeLog::default();
        log.record(PurgeTarget::Prefix("/live/a/".into()));
        let started = log.generation();
        assert!(!log.purged_since(started, &key("/live/a/1.m4s"), &[]));
        log.record(PurgeTarget::SurrogateKeys(vec!["ch-b".into()]));
        assert!(!log.purged_since(started, &key("/live/a/1.m4s"), &["ch-a".into()]));
        assert!(log.purged_since(started, &key("/live/b/1.m4s"), &["ch-b".into()]));
        log.record(PurgeTarget::Keys(vec![key("/live/a/2.m4s")]));
        assert!(log.purged_since(started, &key("/live/a/2.m4s"), &[]));
        assert!(!log.purged_since(started, &key("/live/a/3.m4s"), &[]));
    }

    #[test]
    fn a_fill_older_than_every_kept_purge_counts_as_purged() {
        let log = PurgeLog::default();
        let started = log.generation();
        for i in 0..=KEPT_PURGES {
            log.record(PurgeTarget::Prefix(format!("/other/{i}/")));
        }
        assert!(log.purged_since(started, &key("/live/a/1.m4s"), &[]));
        let recent = log.generation() - 1;
        assert!(!log.purged_since(recent, &key("/live/a/1.m4s"), &[]));
    }

    #[test]
    fn prefixes_match_paths_not_queries() {
        let target = PurgeTarget::Prefix("/vod/x".into());
        assert!(target.matches(&CacheKey::new("/vod/x/1.ts", Some("a=1"), &[]), &[]));
        assert!(!target.matches(&CacheKey::new("/vod/y", Some("p=/vod/x"), &[]), &[]));
        assert!(PurgeTarget::SurrogateKeys(vec!["t".into()]).may_match_unknown_tags(&key("/a")));
    }
}
