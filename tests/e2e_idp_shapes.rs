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
use support::stack::{self, Stack};

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

"#,
        audit = stack::AUDIT_PLACEHOLDER,
    ) + &rules()
}

/// One rule per IdP, as its operator writes it: POST only, one issuer's callers, what that IdP
/// carries the permission in, and the principal the upstream should act for.
fn rules() -> String {
    let serving = "/serving-endpoints/*/invocations";
    [
        ("entra-serving", serving, r#""entra", "entra-v1""#,
         format!(r#"groups = ["Gateway.Invoke", "{ENTRA_GROUP}"]
principal = "claim:oid""#)),
        ("okta-serving", serving, r#""okta""#, r#"scopes = ["serving:invoke"]
groups = ["ml-engineers"]
principal = "claim:uid""#.into()),
        ("keycloak-serving", serving, r#""keycloak""#, r#"groups = ["model-invoker"]
principal = "claim:preferred_username""#.into()),
        ("auth0-serving", serving, r#""auth0""#, r#"groups = ["invoke:serving"]
principal = "sub""#.into()),
        ("google-serving", serving, r#""google""#, r#"claims = { hd = "example.com", email_verified = true }
principal = "claim:email""#.into()),
        ("github-release", JOBS, r#""github""#, r#"claims = { repository_owner = "octo-org", environment = "prod" }
claims_match = { ref = "refs/tags/v*" }
principal = "claim:repository""#.into()),
    ]
    .iter()
    .map(|(name, path, issuers, body)| {
        format!("\n[[rule]]\nname = \"{name}\"\nmethods = [\"POST\"]\npaths = [\"{path}\"]\nissuers = [{issuers}]\n{body}\n")
    })
    .collect()
}

/// What the upstream sees for an allowed call.
struct Seen {
    user: &'static str,
    email: Option<&'static str>,
    groups: Option<&'static str>,
    principal: &'static str,
}

/// What one call must get.
enum Want {
    /// 200, the audit line names this rule, and the upstream saw exactly these identity headers.
    Allowed(&'static str, Seen),
    /// This status, and the deny body (`idgate: <reason>: ...`) names this reason.
    Refused(u16, &'static str),
}
use Want::{Allowed, Refused};

fn check(s: &Stack, what: &str, path: &str, token: &str, want: &Want) {
    let r = s.call_as("POST", path, token);
    match want {
        Allowed(rule, seen) => {
            s.expect(&r, 200, what);
            let up = s.last_upstream();
            assert_identity(&up, Some(seen.user), seen.email, seen.groups);
            let principal = up.header_all("x-forwarded-principal");
            assert_eq!(principal, vec![seen.principal], "{what}");
            let audit = s.audit(1);
            let last = audit.last().expect("an audit line");
            assert_eq!(last["rule"], json!(rule), "{what}: {last}");
        }
        Refused(status, reason) => {
            s.expect(&r, *status, what);
            let said = format!("idgate: {reason}");
            assert!(
                r.body.contains(&said),
                "{what}: want {said}, got {:?}",
                r.body
            );
        }
    }
}

fn each_idp_end_to_end(version: HaproxyVersion) {
    let rt = stack::runtime();
    let kids = [
        "entra-k1",
        "okta-k1",
        "kc-k1",
        "auth0-k1",
        "google-k1",
        "gh-k1",
    ];
    let signers: Vec<Signer> = kids.iter().map(|kid| Signer::rsa(kid)).collect();
    let [entra_key, okta_key, kc_key, auth0_key, google_key, gh_key] = &signers[..] else {
        unreachable!()
    };
    let idp = rt.block_on(MockIdp::start(&signers.iter().collect::<Vec<_>>()));
    let Some(s) = Stack::start(version, &agent_config(&idp)) else {
        return;
    };
    let ms = "https://login.microsoftonline.com";
    let other_tenant = "9188040d-6c67-4c5b-b112-36a304b66dad";
    let gh_sub = "repo:octo-org/octo-repo:environment:prod";
    let auth0_sub = "auth0|5f7c8ec7c33c6c004bbafe82";
    let entra_seen = |groups| Seen {
        user: ENTRA_OID,
        email: Some("alice@contoso.com"),
        groups: Some(groups),
        principal: ENTRA_OID,
    };
    let cases: Vec<(&str, &str, String, Want)> = vec![
        // Entra ID v2.0: app roles, the user's object ID upstream.
        (
            "Entra v2 token with the app role",
            SERVING,
            entra_v2(entra_key, ms, ENTRA_TENANT, ENTRA_TENANT),
            Allowed("entra-serving", entra_seen("Gateway.Invoke")),
        ),
        (
            "Entra v2 token without the role",
            SERVING,
            entra_v2_with(entra_key, ms, ENTRA_TENANT, ENTRA_TENANT, &["Reader"]),
            Refused(403, "no_matching_rule"),
        ),
        // Entra ID v1.0: group object IDs, `upn` as the email.
        (
            "Entra v1 token in the group",
            SERVING,
            entra_v1(entra_key, &[ENTRA_GROUP]),
            Allowed("entra-serving", entra_seen(ENTRA_GROUP)),
        ),
        // Another tenant's token at this single-tenant issuer: unknown_issuer, not a key
        // problem.
        (
            "Entra token of another tenant",
            SERVING,
            entra_v2(entra_key, ms, other_tenant, other_tenant),
            Refused(401, "unknown_issuer"),
        ),
        // Okta: `scp` array plus a groups claim; `sub` is the login.
        (
            "Okta token with scope and group",
            SERVING,
            okta(
                okta_key,
                &["openid", "serving:invoke"],
                &["Everyone", "ml-engineers"],
            ),
            Allowed(
                "okta-serving",
                Seen {
                    user: "alice@example.com",
                    email: None,
                    groups: Some("Everyone,ml-engineers"),
                    principal: "00uid4BxXw6I6TV4m0g3",
                },
            ),
        ),
        (
            "Okta token without the scope",
            SERVING,
            okta(okta_key, &["openid"], &["Everyone", "ml-engineers"]),
            Refused(403, "no_matching_rule"),
        ),
        // Keycloak: client roles under a client id with dots; the user name upstream.
        (
            "Keycloak token with the client role",
            SERVING,
            keycloak(kc_key, &["model-invoker"]),
            Allowed(
                "keycloak-serving",
                Seen {
                    user: "alice",
                    email: Some("alice@example.com"),
                    groups: Some("model-invoker"),
                    principal: "alice",
                },
            ),
        ),
        (
            "Keycloak token without the role",
            SERVING,
            keycloak(kc_key, &[]),
            Refused(403, "no_matching_rule"),
        ),
        // A public client's token without an audience mapper: `aud` is only `account`.
        (
            "Keycloak token for `account` only",
            SERVING,
            keycloak_for(kc_key, &["account"], &["model-invoker"]),
            Refused(401, "wrong_audience"),
        ),
        // Auth0: RBAC permissions, the email in a namespaced claim.
        (
            "Auth0 token with the permission",
            SERVING,
            auth0(auth0_key, &["invoke:serving", "read:models"]),
            Allowed(
                "auth0-serving",
                Seen {
                    user: auth0_sub,
                    email: Some("alice@example.com"),
                    groups: Some("invoke:serving,read:models"),
                    principal: auth0_sub,
                },
            ),
        ),
        (
            "Auth0 token without the permission",
            SERVING,
            auth0(auth0_key, &["read:models"]),
            Refused(403, "no_matching_rule"),
        ),
        // Google: the bare issuer, Workspace domain and verified email.
        (
            "Google ID token, bare issuer",
            SERVING,
            google_id_token(google_key, "accounts.google.com"),
            Allowed(
                "google-serving",
                Seen {
                    user: "jsmith@example.com",
                    email: Some("jsmith@example.com"),
                    groups: None,
                    principal: "jsmith@example.com",
                },
            ),
        ),
        // The https form is another issuer value: not configured here.
        (
            "Google token with the https issuer",
            SERVING,
            google_id_token(google_key, "https://accounts.google.com"),
            Refused(401, "unknown_issuer"),
        ),
        // GitHub Actions: a release tag of the organization's repository.
        (
            "GitHub Actions on a release tag",
            JOBS,
            github_actions(gh_key, "octo-org/octo-repo", "refs/tags/v1.4.0"),
            Allowed(
                "github-release",
                Seen {
                    user: gh_sub,
                    email: None,
                    groups: None,
                    principal: "octo-org/octo-repo",
                },
            ),
        ),
        (
            "GitHub: a branch",
            JOBS,
            github_actions(gh_key, "octo-org/octo-repo", "refs/heads/main"),
            Refused(403, "no_matching_rule"),
        ),
        (
            "GitHub: a tag below v*/",
            JOBS,
            github_actions(gh_key, "octo-org/octo-repo", "refs/tags/v1/x"),
            Refused(403, "no_matching_rule"),
        ),
        (
            "GitHub: another organization",
            JOBS,
            github_actions(gh_key, "evil-org/octo-repo", "refs/tags/v1.4.0"),
            Refused(403, "no_matching_rule"),
        ),
    ];
    let allowed = cases.iter().filter(|c| matches!(c.3, Allowed(..))).count();
    for (what, path, token, want) in &cases {
        check(&s, what, path, token, want);
    }
    // Every refusal stayed at the gateway.
    assert_eq!(
        s.echo.count(),
        allowed,
        "refused requests reached the upstream"
    );
}

haproxy_tests!(full: [each_idp_end_to_end]);
