//! Upstream credentials end to end, for HAProxy 2.6 and 3.4: the real `idgate` binary with
//! `client_credentials` and `token_exchange` upstreams pointing at the fake Databricks token
//! endpoint (tests/support/databricks.rs), behind HAProxy running the shipped configuration,
//! with the TLS echo server as the workspace. Callers' tokens come from a mock IdP with fixture
//! keys (no node needed).
//!
//! One stack per HAProxy version; the scenarios run in order on it:
//! - client_credentials: the echo sees `Authorization: Bearer <the fake's token>`, never the
//!   caller's; 100 allowed requests cost exactly one token request;
//! - token_exchange: two callers get different upstream tokens, each exchanged for that
//!   caller's own token; a caller's repeat request reuses its cached token;
//! - token endpoint down (nothing listening) or hanging (with the default timeouts): 503
//!   `upstream_unavailable` (response body and audit log), nothing forwarded.

mod support;

use support::auth_kit;

use std::path::Path;
use std::time::Duration;

use auth_kit::{claims, MockIdp, Signer};
use serde_json::json;
use support::databricks::{Fail, FakeDatabricks, CLIENT_ID, CLIENT_SECRET, GRANT_EXCHANGE};
use support::forged::{as_refs, assert_identity, forged_with_token};
use support::haproxy::HaproxyVersion;
use support::stack::{self, Resp, Stack};

const SERVING: &str = "/serving-endpoints/churn-model/invocations";
const CLUSTERS: &str = "/api/2.0/clusters/list";
const DOWN: &str = "/api/2.0/jobs/list";

/// How long the fake token endpoint stalls when told to hang: far beyond any budget.
const ENDPOINT_HANG: Duration = Duration::from_secs(20);

/// Allowed requests sent with the shared service-principal token.
const SHARED_TOKEN_REQUESTS: usize = 100;

/// How many of them arrive at once before any token is cached.
const CONCURRENT_COLD_REQUESTS: usize = 10;

/// Token endpoint latency during the cold start, so the concurrent requests overlap in idgate
/// (well inside the default 2 s budget).
const COLD_START_DELAY: Duration = Duration::from_millis(300);

fn agent_config(mock: &MockIdp, fake: &FakeDatabricks, secret: &Path, dead_url: &str) -> String {
    format!(
        r#"
[log]
level = "info"
audit = "{audit}"

[[issuer]]
name = "fixture"
issuer = "{mock_iss}"
jwks_uri = "{mock_jwks}"
audiences = ["api"]

[upstream.serving-sp]
kind = "client_credentials"
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
scope = "all-apis"

[upstream.federated]
kind = "token_exchange"
token_url = "{token_url}"
scope = "all-apis"

# Nothing listens at this URL. A short budget keeps the answer well inside the SPOE
# processing timeout (3 s), so HAProxy gets idgate's 503 rather than timing out.
[upstream.gone]
kind = "client_credentials"
token_url = "{dead_url}"
client_id = "{CLIENT_ID}"
client_secret_file = "{secret}"
timeout = "500ms"
total_budget = "1s"

[[rule]]
name = "serving-invoke"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
effect = "allow"
upstream = "serving-sp"

[[rule]]
name = "jobs"
methods = ["GET"]
paths = ["/api/2.0/jobs/**"]
effect = "allow"
upstream = "gone"

[[rule]]
name = "workspace-read"
methods = ["GET"]
paths = ["/api/2.0/**"]
effect = "allow"
upstream = "federated"
"#,
        audit = stack::AUDIT_PLACEHOLDER,
        mock_iss = mock.base,
        mock_jwks = mock.jwks_uri(),
        token_url = fake.token_url,
        secret = secret.display(),
    )
}

/// A caller token for `sub` from the mock issuer.
fn token_for(key: &Signer, iss: &str, sub: &str) -> String {
    let mut c = claims(iss);
    c["sub"] = json!(sub);
    c["email"] = json!(format!("{sub}@example.com"));
    key.token(&c)
}

/// The single `Authorization` value the upstream saw on its last request.
fn upstream_bearer(s: &Stack) -> String {
    let up = s.last_upstream();
    let auth = up.header_all("authorization");
    assert_eq!(auth.len(), 1, "exactly one Authorization: {:?}", up.headers);
    auth[0]
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer credential: {:?}", auth[0]))
        .to_string()
}

fn assert_upstream_unavailable(s: &Stack, r: &Resp, what: &str) {
    s.expect(r, 503, what);
    assert!(
        r.body.contains("idgate: upstream_unavailable"),
        "{what}: the 503 must be idgate's decision, not an agent timeout: {:?}\n{}",
        r.body,
        s.logs()
    );
    assert_eq!(r.header("retry-after"), Some("1"), "{what}: {r:?}");
}

fn upstream_end_to_end(version: HaproxyVersion) {
    let rt = stack::runtime();
    let key = Signer::ec("fixture-ec-1");
    let mock = rt.block_on(MockIdp::start(&[&key]));
    let fake = rt.block_on(FakeDatabricks::start());
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("sp.secret");
    std::fs::write(&secret, CLIENT_SECRET).unwrap();
    let dead_url = format!("http://{}/oidc/v1/token", support::free_addr());
    let config = agent_config(&mock, &fake, &secret, &dead_url);
    let Some(s) = Stack::start(version, &config) else {
        return;
    };
    let alice = token_for(&key, &mock.base, "alice");
    let bob = token_for(&key, &mock.base, "bob");

    // --- client_credentials: one shared token, fetched once ---
    // The first requests arrive together while the token endpoint is slow: they must share
    // one token request (single flight), then the rest are served from the cache.
    let headers = forged_with_token(&alice);
    fake.set_delay(COLD_START_DELAY);
    std::thread::scope(|scope| {
        let calls: Vec<_> = (0..CONCURRENT_COLD_REQUESTS)
            .map(|i| {
                let (s, headers) = (&s, &headers);
                scope.spawn(move || {
                    let r = s.call("POST", SERVING, &as_refs(headers));
                    s.expect(&r, 200, &format!("concurrent serving request {i}"));
                })
            })
            .collect();
        for c in calls {
            c.join().expect("a concurrent request panicked");
        }
    });
    fake.set_delay(Duration::ZERO);
    let mut seen: Vec<String> = s
        .echo
        .requests()
        .iter()
        .map(|r| r.header_all("authorization").join(" | "))
        .collect();
    seen.dedup();
    assert_eq!(
        seen.len(),
        1,
        "concurrent callers saw different credentials: {seen:?}"
    );
    let shared = seen[0]
        .strip_prefix("Bearer ")
        .unwrap_or_else(|| panic!("not a bearer credential: {seen:?}"))
        .to_string();
    for i in CONCURRENT_COLD_REQUESTS..SHARED_TOKEN_REQUESTS {
        let r = s.call("POST", SERVING, &as_refs(&headers));
        s.expect(&r, 200, &format!("serving request {i}"));
        assert_eq!(
            upstream_bearer(&s),
            shared,
            "request {i}: the shared token changed"
        );
    }
    assert!(shared.starts_with("dbx-cc-"), "{shared}");
    assert_eq!(
        fake.subject_of(&shared),
        Some(None),
        "the upstream token is the fake's client_credentials token"
    );
    assert_eq!(s.echo.count(), SHARED_TOKEN_REQUESTS);
    assert_eq!(
        fake.requests_for_grant("client_credentials"),
        1,
        "{SHARED_TOKEN_REQUESTS} requests must cost one token request"
    );
    assert_eq!(fake.rejected(), 0, "{:?}", fake.last_rejection());
    let up = s.last_upstream();
    assert_identity(
        &up,
        Some("alice"),
        Some("alice@example.com"),
        Some("ml-engineers"),
    );
    assert!(up.headers.iter().all(|(_, v)| !v.contains(&alice)));

    // --- token_exchange: per caller ---
    let r = s.call("GET", CLUSTERS, &as_refs(&forged_with_token(&alice)));
    s.expect(&r, 200, "alice through token exchange");
    let alice_up = upstream_bearer(&s);
    let r = s.call_as("GET", CLUSTERS, &bob);
    s.expect(&r, 200, "bob through token exchange");
    let bob_up = upstream_bearer(&s);
    assert_identity(
        &s.last_upstream(),
        Some("bob"),
        Some("bob@example.com"),
        Some("ml-engineers"),
    );
    assert_ne!(alice_up, bob_up, "two callers share an upstream token");
    assert!(alice_up.starts_with("dbx-tx-") && bob_up.starts_with("dbx-tx-"));
    assert_eq!(fake.subject_of(&alice_up), Some(Some(alice.clone())));
    assert_eq!(fake.subject_of(&bob_up), Some(Some(bob.clone())));
    // Cached per caller: alice again uses her token without another exchange.
    let r = s.call_as("GET", CLUSTERS, &alice);
    s.expect(&r, 200, "alice again");
    assert_eq!(upstream_bearer(&s), alice_up);
    assert_eq!(fake.requests_for_subject(&alice), 1);
    assert_eq!(fake.requests_for_subject(&bob), 1);
    assert_eq!(fake.requests_for_grant(GRANT_EXCHANGE), 2);
    assert_eq!(fake.rejected(), 0, "{:?}", fake.last_rejection());
    let forwarded = s.echo.count();
    assert_eq!(forwarded, SHARED_TOKEN_REQUESTS + 3);

    // --- token endpoint down: fail closed ---
    let r = s.call_as("GET", DOWN, &alice);
    assert_upstream_unavailable(&s, &r, "token endpoint not listening");
    // The endpoint hangs: `federated` runs with the default timeout and budget, which must
    // give up early enough for idgate's own 503 (with its reason) to beat HAProxy's SPOE
    // `timeout processing` (regression: a default budget equal to that timeout lost the race,
    // and callers got the generic agent-timeout 503).
    fake.fail_always(Some(Fail::Hang(ENDPOINT_HANG)));
    let carol = token_for(&key, &mock.base, "carol");
    let r = s.call_as("GET", CLUSTERS, &carol);
    assert_upstream_unavailable(&s, &r, "token endpoint hanging");
    fake.fail_always(None);
    assert_eq!(
        s.echo.count(),
        forwarded,
        "a request went upstream without a credential"
    );

    let audit = s.audit(SHARED_TOKEN_REQUESTS + 5);
    let tail: Vec<(&str, &str, i64)> = audit[SHARED_TOKEN_REQUESTS + 3..]
        .iter()
        .map(|l| {
            (
                l["reason"].as_str().unwrap(),
                l["rule"].as_str().unwrap_or("-"),
                l["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tail,
        [
            ("upstream_unavailable", "jobs", 503),
            ("upstream_unavailable", "workspace-read", 503)
        ],
        "{audit:#?}"
    );
    let text = s.audit_text();
    for secret in [shared.as_str(), alice_up.as_str(), CLIENT_SECRET] {
        assert!(!text.contains(secret), "a credential reached the audit log");
    }
}

/// Margin between the default upstream budget and HAProxy's SPOE `timeout processing`: room
/// for token validation, the SPOP round trip and a loaded machine.
const PROCESSING_MARGIN: Duration = Duration::from_secs(1);

/// The default `total_budget` leaves idgate time to answer `upstream_unavailable` within the
/// shipped SPOE `timeout processing` (the deterministic half of the hanging-endpoint scenario).
#[test]
fn default_upstream_budget_fits_the_shipped_spoe_processing_timeout() {
    let spoe = std::fs::read_to_string(support::repo_path("haproxy/idgate.spoe.conf")).unwrap();
    let processing = spoe
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix("timeout processing "))
        .expect("idgate.spoe.conf sets `timeout processing`");
    let processing = humantime::parse_duration(processing.trim()).unwrap();
    let cfg = idgate::config::Config::from_toml(
        "[upstream.x]\nkind = \"token_exchange\"\ntoken_url = \"http://127.0.0.1:1/t\"\n",
        "test",
    )
    .unwrap();
    let up = &cfg.upstreams["x"];
    assert!(
        up.total_budget.0 + PROCESSING_MARGIN <= processing,
        "default total_budget {:?} leaves less than {PROCESSING_MARGIN:?} of the SPOE timeout {processing:?}",
        up.total_budget.0
    );
    assert!(up.timeout.0 <= up.total_budget.0);
}

haproxy_tests!(full: [upstream_end_to_end]);
