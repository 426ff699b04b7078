//! A real Redis (Debian's `redis-server`; `IDGATE_REDIS_SERVER` names another binary, e.g.
//! `valkey-server`) on a free loopback port, in a temporary directory, without persistence.
//! Started ready (PING answered), stopped on drop. Faults: [`Redis::stop`], [`Redis::restart`]
//! (same port, empty: nothing persisted), [`Redis::pause`]/[`Redis::resume`] (SIGSTOP: connected
//! but silent, i.e. slow), [`Redis::flushall`]. [`Redis::start_with`]: a server that requires a
//! password ([`Auth`]: and an ACL user of its own), and/or that also listens with TLS on
//! [`Redis::tls_addr`] ([`super::echo::TestCerts`]); the test's own commands use the plain port.
//! A missing binary fails the test.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::echo::TestCerts;
use super::{free_addr, poll_until, tail_file, terminate, READY_TIMEOUT};

pub struct Redis {
    pub addr: SocketAddr,
    /// The TLS port, when started with certificates.
    pub tls_addr: Option<SocketAddr>,
    tls: Option<TestCerts>,
    child: Option<Child>,
    dir: TempDir,
    paused: bool,
    auth: Option<Auth>,
}

/// The ACL rules docs/fleet.md gives idgate's user: its keys and channel, the commands it sends.
pub const IDGATE_ACL: &[&str] = &[
    "resetkeys",
    "~idgate:*",
    "resetchannels",
    "&idgate:*",
    "-@all",
    "+ping",
    "+select",
    "+get",
    "+set",
    "+zadd",
    "+zrangebyscore",
    "+zremrangebyscore",
    "+multi",
    "+exec",
    "+publish",
    "+subscribe",
];

/// What the server requires: the `default` user's password (`requirepass`, which the test's own
/// connections use) and an ACL user with the rights of [`IDGATE_ACL`].
#[derive(Clone)]
pub struct Auth {
    pub default_password: String,
    pub user: Option<(String, String)>,
}

fn binary() -> String {
    std::env::var("IDGATE_REDIS_SERVER").unwrap_or_else(|_| "redis-server".into())
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(None, None)
    }

    pub fn start_with(auth: Option<Auth>, tls: Option<TestCerts>) -> Redis {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut r = Redis {
            addr: free_addr(),
            tls_addr: tls.as_ref().map(|_| free_addr()),
            tls,
            child: None,
            dir,
            paused: false,
            auth,
        };
        r.spawn();
        r
    }

    fn spawn(&mut self) {
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new(binary());
        if let Some(a) = &self.auth {
            cmd.args(["--requirepass", &a.default_password]);
            if let Some((user, password)) = &a.user {
                cmd.args(["--user", user, "on", &format!(">{password}")]);
                cmd.args(IDGATE_ACL);
            }
        }
        if let (Some(certs), Some(addr)) = (&self.tls, self.tls_addr) {
            cmd.args(["--tls-port", &addr.port().to_string()])
                .arg("--tls-cert-file")
                .arg(&certs.cert)
                .arg("--tls-key-file")
                .arg(&certs.key)
                .arg("--tls-ca-cert-file")
                .arg(&certs.ca)
                .args(["--tls-auth-clients", "no"]);
        }
        let child = cmd
            .args(["--port", &self.addr.port().to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (apt-get install redis-server; scripts/ci-deps.sh): {e}",
                    binary()
                )
            });
        self.child = Some(child);
        let up = poll_until(READY_TIMEOUT, || self.ping().then_some(()));
        assert!(
            up.is_some(),
            "redis-server on {} not answering PING within {READY_TIMEOUT:?}:\n{}",
            self.addr,
            tail_file(&log, 4000)
        );
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// `rediss://127.0.0.1:TLS_PORT/0`.
    pub fn tls_url(&self) -> String {
        format!("rediss://{}/0", self.tls_addr.expect("started with TLS"))
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let url = match &self.auth {
            None => self.url(),
            Some(a) => format!("redis://:{}@{}/0", a.default_password, self.addr),
        };
        let client = redis::Client::open(url)?;
        client.get_connection_with_timeout(Duration::from_secs(1))
    }

    /// Whether the server answers PING within a second.
    pub fn ping(&self) -> bool {
        self.connection()
            .and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(1)))?;
                redis::cmd("PING").query::<String>(&mut c)
            })
            .is_ok()
    }

    /// Run one command (panics on an error: the server must be up).
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut c = self.connection().expect("connect to redis");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut c)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// Every key with every value it holds (strings, hashes, sets, sorted sets, lists), as
    /// text: to check that nothing secret is stored in clear.
    pub fn dump(&self) -> String {
        let mut out = String::new();
        let keys: Vec<String> = self.cmd(&["KEYS", "*"]);
        for k in keys {
            let kind: String = self.cmd(&["TYPE", &k]);
            let values: Vec<Vec<u8>> = match kind.as_str() {
                "string" => vec![self.cmd(&["GET", &k])],
                "hash" => self.cmd(&["HGETALL", &k]),
                "set" => self.cmd(&["SMEMBERS", &k]),
                "zset" => self.cmd(&["ZRANGE", &k, "0", "-1"]),
                "list" => self.cmd(&["LRANGE", &k, "0", "-1"]),
                other => panic!("unexpected redis type {other} for {k}"),
            };
            out.push_str(&k);
            out.push('\n');
            for v in values {
                out.push_str(&String::from_utf8_lossy(&v));
                out.push('\n');
            }
        }
        out
    }

    pub fn flushall(&self) {
        let _: () = self.cmd(&["FLUSHALL"]);
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// SIGSTOP: connections stay open, nothing is answered.
    pub fn pause(&mut self) {
        self.signal("-STOP");
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.signal("-CONT");
        self.paused = false;
    }

    /// Stop the server (its data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        if self.paused {
            self.resume();
        }
        if let Some(mut c) = self.child.take() {
            terminate(&mut c, Duration::from_secs(5));
        }
    }

    /// Start it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
