//! The shared store failing under a fleet (issue #19 point 5): a real `redis-server` stopped,
//! restarted empty, made slow (SIGSTOP) and flushed while agents serve. Through every fault
//! each request gets a verdict, known revocations stay in force, `/ready` stays 200 and its
//! body and `idgate_shared_store_up` say the store is unreachable; after it, the agents
//! reconnect, write the revocations back, and new revocations propagate again. Through HAProxy
//! 2.6 and 3.4 too: nothing reaches the upstream without an allow verdict.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::Agent;
use support::auth_kit::{MockIdp, Signer};
use support::fleet::{
    assert_allowed, assert_revoked, config, decide, idgate, revoke, token, wait_revoked,
    wait_store, PROPAGATION,
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
    let out = idgate(&["revocations", "-c", &cfg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read the revocations"));
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

/// Through HAProxy (2.6 and 3.4, the shipped configurations): with Redis stopped, then paused,
/// then back, a revoked caller gets 401 and another caller 200, and nothing reaches the
/// upstream without an allow verdict.
fn through_haproxy(version: support::haproxy::HaproxyVersion) {
    use support::stack::IdpStack;
    use support::traffic::{assert_only_allowed_forwarded, Outcome};

    let mut redis = Redis::start();
    let shared = format!("\n[shared]\nredis_url = \"{}\"\n", redis.url());
    let Some(s) = IdpStack::start(version, false, "", &shared) else {
        return;
    };
    let alice = s.signer.token(&support::auth_kit::claims(&s.idp.base));
    let mut bob_claims = support::auth_kit::claims(&s.idp.base);
    bob_claims["sub"] = json!("bob");
    let bob = s.signer.token(&bob_claims);
    let path = "/api/2.0/clusters/list";
    let outcomes = std::cell::RefCell::new(Vec::<Outcome>::new());
    let next = std::cell::Cell::new(0u64);
    // One request, recorded (`good`: it may be forwarded); its status.
    let call = |token: &str, good: bool| {
        next.set(next.get() + 1);
        let (o, body) = s.request(next.get(), "GET", path, Some(token), good);
        let status = o.status;
        outcomes.borrow_mut().push(o);
        (status, body)
    };
    let send = |token: &str, good: bool, want: u16, what: &str| {
        let (status, body) = call(token, good);
        assert_eq!(status, Some(want), "{what}: {body}\n{}", s.logs());
    };
    send(&alice, true, 200, "before");
    revoke(&s.agent, &["--subject", "alice"]);
    // Until the revocation applies alice may still be allowed (and forwarded): `good`.
    poll_until(PROPAGATION, || {
        (call(&alice, true).0 == Some(401)).then_some(())
    })
    .unwrap_or_else(|| panic!("alice not refused within {PROPAGATION:?}\n{}", s.logs()));

    redis.stop();
    wait_store(&s.agent, false, NOTICE);
    for _ in 0..20 {
        send(&alice, false, 401, "redis stopped");
        send(&bob, true, 200, "redis stopped");
    }
    redis.restart();
    wait_store(&s.agent, true, RECONNECT);
    redis.pause();
    for _ in 0..20 {
        send(&alice, false, 401, "redis paused");
        send(&bob, true, 200, "redis paused");
    }
    redis.resume();
    wait_store(&s.agent, true, RECONNECT);
    send(&alice, false, 401, "after");
    let outcomes = outcomes.into_inner();
    let forwarded = assert_only_allowed_forwarded(&outcomes, &s.echo, version.label());
    let allowed = outcomes.iter().filter(|o| o.status == Some(200)).count();
    assert!(allowed >= 21, "{allowed}");
    assert_eq!(
        forwarded, allowed,
        "every allowed request forwarded once, no other"
    );
}

haproxy_tests!(full: [through_haproxy]);
