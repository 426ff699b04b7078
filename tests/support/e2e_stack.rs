//! The end-to-end stack shared by tests/e2e_identity.rs, tests/e2e_policy.rs and
//! tests/e2e_upstream.rs: idgate (the real binary) + the TLS echo upstream + HAProxy running the
//! shipped configuration, plus a Tokio runtime for the async fakes (OIDC provider, mock IdP,
//! fake Databricks) that live next to it.
//!
//! Why a runtime object rather than `#[tokio::test]`: the harness's HTTP client and process
//! starters are blocking (`reqwest::blocking` panics inside a runtime), while the fakes are
//! axum servers that must keep serving on worker threads while the test thread blocks. So the
//! test owns a multi-thread [`tokio::runtime::Runtime`], uses `block_on` for the async setup
//! calls, and talks to HAProxy from the plain test thread.
//!
//! Also: a raw HTTP/1.1 client ([`raw_request`]), because every HTTP library normalizes
//! `/a/../b` and `%2e%2e` away before sending, and those are exactly the paths the agent must
//! refuse; and an audit-log reader ([`Stack::audit`]).
//!
//! Use with `mod support;` and `#[path = "support/e2e_stack.rs"] mod e2e_stack;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempDir;

use crate::support::agent::Agent;
use crate::support::echo::{EchoServer, RecordedRequest};
use crate::support::haproxy::{Haproxy, HaproxyVersion};
use crate::support::http_client;

/// Placeholder in agent configurations for the audit log file of the stack.
pub const AUDIT_PLACEHOLDER: &str = "@AUDIT@";

/// Bound on one raw HTTP exchange (connect, write, read to EOF).
const RAW_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest raw response read (HAProxy's error bodies and the echo's JSON are far smaller).
const RAW_MAX_RESPONSE: u64 = 1 << 20;

/// Identity header names a client might forge, in the dash spelling (the underscore spelling is
/// derived): every one of them is checked on every request that reaches the upstream.
pub const IDENTITY_HEADERS: [&str; 4] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
];

/// Forged identity headers in both spellings, mixes of the two (which CGI/WSGI/Rack-style
/// upstreams read as the same header) and mixed case. Values all contain `forged`, so
/// [`assert_no_forged`] can find any that slipped through under any name.
pub const FORGED: [(&str, &str); 13] = [
    ("X-Forwarded_User", "forged-mixed"),
    ("x_forwarded-user", "forged-mixed"),
    ("X-FORWARDED_EMAIL", "forged-mixed@example.com"),
    ("X_Forwarded-Groups", "forged-mixed"),
    ("x-forwarded_preferred-username", "forged-mixed"),
    ("X-Forwarded-User", "forged-root"),
    ("X_Forwarded_User", "forged-root-underscore"),
    ("x-forwarded-EMAIL", "forged@example.com"),
    ("X_Forwarded_Email", "forged2@example.com"),
    ("X-Forwarded-Groups", "forged-admins"),
    ("X_Forwarded_Groups", "forged-admins-underscore"),
    ("X-Forwarded-Preferred-Username", "forged-root"),
    ("X_Forwarded_Preferred_Username", "forged-root"),
];

/// A multi-thread runtime for the async fakes; 2 workers (CI has 2 cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the test runtime")
}

/// One HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    /// Header fields in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// idgate + echo upstream + HAProxy. Dropped in field order: HAProxy first, then the agent,
/// then the upstream.
pub struct Stack {
    pub version: HaproxyVersion,
    pub hap: Haproxy,
    pub agent: Agent,
    pub echo: EchoServer,
    /// One blocking client for the whole stack: building a `reqwest::blocking::Client` starts
    /// a thread and a runtime, which would dominate a loop of a hundred requests. It still opens
    /// a fresh connection per request (see [`http_client`]).
    client: reqwest::blocking::Client,
    audit_path: PathBuf,
    dir: TempDir,
}

impl Stack {
    /// Starts the stack for `version`, or `None` when that HAProxy is not installed (and not
    /// required). `config` is the agent configuration; [`AUDIT_PLACEHOLDER`] in it is replaced
    /// by the path of the audit log file. Waits until the agent's `/ready` says 200 (every
    /// issuer's keys loaded) and HAProxy sees the agent UP.
    pub fn start(version: HaproxyVersion, config: &str) -> Option<Stack> {
        Self::start_with(version, config, None, &[])
    }

    /// [`Stack::start`] with HAProxy's Databricks upstream set to `upstream` instead of the
    /// echo server (e.g. the fake Databricks workspace's TLS listener; the echo server still
    /// runs, and sees nothing) and more HAProxy configuration variables (`extra_env`, e.g.
    /// `IDGATE_DNS_NAMESERVER`, `IDGATE_SERVING_RATE_LIMIT`).
    pub fn start_with(
        version: HaproxyVersion,
        config: &str,
        upstream: Option<crate::support::haproxy::Upstream>,
        extra_env: &[(&'static str, &str)],
    ) -> Option<Stack> {
        let bin = version.require()?;
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let audit_path = dir.path().join("audit.jsonl");
        let config = config.replace(AUDIT_PLACEHOLDER, &audit_path.display().to_string());
        let agent = Agent::start(&config);
        assert!(
            agent.wait_ready(crate::support::READY_TIMEOUT),
            "idgate never became ready\n--- idgate log ---\n{}",
            agent.log()
        );
        let echo = EchoServer::start();
        let upstream = upstream.unwrap_or_else(|| echo.upstream());
        let hap = Haproxy::start_with_env(version, &bin, agent.spop, &upstream, extra_env);
        Some(Stack {
            version,
            hap,
            agent,
            echo,
            client: http_client(),
            audit_path,
            dir,
        })
    }

    /// A scratch directory that lives as long as the stack (secret files etc.).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Both processes' output, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "[{}]\n--- haproxy ---\n{}\n--- idgate ---\n{}",
            self.version.label(),
            self.hap.log(),
            self.agent.log()
        )
    }

    /// `method path` through HAProxy with `headers` (sent as given; repeated names allowed).
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Resp {
        let mut req = self
            .client
            .request(method.parse().expect("method"), self.hap.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.logs()));
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = resp.text().unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// Like [`Stack::call`] with `Authorization: Bearer <token>`.
    pub fn call_as(&self, method: &str, path: &str, token: &str) -> Resp {
        self.call(
            method,
            path,
            &[("Authorization", &format!("Bearer {token}"))],
        )
    }

    /// The request line's target sent byte for byte (see [`raw_request`]).
    pub fn raw(&self, method: &str, target: &str, headers: &[(&str, &str)]) -> Resp {
        raw_request(self.hap.params.frontend, method, target, headers)
            .unwrap_or_else(|e| panic!("raw {method} {target}: {e}\n{}", self.logs()))
    }

    /// Asserts the status, with both logs on failure.
    pub fn expect(&self, resp: &Resp, status: u16, what: &str) {
        assert_eq!(resp.status, status, "{what}: {resp:?}\n{}", self.logs());
    }

    /// The last request the upstream received (panics if none).
    pub fn last_upstream(&self) -> RecordedRequest {
        self.echo
            .requests()
            .pop()
            .unwrap_or_else(|| panic!("the upstream received nothing\n{}", self.logs()))
    }

    /// Every audit line so far, parsed. Polls briefly for `min` lines: the audit writer is
    /// asynchronous to the ACK.
    pub fn audit(&self, min: usize) -> Vec<serde_json::Value> {
        let read = || -> Vec<serde_json::Value> {
            std::fs::read_to_string(&self.audit_path)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("audit line {l:?}: {e}"))
                })
                .collect()
        };
        crate::support::poll_until(crate::support::READY_TIMEOUT, || {
            let lines = read();
            (lines.len() >= min).then_some(lines)
        })
        .unwrap_or_else(|| {
            panic!(
                "fewer than {min} audit lines: {:?}\n{}",
                read(),
                self.logs()
            )
        })
    }

    /// The raw audit file (to check that no secret ever reaches it).
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit_path).unwrap_or_default()
    }
}

/// Sends one HTTP/1.1 request with `target` exactly as given (no normalization) and
/// `Connection: close`, and reads the whole response. Bodies are not de-chunked: HAProxy's
/// deny responses and the echo's answers carry a Content-Length.
pub fn raw_request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect_timeout(&addr, RAW_TIMEOUT)?;
    s.set_read_timeout(Some(RAW_TIMEOUT))?;
    s.set_write_timeout(Some(RAW_TIMEOUT))?;
    let mut req = format!("{method} {target} HTTP/1.1\r\nHost: gateway.idgate.test\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\nContent-Length: 0\r\n\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.take(RAW_MAX_RESPONSE).read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad status line {status_line:?}"),
            )
        })?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Resp {
        status,
        headers,
        body: body.to_string(),
    })
}

/// No header the upstream saw carries a forged value, and no identity header appears under a
/// spelling HAProxy does not set itself (any `_` in it, or Preferred-Username).
pub fn assert_no_forged(req: &RecordedRequest) {
    for (name, value) in &req.headers {
        assert!(
            !value.contains("forged"),
            "client-supplied header value reached the upstream in {name}: {:?}",
            req.headers
        );
        let normalized = name.to_ascii_lowercase().replace('_', "-");
        let identity = IDENTITY_HEADERS.contains(&normalized.as_str());
        assert!(
            !identity || !name.contains('_'),
            "identity header spelled {name} reached the upstream: {:?}",
            req.headers
        );
        assert_ne!(
            normalized, "x-forwarded-preferred-username",
            "{:?}",
            req.headers
        );
    }
}

/// The identity headers the upstream saw: exactly one each of User/Email/Groups with these
/// values (`None`: absent), nothing forged.
pub fn assert_identity(
    req: &RecordedRequest,
    user: Option<&str>,
    email: Option<&str>,
    groups: Option<&str>,
) {
    assert_no_forged(req);
    for (name, want) in [
        ("x-forwarded-user", user),
        ("x-forwarded-email", email),
        ("x-forwarded-groups", groups),
    ] {
        let got = req.header_all(name);
        match want {
            Some(w) => assert_eq!(got, vec![w], "{name}: {:?}", req.headers),
            None => assert!(got.is_empty(), "{name} should be absent: {:?}", req.headers),
        }
    }
}

/// Headers with the caller's token plus every forged identity header.
pub fn forged_with_token(token: &str) -> Vec<(String, String)> {
    let mut h = vec![("Authorization".to_string(), format!("Bearer {token}"))];
    h.extend(FORGED.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

/// `&[(String, String)]` as `&[(&str, &str)]`.
pub fn as_refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
