//! Forged identity headers and the assertions about them, for the end-to-end tests that send
//! requests through HAProxy (tests/e2e_identity.rs, tests/e2e_policy.rs, tests/e2e_upstream.rs):
//! whatever a client sends under an identity header's name, in any spelling, must never reach
//! the upstream.

use super::echo::RecordedRequest;

/// Identity header names a client might forge, in the dash spelling (the underscore spelling is
/// derived): every one of them is checked on every request that reaches the upstream.
pub const IDENTITY_HEADERS: [&str; 4] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
];

/// Forged identity headers in both spellings, mixes of the two (which CGI/WSGI/Rack-style
/// upstreams read as the same header) and mixed case. Values all contain `forged`, so
/// [`assert_no_forged`] can find any that slipped through under any name.
pub const FORGED: [(&str, &str); 13] = [
    ("X-Forwarded_User", "forged-mixed"),
    ("x_forwarded-user", "forged-mixed"),
    ("X-FORWARDED_EMAIL", "forged-mixed@example.com"),
    ("X_Forwarded-Groups", "forged-mixed"),
    ("x-forwarded_preferred-username", "forged-mixed"),
    ("X-Forwarded-User", "forged-root"),
    ("X_Forwarded_User", "forged-root-underscore"),
    ("x-forwarded-EMAIL", "forged@example.com"),
    ("X_Forwarded_Email", "forged2@example.com"),
    ("X-Forwarded-Groups", "forged-admins"),
    ("X_Forwarded_Groups", "forged-admins-underscore"),
    ("X-Forwarded-Preferred-Username", "forged-root"),
    ("X_Forwarded_Preferred_Username", "forged-root"),
];

/// No header the upstream saw carries a forged value, and no identity header appears under a
/// spelling HAProxy does not set itself (any `_` in it, or Preferred-Username).
pub fn assert_no_forged(req: &RecordedRequest) {
    for (name, value) in &req.headers {
        assert!(
            !value.contains("forged"),
            "client-supplied header value reached the upstream in {name}: {:?}",
            req.headers
        );
        let normalized = name.to_ascii_lowercase().replace('_', "-");
        let identity = IDENTITY_HEADERS.contains(&normalized.as_str());
        assert!(
            !identity || !name.contains('_'),
            "identity header spelled {name} reached the upstream: {:?}",
            req.headers
        );
        assert_ne!(
            normalized, "x-forwarded-preferred-username",
            "{:?}",
            req.headers
        );
    }
}

/// The identity headers the upstream saw: exactly one each of User/Email/Groups with these
/// values (`None`: absent), nothing forged.
pub fn assert_identity(
    req: &RecordedRequest,
    user: Option<&str>,
    email: Option<&str>,
    groups: Option<&str>,
) {
    assert_no_forged(req);
    for (name, want) in [
        ("x-forwarded-user", user),
        ("x-forwarded-email", email),
        ("x-forwarded-groups", groups),
    ] {
        let got = req.header_all(name);
        match want {
            Some(w) => assert_eq!(got, vec![w], "{name}: {:?}", req.headers),
            None => assert!(got.is_empty(), "{name} should be absent: {:?}", req.headers),
        }
    }
}

/// Headers with the caller's token plus every forged identity header.
pub fn forged_with_token(token: &str) -> Vec<(String, String)> {
    let mut h = vec![("Authorization".to_string(), format!("Bearer {token}"))];
    h.extend(FORGED.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    h
}

/// `&[(String, String)]` as `&[(&str, &str)]`.
pub fn as_refs(h: &[(String, String)]) -> Vec<(&str, &str)> {
    h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}
