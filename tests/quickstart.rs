//! `./quickstart.sh --check`, the README's first command in its non-interactive form: it brings
//! up the whole local demo (OIDC provider, idgate, the shipped HAProxy configuration on 2.6 and
//! on 3.4, the fake Databricks echo with the data plane of a route-optimized endpoint and a DNS
//! server), runs the commands it prints for humans, and checks their results.
//!
//! Here it runs with the debug binary cargo built for the tests (IDGATE_BIN, so no release
//! build) and with free ports instead of its defaults (QS_*_PORT), so it cannot collide with
//! other tests or a demo someone is running. Afterwards nothing it started may be left: no
//! listener on its ports, no process mentioning its run directory, no run directory.
//!
//! Needs HAProxy 2.6 and 3.4 (a test failure without them, as everywhere in the suite) and node
//! (as the other OIDC tests: IDGATE_SKIP_OIDC=1 skips them on machines without node).

mod support;

use support::oidc;

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::haproxy::HaproxyVersion;
use support::{free_port, poll_until, repo_path, tcp_accepts, terminate};

/// Bound on one whole `--check` run. It normally takes a few seconds; the script's own
/// readiness waits are 30 s per component, and the brief's target for the demo being up is
/// two minutes on a slow machine.
const CHECK_TIMEOUT: Duration = Duration::from_secs(180);

/// Bound on a run that must stop before starting anything (bad port).
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(60);

/// The demo must be up (every component ready) within this long after the build.
const MAX_UP_SECONDS: f64 = 120.0;

/// SIGTERM grace for a script that overran its timeout (its trap then stops its children).
const STOP_GRACE: Duration = Duration::from_secs(10);

/// The steps `--check` reports, by their numbers (each must PASS).
const STEPS: [&str; 9] = ["1a", "1b", "2a", "2b", "3", "4", "5", "6", "7"];

/// The port variables of quickstart.sh (QS_DNS_PORT is UDP, the others TCP).
const PORT_VARS: [&str; 9] = [
    "QS_GATEWAY_PORT",
    "QS_HAPROXY_STATS_PORT",
    "QS_SPOP_PORT",
    "QS_ADMIN_PORT",
    "QS_OIDC_PORT",
    "QS_DATABRICKS_PORT",
    "QS_DATABRICKS_TOKEN_PORT",
    "QS_DATAPLANE_PORT",
    "QS_DNS_PORT",
];

/// Distinct free ports, one per [`PORT_VARS`] (free for TCP; the script itself checks that the
/// DNS port is free for UDP).
fn free_ports() -> Vec<u16> {
    let mut ports = BTreeSet::new();
    let picked = poll_until(Duration::from_secs(5), || {
        ports.insert(free_port());
        (ports.len() == PORT_VARS.len()).then_some(())
    });
    assert!(picked.is_some(), "could not find distinct free ports");
    ports.into_iter().collect()
}

/// A `quickstart.sh` command with a clean environment: no QS_* from the caller, the test
/// binary, the given HAProxy, and a private TMPDIR (where the script makes its run directory).
fn quickstart(haproxy: &Path, tmp: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(repo_path("quickstart.sh"));
    cmd.args(args);
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("QS_")) {
            cmd.env_remove(key);
        }
    }
    cmd.env("IDGATE_BIN", env!("CARGO_BIN_EXE_idgate"))
        .env("QS_HAPROXY", haproxy)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to completion within `timeout` (SIGTERM, then SIGKILL, after it), collecting
/// its output.
fn run_bounded(mut cmd: Command, timeout: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("starting quickstart.sh");
    let mut out_pipe = child.stdout.take().expect("stdout is piped");
    let mut err_pipe = child.stderr.take().expect("stderr is piped");
    // Drain both pipes while waiting, so a chatty script cannot block on a full pipe.
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out_pipe.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err_pipe.read_to_end(&mut buf);
        buf
    });
    let status = poll_until(timeout, || child.try_wait().ok().flatten());
    let status = match status {
        Some(s) => s,
        None => {
            terminate(&mut child, STOP_GRACE);
            let out = String::from_utf8_lossy(&out_reader.join().unwrap_or_default()).into_owned();
            let err = String::from_utf8_lossy(&err_reader.join().unwrap_or_default()).into_owned();
            panic!("quickstart.sh did not finish within {timeout:?}\n--- stdout ---\n{out}\n--- stderr ---\n{err}");
        }
    };
    let output = Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    };
    (output, started.elapsed())
}

/// Processes whose command line mentions `needle` (the run directory is in idgate's and the
/// fake Databricks' arguments). Read from /proc: no pkill/pgrep, nothing is signalled.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|raw| String::from_utf8_lossy(&raw).replace('\0', " "))
        .filter(|cmdline| cmdline.contains(needle))
        .collect()
}

/// "demo up in 2.4 s" -> 2.4
fn up_seconds(stdout: &str) -> Option<f64> {
    let rest = stdout.split("demo up in ").nth(1)?;
    rest.split(" s").next()?.trim().parse().ok()
}

#[test]
fn quickstart_check_passes_every_step_and_leaves_nothing_running() {
    check_passes_every_step(HaproxyVersion::V26, "HAProxy 2.6, haproxy/haproxy.cfg");
}

/// The same on HAProxy 3.4, where the script picks haproxy-3.x.cfg.
#[test]
fn quickstart_check_passes_on_haproxy34() {
    check_passes_every_step(HaproxyVersion::V34, "HAProxy 3.4, haproxy/haproxy-3.x.cfg");
}

/// `--check` on `version`: every step passes, the script says which configuration it ran
/// (`config`), and nothing is left behind.
fn check_passes_every_step(version: HaproxyVersion, config: &str) {
    let Some(haproxy) = version.require() else {
        return;
    };
    if oidc::skip() {
        return;
    }
    let tmp = tempfile::tempdir().expect("temp dir");
    let ports = free_ports();
    let mut cmd = quickstart(&haproxy, tmp.path(), &["--check"]);
    for (var, port) in PORT_VARS.iter().zip(&ports) {
        cmd.env(var, port.to_string());
    }

    let (out, took) = run_bounded(cmd, CHECK_TIMEOUT);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = format!("--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}");
    eprintln!("quickstart.sh --check took {took:?}\n{context}");

    assert!(
        out.status.success(),
        "exit status {}\n{context}",
        out.status
    );
    assert!(
        stdout.contains(config) || stderr.contains(config),
        "not run with {config}\n{context}"
    );
    for step in STEPS {
        let prefix = format!("PASS  {step} ");
        assert!(
            stdout.lines().any(|l| l.starts_with(&prefix)),
            "no `{prefix}` line\n{context}"
        );
    }
    assert!(
        !stdout.lines().any(|l| l.starts_with("FAIL")),
        "a step failed\n{context}"
    );
    assert!(
        stdout.contains(&format!("{} passed, 0 failed", STEPS.len())),
        "no summary line\n{context}"
    );
    let up = up_seconds(&stdout).unwrap_or_else(|| panic!("no `demo up in` time\n{context}"));
    assert!(
        up < MAX_UP_SECONDS,
        "the demo took {up} s to come up\n{context}"
    );

    // Nothing left behind.
    for (var, port) in PORT_VARS.iter().zip(&ports) {
        let addr = SocketAddr::from(([127, 0, 0, 1], *port));
        if *var == "QS_DNS_PORT" {
            assert!(
                std::net::UdpSocket::bind(addr).is_ok(),
                "something still holds UDP {addr}\n{context}"
            );
        } else {
            assert!(
                !tcp_accepts(addr),
                "something still listens on {addr}\n{context}"
            );
        }
    }
    let tmp_str = tmp.path().to_str().expect("temp path is UTF-8");
    let left = processes_mentioning(tmp_str);
    assert!(left.is_empty(), "processes left running: {left:?}");
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("reading the temp dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        leftovers.is_empty(),
        "run directory not removed: {leftovers:?}"
    );
}

#[test]
fn quickstart_refuses_an_explicit_port_that_is_taken() {
    let Some(haproxy) = HaproxyVersion::V26.require() else {
        return;
    };
    if oidc::skip() {
        return;
    }
    // Holding the port: the script must stop before starting anything, and say why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("local addr").port();
    let tmp = tempfile::tempdir().expect("temp dir");
    let mut cmd = quickstart(&haproxy, tmp.path(), &["--check"]);
    for (var, p) in PORT_VARS.iter().zip(free_ports()) {
        cmd.env(var, p.to_string());
    }
    cmd.env("QS_GATEWAY_PORT", port.to_string());

    let (out, _) = run_bounded(cmd, REFUSAL_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "QS_GATEWAY_PORT={port}: 127.0.0.1:{port} (HAProxy frontend) is already in use"
        )),
        "no clear message:\n{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("PASS"),
        "it ran the checks anyway"
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("reading the temp dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(
        leftovers.is_empty(),
        "it created a run directory: {leftovers:?}"
    );
}
