//! HAProxy under test: the four supported versions, running the shipped configuration.
//!
//! The files in `haproxy/` take every deployment parameter from an environment variable with
//! a default (`presetenv` in their `global` section). The harness runs them unchanged and sets
//! those variables to loopback ports, the echo upstream and its test CA, so the tests exercise
//! exactly what ships: rules, TLS re-encryption with verification, SPOE settings.
//!
//! Binaries: `IDGATE_HAPROXY26` (default `haproxy` on PATH), `IDGATE_HAPROXY30`,
//! `IDGATE_HAPROXY32` and `IDGATE_HAPROXY34` (defaults `haproxy30`, `haproxy32`, `haproxy34`, see
//! scripts/install-haproxy.sh). A test that needs a missing one FAILS, always: a broken install
//! can never turn into a silently green run.
//!
//! Which tests run where (docs/haproxy-versions.md): the whole end-to-end suite on 2.6 and 3.4
//! (the oldest and the newest, one of each agent-connection architecture); a compatibility subset
//! on all four (see [`haproxy_tests!`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{
    free_addr, http_client, poll_until, repo_path, tail_file, tcp_accepts, terminate, AgentAddr,
    READY_TIMEOUT,
};

/// How long HAProxy gets to exit after SIGTERM (a hard stop; it exits at once normally).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Attempts to start HAProxy when a port picked by [`free_addr`] was taken meanwhile.
const START_ATTEMPTS: usize = 3;

/// The HAProxy versions idgate supports, each with its configuration file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HaproxyVersion {
    /// 2.6 (Debian bookworm): SPOE applets, `mode tcp` agent backend, haproxy.cfg.
    V26,
    /// 3.0 (Debian trixie): still SPOE applets (no SPOP multiplexer), haproxy.cfg.
    V30,
    /// 3.2 (Debian sid): SPOP multiplexer, `mode spop` agent backend, haproxy-3.x.cfg.
    V32,
    /// 3.4 (Debian experimental, the latest stable line): as 3.2, haproxy-3.x.cfg.
    V34,
}

impl HaproxyVersion {
    pub const ALL: [HaproxyVersion; 4] = [
        HaproxyVersion::V26,
        HaproxyVersion::V30,
        HaproxyVersion::V32,
        HaproxyVersion::V34,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HaproxyVersion::V26 => "HAProxy 2.6",
            HaproxyVersion::V30 => "HAProxy 3.0",
            HaproxyVersion::V32 => "HAProxy 3.2",
            HaproxyVersion::V34 => "HAProxy 3.4",
        }
    }

    /// The environment variable naming the binary.
    pub fn env_var(self) -> &'static str {
        match self {
            HaproxyVersion::V26 => "IDGATE_HAPROXY26",
            HaproxyVersion::V30 => "IDGATE_HAPROXY30",
            HaproxyVersion::V32 => "IDGATE_HAPROXY32",
            HaproxyVersion::V34 => "IDGATE_HAPROXY34",
        }
    }

    fn default_binary(self) -> &'static str {
        match self {
            HaproxyVersion::V26 => "haproxy",
            HaproxyVersion::V30 => "haproxy30",
            HaproxyVersion::V32 => "haproxy32",
            HaproxyVersion::V34 => "haproxy34",
        }
    }

    /// What `haproxy -v`'s first line must start with.
    fn version_prefix(self) -> &'static str {
        match self {
            HaproxyVersion::V26 => "HAProxy version 2.6.",
            HaproxyVersion::V30 => "HAProxy version 3.0.",
            HaproxyVersion::V32 => "HAProxy version 3.2.",
            HaproxyVersion::V34 => "HAProxy version 3.4.",
        }
    }

    /// True when this version runs haproxy.cfg (2.6 and 3.0: no SPOP multiplexer and no
    /// `option http-drop-request-trailers`, so the gateway speaks HTTP/1.1 only and refuses
    /// chunked request bodies), false for haproxy-3.x.cfg (3.2 and later).
    pub fn runs_haproxy_cfg(self) -> bool {
        matches!(self, HaproxyVersion::V26 | HaproxyVersion::V30)
    }

    /// The shipped haproxy.cfg for this version.
    pub fn config_file(self) -> PathBuf {
        if self.runs_haproxy_cfg() {
            repo_path("haproxy/haproxy.cfg")
        } else {
            repo_path("haproxy/haproxy-3.x.cfg")
        }
    }

    /// The binary, if installed. Panics if it exists but is another version: a misconfigured
    /// environment must not make one version's tests run against the other.
    pub fn locate(self) -> Option<PathBuf> {
        let name = std::env::var_os(self.env_var())
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| self.default_binary().into());
        let path = find_executable(Path::new(&name))?;
        let out = Command::new(&path)
            .arg("-v")
            .output()
            .unwrap_or_else(|e| panic!("running {} -v: {e}", path.display()));
        let text = String::from_utf8_lossy(&out.stdout);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with(self.version_prefix()),
            "{} ({}) is not {}: it says {first:?}",
            path.display(),
            self.env_var(),
            self.label()
        );
        Some(path)
    }

    /// The binary. A missing HAProxy is a test FAILURE, never a silent pass: the suite's one
    /// policy (scripts/test.sh and CI install all four versions; run scripts/ci-deps.sh as
    /// root, or point `IDGATE_HAPROXY26`/`30`/`32`/`34` at the binaries). Returns `Option` so
    /// callers read `let Some(bin) = version.require() else { return };`, but never `None`.
    pub fn require(self) -> Option<PathBuf> {
        if let Some(path) = self.locate() {
            return Some(path);
        }
        panic!(
            "{} binary not found: set {} or run scripts/ci-deps.sh (installs HAProxy 2.6, 3.0, 3.2 and 3.4)",
            self.label(),
            self.env_var()
        );
    }
}

fn find_executable(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Where HAProxy sends allowed requests (the stand-in for the Databricks workspace).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Address HAProxy connects to (`IDGATE_DATABRICKS_ADDR`).
    pub addr: SocketAddr,
    /// Name used for Host, SNI and certificate verification (`IDGATE_DATABRICKS_HOST`).
    pub host: String,
    /// CA bundle that verifies the upstream's certificate (`IDGATE_DATABRICKS_CA_FILE`).
    pub ca_file: PathBuf,
}

/// Values for the configuration's environment variables.
#[derive(Debug, Clone)]
pub struct Params {
    pub frontend: SocketAddr,
    pub stats: SocketAddr,
    /// The idgate agent: TCP, or a Unix socket (`unix@/path` on the `server` line).
    pub agent: AgentAddr,
    pub upstream: Upstream,
    pub stats_socket: PathBuf,
    /// More configuration variables (e.g. `IDGATE_SERVING_RATE_LIMIT`), applied last.
    pub extra_env: Vec<(&'static str, String)>,
}

impl Params {
    /// The variables documented at the top of haproxy/haproxy.cfg.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("IDGATE_FRONTEND_BIND", self.frontend.to_string()),
            ("IDGATE_STATS_BIND", self.stats.to_string()),
            ("IDGATE_AGENT_ADDR", self.agent.haproxy_server()),
            (
                "IDGATE_SPOE_CONF",
                repo_path("haproxy/idgate.spoe.conf").display().to_string(),
            ),
            ("IDGATE_DATABRICKS_HOST", self.upstream.host.clone()),
            ("IDGATE_DATABRICKS_ADDR", self.upstream.addr.to_string()),
            (
                "IDGATE_DATABRICKS_CA_FILE",
                self.upstream.ca_file.display().to_string(),
            ),
            (
                "IDGATE_STATS_SOCKET",
                self.stats_socket.display().to_string(),
            ),
            ("IDGATE_HAPROXY_LOG", "stderr".to_string()),
        ];
        // The shipped config chroots and drops to user `haproxy` (as a production setup
        // should); that needs root and the user. Elsewhere run unprivileged.
        if !runs_privileged() {
            env.push(("IDGATE_HAPROXY_UNPRIVILEGED", "1".to_string()));
        }
        env.extend(self.extra_env.iter().cloned());
        env
    }

    fn apply(&self, cmd: &mut Command) {
        // Start from a known state: nothing from the caller's environment may change the
        // rendered configuration.
        for (key, _) in std::env::vars_os() {
            if let Some(k) = key.to_str() {
                if k.starts_with("IDGATE_") {
                    cmd.env_remove(k);
                }
            }
        }
        cmd.envs(self.env());
    }
}

/// True when the harness runs the shipped configuration as production does: started as root,
/// chrooted to /var/lib/haproxy and running as user `haproxy` (else it runs unprivileged,
/// without chroot).
pub fn runs_privileged() -> bool {
    super::running_as_root() && haproxy_user_exists()
}

/// HAProxy's chroot in the shipped configuration.
pub const CHROOT: &str = "/var/lib/haproxy";

/// A directory for an idgate Unix socket that HAProxy, as this harness runs it, can reach.
///
/// HAProxy connects to a `unix@` server after it has chrooted and dropped its privileges, so
/// the path on the `server` line is resolved inside the chroot and the socket must let user
/// `haproxy` connect. Privileged (see [`runs_privileged`]): the directory is created inside
/// the chroot, group `haproxy`, mode 0750, and the agent should set `socket_group =
/// "haproxy"` ([`AgentSocketDir::socket_group`]); HAProxy's address is the path as seen from
/// inside the chroot. Unprivileged: a plain temporary directory, the same path for both.
pub struct AgentSocketDir {
    _dir: TempDir,
    /// The path idgate binds (`[spop] listen = "unix:<agent_path>"`).
    pub agent_path: PathBuf,
    /// What HAProxy's `server` line gets (`IDGATE_AGENT_ADDR = unix@...`).
    pub haproxy_addr: AgentAddr,
    /// The `socket_group` the agent needs so that HAProxy may connect, if any.
    pub socket_group: Option<&'static str>,
}

impl AgentSocketDir {
    pub fn new() -> AgentSocketDir {
        if !runs_privileged() {
            let dir = tempfile::tempdir().expect("creating a temp dir");
            let path = dir.path().join("spop.sock");
            return AgentSocketDir {
                _dir: dir,
                agent_path: path.clone(),
                haproxy_addr: AgentAddr::Unix(path),
                socket_group: None,
            };
        }
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::Builder::new()
            .prefix("idgate-test-")
            .tempdir_in(CHROOT)
            .expect("creating a temp dir in HAProxy's chroot");
        let gid = std::fs::read_to_string("/etc/group")
            .ok()
            .and_then(|g| {
                g.lines()
                    .find(|l| l.starts_with("haproxy:"))
                    .and_then(|l| l.split(':').nth(2)?.parse().ok())
            })
            .expect("group haproxy");
        std::os::unix::fs::chown(dir.path(), None, Some(gid)).expect("chgrp haproxy");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750))
            .expect("chmod 0750");
        let path = dir.path().join("spop.sock");
        let inside = Path::new("/").join(path.strip_prefix(CHROOT).expect("under the chroot"));
        AgentSocketDir {
            _dir: dir,
            agent_path: path,
            haproxy_addr: AgentAddr::Unix(inside),
            socket_group: Some("haproxy"),
        }
    }
}

impl Default for AgentSocketDir {
    fn default() -> Self {
        AgentSocketDir::new()
    }
}

fn haproxy_user_exists() -> bool {
    std::fs::read_to_string("/etc/passwd")
        .map(|p| p.lines().any(|l| l.starts_with("haproxy:")))
        .unwrap_or(false)
}

/// Runs `haproxy -c -f <cfg>` with `params` and returns its output.
pub fn check_config(bin: &Path, cfg: &Path, params: &Params) -> Output {
    let mut cmd = Command::new(bin);
    cmd.arg("-c").arg("-f").arg(cfg);
    params.apply(&mut cmd);
    cmd.output()
        .unwrap_or_else(|e| panic!("running {} -c: {e}", bin.display()))
}

/// A running HAProxy with the shipped configuration. Stopped on drop.
pub struct Haproxy {
    pub version: HaproxyVersion,
    pub params: Params,
    bin: PathBuf,
    child: Child,
    log_path: PathBuf,
    _dir: TempDir,
}

impl Haproxy {
    /// Starts HAProxy in front of `agent` and `upstream` and waits until it serves and its
    /// health check sees the agent UP.
    pub fn start(
        version: HaproxyVersion,
        bin: &Path,
        agent: impl Into<AgentAddr>,
        upstream: &Upstream,
    ) -> Haproxy {
        Self::start_with_env_args(version, bin, agent, upstream, &[], &[])
    }

    /// [`Haproxy::start`] with more configuration variables (`extra_env`) and extra
    /// command-line arguments (`args`), e.g. `-W` for master-worker mode (as systemd runs it
    /// with `-Ws`), so that [`Haproxy::reload`] can reload it the production way.
    pub fn start_with_env_args(
        version: HaproxyVersion,
        bin: &Path,
        agent: impl Into<AgentAddr>,
        upstream: &Upstream,
        extra_env: &[(&'static str, &str)],
        args: &[&str],
    ) -> Haproxy {
        let agent = agent.into();
        let hap = Self::spawn(version, bin, &agent, upstream, extra_env, args);
        assert!(
            hap.wait_agent_up(true, READY_TIMEOUT),
            "{}: the idgate agent at {agent} never became UP\n--- haproxy log ---\n{}",
            version.label(),
            hap.log()
        );
        hap
    }

    /// Starts HAProxy and waits until its frontend and operations endpoint accept
    /// connections, whatever the agent's state.
    pub fn start_without_agent(
        version: HaproxyVersion,
        bin: &Path,
        agent: impl Into<AgentAddr>,
        upstream: &Upstream,
    ) -> Haproxy {
        Self::spawn(version, bin, &agent.into(), upstream, &[], &[])
    }

    /// Reloads a master-worker HAProxy (started with `-W`): SIGUSR2 to the master (what `systemctl reload haproxy`
    /// does), then waits until the master reports the new worker loaded. The old worker
    /// finishes its requests in the background.
    pub fn reload(&self) {
        // Counted over the whole log: the access log quickly pushes these lines out of the
        // tail that `log()` returns.
        let done = || {
            std::fs::read_to_string(&self.log_path)
                .map(|log| log.matches("Loading success").count())
                .unwrap_or(0)
        };
        let before = done();
        let status = Command::new("kill")
            .args(["-USR2", &self.child.id().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -USR2 {} failed", self.child.id());
        assert!(
            poll_until(READY_TIMEOUT, || (done() > before).then_some(())).is_some(),
            "{}: reload did not complete\n--- haproxy log ---\n{}",
            self.version.label(),
            self.log()
        );
    }

    /// Reloads by replacement, the way of setups without the master-worker mode: a new
    /// process takes over the listening sockets from the running one through its stats socket
    /// (`-x`, which the shipped `expose-fd listeners` allows) and tells it to finish its
    /// requests and exit (`-sf <pid>`). Waits until the old process has exited and the new
    /// one serves. (HAProxy 3.x here is run through a loader wrapper, which its master could
    /// not re-exec for a master-worker reload.)
    pub fn reload_sf(&mut self) {
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.log_path)
            .expect("opening the haproxy log");
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-db")
            .arg("-f")
            .arg(self.version.config_file())
            .arg("-x")
            .arg(&self.params.stats_socket)
            .arg("-sf")
            .arg(self.child.id().to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning a file handle"))
            .stderr(log);
        self.params.apply(&mut cmd);
        let new = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.display()));
        let mut old = std::mem::replace(&mut self.child, new);
        if poll_until(READY_TIMEOUT, || old.try_wait().ok().flatten()).is_none() {
            let _ = old.kill();
            let _ = old.wait();
            panic!(
                "{}: the old process did not exit after -sf\n--- haproxy log ---\n{}",
                self.version.label(),
                self.log()
            );
        }
        assert!(
            matches!(self.child.try_wait(), Ok(None)) && tcp_accepts(self.params.frontend),
            "{}: the new process is not serving\n--- haproxy log ---\n{}",
            self.version.label(),
            self.log()
        );
    }

    /// Starts HAProxy with extra command-line arguments and waits until its frontend and
    /// operations endpoint accept connections.
    pub fn start_with_args(
        version: HaproxyVersion,
        bin: &Path,
        agent: impl Into<AgentAddr>,
        upstream: &Upstream,
        args: &[&str],
    ) -> Haproxy {
        Self::spawn(version, bin, &agent.into(), upstream, &[], args)
    }

    fn spawn(
        version: HaproxyVersion,
        bin: &Path,
        agent: &AgentAddr,
        upstream: &Upstream,
        extra_env: &[(&'static str, &str)],
        args: &[&str],
    ) -> Haproxy {
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let dir = tempfile::tempdir().expect("creating a temp dir");
            let params = Params {
                frontend: free_addr(),
                stats: free_addr(),
                agent: agent.clone(),
                upstream: upstream.clone(),
                stats_socket: dir.path().join("admin.sock"),
                extra_env: extra_env.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            };
            let log_path = dir.path().join("haproxy.log");
            let log = std::fs::File::create(&log_path).expect("creating the haproxy log");
            let mut cmd = Command::new(bin);
            cmd.arg("-db")
                .args(args)
                .arg("-f")
                .arg(version.config_file())
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("cloning a file handle"))
                .stderr(log);
            params.apply(&mut cmd);
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
            let mut hap = Haproxy {
                version,
                params,
                bin: bin.to_path_buf(),
                child,
                log_path,
                _dir: dir,
            };
            let up = poll_until(READY_TIMEOUT, || {
                if let Ok(Some(status)) = hap.child.try_wait() {
                    return Some(Err(status));
                }
                (tcp_accepts(hap.params.frontend) && tcp_accepts(hap.params.stats))
                    .then_some(Ok(()))
            });
            match up {
                Some(Ok(())) => return hap,
                Some(Err(status)) => {
                    last_log = hap.log();
                    if last_log.contains("cannot bind")
                        || last_log.contains("Address already in use")
                    {
                        continue; // a port was taken meanwhile: retry with fresh ones
                    }
                    panic!(
                        "{} exited at startup ({status})\n--- haproxy log ---\n{last_log}",
                        version.label()
                    );
                }
                None => panic!(
                    "{} did not listen within {READY_TIMEOUT:?}\n--- haproxy log ---\n{}",
                    version.label(),
                    hap.log()
                ),
            }
        }
        panic!(
            "{} could not bind its ports in {START_ATTEMPTS} attempts\n--- haproxy log ---\n{last_log}",
            version.label()
        );
    }

    /// `http://<frontend><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.params.frontend)
    }

    /// `http://<operations endpoint><path>` (`/ready`, `/metrics`, `/stats`).
    pub fn stats_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.params.stats)
    }

    /// True if HAProxy currently considers at least one idgate agent UP (GET /ready).
    pub fn agent_up(&self) -> bool {
        http_client()
            .get(self.stats_url("/ready"))
            .send()
            .map(|r| r.status() == 200)
            .unwrap_or(false)
    }

    /// Waits until the agent's health-check state is `up`; false on timeout.
    pub fn wait_agent_up(&self, up: bool, timeout: Duration) -> bool {
        poll_until(timeout, || (self.agent_up() == up).then_some(())).is_some()
    }

    /// Runs one command on HAProxy's runtime API (the stats socket), e.g.
    /// `show table databricks_serving` or `show servers state idgate_agents`.
    pub fn runtime_api(&self, command: &str) -> String {
        use std::io::{Read, Write};
        let mut sock = std::os::unix::net::UnixStream::connect(&self.params.stats_socket)
            .unwrap_or_else(|e| {
                panic!("connecting to {}: {e}", self.params.stats_socket.display())
            });
        sock.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("socket timeout");
        sock.write_all(format!("{command}\n").as_bytes())
            .expect("writing to the runtime API");
        let mut out = String::new();
        // Non-interactive mode: HAProxy answers and closes the connection.
        sock.read_to_string(&mut out)
            .expect("reading the runtime API");
        out
    }

    /// HAProxy's output so far (its alerts and, through `log stderr`, the access log).
    pub fn log(&self) -> String {
        tail_file(&self.log_path, 64 * 1024)
    }

    /// Stops HAProxy now (SIGTERM, then SIGKILL after a bound).
    pub fn stop(&mut self) {
        terminate(&mut self.child, STOP_GRACE);
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Defines a test target's per-version tests, one module per HAProxy version
/// (`haproxy26::scenario`, ...), each test calling `scenario(version)` from the target's root.
///
/// `full` scenarios run on 2.6 and 3.4, the oldest and the newest supported line, one per
/// agent-connection architecture (SPOE applets, SPOP multiplexer) and per configuration file;
/// `compat` scenarios on all four versions. The compatibility subset is what can differ between HAProxy versions with the
/// same configuration: the SPOP handshake and health check, allow/deny/fail-closed, identity
/// header stripping and request parsing, upstream credential injection, the agent's transports
/// (docs/haproxy-versions.md lists the tests). The rest exercises idgate itself, which no
/// HAProxy version changes, and runs on the oldest and the newest line only.
#[macro_export]
macro_rules! haproxy_tests {
    (@module $module:ident, $version:ident, $($scenario:ident),* $(,)?) => {
        mod $module {
            $(
                #[test]
                fn $scenario() {
                    super::$scenario($crate::support::haproxy::HaproxyVersion::$version)
                }
            )*
        }
    };
    (full: [$($full:ident),* $(,)?] $(,)?) => {
        $crate::haproxy_tests!(@module haproxy26, V26, $($full),*);
        $crate::haproxy_tests!(@module haproxy34, V34, $($full),*);
    };
    (full: [$($full:ident),* $(,)?], compat: [$($compat:ident),* $(,)?] $(,)?) => {
        $crate::haproxy_tests!(@module haproxy26, V26, $($full,)* $($compat),*);
        $crate::haproxy_tests!(@module haproxy30, V30, $($compat),*);
        $crate::haproxy_tests!(@module haproxy32, V32, $($compat),*);
        $crate::haproxy_tests!(@module haproxy34, V34, $($full,)* $($compat),*);
    };
}
