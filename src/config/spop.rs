//! `[spop]`: the SPOP listener, its Unix socket permissions and its resource bounds.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::read::{Cx, Table};
use super::value::{secs, string_value, Dur};
use super::Problem;

/// `[spop]`: the SPOP listener and its resource bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct SpopConfig {
    /// SPOP listen address: `host:port` (an IP literal) or `unix:/absolute/path` for a Unix
    /// socket. Default `127.0.0.1:12345`. Bound once at start; a reload keeps the old one.
    pub listen: ListenAddr,
    /// Permissions of the Unix socket file, an octal string. Default `"0660"`: owner and
    /// group may connect. Only with a `unix:` listen address.
    pub socket_mode: Option<SocketMode>,
    /// Group of the Unix socket file: a group name or a numeric gid. Default: the process's
    /// group. The agent must be a member of it (or run as root). Only with a `unix:` listen
    /// address.
    pub socket_group: Option<String>,
    /// Owner of the Unix socket file: a user name or a numeric uid. Default: the process's
    /// user. Giving the socket to another user needs root. Only with a `unix:` listen address.
    pub socket_owner: Option<String>,
    /// Maximum concurrent SPOP connections. At the limit a new connection evicts the
    /// connection idle longest (never one with a NOTIFY in flight); when every connection is
    /// busy it is refused. Default 1024.
    pub max_connections: usize,
    /// Maximum NOTIFYs processed concurrently on one connection. HAProxy itself keeps at most
    /// 20 in flight per connection; further frames wait (TCP backpressure). Default 64.
    pub max_inflight_per_connection: usize,
    /// Largest frame we accept (bytes after the 4-byte length). Negotiated down to HAProxy's
    /// value in the HELLO. Range 256..=1048576. Default 16380 (HAProxy's default).
    pub max_frame_size: u32,
    /// Time allowed between accept and a complete HAPROXY-HELLO. HAProxy sends its HELLO as
    /// soon as the connection is up, so this only bounds how long a connection that is not
    /// HAProxy can hold a slot. Default 2s.
    pub hello_timeout: Dur,
    /// A connection with no complete frame for this long is closed (also drops a peer that
    /// sends half a frame and stalls). Default 5m (HAProxy 3.x keeps idle pooled connections).
    pub idle_timeout: Dur,
    /// Grace period for in-flight NOTIFYs on SIGTERM/SIGINT. Default 10s.
    pub shutdown_grace: Dur,
    /// Accept backlog. HAProxy 3.x opens dozens of connections at once after idle. Default 4096.
    pub backlog: u32,
}

impl Default for SpopConfig {
    fn default() -> Self {
        SpopConfig {
            listen: ListenAddr::Tcp("127.0.0.1:12345".parse().expect("valid default")),
            socket_mode: None,
            socket_group: None,
            socket_owner: None,
            max_connections: 1024,
            max_inflight_per_connection: 64,
            max_frame_size: 16380,
            hello_timeout: secs(2),
            idle_timeout: secs(300),
            shutdown_grace: secs(10),
            backlog: 4096,
        }
    }
}

/// The `unix:` prefix of a Unix socket listen address.
pub const UNIX_PREFIX: &str = "unix:";

/// Longest Unix socket path Linux accepts (`sun_path` is 108 bytes with the final NUL).
pub const MAX_UNIX_PATH: usize = 107;

/// Where the SPOP listener listens: a TCP address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    /// The socket file's path (absolute, checked at parse time).
    Unix(PathBuf),
}

impl ListenAddr {
    /// `"tcp"` or `"unix"` (the `kind` label of `idgate_spop_listener_info`).
    pub fn kind(&self) -> &'static str {
        match self {
            ListenAddr::Tcp(_) => "tcp",
            ListenAddr::Unix(_) => "unix",
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(a) => a.fmt(f),
            ListenAddr::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<ListenAddr, String> {
        let Some(path) = s.strip_prefix(UNIX_PREFIX) else {
            return s.parse().map(ListenAddr::Tcp).map_err(|e| {
                format!("invalid socket address {s:?} ({e}): expected ip:port or unix:/path")
            });
        };
        let p = Path::new(path);
        if !p.is_absolute() {
            return Err(format!(
                "{s:?}: the Unix socket path must be absolute (unix:/run/idgate/spop.sock)"
            ));
        }
        if p.file_name().is_none() || path.ends_with('/') {
            return Err(format!("{s:?}: the Unix socket path must name a file"));
        }
        if path.len() > MAX_UNIX_PATH || path.contains('\0') {
            return Err(format!(
                "{s:?}: a Unix socket path is at most {MAX_UNIX_PATH} bytes, without NUL"
            ));
        }
        Ok(ListenAddr::Unix(p.to_path_buf()))
    }
}

string_value!(ListenAddr, "\"ip:port\" or \"unix:/path\"");

/// Permission bits of the Unix socket file, written as an octal string (`"0660"`, `"660"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketMode(pub u32);

impl SocketMode {
    /// Owner and group may connect; nobody else.
    pub const DEFAULT: SocketMode = SocketMode(0o660);

    /// Any local user may connect (connecting to a Unix socket needs write permission).
    pub fn is_world_connectable(self) -> bool {
        self.0 & 0o002 != 0
    }
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl std::str::FromStr for SocketMode {
    type Err = String;

    fn from_str(s: &str) -> Result<SocketMode, String> {
        let digits = s.trim();
        let ok =
            (3..=4).contains(&digits.len()) && digits.bytes().all(|b| (b'0'..=b'7').contains(&b));
        match u32::from_str_radix(digits, 8) {
            Ok(m) if ok && m <= 0o777 => Ok(SocketMode(m)),
            _ => Err(format!(
                "invalid socket mode {s:?}: expected 3 or 4 octal digits without setuid, setgid \
                 or sticky bits, e.g. \"0660\""
            )),
        }
    }
}

string_value!(SocketMode, "an octal string such as \"0660\"");

/// The Unix socket's resolved permissions: what the listener applies after `bind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketPerms {
    pub mode: SocketMode,
    /// `None`: keep the process's group.
    pub gid: Option<u32>,
    /// `None`: keep the process's user.
    pub uid: Option<u32>,
}

impl SpopConfig {
    /// Resolve `socket_mode`, `socket_group` and `socket_owner` (looking names up in the
    /// user and group databases) and check that the process may apply them. Every problem
    /// is reported with its key. Used by the `[spop]` checks at load and by the listener at start.
    pub fn socket_perms(&self) -> Result<SocketPerms, Vec<Problem>> {
        let mut problems = Vec::new();
        let gid = self.socket_group.as_deref().and_then(|g| {
            resolve_group(g)
                .map_err(|e| problems.push(Problem::new("spop.socket_group", e)))
                .ok()
        });
        let uid = self.socket_owner.as_deref().and_then(|u| {
            let uid = resolve_user(u)
                .map_err(|e| problems.push(Problem::new("spop.socket_owner", e)))
                .ok()?;
            let me = nix::unistd::geteuid();
            if !me.is_root() && uid != me.as_raw() {
                problems.push(Problem::new(
                    "spop.socket_owner",
                    format!(
                        "{u:?} (uid {uid}) is not the user idgate runs as (uid {me}); only root \
                         can give the socket to another user"
                    ),
                ));
                return None;
            }
            Some(uid)
        });
        if problems.is_empty() {
            Ok(SocketPerms {
                mode: self.socket_mode.unwrap_or(SocketMode::DEFAULT),
                gid,
                uid,
            })
        } else {
            Err(problems)
        }
    }
}

/// A group name or a numeric gid -> gid.
fn resolve_group(g: &str) -> Result<u32, String> {
    if let Ok(gid) = g.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(g) {
        Ok(Some(group)) => Ok(group.gid.as_raw()),
        Ok(None) => Err(format!("unknown group {g:?}")),
        Err(e) => Err(format!("cannot look up group {g:?}: {e}")),
    }
}

/// A user name or a numeric uid -> uid.
fn resolve_user(u: &str) -> Result<u32, String> {
    if let Ok(uid) = u.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(u) {
        Ok(Some(user)) => Ok(user.uid.as_raw()),
        Ok(None) => Err(format!("unknown user {u:?}")),
        Err(e) => Err(format!("cannot look up user {u:?}: {e}")),
    }
}

impl SpopConfig {
    pub(crate) fn read(t: &mut Table<'_, '_>) -> SpopConfig {
        let mut c = SpopConfig::default();
        t.set("listen", &mut c.listen);
        c.socket_mode = t.get("socket_mode");
        c.socket_group = t.get("socket_group");
        c.socket_owner = t.get("socket_owner");
        t.set("max_connections", &mut c.max_connections);
        t.set(
            "max_inflight_per_connection",
            &mut c.max_inflight_per_connection,
        );
        t.set("max_frame_size", &mut c.max_frame_size);
        t.set("hello_timeout", &mut c.hello_timeout);
        t.set("idle_timeout", &mut c.idle_timeout);
        t.set("shutdown_grace", &mut c.shutdown_grace);
        t.set("backlog", &mut c.backlog);
        c
    }

    pub(crate) fn check(&self, cx: &mut Cx<'_>) {
        if !(256..=1_048_576).contains(&self.max_frame_size) {
            cx.push("spop.max_frame_size", "must be between 256 and 1048576");
        }
        if self.max_connections == 0 {
            cx.push("spop.max_connections", "must be at least 1");
        }
        if self.max_inflight_per_connection == 0 {
            cx.push("spop.max_inflight_per_connection", "must be at least 1");
        }
        match &self.listen {
            ListenAddr::Unix(_) => {
                if let Err(problems) = self.socket_perms() {
                    for p in problems {
                        cx.push(p.key, p.message);
                    }
                }
            }
            ListenAddr::Tcp(_) => {
                for (key, set) in [
                    ("spop.socket_mode", self.socket_mode.is_some()),
                    ("spop.socket_group", self.socket_group.is_some()),
                    ("spop.socket_owner", self.socket_owner.is_some()),
                ] {
                    if set {
                        cx.push(
                            key,
                            "only applies to a Unix socket (spop.listen = \"unix:/path\")",
                        );
                    }
                }
            }
        }
        for (key, d) in [
            ("spop.hello_timeout", self.hello_timeout),
            ("spop.idle_timeout", self.idle_timeout),
        ] {
            if d.0.is_zero() {
                cx.push(key, "must be greater than zero");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{keys, problems};
    use crate::config::Config;

    #[test]
    fn listen_takes_a_unix_socket_path() {
        let c =
            Config::from_toml("[spop]\nlisten = \"unix:/run/idgate/spop.sock\"\n", "t").unwrap();
        assert_eq!(
            c.spop.listen,
            ListenAddr::Unix(PathBuf::from("/run/idgate/spop.sock"))
        );
        assert_eq!(c.spop.listen.to_string(), "unix:/run/idgate/spop.sock");
        assert_eq!(c.spop.listen.kind(), "unix");
        let perms = c.spop.socket_perms().unwrap();
        assert_eq!(perms.mode, SocketMode(0o660));
        assert_eq!((perms.uid, perms.gid), (None, None));
        for bad in [
            "unix:run/spop.sock",
            "unix:",
            "unix:/run/idgate/",
            &format!("unix:/{}", "a".repeat(MAX_UNIX_PATH)),
            "localhost:12345",
        ] {
            let p = problems(&format!("[spop]\nlisten = \"{bad}\"\n"));
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert_eq!(p[0].key, "spop.listen", "{bad}");
            assert_eq!(p[0].at.map(|a| a.line), Some(2));
        }
    }

    #[test]
    fn socket_keys_are_checked() {
        let unix = "[spop]\nlisten = \"unix:/tmp/x.sock\"\n";
        let c = Config::from_toml(
            &format!(
                "{unix}socket_mode = \"600\"\nsocket_group = \"0\"\nsocket_owner = \"{}\"\n",
                nix::unistd::geteuid()
            ),
            "t",
        )
        .unwrap();
        let perms = c.spop.socket_perms().unwrap();
        assert_eq!(perms.mode, SocketMode(0o600));
        assert_eq!(perms.gid, Some(0));
        assert_eq!(perms.uid, Some(nix::unistd::geteuid().as_raw()));
        for bad in ["0o660", "66", "01777", "0888", "rw-rw----", ""] {
            let p = problems(&format!("{unix}socket_mode = \"{bad}\"\n"));
            assert_eq!(p.len(), 1, "{p:?}");
            assert_eq!(p[0].key, "spop.socket_mode", "{bad}");
            assert!(p[0].message.contains("invalid socket mode"), "{p:?}");
        }
        let p = problems(&format!(
            "{unix}socket_group = \"no-such-group-idgate\"\nsocket_owner = \"no-such-user-idgate\"\n"
        ));
        let k: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(k, ["spop.socket_group", "spop.socket_owner"], "{p:?}");
        assert!(p[0].message.contains("unknown group"), "{p:?}");
        // The socket keys mean nothing for a TCP listener: a mistake, not silently ignored.
        assert_eq!(
            keys("[spop]\nsocket_mode = \"0660\"\nsocket_group = \"0\"\n"),
            ["spop.socket_mode", "spop.socket_group"]
        );
    }

    #[test]
    fn socket_owner_other_than_self_needs_root() {
        let me = nix::unistd::geteuid();
        let other = if me.is_root() { 1 } else { me.as_raw() + 1 };
        let text = format!("[spop]\nlisten = \"unix:/tmp/x.sock\"\nsocket_owner = \"{other}\"\n");
        if me.is_root() {
            let c = Config::from_toml(&text, "t").unwrap();
            assert_eq!(c.spop.socket_perms().unwrap().uid, Some(other));
        } else {
            let p = problems(&text);
            assert_eq!(p[0].key, "spop.socket_owner", "{p:?}");
            assert!(p[0].message.contains("only root"), "{p:?}");
        }
    }

    #[test]
    fn bounds() {
        assert_eq!(
            keys(
                "[spop]\nmax_frame_size = 100\nmax_connections = 0\n\
                 max_inflight_per_connection = 0\nhello_timeout = \"0s\"\nidle_timeout = \"0s\"\n"
            ),
            [
                "spop.max_frame_size",
                "spop.max_connections",
                "spop.max_inflight_per_connection",
                "spop.hello_timeout",
                "spop.idle_timeout",
            ]
        );
        assert_eq!(
            keys("[spop]\nmax_connections = -1\n"),
            ["spop.max_connections"]
        );
    }
}
