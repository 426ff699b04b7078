//! One SPOP connection's task: read, answer NOTIFYs, write, time out, drain or be evicted
//! (module docs of [`super`]).

use std::io;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::{sleep_until, timeout, Instant};
use tracing::{debug, error, info, warn};

use super::table::ConnSlot;
use super::LOG_LIMIT;
use super::{Limits, Peer, SpopStream};
use crate::contract;
use crate::decision::Authorizer;
use crate::metrics::metrics;
use crate::shutdown::DrainWatch;
use crate::spop::{
    AckError, CloseReason, ConnConfig, Connection, Event, FrameType, ProtocolError, Status,
};

/// After our last frame we half-close and read (and discard) until the peer closes, at most
/// this long and [`LINGER_MAX_BYTES`]. Closing with unread input makes the kernel send an RST,
/// which can destroy the AGENT-DISCONNECT before the peer reads it.
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
const LINGER_MAX_BYTES: usize = 256 * 1024;

/// Serve one connection until it ends: HELLO, then NOTIFYs answered concurrently through
/// [`contract::answer`] (at most `limits.max_inflight` at a time; ACKs in completion order),
/// until EOF, a protocol error, a timeout, the drain or an eviction; then the last frames and a
/// bounded linger.
pub(super) async fn run_connection<A: Authorizer, S: SpopStream>(
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
        if closing.is_none() && slot.is_evicted() {
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
                    inflight.push(contract::answer(
                        authorizer,
                        n,
                        max_frame_size,
                        now.into_std(),
                    ));
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
            () = slot.evicted(), if closing.is_none() => {}
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

/// Why a connection stops reading and winds down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Closing {
    Drain,
    Evict,
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
