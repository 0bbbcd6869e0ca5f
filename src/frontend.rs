//! Front doors: thin adapters from a wire protocol to [`crate::edge::Edge`].

pub mod coalesce;
pub mod pingora;
pub mod tls;
