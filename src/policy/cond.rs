//! Compiled rule conditions. Everything is prepared at load (sorted lists, lowercased hosts,
//! parsed networks, split claim paths) so that matching one request neither allocates nor
//! parses.

use std::cmp::Ordering;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::claim_path::{ClaimPath, ClaimPathError};
use crate::config::OneOrMany;
use crate::decision::Identity;

/// Longest static principal accepted: it becomes a header value upstream.
pub(crate) const MAX_STATIC_PRINCIPAL: usize = 256;

/// Compare two strings byte-wise with ASCII case folded, so a sorted list of lowercased entries
/// can be binary-searched with a mixed-case needle without lowercasing (allocating) it.
fn cmp_ignore_ascii_case(a: &str, b: &str) -> Ordering {
    let a = a.bytes().map(|c| c.to_ascii_lowercase());
    let b = b.bytes().map(|c| c.to_ascii_lowercase());
    a.cmp(b)
}

fn ends_with_ignore_ascii_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

/// A sorted, deduplicated, case-sensitive set of strings.
#[derive(Debug, Clone)]
pub(crate) struct StrSet(Box<[Box<str>]>);

impl StrSet {
    pub(crate) fn new(items: &[String]) -> StrSet {
        let mut v: Vec<Box<str>> = items.iter().map(|s| s.as_str().into()).collect();
        v.sort();
        v.dedup();
        StrSet(v.into_boxed_slice())
    }

    pub(crate) fn contains(&self, s: &str) -> bool {
        self.0.binary_search_by(|p| (**p).cmp(s)).is_ok()
    }

    pub(crate) fn contains_any<'a>(&self, mut it: impl Iterator<Item = &'a str>) -> bool {
        it.any(|s| self.contains(s))
    }
}

/// A sorted, deduplicated set compared with ASCII case folded (emails).
#[derive(Debug, Clone)]
pub(crate) struct CiSet(Box<[Box<str>]>);

impl CiSet {
    pub(crate) fn new(items: &[String]) -> CiSet {
        let mut v: Vec<Box<str>> = items
            .iter()
            .map(|s| s.to_ascii_lowercase().into())
            .collect();
        v.sort();
        v.dedup();
        CiSet(v.into_boxed_slice())
    }

    pub(crate) fn contains(&self, s: &str) -> bool {
        self.0
            .binary_search_by(|p| cmp_ignore_ascii_case(p, s))
            .is_ok()
    }
}

/// Domain names: exact entries and `*.suffix` wildcards, ASCII case-insensitive. Used for
/// `hosts` and `email_domains`.
#[derive(Debug, Clone)]
pub(crate) struct DomainSet {
    exact: CiSet,
    /// Stored with the leading dot (`.example.com`), so `a.example.com` and
    /// `a.b.example.com` match but `example.com` and `badexample.com` do not.
    suffixes: Box<[Box<str>]>,
}

impl DomainSet {
    /// Entries must already be validated by [`check_domain`].
    pub(crate) fn new(items: &[String]) -> DomainSet {
        let mut exact = Vec::new();
        let mut suffixes = Vec::new();
        for it in items {
            let it = it.strip_suffix('.').unwrap_or(it);
            match it.strip_prefix('*') {
                Some(rest) => suffixes.push(rest.to_ascii_lowercase().into_boxed_str()),
                None => exact.push(it.to_string()),
            }
        }
        DomainSet {
            exact: CiSet::new(&exact),
            suffixes: suffixes.into_boxed_slice(),
        }
    }

    pub(crate) fn matches(&self, name: &str) -> bool {
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return false;
        }
        self.exact.contains(name)
            || self
                .suffixes
                .iter()
                .any(|s| name.len() > s.len() && ends_with_ignore_ascii_case(name, s))
    }
}

/// Validate one `hosts` / `email_domains` entry: DNS-ish labels (letters, digits, `-`, `_`),
/// an optional leading `*.`, or (hosts only) a bracketed IPv6 literal. No port: the request's
/// port is stripped before matching, so a pattern with a port could never match.
pub(crate) fn check_domain(s: &str, allow_ipv6: bool) -> Result<(), String> {
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

/// The host part of a `Host` header value: the port is removed (`h:8443`, `[::1]:8443`).
pub(crate) fn host_without_port(h: &str) -> &str {
    if h.starts_with('[') {
        return match h.find(']') {
            Some(i) => &h[..=i],
            None => h,
        };
    }
    match h.rfind(':') {
        // One colon followed by digits (or nothing): a port. More colons: not a valid Host
        // header; leave it whole so it matches nothing.
        Some(i) if !h[..i].contains(':') && h[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            &h[..i]
        }
        _ => h,
    }
}

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Validate a method token. Any RFC 9110 token is accepted (WebDAV and other extension
/// methods exist), but lowercase letters are refused: methods are case-sensitive and every
/// registered method is uppercase, so `get` is a typo that would never match.
pub(crate) fn check_method(m: &str) -> Result<(), String> {
    if m.is_empty() {
        return Err("empty method".into());
    }
    if !m.bytes().all(is_tchar) {
        return Err(format!("{m:?} is not a valid HTTP method token"));
    }
    if m.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "{m:?}: methods are case-sensitive; write {:?}",
            m.to_ascii_uppercase()
        ));
    }
    Ok(())
}

/// Parse a `sources` entry: a CIDR with no host bits set, or a bare address.
pub(crate) fn parse_source(s: &str) -> Result<IpNet, String> {
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
        Ok(net)
    } else {
        let a: IpAddr = s
            .parse()
            .map_err(|_| format!("{s:?} is not a valid IP address or CIDR"))?;
        Ok(IpNet::from(a))
    }
}

/// Does `src` fall in any of `nets`? An IPv4-mapped IPv6 source (`::ffff:10.1.2.3`, seen when
/// HAProxy listens on a dual-stack socket) is also tried as IPv4.
pub(crate) fn source_matches(nets: &[IpNet], src: IpAddr) -> bool {
    let mapped = match src {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4),
        IpAddr::V4(_) => None,
    };
    nets.iter()
        .any(|n| n.contains(&src) || mapped.is_some_and(|m| n.contains(&m)))
}

/// One accepted claim value. Comparison is by type: the string `"true"` does not match the
/// boolean `true`, and `"5"` does not match the number `5`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ClaimValue {
    Str(Box<str>),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl ClaimValue {
    fn from_toml(v: &toml::Value) -> Result<ClaimValue, String> {
        Ok(match v {
            toml::Value::String(s) => ClaimValue::Str(s.as_str().into()),
            toml::Value::Integer(i) => ClaimValue::Int(*i),
            toml::Value::Float(f) if f.is_finite() => ClaimValue::Float(*f),
            toml::Value::Float(_) => return Err("NaN and infinities cannot match".into()),
            toml::Value::Boolean(b) => ClaimValue::Bool(*b),
            other => {
                return Err(format!(
                    "unsupported value type {:?}: use strings, numbers or booleans",
                    other.type_str()
                ))
            }
        })
    }

    fn matches(&self, v: &Value) -> bool {
        match (self, v) {
            (ClaimValue::Str(s), Value::String(v)) => **s == **v,
            (ClaimValue::Bool(b), Value::Bool(v)) => b == v,
            (ClaimValue::Int(i), Value::Number(n)) => {
                n.as_i64() == Some(*i) || (n.is_f64() && n.as_f64() == Some(*i as f64))
            }
            (ClaimValue::Float(f), Value::Number(n)) => n.as_f64() == Some(*f),
            _ => false,
        }
    }
}

/// A rule's claim path (`claims` key, `principal = "claim:<path>"`): a [`ClaimPath`] without
/// control characters. (The issuers' `email_claim` / `groups_claim` are not checked for them.)
fn parse_claim_path(p: &str) -> Result<ClaimPath, String> {
    if p.chars().any(char::is_control) {
        return Err(format!("{p:?} contains a control character"));
    }
    ClaimPath::parse(p).map_err(|e| match e {
        ClaimPathError::Empty => e.to_string(),
        ClaimPathError::EmptySegment => format!("{p:?}: {e}"),
    })
}

/// `claims."path" = value | [values]`: the claim (or, when it is an array, any element of it)
/// must equal one of the values.
#[derive(Debug, Clone)]
pub(crate) struct ClaimCond {
    path: ClaimPath,
    values: Box<[ClaimValue]>,
}

impl ClaimCond {
    pub(crate) fn compile(path: &str, values: &OneOrMany) -> Result<ClaimCond, String> {
        let path = parse_claim_path(path)?;
        let raw: &[toml::Value] = match values {
            OneOrMany::One(toml::Value::Array(a)) => a,
            OneOrMany::One(v) => std::slice::from_ref(v),
            OneOrMany::Many(a) => a,
        };
        if raw.is_empty() {
            return Err("empty list of accepted values: the condition could never match".into());
        }
        let values = raw
            .iter()
            .map(ClaimValue::from_toml)
            .collect::<Result<Box<[_]>, _>>()?;
        Ok(ClaimCond { path, values })
    }

    pub(crate) fn matches(&self, id: &Identity) -> bool {
        let Some(v) = id.claim(&self.path) else {
            return false;
        };
        match v {
            Value::Array(items) => items
                .iter()
                .any(|it| self.values.iter().any(|cv| cv.matches(it))),
            v => self.values.iter().any(|cv| cv.matches(v)),
        }
    }
}

/// Who the upstream sees as the caller (the `principal` variable).
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// No `principal` key: the email when present, else `sub` (none for public rules).
    Default,
    Email,
    Sub,
    Claim(ClaimPath),
    Static(Box<str>),
}

impl Principal {
    pub(crate) fn parse(s: &str) -> Result<Principal, String> {
        match s {
            "email" => Ok(Principal::Email),
            "sub" => Ok(Principal::Sub),
            _ => {
                if let Some(p) = s.strip_prefix("claim:") {
                    return parse_claim_path(p).map(Principal::Claim);
                }
                if let Some(v) = s.strip_prefix("static:") {
                    if v.is_empty() {
                        return Err("\"static:\" needs a value".into());
                    }
                    match crate::auth::identity_problem(v) {
                        None => {}
                        Some(crate::auth::Unsafe::Control) => {
                            return Err("static principal contains a control character".into())
                        }
                        Some(crate::auth::Unsafe::Invisible) => {
                            return Err("static principal contains an invisible or bidirectional formatting character".into())
                        }
                    }
                    if v.len() > MAX_STATIC_PRINCIPAL {
                        return Err(format!(
                            "static principal longer than {MAX_STATIC_PRINCIPAL} bytes"
                        ));
                    }
                    return Ok(Principal::Static(v.into()));
                }
                Err(format!(
                    "{s:?}: expected \"email\", \"sub\", \"claim:<path>\" or \"static:<value>\""
                ))
            }
        }
    }

    /// Whether [`Principal::resolve`] would produce a value, checked without allocating.
    pub(crate) fn available(&self, id: &Identity) -> bool {
        match self {
            Principal::Default => {
                id.email.as_deref().is_some_and(|e| !e.is_empty()) || !id.sub.is_empty()
            }
            Principal::Email => id.email.as_deref().is_some_and(|e| !e.is_empty()),
            Principal::Sub => !id.sub.is_empty(),
            Principal::Claim(p) => id.claim(p).is_some_and(scalar_str_nonempty),
            Principal::Static(_) => true,
        }
    }

    pub(crate) fn resolve(&self, id: Option<&Identity>, public: bool) -> Option<String> {
        if let Principal::Static(v) = self {
            return Some(v.to_string());
        }
        if public {
            return None;
        }
        let id = id?;
        match self {
            Principal::Default => id
                .email
                .as_deref()
                .filter(|e| !e.is_empty())
                .or(Some(id.sub.as_str()).filter(|s| !s.is_empty()))
                .map(str::to_string),
            Principal::Email => id.email.clone().filter(|e| !e.is_empty()),
            Principal::Sub => Some(id.sub.clone()).filter(|s| !s.is_empty()),
            Principal::Claim(p) => id.claim(p).and_then(scalar_to_string),
            Principal::Static(_) => unreachable!("handled above"),
        }
    }
}

fn scalar_str_nonempty(v: &Value) -> bool {
    match v {
        Value::String(s) => !s.is_empty(),
        Value::Number(_) | Value::Bool(_) => true,
        _ => false,
    }
}

/// A claim used as principal: strings as they are, numbers and booleans in their JSON
/// spelling; arrays, objects and null are not names.
fn scalar_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_compare_orders_like_lowercase() {
        assert_eq!(cmp_ignore_ascii_case("ABC", "abd"), Ordering::Less);
        assert_eq!(cmp_ignore_ascii_case("abc", "ABC"), Ordering::Equal);
        assert_eq!(cmp_ignore_ascii_case("ab", "ABC"), Ordering::Less);
        let s = CiSet::new(&[
            "Zed@X.com".into(),
            "alice@example.com".into(),
            "bob@b.io".into(),
        ]);
        assert!(s.contains("ALICE@Example.com"));
        assert!(s.contains("zed@x.com"));
        assert!(!s.contains("alice@example.co"));
    }

    #[test]
    fn host_port_stripping() {
        assert_eq!(host_without_port("a.example.com:8443"), "a.example.com");
        assert_eq!(host_without_port("a.example.com:"), "a.example.com");
        assert_eq!(host_without_port("a.example.com"), "a.example.com");
        assert_eq!(host_without_port("[::1]:8443"), "[::1]");
        assert_eq!(host_without_port("[::1]"), "[::1]");
        assert_eq!(host_without_port("::1"), "::1");
        assert_eq!(host_without_port("h:abc"), "h:abc");
    }

    #[test]
    fn domain_set() {
        let d = DomainSet::new(&["Dbc.Example.com".into(), "*.corp.example.".into()]);
        assert!(d.matches("dbc.example.com"));
        assert!(d.matches("DBC.EXAMPLE.COM."));
        assert!(!d.matches("x.dbc.example.com"));
        assert!(d.matches("a.corp.example"));
        assert!(d.matches("a.b.CORP.example"));
        assert!(!d.matches("corp.example"));
        assert!(!d.matches("evilcorp.example"));
        assert!(!d.matches(""));
    }

    #[test]
    fn domain_checks() {
        assert!(check_domain("a.example.com", true).is_ok());
        assert!(check_domain("*.example.com", true).is_ok());
        assert!(check_domain("[::1]", true).is_ok());
        assert!(check_domain("[::1]", false).is_err());
        assert!(check_domain("a.example.com:443", true)
            .unwrap_err()
            .contains("port"));
        assert!(check_domain("a.*.com", true)
            .unwrap_err()
            .contains("wildcard"));
        assert!(check_domain("*", true).unwrap_err().contains("wildcard"));
        assert!(check_domain("a..com", true).is_err());
        assert!(check_domain("a b.com", true).is_err());
        assert!(check_domain("", true).is_err());
    }

    #[test]
    fn methods() {
        assert!(check_method("GET").is_ok());
        assert!(check_method("PROPFIND").is_ok());
        assert!(check_method("M-SEARCH").is_ok());
        assert!(check_method("get").unwrap_err().contains("\"GET\""));
        assert!(check_method("GE T").is_err());
        assert!(check_method("").is_err());
    }

    #[test]
    fn sources() {
        let nets: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
            .iter()
            .map(|s| parse_source(s).unwrap())
            .collect();
        assert!(source_matches(&nets, "10.9.8.7".parse().unwrap()));
        assert!(source_matches(&nets, "192.0.2.7".parse().unwrap()));
        assert!(!source_matches(&nets, "192.0.2.8".parse().unwrap()));
        assert!(source_matches(&nets, "2001:db8::1".parse().unwrap()));
        assert!(source_matches(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!source_matches(&nets, "::ffff:11.1.2.3".parse().unwrap()));
        assert!(parse_source("10.1.0.0/8")
            .unwrap_err()
            .contains("10.0.0.0/8"));
        assert!(parse_source("10.0.0.0/33").is_err());
        assert!(parse_source("nope").is_err());
    }

    #[test]
    fn claim_values_compare_by_type() {
        let n = |s: &str| serde_json::from_str::<Value>(s).unwrap();
        assert!(ClaimValue::Int(5).matches(&n("5")));
        assert!(ClaimValue::Int(5).matches(&n("5.0")));
        assert!(!ClaimValue::Int(5).matches(&n("\"5\"")));
        assert!(ClaimValue::Float(1.5).matches(&n("1.5")));
        assert!(ClaimValue::Bool(true).matches(&n("true")));
        assert!(!ClaimValue::Bool(true).matches(&n("\"true\"")));
        assert!(!ClaimValue::Str("true".into()).matches(&n("true")));
        assert!(ClaimValue::Str("a".into()).matches(&n("\"a\"")));
        assert!(!ClaimValue::Str("a".into()).matches(&n("\"A\"")));
        assert!(!ClaimValue::Str("a".into()).matches(&n("null")));
    }

    /// Rule `claims` conditions and `claim:` principals find claims like every other reader
    /// (`claim_path::lookup_cases`): a whole-name top-level claim first, then the dotted path.
    #[test]
    fn rules_read_claims_by_the_shared_table() {
        use std::sync::Arc;
        for (claims, path, want) in crate::claim_path::lookup_cases() {
            let id = Identity {
                issuer: Arc::from("i"),
                sub: "s".into(),
                email: None,
                groups: Vec::new(),
                scopes: Vec::new(),
                expires_at: 0,
                claims: claims.as_object().unwrap().clone(),
            };
            let cond = |v: toml::Value| {
                ClaimCond::compile(path, &OneOrMany::One(v))
                    .unwrap()
                    .matches(&id)
            };
            let principal = Principal::parse(&format!("claim:{path}")).unwrap();
            let resolved = principal.resolve(Some(&id), false);
            assert_eq!(principal.available(&id), resolved.is_some(), "{path}");
            match want {
                None => {
                    assert!(!cond("x".into()) && !cond(7.into()), "{path} in {claims}");
                    assert_eq!(resolved, None);
                }
                Some(Value::String(s)) => {
                    assert!(cond(s.as_str().into()), "{path} in {claims}");
                    assert_eq!(resolved.as_deref(), Some(s.as_str()));
                }
                Some(Value::Number(n)) => {
                    assert!(cond(n.as_i64().unwrap().into()), "{path} in {claims}");
                    assert_eq!(resolved, Some(n.to_string()));
                }
                Some(Value::Array(items)) => {
                    for it in items {
                        assert!(cond(it.as_str().unwrap().into()), "{path} in {claims}");
                    }
                    assert_eq!(resolved, None, "an array is not a principal");
                }
                Some(other) => {
                    assert!(!cond("x".into()), "{path} in {claims}");
                    assert_eq!(resolved, None, "{other} is not a principal");
                }
            }
        }
    }

    #[test]
    fn principal_syntax() {
        assert!(matches!(Principal::parse("email"), Ok(Principal::Email)));
        assert!(matches!(Principal::parse("sub"), Ok(Principal::Sub)));
        assert!(matches!(
            Principal::parse("claim:a.b"),
            Ok(Principal::Claim(_))
        ));
        assert!(matches!(
            Principal::parse("static:svc"),
            Ok(Principal::Static(_))
        ));
        for bad in [
            "",
            "Email",
            "claim:",
            "claim:a..b",
            "static:",
            "static:a\nb",
            "user",
        ] {
            assert!(Principal::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("static:{}", "x".repeat(MAX_STATIC_PRINCIPAL + 1));
        assert!(Principal::parse(&long).is_err());
    }
}
