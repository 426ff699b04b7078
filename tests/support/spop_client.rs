//! The one SPOP client of the tests: it plays HAProxy's side against idgate (the real binary,
//! or the in-process server of tests/agent_tcp.rs): HELLO, NOTIFYs with the contract's
//! `authorize` message (pipelined or one at a time), and the agent's AGENT-HELLO, ACKs and
//! AGENT-DISCONNECTs decoded with the crate's own codec.
//!
//! Two transports share every byte of encoding and decoding ([`Request`], [`decode_frame`],
//! [`decode_raw`], [`check_frame_len`]):
//! - [`SpopClient`], blocking `std::net` (TCP or a Unix socket): the agent harness is blocking
//!   too, and a test can run several clients on plain threads while it signals the agent;
//! - [`AsyncSpopClient`], a Tokio `TcpStream`, for tests that run inside a runtime.
//!
//! Both check what HAProxy would: every agent frame has FIN set (and not ABORT), HELLO and
//! DISCONNECT frames have stream-id and frame-id 0, an ACK sets no variable twice, and after
//! the HELLO no frame is larger than the negotiated max-frame-size.
//!
//! examples/loadgen.rs speaks SPOP on its own: see why at its top.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use idgate::spop::data::KvIter;
use idgate::spop::frame::{
    self, decode_actions, decode_disconnect, Action, Arg, Header, Message, FLAG_FIN,
};
use idgate::spop::{Status, TypedData};

/// HAProxy's default max-frame-size (tune.bufsize - 4), announced in our HELLO.
pub const HAPROXY_MAX_FRAME_SIZE: u32 = 16380;

/// Bound on any single read; nothing the agent does on loopback should come close.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One request, as HAProxy's `authorize` message would carry it (haproxy/idgate.spoe.conf:
/// `method path host authorization cookie src unique_id`).
///
/// An absent `method`/`path`/`host`/`unique_id` is left out of the message. An absent
/// `authorization` or `cookie` is left out too unless [`Request::absent_as_null`] is set:
/// then it is sent as NULL, which is what HAProxy sends for a header the request does not
/// have (`req.fhdr()` of a missing header).
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    /// The whole header value, e.g. `Bearer eyJ...`.
    pub authorization: Option<String>,
    /// The whole `Cookie` header value.
    pub cookie: Option<String>,
    /// The client address (`src`); 127.0.0.1 by default.
    pub src: IpAddr,
    pub unique_id: Option<String>,
    /// Send an absent `authorization`/`cookie` as NULL (as HAProxy does) instead of leaving
    /// the argument out.
    pub absent_as_null: bool,
    /// The `authorize-serving` message's `body` (BINARY, as `req.body`), `body_size` and
    /// `content_type`; with a body, the message is `authorize-serving`.
    pub body: Option<Bytes>,
    pub body_size: Option<u64>,
    pub content_type: Option<String>,
}

impl Default for Request {
    fn default() -> Request {
        Request {
            method: None,
            path: None,
            host: None,
            authorization: None,
            cookie: None,
            src: IpAddr::V4(Ipv4Addr::LOCALHOST),
            unique_id: None,
            absent_as_null: false,
            body: None,
            body_size: None,
            content_type: None,
        }
    }
}

impl Request {
    pub fn new(method: &str, path: &str) -> Request {
        Request {
            method: Some(method.into()),
            path: Some(path.into()),
            ..Request::default()
        }
    }

    /// With `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Request {
        self.authorization(&format!("Bearer {token}"))
    }

    /// With this whole `Authorization` value.
    pub fn authorization(mut self, value: &str) -> Request {
        self.authorization = Some(value.into());
        self
    }

    /// With this whole `Cookie` value.
    pub fn cookie(mut self, value: &str) -> Request {
        self.cookie = Some(value.into());
        self
    }

    pub fn host(mut self, host: &str) -> Request {
        self.host = Some(host.into());
        self
    }

    pub fn path(mut self, path: &str) -> Request {
        self.path = Some(path.into());
        self
    }

    pub fn unique_id(mut self, id: &str) -> Request {
        self.unique_id = Some(id.into());
        self
    }

    /// As `authorize-serving` with this JSON body, its length as `body_size` and
    /// `application/json`, as the shipped configuration sends a serving invocation.
    pub fn serving_body(mut self, body: &[u8]) -> Request {
        self.body = Some(Bytes::copy_from_slice(body));
        self.body_size = Some(body.len() as u64);
        self.content_type = Some("application/json".into());
        self
    }

    /// Absent `authorization`/`cookie` sent as NULL, as HAProxy does.
    pub fn absent_as_null(mut self) -> Request {
        self.absent_as_null = true;
        self
    }

    /// The `authorize` message (`authorize-serving` with a body).
    pub fn message(&self) -> Message {
        let s = |v: &str| TypedData::String(Bytes::copy_from_slice(v.as_bytes()));
        let mut args = Vec::new();
        let mut push = |name: &'static str, value: TypedData| {
            args.push(Arg {
                name: Bytes::from_static(name.as_bytes()),
                value,
            });
        };
        for (name, v) in [
            ("method", &self.method),
            ("path", &self.path),
            ("host", &self.host),
        ] {
            if let Some(v) = v {
                push(name, s(v));
            }
        }
        for (name, v) in [
            ("authorization", &self.authorization),
            ("cookie", &self.cookie),
        ] {
            match v {
                Some(v) => push(name, s(v)),
                None if self.absent_as_null => push(name, TypedData::Null),
                None => {}
            }
        }
        push(
            "src",
            match self.src {
                IpAddr::V4(a) => TypedData::Ipv4(a),
                IpAddr::V6(a) => TypedData::Ipv6(a),
            },
        );
        if let Some(id) = &self.unique_id {
            push("unique_id", s(id));
        }
        if let Some(b) = &self.body {
            push("body", TypedData::Binary(b.clone()));
        }
        if let Some(n) = self.body_size {
            push("body_size", TypedData::Int64(n as i64));
        }
        if let Some(ct) = &self.content_type {
            push("content_type", s(ct));
        }
        let name: &'static [u8] = if self.body.is_some() {
            b"authorize-serving"
        } else {
            b"authorize"
        };
        Message {
            name: Bytes::from_static(name),
            args,
        }
    }

    /// The encoded NOTIFY frame (length prefix included) carrying this request.
    pub fn notify(&self, stream_id: u64, frame_id: u64) -> BytesMut {
        let mut buf = BytesMut::new();
        frame::encode_notify(&mut buf, stream_id, frame_id, &[self.message()]);
        buf
    }
}

/// The variables of one ACK.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars(pub BTreeMap<String, TypedData>);

impl Vars {
    pub fn get(&self, name: &str) -> Option<&TypedData> {
        self.0.get(name)
    }

    /// A string variable, if set.
    pub fn str(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            TypedData::String(b) => Some(String::from_utf8_lossy(b).into_owned()),
            other => panic!("variable {name} is not a string: {other:?}"),
        }
    }

    /// A string variable as `&str`, if set (panics if it is not a UTF-8 string).
    pub fn text(&self, name: &str) -> Option<&str> {
        match self.0.get(name)? {
            TypedData::String(b) => Some(std::str::from_utf8(b).expect("UTF-8 variable")),
            other => panic!("variable {name} is not a string: {other:?}"),
        }
    }

    /// An integer variable, if set (panics if it is not an integer).
    pub fn int(&self, name: &str) -> Option<i64> {
        self.0
            .get(name)
            .map(|v| v.as_i64().expect("integer variable"))
    }

    /// A boolean variable, if set (panics if it is not a boolean).
    pub fn bool(&self, name: &str) -> Option<bool> {
        match self.0.get(name)? {
            TypedData::Bool(b) => Some(*b),
            other => panic!("variable {name} is not a bool: {other:?}"),
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    pub fn allow(&self) -> bool {
        match self.0.get("allow") {
            Some(TypedData::Bool(b)) => *b,
            other => panic!("ACK without a boolean `allow`: {other:?} in {self:?}"),
        }
    }

    pub fn status(&self) -> i64 {
        self.0
            .get("status")
            .and_then(TypedData::as_i64)
            .unwrap_or_else(|| panic!("ACK without an integer `status`: {self:?}"))
    }

    pub fn reason(&self) -> String {
        self.str("reason")
            .unwrap_or_else(|| panic!("ACK without `reason`: {self:?}"))
    }
}

/// A frame the agent sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    AgentHello {
        max_frame_size: u32,
    },
    Ack {
        stream_id: u64,
        frame_id: u64,
        vars: Vars,
    },
    Disconnect {
        status: Status,
        message: String,
    },
}

impl Frame {
    /// (stream-id, frame-id, variables) of an ACK; panics on any other frame.
    pub fn ack(self) -> (u64, u64, Vars) {
        match self {
            Frame::Ack {
                stream_id,
                frame_id,
                vars,
            } => (stream_id, frame_id, vars),
            other => panic!("expected an ACK, got {other:?}"),
        }
    }

    /// The status of an AGENT-DISCONNECT; panics on any other frame.
    pub fn disconnect_status(self) -> Status {
        match self {
            Frame::Disconnect { status, .. } => status,
            other => panic!("expected an AGENT-DISCONNECT, got {other:?}"),
        }
    }
}

/// The socket under a [`SpopClient`]: TCP or a Unix socket, the same protocol.
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

/// One SPOP connection to the agent.
pub struct SpopClient {
    stream: Stream,
    /// max-frame-size the agent answered in its AGENT-HELLO (0 before the HELLO).
    pub max_frame_size: u32,
    next_stream: u64,
}

impl SpopClient {
    /// A TCP connection, no HELLO yet.
    pub fn connect(addr: SocketAddr) -> io::Result<SpopClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        Self::with_stream(Stream::Tcp(stream))
    }

    /// A connection to the agent's Unix socket, no HELLO yet.
    pub fn connect_unix(path: &Path) -> io::Result<SpopClient> {
        Self::with_stream(Stream::Unix(UnixStream::connect(path)?))
    }

    /// A connection to wherever the agent listens, no HELLO yet.
    pub fn connect_to(addr: &super::AgentAddr) -> io::Result<SpopClient> {
        match addr {
            super::AgentAddr::Tcp(a) => Self::connect(*a),
            super::AgentAddr::Unix(p) => Self::connect_unix(p),
        }
    }

    /// Connect to wherever the agent listens and complete the HELLO; panics on failure.
    pub fn open_to(addr: &super::AgentAddr) -> SpopClient {
        let mut c = SpopClient::connect_to(addr)
            .unwrap_or_else(|e| panic!("connecting to the SPOP listener {addr}: {e}"));
        c.hello()
            .unwrap_or_else(|e| panic!("SPOP HELLO with {addr}: {e}"));
        c
    }

    fn with_stream(stream: Stream) -> io::Result<SpopClient> {
        stream.set_read_timeout(Some(READ_TIMEOUT))?;
        stream.set_write_timeout(Some(READ_TIMEOUT))?;
        Ok(SpopClient {
            stream,
            max_frame_size: 0,
            next_stream: 1,
        })
    }

    /// Send a health-check HAPROXY-HELLO (`healthcheck=true`, what `option spop-check`
    /// sends) and read the AGENT-HELLO.
    pub fn healthcheck(&mut self) -> io::Result<u32> {
        let mut buf = BytesMut::new();
        frame::encode_haproxy_hello(&mut buf, "2.0", HAPROXY_MAX_FRAME_SIZE, "", true);
        self.stream.write_all(&buf)?;
        agent_hello(self.read_frame()?)
    }

    /// Connect and complete the HELLO as HAProxy 3.2 does; panics on failure.
    pub fn open(addr: SocketAddr) -> SpopClient {
        let mut c = SpopClient::connect(addr)
            .unwrap_or_else(|e| panic!("connecting to the SPOP listener {addr}: {e}"));
        c.hello()
            .unwrap_or_else(|e| panic!("SPOP HELLO with {addr}: {e}"));
        c
    }

    /// Send HAPROXY-HELLO (version 2.0, 16380 bytes, pipelining) and read the AGENT-HELLO.
    pub fn hello(&mut self) -> io::Result<u32> {
        self.hello_with(HAPROXY_MAX_FRAME_SIZE)
    }

    pub fn hello_with(&mut self, max_frame_size: u32) -> io::Result<u32> {
        let mut buf = BytesMut::new();
        frame::encode_haproxy_hello(&mut buf, "2.0", max_frame_size, "pipelining", false);
        self.stream.write_all(&buf)?;
        self.max_frame_size = agent_hello(self.read_frame()?)?;
        Ok(self.max_frame_size)
    }

    /// The encoded NOTIFY for `req` (to batch several into one write).
    pub fn encode_notify(stream_id: u64, frame_id: u64, req: &Request) -> BytesMut {
        req.notify(stream_id, frame_id)
    }

    pub fn send_notify(&mut self, stream_id: u64, frame_id: u64, req: &Request) -> io::Result<()> {
        self.send_raw(&req.notify(stream_id, frame_id))
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Next frame, decoded. `UnexpectedEof`/reset when the agent closed.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = check_frame_len(len, self.max_frame_size)?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        decode_frame(Bytes::from(body))
    }

    /// One request, one answer (asserts the ACK's ids match).
    pub fn decide(&mut self, req: &Request) -> Vars {
        let sid = self.next_stream;
        self.next_stream += 1;
        self.send_notify(sid, 1, req)
            .unwrap_or_else(|e| panic!("sending a NOTIFY: {e}"));
        expect_ack(self.read_frame(), sid)
    }

    /// Half-close our side (like HAProxy closing after its last frame).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// True once the agent has closed the connection: EOF or reset within `timeout`, with no
    /// more frames (any frame read meanwhile is returned as an error).
    pub fn is_closed_within(&mut self, timeout: Duration) -> io::Result<bool> {
        self.stream.set_read_timeout(Some(timeout))?;
        let mut b = [0u8; 1];
        let r = match self.stream.read(&mut b) {
            Ok(0) => Ok(true),
            Ok(_) => Err(io::Error::other("more data after the expected close")),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(false)
            }
            Err(_) => Ok(true), // reset
        };
        self.stream.set_read_timeout(Some(READ_TIMEOUT))?;
        r
    }

    /// A clone of the socket (e.g. a reader thread while another thread writes).
    pub fn try_clone(&self) -> io::Result<SpopClient> {
        Ok(SpopClient {
            stream: self.stream.try_clone()?,
            max_frame_size: self.max_frame_size,
            next_stream: self.next_stream,
        })
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream
            .set_read_timeout(Some(t))
            .expect("set_read_timeout");
    }
}

/// The AGENT-HELLO's max-frame-size, or an error for any other frame.
fn agent_hello(f: Frame) -> io::Result<u32> {
    match f {
        Frame::AgentHello { max_frame_size } => Ok(max_frame_size),
        other => Err(io::Error::other(format!(
            "expected AGENT-HELLO, got {other:?}"
        ))),
    }
}

/// The variables of the ACK for NOTIFY `sid` (frame-id 1); panics on anything else.
fn expect_ack(f: io::Result<Frame>, sid: u64) -> Vars {
    match f {
        Ok(Frame::Ack {
            stream_id,
            frame_id,
            vars,
        }) => {
            assert_eq!((stream_id, frame_id), (sid, 1), "ACK for another NOTIFY");
            vars
        }
        other => panic!("expected an ACK, got {other:?}"),
    }
}

/// The body length announced by a length prefix, refused when it exceeds the negotiated
/// `max_frame_size` (0: before the HELLO, not checked).
pub fn check_frame_len(prefix: [u8; 4], max_frame_size: u32) -> io::Result<usize> {
    let len = u32::from_be_bytes(prefix);
    if max_frame_size > 0 && len > max_frame_size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the negotiated size {max_frame_size}"),
        ));
    }
    Ok(len as usize)
}

/// Decode one whole frame as read from the socket, length prefix included (the prefix must
/// match the bytes that follow).
pub fn decode_raw(frame: &[u8]) -> io::Result<Frame> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let (prefix, body) = frame
        .split_first_chunk::<4>()
        .ok_or_else(|| bad(format!("no length prefix: {frame:02x?}")))?;
    if u32::from_be_bytes(*prefix) as usize != body.len() {
        return Err(bad(format!("length prefix does not match: {frame:02x?}")));
    }
    decode_frame(Bytes::copy_from_slice(body))
}

/// Decode one frame body (everything after the length prefix).
pub fn decode_frame(mut body: Bytes) -> io::Result<Frame> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let h = Header::decode(&mut body).map_err(|e| bad(format!("frame header: {e}")))?;
    if h.flags != FLAG_FIN {
        return Err(bad(format!(
            "frame type {} with flags {:#x}, want FIN only",
            h.frame_type, h.flags
        )));
    }
    if matches!(h.frame_type, 101 | 102) && (h.stream_id, h.frame_id) != (0, 0) {
        return Err(bad(format!(
            "frame type {} with stream-id {} frame-id {}, want 0 0",
            h.frame_type, h.stream_id, h.frame_id
        )));
    }
    match h.frame_type {
        101 => {
            let mut max_frame_size = 0;
            for item in KvIter::new(body) {
                let (k, v) = item.map_err(|e| bad(format!("AGENT-HELLO: {e}")))?;
                if &k[..] == b"max-frame-size" {
                    max_frame_size = v
                        .as_i64()
                        .and_then(|n| u32::try_from(n).ok())
                        .ok_or_else(|| bad(format!("max-frame-size {v:?}")))?;
                }
            }
            Ok(Frame::AgentHello { max_frame_size })
        }
        102 => {
            let d = decode_disconnect(body, "AGENT-DISCONNECT")
                .map_err(|e| bad(format!("AGENT-DISCONNECT: {e}")))?;
            Ok(Frame::Disconnect {
                status: d.status,
                message: String::from_utf8_lossy(&d.message).into_owned(),
            })
        }
        103 => {
            let actions = decode_actions(body).map_err(|e| bad(format!("ACK: {e}")))?;
            let mut vars = BTreeMap::new();
            for a in actions {
                if let Action::SetVar { name, value, .. } = a {
                    let name = String::from_utf8_lossy(&name).into_owned();
                    if vars.insert(name.clone(), value).is_some() {
                        return Err(bad(format!("ACK sets variable {name} twice")));
                    }
                }
            }
            Ok(Frame::Ack {
                stream_id: h.stream_id,
                frame_id: h.frame_id,
                vars: Vars(vars),
            })
        }
        t => Err(bad(format!("unexpected frame type {t}"))),
    }
}

/// One SPOP connection to the agent over a Tokio `TcpStream`: [`SpopClient`] for async tests,
/// with the same encoding and decoding. Every read is bounded by [`AsyncSpopClient::timeout`].
pub struct AsyncSpopClient {
    stream: tokio::net::TcpStream,
    /// max-frame-size the agent answered in its AGENT-HELLO (0 before the HELLO: no check).
    pub max_frame_size: u32,
    /// Bound on each read ([`READ_TIMEOUT`] unless set).
    pub timeout: Duration,
    next_stream: u64,
}

impl AsyncSpopClient {
    /// A TCP connection, no HELLO yet.
    pub async fn connect(addr: SocketAddr) -> io::Result<AsyncSpopClient> {
        let stream = tokio::time::timeout(READ_TIMEOUT, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        stream.set_nodelay(true)?;
        Ok(AsyncSpopClient {
            stream,
            max_frame_size: 0,
            timeout: READ_TIMEOUT,
            next_stream: 1,
        })
    }

    /// Connect and complete the HELLO as HAProxy 3.2 does; panics on failure.
    pub async fn open(addr: SocketAddr) -> AsyncSpopClient {
        AsyncSpopClient::open_with(addr, HAPROXY_MAX_FRAME_SIZE).await
    }

    /// [`AsyncSpopClient::open`] announcing `max_frame_size` in our HELLO.
    pub async fn open_with(addr: SocketAddr, max_frame_size: u32) -> AsyncSpopClient {
        let mut c = AsyncSpopClient::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connecting to the SPOP listener {addr}: {e}"));
        c.hello_with(max_frame_size)
            .await
            .unwrap_or_else(|e| panic!("SPOP HELLO with {addr}: {e}"));
        c
    }

    /// Send HAPROXY-HELLO (version 2.0, pipelining) and read the AGENT-HELLO.
    pub async fn hello_with(&mut self, max_frame_size: u32) -> io::Result<u32> {
        let mut buf = BytesMut::new();
        frame::encode_haproxy_hello(&mut buf, "2.0", max_frame_size, "pipelining", false);
        self.send_raw(&buf).await?;
        self.max_frame_size = agent_hello(self.read_frame().await?)?;
        Ok(self.max_frame_size)
    }

    /// The socket, for byte-level tests (partial frames, shutdowns, raw reads).
    pub fn stream(&mut self) -> &mut tokio::net::TcpStream {
        &mut self.stream
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    pub async fn send_notify(
        &mut self,
        stream_id: u64,
        frame_id: u64,
        req: &Request,
    ) -> io::Result<()> {
        self.send_raw(&req.notify(stream_id, frame_id)).await
    }

    /// Next frame exactly as received, length prefix included.
    pub async fn read_raw_frame(&mut self) -> io::Result<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let max = self.max_frame_size;
        let s = &mut self.stream;
        tokio::time::timeout(self.timeout, async move {
            let mut len = [0u8; 4];
            s.read_exact(&mut len).await?;
            let n = check_frame_len(len, max)?;
            let mut frame = len.to_vec();
            frame.resize(4 + n, 0);
            s.read_exact(&mut frame[4..]).await?;
            Ok(frame)
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no frame within the time limit"))?
    }

    /// Next frame exactly as received; panics on a read error or timeout.
    pub async fn raw_frame(&mut self) -> Vec<u8> {
        self.read_raw_frame()
            .await
            .unwrap_or_else(|e| panic!("reading a frame from the agent: {e}"))
    }

    /// Next frame, decoded.
    pub async fn read_frame(&mut self) -> io::Result<Frame> {
        decode_raw(&self.read_raw_frame().await?)
    }

    /// Next frame, decoded; panics on a read or decoding error.
    pub async fn frame(&mut self) -> Frame {
        self.read_frame()
            .await
            .unwrap_or_else(|e| panic!("reading a frame from the agent: {e}"))
    }

    /// One request, one answer, on the next stream-id (asserts the ACK's ids match).
    pub async fn decide(&mut self, req: &Request) -> Vars {
        let sid = self.next_stream;
        self.next_stream += 1;
        self.decide_as(sid, req).await
    }

    /// One request on stream `sid` (frame-id 1), one answer (asserts the ACK's ids match).
    pub async fn decide_as(&mut self, sid: u64, req: &Request) -> Vars {
        self.send_notify(sid, 1, req)
            .await
            .unwrap_or_else(|e| panic!("sending a NOTIFY: {e}"));
        expect_ack(self.read_frame().await, sid)
    }

    /// Asserts the agent closes the connection: EOF or a reset within the timeout, and no
    /// more bytes.
    pub async fn expect_closed(&mut self) {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        match tokio::time::timeout(self.timeout, self.stream.read(&mut buf))
            .await
            .expect("close within the time limit")
        {
            Ok(0) | Err(_) => {}
            Ok(n) => panic!("expected close, got {n} more bytes: {:02x?}", &buf[..n]),
        }
    }
}
