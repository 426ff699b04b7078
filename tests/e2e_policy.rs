//! Policy end to end, for HAProxy 2.6 and 3.4: a real OIDC provider (npm `oidc-provider`)
//! issues the callers' tokens, the real `idgate` binary decides with a first-match policy,
//! HAProxy runs the shipped configuration, and the TLS echo server records what reaches the
//! upstream.
//!
//! One stack per HAProxy version; the scenarios run in order on it (the agent-down scenario
//! last, since it stops the agent):
//! - allowed (alice, group ml-engineers, on a model-serving invocation): 200 from the echo,
//!   which sees X-Forwarded-User/-Email/-Groups from the token and the rule's upstream
//!   credential instead of the caller's token; forged identity headers in both spellings are
//!   replaced;
//! - allowed by a rule without upstream: no Authorization at all reaches the upstream;
//! - bob (group analysts) on the same path: 403 `no_matching_rule`; a deny rule: 403
//!   `denied_by_rule`; nothing forwarded;
//! - a public path: forwarded without a token, forged identity headers and the caller's
//!   Authorization deleted;
//! - dot-segment and encoded-slash paths: 400 `bad_request` before any rule, public ones
//!   included;
//! - the audit log has one line per decision with the right reason and never the token;
//! - agent down: allowed and public requests are refused (503), nothing forwarded.

mod support;

use support::oidc;

use std::path::Path;

use oidc::{OidcProvider, RESOURCE};
use support::forged::{as_refs, assert_identity, assert_no_forged, forged_with_token, FORGED};
use support::haproxy::HaproxyVersion;
use support::stack::{self, Stack};

/// The static credential of the `pat` upstream (what Databricks would see).
const PAT: &str = "dapi-e2e-policy-static-token";

const SERVING: &str = "/serving-endpoints/churn-model/invocations";
const CLUSTERS: &str = "/api/2.0/clusters/list";

fn agent_config(issuer: &str, pat_file: &Path) -> String {
    format!(
        r#"
[log]
level = "info"
audit = "{audit}"

[[issuer]]
name = "corp"
issuer = "{issuer}"
audiences = ["{RESOURCE}"]
algorithms = ["RS256", "ES256", "EdDSA"]

[upstream.pat]
kind = "static"
token_file = "{pat}"

[[rule]]
name = "public-health"
paths = ["/public/**"]
public = true
effect = "allow"

[[rule]]
name = "no-deletes"
methods = ["DELETE"]
paths = ["/api/**"]
effect = "deny"

[[rule]]
name = "serving-invoke"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
effect = "allow"
upstream = "pat"

[[rule]]
name = "workspace-read"
methods = ["GET"]
paths = ["/api/2.0/**"]
effect = "allow"
"#,
        audit = stack::AUDIT_PLACEHOLDER,
        pat = pat_file.display(),
    )
}

fn policy_end_to_end(version: HaproxyVersion) {
    if oidc::skip() {
        return;
    }
    let rt = stack::runtime();
    let idp = rt.block_on(OidcProvider::start());
    let pat_dir = tempfile::tempdir().unwrap();
    let pat_file = pat_dir.path().join("pat.token");
    std::fs::write(&pat_file, PAT).unwrap();
    let Some(mut s) = Stack::start(version, &agent_config(&idp.issuer, &pat_file)) else {
        return;
    };
    let alice = rt.block_on(idp.token("alice"));
    let bob = rt.block_on(idp.token("bob"));

    // --- allowed, with an upstream credential; forged identity headers replaced ---
    let headers = forged_with_token(&alice);
    let r = s.call("POST", SERVING, &as_refs(&headers));
    s.expect(&r, 200, "alice on the serving endpoint");
    assert_eq!(s.echo.count(), 1);
    let up = s.last_upstream();
    assert_eq!(up.method, "POST");
    assert_eq!(up.path, SERVING);
    assert_identity(
        &up,
        Some("alice"),
        Some("alice@example.com"),
        Some("ml-engineers"),
    );
    assert_eq!(
        up.header_all("authorization"),
        vec![format!("Bearer {PAT}").as_str()],
        "the upstream sees the rule's credential, never the caller's token"
    );
    assert!(
        up.headers.iter().all(|(_, v)| !v.contains(&alice)),
        "the caller's token reached the upstream: {:?}",
        up.headers
    );

    // --- allowed by a rule without upstream: no Authorization at all ---
    let r = s.call("GET", CLUSTERS, &as_refs(&headers));
    s.expect(&r, 200, "alice reading the workspace API");
    let up = s.last_upstream();
    assert_eq!(up.path, CLUSTERS);
    assert_identity(
        &up,
        Some("alice"),
        Some("alice@example.com"),
        Some("ml-engineers"),
    );
    assert!(
        up.header_all("authorization").is_empty(),
        "a rule without upstream forwards no Authorization: {:?}",
        up.headers
    );
    let forwarded = s.echo.count();
    assert_eq!(forwarded, 2);

    // --- 403: valid identity, not permitted ---
    let r = s.call("POST", SERVING, &as_refs(&forged_with_token(&bob)));
    s.expect(&r, 403, "bob (analysts) on the serving endpoint");
    assert!(r.body.contains("no_matching_rule"), "body {:?}", r.body);
    assert!(r.header("www-authenticate").is_none(), "{r:?}");
    let body = serde_json::from_str::<serde_json::Value>(&r.body)
        .unwrap_or_else(|e| panic!("403 body is not JSON ({e}): {:?}", r.body));
    let bob_request_id = body["request_id"]
        .as_str()
        .expect("request_id in the 403 body")
        .to_string();
    // Where the Databricks SDKs read it: details[] as google.rpc.RequestInfo.
    assert_eq!(
        body["details"][0],
        serde_json::json!({"@type": "type.googleapis.com/google.rpc.RequestInfo",
                           "request_id": bob_request_id, "serving_data": ""}),
        "{body}"
    );
    let r = s.call_as("DELETE", "/api/2.0/clusters/delete", &alice);
    s.expect(&r, 403, "a DELETE under the deny rule");
    assert!(r.body.contains("denied_by_rule"), "body {:?}", r.body);
    assert_eq!(
        s.echo.count(),
        forwarded,
        "a denied request reached the upstream"
    );

    // --- public path: forwarded without a token; forged headers and Authorization deleted ---
    let r = s.call("GET", "/public/health", &as_refs(&headers));
    s.expect(&r, 200, "the public path with forged headers and a token");
    let up = s.last_upstream();
    assert_eq!(up.path, "/public/health");
    assert_identity(&up, None, None, None);
    assert!(
        up.header_all("authorization").is_empty(),
        "the caller's Authorization reached the upstream on a public path: {:?}",
        up.headers
    );
    let forged_only: Vec<(&str, &str)> = FORGED.to_vec();
    let r = s.call("GET", "/public/health?probe=1", &forged_only);
    s.expect(&r, 200, "the public path without a token");
    let up = s.last_upstream();
    assert_no_forged(&up);
    assert_identity(&up, None, None, None);
    let forwarded = s.echo.count();
    assert_eq!(forwarded, 4);

    // --- dot-segments and encoded slashes: 400 before any rule, public ones included ---
    // Control: the raw client itself gets through.
    let r = s.raw("GET", "/public/health", &[]);
    s.expect(&r, 200, "raw control request");
    let forwarded = forwarded + 1;
    let bearer = format!("Bearer {alice}");
    let with_token = [("Authorization", bearer.as_str())];
    for (target, headers) in [
        ("/public/../api/2.0/secrets/list", &[][..]),
        ("/public/%2e%2e/api/2.0/secrets/list", &[][..]),
        ("/public/%2E%2e/api/2.0/secrets/list", &[][..]),
        ("/public/./health", &[][..]),
        ("/public/%2e/health", &[][..]),
        ("/public/a%2Fb", &[][..]),
        ("/public/a%2fb", &[][..]),
        ("/public/..", &[][..]),
        ("/public/..;/api/2.0/secrets/list", &[][..]),
        ("/public//health", &[][..]),
        ("/public/%252e%252e/api/2.0/secrets/list", &[][..]),
        ("/public/%5C..%5Capi", &[][..]),
        ("/api/2.0/clusters/../clusters/list", &with_token[..]),
        ("/api/2.0/%2e%2e/2.0/clusters/list", &with_token[..]),
        (
            "/serving-endpoints/churn-model%2Finvocations",
            &with_token[..],
        ),
        (
            "/serving-endpoints/x/../churn-model/invocations",
            &with_token[..],
        ),
    ] {
        let method = if target.starts_with("/serving") {
            "POST"
        } else {
            "GET"
        };
        let r = s.raw(method, target, headers);
        s.expect(&r, 400, target);
        assert!(
            r.body.contains("idgate: bad_request"),
            "{target}: refused by idgate, not by HAProxy's parser: {:?}",
            r.body
        );
    }
    assert_eq!(
        s.echo.count(),
        forwarded,
        "a dot-segment path reached the upstream"
    );

    // --- the audit log: one line per decision, the right reasons, never the token ---
    let decisions = 2 + 2 + 2 + 1 + 16;
    let audit = s.audit(decisions);
    let reasons: Vec<&str> = audit
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "ok",
            "ok",
            "no_matching_rule",
            "denied_by_rule",
            "public",
            "public",
            "public",
        ]
        .iter()
        .copied()
        .chain(std::iter::repeat_n("bad_request", 16))
        .collect::<Vec<_>>(),
        "{audit:#?}"
    );
    // HAProxy's SPOE arguments made it into the decision: method, path, src, unique-id.
    assert_eq!(audit[0]["method"], "POST");
    assert_eq!(audit[0]["path"], SERVING);
    assert_eq!(audit[0]["src"], "127.0.0.1");
    assert!(
        audit[0]["unique_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty()),
        "{:#?}",
        audit[0]
    );
    assert_eq!(audit[0]["rule"], "serving-invoke");
    assert_eq!(audit[0]["sub"], "alice");
    assert_eq!(audit[0]["issuer"], "corp");
    // The caller's request_id is the audit line's unique_id: one ID across HAProxy and idgate.
    assert_eq!(audit[2]["unique_id"], bob_request_id.as_str());
    assert_eq!(audit[2]["sub"], "bob");
    assert_eq!(audit[3]["rule"], "no-deletes");
    assert_eq!(audit[3]["status"], 403);
    assert_eq!(audit[4]["rule"], "public-health");
    let text = s.audit_text();
    let signature = alice.rsplit('.').next().unwrap();
    assert!(
        !text.contains(signature) && !text.contains(PAT),
        "a token or credential reached the audit log"
    );

    // --- agent down: fail closed, nothing forwarded ---
    s.agent.stop();
    for (method, path) in [("POST", SERVING), ("GET", "/public/health")] {
        let r = s.call_as(method, path, &alice);
        s.expect(&r, 503, &format!("{method} {path} with the agent down"));
    }
    assert!(
        s.hap.wait_agent_up(false, support::READY_TIMEOUT),
        "the health check never marked the stopped agent DOWN\n{}",
        s.logs()
    );
    let r = s.call_as("POST", SERVING, &alice);
    s.expect(&r, 503, "serving with the agent marked DOWN");
    assert_eq!(
        s.echo.count(),
        forwarded,
        "a request was forwarded without a decision"
    );
}

haproxy_tests!(full: [policy_end_to_end]);
