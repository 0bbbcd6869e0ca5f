//! Strata's edge: the HLS/DASH cache players talk to (and, pointed at the
//! origin, the shield tier).
//!
//! A request flows through these modules in order:
//! - [`frontend`] — the front doors: Pingora (HTTP/1.1, HTTP/2, TLS;
//!   [`frontend::pingora`], writes gathered by [`frontend::write_buffer`]) and
//!   quinn + h3 (HTTP/3; [`frontend::h3`]) accept and parse; they hand
//!   `http::request::Parts` to the core and write what comes back.
//! - [`request`] — the request parsed once ([`request::MediaRequest`]): the
//!   one normalised path ([`request::path`]) that policy, cache key, upstream
//!   request and purges all use, the cache key ([`cache::key`]), object kind,
//!   range, validators, the token.
//! - [`policy`] — token (EdgeAuth 2.0) and geo rules on the parsed request.
//! - [`edge`] — the pipeline: cache lookup ([`cache`]), one upstream fetch
//!   per object at a time ([`cache::inflight`], whose bytes stream to every
//!   waiting client through [`cache::fill`] while they are stored),
//!   freshness ([`cache::freshness`]), response headers, POST pass-through.
//! - [`upstream`] — origin/shield pool: consistent hashing, health, retries.
//! - [`qoe`] — CMCD on every request and the QoE beacon → `strata_qoe_*`.
//! - [`response`] — what the core hands a front door: head, streaming body,
//!   and the [`response::Outcome`] (cache status, upstream, reason) that
//!   [`metrics`] and the access log ([`logging`]) record.
//! - [`error`] — the edge's one error type, and the one place it becomes an
//!   HTTP status.
//! - [`admin`] — the admin listener: `/metrics`, health, and the control API
//!   that purges ([`cache::purge`]) and changes geo rules, token keys and TTL
//!   overrides at run time (`api/openapi.yaml`).
//! - [`config`] — the TOML file, one section per module; [`units`] — sizes.
//! - [`clock`] — wall-clock time, injectable for tests.
//! - [`server`] — the composition root: [`run`] builds all of the above from
//!   an [`config::EdgeConfig`] and serves until shutdown.

pub mod admin;
pub mod cache;
pub mod clock;
pub mod config;
pub mod ctl;
pub mod edge;
pub mod error;
pub mod fleet;
pub mod frontend;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod qoe;
pub mod request;
pub mod response;
pub mod server;
pub mod units;
pub mod upstream;

pub use server::{install_crypto_provider, run, EdgeListeners};
