//! Rule matching must not allocate: it runs for every request against every rule.
//!
//! dhat counts heap blocks only while a profiler is alive, and one profiler per process is
//! allowed, so this file holds a single test.

use idgate::config::Config;
use idgate::decision::Identity;
use idgate::policy::{normalize_path, Outcome, Policy, RequestView};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const RULES: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://idp.example.com"
audiences = ["gw"]

[[rule]]
name = "health"
public = true
paths = ["/healthz"]
hosts = ["*.example.com"]
sources = ["10.0.0.0/8"]

[[rule]]
name = "deny"
paths = ["/api/*/secrets/**"]
effect = "deny"

[[rule]]
name = "every-condition"
methods = ["GET", "POST"]
paths = ["/a/*/b", "/api/2.*/**/list"]
hosts = ["dbc.example.com", "*.example.com"]
sources = ["10.0.0.0/8", "2001:db8::/32"]
groups = ["g1", "analysts"]
subjects = ["user-1"]
emails = ["ana@example.com"]
email_domains = ["example.com"]
scopes = ["sql"]
issuers = ["corp"]
claims = { tier = ["gold"], "realm_access.roles" = "reader", level = 3 }
principal = "claim:tier"

[[rule]]
name = "nothing-matches"
methods = ["DELETE"]
"#;

#[test]
fn matching_does_not_allocate() {
    let cfg = Config::from_toml(RULES, "t").unwrap();
    let policy = Policy::compile(&cfg);
    let id = Identity {
        issuer: "corp".into(),
        sub: "user-1".into(),
        user: None,
        email: Some("Ana@Example.com".into()),
        groups: vec!["x".into(), "analysts".into()],
        scopes: vec!["openid".into(), "sql".into()],
        expires_at: 0,
        issued_at: None,
        jti: None,
        claims: serde_json::from_str(
            r#"{"tier": "gold", "level": 3, "realm_access": {"roles": ["writer", "reader"]}}"#,
        )
        .unwrap(),
    };
    let view = |method, path| RequestView {
        method,
        path,
        host: Some("DBC.example.com:443"),
        src: Some("10.1.2.3".parse().unwrap()),
    };

    // dhat writes its profile when the profiler drops: keep it out of the source tree.
    let profile =
        std::env::temp_dir().join(format!("idgate-policy-dhat-{}.json", std::process::id()));
    let profiler = dhat::Profiler::builder()
        .testing()
        .file_name(&profile)
        .build();

    let r = view("GET", "/api/2.1/clusters/x/list");
    assert!(policy.match_public(&view("GET", "/healthz")).is_some());
    assert!(policy.match_public(&r).is_none());
    assert!(matches!(policy.evaluate(&r, &id), Outcome::Allow(_)));
    assert!(matches!(
        policy.evaluate(&view("GET", "/api/2.0/secrets/get"), &id),
        Outcome::Deny(_)
    ));
    assert!(matches!(
        policy.evaluate(&view("PUT", "/a/b/c"), &id),
        Outcome::NoMatch
    ));
    // The common case of normalization (no escape) borrows too.
    assert!(normalize_path("/api/2.1/clusters/x/list").is_ok());

    let stats = dhat::HeapStats::get();
    dhat::assert_eq!(stats.total_blocks, 0);
    drop(profiler);
    let _ = std::fs::remove_file(&profile);
}
