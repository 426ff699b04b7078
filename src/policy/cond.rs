//! Compiled rule conditions, built from the values the configuration checked and parsed
//! ([`crate::config::RuleConfig`]). Everything is prepared at load (sorted lists, lowercased
//! hosts) so that matching one request neither allocates nor parses.

use std::cmp::Ordering;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::claim_path::ClaimPath;
use crate::config::{self, ClaimValue};
use crate::decision::Identity;

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
    pub(crate) fn new<'a>(items: impl IntoIterator<Item = &'a str>) -> StrSet {
        let mut v: Vec<Box<str>> = items.into_iter().map(Box::from).collect();
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
    pub(crate) fn new<'a>(items: impl IntoIterator<Item = &'a str>) -> CiSet {
        let mut v: Vec<Box<str>> = items
            .into_iter()
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
    /// Entries are checked by the configuration ([`crate::config::HostPattern`],
    /// [`crate::config::EmailDomain`]).
    pub(crate) fn new<'a>(items: impl IntoIterator<Item = &'a str>) -> DomainSet {
        let mut exact = Vec::new();
        let mut suffixes = Vec::new();
        for it in items {
            let it = it.strip_suffix('.').unwrap_or(it);
            match it.strip_prefix('*') {
                Some(rest) => suffixes.push(rest.to_ascii_lowercase().into_boxed_str()),
                None => exact.push(it),
            }
        }
        DomainSet {
            exact: CiSet::new(exact),
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

/// Does the claim value `v` equal `cv`? By type: the string `"true"` does not match the
/// boolean `true`, and `"5"` does not match the number `5`; `5` matches `5.0`.
fn value_matches(cv: &ClaimValue, v: &Value) -> bool {
    match (cv, v) {
        (ClaimValue::Str(s), Value::String(v)) => **s == **v,
        (ClaimValue::Bool(b), Value::Bool(v)) => b == v,
        (ClaimValue::Int(i), Value::Number(n)) => {
            n.as_i64() == Some(*i) || (n.is_f64() && n.as_f64() == Some(*i as f64))
        }
        (ClaimValue::Float(f), Value::Number(n)) => n.as_f64() == Some(*f),
        _ => false,
    }
}

/// `claims."path" = value | [values]`: the claim (or, when it is an array, any element of it)
/// must equal one of the values.
#[derive(Debug, Clone)]
pub(crate) struct ClaimCond {
    path: ClaimPath,
    values: Box<[ClaimValue]>,
}

impl ClaimCond {
    pub(crate) fn new(path: &ClaimPath, values: &[ClaimValue]) -> ClaimCond {
        ClaimCond {
            path: path.clone(),
            values: values.into(),
        }
    }

    pub(crate) fn matches(&self, id: &Identity) -> bool {
        let Some(v) = id.claim(&self.path) else {
            return false;
        };
        match v {
            Value::Array(items) => items
                .iter()
                .any(|it| self.values.iter().any(|cv| value_matches(cv, it))),
            v => self.values.iter().any(|cv| value_matches(cv, v)),
        }
    }
}

/// `claims_match."path" = pattern | [patterns]`: the claim, a string (or, when it is an array,
/// any string element of it), must match one of the glob patterns ([`config::ClaimGlob`]).
/// Other claim types never match.
#[derive(Debug, Clone)]
pub(crate) struct ClaimMatchCond {
    path: ClaimPath,
    patterns: Box<[config::ClaimGlob]>,
}

impl ClaimMatchCond {
    pub(crate) fn new(path: &ClaimPath, patterns: &[config::ClaimGlob]) -> ClaimMatchCond {
        ClaimMatchCond {
            path: path.clone(),
            patterns: patterns.into(),
        }
    }

    pub(crate) fn matches(&self, id: &Identity) -> bool {
        let fits = |v: &Value| {
            v.as_str()
                .is_some_and(|s| self.patterns.iter().any(|p| p.matches(s)))
        };
        match id.claim(&self.path) {
            Some(Value::Array(items)) => items.iter().any(fits),
            Some(v) => fits(v),
            None => false,
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
    /// The rule's `principal` key (absent: [`Principal::Default`]).
    pub(crate) fn new(p: Option<&config::Principal>) -> Principal {
        match p {
            None => Principal::Default,
            Some(config::Principal::Email) => Principal::Email,
            Some(config::Principal::Sub) => Principal::Sub,
            Some(config::Principal::Claim(c)) => Principal::Claim(c.clone()),
            Some(config::Principal::Static(v)) => Principal::Static(v.clone()),
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
        let s = CiSet::new(["Zed@X.com", "alice@example.com", "bob@b.io"]);
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
        let d = DomainSet::new(["Dbc.Example.com", "*.corp.example."]);
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
    fn sources() {
        let nets: Vec<IpNet> = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]
            .iter()
            .map(|s| s.parse::<config::Cidr>().unwrap().0)
            .collect();
        assert!(source_matches(&nets, "10.9.8.7".parse().unwrap()));
        assert!(source_matches(&nets, "192.0.2.7".parse().unwrap()));
        assert!(!source_matches(&nets, "192.0.2.8".parse().unwrap()));
        assert!(source_matches(&nets, "2001:db8::1".parse().unwrap()));
        assert!(source_matches(&nets, "::ffff:10.1.2.3".parse().unwrap()));
        assert!(!source_matches(&nets, "::ffff:11.1.2.3".parse().unwrap()));
    }

    #[test]
    fn claim_values_compare_by_type() {
        let m = |cv: ClaimValue, s: &str| value_matches(&cv, &serde_json::from_str(s).unwrap());
        assert!(m(ClaimValue::Int(5), "5"));
        assert!(m(ClaimValue::Int(5), "5.0"));
        assert!(!m(ClaimValue::Int(5), "\"5\""));
        assert!(m(ClaimValue::Float(1.5), "1.5"));
        assert!(m(ClaimValue::Bool(true), "true"));
        assert!(!m(ClaimValue::Bool(true), "\"true\""));
        assert!(!m(ClaimValue::Str("true".into()), "true"));
        assert!(m(ClaimValue::Str("a".into()), "\"a\""));
        assert!(!m(ClaimValue::Str("a".into()), "\"A\""));
        assert!(!m(ClaimValue::Str("a".into()), "null"));
    }

    /// Rule conditions and `claim:` principals find claims exactly as the shared table says
    /// (`claim_path::lookup_cases`): a whole-name top-level claim first, then the dotted path.
    #[test]
    fn rules_read_claims_by_the_shared_table() {
        for (claims, path, want) in crate::claim_path::lookup_cases() {
            let id = Identity::with_claims(&claims);
            let cp = ClaimPath::parse(path).unwrap();
            let cond = |v: ClaimValue| ClaimCond::new(&cp, &[v]).matches(&id);
            let principal = Principal::new(Some(&config::Principal::Claim(cp.clone())));
            let resolved = principal.resolve(Some(&id), false);
            assert_eq!(principal.available(&id), resolved.is_some(), "{path}");
            match want {
                None => {
                    assert!(
                        !cond(ClaimValue::Str("x".into())) && !cond(ClaimValue::Int(7)),
                        "{path} in {claims}"
                    );
                    assert_eq!(resolved, None);
                }
                Some(Value::String(s)) => {
                    assert!(
                        cond(ClaimValue::Str(s.as_str().into())),
                        "{path} in {claims}"
                    );
                    assert_eq!(resolved.as_deref(), Some(s.as_str()));
                }
                Some(Value::Number(n)) => {
                    assert!(
                        cond(ClaimValue::Int(n.as_i64().unwrap())),
                        "{path} in {claims}"
                    );
                    assert_eq!(resolved, Some(n.to_string()));
                }
                Some(Value::Array(items)) => {
                    for it in items {
                        assert!(
                            cond(ClaimValue::Str(it.as_str().unwrap().into())),
                            "{path} in {claims}"
                        );
                    }
                    assert_eq!(resolved, None, "an array is not a principal");
                }
                Some(other) => {
                    assert!(!cond(ClaimValue::Str("x".into())), "{path} in {claims}");
                    assert_eq!(resolved, None, "{other} is not a principal");
                }
            }
        }
    }
}
