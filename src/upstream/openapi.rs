//! A serving endpoint's own request schema, for `payload_schema = "endpoint"` (docs/payload.md):
//! `GET {workspace_url}/api/2.0/serving-endpoints/{name}/openapi` (Databricks derives the
//! document from the served model's signature) with the rule's upstream credential, its
//! invocation request body schema compiled ([`crate::payload::schema_from_openapi`]).
//!
//! Cached per endpoint name for [`SCHEMA_TTL`], then fetched again (one fetch at a time per
//! name). A failed fetch is remembered for [`FAILURE_TTL`]; meanwhile the last schema that was
//! fetched, if any and not older than [`MAX_STALE`], keeps being used. Without one, the caller
//! checks the body without a schema (strict JSON and input format still apply) and counts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

use super::data_plane::{get_capped, Timed, TimedExpiry};
use crate::payload::{schema_from_openapi, Schema};

/// How long a fetched schema is used before it is fetched again.
pub(crate) const SCHEMA_TTL: Duration = Duration::from_secs(300);
/// How long a failed fetch is remembered before the next try.
pub(crate) const FAILURE_TTL: Duration = Duration::from_secs(30);
/// How long the last good schema stands in while fetches fail.
pub(crate) const MAX_STALE: Duration = Duration::from_secs(24 * 3600);
/// Largest OpenAPI document read.
const MAX_DOCUMENT_BYTES: usize = 4 << 20;

type Fetched = Result<Arc<Schema>, Arc<str>>;

/// The endpoint schemas of one upstream's workspace.
pub(crate) struct EndpointSchemas {
    /// `{workspace_url}/api/2.0/serving-endpoints/`.
    base: url::Url,
    timeout: Duration,
    current: moka::future::Cache<Box<str>, Arc<Timed<Fetched>>>,
    last_good: moka::sync::Cache<Box<str>, Arc<Schema>>,
}

impl EndpointSchemas {
    pub(crate) fn new(workspace: &url::Url, timeout: Duration, cache_size: u64) -> Self {
        let mut base = workspace.clone();
        base.set_path("/api/2.0/serving-endpoints/");
        base.set_query(None);
        EndpointSchemas {
            base,
            timeout,
            current: moka::future::Cache::builder()
                .max_capacity(cache_size)
                .expire_after(TimedExpiry)
                .build(),
            last_good: moka::sync::Cache::builder()
                .max_capacity(cache_size)
                .time_to_live(MAX_STALE)
                .build(),
        }
    }

    /// The schema of endpoint `name`, or why there is none. `authorization` is the upstream's
    /// credential for this caller (`"Bearer <token>"`).
    pub(crate) async fn schema(
        &self,
        http: &reqwest::Client,
        name: &str,
        authorization: &str,
        deadline: Instant,
    ) -> Fetched {
        let key: Box<str> = name.into();
        let entry = self
            .current
            .get_with(key.clone(), async {
                let value = self.fetch(http, name, authorization, deadline).await;
                let ttl = if value.is_ok() {
                    SCHEMA_TTL
                } else {
                    FAILURE_TTL
                };
                Arc::new(Timed {
                    value,
                    until: Instant::now() + ttl,
                })
            })
            .await;
        match &entry.value {
            Ok(s) => {
                if !self
                    .last_good
                    .get(&key)
                    .is_some_and(|old| Arc::ptr_eq(&old, s))
                {
                    self.last_good.insert(key, Arc::clone(s));
                }
                Ok(Arc::clone(s))
            }
            Err(why) => self.last_good.get(&key).ok_or_else(|| Arc::clone(why)),
        }
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        name: &str,
        authorization: &str,
        deadline: Instant,
    ) -> Fetched {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .pop_if_empty()
            .push(name)
            .push("openapi");
        let per_try = self
            .timeout
            .min(deadline.saturating_duration_since(Instant::now()));
        if per_try.is_zero() {
            return Err("no time left to fetch the endpoint's schema".into());
        }
        let mut auth = HeaderValue::from_str(authorization)
            .map_err(|_| Arc::<str>::from("the upstream credential is not header-safe"))?;
        auth.set_sensitive(true);
        let got = get_capped(
            http,
            url,
            auth,
            per_try,
            MAX_DOCUMENT_BYTES,
            "OpenAPI document too large",
        )
        .await
        .map_err(|f| f.to_string())
        .and_then(|(status, body)| match status {
            200 => Ok(body),
            _ => Err(format!("the workspace answered HTTP {status}")),
        });
        let result = got.and_then(|body| {
            let doc: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| format!("the OpenAPI document is not JSON: {e}"))?;
            let schema = schema_from_openapi(&doc)?;
            Schema::compile(format!("openapi:{name}"), schema)
        });
        match result {
            Ok(s) => {
                tracing::info!(endpoint = name, "serving endpoint schema fetched");
                Ok(Arc::new(s))
            }
            Err(why) => {
                tracing::warn!(endpoint = name, error = %why,
                    "serving endpoint schema unavailable; bodies are checked without it");
                Err(why.into())
            }
        }
    }
}
