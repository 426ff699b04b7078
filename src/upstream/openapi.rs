//! A serving endpoint's own request schema, for `payload_schema = "endpoint"` (docs/payload.md):
//! `GET {workspace_url}/api/2.0/serving-endpoints/{name}/openapi` (Databricks derives the
//! document from the served model's signature) with the rule's upstream credential, its
//! invocation request body schema compiled ([`crate::payload::schema_from_openapi`]).
//!
//! Cached per endpoint name for `schema_refresh`, then fetched again (one fetch at a time per
//! name). A failed fetch is remembered for `schema_retry`; meanwhile the last schema that was
//! fetched, if any and not older than `schema_max_stale`, keeps being used (a
//! [`EndpointSchema`] marked `stale`). Without one, the caller checks the body without a
//! schema (strict JSON and input format still apply) and counts it. The three times are the
//! upstream's ([`SchemaTimes`]).
//!
//! The document is fetched with the credential of whichever caller needs it first. The
//! workspace refusing that credential (401/403: this caller may not read the endpoint) is
//! remembered for that caller only (by its credential's [`token_key`]), so one caller without
//! the permission does not leave every other caller without the schema.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderValue;

use super::data_plane::{get_capped, Timed, TimedExpiry};
use crate::config::SchemaTimes;
use crate::payload::{schema_from_openapi, Schema};
use crate::token_key::{token_key, TokenKey};

/// Largest OpenAPI document read.
const MAX_DOCUMENT_BYTES: usize = 4 << 20;

type Fetched = Result<Arc<Schema>, Arc<str>>;

/// An endpoint's schema as [`EndpointSchemas::schema`] found it.
#[derive(Debug, Clone)]
pub struct EndpointSchema {
    pub schema: Arc<Schema>,
    /// The last schema fetched, standing in while fetching a fresh one fails.
    pub stale: bool,
}

/// How a fetch ended.
enum Fetch {
    /// A schema, or a failure that is the endpoint's (remembered for every caller).
    Done(Fetched),
    /// The workspace refused this caller's credential (401/403).
    Refused(Arc<str>),
}

/// The endpoint schemas of one upstream's workspace.
pub(crate) struct EndpointSchemas {
    /// `{workspace_url}/api/2.0/serving-endpoints/`.
    base: url::Url,
    timeout: Duration,
    times: SchemaTimes,
    current: moka::future::Cache<Box<str>, Arc<Timed<Fetched>>>,
    last_good: moka::sync::Cache<Box<str>, Arc<Schema>>,
    /// Callers whose credential the workspace refused, per endpoint.
    refused: moka::sync::Cache<(TokenKey, Box<str>), Arc<str>>,
}

impl EndpointSchemas {
    pub(crate) fn new(
        workspace: &url::Url,
        timeout: Duration,
        cache_size: u64,
        times: SchemaTimes,
    ) -> Self {
        let mut base = workspace.clone();
        base.set_path("/api/2.0/serving-endpoints/");
        base.set_query(None);
        EndpointSchemas {
            base,
            timeout,
            times,
            current: moka::future::Cache::builder()
                .max_capacity(cache_size)
                .expire_after(TimedExpiry)
                .build(),
            last_good: moka::sync::Cache::builder()
                .max_capacity(cache_size)
                .time_to_live(times.max_stale)
                .build(),
            refused: moka::sync::Cache::builder()
                .max_capacity(cache_size)
                .time_to_live(times.retry)
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
    ) -> Result<EndpointSchema, Arc<str>> {
        let key: Box<str> = name.into();
        let entry = match self.current.get(&key).await {
            Some(e) => e,
            None => {
                let caller = (token_key(authorization), key.clone());
                if let Some(why) = self.refused.get(&caller) {
                    return self.stale(&key, why);
                }
                let fetched = self
                    .current
                    .try_get_with(key.clone(), async {
                        match self.fetch(http, name, authorization, deadline).await {
                            Fetch::Refused(why) => Err(why),
                            Fetch::Done(value) => {
                                let ttl = if value.is_ok() {
                                    self.times.refresh
                                } else {
                                    self.times.retry
                                };
                                Ok(Arc::new(Timed {
                                    value,
                                    until: Instant::now() + ttl,
                                }))
                            }
                        }
                    })
                    .await;
                match fetched {
                    Ok(e) => e,
                    Err(why) => {
                        let why: Arc<str> = Arc::clone(&why);
                        self.refused.insert(caller, Arc::clone(&why));
                        return self.stale(&key, why);
                    }
                }
            }
        };
        match &entry.value {
            Ok(s) => {
                if !self
                    .last_good
                    .get(&key)
                    .is_some_and(|old| Arc::ptr_eq(&old, s))
                {
                    self.last_good.insert(key, Arc::clone(s));
                }
                Ok(EndpointSchema {
                    schema: Arc::clone(s),
                    stale: false,
                })
            }
            Err(why) => self.stale(&key, Arc::clone(why)),
        }
    }

    /// The last schema fetched for `key`, if not older than `schema_max_stale`; else `why`.
    fn stale(&self, key: &str, why: Arc<str>) -> Result<EndpointSchema, Arc<str>> {
        match self.last_good.get(key) {
            Some(schema) => Ok(EndpointSchema {
                schema,
                stale: true,
            }),
            None => Err(why),
        }
    }

    async fn fetch(
        &self,
        http: &reqwest::Client,
        name: &str,
        authorization: &str,
        deadline: Instant,
    ) -> Fetch {
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
            return Fetch::Done(Err("no time left to fetch the endpoint's schema".into()));
        }
        let Ok(mut auth) = HeaderValue::from_str(authorization) else {
            return Fetch::Refused("the upstream credential is not header-safe".into());
        };
        auth.set_sensitive(true);
        let got = get_capped(
            http,
            url,
            auth,
            per_try,
            MAX_DOCUMENT_BYTES,
            "OpenAPI document too large",
        )
        .await;
        let result = match got {
            Ok((200, body)) => document_schema(name, &body),
            Ok((status @ (401 | 403), _)) => {
                let why = format!("the workspace refused this caller's credential (HTTP {status})");
                tracing::warn!(endpoint = name, error = %why,
                    "serving endpoint schema not fetched for this caller; other callers fetch it \
                     with their own credential");
                return Fetch::Refused(why.into());
            }
            Ok((status, _)) => Err(format!("the workspace answered HTTP {status}")),
            Err(f) => Err(f.to_string()),
        };
        Fetch::Done(match result {
            Ok(s) => {
                tracing::info!(endpoint = name, "serving endpoint schema fetched");
                Ok(Arc::new(s))
            }
            Err(why) => {
                if self.last_good.contains_key(name) {
                    tracing::warn!(endpoint = name, error = %why,
                        max_stale = %humantime::format_duration(self.times.max_stale),
                        "serving endpoint schema unavailable; the last schema fetched stands in \
                         until it is max_stale old (counted as schema_stale)");
                } else {
                    tracing::warn!(endpoint = name, error = %why,
                        "serving endpoint schema unavailable; bodies are checked without it");
                }
                Err(why.into())
            }
        })
    }
}

/// The compiled request schema of an OpenAPI document's bytes.
fn document_schema(name: &str, body: &[u8]) -> Result<Schema, String> {
    let doc: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| format!("the OpenAPI document is not JSON: {e}"))?;
    let schema = schema_from_openapi(&doc)?;
    Schema::compile(format!("openapi:{name}"), schema)
}
