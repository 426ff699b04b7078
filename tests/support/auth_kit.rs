//! Test kit for the identity tests: fixed test keys (tests/fixtures/keys), token minting with
//! full control over header and payload bytes, and a programmable mock IdP (discovery + JWKS)
//! on 127.0.0.1:0 that counts its requests.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use idgate::auth::{install_crypto_provider, Authenticator};
use idgate::config::Config;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};

pub fn fixture(name: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> u64 {
    idgate::auth::unix_now()
}

/// A private test key plus its public JWK.
#[derive(Clone)]
pub struct Signer {
    pub alg: Algorithm,
    pub kid: String,
    pub key: Arc<EncodingKey>,
    /// Public JWK with `kid` and `use: sig`.
    pub jwk: Value,
}

impl Signer {
    pub fn new(file: &str, alg: Algorithm, kid: &str) -> Signer {
        install_crypto_provider();
        let pem = fixture(file);
        let key = match alg {
            Algorithm::RS256 | Algorithm::PS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            other => panic!("no fixture for {other:?}"),
        }
        .expect("fixture key");
        let mut jwk = serde_json::to_value(Jwk::from_encoding_key(&key, alg).expect("jwk"))
            .expect("jwk json");
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        Signer {
            alg,
            kid: kid.to_string(),
            key: Arc::new(key),
            jwk,
        }
    }

    pub fn rsa(kid: &str) -> Signer {
        Signer::new("rsa1.pem", Algorithm::RS256, kid)
    }
    pub fn rsa2(kid: &str) -> Signer {
        Signer::new("rsa2.pem", Algorithm::RS256, kid)
    }
    pub fn ec(kid: &str) -> Signer {
        Signer::new("ec1.pem", Algorithm::ES256, kid)
    }
    pub fn ec2(kid: &str) -> Signer {
        Signer::new("ec2.pem", Algorithm::ES256, kid)
    }
    pub fn ed(kid: &str) -> Signer {
        Signer::new("ed1.pem", Algorithm::EdDSA, kid)
    }

    /// The JOSE name of this signer's algorithm.
    pub fn alg_name(&self) -> &'static str {
        match self.alg {
            Algorithm::RS256 => "RS256",
            Algorithm::PS256 => "PS256",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::EdDSA => "EdDSA",
            _ => unreachable!(),
        }
    }

    /// The default header: alg, kid, typ JWT.
    pub fn header(&self) -> Value {
        json!({"alg": self.alg_name(), "kid": self.kid, "typ": "JWT"})
    }

    /// Sign exactly these header and payload bytes.
    pub fn sign_raw(&self, header: &str, payload: &str) -> String {
        let input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &self.key, self.alg).expect("sign");
        format!("{input}.{sig}")
    }

    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        self.sign_raw(&header.to_string(), &claims.to_string())
    }

    pub fn token(&self, claims: &Value) -> String {
        self.sign_with_header(&self.header(), claims)
    }
}

/// Standard valid claims for `iss`: sub, aud "api", exp in 5 minutes, iat now.
pub fn claims(iss: &str) -> Value {
    let n = now();
    json!({"iss": iss, "sub": "alice", "aud": "api", "exp": n + 300, "iat": n,
           "email": "alice@example.com", "groups": ["ml-engineers"], "scope": "read write"})
}

/// What the mock answers on /jwks.
#[derive(Clone)]
pub enum Reply {
    Keys(Value),
    Status(u16),
    Body(&'static str),
}

struct MockState {
    issuer: Mutex<String>,
    jwks: Mutex<Reply>,
    discovery: Mutex<Option<Value>>,
    cache_control: Mutex<Option<String>>,
    delay: Mutex<Duration>,
    jwks_hits: AtomicUsize,
    discovery_hits: AtomicUsize,
}

/// A mock IdP: `GET /.well-known/openid-configuration` and `GET /jwks`.
pub struct MockIdp {
    pub base: String,
    state: Arc<MockState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockIdp {
    pub async fn start(signers: &[&Signer]) -> MockIdp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let state = Arc::new(MockState {
            issuer: Mutex::new(base.clone()),
            jwks: Mutex::new(Reply::Keys(jwks(signers))),
            discovery: Mutex::new(None),
            cache_control: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
            jwks_hits: AtomicUsize::new(0),
            discovery_hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks_handler))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockIdp { base, state, task }
    }

    /// Stops serving (the listener closes: connections are refused from then on).
    pub fn stop(&self) {
        self.task.abort();
    }

    pub fn jwks_uri(&self) -> String {
        format!("{}/jwks", self.base)
    }
    pub fn set_keys(&self, signers: &[&Signer]) {
        *self.state.jwks.lock().unwrap() = Reply::Keys(jwks(signers));
    }
    pub fn set_reply(&self, r: Reply) {
        *self.state.jwks.lock().unwrap() = r;
    }
    /// Replace the discovery document (None: the default one).
    pub fn set_discovery(&self, doc: Option<Value>) {
        *self.state.discovery.lock().unwrap() = doc;
    }
    pub fn set_cache_control(&self, v: Option<&str>) {
        *self.state.cache_control.lock().unwrap() = v.map(str::to_owned);
    }
    pub fn set_delay(&self, d: Duration) {
        *self.state.delay.lock().unwrap() = d;
    }
    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }
    pub fn discovery_hits(&self) -> usize {
        self.state.discovery_hits.load(Ordering::SeqCst)
    }
}

pub fn jwks(signers: &[&Signer]) -> Value {
    json!({"keys": signers.iter().map(|s| s.jwk.clone()).collect::<Vec<_>>()})
}

async fn discovery(State(s): State<Arc<MockState>>) -> Response {
    s.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let doc = s.discovery.lock().unwrap().clone();
    let doc = doc.unwrap_or_else(|| {
        let iss = s.issuer.lock().unwrap().clone();
        json!({"issuer": iss, "jwks_uri": format!("{iss}/jwks")})
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        doc.to_string(),
    )
        .into_response()
}

async fn jwks_handler(State(s): State<Arc<MockState>>) -> Response {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let delay = *s.delay.lock().unwrap();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let reply = s.jwks.lock().unwrap().clone();
    let mut headers = HeaderMap::new();
    if let Some(cc) = s.cache_control.lock().unwrap().as_deref() {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_str(cc).unwrap());
    }
    match reply {
        Reply::Keys(v) => (StatusCode::OK, headers, v.to_string()).into_response(),
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Body(b) => (StatusCode::OK, headers, b).into_response(),
    }
}

/// A config with one issuer `name` at `idp` (jwks_uri given unless `discover`).
pub fn config(name: &str, idp: &MockIdp, discover: bool, extra: &str) -> Config {
    let jwks = if discover {
        String::new()
    } else {
        format!("jwks_uri = \"{}\"\n", idp.jwks_uri())
    };
    let algs = if extra.contains("algorithms") {
        ""
    } else {
        "algorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\n"
    };
    let text = format!(
        "[[issuer]]\nname = \"{name}\"\nissuer = \"{}\"\n{jwks}audiences = [\"api\"]\n{algs}{extra}\n",
        idp.base
    );
    Config::from_toml(&text, "test").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Build an authenticator and wait (bounded) for its keys.
pub async fn ready_auth(cfg: &Config) -> Authenticator {
    install_crypto_provider();
    let a = Authenticator::new(cfg, None, http());
    assert!(
        a.wait_ready(Duration::from_secs(10)).await,
        "keys did not load: {:?}",
        a.issuer_status()
    );
    a
}

/// The reason code of a rejection (panics on success).
pub async fn reason(a: &Authenticator, token: &str) -> &'static str {
    match a.authenticate(token).await {
        Ok(id) => panic!("token unexpectedly accepted: sub={}", id.sub),
        Err(r) => r.reason.as_str(),
    }
}

/// Current value of `idgate_jwks_refresh_total{issuer,result}`.
pub fn refresh_count(issuer: &str, result: &str) -> u64 {
    idgate::metrics::metrics()
        .jwks_refresh
        .with_label_values(&[issuer, result])
        .get()
}
