//! The JWT structure / header / claims parser (`auth::token::parse`) and the claim checks
//! (`check_claims`) on arbitrary UTF-8, without signature verification (that is
//! `jsonwebtoken`'s job and needs keys and a runtime).
//!
//! Two input forms, so the fuzzer reaches the JSON logic without having to discover base64:
//! - anything not starting with `{` is a raw compact token;
//! - `{header json}\n{payload json}` is base64url-encoded here into `header.payload.sig`.
#![no_main]

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use idgate::auth::fuzzing::{check_claims, parse, valid_kid, ClaimRules};
use idgate::decision::Reason;
use libfuzzer_sys::fuzz_target;

/// `auth.max_token_bytes` default.
const MAX_TOKEN_BYTES: usize = 8192;
/// A fixed "now" (2023-11-14) so runs are reproducible.
const NOW: u64 = 1_700_000_000;
const LEEWAY: u64 = 30;

static RULES: LazyLock<ClaimRules> = LazyLock::new(|| ClaimRules {
    name: Arc::from("corp"),
    issuer: "https://idp.example.com/realms/corp".into(),
    audiences: HashSet::from(["databricks-gateway".to_string()]),
    leeway: LEEWAY,
    max_lifetime: 86_400,
    email_claim: "email".into(),
    groups_claim: "realm_access.roles".into(),
});

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=c.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let token = if s.starts_with('{') {
        let (h, p) = s.split_once('\n').unwrap_or((s, "{}"));
        format!("{}.{}.c2ln", b64url(h.as_bytes()), b64url(p.as_bytes()))
    } else {
        s.to_owned()
    };
    let parsed = match parse(&token, MAX_TOKEN_BYTES) {
        Ok(p) => p,
        Err(_) => return,
    };
    // What `parse` accepted is structurally a compact JWS within the size limit.
    assert!(token.len() <= MAX_TOKEN_BYTES);
    assert_eq!(token.bytes().filter(|&b| b == b'.').count(), 2);
    assert!(parsed.header.kid.as_deref().is_none_or(valid_kid));
    // The size limit is checked before anything else.
    let tight = parse(&token, token.len() - 1).map(|_| ()).unwrap_err();
    assert_eq!(tight.reason, Reason::MalformedToken);

    let _ = parsed.iss();
    if let Ok(id) = check_claims(&RULES, parsed.claims, NOW) {
        assert!(!id.sub.is_empty());
        assert!(
            id.expires_at.saturating_add(LEEWAY) >= NOW,
            "expired token accepted"
        );
        assert_eq!(&*id.issuer, "corp");
    }
});
