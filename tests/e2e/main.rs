//! End-to-end tests of the `strata` binary's roles, over real sockets on
//! loopback. One test binary for the crate; each file is one concern.

mod harness;

mod cli;
mod edge;
mod policy;
mod prometheus;
