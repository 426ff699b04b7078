//! A fake Databricks workspace for tests: its OAuth token endpoint, the serving-endpoint REST
//! API, model serving invocations on the workspace host, and the data plane of route-optimized
//! serving endpoints. Shapes follow the Databricks SDK for Python (`databricks/sdk/service/
//! serving.py`, `data_plane.py`, `oauth.py`) and identity-and-databricks.md §4.
//!
//! Strict on purpose: every header and form field idgate sends is checked the way the
//! Databricks docs and SDK describe them, and anything else gets a Databricks-style JSON error
//! (`{"error_code": …, "message": …}`), so a success in a test proves the request was well
//! formed.
//!
//! Token endpoint, `POST /oidc/v1/token` ([`token`]):
//! - `client_credentials`: `Authorization: Basic base64(urlenc(client_id):urlenc(secret))`,
//!   form `grant_type=client_credentials&scope=<expected>`, nothing else. Issues `dbx-cc-N`.
//! - token exchange: no `Authorization`; form `grant_type=urn:…:token-exchange`,
//!   `subject_token` (non-empty), `subject_token_type=urn:…:token-type:jwt`,
//!   `scope=<expected>`, and `client_id` exactly when [`FakeDatabricks::expect_exchange_client_id`]
//!   says so (workload identity federation), never a secret. Issues `dbx-tx-N`.
//! - jwt-bearer (data-plane tokens, as the SDK's `DataPlaneEndpointTokenSource` asks): no
//!   `Authorization`; form `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`,
//!   `assertion=<a dbx-cc-/dbx-tx- token this fake issued, unexpired>`,
//!   `authorization_details=<exactly the string the serving-endpoint API gave for an existing
//!   route-optimized endpoint>`, nothing else. Issues `dbx-dp-N`, scoped to that endpoint.
//!
//! It counts requests (total, per grant type, per subject token), remembers what each issued
//! token is (its subject, its endpoint), and can be told to fail, for every grant or one grant
//! type: 503, 429 with `Retry-After`, hang, garbage, any status (e.g. 401 `invalid_client`,
//! 400 `invalid_grant`), or refuse particular subjects. [`closed_url`] gives a URL where
//! nothing listens (connection refused).
//!
//! REST ([`rest`]), on the plain-HTTP listener ([`FakeDatabricks::base_url`], what idgate talks
//! to) and, after [`FakeDatabricks::start_workspace`], on a TLS listener (what HAProxy talks to,
//! [`FakeDatabricks::upstream`]) with the same routes:
//! - `GET /api/2.0/serving-endpoints/{name}` (Bearer workspace token): `ServingEndpointDetailed`,
//!   with `route_optimized`, `endpoint_url` and `data_plane_info.query_info` for route-optimized
//!   endpoints; 404 `RESOURCE_DOES_NOT_EXIST` for unknown names; counted per name.
//! - `GET /api/2.0/serving-endpoints/{name}/openapi` (Bearer workspace token): the endpoint's
//!   OpenAPI document when the test gave it a request schema (`set_request_schema`, which
//!   also replaces it), else 404; 500/503 while `fail_openapi` says so; 403
//!   `PERMISSION_DENIED` for a token exchanged for a subject given to `deny_openapi`.
//! - `POST /serving-endpoints/{name}/invocations` (Bearer workspace token) for classic
//!   endpoints: `{"predictions": [...]}` naming the endpoint and echoing the request body.
//!   A route-optimized endpoint refuses it (400, see [`rest`]).
//! - `GET /.well-known/databricks-config` (no authentication): the SDK's `HostMetadata`.
//!
//! Data plane (after [`FakeDatabricks::start_workspace`]): a TLS listener with a certificate for
//! `*.serving.cloud.databricks.com` from the same test CA, serving
//! `POST /{workspace_id}/serving-endpoints/{name}/invocations` for route-optimized endpoints,
//! with a `dbx-dp-*` token scoped to exactly that endpoint. Every request on every listener
//! (except the token endpoint) is recorded with its headers, body and TLS SNI.
//!
//! Use with `mod support;` (`support::databricks`).
#![allow(dead_code)]

mod rest;
mod token;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::echo::{TestCerts, UPSTREAM_HOST};
use super::haproxy::Upstream;

pub use rest::{Plane, Recorded};

pub const CLIENT_ID: &str = "7a4e0c5e-1111-2222-3333-444455556666";
pub const CLIENT_SECRET: &str = "dose0123456789abcdef";
pub const GRANT_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const GRANT_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
pub const GRANT_CLIENT_CREDENTIALS: &str = "client_credentials";
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The workspace ID (the first path segment of data-plane URLs, `workspace_id` in the
/// well-known configuration).
pub const WORKSPACE_ID: &str = "1234567890123456";
pub const ACCOUNT_ID: &str = "0f1e2d3c-4b5a-4968-8776-655443322110";
/// Route-optimized endpoints are served at `<endpoint id>.<DATA_PLANE_DOMAIN>`.
pub const DATA_PLANE_DOMAIN: &str = "serving.cloud.databricks.com";

/// How to answer a token request instead of issuing a token.
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
    /// Any status with the given `error_code` (e.g. `Status(401, "invalid_client")`,
    /// `Status(400, "invalid_grant")`).
    Status(u16, &'static str),
}

/// A URL on 127.0.0.1 where nothing listens: connecting is refused.
pub fn closed_url(path: &str) -> String {
    format!("http://{}{path}", super::free_addr())
}

#[derive(Default)]
struct Knobs {
    scope: String,
    exchange_client_id: Option<String>,
    expires_in: Option<u64>,
    delay: Duration,
    fail_queue: VecDeque<Fail>,
    fail_always: Option<Fail>,
    /// Per grant type (`client_credentials`, [`GRANT_EXCHANGE`], [`GRANT_JWT_BEARER`]).
    grant_fail_queue: HashMap<String, VecDeque<Fail>>,
    grant_fail_always: HashMap<String, Fail>,
    refused_subjects: HashSet<String>,
    /// Static workspace tokens (PATs) the REST API accepts besides issued ones.
    pats: HashSet<String>,
    /// Answer every OpenAPI document request with this 5xx status.
    openapi_fail: Option<u16>,
    /// Subject tokens whose exchanged tokens may not read OpenAPI documents (403).
    openapi_denied: HashSet<String>,
}

/// What kind of token this fake issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    ClientCredentials,
    Exchange,
    /// A data-plane token scoped to one serving endpoint.
    DataPlane,
}

#[derive(Debug, Clone)]
struct Issued {
    kind: TokenKind,
    subject: Option<String>,
    /// For data-plane tokens: the endpoint name it is scoped to.
    endpoint: Option<String>,
    expires_at: Option<Instant>,
}

impl Issued {
    fn expired(&self) -> bool {
        self.expires_at.is_some_and(|t| Instant::now() >= t)
    }
}

#[derive(Default)]
struct Counts {
    by_grant: HashMap<String, u64>,
    by_subject: HashMap<String, u64>,
    issued: HashMap<String, Issued>,
    last_rejection: Option<String>,
}

/// A serving endpoint of the fake workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub name: String,
    /// 32 hex digits, as Databricks' endpoint IDs.
    pub id: String,
    /// `Some(host[:port])` for a route-optimized endpoint: where its data plane is.
    pub data_plane: Option<String>,
}

impl Endpoint {
    pub fn route_optimized(&self) -> bool {
        self.data_plane.is_some()
    }

    /// `https://<data plane>/<workspace id>/serving-endpoints/<name>/invocations`.
    pub fn endpoint_url(&self) -> Option<String> {
        self.data_plane
            .as_ref()
            .map(|a| format!("https://{a}{}", self.data_plane_path()))
    }

    /// The path part of [`Endpoint::endpoint_url`].
    pub fn data_plane_path(&self) -> String {
        format!(
            "/{WORKSPACE_ID}/serving-endpoints/{}/invocations",
            self.name
        )
    }

    /// The host part of the data plane (no port).
    pub fn data_plane_host(&self) -> Option<String> {
        let a = self.data_plane.as_ref()?;
        Some(
            a.rsplit_once(':')
                .map_or(a.as_str(), |(h, _)| h)
                .to_string(),
        )
    }

    /// The `authorization_details` string the serving-endpoint API hands out for this endpoint
    /// (a JSON array as a string, RFC 9396), which the jwt-bearer grant must carry verbatim.
    pub fn authorization_details(&self) -> String {
        serde_json::json!([{
            "type": "workspace_permission",
            "object_type": "serving-endpoints",
            "object_path": format!("/serving-endpoints/{}", self.id),
            "actions": ["query_inference_endpoint"],
        }])
        .to_string()
    }
}

#[derive(Default)]
struct Workspace {
    endpoints: BTreeMap<String, Endpoint>,
    /// Request body schemas of endpoints, served in their OpenAPI documents.
    request_schemas: HashMap<String, serde_json::Value>,
    lookups: HashMap<String, u64>,
    requests: Vec<Recorded>,
    /// The data-plane listener's port, once started.
    data_plane_port: Option<u16>,
    next_id: u64,
}

struct FakeState {
    client_id: String,
    client_secret: String,
    knobs: Mutex<Knobs>,
    counts: Mutex<Counts>,
    ws: Mutex<Workspace>,
    requests: AtomicU64,
    rejected: AtomicU64,
    seq: AtomicU64,
    failed_handshakes: AtomicU64,
}

/// The TLS side, after [`FakeDatabricks::start_workspace`].
struct TlsSide {
    workspace: SocketAddr,
    data_plane: SocketAddr,
    ca_file: PathBuf,
    _dir: TempDir,
}

/// A running fake; stops when dropped.
pub struct FakeDatabricks {
    /// `http://127.0.0.1:PORT` (plain HTTP: the agent-facing listener)
    pub base_url: String,
    /// `{base_url}/oidc/v1/token`
    pub token_url: String,
    pub addr: SocketAddr,
    state: Arc<FakeState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    tls: Option<TlsSide>,
}

impl Drop for FakeDatabricks {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl FakeDatabricks {
    /// Start on `127.0.0.1:0` with [`CLIENT_ID`]/[`CLIENT_SECRET`], scope `all-apis`,
    /// `expires_in` 3600, token exchange without `client_id`. Plain HTTP only. Needs a Tokio
    /// runtime.
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
            ws: Mutex::new(Workspace::default()),
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            failed_handshakes: AtomicU64::new(0),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let task = rest::serve_plain(listener, Arc::clone(&state));
        let base_url = format!("http://{addr}");
        FakeDatabricks {
            token_url: format!("{base_url}/oidc/v1/token"),
            base_url,
            addr,
            state,
            tasks: vec![task],
            tls: None,
        }
    }

    /// [`FakeDatabricks::start`] plus the TLS listeners: the workspace (certificate for
    /// [`UPSTREAM_HOST`] and 127.0.0.1) and the data plane (certificate for
    /// `*.`[`DATA_PLANE_DOMAIN`]), both from one fresh test CA ([`FakeDatabricks::ca_file`]).
    pub async fn start_workspace() -> FakeDatabricks {
        let mut fake = FakeDatabricks::start().await;
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let ws_certs = TestCerts::generate(dir.path(), UPSTREAM_HOST);
        let dp_certs = ws_certs.issue("data-plane", &format!("*.{DATA_PLANE_DOMAIN}"));
        let (ws_addr, ws_task) =
            rest::serve_tls(rest::Plane::Workspace, &ws_certs, Arc::clone(&fake.state)).await;
        let (dp_addr, dp_task) =
            rest::serve_tls(rest::Plane::DataPlane, &dp_certs, Arc::clone(&fake.state)).await;
        fake.state.ws.lock().unwrap().data_plane_port = Some(dp_addr.port());
        fake.tasks.push(ws_task);
        fake.tasks.push(dp_task);
        fake.tls = Some(TlsSide {
            workspace: ws_addr,
            data_plane: dp_addr,
            ca_file: ws_certs.ca.clone(),
            _dir: dir,
        });
        fake
    }

    fn tls(&self) -> &TlsSide {
        self.tls
            .as_ref()
            .expect("start the fake with FakeDatabricks::start_workspace for its TLS listeners")
    }

    /// The TLS workspace listener as HAProxy's Databricks upstream.
    pub fn upstream(&self) -> Upstream {
        Upstream {
            addr: self.tls().workspace,
            host: UPSTREAM_HOST.to_string(),
            ca_file: self.tls().ca_file.clone(),
        }
    }

    /// The CA that signed both TLS listeners' certificates.
    pub fn ca_file(&self) -> PathBuf {
        self.tls().ca_file.clone()
    }

    /// The data-plane TLS listener.
    pub fn data_plane_addr(&self) -> SocketAddr {
        self.tls().data_plane
    }

    /// TLS handshakes that failed on either TLS listener (e.g. a client that rejected the
    /// certificate).
    pub fn failed_handshakes(&self) -> u64 {
        self.state.failed_handshakes.load(Ordering::SeqCst)
    }

    fn knobs(&self) -> std::sync::MutexGuard<'_, Knobs> {
        self.state.knobs.lock().unwrap()
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.state.counts.lock().unwrap()
    }

    fn ws(&self) -> std::sync::MutexGuard<'_, Workspace> {
        self.state.ws.lock().unwrap()
    }

    /// `expires_in` of issued tokens; `None` leaves the field out.
    pub fn set_expires_in(&self, secs: Option<u64>) {
        self.knobs().expires_in = secs;
    }

    /// The scope every client_credentials and token-exchange request must carry.
    pub fn expect_scope(&self, scope: &str) {
        self.knobs().scope = scope.to_string();
    }

    /// Token exchange: `Some(id)`: the form must carry exactly this `client_id` (workload
    /// identity federation); `None`: it must not carry one (account-wide federation).
    pub fn expect_exchange_client_id(&self, id: Option<&str>) {
        self.knobs().exchange_client_id = id.map(str::to_string);
    }

    /// Delay every token answer (e.g. to make concurrent callers overlap).
    pub fn set_delay(&self, d: Duration) {
        self.knobs().delay = d;
    }

    /// Answer the next `n` token requests with `fail`.
    pub fn fail_next(&self, fail: Fail, n: usize) {
        let mut k = self.knobs();
        for _ in 0..n {
            k.fail_queue.push_back(fail.clone());
        }
    }

    /// Answer every token request with `fail` until called with `None`.
    pub fn fail_always(&self, fail: Option<Fail>) {
        self.knobs().fail_always = fail;
    }

    /// Answer the next `n` token requests of this grant type with `fail`.
    pub fn fail_next_for(&self, grant: &str, fail: Fail, n: usize) {
        let mut k = self.knobs();
        let q = k.grant_fail_queue.entry(grant.to_string()).or_default();
        for _ in 0..n {
            q.push_back(fail.clone());
        }
    }

    /// Answer every token request of this grant type with `fail` until called with `None`.
    pub fn fail_always_for(&self, grant: &str, fail: Option<Fail>) {
        let mut k = self.knobs();
        match fail {
            Some(f) => k.grant_fail_always.insert(grant.to_string(), f),
            None => k.grant_fail_always.remove(grant),
        };
    }

    /// Refuse token exchanges of this subject token (a federation policy that does not
    /// match): 400 `invalid_grant`.
    pub fn refuse_subject(&self, subject_token: &str) {
        self.knobs()
            .refused_subjects
            .insert(subject_token.to_string());
    }

    /// Accept this static token (a PAT) on the workspace REST API.
    pub fn add_pat(&self, token: &str) {
        self.knobs().pats.insert(token.to_string());
    }

    /// Make an issued token expire now (the REST API and the jwt-bearer grant refuse it).
    pub fn expire_token(&self, token: &str) {
        if let Some(i) = self.counts().issued.get_mut(token) {
            i.expires_at = Some(Instant::now());
        }
    }

    /// Every HTTP request received on the token endpoint.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Token requests refused by the strict checks (not the injected failures).
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::SeqCst)
    }

    /// Why the last strict check failed.
    pub fn last_rejection(&self) -> Option<String> {
        self.counts().last_rejection.clone()
    }

    /// Requests with this `grant_type` (`client_credentials`, [`GRANT_EXCHANGE`],
    /// [`GRANT_JWT_BEARER`]).
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
    /// client_credentials or data-plane token, `None` if this fake never issued it).
    pub fn subject_of(&self, access_token: &str) -> Option<Option<String>> {
        self.counts()
            .issued
            .get(access_token)
            .map(|i| i.subject.clone())
    }

    /// What kind of token this fake issued as `access_token` (`None`: not one of its own).
    pub fn kind_of(&self, access_token: &str) -> Option<TokenKind> {
        self.counts().issued.get(access_token).map(|i| i.kind)
    }

    /// The endpoint a data-plane token is scoped to.
    pub fn endpoint_of(&self, access_token: &str) -> Option<String> {
        self.counts()
            .issued
            .get(access_token)
            .and_then(|i| i.endpoint.clone())
    }

    /// Every data-plane token issued so far.
    pub fn data_plane_tokens(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .counts()
            .issued
            .iter()
            .filter(|(_, i)| i.kind == TokenKind::DataPlane)
            .map(|(t, _)| t.clone())
            .collect();
        v.sort();
        v
    }

    /// Adds a classic serving endpoint (queried on the workspace host).
    pub fn add_endpoint(&self, name: &str) -> Endpoint {
        self.insert_endpoint(name, None)
    }

    /// Adds a route-optimized endpoint whose data plane is `<id>.`[`DATA_PLANE_DOMAIN`] at the
    /// data-plane listener's port (443, i.e. no port in the URL, before
    /// [`FakeDatabricks::start_workspace`]).
    pub fn add_route_optimized(&self, name: &str) -> Endpoint {
        let mut ws = self.ws();
        ws.next_id += 1;
        let id = endpoint_id(ws.next_id);
        let authority = match ws.data_plane_port {
            Some(p) => format!("{id}.{DATA_PLANE_DOMAIN}:{p}"),
            None => format!("{id}.{DATA_PLANE_DOMAIN}"),
        };
        let ep = Endpoint {
            name: name.to_string(),
            id,
            data_plane: Some(authority),
        };
        ws.endpoints.insert(name.to_string(), ep.clone());
        ep
    }

    /// Adds a route-optimized endpoint whose `endpoint_url` names this `host[:port]` (e.g. a
    /// data-plane name at another listener's port, or a host outside `data_plane_hosts`).
    pub fn add_route_optimized_at(&self, name: &str, authority: &str) -> Endpoint {
        self.insert_endpoint(name, Some(authority.to_string()))
    }

    fn insert_endpoint(&self, name: &str, data_plane: Option<String>) -> Endpoint {
        let mut ws = self.ws();
        ws.next_id += 1;
        let ep = Endpoint {
            name: name.to_string(),
            id: endpoint_id(ws.next_id),
            data_plane,
        };
        ws.endpoints.insert(name.to_string(), ep.clone());
        ep
    }

    /// Gives endpoint `name` an OpenAPI document (`GET /api/2.0/serving-endpoints/{name}/openapi`)
    /// whose invocation request body has this JSON Schema ([`openapi_document`]).
    pub fn set_request_schema(&self, name: &str, schema: serde_json::Value) {
        self.ws().request_schemas.insert(name.to_string(), schema);
    }

    /// Answer every `GET .../openapi` with `Some(status)` (500 `INTERNAL_ERROR` or 503
    /// `TEMPORARILY_UNAVAILABLE`, as Databricks' JSON error) until called with `None`.
    pub fn fail_openapi(&self, status: Option<u16>) {
        assert!(
            status.is_none_or(|s| s == 500 || s == 503),
            "fail_openapi takes 500 or 503"
        );
        self.knobs().openapi_fail = status;
    }

    /// Refuse `GET .../openapi` (403 `PERMISSION_DENIED`) to tokens exchanged for this subject
    /// token (a caller without the endpoint's permission).
    pub fn deny_openapi(&self, subject_token: &str) {
        self.knobs()
            .openapi_denied
            .insert(subject_token.to_string());
    }

    /// Removes an endpoint (later lookups answer 404).
    pub fn remove_endpoint(&self, name: &str) {
        self.ws().endpoints.remove(name);
    }

    pub fn endpoint(&self, name: &str) -> Option<Endpoint> {
        self.ws().endpoints.get(name).cloned()
    }

    /// `GET /api/2.0/serving-endpoints/{name}` requests for `name`, on any listener, answered
    /// or not.
    pub fn lookups(&self, name: &str) -> u64 {
        self.ws().lookups.get(name).copied().unwrap_or(0)
    }

    /// Every REST request received (not the token endpoint), on every listener, in order.
    pub fn rest_requests(&self) -> Vec<Recorded> {
        self.ws().requests.clone()
    }

    /// The REST requests received on one listener.
    pub fn requests_on(&self, plane: Plane) -> Vec<Recorded> {
        self.ws()
            .requests
            .iter()
            .filter(|r| r.plane == plane)
            .cloned()
            .collect()
    }
}

/// An OpenAPI 3.1 document for endpoint `name` shaped as Databricks serves it: the invocation
/// path with a `post` operation whose JSON request body is `schema`, referenced from
/// `components.schemas` as generated documents do.
pub fn openapi_document(name: &str, schema: &serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "openapi": "3.1.0",
        "info": {"title": format!("Serving endpoint {name}"), "version": "1"},
        "paths": {
            format!("/serving-endpoints/{name}/invocations"): {
                "post": {
                    "requestBody": {
                        "content": {"application/json": {"schema": {
                            "$ref": "#/components/schemas/Request"
                        }}}
                    },
                    "responses": {"200": {"description": "Successful response"}}
                }
            }
        },
        "components": {"schemas": {"Request": schema}}
    })
}

fn endpoint_id(n: u64) -> String {
    format!("{:08x}{:024x}", 0x5e7f_1d00_u32, 0x000a_11ce_0000_u64 + n)
}
