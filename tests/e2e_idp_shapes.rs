//! Each identity provider end to end, through HAProxy (2.6 and 3.4) running the shipped configuration: tokens
//! shaped exactly as Entra ID (v1.0 and v2.0), Okta, Keycloak, Auth0, Google and GitHub Actions
//! issue them (tests/support/idp_tokens.rs), judged by the real `idgate` binary with the
//! `[[issuer]]` sections and rules an operator of each IdP writes (docs/idp/*.md).
//!
//! For each IdP: its usual token is allowed and the upstream sees the user the operator chose
//! (`user_claim`: Entra's `oid`, Keycloak's `preferred_username`...) in `X-Forwarded-User`, the
//! IdP's groups/roles/permissions in `X-Forwarded-Groups` and the rule's principal in
//! `X-Forwarded-Principal`; the same token without the role the rule asks for is refused with
//! 403; and the trap an operator of that IdP is likely to meet is refused with the reason that
//! points at it (Entra: another tenant's token at a single-tenant issuer; Google: the https
//! issuer where the bare one is configured; Keycloak: a token for the default `account`
//! audience only; GitHub: refs that do not match the tag pattern).

mod support;

use serde_json::json;
use support::auth_kit::{MockIdp, Signer};
use support::forged::assert_identity;
use support::haproxy::HaproxyVersion;
use support::idp_tokens::*;
use support::stack::{self, Resp, Stack};

const SERVING: &str = "/serving-endpoints/churn-model/invocations";
const JOBS: &str = "/api/2.0/jobs/run-now";

fn agent_config(idp: &MockIdp) -> String {
    let jwks = idp.jwks_uri();
    format!(
        r#"
[log]
audit = "{audit}"

[[issuer]]
name = "entra"
issuer = "https://login.microsoftonline.com/{ENTRA_TENANT}/v2.0"
jwks_uri = "{jwks}"
audiences = ["{ENTRA_CLIENT_ID}"]
groups_claim = "roles"
email_claim = "preferred_username"
user_claim = "oid"

[[issuer]]
name = "entra-v1"
issuer = "https://sts.windows.net/{ENTRA_TENANT}/"
jwks_uri = "{jwks}"
audiences = ["api://{ENTRA_CLIENT_ID}"]
groups_claim = "groups"
email_claim = "upn"
user_claim = "oid"

[[issuer]]
name = "okta"
issuer = "{OKTA_ISSUER}"
jwks_uri = "{jwks}"
audiences = ["api://default"]
groups_claim = "groups"
user_claim = "sub"

[[issuer]]
name = "keycloak"
issuer = "{KEYCLOAK_ISSUER}"
jwks_uri = "{jwks}"
audiences = ["{KEYCLOAK_CLIENT}"]
groups_claim = 'resource_access."{KEYCLOAK_CLIENT}".roles'
user_claim = "preferred_username"

[[issuer]]
name = "auth0"
issuer = "{AUTH0_ISSUER}"
jwks_uri = "{jwks}"
audiences = ["{AUTH0_AUDIENCE}"]
groups_claim = "permissions"
email_claim = '"{AUTH0_NAMESPACE}/email"'

[[issuer]]
name = "google"
issuer = "accounts.google.com"
jwks_uri = "{jwks}"
audiences = ["{GOOGLE_CLIENT}"]
user_claim = "email"

[[issuer]]
name = "github"
issuer = "{GITHUB_ISSUER}"
jwks_uri = "{jwks}"
audiences = ["{GITHUB_AUDIENCE}"]

[[rule]]
name = "entra-serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
issuers = ["entra", "entra-v1"]
groups = ["Gateway.Invoke", "{ENTRA_GROUP}"]
principal = "claim:oid"

[[rule]]
name = "okta-serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
issuers = ["okta"]
scopes = ["serving:invoke"]
groups = ["ml-engineers"]
principal = "claim:uid"

[[rule]]
name = "keycloak-serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
issuers = ["keycloak"]
groups = ["model-invoker"]
principal = "claim:preferred_username"

[[rule]]
name = "auth0-serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
issuers = ["auth0"]
groups = ["invoke:serving"]
principal = "sub"

[[rule]]
name = "google-serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
issuers = ["google"]
claims = {{ hd = "example.com", email_verified = true }}
principal = "claim:email"

[[rule]]
name = "github-release"
methods = ["POST"]
paths = ["{JOBS}"]
issuers = ["github"]
claims = {{ repository_owner = "octo-org", environment = "prod" }}
claims_match = {{ ref = "refs/tags/v*" }}
principal = "claim:repository"
"#,
        audit = stack::AUDIT_PLACEHOLDER,
    )
}

/// The refusal's reason, from the deny body (`idgate: <reason>...`).
fn assert_refused(s: &Stack, r: &Resp, status: u16, reason: &str, what: &str) {
    s.expect(r, status, what);
    assert!(
        r.body.contains(&format!("idgate: {reason}")),
        "{what}: expected reason {reason}, body {:?}",
        r.body
    );
}

/// An allowed call: 200, the audit line names `rule`, and the upstream saw exactly these
/// identity headers.
struct Seen<'a> {
    user: &'a str,
    email: Option<&'a str>,
    groups: Option<&'a str>,
    principal: &'a str,
}

fn assert_allowed(s: &Stack, r: &Resp, rule: &str, want: Seen<'_>, what: &str) {
    s.expect(r, 200, what);
    let up = s.last_upstream();
    assert_identity(&up, Some(want.user), want.email, want.groups);
    assert_eq!(
        up.header_all("x-forwarded-principal"),
        vec![want.principal],
        "{what}"
    );
    let audit = s.audit(1);
    let last = audit.last().expect("an audit line");
    assert_eq!(last["rule"], json!(rule), "{what}: {last}");
}

fn each_idp_end_to_end(version: HaproxyVersion) {
    let rt = stack::runtime();
    let signers: Vec<Signer> = [
        "entra-k1",
        "okta-k1",
        "kc-k1",
        "auth0-k1",
        "google-k1",
        "gh-k1",
    ]
    .iter()
    .map(|kid| Signer::rsa(kid))
    .collect();
    let [entra_key, okta_key, kc_key, auth0_key, google_key, gh_key] = &signers[..] else {
        unreachable!()
    };
    let idp = rt.block_on(MockIdp::start(&signers.iter().collect::<Vec<_>>()));
    let Some(s) = Stack::start(version, &agent_config(&idp)) else {
        return;
    };
    let ms = "https://login.microsoftonline.com";

    // --- Entra ID v2.0: app roles, the user's object ID upstream ---
    let t = entra_v2(entra_key, ms, ENTRA_TENANT, ENTRA_TENANT);
    let r = s.call_as("POST", SERVING, &t);
    let seen = Seen {
        user: ENTRA_OID,
        email: Some("alice@contoso.com"),
        groups: Some("Gateway.Invoke"),
        principal: ENTRA_OID,
    };
    assert_allowed(
        &s,
        &r,
        "entra-serving",
        seen,
        "Entra v2 token with the app role",
    );
    let t = entra_v2_with(entra_key, ms, ENTRA_TENANT, ENTRA_TENANT, &["Reader"]);
    let r = s.call_as("POST", SERVING, &t);
    assert_refused(
        &s,
        &r,
        403,
        "no_matching_rule",
        "Entra v2 token without the role",
    );
    // --- Entra ID v1.0: group object IDs, `upn` as the email ---
    let t = entra_v1(entra_key, &[ENTRA_GROUP]);
    let r = s.call_as("POST", SERVING, &t);
    let seen = Seen {
        user: ENTRA_OID,
        email: Some("alice@contoso.com"),
        groups: Some(ENTRA_GROUP),
        principal: ENTRA_OID,
    };
    assert_allowed(&s, &r, "entra-serving", seen, "Entra v1 token in the group");
    // Another tenant's token at this single-tenant issuer: unknown_issuer, not a key problem.
    let other = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let t = entra_v2(entra_key, ms, other, other);
    let r = s.call_as("POST", SERVING, &t);
    assert_refused(
        &s,
        &r,
        401,
        "unknown_issuer",
        "Entra token of another tenant",
    );

    // --- Okta: `scp` array plus a groups claim; `sub` is the login ---
    let t = okta(
        okta_key,
        &["openid", "serving:invoke"],
        &["Everyone", "ml-engineers"],
    );
    let r = s.call_as("POST", SERVING, &t);
    let seen = Seen {
        user: "alice@example.com",
        email: None,
        groups: Some("Everyone,ml-engineers"),
        principal: "00uid4BxXw6I6TV4m0g3",
    };
    assert_allowed(
        &s,
        &r,
        "okta-serving",
        seen,
        "Okta token with scope and group",
    );
    let t = okta(okta_key, &["openid"], &["Everyone", "ml-engineers"]);
    let r = s.call_as("POST", SERVING, &t);
    assert_refused(
        &s,
        &r,
        403,
        "no_matching_rule",
        "Okta token without the scope",
    );

    // --- Keycloak: client roles under a client id with dots; the user name upstream ---
    let t = keycloak(kc_key, &["model-invoker"]);
    let r = s.call_as("POST", SERVING, &t);
    let seen = Seen {
        user: "alice",
        email: Some("alice@example.com"),
        groups: Some("model-invoker"),
        principal: "alice",
    };
    assert_allowed(
        &s,
        &r,
        "keycloak-serving",
        seen,
        "Keycloak token with the client role",
    );
    let t = keycloak(kc_key, &[]);
    let r = s.call_as("POST", SERVING, &t);
    assert_refused(
        &s,
        &r,
        403,
        "no_matching_rule",
        "Keycloak token without the role",
    );
    // A public client's token without an audience mapper: `aud` is only `account`.
    let t = keycloak_for(kc_key, &["account"], &["model-invoker"]);
    let r = s.call_as("POST", SERVING, &t);
    assert_refused(
        &s,
        &r,
        401,
        "wrong_audience",
        "Keycloak token for `account` only",
    );

    // --- Auth0: RBAC permissions, the email in a namespaced claim ---
    let t = auth0(auth0_key, &["invoke:serving", "read:models"]);
    let r = s.call_as("POST", SERVING, &t);
    let seen = Seen {
        user: "auth0|5f7c8ec7c33c6c004bbafe82",
        email: Some("alice@example.com"),
        groups: Some("invoke:serving,read:models"),
        principal: "auth0|5f7c8ec7c33c6c004bbafe82",
    };
    assert_allowed(
        &s,
        &r,
        "auth0-serving",
        seen,
        "Auth0 token with the permission",
    );
    let t = auth0(auth0_key, &["read:models"]);
    let r = s.call_as("POST", SERVING, &t);
    assert_refused(
        &s,
        &r,
        403,
        "no_matching_rule",
        "Auth0 token without the permission",
    );

    // --- Google: the bare issuer, Workspace domain and verified email ---
    let t = google_id_token(google_key, "accounts.google.com");
    let r = s.call_as("POST", SERVING, &t);
    let seen = Seen {
        user: "jsmith@example.com",
        email: Some("jsmith@example.com"),
        groups: None,
        principal: "jsmith@example.com",
    };
    assert_allowed(
        &s,
        &r,
        "google-serving",
        seen,
        "Google ID token, bare issuer",
    );
    // The https form is another issuer value: not configured here.
    let t = google_id_token(google_key, "https://accounts.google.com");
    let r = s.call_as("POST", SERVING, &t);
    assert_refused(
        &s,
        &r,
        401,
        "unknown_issuer",
        "Google token with the https issuer",
    );

    // --- GitHub Actions: a release tag of the organization's repository ---
    let t = github_actions(gh_key, "octo-org/octo-repo", "refs/tags/v1.4.0");
    let r = s.call_as("POST", JOBS, &t);
    let sub = "repo:octo-org/octo-repo:environment:prod";
    let seen = Seen {
        user: sub,
        email: None,
        groups: None,
        principal: "octo-org/octo-repo",
    };
    assert_allowed(
        &s,
        &r,
        "github-release",
        seen,
        "GitHub Actions on a release tag",
    );
    for (repo, git_ref, what) in [
        ("octo-org/octo-repo", "refs/heads/main", "a branch"),
        ("octo-org/octo-repo", "refs/tags/v1/x", "a tag below v*/"),
        (
            "evil-org/octo-repo",
            "refs/tags/v1.4.0",
            "another organization",
        ),
    ] {
        let t = github_actions(gh_key, repo, git_ref);
        let r = s.call_as("POST", JOBS, &t);
        assert_refused(&s, &r, 403, "no_matching_rule", &format!("GitHub: {what}"));
    }

    // Every refusal stayed at the gateway: 7 allowed calls reached the upstream.
    assert_eq!(s.echo.count(), 7, "refused requests reached the upstream");
}

haproxy_tests!(full: [each_idp_end_to_end]);
