//! Why a credential could not be had, whose fault that is, and the one log line that says so.
//!
//! A failed token request is logged once, where it is decided: by the endpoint when it gives
//! up ([`super::oauth::Endpoint::request`]), or by the broker for a request that never reached
//! the endpoint because the configuration cannot serve it. The line names the upstream, the
//! token URL (scheme, host, port and path only: never userinfo or query), the [`Side`] at
//! fault, the number of attempts and the underlying cause (the transport's error chain, or the
//! OAuth `error` and a capped `error_description`). It never carries a secret, a token or the
//! response body beyond those two OAuth fields. Lines are rate-limited per upstream and side.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use crate::telemetry::RateLimitedLog;

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
    pub(crate) fn retryable(self) -> bool {
        matches!(
            self,
            Outcome::Http429 | Outcome::Http5xx | Outcome::Timeout | Outcome::Network
        )
    }
}

/// Who is at fault when no credential could be had: the `side` field of the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The token endpoint could not be reached: DNS, connect, TLS, or no answer in time.
    Network,
    /// The endpoint answered, but badly: 5xx, 429, or a response that is not a usable token.
    TokenEndpoint,
    /// The endpoint refused the request (400/401/403...): wrong client ID or secret, or a
    /// federation policy that does not accept the caller's token. Its OAuth `error` says which.
    Refused,
    /// idgate's configuration cannot serve the request (e.g. a `token_exchange` upstream
    /// reached without a caller token); load-time problems are `check-config` errors instead.
    Config,
}

impl Side {
    pub const fn as_str(self) -> &'static str {
        match self {
            Side::Network => "network",
            Side::TokenEndpoint => "token_endpoint",
            Side::Refused => "refused",
            Side::Config => "config",
        }
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
    /// The OAuth `error_description`: visible ASCII only, long words (anything that could be
    /// a token or a secret) masked, at most 200 bytes. Logged, not displayed.
    pub error_description: Option<String>,
    /// `Retry-After` in seconds, capped at 60 s.
    pub retry_after: Option<Duration>,
    /// What was wrong with a 2xx response (fixed text).
    pub detail: Option<&'static str>,
    /// The transport's error chain for a network failure or timeout, e.g. `error sending
    /// request: client error (Connect): dns error: failed to lookup address information: Name
    /// or service not known` (the URL left out: the log line has it without query).
    pub cause: Option<String>,
    /// The endpoint could not even be connected to (connection refused, name not resolved,
    /// no route): retrying within the same request would only spend the caller's wait inside
    /// HAProxy's `timeout processing`, so the request fails at once.
    pub unreachable: bool,
}

impl Failure {
    pub(crate) fn new(outcome: Outcome) -> Failure {
        Failure {
            outcome,
            status: None,
            error_code: None,
            error_description: None,
            retry_after: None,
            detail: None,
            cause: None,
            unreachable: false,
        }
    }

    /// Worth another attempt within the same request.
    pub(crate) fn retryable(&self) -> bool {
        self.outcome.retryable() && !self.unreachable
    }

    /// A refusal for good (400/401/403...: bad client secret, a federation policy that does
    /// not accept the caller, a grant Databricks will not give): not worth retrying, by the
    /// agent or by the client.
    pub fn is_refusal(&self) -> bool {
        self.outcome == Outcome::Http4xx
    }

    pub(crate) fn invalid(status: Option<u16>, detail: &'static str) -> Failure {
        Failure {
            status,
            detail: Some(detail),
            ..Failure::new(Outcome::InvalidResponse)
        }
    }

    /// The endpoint itself is unwell (as opposed to refusing this particular request).
    pub fn is_endpoint_failure(&self) -> bool {
        self.outcome.retryable() || self.outcome == Outcome::InvalidResponse
    }

    /// Whose fault it is (see [`Side`]).
    pub fn side(&self) -> Side {
        match self.outcome {
            Outcome::Network | Outcome::Timeout => Side::Network,
            Outcome::Http4xx => Side::Refused,
            Outcome::Success | Outcome::Http429 | Outcome::Http5xx | Outcome::InvalidResponse => {
                Side::TokenEndpoint
            }
        }
    }
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
        if let Some(c) = &self.cause {
            write!(f, ": {c}")?;
        }
        Ok(())
    }
}

/// Longest `error_description` kept.
pub(crate) const MAX_DESCRIPTION: usize = 200;

/// Words longer than this in an `error_description` are masked: tokens, secrets and PATs are
/// all longer (a Databricks secret or PAT is 36 characters, a JWT hundreds), while the words of
/// an explanation are not.
const MAX_DESCRIPTION_WORD: usize = 32;

/// The `error_description` as it may be logged (see [`Failure::error_description`]); `None`
/// if nothing printable is left.
pub(crate) fn sanitize_description(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len().min(MAX_DESCRIPTION + 8));
    for word in raw.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if word.len() > MAX_DESCRIPTION_WORD {
            out.push_str("<masked>");
        } else {
            out.extend(
                word.chars()
                    .map(|c| if c.is_ascii_graphic() { c } else { '?' }),
            );
        }
        if out.len() > MAX_DESCRIPTION {
            let mut end = MAX_DESCRIPTION;
            while !out.is_char_boundary(end) {
                end -= 1;
            }
            out.truncate(end);
            out.push_str("...");
            break;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// A token URL as logged: `scheme://host:port/path`, without userinfo, query or fragment.
pub(crate) fn shown_url(u: &url::Url) -> String {
    let host = u.host_str().unwrap_or("");
    match u.port_or_known_default() {
        Some(port) => format!("{}://{host}:{port}{}", u.scheme(), u.path()),
        None => format!("{}://{host}{}", u.scheme(), u.path()),
    }
}

/// What the failed request was for: a caller waiting on it (who now gets a 503), or a
/// background refresh (the current token keeps being served until it expires).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Caller,
    Refresh,
}

/// Per (upstream, side): a burst of lines, then one a minute with a count of those left out.
/// Endpoint failures are already paced by the hold-off; refusals of `token_exchange` are per
/// caller and could otherwise log one line per distinct caller token.
static LOG: LazyLock<RateLimitedLog> =
    LazyLock::new(|| RateLimitedLog::new(10, Duration::from_secs(60)));

fn admitted(upstream: &str, side: Side) -> bool {
    LOG.admit(&format!("upstream {upstream} {}", side.as_str()))
        .is_log()
}

/// The warning for a token request that failed after `attempts` attempts.
pub(crate) fn log_failure(upstream: &str, url: &str, f: &Failure, attempts: u32, why: Trigger) {
    let side = f.side();
    if !admitted(upstream, side) {
        return;
    }
    let message = match why {
        Trigger::Caller => "upstream token request failed; no credential, the request is refused",
        Trigger::Refresh => {
            "upstream token refresh failed; the current token is served until it expires"
        }
    };
    tracing::warn!(
        upstream,
        url,
        side = side.as_str(),
        result = f.outcome.as_str(),
        status = f.status,
        error = f.error_code.as_deref(),
        error_description = f.error_description.as_deref(),
        detail = f.detail,
        attempts,
        cause = f.cause.as_deref(),
        "{message}"
    );
}

/// The warning for a request the configuration cannot serve (no token request was made).
pub(crate) fn log_config(upstream: &str, url: Option<&str>, cause: &str) {
    if !admitted(upstream, Side::Config) {
        return;
    }
    tracing::warn!(
        upstream,
        url,
        side = Side::Config.as_str(),
        attempts = 0,
        cause,
        "no upstream credential; the request is refused"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sides_follow_outcomes() {
        for (o, side) in [
            (Outcome::Network, Side::Network),
            (Outcome::Timeout, Side::Network),
            (Outcome::Http5xx, Side::TokenEndpoint),
            (Outcome::Http429, Side::TokenEndpoint),
            (Outcome::InvalidResponse, Side::TokenEndpoint),
            (Outcome::Http4xx, Side::Refused),
        ] {
            assert_eq!(Failure::new(o).side(), side, "{o:?}");
        }
    }

    #[test]
    fn descriptions_are_capped_and_mask_long_words() {
        assert_eq!(
            sanitize_description("Client authentication failed").as_deref(),
            Some("Client authentication failed")
        );
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{}.sig", "x".repeat(100));
        let secret = "dose0123456789abcdef0123456789abcdef";
        let d = sanitize_description(&format!("bad\ttoken {jwt}\r\nsecret {secret} caf\u{e9}"))
            .unwrap();
        assert_eq!(d, "bad token <masked> secret <masked> caf?");
        let long = sanitize_description(&"word ".repeat(100)).unwrap();
        assert!(
            long.len() <= MAX_DESCRIPTION + 3 && long.ends_with("..."),
            "{long}"
        );
        assert_eq!(sanitize_description(" \n\t"), None);
    }

    #[test]
    fn shown_urls_keep_no_userinfo_or_query() {
        let u =
            url::Url::parse("https://user:pw@dbc.example.com/oidc/v1/token?x=secret#f").unwrap();
        assert_eq!(shown_url(&u), "https://dbc.example.com:443/oidc/v1/token");
        let u = url::Url::parse("http://[::1]:8080/t").unwrap();
        assert_eq!(shown_url(&u), "http://[::1]:8080/t");
    }
}
