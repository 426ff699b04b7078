//! Unit tests: configuration checks and cache deadlines. The HTTP behaviour (retries,
//! single flight, refresh, token exchange) is tested against a fake Databricks token endpoint
//! in `tests/upstream_*.rs`.

use super::*;

fn cfg(text: &str) -> Config {
    Config::from_toml(text, "t").expect("parses")
}

fn problems(cfg: &Config, dir: Option<&Path>) -> Vec<Problem> {
    Broker::with_credentials_dir(cfg, None, reqwest::Client::new(), dir).unwrap_err()
}

fn keys(p: &[Problem]) -> Vec<&str> {
    p.iter().map(|p| p.key.as_str()).collect()
}

#[test]
fn client_credentials_requires_its_fields() {
    let c = cfg("[upstream.sp]\nkind = \"client_credentials\"\n");
    let p = problems(&c, None);
    let k = keys(&p);
    assert!(k.contains(&"upstream.sp.token_url"), "{p:?}");
    assert!(k.contains(&"upstream.sp.client_id"), "{p:?}");
    assert!(k.contains(&"upstream.sp.client_secret_file"), "{p:?}");
    assert_eq!(p.len(), 3, "{p:?}");
}

#[test]
fn fields_of_other_kinds_are_errors() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("tok"), "dapi123\n").unwrap();
    let c = cfg(r#"
[upstream.st]
kind = "static"
token_file = "tok"
token_url = "https://dbc.example.com/oidc/v1/token"
client_id = "abc"
scope = "all-apis"

[upstream.tx]
kind = "token_exchange"
token_url = "https://dbc.example.com/oidc/v1/token"
client_secret_file = "tok"
token_file = "tok"

[upstream.cc]
kind = "client_credentials"
token_url = "https://dbc.example.com/oidc/v1/token"
client_id = "abc"
client_secret_file = "tok"
token_file = "tok"
"#);
    let p = problems(&c, Some(d.path()));
    let k = keys(&p);
    for key in [
        "upstream.st.token_url",
        "upstream.st.client_id",
        "upstream.st.scope",
        "upstream.tx.client_secret_file",
        "upstream.tx.token_file",
        "upstream.cc.token_file",
    ] {
        assert!(k.contains(&key), "{key} not reported: {p:?}");
    }
    assert_eq!(p.len(), 6, "{p:?}");
    let tx = p
        .iter()
        .find(|p| p.key == "upstream.tx.client_secret_file")
        .unwrap();
    assert!(tx.message.contains("no client secret"), "{tx}");
}

#[test]
fn urls_names_and_bounds_are_checked() {
    let c = cfg(r#"
[upstream."bad name"]
kind = "token_exchange"
token_url = "http://dbc.example.com/oidc/v1/token"
client_id = ""
scope = "  "
timeout = "5s"
total_budget = "2s"
cache_size = 0
"#);
    let p = problems(&c, None);
    let k = keys(&p);
    for key in [
        "upstream.bad name",
        "upstream.bad name.token_url",
        "upstream.bad name.client_id",
        "upstream.bad name.scope",
        "upstream.bad name.timeout",
        "upstream.bad name.cache_size",
    ] {
        assert!(k.contains(&key), "{key} not reported: {p:?}");
    }
    let url = p.iter().find(|p| p.key.ends_with(".token_url")).unwrap();
    assert!(url.message.contains("https"), "{url}");
}

#[test]
fn unreadable_or_empty_secrets_are_config_problems() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("empty"), "\n").unwrap();
    let missing = d.path().join("nope");
    let c = cfg(&format!(
        r#"
[upstream.cc]
kind = "client_credentials"
token_url = "https://dbc.example.com/oidc/v1/token"
client_id = "abc"
client_secret_file = "{}"

[upstream.st]
kind = "static"
token_file = "empty"
"#,
        missing.display()
    ));
    let p = problems(&c, Some(d.path()));
    let cc = p
        .iter()
        .find(|p| p.key == "upstream.cc.client_secret_file")
        .unwrap();
    assert!(cc.message.contains("cannot read"), "{cc}");
    let st = p
        .iter()
        .find(|p| p.key == "upstream.st.token_file")
        .unwrap();
    assert!(st.message.contains("empty"), "{st}");
}

#[tokio::test]
async fn static_token_and_unknown_upstream() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("pat"), "dapi0123abcd\n").unwrap();
    let c = cfg("[upstream.pat]\nkind = \"static\"\ntoken_file = \"pat\"\n");
    let b = Broker::with_credentials_dir(&c, None, reqwest::Client::new(), Some(d.path())).unwrap();
    assert_eq!(
        &*b.credential("pat", "", None).await.unwrap(),
        "Bearer dapi0123abcd"
    );
    assert!(b.contains("pat"));
    let e = b.credential("nope", "", None).await.unwrap_err();
    assert_eq!(e, UpstreamError::Unknown("nope".into()));
    assert!(!format!("{b:?}").contains("dapi"), "{b:?}");
}

#[test]
fn basic_auth_is_form_encoded_and_sensitive() {
    let h = basic_auth("id:1", &Secret::new("p&ss+/".into())).unwrap();
    assert!(h.is_sensitive());
    let b64 = h.to_str().unwrap().strip_prefix("Basic ").unwrap();
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!(raw, b"id%3A1:p%26ss%2B%2F");
}

fn token(life: Duration) -> oauth::Token {
    oauth::Token {
        header: Arc::from("Bearer t"),
        lifetime: life,
        requested_at: Instant::now(),
    }
}

#[test]
fn deadlines_respect_margin_and_refresh_ahead() {
    let t = token(Duration::from_secs(3600));
    let e = TokenEntry::new(&t, Duration::from_secs(300), true);
    assert_eq!(e.usable_until, t.requested_at + Duration::from_secs(3590));
    assert!(e.fresh(t.requested_at + Duration::from_secs(3589)));
    assert!(!e.fresh(t.requested_at + Duration::from_secs(3590)));
    let due = t.requested_at + Duration::from_secs(3300);
    assert!(!e.claim_refresh(due - Duration::from_millis(1)));
    assert!(e.claim_refresh(due), "due at lifetime - refresh_ahead");
    assert!(!e.claim_refresh(due), "claimed once");
    assert!(!e.claim_refresh(due + REFRESH_RETRY_INTERVAL - Duration::from_millis(1)));
    assert!(
        e.claim_refresh(due + REFRESH_RETRY_INTERVAL),
        "retried after the interval"
    );

    // Short token: margin is a tenth, refresh at half-life.
    let t = token(Duration::from_secs(2));
    let e = TokenEntry::new(&t, Duration::from_secs(300), true);
    assert_eq!(e.usable_until, t.requested_at + Duration::from_millis(1800));
    assert!(e.claim_refresh(t.requested_at + Duration::from_secs(1)));

    // No refresh when not worthwhile or disabled.
    let e = TokenEntry::new(&t, Duration::from_secs(300), false);
    assert!(!e.claim_refresh(t.requested_at + Duration::from_secs(100)));
    let e = TokenEntry::new(&t, Duration::ZERO, true);
    assert!(!e.claim_refresh(t.requested_at + Duration::from_secs(100)));
}

#[test]
fn holdoff_honours_retry_after() {
    let h = Holdoff::default();
    assert!(h.remaining(Instant::now()).is_none());
    h.after(&Failure {
        outcome: Outcome::Http429,
        status: Some(429),
        error_code: None,
        retry_after: Some(Duration::from_secs(7)),
        detail: None,
    });
    let left = h.remaining(Instant::now()).unwrap();
    assert!(
        left > Duration::from_secs(6) && left <= Duration::from_secs(7),
        "{left:?}"
    );
    // A shorter hold-off never shortens a longer one.
    h.after(&Failure {
        outcome: Outcome::Http5xx,
        status: Some(503),
        error_code: None,
        retry_after: None,
        detail: None,
    });
    assert!(h.remaining(Instant::now()).unwrap() > Duration::from_secs(6));
}

#[test]
fn errors_display_without_secrets() {
    let e = UpstreamError::Failed {
        upstream: Arc::from("sp"),
        failure: Failure {
            outcome: Outcome::Http4xx,
            status: Some(401),
            error_code: Some("invalid_client".into()),
            retry_after: None,
            detail: None,
        },
    };
    assert_eq!(
        e.to_string(),
        "upstream \"sp\": token request failed: http_4xx, HTTP 401, error_code invalid_client"
    );
}

#[test]
fn worth_refreshing_only_if_the_caller_outlives_the_token() {
    let t = token(Duration::from_secs(3600));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(ExchangeSource::worth_refreshing(&t, None));
    assert!(ExchangeSource::worth_refreshing(&t, Some(now + 7200)));
    assert!(!ExchangeSource::worth_refreshing(&t, Some(now + 3600)));
}
