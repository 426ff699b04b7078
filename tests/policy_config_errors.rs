//! Every rule-configuration error is refused at load with its key path and a useful message;
//! a file with one mistake in every section reports each of them, once.

use std::sync::LazyLock;

use idgate::config::{Config, ConfigError, Problem};
use idgate::policy::Policy;

const PRELUDE: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://idp.example.com"
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

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_in(text, "test", DIR.path())
}

fn problems(rules: &str) -> Vec<Problem> {
    match load(&format!("{PRELUDE}\n{rules}")) {
        Ok(_) => panic!("expected problems for:\n{rules}"),
        Err(e) => e.problems,
    }
}

/// Assert exactly one problem, at `key`, whose message contains `needle`.
fn one(rules: &str, key: &str, needle: &str) {
    let p = problems(rules);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].key, key, "{p:#?}");
    assert!(
        p[0].message.contains(needle),
        "{key}: {:?} lacks {needle:?}",
        p[0].message
    );
}

#[test]
fn names() {
    one("[[rule]]\nname = \"\"\n", "rule[0].name", "empty");
    one(
        "[[rule]]\nname = \"has space\"\n",
        "rule[0].name",
        "A-Z a-z 0-9",
    );
    one(
        &format!("[[rule]]\nname = \"{}\"\n", "n".repeat(65)),
        "rule[0].name",
        "at most 64",
    );
    one(
        "[[rule]]\nname = \"a\"\n[[rule]]\nname = \"b\"\n[[rule]]\nname = \"a\"\n",
        "rule[2].name",
        "duplicate rule name \"a\" (also rule[0])",
    );
    // A third copy still points at the first one.
    let p = problems("[[rule]]\nname = \"a\"\n[[rule]]\nname = \"a\"\n[[rule]]\nname = \"a\"\n");
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!(p[1].key, "rule[2].name");
    assert!(p[1].message.contains("(also rule[0])"), "{p:#?}");
}

#[test]
fn paths() {
    one(
        "[[rule]]\nname = \"r\"\npaths = []\n",
        "rule[0].paths",
        "empty list",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/ok\", \"\"]\n",
        "rule[0].paths[1]",
        "empty path pattern",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"api/**\"]\n",
        "rule[0].paths[0]",
        "must start with /",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/a/**/b/**\"]\n",
        "rule[0].paths[0]",
        "at most one **",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/a**\"]\n",
        "rule[0].paths[0]",
        "whole segment",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/a/*x*\"]\n",
        "rule[0].paths[0]",
        "at most one *",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/a/../b\"]\n",
        "rule[0].paths[0]",
        "dot-segment",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/a//b\"]\n",
        "rule[0].paths[0]",
        "empty segment",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/a?b=1\"]\n",
        "rule[0].paths[0]",
        "query string",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/a%20b\"]\n",
        "rule[0].paths[0]",
        "decoded",
    );
    // Segments that request paths can never have (refused before the rules).
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/api/2.0/token/create.\"]\n",
        "rule[0].paths[0]",
        "ending in a dot",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/a/b /c\"]\n",
        "rule[0].paths[0]",
        "whitespace",
    );
    one(
        "[[rule]]\nname = \"r\"\npaths = [\"/files/caf\u{e9}/**\"]\n",
        "rule[0].paths[0]",
        "[paths] allow_non_ascii = true",
    );
}

#[test]
fn non_ascii_patterns_with_the_opt_out() {
    let with_opt_out = |rules: &str| {
        load(&format!(
            "{PRELUDE}\n[paths]\nallow_non_ascii = true\n{rules}"
        ))
    };
    let cfg = with_opt_out("[[rule]]\nname = \"r\"\npaths = [\"/files/caf\u{e9}/**\"]\n");
    assert_eq!(Policy::compile(&cfg.unwrap()).rules().len(), 1);
    // Still never matching: characters Unicode folds to ASCII, invisible characters.
    for pat in [
        "/api/2.0/to\u{212a}en/**",
        "/a/\u{ff0e}\u{ff0e}",
        "/a\u{200b}b",
    ] {
        let p = with_opt_out(&format!("[[rule]]\nname = \"r\"\npaths = [\"{pat}\"]\n"))
            .expect_err(pat)
            .problems;
        assert_eq!(p.len(), 1, "{p:#?}");
        assert_eq!(p[0].key, "rule[0].paths[0]");
        assert!(p[0].message.contains("never matches"), "{p:#?}");
    }
    // `[paths]` takes no other key, and the value must be a boolean.
    for bad in [
        "[paths]\nallow_unicode = true\n",
        "[paths]\nallow_non_ascii = \"yes\"\n",
    ] {
        let e = Config::from_toml(bad, "test").unwrap_err();
        assert!(e.to_string().contains("paths"), "{e}");
    }
    let c = Config::from_toml("", "test").unwrap();
    assert!(!c.paths.allow_non_ascii, "strict by default");
}

#[test]
fn methods() {
    one(
        "[[rule]]\nname = \"r\"\nmethods = []\n",
        "rule[0].methods",
        "empty list",
    );
    one(
        "[[rule]]\nname = \"r\"\nmethods = [\"GET\", \"post\"]\n",
        "rule[0].methods[1]",
        "\"POST\"",
    );
    one(
        "[[rule]]\nname = \"r\"\nmethods = [\"GE T\"]\n",
        "rule[0].methods[0]",
        "not a valid HTTP method",
    );
    one(
        "[[rule]]\nname = \"r\"\nmethods = [\"*\", \"GET\"]\n",
        "rule[0].methods",
        "cannot be combined",
    );
}

#[test]
fn hosts() {
    one(
        "[[rule]]\nname = \"r\"\nhosts = []\n",
        "rule[0].hosts",
        "empty list",
    );
    one(
        "[[rule]]\nname = \"r\"\nhosts = [\"dbc.example.com:443\"]\n",
        "rule[0].hosts[0]",
        "port",
    );
    one(
        "[[rule]]\nname = \"r\"\nhosts = [\"a.*.example.com\"]\n",
        "rule[0].hosts[0]",
        "wildcard",
    );
    one(
        "[[rule]]\nname = \"r\"\nhosts = [\"\"]\n",
        "rule[0].hosts[0]",
        "empty",
    );
}

#[test]
fn identity_lists() {
    for key in [
        "groups",
        "subjects",
        "emails",
        "email_domains",
        "scopes",
        "issuers",
    ] {
        one(
            &format!("[[rule]]\nname = \"r\"\n{key} = []\n"),
            &format!("rule[0].{key}"),
            "empty list",
        );
    }
    one(
        "[[rule]]\nname = \"r\"\ngroups = [\"a\", \"\"]\n",
        "rule[0].groups[1]",
        "empty",
    );
    one(
        "[[rule]]\nname = \"r\"\nsubjects = [\"\"]\n",
        "rule[0].subjects[0]",
        "empty",
    );
    one(
        "[[rule]]\nname = \"r\"\nemails = [\"ana\"]\n",
        "rule[0].emails[0]",
        "not an email",
    );
    one(
        "[[rule]]\nname = \"r\"\nemail_domains = [\"@example.com\"]\n",
        "rule[0].email_domains[0]",
        "without @",
    );
    one(
        "[[rule]]\nname = \"r\"\nscopes = [\"a b\"]\n",
        "rule[0].scopes[0]",
        "without spaces",
    );
    one(
        "[[rule]]\nname = \"r\"\nissuers = [\"corp\", \"nope\"]\n",
        "rule[0].issuers[1]",
        "no [[issuer]] is named \"nope\"",
    );
}

#[test]
fn claims() {
    one(
        "[[rule]]\nname = \"r\"\nclaims = {}\n",
        "rule[0].claims",
        "empty table",
    );
    one(
        "[[rule]]\nname = \"r\"\nclaims = { \"a..b\" = \"x\" }\n",
        "rule[0].claims[\"a..b\"]",
        "empty segment",
    );
    one(
        "[[rule]]\nname = \"r\"\nclaims = { roles = [] }\n",
        "rule[0].claims[\"roles\"]",
        "empty list",
    );
    one(
        "[[rule]]\nname = \"r\"\nclaims = { roles = { a = 1 } }\n",
        "rule[0].claims[\"roles\"]",
        "unsupported value type",
    );
    one(
        "[[rule]]\nname = \"r\"\nclaims = { roles = [[\"a\"]] }\n",
        "rule[0].claims[\"roles\"]",
        "unsupported value type",
    );
    one(
        "[[rule]]\nname = \"r\"\nclaims = { x = nan }\n",
        "rule[0].claims[\"x\"]",
        "NaN",
    );
}

#[test]
fn sources() {
    one(
        "[[rule]]\nname = \"r\"\nsources = []\n",
        "rule[0].sources",
        "empty list",
    );
    one(
        "[[rule]]\nname = \"r\"\nsources = [\"10.0.0.0/8\", \"10.0.0.0/40\"]\n",
        "rule[0].sources[1]",
        "not a valid CIDR",
    );
    one(
        "[[rule]]\nname = \"r\"\nsources = [\"10.1.2.3/8\"]\n",
        "rule[0].sources[0]",
        "host bits set; did you mean \"10.0.0.0/8\"",
    );
    one(
        "[[rule]]\nname = \"r\"\nsources = [\"localhost\"]\n",
        "rule[0].sources[0]",
        "not a valid IP",
    );
}

#[test]
fn principal_syntax() {
    one(
        "[[rule]]\nname = \"r\"\nprincipal = \"user\"\n",
        "rule[0].principal",
        "expected \"email\", \"sub\"",
    );
    one(
        "[[rule]]\nname = \"r\"\nprincipal = \"claim:\"\n",
        "rule[0].principal",
        "empty claim path",
    );
    one(
        "[[rule]]\nname = \"r\"\nprincipal = \"static:\"\n",
        "rule[0].principal",
        "needs a value",
    );
    one(
        "[[rule]]\nname = \"r\"\nprincipal = \"static:\u{202e}nimda\"\n",
        "rule[0].principal",
        "invisible",
    );
    one(
        "[[rule]]\nname = \"r\"\nprincipal = \"static:svc\u{200b}\"\n",
        "rule[0].principal",
        "invisible",
    );
}

#[test]
fn upstream_references() {
    one(
        "[[rule]]\nname = \"r\"\nupstream = \"missing\"\n",
        "rule[0].upstream",
        "no [upstream.missing] section",
    );
    one(
        "[[rule]]\nname = \"r\"\npublic = true\npaths = [\"/p\"]\nupstream = \"fed\"\n",
        "rule[0].upstream",
        "token_exchange",
    );
    one(
        "[[rule]]\nname = \"r\"\neffect = \"deny\"\nupstream = \"sp\"\n",
        "rule[0].upstream",
        "deny rule",
    );
    one(
        "[[rule]]\nname = \"r\"\neffect = \"deny\"\nprincipal = \"sub\"\n",
        "rule[0].principal",
        "deny rule",
    );
}

#[test]
fn public_rules() {
    one(
        "[[rule]]\nname = \"r\"\npublic = true\npaths = [\"/p\"]\neffect = \"deny\"\n",
        "rule[0].effect",
        "cannot deny",
    );
    one(
        "[[rule]]\nname = \"r\"\npublic = true\n",
        "rule[0].paths",
        "must list paths",
    );
    for (key, value) in [
        ("groups", "[\"g\"]"),
        ("subjects", "[\"s\"]"),
        ("emails", "[\"a@b.c\"]"),
        ("email_domains", "[\"b.c\"]"),
        ("scopes", "[\"s\"]"),
        ("claims", "{ a = 1 }"),
        ("claims_match", "{ a = \"x*\" }"),
        ("issuers", "[\"corp\"]"),
    ] {
        one(
            &format!("[[rule]]\nname = \"r\"\npublic = true\npaths = [\"/p\"]\n{key} = {value}\n"),
            &format!("rule[0].{key}"),
            "identity conditions",
        );
    }
    for principal in ["email", "sub", "claim:x"] {
        one(
            &format!(
                "[[rule]]\nname = \"r\"\npublic = true\npaths = [\"/p\"]\nprincipal = \"{principal}\"\n"
            ),
            "rule[0].principal",
            "static",
        );
    }
    // A public rule with a client_credentials upstream is fine: no caller token is needed.
    let cfg = load(&format!(
        "{PRELUDE}\n[[rule]]\nname = \"r\"\npublic = true\npaths = [\"/p\"]\nupstream = \"sp\"\nprincipal = \"static:anon\"\n"
    ))
    .unwrap();
    assert_eq!(
        Policy::compile(&cfg).rules()[0].upstream.as_deref(),
        Some("sp")
    );
}

#[test]
fn unknown_rule_keys_and_values_are_refused_by_the_parser() {
    one(
        "[[rule]]\nname = \"r\"\ngroup = [\"a\"]\n",
        "rule[0].group",
        "unknown field `group`",
    );
    one(
        "[[rule]]\nname = \"r\"\neffect = \"permit\"\n",
        "rule[0].effect",
        "unknown variant `permit`",
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let p = problems(
        r#"
[[rule]]
name = ""
paths = ["nope", "/ok", "/a/../b"]
methods = ["get"]
sources = ["300.0.0.1"]

[[rule]]
name = "pub"
public = true
effect = "deny"
groups = ["g"]
upstream = "missing"
"#,
    );
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for k in [
        "rule[0].name",
        "rule[0].paths[0]",
        "rule[0].paths[2]",
        "rule[0].methods[0]",
        "rule[0].sources[0]",
        "rule[1].effect",
        "rule[1].paths",
        "rule[1].groups",
        "rule[1].upstream",
    ] {
        assert!(keys.contains(&k), "missing {k} in {keys:?}");
    }
    // Display gives "key: message", one per problem.
    assert!(p.iter().all(|p| p.to_string().starts_with(&p.key)));
}

/// One mistake in every section (values of the wrong shape, unknown keys, checks across
/// sections, a missing secret file): each reported exactly once, at its exact key path, in
/// file order, with its line.
#[test]
fn one_mistake_in_every_section_each_reported_once() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"
[spop]
hello_timeout = "soon"

[admin]
listen = "localhost:9180"

[log]
level = "info,idgate=loud"

[auth]
cookies = "access_token"

[paths]
allow_non_ascii = "yes"

[[issuer]]
name = "corp"
issuer = "https://idp.example.com"
audiences = ["api"]
algorithms = ["RS256", "none"]

[[issuer]]
name = "partner"
issuer = "http://idp.partner.example"
audiences = ["api"]

[[issuer]]
name = "lab"
issuer = "https://idp.lab.example"
audiences = ["api"]
leeway = 30

[[rule]]
name = "api"
paths = ["/api/**", "/a//b"]

[[rule]]
name = "health"
public = true
paths = ["/healthz"]
upstream = "fed"

[upstream.serving-sp]
kind = "client_credentials"
token_url = "https://dbc.example.com/oidc/v1/token"
client_id = "sp"
client_secret_file = "serving-sp.secret"

[upstream.fed]
kind = "token_exchange"
token_url = "https://dbc.example.com/oidc/v1/token"
timeout = "10s"
"#;
    let e = Config::from_toml_in(text, "idgate.toml", dir.path()).unwrap_err();
    let found: Vec<(&str, usize)> = e
        .problems
        .iter()
        .map(|p| (p.key.as_str(), p.at.expect("every problem has a line").line))
        .collect();
    assert_eq!(
        found,
        [
            ("spop.hello_timeout", 3),
            ("admin.listen", 6),
            ("log.level", 9),
            ("auth.cookies", 12),
            ("paths.allow_non_ascii", 15),
            ("issuer[0].algorithms[1]", 21),
            ("issuer[1].issuer", 25),
            ("issuer[2].leeway", 32),
            ("rule[0].paths[1]", 36),
            ("rule[1].upstream", 42),
            ("upstream.serving-sp.client_secret_file", 48),
            ("upstream.fed.timeout", 53),
        ],
        "{e}"
    );
    let why = |key: &str| {
        let p = e.problems.iter().find(|p| p.key == key).unwrap();
        p.message.clone()
    };
    assert!(why("spop.hello_timeout").contains("invalid duration \"soon\""));
    assert!(why("auth.cookies").starts_with("unknown field `cookies`"));
    assert!(why("issuer[0].algorithms[1]").starts_with("\"none\" is not allowed"));
    assert!(why("issuer[1].issuer").contains("http:// is only allowed for loopback hosts"));
    assert_eq!(
        why("issuer[2].leeway"),
        "invalid type: integer `30`, expected a duration such as \"30s\" or \"10m\""
    );
    assert!(why("rule[0].paths[1]").contains("empty segment"));
    assert!(why("rule[1].upstream").contains("token_exchange"));
    assert!(why("upstream.fed.timeout").contains("total_budget"));
    let secret = why("upstream.serving-sp.client_secret_file");
    assert!(
        secret.starts_with("\"serving-sp.secret\" not found (looked in ")
            && secret.contains(&dir.path().display().to_string()),
        "{secret}"
    );
    // The one-line-per-problem form check-config prints.
    let shown = e.to_string();
    assert_eq!(shown.lines().count(), e.problems.len());
    assert!(shown.lines().all(|l| l.starts_with("idgate.toml: ")));
    assert!(shown.contains(
        "idgate.toml: issuer[2].leeway (line 32, column 10): invalid type: integer `30`"
    ));
}
