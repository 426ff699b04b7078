//! Entry points for the cargo-fuzz targets in `fuzz/` (not an API: hidden from the docs, may
//! change at any time).
//!
//! The JOSE core is private to [`crate::auth`] because nothing outside it should parse an
//! unverified token. The fuzz crate is outside, so it reaches the parser through these
//! re-exports instead of widening `jose`'s visibility for everyone.

pub use super::entra::IssMatch;
pub use super::jose::{
    check_claims, parse, valid_kid, ClaimRules, ClaimSelection, Claims, Header, Parsed,
};
