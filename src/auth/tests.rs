//! Unit tests of [`super`]: token extraction, claim selection, reload of the caches.

use super::*;
use bytestring::ByteString;

fn req(auth: Option<&str>, cookie: Option<&str>) -> AuthzRequest {
    AuthzRequest {
        authorization: auth.map(ByteString::from),
        cookie: cookie.map(ByteString::from),
        ..AuthzRequest::default()
    }
}

fn ex(auth: Option<&str>, cookie: Option<&str>) -> Result<Option<String>, Reason> {
    extract_token(&req(auth, cookie), Some("at"))
        .map(|t| t.map(str::to_owned))
        .map_err(|r| r.reason)
}

#[tokio::test]
async fn refresh_task_stops_when_the_issuer_is_dropped() {
    // Nothing listens on port 1: the refresher keeps retrying until it is stopped.
    let cfg = Config::from_toml(
        "[[issuer]]\nname = \"drop-test\"\nissuer = \"http://127.0.0.1:1\"\naudiences = [\"a\"]\n",
        "t",
    )
    .unwrap();
    let a = Authenticator::new(&cfg, None, reqwest::Client::new());
    let handle = a.issuers[0]
        .refresher
        .clone()
        .expect("spawned inside a runtime");
    let b = Authenticator::new(&cfg, Some(&a), reqwest::Client::new());
    drop(a);
    tokio::task::yield_now().await;
    assert!(
        !handle.is_finished(),
        "still used by the reloaded authenticator"
    );
    drop(b);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while !handle.is_finished() && std::time::Instant::now() < deadline {
        tokio::task::yield_now().await;
    }
    assert!(handle.is_finished());
}

#[test]
fn no_runtime_no_task() {
    let cfg = Config::from_toml(
        "[[issuer]]\nname = \"nort\"\nissuer = \"http://127.0.0.1:1\"\naudiences = [\"a\"]\n",
        "t",
    )
    .unwrap();
    let a = Authenticator::new(&cfg, None, reqwest::Client::new());
    assert!(a.issuers[0].refresher.is_none());
    assert!(!a.ready());
}

#[test]
fn kept_claims_are_those_the_rules_read() {
    let cfg = Config::from_toml(
        r#"
[[rule]]
name = "a"
claims = { "realm_access.roles" = "admin", "https://example.com/tenant" = "t1", email_verified = true }
[[rule]]
name = "b"
principal = "claim:preferred_username"
[[rule]]
name = "c"
principal = "email"
[[rule]]
name = "d"
claims = { 'resource_access."gw.example.com".roles' = "admin" }
claims_match = { ref = "refs/tags/v*" }
"#,
        "t",
    )
    .unwrap();
    let read = claims_read_by_rules(&cfg);
    let selection = jose::ClaimSelection::new([], &read);
    assert_eq!(
        selection.kept(),
        [
            "email_verified",
            "https://example",
            "https://example.com/tenant",
            "preferred_username",
            "realm_access",
            "realm_access.roles",
            "ref",
            "resource_access",
        ]
    );
    let none = Config::from_toml("[[rule]]\nname = \"x\"\npaths = [\"/a\"]\n", "t").unwrap();
    assert!(claims_read_by_rules(&none).is_empty());
}

#[tokio::test]
async fn cache_is_not_kept_when_the_rules_read_other_claims() {
    let base = "[[issuer]]\nname = \"kc\"\nissuer = \"http://127.0.0.1:1\"\naudiences = [\"a\"]\n";
    let cfg = |rules: &str| Config::from_toml(&format!("{base}{rules}"), "t").unwrap();
    let plain = cfg("[[rule]]\nname = \"r\"\npaths = [\"/a\"]\n");
    let a = Authenticator::new(&plain, None, reqwest::Client::new());
    let b = Authenticator::new(&plain, Some(&a), reqwest::Client::new());
    assert!(b.shares_cache_with(&a), "same rules: the cache is kept");
    let reads = cfg("[[rule]]\nname = \"r\"\nclaims = { tenant = \"t1\" }\n");
    let c = Authenticator::new(&reads, Some(&b), reqwest::Client::new());
    assert!(
        !c.shares_cache_with(&b),
        "rules read another claim: a new cache"
    );
}

#[test]
fn ascii_whitespace_scan() {
    for ws in [" ", "\t", "\n", "\r", "\x0c"] {
        assert!(
            has_ascii_whitespace(format!("eyJ{ws}x.y.z").as_bytes()),
            "{ws:?}"
        );
        assert!(has_ascii_whitespace(
            format!("{}{ws}", "a".repeat(1000)).as_bytes()
        ));
    }
    assert!(!has_ascii_whitespace(b""));
    assert!(!has_ascii_whitespace("eyJ.\u{a0}\u{2003}é.sig".as_bytes()));
    assert!(!has_ascii_whitespace("x".repeat(8192).as_bytes()));
    // Vertical tab is not ASCII whitespace for Rust (nor for RFC 6750's b64token).
    assert!(!has_ascii_whitespace(b"a\x0bb"));
}

#[test]
fn token_extraction() {
    assert_eq!(ex(Some("Bearer abc"), None), Ok(Some("abc".into())));
    assert_eq!(ex(Some("bEaReR   abc "), None), Ok(Some("abc".into())));
    assert_eq!(ex(Some("Bearer\tabc"), None), Ok(Some("abc".into())));
    assert_eq!(ex(Some("Bearer"), None), Err(Reason::MalformedToken));
    assert_eq!(ex(Some("Bearer   "), None), Err(Reason::MalformedToken));
    assert_eq!(ex(Some("Bearer a b"), None), Err(Reason::MalformedToken));
    assert_eq!(
        ex(Some("Basic dXNlcjpwdw=="), None),
        Err(Reason::UnsupportedToken)
    );
    assert_eq!(
        ex(Some("eyJhbGciOi.x.y"), None),
        Err(Reason::UnsupportedToken)
    );
    assert_eq!(ex(Some("Bearerabc"), None), Err(Reason::UnsupportedToken));
    // Authorization wins over the cookie; an empty header falls through to it.
    assert_eq!(ex(Some("Bearer h"), Some("at=c")), Ok(Some("h".into())));
    assert_eq!(ex(Some(""), Some("at=c")), Ok(Some("c".into())));
    assert_eq!(
        ex(None, Some("x=1; at=\"tok\"; at=2")),
        Ok(Some("tok".into()))
    );
    assert_eq!(ex(None, Some("xat=1;at2=2")), Ok(None));
    assert_eq!(ex(None, Some("at=")), Ok(None));
    assert_eq!(ex(None, None), Ok(None));
    // No cookie configured: the cookie header is ignored.
    assert_eq!(extract_token(&req(None, Some("at=c")), None), Ok(None));
}
