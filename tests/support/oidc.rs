//! Starts and drives the real OIDC provider of tests/oidc (the npm `oidc-provider` package)
//! for integration tests.
//!
//! - Needs `node` on PATH. Installs tests/oidc/node_modules with `npm ci` on first use if it
//!   is missing (once per test process).
//! - Readiness: reads the `{"issuer": ...}` line the server prints once it listens, then polls
//!   discovery until it answers 200. No blind sleeps; every wait is bounded.
//! - The child is killed on `Drop`; it also exits on its own when its stdin (held by us)
//!   closes, so a crashed test process does not leave it behind.
//!
//! Set `IDGATE_SKIP_OIDC=1` to skip these tests on machines without node (they then print why
//! and pass vacuously); by default a missing node is a test failure.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The resource indicator the provider issues tokens for (their `aud`).
pub const RESOURCE: &str = "https://haproxy.local";

/// Bound on `npm ci` (downloads ~40 small packages).
const NPM_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on the server printing its issuer line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct OidcProvider {
    child: Child,
    /// Held open: the server exits when it closes.
    _stdin: Option<ChildStdin>,
    pub issuer: String,
    http: reqwest::Client,
}

fn oidc_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// `true` when the caller should skip (IDGATE_SKIP_OIDC=1 and node is unusable).
pub fn skip() -> bool {
    let wanted_skip = std::env::var("IDGATE_SKIP_OIDC").is_ok_and(|v| v == "1");
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if wanted_skip && !node_ok {
        eprintln!("skipping: node not available and IDGATE_SKIP_OIDC=1");
        return true;
    }
    assert!(
        node_ok,
        "node is required for the OIDC integration tests (set IDGATE_SKIP_OIDC=1 to skip)"
    );
    false
}

fn ensure_node_modules() {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let r = DONE.get_or_init(|| {
        let dir = oidc_dir();
        if dir.join("node_modules/oidc-provider/package.json").exists() {
            return Ok(());
        }
        let mut child = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("npm ci: {e}"))?;
        let deadline = Instant::now() + NPM_TIMEOUT;
        loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                return if st.success() {
                    Ok(())
                } else {
                    Err(format!("npm ci in {} failed: {st}", dir.display()))
                };
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err("npm ci timed out".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    if let Err(e) = r {
        panic!("{e}");
    }
}

impl OidcProvider {
    /// Start the provider on a free loopback port and wait until discovery answers.
    pub async fn start() -> OidcProvider {
        ensure_node_modules();
        let mut child = Command::new("node")
            .arg(oidc_dir().join("server.mjs"))
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node tests/oidc/server.mjs");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        // stderr: forward (captured by the test harness) so failures are diagnosable, and keep
        // the pipe drained.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if !line.contains("WARNING") {
                    eprintln!("[oidc-provider] {line}");
                }
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(first)) = lines.next() {
                let _ = tx.send(first);
            }
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_TIMEOUT) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("oidc provider did not report its issuer within {START_TIMEOUT:?}");
            }
        };
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("bad startup line {line:?}: {e}"));
        let issuer = v["issuer"].as_str().expect("issuer").to_string();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let p = OidcProvider {
            child,
            _stdin: stdin,
            issuer,
            http,
        };
        let disco = format!("{}/.well-known/openid-configuration", p.issuer);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(r) = p.http.get(&disco).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "discovery never answered 200");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    /// An access token for `client` via client_credentials (client_secret_basic), for the
    /// [`RESOURCE`] audience.
    pub async fn token(&self, client: &str) -> String {
        let r = self
            .http
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("resource", RESOURCE),
                ("scope", "read"),
            ])
            .send()
            .await
            .expect("token request");
        let status = r.status();
        let body: serde_json::Value = r.json().await.expect("token response json");
        assert!(status.is_success(), "token for {client}: {status} {body}");
        body["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// New signing keys (all three types). `keep`: keep publishing the old ones. Returns the
    /// new kids.
    pub async fn rotate(&self, keep: bool) -> Vec<String> {
        let v = self
            .admin_post(&format!("rotate?keep={}", u8::from(keep)))
            .await;
        serde_json::from_value(v["kids"].clone()).expect("kids")
    }

    /// `ok`, `fail` (503) or `garbage` (200 with HTML) for /jwks.
    pub async fn set_jwks_mode(&self, mode: &str) {
        self.admin_post(&format!("jwks?mode={mode}")).await;
    }

    /// How many /jwks requests the provider has received.
    pub async fn jwks_requests(&self) -> u64 {
        let v: serde_json::Value = self
            .http
            .get(format!("{}/admin/stats", self.issuer))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json");
        v["jwks_requests"].as_u64().expect("jwks_requests")
    }

    async fn admin_post(&self, path: &str) -> serde_json::Value {
        let r = self
            .http
            .post(format!("{}/admin/{path}", self.issuer))
            .send()
            .await
            .expect("admin request");
        assert!(r.status().is_success(), "admin {path}: {}", r.status());
        r.json().await.expect("admin json")
    }

    /// Kill the provider now (the IdP "goes down"); waits for the process to exit.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `alg` and `kid` of a compact JWS header (test inspection only; no verification).
pub fn header_of(token: &str) -> (String, String) {
    use base64::Engine as _;
    let h = token.split('.').next().expect("header");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h)
        .expect("b64");
    let v: serde_json::Value = serde_json::from_slice(&raw).expect("json");
    (
        v["alg"].as_str().unwrap_or_default().to_string(),
        v["kid"].as_str().unwrap_or_default().to_string(),
    )
}
