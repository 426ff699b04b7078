//! Databricks upstream credentials: the `Authorization` value idgate hands HAProxy for the
//! upstream request (contract §3 `upstream_authorization`, §4 `[upstream.NAME]`).
//!
//! Three kinds:
//!
//! - `client_credentials` (OAuth M2M): `POST {token_url}` with
//!   `grant_type=client_credentials&scope=…` and HTTP Basic client authentication
//!   (`client_id:client_secret`, each form-urlencoded first, RFC 6749 §2.3.1). One token per
//!   upstream, shared by every caller: the upstream sees the service principal.
//! - `token_exchange` (RFC 8693, Databricks OAuth token federation): the caller's validated
//!   JWT is the `subject_token`; `client_id` goes in the form only when configured (workload
//!   identity federation with a service-principal policy), never a secret. Tokens are cached
//!   **per caller token**, never shared (see [`ExchangeSource`] for why the key is a hash of the
//!   whole caller token).
//! - `static`: a bearer token (e.g. a PAT) read from `token_file`.
//!
//! Fail closed: if no credential can be had, [`Broker::credential`] returns an error and the
//! engine answers `allow=false, status=503, reason=upstream_unavailable`. An expired token is
//! never served: expiry is checked at read time, with a safety margin.
//!
//! Latency: a cached shared token is one `ArcSwap` load, one clock read and an `Arc` clone
//! (no lock, no hashing beyond the upstream-name lookup). Tokens are refreshed in the
//! background [`UpstreamConfig::refresh_ahead`] before expiry, so callers do not wait on the
//! token endpoint except for the very first request (or after an outage).

mod oauth;
mod secret;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use bytes::Bytes;
use reqwest::header::HeaderValue;
use zeroize::Zeroizing;

use crate::auth::TokenKey;
use crate::config::{check_url, Config, Problem, UpstreamConfig, UpstreamKind};
use crate::decision::Identity;

pub use oauth::{
    Failure, Outcome, BACKOFF_MAX, DEFAULT_EXPIRES_IN, MAX_ACCESS_TOKEN_BYTES, MAX_EXPIRES_IN,
    MAX_RETRY_AFTER,
};
pub use secret::{Secret, CREDENTIALS_DIRECTORY_ENV, MAX_SECRET_BYTES};

/// Scope requested when none is configured: Databricks' default for workspace APIs.
pub const DEFAULT_SCOPE: &str = "all-apis";
/// RFC 8693 grant type.
pub const GRANT_TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 token type of the caller's IdP JWT.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A token is not served once it is this close to expiry (or a tenth of its lifetime, for
/// short-lived tokens): HAProxy may queue the upstream request for a moment, and a token that
/// expires in flight is a 401 the caller cannot fix.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// After a background refresh failed, the next one starts no sooner than this (the current,
/// still valid token keeps being served meanwhile). Keeps a failing endpoint from being hit
/// on every request.
pub const REFRESH_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// After the token endpoint failed (5xx, 429, timeout, network, garbage), requests that have no
/// cached token fail at once for this long (or for the `Retry-After` of a 429) instead of each
/// waiting a full `total_budget`: an outage then costs HAProxy fast 503s, not piled-up
/// SPOE timeouts, and the endpoint is not hammered while it recovers.
pub const FAILURE_HOLDOFF: Duration = Duration::from_secs(1);

/// A token exchange the endpoint refused with a 4xx (the federation policy does not accept
/// this caller's token) is remembered per caller token for this long, so one caller retrying
/// cannot make idgate hammer the token endpoint.
pub const REFUSAL_TTL: Duration = Duration::from_secs(10);

/// Upstream names become metric label values and log fields: keep them short and plain.
pub const MAX_UPSTREAM_NAME: usize = 64;

/// Why no credential could be had. `Display` never contains a secret or token: only the
/// upstream name (from the config), a result word, an HTTP status and an `error_code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("no upstream named {0:?} is configured")]
    Unknown(String),
    #[error("upstream {0:?}: token_exchange needs the caller's bearer token, and there is none")]
    NoCallerToken(Arc<str>),
    #[error("upstream {upstream:?}: token request failed: {failure}")]
    Failed {
        upstream: Arc<str>,
        failure: Failure,
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

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.outcome.as_str())?;
        if let Some(s) = self.status {
            write!(f, ", HTTP {s}")?;
        }
        if let Some(c) = &self.error_code {
            write!(f, ", error_code {c}")?;
        }
        if let Some(d) = self.detail {
            write!(f, ", {d}")?;
        }
        Ok(())
    }
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
        let mut names: Vec<_> = self.upstreams.keys().collect();
        names.sort();
        f.debug_struct("Broker").field("upstreams", &names).finish()
    }
}

/// One configured upstream. `cfg` and `secret` are kept to decide, on reload, whether the new
/// config is the same (then the whole `Arc<Upstream>`, caches included, is carried over).
struct Upstream {
    cfg: UpstreamConfig,
    secret: Option<Secret>,
    source: Source,
}

enum Source {
    Static(Arc<str>),
    Shared(Arc<SharedSource>),
    Exchange(Arc<ExchangeSource>),
}

impl Broker {
    /// Build from `cfg.upstreams`; read secrets (relative file names are looked up in
    /// `$CREDENTIALS_DIRECTORY` first); report every problem with its key path (e.g.
    /// `upstream.serving-sp.client_secret_file`). `previous`: on reload, upstreams whose
    /// config AND secret are unchanged keep their token caches.
    ///
    /// `http` should not follow redirects (a token endpoint that redirects is misconfigured,
    /// and following would turn the POST into a GET); it is used for every token request.
    pub fn new(
        cfg: &Config,
        previous: Option<&Broker>,
        http: reqwest::Client,
    ) -> Result<Broker, Vec<Problem>> {
        let dir = secret::credentials_dir_from_env();
        Broker::with_credentials_dir(cfg, previous, http, dir.as_deref())
    }

    /// [`Broker::new`] with an explicit credentials directory instead of
    /// `$CREDENTIALS_DIRECTORY` (tests; embedding).
    pub fn with_credentials_dir(
        cfg: &Config,
        previous: Option<&Broker>,
        http: reqwest::Client,
        credentials_dir: Option<&Path>,
    ) -> Result<Broker, Vec<Problem>> {
        LazyLock::force(&CLOCK_BASE);
        let mut problems = Vec::new();
        let mut upstreams = BTreeMap::new();
        for (name, uc) in &cfg.upstreams {
            let before = problems.len();
            validate(name, uc, &mut problems);
            let secret = read_secret(name, uc, credentials_dir, &mut problems);
            if problems.len() > before {
                continue;
            }
            if let Some(prev) = previous.and_then(|b| b.upstreams.get(name)) {
                if prev.cfg == *uc && prev.secret == secret {
                    upstreams.insert(name.clone(), Arc::clone(prev));
                    continue;
                }
            }
            match Upstream::build(name, uc, secret) {
                Ok(u) => {
                    upstreams.insert(name.clone(), Arc::new(u));
                }
                Err(p) => problems.push(p),
            }
        }
        // Rule references (unknown upstream, token_exchange on a public rule) are checked by
        // the policy compiler, which owns `[[rule]]`.
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
        caller_token: &str,
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
        let up = self
            .upstreams
            .get(upstream)
            .ok_or_else(|| UpstreamError::Unknown(upstream.to_string()))?;
        match &up.source {
            Source::Static(h) => Ok(Arc::clone(h)),
            // The slow paths are boxed (the exchange's inside `ExchangeSource::credential`):
            // their futures (HTTP request, moka insertion) are kilobytes, and an unboxed
            // `await` would make every call, cached ones included, build and move a future
            // that large.
            Source::Shared(s) => match s.cached(&self.http, now) {
                Some(h) => Ok(h),
                None => Box::pin(s.fetch(&self.http)).await,
            },
            Source::Exchange(s) => s.credential(&self.http, caller, now).await,
        }
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
            Source::Shared(s) => u64::from(s.current.load().is_some()),
            Source::Exchange(s) => {
                s.cache.run_pending_tasks().await;
                s.cache.entry_count()
            }
        })
    }

    /// The configured upstream names (unordered).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.upstreams.keys().map(String::as_str)
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration checks

fn validate(name: &str, c: &UpstreamConfig, p: &mut Vec<Problem>) {
    let k = |field: &str| format!("upstream.{name}.{field}");
    if name.is_empty()
        || name.len() > MAX_UPSTREAM_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        p.push(Problem::new(
            format!("upstream.{name}"),
            format!(
                "the name must be 1-{MAX_UPSTREAM_NAME} characters of A-Z a-z 0-9 _ - . \
                 (it is a metric label)"
            ),
        ));
    }
    let kind = match c.kind {
        UpstreamKind::ClientCredentials => "client_credentials",
        UpstreamKind::TokenExchange => "token_exchange",
        UpstreamKind::Static => "static",
    };
    let (needs, forbids): (&[&str], &[&str]) = match c.kind {
        UpstreamKind::ClientCredentials => (
            &["token_url", "client_id", "client_secret_file"],
            &["token_file"],
        ),
        UpstreamKind::TokenExchange => (&["token_url"], &["client_secret_file", "token_file"]),
        UpstreamKind::Static => (
            &["token_file"],
            &["token_url", "client_id", "client_secret_file", "scope"],
        ),
    };
    let present = |f: &str| match f {
        "token_url" => c.token_url.is_some(),
        "client_id" => c.client_id.is_some(),
        "client_secret_file" => c.client_secret_file.is_some(),
        "token_file" => c.token_file.is_some(),
        "scope" => c.scope.is_some(),
        _ => false,
    };
    for f in needs {
        if !present(f) {
            p.push(Problem::new(
                k(f),
                format!("required for kind = \"{kind}\""),
            ));
        }
    }
    for f in forbids {
        if present(f) {
            let why = match (c.kind, *f) {
                (UpstreamKind::TokenExchange, "client_secret_file") => {
                    "; token exchange sends no client secret (set client_id alone for \
                     workload identity federation)"
                }
                _ => "",
            };
            p.push(Problem::new(
                k(f),
                format!("does not apply to kind = \"{kind}\"{why}"),
            ));
        }
    }
    if c.kind != UpstreamKind::Static {
        if let Some(u) = &c.token_url {
            if let Err(e) = check_url(u) {
                p.push(Problem::new(k("token_url"), e));
            }
        }
        if let Some(id) = &c.client_id {
            if id.is_empty() || id.len() > 256 || !id.bytes().all(|b| b.is_ascii_graphic()) {
                p.push(Problem::new(
                    k("client_id"),
                    "must be 1-256 visible ASCII characters (the service principal's application ID)",
                ));
            }
        }
        if let Some(s) = &c.scope {
            if s.trim().is_empty()
                || s.len() > 1024
                || !s.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
            {
                p.push(Problem::new(
                    k("scope"),
                    "must be space-separated scopes of visible ASCII, e.g. \"all-apis\"",
                ));
            }
        }
        if c.timeout.0.is_zero() || c.timeout.0 > Duration::from_secs(60) {
            p.push(Problem::new(k("timeout"), "must be between 1ms and 60s"));
        }
        if c.total_budget.0.is_zero() || c.total_budget.0 > Duration::from_secs(300) {
            p.push(Problem::new(
                k("total_budget"),
                "must be between 1ms and 5m",
            ));
        }
        if c.timeout.0 > c.total_budget.0 {
            p.push(Problem::new(
                k("timeout"),
                "must not exceed total_budget (the budget bounds every attempt)",
            ));
        }
    }
    if c.kind == UpstreamKind::TokenExchange && c.cache_size == 0 {
        p.push(Problem::new(k("cache_size"), "must be at least 1"));
    }
}

fn read_secret(
    name: &str,
    c: &UpstreamConfig,
    dir: Option<&Path>,
    p: &mut Vec<Problem>,
) -> Option<Secret> {
    let (field, file) = match c.kind {
        UpstreamKind::ClientCredentials => ("client_secret_file", c.client_secret_file.as_ref()?),
        UpstreamKind::Static => ("token_file", c.token_file.as_ref()?),
        UpstreamKind::TokenExchange => return None,
    };
    match secret::read_secret_file(file, dir) {
        Ok(s) => Some(s),
        Err(e) => {
            p.push(Problem::new(format!("upstream.{name}.{field}"), e));
            None
        }
    }
}

impl Upstream {
    /// Assemble a validated upstream (problems were reported by [`validate`]).
    fn build(name: &str, c: &UpstreamConfig, secret: Option<Secret>) -> Result<Upstream, Problem> {
        let missing = |f: &str| Problem::new(format!("upstream.{name}.{f}"), "required");
        let endpoint = || -> Result<oauth::Endpoint, Problem> {
            let raw = c.token_url.as_deref().ok_or_else(|| missing("token_url"))?;
            let url = check_url(raw)
                .map_err(|e| Problem::new(format!("upstream.{name}.token_url"), e))?;
            Ok(oauth::Endpoint::new(
                Arc::from(name),
                url,
                c.timeout.0,
                c.total_budget.0,
            ))
        };
        let scope = c.scope.clone().unwrap_or_else(|| DEFAULT_SCOPE.to_string());
        let source = match c.kind {
            UpstreamKind::Static => {
                let token = secret.as_ref().ok_or_else(|| missing("token_file"))?;
                Source::Static(Arc::from(format!("Bearer {}", token.expose())))
            }
            UpstreamKind::ClientCredentials => {
                let id = c.client_id.as_deref().ok_or_else(|| missing("client_id"))?;
                let sec = secret
                    .as_ref()
                    .ok_or_else(|| missing("client_secret_file"))?;
                let form = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("scope", &scope)
                    .finish();
                Source::Shared(Arc::new(SharedSource {
                    ep: endpoint()?,
                    client_auth: basic_auth(id, sec).map_err(|e| {
                        Problem::new(format!("upstream.{name}.client_secret_file"), e)
                    })?,
                    form: Bytes::from(form),
                    refresh_ahead: c.refresh_ahead.0,
                    current: ArcSwapOption::empty(),
                    holdoff: Holdoff::default(),
                    flight: tokio::sync::Mutex::new(None),
                }))
            }
            UpstreamKind::TokenExchange => Source::Exchange(Arc::new(ExchangeSource {
                ep: endpoint()?,
                scope,
                client_id: c.client_id.clone(),
                refresh_ahead: c.refresh_ahead.0,
                holdoff: Holdoff::default(),
                cache: moka::future::Cache::builder()
                    .max_capacity(c.cache_size)
                    .expire_after(SlotExpiry)
                    .build(),
            })),
        };
        Ok(Upstream {
            cfg: c.clone(),
            secret,
            source,
        })
    }
}

/// `Authorization: Basic base64(urlencode(id) ":" urlencode(secret))` (RFC 6749 §2.3.1, as the
/// Databricks SDK sends it). Built once per upstream; marked sensitive so HTTP tooling never
/// prints it.
fn basic_auth(client_id: &str, secret: &Secret) -> Result<HeaderValue, String> {
    let enc = |s: &str| -> Zeroizing<String> {
        Zeroizing::new(url::form_urlencoded::byte_serialize(s.as_bytes()).collect())
    };
    let mut pair = Zeroizing::new(String::with_capacity(client_id.len() + 64));
    pair.push_str(&enc(client_id));
    pair.push(':');
    pair.push_str(&enc(secret.expose()));
    let mut value = Zeroizing::new(String::from("Basic "));
    base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut value);
    let mut h =
        HeaderValue::from_str(&value).map_err(|_| "cannot form a Basic header".to_string())?;
    h.set_sensitive(true);
    Ok(h)
}

// ---------------------------------------------------------------------------------------------
// Cached tokens

/// Origin of the monotonic nanosecond timestamps kept in atomics.
static CLOCK_BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

fn nanos(i: Instant) -> u64 {
    u64::try_from(i.saturating_duration_since(*CLOCK_BASE).as_nanos()).unwrap_or(u64::MAX)
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A token with its deadlines.
#[derive(Debug)]
struct TokenEntry {
    header: Arc<str>,
    /// Never served at or after this instant.
    usable_until: Instant,
    /// When the next background refresh may start ([`nanos`] since [`CLOCK_BASE`];
    /// `u64::MAX` = never). A refresher moves it forward by [`REFRESH_RETRY_INTERVAL`] with a
    /// compare-and-swap, which is both the single-flight of refreshes and their retry pacing.
    refresh_due: AtomicU64,
}

impl TokenEntry {
    /// Deadlines from the token's lifetime: served until `lifetime - min(EXPIRY_MARGIN,
    /// lifetime/10)`, refreshed from `lifetime - min(refresh_ahead, lifetime/2)` (a token
    /// shorter than twice `refresh_ahead` is refreshed at half-life instead of constantly).
    fn new(tok: &oauth::Token, refresh_ahead: Duration, refresh: bool) -> TokenEntry {
        let life = tok.lifetime;
        let usable_until = tok.requested_at + (life - EXPIRY_MARGIN.min(life / 10));
        let refresh_at = tok.requested_at + (life - refresh_ahead.min(life / 2));
        let due = if refresh && !refresh_ahead.is_zero() {
            nanos(refresh_at)
        } else {
            u64::MAX
        };
        TokenEntry {
            header: Arc::clone(&tok.header),
            usable_until,
            refresh_due: AtomicU64::new(due),
        }
    }

    fn fresh(&self, now: Instant) -> bool {
        now < self.usable_until
    }

    /// True for exactly one caller once the refresh is due (and again after
    /// [`REFRESH_RETRY_INTERVAL`] if that refresh did not replace this entry).
    fn claim_refresh(&self, now: Instant) -> bool {
        let due = self.refresh_due.load(Ordering::Relaxed);
        let n = nanos(now);
        n >= due
            && self
                .refresh_due
                .compare_exchange(
                    due,
                    n.saturating_add(nanos_of(REFRESH_RETRY_INTERVAL)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// "Do not call the endpoint before this instant" after an endpoint failure.
#[derive(Debug, Default)]
struct Holdoff(AtomicU64);

impl Holdoff {
    fn remaining(&self, now: Instant) -> Option<Duration> {
        let until = self.0.load(Ordering::Relaxed);
        let n = nanos(now);
        (n < until).then(|| Duration::from_nanos(until - n))
    }

    fn after(&self, f: &Failure) {
        let d = match (f.outcome, f.retry_after) {
            (Outcome::Http429, Some(ra)) => ra.max(FAILURE_HOLDOFF),
            _ => FAILURE_HOLDOFF,
        };
        let until = nanos(Instant::now()).saturating_add(nanos_of(d));
        self.0.fetch_max(until, Ordering::Relaxed);
    }

    fn error(&self, upstream: &Arc<str>, now: Instant) -> Result<(), UpstreamError> {
        match self.remaining(now) {
            Some(retry_in) => Err(UpstreamError::BackingOff {
                upstream: Arc::clone(upstream),
                retry_in,
            }),
            None => Ok(()),
        }
    }
}

fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    // Outside a Tokio runtime (a benchmark polling by hand) there is nothing to run a
    // background refresh on; the token is then refreshed on expiry instead.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(task);
    }
}

/// Who a credential is for: the caller's validated token (used only by `token_exchange`),
/// its cache key (`auth::token_key` of it) when already computed, and its identity (its
/// `exp` tells whether refreshing ahead is worthwhile).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub token: &'a str,
    pub key: Option<&'a TokenKey>,
    pub identity: Option<&'a Identity>,
}

/// `client_credentials`: one token for the whole upstream.
struct SharedSource {
    ep: oauth::Endpoint,
    client_auth: HeaderValue,
    form: Bytes,
    refresh_ahead: Duration,
    current: ArcSwapOption<TokenEntry>,
    holdoff: Holdoff,
    /// Single flight: the holder of this lock is the only token request in flight. The value
    /// is the last failure and when it happened: callers queued behind a failed request share
    /// its error instead of each trying again (which would multiply the wait by the queue
    /// length).
    flight: tokio::sync::Mutex<Option<(Instant, UpstreamError)>>,
}

impl SharedSource {
    /// The fast path: the current token if it may still be served (starting a background
    /// refresh when one is due). Synchronous, so a cached credential costs no future.
    fn cached(self: &Arc<Self>, http: &reqwest::Client, now: Instant) -> Option<Arc<str>> {
        let guard = self.current.load();
        let e = guard.as_ref()?;
        if !e.fresh(now) {
            return None;
        }
        if e.claim_refresh(now) {
            self.spawn_refresh(http, Arc::clone(e));
        }
        Some(Arc::clone(&e.header))
    }

    async fn fetch(&self, http: &reqwest::Client) -> Result<Arc<str>, UpstreamError> {
        let arrived = Instant::now();
        let mut last = self.flight.lock().await;
        let now = Instant::now();
        if let Some(e) = &*self.current.load() {
            if e.fresh(now) {
                return Ok(Arc::clone(&e.header));
            }
        }
        if let Some((at, err)) = &*last {
            if *at >= arrived {
                return Err(err.clone());
            }
        }
        self.holdoff.error(&self.ep.upstream, now)?;
        match self
            .ep
            .request(http, self.form.clone(), Some(&self.client_auth))
            .await
        {
            Ok(tok) => {
                let e = Arc::new(TokenEntry::new(&tok, self.refresh_ahead, true));
                let header = Arc::clone(&e.header);
                self.current.store(Some(e));
                *last = None;
                Ok(header)
            }
            Err(f) => {
                // Every failure holds off: a bad secret (4xx) is the same for every caller.
                self.holdoff.after(&f);
                let err = UpstreamError::Failed {
                    upstream: Arc::clone(&self.ep.upstream),
                    failure: f,
                };
                *last = Some((Instant::now(), err.clone()));
                Err(err)
            }
        }
    }

    fn spawn_refresh(self: &Arc<Self>, http: &reqwest::Client, stale: Arc<TokenEntry>) {
        let this = Arc::clone(self);
        let http = http.clone();
        spawn(async move {
            let _flight = this.flight.lock().await;
            let replaced = match &*this.current.load() {
                Some(cur) => !Arc::ptr_eq(cur, &stale),
                None => true,
            };
            if replaced || this.holdoff.remaining(Instant::now()).is_some() {
                return;
            }
            match this
                .ep
                .request(&http, this.form.clone(), Some(&this.client_auth))
                .await
            {
                Ok(tok) => {
                    let e = TokenEntry::new(&tok, this.refresh_ahead, true);
                    this.current.store(Some(Arc::new(e)));
                }
                // Logged by the endpoint; the current token is served until it expires and
                // `refresh_due` paces the next try.
                Err(f) => this.holdoff.after(&f),
            }
        });
    }
}

/// `token_exchange`: one token per caller token.
///
/// The cache key is SHA-256 of the caller's whole token, not (issuer, sub, exp): Databricks
/// maps the subject token to a user through the federation policy's `subject_claim`, which
/// need not be `sub`, and may look at `aud` and other claims. Two different tokens with the
/// same (iss, sub, exp) could therefore map to different Databricks identities, and a key
/// built from them could hand caller B the token exchanged for caller A. The same token bytes
/// always map to the same identity, so a hash of the token is the only key that is safe
/// whatever the policy. The cost is one exchange per distinct caller token (a caller whose IdP
/// rotates tokens every 5 minutes is exchanged every 5 minutes), bounded by `cache_size`.
/// The caller's token itself is not stored, only its hash.
struct ExchangeSource {
    ep: oauth::Endpoint,
    scope: String,
    client_id: Option<String>,
    refresh_ahead: Duration,
    holdoff: Holdoff,
    cache: moka::future::Cache<[u8; 32], Arc<Slot>>,
}

/// A cache entry: a token, or a recent refusal of this caller's token.
#[derive(Debug)]
enum Slot {
    Token(TokenEntry),
    Refused { err: UpstreamError, until: Instant },
}

/// Lets moka drop an entry when it can no longer be served.
struct SlotExpiry;

impl SlotExpiry {
    fn left(slot: &Slot, from: Instant) -> Option<Duration> {
        let end = match slot {
            Slot::Token(e) => e.usable_until,
            Slot::Refused { until, .. } => *until,
        };
        Some(end.saturating_duration_since(from))
    }
}

impl moka::Expiry<[u8; 32], Arc<Slot>> for SlotExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        v: &Arc<Slot>,
        created_at: Instant,
    ) -> Option<Duration> {
        SlotExpiry::left(v, created_at)
    }

    fn expire_after_update(
        &self,
        _: &[u8; 32],
        v: &Arc<Slot>,
        updated_at: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        SlotExpiry::left(v, updated_at)
    }
}

impl ExchangeSource {
    /// What a cached slot answers at `now`: its token while fresh (starting a background
    /// refresh once one is due), its refusal while in force, or `None` once stale.
    fn answer(
        self: &Arc<Self>,
        slot: &Slot,
        now: Instant,
        http: &reqwest::Client,
        key: &TokenKey,
        caller: Caller<'_>,
    ) -> Option<Result<Arc<str>, UpstreamError>> {
        match slot {
            Slot::Token(e) if e.fresh(now) => {
                if e.claim_refresh(now) {
                    let caller_exp = caller.identity.map(|i| i.expires_at);
                    self.spawn_refresh(http, *key, caller.token, caller_exp);
                }
                Some(Ok(Arc::clone(&e.header)))
            }
            Slot::Refused { err, until } if now < *until => Some(Err(err.clone())),
            _ => None,
        }
    }

    /// The caller's exchanged token. A cached answer is served here, unboxed, with the
    /// decision's clock reading `now`: a plain cache lookup, because `try_get_with` builds the
    /// exchange future (and moka its own single-flight state) even on a hit. Only a miss or a
    /// stale entry takes the boxed [`ExchangeSource::fetch`].
    async fn credential(
        self: &Arc<Self>,
        http: &reqwest::Client,
        caller: Caller<'_>,
        now: Instant,
    ) -> Result<Arc<str>, UpstreamError> {
        if caller.token.is_empty() {
            return Err(UpstreamError::NoCallerToken(Arc::clone(&self.ep.upstream)));
        }
        let key = match caller.key {
            Some(k) => *k,
            None => crate::auth::token_key(caller.token),
        };
        if let Some(slot) = self.cache.get(&key).await {
            if let Some(answer) = self.answer(&slot, now, http, &key, caller) {
                return answer;
            }
            self.cache.invalidate(&key).await;
        }
        Box::pin(self.fetch(http, caller, key)).await
    }

    /// Exchange the caller's token (single flight per caller through the cache).
    async fn fetch(
        self: &Arc<Self>,
        http: &reqwest::Client,
        caller: Caller<'_>,
        key: TokenKey,
    ) -> Result<Arc<str>, UpstreamError> {
        let caller_exp = caller.identity.map(|i| i.expires_at);
        // Two rounds: moka's clock and ours can disagree by a hair, so an entry moka still
        // returns may be past `usable_until`; it is dropped and fetched once more.
        for _ in 0..2 {
            let slot = self
                .cache
                .try_get_with(key, self.exchange(http, caller.token, caller_exp))
                .await
                .map_err(|e| (*e).clone())?;
            if let Some(answer) = self.answer(&slot, Instant::now(), http, &key, caller) {
                return answer;
            }
            self.cache.invalidate(&key).await;
        }
        Err(UpstreamError::Failed {
            upstream: Arc::clone(&self.ep.upstream),
            failure: Failure {
                outcome: Outcome::InvalidResponse,
                status: None,
                error_code: None,
                retry_after: None,
                detail: Some("token expired as soon as it was issued"),
            },
        })
    }

    fn form(&self, caller_token: &str) -> Bytes {
        let mut s =
            url::form_urlencoded::Serializer::new(String::with_capacity(caller_token.len() + 256));
        s.append_pair("grant_type", GRANT_TOKEN_EXCHANGE)
            .append_pair("subject_token", caller_token)
            .append_pair("subject_token_type", TOKEN_TYPE_JWT)
            .append_pair("scope", &self.scope);
        if let Some(id) = &self.client_id {
            s.append_pair("client_id", id);
        }
        Bytes::from(s.finish())
    }

    /// Refreshing ahead only helps if the caller's token outlives the exchanged one (the
    /// exchanged token's lifetime derives from the subject token's); without an identity we
    /// cannot tell, so refresh.
    fn worth_refreshing(tok: &oauth::Token, caller_exp: Option<u64>) -> bool {
        let Some(exp) = caller_exp else { return true };
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        exp > now_unix
            .saturating_add(tok.lifetime.as_secs())
            .saturating_add(EXPIRY_MARGIN.as_secs())
    }

    async fn exchange(
        &self,
        http: &reqwest::Client,
        caller_token: &str,
        caller_exp: Option<u64>,
    ) -> Result<Arc<Slot>, UpstreamError> {
        self.holdoff.error(&self.ep.upstream, Instant::now())?;
        match self.ep.request(http, self.form(caller_token), None).await {
            Ok(tok) => {
                let refresh = Self::worth_refreshing(&tok, caller_exp);
                Ok(Arc::new(Slot::Token(TokenEntry::new(
                    &tok,
                    self.refresh_ahead,
                    refresh,
                ))))
            }
            Err(f) => {
                if f.is_endpoint_failure() {
                    self.holdoff.after(&f);
                }
                let refused = !f.is_endpoint_failure();
                let err = UpstreamError::Failed {
                    upstream: Arc::clone(&self.ep.upstream),
                    failure: f,
                };
                if refused {
                    Ok(Arc::new(Slot::Refused {
                        err,
                        until: Instant::now() + REFUSAL_TTL,
                    }))
                } else {
                    Err(err)
                }
            }
        }
    }

    fn spawn_refresh(
        self: &Arc<Self>,
        http: &reqwest::Client,
        key: [u8; 32],
        caller_token: &str,
        caller_exp: Option<u64>,
    ) {
        let this = Arc::clone(self);
        let http = http.clone();
        let form = self.form(caller_token);
        spawn(async move {
            if this.holdoff.remaining(Instant::now()).is_some() {
                return;
            }
            match this.ep.request(&http, form, None).await {
                Ok(tok) => {
                    let refresh = Self::worth_refreshing(&tok, caller_exp);
                    let e = TokenEntry::new(&tok, this.refresh_ahead, refresh);
                    this.cache.insert(key, Arc::new(Slot::Token(e))).await;
                }
                // A refusal now (e.g. the subject token is about to expire) must not evict
                // the still valid token; an endpoint failure holds off the others.
                Err(f) if f.is_endpoint_failure() => this.holdoff.after(&f),
                Err(_) => {}
            }
        });
    }
}

#[cfg(test)]
mod tests;
