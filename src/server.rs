//! The tokio shell around [`crate::spop`]: the listener and one task per connection.
//!
//! * **Listener** ([`serve`]): accepts with a large backlog ([`bind`]), caps open connections
//!   with a semaphore (the excess is answered with AGENT-DISCONNECT 13 and closed at once),
//!   backs off on accept errors, and on shutdown stops accepting and drains (below).
//! * **Connection task**: reads into the sans-IO [`Connection`], runs each NOTIFY's decision,
//!   writes complete frames with one `write_all` per batch, and enforces the HELLO and idle
//!   timeouts (a peer that sends half a frame and stalls is dropped with AGENT-DISCONNECT 2).
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
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use prometheus::IntCounter;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tracing::{debug, error, info, warn};

use crate::authorize;
use crate::config::SpopConfig;
use crate::decision::{Authorizer, Reason, Verdict};
use crate::metrics::metrics;
use crate::shutdown::{Drain, DrainWatch};
use crate::spop::frame::{self, Action, Scope};
use crate::spop::{
    AckError, CloseReason, ConnConfig, Connection, Event, FrameType, Notify, ProtocolError, Status,
    TypedData,
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

/// The per-connection settings taken from `[spop]`.
#[derive(Debug, Clone, Copy)]
struct Limits {
    max_frame_size: u32,
    max_inflight: usize,
    hello_timeout: Duration,
    idle_timeout: Duration,
    write_timeout: Duration,
}

impl From<&SpopConfig> for Limits {
    fn from(c: &SpopConfig) -> Limits {
        Limits {
            max_frame_size: c.max_frame_size,
            max_inflight: c.max_inflight_per_connection.max(1),
            hello_timeout: c.hello_timeout.0,
            idle_timeout: c.idle_timeout.0,
            write_timeout: WRITE_TIMEOUT.min(c.idle_timeout.0),
        }
    }
}

/// Serve SPOP on `listener` until `shutdown` resolves, then drain (module docs) and return.
pub async fn serve<A: Authorizer>(
    listener: TcpListener,
    cfg: SpopConfig,
    authorizer: Arc<A>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = Limits::from(&cfg);
    let permits = Arc::new(Semaphore::new(cfg.max_connections.max(1)));
    let (drain, _) = Drain::new();
    let mut tasks = JoinSet::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    tokio::pin!(shutdown);
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "SPOP listener ready");
    }
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(res) = tasks.join_next(), if !tasks.is_empty() => log_join(res),
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    backoff = ACCEPT_BACKOFF_MIN;
                    match permits.clone().try_acquire_owned() {
                        Ok(permit) => {
                            let authorizer = authorizer.clone();
                            let watch = drain.watch();
                            tasks.spawn(async move {
                                run_connection(stream, peer, limits, authorizer, watch).await;
                                drop(permit);
                            });
                        }
                        Err(_) => reject(stream, peer, cfg.max_connections),
                    }
                }
                Err(e) => {
                    if let Some(suppressed) = LOG_LIMIT.allow("accept", "") {
                        warn!(error = %e, suppressed, "accept failed; backing off {backoff:?}");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                }
            },
        }
    }
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

fn log_join(res: Result<(), tokio::task::JoinError>) {
    if let Err(e) = res {
        if e.is_panic() {
            error!("SPOP connection task panicked: {e}");
        }
    }
}

/// Over the connection limit: say why (AGENT-DISCONNECT 13, without waiting for the HELLO)
/// if the socket takes it right away, and close.
fn reject(stream: TcpStream, peer: SocketAddr, max: usize) {
    let mut buf = BytesMut::new();
    frame::encode_agent_disconnect(&mut buf, Status::ResourceAllocation, "too many connections");
    let _ = stream.try_write(&buf);
    metrics()
        .spop_connection_errors
        .with_label_values(&[Status::ResourceAllocation.label()])
        .inc();
    if let Some(suppressed) = LOG_LIMIT.allow("connection_limit", "") {
        warn!(%peer, max, suppressed, "SPOP connection limit reached; connection refused");
    }
}

/// How a connection ended, for logs and metrics.
enum End {
    Closed(CloseReason),
    Eof(Option<ProtocolError>),
    Io(io::Error),
    Timeout { hello: bool, partial: bool },
    Drained { unanswered: usize },
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

/// Run one NOTIFY's decision. A panicking authorizer still yields an answer (500
/// `internal_error`), so the NOTIFY still gets its ACK.
async fn decide<A: Authorizer>(authorizer: &A, n: Notify) -> (u64, u64, Verdict) {
    let req = authorize::request_from_messages(&n.messages);
    drop(n.messages);
    let verdict = AssertUnwindSafe(authorizer.authorize(req))
        .catch_unwind()
        .await
        .unwrap_or_else(|_| {
            error!("authorizer panicked; answering internal_error");
            Verdict::deny(Reason::InternalError)
        });
    (n.stream_id, n.frame_id, verdict)
}

/// Queue the ACK for a finished decision.
fn ack(conn: &mut Connection, stream_id: u64, frame_id: u64, verdict: &Verdict) {
    let Some(mfs) = conn.max_frame_size() else {
        return; // closed meanwhile: the ACK is moot
    };
    let actions = authorize::verdict_actions(verdict, stream_id, frame_id, mfs);
    match conn.send_ack(stream_id, frame_id, &actions) {
        Ok(()) | Err(AckError::NotOpen) => {}
        Err(e @ AckError::TooBig { .. }) => {
            // verdict_actions fits the frame, so this is a bug; still answer.
            error!("{e}; answering internal_error");
            let fallback = [
                Action::set(Scope::Txn, authorize::var::ALLOW, TypedData::Bool(false)),
                Action::set(Scope::Txn, authorize::var::STATUS, TypedData::Int64(500)),
                Action::set(
                    Scope::Txn,
                    authorize::var::REASON,
                    TypedData::static_str(Reason::InternalError.as_str()),
                ),
            ];
            let _ = conn.send_ack(stream_id, frame_id, &fallback);
        }
    }
}

async fn write_frames(
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
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

async fn run_connection<A: Authorizer>(
    mut stream: TcpStream,
    peer: SocketAddr,
    limits: Limits,
    authorizer: Arc<A>,
    mut drain: DrainWatch,
) {
    let _gauge = OpenGauge::new();
    // ACKs are small and written whole; do not let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let authorizer: &A = &authorizer;
    let mut conn = Connection::new(ConnConfig {
        max_frame_size: limits.max_frame_size,
    });
    let mut inflight = FuturesUnordered::new();
    let mut draining = drain.deadline();
    let idle = tokio::time::sleep(limits.hello_timeout);
    tokio::pin!(idle);
    let (mut rd, mut wr) = stream.split();

    let end = loop {
        // Decode what is buffered, as long as there is room for more decisions.
        let mut closed = None;
        while inflight.len() < limits.max_inflight {
            match conn.poll_event() {
                None => break,
                Some(Event::Ready {
                    max_frame_size,
                    pipelining,
                }) => {
                    debug!(%peer, max_frame_size, pipelining, "SPOP HELLO done");
                    idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                }
                Some(Event::Notify(n)) => {
                    idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                    inflight.push(decide(authorizer, n));
                }
                Some(Event::Close(reason)) => {
                    closed = Some(reason);
                    break;
                }
            }
        }
        if let Err(e) = write_frames(&mut wr, &mut conn, limits.write_timeout).await {
            break End::Io(e);
        }
        if let Some(reason) = closed {
            break End::Closed(reason);
        }
        if draining.is_some() && inflight.is_empty() {
            conn.close(Status::Normal, "agent shutting down");
            break End::Drained { unanswered: 0 };
        }

        let can_read = draining.is_none() && inflight.len() < limits.max_inflight;
        tokio::select! {
            biased;
            Some((sid, fid, verdict)) = inflight.next(), if !inflight.is_empty() => {
                ack(&mut conn, sid, fid, &verdict);
                // Batch every other finished decision into the same write.
                while let Some(Some((sid, fid, verdict))) = inflight.next().now_or_never() {
                    ack(&mut conn, sid, fid, &verdict);
                }
                if conn.is_ready() {
                    idle.as_mut().reset(Instant::now() + limits.idle_timeout);
                }
            }
            deadline = drain.started(), if draining.is_none() => draining = Some(deadline),
            () = sleep_until(draining.unwrap_or_else(Instant::now)), if draining.is_some() => {
                let unanswered = inflight.len();
                conn.close(Status::Normal, "agent shutting down");
                break End::Drained { unanswered };
            }
            res = rd.read_buf(conn.recv_buf()), if can_read => match res {
                Ok(0) => break End::Eof(conn.handle_eof()),
                Ok(_) => {}
                Err(e) => break End::Io(e),
            },
            () = &mut idle, if draining.is_none() && inflight.is_empty() => {
                let (hello, partial) = (!conn.is_ready(), conn.has_partial_frame());
                conn.handle_timeout();
                break End::Timeout { hello, partial };
            }
        }
    };

    // Last frames (AGENT-HELLO of a health check, AGENT-DISCONNECT), best effort.
    let flushed = write_frames(&mut wr, &mut conn, limits.write_timeout).await;
    let peer_gone = matches!(end, End::Eof(None) | End::Io(_)) || flushed.is_err();
    log_end(peer, &end);
    if !peer_gone {
        linger_close(&mut stream).await;
    }
}

/// Half-close, then discard input until the peer closes (bounded), so the kernel does not
/// answer unread input with an RST that could overtake our last frame.
async fn linger_close(stream: &mut TcpStream) {
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

fn log_end(peer: SocketAddr, end: &End) {
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

    #[test]
    fn limits_from_config() {
        let c = SpopConfig {
            idle_timeout: crate::config::Dur(Duration::from_millis(300)),
            max_inflight_per_connection: 0,
            ..SpopConfig::default()
        };
        let l = Limits::from(&c);
        assert_eq!(l.write_timeout, Duration::from_millis(300));
        assert_eq!(l.max_inflight, 1);
    }
}
