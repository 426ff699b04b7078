//! A TLS upstream for adversarial tests: it records the exact bytes HAProxy sends on every
//! connection and behaves like an h2c/WebSocket-capable server would, so that a tunnel or a
//! smuggled field would show up in the record.
//!
//! - A request with an `Upgrade` header is answered `101 Switching Protocols`, after which
//!   everything that arrives on the connection is recorded (a tunnel with no decision).
//! - Any other request is read to its end (Content-Length, or chunked including the trailer
//!   section) and answered `200` with a small body; keep-alive works.
//!
//! Blocking (a thread per connection), so it can be used from plain `#[test]` functions. Use
//! with `#[path = "support/raw_upstream.rs"] mod raw_upstream;` next to `mod support;`.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio_rustls::rustls::{ServerConfig, ServerConnection, StreamOwned};

use crate::support::echo::{server_tls_config, TestCerts, UPSTREAM_HOST};
use crate::support::haproxy::Upstream;

/// A connection silent for this long is closed (HAProxy's own idle timeouts are longer, and
/// a test never waits for this).
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest request head or chunk line accepted; anything bigger is recorded and dropped.
const MAX_HEAD: usize = 64 * 1024;

type Record = Arc<Mutex<Vec<Vec<u8>>>>;

/// The running upstream. Stopped on drop.
pub struct RawUpstream {
    pub addr: SocketAddr,
    ca_file: PathBuf,
    conns: Record,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: TempDir,
}

impl RawUpstream {
    pub fn start() -> RawUpstream {
        let dir = tempfile::tempdir().expect("creating a temp dir");
        let certs = TestCerts::generate(dir.path(), UPSTREAM_HOST);
        let tls = Arc::new(server_tls_config(&certs));
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the raw upstream");
        let addr = listener.local_addr().expect("local addr");
        let conns: Record = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (conns.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("raw-upstream".into())
            .spawn(move || accept_loop(listener, tls, c, s))
            .expect("spawning the raw upstream");
        RawUpstream {
            addr,
            ca_file: certs.ca,
            conns,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// This server as HAProxy's Databricks upstream.
    pub fn upstream(&self) -> Upstream {
        Upstream {
            addr: self.addr,
            host: UPSTREAM_HOST.to_string(),
            ca_file: self.ca_file.clone(),
        }
    }

    /// Every byte received so far, one entry per connection.
    pub fn connections(&self) -> Vec<Vec<u8>> {
        self.conns.lock().expect("raw upstream record").clone()
    }

    /// Everything received so far, all connections concatenated, as lossy text.
    pub fn text(&self) -> String {
        let all: Vec<u8> = self.connections().concat();
        String::from_utf8_lossy(&all).into_owned()
    }

    /// Bytes received so far, over all connections.
    pub fn len(&self) -> usize {
        self.conns
            .lock()
            .expect("raw upstream record")
            .iter()
            .map(Vec::len)
            .sum()
    }

    /// Forgets everything recorded (connections still open keep recording into new entries
    /// only if they are new; use between scenarios that open their own connections).
    pub fn clear(&self) {
        for c in self.conns.lock().expect("raw upstream record").iter_mut() {
            c.clear();
        }
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    conns: Record,
    stop: Arc<AtomicBool>,
) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let idx = {
            let mut c = conns.lock().expect("raw upstream record");
            c.push(Vec::new());
            c.len() - 1
        };
        let (tls, conns) = (tls.clone(), conns.clone());
        // Detached: each ends on EOF, error or READ_TIMEOUT.
        std::thread::spawn(move || {
            let _ = serve(stream, tls, &conns, idx);
        });
    }
}

/// Reads from the TLS stream, appending every byte to the connection's record.
struct Recorder {
    io: StreamOwned<ServerConnection, TcpStream>,
    buf: Vec<u8>,
    conns: Record,
    idx: usize,
}

impl Recorder {
    /// Reads more bytes into `buf`; false at EOF or on error.
    fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.io.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                self.conns.lock().expect("raw upstream record")[self.idx]
                    .extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Takes one CRLF-terminated line (without the CRLF).
    fn line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return Some(line);
            }
            if self.buf.len() > MAX_HEAD || !self.fill() {
                return None;
            }
        }
    }

    /// Consumes exactly `n` bytes.
    fn skip(&mut self, mut n: usize) -> Option<()> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill() {
                return None;
            }
            let k = n.min(self.buf.len());
            self.buf.drain(..k);
            n -= k;
        }
        Some(())
    }
}

fn serve(stream: TcpStream, tls: Arc<ServerConfig>, conns: &Record, idx: usize) -> Option<()> {
    stream.set_read_timeout(Some(READ_TIMEOUT)).ok()?;
    let conn = ServerConnection::new(tls).ok()?;
    let mut r = Recorder {
        io: StreamOwned::new(conn, stream),
        buf: Vec::new(),
        conns: conns.clone(),
        idx,
    };
    loop {
        // Request head.
        let mut headers = Vec::new();
        let _request_line = r.line()?;
        loop {
            let l = r.line()?;
            if l.is_empty() {
                break;
            }
            let text = String::from_utf8_lossy(&l).into_owned();
            if let Some((k, v)) = text.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let has = |name: &str| headers.iter().any(|(k, _)| k == name);
        if has("upgrade") {
            // What an h2c/WebSocket server does: switch, then whatever comes is the tunnel.
            r.io.write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            )
            .ok()?;
            r.io.flush().ok()?;
            while r.fill() {}
            return Some(());
        }
        let chunked = headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            loop {
                let size_line = r.line()?;
                let size_text = String::from_utf8_lossy(&size_line).into_owned();
                let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    // Trailer section, up to an empty line.
                    while !r.line()?.is_empty() {}
                    break;
                }
                r.skip(size + 2)?;
            }
        } else if let Some((_, v)) = headers.iter().find(|(k, _)| k == "content-length") {
            r.skip(v.parse().ok()?)?;
        }
        r.io.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}",
        )
        .ok()?;
        r.io.flush().ok()?;
    }
}
