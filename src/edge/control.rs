//! What the control API changes on a running edge: purges (which also reach
//! fills in flight) and per-prefix TTL overrides.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::fill::Fill;
use crate::cache::freshness::{InvalidOverride, TtlOverride, TtlOverrides};
use crate::cache::key::CacheKey;
use crate::cache::purge::PurgeTarget;
use crate::cache::CachedObject;
use crate::error::EdgeError;
use crate::request::path;
use crate::response::ResponseHead;

use super::Edge;

/// The `Surrogate-Key` header's space-separated tags.
pub(super) fn surrogate_keys(head: &ResponseHead) -> Vec<String> {
    head.header_str("surrogate-key")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

impl Edge {
    /// Drop (or with `soft`, mark stale) what `target` selects; returns how
    /// many cached objects it selected. Fills that began before the purge
    /// keep feeding the clients already reading them, but nobody joins them
    /// any more and what they fetched is not stored.
    pub async fn purge(&self, target: PurgeTarget, soft: bool) -> usize {
        let generation = self.purges.record(target.clone());
        self.inflight.retain(|key, fill| {
            if fill.generation() >= generation {
                return true;
            }
            let selected = match fill.head_now() {
                Some(head) => target.matches(key, &surrogate_keys(&head)),
                None => target.may_match_unknown_tags(key),
            };
            !selected
        });
        self.cache.purge(&target, soft, generation).await
    }

    /// Store what a fill fetched, unless a purge newer than the fill selects it.
    pub(super) async fn store_unless_purged(
        &self,
        key: &CacheKey,
        object: Arc<CachedObject>,
        fill: &Fill,
    ) {
        let started = fill.generation();
        if self
            .purges
            .purged_since(started, key, &object.surrogate_keys)
        {
            return;
        }
        let tags = object.surrogate_keys.clone();
        self.cache.insert(key.clone(), object).await;
        // A purge recorded while we stored may have scanned the cache before
        // the object landed: look again.
        if self.purges.purged_since(started, key, &tags) {
            self.cache.remove(key).await;
        }
    }

    /// The cache key a URL (`http://host/path?q`) or path (`/path?q`) is
    /// stored under.
    pub fn cache_key_for(&self, url: &str) -> Result<CacheKey, EdgeError> {
        let not_a_url = || EdgeError::NotAUrl(url.to_owned());
        let uri: http::Uri = url.parse().map_err(|_| not_a_url())?;
        if uri.path().is_empty() || (uri.scheme().is_none() && !url.starts_with('/')) {
            return Err(not_a_url());
        }
        let path = path::canonical(uri.path())?;
        Ok(CacheKey::new(
            &path,
            uri.query(),
            &self.cache_config.ignore_params,
        ))
    }

    pub(super) fn ttl_override(&self, key: &CacheKey) -> Option<Duration> {
        self.ttl_overrides.read().lookup(key.path())
    }

    /// The TTL overrides in force.
    pub fn ttl_overrides(&self) -> Arc<TtlOverrides> {
        self.ttl_overrides.read().clone()
    }

    /// Replace the TTL overrides, all or nothing; errors name keys like
    /// `overrides[1].prefix`.
    pub fn set_ttl_overrides(
        &self,
        entries: &[TtlOverride],
        at: &str,
    ) -> Result<Arc<TtlOverrides>, InvalidOverride> {
        let next = Arc::new(TtlOverrides::new(entries, at)?);
        *self.ttl_overrides.write() = next.clone();
        Ok(next)
    }
}
