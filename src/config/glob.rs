//! Path patterns of `[[rule]] paths` (syntax in [`crate::policy::path`]'s module docs), parsed
//! when the file is read. A pattern that no accepted request path could ever match (a
//! dot-segment, `//`, a `%XX` escape...) is refused here, with the reason.

use std::str::FromStr;

use super::value::string_value;
use crate::policy::path::{contains_escape, edge_whitespace, is_dot_segment};

/// One segment pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobSeg {
    Literal(Box<str>),
    /// `*`: any one non-empty segment.
    Any,
    /// `pre*suf`: a segment at least `pre.len() + suf.len()` long with that prefix and suffix.
    Glob {
        prefix: Box<str>,
        suffix: Box<str>,
    },
}

/// The shape of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobShape {
    /// No wildcard at all: the path without its leading and trailing `/`.
    Exact(Box<str>),
    /// No `**`: exactly this many segments, each matching its pattern.
    Fixed(Box<[GlobSeg]>),
    /// `prefix/**/suffix`: at least `prefix.len() + suffix.len()` segments.
    Span {
        prefix: Box<[GlobSeg]>,
        suffix: Box<[GlobSeg]>,
    },
}

/// A parsed path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathGlob {
    text: Box<str>,
    shape: GlobShape,
}

impl PathGlob {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn shape(&self) -> &GlobShape {
        &self.shape
    }
}

impl FromStr for PathGlob {
    type Err = String;

    fn from_str(pat: &str) -> Result<PathGlob, String> {
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
        if pat.contains(';') {
            return Err(format!(
                "{pat:?}: path parameters (;) are refused in request paths, so this never matches"
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
                if let Some(why) = never_matching(s) {
                    return Err(format!(
                        "{pat:?}: {why}; such request paths are refused, so this never matches"
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
                segs.push(parse_seg(s).map_err(|e| format!("{pat:?}: {e}"))?);
            }
        }
        let shape = match span_at {
            Some(i) => {
                let suffix = segs.split_off(i);
                GlobShape::Span {
                    prefix: segs.into_boxed_slice(),
                    suffix: suffix.into_boxed_slice(),
                }
            }
            None if segs.iter().all(|s| matches!(s, GlobSeg::Literal(_))) => {
                GlobShape::Exact(body.into())
            }
            None => GlobShape::Fixed(segs.into_boxed_slice()),
        };
        Ok(PathGlob {
            text: pat.into(),
            shape,
        })
    }
}
string_value!(PathGlob, "a path pattern such as \"/api/2.0/**\"");

/// Why a request path never has segment `s`, if so.
fn never_matching(s: &str) -> Option<&'static str> {
    if s.is_empty() {
        Some("empty segment (//)")
    } else if is_dot_segment(s) {
        Some("dot-segment")
    } else if s.ends_with('.') {
        Some("segment ending in a dot")
    } else if edge_whitespace(s) {
        Some("segment beginning or ending with whitespace")
    } else {
        None
    }
}

fn parse_seg(s: &str) -> Result<GlobSeg, String> {
    if s == "*" {
        return Ok(GlobSeg::Any);
    }
    match s.matches('*').count() {
        0 => Ok(GlobSeg::Literal(s.into())),
        1 => {
            let (prefix, suffix) = s.split_once('*').expect("one star");
            Ok(GlobSeg::Glob {
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

    #[test]
    fn shapes() {
        let shape = |p: &str| p.parse::<PathGlob>().unwrap().shape;
        assert_eq!(shape("/a/b/"), GlobShape::Exact("a/b".into()));
        assert_eq!(shape("/"), GlobShape::Exact("".into()));
        assert_eq!(
            shape("/a/*/v*-beta"),
            GlobShape::Fixed(
                vec![
                    GlobSeg::Literal("a".into()),
                    GlobSeg::Any,
                    GlobSeg::Glob {
                        prefix: "v".into(),
                        suffix: "-beta".into()
                    }
                ]
                .into()
            )
        );
        assert_eq!(
            shape("/**/x"),
            GlobShape::Span {
                prefix: vec![].into(),
                suffix: vec![GlobSeg::Literal("x".into())].into()
            }
        );
        assert_eq!("/a/**".parse::<PathGlob>().unwrap().as_str(), "/a/**");
    }
}
