//! Rendering a verdict into ACK variables and encoding them allocates nothing but the
//! comma-joined `groups`: the variables borrow from the verdict and sit on the stack, and the
//! encoder writes them straight into the send buffer. This runs for every NOTIFY.
//!
//! dhat counts heap blocks only while a profiler is alive, and one profiler per process is
//! allowed, so this file holds a single test.

use std::sync::Arc;

use bytes::BytesMut;
use idgate::contract::render;
use idgate::decision::{Identity, Reason, Verdict};
use idgate::spop::frame;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn verdict(groups: &[&str]) -> Verdict {
    Verdict {
        identity: Some(Arc::new(Identity {
            issuer: "corp".into(),
            sub: "3f6c1a8e-5b0d-4a51-9f43-2b7c9e1d0a64".into(),
            user: None,
            email: Some("alice@example.com".into()),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            scopes: vec![],
            expires_at: 0,
            issued_at: None,
            jti: None,
            claims: Default::default(),
        })),
        rule: Some("serving-invoke".into()),
        principal: Some("churn-sp".into()),
        upstream_authorization: Some("Bearer dapi0123456789abcdef".into()),
        ..Verdict::allow(Reason::Ok)
    }
}

/// Heap blocks allocated by rendering `v` and encoding its ACK into `buf`.
fn blocks(v: &Verdict, buf: &mut BytesMut) -> u64 {
    buf.clear();
    let before = dhat::HeapStats::get().total_blocks;
    let answer = render(v, 16380);
    frame::encode_ack(buf, 12345, 1, &answer.actions());
    assert!(answer.allowed());
    drop(answer);
    dhat::HeapStats::get().total_blocks - before
}

#[test]
fn rendering_and_encoding_allocate_only_the_joined_groups() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let mut buf = BytesMut::with_capacity(16384);
    let with_groups = verdict(&["ml-engineers", "data-readers", "staff"]);
    let without = verdict(&[]);
    // Warm up (lazy statics of the logging macros, if any).
    blocks(&with_groups, &mut buf);
    blocks(&without, &mut buf);
    assert_eq!(blocks(&without, &mut buf), 0);
    assert_eq!(blocks(&with_groups, &mut buf), 1);
    // A refusal of the same verdict (frame too small) copies nothing either (the first call
    // warms up the warning's callsite).
    drop(render(&without, 256 - 100));
    buf.clear();
    let before = dhat::HeapStats::get().total_blocks;
    let answer = render(&without, 256 - 100);
    frame::encode_ack(&mut buf, 1, 1, &answer.actions());
    assert!(!answer.allowed());
    drop(answer);
    assert_eq!(dhat::HeapStats::get().total_blocks - before, 0);
}
