//! One OAuth token request to a Databricks token endpoint (`/oidc/v1/token`), with a
//! per-attempt timeout, bounded retries and strict response validation.
//!
//! Retry policy: 429, 5xx, connection errors and per-attempt timeouts are retried with
//! jittered exponential backoff; a `Retry-After: <seconds>` header replaces the backoff. Every
//! wait and every attempt must fit in the total budget: when it does not, we give up at once
//! rather than sleep past the deadline (the caller is waiting inside HAProxy's SPOE
//! `timeout processing`). Other 4xx are final: the request is wrong (bad secret, unknown
//! client, a federation policy that does not accept the subject token) and repeating it will
//! not help.
//!
//! Nothing here logs or returns the request body, the response body, or any token: failures
//! carry only a result word, the HTTP status and the `error_code`/`error` of the JSON body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::{Histogram, IntCounter};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

/// Largest token response body we read. A Databricks token response is ~1-2 KB; the cap keeps
/// a misbehaving endpoint from making us buffer megabytes.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest access token we accept. It becomes the `upstream_authorization` SPOE variable and an
/// HTTP header; HAProxy's default `tune.bufsize` is 16 KB for the whole request head.
pub const MAX_ACCESS_TOKEN_BYTES: usize = 8192;

/// Lifetime assumed when the response has no `expires_in`. Databricks always sends it (tokens
/// live one hour); if some proxy strips it, a short assumption costs a few extra requests,
/// a long one could serve a token the upstream already considers expired.
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(300);

/// Longest lifetime we believe. A larger `expires_in` is capped, so a bogus value cannot pin a
/// token in the cache for days.
pub const MAX_EXPIRES_IN: Duration = Duration::from_secs(24 * 3600);

/// Longest `Retry-After` we honour (also the longest hold-off after a 429).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// First backoff step; doubled per retry, capped at [`BACKOFF_MAX`], jittered to [d/2, d].
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The fixed set of `result` label values of `idgate_upstream_token_requests_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Http4xx,
    Http429,
    Http5xx,
    Timeout,
    Network,
    InvalidResponse,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::Http4xx,
        Outcome::Http429,
        Outcome::Http5xx,
        Outcome::Timeout,
        Outcome::Network,
        Outcome::InvalidResponse,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Http4xx => "http_4xx",
            Outcome::Http429 => "http_429",
            Outcome::Http5xx => "http_5xx",
            Outcome::Timeout => "timeout",
            Outcome::Network => "network",
            Outcome::InvalidResponse => "invalid_response",
        }
    }

    /// Worth another attempt within the budget.
    fn retryable(self) -> bool {
        matches!(
            self,
            Outcome::Http429 | Outcome::Http5xx | Outcome::Timeout | Outcome::Network
        )
    }
}

/// A failed token request: what the metric, the log line and [`super::UpstreamError`] say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub outcome: Outcome,
    pub status: Option<u16>,
    /// `error_code` (Databricks API style) or `error` (OAuth style) from the JSON body,
    /// only if it is a short identifier; never free text.
    pub error_code: Option<String>,
    /// `Retry-After` in seconds, capped at [`MAX_RETRY_AFTER`].
    pub retry_after: Option<Duration>,
    /// What was wrong with a 2xx response (fixed text).
    pub detail: Option<&'static str>,
}

impl Failure {
    fn new(outcome: Outcome) -> Failure {
        Failure {
            outcome,
            status: None,
            error_code: None,
            retry_after: None,
            detail: None,
        }
    }

    fn invalid(status: u16, detail: &'static str) -> Failure {
        Failure {
            status: Some(status),
            detail: Some(detail),
            ..Failure::new(Outcome::InvalidResponse)
        }
    }

    /// The endpoint itself is unwell (as opposed to refusing this particular request).
    pub fn is_endpoint_failure(&self) -> bool {
        self.outcome.retryable() || self.outcome == Outcome::InvalidResponse
    }
}

/// A token the endpoint issued.
#[derive(Debug, Clone)]
pub struct Token {
    /// `"Bearer <access_token>"`.
    pub header: Arc<str>,
    /// `expires_in`, defaulted and capped.
    pub lifetime: Duration,
    /// When the successful attempt was sent: the lifetime counts from here, which errs on the
    /// early side (the server started its clock later).
    pub requested_at: Instant,
}

/// Where and how to ask, plus the pre-resolved metric children of one upstream.
#[derive(Debug)]
pub struct Endpoint {
    pub upstream: Arc<str>,
    pub url: url::Url,
    pub timeout: Duration,
    pub total_budget: Duration,
    counters: [IntCounter; 7],
    duration: Histogram,
}

impl Endpoint {
    pub fn new(
        upstream: Arc<str>,
        url: url::Url,
        timeout: Duration,
        total_budget: Duration,
    ) -> Self {
        let m = crate::metrics::metrics();
        // Resolving every label child now means the zeros show up on /metrics right away and
        // the request path does no label lookup.
        let counters = Outcome::ALL.map(|o| {
            m.upstream_token_requests
                .with_label_values(&[&*upstream, o.as_str()])
        });
        let duration = m.upstream_token_duration.with_label_values(&[&*upstream]);
        Endpoint {
            upstream,
            url,
            timeout,
            total_budget,
            counters,
            duration,
        }
    }

    fn record(&self, outcome: Outcome, took: Duration) {
        let i = Outcome::ALL
            .iter()
            .position(|o| *o == outcome)
            .expect("ALL lists every outcome");
        self.counters[i].inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// POST `form` (already `application/x-www-form-urlencoded`), retrying as described in
    /// the module docs, within `total_budget`.
    pub async fn request(
        &self,
        http: &reqwest::Client,
        form: Bytes,
        client_auth: Option<&HeaderValue>,
    ) -> Result<Token, Failure> {
        let deadline = Instant::now() + self.total_budget;
        let mut attempt: u32 = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.give_up(Failure::new(Outcome::Timeout), attempt));
            }
            let per_try = self.timeout.min(remaining);
            let started = Instant::now();
            let result = match tokio::time::timeout(
                per_try,
                self.attempt(http, form.clone(), client_auth, per_try),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Failure::new(Outcome::Timeout)),
            };
            attempt += 1;
            let took = started.elapsed();
            match result {
                Ok((header, lifetime)) => {
                    self.record(Outcome::Success, took);
                    tracing::debug!(
                        upstream = %self.upstream,
                        expires_in = lifetime.as_secs(),
                        attempts = attempt,
                        "upstream token obtained"
                    );
                    return Ok(Token {
                        header,
                        lifetime,
                        requested_at: started,
                    });
                }
                Err(f) => {
                    self.record(f.outcome, took);
                    tracing::debug!(
                        upstream = %self.upstream,
                        result = f.outcome.as_str(),
                        status = f.status,
                        error_code = f.error_code.as_deref(),
                        attempt,
                        "upstream token attempt failed"
                    );
                    if !f.outcome.retryable() {
                        return Err(self.give_up(f, attempt));
                    }
                    let wait = match f.retry_after {
                        // A little jitter so that many idgate instances do not return in step.
                        Some(ra) => ra + jitter(Duration::from_millis(50)),
                        None => backoff(attempt),
                    };
                    // The next attempt needs at least a moment after the wait; if the wait
                    // alone eats the budget, fail now instead of failing later.
                    if Instant::now() + wait >= deadline {
                        return Err(self.give_up(f, attempt));
                    }
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    fn give_up(&self, f: Failure, attempts: u32) -> Failure {
        tracing::warn!(
            upstream = %self.upstream,
            result = f.outcome.as_str(),
            status = f.status,
            error_code = f.error_code.as_deref(),
            detail = f.detail,
            attempts,
            "upstream token request failed; no credential"
        );
        f
    }

    async fn attempt(
        &self,
        http: &reqwest::Client,
        form: Bytes,
        client_auth: Option<&HeaderValue>,
        per_try: Duration,
    ) -> Result<(Arc<str>, Duration), Failure> {
        let mut req = http
            .post(self.url.clone())
            .timeout(per_try)
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            )
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .body(form);
        if let Some(auth) = client_auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let mut resp = req.send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers());
        let mut body = zeroize::Zeroizing::new(Vec::new());
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Failure::invalid(status, "response body too large"));
            }
            body.extend_from_slice(&chunk);
        }
        match status {
            200..=299 => parse_token_response(&body).map_err(|d| Failure::invalid(status, d)),
            400..=599 => Err(Failure {
                outcome: match status {
                    429 => Outcome::Http429,
                    500..=599 => Outcome::Http5xx,
                    _ => Outcome::Http4xx,
                },
                status: Some(status),
                error_code: error_code(&body),
                retry_after,
                detail: None,
            }),
            // 1xx/3xx: the HTTP client should not follow redirects for a token endpoint (it
            // would turn the POST into a GET); an unfollowed redirect is a misconfiguration.
            _ => Err(Failure::invalid(status, "unexpected HTTP status")),
        }
    }
}

fn classify(e: reqwest::Error) -> Failure {
    if e.is_timeout() {
        Failure::new(Outcome::Timeout)
    } else if e.is_redirect() {
        Failure {
            detail: Some("redirect"),
            ..Failure::new(Outcome::InvalidResponse)
        }
    } else {
        Failure::new(Outcome::Network)
    }
}

fn jitter(max: Duration) -> Duration {
    let ms = max.as_millis() as u64;
    Duration::from_millis(rand::random_range(0..=ms))
}

/// Delay before retry number `attempt` (1-based): BASE * 2^(attempt-1), capped, jittered to
/// [d/2, d] so retries from many callers spread out.
fn backoff(attempt: u32) -> Duration {
    let d = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let half = d / 2;
    half + jitter(d - half)
}

/// `Retry-After` as delta-seconds (the form Databricks sends). An HTTP-date is ignored (our
/// own backoff applies). Capped at [`MAX_RETRY_AFTER`].
fn parse_retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs: u64 = v.parse().ok()?;
    Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER))
}

/// `error_code` (Databricks: string or number) or `error` (RFC 6749 §5.2) from a JSON error
/// body, kept only if it looks like an identifier: never free text, which could echo input.
fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = v.get("error_code").or_else(|| v.get("error"))?;
    let s = match code {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    ok.then_some(s)
}

/// Parse a successful token response (RFC 6749 §5.1). Returns the full header value and the
/// lifetime. Error strings are fixed texts (they reach logs and errors).
pub fn parse_token_response(body: &[u8]) -> Result<(Arc<str>, Duration), &'static str> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|_| "response is not JSON")?;
    let obj = v.as_object().ok_or("response is not a JSON object")?;
    let token = match obj.get("access_token") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err("access_token is not a string"),
        None => return Err("no access_token in response"),
    };
    if token.is_empty() {
        return Err("access_token is empty");
    }
    if token.len() > MAX_ACCESS_TOKEN_BYTES {
        return Err("access_token too long");
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("access_token is not header-safe");
    }
    match obj.get("token_type") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::String(t)) if t.eq_ignore_ascii_case("bearer") => {}
        Some(_) => return Err("token_type is not Bearer"),
    }
    let lifetime = match obj.get("expires_in") {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
        Some(serde_json::Value::Number(n)) => {
            let secs = n.as_f64().ok_or("expires_in is not a number")?;
            seconds(secs)?
        }
        // Some servers send the number as a string; accept a plain integer.
        Some(serde_json::Value::String(s)) => {
            let secs: u64 = s.trim().parse().map_err(|_| "expires_in is not a number")?;
            seconds(secs as f64)?
        }
        Some(_) => return Err("expires_in is not a number"),
    };
    let mut header = String::with_capacity(7 + token.len());
    header.push_str("Bearer ");
    header.push_str(token);
    Ok((Arc::from(header), lifetime))
}

fn seconds(secs: f64) -> Result<Duration, &'static str> {
    if !secs.is_finite() || secs < 1.0 {
        return Err("expires_in is not a positive number of seconds");
    }
    Ok(Duration::from_secs_f64(
        secs.min(MAX_EXPIRES_IN.as_secs_f64()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_response_validation() {
        let (h, l) = parse_token_response(
            br#"{"access_token":"eyJabc.def","token_type":"bearer","expires_in":3600,"scope":"all-apis"}"#,
        )
        .unwrap();
        assert_eq!(&*h, "Bearer eyJabc.def");
        assert_eq!(l, Duration::from_secs(3600));
        let (_, l) = parse_token_response(br#"{"access_token":"t"}"#).unwrap();
        assert_eq!(l, DEFAULT_EXPIRES_IN);
        let (_, l) = parse_token_response(br#"{"access_token":"t","expires_in":"120"}"#).unwrap();
        assert_eq!(l, Duration::from_secs(120));
        let (_, l) = parse_token_response(br#"{"access_token":"t","expires_in":9999999}"#).unwrap();
        assert_eq!(l, MAX_EXPIRES_IN);
        let long = format!(
            r#"{{"access_token":"{}"}}"#,
            "a".repeat(MAX_ACCESS_TOKEN_BYTES + 1)
        );
        for (body, why) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not a JSON object"),
            (b"{}", "no access_token"),
            (br#"{"access_token":5}"#, "not a string"),
            (br#"{"access_token":""}"#, "empty"),
            (br#"{"access_token":"a b"}"#, "header-safe"),
            (br#"{"access_token":"a\r\nX-Evil: 1"}"#, "header-safe"),
            (br#"{"access_token":"t","token_type":"mac"}"#, "Bearer"),
            (br#"{"access_token":"t","expires_in":0}"#, "positive"),
            (br#"{"access_token":"t","expires_in":-5}"#, "positive"),
            (
                br#"{"access_token":"t","expires_in":"soon"}"#,
                "not a number",
            ),
            (br#"{"access_token":"t","expires_in":true}"#, "not a number"),
            (long.as_bytes(), "too long"),
        ] {
            let e = parse_token_response(body).unwrap_err();
            assert!(e.contains(why), "{body:?}: {e}");
        }
    }

    #[test]
    fn error_codes_are_identifiers_only() {
        assert_eq!(
            error_code(br#"{"error_code":"INVALID_PARAMETER_VALUE","message":"x"}"#).as_deref(),
            Some("INVALID_PARAMETER_VALUE")
        );
        assert_eq!(error_code(br#"{"error_code":401}"#).as_deref(), Some("401"));
        assert_eq!(
            error_code(br#"{"error":"invalid_client","error_description":"x"}"#).as_deref(),
            Some("invalid_client")
        );
        assert_eq!(error_code(br#"{"error":"has spaces eyJ..."}"#), None);
        assert_eq!(error_code(b"<html>"), None);
    }

    #[test]
    fn retry_after_and_backoff_bounds() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(parse_retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(RETRY_AFTER, HeaderValue::from_static("86400"));
        assert_eq!(parse_retry_after(&h), Some(MAX_RETRY_AFTER));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(parse_retry_after(&h), None);
        for attempt in 1..40 {
            let b = backoff(attempt);
            let full = BACKOFF_BASE
                .saturating_mul(1 << (attempt - 1).min(16))
                .min(BACKOFF_MAX);
            assert!(b >= full / 2 && b <= full, "attempt {attempt}: {b:?}");
        }
    }
}
