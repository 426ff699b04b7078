//! The one stack builder of the tests: idgate (the real binary) + the TLS echo upstream (or
//! another upstream, e.g. the fake Databricks) + HAProxy (2.6 or 3.2) running the shipped
//! configuration. [`Stack::launch`] is the only place that starts the three; everything else
//! builds on it:
//! - [`Stack::start`] / [`Stack::start_with`]: the end-to-end tests (tests/e2e_*.rs; their
//!   forged-header assertions are in [`super::forged`]), with an audit log
//!   ([`AUDIT_PLACEHOLDER`], [`Stack::audit`]) and a raw HTTP/1.1 client ([`raw_request`]),
//!   because every HTTP library normalizes `/a/../b` and `%2e%2e` away before sending, and
//!   those are exactly the paths the agent must refuse;
//! - [`IdpStack`]: the fault-injection tests (tests/fault_*.rs, tests/ops_soak.rs): a MockIdp
//!   issuer in front of the stack, plus load ([`super::traffic`]) and single requests whose
//!   outcome is recorded the same way. Its agent configuration ([`agent_config`]): issuer
//!   `corp` at the MockIdp (ES256, `jwks_uri`), and rule `api` allowing GET/POST on
//!   `/api/**` to members of `ml-engineers` (the default test claims), then whatever the test
//!   appends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;

use super::agent::Agent;
use super::auth_kit::{claims, MockIdp, Signer};
use super::echo::{EchoServer, RecordedRequest};
use super::haproxy::{Haproxy, HaproxyVersion, Upstream};
use super::traffic::{Load, Outcome};
use super::{background_runtime, http_client, poll_until, READY_TIMEOUT};

/// Placeholder in agent configurations for the audit log file of the stack.
pub const AUDIT_PLACEHOLDER: &str = "@AUDIT@";

/// The shipped configuration's variables for more agents (haproxy.cfg, backend idgate_agents).
const EXTRA_AGENT_VARS: [&str; 2] = ["IDGATE_AGENT2_ADDR", "IDGATE_AGENT3_ADDR"];

/// Bound on one raw HTTP exchange (connect, write, read to EOF).
const RAW_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest raw response read (HAProxy's error bodies and the echo's JSON are far smaller).
const RAW_MAX_RESPONSE: u64 = 1 << 20;

/// A multi-thread runtime for the async fakes next to the stack (OIDC provider, mock IdP,
/// fake Databricks); 2 workers (CI has 2 cores).
///
/// Why a runtime object rather than `#[tokio::test]`: the harness's HTTP client and process
/// starters are blocking (`reqwest::blocking` panics inside a runtime), while the fakes are
/// axum servers that must keep serving on worker threads while the test thread blocks. So the
/// test owns a multi-thread [`tokio::runtime::Runtime`], uses `block_on` for the async setup
/// calls, and talks to HAProxy from the plain test thread.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building the test runtime")
}

/// How [`Stack::launch`] starts HAProxy.
#[derive(Default)]
pub struct Options<'a> {
    /// HAProxy's Databricks upstream; `None`: the echo server.
    pub upstream: Option<Upstream>,
    /// More HAProxy configuration variables.
    pub extra_env: &'a [(&'static str, &'a str)],
    /// Master-worker mode (`-W`), so that `Haproxy::reload` reloads it the production way.
    pub master_worker: bool,
    /// The stack's scratch directory ([`Stack::dir`]), when the caller made it first (to write
    /// files the agent configuration names, e.g. a credential); `None`: a new one.
    pub dir: Option<TempDir>,
    /// More idgate agents behind the same HAProxy, with the same configuration
    /// (`IDGATE_AGENT2_ADDR`, `IDGATE_AGENT3_ADDR`: at most 2; [`Stack::more_agents`]).
    pub extra_agents: usize,
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
    /// The agents [`Options::extra_agents`] asked for (idgate2, idgate3 in HAProxy).
    pub more_agents: Vec<Agent>,
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
        upstream: Option<Upstream>,
        extra_env: &[(&'static str, &str)],
    ) -> Option<Stack> {
        Self::launch(
            version,
            config,
            Options {
                upstream,
                extra_env,
                ..Options::default()
            },
        )
    }

    /// The one place that starts the stack: idgate with `config` (see [`Stack::start`]),
    /// ready; the echo upstream; HAProxy as `options` say, with the agent UP.
    pub fn launch(version: HaproxyVersion, config: &str, options: Options<'_>) -> Option<Stack> {
        let bin = version.require()?;
        let dir = options
            .dir
            .unwrap_or_else(|| tempfile::tempdir().expect("creating a temp dir"));
        let audit_path = dir.path().join("audit.jsonl");
        let start_agent = |audit: &Path| {
            let agent =
                Agent::start(&config.replace(AUDIT_PLACEHOLDER, &audit.display().to_string()));
            assert!(
                agent.wait_ready(READY_TIMEOUT),
                "idgate never became ready (issuer keys not loaded?)\n--- idgate log ---\n{}",
                agent.log()
            );
            agent
        };
        let agent = start_agent(&audit_path);
        assert!(
            options.extra_agents <= EXTRA_AGENT_VARS.len(),
            "the shipped configuration has at most {} more agents",
            EXTRA_AGENT_VARS.len()
        );
        let more_agents: Vec<Agent> = (0..options.extra_agents)
            .map(|i| start_agent(&dir.path().join(format!("audit-{}.jsonl", i + 2))))
            .collect();
        let mut env: Vec<(&'static str, String)> = options
            .extra_env
            .iter()
            .map(|(k, v)| (*k, v.to_string()))
            .collect();
        env.extend(
            EXTRA_AGENT_VARS
                .iter()
                .zip(&more_agents)
                .map(|(var, a)| (*var, a.spop_addr().haproxy_server())),
        );
        let env: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let echo = EchoServer::start();
        let upstream = options.upstream.unwrap_or_else(|| echo.upstream());
        let args: &[&str] = if options.master_worker { &["-W"] } else { &[] };
        let hap = Haproxy::start_with_env_args(version, &bin, agent.spop, &upstream, &env, args);
        Some(Stack {
            version,
            hap,
            agent,
            more_agents,
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
        poll_until(READY_TIMEOUT, || {
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

/// A MockIdp issuer + [`Stack`], for the fault-injection tests. Derefs to the [`Stack`]
/// (`s.hap`, `s.agent`, `s.echo`, `s.logs()`). Declared in drop order: the stack (HAProxy
/// first), then the MockIdp, the runtime (MockIdp's home) last.
pub struct IdpStack {
    pub stack: Stack,
    pub idp: MockIdp,
    pub signer: Signer,
    next_token: AtomicU64,
    pub rt: tokio::runtime::Runtime,
}

impl Deref for IdpStack {
    type Target = Stack;
    fn deref(&self) -> &Stack {
        &self.stack
    }
}

impl DerefMut for IdpStack {
    fn deref_mut(&mut self) -> &mut Stack {
        &mut self.stack
    }
}

/// The agent configuration for `idp`, with `extra` appended (more rules, upstreams).
pub fn agent_config(idp: &MockIdp, issuer_extra: &str, extra: &str) -> String {
    format!(
        r#"
[log]
level = "info"
audit = "off"

[[issuer]]
name = "corp"
issuer = "{}"
jwks_uri = "{}"
audiences = ["api"]
algorithms = ["ES256"]
{issuer_extra}

[[rule]]
name = "api"
methods = ["GET", "POST"]
paths = ["/api/**"]
groups = ["ml-engineers"]
{extra}
"#,
        idp.base,
        idp.jwks_uri()
    )
}

impl IdpStack {
    /// Everything up, the agent ready (keys loaded) and UP in HAProxy. `None` when the
    /// HAProxy version is not installed (skipped, see `HaproxyVersion::require`).
    pub fn start(
        version: HaproxyVersion,
        master_worker: bool,
        issuer_extra: &str,
        extra: &str,
    ) -> Option<IdpStack> {
        Self::launch(
            version,
            issuer_extra,
            extra,
            Options {
                master_worker,
                ..Options::default()
            },
        )
    }

    /// [`IdpStack::start`] with the stack started as `options` say (more agents, HAProxy
    /// variables; `options.upstream` and `options.dir` as in [`Stack::launch`]).
    pub fn launch(
        version: HaproxyVersion,
        issuer_extra: &str,
        extra: &str,
        options: Options<'_>,
    ) -> Option<IdpStack> {
        version.require()?;
        let rt = background_runtime();
        let signer = Signer::ec("k1");
        let idp = rt.block_on(MockIdp::start(&[&signer]));
        let stack = Stack::launch(version, &agent_config(&idp, issuer_extra, extra), options)?;
        Some(IdpStack {
            stack,
            idp,
            signer,
            next_token: AtomicU64::new(0),
            rt,
        })
    }

    /// A fresh valid token (distinct `jti`: never in the agent's cache).
    pub fn fresh_token(&self) -> String {
        let mut c = claims(&self.idp.base);
        c["jti"] = json!(self.next_token.fetch_add(1, Ordering::Relaxed));
        self.signer.token(&c)
    }

    /// Client load: every fourth request is bad (no token or a garbage one), the others carry
    /// one of a few valid tokens (so most decisions are token-cache hits, as in production).
    pub fn load(&self, threads: usize) -> Load {
        let tokens: Vec<String> = (0..4).map(|_| self.fresh_token()).collect();
        Load::start(
            self.hap.url(""),
            threads,
            Arc::new(move |n| {
                let path = "/api/2.0/clusters/list".to_string();
                match n % 8 {
                    0 => (path, None, false),
                    4 => (path, Some("Bearer not.a.token".to_string()), false),
                    i => (
                        path,
                        Some(format!("Bearer {}", tokens[i as usize % tokens.len()])),
                        true,
                    ),
                }
            }),
        )
    }

    /// One request through HAProxy, recorded like the load's (`good` says whether it should
    /// be allowed), plus the response body for messages.
    pub fn request(
        &self,
        id: u64,
        method: &str,
        path: &str,
        token: Option<&str>,
        good: bool,
    ) -> (Outcome, String) {
        let kind = if good { "good" } else { "bad" };
        let url = self.hap.url(&format!("{path}?kind={kind}&n={id}"));
        let client = &self.client;
        let mut req = match method {
            "POST" => client.post(url).body("{}"),
            _ => client.get(url),
        };
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let (status, body) = match req.send() {
            Ok(r) => {
                let s = r.status().as_u16();
                (Some(s), r.text().unwrap_or_default())
            }
            Err(e) => (None, e.to_string()),
        };
        (
            Outcome {
                id,
                good,
                status,
                at: Instant::now(),
            },
            body,
        )
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
