//! A fleet of real agents sharing a store (a [`super::redis::Redis`] or a revocations file):
//! their configuration, tokens of one mock IdP, the `idgate` command line, and the
//! assertions on revoked and allowed decisions.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::agent::Agent;
use super::auth_kit::{claims, MockIdp, Signer};
use super::redis::Redis;
use super::spop_client::{Request, SpopClient, Vars};
use super::{background_runtime, poll_until, READY_TIMEOUT};

/// Two agents sharing one real redis-server (`[shared] redis_url`), both ready, with a mock IdP
/// whose key is `signer`'s: the setup of the fleet tests and of benches/revocation.rs. Fields
/// drop in order: the agents stop before Redis, the IdP's runtime last.
pub struct RedisFleet {
    pub agents: [Agent; 2],
    pub cfg: String,
    pub redis: Redis,
    pub idp: MockIdp,
    pub rt: tokio::runtime::Runtime,
}

impl RedisFleet {
    pub fn start(signer: &Signer) -> RedisFleet {
        let rt = background_runtime();
        let idp = rt.block_on(MockIdp::start(&[signer]));
        let redis = Redis::start();
        let cfg = config(&idp, &format!("redis_url = \"{}\"", redis.url()));
        let agents = [Agent::start(&cfg), Agent::start(&cfg)];
        for a in &agents {
            assert!(a.wait_ready(READY_TIMEOUT), "{}", a.log());
        }
        RedisFleet {
            agents,
            cfg,
            redis,
            idp,
            rt,
        }
    }
}

/// The propagation bound the issue sets.
pub const PROPAGATION: Duration = Duration::from_secs(1);

pub fn config(idp: &MockIdp, shared: &str) -> String {
    format!(
        r#"
[log]
level = "info"
audit = "stderr"

[[issuer]]
name = "corp"
issuer = "{iss}"
jwks_uri = "{jwks}"
audiences = ["api"]
max_token_lifetime = "1h"

[[rule]]
name = "everything"
paths = ["/**"]
effect = "allow"

[shared]
{shared}
"#,
        iss = idp.base,
        jwks = idp.jwks_uri(),
    )
}

pub fn idgate(args: &[&str]) -> Output {
    Command::new(Agent::binary())
        .args(args)
        .output()
        .expect("running idgate")
}

pub fn decide(agent: &Agent, token: &str) -> Vars {
    let mut c = SpopClient::open(agent.spop);
    c.decide(&Request::new("GET", "/api/2.0/clusters/list").bearer(token))
}

pub fn revoke(agent: &Agent, target: &[&str]) -> Output {
    let cfg = agent.config_path().to_str().unwrap().to_string();
    let mut args = vec!["revoke", "-c", &cfg, "--issuer", "corp"];
    args.extend_from_slice(target);
    let out = idgate(&args);
    assert!(
        out.status.success(),
        "idgate revoke {target:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Waits (bounded) until `agent` refuses `token` as revoked; returns how long it took.
pub fn wait_revoked(agent: &Agent, token: &str, within: Duration) -> Duration {
    let start = Instant::now();
    let got = poll_until(within, || {
        let v = decide(agent, token);
        (v.reason() == "revoked").then_some(v)
    });
    let v = got.unwrap_or_else(|| {
        panic!(
            "not revoked within {within:?}: {:?}\n{}",
            decide(agent, token),
            agent.log()
        )
    });
    assert_revoked(&v);
    start.elapsed()
}

pub fn assert_revoked(v: &Vars) {
    assert_eq!(v.bool("allow"), Some(false), "{v:?}");
    assert_eq!(v.int("status"), Some(401), "{v:?}");
    assert_eq!(v.text("reason"), Some("revoked"), "{v:?}");
    assert_eq!(
        v.text("www_authenticate"),
        Some(r#"Bearer realm="idgate", error="invalid_token", error_description="token revoked""#),
        "{v:?}"
    );
}

pub fn assert_allowed(v: &Vars) {
    assert_eq!(
        (v.bool("allow"), v.text("reason")),
        (Some(true), Some("ok")),
        "{v:?}"
    );
}

pub fn token(signer: &Signer, idp: &MockIdp, extra: Value) -> String {
    let mut c = claims(&idp.base);
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    signer.token(&c)
}

/// Waits (bounded) until `idgate_shared_store_up` of `agent` is `up`.
pub fn wait_store(agent: &Agent, up: bool, within: Duration) {
    let want = if up { 1.0 } else { 0.0 };
    poll_until(within, || {
        (agent.metric("idgate_shared_store_up", &[]) == Some(want)).then_some(())
    })
    .unwrap_or_else(|| panic!("idgate_shared_store_up never {want}:\n{}", agent.log()));
}

pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}
