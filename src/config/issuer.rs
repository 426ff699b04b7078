//! `[[issuer]]` (contract §4): an OIDC issuer whose tokens are accepted.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use super::cond::ClaimPath;
use super::files::SecretFile;
use super::introspection::{IntrospectionConfig, IssuerSource};
use super::issuer_id::{IssuerId, IssuerKind, TenantId};
use super::read::{Cx, Table};
use super::value::{first_seen, is_name_byte, secs, string_value, Dur, HttpsUrl};

/// A JWS algorithm an issuer may allow. HMAC is absent on purpose (a JWKS issuer never
/// legitimately signs with a shared secret, and allowing it is the RS/HS key-confusion attack,
/// RFC 8725 §2.1), and so is `none`: neither can be configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in the order of the error message.
    pub const ALL: [Algorithm; 9] = [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ];

    /// The JOSE name (case-sensitive).
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
        }
    }
}

impl From<Algorithm> for jsonwebtoken::Algorithm {
    fn from(a: Algorithm) -> jsonwebtoken::Algorithm {
        match a {
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
            Algorithm::RS384 => jsonwebtoken::Algorithm::RS384,
            Algorithm::RS512 => jsonwebtoken::Algorithm::RS512,
            Algorithm::PS256 => jsonwebtoken::Algorithm::PS256,
            Algorithm::PS384 => jsonwebtoken::Algorithm::PS384,
            Algorithm::PS512 => jsonwebtoken::Algorithm::PS512,
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::ES384 => jsonwebtoken::Algorithm::ES384,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
        }
    }
}

impl FromStr for Algorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Algorithm, String> {
        Algorithm::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<_> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
                format!("{s:?} is not allowed (supported: {})", all.join(", "))
            })
    }
}
string_value!(Algorithm, "a JWS algorithm such as \"RS256\"");

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `[[issuer]]`.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerConfig {
    /// Used in metrics, logs and the `issuer` variable.
    pub name: String,
    /// The `iss` value(s) to accept: an exact URL, a bare host name (`accounts.google.com`) or
    /// a `{tenantid}` template ([`IssuerId`]).
    pub issuer: IssuerId,
    /// For a `{tenantid}` template: the tenants accepted (absent: any tenant).
    pub tenants: Option<Vec<TenantId>>,
    /// Without it: OIDC discovery at `{issuer}/.well-known/openid-configuration`.
    pub jwks_uri: Option<HttpsUrl>,
    /// The token's `aud` must contain one of these. Required, non-empty.
    pub audiences: Vec<String>,
    /// Default `["RS256", "ES256"]`.
    pub algorithms: Vec<Algorithm>,
    /// Clock-skew allowance. Default 30s, at most 5m.
    pub leeway: Dur,
    /// Claim holding the caller's groups (array of strings or one string); dotted path allowed
    /// (`realm_access.roles`). Default `"groups"`. A mistyped claim makes the token invalid.
    pub groups_claim: Option<ClaimPath>,
    /// Claim that identifies the caller upstream (the `user` variable, `X-Forwarded-User` in
    /// the shipped HAProxy configuration): a string (or integer) claim such as Entra's `oid`
    /// or `upn`, Keycloak's `preferred_username`, Okta's `uid`. Default: `sub`. A token
    /// without it, or with a value that cannot be passed on, is refused (`claim_invalid`).
    pub user_claim: Option<ClaimPath>,
    /// Claim holding the caller's email (string); dotted path allowed. Default `"email"`.
    pub email_claim: Option<ClaimPath>,
    /// Maximum `exp - iat` (and `exp - now` when the token has no `iat`). Default 24h.
    pub max_token_lifetime: Dur,
    /// Background JWKS refresh interval when the IdP sends no usable Cache-Control. Default 10m.
    pub jwks_refresh: Dur,
    /// Minimum time between two JWKS refetches triggered by an unknown `kid` (scheduled
    /// refreshes do not count). Default 30s; at least 100ms (values below 1s are for tests).
    pub unknown_kid_refetch_interval: Dur,
    /// Longest a request waits for the JWKS refetch its unknown `kid` triggered (or for one in
    /// progress). The fetch itself runs on to completion (up to `http_timeout`) in the
    /// background, so a slow IdP costs the request at most this, and the next request with that
    /// `kid` finds the new keys. Default 1s: below the shipped SPOE `timeout processing` (3s), so
    /// idgate answers `unknown_key` itself instead of HAProxy giving up, with room left for an
    /// upstream credential fetch. Between 1ms and 10s.
    pub unknown_kid_wait: Dur,
    /// Timeout of every HTTP call to this IdP. Default 5s (2s for `kind = "introspection"`,
    /// whose call is on the request's path).
    pub http_timeout: Dur,
    /// Allowed `typ` header values (case-insensitive) when present. Default `["JWT", "at+jwt"]`.
    pub allowed_typ: Vec<String>,
    /// Extra CA certificates (PEM) trusted for this issuer's HTTPS (discovery, JWKS), besides
    /// the system store and the bundled roots ([`crate::outbound`]).
    pub ca_file: Option<SecretFile>,
    /// `kind`: `"jwt"` (default) or `"introspection"`.
    pub kind: IssuerSource,
    /// The introspection settings; `Some` exactly when `kind = "introspection"`.
    pub introspection: Option<IntrospectionConfig>,
}

impl IssuerConfig {
    /// `None` when a required key is missing (reported). Every key is read either way.
    pub(crate) fn read(t: &mut Table<'_, '_>) -> Option<IssuerConfig> {
        let name = t.required::<IssuerName>("name").map(|n| n.0);
        let kind = t.get::<IssuerSource>("kind");
        let introspection = IntrospectionConfig::read(t, kind.unwrap_or_default());
        let issuer = t.required("issuer");
        let tenants = t.list("tenants");
        let jwks_uri = t.get("jwks_uri");
        let audiences = t.required_list("audiences");
        let algorithms = t.list("algorithms");
        let leeway = t.get("leeway");
        let groups_claim = t.get("groups_claim");
        let email_claim = t.get("email_claim");
        let user_claim = t.get("user_claim");
        let max_token_lifetime = t.get("max_token_lifetime");
        let jwks_refresh = t.get("jwks_refresh");
        let refetch = t.get("unknown_kid_refetch_interval");
        let kid_wait = t.get("unknown_kid_wait");
        let http_timeout = t.get("http_timeout");
        let allowed_typ = t.get("allowed_typ");
        let ca_file = t.get::<PathBuf>("ca_file").map(SecretFile::unresolved);
        let kind = kind.unwrap_or_default();
        if kind == IssuerSource::Introspection && introspection.is_none() {
            return None;
        }
        Some(IssuerConfig {
            name: name?,
            issuer: issuer?,
            tenants,
            jwks_uri,
            audiences: audiences?,
            algorithms: algorithms.unwrap_or_else(|| vec![Algorithm::RS256, Algorithm::ES256]),
            leeway: leeway.unwrap_or(secs(30)),
            groups_claim,
            email_claim,
            user_claim,
            max_token_lifetime: max_token_lifetime.unwrap_or(secs(24 * 3600)),
            jwks_refresh: jwks_refresh.unwrap_or(secs(600)),
            unknown_kid_refetch_interval: refetch.unwrap_or(secs(30)),
            unknown_kid_wait: kid_wait.unwrap_or(secs(1)),
            // An introspection call is on the request's path: keep it inside the shipped SPOE
            // `timeout processing` (3s), with room for an upstream credential.
            http_timeout: http_timeout.unwrap_or(if kind == IssuerSource::Introspection {
                secs(2)
            } else {
                secs(5)
            }),
            allowed_typ: allowed_typ.unwrap_or_else(|| vec!["JWT".into(), "at+jwt".into()]),
            ca_file,
            kind,
            introspection,
        })
    }

    /// The checks of issuer `i`; `seen` holds the names and `iss` values of the issuers
    /// before it (each must select exactly one issuer).
    pub(crate) fn check(&mut self, i: usize, seen: &mut Seen, cx: &mut Cx<'_>) {
        let k = |field: &str| format!("issuer[{i}].{field}");
        if let Some(first) = first_seen(&mut seen.names, &self.name, i) {
            cx.push(
                k("name"),
                format!(
                    "duplicate issuer name {:?} (also issuer[{first}])",
                    self.name
                ),
            );
        }
        if let Some(first) = first_seen(&mut seen.issuers, self.issuer.as_str(), i) {
            cx.push(
                k("issuer"),
                format!(
                    "issuer {:?} is configured twice (also issuer[{first}]; a token's iss must \
                     select exactly one issuer)",
                    self.issuer.as_str()
                ),
            );
        }
        let jwks = self.introspection.is_none();
        match (self.issuer.kind(), &self.jwks_uri, &self.tenants) {
            _ if !jwks => {}
            (IssuerKind::BareHost, None, _) => cx.push(
                k("jwks_uri"),
                format!(
                    "required: issuer {:?} has no scheme, so it is only an exact iss value and \
                     its keys cannot be discovered (Google: jwks_uri = \
                     \"https://www.googleapis.com/oauth2/v3/certs\")",
                    self.issuer.as_str()
                ),
            ),
            (IssuerKind::Template { .. }, None, _) => cx.push(
                k("jwks_uri"),
                "required for an issuer with {tenantid} (Entra ID: jwks_uri = \
                 \"https://login.microsoftonline.com/common/discovery/v2.0/keys\")",
            ),
            (IssuerKind::Template { .. }, _, Some(t)) if t.is_empty() => cx.push(
                k("tenants"),
                "empty list: no token could be accepted (remove the key to accept any tenant)",
            ),
            (IssuerKind::Url | IssuerKind::BareHost, _, Some(_)) => cx.push(
                k("tenants"),
                "only for an issuer with {tenantid} (a multi-tenant Entra ID issuer)",
            ),
            _ => {}
        }
        if let Some(intro) = &mut self.introspection {
            if self.issuer.template_parts().is_some() {
                cx.push(
                    k("issuer"),
                    "an introspection issuer needs one exact iss value, not a {tenantid} template",
                );
            }
            if intro.opaque_tokens {
                if let Some(first) = seen.opaque.replace(i) {
                    cx.push(
                        k("opaque_tokens"),
                        format!(
                            "issuer[{first}] already receives the tokens that are not JWTs (an \
                             opaque token names no issuer, and idgate sends it to exactly one); \
                             set opaque_tokens = false here: this issuer then introspects only \
                             JWTs whose iss is {:?}",
                            self.issuer.as_str()
                        ),
                    );
                    seen.opaque = Some(first);
                }
            }
            intro.check(i, cx);
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            cx.push(
                k("audiences"),
                if jwks {
                    "required: at least one non-empty audience"
                } else {
                    "required: at least one non-empty audience, the aud the introspection \
                     answer must name (Okta: your authorization server's audience, e.g. \
                     \"api://default\"; Keycloak: the client an audience mapper adds, not \
                     only \"account\")"
                },
            );
        }
        if self.algorithms.is_empty() {
            cx.push(k("algorithms"), "must list at least one algorithm");
        }
        let between = |d: Dur, lo: Duration, hi: Duration| (lo..=hi).contains(&d.0);
        let ms = Duration::from_millis;
        let s = Duration::from_secs;
        if self.leeway.0 > s(300) {
            cx.push(k("leeway"), "at most 5m");
        }
        if self.max_token_lifetime.0.is_zero() {
            cx.push(k("max_token_lifetime"), "must be greater than zero");
        }
        if self.jwks_refresh.0 < s(10) {
            cx.push(k("jwks_refresh"), "at least 10s");
        }
        if self.unknown_kid_refetch_interval.0 < ms(100) {
            cx.push(k("unknown_kid_refetch_interval"), "at least 100ms");
        }
        if !between(self.unknown_kid_wait, ms(1), s(10)) {
            cx.push(k("unknown_kid_wait"), "must be between 1ms and 10s");
        }
        if !between(self.http_timeout, ms(1), s(60)) {
            cx.push(k("http_timeout"), "must be between 1ms and 60s");
        }
        if self.allowed_typ.iter().any(String::is_empty) {
            cx.push(k("allowed_typ"), "entries must not be empty");
        }
        if let Some(ca) = &mut self.ca_file {
            if let Err(e) = ca
                .resolve(&cx.dirs)
                .and_then(|()| crate::outbound::read_ca_file(ca.path()).map(drop))
            {
                cx.push(k("ca_file"), e);
            }
        }
    }
}

/// An issuer's `name`: a metric label and log field.
struct IssuerName(String);

impl FromStr for IssuerName {
    type Err = String;

    fn from_str(s: &str) -> Result<IssuerName, String> {
        if s.is_empty() || !s.bytes().all(is_name_byte) {
            return Err("must be non-empty and only contain A-Z a-z 0-9 _ - .".into());
        }
        Ok(IssuerName(s.into()))
    }
}
string_value!(IssuerName, "an issuer name");

/// Issuer names and `iss` values already configured, with the index of their issuer.
#[derive(Default)]
pub(crate) struct Seen {
    names: HashMap<String, usize>,
    issuers: HashMap<String, usize>,
    /// The introspection issuer receiving opaque tokens.
    opaque: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{keys, problems};
    use crate::config::Config;

    const ISSUER: &str = "[[issuer]]\nname = \"a\"\nissuer = \"https://idp.example.com\"\n";

    #[test]
    fn values_of_the_wrong_shape_are_all_reported() {
        let p = problems(
            "[[issuer]]\nname = \"a b\"\nissuer = \"http://idp.example.com\"\naudiences = [\"x\", 1]\n\
             algorithms = [\"HS256\", \"none\", \"RS256\"]\nleeway = 30\njwks_uri = \"ftp://x\"\n",
        );
        let k: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            k,
            [
                "issuer[0].name",
                "issuer[0].issuer",
                "issuer[0].audiences[1]",
                "issuer[0].algorithms[0]",
                "issuer[0].algorithms[1]",
                "issuer[0].leeway",
                "issuer[0].jwks_uri",
            ],
            "{p:#?}"
        );
        assert!(p[3].message.contains("supported: RS256"), "{}", p[3]);
    }

    #[test]
    fn algorithms_are_typed() {
        let c = Config::from_toml(
            &format!("{ISSUER}audiences = [\"x\"]\nalgorithms = [\"EdDSA\", \"PS384\"]\n"),
            "t",
        )
        .unwrap();
        assert_eq!(
            c.issuers[0].algorithms,
            [Algorithm::EdDSA, Algorithm::PS384]
        );
        assert_eq!(
            jsonwebtoken::Algorithm::from(Algorithm::PS384),
            jsonwebtoken::Algorithm::PS384
        );
        for a in Algorithm::ALL {
            assert_eq!(a.as_str().parse::<Algorithm>(), Ok(a));
            assert_eq!(
                format!("{:?}", jsonwebtoken::Algorithm::from(a)),
                a.as_str()
            );
        }
        for bad in ["none", "None", "HS256", "rs256", ""] {
            assert!(bad.parse::<Algorithm>().is_err(), "{bad}");
        }
        let c = Config::from_toml(&format!("{ISSUER}audiences = [\"x\"]\n"), "t").unwrap();
        assert_eq!(
            c.issuers[0].algorithms,
            [Algorithm::RS256, Algorithm::ES256]
        );
        assert_eq!(c.issuers[0].issuer.as_str(), "https://idp.example.com");
    }

    #[test]
    fn checks() {
        assert_eq!(
            keys(&format!(
                "{ISSUER}audiences = []\nalgorithms = []\nleeway = \"10m\"\n\
                 max_token_lifetime = \"0s\"\njwks_refresh = \"1s\"\n\
                 unknown_kid_refetch_interval = \"10ms\"\nunknown_kid_wait = \"0s\"\n\
                 http_timeout = \"61s\"\nallowed_typ = [\"\"]\n"
            )),
            [
                "issuer[0].audiences",
                "issuer[0].algorithms",
                "issuer[0].leeway",
                "issuer[0].max_token_lifetime",
                "issuer[0].jwks_refresh",
                "issuer[0].unknown_kid_refetch_interval",
                "issuer[0].unknown_kid_wait",
                "issuer[0].http_timeout",
                "issuer[0].allowed_typ",
            ]
        );
        let p = problems(&format!(
            "{ISSUER}audiences = [\"x\"]\ngroups_claim = \"realm..roles\"\nemail_claim = \"\"\n"
        ));
        let k: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(k, ["issuer[0].groups_claim", "issuer[0].email_claim"]);
        assert!(p[0].message.contains("empty segment"), "{}", p[0]);
    }

    #[test]
    fn names_and_iss_select_one_issuer() {
        let p = problems(
            "[[issuer]]\nname = \"a\"\nissuer = \"https://idp.example.com\"\naudiences = [\"x\"]\n\
             [[issuer]]\nname = \"a\"\nissuer = \"https://idp.example.com\"\naudiences = [\"y\"]\n\
             [[issuer]]\nname = \"a\"\nissuer = \"https://idp2.example.com\"\naudiences = [\"y\"]\n",
        );
        let shown: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        assert_eq!(
            shown,
            [
                "issuer[1].name: duplicate issuer name \"a\" (also issuer[0])",
                "issuer[1].issuer: issuer \"https://idp.example.com\" is configured twice (also \
                 issuer[0]; a token's iss must select exactly one issuer)",
                "issuer[2].name: duplicate issuer name \"a\" (also issuer[0])",
            ]
        );
    }
}
