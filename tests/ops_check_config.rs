//! `idgate check-config` and `idgate explain`, run as the operator runs them: the real binary,
//! its exit code, and what it prints.
//!
//! check-config: exit 0 on the shipped example (its secret provided through
//! `$CREDENTIALS_DIRECTORY` or an absolute path) and on the embedded default; exit 1 with one
//! line per problem, each `<file>: <key>...: <why>`, for every kind of mistake, and every
//! problem of every section in one run. It never contacts the IdP.
//!
//! explain: exit 0 allow / 1 deny / 2 usage or configuration error, and the JSON report
//! (decision, status, reason, rule, variables) for a MockIdp token.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::agent::Agent;
use support::auth_kit::{claims, MockIdp, Signer};
use support::{background_runtime, repo_path};

fn idgate(args: &[&str], env: &[(&str, &Path)]) -> Output {
    let mut cmd = Command::new(Agent::binary());
    cmd.args(args).env_remove("CREDENTIALS_DIRECTORY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running idgate")
}

fn check_config(path: &Path) -> Output {
    idgate(&["check-config", "-c", path.to_str().unwrap()], &[])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    )
}

/// Writes `body` to `<dir>/<name>` and returns the path.
fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn shipped_example_is_valid_once_its_secret_exists() {
    use std::os::unix::fs::PermissionsExt;
    // The example as an operator installs it: copied, with its secret beside it.
    let example = repo_path("haproxy/idgate.toml");
    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let copy = dir.path().join("idgate.toml");
    std::fs::copy(&example, &copy).unwrap();
    let copy_arg = copy.to_str().unwrap();

    // Without the secret file: exactly one problem, naming the key and both places looked in.
    let out = idgate(
        &["check-config", "-c", copy_arg],
        &[("CREDENTIALS_DIRECTORY", creds.path())],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{}", describe(&out));
    assert!(
        lines[0].starts_with(&format!(
            "{}: upstream.serving-sp.client_secret_file (line ",
            copy.display()
        )),
        "{}",
        describe(&out)
    );
    assert!(
        lines[0].ends_with(&format!(
            ": \"serving-sp.secret\" not found (looked in $CREDENTIALS_DIRECTORY={}, {})",
            creds.path().display(),
            dir.path().display()
        )),
        "{}",
        describe(&out)
    );

    // Next to the configuration file, mode 0600: valid, and nothing to warn about.
    let secret_path = dir.path().join("serving-sp.secret");
    support::write_secret(&secret_path, "s3cret\n");
    let out = check_config(&copy);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(text(&out.stdout).trim(), format!("{}: OK", copy.display()));
    assert!(out.stderr.is_empty(), "{}", describe(&out));

    // A world-readable secret is valid but check-config warns, as the agent does at start.
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = check_config(&copy);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("world-readable"),
        "{}",
        describe(&out)
    );
    assert!(!text(&out.stderr).contains("s3cret"), "{}", describe(&out));

    // Or in $CREDENTIALS_DIRECTORY (systemd LoadCredential=), for the file where it is.
    support::write_secret(&creds.path().join("serving-sp.secret"), "s3cret\n");
    let out = idgate(
        &["check-config", "-c", example.to_str().unwrap()],
        &[("CREDENTIALS_DIRECTORY", creds.path())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("{}: OK", example.display())
    );
    assert!(out.stderr.is_empty(), "{}", describe(&out));

    // Never in the current directory.
    let out = Command::new(Agent::binary())
        .args(["check-config", "-c", example.to_str().unwrap()])
        .env_remove("CREDENTIALS_DIRECTORY")
        .current_dir(creds.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("$CREDENTIALS_DIRECTORY is not set"),
        "{}",
        describe(&out)
    );
}

#[test]
fn embedded_default_is_valid() {
    let out = check_config(&repo_path("src/default.toml"));
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert!(text(&out.stdout).ends_with(": OK\n"), "{}", describe(&out));
}

/// Each mistake alone in a file: exit 1, exactly one line, `<file>: <key>` then why.
#[test]
fn each_mistake_is_one_line_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    // Not world-readable: check-config would warn, and each case must print exactly one line.
    let secret = dir.path().join("cc.secret");
    support::write_secret(&secret, "s3cret\n");
    let issuer = "[[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = [\"api\"]\n";
    let cases: Vec<(&str, String, &str, &str)> = vec![
        (
            "unknown key",
            "[spop]\nlisten = \"127.0.0.1:12345\"\nlsten = \"127.0.0.1:1\"\n".into(),
            "spop.lsten (line 3",
            "unknown field `lsten`",
        ),
        (
            "unknown key in an issuer",
            format!("{issuer}audience = [\"x\"]\n"),
            "issuer[0].audience (line 5",
            "unknown field `audience`",
        ),
        (
            "unknown table",
            "[admn]\nlisten = \"127.0.0.1:9\"\n".into(),
            "admn (line 1",
            "unknown field `admn`",
        ),
        (
            "bad duration",
            "[spop]\nhello_timeout = \"soon\"\n".into(),
            "spop.hello_timeout (line 2",
            "invalid duration",
        ),
        (
            "bad listen address",
            "[admin]\nlisten = \"localhost\"\n".into(),
            "admin.listen (line 2",
            "invalid socket address",
        ),
        (
            "syntax error",
            "[spop]\nlisten = \"127.0.0.1:1\n".into(),
            "(syntax) (line 2",
            "",
        ),
        (
            "missing required key",
            "[[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\n".into(),
            "issuer[0].audiences (line 1",
            "missing field `audiences`",
        ),
        (
            "wrongly typed value",
            format!("{issuer}leeway = 30\n"),
            "issuer[0].leeway (line 5, column 10)",
            "invalid type: integer `30`, expected a duration",
        ),
        (
            "algorithm none",
            format!("{issuer}algorithms = [\"RS256\", \"none\"]\n"),
            "issuer[0].algorithms[1] (line 5",
            "\"none\" is not allowed",
        ),
        (
            "http:// issuer on a non-loopback host",
            "[[issuer]]\nname = \"corp\"\nissuer = \"http://idp.example.com\"\naudiences = [\"api\"]\n"
                .into(),
            "issuer[0].issuer",
            "http:// is only allowed for loopback hosts",
        ),
        (
            "http:// jwks_uri on a non-loopback host",
            format!("{issuer}jwks_uri = \"http://10.0.0.1/certs\"\n"),
            "issuer[0].jwks_uri",
            "http:// is only allowed for loopback hosts",
        ),
        (
            "empty audiences",
            "[[issuer]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudiences = []\n"
                .into(),
            "issuer[0].audiences",
            "at least one",
        ),
        (
            "duplicate issuer name",
            format!("{issuer}{}", issuer.replace("idp.example.com", "idp2.example.com")),
            "issuer[1].name",
            "duplicate",
        ),
        (
            "bad unix socket mode",
            "[spop]\nlisten = \"unix:/run/idgate/spop.sock\"\nsocket_mode = \"rw-rw----\"\n"
                .into(),
            "spop.socket_mode (line 3",
            "invalid socket mode",
        ),
        (
            "unknown unix socket group",
            "[spop]\nlisten = \"unix:/run/idgate/spop.sock\"\nsocket_group = \"no-such-group-idgate\"\n"
                .into(),
            "spop.socket_group",
            "unknown group",
        ),
        (
            "relative unix socket path",
            "[spop]\nlisten = \"unix:spop.sock\"\n".into(),
            "spop.listen (line 2",
            "must be absolute",
        ),
        (
            "rule naming a missing upstream",
            "[[rule]]\nname = \"r\"\npaths = [\"/x\"]\nupstream = \"nope\"\n".into(),
            "rule[0].upstream",
            "nope",
        ),
        (
            "public deny rule",
            "[[rule]]\nname = \"r\"\npaths = [\"/x\"]\npublic = true\neffect = \"deny\"\n".into(),
            "rule[0].effect",
            "public rule cannot deny",
        ),
        (
            "public rule naming a token_exchange upstream",
            "[upstream.fed]\nkind = \"token_exchange\"\ntoken_url = \"https://dbc.example.com/oidc/v1/token\"\n\n\
             [[rule]]\nname = \"r\"\npaths = [\"/x\"]\npublic = true\nupstream = \"fed\"\n"
                .into(),
            "rule[0].upstream",
            "token_exchange, which needs the caller's token; a public rule has none",
        ),
        (
            "bad CIDR",
            "[[rule]]\nname = \"r\"\npaths = [\"/x\"]\nsources = [\"10.0.0.0/33\"]\n".into(),
            "rule[0].sources[0]",
            "not a valid CIDR",
        ),
        (
            "missing secret file",
            "[upstream.sp]\nkind = \"client_credentials\"\ntoken_url = \"https://dbc.example.com/oidc/v1/token\"\nclient_id = \"x\"\nclient_secret_file = \"/nonexistent/idgate-test.secret\"\n".into(),
            "upstream.sp.client_secret_file (line 5",
            "\"/nonexistent/idgate-test.secret\" not found",
        ),
        (
            "http:// token_url on a non-loopback host",
            format!("[upstream.cc]\nkind = \"client_credentials\"\ntoken_url = \"http://dbc.example.com/token\"\nclient_id = \"x\"\nclient_secret_file = \"{}\"\n", secret.display()),
            "upstream.cc.token_url",
            "http:// is only allowed for loopback hosts",
        ),
        (
            "bad log level",
            "[log]\nlevel = \"info,idgate=loud\"\n".into(),
            "log.level",
            "invalid log filter",
        ),
        (
            "frame size out of range",
            "[spop]\nmax_frame_size = 100\n".into(),
            "spop.max_frame_size",
            "between 256 and 1048576",
        ),
    ];
    let mut failures = Vec::new();
    for (i, (name, body, key, why)) in cases.iter().enumerate() {
        let path = write(dir.path(), &format!("case{i}.toml"), body);
        let out = check_config(&path);
        let err = text(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        let prefix = format!("{}: {key}", path.display());
        let ok = out.status.code() == Some(1)
            && out.stdout.is_empty()
            && lines.len() == 1
            && lines[0].starts_with(&prefix)
            && lines[0].contains(why);
        if !ok {
            failures.push(format!(
                "case {name:?}: wanted one line starting {prefix:?} containing {why:?}\n{}",
                describe(&out)
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_problem_of_every_section_is_reported_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "many.toml",
        r#"
[spop]
max_connections = 0

[auth]
cookies = "access_token"

[[issuer]]
name = "corp"
issuer = "http://idp.example.com"
audiences = ["api"]
algorithms = ["RS256", "none"]

[[issuer]]
name = "lab"
issuer = "https://lab.example.com"
audiences = []
leeway = "10m"

[[rule]]
name = "r"
paths = ["/x"]
sources = ["10.0.0.0/33"]

[[rule]]
name = "s"
paths = ["/y"]
upstream = "nope"

[upstream.sp]
kind = "static"
token_file = "/nonexistent/idgate-test.token"
"#,
    );
    let out = check_config(&path);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    // In file order, each once.
    let keys = [
        "spop.max_connections",
        "auth.cookies",
        "issuer[0].issuer",
        "issuer[0].algorithms[1]",
        "issuer[1].audiences",
        "issuer[1].leeway",
        "rule[0].sources[0]",
        "rule[1].upstream",
        "upstream.sp.token_file",
    ];
    assert_eq!(lines.len(), keys.len(), "{}", describe(&out));
    for (line, key) in lines.iter().zip(keys) {
        let prefix = format!("{}: {key} (line ", path.display());
        assert!(
            line.starts_with(&prefix),
            "{line:?} is not {key}\n{}",
            describe(&out)
        );
    }
}

#[test]
fn missing_file_is_one_line() {
    let out = check_config(Path::new("/nonexistent/idgate.toml"));
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert_eq!(
        text(&out.stderr).trim(),
        "/nonexistent/idgate.toml: (file): cannot read: No such file or directory (os error 2)"
    );
}

/// check-config validates an issuer without asking it for anything.
#[test]
fn check_config_does_not_contact_the_idp() {
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "idgate.toml",
        &format!(
            "[[issuer]]\nname = \"discovered\"\nissuer = \"{}\"\naudiences = [\"api\"]\n\n\
             [[issuer]]\nname = \"direct\"\nissuer = \"{}/other\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n",
            idp.base,
            idp.base,
            idp.jwks_uri()
        ),
    );
    for _ in 0..3 {
        let out = check_config(&path);
        assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    }
    assert_eq!(
        (idp.discovery_hits(), idp.jwks_hits()),
        (0, 0),
        "check-config fetched from the IdP"
    );
}

// ----- explain -----

struct ExplainSetup {
    _rt: tokio::runtime::Runtime,
    idp: MockIdp,
    signer: Signer,
    dir: tempfile::TempDir,
    config: PathBuf,
}

fn explain_setup() -> ExplainSetup {
    explain_setup_with(
        r#"
[[rule]]
name = "deny-secrets"
paths = ["/api/*/secrets/**"]
effect = "deny"

[[rule]]
name = "ml-read"
methods = ["GET"]
paths = ["/api/**"]
groups = ["ml-engineers"]
"#,
    )
}

/// A mock IdP whose issuer `corp` comes first in the config, then `rest` (more issuers, rules,
/// upstreams; a relative secret file is looked up next to the config, in the setup's `dir`).
fn explain_setup_with(rest: &str) -> ExplainSetup {
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "idgate.toml",
        &format!(
            "[[issuer]]\nname = \"corp\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n{}",
            idp.base,
            idp.jwks_uri(),
            rest
        ),
    );
    ExplainSetup {
        _rt: rt,
        idp,
        signer,
        dir,
        config,
    }
}

fn explain(config: &Path, extra: &[&str]) -> (Option<i32>, Value, Output) {
    let mut args = vec!["explain", "-c", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = idgate(&args, &[]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), json, out)
}

#[test]
fn explain_allowed_denied_and_unmatched() {
    let s = explain_setup();
    let token = s.signer.token(&claims(&s.idp.base));

    // Allowed by rule ml-read: exit 0 and every identity variable.
    let (code, r, out) = explain(
        &s.config,
        &[
            "--method",
            "GET",
            "--path",
            "/api/2.0/clusters/list",
            "--token",
            &token,
        ],
    );
    assert_eq!(code, Some(0), "{}", describe(&out));
    assert_eq!(r["decision"], "allow", "{r:#}");
    assert_eq!(r["status"], 200);
    assert_eq!(r["reason"], "ok");
    assert_eq!(r["rule"], "ml-read");
    let v = &r["variables"];
    assert_eq!(v["allow"], true);
    assert_eq!(v["status"], 200);
    assert_eq!(v["reason"], "ok");
    assert_eq!(v["sub"], "alice");
    assert_eq!(v["email"], "alice@example.com");
    assert_eq!(v["groups"], "ml-engineers");
    assert_eq!(v["issuer"], "corp");
    assert_eq!(v["rule"], "ml-read");
    assert_eq!(v["principal"], "alice@example.com");
    assert!(
        !text(&out.stdout).contains(&token) && !text(&out.stderr).contains(&token),
        "the token was printed"
    );

    // The same token from a file.
    let token_file = write(s.dir.path(), "t.jwt", &format!("{token}\n"));
    let (code, r, out) = explain(
        &s.config,
        &[
            "--method",
            "GET",
            "--path",
            "/api/2.0/clusters/list",
            "--token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, Some(0), "{}", describe(&out));
    assert_eq!(r["rule"], "ml-read");

    // Denied by rule deny-secrets: exit 1, 403, the rule named, identity known.
    let (code, r, out) = explain(
        &s.config,
        &[
            "--method",
            "GET",
            "--path",
            "/api/2.0/secrets/list",
            "--token",
            &token,
        ],
    );
    assert_eq!(code, Some(1), "{}", describe(&out));
    assert_eq!(r["decision"], "deny", "{r:#}");
    assert_eq!(r["status"], 403);
    assert_eq!(r["reason"], "denied_by_rule");
    assert_eq!(r["rule"], "deny-secrets");
    assert_eq!(r["variables"]["allow"], false);
    assert_eq!(r["variables"]["sub"], "alice");
    assert!(r["variables"].get("principal").is_none(), "{r:#}");

    // No rule matches (POST): exit 1, 403 no_matching_rule, rule null.
    let (code, r, out) = explain(
        &s.config,
        &[
            "--method",
            "POST",
            "--path",
            "/api/2.0/clusters/create",
            "--token",
            &token,
        ],
    );
    assert_eq!(code, Some(1), "{}", describe(&out));
    assert_eq!(r["reason"], "no_matching_rule", "{r:#}");
    assert_eq!(r["status"], 403);
    assert_eq!(r["rule"], Value::Null);
    assert!(r["variables"].get("rule").is_none(), "{r:#}");

    // No token: 401 with the challenge.
    let (code, r, out) = explain(
        &s.config,
        &["--method", "GET", "--path", "/api/2.0/clusters/list"],
    );
    assert_eq!(code, Some(1), "{}", describe(&out));
    assert_eq!(r["reason"], "missing_token", "{r:#}");
    assert_eq!(r["status"], 401);
    assert_eq!(
        r["variables"]["www_authenticate"],
        "Bearer realm=\"idgate\""
    );

    // A token signed by a key the IdP does not publish.
    let stranger = Signer::ec2("k1").token(&claims(&s.idp.base));
    let (code, r, out) = explain(
        &s.config,
        &[
            "--method",
            "GET",
            "--path",
            "/api/2.0/clusters/list",
            "--token",
            &stranger,
        ],
    );
    assert_eq!(code, Some(1), "{}", describe(&out));
    assert_eq!(r["reason"], "bad_signature", "{r:#}");
    assert!(r["variables"].get("sub").is_none(), "{r:#}");
    assert!(s.idp.jwks_hits() >= 1);
}

#[test]
fn explain_usage_and_config_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(dir.path(), "bad.toml", "[spop]\nlsten = 1\n");
    let (code, json, out) = explain(&bad, &["--method", "GET", "--path", "/x"]);
    assert_eq!(code, Some(2), "{}", describe(&out));
    assert_eq!(json, Value::Null, "no report on a config error");
    assert!(
        text(&out.stderr).contains(&format!("{}: spop.lsten", bad.display())),
        "{}",
        describe(&out)
    );

    let good = write(dir.path(), "good.toml", "");
    let (code, _, out) = explain(&good, &["--method", "GET"]);
    assert_eq!(code, Some(2), "{}", describe(&out));
    assert!(text(&out.stderr).contains("--path"), "{}", describe(&out));

    let (code, _, out) = explain(
        &good,
        &[
            "--method",
            "GET",
            "--path",
            "/x",
            "--token-file",
            "/nonexistent/t.jwt",
        ],
    );
    assert_eq!(code, Some(2), "{}", describe(&out));

    let (code, _, out) = explain(
        Path::new("/nonexistent/idgate.toml"),
        &["--method", "GET", "--path", "/x"],
    );
    assert_eq!(code, Some(2), "{}", describe(&out));

    // An empty file is the defaults: valid, and without rules every request is refused.
    let (code, r, out) = explain(&good, &["--method", "GET", "--path", "/x"]);
    assert_eq!(code, Some(1), "{}", describe(&out));
    assert_eq!(r["reason"], "missing_token");
}

/// explain's diagnostics on a captured (non-terminal) stderr are plain text: no colour escapes.
#[test]
fn explain_writes_no_colour_codes_when_stderr_is_not_a_terminal() {
    let s = explain_setup();
    let token = s.signer.token(&claims(&s.idp.base));
    let out = idgate(
        &[
            "explain",
            "-c",
            s.config.to_str().unwrap(),
            "--method",
            "GET",
            "--path",
            "/api/2.0/clusters/list",
            "--token",
            &token,
        ],
        &[("RUST_LOG", Path::new("debug"))],
    );
    let err = text(&out.stderr);
    assert!(
        !err.is_empty(),
        "RUST_LOG=debug produced no diagnostics to check"
    );
    assert!(
        !err.contains('\u{1b}'),
        "colour escapes on a pipe:\n{err:?}"
    );
}

/// `--method get` means GET (HTTP clients send methods in capitals), and says so.
#[test]
fn explain_upper_cases_the_method() {
    let s = explain_setup();
    let token = s.signer.token(&claims(&s.idp.base));
    let (code, r, out) = explain(
        &s.config,
        &[
            "--method",
            "get",
            "--path",
            "/api/2.0/clusters/list",
            "--token",
            &token,
        ],
    );
    assert_eq!(code, Some(0), "{}", describe(&out));
    assert_eq!(r["rule"], "ml-read", "{r:#}");
    assert!(
        text(&out.stderr).contains("taken as \"GET\""),
        "{}",
        describe(&out)
    );
}

/// explain waits only for the keys a request needs (none without a token, none for a token of
/// another issuer), and `--policy-only` decides without contacting the token endpoint.
#[test]
fn explain_does_not_wait_for_issuers_it_does_not_need_and_can_skip_upstreams() {
    // A port nothing listens on: the unreachable IdP and the unreachable token endpoint.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let s = explain_setup_with(&format!(
        r#"
[[issuer]]
name = "down"
issuer = "http://{dead}/down"
jwks_uri = "http://{dead}/jwks"
audiences = ["api"]

[[rule]]
name = "health"
public = true
paths = ["/healthz"]

[[rule]]
name = "serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
upstream = "sp"

[upstream.sp]
kind = "client_credentials"
token_url = "http://{dead}/oidc/v1/token"
client_id = "sp"
client_secret_file = "sp.secret"
"#
    ));
    support::write_secret(&s.dir.path().join("sp.secret"), "s3cret\n");
    let config = s.config.clone();
    let quick = std::time::Duration::from_secs(5); // explain's key wait is 10 s
    for (what, args) in [
        (
            "public path, no token",
            vec!["--method", "GET", "--path", "/healthz"],
        ),
        ("no token", vec!["--method", "GET", "--path", "/api/2.0/x"]),
    ] {
        let started = std::time::Instant::now();
        let (code, r, out) = explain(&config, &args);
        assert!(
            started.elapsed() < quick,
            "{what}: waited {:?} for an issuer it does not need",
            started.elapsed()
        );
        assert!(code.is_some(), "{}", describe(&out));
        assert!(r.get("warning").is_none(), "{what}: {r:#}");
    }
    // A token of the reachable issuer: decided at once, policy only (the token endpoint is
    // down, so contacting it would answer 503 upstream_unavailable).
    let token = s.signer.token(&claims(&s.idp.base));
    let started = std::time::Instant::now();
    let (code, r, out) = explain(
        &config,
        &[
            "--method",
            "POST",
            "--path",
            "/serving-endpoints/churn/invocations",
            "--token",
            &token,
            "--policy-only",
        ],
    );
    assert!(started.elapsed() < quick, "waited {:?}", started.elapsed());
    assert_eq!(code, Some(0), "{}", describe(&out));
    assert_eq!(r["decision"], "allow", "{r:#}");
    assert_eq!(r["rule"], "serving");
    assert_eq!(r["upstream"]["name"], "sp", "{r:#}");
    assert_eq!(r["upstream"]["contacted"], false);
    assert!(
        r["variables"].get("upstream_authorization").is_none(),
        "{r:#}"
    );
    // Without --policy-only the agent's answer: the token endpoint is down.
    let (code, r, out) = explain(
        &config,
        &[
            "--method",
            "POST",
            "--path",
            "/serving-endpoints/churn/invocations",
            "--token",
            &token,
        ],
    );
    assert_eq!(code, Some(1), "{}", describe(&out));
    assert_eq!(r["reason"], "upstream_unavailable", "{r:#}");
}

/// A refusal names the rules that came closest and the condition each failed.
#[test]
fn explain_names_the_closest_rules_and_what_failed() {
    let s = explain_setup_with(
        r#"
[[rule]]
name = "serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
hosts = ["dbc.example.com"]
groups = ["ml-engineers"]

[[rule]]
name = "admins"
paths = ["/api/**"]
groups = ["admins"]
"#,
    );
    let config = s.config.clone();
    let token = s.signer.token(&claims(&s.idp.base));
    let serving = [
        "--method",
        "POST",
        "--path",
        "/serving-endpoints/churn/invocations",
        "--token",
        &token,
    ];
    // No --host: the serving rule held methods and paths, failed on hosts.
    let (code, r, out) = explain(&config, &serving);
    assert_eq!(code, Some(1), "{}", describe(&out));
    assert_eq!(r["reason"], "no_matching_rule");
    let first = &r["closest_rules"][0];
    assert_eq!(first["rule"], "serving", "{r:#}");
    assert_eq!(first["failed"], "hosts", "{r:#}");
    assert_eq!(first["conditions_held"], 2, "{r:#}");
    assert!(first["why"].as_str().unwrap().contains("--host"), "{r:#}");
    // With the host it matches.
    let mut with_host = serving.to_vec();
    with_host.extend(["--host", "dbc.example.com"]);
    let (code, r, _) = explain(&config, &with_host);
    assert_eq!(code, Some(0), "{r:#}");
    assert!(r.get("closest_rules").is_none(), "{r:#}");
    // The wrong group: the admins rule failed on groups.
    let (_, r, _) = explain(
        &config,
        &["--method", "GET", "--path", "/api/2.0/x", "--token", &token],
    );
    let names: Vec<(&str, &str)> = r["closest_rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["rule"].as_str().unwrap(), m["failed"].as_str().unwrap()))
        .collect();
    assert!(names.contains(&("admins", "groups")), "{r:#}");
    // No token: identity rules need one.
    let (_, r, _) = explain(&config, &["--method", "GET", "--path", "/api/2.0/x"]);
    assert_eq!(r["closest_rules"][0]["failed"], "token", "{r:#}");
}

/// Per-IdP hints: a valid configuration with the mistake an operator of each IdP is likely to
/// make passes (exit 0), and check-config says what is probably wrong, naming the issuer.
#[test]
fn per_idp_hints_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "okta-org",
            "issuer = \"https://example.okta.com\"\naudiences = [\"api://default\"]",
            "Okta's org authorization server",
        ),
        (
            "entra-v2",
            "issuer = \"https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0\"\naudiences = [\"api://databricks-gateway\"]",
            "v2.0 issuer",
        ),
        (
            "kc-no-realm",
            "issuer = \"https://kc.example.com\"\naudiences = [\"gw\"]\njwks_uri = \"https://kc.example.com/realms/corp/protocol/openid-connect/certs\"",
            "without its realm",
        ),
        (
            "auth0",
            "issuer = \"https://example.us.auth0.com\"\naudiences = [\"https://api.example.com\"]",
            "Auth0's iss ends with a slash",
        ),
    ];
    for (name, issuer, hint) in cases {
        let path = write(
            dir.path(),
            &format!("{name}.toml"),
            &format!("[[issuer]]\nname = \"{name}\"\n{issuer}\n"),
        );
        let out = check_config(&path);
        assert!(out.status.success(), "{name}: {}", describe(&out));
        let stderr = text(&out.stderr);
        assert!(
            stderr.contains(hint) && stderr.contains(name),
            "{name}: {}",
            describe(&out)
        );
    }
}
