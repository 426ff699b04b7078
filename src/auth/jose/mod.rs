//! The JOSE core: the pure half of token validation. No I/O and no clock (callers pass `now`),
//! so every rejection rule is unit-testable in isolation. A first-seen token goes through, in
//! the order `auth::Authenticator::validate` calls them:
//!
//! 1. [`parse`] (here): size, then shape (three base64url parts; JWE refused), then the header
//!    and the payload's base64url;
//! 2. [`header`]: the protected header parsed strictly and judged by the rules every issuer
//!    shares (alg allow-list, `crit`, `jku`/`jwk`/`x5u`/`x5c`, `kid`, `typ`...);
//! 3. [`claims`] ([`Parsed::claims`]): the payload, keeping only the claims validation and the
//!    rules read. Its unverified `iss` picks the issuer;
//! 4. [`Header::check_issuer`]: that issuer's `algorithms` and `allowed_typ`;
//! 5. [`Parsed::signing_input_and_signature`]: the exact bytes the signature covers, verified by
//!    the caller with the issuer's key (the only step that is not here);
//! 6. [`checks`] ([`check_claims`]): time, issuer, audience, lifetime, left-out claims, and the
//!    identity.
//!
//! Under 2 and 3, [`json`] is the strict JSON layer: duplicate member names are refused at any
//! depth.
//!
//! Why we parse the header and the payload ourselves although `jsonwebtoken` does too: its
//! `Header` silently ignores `crit`, keeps `jku`/`jwk`/`x5u` for the caller to (mis)use, and its
//! claim checks let a missing or mistyped `aud`/`iss` through unless told otherwise
//! (identity-and-databricks.md §6.4-6.5). serde_json's `Map` silently keeps the last of two
//! duplicate names. So the strict rules live here, and they are the only claim and header
//! checks: `jsonwebtoken` is used for the signature alone (see the module docs of `auth`).

// What is `pub` here is the fuzz targets' entry (re-exported by `auth::fuzzing`, compiled only
// with `cfg(fuzzing)` or the `fuzzing` feature); without it these items are crate-internal.
#![cfg_attr(not(any(fuzzing, feature = "fuzzing")), allow(unreachable_pub))]

mod checks;
mod claims;
mod header;
mod json;

#[cfg(test)]
mod testing;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use crate::decision::{Reason, Rejection};

pub use checks::{check_claims, ClaimRules};
pub use claims::{ClaimSelection, Claims};
pub(crate) use header::algorithm_from_name;
pub use header::{valid_kid, Header};

/// A token whose structure and header passed, with its decoded (not yet parsed) payload.
#[derive(Debug)]
pub struct Parsed {
    pub header: Header,
    payload: Vec<u8>,
    /// Length of `header.payload` (the JWS signing input) in the parsed token.
    signing_input_len: usize,
}

impl Parsed {
    /// The JWS signing input (`header.payload`, RFC 7515 §5.2) and the base64url signature of
    /// `raw`, which must be the token this was parsed from.
    pub(crate) fn signing_input_and_signature<'a>(&self, raw: &'a str) -> (&'a str, &'a str) {
        let (input, rest) = raw.split_at(self.signing_input_len);
        (input, rest.strip_prefix('.').unwrap_or(rest))
    }

    /// The payload's claims: the registered ones validation reads and those in `selection`;
    /// every other member is still parsed (syntax, duplicate names at any depth) but dropped.
    pub fn claims<'a>(&'a self, selection: &'a ClaimSelection) -> Result<Claims<'a>, Rejection> {
        claims::read(&self.payload, selection)
    }
}

/// A JSON object read as claims, as strictly as a token's payload (duplicate names refused at
/// any depth): an introspection answer (RFC 7662).
pub(crate) fn read_claims<'a>(
    json: &'a [u8],
    selection: &'a ClaimSelection,
) -> Result<Claims<'a>, Rejection> {
    claims::read(json, selection)
}

/// Structural checks, the header, and the payload's base64url. `max_bytes` is checked before
/// anything is decoded. The payload JSON is read by [`Parsed::claims`].
pub fn parse(token: &str, max_bytes: usize) -> Result<Parsed, Rejection> {
    if token.len() > max_bytes {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "token larger than auth.max_token_bytes",
        ));
    }
    let (dots, alphabet_ok) = scan(token.as_bytes());
    if dots == 4 {
        return Err(Rejection::new(
            Reason::UnsupportedToken,
            "encrypted tokens (JWE) are not supported",
        ));
    }
    if dots != 2 {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "not a compact JWS (three dot-separated parts)",
        ));
    }
    if !alphabet_ok {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "token contains characters outside base64url",
        ));
    }
    let mut parts = token.splitn(3, '.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s)) => (h, p, s),
        _ => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "not a compact JWS (three dot-separated parts)",
            ))
        }
    };
    if h.is_empty() || p.is_empty() {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "empty token header or payload",
        ));
    }
    let header = header::parse_header(h)?;
    // `alg` is judged before the empty-signature check so that `alg: none` tokens (which carry
    // an empty signature) are reported as what they are.
    if s.is_empty() {
        return Err(Rejection::new(Reason::MalformedToken, "empty signature"));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| Rejection::new(Reason::MalformedToken, "payload is not valid base64url"))?;
    Ok(Parsed {
        header,
        payload,
        signing_input_len: h.len() + 1 + p.len(),
    })
}

/// One pass over the bytes: the number of dots, and whether every other byte is in the
/// base64url alphabet (RFC 7515 §7.1; padding `=` is not allowed in compact JWS).
///
/// Written as branch-free range tests over 64-byte blocks so the compiler can use SIMD
/// compares: the byte-class table lookup it replaces was the largest item of `parse` under
/// `perf` (it runs over the whole ~1 KiB token, signature included).
fn scan(bytes: &[u8]) -> (usize, bool) {
    let mut dots = 0usize;
    let mut bad = 0u8;
    for block in bytes.chunks(64) {
        let (mut block_dots, mut block_bad) = (0u8, 0u8);
        for &b in block {
            let dot = u8::from(b == b'.');
            let ok = u8::from(b.wrapping_sub(b'A') < 26)
                | u8::from(b.wrapping_sub(b'a') < 26)
                | u8::from(b.wrapping_sub(b'0') < 10)
                | u8::from(b == b'-')
                | u8::from(b == b'_')
                | dot;
            block_dots += dot;
            block_bad |= ok ^ 1;
        }
        dots += usize::from(block_dots);
        bad |= block_bad;
    }
    (dots, bad == 0)
}

#[cfg(test)]
mod tests;
