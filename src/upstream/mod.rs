//! Databricks upstream credentials: the `Authorization` value idgate hands HAProxy for the
//! upstream request (contract §3 `upstream_authorization`, §4 `[upstream.NAME]`).
//!
//! One module per credential kind, behind one entry point, [`Broker::credential_for`]:
//!
//! | module | kind |
//! |---|---|
//! | `client_credentials.rs` | OAuth M2M: one service-principal token per upstream, shared by every caller |
//! | `token_exchange.rs` | RFC 8693 token federation: the caller's JWT exchanged, one token per caller token |
//! | `static_token.rs` | a bearer token (e.g. a PAT) read from `token_file` |
//! | `client_credentials.rs` too | `azure_managed_identity`: the Azure VM's identity, from IMDS |
//! | `token_exchange.rs` too | `on_behalf_of`: Entra ID's on-behalf-of flow, per caller token |
//!
//! `assertion.rs` signs the client assertions of `client_credentials` with
//! `client_assertion_key_file` (`private_key_jwt`, what Entra ID recommends over secrets).
//!
//! What they share: `cache.rs` (a token's deadlines: freshness checked at read time with a
//! safety margin, refresh ahead of expiry claimed by one caller, the hold-off after an endpoint
//! failure), `oauth.rs` (the HTTP request to the token endpoint: per-attempt timeout, retries
//! within `total_budget`, response validation), `failure.rs` (what failed, whose fault it is,
//! and the one log line that says so), `secret.rs` (reading the secret files the configuration
//! found: [`crate::config::SecretFile`]).
//!
//! Fail closed: if no credential can be had, [`Broker::credential_for`] returns an error and
//! the engine answers `allow=false, status=503, reason=upstream_unavailable`. An expired token
//! is never served.
//!
//! Latency: a cached credential costs the upstream-name lookup and then, by kind, an `Arc`
//! clone (`static`); one `ArcSwap` load, the freshness check against the decision's own clock
//! reading and an `Arc` clone (`client_credentials`); a moka lookup by the caller token's
//! [`TokenKey`], which the authenticator already computed (`token_exchange`). idgate adds no
//! lock, allocation or clock read of its own on that path. Tokens are refreshed in the background
//! [`UpstreamConfig::refresh_ahead`] before expiry, so callers do not wait on the token
//! endpoint except for the very first request (or after an outage).

mod assertion;
mod cache;
mod client_credentials;
mod data_plane;
mod failure;
mod oauth;
mod openapi;
mod secret;
mod shared;
mod static_token;
mod token_exchange;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use crate::config::{
    ClientAuth, Config, Credential, DataPlaneMode, Problem, UpstreamConfig, MAX_UPSTREAM_NAME,
};
use crate::decision::{Identity, Route};
use crate::token_key::TokenKey;

pub(crate) use client_credentials::basic_auth;
use client_credentials::ClientCredentials;
pub use data_plane::serving_invocation;
use data_plane::DataPlane;
pub(crate) use failure::{sanitize_description, shown_url};
pub use failure::{Failure, Outcome, Side};
pub use openapi::EndpointSchema;
pub(crate) use secret::{read_secret_file, Secret};
use static_token::StaticToken;
use token_exchange::TokenExchange;

/// Scope requested when none is configured: Databricks' default for workspace APIs.
const DEFAULT_SCOPE: &str = "all-apis";

/// The IMDS token API version Microsoft documents ("use API version `2018-02-01` or greater").
const IMDS_API_VERSION: &str = "2018-02-01";

/// Why no credential could be had. `Display` never contains a secret or token: only the
/// upstream name (from the config), a result word, an HTTP status, an `error_code` and the
/// transport's error chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream named {0:?} is configured")]
    Unknown(String),
    #[error("upstream {0:?}: token_exchange needs the caller's bearer token, and there is none")]
    NoCallerToken(Arc<str>),
    /// The failure is behind an `Arc`: it keeps the `Result` every credential lookup
    /// returns small, and a remembered refusal is answered without copying it.
    #[error("upstream {upstream:?}: token request failed: {failure}")]
    Failed {
        upstream: Arc<str>,
        failure: Arc<Failure>,
        /// The credential asked for was this caller's own (a token exchange, or a data-plane
        /// token minted from one): a refusal then concerns the caller, not the gateway.
        per_caller: bool,
    },
    #[error(
        "upstream {upstream:?}: token endpoint failed recently; next attempt in {} ms",
        .retry_in.as_millis()
    )]
    BackingOff {
        upstream: Arc<str>,
        retry_in: Duration,
    },
}

/// What a client should make of an [`UpstreamError`] (contract §3): retry later, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// Network, timeout, 5xx, 429, a garbled answer, a hold-off after one of those:
    /// `upstream_unavailable`, 503 with `Retry-After`.
    Transient,
    /// Refused for good because of who the caller is (e.g. no federation policy maps their
    /// token): `upstream_refused`, 403.
    Caller,
    /// The gateway's own credential or configuration was refused (e.g. `invalid_client`):
    /// `upstream_refused`, 502. Retrying does not help until an operator fixes it.
    Gateway,
}

impl UpstreamError {
    /// Whose problem this is (see [`Blame`]).
    pub fn blame(&self) -> Blame {
        match self {
            UpstreamError::Unknown(_) | UpstreamError::NoCallerToken(_) => Blame::Gateway,
            UpstreamError::BackingOff { .. } => Blame::Transient,
            UpstreamError::Failed {
                failure,
                per_caller,
                ..
            } => {
                if !failure.is_refusal() {
                    Blame::Transient
                } else if *per_caller && !gateway_error(failure.error_code.as_deref()) {
                    Blame::Caller
                } else {
                    Blame::Gateway
                }
            }
        }
    }

    /// A short sentence for the caller (the `description` variable): fixed texts, never the
    /// endpoint's own words.
    pub fn description(&self) -> &'static str {
        match self {
            UpstreamError::Unknown(_) | UpstreamError::NoCallerToken(_) => {
                "the gateway's upstream configuration cannot serve this request"
            }
            UpstreamError::BackingOff { .. } => {
                "the Databricks token endpoint failed moments ago; retry later"
            }
            UpstreamError::Failed { failure, .. } => match (self.blame(), failure.outcome) {
                (Blame::Caller, _) => {
                    "Databricks refused a credential for this caller (e.g. no federation \
                     policy accepts the token)"
                }
                (Blame::Gateway, _) => "Databricks refused the gateway's own credential",
                (_, Outcome::Timeout) => "the Databricks token endpoint did not answer in time",
                (_, Outcome::Network) => "the Databricks token endpoint could not be reached",
                (_, Outcome::Http429) => "the Databricks token endpoint is rate limiting",
                _ => "the Databricks token endpoint failed; retry later",
            },
        }
    }
}

/// OAuth errors (RFC 6749 §5.2) that concern the client, i.e. the gateway's own registration
/// or configuration, even on a per-caller grant: retrying as another caller would fail too.
fn gateway_error(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("invalid_client" | "unauthorized_client" | "unsupported_grant_type" | "invalid_scope")
    )
}

/// Who a credential is for: the caller's validated token (`None` on a public rule; used only
/// by `token_exchange`, which refuses a request without one), its cache key when already
/// computed (the authenticator's, see [`crate::token_key`]), and its identity (its `exp` tells
/// whether refreshing ahead is worthwhile).
#[derive(Clone, Copy)]
pub struct Caller<'a> {
    pub token: Option<&'a str>,
    pub key: Option<&'a TokenKey>,
    pub identity: Option<&'a Identity>,
}

impl fmt::Debug for Caller<'_> {
    /// Without the token: only whether there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Caller")
            .field("token", &self.token.map(|_| "<redacted>"))
            .field("key", &self.key)
            .field("identity", &self.identity)
            .finish()
    }
}

impl Caller<'_> {
    /// No caller token: a public rule's request.
    pub const ANONYMOUS: Caller<'static> = Caller {
        token: None,
        key: None,
        identity: None,
    };
}

/// Holds every configured upstream and its token cache. Built by [`Broker::new`] at start and
/// on every reload; cheap to share (`Arc` it).
pub struct Broker {
    http: reqwest::Client,
    /// A `BTreeMap`: a handful of short names compare faster than they hash (SipHash was
    /// a third of a cached lookup), and there is no hash-flooding concern with config keys.
    upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.upstreams.keys().collect();
        f.debug_struct("Broker").field("upstreams", &names).finish()
    }
}

/// One configured upstream. `cfg` and `secret` are kept to decide, on reload, whether the new
/// config is the same (then the whole `Arc<Upstream>`, caches included, is carried over).
struct Upstream {
    cfg: UpstreamConfig,
    secret: Option<Secret>,
    source: Source,
    /// A client trusting `ca_file`'s CAs too, when it is set (else the broker's).
    http: Option<reqwest::Client>,
    /// Route-optimized serving (`data_plane = "auto"` on an OAuth kind).
    data_plane: Option<DataPlane>,
    /// Serving endpoints' request schemas (`payload_schema = "endpoint"`), when the
    /// workspace is known.
    schemas: Option<openapi::EndpointSchemas>,
}

/// What an allowed request is forwarded with: the `Authorization` value and, for a
/// route-optimized serving endpoint, where to (its data plane).
#[derive(Debug, Clone)]
pub struct Grant {
    pub authorization: Arc<str>,
    pub route: Option<Arc<Route>>,
}

/// The credential kinds.
enum Source {
    Static(StaticToken),
    ClientCredentials(Arc<ClientCredentials>),
    TokenExchange(Arc<TokenExchange>),
}

impl Broker {
    /// Build from `cfg.upstreams` (checked by [`crate::config`], secret files found) and read
    /// their secret files; a file that cannot be used (unreadable, empty, not one line of
    /// visible ASCII...) is reported with its key path (e.g.
    /// `upstream.serving-sp.client_secret_file`). `previous`: on reload, upstreams whose config
    /// AND secret are unchanged keep their token caches.
    ///
    /// `http` should not follow redirects (a token endpoint that redirects is misconfigured,
    /// and following would turn the POST into a GET); it is used for every token request.
    pub fn new(
        cfg: &Config,
        previous: Option<&Broker>,
        http: reqwest::Client,
    ) -> Result<Broker, Vec<Problem>> {
        LazyLock::force(&cache::CLOCK_BASE);
        let mut problems = Vec::new();
        let mut upstreams = BTreeMap::new();
        let shared = shared::SharedCredentials::from_config(&cfg.shared).unwrap_or_else(|p| {
            problems.push(p);
            None
        });
        for (name, uc) in &cfg.upstreams {
            let secret = match read_secret(name, uc) {
                Ok(s) => s,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            if let Some(prev) = previous.and_then(|b| b.upstreams.get(name)) {
                if prev.cfg == *uc && prev.secret == secret {
                    upstreams.insert(name.clone(), Arc::clone(prev));
                    continue;
                }
            }
            match Upstream::build(name, uc, secret, shared.as_ref()) {
                Ok(u) => {
                    upstreams.insert(name.clone(), Arc::new(u));
                }
                Err(p) => problems.push(p),
            }
        }
        if problems.is_empty() {
            Ok(Broker { http, upstreams })
        } else {
            Err(problems)
        }
    }

    /// The full header value for the upstream `Authorization`, e.g. `"Bearer dapi..."`.
    /// `caller_token` is the caller's validated JWT (used only by `token_exchange`),
    /// `identity` its identity (its `exp` tells whether refreshing ahead is worthwhile).
    pub async fn credential(
        &self,
        upstream: &str,
        caller_token: Option<&str>,
        identity: Option<&Identity>,
    ) -> Result<Arc<str>, UpstreamError> {
        let caller = Caller {
            token: caller_token,
            key: None,
            identity,
        };
        self.credential_for(upstream, caller, Instant::now()).await
    }

    /// [`Broker::credential`] as the engine calls it: `caller.key` is the token's cache key
    /// when the authenticator already computed it (the token exchange cache is keyed the
    /// same way), and `now` the decision's own clock reading, taken microseconds earlier, so a
    /// cached `client_credentials` token costs no clock read of its own (~25 ns each on the
    /// development VM, where that was a quarter of the cached credential's share).
    pub async fn credential_for(
        &self,
        upstream: &str,
        caller: Caller<'_>,
        now: Instant,
    ) -> Result<Arc<str>, UpstreamError> {
        let Some(up) = self.upstreams.get(upstream) else {
            return Err(unknown(upstream));
        };
        let http = up.http.as_ref().unwrap_or(&self.http);
        match &up.source {
            Source::Static(s) => Ok(s.credential()),
            // The slow paths are boxed (the exchange's inside `TokenExchange::credential`):
            // their futures (HTTP request, moka insertion) are kilobytes, and an unboxed
            // `await` would make every call, cached ones included, build and move a future
            // that large.
            Source::ClientCredentials(s) => match s.cached(http, now) {
                Some(h) => Ok(h),
                None => Box::pin(s.fetch(http, s.deadline_from(now))).await,
            },
            Source::TokenExchange(s) => s.credential(http, caller, now).await,
        }
    }

    /// [`Broker::credential_for`] for a request: when `serving` names the endpoint of a
    /// serving invocation ([`serving_invocation`]) and the upstream has `data_plane = "auto"`,
    /// a route-optimized endpoint's data-plane route and endpoint-scoped token instead of the
    /// workspace credential. Everything shares one deadline: `now + total_budget`.
    pub async fn grant_for(
        &self,
        upstream: &str,
        caller: Caller<'_>,
        now: Instant,
        serving: Option<&str>,
    ) -> Result<Grant, UpstreamError> {
        let authorization = self.credential_for(upstream, caller, now).await?;
        match serving {
            Some(name) => {
                self.with_data_plane(upstream, name, authorization, now)
                    .await
            }
            None => Ok(Grant {
                authorization,
                route: None,
            }),
        }
    }

    /// The second half of [`Broker::grant_for`], for a serving invocation of endpoint `name`
    /// once the upstream's credential (`control`) is in hand: the data-plane route and token
    /// of a route-optimized endpoint, or `control` unchanged (classic endpoint, `data_plane =
    /// "off"`, a kind without a data plane). The engine calls the two halves itself, so that a
    /// request that is no serving invocation awaits exactly [`Broker::credential_for`].
    pub async fn with_data_plane(
        &self,
        upstream: &str,
        name: &str,
        control: Arc<str>,
        now: Instant,
    ) -> Result<Grant, UpstreamError> {
        let classic = |authorization| {
            Ok(Grant {
                authorization,
                route: None,
            })
        };
        let Some(up) = self.upstreams.get(upstream) else {
            return classic(control);
        };
        let Some(dp) = &up.data_plane else {
            return classic(control);
        };
        let deadline = now + up.cfg.total_budget.0;
        let http = up.http.as_ref().unwrap_or(&self.http);
        match Box::pin(dp.route(http, name, &control, deadline)).await? {
            Some((token, route)) => Ok(Grant {
                authorization: token,
                route: Some(route),
            }),
            None => classic(control),
        }
    }

    /// The request schema of serving endpoint `endpoint`, from its OpenAPI document, fetched
    /// with `authorization` (the upstream's credential for this caller) and cached
    /// (`upstream/openapi.rs`); or why there is none.
    pub async fn endpoint_schema(
        &self,
        upstream: &str,
        endpoint: &str,
        authorization: &str,
        now: Instant,
    ) -> Result<EndpointSchema, Arc<str>> {
        let up = self
            .upstreams
            .get(upstream)
            .ok_or_else(|| Arc::<str>::from("no such upstream"))?;
        let schemas = up
            .schemas
            .as_ref()
            .ok_or_else(|| Arc::<str>::from("the upstream has no workspace_url"))?;
        let http = up.http.as_ref().unwrap_or(&self.http);
        let deadline = now + up.cfg.total_budget.0;
        Box::pin(schemas.schema(http, endpoint, authorization, deadline)).await
    }

    /// Whether an upstream of this name is configured.
    pub fn contains(&self, upstream: &str) -> bool {
        self.upstreams.contains_key(upstream)
    }

    /// Tokens currently cached for `upstream` (`None` if it is not configured): 0 or 1 for
    /// `client_credentials`, up to `cache_size` per-caller entries (tokens and remembered
    /// refusals) for `token_exchange`, 0 for `static`. For tests and diagnostics.
    pub async fn cached_tokens(&self, upstream: &str) -> Option<u64> {
        Some(match &self.upstreams.get(upstream)?.source {
            Source::Static(_) => 0,
            Source::ClientCredentials(s) => u64::from(s.has_token()),
            Source::TokenExchange(s) => s.cached_entries().await,
        })
    }

    /// The configured upstream names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }
}

/// A rule naming an upstream that is not configured: the policy compiler refuses that at load,
/// so reaching it is a configuration mistake. Logged as such, and refused.
#[cold]
#[inline(never)]
fn unknown(upstream: &str) -> UpstreamError {
    let shown: String = upstream.chars().take(MAX_UPSTREAM_NAME).collect();
    failure::log_config(
        &shown,
        None,
        "no upstream of this name is configured (the policy compiler should have refused the rule)",
    );
    UpstreamError::Unknown(upstream.to_string())
}

/// Read the secret file of the upstream's kind (`client_secret_file`, `token_file`, or the
/// PEM key and certificate of `client_assertion_key_file` and `client_assertion_cert_file`,
/// kept together so that a reload sees a change of either); `None` for the kinds without one.
fn read_secret(name: &str, c: &UpstreamConfig) -> Result<Option<Secret>, Problem> {
    let problem = |field: &str, e| Problem::new(format!("upstream.{name}.{field}"), e);
    let (field, file) = match &c.credential {
        Credential::ClientCredentials {
            auth: ClientAuth::Secret(f),
            ..
        }
        | Credential::OnBehalfOf {
            auth: ClientAuth::Secret(f),
            ..
        } => ("client_secret_file", f),
        Credential::ClientCredentials {
            auth: ClientAuth::PrivateKeyJwt { key, cert, .. },
            ..
        }
        | Credential::OnBehalfOf {
            auth: ClientAuth::PrivateKeyJwt { key, cert, .. },
            ..
        } => {
            let key = assertion::read_pem_file(key.path(), true)
                .map_err(|e| problem("client_assertion_key_file", e))?;
            let cert = assertion::read_pem_file(cert.path(), false)
                .map_err(|e| problem("client_assertion_cert_file", e))?;
            let mut both = String::with_capacity(key.expose().len() + cert.expose().len() + 1);
            both.push_str(key.expose());
            both.push('\0');
            both.push_str(cert.expose());
            return Ok(Some(Secret::new(both)));
        }
        Credential::Static { token_file } => ("token_file", token_file),
        Credential::TokenExchange { .. } | Credential::AzureManagedIdentity { .. } => {
            return Ok(None)
        }
    };
    secret::read_secret_file(file.path())
        .map(Some)
        .map_err(|e| problem(field, e))
}

/// The client authentication of `client_credentials` and `on_behalf_of`: `secret` is what
/// [`read_secret`] read for `auth`.
fn client_auth(
    name: &str,
    token_url: &crate::config::HttpsUrl,
    client_id: &str,
    auth: &ClientAuth,
    secret: &Secret,
) -> Result<client_credentials::Auth, Problem> {
    match auth {
        ClientAuth::Secret(_) => client_credentials::Auth::basic(client_id, secret)
            .map_err(|e| Problem::new(format!("upstream.{name}.client_secret_file"), e)),
        ClientAuth::PrivateKeyJwt { algorithm, .. } => {
            let (key, cert) = secret.expose().split_once('\0').unwrap_or_default();
            assertion::ClientAssertion::new(
                &Secret::new(key.to_string()),
                cert.as_bytes(),
                token_url.as_str(),
                client_id,
                (*algorithm).into(),
            )
            .map(client_credentials::Auth::assertion)
            .map_err(|(field, e)| Problem::new(format!("upstream.{name}.{field}"), e))
        }
    }
}

impl Upstream {
    /// Assemble an upstream of a loaded configuration; `secret` is what [`read_secret`] read
    /// for it. Fails only when the client secret cannot be sent (not a valid header value).
    fn build(
        name: &str,
        c: &UpstreamConfig,
        secret: Option<Secret>,
        shared: Option<&Arc<shared::SharedCredentials>>,
    ) -> Result<Upstream, Problem> {
        let endpoint = |url: &crate::config::HttpsUrl| {
            oauth::Endpoint::new(
                Arc::from(name),
                url.url().clone(),
                c.timeout.0,
                c.total_budget.0,
            )
        };
        let scope = c.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.to_string());
        let source = match (&c.credential, &secret) {
            (Credential::Static { .. }, Some(token)) => Source::Static(StaticToken::new(token)),
            (
                Credential::ClientCredentials {
                    token_url,
                    client_id,
                    auth,
                },
                Some(sec),
            ) => Source::ClientCredentials(Arc::new(ClientCredentials::with_auth(
                endpoint(token_url),
                client_id,
                client_auth(name, token_url, client_id, auth, sec)?,
                &scope,
                c.refresh_ahead.0,
            ))),
            (
                Credential::OnBehalfOf {
                    token_url,
                    client_id,
                    auth,
                },
                Some(sec),
            ) => Source::TokenExchange(Arc::new(
                TokenExchange::on_behalf_of(
                    endpoint(token_url),
                    scope,
                    client_id,
                    client_auth(name, token_url, client_id, auth, sec)?,
                    c.refresh_ahead.0,
                    c.cache_size,
                )
                .with_shared(shared.cloned()),
            )),
            (
                Credential::AzureManagedIdentity {
                    imds_url,
                    resource,
                    client_id,
                },
                _,
            ) => {
                let mut url = imds_url.clone();
                {
                    let mut q = url.query_pairs_mut();
                    q.append_pair("api-version", IMDS_API_VERSION)
                        .append_pair("resource", resource);
                    if let Some(id) = client_id {
                        q.append_pair("client_id", id);
                    }
                }
                let ep = oauth::Endpoint::imds(Arc::from(name), url, c.timeout.0, c.total_budget.0);
                Source::ClientCredentials(Arc::new(ClientCredentials::unauthenticated(
                    ep,
                    c.refresh_ahead.0,
                )))
            }
            (
                Credential::TokenExchange {
                    token_url,
                    client_id,
                },
                _,
            ) => Source::TokenExchange(Arc::new(
                TokenExchange::new(
                    endpoint(token_url),
                    scope,
                    client_id.clone(),
                    c.refresh_ahead.0,
                    c.cache_size,
                )
                .with_shared(shared.cloned()),
            )),
            (
                Credential::Static { .. }
                | Credential::ClientCredentials { .. }
                | Credential::OnBehalfOf { .. },
                None,
            ) => {
                unreachable!("read_secret reads the secret file of these kinds")
            }
        };
        let data_plane = match (&c.credential, c.data_plane, &c.workspace_url) {
            (
                Credential::ClientCredentials { token_url, .. }
                | Credential::TokenExchange { token_url, .. },
                DataPlaneMode::Auto,
                Some(workspace),
            ) => Some(
                DataPlane::new(
                    endpoint(token_url),
                    workspace,
                    c.data_plane_hosts.clone(),
                    matches!(c.credential, Credential::TokenExchange { .. }),
                    c.timeout.0,
                    c.cache_size,
                )
                .with_shared(shared.cloned()),
            ),
            _ => None,
        };
        let schemas = c
            .workspace_url
            .as_ref()
            .map(|w| openapi::EndpointSchemas::new(w, c.timeout.0, c.cache_size, c.schema_times));
        let http = match &c.ca_file {
            Some(f) => Some(
                crate::outbound::client_trusting(f.path())
                    .map_err(|e| Problem::new(format!("upstream.{name}.ca_file"), e))?,
            ),
            None => None,
        };
        Ok(Upstream {
            cfg: c.clone(),
            secret,
            source,
            http,
            data_plane,
            schemas,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_that_cannot_be_used_is_a_problem_of_its_key() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("empty"), "\n").unwrap();
        let text = "[upstream.st]\nkind = \"static\"\ntoken_file = \"empty\"\n";
        let cfg = Config::from_toml_in(text, "t", d.path()).unwrap();
        let p = Broker::new(&cfg, None, reqwest::Client::new()).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].key, "upstream.st.token_file");
        assert!(p[0].message.contains("is empty"), "{}", p[0]);
    }

    #[test]
    fn errors_display_without_secrets() {
        let e = UpstreamError::Failed {
            upstream: Arc::from("sp"),
            failure: Arc::new(Failure {
                status: Some(401),
                error_code: Some("invalid_client".into()),
                error_description: Some("Client authentication failed".into()),
                ..Failure::new(Outcome::Http4xx)
            }),
            per_caller: false,
        };
        assert_eq!(
            e.to_string(),
            "upstream \"sp\": token request failed: http_4xx, HTTP 401, error_code invalid_client"
        );
        let e = UpstreamError::Failed {
            upstream: Arc::from("sp"),
            failure: Arc::new(Failure {
                cause: Some("error sending request: dns error".into()),
                ..Failure::new(Outcome::Network)
            }),
            per_caller: false,
        };
        assert_eq!(
            e.to_string(),
            "upstream \"sp\": token request failed: network: error sending request: dns error"
        );
    }
}
