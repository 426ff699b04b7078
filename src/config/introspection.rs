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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// An Okta custom authorization server, as an operator configures it, with the secret in
    /// `dir`; `extra` is appended.
    fn okta(dir: &std::path::Path, extra: &str) -> String {
        std::fs::write(dir.join("okta.secret"), "s3cr3t\n").unwrap();
        format!(
            "[[issuer]]\nname = \"okta\"\nkind = \"introspection\"\n\
             issuer = \"https://dev-133337.okta.com/oauth2/default\"\n\
             introspection_url = \"https://dev-133337.okta.com/oauth2/default/v1/introspect\"\n\
             client_id = \"0oa1abcdEFGH2ijk3l4m\"\nclient_secret_file = \"okta.secret\"\n\
             audiences = [\"api://default\"]\n{extra}"
        )
    }

    fn shown(text: &str, dir: &std::path::Path) -> Vec<String> {
        match Config::from_toml_in(text, "t", dir) {
            Ok(_) => Vec::new(),
            Err(e) => e
                .problems
                .iter()
                .map(|p| format!("{}: {}", p.key, p.message))
                .collect(),
        }
    }

    #[test]
    fn defaults() {
        let d = tempfile::tempdir().unwrap();
        let c = Config::from_toml_in(&okta(d.path(), ""), "t", d.path()).unwrap();
        let i = &c.issuers[0];
        assert_eq!(i.kind, IssuerSource::Introspection);
        let ic = i.introspection.as_ref().unwrap();
        assert_eq!(ic.client_auth, IntrospectionAuth::ClientSecretBasic);
        assert_eq!(ic.cache_ttl, secs(60));
        assert_eq!(ic.negative_ttl, secs(10));
        assert_eq!(ic.cache_size, 10_000);
        assert!(ic.opaque_tokens);
        assert_eq!(i.http_timeout, secs(2), "a call on the request's path");
        assert_eq!(ic.client_secret_file.path(), d.path().join("okta.secret"));
    }

    #[test]
    fn mistakes_are_reported_by_key() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        // The JWT keys an operator copies from a JWT issuer.
        let got = shown(
            &okta(
                p,
                "jwks_uri = \"https://dev-133337.okta.com/oauth2/default/v1/keys\"\n",
            ),
            p,
        );
        assert_eq!(
            got,
            [
                "issuer[0].jwks_uri: not used by kind = \"introspection\" (the IdP checks the \
              token's signature)"
            ]
        );
        // http:// to a non-loopback host, a query string, bounds.
        let text = okta(p, "").replace(
            "https://dev-133337.okta.com/oauth2/default/v1",
            "http://idp.example.com",
        );
        assert_eq!(
            shown(&text, p),
            [
                "issuer[0].introspection_url: \"http://idp.example.com/introspect\": http:// is \
              only allowed for loopback hosts; use https://"
            ]
        );
        let got = shown(
            &okta(
                p,
                "introspection_cache_ttl = \"2h\"\nintrospection_negative_ttl = \"10m\"\n\
                 introspection_cache_size = 0\nclient_auth = \"private_key_jwt\"\n",
            ),
            p,
        );
        let keys: Vec<&str> = got.iter().map(|s| s.split(':').next().unwrap()).collect();
        assert_eq!(keys, ["issuer[0].client_auth"], "{got:?}");
        let got = shown(
            &okta(
                p,
                "introspection_cache_ttl = \"2h\"\nintrospection_negative_ttl = \"10m\"\n\
                 introspection_cache_size = 0\n",
            ),
            p,
        );
        let keys: Vec<&str> = got.iter().map(|s| s.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "issuer[0].introspection_cache_ttl",
                "issuer[0].introspection_negative_ttl",
                "issuer[0].introspection_cache_size",
            ]
        );
        // No secret file, no audiences.
        let text = okta(p, "")
            .replace("client_secret_file = \"okta.secret\"\n", "")
            .replace("audiences = [\"api://default\"]\n", "audiences = []\n");
        let got = shown(&text, p);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("issuer[0].client_secret_file: missing field"),
            "{got:?}"
        );
        let text = okta(p, "").replace("[\"api://default\"]", "[]");
        let got = shown(&text, p);
        assert!(
            got[0].starts_with("issuer[0].audiences: required")
                && got[0].contains("api://default")
                && got[0].contains("account"),
            "{got:?}"
        );
        let text = okta(p, "").replace("okta.secret\"", "missing.secret\"");
        let got = shown(&text, p);
        assert!(
            got[0].starts_with("issuer[0].client_secret_file: \"missing.secret\" not found"),
            "{got:?}"
        );
    }

    #[test]
    fn introspection_keys_on_a_jwt_issuer_and_two_opaque_receivers() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let got = shown(
            "[[issuer]]\nname = \"kc\"\nissuer = \"https://kc.example.com/realms/corp\"\n\
             audiences = [\"idgate\"]\nclient_id = \"idgate\"\n",
            p,
        );
        assert_eq!(
            got,
            ["issuer[0].client_id: only for an issuer with kind = \"introspection\""]
        );
        let two = format!(
            "{}{}",
            okta(p, ""),
            okta(p, "")
                .replace("name = \"okta\"", "name = \"okta2\"")
                .replace(
                    "https://dev-133337.okta.com/oauth2/default\"\n",
                    "https://dev-133337.okta.com\"\n"
                )
        );
        let got = shown(&two, p);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("issuer[1].opaque_tokens: issuer[0] already receives"),
            "{got:?}"
        );
        let fixed = two.replacen(
            "name = \"okta2\"\n",
            "name = \"okta2\"\nopaque_tokens = false\n",
            1,
        );
        assert_eq!(shown(&fixed, p), Vec::<String>::new());
    }
}
