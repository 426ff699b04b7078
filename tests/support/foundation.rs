//! A stand-in decision for tests of the SPOP shell and the fuzz targets: it validates nothing,
//! so it never allows. Missing (or empty) `method`/`path` gives `400 bad_request`; no (or an
//! empty) `authorization` gives `401 missing_token` with `Bearer realm="<realm>"`; anything
//! else `401 unsupported_token`.
//!
//! Included with `#[path]` by tests/agent_tcp.rs and fuzz/src/lib.rs (which tests/fuzz_seeds.rs
//! includes in turn): it uses only idgate's public API.
#![allow(dead_code)]

use idgate::decision::{Authorizer, AuthzRequest, Reason, Rejection, Verdict};

#[derive(Debug, Clone)]
pub struct FoundationAuthorizer {
    realm: String,
}

impl FoundationAuthorizer {
    pub fn new(realm: impl Into<String>) -> Self {
        FoundationAuthorizer {
            realm: realm.into(),
        }
    }

    /// The decision, synchronously.
    pub fn decide(&self, req: &AuthzRequest) -> Verdict {
        let present = |s: Option<&str>| s.is_some_and(|s| !s.trim().is_empty());
        if !present(req.method.as_deref()) || !present(req.path.as_deref()) {
            return Verdict::deny(Reason::BadRequest);
        }
        if !present(req.authorization.as_deref()) {
            return Verdict::unauthorized(
                &self.realm,
                &Rejection::new(Reason::MissingToken, "no token"),
            );
        }
        Verdict::unauthorized(
            &self.realm,
            &Rejection::new(
                Reason::UnsupportedToken,
                "token validation is not configured",
            ),
        )
    }
}

impl Default for FoundationAuthorizer {
    fn default() -> Self {
        FoundationAuthorizer::new("idgate")
    }
}

impl Authorizer for FoundationAuthorizer {
    async fn authorize(&self, req: &AuthzRequest, _now: std::time::Instant) -> Verdict {
        self.decide(req)
    }
}
