//! Revocation propagation across a fleet (issue #19): how long after `idgate revoke` returns
//! every agent refuses the revoked subject's token, from its validated-token cache.
//!
//! ```text
//! cargo bench --bench revocation                  # 200 revocations, two agents, one Redis
//! REVOCATIONS=500 cargo bench --bench revocation
//! ```
//!
//! Real parts: Debian's `redis-server` (IDGATE_REDIS_SERVER to use another, e.g. valkey-server)
//! and two `idgate` agent processes of this build sharing it (`[shared] redis_url`), a local
//! JWKS, and the same helpers the fleet tests use (tests/support/fleet.rs). Per sample: one
//! subject's token is validated by both agents (so it is in both caches), `idgate revoke
//! --subject` runs against agent 1's configuration, and from the moment the command returns
//! (the entry is stored and published) each agent is asked again and again over SPOP until it
//! answers `revoked`. The figure of a sample is the later of the two agents. The command's own
//! run time (a process start, a Redis round trip) is reported apart.
//!
//! Output: median, p90, p99 and max over the samples, as one Markdown table.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::auth_kit::Signer;
use support::fleet::{assert_allowed, decide, revoke, token, RedisFleet};

/// A revocation not applied by then is a failure, not a slow sample.
const GIVE_UP: Duration = Duration::from_secs(5);

fn main() {
    let samples: usize = std::env::var("REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let signer = Signer::rsa("k1");
    let fleet = RedisFleet::start(&signer);
    let (agents, idp) = (&fleet.agents, &fleet.idp);

    let mut propagation = Vec::with_capacity(samples);
    let mut command = Vec::with_capacity(samples);
    for i in 0..samples {
        let sub = format!("user-{i}");
        let t = token(&signer, idp, json!({ "sub": sub }));
        for a in agents {
            assert_allowed(&decide(a, &t));
        }
        let started = Instant::now();
        revoke(&agents[0], &["--subject", &sub, "--for", "10m"]);
        let returned = Instant::now();
        command.push(returned - started);
        let mut slowest = Duration::ZERO;
        for a in agents {
            loop {
                let v = decide(a, &t);
                if v.reason() == "revoked" {
                    break;
                }
                assert!(
                    returned.elapsed() < GIVE_UP,
                    "revocation {i} not applied within {GIVE_UP:?}: {v:?}"
                );
            }
            slowest = slowest.max(returned.elapsed());
        }
        propagation.push(slowest);
    }

    println!("## Revocation propagation ({samples} revocations, 2 agents, 1 Redis)\n");
    println!("| | median | p90 | p99 | max |\n|---|---:|---:|---:|---:|");
    for (what, v) in [
        (
            "every agent refuses the token, after `idgate revoke` returned",
            &mut propagation,
        ),
        (
            "`idgate revoke` itself (process start, store, publish)",
            &mut command,
        ),
    ] {
        v.sort_unstable();
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        println!(
            "| {what} | {} | {} | {} | {} |",
            ms(q(0.5)),
            ms(q(0.9)),
            ms(q(0.99)),
            ms(v[v.len() - 1])
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}
