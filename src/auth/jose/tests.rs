//! Structure: size, shape, alphabet, the signing input.

use super::testing::*;
use super::*;

#[test]
fn structure() {
    assert_eq!(reason(parse_all("abc", 8192)), Reason::MalformedToken);
    assert_eq!(reason(parse_all("a.b", 8192)), Reason::MalformedToken);
    assert_eq!(reason(parse_all("a.b.c.d", 8192)), Reason::MalformedToken);
    assert_eq!(
        reason(parse_all("a.b.c.d.e", 8192)),
        Reason::UnsupportedToken
    );
    assert_eq!(reason(parse_all("a.b+.c", 8192)), Reason::MalformedToken);
    assert_eq!(reason(parse_all("a.b=.c", 8192)), Reason::MalformedToken);
    assert_eq!(reason(parse_all(".b.c", 8192)), Reason::MalformedToken);
    let t = tok(r#"{"alg":"RS256"}"#, P);
    assert!(parse_all(&t, 8192).is_ok());
    assert_eq!(reason(parse_all(&t, t.len() - 1)), Reason::MalformedToken);
    let unsigned = t.rsplit_once('.').unwrap().0.to_string() + ".";
    assert_eq!(reason(parse_all(&unsigned, 8192)), Reason::MalformedToken);
}

#[test]
fn scan_agrees_with_a_byte_by_byte_check() {
    let naive = |t: &[u8]| {
        let dots = t.iter().filter(|&&b| b == b'.').count();
        let ok = t
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        (dots, ok)
    };
    // Every byte value, at the edges of the 64-byte blocks and in between.
    for b in 0..=255u8 {
        for at in [0, 1, 63, 64, 65, 127, 128, 199] {
            let mut t = vec![b'A'; 200];
            t[at] = b;
            t[(at + 70) % 200] = b'.';
            assert_eq!(scan(&t), naive(&t), "byte {b:#04x} at {at}");
        }
    }
    // More dots in one block than fit a u8 would not matter (a block holds 64 bytes),
    // but many blocks of dots must all count.
    assert_eq!(scan(&[b'.'; 1000]), (1000, true));
    assert_eq!(scan(b""), (0, true));
}

#[test]
fn signing_input_is_the_raw_header_and_payload() {
    let t = tok(r#"{"alg":"RS256"}"#, P);
    let parsed = parse_all(&t, 8192).unwrap();
    let (input, sig) = parsed.signing_input_and_signature(&t);
    let (want_input, want_sig) = t.rsplit_once('.').unwrap();
    assert_eq!((input, sig), (want_input, want_sig));
    assert_eq!(sig, "c2ln");
}
