//! Property tests: path normalization never panics, and what it accepts is free of every
//! construct an upstream could normalize differently.

use idgate::config::Config;
use idgate::policy::{
    normalize_path, normalize_path_with, PathError, PathOptions, Policy, RequestView,
};
use proptest::prelude::*;

/// Pieces that make path normalization interesting: separators, dots and their encodings,
/// encoded slashes and backslashes, double encoding, broken escapes, control characters,
/// multi-byte UTF-8 raw and encoded (also what Unicode folds to ASCII: Kelvin sign, long s,
/// fullwidth dot), encoded unreserved characters, query and fragment markers raw and encoded,
/// path parameters, edge whitespace, trailing dots, `+` and `~`.
const PIECES: &[&str] = &[
    "/",
    "/",
    "/",
    ".",
    "..",
    "%2e",
    "%2E",
    "%2e%2E",
    ".%2e",
    "%2f",
    "%2F",
    "%5c",
    "%5C",
    "\\",
    "%25",
    "%252e",
    "%",
    "%0",
    "%zz",
    "%00",
    "%0a",
    "\u{7f}",
    "\u{85}",
    "%c2%85",
    "%c3%a9",
    "é",
    "%ff",
    "%c0%ae",
    "?",
    "?x=/../",
    "#",
    ";",
    ";x=1",
    "%3b",
    "..%3B",
    "a",
    "b",
    "api",
    "2.0",
    "%41",
    " ",
    "*",
    "%3F",
    "%3f",
    "%23",
    "%20",
    "%7E",
    "~",
    "+",
    "%2B",
    "%73",
    "%2D",
    "%5F",
    "%E2%84%AA",
    "\u{212A}",
    "%C5%BF",
    "\u{17F}",
    "%EF%BC%8E",
    "\u{FF0E}",
    "%u002e",
    "%09",
    "\t",
    "%40",
    "secrets",
    "日本",
    "\u{200B}",
    "\u{A0}",
];

fn pieces_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..24).prop_map(|v| v.concat())
}

/// Check every promise of an accepted path.
fn assert_clean(raw: &str, out: &str) {
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    assert!(out.len() <= raw.len(), "{raw:?} -> {out:?} grew");
    // `\`, `;`, `?` and `#` are refused in any form (a raw `?` ends the path).
    assert!(!out.contains(['\\', ';', '?', '#']), "{raw:?} -> {out:?}");
    assert!(!out.chars().any(char::is_control), "{raw:?} -> {out:?}");
    assert_eq!(skeleton_raw(raw), skeleton(out), "{raw:?} -> {out:?}");
    let b = out.as_bytes();
    let escape = b
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit());
    assert!(!escape, "{raw:?} -> {out:?} still holds an escape");
    let segs: Vec<&str> = out[1..].split('/').collect();
    for (i, s) in segs.iter().enumerate() {
        let name = s.split(';').next().unwrap();
        assert!(
            name != "." && name != "..",
            "{raw:?} -> {out:?} has a dot-segment"
        );
        assert!(!s.ends_with('.'), "{raw:?} -> {out:?}: trailing dot");
        assert!(
            !s.starts_with(char::is_whitespace) && !s.ends_with(char::is_whitespace),
            "{raw:?} -> {out:?}: whitespace at a segment's edge"
        );
        assert!(
            !s.is_empty() || i == segs.len() - 1,
            "{raw:?} -> {out:?} has an empty segment"
        );
    }
}

/// The characters HAProxy routes on (`path_beg /serving-endpoints/`): ASCII letters, digits,
/// `-`, `.`, `_` and `/`, in order.
fn skeleton(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-._/".contains(*c))
        .collect()
}

/// [`skeleton`] of the raw path as HAProxy sees it: up to the first `?`, every `%XX` escape
/// skipped whole (HAProxy does not decode).
fn skeleton_raw(raw: &str) -> String {
    let path = raw.split('?').next().unwrap_or("");
    let b = path.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
            && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
        {
            i += 3;
            continue;
        }
        let c = b[i] as char;
        if c.is_ascii_alphanumeric() || "-._/".contains(c) {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// Escapes of any byte value, mixed with the characters HAProxy routes on.
fn escaped_path() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        3 => "[a-z0-9._-]{1,3}".prop_map(String::from),
        2 => Just("/".to_string()),
        3 => any::<u8>().prop_map(|v| format!("%{v:02X}")),
        1 => any::<u8>().prop_map(|v| format!("%{v:02x}")),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|v| format!("/{}", v.concat()))
}

const NON_ASCII: PathOptions = PathOptions {
    allow_non_ascii: true,
};

/// [`skeleton`] with ASCII case folded.
fn folded_skeleton(s: &str) -> String {
    skeleton(s).to_ascii_lowercase()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn never_panics_on_any_string(raw in any::<String>()) {
        if let Ok(out) = normalize_path(&raw) {
            assert_clean(&raw, &out);
            prop_assert!(out.is_ascii());
        }
        if let Ok(out) = normalize_path_with(&raw, NON_ASCII) {
            assert_clean(&raw, &out);
        }
    }

    #[test]
    fn accepted_paths_are_clean(raw in pieces_path()) {
        if let Ok(out) = normalize_path(&raw) {
            assert_clean(&raw, &out);
            prop_assert!(out.is_ascii());
        }
        if let Ok(out) = normalize_path_with(&raw, NON_ASCII) {
            assert_clean(&raw, &out);
        }
    }

    /// For every accepted path, the raw path (what HAProxy routes on) and the decoded one (what
    /// the rules judge) have the same letters, digits, `-`, `.`, `_` and `/`, in the same order:
    /// decoding never changes the segments HAProxy and idgate see.
    #[test]
    fn raw_and_decoded_agree_on_routing_characters(raw in escaped_path()) {
        if let Ok(out) = normalize_path(&raw) {
            prop_assert_eq!(skeleton_raw(&raw), skeleton(&out), "{:?} -> {:?}", raw, out);
            assert_clean(&raw, &out);
        }
    }

    /// With non-ASCII allowed, no Unicode folding an upstream may apply (lower/upper case
    /// mapping, NFKC) adds or changes an ASCII routing character of an accepted path.
    #[test]
    fn opt_out_paths_do_not_fold_to_ascii(raw in pieces_path()) {
        if let Ok(out) = normalize_path_with(&raw, NON_ASCII) {
            let want = folded_skeleton(&out);
            prop_assert_eq!(&folded_skeleton(&out.to_lowercase()), &want, "{:?}", out);
            prop_assert_eq!(&folded_skeleton(&out.to_uppercase()), &want, "{:?}", out);
            let nfkc = icu_normalizer::ComposingNormalizerBorrowed::new_nfkc().normalize(&out);
            prop_assert_eq!(&folded_skeleton(&nfkc), &want, "{:?}", out);
        }
    }

    #[test]
    fn dot_segments_are_always_refused(
        before in prop::collection::vec("[a-z0-9_-]{1,6}", 0..4),
        after in prop::collection::vec("[a-z0-9_-]{1,6}", 0..4),
        dot in prop::sample::select(&[
            ".", "..", "%2e", "%2E", "%2e%2e", "%2E%2E", "%2e.", ".%2E", "%2E.", ".%2e",
        ][..]),
        trailing_slash in any::<bool>(),
    ) {
        let mut segs = before.clone();
        segs.push(dot.to_string());
        segs.extend(after.iter().cloned());
        let mut path = format!("/{}", segs.join("/"));
        if trailing_slash {
            path.push('/');
        }
        prop_assert_eq!(normalize_path(&path), Err(PathError::DotSegment), "{}", path);
    }

    #[test]
    fn plain_paths_pass_through_unchanged(
        segs in prop::collection::vec("[A-Za-z0-9._~-]{1,8}", 0..8),
        trailing_slash in any::<bool>(),
    ) {
        // Dot-segments and trailing dots are refused (tested above).
        prop_assume!(segs.iter().all(|s| !s.ends_with('.')));
        let mut path = format!("/{}", segs.join("/"));
        if trailing_slash && !segs.is_empty() {
            path.push('/');
        }
        let out = normalize_path(&path).unwrap();
        prop_assert!(matches!(out, std::borrow::Cow::Borrowed(_)));
        prop_assert_eq!(&*out, path.as_str());
    }

}

proptest! {
    // Each case parses and compiles a config: fewer cases keep the debug run short.
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Encoding an unreserved character never reaches a rule: HAProxy would route the raw
    /// form differently than the rules judge the decoded one, so it is refused.
    #[test]
    fn encoding_an_unreserved_character_is_refused(
        segs in prop::collection::vec("[a-z0-9]{1,8}", 1..6),
        pick in any::<prop::sample::Index>(),
        lower in any::<bool>(),
    ) {
        let plain = format!("/{}", segs.join("/"));
        let i = pick.index(plain.len());
        prop_assume!(plain.as_bytes()[i] != b'/');
        let hex = format!("{:02X}", plain.as_bytes()[i]);
        let hex = if lower { hex.to_ascii_lowercase() } else { hex };
        let encoded = format!("{}%{hex}{}", &plain[..i], &plain[i + 1..]);
        prop_assert_eq!(normalize_path(&encoded), Err(PathError::EncodedUnreserved));
        prop_assert_eq!(normalize_path_with(&encoded, NON_ASCII), Err(PathError::EncodedUnreserved));
        let decoded = normalize_path(&plain).unwrap();
        let cfg = Config::from_toml(
            &format!("[[rule]]\nname = \"exact\"\npaths = [\"{plain}\"]\npublic = true\n"),
            "t",
        ).unwrap();
        let policy = Policy::compile(&cfg);
        let view = |p| RequestView { method: "GET", path: p, host: None, src: None };
        prop_assert!(policy.match_public(&view(&decoded)).is_some());
    }
}
