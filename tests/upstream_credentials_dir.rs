//! Secrets from `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`). Kept alone in its own
//! test binary because it sets a process environment variable.

#[path = "support/databricks.rs"]
mod databricks;

use databricks::{FakeDatabricks, CLIENT_ID, CLIENT_SECRET};
use idgate::config::Config;
use idgate::upstream::{Broker, CREDENTIALS_DIRECTORY_ENV};

#[tokio::test]
async fn relative_secret_names_are_read_from_the_credentials_directory() {
    let fake = FakeDatabricks::start().await;
    let creds = tempfile::tempdir().unwrap();
    std::fs::write(creds.path().join("serving-sp.secret"), CLIENT_SECRET).unwrap();
    std::fs::write(creds.path().join("pat"), "dapi-from-credentials\n").unwrap();
    // The only test in this binary: no other thread reads the environment concurrently.
    std::env::set_var(CREDENTIALS_DIRECTORY_ENV, creds.path());
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
    let cfg = Config::from_toml(&text, "test").unwrap();
    let b = Broker::new(&cfg, None, reqwest::Client::new()).expect("secrets found");
    let cc = b.credential("serving-sp", None, None).await.unwrap();
    assert!(cc.starts_with("Bearer dbx-cc-"), "{cc}");
    assert_eq!(fake.rejected(), 0, "{:?}", fake.last_rejection());
    assert_eq!(
        &*b.credential("pat", None, None).await.unwrap(),
        "Bearer dapi-from-credentials"
    );

    // A name that is in neither place is reported with its key.
    std::fs::remove_file(creds.path().join("pat")).unwrap();
    let p = Broker::new(&cfg, Some(&b), reqwest::Client::new()).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "upstream.pat.token_file");
    std::env::remove_var(CREDENTIALS_DIRECTORY_ENV);
}
