//! A fleet's Redis that requires a password (`[shared] redis_username`, `redis_password_file`)
//! and speaks TLS (`rediss://`, `redis_ca_file`), with the real binary and a real
//! `redis-server`: agents and `idgate revoke` log in as an ACL user with the rights docs/fleet.md
//! gives and revocations flow; a wrong password is reported (by `idgate revoke`, `/ready` and
//! `idgate_shared_store_up`) without the password appearing anywhere; a corrected password file
//! is taken up by the running agent at its next reconnection, without a restart; over TLS the
//! server's certificate must chain to the configured CA, and a plaintext URL to the TLS port
//! gets nowhere.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::agent::Agent;
use support::auth_kit::{MockIdp, Signer};
use support::echo::TestCerts;
use support::fleet::{
    assert_allowed, config, decide, idgate, revoke, token, wait_revoked, wait_store, PROPAGATION,
};
use support::redis::{Auth, Redis};
use support::{background_runtime, http_client, poll_until, READY_TIMEOUT};

const USER: &str = "idgate-agents";
const PASSWORD: &str = "s3cret-Redis-pw-7f1e";
const WRONG: &str = "not-the-Redis-pw-99a0";
/// The follower's reconnection backoff is at most 2 s.
const RECONNECT: Duration = Duration::from_secs(10);

fn auth() -> Auth {
    Auth {
        default_password: "default-user-pw-3c2b".into(),
        user: Some((USER.into(), PASSWORD.into())),
    }
}

fn protected_redis() -> Redis {
    Redis::start_with(Some(auth()), None)
}

fn shared(redis: &Redis, password_file: &Path) -> String {
    login(&redis.url(), password_file)
}

fn login(url: &str, password_file: &Path) -> String {
    format!(
        "redis_url = \"{url}\"\nredis_username = \"{USER}\"\nredis_password_file = \"{}\"",
        password_file.display()
    )
}

fn ready_body(a: &Agent) -> String {
    let r = http_client().get(a.admin_url("/ready")).send().unwrap();
    r.text().unwrap()
}

/// Waits (bounded) until `/ready`'s body says the store is unreachable for a reason that
/// contains `why` (lowercase), i.e. a connection was tried and failed; returns the body.
fn wait_unreachable(a: &Agent, why: &str) -> String {
    poll_until(RECONNECT, || {
        let body = ready_body(a);
        let lower = body.to_lowercase();
        (lower.contains("shared store (redis) unreachable") && lower.contains(why)).then_some(body)
    })
    .unwrap_or_else(|| panic!("/ready never said {why:?}: {}\n{}", ready_body(a), a.log()))
}

/// A mock IdP and a password file (holding `password`) in a temporary directory. Fields drop
/// in order: the IdP before its runtime.
struct Env {
    idp: MockIdp,
    signer: Signer,
    dir: tempfile::TempDir,
    pw: PathBuf,
    _rt: tokio::runtime::Runtime,
}

impl Env {
    fn new(password: &str) -> Env {
        let signer = Signer::rsa("k1");
        let rt = background_runtime();
        let idp = rt.block_on(MockIdp::start(&[&signer]));
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("redis-password");
        std::fs::write(&pw, password).unwrap();
        Env {
            idp,
            signer,
            dir,
            pw,
            _rt: rt,
        }
    }

    fn config(&self, shared: &str) -> String {
        config(&self.idp, shared)
    }

    fn token(&self, sub: &str) -> String {
        token(&self.signer, &self.idp, json!({ "sub": sub }))
    }
}

#[test]
fn agents_and_revoke_log_in_as_an_acl_user() {
    let env = Env::new(&format!("{PASSWORD}\n"));
    let redis = protected_redis();
    let cfg = env.config(&shared(&redis, &env.pw));
    let agents = [Agent::start(&cfg), Agent::start(&cfg)];
    for a in &agents {
        assert!(a.wait_ready(READY_TIMEOUT), "{}", a.log());
        wait_store(a, true, RECONNECT);
    }
    // The server sees idgate's user, not the default one.
    let clients: String = redis.cmd(&["CLIENT", "LIST"]);
    assert!(clients.contains(&format!("user={USER}")), "{clients}");

    let tok = env.token("mallory");
    for a in &agents {
        assert_allowed(&decide(a, &tok));
    }
    revoke(&agents[0], &["--subject", "mallory", "--for", "1h"]);
    for a in &agents {
        wait_revoked(a, &tok, PROPAGATION);
    }
    let members: Vec<String> = redis.cmd(&["ZRANGE", "idgate:revocations", "0", "-1"]);
    assert_eq!(members.len(), 1, "{members:?}");
    let listed = idgate(&[
        "revocations",
        "-c",
        agents[0].config_path().to_str().unwrap(),
    ]);
    assert!(listed.status.success(), "{listed:?}");
    assert!(String::from_utf8_lossy(&listed.stdout).contains("mallory"));
    for a in &agents {
        assert!(
            !a.log().contains(PASSWORD),
            "password in the log:\n{}",
            a.log()
        );
    }
}

#[test]
fn a_wrong_password_is_reported_and_a_corrected_file_is_taken_up() {
    let env = Env::new(WRONG);
    let redis = protected_redis();
    let cfg = env.config(&shared(&redis, &env.pw));
    let agent = Agent::start(&cfg);
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());
    let body = wait_unreachable(&agent, "authentication failed");
    assert_eq!(agent.metric("idgate_shared_store_up", &[]), Some(0.0));

    // `idgate revoke` fails, saying why, without the password.
    let cfg_path = agent.config_path().to_str().unwrap().to_string();
    let out = idgate(&[
        "revoke",
        "-c",
        &cfg_path,
        "--issuer",
        "corp",
        "--subject",
        "eve",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "revoke with a wrong password succeeded"
    );
    assert!(
        stderr.to_lowercase().contains("authentication failed"),
        "{stderr}"
    );
    for text in [stderr.as_ref(), body.as_str(), agent.log().as_str()] {
        assert!(!text.contains(WRONG), "the password was shown: {text}");
    }
    let members: Vec<String> = redis.cmd(&["ZRANGE", "idgate:revocations", "0", "-1"]);
    assert!(members.is_empty(), "{members:?}");

    // Rotation: the right password in the file; the running agent logs in at its next try.
    std::fs::write(&env.pw, format!("{PASSWORD}\r\n")).unwrap();
    wait_store(&agent, true, RECONNECT);
    let tok = env.token("eve");
    revoke(&agent, &["--subject", "eve", "--for", "1h"]);
    wait_revoked(&agent, &tok, PROPAGATION);
}

#[test]
fn without_a_password_the_store_says_authentication_is_required() {
    let env = Env::new(PASSWORD);
    let redis = protected_redis();
    let cfg = env.config(&format!("redis_url = \"{}\"", redis.url()));
    let agent = Agent::start(&cfg);
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());
    wait_unreachable(&agent, "noauth");
    assert_eq!(agent.metric("idgate_shared_store_up", &[]), Some(0.0));
    // Serving goes on (revocations are an addition to token validation, not a gate on it).
    let tok = env.token("alice");
    assert_allowed(&decide(&agent, &tok));
}

#[test]
fn tls_checks_the_servers_certificate_against_the_configured_ca() {
    let env = Env::new(PASSWORD);
    let certs = TestCerts::generate(env.dir.path(), "redis.fleet.internal");
    let ca = certs.ca.clone();
    let redis = Redis::start_with(Some(auth()), Some(certs));
    let with_ca = format!(
        "{}\nredis_ca_file = \"{}\"",
        login(&redis.tls_url(), &env.pw),
        ca.display()
    );
    let agent = Agent::start(&env.config(&with_ca));
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());
    wait_store(&agent, true, RECONNECT);
    let tok = env.token("trudy");
    revoke(&agent, &["--subject", "trudy", "--for", "1h"]);
    wait_revoked(&agent, &tok, PROPAGATION);
    let members: Vec<String> = redis.cmd(&["ZRANGE", "idgate:revocations", "0", "-1"]);
    assert_eq!(members.len(), 1, "{members:?}");

    // Without the CA the system's trust store does not know the test CA: no connection.
    let no_ca = Agent::start(&env.config(&login(&redis.tls_url(), &env.pw)));
    assert!(no_ca.wait_ready(READY_TIMEOUT), "{}", no_ca.log());
    wait_unreachable(&no_ca, "certificate");
    // Plaintext to the TLS port: no connection either.
    let tls_port = redis.tls_url().replace("rediss://", "redis://");
    let plain = Agent::start(&env.config(&login(&tls_port, &env.pw)));
    assert!(plain.wait_ready(READY_TIMEOUT), "{}", plain.log());
    wait_unreachable(&plain, "");
    assert_eq!(plain.metric("idgate_shared_store_up", &[]), Some(0.0));
}
