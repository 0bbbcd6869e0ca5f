//! Front doors: thin adapters from a wire protocol to [`crate::edge::Edge`].

pub mod admission;
pub mod coalesce;
pub mod h1;
pub mod h3;
pub mod pingora;
pub mod tls;

/// Body bytes a response writes before it lets other tasks run: keeps the
/// run queue short for new requests while many clients stream at once.
pub const YIELD_AFTER: usize = 256 * 1024;
