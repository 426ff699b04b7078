//! Secret files named relatively: looked up in `$CREDENTIALS_DIRECTORY` (systemd
//! `LoadCredential=`) first, then next to the configuration file, never in the current
//! directory. Kept alone in its own test binary because it sets a process environment
//! variable.

mod support;
use support::databricks;

use databricks::{FakeDatabricks, CLIENT_ID, CLIENT_SECRET};
use idgate::config::{Config, CREDENTIALS_DIRECTORY_ENV};
use idgate::upstream::Broker;

#[tokio::test]
async fn relative_secret_names_are_read_from_the_credentials_directory_then_the_config_directory() {
    let fake = FakeDatabricks::start().await;
    let creds = tempfile::tempdir().unwrap();
    let conf = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("serving-sp.secret"), CLIENT_SECRET).unwrap();
    std::fs::write(creds.path().join("pat"), "dapi-from-credentials\n").unwrap();
    std::fs::write(conf.path().join("pat"), "dapi-next-to-the-config\n").unwrap();
    let text = format!(
        r#"
[upstream.serving-sp]
kind = "client_credentials"
token_url = "{}"
client_id = "{CLIENT_ID}"
client_secret_file = "serving-sp.secret"

[upstream.pat]
kind = "static"
token_file = "pat"
"#,
        fake.token_url
    );
    let path = conf.path().join("idgate.toml");
    std::fs::write(&path, &text).unwrap();

    // The only test in this binary: no other thread reads the environment concurrently.
    std::env::set_var(CREDENTIALS_DIRECTORY_ENV, creds.path());
    let cfg = Config::load(&path).unwrap();
    let b = Broker::new(&cfg, None, reqwest::Client::new()).expect("secrets found");
    let cc = b.credential("serving-sp", None, None).await.unwrap();
    assert!(cc.starts_with("Bearer dbx-cc-"), "{cc}");
    assert_eq!(fake.rejected(), 0, "{:?}", fake.last_rejection());
    // In both places: the credentials directory wins.
    assert_eq!(
        &*b.credential("pat", None, None).await.unwrap(),
        "Bearer dapi-from-credentials"
    );

    // Gone from the credentials directory: the one next to the config.
    std::fs::remove_file(creds.path().join("pat")).unwrap();
    let cfg = Config::load(&path).unwrap();
    let b = Broker::new(&cfg, Some(&b), reqwest::Client::new()).unwrap();
    assert_eq!(
        &*b.credential("pat", None, None).await.unwrap(),
        "Bearer dapi-next-to-the-config"
    );

    // In neither place: a problem naming both.
    std::fs::remove_file(conf.path().join("pat")).unwrap();
    let e = Config::load(&path).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].key, "upstream.pat.token_file");
    assert_eq!(
        e.problems[0].message,
        format!(
            "\"pat\" not found (looked in $CREDENTIALS_DIRECTORY={}, {})",
            creds.path().display(),
            conf.path().display()
        )
    );

    // Never the current directory.
    std::env::remove_var(CREDENTIALS_DIRECTORY_ENV);
    std::env::set_current_dir(creds.path()).unwrap();
    std::fs::write(creds.path().join("pat"), "dapi-cwd\n").unwrap();
    let e = Config::load(&path).unwrap_err();
    let pat = e
        .problems
        .iter()
        .find(|p| p.key == "upstream.pat.token_file");
    assert_eq!(
        pat.expect("reported").message,
        format!(
            "\"pat\" not found (looked in {}; $CREDENTIALS_DIRECTORY is not set)",
            conf.path().display()
        )
    );
}
