//! The errors of the protocol core and the single place where they become a wire [`Status`].

use thiserror::Error;

use super::status::Status;

/// Malformed bytes inside one frame's payload (typed data, strings, lists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The frame ended in the middle of an item.
    #[error("unexpected end of frame")]
    UnexpectedEnd,
    /// A varint longer than 10 bytes or larger than a u64.
    #[error("varint overflows 64 bits")]
    VarintOverflow,
    /// A TYPED-DATA type 10..=15: its size is unknown, so it cannot be skipped.
    #[error("reserved data type {0}")]
    ReservedType(u8),
}

/// Why the connection must end. Every variant maps to one SPOP status in [`Self::status`];
/// the connection sends AGENT-DISCONNECT with it and closes.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The 4-byte length is above the current limit (before the HELLO: the configured
    /// maximum; after: the negotiated one).
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    FrameTooBig { len: u32, max: u32 },
    /// The 4-byte length is below the 7 bytes of the smallest frame.
    #[error("frame of {len} bytes is shorter than a frame header")]
    FrameTooShort { len: u32 },
    /// The frame header or payload is malformed.
    #[error("malformed {frame} frame: {source}")]
    Decode {
        frame: &'static str,
        #[source]
        source: DecodeError,
    },
    /// A frame type no peer may send to an agent (agent types 101..103 included).
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    /// Type 0 (UNSET): a fragment continuation. We never announce `fragmentation`.
    #[error("fragment (UNSET frame) received, fragmentation was not negotiated")]
    UnsetFrame,
    /// A frame without the FIN flag: a fragmented payload.
    #[error("frame without FIN flag, fragmentation was not negotiated")]
    NotFinal,
    /// A HELLO or DISCONNECT frame whose stream-id or frame-id is not 0.
    #[error("{frame} frame with non-zero stream-id or frame-id")]
    NonZeroIds { frame: &'static str },
    /// A NOTIFY before the HELLO, or a second HELLO.
    #[error("unexpected {frame} frame {state}")]
    UnexpectedFrame {
        frame: &'static str,
        state: &'static str,
    },
    /// A known HELLO or DISCONNECT key with a value of the wrong type.
    #[error("key {key} has the wrong data type")]
    BadValue { key: &'static str },
    /// HAPROXY-HELLO without `supported-versions`.
    #[error("HELLO without supported-versions")]
    MissingVersion,
    /// No 2.x version in `supported-versions`.
    #[error("no supported version (we speak 2.0)")]
    UnsupportedVersion,
    /// HAPROXY-HELLO without `max-frame-size`.
    #[error("HELLO without max-frame-size")]
    MissingMaxFrameSize,
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed inside a frame ({have} bytes buffered)")]
    Truncated { have: usize },
    /// HAProxy's `max-frame-size` is below the protocol minimum of 256.
    #[error("max-frame-size {0} is below the minimum of 256")]
    BadMaxFrameSize(i64),
}

impl ProtocolError {
    /// The status sent in AGENT-DISCONNECT for this error (spop-protocol.md §8).
    pub fn status(&self) -> Status {
        match self {
            ProtocolError::FrameTooBig { .. } => Status::TooBig,
            ProtocolError::UnsetFrame | ProtocolError::NotFinal => {
                Status::FragmentationNotSupported
            }
            ProtocolError::MissingVersion => Status::NoVersion,
            ProtocolError::UnsupportedVersion => Status::BadVersion,
            ProtocolError::MissingMaxFrameSize => Status::NoFrameSize,
            ProtocolError::BadMaxFrameSize(_) => Status::BadFrameSize,
            ProtocolError::FrameTooShort { .. }
            | ProtocolError::Truncated { .. }
            | ProtocolError::Decode { .. }
            | ProtocolError::UnknownFrameType(_)
            | ProtocolError::NonZeroIds { .. }
            | ProtocolError::UnexpectedFrame { .. }
            | ProtocolError::BadValue { .. } => Status::Invalid,
        }
    }
}
