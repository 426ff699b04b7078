//! End to end with real tokens, for HAProxy 2.6 and 3.4: a real OIDC provider (tests/oidc)
//! issues access tokens, idgate validates them and applies group rules, HAProxy (the shipped
//! configuration) enforces the decision, rewrites identity and credentials, rate-limits model
//! serving per identity, and forwards to the TLS echo upstream standing in for Databricks.

mod support;

use std::path::Path;

use support::haproxy::HaproxyVersion;
use support::http_client;
use support::oidc::{OidcProvider, RESOURCE};

/// What idgate sends upstream for the serving rule (a `static` upstream).
const SERVING_CREDENTIAL: &str = "dapi-e2e-serving-sp";

/// The per-identity serving limit the rate-limit test configures (IDGATE_SERVING_RATE_LIMIT,
/// requests per 10 s; 200 by default). Small, so the burst fits in the 10 s window even on a
/// loaded CI machine.
const SERVING_RATE_LIMIT: usize = 5;

/// How many requests past the limit may pass before a 429 must appear. HAProxy's rate
/// counter interpolates the previous period, so it can under-count (never over-count) when a
/// burst straddles a period boundary.
const RATE_LIMIT_SLACK: usize = 10;

const INVOKE: &str = "/serving-endpoints/churn/invocations";

fn agent_config(issuer: &str, token_file: &Path) -> String {
    format!(
        r#"
[log]
level = "info"
audit = "stderr"

[[issuer]]
name = "test-idp"
issuer = "{issuer}"
audiences = ["{RESOURCE}"]
algorithms = ["RS256", "ES256"]
groups_claim = "groups"
email_claim = "email"

[[rule]]
name = "serving-invoke"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
effect = "allow"
upstream = "serving-sp"

# A batch job (a machine identity without groups) may invoke serving too.
[[rule]]
name = "serving-batch"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
subjects = ["rs256-client"]
effect = "allow"
upstream = "serving-sp"

[[rule]]
name = "workspace-read"
methods = ["GET"]
paths = ["/api/2.*/**"]
effect = "allow"

[upstream.serving-sp]
kind = "static"
token_file = "{}"
"#,
        token_file.display()
    )
}

/// The OIDC provider + the stack (idgate + echo upstream + HAProxy, [`support::stack`]; the
/// agent's credential file in the stack's directory). Derefs to the stack (`s.hap`,
/// `s.echo`, `s.logs()`). Dropped in field order: the stack (HAProxy first), then the IdP,
/// its runtime.
struct Stack {
    stack: support::stack::Stack,
    /// In group ml-engineers.
    alice: String,
    /// In group analysts.
    bob: String,
    /// The machine identity `rs256-client`, allowed by subject.
    batch: String,
    _idp: OidcProvider,
    _rt: tokio::runtime::Runtime,
}

impl std::ops::Deref for Stack {
    type Target = support::stack::Stack;
    fn deref(&self) -> &support::stack::Stack {
        &self.stack
    }
}

impl Stack {
    fn start(version: HaproxyVersion) -> Option<Stack> {
        Self::start_with_env(version, &[])
    }

    fn start_with_env(version: HaproxyVersion, hap_env: &[(&'static str, &str)]) -> Option<Stack> {
        if support::oidc::skip() {
            return None;
        }
        version.require()?;
        let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
        let idp = rt.block_on(OidcProvider::start());
        let (alice, bob, batch) = rt.block_on(async {
            (
                idp.token("alice").await,
                idp.token("bob").await,
                idp.token("rs256-client").await,
            )
        });
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("serving-sp.token");
        support::write_secret(&token_file, SERVING_CREDENTIAL);
        let stack = support::stack::Stack::launch(
            version,
            &agent_config(&idp.issuer, &token_file),
            support::stack::Options {
                extra_env: hap_env,
                dir: Some(dir),
                ..Default::default()
            },
        )?;
        Some(Stack {
            stack,
            alice,
            bob,
            batch,
            _idp: idp,
            _rt: rt,
        })
    }

    fn invoke(&self, token: &str) -> reqwest::blocking::Response {
        http_client()
            .post(self.hap.url(INVOKE))
            .bearer_auth(token)
            .header("Content-Type", "application/json")
            .body(r#"{"inputs":[[1,2,3]]}"#)
            .send()
            .unwrap()
    }
}

fn group_member_reaches_serving_with_gateway_identity_and_service_credential(
    version: HaproxyVersion,
) {
    let Some(s) = Stack::start(version) else {
        return;
    };
    let resp = http_client()
        .post(s.hap.url(INVOKE))
        .bearer_auth(&s.alice)
        .header("X-Forwarded-User", "mallory")
        .header("X_Forwarded_Email", "mallory@example.com")
        .header("X-Forwarded-Groups", "admins")
        .body(r#"{"inputs":[[1,2,3]]}"#)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", s.logs());
    let seen = s.echo.requests();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, INVOKE);
    assert_eq!(req.body_len, r#"{"inputs":[[1,2,3]]}"#.len());
    assert_eq!(
        req.header_all("authorization"),
        vec![format!("Bearer {SERVING_CREDENTIAL}").as_str()],
        "the caller's IdP token must be replaced by the service credential"
    );
    assert_eq!(req.header_all("x-forwarded-user"), vec!["alice"]);
    assert_eq!(
        req.header_all("x-forwarded-email"),
        vec!["alice@example.com"]
    );
    assert_eq!(req.header_all("x-forwarded-groups"), vec!["ml-engineers"]);
    assert!(
        req.header("x_forwarded_email").is_none(),
        "forged underscore header forwarded: {:?}",
        req.headers
    );
}

fn identity_outside_the_group_is_forbidden(version: HaproxyVersion) {
    let Some(s) = Stack::start(version) else {
        return;
    };
    let resp = s.invoke(&s.bob);
    assert_eq!(resp.status(), 403, "{}", s.logs());
    let body = resp.text().unwrap();
    assert!(body.contains("PERMISSION_DENIED"), "body {body:?}");
    assert!(body.contains("no_matching_rule"), "body {body:?}");
    assert_eq!(
        s.echo.count(),
        0,
        "a forbidden request reached the upstream"
    );
}

fn tampered_token_is_rejected(version: HaproxyVersion) {
    let Some(s) = Stack::start(version) else {
        return;
    };
    // Change one character of the signature.
    let mut forged = s.alice.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let resp = s.invoke(&forged);
    assert_eq!(resp.status(), 401, "{}", s.logs());
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with(r#"Bearer realm="idgate""#)
            && challenge.contains(r#"error="invalid_token""#),
        "challenge {challenge:?}"
    );
    assert_eq!(s.echo.count(), 0);
}

fn rule_without_upstream_forwards_no_credential(version: HaproxyVersion) {
    let Some(s) = Stack::start(version) else {
        return;
    };
    let resp = http_client()
        .get(s.hap.url("/api/2.0/clusters/list"))
        .bearer_auth(&s.bob)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", s.logs());
    let seen = s.echo.requests();
    assert_eq!(seen.len(), 1);
    assert!(
        seen[0].header("authorization").is_none(),
        "the caller's IdP token reached the upstream: {:?}",
        seen[0].headers
    );
    assert_eq!(seen[0].header_all("x-forwarded-user"), vec!["bob"]);
    assert_eq!(seen[0].header_all("x-forwarded-groups"), vec!["analysts"]);
}

fn serving_rate_limit_is_per_identity(version: HaproxyVersion) {
    let limit = SERVING_RATE_LIMIT.to_string();
    let Some(s) = Stack::start_with_env(version, &[("IDGATE_SERVING_RATE_LIMIT", &limit)]) else {
        return;
    };
    let client = http_client();
    let send = |token: &str| {
        client
            .post(s.hap.url(INVOKE))
            .bearer_auth(token)
            .body("{}")
            .send()
            .unwrap()
    };
    for i in 0..SERVING_RATE_LIMIT {
        let resp = send(&s.alice);
        assert_eq!(
            resp.status(),
            200,
            "request {i} under the limit\n{}",
            s.logs()
        );
    }
    let mut limited = None;
    for _ in 0..RATE_LIMIT_SLACK {
        let resp = send(&s.alice);
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
        assert_eq!(resp.status(), 200);
    }
    let limited = limited.unwrap_or_else(|| {
        panic!(
            "no 429 within {} requests past the limit\n--- stick table ---\n{}\n{}",
            RATE_LIMIT_SLACK,
            s.hap.runtime_api("show table databricks_serving"),
            s.logs()
        )
    });
    assert_eq!(
        limited
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("10")
    );
    let forwarded = s.echo.count();
    assert!(
        (SERVING_RATE_LIMIT..SERVING_RATE_LIMIT + RATE_LIMIT_SLACK).contains(&forwarded),
        "{forwarded} requests forwarded"
    );
    // Another identity has its own budget.
    let resp = send(&s.batch);
    assert_eq!(resp.status(), 200, "{}", s.logs());
    assert_eq!(
        s.echo.count(),
        forwarded + 1,
        "a limited request was forwarded"
    );
}

haproxy_tests!(full: [
    group_member_reaches_serving_with_gateway_identity_and_service_credential,
    identity_outside_the_group_is_forbidden,
    tampered_token_is_rejected,
    rule_without_upstream_forwards_no_credential,
    serving_rate_limit_is_per_identity,
]);
