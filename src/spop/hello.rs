//! HAPROXY-HELLO parsing and the (pure) HELLO negotiation (spop-protocol.md §5).
//!
//! Keys are matched exactly (HAProxy itself matches by prefix when it reads our AGENT-HELLO,
//! its 3.x health check exactly; HAProxy's own keys are fixed strings, so exact matching
//! loses nothing). Unknown keys are skipped by decoding their value, so an unknown key with
//! a well-formed value of any type is harmless. A known key with a value of the wrong type is
//! an invalid frame (status 4), as in HAProxy's own parser.
//!
//! Nothing is required beyond what the protocol needs: `engine-id`, `pipelining` and `async`
//! are optional, so health-check HELLOs (no engine-id, empty capabilities) work.

use bytes::Bytes;

use super::data::{KvIter, TypedData};
use super::error::ProtocolError;

/// The protocol's minimum `max-frame-size` (`SPOP_MIN_FRAME_SIZE`).
pub const MIN_FRAME_SIZE: u32 = 256;

/// The fields of a HAPROXY-HELLO we care about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HaproxyHello {
    /// `supported-versions`, raw.
    pub supported_versions: Option<Bytes>,
    /// `max-frame-size`, any integer type widened (UINT64 above i64::MAX stays positive).
    pub max_frame_size: Option<i128>,
    /// `capabilities`, raw (comma separated, spaces allowed).
    pub capabilities: Option<Bytes>,
    /// `healthcheck`: the connection only checks that we answer the HELLO.
    pub healthcheck: bool,
    /// `engine-id`, for debug logs only (per thread on 2.6, per agent on 3.x).
    pub engine_id: Option<Bytes>,
}

impl HaproxyHello {
    /// Parse the KV-LIST payload of a HAPROXY-HELLO. A key given twice: the last value wins.
    ///
    /// # Errors
    /// [`ProtocolError::Decode`] for malformed items, [`ProtocolError::BadValue`] for a
    /// known key with a value of the wrong type.
    pub fn parse(payload: Bytes) -> Result<HaproxyHello, ProtocolError> {
        let mut h = HaproxyHello::default();
        for item in KvIter::new(payload) {
            let (key, value) = item.map_err(|source| ProtocolError::Decode {
                frame: "HAPROXY-HELLO",
                source,
            })?;
            match (&key[..], value) {
                (b"supported-versions", TypedData::String(s)) => h.supported_versions = Some(s),
                (b"supported-versions", _) => {
                    return Err(ProtocolError::BadValue {
                        key: "supported-versions",
                    })
                }
                (b"max-frame-size", TypedData::Uint64(v)) => {
                    h.max_frame_size = Some(i128::from(v));
                }
                (b"max-frame-size", v) => {
                    let v = v.as_i64().ok_or(ProtocolError::BadValue {
                        key: "max-frame-size",
                    })?;
                    h.max_frame_size = Some(i128::from(v));
                }
                (b"capabilities", TypedData::String(s)) => h.capabilities = Some(s),
                (b"capabilities", _) => {
                    return Err(ProtocolError::BadValue {
                        key: "capabilities",
                    })
                }
                (b"healthcheck", TypedData::Bool(b)) => h.healthcheck = b,
                (b"healthcheck", _) => return Err(ProtocolError::BadValue { key: "healthcheck" }),
                (b"engine-id", TypedData::String(s)) => h.engine_id = Some(s),
                // A non-string engine-id is odd but harmless: we never use it.
                _ => {}
            }
        }
        Ok(h)
    }

    /// Whether HAProxy announced `cap` (comma separated, spaces ignored).
    pub fn has_capability(&self, cap: &str) -> bool {
        self.capabilities.as_deref().is_some_and(|c| {
            c.split(|&b| b == b',')
                .any(|item| item.trim_ascii() == cap.as_bytes())
        })
    }

    /// Check the HELLO and pick the frame size; pure, no I/O.
    ///
    /// The version is checked first (status 5 missing, 8 no 2.x), then the frame size (6
    /// missing, 9 below 256). We answer `min(HAProxy's, ours)`, which is always within
    /// `[256, HAProxy's]` since ours is at least 256 (validated config).
    ///
    /// # Errors
    /// The matching [`ProtocolError`].
    pub fn negotiate(&self, our_max_frame_size: u32) -> Result<u32, ProtocolError> {
        let versions = self
            .supported_versions
            .as_ref()
            .ok_or(ProtocolError::MissingVersion)?;
        if !supports_v2(versions) {
            return Err(ProtocolError::UnsupportedVersion);
        }
        let theirs = self
            .max_frame_size
            .ok_or(ProtocolError::MissingMaxFrameSize)?;
        if theirs < i128::from(MIN_FRAME_SIZE) {
            return Err(ProtocolError::BadMaxFrameSize(
                i64::try_from(theirs).unwrap_or(i64::MIN),
            ));
        }
        let ours = our_max_frame_size.max(MIN_FRAME_SIZE);
        Ok(u32::try_from(theirs).map_or(ours, |t| t.min(ours)))
    }
}

/// Whether a `supported-versions` list ("2.0", "1.0, 2.0", " 2.1 ") contains a 2.x version.
/// Entries that do not parse as `Major.Minor` are ignored.
fn supports_v2(list: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|item| {
        let item = item.trim_ascii();
        let Some(dot) = item.iter().position(|&b| b == b'.') else {
            return false;
        };
        let (major, minor) = (&item[..dot], &item[dot + 1..]);
        let digits = |s: &[u8]| !s.is_empty() && s.len() <= 9 && s.iter().all(u8::is_ascii_digit);
        digits(major) && digits(minor) && major.iter().skip_while(|&&b| b == b'0').eq(b"2".iter())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spop::data::encode_kv;
    use bytes::BytesMut;

    fn hello(items: &[(&str, TypedData)]) -> Result<HaproxyHello, ProtocolError> {
        let mut b = BytesMut::new();
        for (k, v) in items {
            encode_kv(k, v, &mut b);
        }
        HaproxyHello::parse(b.freeze())
    }

    fn s(v: &'static str) -> TypedData {
        TypedData::static_str(v)
    }

    #[test]
    fn versions() {
        for ok in [
            "2.0", " 2.0 ", "1.0,2.0", "1.0, 2.1", "2.10", "02.0", "x,2.0",
        ] {
            assert!(supports_v2(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", "1.0", "3.0", "2", "2.", ".0", "2.0.1", "2.x", "12.0", "20.0", "v2.0",
        ] {
            assert!(!supports_v2(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn negotiation_statuses() {
        let v = ("supported-versions", s("2.0"));
        let m = ("max-frame-size", TypedData::Uint32(16380));
        assert_eq!(
            hello(&[v.clone(), m.clone()]).unwrap().negotiate(16380),
            Ok(16380)
        );
        assert_eq!(
            hello(&[v.clone(), m.clone()]).unwrap().negotiate(4096),
            Ok(4096)
        );
        assert_eq!(
            hello(&[v.clone(), ("max-frame-size", TypedData::Int64(1000))])
                .unwrap()
                .negotiate(16380),
            Ok(1000)
        );
        assert_eq!(
            hello(&[v.clone(), ("max-frame-size", TypedData::Uint64(u64::MAX))])
                .unwrap()
                .negotiate(16380),
            Ok(16380)
        );
        let e = |items: &[(&str, TypedData)]| {
            hello(items)
                .and_then(|h| h.negotiate(16380))
                .unwrap_err()
                .status()
                .code()
        };
        assert_eq!(e(std::slice::from_ref(&m)), 5);
        assert_eq!(e(&[("supported-versions", s("1.0")), m.clone()]), 8);
        assert_eq!(e(std::slice::from_ref(&v)), 6);
        assert_eq!(
            e(&[v.clone(), ("max-frame-size", TypedData::Uint32(255))]),
            9
        );
        assert_eq!(e(&[v.clone(), ("max-frame-size", TypedData::Int64(-1))]), 9);
        assert_eq!(
            e(&[("supported-versions", TypedData::Int64(2)), m.clone()]),
            4
        );
        assert_eq!(e(&[v.clone(), ("max-frame-size", s("16380"))]), 4);
        assert_eq!(e(&[v.clone(), m.clone(), ("healthcheck", s("yes"))]), 4);
    }

    #[test]
    fn unknown_keys_and_prefix_lookalikes_are_skipped() {
        let h = hello(&[
            ("x-new", TypedData::Ipv6(std::net::Ipv6Addr::LOCALHOST)),
            ("supported-versions-extra", TypedData::Int64(1)),
            ("supported-versions", s("2.0")),
            ("max-frame-size", TypedData::Uint32(300)),
            ("max-frame-sizes", s("nope")),
            ("capabilities", s("pipelining , async")),
            ("engine-id", s("e1")),
        ])
        .unwrap();
        assert_eq!(h.negotiate(16380), Ok(300));
        assert!(h.has_capability("pipelining"));
        assert!(h.has_capability("async"));
        assert!(!h.has_capability("fragmentation"));
        assert!(!h.healthcheck);
        assert_eq!(h.engine_id.as_deref(), Some(&b"e1"[..]));
    }
}
