//! What a verified caller may do: first-match rule evaluation, compiled at load.
//!
//! The `[[rule]]` list of the configuration is compiled once into a [`Policy`] (every problem is
//! reported with its key path, e.g. `rule[3].paths[0]`). Evaluating a request then walks the
//! compiled rules in file order and stops at the first one whose conditions all hold; matching
//! does no parsing, no regex and no heap allocation.
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

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::config::{Config, Effect, Problem, RuleConfig, UpstreamKind};
use crate::decision::Identity;

use cond::{CiSet, ClaimCond, DomainSet, Principal, StrSet};
pub use path::{normalize_path, normalize_path_with, PathError, PathOptions, MAX_PATH_BYTES};
use path::{Case, PathPattern, PathView};

/// Longest rule name: it is copied into the `rule` variable, logs and `explain` output, and
/// names are identifiers, not descriptions.
pub const MAX_RULE_NAME: usize = 64;

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
    /// Compile every rule of the config; report every problem with its key path.
    pub fn compile(cfg: &Config) -> Result<Policy, Vec<Problem>> {
        let mut problems = Vec::new();
        let issuers: HashSet<&str> = cfg.issuers.iter().map(|i| i.name.as_str()).collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut rules = Vec::with_capacity(cfg.rules.len());
        for (i, rc) in cfg.rules.iter().enumerate() {
            let k = format!("rule[{i}]");
            if !rc.name.is_empty() {
                match seen.entry(rc.name.as_str()) {
                    Entry::Occupied(first) => problems.push(Problem::new(
                        format!("{k}.name"),
                        format!(
                            "duplicate rule name {:?} (also rule[{}])",
                            rc.name,
                            first.get()
                        ),
                    )),
                    Entry::Vacant(v) => {
                        v.insert(i);
                    }
                }
            }
            let mut c = RuleCompiler {
                key: &k,
                problems: &mut problems,
            };
            if let Some(rule) = c.rule(i, rc, cfg, &issuers) {
                rules.push(rule);
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let public = (0..rules.len()).filter(|&i| rules[i].public).collect();
        let private = (0..rules.len()).filter(|&i| !rules[i].public).collect();
        Ok(Policy {
            rules: rules.into_boxed_slice(),
            public,
            private,
        })
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

/// Why a path pattern with non-ASCII characters could never match under `[paths]`
/// (see [`PathOptions::allow_non_ascii`]), or `None`.
fn non_ascii_problem(pat: &str, allow_non_ascii: bool) -> Option<String> {
    if pat.is_ascii() {
        return None;
    }
    if !allow_non_ascii {
        return Some(format!(
            "{pat:?}: non-ASCII request paths are refused unless [paths] allow_non_ascii = true, so this never matches"
        ));
    }
    path::unicode_problem(pat)
        .map(|e| format!("{pat:?}: {e}; such request paths are refused, so this never matches"))
}

/// Compiles one rule, pushing problems under its key.
struct RuleCompiler<'p> {
    key: &'p str,
    problems: &'p mut Vec<Problem>,
}

impl RuleCompiler<'_> {
    fn problem(&mut self, field: &str, msg: impl Into<String>) {
        self.problems
            .push(Problem::new(format!("{}.{field}", self.key), msg));
    }

    /// A list condition: `None` stays `None`; an empty list is an error (it could never
    /// match, which is never what was meant); each entry is checked by `check`.
    fn list<'a>(
        &mut self,
        field: &str,
        v: &'a Option<Vec<String>>,
        mut check: impl FnMut(&str) -> Result<(), String>,
    ) -> Option<&'a [String]> {
        let v = v.as_deref()?;
        if v.is_empty() {
            self.problem(
                field,
                "empty list: the condition could never match; remove the key to not constrain it",
            );
            return None;
        }
        for (j, s) in v.iter().enumerate() {
            if let Err(e) = check(s) {
                self.problem(&format!("{field}[{j}]"), e);
            }
        }
        Some(v)
    }

    fn rule(
        &mut self,
        index: usize,
        rc: &RuleConfig,
        cfg: &Config,
        issuers: &HashSet<&str>,
    ) -> Option<Rule> {
        let before = self.problems.len();

        if rc.name.is_empty() {
            self.problem("name", "must not be empty");
        } else if rc.name.len() > MAX_RULE_NAME
            || !rc
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            self.problem(
                "name",
                format!(
                    "{:?}: at most {MAX_RULE_NAME} characters from A-Z a-z 0-9 _ - . :",
                    rc.name
                ),
            );
        }

        let mut cond = Conditions::default();

        // methods
        if let Some(ms) = self.list("methods", &rc.methods, |m| {
            if m == "*" {
                Ok(())
            } else {
                cond::check_method(m)
            }
        }) {
            if ms.iter().any(|m| m == "*") {
                if ms.len() > 1 {
                    self.problem(
                        "methods",
                        "\"*\" (any method) cannot be combined with other methods",
                    );
                }
            } else {
                let mut v: Vec<Box<str>> = ms.iter().map(|m| m.as_str().into()).collect();
                // Servers answer HEAD with their GET handler: a deny on GET must not be
                // dodged with HEAD. (Allow rules stay as written.)
                if rc.effect == Effect::Deny && ms.iter().any(|m| m == "GET") {
                    v.push("HEAD".into());
                }
                v.sort();
                v.dedup();
                cond.methods = Some(v.into_boxed_slice());
            }
        }

        // paths
        if let Some(ps) = rc.paths.as_deref() {
            if ps.is_empty() {
                self.problem("paths", "empty list: the condition could never match; remove the key to not constrain it");
            } else {
                // Deny rules ignore ASCII case in paths (see `path::Case`).
                let case = match rc.effect {
                    Effect::Deny => Case::Insensitive,
                    Effect::Allow => Case::Sensitive,
                };
                let mut compiled = Vec::with_capacity(ps.len());
                for (j, p) in ps.iter().enumerate() {
                    let compiled_pattern = PathPattern::compile(p, case).and_then(|pp| {
                        non_ascii_problem(p, cfg.paths.allow_non_ascii).map_or(Ok(pp), Err)
                    });
                    match compiled_pattern {
                        Ok(pp) => compiled.push(pp),
                        Err(e) => self.problem(&format!("paths[{j}]"), e),
                    }
                }
                cond.paths = Some(compiled.into_boxed_slice());
            }
        }

        if let Some(hs) = self.list("hosts", &rc.hosts, |h| cond::check_domain(h, true)) {
            cond.hosts = Some(DomainSet::new(hs));
        }

        if let Some(ss) = rc.sources.as_deref() {
            if ss.is_empty() {
                self.problem("sources", "empty list: the condition could never match; remove the key to not constrain it");
            } else {
                let mut nets = Vec::with_capacity(ss.len());
                for (j, s) in ss.iter().enumerate() {
                    match cond::parse_source(s) {
                        Ok(n) => nets.push(n),
                        Err(e) => self.problem(&format!("sources[{j}]"), e),
                    }
                }
                cond.sources = Some(nets.into_boxed_slice());
            }
        }

        let non_empty = |s: &str| {
            if s.is_empty() {
                Err("empty entry".to_string())
            } else {
                Ok(())
            }
        };
        if let Some(v) = self.list("groups", &rc.groups, non_empty) {
            cond.groups = Some(StrSet::new(v));
        }
        if let Some(v) = self.list("subjects", &rc.subjects, non_empty) {
            cond.subjects = Some(StrSet::new(v));
        }
        if let Some(v) = self.list("scopes", &rc.scopes, |s| {
            if s.is_empty() || s.contains(' ') {
                Err("a scope is one non-empty token without spaces".to_string())
            } else {
                Ok(())
            }
        }) {
            cond.scopes = Some(StrSet::new(v));
        }
        if let Some(v) = self.list("emails", &rc.emails, |e| match e.rsplit_once('@') {
            Some((l, d)) if !l.is_empty() && !d.is_empty() => Ok(()),
            _ => Err(format!("{e:?} is not an email address")),
        }) {
            cond.emails = Some(CiSet::new(v));
        }
        if let Some(v) = self.list("email_domains", &rc.email_domains, |d| {
            if d.contains('@') {
                Err(format!("{d:?}: write the domain only, without @"))
            } else {
                cond::check_domain(d, false)
            }
        }) {
            cond.email_domains = Some(DomainSet::new(v));
        }
        if let Some(v) = self.list("issuers", &rc.issuers, |n| {
            if issuers.contains(n) {
                Ok(())
            } else {
                Err(format!("no [[issuer]] is named {n:?}"))
            }
        }) {
            cond.issuers = Some(StrSet::new(v));
        }

        if let Some(claims) = &rc.claims {
            if claims.is_empty() {
                self.problem(
                    "claims",
                    "empty table: remove the key to not constrain claims",
                );
            }
            let mut compiled = Vec::with_capacity(claims.len());
            for (path, values) in claims {
                match ClaimCond::compile(path, values) {
                    Ok(c) => compiled.push(c),
                    Err(e) => self.problem(&format!("claims[{path:?}]"), e),
                }
            }
            cond.claims = Some(compiled.into_boxed_slice());
        }

        let principal = match rc.principal.as_deref() {
            None => Principal::Default,
            Some(s) => match Principal::parse(s) {
                Ok(p) => p,
                Err(e) => {
                    self.problem("principal", e);
                    Principal::Default
                }
            },
        };

        // Upstream reference.
        let upstream = rc.upstream.as_deref();
        if let Some(u) = upstream {
            match cfg.upstreams.get(u) {
                None => self.problem(
                    "upstream",
                    format!("no [upstream.{u}] section"),
                ),
                Some(up) if rc.public && up.kind == UpstreamKind::TokenExchange => self.problem(
                    "upstream",
                    format!(
                        "upstream {u:?} is token_exchange, which needs the caller's token; a public rule has none"
                    ),
                ),
                Some(_) => {}
            }
        }

        if rc.effect == Effect::Deny {
            if upstream.is_some() {
                self.problem(
                    "upstream",
                    "a deny rule forwards nothing, so it cannot have an upstream",
                );
            }
            if rc.principal.is_some() {
                self.problem(
                    "principal",
                    "a deny rule forwards nothing, so it cannot have a principal",
                );
            }
        }

        if rc.public {
            if rc.effect == Effect::Deny {
                self.problem(
                    "effect",
                    "a public rule cannot deny (public rules are tried before the token is checked; put deny rules without `public`)",
                );
            }
            if rc.paths.is_none() {
                self.problem(
                    "paths",
                    "a public rule must list paths: without them it would open every path to callers without a token",
                );
            }
            for (field, present) in [
                ("groups", rc.groups.is_some()),
                ("subjects", rc.subjects.is_some()),
                ("emails", rc.emails.is_some()),
                ("email_domains", rc.email_domains.is_some()),
                ("scopes", rc.scopes.is_some()),
                ("claims", rc.claims.is_some()),
                ("issuers", rc.issuers.is_some()),
            ] {
                if present {
                    self.problem(
                        field,
                        "a public rule needs no token, so it cannot use identity conditions (only methods, paths, hosts, sources)",
                    );
                }
            }
            if matches!(
                principal,
                Principal::Email | Principal::Sub | Principal::Claim(_)
            ) {
                self.problem(
                    "principal",
                    "a public rule has no identity: only \"static:<value>\" is possible",
                );
            }
        }

        if self.problems.len() > before {
            return None;
        }
        Some(Rule {
            name: rc.name.as_str().into(),
            index,
            effect: rc.effect,
            upstream: upstream.map(Arc::from),
            public: rc.public,
            cond,
            principal,
        })
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
        let cfg = Config::from_toml(text, "haproxy/idgate.toml").expect("example parses");
        let policy = Policy::compile(&cfg).unwrap_or_else(|p| panic!("{p:?}"));
        assert!(policy.rules().len() >= 4);

        let id = Identity {
            issuer: "corp".into(),
            sub: "u1".into(),
            email: Some("ana@example.com".into()),
            groups: vec!["analysts".into(), "ml-engineers".into()],
            scopes: vec![],
            expires_at: 0,
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
