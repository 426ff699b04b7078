//! SPOP (HAProxy's Stream Processing Offload Protocol), agent side, sans-IO.
//!
//! No tokio, no sockets, no clock in here: [`Connection`] is fed bytes and yields events and
//! frames to send, so the whole protocol is tested with byte literals (see `conn/tests.rs`)
//! and fuzzed without a runtime. The tokio shell is [`crate::server`].
//!
//! | module | wire element |
//! |---|---|
//! | [`varint`] | HAProxy "peers" varints |
//! | [`data`] | TYPED-DATA (decoded, and borrowed values to encode), bare strings, KV lists |
//! | [`frame`] | frame header, NOTIFY messages, ACK actions (SET-VAR encoding, ACK sizes), HELLO/DISCONNECT encoders |
//! | [`hello`] | HAPROXY-HELLO parsing and negotiation |
//! | [`status`] | DISCONNECT status codes |
//! | [`error`] | decode/protocol errors and their status |
//! | [`conn`] | the connection state machine |
//!
//! Spec: HAProxy `doc/SPOE.txt` and the project's `spop-protocol.md` (observed frames from
//! HAProxy 2.6 and 3.2).

pub mod conn;
pub mod data;
pub mod error;
pub mod frame;
pub mod hello;
pub mod status;
pub mod varint;

pub use conn::{AckError, CloseReason, ConnConfig, Connection, Event, FrameCounts, Notify};
pub use data::{TypedData, TypedValue};
pub use error::{DecodeError, ProtocolError};
pub use frame::{Action, Arg, FrameType, Message, Scope, SetVar};
pub use status::Status;
