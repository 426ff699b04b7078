//! Fleets (docs/fleet.md), on every supported HAProxy version with the shipped configuration:
//!
//! - several idgate agents behind one HAProxy (`IDGATE_AGENT2_ADDR`): both serve, and killing
//!   one under load costs at most the requests in flight on it, then none;
//! - several HAProxy nodes sharing the per-identity serving rate limit through HAProxy's
//!   `peers` (`IDGATE_PEER_*`): a caller spreading requests over two nodes is limited at the
//!   configured total, where two nodes without peers let through twice as much; a burst sent
//!   to both at once never gets more than that.

mod support;

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::json;
use support::auth_kit::claims;
use support::haproxy::{Haproxy, HaproxyVersion};
use support::peers::peer_env;
use support::stack::{raw_request, IdpStack, Options};
use support::traffic::{summary, Outcome};
use support::{free_addr, metric_sum, READY_TIMEOUT};

/// Client threads of the agent-pool load. Each has at most one request outstanding, so at
/// most this many requests can be in flight on the agent that is killed.
const LOAD_THREADS: usize = 4;

/// The least share of the decisions each of two agents must take while both are up, on 3.2+
/// (measured: 0.48 to 0.52).
const MIN_SHARE: f64 = 0.1;

/// Requests over which the agents' shares are measured.
const SHARE_WINDOW: usize = 200;

/// Consecutive right answers that show traffic flows after the killed agent is DOWN.
const RECOVERED_RUN: usize = 50;

/// The serving limit of the peers test (IDGATE_SERVING_RATE_LIMIT, per identity per 10 s).
const LIMIT: usize = 10;

/// Requests per phase of the peers test: three times the limit, so that two nodes counting
/// alone (2 x LIMIT) and two sharing their counts (LIMIT) give different answers.
const BURST: usize = 3 * LIMIT;

/// Extra requests a shared limit may let through with sequential requests: each request is
/// answered after its node pushed the update, but the rate counter may under-count by one
/// when the burst straddles a period boundary (see tests/e2e_oidc_haproxy.rs).
const SEQUENTIAL_SLACK: usize = 2;

/// An instantaneous burst (all BURST requests sent at once, half to each node) is limited
/// only as fast as the peers propagate: a node decides on the counts it has received so far,
/// so up to every node's own LIMIT can pass before the others' counts arrive. Measured on
/// this harness: 10 to 20 allowed over 22 runs, median 15, alike on every version. What must
/// hold is that no count is ever lost: never more than the nodes counting alone would allow
/// (2 x LIMIT). A single table shared by all nodes failed this (up to 23): a peer update
/// carries the counter's value, which overwrites the receiver's.
const PARALLEL_MAX: usize = 2 * LIMIT;

const INVOKE: &str = "/serving-endpoints/churn/invocations";

/// Serving invocations for the default test caller (group ml-engineers), no upstream credential.
const SERVING_RULE: &str = r#"
[[rule]]
name = "serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
"#;

/// Right answer for a load request: 200 for a good one, 401 for a bad one.
fn answered_right(o: &Outcome) -> bool {
    o.status == Some(if o.good { 200 } else { 401 })
}

fn decisions(text: &str) -> f64 {
    metric_sum(text, "idgate_decisions_total", &[])
}

fn agent_pool(version: HaproxyVersion) {
    let Some(mut s) = IdpStack::launch(
        version,
        "",
        "",
        Options {
            extra_agents: 1,
            ..Options::default()
        },
    ) else {
        return;
    };
    assert!(
        s.hap
            .wait_server_status("idgate_agents", "idgate2", "UP", READY_TIMEOUT),
        "idgate2 never UP\n{}",
        s.logs()
    );
    let load = s.load(LOAD_THREADS);

    // Both agents serve: each one's decision counter moves.
    let both = support::poll_until(READY_TIMEOUT, || {
        let (a, b) = (
            decisions(&s.agent.metrics()),
            decisions(&s.more_agents[0].metrics()),
        );
        (a > 0.0 && b > 0.0).then_some((a, b))
    });
    let (a0, b0) = both.unwrap_or_else(|| panic!("one agent never decided\n{}", s.logs()));
    assert!(
        load.wait_for_run(RECOVERED_RUN, READY_TIMEOUT, answered_right),
        "no steady traffic with both agents up: {:?}\n{}",
        summary(&load.since(Instant::now() - READY_TIMEOUT)),
        s.logs()
    );
    assert!(
        load.wait_for(SHARE_WINDOW, READY_TIMEOUT),
        "the load stalled\n{}",
        s.logs()
    );
    // And share it. 3.2+ balances each NOTIFY (leastconn over streams): each agent must have
    // decided at least MIN_SHARE of the requests since both did. 2.6/3.0 balance applet
    // connections, a few per thread each carrying many NOTIFYs, so under this light load the
    // split is lumpy (measured: 16 / 242 to even) and only "both decide" is asserted above;
    // leastconn there gave one agent 14 decisions out of 45,000 (backend idgate_agents).
    let (a, b) = (
        decisions(&s.agent.metrics()) - a0,
        decisions(&s.more_agents[0].metrics()) - b0,
    );
    eprintln!(
        "{}: decisions with both up: idgate1 {a}, idgate2 {b}",
        version.label()
    );
    assert!(
        version.runs_haproxy_cfg() || a.min(b) >= MIN_SHARE * (a + b),
        "the agents do not share the load: idgate1 {a}, idgate2 {b}\n{}",
        s.logs()
    );

    // A crash (SIGKILL: no drain, no AGENT-DISCONNECT) under load.
    let killed_at = Instant::now();
    s.stack.more_agents[0].kill();
    assert!(
        s.hap
            .wait_server_status("idgate_agents", "idgate2", "DOWN", READY_TIMEOUT),
        "HAProxy never marked the killed agent DOWN\n{}",
        s.logs()
    );
    let down_at = Instant::now();
    let recovered = load.wait_for_run(RECOVERED_RUN, READY_TIMEOUT, answered_right);
    let outcomes = load.stop();
    assert!(
        recovered,
        "traffic did not recover on the surviving agent\n{}",
        s.logs()
    );

    let failed = |from: Instant| -> Vec<&Outcome> {
        outcomes
            .iter()
            .filter(|o| o.at > from && !answered_right(o))
            .collect()
    };
    let (after_kill, after_down) = (failed(killed_at), failed(down_at));
    let after: Vec<Outcome> = outcomes
        .iter()
        .filter(|o| o.at > killed_at)
        .cloned()
        .collect();
    eprintln!(
        "{}: agent killed: {} of {} requests answered after the kill failed ({} after DOWN, \
         {:?} from kill to DOWN); answers: {:?}",
        version.label(),
        after_kill.len(),
        after.len(),
        after_down.len(),
        down_at - killed_at,
        summary(&after)
    );
    // At most the requests in flight on the killed agent: every client thread has one
    // request outstanding at a time, so at most LOAD_THREADS were waiting for it. New
    // requests in the window before the health check notices go to the survivor (a refused
    // connection is retried on another server: `option redispatch`).
    assert!(
        after_kill.len() <= LOAD_THREADS,
        "more failures than requests in flight on the killed agent: {after_kill:?}\n{}",
        s.logs()
    );
    assert!(
        after_down.is_empty(),
        "requests failed after the killed agent was marked DOWN: {after_down:?}\n{}",
        s.logs()
    );
    assert!(
        decisions(&s.agent.metrics()) > a0 + a,
        "the surviving agent stopped deciding\n{}",
        s.logs()
    );
}

/// Sends `n` serving invocations as `token`, request i to node i % len, one at a time
/// (`parallel` false) or all at once; returns how many were allowed. Every other answer must
/// be the rate limit's 429.
fn burst(nodes: &[&Haproxy], token: &str, n: usize, parallel: bool) -> usize {
    let auth = format!("Bearer {token}");
    let send = |i: usize| -> u16 {
        let addr: SocketAddr = nodes[i % nodes.len()].params.frontend;
        raw_request(addr, "POST", INVOKE, &[("Authorization", &auth)])
            .unwrap_or_else(|e| panic!("request {i} to {addr}: {e}"))
            .status
    };
    let statuses: Vec<u16> = if parallel {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..n).map(|i| scope.spawn(move || send(i))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("request thread"))
                .collect()
        })
    } else {
        (0..n).map(send).collect()
    };
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "only 200 and 429 expected: {statuses:?}"
    );
    statuses.iter().filter(|s| **s == 200).count()
}

fn shared_rate_limit(version: HaproxyVersion) {
    let limit = LIMIT.to_string();
    let peers = [free_addr(), free_addr()];
    let node_env = |me: usize| -> Vec<(&'static str, String)> {
        let mut env = peer_env(me, &peers);
        env.push(("IDGATE_SERVING_RATE_LIMIT", limit.clone()));
        env
    };
    let env1 = node_env(0);
    let env1: Vec<(&'static str, &str)> = env1.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let Some(s) = IdpStack::launch(
        version,
        "",
        SERVING_RULE,
        Options {
            extra_env: &env1,
            ..Options::default()
        },
    ) else {
        return;
    };
    let bin = version.require().expect("required above");
    let upstream = s.echo.upstream();
    let start = |env: &[(&'static str, String)]| {
        let env: Vec<(&'static str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Haproxy::start_with_env_args(version, &bin, s.agent.spop, &upstream, &env, &[])
    };
    let node2 = start(&node_env(1));
    for (name, node) in [("node1", &s.hap), ("node2", &node2)] {
        assert!(
            node.wait_peers_connected(READY_TIMEOUT),
            "{name}: peers never connected: {}\n{}\n--- node2 ---\n{}",
            node.runtime_api("show peers"),
            s.logs(),
            node2.log()
        );
    }
    // One identity per phase: the limit counts per issuer + subject over 10 s.
    let token = |sub: &str| {
        let mut c = claims(&s.idp.base);
        c["sub"] = json!(sub);
        s.signer.token(&c)
    };
    let fleet = [&s.hap, &node2];

    let sequential = burst(&fleet, &token("seq"), BURST, false);
    let parallel = burst(&fleet, &token("par"), BURST, true);

    // The control: the same two nodes' setup without peers counts per node.
    let alone_env = [("IDGATE_SERVING_RATE_LIMIT", limit.clone())];
    let (alone1, alone2) = (start(&alone_env), start(&alone_env));
    let alone = burst(&[&alone1, &alone2], &token("alone"), BURST, false);
    eprintln!(
        "{}: {BURST} requests over two nodes, limit {LIMIT}: allowed {sequential} (sequential, \
         peers), {parallel} (parallel, peers), {alone} (sequential, no peers)",
        version.label()
    );
    assert!(
        alone >= 2 * LIMIT,
        "two nodes without peers should each allow the limit: {alone}"
    );
    assert!(
        (LIMIT..=LIMIT + SEQUENTIAL_SLACK).contains(&sequential),
        "sequential requests over two peered nodes: {sequential} allowed, limit {LIMIT}\n{}",
        s.logs()
    );
    assert!(
        (LIMIT..=PARALLEL_MAX).contains(&parallel),
        "parallel requests over two peered nodes: {parallel} allowed, limit {LIMIT}\n{}",
        s.logs()
    );
}

haproxy_tests!(full: [], compat: [agent_pool, shared_rate_limit]);
