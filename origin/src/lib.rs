//! Strata origin: live video in, HLS and DASH out.
//!
//! - `ingest::{rtmp,srt}` — publishers' connections → [`media::Sample`]s
//! - `media::*` — pure parsers and writers (FLV, MPEG-TS, H.264, AAC, fMP4)
//! - `store` — per channel and rendition, a sliding window of samples cut into segments
//! - `package::{hls,dash}` — window → playlists, MPDs and segments, just in time
//! - `http` — playback, channel API, metrics
//! - `keys`, `drm` — content keys (CPIX), encryption per channel, key and licence delivery
//! - `steering` — multi-CDN content steering: tags, steering manifests, probes, rankings
//! - `vod` — video on demand: HLS/DASH made on request from an MP4 library (`/vod/`)

pub mod ingest;
pub mod media;
pub mod package;
pub mod store;

pub mod channel_metrics;
pub mod config;
pub mod drm;
pub mod http;
pub mod keys;
pub mod redundancy;
pub mod server;
pub mod steering;
pub mod vod;
