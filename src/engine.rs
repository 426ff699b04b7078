//! The decision pipeline and the hot-swappable state.
//!
//! A [`State`] is everything one configuration produces: issuers with their keys, compiled
//! rules, upstream credential brokers. The [`Engine`] holds the current state in an
//! [`ArcSwap`]; each decision takes a snapshot (`load_full`) at its start, so a reload swaps
//! the state atomically while in-flight decisions finish on the state they started with.
//!
//! The pipeline ([`State::decide`]), in order:
//! 1. `method` and `path` present, path normalizable (contract §4 "Paths") — else 400 `bad_request`.
//! 2. Public rules (no token needed) — first match allows with reason `public`.
//! 3. Token extraction (`Authorization: Bearer`, else the configured cookie) — else 401.
//! 4. Token validation — else 401 with the precise reason and an RFC 6750 challenge; then
//!    revocation (validated-token cache hits included) — else 401 `revoked`.
//! 5. Rules, first match — `no_matching_rule` / `denied_by_rule` (403) or allow; an allow
//!    rule whose `claim:` principal cannot be passed on faithfully — 401 `claim_invalid`.
//!    Then the payload checks when the allow rule has `payload` (`engine/payload.rs`,
//!    docs/payload.md) — else 400 `invalid_payload` / 413 `payload_too_large`, before any
//!    credential is obtained (the endpoint's own schema, `payload_schema = "endpoint"`, is
//!    applied once the credential is in hand).
//! 6. Upstream credential when the matched rule names one (and, for a route-optimized serving
//!    endpoint, its data-plane route and token) — else 503 `upstream_unavailable`, or
//!    `upstream_refused` (403 / 502) when the token endpoint refused for good.

mod payload;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::auth::{self, Authenticator};
use crate::config::{Config, ConfigError};
use crate::decision::{Authorizer, AuthzRequest, Reason, Rejection, Verdict};
use crate::metrics::admin::Readiness;
use crate::metrics::metrics;
use crate::policy::{self, Outcome, Policy, RequestView};
use crate::revocation::Revocations;
use crate::upstream::{self, Blame, Broker, Caller, UpstreamError};

/// Whether a decision obtains the matched rule's upstream credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upstreams {
    /// As the agent does.
    Fetch,
    /// Policy only: the token endpoint is not contacted (`idgate explain --policy-only`).
    Skip,
}

/// Everything one configuration produces.
pub struct State {
    pub config: Arc<Config>,
    pub auth: Authenticator,
    pub policy: Policy,
    pub upstreams: Broker,
    /// The process's revocations (shared by every state: a reload keeps them).
    pub revocations: Arc<Revocations>,
}

impl State {
    /// Build the complete state for a loaded (so checked) `config`. Never blocks on the
    /// network (keys load in the background). `previous` lets unchanged issuers and upstreams
    /// keep their caches. Fails only when an upstream's secret file cannot be used.
    pub fn build(
        config: Config,
        source: &str,
        previous: Option<&State>,
        http: reqwest::Client,
    ) -> Result<State, ConfigError> {
        let upstreams = Broker::new(&config, previous.map(|s| &s.upstreams), http.clone())
            .map_err(|problems| ConfigError {
                source: source.to_string(),
                problems,
            })?;
        let policy = Policy::compile(&config);
        let auth = Authenticator::new(&config, previous.map(|s| &s.auth), http);
        if !auth.problems().is_empty() {
            return Err(ConfigError {
                source: source.to_string(),
                problems: auth.problems().to_vec(),
            });
        }
        let revocations = previous.map_or_else(Revocations::new, |s| s.revocations.clone());
        Ok(State {
            config: Arc::new(config),
            auth,
            policy,
            upstreams,
            revocations,
        })
    }

    /// Decide one request (steps in the module docs).
    pub async fn decide(&self, req: &AuthzRequest) -> Verdict {
        self.decide_at(req, Instant::now()).await
    }

    /// [`State::decide`] with the clock already read (`now`: when the decision started). The
    /// cached upstream credential's freshness check uses it instead of reading the clock again.
    pub async fn decide_at(&self, req: &AuthzRequest, now: Instant) -> Verdict {
        self.decide_with(req, now, Upstreams::Fetch).await
    }

    /// [`State::decide_at`], optionally without obtaining upstream credentials
    /// ([`Upstreams::Skip`], `idgate explain --policy-only`): an allowed request whose rule
    /// names an upstream is then allowed without `upstream_authorization`.
    pub async fn decide_with(
        &self,
        req: &AuthzRequest,
        now: Instant,
        upstreams: Upstreams,
    ) -> Verdict {
        let (Some(method), Some(raw_path)) = (req.method.as_deref(), req.path.as_deref()) else {
            return Verdict::deny(Reason::BadRequest);
        };
        if method.is_empty() {
            return Verdict::deny(Reason::BadRequest);
        }
        let Ok(path) = self.normalize_path(raw_path) else {
            return Verdict::deny(Reason::BadRequest);
        };
        let view = RequestView {
            method,
            path: &path,
            host: req.host.as_deref(),
            src: req.src,
        };

        if let Some(rule) = self.policy.match_public(&view) {
            let pending = match payload::precheck(rule, req) {
                Ok(p) => p,
                Err(refusal) => return *refusal,
            };
            let mut v = Verdict::allow(Reason::Public);
            v.rule = Some(rule.name.clone());
            v.principal = rule.principal_for(None);
            if let (Some(up), Upstreams::Fetch) = (&rule.upstream, upstreams) {
                // No caller token: the policy compiler refuses a public rule naming a
                // token_exchange upstream, and the broker refuses such a request regardless.
                let serving = upstream::serving_invocation(method, &path);
                if let payload::Pending::EndpointSchema(parsed) = pending {
                    let cred = self
                        .upstreams
                        .credential_for(up, Caller::ANONYMOUS, now)
                        .await;
                    if let Ok(c) = cred {
                        let check = payload::endpoint_schema(
                            rule,
                            parsed,
                            &self.upstreams,
                            up,
                            serving,
                            &c,
                            now,
                        );
                        if let Err(refusal) = Box::pin(check).await {
                            return *refusal;
                        }
                    }
                }
                match self
                    .upstreams
                    .grant_for(up, Caller::ANONYMOUS, now, serving)
                    .await
                {
                    Ok(grant) => {
                        v.upstream_authorization = Some(grant.authorization);
                        v.upstream_route = grant.route;
                    }
                    Err(e) => return upstream_failed(v, &e),
                }
            }
            return v;
        }

        let realm = self.config.auth.realm.as_str();
        let token = match auth::extract_token(req, self.config.auth.cookie.as_deref()) {
            Ok(Some(t)) => t,
            Ok(None) => {
                return Verdict::unauthorized(
                    realm,
                    &Rejection::new(Reason::MissingToken, "no bearer token"),
                )
            }
            Err(rejection) => return Verdict::unauthorized(realm, &rejection),
        };
        let (identity, token_key) = match self.auth.authenticate_keyed(token).await {
            Ok(found) => found,
            Err(rejection) => return Verdict::unauthorized(realm, &rejection),
        };
        if self.revocations.is_revoked(&identity) {
            return Verdict {
                identity: Some(identity),
                ..Verdict::unauthorized(realm, &REVOKED)
            };
        }

        let (mut v, rule) = match self.policy.evaluate(&view, &identity) {
            Outcome::NoMatch => (Verdict::deny(Reason::NoMatchingRule), None),
            Outcome::Deny(rule) => {
                let mut v = Verdict::deny(Reason::DeniedByRule);
                v.rule = Some(rule.name.clone());
                (v, None)
            }
            Outcome::Allow(rule) => {
                let principal = rule.principal_for(Some(&identity));
                if let Some(Err(rejection)) = principal.as_deref().map(auth::check_principal) {
                    // A `claim:` principal the upstream cannot be given faithfully (control or
                    // invisible characters, too long): the token's claim is unusable, so the
                    // request is refused as `claim_invalid`, naming the rule, rather than
                    // forwarded without the principal the rule asks for.
                    return Verdict {
                        identity: Some(identity),
                        rule: Some(rule.name.clone()),
                        ..Verdict::unauthorized(realm, &rejection)
                    };
                }
                let mut v = Verdict::allow(Reason::Ok);
                v.rule = Some(rule.name.clone());
                v.principal = principal;
                (v, Some(rule))
            }
        };
        let pending = match rule.map(|r| (r, payload::precheck(r, req))) {
            Some((_, Err(mut refusal))) => {
                refusal.identity = Some(identity);
                return *refusal;
            }
            Some((r, Ok(payload::Pending::EndpointSchema(parsed)))) => Some((r, parsed)),
            _ => None,
        };
        if let (Some(up), Upstreams::Fetch) = (rule.and_then(|r| r.upstream.as_ref()), upstreams) {
            let caller = Caller {
                token: Some(token),
                key: Some(&token_key),
                identity: Some(&identity),
            };
            // Awaited in two halves: a request that is no serving invocation (nearly all)
            // awaits only the credential, and its future stays as small as before.
            let cred = self.upstreams.credential_for(up, caller, now).await;
            let serving = upstream::serving_invocation(method, &path);
            if let (Ok(c), Some((r, parsed))) = (&cred, pending) {
                let check =
                    payload::endpoint_schema(r, parsed, &self.upstreams, up, serving, c, now);
                if let Err(mut refusal) = Box::pin(check).await {
                    refusal.identity = Some(identity);
                    return *refusal;
                }
            }
            let grant = match (cred, serving) {
                (Ok(c), Some(name)) => {
                    Box::pin(self.upstreams.with_data_plane(up, name, c, now)).await
                }
                (Ok(c), None) => Ok(upstream::Grant {
                    authorization: c,
                    route: None,
                }),
                (Err(e), _) => Err(e),
            };
            match grant {
                Ok(grant) => {
                    v.upstream_authorization = Some(grant.authorization);
                    v.upstream_route = grant.route;
                }
                Err(e) => {
                    v.identity = Some(identity);
                    return upstream_failed(v, &e);
                }
            }
        }
        v.identity = Some(identity);
        v
    }

    /// A request path normalized under this configuration's `[paths]` options, or why it is
    /// refused (step 1 of the pipeline; `explain` reuses it).
    pub(crate) fn normalize_path<'p>(
        &self,
        raw: &'p str,
    ) -> Result<std::borrow::Cow<'p, str>, policy::PathError> {
        let options = policy::PathOptions {
            allow_non_ascii: self.config.paths.allow_non_ascii,
        };
        policy::normalize_path_with(raw, options)
    }

    /// True once every issuer's keys loaded at least once.
    pub fn ready(&self) -> bool {
        self.auth.ready()
    }

    /// Why this configuration can only ever refuse, if it can: no rules at all, or no issuers
    /// and no public rules (every token is refused as unknown_issuer). `None` otherwise.
    /// Logged at start and reload, and shown in `/ready`'s body: the embedded default (and the
    /// file the .deb installs before it is edited) is such a configuration on purpose.
    pub fn refuses_everything(&self) -> Option<&'static str> {
        let rules = self.policy.rules();
        if rules.is_empty() {
            Some("no [[rule]] configured: every request is refused (403 no_matching_rule)")
        } else if self.config.issuers.is_empty() && !rules.iter().any(|r| r.public) {
            Some("no [[issuer]] and no public rule: every request is refused (401)")
        } else {
            None
        }
    }
}

/// A revoked token's refusal (the description says no more: which entry matched is the
/// operator's business, not the caller's).
const REVOKED: Rejection = Rejection::new(Reason::Revoked, "token revoked");

/// The refusal of an allowed request whose upstream credential could not be had (contract §3):
/// `upstream_unavailable` 503 when retrying may help, else `upstream_refused`, 403 when the
/// refusal concerns this caller, 502 when it concerns the gateway's own credential. Identity
/// and rule are kept for the logs.
fn upstream_failed(allowed: Verdict, e: &UpstreamError) -> Verdict {
    let (reason, status) = match e.blame() {
        Blame::Transient => (Reason::UpstreamUnavailable, 503),
        Blame::Caller => (Reason::UpstreamRefused, 403),
        Blame::Gateway => (Reason::UpstreamRefused, 502),
    };
    Verdict {
        identity: allowed.identity,
        rule: allowed.rule,
        status,
        description: Some(e.description().into()),
        ..Verdict::deny(reason)
    }
}

/// The production [`Authorizer`]: the current [`State`] behind an [`ArcSwap`], plus reload.
pub struct Engine {
    state: ArcSwap<State>,
    http: reqwest::Client,
    /// Where the configuration came from; `None` for the embedded default.
    config_path: Option<PathBuf>,
    /// Set once the SPOP listener is bound (readiness needs it).
    listener_up: AtomicBool,
}

impl Engine {
    /// Build the first state. Errors are fatal at startup (there is no old state to keep).
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        http: reqwest::Client,
    ) -> Result<Engine, ConfigError> {
        let source = source_name(config_path.as_deref());
        let state = State::build(config, &source, None, http.clone())?;
        Ok(Engine {
            state: ArcSwap::from_pointee(state),
            http,
            config_path,
            listener_up: AtomicBool::new(false),
        })
    }

    /// The HTTP client every outbound call uses ([`crate::outbound::client`]).
    pub fn http_client() -> reqwest::Client {
        crate::outbound::client()
    }

    /// A snapshot of the current state.
    pub fn state(&self) -> Arc<State> {
        self.state.load_full()
    }

    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.as_deref()
    }

    /// Re-read the configuration file, build the complete new state and swap it in. On any
    /// error the old state keeps serving and the error is returned (and counted).
    pub fn reload(&self) -> Result<(), ConfigError> {
        let result = self.try_reload();
        let label = if result.is_ok() { "success" } else { "failure" };
        metrics().config_reloads.with_label_values(&[label]).inc();
        result
    }

    fn try_reload(&self) -> Result<(), ConfigError> {
        let config = match &self.config_path {
            Some(p) => Config::load(p)?,
            None => Config::embedded(),
        };
        let source = source_name(self.config_path.as_deref());
        let old = self.state.load_full();
        let new = State::build(config, &source, Some(&old), self.http.clone())?;
        self.state.store(Arc::new(new));
        Ok(())
    }

    /// The process's revocations (what `[shared]`'s follower updates).
    pub fn revocations(&self) -> Arc<Revocations> {
        self.state.load().revocations.clone()
    }

    /// Start following the configured revocation store, if any (needs a Tokio runtime).
    pub fn follow_revocations(&self) {
        let state = self.state.load();
        if let Some(store) = state.config.shared.revocation_store() {
            crate::revocation::follow(&store, state.revocations.clone());
        }
    }

    pub fn set_listener_up(&self) {
        self.listener_up.store(true, Ordering::Release);
    }

    /// `/ready`: the SPOP listener is up and every issuer's keys loaded at least once.
    pub fn ready(&self) -> bool {
        self.readiness().is_ready()
    }

    /// [`Self::ready`] with the reasons when not ready (the `/ready` body).
    pub fn readiness(&self) -> Readiness {
        let mut r = Readiness::ready();
        if !self.listener_up.load(Ordering::Acquire) {
            r.missing("spop listener not up");
        }
        let state = self.state.load();
        if let Some(w) = state.refuses_everything() {
            r.warn(w);
        }
        // Serving goes on with the revocations known (docs/fleet.md): a warning, not a 503.
        if let Some(p) = state.revocations.store_problem() {
            r.warn(p);
        }
        if !state.auth.ready() {
            for s in state.auth.issuer_status() {
                if !s.loaded {
                    let why = s.last_error.as_deref().unwrap_or("not fetched yet");
                    r.missing(format!("issuer {}: keys not loaded ({why})", s.name));
                }
            }
        }
        r
    }
}

fn source_name(path: Option<&std::path::Path>) -> String {
    path.map(|p| p.display().to_string())
        .unwrap_or_else(|| "<embedded default>".to_string())
}

impl Authorizer for Engine {
    fn authorize<'a>(
        &'a self,
        req: &'a AuthzRequest,
        now: Instant,
    ) -> impl std::future::Future<Output = Verdict> + Send + 'a {
        let state = self.state.load_full();
        async move { state.decide_at(req, now).await }
    }

    fn record(&self, req: &AuthzRequest, sent: &Verdict, elapsed: Duration) {
        crate::telemetry::audit_decision(req, sent, elapsed);
        let m = metrics();
        m.decision_duration.observe(elapsed.as_secs_f64());
        m.count_decision(sent.allow, sent.reason);
    }
}
