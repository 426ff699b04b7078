//! One issuer's signing keys over time: OIDC discovery, JWKS fetches, the background refresh
//! task, and the rate-limited refetch on an unknown `kid`.
//!
//! Rules (identity-and-databricks.md §0.2, §3.5):
//! - Fetches are serialized per issuer by one async mutex, which also makes the unknown-`kid`
//!   refetch single-flight: concurrent misses wait for the fetch in progress instead of
//!   starting their own.
//! - Unknown-`kid` refetches are additionally rate-limited (`unknown_kid_refetch_interval`), so
//!   a flood of tokens with random kids costs the IdP at most one request per interval.
//! - A request waits for such a refetch at most `unknown_kid_wait` (default 1s, below HAProxy's
//!   SPOE processing timeout): the fetch runs in its own task holding the fetch lock, so a slow
//!   IdP (up to `http_timeout`) costs the request that bound, never HAProxy's timeout, and the
//!   fetch still completes for the next request with that `kid`.
//! - A failed or garbage fetch never replaces good keys: the last good set stays in use, the
//!   failure is counted (`idgate_jwks_refresh_total{result="failure"}`) and logged at most once
//!   a minute per issuer.
//! - The refresh task holds only a `Weak` reference and is also aborted when the owning
//!   issuer is dropped, so no task outlives its configuration.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use prometheus::{IntCounter, IntGauge};
use reqwest::header::{HeaderMap, ACCEPT, CACHE_CONTROL, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::jwks::{parse_jwks, KeySet};
use crate::config::{check_url, IssuerConfig};
use crate::metrics::metrics;

/// Largest JWKS document we read. Real ones are 1-10 KiB; the cap bounds memory and parse time
/// when an IdP (or something in front of it) returns junk.
pub(super) const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Largest discovery document we read (Keycloak's is ~6 KiB).
pub(super) const MAX_DISCOVERY_BYTES: usize = 64 * 1024;
/// Bounds for an IdP's `Cache-Control: max-age`: below a minute we would hammer the IdP, above a
/// day a removed (compromised) key would stay trusted too long.
pub(super) const MIN_MAX_AGE: Duration = Duration::from_secs(60);
pub(super) const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// First retry delay after a failed fetch; doubles per consecutive failure.
const RETRY_BASE: Duration = Duration::from_millis(250);
/// Retry cap before the first successful load: a late IdP is picked up within this.
const RETRY_CAP_UNLOADED: Duration = Duration::from_secs(10);
/// Retry cap once keys are loaded (they keep working meanwhile).
const RETRY_CAP_LOADED: Duration = Duration::from_secs(60);
/// At most one warning per issuer per this interval for repeated fetch failures.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// A point-in-time view of one issuer, for `/ready`, logs and `idgate explain`.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerStatus {
    pub name: String,
    pub issuer: String,
    /// Keys have loaded at least once.
    pub loaded: bool,
    pub keys: usize,
    pub kids: Vec<String>,
    /// The JWKS URL in use (configured or discovered).
    pub jwks_uri: Option<String>,
    pub last_success: Option<SystemTime>,
    /// The last fetch error, cleared by the next success.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Info {
    jwks_uri: Option<String>,
    last_success: Option<SystemTime>,
    last_error: Option<String>,
}

/// State that only the fetch in progress touches (guarded by the fetch mutex).
#[derive(Default)]
struct FetchState {
    /// From discovery; cleared after a failed JWKS fetch so the next attempt rediscovers.
    discovered: Option<url::Url>,
    etag: Option<String>,
    last_miss_fetch: Option<Instant>,
    last_warn: Option<Instant>,
}

/// Why a fetch happened (log context only).
#[derive(Debug, Clone, Copy)]
enum Cause {
    Scheduled,
    UnknownKid,
}

struct Counters {
    success: IntCounter,
    failure: IntCounter,
    not_modified: IntCounter,
    keys: IntGauge,
    last_success: IntGauge,
}

/// The keys of one issuer and everything needed to refresh them.
pub(super) struct KeyStore {
    name: Arc<str>,
    issuer: String,
    configured_jwks: Option<url::Url>,
    http: reqwest::Client,
    timeout: Duration,
    refresh: Duration,
    miss_interval: Duration,
    miss_wait: Duration,
    keys: ArcSwap<KeySet>,
    /// Bumped after each newly installed key set; lets a waiting miss see that keys changed.
    generation: AtomicU64,
    loaded: watch::Sender<bool>,
    /// In an `Arc` so that an unknown-`kid` refetch can move its guard into the task that
    /// outlives a request that stopped waiting.
    fetch: Arc<tokio::sync::Mutex<FetchState>>,
    info: Mutex<Info>,
    counters: Counters,
}

impl KeyStore {
    pub(super) fn new(cfg: &IssuerConfig, http: reqwest::Client) -> KeyStore {
        let configured_jwks = cfg.jwks_uri.as_ref().map(|u| u.url().clone());
        let m = metrics();
        let name = cfg.name.as_str();
        KeyStore {
            name: Arc::from(name),
            issuer: cfg.issuer.as_str().to_string(),
            info: Mutex::new(Info {
                jwks_uri: configured_jwks.as_ref().map(|u| u.to_string()),
                ..Info::default()
            }),
            configured_jwks,
            http,
            timeout: cfg.http_timeout.0,
            refresh: cfg.jwks_refresh.0,
            miss_interval: cfg.unknown_kid_refetch_interval.0,
            miss_wait: cfg.unknown_kid_wait.0,
            keys: ArcSwap::from_pointee(KeySet::default()),
            generation: AtomicU64::new(0),
            loaded: watch::Sender::new(false),
            fetch: Arc::new(tokio::sync::Mutex::new(FetchState::default())),
            counters: Counters {
                success: m.jwks_refresh.with_label_values(&[name, "success"]),
                failure: m.jwks_refresh.with_label_values(&[name, "failure"]),
                not_modified: m.jwks_refresh.with_label_values(&[name, "not_modified"]),
                keys: m.jwks_keys.with_label_values(&[name]),
                last_success: m.jwks_last_success.with_label_values(&[name]),
            },
        }
    }

    /// The current key set (lock-free).
    pub(super) fn keys(&self) -> Arc<KeySet> {
        self.keys.load_full()
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Resolves once keys have loaded at least once.
    pub(super) async fn wait_loaded(&self) {
        let mut rx = self.loaded.subscribe();
        // The sender lives as long as `self`, so this only errs if we are being dropped.
        let _ = rx.wait_for(|l| *l).await;
    }

    pub(super) fn status(&self) -> IssuerStatus {
        let keys = self.keys();
        let info = self.info.lock().unwrap_or_else(|p| p.into_inner());
        IssuerStatus {
            name: self.name.to_string(),
            issuer: self.issuer.clone(),
            loaded: self.is_loaded(),
            keys: keys.len(),
            kids: keys.kids(),
            jwks_uri: info.jwks_uri.clone(),
            last_success: info.last_success,
            last_error: info.last_error.clone(),
        }
    }

    /// Start from `other`'s keys. For a reload that changed this issuer's settings but not
    /// where its keys come from (same `issuer` and `jwks_uri`): those keys are what this very
    /// source served last, so they stay usable, exactly as after a failed refresh, until this
    /// store's own first fetch replaces them. Without this, such a reload while the IdP is
    /// unreachable would refuse every token of the issuer with `unknown_key`.
    pub(super) fn seed_from(&self, other: &KeyStore) {
        if !other.is_loaded() {
            return;
        }
        self.keys.store(other.keys());
        self.generation.fetch_add(1, Ordering::AcqRel);
        {
            let theirs = other.info.lock().unwrap_or_else(|p| p.into_inner());
            let mut ours = self.info.lock().unwrap_or_else(|p| p.into_inner());
            ours.jwks_uri.clone_from(&theirs.jwks_uri);
            ours.last_success = theirs.last_success;
        }
        self.loaded.send_replace(true);
    }

    /// Start the background refresh task on the current tokio runtime. `None` outside a
    /// runtime (e.g. a config check): keys then load on the first token's unknown-`kid` path.
    pub(super) fn spawn_refresher(self: &Arc<Self>) -> Option<AbortHandle> {
        let rt = tokio::runtime::Handle::try_current().ok()?;
        let weak = Arc::downgrade(self);
        Some(rt.spawn(refresher(weak)).abort_handle())
    }

    /// A token named a `kid` we do not have. Refetch once, unless another caller's fetch already
    /// brought new keys (`seen_generation` is stale) or the last miss-triggered fetch is younger
    /// than `unknown_kid_refetch_interval`. Returns true when the caller should look again.
    ///
    /// Waits at most `unknown_kid_wait`, for the lock and the fetch together. The fetch runs in
    /// a task of its own that owns the lock: when the wait is cut short, the fetch still
    /// finishes (bounded by `http_timeout`) and installs its keys, and no second fetch starts
    /// meanwhile. Only the caller that actually fetches spawns a task, so a flood of misses
    /// against a slow IdP spawns one task, not one per request.
    pub(super) async fn refetch_for_miss(self: &Arc<Self>, seen_generation: u64) -> bool {
        let refetch = async {
            let mut st = Arc::clone(&self.fetch).lock_owned().await;
            if self.generation() != seen_generation {
                return true;
            }
            if st
                .last_miss_fetch
                .is_some_and(|t| t.elapsed() < self.miss_interval)
            {
                return false;
            }
            st.last_miss_fetch = Some(Instant::now());
            let before = self.generation();
            let store = Arc::clone(self);
            let fetch = tokio::spawn(async move {
                let _ = store.fetch_and_record(&mut st, Cause::UnknownKid).await;
            });
            // A JoinError (the task panicked or the runtime is shutting down) just means no
            // new keys.
            let _ = fetch.await;
            self.generation() != before
        };
        match tokio::time::timeout(self.miss_wait, refetch).await {
            Ok(look_again) => look_again,
            Err(_) => {
                tracing::debug!(
                    issuer = %self.name, wait = ?self.miss_wait,
                    "unknown kid: JWKS refetch still running, not waiting longer"
                );
                false
            }
        }
    }

    /// Fetch now (used by the refresher). `Ok(max_age)` on success or not-modified.
    async fn refresh_scheduled(&self) -> Result<Option<Duration>, ()> {
        let mut st = self.fetch.lock().await;
        self.fetch_and_record(&mut st, Cause::Scheduled).await
    }

    /// How long to wait after a successful fetch.
    fn next_refresh(&self, max_age: Option<Duration>) -> Duration {
        max_age.map_or(self.refresh, |m| m.clamp(MIN_MAX_AGE, MAX_MAX_AGE))
    }

    /// Backoff after `failures` consecutive failed fetches.
    fn retry_delay(&self, failures: u32) -> Duration {
        let cap = if self.is_loaded() {
            RETRY_CAP_LOADED.min(self.refresh)
        } else {
            RETRY_CAP_UNLOADED
        };
        RETRY_BASE
            .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
            .min(cap)
    }

    async fn fetch_and_record(
        &self,
        st: &mut FetchState,
        cause: Cause,
    ) -> Result<Option<Duration>, ()> {
        match self.fetch_locked(st).await {
            Ok(Fetched::Updated { max_age, skipped }) => {
                let keys = self.keys();
                self.counters.success.inc();
                self.note_success(keys.len());
                tracing::info!(
                    issuer = %self.name, keys = keys.len(), kids = ?keys.kids(), ?cause,
                    "JWKS loaded"
                );
                for s in skipped {
                    tracing::warn!(issuer = %self.name, "JWKS: {s}");
                }
                Ok(max_age)
            }
            Ok(Fetched::NotModified { max_age }) => {
                self.counters.not_modified.inc();
                self.note_success(self.keys().len());
                tracing::debug!(issuer = %self.name, ?cause, "JWKS not modified");
                Ok(max_age)
            }
            Err(e) => {
                self.counters.failure.inc();
                if self.configured_jwks.is_none() {
                    st.discovered = None;
                }
                let loud = st.last_warn.is_none_or(|t| t.elapsed() >= WARN_EVERY);
                let keeping = if self.is_loaded() {
                    "keeping the last good keys"
                } else {
                    "no keys yet: tokens of this issuer are refused"
                };
                if loud {
                    st.last_warn = Some(Instant::now());
                    tracing::warn!(issuer = %self.name, ?cause, error = %e, "JWKS fetch failed; {keeping}");
                } else {
                    tracing::debug!(issuer = %self.name, ?cause, error = %e, "JWKS fetch failed; {keeping}");
                }
                self.info
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .last_error = Some(e);
                Err(())
            }
        }
    }

    fn note_success(&self, keys: usize) {
        let now = SystemTime::now();
        self.counters
            .keys
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
        self.counters.last_success.set(
            now.duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        );
        let mut info = self.info.lock().unwrap_or_else(|p| p.into_inner());
        info.last_success = Some(now);
        info.last_error = None;
    }

    async fn fetch_locked(&self, st: &mut FetchState) -> Result<Fetched, String> {
        let uri = match (&self.configured_jwks, &st.discovered) {
            (Some(u), _) | (None, Some(u)) => u.clone(),
            (None, None) => {
                let u = self.discover().await?;
                self.info.lock().unwrap_or_else(|p| p.into_inner()).jwks_uri = Some(u.to_string());
                st.discovered = Some(u.clone());
                u
            }
        };
        // A conditional request only makes sense when we hold the keys it would confirm.
        let etag = st.etag.as_deref().filter(|_| self.is_loaded());
        let resp = self.get(&uri, etag).await?;
        let max_age = max_age(resp.headers());
        if resp.status() == StatusCode::NOT_MODIFIED && etag.is_some() {
            return Ok(Fetched::NotModified { max_age });
        }
        if !resp.status().is_success() {
            return Err(format!("GET {uri}: HTTP {}", resp.status()));
        }
        let new_etag = resp
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .map(str::to_owned);
        let body = read_capped(resp, MAX_JWKS_BYTES)
            .await
            .map_err(|e| format!("GET {uri}: {e}"))?;
        let (set, skipped) = parse_jwks(&body).map_err(|e| format!("GET {uri}: {e}"))?;
        if set.is_empty() {
            // An empty set would lock everyone out; treat it like any other bad answer.
            return Err(format!(
                "GET {uri}: JWKS has no usable signing key ({} skipped)",
                skipped.len()
            ));
        }
        self.keys.store(Arc::new(set));
        self.generation.fetch_add(1, Ordering::AcqRel);
        st.etag = new_etag;
        self.loaded
            .send_if_modified(|l| !std::mem::replace(l, true));
        Ok(Fetched::Updated { max_age, skipped })
    }

    /// OIDC discovery: `{issuer}/.well-known/openid-configuration` (trailing `/` of the issuer
    /// removed first, OIDC Discovery §4). The document's `issuer` must equal ours exactly and
    /// its `jwks_uri` must pass the same URL rules as configured ones.
    async fn discover(&self) -> Result<url::Url, String> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        );
        let url = check_url(&url)?;
        let resp = self.get(&url, None).await?;
        if !resp.status().is_success() {
            return Err(format!("discovery {url}: HTTP {}", resp.status()));
        }
        let body = read_capped(resp, MAX_DISCOVERY_BYTES)
            .await
            .map_err(|e| format!("discovery {url}: {e}"))?;
        #[derive(Deserialize)]
        struct Doc {
            issuer: String,
            jwks_uri: String,
        }
        let doc: Doc = serde_json::from_slice(&body)
            .map_err(|e| format!("discovery {url}: not an OIDC configuration: {e}"))?;
        if doc.issuer != self.issuer {
            return Err(format!(
                "discovery {url}: issuer {:?} does not match the configured {:?}",
                doc.issuer, self.issuer
            ));
        }
        check_url(&doc.jwks_uri).map_err(|e| format!("discovery {url}: jwks_uri {e}"))
    }

    async fn get(&self, url: &url::Url, etag: Option<&str>) -> Result<reqwest::Response, String> {
        let mut req = self
            .http
            .get(url.clone())
            .timeout(self.timeout)
            .header(ACCEPT, "application/json");
        if let Some(e) = etag {
            req = req.header(IF_NONE_MATCH, e);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| format!("GET {url}: {}", crate::telemetry::error_chain(&e)))?;
        // Redirects must not take us to plain http on a non-loopback host.
        check_url(resp.url().as_str()).map_err(|e| format!("GET {url}: redirected: {e}"))?;
        Ok(resp)
    }
}

enum Fetched {
    Updated {
        max_age: Option<Duration>,
        skipped: Vec<String>,
    },
    NotModified {
        max_age: Option<Duration>,
    },
}

async fn refresher(store: Weak<KeyStore>) {
    let mut failures = 0u32;
    loop {
        let delay = {
            let Some(s) = store.upgrade() else { return };
            match s.refresh_scheduled().await {
                Ok(max_age) => {
                    failures = 0;
                    s.next_refresh(max_age)
                }
                Err(()) => {
                    failures = failures.saturating_add(1);
                    s.retry_delay(failures)
                }
            }
        };
        tokio::time::sleep(delay).await;
    }
}

/// `max-age` from `Cache-Control`, unclamped. `no-store`/`no-cache` count as "no advice".
fn max_age(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(CACHE_CONTROL)?.to_str().ok()?;
    v.split(',').find_map(|d| {
        let (k, val) = d.trim().split_once('=')?;
        if k.trim().eq_ignore_ascii_case("max-age") {
            val.trim()
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs)
        } else {
            None
        }
    })
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    if resp.content_length().is_some_and(|l| l > cap as u64) {
        return Err(format!("response larger than {cap} bytes"));
    }
    let mut buf = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| crate::telemetry::error_chain(&e))?
    {
        if buf.len() + chunk.len() > cap {
            return Err(format!("response larger than {cap} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn cache_control() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), None);
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("public, Max-Age=300, must-revalidate"),
        );
        assert_eq!(max_age(&h), Some(Duration::from_secs(300)));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(max_age(&h), None);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=abc"));
        assert_eq!(max_age(&h), None);
    }

    fn store(refresh: u64) -> KeyStore {
        let cfg = crate::config::Config::from_toml(
            &format!(
                "[[issuer]]\nname = \"t\"\nissuer = \"http://127.0.0.1:1\"\naudiences = [\"a\"]\n\
                 jwks_refresh = \"{refresh}s\"\n"
            ),
            "t",
        )
        .unwrap();
        KeyStore::new(&cfg.issuers[0], reqwest::Client::new())
    }

    #[test]
    fn delays() {
        let s = store(600);
        assert_eq!(s.next_refresh(None), Duration::from_secs(600));
        assert_eq!(s.next_refresh(Some(Duration::from_secs(5))), MIN_MAX_AGE);
        assert_eq!(
            s.next_refresh(Some(Duration::from_secs(7200))),
            Duration::from_secs(7200)
        );
        assert_eq!(
            s.next_refresh(Some(Duration::from_secs(10 << 20))),
            MAX_MAX_AGE
        );
        assert_eq!(s.retry_delay(1), RETRY_BASE);
        assert_eq!(s.retry_delay(2), RETRY_BASE * 2);
        assert_eq!(s.retry_delay(40), RETRY_CAP_UNLOADED);
    }
}
