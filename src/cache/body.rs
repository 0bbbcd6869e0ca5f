//! Memory for stored bodies: sized to the body, and given back to the
//! operating system when the last reader and the cache let go of it.
//!
//! A fill's bytes arrive as the upstream client read them: slices of its
//! read buffer, which may be far larger than the slice and is shared with
//! the slices around it. Stored as they are, a 1 KiB playlist can keep a
//! 400 KiB buffer alive, and the cache's size says nothing of it. So what the
//! cache stores is a copy in memory of its own ([`StoredBody`]):
//!
//! - from [`MAPPED_MIN`] up, an anonymous mapping of its own, rounded to
//!   pages and unmapped when the object is dropped: an evicted segment
//!   leaves the process's RSS at once, instead of staying with the allocator
//!   (mimalloc keeps freed pages for a while and reuses them only for the
//!   sizes and threads that freed them);
//! - below, one exact-size heap allocation.
//!
//! [`footprint`] is what a body of a given length costs this way, and what
//! the cache weighs it at.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;

/// Bodies from this size up get a mapping of their own (glibc's default
/// `M_MMAP_THRESHOLD`; a media segment is larger, a playlist smaller).
pub const MAPPED_MIN: usize = 128 * 1024;

/// At most this many bodies live in mappings at once; past it, the heap.
/// Each mapping may be a VMA of its own, and Linux refuses more than
/// `vm.max_map_count` (65,530 by default) per process.
pub const MAPPED_MAX: usize = 30_000;

/// Bodies in mappings now.
static MAPPED: AtomicUsize = AtomicUsize::new(0);

/// How many stored bodies live in mappings of their own.
pub fn mapped_bodies() -> usize {
    MAPPED.load(Ordering::Relaxed)
}

/// Bytes of memory a stored body of `len` bytes holds: page-rounded for a
/// mapping, and for the heap up to the allocator's size class (mimalloc has
/// four classes per power of two, so at most a quarter more); above
/// [`MAPPED_MIN`] it is rounded to 64 KiB, mimalloc's granularity for large
/// blocks, which covers a body that fell back to the heap.
pub fn footprint(len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    if len >= MAPPED_MIN {
        return len.div_ceil(64 * 1024) * (64 * 1024);
    }
    if len <= 64 {
        return len.div_ceil(8) * 8;
    }
    let class = (1usize << (usize::BITS - 1 - len.leading_zeros())) / 4;
    len.div_ceil(class) * class
}

/// A mapping that counts itself in [`MAPPED`] while it lives.
struct Mapped(memmap2::MmapMut);

impl AsRef<[u8]> for Mapped {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        MAPPED.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Memory {
    Mapped(Mapped),
    Heap(Vec<u8>),
}

/// A body being written into memory of its own; [`StoredBody::freeze`]
/// makes it the stored `Bytes`.
pub struct StoredBody {
    memory: Memory,
}

impl StoredBody {
    /// Zeroed memory for a body of exactly `len` bytes.
    pub fn new(len: usize) -> StoredBody {
        if len >= MAPPED_MIN && MAPPED.load(Ordering::Relaxed) < MAPPED_MAX {
            match memmap2::MmapMut::map_anon(len) {
                Ok(map) => {
                    MAPPED.fetch_add(1, Ordering::Relaxed);
                    return StoredBody {
                        memory: Memory::Mapped(Mapped(map)),
                    };
                }
                Err(e) => tracing::debug!("a stored body goes to the heap: mmap failed: {e}"),
            }
        }
        StoredBody {
            memory: Memory::Heap(vec![0; len]),
        }
    }

    /// A copy of `chunks` (`len` bytes in all) in memory of its own.
    pub fn joined(chunks: &[Bytes], len: usize) -> Bytes {
        let mut body = StoredBody::new(len);
        let mut at = 0;
        let dst = body.bytes_mut();
        for chunk in chunks {
            let Some(to) = dst.get_mut(at..at + chunk.len()) else {
                break;
            };
            to.copy_from_slice(chunk);
            at += chunk.len();
        }
        debug_assert_eq!(at, len, "chunks add up to the length");
        body.freeze()
    }

    /// The body's bytes, to fill in.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        match &mut self.memory {
            Memory::Mapped(Mapped(map)) => &mut map[..],
            Memory::Heap(vec) => &mut vec[..],
        }
    }

    /// Whether the body has a mapping of its own.
    pub fn is_mapped(&self) -> bool {
        matches!(self.memory, Memory::Mapped(_))
    }

    pub fn freeze(self) -> Bytes {
        match self.memory {
            Memory::Mapped(mapped) => Bytes::from_owner(mapped),
            Memory::Heap(vec) => Bytes::from(vec),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_bodies_are_mapped_small_ones_exact_and_both_read_back() {
        let chunks: Vec<Bytes> = (0..5u8).map(|i| Bytes::from(vec![i; 100_000])).collect();
        assert!(StoredBody::new(500_000).is_mapped());
        assert!(!StoredBody::new(MAPPED_MIN - 1).is_mapped());
        let large = StoredBody::joined(&chunks, 500_000);
        assert_eq!(large.len(), 500_000);
        assert_eq!(large[0], 0);
        assert_eq!(large[499_999], 4);
        let slice = large.slice(199_999..200_001);
        drop(large);
        assert_eq!(&slice[..], &[1, 2], "a slice keeps its mapping alive");
        let small = StoredBody::joined(&chunks[..1], 100_000);
        assert_eq!(small, chunks[0]);
    }

    #[test]
    fn footprints_cover_the_allocation() {
        assert_eq!(footprint(0), 0);
        assert_eq!(footprint(1), 8);
        assert_eq!(footprint(1000), 1024);
        assert_eq!(footprint(1025), 1280);
        assert_eq!(footprint(2 * 1024 * 1024), 2 * 1024 * 1024);
        assert_eq!(footprint(2 * 1024 * 1024 + 1), 2 * 1024 * 1024 + 64 * 1024);
        for len in [65, 100, 5000, 127 * 1024, 129 * 1024, 3_000_000] {
            let f = footprint(len);
            assert!(f >= len && f <= len + len / 4 + 64 * 1024, "{len}: {f}");
        }
    }
}
