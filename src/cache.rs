//! The edge's object store: moka, weighed in bytes, holding complete
//! responses, over an optional disk tier (see [`disk`]); in-flight fills
//! live beside it (see [`fill`]), and purges reach all three (see [`purge`]).

pub mod body;
pub mod disk;
pub mod fill;
pub mod freshness;
pub mod inflight;
pub mod key;
pub mod ll;
pub mod purge;
pub mod vary;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use moka::notification::RemovalCause;
use serde::Deserialize;
use tokio::time::Instant;

use crate::cache::disk::{DiskConfig, DiskTier};
use crate::cache::freshness::{Freshness, TtlDefaults, TtlOverride};
use crate::cache::key::CacheKey;
use crate::cache::purge::PurgeTarget;
use crate::cache::vary::Variant;
use crate::metrics::CacheMetrics;
use crate::response::head::ResponseHead;
use crate::units::ByteSize;

/// LL-HLS delivery directives: always part of the cache key.
pub const LL_HLS_PARAMS: [&str; 3] = ["_HLS_msn", "_HLS_part", "_HLS_skip"];

/// Whether a query asks for an LL-HLS blocking playlist reload
/// (`_HLS_msn`, RFC 8216bis §6.2.5.2).
pub fn is_blocking_reload(query: &str) -> bool {
    query.split('&').any(|p| p.starts_with("_HLS_msn="))
}

/// The `[cache]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Memory for cached objects, e.g. `"1GiB"`.
    pub size: ByteSize,
    /// Larger objects are streamed through to every waiting client but not
    /// stored. With `[cache.disk]` it may exceed `size`: objects larger
    /// than the memory tier live on disk only.
    pub max_object_size: ByteSize,
    /// Query parameters left out of the cache key and the upstream request
    /// (they do not change content), matched case-insensitively.
    pub ignore_params: Vec<String>,
    /// Lifetimes when the upstream sends no Cache-Control or Expires.
    pub ttl: TtlDefaults,
    /// Path prefixes where methods other than GET, HEAD and OPTIONS (POST,
    /// PUT, DELETE, PATCH, …) are proxied to the upstream, never cached nor
    /// coalesced (DRM licence requests such as the origin's `/drm/clearkey`);
    /// a success invalidates what the edge stored for that URL (RFC 9111
    /// §4.4). Elsewhere such methods get 405.
    pub pass_through: Vec<String>,
    /// `[[cache.ttl_overrides]]`: per-prefix lifetimes that win over the
    /// upstream's (see [`freshness::TtlOverrides`]); changeable at run time.
    pub ttl_overrides: Vec<TtlOverride>,
    /// `[cache.disk]`: a disk tier under the memory one; absent, memory only.
    pub disk: Option<DiskConfig>,
    /// `[cache.ll]`: low-latency delivery (LL-HLS part prefetch).
    pub ll: ll::LlConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            size: ByteSize(512 * 1024 * 1024),
            max_object_size: ByteSize(64 * 1024 * 1024),
            ignore_params: vec!["token".into(), "CMCD".into()],
            ttl: TtlDefaults::default(),
            pass_through: vec!["/drm/".into()],
            ttl_overrides: Vec::new(),
            disk: None,
            ll: ll::LlConfig::default(),
        }
    }
}

/// A complete response as stored.
#[derive(Clone, Debug)]
pub struct CachedObject {
    pub head: ResponseHead,
    pub body: Bytes,
    pub stored_at: Instant,
    /// `Age` the upstream reported when we received it.
    pub initial_age: Duration,
    pub freshness: Freshness,
    /// From `Surrogate-Key`, for purge by tag.
    pub surrogate_keys: Vec<String>,
    /// Which requests this response answers, when it has a `Vary`.
    pub variant: Option<Arc<Variant>>,
    /// The purge generation current when the fill that fetched it started
    /// (see [`purge`]): purges of a later generation select it.
    pub generation: u64,
}

/// Which tier answered a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    Memory,
    Disk,
}

/// Where a stored object stands now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Staleness {
    Fresh,
    /// Stale, but `stale-while-revalidate` still covers it.
    Revalidate,
    /// Stale; may only be served if the upstream fails (`stale-if-error`).
    IfError,
    /// Too old to serve at all.
    Expired,
}

impl CachedObject {
    pub fn resident(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.stored_at)
    }

    pub fn age(&self, now: Instant) -> Duration {
        self.initial_age + self.resident(now)
    }

    pub fn staleness(&self, now: Instant) -> Staleness {
        let resident = self.resident(now);
        let f = &self.freshness;
        if resident < f.ttl {
            Staleness::Fresh
        } else if resident < f.ttl + f.stale_while_revalidate {
            Staleness::Revalidate
        } else if resident < f.ttl + f.stale_if_error {
            Staleness::IfError
        } else {
            Staleness::Expired
        }
    }

    pub fn etag(&self) -> Option<&str> {
        self.head.header_str(http::header::ETAG)
    }

    pub fn last_modified(&self) -> Option<&str> {
        self.head.header_str(http::header::LAST_MODIFIED)
    }

    /// This object, stale from `now` on (soft purge): still a validator
    /// source and still servable under `stale-while-revalidate` and
    /// `stale-if-error`, counted from now.
    pub fn marked_stale(&self, now: Instant) -> CachedObject {
        let mut stale = self.clone();
        stale.freshness.ttl = stale.freshness.ttl.min(self.resident(now));
        stale
    }

    /// How long the cache keeps it (see [`retention`]).
    pub fn retention(&self) -> Duration {
        let validator = self.etag().is_some() || self.last_modified().is_some();
        retention(&self.freshness, validator)
    }

    /// Bytes this object costs the cache: its body's memory as stored (see
    /// [`body::footprint`]), its headers, and the entry itself.
    fn weight(&self) -> u32 {
        let headers: usize = self
            .head
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        u32::try_from(body::footprint(self.body.len()) + headers + 256).unwrap_or(u32::MAX)
    }
}

/// How long a stale object with a validator (`ETag`, `Last-Modified`) is
/// kept past its servable life, for a conditional request to revalidate;
/// size-based eviction still removes it first when memory is short.
pub const REVALIDATION_GRACE: Duration = Duration::from_secs(300);

/// How long a stored object is kept: while it can still be served (fresh,
/// or stale under swr/sie, so stale copies survive for `stale-if-error`),
/// and with a validator a [`REVALIDATION_GRACE`] longer.
pub fn retention(f: &Freshness, validator: bool) -> Duration {
    let servable = f.ttl + f.stale_while_revalidate.max(f.stale_if_error);
    // A stale copy with a validator still saves a body transfer: the
    // next request revalidates it (304) instead of fetching it again.
    let grace = if validator {
        REVALIDATION_GRACE
    } else {
        Duration::from_secs(1)
    };
    servable + grace
}

/// Objects kept for less than this are not written to disk: a live
/// playlist is replaced long before a disk write pays off.
pub const MIN_DISK_RETENTION: Duration = Duration::from_secs(10);

/// Keeps an entry in moka for its [`retention`].
struct ServableLifetime;

impl moka::Expiry<CacheKey, Arc<CachedObject>> for ServableLifetime {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CachedObject>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.retention())
    }
}

/// The disk tier, if one is configured.
#[derive(Clone)]
enum Disk {
    None,
    /// Configured, but it could not be opened: objects it would have
    /// stored are counted as dropped.
    Down,
    Up(Arc<DiskTier>),
}

/// moka applies inserts, and so evicts for them, in batches (64 writes, or
/// 300 ms, and only when the cache is used again): with 2 MiB segments that
/// is up to 128 MiB held beyond the cache size, for as long as the edge is
/// idle. The cache applies them itself once this share of its size has been
/// inserted since it last did.
const UNAPPLIED_SHARE: u64 = 32;

/// ... and at most this many bytes.
const UNAPPLIED_MAX: u64 = 8 * 1024 * 1024;

#[derive(Clone)]
pub struct Cache {
    objects: moka::future::Cache<CacheKey, Arc<CachedObject>>,
    capacity: u64,
    /// Bytes inserted since moka last applied its pending writes (roughly:
    /// moka may apply them on its own in between).
    unapplied: Arc<AtomicU64>,
    disk: Disk,
    metrics: Arc<CacheMetrics>,
}

impl Cache {
    pub fn new(capacity_bytes: u64, metrics: Arc<CacheMetrics>) -> Self {
        let evictions = metrics.clone();
        let counted = metrics.clone();
        let objects = moka::future::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|_key, value: &Arc<CachedObject>| value.weight())
            .expire_after(ServableLifetime)
            .support_invalidation_closures()
            .eviction_listener(move |_key, _value, cause| {
                if cause == RemovalCause::Size {
                    evictions.evictions.inc();
                }
            })
            .build();
        Cache {
            objects,
            capacity: capacity_bytes,
            unapplied: Arc::new(AtomicU64::new(0)),
            disk: Disk::None,
            metrics: counted,
        }
    }

    /// Put `disk` under the memory tier; `None` says one was configured
    /// but could not be opened.
    pub fn set_disk(&mut self, disk: Option<Arc<DiskTier>>) {
        self.disk = match disk {
            Some(disk) => Disk::Up(disk),
            None => Disk::Down,
        };
    }

    pub fn disk(&self) -> Option<&Arc<DiskTier>> {
        match &self.disk {
            Disk::Up(disk) => Some(disk),
            _ => None,
        }
    }

    /// The object stored under `key` and the tier it came from: memory,
    /// else disk (a disk hit goes back into memory if it fits).
    pub async fn get(&self, key: &CacheKey) -> Option<(Arc<CachedObject>, Tier)> {
        if let Some(object) = self.objects.get(key).await {
            return Some((object, Tier::Memory));
        }
        let Disk::Up(disk) = &self.disk else {
            return None;
        };
        let object = Arc::new(disk.get(key).await?);
        if u64::from(object.weight()) <= self.capacity {
            self.insert_memory(key.clone(), object.clone()).await;
            // A purge recorded while we read may have scanned memory
            // before the object landed there: look again.
            if disk.purged_since(key, &object) {
                self.objects.invalidate(key).await;
            }
        }
        Some((object, Tier::Disk))
    }

    /// Store `object`: in memory if it fits there, and on disk if there is
    /// one and the object is kept long enough to be worth writing.
    pub async fn insert(&self, key: CacheKey, object: Arc<CachedObject>) {
        match &self.disk {
            Disk::Up(disk) if object.retention() >= MIN_DISK_RETENTION => {
                disk.put(&key, &object);
            }
            Disk::Down if object.retention() >= MIN_DISK_RETENTION => {
                let reason = "unavailable";
                let labels = crate::metrics::ReasonLabels { reason };
                self.metrics.disk.dropped.get_or_create(&labels).inc();
            }
            _ => {}
        }
        if u64::from(object.weight()) <= self.capacity {
            self.insert_memory(key, object).await;
        }
    }

    /// Insert into the memory tier, and let moka evict for what was
    /// inserted once [`UNAPPLIED_SHARE`] of the size has been (see there).
    async fn insert_memory(&self, key: CacheKey, object: Arc<CachedObject>) {
        let weight = u64::from(object.weight());
        self.objects.insert(key, object).await;
        let budget = (self.capacity / UNAPPLIED_SHARE).min(UNAPPLIED_MAX);
        if self.unapplied.fetch_add(weight, Ordering::Relaxed) + weight >= budget {
            self.unapplied.store(0, Ordering::Relaxed);
            self.objects.run_pending_tasks().await;
        }
    }

    pub async fn remove(&self, key: &CacheKey) {
        self.objects.invalidate(key).await;
        if let Disk::Up(disk) = &self.disk {
            disk.remove(key);
        }
    }

    /// Write what the disk tier has queued, at shutdown.
    pub async fn close(&self) {
        if let Disk::Up(disk) = &self.disk {
            disk.close().await;
        }
    }

    /// Drop every object whose path starts with `prefix`, or that carries a
    /// surrogate key; takes effect for lookups immediately.
    pub fn purge_where(
        &self,
        predicate: impl Fn(&CacheKey, &CachedObject) -> bool + Send + Sync + 'static,
    ) {
        // Only fails when invalidation closures are not enabled, and they are.
        let _ = self
            .objects
            .invalidate_entries_if(move |key, value| predicate(key, value));
    }

    /// Drop the selected objects, or with `soft` mark them stale so they are
    /// revalidated on the next request (and may still serve stale-if-error).
    /// The disk tier learns of it as purge `generation` (and cannot count
    /// what it selects). Returns how many objects in memory were selected.
    pub async fn purge(&self, target: &PurgeTarget, soft: bool, generation: u64) -> usize {
        if let Disk::Up(disk) = &self.disk {
            disk.purge(generation, target, soft).await;
        }
        let selected: Vec<(CacheKey, Arc<CachedObject>)> = match target {
            PurgeTarget::Keys(keys) => {
                let mut found = Vec::new();
                for key in keys {
                    if let Some(object) = self.objects.get(key).await {
                        found.push((key.clone(), object));
                    }
                }
                // Other variants of a varying response sit under their own keys.
                if found.iter().any(|(_, object)| object.variant.is_some()) {
                    found.extend(
                        self.objects
                            .iter()
                            .filter(|(key, _)| key.is_variant() && target.matches(key, &[]))
                            .map(|(key, object)| (CacheKey::clone(&key), object)),
                    );
                }
                found
            }
            _ => self
                .objects
                .iter()
                .filter(|(key, object)| target.matches(key, &object.surrogate_keys))
                .map(|(key, object)| (CacheKey::clone(&key), object))
                .collect(),
        };
        let now = Instant::now();
        for (key, object) in &selected {
            if !soft {
                self.objects.invalidate(key).await;
            } else if object.staleness(now) == Staleness::Fresh {
                self.objects
                    .insert(key.clone(), Arc::new(object.marked_stale(now)))
                    .await;
            }
        }
        selected.len()
    }

    pub fn object_count(&self) -> u64 {
        self.objects.entry_count()
    }

    pub fn weighted_bytes(&self) -> u64 {
        self.objects.weighted_size()
    }

    /// Let moka apply pending evictions (tests and the metrics scrape use it).
    pub async fn sync(&self) {
        self.unapplied.store(0, Ordering::Relaxed);
        self.objects.run_pending_tasks().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(body: Bytes) -> CachedObject {
        CachedObject {
            head: ResponseHead::new(http::StatusCode::OK),
            body,
            stored_at: Instant::now(),
            initial_age: Duration::ZERO,
            freshness: Freshness {
                storable: true,
                ttl: Duration::from_secs(600),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
            },
            surrogate_keys: Vec::new(),
            variant: None,
            generation: 0,
        }
    }

    /// moka alone holds up to 64 inserted objects beyond its size until it
    /// is next used: 128 MiB of 2 MiB segments over a 64 MiB cache.
    #[tokio::test]
    async fn inserts_beyond_the_size_are_let_go_without_waiting_for_moka() {
        const MIB: usize = 1024 * 1024;
        let cache = Cache::new(64 * MIB as u64, Arc::new(CacheMetrics::default()));
        let mut bodies: Vec<Bytes> = Vec::new();
        for i in 0..100 {
            let body = Bytes::from(vec![i as u8; 2 * MIB]);
            let key = CacheKey::new(&format!("/seg/{i}.m4s"), None, &[]);
            cache.insert(key, Arc::new(object(body.clone()))).await;
            bodies.push(body);
        }
        // Nothing else touches the cache: whatever it still holds now, it
        // would hold while the edge is idle.
        let held: usize = bodies
            .iter()
            .map(|b| usize::from(!b.is_unique()) * b.len())
            .sum();
        let budget = 64 * MIB + UNAPPLIED_MAX as usize + 2 * MIB;
        assert!(held <= budget, "{} MiB held", held / MIB);
    }
}
