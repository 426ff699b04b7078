//! Identity end to end, for HAProxy 2.6 and 3.4: tokens from a real OIDC provider (npm
//! `oidc-provider`) and from a mock IdP with fixture keys (for tokens a real IdP will not
//! mint, e.g. expired ones), judged by the real `idgate` binary behind HAProxy running the
//! shipped configuration, with the TLS echo server as upstream.
//!
//! One stack per HAProxy version; the scenarios run in order on it:
//! - no token: 401 with exactly `WWW-Authenticate: Bearer realm="idgate"`;
//! - garbage, expired, wrong-audience, unknown-issuer and unknown-kid tokens: 401 with
//!   `error="invalid_token"` and the precise reason in the body; nothing forwarded;
//! - allowed: the echo sees X-Forwarded-User/-Email/-Groups from the token (never the forged
//!   ones in either spelling) and the upstream credential, not the caller's token;
//! - RS256, ES256 and EdDSA access tokens from the real provider are all accepted;
//! - key rotation at the IdP after idgate started (old keys withdrawn): a token signed by the
//!   new key is accepted after idgate refetched the JWKS for the unknown kid.

mod support;

use support::auth_kit;
use support::oidc;

use std::path::Path;
use std::time::Duration;

use auth_kit::{claims, now, MockIdp, Signer};
use oidc::{header_of, OidcProvider, RESOURCE};
use serde_json::json;
use support::forged::{as_refs, assert_identity, forged_with_token};
use support::haproxy::HaproxyVersion;
use support::stack::{self, Resp, Stack};

const PAT: &str = "dapi-e2e-identity-static-token";
const SERVING: &str = "/serving-endpoints/churn-model/invocations";
const CLUSTERS: &str = "/api/2.0/clusters/list";

/// Bound on waiting for idgate to pick up rotated keys (its unknown-kid refetch interval is
/// 200 ms below; the rest is slack for a loaded CI machine).
const ROTATION_WAIT: Duration = Duration::from_secs(10);

fn agent_config(issuer: &str, mock: &MockIdp, pat_file: &Path) -> String {
    format!(
        r#"
[log]
level = "info"
audit = "{audit}"

[[issuer]]
name = "corp"
issuer = "{issuer}"
audiences = ["{RESOURCE}"]
algorithms = ["RS256", "ES256", "EdDSA"]
unknown_kid_refetch_interval = "200ms"

[[issuer]]
name = "fixture"
issuer = "{mock_iss}"
jwks_uri = "{mock_jwks}"
audiences = ["api"]
# Upstream, this issuer's callers are known by an Entra-style object ID.
user_claim = "oid"

[upstream.pat]
kind = "static"
token_file = "{pat}"

[[rule]]
name = "serving-invoke"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
effect = "allow"
upstream = "pat"
principal = "sub"

[[rule]]
name = "workspace-read"
methods = ["GET"]
paths = ["/api/2.0/**"]
effect = "allow"
"#,
        audit = stack::AUDIT_PLACEHOLDER,
        mock_iss = mock.base,
        mock_jwks = mock.jwks_uri(),
        pat = pat_file.display(),
    )
}

/// A 401 from idgate with the RFC 6750 `invalid_token` challenge and `reason` in the body.
fn assert_invalid_token(s: &Stack, r: &Resp, reason: &str, what: &str) {
    s.expect(r, 401, what);
    let challenge = r
        .header("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate: {r:?}"));
    assert!(
        challenge.starts_with(r#"Bearer realm="idgate", error="invalid_token""#),
        "{what}: challenge {challenge:?}"
    );
    assert!(
        r.body.contains(&format!("idgate: {reason}")),
        "{what}: expected reason {reason}, body {:?}",
        r.body
    );
}

fn identity_end_to_end(version: HaproxyVersion) {
    if oidc::skip() {
        return;
    }
    let rt = stack::runtime();
    let idp = rt.block_on(OidcProvider::start());
    let fixture_key = Signer::rsa("fixture-rsa-1");
    let mock = rt.block_on(MockIdp::start(&[&fixture_key]));
    let pat_dir = tempfile::tempdir().unwrap();
    let pat_file = pat_dir.path().join("pat.token");
    std::fs::write(&pat_file, PAT).unwrap();
    let Some(s) = Stack::start(version, &agent_config(&idp.issuer, &mock, &pat_file)) else {
        return;
    };

    // --- no token: the bare challenge ---
    let r = s.call("POST", SERVING, &[]);
    s.expect(&r, 401, "no token");
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="idgate""#),
        "{r:?}"
    );
    assert!(
        r.body.contains("idgate: missing_token"),
        "body {:?}",
        r.body
    );

    // --- invalid tokens: invalid_token with the precise reason ---
    let r = s.call_as("POST", SERVING, "garbage.garbage.garbage");
    assert_invalid_token(&s, &r, "malformed_token", "garbage token");
    let r = s.call_as("POST", SERVING, "not-a-jwt");
    assert_invalid_token(&s, &r, "malformed_token", "opaque token");

    let n = now();
    let mut expired = claims(&mock.base);
    expired["iat"] = json!(n - 900);
    expired["exp"] = json!(n - 600);
    let r = s.call_as("POST", SERVING, &fixture_key.token(&expired));
    assert_invalid_token(&s, &r, "expired", "expired token");
    assert!(
        r.header("www-authenticate")
            .unwrap()
            .contains(r#"error_description="token expired""#),
        "{r:?}"
    );
    let mut other_aud = claims(&mock.base);
    other_aud["aud"] = json!("someone-else");
    let r = s.call_as("POST", SERVING, &fixture_key.token(&other_aud));
    assert_invalid_token(&s, &r, "wrong_audience", "token for another audience");
    let r = s.call_as(
        "POST",
        SERVING,
        &fixture_key.token(&claims("https://not-configured.example")),
    );
    assert_invalid_token(&s, &r, "unknown_issuer", "token of an unknown issuer");
    let stranger = Signer::rsa2("never-published");
    let r = s.call_as("POST", SERVING, &stranger.token(&claims(&mock.base)));
    assert_invalid_token(&s, &r, "unknown_key", "token signed by an unpublished key");
    assert_eq!(s.echo.count(), 0, "a refused request reached the upstream");

    // A valid fixture token is accepted (the mock issuer's refusals above were not a setup
    // problem), with the identity from its claims: X-Forwarded-User is the issuer's
    // user_claim (`oid`), not `sub`; X-Forwarded-Principal the rule's principal (its
    // default: the email).
    const OID: &str = "6e8f0c3a-54b1-4c9e-9a51-2f0d8b7c1e44";
    let mut with_oid = claims(&mock.base);
    with_oid["oid"] = json!(OID);
    let r = s.call_as("GET", CLUSTERS, &fixture_key.token(&with_oid));
    s.expect(&r, 200, "valid fixture token");
    let up = s.last_upstream();
    assert_identity(
        &up,
        Some(OID),
        Some("alice@example.com"),
        Some("ml-engineers"),
    );
    assert_eq!(
        up.header_all("x-forwarded-principal"),
        vec!["alice@example.com"]
    );
    // Without the user claim the token cannot say who the caller is upstream: refused.
    let r = s.call_as("GET", CLUSTERS, &fixture_key.token(&claims(&mock.base)));
    assert_invalid_token(&s, &r, "claim_invalid", "token without the user claim");

    // --- allowed through the real provider: identity headers from the token only ---
    let alice = rt.block_on(idp.token("alice"));
    let r = s.call("POST", SERVING, &as_refs(&forged_with_token(&alice)));
    s.expect(&r, 200, "alice on the serving endpoint");
    let up = s.last_upstream();
    assert_eq!(up.path, SERVING);
    assert_identity(
        &up,
        Some("alice"),
        Some("alice@example.com"),
        Some("ml-engineers"),
    );
    assert_eq!(
        up.header_all("authorization"),
        vec![format!("Bearer {PAT}").as_str()]
    );
    // The rule's principal (`sub`) goes upstream as X-Forwarded-Principal.
    assert_eq!(up.header_all("x-forwarded-principal"), vec!["alice"]);
    assert!(up.headers.iter().all(|(_, v)| !v.contains(&alice)));

    // --- RS256, ES256 and EdDSA access tokens ---
    for (client, alg) in [
        ("rs256-client", "RS256"),
        ("es256-client", "ES256"),
        ("eddsa-client", "EdDSA"),
    ] {
        let t = rt.block_on(idp.token(client));
        assert_eq!(header_of(&t).0, alg, "{client}'s token algorithm");
        let r = s.call("GET", CLUSTERS, &as_refs(&forged_with_token(&t)));
        s.expect(&r, 200, &format!("{alg} token of {client}"));
        let up = s.last_upstream();
        // Client-credentials tokens carry no email or groups: those headers stay absent
        // (and the forged ones are gone).
        assert_identity(&up, Some(client), None, None);
        assert!(
            up.header_all("authorization").is_empty(),
            "{:?}",
            up.headers
        );
    }
    // bob's ES256 token: valid identity, but not in the serving group.
    let bob = rt.block_on(idp.token("bob"));
    let r = s.call_as("POST", SERVING, &bob);
    s.expect(&r, 403, "bob on the serving endpoint");
    let forwarded = s.echo.count();
    assert_eq!(forwarded, 1 + 1 + 3);

    // --- key rotation at the IdP after idgate started ---
    let jwks_before = rt.block_on(idp.jwks_requests());
    let new_kids = rt.block_on(idp.rotate(false));
    let rotated = rt.block_on(idp.token("alice"));
    let (alg, kid) = header_of(&rotated);
    assert_eq!(alg, "RS256");
    assert!(
        new_kids.contains(&kid),
        "signed with a new key: {kid} not in {new_kids:?}"
    );
    // The first attempt may fall inside the refetch rate limit window; idgate must accept the
    // token within a bounded time and without any restart.
    let accepted = support::poll_until(ROTATION_WAIT, || {
        let r = s.call_as("POST", SERVING, &rotated);
        match r.status {
            200 => Some(Ok(())),
            401 if r.body.contains("unknown_key") => None,
            _ => Some(Err(r)),
        }
    });
    match accepted {
        Some(Ok(())) => {}
        Some(Err(r)) => panic!("rotated token: {r:?}\n{}", s.logs()),
        None => panic!("rotated token never accepted\n{}", s.logs()),
    }
    assert_identity(
        &s.last_upstream(),
        Some("alice"),
        Some("alice@example.com"),
        Some("ml-engineers"),
    );
    assert!(
        rt.block_on(idp.jwks_requests()) > jwks_before,
        "idgate did not refetch the JWKS"
    );
    // The other algorithms' new keys came with the same refetch.
    let t = rt.block_on(idp.token("eddsa-client"));
    assert!(new_kids.contains(&header_of(&t).1));
    let r = s.call_as("GET", CLUSTERS, &t);
    s.expect(&r, 200, "EdDSA token signed by the rotated key");
    assert_eq!(s.echo.count(), forwarded + 2);
}

haproxy_tests!(full: [identity_end_to_end]);
