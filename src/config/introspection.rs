//! `[[issuer]]` with `kind = "introspection"`: an issuer whose access tokens idgate cannot
//! validate itself (opaque tokens, or Okta's org authorization server) and asks the IdP about
//! instead, with OAuth 2.0 Token Introspection (RFC 7662). See docs/idp/introspection.md.
//!
//! Keys: `introspection_url` (required), `client_id` (required), `client_secret_file`
//! (required: secrets come from files), `client_auth` (`client_secret_basic`, the default, or
//! `client_secret_post`), `introspection_cache_ttl` (default 60s), `introspection_negative_ttl`
//! (default 10s), `introspection_cache_size` (default 10000) and `opaque_tokens` (default true:
//! this issuer receives the tokens that are not JWTs; at most one issuer may).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::files::SecretFile;
use super::read::{Cx, Table};
use super::value::{secs, Dur, HttpsUrl};

/// `kind` of an `[[issuer]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IssuerSource {
    /// Signed JWTs validated locally with the issuer's JWKS (the default).
    #[default]
    Jwt,
    /// Tokens sent to the IdP's introspection endpoint (RFC 7662).
    Introspection,
}

/// How idgate authenticates to the introspection endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectionAuth {
    /// `Authorization: Basic base64(urlencode(client_id):urlencode(secret))`.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form.
    ClientSecretPost,
}

impl IntrospectionAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            IntrospectionAuth::ClientSecretBasic => "client_secret_basic",
            IntrospectionAuth::ClientSecretPost => "client_secret_post",
        }
    }
}

/// The introspection settings of an issuer of `kind = "introspection"`.
#[derive(Debug, Clone, PartialEq)]
pub struct IntrospectionConfig {
    /// The IdP's introspection endpoint (Okta `{issuer}/v1/introspect`, Keycloak
    /// `{issuer}/protocol/openid-connect/token/introspect`).
    pub url: HttpsUrl,
    pub client_id: String,
    pub client_secret_file: SecretFile,
    pub client_auth: IntrospectionAuth,
    /// Longest time an active answer is reused; never beyond the token's `exp`.
    pub cache_ttl: Dur,
    /// How long an inactive (or refused) answer is reused; 0 disables.
    pub negative_ttl: Dur,
    /// Most answers cached.
    pub cache_size: u64,
    /// Whether tokens that are not JWTs go to this issuer.
    pub opaque_tokens: bool,
}

/// The keys only an introspection issuer reads.
pub(crate) const KEYS: [&str; 8] = [
    "introspection_url",
    "client_id",
    "client_secret_file",
    "client_auth",
    "introspection_cache_ttl",
    "introspection_negative_ttl",
    "introspection_cache_size",
    "opaque_tokens",
];

/// The keys of a JWT issuer that an introspection issuer has no use for (the IdP checks the
/// signature): given anyway, they are reported rather than silently ignored.
pub(crate) const JWT_ONLY_KEYS: [&str; 7] = [
    "jwks_uri",
    "tenants",
    "algorithms",
    "allowed_typ",
    "jwks_refresh",
    "unknown_kid_refetch_interval",
    "unknown_kid_wait",
];

impl IntrospectionConfig {
    /// Read the keys of `kind = "introspection"` (missing required keys reported); for
    /// another kind, report every one present. `None` when not usable.
    pub(crate) fn read(t: &mut Table<'_, '_>, source: IssuerSource) -> Option<IntrospectionConfig> {
        if source != IssuerSource::Introspection {
            for key in KEYS {
                t.refuse(key, "only for an issuer with kind = \"introspection\"");
            }
            return None;
        }
        for key in JWT_ONLY_KEYS {
            t.refuse(
                key,
                "not used by kind = \"introspection\" (the IdP checks the token's signature)",
            );
        }
        let url = t.required("introspection_url");
        let client_id = t.required::<String>("client_id");
        let secret = t.required::<PathBuf>("client_secret_file");
        let client_auth = t.get("client_auth");
        let cache_ttl = t.get("introspection_cache_ttl");
        let negative_ttl = t.get("introspection_negative_ttl");
        let cache_size = t.get("introspection_cache_size");
        let opaque_tokens = t.get("opaque_tokens");
        Some(IntrospectionConfig {
            url: url?,
            client_id: client_id?,
            client_secret_file: SecretFile::unresolved(secret?),
            client_auth: client_auth.unwrap_or_default(),
            cache_ttl: cache_ttl.unwrap_or(secs(60)),
            negative_ttl: negative_ttl.unwrap_or(secs(10)),
            cache_size: cache_size.unwrap_or(10_000),
            opaque_tokens: opaque_tokens.unwrap_or(true),
        })
    }

    /// Ranges and the secret file of issuer `i`.
    pub(crate) fn check(&mut self, i: usize, cx: &mut Cx<'_>) {
        let k = |field: &str| format!("issuer[{i}].{field}");
        if self.client_id.is_empty() || !self.client_id.bytes().all(|b| b.is_ascii_graphic()) {
            cx.push(
                k("client_id"),
                "must be non-empty visible ASCII (the client registered at the IdP for \
                 introspection)",
            );
        }
        if let Err(e) = self.client_secret_file.resolve(&cx.dirs) {
            cx.push(k("client_secret_file"), e);
        }
        let s = Duration::from_secs;
        if !(s(1)..=s(3600)).contains(&self.cache_ttl.0) {
            cx.push(
                k("introspection_cache_ttl"),
                "must be between 1s and 1h (a revoked token is accepted for at most this long)",
            );
        }
        if self.negative_ttl.0 > s(300) {
            cx.push(k("introspection_negative_ttl"), "at most 5m");
        }
        if self.cache_size == 0 {
            cx.push(
                k("introspection_cache_size"),
                "must be at least 1 (every request would call the IdP)",
            );
        }
        if self.url.url().query().is_some() || self.url.url().fragment().is_some() {
            cx.push(
                k("introspection_url"),
                "must have no query or fragment (Okta: \"https://{yourOktaDomain}/oauth2/default/v1/introspect\", \
                 Keycloak: \"https://{host}/realms/{realm}/protocol/openid-connect/token/introspect\")",
            );
        }
    }
}
