//! `idgate explain`: evaluate one request exactly as the agent would and print the decision,
//! the matched rule, the reason and every variable as JSON.
//!
//! It builds the same [`State`] as `idgate run` (fetching JWKS as needed, waiting a bounded
//! time for the keys), so "why was this request refused?" gets the agent's own answer. The
//! variables are rendered by the agent's own renderer ([`contract::render`], with the
//! configured `[spop] max_frame_size`), so the report shows what the ACK carries: a request the
//! agent would refuse while rendering (an identity or upstream credential it cannot send, or
//! that does not fit the frame) is reported as the refusal HAProxy sees. The upstream
//! credential is redacted in the output: explain is a diagnostic tool and its output ends up
//! in tickets and chat logs.

use std::borrow::Borrow;
use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use bytestring::ByteString;
use serde_json::{json, Map, Value};

use crate::config::{Config, ConfigError};
use crate::contract::{self, Answer, Var};
use crate::decision::{AuthzRequest, Verdict};
use crate::engine::{Engine, State, Upstreams};
use crate::spop::TypedValue;

/// How long explain waits for every issuer's keys before deciding anyway.
pub(crate) const KEY_WAIT: Duration = Duration::from_secs(10);

/// One request to explain.
#[derive(Debug, Default, Clone)]
pub struct ExplainRequest {
    pub method: String,
    pub path: String,
    pub host: Option<String>,
    pub token: Option<String>,
    pub src: Option<IpAddr>,
    /// Decide policy only: do not contact upstream token endpoints (the rule's upstream is
    /// named in the report instead of its credential).
    pub policy_only: bool,
    /// The body, sent as `authorize-serving` sends it (`body`, its length as `body_size`,
    /// `application/json`).
    pub body: Option<Vec<u8>>,
}

/// Build the state from `config_path` (or the embedded default), decide, and return the JSON
/// report and whether the request is allowed (as the ACK says).
pub async fn explain(
    config_path: Option<&Path>,
    req: ExplainRequest,
) -> Result<(bool, Value), ConfigError> {
    let (config, source) = match config_path {
        Some(p) => (Config::load(p)?, p.display().to_string()),
        None => (Config::embedded(), "<embedded default>".to_string()),
    };
    // What the agent offers in its HELLO; HAProxy's default (16380) unless configured.
    let max_frame_size = config.spop.max_frame_size;
    let state = State::build(config, &source, None, Engine::http_client())?;
    // The revocations in force, as the agent knows them (an unreachable store: none, as an
    // agent that never reached it, and said so).
    if let Some(store) = state.config.shared.revocation_store() {
        match crate::revocation::list(&store).await {
            Ok(entries) => state
                .revocations
                .merge(entries, crate::revocation::Source::Resync),
            Err(e) => tracing::warn!("revocations not read, none applied: {e}"),
        }
    }
    // Wait only for the keys this request needs: none without a token, else those of the
    // issuer the token names (read unverified, only to pick whose keys to wait for).
    let keys_loaded = match req.token.as_deref().and_then(unverified_iss) {
        Some(iss) => state.auth.wait_ready_for(&iss, KEY_WAIT).await,
        None => true,
    };
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
        body_size: req.body.as_ref().map(|b| b.len() as u64),
        content_type: req
            .body
            .as_ref()
            .map(|_| ByteString::from_static("application/json")),
        body: req.body.clone().map(bytes::Bytes::from),
    };
    let upstreams = if req.policy_only {
        Upstreams::Skip
    } else {
        Upstreams::Fetch
    };
    let verdict = state
        .decide_with(&authz, std::time::Instant::now(), upstreams)
        .await;
    let skipped_upstream = match (req.policy_only, verdict.allow, verdict.rule.as_deref()) {
        (true, true, Some(name)) => state
            .policy
            .rules()
            .iter()
            .find(|r| &*r.name == name)
            .and_then(|r| r.upstream.clone()),
        _ => None,
    };
    let closest = closest_rules(&state, &req, &verdict);
    let issuer_check = match (
        verdict.reason,
        req.token.as_deref().and_then(unverified_iss),
    ) {
        (crate::decision::Reason::UnknownIssuer, Some(iss)) => Some(issuer_check(&state, &iss)),
        _ => None,
    };
    let introspection = req.token.as_deref().and_then(|t| {
        let iss = unverified_iss(t);
        let (name, url) = state.auth.introspection_for(t.trim(), iss.as_deref())?;
        Some(introspection_report(name, url, &verdict))
    });
    let answer = contract::render(verdict, max_frame_size);
    let mut report = report(&answer);
    if !closest.is_empty() {
        report["closest_rules"] = Value::Array(closest);
    }
    if let Some(i) = introspection {
        report["introspection"] = i;
    }
    if let Some(check) = issuer_check {
        report["issuer_check"] = check;
    }
    if let Some(up) = skipped_upstream {
        report["upstream"] = json!({
            "name": &*up,
            "contacted": false,
            "note": "--policy-only: the agent would add this upstream's credential \
                     (upstream_authorization) or answer 503 upstream_unavailable",
        });
    }
    if !keys_loaded {
        report["warning"] = json!("not every issuer's keys could be loaded; see the log");
    }
    Ok((answer.allowed(), report))
}

/// For a refusal no rule explains (no match, or no valid token): the rules that came
/// closest, each with the first condition that failed, e.g. a rule whose `hosts` did not
/// match because no `--host` was given.
fn closest_rules(state: &State, req: &ExplainRequest, verdict: &Verdict) -> Vec<Value> {
    use crate::decision::Reason;
    let identity = match verdict.reason {
        Reason::NoMatchingRule => verdict.identity.as_deref(),
        r if verdict.status == 401 && r != Reason::Ok => None,
        _ => return Vec::new(),
    };
    let Ok(path) = state.normalize_path(&req.path) else {
        return Vec::new();
    };
    let view = crate::policy::RequestView {
        method: &req.method,
        path: &path,
        host: req.host.as_deref(),
        src: req.src,
    };
    state
        .policy
        .closest(&view, identity, 3)
        .into_iter()
        .map(|m| {
            let why = match m.failed {
                "hosts" if req.host.is_none() => "hosts: no Host given (--host)".to_owned(),
                "token" => "needs a valid token".to_owned(),
                f => format!("{f} did not match"),
            };
            json!({"rule": &*m.rule, "index": m.index, "failed": m.failed,
                   "conditions_held": m.passed, "why": why})
        })
        .collect()
}

/// For an `unknown_issuer` refusal: the token's `iss` (escaped and capped: it is the caller's
/// text), the configured issuer it nearly names (trailing slash or case), and the sentence the
/// agent logs. The `description` variable stays the fixed text the client sees.
fn issuer_check(state: &State, iss: &str) -> Value {
    use crate::auth::unknown;
    let configured: Vec<&crate::config::IssuerConfig> = state.config.issuers.iter().collect();
    let (token_iss, capped) = unknown::escape_iss(iss);
    let mut check = json!({
        "token_iss": token_iss,
        "why": unknown::explain(iss, &configured),
    });
    if capped {
        check["token_iss_truncated"] = json!(true);
    }
    if let Some(ic) = unknown::did_you_mean(iss, configured.iter().copied()) {
        check["did_you_mean"] = json!({"issuer": ic.name, "iss": ic.issuer.as_str()});
    }
    check
}

/// What the IdP's introspection endpoint said about the token (never the token itself): the
/// issuer asked, its endpoint, and the outcome.
fn introspection_report(issuer: &str, url: &str, verdict: &Verdict) -> Value {
    use crate::decision::Reason;
    let outcome = match (&verdict.identity, verdict.reason) {
        (Some(_), _) => "active: the answer's claims passed the issuer's checks",
        (None, Reason::UpstreamUnavailable) => {
            "no answer: the endpoint is unreachable, timed out or failed (see the log)"
        }
        (None, Reason::UpstreamRefused) => {
            "refused: the endpoint refused idgate's client (check client_id, \
             client_secret_file and client_auth; see the log)"
        }
        (None, Reason::BadSignature) => "inactive: the IdP does not vouch for this token",
        (None, Reason::Expired) => "expired: the token's exp has passed",
        (None, _) => "active, but the answer's claims were refused (see reason)",
    };
    json!({"issuer": issuer, "endpoint": url, "outcome": outcome})
}

/// The `iss` of a JWT, read without verifying anything (to choose which keys to wait for).
fn unverified_iss(token: &str) -> Option<String> {
    use base64::Engine as _;
    let payload = token.trim().split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_owned)
}

/// The JSON report of one rendered verdict: decision, status and reason as HAProxy sees them,
/// the matched rule, and the variables of the ACK (`upstream_authorization` redacted).
pub(crate) fn report<V: Borrow<Verdict>>(answer: &Answer<V>) -> Value {
    let mut vars = Map::new();
    for a in answer.actions().iter() {
        let value = match a.value {
            TypedValue::Bool(b) => json!(b),
            TypedValue::Int64(i) => json!(i),
            TypedValue::Str(s) if a.name == Var::UpstreamAuthorization.name() => {
                let scheme = s.split_once(' ').map(|(s, _)| s).unwrap_or("");
                json!(format!("{scheme} <redacted: {} bytes>", s.len()))
            }
            TypedValue::Str(s) => json!(s),
        };
        vars.insert(a.name.to_owned(), value);
    }
    json!({
        "decision": if answer.allowed() { "allow" } else { "deny" },
        "status": answer.status(),
        "reason": answer.reason().as_str(),
        "rule": answer.verdict().rule.as_deref(),
        "variables": Value::Object(vars),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::BytesMut;

    use super::*;
    use crate::decision::{Identity, Reason, Rejection};
    use crate::spop::{frame, Action, TypedData};

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
        let text = report(&contract::render(&v, 16380)).to_string();
        assert!(!text.contains("dapi-secret-value"), "{text}");
        assert!(text.contains("Bearer <redacted: 24 bytes>"), "{text}");
    }

    fn identity(sub: &str, groups: &[&str]) -> Arc<Identity> {
        Arc::new(Identity {
            issuer: "corp".into(),
            sub: sub.into(),
            user: None,
            email: Some("a@example.com".into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            scopes: vec![],
            expires_at: 0,
            issued_at: None,
            jti: None,
            claims: Default::default(),
        })
    }

    /// The report's variables are the ACK's, value for value, for verdicts the renderer
    /// changes: identity values it cannot send, a credential that is not header-safe or does
    /// not fit, a frame too small for the identity, a challenge with control characters.
    /// (tests/explain_agrees.rs compares the binaries for requests the engine can produce.)
    #[test]
    fn report_shows_what_the_ack_carries() {
        let allowed = |id: Arc<Identity>, ua: Option<&str>| Verdict {
            identity: Some(id),
            rule: Some("r".into()),
            principal: Some("p".into()),
            upstream_authorization: ua.map(Into::into),
            ..Verdict::allow(Reason::Ok)
        };
        let ok = identity("alice", &["eng", "ml"]);
        let cases: Vec<(&str, Verdict, u32, u16)> = vec![
            (
                "allowed",
                allowed(ok.clone(), Some("Bearer dapi1")),
                16380,
                200,
            ),
            (
                "credential with CR LF",
                allowed(ok.clone(), Some("Bearer a\r\nX: y")),
                16380,
                503,
            ),
            (
                "credential too big for the frame",
                allowed(ok.clone(), Some(&format!("Bearer {}", "t".repeat(400)))),
                256,
                503,
            ),
            (
                "identity too big for the frame",
                allowed(identity("alice", &["a-long-group-name"; 12]), None),
                256,
                500,
            ),
            (
                "sub with a control character",
                allowed(identity("admin\u{0}", &[]), None),
                16380,
                500,
            ),
            (
                "refusal with unfiltered groups and a bad sub",
                Verdict {
                    identity: Some(identity("bob\u{1b}", &["ok", "a,b", "bad\n"])),
                    rule: Some("deny".into()),
                    ..Verdict::deny(Reason::DeniedByRule)
                },
                16380,
                403,
            ),
            (
                "challenge with control characters",
                Verdict::unauthorized(
                    "idgate",
                    &Rejection::new(Reason::Expired, "token\r\nexpired"),
                ),
                16380,
                401,
            ),
        ];
        for (case, v, mfs, status) in cases {
            let answer = contract::render(&v, mfs);
            let r = report(&answer);
            // What the agent would send, decoded from the ACK's bytes.
            let mut b = BytesMut::new();
            frame::encode_ack(&mut b, 1, 1, &answer.actions());
            let mut body = b.freeze().slice(4..);
            frame::Header::decode(&mut body).unwrap();
            let acked = frame::decode_actions(body).unwrap();
            let vars = r["variables"].as_object().unwrap();
            assert_eq!(vars.len(), acked.len(), "{case}: {r}");
            for a in acked {
                let Action::SetVar { name, value, .. } = a else {
                    panic!()
                };
                let name = std::str::from_utf8(&name).unwrap();
                let shown = &vars[name];
                match value {
                    TypedData::Bool(b) => assert_eq!(shown, &json!(b), "{case}: {name}"),
                    TypedData::Int64(i) => assert_eq!(shown, &json!(i), "{case}: {name}"),
                    TypedData::String(s) if name == "upstream_authorization" => assert_eq!(
                        shown,
                        &json!(format!("Bearer <redacted: {} bytes>", s.len())),
                        "{case}"
                    ),
                    TypedData::String(s) => {
                        assert_eq!(shown, &json!(std::str::from_utf8(&s).unwrap()), "{case}")
                    }
                    other => panic!("{case}: {name} = {other:?}"),
                }
            }
            assert_eq!(r["status"], json!(status), "{case}: {r}");
            assert_eq!(r["variables"]["status"], json!(status), "{case}");
            let decision = if status == 200 { "allow" } else { "deny" };
            assert_eq!(r["decision"], json!(decision), "{case}");
            assert_eq!(r["variables"]["allow"], json!(status == 200), "{case}");
        }
    }
}
