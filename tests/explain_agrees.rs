//! `idgate explain` says what the agent answers: for the same configuration and request, the
//! variables explain prints are the variables of the agent's real ACK, value for value
//! (explain redacts `upstream_authorization` to `<scheme> <redacted: N bytes>`: its scheme and
//! length are compared), and its decision, status, reason and exit code match `allow`,
//! `status` and `reason`.
//!
//! Both binaries run with the same file: `idgate run` (driven over raw SPOP by
//! support/spop_client.rs) and `idgate explain`, for a table of awkward requests: an allow with
//! an upstream credential, a `claim:` principal (and one that cannot be passed on), many groups,
//! identities the authenticator refuses (control characters), a deny rule, an unknown path, a
//! public rule, no token, an expired token; then, under a small `[spop] max_frame_size`, an
//! upstream credential that does not fit the frame even alone (503 `upstream_unavailable`)
//! and an identity that does not fit next to its credential (500 `internal_error`).
//!
//! A credential that is not header-safe cannot be produced through the binary: the static
//! upstream refuses a token file with a control character at load (checked here with
//! `check-config`), and token endpoints' answers are checked the same way. The renderer's
//! refusal of such a credential is compared with explain's report in src/explain.rs's tests.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::agent::Agent;
use support::auth_kit::{claims, MockIdp, Signer};
use support::background_runtime;
use support::spop_client::{Request, SpopClient, Vars};

use idgate::spop::TypedData;

/// The small frame size of the second agent: a NOTIFY with a token fits, an ACK with a
/// ~1.8 KB credential and a few hundred bytes of identity does not.
const SMALL_FRAME: u32 = 2048;

fn config(idp: &MockIdp, dir: &Path, max_frame_size: u32) -> String {
    format!(
        r#"
[log]
level = "warn"
audit = "off"

[spop]
max_frame_size = {max_frame_size}

[[issuer]]
name = "corp"
issuer = "{iss}"
jwks_uri = "{jwks}"
audiences = ["api"]

[[rule]]
name = "no-secrets"
paths = ["/api/*/secrets/**"]
effect = "deny"

[[rule]]
name = "public-docs"
paths = ["/public/**"]
public = true

[[rule]]
name = "by-username"
paths = ["/by-username/**"]
principal = "claim:preferred_username"
upstream = "pat"

[[rule]]
name = "with-credential"
paths = ["/with-credential/**"]
upstream = "pat"

[[rule]]
name = "huge-credential"
paths = ["/huge/**"]
upstream = "huge"

[[rule]]
name = "big-credential"
paths = ["/big/**"]
upstream = "big"

[[rule]]
name = "api"
paths = ["/api/**"]

[upstream.pat]
kind = "static"
token_file = "{dir}/pat.token"

[upstream.huge]
kind = "static"
token_file = "{dir}/huge.token"

[upstream.big]
kind = "static"
token_file = "{dir}/big.token"
"#,
        iss = idp.base,
        jwks = idp.jwks_uri(),
        dir = dir.display(),
    )
}

/// One request: what HAProxy would send, and what explain is given.
struct Case {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    token: Option<String>,
    /// Expected `status` and `reason` (both binaries).
    status: i64,
    reason: &'static str,
}

fn case(
    name: &'static str,
    path: &'static str,
    token: Option<String>,
    status: i64,
    reason: &'static str,
) -> Case {
    Case {
        name,
        method: "GET",
        path,
        token,
        status,
        reason,
    }
}

const HOST: &str = "dbc.example.com";

/// `idgate explain` for `c` with `config`: exit code and report.
fn explain(config: &Path, c: &Case) -> (Option<i32>, Value) {
    let mut cmd = Command::new(Agent::binary());
    cmd.args(["explain", "-c"])
        .arg(config)
        .args(["--method", c.method, "--path", c.path, "--host", HOST])
        .args(["--src", "127.0.0.1"])
        .env_remove("CREDENTIALS_DIRECTORY");
    if let Some(t) = &c.token {
        cmd.args(["--token", t]);
    }
    let out = cmd.output().expect("running idgate explain");
    let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: explain printed no JSON ({e})\nstdout: {}\nstderr: {}",
            c.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), report)
}

/// The ACK's variables as explain would print them.
fn as_json(name: &str, v: &TypedData) -> Value {
    match v {
        TypedData::Bool(b) => json!(b),
        TypedData::Int64(i) => json!(i),
        TypedData::String(s) => {
            let s = std::str::from_utf8(s).expect("UTF-8 variable");
            if name == "upstream_authorization" {
                let scheme = s.split_once(' ').map_or("", |(s, _)| s);
                json!(format!("{scheme} <redacted: {} bytes>", s.len()))
            } else {
                json!(s)
            }
        }
        other => panic!("variable {name} has an unexpected type: {other:?}"),
    }
}

/// Ask the agent and explain, and insist they agree on everything.
fn agree(agent: &Agent, cases: &[Case]) -> Vec<Vars> {
    let mut spop = SpopClient::open_to(&agent.spop_addr());
    let mut answers = Vec::new();
    for c in cases {
        let mut req = Request::new(c.method, c.path).host(HOST);
        if let Some(t) = &c.token {
            req = req.bearer(t);
        }
        let ack = spop.decide(&req);
        let (code, report) = explain(agent.config_path(), c);
        let ctx = format!("{}: ACK {ack:?}\nexplain {report:#}", c.name);
        assert_eq!(
            (ack.status(), ack.reason().as_str()),
            (c.status, c.reason),
            "{ctx}"
        );
        let shown = report["variables"].as_object().expect("variables");
        let acked: serde_json::Map<String, Value> = ack
            .0
            .iter()
            .map(|(k, v)| (k.clone(), as_json(k, v)))
            .collect();
        assert_eq!(shown, &acked, "{ctx}");
        let decision = if ack.allow() { "allow" } else { "deny" };
        assert_eq!(report["decision"], decision, "{ctx}");
        assert_eq!(report["status"], ack.status(), "{ctx}");
        assert_eq!(report["reason"], ack.reason(), "{ctx}");
        assert_eq!(code, Some(if ack.allow() { 0 } else { 1 }), "{ctx}");
        answers.push(ack);
    }
    answers
}

fn start(config: &str) -> Agent {
    let agent = Agent::start(config);
    assert!(
        agent.wait_ready(support::READY_TIMEOUT),
        "idgate never loaded the mock issuer's keys\n{}",
        agent.log()
    );
    agent
}

/// Entra-style group object IDs.
fn guids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{i:08x}-5e2f-4c1a-9d3b-{i:012x}"))
        .collect()
}

#[test]
fn explain_matches_the_agents_ack() {
    let rt = background_runtime();
    let key = Signer::rsa("agree-rsa");
    let idp = rt.block_on(MockIdp::start(&[&key]));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("pat.token"), "dapi-static-credential\n").unwrap();
    // Fits a 16380-byte frame, not a 2048-byte one even alone.
    std::fs::write(d.join("huge.token"), format!("dapi{}", "h".repeat(3000))).unwrap();
    // Fits a 2048-byte frame alone, not with the identity next to it.
    std::fs::write(d.join("big.token"), format!("dapi{}", "b".repeat(1800))).unwrap();

    let iss = idp.base.clone();
    let token = |f: &dyn Fn(&mut Value)| {
        let mut c = claims(&iss);
        f(&mut c);
        key.token(&c)
    };
    let normal = token(&|_| {});
    let many_groups = token(&|c| c["groups"] = json!(guids(150)));
    let username = token(&|c| c["preferred_username"] = json!("alice.smith"));
    let bad_username = token(&|c| c["preferred_username"] = json!("alice\u{1}"));
    let bad_sub = token(&|c| c["sub"] = json!("admin\u{0}"));
    let bad_group = token(&|c| c["groups"] = json!(["ok", "bad\r\nX-Evil: 1"]));
    let expired = token(&|c| {
        c["exp"] = json!(support::auth_kit::now() - 3600);
        c["iat"] = json!(support::auth_kit::now() - 7200);
    });
    let some_groups = token(&|c| {
        c["groups"] = json!((0..12)
            .map(|i| format!("a-rather-long-group-name-{i:02}"))
            .collect::<Vec<_>>())
    });

    let agent = start(&config(&idp, d, 16380));
    let answers = agree(
        &agent,
        &[
            case(
                "allow with an upstream credential",
                "/with-credential/x",
                Some(normal.clone()),
                200,
                "ok",
            ),
            case(
                "claim principal",
                "/by-username/x",
                Some(username.clone()),
                200,
                "ok",
            ),
            case(
                "claim principal that cannot be passed on",
                "/by-username/x",
                Some(bad_username),
                401,
                "claim_invalid",
            ),
            case(
                "150 groups",
                "/api/2.0/clusters/list",
                Some(many_groups),
                200,
                "ok",
            ),
            case(
                "sub with NUL",
                "/api/x",
                Some(bad_sub),
                401,
                "claim_invalid",
            ),
            case(
                "group with CR LF",
                "/api/x",
                Some(bad_group),
                401,
                "claim_invalid",
            ),
            case(
                "deny rule",
                "/api/2.0/secrets/list",
                Some(normal.clone()),
                403,
                "denied_by_rule",
            ),
            case(
                "unknown path",
                "/nowhere",
                Some(normal.clone()),
                403,
                "no_matching_rule",
            ),
            case("public rule", "/public/readme", None, 200, "public"),
            case("missing token", "/api/x", None, 401, "missing_token"),
            case("expired token", "/api/x", Some(expired), 401, "expired"),
            case(
                "credential that fits the default frame",
                "/huge/x",
                Some(normal.clone()),
                200,
                "ok",
            ),
        ],
    );
    // The interesting variables are there (agreement alone would pass if both lost them).
    assert_eq!(
        answers[0].str("upstream_authorization").as_deref(),
        Some("Bearer dapi-static-credential")
    );
    assert_eq!(answers[1].str("principal").as_deref(), Some("alice.smith"));
    assert_eq!(
        answers[3].str("groups").map(|g| g.split(',').count()),
        Some(150)
    );
    assert!(answers[9].str("www_authenticate").is_some());
    assert!(answers[10]
        .str("www_authenticate")
        .unwrap()
        .contains("invalid_token"));
    drop(agent);

    // A small max-frame-size: the credential alone does not fit (503), or the identity does
    // not fit next to it (500). Neither is allowed without what it is forwarded with.
    let agent = start(&config(&idp, d, SMALL_FRAME));
    let answers = agree(
        &agent,
        &[
            case(
                "credential too big for the frame",
                "/huge/x",
                Some(normal.clone()),
                503,
                "upstream_unavailable",
            ),
            case(
                "identity does not fit next to the credential",
                "/big/x",
                Some(some_groups.clone()),
                500,
                "internal_error",
            ),
            case(
                "the same credential with a small identity",
                "/big/x",
                Some(token(&|c| {
                    c.as_object_mut().unwrap().remove("groups");
                })),
                200,
                "ok",
            ),
            case(
                "the same identity without the credential",
                "/api/x",
                Some(some_groups),
                200,
                "ok",
            ),
        ],
    );
    for refused in &answers[..2] {
        assert!(
            refused.get("upstream_authorization").is_none(),
            "{refused:?}"
        );
        assert!(refused.get("principal").is_none(), "{refused:?}");
    }
    assert_eq!(answers[1].str("sub").as_deref(), Some("alice"));
    assert!(answers[2].get("upstream_authorization").is_some());
    drop(agent);

    // Why a credential that is not header-safe is not in the table: the static upstream
    // refuses such a token file when the configuration loads.
    std::fs::write(d.join("pat.token"), "dapi-a\u{1}b").unwrap();
    let bad = d.join("bad.toml");
    std::fs::write(&bad, config(&idp, d, 16380)).unwrap();
    let out = Command::new(Agent::binary())
        .args(["check-config", "-c"])
        .arg(&bad)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("upstream.pat.token_file"), "{stderr}");
}
