//! The payload checks at the agent's SPOP interface (contract §2 `authorize-serving`, §3, §8):
//! the real `idgate` binary with public serving rules (no token needed, so only the body is
//! judged), a JSON Schema file, and the tests' SPOP client sending what the shipped HAProxy
//! configuration sends (`body` as BINARY, `body_size`, `content_type`).

mod support;

use support::agent::Agent;
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
