//! Claim paths: how a configured claim name addresses a value among a token's claims.
//!
//! Four places read claims by a configured name, and all four use [`ClaimPath`]: the issuers'
//! `email_claim` / `groups_claim` (token validation), the rules' `claims` keys and
//! `principal = "claim:<path>"` (the policy), [`Identity::claim`], and the payload parser's
//! choice of which top-level claims to keep at all (`auth`'s claim selection, through
//! `ClaimPath::top_level_names`).
//!
//! The rule (README, docs/policy.md): a top-level claim whose name is the whole path wins, so
//! namespaced claims such as `https://example.com/roles` work; otherwise the dotted path is
//! walked through nested objects (`realm_access.roles`). A segment may be double-quoted to hold
//! dots (`resource_access."gw.example.com".roles`, `"https://example.com/claims".roles`);
//! inside quotes `\"` is a quote and `\\` a backslash. A path with a quoted segment means
//! exactly its segments: there is no whole-name lookup for it (except for a single quoted
//! segment, which is that top-level name). A path is split once, when the configuration is
//! loaded, and an empty path, an empty segment (leading, trailing or double dot, `""`), an
//! unterminated quote, a quote that does not enclose a whole segment or another escape is
//! refused there.
//!
//! Claims come in two representations: a token's claims while it is validated (borrowed from
//! the payload, see `auth::jose::claims`) and the `serde_json` map an [`Identity`] keeps. Both
//! nest `serde_json` objects below the top level, so the walk is written once, over
//! `ClaimSource`.
//!
//! [`Identity`]: crate::decision::Identity
//! [`Identity::claim`]: crate::decision::Identity::claim

use std::fmt;

use serde_json::{Map, Value};

/// A claim name or a dotted claim path, split when the configuration is loaded.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClaimPath {
    /// The path as configured.
    full: Box<str>,
    /// The name of the top-level claim tried first: the whole path when nothing is quoted, the
    /// one segment of a path that is a single quoted segment, `None` for a path with several
    /// segments of which one is quoted.
    whole: Option<Box<str>>,
    /// Its segments (one for a name without dots), unquoted; none is empty.
    segments: Box<[Box<str>]>,
}

/// Why a string is not a [`ClaimPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPathError {
    /// The empty string.
    Empty,
    /// A leading, trailing or double dot, or `""`.
    EmptySegment,
    /// A `"` opens a segment but none closes it.
    UnterminatedQuote,
    /// A `"` that does not enclose a whole segment (`a"b"`, `"a"b`).
    StrayQuote,
    /// A backslash inside quotes followed by something else than `"` or `\`.
    BadEscape,
}

impl fmt::Display for ClaimPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClaimPathError::Empty => "empty claim path",
            ClaimPathError::EmptySegment => {
                "empty segment in dotted claim path (leading, trailing or double dot, or \"\")"
            }
            ClaimPathError::UnterminatedQuote => "unterminated quote in claim path",
            ClaimPathError::StrayQuote => {
                "a quote must enclose a whole segment, as in resource_access.\"gw.example.com\".roles"
            }
            ClaimPathError::BadEscape => {
                "inside quotes, a backslash may only escape \" or \\"
            }
        })
    }
}

impl std::error::Error for ClaimPathError {}

/// The segments of `path` and whether one of them was quoted.
fn split(path: &str) -> Result<(Vec<Box<str>>, bool), ClaimPathError> {
    let mut segments = Vec::new();
    let mut quoted = false;
    let mut chars = path.chars().peekable();
    loop {
        let mut seg = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            quoted = true;
            loop {
                match chars.next() {
                    None => return Err(ClaimPathError::UnterminatedQuote),
                    Some('"') => break,
                    Some('\\') => match chars.next() {
                        Some(c @ ('"' | '\\')) => seg.push(c),
                        _ => return Err(ClaimPathError::BadEscape),
                    },
                    Some(c) => seg.push(c),
                }
            }
            if !matches!(chars.peek(), None | Some('.')) {
                return Err(ClaimPathError::StrayQuote);
            }
        } else {
            while let Some(&c) = chars.peek() {
                match c {
                    '.' => break,
                    '"' => return Err(ClaimPathError::StrayQuote),
                    c => seg.push(c),
                }
                chars.next();
            }
        }
        if seg.is_empty() {
            return Err(ClaimPathError::EmptySegment);
        }
        segments.push(seg.into_boxed_str());
        match chars.next() {
            None => return Ok((segments, quoted)),
            Some(_dot) => {}
        }
    }
}

impl ClaimPath {
    pub fn parse(path: &str) -> Result<ClaimPath, ClaimPathError> {
        if path.is_empty() {
            return Err(ClaimPathError::Empty);
        }
        let (segments, quoted) = split(path)?;
        let whole = match (quoted, &segments[..]) {
            (false, _) => Some(path.into()),
            (true, [only]) => Some(only.clone()),
            (true, _) => None,
        };
        Ok(ClaimPath {
            full: path.into(),
            whole,
            segments: segments.into_boxed_slice(),
        })
    }

    /// The top-level claims a lookup of this path can read: the one named by the whole path
    /// and, for a dotted path, the one named by its first segment. The payload parser keeps
    /// exactly these for every path something reads.
    pub(crate) fn top_level_names(&self) -> impl Iterator<Item = &str> {
        let first = (self.segments.len() > 1).then(|| &*self.segments[0]);
        self.whole.as_deref().into_iter().chain(first)
    }

    /// Whether a lookup of this path can read the top-level claim `name`
    /// ([`Self::top_level_names`]).
    pub(crate) fn reads(&self, name: &str) -> bool {
        self.top_level_names().any(|n| n == name)
    }

    /// The claim at this path in `claims`: the top-level claim named by the whole path, else
    /// the nested value the segments walk to. `None` when a step is missing or not an object
    /// (arrays are not indexed).
    #[inline]
    pub(crate) fn find<'v, C: ClaimSource<'v>>(&self, claims: C) -> Option<Found<'v, C::Top>> {
        if let Some(v) = self.whole.as_deref().and_then(|w| claims.top(w)) {
            return Some(Found::Top(v));
        }
        let (first, rest) = self.segments.split_first()?;
        let (last, middle) = rest.split_last()?;
        let mut object = C::object(claims.top(first)?)?;
        for s in middle {
            object = object.get(&**s)?.as_object()?;
        }
        object.get(&**last).map(Found::Nested)
    }

    /// [`Self::find`] in a map of claims (an identity's).
    pub(crate) fn lookup<'v>(&self, claims: &'v Map<String, Value>) -> Option<&'v Value> {
        self.find(claims).map(|f| match f {
            Found::Top(v) | Found::Nested(v) => v,
        })
    }
}

impl ClaimPath {
    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.full
    }

    /// Its dot-separated segments (one for a name without dots), quotes removed.
    pub fn segments(&self) -> &[Box<str>] {
        &self.segments
    }
}

/// How the configuration reads a claim path: [`ClaimPath::parse`], and no control characters
/// (a rule's claim keys and `claim:` principals, the issuers' email/groups claims).
impl std::str::FromStr for ClaimPath {
    type Err = String;

    fn from_str(p: &str) -> Result<ClaimPath, String> {
        if p.chars().any(char::is_control) {
            return Err(format!("{p:?} contains a control character"));
        }
        ClaimPath::parse(p).map_err(|e| match e {
            ClaimPathError::Empty => e.to_string(),
            _ => format!("{p:?}: {e}"),
        })
    }
}

impl fmt::Display for ClaimPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

/// Top-level claims a [`ClaimPath`] can be looked up in. Below the top level every
/// representation nests plain `serde_json` objects.
pub(crate) trait ClaimSource<'v>: Copy {
    /// A top-level claim value.
    type Top: Copy;
    /// The top-level claim `name`.
    fn top(self, name: &str) -> Option<Self::Top>;
    /// `top` as an object, to walk into.
    fn object(top: Self::Top) -> Option<&'v Map<String, Value>>;
}

/// What [`ClaimPath::find`] found: the top-level claim named by the whole path, or a value
/// nested in the top-level claim named by its first segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Found<'v, T> {
    Top(T),
    Nested(&'v Value),
}

impl<'v> ClaimSource<'v> for &'v Map<String, Value> {
    type Top = &'v Value;

    #[inline]
    fn top(self, name: &str) -> Option<&'v Value> {
        self.get(name)
    }
    #[inline]
    fn object(top: &'v Value) -> Option<&'v Map<String, Value>> {
        top.as_object()
    }
}

/// The lookup cases every [`ClaimSource`] must agree on: `(claims, path, expected value)`.
/// Used here for the identity's map and by the token claims' tests for the payload parser's.
#[cfg(test)]
pub(crate) fn lookup_cases() -> Vec<(Value, &'static str, Option<Value>)> {
    use serde_json::json;
    vec![
        // A top-level claim whose name is the whole path wins over the nested walk.
        (
            json!({"https://ex.com/roles": ["top"], "https://ex": {"com/roles": ["nested"]}}),
            "https://ex.com/roles",
            Some(json!(["top"])),
        ),
        // ... even when it is null.
        (
            json!({"a.b": null, "a": {"b": 1}}),
            "a.b",
            Some(json!(null)),
        ),
        // Without it, the dotted path is walked.
        (
            json!({"https://ex": {"com/roles": "nested"}}),
            "https://ex.com/roles",
            Some(json!("nested")),
        ),
        (
            json!({"realm": {"roles": ["r1", "r2"]}}),
            "realm.roles",
            Some(json!(["r1", "r2"])),
        ),
        (json!({"a": {"b": {"c": 7}}}), "a.b.c", Some(json!(7))),
        (json!({"a": {"b": null}}), "a.b", Some(json!(null))),
        (json!({"a": {"b": {"c": 7}}}), "a.b", Some(json!({"c": 7}))),
        // Plain names.
        (json!({"tenant": "t1"}), "tenant", Some(json!("t1"))),
        (json!({"tenant": null}), "tenant", Some(json!(null))),
        (json!({"other": 1}), "tenant", None),
        // Missing steps.
        (json!({}), "a.b", None),
        (json!({"a": {}}), "a.b.c", None),
        (json!({"a": {"x": 1}}), "a.b", None),
        // Quoted segments hold dots; a quoted path has no whole-name lookup.
        (
            json!({"resource_access": {"gw.example.com": {"roles": ["admin"]}}}),
            r#"resource_access."gw.example.com".roles"#,
            Some(json!(["admin"])),
        ),
        (
            json!({"resource_access.\"gw.example.com\".roles": 1, "resource_access": {}}),
            r#"resource_access."gw.example.com".roles"#,
            None,
        ),
        (
            json!({"https://example.com/claims": {"roles": ["r"]}}),
            r#""https://example.com/claims".roles"#,
            Some(json!(["r"])),
        ),
        (
            json!({"https://example.com/roles": ["r"], "https://example": {"com/roles": ["n"]}}),
            r#""https://example.com/roles""#,
            Some(json!(["r"])),
        ),
        (
            json!({"https://example": {"com/roles": ["n"]}}),
            r#""https://example.com/roles""#,
            None,
        ),
        (
            json!({"a": {"say \"hi\"": {"b\\c": 3}}}),
            r#"a."say \"hi\""."b\\c""#,
            Some(json!(3)),
        ),
        // Steps that are not objects; arrays are not indexed.
        (json!({"a": "s"}), "a.b", None),
        (json!({"a": {"b": 5}}), "a.b.c", None),
        (json!({"a": ["x"]}), "a.0", None),
        (json!({"a": [{"b": 1}]}), "a.b", None),
        (json!({"a": null}), "a.b", None),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lookup_follows_the_documented_rule() {
        for (claims, path, want) in lookup_cases() {
            let p = ClaimPath::parse(path).unwrap();
            let got = p.lookup(claims.as_object().unwrap());
            assert_eq!(got, want.as_ref(), "{path} in {claims}");
        }
    }

    #[test]
    fn empty_segments_are_refused_when_parsed() {
        assert_eq!(ClaimPath::parse(""), Err(ClaimPathError::Empty));
        for bad in [".", "a.", ".a", "a..b", "..", "a.b."] {
            assert_eq!(
                ClaimPath::parse(bad),
                Err(ClaimPathError::EmptySegment),
                "{bad:?}"
            );
        }
        // Anything else is a name: slashes, colons, spaces and non-ASCII included.
        for ok in [
            "a",
            "a.b",
            "https://ex.com/roles",
            "with space",
            "ü.ß",
            "a\\b",
        ] {
            assert_eq!(ClaimPath::parse(ok).unwrap().to_string(), ok);
        }
    }

    #[test]
    fn quoting() {
        let segs = |p: &str| -> Vec<String> {
            ClaimPath::parse(p)
                .unwrap()
                .segments()
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        assert_eq!(
            segs(r#"resource_access."gw.example.com".roles"#),
            ["resource_access", "gw.example.com", "roles"]
        );
        assert_eq!(segs(r#""a.b""#), ["a.b"]);
        assert_eq!(segs(r#""a\"b".c"#), ["a\"b", "c"]);
        assert_eq!(segs(r#""a\\".c"#), ["a\\", "c"]);
        let err = |p: &str| ClaimPath::parse(p).unwrap_err();
        assert_eq!(err(r#"a."b"#), ClaimPathError::UnterminatedQuote);
        assert_eq!(err(r#"a."b\""#), ClaimPathError::UnterminatedQuote);
        assert_eq!(err(r#"a"b""#), ClaimPathError::StrayQuote);
        assert_eq!(err(r#""a"b"#), ClaimPathError::StrayQuote);
        assert_eq!(err(r#"a.b""#), ClaimPathError::StrayQuote);
        assert_eq!(err(r#""a\n""#), ClaimPathError::BadEscape);
        assert_eq!(err(r#""""#), ClaimPathError::EmptySegment);
        assert_eq!(err(r#"a."""#), ClaimPathError::EmptySegment);
        assert_eq!(err(r#""a"."#), ClaimPathError::EmptySegment);
        let msg = r#"a"b""#.parse::<ClaimPath>().unwrap_err();
        assert!(msg.contains("whole segment"), "{msg}");
        // What a quoted path reads: its first segment only (no whole-name claim).
        let p = ClaimPath::parse(r#"resource_access."gw.example.com".roles"#).unwrap();
        assert_eq!(p.top_level_names().collect::<Vec<_>>(), ["resource_access"]);
        let p = ClaimPath::parse(r#""https://ex.com/roles""#).unwrap();
        assert_eq!(
            p.top_level_names().collect::<Vec<_>>(),
            ["https://ex.com/roles"]
        );
    }

    #[test]
    fn top_level_names_are_what_a_lookup_reads() {
        let names = |p: &str| -> Vec<String> {
            let p = ClaimPath::parse(p).unwrap();
            p.top_level_names().map(str::to_owned).collect()
        };
        assert_eq!(names("email"), ["email"]);
        assert_eq!(names("realm.roles"), ["realm.roles", "realm"]);
        assert_eq!(
            names("https://ex.com/roles"),
            ["https://ex.com/roles", "https://ex"]
        );
        let p = ClaimPath::parse("realm.roles").unwrap();
        assert!(p.reads("realm") && p.reads("realm.roles"));
        assert!(!p.reads("roles") && !p.reads("realm.role"));
        // A lookup touches nothing else: the map holding only those names answers the same.
        for (claims, path, want) in lookup_cases() {
            let p = ClaimPath::parse(path).unwrap();
            let only: Map<String, Value> = claims
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| p.reads(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(p.lookup(&only), want.as_ref(), "{path} in {claims}");
        }
        assert_eq!(
            ClaimPath::parse("a")
                .unwrap()
                .lookup(json!({"a": 1}).as_object().unwrap()),
            Some(&json!(1))
        );
    }
}
