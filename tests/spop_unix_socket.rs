//! The SPOP listener on a Unix socket (`[spop] listen = "unix:/path"`), through the real
//! binary: the same protocol as over TCP, the socket file's mode and group as configured, a
//! stale socket replaced, anything else at the path refused, the file removed on SIGTERM, and
//! a reload that cannot move the listener.

mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::agent::{render_config, Agent};
use support::spop_client::{Frame, Request, SpopClient};
use support::{free_addr, poll_until, AgentAddr, READY_TIMEOUT};

/// A field of /proc/self/status ("Gid:", "Groups:").
fn proc_status(field: &str) -> Vec<u32> {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| {
            l[field.len()..]
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The effective gid of this process (and of the agent it starts).
fn egid() -> u32 {
    proc_status("Gid:")[1]
}

/// A group other than the primary one that the agent may give its socket to: a
/// supplementary group of this process, or, as root, any other group.
fn other_group() -> Option<(String, u32)> {
    let primary = egid();
    let root = support::running_as_root();
    let supplementary = proc_status("Groups:");
    std::fs::read_to_string("/etc/group")
        .ok()?
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?.to_string();
            let gid: u32 = f.nth(1)?.parse().ok()?;
            Some((name, gid))
        })
        .find(|(_, gid)| *gid != primary && (root || supplementary.contains(gid)))
}

fn mode_and_gid(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap();
    assert!(
        m.file_type().is_socket(),
        "{} is not a socket",
        path.display()
    );
    (m.mode() & 0o7777, m.gid())
}

/// Runs `idgate run` with `config` (SPOP at `listen`) and expects it to exit with an error at
/// startup; returns its output.
fn expect_startup_failure(config: &str, listen: &Path) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("idgate.toml");
    std::fs::write(
        &config_path,
        render_config(config, &AgentAddr::Unix(listen.into()), free_addr()),
    )
    .unwrap();
    let out = Command::new(Agent::binary())
        .args(["run", "--log-format", "text", "-c"])
        .arg(&config_path)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "idgate started:\n{text}");
    text
}

#[test]
fn hello_notify_ack_over_the_unix_socket() {
    let agent = Agent::start_unix("");
    let addr = agent.spop_addr();
    let mut c = SpopClient::open_to(&addr);
    let v = c.decide(&Request::new("GET", "/api/2.0/clusters/list"));
    assert!(!v.allow());
    assert_eq!((v.status(), v.reason()), (401, "missing_token".to_string()));
    // Pipelined NOTIFYs on one connection, as HAProxy sends them.
    let mut batch = Vec::new();
    for sid in 10..20u64 {
        batch.extend_from_slice(&SpopClient::encode_notify(
            sid,
            1,
            &Request::new("GET", "/x"),
        ));
    }
    c.send_raw(&batch).unwrap();
    for _ in 10..20 {
        assert!(matches!(c.read_frame(), Ok(Frame::Ack { .. })));
    }
    // A health check is answered like over TCP.
    let mut check = SpopClient::connect_to(&addr).unwrap();
    assert!(check.healthcheck().unwrap() > 0);
    assert!(check.is_closed_within(Duration::from_secs(5)).unwrap());
    // Metrics and logs say which listener this is.
    let path = agent.spop_unix.clone().unwrap();
    let listen = format!("unix:{}", path.display());
    assert_eq!(
        agent.metric(
            "idgate_spop_listener_info",
            &[("kind", "unix"), ("address", &listen)]
        ),
        Some(1.0)
    );
    assert!(
        agent.log().contains(&listen),
        "the log does not name {listen}\n{}",
        agent.log()
    );
}

#[test]
fn socket_mode_and_group_are_as_configured() {
    // Defaults: 0660, the process's group.
    let agent = Agent::start_unix("");
    let path = agent.spop_unix.clone().unwrap();
    assert_eq!(mode_and_gid(&path), (0o660, egid()));
    drop(agent);

    // Explicit, with the primary group by number.
    let agent = Agent::start_unix(&format!(
        "[spop]\nsocket_mode = \"0600\"\nsocket_group = \"{}\"\n",
        egid()
    ));
    assert_eq!(
        mode_and_gid(agent.spop_unix.as_ref().unwrap()),
        (0o600, egid())
    );
    drop(agent);

    // Another group, by name (a supplementary group; any group as root).
    let Some((name, gid)) = other_group() else {
        eprintln!("no supplementary group: the other-group case is not tested");
        return;
    };
    let agent = Agent::start_unix(&format!(
        "[spop]\nsocket_mode = \"0660\"\nsocket_group = \"{name}\"\n"
    ));
    let path = agent.spop_unix.clone().unwrap();
    assert_eq!(mode_and_gid(&path), (0o660, gid), "group {name}");
    // And it works.
    let v = SpopClient::open_to(&agent.spop_addr()).decide(&Request::new("GET", "/x"));
    assert_eq!(v.reason(), "missing_token");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spop.sock");
    // A socket file nobody listens on (what a crashed agent leaves behind).
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    assert!(std::fs::symlink_metadata(&path)
        .unwrap()
        .file_type()
        .is_socket());
    let mut agent = Agent::start_unix_at("", &path);
    let v = SpopClient::open_to(&agent.spop_addr()).decide(&Request::new("GET", "/x"));
    assert_eq!(v.reason(), "missing_token");
    assert!(
        agent.log().contains("stale"),
        "replacing the stale socket is not logged\n{}",
        agent.log()
    );

    // A second agent must not steal the socket of a running one.
    let out = expect_startup_failure("", &path);
    assert!(out.contains("in use"), "{out}");
    assert!(SpopClient::connect_to(&agent.spop_addr()).is_ok());

    // SIGKILL leaves the file; the restarted agent replaces it.
    agent.kill();
    assert!(path.exists(), "the socket file vanished with SIGKILL");
    agent.restart();
    let v = SpopClient::open_to(&agent.spop_addr()).decide(&Request::new("GET", "/x"));
    assert_eq!(v.reason(), "missing_token");
}

#[test]
fn a_regular_file_or_a_missing_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spop.sock");
    std::fs::write(&path, "not a socket").unwrap();
    let out = expect_startup_failure("", &path);
    assert!(out.contains("regular file"), "{out}");
    assert!(out.contains(&path.display().to_string()), "{out}");
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "not a socket",
        "the file was touched"
    );

    let missing = dir.path().join("no-such-dir");
    let out = expect_startup_failure("", &missing.join("spop.sock"));
    assert!(out.contains("does not exist"), "{out}");
    assert!(out.contains(&missing.display().to_string()), "{out}");
}

#[test]
fn the_socket_file_is_removed_on_sigterm() {
    let mut agent = Agent::start_unix("");
    let path = agent.spop_unix.clone().unwrap();
    let mut c = SpopClient::open_to(&agent.spop_addr());
    assert_eq!(
        c.decide(&Request::new("GET", "/x")).reason(),
        "missing_token"
    );
    let status = agent.stop().expect("exited after SIGTERM");
    assert!(status.success(), "{status}\n{}", agent.log());
    assert!(!path.exists(), "{} is still there", path.display());
}

#[test]
fn reload_keeps_the_unix_listener_and_its_permissions() {
    let agent = Agent::start_unix("[spop]\nsocket_mode = \"0660\"\n");
    let path = agent.spop_unix.clone().unwrap();
    let before = std::fs::symlink_metadata(&path).unwrap().ino();
    agent.write_config("[spop]\nsocket_mode = \"0600\"\n");
    agent.signal("HUP");
    let warned = poll_until(READY_TIMEOUT, || {
        agent
            .log()
            .contains("spop.socket_mode/socket_group/socket_owner")
            .then_some(())
    });
    assert!(warned.is_some(), "no restart warning\n{}", agent.log());
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert_eq!((m.ino(), m.permissions().mode() & 0o777), (before, 0o660));
    let v = SpopClient::open_to(&agent.spop_addr()).decide(&Request::new("GET", "/x"));
    assert_eq!(v.reason(), "missing_token");
}
