//! Databricks upstream credentials. (Placeholder API; the upstream issue fills it in.)

use std::sync::Arc;

use crate::config::{Config, Problem};
use crate::decision::Identity;

pub struct Broker {
    _private: (),
}

#[derive(Debug, thiserror::Error)]
#[error("upstream credential unavailable")]
pub struct UpstreamError;

impl Broker {
    pub fn new(
        _cfg: &Config,
        _previous: Option<&Broker>,
        _http: reqwest::Client,
    ) -> Result<Broker, Vec<Problem>> {
        Ok(Broker { _private: () })
    }
    pub async fn credential(
        &self,
        _upstream: &str,
        _caller_token: &str,
        _identity: Option<&Identity>,
    ) -> Result<Arc<str>, UpstreamError> {
        Err(UpstreamError)
    }
}
