//! Access and ID tokens shaped exactly as each identity provider issues them: the header
//! (`typ`, `kid`, `x5t` where the IdP sends one) and the claim layout of each IdP's own
//! reference page, with the values its examples use. Only `iss` (for IdPs whose issuer embeds
//! a host that the test replaces) and the times are parameters; each token is signed by the
//! given [`Signer`], whose key the test's mock JWKS publishes.
//!
//! Sources (the claim tables these follow):
//! - Entra ID: "Access token claims reference" (v1.0 and v2.0), Microsoft identity platform.
//! - Okta: "Access token" claims of a custom authorization server (`ver`, `jti` `AT.`, `cid`,
//!   `uid`, `scp` array, `sub` the login).
//! - Keycloak: a realm's access token (`typ` claim `Bearer`, `azp`, `realm_access`,
//!   `resource_access`, `preferred_username`).
//! - Auth0: "Access Tokens" (`iss` with a trailing slash, `aud` array with `/userinfo`, `scope`
//!   string, RBAC `permissions`, namespaced custom claims).
//! - Google: "OpenID Connect" ID token (bare or https `iss`, `hd`, `email_verified`).
//! - GitHub Actions: "About security hardening with OpenID Connect" (`sub`
//!   `repo:OWNER/REPO:...`, `ref`, `repository_owner`, `environment`, `job_workflow_ref`).

#![allow(dead_code)] // each test file uses some of these

use serde_json::json;

use super::auth_kit::{now, Signer};

/// The tenant of the Entra ID examples.
pub const ENTRA_TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The gateway's app registration (client id): the `aud` of Entra v2 access tokens for it.
pub const ENTRA_CLIENT_ID: &str = "6e74172b-be56-4843-9ff4-e66a39bb12e3";
/// The user's object ID (the same in every app of the tenant).
pub const ENTRA_OID: &str = "00000000-0000-0000-66f3-3332eca7ea81";
/// A security group's object ID (what `groups` holds in Entra tokens).
pub const ENTRA_GROUP: &str = "93e8f556-8661-4955-87b6-890bc043c30f";

/// An Entra ID v2.0 access token (header typ JWT, RS256, kid; no `x5t` in v2) for tenant
/// `tid`, with `iss` = `{iss_base}/{iss_tenant}/v2.0` and the app roles in `roles`.
pub fn entra_v2(signer: &Signer, iss_base: &str, iss_tenant: &str, tid: &str) -> String {
    entra_v2_with(signer, iss_base, iss_tenant, tid, &["Gateway.Invoke"])
}

pub fn entra_v2_with(
    signer: &Signer,
    iss_base: &str,
    iss_tenant: &str,
    tid: &str,
    roles: &[&str],
) -> String {
    let n = now();
    let claims = json!({
        "aud": ENTRA_CLIENT_ID,
        "iss": format!("{iss_base}/{iss_tenant}/v2.0"),
        "iat": n, "nbf": n, "exp": n + 3600,
        "aio": "AWQAm/8TAAAA",
        "azp": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
        "azpacr": "0",
        "name": "Alice Example",
        "oid": ENTRA_OID,
        "preferred_username": "alice@contoso.com",
        "rh": "0.ARoAv4j5cvGGr0GRqy180BHbR.",
        "roles": roles,
        "scp": "access_as_user",
        "sub": "AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ",
        "tid": tid,
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "2.0"
    });
    signer.sign_with_header(
        &json!({"typ": "JWT", "alg": "RS256", "kid": signer.kid}),
        &claims,
    )
}

/// An Entra ID v1.0 access token: `iss` `https://sts.windows.net/{tid}/`, `aud` the App ID
/// URI, `upn` and `unique_name`, group object IDs in `groups`, and `x5t` next to `kid` in the
/// header (v1 tokens carry both, with the same value).
pub fn entra_v1(signer: &Signer, groups: &[&str]) -> String {
    let n = now();
    let claims = json!({
        "aud": format!("api://{ENTRA_CLIENT_ID}"),
        "iss": format!("https://sts.windows.net/{ENTRA_TENANT}/"),
        "iat": n, "nbf": n, "exp": n + 3600,
        "acr": "1",
        "aio": "AVQAq/8TAAAA",
        "amr": ["pwd", "mfa"],
        "appid": "04b07795-8ddb-461a-bbee-02f9e1bf7b46",
        "appidacr": "0",
        "family_name": "Example",
        "given_name": "Alice",
        "groups": groups,
        "ipaddr": "192.0.2.10",
        "name": "Alice Example",
        "oid": ENTRA_OID,
        "rh": "0.ARoAv4j5cvGGr0GRqy180BHbR.",
        "scp": "user_impersonation",
        "sub": "l3_roISQU222bULS9yi2k0XpqpOiMz5H3ZACo1GeXA",
        "tid": ENTRA_TENANT,
        "unique_name": "alice@contoso.com",
        "upn": "alice@contoso.com",
        "uti": "fqiBqXLPj0eQa82S-IYFAA",
        "ver": "1.0"
    });
    signer.sign_with_header(
        &json!({"typ": "JWT", "alg": "RS256", "x5t": signer.kid, "kid": signer.kid}),
        &claims,
    )
}

/// The issuer of the Okta examples: a custom authorization server (`/oauth2/default`).
pub const OKTA_ISSUER: &str = "https://dev-133337.okta.com/oauth2/default";

/// An Okta access token of the `default` custom authorization server: header `kid` and
/// `alg` only, `scp` an array, `sub` the user's login, `groups` from a groups claim the
/// operator added to the authorization server.
pub fn okta(signer: &Signer, scopes: &[&str], groups: &[&str]) -> String {
    let n = now();
    signer.sign_with_header(
        &json!({"kid": signer.kid, "alg": "RS256"}),
        &json!({
            "ver": 1,
            "jti": "AT.0mP4JKAZX1iACIT4vbEDF7LpvDVjxypPMf0D7uX39RE",
            "iss": OKTA_ISSUER,
            "aud": "api://default",
            "iat": n, "exp": n + 3600,
            "cid": "0oa1hbsj3zuS1pHsJ0h8",
            "uid": "00uid4BxXw6I6TV4m0g3",
            "scp": scopes,
            "auth_time": n - 60,
            "sub": "alice@example.com",
            "groups": groups
        }),
    )
}

/// The issuer of the Keycloak examples (`/realms/<realm>`, no trailing slash).
pub const KEYCLOAK_ISSUER: &str = "https://kc.example.com/realms/corp";
/// A client id with dots, as Keycloak operators name clients after host names.
pub const KEYCLOAK_CLIENT: &str = "gw.example.com";
/// The user's id (a UUID in `sub`).
pub const KEYCLOAK_SUB: &str = "f3c9a3a2-7b1e-4a7c-9d55-0d2a4b1e8c31";

/// A Keycloak access token: header typ JWT, the `typ` claim `Bearer`, realm roles and the
/// gateway client's roles under `resource_access."gw.example.com"`, `aud` with `account`.
pub fn keycloak(signer: &Signer, client_roles: &[&str]) -> String {
    keycloak_for(signer, &[KEYCLOAK_CLIENT, "account"], client_roles)
}

/// [`keycloak`] with this `aud`.
pub fn keycloak_for(signer: &Signer, aud: &[&str], client_roles: &[&str]) -> String {
    let n = now();
    signer.sign_with_header(
        &json!({"alg": "RS256", "typ": "JWT", "kid": signer.kid}),
        &json!({
            "exp": n + 300, "iat": n, "auth_time": n - 30,
            "jti": "onrtac:1c8a8b0e-3b7e-4d2c-9f0a-5e6b7c8d9e0f",
            "iss": KEYCLOAK_ISSUER,
            "aud": aud,
            "sub": KEYCLOAK_SUB,
            "typ": "Bearer",
            "azp": "notebook-cli",
            "sid": "7b1c1c3e-6f6e-4d1b-a2a5-3f0d3c6d0a11",
            "acr": "1",
            "allowed-origins": ["https://notebooks.example.com"],
            "realm_access": {"roles": ["default-roles-corp", "offline_access", "uma_authorization"]},
            "resource_access": {
                KEYCLOAK_CLIENT: {"roles": client_roles},
                "account": {"roles": ["manage-account", "view-profile"]}
            },
            "scope": "openid email profile",
            "email_verified": true,
            "name": "Alice Example",
            "preferred_username": "alice",
            "given_name": "Alice",
            "family_name": "Example",
            "email": "alice@example.com"
        }),
    )
}

/// The issuer of the Auth0 examples: the tenant's domain WITH the trailing slash.
pub const AUTH0_ISSUER: &str = "https://example-corp.us.auth0.com/";
/// The API's identifier (the `audience` requested).
pub const AUTH0_AUDIENCE: &str = "https://gateway.example.com";
/// The namespace of the tenant's custom claims (an Action adds them).
pub const AUTH0_NAMESPACE: &str = "https://example.com";

/// An Auth0 access token for a user: `aud` an array with the `/userinfo` audience, `scope` a
/// string, RBAC `permissions`, and a namespaced custom claim with the user's email.
pub fn auth0(signer: &Signer, permissions: &[&str]) -> String {
    let n = now();
    signer.sign_with_header(
        &json!({"alg": "RS256", "typ": "JWT", "kid": signer.kid}),
        &json!({
            format!("{AUTH0_NAMESPACE}/email"): "alice@example.com",
            "iss": AUTH0_ISSUER,
            "sub": "auth0|5f7c8ec7c33c6c004bbafe82",
            "aud": [AUTH0_AUDIENCE, "https://example-corp.us.auth0.com/userinfo"],
            "iat": n, "exp": n + 86400,
            "scope": "openid profile email",
            "azp": "xH2yK8Q3pLmN5rT7vW9zA1bC3dE5fG7h",
            "permissions": permissions
        }),
    )
}

/// The OAuth client id of the Google examples (the `aud` of its ID tokens).
pub const GOOGLE_CLIENT: &str = "1234987819200.apps.googleusercontent.com";

/// A Google ID token (header alg RS256, kid, typ JWT), with `iss` in the given form (Google
/// issues both `https://accounts.google.com` and the bare `accounts.google.com`).
pub fn google_id_token(signer: &Signer, iss: &str) -> String {
    let n = now();
    signer.sign_with_header(
        &json!({"alg": "RS256", "kid": signer.kid, "typ": "JWT"}),
        &json!({
            "iss": iss,
            "azp": GOOGLE_CLIENT,
            "aud": GOOGLE_CLIENT,
            "sub": "110169484474386276334",
            "at_hash": "HK6E_P6Dh8Y93mRNtsDB1Q",
            "hd": "example.com",
            "email": "jsmith@example.com",
            "email_verified": true,
            "iat": n,
            "exp": n + 3600,
            "name": "J Smith",
            "given_name": "J",
            "family_name": "Smith"
        }),
    )
}

pub const GITHUB_ISSUER: &str = "https://token.actions.githubusercontent.com";
/// The audience the workflow requests (`core.getIDToken(...)`).
pub const GITHUB_AUDIENCE: &str = "https://github.com/octo-org";

/// A GitHub Actions OIDC token of a workflow run on `git_ref` of `repository` in environment
/// `prod` (header typ JWT, RS256, `x5t` and `kid`).
pub fn github_actions(signer: &Signer, repository: &str, git_ref: &str) -> String {
    let n = now();
    let owner = repository.split('/').next().unwrap_or(repository);
    let ref_type = if git_ref.starts_with("refs/tags/") {
        "tag"
    } else {
        "branch"
    };
    signer.sign_with_header(
        &json!({"typ": "JWT", "alg": "RS256", "x5t": signer.kid, "kid": signer.kid}),
        &json!({
            "jti": "example-id",
            "sub": format!("repo:{repository}:environment:prod"),
            "environment": "prod",
            "aud": GITHUB_AUDIENCE,
            "ref": git_ref,
            "ref_type": ref_type,
            "sha": "example-sha",
            "repository": repository,
            "repository_owner": owner,
            "repository_owner_id": "65",
            "repository_id": "74",
            "repository_visibility": "private",
            "actor_id": "12",
            "actor": "octocat",
            "workflow": "release",
            "head_ref": "",
            "base_ref": "",
            "event_name": "push",
            "run_id": "example-run-id",
            "run_number": "10",
            "run_attempt": "2",
            "runner_environment": "github-hosted",
            "job_workflow_ref": format!("{repository}/.github/workflows/release.yml@{git_ref}"),
            "iss": GITHUB_ISSUER,
            "nbf": n - 5,
            "exp": n + 300,
            "iat": n
        }),
    )
}
