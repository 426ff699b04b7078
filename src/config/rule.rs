//! `[[rule]]` (contract §4): conditions (ANDed; the values of one condition are ORed), the
//! effect, and what an allowed request is forwarded with. What the keys mean is documented in
//! [`crate::policy`]; this module reads and checks them.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use serde::Deserialize;

use super::claim_glob::{ClaimGlob, ClaimGlobs};
use super::cond::{
    Cidr, ClaimPath, ClaimValue, ClaimValues, Email, EmailDomain, HostPattern, Method, NonEmpty,
    Principal, Scope,
};
use super::glob::PathGlob;
use super::read::{Cx, Table};
use super::value::{first_seen, string_value};
use super::UpstreamKind;

/// Longest rule name: it is copied into the `rule` variable, logs and `explain` output, and
/// names are identifiers, not descriptions.
pub const MAX_RULE_NAME: usize = 64;

/// `effect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Deny,
}

/// `[[rule]]`. `None` conditions do not constrain.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleConfig {
    pub name: String,
    pub methods: Option<Vec<Method>>,
    pub paths: Option<Vec<PathGlob>>,
    pub hosts: Option<Vec<HostPattern>>,
    pub groups: Option<Vec<NonEmpty>>,
    pub subjects: Option<Vec<NonEmpty>>,
    pub emails: Option<Vec<Email>>,
    pub email_domains: Option<Vec<EmailDomain>>,
    pub scopes: Option<Vec<Scope>>,
    /// Dotted claim path -> accepted values, in key order.
    pub claims: Option<Vec<(ClaimPath, Vec<ClaimValue>)>>,
    /// Claim path -> glob patterns (`claims_match`), in key order.
    pub claims_match: Option<Vec<(ClaimPath, Vec<ClaimGlob>)>>,
    /// CIDRs (or bare addresses) of the `src` argument.
    pub sources: Option<Vec<Cidr>>,
    /// Only tokens from these issuers (by `name`).
    pub issuers: Option<Vec<String>>,
    /// Default `allow`.
    pub effect: Effect,
    /// Name of the `[upstream.*]` credential to inject.
    pub upstream: Option<String>,
    /// Matches without any token (tried before the token is checked).
    pub public: bool,
    /// Default: the email if present, else `sub`.
    pub principal: Option<Principal>,
    /// `payload = "serving"` and its keys (docs/payload.md).
    pub payload: Option<crate::payload::Settings>,
}

/// What the rule checks need from the other sections.
pub(crate) struct RuleContext<'a> {
    /// Issuer names; `None` when an issuer could not be read (references are not checked).
    pub(crate) issuers: Option<HashSet<&'a str>>,
    /// Upstream names and kinds (`None`: the upstream could not be read).
    pub(crate) upstreams: HashMap<&'a str, Option<UpstreamKind>>,
    /// `[paths] allow_non_ascii`; `None` when `[paths]` could not be read.
    pub(crate) allow_non_ascii: Option<bool>,
}

/// A rule's `name`: an identifier.
struct RuleName(String);

impl FromStr for RuleName {
    type Err = String;

    fn from_str(s: &str) -> Result<RuleName, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > MAX_RULE_NAME
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        {
            return Err(format!(
                "{s:?}: at most {MAX_RULE_NAME} characters from A-Z a-z 0-9 _ - . :"
            ));
        }
        Ok(RuleName(s.into()))
    }
}
string_value!(RuleName, "a rule name");

const EMPTY_LIST: &str =
    "empty list: the condition could never match; remove the key to not constrain it";

impl RuleConfig {
    /// `None` when `name` is missing (reported). Every key is read either way.
    pub(crate) fn read(t: &mut Table<'_, '_>) -> Option<RuleConfig> {
        let name = t.required::<RuleName>("name").map(|n| n.0);
        let mut r = RuleConfig {
            name: String::new(),
            methods: t.list("methods"),
            paths: t.list("paths"),
            hosts: t.list("hosts"),
            groups: t.list("groups"),
            subjects: t.list("subjects"),
            emails: t.list("emails"),
            email_domains: t.list("email_domains"),
            scopes: t.list("scopes"),
            claims: t
                .entries::<ClaimPath, ClaimValues>("claims")
                .map(|c| c.into_iter().map(|(k, v)| (k, v.0)).collect()),
            claims_match: t
                .entries::<ClaimPath, ClaimGlobs>("claims_match")
                .map(|c| c.into_iter().map(|(k, v)| (k, v.0)).collect()),
            sources: t.list("sources"),
            issuers: t.list("issuers"),
            effect: Effect::Allow,
            upstream: t.get("upstream"),
            public: false,
            principal: t.get("principal"),
            payload: super::payload::read(t),
        };
        t.set("effect", &mut r.effect);
        t.set("public", &mut r.public);
        r.name = name?;
        Some(r)
    }

    /// Claim paths this rule reads (conditions and a `claim:` principal).
    pub(crate) fn claim_paths(&self) -> impl Iterator<Item = &str> {
        let conditions = self.claims.iter().flatten().map(|(p, _)| p.as_str());
        let patterns = self.claims_match.iter().flatten().map(|(p, _)| p.as_str());
        let conditions = conditions.chain(patterns);
        let principal = match &self.principal {
            Some(Principal::Claim(p)) => Some(p.as_str()),
            _ => None,
        };
        conditions.chain(principal)
    }

    /// The checks of rule `i`; `names` holds the names of the rules before it.
    pub(crate) fn check(
        &self,
        i: usize,
        names: &mut HashMap<String, usize>,
        ctx: &RuleContext<'_>,
        cx: &mut Cx<'_>,
    ) {
        let k = |field: &str| format!("rule[{i}].{field}");
        if let Some(first) = first_seen(names, &self.name, i) {
            cx.push(
                k("name"),
                format!("duplicate rule name {:?} (also rule[{first}])", self.name),
            );
        }

        for (field, len) in [
            ("methods", self.methods.as_ref().map(Vec::len)),
            ("paths", self.paths.as_ref().map(Vec::len)),
            ("hosts", self.hosts.as_ref().map(Vec::len)),
            ("sources", self.sources.as_ref().map(Vec::len)),
            ("groups", self.groups.as_ref().map(Vec::len)),
            ("subjects", self.subjects.as_ref().map(Vec::len)),
            ("emails", self.emails.as_ref().map(Vec::len)),
            ("email_domains", self.email_domains.as_ref().map(Vec::len)),
            ("scopes", self.scopes.as_ref().map(Vec::len)),
            ("issuers", self.issuers.as_ref().map(Vec::len)),
        ] {
            if len == Some(0) {
                cx.push(k(field), EMPTY_LIST);
            }
        }
        if let Some(ms) = &self.methods {
            if ms.len() > 1 && ms.iter().any(Method::is_any) {
                cx.push(
                    k("methods"),
                    "\"*\" (any method) cannot be combined with other methods",
                );
            }
        }
        if let (Some(paths), Some(allow)) = (&self.paths, ctx.allow_non_ascii) {
            for (j, p) in paths.iter().enumerate() {
                if let Some(why) = non_ascii_problem(p.as_str(), allow) {
                    cx.push(k(&format!("paths[{j}]")), why);
                }
            }
        }
        if let (Some(list), Some(known)) = (&self.issuers, &ctx.issuers) {
            for (j, n) in list.iter().enumerate() {
                if !known.contains(n.as_str()) {
                    cx.push(
                        k(&format!("issuers[{j}]")),
                        format!("no [[issuer]] is named {n:?}"),
                    );
                }
            }
        }
        if self.claims.as_ref().is_some_and(Vec::is_empty) {
            cx.push(
                k("claims"),
                "empty table: remove the key to not constrain claims",
            );
        }
        if self.claims_match.as_ref().is_some_and(Vec::is_empty) {
            cx.push(
                k("claims_match"),
                "empty table: remove the key to not constrain claims",
            );
        }
        self.check_forwarding(&k, ctx, cx);
        if let Some(p) = &self.payload {
            super::payload::check(
                p,
                &k,
                self.effect == Effect::Allow,
                self.upstream.as_deref(),
                cx,
            );
        }
        if self.public {
            self.check_public(&k, cx);
        }
    }

    /// `upstream` and `principal`: what an allowed request is forwarded with.
    fn check_forwarding(&self, k: &dyn Fn(&str) -> String, ctx: &RuleContext<'_>, cx: &mut Cx<'_>) {
        if self.effect == Effect::Deny {
            if self.upstream.is_some() {
                cx.push(
                    k("upstream"),
                    "a deny rule forwards nothing, so it cannot have an upstream",
                );
            }
            if self.principal.is_some() {
                cx.push(
                    k("principal"),
                    "a deny rule forwards nothing, so it cannot have a principal",
                );
            }
            return;
        }
        if let Some(u) = &self.upstream {
            match ctx.upstreams.get(u.as_str()) {
                None => cx.push(k("upstream"), format!("no [upstream.{u}] section")),
                Some(Some(kind @ (UpstreamKind::TokenExchange | UpstreamKind::OnBehalfOf)))
                    if self.public =>
                {
                    cx.push(
                        k("upstream"),
                        format!(
                            "upstream {u:?} is {}, which needs the caller's token; a public \
                             rule has none",
                            kind.as_str()
                        ),
                    )
                }
                Some(_) => {}
            }
        }
    }

    /// A public rule is tried without a token.
    fn check_public(&self, k: &dyn Fn(&str) -> String, cx: &mut Cx<'_>) {
        if self.effect == Effect::Deny {
            cx.push(
                k("effect"),
                "a public rule cannot deny (public rules are tried before the token is checked; \
                 put deny rules without `public`)",
            );
        }
        if self.paths.is_none() {
            cx.push(
                k("paths"),
                "a public rule must list paths: without them it would open every path to \
                 callers without a token",
            );
        }
        for (field, present) in [
            ("groups", self.groups.is_some()),
            ("subjects", self.subjects.is_some()),
            ("emails", self.emails.is_some()),
            ("email_domains", self.email_domains.is_some()),
            ("scopes", self.scopes.is_some()),
            ("claims", self.claims.is_some()),
            ("claims_match", self.claims_match.is_some()),
            ("issuers", self.issuers.is_some()),
        ] {
            if present {
                cx.push(
                    k(field),
                    "a public rule needs no token, so it cannot use identity conditions (only \
                     methods, paths, hosts, sources)",
                );
            }
        }
        if matches!(
            self.principal,
            Some(Principal::Email | Principal::Sub | Principal::Claim(_))
        ) {
            cx.push(
                k("principal"),
                "a public rule has no identity: only \"static:<value>\" is possible",
            );
        }
    }
}

/// Why a path pattern with non-ASCII characters could never match under `[paths]`
/// (see [`crate::policy::PathOptions::allow_non_ascii`]), or `None`.
fn non_ascii_problem(pat: &str, allow_non_ascii: bool) -> Option<String> {
    if pat.is_ascii() {
        return None;
    }
    if !allow_non_ascii {
        return Some(format!(
            "{pat:?}: non-ASCII request paths are refused unless [paths] allow_non_ascii = true, \
             so this never matches"
        ));
    }
    crate::policy::path::unicode_problem(pat)
        .map(|e| format!("{pat:?}: {e}; such request paths are refused, so this never matches"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::keys;
    use crate::config::Config;

    #[test]
    fn values_are_typed() {
        let c = Config::from_toml(
            "[[rule]]\nname = \"r\"\nmethods = [\"GET\"]\npaths = [\"/a/**\"]\n\
             sources = [\"10.0.0.0/8\"]\nclaims = { \"realm.roles\" = [\"a\", 1], t = true }\n\
             principal = \"claim:upn\"\n",
            "t",
        )
        .unwrap();
        let r = &c.rules[0];
        assert_eq!(r.methods.as_ref().unwrap()[0].as_str(), "GET");
        assert_eq!(r.paths.as_ref().unwrap()[0].as_str(), "/a/**");
        assert_eq!(r.sources.as_ref().unwrap()[0].0.to_string(), "10.0.0.0/8");
        let claims = r.claims.as_ref().unwrap();
        assert_eq!(claims[0].0.as_str(), "realm.roles");
        assert_eq!(
            claims[0].1,
            [ClaimValue::Str("a".into()), ClaimValue::Int(1)]
        );
        assert_eq!(claims[1].1, [ClaimValue::Bool(true)]);
        let read: Vec<_> = r.claim_paths().collect();
        assert_eq!(read, ["realm.roles", "t", "upn"]);
        assert_eq!(r.effect, Effect::Allow);
        assert!(!r.public);
    }

    #[test]
    fn names_are_identifiers_and_unique() {
        assert_eq!(
            keys("[[rule]]\nname = \"a\"\n[[rule]]\nname = \"\"\n[[rule]]\nname = \"a\"\n"),
            ["rule[1].name", "rule[2].name"]
        );
        assert_eq!(keys("[[rule]]\nname = 5\n"), ["rule[0].name"]);
    }

    #[test]
    fn deny_rules_forward_nothing() {
        assert_eq!(
            keys(
                "[[rule]]\nname = \"r\"\neffect = \"deny\"\nupstream = \"nope\"\n\
                 principal = \"sub\"\n"
            ),
            ["rule[0].upstream", "rule[0].principal"]
        );
    }
}
