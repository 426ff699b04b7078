//! Helpers shared by the JOSE submodules' tests: tokens without a real signature, the claim
//! rules and selection of a typical issuer, and shortcuts from a payload to a reason.

use std::sync::LazyLock;

pub(super) use base64::engine::general_purpose::URL_SAFE_NO_PAD;
pub(super) use base64::Engine as _;
pub(super) use serde_json::{json, Value};

use super::{check_claims, parse, ClaimRules, ClaimSelection, Parsed};
use crate::claim_path::ClaimPath;
pub(super) use crate::decision::{Identity, Reason, Rejection};

pub(super) fn b64(v: &str) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

/// A compact token with the given header and payload JSON and a dummy signature.
pub(super) fn tok(header: &str, payload: &str) -> String {
    format!("{}.{}.c2ln", b64(header), b64(payload))
}

pub(super) fn path(p: &str) -> ClaimPath {
    ClaimPath::parse(p).unwrap()
}

pub(super) fn paths<'a>(ps: impl IntoIterator<Item = &'a str>) -> Vec<ClaimPath> {
    ps.into_iter().map(path).collect()
}

pub(super) const P: &str = r#"{"iss":"https://idp","sub":"u","aud":"api","exp":2000000000}"#;

/// What an authenticator with `rules()` and a rule reading `tenant` selects.
pub(super) static SELECTION: LazyLock<ClaimSelection> =
    LazyLock::new(|| ClaimSelection::new(&paths(["email", "realm.roles"]), &paths(["tenant"])));

/// [`parse`] and [`Parsed::claims`]: every token check before the signature.
pub(super) fn parse_all(token: &str, max_bytes: usize) -> Result<Parsed, Rejection> {
    let parsed = parse(token, max_bytes)?;
    parsed.claims(&SELECTION)?;
    Ok(parsed)
}

pub(super) fn reason(r: Result<Parsed, Rejection>) -> Reason {
    r.map(|_| ()).unwrap_err().reason
}

pub(super) fn rules() -> ClaimRules {
    ClaimRules {
        name: "corp".into(),
        iss: crate::auth::entra::IssMatch::Exact("https://idp".into()),
        audiences: ["api".to_string(), "api2".to_string()].into(),
        leeway: 30,
        max_lifetime: 3600,
        email_claim: path("email"),
        groups_claim: path("realm.roles"),
        user_claim: None,
    }
}

pub(super) const NOW: u64 = 1_800_000_000;

/// [`check_claims`] with `rules()` and `SELECTION` on a payload.
pub(super) fn check(v: Value) -> Result<Identity, Rejection> {
    let t = tok(r#"{"alg":"RS256"}"#, &v.to_string());
    check_claims(&rules(), &parse_all(&t, 65536)?.claims(&SELECTION)?, NOW)
}

/// A payload `rules()` accept.
pub(super) fn base() -> Value {
    json!({"iss":"https://idp","sub":"alice","aud":"api","exp":NOW + 600,"iat":NOW})
}

pub(super) fn with(k: &str, v: Value) -> Value {
    let mut b = base();
    b[k] = v;
    b
}

pub(super) fn without(k: &str) -> Value {
    let mut b = base();
    b.as_object_mut().unwrap().remove(k);
    b
}

pub(super) fn r(v: Value) -> Reason {
    check(v).unwrap_err().reason
}

/// [`check`] with another groups claim, and rules reading `kept`.
pub(super) fn check_with(
    groups_claim: &str,
    kept: &[&str],
    v: Value,
) -> Result<Identity, Rejection> {
    let sel = ClaimSelection::new(
        &paths(["email", groups_claim]),
        &paths(kept.iter().copied()),
    );
    let rules = ClaimRules {
        groups_claim: path(groups_claim),
        ..rules()
    };
    let t = tok(r#"{"alg":"RS256"}"#, &v.to_string());
    check_claims(&rules, &parse(&t, 65536)?.claims(&sel)?, NOW)
}

pub(super) fn description(r: Result<Identity, Rejection>) -> &'static str {
    r.unwrap_err().description
}
