//! An `[[issuer]]`'s `issuer` value: which `iss` values it accepts, and whether its keys can
//! be discovered.
//!
//! Three forms (docs/idp/README.md):
//!
//! | form | example | accepts | keys |
//! |---|---|---|---|
//! | URL | `https://idp.example.com/realms/x` | exactly that `iss` | `jwks_uri`, or discovery at the URL |
//! | bare host name | `accounts.google.com` | exactly that `iss` | `jwks_uri` (required) |
//! | tenant template | `https://login.microsoftonline.com/{tenantid}/v2.0` | the template with the token's `tid` (a GUID) substituted, optionally only `tenants` | `jwks_uri` (required) |
//!
//! A bare host name is what Google puts in some ID tokens (`iss` is documented as either
//! `https://accounts.google.com` or `accounts.google.com`). It is taken as an exact `iss`
//! value only: there is no scheme to discover keys with, so `jwks_uri` (which must still be
//! https) is required rather than guessing `https://` in front of it. The same holds for a
//! template: Microsoft's multi-tenant discovery document names no usable key URL of its own for
//! the template, so its keys come from the configured `jwks_uri` (the `common` endpoint's).

use std::fmt;
use std::str::FromStr;

use super::value::{check_url, string_value};

/// The placeholder of a multi-tenant issuer, as Microsoft's `common` discovery document writes
/// it.
pub const TENANT_PLACEHOLDER: &str = "{tenantid}";

/// A GUID standing in for the tenant when a template is checked.
const SAMPLE_TENANT: &str = "00000000-0000-0000-0000-000000000000";

/// What an `issuer` value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerKind {
    /// An `https://` (or loopback `http://`) URL: an exact `iss`, discoverable.
    Url,
    /// A scheme-less host name (`accounts.google.com`): an exact `iss`; `jwks_uri` required.
    BareHost,
    /// A URL with [`TENANT_PLACEHOLDER`] as one path segment; `jwks_uri` required.
    Template {
        /// Byte offset of the placeholder in the text.
        at: usize,
    },
}

/// The `issuer` of an `[[issuer]]`, as configured.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerId {
    text: Box<str>,
    kind: IssuerKind,
}

impl IssuerId {
    /// The value exactly as configured (for a template, with the placeholder).
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn kind(&self) -> &IssuerKind {
        &self.kind
    }

    /// A template's text before and after [`TENANT_PLACEHOLDER`].
    pub fn template_parts(&self) -> Option<(&str, &str)> {
        match self.kind {
            IssuerKind::Template { at } => Some((
                &self.text[..at],
                &self.text[at + TENANT_PLACEHOLDER.len()..],
            )),
            _ => None,
        }
    }

    /// Whether the keys can be found by OIDC discovery at this value (a plain URL).
    pub fn discoverable(&self) -> bool {
        self.kind == IssuerKind::Url
    }
}

/// A DNS host name with at least two labels: letters, digits and `-`, no port, no path.
fn is_bare_host(s: &str) -> bool {
    let labels: Vec<&str> = s.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
}

impl FromStr for IssuerId {
    type Err = String;

    fn from_str(s: &str) -> Result<IssuerId, String> {
        let id = |kind| {
            Ok(IssuerId {
                text: s.into(),
                kind,
            })
        };
        if let Some(at) = s.find(TENANT_PLACEHOLDER) {
            let rest = &s[at + TENANT_PLACEHOLDER.len()..];
            if rest.contains(TENANT_PLACEHOLDER) {
                return Err(format!("{s:?}: {TENANT_PLACEHOLDER} may appear only once"));
            }
            let sample = format!("{}{SAMPLE_TENANT}{rest}", &s[..at]);
            let url = check_url(&sample).map_err(|e| format!("{s:?}: {e}"))?;
            let whole_segment =
                s[..at].ends_with('/') && (rest.is_empty() || rest.starts_with('/'));
            if !whole_segment || !url.path().contains(SAMPLE_TENANT) || url.query().is_some() {
                return Err(format!(
                    "{s:?}: {TENANT_PLACEHOLDER} must be a whole path segment, as in \
                     \"https://login.microsoftonline.com/{TENANT_PLACEHOLDER}/v2.0\""
                ));
            }
            if sample.contains(['{', '}']) {
                return Err(format!(
                    "{s:?}: the only placeholder supported is {TENANT_PLACEHOLDER}"
                ));
            }
            return id(IssuerKind::Template { at });
        }
        if s.contains(['{', '}']) {
            return Err(format!(
                "{s:?}: the only placeholder supported is {TENANT_PLACEHOLDER} (lowercase), as \
                 in \"https://login.microsoftonline.com/{TENANT_PLACEHOLDER}/v2.0\""
            ));
        }
        if !s.contains("://") && is_bare_host(s) {
            return id(IssuerKind::BareHost);
        }
        check_url(s)?;
        id(IssuerKind::Url)
    }
}
string_value!(
    IssuerId,
    "an https:// URL, a bare host name such as \"accounts.google.com\", or a URL with {tenantid}"
);

impl fmt::Display for IssuerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for IssuerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.text)
    }
}

/// A `tenants` entry: a GUID (Entra ID tenant id), stored lowercase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantId(Box<str>);

impl TenantId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `8-4-4-4-12` hexadecimal digits, either case (how Entra ID writes `tid`: lowercase).
pub fn is_guid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl FromStr for TenantId {
    type Err = String;

    fn from_str(s: &str) -> Result<TenantId, String> {
        if !is_guid(s) {
            return Err(format!(
                "{s:?} is not a tenant id (a GUID such as \
                 \"72f988bf-86f1-41af-91ab-2d7cd011db47\"; tenant names and \"common\" are not \
                 accepted: tokens carry the GUID in tid)"
            ));
        }
        Ok(TenantId(s.to_ascii_lowercase().into()))
    }
}
string_value!(TenantId, "a tenant id (GUID)");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let kind = |s: &str| s.parse::<IssuerId>().map(|i| i.kind().clone());
        assert_eq!(
            kind("https://idp.example.com/realms/x"),
            Ok(IssuerKind::Url)
        );
        assert_eq!(kind("http://127.0.0.1:8080"), Ok(IssuerKind::Url));
        assert_eq!(kind("accounts.google.com"), Ok(IssuerKind::BareHost));
        let t: IssuerId = "https://login.microsoftonline.com/{tenantid}/v2.0"
            .parse()
            .unwrap();
        assert_eq!(
            t.template_parts(),
            Some(("https://login.microsoftonline.com/", "/v2.0"))
        );
        assert!(!t.discoverable());
        let v1: IssuerId = "https://sts.windows.net/{tenantid}/".parse().unwrap();
        assert_eq!(v1.template_parts(), Some(("https://sts.windows.net/", "/")));
        assert!("https://idp.example.com"
            .parse::<IssuerId>()
            .unwrap()
            .discoverable());
        assert!(!"accounts.google.com"
            .parse::<IssuerId>()
            .unwrap()
            .discoverable());
    }

    #[test]
    fn refused_with_a_reason() {
        let err = |s: &str| s.parse::<IssuerId>().unwrap_err();
        assert!(err("http://idp.example.com").contains("loopback"));
        assert!(
            err("localhost").contains("invalid URL"),
            "{}",
            err("localhost")
        );
        assert!("accounts.google.com:443".parse::<IssuerId>().is_err());
        assert!(err("accounts.google.com/x").contains("invalid URL"));
        assert!(err("1.2.3.4").contains("invalid URL"));
        assert!(err("https://login.microsoftonline.com/{tenant}/v2.0").contains("{tenantid}"));
        assert!(err("https://login.microsoftonline.com/{TenantId}/v2.0").contains("lowercase"));
        assert!(err("https://{tenantid}.example.com/").contains("whole path segment"));
        assert!(err("https://x.example.com/t-{tenantid}/").contains("whole path segment"));
        assert!(err("https://x.example.com/{tenantid}/{tenantid}").contains("only once"));
        assert!(err("http://x.example.com/{tenantid}/").contains("loopback"));
    }

    #[test]
    fn tenants_are_guids() {
        let t: TenantId = "72F988BF-86F1-41AF-91AB-2D7CD011DB47".parse().unwrap();
        assert_eq!(t.as_str(), "72f988bf-86f1-41af-91ab-2d7cd011db47");
        for bad in [
            "common",
            "contoso.onmicrosoft.com",
            "",
            "72f988bf86f141af91ab2d7cd011db47",
        ] {
            assert!(
                bad.parse::<TenantId>().unwrap_err().contains("GUID"),
                "{bad}"
            );
        }
        assert!(is_guid("9188040d-6c67-4c5b-b112-36a304b66dad"));
        assert!(!is_guid("9188040d-6c67-4c5b-b112-36a304b66daz"));
    }
}
