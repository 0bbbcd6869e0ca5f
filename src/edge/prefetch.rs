//! LL-HLS part prefetch: when a media playlist passes through this node
//! (a blocking reload's answer or a plain one), start the fills for the
//! parts a player is about to ask for ([`crate::cache::ll`]), so its
//! requests are hits or join a fill already under way instead of each
//! waiting for a miss through every tier. Each prefetch is an ordinary
//! coalesced fill: one upstream request per part, whoever asks first.
//! `[cache.ll] prefetch_parts` turns it off; `prefetch_max` caps it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap};
use parking_lot::Mutex;
use tokio::time::Instant;

use super::Edge;
use crate::cache::inflight::Joined;
use crate::cache::key::CacheKey;
use crate::cache::ll::{parts_to_prefetch, resolve};
use crate::cache::Staleness;
use crate::metrics::OutcomeLabels;
use crate::request::ObjectKind;

/// How long a part stays remembered: prefetched and not asked for by then,
/// it counts as wasted.
const REMEMBERED: Duration = Duration::from_secs(60);

/// At most this many parts remembered; past it, no new prefetch starts
/// until old ones age out (a bound on memory whatever the playlists say).
const MAX_REMEMBERED: usize = 4096;

/// Parts this node has lately prefetched or found already there, so a
/// playlist reloaded every part does not look them up again, and a
/// client's request for a prefetched part counts as a hit.
#[derive(Default)]
pub(super) struct Prefetched {
    parts: Mutex<HashMap<CacheKey, Remembered>>,
    /// Prefetched parts nobody asked for yet: while zero, a client's
    /// request costs one atomic load here.
    unclaimed: AtomicUsize,
}

struct Remembered {
    at: Instant,
    /// Fetched by a prefetch and not asked for yet.
    unclaimed: bool,
}

impl Prefetched {
    /// Forget parts older than [`REMEMBERED`]; returns how many of them
    /// were prefetched for nothing.
    fn sweep(parts: &mut HashMap<CacheKey, Remembered>, now: Instant) -> usize {
        let mut wasted = 0;
        parts.retain(|_, r| {
            let keep = now.saturating_duration_since(r.at) < REMEMBERED;
            if !keep && r.unclaimed {
                wasted += 1;
            }
            keep
        });
        wasted
    }

    /// A client asked for `key`: whether that is a prefetch's first hit.
    pub(super) fn claim(&self, key: &CacheKey) -> bool {
        if self.unclaimed.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let mut parts = self.parts.lock();
        match parts.get_mut(key) {
            Some(r) if r.unclaimed => {
                r.unclaimed = false;
                self.unclaimed.fetch_sub(1, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    }
}

/// What a prefetch does for one part.
enum Plan {
    /// Looked at lately: nothing to do.
    Known,
    /// The table is full.
    Full,
    Check,
}

impl Edge {
    /// Start fills for the parts of the LL-HLS playlist `body` (fetched for
    /// `playlist`) a player is about to load; `via` and `headers` are the
    /// playlist fill's (its leader's request headers).
    pub(super) async fn prefetch_parts(
        self: &Arc<Self>,
        playlist: &CacheKey,
        body: &Bytes,
        via: &[String],
        headers: &HeaderMap,
    ) {
        let ll = &self.cache_config.ll;
        // Credentials: the parts may be that viewer's alone (RFC 9111 §3.5).
        if !ll.prefetch_parts || headers.contains_key(header::AUTHORIZATION) {
            return;
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return;
        };
        let uris = parts_to_prefetch(text, ll.prefetch_max);
        if uris.is_empty() {
            return;
        }
        let counter = |outcome: &'static str| {
            self.metrics
                .requests
                .ll_prefetches
                .get_or_create(&OutcomeLabels { outcome })
                .inc();
        };
        let wasted = Prefetched::sweep(&mut self.prefetched.parts.lock(), Instant::now());
        if wasted > 0 {
            self.prefetched
                .unclaimed
                .fetch_sub(wasted, Ordering::Relaxed);
            self.metrics
                .requests
                .ll_prefetches
                .get_or_create(&OutcomeLabels { outcome: "wasted" })
                .inc_by(wasted as u64);
        }
        for uri in uris {
            let Some((path, query)) = resolve(playlist.path(), &uri) else {
                continue;
            };
            let Ok(path) = crate::request::path::canonical(&path) else {
                continue;
            };
            let key = CacheKey::new(&path, query.as_deref(), &self.cache_config.ignore_params);
            let plan = {
                let parts = self.prefetched.parts.lock();
                if parts.contains_key(&key) {
                    Plan::Known
                } else if parts.len() >= MAX_REMEMBERED {
                    Plan::Full
                } else {
                    Plan::Check
                }
            };
            match plan {
                Plan::Known => continue,
                Plan::Full => {
                    counter("dropped");
                    break;
                }
                Plan::Check => {}
            }
            let now = Instant::now();
            let cached = self
                .cache
                .get(&key)
                .await
                .is_some_and(|(o, _)| o.staleness(now) == Staleness::Fresh);
            if cached {
                counter("cached");
            }
            let joined = (!cached).then(|| self.inflight.join(&key, self.purges.generation()));
            if matches!(joined, Some(Joined::Follower(_))) {
                counter("inflight");
            }
            let permit = match joined {
                Some(Joined::Leader(permit)) => Some(permit),
                _ => None,
            };
            // Remembered before the fill starts, so a client that asks at
            // once counts as a hit.
            let unclaimed = permit.is_some();
            let previous = self
                .prefetched
                .parts
                .lock()
                .insert(key, Remembered { at: now, unclaimed });
            if unclaimed {
                self.prefetched.unclaimed.fetch_add(1, Ordering::Relaxed);
            }
            if previous.is_some_and(|p| p.unclaimed) {
                self.prefetched.unclaimed.fetch_sub(1, Ordering::Relaxed);
            }
            if let Some(permit) = permit {
                counter("started");
                let kind = ObjectKind::from_path(&path);
                self.spawn_fill(permit, kind, via.to_vec(), headers.clone(), None);
            }
        }
    }

    /// Count a client's request for a part a prefetch fetched.
    pub(super) fn note_prefetch_hit(&self, key: &CacheKey) {
        if self.prefetched.claim(key) {
            self.metrics
                .requests
                .ll_prefetches
                .get_or_create(&OutcomeLabels { outcome: "hit" })
                .inc();
        }
    }
}
