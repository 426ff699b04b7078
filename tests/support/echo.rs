//! A loopback HTTP(S) upstream that stands in for Databricks: it records every request it
//! receives (method, path, all headers) and answers `200` with them as JSON.
//!
//! [`EchoServer::start`] serves HTTPS with a certificate for [`UPSTREAM_HOST`] issued by a
//! throw-away CA (made with the `openssl` command, as Debian's ca-certificates package always
//! brings it), so the shipped HAProxy configuration's TLS re-encryption, SNI and certificate
//! verification run for real. [`EchoServer::start_plain`] serves plain HTTP.
//!
//! The server runs on its own thread and Tokio runtime, so the handle can be used from plain
//! `#[test]` functions and from async tests alike; dropping it stops the server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::IntoResponse;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

use super::haproxy::Upstream;

/// The host name the echo server's certificate is issued for (HAProxy sends it as SNI and Host).
pub const UPSTREAM_HOST: &str = "workspace.idgate.test";

/// Bound on one TLS handshake, so a client that connects and stays silent cannot block the
/// accept loop.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Lifetime of the generated certificates: enough for any test run.
const CERT_DAYS: &str = "2";

/// One request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// Every header field in order, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body_len: usize,
}

impl RecordedRequest {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Default)]
struct Shared {
    requests: Mutex<Vec<RecordedRequest>>,
    failed_handshakes: AtomicUsize,
}

/// The running echo upstream. Stopped on drop.
pub struct EchoServer {
    pub addr: SocketAddr,
    /// CA certificate (PEM) that verifies this server; `None` for plain HTTP.
    pub ca_file: Option<PathBuf>,
    shared: Arc<Shared>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl EchoServer {
    /// HTTPS on 127.0.0.1 with a fresh CA and a certificate for [`UPSTREAM_HOST`] and
    /// 127.0.0.1.
    pub fn start() -> EchoServer {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let certs = TestCerts::generate(dir.path(), UPSTREAM_HOST);
        let config = server_tls_config(&certs);
        Self::spawn(dir, Some(certs.ca), Some(config))
    }

    /// Plain HTTP on 127.0.0.1.
    pub fn start_plain() -> EchoServer {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        Self::spawn(dir, None, None)
    }

    fn spawn(
        dir: TempDir,
        ca_file: Option<PathBuf>,
        tls: Option<rustls::ServerConfig>,
    ) -> EchoServer {
        let shared = Arc::new(Shared::default());
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let state = shared.clone();
        let thread = std::thread::Builder::new()
            .name("echo-upstream".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the echo server runtime");
                rt.block_on(async move {
                    let listener = TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("binding the echo server");
                    addr_tx
                        .send(listener.local_addr().expect("local addr"))
                        .expect("reporting the address");
                    let app = axum::Router::new()
                        .fallback(record)
                        .with_state(state.clone());
                    let stop = async {
                        let _ = shutdown_rx.await;
                    };
                    let served = match tls {
                        Some(config) => {
                            let listener = TlsListener {
                                inner: listener,
                                acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
                                shared: state,
                            };
                            axum::serve(listener, app)
                                .with_graceful_shutdown(stop)
                                .await
                        }
                        None => {
                            axum::serve(listener, app)
                                .with_graceful_shutdown(stop)
                                .await
                        }
                    };
                    served.expect("echo server failed");
                });
            })
            .expect("spawning the echo server thread");
        let addr = addr_rx
            .recv_timeout(super::READY_TIMEOUT)
            .expect("the echo server did not start");
        EchoServer {
            addr,
            ca_file,
            shared,
            shutdown: Some(shutdown_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// This server as HAProxy's Databricks upstream. Panics for a plain-HTTP server (the
    /// shipped configuration always re-encrypts).
    pub fn upstream(&self) -> Upstream {
        Upstream {
            addr: self.addr,
            host: UPSTREAM_HOST.to_string(),
            ca_file: self
                .ca_file
                .clone()
                .expect("the HAProxy upstream must be a TLS echo server"),
        }
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().expect("echo state").clone()
    }

    /// How many requests were received so far.
    pub fn count(&self) -> usize {
        self.shared.requests.lock().expect("echo state").len()
    }

    /// TLS handshakes that failed (e.g. a client that rejected the certificate).
    pub fn failed_handshakes(&self) -> usize {
        self.shared.failed_handshakes.load(Ordering::Relaxed)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The request target as received: path and query.
pub fn target(uri: &Uri) -> String {
    uri.path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| uri.path().to_string())
}

/// Every header as (lowercase name, value), in order, values lossily as UTF-8.
pub fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let req = RecordedRequest {
        method: method.to_string(),
        path: target(&uri),
        headers: header_pairs(&headers),
        body_len: body.len(),
    };
    let json = serde_json::json!({
        "method": req.method,
        "path": req.path,
        "headers": req.headers,
        "body_len": req.body_len,
    });
    shared.requests.lock().expect("echo state").push(req);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
}

/// Accepts TCP connections and completes the TLS handshake before handing them to axum.
struct TlsListener {
    inner: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.inner.accept().await {
                Ok(accepted) => accepted,
                Err(_) => {
                    // e.g. EMFILE: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                _ => {
                    self.shared
                        .failed_handshakes
                        .fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A CA and a server certificate signed by it, as PEM files.
pub struct TestCerts {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA's private key ([`TestCerts::issue`] signs more server certificates with it).
    pub ca_key: PathBuf,
}

impl TestCerts {
    /// Makes a P-256 CA and a server certificate for `host` and 127.0.0.1 in `dir`.
    pub fn generate(dir: &Path, host: &str) -> TestCerts {
        let p = |name: &str| dir.join(name);
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            path_str(&p("ca.key")),
            "-out",
            path_str(&p("ca.pem")),
            "-days",
            CERT_DAYS,
            "-subj",
            "/CN=idgate test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        let (cert, key) = issue_leaf(dir, &p("ca.pem"), &p("ca.key"), "server", host);
        TestCerts {
            ca: p("ca.pem"),
            cert,
            key,
            ca_key: p("ca.key"),
        }
    }

    /// Another server certificate from the same CA, for the DNS name `host` (a `*.` wildcard
    /// is fine) and 127.0.0.1, written as `<stem>.pem`/`<stem>.key` beside the CA. Returns a
    /// [`TestCerts`] with the same CA whose `cert`/`key` are the new ones.
    pub fn issue(&self, stem: &str, host: &str) -> TestCerts {
        let dir = self.ca.parent().expect("the CA file has a directory");
        let (cert, key) = issue_leaf(dir, &self.ca, &self.ca_key, stem, host);
        TestCerts {
            ca: self.ca.clone(),
            cert,
            key,
            ca_key: self.ca_key.clone(),
        }
    }
}

/// A P-256 server certificate for `host` and 127.0.0.1 signed by the CA, as
/// `<dir>/<stem>.pem` and `<dir>/<stem>.key`.
fn issue_leaf(dir: &Path, ca: &Path, ca_key: &Path, stem: &str, host: &str) -> (PathBuf, PathBuf) {
    let p = |ext: &str| dir.join(format!("{stem}.{ext}"));
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path_str(&p("key")),
        "-out",
        path_str(&p("csr")),
        "-subj",
        &format!("/CN={host}"),
    ]);
    std::fs::write(
        p("ext"),
        format!(
            "basicConstraints=critical,CA:FALSE\n\
                 keyUsage=critical,digitalSignature\n\
                 extendedKeyUsage=serverAuth\n\
                 subjectAltName=DNS:{host},IP:127.0.0.1\n"
        ),
    )
    .expect("writing the certificate extensions");
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&p("csr")),
        "-CA",
        path_str(ca),
        "-CAkey",
        path_str(ca_key),
        "-CAcreateserial",
        "-days",
        CERT_DAYS,
        "-extfile",
        path_str(&p("ext")),
        "-out",
        path_str(&p("pem")),
    ]);
    (p("pem"), p("key"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("running openssl (Debian package `openssl`)");
    assert!(
        out.status.success(),
        "openssl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn server_tls_config(certs: &TestCerts) -> rustls::ServerConfig {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(&certs.cert)
        .expect("reading the server certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parsing the server certificate");
    let key = PrivateKeyDer::from_pem_file(&certs.key).expect("reading the server key");
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("building the TLS server config")
}
