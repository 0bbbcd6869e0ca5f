//! End-to-end tests of the `strata` binary's roles, over real sockets on
//! loopback. One test binary for the crate; each file is one concern.

mod harness;
mod openapi;

mod control;
mod edge;
mod policy;
