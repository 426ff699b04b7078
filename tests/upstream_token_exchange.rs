//! `token_exchange` (RFC 8693) upstreams against the fake Databricks token endpoint: exact
//! form fields, per-caller separation, single flight, refusals, hold-off, refresh ahead.

mod support;
use support::databricks;
#[path = "support/log_capture.rs"]
mod log_capture;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use databricks::{Fail, FakeDatabricks, CLIENT_ID, GRANT_EXCHANGE};
use idgate::config::Config;
use idgate::decision::Identity;
use idgate::token_key::token_key;
use idgate::upstream::{Blame, Broker, Caller, Outcome, Side, UpstreamError};
use log_capture::LogCapture;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn config(name: &str, fake: &FakeDatabricks, extra: &str) -> Config {
    let text = format!(
        "[upstream.{name}]\nkind = \"token_exchange\"\ntoken_url = \"{}\"\n{extra}\n",
        fake.token_url
    );
    Config::from_toml(&text, "test").unwrap()
}

fn broker(cfg: &Config) -> Broker {
    Broker::new(cfg, None, http()).expect("valid config")
}

fn identity(sub: &str, expires_in: u64) -> Identity {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    Identity {
        issuer: Arc::from("corp"),
        sub: sub.to_string(),
        user: None,
        email: None,
        groups: vec![],
        scopes: vec![],
        expires_at: now + expires_in,
        issued_at: None,
        jti: None,
        claims: serde_json::Map::new(),
    }
}

/// Stand-ins for validated caller JWTs (the broker treats them as opaque).
const ALICE: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnLWFsaWNl";
const BOB: &str = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJib2IifQ.c2lnLWJvYg";

fn bare(header: &str) -> &str {
    header.strip_prefix("Bearer ").expect("Bearer header")
}

#[tokio::test]
async fn each_caller_gets_its_own_token() {
    let fake = FakeDatabricks::start().await;
    let b = broker(&config("tx-sep", &fake, ""));
    let (ia, ib) = (identity("alice", 3600), identity("bob", 3600));
    let a = b
        .credential("tx-sep", Some(ALICE), Some(&ia))
        .await
        .unwrap();
    let bb = b.credential("tx-sep", Some(BOB), Some(&ib)).await.unwrap();
    assert_ne!(a, bb);
    assert_eq!(fake.subject_of(bare(&a)), Some(Some(ALICE.to_string())));
    assert_eq!(fake.subject_of(bare(&bb)), Some(Some(BOB.to_string())));
    // Interleaved repeats are served from the cache, each to its own caller.
    for _ in 0..10 {
        assert_eq!(
            b.credential("tx-sep", Some(BOB), Some(&ib)).await.unwrap(),
            bb
        );
        assert_eq!(
            b.credential("tx-sep", Some(ALICE), Some(&ia))
                .await
                .unwrap(),
            a
        );
    }
    assert_eq!(fake.requests_for_subject(ALICE), 1);
    assert_eq!(fake.requests_for_subject(BOB), 1);
    assert_eq!(fake.requests_for_grant(GRANT_EXCHANGE), 2);
    assert_eq!(fake.rejected(), 0, "{:?}", fake.last_rejection());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_of_one_caller_make_one_request() {
    let fake = FakeDatabricks::start().await;
    fake.set_delay(Duration::from_millis(300));
    let b = Arc::new(broker(&config("tx-flight", &fake, "")));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let b = Arc::clone(&b);
            // Two callers, 50 concurrent first calls each.
            let tok = if i % 2 == 0 { ALICE } else { BOB };
            tokio::spawn(async move { (tok, b.credential("tx-flight", Some(tok), None).await) })
        })
        .collect();
    let mut got = std::collections::HashMap::new();
    for t in tasks {
        let (caller, r) = t.await.unwrap();
        let header = r.unwrap();
        let prev = got.insert(caller, header.clone());
        assert!(prev.is_none() || prev.as_ref() == Some(&header));
    }
    assert_eq!(fake.requests_for_subject(ALICE), 1);
    assert_eq!(fake.requests_for_subject(BOB), 1);
    assert_eq!(fake.requests(), 2);
    assert_ne!(got[ALICE], got[BOB]);
}

#[tokio::test]
async fn client_id_is_sent_only_when_configured() {
    let fake = FakeDatabricks::start().await;
    let without = broker(&config("tx-noid", &fake, ""));
    let with = broker(&config(
        "tx-wif",
        &fake,
        &format!("client_id = \"{CLIENT_ID}\""),
    ));

    // Account-wide federation: the fake insists on no client_id.
    fake.expect_exchange_client_id(None);
    without
        .credential("tx-noid", Some(ALICE), None)
        .await
        .unwrap();
    let e = with
        .credential("tx-wif", Some(ALICE), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("HTTP 400"), "{e}");
    assert!(fake.last_rejection().unwrap().contains("client_id"));

    // Workload identity federation: the fake insists on this client_id.
    fake.expect_exchange_client_id(Some(CLIENT_ID));
    with.credential("tx-wif", Some(BOB), None).await.unwrap();
    let e = without
        .credential("tx-noid", Some(BOB), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("HTTP 400"), "{e}");
}

#[tokio::test]
async fn refused_caller_is_remembered_and_does_not_affect_others() {
    let fake = FakeDatabricks::start().await;
    fake.refuse_subject(BOB);
    let b = broker(&config("tx-refused", &fake, ""));
    for _ in 0..3 {
        let e = b
            .credential("tx-refused", Some(BOB), None)
            .await
            .unwrap_err();
        match &e {
            UpstreamError::Failed { failure, .. } => {
                assert_eq!(failure.outcome, Outcome::Http4xx);
                assert_eq!(failure.error_code.as_deref(), Some("invalid_grant"));
            }
            other => panic!("expected Failed, got {other}"),
        }
        assert!(!e.to_string().contains(BOB), "caller token in error");
        // The refusal concerns this caller: upstream_refused 403, not retried by clients.
        assert_eq!(e.blame(), Blame::Caller, "{e}");
    }
    assert_eq!(fake.requests_for_subject(BOB), 1, "refusal cached");
    // A 4xx for one caller does not hold off the others.
    b.credential("tx-refused", Some(ALICE), None).await.unwrap();
}

#[tokio::test]
async fn missing_caller_token_is_an_error_without_a_request() {
    let fake = FakeDatabricks::start().await;
    let b = broker(&config("tx-empty", &fake, ""));
    let e = b.credential("tx-empty", None, None).await.unwrap_err();
    assert!(matches!(e, UpstreamError::NoCallerToken(_)), "{e}");
    // An empty string is no token either: it is never sent as a subject token.
    let e = b.credential("tx-empty", Some(""), None).await.unwrap_err();
    assert!(matches!(e, UpstreamError::NoCallerToken(_)), "{e}");
    let e = b
        .credential_for("tx-empty", Caller::ANONYMOUS, Instant::now())
        .await
        .unwrap_err();
    assert!(matches!(e, UpstreamError::NoCallerToken(_)), "{e}");
    assert_eq!(fake.requests(), 0);
}

#[tokio::test]
async fn endpoint_failure_holds_off_every_caller() {
    let fake = FakeDatabricks::start().await;
    fake.fail_always(Some(Fail::Unavailable));
    let b = broker(&config(
        "tx-down",
        &fake,
        "timeout = \"200ms\"\ntotal_budget = \"500ms\"",
    ));
    let t0 = Instant::now();
    let e = b
        .credential("tx-down", Some(ALICE), None)
        .await
        .unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    assert!(matches!(e, UpstreamError::Failed { .. }), "{e}");
    let n = fake.requests();
    let e = b.credential("tx-down", Some(BOB), None).await.unwrap_err();
    assert!(matches!(e, UpstreamError::BackingOff { .. }), "{e}");
    assert_eq!(fake.requests(), n, "no request during the hold-off");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_ahead_when_the_caller_token_outlives_the_exchanged_one() {
    let fake = FakeDatabricks::start().await;
    fake.set_expires_in(Some(2));
    let b = broker(&config("tx-refresh", &fake, "refresh_ahead = \"1s\""));
    let id = identity("alice", 3600);
    let t0 = Instant::now();
    let first = b
        .credential("tx-refresh", Some(ALICE), Some(&id))
        .await
        .unwrap();
    fake.set_delay(Duration::from_millis(400));
    let deadline = t0 + Duration::from_secs(5);
    let mut slowest = Duration::ZERO;
    let second = loop {
        assert!(Instant::now() < deadline, "no background refresh");
        let started = Instant::now();
        let got = b
            .credential("tx-refresh", Some(ALICE), Some(&id))
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
        if got != first {
            break got;
        }
        assert!(t0.elapsed() < Duration::from_millis(1800));
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        fake.subject_of(bare(&second)),
        Some(Some(ALICE.to_string()))
    );
    assert_eq!(fake.requests_for_subject(ALICE), 2);
    assert!(slowest < Duration::from_millis(200), "{slowest:?}");
}

/// The engine's path: the caller's token key comes from the authenticator and the decision's
/// clock reading is reused. Cached tokens and cached refusals are answered from the cache
/// exactly as through `credential`, and both paths share the same entries.
#[tokio::test]
async fn engine_path_shares_the_cache_and_its_refusals() {
    let fake = FakeDatabricks::start().await;
    fake.refuse_subject(BOB);
    let b = broker(&config("tx-keyed", &fake, ""));
    let alice = identity("alice", 3600);
    let (alice_key, bob_key) = (token_key(ALICE), token_key(BOB));
    // As the engine calls it: the key from the authenticator, the decision's clock reading.
    let via_engine = |token: &'static str, key, identity| {
        let caller = Caller {
            token: Some(token),
            key: Some(key),
            identity,
        };
        b.credential_for("tx-keyed", caller, Instant::now())
    };

    let first = via_engine(ALICE, &alice_key, Some(&alice)).await.unwrap();
    for _ in 0..3 {
        let again = via_engine(ALICE, &alice_key, Some(&alice)).await.unwrap();
        assert_eq!(again, first);
    }
    assert_eq!(
        b.credential("tx-keyed", Some(ALICE), Some(&alice))
            .await
            .unwrap(),
        first
    );
    assert_eq!(
        fake.requests_for_subject(ALICE),
        1,
        "one exchange for alice"
    );

    b.credential("tx-keyed", Some(BOB), None).await.unwrap_err();
    for _ in 0..3 {
        let e = via_engine(BOB, &bob_key, None).await.unwrap_err();
        assert!(matches!(e, UpstreamError::Failed { .. }), "{e}");
    }
    assert_eq!(
        fake.requests_for_subject(BOB),
        1,
        "the refusal is cached for both paths"
    );

    // An empty caller token is refused without a request, key or not.
    let e = via_engine("", &alice_key, None).await.unwrap_err();
    assert!(matches!(e, UpstreamError::NoCallerToken(_)), "{e}");
}

#[tokio::test]
async fn refused_exchange_logs_the_oauth_error_and_not_the_caller_token() {
    let (logs, _guard) = LogCapture::start();
    let fake = FakeDatabricks::start().await;
    fake.refuse_subject(BOB);
    let b = broker(&config("tx-refused-log", &fake, ""));
    for _ in 0..3 {
        let e = b
            .credential("tx-refused-log", Some(BOB), None)
            .await
            .unwrap_err();
        let UpstreamError::Failed { failure, .. } = &e else {
            panic!("expected Failed, got {e}");
        };
        assert_eq!(failure.side(), Side::Refused);
    }
    let text = logs.text();
    let lines = logs.lines_with(&["upstream=\"tx-refused-log\""]);
    assert_eq!(
        lines.len(),
        1,
        "the refusal is logged once, when decided:\n{text}"
    );
    let line = &lines[0];
    for want in [
        " WARN ",
        &format!("url=\"{}\"", fake.token_url),
        "side=\"refused\"",
        "status=400",
        "error=\"invalid_grant\"",
        "attempts=1",
    ] {
        assert!(line.contains(want), "{want} missing: {line}");
    }
    // Neither the caller's token nor any part of it.
    for part in BOB.split('.') {
        assert!(!text.contains(part), "caller token in the log:\n{text}");
    }
}

#[tokio::test]
async fn missing_caller_token_logs_a_config_side() {
    let (logs, _guard) = LogCapture::start();
    let fake = FakeDatabricks::start().await;
    let b = broker(&config("tx-nocaller-log", &fake, ""));
    b.credential("tx-nocaller-log", None, None)
        .await
        .unwrap_err();
    let lines = logs.lines_with(&["upstream=\"tx-nocaller-log\""]);
    assert_eq!(lines.len(), 1, "{}", logs.text());
    for want in [
        " WARN ",
        &format!("url=\"{}\"", fake.token_url),
        "side=\"config\"",
        "public rule",
    ] {
        assert!(lines[0].contains(want), "{want} missing: {}", lines[0]);
    }
    assert_eq!(fake.requests(), 0);
}

/// A token exchange refused because of the gateway's own client (`invalid_client`: e.g. the
/// configured service principal has no federation policy) is the gateway's problem, 502, not
/// the caller's; a transient failure stays transient.
#[tokio::test]
async fn who_is_blamed_follows_the_refusal() {
    let fake = FakeDatabricks::start().await;
    fake.fail_always(Some(Fail::Status(401, "invalid_client")));
    let b = broker(&config("tx-blame", &fake, ""));
    let e = b
        .credential("tx-blame", Some(ALICE), None)
        .await
        .unwrap_err();
    assert_eq!(e.blame(), Blame::Gateway, "{e}");
    assert!(e.description().contains("gateway"), "{}", e.description());
    // The other client-side OAuth errors are the gateway's too (the per-caller cache remembers
    // each caller's refusal, so each case uses a caller of its own).
    for (caller, code) in [
        ("carol.jwt", "unauthorized_client"),
        ("dave.jwt", "invalid_scope"),
        ("erin.jwt", "unsupported_grant_type"),
    ] {
        fake.fail_always(Some(Fail::Status(400, code)));
        let e = b
            .credential("tx-blame", Some(caller), None)
            .await
            .unwrap_err();
        assert_eq!(e.blame(), Blame::Gateway, "{code}: {e}");
    }

    fake.fail_always(Some(Fail::Unavailable));
    let e = b.credential("tx-blame", Some(BOB), None).await.unwrap_err();
    assert_eq!(e.blame(), Blame::Transient, "{e}");
}
