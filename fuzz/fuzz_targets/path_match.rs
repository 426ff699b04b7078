//! Request-path normalization and rule matching on arbitrary strings.
//!
//! Invariants checked (module docs of `idgate::policy::path`):
//! - a normalized path starts with `/`, has no dot-segment, no empty segment (`//`) except a
//!   single trailing slash, no `\` or `;`, no control characters, no still-valid `%XX`
//!   escape (so no `%2F`);
//! - normalizing is idempotent when the result has nothing a second pass would reinterpret
//!   (a decoded `%`, `?` or `#`);
//! - a single trailing slash never changes which rule matches;
//! - the deny rule matches regardless of ASCII case, and (its patterns ending in `/**`) also
//!   matches every path below a path it matches.
#![no_main]

use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

use idgate::config::Config;
use idgate::decision::Identity;
use idgate::policy::{normalize_path, Outcome, Policy, RequestView, MAX_PATH_BYTES};
use libfuzzer_sys::fuzz_target;

const RULES: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://idp.example.com/realms/corp"
audiences = ["databricks-gateway"]

[[rule]]
name = "deny-credentials"
paths = ["/api/*/secrets/**", "/api/2.*/token/**", "/api/*/token-management/**"]
effect = "deny"

[[rule]]
name = "health"
public = true
methods = ["GET", "HEAD"]
paths = ["/healthz", "/static/*.js", "/docs/**"]

[[rule]]
name = "serving"
paths = ["/serving-endpoints/*/invocations", "/**/v*-beta/x"]

[[rule]]
name = "api"
paths = ["/api/2.*/**"]
"#;

static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let cfg = Config::from_toml(RULES, "fuzz").expect("fixed fuzz config is valid");
    Policy::compile(&cfg).expect("fixed fuzz policy compiles")
});

static ID: LazyLock<Identity> = LazyLock::new(|| Identity {
    issuer: Arc::from("corp"),
    sub: "alice".into(),
    email: Some("alice@example.com".into()),
    groups: vec!["ml".into()],
    scopes: vec![],
    expires_at: u64::MAX,
    claims: Default::default(),
});

/// (public match, identity match), compared by rule name.
fn decide(path: &str) -> (Option<&str>, Option<(bool, &str)>) {
    let req = RequestView {
        method: "GET",
        path,
        host: Some("dbc-1234.cloud.databricks.com"),
        src: None,
    };
    let public = POLICY.match_public(&req).map(|r| &*r.name);
    let private = match POLICY.evaluate(&req, &ID) {
        Outcome::Allow(r) => Some((true, &*r.name)),
        Outcome::Deny(r) => Some((false, &*r.name)),
        Outcome::NoMatch => None,
    };
    (public, private)
}

fn denied(path: &str) -> bool {
    matches!(decide(path).1, Some((false, _)))
}

fn has_escape(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(p) = normalize_path(raw) else {
        return;
    };
    let p: &str = &p;
    assert!(p.starts_with('/') && p.len() <= MAX_PATH_BYTES);
    let body = p.strip_suffix('/').unwrap_or(p);
    assert!(!body.contains("//"), "empty segment in {p:?}");
    for seg in p.split('/') {
        assert!(seg != "." && seg != "..", "dot-segment in {p:?}");
    }
    assert!(!has_escape(p), "escape left in {p:?}");
    // `#` may appear decoded (`%23` is an ordinary character); `\` and `;` are refused
    // raw and encoded.
    assert!(!p.contains(['\\', ';']));
    assert!(
        !p.chars().any(|c| c.is_control()),
        "control character in {p:?}"
    );
    if !p.contains(['%', '?', '#']) {
        assert_eq!(normalize_path(p), Ok(Cow::Borrowed(p)), "not idempotent");
    }

    let d = decide(p);
    if p != "/" {
        let other = if p.ends_with('/') {
            body.to_owned()
        } else {
            format!("{p}/")
        };
        assert_eq!(d, decide(&other), "trailing slash changed the match: {p:?}");
    }
    let is_denied = matches!(d.1, Some((false, _)));
    assert_eq!(is_denied, denied(&p.to_ascii_uppercase()), "case: {p:?}");
    assert_eq!(is_denied, denied(&p.to_ascii_lowercase()), "case: {p:?}");
    if is_denied {
        assert!(
            denied(&format!("{body}/x")),
            "deny does not cover below {p:?}"
        );
    }
});
