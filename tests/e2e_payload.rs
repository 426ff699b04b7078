//! Payload checks of model-serving invocations (contract §2 `authorize-serving`, §3
//! `invalid_payload`/`payload_too_large`, §8; docs/payload.md) end to end, for HAProxy 2.6 and
//! 3.4 (the oversize scenario also on 3.0 and 3.2): the Databricks SDK for Python's
//! `serving_endpoints.query` (and its API client for bodies
//! the typed call cannot produce) through HAProxy running the shipped configuration, idgate,
//! and the fake Databricks workspace (which also serves an endpoint's OpenAPI document).
//!
//! Asserted on the client's side: every input format passes and reaches the endpoint
//! unchanged; invalid bodies raise `InvalidParameterValue` whose message names the field; a
//! body larger than HAProxy can send whole is refused (413) or forwarded whole, per rule; a
//! `payload_max_bytes` limit; the endpoint's own schema (fetched once, cached); and requests
//! that are no serving invocation reach the workspace with their body untouched.

mod support;

use serde_json::{json, Value};
use support::databricks::Plane;
use support::haproxy::HaproxyVersion;
use support::sdk::{client, Workspace, HOST_METADATA_RULE};
use support::stack::{self, Stack};

/// A body larger than HAProxy buffers (about 14 KB by default, docs/payload.md).
const LARGE: usize = 20_000;

struct World {
    ws: Workspace,
    config: String,
}

fn world() -> World {
    let ws = Workspace::start();
    for name in ["churn", "typed", "big", "small", "unschemed"] {
        ws.fake.add_endpoint(name);
    }
    ws.fake.set_request_schema(
        "typed",
        json!({
            "type": "object",
            "required": ["inputs"],
            "properties": {"inputs": {"type": "array", "items": {
                "type": "array", "items": {"type": "number"}
            }}}
        }),
    );
    let config = format!(
        r#"
[log]
level = "info"
audit = "{audit}"

{issuer}
{upstream}
{host_metadata}
[[rule]]
name = "typed"
methods = ["POST"]
paths = ["/serving-endpoints/typed/invocations", "/serving-endpoints/unschemed/invocations"]
upstream = "serving-sp"
payload = "serving"
payload_schema = "endpoint"

[[rule]]
name = "big"
methods = ["POST"]
paths = ["/serving-endpoints/big/invocations"]
upstream = "serving-sp"
payload = "serving"
payload_oversize = "forward"

[[rule]]
name = "small"
methods = ["POST"]
paths = ["/serving-endpoints/small/invocations"]
upstream = "serving-sp"
payload = "serving"
payload_max_bytes = 200

[[rule]]
name = "serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
upstream = "serving-sp"
payload = "serving"

[[rule]]
name = "workspace"
paths = ["/api/2.0/**"]
upstream = "serving-sp"
"#,
        audit = stack::AUDIT_PLACEHOLDER,
        host_metadata = HOST_METADATA_RULE,
        issuer = ws.issuer(""),
        upstream = ws.upstream("serving-sp", &ws.fake.token_url, ""),
    );
    World { ws, config }
}

impl World {
    fn token(&self) -> String {
        self.ws.token("alice", json!({}))
    }

    fn stack(&self, version: HaproxyVersion) -> Stack {
        Stack::start_with(version, &self.config, Some(self.ws.fake.upstream()), &[])
            .expect("require() never returns None")
    }

    /// Runs every call in one interpreter; `calls`: (endpoint, "query" arguments or "body" text).
    fn run(&self, s: &Stack, calls: &[(&str, Value)]) -> Vec<Value> {
        let token = self.token();
        let batch: Vec<Value> = calls
            .iter()
            .map(|(endpoint, call)| {
                let mut spec = json!({
                    "host": format!("http://{}", s.hap.params.frontend),
                    "token": token,
                    "endpoint": endpoint,
                    "retry_timeout_seconds": 3,
                });
                match call {
                    Value::String(body) => {
                        spec["client"] = "sdk_raw".into();
                        spec["body"] = body.clone().into();
                    }
                    query => {
                        spec["client"] = "sdk".into();
                        spec["query"] = query.clone();
                    }
                }
                spec
            })
            .collect();
        let out = client(json!({ "batch": batch }));
        out.as_array().expect("a list of results").clone()
    }

    /// The bodies the workspace received for `endpoint`'s invocations, in order.
    fn received(&self, endpoint: &str) -> Vec<String> {
        let path = format!("/serving-endpoints/{endpoint}/invocations");
        self.ws
            .fake
            .requests_on(Plane::Workspace)
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.body)
            .collect()
    }
}

fn assert_ok(r: &Value, s: &Stack) {
    assert_eq!(r["ok"], true, "{r}\n{}", s.logs());
}

/// Refused as `InvalidParameterValue` with a message containing `needle`.
fn assert_refused(r: &Value, status: u16, needle: &str, s: &Stack) {
    assert_eq!(r["ok"], false, "{r}\n{}", s.logs());
    assert!(
        r["classes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "InvalidParameterValue"),
        "{r}"
    );
    assert_eq!(r["error_code"], "INVALID_PARAMETER_VALUE", "{r}");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.starts_with("idgate: ") && message.contains(needle),
        "{needle:?} not in {message:?}\n{r}"
    );
    let audit = s.audit(1);
    let reason = if status == 413 {
        "payload_too_large"
    } else {
        "invalid_payload"
    };
    assert!(
        audit
            .iter()
            .any(|l| l["reason"] == reason && l["status"] == status),
        "no audit line with {reason} {status}: {audit:?}"
    );
}

fn every_input_format_passes_and_invalid_ones_name_the_field(version: HaproxyVersion) {
    let w = world();
    let s = w.stack(version);
    let valid = [
        json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2.5], [3, 4]]}}),
        json!({"dataframe_records": [{"a": 1, "b": 2}]}),
        json!({"instances": [[1, 2], [3, 4]]}),
        json!({"inputs": {"a": [1, 2]}}),
        json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}),
        json!({"prompt": "Once upon", "temperature": 0.5}),
        json!({"input": ["embed", "me"]}),
    ];
    let mut calls: Vec<(&str, Value)> = valid.iter().map(|q| ("churn", q.clone())).collect();
    // NaN and Infinity, as MLflow's scoring server parses them (the SDK's typed call cannot
    // send them: raw body through its API client).
    calls.push((
        "churn",
        json!(r#"{"inputs": [[NaN, Infinity, -Infinity]]}"#),
    ));
    // A body near the frame's capacity (10 KB) is checked whole.
    let near = format!(r#"{{"inputs": [{}1]}}"#, "1,".repeat(5000));
    calls.push(("churn", Value::String(near.clone())));
    let invalid: [(Value, &str); 8] = [
        (
            json!({"dataframe_split": {"columns": ["a", "b"], "data": [[1, 2], [3]]}}),
            "dataframe_split.data[1]: has 1 values for 2 columns",
        ),
        (
            json!({"prompt": 42}),
            "prompt: must be a string or an array of strings",
        ),
        (
            json!(r#"{"instances": {"a": 1}}"#),
            "instances: must be an array",
        ),
        (
            json!(r#"{"params": {"k": 1}}"#),
            "the body must have one of the input fields",
        ),
        (
            json!(r#"{"inputs": [1], "inputs": [2]}"#),
            "inputs: duplicate key",
        ),
        (json!(r#"{"inputs": [1, 2,]}"#), "not valid JSON"),
        (
            json!(r#"{"messages": [{"content": "hi"}]}"#),
            "messages[0].role: missing",
        ),
        (
            json!(format!("{}1{}", "[".repeat(100), "]".repeat(100))),
            "nested deeper than 64 levels",
        ),
    ];
    calls.extend(invalid.iter().map(|(q, _)| ("churn", q.clone())));
    let results = w.run(&s, &calls);

    for r in &results[..valid.len() + 2] {
        assert_ok(r, &s);
    }
    for (r, (_, needle)) in results[valid.len() + 2..].iter().zip(&invalid) {
        assert_refused(r, 400, needle, &s);
    }
    // Exactly the valid bodies reached the endpoint, byte for byte as sent for the raw ones.
    let got = w.received("churn");
    assert_eq!(got.len(), valid.len() + 2, "{}", s.logs());
    for (body, q) in got.iter().zip(&valid) {
        let sent: Value = serde_json::from_str(body).unwrap();
        for (k, v) in q.as_object().unwrap() {
            assert_eq!(&sent[k], v, "{sent}");
        }
    }
    assert_eq!(
        got[valid.len()],
        r#"{"inputs": [[NaN, Infinity, -Infinity]]}"#
    );
    assert_eq!(got[valid.len() + 1], near);
    let m = s.agent.metrics();
    assert!(
        m.contains("idgate_payload_checks_total{result=\"valid\"} 9"),
        "{m}"
    );
    assert!(
        m.contains("idgate_payload_checks_total{result=\"invalid\"} 8"),
        "{m}"
    );
}

fn large_bodies_per_rule_and_the_endpoint_schema(version: HaproxyVersion) {
    let w = world();
    let s = w.stack(version);
    let large = format!(r#"{{"inputs": [{}1]}}"#, "1,".repeat(LARGE / 2));
    let calls = [
        // Larger than HAProxy sends: refused by default, forwarded whole where the rule says.
        ("churn", Value::String(large.clone())),
        ("big", Value::String(large.clone())),
        // payload_max_bytes = 200.
        ("small", json!({"inputs": [[1, 2, 3]]})),
        ("small", json!({"inputs": [(0..100).collect::<Vec<_>>()]})),
        // The endpoint's own schema (OpenAPI): numbers only.
        ("typed", json!({"inputs": [[1.5, 2]]})),
        ("typed", json!({"inputs": [[1.5, "two"]]})),
        ("typed", json!({"inputs": [[3]]})),
        // No schema published: the format check alone.
        ("unschemed", json!({"inputs": [["any"]]})),
        ("unschemed", json!(r#"{"inputs": null}"#)),
    ];
    let r = w.run(&s, &calls);
    assert_refused(&r[0], 413, "more than the gateway can check", &s);
    assert_ok(&r[1], &s);
    assert_eq!(w.received("big"), std::slice::from_ref(&large));
    assert!(w.received("churn").is_empty());
    assert_ok(&r[2], &s);
    assert_refused(&r[3], 413, "this endpoint accepts at most 200", &s);
    assert_ok(&r[4], &s);
    assert_refused(
        &r[5],
        400,
        "inputs[0][1]: \"two\" is not of type \"number\"",
        &s,
    );
    assert_ok(&r[6], &s);
    assert_ok(&r[7], &s);
    assert_refused(&r[8], 400, "inputs: must not be null", &s);
    // The document was fetched once for "typed" (then cached), with the upstream's token.
    let fetches: Vec<_> =
        w.ws.fake
            .rest_requests()
            .into_iter()
            .filter(|q| q.path.ends_with("/openapi"))
            .collect();
    let typed: Vec<_> = fetches
        .iter()
        .filter(|q| q.path.contains("/typed/"))
        .collect();
    assert_eq!(typed.len(), 1, "{fetches:#?}");
    assert_eq!(typed[0].status, 200);
    assert!(typed[0].bearer().is_some_and(|b| b != w.token()));
    let m = s.agent.metrics();
    assert!(
        m.contains("idgate_payload_checks_total{result=\"unchecked\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("idgate_payload_checks_total{result=\"schema_unavailable\"} 1"),
        "{m}"
    );
}

/// Requests that are no serving invocation keep their body and are not checked: a POST to the
/// workspace API with a body that is no serving input reaches the workspace as sent.
fn other_requests_are_unchanged(version: HaproxyVersion) {
    let w = world();
    let s = w.stack(version);
    let token = w.token();
    let body = "not JSON, {\"inputs\": [1], \"inputs\": [2]}";
    let resp = reqwest::blocking::Client::new()
        .post(s.hap.url("/api/2.0/jobs/create"))
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body(body)
        .timeout(std::time::Duration::from_secs(20))
        .send()
        .unwrap_or_else(|e| panic!("{e}\n{}", s.logs()));
    let status = resp.status().as_u16();
    assert_eq!(
        status,
        404,
        "the fake answers unknown APIs 404\n{}",
        s.logs()
    );
    let got: Vec<_> =
        w.ws.fake
            .requests_on(Plane::Workspace)
            .into_iter()
            .filter(|r| r.path == "/api/2.0/jobs/create")
            .collect();
    assert_eq!(got.len(), 1, "{}", s.logs());
    assert_eq!(got[0].body, body);
    let m = s.agent.metrics();
    for result in ["valid", "invalid", "too_large", "unchecked"] {
        let line = format!("idgate_payload_checks_total{{result=\"{result}\"}} 0");
        assert!(m.contains(&line), "{line} not in {m}");
    }
}

// How much of a body HAProxy buffers and hands over differs between versions: that scenario runs
// on all four; the rest on 2.6 and 3.4.
haproxy_tests!(
    full: [every_input_format_passes_and_invalid_ones_name_the_field, other_requests_are_unchanged],
    compat: [large_bodies_per_rule_and_the_endpoint_schema],
);
