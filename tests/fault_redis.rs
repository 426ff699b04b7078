//! The shared store failing under a fleet (issue #19 point 5): a real `redis-server` stopped,
//! restarted empty, made slow (SIGSTOP) and flushed while agents serve. Through every fault
//! each request gets a verdict, known revocations stay in force, `/ready` stays 200 and its
//! body and `idgate_shared_store_up` say the store is unreachable; after it, the agents
//! reconnect, write the revocations back, and new revocations propagate again.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::Agent;
use support::auth_kit::{MockIdp, Signer};
use support::fleet::{
    assert_allowed, assert_revoked, config, decide, idgate, revoke, token, wait_revoked,
    PROPAGATION,
};
use support::redis::Redis;
use support::{background_runtime, http_client, poll_until, READY_TIMEOUT};

/// How long an agent may take to notice the store is gone (1 s ping timeout, 1 s interval).
const NOTICE: Duration = Duration::from_secs(5);
/// Reconnection (backoff at most 2 s) plus a full read.
const RECONNECT: Duration = Duration::from_secs(8);

struct Fleet {
    _rt: tokio::runtime::Runtime,
    signer: Signer,
    idp: MockIdp,
    redis: Redis,
    cfg: String,
    agents: Vec<Agent>,
}

fn fleet() -> Fleet {
    let rt = background_runtime();
    let signer = Signer::rsa("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let redis = Redis::start();
    let cfg = config(&idp, &format!("redis_url = \"{}\"", redis.url()));
    let agents = vec![Agent::start(&cfg), Agent::start(&cfg)];
    for a in &agents {
        assert!(a.wait_ready(READY_TIMEOUT), "{}", a.log());
    }
    Fleet {
        _rt: rt,
        signer,
        idp,
        redis,
        cfg,
        agents,
    }
}

impl Fleet {
    fn token(&self, sub: &str) -> String {
        token(&self.signer, &self.idp, json!({ "sub": sub }))
    }
}

fn store_up(a: &Agent) -> Option<f64> {
    a.metric("idgate_shared_store_up", &[])
}

fn wait_store(a: &Agent, up: bool, within: Duration) {
    let want = if up { 1.0 } else { 0.0 };
    poll_until(within, || (store_up(a) == Some(want)).then_some(()))
        .unwrap_or_else(|| panic!("idgate_shared_store_up never {want}:\n{}", a.log()));
}

/// `/ready`: 200, and whether its body says the store is unreachable.
fn ready_says_unreachable(a: &Agent) -> bool {
    let r = http_client().get(a.admin_url("/ready")).send().unwrap();
    assert_eq!(
        r.status(),
        200,
        "readiness stays 200 while the store is down"
    );
    r.text()
        .unwrap()
        .contains("shared store (redis) unreachable")
}

/// `rounds` decisions per agent for each of `revoked` and `allowed`: every one answered, with
/// its verdict, within `bound` each.
fn every_request_decided(f: &Fleet, revoked: &str, allowed: &str, rounds: usize, bound: Duration) {
    for a in &f.agents {
        for _ in 0..rounds {
            let t = Instant::now();
            assert_revoked(&decide(a, revoked));
            assert_allowed(&decide(a, allowed));
            assert!(t.elapsed() < bound, "two decisions took {:?}", t.elapsed());
        }
    }
}

fn stored_entries(redis: &Redis) -> Vec<String> {
    redis.cmd(&["ZRANGE", "idgate:revocations", "0", "-1"])
}

#[test]
fn stopped_then_restarted_empty() {
    let mut f = fleet();
    let (alice, bob) = (f.token("alice"), f.token("bob"));
    revoke(&f.agents[0], &["--subject", "alice"]);
    for a in &f.agents {
        wait_revoked(a, &alice, PROPAGATION);
    }

    f.redis.stop();
    for a in &f.agents {
        wait_store(a, false, NOTICE);
        assert!(ready_says_unreachable(a), "{}", a.log());
    }
    every_request_decided(&f, &alice, &bob, 50, Duration::from_secs(1));
    // Revoking needs the store, and says so.
    let cfg = f.agents[0].config_path().to_str().unwrap().to_string();
    let out = idgate(&["revoke", "-c", &cfg, "--issuer", "corp", "--subject", "bob"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("revocation not stored"));
    // An agent started meanwhile serves, ready, saying the store is unreachable.
    let late = Agent::start(&f.cfg);
    assert!(late.wait_ready(READY_TIMEOUT), "{}", late.log());
    assert!(ready_says_unreachable(&late));
    assert_allowed(&decide(&late, &bob));

    // Restarted without its data: the fleet writes its revocations back.
    f.redis.restart();
    for a in &f.agents {
        wait_store(a, true, RECONNECT);
        assert!(!ready_says_unreachable(a));
    }
    let back = poll_until(RECONNECT, || {
        let s = stored_entries(&f.redis);
        (!s.is_empty()).then_some(s)
    })
    .expect("revocations written back");
    assert!(back[0].contains("\"subject\":\"alice\""), "{back:?}");
    // The agent that never saw it gets it, from the store.
    wait_store(&late, true, RECONNECT);
    wait_revoked(&late, &alice, RECONNECT);
    // And new revocations propagate again.
    revoke(&f.agents[1], &["--subject", "bob"]);
    for a in f.agents.iter().chain([&late]) {
        wait_revoked(a, &bob, PROPAGATION);
    }
}

#[test]
fn slow_store_never_slows_decisions() {
    let mut f = fleet();
    let (alice, bob, carol) = (f.token("alice"), f.token("bob"), f.token("carol"));
    revoke(&f.agents[0], &["--subject", "alice"]);
    for a in &f.agents {
        wait_revoked(a, &alice, PROPAGATION);
        assert_allowed(&decide(a, &carol));
    }

    f.redis.pause();
    // Decisions never wait for the store, before and after the agents notice it.
    every_request_decided(&f, &alice, &bob, 20, Duration::from_millis(500));
    for a in &f.agents {
        wait_store(a, false, NOTICE);
        assert!(ready_says_unreachable(a));
    }
    every_request_decided(&f, &alice, &bob, 20, Duration::from_millis(500));

    f.redis.resume();
    for a in &f.agents {
        wait_store(a, true, RECONNECT);
    }
    revoke(&f.agents[0], &["--subject", "carol"]);
    for a in &f.agents {
        wait_revoked(a, &carol, PROPAGATION);
    }
}

#[test]
fn flushed_store_is_refilled_by_the_fleet() {
    let f = fleet();
    let alice = f.token("alice");
    revoke(&f.agents[0], &["--subject", "alice"]);
    revoke(&f.agents[0], &["--jti", "some-token"]);
    for a in &f.agents {
        wait_revoked(a, &alice, PROPAGATION);
    }
    assert_eq!(stored_entries(&f.redis).len(), 2);

    f.redis.flushall();
    assert!(stored_entries(&f.redis).is_empty());
    for a in &f.agents {
        assert_revoked(&decide(a, &alice));
    }
    // The next full read (every 5 s) writes both back.
    let back = poll_until(Duration::from_secs(12), || {
        (stored_entries(&f.redis).len() == 2).then_some(())
    });
    assert!(back.is_some(), "{:?}", stored_entries(&f.redis));
    let late = Agent::start(&f.cfg);
    assert!(late.wait_ready(READY_TIMEOUT), "{}", late.log());
    wait_revoked(&late, &alice, Duration::from_secs(3));
    for a in f.agents.iter().chain([&late]) {
        assert!(!a.log().contains(&alice), "a token in the log");
    }
}
