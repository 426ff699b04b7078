//! What `idgate check-config` and `idgate explain` show an operator about enterprise identity
//! settings (issue #17): bare and templated issuers, `tenants`, quoted claim paths and
//! `claims_match` patterns; and the `unknown_issuer` report (the token's iss, escaped, and the
//! configured issuer it nearly names).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};
use support::agent::Agent;
use support::auth_kit::{b64, claims, MockIdp, Signer};
use support::background_runtime;

fn idgate(args: &[&str]) -> Output {
    Command::new(Agent::binary())
        .args(args)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("running idgate")
}

fn write(dir: &Path, body: &str) -> PathBuf {
    let p = dir.join("idgate.toml");
    std::fs::write(&p, body).unwrap();
    p
}

fn check(body: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), body);
    let out = idgate(&["check-config", "-c", p.to_str().unwrap()]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ENTRA: &str = r#"
[[issuer]]
name = "entra"
issuer = "https://login.microsoftonline.com/{tenantid}/v2.0"
jwks_uri = "https://login.microsoftonline.com/common/discovery/v2.0/keys"
audiences = ["6e74172b-be56-4843-9ff4-e66a39bb12e3"]
"#;

#[test]
fn check_config_accepts_enterprise_issuers_and_warns_about_any_tenant() {
    let (code, err) = check(&format!(
        "{ENTRA}\n[[issuer]]\nname = \"google\"\nissuer = \"accounts.google.com\"\n\
         jwks_uri = \"https://www.googleapis.com/oauth2/v3/certs\"\naudiences = [\"x.apps.googleusercontent.com\"]\n\
         [[rule]]\nname = \"r\"\nclaims = {{ 'resource_access.\"gw.example.com\".roles' = \"admin\" }}\n\
         claims_match = {{ ref = \"refs/tags/v*\" }}\n"
    ));
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("accepts tokens of any Entra ID tenant") && err.contains("tenants"),
        "the template without tenants is warned about: {err}"
    );
    let (code, err) = check(&format!(
        "{ENTRA}tenants = [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]\n[[rule]]\nname = \"r\"\n"
    ));
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("any Entra ID tenant"), "{err}");
}

#[test]
fn check_config_explains_enterprise_mistakes() {
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "[[issuer]]\nname = \"g\"\nissuer = \"accounts.google.com\"\naudiences = [\"a\"]\n".into(),
            "issuer[0].jwks_uri",
            "has no scheme",
        ),
        (
            "[[issuer]]\nname = \"e\"\nissuer = \"https://login.microsoftonline.com/{tenantid}/v2.0\"\naudiences = [\"a\"]\n".into(),
            "issuer[0].jwks_uri",
            "common/discovery/v2.0/keys",
        ),
        (
            format!("{ENTRA}tenants = [\"contoso.onmicrosoft.com\"]\n"),
            "issuer[0].tenants[0]",
            "GUID",
        ),
        (
            format!("{ENTRA}tenants = []\n"),
            "issuer[0].tenants",
            "empty list",
        ),
        (
            "[[issuer]]\nname = \"k\"\nissuer = \"https://kc.example.com/realms/x\"\naudiences = [\"a\"]\ntenants = [\"72f988bf-86f1-41af-91ab-2d7cd011db47\"]\n".into(),
            "issuer[0].tenants",
            "only for an issuer with {tenantid}",
        ),
        (
            "[[issuer]]\nname = \"e\"\nissuer = \"https://login.microsoftonline.com/{tenant}/v2.0\"\naudiences = [\"a\"]\n".into(),
            "issuer[0].issuer",
            "{tenantid}",
        ),
        (
            "[[rule]]\nname = \"r\"\nclaims = { 'a.\"b' = 1 }\n".into(),
            "rule[0].claims",
            "unterminated quote",
        ),
        (
            "[[rule]]\nname = \"r\"\nclaims_match = { ref = \"refs/***\" }\n".into(),
            "rule[0].claims_match",
            "***",
        ),
        (
            "[[rule]]\nname = \"r\"\nclaims_match = { ref = 5 }\n".into(),
            "rule[0].claims_match",
            "string",
        ),
    ];
    for (body, key, why) in cases {
        let (code, err) = check(&body);
        assert_eq!(code, Some(1), "{body}\n{err}");
        let line = err
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no line for {key}: {err}"));
        assert!(line.contains(why), "{key}: want {why:?} in {line:?}");
    }
}

#[test]
fn explain_shows_the_unknown_iss_and_what_it_nearly_names() {
    let rt = background_runtime();
    let signer = Signer::ec("k1");
    let idp = rt.block_on(MockIdp::start(&[&signer]));
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        &format!(
            "[[issuer]]\nname = \"corp\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n\
             [[rule]]\nname = \"any\"\n",
            idp.base,
            idp.jwks_uri()
        ),
    );
    let explain = |token: &str| {
        let out = idgate(&[
            "explain",
            "-c",
            config.to_str().unwrap(),
            "--method",
            "GET",
            "--path",
            "/x",
            "--token",
            token,
        ]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code(), v)
    };
    // A trailing slash the configured issuer does not have.
    let slash = format!("{}/", idp.base);
    let (code, r) = explain(&signer.token(&claims(&slash)));
    assert_eq!(code, Some(1), "{r:#}");
    assert_eq!(r["reason"], "unknown_issuer");
    assert_eq!(r["variables"]["reason"], "unknown_issuer");
    assert_eq!(r["issuer_check"]["token_iss"], json!(slash));
    assert_eq!(
        r["issuer_check"]["did_you_mean"],
        json!({"issuer": "corp", "iss": idp.base})
    );
    assert!(
        r["issuer_check"]["why"]
            .as_str()
            .unwrap()
            .contains("did you mean issuer \"corp\""),
        "{r:#}"
    );
    // What the client sees stays fixed: no iss in the challenge.
    let challenge = r["variables"]["www_authenticate"].as_str().unwrap();
    assert!(!challenge.contains(&slash), "{challenge}");

    // Attacker text: control and bidi characters escaped, length capped, no suggestion.
    let evil = format!("https://evil.example\u{202e}\r\n{}", "a".repeat(500));
    let header = b64(br#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#);
    let payload = b64(json!({"iss": evil, "sub": "x"}).to_string().as_bytes());
    let (code, r) = explain(&format!("{header}.{payload}.c2ln"));
    assert_eq!(code, Some(1));
    let shown = r["issuer_check"]["token_iss"].as_str().unwrap();
    assert!(
        shown.starts_with("https://evil.example\\u{202e}\\u{d}\\u{a}aaa"),
        "{shown}"
    );
    assert!(!shown.chars().any(|c| c.is_control() || c == '\u{202e}'));
    assert!(shown.len() < 260, "{}", shown.len());
    assert_eq!(r["issuer_check"]["token_iss_truncated"], true);
    assert!(r["issuer_check"].get("did_you_mean").is_none());
}
