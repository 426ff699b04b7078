//! A fake OAuth 2.0 token introspection endpoint (RFC 7662) with two faces, strict about the
//! requests as the IdPs document them:
//!
//! - Okta ("Introspect a token", custom authorization server `default`):
//!   `POST /oauth2/default/v1/introspect`, form `token`, optional `token_type_hint`
//!   (`access_token`...), client authentication `client_secret_basic` (HTTP Basic, id and
//!   secret form-urlencoded first) or `client_secret_post`. Answer for an active access token:
//!   `active`, `token_type: "Bearer"`, `scope` (space-separated), `client_id`, `username`,
//!   `exp`, `iat`, `sub`, `aud`, `iss`, `jti`, `uid`, plus custom claims of the authorization
//!   server (`groups`). Inactive: `{"active": false}`. Bad client: 401
//!   `{"error":"invalid_client","error_description":"..."}`.
//! - Keycloak ("Token Introspection Endpoint"): `POST
//!   /realms/{realm}/protocol/openid-connect/token/introspect`, same form and client
//!   authentication (a confidential client). Answer: the token's claims (`exp`, `iat`, `jti`,
//!   `iss`, `aud` string or array, `sub`, `typ`, `azp`, `session_state`, `realm_access.roles`,
//!   `scope`, `email_verified`, `preferred_username`, `email`) plus `client_id`, `username`,
//!   `token_type: "Bearer"`, `active: true`. Keycloak tokens are JWTs; the fake mints
//!   JWT-shaped tokens (unsigned: only the IdP reads them) whose payload is the claims.
//!
//! Every token it has minted is answered active until its `exp` or until [`revoke`]d; any
//! other token is inactive. Knobs: a response delay, statuses to answer next, and the secret it
//! expects.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};

use super::auth_kit::now;

pub const OKTA_CLIENT_ID: &str = "0oa8f5j3ecb5w3dF35d7";
pub const OKTA_SECRET: &str = "Ew2bUh_9P+GvLR3hmb7Ku&X=";
pub const KEYCLOAK_CLIENT_ID: &str = "idgate";
pub const KEYCLOAK_SECRET: &str = "kR7cV2pZ4mW9xQ1t";
pub const REALM: &str = "corp";

#[derive(Default)]
struct St {
    base: Mutex<String>,
    /// token -> (face, claims of the answer without `active`)
    tokens: Mutex<HashMap<String, (&'static str, Value)>>,
    delay: Mutex<Duration>,
    fail_next: Mutex<Vec<u16>>,
    /// face -> expected secret (default: the face's documented constant).
    secrets: Mutex<HashMap<&'static str, String>>,
    calls: Mutex<HashMap<&'static str, u64>>,
    minted: AtomicU64,
    /// How the last accepted client authenticated: "basic" or "post".
    last_auth: Mutex<Option<&'static str>>,
    last_hint: Mutex<Option<String>>,
}

pub struct FakeIntrospection {
    pub base_url: String,
    st: Arc<St>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeIntrospection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeIntrospection {
    pub async fn start() -> FakeIntrospection {
        let st = Arc::new(St::default());
        let app = Router::new()
            .route("/oauth2/default/v1/introspect", post(okta))
            .route(
                "/realms/{realm}/protocol/openid-connect/token/introspect",
                post(keycloak),
            )
            .with_state(Arc::clone(&st));
        let (base_url, task) = super::serve_local(app).await;
        *st.base.lock().unwrap() = base_url.clone();
        FakeIntrospection { base_url, st, task }
    }

    /// Okta's issuer (custom authorization server `default`).
    pub fn okta_issuer(&self) -> String {
        format!("{}/oauth2/default", self.base_url)
    }
    pub fn okta_url(&self) -> String {
        format!("{}/v1/introspect", self.okta_issuer())
    }
    pub fn keycloak_issuer(&self) -> String {
        format!("{}/realms/{REALM}", self.base_url)
    }
    pub fn keycloak_url(&self) -> String {
        format!(
            "{}/protocol/openid-connect/token/introspect",
            self.keycloak_issuer()
        )
    }

    /// An opaque Okta access token for `login` (user id `uid`) in `groups`, valid `lifetime`.
    pub fn mint_okta(&self, login: &str, groups: &[&str], lifetime: Duration) -> String {
        let n = self.st.minted.fetch_add(1, Ordering::SeqCst);
        let token = format!("oktaAT{n}x{}", now());
        let iat = now();
        let claims = json!({
            "token_type": "Bearer", "scope": "openid profile offline_access",
            "client_id": "0oa1abcdEFGH2ijk3l4m", "username": login,
            "exp": iat + lifetime.as_secs(), "iat": iat, "sub": login,
            "aud": "api://default", "iss": self.okta_issuer(),
            "jti": format!("AT.{n}P4KlczBYVcWLkxduEuKeZfeiNYkZIC9uGJ28Cc-YaI"),
            "uid": format!("00uid4BxXw6I6TV4m0g{n}"), "groups": groups,
        });
        self.st
            .tokens
            .lock()
            .unwrap()
            .insert(token.clone(), ("okta", claims));
        token
    }

    /// A Keycloak access token (a JWT) of `username` with realm roles `roles` and audience
    /// `aud` (what an audience mapper adds, next to Keycloak's own "account"); `typ` is
    /// "Bearer" for an access token, "Refresh" for a refresh token.
    pub fn mint_keycloak(&self, username: &str, roles: &[&str], aud: &[&str], typ: &str) -> String {
        let n = self.st.minted.fetch_add(1, Ordering::SeqCst);
        let iat = now();
        let claims = json!({
            "exp": iat + 300, "iat": iat, "jti": format!("onrtac:6a0e1b5c-1a43-4a5b-9d0b-{n:012}"),
            "iss": self.keycloak_issuer(), "aud": aud,
            "sub": format!("f1c2d3e4-0000-4000-8000-{n:012}"), "typ": typ, "azp": "databricks-cli",
            "session_state": "0d5b8a1e-7c1f-4a55-bb2e-7d0a3f1c9e21",
            "realm_access": {"roles": roles}, "scope": "openid email profile",
            "email_verified": true, "preferred_username": username,
            "email": format!("{username}@example.com"),
        });
        let b64 = |v: &Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string().as_bytes())
        };
        let token = format!(
            "{}.{}.c2lnbmF0dXJl",
            b64(&json!({"alg": "RS256", "typ": "JWT", "kid": "kc-1"})),
            b64(&claims)
        );
        let mut answer = claims;
        answer["client_id"] = json!("databricks-cli");
        answer["username"] = json!(username);
        answer["token_type"] = json!("Bearer");
        self.st
            .tokens
            .lock()
            .unwrap()
            .insert(token.clone(), ("keycloak", answer));
        token
    }

    /// The `[[issuer]]` table of an Okta custom authorization server introspected by idgate,
    /// as its operator writes it: the secret in `secret_file`, `extra` lines appended.
    pub fn okta_issuer_toml(&self, secret_file: &std::path::Path, extra: &str) -> String {
        format!(
            "[[issuer]]\nname = \"okta\"\nkind = \"introspection\"\nissuer = \"{}\"\n\
             introspection_url = \"{}\"\nclient_id = \"{OKTA_CLIENT_ID}\"\n\
             client_secret_file = \"{}\"\naudiences = [\"api://default\"]\n\
             user_claim = \"uid\"\n{extra}\n",
            self.okta_issuer(),
            self.okta_url(),
            secret_file.display()
        )
    }

    /// The token is answered inactive from now on.
    pub fn revoke(&self, token: &str) {
        self.st.tokens.lock().unwrap().remove(token);
    }
    pub fn set_delay(&self, d: Duration) {
        *self.st.delay.lock().unwrap() = d;
    }
    /// Answer these statuses (in order) before any check.
    pub fn fail_next(&self, statuses: &[u16]) {
        *self.st.fail_next.lock().unwrap() = statuses.to_vec();
    }
    /// The client secret `face` ("okta" or "keycloak") expects.
    pub fn expect_secret(&self, face: &'static str, secret: &str) {
        self.st.secrets.lock().unwrap().insert(face, secret.into());
    }
    /// Introspection calls `face` received (accepted or not).
    pub fn calls(&self, face: &'static str) -> u64 {
        *self.st.calls.lock().unwrap().get(face).unwrap_or(&0)
    }
    pub fn last_auth(&self) -> Option<&'static str> {
        *self.st.last_auth.lock().unwrap()
    }
    pub fn last_hint(&self) -> Option<String> {
        self.st.last_hint.lock().unwrap().clone()
    }
}

async fn okta(State(st): State<Arc<St>>, headers: HeaderMap, body: Bytes) -> Response {
    introspect(&st, "okta", OKTA_CLIENT_ID, OKTA_SECRET, &headers, &body).await
}

async fn keycloak(
    State(st): State<Arc<St>>,
    Path(realm): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if realm != REALM {
        let body = json!({"error": "Realm does not exist"});
        return json_response(StatusCode::NOT_FOUND, &body);
    }
    introspect(
        &st,
        "keycloak",
        KEYCLOAK_CLIENT_ID,
        KEYCLOAK_SECRET,
        &headers,
        &body,
    )
    .await
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn invalid_client(why: &str) -> Response {
    let body = json!({"error": "invalid_client", "error_description": why});
    json_response(StatusCode::UNAUTHORIZED, &body)
}

async fn introspect(
    st: &St,
    face: &'static str,
    client_id: &str,
    default_secret: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    *st.calls.lock().unwrap().entry(face).or_insert(0) += 1;
    let delay = *st.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let failing = {
        let mut f = st.fail_next.lock().unwrap();
        (!f.is_empty()).then(|| f.remove(0))
    };
    if let Some(code) = failing {
        return (
            StatusCode::from_u16(code).unwrap(),
            "upstream connect error",
        )
            .into_response();
    }
    let form_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !form_type.starts_with("application/x-www-form-urlencoded") {
        let body = json!({"error": "invalid_request", "error_description": "content type"});
        return json_response(StatusCode::BAD_REQUEST, &body);
    }
    let form: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    let secret = st
        .secrets
        .lock()
        .unwrap()
        .get(face)
        .cloned()
        .unwrap_or_else(|| default_secret.to_owned());
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "));
    let auth = match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => return invalid_client("more than one client authentication"),
        (Some(b), None) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b)
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .unwrap_or_default();
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let (id, sec) = decoded.split_once(':').unwrap_or(("", ""));
            if dec(id) != client_id || dec(sec) != secret {
                return invalid_client(
                    "The client secret supplied for a confidential client is invalid.",
                );
            }
            "basic"
        }
        (None, Some(sec)) => {
            if form.get("client_id").map(String::as_str) != Some(client_id) || *sec != secret {
                return invalid_client(
                    "The client secret supplied for a confidential client is invalid.",
                );
            }
            "post"
        }
        (None, None) => return invalid_client("No client authentication"),
    };
    *st.last_auth.lock().unwrap() = Some(auth);
    *st.last_hint.lock().unwrap() = form.get("token_type_hint").cloned();
    let Some(token) = form.get("token") else {
        let body = json!({"error": "invalid_request", "error_description": "token is required"});
        return json_response(StatusCode::BAD_REQUEST, &body);
    };
    let found = st.tokens.lock().unwrap().get(token).cloned();
    let answer = match found {
        Some((f, claims)) if f == face && claims["exp"].as_u64().unwrap_or(0) > now() => {
            let mut a = claims;
            a["active"] = json!(true);
            a
        }
        _ => json!({"active": false}),
    };
    json_response(StatusCode::OK, &answer)
}
