//! The real `idgate` binary, started as `idgate run -c <file>` with a test configuration.
//!
//! The harness gives the agent free loopback ports: it inserts `listen = "127.0.0.1:<port>"`
//! right after the `[spop]` and `[admin]` table headers of the configuration (adding the tables
//! when they are missing), so test configurations need not mention ports at all. With
//! [`Agent::start_unix`] the SPOP listener is a Unix socket in the agent's temporary
//! directory instead (`listen = "unix:<dir>/spop.sock"`; [`Agent::spop_addr`] says where).
//! Output (logs and the audit log) goes to a file that failure messages quote.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{
    free_addr, http_client, poll_until, tail_file, tcp_accepts, terminate, AgentAddr, READY_TIMEOUT,
};

/// How long the agent gets to drain and exit after SIGTERM before it is killed. Above the
/// default `[spop] shutdown_grace` (10 s) so a graceful shutdown is never cut short.
pub const STOP_GRACE: Duration = Duration::from_secs(15);

/// Attempts to start when a port picked by [`free_addr`] was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// How long to wait for the admin endpoint once SPOP is up. Short: while the admin endpoint
/// does not exist yet, its absence is tolerated.
const ADMIN_WAIT: Duration = Duration::from_secs(2);

/// A running idgate. Stopped (SIGTERM, then SIGKILL) on drop.
pub struct Agent {
    /// The TCP SPOP listener (HAProxy's `IDGATE_AGENT_ADDR`). For an agent on a Unix socket
    /// ([`Agent::start_unix`]) an unused placeholder: use [`Agent::spop_addr`].
    pub spop: SocketAddr,
    /// The Unix socket, for an agent started with [`Agent::start_unix`].
    pub spop_unix: Option<PathBuf>,
    /// The admin HTTP endpoint (`/metrics`, `/live`, `/ready`).
    pub admin: SocketAddr,
    child: Child,
    config_path: PathBuf,
    log_path: PathBuf,
    exit: Option<ExitStatus>,
    /// Extra environment of the process (kept for [`Agent::restart`]).
    env: Vec<(String, String)>,
    _dir: TempDir,
}

/// `config` with `listen` set in `[spop]` and `[admin]`.
pub fn render_config(config: &str, spop: &AgentAddr, admin: SocketAddr) -> String {
    let spop = spop.idgate_listen();
    let mut out = String::with_capacity(config.len() + 128);
    let (mut saw_spop, mut saw_admin) = (false, false);
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        match line.trim() {
            "[spop]" => {
                saw_spop = true;
                out.push_str(&format!("listen = \"{spop}\"\n"));
            }
            "[admin]" => {
                saw_admin = true;
                out.push_str(&format!("listen = \"{admin}\"\n"));
            }
            _ => {}
        }
    }
    let mut head = String::new();
    if !saw_spop {
        head.push_str(&format!("[spop]\nlisten = \"{spop}\"\n\n"));
    }
    if !saw_admin {
        head.push_str(&format!("[admin]\nlisten = \"{admin}\"\n\n"));
    }
    head + &out
}

impl Agent {
    /// The `idgate` binary Cargo built for this test run.
    pub fn binary() -> &'static Path {
        Path::new(env!("CARGO_BIN_EXE_idgate"))
    }

    /// Starts `idgate run -c <config with test ports>` and waits until its SPOP listener
    /// accepts connections (and `/live` answers, once the admin endpoint exists).
    pub fn start(config: &str) -> Agent {
        Self::start_with_env(config, &[])
    }

    /// Like [`Agent::start`], with extra environment variables for the process.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Agent {
        Self::start_inner(config, env, None)
    }

    /// Like [`Agent::start`], with the SPOP listener on a Unix socket in the agent's
    /// temporary directory (`listen = "unix:<dir>/spop.sock"`). The test's `[spop]` section
    /// may set `socket_mode`, `socket_group` and so on.
    pub fn start_unix(config: &str) -> Agent {
        Self::start_inner(config, &[], Some(None))
    }

    /// Like [`Agent::start_unix`], with the socket at `path` (its directory must exist).
    pub fn start_unix_at(config: &str, path: &Path) -> Agent {
        Self::start_inner(config, &[], Some(Some(path.to_path_buf())))
    }

    /// Where the SPOP listener is: TCP or the Unix socket.
    pub fn spop_addr(&self) -> AgentAddr {
        match &self.spop_unix {
            Some(p) => AgentAddr::Unix(p.clone()),
            None => AgentAddr::Tcp(self.spop),
        }
    }

    /// `unix`: `None` TCP, `Some(None)` a Unix socket in the temporary directory,
    /// `Some(Some(path))` a Unix socket at `path`.
    fn start_inner(config: &str, env: &[(&str, &str)], unix: Option<Option<PathBuf>>) -> Agent {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("creating a temp dir");
            let (spop, admin) = (free_addr(), free_addr());
            let spop_unix = unix
                .clone()
                .map(|p| p.unwrap_or_else(|| dir.path().join("spop.sock")));
            let listen = match &spop_unix {
                Some(p) => AgentAddr::Unix(p.clone()),
                None => AgentAddr::Tcp(spop),
            };
            let config_path = dir.path().join("idgate.toml");
            std::fs::write(&config_path, render_config(config, &listen, admin))
                .expect("writing the agent config");
            let log_path = dir.path().join("idgate.log");
            let log = std::fs::File::create(&log_path).expect("creating the agent log");
            let child = Command::new(Self::binary())
                .arg("run")
                .arg("-c")
                .arg(&config_path)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("cloning a file handle"))
                .stderr(log)
                .spawn()
                .expect("starting idgate");
            let mut agent = Agent {
                spop,
                spop_unix,
                admin,
                child,
                config_path,
                log_path,
                exit: None,
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                _dir: dir,
            };
            let ready = poll_until(READY_TIMEOUT, || {
                if let Ok(Some(status)) = agent.child.try_wait() {
                    return Some(Err(status));
                }
                agent.spop_addr().accepts().then_some(Ok(()))
            });
            match ready {
                Some(Ok(())) => {
                    agent.wait_live();
                    return agent;
                }
                Some(Err(status)) => {
                    agent.exit = Some(status);
                    last_log = agent.log();
                    if last_log.contains("in use") {
                        continue; // a port was taken meanwhile: retry with fresh ones
                    }
                    panic!("idgate exited at startup ({status})\n--- idgate log ---\n{last_log}");
                }
                None => panic!(
                    "idgate's SPOP listener {listen} did not accept within {READY_TIMEOUT:?}\n--- idgate log ---\n{}",
                    agent.log()
                ),
            }
        }
        panic!("idgate could not bind its ports in {START_ATTEMPTS} attempts\n--- idgate log ---\n{last_log}");
    }

    /// Once the admin endpoint accepts connections, `/live` must say 200. If it does not
    /// listen at all within a short bound it is assumed not to exist (yet).
    fn wait_live(&self) {
        if poll_until(ADMIN_WAIT, || tcp_accepts(self.admin).then_some(())).is_none() {
            return;
        }
        let live = poll_until(READY_TIMEOUT, || {
            let resp = http_client().get(self.admin_url("/live")).send().ok()?;
            (resp.status() == 200).then_some(())
        });
        assert!(
            live.is_some(),
            "idgate's /live at {} never answered 200\n--- idgate log ---\n{}",
            self.admin,
            self.log()
        );
    }

    /// `http://<admin><path>`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// True if `GET /ready` answers 200 now.
    pub fn is_ready(&self) -> bool {
        http_client()
            .get(self.admin_url("/ready"))
            .send()
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    }

    /// Waits until `/ready` says 200 (every issuer's keys loaded); false on timeout.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        poll_until(timeout, || self.is_ready().then_some(())).is_some()
    }

    /// The Prometheus text from `/metrics`.
    pub fn metrics(&self) -> String {
        http_client()
            .get(self.admin_url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .unwrap_or_else(|e| panic!("GET /metrics: {e}\n--- idgate log ---\n{}", self.log()))
    }

    /// The configuration file the agent runs with (rewrite it, then [`Agent::signal`]
    /// `"HUP"`, to test reloads).
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// Replaces the configuration file, keeping the agent's ports.
    pub fn write_config(&self, config: &str) {
        std::fs::write(
            &self.config_path,
            render_config(config, &self.spop_addr(), self.admin),
        )
        .expect("rewriting the agent config");
    }

    /// Sends a signal by name (`"HUP"`, `"TERM"`, `"INT"`) through kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {} failed", self.child.id());
    }

    /// Everything the agent wrote so far (logs and audit lines).
    pub fn log(&self) -> String {
        tail_file(&self.log_path, 64 * 1024)
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Stops the agent: SIGTERM, then SIGKILL after [`STOP_GRACE`]. Returns the exit status
    /// (a killed-by-SIGKILL status if the grace period ran out). Idempotent.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = terminate(&mut self.child, STOP_GRACE);
            if self.exit.is_none() {
                // Killed: remember that it is gone so a second stop does not signal a
                // recycled PID.
                self.exit = self.child.try_wait().ok().flatten();
            }
        }
        self.exit
    }
}

impl Agent {
    /// Kills the agent with SIGKILL (no drain, no AGENT-DISCONNECT: a crash) and reaps it.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_exit_status().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
        self.exit
    }

    /// Starts the agent again after it exited (or was killed), on the same ports with the
    /// same configuration file, appending to the same log, and waits until its SPOP listener
    /// accepts connections. Panics if it is still running.
    pub fn restart(&mut self) {
        assert!(
            self.try_exit_status().is_some(),
            "restart: the agent (pid {}) is still running",
            self.child.id()
        );
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("opening the agent log");
        self.child = Command::new(Self::binary())
            .arg("run")
            .arg("-c")
            .arg(&self.config_path)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log)
            .spawn()
            .expect("restarting idgate");
        self.exit = None;
        let ready = poll_until(READY_TIMEOUT, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(Err(status));
            }
            self.spop_addr().accepts().then_some(Ok(()))
        });
        match ready {
            Some(Ok(())) => self.wait_live(),
            Some(Err(status)) => {
                self.exit = Some(status);
                panic!(
                    "idgate exited at restart ({status})\n--- idgate log ---\n{}",
                    self.log()
                );
            }
            None => panic!(
                "restarted idgate did not accept on {} within {READY_TIMEOUT:?}\n--- idgate log ---\n{}",
                self.spop_addr(),
                self.log()
            ),
        }
    }

    /// One sample of `/metrics` (see [`super::metric_value`]); `None` if absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        super::metric_value(&self.metrics(), name, labels)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}
