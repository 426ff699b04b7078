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
//! The server is hyper's HTTP/1 connection driver directly rather than `axum::serve`, for two
//! limits that `axum::serve` lacks and an endpoint reachable by a monitoring network needs: a
//! header read timeout (a client that connects and sends nothing is dropped, also between
//! keep-alive requests) and a cap on concurrent connections.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::metrics;

/// Content type of the Prometheus text exposition format.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why `/ready` is (not) ready: empty means ready, else one human-readable line per missing
/// prerequisite, e.g. `spop listener not up`, `issuer corp: keys not loaded`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    missing: Vec<String>,
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
        }
    }

    /// Record one more missing prerequisite.
    pub fn missing(&mut self, why: impl Into<String>) -> &mut Self {
        self.missing.push(why.into());
        self
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
    /// probes send their request at once; 10 s is generous for them and short for a slowloris.
    pub header_read_timeout: Duration,
    /// Most concurrent connections. A Prometheus pair and a few probes need a handful; the cap
    /// keeps a misbehaving client from holding thousands of file descriptors. Further
    /// connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// On shutdown, how long in-flight requests may take before their connections are dropped.
    pub shutdown_grace: Duration,
}

impl Default for AdminOptions {
    fn default() -> Self {
        AdminOptions {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 64,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Pause after a failed `accept` (typically EMFILE): long enough not to spin at 100 % CPU while
/// the process is out of file descriptors, short enough to recover at once when one frees up.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

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
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(options.max_connections.max(1)));
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin endpoint listening");
    }
    tokio::pin!(shutdown);

    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            p = Arc::clone(&permits).acquire_owned() => p.expect("semaphore is never closed"),
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(options.header_read_timeout)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }

    drop(listener);
    if tokio::time::timeout(options.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("admin connections still open after the grace period; dropping them");
    }
    Ok(())
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
    if r.is_ready() {
        return plain(StatusCode::OK, "ok\n".to_owned());
    }
    let mut body = String::from("not ready:\n");
    for why in r.reasons() {
        body.push_str("- ");
        body.push_str(why);
        body.push('\n');
    }
    plain(StatusCode::SERVICE_UNAVAILABLE, body)
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
