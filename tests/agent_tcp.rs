//! The real SPOP server on 127.0.0.1:0, driven with raw bytes over TCP: the protocol spec's
//! byte-exact frames (`e1()`..`e10()`) and malformed input are written as bytes, everything
//! else goes through the tests' SPOP client (tests/support/spop_client.rs).

mod support;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use idgate::config::{Dur, SpopConfig};
use idgate::decision::{Authorizer, AuthzRequest, Reason, Verdict};
use idgate::spop::frame::{self, Arg, Message};
use idgate::spop::{Status, TypedData};

use support::foundation::FoundationAuthorizer;
use support::spop_client::{decode_raw, AsyncSpopClient, Request};

/// Upper bound for any single wait in these tests; nothing should come close.
const WAIT: Duration = Duration::from_secs(5);

// ----- frames -----

/// Bytes from hex tokens and double-quoted ASCII strings.
fn b(spec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, part) in spec.split('"').enumerate() {
        if i % 2 == 1 {
            out.extend_from_slice(part.as_bytes());
        } else {
            for tok in part.split_whitespace() {
                for j in (0..tok.len()).step_by(2) {
                    out.push(u8::from_str_radix(&tok[j..j + 2], 16).expect("hex"));
                }
            }
        }
    }
    out
}

/// spop-protocol.md §12 E1: health-check HAPROXY-HELLO.
fn e1() -> Vec<u8> {
    b(
        r#"00 00 00 4e 01 00 00 00 01 00 00 12 "supported-versions" 08 03 "2.0"
        0e "max-frame-size" 03 fc f0 06 0c "capabilities" 08 00 0b "healthcheck" 11"#,
    )
}
/// E2: HAProxy 2.6 HELLO.
fn e2() -> Vec<u8> {
    b(
        r#"00000081 01 00000001 00 00 12 "supported-versions" 08 03 "2.0" 0e "max-frame-size" 03 fcf006
        0c "capabilities" 08 10 "pipelining,async" 09 "engine-id" 08 24 "75352caa-64d7-4472-91c1-f5d19ee07b9d""#,
    )
}
/// E3: HAProxy 3.2 HELLO.
fn e3() -> Vec<u8> {
    b(
        r#"0000007b 01 00000001 00 00 12 "supported-versions" 08 03 "2.0" 0e "max-frame-size" 03 fcf006
        0c "capabilities" 08 0a "pipelining" 09 "engine-id" 08 24 "75352caa-64d7-4472-91c1-f5d19ee07b9d""#,
    )
}
/// E4: the exact AGENT-HELLO expected for a 16380-byte HAProxy.
fn e4() -> Vec<u8> {
    b(r#"00 00 00 40 65 00 00 00 01 00 00 07 "version" 08 03 "2.0"
        0e "max-frame-size" 03 fc f0 06 0c "capabilities" 08 0a "pipelining""#)
}
/// E10: HAPROXY-DISCONNECT "I/O error".
fn e10() -> Vec<u8> {
    b(r#"00000028 02 00000001 00 00 0b "status-code" 03 01 07 "message" 08 09 "I/O error""#)
}

/// The request of these tests: `GET /api/x` on api.example.com, with this Authorization (an
/// absent one left out of the message).
fn request(authorization: Option<&str>) -> Request {
    let r = Request::new("GET", "/api/x").host("api.example.com");
    match authorization {
        Some(a) => r.authorization(a),
        None => r,
    }
}

/// A NOTIFY with the contract's `authorize` message.
fn notify(sid: u64, fid: u64, authorization: Option<&str>) -> Vec<u8> {
    request(authorization).notify(sid, fid).to_vec()
}

// ----- server -----

struct TestServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<()>,
}

impl TestServer {
    async fn start<A: Authorizer>(cfg: SpopConfig, authorizer: A) -> TestServer {
        let listener = idgate::server::bind("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(idgate::server::serve(
            listener,
            cfg,
            Arc::new(authorizer),
            async move {
                let _ = rx.await;
            },
        ));
        TestServer {
            addr,
            stop: Some(tx),
            handle,
        }
    }

    async fn foundation() -> TestServer {
        TestServer::start(SpopConfig::default(), FoundationAuthorizer::default()).await
    }

    /// A connection, no HELLO yet; every read bounded by [`WAIT`].
    async fn connect(&self) -> AsyncSpopClient {
        let mut c = AsyncSpopClient::connect(self.addr).await.unwrap();
        c.timeout = WAIT;
        c
    }

    /// A connection with the HELLO done (HAProxy 3.2's, byte for byte).
    async fn ready(&self) -> AsyncSpopClient {
        let mut c = self.connect().await;
        c.send_raw(&e3()).await.unwrap();
        assert_eq!(c.raw_frame().await, e4());
        c
    }

    fn shutdown(&mut self) {
        let _ = self.stop.take().unwrap().send(());
    }
}

/// One NOTIFY without a token on stream `sid`, answered `missing_token`.
async fn round_trip(s: &mut AsyncSpopClient, sid: u64) {
    let vars = s.decide_as(sid, &request(None)).await;
    assert_eq!(
        vars.get("reason"),
        Some(&TypedData::static_str("missing_token"))
    );
}

fn frames_total(t: &str) -> u64 {
    idgate::metrics::metrics()
        .spop_frames
        .with_label_values(&[t])
        .get()
}

fn connection_errors(status: &str) -> u64 {
    idgate::metrics::metrics()
        .spop_connection_errors
        .with_label_values(&[status])
        .get()
}

// ----- tests -----

#[tokio::test]
async fn hello_26_and_32_get_the_exact_agent_hello() {
    let srv = TestServer::foundation().await;
    for hello in [e2(), e3()] {
        let mut s = srv.connect().await;
        s.send_raw(&hello).await.unwrap();
        assert_eq!(s.raw_frame().await, e4());
        round_trip(&mut s, 1).await;
    }
}

#[tokio::test]
async fn healthcheck_hello_gets_agent_hello_then_close() {
    let srv = TestServer::foundation().await;
    let mut s = srv.connect().await;
    s.send_raw(&e1()).await.unwrap();
    assert_eq!(s.raw_frame().await, e4());
    s.expect_closed().await;
}

#[tokio::test]
async fn twenty_pipelined_notifies_with_large_ids_each_acked_once() {
    let srv = TestServer::foundation().await;
    let acks_before = frames_total("ack");
    let mut s = srv.ready().await;
    let mut batch = Vec::new();
    let mut expected = HashSet::new();
    for i in 0..20u64 {
        let (sid, fid) = ((1 << 40) + i, (1 << 41) + 7 * i);
        let authz = (i % 2 == 0).then_some("Bearer abc.def.ghi");
        batch.extend_from_slice(&notify(sid, fid, authz));
        expected.insert((sid, fid));
    }
    s.send_raw(&batch).await.unwrap();
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let (sid, fid, vars) = s.frame().await.ack();
        assert!(seen.insert((sid, fid)), "duplicate ACK for {sid}/{fid}");
        assert_eq!(vars.get("allow"), Some(&TypedData::Bool(false)));
        assert_eq!(vars.get("status"), Some(&TypedData::Int64(401)));
        let i = sid - (1 << 40);
        let reason = if i % 2 == 0 {
            "unsupported_token"
        } else {
            "missing_token"
        };
        assert_eq!(vars.get("reason"), Some(&TypedData::static_str(reason)));
        assert!(vars.get("www_authenticate").is_some());
    }
    assert_eq!(seen, expected);
    // Tests run in parallel and share the registry: at least ours were counted.
    assert!(frames_total("ack") >= acks_before + 20);
    // Nothing else was queued: the next frame is the answer to our DISCONNECT.
    s.send_raw(&e10()).await.unwrap();
    assert_eq!(s.frame().await.disconnect_status(), Status::Normal);
    s.expect_closed().await;
}

#[tokio::test]
async fn notify_written_one_byte_at_a_time() {
    let srv = TestServer::foundation().await;
    let mut s = srv.connect().await;
    for byte in e2() {
        s.send_raw(&[byte]).await.unwrap();
    }
    assert_eq!(s.raw_frame().await, e4());
    for byte in notify(0, 2, Some("Bearer x")) {
        s.send_raw(&[byte]).await.unwrap();
    }
    let (sid, fid, vars) = s.frame().await.ack();
    assert_eq!((sid, fid), (0, 2));
    assert_eq!(
        vars.get("reason"),
        Some(&TypedData::static_str("unsupported_token"))
    );
}

#[tokio::test]
async fn notify_without_authorize_message_gets_bad_request() {
    let srv = TestServer::foundation().await;
    let mut s = srv.ready().await;
    let mut buf = BytesMut::new();
    let other = Message {
        name: Bytes::from_static(b"check-request"),
        args: vec![Arg {
            name: Bytes::from_static(b"method"),
            value: TypedData::static_str("GET"),
        }],
    };
    frame::encode_notify(&mut buf, 3, 1, &[other]);
    frame::encode_notify(&mut buf, 5, 1, &[]);
    s.send_raw(&buf).await.unwrap();
    for _ in 0..2 {
        let (_, _, vars) = s.frame().await.ack();
        assert_eq!(vars.get("status"), Some(&TypedData::Int64(400)));
        assert_eq!(
            vars.get("reason"),
            Some(&TypedData::static_str("bad_request"))
        );
    }
}

#[tokio::test]
async fn malformed_input_gets_the_right_disconnect_and_others_keep_working() {
    let srv = TestServer::foundation().await;
    let mut keeper = srv.ready().await;
    let version = |v: &str| {
        let mut f = BytesMut::new();
        frame::encode_haproxy_hello(&mut f, v, 16380, "pipelining", false);
        f.to_vec()
    };
    let small_mfs = {
        let mut f = BytesMut::new();
        frame::encode_haproxy_hello(&mut f, "2.0", 100, "", false);
        f.to_vec()
    };
    let cases: Vec<(&str, bool, Vec<u8>, Status)> = vec![
        (
            "notify before hello",
            false,
            notify(1, 1, None),
            Status::Invalid,
        ),
        (
            "http request",
            false,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Status::TooBig,
        ),
        (
            "oversized",
            true,
            b("00 00 3f fd 03 00 00 00 01 01 01"),
            Status::TooBig,
        ),
        ("huge length", false, b("ff ff ff ff"), Status::TooBig),
        (
            "length below header",
            false,
            b("00 00 00 02 01 00"),
            Status::Invalid,
        ),
        (
            "unknown type",
            true,
            b("00 00 00 07 09 00 00 00 01 01 01"),
            Status::Invalid,
        ),
        (
            "ack from haproxy",
            true,
            b("00 00 00 07 67 00 00 00 01 01 01"),
            Status::Invalid,
        ),
        (
            "unset frame",
            true,
            b("00 00 00 07 00 00 00 00 01 01 01"),
            Status::FragmentationNotSupported,
        ),
        (
            "no fin",
            true,
            b("00 00 00 07 03 00 00 00 00 01 01"),
            Status::FragmentationNotSupported,
        ),
        (
            "reserved data type",
            true,
            b(r#"00 00 00 0f 03 00 00 00 01 01 01 03 "msg" 01 01 "a" 0b"#),
            Status::Invalid,
        ),
        (
            "string past the frame",
            true,
            b(r#"00 00 00 11 03 00 00 00 01 01 01 03 "msg" 01 01 "a" 08 05 "x""#),
            Status::Invalid,
        ),
        (
            "overlong varint",
            true,
            b("00 00 00 10 03 00 00 00 01 ff ff ff ff ff ff ff ff ff ff ff"),
            Status::Invalid,
        ),
        ("second hello", true, e2(), Status::Invalid),
        ("version 1.0", false, version("1.0"), Status::BadVersion),
        ("max-frame-size 100", false, small_mfs, Status::BadFrameSize),
        (
            "no max-frame-size",
            false,
            b(r#"00 00 00 1f 01 00 00 00 01 00 00 12 "supported-versions" 08 03 "2.0""#),
            Status::NoFrameSize,
        ),
        (
            "no version",
            false,
            b(r#"00 00 00 1a 01 00 00 00 01 00 00 0e "max-frame-size" 03 fc f0 06"#),
            Status::NoVersion,
        ),
    ];
    let errors_before = connection_errors("4");
    for (name, after_hello, input, status) in cases {
        let mut s = if after_hello {
            srv.ready().await
        } else {
            srv.connect().await
        };
        s.send_raw(&input).await.unwrap();
        assert_eq!(s.frame().await.disconnect_status(), status, "case {name:?}");
        s.expect_closed().await;
    }
    // Truncated by EOF: the half-frame is answered with status 4.
    let mut s = srv.ready().await;
    s.send_raw(&notify(1, 1, None)[..12]).await.unwrap();
    s.stream().shutdown().await.unwrap();
    assert_eq!(s.frame().await.disconnect_status(), Status::Invalid);
    s.expect_closed().await;
    assert!(connection_errors("4") >= errors_before + 9);
    // The connection opened first never noticed.
    round_trip(&mut keeper, 7).await;
}

#[tokio::test]
async fn three_hundred_rapid_reconnects() {
    let srv = TestServer::foundation().await;
    let started = Instant::now();
    for i in 0..300u32 {
        let mut s = srv.connect().await;
        let hello = if i % 2 == 0 { e2() } else { e3() };
        s.send_raw(&hello).await.unwrap();
        assert_eq!(s.raw_frame().await, e4(), "cycle {i}");
        if i % 3 == 0 {
            s.send_raw(&e10()).await.unwrap();
            assert_eq!(s.frame().await.disconnect_status(), Status::Normal);
        }
        drop(s);
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    let mut s = srv.ready().await;
    round_trip(&mut s, 1).await;
}

#[tokio::test]
async fn haproxy_disconnect_is_answered_and_closed() {
    let srv = TestServer::foundation().await;
    let mut s = srv.ready().await;
    s.send_raw(&e10()).await.unwrap();
    let f = s.raw_frame().await;
    assert_eq!(
        f,
        b(r#"00 00 00 25 66 00 00 00 01 00 00 0b "status-code" 03 00 07 "message" 08 06 "normal""#)
    );
    s.expect_closed().await;
}

/// At the limit a new connection evicts the connection idle longest (preferring one that
/// never sent a NOTIFY); only when every connection has a NOTIFY in flight is it refused.
#[tokio::test]
async fn connection_limit_evicts_the_idle_then_refuses_when_all_are_busy() {
    let (tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let gate = Gate {
        entered: tx,
        release: release.clone(),
    };
    let cfg = SpopConfig {
        max_connections: 2,
        ..SpopConfig::default()
    };
    let srv = TestServer::start(cfg, gate).await;
    let mut a = srv.ready().await;
    let mut b2 = srv.ready().await;
    // `a` decides something (held by the gate, then released): it is a working connection.
    a.send_raw(&notify(1, 1, None)).await.unwrap();
    timeout(WAIT, entered.recv()).await.unwrap().unwrap();
    release.add_permits(1);
    a.frame().await.ack();
    // `a` is idle longest, but `b2` never sent a NOTIFY: `b2` goes, with AGENT-DISCONNECT 13.
    let mut c = srv.ready().await;
    assert_eq!(
        b2.frame().await.disconnect_status(),
        Status::ResourceAllocation
    );
    b2.expect_closed().await;
    // `a` and `c` get a NOTIFY each, held in flight: neither may be evicted, so the next
    // connection is refused at once (AGENT-DISCONNECT 13 if it got out, then close; never an
    // AGENT-HELLO).
    a.send_raw(&notify(3, 1, None)).await.unwrap();
    c.send_raw(&notify(5, 1, None)).await.unwrap();
    for _ in 0..2 {
        timeout(WAIT, entered.recv()).await.unwrap().unwrap();
    }
    let mut d = srv.connect().await;
    let _ = d.send_raw(&e3()).await;
    let mut buf = vec![0u8; 256];
    let n = timeout(WAIT, d.stream().read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    if n > 0 {
        assert_eq!(
            decode_raw(&buf[..n]).unwrap().disconnect_status(),
            Status::ResourceAllocation
        );
    }
    d.expect_closed().await;
    // Both are answered.
    release.add_permits(2);
    assert_eq!(a.frame().await.ack().0, 3);
    assert_eq!(c.frame().await.ack().0, 5);
    // `c` decides once more, so `a` is idle longest (activity is tracked in milliseconds).
    tokio::time::sleep(Duration::from_millis(10)).await;
    c.send_raw(&notify(7, 1, None)).await.unwrap();
    timeout(WAIT, entered.recv()).await.unwrap().unwrap();
    release.add_permits(1);
    assert_eq!(c.frame().await.ack().0, 7);
    // Idle again: a new connection gets in, evicting `a`.
    let _e = srv.ready().await;
    assert_eq!(
        a.frame().await.disconnect_status(),
        Status::ResourceAllocation
    );
}

#[tokio::test]
async fn stalled_half_frames_are_dropped_by_the_timeouts() {
    let cfg = SpopConfig {
        hello_timeout: Dur(Duration::from_millis(200)),
        idle_timeout: Dur(Duration::from_millis(300)),
        ..SpopConfig::default()
    };
    let srv = TestServer::start(cfg, FoundationAuthorizer::default()).await;
    // Half a HELLO, then nothing.
    let started = Instant::now();
    let mut s = srv.connect().await;
    s.send_raw(&e2()[..40]).await.unwrap();
    assert_eq!(s.frame().await.disconnect_status(), Status::Timeout);
    s.expect_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A connection that never says anything.
    let mut s = srv.connect().await;
    assert_eq!(s.frame().await.disconnect_status(), Status::Timeout);
    // After the HELLO, half a NOTIFY, then nothing.
    let mut s = srv.ready().await;
    round_trip(&mut s, 1).await;
    let started = Instant::now();
    s.send_raw(&notify(3, 1, None)[..15]).await.unwrap();
    assert_eq!(s.frame().await.disconnect_status(), Status::Timeout);
    s.expect_closed().await;
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// Blocks every decision until released (one permit releases one decision); reports each
/// entry.
struct Gate {
    entered: mpsc::UnboundedSender<()>,
    release: Arc<Semaphore>,
}

impl Authorizer for Gate {
    async fn authorize(&self, req: &AuthzRequest, _now: std::time::Instant) -> Verdict {
        let _ = self.entered.send(());
        if let Ok(permit) = self.release.acquire().await {
            permit.forget();
        }
        let mut v = Verdict::allow(Reason::Ok);
        v.rule = req.path.as_ref().map(|p| p.to_string().into());
        v
    }
}

#[tokio::test]
async fn graceful_shutdown_answers_inflight_then_disconnects() {
    let (tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let gate = Gate {
        entered: tx,
        release: release.clone(),
    };
    let mut srv = TestServer::start(SpopConfig::default(), gate).await;
    let mut s = srv.ready().await;
    let mut idle = srv.ready().await;
    let mut batch = Vec::new();
    for sid in [1u64, 3, 5] {
        batch.extend_from_slice(&notify(sid, 1, None));
    }
    s.send_raw(&batch).await.unwrap();
    for _ in 0..3 {
        timeout(WAIT, entered.recv()).await.unwrap().unwrap();
    }
    srv.shutdown();
    // The idle connection is told at once.
    assert_eq!(idle.frame().await.disconnect_status(), Status::Normal);
    idle.expect_closed().await;
    // New connections are no longer accepted.
    let refused = match TcpStream::connect(srv.addr).await {
        Err(_) => true,
        Ok(mut c) => {
            let mut buf = [0u8; 8];
            matches!(timeout(WAIT, c.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
        }
    };
    assert!(refused, "accepting after shutdown");
    release.add_permits(3);
    let mut sids = HashSet::new();
    for _ in 0..3 {
        let (sid, _, vars) = s.frame().await.ack();
        assert_eq!(vars.get("allow"), Some(&TypedData::Bool(true)));
        assert_eq!(vars.get("rule"), Some(&TypedData::static_str("/api/x")));
        sids.insert(sid);
    }
    assert_eq!(sids, HashSet::from([1, 3, 5]));
    assert_eq!(s.frame().await.disconnect_status(), Status::Normal);
    s.expect_closed().await;
    timeout(WAIT, &mut srv.handle).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_grace_bounds_the_drain() {
    let (tx, mut entered) = mpsc::unbounded_channel();
    let gate = Gate {
        entered: tx,
        release: Arc::new(Semaphore::new(0)),
    };
    let cfg = SpopConfig {
        shutdown_grace: Dur(Duration::from_millis(300)),
        ..SpopConfig::default()
    };
    let mut srv = TestServer::start(cfg, gate).await;
    let mut s = srv.ready().await;
    s.send_raw(&notify(1, 1, None)).await.unwrap();
    timeout(WAIT, entered.recv()).await.unwrap().unwrap();
    let started = Instant::now();
    srv.shutdown();
    // Never released: the AGENT-DISCONNECT comes at the grace deadline.
    assert_eq!(s.frame().await.disconnect_status(), Status::Normal);
    assert!(started.elapsed() >= Duration::from_millis(300));
    timeout(WAIT, &mut srv.handle).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
}

struct Panics;

impl Authorizer for Panics {
    async fn authorize(&self, _req: &AuthzRequest, _now: std::time::Instant) -> Verdict {
        panic!("decision bug")
    }
}

#[tokio::test]
async fn panicking_authorizer_still_gets_an_ack() {
    let srv = TestServer::start(SpopConfig::default(), Panics).await;
    let mut s = srv.ready().await;
    s.send_raw(&notify(9, 1, None)).await.unwrap();
    let (sid, _, vars) = s.frame().await.ack();
    assert_eq!(sid, 9);
    assert_eq!(vars.get("status"), Some(&TypedData::Int64(500)));
    assert_eq!(
        vars.get("reason"),
        Some(&TypedData::static_str("internal_error"))
    );
}
