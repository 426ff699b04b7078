//! The types every stage of a decision shares: the request HAProxy asked about, the verified
//! identity, the reason codes of the contract (§3) and the final [`Verdict`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use bytestring::ByteString;

use crate::claim_path::ClaimPath;

/// One `authorize` message, as HAProxy sent it (contract §2). Every field is optional here;
/// the engine answers `400 bad_request` when `method` or `path` is missing.
///
/// Strings are [`ByteString`]s that share the NOTIFY frame's buffer: building a request does
/// not copy the (possibly kilobyte-sized) bearer token.
#[derive(Debug, Clone, Default)]
pub struct AuthzRequest {
    pub method: Option<ByteString>,
    pub path: Option<ByteString>,
    pub host: Option<ByteString>,
    pub authorization: Option<ByteString>,
    pub cookie: Option<ByteString>,
    pub src: Option<IpAddr>,
    pub unique_id: Option<ByteString>,
    /// `body` (`req.body`): sent for model-serving invocations only (`authorize-serving`),
    /// for the payload checks (contract §8). Shares the frame's buffer.
    pub body: Option<bytes::Bytes>,
    /// `body_size` (`req.body_size`): the body length the request announced, to tell a body
    /// that did not fit the SPOE frame from a complete one (an idgate extension of §2).
    pub body_size: Option<u64>,
    /// `content_type` (`req.hdr(content-type)`).
    pub content_type: Option<ByteString>,
}

/// A verified caller. Built once per distinct token and shared (via `Arc`) by the
/// validated-token cache, so it must not hold the raw token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// `name` of the configured issuer that accepted the token.
    pub issuer: Arc<str>,
    /// The token's `sub`.
    pub sub: String,
    /// The issuer's `user_claim` when it has one (what identifies the caller upstream, e.g.
    /// Entra's `oid` or Keycloak's `preferred_username`); `None`: `sub` does.
    pub user: Option<String>,
    /// The configured email claim, when present and a string.
    pub email: Option<String>,
    /// The configured groups claim, when present (array of strings, or a single string).
    pub groups: Vec<String>,
    /// Scopes from `scope` (space separated) or `scp` (string or array).
    pub scopes: Vec<String>,
    /// `exp`, seconds since the Unix epoch.
    pub expires_at: u64,
    /// `iat`, seconds since the Unix epoch, when the token has one (revocations of everything
    /// an issuer issued before a time compare it).
    pub issued_at: Option<u64>,
    /// The token's `jti` when it is a string (revocations of one token compare it).
    pub jti: Option<Box<str>>,
    /// The token's claims that rules read (`claims` conditions, `principal = "claim:..."`);
    /// the authenticator drops the others when it builds the identity, so that cached
    /// identities stay small (see `auth::claims_read_by_rules`).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl Identity {
    /// What identifies the caller upstream (`X-Forwarded-User`): the issuer's `user_claim`,
    /// else `sub`.
    pub fn user(&self) -> &str {
        self.user.as_deref().unwrap_or(&self.sub)
    }

    /// The kept claim at `path`: the top-level claim named by the whole path, else the
    /// dotted path walked through nested objects ([`ClaimPath`], the rule the policy and the
    /// issuers' email/groups claims follow too).
    pub fn claim(&self, path: &ClaimPath) -> Option<&serde_json::Value> {
        path.lookup(&self.claims)
    }
}

#[cfg(test)]
impl Identity {
    /// An identity holding only `claims` (a JSON object), for claim-lookup tests.
    pub(crate) fn with_claims(claims: &serde_json::Value) -> Identity {
        Identity {
            issuer: Arc::from("i"),
            sub: "s".into(),
            user: None,
            email: None,
            groups: Vec::new(),
            scopes: Vec::new(),
            expires_at: 0,
            issued_at: None,
            jti: None,
            claims: claims.as_object().expect("a JSON object").clone(),
        }
    }
}

/// Reason codes (contract §3). The `as_str` spelling is part of the public contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Ok,
    Public,
    MissingToken,
    MalformedToken,
    UnsupportedToken,
    UnknownIssuer,
    UnknownKey,
    AlgNotAllowed,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    ClaimInvalid,
    Revoked,
    NoMatchingRule,
    DeniedByRule,
    UpstreamUnavailable,
    UpstreamRefused,
    BadRequest,
    InternalError,
    InvalidPayload,
    PayloadTooLarge,
}

impl Reason {
    pub const ALL: [Reason; 22] = [
        Reason::Ok,
        Reason::Public,
        Reason::MissingToken,
        Reason::MalformedToken,
        Reason::UnsupportedToken,
        Reason::UnknownIssuer,
        Reason::UnknownKey,
        Reason::AlgNotAllowed,
        Reason::BadSignature,
        Reason::Expired,
        Reason::NotYetValid,
        Reason::WrongAudience,
        Reason::ClaimInvalid,
        Reason::Revoked,
        Reason::NoMatchingRule,
        Reason::DeniedByRule,
        Reason::UpstreamUnavailable,
        Reason::UpstreamRefused,
        Reason::BadRequest,
        Reason::InternalError,
        Reason::InvalidPayload,
        Reason::PayloadTooLarge,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "ok",
            Reason::Public => "public",
            Reason::MissingToken => "missing_token",
            Reason::MalformedToken => "malformed_token",
            Reason::UnsupportedToken => "unsupported_token",
            Reason::UnknownIssuer => "unknown_issuer",
            Reason::UnknownKey => "unknown_key",
            Reason::AlgNotAllowed => "alg_not_allowed",
            Reason::BadSignature => "bad_signature",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::WrongAudience => "wrong_audience",
            Reason::ClaimInvalid => "claim_invalid",
            Reason::Revoked => "revoked",
            Reason::NoMatchingRule => "no_matching_rule",
            Reason::DeniedByRule => "denied_by_rule",
            Reason::UpstreamUnavailable => "upstream_unavailable",
            Reason::UpstreamRefused => "upstream_refused",
            Reason::BadRequest => "bad_request",
            Reason::InternalError => "internal_error",
            Reason::InvalidPayload => "invalid_payload",
            Reason::PayloadTooLarge => "payload_too_large",
        }
    }

    /// The HTTP status the contract pairs with this reason.
    pub const fn status(self) -> u16 {
        match self {
            Reason::Ok | Reason::Public => 200,
            Reason::MissingToken
            | Reason::MalformedToken
            | Reason::UnsupportedToken
            | Reason::UnknownIssuer
            | Reason::UnknownKey
            | Reason::AlgNotAllowed
            | Reason::BadSignature
            | Reason::Expired
            | Reason::NotYetValid
            | Reason::WrongAudience
            | Reason::ClaimInvalid
            | Reason::Revoked => 401,
            Reason::NoMatchingRule | Reason::DeniedByRule => 403,
            Reason::UpstreamUnavailable => 503,
            // 403 when the refusal concerns the caller (the engine sets it on the verdict).
            Reason::UpstreamRefused => 502,
            Reason::BadRequest | Reason::InvalidPayload => 400,
            Reason::PayloadTooLarge => 413,
            Reason::InternalError => 500,
        }
    }
}

impl Reason {
    /// A short sentence saying what the reason means, for the `description` variable of a
    /// refusal when the decision has no more precise one (a token's [`Rejection`] has).
    pub const fn description(self) -> &'static str {
        match self {
            Reason::Ok => "allowed",
            Reason::Public => "allowed without a token by a public rule",
            Reason::MissingToken => "no bearer token",
            Reason::MalformedToken => "the bearer token is not a well-formed JWT",
            Reason::UnsupportedToken => "the bearer token is not a supported JWT",
            Reason::UnknownIssuer => "the token's issuer is not configured",
            Reason::UnknownKey => "the token's signing key is not known",
            Reason::AlgNotAllowed => "the token's algorithm is not allowed",
            Reason::BadSignature => "the token's signature does not verify",
            Reason::Expired => "token expired",
            Reason::NotYetValid => "token not yet valid",
            Reason::WrongAudience => "the token is not for this audience",
            Reason::ClaimInvalid => "a claim of the token is missing or invalid",
            Reason::Revoked => "token revoked",
            Reason::NoMatchingRule => "no rule allows this request",
            Reason::DeniedByRule => "a rule denies this request",
            Reason::UpstreamUnavailable => {
                "the Databricks credential could not be obtained now; retry later"
            }
            Reason::UpstreamRefused => "Databricks refused to issue the credential",
            Reason::BadRequest => "the request's path or method cannot be judged",
            Reason::InternalError => "the gateway could not decide this request",
            Reason::InvalidPayload => "the request body is not a valid model serving input",
            Reason::PayloadTooLarge => "the request body is too large",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a token was refused: the contract reason plus a short human description that goes into
/// `error_description` of the `WWW-Authenticate` challenge and the logs. The description must
/// never contain the token, a signature or a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: Reason,
    pub description: &'static str,
}

impl Rejection {
    pub const fn new(reason: Reason, description: &'static str) -> Self {
        Rejection {
            reason,
            description,
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.description)
    }
}

/// The answer to one `authorize` message. [`crate::authorize`] turns it into ACK actions.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub allow: bool,
    pub status: u16,
    pub reason: Reason,
    /// RFC 6750 challenge, set on 401.
    pub www_authenticate: Option<String>,
    /// Set when a token was verified.
    pub identity: Option<Arc<Identity>>,
    /// Name of the matched rule.
    pub rule: Option<Arc<str>>,
    /// The identity the upstream sees (allowed requests only).
    pub principal: Option<String>,
    /// Full header value for the upstream `Authorization` (allowed requests with an upstream).
    pub upstream_authorization: Option<Arc<str>>,
    /// Where the request must go instead of the configured upstream (a route-optimized
    /// serving endpoint's data plane): `host[:port]` and the path to send there.
    pub upstream_route: Option<Arc<Route>>,
    /// What the refusal means, more precisely than its reason (`description` variable);
    /// `None`: the reason's own [`Reason::description`]. Owned only for the payload checks,
    /// whose message names a field of the body.
    pub description: Option<std::borrow::Cow<'static, str>>,
}

/// Another host and path for an allowed request (contract §3 `upstream_host`,
/// `upstream_path`): the data plane of a route-optimized serving endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// `host` or `host:port`, a host the upstream's `data_plane_hosts` allows.
    pub host: Box<str>,
    /// Absolute path, e.g. `/1234567890/serving-endpoints/churn/invocations`.
    pub path: Box<str>,
}

impl Verdict {
    /// A refusal with the status the contract pairs with `reason`.
    pub fn deny(reason: Reason) -> Self {
        Verdict {
            allow: false,
            status: reason.status(),
            reason,
            www_authenticate: None,
            identity: None,
            rule: None,
            principal: None,
            upstream_authorization: None,
            upstream_route: None,
            description: None,
        }
    }

    /// The `description` of a refusal: the precise one, else the reason's.
    pub fn description(&self) -> &str {
        self.description
            .as_deref()
            .unwrap_or(self.reason.description())
    }

    /// A 401 with its RFC 6750 challenge. `missing_token` gets the bare challenge (RFC 6750
    /// §3.1: no error code when the request had no credentials); the others `invalid_token`.
    /// A rejection whose reason is no 401 (the IdP's token introspection failed:
    /// `upstream_unavailable`, `upstream_refused`) is that refusal, without a challenge.
    pub fn unauthorized(realm: &str, rejection: &Rejection) -> Self {
        if rejection.reason.status() != 401 {
            return Verdict {
                description: Some(rejection.description.into()),
                ..Verdict::deny(rejection.reason)
            };
        }
        let challenge = if rejection.reason == Reason::MissingToken {
            format!("Bearer realm=\"{realm}\"")
        } else {
            format!(
                "Bearer realm=\"{realm}\", error=\"invalid_token\", error_description=\"{}\"",
                rejection.description
            )
        };
        Verdict {
            www_authenticate: Some(challenge),
            description: Some(rejection.description.into()),
            ..Verdict::deny(rejection.reason)
        }
    }

    /// An allowed request.
    pub fn allow(reason: Reason) -> Self {
        Verdict {
            allow: true,
            status: 200,
            ..Verdict::deny(reason)
        }
    }
}

/// The seam between the SPOP shell and the decision logic: anything that turns an
/// [`AuthzRequest`] into a [`Verdict`]. The server is generic over it, so the production engine,
/// the null agent of the benchmarks and test doubles plug in without boxing.
pub trait Authorizer: Send + Sync + 'static {
    /// Decide `req`; `now` is when the NOTIFY was taken up (one clock reading serves the
    /// decision, its freshness checks and the recorded latency).
    fn authorize<'a>(
        &'a self,
        req: &'a AuthzRequest,
        now: std::time::Instant,
    ) -> impl std::future::Future<Output = Verdict> + Send + 'a;

    /// Called once per NOTIFY with the verdict HAProxy is actually sent (after the contract
    /// layer refused an allowed verdict it could not send whole, that refusal) and the time
    /// from the NOTIFY to the rendered answer: the audit line and the decision metrics.
    fn record(&self, _req: &AuthzRequest, _sent: &Verdict, _elapsed: std::time::Duration) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_status_pairs() {
        assert_eq!(Reason::MissingToken.status(), 401);
        assert_eq!(Reason::NoMatchingRule.status(), 403);
        assert_eq!(Reason::BadRequest.status(), 400);
        assert_eq!(Reason::UpstreamUnavailable.status(), 503);
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "Reason::ALL must be in declaration order");
        }
        let names: std::collections::HashSet<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), Reason::ALL.len());
    }

    /// `claim` looks up like the policy and the token's email/groups claims: a top-level claim
    /// named by the whole path first (it used to walk the dotted path only, so a namespaced
    /// claim was missed or shadowed by a nested one).
    #[test]
    fn claim_tries_the_whole_name_first() {
        let claims = serde_json::json!({
            "https://ex.com/roles": ["top"],
            "https://ex": {"com/roles": ["nested"]},
            "realm": {"roles": ["r1"]},
        });
        let id = Identity::with_claims(&claims);
        let claim = |p: &str| id.claim(&ClaimPath::parse(p).unwrap()).cloned();
        assert_eq!(
            claim("https://ex.com/roles"),
            Some(serde_json::json!(["top"]))
        );
        assert_eq!(claim("realm.roles"), Some(serde_json::json!(["r1"])));
        assert_eq!(claim("realm.x"), None);
    }

    #[test]
    fn unauthorized_challenge() {
        let v = Verdict::unauthorized("idgate", &Rejection::new(Reason::Expired, "token expired"));
        assert_eq!(v.status, 401);
        assert!(!v.allow);
        assert_eq!(
            v.www_authenticate.as_deref(),
            Some("Bearer realm=\"idgate\", error=\"invalid_token\", error_description=\"token expired\"")
        );
        let v = Verdict::unauthorized("idgate", &Rejection::new(Reason::MissingToken, "no token"));
        assert_eq!(
            v.www_authenticate.as_deref(),
            Some("Bearer realm=\"idgate\"")
        );
    }
}
