//! The JOSE protected header: parsed strictly, then judged. [`parse_header`] applies the rules
//! that hold for every issuer (algorithm allow-list, `crit`, key references, unsupported
//! features, `kid` and `typ` shape); [`Header::check_issuer`] the issuer's own `algorithms` and
//! `allowed_typ` once the token's `iss` has picked the issuer.
//!
//! Why not `jsonwebtoken`'s `Header`: it silently ignores `crit` and keeps `jku`/`jwk`/`x5u` for
//! the caller to (mis)use (identity-and-databricks.md §6.4-6.5).

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::json::{self, Ignore, JsonError, Object, Strict};
use crate::decision::{Reason, Rejection};

/// Longest `kid` we look up. Real IdPs use 20-64 characters (thumbprints, UUIDs); the cap
/// keeps a hostile header from making us hash or log kilobytes (RFC 8725 §3.10).
const MAX_KID_BYTES: usize = 256;

/// Longest `typ` / `alg` we bother comparing.
const MAX_SHORT_PARAM_BYTES: usize = 64;

/// Header parameters that point at keys or certificates. We never fetch or trust them (keys
/// come only from the configured issuer's JWKS, RFC 8725 §3.10), and a token carrying one is
/// refused as `unsupported_token`: a legitimate IdP access token has no reason to embed its own
/// key, and accepting-but-ignoring would hide an attack attempt from the logs.
const KEY_REFERENCE_PARAMS: &[&str] = &["jku", "jwk", "x5u", "x5c"];

/// Header parameters of features we do not implement: unencoded payloads (RFC 7797 `b64`),
/// compression and encryption (JWE). Refused as `unsupported_token`.
const UNSUPPORTED_PARAMS: &[&str] = &["b64", "zip", "enc", "epk", "p2s", "p2c"];

/// Registered header parameters we do not use but whose value must be a string when present
/// (RFC 7515 §4.1.7-8 certificate thumbprints, RFC 8555 §6.4 `url`/`nonce`). A mistyped one
/// means a broken or hand-crafted header: `malformed_token` (`null` counts as absent, as it
/// did while `jsonwebtoken` parsed the header a second time).
const STRING_PARAMS: &[&str] = &["x5t", "x5t#S256", "url", "nonce"];

/// The checked JOSE header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub(crate) alg: Algorithm,
    pub kid: Option<String>,
    pub(crate) typ: Option<String>,
    /// A string `nonce` parameter is present. Microsoft Graph access tokens carry one: Graph
    /// signs the SHA-256 of the nonce, not the header as sent, so only Graph itself can verify
    /// them, and `auth` refuses them as `unsupported_token` before looking for a key.
    pub(crate) nonce: bool,
}

impl Header {
    /// The issuer's header rules: `alg` in its `algorithms`, and `typ`, when present, in its
    /// `allowed_typ` ([`typ_matches`]).
    #[inline]
    pub(crate) fn check_issuer(
        &self,
        algorithms: &[Algorithm],
        allowed_typ: &[String],
    ) -> Result<(), Rejection> {
        if !algorithms.contains(&self.alg) {
            return Err(Rejection::new(
                Reason::AlgNotAllowed,
                "signature algorithm not allowed for this issuer",
            ));
        }
        if let Some(t) = &self.typ {
            if !allowed_typ.iter().any(|a| typ_matches(t, a)) {
                return Err(Rejection::new(
                    Reason::UnsupportedToken,
                    "token type (typ) not accepted",
                ));
            }
        }
        Ok(())
    }
}

/// Algorithms that may ever be accepted, by their exact (case-sensitive) JOSE name. HMAC is
/// absent on purpose: a JWKS issuer never legitimately signs with a shared secret, and allowing
/// it is the RS/HS key-confusion attack (RFC 8725 §2.1). `none` is absent for obvious reasons.
pub(crate) fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// `kid`: 1..=256 bytes of printable ASCII without spaces. It is only ever used as a map key
/// into the issuer's cached JWKS (never a path, URL or query), but bounding it keeps logs and
/// lookups cheap and rules out control characters in log lines.
pub fn valid_kid(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KID_BYTES && k.bytes().all(|b| b.is_ascii_graphic())
}

/// `typ` comparison per RFC 7515 §4.1.9: case-insensitive, and the `application/` prefix may be
/// omitted, so `at+jwt` and `application/at+JWT` are the same type.
fn typ_matches(token_typ: &str, allowed: &str) -> bool {
    fn strip(s: &str) -> &str {
        const P: &str = "application/";
        if s.len() > P.len() && s[..P.len()].eq_ignore_ascii_case(P) {
            &s[P.len()..]
        } else {
            s
        }
    }
    strip(token_typ).eq_ignore_ascii_case(strip(allowed))
}

/// The base64url header part of a token, decoded, parsed and judged by the rules every issuer
/// shares.
pub(super) fn parse_header(encoded: &str) -> Result<Header, Rejection> {
    let raw = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| Rejection::new(Reason::MalformedToken, "header is not valid base64url"))?;
    let strict = Strict::default();
    let obj = match json::parse(&raw, &strict, RawHeaderSeed(&strict)) {
        Ok(h) => h,
        Err(JsonError::Duplicate) => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "duplicate header parameter",
            ))
        }
        Err(JsonError::Invalid) => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "header is not a JSON object",
            ))
        }
    };
    let alg = match &obj.alg {
        Param::Str(a) if a.len() <= MAX_SHORT_PARAM_BYTES => a,
        _ => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "header alg missing or not a string",
            ))
        }
    };
    let Some(alg) = algorithm_from_name(alg) else {
        return Err(Rejection::new(
            Reason::AlgNotAllowed,
            "signature algorithm not allowed",
        ));
    };
    if obj.crit {
        // RFC 7515 §4.1.11: a recipient MUST reject a token whose `crit` lists an extension it
        // does not understand; we understand none, so any `crit` is refused.
        return Err(Rejection::new(
            Reason::ClaimInvalid,
            "critical header extensions are not supported",
        ));
    }
    if obj.key_reference {
        return Err(Rejection::new(
            Reason::UnsupportedToken,
            "embedded or remote key references (jku, jwk, x5u, x5c) are not accepted",
        ));
    }
    if obj.unsupported {
        return Err(Rejection::new(
            Reason::UnsupportedToken,
            "unsupported JOSE header parameter",
        ));
    }
    if obj.mistyped_string_param {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "header parameter is not a string",
        ));
    }
    match &obj.cty {
        Param::Absent => {}
        Param::Str(c) if !c.eq_ignore_ascii_case("JWT") => {}
        _ => {
            return Err(Rejection::new(
                Reason::UnsupportedToken,
                "nested tokens are not supported",
            ))
        }
    }
    let kid = match obj.kid {
        Param::Absent => None,
        Param::Str(k) if valid_kid(&k) => Some(k),
        _ => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "header kid is not a short printable string",
            ))
        }
    };
    let typ = match obj.typ {
        Param::Absent => None,
        Param::Str(t) if t.len() <= MAX_SHORT_PARAM_BYTES => Some(t),
        _ => {
            return Err(Rejection::new(
                Reason::UnsupportedToken,
                "header typ is not an accepted token type",
            ))
        }
    };
    Ok(Header {
        alg,
        kid,
        typ,
        nonce: obj.nonce,
    })
}

/// A header parameter's value, as far as the header rules look at it.
#[derive(Debug, Default)]
enum Param {
    #[default]
    Absent,
    Null,
    Str(String),
    /// A number, a boolean, an array or an object.
    Other,
}

/// The JOSE header reduced to what the rules need, read in one pass without building a
/// `serde_json::Value` tree (the header is parsed for every first-seen token). Every member,
/// kept or not, is still checked for duplicate names at any depth.
#[derive(Debug, Default)]
struct RawHeader {
    alg: Param,
    kid: Param,
    typ: Param,
    cty: Param,
    crit: bool,
    /// One of [`KEY_REFERENCE_PARAMS`] is present.
    key_reference: bool,
    /// One of [`UNSUPPORTED_PARAMS`] is present.
    unsupported: bool,
    /// One of [`STRING_PARAMS`] is present with a value that is neither a string nor null.
    mistyped_string_param: bool,
    /// `nonce` is a string.
    nonce: bool,
}

struct RawHeaderSeed<'s>(&'s Strict);

impl<'de> DeserializeSeed<'de> for RawHeaderSeed<'_> {
    type Value = RawHeader;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<RawHeader, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RawHeaderSeed<'_> {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawHeader, A::Error> {
        let mut h = RawHeader::default();
        let mut obj = Object::new(self.0, map);
        while let Some(k) = obj.next_name()? {
            let slot = match &*k {
                "alg" => Some(&mut h.alg),
                "kid" => Some(&mut h.kid),
                "typ" => Some(&mut h.typ),
                "cty" => Some(&mut h.cty),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = obj.value(ParamSeed(self.0))?;
            } else if STRING_PARAMS.contains(&&*k) {
                // `null` counts as absent (see STRING_PARAMS).
                let v = obj.value(ParamSeed(self.0))?;
                h.mistyped_string_param |= matches!(v, Param::Other);
                h.nonce |= &*k == "nonce" && matches!(v, Param::Str(_));
            } else {
                obj.skip_value()?;
                h.crit |= &*k == "crit";
                h.key_reference |= KEY_REFERENCE_PARAMS.contains(&&*k);
                h.unsupported |= UNSUPPORTED_PARAMS.contains(&&*k);
            }
            obj.record(k)?;
        }
        Ok(h)
    }
}

/// A header parameter value reduced to a [`Param`]; arrays and objects are still walked for
/// duplicate names.
struct ParamSeed<'s>(&'s Strict);

impl<'de> DeserializeSeed<'de> for ParamSeed<'_> {
    type Value = Param;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Param, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamSeed<'_> {
    type Value = Param;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Param, E> {
        Ok(Param::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Param, E> {
        Ok(Param::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Param, E> {
        Ok(Param::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Param, E> {
        Ok(Param::Other)
    }
    fn visit_str<E>(self, v: &str) -> Result<Param, E> {
        Ok(Param::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Param, E> {
        Ok(Param::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Param, E> {
        Ok(Param::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Param, A::Error> {
        Ignore(self.0).visit_seq(seq)?;
        Ok(Param::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Param, A::Error> {
        Ignore(self.0).visit_map(map)?;
        Ok(Param::Other)
    }
}

#[cfg(test)]
mod tests;
