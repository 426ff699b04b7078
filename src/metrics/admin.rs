//! Admin HTTP endpoint (contract §5): `GET /metrics`, `GET /live`, `GET /ready`.
//!
//! It runs on its own listener (`[admin] listen`, loopback by default), separate from SPOP, so
//! a scrape or a probe never competes with HAProxy for the SPOP port and the endpoint can be
//! firewalled on its own.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | 200, Prometheus text format 0.0.4, every metric of [`super::metrics()`] |
//! | `/live` | 200 `ok` while the process runs (the runtime answers, so it is not wedged) |
//! | `/ready` | 200 `ok` when the [`ReadinessCheck`] reports nothing missing, else 503 with one line per missing thing |
//! | anything else | 404; other methods on the paths above: 405 |
//!
//! The server is hyper's HTTP/1 connection driver directly rather than `axum::serve`, for the
//! limits that `axum::serve` lacks and an endpoint reachable by a monitoring network needs: a
//! header read timeout (a client that connects and sends nothing is dropped, also between
//! keep-alive requests) and a cap on concurrent connections.
//!
//! **Monitoring must keep working when the cap is reached** (a client that opens the cap's
//! worth of idle connections must not make `/live` unanswered, or the process gets restarted
//! by its liveness probe). So at the cap a new connection evicts the connection idle longest:
//! one that has no request in progress (idle between keep-alive requests, or still sending
//! its request head) is closed, after finishing a response it may be writing (hyper's graceful
//! connection shutdown, bounded by one second). Only when every connection has a request in
//! its handler does a new one wait for a slot. Evictions are counted in
//! `idgate_admin_connections_evicted_total`.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};

use super::metrics;

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why `/ready` is (not) ready: empty means ready, else one human-readable line per missing
/// prerequisite, e.g. `spop listener not up`, `issuer corp: keys not loaded`. Warnings (e.g. a
/// configuration that refuses every request) do not make it unready; `/ready` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    missing: Vec<String>,
    warnings: Vec<String>,
}

impl Readiness {
    /// Nothing missing.
    pub fn ready() -> Self {
        Readiness::default()
    }

    /// Not ready, for one reason.
    pub fn not_ready(why: impl Into<String>) -> Self {
        Readiness {
            missing: vec![why.into()],
            warnings: Vec::new(),
        }
    }

    /// Record one more missing prerequisite.
    pub fn missing(&mut self, why: impl Into<String>) -> &mut Self {
        self.missing.push(why.into());
        self
    }

    /// Record a warning: ready, but an operator should know (shown in `/ready`'s body).
    pub fn warn(&mut self, what: impl Into<String>) -> &mut Self {
        self.warnings.push(what.into());
        self
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn is_ready(&self) -> bool {
        self.missing.is_empty()
    }

    /// The missing prerequisites, in the order they were recorded.
    pub fn reasons(&self) -> &[String] {
        &self.missing
    }
}

impl From<bool> for Readiness {
    fn from(ready: bool) -> Self {
        if ready {
            Readiness::ready()
        } else {
            Readiness::not_ready("not ready")
        }
    }
}

/// What `/ready` asks. Implemented for every `Fn() -> R` where `R` is `bool` or [`Readiness`],
/// so the engine can pass a closure:
///
/// ```
/// use idgate::metrics::admin::Readiness;
/// let check = || {
///     let mut r = Readiness::ready();
///     let spop_up = true; // e.g. an AtomicBool set once the SPOP listener is bound
///     if !spop_up {
///         r.missing("spop listener not up");
///     }
///     for (issuer, loaded) in [("corp", false)] {
///         if !loaded {
///             r.missing(format!("issuer {issuer}: keys not loaded"));
///         }
///     }
///     r
/// };
/// # let _ = &check;
/// ```
///
/// It is called on every `/ready` and `/metrics` request, on a tokio worker: keep it cheap and
/// non-blocking (atomic loads, an `ArcSwap` snapshot).
pub trait ReadinessCheck: Send + Sync + 'static {
    fn check(&self) -> Readiness;
}

impl<F, R> ReadinessCheck for F
where
    F: Fn() -> R + Send + Sync + 'static,
    R: Into<Readiness>,
{
    fn check(&self) -> Readiness {
        self().into()
    }
}

/// Limits of the admin server. [`Default`] is what `idgate run` uses.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// A connection that has not sent a complete request head within this time is closed,
    /// including an idle keep-alive connection waiting for its next request. Prometheus and
    /// probes send their request at once; 5 s is generous for them and short for a slowloris.
    pub header_read_timeout: Duration,
    /// Most concurrent connections. A Prometheus pair and a few probes need a handful; the cap
    /// keeps a misbehaving client from holding thousands of file descriptors. At the cap a new
    /// connection evicts the connection idle longest (module docs); only when every
    /// connection has a request in progress does it wait for one to finish.
    pub max_connections: usize,
    /// On shutdown, how long in-flight requests may take before their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 64,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Pause after a failed `accept` (typically EMFILE): long enough not to spin at 100 % CPU while
/// the process is out of file descriptors, short enough to recover at once when one frees up.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// How long an evicted connection may take to finish what it is doing (writing a response)
/// before it is dropped. A connection with half a request head is dropped after this too.
const EVICT_GRACE: Duration = Duration::from_secs(1);

/// The admin routes, for embedding or testing without a socket.
pub fn router(readiness: impl ReadinessCheck) -> Router {
    let readiness: Arc<dyn ReadinessCheck> = Arc::new(readiness);
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/live", get(live_handler))
        .route("/ready", get(ready_handler))
        .fallback(not_found)
        .with_state(readiness)
}

/// Serve the admin endpoint on `listener` until `shutdown` completes, with
/// [`AdminOptions::default`]. `GET` and `HEAD` only.
///
/// ```no_run
/// # async fn f(cfg: idgate::config::Config) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind(cfg.admin.listen).await?;
/// let (tx, rx) = tokio::sync::oneshot::channel::<()>();
/// let admin = tokio::spawn(idgate::metrics::admin::serve_admin(listener, || true, async {
///     let _ = rx.await;
/// }));
/// // ... on SIGTERM:
/// let _ = tx.send(());
/// admin.await.expect("admin task")?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// None today: accept errors are logged and retried. The `Result` leaves room for errors that
/// must stop the agent.
pub async fn serve_admin(
    listener: TcpListener,
    readiness: impl ReadinessCheck,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    serve_admin_with(listener, readiness, shutdown, AdminOptions::default()).await
}

/// [`serve_admin`] with explicit limits.
pub async fn serve_admin_with(
    listener: TcpListener,
    readiness: impl ReadinessCheck,
    shutdown: impl Future<Output = ()> + Send,
    options: AdminOptions,
) -> io::Result<()> {
    let app = router(readiness);
    let table = Arc::new(ConnTable::new(options.max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin endpoint listening");
    }
    tokio::pin!(shutdown);

    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        // At the cap with every connection busy: wait for one to end (this connection waits
        // accepted, the next ones in the kernel's queue).
        let slot = loop {
            if let Some(slot) = table.admit() {
                break Some(slot);
            }
            tokio::select! {
                () = &mut shutdown => break None,
                () = table.freed.notified() => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        };
        let Some(slot) = slot else { break };
        let service = Tracked {
            inner: TowerToHyperService::new(app.clone()),
            slot: slot.shared.clone(),
            table: table.clone(),
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            tokio::pin!(conn);
            let mut deadline: Option<Instant> = None;
            loop {
                tokio::select! {
                    res = conn.as_mut() => {
                        if let Err(e) = res {
                            tracing::debug!(error = %e, "admin connection ended with an error");
                        }
                        break;
                    }
                    () = slot.shared.evict.notified(), if deadline.is_none() => {
                        // Idle: closes at once. Writing a response: closes after it.
                        conn.as_mut().graceful_shutdown();
                        deadline = Some(Instant::now() + EVICT_GRACE);
                    }
                    Ok(()) = stop.changed(), if deadline.is_none() => {
                        conn.as_mut().graceful_shutdown();
                        deadline = Some(Instant::now() + Duration::from_secs(3600));
                    }
                    () = sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => break,
                }
            }
            drop(slot);
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::debug!("admin connections still open after the grace period; dropping them");
        tasks.shutdown().await;
    }
    Ok(())
}

// ----- the connection table: eviction of the connection idle longest at the cap -----

/// The admin server's clock origin, for [`AdminConn::last_active`].
static ADMIN_EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    ADMIN_EPOCH.elapsed().as_millis() as u64
}

/// When the last eviction warning was logged (ms since [`ADMIN_EPOCH`], 0: never).
static LAST_EVICT_WARN: AtomicU64 = AtomicU64::new(0);

/// A connection as the accept loop sees it.
#[derive(Debug)]
struct AdminConn {
    /// Requests in progress (in the handler), and [`EVICTED`].
    state: AtomicU64,
    /// Last activity (accept, a request's start or end), in ms since the table's epoch.
    last_active: AtomicU64,
    evict: Notify,
}

const EVICTED: u64 = 1 << 63;

#[derive(Debug)]
struct ConnTable {
    max: usize,
    inner: Mutex<TableInner>,
    /// Notified whenever a connection ends or goes idle (the accept loop may be waiting for a
    /// slot).
    freed: Notify,
}

#[derive(Debug, Default)]
struct TableInner {
    next_id: u64,
    conns: HashMap<u64, Arc<AdminConn>>,
    evicting: usize,
}

impl ConnTable {
    fn new(max: usize) -> ConnTable {
        ConnTable {
            max: max.max(1),
            inner: Mutex::new(TableInner::default()),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TableInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for a new connection, evicting the connection idle longest at the cap; `None`
    /// when every connection has a request in progress (or evicted ones pile up).
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut t = self.lock();
        if t.conns.len() - t.evicting >= self.max {
            if t.conns.len() >= self.max * 2 {
                return None;
            }
            let mut idle: Vec<&Arc<AdminConn>> = t
                .conns
                .values()
                .filter(|c| c.state.load(Ordering::Acquire) == 0)
                .collect();
            idle.sort_unstable_by_key(|c| c.last_active.load(Ordering::Relaxed));
            let victim = idle.into_iter().find(|c| {
                c.state
                    .compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })?;
            victim.evict.notify_one();
            t.evicting += 1;
            metrics().admin_connections_evicted.inc();
            // One line per 10 s at most: a flood evicts many times a second.
            let now = now_ms().max(1);
            let last = LAST_EVICT_WARN.load(Ordering::Relaxed);
            if last == 0 || now.saturating_sub(last) >= 10_000 {
                LAST_EVICT_WARN.store(now, Ordering::Relaxed);
                tracing::warn!(
                    max = self.max,
                    "admin connection limit reached; closing the connection idle longest \
                     (counted in idgate_admin_connections_evicted_total)"
                );
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let shared = Arc::new(AdminConn {
            state: AtomicU64::new(0),
            last_active: AtomicU64::new(now_ms()),
            evict: Notify::new(),
        });
        t.conns.insert(id, shared.clone());
        Some(Slot {
            table: self.clone(),
            id,
            shared,
        })
    }
}

/// A connection's entry; removed (and the accept loop woken) on drop.
struct Slot {
    table: Arc<ConnTable>,
    id: u64,
    shared: Arc<AdminConn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut t = self.table.lock();
            t.conns.remove(&self.id);
            if self.shared.state.load(Ordering::Acquire) & EVICTED != 0 {
                t.evicting -= 1;
            }
        }
        self.table.freed.notify_one();
    }
}

/// The router, counting the requests in progress on its connection (they make it busy: not
/// evictable).
struct Tracked<S> {
    inner: S,
    slot: Arc<AdminConn>,
    table: Arc<ConnTable>,
}

impl<S, R> hyper::service::Service<R> for Tracked<S>
where
    S: hyper::service::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn call(&self, req: R) -> Self::Future {
        let busy = Busy::enter(self.slot.clone(), self.table.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let res = fut.await;
            drop(busy);
            res
        })
    }
}

struct Busy {
    conn: Arc<AdminConn>,
    table: Arc<ConnTable>,
}

impl Busy {
    fn enter(conn: Arc<AdminConn>, table: Arc<ConnTable>) -> Busy {
        conn.state.fetch_add(1, Ordering::AcqRel);
        conn.last_active.store(now_ms(), Ordering::Relaxed);
        Busy { conn, table }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.conn.last_active.store(now_ms(), Ordering::Relaxed);
        if self.conn.state.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Idle now: evictable. A connection waiting at the cap for every connection to
            // be busy no more is admitted at once (not when this one closes).
            self.table.freed.notify_one();
        }
    }
}

type Shared = Arc<dyn ReadinessCheck>;

/// Evaluate readiness and mirror it into `idgate_ready`.
fn current_readiness(check: &Shared) -> Readiness {
    let r = check.check();
    metrics().ready.set(i64::from(r.is_ready()));
    r
}

async fn metrics_handler(State(check): State<Shared>) -> Response {
    current_readiness(&check);
    (
        [
            (header::CONTENT_TYPE, METRICS_CONTENT_TYPE),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics().render(),
    )
        .into_response()
}

async fn live_handler() -> Response {
    plain(StatusCode::OK, "ok\n".to_owned())
}

async fn ready_handler(State(check): State<Shared>) -> Response {
    let r = current_readiness(&check);
    let mut body = if r.is_ready() {
        String::from("ok\n")
    } else {
        let mut body = String::from("not ready:\n");
        for why in r.reasons() {
            body.push_str("- ");
            body.push_str(why);
            body.push('\n');
        }
        body
    };
    for w in r.warnings() {
        body.push_str("warning: ");
        body.push_str(w);
        body.push('\n');
    }
    let status = if r.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    plain(status, body)
}

async fn not_found() -> Response {
    plain(StatusCode::NOT_FOUND, "not found\n".to_owned())
}

fn plain(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_collects_reasons() {
        let mut r = Readiness::ready();
        assert!(r.is_ready());
        r.missing("spop listener not up")
            .missing("issuer corp: keys not loaded");
        assert!(!r.is_ready());
        assert_eq!(
            r.reasons(),
            ["spop listener not up", "issuer corp: keys not loaded"]
        );
        assert!(Readiness::from(true).is_ready());
        assert!(!Readiness::from(false).is_ready());
        let closure = || false;
        assert!(!ReadinessCheck::check(&closure).is_ready());
    }
}
