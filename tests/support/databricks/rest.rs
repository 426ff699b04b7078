//! The fake's listeners and REST routes (see the module documentation in mod.rs).
//!
//! A route-optimized endpoint queried on the workspace host (`POST
//! /serving-endpoints/{name}/invocations`) is refused with 400 `INVALID_PARAMETER_VALUE`:
//! Databricks documents that endpoints created after 2025-09-22 can only be queried through
//! their route-optimized URL, but not the exact error; this status and code are this fake's
//! choice (docs/databricks.md lists it among the things verified only against the fake).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::IncomingStream;
use axum::Router;
use tokio::net::{TcpListener, TcpStream};

use super::super::echo::{header_pairs, server_tls_config, target, TestCerts};
use super::{FakeState, TokenKind, ACCOUNT_ID, WORKSPACE_ID};

/// Bound on one TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which listener a request arrived on.
#[allow(clippy::enum_variant_names)] // DataPlane is the Databricks name
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// The plain-HTTP listener idgate talks to.
    Agent,
    /// The workspace host over TLS (HAProxy's upstream).
    Workspace,
    /// The data plane of route-optimized endpoints over TLS.
    DataPlane,
}

/// One REST request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub plane: Plane,
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// Every header field in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The TLS server name the client sent (TLS listeners).
    pub sni: Option<String>,
    /// The status the fake answered.
    pub status: u16,
}

impl Recorded {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The bearer token of its (single) Authorization header.
    pub fn bearer(&self) -> Option<&str> {
        self.header("authorization")?.strip_prefix("Bearer ")
    }
}

/// Handler state: the fake and the listener.
#[derive(Clone)]
pub(super) struct Ctx {
    pub st: Arc<FakeState>,
    pub plane: Plane,
}

/// Per-connection information handed to the handlers.
#[derive(Debug, Clone)]
pub(super) struct Conn {
    sni: Option<String>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Conn {
    fn connect_info(_: IncomingStream<'_, TcpListener>) -> Self {
        Conn { sni: None }
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A Databricks JSON error.
pub(super) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({ "error_code": code, "message": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn json(value: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn router(ctx: Ctx) -> Router {
    let r = match ctx.plane {
        Plane::Agent | Plane::Workspace => Router::new()
            .route("/oidc/v1/token", any(super::token::token))
            .route("/api/2.0/serving-endpoints/{name}", get(get_endpoint))
            .route(
                "/api/2.0/serving-endpoints/{name}/openapi",
                get(get_openapi),
            )
            .route(
                "/serving-endpoints/{name}/invocations",
                post(invoke_workspace),
            )
            .route("/.well-known/databricks-config", get(well_known)),
        Plane::DataPlane => Router::new().route(
            "/{workspace}/serving-endpoints/{name}/invocations",
            post(invoke_data_plane),
        ),
    };
    r.fallback(not_found).with_state(ctx)
}

pub(super) fn serve_plain(
    listener: TcpListener,
    st: Arc<FakeState>,
) -> tokio::task::JoinHandle<()> {
    let app = router(Ctx {
        st,
        plane: Plane::Agent,
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Conn>()).await;
    })
}

pub(super) async fn serve_tls(
    plane: Plane,
    certs: &TestCerts,
    st: Arc<FakeState>,
) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let inner = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = inner.local_addr().expect("local addr");
    let listener = TlsListener {
        inner,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server_tls_config(certs))),
        st: Arc::clone(&st),
    };
    let app = router(Ctx { st, plane });
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app.into_make_service_with_connect_info::<Conn>()).await;
    });
    (addr, task)
}

/// Accepts TCP connections and completes the TLS handshake (bounded) before handing them to
/// axum, remembering the SNI.
pub(super) struct TlsListener {
    inner: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    st: Arc<FakeState>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((tcp, _)) = self.inner.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                    return (tls, Conn { sni });
                }
                _ => {
                    self.st.failed_handshakes.fetch_add(1, Ordering::SeqCst);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(Conn { sni: None })
    }
}

/// Record the request and the status of `resp`, and return `resp`: the last step of every handler.
fn record(
    ctx: &Ctx,
    conn: &Conn,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    resp: Response,
) -> Response {
    let status = resp.status().as_u16();
    let rec = Recorded {
        plane: ctx.plane,
        method: method.to_string(),
        path: target(uri),
        headers: header_pairs(headers),
        body: String::from_utf8_lossy(body).into_owned(),
        sni: conn.sni.clone(),
        status,
    };
    ctx.st.ws.lock().unwrap().requests.push(rec);
    resp
}

/// The workspace token of the request: a `dbx-cc-`/`dbx-tx-` token this fake issued and that
/// has not expired, or a PAT added with `add_pat`. Else why not (see [`unauthenticated`]).
fn workspace_auth(st: &FakeState, headers: &HeaderMap) -> Result<String, &'static str> {
    let token = bearer(headers).ok_or("no bearer token")?;
    if st.knobs.lock().unwrap().pats.contains(&token) {
        return Ok(token);
    }
    match st.counts.lock().unwrap().issued.get(&token) {
        Some(i) if i.kind == TokenKind::DataPlane => {
            Err("a data-plane token is not valid on the workspace")
        }
        Some(i) if i.expired() => Err("the token has expired"),
        Some(_) => Ok(token),
        None => Err("unknown token"),
    }
}

/// 401 as Databricks answers a missing or unusable credential.
fn unauthenticated(why: &str) -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        &format!("Credential was not sent or was of an unsupported type for this API: {why}"),
    )
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let all: Vec<_> = headers.get_all(header::AUTHORIZATION).iter().collect();
    if all.len() != 1 {
        return None;
    }
    all[0]
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
}

/// `GET /api/2.0/serving-endpoints/{name}`: `ServingEndpointDetailed`.
async fn get_endpoint(
    State(ctx): State<Ctx>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    *ctx.st
        .ws
        .lock()
        .unwrap()
        .lookups
        .entry(name.clone())
        .or_default() += 1;
    let resp = match workspace_auth(&ctx.st, &headers) {
        Err(why) => unauthenticated(why),
        Ok(_) => match ctx.st.ws.lock().unwrap().endpoints.get(&name).cloned() {
            None => error(
                StatusCode::NOT_FOUND,
                "RESOURCE_DOES_NOT_EXIST",
                &format!("Endpoint with name '{name}' does not exist."),
            ),
            Some(ep) => {
                let mut body = serde_json::json!({
                    "name": ep.name,
                    "id": ep.id,
                    "creator": "someone@example.com",
                    "creation_timestamp": 1_735_689_600_000_u64,
                    "last_updated_timestamp": 1_735_689_600_000_u64,
                    "state": {"ready": "READY", "config_update": "NOT_UPDATING"},
                    "config": {
                        "served_entities": [{
                            "name": format!("{}-1", ep.name),
                            "entity_name": "main.default.model",
                            "entity_version": "1",
                            "workload_size": "Small",
                            "scale_to_zero_enabled": true,
                        }],
                        "config_version": 1,
                    },
                    "permission_level": "CAN_QUERY",
                });
                if let Some(url) = ep.endpoint_url() {
                    body["route_optimized"] = true.into();
                    body["endpoint_url"] = url.clone().into();
                    body["data_plane_info"] = serde_json::json!({
                        "query_info": {
                            "endpoint_url": url,
                            "authorization_details": ep.authorization_details(),
                        }
                    });
                }
                json(body)
            }
        },
    };
    record(&ctx, &conn, &method, &uri, &headers, &[], resp)
}

/// `GET /api/2.0/serving-endpoints/{name}/openapi`: the endpoint's OpenAPI document, as
/// Databricks derives it from the model signature (set with `set_request_schema`; 404 for an
/// endpoint without one); the failures `fail_openapi` and `deny_openapi` ask for.
async fn get_openapi(
    State(ctx): State<Ctx>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let resp = match workspace_auth(&ctx.st, &headers) {
        Err(why) => unauthenticated(why),
        Ok(token) => openapi(&ctx.st, &name, &token),
    };
    record(&ctx, &conn, &method, &uri, &headers, &[], resp)
}

fn openapi(st: &FakeState, name: &str, token: &str) -> Response {
    let subject = st
        .counts
        .lock()
        .unwrap()
        .issued
        .get(token)
        .and_then(|i| i.subject.clone());
    let (fail, denied) = {
        let k = st.knobs.lock().unwrap();
        let denied = subject.is_some_and(|s| k.openapi_denied.contains(&s));
        (k.openapi_fail, denied)
    };
    match fail {
        Some(500) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "INTERNAL_ERROR",
                "Internal error.",
            )
        }
        Some(_) => {
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "TEMPORARILY_UNAVAILABLE",
                "The service is temporarily unavailable.",
            )
        }
        None => {}
    }
    if denied {
        return error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            &format!("User does not have permission to query endpoint '{name}'."),
        );
    }
    let ws = st.ws.lock().unwrap();
    match (ws.endpoints.get(name), ws.request_schemas.get(name)) {
        (Some(_), Some(schema)) => json(super::openapi_document(name, schema)),
        _ => error(
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("No OpenAPI schema for endpoint '{name}'."),
        ),
    }
}

/// `POST /serving-endpoints/{name}/invocations` on the workspace host.
async fn invoke_workspace(
    State(ctx): State<Ctx>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = match workspace_auth(&ctx.st, &headers) {
        Err(why) => unauthenticated(why),
        Ok(_) => match ctx.st.ws.lock().unwrap().endpoints.get(&name).cloned() {
            None => error(
                StatusCode::NOT_FOUND,
                "RESOURCE_DOES_NOT_EXIST",
                &format!("Endpoint with name '{name}' does not exist."),
            ),
            Some(ep) if ep.route_optimized() => error(
                StatusCode::BAD_REQUEST,
                "INVALID_PARAMETER_VALUE",
                "This endpoint is route-optimized: query it through its route-optimized URL",
            ),
            Some(_) => predictions(&name, "workspace", &body),
        },
    };
    record(&ctx, &conn, &method, &uri, &headers, &body, resp)
}

/// `POST /{workspace}/serving-endpoints/{name}/invocations` on the data plane.
async fn invoke_data_plane(
    State(ctx): State<Ctx>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    Path((workspace, name)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = data_plane_answer(&ctx, &workspace, &name, &headers, &body);
    record(&ctx, &conn, &method, &uri, &headers, &body, resp)
}

fn data_plane_answer(
    ctx: &Ctx,
    workspace: &str,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    let not_found = || {
        error(
            StatusCode::NOT_FOUND,
            "RESOURCE_DOES_NOT_EXIST",
            &format!("Endpoint with name '{name}' does not exist."),
        )
    };
    let ep = ctx.st.ws.lock().unwrap().endpoints.get(name).cloned();
    let Some(ep) = ep.filter(|e| e.route_optimized() && workspace == WORKSPACE_ID) else {
        return not_found();
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if Some(host.to_ascii_lowercase()) != ep.data_plane {
        return not_found();
    }
    let Some(token) = bearer(headers) else {
        return error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Credential was not sent or was of an unsupported type for this API.",
        );
    };
    let issued = ctx.st.counts.lock().unwrap().issued.get(&token).cloned();
    match issued {
        Some(i) if i.expired() => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "The access token has expired.",
        ),
        Some(i) if i.kind != TokenKind::DataPlane => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Route-optimized endpoints need an OAuth token scoped to the endpoint.",
        ),
        Some(i) if i.endpoint.as_deref() != Some(name) => error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "The token is not authorized for this endpoint.",
        ),
        Some(_) => predictions(name, "data_plane", body),
        None => error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Invalid access token.",
        ),
    }
}

/// `{"predictions": [{"endpoint", "plane", "input"}]}`: what the endpoint and the plane were,
/// and the request body back (parsed when it is JSON).
fn predictions(name: &str, plane: &str, body: &[u8]) -> Response {
    let input = serde_json::from_slice::<serde_json::Value>(body)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).into_owned().into());
    json(serde_json::json!({
        "predictions": [{"endpoint": name, "plane": plane, "input": input}],
    }))
}

/// `GET /.well-known/databricks-config`: the SDK's `HostMetadata` (no authentication).
async fn well_known(
    State(ctx): State<Ctx>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if ctx.plane == Plane::Agent {
        "http"
    } else {
        "https"
    };
    let resp = json(serde_json::json!({
        "oidc_endpoint": format!("{scheme}://{host}/oidc"),
        "workspace_id": WORKSPACE_ID,
        "account_id": ACCOUNT_ID,
        "cloud": "aws",
    }));
    record(&ctx, &conn, &method, &uri, &headers, &[], resp)
}

async fn not_found(
    State(ctx): State<Ctx>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let resp = error(
        StatusCode::NOT_FOUND,
        "ENDPOINT_NOT_FOUND",
        &format!("No API found for '{method} {}'", uri.path()),
    );
    record(&ctx, &conn, &method, &uri, &headers, &body, resp)
}
