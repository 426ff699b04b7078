//! The real Databricks clients of the end-to-end tests: tests/python/databricks_client.py (the
//! Databricks SDK for Python and MLflow, from PyPI: scripts/python-deps.sh) run with one JSON
//! spec, its JSON result returned. The interpreter: IDGATE_TEST_PYTHON, default
//! /opt/idgate-test-venv/bin/python3; missing, the test FAILS.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Bound on one client run (interpreter start, imports, the call, the SDK's retries).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

pub fn python() -> PathBuf {
    let p = std::env::var_os("IDGATE_TEST_PYTHON")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/idgate-test-venv/bin/python3"));
    assert!(
        p.is_file(),
        "Python with the Databricks SDK not found at {} (IDGATE_TEST_PYTHON): run scripts/python-deps.sh",
        p.display()
    );
    p
}

/// Runs tests/python/databricks_client.py with `spec` and returns its JSON result.
pub fn client(spec: Value) -> Value {
    let mut child = Command::new(python())
        .arg(super::repo_path("tests/python/databricks_client.py"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        // No proxy from the environment: every request goes to 127.0.0.1.
        .env("NO_PROXY", "*")
        .env_remove("DATABRICKS_CONFIG_PROFILE")
        .env("DATABRICKS_CONFIG_FILE", "/nonexistent")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the Python client");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the Python client ran longer than {CLIENT_TIMEOUT:?}: {spec}");
        }
        std::thread::sleep(super::POLL_INTERVAL);
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "python client failed ({status}): {err}\n{out}"
    );
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("python client output {out:?}: {e}\nstderr: {err}"))
}

/// The rule every SDK test configuration needs: the SDK reads the workspace's host metadata
/// when a client is created (`WorkspaceClient()`), public as Databricks serves it (shipped in
/// demo/idgate.toml and haproxy/idgate.toml too).
pub const HOST_METADATA_RULE: &str = r#"[[rule]]
name = "databricks-config"
methods = ["GET"]
paths = ["/.well-known/databricks-config"]
effect = "allow"
public = true
"#;

/// What the SDK tests run against: the mock IdP with one EC signing key, the fake Databricks
/// workspace (token endpoint, REST API, data plane), and the file holding the service
/// principal's client secret. Dropped, everything stops.
pub struct Workspace {
    pub rt: tokio::runtime::Runtime,
    pub key: super::auth_kit::Signer,
    pub mock: super::auth_kit::MockIdp,
    pub fake: super::databricks::FakeDatabricks,
    /// The client secret file for `[upstream.*]` sections ([`Workspace::upstream`]).
    pub secret: PathBuf,
    _dir: tempfile::TempDir,
}

impl Workspace {
    pub fn start() -> Workspace {
        let rt = super::stack::runtime();
        let key = super::auth_kit::Signer::ec("fixture-ec-1");
        let mock = rt.block_on(super::auth_kit::MockIdp::start(&[&key]));
        let fake = rt.block_on(super::databricks::FakeDatabricks::start_workspace());
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("sp.secret");
        super::write_secret(&secret, super::databricks::CLIENT_SECRET);
        Workspace {
            rt,
            key,
            mock,
            fake,
            secret,
            _dir: dir,
        }
    }

    /// A `client_credentials` `[upstream.NAME]` section for the token endpoint at `token_url`
    /// with the fake's client and this secret; `extra`: more keys, one per line.
    pub fn upstream(&self, name: &str, token_url: &str, extra: &str) -> String {
        format!(
            "[upstream.{name}]\nkind = \"client_credentials\"\ntoken_url = \"{token_url}\"\n\
             client_id = \"{}\"\nclient_secret_file = \"{}\"\nscope = \"all-apis\"\n{extra}",
            super::databricks::CLIENT_ID,
            self.secret.display()
        )
    }

    /// The `[[issuer]]` section `fixture` of the mock IdP (audience `api`); `extra`: more keys.
    pub fn issuer(&self, extra: &str) -> String {
        format!(
            "[[issuer]]\nname = \"fixture\"\nissuer = \"{}\"\njwks_uri = \"{}\"\n\
             audiences = [\"api\"]\n{extra}",
            self.mock.base,
            self.mock.jwks_uri()
        )
    }

    /// A caller token for `sub` with these extra claims.
    pub fn token(&self, sub: &str, extra: serde_json::Value) -> String {
        let mut c = super::auth_kit::claims(&self.mock.base);
        c["sub"] = sub.into();
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        self.key.token(&c)
    }
}
