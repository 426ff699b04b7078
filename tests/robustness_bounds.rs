//! Every resource bound of the agent, one test each, against the real binary where the bound
//! is visible from outside (SPOP) and in process where it is not (cache sizes):
//!
//! | bound | key | default |
//! |---|---|---|
//! | open SPOP connections | `spop.max_connections` (at the limit the idle-longest is evicted) | 1024 |
//! | NOTIFYs decided at once per connection | `spop.max_inflight_per_connection` | 64 |
//! | frame size | `spop.max_frame_size` (negotiated down to HAProxy's) | 16380 |
//! | time to a complete HELLO | `spop.hello_timeout` | 2s |
//! | time without a complete frame | `spop.idle_timeout` | 5m |
//! | token length | `auth.max_token_bytes` | 16384 |
//! | validated-token cache entries | `auth.token_cache_size` | 100000 |
//! | per-caller upstream tokens | `upstream.NAME.cache_size` | 10000 |
//!
//! The defaults are checked against the code and against the commented-out values of the
//! shipped example configuration, so the documentation cannot drift.

mod support;

use std::time::{Duration, Instant};

use idgate::config::{AuthConfig, Config, SpopConfig};
use idgate::spop::Status;
use serde_json::json;
use support::agent::Agent;
use support::auth_kit::{claims, MockIdp, Signer};
use support::databricks::FakeDatabricks;
use support::spop_client::{Frame, Request, SpopClient, HAPROXY_MAX_FRAME_SIZE};
use support::{background_runtime, poll_until, repo_path, READY_TIMEOUT};

fn issuer_block(idp: &MockIdp) -> String {
    format!(
        "[[issuer]]\nname = \"corp\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n\
         algorithms = [\"ES256\"]\n",
        idp.base,
        idp.jwks_uri()
    )
}

/// A token whose length is within `max - 3 ..= max` (base64url cannot hit every length).
fn token_of_len(signer: &Signer, iss: &str, max: usize) -> String {
    let mut c = claims(iss);
    for pad in 0..max {
        c["pad"] = json!("x".repeat(pad));
        let t = signer.token(&c);
        if t.len() + 3 >= max && t.len() <= max {
            return t;
        }
        assert!(t.len() < max, "overshot {max}");
    }
    unreachable!()
}

fn expect_disconnect(c: &mut SpopClient, want: Status) -> String {
    match c.read_frame() {
        Ok(Frame::Disconnect { status, message }) => {
            assert_eq!(status, want, "AGENT-DISCONNECT {message:?}");
            message
        }
        other => panic!("expected AGENT-DISCONNECT {want:?}, got {other:?}"),
    }
}

#[test]
fn defaults_are_safe_and_match_the_shipped_example() {
    let s = SpopConfig::default();
    assert_eq!(s.max_connections, 1024);
    assert_eq!(s.max_inflight_per_connection, 64);
    assert_eq!(s.max_frame_size, 16380);
    assert_eq!(s.hello_timeout.0, Duration::from_secs(2));
    assert_eq!(s.idle_timeout.0, Duration::from_secs(300));
    assert_eq!(s.shutdown_grace.0, Duration::from_secs(10));
    let a = AuthConfig::default();
    assert_eq!(a.max_token_bytes, 16384);
    assert_eq!(a.token_cache_size, 100_000);
    assert_eq!(a.token_cache_ttl.0, Duration::from_secs(600));
    let fed =
        "[upstream.fed]\nkind = \"token_exchange\"\ntoken_url = \"https://dbc.example.com/t\"\n";
    let up = &Config::from_toml(fed, "t").unwrap().upstreams["fed"];
    assert_eq!(up.cache_size, 10_000);

    // The example's commented-out values, uncommented, are the defaults.
    let example = std::fs::read_to_string(repo_path("haproxy/idgate.toml")).unwrap();
    let mut uncommented = String::new();
    let mut section = "";
    let mut seen = 0;
    for line in example.lines() {
        let t = line.trim();
        // Owner and group are looked up in the user database: not defaults, and the example's
        // need not exist on this machine.
        if t.trim_start_matches("# ").starts_with("socket_") {
            continue;
        }
        if t.starts_with('[') {
            section = if t == "[spop]" || t == "[auth]" {
                t
            } else {
                ""
            };
            uncommented.push_str(line);
        } else if let Some(kv) = t.strip_prefix("# ").filter(|kv| kv.contains(" = ")) {
            if section.is_empty() {
                continue;
            }
            uncommented.push_str(kv.split(" #").next().unwrap());
            seen += 1;
        } else {
            uncommented.push_str(line);
        }
        uncommented.push('\n');
    }
    assert!(seen >= 8, "example defaults not found:\n{uncommented}");
    // The example's secret file goes next to it.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("serving-sp.secret"), "s3cret\n").unwrap();
    let cfg = Config::from_toml_in(&uncommented, "example", dir.path())
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    let (s, a) = (&cfg.spop, &cfg.auth);
    let d = SpopConfig::default();
    assert_eq!(
        (
            s.max_connections,
            s.max_inflight_per_connection,
            s.max_frame_size,
            s.hello_timeout,
            s.idle_timeout,
            s.shutdown_grace
        ),
        (
            d.max_connections,
            d.max_inflight_per_connection,
            d.max_frame_size,
            d.hello_timeout,
            d.idle_timeout,
            d.shutdown_grace
        ),
        "haproxy/idgate.toml documents other [spop] defaults"
    );
    let da = AuthConfig::default();
    assert_eq!(
        (a.max_token_bytes, a.token_cache_size, a.token_cache_ttl),
        (da.max_token_bytes, da.token_cache_size, da.token_cache_ttl),
        "haproxy/idgate.toml documents other [auth] defaults"
    );
}

/// At `max_connections` a new connection is still served: the connection idle longest is
/// evicted (AGENT-DISCONNECT 13) to make room, and the number of open connections stays at the
/// limit. (A connection with a NOTIFY in flight is never evicted: tests/robustness_flood.rs.)
#[test]
fn connections_beyond_max_connections_evict_the_idle_longest() {
    let agent = Agent::start("[spop]\nmax_connections = 3\n");
    let req = Request::new("GET", "/x");
    let mut held: Vec<SpopClient> = (0..3)
        .map(|_| {
            let mut c = SpopClient::open(agent.spop);
            assert_eq!(c.decide(&req).reason(), "missing_token");
            std::thread::sleep(Duration::from_millis(5));
            c
        })
        .collect();

    // The fourth gets its HELLO and its answer; the oldest is told why and closed.
    let mut extra = SpopClient::open(agent.spop);
    assert_eq!(extra.decide(&req).reason(), "missing_token");
    let msg = expect_disconnect(&mut held[0], Status::ResourceAllocation);
    assert!(msg.contains("connection limit"), "{msg:?}");
    assert!(held[0].is_closed_within(Duration::from_secs(5)).unwrap());
    for c in &mut held[1..] {
        assert_eq!(c.decide(&req).reason(), "missing_token");
    }
    assert_eq!(
        agent.metric("idgate_spop_connections_evicted_total", &[]),
        Some(1.0)
    );
    let at_limit = poll_until(READY_TIMEOUT, || {
        (agent.metric("idgate_spop_connections", &[]) == Some(3.0)).then_some(())
    });
    assert!(at_limit.is_some(), "the limit does not hold");
}

/// The 65th NOTIFY of a connection waits until one of the 64 in progress finishes; all are
/// answered. Observed at a token endpoint that holds each exchange for a while: exactly 64
/// requests arrive, then the 65th once the first ones are answered.
#[test]
fn max_inflight_per_connection_holds_back_the_65th_notify() {
    const DEFAULT_INFLIGHT: u64 = 64;
    const HOLD: Duration = Duration::from_millis(1500);
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let fake = rt.block_on(FakeDatabricks::start());
    fake.set_delay(HOLD);
    let config = format!(
        "{}\n[[rule]]\nname = \"fed\"\npaths = [\"/api/**\"]\nupstream = \"fed\"\n\n\
         [upstream.fed]\nkind = \"token_exchange\"\ntoken_url = \"{}\"\n\
         timeout = \"10s\"\ntotal_budget = \"15s\"\n",
        issuer_block(&idp),
        fake.token_url
    );
    let agent = Agent::start(&config);
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());

    let n = DEFAULT_INFLIGHT + 1;
    let mut batch = Vec::new();
    for i in 0..n {
        let mut c = claims(&idp.base);
        c["jti"] = json!(i);
        let req = Request::new("GET", "/api/x").bearer(&signer.token(&c));
        batch.extend_from_slice(&SpopClient::encode_notify(i + 1, 1, &req));
    }
    let mut c = SpopClient::open(agent.spop);
    c.send_raw(&batch).unwrap();
    let at_limit = poll_until(READY_TIMEOUT, || {
        (fake.requests() >= DEFAULT_INFLIGHT).then_some(())
    });
    assert!(
        at_limit.is_some(),
        "only {} exchanges started",
        fake.requests()
    );
    // While the first 64 are held, the 65th has not started.
    std::thread::sleep(HOLD / 4);
    assert_eq!(
        fake.requests(),
        DEFAULT_INFLIGHT,
        "more than 64 decisions ran at once on one connection"
    );

    let started = Instant::now();
    let mut answered = std::collections::BTreeSet::new();
    for _ in 0..n {
        match c.read_frame() {
            Ok(Frame::Ack {
                stream_id, vars, ..
            }) => {
                assert!(vars.allow(), "{vars:?}\n{}", agent.log());
                assert!(answered.insert(stream_id), "two ACKs for {stream_id}");
            }
            other => panic!("expected an ACK, got {other:?}"),
        }
    }
    assert_eq!(answered.len() as u64, n);
    assert_eq!(fake.requests(), n);
    // The 65th needed its own round trip after a slot freed up.
    assert!(started.elapsed() >= HOLD / 2, "{:?}", started.elapsed());
}

#[test]
fn frames_over_the_negotiated_size_are_refused_with_status_3() {
    const MAX: u32 = 1024;
    let agent = Agent::start(&format!("[spop]\nmax_frame_size = {MAX}\n"));

    // HAProxy offers 16380; the agent answers its own, smaller limit.
    let mut c = SpopClient::connect(agent.spop).unwrap();
    assert_eq!(c.hello().unwrap(), MAX);
    // A NOTIFY of exactly MAX bytes is fine...
    let mut pad = 0;
    let exact = loop {
        let req = Request::new("GET", "/x").bearer(&"a".repeat(pad));
        let f = SpopClient::encode_notify(1, 1, &req);
        if f.len() - 4 == MAX as usize {
            break f;
        }
        assert!(f.len() - 4 < MAX as usize, "overshot");
        pad += 1;
    };
    c.send_raw(&exact).unwrap();
    assert!(matches!(c.read_frame(), Ok(Frame::Ack { .. })));
    // ...one byte more is refused as soon as the length prefix is read.
    c.send_raw(&(MAX + 1).to_be_bytes()).unwrap();
    let msg = expect_disconnect(&mut c, Status::TooBig);
    assert!(msg.contains("1025") && msg.contains("1024"), "{msg:?}");
    assert!(c.is_closed_within(Duration::from_secs(5)).unwrap());

    // A HAProxy with a smaller buffer negotiates down; its limit applies.
    let mut c = SpopClient::connect(agent.spop).unwrap();
    assert_eq!(c.hello_with(512).unwrap(), 512);
    c.send_raw(&600u32.to_be_bytes()).unwrap();
    expect_disconnect(&mut c, Status::TooBig);

    // Before any HELLO, an absurd length (e.g. a stray TLS or HTTP client) is refused at once.
    let mut c = SpopClient::connect(agent.spop).unwrap();
    c.send_raw(&u32::MAX.to_be_bytes()).unwrap();
    expect_disconnect(&mut c, Status::TooBig);
    assert!(c.is_closed_within(Duration::from_secs(5)).unwrap());

    // The default is HAProxy's own maximum.
    let agent = Agent::start("");
    let mut c = SpopClient::connect(agent.spop).unwrap();
    assert_eq!(c.hello().unwrap(), HAPROXY_MAX_FRAME_SIZE);
}

#[test]
fn stalled_peers_are_dropped_by_the_hello_and_idle_timeouts() {
    const HELLO: Duration = Duration::from_millis(300);
    const IDLE: Duration = Duration::from_millis(600);
    let agent = Agent::start("[spop]\nhello_timeout = \"300ms\"\nidle_timeout = \"600ms\"\n");
    let mut hello = bytes::BytesMut::new();
    idgate::spop::frame::encode_haproxy_hello(&mut hello, "2.0", 16380, "pipelining", false);

    // Half a HELLO, then nothing.
    let t = Instant::now();
    let mut c = SpopClient::connect(agent.spop).unwrap();
    c.send_raw(&hello[..hello.len() / 2]).unwrap();
    expect_disconnect(&mut c, Status::Timeout);
    let waited = t.elapsed();
    assert!(
        waited >= HELLO && waited < HELLO + Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(c.is_closed_within(Duration::from_secs(5)).unwrap());

    // Connected, silent.
    let t = Instant::now();
    let mut c = SpopClient::connect(agent.spop).unwrap();
    expect_disconnect(&mut c, Status::Timeout);
    assert!(t.elapsed() >= HELLO);

    // After the HELLO and one decision, half a NOTIFY, then nothing: the idle timeout.
    // The idle clock restarts on complete frames only (a byte at a time must not keep a
    // connection alive), so it runs from the ACK: start timing before the decision, or the
    // few milliseconds between that ACK and the partial NOTIFY would count against the bound.
    let mut c = SpopClient::open(agent.spop);
    let t = Instant::now();
    assert_eq!(
        c.decide(&Request::new("GET", "/x")).reason(),
        "missing_token"
    );
    let notify = SpopClient::encode_notify(9, 1, &Request::new("GET", "/x"));
    c.send_raw(&notify[..notify.len() - 3]).unwrap();
    expect_disconnect(&mut c, Status::Timeout);
    let waited = t.elapsed();
    assert!(
        waited >= IDLE && waited < IDLE + Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(c.is_closed_within(Duration::from_secs(5)).unwrap());

    // An idle connection with nothing pending is closed too (HAProxy reconnects).
    let mut c = SpopClient::open(agent.spop);
    let t = Instant::now();
    match c.read_frame() {
        Ok(Frame::Disconnect { .. }) | Err(_) => {}
        other => panic!("idle connection: {other:?}"),
    }
    assert!(t.elapsed() >= IDLE / 2, "{:?}", t.elapsed());

    // Meanwhile a busy connection is not affected: each frame restarts its clock.
    let mut busy = SpopClient::open(agent.spop);
    let until = Instant::now() + IDLE * 2;
    while Instant::now() < until {
        assert_eq!(
            busy.decide(&Request::new("GET", "/x")).reason(),
            "missing_token"
        );
        std::thread::sleep(IDLE / 4);
    }
    let timeouts = agent
        .metric(
            "idgate_spop_connection_errors_total",
            &[("status", Status::Timeout.label())],
        )
        .unwrap_or(0.0);
    assert!(timeouts >= 3.0, "timeouts counted: {timeouts}");
}

/// A peer that keeps sending NOTIFYs but never reads the ACKs (a wedged HAProxy) fills both
/// socket buffers; the agent's blocked write gives up after the write timeout (10 s, or
/// `idle_timeout` when shorter) and the connection is dropped. Others are unaffected.
#[test]
fn a_peer_that_stops_reading_is_dropped_after_the_write_timeout() {
    let agent = Agent::start("[spop]\nidle_timeout = \"1s\"\n");
    let mut c = SpopClient::open(agent.spop);
    let mut batch = Vec::new();
    for i in 1..=2000u64 {
        batch.extend_from_slice(&SpopClient::encode_notify(i, 1, &Request::new("GET", "/x")));
    }
    let started = Instant::now();
    let mut sent = 0u64;
    let dropped = loop {
        if c.send_raw(&batch).is_err() {
            break true;
        }
        sent += 2000;
        if started.elapsed() > Duration::from_secs(60) {
            break false;
        }
    };
    assert!(
        dropped,
        "still accepting after {sent} unread NOTIFYs\n{}",
        agent.log()
    );
    eprintln!(
        "dropped after {sent} NOTIFYs without a read, {:?}",
        started.elapsed()
    );
    assert!(
        sent > 0,
        "the connection was dropped before the buffers filled"
    );
    let mut other = SpopClient::open(agent.spop);
    assert_eq!(
        other.decide(&Request::new("GET", "/x")).reason(),
        "missing_token"
    );
    let gauge = poll_until(READY_TIMEOUT, || {
        (agent.metric("idgate_spop_connections", &[]) == Some(1.0)).then_some(())
    });
    assert!(
        gauge.is_some(),
        "the dropped connection is still counted open"
    );
}

#[test]
fn tokens_over_max_token_bytes_are_malformed_before_any_decoding() {
    const MAX: usize = 1024;
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let config = format!(
        "[auth]\nmax_token_bytes = {MAX}\n\n{}\n[[rule]]\nname = \"api\"\npaths = [\"/api/**\"]\n",
        issuer_block(&idp)
    );
    let agent = Agent::start(&config);
    assert!(agent.wait_ready(READY_TIMEOUT), "{}", agent.log());
    let mut c = SpopClient::open(agent.spop);

    let fits = token_of_len(&signer, &idp.base, MAX);
    let v = c.decide(&Request::new("GET", "/api/x").bearer(&fits));
    assert!(v.allow(), "a {}-byte token: {v:?}", fits.len());

    let over = token_of_len(&signer, &idp.base, MAX + 4);
    assert!(over.len() > MAX);
    let v = c.decide(&Request::new("GET", "/api/x").bearer(&over));
    assert_eq!(
        v.reason(),
        "malformed_token",
        "a {}-byte token: {v:?}",
        over.len()
    );
    assert_eq!(v.status(), 401);
    assert!(
        v.str("www_authenticate")
            .unwrap()
            .contains("larger than auth.max_token_bytes"),
        "{v:?}"
    );
    // Refused before validation: it never reached the cache.
    assert_eq!(
        agent.metric("idgate_token_cache_requests_total", &[("result", "miss")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_cache_never_holds_more_than_token_cache_size() {
    const SIZE: u64 = 50;
    const TOKENS: u64 = 90;
    let signer = Signer::ec("k1");
    let idp = MockIdp::start(&[&signer]).await;
    let text = format!(
        "[auth]\ntoken_cache_size = {SIZE}\n\n{}",
        issuer_block(&idp)
    );
    let cfg = Config::from_toml(&text, "test").unwrap();
    let auth = support::auth_kit::ready_auth(&cfg).await;
    for i in 0..TOKENS {
        let mut c = claims(&idp.base);
        c["jti"] = json!(i);
        let t = signer.token(&c);
        auth.authenticate(&t)
            .await
            .unwrap_or_else(|r| panic!("token {i}: {r:?}"));
        assert!(
            auth.cached_tokens() <= SIZE,
            "{} entries after {} tokens",
            auth.cached_tokens(),
            i + 1
        );
    }
    let held = auth.cached_tokens();
    assert!(held > 0 && held <= SIZE, "{held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_token_cache_never_holds_more_than_cache_size() {
    const SIZE: u64 = 20;
    const CALLERS: u64 = 35;
    let fake = FakeDatabricks::start().await;
    let text = format!(
        "[upstream.fed]\nkind = \"token_exchange\"\ntoken_url = \"{}\"\ncache_size = {SIZE}\n",
        fake.token_url
    );
    let cfg = Config::from_toml(&text, "test").unwrap();
    let broker = idgate::upstream::Broker::new(&cfg, None, reqwest::Client::new()).unwrap();
    for i in 0..CALLERS {
        let caller = format!("caller-token-{i}");
        let cred = broker
            .credential("fed", Some(&caller), None)
            .await
            .unwrap_or_else(|e| panic!("caller {i}: {e}"));
        assert!(cred.starts_with("Bearer dbx-tx-"), "{cred}");
        let held = broker.cached_tokens("fed").await.unwrap();
        assert!(held <= SIZE, "{held} entries after {} callers", i + 1);
    }
    assert_eq!(fake.requests(), CALLERS);
    let held = broker.cached_tokens("fed").await.unwrap();
    assert!(held > 0 && held <= SIZE, "{held}");
    assert_eq!(broker.cached_tokens("nope").await, None);
}
