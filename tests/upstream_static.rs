//! `static` upstreams: a bearer token read from a file, re-read on reload.

use idgate::config::Config;
use idgate::upstream::Broker;

fn config(path: &std::path::Path) -> Config {
    let text = format!(
        "[upstream.pat]\nkind = \"static\"\ntoken_file = \"{}\"\n",
        path.display()
    );
    Config::from_toml(&text, "test").unwrap()
}

#[tokio::test]
async fn static_token_comes_from_the_file_and_is_reread_on_reload() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("pat.token");
    std::fs::write(&file, "dapi0123456789abcdef-1\n").unwrap();
    let cfg = config(&file);
    let b1 = Broker::new(&cfg, None, reqwest::Client::new()).unwrap();
    assert_eq!(
        &*b1.credential("pat", None, None).await.unwrap(),
        "Bearer dapi0123456789abcdef-1"
    );
    // Rotated on disk, picked up by the next Broker::new (SIGHUP reload).
    std::fs::write(&file, "dapi0123456789abcdef-2").unwrap();
    let b2 = Broker::new(&cfg, Some(&b1), reqwest::Client::new()).unwrap();
    assert_eq!(
        &*b2.credential("pat", None, None).await.unwrap(),
        "Bearer dapi0123456789abcdef-2"
    );
    // The old broker is untouched (in-flight decisions finish with it).
    assert_eq!(
        &*b1.credential("pat", None, None).await.unwrap(),
        "Bearer dapi0123456789abcdef-1"
    );
}

#[tokio::test]
async fn a_token_that_is_not_header_safe_is_a_config_problem() {
    let d = tempfile::tempdir().unwrap();
    let file = d.path().join("pat.token");
    std::fs::write(&file, "Bearer dapi0123\n").unwrap();
    let p = Broker::new(&config(&file), None, reqwest::Client::new()).unwrap_err();
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "upstream.pat.token_file");
    assert!(p[0].message.contains("whitespace"), "{}", p[0]);
    assert!(
        p[0].message.contains(&file.display().to_string()),
        "{}",
        p[0]
    );
    assert!(!p[0].message.contains("dapi0123"), "token echoed: {}", p[0]);
}
