//! Revocation (contract §3 `revoked`, §9) with the real binary: `idgate revoke` by subject, by
//! `jti` and by issued-before time against a real `redis-server` shared by two agents, applied
//! by both within one second, validated-token cache hits included; an agent started later
//! has every revocation; `idgate revocations` lists them; the metrics and the audit log say
//! `revoked`. Then the single-node store (`[shared] revocations_file`): revoke, list, `explain`
//! agreeing, an unreadable file keeping what is in force, lift.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::agent::Agent;
use support::auth_kit::{now, MockIdp, Signer};
use support::fleet::{
    assert_allowed, assert_revoked, config, decide, idgate, revoke, rfc3339, token, wait_revoked,
    RedisFleet, PROPAGATION,
};
use support::{background_runtime, poll_until, READY_TIMEOUT};

#[test]
fn a_fleet_applies_revocations_within_a_second() {
    let signer = Signer::rsa("k1");
    let fleet = RedisFleet::start(&signer);
    let (agents, idp, redis, cfg) = (&fleet.agents, &fleet.idp, &fleet.redis, &fleet.cfg);
    for a in agents {
        assert_eq!(
            a.metric("idgate_shared_store_up", &[]),
            Some(1.0),
            "{}",
            a.log()
        );
    }

    let n = now();
    let alice = token(&signer, idp, json!({"sub": "alice"}));
    let bob_1 = token(&signer, idp, json!({"sub": "bob", "jti": "bob-1"}));
    let bob_2 = token(&signer, idp, json!({"sub": "bob", "jti": "bob-2"}));
    let old = token(&signer, idp, json!({"sub": "carol", "iat": n - 120}));
    let no_iat = token(&signer, idp, json!({"sub": "dave", "iat": null}));
    let fresh = token(&signer, idp, json!({"sub": "erin", "iat": n}));
    // Every token validated once: later decisions are validated-token cache hits.
    for a in agents {
        for t in [&alice, &bob_1, &bob_2, &old, &no_iat, &fresh] {
            assert_allowed(&decide(a, t));
        }
    }

    // By subject: both agents, within a second of the command's return, cached token or not.
    revoke(&agents[0], &["--subject", "alice"]);
    let stored = Instant::now();
    for a in agents {
        wait_revoked(a, &alice, PROPAGATION);
    }
    assert!(stored.elapsed() < PROPAGATION, "{:?}", stored.elapsed());
    assert_allowed(&decide(&agents[0], &bob_1));

    // By jti: only that token.
    revoke(&agents[1], &["--jti", "bob-1"]);
    let stored = Instant::now();
    for a in agents {
        wait_revoked(a, &bob_1, PROPAGATION);
        assert_allowed(&decide(a, &bob_2));
    }
    assert!(stored.elapsed() < PROPAGATION, "{:?}", stored.elapsed());

    // Issued before a time: older tokens and tokens without iat (fail closed), not newer ones.
    revoke(
        &agents[0],
        &["--issued-before", &rfc3339(n - 60), "--for", "10m"],
    );
    let stored = Instant::now();
    for a in agents {
        wait_revoked(a, &old, PROPAGATION);
        wait_revoked(a, &no_iat, PROPAGATION);
        assert_allowed(&decide(a, &fresh));
    }
    assert!(stored.elapsed() < PROPAGATION, "{:?}", stored.elapsed());

    // An agent started later has them all from its first read of the store.
    let late = Agent::start(cfg);
    assert!(late.wait_ready(READY_TIMEOUT), "{}", late.log());
    for t in [&alice, &bob_1, &old, &no_iat] {
        wait_revoked(&late, t, Duration::from_secs(3));
    }
    assert_allowed(&decide(&late, &fresh));

    // The listing, and the expiries: subject and jti until max_token_lifetime + leeway after
    // now, issued-before as asked.
    let cfg_path = agents[0].config_path().to_str().unwrap().to_string();
    let out = idgate(&["revocations", "-c", &cfg_path, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    let bound = 3600 + 30;
    for e in &listed {
        assert_eq!(e["issuer"], "corp");
        let until = e["until"].as_u64().unwrap();
        let want = if e.get("issued_before").is_some() {
            assert_eq!(e["issued_before"].as_u64(), Some(n - 60));
            e["created"].as_u64().unwrap() + 600
        } else {
            e["created"].as_u64().unwrap() + bound
        };
        assert_eq!(until, want, "{e}");
    }
    let out = idgate(&["revocations", "-c", &cfg_path]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("subject \"alice\"") && text.contains("jti \"bob-1\""),
        "{text}"
    );

    for a in agents {
        assert_eq!(a.metric("idgate_revocations", &[]), Some(3.0));
        assert!(
            a.metric("idgate_decisions_total", &[("reason", "revoked")])
                .unwrap()
                >= 4.0
        );
        assert!(
            a.metric("idgate_revocation_updates_total", &[("source", "pubsub")])
                .unwrap()
                >= 3.0
        );
        assert!(
            a.log().contains("\"reason\":\"revoked\""),
            "the audit log records revoked decisions"
        );
    }
    // Nothing but entries in the store: no token.
    let dump = redis.dump();
    for t in [&alice, &bob_1, &old, &no_iat] {
        assert!(!dump.contains(t.as_str()));
    }
}

#[test]
fn revoke_refuses_bad_requests_clearly() {
    let rt = background_runtime();
    let signer = Signer::rsa("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revocations");
    let with_store = dir.path().join("with.toml");
    std::fs::write(
        &with_store,
        config(&idp, &format!("revocations_file = \"{}\"", file.display())),
    )
    .unwrap();
    let without = dir.path().join("without.toml");
    std::fs::write(&without, config(&idp, "")).unwrap();
    // (configuration, arguments after `--issuer`, what stderr says)
    let cases: [(&Path, &str, &str); 8] = [
        (&without, "corp --subject a", "no revocation store"),
        (&with_store, "nope --subject a", "no issuer named \"nope\""),
        (&with_store, "corp --issued-before yesterday", "RFC 3339"),
        (&with_store, "corp --jti j --for soon", "--for"),
        (
            &with_store,
            "corp --subject a --jti j",
            "cannot be used with",
        ),
        (
            &with_store,
            "corp --jti j --for 1h --until 2030-01-01T00:00:00Z",
            "cannot be used with",
        ),
        (
            &with_store,
            "corp --jti j --until 2001-01-01T00:00:00Z",
            "--until is in the past",
        ),
        (
            &with_store,
            "corp --issued-before 2001-01-01T00:00:00Z",
            "nothing to revoke",
        ),
    ];
    for (cfg, rest, want) in cases {
        let mut args = vec!["revoke", "-c", cfg.to_str().unwrap(), "--issuer"];
        args.extend(rest.split(' '));
        let out = idgate(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert!(!file.exists(), "nothing was written");
}

#[test]
fn one_node_revokes_through_its_revocations_file() {
    let rt = background_runtime();
    let signer = Signer::rsa("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("revocations");
    let agent = Agent::start(&config(
        &idp,
        &format!("revocations_file = \"{}\"", file.display()),
    ));
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());
    let alice = token(&signer, &idp, json!({"sub": "alice"}));
    assert_allowed(&decide(&agent, &alice));

    revoke(&agent, &["--subject", "alice", "--for", "5m"]);
    let took = wait_revoked(&agent, &alice, PROPAGATION);
    assert!(took < PROPAGATION);
    let cfg = agent.config_path().to_str().unwrap().to_string();
    // --until: a token's own exp (a token without iat may outlive the default), plus leeway.
    let exp = now() + 3 * 86400;
    revoke(&agent, &["--jti", "no-iat-token", "--until", &rfc3339(exp)]);
    let out = idgate(&["revocations", "-c", &cfg, "--json"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    let jti: Value = listed
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["jti"] == "no-iat-token")
        .unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(jti["until"].as_u64(), Some(exp + 30), "{jti}");
    let out = idgate(&["revocations", "-c", &cfg]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("subject \"alice\""));
    assert_eq!(agent.metric("idgate_shared_store_up", &[]), Some(1.0));
    // `explain` decides as the agent: with the store's revocations.
    let out = idgate(&[
        "explain", "-c", &cfg, "--method", "GET", "--path", "/x", "--token", &alice,
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["reason"], "revoked", "{report}");

    // A line that is no entry: the agent keeps what it has and says so.
    let good = std::fs::read_to_string(&file).unwrap();
    std::fs::write(&file, format!("{good}garbage\n")).unwrap();
    poll_until(Duration::from_secs(2), || {
        (agent.metric("idgate_shared_store_up", &[]) == Some(0.0)).then_some(())
    })
    .expect("store_up 0 on an unreadable file");
    assert_revoked(&decide(&agent, &alice));
    let body = support::http_client()
        .get(agent.admin_url("/ready"))
        .send()
        .unwrap();
    assert_eq!(body.status(), 200);
    assert!(body.text().unwrap().contains("revocations file unreadable"));

    // The file is authoritative: emptied, the revocation is lifted.
    std::fs::write(&file, "").unwrap();
    poll_until(Duration::from_secs(2), || {
        (decide(&agent, &alice).reason() == "ok").then_some(())
    })
    .expect("lifted");
}
