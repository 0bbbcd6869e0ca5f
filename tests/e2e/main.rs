//! End-to-end tests of the `strata` binary's roles, over real sockets on
//! loopback. One test binary for the crate; each file is one concern.

mod harness;
mod stack;

mod cli;
mod drm;
mod edge;
mod h3;
mod live;
mod policy;
mod prometheus;
mod quic_client;
