//! Integration tests for strata-origin with real peers (Debian's ffmpeg).

mod support;

mod demo;
mod rtmp;
mod srt;
