//! A cached identity keeps no heap memory for the claims it drops.
//!
//! Every cached identity lives as long as its token (up to `auth.token_cache_size` of them), so
//! a few hundred bytes left behind per identity is tens of megabytes at the default size. dhat
//! counts live heap bytes; one profiler per process, so this file holds a single test.

use std::collections::BTreeSet;

use idgate::auth::keep_claims;
use serde_json::{json, Map, Value};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn claims() -> Map<String, Value> {
    let Value::Object(m) = json!({
        "iss": "https://idp.example.com", "sub": "alice", "aud": ["gw", "api"], "exp": 1,
        "iat": 0, "jti": "j-1", "azp": "client", "scope": "read write",
        "realm_access": { "roles": ["a", "b"] }, "tenant": "t1",
    }) else {
        unreachable!()
    };
    m
}

#[test]
fn dropped_claims_leave_nothing_allocated() {
    let kept_tenant = BTreeSet::from(["tenant".to_string()]);
    let nothing = BTreeSet::new();
    let _profiler = dhat::Profiler::builder()
        .testing()
        .file_name(std::env::temp_dir().join(format!("idgate-id-dhat-{}.json", std::process::id())))
        .build();

    let before = dhat::HeapStats::get().curr_bytes;
    let none = keep_claims(claims(), &nothing);
    assert!(none.is_empty());
    let after = dhat::HeapStats::get().curr_bytes;
    dhat::assert_eq!(after, before, "no claims kept: nothing may stay allocated");

    let one = keep_claims(claims(), &kept_tenant);
    assert_eq!(one.len(), 1);
    assert_eq!(one["tenant"], "t1");
    let held = dhat::HeapStats::get().curr_bytes - before;
    // One map node plus the kept key and value; the whole claim set takes far more.
    let full = claims();
    let full_bytes = dhat::HeapStats::get().curr_bytes - before - held;
    assert_eq!(full.len(), 10);
    dhat::assert!(
        held * 2 < full_bytes,
        "kept one claim in {held} bytes, the full set takes {full_bytes}"
    );
}
