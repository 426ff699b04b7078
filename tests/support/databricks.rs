//! A fake Databricks workspace token endpoint (`POST /oidc/v1/token`) for tests.
//!
//! Strict on purpose: every header and form field idgate sends is checked the way the
//! Databricks docs and SDK describe them (identity-and-databricks.md §4.1), and anything else
//! gets a `400` with a Databricks-style JSON error (`{"error_code": …, "message": …}`), so a
//! successful token in a test proves the request was well formed.
//!
//! - `client_credentials`: `Authorization: Basic base64(urlenc(client_id):urlenc(secret))`,
//!   form `grant_type=client_credentials&scope=<expected>`, nothing else.
//! - token exchange: no `Authorization`; form `grant_type=urn:…:token-exchange`,
//!   `subject_token` (non-empty), `subject_token_type=urn:…:token-type:jwt`,
//!   `scope=<expected>`, and `client_id` exactly when [`FakeDatabricks::expect_exchange_client_id`]
//!   says so (workload identity federation), never a secret.
//!
//! It counts requests (total, per grant type, per subject token), issues distinct tokens
//! (`dbx-cc-N`, `dbx-tx-N`) with a configurable `expires_in`, remembers which subject each
//! exchanged token was issued for, and can be told to fail: 503, 429 with `Retry-After`, hang,
//! garbage, any status, or refuse particular subjects.
//!
//! Use from a test crate with `#[path = "support/databricks.rs"] mod databricks;`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use base64::Engine as _;

pub const CLIENT_ID: &str = "7a4e0c5e-1111-2222-3333-444455556666";
pub const CLIENT_SECRET: &str = "dose0123456789abcdef";
pub const GRANT_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// How to answer a request instead of issuing a token.
#[derive(Debug, Clone, PartialEq)]
pub enum Fail {
    /// 503 with a Databricks JSON error.
    Unavailable,
    /// 429 with `Retry-After: <secs>`.
    TooMany { retry_after_secs: u64 },
    /// Sleep this long, then answer normally (longer than the client timeout: a hang).
    Hang(Duration),
    /// 200 with a body that is not a token response.
    Garbage,
    /// Any status with the given `error_code`.
    Status(u16, &'static str),
}

#[derive(Default)]
struct Knobs {
    scope: String,
    exchange_client_id: Option<String>,
    expires_in: Option<u64>,
    delay: Duration,
    fail_queue: VecDeque<Fail>,
    fail_always: Option<Fail>,
    refused_subjects: HashSet<String>,
}

#[derive(Default)]
struct Counts {
    by_grant: HashMap<String, u64>,
    by_subject: HashMap<String, u64>,
    issued: HashMap<String, Option<String>>,
    last_rejection: Option<String>,
}

struct FakeState {
    client_id: String,
    client_secret: String,
    knobs: Mutex<Knobs>,
    counts: Mutex<Counts>,
    requests: AtomicU64,
    rejected: AtomicU64,
    seq: AtomicU64,
}

/// A running fake; stops when dropped.
pub struct FakeDatabricks {
    /// `http://127.0.0.1:PORT`
    pub base_url: String,
    /// `{base_url}/oidc/v1/token`
    pub token_url: String,
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeDatabricks {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeDatabricks {
    /// Start on `127.0.0.1:0` with [`CLIENT_ID`]/[`CLIENT_SECRET`], scope `all-apis`,
    /// `expires_in` 3600, token exchange without `client_id`. Needs a Tokio runtime.
    pub async fn start() -> FakeDatabricks {
        FakeDatabricks::start_with(CLIENT_ID, CLIENT_SECRET).await
    }

    pub async fn start_with(client_id: &str, client_secret: &str) -> FakeDatabricks {
        let state = Arc::new(FakeState {
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            knobs: Mutex::new(Knobs {
                scope: "all-apis".into(),
                expires_in: Some(3600),
                ..Knobs::default()
            }),
            counts: Mutex::new(Counts::default()),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            seq: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let app = Router::new()
            .route("/oidc/v1/token", any(token))
            .with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let base_url = format!("http://{addr}");
        FakeDatabricks {
            token_url: format!("{base_url}/oidc/v1/token"),
            base_url,
            addr,
            state,
            task,
        }
    }

    fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.state.knobs.lock().unwrap()
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.counts.lock().unwrap()
    }

    /// `expires_in` of issued tokens; `None` leaves the field out.
    pub fn set_expires_in(&self, secs: Option<u64>) {
        self.knobs().expires_in = secs;
    }

    /// The scope every request must carry.
    pub fn expect_scope(&self, scope: &str) {
        self.knobs().scope = scope.to_string();
    }

    /// Token exchange: `Some(id)`: the form must carry exactly this `client_id` (workload
    /// identity federation); `None`: it must not carry one (account-wide federation).
    pub fn expect_exchange_client_id(&self, id: Option<&str>) {
        self.knobs().exchange_client_id = id.map(str::to_string);
    }

    /// Delay every answer (e.g. to make concurrent callers overlap).
    pub fn set_delay(&self, d: Duration) {
        self.knobs().delay = d;
    }

    /// Answer the next `n` requests with `fail`.
    pub fn fail_next(&self, fail: Fail, n: usize) {
        let mut k = self.knobs();
        for _ in 0..n {
            k.fail_queue.push_back(fail.clone());
        }
    }

    /// Answer every request with `fail` until called with `None`.
    pub fn fail_always(&self, fail: Option<Fail>) {
        self.knobs().fail_always = fail;
    }

    /// Refuse token exchanges of this subject token (a federation policy that does not
    /// match): 400 `invalid_grant`.
    pub fn refuse_subject(&self, subject_token: &str) {
        self.knobs()
            .refused_subjects
            .insert(subject_token.to_string());
    }

    /// Every HTTP request received.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Requests refused by the strict checks (not the injected failures).
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::SeqCst)
    }

    /// Why the last strict check failed.
    pub fn last_rejection(&self) -> Option<String> {
        self.counts().last_rejection.clone()
    }

    /// Requests with this `grant_type` (`client_credentials` or [`GRANT_EXCHANGE`]).
    pub fn requests_for_grant(&self, grant: &str) -> u64 {
        self.counts().by_grant.get(grant).copied().unwrap_or(0)
    }

    /// Token exchange requests with this subject token.
    pub fn requests_for_subject(&self, subject_token: &str) -> u64 {
        self.counts()
            .by_subject
            .get(subject_token)
            .copied()
            .unwrap_or(0)
    }

    /// The subject token an issued access token was exchanged for (`Some(None)` for a
    /// client_credentials token, `None` if this fake never issued it).
    pub fn subject_of(&self, access_token: &str) -> Option<Option<String>> {
        self.counts().issued.get(access_token).cloned()
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error_code": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn token(
    State(st): State<Arc<FakeState>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    st.requests.fetch_add(1, Ordering::SeqCst);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    {
        let mut c = st.counts.lock().unwrap();
        if let Some(g) = field("grant_type") {
            *c.by_grant.entry(g).or_default() += 1;
        }
        if let Some(s) = field("subject_token") {
            *c.by_subject.entry(s).or_default() += 1;
        }
    }
    let (delay, fail, expires_in) = {
        let mut k = st.knobs.lock().unwrap();
        let fail = k.fail_queue.pop_front().or_else(|| k.fail_always.clone());
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
    match check(&st, &method, &headers, &form) {
        Ok(subject) => {
            if let Some(s) = &subject {
                if st.knobs.lock().unwrap().refused_subjects.contains(s) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "no federation policy matches the subject token",
                    );
                }
            }
            let n = st.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let token = match subject {
                Some(_) => format!("dbx-tx-{n}"),
                None => format!("dbx-cc-{n}"),
            };
            st.counts
                .lock()
                .unwrap()
                .issued
                .insert(token.clone(), subject);
            let mut body = serde_json::json!({
                "access_token": token,
                "token_type": "Bearer",
                "scope": field("scope"),
            });
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

/// The strict checks. `Ok(Some(subject))` for a valid exchange, `Ok(None)` for a valid
/// client_credentials request.
fn check(
    st: &FakeState,
    method: &Method,
    headers: &HeaderMap,
    form: &[(String, String)],
) -> Result<Option<String>, (&'static str, String)> {
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
    let knobs = st.knobs.lock().unwrap();
    if field("scope") != Some(knobs.scope.as_str()) {
        return Err(("invalid_scope", format!("scope {:?}", field("scope"))));
    }
    let auth = headers.get(header::AUTHORIZATION);
    match field("grant_type") {
        Some("client_credentials") => {
            let allowed = ["grant_type", "scope"];
            if let Some((k, _)) = form.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
                return bad(&format!("unexpected field {k}"));
            }
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
            Ok(None)
        }
        Some(GRANT_EXCHANGE) => {
            if auth.is_some() {
                return bad("token exchange carries no client authentication header");
            }
            let allowed = [
                "grant_type",
                "scope",
                "subject_token",
                "subject_token_type",
                "client_id",
            ];
            if let Some((k, _)) = form.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
                return bad(&format!("unexpected field {k}"));
            }
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
            Ok(Some(subject))
        }
        other => Err(("unsupported_grant_type", format!("grant_type {other:?}"))),
    }
}
