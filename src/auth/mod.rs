//! Who the caller is: OIDC issuers, JWKS lifecycle, hardened JWT validation and the
//! validated-token cache.
//!
//! A token goes through, in order (first failure wins; reason codes of contract §3):
//!
//! | step | check | reason on failure |
//! |---|---|---|
//! | size | `len <= auth.max_token_bytes`, before any decoding | `malformed_token` |
//! | cache | SHA-256 of the token -> cached identity whose `exp` is still ahead | (hit: done) |
//! | shape | 5 parts (JWE) / not exactly 3 base64url parts / empty part | `unsupported_token` / `malformed_token` |
//! | header | JSON object, no duplicate parameters, `alg` a string, `kid` 1..=256 printable chars | `malformed_token` |
//! | header | `alg` in the global allow-list (never `none`, `HS*`; exact case) | `alg_not_allowed` |
//! | header | `crit` present (we implement no extension, RFC 7515 §4.1.11) | `claim_invalid` |
//! | header | `jku`, `jwk`, `x5u`, `x5c` present (never followed; a key in the token is never trusted) | `unsupported_token` |
//! | header | `b64`, `zip`, `enc`, `cty: JWT` (unencoded payload, JWE, nested JWT) | `unsupported_token` |
//! | header | `x5t`, `x5t#S256`, `url`, `nonce` present but not strings | `malformed_token` |
//! | payload | JSON object (duplicate names at any depth -> `claim_invalid`) | `malformed_token` |
//! | header | a string `nonce` (a Microsoft Graph token, verifiable only by Graph; [`entra`]) | `unsupported_token` |
//! | issuer | unverified `iss` is a string naming exactly one configured issuer, or fitting a `{tenantid}` template with a GUID equal to `tid` and allowed by `tenants` (an unknown `iss` is logged escaped and capped, [`unknown`]) | `claim_invalid` / `unknown_issuer` |
//! | header | `alg` in that issuer's `algorithms`; `typ`, when present, in its `allowed_typ` | `alg_not_allowed` / `unsupported_token` |
//! | key | keys by `kid` (or the only key fitting `alg` when no kid); one rate-limited refetch on a miss | `unknown_key` |
//! | key | at least one of them has a type / JWK `alg` that fits the token's `alg` | `alg_not_allowed` |
//! | signature | `jsonwebtoken::crypto::verify` of `header.payload` with each fitting key of the kid (at most 4, a rotation overlap) and `alg`, until one verifies | `bad_signature` (`malformed_token` if the signature is not base64url) |
//! | claims | `exp` (number, required), `nbf`/`iat` (numbers), `iss`, `sub` (string), `aud` (string or array of strings), groups/email/scope types | `claim_invalid` |
//! | claims | `exp + leeway < now` | `expired` |
//! | claims | `nbf` or `iat` later than `now + leeway` | `not_yet_valid` |
//! | claims | `exp - iat` (or `exp - now` without `iat`) above `max_token_lifetime` | `claim_invalid` |
//! | claims | `aud` contains none of the issuer's `audiences` | `wrong_audience` |
//! | claims | `_claim_names` names a claim idgate reads (registered, the issuer's email/groups claim, a claim a rule reads), or `hasgroups: true` without `groups` while groups are read: the issuer left the claim out (Entra ID group overage) | `claim_invalid` |
//! | claims | `sub`, email or a group cannot be passed on faithfully: control or invisible/bidi characters, longer than [`IDENTITY_CAP`], an empty group, a comma in a group, groups joined longer than [`GROUPS_CAP`] (see [`identity_safe`]) | `claim_invalid` |
//!
//! Division of labour: every check above that is about the *token* (the RFC 8725 / RFC 7519
//! rules: algorithm allow-list, key/algorithm binding, header parameters, duplicate claims,
//! `exp`/`nbf`/`iat`/leeway, `iss`, `aud`, `sub`, lifetime) is ours and is the only line;
//! `jsonwebtoken` (backed by AWS-LC) does the cryptography only, through
//! `jsonwebtoken::crypto::verify` on the bytes we already split. We used to call
//! `jsonwebtoken::decode` with a `Validation` as a second line, but it re-decoded and re-parsed
//! header and payload (~18% of a cold RS256 validation) while checking a strict subset of the
//! above: its `exp`/`nbf` rounding is laxer than ours, it accepts an `iss` array and an empty
//! `sub`, and it ignores `crit` and `iat`. The one thing its typed `Header` refused that we did
//! not is kept as the `x5t`/`url`/`nonce` row, so no token accepted now was refused before.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::claim_path::ClaimPath;
use crate::config::{Config, IssuerConfig, Problem};
use crate::decision::{AuthzRequest, Identity, Reason, Rejection};

mod cache;
pub(crate) mod entra;
mod identity;
mod introspect;
mod issuer;
mod jose;
mod jwks;
mod keystore;
pub mod unknown;

/// Internals the fuzz targets drive directly. Compiled only for fuzzing builds (cargo fuzz
/// sets `--cfg fuzzing`; fuzz/Cargo.toml also enables the `fuzzing` feature) and for the
/// seed-corpus test (tests/fuzz_seeds.rs, `required-features = ["fuzzing"]`, which
/// scripts/test.sh enables): never part of the agent.
#[cfg(any(fuzzing, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

pub use cache::{token_key, unix_now, TokenKey};
pub use identity::{
    check_principal, identity_problem, identity_safe, is_invisible, Unsafe, GROUPS_CAP,
    IDENTITY_CAP,
};
pub use keystore::IssuerStatus;

use introspect::Introspector;
use issuer::Issuer;

/// At most a few `unknown_issuer` log lines per minute: the `iss` is the caller's text, and a
/// flood of such tokens must not flood the log.
static UNKNOWN_ISSUER_LOG: std::sync::LazyLock<crate::telemetry::RateLimitedLog> =
    std::sync::LazyLock::new(|| crate::telemetry::RateLimitedLog::new(5, Duration::from_secs(60)));

/// Default claim holding the caller's email when `email_claim` is not set.
pub(crate) const DEFAULT_EMAIL_CLAIM: &str = "email";
/// Default claim holding the caller's groups when `groups_claim` is not set.
pub(crate) const DEFAULT_GROUPS_CLAIM: &str = "groups";

/// Install aws-lc-rs as `jsonwebtoken`'s process-wide crypto provider. Call once at startup
/// (and in tests). Installing explicitly turns a feature-unification accident (both or neither
/// backend enabled) from a runtime panic at the first token into a non-event
/// (identity-and-databricks.md §6.2). Idempotent.
pub fn install_crypto_provider() {
    // Err only means a provider is already installed, which is what we want.
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

/// Find the caller's token (RFC 6750 §2.1, then the configured cookie).
///
/// - `Authorization: Bearer <token>`: the scheme matches case-insensitively; an empty token,
///   or one containing whitespace, is `malformed_token`.
/// - any other `Authorization` scheme (Basic, Negotiate, a bare token): `unsupported_token`.
/// - no (or an empty) `Authorization` header: the first cookie named `cookie_name` in the
///   `cookie` header (surrounding double quotes removed; empty value = absent).
/// - nothing: `Ok(None)` (the engine answers `missing_token` unless a public rule matches).
pub fn extract_token<'a>(
    req: &'a AuthzRequest,
    cookie_name: Option<&str>,
) -> Result<Option<&'a str>, Rejection> {
    if let Some(h) = req.authorization.as_deref() {
        let h = h.trim_matches(|c| c == ' ' || c == '\t');
        if !h.is_empty() {
            let (scheme, rest) = h.split_once([' ', '\t']).unwrap_or((h, ""));
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(Rejection::new(
                    Reason::UnsupportedToken,
                    "only the Bearer authorization scheme is supported",
                ));
            }
            let token = rest.trim_start_matches([' ', '\t']);
            if token.is_empty() || has_ascii_whitespace(token.as_bytes()) {
                return Err(Rejection::new(
                    Reason::MalformedToken,
                    "malformed Bearer credentials",
                ));
            }
            return Ok(Some(token));
        }
    }
    let (Some(name), Some(cookies)) = (cookie_name, req.cookie.as_deref()) else {
        return Ok(None);
    };
    for pair in cookies.split(';') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        if k.trim() == name {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            return Ok((!v.is_empty()).then_some(v));
        }
    }
    Ok(None)
}

/// Whether `bytes` contains ASCII whitespace (space, tab, LF, FF, CR).
///
/// This runs on every request's token (up to `auth.max_token_bytes`), cached or not. It folds
/// over the whole slice without an early exit so that the compiler vectorizes it; the
/// char-by-char `str::contains(closure)` it replaces cost about 9 instructions per byte, a
/// quarter of a cached decision (measured with benches/e2e/profile.sh). Looking at bytes is
/// exact: in UTF-8 every byte of a multi-byte character is >= 0x80, so an ASCII whitespace
/// byte is always an ASCII whitespace character.
fn has_ascii_whitespace(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .fold(false, |found, b| found | b.is_ascii_whitespace())
}

/// The claim paths the rules read from an [`Identity`]'s `claims`: the keys of every rule's
/// `claims` conditions and the path of every `principal = "claim:<path>"`. The identity keeps
/// the top-level claims these paths can read ([`ClaimPath::top_level_names`]: for a dotted path
/// both the whole path, a namespaced top-level claim such as `https://example.com/roles`, and
/// its first segment, a nested lookup such as `realm_access.roles`).
///
/// Everything else the rules need (`sub`, email, groups, scopes, `exp`) has its own typed field,
/// so the other claims are dropped when an identity is built: the validated-token cache holds
/// up to `auth.token_cache_size` identities, and the full claim map was more than half of
/// each one (about 1.2 KB of a 2.2 KB entry for a typical access token; 100k cached identities
/// took 226 MB of RSS with it and 105 MB without, measured with benches/e2e/agent.sh).
fn claims_read_by_rules(cfg: &Config) -> Vec<ClaimPath> {
    cfg.rules
        .iter()
        .flat_map(|r| r.claim_paths())
        .filter_map(|p| ClaimPath::parse(p).ok())
        .collect()
}

/// A token accepted by a JWT issuer (then cached in the validated-token cache) or by an
/// introspection issuer (cached by it).
enum Validated {
    Jwt(Identity),
    Introspected(Arc<Identity>),
}

/// Whether `token` has the shape of a JWS or JWE (2 or 4 dots). Any other token is opaque: it
/// goes to the introspection issuer with `opaque_tokens`, when one is configured.
fn jwt_shaped(token: &str) -> bool {
    let dots = token.bytes().filter(|&b| b == b'.').count();
    dots == 2 || dots == 4
}

/// All configured issuers plus the validated-token cache.
pub struct Authenticator {
    /// In configuration order.
    issuers: Vec<Arc<Issuer>>,
    /// Exact `iss` value -> issuer.
    by_iss: HashMap<String, Arc<Issuer>>,
    /// Issuers with a `{tenantid}` template, in configuration order: tried when no exact
    /// `iss` matches.
    templated: Vec<Arc<Issuer>>,
    cache: Arc<cache::TokenCache>,
    /// Issuers of `kind = "introspection"`, in configuration order (not in `issuers`).
    introspectors: Vec<Arc<Introspector>>,
    /// Exact `iss` -> introspection issuer: JWTs naming it are introspected.
    introspect_by_iss: HashMap<String, Arc<Introspector>>,
    /// The introspection issuer receiving tokens that are not JWTs.
    opaque: Option<Arc<Introspector>>,
    /// What cannot work although the configuration is valid (an unreadable secret file).
    problems: Vec<Problem>,
    max_token_bytes: usize,
    /// What the payload parser keeps: every issuer's email/groups claim, and the claims an
    /// [`Identity`] keeps because rules read them (see [`claims_read_by_rules`]).
    selection: jose::ClaimSelection,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field(
                "issuers",
                &self.issuers.iter().map(|i| &i.cfg.name).collect::<Vec<_>>(),
            )
            .field("ready", &self.ready())
            .finish()
    }
}

impl Authenticator {
    /// Build from config. Never blocks on the network: keys load in the background (one
    /// refresh task per issuer, spawned on the current tokio runtime). `previous` is the state
    /// being replaced on reload; issuers whose configuration is unchanged keep their keys
    /// and refresh task (shared via `Arc`), and the token cache is kept when no issuer and no
    /// cache setting changed.
    pub fn new(
        cfg: &Config,
        previous: Option<&Authenticator>,
        http: reqwest::Client,
    ) -> Authenticator {
        let mut issuers = Vec::with_capacity(cfg.issuers.len());
        let mut by_iss = HashMap::with_capacity(cfg.issuers.len());
        let mut templated = Vec::new();
        // Per-IdP hints (config::issuer_hints), once per new or changed issuer.
        for ic in &cfg.issuers {
            let unchanged = previous.is_some_and(|p| {
                p.issuers.iter().any(|o| o.cfg == *ic)
                    || p.introspectors.iter().any(|o| o.cfg == *ic)
            });
            if !unchanged {
                for hint in crate::config::issuer_hints(ic) {
                    tracing::warn!(issuer = %ic.name, "{hint}");
                }
            }
        }
        let jwt_issuers = cfg.issuers.iter().filter(|i| i.introspection.is_none());
        let mut all_reused =
            previous.is_some_and(|p| p.issuers.len() == jwt_issuers.clone().count());
        for ic in jwt_issuers {
            let reused = previous
                .and_then(|p| p.issuers.iter().find(|old| old.cfg == *ic))
                .cloned();
            all_reused &= reused.is_some();
            // Changed settings, same key source: start from the keys already loaded.
            let seed = previous.and_then(|p| {
                p.issuers
                    .iter()
                    .find(|old| old.cfg.issuer == ic.issuer && old.cfg.jwks_uri == ic.jwks_uri)
                    .map(|old| &*old.store)
            });
            let issuer = reused.unwrap_or_else(|| Arc::new(Issuer::new(ic, http.clone(), seed)));
            if ic.issuer.template_parts().is_some() {
                templated.push(issuer.clone());
            } else {
                by_iss.insert(ic.issuer.as_str().to_string(), issuer.clone());
            }
            issuers.push(issuer);
        }
        let a = &cfg.auth;
        // A templated issuer is picked by the token's `tid`, so that claim is read too.
        let tid = ClaimPath::parse(entra::TID).expect("tid is a claim name");
        let introspected: Vec<jose::ClaimRules> = cfg
            .issuers
            .iter()
            .filter(|i| i.introspection.is_some())
            .map(issuer::claim_rules)
            .collect();
        let selection = jose::ClaimSelection::new(
            issuers
                .iter()
                .map(|i| &i.rules)
                .chain(&introspected)
                .flat_map(|r| {
                    [&r.email_claim, &r.groups_claim]
                        .into_iter()
                        .chain(r.user_claim.as_ref())
                })
                .chain((!templated.is_empty()).then_some(&tid)),
            &claims_read_by_rules(cfg),
        );
        let mut introspectors = Vec::new();
        let mut introspect_by_iss = HashMap::new();
        let mut opaque = None;
        let mut problems = Vec::new();
        for (i, ic) in cfg.issuers.iter().enumerate() {
            let Some(intro) = &ic.introspection else {
                continue;
            };
            // Cached answers are identities holding the claims the old selection kept: kept
            // only when the issuer and the selection are unchanged (as the token cache).
            let before = previous
                .filter(|p| p.selection == selection)
                .and_then(|p| p.introspectors.iter().find(|old| old.cfg == *ic))
                .map(|old| &**old);
            let x = Arc::new(Introspector::new(ic, http.clone(), before));
            if let Some((field, why)) = x.problem() {
                problems.push(Problem::new(format!("issuer[{i}].{field}"), why));
            }
            if intro.opaque_tokens {
                opaque = Some(x.clone());
            }
            introspect_by_iss.insert(ic.issuer.as_str().to_string(), x.clone());
            introspectors.push(x);
        }
        let cache = match previous {
            // Cached identities hold only the claims the old rules read: a reload whose rules
            // read other claims must not be answered from them (a `claims` condition of a deny
            // rule would silently stop matching). With the issuers unchanged, the selections
            // differ exactly when the kept claims do.
            Some(p)
                if all_reused
                    && p.selection == selection
                    && p.cache
                        .same_settings(a.token_cache_size, a.token_cache_ttl.0) =>
            {
                p.cache.clone()
            }
            _ => Arc::new(cache::TokenCache::new(
                a.token_cache_size,
                a.token_cache_ttl.0,
            )),
        };
        Authenticator {
            issuers,
            by_iss,
            templated,
            cache,
            introspectors,
            introspect_by_iss,
            opaque,
            problems,
            max_token_bytes: a.max_token_bytes,
            selection,
        }
    }

    /// Validate a raw token (without the `Bearer ` prefix).
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Identity>, Rejection> {
        self.authenticate_keyed(token).await.map(|(id, _)| id)
    }

    /// [`Authenticator::authenticate`], also returning the token's cache key
    /// ([`token_key`]) so that a caller keying another cache by the same token (the token
    /// exchange credential cache) does not hash it a second time.
    pub async fn authenticate_keyed(
        &self,
        token: &str,
    ) -> Result<(Arc<Identity>, TokenKey), Rejection> {
        if token.len() > self.max_token_bytes {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "token larger than auth.max_token_bytes",
            ));
        }
        let now = unix_now();
        let key = token_key(token);
        if let Some(id) = self.cache.get(&key, now) {
            return Ok((id, key));
        }
        if let Some(x) = self.opaque.as_ref().filter(|_| !jwt_shaped(token)) {
            // Not cached here: the introspector has its own cache and lifetimes.
            let id = x.authenticate(token, key, &self.selection, None).await?;
            return Ok((id, key));
        }
        let id = match self.validate(token, key, now).await? {
            Validated::Jwt(id) => {
                let id = Arc::new(id);
                self.cache.insert(key, id.clone(), now);
                id
            }
            Validated::Introspected(id) => id,
        };
        Ok((id, key))
    }

    async fn validate(&self, token: &str, key: TokenKey, now: u64) -> Result<Validated, Rejection> {
        let parsed = jose::parse(token, self.max_token_bytes)?;
        let claims = parsed.claims(&self.selection)?;
        if parsed.header.nonce {
            return Err(entra::nonce_refusal(&claims));
        }
        let Some(iss) = claims.iss() else {
            return Err(Rejection::new(
                Reason::ClaimInvalid,
                "iss claim missing or not a string",
            ));
        };
        if let Some(x) = self.introspect_by_iss.get(iss) {
            let exp = claims.exp_hint();
            return x
                .authenticate(token, key, &self.selection, exp)
                .await
                .map(Validated::Introspected);
        }
        let issuer = match self.issuer_for(iss, &claims) {
            Ok(issuer) => issuer,
            Err(rejection) => {
                if rejection.reason == Reason::UnknownIssuer {
                    self.log_unknown_issuer(iss);
                }
                return Err(rejection);
            }
        };
        issuer
            .validate(token, &parsed, &claims, now)
            .await
            .map(Validated::Jwt)
    }

    /// What cannot work although the configuration is valid (an introspection issuer's
    /// unreadable client secret file): reported by check-config, at start and on reload.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// For `idgate explain`: the introspection issuer `token` goes to (its name and endpoint
    /// as logged), given the token's unverified `iss`; `None` when a JWT issuer (or none)
    /// judges it.
    pub fn introspection_for(&self, token: &str, iss: Option<&str>) -> Option<(&str, &str)> {
        let x = match (&self.opaque, jwt_shaped(token)) {
            (Some(x), false) => x,
            _ => self.introspect_by_iss.get(iss?)?,
        };
        Some((x.cfg.name.as_str(), x.shown_url()))
    }

    /// Introspection answers cached by issuer `name` (approximate; tests and diagnostics).
    pub fn introspection_cached(&self, name: &str) -> Option<u64> {
        self.introspectors
            .iter()
            .find(|x| x.cfg.name == name)
            .map(|x| x.cached())
    }

    /// The issuer of a token with this `iss` and `tid`: the one configured with exactly this
    /// `iss`, else the first `{tenantid}` template `iss` fits (its tenant a GUID, equal to
    /// `tid`, and allowed by `tenants`).
    fn issuer_for(&self, iss: &str, claims: &jose::Claims<'_>) -> Result<&Arc<Issuer>, Rejection> {
        if let Some(issuer) = self.by_iss.get(iss) {
            return Ok(issuer);
        }
        for issuer in &self.templated {
            if let Some(tenant) = issuer.rules.iss.tenant_in(iss) {
                let tid = claims.str_claim(entra::TID);
                return match issuer.rules.iss.check_tenant(tenant, tid) {
                    Ok(()) => Ok(issuer),
                    Err(refusal) => Err(refusal.rejection()),
                };
            }
        }
        Err(Rejection::new(
            Reason::UnknownIssuer,
            "token issuer is not configured",
        ))
    }

    /// One (rate-limited) log line for a token of an unknown issuer: its `iss`, escaped and
    /// capped (it is the caller's text), and the configured issuer it nearly names, if any.
    /// The client's `description` stays a fixed text.
    fn log_unknown_issuer(&self, iss: &str) {
        if let Some(suppressed) = UNKNOWN_ISSUER_LOG.allow("unknown_issuer", "") {
            let configured: Vec<&IssuerConfig> = self
                .issuers
                .iter()
                .map(|i| &i.cfg)
                .chain(self.introspectors.iter().map(|x| &x.cfg))
                .collect();
            let explained = unknown::explain(iss, &configured);
            tracing::info!(suppressed, "token refused (unknown_issuer): {explained}");
        }
    }

    /// True once every issuer's keys have loaded at least once (vacuously true without
    /// issuers).
    pub fn ready(&self) -> bool {
        self.issuers.iter().all(|i| i.store.is_loaded())
    }

    /// Wait until [`Self::ready`] or `timeout`; returns `ready()`. For `idgate explain` and
    /// tests: the agent itself never waits (it answers `unknown_key` meanwhile).
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let all = async {
            for i in &self.issuers {
                i.store.wait_loaded().await;
            }
        };
        let _ = tokio::time::timeout(timeout, all).await;
        self.ready()
    }

    /// Wait (at most `timeout`) only for the keys of the issuer whose `issuer` is `iss`, if one
    /// is configured; true when those keys are loaded or no issuer matches (nothing to wait
    /// for). For `idgate explain`, which must not wait for issuers a request does not need.
    pub async fn wait_ready_for(&self, iss: &str, timeout: Duration) -> bool {
        let templated = || {
            self.templated
                .iter()
                .find(|i| i.rules.iss.tenant_in(iss).is_some())
        };
        let Some(issuer) = self.by_iss.get(iss).or_else(templated) else {
            return true;
        };
        let _ = tokio::time::timeout(timeout, issuer.store.wait_loaded()).await;
        issuer.store.is_loaded()
    }

    /// Per-issuer key status, in configuration order.
    pub fn issuer_status(&self) -> Vec<IssuerStatus> {
        self.issuers.iter().map(|i| i.store.status()).collect()
    }

    /// Validated tokens currently cached (approximate).
    pub fn cached_tokens(&self) -> u64 {
        self.cache.entry_count()
    }

    /// True when `other` shares this authenticator's key state for issuer `name` (reload
    /// diagnostics and tests).
    pub fn shares_keys_with(&self, other: &Authenticator, name: &str) -> bool {
        let find = |a: &Authenticator| {
            a.issuers
                .iter()
                .find(|i| i.cfg.name == name)
                .map(|i| i.store.clone())
        };
        matches!((find(self), find(other)), (Some(a), Some(b)) if Arc::ptr_eq(&a, &b))
    }

    /// True when `other` uses the same token cache.
    pub fn shares_cache_with(&self, other: &Authenticator) -> bool {
        Arc::ptr_eq(&self.cache, &other.cache)
    }
}

#[cfg(test)]
mod tests;
