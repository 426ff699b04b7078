//! Property tests: path normalization never panics, and what it accepts is free of every
//! construct an upstream could normalize differently.

use idgate::config::Config;
use idgate::policy::{normalize_path, PathError, Policy, RequestView};
use proptest::prelude::*;

/// Pieces that make path normalization interesting: separators, dots and their encodings,
/// encoded slashes and backslashes, double encoding, broken escapes, control characters,
/// multi-byte UTF-8 raw and encoded, query and fragment markers, path parameters.
const PIECES: &[&str] = &[
    "/", "/", "/", ".", "..", "%2e", "%2E", "%2e%2E", ".%2e", "%2f", "%2F", "%5c", "%5C", "\\",
    "%25", "%252e", "%", "%0", "%zz", "%00", "%0a", "\u{7f}", "\u{85}", "%c2%85", "%c3%a9", "é",
    "%ff", "%c0%ae", "?", "?x=/../", "#", ";", ";x=1", "%3b", "..%3B", "a", "b", "api", "2.0",
    "%41", " ", "*",
];

fn pieces_path() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(PIECES), 0..24).prop_map(|v| v.concat())
}

/// Check every promise of an accepted path.
fn assert_clean(raw: &str, out: &str) {
    assert!(out.starts_with('/'), "{raw:?} -> {out:?}");
    assert!(out.len() <= raw.len(), "{raw:?} -> {out:?} grew");
    // A decoded `#` (from %23) is an ordinary character; `\` and `;` are refused in any form.
    assert!(!out.contains(['\\', ';']), "{raw:?} -> {out:?}");
    assert!(!out.chars().any(char::is_control), "{raw:?} -> {out:?}");
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
        assert!(
            !s.is_empty() || i == segs.len() - 1,
            "{raw:?} -> {out:?} has an empty segment"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn never_panics_on_any_string(raw in any::<String>()) {
        if let Ok(out) = normalize_path(&raw) {
            assert_clean(&raw, &out);
        }
    }

    #[test]
    fn accepted_paths_are_clean(raw in pieces_path()) {
        if let Ok(out) = normalize_path(&raw) {
            assert_clean(&raw, &out);
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
        prop_assume!(segs.iter().all(|s| s != "." && s != ".."));
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

    /// Encoding an unreserved character never changes which rules match.
    #[test]
    fn encoding_does_not_change_the_decision(
        segs in prop::collection::vec("[a-z0-9]{1,8}", 1..6),
        pick in any::<prop::sample::Index>(),
    ) {
        let plain = format!("/{}", segs.join("/"));
        let i = pick.index(plain.len());
        prop_assume!(plain.as_bytes()[i] != b'/');
        let encoded = format!("{}%{:02X}{}", &plain[..i], plain.as_bytes()[i], &plain[i + 1..]);
        let decoded = normalize_path(&encoded).unwrap();
        prop_assert_eq!(&*decoded, plain.as_str());
        let cfg = Config::from_toml(
            &format!("[[rule]]\nname = \"exact\"\npaths = [\"{plain}\"]\npublic = true\n"),
            "t",
        ).unwrap();
        let policy = Policy::compile(&cfg).unwrap();
        let view = |p| RequestView { method: "GET", path: p, host: None, src: None };
        prop_assert!(policy.match_public(&view(&decoded)).is_some());
    }
}
