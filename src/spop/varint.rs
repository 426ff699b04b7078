//! HAProxy's variable-length integers (the "peers" encoding, `include/haproxy/intops.h`).
//!
//! ```text
//! encode(i: u64):
//!     if i < 240: emit i; return
//!     emit (i & 0xFF) | 0xF0; i = (i - 240) >> 4
//!     while i >= 128: emit (i & 0xFF) | 0x80; i = (i - 128) >> 7
//!     emit i
//! ```
//!
//! The decoder adds each byte *including* its continuation bit (`i += c << shift`); the
//! `- 240` and `- 128` of the encoder compensate for it. Masking the top bit off while decoding
//! gives wrong values. Every length has a disjoint value range, so each value has exactly one
//! encoding and `encode(decode(b)) == b` for every accepted `b`.

use bytes::{Buf, BufMut, Bytes};

use super::error::DecodeError;

/// A u64 never needs more than 10 bytes (4 value bits in the first byte, 7 in each following
/// one: 4 + 9 * 7 = 67 >= 64). Longer input is rejected instead of shifting past 63 bits,
/// which is the overflow bug the `spop` crate 0.12 had to fix.
pub const MAX_VARINT_LEN: usize = 10;

/// Number of bytes [`encode`] writes for `v`.
pub const fn encoded_len(mut v: u64) -> usize {
    if v < 240 {
        return 1;
    }
    let mut n = 1;
    v = (v - 240) >> 4;
    while v >= 128 {
        n += 1;
        v = (v - 128) >> 7;
    }
    n + 1
}

/// Append the encoding of `v` to `buf`.
pub fn encode<B: BufMut>(mut v: u64, buf: &mut B) {
    if v < 240 {
        buf.put_u8(v as u8);
        return;
    }
    buf.put_u8((v as u8) | 0xF0);
    v = (v - 240) >> 4;
    while v >= 128 {
        buf.put_u8((v as u8) | 0x80);
        v = (v - 128) >> 7;
    }
    buf.put_u8(v as u8);
}

/// Decode one varint from the front of `src`; returns the value and the number of bytes used.
///
/// # Errors
/// [`DecodeError::UnexpectedEnd`] when `src` ends inside the varint,
/// [`DecodeError::VarintOverflow`] when it does not fit a u64 or is longer than
/// [`MAX_VARINT_LEN`].
pub fn decode_slice(src: &[u8]) -> Result<(u64, usize), DecodeError> {
    let first = *src.first().ok_or(DecodeError::UnexpectedEnd)?;
    if first < 240 {
        return Ok((u64::from(first), 1));
    }
    let mut value = u64::from(first);
    let mut shift = 4u32;
    for (i, &c) in src.iter().enumerate().take(MAX_VARINT_LEN).skip(1) {
        let c = u64::from(c);
        // `c << shift` must not lose bits: at shift 60 only the low 4 bits of `c` fit.
        if shift > 57 && c >> (64 - shift) != 0 {
            return Err(DecodeError::VarintOverflow);
        }
        value = value
            .checked_add(c << shift)
            .ok_or(DecodeError::VarintOverflow)?;
        if c < 128 {
            return Ok((value, i + 1));
        }
        shift += 7;
    }
    if src.len() >= MAX_VARINT_LEN {
        Err(DecodeError::VarintOverflow)
    } else {
        Err(DecodeError::UnexpectedEnd)
    }
}

/// Decode one varint from the front of `buf` and advance past it.
///
/// # Errors
/// As [`decode_slice`]; `buf` is left unchanged on error.
pub fn decode(buf: &mut Bytes) -> Result<u64, DecodeError> {
    let (v, n) = decode_slice(buf.chunk())?;
    buf.advance(n);
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: u64) -> Vec<u8> {
        let mut b = Vec::new();
        encode(v, &mut b);
        b
    }

    /// The worked examples of spop-protocol.md §3.
    #[test]
    fn worked_examples() {
        let cases: &[(u64, &[u8])] = &[
            (0, &[0x00]),
            (239, &[0xef]),
            (240, &[0xf0, 0x00]),
            (1000, &[0xf8, 0x2f]),
            (2287, &[0xff, 0x7f]),
            (2288, &[0xf0, 0x80, 0x00]),
            (16380, &[0xfc, 0xf0, 0x06]),
            (18080, &[0xf0, 0xdb, 0x07]),
            (4_294_967_295, &[0xff, 0xf0, 0xfe, 0xfe, 0x7e]),
            (
                (-2i64) as u64,
                &[0xfe, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e],
            ),
        ];
        for &(v, bytes) in cases {
            assert_eq!(enc(v), bytes, "encode {v}");
            assert_eq!(encoded_len(v), bytes.len(), "len {v}");
            assert_eq!(decode_slice(bytes), Ok((v, bytes.len())), "decode {v}");
        }
    }

    #[test]
    fn range_boundaries() {
        for (v, n) in [
            (239u64, 1),
            (240, 2),
            (2287, 2),
            (2288, 3),
            (264_431, 3),
            (264_432, 4),
            (33_818_863, 4),
            (33_818_864, 5),
            (4_328_786_159, 5),
            (4_328_786_160, 6),
            (u64::MAX, 10),
        ] {
            assert_eq!(enc(v).len(), n, "{v}");
            assert_eq!(encoded_len(v), n, "{v}");
        }
    }

    /// Regression: a decoder that keeps shifting on continuation bytes overflows (the bug the
    /// `spop` crate had). Ten continuation bytes and too-large tenth bytes must be rejected.
    #[test]
    fn overlong_and_overflow_rejected() {
        assert_eq!(decode_slice(&[0xff; 11]), Err(DecodeError::VarintOverflow));
        assert_eq!(decode_slice(&[0xff; 10]), Err(DecodeError::VarintOverflow));
        // u64::MAX is accepted; one more in the last byte is not.
        let mut max = enc(u64::MAX);
        assert_eq!(decode_slice(&max), Ok((u64::MAX, 10)));
        *max.last_mut().unwrap() += 1;
        assert_eq!(decode_slice(&max), Err(DecodeError::VarintOverflow));
        let mut big = enc(u64::MAX);
        *big.last_mut().unwrap() = 0x7f;
        assert_eq!(decode_slice(&big), Err(DecodeError::VarintOverflow));
    }

    #[test]
    fn truncated() {
        assert_eq!(decode_slice(&[]), Err(DecodeError::UnexpectedEnd));
        assert_eq!(decode_slice(&[0xf0]), Err(DecodeError::UnexpectedEnd));
        assert_eq!(decode_slice(&[0xf0, 0x80]), Err(DecodeError::UnexpectedEnd));
        let mut b = Bytes::from_static(&[0xfc, 0xf0]);
        assert_eq!(decode(&mut b), Err(DecodeError::UnexpectedEnd));
        assert_eq!(b.len(), 2, "buffer untouched on error");
    }

    proptest! {
        #[test]
        fn round_trip(v in any::<u64>()) {
            let b = enc(v);
            prop_assert_eq!(b.len(), encoded_len(v));
            prop_assert_eq!(decode_slice(&b), Ok((v, b.len())));
        }

        #[test]
        fn round_trip_small(v in 0u64..10_000_000) {
            let b = enc(v);
            let mut bytes = Bytes::from(b.clone());
            prop_assert_eq!(decode(&mut bytes), Ok(v));
            prop_assert!(bytes.is_empty());
        }

        /// Any accepted input re-encodes to exactly the bytes consumed (unique encoding).
        #[test]
        fn decode_is_canonical(input in proptest::collection::vec(any::<u8>(), 0..12)) {
            if let Ok((v, n)) = decode_slice(&input) {
                prop_assert_eq!(&enc(v)[..], &input[..n]);
            }
        }
    }
}
