//! The payload checks at the agent's SPOP interface (contract §2 `authorize-serving`, §3, §8):
//! the real `idgate` binary with public serving rules (no token needed, so only the body is
//! judged), a JSON Schema file, and the tests' SPOP client sending what the shipped HAProxy
//! configuration sends (`body` as BINARY, `body_size`, `content_type`). The endpoint's own
//! schema (`payload_schema = "endpoint"`) against the fake Databricks workspace: refetched
//! after `schema_refresh`, the last good one standing in while fetches fail (up to
//! `schema_max_stale`), and a caller the workspace refuses not leaving others without it.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::agent::Agent;
use support::databricks::FakeDatabricks;
use support::sdk::Workspace;
use support::spop_client::{Request, SpopClient, Vars};

const INVOKE: &str = "/serving-endpoints/churn/invocations";
const TYPED: &str = "/serving-endpoints/typed/invocations";

fn agent(dir: &std::path::Path) -> Agent {
    let schema = dir.join("typed.schema.json");
    std::fs::write(
        &schema,
        r#"{"type": "object", "properties": {"dataframe_split": {"properties": {"data": {
            "items": {"prefixItems": [{"type": "string"}, {"type": "number"}]}}}}}}"#,
    )
    .unwrap();
    Agent::start(&format!(
        r#"
[[rule]]
name = "typed"
methods = ["POST"]
paths = ["{TYPED}"]
public = true
payload = "serving"
payload_schema = "{schema}"
payload_max_bytes = 4096

[[rule]]
name = "forward-large"
methods = ["POST"]
paths = ["/serving-endpoints/large/invocations"]
public = true
payload = "serving"
payload_oversize = "forward"

[[rule]]
name = "serving"
methods = ["POST", "GET"]
paths = ["/serving-endpoints/*/invocations"]
public = true
payload = "serving"
"#,
        schema = schema.display()
    ))
}

fn refused(v: &Vars, status: i64, reason: &str) -> String {
    assert!(!v.allow(), "{v:?}");
    assert_eq!((v.status(), v.reason().as_str()), (status, reason), "{v:?}");
    v.str("description").expect("a description")
}

#[test]
fn bodies_are_judged_by_the_matched_rule() {
    let dir = tempfile::tempdir().unwrap();
    let a = agent(dir.path());
    let mut c = SpopClient::open(a.spop);
    let post = |path: &str, body: &str| Request::new("POST", path).serving_body(body.as_bytes());

    let v = c.decide(&post(INVOKE, r#"{"inputs": [[1, NaN, -Infinity]]}"#));
    assert!(v.allow(), "{v:?}");
    assert_eq!(v.str("rule").as_deref(), Some("serving"));

    let d = refused(
        &c.decide(&post(INVOKE, r#"{"inputs": [1], "inputs": [2]}"#)),
        400,
        "invalid_payload",
    );
    assert_eq!(d, "inputs: duplicate key");
    let d = refused(&c.decide(&post(INVOKE, "{}")), 400, "invalid_payload");
    assert!(
        d.starts_with("the body must have one of the input fields"),
        "{d}"
    );

    // The schema file: the second column must be a number.
    let ok = r#"{"dataframe_split": {"columns": ["a", "b"], "data": [["x", 1], ["y", 2]]}}"#;
    assert!(c.decide(&post(TYPED, ok)).allow());
    let bad = r#"{"dataframe_split": {"columns": ["a", "b"], "data": [["x", 1], ["y", "2"]]}}"#;
    let d = refused(&c.decide(&post(TYPED, bad)), 400, "invalid_payload");
    assert_eq!(
        d,
        r#"dataframe_split.data[1][1]: "2" is not of type "number""#
    );
    // payload_max_bytes = 4096.
    let big = format!(r#"{{"inputs": [{}0]}}"#, "0,".repeat(3000));
    let d = refused(&c.decide(&post(TYPED, &big)), 413, "payload_too_large");
    let want = format!(
        "the body has {} bytes; this endpoint accepts at most 4096",
        big.len()
    );
    assert_eq!(d, want);

    // A body that arrived cut (body_size says more): refused by default, forwarded unchecked
    // where the rule says so.
    let mut cut = post(INVOKE, r#"{"inputs": [1,"#);
    cut.body_size = Some(50_000);
    let d = refused(&c.decide(&cut), 413, "payload_too_large");
    assert!(d.contains("more than the gateway can check"), "{d}");
    cut.path = Some("/serving-endpoints/large/invocations".into());
    assert!(c.decide(&cut).allow());

    // A POST the rule allows whose body HAProxy did not send is refused; a GET is not checked.
    let d = refused(
        &c.decide(&Request::new("POST", INVOKE)),
        400,
        "invalid_payload",
    );
    assert!(d.contains("did not receive this request's body"), "{d}");
    assert!(c.decide(&Request::new("GET", INVOKE)).allow());

    // Another content type.
    let mut csv = post(INVOKE, "a,b\n1,2\n");
    csv.content_type = Some("text/csv".into());
    let d = refused(&c.decide(&csv), 400, "invalid_payload");
    assert_eq!(
        d,
        r#"Content-Type must be application/json; got "text/csv""#
    );

    let m = a.metrics();
    for (result, n) in [
        ("valid", 2),
        ("invalid", 5),
        ("too_large", 2),
        ("unchecked", 1),
    ] {
        let line = format!("idgate_payload_checks_total{{result=\"{result}\"}} {n}");
        assert!(m.contains(&line), "{line} not in\n{m}");
    }
    for reason in ["invalid_payload", "payload_too_large"] {
        assert!(
            m.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted in\n{m}"
        );
    }
}

/// A missing or invalid schema file, unknown values and keys without `payload` are
/// configuration problems, each at its key.
#[test]
fn payload_keys_are_checked_at_load() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.json"), r#"{"type": 5}"#).unwrap();
    let cfg = dir.path().join("idgate.toml");
    std::fs::write(
        &cfg,
        r#"
[[rule]]
name = "a"
paths = ["/a"]
public = true
payload = "serving"
payload_schema = "missing.json"

[[rule]]
name = "b"
paths = ["/b"]
public = true
payload = "serving"
payload_schema = "bad.json"
payload_oversize = "maybe"

[[rule]]
name = "c"
paths = ["/c"]
public = true
payload_max_bytes = 10

[[rule]]
name = "d"
paths = ["/d"]
public = true
payload = "xml"

[[rule]]
name = "e"
paths = ["/e"]
public = true
payload = "serving"
payload_schema = "endpoint"
"#,
    )
    .unwrap();
    let out = std::process::Command::new(Agent::binary())
        .args(["check-config", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for (key, why) in [
        ("rule[0].payload_schema", "missing.json"),
        ("rule[1].payload_schema", "not a valid JSON Schema"),
        (
            "rule[1].payload_oversize",
            "expected \"refuse\" or \"forward\"",
        ),
        ("rule[2].payload_max_bytes", "needs `payload = \"serving\"`"),
        ("rule[3].payload", "the only payload check is \"serving\""),
        ("rule[4].payload_schema", "the rule needs an `upstream`"),
    ] {
        assert!(
            text.lines().any(|l| l.contains(key) && l.contains(why)),
            "no line with {key} and {why:?} in:\n{text}"
        );
    }
}

/// `idgate explain --body-file` judges a body as the agent does.
#[test]
fn explain_judges_a_body_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("idgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[rule]]\nname = \"serving\"\nmethods = [\"POST\"]\npaths = [\"{INVOKE}\"]\n\
             public = true\npayload = \"serving\"\n"
        ),
    )
    .unwrap();
    let explain = |body: Option<&str>| {
        let mut cmd = std::process::Command::new(Agent::binary());
        cmd.args(["explain", "--method", "POST", "--path", INVOKE, "-c"])
            .arg(&cfg);
        if let Some(b) = body {
            let f = dir.path().join("body.json");
            std::fs::write(&f, b).unwrap();
            cmd.arg("--body-file").arg(f);
        }
        let out = cmd.output().unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        (out.status.code(), report)
    };
    let (code, r) = explain(Some(r#"{"prompt": "hi"}"#));
    assert_eq!(code, Some(0), "{r}");
    let (code, r) = explain(Some(r#"{"prompt": 1}"#));
    assert_eq!(code, Some(1), "{r}");
    let text = r.to_string();
    assert!(text.contains("invalid_payload"), "{r}");
    assert!(
        text.contains("prompt: must be a string or an array of strings"),
        "{r}"
    );
    let (code, r) = explain(None);
    assert_eq!(code, Some(1), "{r}");
    assert!(
        r.to_string()
            .contains("did not receive this request's body"),
        "{r}"
    );
}

/// A workspace whose endpoint `typed` has schema A (numbers), and an agent whose
/// `token_exchange` upstream caches endpoint schemas with `times` (TOML keys).
fn endpoint_schema_agent(times: &str) -> (Workspace, Agent) {
    let ws = Workspace::start();
    ws.fake.add_endpoint("typed");
    ws.fake.set_request_schema("typed", SCHEMA_A.clone());
    let agent = Agent::start(&format!(
        r#"
{issuer}
[upstream.tx]
kind = "token_exchange"
token_url = "{token_url}"
{times}

[[rule]]
name = "typed"
methods = ["POST"]
paths = ["{TYPED}"]
upstream = "tx"
payload = "serving"
payload_schema = "endpoint"
"#,
        issuer = ws.issuer(""),
        token_url = ws.fake.token_url,
    ));
    (ws, agent)
}

static SCHEMA_A: std::sync::LazyLock<serde_json::Value> = std::sync::LazyLock::new(
    || json!({"type": "object", "properties": {"inputs": {"type": "array", "items": {"type": "number"}}}}),
);
/// Refused by schema A only, and by schema B only.
const A_REFUSES: &str = r#"{"inputs": ["x"]}"#;
const B_REFUSES: &str = r#"{"inputs": [1.5]}"#;

/// The statuses of the OpenAPI document requests the workspace received, in order.
fn openapi_fetches(fake: &FakeDatabricks) -> Vec<u16> {
    fake.rest_requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/typed/openapi"))
        .map(|r| r.status)
        .collect()
}

fn payload_checks(a: &Agent, result: &str) -> f64 {
    a.metric("idgate_payload_checks_total", &[("result", result)])
        .unwrap_or_else(|| panic!("no {result} count in\n{}", a.metrics()))
}

/// Sends `body` until the workspace has received one more OpenAPI request answering
/// `status` than `seen` (idgate fetches when a body needs the schema and the cached one is
/// due), asserting `each` of the decisions on the way. Returns when the request that made it
/// was sent.
fn until_fetched(
    c: &mut SpopClient,
    fake: &FakeDatabricks,
    req: &Request,
    status: u16,
    each: impl Fn(&Vars),
) -> Instant {
    let count = || {
        openapi_fetches(fake)
            .iter()
            .filter(|&&s| s == status)
            .count()
    };
    let seen = count();
    support::poll_until(Duration::from_secs(15), || {
        let sent = Instant::now();
        each(&c.decide(req));
        (count() > seen).then_some(sent)
    })
    .unwrap_or_else(|| {
        panic!(
            "no OpenAPI request answered {status}: {:?}",
            openapi_fetches(fake)
        )
    })
}

/// Schema A applies; while the workspace fails (503, then 500) A stands in, counted as
/// `schema_stale`; schema B applies once fetched; when B is older than `schema_max_stale` and
/// fetches still fail, bodies are checked without a schema (`schema_unavailable`).
#[test]
fn the_last_good_endpoint_schema_stands_in_until_max_stale() {
    const MAX_STALE: Duration = Duration::from_secs(5);
    let (ws, a) = endpoint_schema_agent(
        "schema_refresh = \"1s\"\nschema_retry = \"1s\"\nschema_max_stale = \"5s\"",
    );
    let token = ws.token("alice", json!({}));
    let mut c = SpopClient::open(a.spop);
    let post = |body: &str| {
        Request::new("POST", TYPED)
            .bearer(&token)
            .serving_body(body.as_bytes())
    };
    let not_a_number = |v: &Vars| {
        let d = refused(v, 400, "invalid_payload");
        assert_eq!(d, r#"inputs[0]: "x" is not of type "number""#);
    };

    // (1) Schema A.
    not_a_number(&c.decide(&post(A_REFUSES)));
    assert!(c.decide(&post(B_REFUSES)).allow());
    assert_eq!(openapi_fetches(&ws.fake), [200]);
    assert_eq!(payload_checks(&a, "schema_stale"), 0.0);

    // (2) The workspace fails: once the refetch failed, A still stands in.
    ws.fake.fail_openapi(Some(503));
    until_fetched(&mut c, &ws.fake, &post(A_REFUSES), 503, not_a_number);
    not_a_number(&c.decide(&post(A_REFUSES)));
    assert!(c.decide(&post(B_REFUSES)).allow());
    assert_eq!(payload_checks(&a, "schema_stale"), 1.0, "{}", a.log());
    assert!(
        a.log().contains("the last schema fetched stands in"),
        "{}",
        a.log()
    );
    assert_eq!(payload_checks(&a, "schema_unavailable"), 0.0);

    // (3) The workspace serves schema B (strings): it applies once fetched.
    ws.fake.set_request_schema(
        "typed",
        json!({"type": "object", "properties": {"inputs": {"type": "array", "items": {"type": "string"}}}}),
    );
    ws.fake.fail_openapi(None);
    let b_fetched = until_fetched(&mut c, &ws.fake, &post(A_REFUSES), 200, |_| {});
    let d = refused(&c.decide(&post(B_REFUSES)), 400, "invalid_payload");
    assert_eq!(d, r#"inputs[0]: 1.5 is not of type "string""#);
    assert!(c.decide(&post(A_REFUSES)).allow());

    // (4) Failing again: B stands in until it is max_stale old, then no schema applies (the
    // strict JSON and format checks still do).
    ws.fake.fail_openapi(Some(500));
    let before = payload_checks(&a, "schema_unavailable");
    let accepted = support::poll_until(Duration::from_secs(15), || {
        let v = c.decide(&post(B_REFUSES));
        v.allow().then(Instant::now)
    })
    .expect("schema B still applied long after schema_max_stale");
    assert!(
        accepted.duration_since(b_fetched) >= MAX_STALE,
        "B dropped {:?} after its fetch",
        accepted.duration_since(b_fetched)
    );
    assert!(
        openapi_fetches(&ws.fake).ends_with(&[500]),
        "{:?}",
        openapi_fetches(&ws.fake)
    );
    assert_eq!(payload_checks(&a, "schema_unavailable"), before + 1.0);
    let d = refused(
        &c.decide(&post(r#"{"inputs": 1, "inputs": 2}"#)),
        400,
        "invalid_payload",
    );
    assert_eq!(d, "inputs: duplicate key");
    let d = refused(
        &c.decide(&post(r#"{"inputs": null}"#)),
        400,
        "invalid_payload",
    );
    assert_eq!(d, "inputs: must not be null");
}

/// The workspace refusing one caller's credential for the document (403) is that caller's
/// failure: the next caller fetches the schema at once, and the refused caller does not
/// make idgate ask again on each request.
#[test]
fn a_refused_caller_does_not_leave_others_without_the_schema() {
    let (ws, a) = endpoint_schema_agent("");
    let mallory = ws.token("mallory", json!({}));
    let alice = ws.token("alice", json!({}));
    ws.fake.deny_openapi(&mallory);
    let mut c = SpopClient::open(a.spop);
    let post = |token: &str| {
        Request::new("POST", TYPED)
            .bearer(token)
            .serving_body(A_REFUSES.as_bytes())
    };

    for _ in 0..2 {
        let v = c.decide(&post(&mallory));
        assert!(v.allow(), "{v:?}\n{}", a.log());
    }
    assert_eq!(openapi_fetches(&ws.fake), [403], "asked once for mallory");
    assert_eq!(payload_checks(&a, "schema_unavailable"), 2.0);

    let d = refused(&c.decide(&post(&alice)), 400, "invalid_payload");
    assert_eq!(d, r#"inputs[0]: "x" is not of type "number""#);
    assert_eq!(openapi_fetches(&ws.fake), [403, 200]);
}
