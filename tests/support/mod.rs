//! The integration-test harness shared by every `tests/*.rs` target.
//!
//! - [`agent`]: the real `idgate` binary started with a test configuration.
//! - [`haproxy`]: HAProxy 2.6 and 3.2 running the *shipped* `haproxy/` configuration, pointed
//!   at loopback ports through its environment variables (no text substitution).
//! - [`echo`]: a TLS upstream that stands in for Databricks and records what it receives.
//! - [`databricks`]: a fake Databricks: token endpoint, serving-endpoint API, workspace and
//!   data plane over TLS (async; needs a Tokio runtime).
//! - [`dns`]: a fake DNS server for HAProxy's resolver (data-plane names to 127.0.0.1).
//! - [`introspection`]: a fake RFC 7662 introspection endpoint with Okta and Keycloak faces (async).
//! - [`oidc`]: the real `oidc-provider` test IdP of tests/oidc (async).
//! - [`auth_kit`]: JWT signing keys and a local JWKS server for token-level tests.
//! - [`idp_tokens`]: tokens shaped as Entra ID, Okta, Keycloak, Auth0, Google and GitHub issue them.
//! - [`stack`]: the one stack builder: idgate + an upstream + HAProxy (e2e and fault tests).
//! - [`peers`]: several agents behind one HAProxy, several HAProxy nodes sharing limits (peers).
//! - [`forged`]: forged identity headers and the assertions that none reaches the upstream.
//! - [`sdk`]: the Databricks SDK for Python and MLflow as clients (tests/python).
//! - [`spop_client`]: the one SPOP client (HAProxy's side), blocking and async.
//! - [`foundation`]: a stand-in decision that never allows (tests of the SPOP shell, fuzzing).
//! - [`fleet`]: agents sharing a revocation store, tokens, `idgate revoke`.
//! - [`redis`]: a real `redis-server` on a loopback port, with fault injection.
//!
//! Everything binds to 127.0.0.1, every wait is a bounded readiness poll, and every process
//! or server is stopped when its handle is dropped (also when a test panics).
//!
//! Each test target compiles this module separately and uses a different part of it.
#![allow(dead_code)]

pub mod agent;
pub mod auth_kit;
pub mod databricks;
pub mod dns;
pub mod echo;
pub mod fleet;
pub mod forged;
pub mod foundation;
pub mod haproxy;
pub mod idp_tokens;
pub mod introspection;
pub mod oidc;
pub mod peers;
pub mod redis;
pub mod sdk;
pub mod spop_client;
pub mod stack;
pub mod traffic;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long any harness readiness wait may take before the test fails. Generous because CI
/// has two cores shared by parallel test processes, and a wait normally ends in milliseconds.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between two readiness probes: short enough not to slow tests down, long enough not
/// to burn a core while a process starts.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A TCP port on 127.0.0.1 that was free a moment ago (bind :0, read, close).
///
/// Another process can take it before it is used: the starters in this module retry with a
/// fresh port when a child fails to bind.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// `127.0.0.1:<free port>`.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A path relative to the repository root (the crate's manifest directory).
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Where an idgate agent's SPOP listener is: what the agent's `[spop] listen` says and what
/// HAProxy's `server idgate1 "${IDGATE_AGENT_ADDR}"` line gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentAddr {
    Tcp(SocketAddr),
    /// A Unix socket (absolute path).
    Unix(PathBuf),
}

impl AgentAddr {
    /// The value of idgate's `[spop] listen`: `ip:port` or `unix:/path`.
    pub fn idgate_listen(&self) -> String {
        match self {
            AgentAddr::Tcp(a) => a.to_string(),
            AgentAddr::Unix(p) => format!("unix:{}", p.display()),
        }
    }

    /// The address for HAProxy's `server` line (`IDGATE_AGENT_ADDR`): `ip:port` or
    /// `unix@/path` (HAProxy's prefix for a Unix stream socket).
    pub fn haproxy_server(&self) -> String {
        match self {
            AgentAddr::Tcp(a) => a.to_string(),
            AgentAddr::Unix(p) => format!("unix@{}", p.display()),
        }
    }

    /// True if something accepts connections there right now.
    pub fn accepts(&self) -> bool {
        match self {
            AgentAddr::Tcp(a) => tcp_accepts(*a),
            AgentAddr::Unix(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
        }
    }
}

impl std::fmt::Display for AgentAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.idgate_listen())
    }
}

impl From<SocketAddr> for AgentAddr {
    fn from(a: SocketAddr) -> AgentAddr {
        AgentAddr::Tcp(a)
    }
}

impl From<PathBuf> for AgentAddr {
    fn from(p: PathBuf) -> AgentAddr {
        AgentAddr::Unix(p)
    }
}

impl From<&AgentAddr> for AgentAddr {
    fn from(a: &AgentAddr) -> AgentAddr {
        a.clone()
    }
}

/// True if something accepts TCP connections at `addr` right now.
pub fn tcp_accepts(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Serves `app` over plain HTTP on `127.0.0.1:<free port>` in the current Tokio runtime:
/// `http://127.0.0.1:<port>` and the server task (abort it to stop; the fakes do on drop).
pub async fn serve_local(app: axum::Router) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), task)
}

/// Polls `probe` until it returns `Some`, or gives up after `timeout` with `None`.
pub fn poll_until<T>(timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = probe() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// An HTTP client for talking to the servers under test: short timeouts, no proxy from the
/// environment (loopback traffic must never be sent to an HTTP_PROXY), no redirects, no
/// connection reuse between requests (each request is judged on its own).
pub fn http_client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("building the test HTTP client")
}

/// Writes a secret file readable by its owner only (idgate warns about looser permissions).
pub fn write_secret(path: &std::path::Path, content: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, content).expect("writing a secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("restricting a secret file");
}

/// The last `max` bytes of a log file, for failure messages.
pub fn tail_file(path: &std::path::Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Sends SIGTERM to `child`, waits up to `grace` for it to exit, then SIGKILLs it. Returns the
/// exit status, or `None` if it had to be killed.
///
/// SIGTERM goes through `kill(1)` because the crate forbids `unsafe` (no libc call here).
pub fn terminate(
    child: &mut std::process::Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if let Some(status) = poll_until(grace, || child.try_wait().ok().flatten()) {
        return Some(status);
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// True when this process runs as root (read from /proc, without libc).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// A Tokio runtime for the async test servers (MockIdp, FakeDatabricks) of a plain `#[test]`:
/// `rt.block_on(MockIdp::start(..))` spawns the server on the runtime's worker thread, where it
/// keeps running while the test thread blocks on processes, sockets and `reqwest::blocking`
/// (which must not run inside an async context).
pub fn background_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("building the background runtime")
}

/// The value of the sample `name{labels...}` in a Prometheus text exposition: the first
/// sample named `name` whose labels include every pair of `labels` (others are ignored).
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
        .find(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
}

/// The sum of every sample `name{labels...}` matching as in [`metric_value`] (0 if none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(parse_sample)
        .filter(|(n, ls, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum::<f64>()
        + 0.0 // an empty f64 sum is -0.0
}

/// One parsed sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// `name{a="x",b="y"} value` -> (name, labels, value). Label values with escapes are not
/// needed here (idgate's label values are bounded names).
fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => {
            let inner = rest.strip_suffix('}')?;
            let labels = inner
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_string(), v.trim_end_matches('"').to_string()))
                })
                .collect();
            (n, labels)
        }
        None => (head, Vec::new()),
    };
    Some((name.to_string(), labels, value))
}
