//! Front doors: thin adapters from a wire protocol to [`crate::edge::Edge`].

pub mod coalesce;
pub mod h3;
pub mod pingora;
pub mod tls;
