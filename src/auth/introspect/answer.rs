//! What an introspection answer (RFC 7662 §2.2) means for the caller. Pure: no I/O, no clock.
//!
//! - `active` must be a boolean; `false` refuses the token ([`inactive`]).
//! - `token_type` (RFC 7662, Okta, Keycloak) and Keycloak's `typ`, when present, must be
//!   `Bearer` (any case): a refresh or ID token that the IdP reports active is not an access
//!   token (Keycloak answers `active: true`, `typ: "Refresh"` for a refresh token).
//! - every other member is a claim, checked exactly as a JWT's claims
//!   ([`jose::check_claims`]: `exp` required, `nbf`/`iat` with leeway, lifetime, `aud`
//!   against `audiences`, `sub`, groups/email/user claims, scopes). `iss` is optional in
//!   RFC 7662: when absent, the configured issuer is assumed; when present it must be it.
//! - duplicate member names (at any depth) make the answer unusable, as in a token.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::auth::jose::{self, ClaimRules, ClaimSelection};
use crate::decision::{Identity, Reason, Rejection};

/// The answer for one token, as cached.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// Active, and its claims passed: the caller.
    Active(Arc<Identity>),
    /// Inactive, or active but refused by the claim checks.
    Refused(Rejection),
}

/// The reason of an `active: false` answer. RFC 7662 lets the IdP not say why (expired,
/// revoked, never issued by it); the contract has no reason for "the IdP does not vouch for
/// this token", and `bad_signature` is its JWT counterpart: the check that proves the token is
/// the issuer's failed. When the token's expiry is known (a JWT's `exp`, read unverified, or a
/// cached active answer) and has passed, it is `expired` instead.
pub(crate) fn inactive(exp_hint: Option<u64>, now: u64) -> Rejection {
    match exp_hint {
        Some(exp) if exp <= now => Rejection::new(Reason::Expired, "token expired"),
        _ => Rejection::new(
            Reason::BadSignature,
            "token is not active (introspection: revoked, expired or unknown to the issuer)",
        ),
    }
}

/// The members judged before the claims. Duplicates of these are refused by serde.
#[derive(Deserialize)]
struct Envelope {
    active: Option<Value>,
    token_type: Option<Value>,
    typ: Option<Value>,
    iss: Option<Value>,
}

/// Judge a 200 answer's body. `Err`: the body is not an RFC 7662 answer (the IdP's fault,
/// never cached), with what is wrong.
pub(crate) fn judge(
    body: &[u8],
    iss: &str,
    rules: &ClaimRules,
    selection: &ClaimSelection,
    now: u64,
    exp_hint: Option<u64>,
) -> Result<Answer, &'static str> {
    let env: Envelope =
        serde_json::from_slice(body).map_err(|_| "the answer is not a JSON object")?;
    match env.active {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Answer::Refused(inactive(exp_hint, now))),
        _ => return Err("the answer has no boolean active member"),
    }
    let bearer = |v: &Option<Value>| match v {
        None => true,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("bearer"),
        Some(_) => false,
    };
    if !bearer(&env.token_type) || !bearer(&env.typ) {
        return Ok(Answer::Refused(Rejection::new(
            Reason::UnsupportedToken,
            "not an access token (introspection token_type or typ is not Bearer)",
        )));
    }
    // Strict read of the body itself first (duplicate names at any depth).
    if let Err(r) = jose::read_claims(body, selection) {
        return if r.reason == Reason::ClaimInvalid {
            Err("the answer has duplicate member names")
        } else {
            Err("the answer is not a JSON object")
        };
    }
    let with_iss;
    let claims_json: &[u8] = if env.iss.is_some() {
        body
    } else {
        let mut v: serde_json::Map<String, Value> =
            serde_json::from_slice(body).map_err(|_| "the answer is not a JSON object")?;
        v.insert("iss".into(), Value::String(iss.to_owned()));
        with_iss = serde_json::to_vec(&v).map_err(|_| "the answer cannot be read")?;
        &with_iss
    };
    let claims =
        jose::read_claims(claims_json, selection).map_err(|_| "the answer is not a JSON object")?;
    Ok(match jose::check_claims(rules, &claims, now) {
        Ok(id) => Answer::Active(Arc::new(id)),
        Err(r) => Answer::Refused(r),
    })
}

#[cfg(test)]
mod tests;
