//! Loading as a whole: defaults, positions, syntax errors, every problem once. Each section's
//! own checks are tested in its module.

use std::path::PathBuf;
use std::time::Duration;

use super::*;

/// The problems of `text` (which must not load).
pub(crate) fn problems(text: &str) -> Vec<Problem> {
    match Config::from_toml(text, "t") {
        Ok(_) => panic!("expected problems:\n{text}"),
        Err(e) => e.problems,
    }
}

/// Their key paths.
pub(crate) fn keys(text: &str) -> Vec<String> {
    problems(text).into_iter().map(|p| p.key).collect()
}

#[test]
fn embedded_default_is_valid() {
    let c = Config::embedded();
    assert_eq!(c.spop.listen.to_string(), "127.0.0.1:12345");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9180");
    assert!(c.issuers.is_empty() && c.rules.is_empty() && c.upstreams.is_empty());
}

#[test]
fn empty_text_is_the_defaults() {
    let c = Config::from_toml("", "t").unwrap();
    assert_eq!(c.spop, SpopConfig::default());
    assert_eq!(c.admin, AdminConfig::default());
    assert_eq!(c.log, LogConfig::default());
    assert_eq!(c.auth, AuthConfig::default());
    assert_eq!(c.paths, PathsConfig::default());
}

#[test]
fn unknown_keys_are_errors_with_their_path_and_position() {
    let p = problems("[spop]\nlisten = \"127.0.0.1:1\"\nlsten = 1\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "spop.lsten");
    assert_eq!(p[0].at, Some(Position { line: 3, column: 1 }));
    assert!(
        p[0].message
            .starts_with("unknown field `lsten`, expected one of `listen`, `socket_mode`"),
        "{}",
        p[0]
    );
    assert_eq!(keys("[admn]\nlisten = \"127.0.0.1:9\"\n"), ["admn"]);
    assert_eq!(
        keys(
            "[[issuer]]\nname = \"a\"\nissuer = \"https://a\"\naudiences = [\"x\"]\naudience = 1\n"
        ),
        ["issuer[0].audience"]
    );
}

#[test]
fn wrongly_typed_values_name_their_exact_path() {
    let text = "[log]\nlevel = \"info\"\n\n[[issuer]]\nname = \"a\"\nissuer = \"https://a\"\n\
                audiences = [\"x\"]\n[[issuer]]\nname = \"b\"\nissuer = \"https://b\"\n\
                audiences = [\"y\"]\nleeway = 30\n";
    let p = problems(text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].to_string(),
        "issuer[1].leeway (line 12, column 10): invalid type: integer `30`, expected a \
         duration such as \"30s\" or \"10m\""
    );
    let p = problems("[[rule]]\nname = \"r\"\npaths = [\n  \"/a\",\n  7,\n  \"b\",\n]\n");
    let shown: Vec<String> = p.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "rule[0].paths[1] (line 5, column 3): invalid type: integer `7`, expected a path \
             pattern such as \"/api/2.0/**\"",
            "rule[0].paths[2] (line 6, column 3): \"b\" must start with /",
        ]
    );
    let p = problems("[upstream.x]\nkind = \"static\"\ntoken_file = 5\n[spop]\nlisten = 1\n");
    let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["upstream.x.token_file", "spop.listen"], "{p:?}");
}

#[test]
fn missing_required_keys_are_reported_at_their_table() {
    let p = problems("[[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(
        p[0].to_string(),
        "issuer[0].audiences (line 1, column 1): missing field `audiences`"
    );
    assert_eq!(keys("[[rule]]\npaths = [\"/x\"]\n"), ["rule[0].name"]);
    assert_eq!(
        keys("[upstream.x]\ntoken_file = \"t\"\n"),
        ["upstream.x.kind"]
    );
}

#[test]
fn wrong_table_shapes() {
    assert_eq!(keys("spop = 1\n"), ["spop"]);
    assert_eq!(keys("issuer = 1\n"), ["issuer"]);
    assert_eq!(keys("issuer = [1]\n"), ["issuer[0]"]);
    assert_eq!(keys("upstream = { x = 1 }\n"), ["upstream.x"]);
    let p = problems("[[rule]]\nname = \"r\"\npaths = \"/x\"\n");
    assert_eq!(p[0].message, "invalid type: string, expected an array");
}

#[test]
fn syntax_errors_say_where() {
    let p = problems("[spop\n");
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "(syntax)");
    assert_eq!(p[0].at.map(|a| a.line), Some(1));
    assert!(!p[0].message.contains('\n'));
    // Every error the parser recovers from, in file order.
    let p = problems("a = \"x\nb = 1\nc = [1,\n");
    assert!(p.len() >= 2, "{p:?}");
    assert!(p.iter().all(|p| p.key == "(syntax)" && p.at.is_some()));
    assert!(p.windows(2).all(|w| w[0].at <= w[1].at), "{p:?}");
}

#[test]
fn semantic_problems_are_located_by_key() {
    let p = problems("[spop]\n\nmax_connections = 0\n");
    assert_eq!(
        p[0].to_string(),
        "spop.max_connections (line 3, column 19): must be at least 1"
    );
}

#[test]
fn a_table_with_a_bad_value_skips_its_checks_not_the_others() {
    // issuer[0]'s leeway is of the wrong shape: its other values are not judged (its
    // audiences would be); issuer[1] is checked as usual, and rules can still name it.
    let p = problems(
        "[[issuer]]\nname = \"a\"\nissuer = \"https://a\"\naudiences = []\nleeway = 1\n\
         [[issuer]]\nname = \"b\"\nissuer = \"https://b\"\naudiences = []\n\
         [[rule]]\nname = \"r\"\nissuers = [\"a\", \"b\"]\n",
    );
    let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["issuer[0].leeway", "issuer[1].audiences"], "{p:?}");
}

#[test]
fn every_problem_of_every_section_once() {
    let p = problems(
        r#"
[spop]
max_connections = 0
backlog = "lots"
[admin]
listen = "localhost"
[log]
level = "info,idgate=loud"
[auth]
max_token_bytes = 1
[paths]
allow_non_ascii = "yes"
[[issuer]]
name = "corp"
issuer = "http://idp.example.com"
audiences = ["api"]
algorithms = ["RS256", "HS256", "none"]
[[issuer]]
name = "corp2"
issuer = "https://idp2.example.com"
audiences = []
[[issuer]]
name = "corp2"
issuer = "https://idp3.example.com"
audiences = ["api"]
[[rule]]
name = "r"
paths = ["/x", "/a/../b"]
methods = ["get"]
[[rule]]
name = "pub"
public = true
paths = ["/p"]
effect = "deny"
[[rule]]
name = "fwd"
upstream = "missing"
[upstream.sp]
kind = "static"
"#,
    );
    let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
    // In file order. [spop] has a value of the wrong shape, so its max_connections is not
    // judged; every other table is.
    assert_eq!(
        keys,
        [
            "spop.backlog",
            "admin.listen",
            "log.level",
            "auth.max_token_bytes",
            "paths.allow_non_ascii",
            "issuer[0].issuer",
            "issuer[0].algorithms[1]",
            "issuer[0].algorithms[2]",
            "issuer[1].audiences",
            "issuer[2].name",
            "rule[0].paths[1]",
            "rule[0].methods[0]",
            "rule[1].effect",
            "rule[2].upstream",
            "upstream.sp.token_file",
        ],
        "{p:#?}"
    );
}

#[test]
fn secret_files_are_looked_up_next_to_the_config_file() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("s.secret"), "x").unwrap();
    let text = "[upstream.s]\nkind = \"static\"\ntoken_file = \"s.secret\"\n";
    let c = Config::from_toml_in(text, "t", d.path()).unwrap();
    let token_file = |c: &Config| match &c.upstreams["s"].credential {
        Credential::Static { token_file } => token_file.clone(),
        other => panic!("{other:?}"),
    };
    let f = token_file(&c);
    assert_eq!(c.upstreams["s"].kind(), UpstreamKind::Static);
    assert_eq!(f.name(), PathBuf::from("s.secret"));
    assert_eq!(f.path(), d.path().join("s.secret"));
    let file = d.path().join("idgate.toml");
    std::fs::write(&file, text).unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(token_file(&c).path(), d.path().join("s.secret"));
    let p = problems(text);
    assert_eq!(p[0].key, "upstream.s.token_file");
}

#[test]
fn durations_parse() {
    let c = Config::from_toml("[spop]\nhello_timeout = \"1m 30s\"\n", "t").unwrap();
    assert_eq!(c.spop.hello_timeout.0, Duration::from_secs(90));
    let p = problems("[spop]\nhello_timeout = \"soon\"\n");
    assert!(p[0].message.contains("invalid duration"), "{p:?}");
}
