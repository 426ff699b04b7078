//! A fake Microsoft Entra ID token endpoint and Azure Instance Metadata Service, strict about
//! the requests as Microsoft documents them:
//!
//! - `POST /{tenant}/oauth2/v2.0/token` ("Microsoft identity platform and the OAuth 2.0
//!   client credentials flow"): form `grant_type=client_credentials`, `scope`, and the client
//!   either by a secret (HTTP Basic `urlencode(id):urlencode(secret)`, "also supported", or
//!   `client_id`+`client_secret` in the form) or by a certificate credential
//!   (`client_id`, `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//!   `client_assertion`: a JWT whose header has `x5t#S256` of the registered certificate and whose
//!   claims are `aud` = the token URL, `iss` = `sub` = the client ID, a `jti` never seen before,
//!   `nbf`/`exp` at most 10 minutes apart). Success: `token_type`, `expires_in`,
//!   `ext_expires_in`, `access_token`. Refusals: 400/401 with `error`, `error_description`
//!   (AADSTS...), `error_codes`.
//! - `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=…[&client_id=…]`
//!   ("How to use managed identities for Azure resources on an Azure VM to acquire an access
//!   token"): header `Metadata: true` required; the answer's `expires_in` is a string.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine as _;

pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const CLIENT_ID: &str = "535fb089-9ff3-47b6-9bfb-4f1264799865";
pub const CLIENT_SECRET: &str = "qWgd~YAmab0YSkuL1qKv5bPX+/=";
pub const DATABRICKS_SCOPE: &str = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d/.default";
pub const DATABRICKS_RESOURCE: &str = "2ff814a6-3304-4ab8-85cb-cd0e6f879c1d";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// An on-behalf-of `assertion` refused with `invalid_grant` (AADSTS50013).
pub const REFUSED_USER_TOKEN: &str = "eyJ.refused-user.sig";
pub const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The certificate credential registered for [`CLIENT_ID`].
#[derive(Clone)]
pub struct Registered {
    /// PEM public key of the certificate.
    pub public_key_pem: Vec<u8>,
    /// base64url SHA-256 of the certificate's DER.
    pub x5t_s256: String,
}

#[derive(Default)]
struct Knobs {
    scope: String,
    resource: String,
    mi_client_id: Option<String>,
    cert: Option<Registered>,
    /// Status codes answered (with an Entra-shaped error) before any check, in order.
    fail_next: Vec<u16>,
}

#[derive(Default)]
struct St {
    token_url: Mutex<String>,
    knobs: Mutex<Knobs>,
    jtis: Mutex<HashSet<String>>,
    requests: AtomicU64,
    issued: AtomicU64,
    rejections: Mutex<Vec<String>>,
    /// On-behalf-of requests per user token.
    obo_assertions: Mutex<std::collections::HashMap<String, u64>>,
    /// The `alg` of every client assertion checked, in order.
    assertion_algs: Mutex<Vec<String>>,
    /// How the last accepted client authenticated: "basic", "post", "assertion", "imds".
    last_auth: Mutex<Option<&'static str>>,
}

pub struct FakeEntra {
    /// `{base_url}/{TENANT}/oauth2/v2.0/token`
    pub token_url: String,
    /// `{base_url}/metadata/identity/oauth2/token`
    pub imds_url: String,
    st: Arc<St>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeEntra {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeEntra {
    pub async fn start() -> FakeEntra {
        let st = Arc::new(St::default());
        {
            let mut k = st.knobs.lock().unwrap();
            k.scope = DATABRICKS_SCOPE.into();
            k.resource = DATABRICKS_RESOURCE.into();
        }
        let app = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .route("/metadata/identity/oauth2/token", get(imds))
            .with_state(Arc::clone(&st));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base_url = format!("http://{addr}");
        let token_url = format!("{base_url}/{TENANT}/oauth2/v2.0/token");
        *st.token_url.lock().unwrap() = token_url.clone();
        FakeEntra {
            imds_url: format!("{base_url}/metadata/identity/oauth2/token"),
            token_url,
            st,
            task,
        }
    }

    pub fn expect_scope(&self, scope: &str) {
        self.st.knobs.lock().unwrap().scope = scope.into();
    }
    pub fn expect_mi_client_id(&self, id: Option<&str>) {
        self.st.knobs.lock().unwrap().mi_client_id = id.map(str::to_string);
    }
    pub fn register_certificate(&self, cert: Registered) {
        self.st.knobs.lock().unwrap().cert = Some(cert);
    }
    pub fn fail_next(&self, statuses: &[u16]) {
        self.st.knobs.lock().unwrap().fail_next = statuses.to_vec();
    }
    pub fn requests(&self) -> u64 {
        self.st.requests.load(Ordering::SeqCst)
    }
    pub fn rejections(&self) -> Vec<String> {
        self.st.rejections.lock().unwrap().clone()
    }
    pub fn last_auth(&self) -> Option<&'static str> {
        *self.st.last_auth.lock().unwrap()
    }
    /// On-behalf-of requests accepted for `user_token`.
    pub fn obo_requests_for(&self, user_token: &str) -> u64 {
        self.st
            .obo_assertions
            .lock()
            .unwrap()
            .get(user_token)
            .copied()
            .unwrap_or(0)
    }
    /// The `alg` of every client assertion checked, in order ("PS256", "RS256").
    pub fn assertion_algorithms(&self) -> Vec<String> {
        self.st.assertion_algs.lock().unwrap().clone()
    }
    /// Distinct assertion `jti`s seen (each checked assertion's, failed requests' too).
    pub fn assertions(&self) -> usize {
        self.st.jtis.lock().unwrap().len()
    }
}

fn entra_error(status: u16, error: &str, code: u32, text: &str) -> Response {
    let body = serde_json::json!({
        "error": error,
        "error_description": format!("AADSTS{code}: {text}\r\nTrace ID: 255d1aef-8c98-452f-ac51-23d051240864"),
        "error_codes": [code],
        "timestamp": "2026-01-09 02:02:12Z",
        "trace_id": "255d1aef-8c98-452f-ac51-23d051240864",
        "correlation_id": "fb3d2015-bc17-4bb9-bb85-30c5cf1aaaa7",
    });
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn reject(st: &St, status: u16, error: &str, code: u32, why: &str) -> Response {
    st.rejections.lock().unwrap().push(why.to_string());
    entra_error(status, error, code, why)
}

fn issue(st: &St, auth: &'static str, expires_as_string: bool) -> Response {
    let n = st.issued.fetch_add(1, Ordering::SeqCst) + 1;
    *st.last_auth.lock().unwrap() = Some(auth);
    let token = format!("eyJ0eXAiOiJKV1Qi.entra-{auth}-{n}.sig");
    let body = if expires_as_string {
        serde_json::json!({
            "access_token": token, "refresh_token": "", "expires_in": "3599",
            "expires_on": "1506484173", "not_before": "1506480273",
            "resource": st.knobs.lock().unwrap().resource, "token_type": "Bearer",
        })
    } else {
        serde_json::json!({
            "token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599,
            "access_token": token,
        })
    };
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn injected(st: &St) -> Option<Response> {
    let mut k = st.knobs.lock().unwrap();
    if k.fail_next.is_empty() {
        return None;
    }
    let s = k.fail_next.remove(0);
    Some(entra_error(s, "temporarily_unavailable", 50001, "injected"))
}

async fn token(
    State(st): State<Arc<St>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    if tenant != TENANT {
        return reject(&st, 400, "invalid_request", 90002, "tenant not found");
    }
    if headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("application/x-www-form-urlencoded")
    {
        return reject(&st, 400, "invalid_request", 900144, "not a form");
    }
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        let mut it = form.iter().filter(|(k, _)| k == name);
        let v = it.next().map(|(_, v)| v.clone());
        if it.next().is_some() {
            return Some(String::from("\0duplicate"));
        }
        v
    };
    let obo = match field("grant_type").as_deref() {
        Some("client_credentials") => None,
        Some(GRANT_JWT_BEARER) => {
            if field("requested_token_use").as_deref() != Some("on_behalf_of") {
                return reject(&st, 400, "invalid_request", 900144, "requested_token_use");
            }
            match field("assertion") {
                Some(a) if !a.is_empty() => Some(a),
                _ => return reject(&st, 400, "invalid_request", 900144, "assertion"),
            }
        }
        _ => return reject(&st, 400, "unsupported_grant_type", 70003, "grant_type"),
    };
    let (scope, cert) = {
        let k = st.knobs.lock().unwrap();
        (k.scope.clone(), k.cert.clone())
    };
    if field("scope").as_deref() != Some(scope.as_str()) {
        return reject(&st, 400, "invalid_scope", 70011, "scope");
    }
    let basic = headers.get(header::AUTHORIZATION);
    let auth = match (basic, field("client_assertion_type")) {
        (Some(b), None) => {
            let ok = b
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Basic "))
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .and_then(|raw| String::from_utf8(raw).ok())
                .and_then(|pair| {
                    let (id, secret) = pair.split_once(':')?;
                    let dec = |s: &str| {
                        url::form_urlencoded::parse(format!("x={s}").as_bytes())
                            .next()
                            .map(|(_, v)| v.into_owned())
                    };
                    Some((dec(id)?, dec(secret)?))
                })
                == Some((CLIENT_ID.to_string(), CLIENT_SECRET.to_string()));
            // OBO lists client_id as required; with Basic it may be in the form too.
            let id_ok = match field("client_id") {
                None => obo.is_none(),
                Some(id) => obo.is_some() && id == CLIENT_ID,
            };
            if !ok || !id_ok || field("client_secret").is_some() {
                return reject(
                    &st,
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                );
            }
            "basic"
        }
        (None, None) => {
            if field("client_id").as_deref() != Some(CLIENT_ID)
                || field("client_secret").as_deref() != Some(CLIENT_SECRET)
            {
                return reject(
                    &st,
                    401,
                    "invalid_client",
                    7000215,
                    "Invalid client secret provided.",
                );
            }
            "post"
        }
        (None, Some(t)) => {
            if t != ASSERTION_TYPE || field("client_secret").is_some() {
                return reject(&st, 400, "invalid_request", 50027, "client_assertion_type");
            }
            if field("client_id").as_deref() != Some(CLIENT_ID) {
                return reject(&st, 400, "invalid_client", 700016, "client_id");
            }
            let Some(cert) = cert else {
                return reject(
                    &st,
                    401,
                    "invalid_client",
                    700027,
                    "no certificate registered",
                );
            };
            let token_url = st.token_url.lock().unwrap().clone();
            if let Err(why) = check_assertion(
                &st,
                &field("client_assertion").unwrap_or_default(),
                &cert,
                &token_url,
            ) {
                return reject(&st, 401, "invalid_client", 700027, why);
            }
            "assertion"
        }
        (Some(_), Some(_)) => {
            return reject(
                &st,
                400,
                "invalid_request",
                50027,
                "two client authentications",
            )
        }
    };
    // Injected failures come after the checks: an assertion's jti is spent even then.
    if let Some(r) = injected(&st) {
        return r;
    }
    if let Some(user_token) = obo {
        if user_token == REFUSED_USER_TOKEN {
            return reject(
                &st,
                400,
                "invalid_grant",
                50013,
                "Assertion failed signature validation.",
            );
        }
        *st.obo_assertions
            .lock()
            .unwrap()
            .entry(user_token)
            .or_default() += 1;
        return issue(
            &st,
            if auth == "basic" {
                "obo-basic"
            } else {
                "obo-assertion"
            },
            false,
        );
    }
    issue(&st, auth, false)
}

fn check_assertion(
    st: &St,
    jwt: &str,
    cert: &Registered,
    token_url: &str,
) -> Result<(), &'static str> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "assertion is not a JWT")?;
    st.assertion_algs
        .lock()
        .unwrap()
        .push(format!("{:?}", header.alg));
    if !matches!(
        header.alg,
        jsonwebtoken::Algorithm::PS256 | jsonwebtoken::Algorithm::RS256
    ) {
        return Err("alg is not PS256 or RS256");
    }
    if header.typ.as_deref() != Some("JWT") {
        return Err("typ is not JWT");
    }
    if header.x5t_s256.as_deref() != Some(cert.x5t_s256.as_str()) {
        return Err("x5t#S256 does not name the registered certificate");
    }
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(&cert.public_key_pem).map_err(|_| "key")?;
    let mut v = jsonwebtoken::Validation::new(header.alg);
    v.set_audience(&[token_url]);
    v.set_issuer(&[CLIENT_ID]);
    v.sub = Some(CLIENT_ID.into());
    v.validate_nbf = true;
    v.leeway = 0;
    v.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
    let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
        .map_err(|_| "signature or claims do not verify")?;
    let c = &data.claims;
    let num = |k: &str| c.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    if num("exp").saturating_sub(num("nbf")) > 600 {
        return Err("exp more than 10 minutes after nbf");
    }
    let Some(jti) = c.get("jti").and_then(|v| v.as_str()) else {
        return Err("no jti");
    };
    if !st.jtis.lock().unwrap().insert(jti.to_string()) {
        return Err("jti replayed");
    }
    Ok(())
}

async fn imds(State(st): State<Arc<St>>, RawQuery(q): RawQuery, headers: HeaderMap) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = injected(&st) {
        return r;
    }
    if headers.get("metadata").and_then(|v| v.to_str().ok()) != Some("true") {
        return reject(
            &st,
            400,
            "invalid_request",
            0,
            "Required metadata header not specified",
        );
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return reject(&st, 400, "invalid_request", 0, "unexpected Authorization");
    }
    let q: Vec<(String, String)> = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let (resource, id) = {
        let k = st.knobs.lock().unwrap();
        (k.resource.clone(), k.mi_client_id.clone())
    };
    if get("api-version").as_deref() != Some("2018-02-01") {
        return reject(&st, 400, "invalid_request", 0, "api-version");
    }
    if get("resource") != Some(resource) {
        return reject(&st, 400, "invalid_resource", 0, "resource");
    }
    if get("client_id") != id {
        return reject(&st, 400, "invalid_request", 0, "Identity not found");
    }
    if q.len() != 2 + usize::from(id.is_some()) {
        return reject(
            &st,
            400,
            "invalid_request",
            0,
            "unexpected query parameters",
        );
    }
    issue(&st, "imds", true)
}
