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
