//! The fuzz seed corpus (and any saved crashers) through the same driver as the `spop_conn`
//! fuzz target, under plain `cargo test`: every input in `fuzz/seeds/spop_conn/` and
//! `fuzz/regressions/spop_conn/` must run without panicking, in several chunkings, and leave
//! only well-formed agent frames on the wire.

use std::path::Path;

use bytes::{Buf, Bytes, BytesMut};

use idgate::authorize::{request_from_messages, verdict_actions, FoundationAuthorizer};
use idgate::spop::frame::{self, Header};
use idgate::spop::{ConnConfig, Connection, Event};

/// Mirrors `fuzz/fuzz_targets/spop_conn.rs`: `[mode] [stream...]`, bit 0 of `mode` prepends a
/// HAPROXY-HELLO, the rest seeds the chunk sizes. Returns (notifies, closed, output).
fn drive(data: &[u8]) -> (usize, bool, Bytes) {
    let Some((&mode, stream)) = data.split_first() else {
        return (0, false, Bytes::new());
    };
    let mut conn = Connection::new(ConnConfig {
        max_frame_size: 16380,
    });
    if mode & 1 == 1 {
        let mut hello = BytesMut::new();
        frame::encode_haproxy_hello(&mut hello, "2.0", 16380, "pipelining", false);
        conn.handle_input(&hello);
    }
    let authorizer = FoundationAuthorizer::default();
    let mut seed = u32::from(mode >> 1) | 0x100;
    let mut rest = stream;
    let mut out = BytesMut::new();
    let (mut notifies, mut closed) = (0, false);
    loop {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((seed >> 16) as usize % 64 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        conn.handle_input(chunk);
        rest = tail;
        while let Some(ev) = conn.poll_event() {
            assert!(!closed, "event after Close");
            match ev {
                Event::Ready { .. } => {}
                Event::Notify(n) => {
                    notifies += 1;
                    let verdict = authorizer.decide(&request_from_messages(&n.messages));
                    let mfs = conn.max_frame_size().unwrap();
                    let actions = verdict_actions(&verdict, n.stream_id, n.frame_id, mfs);
                    conn.send_ack(n.stream_id, n.frame_id, &actions).unwrap();
                }
                Event::Close(_) => closed = true,
            }
        }
        if let Some(b) = conn.poll_transmit() {
            out.extend_from_slice(&b);
        }
        if rest.is_empty() {
            break;
        }
    }
    let _ = conn.handle_eof();
    if let Some(b) = conn.poll_transmit() {
        out.extend_from_slice(&b);
    }
    (notifies, closed, out.freeze())
}

/// Our output is a sequence of agent frames with FLAGS = FIN, nothing after a DISCONNECT.
fn check_output(mut out: Bytes) -> Vec<u8> {
    let mut types = Vec::new();
    while out.has_remaining() {
        assert_ne!(types.last(), Some(&102), "frame after AGENT-DISCONNECT");
        let len = out.get_u32() as usize;
        let mut body = out.split_to(len);
        let h = Header::decode(&mut body).unwrap();
        assert_eq!(h.flags, 1);
        match h.frame_type {
            101 | 102 => assert_eq!((h.stream_id, h.frame_id), (0, 0)),
            103 => {
                frame::decode_actions(body).unwrap();
            }
            t => panic!("we sent frame type {t}"),
        }
        types.push(h.frame_type);
    }
    types
}

fn inputs() -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut v = Vec::new();
    for dir in ["seeds/spop_conn", "regressions/spop_conn"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            v.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    v.sort();
    v
}

#[test]
fn every_seed_runs_cleanly_in_every_chunking() {
    let inputs = inputs();
    assert!(inputs.len() >= 10, "seed corpus missing");
    for (name, data) in inputs {
        for mode_bits in [0u8, 0x2a, 0xfe] {
            let mut d = data.clone();
            if let Some(m) = d.first_mut() {
                *m = (*m & 1) | mode_bits;
            }
            let (_, _, out) = drive(&d);
            check_output(out);
        }
        let _ = name;
    }
}

/// The seeds mean what their names say.
#[test]
fn seeds_behave_as_named() {
    let get = |n: &str| {
        inputs()
            .into_iter()
            .find(|(p, _)| p.ends_with(n))
            .unwrap_or_else(|| panic!("seed {n}"))
            .1
    };
    let (n, closed, out) = drive(&get("e1_healthcheck"));
    assert_eq!((n, closed, check_output(out)), (0, true, vec![101]));
    let (n, closed, out) = drive(&get("e2_e5_e6_e10"));
    assert_eq!((n, closed), (2, true));
    assert_eq!(check_output(out), vec![101, 103, 103, 102]);
    let (n, _, out) = drive(&get("ready_authorize"));
    assert_eq!(n, 2);
    assert_eq!(check_output(out), vec![101, 103, 103]);
    let (_, closed, out) = drive(&get("ready_garbage"));
    assert!(closed);
    assert_eq!(check_output(out), vec![101, 102]);
}
