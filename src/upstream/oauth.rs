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
//! carry only a result word, the HTTP status, the `error_code`/`error` of the JSON body and its
//! masked, capped `error_description`, or the transport's error chain. A request that gives up
//! is logged here, once ([`super::failure::log_failure`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus::{Histogram, IntCounter};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};

use super::assertion::ClientAssertion;
use super::failure::{self, Failure, Outcome, Trigger};

/// Largest token response body we read. A Databricks token response is ~1-2 KB; the cap keeps
/// a misbehaving endpoint from making us buffer megabytes.
pub(crate) const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Longest access token we accept. It becomes the `upstream_authorization` SPOE variable and an
/// HTTP header; HAProxy's default `tune.bufsize` is 16 KB for the whole request head.
pub(crate) const MAX_ACCESS_TOKEN_BYTES: usize = 8192;

/// Lifetime assumed when the response has no `expires_in`. Databricks always sends it (tokens
/// live one hour); if some proxy strips it, a short assumption costs a few extra requests,
/// a long one could serve a token the upstream already considers expired.
pub(crate) const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(300);

/// Longest lifetime we believe. A larger `expires_in` is capped, so a bogus value cannot pin a
/// token in the cache for days.
pub(crate) const MAX_EXPIRES_IN: Duration = Duration::from_secs(24 * 3600);

/// Longest `Retry-After` we honour (also the longest hold-off after a 429).
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// First backoff step; doubled per retry, capped at [`BACKOFF_MAX`], jittered to [d/2, d].
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// A token the endpoint issued.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    /// `"Bearer <access_token>"`.
    pub(crate) header: Arc<str>,
    /// `expires_in`, defaulted and capped.
    pub(crate) lifetime: Duration,
    /// When the successful attempt was sent: the lifetime counts from here, which errs on the
    /// early side (the server started its clock later).
    pub(crate) requested_at: Instant,
}

/// The body of a token request.
pub(crate) enum Body<'a> {
    /// Sent as it is by every attempt.
    Form(Bytes),
    /// `base` plus `&client_assertion=<a JWT signed for this attempt>` (a `jti` may not be
    /// replayed, so a retry signs anew).
    Signed {
        base: Bytes,
        assertion: &'a ClientAssertion,
    },
}

impl From<Bytes> for Body<'_> {
    fn from(b: Bytes) -> Self {
        Body::Form(b)
    }
}

impl Body<'_> {
    fn for_attempt(&self) -> Result<Bytes, Failure> {
        match self {
            Body::Form(b) => Ok(b.clone()),
            Body::Signed { base, assertion } => {
                let jwt = assertion.sign().map_err(|e| Failure {
                    cause: Some(e),
                    ..Failure::invalid(None, "client assertion could not be signed")
                })?;
                let mut form = Vec::with_capacity(base.len() + jwt.len() + 20);
                form.extend_from_slice(base);
                form.extend_from_slice(b"&client_assertion=");
                // base64url segments and dots: nothing to escape.
                form.extend_from_slice(jwt.as_bytes());
                Ok(Bytes::from(form))
            }
        }
    }
}

/// Where and how to ask, plus the pre-resolved metric children of one upstream.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) upstream: Arc<str>,
    url: url::Url,
    /// `url` as logged: `scheme://host:port/path` ([`failure::shown_url`]).
    pub(crate) shown_url: Box<str>,
    timeout: Duration,
    total_budget: Duration,
    /// `GET url` with `Metadata: true` (the Azure Instance Metadata Service) instead of
    /// `POST url` with a form.
    imds: bool,
    counters: [IntCounter; 7],
    duration: Histogram,
}

impl Endpoint {
    pub(crate) fn new(
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
            shown_url: failure::shown_url(&url).into(),
            url,
            timeout,
            total_budget,
            imds: false,
            counters,
            duration,
        }
    }

    /// The Azure Instance Metadata Service's token endpoint: `GET url` (the query already in
    /// it) with the header `Metadata: true`, which IMDS requires against SSRF.
    pub(crate) fn imds(
        upstream: Arc<str>,
        url: url::Url,
        timeout: Duration,
        total_budget: Duration,
    ) -> Self {
        Endpoint {
            imds: true,
            ..Endpoint::new(upstream, url, timeout, total_budget)
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

    /// The deadline of a credential whose decision started at `start`: `total_budget` bounds
    /// everything a decision asks the upstream for (the workspace token, the serving
    /// endpoint's lookup, its data-plane token), not each request.
    pub(crate) fn deadline_from(&self, start: Instant) -> Instant {
        start + self.total_budget
    }

    /// POST `form` (already `application/x-www-form-urlencoded`; a [`Body::Signed`] form gets
    /// a freshly signed client assertion for every attempt), retrying as described in
    /// the module docs, until `deadline` ([`Endpoint::deadline_from`]). A failure is logged
    /// here, once, as the failure of a request `why` was made.
    pub(crate) async fn request(
        &self,
        http: &reqwest::Client,
        form: impl Into<Body<'_>>,
        client_auth: Option<&HeaderValue>,
        why: Trigger,
        deadline: Instant,
    ) -> Result<Token, Failure> {
        let form = form.into();
        let mut attempt: u32 = 0;
        // The failure of the previous attempt: when the budget runs out after it (a backoff
        // that ended late on a loaded machine), that is the cause to report, not the budget.
        let mut last: Option<Failure> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                let f = last.take().unwrap_or_else(|| Failure {
                    cause: Some(format!("total_budget of {:?} spent", self.total_budget)),
                    ..Failure::new(Outcome::Timeout)
                });
                return Err(self.give_up(f, attempt, why));
            }
            let per_try = self.timeout.min(remaining);
            let body = form
                .for_attempt()
                .map_err(|f| self.give_up(f, attempt, why))?;
            let started = Instant::now();
            let result =
                match tokio::time::timeout(per_try, self.attempt(http, body, client_auth, per_try))
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(Failure {
                        cause: Some(format!("no response within the timeout of {per_try:?}")),
                        ..Failure::new(Outcome::Timeout)
                    }),
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
                        cause = f.cause.as_deref(),
                        attempt,
                        "upstream token attempt failed"
                    );
                    if !f.retryable() {
                        return Err(self.give_up(f, attempt, why));
                    }
                    let wait = match f.retry_after {
                        // A little jitter so that many idgate instances do not return in step.
                        Some(ra) => ra + jitter(Duration::from_millis(50)),
                        None => backoff(attempt),
                    };
                    // The next attempt needs at least a moment after the wait; if the wait
                    // alone eats the budget, fail now instead of failing later.
                    if Instant::now() + wait >= deadline {
                        return Err(self.give_up(f, attempt, why));
                    }
                    tokio::time::sleep(wait).await;
                    last = Some(f);
                }
            }
        }
    }

    fn give_up(&self, f: Failure, attempts: u32, why: Trigger) -> Failure {
        failure::log_failure(&self.upstream, &self.shown_url, &f, attempts, why);
        f
    }

    async fn attempt(
        &self,
        http: &reqwest::Client,
        form: Bytes,
        client_auth: Option<&HeaderValue>,
        per_try: Duration,
    ) -> Result<(Arc<str>, Duration), Failure> {
        let mut req = if self.imds {
            http.get(self.url.clone())
                .header("Metadata", HeaderValue::from_static("true"))
        } else {
            http.post(self.url.clone())
                .header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
                .body(form)
        }
        .timeout(per_try)
        .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some(auth) = client_auth {
            req = req.header(AUTHORIZATION, auth.clone());
        }
        let mut resp = req.send().await.map_err(classify)?;
        let status = resp.status().as_u16();
        let retry_after = parse_retry_after(resp.headers());
        let mut body = zeroize::Zeroizing::new(Vec::new());
        while let Some(chunk) = resp.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(Failure::invalid(Some(status), "response body too large"));
            }
            body.extend_from_slice(&chunk);
        }
        match status {
            200..=299 => parse_token_response(&body).map_err(|d| Failure::invalid(Some(status), d)),
            400..=599 => {
                let (error_code, error_description) = error_fields(&body);
                Err(Failure {
                    status: Some(status),
                    error_code,
                    error_description,
                    retry_after,
                    ..Failure::new(match status {
                        429 => Outcome::Http429,
                        500..=599 => Outcome::Http5xx,
                        // IMDS: 404 "IMDS endpoint is updating" and 410 "available in a
                        // maximum of 70 seconds" are transient (Microsoft's retry guidance);
                        // counted as the endpoint's failure, the log keeps the status.
                        404 | 410 if self.imds => Outcome::Http5xx,
                        _ => Outcome::Http4xx,
                    })
                })
            }
            // 1xx/3xx: the HTTP client should not follow redirects for a token endpoint (it
            // would turn the POST into a GET); an unfollowed redirect is a misconfiguration.
            _ => Err(Failure::invalid(Some(status), "unexpected HTTP status")),
        }
    }
}

/// A transport error as a failure, with its error chain as the cause (without the URL, which
/// reqwest would print with its query; the log line has it without).
pub(crate) fn classify(e: reqwest::Error) -> Failure {
    let outcome = if e.is_timeout() {
        Outcome::Timeout
    } else if e.is_redirect() {
        return Failure::invalid(None, "redirect");
    } else {
        Outcome::Network
    };
    Failure {
        // A connect error that is not a timeout: refused, unresolvable, unroutable.
        unreachable: outcome == Outcome::Network && e.is_connect(),
        cause: Some(crate::telemetry::error_chain(&e.without_url())),
        ..Failure::new(outcome)
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

/// From a JSON error body: `error_code` (Databricks: string or number) or `error` (RFC 6749
/// §5.2), kept only if it looks like an identifier, and the OAuth `error_description`, masked
/// and capped ([`failure::sanitize_description`]). Nothing else of the body is kept.
fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let description = match v.get("error_description") {
        Some(serde_json::Value::String(d)) => failure::sanitize_description(d),
        _ => None,
    };
    (error_code(&v), description)
}

/// The `error_code` or `error` of a JSON error body if it looks like an identifier: never free
/// text, which could echo input.
fn error_code(v: &serde_json::Value) -> Option<String> {
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
pub(crate) fn parse_token_response(body: &[u8]) -> Result<(Arc<str>, Duration), &'static str> {
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
        let code = |body: &[u8]| error_fields(body).0;
        assert_eq!(
            code(br#"{"error_code":"INVALID_PARAMETER_VALUE","message":"x"}"#).as_deref(),
            Some("INVALID_PARAMETER_VALUE")
        );
        assert_eq!(code(br#"{"error_code":401}"#).as_deref(), Some("401"));
        assert_eq!(
            code(br#"{"error":"invalid_client","error_description":"x"}"#).as_deref(),
            Some("invalid_client")
        );
        assert_eq!(code(br#"{"error":"has spaces eyJ..."}"#), None);
        assert_eq!(code(b"<html>"), None);
    }

    #[test]
    fn only_the_oauth_description_is_kept_besides_the_code() {
        let (code, description) = error_fields(
            br#"{"error":"invalid_client","error_description":"Client authentication failed","message":"other text"}"#,
        );
        assert_eq!(code.as_deref(), Some("invalid_client"));
        assert_eq!(description.as_deref(), Some("Client authentication failed"));
        // The Databricks API's `message` is not an OAuth field: not kept.
        let (_, description) = error_fields(br#"{"error_code":"X","message":"some text"}"#);
        assert_eq!(description, None);
        let (_, description) = error_fields(br#"{"error":"x","error_description":5}"#);
        assert_eq!(description, None);
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
