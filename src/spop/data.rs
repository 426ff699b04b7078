//! TYPED-DATA, bare strings and KV lists (spop-protocol.md §4).
//!
//! ```text
//! TYPED-DATA : <TYPE:4 bits><FLAGS:4 bits><DATA>   type = byte & 0x0F, flags = byte & 0xF0
//! 0 NULL | 1 BOOL (value = flag 0x10) | 2 INT32 | 3 UINT32 | 4 INT64 | 5 UINT64 (all varints)
//! 6 IPV4 (4 bytes) | 7 IPV6 (16 bytes) | 8 STRING | 9 BINARY (<varint length><bytes>)
//! 10..15 reserved
//! ```
//!
//! Decoding works on [`Bytes`]: STRING and BINARY values are reference-counted slices of the
//! frame, so a kilobyte bearer token is never copied.

use std::net::{Ipv4Addr, Ipv6Addr};

use bytes::{Buf, BufMut, Bytes};

use super::error::DecodeError;
use super::varint;

/// Type ids of TYPED-DATA (low nibble of the type byte).
pub mod type_id {
    pub const NULL: u8 = 0;
    pub const BOOL: u8 = 1;
    pub const INT32: u8 = 2;
    pub const UINT32: u8 = 3;
    pub const INT64: u8 = 4;
    pub const UINT64: u8 = 5;
    pub const IPV4: u8 = 6;
    pub const IPV6: u8 = 7;
    pub const STRING: u8 = 8;
    pub const BINARY: u8 = 9;
}

const TYPE_MASK: u8 = 0x0F;
/// The BOOL value bit. Only this bit counts: `0x01` is false, `0x11` true.
const FLAG_TRUE: u8 = 0x10;

/// One TYPED-DATA value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypedData {
    Null,
    Bool(bool),
    Int32(i32),
    Uint32(u32),
    Int64(i64),
    Uint64(u64),
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    /// Raw bytes as sent; not necessarily UTF-8.
    String(Bytes),
    Binary(Bytes),
}

impl TypedData {
    /// A STRING from a `'static` str, without allocating.
    pub const fn static_str(s: &'static str) -> TypedData {
        TypedData::String(Bytes::from_static(s.as_bytes()))
    }

    /// Any of the four integer types as HAProxy reads them: a signed 64-bit value
    /// (`spoe_decode_data` maps types 2..5 to `SMP_T_SINT`).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            TypedData::Int32(v) => Some(i64::from(v)),
            TypedData::Uint32(v) => Some(i64::from(v)),
            TypedData::Int64(v) => Some(v),
            TypedData::Uint64(v) => Some(v as i64),
            _ => None,
        }
    }

    /// Decode one value from the front of `buf`.
    ///
    /// # Errors
    /// [`DecodeError::UnexpectedEnd`] if the value is cut short, [`DecodeError::VarintOverflow`]
    /// for a bad varint, [`DecodeError::ReservedType`] for types 10..15.
    pub fn decode(buf: &mut Bytes) -> Result<TypedData, DecodeError> {
        if !buf.has_remaining() {
            return Err(DecodeError::UnexpectedEnd);
        }
        let tb = buf.get_u8();
        Ok(match tb & TYPE_MASK {
            type_id::NULL => TypedData::Null,
            type_id::BOOL => TypedData::Bool(tb & FLAG_TRUE != 0),
            // Signed values travel as their two's-complement u64 (HAProxy casts both ways);
            // INT32/UINT32 are truncated like HAProxy's C casts would, never rejected.
            type_id::INT32 => TypedData::Int32(varint::decode(buf)? as i64 as i32),
            type_id::UINT32 => TypedData::Uint32(varint::decode(buf)? as u32),
            type_id::INT64 => TypedData::Int64(varint::decode(buf)? as i64),
            type_id::UINT64 => TypedData::Uint64(varint::decode(buf)?),
            type_id::IPV4 => {
                let b = take(buf, 4)?;
                TypedData::Ipv4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
            }
            type_id::IPV6 => {
                let b = take(buf, 16)?;
                let mut a = [0u8; 16];
                a.copy_from_slice(&b);
                TypedData::Ipv6(Ipv6Addr::from(a))
            }
            type_id::STRING => TypedData::String(decode_bare(buf)?),
            type_id::BINARY => TypedData::Binary(decode_bare(buf)?),
            t => return Err(DecodeError::ReservedType(t)),
        })
    }

    /// Append the encoding of this value.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            TypedData::Null => buf.put_u8(type_id::NULL),
            TypedData::Bool(b) => buf.put_u8(type_id::BOOL | if *b { FLAG_TRUE } else { 0 }),
            TypedData::Int32(v) => {
                buf.put_u8(type_id::INT32);
                varint::encode(i64::from(*v) as u64, buf);
            }
            TypedData::Uint32(v) => {
                buf.put_u8(type_id::UINT32);
                varint::encode(u64::from(*v), buf);
            }
            TypedData::Int64(v) => {
                buf.put_u8(type_id::INT64);
                varint::encode(*v as u64, buf);
            }
            TypedData::Uint64(v) => {
                buf.put_u8(type_id::UINT64);
                varint::encode(*v, buf);
            }
            TypedData::Ipv4(a) => {
                buf.put_u8(type_id::IPV4);
                buf.put_slice(&a.octets());
            }
            TypedData::Ipv6(a) => {
                buf.put_u8(type_id::IPV6);
                buf.put_slice(&a.octets());
            }
            TypedData::String(s) => {
                buf.put_u8(type_id::STRING);
                encode_bare(s, buf);
            }
            TypedData::Binary(s) => {
                buf.put_u8(type_id::BINARY);
                encode_bare(s, buf);
            }
        }
    }

    /// Number of bytes [`Self::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            TypedData::Null | TypedData::Bool(_) => 0,
            TypedData::Int32(v) => varint::encoded_len(i64::from(*v) as u64),
            TypedData::Uint32(v) => varint::encoded_len(u64::from(*v)),
            TypedData::Int64(v) => varint::encoded_len(*v as u64),
            TypedData::Uint64(v) => varint::encoded_len(*v),
            TypedData::Ipv4(_) => 4,
            TypedData::Ipv6(_) => 16,
            TypedData::String(s) | TypedData::Binary(s) => bare_len(s),
        }
    }
}

/// A TYPED-DATA value to encode, borrowing its string: what an agent sends (the variables of
/// an ACK). [`TypedData`] is the decoded, owned form; this one is written straight from where
/// the value lives (a verdict, a static name), without building [`Bytes`] first. Only the
/// types an agent's variables need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypedValue<'a> {
    /// BOOL.
    Bool(bool),
    /// INT64 (HAProxy reads every integer type as a signed 64-bit sample).
    Int64(i64),
    /// STRING.
    Str(&'a str),
}

impl TypedValue<'_> {
    /// Number of bytes [`Self::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        1 + match self {
            TypedValue::Bool(_) => 0,
            TypedValue::Int64(v) => varint::encoded_len(*v as u64),
            TypedValue::Str(s) => bare_len(s.as_bytes()),
        }
    }

    /// Append the encoding of this value: the same bytes as the equal [`TypedData`].
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            TypedValue::Bool(b) => buf.put_u8(type_id::BOOL | if *b { FLAG_TRUE } else { 0 }),
            TypedValue::Int64(v) => {
                buf.put_u8(type_id::INT64);
                varint::encode(*v as u64, buf);
            }
            TypedValue::Str(s) => {
                buf.put_u8(type_id::STRING);
                encode_bare(s.as_bytes(), buf);
            }
        }
    }

    /// The owned [`TypedData`] form (copies a string; tests and tools).
    pub fn to_typed(&self) -> TypedData {
        match self {
            TypedValue::Bool(b) => TypedData::Bool(*b),
            TypedValue::Int64(v) => TypedData::Int64(*v),
            TypedValue::Str(s) => TypedData::String(Bytes::copy_from_slice(s.as_bytes())),
        }
    }
}

fn take(buf: &mut Bytes, n: usize) -> Result<Bytes, DecodeError> {
    if buf.len() < n {
        return Err(DecodeError::UnexpectedEnd);
    }
    Ok(buf.split_to(n))
}

/// Decode a bare string (`<varint length><bytes>`, no type byte): KV names, message and
/// argument names, variable names. Returns a slice of `buf`, no copy.
///
/// # Errors
/// [`DecodeError::UnexpectedEnd`] if the length runs past the end of `buf`.
pub fn decode_bare(buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let (len, n) = varint::decode_slice(buf.chunk())?;
    let len = usize::try_from(len).map_err(|_| DecodeError::UnexpectedEnd)?;
    if buf.len() - n < len {
        return Err(DecodeError::UnexpectedEnd);
    }
    buf.advance(n);
    Ok(buf.split_to(len))
}

/// Append a bare string.
pub fn encode_bare<B: BufMut>(s: &[u8], buf: &mut B) {
    varint::encode(s.len() as u64, buf);
    buf.put_slice(s);
}

/// Encoded size of a bare string.
pub fn bare_len(s: &[u8]) -> usize {
    varint::encoded_len(s.len() as u64) + s.len()
}

/// Iterate a KV-LIST (`{ <bare name> <TYPED-DATA> }*` up to the end of the payload).
///
/// Each item is decoded as it is reached, so unknown keys are skipped by decoding (and
/// dropping) their value; a reserved type stops the iteration with an error.
pub struct KvIter {
    buf: Bytes,
    failed: bool,
}

impl KvIter {
    pub fn new(payload: Bytes) -> KvIter {
        KvIter {
            buf: payload,
            failed: false,
        }
    }
}

impl Iterator for KvIter {
    type Item = Result<(Bytes, TypedData), DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.buf.is_empty() {
            return None;
        }
        let item = decode_bare(&mut self.buf)
            .and_then(|name| TypedData::decode(&mut self.buf).map(|v| (name, v)));
        self.failed = item.is_err();
        Some(item)
    }
}

/// Append one KV item.
pub fn encode_kv<B: BufMut>(name: &str, value: &TypedData, buf: &mut B) {
    encode_bare(name.as_bytes(), buf);
    value.encode(buf);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn enc(v: &TypedData) -> Vec<u8> {
        let mut b = Vec::new();
        v.encode(&mut b);
        assert_eq!(b.len(), v.encoded_len());
        b
    }

    fn dec(b: &[u8]) -> Result<TypedData, DecodeError> {
        let mut bytes = Bytes::copy_from_slice(b);
        let v = TypedData::decode(&mut bytes)?;
        assert!(bytes.is_empty(), "trailing bytes after {v:?}");
        Ok(v)
    }

    #[test]
    fn known_encodings() {
        let cases: Vec<(TypedData, &[u8])> = vec![
            (TypedData::Null, &[0x00]),
            (TypedData::Bool(true), &[0x11]),
            (TypedData::Bool(false), &[0x01]),
            (TypedData::Uint32(16380), &[0x03, 0xfc, 0xf0, 0x06]),
            (TypedData::Int64(18080), &[0x04, 0xf0, 0xdb, 0x07]),
            (
                TypedData::Int64(-2),
                &[
                    0x04, 0xfe, 0xf0, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0xfe, 0x0e,
                ],
            ),
            (
                TypedData::Ipv4(Ipv4Addr::new(127, 0, 0, 1)),
                &[0x06, 0x7f, 0x00, 0x00, 0x01],
            ),
            (TypedData::static_str(""), &[0x08, 0x00]),
            (
                TypedData::static_str("2.0"),
                &[0x08, 0x03, b'2', b'.', b'0'],
            ),
            (
                TypedData::Binary(Bytes::from_static(b"\x00\x01")),
                &[0x09, 0x02, 0x00, 0x01],
            ),
        ];
        for (v, b) in cases {
            assert_eq!(enc(&v), b, "{v:?}");
            assert_eq!(dec(b), Ok(v));
        }
    }

    #[test]
    fn typed_values_encode_like_typed_data() {
        for v in [
            TypedValue::Bool(true),
            TypedValue::Bool(false),
            TypedValue::Int64(0),
            TypedValue::Int64(-2),
            TypedValue::Int64(i64::MAX),
            TypedValue::Str(""),
            TypedValue::Str("Bearer dapi123"),
        ] {
            let mut b = Vec::new();
            v.encode(&mut b);
            assert_eq!(b.len(), v.encoded_len(), "{v:?}");
            assert_eq!(b, enc(&v.to_typed()), "{v:?}");
        }
        let long = "x".repeat(300);
        let mut b = Vec::new();
        TypedValue::Str(&long).encode(&mut b);
        assert_eq!(dec(&b), Ok(TypedData::String(long.into())));
    }

    /// Only the 0x10 flag carries the BOOL value; other flag bits are ignored, and flags on
    /// other types do not change the type (HAProxy masks with 0x0F).
    #[test]
    fn flags_nibble() {
        assert_eq!(dec(&[0x31]), Ok(TypedData::Bool(true)));
        assert_eq!(dec(&[0x21]), Ok(TypedData::Bool(false)));
        assert_eq!(dec(&[0x10]), Ok(TypedData::Null));
        assert_eq!(dec(&[0x18, 0x01, b'a']), Ok(TypedData::static_str("a")));
    }

    #[test]
    fn ipv6_and_ints() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        assert_eq!(dec(&enc(&TypedData::Ipv6(a))), Ok(TypedData::Ipv6(a)));
        assert_eq!(TypedData::Uint32(7).as_i64(), Some(7));
        assert_eq!(TypedData::Int32(-7).as_i64(), Some(-7));
        assert_eq!(TypedData::Uint64(u64::MAX).as_i64(), Some(-1));
        assert_eq!(TypedData::Null.as_i64(), None);
    }

    #[test]
    fn malformed() {
        for t in 10u8..=15 {
            assert_eq!(dec(&[t]), Err(DecodeError::ReservedType(t)));
            assert_eq!(dec(&[t | 0xf0]), Err(DecodeError::ReservedType(t)));
        }
        assert_eq!(dec(&[]), Err(DecodeError::UnexpectedEnd));
        assert_eq!(dec(&[0x06, 1, 2, 3]), Err(DecodeError::UnexpectedEnd));
        assert_eq!(dec(&[0x07, 1, 2, 3]), Err(DecodeError::UnexpectedEnd));
        assert_eq!(dec(&[0x08, 0x05, b'a']), Err(DecodeError::UnexpectedEnd));
        assert_eq!(dec(&[0x08]), Err(DecodeError::UnexpectedEnd));
        assert_eq!(dec(&[0x04, 0xf0]), Err(DecodeError::UnexpectedEnd));
        assert_eq!(
            dec(&[0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::VarintOverflow)
        );
        // A length near u64::MAX must not overflow the bounds check.
        let mut huge = vec![0x09];
        varint::encode(u64::MAX, &mut huge);
        assert_eq!(dec(&huge), Err(DecodeError::UnexpectedEnd));
    }

    #[test]
    fn strings_are_slices_of_the_frame() {
        let frame = Bytes::from_static(b"\x08\x05hello");
        let mut b = frame.clone();
        let TypedData::String(s) = TypedData::decode(&mut b).unwrap() else {
            panic!("not a string")
        };
        assert_eq!(&s[..], b"hello");
        assert_eq!(s.as_ptr(), frame[2..].as_ptr(), "no copy");
    }

    #[test]
    fn kv_iter_skips_unknown_and_stops_on_error() {
        let mut p = Vec::new();
        encode_kv("a", &TypedData::Int64(1), &mut p);
        encode_kv("zz", &TypedData::Ipv6(Ipv6Addr::LOCALHOST), &mut p);
        encode_kv("b", &TypedData::static_str("x"), &mut p);
        let items: Vec<_> = KvIter::new(Bytes::from(p.clone()))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(&items[2].0[..], b"b");
        p.extend_from_slice(b"\x01c\x0c");
        let items: Vec<_> = KvIter::new(Bytes::from(p)).collect();
        assert_eq!(items.len(), 4);
        assert_eq!(items[3], Err(DecodeError::ReservedType(12)));
    }

    fn arb_data() -> impl Strategy<Value = TypedData> {
        prop_oneof![
            Just(TypedData::Null),
            any::<bool>().prop_map(TypedData::Bool),
            any::<i32>().prop_map(TypedData::Int32),
            any::<u32>().prop_map(TypedData::Uint32),
            any::<i64>().prop_map(TypedData::Int64),
            any::<u64>().prop_map(TypedData::Uint64),
            any::<[u8; 4]>().prop_map(|a| TypedData::Ipv4(a.into())),
            any::<[u8; 16]>().prop_map(|a| TypedData::Ipv6(a.into())),
            proptest::collection::vec(any::<u8>(), 0..3000)
                .prop_map(|v| TypedData::String(v.into())),
            proptest::collection::vec(any::<u8>(), 0..300)
                .prop_map(|v| TypedData::Binary(v.into())),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(v in arb_data()) {
            prop_assert_eq!(dec(&enc(&v)), Ok(v));
        }

        #[test]
        fn decode_never_panics(input in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut b = Bytes::from(input);
            while !b.is_empty() {
                if TypedData::decode(&mut b).is_err() { break; }
            }
        }
    }
}
