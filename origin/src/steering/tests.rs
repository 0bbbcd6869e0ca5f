//! Unit tests of the steering service.
