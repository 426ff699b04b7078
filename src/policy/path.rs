//! Request-path normalization (contract §4 "Paths") and compiled path patterns.
//!
//! idgate and the upstream must agree on which resource a path names, or a rule can be
//! bypassed: `deny /api/2.0/secrets/**` means nothing if `/api/2.0/x/../secrets/list` or
//! `/api/2.0//secrets/list` reaches an upstream that cleans the path before routing. So instead
//! of guessing how the upstream normalizes, [`normalize_path`] *refuses* every path whose
//! meaning depends on normalization, and rules match exactly what is left. Operators who need
//! leniency can make HAProxy rewrite the request for both idgate and the upstream
//! (`http-request normalize-uri path-merge-slashes`, `path-strip-dot`,
//! `percent-decode-unreserved`, ...) before the SPOE call, which keeps the two views identical.
//!
//! HAProxy itself routes on the *raw* path (`path_beg /serving-endpoints/`) while the rules judge
//! the decoded one. Refusing encoded unreserved characters (below) makes the two agree on every
//! letter, digit, `-`, `.`, `_` and `/`: decoding only ever turns an escape into something else.
//!
//! Accepted paths start with `/`, are percent-decoded once, and are ASCII (see
//! [`PathOptions::allow_non_ascii`] for the opt-out). Refused (the engine answers
//! `400 bad_request`):
//! - dot-segments `.` and `..`, raw or encoded (`%2e`, `%2E%2E`, any mix and case);
//! - a segment ending in `.` (`secrets.`, `secrets%2e`, `...`): Windows/IIS and some Java and
//!   Go servers strip trailing dots, and Spring's suffix matching reads `create.` as `create`;
//! - a segment beginning or ending with whitespace (`secrets%20`): older Spring
//!   (`AntPathMatcher` with `trimTokens`) and Windows trim it (tab and the other ASCII
//!   whitespace are control characters, refused anyway);
//! - percent-encoded unreserved characters (RFC 3986 §2.3: ALPHA, DIGIT, `-`, `.`, `_`):
//!   `/%73erving-endpoints/x/invocations` is `/serving-endpoints/x/invocations` to idgate's rules
//!   but not to `path_beg /serving-endpoints/` in HAProxy, which would route it to another
//!   backend (no rate limit, other timeouts). Nothing needs them encoded; `%7E` (`~`) stays
//!   allowed because Java's `URLEncoder` encodes `~`;
//! - `;`, raw or as `%3B`: servlet containers (Tomcat, Jetty) drop `;params` from segments
//!   before routing, so `/secrets;x/list` reaches `/secrets/list` while a rule would see
//!   `secrets;x`, and `/..;/` acts as `..`. The encoded form is refused too, in case an
//!   upstream decodes before it strips;
//! - `%2F` (an encoded `/`), and `\` raw or as `%5C` (Windows-style servers treat it as `/`);
//! - `%3F` and `%23` (encoded `?` and `#`): an upstream that decodes before splitting off the
//!   query or fragment would route `/secrets%3F/x` to `/secrets`;
//! - non-ASCII characters, raw or encoded (`/api/2.0/to%E2%84%AAen/create`: the Kelvin sign,
//!   which Unicode case folding maps to `k`; `%C5%BF`, long s, to `s`; fullwidth letters and
//!   the fullwidth dot U+FF0E, which NFKC maps to ASCII). Databricks API paths are ASCII;
//! - empty segments (`//`), except a single trailing slash;
//! - invalid percent-encoding (including IIS-style `%u002e`), percent-encoding that decodes to
//!   invalid UTF-8 (overlong forms such as `%C0%AE`, surrogates), and a decoded path that still
//!   contains a valid `%XX` escape (double encoding: `%252e` would become `.` on an upstream
//!   that decodes twice);
//! - control characters (C0 including TAB, DEL, C1), raw or encoded, including NUL (`%00`,
//!   `%09`);
//! - a raw `#` (a fragment is never part of a request target);
//! - the empty path, a path not starting with `/` (`*`, absolute-form leftovers), and paths
//!   longer than [`MAX_PATH_BYTES`].
//!
//! Allowed on purpose: `+` is an ordinary character (RFC 3986; Tomcat, Spring, Go `net/http` and
//! nginx do not decode it in paths, and names such as `C++` are real); other encoded reserved
//! characters and spaces inside a segment (`my%20model`, `%40`, `%25`); `%7E`; upper- and
//! lowercase hex digits alike.
//!
//! HAProxy's `path` sample has no query string. If one appears anyway (e.g. the SPOE message
//! sends `url` instead of `path`), everything from the first raw `?` is dropped: the upstream
//! routes on the part before it too.
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
//! - anything else is literal. Literals are case-sensitive in allow rules and compared with
//!   ASCII case folded in deny rules (`Case`): on an upstream that routes case-insensitively,
//!   `/API/2.0/Secrets/list` must still hit `deny /api/*/secrets/**`, while an allow rule
//!   stays as narrow as written.

use std::borrow::Cow;
use std::fmt;

use crate::config::{GlobSeg as Seg, GlobShape as Shape, PathGlob};

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
    PathParameter,
    NonAscii,
    EncodedUnreserved,
    EncodedQuery,
    EncodedFragment,
    TrailingDot,
    SegmentWhitespace,
    FoldsToAscii,
    InvisibleCharacter,
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
            PathError::PathParameter => "path parameter (;) in path",
            PathError::NonAscii => "non-ASCII character in path",
            PathError::EncodedUnreserved => {
                "percent-encoded letter, digit, '-', '.' or '_' in path"
            }
            PathError::EncodedQuery => "encoded question mark (%3F) in path",
            PathError::EncodedFragment => "encoded number sign (%23) in path",
            PathError::TrailingDot => "path segment ends with a dot",
            PathError::SegmentWhitespace => "path segment begins or ends with whitespace",
            PathError::FoldsToAscii => "non-ASCII character that Unicode folds to ASCII in path",
            PathError::InvisibleCharacter => {
                "invisible or bidirectional formatting character in path"
            }
        }
    }
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::error::Error for PathError {}

/// How strict [`normalize_path_with`] is. The default is what every deployment should use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathOptions {
    /// Accept non-ASCII characters, raw (UTF-8) or percent-encoded (`[paths] allow_non_ascii`).
    /// Only for upstreams that need them (e.g. non-ASCII file names in the Files API). Still
    /// refused: a character that Unicode case mapping or NFKC folds to something containing
    /// ASCII (`K` Kelvin sign, `ſ`, `ß`, `ı`, fullwidth forms, ligatures, ...), invisible or
    /// bidirectional formatting characters, and whitespace at a segment's edges; every other
    /// rule (dot-segments, encoded slash, encoded unreserved characters...) is unchanged.
    pub allow_non_ascii: bool,
}

/// Normalize a request path for matching, or refuse it (see the module docs for the rules),
/// with the default (strict) [`PathOptions`].
///
/// Returns the input unchanged (borrowed) when it has neither a query string nor a `%`: the
/// common case costs one scan and no allocation.
pub fn normalize_path(raw: &str) -> Result<Cow<'_, str>, PathError> {
    normalize_path_with(raw, PathOptions::default())
}

/// [`normalize_path`] with explicit options.
pub fn normalize_path_with(raw: &str, options: PathOptions) -> Result<Cow<'_, str>, PathError> {
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
    let raw_scan = scan_raw(path.as_bytes())?;
    if raw_scan.non_ascii && !options.allow_non_ascii {
        return Err(PathError::NonAscii);
    }
    let mut non_ascii = raw_scan.non_ascii;
    let mut encoded_unreserved = false;
    let decoded: Cow<'_, str> = if raw_scan.percent {
        let (d, unreserved) = percent_decode(path)?;
        encoded_unreserved = unreserved;
        Cow::Owned(d)
    } else {
        Cow::Borrowed(path)
    };
    if raw_scan.percent {
        // Raw characters were checked above; these can only come from escapes.
        if has_control(decoded.as_bytes()) {
            return Err(PathError::ControlCharacter);
        }
        non_ascii = !decoded.is_ascii();
        if non_ascii && !options.allow_non_ascii {
            return Err(PathError::NonAscii);
        }
        if contains_escape(&decoded) {
            return Err(PathError::DoubleEncoding);
        }
    }
    check_segments(&decoded)?;
    if encoded_unreserved {
        return Err(PathError::EncodedUnreserved);
    }
    if non_ascii {
        // Only reachable with `allow_non_ascii`.
        if let Some(e) = unicode_problem(&decoded) {
            return Err(e);
        }
    }
    Ok(decoded)
}

/// With non-ASCII paths allowed, what still makes one unsafe: invisible or bidirectional
/// formatting characters, and characters that fold to ASCII ([`folds_to_ascii`]).
pub(crate) fn unicode_problem(s: &str) -> Option<PathError> {
    s.chars().filter(|c| !c.is_ascii()).find_map(|c| {
        if crate::auth::is_invisible(c) {
            Some(PathError::InvisibleCharacter)
        } else if folds_to_ascii(c) {
            Some(PathError::FoldsToAscii)
        } else {
            None
        }
    })
}

/// Whether an upstream that case-maps (Java's `equalsIgnoreCase`, `toUpperCase`, ...) or
/// NFKC-normalizes could read the non-ASCII `c` as something containing ASCII: the Kelvin sign
/// lowercases to `k`, `ſ` and `ß` uppercase to `S`/`SS`, `ı` to `I`, fullwidth forms and
/// ligatures decompose to ASCII under NFKC. Exact per character: NFKC's ASCII output comes from
/// the decomposition of single characters (composition only ever removes ASCII).
fn folds_to_ascii(c: char) -> bool {
    fn by_case(c: char) -> bool {
        c.is_ascii()
            || c.to_lowercase().any(|x| x.is_ascii())
            || c.to_uppercase().any(|x| x.is_ascii())
    }
    if by_case(c) {
        return true;
    }
    let mut buf = [0u8; 4];
    icu_normalizer::ComposingNormalizerBorrowed::new_nfkc()
        .normalize(c.encode_utf8(&mut buf))
        .chars()
        .any(by_case)
}

/// Decode every `%XX` once. `/`, `\`, `;`, `?` and `#` may not be encoded; the result must be
/// UTF-8. Also reports whether an unreserved character was encoded (refused by the caller after
/// the segment checks, so that `%2e` segments are reported as the dot-segments they are).
fn percent_decode(path: &str) -> Result<(String, bool), PathError> {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut unreserved = false;
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
                b';' => return Err(PathError::PathParameter),
                b'?' => return Err(PathError::EncodedQuery),
                b'#' => return Err(PathError::EncodedFragment),
                _ => {
                    unreserved |= is_unreserved_but_tilde(v);
                    out.push(v);
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map(|s| (s, unreserved))
        .map_err(|_| PathError::InvalidUtf8)
}

/// RFC 3986 §2.3 unreserved characters except `~`: ALPHA, DIGIT, `-`, `.`, `_`.
fn is_unreserved_but_tilde(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_')
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
pub(crate) fn contains_escape(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && hex_val(w[1]).is_some() && hex_val(w[2]).is_some())
}

/// What [`scan_raw`] found besides errors.
#[derive(Debug, Clone, Copy)]
struct RawScan {
    /// There is a `%` (something to percent-decode).
    percent: bool,
    /// There is a non-ASCII character.
    non_ascii: bool,
}

/// One pass over the raw path: refuse `\`, `#`, `;` and control characters; report whether
/// there is anything to percent-decode and whether there is a non-ASCII character.
fn scan_raw(b: &[u8]) -> Result<RawScan, PathError> {
    let mut scan = RawScan {
        percent: false,
        non_ascii: false,
    };
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'%' => scan.percent = true,
            b'\\' => return Err(PathError::Backslash),
            b'#' => return Err(PathError::Fragment),
            b';' => return Err(PathError::PathParameter),
            _ if is_control_at(b, i) => return Err(PathError::ControlCharacter),
            0x80..=0xff => scan.non_ascii = true,
            _ => {}
        }
    }
    Ok(scan)
}

/// Is there a control character (C0, DEL, or C1 = U+0080..U+009F) starting at `b[i]`? `b` is
/// UTF-8, so C1 characters are exactly the pairs `C2 80..=C2 9F`.
fn is_control_at(b: &[u8], i: usize) -> bool {
    match b[i] {
        0x00..=0x1f | 0x7f => true,
        0xc2 => matches!(b.get(i + 1), Some(0x80..=0x9f)),
        _ => false,
    }
}

fn has_control(b: &[u8]) -> bool {
    (0..b.len()).any(|i| is_control_at(b, i))
}

/// Refuse empty segments other than a single trailing slash, and segments that servers read as
/// something else ([`check_segment`]). `path` starts with `/`.
fn check_segments(path: &str) -> Result<(), PathError> {
    let rest = &path[1..];
    let mut start = 0;
    for (i, &c) in rest.as_bytes().iter().enumerate() {
        if c == b'/' {
            let seg = &rest[start..i];
            if seg.is_empty() {
                return Err(PathError::EmptySegment);
            }
            check_segment(seg)?;
            start = i + 1;
        }
    }
    // The last segment may be empty (trailing slash, or the root "/").
    check_segment(&rest[start..])
}

/// Refuse a dot-segment, a segment ending in `.`, and a segment beginning or ending with
/// whitespace. The empty segment passes (the caller decides where it may be).
fn check_segment(seg: &str) -> Result<(), PathError> {
    if is_dot_segment(seg) {
        return Err(PathError::DotSegment);
    }
    if seg.ends_with('.') {
        return Err(PathError::TrailingDot);
    }
    if edge_whitespace(seg) {
        return Err(PathError::SegmentWhitespace);
    }
    Ok(())
}

/// Whether `seg` begins or ends with whitespace (ASCII space, or Unicode whitespace when
/// non-ASCII paths are allowed).
pub(crate) fn edge_whitespace(seg: &str) -> bool {
    let mut chars = seg.chars();
    chars.next().is_some_and(char::is_whitespace)
        || chars.next_back().is_some_and(char::is_whitespace)
}

pub(crate) fn is_dot_segment(seg: &str) -> bool {
    seg == "." || seg == ".."
}

/// Segments kept inline in a [`PathView`]; longer paths (rare) are matched by iterating.
const INLINE_SEGS: usize = 32;

/// The path as matching sees it, prepared once per request: without the leading `/` and one
/// trailing `/`, with its segments split (up to [`INLINE_SEGS`], on the stack) so that each
/// pattern compares slices instead of re-splitting.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PathView<'a> {
    /// `a/b/c` for `/a/b/c` and `/a/b/c/`; empty for `/`.
    trimmed: &'a str,
    count: usize,
    /// The first `min(count, INLINE_SEGS)` segments.
    inline: [&'a str; INLINE_SEGS],
    /// False when the caller passed something that does not start with `/`: no path pattern
    /// matches it.
    valid: bool,
}

impl<'a> PathView<'a> {
    pub(crate) fn new(path: &'a str) -> Self {
        let mut v = PathView {
            trimmed: "",
            count: 0,
            inline: [""; INLINE_SEGS],
            valid: false,
        };
        let Some(rest) = path.strip_prefix('/') else {
            return v;
        };
        v.valid = true;
        v.trimmed = rest.strip_suffix('/').unwrap_or(rest);
        if !v.trimmed.is_empty() {
            for (i, seg) in v.trimmed.split('/').enumerate() {
                if let Some(slot) = v.inline.get_mut(i) {
                    *slot = seg;
                }
                v.count = i + 1;
            }
        }
        v
    }

    /// All segments as a slice, when they fit inline.
    fn slice(&self) -> Option<&[&'a str]> {
        (self.count <= INLINE_SEGS).then(|| &self.inline[..self.count])
    }

    fn segments(&self) -> std::str::Split<'a, char> {
        // Only called when count > 0, so an empty `trimmed` never yields a phantom "" segment.
        self.trimmed.split('/')
    }

    fn segments_rev(&self) -> std::str::RSplit<'a, char> {
        self.trimmed.rsplit('/')
    }
}

/// Do the segments in `x` match the patterns in `p` one for one? (Lengths are checked by the
/// caller.)
fn all_match<'s>(p: &[Seg], ic: bool, x: impl Iterator<Item = &'s str>) -> bool {
    p.iter().zip(x).all(|(s, x)| seg_matches(s, x, ic))
}

/// Byte-wise equality, with ASCII case folded when `ic`. Bytes, not `str` slicing, so a
/// prefix length that falls inside a multi-byte character cannot panic.
fn bytes_eq(a: &[u8], b: &[u8], ic: bool) -> bool {
    if ic {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// Does segment `seg` match the segment pattern `p`?
fn seg_matches(p: &Seg, seg: &str, ic: bool) -> bool {
    match p {
        Seg::Literal(l) => bytes_eq(l.as_bytes(), seg.as_bytes(), ic),
        Seg::Any => !seg.is_empty(),
        Seg::Glob { prefix, suffix } => {
            let (s, p, x) = (seg.as_bytes(), prefix.as_bytes(), suffix.as_bytes());
            s.len() >= p.len() + x.len()
                && bytes_eq(&s[..p.len()], p, ic)
                && bytes_eq(&s[s.len() - x.len()..], x, ic)
        }
    }
}

/// Whether literal parts of a pattern compare case-sensitively.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Case {
    /// Allow rules: `/api` does not match `/API` (a narrower allow is the safe side).
    Sensitive,
    /// Deny rules: ASCII case is ignored, so a deny cannot be dodged on an upstream that
    /// routes case-insensitively (a broader deny is the safe side).
    Insensitive,
}

/// A compiled path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathPattern {
    shape: Shape,
    ignore_case: bool,
}

impl PathPattern {
    /// A pattern the configuration parsed ([`PathGlob`]), compared with `case`.
    pub(crate) fn new(glob: &PathGlob, case: Case) -> PathPattern {
        PathPattern {
            shape: glob.shape().clone(),
            ignore_case: case == Case::Insensitive,
        }
    }

    /// Parse and compile one pattern (tests).
    #[cfg(test)]
    pub(crate) fn compile(pat: &str, case: Case) -> Result<PathPattern, String> {
        pat.parse().map(|g| PathPattern::new(&g, case))
    }

    pub(crate) fn matches(&self, p: &PathView<'_>) -> bool {
        if !p.valid {
            return false;
        }
        let ic = self.ignore_case;
        match &self.shape {
            Shape::Exact(s) => bytes_eq(s.as_bytes(), p.trimmed.as_bytes(), ic),
            Shape::Fixed(segs) => {
                segs.len() == p.count
                    && match p.slice() {
                        Some(x) => all_match(segs, ic, x.iter().copied()),
                        None => all_match(segs, ic, p.segments()),
                    }
            }
            Shape::Span { prefix, suffix } => {
                if p.count < prefix.len() + suffix.len() {
                    return false;
                }
                match p.slice() {
                    Some(x) => {
                        all_match(prefix, ic, x.iter().copied())
                            && all_match(suffix, ic, x[x.len() - suffix.len()..].iter().copied())
                    }
                    None => {
                        all_match(prefix, ic, p.segments())
                            && suffix
                                .iter()
                                .rev()
                                .zip(p.segments_rev())
                                .all(|(s, x)| seg_matches(s, x, ic))
                    }
                }
            }
        }
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
        assert_eq!(ok("/a%20b/%7E"), "/a b/~");
        assert_eq!(ok("/a%7eb"), "/a~b");
        assert_eq!(ok("/100%25"), "/100%");
        assert_eq!(ok("/a%40b/%2B%2b/%3A%3d%21"), "/a@b/++/:=!");
        assert_eq!(ok("/a.b/.c/..d/.e"), "/a.b/.c/..d/.e");
        assert_eq!(ok("/a%2C%26%27%28%29%2A%24"), "/a,&'()*$");
        // `+` is literal, also at a segment's edges (`C++`).
        assert_eq!(ok("/Volumes/C++/a+b/+x"), "/Volumes/C++/a+b/+x");
    }

    fn opt_ok(p: &str) -> String {
        normalize_path_with(p, NON_ASCII)
            .unwrap_or_else(|e| panic!("{p:?}: {e}"))
            .into_owned()
    }

    fn opt_err(p: &str) -> PathError {
        normalize_path_with(p, NON_ASCII).expect_err(p)
    }

    const NON_ASCII: PathOptions = PathOptions {
        allow_non_ascii: true,
    };

    /// Every form an upstream (Tomcat/Spring, Jetty, nginx, Go net/http, IIS, anything that
    /// folds Unicode) could read as a denied ASCII path, with the error it gets by default.
    const REFUSED: &[(&str, PathError)] = &[
        // Unicode that folds onto ASCII: Kelvin sign (K -> k), long s (ſ -> s), fullwidth.
        ("/api/2.0/to%E2%84%AAen/create", PathError::NonAscii),
        ("/api/2.0/to\u{212A}en/create", PathError::NonAscii),
        ("/api/2.0/%C5%BFecrets/list", PathError::NonAscii),
        ("/api/2.0/\u{17F}ecrets/list", PathError::NonAscii),
        ("/api/2.0/%EF%BD%93ecrets/list", PathError::NonAscii),
        ("/api/2.0/\u{FF53}\u{FF45}crets/list", PathError::NonAscii),
        (
            "/api/2.0/x/%EF%BC%8E%EF%BC%8E/secrets/list",
            PathError::NonAscii,
        ),
        (
            "/api/2.0/x/\u{FF0E}\u{FF0E}/secrets/list",
            PathError::NonAscii,
        ),
        (
            "/api/2.0/secrets%EF%BC%8F..%EF%BC%8Flist",
            PathError::NonAscii,
        ),
        ("/api/2.0/secret\u{131}/list", PathError::NonAscii),
        ("/api/2.0/ip-acce\u{DF}-lists", PathError::NonAscii),
        ("/api/2.0/secrets\u{A0}/list", PathError::NonAscii),
        ("/caf%C3%A9", PathError::NonAscii),
        ("/caf\u{E9}", PathError::NonAscii),
        // Encoded query and fragment delimiters.
        ("/api/2.0/secrets%3F/list", PathError::EncodedQuery),
        ("/api/2.0/secrets%3f", PathError::EncodedQuery),
        ("/api/2.0/secrets%23/list", PathError::EncodedFragment),
        // Whitespace at a segment's edges.
        ("/api/2.0/secrets%20/list", PathError::SegmentWhitespace),
        ("/api/2.0/%20secrets/list", PathError::SegmentWhitespace),
        ("/api/2.0/secrets /list", PathError::SegmentWhitespace),
        ("/api/2.0/secrets%20", PathError::SegmentWhitespace),
        ("/a/%20/b", PathError::SegmentWhitespace),
        ("/a/%20%20", PathError::SegmentWhitespace),
        // A trailing dot (Windows/IIS strip it; Spring suffix matching ignores it).
        ("/api/2.0/secrets./list", PathError::TrailingDot),
        ("/api/2.0/secrets%2e/list", PathError::TrailingDot),
        ("/api/2.0/secrets%2E", PathError::TrailingDot),
        ("/api/2.0/token/create.", PathError::TrailingDot),
        ("/api/2.0/token/create./", PathError::TrailingDot),
        ("/a/.../b", PathError::TrailingDot),
        ("/api/2.0/secrets. /list", PathError::SegmentWhitespace),
        ("/api/2.0/secrets .", PathError::TrailingDot),
        // Encoded unreserved characters: HAProxy routes on the raw form.
        (
            "/%73erving-endpoints/x/invocations",
            PathError::EncodedUnreserved,
        ),
        (
            "/serving%2Dendpoints/x/invocations",
            PathError::EncodedUnreserved,
        ),
        ("/api/2.0/%73ecrets/list", PathError::EncodedUnreserved),
        ("/api/2%2E0/secrets/list", PathError::EncodedUnreserved),
        ("/api/2.0/se%2ecrets", PathError::EncodedUnreserved),
        ("/a/%41", PathError::EncodedUnreserved),
        ("/a/%7a", PathError::EncodedUnreserved),
        ("/a/%30", PathError::EncodedUnreserved),
        ("/a/b%5Fc", PathError::EncodedUnreserved),
        ("/a/b%5fc%20d", PathError::EncodedUnreserved),
        // NUL, TAB and other controls, raw or encoded, trailing or not.
        ("/api/2.0/secrets%00", PathError::ControlCharacter),
        ("/api/2.0/secrets%00/list", PathError::ControlCharacter),
        ("/api/2.0/secrets%09/list", PathError::ControlCharacter),
        ("/api/2.0/secrets\t/list", PathError::ControlCharacter),
        ("/api/2.0/secrets%0A", PathError::ControlCharacter),
        ("/api/2.0/secrets%C2%A0%C2%85", PathError::ControlCharacter),
        // IIS %u escapes, overlong UTF-8 and surrogates.
        ("/a/%u002e%u002e/b", PathError::InvalidPercentEncoding),
        ("/a/%U002F", PathError::InvalidPercentEncoding),
        ("/%c0%ae%c0%ae/secrets", PathError::InvalidUtf8),
        ("/%c0%af", PathError::InvalidUtf8),
        ("/%e0%80%ae", PathError::InvalidUtf8),
        ("/%ed%a0%80", PathError::InvalidUtf8),
        // Still refused as before.
        ("/api/2.0/x/%2e%2E/secrets", PathError::DotSegment),
        ("/api/2.0%2Fsecrets", PathError::EncodedSlash),
        ("/api/2.0%5csecrets", PathError::Backslash),
        ("/api/2.0/secrets%3Bx", PathError::PathParameter),
        ("/api/2.0/secrets%252e", PathError::DoubleEncoding),
    ];

    #[test]
    fn refused_variants_table() {
        for (p, want) in REFUSED {
            assert_eq!(err(p), *want, "{p:?}");
            assert!(PathError::as_str(*want).len() < 80);
        }
    }

    #[test]
    fn non_ascii_opt_out_relaxes_only_non_ascii() {
        assert_eq!(opt_ok("/caf%C3%A9/%E6%97%A5%E6%9C%AC"), "/café/日本");
        assert_eq!(
            opt_ok("/Volumes/m/d/v/r\u{E9}sum\u{E9} 1.pdf"),
            "/Volumes/m/d/v/résumé 1.pdf"
        );
        assert_eq!(opt_ok("/a/\u{4E2D}\u{6587}"), "/a/中文");
        assert_eq!(opt_ok("/api/2.0/jobs/list"), "/api/2.0/jobs/list");
        // Still refused: characters Unicode folds to ASCII (case mapping or NFKC).
        for p in [
            "/api/2.0/to%E2%84%AAen/create",
            "/api/2.0/to\u{212A}en/create",
            "/api/2.0/%C5%BFecrets/list",
            "/api/2.0/%EF%BD%93ecrets/list",
            "/api/2.0/x/%EF%BC%8E%EF%BC%8E/secrets",
            "/api/2.0/secrets%EF%BC%8Flist",
            "/api/2.0/secret\u{131}/list",
            "/api/2.0/ip-acce\u{DF}-lists",
            "/api/2.0/\u{FB01}les",
            "/api/2.0/\u{1D42C}ecrets",
            "/api/2.0/secrets\u{2024}",
            "/api/2.0/x\u{A0}y",
            "/api/2.0/\u{130}d",
        ] {
            assert_eq!(opt_err(p), PathError::FoldsToAscii, "{p:?}");
        }
        for p in [
            "/api/2.0/sec\u{200B}rets/list",
            "/api/2.0/sec%E2%80%8Brets/list",
            "/api/2.0/\u{202E}sterces",
            "/api/2.0/secrets\u{FEFF}x",
            "/api/2.0/x\u{E0073}",
        ] {
            assert_eq!(opt_err(p), PathError::InvisibleCharacter, "{p:?}");
        }
        for p in ["/a/\u{3000}b", "/a/b\u{A0}", "/a/b\u{2003}/c"] {
            assert_eq!(opt_err(p), PathError::SegmentWhitespace, "{p:?}");
        }
        // Every other rule is unchanged.
        for (p, want) in REFUSED {
            if *want != PathError::NonAscii {
                assert_eq!(opt_err(p), *want, "{p:?}");
            }
        }
        assert_eq!(opt_err("/a\u{85}"), PathError::ControlCharacter);
        assert_eq!(opt_err("/caf\u{E9}/%2e%2e/x"), PathError::DotSegment);
        assert_eq!(opt_err("/caf\u{E9}/%73"), PathError::EncodedUnreserved);
        assert_eq!(opt_err("/caf\u{E9}%2F"), PathError::EncodedSlash);
    }

    /// Decoding one escape never yields a letter, digit, `-`, `.`, `_` or `/` (what HAProxy
    /// routes on): checked for every byte value, in both hex cases.
    #[test]
    fn no_escape_decodes_to_a_routing_character() {
        for v in 0..=255u8 {
            for p in [format!("/a%{v:02X}b"), format!("/a%{v:02x}b")] {
                if let Ok(out) = normalize_path(&p) {
                    let d = out.as_bytes()[2];
                    assert!(
                        !(d.is_ascii_alphanumeric() || b"-._/".contains(&d)),
                        "{p:?} -> {out:?}"
                    );
                    assert!(d.is_ascii(), "{p:?}");
                }
            }
        }
        // Exactly these escapes are accepted: the ASCII that is neither unreserved (but `~`),
        // nor a delimiter idgate refuses, nor a control character.
        let accepted: Vec<u8> = (0..=255u8)
            .filter(|v| normalize_path(&format!("/a%{v:02X}b")).is_ok())
            .collect();
        assert_eq!(accepted, b" !\"$%&'()*+,:<=>@[]^`{|}~".to_vec());
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
        ] {
            assert_eq!(err(p), PathError::DotSegment, "{p}");
        }
    }

    #[test]
    fn path_parameters_refused_raw_and_encoded() {
        // Servlet containers drop `;params` before routing: `/secrets;x/list` would reach
        // `/secrets/list` while a rule saw `secrets;x`.
        for p in [
            "/a;x/b",
            "/a/..;/b",
            "/a/b;",
            "/;",
            "/a%3Bx/b",
            "/a/..%3b/b",
            "/a/%2e%2e%3Bjsessionid=1/b",
        ] {
            assert_eq!(err(p), PathError::PathParameter, "{p}");
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
        PathPattern::compile(pat, Case::Sensitive)
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
    fn case_insensitive_patterns_for_deny_rules() {
        let ci = |pat: &str, path: &str| {
            PathPattern::compile(pat, Case::Insensitive)
                .unwrap()
                .matches(&PathView::new(path))
        };
        assert!(ci("/api/2.0/secrets/**", "/API/2.0/Secrets/list"));
        assert!(ci("/api/*/token", "/Api/2.0/TOKEN/"));
        assert!(ci("/f/Ab*Cd", "/F/aBxxcD"));
        assert!(ci("/exact/Path", "/EXACT/path"));
        assert!(!ci("/api/2.0/secrets/**", "/api/2.0/secretz"));
        assert!(!m("/api/2.0/secrets/**", "/API/2.0/secrets/list"));
        // Prefix/suffix lengths inside multi-byte characters never panic.
        assert!(!ci("/é*", "/e\u{301}x"));
        assert!(!m("/ab*", "/aé"));
        assert!(!m("/*é", "/\u{e9}\u{e9}x"));
    }

    #[test]
    fn long_paths_beyond_inline_segments() {
        let deep: String = (0..INLINE_SEGS + 8).map(|i| format!("/s{i}")).collect();
        let last = INLINE_SEGS + 7;
        assert!(m("/s0/**", &deep));
        assert!(m(&format!("/s0/**/s{last}"), &deep));
        assert!(m(&format!("/**/s{}/s{last}", last - 1), &deep));
        assert!(!m(&format!("/s1/**/s{last}"), &deep));
        assert!(!m("/**/nope", &deep));
        let all_stars: String = "/*".repeat(INLINE_SEGS + 8);
        assert!(m(&all_stars, &deep));
        assert!(!m(&all_stars[2..], &deep)); // one segment fewer
        assert!(m(&deep, &deep));
        // Exactly at the inline limit.
        let edge: String = (0..INLINE_SEGS).map(|i| format!("/e{i}")).collect();
        assert!(m(&"/*".repeat(INLINE_SEGS), &edge));
        assert!(m(&format!("/e0/**/e{}", INLINE_SEGS - 1), &edge));
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
            ("/a;x", "path parameters"),
            ("/a./b", "ending in a dot"),
            ("/a/*.", "ending in a dot"),
            ("/a /b", "whitespace"),
            ("/a/ *", "whitespace"),
        ] {
            let e = PathPattern::compile(p, Case::Sensitive).expect_err(p);
            assert!(e.contains(needle), "{p:?}: {e}");
        }
    }
}
