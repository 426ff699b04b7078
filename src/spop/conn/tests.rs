//! Byte-literal tests of the connection with every example frame of spop-protocol.md §12,
//! split reads and malformed input.

use std::net::Ipv4Addr;

use bytes::{Buf, Bytes, BytesMut};
use proptest::prelude::*;

use super::*;
use crate::spop::data::TypedData;
use crate::spop::frame::{decode_actions, Action, Arg, Scope};

/// An empty action list (the element type cannot be inferred from `&[]`).
const NONE: &[Action] = &[];

/// Bytes from a readable spec: hex tokens (`00`, `fcf006`) and double-quoted ASCII strings.
pub(crate) fn b(spec: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = spec;
    while let Some(c) = rest.chars().next() {
        if c.is_whitespace() {
            rest = &rest[1..];
        } else if c == '"' {
            let end = rest[1..].find('"').expect("closing quote") + 1;
            out.extend_from_slice(&rest.as_bytes()[1..end]);
            rest = &rest[end + 1..];
        } else {
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"')
                .unwrap_or(rest.len());
            let tok = &rest[..end];
            assert!(tok.len() % 2 == 0, "odd hex token {tok}");
            for i in (0..tok.len()).step_by(2) {
                out.push(u8::from_str_radix(&tok[i..i + 2], 16).expect("hex"));
            }
            rest = &rest[end..];
        }
    }
    out
}

const E1: &str = r#"00 00 00 4e 01 00 00 00 01 00 00
    12 "supported-versions" 08 03 "2.0"
    0e "max-frame-size" 03 fc f0 06
    0c "capabilities" 08 00
    0b "healthcheck" 11"#;
const E2: &str = r#"00000081 01 00000001 00 00 12 "supported-versions" 08 03 "2.0" 0e "max-frame-size" 03 fcf006
    0c "capabilities" 08 10 "pipelining,async" 09 "engine-id" 08 24 "75352caa-64d7-4472-91c1-f5d19ee07b9d""#;
const E3: &str = r#"0000007b 01 00000001 00 00 12 "supported-versions" 08 03 "2.0" 0e "max-frame-size" 03 fcf006
    0c "capabilities" 08 0a "pipelining" 09 "engine-id" 08 24 "75352caa-64d7-4472-91c1-f5d19ee07b9d""#;
const E4: &str = "00 00 00 40 65 00 00 00 01 00 00
    07 76 65 72 73 69 6f 6e 08 03 32 2e 30
    0e 6d 61 78 2d 66 72 61 6d 65 2d 73 69 7a 65 03 fc f0 06
    0c 63 61 70 61 62 69 6c 69 74 69 65 73 08 0a 70 69 70 65 6c 69 6e 69 6e 67";
const E5: &str = r#"00 00 00 26 03 00 00 00 01 01 01
    07 "grp-msg" 01 04 "host" 08 0f "127.0.0.1:18080""#;
const E6: &str = r#"000000db 03 00000001 00 01
    0d "check-request" 0a
    06 "method" 08 03 "GET"   04 "path" 08 04 "/foo"
    05 "authz" 08 12 "Bearer abc.def.ghi"
    03 "src" 06 7f000001
    03 "ssl" 01
    04 "port" 04 f0db07
    04 "hdrs" 09 5a 04 "host" 0f "127.0.0.1:18080" 0a "user-agent" 0b "curl/7.88.1"
                06 "accept" 03 "*/*" 0d "authorization" 12 "Bearer abc.def.ghi" 00 00
    03 "neg" 04 fef0fefefefefefefe0e
    05 "empty" 08 00
    03 "nul" 00"#;
const E7: &str = r#"00 00 00 2b 67 00 00 00 01 01 01
    01 03 02 05 "allow" 11
    01 03 02 03 "sub" 08 11 "alice@example.com""#;
const E9: &str =
    r#"00 00 00 25 66 00 00 00 01 00 00 0b "status-code" 03 00 07 "message" 08 06 "normal""#;
const E10: &str =
    r#"00000028 02 00000001 00 00 0b "status-code" 03 01 07 "message" 08 09 "I/O error""#;

fn conn() -> Connection {
    Connection::new(ConnConfig::default())
}

fn out(c: &mut Connection) -> Vec<u8> {
    c.poll_transmit().map(|b| b.to_vec()).unwrap_or_default()
}

fn events(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

/// A ready connection (E2 handshake done, output drained).
fn ready() -> Connection {
    let mut c = conn();
    c.handle_input(&b(E2));
    assert!(matches!(c.poll_event(), Some(Event::Ready { .. })));
    let _ = c.poll_transmit();
    c
}

/// A frame from its body spec, with the length prefix computed.
fn f(body: &str) -> Vec<u8> {
    let body = b(body);
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

/// The `max-frame-size` (UINT32) of the AGENT-HELLO in `bytes`.
fn agent_hello_mfs(bytes: &[u8]) -> u32 {
    assert_eq!(bytes[4], 101);
    let kv: Vec<_> = crate::spop::data::KvIter::new(Bytes::copy_from_slice(&bytes[11..]))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(&kv[1].0[..], b"max-frame-size");
    match kv[1].1 {
        TypedData::Uint32(v) => v,
        ref v => panic!("max-frame-size sent as {v:?}"),
    }
}

/// The status of the single AGENT-DISCONNECT in `bytes`.
fn disconnect_status(bytes: &[u8]) -> Status {
    let mut f = Bytes::copy_from_slice(bytes);
    let len = f.get_u32() as usize;
    assert_eq!(len, f.len(), "exactly one frame");
    assert_eq!(
        &f[..7],
        &[102, 0, 0, 0, 1, 0, 0],
        "AGENT-DISCONNECT, FIN, ids 00 00"
    );
    frame::decode_disconnect(f.slice(7..), "t").unwrap().status
}

/// Feed `input` to a connection (after the HELLO if `after_hello`) and return the status it
/// disconnected with.
fn error_status(after_hello: bool, input: &[u8]) -> Status {
    let mut c = if after_hello { ready() } else { conn() };
    c.handle_input(input);
    let evs = events(&mut c);
    assert!(
        matches!(evs.last(), Some(Event::Close(CloseReason::Error(_)))),
        "{evs:?}"
    );
    assert!(c.is_closed());
    // Closed connections ignore further input.
    c.handle_input(&b(E5));
    assert_eq!(c.poll_event(), None);
    disconnect_status(&out(&mut c))
}

#[test]
fn frame_lengths_of_the_examples() {
    for (name, e) in [
        ("E1", E1),
        ("E2", E2),
        ("E3", E3),
        ("E4", E4),
        ("E5", E5),
        ("E6", E6),
        ("E7", E7),
        ("E9", E9),
        ("E10", E10),
    ] {
        let v = b(e);
        let len = u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize;
        assert_eq!(len + 4, v.len(), "{name}");
    }
    assert_eq!(b(E1).len(), 82);
    assert_eq!(b(E2).len(), 133);
    assert_eq!(b(E4).len(), 68);
}

#[test]
fn e1_healthcheck_hello_gets_agent_hello_then_close() {
    let mut c = conn();
    c.handle_input(&b(E1));
    assert_eq!(c.poll_event(), Some(Event::Close(CloseReason::Healthcheck)));
    assert_eq!(out(&mut c), b(E4));
    assert!(c.is_closed());
    assert_eq!(c.poll_event(), None);
}

#[test]
fn e2_e3_hello_gets_exact_agent_hello() {
    for e in [E2, E3] {
        let mut c = conn();
        c.handle_input(&b(e));
        assert_eq!(
            c.poll_event(),
            Some(Event::Ready {
                max_frame_size: 16380,
                pipelining: true
            })
        );
        assert_eq!(out(&mut c), b(E4));
        assert!(c.is_ready());
        assert_eq!(c.max_frame_size(), Some(16380));
        assert_eq!(c.poll_event(), None);
    }
}

#[test]
fn e4_agent_hello_encoding() {
    let mut buf = BytesMut::new();
    frame::encode_agent_hello(&mut buf, 16380);
    assert_eq!(&buf[..], &b(E4)[..]);
}

#[test]
fn smaller_haproxy_frame_size_is_echoed_and_ours_caps_it() {
    let mut c = conn();
    let mut hello = BytesMut::new();
    frame::encode_haproxy_hello(&mut hello, "2.0", 1000, "pipelining", false);
    c.handle_input(&hello);
    assert!(matches!(
        c.poll_event(),
        Some(Event::Ready {
            max_frame_size: 1000,
            ..
        })
    ));
    assert_eq!(agent_hello_mfs(&out(&mut c)), 1000);
    let mut c = Connection::new(ConnConfig {
        max_frame_size: 4096,
    });
    c.handle_input(&b(E2));
    assert!(matches!(
        c.poll_event(),
        Some(Event::Ready {
            max_frame_size: 4096,
            ..
        })
    ));
    assert_eq!(agent_hello_mfs(&out(&mut c)), 4096);
}

#[test]
fn e5_group_notify() {
    let mut c = ready();
    c.handle_input(&b(E5));
    let Some(Event::Notify(n)) = c.poll_event() else {
        panic!("no notify")
    };
    assert_eq!((n.stream_id, n.frame_id), (1, 1));
    assert_eq!(n.messages.len(), 1);
    assert_eq!(&n.messages[0].name[..], b"grp-msg");
    assert_eq!(
        n.messages[0].arg("host"),
        Some(&TypedData::static_str("127.0.0.1:18080"))
    );
}

#[test]
fn e6_notify_with_every_common_type() {
    let mut c = ready();
    c.handle_input(&b(E6));
    let Some(Event::Notify(n)) = c.poll_event() else {
        panic!("no notify")
    };
    assert_eq!((n.stream_id, n.frame_id), (0, 1));
    let m = &n.messages[0];
    assert_eq!(&m.name[..], b"check-request");
    assert_eq!(m.args.len(), 10);
    assert_eq!(m.arg("method"), Some(&TypedData::static_str("GET")));
    assert_eq!(m.arg("path"), Some(&TypedData::static_str("/foo")));
    assert_eq!(
        m.arg("authz"),
        Some(&TypedData::static_str("Bearer abc.def.ghi"))
    );
    assert_eq!(m.arg("src"), Some(&TypedData::Ipv4(Ipv4Addr::LOCALHOST)));
    assert_eq!(m.arg("ssl"), Some(&TypedData::Bool(false)));
    assert_eq!(m.arg("port"), Some(&TypedData::Int64(18080)));
    let Some(TypedData::Binary(h)) = m.arg("hdrs") else {
        panic!("hdrs")
    };
    assert_eq!(h.len(), 0x5a);
    assert!(h.ends_with(b"\x00\x00"));
    assert_eq!(m.arg("neg"), Some(&TypedData::Int64(-2)));
    assert_eq!(m.arg("empty"), Some(&TypedData::static_str("")));
    assert_eq!(m.arg("nul"), Some(&TypedData::Null));
}

#[test]
fn e7_ack_with_two_set_vars() {
    let mut c = ready();
    let actions = [
        Action::set(Scope::Txn, "allow", TypedData::Bool(true)),
        Action::set(
            Scope::Txn,
            "sub",
            TypedData::static_str("alice@example.com"),
        ),
    ];
    c.send_ack(1, 1, &actions).unwrap();
    let o = out(&mut c);
    assert_eq!(o, b(E7));
    assert_eq!(decode_actions(Bytes::from(o).slice(11..)).unwrap(), actions);
}

#[test]
fn e8_other_ack_shapes() {
    let mut c = ready();
    c.send_ack(1, 1, NONE).unwrap();
    assert_eq!(out(&mut c), b("00 00 00 07 67 00 00 00 01 01 01"));
    let unset = Action::UnsetVar {
        scope: Scope::Txn,
        name: Bytes::from_static(b"allow"),
    };
    c.send_ack(5, 1, &[unset]).unwrap();
    assert_eq!(
        out(&mut c),
        b("00 00 00 10 67 00 00 00 01 05 01 02 02 02 05 61 6c 6c 6f 77")
    );
    c.send_ack(
        0,
        1,
        &[Action::set(Scope::Txn, "allow", TypedData::Bool(false))],
    )
    .unwrap();
    assert_eq!(
        out(&mut c),
        b("00 00 00 11 67 00 00 00 01 00 01 01 03 02 05 61 6c 6c 6f 77 01")
    );
    c.send_ack(
        300,
        1,
        &[Action::set(Scope::Sess, "n", TypedData::Int64(1000))],
    )
    .unwrap();
    assert_eq!(
        out(&mut c),
        b("00 00 00 10 67 00 00 00 01 fc 03 01 01 03 01 01 6e 04 f8 2f")
    );
    assert_eq!(c.take_frame_counts().get(FrameType::Ack), 4);
}

#[test]
fn e9_agent_disconnect_normal() {
    let mut c = ready();
    c.close(Status::Normal, "normal");
    assert_eq!(out(&mut c), b(E9));
    assert!(c.is_closed());
    assert_eq!(c.send_ack(1, 1, NONE), Err(AckError::NotOpen));
    assert!(c.poll_transmit().is_none());
}

#[test]
fn e10_haproxy_disconnect_is_answered() {
    for mut c in [conn(), ready()] {
        c.handle_input(&b(E10));
        assert_eq!(
            c.poll_event(),
            Some(Event::Close(CloseReason::PeerDisconnect(
                frame::Disconnect {
                    status: Status::Io,
                    message: Bytes::from_static(b"I/O error"),
                }
            )))
        );
        assert_eq!(out(&mut c), b(E9));
        assert!(c.is_closed());
    }
}

#[test]
fn every_status_code_in_disconnect() {
    for s in Status::KNOWN.into_iter().chain([Status::Other(1234)]) {
        let mut c = ready();
        let mut f = BytesMut::new();
        frame::encode_haproxy_disconnect(&mut f, s, s.reason());
        c.handle_input(&f);
        let Some(Event::Close(CloseReason::PeerDisconnect(d))) = c.poll_event() else {
            panic!("{s}")
        };
        assert_eq!(d.status, s);
        assert_eq!(&d.message[..], s.reason().as_bytes());
        let mut c = ready();
        c.close(s, s.reason());
        assert_eq!(disconnect_status(&out(&mut c)), s);
    }
}

/// One byte at a time gives the same events and output as one big read.
#[test]
fn one_byte_at_a_time() {
    let input: Vec<u8> = [b(E2), b(E6), b(E5), b(E10)].concat();
    let mut whole = conn();
    whole.handle_input(&input);
    let expected = events(&mut whole);
    assert_eq!(expected.len(), 4);
    let mut c = conn();
    let mut got = Vec::new();
    for byte in &input {
        c.handle_input(std::slice::from_ref(byte));
        got.extend(events(&mut c));
    }
    assert_eq!(got, expected);
    assert_eq!(out(&mut c), out(&mut whole));
}

#[test]
fn pipelined_notifies_with_large_ids() {
    let mut c = ready();
    let mut input = BytesMut::new();
    for i in 0..20u64 {
        let msg = Message {
            name: Bytes::from_static(b"authorize"),
            args: vec![],
        };
        frame::encode_notify(&mut input, (1 << 40) + i, u64::MAX - i, &[msg]);
    }
    c.handle_input(&input);
    let evs = events(&mut c);
    assert_eq!(evs.len(), 20);
    for (i, e) in evs.iter().enumerate() {
        let Event::Notify(n) = e else { panic!() };
        assert_eq!(n.stream_id, (1 << 40) + i as u64);
        assert_eq!(n.frame_id, u64::MAX - i as u64);
        c.send_ack(n.stream_id, n.frame_id, NONE).unwrap();
    }
    let expected: usize = (0..20u64)
        .map(|i| 4 + frame::ack_len((1 << 40) + i, u64::MAX - i, NONE))
        .sum();
    assert_eq!(out(&mut c).len(), expected);
    assert_eq!(frame::ack_len(1 << 40, u64::MAX, NONE), 5 + 7 + 10);
}

#[test]
fn lazy_decoding_leaves_frames_buffered() {
    let mut c = ready();
    c.handle_input(&[b(E5), b(E5)].concat());
    assert!(matches!(c.poll_event(), Some(Event::Notify(_))));
    assert!(c.has_partial_frame(), "second frame still undecoded");
    assert!(matches!(c.poll_event(), Some(Event::Notify(_))));
    assert!(!c.has_partial_frame());
}

#[test]
fn malformed_input_gets_the_right_status() {
    use Status::*;
    let hello = |v: &str, m: Option<u32>| {
        let mut p = BytesMut::new();
        crate::spop::data::encode_kv(
            "supported-versions",
            &TypedData::String(v.to_owned().into()),
            &mut p,
        );
        if let Some(m) = m {
            crate::spop::data::encode_kv("max-frame-size", &TypedData::Uint32(m), &mut p);
        }
        let mut f = b("00000000 01 00000001 00 00");
        f.extend_from_slice(&p);
        let len = (f.len() - 4) as u32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        f
    };
    let cases: Vec<(&str, bool, Vec<u8>, Status)> = vec![
        ("notify before hello", false, b(E5), Invalid),
        (
            "http garbage",
            false,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            TooBig,
        ),
        (
            "tls garbage",
            false,
            b("16 03 01 02 00 01 00 01 fc 03 03"),
            TooBig,
        ),
        (
            "small garbage",
            false,
            b("00 00 00 08 ff ff ff ff ff ff ff ff"),
            Invalid,
        ),
        ("oversized before hello", false, b("00 00 3f fd 01"), TooBig),
        ("oversized after hello", true, b("00 00 3f fd 03"), TooBig),
        (
            "length below header",
            false,
            b("00 00 00 06 01 00 00 00 01 00"),
            Invalid,
        ),
        ("zero length", true, b("00 00 00 00"), Invalid),
        (
            "unknown type 4",
            true,
            b("00 00 00 07 04 00 00 00 01 00 00"),
            Invalid,
        ),
        (
            "unknown type 200",
            false,
            b("00 00 00 07 c8 00 00 00 01 00 00"),
            Invalid,
        ),
        (
            "agent type ack",
            true,
            b("00 00 00 07 67 00 00 00 01 01 01"),
            Invalid,
        ),
        ("agent type hello", false, b(E4), Invalid),
        (
            "unset frame",
            true,
            b("00 00 00 07 00 00 00 00 01 01 01"),
            FragmentationNotSupported,
        ),
        (
            "notify without fin",
            true,
            b("00 00 00 07 03 00 00 00 00 01 01"),
            FragmentationNotSupported,
        ),
        (
            "hello without fin",
            false,
            b("00 00 00 07 01 00 00 00 02 00 00"),
            FragmentationNotSupported,
        ),
        ("second hello", true, b(E2), Invalid),
        (
            "hello with stream id",
            false,
            b("00 00 00 07 01 00 00 00 01 01 00"),
            Invalid,
        ),
        (
            "disconnect with frame id",
            true,
            b("00 00 00 07 02 00 00 00 01 00 01"),
            Invalid,
        ),
        (
            "disconnect without status",
            true,
            f(r#"02 00000001 00 00 07 "message" 08 00"#),
            Invalid,
        ),
        (
            "reserved type in notify",
            true,
            f(r#"03 00000001 01 01 03 "msg" 01 01 "a" 0b"#),
            Invalid,
        ),
        (
            "string past frame end",
            true,
            f(r#"03 00000001 01 01 03 "msg" 01 01 "a" 08 05 "x""#),
            Invalid,
        ),
        (
            "missing args",
            true,
            f(r#"03 00000001 01 01 03 "msg" 02 01 "a" 00"#),
            Invalid,
        ),
        (
            "missing nb-args",
            true,
            f(r#"03 00000001 01 01 03 "msg""#),
            Invalid,
        ),
        (
            "overlong varint id",
            true,
            f("03 00000001 ff ff ff ff ff ff ff ff ff ff ff"),
            Invalid,
        ),
        (
            "truncated varint id",
            true,
            b("00 00 00 07 03 00 00 00 01 01 f0"),
            Invalid,
        ),
        (
            "hello: reserved type",
            false,
            f(r#"01 00000001 00 00 01 "x" 0f"#),
            Invalid,
        ),
        (
            "hello: no version",
            false,
            f(r#"01 00000001 00 00 0e "max-frame-size" 03 fcf006"#),
            NoVersion,
        ),
        (
            "hello: version 1.0",
            false,
            hello("1.0", Some(16380)),
            BadVersion,
        ),
        (
            "hello: version garbage",
            false,
            hello("two", Some(16380)),
            BadVersion,
        ),
        (
            "hello: no max-frame-size",
            false,
            hello("2.0", None),
            NoFrameSize,
        ),
        (
            "hello: max-frame-size 255",
            false,
            hello("2.0", Some(255)),
            BadFrameSize,
        ),
    ];
    for (name, after_hello, input, status) in cases {
        let got = std::panic::catch_unwind(|| error_status(after_hello, &input))
            .unwrap_or_else(|_| panic!("case {name:?} failed"));
        assert_eq!(got, status, "case {name:?}");
    }
}

/// An oversized length is refused as soon as its 4 bytes arrive, before the body.
#[test]
fn length_is_checked_before_the_body_arrives() {
    let mut c = conn();
    c.handle_input(&[0x00, 0x10, 0x00]);
    assert_eq!(c.poll_event(), None);
    c.handle_input(&[0x00]);
    assert!(matches!(
        c.poll_event(),
        Some(Event::Close(CloseReason::Error(
            ProtocolError::FrameTooBig {
                len: 0x0010_0000,
                max: 16380
            }
        )))
    ));
    assert_eq!(disconnect_status(&out(&mut c)), Status::TooBig);
    assert!(!c.has_partial_frame(), "buffer dropped on close");
}

#[test]
fn negotiated_limit_applies_after_hello() {
    let mut c = conn();
    let mut hello = BytesMut::new();
    frame::encode_haproxy_hello(&mut hello, "2.0", 300, "", false);
    c.handle_input(&hello);
    assert!(matches!(
        c.poll_event(),
        Some(Event::Ready {
            max_frame_size: 300,
            pipelining: false
        })
    ));
    let _ = c.poll_transmit();
    c.handle_input(&[0, 0, 1, 45]); // 301
    assert!(matches!(
        c.poll_event(),
        Some(Event::Close(CloseReason::Error(
            ProtocolError::FrameTooBig { len: 301, max: 300 }
        )))
    ));
}

#[test]
fn abort_flag_is_ignored_on_unfragmented_frames() {
    let mut c = ready();
    let mut f = b(E5);
    f[8] = 0x03; // FIN | ABORT
    c.handle_input(&f);
    assert!(matches!(c.poll_event(), Some(Event::Notify(_))));
}

#[test]
fn eof_inside_a_frame_is_a_truncated_frame() {
    let mut c = ready();
    let e5 = b(E5);
    c.handle_input(&e5[..10]);
    assert_eq!(c.poll_event(), None);
    assert!(c.has_partial_frame());
    assert_eq!(c.handle_eof(), Some(ProtocolError::Truncated { have: 10 }));
    assert_eq!(disconnect_status(&out(&mut c)), Status::Invalid);
    let mut c = ready();
    assert_eq!(c.handle_eof(), None);
    assert!(c.is_closed());
    assert!(c.poll_transmit().is_none(), "clean EOF sends nothing");
}

#[test]
fn timeout_sends_status_2() {
    let mut c = conn();
    c.handle_input(&b(E2)[..20]);
    c.handle_timeout();
    assert_eq!(disconnect_status(&out(&mut c)), Status::Timeout);
    assert!(c.is_closed());
}

#[test]
fn ack_larger_than_negotiated_size_is_refused_whole() {
    let mut c = conn();
    let mut hello = BytesMut::new();
    frame::encode_haproxy_hello(&mut hello, "2.0", 256, "pipelining", false);
    c.handle_input(&hello);
    let _ = c.poll_event();
    let _ = c.poll_transmit();
    let big = Action::set(Scope::Txn, "x", TypedData::String(vec![b'a'; 300].into()));
    assert!(matches!(
        c.send_ack(1, 1, &[big]),
        Err(AckError::TooBig { max: 256, .. })
    ));
    assert!(c.poll_transmit().is_none(), "nothing partly written");
    assert!(c.is_ready());
}

#[test]
fn ack_before_hello_is_refused() {
    let mut c = conn();
    assert_eq!(c.send_ack(1, 1, NONE), Err(AckError::NotOpen));
}

#[test]
fn frame_counts() {
    let mut c = conn();
    c.handle_input(&[b(E2), b(E5), b(E5)].concat());
    let _ = events(&mut c);
    c.send_ack(1, 1, NONE).unwrap();
    let counts = c.take_frame_counts();
    assert_eq!(counts.get(FrameType::HaproxyHello), 1);
    assert_eq!(counts.get(FrameType::AgentHello), 1);
    assert_eq!(counts.get(FrameType::Notify), 2);
    assert_eq!(counts.get(FrameType::Ack), 1);
    assert_eq!(counts.iter().count(), 4);
    assert_eq!(c.take_frame_counts(), FrameCounts::default());
}

#[test]
fn recv_buf_reserves_for_the_pending_frame() {
    let mut c = ready();
    c.handle_input(&[0x00, 0x00, 0x3f, 0xfc]); // 16380
    let buf = c.recv_buf();
    assert!(buf.capacity() - buf.len() >= 16380);
    let mut c = conn();
    c.handle_input(&[0xff, 0xff, 0xff, 0xff]);
    let buf = c.recv_buf();
    assert!(
        buf.capacity() < 64 * 1024,
        "an absurd length does not size the buffer"
    );
}

proptest! {
    /// Any chunking of a valid stream yields the same events and output.
    #[test]
    fn any_chunking_same_result(cuts in proptest::collection::vec(0usize..400, 0..12)) {
        let input: Vec<u8> = [b(E3), b(E6), b(E5), b(E6)].concat();
        let mut whole = conn();
        whole.handle_input(&input);
        let expected = events(&mut whole);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % input.len()).collect();
        cuts.sort_unstable();
        let mut c = conn();
        let mut got = Vec::new();
        let mut prev = 0;
        for cut in cuts.into_iter().chain([input.len()]) {
            c.handle_input(&input[prev..cut]);
            prev = cut;
            got.extend(events(&mut c));
        }
        prop_assert_eq!(got, expected);
    }

    /// Arbitrary bytes never panic; the connection either waits for more or closes with an
    /// AGENT-DISCONNECT as its last frame.
    #[test]
    fn arbitrary_input_never_panics(after_hello in any::<bool>(),
                                    input in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut c = if after_hello { ready() } else { conn() };
        c.handle_input(&input);
        let evs = events(&mut c);
        if let Some(Event::Close(CloseReason::Error(e))) = evs.last() {
            let o = out(&mut c);
            // The last frame written is the AGENT-DISCONNECT with the error's status.
            let mut f = Bytes::from(o);
            let mut last = None;
            while f.len() >= 4 {
                let len = f.get_u32() as usize;
                last = Some(f.split_to(len));
            }
            let last = last.expect("a frame");
            prop_assert_eq!(last[0], 102);
            prop_assert_eq!(frame::decode_disconnect(last.slice(7..), "t").unwrap().status, e.status());
        }
    }

    /// A valid NOTIFY with random ids and messages decodes to exactly what was encoded, even
    /// when fed in two arbitrary pieces.
    #[test]
    fn notify_round_trip_through_connection(sid in any::<u64>(), fid in any::<u64>(),
                                            token in "[A-Za-z0-9._-]{0,2000}", cut in any::<usize>()) {
        let msg = Message {
            name: Bytes::from_static(b"authorize"),
            args: vec![
                Arg { name: Bytes::from_static(b"method"), value: TypedData::static_str("GET") },
                Arg { name: Bytes::from_static(b"authorization"), value: TypedData::String(token.into()) },
            ],
        };
        let mut f = BytesMut::new();
        frame::encode_notify(&mut f, sid, fid, std::slice::from_ref(&msg));
        let cut = cut % f.len();
        let mut c = ready();
        c.handle_input(&f[..cut]);
        let mut evs = events(&mut c);
        c.handle_input(&f[cut..]);
        evs.extend(events(&mut c));
        prop_assert_eq!(evs, vec![Event::Notify(Notify { stream_id: sid, frame_id: fid, messages: vec![msg] })]);
    }
}
