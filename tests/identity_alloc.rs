//! A validated identity keeps no heap memory for the claims it does not use.
//!
//! Every cached identity lives as long as its token (up to `auth.token_cache_size` of them), so
//! a few hundred bytes left behind per identity is tens of megabytes at the default size. dhat
//! counts live heap bytes; one profiler per process, so this file holds a single test.

use std::collections::HashSet;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use idgate::auth::fuzzing::{check_claims, parse, ClaimRules, ClaimSelection};
use idgate::claim_path::ClaimPath;
use idgate::decision::Identity;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const NOW: u64 = 1_800_000_000;

fn token() -> String {
    let payload = format!(
        r#"{{"iss":"https://idp.example.com","sub":"alice","aud":["gw","api"],"exp":{},"iat":{NOW},
        "jti":"j-1","azp":"client","scope":"read write","email":"alice@example.com",
        "realm_access":{{"roles":["a","b"],"other":{{"x":[1,2,3]}}}},"tenant":"t1","name":"Alice"}}"#,
        NOW + 600
    );
    format!(
        "{}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#),
        URL_SAFE_NO_PAD.encode(payload)
    )
}

fn rules() -> ClaimRules {
    ClaimRules {
        name: Arc::from("corp"),
        iss: idgate::auth::fuzzing::IssMatch::Exact("https://idp.example.com".into()),
        audiences: HashSet::from(["gw".to_string()]),
        leeway: 30,
        max_lifetime: 3600,
        email_claim: ClaimPath::parse("email").unwrap(),
        groups_claim: ClaimPath::parse("realm_access.roles").unwrap(),
        user_claim: None,
    }
}

/// Heap bytes held by the typed fields of an identity (what it must keep).
fn typed_bytes(id: &Identity) -> usize {
    let list = |l: &Vec<String>| {
        l.capacity() * size_of::<String>() + l.iter().map(String::capacity).sum::<usize>()
    };
    id.sub.capacity()
        + id.email.as_ref().map_or(0, String::capacity)
        + list(&id.groups)
        + list(&id.scopes)
        + id.jti.as_ref().map_or(0, |j| j.len())
}

#[test]
fn identities_hold_only_what_they_use() {
    let raw = token();
    let rules = rules();
    let paths = [&rules.email_claim, &rules.groups_claim];
    let plain = ClaimSelection::new(paths, []);
    let tenant = ClaimSelection::new(paths, &[ClaimPath::parse("tenant").unwrap()]);
    let _profiler = dhat::Profiler::builder()
        .testing()
        .file_name(std::env::temp_dir().join(format!("idgate-id-dhat-{}.json", std::process::id())))
        .build();

    let parsed = parse(&raw, 8192).unwrap();
    let before = dhat::HeapStats::get().curr_bytes;
    let id = check_claims(&rules, &parsed.claims(&plain).unwrap(), NOW).unwrap();
    assert_eq!(id.groups, ["a", "b"]);
    assert_eq!(id.scopes, ["read", "write"]);
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
    assert!(id.claims.is_empty());
    let held = dhat::HeapStats::get().curr_bytes - before;
    dhat::assert_eq!(
        held,
        typed_bytes(&id),
        "no claims kept: only sub, email, groups, scopes and jti may stay allocated"
    );
    drop(id);

    let id = check_claims(&rules, &parsed.claims(&tenant).unwrap(), NOW).unwrap();
    assert_eq!(id.claims.len(), 1);
    assert_eq!(id.claims["tenant"], "t1");
    let kept = dhat::HeapStats::get().curr_bytes - before - typed_bytes(&id);
    // One map node plus the kept key and value; the whole claim set takes far more.
    let payload = raw.split('.').nth(1).unwrap();
    let full: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    let full_bytes = dhat::HeapStats::get().curr_bytes - before - typed_bytes(&id) - kept;
    assert_eq!(full.as_object().unwrap().len(), 12);
    dhat::assert!(
        kept > 0 && kept * 2 < full_bytes,
        "kept one claim in {kept} bytes, the full set takes {full_bytes}"
    );
}
