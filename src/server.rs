//! The tokio shell around [`crate::spop`]: the listener and one task per connection.
//!
//! * **Listener** ([`serve`]): TCP ([`bind`]) or a Unix socket ([`bind_listener`] with a
//!   `unix:` address; see "Unix socket" below), accepted with a large backlog. The number of
//!   open connections is capped by `spop.max_connections` with eviction (below); backs off
//!   on accept errors, and on shutdown stops accepting and drains (below).
//! * **Connection task**: reads into the sans-IO [`Connection`], answers each NOTIFY through
//!   [`contract::answer`] (request, decision, variables: this shell never names a variable),
//!   queues the ACK it returns, writes complete frames with one `write_all` per batch, and
//!   enforces the HELLO and idle timeouts (a peer that sends half a frame and stalls is dropped
//!   with AGENT-DISCONNECT 2). The frame handling is the same over TCP and over a Unix socket.
//!
//! **Connection limit and eviction.** A local client that opens connections and leaves them
//! idle must not lock HAProxy out (HAProxy opens new agent connections at any time, and its
//! `spop-check` health check is a connection of its own: refusing them makes every request
//! fail). So at the limit a new connection is admitted and the connection idle longest is
//! evicted in its place, preferring, in this order, a connection that never completed its
//! HELLO, then one that did but never sent a NOTIFY, then the others; a connection with a
//! NOTIFY in flight is never chosen. The victim closes at once: with AGENT-DISCONNECT 13
//! ("resource allocation error", the status a refused connection gets) after a HELLO,
//! silently before one. Choosing the victim and a NOTIFY starting on it race only in one
//! direction: the choice is a compare-and-swap on the victim's in-flight count (from zero),
//! and a NOTIFY that was already read when the victim learns of it is still answered before
//! the AGENT-DISCONNECT. A new connection is refused (AGENT-DISCONNECT 13, then close) only
//! when every connection has NOTIFYs in flight. Evictions are counted in
//! `idgate_spop_connections_evicted_total`.
//!
//! **Unix socket.** `spop.listen = "unix:/path"`: the parent directory must exist; a stale
//! socket file (nobody accepts on it) is replaced, anything else at the path is an error. The
//! socket is bound, then given its mode and owner/group, and only then put into the listening
//! state: a bound socket that does not listen refuses every `connect()`, so there is no
//! moment at which a client can connect with the permissions the umask gave. (The
//! alternatives have a cost this does not: changing the umask around `bind` is process-wide
//! and races with other threads creating files; binding in a private directory and renaming
//! needs a second, longer path.) The file is removed when the listener closes (shutdown), if
//! it is still ours.
//!
//! **Concurrency within a connection.** NOTIFYs of one connection run concurrently in a
//! `FuturesUnordered` polled by the connection task, up to
//! `spop.max_inflight_per_connection`; ACKs go out in completion order. The alternative, a
//! `tokio::spawn` per NOTIFY, would let one connection use several cores, but costs a task
//! allocation and a cross-thread wake-up per request, needs a channel back to the writer, and
//! makes "answer everything in flight, then DISCONNECT" harder to get right. Decisions are
//! microseconds on a cache hit and I/O-bound otherwise (JWKS, token endpoint), and HAProxy
//! spreads load over several connections (per thread on 2.6, a pool on 3.x), so the
//! per-connection executor wins. When the bound is reached the task stops reading: TCP
//! backpressure, and frames already received stay undecoded in the buffer.
//!
//! **Drain** (SIGTERM/SIGINT): stop accepting; every connection stops reading, answers the
//! NOTIFYs it has received (including complete frames already buffered), then sends
//! AGENT-DISCONNECT status 0 "normal" (this is an orderly end, not an error, and HAProxy
//! simply opens a new connection to another server) and closes. Connections that have not
//! finished by `spop.shutdown_grace` get their AGENT-DISCONNECT then; a second, short margin
//! later any task still stuck (e.g. in a write to a peer that does not read) is aborted.
//!
//! **Logging.** EOF, ECONNRESET and EPIPE are how HAProxy ends connections (3.x closes idle
//! pooled connections without DISCONNECT; 2.6 closes right after its own DISCONNECT), so they
//! are debug. Protocol errors and timeouts are logged through a per-kind token bucket,
//! because HAProxy 2.6 reconnects in a tight loop after a refused HELLO (hundreds of
//! connections per second): a burst of lines, then one per second with a "suppressed" count.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixSocket, UnixStream};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, error, info, warn};

use crate::config::{ListenAddr, SocketPerms, SpopConfig};
use crate::contract;
use crate::decision::Authorizer;
use crate::metrics::metrics;
use crate::shutdown::{Drain, DrainWatch};
use crate::spop::frame;
use crate::spop::{
    AckError, CloseReason, ConnConfig, Connection, Event, FrameType, ProtocolError, Status,
};

/// First pause after a failed `accept` (EMFILE and friends); doubled up to
/// [`ACCEPT_BACKOFF_MAX`] so a descriptor shortage does not spin a core.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest wait for one write. HAProxy reads promptly; a peer that does not take a few
/// hundred bytes in this time is gone. (The idle timeout applies if it is shorter.)
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After our last frame we half-close and read (and discard) until the peer closes, at most
/// this long and [`LINGER_MAX_BYTES`]. Closing with unread input makes the kernel send an RST,
/// which can destroy the AGENT-DISCONNECT before the peer reads it.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 256 * 1024;
/// After the drain deadline, connection tasks get this much longer to send their
/// AGENT-DISCONNECT before they are aborted.
const HARD_STOP_MARGIN: Duration = Duration::from_secs(1);
/// Log rate limiting: a burst of this many lines per kind...
const LOG_BURST: u32 = 10;
/// ...then one line per this interval per kind.
const LOG_REFILL: Duration = Duration::from_secs(1);

/// Bind the SPOP listener with `backlog` (HAProxy 3.x opens dozens of connections at once
/// after an idle period; 2.6 reconnects in bursts). `SO_REUSEADDR` lets a restarted agent
/// bind while old connections sit in TIME_WAIT. Must run inside a tokio runtime.
///
/// # Errors
/// Socket creation, bind or listen errors.
pub fn bind(listen: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = if listen.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    socket.listen(backlog)
}

/// A bound SPOP listener: TCP, or a Unix socket whose file is removed when this is dropped.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixSocketListener),
}

impl From<TcpListener> for Listener {
    fn from(l: TcpListener) -> Listener {
        Listener::Tcp(l)
    }
}

impl From<UnixSocketListener> for Listener {
    fn from(l: UnixSocketListener) -> Listener {
        Listener::Unix(l)
    }
}

impl Listener {
    /// Where it listens (for a TCP listener bound to port 0, with the actual port).
    pub fn local_addr(&self) -> io::Result<ListenAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(ListenAddr::Tcp),
            Listener::Unix(l) => Ok(ListenAddr::Unix(l.path.clone())),
        }
    }
}

/// A listening Unix socket that owns its file: dropping it removes the file, unless the file
/// at the path is no longer the one we bound (another agent replaced it meanwhile).
#[derive(Debug)]
pub struct UnixSocketListener {
    listener: UnixListener,
    path: PathBuf,
    /// (device, inode) of the socket file we created.
    file_id: (u64, u64),
}

impl UnixSocketListener {
    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for UnixSocketListener {
    fn drop(&mut self) {
        remove_if_ours(&self.path, self.file_id);
    }
}

fn remove_if_ours(path: &Path, file_id: (u64, u64)) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if (m.dev(), m.ino()) == file_id => {
            if let Err(e) = std::fs::remove_file(path) {
                warn!(path = %path.display(), "cannot remove the SPOP socket file: {e}");
            }
        }
        _ => {}
    }
}

/// Bind the listener `cfg.listen` names: [`bind`] for TCP, [`bind_unix`] for `unix:`.
///
/// # Errors
/// Everything that keeps the listener from coming up, with a message that names the path or
/// address and says why (e.g. the socket's directory does not exist).
pub fn bind_listener(cfg: &SpopConfig) -> io::Result<Listener> {
    match &cfg.listen {
        ListenAddr::Tcp(addr) => bind(*addr, cfg.backlog).map(Listener::Tcp),
        ListenAddr::Unix(path) => {
            let perms = cfg.socket_perms().map_err(|problems| {
                let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
                io::Error::new(io::ErrorKind::InvalidInput, text.join("; "))
            })?;
            bind_unix(path, cfg.backlog, perms).map(Listener::Unix)
        }
    }
}

/// Bind a Unix socket at `path` with `perms` (module docs: no moment at which it accepts
/// connections with other permissions). A stale socket at `path` is replaced; a live one, or
/// anything that is not a socket, is an error. Must run inside a tokio runtime.
///
/// # Errors
/// The parent directory is missing, the path holds something else, or bind, chown, chmod or
/// listen fail.
pub fn bind_unix(path: &Path, backlog: u32, perms: SocketPerms) -> io::Result<UnixSocketListener> {
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("/"));
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{} is not a directory", dir.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "the socket's directory {} does not exist (create it first; under systemd \
                     RuntimeDirectory= does)",
                    dir.display()
                ),
            ))
        }
        Err(e) => return Err(ctx(&format!("cannot use directory {}", dir.display()), e)),
    }
    remove_stale_socket(path)?;
    let socket = UnixSocket::new_stream()?;
    socket
        .bind(path)
        .map_err(|e| ctx(&format!("cannot bind {}", path.display()), e))?;
    // From here on the file is ours: remove it again if anything below fails.
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| ctx(&format!("cannot stat {}", path.display()), e))?;
    let file_id = (meta.dev(), meta.ino());
    let cleanup = RemoveOnError {
        path,
        file_id,
        armed: true,
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::other(format!(
            "{} was replaced while binding",
            path.display()
        )));
    }
    if perms.uid.is_some() || perms.gid.is_some() {
        // lchown: never follow a symlink someone put at the path.
        std::os::unix::fs::lchown(path, perms.uid, perms.gid).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::PermissionDenied {
                " (a non-root process can only give its files to a group it is a member of)"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!(
                    "cannot set the owner/group of {} (spop.socket_owner {:?}, spop.socket_group {:?}): {e}{hint}",
                    path.display(),
                    perms.uid,
                    perms.gid
                ),
            )
        })?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(perms.mode.0)).map_err(|e| {
        ctx(
            &format!("cannot set mode {} on {}", perms.mode, path.display()),
            e,
        )
    })?;
    let listener = socket
        .listen(backlog)
        .map_err(|e| ctx(&format!("cannot listen on {}", path.display()), e))?;
    let mut cleanup = cleanup;
    cleanup.armed = false;
    Ok(UnixSocketListener {
        listener,
        path: path.to_path_buf(),
        file_id,
    })
}

struct RemoveOnError<'a> {
    path: &'a Path,
    file_id: (u64, u64),
    armed: bool,
}

impl Drop for RemoveOnError<'_> {
    fn drop(&mut self) {
        if self.armed {
            remove_if_ours(self.path, self.file_id);
        }
    }
}

/// Make room for a new socket at `path`: nothing there is fine; a socket nobody accepts on
/// (left by a crash or a SIGKILL) is removed; a socket something still accepts on, and
/// anything that is not a socket (a regular file, a directory, a symlink), is an error.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("cannot stat {}: {e}", path.display()),
            ))
        }
    };
    let ft = meta.file_type();
    if !ft.is_socket() {
        let what = if ft.is_file() {
            "a regular file"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_symlink() {
            "a symbolic link"
        } else {
            "not a socket"
        };
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is {what}; refusing to replace it with the SPOP socket",
                path.display()
            ),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "{} is in use: another process accepts connections on it",
                path.display()
            ),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    info!(path = %path.display(), "removed a stale SPOP socket file");
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io::Error::new(
                    e.kind(),
                    format!("cannot remove the stale socket {}: {e}", path.display()),
                )),
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!(
                "{} exists and cannot be probed ({e}); remove it if no agent uses it",
                path.display()
            ),
        )),
    }
}

/// The other end of a connection, for logs.
#[derive(Debug, Clone, Copy)]
enum Peer {
    Tcp(SocketAddr),
    /// A Unix socket client, by its credentials (the kernel's, at connect time).
    Unix {
        uid: Option<u32>,
        pid: Option<i32>,
    },
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Tcp(a) => a.fmt(f),
            Peer::Unix { uid, pid } => {
                f.write_str("unix")?;
                if let Some(uid) = uid {
                    write!(f, " uid={uid}")?;
                }
                if let Some(pid) = pid {
                    write!(f, " pid={pid}")?;
                }
                Ok(())
            }
        }
    }
}

/// What the connection task needs of a stream: TCP or Unix, the same frame handling.
trait SpopStream: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Per-connection socket options.
    fn configure(&self) {}
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

impl SpopStream for TcpStream {
    fn configure(&self) {
        // ACKs are small and written whole; do not let Nagle hold them back.
        let _ = self.set_nodelay(true);
    }
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        TcpStream::try_write(self, buf)
    }
}

impl SpopStream for UnixStream {
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        UnixStream::try_write(self, buf)
    }
}

/// The per-connection settings taken from `[spop]`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame_size: u32,
    max_inflight: usize,
    hello_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
    /// How long an evicted connection may take to answer NOTIFYs that raced with its eviction.
    evict_grace: Duration,
}

impl From<&SpopConfig> for Limits {
    fn from(c: &SpopConfig) -> Limits {
        Limits {
            max_frame_size: c.max_frame_size,
            max_inflight: c.max_inflight_per_connection.max(1),
            hello_timeout: c.hello_timeout.0,
            idle_timeout: c.idle_timeout.0,
            write_timeout: WRITE_TIMEOUT.min(c.idle_timeout.0),
            evict_grace: c.shutdown_grace.0,
        }
    }
}

// ----- the connection table (limit and eviction, module docs) -----

/// Bits of [`ConnShared::state`]: the low 32 bits count the NOTIFYs in flight.
const INFLIGHT_MASK: u64 = 0xffff_ffff;
const HELLO_DONE: u64 = 1 << 61;
const NOTIFIED: u64 = 1 << 62;
const EVICTED: u64 = 1 << 63;

/// What the accept loop sees of one connection.
#[derive(Debug)]
struct ConnShared {
    peer: Peer,
    /// NOTIFYs in flight and the flags above, in one word so that eviction can claim an idle
    /// connection with one compare-and-swap.
    state: AtomicU64,
    /// Last activity (accept, a complete frame, an ACK), in ms since the table's epoch.
    last_active: AtomicU64,
    evict: tokio::sync::Notify,
}

impl ConnShared {
    fn new(peer: Peer, now_ms: u64) -> ConnShared {
        ConnShared {
            peer,
            state: AtomicU64::new(0),
            last_active: AtomicU64::new(now_ms),
            evict: tokio::sync::Notify::new(),
        }
    }

    /// Eviction preference: 0 no HELLO yet, 1 HELLO but never a NOTIFY, 2 the others.
    fn class(state: u64) -> u8 {
        if state & HELLO_DONE == 0 {
            0
        } else if state & NOTIFIED == 0 {
            1
        } else {
            2
        }
    }

    /// Claim this connection for eviction if it has nothing in flight (and is not already
    /// being evicted).
    fn try_evict(&self) -> bool {
        self.state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                (s & INFLIGHT_MASK == 0 && s & EVICTED == 0).then_some(s | EVICTED)
            })
            .is_ok()
    }

    fn is_evicted(&self) -> bool {
        self.state.load(Ordering::Acquire) & EVICTED != 0
    }
}

/// The open connections, for the limit and the choice of an eviction victim. Locked only at
/// accept and when a connection ends; the per-NOTIFY bookkeeping is atomics in [`ConnShared`].
#[derive(Debug)]
struct ConnTable {
    epoch: Instant,
    max: usize,
    inner: Mutex<TableInner>,
}

#[derive(Debug, Default)]
struct TableInner {
    next_id: u64,
    conns: HashMap<u64, Arc<ConnShared>>,
    /// Connections claimed for eviction that have not ended yet (they do not count against
    /// the limit).
    evicting: usize,
}

/// The outcome of [`ConnTable::admit`].
enum Admission {
    /// Admitted; `evicted` is the connection that was evicted to make room, if any.
    Admitted {
        slot: ConnSlot,
        evicted: Option<(Peer, u8)>,
    },
    /// Every connection has NOTIFYs in flight.
    Full,
}

impl ConnTable {
    fn new(max: usize) -> Arc<ConnTable> {
        Arc::new(ConnTable {
            epoch: Instant::now(),
            max: max.max(1),
            inner: Mutex::new(TableInner::default()),
        })
    }

    fn now_ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.epoch).as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a new connection, evicting one if the table is full.
    fn admit(self: &Arc<Self>, peer: Peer) -> Admission {
        let now = self.now_ms(Instant::now());
        let mut t = self.lock();
        let mut evicted = None;
        if t.conns.len() - t.evicting >= self.max {
            // Evicted connections normally end within milliseconds; if they pile up (a peer
            // that does not take its AGENT-DISCONNECT), stop evicting: the limit on open
            // descriptors matters more.
            let victim = if t.conns.len() < self.max * 2 {
                pick_victim(t.conns.values())
            } else {
                None
            };
            let Some(victim) = victim else {
                return Admission::Full;
            };
            t.evicting += 1;
            victim.evict.notify_one();
            evicted = Some((
                victim.peer,
                ConnShared::class(victim.state.load(Ordering::Relaxed)),
            ));
        }
        let id = t.next_id;
        t.next_id += 1;
        let shared = Arc::new(ConnShared::new(peer, now));
        t.conns.insert(id, shared.clone());
        Admission::Admitted {
            slot: ConnSlot {
                table: self.clone(),
                id,
                shared,
            },
            evicted,
        }
    }
}

/// The victim: among connections with nothing in flight, the lowest class (no HELLO, then
/// no NOTIFY ever, then the others), idle longest within it. Claimed (marked evicted) here.
fn pick_victim<'a>(conns: impl Iterator<Item = &'a Arc<ConnShared>>) -> Option<Arc<ConnShared>> {
    let mut candidates: Vec<(u8, u64, &Arc<ConnShared>)> = conns
        .filter_map(|c| {
            let s = c.state.load(Ordering::Acquire);
            (s & INFLIGHT_MASK == 0 && s & EVICTED == 0).then(|| {
                (
                    ConnShared::class(s),
                    c.last_active.load(Ordering::Relaxed),
                    c,
                )
            })
        })
        .collect();
    candidates.sort_unstable_by_key(|(class, last, _)| (*class, *last));
    // The first whose claim succeeds: a NOTIFY may have started since the scan.
    candidates
        .into_iter()
        .find(|(_, _, c)| c.try_evict())
        .map(|(_, _, c)| c.clone())
}

/// A connection's entry in the table; removed on drop.
struct ConnSlot {
    table: Arc<ConnTable>,
    id: u64,
    shared: Arc<ConnShared>,
}

impl ConnSlot {
    fn touch(&self, now: Instant) {
        self.shared
            .last_active
            .store(self.table.now_ms(now), Ordering::Relaxed);
    }

    fn hello_done(&self, now: Instant) {
        self.shared.state.fetch_or(HELLO_DONE, Ordering::AcqRel);
        self.touch(now);
    }

    fn notify_started(&self, now: Instant) {
        self.shared.state.fetch_add(1, Ordering::AcqRel);
        self.shared.state.fetch_or(NOTIFIED, Ordering::AcqRel);
        self.touch(now);
    }

    fn notify_done(&self, now: Instant) {
        self.shared.state.fetch_sub(1, Ordering::AcqRel);
        self.touch(now);
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut t = self.table.lock();
        t.conns.remove(&self.id);
        if self.shared.is_evicted() {
            t.evicting -= 1;
        }
    }
}

/// Serve SPOP on `listener` until `shutdown` resolves, then drain (module docs) and return.
pub async fn serve<A: Authorizer>(
    listener: impl Into<Listener>,
    cfg: SpopConfig,
    authorizer: Arc<A>,
    shutdown: impl Future<Output = ()>,
) {
    let listener = listener.into();
    let limits = Limits::from(&cfg);
    let table = ConnTable::new(cfg.max_connections);
    let (drain, _) = Drain::new();
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        let kind = addr.kind();
        let addr = addr.to_string();
        metrics()
            .spop_listener
            .with_label_values(&[kind, addr.as_str()])
            .set(1);
        info!(listen = %addr, kind, max_connections = table.max, "SPOP listener ready");
    }
    let ctx = AcceptCtx {
        limits,
        table: &table,
        drain: &drain,
        max: cfg.max_connections,
    };
    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                log_join(res);
                continue;
            }
            res = accept(&listener) => res,
        };
        match accepted {
            Ok(Accepted::Tcp(stream, peer)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                ctx.start(&mut tasks, stream, Peer::Tcp(peer), &authorizer);
            }
            Ok(Accepted::Unix(stream)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let cred = stream.peer_cred().ok();
                let peer = Peer::Unix {
                    uid: cred.map(|c| c.uid()),
                    pid: cred.and_then(|c| c.pid()),
                };
                ctx.start(&mut tasks, stream, peer, &authorizer);
            }
            Err(e) => {
                if let Some(suppressed) = LOG_LIMIT.allow("accept", "") {
                    warn!(error = %e, suppressed, "accept failed; backing off {backoff:?}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    // Closes the socket (and removes a Unix socket's file): new connections fail at once.
    drop(listener);
    let grace = cfg.shutdown_grace.0;
    let deadline = Instant::now() + grace;
    info!(
        connections = tasks.len(),
        "SPOP listener closed; draining connections for up to {grace:?}"
    );
    drain.start(deadline);
    let drained = timeout_at(deadline + HARD_STOP_MARGIN, async {
        while let Some(res) = tasks.join_next().await {
            log_join(res);
        }
    })
    .await;
    if drained.is_err() {
        warn!(
            connections = tasks.len(),
            "graceful shutdown did not complete in {grace:?}, closing the remaining connections now"
        );
        tasks.shutdown().await;
    }
    info!("SPOP server stopped");
}

enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(UnixStream),
}

async fn accept(listener: &Listener) -> io::Result<Accepted> {
    match listener {
        Listener::Tcp(l) => l.accept().await.map(|(s, p)| Accepted::Tcp(s, p)),
        Listener::Unix(l) => l.listener.accept().await.map(|(s, _)| Accepted::Unix(s)),
    }
}

/// What the accept loop hands each new connection.
struct AcceptCtx<'a> {
    limits: Limits,
    table: &'a Arc<ConnTable>,
    drain: &'a Drain,
    max: usize,
}

impl AcceptCtx<'_> {
    fn start<A: Authorizer, S: SpopStream>(
        &self,
        tasks: &mut JoinSet<()>,
        stream: S,
        peer: Peer,
        authorizer: &Arc<A>,
    ) {
        match self.table.admit(peer) {
            Admission::Admitted { slot, evicted } => {
                if let Some((victim, class)) = evicted {
                    metrics().spop_connections_evicted.inc();
                    if let Some(suppressed) = LOG_LIMIT.allow("evict", "") {
                        let what = match class {
                            0 => "no HELLO yet",
                            1 => "no NOTIFY yet",
                            _ => "idle",
                        };
                        warn!(%peer, %victim, max = self.max, suppressed,
                            "SPOP connection limit reached; evicting the connection idle longest ({what})");
                    }
                }
                let authorizer = authorizer.clone();
                let watch = self.drain.watch();
                let limits = self.limits;
                tasks.spawn(async move {
                    run_connection(stream, peer, limits, authorizer, watch, slot).await;
                });
            }
            Admission::Full => reject(&stream, peer, self.max),
        }
    }
}

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            error!("SPOP connection task panicked: {e}");
        }
    }
}

/// Over the connection limit with every connection busy: say why (AGENT-DISCONNECT 13,
/// without waiting for the HELLO) if the socket takes it right away, and close.
fn reject<S: SpopStream>(stream: &S, peer: Peer, max: usize) {
    let mut buf = BytesMut::new();
    frame::encode_agent_disconnect(&mut buf, Status::ResourceAllocation, "too many connections");
    let _ = stream.try_write(&buf);
    metrics()
        .spop_connection_errors
        .with_label_values(&[Status::ResourceAllocation.label()])
        .inc();
    if let Some(suppressed) = LOG_LIMIT.allow("connection_limit", "") {
        warn!(%peer, max, suppressed,
            "SPOP connection limit reached and every connection is busy; connection refused");
    }
}

/// How a connection ended, for logs and metrics.
enum End {
    Closed(CloseReason),
    Eof(Option<ProtocolError>),
    Io(io::Error),
    Timeout {
        hello: bool,
        partial: bool,
    },
    Drained {
        unanswered: usize,
    },
    /// Evicted at the connection limit: `hello` says whether an AGENT-DISCONNECT was sent.
    Evicted {
        hello: bool,
        unanswered: usize,
    },
}

/// `idgate_spop_connections` up while this lives.
struct OpenGauge;

impl OpenGauge {
    fn new() -> OpenGauge {
        metrics().spop_connections.inc();
        OpenGauge
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        metrics().spop_connections.dec();
    }
}

/// `idgate_spop_frames_total{type}` children, resolved once.
static FRAME_COUNTERS: LazyLock<Vec<(FrameType, IntCounter)>> = LazyLock::new(|| {
    [
        FrameType::HaproxyHello,
        FrameType::HaproxyDisconnect,
        FrameType::Notify,
        FrameType::AgentHello,
        FrameType::AgentDisconnect,
        FrameType::Ack,
    ]
    .into_iter()
    .map(|t| (t, metrics().spop_frames.with_label_values(&[t.name()])))
    .collect()
});

fn flush_frame_counts(conn: &mut Connection) {
    for (t, n) in conn.take_frame_counts().iter() {
        if let Some((_, c)) = FRAME_COUNTERS.iter().find(|(ft, _)| *ft == t) {
            c.inc_by(n);
        }
    }
}

/// Queue a NOTIFY's ACK. The contract layer fits every ACK into the negotiated max-frame-size
/// whatever its ids, so `TooBig` means a bug there: the NOTIFY cannot be answered, and the
/// connection is closed so that HAProxy does not wait for the ACK (it treats the NOTIFY as
/// failed, and the shipped configuration denies).
fn send_ack(conn: &mut Connection, ack: &contract::Ack) {
    match conn.send_ack(ack.stream_id, ack.frame_id, &ack.actions()) {
        Ok(()) | Err(AckError::NotOpen) => {}
        Err(e @ AckError::TooBig { .. }) => {
            error!("{e}: the ACK cannot be sent; closing the connection");
            conn.close(Status::Unknown, "internal error: ACK too big");
        }
    }
}

async fn write_frames<W: AsyncWrite + Unpin>(
    wr: &mut W,
    conn: &mut Connection,
    limit: Duration,
) -> io::Result<()> {
    flush_frame_counts(conn);
    let Some(bytes) = conn.poll_transmit() else {
        return Ok(());
    };
    match timeout(limit, wr.write_all(&bytes)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
    }
}

/// Why a connection stops reading and winds down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Drain,
    Evict,
}

async fn run_connection<A: Authorizer, S: SpopStream>(
    mut stream: S,
    peer: Peer,
    limits: Limits,
    authorizer: Arc<A>,
    mut drain: DrainWatch,
    slot: ConnSlot,
) {
    let _gauge = OpenGauge::new();
    stream.configure();
    let authorizer: &A = &authorizer;
    let mut conn = Connection::new(ConnConfig {
        max_frame_size: limits.max_frame_size,
    });
    let mut inflight = FuturesUnordered::new();
    // The negotiated size (set by the HELLO, which comes before any NOTIFY).
    let mut max_frame_size = limits.max_frame_size;
    let mut closing = drain.deadline().map(|d| (d, Closing::Drain));
    let idle = tokio::time::sleep(limits.hello_timeout);
    tokio::pin!(idle);

    let end = loop {
        if closing.is_none() && slot.shared.is_evicted() {
            if !conn.is_ready() {
                // No HELLO: nothing to say, just close.
                break End::Evicted {
                    hello: false,
                    unanswered: 0,
                };
            }
            closing = Some((Instant::now() + limits.evict_grace, Closing::Evict));
        }
        // Decode what is buffered, as long as there is room for more decisions.
        let mut closed = None;
        while inflight.len() < limits.max_inflight {
            match conn.poll_event() {
                None => break,
                Some(Event::Ready {
                    max_frame_size: negotiated,
                    pipelining,
                }) => {
                    debug!(%peer, max_frame_size = negotiated, pipelining, "SPOP HELLO done");
                    max_frame_size = negotiated;
                    let now = Instant::now();
                    slot.hello_done(now);
                    idle.as_mut().reset(now + limits.idle_timeout);
                }
                Some(Event::Notify(n)) => {
                    let now = Instant::now();
                    slot.notify_started(now);
                    idle.as_mut().reset(now + limits.idle_timeout);
                    inflight.push(contract::answer(authorizer, n, max_frame_size));
                }
                Some(Event::Close(reason)) => {
                    closed = Some(reason);
                    break;
                }
            }
        }
        if let Err(e) = write_frames(&mut stream, &mut conn, limits.write_timeout).await {
            break End::Io(e);
        }
        if let Some(reason) = closed {
            break End::Closed(reason);
        }
        if let Some((_, why)) = closing {
            if inflight.is_empty() {
                break close_for(&mut conn, why, 0);
            }
        }

        let can_read = closing.is_none() && inflight.len() < limits.max_inflight;
        tokio::select! {
            biased;
            Some(ack) = inflight.next(), if !inflight.is_empty() => {
                send_ack(&mut conn, &ack);
                let mut done = 1;
                // Batch every other finished decision into the same write.
                while let Some(Some(ack)) = inflight.next().now_or_never() {
                    send_ack(&mut conn, &ack);
                    done += 1;
                }
                let now = Instant::now();
                for _ in 0..done {
                    slot.notify_done(now);
                }
                if conn.is_ready() {
                    idle.as_mut().reset(now + limits.idle_timeout);
                }
            }
            deadline = drain.started(), if closing.is_none() => closing = Some((deadline, Closing::Drain)),
            () = slot.shared.evict.notified(), if closing.is_none() => {}
            () = sleep_until(closing.map_or_else(Instant::now, |(d, _)| d)), if closing.is_some() => {
                let (_, why) = closing.expect("guarded");
                break close_for(&mut conn, why, inflight.len());
            }
            res = stream.read_buf(conn.recv_buf()), if can_read => match res {
                Ok(0) => break End::Eof(conn.handle_eof()),
                Ok(_) => {}
                Err(e) => break End::Io(e),
            },
            () = &mut idle, if closing.is_none() && inflight.is_empty() => {
                let (hello, partial) = (!conn.is_ready(), conn.has_partial_frame());
                conn.handle_timeout();
                break End::Timeout { hello, partial };
            }
        }
    };

    if matches!(end, End::Evicted { hello: false, .. }) {
        log_end(peer, &end);
        return; // dropped: closed without a word
    }
    // Last frames (AGENT-HELLO of a health check, AGENT-DISCONNECT), best effort.
    let flushed = write_frames(&mut stream, &mut conn, limits.write_timeout).await;
    let peer_gone = matches!(end, End::Eof(None) | End::Io(_)) || flushed.is_err();
    log_end(peer, &end);
    if matches!(end, End::Evicted { .. }) {
        // Under a connection flood, do not hold the descriptor for the linger period.
        let _ = stream.shutdown().await;
    } else if !peer_gone {
        linger_close(&mut stream).await;
    }
}

/// Queue the AGENT-DISCONNECT that ends a drained or evicted connection.
fn close_for(conn: &mut Connection, why: Closing, unanswered: usize) -> End {
    match why {
        Closing::Drain => {
            conn.close(Status::Normal, "agent shutting down");
            End::Drained { unanswered }
        }
        Closing::Evict => {
            conn.close(
                Status::ResourceAllocation,
                "connection limit reached: idle connection closed",
            );
            End::Evicted {
                hello: true,
                unanswered,
            }
        }
    }
}

/// Half-close, then discard input until the peer closes (bounded), so the kernel does not
/// answer unread input with an RST that could overtake our last frame.
async fn linger_close<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; 4096];
    let mut total = 0usize;
    let _ = timeout(LINGER_TIMEOUT, async {
        while total < LINGER_MAX_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

fn is_normal_close(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionAborted
    )
}

fn count_error(status: Status) {
    metrics()
        .spop_connection_errors
        .with_label_values(&[status.label()])
        .inc();
}

fn log_end(peer: Peer, end: &End) {
    match end {
        End::Closed(CloseReason::Healthcheck) => debug!(%peer, "SPOP health check answered"),
        End::Closed(CloseReason::PeerDisconnect(d)) => {
            let msg = String::from_utf8_lossy(&d.message);
            if matches!(d.status, Status::Normal | Status::Timeout) {
                debug!(%peer, status = d.status.code(), message = %msg, "HAProxy disconnected");
            } else if let Some(suppressed) = LOG_LIMIT.allow("peer_disconnect", d.status.label()) {
                info!(%peer, status = d.status.code(), message = %msg, suppressed,
                    "HAProxy disconnected with an error status");
            }
        }
        End::Closed(CloseReason::Error(e)) => {
            let status = e.status();
            count_error(status);
            if let Some(suppressed) = LOG_LIMIT.allow("protocol_error", status.label()) {
                warn!(%peer, status = status.code(), suppressed,
                    "SPOP protocol error from HAProxy, connection closed: {e}");
            }
        }
        End::Eof(None) => debug!(%peer, "SPOP connection closed by HAProxy"),
        End::Eof(Some(e)) => {
            count_error(e.status());
            if let Some(suppressed) = LOG_LIMIT.allow("truncated", "") {
                info!(%peer, suppressed, "SPOP connection closed by HAProxy: {e}");
            }
        }
        End::Io(e) if is_normal_close(e) => debug!(%peer, error = %e, "SPOP connection ended"),
        End::Io(e) => {
            if let Some(suppressed) = LOG_LIMIT.allow("io", "") {
                warn!(%peer, error = %e, suppressed, "SPOP connection I/O error");
            }
        }
        End::Timeout { hello, partial } => {
            count_error(Status::Timeout);
            if !hello && !partial {
                debug!(%peer, "idle SPOP connection closed");
            } else if let Some(suppressed) = LOG_LIMIT.allow("timeout", "") {
                let what = if *hello {
                    "no complete HAPROXY-HELLO"
                } else {
                    "incomplete frame"
                };
                info!(%peer, suppressed, "SPOP connection timed out ({what}), closed");
            }
        }
        End::Drained { unanswered: 0 } => debug!(%peer, "SPOP connection drained"),
        End::Drained { unanswered } => {
            warn!(%peer, unanswered, "drain deadline reached with NOTIFYs still unanswered")
        }
        End::Evicted {
            hello,
            unanswered: 0,
        } => debug!(%peer, hello, "SPOP connection evicted"),
        End::Evicted { unanswered, .. } => {
            warn!(%peer, unanswered, "evicted SPOP connection closed with NOTIFYs unanswered")
        }
    }
}

/// Token bucket per log kind (module docs).
struct LogLimiter {
    buckets: Mutex<HashMap<(&'static str, &'static str), Bucket>>,
}

struct Bucket {
    tokens: u32,
    refilled: std::time::Instant,
    suppressed: u64,
}

static LOG_LIMIT: LazyLock<LogLimiter> = LazyLock::new(LogLimiter::new);

impl LogLimiter {
    fn new() -> LogLimiter {
        LogLimiter {
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(lines suppressed since the last one)` if a line of this kind may be logged now.
    fn allow(&self, kind: &'static str, label: &'static str) -> Option<u64> {
        self.allow_at(kind, label, std::time::Instant::now())
    }

    fn allow_at(
        &self,
        kind: &'static str,
        label: &'static str,
        now: std::time::Instant,
    ) -> Option<u64> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry((kind, label)).or_insert(Bucket {
            tokens: LOG_BURST,
            refilled: now,
            suppressed: 0,
        });
        let elapsed = now.saturating_duration_since(b.refilled);
        let new = (elapsed.as_nanos() / LOG_REFILL.as_nanos()) as u32;
        if new > 0 {
            b.tokens = b.tokens.saturating_add(new).min(LOG_BURST);
            b.refilled = now;
        }
        if b.tokens == 0 {
            b.suppressed += 1;
            return None;
        }
        b.tokens -= 1;
        Some(std::mem::take(&mut b.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_bursts_then_suppresses_then_reports() {
        let l = LogLimiter::new();
        let t0 = std::time::Instant::now();
        for _ in 0..LOG_BURST {
            assert_eq!(l.allow_at("k", "4", t0), Some(0));
        }
        for _ in 0..500 {
            assert_eq!(l.allow_at("k", "4", t0), None);
        }
        // Other kinds and labels have their own bucket.
        assert_eq!(l.allow_at("k", "10", t0), Some(0));
        let t1 = t0 + LOG_REFILL;
        assert_eq!(l.allow_at("k", "4", t1), Some(500));
        assert_eq!(l.allow_at("k", "4", t1), None);
        assert_eq!(l.allow_at("k", "4", t1 + LOG_REFILL * 100), Some(1));
    }

    fn conn(state: u64, last_active: u64) -> Arc<ConnShared> {
        let c = ConnShared::new(Peer::Tcp(([127, 0, 0, 1], 1).into()), last_active);
        c.state.store(state, Ordering::Relaxed);
        Arc::new(c)
    }

    #[test]
    fn eviction_prefers_no_hello_then_no_notify_then_idle_longest_and_spares_inflight() {
        let busy_old = conn(HELLO_DONE | NOTIFIED | 2, 0); // oldest, but NOTIFYs in flight
        let used_old = conn(HELLO_DONE | NOTIFIED, 10);
        let used_new = conn(HELLO_DONE | NOTIFIED, 50);
        let hello_only = conn(HELLO_DONE, 40);
        let no_hello_new = conn(0, 90);
        let no_hello_old = conn(0, 80);
        let all = [
            &busy_old,
            &used_old,
            &used_new,
            &hello_only,
            &no_hello_new,
            &no_hello_old,
        ];
        let mut order = Vec::new();
        while let Some(v) = pick_victim(all.iter().copied()) {
            assert!(v.is_evicted());
            order.push(v.last_active.load(Ordering::Relaxed));
        }
        // Never a connection with NOTIFYs in flight; each victim is claimed once.
        assert_eq!(order, [80, 90, 40, 10, 50]);
        assert!(!busy_old.is_evicted());
        // Once its NOTIFYs are answered it is a candidate like any other.
        busy_old.state.fetch_sub(2, Ordering::Relaxed);
        assert!(Arc::ptr_eq(
            &pick_victim(all.iter().copied()).unwrap(),
            &busy_old
        ));
    }

    #[test]
    fn a_notify_that_starts_first_wins_the_race_with_eviction() {
        let c = conn(HELLO_DONE, 0);
        c.state.fetch_add(1, Ordering::AcqRel); // a NOTIFY started
        assert!(!c.try_evict());
        c.state.fetch_sub(1, Ordering::AcqRel);
        assert!(c.try_evict());
        assert!(!c.try_evict(), "claimed twice");
    }

    #[tokio::test]
    async fn table_admits_up_to_the_limit_then_evicts_then_refuses() {
        let table = ConnTable::new(2);
        let peer = Peer::Tcp(([127, 0, 0, 1], 1).into());
        let admit = |t: &Arc<ConnTable>| match t.admit(peer) {
            Admission::Admitted { slot, evicted } => Some((slot, evicted)),
            Admission::Full => None,
        };
        let (a, ev) = admit(&table).unwrap();
        assert!(ev.is_none());
        let (b, ev) = admit(&table).unwrap();
        assert!(ev.is_none());
        a.hello_done(Instant::now());
        b.hello_done(Instant::now());
        a.notify_started(Instant::now());
        // b is idle: evicted for c (class 1: HELLO, never a NOTIFY).
        let (c, ev) = admit(&table).unwrap();
        assert_eq!(ev.map(|(_, class)| class), Some(1));
        assert!(b.shared.is_evicted() && !a.shared.is_evicted());
        c.hello_done(Instant::now());
        c.notify_started(Instant::now());
        // a and c are busy, b is on its way out: refused.
        assert!(admit(&table).is_none());
        drop(b);
        assert!(
            admit(&table).is_none(),
            "b's end frees nothing: a and c fill the limit"
        );
        a.notify_done(Instant::now());
        let (_d, ev) = admit(&table).unwrap();
        assert_eq!(ev.map(|(_, class)| class), Some(2));
        assert!(a.shared.is_evicted());
    }

    #[test]
    fn limits_from_config() {
        let c = SpopConfig {
            idle_timeout: crate::config::Dur(Duration::from_millis(300)),
            max_inflight_per_connection: 0,
            ..SpopConfig::default()
        };
        let l = Limits::from(&c);
        assert_eq!(l.write_timeout, Duration::from_millis(300));
        assert_eq!(l.evict_grace, c.shutdown_grace.0);
        assert_eq!(l.max_inflight, 1);
    }
}
