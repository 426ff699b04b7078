//! End to end over a Unix socket, for HAProxy 2.6 and 3.0 (`mode tcp` agent backend) and 3.2
//! and 3.4 (`mode spop`): idgate listens on `unix:<path>`, the shipped haproxy.cfg gets
//! `IDGATE_AGENT_ADDR=unix@<path>` on its `server idgate1` line, and one allowed and one refused
//! request reach the right verdict through HAProxy.
//!
//! When the harness runs HAProxy as production does (root, chroot /var/lib/haproxy, user
//! haproxy), the socket lives inside the chroot with `socket_group = "haproxy"`: the
//! deployment this test stands for (see tests/support/haproxy.rs, `AgentSocketDir`).

mod support;

use support::agent::Agent;
use support::echo::EchoServer;
use support::haproxy::{AgentSocketDir, Haproxy, HaproxyVersion};
use support::http_client;

const STATIC_UPSTREAM_TOKEN: &str = "dapi-e2e-unix-socket-token";

fn unix_socket_allow_and_deny(version: HaproxyVersion) {
    let Some(bin) = version.require() else { return };
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("pat.token");
    support::write_secret(&token_file, STATIC_UPSTREAM_TOKEN);
    let sock = AgentSocketDir::new();
    let group = sock
        .socket_group
        .map(|g| format!("socket_group = \"{g}\"\n"))
        .unwrap_or_default();
    let config = format!(
        r#"
[spop]
socket_mode = "0660"
{group}
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
    );
    let agent = Agent::start_unix_at(&config, &sock.agent_path);
    let echo = EchoServer::start();
    let hap = Haproxy::start(version, &bin, sock.haproxy_addr.clone(), &echo.upstream());
    let logs = || {
        format!(
            "--- haproxy ---\n{}\n--- idgate ---\n{}",
            hap.log(),
            agent.log()
        )
    };

    let denied = http_client()
        .get(hap.url("/api/2.0/clusters/list"))
        .send()
        .unwrap();
    assert_eq!(denied.status(), 401, "{}", logs());
    assert!(denied.text().unwrap().contains("missing_token"));
    assert_eq!(echo.count(), 0, "a refused request reached the upstream");

    let allowed = http_client().get(hap.url("/public/ping")).send().unwrap();
    assert_eq!(allowed.status(), 200, "{}", logs());
    let seen = echo.requests();
    assert_eq!(seen.len(), 1, "upstream saw {seen:?}");
    assert_eq!(
        seen[0].header_all("authorization"),
        vec![format!("Bearer {STATIC_UPSTREAM_TOKEN}").as_str()]
    );
    // Both decisions came over the socket (and HAProxy's health check keeps the agent UP).
    assert!(hap.agent_up(), "{}", logs());
    let m = agent.metrics();
    assert_eq!(
        support::metric_value(&m, "idgate_spop_listener_info", &[("kind", "unix")]),
        Some(1.0),
        "{m}"
    );
}

haproxy_tests!(full: [], compat: [unix_socket_allow_and_deny]);
