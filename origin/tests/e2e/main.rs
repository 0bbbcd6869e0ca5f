//! Integration tests for strata-origin with real peers (Debian's ffmpeg):
//! one test binary, one module per concern.

mod support;

mod demo;
mod drm;
mod ll_hls;
mod packaging;
mod rtmp;
mod srt;
mod vod;
mod vod_set;
