//! A blocking SPOP client that plays HAProxy's side, for driving the real `idgate` binary
//! without HAProxy: HELLO, NOTIFYs with the contract's `authorize` message (pipelined or one at
//! a time), and the agent's ACKs and DISCONNECTs decoded with the crate's own codec.
//!
//! Blocking `std::net` on purpose: the agent harness is blocking too, and a test can run
//! several clients on plain threads while it signals the agent.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use idgate::spop::data::KvIter;
use idgate::spop::frame::{self, decode_actions, decode_disconnect, Action, Arg, Header, Message};
use idgate::spop::{Status, TypedData};

/// HAProxy's default max-frame-size (tune.bufsize - 4), announced in our HELLO.
pub const HAPROXY_MAX_FRAME_SIZE: u32 = 16380;

/// Bound on any single read; nothing the agent does on loopback should come close.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One request, as HAProxy's `authorize` message would carry it.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: Option<String>,
    pub path: Option<String>,
    pub host: Option<String>,
    /// The whole header value, e.g. `Bearer eyJ...`.
    pub authorization: Option<String>,
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
    pub fn bearer(mut self, token: &str) -> Request {
        self.authorization = Some(format!("Bearer {token}"));
        self
    }

    pub fn host(mut self, host: &str) -> Request {
        self.host = Some(host.into());
        self
    }

    fn message(&self) -> Message {
        let s = |v: &str| TypedData::String(Bytes::copy_from_slice(v.as_bytes()));
        let mut args = Vec::new();
        let mut push = |name: &'static str, v: &Option<String>| {
            if let Some(v) = v {
                args.push(Arg {
                    name: Bytes::from_static(name.as_bytes()),
                    value: s(v),
                });
            }
        };
        push("method", &self.method);
        push("path", &self.path);
        push("host", &self.host);
        push("authorization", &self.authorization);
        args.push(Arg {
            name: Bytes::from_static(b"src"),
            value: TypedData::Ipv4([127, 0, 0, 1].into()),
        });
        Message {
            name: Bytes::from_static(b"authorize"),
            args,
        }
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
        match self.read_frame()? {
            Frame::AgentHello { max_frame_size } => Ok(max_frame_size),
            other => Err(io::Error::other(format!(
                "expected AGENT-HELLO, got {other:?}"
            ))),
        }
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
        match self.read_frame()? {
            Frame::AgentHello { max_frame_size } => {
                self.max_frame_size = max_frame_size;
                Ok(max_frame_size)
            }
            other => Err(io::Error::other(format!(
                "expected AGENT-HELLO, got {other:?}"
            ))),
        }
    }

    /// The encoded NOTIFY for `req` (to batch several into one write).
    pub fn encode_notify(stream_id: u64, frame_id: u64, req: &Request) -> BytesMut {
        let mut buf = BytesMut::new();
        frame::encode_notify(&mut buf, stream_id, frame_id, &[req.message()]);
        buf
    }

    pub fn send_notify(&mut self, stream_id: u64, frame_id: u64, req: &Request) -> io::Result<()> {
        self.send_raw(&Self::encode_notify(stream_id, frame_id, req))
    }

    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Next frame, decoded. `UnexpectedEof`/reset when the agent closed.
    pub fn read_frame(&mut self) -> io::Result<Frame> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
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
        match self.read_frame() {
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

/// Decode one frame body (everything after the length prefix).
pub fn decode_frame(mut body: Bytes) -> io::Result<Frame> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let h = Header::decode(&mut body).map_err(|e| bad(format!("frame header: {e}")))?;
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
                    vars.insert(String::from_utf8_lossy(&name).into_owned(), value);
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
