//! SIGHUP reloads of the real `idgate` binary, observed over SPOP (a raw client playing
//! HAProxy) and on `/metrics`:
//!
//! - a valid change takes effect on open and new connections, and the issuer's keys are not
//!   refetched when the issuer is unchanged (MockIdp's JWKS counter), but are when it changed;
//! - a broken file (syntax or a semantic error) leaves the old state serving and counts
//!   `idgate_config_reloads_total{result="failure"}`;
//! - reloads under load: several connections keep NOTIFYs in flight while the agent reloads
//!   again and again; every NOTIFY gets exactly one ACK with a decision of one of the states;
//! - a reload that changes an issuer's settings while its IdP is down keeps the issuer's keys.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::Agent;
use support::auth_kit::{claims, MockIdp, Reply, Signer};
use support::spop_client::{Frame, Request, SpopClient};
use support::{background_runtime, poll_until, READY_TIMEOUT};

/// How long a reload may take to show on /metrics (it is milliseconds).
const RELOAD_WAIT: Duration = Duration::from_secs(10);

struct Setup {
    _rt: tokio::runtime::Runtime,
    idp: MockIdp,
    signer: Signer,
}

fn setup() -> Setup {
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    Setup {
        _rt: rt,
        idp,
        signer,
    }
}

/// One issuer (the MockIdp) and one rule on `/api/**` with `effect`; `audiences` lets a test
/// change the issuer's settings without changing where its keys come from.
fn config(idp: &MockIdp, effect: &str, audiences: &str) -> String {
    format!(
        r#"
[log]
level = "info"
audit = "off"

[[issuer]]
name = "corp"
issuer = "{}"
jwks_uri = "{}"
audiences = [{audiences}]
algorithms = ["ES256"]

[[rule]]
name = "api"
paths = ["/api/**"]
effect = "{effect}"
"#,
        idp.base,
        idp.jwks_uri()
    )
}

fn token(s: &Setup, n: u64) -> String {
    let mut c = claims(&s.idp.base);
    c["jti"] = json!(n);
    s.signer.token(&c)
}

fn reloads(agent: &Agent, result: &str) -> u64 {
    agent
        .metric("idgate_config_reloads_total", &[("result", result)])
        .unwrap_or_else(|| panic!("no idgate_config_reloads_total{{result={result}}}")) as u64
}

/// SIGHUP, then wait until the reload counter `result` reaches `want`.
fn hup_and_wait(agent: &Agent, result: &str, want: u64) {
    agent.signal("HUP");
    let seen = poll_until(RELOAD_WAIT, || {
        (reloads(agent, result) >= want).then_some(())
    });
    assert!(
        seen.is_some(),
        "reload {result} #{want} never counted\n--- idgate log ---\n{}",
        agent.log()
    );
}

fn start(s: &Setup, effect: &str) -> Agent {
    let agent = Agent::start(&config(&s.idp, effect, "\"api\""));
    assert!(
        agent.wait_ready(READY_TIMEOUT),
        "keys never loaded\n{}",
        agent.log()
    );
    agent
}

#[test]
fn valid_change_takes_effect_and_unchanged_issuer_keeps_its_keys() {
    let s = setup();
    let agent = start(&s, "allow");
    let t = token(&s, 1);
    let req = Request::new("GET", "/api/2.0/clusters/list").bearer(&t);
    let mut open = SpopClient::open(agent.spop);
    let v = open.decide(&req);
    assert!(v.allow(), "{v:?}");
    assert_eq!(v.reason(), "ok");
    assert_eq!(v.str("rule").as_deref(), Some("api"));
    let hits = s.idp.jwks_hits();
    assert_eq!(reloads(&agent, "success"), 0);

    // Flip the rule: the open connection and a new one both see it.
    agent.write_config(&config(&s.idp, "deny", "\"api\""));
    hup_and_wait(&agent, "success", 1);
    let v = open.decide(&req);
    assert!(!v.allow(), "{v:?}");
    assert_eq!(v.reason(), "denied_by_rule");
    assert_eq!(v.status(), 403);
    assert_eq!(v.str("rule").as_deref(), Some("api"));
    let v = SpopClient::open(agent.spop).decide(&req);
    assert_eq!(v.reason(), "denied_by_rule");
    assert_eq!(
        s.idp.jwks_hits(),
        hits,
        "keys were refetched although the issuer did not change"
    );
    assert_eq!(reloads(&agent, "failure"), 0);

    // Changing the issuer's settings (one more audience) builds a new key store, which
    // fetches; the token is still accepted.
    agent.write_config(&config(&s.idp, "allow", "\"api\", \"other\""));
    hup_and_wait(&agent, "success", 2);
    assert!(
        poll_until(RELOAD_WAIT, || (s.idp.jwks_hits() > hits).then_some(())).is_some(),
        "the changed issuer never fetched its keys"
    );
    let v = open.decide(&req);
    assert!(v.allow(), "{v:?}");
    assert!(agent.is_ready());
}

#[test]
fn broken_file_keeps_the_old_state_and_counts_a_failure() {
    let s = setup();
    let agent = start(&s, "allow");
    let req = Request::new("GET", "/api/x").bearer(&token(&s, 1));
    let mut c = SpopClient::open(agent.spop);
    assert!(c.decide(&req).allow());

    // A syntax error.
    agent.write_config("[[rule]\nname = \"broken\"\n");
    hup_and_wait(&agent, "failure", 1);
    let v = c.decide(&req);
    assert!(v.allow(), "the old state must keep serving: {v:?}");

    // Parses, but a rule names an upstream that does not exist.
    let semantic = config(&s.idp, "deny", "\"api\"") + "upstream = \"nowhere\"\n";
    agent.write_config(&semantic);
    hup_and_wait(&agent, "failure", 2);
    assert!(c.decide(&req).allow());
    assert!(SpopClient::open(agent.spop).decide(&req).allow());
    // A log level the agent cannot apply: the whole file is refused, not half of it.
    let bad_level = config(&s.idp, "deny", "\"api\"")
        .replace("level = \"info\"", "level = \"info,idgate=loud\"");
    agent.write_config(&bad_level);
    hup_and_wait(&agent, "failure", 3);
    assert!(
        c.decide(&req).allow(),
        "a reload with a bad log level was applied"
    );
    assert_eq!(reloads(&agent, "success"), 0);
    assert!(
        agent.is_ready(),
        "a failed reload must not affect readiness"
    );
    let log = agent.log();
    assert!(
        log.contains("reload failed") && log.contains("rule[0].upstream"),
        "the log does not say why the reload failed\n{log}"
    );

    // Fixed: the next reload applies.
    agent.write_config(&config(&s.idp, "deny", "\"api\""));
    hup_and_wait(&agent, "success", 1);
    assert_eq!(c.decide(&req).reason(), "denied_by_rule");
    assert_eq!(reloads(&agent, "failure"), 3);
}

/// Listener settings cannot change under a running agent: the reload applies the rest and
/// says which settings wait for a restart, and the old limits stay in force.
#[test]
fn reload_names_the_settings_that_need_a_restart() {
    let s = setup();
    let agent = Agent::start(&format!(
        "[spop]\nmax_connections = 2\n{}",
        config(&s.idp, "allow", "\"api\"")
    ));
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());
    agent.write_config(&format!(
        "[spop]\nmax_connections = 50\n{}",
        config(&s.idp, "deny", "\"api\"")
    ));
    hup_and_wait(&agent, "success", 1);
    let req = Request::new("GET", "/api/x").bearer(&token(&s, 1));
    let mut a = SpopClient::open(agent.spop);
    assert_eq!(
        a.decide(&req).reason(),
        "denied_by_rule",
        "the rest applied"
    );
    let _b = SpopClient::open(agent.spop);
    // A third connection is admitted by evicting an idle one: the old limit (2) holds.
    let mut c = SpopClient::connect(agent.spop).unwrap();
    c.hello().unwrap();
    assert_eq!(
        agent.metric("idgate_spop_connections_evicted_total", &[]),
        Some(1.0),
        "the old connection limit (2) no longer holds"
    );
    let logged = poll_until(RELOAD_WAIT, || {
        let log = agent.log();
        (log.contains("only take effect at the next restart") && log.contains("[spop]"))
            .then_some(())
    });
    assert!(logged.is_some(), "no restart warning\n{}", agent.log());
    assert!(!agent.log().contains("[admin]"), "[admin] did not change");
}

/// NOTIFYs kept in flight on each load connection.
const WINDOW: usize = 8;
const CONNECTIONS: usize = 4;
const RELOADS: u64 = 6;

#[derive(Default)]
struct LoadResult {
    sent: u64,
    acked: u64,
    reasons: HashMap<String, u64>,
    errors: Vec<String>,
}

/// Keeps `WINDOW` NOTIFYs in flight on one connection until `stop`, then collects every
/// outstanding answer. Checks ids: each ACK answers exactly one NOTIFY sent.
fn load_connection(
    agent_spop: std::net::SocketAddr,
    tokens: Vec<String>,
    stop: Arc<AtomicBool>,
    acks: Arc<AtomicU64>,
) -> LoadResult {
    let mut c = SpopClient::open(agent_spop);
    let mut r = LoadResult::default();
    let mut outstanding: HashMap<u64, ()> = HashMap::new();
    let mut next = 1u64;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if !stopping {
            let mut batch = Vec::new();
            while outstanding.len() < WINDOW {
                let t = &tokens[(next as usize) % tokens.len()];
                let req = Request::new("GET", "/api/2.0/jobs/list").bearer(t);
                batch.extend_from_slice(&SpopClient::encode_notify(next, 1, &req));
                outstanding.insert(next, ());
                next += 1;
                r.sent += 1;
            }
            if let Err(e) = c.send_raw(&batch) {
                r.errors.push(format!("send: {e}"));
                return r;
            }
        }
        if outstanding.is_empty() {
            return r;
        }
        match c.read_frame() {
            Ok(Frame::Ack {
                stream_id,
                frame_id,
                vars,
            }) => {
                if frame_id != 1 || outstanding.remove(&stream_id).is_none() {
                    r.errors.push(format!(
                        "ACK for unknown or answered {stream_id}/{frame_id}"
                    ));
                }
                r.acked += 1;
                acks.fetch_add(1, Ordering::Relaxed);
                *r.reasons.entry(vars.reason()).or_default() += 1;
            }
            Ok(other) => {
                r.errors.push(format!("unexpected frame {other:?}"));
                return r;
            }
            Err(e) => {
                r.errors
                    .push(format!("read with {} outstanding: {e}", outstanding.len()));
                return r;
            }
        }
    }
}

#[test]
fn reloads_under_load_lose_no_notify() {
    let s = setup();
    let agent = start(&s, "allow");
    let tokens: Vec<String> = (0..16).map(|n| token(&s, n)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (tokens, stop, acks) = (tokens.clone(), stop.clone(), acks.clone());
            let addr = agent.spop;
            std::thread::spawn(move || load_connection(addr, tokens, stop, acks))
        })
        .collect();

    let wait_for_traffic = |min: u64| {
        let from = acks.load(Ordering::Relaxed);
        let moved = poll_until(READY_TIMEOUT, || {
            (acks.load(Ordering::Relaxed) >= from + min).then_some(())
        });
        assert!(moved.is_some(), "load stalled\n{}", agent.log());
    };
    wait_for_traffic(200);
    let started = Instant::now();
    for i in 1..=RELOADS {
        let effect = if i % 2 == 1 { "deny" } else { "allow" };
        // Every third reload also changes the issuer (new key store, dropped token cache).
        let audiences = if i % 3 == 0 {
            format!("\"api\", \"aud{i}\"")
        } else {
            "\"api\"".to_string()
        };
        agent.write_config(&config(&s.idp, effect, &audiences));
        hup_and_wait(&agent, "success", i);
        wait_for_traffic(100);
    }
    let reload_time = started.elapsed();
    stop.store(true, Ordering::Relaxed);

    let mut total = LoadResult::default();
    for w in workers {
        let r = w.join().expect("load thread panicked");
        assert!(
            r.errors.is_empty(),
            "{:?}\n--- idgate log ---\n{}",
            r.errors,
            agent.log()
        );
        assert_eq!(r.sent, r.acked, "a NOTIFY went unanswered");
        total.sent += r.sent;
        total.acked += r.acked;
        for (k, v) in r.reasons {
            *total.reasons.entry(k).or_default() += v;
        }
    }
    eprintln!(
        "{} NOTIFYs on {CONNECTIONS} connections across {RELOADS} reloads in {reload_time:?}: {:?}",
        total.sent, total.reasons
    );
    let unexpected: Vec<_> = total
        .reasons
        .keys()
        .filter(|r| *r != "ok" && *r != "denied_by_rule")
        .collect();
    assert!(
        unexpected.is_empty(),
        "decisions other than the two configured outcomes: {:?}\n{}",
        total.reasons,
        agent.log()
    );
    assert!(total.reasons.get("ok").copied().unwrap_or(0) > 0);
    assert!(total.reasons.get("denied_by_rule").copied().unwrap_or(0) > 0);
    assert_eq!(reloads(&agent, "failure"), 0);
    // The agent's own counters agree: one ACK per NOTIFY.
    let m = agent.metrics();
    let frames = |t: &str| support::metric_value(&m, "idgate_spop_frames_total", &[("type", t)]);
    assert_eq!(
        frames("notify"),
        frames("ack"),
        "notify/ack counters differ"
    );
    assert_eq!(frames("notify"), Some(total.sent as f64));
}

/// Changing an issuer's settings (not where its keys come from) while its IdP is down: the
/// new configuration must keep validating with the keys already loaded, not refuse every
/// token with `unknown_key` until the IdP comes back.
#[test]
fn reload_changing_an_issuer_while_its_idp_is_down_keeps_the_keys() {
    let s = setup();
    let agent = start(&s, "allow");
    let mut c = SpopClient::open(agent.spop);
    assert!(c
        .decide(&Request::new("GET", "/api/x").bearer(&token(&s, 1)))
        .allow());

    s.idp.set_reply(Reply::Status(503));
    let hits = s.idp.jwks_hits();
    agent.write_config(&config(&s.idp, "allow", "\"api\", \"other\""));
    hup_and_wait(&agent, "success", 1);
    // The new key store tried the IdP (and failed)...
    assert!(
        poll_until(RELOAD_WAIT, || (s.idp.jwks_hits() > hits).then_some(())).is_some(),
        "the changed issuer never tried to fetch"
    );
    // ...and still validates fresh tokens (not cached: the cache is dropped with the issuer).
    let v = c.decide(&Request::new("GET", "/api/x").bearer(&token(&s, 2)));
    assert!(v.allow(), "{v:?}\n--- idgate log ---\n{}", agent.log());
    assert!(agent.is_ready(), "the reload made the agent unready");

    // Pointing the issuer at another JWKS location is a new key source: its keys are not
    // carried over, and with that location down tokens are refused until it answers.
    let other = config(&s.idp, "allow", "\"api\"").replace("/jwks\"", "/jwks?v=2\"");
    agent.write_config(&other);
    hup_and_wait(&agent, "success", 2);
    let v = c.decide(&Request::new("GET", "/api/x").bearer(&token(&s, 3)));
    assert_eq!(v.reason(), "unknown_key", "{v:?}");
    s.idp.set_keys(&[&s.signer]);
    let back = poll_until(READY_TIMEOUT, || {
        c.decide(&Request::new("GET", "/api/x").bearer(&token(&s, 4)))
            .allow()
            .then_some(())
    });
    assert!(back.is_some(), "keys never loaded after the IdP came back");
}
