//! End to end, on HAProxy 2.6, 3.0, 3.2 and 3.4: a client talks to HAProxy running the shipped
//! configuration, HAProxy asks the real `idgate` agent over SPOP, and allowed requests reach a
//! TLS echo server standing in for Databricks.
//!
//! The agent runs without issuers (like the embedded default), plus one public rule with a
//! static upstream credential, so both outcomes can be driven without an IdP: every request
//! with or without a token is refused with 401, and `/public/**` is allowed and forwarded.

mod support;

use std::path::Path;

use support::agent::Agent;
use support::echo::{EchoServer, UPSTREAM_HOST};
use support::haproxy::{Haproxy, HaproxyVersion};
use support::http_client;
use support::stack::{Options, Stack};

/// The credential idgate hands HAProxy for the public rule (a `static` upstream).
const STATIC_UPSTREAM_TOKEN: &str = "dapi-e2e-static-upstream-token";

fn agent_config(token_file: &Path) -> String {
    format!(
        r#"
[log]
level = "info"
audit = "stderr"

[upstream.pat]
kind = "static"
token_file = "{}"

[[rule]]
name = "public-probe"
paths = ["/public/**"]
public = true
effect = "allow"
upstream = "pat"
"#,
        token_file.display()
    )
}

/// idgate + echo upstream + HAProxy ([`support::stack`]), the agent's credential file in the
/// stack's directory.
fn stack(version: HaproxyVersion) -> Option<Stack> {
    version.require()?;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("pat.token");
    support::write_secret(&token_file, STATIC_UPSTREAM_TOKEN);
    Stack::launch(
        version,
        &agent_config(&token_file),
        Options {
            dir: Some(dir),
            ..Options::default()
        },
    )
}

fn no_token_gets_401_challenge_and_nothing_is_forwarded(version: HaproxyVersion) {
    let Some(s) = stack(version) else { return };
    let resp = http_client()
        .get(s.hap.url("/api/2.0/clusters/list"))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401, "{}", s.logs());
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("401 without WWW-Authenticate\n{}", s.logs()))
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.starts_with(r#"Bearer realm="idgate""#),
        "challenge {challenge:?}"
    );
    let body = resp.text().unwrap();
    assert!(body.contains("missing_token"), "body {body:?}");
    assert_eq!(s.echo.count(), 0, "a refused request reached the upstream");
}

fn invalid_bearer_token_gets_401(version: HaproxyVersion) {
    let Some(s) = stack(version) else { return };
    let resp = http_client()
        .get(s.hap.url("/api/2.0/clusters/list"))
        .header("Authorization", "Bearer x.y.z")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401, "{}", s.logs());
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .expect("401 without WWW-Authenticate")
        .to_str()
        .unwrap();
    assert!(
        challenge.starts_with(r#"Bearer realm="idgate""#),
        "challenge {challenge:?}"
    );
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "challenge {challenge:?}"
    );
    assert_eq!(s.echo.count(), 0, "a refused request reached the upstream");
}

fn allowed_request_reaches_upstream_with_only_gateway_identity_and_credential(
    version: HaproxyVersion,
) {
    let Some(s) = stack(version) else { return };
    let resp = http_client()
        .get(s.hap.url("/public/ping?x=1"))
        .header("Authorization", "Bearer caller.idp.token")
        .header("X-Forwarded-User", "forged-user")
        .header("X_Forwarded_User", "forged-user-underscore")
        .header("x-forwarded-EMAIL", "forged@example.com")
        .header("X_Forwarded_Email", "forged2@example.com")
        .header("X-Forwarded-Groups", "admins")
        .header("X_Forwarded_Groups", "admins")
        .header("X-Forwarded-Preferred-Username", "root")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", s.logs());
    let seen = s.echo.requests();
    assert_eq!(seen.len(), 1, "upstream saw {seen:?}");
    let req = &seen[0];
    assert_eq!(req.method, "GET");
    assert_eq!(req.path, "/public/ping?x=1");
    assert_eq!(
        req.header("host"),
        Some(UPSTREAM_HOST),
        "Host is the workspace's"
    );
    assert_eq!(
        req.header_all("authorization"),
        vec![format!("Bearer {STATIC_UPSTREAM_TOKEN}").as_str()],
        "the caller's Authorization must be replaced by idgate's upstream credential"
    );
    for (name, _) in &req.headers {
        let n = name.to_ascii_lowercase().replace('_', "-");
        assert!(
            !n.starts_with("x-forwarded-user")
                && !n.starts_with("x-forwarded-email")
                && !n.starts_with("x-forwarded-groups")
                && !n.starts_with("x-forwarded-preferred-username"),
            "client-supplied identity header {name} reached the upstream: {:?}",
            req.headers
        );
    }
    // The response is the echo server's.
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["path"], "/public/ping?x=1");
}

fn duplicate_authorization_is_refused_before_the_agent(version: HaproxyVersion) {
    let Some(s) = stack(version) else { return };
    let resp = http_client()
        .get(s.hap.url("/public/ping"))
        .header("Authorization", "Bearer a.b.c")
        .header("Authorization", "Bearer d.e.f")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400, "{}", s.logs());
    assert_eq!(s.echo.count(), 0);
}

fn stopped_agent_fails_closed(version: HaproxyVersion) {
    let Some(mut s) = stack(version) else { return };
    let client = http_client();
    let answered = client
        .get(s.hap.url("/api/2.0/clusters/list"))
        .send()
        .unwrap();
    assert_eq!(
        answered.status(),
        401,
        "the agent is not answering\n{}",
        s.logs()
    );

    s.agent.stop();
    // Requests are now refused by HAProxy itself: first when the processing timeout expires,
    // then at once when the health check has marked the agent DOWN.
    for path in ["/api/2.0/clusters/list", "/public/ping"] {
        let resp = client.get(s.hap.url(path)).send().unwrap();
        assert_eq!(
            resp.status(),
            503,
            "{path} with the agent down\n{}",
            s.logs()
        );
        assert_eq!(
            resp.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            Some("1")
        );
    }
    assert!(
        s.hap.wait_agent_up(false, support::READY_TIMEOUT),
        "the health check never marked the stopped agent DOWN\n{}",
        s.logs()
    );
    let resp = client.get(s.hap.url("/public/ping")).send().unwrap();
    assert_eq!(resp.status(), 503, "{}", s.logs());
    assert_eq!(
        s.echo.count(),
        0,
        "a request was forwarded without a decision"
    );
}

/// The same path that was forwarded a moment ago is refused once no agent answers.
fn allowed_path_is_refused_when_the_agent_stops(version: HaproxyVersion) {
    let Some(mut s) = stack(version) else { return };
    let client = http_client();
    let ok = client.get(s.hap.url("/public/ping")).send().unwrap();
    assert_eq!(ok.status(), 200, "{}", s.logs());
    assert_eq!(s.echo.count(), 1);

    s.agent.stop();
    let resp = client.get(s.hap.url("/public/ping")).send().unwrap();
    assert_eq!(resp.status(), 503, "{}", s.logs());
    assert_eq!(
        s.echo.count(),
        1,
        "a request was forwarded without a decision"
    );
}

fn upstream_certificate_is_verified(version: HaproxyVersion) {
    let Some(bin) = version.require() else { return };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("pat.token");
    support::write_secret(&token_file, STATIC_UPSTREAM_TOKEN);
    let agent = Agent::start(&agent_config(&token_file));
    let upstream = EchoServer::start();
    let other_ca = EchoServer::start();
    // Connect to `upstream`, but trust only the other server's CA.
    let mut wrong = upstream.upstream();
    wrong.ca_file = other_ca.ca_file.clone().unwrap();
    let hap = Haproxy::start(version, &bin, agent.spop, &wrong);
    let resp = http_client().get(hap.url("/public/ping")).send().unwrap();
    assert_eq!(resp.status(), 503, "--- haproxy ---\n{}", hap.log());
    assert_eq!(
        upstream.count(),
        0,
        "a request crossed an unverified TLS connection"
    );
    assert!(
        upstream.failed_handshakes() > 0,
        "HAProxy never tried the upstream"
    );
}

haproxy_tests!(
    full: [
        invalid_bearer_token_gets_401,
        duplicate_authorization_is_refused_before_the_agent,
        allowed_path_is_refused_when_the_agent_stops,
    ],
    compat: [
        no_token_gets_401_challenge_and_nothing_is_forwarded,
        allowed_request_reaches_upstream_with_only_gateway_identity_and_credential,
        stopped_agent_fails_closed,
        upstream_certificate_is_verified,
    ],
);
