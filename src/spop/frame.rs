//! Frames: header, the three frames HAProxy sends (decode) and the three an agent sends
//! (encode), plus the reverse directions for tests, fuzzing and benchmarks.
//!
//! ```text
//! FRAME      : <FRAME-LENGTH:u32 BE> <FRAME-TYPE:u8> <FLAGS:u32 BE> <STREAM-ID:varint>
//!              <FRAME-ID:varint> <PAYLOAD>           # FRAME-LENGTH excludes its own 4 bytes
//! FLAGS      : bit 0 FIN, bit 1 ABORT
//! LIST-OF-MESSAGES : { <bare msg-name> <NB-ARGS:u8> { <bare arg-name> <TYPED-DATA> }^NB-ARGS }*
//! LIST-OF-ACTIONS  : { <ACTION-TYPE:u8> <NB-ARGS:u8> <args...> }*
//!   set-var   : 01 03 <scope:u8> <bare name> <TYPED-DATA>
//!   unset-var : 02 02 <scope:u8> <bare name>
//! ```

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::data::{self, decode_bare, encode_bare, encode_kv, KvIter, TypedData, TypedValue};
use super::error::{DecodeError, ProtocolError};
use super::status::Status;
use super::varint;

/// Size of the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Smallest frame body: type (1) + flags (4) + two one-byte varints.
pub const MIN_FRAME_LEN: u32 = 7;
/// The FIN flag: set on every frame (we never fragment).
pub const FLAG_FIN: u32 = 0x0000_0001;
/// The ABORT flag (only meaningful with fragmentation, which we never negotiate).
pub const FLAG_ABORT: u32 = 0x0000_0002;
/// HAProxy rejects DISCONNECT messages longer than this (2.6 and the 3.x health check).
pub const MAX_DISCONNECT_MESSAGE: usize = 255;
/// The protocol version we speak (HAProxy 2.6 and 3.x both speak only "2.0").
pub const VERSION: &str = "2.0";
/// The capabilities we announce. `pipelining` lets HAProxy keep up to 20 NOTIFYs in flight
/// per connection; we never announce `async` or `fragmentation`.
pub const CAPABILITIES: &str = "pipelining";

/// Frame type ids (`enum spop_frame_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameType {
    Unset = 0,
    HaproxyHello = 1,
    HaproxyDisconnect = 2,
    Notify = 3,
    AgentHello = 101,
    AgentDisconnect = 102,
    Ack = 103,
}

impl FrameType {
    pub fn from_u8(t: u8) -> Option<FrameType> {
        Some(match t {
            0 => FrameType::Unset,
            1 => FrameType::HaproxyHello,
            2 => FrameType::HaproxyDisconnect,
            3 => FrameType::Notify,
            101 => FrameType::AgentHello,
            102 => FrameType::AgentDisconnect,
            103 => FrameType::Ack,
            _ => return None,
        })
    }

    /// Name used in logs and as the `type` label of `idgate_spop_frames_total`.
    pub const fn name(self) -> &'static str {
        match self {
            FrameType::Unset => "unset",
            FrameType::HaproxyHello => "haproxy_hello",
            FrameType::HaproxyDisconnect => "haproxy_disconnect",
            FrameType::Notify => "notify",
            FrameType::AgentHello => "agent_hello",
            FrameType::AgentDisconnect => "agent_disconnect",
            FrameType::Ack => "ack",
        }
    }
}

/// The decoded fixed part of a frame; `payload` is the rest of the frame body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub frame_type: u8,
    pub flags: u32,
    pub stream_id: u64,
    pub frame_id: u64,
}

impl Header {
    /// Split a frame body (everything after the length prefix) into header and payload.
    ///
    /// # Errors
    /// [`DecodeError`] if the body ends inside the header.
    pub fn decode(body: &mut Bytes) -> Result<Header, DecodeError> {
        if body.len() < 5 {
            return Err(DecodeError::UnexpectedEnd);
        }
        let frame_type = body.get_u8();
        let flags = body.get_u32();
        let stream_id = varint::decode(body)?;
        let frame_id = varint::decode(body)?;
        Ok(Header {
            frame_type,
            flags,
            stream_id,
            frame_id,
        })
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(self.frame_type);
        buf.put_u32(self.flags);
        varint::encode(self.stream_id, buf);
        varint::encode(self.frame_id, buf);
    }

    fn encoded_len(&self) -> usize {
        5 + varint::encoded_len(self.stream_id) + varint::encoded_len(self.frame_id)
    }
}

/// One argument of a message. `name` is empty for an unnamed `args` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arg {
    pub name: Bytes,
    pub value: TypedData,
}

/// One SPOE message of a NOTIFY.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub name: Bytes,
    pub args: Vec<Arg>,
}

impl Message {
    /// The first argument called `name`.
    pub fn arg(&self, name: &str) -> Option<&TypedData> {
        self.args
            .iter()
            .find(|a| a.name == name.as_bytes())
            .map(|a| &a.value)
    }
}

/// Decode a LIST-OF-MESSAGES (the NOTIFY payload).
///
/// # Errors
/// [`DecodeError`] for any malformed or truncated item.
pub fn decode_messages(mut payload: Bytes) -> Result<Vec<Message>, DecodeError> {
    // Nearly every NOTIFY carries exactly one message.
    let mut messages = Vec::with_capacity(1);
    while payload.has_remaining() {
        let name = decode_bare(&mut payload)?;
        if !payload.has_remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let nb = payload.get_u8();
        let mut args = Vec::with_capacity(usize::from(nb));
        for _ in 0..nb {
            let name = decode_bare(&mut payload)?;
            let value = TypedData::decode(&mut payload)?;
            args.push(Arg { name, value });
        }
        messages.push(Message { name, args });
    }
    Ok(messages)
}

/// Variable scope of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Scope {
    Proc = 0,
    Sess = 1,
    Txn = 2,
    Req = 3,
    Res = 4,
}

impl Scope {
    pub fn from_u8(b: u8) -> Option<Scope> {
        Some(match b {
            0 => Scope::Proc,
            1 => Scope::Sess,
            2 => Scope::Txn,
            3 => Scope::Req,
            4 => Scope::Res,
            _ => return None,
        })
    }

    /// The prefix HAProxy puts before `.<var-prefix>.<name>`.
    pub const fn name(self) -> &'static str {
        match self {
            Scope::Proc => "proc",
            Scope::Sess => "sess",
            Scope::Txn => "txn",
            Scope::Req => "req",
            Scope::Res => "res",
        }
    }
}

const ACTION_SET_VAR: u8 = 1;
const ACTION_UNSET_VAR: u8 = 2;

/// One ACK action. Variable names are bare strings on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    SetVar {
        scope: Scope,
        name: Bytes,
        value: TypedData,
    },
    UnsetVar {
        scope: Scope,
        name: Bytes,
    },
}

/// Anything that encodes as one ACK action: [`Action`] (the general, owned form) and
/// [`SetVar`] (borrowed name and value, what the agent's ACKs are built from).
pub trait EncodeAction {
    /// Number of bytes [`Self::encode`] writes.
    fn encoded_len(&self) -> usize;
    /// Append the action.
    fn encode(&self, buf: &mut BytesMut);
}

/// A set-var action whose name and value are borrowed: encoded straight from where they live,
/// without building [`Bytes`] first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetVar<'a> {
    pub scope: Scope,
    pub name: &'a str,
    pub value: TypedValue<'a>,
}

impl SetVar<'_> {
    /// The general [`Action`] form (copies; tests and tools).
    pub fn to_action(&self) -> Action {
        Action::SetVar {
            scope: self.scope,
            name: Bytes::copy_from_slice(self.name.as_bytes()),
            value: self.value.to_typed(),
        }
    }
}

impl EncodeAction for SetVar<'_> {
    fn encoded_len(&self) -> usize {
        3 + data::bare_len(self.name.as_bytes()) + self.value.encoded_len()
    }

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_slice(&[ACTION_SET_VAR, 3, self.scope as u8]);
        encode_bare(self.name.as_bytes(), buf);
        self.value.encode(buf);
    }
}

impl EncodeAction for Action {
    fn encoded_len(&self) -> usize {
        Action::encoded_len(self)
    }

    fn encode(&self, buf: &mut BytesMut) {
        Action::encode(self, buf);
    }
}

impl Action {
    /// A set-var with a `'static` name (no allocation).
    pub fn set(scope: Scope, name: &'static str, value: TypedData) -> Action {
        Action::SetVar {
            scope,
            name: Bytes::from_static(name.as_bytes()),
            value,
        }
    }

    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Action::SetVar { scope, name, value } => {
                buf.put_slice(&[ACTION_SET_VAR, 3, *scope as u8]);
                encode_bare(name, buf);
                value.encode(buf);
            }
            Action::UnsetVar { scope, name } => {
                buf.put_slice(&[ACTION_UNSET_VAR, 2, *scope as u8]);
                encode_bare(name, buf);
            }
        }
    }

    pub fn encoded_len(&self) -> usize {
        match self {
            Action::SetVar { name, value, .. } => 3 + data::bare_len(name) + value.encoded_len(),
            Action::UnsetVar { name, .. } => 3 + data::bare_len(name),
        }
    }
}

/// Decode a LIST-OF-ACTIONS (the other side of an ACK; used by tests and tools).
///
/// # Errors
/// [`DecodeError::UnexpectedEnd`] for a truncated, unknown or malformed action.
pub fn decode_actions(mut payload: Bytes) -> Result<Vec<Action>, DecodeError> {
    let mut out = Vec::new();
    while payload.has_remaining() {
        if payload.len() < 3 {
            return Err(DecodeError::UnexpectedEnd);
        }
        let (kind, nb, scope) = (payload.get_u8(), payload.get_u8(), payload.get_u8());
        let scope = Scope::from_u8(scope).ok_or(DecodeError::UnexpectedEnd)?;
        let name = decode_bare(&mut payload)?;
        out.push(match (kind, nb) {
            (ACTION_SET_VAR, 3) => Action::SetVar {
                scope,
                name,
                value: TypedData::decode(&mut payload)?,
            },
            (ACTION_UNSET_VAR, 2) => Action::UnsetVar { scope, name },
            _ => return Err(DecodeError::UnexpectedEnd),
        });
    }
    Ok(out)
}

/// Write a whole frame: length prefix, header, then whatever `payload` appends. The length is
/// patched in afterwards so the payload is encoded exactly once.
fn put_frame(buf: &mut BytesMut, header: &Header, payload: impl FnOnce(&mut BytesMut)) {
    let start = buf.len();
    buf.put_u32(0);
    header.encode(buf);
    payload(buf);
    let len = (buf.len() - start - LENGTH_PREFIX) as u32;
    buf[start..start + LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
}

fn zero_header(t: FrameType) -> Header {
    Header {
        frame_type: t as u8,
        flags: FLAG_FIN,
        stream_id: 0,
        frame_id: 0,
    }
}

/// AGENT-HELLO: version "2.0", `max-frame-size` as UINT32, capabilities "pipelining", FLAGS
/// exactly FIN and stream/frame ids `00 00` (the 3.x health check checks all of this).
pub fn encode_agent_hello(buf: &mut BytesMut, max_frame_size: u32) {
    put_frame(buf, &zero_header(FrameType::AgentHello), |b| {
        encode_kv("version", &TypedData::static_str(VERSION), b);
        encode_kv("max-frame-size", &TypedData::Uint32(max_frame_size), b);
        encode_kv("capabilities", &TypedData::static_str(CAPABILITIES), b);
    });
}

/// Cut `message` to at most [`MAX_DISCONNECT_MESSAGE`] bytes on a char boundary.
fn disconnect_message(message: &str) -> &str {
    if message.len() <= MAX_DISCONNECT_MESSAGE {
        return message;
    }
    let mut end = MAX_DISCONNECT_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

fn put_disconnect(buf: &mut BytesMut, t: FrameType, status: Status, message: &str) {
    let message = disconnect_message(message);
    put_frame(buf, &zero_header(t), |b| {
        encode_kv("status-code", &TypedData::Uint32(status.code()), b);
        encode_bare(b"message", b);
        b.put_u8(data::type_id::STRING);
        encode_bare(message.as_bytes(), b);
    });
}

/// AGENT-DISCONNECT with `status-code` (UINT32) and `message` (cut to 255 bytes).
pub fn encode_agent_disconnect(buf: &mut BytesMut, status: Status, message: &str) {
    put_disconnect(buf, FrameType::AgentDisconnect, status, message);
}

/// The longest ACK header: type, flags, and stream and frame ids of 10 varint bytes each.
pub(crate) const MAX_ACK_HEADER_LEN: usize = 5 + 2 * varint::MAX_VARINT_LEN;

/// Bytes left for the actions of an ACK, whatever its stream and frame ids, in a frame of at
/// most `max_frame_size` bytes: actions that fit this always make an ACK that fits.
pub(crate) const fn ack_room(max_frame_size: u32) -> usize {
    (max_frame_size as usize).saturating_sub(MAX_ACK_HEADER_LEN)
}

/// Body length (without the prefix) of an ACK with these actions.
pub fn ack_len<A: EncodeAction>(stream_id: u64, frame_id: u64, actions: &[A]) -> usize {
    let header = Header {
        frame_type: FrameType::Ack as u8,
        flags: FLAG_FIN,
        stream_id,
        frame_id,
    };
    header.encoded_len() + actions.iter().map(A::encoded_len).sum::<usize>()
}

/// ACK for `(stream_id, frame_id)`.
pub fn encode_ack<A: EncodeAction>(
    buf: &mut BytesMut,
    stream_id: u64,
    frame_id: u64,
    actions: &[A],
) {
    let header = Header {
        frame_type: FrameType::Ack as u8,
        flags: FLAG_FIN,
        stream_id,
        frame_id,
    };
    put_frame(buf, &header, |b| {
        for a in actions {
            a.encode(b);
        }
    });
}

/// HAPROXY-HELLO as HAProxy sends it (tests, fuzz seeds, benchmarks).
pub fn encode_haproxy_hello(
    buf: &mut BytesMut,
    versions: &str,
    max_frame_size: u32,
    capabilities: &str,
    healthcheck: bool,
) {
    put_frame(buf, &zero_header(FrameType::HaproxyHello), |b| {
        encode_kv(
            "supported-versions",
            &TypedData::String(Bytes::copy_from_slice(versions.as_bytes())),
            b,
        );
        encode_kv("max-frame-size", &TypedData::Uint32(max_frame_size), b);
        encode_kv(
            "capabilities",
            &TypedData::String(Bytes::copy_from_slice(capabilities.as_bytes())),
            b,
        );
        if healthcheck {
            encode_kv("healthcheck", &TypedData::Bool(true), b);
        }
    });
}

/// HAPROXY-DISCONNECT (tests).
pub fn encode_haproxy_disconnect(buf: &mut BytesMut, status: Status, message: &str) {
    put_disconnect(buf, FrameType::HaproxyDisconnect, status, message);
}

/// NOTIFY as HAProxy sends it (tests, fuzz seeds, benchmarks).
pub fn encode_notify(buf: &mut BytesMut, stream_id: u64, frame_id: u64, messages: &[Message]) {
    let header = Header {
        frame_type: FrameType::Notify as u8,
        flags: FLAG_FIN,
        stream_id,
        frame_id,
    };
    put_frame(buf, &header, |b| {
        for m in messages {
            encode_bare(&m.name, b);
            b.put_u8(m.args.len() as u8);
            for a in &m.args {
                encode_bare(&a.name, b);
                a.value.encode(b);
            }
        }
    });
}

/// A DISCONNECT frame's fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    pub status: Status,
    /// As sent; not necessarily UTF-8.
    pub message: Bytes,
}

/// Decode a DISCONNECT payload (KV list with `status-code` and `message`).
///
/// # Errors
/// [`ProtocolError`] if the KV list is malformed or `status-code` is missing or not an int.
pub fn decode_disconnect(payload: Bytes, frame: &'static str) -> Result<Disconnect, ProtocolError> {
    let mut status = None;
    let mut message = Bytes::new();
    for item in KvIter::new(payload) {
        let (k, v) = item.map_err(|source| ProtocolError::Decode { frame, source })?;
        match &k[..] {
            b"status-code" => {
                status = match v {
                    TypedData::Uint64(u) => Some(Status::from_code(u)),
                    v => v.as_i64().map(|c| Status::from_code(c as u64)),
                };
                if status.is_none() {
                    return Err(ProtocolError::BadValue { key: "status-code" });
                }
            }
            b"message" => {
                if let TypedData::String(s) = v {
                    message = s;
                }
            }
            _ => {}
        }
    }
    let status = status.ok_or(ProtocolError::Decode {
        frame,
        source: DecodeError::UnexpectedEnd,
    })?;
    Ok(Disconnect { status, message })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_round_trip_and_truncation() {
        let mut b = BytesMut::new();
        encode_ack::<Action>(&mut b, 300, 1, &[]);
        let mut body = b.freeze().slice(4..);
        let h = Header::decode(&mut body).unwrap();
        assert_eq!(h.stream_id, 300);
        assert_eq!(h.frame_id, 1);
        assert_eq!(h.flags, FLAG_FIN);
        assert!(body.is_empty());
        let mut short = Bytes::from_static(&[3, 0, 0, 0, 1, 0xf0]);
        assert_eq!(Header::decode(&mut short), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn set_var_encodes_like_action_and_ack_room_covers_any_ids() {
        let vars = [
            SetVar {
                scope: Scope::Txn,
                name: "allow",
                value: TypedValue::Bool(true),
            },
            SetVar {
                scope: Scope::Txn,
                name: "status",
                value: TypedValue::Int64(503),
            },
            SetVar {
                scope: Scope::Sess,
                name: "reason",
                value: TypedValue::Str("upstream_unavailable"),
            },
        ];
        let actions: Vec<Action> = vars.iter().map(SetVar::to_action).collect();
        let (mut a, mut b) = (BytesMut::new(), BytesMut::new());
        encode_ack(&mut a, 7, 1, &vars);
        encode_ack(&mut b, 7, 1, &actions);
        assert_eq!(a, b);
        assert_eq!(ack_len(7, 1, &vars), ack_len(7, 1, &actions));
        assert_eq!(decode_actions(a.freeze().slice(4 + 7..)).unwrap(), actions);
        // The largest header there is; ack_room leaves room for it.
        assert_eq!(
            ack_len::<Action>(u64::MAX, u64::MAX, &[]),
            MAX_ACK_HEADER_LEN
        );
        let room = ack_room(256);
        assert_eq!(room, 256 - MAX_ACK_HEADER_LEN);
        assert_eq!(ack_room(3), 0);
    }

    #[test]
    fn disconnect_message_is_capped_on_a_char_boundary() {
        let long = "é".repeat(200); // 400 bytes
        let m = disconnect_message(&long);
        assert!(m.len() <= MAX_DISCONNECT_MESSAGE && m.len() >= MAX_DISCONNECT_MESSAGE - 1);
        let mut b = BytesMut::new();
        encode_agent_disconnect(&mut b, Status::Normal, &long);
        let d = decode_disconnect(b.freeze().slice(11..), "t").unwrap();
        assert_eq!(d.message.len(), m.len());
    }

    #[test]
    fn disconnect_requires_int_status() {
        let mut p = BytesMut::new();
        encode_kv("message", &TypedData::static_str("x"), &mut p);
        assert!(decode_disconnect(p.clone().freeze(), "t").is_err());
        encode_kv("status-code", &TypedData::static_str("1"), &mut p);
        assert!(decode_disconnect(p.freeze(), "t").is_err());
    }

    fn arb_data() -> impl Strategy<Value = TypedData> {
        prop_oneof![
            Just(TypedData::Null),
            any::<bool>().prop_map(TypedData::Bool),
            any::<i64>().prop_map(TypedData::Int64),
            any::<u32>().prop_map(TypedData::Uint32),
            any::<[u8; 4]>().prop_map(|a| TypedData::Ipv4(a.into())),
            ".{0,40}".prop_map(|s| TypedData::String(s.into())),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| TypedData::Binary(v.into())),
        ]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        (
            "[a-z-]{0,12}",
            proptest::collection::vec(("[a-z_]{0,10}", arb_data()), 0..12),
        )
            .prop_map(|(name, args)| Message {
                name: name.into(),
                args: args
                    .into_iter()
                    .map(|(n, value)| Arg {
                        name: n.into(),
                        value,
                    })
                    .collect(),
            })
    }

    fn arb_action() -> impl Strategy<Value = Action> {
        let scope = (0u8..5).prop_map(|s| Scope::from_u8(s).unwrap());
        prop_oneof![
            (scope.clone(), "[a-z_]{1,20}", arb_data()).prop_map(|(scope, n, value)| {
                Action::SetVar {
                    scope,
                    name: n.into(),
                    value,
                }
            }),
            (scope, "[a-z_]{1,20}").prop_map(|(scope, n)| Action::UnsetVar {
                scope,
                name: n.into()
            }),
        ]
    }

    proptest! {
        #[test]
        fn notify_round_trip(sid in any::<u64>(), fid in any::<u64>(),
                             msgs in proptest::collection::vec(arb_message(), 0..4)) {
            let mut b = BytesMut::new();
            encode_notify(&mut b, sid, fid, &msgs);
            let mut frame = b.freeze();
            let len = frame.get_u32() as usize;
            prop_assert_eq!(len, frame.len());
            let h = Header::decode(&mut frame).unwrap();
            prop_assert_eq!((h.frame_type, h.flags, h.stream_id, h.frame_id), (3, FLAG_FIN, sid, fid));
            prop_assert_eq!(decode_messages(frame).unwrap(), msgs);
        }

        #[test]
        fn ack_round_trip(sid in any::<u64>(), fid in any::<u64>(),
                          actions in proptest::collection::vec(arb_action(), 0..10)) {
            let mut b = BytesMut::new();
            encode_ack(&mut b, sid, fid, &actions);
            prop_assert_eq!(b.len(), LENGTH_PREFIX + ack_len(sid, fid, &actions));
            let mut frame = b.freeze();
            let len = frame.get_u32() as usize;
            prop_assert_eq!(len, frame.len());
            let h = Header::decode(&mut frame).unwrap();
            prop_assert_eq!((h.frame_type, h.stream_id, h.frame_id), (103, sid, fid));
            prop_assert_eq!(decode_actions(frame).unwrap(), actions);
        }

        #[test]
        fn disconnect_round_trip(code in any::<u32>(), msg in ".{0,300}") {
            let mut b = BytesMut::new();
            encode_haproxy_disconnect(&mut b, Status::from_code(u64::from(code)), &msg);
            let frame = b.freeze();
            prop_assert_eq!(&frame[4..11], &[2u8, 0, 0, 0, 1, 0, 0][..]);
            let d = decode_disconnect(frame.slice(11..), "t").unwrap();
            prop_assert_eq!(d.status.code(), code);
            prop_assert_eq!(&d.message[..], disconnect_message(&msg).as_bytes());
        }

        #[test]
        fn decode_messages_never_panics(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode_messages(Bytes::from(input));
        }
    }
}
