//! Issuers of `kind = "introspection"`: the token is sent to the IdP's introspection endpoint
//! (RFC 7662) and its answer's claims go through the same checks as a JWT's ([`answer`]).
//!
//! One call: `POST {introspection_url}` with the form `token=…&token_type_hint=access_token`,
//! `Accept: application/json`, and the client authenticated with HTTP Basic
//! (`client_secret_basic`, id and secret form-urlencoded first, RFC 6749 §2.3.1) or
//! `client_id`/`client_secret` in the form (`client_secret_post`). Okta and Keycloak document
//! both.
//!
//! Cache: keyed by the token's SHA-256 ([`TokenKey`], never the token). An active answer is
//! kept `introspection_cache_ttl` at most and never past the token's `exp` (plus
//! `introspection_negative_ttl`, during which it answers `expired` without a call); an inactive
//! or refused one `introspection_negative_ttl`. At most `introspection_cache_size` answers.
//! Concurrent requests with the same uncached token make one call (moka's `try_get_with`).
//!
//! Failures are never cached and always refuse (fail closed):
//!
//! | what | result label | reason (status) |
//! |---|---|---|
//! | network error, timeout, 429, 5xx, 3xx | `unavailable` | `upstream_unavailable` (503, retryable) |
//! | 200 whose body is no RFC 7662 answer | `invalid` | `upstream_unavailable` (503) |
//! | other 4xx (401 `invalid_client`: wrong secret; 404: wrong URL) | `refused` | `upstream_refused` (502) |
//!
//! The IdP being unreachable or refusing idgate's own client is not the caller's fault, so it
//! is not a 401: the caller may retry a 503, and a 502 says the gateway is misconfigured. Each
//! failure is logged (rate-limited) with the status, the IdP's `error` and its masked
//! `error_description`, never the token or the secret.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use moka::future::Cache;
use moka::Expiry;
use prometheus::IntCounter;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use zeroize::Zeroizing;

use super::cache::unix_now;
use super::jose::{ClaimRules, ClaimSelection};
use crate::config::{IntrospectionAuth, IntrospectionConfig, IssuerConfig};
use crate::decision::{Identity, Reason, Rejection};
use crate::telemetry::RateLimitedLog;
use crate::token_key::TokenKey;
use crate::upstream::{basic_auth, read_secret_file, sanitize_description, shown_url, Secret};

mod answer;

pub(crate) use answer::Answer;

/// Largest answer read; Keycloak's (every claim of the token) is a few KB.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Results of a call, the `result` label of `idgate_introspection_requests_total`.
const RESULTS: [&str; 5] = ["active", "inactive", "refused", "unavailable", "invalid"];

/// A few failure lines per minute per issuer.
static FAILURE_LOG: LazyLock<RateLimitedLog> =
    LazyLock::new(|| RateLimitedLog::new(5, Duration::from_secs(60)));

/// How idgate authenticates to the endpoint.
enum ClientAuth {
    Basic(HeaderValue),
    Post(Secret),
}

struct Lifetimes {
    max: Duration,
    negative: Duration,
}

impl Expiry<TokenKey, Answer> for Lifetimes {
    fn expire_after_create(&self, _: &TokenKey, a: &Answer, _: Instant) -> Option<Duration> {
        Some(match a {
            Answer::Active(id) => {
                let left = Duration::from_secs(id.expires_at.saturating_sub(unix_now()));
                (left + self.negative).min(self.max)
            }
            Answer::Refused(_) => self.negative,
        })
    }
}

/// One introspection issuer.
pub(super) struct Introspector {
    pub(super) cfg: IssuerConfig,
    rules: ClaimRules,
    url: url::Url,
    shown_url: Box<str>,
    http: reqwest::Client,
    timeout: Duration,
    client_id: String,
    /// `Err`: why the client secret cannot be used (every call then fails closed).
    auth: Result<ClientAuth, String>,
    cache: Cache<TokenKey, Answer>,
    results: [IntCounter; 5],
    hit: IntCounter,
    miss: IntCounter,
}

impl Introspector {
    /// `cfg.introspection` must be set. Reads the secret file now (a reload reads it again): a
    /// problem is kept and returned by [`Introspector::problem`] (check-config, start and
    /// reload report it). `previous`: the same issuer before a reload, whose cached answers
    /// are kept.
    pub(super) fn new(
        cfg: &IssuerConfig,
        http: reqwest::Client,
        previous: Option<&Introspector>,
    ) -> Introspector {
        let ic: &IntrospectionConfig = cfg.introspection.as_ref().expect("introspection issuer");
        let http = match &cfg.ca_file {
            Some(f) => crate::outbound::client_trusting(f.path()).unwrap_or_else(|e| {
                tracing::error!(issuer = %cfg.name, "ca_file unusable, default trust only: {e}");
                http
            }),
            None => http,
        };
        let auth =
            read_secret_file(ic.client_secret_file.path()).and_then(|s| match ic.client_auth {
                IntrospectionAuth::ClientSecretBasic => {
                    basic_auth(&ic.client_id, &s).map(ClientAuth::Basic)
                }
                IntrospectionAuth::ClientSecretPost => Ok(ClientAuth::Post(s)),
            });
        let m = crate::metrics::metrics();
        let name = cfg.name.as_str();
        Introspector {
            rules: super::issuer::claim_rules(cfg),
            url: ic.url.url().clone(),
            shown_url: shown_url(ic.url.url()).into(),
            http,
            timeout: cfg.http_timeout.0,
            client_id: ic.client_id.clone(),
            auth,
            cache: previous.map_or_else(
                || {
                    Cache::builder()
                        .max_capacity(ic.cache_size)
                        .expire_after(Lifetimes {
                            max: ic.cache_ttl.0,
                            negative: ic.negative_ttl.0,
                        })
                        .build()
                },
                |p| p.cache.clone(),
            ),
            results: RESULTS.map(|r| m.introspection_requests.with_label_values(&[name, r])),
            hit: m
                .introspection_cache_requests
                .with_label_values(&[name, "hit"]),
            miss: m
                .introspection_cache_requests
                .with_label_values(&[name, "miss"]),
            cfg: cfg.clone(),
        }
    }

    /// Why this issuer cannot work (its secret file), for the configuration report.
    pub(super) fn problem(&self) -> Option<(String, String)> {
        let ic = self.cfg.introspection.as_ref()?;
        self.auth.as_ref().err().map(|e| {
            (
                "client_secret_file".to_owned(),
                format!("{}: {e}", ic.client_secret_file.name().display()),
            )
        })
    }

    /// The endpoint as logged (`scheme://host:port/path`).
    pub(super) fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// Answers currently cached (approximate; tests and diagnostics).
    pub(super) fn cached(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The caller behind `token` (`key` is its [`TokenKey`]). `exp_hint`: the token's `exp`
    /// read unverified (a JWT), to say `expired` rather than "not active" when it has passed.
    pub(super) async fn authenticate(
        &self,
        token: &str,
        key: TokenKey,
        selection: &ClaimSelection,
        exp_hint: Option<u64>,
    ) -> Result<Arc<Identity>, Rejection> {
        let answer = match self.cache.get(&key).await {
            Some(a) => {
                self.hit.inc();
                a
            }
            None => {
                self.miss.inc();
                // Single flight: concurrent callers with this key wait for this one call.
                self.cache
                    .try_get_with(key, self.call(token, selection, exp_hint))
                    .await
                    .map_err(|e| (*e).clone())?
            }
        };
        match answer {
            Answer::Active(id) if unix_now() < id.expires_at => Ok(id),
            Answer::Active(_) => Err(Rejection::new(Reason::Expired, "token expired")),
            Answer::Refused(r) => Err(r),
        }
    }

    fn count(&self, result: &str) {
        if let Some(i) = RESULTS.iter().position(|r| *r == result) {
            self.results[i].inc();
        }
    }

    /// Log one failure (rate-limited per issuer) and count it.
    fn failed(&self, result: &'static str, why: &str) -> Rejection {
        self.count(result);
        if let Some(suppressed) = FAILURE_LOG.allow("introspection", &self.cfg.name) {
            tracing::warn!(
                issuer = %self.cfg.name,
                url = %self.shown_url,
                result,
                suppressed,
                "token introspection failed, request refused: {why}"
            );
        }
        if result == "refused" {
            Rejection::new(
                Reason::UpstreamRefused,
                "the IdP refused the gateway's token introspection",
            )
        } else {
            Rejection::new(
                Reason::UpstreamUnavailable,
                "the IdP's token introspection is unavailable; retry later",
            )
        }
    }

    /// One call to the endpoint.
    async fn call(
        &self,
        token: &str,
        selection: &ClaimSelection,
        exp_hint: Option<u64>,
    ) -> Result<Answer, Rejection> {
        let auth = match &self.auth {
            Ok(a) => a,
            Err(e) => return Err(self.failed("refused", &format!("client_secret_file: {e}"))),
        };
        let body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            form.append_pair("token", token)
                .append_pair("token_type_hint", "access_token");
            if let ClientAuth::Post(secret) = auth {
                form.append_pair("client_id", &self.client_id)
                    .append_pair("client_secret", secret.expose());
            }
            Zeroizing::new(form.finish())
        };
        let mut req = self
            .http
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(body.as_bytes().to_vec());
        if let ClientAuth::Basic(h) = auth {
            req = req.header(AUTHORIZATION, h.clone());
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() {
                    "timed out"
                } else {
                    "failed"
                };
                let cause = crate::telemetry::error_chain(&e.without_url());
                return Err(self.failed("unavailable", &format!("request {what}: {cause}")));
            }
        };
        let status = resp.status();
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(c)) if body.len() + c.len() <= MAX_ANSWER_BYTES => {
                    body.extend_from_slice(&c)
                }
                Ok(Some(_)) => {
                    return Err(self.failed("invalid", "answer larger than 64 KiB"));
                }
                Ok(None) => break,
                Err(e) => {
                    let cause = crate::telemetry::error_chain(&e.without_url());
                    return Err(self.failed("unavailable", &format!("reading the answer: {cause}")));
                }
            }
        }
        let code = status.as_u16();
        if status.is_success() && code == 200 {
            let now = unix_now();
            return match answer::judge(
                &body,
                self.cfg.issuer.as_str(),
                &self.rules,
                selection,
                now,
                exp_hint,
            ) {
                Ok(a) => {
                    self.count(if matches!(a, Answer::Active(_)) {
                        "active"
                    } else {
                        "inactive"
                    });
                    Ok(a)
                }
                Err(why) => Err(self.failed("invalid", &format!("HTTP 200: {why}"))),
            };
        }
        let detail = error_detail(&body);
        if (400..500).contains(&code) && code != 429 {
            let hint = if code == 401 || code == 400 {
                " (check client_id, client_secret_file and client_auth)"
            } else {
                ""
            };
            Err(self.failed("refused", &format!("HTTP {code}{detail}{hint}")))
        } else {
            Err(self.failed("unavailable", &format!("HTTP {code}{detail}")))
        }
    }
}

/// `, error=…, error_description=…` of an OAuth error body, sanitized (it is logged).
fn error_detail(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct OAuthError {
        error: Option<String>,
        error_description: Option<String>,
    }
    let Ok(e) = serde_json::from_slice::<OAuthError>(body) else {
        return String::new();
    };
    let mut out = String::new();
    if let Some(code) = e.error.as_deref().and_then(sanitize_description) {
        out.push_str(&format!(", error={code}"));
    }
    if let Some(d) = e
        .error_description
        .as_deref()
        .and_then(sanitize_description)
    {
        out.push_str(&format!(", error_description={d:?}"));
    }
    out
}
