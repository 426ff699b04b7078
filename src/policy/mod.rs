//! What a verified caller may do: first-match rule evaluation, compiled at load.
//!
//! The `[[rule]]` list of a loaded configuration (read and checked by [`crate::config`], which
//! reports every problem with its key path, e.g. `rule[3].paths[0]`) is compiled once into a
//! [`Policy`]. Evaluating a request then walks the compiled rules in file order and stops at
//! the first one whose conditions all hold; matching does no parsing, no regex and no heap
//! allocation.
//!
//! # Evaluation order
//!
//! 1. The engine normalizes the path with [`normalize_path_with`] (`[paths]` options) and
//!    answers `400 bad_request` if it is refused (before any rule, public ones included).
//! 2. [`Policy::match_public`]: rules with `public = true`, in file order, with no token. They
//!    may only use `methods`, `paths`, `hosts` and `sources`, must list `paths`, and cannot
//!    deny.
//! 3. The token is validated; a bad token never reaches step 4.
//! 4. [`Policy::evaluate`]: the other rules, in file order. First match wins: an `allow` rule
//!    gives [`Outcome::Allow`], a `deny` rule [`Outcome::Deny`] (`403 denied_by_rule`). No
//!    match is [`Outcome::NoMatch`] (`403 no_matching_rule`). Put deny rules before the allow
//!    rules they carve exceptions from.
//!
//! # Conditions
//!
//! All conditions are optional; those present are ANDed, and the values listed in one
//! condition are ORed. A rule with no condition matches every request that reaches it.
//!
//! | key | matches when | comparison |
//! |---|---|---|
//! | `methods` | the method is listed; absent or `["*"]`: any | exact (methods are case-sensitive); in allow rules `GET` does not imply `HEAD`, in deny rules it does |
//! | `paths` | one glob matches the normalized path (see [`path`]) | case-sensitive in allow rules, ASCII case-insensitive in deny rules |
//! | `hosts` | the `Host` (port and a trailing dot removed) is listed, or ends with `.suffix` for a `*.suffix` entry | ASCII case-insensitive |
//! | `sources` | `src` is in one CIDR (or equals a bare address); a missing `src` never matches | IPv4-mapped IPv6 also tried as IPv4 |
//! | `groups` | the identity has one of the groups | exact |
//! | `subjects` | `sub` is listed | exact |
//! | `emails` | the email is listed | ASCII case-insensitive |
//! | `email_domains` | the part after the last `@` is listed (or under a `*.suffix`) | ASCII case-insensitive |
//! | `scopes` | the identity has one of the scopes | exact |
//! | `claims` | for every `path = value(s)` entry, the claim (or any element of an array claim) equals one of the values | by type: `"5"` ≠ `5`, `"true"` ≠ `true`; `5` = `5.0` |
//! | `claims_match` | for every `path = pattern(s)` entry, the string claim (or any string element of an array claim) matches one of the glob patterns | `*` never crosses `/`, `**` does; other claim types never match |
//! | `issuers` | the accepting issuer's `name` is listed | exact |
//!
//! Claim paths are dotted (`realm_access.roles`); a top-level claim named with the whole path
//! (`https://example.com/roles`) takes precedence over walking nested objects.
//!
//! # Principal
//!
//! `principal = "email" | "sub" | "claim:<path>" | "static:<value>"` picks what the upstream
//! sees as the caller. Default: the email when present, else `sub`. Public rules have no
//! identity, so they may only use `static:` (or nothing: no principal). An allow rule whose
//! principal cannot be resolved for a caller (e.g. `"email"` and the token has no email)
//! **does not match** that caller, and evaluation moves on: an upstream is never handed an
//! allowed request without the principal the operator asked for. A principal that resolves but
//! cannot be passed on faithfully (a `claim:` value with control or invisible characters, or
//! over 1024 bytes: [`crate::auth::check_principal`]) refuses the request instead (the engine
//! answers `401 claim_invalid` naming the rule); evaluation does not move on, so the caller is
//! never forwarded under another rule's principal.

mod cond;
pub mod path;

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{self, Config, Effect, Method, RuleConfig};
use crate::decision::Identity;

use cond::{CiSet, ClaimCond, ClaimMatchCond, DomainSet, Principal, StrSet};
pub use path::{normalize_path, normalize_path_with, PathError, PathOptions, MAX_PATH_BYTES};
use path::{Case, PathPattern, PathView};

/// The parts of a request the rules look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a str,
    /// Already normalized by [`normalize_path`].
    pub path: &'a str,
    /// The `Host` header as sent (a port is stripped when matching).
    pub host: Option<&'a str>,
    pub src: Option<IpAddr>,
}

/// The result of [`Policy::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome<'a> {
    Allow(&'a Rule),
    Deny(&'a Rule),
    NoMatch,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    pub name: Arc<str>,
    /// Position in the file (`rule[index]`), for logs and `explain`.
    pub index: usize,
    pub effect: Effect,
    /// Name of the `[upstream.*]` credential to inject (allow rules only).
    pub upstream: Option<Arc<str>>,
    pub public: bool,
    /// `payload = "serving"`: check the body of what this rule allows (docs/payload.md).
    pub payload: Option<crate::payload::Settings>,
    cond: Conditions,
    principal: Principal,
}

impl PartialEq for Rule {
    /// Rules are compared by identity within one policy (names are unique).
    fn eq(&self, other: &Self) -> bool {
        self.index == other.index && self.name == other.name
    }
}

impl Rule {
    /// The principal the upstream sees for this caller, per the rule's `principal` setting.
    /// `None` for public rules without a `static:` principal.
    pub fn principal_for(&self, id: Option<&Identity>) -> Option<String> {
        self.principal.resolve(id, self.public)
    }

    /// The request-only conditions (shared by public and identity rules).
    #[inline]
    fn matches_request(&self, req: &Prepared<'_>) -> bool {
        self.check_request(req).is_ok()
    }

    #[inline]
    fn matches_identity(&self, id: &Identity) -> bool {
        self.check_identity(id).is_ok()
    }

    /// The request-only conditions, in order; `Err((condition, conditions passed before))`
    /// names the first that failed (for `explain`).
    fn check_request(&self, req: &Prepared<'_>) -> Result<u32, (&'static str, u32)> {
        let c = &self.cond;
        let mut passed = 0;
        if let Some(ms) = &c.methods {
            if !ms.iter().any(|m| **m == *req.method) {
                return Err(("methods", passed));
            }
            passed += 1;
        }
        if let Some(paths) = &c.paths {
            if !paths.iter().any(|p| p.matches(&req.path)) {
                return Err(("paths", passed));
            }
            passed += 1;
        }
        if let Some(hosts) = &c.hosts {
            if !req.host.is_some_and(|h| hosts.matches(h)) {
                return Err(("hosts", passed));
            }
            passed += 1;
        }
        if let Some(nets) = &c.sources {
            if !req.src.is_some_and(|s| cond::source_matches(nets, s)) {
                return Err(("sources", passed));
            }
            passed += 1;
        }
        Ok(passed)
    }

    /// The identity conditions, in order (see [`Rule::check_request`]).
    fn check_identity(&self, id: &Identity) -> Result<u32, (&'static str, u32)> {
        let c = &self.cond;
        let mut passed = 0;
        if let Some(s) = &c.issuers {
            if !s.contains(&id.issuer) {
                return Err(("issuers", passed));
            }
            passed += 1;
        }
        if let Some(s) = &c.subjects {
            if !s.contains(&id.sub) {
                return Err(("subjects", passed));
            }
            passed += 1;
        }
        if let Some(s) = &c.groups {
            if !s.contains_any(id.groups.iter().map(String::as_str)) {
                return Err(("groups", passed));
            }
            passed += 1;
        }
        if let Some(s) = &c.scopes {
            if !s.contains_any(id.scopes.iter().map(String::as_str)) {
                return Err(("scopes", passed));
            }
            passed += 1;
        }
        if let Some(s) = &c.emails {
            if !id.email.as_deref().is_some_and(|e| s.contains(e)) {
                return Err(("emails", passed));
            }
            passed += 1;
        }
        if let Some(d) = &c.email_domains {
            let domain = id.email.as_deref().and_then(|e| e.rsplit_once('@'));
            if !domain.is_some_and(|(_, dom)| d.matches(dom)) {
                return Err(("email_domains", passed));
            }
            passed += 1;
        }
        if let Some(claims) = &c.claims {
            if !claims.iter().all(|cc| cc.matches(id)) {
                return Err(("claims", passed));
            }
            passed += 1;
        }
        if let Some(patterns) = &c.claims_match {
            if !patterns.iter().all(|cm| cm.matches(id)) {
                return Err(("claims_match", passed));
            }
            passed += 1;
        }
        // An allow rule must be able to name its principal (see the module docs). Deny rules
        // never skip for that reason.
        if self.effect == Effect::Allow && !self.principal.available(id) {
            return Err(("principal", passed));
        }
        Ok(passed)
    }
}

/// Why a rule did not match one request (`idgate explain`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    pub rule: Arc<str>,
    pub index: usize,
    /// The first condition that failed: `methods`, `paths`, `hosts`, `sources`, `issuers`,
    /// `subjects`, `groups`, `scopes`, `emails`, `email_domains`, `claims`, `principal`, or
    /// `token` (an identity rule and no valid token).
    pub failed: &'static str,
    /// How many of the rule's conditions held before it (more: closer).
    pub passed: u32,
}

/// A [`RequestView`] prepared once per evaluation, so that no rule repeats the work: the path
/// split into segments, the port stripped from the host.
struct Prepared<'a> {
    method: &'a str,
    path: PathView<'a>,
    host: Option<&'a str>,
    src: Option<IpAddr>,
}

impl<'a> Prepared<'a> {
    fn new(req: &RequestView<'a>) -> Self {
        Prepared {
            method: req.method,
            path: PathView::new(req.path),
            host: req.host.map(cond::host_without_port),
            src: req.src,
        }
    }
}

/// Compiled conditions; `None` means "not constrained".
#[derive(Debug, Default)]
struct Conditions {
    /// `None` also for `["*"]`.
    methods: Option<Box<[Box<str>]>>,
    paths: Option<Box<[PathPattern]>>,
    hosts: Option<DomainSet>,
    sources: Option<Box<[IpNet]>>,
    groups: Option<StrSet>,
    subjects: Option<StrSet>,
    emails: Option<CiSet>,
    email_domains: Option<DomainSet>,
    scopes: Option<StrSet>,
    claims: Option<Box<[ClaimCond]>>,
    claims_match: Option<Box<[ClaimMatchCond]>>,
    issuers: Option<StrSet>,
}

/// The compiled `[[rule]]` list.
#[derive(Debug)]
pub struct Policy {
    rules: Box<[Rule]>,
    /// Indexes into `rules`, each in file order.
    public: Box<[usize]>,
    private: Box<[usize]>,
}

impl Policy {
    /// Compile the rules of a loaded configuration (so checked already: this cannot fail).
    pub fn compile(cfg: &Config) -> Policy {
        let rules: Vec<Rule> = cfg
            .rules
            .iter()
            .enumerate()
            .map(|(i, rc)| Rule::compile(i, rc))
            .collect();
        let public = (0..rules.len()).filter(|&i| rules[i].public).collect();
        let private = (0..rules.len()).filter(|&i| !rules[i].public).collect();
        Policy {
            rules: rules.into_boxed_slice(),
            public,
            private,
        }
    }

    /// Public rules (`public = true`) are tried first, in file order, and need no token.
    pub fn match_public(&self, req: &RequestView<'_>) -> Option<&Rule> {
        if self.public.is_empty() {
            return None;
        }
        let req = Prepared::new(req);
        self.public
            .iter()
            .map(|&i| &self.rules[i])
            .find(|r| r.matches_request(&req))
    }

    /// First match among the non-public rules, in file order.
    pub fn evaluate(&self, req: &RequestView<'_>, id: &Identity) -> Outcome<'_> {
        let req = Prepared::new(req);
        for &i in self.private.iter() {
            let r = &self.rules[i];
            if r.matches_request(&req) && r.matches_identity(id) {
                return match r.effect {
                    Effect::Allow => Outcome::Allow(r),
                    Effect::Deny => Outcome::Deny(r),
                };
            }
        }
        Outcome::NoMatch
    }

    /// Every rule, in file order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules that came closest to matching a request that matched none (or, with
    /// `upto`, none before that rule), each with the first condition it failed: at most
    /// `limit`, most conditions held first, then file order. `id`: the caller's identity,
    /// `None` without a valid token (identity rules then fail on `token`). For `explain`.
    pub fn closest(&self, req: &RequestView<'_>, id: Option<&Identity>, limit: usize) -> Vec<Miss> {
        let req = Prepared::new(req);
        let mut misses: Vec<Miss> = self
            .rules
            .iter()
            .filter_map(|r| {
                let miss = |(failed, passed)| Miss {
                    rule: r.name.clone(),
                    index: r.index,
                    failed,
                    passed,
                };
                let request = match r.check_request(&req) {
                    Ok(n) => n,
                    Err(e) => return Some(miss(e)),
                };
                if r.public {
                    return None; // matched
                }
                match id {
                    None => Some(miss(("token", request))),
                    Some(id) => r
                        .check_identity(id)
                        .err()
                        .map(|(f, p)| miss((f, request + p))),
                }
            })
            .collect();
        misses.sort_by(|a, b| b.passed.cmp(&a.passed).then(a.index.cmp(&b.index)));
        misses.truncate(limit);
        misses
    }
}

impl Rule {
    fn compile(index: usize, rc: &RuleConfig) -> Rule {
        // Deny rules ignore ASCII case in paths (see `path::Case`).
        let case = match rc.effect {
            Effect::Deny => Case::Insensitive,
            Effect::Allow => Case::Sensitive,
        };
        let methods = rc
            .methods
            .as_ref()
            .filter(|ms| !ms.iter().any(Method::is_any))
            .map(|ms| {
                let mut v: Vec<Box<str>> = ms.iter().map(|m| m.as_str().into()).collect();
                // Servers answer HEAD with their GET handler: a deny on GET must not be
                // dodged with HEAD. (Allow rules stay as written.)
                if rc.effect == Effect::Deny && ms.iter().any(|m| m.as_str() == "GET") {
                    v.push("HEAD".into());
                }
                v.sort();
                v.dedup();
                v.into_boxed_slice()
            });
        let strs = |v: &Option<Vec<config::NonEmpty>>| {
            v.as_ref()
                .map(|v| StrSet::new(v.iter().map(config::NonEmpty::as_str)))
        };
        let cond = Conditions {
            methods,
            paths: rc
                .paths
                .as_ref()
                .map(|ps| ps.iter().map(|p| PathPattern::new(p, case)).collect()),
            hosts: rc
                .hosts
                .as_ref()
                .map(|h| DomainSet::new(h.iter().map(config::HostPattern::as_str))),
            sources: rc.sources.as_ref().map(|s| s.iter().map(|c| c.0).collect()),
            groups: strs(&rc.groups),
            subjects: strs(&rc.subjects),
            emails: rc
                .emails
                .as_ref()
                .map(|e| CiSet::new(e.iter().map(config::Email::as_str))),
            email_domains: rc
                .email_domains
                .as_ref()
                .map(|d| DomainSet::new(d.iter().map(config::EmailDomain::as_str))),
            scopes: rc
                .scopes
                .as_ref()
                .map(|s| StrSet::new(s.iter().map(config::Scope::as_str))),
            claims: rc.claims.as_ref().map(|c| {
                c.iter()
                    .map(|(path, values)| ClaimCond::new(path, values))
                    .collect()
            }),
            claims_match: rc.claims_match.as_ref().map(|c| {
                c.iter()
                    .map(|(path, patterns)| ClaimMatchCond::new(path, patterns))
                    .collect()
            }),
            issuers: rc
                .issuers
                .as_ref()
                .map(|i| StrSet::new(i.iter().map(String::as_str))),
        };
        Rule {
            name: rc.name.as_str().into(),
            index,
            effect: rc.effect,
            upstream: rc.upstream.as_deref().map(Arc::from),
            public: rc.public,
            payload: rc.payload.clone(),
            cond,
            principal: Principal::new(rc.principal.as_ref()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_can_be_shared_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Policy>();
    }

    /// The shipped example must stay valid: it is what operators copy.
    #[test]
    fn example_config_parses_and_compiles() {
        let text = include_str!("../../haproxy/idgate.toml");
        // Its secret file goes next to it.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("serving-sp.secret"), "s").unwrap();
        let cfg = Config::from_toml_in(text, "haproxy/idgate.toml", dir.path())
            .unwrap_or_else(|e| panic!("{e}"));
        let policy = Policy::compile(&cfg);
        assert!(policy.rules().len() >= 4);

        let id = Identity {
            issuer: "corp".into(),
            sub: "u1".into(),
            user: None,
            email: Some("ana@example.com".into()),
            groups: vec!["analysts".into(), "ml-engineers".into()],
            scopes: vec![],
            expires_at: 0,
            issued_at: None,
            jti: None,
            claims: Default::default(),
        };
        let req = |method, path| RequestView {
            method,
            path,
            host: Some("dbc-1234.cloud.databricks.com"),
            src: None,
        };
        // Secrets and tokens are denied even to a member of every group.
        for p in [
            "/api/2.0/secrets/list",
            "/API/2.0/Secrets/list",
            "/api/2.0/token/list",
            "/api/2.0/token",
            "/api/2.0/token-management/tokens",
        ] {
            assert!(
                matches!(policy.evaluate(&req("GET", p), &id), Outcome::Deny(_)),
                "{p}"
            );
        }
        match policy.evaluate(&req("POST", "/serving-endpoints/m1/invocations"), &id) {
            Outcome::Allow(r) => assert_eq!(r.upstream.as_deref(), Some("serving-sp")),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            policy.evaluate(&req("GET", "/api/2.2/jobs/list"), &id),
            Outcome::Allow(_)
        ));
        assert!(matches!(
            policy.evaluate(&req("POST", "/api/2.2/jobs/create"), &id),
            Outcome::NoMatch
        ));
        assert!(policy.match_public(&req("GET", "/healthz")).is_some());
        assert!(policy
            .match_public(&req("GET", "/api/2.0/clusters/list"))
            .is_none());
    }
}
