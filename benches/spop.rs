//! The per-request cost of the protocol and contract layers: decode a realistic NOTIFY (a ~1 KB
//! bearer token and every contract argument), map it to an `AuthzRequest`
//! (`contract::request_from_messages`), render the variables of an allowed verdict with identity
//! variables (`contract::render`, what `contract::answer` does after the decision) and encode the
//! ACK. Target: under 1 µs for the pair.
//!
//! Run: `cargo bench --bench spop`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};

use idgate::contract::{render, request_from_messages};
use idgate::decision::{Identity, Reason, Verdict};
use idgate::spop::frame::{self, Arg, Message};
use idgate::spop::{ConnConfig, Connection, Event, TypedData};

fn s(v: &str) -> TypedData {
    TypedData::String(Bytes::copy_from_slice(v.as_bytes()))
}

/// A NOTIFY as HAProxy would send it for `authorize`, with a 1 KB JWT-shaped token.
fn realistic_notify() -> Vec<u8> {
    let token = format!(
        "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0.{}.{}",
        "e".repeat(640),
        "s".repeat(342)
    );
    let arg = |name: &'static str, value| Arg {
        name: Bytes::from_static(name.as_bytes()),
        value,
    };
    let msg = Message {
        name: Bytes::from_static(b"authorize"),
        args: vec![
            arg("method", s("POST")),
            arg("path", s("/serving-endpoints/churn-model/invocations")),
            arg("host", s("dbc-1234.cloud.databricks.com")),
            arg("authorization", s(&token)),
            arg("cookie", s("session=abc; theme=dark")),
            arg("src", TypedData::Ipv4([10, 1, 2, 3].into())),
            arg(
                "unique_id",
                s("7F000001:C5D2_7F000001:3039_65A1B2C3_0001:1A2B"),
            ),
        ],
    };
    let mut buf = BytesMut::new();
    frame::encode_notify(&mut buf, 12345, 1, &[msg]);
    buf.to_vec()
}

fn allowed() -> Verdict {
    Verdict {
        identity: Some(Arc::new(Identity {
            issuer: "corp".into(),
            sub: "3f6c1a8e-5b0d-4a51-9f43-2b7c9e1d0a64".into(),
            user: None,
            email: Some("alice@example.com".into()),
            groups: vec!["ml-engineers".into(), "data-readers".into(), "staff".into()],
            scopes: vec![],
            expires_at: 0,
            issued_at: None,
            jti: None,
            claims: Default::default(),
        })),
        rule: Some("serving-invoke".into()),
        principal: Some("churn-sp".into()),
        upstream_authorization: None,
        ..Verdict::allow(Reason::Ok)
    }
}

fn ready_connection() -> Connection {
    let mut conn = Connection::new(ConnConfig::default());
    let mut hello = BytesMut::new();
    frame::encode_haproxy_hello(&mut hello, "2.0", 16380, "pipelining", false);
    conn.handle_input(&hello);
    assert!(matches!(conn.poll_event(), Some(Event::Ready { .. })));
    let _ = conn.poll_transmit();
    conn
}

/// Nanoseconds this thread has spent on a CPU (first field of `/proc/thread-self/schedstat`).
fn on_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn bench(c: &mut Criterion) {
    let notify = realistic_notify();
    let verdict = allowed();
    let mut g = c.benchmark_group("spop");
    g.throughput(Throughput::Elements(1));

    g.bench_function("notify_decode_to_request", |b| {
        let mut conn = ready_connection();
        b.iter(|| {
            conn.handle_input(black_box(&notify));
            let Some(Event::Notify(n)) = conn.poll_event() else {
                unreachable!()
            };
            black_box(request_from_messages(&n.messages))
        })
    });

    g.bench_function("ack_build_and_encode", |b| {
        let mut conn = ready_connection();
        b.iter(|| {
            let answer = render(black_box(&verdict), 16380);
            conn.send_ack(12345, 1, &answer.actions()).unwrap();
            black_box(conn.poll_transmit())
        })
    });

    let pair = |conn: &mut Connection| {
        conn.handle_input(black_box(&notify));
        let Some(Event::Notify(n)) = conn.poll_event() else {
            unreachable!()
        };
        let req = request_from_messages(&n.messages);
        black_box(&req);
        let answer = render(&verdict, 16380);
        conn.send_ack(n.stream_id, n.frame_id, &answer.actions())
            .unwrap();
        black_box(conn.poll_transmit())
    };

    g.bench_function("notify_to_ack_pair", |b| {
        let mut conn = ready_connection();
        b.iter(|| pair(&mut conn))
    });

    g.finish();

    // The pair again, measured in on-CPU time of this thread (Linux schedstat), so that a
    // loaded machine (other processes taking the cores) does not inflate the figure.
    // schedstat advances at scheduler ticks, hence few, long, equal samples.
    if on_cpu_ns().is_some() {
        let mut g = c.benchmark_group("spop_cpu_time");
        g.throughput(Throughput::Elements(1))
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .measurement_time(Duration::from_secs(10));
        g.bench_function("notify_to_ack_pair", |b| {
            let mut conn = ready_connection();
            b.iter_custom(|iters| {
                let start = on_cpu_ns().unwrap_or(0);
                for _ in 0..iters {
                    pair(&mut conn);
                }
                Duration::from_nanos(on_cpu_ns().unwrap_or(0).saturating_sub(start).max(1))
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
