//! The tokio shell around [`crate::spop`]: the listener and one task per connection.
//!
//! * **Listener** ([`serve`]): TCP ([`bind`]) or a Unix socket ([`bind_listener`] with a
//!   `unix:` address; see "Unix socket" below), accepted with a large backlog. The number of
//!   open connections is capped by `spop.max_connections` with eviction (below); backs off
//!   on accept errors, and on shutdown stops accepting and drains (below).
//! * **Connection task** (`connection.rs`): reads into the sans-IO [`Connection`], answers
//!   each NOTIFY through [`contract::answer`] (request, decision, variables: this shell never
//!   names a variable), queues the ACK it returns, writes complete frames with one `write_all`
//!   per batch, and enforces the HELLO and idle timeouts (a peer that sends half a frame and
//!   stalls is dropped with AGENT-DISCONNECT 2). The frame handling is the same over TCP and
//!   over a Unix socket.
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
//! are debug. Protocol errors and timeouts are logged through the crate's one log limiter
//! ([`crate::telemetry::RateLimitedLog`], per kind: at most 10 lines a second, the next
//! admitted line carrying a "suppressed" count), because HAProxy 2.6 reconnects in a tight loop
//! after a refused HELLO (hundreds of connections per second).

mod connection;
mod table;
mod unix;

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};
use tracing::{error, info, warn};

use crate::config::{ListenAddr, SpopConfig};
use crate::decision::Authorizer;
use crate::metrics::metrics;
use crate::shutdown::Drain;
use crate::spop::frame;
use crate::spop::Status;

use connection::run_connection;
/// The shell's recurring events (module docs, "Logging").
pub(crate) static LOG_LIMIT: std::sync::LazyLock<crate::telemetry::RateLimitedLog> =
    std::sync::LazyLock::new(|| {
        crate::telemetry::RateLimitedLog::new(10, std::time::Duration::from_secs(1))
    });
use table::{Admission, ConnTable};
use unix::bind_unix;
pub use unix::UnixSocketListener;

/// First pause after a failed `accept` (EMFILE and friends); doubled up to
/// [`ACCEPT_BACKOFF_MAX`] so a descriptor shortage does not spin a core.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Longest wait for one write. HAProxy reads promptly; a peer that does not take a few
/// hundred bytes in this time is gone. (The idle timeout applies if it is shorter.)
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// After the drain deadline, connection tasks get this much longer to send their
/// AGENT-DISCONNECT before they are aborted.
const HARD_STOP_MARGIN: Duration = Duration::from_secs(1);

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

#[cfg(test)]
mod tests {
    use super::*;

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
