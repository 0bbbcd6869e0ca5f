//! Strata's edge: the HLS/DASH cache players talk to (and, pointed at the
//! origin, the shield tier).
//!
//! A request flows through these modules in order:
//! - [`frontend`] — Pingora (HTTP/1.1, HTTP/2, TLS) and quinn + h3 (HTTP/3)
//!   accept and parse; they hand `http::request::Parts` to the core and write
//!   what comes back.
//! - [`request`] — the request parsed once: normalised path, cache key
//!   ([`cache::key`]), object kind, range, validators.
//! - [`edge`] — the pipeline: cache lookup ([`cache`]), one coalesced upstream
//!   fetch per object ([`cache::fill`]) streamed to every waiting client while
//!   it is stored, freshness ([`cache::freshness`]), response headers.
//! - [`upstream`] — origin/shield pool: consistent hashing, health, retries.
//! - [`metrics`], [`admin`] — Prometheus metrics and the admin listener,
//!   whose control API purges ([`cache::purge`]) and changes geo rules,
//!   token keys and TTL overrides at run time (`api/openapi.yaml`).
//! - [`config`] — the TOML file, one section per module.

pub mod admin;
pub mod cache;
pub mod clock;
pub mod config;
pub mod edge;
pub mod error;
pub mod frontend;
pub mod logging;
pub mod metrics;
pub mod policy;
pub mod request;
pub mod response;
pub mod server;
pub mod units;
pub mod upstream;

pub use server::{install_crypto_provider, run, EdgeListeners};
