//! Demo channel.
