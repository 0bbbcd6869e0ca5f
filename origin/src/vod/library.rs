//! The VOD library on disk: path checks against the root, the bounded cache
//! of parsed indexes, and the reads a segment needs (positioned reads of
//! exactly its samples' byte ranges). Blocking: callers run it on tokio's
//! blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::http::VodMetrics;
use super::mp4::{self, IndexLimits, Mp4Error, Mp4Index};
use super::plan::{self, PlannedSegment, TrackPlan};
use super::{manifest, VodConfig, VodError, VodObject, VodRequest};
use crate::package::{Rendered, AUDIO_TRACK_ID, VIDEO_TRACK_ID};

/// Manifests may change when a title's file is replaced; media segments of a
/// file are stable while it is (replacing a title in place needs a purge).
const MANIFEST_CACHE_CONTROL: &str = "public, max-age=60";
const MEDIA_CACHE_CONTROL: &str = "public, max-age=86400";

/// One title, indexed and planned.
#[derive(Debug)]
pub struct Title {
    pub path: PathBuf,
    pub file_len: u64,
    pub modified: Option<SystemTime>,
    pub index: Mp4Index,
    pub plans: Vec<TrackPlan>,
    pub target_duration: f64,
}

impl Title {
    fn plan(&self, track: u32) -> Option<(&mp4::TrackIndex, &TrackPlan)> {
        let t = self.index.track(track)?;
        let p = self.plans.iter().find(|p| p.track_id == track)?;
        Some((t, p))
    }
}

pub struct Library {
    root: PathBuf,
    config: VodConfig,
    limits: IndexLimits,
    // Held only for a lookup or an insert, never across I/O or `.await`.
    cache: Mutex<IndexCache>,
    pub metrics: VodMetrics,
}

#[derive(Default)]
struct IndexCache {
    entries: HashMap<PathBuf, CacheEntry>,
    bytes: u64,
    clock: u64,
}

struct CacheEntry {
    title: Arc<Title>,
    weight: u64,
    last_used: u64,
}

impl Library {
    pub fn new(config: VodConfig, metrics: VodMetrics) -> Result<Library, String> {
        config.validate()?;
        let root = std::fs::canonicalize(&config.root)
            .map_err(|e| format!("vod.root: {}: {e}", config.root.display()))?;
        Ok(Library {
            root,
            limits: IndexLimits {
                max_moov_bytes: config.max_moov_bytes,
                ..IndexLimits::default()
            },
            config,
            cache: Mutex::new(IndexCache::default()),
            metrics,
        })
    }

    /// The file a title names, canonical (symbolic links resolved) and inside
    /// the root; anything else is "not found", so probing learns nothing.
    pub fn resolve(&self, title: &Path) -> Result<PathBuf, VodError> {
        let joined = self.root.join(title);
        let canonical = std::fs::canonicalize(&joined).map_err(|_| VodError::NotFound)?;
        if !canonical.starts_with(&self.root) {
            tracing::warn!(title = %title.display(), "VOD path leads outside the library root");
            self.metrics.error("outside_root");
            return Err(VodError::NotFound);
        }
        if !canonical.is_file() {
            return Err(VodError::NotFound);
        }
        Ok(canonical)
    }

    /// The title's index and plan: from the cache while the file's size and
    /// modification time are unchanged, else parsed from its `moov`.
    pub fn title(&self, title: &Path) -> Result<Arc<Title>, VodError> {
        let path = self.resolve(title)?;
        let file = File::open(&path).map_err(|_| VodError::NotFound)?;
        let meta = file.metadata().map_err(VodError::Io)?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        {
            let mut cache = self.cache.lock().expect("not poisoned");
            cache.clock += 1;
            let now = cache.clock;
            if let Some(entry) = cache.entries.get_mut(&path) {
                if entry.title.file_len == len && entry.title.modified == modified {
                    entry.last_used = now;
                    self.metrics.cache("hit");
                    return Ok(entry.title.clone());
                }
            }
        }
        self.metrics.cache("miss");
        let moov =
            mp4::locate_moov(len, &self.limits, |at, n| read_upto(&file, at, n)).map_err(|e| {
                match e {
                    mp4::LocateError::Mp4(e) => VodError::Mp4(e),
                    mp4::LocateError::Io(e) => VodError::Io(e),
                }
            })?;
        let mut body = vec![0u8; (moov.end - moov.start) as usize];
        file.read_exact_at(&mut body, moov.start)
            .map_err(VodError::Io)?;
        self.metrics.bytes_read.inc_by(body.len() as u64);
        let index = match mp4::parse_moov(&body, &self.limits) {
            Err(Mp4Error::Fragmented) => self.index_fragments(&file, len, &body)?,
            other => other?,
        };
        for t in &index.tracks {
            if let Some(s) = t
                .samples
                .iter()
                .find(|s| s.offset + u64::from(s.size) > len)
            {
                return Err(Mp4Error::Corrupt(format!(
                    "track {}: a sample at byte {} lies past the end of the file ({len} bytes): truncated?",
                    t.track_id, s.offset
                ))
                .into());
            }
        }
        let plans = plan::plan(&index, self.config.segment_duration);
        let title = Arc::new(Title {
            path: path.clone(),
            file_len: len,
            modified,
            target_duration: self.config.segment_duration.as_secs_f64(),
            index,
            plans,
        });
        self.remember(path, title.clone());
        Ok(title)
    }

    /// A fragmented MP4: every `moof` is read (one read each) and indexed.
    fn index_fragments(&self, file: &File, len: u64, moov: &[u8]) -> Result<Mp4Index, VodError> {
        let moofs =
            super::fragments::locate_moofs(len, &self.limits, |at, n| read_upto(file, at, n))
                .map_err(|e| match e {
                    mp4::LocateError::Mp4(e) => VodError::Mp4(e),
                    mp4::LocateError::Io(e) => VodError::Io(e),
                })?;
        let mut boxes = Vec::with_capacity(moofs.len());
        for range in moofs {
            let mut body = vec![0u8; (range.end - range.start) as usize];
            file.read_exact_at(&mut body, range.start)
                .map_err(VodError::Io)?;
            self.metrics.bytes_read.inc_by(body.len() as u64);
            boxes.push((range.start, body));
        }
        Ok(super::fragments::parse_fragmented(
            moov,
            &boxes,
            &self.limits,
        )?)
    }

    fn remember(&self, path: PathBuf, title: Arc<Title>) {
        let weight = title.index.weight() as u64;
        let mut cache = self.cache.lock().expect("not poisoned");
        cache.clock += 1;
        let last_used = cache.clock;
        if let Some(old) = cache.entries.insert(
            path,
            CacheEntry {
                title,
                weight,
                last_used,
            },
        ) {
            cache.bytes -= old.weight;
        }
        cache.bytes += weight;
        while cache.entries.len() > self.config.index_cache_entries
            || (cache.bytes > self.config.index_cache_bytes && cache.entries.len() > 1)
        {
            let Some(oldest) = cache
                .entries
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(p, _)| p.clone())
            else {
                break;
            };
            if let Some(gone) = cache.entries.remove(&oldest) {
                cache.bytes -= gone.weight;
                self.metrics.cache("evict");
            }
        }
    }

    /// Indexes held in the cache and their bytes.
    pub fn cached(&self) -> (usize, u64) {
        let cache = self.cache.lock().expect("not poisoned");
        (cache.entries.len(), cache.bytes)
    }

    /// The response for one request.
    pub fn render(&self, request: &VodRequest) -> Result<Rendered, VodError> {
        let title = self.title(&request.title)?;
        match request.object {
            VodObject::Master => Ok(Rendered::new(
                manifest::master(&title).into(),
                "application/vnd.apple.mpegurl",
                MANIFEST_CACHE_CONTROL.into(),
            )),
            VodObject::Manifest => Ok(Rendered::new(
                manifest::mpd(&title).into(),
                "application/dash+xml",
                MANIFEST_CACHE_CONTROL.into(),
            )),
            VodObject::MediaPlaylist { track } => {
                let (t, p) = title.plan(track).ok_or(VodError::NotFound)?;
                Ok(Rendered::new(
                    manifest::media_playlist(t, p).into(),
                    "application/vnd.apple.mpegurl",
                    MANIFEST_CACHE_CONTROL.into(),
                ))
            }
            VodObject::Init { track } => {
                let (t, _) = title.plan(track).ok_or(VodError::NotFound)?;
                let (track_id, content_type) = output_track(t);
                Ok(Rendered::new(
                    crate::media::fmp4::init_segment(track_id, &t.params),
                    content_type,
                    MEDIA_CACHE_CONTROL.into(),
                ))
            }
            VodObject::Fragment { track, number } => {
                let (t, p) = title.plan(track).ok_or(VodError::NotFound)?;
                let segment = p
                    .segments
                    .get(number as usize - 1)
                    .ok_or(VodError::NotFound)?;
                let data = self.read_samples(&title, t, segment)?;
                let samples = plan::segment_samples(t, segment, data)?;
                let (track_id, content_type) = output_track(t);
                Ok(Rendered::new(
                    crate::media::fmp4::media_segment(number, track_id, segment.start, &samples),
                    content_type,
                    MEDIA_CACHE_CONTROL.into(),
                ))
            }
        }
    }

    /// Each sample's bytes, read as runs of adjacent samples (one positioned
    /// read per chunk of the file, usually a handful per segment).
    fn read_samples(
        &self,
        title: &Title,
        track: &mp4::TrackIndex,
        segment: &PlannedSegment,
    ) -> Result<Vec<Bytes>, VodError> {
        let file = File::open(&title.path).map_err(VodError::Io)?;
        let entries = &track.samples[segment.first..segment.end];
        let mut out = Vec::with_capacity(entries.len());
        let mut i = 0;
        while i < entries.len() {
            let start = entries[i].offset;
            let mut end = start + u64::from(entries[i].size);
            let mut j = i + 1;
            while j < entries.len() && entries[j].offset == end {
                end += u64::from(entries[j].size);
                j += 1;
            }
            let mut run = vec![0u8; (end - start) as usize];
            file.read_exact_at(&mut run, start).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    // The file shrank since it was indexed.
                    VodError::Mp4(Mp4Error::Corrupt(format!(
                        "samples at bytes {start}..{end} lie past the end of the file"
                    )))
                } else {
                    VodError::Io(e)
                }
            })?;
            self.metrics.bytes_read.inc_by(run.len() as u64);
            let run = Bytes::from(run);
            for e in &entries[i..j] {
                let at = (e.offset - start) as usize;
                out.push(run.slice(at..at + e.size as usize));
            }
            i = j;
        }
        Ok(out)
    }
}

/// Track ID and content type inside the CMAF files (one track per file, as live).
fn output_track(track: &mp4::TrackIndex) -> (u32, &'static str) {
    match track.kind() {
        crate::media::TrackKind::Video => (VIDEO_TRACK_ID, "video/mp4"),
        crate::media::TrackKind::Audio => (AUDIO_TRACK_ID, "audio/mp4"),
    }
}

/// Up to `n` bytes at `at` (fewer at the end of the file).
fn read_upto(file: &File, at: u64, n: usize) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match file.read_at(&mut buf[got..], at + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}
