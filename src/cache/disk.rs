//! The disk tier (`[cache.disk]`): objects that do not fit the memory tier,
//! or have left it, on foyer's block engine, which survives a restart.
//!
//! Written through: a storable object is handed to the disk tier when it is
//! stored, so a restarted edge finds what the last one held, hottest
//! objects included (its memory was the part lost). foyer's write queue
//! encodes and writes it in the background; a full queue drops it
//! (counted). A memory miss asks the disk before the upstream, and a hit is
//! put back in memory when it fits. Purges cannot enumerate a key-value
//! store, so they are written to the [`journal`] and judged at each hit.
//!
//! The disk never fails a request: an unusable path at start leaves the
//! edge on memory alone, and a read error is a miss; both are counted in
//! `strata_edge_cache_disk_errors_total` and logged at most every
//! [`LOG_EVERY`].

pub mod journal;
pub mod record;

mod foyer_metrics;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use foyer::{
    BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder,
    HybridCachePolicy, RecoverMode,
};
use serde::Deserialize;
use tokio::time::Instant;

use crate::cache::freshness::Freshness;
use crate::cache::key::CacheKey;
use crate::cache::purge::PurgeTarget;
use crate::cache::CachedObject;
use crate::metrics::{CacheMetrics, OpLabels, ReasonLabels};
use crate::units::ByteSize;
use journal::{PurgeJournal, Verdict};
use record::DiskRecord;

/// The `[cache.disk]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    /// Directory for the cache files and the purge journal, created if
    /// missing; one edge process per directory.
    pub path: PathBuf,
    /// Disk space for cached objects, e.g. `"20GiB"`.
    pub size: ByteSize,
}

/// foyer's unit of writing and eviction: it also bounds the largest entry.
const MIN_BLOCK: u64 = 16 << 20;
/// Room in a block for an object's headers and the record's own fields.
const HEAD_ROOM: u64 = 1 << 20;
/// Blocks the disk must hold at least: eviction frees one block at a time.
const MIN_BLOCKS: u64 = 4;
/// foyer's own memory cache, which only holds entries being read back:
/// the edge's memory tier is moka's.
const FOYER_MEMORY: usize = 1 << 20;
/// The least time between two log lines about the same disk failure.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

impl DiskConfig {
    /// The block size for objects up to `max_object_size`.
    pub fn block_size(max_object_size: u64) -> u64 {
        (max_object_size + HEAD_ROOM)
            .next_multiple_of(4096)
            .max(MIN_BLOCK)
    }

    /// Checks serde cannot express: `(key, message)`.
    pub fn check(&self, max_object_size: u64) -> Result<(), (&'static str, String)> {
        if self.path.as_os_str().is_empty() {
            return Err(("cache.disk.path", "must not be empty".into()));
        }
        if self.path.exists() && !self.path.is_dir() {
            return Err((
                "cache.disk.path",
                format!("{} exists and is not a directory", self.path.display()),
            ));
        }
        let least = MIN_BLOCKS * Self::block_size(max_object_size);
        if self.size.0 < least {
            return Err((
                "cache.disk.size",
                format!(
                    "{} is too small: at least {least}B ({MIN_BLOCKS} blocks of \
                     cache.max_object_size + 1MiB, and never under 16MiB)",
                    self.size
                ),
            ));
        }
        Ok(())
    }
}

/// Why the disk tier could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is in use by another process")]
    Locked(String),
    #[error("disk cache: {0}")]
    Store(#[from] foyer::Error),
}

/// What foyer stores under a key: the record, shared until it is written.
#[derive(Debug)]
pub struct Stored(Arc<DiskRecord>);

impl foyer::Code for Stored {
    fn encode(&self, writer: &mut impl std::io::Write) -> foyer::Result<()> {
        record::encode(&self.0, writer).map_err(foyer::Error::io_error)
    }

    fn decode(reader: &mut impl std::io::Read) -> foyer::Result<Self> {
        record::decode(reader)
            .map(|r| Stored(Arc::new(r)))
            .map_err(foyer::Error::io_error)
    }

    fn estimated_size(&self) -> usize {
        self.0.estimated_size()
    }
}

/// Logs a failure at most every [`LOG_EVERY`], saying how many were not logged.
#[derive(Default)]
struct Throttled {
    /// Milliseconds since `origin` of the last line, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttled {
    fn warn(&self, origin: Instant, what: &str, error: &dyn std::fmt::Display) {
        let now = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= LOG_EVERY.as_millis() as u64;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
            tracing::warn!(%error, suppressed, "disk cache {what} failed; going on without it");
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The open disk tier.
pub struct DiskTier {
    store: HybridCache<String, Stored>,
    journal: Arc<PurgeJournal>,
    metrics: Arc<CacheMetrics>,
    /// The largest record a block holds.
    max_record: usize,
    origin: Instant,
    read_errors: Throttled,
    journal_errors: Throttled,
    /// Held for the tier's life: an exclusive lock on `path/lock`.
    _lock: File,
}

impl DiskTier {
    /// Open the tier at `config.path`, recovering what a previous process left.
    pub async fn open(
        config: &DiskConfig,
        max_object_size: u64,
        metrics: Arc<CacheMetrics>,
    ) -> Result<DiskTier, DiskError> {
        let io = |path: &std::path::Path| {
            let path = path.display().to_string();
            move |source| DiskError::Io { path, source }
        };
        std::fs::create_dir_all(&config.path).map_err(io(&config.path))?;
        let lock_path = config.path.join("lock");
        let lock = File::create(&lock_path).map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(DiskError::Locked(config.path.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        let journal_path = config.path.join("purges.jsonl");
        let opened = PurgeJournal::open(&journal_path).map_err(io(&journal_path))?;

        let block = DiskConfig::block_size(max_object_size);
        let as_usize = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        let device = FsDeviceBuilder::new(config.path.join("blocks"))
            .with_capacity(as_usize(config.size.0))
            .build()?;
        let store = HybridCacheBuilder::new()
            .with_name("strata-edge")
            .with_policy(HybridCachePolicy::WriteOnInsertion)
            .with_metrics_registry(Box::new(foyer_metrics::Bridge::new(&metrics)))
            .memory(FOYER_MEMORY)
            .with_weighter(|_key: &String, value: &Stored| value.0.estimated_size())
            .storage()
            .with_engine_config(
                BlockEngineConfig::new(device)
                    .with_block_size(as_usize(block))
                    // One write buffer of a block (foyer double-buffers it:
                    // 2 blocks of memory); an entry must fit one.
                    .with_buffer_pool_size(as_usize(block))
                    .with_submit_queue_size_threshold(as_usize(2 * block))
                    // A removed key must stay removed after a restart.
                    .with_tombstone_log(true),
            )
            .with_recover_mode(RecoverMode::Quiet)
            .build()
            .await?;
        if !opened.trusted {
            tracing::warn!(path = %journal_path.display(), "purge journal damaged: clearing the disk cache");
            store.clear().await?;
        }
        metrics.disk.up.set(1);
        Ok(DiskTier {
            store,
            journal: Arc::new(opened.journal),
            metrics,
            max_record: as_usize(block - 4096),
            origin: Instant::now(),
            read_errors: Throttled::default(),
            journal_errors: Throttled::default(),
            _lock: lock,
        })
    }

    /// The purge generation this process must start at.
    pub fn last_generation(&self) -> u64 {
        self.journal.last_generation()
    }

    /// The object stored under `key`, unless a purge since selects it, as
    /// the memory tier would hold it now (its age and freshness carried
    /// over by the wall clock).
    pub async fn get(&self, key: &CacheKey) -> Option<CachedObject> {
        let m = &self.metrics.disk;
        let record = match self.store.get(key.stored()).await {
            Ok(Some(entry)) => entry.value().0.clone(),
            Ok(None) => {
                m.misses.inc();
                return None;
            }
            Err(e) => {
                m.errors.get_or_create(&OpLabels { op: "read" }).inc();
                m.misses.inc();
                self.read_errors.warn(self.origin, "read", &e);
                return None;
            }
        };
        let object = &record.object;
        let mut freshness = object.freshness.clone();
        match self
            .journal
            .verdict(record.generation, key, &object.surrogate_keys)
        {
            Verdict::Keep => {}
            Verdict::Gone => {
                self.store.remove(key.stored());
                m.purged.inc();
                m.misses.inc();
                return None;
            }
            Verdict::StaleSince(at) => {
                let resident = at.duration_since(record.received).unwrap_or_default();
                freshness.ttl = freshness.ttl.min(resident);
            }
        }
        let resident = SystemTime::now()
            .duration_since(record.received)
            .unwrap_or_default();
        let validator = object.etag().is_some() || object.last_modified().is_some();
        if resident >= super::retention(&freshness, validator) {
            self.store.remove(key.stored());
            m.misses.inc();
            return None;
        }
        m.hits.inc();
        m.hit_bytes.inc_by(object.body.len() as u64);
        Some(rebased(object, freshness, resident))
    }

    /// Whether a purge selects `object` (read from this tier) now.
    pub fn purged_since(&self, key: &CacheKey, object: &CachedObject) -> bool {
        self.journal
            .verdict(object.generation, key, &object.surrogate_keys)
            != Verdict::Keep
    }

    /// Hand `object` to the disk (written in the background).
    pub fn put(&self, key: &CacheKey, object: &Arc<CachedObject>) {
        let m = &self.metrics.disk;
        let resident = object.resident(Instant::now());
        let record = DiskRecord {
            generation: object.generation,
            received: SystemTime::now()
                .checked_sub(resident)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            object: object.clone(),
        };
        if record.estimated_size() > self.max_record {
            m.dropped
                .get_or_create(&ReasonLabels {
                    reason: "too-large",
                })
                .inc();
            return;
        }
        self.store
            .storage_writer(key.stored().to_owned())
            .force()
            .insert(Stored(Arc::new(record)));
        // Counted once the write queue has been flushed past it.
        let (store, metrics) = (self.store.clone(), self.metrics.clone());
        let bytes = object.body.len() as u64;
        tokio::spawn(async move {
            store.storage().wait().await;
            metrics.disk.writes.inc();
            metrics.disk.write_bytes.inc_by(bytes);
        });
    }

    pub fn remove(&self, key: &CacheKey) {
        self.store.remove(key.stored());
    }

    /// Record a purge of `generation` so lookups, now and after a restart,
    /// treat what it selects as gone (or stale, with `soft`). If it cannot
    /// be made durable the whole tier is cleared: a purge is never forgotten.
    pub async fn purge(&self, generation: u64, target: &PurgeTarget, soft: bool) {
        if let (PurgeTarget::Keys(keys), false) = (target, soft) {
            for key in keys {
                self.store.remove(key.stored());
            }
        }
        let journal = self.journal.clone();
        let target = target.clone();
        let at = SystemTime::now();
        let written =
            tokio::task::spawn_blocking(move || journal.record(generation, at, soft, target))
                .await
                .unwrap_or_else(|e| Err(std::io::Error::other(e)));
        if let Err(e) = written {
            let m = &self.metrics.disk;
            m.errors.get_or_create(&OpLabels { op: "journal" }).inc();
            self.journal_errors
                .warn(self.origin, "purge journal write", &e);
            if let Err(e) = self.store.clear().await {
                tracing::error!(error = %e, "disk cache: could not clear after a lost purge");
            }
        }
    }

    /// Write what is queued and stop.
    pub async fn close(&self) {
        if let Err(e) = self.store.close().await {
            tracing::warn!(error = %e, "disk cache: close failed");
        }
        self.metrics.disk.up.set(0);
    }
}

/// `object` with its clock restarted at now: what was `resident` old moves
/// into its `Age` and out of its lifetimes, so every staleness threshold
/// falls at the same wall-clock time as before (a monotonic `Instant` does
/// not survive a reboot, so it cannot be stored).
fn rebased(object: &CachedObject, freshness: Freshness, resident: Duration) -> CachedObject {
    let mut moved = object.clone();
    let Freshness {
        ttl,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        ..
    } = freshness;
    moved.freshness = Freshness {
        ttl: ttl.saturating_sub(resident),
        // Thresholds count from the end of `ttl`: once `ttl` is spent,
        // what is left of each window counts from now.
        stale_while_revalidate: (ttl + swr).saturating_sub(resident).min(swr),
        stale_if_error: (ttl + sie).saturating_sub(resident).min(sie),
        ..freshness
    };
    moved.initial_age += resident;
    moved.stored_at = Instant::now();
    moved
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(ttl: u64, swr: u64, sie: u64) -> CachedObject {
        CachedObject {
            head: crate::response::ResponseHead::new(http::StatusCode::OK),
            body: bytes::Bytes::from_static(b"x"),
            stored_at: Instant::now(),
            initial_age: Duration::from_secs(1),
            freshness: Freshness {
                storable: true,
                ttl: Duration::from_secs(ttl),
                stale_while_revalidate: Duration::from_secs(swr),
                stale_if_error: Duration::from_secs(sie),
            },
            surrogate_keys: Vec::new(),
            variant: None,
            generation: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebased_object_turns_stale_when_the_original_would_have() {
        let original = object(60, 10, 30);
        for resident in [0, 20, 59, 60, 65, 70, 80, 89, 90, 200] {
            let r = Duration::from_secs(resident);
            let moved = rebased(&original, original.freshness.clone(), r);
            let now = Instant::now();
            for later in [0, 1, 5, 15, 40] {
                let l = Duration::from_secs(later);
                assert_eq!(
                    moved.staleness(now + l),
                    original.staleness(original.stored_at + r + l),
                    "resident {resident}s, {later}s later"
                );
            }
            assert_eq!(moved.age(now), original.age(original.stored_at + r));
        }
    }

    #[test]
    fn a_disk_smaller_than_four_blocks_is_refused() {
        let config = DiskConfig {
            path: std::env::temp_dir().join("strata-disk-check"),
            size: ByteSize(48 << 20),
        };
        let err = config.check(8 << 20).expect_err("3 blocks of 16MiB");
        assert_eq!(err.0, "cache.disk.size");
        assert!(config.check(1 << 20).is_err());
        let big = DiskConfig {
            size: ByteSize(64 << 20),
            ..config
        };
        assert!(big.check(8 << 20).is_ok());
        assert!(big.check(32 << 20).is_err(), "blocks of 33MiB");
    }
}
