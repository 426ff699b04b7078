//! The per-connection protocol state machine, sans-IO (quinn-proto style).
//!
//! The shell owns the socket and the clock; this type owns the protocol:
//!
//! 1. **Input:** read socket bytes into [`Connection::recv_buf`] (or pass them to
//!    [`Connection::handle_input`]), report EOF with [`Connection::handle_eof`] and expired
//!    deadlines with [`Connection::handle_timeout`].
//! 2. **Events:** call [`Connection::poll_event`] until it returns `None`. Frames are decoded
//!    lazily, one per call, so a shell that stops polling (because it has enough NOTIFYs in
//!    flight) leaves the rest undecoded in the buffer: natural backpressure.
//! 3. **Answers:** [`Connection::send_ack`] for each [`Event::Notify`], [`Connection::close`]
//!    to end the connection with an AGENT-DISCONNECT.
//! 4. **Output:** [`Connection::poll_transmit`] returns complete frames to write with one
//!    write. After an [`Event::Close`], write what is pending and close the socket.
//!
//! Every protocol error (malformed, oversized, truncated, unexpected or fragmented frame,
//! failed HELLO negotiation) queues an AGENT-DISCONNECT with the matching status, emits
//! [`Event::Close`] and ignores all further input. Nothing here panics on bad input.

use bytes::{Buf, Bytes, BytesMut};

use super::error::ProtocolError;
use super::frame::{
    self, decode_disconnect, decode_messages, Disconnect, EncodeAction, FrameType, Header, Message,
    FLAG_FIN, LENGTH_PREFIX, MIN_FRAME_LEN,
};
use super::hello::HaproxyHello;
use super::status::Status;

/// Bytes reserved for one socket read when no larger frame is pending. Big enough for a
/// typical NOTIFY with a bearer token, small enough that a flood of garbage is noticed (and
/// rejected by the length check) after one read.
pub const READ_CHUNK: usize = 8 * 1024;

/// Static settings of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnConfig {
    /// Our largest acceptable frame (bytes after the length prefix). It is the limit before
    /// the HELLO and the upper bound of the negotiated size after it.
    pub max_frame_size: u32,
}

impl Default for ConnConfig {
    fn default() -> Self {
        // HAProxy's default (tune.bufsize 16384 - 4).
        ConnConfig {
            max_frame_size: 16380,
        }
    }
}

/// A NOTIFY to answer with exactly one ACK carrying the same ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    /// Opaque, echoed in the ACK (0 is valid on HAProxy 2.6).
    pub stream_id: u64,
    /// Opaque, echoed in the ACK.
    pub frame_id: u64,
    pub messages: Vec<Message>,
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A health-check HELLO was answered; nothing more to do.
    Healthcheck,
    /// HAProxy sent HAPROXY-DISCONNECT; we answered AGENT-DISCONNECT 0.
    PeerDisconnect(Disconnect),
    /// HAProxy sent something invalid; we answered AGENT-DISCONNECT with `err.status()`.
    Error(ProtocolError),
}

/// What the connection tells its shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The HELLO succeeded and the AGENT-HELLO is queued.
    Ready {
        max_frame_size: u32,
        /// HAProxy announced `pipelining` (else it sends one NOTIFY at a time).
        pipelining: bool,
    },
    Notify(Notify),
    /// The connection is finished: write what [`Connection::poll_transmit`] returns, then
    /// close the socket.
    Close(CloseReason),
}

/// Why [`Connection::send_ack`] wrote nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The connection is closed (or never finished its HELLO): the ACK is moot.
    #[error("connection is not open")]
    NotOpen,
    /// The ACK would exceed the negotiated max-frame-size; trim the actions.
    #[error("ACK of {len} bytes exceeds max-frame-size {max}")]
    TooBig { len: usize, max: u32 },
}

/// Frame counts per type since the last [`Connection::take_frame_counts`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrameCounts([u64; 7]);

const COUNTED: [FrameType; 7] = [
    FrameType::Unset,
    FrameType::HaproxyHello,
    FrameType::HaproxyDisconnect,
    FrameType::Notify,
    FrameType::AgentHello,
    FrameType::AgentDisconnect,
    FrameType::Ack,
];

impl FrameCounts {
    fn add(&mut self, t: FrameType) {
        if let Some(i) = COUNTED.iter().position(|&c| c == t) {
            self.0[i] += 1;
        }
    }

    /// Non-zero counts.
    pub fn iter(&self) -> impl Iterator<Item = (FrameType, u64)> + '_ {
        COUNTED
            .iter()
            .zip(self.0)
            .filter(|(_, n)| *n > 0)
            .map(|(&t, n)| (t, n))
    }

    /// The count of one type.
    pub fn get(&self, t: FrameType) -> u64 {
        COUNTED
            .iter()
            .position(|&c| c == t)
            .map_or(0, |i| self.0[i])
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitingHello,
    Ready { max_frame_size: u32 },
    Closed,
}

/// One SPOP connection, agent side.
#[derive(Debug)]
pub struct Connection {
    cfg: ConnConfig,
    state: State,
    recv: BytesMut,
    send: BytesMut,
    counts: FrameCounts,
}

impl Connection {
    pub fn new(cfg: ConnConfig) -> Connection {
        Connection {
            cfg,
            state: State::AwaitingHello,
            recv: BytesMut::new(),
            send: BytesMut::new(),
            counts: FrameCounts::default(),
        }
    }

    // ----- getters -----

    /// The HELLO is done and the connection is not closed.
    pub fn is_ready(&self) -> bool {
        matches!(self.state, State::Ready { .. })
    }

    /// Closed: no more events, input is ignored.
    pub fn is_closed(&self) -> bool {
        self.state == State::Closed
    }

    /// The negotiated max-frame-size, once ready.
    pub fn max_frame_size(&self) -> Option<u32> {
        match self.state {
            State::Ready { max_frame_size } => Some(max_frame_size),
            _ => None,
        }
    }

    /// Some bytes of an incomplete frame are buffered (a peer that stalls here is dropped by
    /// the shell's idle timeout).
    pub fn has_partial_frame(&self) -> bool {
        !self.recv.is_empty()
    }

    /// The limit the next frame's length is checked against.
    fn limit(&self) -> u32 {
        match self.state {
            State::Ready { max_frame_size } => max_frame_size,
            _ => self.cfg.max_frame_size,
        }
    }

    // ----- input -----

    /// The receive buffer, with room reserved for the next read. Read socket bytes into it
    /// (`read_buf`), then call [`Self::poll_event`].
    pub fn recv_buf(&mut self) -> &mut BytesMut {
        let want = if self.recv.len() >= LENGTH_PREFIX {
            let len = u32::from_be_bytes([self.recv[0], self.recv[1], self.recv[2], self.recv[3]]);
            // Only trust the length once it passed the limit check in `poll_event`.
            let total = LENGTH_PREFIX + len.min(self.limit()) as usize;
            total.saturating_sub(self.recv.len())
        } else {
            0
        };
        self.recv.reserve(want.max(READ_CHUNK));
        &mut self.recv
    }

    /// Append received bytes (tests, fuzzing; the shell reads into [`Self::recv_buf`]).
    pub fn handle_input(&mut self, data: &[u8]) {
        if self.state != State::Closed {
            self.recv.extend_from_slice(data);
        }
    }

    /// The peer closed its side. If a frame was cut off, that is a truncated frame: an
    /// AGENT-DISCONNECT 4 is queued (best effort; the peer may be gone) and the error returned.
    /// A clean EOF between frames just closes.
    pub fn handle_eof(&mut self) -> Option<ProtocolError> {
        if self.state == State::Closed {
            return None;
        }
        let err = (!self.recv.is_empty()).then(|| ProtocolError::Truncated {
            have: self.recv.len(),
        });
        match &err {
            Some(e) => {
                self.fail(e.clone());
            }
            None => self.state = State::Closed,
        }
        err
    }

    /// The shell's HELLO or idle deadline passed: queue AGENT-DISCONNECT 2 ("a timeout
    /// occurred") and close.
    pub fn handle_timeout(&mut self) {
        self.close(Status::Timeout, Status::Timeout.reason());
    }

    // ----- events -----

    /// The next event, decoding at most one complete frame. `None`: need more input (or
    /// closed).
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        if self.state == State::Closed {
            return None;
        }
        let body = match self.next_frame() {
            Ok(Some(body)) => body,
            Ok(None) => return None,
            Err(e) => return Some(self.fail(e)),
        };
        Some(self.handle_frame(body).unwrap_or_else(|e| self.fail(e)))
    }

    /// Split off the next complete frame body. The length is checked as soon as its 4 bytes
    /// are here, before any of the body is waited for.
    fn next_frame(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        if self.recv.len() < LENGTH_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.recv[0], self.recv[1], self.recv[2], self.recv[3]]);
        let max = self.limit();
        if len > max {
            return Err(ProtocolError::FrameTooBig { len, max });
        }
        if len < MIN_FRAME_LEN {
            return Err(ProtocolError::FrameTooShort { len });
        }
        let len = len as usize;
        if self.recv.len() < LENGTH_PREFIX + len {
            return Ok(None);
        }
        self.recv.advance(LENGTH_PREFIX);
        Ok(Some(self.recv.split_to(len).freeze()))
    }

    fn handle_frame(&mut self, mut body: Bytes) -> Result<Event, ProtocolError> {
        let h = Header::decode(&mut body).map_err(|source| ProtocolError::Decode {
            frame: "frame header",
            source,
        })?;
        let t = match FrameType::from_u8(h.frame_type) {
            None | Some(FrameType::AgentHello | FrameType::AgentDisconnect | FrameType::Ack) => {
                return Err(ProtocolError::UnknownFrameType(h.frame_type))
            }
            Some(FrameType::Unset) => return Err(ProtocolError::UnsetFrame),
            Some(t) => t,
        };
        // ABORT and reserved bits are ignored: SPOE.txt lets an agent ignore ABORT on
        // unfragmented frames, and it always comes with FIN.
        if h.flags & FLAG_FIN == 0 {
            return Err(ProtocolError::NotFinal);
        }
        self.counts.add(t);
        match (t, self.state) {
            (FrameType::HaproxyHello, State::AwaitingHello) => {
                zero_ids(&h, "HAPROXY-HELLO")?;
                let hello = HaproxyHello::parse(body)?;
                let max_frame_size = hello.negotiate(self.cfg.max_frame_size)?;
                frame::encode_agent_hello(&mut self.send, max_frame_size);
                self.counts.add(FrameType::AgentHello);
                if hello.healthcheck {
                    self.state = State::Closed;
                    return Ok(Event::Close(CloseReason::Healthcheck));
                }
                self.state = State::Ready { max_frame_size };
                Ok(Event::Ready {
                    max_frame_size,
                    pipelining: hello.has_capability("pipelining"),
                })
            }
            (FrameType::HaproxyHello, _) => Err(ProtocolError::UnexpectedFrame {
                frame: "HAPROXY-HELLO",
                state: "after the handshake",
            }),
            (FrameType::HaproxyDisconnect, _) => {
                zero_ids(&h, "HAPROXY-DISCONNECT")?;
                let d = decode_disconnect(body, "HAPROXY-DISCONNECT")?;
                self.close(Status::Normal, Status::Normal.reason());
                Ok(Event::Close(CloseReason::PeerDisconnect(d)))
            }
            (FrameType::Notify, State::Ready { .. }) => {
                let messages = decode_messages(body).map_err(|source| ProtocolError::Decode {
                    frame: "NOTIFY",
                    source,
                })?;
                Ok(Event::Notify(Notify {
                    stream_id: h.stream_id,
                    frame_id: h.frame_id,
                    messages,
                }))
            }
            (FrameType::Notify, _) => Err(ProtocolError::UnexpectedFrame {
                frame: "NOTIFY",
                state: "before HAPROXY-HELLO",
            }),
            // Filtered out above.
            (
                FrameType::Unset
                | FrameType::AgentHello
                | FrameType::AgentDisconnect
                | FrameType::Ack,
                _,
            ) => Err(ProtocolError::UnknownFrameType(h.frame_type)),
        }
    }

    /// Queue the AGENT-DISCONNECT for `e`, close, and build the event.
    fn fail(&mut self, e: ProtocolError) -> Event {
        let status = e.status();
        self.close(status, &e.to_string());
        Event::Close(CloseReason::Error(e))
    }

    // ----- answers -----

    /// Queue the ACK of a NOTIFY. Nothing is written on error.
    ///
    /// # Errors
    /// [`AckError::NotOpen`] after close, [`AckError::TooBig`] if the frame would exceed the
    /// negotiated max-frame-size.
    pub fn send_ack<A: EncodeAction>(
        &mut self,
        stream_id: u64,
        frame_id: u64,
        actions: &[A],
    ) -> Result<(), AckError> {
        let State::Ready { max_frame_size } = self.state else {
            return Err(AckError::NotOpen);
        };
        let len = frame::ack_len(stream_id, frame_id, actions);
        if len > max_frame_size as usize {
            return Err(AckError::TooBig {
                len,
                max: max_frame_size,
            });
        }
        frame::encode_ack(&mut self.send, stream_id, frame_id, actions);
        self.counts.add(FrameType::Ack);
        Ok(())
    }

    /// End the connection: queue AGENT-DISCONNECT (message cut to 255 bytes) unless already
    /// closed, and ignore all further input.
    pub fn close(&mut self, status: Status, message: &str) {
        if self.state == State::Closed {
            return;
        }
        frame::encode_agent_disconnect(&mut self.send, status, message);
        self.counts.add(FrameType::AgentDisconnect);
        self.state = State::Closed;
        self.recv = BytesMut::new();
    }

    // ----- output -----

    /// Complete frames to write (with a single write), if any.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.send.is_empty()).then(|| self.send.split().freeze())
    }

    /// Frame counts since the last call (for `idgate_spop_frames_total`).
    pub fn take_frame_counts(&mut self) -> FrameCounts {
        std::mem::take(&mut self.counts)
    }
}

fn zero_ids(h: &Header, frame: &'static str) -> Result<(), ProtocolError> {
    if h.stream_id != 0 || h.frame_id != 0 {
        return Err(ProtocolError::NonZeroIds { frame });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
