//! The whole path for the fault-injection tests: a MockIdp issuer, the real `idgate`, the TLS
//! echo upstream and HAProxy (2.6 or 3.2) running the shipped configuration, plus load
//! ([`super::traffic`]) and single requests whose outcome is recorded the same way.
//!
//! The agent configuration: issuer `corp` at the MockIdp (ES256, `jwks_uri`), and rule `api`
//! allowing GET/POST on `/api/**` to members of `ml-engineers` (the default test claims), then
//! whatever the test appends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::agent::Agent;
use super::auth_kit::{claims, MockIdp, Signer};
use super::echo::EchoServer;
use super::haproxy::{Haproxy, HaproxyVersion};
use super::traffic::{Load, Outcome};
use super::{background_runtime, http_client, READY_TIMEOUT};

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

/// Declared in drop order: HAProxy first, the runtime (MockIdp's home) last.
pub struct Stack {
    pub hap: Haproxy,
    pub agent: Agent,
    pub echo: EchoServer,
    pub idp: MockIdp,
    pub signer: Signer,
    next_token: AtomicU64,
    pub rt: tokio::runtime::Runtime,
}

impl Stack {
    /// Everything up, the agent ready (keys loaded) and UP in HAProxy. `None` when the
    /// HAProxy version is not installed (skipped, see `HaproxyVersion::require`).
    pub fn start(
        version: HaproxyVersion,
        master_worker: bool,
        issuer_extra: &str,
        extra: &str,
    ) -> Option<Stack> {
        let bin = version.require()?;
        let rt = background_runtime();
        let signer = Signer::ec("k1");
        let idp = rt.block_on(MockIdp::start(&[&signer]));
        let agent = Agent::start(&agent_config(&idp, issuer_extra, extra));
        assert!(
            agent.wait_ready(READY_TIMEOUT),
            "keys never loaded\n{}",
            agent.log()
        );
        let echo = EchoServer::start();
        let hap = if master_worker {
            Haproxy::start_master_worker(version, &bin, agent.spop, &echo.upstream())
        } else {
            Haproxy::start(version, &bin, agent.spop, &echo.upstream())
        };
        Some(Stack {
            hap,
            agent,
            echo,
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
        let client = http_client();
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

    /// Both logs, for failure messages.
    pub fn logs(&self) -> String {
        format!(
            "--- haproxy ---\n{}\n--- idgate ---\n{}",
            self.hap.log(),
            self.agent.log()
        )
    }
}
