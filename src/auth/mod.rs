//! Who the caller is: OIDC issuers, JWKS lifecycle, hardened JWT validation and the
//! validated-token cache. (Filled in by the identity issue.)

use std::sync::Arc;

use crate::config::{Config, Problem};
use crate::decision::{Identity, Reason, Rejection};

/// All configured issuers plus the validated-token cache.
pub struct Authenticator {
    _private: (),
}

impl Authenticator {
    /// Build from config. Never blocks on the network: keys load in the background. `previous`
    /// is the state being replaced on reload; issuers whose configuration is unchanged keep
    /// their keys (and the token cache is kept when no issuer changed).
    pub fn new(
        _cfg: &Config,
        _previous: Option<&Authenticator>,
        _http: reqwest::Client,
    ) -> Result<Authenticator, Vec<Problem>> {
        Ok(Authenticator { _private: () })
    }

    /// Validate a raw token (without the `Bearer ` prefix).
    pub async fn authenticate(&self, _token: &str) -> Result<Arc<Identity>, Rejection> {
        Err(Rejection::new(
            Reason::UnsupportedToken,
            "token validation not implemented",
        ))
    }

    /// True once every issuer's keys have loaded at least once.
    pub fn ready(&self) -> bool {
        true
    }
}

/// Find the caller's token: `Authorization: Bearer` (scheme case-insensitive), else the
/// configured cookie. (Placeholder; the identity issue fills it in.)
pub fn extract_token<'a>(
    req: &'a crate::decision::AuthzRequest,
    _cookie_name: Option<&str>,
) -> Result<Option<&'a str>, Rejection> {
    match req.authorization.as_deref() {
        None => Ok(None),
        Some(v) => match v.split_once(' ') {
            Some((s, t)) if s.eq_ignore_ascii_case("bearer") => Ok(Some(t.trim())),
            _ => Err(Rejection::new(
                Reason::UnsupportedToken,
                "unsupported authorization scheme",
            )),
        },
    }
}
