//! Which identity values can be passed on: the checks a token's `sub`, email and groups (and a
//! rule's `claim:` principal) must pass before idgate allows anything on their behalf.
//!
//! These values end up in HTTP headers (`X-Forwarded-User`, `X-Forwarded-Groups`, ...), in the
//! audit log, and in HAProxy's per-identity rate limit (keyed on `txn.idgate.sub`). A value that
//! cannot be sent faithfully must not be silently left out — the upstream would then see the
//! gateway's own credential with no user at all, and the rate limit would stop tracking the
//! caller — nor altered (`"admin\u{0}"` stripped reads as `"admin"`, a different identity). So
//! the token is refused (`claim_invalid`) instead, with a description naming the claim and the
//! problem. The renderer ([`crate::contract`]) keeps its own `header_safe` check and caps as a
//! second line, and fails closed too.

use crate::decision::{Reason, Rejection};

/// Longest identity value (`sub`, email, one principal) passed on, in bytes. Real values are
/// far shorter (Entra object IDs are 36 bytes, emails rarely over 100).
pub const IDENTITY_CAP: usize = 1024;

/// Longest comma-joined group list passed on, in bytes. Sized for Entra ID, which puts at most
/// 200 groups in a JWT (beyond that it sends the overage indication instead): 200 object IDs
/// of 36 bytes plus 199 commas are 7,399 bytes. Keycloak role names and the like are shorter.
pub const GROUPS_CAP: usize = 8192;

/// Why a string is not [`identity_safe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsafe {
    /// A C0 control (NUL, TAB, CR, LF, ...), DEL, or a C1 control (U+0080..=U+009F).
    Control,
    /// A character that renders as nothing or changes how the text around it is displayed:
    /// see [`is_invisible`].
    Invisible,
}

/// Whether `s` may be passed on as an identity value: no control characters (C0, DEL, C1) and no
/// invisible or display-altering characters ([`is_invisible`]). Length is checked separately
/// (the caps differ per value).
///
/// Printable ASCII, by far the common case, is decided by one vectorizable pass.
pub fn identity_safe(s: &str) -> bool {
    identity_problem(s).is_none()
}

/// [`identity_safe`] with the reason: the first problem found, `None` when safe.
pub fn identity_problem(s: &str) -> Option<Unsafe> {
    let b = s.as_bytes();
    if b.iter().fold(true, |ok, &c| ok & (0x20..0x7f).contains(&c)) {
        return None;
    }
    s.chars().find_map(|c| {
        if c.is_control() {
            Some(Unsafe::Control)
        } else if is_invisible(c) {
            Some(Unsafe::Invisible)
        } else {
            None
        }
    })
}

/// Characters that make a value display as something else: Unicode's Default_Ignorable_Code_Point
/// set (soft hyphen, combining grapheme joiner, zero-width space/joiners, bidirectional marks,
/// embeddings, overrides and isolates, word joiner and the invisible operators, Hangul and Khmer
/// fillers, variation selectors, the byte order mark, tag characters, ...), the line and paragraph
/// separators U+2028/U+2029, and the interlinear annotation controls U+FFF9..=U+FFFB.
/// `"admin\u{200B}"` displays as `"admin"`, `"\u{202E}nimda"` as `"admin"`.
pub fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{061C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{2028}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFFB}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// The `claim_invalid` rejection for an identity value that cannot be passed on, or `Ok`.
/// `what` names the value in the description.
fn check_value(s: &str, what: What) -> Result<(), Rejection> {
    let d = if s.len() > IDENTITY_CAP {
        what.too_long()
    } else {
        match identity_problem(s) {
            None => return Ok(()),
            Some(Unsafe::Control) => what.control(),
            Some(Unsafe::Invisible) => what.invisible(),
        }
    };
    Err(Rejection::new(Reason::ClaimInvalid, d))
}

/// The identity values whose descriptions [`check_value`] knows. The descriptions go into the
/// `error_description` of the challenge, so they are fixed texts (never the value itself).
#[derive(Clone, Copy)]
enum What {
    Sub,
    Email,
    Principal,
}

impl What {
    fn too_long(self) -> &'static str {
        match self {
            What::Sub => "sub longer than 1024 bytes",
            What::Email => "email longer than 1024 bytes",
            What::Principal => "principal claim longer than 1024 bytes",
        }
    }
    fn control(self) -> &'static str {
        match self {
            What::Sub => "sub contains a control character",
            What::Email => "email contains a control character",
            What::Principal => "principal claim contains a control character",
        }
    }
    fn invisible(self) -> &'static str {
        match self {
            What::Sub => "sub contains an invisible or bidirectional formatting character",
            What::Email => "email contains an invisible or bidirectional formatting character",
            What::Principal => {
                "principal claim contains an invisible or bidirectional formatting character"
            }
        }
    }
}

/// Refuse a verified token whose identity cannot be passed on faithfully (see the module docs):
/// `sub` and the email must be [`identity_safe`] and at most [`IDENTITY_CAP`] bytes; every group
/// must be non-empty, comma-free (the `groups` variable is comma-joined: `"a,b"` would read as
/// two groups) and [`identity_safe`], and the joined list at most [`GROUPS_CAP`] bytes.
pub(super) fn check_identity(
    sub: &str,
    email: Option<&str>,
    groups: &[String],
) -> Result<(), Rejection> {
    check_value(sub, What::Sub)?;
    if let Some(e) = email {
        check_value(e, What::Email)?;
    }
    let bad = |d| Err(Rejection::new(Reason::ClaimInvalid, d));
    let mut joined = groups.len().saturating_sub(1);
    for g in groups {
        if g.is_empty() {
            return bad("groups claim has an empty group");
        }
        if g.contains(',') {
            return bad("groups claim has a group containing a comma");
        }
        match identity_problem(g) {
            None => {}
            Some(Unsafe::Control) => {
                return bad("groups claim has a group with a control character")
            }
            Some(Unsafe::Invisible) => return bad(
                "groups claim has a group with an invisible or bidirectional formatting character",
            ),
        }
        joined += g.len();
    }
    if joined > GROUPS_CAP {
        return bad("groups claim longer than 8192 bytes (comma-joined)");
    }
    Ok(())
}

/// Refuse a principal (computed per rule from a `claim:`) that cannot be passed on: the same
/// rules as `sub`. Principals from `sub` and the email were checked with the token; `static:`
/// ones when the configuration was loaded.
pub fn check_principal(p: &str) -> Result<(), Rejection> {
    check_value(p, What::Principal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_state_the_caps() {
        let cap = IDENTITY_CAP.to_string();
        for w in [What::Sub, What::Email, What::Principal] {
            assert!(w.too_long().contains(&cap));
        }
        let long_group = vec!["g".repeat(GROUPS_CAP + 1)];
        let r = check_identity("s", None, &long_group).unwrap_err();
        assert!(r.description.contains(&GROUPS_CAP.to_string()));
    }

    #[test]
    fn safe_and_unsafe_values() {
        for ok in [
            "alice",
            "alice@example.com",
            "Ana María",
            "佐藤",
            "user with spaces",
            "emoji \u{1F600}",
            "",
        ] {
            assert!(identity_safe(ok), "{ok:?}");
        }
        let cases: &[(&str, Unsafe)] = &[
            ("a\u{0}b", Unsafe::Control),
            ("a\u{1}", Unsafe::Control),
            ("a\tb", Unsafe::Control),
            ("a\r\nb", Unsafe::Control),
            ("a\u{7f}", Unsafe::Control),
            ("a\u{85}", Unsafe::Control),
            ("a\u{9f}", Unsafe::Control),
            ("a\u{ad}b", Unsafe::Invisible),
            ("\u{61c}a", Unsafe::Invisible),
            ("a\u{200b}", Unsafe::Invisible),
            ("a\u{200c}", Unsafe::Invisible),
            ("a\u{200d}", Unsafe::Invisible),
            ("a\u{200e}", Unsafe::Invisible),
            ("a\u{200f}", Unsafe::Invisible),
            ("a\u{2028}", Unsafe::Invisible),
            ("a\u{2029}", Unsafe::Invisible),
            ("\u{202a}a", Unsafe::Invisible),
            ("\u{202e}nimda", Unsafe::Invisible),
            ("a\u{2060}", Unsafe::Invisible),
            ("a\u{2064}", Unsafe::Invisible),
            ("\u{2066}a\u{2069}", Unsafe::Invisible),
            ("a\u{feff}", Unsafe::Invisible),
            ("a\u{fe0f}", Unsafe::Invisible),
            ("a\u{3164}", Unsafe::Invisible),
            ("a\u{e0001}", Unsafe::Invisible),
            ("a\u{e0041}", Unsafe::Invisible),
            ("a\u{e007f}", Unsafe::Invisible),
        ];
        for (s, want) in cases {
            assert_eq!(identity_problem(s), Some(*want), "{s:?}");
            assert!(!identity_safe(s));
        }
        // Every control character, and nothing else below U+3000 but the invisible ones.
        for c in ('\0'..='\u{3000}').chain(['\u{10FFFF}']) {
            let s = format!("x{c}y");
            assert_eq!(
                identity_safe(&s),
                !c.is_control() && !is_invisible(c),
                "{c:?}"
            );
        }
    }

    #[test]
    fn identity_checks_name_the_claim() {
        let d = |r: Result<(), Rejection>| r.unwrap_err().description;
        assert_eq!(
            d(check_identity("a\u{1}", None, &[])),
            "sub contains a control character"
        );
        assert_eq!(
            d(check_identity(&"s".repeat(IDENTITY_CAP + 1), None, &[])),
            "sub longer than 1024 bytes"
        );
        assert!(check_identity(&"s".repeat(IDENTITY_CAP), None, &[]).is_ok());
        assert_eq!(
            d(check_identity("a", Some("a@b\r\n"), &[])),
            "email contains a control character"
        );
        assert_eq!(
            d(check_identity("a", Some("\u{202e}moc.b@a"), &[])),
            "email contains an invisible or bidirectional formatting character"
        );
        let g = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            d(check_identity("a", None, &g(&["x", ""]))),
            "groups claim has an empty group"
        );
        assert_eq!(
            d(check_identity("a", None, &g(&["a,b"]))),
            "groups claim has a group containing a comma"
        );
        assert!(d(check_identity("a", None, &g(&["\u{2066}x"]))).contains("invisible"));
        assert!(d(check_identity("a", None, &g(&["x\n"]))).contains("control"));
        // 200 Entra object IDs fit; 201 groups of 40 bytes do not.
        let guids: Vec<String> = (0..200)
            .map(|i| format!("{i:08x}-0000-4000-8000-{i:012x}"))
            .collect();
        assert_eq!(guids[0].len(), 36);
        assert!(check_identity("a", None, &guids).is_ok());
        let forty: Vec<String> = (0..201).map(|i| format!("{i:040}")).collect();
        assert!(d(check_identity("a", None, &forty)).contains("longer than"));
        // Exactly at the cap.
        let exact = vec!["g".repeat(GROUPS_CAP - 2), "h".into()];
        assert!(check_identity("a", None, &exact).is_ok());
        assert_eq!(
            d(check_principal("p\u{7f}")),
            "principal claim contains a control character"
        );
        assert!(check_principal("12345").is_ok());
    }
}
