//! The typed values of `[[rule]]` conditions, each checked when the file is read: methods,
//! hosts, email domains, sources, emails, scopes, claim paths and values, principals.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use super::value::string_value;

/// Longest static principal accepted: it becomes a header value upstream.
pub(crate) const MAX_STATIC_PRINCIPAL: usize = 256;

/// A method token of `methods`, or `*` (any method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Method(Box<str>);

impl Method {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `*`: any method.
    pub fn is_any(&self) -> bool {
        &*self.0 == "*"
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl FromStr for Method {
    type Err = String;

    /// Any RFC 9110 token (WebDAV and other extension methods exist), but lowercase letters
    /// are refused: methods are case-sensitive and every registered method is uppercase, so
    /// `get` is a typo that would never match.
    fn from_str(m: &str) -> Result<Method, String> {
        if m.is_empty() {
            return Err("empty method".into());
        }
        if m != "*" && !m.bytes().all(is_tchar) {
            return Err(format!("{m:?} is not a valid HTTP method token"));
        }
        if m.bytes().any(|b| b.is_ascii_lowercase()) {
            return Err(format!(
                "{m:?}: methods are case-sensitive; write {:?}",
                m.to_ascii_uppercase()
            ));
        }
        Ok(Method(m.into()))
    }
}
string_value!(Method, "an HTTP method such as \"GET\"");

/// Validate a `hosts` / `email_domains` entry: DNS-ish labels (letters, digits, `-`, `_`), an
/// optional leading `*.`, or (hosts only) a bracketed IPv6 literal. No port: the request's
/// port is stripped before matching, so a pattern with a port could never match.
fn check_domain(s: &str, allow_ipv6: bool) -> Result<(), String> {
    if s.is_empty() {
        return Err("empty entry".into());
    }
    if let Some(inner) = s.strip_prefix('[') {
        return match inner.strip_suffix(']') {
            Some(a) if allow_ipv6 && a.parse::<std::net::Ipv6Addr>().is_ok() => Ok(()),
            _ => Err(format!("{s:?} is not a valid bracketed IPv6 address")),
        };
    }
    let body = s.strip_prefix("*.").unwrap_or(s);
    let body = body.strip_suffix('.').unwrap_or(body);
    if body.contains(':') {
        return Err(format!(
            "{s:?}: no port here (the request's port is ignored when matching)"
        ));
    }
    if body.contains('*') {
        return Err(format!(
            "{s:?}: the only wildcard allowed is a leading \"*.\""
        ));
    }
    if body.is_empty()
        || body.split('.').any(|l| {
            l.is_empty()
                || !l
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
    {
        return Err(format!("{s:?} is not a valid domain name"));
    }
    Ok(())
}

/// A `hosts` entry: a host name, `*.suffix`, or a bracketed IPv6 literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern(Box<str>);

impl HostPattern {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<HostPattern, String> {
        check_domain(s, true).map(|()| HostPattern(s.into()))
    }
}
string_value!(HostPattern, "a host name such as \"dbc.example.com\"");

/// An `email_domains` entry: a domain or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailDomain(Box<str>);

impl EmailDomain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for EmailDomain {
    type Err = String;

    fn from_str(d: &str) -> Result<EmailDomain, String> {
        if d.contains('@') {
            return Err(format!("{d:?}: write the domain only, without @"));
        }
        check_domain(d, false).map(|()| EmailDomain(d.into()))
    }
}
string_value!(EmailDomain, "a domain such as \"example.com\"");

/// A `sources` entry: a CIDR without host bits set, or a bare address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        if s.contains('/') {
            let net: IpNet = s
                .parse()
                .map_err(|_| format!("{s:?} is not a valid CIDR"))?;
            if net.trunc() != net {
                return Err(format!(
                    "{s:?} has host bits set; did you mean {:?}?",
                    net.trunc().to_string()
                ));
            }
            Ok(Cidr(net))
        } else {
            let a: IpAddr = s
                .parse()
                .map_err(|_| format!("{s:?} is not a valid IP address or CIDR"))?;
            Ok(Cidr(IpNet::from(a)))
        }
    }
}
string_value!(Cidr, "a CIDR such as \"10.0.0.0/8\"");

/// An `emails` entry: `local@domain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(Box<str>);

impl Email {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Email {
    type Err = String;

    fn from_str(e: &str) -> Result<Email, String> {
        match e.rsplit_once('@') {
            Some((l, d)) if !l.is_empty() && !d.is_empty() => Ok(Email(e.into())),
            _ => Err(format!("{e:?} is not an email address")),
        }
    }
}
string_value!(Email, "an email address");

/// A `scopes` entry: one OAuth scope token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope(Box<str>);

impl Scope {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Scope, String> {
        if s.is_empty() || s.contains(' ') {
            return Err("a scope is one non-empty token without spaces".into());
        }
        Ok(Scope(s.into()))
    }
}
string_value!(Scope, "a scope");

/// A `groups` or `subjects` entry: any non-empty string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonEmpty(Box<str>);

impl NonEmpty {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for NonEmpty {
    type Err = String;

    fn from_str(s: &str) -> Result<NonEmpty, String> {
        if s.is_empty() {
            return Err("empty entry".into());
        }
        Ok(NonEmpty(s.into()))
    }
}
string_value!(NonEmpty, "a string");

/// A claim name or dotted path (`realm_access.roles`): the one type tokens, identities and rules
/// share ([`crate::claim_path`]); read from the configuration through its `FromStr`.
pub use crate::claim_path::ClaimPath;
string_value!(ClaimPath, "a claim name or dotted path");

/// One accepted claim value of a `claims` condition. Compared by type: the string `"true"`
/// does not match the boolean `true`, and `"5"` does not match the number `5`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue {
    Str(Box<str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

fn unsupported<E: de::Error>(what: &str) -> E {
    E::custom(format!(
        "unsupported value type {what:?}: use strings, numbers or booleans"
    ))
}

struct ClaimValueVisitor;

impl<'de> Visitor<'de> for ClaimValueVisitor {
    type Value = ClaimValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ClaimValue, E> {
        Ok(ClaimValue::Str(v.into()))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ClaimValue, E> {
        Ok(ClaimValue::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ClaimValue, E> {
        i64::try_from(v)
            .map(ClaimValue::Int)
            .map_err(|_| E::custom("integer out of range"))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ClaimValue, E> {
        if v.is_finite() {
            Ok(ClaimValue::Float(v))
        } else {
            Err(E::custom("NaN and infinities cannot match"))
        }
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ClaimValue, E> {
        Ok(ClaimValue::Bool(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<ClaimValue, A::Error> {
        Err(unsupported("array"))
    }
    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<ClaimValue, A::Error> {
        Err(unsupported("table"))
    }
}

impl<'de> Deserialize<'de> for ClaimValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ClaimValueVisitor)
    }
}

/// The values of one `claims` entry: one value or a non-empty list of them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ClaimValues(pub Vec<ClaimValue>);

impl<'de> Deserialize<'de> for ClaimValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClaimValues;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, number or boolean, or a list of them")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ClaimValues, E> {
                ClaimValueVisitor.visit_str(v).map(|v| ClaimValues(vec![v]))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ClaimValues, E> {
                ClaimValueVisitor.visit_i64(v).map(|v| ClaimValues(vec![v]))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ClaimValues, E> {
                ClaimValueVisitor.visit_u64(v).map(|v| ClaimValues(vec![v]))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ClaimValues, E> {
                ClaimValueVisitor.visit_f64(v).map(|v| ClaimValues(vec![v]))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ClaimValues, E> {
                ClaimValueVisitor
                    .visit_bool(v)
                    .map(|v| ClaimValues(vec![v]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClaimValues, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element::<ClaimValue>()? {
                    out.push(v);
                }
                if out.is_empty() {
                    return Err(de::Error::custom(
                        "empty list of accepted values: the condition could never match",
                    ));
                }
                Ok(ClaimValues(out))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<ClaimValues, A::Error> {
                Err(unsupported("table"))
            }
        }
        d.deserialize_any(V)
    }
}

/// `principal`: who the upstream sees as the caller. Absent: the email when present, else
/// `sub` (none for public rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Email,
    Sub,
    Claim(ClaimPath),
    Static(Box<str>),
}

impl FromStr for Principal {
    type Err = String;

    fn from_str(s: &str) -> Result<Principal, String> {
        match s {
            "email" => return Ok(Principal::Email),
            "sub" => return Ok(Principal::Sub),
            _ => {}
        }
        if let Some(p) = s.strip_prefix("claim:") {
            return p.parse().map(Principal::Claim);
        }
        let Some(v) = s.strip_prefix("static:") else {
            return Err(format!(
                "{s:?}: expected \"email\", \"sub\", \"claim:<path>\" or \"static:<value>\""
            ));
        };
        if v.is_empty() {
            return Err("\"static:\" needs a value".into());
        }
        match crate::auth::identity_problem(v) {
            None => {}
            Some(crate::auth::Unsafe::Control) => {
                return Err("static principal contains a control character".into())
            }
            Some(crate::auth::Unsafe::Invisible) => {
                return Err(
                    "static principal contains an invisible or bidirectional formatting character"
                        .into(),
                )
            }
        }
        if v.len() > MAX_STATIC_PRINCIPAL {
            return Err(format!(
                "static principal longer than {MAX_STATIC_PRINCIPAL} bytes"
            ));
        }
        Ok(Principal::Static(v.into()))
    }
}
string_value!(
    Principal,
    "\"email\", \"sub\", \"claim:<path>\" or \"static:<value>\""
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_checks() {
        assert!("a.example.com".parse::<HostPattern>().is_ok());
        assert!("*.example.com".parse::<HostPattern>().is_ok());
        assert!("[::1]".parse::<HostPattern>().is_ok());
        assert!("[::1]".parse::<EmailDomain>().is_err());
        let port = "a.example.com:443".parse::<HostPattern>().unwrap_err();
        assert!(port.contains("port"), "{port}");
        let wild = "a.*.com".parse::<HostPattern>().unwrap_err();
        assert!(wild.contains("wildcard"), "{wild}");
        assert!("*".parse::<HostPattern>().unwrap_err().contains("wildcard"));
        assert!("a..com".parse::<HostPattern>().is_err());
        assert!("a b.com".parse::<HostPattern>().is_err());
        assert!("".parse::<HostPattern>().is_err());
        let at = "@example.com".parse::<EmailDomain>().unwrap_err();
        assert!(at.contains("without @"), "{at}");
    }

    #[test]
    fn methods() {
        assert!("GET".parse::<Method>().is_ok());
        assert!("PROPFIND".parse::<Method>().is_ok());
        assert!("M-SEARCH".parse::<Method>().is_ok());
        assert!("*".parse::<Method>().unwrap().is_any());
        assert!("get".parse::<Method>().unwrap_err().contains("\"GET\""));
        assert!("GE T".parse::<Method>().is_err());
        assert!("".parse::<Method>().is_err());
    }

    #[test]
    fn sources() {
        assert!("10.0.0.0/8".parse::<Cidr>().is_ok());
        assert!("192.0.2.7".parse::<Cidr>().is_ok());
        assert!("2001:db8::/32".parse::<Cidr>().is_ok());
        let bits = "10.1.0.0/8".parse::<Cidr>().unwrap_err();
        assert!(bits.contains("10.0.0.0/8"), "{bits}");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
    }

    #[test]
    fn principal_syntax() {
        assert_eq!("email".parse(), Ok(Principal::Email));
        assert_eq!("sub".parse(), Ok(Principal::Sub));
        assert!(matches!(
            "claim:a.b".parse::<Principal>(),
            Ok(Principal::Claim(p)) if p.segments().len() == 2
        ));
        assert_eq!("static:svc".parse(), Ok(Principal::Static("svc".into())));
        for bad in [
            "",
            "Email",
            "claim:",
            "claim:a..b",
            "static:",
            "static:a\nb",
            "user",
        ] {
            assert!(bad.parse::<Principal>().is_err(), "{bad:?}");
        }
        let long = format!("static:{}", "x".repeat(MAX_STATIC_PRINCIPAL + 1));
        assert!(long.parse::<Principal>().is_err());
    }

    #[test]
    fn claim_values() {
        let v = |s: &str| {
            let text = format!("x = {s}");
            let t: toml::Table = toml::from_str(&text).unwrap();
            ClaimValues::deserialize(t["x"].clone()).map_err(|e| e.to_string())
        };
        assert_eq!(v("5"), Ok(ClaimValues(vec![ClaimValue::Int(5)])));
        assert_eq!(
            v("[\"a\", true, 1.5]"),
            Ok(ClaimValues(vec![
                ClaimValue::Str("a".into()),
                ClaimValue::Bool(true),
                ClaimValue::Float(1.5)
            ]))
        );
        assert!(v("[]").unwrap_err().contains("empty list"));
        assert!(v("nan").unwrap_err().contains("NaN"));
        assert!(v("{ a = 1 }")
            .unwrap_err()
            .contains("unsupported value type"));
        assert!(v("[[1]]").unwrap_err().contains("unsupported value type"));
    }
}
