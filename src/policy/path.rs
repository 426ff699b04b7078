//! Request-path normalization (contract §4 "Paths") and compiled path patterns.
//!
//! idgate and the upstream must agree on which resource a path names, or a rule can be
//! bypassed: `deny /api/2.0/secrets/**` means nothing if `/api/2.0/x/../secrets/list` or
//! `/api/2.0//secrets/list` reaches an upstream that cleans the path before routing. So instead
//! of guessing how the upstream normalizes, [`normalize_path`] *refuses* every path whose
//! meaning depends on normalization, and rules match exactly what is left. Operators who need
//! leniency can make HAProxy rewrite the request for both idgate and the upstream
//! (`http-request normalize-uri path-merge-slashes`, `path-strip-dot`, ...) before the SPOE
//! call, which keeps the two views identical.
//!
//! Accepted paths start with `/`, are percent-decoded once, and are valid UTF-8. Refused
//! (the engine answers `400 bad_request`):
//! - dot-segments `.` and `..`, raw or encoded (`%2e`, `%2E%2E`, any mix and case), also when
//!   followed by a `;` path parameter (`/..;/`, which Tomcat-style servers treat as `..`);
//! - `%2F` (an encoded `/`), and `\` raw or as `%5C` (Windows-style servers treat it as `/`);
//! - empty segments (`//`), except a single trailing slash;
//! - invalid percent-encoding, percent-encoding that decodes to invalid UTF-8, and a decoded
//!   path that still contains a valid `%XX` escape (double encoding: `%252e` would become `.`
//!   on an upstream that decodes twice);
//! - control characters (C0, DEL, C1), raw or encoded, including NUL;
//! - a raw `#` (a fragment is never part of a request target);
//! - the empty path, a path not starting with `/` (`*`, absolute-form leftovers), and paths
//!   longer than [`MAX_PATH_BYTES`].
//!
//! HAProxy's `path` sample has no query string. If one appears anyway (e.g. the SPOE message
//! sends `url` instead of `path`), everything from the first raw `?` is dropped: the upstream
//! routes on the part before it too. An encoded `%3F` is an ordinary path character.
//!
//! A single trailing slash is **not significant** for matching: `/a/b/` matches the rules that
//! `/a/b` matches, because many upstreams answer both alike (or redirect one to the other), and
//! a deny on `/api/2.0/token` must not be bypassed with `/api/2.0/token/`. Patterns follow the
//! same rule (`/a/b/` in a pattern means `/a/b`).
//!
//! # Patterns
//!
//! A pattern is a `/`-separated list of segment patterns, matched against the decoded path:
//! - `*` matches exactly one segment (segments are never empty after normalization);
//! - `**` matches any number of whole segments, zero included: `/a/**` matches `/a`, `/a/b`
//!   and `/a/b/c`; `/**/invocations` matches `/invocations` and `/x/y/invocations`. At most
//!   one `**` per pattern (keeps matching linear and the intent obvious);
//! - a segment with a single `*` inside (`2.*`, `*.json`, `v*-beta`) matches segments with that
//!   prefix and suffix; the `*` may match the empty string but never crosses a `/`;
//! - anything else is literal and case-sensitive.

use std::borrow::Cow;
use std::fmt;

/// Longest path accepted. HAProxy's default `tune.bufsize` (16 KiB) already bounds the whole
/// request line; this cap only keeps a misconfigured proxy from feeding us arbitrarily long
/// paths to scan against every rule.
pub const MAX_PATH_BYTES: usize = 16 * 1024;

/// Why a request path was refused. Every variant maps to `400 bad_request`. The `Display` text
/// is for logs and never echoes the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PathError {
    Empty,
    NotAbsolute,
    TooLong,
    InvalidPercentEncoding,
    InvalidUtf8,
    EncodedSlash,
    Backslash,
    DotSegment,
    EmptySegment,
    ControlCharacter,
    DoubleEncoding,
    Fragment,
}

impl PathError {
    pub const fn as_str(self) -> &'static str {
        match self {
            PathError::Empty => "empty path",
            PathError::NotAbsolute => "path does not start with /",
            PathError::TooLong => "path too long",
            PathError::InvalidPercentEncoding => "invalid percent-encoding in path",
            PathError::InvalidUtf8 => "path is not valid UTF-8 after percent-decoding",
            PathError::EncodedSlash => "encoded slash (%2F) in path",
            PathError::Backslash => "backslash in path",
            PathError::DotSegment => "dot-segment in path",
            PathError::EmptySegment => "empty segment (//) in path",
            PathError::ControlCharacter => "control character in path",
            PathError::DoubleEncoding => "double percent-encoding in path",
            PathError::Fragment => "fragment (#) in path",
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for PathError {}

/// Normalize a request path for matching, or refuse it (see the module docs for the rules).
///
/// Returns the input unchanged (borrowed) when it has neither a query string nor a `%`: the
/// common case costs one scan and no allocation.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    // Drop a query string first: nothing after a raw `?` is part of the path.
    let path = match raw.find('?') {
        Some(i) => &raw[..i],
        None => raw,
    };
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(PathError::TooLong);
    }
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let mut has_percent = false;
    for c in path.chars() {
        match c {
            '%' => has_percent = true,
            '\\' => return Err(PathError::Backslash),
            '#' => return Err(PathError::Fragment),
            c if c.is_control() => return Err(PathError::ControlCharacter),
            _ => {}
        }
    }
    let decoded: Cow<'_, str> = if has_percent {
        Cow::Owned(percent_decode(path)?)
    } else {
        Cow::Borrowed(path)
    };
    if has_percent {
        // Raw characters were checked above; these can only come from escapes.
        if decoded.chars().any(char::is_control) {
            return Err(PathError::ControlCharacter);
        }
        if contains_escape(&decoded) {
            return Err(PathError::DoubleEncoding);
        }
    }
    check_segments(&decoded)?;
    Ok(decoded)
}

/// Decode every `%XX` once. `/` and `\` may not be encoded; the result must be UTF-8.
fn percent_decode(path: &str) -> Result<String, PathError> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let (Some(hi), Some(lo)) = (
                b.get(i + 1).copied().and_then(hex_val),
                b.get(i + 2).copied().and_then(hex_val),
            ) else {
                return Err(PathError::InvalidPercentEncoding);
            };
            let v = (hi << 4) | lo;
            match v {
                b'/' => return Err(PathError::EncodedSlash),
                b'\\' => return Err(PathError::Backslash),
                _ => out.push(v),
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| PathError::InvalidUtf8)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// True when `s` contains a valid `%XX` escape (that a second decoding would change).
fn contains_escape(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && hex_val(w[1]).is_some() && hex_val(w[2]).is_some())
}

/// Refuse dot-segments (also before a `;` parameter) and empty segments other than a single
/// trailing slash. `path` starts with `/`.
fn check_segments(path: &str) -> Result<(), PathError> {
    let mut segs = path[1..].split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if seg.is_empty() && !last {
            return Err(PathError::EmptySegment);
        }
        if is_dot_segment(seg) {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

fn is_dot_segment(seg: &str) -> bool {
    let name = seg.split(';').next().unwrap_or(seg);
    name == "." || name == ".."
}

/// The path as matching sees it: without the leading `/` and one trailing `/`, with its
/// segment count computed once per request so each pattern does not recount.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathView<'a> {
    /// `a/b/c` for `/a/b/c` and `/a/b/c/`; empty for `/`.
    trimmed: &'a str,
    count: usize,
    /// False when the caller passed something that does not start with `/`: no path pattern
    /// matches it.
    valid: bool,
}

impl<'a> PathView<'a> {
    pub(crate) fn new(path: &'a str) -> Self {
        let Some(rest) = path.strip_prefix('/') else {
            return PathView {
                trimmed: "",
                count: 0,
                valid: false,
            };
        };
        let trimmed = rest.strip_suffix('/').unwrap_or(rest);
        let count = if trimmed.is_empty() {
            0
        } else {
            trimmed.bytes().filter(|&b| b == b'/').count() + 1
        };
        PathView {
            trimmed,
            count,
            valid: true,
        }
    }

    fn segments(&self) -> std::str::Split<'a, char> {
        // Only called when count > 0, so an empty `trimmed` never yields a phantom "" segment.
        self.trimmed.split('/')
    }

    fn segments_rev(&self) -> std::str::RSplit<'a, char> {
        self.trimmed.rsplit('/')
    }
}

/// One compiled segment pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seg {
    Literal(Box<str>),
    /// `*`: any one non-empty segment.
    Any,
    /// `pre*suf`: a segment at least `pre.len() + suf.len()` long with that prefix and suffix.
    Glob {
        prefix: Box<str>,
        suffix: Box<str>,
    },
}

impl Seg {
    fn matches(&self, seg: &str) -> bool {
        match self {
            Seg::Literal(l) => **l == *seg,
            Seg::Any => !seg.is_empty(),
            Seg::Glob { prefix, suffix } => {
                seg.len() >= prefix.len() + suffix.len()
                    && seg.starts_with(&**prefix)
                    && seg.ends_with(&**suffix)
            }
        }
    }
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PathPattern {
    /// No wildcard at all: one string comparison against the trimmed path.
    Exact(Box<str>),
    /// No `**`: exactly `segs.len()` segments, each matching its pattern.
    Fixed(Box<[Seg]>),
    /// `prefix/**/suffix`: at least `prefix.len() + suffix.len()` segments.
    Span {
        prefix: Box<[Seg]>,
        suffix: Box<[Seg]>,
    },
}

impl PathPattern {
    /// Compile one pattern; the error is the message for the config problem.
    pub(crate) fn compile(pat: &str) -> Result<PathPattern, String> {
        if pat.is_empty() {
            return Err("empty path pattern".into());
        }
        if !pat.starts_with('/') {
            return Err(format!("{pat:?} must start with /"));
        }
        if pat.chars().any(char::is_control) {
            return Err(format!("{pat:?} contains a control character"));
        }
        if pat.contains(['?', '#']) {
            return Err(format!(
                "{pat:?}: paths are matched without query string or fragment; remove ? and #"
            ));
        }
        if pat.contains('\\') {
            return Err(format!(
                "{pat:?}: backslashes are refused in request paths, so this never matches"
            ));
        }
        if contains_escape(pat) {
            return Err(format!(
                "{pat:?}: patterns match the percent-decoded path; write the character itself, not its %XX escape"
            ));
        }
        let rest = &pat[1..];
        let body = rest.strip_suffix('/').unwrap_or(rest);
        let mut segs = Vec::new();
        let mut span_at = None;
        if !body.is_empty() {
            for (i, s) in body.split('/').enumerate() {
                if s.is_empty() {
                    return Err(format!(
                        "{pat:?}: empty segment (//); such request paths are refused, so this never matches"
                    ));
                }
                if is_dot_segment(s) {
                    return Err(format!(
                        "{pat:?}: dot-segment; such request paths are refused, so this never matches"
                    ));
                }
                if s == "**" {
                    if span_at.is_some() {
                        return Err(format!("{pat:?}: at most one ** per pattern"));
                    }
                    span_at = Some(i);
                    continue;
                }
                if s.contains("**") {
                    return Err(format!(
                        "{pat:?}: ** must be a whole segment (/**/), not part of {s:?}"
                    ));
                }
                segs.push(compile_seg(s).map_err(|e| format!("{pat:?}: {e}"))?);
            }
        }
        Ok(match span_at {
            Some(i) => {
                let suffix = segs.split_off(i);
                PathPattern::Span {
                    prefix: segs.into_boxed_slice(),
                    suffix: suffix.into_boxed_slice(),
                }
            }
            None if segs.iter().all(|s| matches!(s, Seg::Literal(_))) => {
                PathPattern::Exact(body.into())
            }
            None => PathPattern::Fixed(segs.into_boxed_slice()),
        })
    }

    pub(crate) fn matches(&self, p: &PathView<'_>) -> bool {
        if !p.valid {
            return false;
        }
        match self {
            PathPattern::Exact(s) => **s == *p.trimmed,
            PathPattern::Fixed(segs) => {
                segs.len() == p.count
                    && (p.count == 0 || segs.iter().zip(p.segments()).all(|(s, x)| s.matches(x)))
            }
            PathPattern::Span { prefix, suffix } => {
                if p.count < prefix.len() + suffix.len() {
                    return false;
                }
                if p.count == 0 {
                    return true;
                }
                prefix.iter().zip(p.segments()).all(|(s, x)| s.matches(x))
                    && suffix
                        .iter()
                        .rev()
                        .zip(p.segments_rev())
                        .all(|(s, x)| s.matches(x))
            }
        }
    }
}

fn compile_seg(s: &str) -> Result<Seg, String> {
    if s == "*" {
        return Ok(Seg::Any);
    }
    match s.matches('*').count() {
        0 => Ok(Seg::Literal(s.into())),
        1 => {
            let (prefix, suffix) = s.split_once('*').expect("one star");
            Ok(Seg::Glob {
                prefix: prefix.into(),
                suffix: suffix.into(),
            })
        }
        _ => Err(format!(
            "at most one * inside a segment ({s:?}); use * for a whole segment or ** for many"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(p: &str) -> String {
        normalize_path(p)
            .unwrap_or_else(|e| panic!("{p:?}: {e}"))
            .into_owned()
    }

    fn err(p: &str) -> PathError {
        normalize_path(p).expect_err(p)
    }

    #[test]
    fn plain_path_is_borrowed_unchanged() {
        assert!(matches!(
            normalize_path("/api/2.0/jobs/list").unwrap(),
            Cow::Borrowed("/api/2.0/jobs/list")
        ));
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/a/b/"), "/a/b/");
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(ok("/a%20b/%41"), "/a b/A");
        assert_eq!(ok("/caf%C3%A9"), "/café");
        assert_eq!(ok("/%3F"), "/?");
        assert_eq!(ok("/100%25"), "/100%");
        assert_eq!(ok("/a.b/.c/..d/...%2e"), "/a.b/.c/..d/....");
    }

    #[test]
    fn query_string_is_dropped() {
        assert_eq!(ok("/a/b?x=../../y"), "/a/b");
        assert_eq!(ok("/a/b?"), "/a/b");
        assert_eq!(err("?x=1"), PathError::Empty);
    }

    #[test]
    fn dot_segments_refused_raw_and_encoded() {
        for p in [
            "/.",
            "/..",
            "/a/./b",
            "/a/../b",
            "/a/..",
            "/a/../",
            "/%2e",
            "/%2E",
            "/a/%2e%2e/b",
            "/a/%2E%2E/b",
            "/a/.%2e/b",
            "/a/%2e./b",
            "/a/%2E%2e",
            "/a/..;/b",
            "/a/.;x/b",
            "/a/%2e%2e;jsessionid=1/b",
        ] {
            assert_eq!(err(p), PathError::DotSegment, "{p}");
        }
    }

    #[test]
    fn encoded_slash_and_backslash_refused() {
        assert_eq!(err("/a%2Fb"), PathError::EncodedSlash);
        assert_eq!(err("/a%2fb"), PathError::EncodedSlash);
        assert_eq!(err("/a\\b"), PathError::Backslash);
        assert_eq!(err("/a%5cb"), PathError::Backslash);
        assert_eq!(err("/a%5C..%5Cb"), PathError::Backslash);
    }

    #[test]
    fn bad_encodings_refused() {
        assert_eq!(err("/a%"), PathError::InvalidPercentEncoding);
        assert_eq!(err("/a%2"), PathError::InvalidPercentEncoding);
        assert_eq!(err("/a%zz"), PathError::InvalidPercentEncoding);
        assert_eq!(err("/a%%41"), PathError::InvalidPercentEncoding);
        assert_eq!(err("/a%ff"), PathError::InvalidUtf8);
        assert_eq!(err("/%c0%ae%c0%ae/"), PathError::InvalidUtf8); // overlong "."
        assert_eq!(err("/a%252e%252e/b"), PathError::DoubleEncoding);
        assert_eq!(err("/a%252Fb"), PathError::DoubleEncoding);
    }

    #[test]
    fn control_characters_refused() {
        for p in [
            "/a\0b", "/a\nb", "/a\x7f", "/a%00", "/a%0d%0a", "/a%7F", "/a%C2%85", "/a\u{85}",
        ] {
            assert_eq!(err(p), PathError::ControlCharacter, "{p:?}");
        }
    }

    #[test]
    fn shape_errors() {
        assert_eq!(err(""), PathError::Empty);
        assert_eq!(err("*"), PathError::NotAbsolute);
        assert_eq!(err("a/b"), PathError::NotAbsolute);
        assert_eq!(err("http://h/a"), PathError::NotAbsolute);
        assert_eq!(err("/a#b"), PathError::Fragment);
        assert_eq!(err("//a"), PathError::EmptySegment);
        assert_eq!(err("/a//b"), PathError::EmptySegment);
        assert_eq!(err("/a//"), PathError::EmptySegment);
        assert_eq!(
            err(&format!("/{}", "a".repeat(MAX_PATH_BYTES))),
            PathError::TooLong
        );
        assert_eq!(
            ok(&format!("/{}", "a".repeat(MAX_PATH_BYTES - 1))).len(),
            MAX_PATH_BYTES
        );
    }

    fn m(pat: &str, path: &str) -> bool {
        PathPattern::compile(pat)
            .unwrap_or_else(|e| panic!("{e}"))
            .matches(&PathView::new(path))
    }

    #[test]
    fn exact_and_trailing_slash() {
        assert!(m("/a/b", "/a/b"));
        assert!(m("/a/b", "/a/b/"));
        assert!(m("/a/b/", "/a/b"));
        assert!(!m("/a/b", "/a/bc"));
        assert!(!m("/a/b", "/a"));
        assert!(!m("/a/b", "/a/b/c"));
        assert!(!m("/a/b", "/A/b"));
        assert!(m("/", "/"));
        assert!(!m("/", "/a"));
        assert!(!m("/a", "/"));
    }

    #[test]
    fn single_star_is_one_nonempty_segment() {
        assert!(m("/s/*/inv", "/s/x/inv"));
        assert!(!m("/s/*/inv", "/s/inv"));
        assert!(!m("/s/*/inv", "/s/x/y/inv"));
        // An un-normalized path with an empty segment never satisfies `*`.
        assert!(!m("/s/*/inv", "/s//inv"));
        assert!(m("/*", "/a"));
        assert!(m("/*", "/a/"));
        assert!(!m("/*", "/"));
    }

    #[test]
    fn double_star_start_middle_end() {
        // end
        assert!(m("/a/**", "/a"));
        assert!(m("/a/**", "/a/"));
        assert!(m("/a/**", "/a/b"));
        assert!(m("/a/**", "/a/b/c/d"));
        assert!(!m("/a/**", "/ab"));
        assert!(!m("/a/**", "/"));
        // start
        assert!(m("/**/inv", "/inv"));
        assert!(m("/**/inv", "/x/y/inv"));
        assert!(!m("/**/inv", "/x/y/inv/z"));
        // middle
        assert!(m("/a/**/z", "/a/z"));
        assert!(m("/a/**/z", "/a/b/c/z"));
        assert!(!m("/a/**/z", "/a"));
        assert!(!m("/a/**/z", "/z"));
        // prefix and suffix must not overlap: /a/**/a needs two segments
        assert!(!m("/a/**/a", "/a"));
        assert!(m("/a/**/a", "/a/a"));
        // everything
        assert!(m("/**", "/"));
        assert!(m("/**", "/x/y"));
        // `**` spans segments that `*` would refuse (defined even for un-normalized input)
        assert!(m("/a/**", "/a//b"));
    }

    #[test]
    fn star_inside_segment() {
        assert!(m("/api/2.*/jobs", "/api/2.0/jobs"));
        assert!(m("/api/2.*/jobs", "/api/2.2/jobs"));
        assert!(m("/api/2.*/jobs", "/api/2./jobs"));
        assert!(!m("/api/2.*/jobs", "/api/1.2/jobs"));
        assert!(!m("/api/2.*/jobs", "/api/2.0/x/jobs"));
        assert!(m("/f/*.json", "/f/a.json"));
        assert!(!m("/f/*.json", "/f/a.jsonx"));
        assert!(m("/v/v*-beta", "/v/v1-beta"));
        assert!(!m("/v/ab*ba", "/v/aba")); // prefix and suffix may not overlap
        assert!(m("/v/ab*ba", "/v/abba"));
    }

    #[test]
    fn non_absolute_view_never_matches() {
        assert!(!m("/**", "a/b"));
        assert!(!m("/**", ""));
    }

    #[test]
    fn pattern_errors() {
        for (p, needle) in [
            ("", "empty"),
            ("a/b", "start with /"),
            ("/a?x=1", "query"),
            ("/a#x", "query"),
            ("/a//b", "empty segment"),
            ("/a/../b", "dot-segment"),
            ("/a/./b", "dot-segment"),
            ("/a%2Fb", "%XX"),
            ("/a%20b", "%XX"),
            ("/a\\b", "backslash"),
            ("/**/a/**", "at most one **"),
            ("/a**", "whole segment"),
            ("/a/***", "whole segment"),
            ("/a/*x*", "at most one *"),
            ("/a\nb", "control"),
        ] {
            let e = PathPattern::compile(p).expect_err(p);
            assert!(e.contains(needle), "{p:?}: {e}");
        }
    }
}
