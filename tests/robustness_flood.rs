//! Connection floods against the real binary: a local client that opens more connections than
//! the limit and leaves them idle must not lock HAProxy out of the SPOP port, nor monitoring
//! out of the admin port.
//!
//! * SPOP (`spop.max_connections`): at the limit a new connection evicts the connection idle
//!   longest, never one with a NOTIFY in flight; a health check (`spop-check`) still gets its
//!   AGENT-HELLO.
//! * Admin (64 connections): at the cap a new connection evicts the idle-longest one, so
//!   `/live` and `/metrics` answer within a second or two.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use idgate::spop::Status;
use serde_json::json;
use support::agent::Agent;
use support::auth_kit::{claims, MockIdp, Signer};
use support::databricks::FakeDatabricks;
use support::spop_client::{Frame, Request, SpopClient};
use support::{background_runtime, http_client, poll_until, READY_TIMEOUT};

const MAX: usize = 16;

/// Opens `n` connections that complete their HELLO and then sit idle.
fn idle_flood(agent: &Agent, n: usize) -> Vec<SpopClient> {
    (0..n)
        .map(|_| SpopClient::open_to(&agent.spop_addr()))
        .collect()
}

fn check_flood_is_survived(agent: &Agent) {
    let flood = idle_flood(agent, MAX * 3);
    // The newest connection works: HELLO answered (open_to), NOTIFY answered.
    let mut fresh = SpopClient::open_to(&agent.spop_addr());
    assert_eq!(
        fresh.decide(&Request::new("GET", "/x")).reason(),
        "missing_token"
    );
    // HAProxy's health check gets its AGENT-HELLO.
    let mut check = SpopClient::connect_to(&agent.spop_addr()).unwrap();
    assert!(
        check.healthcheck().is_ok(),
        "health check refused under a flood\n{}",
        agent.log()
    );
    let evicted = agent
        .metric("idgate_spop_connections_evicted_total", &[])
        .unwrap_or(0.0);
    assert!(
        evicted >= (MAX * 2) as f64,
        "only {evicted} evictions\n{}",
        agent.log()
    );
    // The limit holds: evicted connections are closed, with AGENT-DISCONNECT 13 (they had
    // done their HELLO).
    let open = poll_until(READY_TIMEOUT, || {
        let n = agent.metric("idgate_spop_connections", &[])?;
        (n <= MAX as f64).then_some(n)
    });
    assert!(open.is_some(), "more than {MAX} connections stay open");
    let mut first = flood.into_iter().next().unwrap();
    match first.read_frame() {
        Ok(Frame::Disconnect { status, .. }) => assert_eq!(status, Status::ResourceAllocation),
        other => panic!("the oldest idle connection: {other:?}"),
    }
    assert!(first.is_closed_within(Duration::from_secs(5)).unwrap());
}

#[test]
fn a_flood_of_idle_connections_does_not_lock_haproxy_out_tcp() {
    let agent = Agent::start(&format!("[spop]\nmax_connections = {MAX}\n"));
    check_flood_is_survived(&agent);
}

#[test]
fn a_flood_of_idle_connections_does_not_lock_haproxy_out_unix() {
    let agent = Agent::start_unix(&format!("[spop]\nmax_connections = {MAX}\n"));
    check_flood_is_survived(&agent);
}

/// Connections that never send a HELLO are evicted first, silently, and time out after the
/// (short) HELLO timeout anyway.
#[test]
fn connections_without_a_hello_are_evicted_first() {
    let agent = Agent::start("[spop]\nmax_connections = 4\n");
    let mut hello = SpopClient::open(agent.spop);
    // Three silent connections fill the limit.
    let silent: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(agent.spop).unwrap())
        .collect();
    assert!(poll_until(READY_TIMEOUT, || {
        (agent.metric("idgate_spop_connections", &[]) == Some(4.0)).then_some(())
    })
    .is_some());
    // Two new connections evict two silent ones (closed without a frame), not `hello`,
    // although `hello` is older.
    let _a = SpopClient::open(agent.spop);
    let _b = SpopClient::open(agent.spop);
    // Read briefly (well within the 2 s HELLO timeout): EOF or a reset means evicted.
    let closed = silent
        .iter()
        .filter(|s| {
            let mut s = *s;
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut buf = [0u8; 16];
            match s.read(&mut buf) {
                Ok(0) => true,
                Ok(n) => panic!("an evicted connection without HELLO got {n} bytes"),
                Err(e) => !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        })
        .count();
    assert!(closed >= 2, "only {closed} silent connections were closed");
    assert_eq!(
        hello.decide(&Request::new("GET", "/x")).reason(),
        "missing_token",
        "the connection that did its HELLO was evicted"
    );
}

/// A connection whose NOTIFY is still being decided (a slow token endpoint) is never evicted,
/// although it is the one idle longest.
#[test]
fn a_connection_with_a_notify_in_flight_is_not_evicted() {
    const HOLD: Duration = Duration::from_secs(5);
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let fake = rt.block_on(FakeDatabricks::start());
    fake.set_delay(HOLD);
    let config = format!(
        "[spop]\nmax_connections = 4\n\n\
         [[issuer]]\nname = \"corp\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n\
         algorithms = [\"ES256\"]\n\n\
         [[rule]]\nname = \"fed\"\npaths = [\"/api/**\"]\nupstream = \"fed\"\n\n\
         [upstream.fed]\nkind = \"token_exchange\"\ntoken_url = \"{}\"\n\
         timeout = \"10s\"\ntotal_budget = \"15s\"\n",
        idp.base,
        idp.jwks_uri(),
        fake.token_url
    );
    let agent = Agent::start(&config);
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());

    // The slow one: its NOTIFY waits for the token endpoint.
    let mut slow = SpopClient::open(agent.spop);
    let mut c = claims(&idp.base);
    c["jti"] = json!("slow");
    slow.send_notify(
        1,
        1,
        &Request::new("GET", "/api/x").bearer(&signer.token(&c)),
    )
    .unwrap();
    assert!(poll_until(READY_TIMEOUT, || (fake.requests() >= 1).then_some(())).is_some());
    // Three more that each decide something (so none is preferred for never sending a
    // NOTIFY), all more recently active than `slow`.
    let mut others: Vec<SpopClient> = (0..3)
        .map(|_| {
            let mut o = SpopClient::open(agent.spop);
            o.decide(&Request::new("GET", "/public"));
            o
        })
        .collect();
    // The limit is reached: each new connection (which decides something at once, like
    // HAProxy's) evicts the connection idle longest, one of `others`, never `slow`; then
    // the oldest of the new ones.
    let started = Instant::now();
    let mut fresh: Vec<SpopClient> = (0..5)
        .map(|_| {
            let mut f = SpopClient::open(agent.spop);
            assert_eq!(
                f.decide(&Request::new("GET", "/x")).reason(),
                "missing_token"
            );
            f
        })
        .collect();
    for o in &mut others {
        match o.read_frame() {
            Ok(Frame::Disconnect { status, .. }) => {
                assert_eq!(status, Status::ResourceAllocation)
            }
            other => panic!("an idle connection was not evicted: {other:?}"),
        }
    }
    assert!(
        started.elapsed() < HOLD,
        "the evictions waited for the slow NOTIFY"
    );
    match slow.read_frame() {
        Ok(Frame::Ack {
            stream_id, vars, ..
        }) => {
            assert_eq!(stream_id, 1);
            assert!(vars.allow(), "{vars:?}\n{}", agent.log());
        }
        other => panic!("the connection with a NOTIFY in flight: {other:?}"),
    }
    // The evictions after `others` took the connection idle longest: the oldest of the new
    // ones while `slow` was still busy, or `slow` itself if its NOTIFY finished first (its
    // last activity predates every new connection; on a loaded machine opening the new
    // connections can outlast HOLD).
    match fresh[0].read_frame() {
        Ok(Frame::Disconnect { status, .. }) => assert_eq!(status, Status::ResourceAllocation),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => match slow.read_frame() {
            Ok(Frame::Disconnect { status, .. }) => {
                assert_eq!(status, Status::ResourceAllocation)
            }
            other => panic!(
                "neither the oldest new connection nor the finished slow one was evicted: \
                 {other:?}"
            ),
        },
        other => panic!("the oldest new connection: {other:?}"),
    }
    let mut last = SpopClient::open(agent.spop);
    assert_eq!(
        last.decide(&Request::new("GET", "/x")).reason(),
        "missing_token"
    );
    assert!(agent.metric("idgate_spop_connections_evicted_total", &[]) >= Some(6.0));
}

#[test]
fn admin_endpoint_answers_while_its_connections_are_flooded() {
    let agent = Agent::start("");
    // More idle connections than the admin cap (64), some with half a request.
    let mut held: Vec<TcpStream> = (0..80)
        .map(|i| {
            let mut s = TcpStream::connect(agent.admin).unwrap();
            if i % 2 == 0 {
                s.write_all(b"GET /live HTTP/1.1\r\n").unwrap();
            }
            s
        })
        .collect();
    for path in ["/live", "/metrics", "/live"] {
        let started = Instant::now();
        let resp = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap()
            .get(agent.admin_url(path))
            .send()
            .unwrap_or_else(|e| panic!("{path} under an admin connection flood: {e}"));
        assert_eq!(resp.status(), 200, "{path}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{path}: {:?}",
            started.elapsed()
        );
    }
    let evicted = support::metric_value(
        &http_client()
            .get(agent.admin_url("/metrics"))
            .send()
            .unwrap()
            .text()
            .unwrap(),
        "idgate_admin_connections_evicted_total",
        &[],
    )
    .unwrap_or(0.0);
    assert!(evicted >= 16.0, "{evicted} evictions");
    held.clear();
}
