//! `idgate explain`: evaluate one request exactly as the agent would and print the decision,
//! the matched rule, the reason and every variable as JSON.
//!
//! It builds the same [`State`] as `idgate run` (fetching JWKS as needed, waiting a bounded
//! time for the keys), so "why was this request refused?" gets the agent's own answer.
//! The upstream credential is redacted in the output: explain is a diagnostic tool and its
//! output ends up in tickets and chat logs.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use bytestring::ByteString;
use serde_json::{json, Map, Value};

use crate::config::{Config, ConfigError};
use crate::decision::{AuthzRequest, Verdict};
use crate::engine::{Engine, State};

/// How long explain waits for every issuer's keys before deciding anyway.
pub const KEY_WAIT: Duration = Duration::from_secs(10);

/// One request to explain.
#[derive(Debug, Default, Clone)]
pub struct ExplainRequest {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub token: Option<String>,
    pub src: Option<IpAddr>,
}

/// Build the state from `config_path` (or the embedded default), decide, and return the JSON
/// report and whether the request was allowed.
pub async fn explain(
    config_path: Option<&Path>,
    req: ExplainRequest,
) -> Result<(bool, Value), ConfigError> {
    let (config, source) = match config_path {
        Some(p) => (Config::load(p)?, p.display().to_string()),
        None => (Config::embedded(), "<embedded default>".to_string()),
    };
    let state = State::build(config, &source, None, Engine::http_client())?;
    let keys_loaded = state.auth.wait_ready(KEY_WAIT).await;
    let authz = AuthzRequest {
        method: Some(ByteString::from(req.method.as_str())),
        path: Some(ByteString::from(req.path.as_str())),
        host: req.host.as_deref().map(ByteString::from),
        authorization: req
            .token
            .as_deref()
            .map(|t| ByteString::from(format!("Bearer {}", t.trim()))),
        cookie: None,
        src: req.src,
        unique_id: None,
    };
    let verdict = state.decide(&authz).await;
    let mut report = report(&verdict);
    if !keys_loaded {
        report["warning"] = json!("not every issuer's keys could be loaded; see the log");
    }
    Ok((verdict.allow, report))
}

/// The JSON report of one verdict: decision, rule, reason and the variables HAProxy would see.
pub fn report(v: &Verdict) -> Value {
    let mut vars = Map::new();
    vars.insert("allow".into(), json!(v.allow));
    vars.insert("status".into(), json!(v.status));
    vars.insert("reason".into(), json!(v.reason.as_str()));
    if let Some(w) = &v.www_authenticate {
        vars.insert("www_authenticate".into(), json!(w));
    }
    if let Some(id) = &v.identity {
        vars.insert("sub".into(), json!(id.sub));
        if let Some(e) = &id.email {
            vars.insert("email".into(), json!(e));
        }
        if !id.groups.is_empty() {
            vars.insert("groups".into(), json!(id.groups.join(",")));
        }
        vars.insert("issuer".into(), json!(&*id.issuer));
    }
    if let Some(r) = &v.rule {
        vars.insert("rule".into(), json!(&**r));
    }
    if let Some(p) = &v.principal {
        vars.insert("principal".into(), json!(p));
    }
    if let Some(u) = &v.upstream_authorization {
        let scheme = u.split_once(' ').map(|(s, _)| s).unwrap_or("");
        vars.insert(
            "upstream_authorization".into(),
            json!(format!("{scheme} <redacted: {} bytes>", u.len())),
        );
    }
    json!({
        "decision": if v.allow { "allow" } else { "deny" },
        "status": v.status,
        "reason": v.reason.as_str(),
        "rule": v.rule.as_deref(),
        "variables": Value::Object(vars),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::Reason;

    #[tokio::test]
    async fn embedded_default_refuses_without_token() {
        let (allow, r) = explain(
            None,
            ExplainRequest {
                method: "GET".into(),
                path: "/api/2.0/clusters/list".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(!allow);
        assert_eq!(r["reason"], "missing_token");
        assert_eq!(r["status"], 401);
        assert_eq!(
            r["variables"]["www_authenticate"],
            "Bearer realm=\"idgate\""
        );
    }

    #[test]
    fn upstream_credential_is_redacted() {
        let mut v = Verdict::allow(Reason::Ok);
        v.upstream_authorization = Some("Bearer dapi-secret-value".into());
        let text = report(&v).to_string();
        assert!(!text.contains("dapi-secret-value"), "{text}");
        assert!(text.contains("Bearer <redacted: 24 bytes>"), "{text}");
    }
}
