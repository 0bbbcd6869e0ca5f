//! The VOD library: path checks against the root, the bounded cache of
//! parsed indexes, and the reads a segment needs (exactly its samples' byte
//! ranges), from a local file or a remote store ([`super::source`]).
//! Blocking: callers run it on tokio's blocking pool.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;

use super::http::VodMetrics;
use super::mp4::{self, IndexLimits, Mp4Error, Mp4Index};
use super::plan::{self, PlannedSegment, TrackPlan};
use super::presentation::{Presentation, Rendition, SubtitleRendition};
use super::remote::{RemoteError, RemoteObject, RemoteStore};
use super::set::{self, SetError};
use super::source::{self, Source};
use super::{manifest, subtitles, VodConfig, VodError, VodObject, VodRequest};
use crate::media::TrackKind;
use crate::package::{Rendered, AUDIO_TRACK_ID, VIDEO_TRACK_ID};

/// Manifests may change when a title's file is replaced; media segments of a
/// file are stable while it is (replacing a title in place needs a purge).
const MANIFEST_CACHE_CONTROL: &str = "public, max-age=60";
const MEDIA_CACHE_CONTROL: &str = "public, max-age=86400";

/// Largest subtitle side file read.
const MAX_SUBTITLE_BYTES: u64 = 8 << 20;

/// One title, indexed and planned.
#[derive(Debug)]
pub struct Title {
    pub path: PathBuf,
    pub file_len: u64,
    pub modified: Option<SystemTime>,
    pub index: Mp4Index,
    pub plans: Vec<TrackPlan>,
    pub target_duration: f64,
    /// The object a remote title is read from (`path` is then the request's
    /// path, `{prefix}/{key}`); `None` for a file under the root.
    pub remote: Option<Arc<RemoteObject>>,
}

pub struct Library {
    /// Canonical; `None`: remote stores only.
    root: Option<PathBuf>,
    config: VodConfig,
    limits: IndexLimits,
    // Held only for a lookup or an insert, never across I/O or `.await`.
    cache: Mutex<IndexCache>,
    stores: Vec<Arc<RemoteStore>>,
    thumbnails: super::thumbnail::Thumbnails,
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
    /// When a remote title's object was last looked at.
    checked: tokio::time::Instant,
}

impl Library {
    pub fn new(config: VodConfig, metrics: VodMetrics) -> Result<Library, String> {
        config.validate()?;
        let root = match &config.root {
            Some(root) => Some(
                std::fs::canonicalize(root)
                    .map_err(|e| format!("vod.root: {}: {e}", root.display()))?,
            ),
            None => None,
        };
        let stores = config
            .remote
            .iter()
            .map(|c| RemoteStore::new(c.clone(), metrics.remote.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Library {
            stores,
            thumbnails: super::thumbnail::Thumbnails::new(
                config.thumbnails.clone(),
                metrics.thumbnails.clone(),
            ),
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
        // Remote stores only: a path outside every prefix names nothing.
        let root = self.root.as_ref().ok_or(VodError::NotFound)?;
        let joined = root.join(title);
        let canonical = std::fs::canonicalize(&joined).map_err(|_| VodError::NotFound)?;
        if !canonical.starts_with(root) {
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
        if let Some((store, key)) = source::remote_key(&self.stores, title) {
            return self.remote_title(title, store.clone(), &key);
        }
        let path = self.resolve(title)?;
        let file = File::open(&path).map_err(|_| VodError::NotFound)?;
        let meta = file.metadata().map_err(VodError::Io)?;
        let (len, modified) = (meta.len(), meta.modified().ok());
        if let Some(hit) = self.lookup(&path, false, |e| {
            e.title.file_len == len && e.title.modified == modified
        }) {
            return Ok(hit);
        }
        self.metrics.cache("miss");
        self.index(path, len, modified, Source::Local(file))
    }

    /// A remote title: from the cache for `revalidate` after its object was
    /// last looked at; then its first bytes are read again and it is
    /// indexed again only if the object's ETag or size changed.
    fn remote_title(
        &self,
        title: &Path,
        store: Arc<RemoteStore>,
        key: &str,
    ) -> Result<Arc<Title>, VodError> {
        let path = title.to_owned();
        let revalidate = store.config.revalidate;
        if let Some(hit) = self.lookup(&path, false, |e| e.checked.elapsed() < revalidate) {
            return Ok(hit);
        }
        let object = RemoteObject::open(store, key).map_err(|e| match e {
            RemoteError::NotFound { .. } => VodError::NotFound,
            e => e.into(),
        })?;
        if object.etag.is_some() {
            let same = |e: &CacheEntry| {
                e.title
                    .remote
                    .as_ref()
                    .is_some_and(|r| r.etag == object.etag && r.len == object.len)
            };
            if let Some(hit) = self.lookup(&path, true, same) {
                return Ok(hit);
            }
        }
        self.metrics.cache("miss");
        self.index(path, object.len, None, Source::Remote(Arc::new(object)))
    }

    /// The cached title under `path` if `fresh` says it still stands
    /// (`revalidated`: it was just checked against its source).
    fn lookup(
        &self,
        path: &Path,
        revalidated: bool,
        fresh: impl Fn(&CacheEntry) -> bool,
    ) -> Option<Arc<Title>> {
        let mut cache = self.cache.lock().expect("not poisoned");
        cache.clock += 1;
        let now = cache.clock;
        let entry = cache.entries.get_mut(path).filter(|e| fresh(e))?;
        entry.last_used = now;
        if revalidated {
            entry.checked = tokio::time::Instant::now();
        }
        self.metrics.cache("hit");
        Some(entry.title.clone())
    }

    /// Drops a title's index (its remote object changed under it).
    fn forget(&self, path: &Path) {
        let mut cache = self.cache.lock().expect("not poisoned");
        if let Some(gone) = cache.entries.remove(path) {
            cache.bytes -= gone.weight;
            self.metrics.cache("evict");
        }
    }

    /// Indexes and plans a title from its `moov` (and `moof`s), read
    /// through `source`, and keeps it in the cache under `path`.
    fn index(
        &self,
        path: PathBuf,
        len: u64,
        modified: Option<SystemTime>,
        source: Source,
    ) -> Result<Arc<Title>, VodError> {
        let moov = mp4::locate_moov(len, &self.limits, |at, n| source.read_upto(at, n))
            .map_err(locate_error)?;
        let body = source
            .read_upto(moov.start, (moov.end - moov.start) as usize)
            .map_err(source::from_io)?;
        if body.len() as u64 != moov.end - moov.start {
            return Err(Mp4Error::Corrupt("moov ends past the end of the file".into()).into());
        }
        self.metrics.bytes_read.inc_by(body.len() as u64);
        let index = match mp4::parse_moov(&body, &self.limits) {
            Err(Mp4Error::Fragmented) => self.index_fragments(&source, len, &body)?,
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
            remote: match source {
                Source::Remote(object) => Some(object),
                Source::Local(_) => None,
            },
        });
        self.remember(path, title.clone());
        Ok(title)
    }

    /// A fragmented MP4: every `moof` is read (one read each) and indexed.
    fn index_fragments(
        &self,
        source: &Source,
        len: u64,
        moov: &[u8],
    ) -> Result<Mp4Index, VodError> {
        let moofs =
            super::fragments::locate_moofs(len, &self.limits, |at, n| source.read_upto(at, n))
                .map_err(locate_error)?;
        let mut boxes = Vec::with_capacity(moofs.len());
        for range in moofs {
            let want = (range.end - range.start) as usize;
            let body = source
                .read_upto(range.start, want)
                .map_err(source::from_io)?;
            if body.len() != want {
                return Err(Mp4Error::Corrupt("moof ends past the end of the file".into()).into());
            }
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
                checked: tokio::time::Instant::now(),
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

    /// What `{path}` presents: a plain MP4's tracks, or a set's files.
    pub fn presentation(&self, title: &Path) -> Result<Presentation, VodError> {
        let is_set = title
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"));
        if is_set {
            self.set_presentation(title)
        } else {
            Ok(Presentation::single(self.title(title)?))
        }
    }

    /// Reads and checks a set file, then indexes (or finds in the cache)
    /// every MP4 it names.
    fn set_presentation(&self, title: &Path) -> Result<Presentation, VodError> {
        // A set on a remote store names objects beside it on that store
        // (`dir` relative, under the store's prefix); a local one, files
        // beside it under the root (`dir` canonical).
        let remote = source::remote_key(&self.stores, title).is_some();
        let too_big = || SetError::Malformed(format!("over {} bytes", set::MAX_SET_BYTES));
        let (bytes, dir) = if remote {
            let bytes = self
                .read_remote_small(title, set::MAX_SET_BYTES)?
                .ok_or_else(too_big)?;
            (bytes, title.parent().unwrap_or(Path::new("")).to_owned())
        } else {
            let path = self.resolve(title)?;
            let bytes = read_small(&path, set::MAX_SET_BYTES)
                .map_err(VodError::Io)?
                .ok_or_else(too_big)?;
            let dir = path.parent().ok_or(VodError::NotFound)?.to_owned();
            (bytes, dir)
        };
        self.metrics.bytes_read.inc_by(bytes.len() as u64);
        let media_set = set::parse(&bytes)?;
        let mut renditions = Vec::new();
        let mut id = 0;
        let members = media_set
            .video
            .iter()
            .map(|m| (m, TrackKind::Video))
            .chain(media_set.audio.iter().map(|m| (m, TrackKind::Audio)));
        let any_default = media_set.audio.iter().any(|m| m.default);
        let mut first_audio = true;
        for (member, kind) in members {
            id += 1;
            let relative = if remote {
                dir.join(&member.file)
            } else {
                let file = self.member(&dir, &member.file)?;
                let root = self.root.as_deref().unwrap_or(Path::new("/"));
                file.strip_prefix(root).unwrap_or(&file).to_owned()
            };
            let title = self.title(&relative).map_err(|e| match e {
                VodError::NotFound => SetError::Missing(member.file.display().to_string()).into(),
                other => other,
            })?;
            let pos = title
                .index
                .tracks
                .iter()
                .zip(&title.plans)
                .position(|(t, p)| {
                    t.kind() == kind
                        && !p.segments.is_empty()
                        && member.track.is_none_or(|want| t.track_id == want)
                })
                .ok_or_else(|| {
                    SetError::Malformed(format!(
                        "{} has no {} track{}",
                        member.file.display(),
                        if kind == TrackKind::Video {
                            "video"
                        } else {
                            "audio"
                        },
                        member
                            .track
                            .map(|t| format!(" with ID {t}"))
                            .unwrap_or_default()
                    ))
                })?;
            let language = member
                .language
                .clone()
                .unwrap_or_else(|| title.index.tracks[pos].language.clone());
            let mut name = member.name.clone().unwrap_or_else(|| language.clone());
            if renditions
                .iter()
                .any(|r: &Rendition| r.kind() == kind && r.name == name)
            {
                // HLS wants NAME unique within the group.
                name = format!("{name} {id}");
            }
            let default =
                kind == TrackKind::Audio && (member.default || (!any_default && first_audio));
            first_audio &= kind != TrackKind::Audio;
            renditions.push(Rendition {
                id,
                title,
                pos,
                language,
                name,
                default,
                clipped: None,
            });
        }
        let subtitles = media_set
            .subtitles
            .iter()
            .enumerate()
            .map(|(k, s)| {
                Ok(SubtitleRendition {
                    id: k as u32 + 1,
                    path: if remote {
                        dir.join(&s.file)
                    } else {
                        self.member(&dir, &s.file)?
                    },
                    remote,
                    format: s.format,
                    language: s.language.clone(),
                    name: s.name.clone(),
                    default: s.default,
                })
            })
            .collect::<Result<Vec<_>, VodError>>()?;
        Ok(Presentation {
            renditions,
            subtitles,
            target_duration: self.config.segment_duration.as_secs_f64(),
            clip_start_ms: None,
        })
    }

    /// A file a set names: canonical, a regular file, inside the root.
    fn member(&self, dir: &Path, file: &Path) -> Result<PathBuf, VodError> {
        let shown = || file.display().to_string();
        let canonical =
            std::fs::canonicalize(dir.join(file)).map_err(|_| SetError::Missing(shown()))?;
        if !self
            .root
            .as_ref()
            .is_some_and(|root| canonical.starts_with(root))
        {
            return Err(SetError::Escapes(shown()).into());
        }
        if !canonical.is_file() {
            return Err(SetError::Missing(shown()).into());
        }
        Ok(canonical)
    }

    /// A remote object of at most `max` bytes (`None`: bigger), read whole.
    fn read_remote_small(&self, title: &Path, max: u64) -> Result<Option<Vec<u8>>, VodError> {
        let (store, key) = source::remote_key(&self.stores, title).ok_or(VodError::NotFound)?;
        let object = RemoteObject::open(store.clone(), &key).map_err(|e| match e {
            RemoteError::NotFound { .. } => VodError::NotFound,
            e => e.into(),
        })?;
        if object.len > max {
            return Ok(None);
        }
        Ok(Some(object.read_upto(0, object.len as usize)?))
    }

    /// The cues of a subtitle file.
    fn cues(&self, s: &SubtitleRendition) -> Result<Vec<subtitles::Cue>, VodError> {
        let bytes = if s.remote {
            self.read_remote_small(&s.path, MAX_SUBTITLE_BYTES)
                .map_err(|e| match e {
                    VodError::NotFound => SetError::Missing(s.path.display().to_string()).into(),
                    e => e,
                })?
        } else {
            read_small(&s.path, MAX_SUBTITLE_BYTES).map_err(VodError::Io)?
        };
        let bytes = bytes.ok_or_else(|| {
            subtitles::SubtitleError(format!(
                "{}: over {MAX_SUBTITLE_BYTES} bytes",
                s.path.display()
            ))
        })?;
        self.metrics.bytes_read.inc_by(bytes.len() as u64);
        Ok(subtitles::parse(&bytes, s.format)?)
    }

    /// The response for one request. A remote object replaced since it was
    /// indexed is indexed again and the request answered from the new index.
    pub fn render(&self, request: &VodRequest) -> Result<Rendered, VodError> {
        match self.render_once(request) {
            Err(VodError::Remote(RemoteError::Changed { .. })) => {
                tracing::info!(title = %request.title.display(), "remote object changed; indexing it again");
                self.forget(&request.title);
                self.render_once(request)
            }
            other => other,
        }
    }

    fn render_once(&self, request: &VodRequest) -> Result<Rendered, VodError> {
        let mut p = self.presentation(&request.title)?;
        if let Some(clip) = request.clip {
            p.clip(clip, self.config.segment_duration)
                .ok_or(VodError::BadPath(
                    "clipFrom is at or past the end of the title",
                ))?;
        }
        let playlist = |text: String| {
            Ok(Rendered::new(
                text.into(),
                "application/vnd.apple.mpegurl",
                MANIFEST_CACHE_CONTROL.into(),
            ))
        };
        let video = |track| {
            p.rendition(track)
                .filter(|r| r.kind() == TrackKind::Video)
                .ok_or(VodError::NotFound)
        };
        let subtitle = |id| p.subtitle(id).ok_or(VodError::NotFound);
        match request.object {
            VodObject::Master => playlist(manifest::master(&p)),
            VodObject::Manifest => Ok(Rendered::new(
                manifest::mpd(&p).into(),
                "application/dash+xml",
                MANIFEST_CACHE_CONTROL.into(),
            )),
            VodObject::MediaPlaylist { track } => playlist(manifest::media_playlist(
                p.rendition(track).ok_or(VodError::NotFound)?,
            )),
            VodObject::IFramePlaylist { track } => {
                playlist(manifest::iframe_playlist(video(track)?))
            }
            VodObject::SubtitlePlaylist { id } => {
                playlist(manifest::subtitle_playlist(&p, subtitle(id)?))
            }
            VodObject::Init { track } => {
                let t = p.rendition(track).ok_or(VodError::NotFound)?.track();
                let (track_id, content_type) = output_track(t);
                Ok(Rendered::new(
                    crate::media::fmp4::init_segment(track_id, &t.params),
                    content_type,
                    MEDIA_CACHE_CONTROL.into(),
                ))
            }
            VodObject::Fragment { track, number } => {
                let r = p.rendition(track).ok_or(VodError::NotFound)?;
                let segment = r
                    .plan()
                    .segments
                    .get(number as usize - 1)
                    .ok_or(VodError::NotFound)?;
                self.fragment(r, number, segment)
            }
            VodObject::KeyFrame { track, number } => {
                let r = video(track)?;
                let segment = plan::keyframe_segment(r.track(), number as usize - 1)
                    .ok_or(VodError::NotFound)?;
                self.fragment(r, number, &segment)
            }
            VodObject::SubtitleSegment { id, number } => {
                let s = subtitle(id)?;
                let cuts = p.subtitle_cuts();
                let from = *cuts.get(number as usize - 1).ok_or(VodError::NotFound)?;
                let to = cuts.get(number as usize).copied();
                let cues = self.cues(s)?;
                Ok(Rendered::new(
                    subtitles::segment(&cues, from, to).into(),
                    "text/vtt; charset=utf-8",
                    MEDIA_CACHE_CONTROL.into(),
                ))
            }
            VodObject::MasterTs => playlist(super::ts::master(&p)?),
            VodObject::TsPlaylist { track } => {
                playlist(super::ts::playlist(super::ts::variant(&p, track)?))
            }
            VodObject::TsSegment { track, number } => {
                super::ts::segment(&p, track, number, |r, s| {
                    self.read_samples(&r.title, r.track(), s)
                })
            }
            // Keys are the key service's (`super::http`), never rendered.
            VodObject::Key { .. } => Err(VodError::NotFound),
            VodObject::SubtitleFile { id } => {
                let mut cues = self.cues(subtitle(id)?)?;
                if let Some(start) = p.clip_start_ms {
                    // DASH times cues from the Period's start: the clip's.
                    cues.retain(|c| c.end > start);
                    for c in &mut cues {
                        c.start = c.start.saturating_sub(start);
                        c.end -= start;
                    }
                }
                Ok(Rendered::new(
                    subtitles::webvtt(&cues).into(),
                    "text/vtt; charset=utf-8",
                    MEDIA_CACHE_CONTROL.into(),
                ))
            }
            VodObject::Thumbnail { ms, width } => self
                .thumbnails
                .render(&p, ms, width, |r, segment| {
                    self.read_samples(&r.title, r.track(), segment)
                })
                .map(|jpeg| Rendered::new(jpeg, "image/jpeg", MEDIA_CACHE_CONTROL.into())),
        }
    }

    /// One CMAF fragment of a rendition: the planned segment's samples, the
    /// last one lasting to the segment's end (a keyframe fragment is one
    /// sample standing for its whole group of pictures).
    fn fragment(
        &self,
        r: &Rendition,
        number: u32,
        segment: &PlannedSegment,
    ) -> Result<Rendered, VodError> {
        let t = r.track();
        let data = self.read_samples(&r.title, t, segment)?;
        let mut samples = plan::segment_samples(t, segment, data)?;
        if let Some(last) = samples.last_mut() {
            let end = segment.start + segment.duration;
            if let Ok(d) = u32::try_from(end.saturating_sub(last.dts.max(0) as u64)) {
                last.duration = d;
            }
        }
        let (track_id, content_type) = output_track(t);
        Ok(Rendered::new(
            crate::media::fmp4::media_segment(number, track_id, segment.start, &samples),
            content_type,
            MEDIA_CACHE_CONTROL.into(),
        ))
    }

    /// Each sample's bytes, read as runs of adjacent samples (one positioned
    /// read per chunk of the file, usually a handful per segment).
    pub(super) fn read_samples(
        &self,
        title: &Title,
        track: &mp4::TrackIndex,
        segment: &PlannedSegment,
    ) -> Result<Vec<Bytes>, VodError> {
        let source = match &title.remote {
            Some(object) => Source::Remote(object.clone()),
            None => Source::Local(File::open(&title.path).map_err(VodError::Io)?),
        };
        let entries = &track.samples[segment.first..segment.end];
        // Runs of adjacent samples: one read per chunk of the file.
        let mut runs: Vec<(u64, u64, usize, usize)> = Vec::new();
        let mut i = 0;
        while i < entries.len() {
            let start = entries[i].offset;
            let mut end = start + u64::from(entries[i].size);
            let mut j = i + 1;
            while j < entries.len() && entries[j].offset == end {
                end += u64::from(entries[j].size);
                j += 1;
            }
            runs.push((start, end, i, j));
            i = j;
        }
        let ranges: Vec<(u64, u64)> = runs.iter().map(|r| (r.0, r.1)).collect();
        let bodies = source.read_runs(&ranges)?;
        let mut out = Vec::with_capacity(entries.len());
        for ((start, _, i, j), run) in runs.into_iter().zip(bodies) {
            self.metrics.bytes_read.inc_by(run.len() as u64);
            for e in &entries[i..j] {
                let at = (e.offset - start) as usize;
                out.push(run.slice(at..at + e.size as usize));
            }
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

/// A whole file of at most `max` bytes; `None` when it is bigger.
fn read_small(path: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    File::open(path)?.take(max + 1).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

fn locate_error(e: mp4::LocateError) -> VodError {
    match e {
        mp4::LocateError::Mp4(e) => VodError::Mp4(e),
        mp4::LocateError::Io(e) => source::from_io(e),
    }
}
