//! End-to-end tests of the `strata` binary's roles, over real sockets on
//! loopback. One test binary for the crate; each file is one concern.

mod harness;
mod openapi;
mod stack;

mod ansible;
mod cli;
mod control;
mod dashboards;
mod disk;
mod drm;
mod edge;
mod fleet;
mod from_start;
mod h3;
mod h3_browser;
mod hardening;
mod live;
mod ll_dash;
mod ll_drm;
mod ll_h3;
mod ll_hls;
mod ll_shaka;
mod matrix;
mod memory;
mod policy;
mod prometheus;
mod qoe;
mod quic_client;
mod redundant;
mod rfc9111;
mod schemathesis;
mod signed;
mod steering;
mod tls;
mod upgrade;
mod vod;
mod vod_drm;
mod vod_remote;
