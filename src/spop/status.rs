//! SPOP DISCONNECT status codes (spop-protocol.md §8, HAProxy `enum spop_error`).
//!
//! ```text
//!  0 normal                     5 version value not found            10 fragmentation not supported
//!  1 I/O error                  6 max-frame-size value not found     11 invalid interlaced frames
//!  2 a timeout occurred         7 capabilities value not found       12 frame-id not found
//!  3 frame is too big           8 unsupported version                13 resource allocation error
//!  4 invalid frame received     9 max-frame-size too big or too small 99 an unknown error occurred
//! ```

use std::fmt;

/// A DISCONNECT status. Agents may define their own codes, hence [`Status::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    Normal,
    Io,
    Timeout,
    TooBig,
    Invalid,
    NoVersion,
    NoFrameSize,
    NoCapabilities,
    BadVersion,
    BadFrameSize,
    FragmentationNotSupported,
    InterlacedFrames,
    FrameIdNotFound,
    ResourceAllocation,
    Unknown,
    /// Any other code (kept as received).
    Other(u32),
}

impl Status {
    /// Every code of the table, in numeric order (tests and metric pre-creation).
    pub const KNOWN: [Status; 15] = [
        Status::Normal,
        Status::Io,
        Status::Timeout,
        Status::TooBig,
        Status::Invalid,
        Status::NoVersion,
        Status::NoFrameSize,
        Status::NoCapabilities,
        Status::BadVersion,
        Status::BadFrameSize,
        Status::FragmentationNotSupported,
        Status::InterlacedFrames,
        Status::FrameIdNotFound,
        Status::ResourceAllocation,
        Status::Unknown,
    ];

    /// The numeric code on the wire.
    pub const fn code(self) -> u32 {
        match self {
            Status::Normal => 0,
            Status::Io => 1,
            Status::Timeout => 2,
            Status::TooBig => 3,
            Status::Invalid => 4,
            Status::NoVersion => 5,
            Status::NoFrameSize => 6,
            Status::NoCapabilities => 7,
            Status::BadVersion => 8,
            Status::BadFrameSize => 9,
            Status::FragmentationNotSupported => 10,
            Status::InterlacedFrames => 11,
            Status::FrameIdNotFound => 12,
            Status::ResourceAllocation => 13,
            Status::Unknown => 99,
            Status::Other(c) => c,
        }
    }

    /// The status for a received code. Codes that do not fit a u32 become [`Status::Unknown`].
    pub fn from_code(code: u64) -> Status {
        let Ok(c) = u32::try_from(code) else {
            return Status::Unknown;
        };
        Status::KNOWN
            .iter()
            .copied()
            .find(|s| s.code() == c)
            .unwrap_or(Status::Other(c))
    }

    /// The reason string HAProxy uses for this code (`spop_err_reasons`), sent as the
    /// DISCONNECT `message`.
    pub const fn reason(self) -> &'static str {
        match self {
            Status::Normal => "normal",
            Status::Io => "I/O error",
            Status::Timeout => "a timeout occurred",
            Status::TooBig => "frame is too big",
            Status::Invalid => "invalid frame received",
            Status::NoVersion => "version value not found",
            Status::NoFrameSize => "max-frame-size value not found",
            Status::NoCapabilities => "capabilities value not found",
            Status::BadVersion => "unsupported version",
            Status::BadFrameSize => "max-frame-size too big or too small",
            Status::FragmentationNotSupported => "fragmentation not supported",
            Status::InterlacedFrames => "invalid interlaced frames",
            Status::FrameIdNotFound => "frame-id not found",
            Status::ResourceAllocation => "resource allocation error",
            Status::Unknown | Status::Other(_) => "an unknown error occurred",
        }
    }

    /// A bounded metric label: the decimal code for the table, `"other"` otherwise.
    pub fn label(self) -> &'static str {
        match self {
            Status::Normal => "0",
            Status::Io => "1",
            Status::Timeout => "2",
            Status::TooBig => "3",
            Status::Invalid => "4",
            Status::NoVersion => "5",
            Status::NoFrameSize => "6",
            Status::NoCapabilities => "7",
            Status::BadVersion => "8",
            Status::BadFrameSize => "9",
            Status::FragmentationNotSupported => "10",
            Status::InterlacedFrames => "11",
            Status::FrameIdNotFound => "12",
            Status::ResourceAllocation => "13",
            Status::Unknown => "99",
            Status::Other(_) => "other",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for s in Status::KNOWN {
            assert_eq!(Status::from_code(u64::from(s.code())), s);
            assert_eq!(s.label(), s.code().to_string());
        }
        assert_eq!(Status::from_code(42), Status::Other(42));
        assert_eq!(Status::from_code(u64::MAX), Status::Unknown);
        assert_eq!(Status::FragmentationNotSupported.code(), 10);
        assert_eq!(Status::Unknown.code(), 99);
        assert_eq!(Status::Timeout.reason(), "a timeout occurred");
    }
}
