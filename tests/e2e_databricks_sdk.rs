//! Real Databricks clients through the gateway, for HAProxy 2.6 and 3.4: the Databricks SDK for
//! Python (`WorkspaceClient(host=<gateway>, token=<IdP JWT>).serving_endpoints.query(...)`) and
//! MLflow (`mlflow.deployments.get_deploy_client("databricks").predict(...)`), from PyPI
//! (scripts/python-deps.sh), driven by tests/python/databricks_client.py. Behind the gateway:
//! the real idgate binary, HAProxy running the shipped configuration, and the fake Databricks
//! (tests/support/databricks) as the workspace, its token endpoint and the data plane of
//! route-optimized endpoints, with a fake DNS server for the data-plane names.
//!
//! What a Databricks user sees is asserted on the client's side: the answer of a classic and
//! of a route-optimized endpoint, and for each deny reason the exception class the SDK raises
//! (Unauthenticated, PermissionDenied, TooManyRequests, TemporarilyUnavailable after retrying,
//! an unretried error for a refused gateway credential), with the SDK's request ID equal to
//! HAProxy's unique ID. The interpreter: IDGATE_TEST_PYTHON (scripts/test.sh), default
//! /opt/idgate-test-venv/bin/python3; missing, the tests FAIL.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::databricks::{Fail, FakeDatabricks, Plane, TokenKind, GRANT_JWT_BEARER};
use support::dns::FakeDns;
use support::haproxy::{HaproxyVersion, Upstream};
use support::sdk::{client, Workspace, HOST_METADATA_RULE};
use support::stack::{self, Stack};

/// The SDK's retry budget in the tests that make it retry.
const SDK_RETRY_SECS: u64 = 3;

/// The per-identity serving limit of the deny-reason stack (IDGATE_SERVING_RATE_LIMIT).
const RATE_LIMIT: usize = 4;

struct World {
    ws: Workspace,
    /// Token endpoint that answers 503 (upstream `flaky-sp`).
    flaky: FakeDatabricks,
    /// Token endpoint that refuses the gateway's client (401 invalid_client, `refused-sp`).
    refused: FakeDatabricks,
    config: String,
}

impl std::ops::Deref for World {
    type Target = Workspace;

    fn deref(&self) -> &Workspace {
        &self.ws
    }
}

fn world() -> World {
    let ws = Workspace::start();
    let flaky = ws.rt.block_on(FakeDatabricks::start());
    flaky.fail_always(Some(Fail::Unavailable));
    let refused = ws.rt.block_on(FakeDatabricks::start());
    refused.fail_always(Some(Fail::Status(401, "invalid_client")));
    let sp = |name: &str, url: &str| {
        ws.upstream(name, url, "timeout = \"500ms\"\ntotal_budget = \"1s\"\n")
    };
    let config = format!(
        r#"
[log]
level = "info"
audit = "{audit}"

{issuer}
{serving}
{flaky}
{refused}

{host_metadata}
[[rule]]
name = "forbidden"
methods = ["POST"]
paths = ["/serving-endpoints/forbidden/invocations"]
effect = "deny"

[[rule]]
name = "flaky"
methods = ["POST"]
paths = ["/serving-endpoints/flaky/invocations"]
effect = "allow"
upstream = "flaky-sp"

[[rule]]
name = "refused"
methods = ["POST"]
paths = ["/serving-endpoints/refused/invocations"]
effect = "allow"
upstream = "refused-sp"

[[rule]]
name = "serving-invoke"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
effect = "allow"
upstream = "serving-sp"
"#,
        audit = stack::AUDIT_PLACEHOLDER,
        host_metadata = HOST_METADATA_RULE,
        issuer = ws.issuer("groups_claim = \"groups\"\nemail_claim = \"email\"\n"),
        serving = sp("serving-sp", &ws.fake.token_url),
        flaky = sp("flaky-sp", &flaky.token_url),
        refused = sp("refused-sp", &refused.token_url),
    );
    World {
        ws,
        flaky,
        refused,
        config,
    }
}

impl World {
    /// A caller token; `ml`: member of the group the serving rule wants.
    fn token(&self, sub: &str, ml: bool) -> String {
        let groups = if ml { "ml-engineers" } else { "sales" };
        self.ws.token(
            sub,
            json!({"email": format!("{sub}@example.com"), "groups": [groups]}),
        )
    }

    fn stack(&self, version: HaproxyVersion, extra_env: &[(&'static str, &str)]) -> Stack {
        Stack::start_with(version, &self.config, Some(self.fake.upstream()), extra_env)
            .expect("require() never returns None")
    }
}

fn spec(kind: &str, s: &Stack, token: &str, endpoint: &str) -> Value {
    json!({
        "client": kind,
        "host": format!("http://{}", s.hap.params.frontend),
        "token": token,
        "endpoint": endpoint,
        "inputs": [[1.5, 2.5]],
        "retry_timeout_seconds": SDK_RETRY_SECS,
    })
}

/// The client's answer was the fake endpoint's, for `endpoint` on `plane`, with our inputs.
fn assert_prediction(r: &Value, endpoint: &str, plane: &str, s: &Stack) {
    assert_eq!(r["ok"], true, "{r}\n{}", s.logs());
    let p = &r["response"]["predictions"][0];
    assert_eq!(p["endpoint"], endpoint, "{r}");
    assert_eq!(p["plane"], plane, "{r}");
    assert_eq!(p["input"]["inputs"], json!([[1.5, 2.5]]), "{r}");
    let warnings = r["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .all(|w| !w.as_str().unwrap().contains("databricks-config")
                && !w.as_str().unwrap().contains("host metadata")),
        "the client warned about the host metadata: {warnings:?}"
    );
}

/// The exception the client raised (for the SDK's retry timeout: the one that caused it).
fn assert_raised(r: &Value, class: &str, s: &Stack) {
    assert_eq!(r["ok"], false, "{r}\n{}", s.logs());
    let classes = r["classes"].as_array().unwrap();
    assert!(
        classes.iter().any(|c| c == class),
        "expected {class}, got {r}\n{}",
        s.logs()
    );
}

/// The SDK's request ID is HAProxy's unique ID for the request, which idgate logged.
fn assert_request_id(r: &Value, s: &Stack, rule_or_reason: &str) {
    let id = r["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request_id: {r}"));
    let audit = s.audit(1);
    let line = audit
        .iter()
        .rev()
        .find(|l| l["rule"] == rule_or_reason || l["reason"] == rule_or_reason)
        .unwrap_or_else(|| panic!("no audit line for {rule_or_reason}: {audit:?}"));
    assert_eq!(line["unique_id"], id, "{r}\n{line}");
}

fn classic_endpoint_through_sdk_and_mlflow(version: HaproxyVersion) {
    let w = world();
    w.fake.add_endpoint("churn");
    let s = w.stack(version, &[]);
    let alice = w.token("alice", true);

    let r = client(spec("sdk", &s, &alice, "churn"));
    assert_prediction(&r, "churn", "workspace", &s);
    let r = client(spec("mlflow", &s, &alice, "churn"));
    assert_prediction(&r, "churn", "workspace", &s);

    // The workspace saw the service principal's token, never the caller's, and the identity
    // headers from idgate; the SDK's host-metadata request went through the public rule.
    let ws = w.fake.requests_on(Plane::Workspace);
    let calls: Vec<_> = ws
        .iter()
        .filter(|r| r.path == "/serving-endpoints/churn/invocations")
        .collect();
    assert_eq!(calls.len(), 2, "{ws:#?}");
    for c in &calls {
        let bearer = c.bearer().expect("a bearer token");
        assert_eq!(w.fake.kind_of(bearer), Some(TokenKind::ClientCredentials));
        assert!(!c.headers.iter().any(|(_, v)| v.contains(&alice)));
        assert_eq!(c.header("x-forwarded-user"), Some("alice"));
        assert_eq!(c.header("x-forwarded-email"), Some("alice@example.com"));
        assert_eq!(c.status, 200);
    }
    assert!(
        ws.iter()
            .any(|r| r.path == "/.well-known/databricks-config" && r.status == 200),
        "{ws:#?}"
    );
}

fn deny_reasons_map_to_sdk_exceptions(version: HaproxyVersion) {
    let w = world();
    w.fake.add_endpoint("churn");
    w.fake.add_endpoint("forbidden");
    let limit = RATE_LIMIT.to_string();
    let s = w.stack(version, &[("IDGATE_SERVING_RATE_LIMIT", &limit)]);

    // No token / an invalid one: 401 -> Unauthenticated.
    let r = client(spec("sdk", &s, "not-a-jwt", "churn"));
    assert_raised(&r, "Unauthenticated", &s);
    assert_request_id(&r, &s, "malformed_token");
    // A deny rule: PermissionDenied, with HAProxy's unique ID as request ID.
    let r = client(spec("sdk", &s, &w.token("alice", true), "forbidden"));
    assert_raised(&r, "PermissionDenied", &s);
    assert_request_id(&r, &s, "forbidden");
    assert!(
        r["message"].as_str().unwrap().contains("denied_by_rule"),
        "{r}"
    );
    // No rule for this caller (not in the group): PermissionDenied.
    let r = client(spec("sdk", &s, &w.token("mallory", false), "churn"));
    assert_raised(&r, "PermissionDenied", &s);
    assert!(
        r["message"].as_str().unwrap().contains("no_matching_rule"),
        "{r}"
    );

    // Over the per-identity rate limit: 429 -> TooManyRequests (parsed by the SDK's own error
    // parser: the SDK itself would first sleep the 10 s Retry-After).
    let carol = w.token("carol", true);
    for i in 0..RATE_LIMIT + 1 {
        let resp = s.call_as("POST", "/serving-endpoints/churn/invocations", &carol);
        if i < RATE_LIMIT {
            s.expect(&resp, 200, &format!("carol's call {i}"));
        }
    }
    let r = client(spec("sdk_parse", &s, &carol, "churn"));
    assert_raised(&r, "TooManyRequests", &s);
    assert_eq!(r["error_code"], "REQUEST_LIMIT_EXCEEDED", "{r}");
    // Others are not limited.
    let r = client(spec("sdk", &s, &w.token("dave", true), "churn"));
    assert_prediction(&r, "churn", "workspace", &s);
}

fn token_endpoint_failures_map_to_sdk_exceptions(version: HaproxyVersion) {
    let w = world();
    let s = w.stack(version, &[]);
    let alice = w.token("alice", true);

    // The token endpoint is down (503): idgate says upstream_unavailable with Retry-After;
    // the SDK retries until its budget runs out, then raises TimeoutError from
    // TemporarilyUnavailable.
    let r = client(spec("sdk", &s, &alice, "flaky"));
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["exception"], "TimeoutError", "{r}");
    assert_eq!(r["cause"]["exception"], "TemporarilyUnavailable", "{r}");
    let tries = s
        .audit(1)
        .iter()
        .filter(|l| l["rule"] == "flaky" && l["reason"] == "upstream_unavailable")
        .count();
    assert!(
        tries >= 2,
        "the SDK did not retry a 503: {tries}\n{}",
        s.logs()
    );

    // The token endpoint refuses the gateway's own client (401 invalid_client): 502
    // upstream_refused, which the SDK does not retry; the call returns at once and the token
    // endpoint sees no retry storm.
    let started = Instant::now();
    let r = client(spec("sdk", &s, &alice, "refused"));
    let took = started.elapsed();
    assert_eq!(r["ok"], false, "{r}");
    // 502 has no class of its own in the SDK: the base DatabricksError with our error code.
    assert_eq!(r["exception"], "DatabricksError", "{r}\n{}", s.logs());
    assert_eq!(r["error_code"], "INTERNAL_ERROR", "{r}");
    assert!(
        r["message"].as_str().unwrap().contains("upstream_refused"),
        "{r}"
    );
    assert!(r["cause"].is_null(), "not a retry timeout: {r}");
    assert_request_id(&r, &s, "refused");
    // The call itself (not the interpreter's start, which a loaded CI machine stretches)
    // returned before the SDK's retry timeout: it did not wait to retry.
    let elapsed = r["elapsed"].as_f64().expect("elapsed seconds");
    assert!(
        elapsed < SDK_RETRY_SECS as f64,
        "{took:?} ({elapsed} s in the call): {r}"
    );
    let decisions = s.audit(1).iter().filter(|l| l["rule"] == "refused").count();
    assert_eq!(decisions, 1, "the SDK retried a 502\n{}", s.logs());
    assert!(
        w.refused.requests() <= 2,
        "{} token requests",
        w.refused.requests()
    );
    assert_eq!(
        w.flaky.requests_for_grant("client_credentials"),
        w.flaky.requests()
    );
}

/// HAProxy's own errors (here: no server reachable, 503) parse as Databricks errors.
fn haproxy_errors_parse_as_databricks_errors(version: HaproxyVersion) {
    let w = world();
    let dead = Upstream {
        addr: support::free_addr(),
        ..w.fake.upstream()
    };
    let s = Stack::start_with(version, &w.config, Some(dead), &[]).unwrap();
    let r = client(spec("sdk_parse", &s, &w.token("alice", true), "churn"));
    assert_raised(&r, "TemporarilyUnavailable", &s);
    assert_eq!(r["error_code"], "TEMPORARILY_UNAVAILABLE", "{r}");
    assert_request_id(&r, &s, "serving-invoke");
}

/// Route-optimized endpoints: the clients query the workspace URL as usual; the gateway sends
/// the request to the endpoint's data plane with a token scoped to it (needs the agent side of
/// issue #16).
fn route_optimized_endpoint_through_sdk_and_mlflow(version: HaproxyVersion) {
    let w = world();
    let fast = w.fake.add_route_optimized("fast");
    let fast2 = w.fake.add_route_optimized("fast2");
    // Resolves (DNS) to the workspace's TLS listener, whose certificate is for another name.
    let spoofed = w.fake.add_route_optimized_at(
        "spoofed",
        &format!(
            "spoofed.{}:{}",
            support::databricks::DATA_PLANE_DOMAIN,
            w.fake.upstream().addr.port()
        ),
    );
    // In the default data_plane_hosts, but the DNS does not know it.
    let lost = w.fake.add_route_optimized_at(
        "lost",
        &format!(
            "lost.serving.gcp.databricks.com:{}",
            w.fake.data_plane_addr().port()
        ),
    );
    let dns = FakeDns::start(&[&format!("*.{}", support::databricks::DATA_PLANE_DOMAIN)]);
    let ns = dns.addr.to_string();
    let s = w.stack(version, &[("IDGATE_DNS_NAMESERVER", &ns)]);
    let alice = w.token("alice", true);

    let r = client(spec("sdk", &s, &alice, "fast"));
    assert_prediction(&r, "fast", "data_plane", &s);
    let r = client(spec("mlflow", &s, &alice, "fast"));
    assert_prediction(&r, "fast", "data_plane", &s);
    let dp = w.fake.requests_on(Plane::DataPlane);
    assert_eq!(dp.len(), 2, "{dp:#?}");
    for req in &dp {
        assert_eq!(req.path, fast.data_plane_path());
        assert_eq!(req.sni, fast.data_plane_host(), "SNI");
        assert_eq!(req.header("host"), fast.data_plane.as_deref());
        let t = req.bearer().expect("bearer");
        assert_eq!(w.fake.endpoint_of(t).as_deref(), Some("fast"), "{t}");
        assert!(!req.headers.iter().any(|(_, v)| v.contains(&alice)));
    }
    assert!(w.fake.requests_for_grant(GRANT_JWT_BEARER) >= 1);
    let on_workspace = |name: &str| {
        w.fake
            .requests_on(Plane::Workspace)
            .iter()
            .filter(|r| r.path.contains(&format!("/serving-endpoints/{name}/")))
            .count()
    };
    assert_eq!(
        on_workspace("fast"),
        0,
        "a data-plane request reached the workspace"
    );

    // One client connection, two endpoints on two data-plane names: each request arrives with
    // its own SNI (server connections are not reused across names).
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    for ep in [&fast2, &fast, &fast2] {
        let resp = http
            .post(
                s.hap
                    .url(&format!("/serving-endpoints/{}/invocations", ep.name)),
            )
            .bearer_auth(&alice)
            .json(&json!({"inputs": [[1.5, 2.5]]}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200, "{}", s.logs());
    }
    for req in w.fake.requests_on(Plane::DataPlane) {
        let ep = w
            .fake
            .endpoint(req.path.split('/').nth(3).unwrap())
            .unwrap();
        assert_eq!(req.sni, ep.data_plane_host(), "{req:?}");
    }

    // A DNS answer that leads to a server with another name's certificate: refused by TLS
    // verification, HAProxy answers 503, nothing is sent there.
    let before = w.fake.failed_handshakes();
    let r = client(spec("sdk_parse", &s, &alice, "spoofed"));
    assert_raised(&r, "TemporarilyUnavailable", &s);
    assert!(
        w.fake.failed_handshakes() > before,
        "no TLS handshake was refused"
    );
    assert_eq!(on_workspace("spoofed"), 0);
    let _ = spoofed;

    // A data-plane host that does not resolve: 503 TEMPORARILY_UNAVAILABLE with Retry-After,
    // and the data-plane token goes nowhere.
    let resp = s.call_as("POST", "/serving-endpoints/lost/invocations", &alice);
    s.expect(&resp, 503, "unresolvable data plane");
    assert_eq!(resp.header("retry-after"), Some("1"), "{resp:?}");
    assert!(resp.body.contains("TEMPORARILY_UNAVAILABLE"), "{resp:?}");
    assert_eq!(on_workspace("lost"), 0);
    assert!(dns.queries(&lost.data_plane_host().unwrap(), support::dns::TYPE_A) > 0);
    assert!(!w
        .fake
        .requests_on(Plane::DataPlane)
        .iter()
        .any(|r| r.path.contains("/lost/")),);
}

haproxy_tests!(full: [
    classic_endpoint_through_sdk_and_mlflow,
    deny_reasons_map_to_sdk_exceptions,
    token_endpoint_failures_map_to_sdk_exceptions,
    haproxy_errors_parse_as_databricks_errors,
    route_optimized_endpoint_through_sdk_and_mlflow,
]);
