//! End-to-end tests of the `strata` binary's roles, over real sockets on
//! loopback. One test binary for the crate; each file is one concern.

mod harness;

mod cli;
mod edge;
mod h3;
mod policy;
mod prometheus;
mod quic_client;
