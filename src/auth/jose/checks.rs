//! The checks of a signature-verified token's claims against its issuer's rules, and the
//! [`Identity`] built from them: types, time (`exp`/`nbf`/`iat` with leeway, lifetime), issuer,
//! audience, claims the issuer left out, and the identity values (`super::super::identity`
//! decides whether they can be passed on).

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::Value;

use super::claims::{ClaimValue, Claims, Registered, GROUPS};
use crate::auth::entra::{IssMatch, TID};
use crate::claim_path::{ClaimPath, Found};
use crate::decision::{Identity, Reason, Rejection};

/// Per-issuer claim rules, derived once from the `[[issuer]]` section.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    /// The configured issuer `name` (goes into [`Identity::issuer`]).
    pub name: Arc<str>,
    /// The `iss` values accepted.
    pub iss: IssMatch,
    pub audiences: HashSet<String>,
    pub leeway: u64,
    pub max_lifetime: u64,
    pub email_claim: ClaimPath,
    pub groups_claim: ClaimPath,
    /// The claim identifying the caller upstream; `None`: `sub`.
    pub user_claim: Option<ClaimPath>,
}

/// How a fractional NumericDate is rounded: always in the direction that makes the token
/// *less* acceptable (exp down, nbf/iat up).
#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// `Ok(None)`: absent. `Err`: present but not a non-negative number.
fn numeric_date(v: Option<&ClaimValue<'_>>, round: Round) -> Result<Option<u64>, ()> {
    let Some(v) = v else { return Ok(None) };
    let ClaimValue::Num(n) = v else {
        return Err(());
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        // 2^63: far beyond any real date; keeps the conversion exact-enough and the arithmetic
        // below free of overflow surprises.
        Some(f) if f.is_finite() && (0.0..9.2e18).contains(&f) => Ok(Some(match round {
            Round::Down => f.floor() as u64,
            Round::Up => f.ceil() as u64,
        })),
        _ => Err(()),
    }
}

/// Refuse a token whose issuer left out a claim idgate reads, instead of treating that claim as
/// absent: with Entra ID's group overage the token carries `_claim_names: {"groups": ...}` (or,
/// v1 implicit flow, `hasgroups: true`) instead of `groups`, and "no groups" would let the caller
/// past every deny rule keyed on a group. A claim is read when validation reads it (the
/// registered claims), when the issuer's `groups_claim` or `email_claim` reads it (whole name or
/// first segment of a dotted path, [`ClaimPath::reads`]), or when a rule reads it (the
/// selection's kept claims). `_claim_names` entries nobody reads are fine. When neither
/// indication is present this costs two failed lookups and no allocation.
fn check_left_out(rules: &ClaimRules, claims: &Claims<'_>) -> Result<(), Rejection> {
    let bad = |d: &'static str| Rejection::new(Reason::ClaimInvalid, d);
    let names = claims
        .left_out_names()
        .map_err(|()| bad("_claim_names claim is not an object"))?;
    let rule_reads = |n: &str| claims.selection().kept().iter().any(|k| k == n);
    for n in names {
        if rules.groups_claim.reads(n) {
            return Err(bad(
                "groups claim not in token (_claim_names: group overage; configure the IdP to emit groups as app roles or filtered groups)",
            ));
        }
        if rules.email_claim.reads(n) {
            return Err(bad(
                "email claim not in token (_claim_names: distributed claim)",
            ));
        }
        if rules.user_claim.as_ref().is_some_and(|u| u.reads(n)) {
            return Err(bad(
                "user claim not in token (_claim_names: distributed claim)",
            ));
        }
        if Registered::from_name(n).is_some() {
            return Err(bad(
                "registered claim named in _claim_names (distributed claims are not supported)",
            ));
        }
        if rule_reads(n) {
            return Err(bad(
                "claim read by a rule not in token (_claim_names: distributed claim)",
            ));
        }
    }
    if claims.has_groups()
        && matches!(
            claims.get(GROUPS),
            None | Some(ClaimValue::Json(Value::Null))
        )
        && (rules.groups_claim.reads(GROUPS) || rule_reads(GROUPS))
    {
        return Err(bad(
            "groups claim not in token (hasgroups: group overage; configure the IdP to emit groups as app roles or filtered groups)",
        ));
    }
    Ok(())
}

/// Check the (signature-verified) claims and build the [`Identity`]: `sub`, email, groups and
/// scopes, plus the claims the rules read (the selection's kept names). Each string is
/// allocated once, here, for the identity; the claims only borrow from the payload.
///
/// Order: type checks of every claim we rely on (`claim_invalid`), then time (`expired`,
/// `not_yet_valid`), lifetime (`claim_invalid`), audience (`wrong_audience`), and the identity
/// claims: claims the issuer left out (`check_left_out`), email/groups/scope types, and
/// whether `sub`, email and groups can be passed on (`auth::identity::check_identity`), all
/// `claim_invalid`. Missing or mistyped authorization-relevant claims (groups, email, scopes)
/// are refused rather than dropped: a `deny` rule keyed on a group must not be bypassed by
/// sending the group list in an unexpected shape, or not at all (Entra ID group overage).
pub fn check_claims(
    rules: &ClaimRules,
    claims: &Claims<'_>,
    now: u64,
) -> Result<Identity, Rejection> {
    let bad = |d: &'static str| Rejection::new(Reason::ClaimInvalid, d);
    let reg = |r| claims.registered(r);
    let exp = numeric_date(reg(Registered::Exp), Round::Down)
        .ok()
        .flatten()
        .ok_or_else(|| bad("exp claim missing or not a number"))?;
    let nbf = numeric_date(reg(Registered::Nbf), Round::Up)
        .map_err(|_| bad("nbf claim is not a number"))?;
    let iat = numeric_date(reg(Registered::Iat), Round::Up)
        .map_err(|_| bad("iat claim is not a number"))?;
    if !rules.iss.accepts(claims.iss(), claims.str_claim(TID)) {
        return Err(bad("iss claim does not match the issuer"));
    }
    let sub = match reg(Registered::Sub) {
        Some(ClaimValue::Str(s)) if !s.is_empty() => s,
        _ => return Err(bad("sub claim missing or not a string")),
    };
    let aud_ok = match reg(Registered::Aud) {
        Some(ClaimValue::Str(a)) => rules.audiences.contains(&**a),
        Some(ClaimValue::Strs(items)) if !items.is_empty() => {
            items.iter().any(|a| rules.audiences.contains(&**a))
        }
        Some(ClaimValue::Json(Value::Array(items))) if !items.is_empty() => {
            return Err(bad("aud claim is not a string or an array of strings"))
        }
        _ => {
            return Err(bad(
                "aud claim missing or not a string or an array of strings",
            ))
        }
    };

    if now > exp.saturating_add(rules.leeway) {
        return Err(Rejection::new(Reason::Expired, "token expired"));
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(rules.leeway)) {
        return Err(Rejection::new(
            Reason::NotYetValid,
            "token not valid yet (nbf)",
        ));
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(rules.leeway)) {
        return Err(Rejection::new(
            Reason::NotYetValid,
            "token issued in the future (iat)",
        ));
    }
    let lifetime = exp.saturating_sub(iat.unwrap_or(now));
    if lifetime > rules.max_lifetime {
        return Err(bad("token lifetime exceeds the allowed maximum"));
    }
    if !aud_ok {
        return Err(Rejection::new(
            Reason::WrongAudience,
            "token audience not accepted",
        ));
    }

    check_left_out(rules, claims)?;
    let email = match rules.email_claim.find(claims) {
        None => None,
        Some(f) => f.string().map_err(|_| bad("email claim is not a string"))?,
    };
    let groups = match rules.groups_claim.find(claims) {
        None => Vec::new(),
        Some(f) => f
            .strings(false)
            .map_err(|_| bad("groups claim is not a string or an array of strings"))?,
    };
    // `scope` when present (even as null), else `scp`.
    let scopes = match reg(Registered::Scope).or(reg(Registered::Scp)) {
        None => Vec::new(),
        Some(v) => Found::Top(v)
            .strings(true)
            .map_err(|_| bad("scope claim is not a string or an array of strings"))?,
    };
    crate::auth::identity::check_identity(sub, email.as_deref(), &groups)?;
    let user = match &rules.user_claim {
        None => None,
        Some(path) => {
            let value = match path.find(claims) {
                Some(f) => f
                    .string()
                    .map_err(|_| bad("user claim (user_claim) is not a string"))?,
                None => None,
            };
            let value = value.ok_or_else(|| bad("user claim (user_claim) not in token"))?;
            crate::auth::identity::check_principal(&value)?;
            Some(value)
        }
    };
    let kept = claims
        .selection()
        .kept()
        .iter()
        .filter_map(|k| Some((k.clone(), claims.get(k)?.to_value())))
        .collect();

    Ok(Identity {
        issuer: rules.name.clone(),
        sub: sub.to_string(),
        user,
        email,
        groups,
        scopes,
        expires_at: exp,
        issued_at: iat,
        // A non-string `jti` cannot match a revoked one (revocations name strings).
        jti: match reg(Registered::Jti) {
            Some(ClaimValue::Str(j)) => Some(Box::from(&**j)),
            _ => None,
        },
        claims: kept,
    })
}

#[cfg(test)]
mod tests;
