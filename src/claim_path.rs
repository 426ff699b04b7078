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
//! walked through nested objects (`realm_access.roles`). A path is split once, when the
//! configuration is loaded, and an empty path or an empty segment (leading, trailing or double
//! dot) is refused there.
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
    /// The path as configured: also the name of the top-level claim tried first.
    full: Box<str>,
    /// Its dot-separated segments (one for a name without dots); none is empty.
    segments: Box<[Box<str>]>,
}

/// Why a string is not a [`ClaimPath`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimPathError {
    /// The empty string.
    Empty,
    /// A leading, trailing or double dot.
    EmptySegment,
}

impl fmt::Display for ClaimPathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClaimPathError::Empty => "empty claim path",
            ClaimPathError::EmptySegment => {
                "empty segment in dotted claim path (leading, trailing or double dot)"
            }
        })
    }
}

impl std::error::Error for ClaimPathError {}

impl ClaimPath {
    pub fn parse(path: &str) -> Result<ClaimPath, ClaimPathError> {
        if path.is_empty() {
            return Err(ClaimPathError::Empty);
        }
        if path.split('.').any(str::is_empty) {
            return Err(ClaimPathError::EmptySegment);
        }
        Ok(ClaimPath {
            full: path.into(),
            segments: path.split('.').map(Box::from).collect(),
        })
    }

    /// The top-level claims a lookup of this path can read: the one named by the whole path
    /// and, for a dotted path, the one named by its first segment. The payload parser keeps
    /// exactly these for every path something reads.
    pub(crate) fn top_level_names(&self) -> impl Iterator<Item = &str> {
        let first = (self.segments.len() > 1).then(|| &*self.segments[0]);
        std::iter::once(&*self.full).chain(first)
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
        if let Some(v) = claims.top(&self.full) {
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

    /// Its dot-separated segments (one for a name without dots).
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
            ClaimPathError::EmptySegment => format!("{p:?}: {e}"),
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
        for ok in ["a", "a.b", "https://ex.com/roles", "with space", "ü.ß"] {
            assert_eq!(ClaimPath::parse(ok).unwrap().to_string(), ok);
        }
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
