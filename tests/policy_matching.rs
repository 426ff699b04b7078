//! Rule matching through the public API: ordering, every condition type, principals.

use std::net::IpAddr;
use std::sync::LazyLock;

use idgate::config::Config;
use idgate::decision::Identity;
use idgate::policy::{normalize_path, Outcome, PathError, Policy, RequestView};

/// Issuers and upstreams the rules below may name.
const PRELUDE: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://idp.example.com"
audiences = ["gw"]

[[issuer]]
name = "partner"
issuer = "https://partner.example.net"
audiences = ["gw"]

[upstream.sp]
kind = "client_credentials"
token_url = "https://dbc.example.com/oidc/v1/token"
client_id = "x"
client_secret_file = "sp.secret"

[upstream.fed]
kind = "token_exchange"
token_url = "https://dbc.example.com/oidc/v1/token"
"#;

/// Where the configuration "is": `sp.secret` is there.
static DIR: LazyLock<tempfile::TempDir> = LazyLock::new(|| {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("sp.secret"), "s3cret\n").unwrap();
    d
});

fn policy(rules: &str) -> Policy {
    let text = format!("{PRELUDE}\n{rules}");
    let cfg = Config::from_toml_in(&text, "test", DIR.path()).unwrap_or_else(|e| panic!("{e}"));
    Policy::compile(&cfg)
}

fn id() -> Identity {
    Identity {
        issuer: "corp".into(),
        sub: "user-1".into(),
        user: None,
        email: Some("Ana@Example.COM".into()),
        groups: vec!["analysts".into(), "staff".into()],
        scopes: vec!["openid".into(), "sql".into()],
        expires_at: 0,
        issued_at: None,
        jti: None,
        claims: serde_json::from_str(
            r#"{
                "sub": "user-1",
                "tier": "gold",
                "level": 3,
                "ratio": 0.5,
                "admin": false,
                "realm_access": {"roles": ["reader", "writer"]},
                "https://example.com/roles": ["ns-role"],
                "oid": 12345,
                "empty": ""
            }"#,
        )
        .unwrap(),
    }
}

fn req<'a>(method: &'a str, path: &'a str) -> RequestView<'a> {
    RequestView {
        method,
        path,
        host: Some("dbc.example.com"),
        src: Some("10.1.2.3".parse().unwrap()),
    }
}

/// Name of the rule `evaluate` picks, prefixed with its effect, or "none".
fn decide(p: &Policy, r: &RequestView<'_>, id: &Identity) -> String {
    match p.evaluate(r, id) {
        Outcome::Allow(r) => format!("allow:{}", r.name),
        Outcome::Deny(r) => format!("deny:{}", r.name),
        Outcome::NoMatch => "none".into(),
    }
}

fn allows(p: &Policy, r: &RequestView<'_>, id: &Identity) -> bool {
    matches!(p.evaluate(r, id), Outcome::Allow(_))
}

#[test]
fn first_match_wins_in_file_order() {
    let p = policy(
        r#"
[[rule]]
name = "a"
paths = ["/x/**"]
[[rule]]
name = "b"
paths = ["/x/y"]
"#,
    );
    assert_eq!(decide(&p, &req("GET", "/x/y"), &id()), "allow:a");
    assert_eq!(decide(&p, &req("GET", "/z"), &id()), "none");
    let names: Vec<_> = p.rules().iter().map(|r| &*r.name).collect();
    assert_eq!(names, ["a", "b"]);
    assert_eq!(p.rules()[1].index, 1);
}

#[test]
fn deny_before_allow_and_allow_before_deny() {
    let p = policy(
        r#"
[[rule]]
name = "no-secrets"
paths = ["/api/*/secrets/**"]
effect = "deny"
[[rule]]
name = "read"
paths = ["/api/**"]
"#,
    );
    assert_eq!(
        decide(&p, &req("GET", "/api/2.0/secrets/list"), &id()),
        "deny:no-secrets"
    );
    assert_eq!(
        decide(&p, &req("GET", "/api/2.0/secrets"), &id()),
        "deny:no-secrets"
    );
    assert_eq!(
        decide(&p, &req("GET", "/api/2.0/secrets/"), &id()),
        "deny:no-secrets"
    );
    assert_eq!(
        decide(&p, &req("GET", "/api/2.0/jobs/list"), &id()),
        "allow:read"
    );

    // Reversed: the broad allow shadows the deny.
    let p = policy(
        r#"
[[rule]]
name = "read"
paths = ["/api/**"]
[[rule]]
name = "no-secrets"
paths = ["/api/*/secrets/**"]
effect = "deny"
"#,
    );
    assert_eq!(
        decide(&p, &req("GET", "/api/2.0/secrets/list"), &id()),
        "allow:read"
    );
}

#[test]
fn public_rules_first_and_separate() {
    let p = policy(
        r#"
[[rule]]
name = "deny-all"
effect = "deny"
[[rule]]
name = "health"
public = true
paths = ["/healthz"]
methods = ["GET"]
"#,
    );
    // match_public sees only public rules, evaluate only the others.
    assert_eq!(
        p.match_public(&req("GET", "/healthz")).map(|r| &*r.name),
        Some("health")
    );
    assert!(p.match_public(&req("POST", "/healthz")).is_none());
    assert!(p.match_public(&req("GET", "/other")).is_none());
    assert_eq!(decide(&p, &req("GET", "/healthz"), &id()), "deny:deny-all");
    let health = &p.rules()[1];
    assert!(health.public);
    assert_eq!(health.principal_for(None), None);
}

#[test]
fn public_rule_with_request_conditions() {
    let p = policy(
        r#"
[[rule]]
name = "probe"
public = true
paths = ["/healthz"]
hosts = ["lb.example.com"]
sources = ["10.0.0.0/8"]
principal = "static:probe"
"#,
    );
    let mut r = req("GET", "/healthz");
    r.host = Some("LB.example.com:443");
    let m = p.match_public(&r).expect("matches");
    assert_eq!(m.principal_for(None).as_deref(), Some("probe"));
    r.src = Some("192.0.2.1".parse().unwrap());
    assert!(p.match_public(&r).is_none());
    r.src = None;
    assert!(p.match_public(&r).is_none());
}

#[test]
fn methods_condition() {
    let p = policy(
        r#"
[[rule]]
name = "ro"
methods = ["GET", "HEAD"]
[[rule]]
name = "any"
methods = ["*"]
paths = ["/any"]
[[rule]]
name = "dav"
methods = ["PROPFIND"]
paths = ["/dav"]
"#,
    );
    assert!(allows(&p, &req("GET", "/x"), &id()));
    assert!(allows(&p, &req("HEAD", "/x"), &id()));
    assert!(!allows(&p, &req("POST", "/x"), &id()));
    assert!(
        !allows(&p, &req("get", "/x"), &id()),
        "methods are case-sensitive"
    );
    assert_eq!(decide(&p, &req("DELETE", "/any"), &id()), "allow:any");
    assert_eq!(decide(&p, &req("PROPFIND", "/dav"), &id()), "allow:dav");
}

#[test]
fn deny_on_get_also_denies_head() {
    let p = policy(
        r#"
[[rule]]
name = "no-get"
methods = ["GET"]
paths = ["/x"]
effect = "deny"
[[rule]]
name = "rest"
"#,
    );
    assert_eq!(decide(&p, &req("GET", "/x"), &id()), "deny:no-get");
    assert_eq!(decide(&p, &req("HEAD", "/x"), &id()), "deny:no-get");
    assert_eq!(decide(&p, &req("POST", "/x"), &id()), "allow:rest");
}

#[test]
fn paths_condition_globs() {
    let p = policy(
        r#"
[[rule]]
name = "inv"
paths = ["/serving-endpoints/*/invocations", "/api/2.*/jobs/**"]
"#,
    );
    let ok = |path: &str| allows(&p, &req("POST", path), &id());
    assert!(ok("/serving-endpoints/m1/invocations"));
    assert!(ok("/serving-endpoints/m1/invocations/"));
    assert!(!ok("/serving-endpoints/invocations"));
    assert!(!ok("/serving-endpoints/a/b/invocations"));
    assert!(ok("/api/2.1/jobs"));
    assert!(ok("/api/2.2/jobs/runs/list"));
    assert!(!ok("/api/1.2/jobs/list"));
    assert!(!ok("/api/2.0/jobsx"));
    // Case-sensitive literal segments.
    assert!(!ok("/Serving-Endpoints/m1/invocations"));
}

#[test]
fn paths_match_decoded_form() {
    let p = policy(
        r#"
[[rule]]
name = "m"
paths = ["/serving-endpoints/my model/invocations"]
"#,
    );
    let path = normalize_path("/serving-endpoints/my%20model/invocations").unwrap();
    assert!(allows(&p, &req("POST", &path), &id()));
    // An encoded letter never reaches the rules: HAProxy routes on the raw path, where
    // `%73ecrets` is not `secrets`, so the two views would disagree.
    assert_eq!(
        normalize_path("/api/2.0/%73ecrets/list"),
        Err(PathError::EncodedUnreserved)
    );
}

/// Paths that an upstream (Tomcat/Spring, Jetty, IIS, nginx, Go, anything folding Unicode)
/// could read as a denied API, but a rule would not: every one is refused before the rules
/// (400 bad_request), whatever the rules say. Without that, the rules would judge what they
/// decode to while HAProxy routes on the raw form and the upstream folds it onto a denied API.
#[test]
fn paths_a_denied_api_hides_behind_are_refused_before_rules() {
    let p = policy(
        r#"
[[rule]]
name = "no-secrets"
paths = ["/api/*/secrets/**", "/api/*/token/**"]
effect = "deny"
[[rule]]
name = "serving"
paths = ["/serving-endpoints/*/invocations"]
[[rule]]
name = "rest"
"#,
    );
    for (raw, want) in [
        ("/api/2.0/to%E2%84%AAen/create", PathError::NonAscii),
        ("/api/2.0/%C5%BFecrets/list", PathError::NonAscii),
        ("/api/2.0/%EF%BD%93ecrets/list", PathError::NonAscii),
        (
            "/api/2.0/x/%EF%BC%8E%EF%BC%8E/secrets/list",
            PathError::NonAscii,
        ),
        ("/api/2.0/secrets%3F/list", PathError::EncodedQuery),
        ("/api/2.0/secrets%23/list", PathError::EncodedFragment),
        ("/api/2.0/secrets%20/list", PathError::SegmentWhitespace),
        ("/api/2.0/secrets./list", PathError::TrailingDot),
        ("/api/2.0/secrets%2e/list", PathError::TrailingDot),
        ("/api/2.0/secrets%00", PathError::ControlCharacter),
        ("/api/2.0/secrets%09/list", PathError::ControlCharacter),
        (
            "/api/2.0/%u0073ecrets/list",
            PathError::InvalidPercentEncoding,
        ),
        (
            "/%73erving-endpoints/x/invocations",
            PathError::EncodedUnreserved,
        ),
        ("/api/2.0/%53ECRETS/list", PathError::EncodedUnreserved),
    ] {
        assert_eq!(normalize_path(raw), Err(want), "{raw}");
    }
    // The plain forms are still judged by the rules.
    let d = |raw: &str| decide(&p, &req("GET", &normalize_path(raw).unwrap()), &id());
    assert_eq!(d("/api/2.0/secrets/list"), "deny:no-secrets");
    assert_eq!(d("/api/2.0/token/create"), "deny:no-secrets");
    assert_eq!(d("/serving-endpoints/m%20x/invocations"), "allow:serving");
    assert_eq!(d("/api/2.0/secrets~x/list"), "allow:rest");
}

#[test]
fn deny_paths_ignore_case_allow_paths_do_not() {
    let p = policy(
        r#"
[[rule]]
name = "no-secrets"
paths = ["/api/*/secrets/**"]
effect = "deny"
[[rule]]
name = "jobs"
paths = ["/api/2.0/jobs/**"]
"#,
    );
    assert_eq!(
        decide(&p, &req("GET", "/API/2.0/SeCrEtS/list"), &id()),
        "deny:no-secrets"
    );
    assert_eq!(
        decide(&p, &req("GET", "/api/2.0/jobs/list"), &id()),
        "allow:jobs"
    );
    assert_eq!(decide(&p, &req("GET", "/api/2.0/JOBS/list"), &id()), "none");
}

#[test]
fn path_parameters_are_refused_before_rules() {
    for p in [
        "/api/2.0/secrets;x/list",
        "/api/2.0/secrets%3Bx/list",
        "/a/..;/b",
    ] {
        assert_eq!(normalize_path(p), Err(PathError::PathParameter), "{p}");
    }
}

#[test]
fn hosts_condition() {
    let p = policy(
        r#"
[[rule]]
name = "h"
hosts = ["dbc.example.com", "*.serving.example.com", "[::1]"]
"#,
    );
    let with_host = |h: Option<&'static str>| {
        let mut r = req("GET", "/");
        r.host = h;
        allows(&p, &r, &id())
    };
    assert!(with_host(Some("dbc.example.com")));
    assert!(with_host(Some("DBC.Example.Com")));
    assert!(with_host(Some("dbc.example.com:8443")));
    assert!(with_host(Some("dbc.example.com.")));
    assert!(with_host(Some("a.serving.example.com")));
    assert!(with_host(Some("a.b.serving.example.com:443")));
    assert!(with_host(Some("[::1]:8080")));
    assert!(!with_host(Some("serving.example.com")));
    assert!(!with_host(Some("xdbc.example.com")));
    assert!(!with_host(Some("dbc.example.com.evil.net")));
    assert!(!with_host(Some("")));
    assert!(
        !with_host(None),
        "a missing Host never matches a hosts condition"
    );
}

#[test]
fn sources_condition() {
    let p = policy(
        r#"
[[rule]]
name = "s"
sources = ["10.0.0.0/8", "192.0.2.10", "2001:db8::/32"]
"#,
    );
    let from = |s: Option<&str>| {
        let mut r = req("GET", "/");
        r.src = s.map(|s| s.parse::<IpAddr>().unwrap());
        allows(&p, &r, &id())
    };
    assert!(from(Some("10.200.0.1")));
    assert!(from(Some("192.0.2.10")));
    assert!(!from(Some("192.0.2.11")));
    assert!(from(Some("2001:db8::5")));
    assert!(from(Some("::ffff:10.0.0.1")));
    assert!(!from(Some("172.16.0.1")));
    assert!(!from(None), "a missing src never matches");
}

#[test]
fn groups_subjects_scopes_issuers() {
    let p = policy(
        r#"
[[rule]]
name = "g"
groups = ["ml-engineers", "analysts"]
paths = ["/g"]
[[rule]]
name = "s"
subjects = ["user-1"]
paths = ["/s"]
[[rule]]
name = "sc"
scopes = ["sql"]
paths = ["/sc"]
[[rule]]
name = "i"
issuers = ["partner"]
paths = ["/i"]
"#,
    );
    let me = id();
    assert!(allows(&p, &req("GET", "/g"), &me));
    assert!(allows(&p, &req("GET", "/s"), &me));
    assert!(allows(&p, &req("GET", "/sc"), &me));
    assert!(!allows(&p, &req("GET", "/i"), &me));

    let mut other = id();
    other.groups = vec!["Analysts".into()]; // group names are case-sensitive
    other.sub = "user-2".into();
    other.scopes = vec![];
    other.issuer = "partner".into();
    assert!(!allows(&p, &req("GET", "/g"), &other));
    assert!(!allows(&p, &req("GET", "/s"), &other));
    assert!(!allows(&p, &req("GET", "/sc"), &other));
    assert!(allows(&p, &req("GET", "/i"), &other));
}

#[test]
fn emails_and_domains_case_insensitive() {
    let p = policy(
        r#"
[[rule]]
name = "e"
emails = ["ana@example.com"]
paths = ["/e"]
[[rule]]
name = "d"
email_domains = ["EXAMPLE.com"]
paths = ["/d"]
[[rule]]
name = "sd"
email_domains = ["*.corp.example"]
paths = ["/sd"]
"#,
    );
    let me = id(); // Ana@Example.COM
    assert!(allows(&p, &req("GET", "/e"), &me));
    assert!(allows(&p, &req("GET", "/d"), &me));
    assert!(!allows(&p, &req("GET", "/sd"), &me));

    let mut no_email = id();
    no_email.email = None;
    assert!(!allows(&p, &req("GET", "/e"), &no_email));
    assert!(!allows(&p, &req("GET", "/d"), &no_email));

    let mut sub = id();
    sub.email = Some("bo@eu.corp.example".into());
    assert!(allows(&p, &req("GET", "/sd"), &sub));
    assert!(!allows(&p, &req("GET", "/d"), &sub));
    // The domain is what follows the last @.
    sub.email = Some("ana@example.com@evil.net".into());
    assert!(!allows(&p, &req("GET", "/d"), &sub));
    assert!(!allows(&p, &req("GET", "/e"), &sub));
}

#[test]
fn claims_condition() {
    let p = policy(
        r#"
[[rule]]
name = "str"
paths = ["/str"]
claims = { tier = ["silver", "gold"] }
[[rule]]
name = "num-bool"
paths = ["/nb"]
claims = { level = 3, admin = false, ratio = 0.5 }
[[rule]]
name = "nested-array"
paths = ["/nested"]
claims = { "realm_access.roles" = "writer" }
[[rule]]
name = "namespaced"
paths = ["/ns"]
claims = { "https://example.com/roles" = "ns-role" }
[[rule]]
name = "wrong-type"
paths = ["/wt"]
claims = { level = "3" }
[[rule]]
name = "missing"
paths = ["/missing"]
claims = { nope = "x" }
[[rule]]
name = "and"
paths = ["/and"]
claims = { tier = "gold", level = 4 }
"#,
    );
    let me = id();
    assert!(allows(&p, &req("GET", "/str"), &me));
    assert!(allows(&p, &req("GET", "/nb"), &me));
    assert!(allows(&p, &req("GET", "/nested"), &me));
    assert!(allows(&p, &req("GET", "/ns"), &me));
    assert!(!allows(&p, &req("GET", "/wt"), &me), "\"3\" is not 3");
    assert!(!allows(&p, &req("GET", "/missing"), &me));
    assert!(
        !allows(&p, &req("GET", "/and"), &me),
        "claim entries are ANDed"
    );
}

/// A GitHub Actions OIDC token's claims (docs.github.com "About security hardening with OpenID
/// Connect"), with a Keycloak-style `resource_access` keyed by a client id holding dots.
fn github_actions(git_ref: &str, repository: &str) -> Identity {
    let mut me = id();
    me.sub = format!("repo:{repository}:ref:{git_ref}");
    me.claims = serde_json::json!({
        "sub": me.sub,
        "ref": git_ref,
        "ref_type": if git_ref.starts_with("refs/tags/") { "tag" } else { "branch" },
        "repository": repository,
        "repository_owner": repository.split('/').next().unwrap(),
        "job_workflow_ref": format!("{repository}/.github/workflows/release.yml@{git_ref}"),
        "environment": "prod",
        "resource_access": {"gw.example.com": {"roles": ["deployer"]}},
        "resource_access.\"gw.example.com\".roles": ["top-level-lookalike"],
        "run_attempt": "1",
        "level": 3
    })
    .as_object()
    .unwrap()
    .clone();
    me
}

#[test]
fn claims_match_patterns_and_quoted_keys() {
    let p = policy(
        r#"
[[rule]]
name = "release"
paths = ["/release"]
claims_match = { ref = "refs/tags/v*", repository = ["octo-org/*"] }
[[rule]]
name = "workflows"
paths = ["/wf"]
claims_match = { job_workflow_ref = "octo-org/**@refs/heads/main" }
[[rule]]
name = "exact-stays-exact"
paths = ["/exact"]
claims = { ref = "refs/tags/v*" }
[[rule]]
name = "quoted"
paths = ["/quoted"]
claims = { 'resource_access."gw.example.com".roles' = "deployer" }
[[rule]]
name = "quoted-lookalike"
paths = ["/lookalike"]
claims = { 'resource_access."gw.example.com".roles' = "top-level-lookalike" }
[[rule]]
name = "not-a-string"
paths = ["/num"]
claims_match = { level = "*" }
"#,
    );
    let tag = github_actions("refs/tags/v1.4.0", "octo-org/octo-repo");
    assert!(allows(&p, &req("GET", "/release"), &tag));
    assert!(
        !allows(&p, &req("GET", "/exact"), &tag),
        "claims values stay exact"
    );
    let literal = github_actions("refs/tags/v*", "octo-org/octo-repo");
    assert!(allows(&p, &req("GET", "/exact"), &literal));
    // `*` does not cross `/`: a tag "v1/evil" or a nested repository path does not match.
    assert!(!allows(
        &p,
        &req("GET", "/release"),
        &github_actions("refs/tags/v1/x", "octo-org/r")
    ));
    assert!(!allows(
        &p,
        &req("GET", "/release"),
        &github_actions("refs/heads/main", "octo-org/r")
    ));
    assert!(!allows(
        &p,
        &req("GET", "/release"),
        &github_actions("refs/tags/v1", "evil-org/r")
    ));
    // `**` does.
    let main = github_actions("refs/heads/main", "octo-org/octo-repo");
    assert!(allows(&p, &req("GET", "/wf"), &main));
    assert!(!allows(&p, &req("GET", "/wf"), &tag));
    // A quoted key holds dots, and only the nested walk is tried.
    assert!(allows(&p, &req("GET", "/quoted"), &tag));
    assert!(!allows(&p, &req("GET", "/lookalike"), &tag));
    assert!(
        !allows(&p, &req("GET", "/num"), &tag),
        "patterns match strings only"
    );
}

#[test]
fn conditions_are_anded() {
    let p = policy(
        r#"
[[rule]]
name = "all"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
hosts = ["dbc.example.com"]
sources = ["10.0.0.0/8"]
groups = ["analysts"]
issuers = ["corp"]
"#,
    );
    let me = id();
    let base = req("POST", "/serving-endpoints/m/invocations");
    assert!(allows(&p, &base, &me));
    let mut r = base;
    r.method = "GET";
    assert!(!allows(&p, &r, &me));
    let mut r = base;
    r.host = Some("other.example.com");
    assert!(!allows(&p, &r, &me));
    let mut r = base;
    r.src = Some("192.0.2.1".parse().unwrap());
    assert!(!allows(&p, &r, &me));
    let mut other = id();
    other.groups.clear();
    assert!(!allows(&p, &base, &other));
}

#[test]
fn principal_variants() {
    let p = policy(
        r#"
[[rule]]
name = "default"
paths = ["/default"]
[[rule]]
name = "email"
paths = ["/email"]
principal = "email"
[[rule]]
name = "sub"
paths = ["/sub"]
principal = "sub"
[[rule]]
name = "claim"
paths = ["/claim"]
principal = "claim:tier"
[[rule]]
name = "claim-num"
paths = ["/claim-num"]
principal = "claim:oid"
[[rule]]
name = "claim-nested"
paths = ["/claim-nested"]
principal = "claim:realm_access.roles"
[[rule]]
name = "static"
paths = ["/static"]
principal = "static:svc-gateway"
upstream = "sp"
"#,
    );
    let me = id();
    let principal = |path: &str, id: &Identity| match p.evaluate(&req("GET", path), id) {
        Outcome::Allow(r) => r.principal_for(Some(id)),
        o => panic!("{path}: {o:?}"),
    };
    assert_eq!(
        principal("/default", &me).as_deref(),
        Some("Ana@Example.COM")
    );
    assert_eq!(principal("/email", &me).as_deref(), Some("Ana@Example.COM"));
    assert_eq!(principal("/sub", &me).as_deref(), Some("user-1"));
    assert_eq!(principal("/claim", &me).as_deref(), Some("gold"));
    assert_eq!(principal("/claim-num", &me).as_deref(), Some("12345"));
    assert_eq!(principal("/static", &me).as_deref(), Some("svc-gateway"));

    let mut no_email = id();
    no_email.email = None;
    assert_eq!(principal("/default", &no_email).as_deref(), Some("user-1"));
    // An explicit principal that cannot be resolved makes the rule not match this caller.
    assert!(matches!(
        p.evaluate(&req("GET", "/email"), &no_email),
        Outcome::NoMatch
    ));
    // An array claim is not a name.
    assert!(matches!(
        p.evaluate(&req("GET", "/claim-nested"), &me),
        Outcome::NoMatch
    ));
    let static_rule = p.rules().iter().find(|r| &*r.name == "static").unwrap();
    assert_eq!(static_rule.upstream.as_deref(), Some("sp"));
    assert_eq!(
        static_rule.principal_for(None).as_deref(),
        Some("svc-gateway")
    );
    let email_rule = p.rules().iter().find(|r| &*r.name == "email").unwrap();
    assert_eq!(email_rule.principal_for(None), None);
}

#[test]
fn unresolvable_principal_never_skips_a_deny() {
    let p = policy(
        r#"
[[rule]]
name = "deny"
paths = ["/x"]
effect = "deny"
[[rule]]
name = "allow"
paths = ["/x"]
"#,
    );
    let mut anon = id();
    anon.email = None;
    anon.sub = String::new();
    assert_eq!(decide(&p, &req("GET", "/x"), &anon), "deny:deny");
}

#[test]
fn rule_without_conditions_matches_everything() {
    let p = policy("[[rule]]\nname = \"any-authenticated\"\n");
    assert!(allows(&p, &req("DELETE", "/a/b/c"), &id()));
    let r = RequestView {
        method: "GET",
        path: "/",
        host: None,
        src: None,
    };
    assert!(allows(&p, &r, &id()));
}

#[test]
fn empty_policy_matches_nothing() {
    let p = policy("");
    assert!(p.rules().is_empty());
    assert!(matches!(
        p.evaluate(&req("GET", "/"), &id()),
        Outcome::NoMatch
    ));
    assert!(p.match_public(&req("GET", "/")).is_none());
}
