//! End to end with opaque access tokens, for HAProxy 2.6 and 3.4: an Okta-shaped introspection
//! endpoint ([`support::introspection`]) vouches for the token, idgate applies the group rule,
//! HAProxy (the shipped configuration) forwards with the identity headers and the service
//! credential; an inactive token is a 401 with idgate's challenge; an IdP that fails is a 503
//! with `Retry-After` (fail closed, retryable).

mod support;

use std::time::Duration;

use support::haproxy::HaproxyVersion;
use support::introspection::{FakeIntrospection, OKTA_SECRET};

const SERVING_CREDENTIAL: &str = "dapi-e2e-introspection-sp";
const INVOKE: &str = "/serving-endpoints/churn/invocations";

fn opaque_token_end_to_end(version: HaproxyVersion) {
    version
        .require()
        .expect("HAProxy is required for the end-to-end tests");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeIntrospection::start());
    let dir = tempfile::tempdir().unwrap();
    support::write_secret(&dir.path().join("okta.secret"), OKTA_SECRET);
    support::write_secret(&dir.path().join("sp.token"), SERVING_CREDENTIAL);
    let config = format!(
        r#"
[log]
audit = "{audit}"

{okta}
[[rule]]
name = "serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
effect = "allow"
upstream = "serving-sp"

[upstream.serving-sp]
kind = "static"
token_file = "{d}/sp.token"
"#,
        okta = fake.okta_issuer_toml(&dir.path().join("okta.secret"), ""),
        d = dir.path().display(),
        audit = support::stack::AUDIT_PLACEHOLDER,
    );
    let s = support::stack::Stack::launch(
        version,
        &config,
        support::stack::Options {
            dir: Some(dir),
            ..Default::default()
        },
    )
    .expect("the stack starts");
    let token = fake.mint_okta(
        "alice@example.com",
        &["Everyone", "ml-engineers"],
        Duration::from_secs(3600),
    );
    for _ in 0..3 {
        let resp = s.call_as("POST", INVOKE, &token);
        s.expect(&resp, 200, "an active token in the group");
    }
    assert_eq!(
        fake.calls("okta"),
        1,
        "one introspection for three requests"
    );
    let seen = s.last_upstream();
    assert_eq!(
        seen.header_all("authorization"),
        vec![format!("Bearer {SERVING_CREDENTIAL}").as_str()],
        "the opaque token is replaced by the service credential"
    );
    assert_eq!(
        seen.header_all("x-forwarded-user"),
        vec!["00uid4BxXw6I6TV4m0g0"]
    );
    assert_eq!(
        seen.header_all("x-forwarded-groups"),
        vec!["Everyone,ml-engineers"]
    );

    let resp = s.call_as("POST", INVOKE, "2YotnFZFEjr1zCsicMWpAA");
    s.expect(&resp, 401, "an inactive token");
    let challenge = resp.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.contains("invalid_token") && challenge.contains("token is not active"),
        "{challenge}"
    );

    fake.fail_next(&[503]);
    let other = fake.mint_okta(
        "bob@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    let resp = s.call_as("POST", INVOKE, &other);
    s.expect(&resp, 503, "the IdP fails: fail closed, retryable");
    assert!(resp.header("retry-after").is_some(), "{resp:?}");
    assert!(resp.body.contains("upstream_unavailable"), "{resp:?}");
    let audit = s.audit(5);
    let reasons: Vec<&str> = audit.iter().filter_map(|l| l["reason"].as_str()).collect();
    assert_eq!(
        reasons,
        ["ok", "ok", "ok", "bad_signature", "upstream_unavailable"]
    );
    assert!(!s.audit_text().contains(&token));
}

haproxy_tests!(full: [opaque_token_end_to_end]);
