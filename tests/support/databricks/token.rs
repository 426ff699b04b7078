//! `POST /oidc/v1/token`: client_credentials, token exchange and jwt-bearer (data-plane
//! tokens), with injected failures. See the module documentation in mod.rs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::rest::{error, Ctx};
use super::{
    Fail, FakeState, Issued, TokenKind, GRANT_CLIENT_CREDENTIALS, GRANT_EXCHANGE, GRANT_JWT_BEARER,
    TOKEN_TYPE_JWT,
};
use std::sync::atomic::Ordering;

/// What a request that passed the strict checks asks for.
enum Grant {
    ClientCredentials,
    Exchange {
        subject: String,
    },
    /// `subject`: whose token the assertion was (an exchanged token's subject).
    DataPlane {
        endpoint: String,
        subject: Option<String>,
    },
}

pub(super) async fn token(
    State(ctx): State<Ctx>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let st = &ctx.st;
    st.requests.fetch_add(1, Ordering::SeqCst);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let grant = field("grant_type").unwrap_or_default();
    {
        let mut c = st.counts.lock().unwrap();
        if !grant.is_empty() {
            *c.by_grant.entry(grant.clone()).or_default() += 1;
        }
        if let Some(s) = field("subject_token") {
            *c.by_subject.entry(s).or_default() += 1;
        }
    }
    let (delay, fail, expires_in) = {
        let mut k = st.knobs.lock().unwrap();
        let fail = k
            .fail_queue
            .pop_front()
            .or_else(|| k.grant_fail_queue.get_mut(&grant)?.pop_front())
            .or_else(|| k.grant_fail_always.get(&grant).cloned())
            .or_else(|| k.fail_always.clone());
        (k.delay, fail, k.expires_in)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    match fail {
        None => {}
        Some(Fail::Unavailable) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARILY_UNAVAILABLE",
                "The service is temporarily unavailable",
            )
        }
        Some(Fail::TooMany { retry_after_secs }) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests",
            );
            r.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after_secs.to_string().parse().unwrap(),
            );
            return r;
        }
        Some(Fail::Hang(d)) => tokio::time::sleep(d).await,
        Some(Fail::Garbage) => {
            return (StatusCode::OK, "<html>Sign in to Databricks</html>").into_response()
        }
        Some(Fail::Status(s, code)) => {
            return error(StatusCode::from_u16(s).unwrap(), code, "injected failure")
        }
    }
    match check(st, &method, &headers, &form) {
        Ok(grant) => {
            if let Grant::Exchange { subject } = &grant {
                if st.knobs.lock().unwrap().refused_subjects.contains(subject) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "no federation policy matches the subject token",
                    );
                }
            }
            let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let (token, issued) = match grant {
                Grant::ClientCredentials => (
                    format!("dbx-cc-{n}"),
                    issued(TokenKind::ClientCredentials, None, None, expires_in),
                ),
                Grant::Exchange { subject } => (
                    format!("dbx-tx-{n}"),
                    issued(TokenKind::Exchange, Some(subject), None, expires_in),
                ),
                Grant::DataPlane { endpoint, subject } => (
                    format!("dbx-dp-{n}"),
                    issued(TokenKind::DataPlane, subject, Some(endpoint), expires_in),
                ),
            };
            let kind = issued.kind;
            st.counts
                .lock()
                .unwrap()
                .issued
                .insert(token.clone(), issued);
            let mut body = serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
            });
            if kind != TokenKind::DataPlane {
                body["scope"] = field("scope").into();
            }
            if let Some(e) = expires_in {
                body["expires_in"] = e.into();
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
        Err((code, why)) => {
            st.rejected.fetch_add(1, Ordering::SeqCst);
            st.counts.lock().unwrap().last_rejection = Some(why.clone());
            error(StatusCode::BAD_REQUEST, code, &why)
        }
    }
}

fn issued(
    kind: TokenKind,
    subject: Option<String>,
    endpoint: Option<String>,
    expires_in: Option<u64>,
) -> Issued {
    Issued {
        kind,
        subject,
        endpoint,
        expires_at: expires_in.map(|s| Instant::now() + Duration::from_secs(s)),
    }
}

/// The strict checks.
fn check(
    st: &FakeState,
    method: &Method,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Grant, (&'static str, String)> {
    let bad = |why: &str| Err(("invalid_request", why.to_string()));
    if method != Method::POST {
        return bad(&format!("method {method} not allowed"));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if ct.split(';').next().map(str::trim) != Some("application/x-www-form-urlencoded") {
        return bad(&format!("content-type {ct:?}"));
    }
    let mut seen = HashSet::new();
    for (k, _) in form {
        if !seen.insert(k.as_str()) {
            return bad(&format!("duplicate field {k}"));
        }
    }
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let only = |allowed: &[&str]| -> Result<(), (&'static str, String)> {
        match form.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            Some((k, _)) => Err(("invalid_request", format!("unexpected field {k}"))),
            None => Ok(()),
        }
    };
    let auth = headers.get(header::AUTHORIZATION);
    if field("grant_type") == Some(GRANT_JWT_BEARER) {
        // Data-plane token: the SDK's DataPlaneEndpointTokenSource sends exactly these three
        // fields, no scope, no client authentication.
        if auth.is_some() {
            return bad("jwt-bearer carries no client authentication header");
        }
        only(&["grant_type", "assertion", "authorization_details"])?;
        let assertion = field("assertion").unwrap_or_default();
        let issued = st.counts.lock().unwrap().issued.get(assertion).cloned();
        let subject = match issued {
            Some(i) if i.kind != TokenKind::DataPlane && !i.expired() => i.subject,
            Some(i) if i.expired() => {
                return Err(("invalid_grant", "the assertion has expired".into()))
            }
            _ => {
                return Err((
                    "invalid_grant",
                    "the assertion is not a workspace access token".into(),
                ))
            }
        };
        let Some(details) = field("authorization_details") else {
            return bad("authorization_details missing");
        };
        let parsed: serde_json::Value = serde_json::from_str(details)
            .map_err(|e| ("invalid_request", format!("authorization_details: {e}")))?;
        let path = parsed
            .as_array()
            .filter(|a| a.len() == 1)
            .and_then(|a| a[0]["object_path"].as_str())
            .ok_or(("invalid_request", "authorization_details shape".to_string()))?;
        let ws = st.ws.lock().unwrap();
        let ep = ws
            .endpoints
            .values()
            .find(|e| format!("/serving-endpoints/{}", e.id) == path)
            .ok_or((
                "invalid_request",
                format!("authorization_details: no endpoint {path}"),
            ))?;
        if !ep.route_optimized() {
            return bad("authorization_details: the endpoint is not route-optimized");
        }
        if details != ep.authorization_details() {
            return bad("authorization_details differ from what the serving-endpoint API gave");
        }
        return Ok(Grant::DataPlane {
            endpoint: ep.name.clone(),
            subject,
        });
    }
    let knobs = st.knobs.lock().unwrap();
    if field("scope") != Some(knobs.scope.as_str()) {
        return Err(("invalid_scope", format!("scope {:?}", field("scope"))));
    }
    match field("grant_type") {
        Some(GRANT_CLIENT_CREDENTIALS) => {
            only(&["grant_type", "scope"])?;
            let Some(auth) = auth.and_then(|v| v.to_str().ok()) else {
                return Err(("invalid_client", "no client authentication".into()));
            };
            let decoded = auth
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|raw| String::from_utf8(raw).ok());
            let Some(pair) = decoded else {
                return Err(("invalid_client", "not Basic authentication".into()));
            };
            let (id, secret) = pair.split_once(':').unwrap_or((&pair, ""));
            let dec = |s: &str| -> String {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            if dec(id) != st.client_id || dec(secret) != st.client_secret {
                return Err(("invalid_client", "client authentication failed".into()));
            }
            Ok(Grant::ClientCredentials)
        }
        Some(GRANT_EXCHANGE) => {
            if auth.is_some() {
                return bad("token exchange carries no client authentication header");
            }
            only(&[
                "grant_type",
                "scope",
                "subject_token",
                "subject_token_type",
                "client_id",
            ])?;
            if field("subject_token_type") != Some(TOKEN_TYPE_JWT) {
                return bad("subject_token_type");
            }
            let subject = match field("subject_token") {
                Some(s) if !s.is_empty() => s.to_string(),
                _ => return bad("subject_token missing or empty"),
            };
            if field("client_id") != knobs.exchange_client_id.as_deref() {
                return bad(&format!(
                    "client_id {:?}, expected {:?}",
                    field("client_id"),
                    knobs.exchange_client_id
                ));
            }
            Ok(Grant::Exchange { subject })
        }
        other => Err(("unsupported_grant_type", format!("grant_type {other:?}"))),
    }
}
