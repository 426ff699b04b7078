//! `client_credentials` upstreams against the fake Databricks token endpoint: caching, single
//! flight, refresh ahead of expiry, retries, failure handling, reload, and what a failure
//! logs (upstream, URL, side at fault, cause; never a secret).

mod support;
use support::databricks;
#[path = "support/log_capture.rs"]
mod log_capture;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use databricks::{Fail, FakeDatabricks, CLIENT_ID, CLIENT_SECRET};
use idgate::config::Config;
use idgate::upstream::{Blame, Broker, Outcome, Side, UpstreamError};
use log_capture::LogCapture;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The text of a config with one client_credentials upstream `name`; `extra` lines go into
/// its table. Its secret file is `sp.secret`, next to the config ([`broker`]).
fn config(name: &str, fake: &FakeDatabricks, extra: &str) -> String {
    format!(
        "[upstream.{name}]\nkind = \"client_credentials\"\ntoken_url = \"{}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_file = \"sp.secret\"\n{extra}\n",
        fake.token_url
    )
}

fn secret_dir(secret: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("sp.secret"), format!("{secret}\n")).unwrap();
    d
}

/// The broker of config `text`, as if the file were in `dir`.
fn broker(text: &str, dir: &Path, previous: Option<&Broker>) -> Broker {
    let cfg = Config::from_toml_in(text, "test", dir).unwrap_or_else(|e| panic!("{e}"));
    Broker::new(&cfg, previous, http()).expect("valid config")
}

fn counter(upstream: &str, result: &str) -> u64 {
    idgate::metrics::metrics()
        .upstream_token_requests
        .with_label_values(&[upstream, result])
        .get()
}

/// [`config`] at an arbitrary `token_url`.
fn config_at(name: &str, token_url: &str, extra: &str) -> String {
    format!(
        "[upstream.{name}]\nkind = \"client_credentials\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_file = \"sp.secret\"\n{extra}\n"
    )
}

fn outcome(e: &UpstreamError) -> Option<Outcome> {
    match e {
        UpstreamError::Failed { failure, .. } => Some(failure.outcome),
        _ => None,
    }
}

#[tokio::test]
async fn cached_token_serves_100_sequential_calls_with_one_request() {
    let fake = FakeDatabricks::start().await;
    let dir = secret_dir(CLIENT_SECRET);
    let b = broker(&config("cc-seq", &fake, ""), dir.path(), None);
    let first = b.credential("cc-seq", None, None).await.unwrap();
    assert!(first.starts_with("Bearer dbx-cc-"), "{first}");
    for _ in 0..99 {
        assert_eq!(b.credential("cc-seq", None, None).await.unwrap(), first);
    }
    assert_eq!(fake.requests(), 1);
    assert_eq!(fake.rejected(), 0, "{:?}", fake.last_rejection());
    assert_eq!(counter("cc-seq", "success"), 1);
    let hist = idgate::metrics::metrics()
        .upstream_token_duration
        .with_label_values(&["cc-seq"]);
    assert_eq!(hist.get_sample_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_make_one_request() {
    let fake = FakeDatabricks::start().await;
    // Slow enough that all callers arrive while the first request is in flight.
    fake.set_delay(Duration::from_millis(300));
    let dir = secret_dir(CLIENT_SECRET);
    let b = Arc::new(broker(&config("cc-flight", &fake, ""), dir.path(), None));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.credential("cc-flight", None, None).await })
        })
        .collect();
    let mut tokens = std::collections::HashSet::new();
    for t in tasks {
        tokens.insert(t.await.unwrap().unwrap());
    }
    assert_eq!(fake.requests(), 1);
    assert_eq!(tokens.len(), 1, "everyone got the same token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_ahead_of_expiry_in_the_background() {
    let fake = FakeDatabricks::start().await;
    fake.set_expires_in(Some(2));
    let dir = secret_dir(CLIENT_SECRET);
    // Refresh due at 1s; served until 1.8s (2s minus a tenth).
    let b = broker(
        &config("cc-refresh", &fake, "refresh_ahead = \"1s\""),
        dir.path(),
        None,
    );
    let t0 = Instant::now();
    let first = b.credential("cc-refresh", None, None).await.unwrap();
    // From now on the endpoint is slow: a caller that waited for it would take >= 400ms.
    fake.set_delay(Duration::from_millis(400));
    let deadline = t0 + Duration::from_secs(5);
    let mut slowest = Duration::ZERO;
    let second = loop {
        assert!(Instant::now() < deadline, "no background refresh within 5s");
        let started = Instant::now();
        let got = b.credential("cc-refresh", None, None).await.unwrap();
        slowest = slowest.max(started.elapsed());
        if got != first {
            break got;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(1800),
            "first token served after its usable lifetime"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(second.starts_with("Bearer dbx-cc-"));
    assert_eq!(fake.requests(), 2);
    assert!(
        slowest < Duration::from_millis(200),
        "a caller waited for the refresh: {slowest:?}"
    );
}

#[tokio::test]
async fn expired_token_is_never_served() {
    let fake = FakeDatabricks::start().await;
    fake.set_expires_in(Some(1));
    let dir = secret_dir(CLIENT_SECRET);
    // No refresh ahead: the token simply runs out and the next call fetches a new one.
    let b = broker(
        &config("cc-expiry", &fake, "refresh_ahead = \"0s\""),
        dir.path(),
        None,
    );
    let t0 = Instant::now();
    let first = b.credential("cc-expiry", None, None).await.unwrap();
    let deadline = t0 + Duration::from_secs(4);
    loop {
        assert!(Instant::now() < deadline, "token never replaced");
        let got = b.credential("cc-expiry", None, None).await.unwrap();
        if got != first {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(900),
            "served a token past 90% of its 1s lifetime"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn retries_after_429_honouring_retry_after() {
    let fake = FakeDatabricks::start().await;
    fake.fail_next(
        Fail::TooMany {
            retry_after_secs: 1,
        },
        1,
    );
    let dir = secret_dir(CLIENT_SECRET);
    let b = broker(
        &config("cc-429", &fake, "total_budget = \"3s\""),
        dir.path(),
        None,
    );
    let t0 = Instant::now();
    let tok = b.credential("cc-429", None, None).await.unwrap();
    let took = t0.elapsed();
    assert!(tok.starts_with("Bearer dbx-cc-"));
    assert_eq!(fake.requests(), 2);
    assert!(
        took >= Duration::from_secs(1),
        "did not wait Retry-After: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(counter("cc-429", "http_429"), 1);
    assert_eq!(counter("cc-429", "success"), 1);
}

#[tokio::test]
async fn retry_after_beyond_the_budget_fails_at_once() {
    let fake = FakeDatabricks::start().await;
    fake.fail_next(
        Fail::TooMany {
            retry_after_secs: 30,
        },
        1,
    );
    let dir = secret_dir(CLIENT_SECRET);
    let b = broker(&config("cc-429-long", &fake, ""), dir.path(), None);
    let t0 = Instant::now();
    let e = b.credential("cc-429-long", None, None).await.unwrap_err();
    assert_eq!(outcome(&e), Some(Outcome::Http429), "{e}");
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    // The Retry-After holds off further requests.
    let e = b.credential("cc-429-long", None, None).await.unwrap_err();
    match e {
        UpstreamError::BackingOff { retry_in, .. } => {
            assert!(retry_in > Duration::from_secs(25), "{retry_in:?}")
        }
        other => panic!("expected BackingOff, got {other}"),
    }
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn endpoint_down_fails_within_the_budget_then_holds_off() {
    let fake = FakeDatabricks::start().await;
    fake.fail_always(Some(Fail::Unavailable));
    let dir = secret_dir(CLIENT_SECRET);
    let b = broker(
        &config(
            "cc-down",
            &fake,
            "timeout = \"300ms\"\ntotal_budget = \"1s\"",
        ),
        dir.path(),
        None,
    );
    let t0 = Instant::now();
    let e = b.credential("cc-down", None, None).await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(outcome(&e), Some(Outcome::Http5xx), "{e}");
    assert!(
        took < Duration::from_millis(1100),
        "exceeded the budget: {took:?}"
    );
    let attempts = fake.requests();
    assert!(
        attempts >= 2,
        "5xx must be retried, got {attempts} request(s)"
    );
    assert_eq!(counter("cc-down", "http_5xx"), attempts);
    assert!(e.to_string().contains("TEMPORARILY_UNAVAILABLE"), "{e}");
    // Right after: fail fast without calling the endpoint.
    let t1 = Instant::now();
    let e = b.credential("cc-down", None, None).await.unwrap_err();
    assert!(matches!(e, UpstreamError::BackingOff { .. }), "{e}");
    assert!(t1.elapsed() < Duration::from_millis(50));
    assert_eq!(fake.requests(), attempts);
    // Recovery: once the hold-off is over, the next call succeeds.
    fake.fail_always(None);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match b.credential("cc-down", None, None).await {
            Ok(t) => {
                assert!(t.starts_with("Bearer dbx-cc-"));
                break;
            }
            Err(UpstreamError::BackingOff { retry_in, .. }) => {
                assert!(Instant::now() < deadline, "never recovered");
                tokio::time::sleep(retry_in.min(Duration::from_millis(200))).await;
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
}

#[tokio::test]
async fn hanging_endpoint_times_out_within_the_budget() {
    let fake = FakeDatabricks::start().await;
    fake.fail_always(Some(Fail::Hang(Duration::from_secs(30))));
    let dir = secret_dir(CLIENT_SECRET);
    let b = broker(
        &config(
            "cc-hang",
            &fake,
            "timeout = \"200ms\"\ntotal_budget = \"600ms\"",
        ),
        dir.path(),
        None,
    );
    let t0 = Instant::now();
    let e = b.credential("cc-hang", None, None).await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(outcome(&e), Some(Outcome::Timeout), "{e}");
    assert!(took < Duration::from_millis(800), "{took:?}");
    assert!(counter("cc-hang", "timeout") >= 1);
}

#[tokio::test]
async fn garbage_response_is_invalid_and_not_retried() {
    let fake = FakeDatabricks::start().await;
    fake.fail_always(Some(Fail::Garbage));
    let dir = secret_dir(CLIENT_SECRET);
    let b = broker(&config("cc-garbage", &fake, ""), dir.path(), None);
    let e = b.credential("cc-garbage", None, None).await.unwrap_err();
    assert_eq!(outcome(&e), Some(Outcome::InvalidResponse), "{e}");
    assert!(e.to_string().contains("not JSON"), "{e}");
    assert_eq!(fake.requests(), 1);
    assert_eq!(counter("cc-garbage", "invalid_response"), 1);
}

#[tokio::test]
async fn wrong_secret_is_a_4xx_without_retry_and_without_leaking() {
    let fake = FakeDatabricks::start().await;
    let dir = secret_dir("dose-wrong-secret-value");
    let b = broker(&config("cc-badsecret", &fake, ""), dir.path(), None);
    let e = b.credential("cc-badsecret", None, None).await.unwrap_err();
    assert_eq!(outcome(&e), Some(Outcome::Http4xx), "{e}");
    let shown = e.to_string();
    assert!(
        shown.contains("HTTP 400") && shown.contains("invalid_client"),
        "{shown}"
    );
    assert!(!shown.contains("dose-wrong"), "secret in error: {shown}");
    assert!(!format!("{e:?}").contains("dose-wrong"), "secret in Debug");
    assert_eq!(fake.requests(), 1);
    assert_eq!(counter("cc-badsecret", "http_4xx"), 1);
    // The gateway's own credential was refused: upstream_refused 502, not retried by clients.
    assert_eq!(e.blame(), Blame::Gateway);
    // Every caller would get the same refusal: it is answered again without asking (past the
    // 1 s hold-off, within the 10 s it is remembered).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let again = b.credential("cc-badsecret", None, None).await.unwrap_err();
    assert_eq!(again.blame(), Blame::Gateway, "{again}");
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn custom_scope_is_sent() {
    let fake = FakeDatabricks::start().await;
    fake.expect_scope("sql offline_access");
    let dir = secret_dir(CLIENT_SECRET);
    let b = broker(
        &config("cc-scope", &fake, "scope = \"sql offline_access\""),
        dir.path(),
        None,
    );
    b.credential("cc-scope", None, None).await.unwrap();
    assert_eq!(fake.rejected(), 0, "{:?}", fake.last_rejection());
}

#[tokio::test]
async fn reload_keeps_the_cache_only_when_config_and_secret_are_unchanged() {
    let fake = FakeDatabricks::start().await;
    let dir = secret_dir(CLIENT_SECRET);
    let cfg = config("cc-reload", &fake, "");
    let b1 = broker(&cfg, dir.path(), None);
    let t1 = b1.credential("cc-reload", None, None).await.unwrap();

    let b2 = broker(&cfg, dir.path(), Some(&b1));
    assert_eq!(b2.credential("cc-reload", None, None).await.unwrap(), t1);
    assert_eq!(fake.requests(), 1, "unchanged upstream kept its token");

    let changed = config("cc-reload", &fake, "timeout = \"1500ms\"");
    let b3 = broker(&changed, dir.path(), Some(&b2));
    let t3 = b3.credential("cc-reload", None, None).await.unwrap();
    assert_ne!(t3, t1, "changed config starts a fresh cache");
    assert_eq!(fake.requests(), 2);

    // Same config, rotated secret (which this fake does not accept): the secret is re-read
    // and the old token is not carried over.
    std::fs::write(dir.path().join("sp.secret"), "dose-rotated\n").unwrap();
    let b4 = broker(&changed, dir.path(), Some(&b3));
    let e = b4.credential("cc-reload", None, None).await.unwrap_err();
    assert_eq!(outcome(&e), Some(Outcome::Http4xx), "{e}");
    assert_eq!(fake.requests(), 3);
}

/// The one warning of a failed fetch: exactly one line for `upstream`, which names the URL
/// (without its query) and the side at fault, and holds no secret.
fn failure_line(logs: &LogCapture, upstream: &str, url: &str, side: &str) -> String {
    let text = logs.text();
    let lines = logs.lines_with(&[&format!("upstream=\"{upstream}\"")]);
    assert_eq!(lines.len(), 1, "one line per failed fetch:\n{text}");
    let line = lines.into_iter().next().unwrap();
    assert!(line.contains(" WARN "), "{line}");
    assert!(line.contains(&format!("url=\"{url}\"")), "{line}");
    assert!(line.contains(&format!("side=\"{side}\"")), "{line}");
    assert!(line.contains("attempts="), "{line}");
    for secret in [CLIENT_SECRET, "dose-wrong-secret-value", "tenant-secret"] {
        assert!(
            !text.contains(secret),
            "secret or query in the log:\n{text}"
        );
    }
    line
}

#[tokio::test]
async fn unresolvable_token_host_logs_url_network_side_and_dns_cause() {
    let (logs, _guard) = LogCapture::start();
    let dir = secret_dir(CLIENT_SECRET);
    let cfg = config_at(
        "cc-dns",
        "https://nonexistent.invalid/oidc/v1/token?tenant=tenant-secret",
        "timeout = \"300ms\"\ntotal_budget = \"800ms\"",
    );
    let b = broker(&cfg, dir.path(), None);
    let e = b.credential("cc-dns", None, None).await.unwrap_err();
    let UpstreamError::Failed { failure, .. } = &e else {
        panic!("expected Failed, got {e}");
    };
    assert_eq!(failure.side(), Side::Network, "{e}");
    let line = failure_line(
        &logs,
        "cc-dns",
        "https://nonexistent.invalid:443/oidc/v1/token",
        "network",
    );
    // The resolver's own words vary (no network: "Temporary failure in name resolution");
    // reqwest's chain always names the DNS step.
    assert!(line.contains("dns error"), "{line}");
    assert!(line.contains("error sending request"), "{line}");
    assert!(e.to_string().contains("dns error"), "{e}");
}

#[tokio::test]
async fn refused_connection_logs_url_network_side_and_connect_cause() {
    let (logs, _guard) = LogCapture::start();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/oidc/v1/token");
    let dir = secret_dir(CLIENT_SECRET);
    let cfg = config_at(
        "cc-closed",
        &format!("{url}?tenant=tenant-secret"),
        "timeout = \"300ms\"\ntotal_budget = \"800ms\"",
    );
    let b = broker(&cfg, dir.path(), None);
    let t0 = Instant::now();
    let e = b.credential("cc-closed", None, None).await.unwrap_err();
    let took = t0.elapsed();
    assert_eq!(outcome(&e), Some(Outcome::Network), "{e}");
    // Transient for the client (503 upstream_unavailable, Retry-After)...
    assert_eq!(e.blame(), Blame::Transient);
    let line = failure_line(&logs, "cc-closed", &url, "network");
    assert!(line.contains("result=\"network\""), "{line}");
    assert!(line.contains("Connection refused"), "{line}");
    // ...but not retried by the agent: a refused connection fails at once, well inside even a
    // 500 ms `timeout processing`, instead of spending the budget on more refusals.
    assert!(line.contains("attempts=1 "), "{line}");
    assert!(took < Duration::from_millis(200), "{took:?}");
}

#[tokio::test]
async fn refused_client_logs_the_oauth_error_and_not_the_secret() {
    let (logs, _guard) = LogCapture::start();
    let fake = FakeDatabricks::start().await;
    let dir = secret_dir("dose-wrong-secret-value");
    let b = broker(&config("cc-refused-log", &fake, ""), dir.path(), None);
    b.credential("cc-refused-log", None, None)
        .await
        .unwrap_err();
    let line = failure_line(&logs, "cc-refused-log", &fake.token_url, "refused");
    assert!(line.contains("status=400"), "{line}");
    assert!(line.contains("error=\"invalid_client\""), "{line}");
    assert!(line.contains("attempts=1"), "{line}");
    // Within the hold-off the next request is refused without a request and without a line.
    b.credential("cc-refused-log", None, None)
        .await
        .unwrap_err();
    assert_eq!(
        logs.lines_with(&["cc-refused-log"]).len(),
        1,
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn failing_endpoint_logs_the_token_endpoint_side() {
    let (logs, _guard) = LogCapture::start();
    let fake = FakeDatabricks::start().await;
    fake.fail_always(Some(Fail::Garbage));
    let dir = secret_dir(CLIENT_SECRET);
    let b = broker(&config("cc-garbage-log", &fake, ""), dir.path(), None);
    b.credential("cc-garbage-log", None, None)
        .await
        .unwrap_err();
    let line = failure_line(&logs, "cc-garbage-log", &fake.token_url, "token_endpoint");
    assert!(line.contains("response is not JSON"), "{line}");
}
