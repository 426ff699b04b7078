//! Arbitrary bytes, in arbitrary chunkings, into the SPOP connection state machine, plus the
//! `authorize` mapping for every NOTIFY it yields.
//!
//! Input: `[mode] [stream...]`. Bit 0 of `mode` prepends a valid HAPROXY-HELLO (so the
//! fuzzer reaches NOTIFY parsing without having to discover a HELLO); the other bits seed the
//! chunk sizes the stream is fed in.
#![no_main]

use bytes::{Buf, Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;

use idgate::authorize::{request_from_messages, verdict_actions, FoundationAuthorizer};
use idgate::spop::frame::{self, Header};
use idgate::spop::{CloseReason, ConnConfig, Connection, Event};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
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
    let mut closed = false;
    loop {
        // Chunk sizes 1..=64 from a tiny LCG, so the same input always splits the same way.
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((seed >> 16) as usize % 64 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        conn.handle_input(chunk);
        rest = tail;
        while let Some(ev) = conn.poll_event() {
            assert!(!closed, "event after Close");
            match ev {
                Event::Ready { max_frame_size, .. } => assert!(max_frame_size >= 256),
                Event::Notify(n) => {
                    let req = request_from_messages(&n.messages);
                    let verdict = authorizer.decide(&req);
                    let mfs = conn.max_frame_size().expect("notify only when ready");
                    let actions = verdict_actions(&verdict, n.stream_id, n.frame_id, mfs);
                    conn.send_ack(n.stream_id, n.frame_id, &actions)
                        .expect("verdict_actions fits the frame");
                }
                Event::Close(CloseReason::Error(e)) => {
                    let _ = e.status();
                    closed = true;
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
    check_output(out.freeze());
});

/// Everything we wrote is a sequence of well-formed agent frames: FLAGS exactly FIN,
/// AGENT-HELLO/DISCONNECT with ids 00 00, at most one DISCONNECT and it comes last.
fn check_output(mut out: Bytes) {
    let mut disconnected = false;
    while out.has_remaining() {
        assert!(!disconnected, "frame after AGENT-DISCONNECT");
        let len = out.get_u32() as usize;
        let mut body = out.split_to(len);
        let h = Header::decode(&mut body).expect("our header decodes");
        assert_eq!(h.flags, 1);
        match h.frame_type {
            101 | 102 => {
                assert_eq!((h.stream_id, h.frame_id), (0, 0));
                disconnected = h.frame_type == 102;
            }
            103 => {
                frame::decode_actions(body).expect("our actions decode");
            }
            t => panic!("we sent frame type {t}"),
        }
    }
}
