//! Explaining an `unknown_issuer` refusal to the operator (the agent's log line and
//! `idgate explain`): the token's `iss`, shown safely, and the configured issuer it nearly
//! names. The client's `description` never carries any of this: the `iss` is the caller's
//! text, and it must not be echoed into a response header.

use std::fmt::Write as _;

use super::identity::is_invisible;
use crate::config::IssuerConfig;

/// Characters of the token's `iss` shown at most.
pub const SHOWN_ISS_CHARS: usize = 200;

/// The token's `iss` as it may be shown in a log line or a report: quoted, at most
/// [`SHOWN_ISS_CHARS`] characters (then `...`), with `"` and `\` escaped and control,
/// invisible and bidirectional formatting characters written as `\u{..}`.
pub fn shown_iss(iss: &str) -> String {
    let (escaped, capped) = escape_iss(iss);
    format!("\"{escaped}\"{}", if capped { "..." } else { "" })
}

/// [`shown_iss`] without the quotes, and whether it was capped.
pub fn escape_iss(iss: &str) -> (String, bool) {
    let mut out = String::with_capacity(iss.len().min(SHOWN_ISS_CHARS));
    for (i, c) in iss.chars().enumerate() {
        if i == SHOWN_ISS_CHARS {
            return (out, true);
        }
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() || is_invisible(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    (out, false)
}

/// The configured issuer the token's `iss` differs from only by a trailing slash or ASCII case
/// (`https://idp.example.com/` for `https://idp.example.com`, `https://IdP.example.com`): its
/// `name` and `issuer`. For a `{tenantid}` template, the tenant part of `iss` stands in for the
/// placeholder.
pub fn did_you_mean<'c>(
    iss: &str,
    issuers: impl IntoIterator<Item = &'c IssuerConfig>,
) -> Option<&'c IssuerConfig> {
    let norm = |s: &str| s.trim_end_matches('/').to_owned();
    let token = norm(iss);
    issuers
        .into_iter()
        .find(|ic| match ic.issuer.template_parts() {
            None => norm(ic.issuer.as_str()).eq_ignore_ascii_case(&token),
            Some((prefix, suffix)) => {
                let (p, s) = (norm(prefix), norm(suffix));
                let fits = token.len() >= p.len() + s.len()
                    && token.is_char_boundary(p.len())
                    && token.is_char_boundary(token.len() - s.len())
                    && token[..p.len()].eq_ignore_ascii_case(&p)
                    && token[token.len() - s.len()..].eq_ignore_ascii_case(&s);
                fits && {
                    let middle = token[p.len()..token.len() - s.len()].trim_matches('/');
                    crate::config::is_guid(middle)
                }
            }
        })
}

/// One sentence for the operator: the token's `iss` (shown safely) and, when it nearly names a
/// configured issuer, which one.
pub fn explain(iss: &str, issuers: &[&IssuerConfig]) -> String {
    for ic in issuers {
        let m = super::entra::IssMatch::from_config(ic);
        if let Some(tenant) = m.tenant_in(iss) {
            return format!(
                "token iss {} is issuer {:?}'s, but tenant {tenant} is not in its tenants",
                shown_iss(iss),
                ic.name
            );
        }
    }
    let mut s = format!("token iss {} is not a configured issuer", shown_iss(iss));
    if let Some(ic) = did_you_mean(iss, issuers.iter().copied()) {
        let _ = write!(
            s,
            "; did you mean issuer {:?} ({:?})? iss must match exactly: trailing slash and case \
             count",
            ic.name,
            ic.issuer.as_str()
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn issuers() -> Config {
        Config::from_toml(
            r#"
[[issuer]]
name = "kc"
issuer = "https://kc.example.com/realms/corp"
audiences = ["a"]
[[issuer]]
name = "auth0"
issuer = "https://tenant.eu.auth0.com/"
audiences = ["a"]
[[issuer]]
name = "entra"
issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
jwks_uri = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
audiences = ["a"]
"#,
            "t",
        )
        .unwrap()
    }

    #[test]
    fn iss_is_escaped_and_capped() {
        assert_eq!(shown_iss("https://x"), "\"https://x\"");
        assert_eq!(
            shown_iss("a\"b\\c\nd\u{202e}e\u{7f}"),
            "\"a\\\"b\\\\c\\u{a}d\\u{202e}e\\u{7f}\""
        );
        let long = "é".repeat(SHOWN_ISS_CHARS + 50);
        let shown = shown_iss(&long);
        assert!(shown.ends_with("\"..."), "{shown}");
        assert_eq!(shown.chars().filter(|&c| c == 'é').count(), SHOWN_ISS_CHARS);
        assert!(!shown.chars().any(|c| c.is_control()));
    }

    #[test]
    fn near_misses_are_named() {
        let cfg = issuers();
        let near = |iss: &str| did_you_mean(iss, &cfg.issuers).map(|i| i.name.as_str());
        assert_eq!(near("https://kc.example.com/realms/corp/"), Some("kc"));
        assert_eq!(near("https://KC.example.com/realms/Corp"), Some("kc"));
        assert_eq!(near("https://tenant.eu.auth0.com"), Some("auth0"));
        assert_eq!(
            near("https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0/"),
            Some("entra")
        );
        assert_eq!(near("https://kc.example.com/realms/other"), None);
        assert_eq!(near("https://evil.example.com"), None);
        assert_eq!(near("https://login.microsoftonline.com/common/v2.0"), None);
        assert_eq!(near(""), None);
    }

    #[test]
    fn the_sentence() {
        let cfg = issuers();
        let cfg: Vec<&IssuerConfig> = cfg.issuers.iter().collect();
        let s = explain("https://kc.example.com/realms/corp/", &cfg);
        assert_eq!(
            s,
            "token iss \"https://kc.example.com/realms/corp/\" is not a configured issuer; did \
             you mean issuer \"kc\" (\"https://kc.example.com/realms/corp\")? iss must match \
             exactly: trailing slash and case count"
        );
        let s = explain("https://evil\r\nx", &cfg);
        assert_eq!(
            s,
            "token iss \"https://evil\\u{d}\\u{a}x\" is not a configured issuer"
        );
        let s = explain(
            "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0",
            &cfg,
        );
        assert!(
            s.ends_with("is issuer \"entra\"'s, but tenant 9188040d-6c67-4c5b-b112-36a304b66dad is not in its tenants"),
            "{s}"
        );
    }
}
