//! `claims_match` patterns: glob patterns for claim values (docs/policy.md "Claim patterns").
//!
//! A separate key from `claims`, whose values stay exact: `claims = { ref = "refs/tags/v*" }`
//! matches only the literal string `refs/tags/v*`, `claims_match = { ref = "refs/tags/v*" }`
//! matches `refs/tags/v1.2.0`.
//!
//! Syntax: `*` matches any run of characters without `/` (empty included), `**` any run
//! including `/`; everything else is literal, case-sensitive (`?`, `[`, `\` included). Three or
//! more `*` in a row are refused (ambiguous), as are empty patterns and patterns longer than
//! [`MAX_GLOB_BYTES`].
//!
//! Matching simulates the pattern's automaton over the value's bytes with a 128-bit state set:
//! linear in the value's length, no backtracking (a pattern cannot be made exponential), no
//! allocation.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use super::value::string_value;

/// Longest pattern (bytes): the automaton's states are the bits of a `u128`.
pub const MAX_GLOB_BYTES: usize = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum El {
    Byte(u8),
    /// `*`: any bytes but `/`.
    Star,
    /// `**`: any bytes.
    Globstar,
}

/// One `claims_match` pattern, compiled.
#[derive(Clone, PartialEq, Eq)]
pub struct ClaimGlob {
    text: Box<str>,
    els: Box<[El]>,
    /// Bit `i` set when element `i` is a star (it may match the empty string).
    stars: u128,
}

impl ClaimGlob {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// States reachable without consuming a byte. No two stars are adjacent, so one step is
    /// enough.
    #[inline]
    fn closure(&self, set: u128) -> u128 {
        set | ((set & self.stars) << 1)
    }

    /// Whether the whole of `value` matches.
    pub fn matches(&self, value: &str) -> bool {
        let n = self.els.len();
        let mut cur = self.closure(1);
        for &b in value.as_bytes() {
            let mut next = 0u128;
            let mut set = cur;
            while set != 0 {
                let i = set.trailing_zeros() as usize;
                set &= set - 1;
                match self.els.get(i) {
                    Some(El::Byte(c)) if *c == b => next |= 1 << (i + 1),
                    Some(El::Star) if b != b'/' => next |= 1 << i,
                    Some(El::Globstar) => next |= 1 << i,
                    _ => {}
                }
            }
            cur = self.closure(next);
            if cur == 0 {
                return false;
            }
        }
        cur & (1 << n) != 0
    }
}

impl FromStr for ClaimGlob {
    type Err = String;

    fn from_str(s: &str) -> Result<ClaimGlob, String> {
        if s.is_empty() {
            return Err("empty pattern".into());
        }
        if s.len() > MAX_GLOB_BYTES {
            return Err(format!("pattern longer than {MAX_GLOB_BYTES} bytes"));
        }
        let bytes = s.as_bytes();
        let mut els = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'*' {
                els.push(El::Byte(bytes[i]));
                i += 1;
                continue;
            }
            let run = bytes[i..].iter().take_while(|&&b| b == b'*').count();
            els.push(match run {
                1 => El::Star,
                2 => El::Globstar,
                _ => {
                    return Err(format!(
                        "{s:?}: {} in a row; use * (no /) or ** (any characters)",
                        "*".repeat(run)
                    ))
                }
            });
            i += run;
        }
        let stars = els
            .iter()
            .enumerate()
            .filter(|(_, e)| !matches!(e, El::Byte(_)))
            .fold(0u128, |m, (i, _)| m | 1 << i);
        Ok(ClaimGlob {
            text: s.into(),
            els: els.into_boxed_slice(),
            stars,
        })
    }
}
string_value!(ClaimGlob, "a glob pattern such as \"refs/tags/v*\"");

impl fmt::Debug for ClaimGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text)
    }
}

/// The patterns of one `claims_match` entry: one or a non-empty list.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ClaimGlobs(pub Vec<ClaimGlob>);

impl<'de> Deserialize<'de> for ClaimGlobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClaimGlobs;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a pattern string or a list of them (claims_match matches strings)")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClaimGlobs, E> {
                v.parse().map(|g| ClaimGlobs(vec![g])).map_err(E::custom)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClaimGlobs, A::Error> {
                let mut out = Vec::new();
                while let Some(g) = seq.next_element::<ClaimGlob>()? {
                    out.push(g);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "empty list of patterns: the condition could never match",
                    ));
                }
                Ok(ClaimGlobs(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> ClaimGlob {
        p.parse().unwrap()
    }

    #[test]
    fn star_stays_in_a_segment_globstar_does_not() {
        let tags = g("refs/tags/v*");
        for ok in ["refs/tags/v1", "refs/tags/v1.2.0", "refs/tags/v"] {
            assert!(tags.matches(ok), "{ok}");
        }
        for no in [
            "refs/tags/v1/x",
            "refs/heads/v1",
            "refs/tags/1",
            "xrefs/tags/v1",
            "",
        ] {
            assert!(!tags.matches(no), "{no}");
        }
        let repo = g("repo:octo-org/*:ref:refs/heads/main");
        assert!(repo.matches("repo:octo-org/octo-repo:ref:refs/heads/main"));
        assert!(!repo.matches("repo:octo-org/a/b:ref:refs/heads/main"));
        assert!(!repo.matches("repo:evil-org/octo-repo:ref:refs/heads/main"));
        let any = g("octo-org/**");
        assert!(any.matches("octo-org/x/.github/workflows/deploy.yml@refs/heads/main"));
        assert!(any.matches("octo-org/"));
        assert!(!any.matches("octo-orgx/y"));
        let mid = g("a/**/z");
        assert!(mid.matches("a//z") && mid.matches("a/b/c/z"));
        assert!(!mid.matches("a/z") && !mid.matches("a/b/zz"));
        let two = g("*-*");
        assert!(two.matches("a-b") && two.matches("-") && two.matches("a-b-c"));
        assert!(!two.matches("ab") && !two.matches("a/-b"));
    }

    #[test]
    fn everything_else_is_literal() {
        assert!(g("a?b").matches("a?b"));
        assert!(!g("a?b").matches("axb"));
        assert!(g("[x]").matches("[x]"));
        assert!(g("exact").matches("exact"));
        assert!(!g("exact").matches("Exact"));
        assert!(g("é*").matches("éte"));
        assert!(g("*é").matches("café"));
    }

    #[test]
    fn no_blowup_on_hostile_values() {
        let p = g("*a*a*a*a*a*a*a*a*a*a*b");
        let value = "a".repeat(8192);
        let t = std::time::Instant::now();
        assert!(!p.matches(&value));
        assert!(t.elapsed() < std::time::Duration::from_millis(200));
    }

    #[test]
    fn refused_patterns() {
        let err = |p: &str| p.parse::<ClaimGlob>().unwrap_err();
        assert!(err("").contains("empty"));
        assert!(err("a***").contains("***"));
        assert!(err(&"x".repeat(MAX_GLOB_BYTES + 1)).contains("127"));
        assert!(format!("{:?}", g(&"x".repeat(MAX_GLOB_BYTES))).len() > MAX_GLOB_BYTES);
    }
}
