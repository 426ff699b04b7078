//! The shipped HAProxy configuration (haproxy/): every supported HAProxy version (2.6, 3.0, 3.2,
//! 3.4) accepts the file meant for it without a single warning (haproxy.cfg: 2.6 and 3.0;
//! haproxy-3.x.cfg: 3.2 and later), the versions before 3.2 refuse the 3.x file with a clear
//! message, the two files cannot drift apart, and the properties the contract (§2, §7) requires
//! are present in the text.

mod support;

use std::collections::BTreeMap;

use support::echo::{TestCerts, UPSTREAM_HOST};
use support::haproxy::{check_config, HaproxyVersion, Params, Upstream};
use support::{free_addr, repo_path};

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo_path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

/// Test values for every configuration variable, as the end-to-end tests use them.
fn test_params(dir: &std::path::Path) -> Params {
    let certs = TestCerts::generate(dir, UPSTREAM_HOST);
    Params {
        frontend: free_addr(),
        stats: free_addr(),
        agent: free_addr().into(),
        upstream: Upstream {
            addr: free_addr(),
            host: UPSTREAM_HOST.to_string(),
            ca_file: certs.ca,
        },
        stats_socket: dir.join("admin.sock"),
        extra_env: Vec::new(),
    }
}

fn assert_clean_check(version: HaproxyVersion, cfg: &std::path::Path) {
    assert_clean_check_with(version, cfg, &[]);
}

fn assert_clean_check_with(
    version: HaproxyVersion,
    cfg: &std::path::Path,
    extra_env: &[(&'static str, String)],
) {
    let Some(bin) = version.require() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut params = test_params(dir.path());
    params.extra_env = extra_env.to_vec();
    let out = check_config(&bin, cfg, &params);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{} rejects {}:\n{text}",
        version.label(),
        cfg.display()
    );
    for level in ["[WARNING]", "[ALERT]"] {
        assert!(
            !text.contains(level),
            "{} reports a {level} for {}:\n{text}",
            version.label(),
            cfg.display()
        );
    }
}

#[test]
fn haproxy26_accepts_haproxy_cfg_without_warnings() {
    assert!(HaproxyVersion::V26.runs_haproxy_cfg());
    assert_clean_check(HaproxyVersion::V26, &repo_path("haproxy/haproxy.cfg"));
}

/// 3.0 has neither `mode spop` nor `option http-drop-request-trailers`: it runs haproxy.cfg.
#[test]
fn haproxy30_accepts_haproxy_cfg_without_warnings() {
    assert!(HaproxyVersion::V30.runs_haproxy_cfg());
    assert_clean_check(HaproxyVersion::V30, &repo_path("haproxy/haproxy.cfg"));
}

#[test]
fn haproxy32_accepts_haproxy_3x_cfg_without_warnings() {
    assert!(!HaproxyVersion::V32.runs_haproxy_cfg());
    assert_clean_check(HaproxyVersion::V32, &repo_path("haproxy/haproxy-3.x.cfg"));
}

#[test]
fn haproxy34_accepts_haproxy_3x_cfg_without_warnings() {
    assert!(!HaproxyVersion::V34.runs_haproxy_cfg());
    assert_clean_check(HaproxyVersion::V34, &repo_path("haproxy/haproxy-3.x.cfg"));
}

/// Upgrading HAProxy before switching files does not break the gateway: 3.2 and later still load
/// haproxy.cfg (its `mode tcp` agents backend is converted to `mode spop`) without a warning.
/// It then keeps haproxy.cfg's HTTP/1.1-only frontend; haproxy-3.x.cfg is the file to move to.
#[test]
fn haproxy32_and_34_still_accept_haproxy_cfg_without_warnings() {
    for version in [HaproxyVersion::V32, HaproxyVersion::V34] {
        assert_clean_check(version, &repo_path("haproxy/haproxy.cfg"));
    }
}

/// With a test DNS server (IDGATE_DNS_NAMESERVER) instead of /etc/resolv.conf, as the
/// data-plane tests run it.
#[test]
fn every_version_accepts_a_dns_nameserver_override_without_warnings() {
    let ns = [("IDGATE_DNS_NAMESERVER", free_addr().to_string())];
    for version in HaproxyVersion::ALL {
        assert_clean_check_with(version, &version.config_file(), &ns);
    }
}

/// A fleet (docs/fleet.md): three agents, and three nodes sharing the serving rate limit
/// through `peers`, as each version's file declares them.
#[test]
fn every_version_accepts_the_fleet_variables_without_warnings() {
    let peers = [free_addr(), free_addr(), free_addr()];
    let mut env = support::peers::peer_env(1, &peers);
    env.push(("IDGATE_AGENT2_ADDR", free_addr().to_string()));
    env.push(("IDGATE_AGENT3_ADDR", free_addr().to_string()));
    for version in HaproxyVersion::ALL {
        assert_clean_check_with(version, &version.config_file(), &env);
    }
}

/// The data-plane backend: certificate verified against the data-plane host name (SNI), the
/// per-identity limit shared with databricks_serving, an unresolvable host answered 503 before
/// any connection; and idgate's 502 (upstream_refused) carries no Retry-After.
#[test]
fn data_plane_backend_verifies_the_data_plane_name_and_shares_the_rate_limit() {
    for file in ["haproxy/haproxy.cfg", "haproxy/haproxy-3.x.cfg"] {
        let cfg = read(file);
        let backend: Vec<&str> = cfg
            .lines()
            .skip_while(|l| *l != "backend databricks_dataplane")
            .skip(1)
            .take_while(|l| l.starts_with(' ') || l.starts_with('.') || l.is_empty())
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('.'))
            .collect();
        let server = backend
            .iter()
            .find(|l| l.starts_with("server "))
            .unwrap_or_else(|| panic!("{file}: databricks_dataplane has no server"));
        for needed in ["0.0.0.0:0", "ssl verify required", "sni var(txn.dp_host)"] {
            assert!(server.contains(needed), "{file}: {server} lacks {needed}");
        }
        assert!(!server.contains("verify none") && !server.contains("verifyhost"));
        let pos = |prefix: &str| {
            backend
                .iter()
                .position(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("{file}: no {prefix} in databricks_dataplane"))
        };
        // Counted where databricks_serving counts: its table, or with peers this node's table
        // of the fleet (docs/fleet.md).
        let tracks: Vec<&&str> = backend
            .iter()
            .filter(|l| l.starts_with("http-request track-sc0"))
            .collect();
        assert_eq!(tracks.len(), 2, "{file}: {tracks:?}");
        assert!(tracks[0].contains(r#"table "idgate_peers/rate_${IDGATE_PEER_NAME-unset}""#));
        assert!(tracks[1].contains("table databricks_serving"));
        let resolve = pos("http-request do-resolve(txn.dp_addr,sys,ipv4)");
        let unresolved = pos("http-request deny deny_status 503");
        assert!(backend[unresolved].ends_with("unless { var(txn.dp_addr) -m found }"));
        assert!(resolve < unresolved && unresolved < pos("http-request set-dst "));
        let refused = cfg
            .lines()
            .find(|l| l.contains("deny_status 502"))
            .unwrap_or_else(|| panic!("{file}: no 502 deny"));
        assert!(refused.ends_with("if { var(txn.idgate.status) -m int 502 }"));
        assert!(!refused.contains("Retry-After"), "{file}: {refused}");
        assert!(cfg.contains(
            "use_backend databricks_dataplane if { var(txn.idgate.upstream_host) -m found }"
        ));
    }
}

/// 2.6 and 3.0 refuse haproxy-3.x.cfg with a message naming the file to use, not with a parse
/// error about `mode spop` somewhere in the middle.
#[test]
fn haproxy26_and_30_refuse_the_3x_file_with_a_clear_message() {
    for version in [HaproxyVersion::V26, HaproxyVersion::V30] {
        let Some(bin) = version.require() else { return };
        let dir = tempfile::tempdir().unwrap();
        let out = check_config(
            &bin,
            &repo_path("haproxy/haproxy-3.x.cfg"),
            &test_params(dir.path()),
        );
        assert!(
            !out.status.success(),
            "{} accepted haproxy-3.x.cfg",
            version.label()
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(
                "haproxy-3.x.cfg needs HAProxy 3.2 or later; use haproxy.cfg for HAProxy 2.6 and 3.0"
            ),
            "{}: no explanation in:\n{stderr}",
            version.label()
        );
    }
}

/// Removes the `# BEGIN VARIANT` .. `# END VARIANT` blocks, returning the rest and the blocks.
fn split_variants(text: &str) -> (String, Vec<String>) {
    let mut common = String::new();
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if line.starts_with("# BEGIN VARIANT") {
            assert!(current.is_none(), "nested VARIANT block");
            current = Some(String::new());
        } else if line.starts_with("# END VARIANT") {
            blocks.push(current.take().expect("END VARIANT without BEGIN"));
            common.push_str("<variant>\n");
        } else if let Some(block) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        } else {
            common.push_str(line);
            common.push('\n');
        }
    }
    assert!(current.is_none(), "unterminated VARIANT block");
    (common, blocks)
}

#[test]
fn the_two_haproxy_files_differ_only_in_their_variant_blocks() {
    let (common26, blocks26) = split_variants(&read("haproxy/haproxy.cfg"));
    let (common3, blocks3) = split_variants(&read("haproxy/haproxy-3.x.cfg"));
    assert_eq!(
        blocks26.len(),
        5,
        "haproxy.cfg: header, trailers (defaults), bind line, trailers (frontend) and agents-backend variants"
    );
    assert_eq!(
        blocks3.len(),
        5,
        "haproxy-3.x.cfg: header, trailers (defaults), bind line, trailers (frontend) and agents-backend variants"
    );
    assert!(
        blocks26[4].contains("mode tcp"),
        "2.6 agents backend is not `mode tcp`"
    );
    assert!(
        blocks3[4].contains("mode spop"),
        "3.x agents backend is not `mode spop`"
    );
    if common26 != common3 {
        let first_diff = common26
            .lines()
            .zip(common3.lines())
            .enumerate()
            .find(|(_, (a, b))| a != b);
        panic!("haproxy.cfg and haproxy-3.x.cfg differ outside VARIANT blocks: {first_diff:?}");
    }
}

/// The `http-request` lines of the gateway frontend, in order.
fn gateway_rules(cfg: &str) -> Vec<String> {
    let mut in_gateway = false;
    let mut rules = Vec::new();
    for line in cfg.lines() {
        let t = line.trim();
        if !line.starts_with(' ') && !t.is_empty() && !t.starts_with('#') && !t.starts_with('.') {
            in_gateway = t == "frontend databricks_gateway";
            continue;
        }
        if in_gateway
            && (t.starts_with("http-request ")
                || t.starts_with("use_backend ")
                || t.starts_with("default_backend "))
        {
            rules.push(t.to_string());
        }
    }
    rules
}

#[test]
fn gateway_strips_identity_headers_first_and_fails_closed() {
    for file in ["haproxy/haproxy.cfg", "haproxy/haproxy-3.x.cfg"] {
        let rules = gateway_rules(&read(file));
        let pos = |pred: &dyn Fn(&str) -> bool, what: &str| {
            rules
                .iter()
                .position(|r| pred(r))
                .unwrap_or_else(|| panic!("{file}: no rule {what}"))
        };
        let spoe = pos(
            &|r| r.starts_with("http-request send-spoe-group idgate "),
            "calling idgate",
        );
        for header in [
            "X-Forwarded-User",
            "X_Forwarded_User",
            "X-Forwarded-Email",
            "X_Forwarded_Email",
            "X-Forwarded-Groups",
            "X_Forwarded_Groups",
        ] {
            let del = pos(
                &|r| r == format!("http-request del-header {header}"),
                header,
            );
            assert!(del < spoe, "{file}: {header} deleted after the SPOE call");
        }
        let last_deny = pos(
            &|r| {
                r.starts_with("http-request deny")
                    && r.ends_with("unless { var(txn.idgate.allow) -m bool }")
            },
            "denying unless allow",
        );
        assert!(
            spoe < last_deny,
            "{file}: the allow check runs before the agent is asked"
        );
        // After the allow check nothing may deny/allow differently, and every rewrite of the
        // forwarded identity comes after it.
        let del_authz = pos(
            &|r| r == "http-request del-header Authorization",
            "deleting Authorization",
        );
        assert!(
            last_deny < del_authz,
            "{file}: Authorization handled before the decision"
        );
        for (i, r) in rules.iter().enumerate() {
            if r.starts_with("http-request set-header") {
                assert!(i > last_deny, "{file}: {r} runs before the allow check");
            }
            if r.starts_with("http-request allow") || r.starts_with("http-request return") {
                panic!("{file}: {r} could bypass the decision");
            }
        }
        for (i, r) in rules.iter().enumerate() {
            if r.starts_with("use_backend") || r.starts_with("default_backend") {
                assert!(i > last_deny, "{file}: routing before the allow check");
            }
        }
    }
}

#[test]
fn access_log_never_records_credentials() {
    for file in ["haproxy/haproxy.cfg", "haproxy/haproxy-3.x.cfg"] {
        let cfg = read(file);
        let formats: Vec<&str> = cfg
            .lines()
            .filter(|l| l.trim_start().starts_with("log-format"))
            .collect();
        assert!(!formats.is_empty(), "{file}: no log-format");
        for f in formats {
            let lower = f.to_ascii_lowercase();
            assert!(!lower.contains("upstream_authorization"), "{file}: {f}");
            assert!(!lower.contains("authorization"), "{file}: {f}");
            assert!(!lower.contains("cookie"), "{file}: {f}");
            assert!(
                !lower.contains("%hr") && !lower.contains("%hrl"),
                "{file}: captured headers logged"
            );
        }
    }
}

/// The `name=sample` arguments of SPOE message `message` in `spoe`.
fn message_args<'s>(spoe: &'s str, message: &str) -> BTreeMap<&'s str, &'s str> {
    let header = format!("spoe-message {message}");
    let mut lines = spoe.lines().map(str::trim);
    lines
        .find(|l| *l == header)
        .unwrap_or_else(|| panic!("no `{header}`"));
    lines
        .find(|l| l.starts_with("args "))
        .unwrap_or_else(|| panic!("`{message}` has no args"))
        .trim_start_matches("args ")
        .split_whitespace()
        .map(|kv| kv.split_once('=').expect("args are name=sample"))
        .collect()
}

/// `authorize-serving` (contract §2, §8) is `authorize` plus the body, its announced size and
/// its content type, and the gateway sends it for serving invocations only, after buffering
/// the body; every other request sends `authorize`.
#[test]
fn serving_invocations_send_their_body() {
    let spoe = read("haproxy/idgate.spoe.conf");
    let mut expected = message_args(&spoe, "authorize");
    expected.extend([
        ("body", "req.body"),
        ("body_size", "req.body_size"),
        ("content_type", "req.fhdr(content-type)"),
    ]);
    assert_eq!(message_args(&spoe, "authorize-serving"), expected);
    for (group, message) in [
        ("authorize-group", "authorize"),
        ("authorize-serving-group", "authorize-serving"),
    ] {
        let lines: Vec<&str> = spoe.lines().map(str::trim).collect();
        let at = lines
            .iter()
            .position(|l| *l == format!("spoe-group {group}"))
            .unwrap_or_else(|| panic!("no `spoe-group {group}`"));
        assert_eq!(
            lines.get(at + 1).copied(),
            Some(format!("messages {message}").as_str()),
            "idgate.spoe.conf: group {group} must send exactly {message}"
        );
    }
    for file in ["haproxy/haproxy.cfg", "haproxy/haproxy-3.x.cfg"] {
        let rules = gateway_rules(&read(file));
        let serving = "{ var(txn.serving_body) -m bool }";
        let sends: Vec<&String> = rules
            .iter()
            .filter(|r| r.starts_with("http-request send-spoe-group"))
            .collect();
        assert_eq!(
            sends,
            [
                &format!(
                    "http-request send-spoe-group idgate authorize-serving-group if {serving}"
                ),
                &format!("http-request send-spoe-group idgate authorize-group unless {serving}"),
            ],
            "{file}"
        );
        let setters: Vec<&String> = rules
            .iter()
            .filter(|r| r.contains("set-var(txn.serving_body)"))
            .collect();
        assert_eq!(
            setters,
            ["http-request set-var(txn.serving_body) bool(true) if METH_POST { path,url_dec -m reg ^/serving-endpoints/[^/]+/invocations$ }"],
            "{file}"
        );
        let wait = rules
            .iter()
            .position(|r| r == &format!("http-request wait-for-body time 10s if {serving}"))
            .unwrap_or_else(|| panic!("{file}: the body is not buffered for serving invocations"));
        let send = rules
            .iter()
            .position(|r| r.starts_with("http-request send-spoe-group"))
            .unwrap();
        assert!(
            wait < send,
            "{file}: the body is buffered after the SPOE call"
        );
    }
}

#[test]
fn spoe_message_matches_the_contract() {
    let spoe = read("haproxy/idgate.spoe.conf");
    let args = message_args(&spoe, "authorize");
    let expected: BTreeMap<&str, &str> = [
        ("method", "method"),
        ("path", "path"),
        ("host", "req.hdr(host)"),
        // req.fhdr: the full field, commas included (see the comment in the file).
        ("authorization", "req.fhdr(authorization)"),
        ("cookie", "req.fhdr(cookie)"),
        ("src", "src"),
        ("unique_id", "unique-id"),
    ]
    .into_iter()
    .collect();
    assert_eq!(args, expected);
    for needed in [
        "[idgate]",
        "option var-prefix idgate",
        "option set-on-error error",
        "no option send-frag-payload",
        "max-frame-size 16380",
        "use-backend idgate_agents",
    ] {
        assert!(
            spoe.lines().any(|l| l.trim() == needed),
            "idgate.spoe.conf lacks `{needed}`"
        );
    }
}
