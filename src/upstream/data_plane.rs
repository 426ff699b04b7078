//! Route-optimized model serving (contract §3 `upstream_host`, `upstream_path`; §4
//! `data_plane`, `data_plane_hosts`, `workspace_url`).
//!
//! A route-optimized serving endpoint is queried at its own data-plane URL
//! (`https://<id>.serving.cloud.databricks.com/<workspace-id>/serving-endpoints/<name>/invocations`)
//! with a token scoped to that endpoint, as the Databricks SDK does it
//! (`databricks/sdk/data_plane.py`, `service/serving.py`):
//!
//! 1. `GET {workspace_url}/api/2.0/serving-endpoints/{name}` with the upstream's control-plane
//!    token. `route_optimized: true` and `data_plane_info.query_info.{endpoint_url,
//!    authorization_details}` make it route-optimized; anything else is a classic endpoint and
//!    the request goes to the workspace as before. Cached per endpoint name ([`LOOKUP_TTL`];
//!    an unknown endpoint [`ABSENT_TTL`]), one lookup at a time per name.
//! 2. The endpoint URL's host must match `data_plane_hosts` (never an arbitrary host from an
//!    API answer): otherwise the request is refused, `upstream_refused` 502.
//! 3. `POST {token_url}` with `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
//!    `assertion=<control-plane access token>` and the `authorization_details` exactly as the
//!    API gave them (RFC 9396: the token opens that one endpoint and nothing else). Cached per
//!    (control-plane token, endpoint) until shortly before expiry: per caller when the
//!    control-plane token is (`token_exchange`).
//!
//! A lookup the workspace refuses (401/403: this principal may not see the endpoint) or an
//! endpoint it does not know (404) sends the request to the workspace as a classic one: the
//! workspace then answers the invocation with its own, accurate error. A lookup that fails
//! (network, timeout, 429, 5xx) is `upstream_unavailable`; everything shares the decision's
//! `total_budget` deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};

use super::cache::{Holdoff, TokenEntry, REFUSAL_TTL};
use super::failure::{self, Failure, Outcome, Trigger};
use super::oauth::{self, Endpoint};
use super::shared::{Kind, SharedCredentials};
use super::UpstreamError;
use crate::config::DataPlaneHost;
use crate::decision::Route;
use crate::token_key::{token_key, TokenKey};

/// RFC 7523 grant the SDK mints data-plane tokens with.
pub(crate) const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long an endpoint's description is reused: an endpoint switched to route optimization
/// (which Databricks does only by re-creating it) is followed within a minute.
pub(crate) const LOOKUP_TTL: Duration = Duration::from_secs(60);

/// How long "no such endpoint" is remembered (it may be created any moment).
pub(crate) const ABSENT_TTL: Duration = Duration::from_secs(10);

/// Largest endpoint description read (a real one is a few KB, with its served entities).
const MAX_LOOKUP_BYTES: usize = 1 << 20;

/// Longest endpoint name looked up (Databricks allows 63 characters).
const MAX_ENDPOINT_NAME: usize = 128;

/// `POST /serving-endpoints/{name}/invocations`: the endpoint name, if `path` (normalized,
/// decoded) is that of a serving invocation with a plausible endpoint name.
pub fn serving_invocation<'p>(method: &str, path: &'p str) -> Option<&'p str> {
    if method != "POST" {
        return None;
    }
    let name = path
        .strip_prefix("/serving-endpoints/")?
        .strip_suffix("/invocations")?;
    let plausible = !name.is_empty()
        && name.len() <= MAX_ENDPOINT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plausible.then_some(name)
}

/// What the workspace said about an endpoint.
#[derive(Debug)]
enum Lookup {
    /// Not route-optimized (or not visible to this principal, or unknown): the workspace.
    Classic,
    /// Route-optimized, on an allowed host.
    Optimized {
        route: Arc<Route>,
        authorization_details: Box<str>,
    },
    /// Route-optimized on a host `data_plane_hosts` does not allow.
    Forbidden,
}

/// A cached answer with its end of life.
pub(super) struct Timed<T> {
    pub(super) value: T,
    pub(super) until: Instant,
}

/// Expires a [`Timed`] entry at its `until`.
pub(super) struct TimedExpiry;

impl<K, T: Send + Sync> moka::Expiry<K, Arc<Timed<T>>> for TimedExpiry {
    fn expire_after_create(&self, _: &K, v: &Arc<Timed<T>>, at: Instant) -> Option<Duration> {
        Some(v.until.saturating_duration_since(at))
    }
}

/// A data-plane token, or a recent refusal to mint one.
enum Minted {
    Token(TokenEntry),
    Refused(UpstreamError),
}

/// The data-plane side of one upstream.
pub(crate) struct DataPlane {
    upstream: Arc<str>,
    /// `{workspace_url}/api/2.0/serving-endpoints/`, to which the name is appended.
    lookup_base: url::Url,
    hosts: Vec<DataPlaneHost>,
    /// The upstream's token endpoint, for the jwt-bearer grant.
    mint: Endpoint,
    /// Whether the control-plane token is the caller's own (token exchange).
    per_caller: bool,
    attempt_timeout: Duration,
    holdoff: Holdoff,
    /// The fleet's store (`[shared]`), behind the local cache.
    shared: Option<Arc<SharedCredentials>>,
    lookups: moka::future::Cache<Box<str>, Arc<Timed<Lookup>>>,
    tokens: moka::future::Cache<(TokenKey, Box<str>), Arc<Timed<Minted>>>,
}

impl DataPlane {
    pub(crate) fn new(
        mint: Endpoint,
        workspace: &url::Url,
        hosts: Vec<DataPlaneHost>,
        per_caller: bool,
        attempt_timeout: Duration,
        cache_size: u64,
    ) -> DataPlane {
        let mut lookup_base = workspace.clone();
        lookup_base.set_path("/api/2.0/serving-endpoints/");
        lookup_base.set_query(None);
        DataPlane {
            upstream: Arc::clone(&mint.upstream),
            lookup_base,
            hosts,
            mint,
            per_caller,
            attempt_timeout,
            holdoff: Holdoff::default(),
            shared: None,
            lookups: moka::future::Cache::builder()
                .max_capacity(cache_size)
                .expire_after(TimedExpiry)
                .build(),
            tokens: moka::future::Cache::builder()
                .max_capacity(cache_size)
                .expire_after(TimedExpiry)
                .build(),
        }
    }

    /// Share data-plane tokens through the fleet's store.
    pub(crate) fn with_shared(mut self, shared: Option<Arc<SharedCredentials>>) -> Self {
        self.shared = shared;
        self
    }

    /// The data-plane route and token for an invocation of endpoint `name`, `None` for a
    /// classic endpoint. `control` is the upstream's credential for this caller
    /// (`"Bearer <token>"`).
    pub(crate) async fn route(
        &self,
        http: &reqwest::Client,
        name: &str,
        control: &Arc<str>,
        deadline: Instant,
    ) -> Result<Option<(Arc<str>, Arc<Route>)>, UpstreamError> {
        let lookup = self.lookup(http, name, control, deadline).await?;
        let (route, details) = match &lookup.value {
            Lookup::Classic => return Ok(None),
            Lookup::Forbidden => {
                return Err(self.config_refusal(
                    "the serving endpoint's data-plane host is not allowed by data_plane_hosts",
                ))
            }
            Lookup::Optimized {
                route,
                authorization_details,
            } => (route, authorization_details),
        };
        let key = (token_key(control), Box::<str>::from(name));
        let now = Instant::now();
        for _ in 0..2 {
            let slot = match self.tokens.get(&key).await {
                Some(s) => s,
                None => self
                    .tokens
                    .try_get_with(
                        key.clone(),
                        self.mint(http, control, &key, details, deadline),
                    )
                    .await
                    .map_err(|e| (*e).clone())?,
            };
            match &slot.value {
                Minted::Token(e) if e.fresh(now) => {
                    return Ok(Some((Arc::clone(&e.header), Arc::clone(route))))
                }
                Minted::Refused(err) if now < slot.until => return Err(err.clone()),
                _ => self.tokens.invalidate(&key).await,
            }
        }
        Err(self.failed(Failure::invalid(
            None,
            "data-plane token expired as soon as it was issued",
        )))
    }

    /// The endpoint's description, cached; one lookup per name at a time.
    async fn lookup(
        &self,
        http: &reqwest::Client,
        name: &str,
        control: &str,
        deadline: Instant,
    ) -> Result<Arc<Timed<Lookup>>, UpstreamError> {
        if let Some(l) = self.lookups.get(name).await {
            if Instant::now() < l.until {
                return Ok(l);
            }
            self.lookups.invalidate(name).await;
        }
        self.lookups
            .try_get_with(
                Box::from(name),
                self.fetch_lookup(http, name, control, deadline),
            )
            .await
            .map_err(|e| (*e).clone())
    }

    async fn fetch_lookup(
        &self,
        http: &reqwest::Client,
        name: &str,
        control: &str,
        deadline: Instant,
    ) -> Result<Arc<Timed<Lookup>>, UpstreamError> {
        self.holdoff.error(&self.upstream, Instant::now())?;
        let mut url = self.lookup_base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .pop_if_empty()
            .push(name);
        let per_try = self
            .attempt_timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        if per_try.is_zero() {
            return Err(self.lookup_failed(Failure {
                cause: Some("total_budget spent before the endpoint lookup".into()),
                ..Failure::new(Outcome::Timeout)
            }));
        }
        let mut auth = HeaderValue::from_str(control).map_err(|_| {
            self.lookup_failed(Failure::invalid(
                None,
                "control-plane token not header-safe",
            ))
        })?;
        auth.set_sensitive(true);
        let sent = get_capped(
            http,
            url,
            auth,
            per_try,
            MAX_LOOKUP_BYTES,
            "endpoint description too large",
        )
        .await;
        let (status, body) = sent.map_err(|f| self.lookup_failed(f))?;
        let (value, ttl) = match status {
            200 => (self.describe(name, &body), LOOKUP_TTL),
            404 => (Lookup::Classic, ABSENT_TTL),
            // Not visible to this principal (or the token was refused): the workspace answers
            // the invocation itself. Not cached: another caller may see it.
            401 | 403 => (Lookup::Classic, Duration::ZERO),
            429 | 500..=599 => {
                let outcome = if status == 429 {
                    Outcome::Http429
                } else {
                    Outcome::Http5xx
                };
                return Err(self.lookup_failed(Failure {
                    status: Some(status),
                    ..Failure::new(outcome)
                }));
            }
            _ => (Lookup::Classic, ABSENT_TTL),
        };
        Ok(Arc::new(Timed {
            value,
            until: Instant::now() + ttl,
        }))
    }

    /// A 200 answer: route-optimized on an allowed host, or classic.
    fn describe(&self, name: &str, body: &[u8]) -> Lookup {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            tracing::warn!(upstream = %self.upstream, endpoint = name,
                "serving endpoint description is not JSON; treating the endpoint as classic");
            return Lookup::Classic;
        };
        if v.get("route_optimized") != Some(&serde_json::Value::Bool(true)) {
            return Lookup::Classic;
        }
        let info = v.pointer("/data_plane_info/query_info");
        let field = |k: &str| info.and_then(|i| i.get(k)).and_then(|x| x.as_str());
        let (Some(endpoint_url), Some(details)) =
            (field("endpoint_url"), field("authorization_details"))
        else {
            tracing::warn!(upstream = %self.upstream, endpoint = name,
                "route-optimized endpoint without data_plane_info.query_info; sending it to the workspace");
            return Lookup::Classic;
        };
        match self.route_of(endpoint_url) {
            Some(route) if !details.is_empty() && details.len() <= 4096 => Lookup::Optimized {
                route: Arc::new(route),
                authorization_details: details.into(),
            },
            _ => {
                let host = url::Url::parse(endpoint_url)
                    .ok()
                    .and_then(|u| u.host_str().map(str::to_owned));
                tracing::warn!(upstream = %self.upstream, endpoint = name, host = host.as_deref(),
                    "route-optimized endpoint's data-plane URL is not https on a host allowed by data_plane_hosts; refusing its invocations");
                Lookup::Forbidden
            }
        }
    }

    /// `upstream_host` and `upstream_path` of an https endpoint URL on an allowed host.
    fn route_of(&self, endpoint_url: &str) -> Option<Route> {
        let u = url::Url::parse(endpoint_url).ok()?;
        if u.scheme() != "https" || !u.username().is_empty() || u.password().is_some() {
            return None;
        }
        let host = u.host()?;
        if !self.hosts.iter().any(|p| p.matches(&host)) {
            return None;
        }
        let host = match u.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_string(),
        };
        let path = u.path();
        let ok = path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
        ok.then(|| Route {
            host: host.into(),
            path: path.into(),
        })
    }

    /// Mint a data-plane token (jwt-bearer grant); a refusal is remembered for
    /// [`REFUSAL_TTL`].
    async fn mint(
        &self,
        http: &reqwest::Client,
        control: &str,
        key: &(TokenKey, Box<str>),
        authorization_details: &str,
        deadline: Instant,
    ) -> Result<Arc<Timed<Minted>>, UpstreamError> {
        let shared = self
            .shared
            .as_ref()
            .map(|s| (s, s.key(Kind::DataPlane, &self.upstream, &key.0, &key.1)));
        if let Some((s, k)) = &shared {
            if let Some(tok) = s.get(k).await {
                let e = TokenEntry::new(&tok, Duration::ZERO, false);
                return Ok(Arc::new(Timed {
                    until: e.usable_until,
                    value: Minted::Token(e),
                }));
            }
        }
        self.holdoff.error(&self.upstream, Instant::now())?;
        let assertion = control.strip_prefix("Bearer ").unwrap_or(control);
        let form = url::form_urlencoded::Serializer::new(String::with_capacity(
            assertion.len() + authorization_details.len() + 128,
        ))
        .append_pair("grant_type", GRANT_JWT_BEARER)
        .append_pair("authorization_details", authorization_details)
        .append_pair("assertion", assertion)
        .finish();
        let form = zeroize::Zeroizing::new(form);
        match self
            .mint
            .request(
                http,
                Bytes::copy_from_slice(form.as_bytes()),
                None,
                Trigger::Caller,
                deadline,
            )
            .await
        {
            Ok(tok) => {
                if let Some((s, k)) = shared {
                    s.put(k, &tok);
                }
                let e = TokenEntry::new(&tok, Duration::ZERO, false);
                Ok(Arc::new(Timed {
                    until: e.usable_until,
                    value: Minted::Token(e),
                }))
            }
            Err(f) if f.is_refusal() => Ok(Arc::new(Timed {
                value: Minted::Refused(self.failed(f)),
                until: Instant::now() + REFUSAL_TTL,
            })),
            Err(f) => {
                self.holdoff.after(&f);
                Err(self.failed(f))
            }
        }
    }

    fn failed(&self, f: Failure) -> UpstreamError {
        UpstreamError::Failed {
            upstream: Arc::clone(&self.upstream),
            failure: Arc::new(f),
            per_caller: self.per_caller,
        }
    }

    /// A failed lookup, logged here (the token endpoint logs its own failures).
    fn lookup_failed(&self, f: Failure) -> UpstreamError {
        if f.is_endpoint_failure() {
            self.holdoff.after(&f);
        }
        failure::log_failure(
            &self.upstream,
            self.lookup_base.as_str(),
            &f,
            1,
            Trigger::Caller,
        );
        self.failed(f)
    }

    /// A route the configuration does not allow: the gateway's problem, never retried.
    fn config_refusal(&self, cause: &'static str) -> UpstreamError {
        failure::log_config(&self.upstream, Some(self.lookup_base.as_str()), cause);
        UpstreamError::Failed {
            upstream: Arc::clone(&self.upstream),
            failure: Arc::new(Failure {
                detail: Some(cause),
                ..Failure::new(Outcome::Http4xx)
            }),
            per_caller: false,
        }
    }
}

/// `GET url` with `Authorization: auth`, accepting JSON, within `per_try`: the status and the
/// body (at most `cap` bytes, else `Failure::invalid` with `too_large`).
pub(super) async fn get_capped(
    http: &reqwest::Client,
    url: url::Url,
    auth: HeaderValue,
    per_try: Duration,
    cap: usize,
    too_large: &'static str,
) -> Result<(u16, Vec<u8>), Failure> {
    tokio::time::timeout(per_try, async {
        let resp = http
            .get(url)
            .timeout(per_try)
            .header(AUTHORIZATION, auth)
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .send()
            .await
            .map_err(oauth::classify)?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, cap, too_large).await?;
        Ok((status, body))
    })
    .await
    .unwrap_or_else(|_| {
        Err(Failure {
            cause: Some(format!("no response within the timeout of {per_try:?}")),
            ..Failure::new(Outcome::Timeout)
        })
    })
}

/// The body, at most `cap` bytes (else `Failure::invalid` with `too_large`).
async fn read_capped(
    mut resp: reqwest::Response,
    cap: usize,
    too_large: &'static str,
) -> Result<Vec<u8>, Failure> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(oauth::classify)? {
        if body.len() + chunk.len() > cap {
            return Err(Failure::invalid(None, too_large));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serving_invocations_are_recognized() {
        assert_eq!(
            serving_invocation("POST", "/serving-endpoints/churn-v2/invocations"),
            Some("churn-v2")
        );
        for (m, p) in [
            ("GET", "/serving-endpoints/churn/invocations"),
            ("POST", "/serving-endpoints/churn/invocations/x"),
            ("POST", "/serving-endpoints//invocations"),
            ("POST", "/serving-endpoints/a/b/invocations"),
            ("POST", "/serving-endpoints/a b/invocations"),
            ("POST", "/api/2.0/serving-endpoints/churn/invocations"),
        ] {
            assert_eq!(serving_invocation(m, p), None, "{m} {p}");
        }
    }

    fn plane() -> DataPlane {
        let ep = Endpoint::new(
            Arc::from("sp"),
            url::Url::parse("https://dbc.example.com/oidc/v1/token").unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(2),
        );
        let hosts = crate::config::DEFAULT_DATA_PLANE_HOSTS
            .iter()
            .map(|h| h.parse().unwrap())
            .collect();
        DataPlane::new(
            ep,
            &url::Url::parse("https://dbc.example.com").unwrap(),
            hosts,
            false,
            Duration::from_secs(1),
            10,
        )
    }

    #[test]
    fn descriptions_are_read_like_the_sdk_reads_them() {
        let dp = plane();
        let ro = br#"{"name":"churn","route_optimized":true,
            "endpoint_url":"https://abc.serving.cloud.databricks.com/123/serving-endpoints/churn/invocations",
            "data_plane_info":{"query_info":{
              "endpoint_url":"https://abc.serving.cloud.databricks.com/123/serving-endpoints/churn/invocations",
              "authorization_details":"[{\"type\":\"workspace_permission\"}]"}}}"#;
        match dp.describe("churn", ro) {
            Lookup::Optimized {
                route,
                authorization_details,
            } => {
                assert_eq!(&*route.host, "abc.serving.cloud.databricks.com");
                assert_eq!(&*route.path, "/123/serving-endpoints/churn/invocations");
                assert_eq!(
                    &*authorization_details,
                    r#"[{"type":"workspace_permission"}]"#
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            dp.describe("c", br#"{"name":"c","route_optimized":false}"#),
            Lookup::Classic
        ));
        assert!(matches!(
            dp.describe("c", br#"{"name":"c"}"#),
            Lookup::Classic
        ));
        assert!(matches!(dp.describe("c", b"<html>"), Lookup::Classic));
        for url in [
            "https://evil.example.com/1/serving-endpoints/c/invocations",
            "http://abc.serving.cloud.databricks.com/1/x",
            "https://u:p@abc.serving.cloud.databricks.com/1/x",
        ] {
            let body = serde_json::json!({"route_optimized": true, "data_plane_info":
                {"query_info": {"endpoint_url": url, "authorization_details": "[]"}}});
            let body = serde_json::to_vec(&body).unwrap();
            assert!(
                matches!(dp.describe("c", &body), Lookup::Forbidden),
                "{url}"
            );
        }
    }

    #[test]
    fn a_port_stays_with_the_host() {
        let dp = plane();
        let r = dp
            .route_of(
                "https://abc.serving.cloud.databricks.com:8443/9/serving-endpoints/x/invocations",
            )
            .unwrap();
        assert_eq!(&*r.host, "abc.serving.cloud.databricks.com:8443");
        let r = dp
            .route_of("https://abc.serving.cloud.databricks.com:443/9/x")
            .unwrap();
        assert_eq!(&*r.host, "abc.serving.cloud.databricks.com");
    }
}
