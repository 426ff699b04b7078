//! The running agent as operations see it: `/ready` before and after an issuer's keys load,
//! `/metrics` after real SPOP traffic (exact decision counters, contract names, no caller text
//! in labels), and SIGTERM: in-flight NOTIFYs answered, AGENT-DISCONNECT sent, exit 0 within
//! the grace period.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::Agent;
use support::auth_kit::{claims, now, MockIdp, Reply, Signer};
use support::databricks::{FakeDatabricks, CLIENT_ID, CLIENT_SECRET};
use support::spop_client::{Frame, Request, SpopClient};
use support::{background_runtime, http_client, metric_value, poll_until, READY_TIMEOUT};

use idgate::spop::Status;

fn ready(agent: &Agent) -> (u16, String) {
    let r = http_client()
        .get(agent.admin_url("/ready"))
        .send()
        .expect("GET /ready");
    (r.status().as_u16(), r.text().unwrap_or_default())
}

fn issuer_block(name: &str, idp: &MockIdp, extra: &str) -> String {
    format!(
        "[[issuer]]\nname = \"{name}\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n\
         algorithms = [\"ES256\"]\n{extra}\n",
        idp.base,
        idp.jwks_uri()
    )
}

#[test]
fn ready_is_503_naming_each_issuer_until_its_keys_load() {
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let down = rt.block_on(MockIdp::start(&[&signer]));
    let slow = rt.block_on(MockIdp::start(&[&signer]));
    down.set_reply(Reply::Status(503));
    // Slower than the issuer's http_timeout: every fetch times out.
    slow.set_delay(Duration::from_secs(5));
    let config = format!(
        "{}{}[[rule]]\nname = \"api\"\npaths = [\"/api/**\"]\n",
        issuer_block("corp", &down, ""),
        issuer_block("partner", &slow, "http_timeout = \"300ms\""),
    );
    let agent = Agent::start(&config);

    // Serving (SPOP answers, fail closed) but not ready; the body names both issuers and why.
    let (status, body) = ready(&agent);
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("issuer corp: keys not loaded") && body.contains("issuer partner"),
        "{body}"
    );
    let failing = poll_until(READY_TIMEOUT, || {
        let (_, body) = ready(&agent);
        (body.contains("HTTP 503") && body.contains("timed out")).then_some(body)
    });
    assert!(
        failing.is_some(),
        "/ready never gave the fetch errors: {:?}",
        ready(&agent)
    );
    assert_eq!(agent.metric("idgate_ready", &[]), Some(0.0));
    let token = signer.token(&claims(&down.base));
    let v = SpopClient::open(agent.spop).decide(&Request::new("GET", "/api/x").bearer(&token));
    assert_eq!(v.reason(), "unknown_key", "{v:?}");

    // One IdP recovers: still 503, now naming only the other.
    down.set_keys(&[&signer]);
    let one = poll_until(READY_TIMEOUT, || {
        let (status, body) = ready(&agent);
        (status == 503 && !body.contains("issuer corp")).then_some(body)
    })
    .unwrap_or_else(|| panic!("corp's keys never loaded\n{}", agent.log()));
    assert!(one.contains("issuer partner"), "{one}");
    let v = SpopClient::open(agent.spop).decide(&Request::new("GET", "/api/x").bearer(&token));
    assert!(v.allow(), "{v:?}");

    slow.set_delay(Duration::ZERO);
    assert!(
        agent.wait_ready(READY_TIMEOUT),
        "never ready: {:?}\n{}",
        ready(&agent),
        agent.log()
    );
    assert_eq!(ready(&agent), (200, "ok\n".to_string()));
    assert_eq!(agent.metric("idgate_ready", &[]), Some(1.0));
}

#[test]
fn metrics_count_real_traffic_by_decision_and_reason() {
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let config = format!(
        "{}\n\
         [[rule]]\nname = \"health\"\npublic = true\npaths = [\"/healthz\"]\n\n\
         [[rule]]\nname = \"no-secrets\"\npaths = [\"/api/*/secrets/**\"]\neffect = \"deny\"\n\n\
         [[rule]]\nname = \"api\"\nmethods = [\"GET\"]\npaths = [\"/api/**\"]\n",
        issuer_block("corp", &idp, "")
    );
    let agent = Agent::start(&config);
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());

    let token = signer.token(&claims(&idp.base));
    let mut old = claims(&idp.base);
    old["iat"] = json!(now() - 7200);
    old["exp"] = json!(now() - 3600);
    let expired = signer.token(&old);
    let get = |p: &str| Request::new("GET", p);
    let traffic: Vec<(Request, &str)> = vec![
        (get("/api/2.0/clusters/list").bearer(&token), "ok"),
        (get("/api/2.0/jobs/list").bearer(&token), "ok"),
        (get("/api/2.0/jobs/get").bearer(&token), "ok"),
        (
            get("/api/2.0/secrets/list").bearer(&token),
            "denied_by_rule",
        ),
        (get("/api/2.0/secrets/get").bearer(&token), "denied_by_rule"),
        (
            Request::new("POST", "/api/2.0/jobs/run").bearer(&token),
            "no_matching_rule",
        ),
        (get("/api/2.0/clusters/list"), "missing_token"),
        (get("/api/2.0/clusters/list"), "missing_token"),
        (get("/api/2.0/clusters/list").bearer(&expired), "expired"),
        (
            get("/api/2.0/clusters/list").bearer("a.b"),
            "malformed_token",
        ),
        (get("/healthz"), "public"),
        (get("/api/../admin").bearer(&token), "bad_request"),
        (
            Request {
                path: None,
                ..get("/x")
            },
            "bad_request",
        ),
    ];
    let mut c = SpopClient::open(agent.spop);
    for (req, reason) in &traffic {
        let v = c.decide(req);
        assert_eq!(v.reason(), *reason, "{req:?} -> {v:?}");
    }

    let m = agent.metrics();
    let mut expected: std::collections::BTreeMap<(&str, &str), f64> = Default::default();
    for (_, reason) in &traffic {
        let decision = if matches!(*reason, "ok" | "public") {
            "allow"
        } else {
            "deny"
        };
        *expected.entry((decision, reason)).or_default() += 1.0;
    }
    for ((decision, reason), n) in &expected {
        assert_eq!(
            metric_value(
                &m,
                "idgate_decisions_total",
                &[("decision", decision), ("reason", reason)]
            ),
            Some(*n),
            "idgate_decisions_total{{decision={decision},reason={reason}}}\n{m}"
        );
    }
    let total = traffic.len() as f64;
    assert_eq!(
        support::metric_sum(&m, "idgate_decisions_total", &[]),
        total,
        "decisions outside the traffic sent"
    );
    let one = |name: &str, labels: &[(&str, &str)]| {
        metric_value(&m, name, labels).unwrap_or_else(|| panic!("{name}{labels:?} missing\n{m}"))
    };
    assert_eq!(one("idgate_decision_duration_seconds_count", &[]), total);
    assert_eq!(
        one("idgate_spop_frames_total", &[("type", "notify")]),
        total
    );
    assert_eq!(one("idgate_spop_frames_total", &[("type", "ack")]), total);
    assert_eq!(
        one("idgate_spop_frames_total", &[("type", "haproxy_hello")]),
        1.0
    );
    assert_eq!(one("idgate_spop_connections", &[]), 1.0);
    // The good token: validated once, then answered from the cache.
    assert!(one("idgate_token_cache_requests_total", &[("result", "hit")]) >= 5.0);
    assert!(one("idgate_token_cache_requests_total", &[("result", "miss")]) >= 1.0);
    assert!(
        one(
            "idgate_jwks_refresh_total",
            &[("issuer", "corp"), ("result", "success")]
        ) >= 1.0
    );
    assert_eq!(
        one("idgate_config_reloads_total", &[("result", "success")]),
        0.0
    );
    assert_eq!(
        one(
            "idgate_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    assert_eq!(one("idgate_ready", &[]), 1.0);
    assert!(one("process_resident_memory_bytes", &[]) > 0.0);
    assert!(one("process_open_fds", &[]) > 0.0);
    assert!(m.contains("# TYPE idgate_decision_duration_seconds histogram"));
    // (idgate_upstream_token_requests_total appears once an upstream is configured.)
    // Label values are bounded: no token, subject, email or path leaks into /metrics.
    for leak in [token.as_str(), "alice", "example.com", "/api/", "secrets"] {
        assert!(!m.contains(leak), "/metrics contains {leak:?}");
    }

    drop(c);
    let closed = poll_until(READY_TIMEOUT, || {
        (agent.metric("idgate_spop_connections", &[]) == Some(0.0)).then_some(())
    });
    assert!(
        closed.is_some(),
        "the connection gauge did not go back to 0"
    );
}

/// SIGTERM while NOTIFYs wait on a slow upstream token endpoint: they are answered (with the
/// credential), then the agent says AGENT-DISCONNECT "normal", closes, and exits 0 within the
/// grace period. An idle connection is told at once; new connections are refused.
#[test]
fn sigterm_answers_inflight_notifies_then_disconnects_and_exits_zero() {
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let fake = rt.block_on(FakeDatabricks::start());
    const ENDPOINT_DELAY: Duration = Duration::from_millis(1500);
    fake.set_delay(ENDPOINT_DELAY);
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sp.secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let config = format!(
        "[spop]\nshutdown_grace = \"5s\"\n\n{}\n\
         [[rule]]\nname = \"serving\"\npaths = [\"/serving-endpoints/**\"]\nupstream = \"sp\"\n\n\
         [upstream.sp]\nkind = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_file = \"{}\"\ntimeout = \"10s\"\ntotal_budget = \"12s\"\n",
        issuer_block("corp", &idp, ""),
        fake.token_url,
        secret.display()
    );
    let mut agent = Agent::start(&config);
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());

    let token = signer.token(&claims(&idp.base));
    let req = Request::new("POST", "/serving-endpoints/m/invocations").bearer(&token);
    let mut busy = SpopClient::open(agent.spop);
    let mut idle = SpopClient::open(agent.spop);
    let mut batch = Vec::new();
    for sid in [1u64, 2, 3] {
        batch.extend_from_slice(&SpopClient::encode_notify(sid, 1, &req));
    }
    busy.send_raw(&batch).unwrap();
    // The agent is now waiting on the token endpoint.
    assert!(
        poll_until(READY_TIMEOUT, || (fake.requests() >= 1).then_some(())).is_some(),
        "the token request never arrived"
    );
    let term_at = Instant::now();
    agent.signal("TERM");

    // The idle connection is told at once.
    match idle.read_frame() {
        Ok(Frame::Disconnect { status, .. }) => assert_eq!(status, Status::Normal),
        other => panic!("idle connection: expected AGENT-DISCONNECT, got {other:?}"),
    }
    assert!(idle.is_closed_within(Duration::from_secs(5)).unwrap());

    // The busy one gets its three answers first, then the DISCONNECT.
    let mut answered = Vec::new();
    for _ in 0..3 {
        match busy.read_frame() {
            Ok(Frame::Ack {
                stream_id, vars, ..
            }) => {
                assert!(vars.allow(), "{vars:?}");
                let cred = vars.str("upstream_authorization").unwrap_or_default();
                assert!(cred.starts_with("Bearer dbx-cc-"), "{vars:?}");
                answered.push(stream_id);
            }
            other => panic!("expected an ACK, got {other:?}\n{}", agent.log()),
        }
    }
    answered.sort_unstable();
    assert_eq!(answered, vec![1, 2, 3]);
    match busy.read_frame() {
        Ok(Frame::Disconnect { status, message }) => {
            assert_eq!(status, Status::Normal, "{message}")
        }
        other => panic!("expected AGENT-DISCONNECT after the ACKs, got {other:?}"),
    }
    assert!(busy.is_closed_within(Duration::from_secs(5)).unwrap());
    assert!(
        term_at.elapsed() >= ENDPOINT_DELAY / 2,
        "answered before the token endpoint did"
    );

    // No new connections once draining.
    let refused = match SpopClient::connect(agent.spop) {
        Err(_) => true,
        Ok(mut c) => c.hello().is_err(),
    };
    assert!(refused, "a new connection was served during shutdown");

    let exit = poll_until(Duration::from_secs(8), || agent.try_exit_status())
        .unwrap_or_else(|| panic!("still running 8 s after SIGTERM\n{}", agent.log()));
    assert_eq!(exit.code(), Some(0), "{}", agent.log());
    assert!(
        term_at.elapsed() < Duration::from_secs(5) + Duration::from_secs(2),
        "exit took {:?}",
        term_at.elapsed()
    );
    assert!(agent.log().contains("idgate stopped"), "{}", agent.log());
}

/// A decision stuck past the grace period (token endpoint hanging, generous upstream
/// timeout) does not hold the agent: at `shutdown_grace` the connection gets its
/// AGENT-DISCONNECT, and the process exits 0 shortly after.
#[test]
fn sigterm_with_a_stuck_decision_exits_at_the_grace_period() {
    const GRACE: Duration = Duration::from_secs(1);
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let fake = rt.block_on(FakeDatabricks::start());
    fake.set_delay(Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("sp.secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let config = format!(
        "[spop]\nshutdown_grace = \"1s\"\n\n{}\n\
         [[rule]]\nname = \"serving\"\npaths = [\"/serving-endpoints/**\"]\nupstream = \"sp\"\n\n\
         [upstream.sp]\nkind = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"{CLIENT_ID}\"\n\
         client_secret_file = \"{}\"\ntimeout = \"20s\"\ntotal_budget = \"25s\"\n",
        issuer_block("corp", &idp, ""),
        fake.token_url,
        secret.display()
    );
    let mut agent = Agent::start(&config);
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());
    let token = signer.token(&claims(&idp.base));
    let mut c = SpopClient::open(agent.spop);
    c.send_notify(
        1,
        1,
        &Request::new("POST", "/serving-endpoints/m/invocations").bearer(&token),
    )
    .unwrap();
    assert!(
        poll_until(READY_TIMEOUT, || (fake.requests() >= 1).then_some(())).is_some(),
        "the token request never arrived"
    );
    let term_at = Instant::now();
    agent.signal("TERM");
    match c.read_frame() {
        Ok(Frame::Disconnect { status, .. }) => assert_eq!(status, Status::Normal),
        other => panic!("expected AGENT-DISCONNECT at the deadline, got {other:?}"),
    }
    let at = term_at.elapsed();
    assert!(
        at >= GRACE && at < GRACE + Duration::from_secs(3),
        "DISCONNECT after {at:?}"
    );
    let exit = poll_until(Duration::from_secs(10), || agent.try_exit_status())
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM\n{}", agent.log()));
    assert_eq!(exit.code(), Some(0), "{}", agent.log());
    assert!(
        term_at.elapsed() < GRACE + Duration::from_secs(5),
        "exit took {:?}",
        term_at.elapsed()
    );
    assert!(
        agent.log().contains("unanswered"),
        "the unanswered NOTIFY is not logged\n{}",
        agent.log()
    );
}

/// A configuration that can only refuse (the embedded default, or the .deb's file before it is
/// edited) says so at start and in /ready's body, while /ready stays 200 (the agent works as
/// configured). A working configuration shows no such warning.
#[test]
fn a_config_that_refuses_everything_is_flagged_at_start_and_in_ready() {
    let agent = Agent::start("[log]\nlevel = \"info\"\naudit = \"off\"\n");
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());
    let r = http_client().get(agent.admin_url("/ready")).send().unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body = r.text().unwrap();
    assert!(
        body.contains("warning: no [[rule]] configured: every request is refused"),
        "{body}"
    );
    let found = poll_until(READY_TIMEOUT, || {
        agent
            .log()
            .contains("no [[rule]] configured: every request is refused")
            .then_some(())
    });
    assert!(found.is_some(), "no start-up warning:\n{}", agent.log());

    let working = Agent::start(
        "[log]\naudit = \"off\"\n\n[[rule]]\nname = \"health\"\npublic = true\npaths = [\"/healthz\"]\n",
    );
    assert!(working.wait_ready(READY_TIMEOUT), "{}", working.log());
    let body = http_client()
        .get(working.admin_url("/ready"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(body, "ok\n");
}
