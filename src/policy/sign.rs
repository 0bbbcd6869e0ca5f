//! Minting tokens, behind `strata sign` (in `strata-edgeauth`, where the
//! origin's tests mint them too).

pub use strata_edgeauth::sign::{sign, SignError};
