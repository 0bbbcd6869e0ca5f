//! strata-origin end-to-end tests: real encoders and players against the
//! origin's pure parts (one test binary; one module per concern).

mod packaging;
