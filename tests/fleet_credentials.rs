//! Shared upstream credentials (issue #19 point 4): two brokers (two agents' worth of local
//! caches) sharing a real `redis-server` and one `key_file` exchange a caller's token once and
//! mint one data-plane token per (caller, endpoint) for the pair; Redis holds neither the
//! caller's token nor any issued token in clear, only keyed names and AES-256-GCM values; a
//! broker with another key cannot use them; with Redis stopped, each broker still gets its
//! credentials (local cache and token endpoint), and no request fails because of Redis.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use idgate::config::Config;
use idgate::upstream::{Broker, Caller, Grant};
use support::databricks::{FakeDatabricks, GRANT_EXCHANGE, GRANT_JWT_BEARER};
use support::redis::Redis;

fn key_file(dir: &Path, name: &str, byte: u8) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, [byte; 32]).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

fn broker(fake: &FakeDatabricks, redis: &Redis, key: &Path) -> Broker {
    let text = format!(
        "[upstream.tx]\nkind = \"token_exchange\"\ntoken_url = \"{}\"\n\n\
         [shared]\nredis_url = \"{}\"\nkey_file = \"{}\"\n",
        fake.token_url,
        redis.url(),
        key.display()
    );
    let cfg = Config::from_toml(&text, "test").unwrap_or_else(|e| panic!("{e}"));
    Broker::new(&cfg, None, idgate::outbound::client()).expect("valid config")
}

async fn grant(b: &Broker, caller: &str, endpoint: Option<&str>) -> Grant {
    let path = endpoint.map(|e| format!("/serving-endpoints/{e}/invocations"));
    let serving = path
        .as_deref()
        .and_then(|p| idgate::upstream::serving_invocation("POST", p));
    let caller = Caller {
        token: Some(caller),
        ..Caller::ANONYMOUS
    };
    b.grant_for("tx", caller, Instant::now(), serving)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Waits (bounded) until Redis holds `n` credentials (stores are written in the background).
async fn stored(redis: &Redis, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let keys: Vec<String> = redis.cmd(&["KEYS", "idgate:cred:*"]);
        if keys.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} credentials stored, want {n}",
            keys.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_exchanges_a_callers_token_once() {
    let fake = FakeDatabricks::start().await;
    fake.add_route_optimized("churn");
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "shared.key", 7);
    let (a, b) = (broker(&fake, &redis, &key), broker(&fake, &redis, &key));
    let alice = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnLWFsaWNl";

    let ga = grant(&a, alice, None).await;
    stored(&redis, 1).await;
    let gb = grant(&b, alice, None).await;
    assert_eq!(ga.authorization, gb.authorization);
    assert_eq!(
        fake.requests_for_grant(GRANT_EXCHANGE),
        1,
        "one exchange for the fleet"
    );

    // Data-plane tokens too: minted once from the shared control-plane token.
    let da = grant(&a, alice, Some("churn")).await;
    stored(&redis, 2).await;
    let db = grant(&b, alice, Some("churn")).await;
    assert_eq!(da.authorization, db.authorization);
    assert!(da.route.is_some());
    assert_eq!(fake.requests_for_grant(GRANT_JWT_BEARER), 1);

    // Another caller is exchanged for itself.
    let bob = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnLWJvYg";
    let gbob = grant(&b, bob, None).await;
    assert_ne!(gbob.authorization, ga.authorization);
    assert_eq!(fake.requests_for_grant(GRANT_EXCHANGE), 2);
    stored(&redis, 3).await;

    // Nothing in clear: no caller token, no part of one, no issued token.
    let dump = redis.dump();
    let issued = [&ga.authorization, &da.authorization, &gbob.authorization];
    for secret in [alice, bob]
        .iter()
        .flat_map(|t| t.split('.'))
        .chain(issued.iter().map(|h| h.strip_prefix("Bearer ").unwrap()))
    {
        assert!(!dump.contains(secret), "{secret:?} in Redis:\n{dump}");
    }
    assert!(!dump.contains("dbx-"), "{dump}");

    // A broker with another key cannot use them: it exchanges for itself.
    let other_key = key_file(dir.path(), "other.key", 8);
    let c = broker(&fake, &redis, &other_key);
    let gc = grant(&c, alice, None).await;
    assert_ne!(gc.authorization, ga.authorization);
    assert_eq!(fake.requests_for_grant(GRANT_EXCHANGE), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_means_local_caches_only() {
    let fake = FakeDatabricks::start().await;
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "shared.key", 7);
    let (a, b) = (broker(&fake, &redis, &key), broker(&fake, &redis, &key));
    let carol = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjYXJvbCJ9.c2lnLWNhcm9s";
    let ga = grant(&a, carol, None).await;
    stored(&redis, 1).await;

    redis.pause();
    // Slow Redis: every request still answered, Redis left out after its first timeout.
    let dave = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJkYXZlIn0.c2lnLWRhdmU";
    let started = Instant::now();
    let gd = grant(&b, dave, None).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(gd.authorization.starts_with("Bearer "));
    // Cached locally: no Redis, no endpoint.
    assert_eq!(grant(&a, carol, None).await.authorization, ga.authorization);

    redis.stop();
    let erin = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJlcmluIn0.c2lnLWVyaW4";
    let before = fake.requests_for_grant(GRANT_EXCHANGE);
    let ea = grant(&a, erin, None).await;
    let eb = grant(&b, erin, None).await;
    assert!(ea.authorization.starts_with("Bearer ") && eb.authorization.starts_with("Bearer "));
    assert_eq!(
        fake.requests_for_grant(GRANT_EXCHANGE),
        before + 2,
        "without Redis each agent exchanges for itself"
    );
    let m = idgate::metrics::metrics().render();
    assert!(
        support::metric_value(
            &m,
            "idgate_shared_credentials_total",
            &[("result", "error")]
        )
        .is_some_and(|v| v >= 1.0),
        "{m}"
    );

    // Back (empty): sharing resumes once the skip interval is over (new callers until one is
    // stored, bounded).
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(5);
    let (caller, fa) = loop {
        let caller = format!(
            "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmcmFuayJ9.c2ln{}",
            fake.requests()
        );
        let g = grant(&a, &caller, None).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let keys: Vec<String> = redis.cmd(&["KEYS", "idgate:cred:*"]);
        if !keys.is_empty() {
            break (caller, g);
        }
        assert!(Instant::now() < deadline, "sharing never resumed");
    };
    let fb = grant(&b, &caller, None).await;
    assert_eq!(fa.authorization, fb.authorization);
}

/// The real binary: two agents sharing Redis and a key answer one caller with one exchange, log
/// no token, and `check-config` refuses a key file every user can read.
#[test]
fn two_agents_share_one_exchange() {
    use support::agent::Agent;
    use support::auth_kit::{MockIdp, Signer};
    use support::fleet::{config, idgate, token};
    use support::spop_client::{Request, SpopClient};

    let rt = support::background_runtime();
    let signer = Signer::rsa("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let fake = rt.block_on(FakeDatabricks::start());
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "shared.key", 9);
    let shared = format!(
        "redis_url = \"{}\"\nkey_file = \"{}\"\n\n[upstream.tx]\nkind = \"token_exchange\"\n\
         token_url = \"{}\"\n",
        redis.url(),
        key.display(),
        fake.token_url
    );
    let cfg = config(&idp, &shared).replace(
        "effect = \"allow\"\n",
        "effect = \"allow\"\nupstream = \"tx\"\n",
    );
    let agents = [Agent::start(&cfg), Agent::start(&cfg)];
    for a in &agents {
        assert!(a.wait_ready(support::READY_TIMEOUT), "{}", a.log());
    }
    let alice = token(&signer, &idp, serde_json::json!({"sub": "alice"}));
    let decide = |a: &Agent| {
        let mut c = SpopClient::open(a.spop);
        c.decide(&Request::new("GET", "/api/2.0/clusters/list").bearer(&alice))
    };
    let first = decide(&agents[0]);
    assert_eq!(
        first.text("reason"),
        Some("ok"),
        "{first:?}\n{}",
        agents[0].log()
    );
    let header = first.str("upstream_authorization").expect("a credential");
    rt.block_on(stored(&redis, 1));
    let second = decide(&agents[1]);
    assert_eq!(second.str("upstream_authorization"), Some(header.clone()));
    assert_eq!(fake.requests_for_grant(GRANT_EXCHANGE), 1);
    let dump = redis.dump();
    let issued = header.strip_prefix("Bearer ").unwrap();
    for secret in alice.split('.').chain([issued]) {
        assert!(!dump.contains(secret), "in Redis:\n{dump}");
        for a in &agents {
            assert!(!a.log().contains(secret), "in the log:\n{}", a.log());
        }
    }

    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg_path = agents[0].config_path().to_str().unwrap().to_string();
    let out = idgate(&["check-config", "-c", &cfg_path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("shared.key_file") && err.contains("readable by every user"),
        "{err}"
    );
}
