//! JWKS lifecycle against a local mock IdP that counts requests: unknown-kid refetch
//! (single-flight, rate-limited), key rotation, IdP outages and garbage, late IdPs, discovery,
//! and key/cache sharing across reloads.

#[path = "support/auth_kit.rs"]
mod kit;

use std::sync::Arc;
use std::time::{Duration, Instant};

use idgate::auth::Authenticator;
use kit::*;
use serde_json::json;

/// A token for `signer` but naming `kid`.
fn token_with_kid(signer: &Signer, iss: &str, kid: &str) -> String {
    let mut h = signer.header();
    h["kid"] = json!(kid);
    signer.sign_with_header(&h, &claims(iss))
}

/// Poll `cond` every 20 ms for at most `limit`.
async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_flood_costs_one_jwks_request() {
    let rsa = Signer::rsa("rsa-1");
    let idp = MockIdp::start(&[&rsa]).await;
    let auth = Arc::new(
        ready_auth(&config(
            "j-flood",
            &idp,
            false,
            "unknown_kid_refetch_interval = \"1h\"",
        ))
        .await,
    );
    let h0 = idp.jwks_hits();
    assert_eq!(h0, 1, "one initial load");
    // Slow JWKS answers so that the concurrent misses really overlap the one fetch.
    idp.set_delay(Duration::from_millis(300));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (auth, t) = (
            auth.clone(),
            token_with_kid(&rsa, &idp.base, &format!("random-{i}")),
        );
        tasks.push(tokio::spawn(async move { auth.authenticate(&t).await }));
    }
    for t in tasks {
        let r = t.await.unwrap().unwrap_err();
        assert_eq!(r.reason.as_str(), "unknown_key");
    }
    assert_eq!(
        idp.jwks_hits(),
        h0 + 1,
        "50 concurrent unknown kids -> one refetch"
    );
    idp.set_delay(Duration::ZERO);
    for i in 0..100 {
        let t = token_with_kid(&rsa, &idp.base, &format!("later-{i}"));
        assert_eq!(reason(&auth, &t).await, "unknown_key");
    }
    assert_eq!(
        idp.jwks_hits(),
        h0 + 1,
        "rate limited: no further fetch within the interval"
    );
    // Known kids are unaffected.
    assert!(auth
        .authenticate(&rsa.token(&claims(&idp.base)))
        .await
        .is_ok());
}

/// A slow IdP (JWKS answers after 1.5 s, `http_timeout` 5 s) costs a request with a new
/// `kid` at most `unknown_kid_wait`, not the fetch's duration (which could exceed HAProxy's SPOE
/// processing timeout); the fetch still completes in the background and the next request
/// with that `kid` is accepted without another JWKS request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_refetch_costs_a_request_at_most_unknown_kid_wait() {
    let old = Signer::rsa("old");
    let idp = MockIdp::start(&[&old]).await;
    let auth = ready_auth(&config(
        "j-wait",
        &idp,
        false,
        "unknown_kid_refetch_interval = \"1h\"\nunknown_kid_wait = \"200ms\"\nhttp_timeout = \"5s\"",
    ))
    .await;
    let new = Signer::ec("new");
    idp.set_keys(&[&old, &new]);
    idp.set_delay(Duration::from_millis(1500));
    let h = idp.jwks_hits();

    let token = new.token(&claims(&idp.base));
    let started = Instant::now();
    assert_eq!(reason(&auth, &token).await, "unknown_key");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(1000),
        "the request waited {waited:?}, more than unknown_kid_wait allows"
    );

    // Requests meanwhile neither wait long nor start a second fetch.
    let mut c = claims(&idp.base);
    c["sub"] = json!("bob");
    assert_eq!(reason(&auth, &new.token(&c)).await, "unknown_key");

    assert!(
        eventually(Duration::from_secs(5), || auth.issuer_status()[0]
            .kids
            .contains(&"new".to_string()))
        .await,
        "the background fetch installed the new key"
    );
    assert_eq!(idp.jwks_hits(), h + 1, "one fetch for the new kid");
    let id = auth.authenticate(&token).await.expect("accepted now");
    assert_eq!(id.sub, "alice");
    assert_eq!(idp.jwks_hits(), h + 1);
}

#[tokio::test]
async fn key_rotation_is_picked_up_on_unknown_kid() {
    let old = Signer::rsa("old");
    let idp = MockIdp::start(&[&old]).await;
    let auth = ready_auth(&config(
        "j-rotate",
        &idp,
        false,
        "unknown_kid_refetch_interval = \"200ms\"",
    ))
    .await;
    assert!(auth
        .authenticate(&old.token(&claims(&idp.base)))
        .await
        .is_ok());

    // The IdP adds a key and starts signing with it.
    let new = Signer::ec("new");
    idp.set_keys(&[&old, &new]);
    let h = idp.jwks_hits();
    let id = auth
        .authenticate(&new.token(&claims(&idp.base)))
        .await
        .unwrap();
    assert_eq!(id.sub, "alice");
    assert_eq!(
        idp.jwks_hits(),
        h + 1,
        "exactly one refetch for the new kid"
    );

    // The IdP drops the old key. Once a refetch happened, fresh tokens with the old kid fail.
    idp.set_keys(&[&new]);
    tokio::time::sleep(Duration::from_millis(250)).await; // let the miss rate limit window pass
    assert_eq!(
        reason(&auth, &token_with_kid(&new, &idp.base, "unknown")).await,
        "unknown_key"
    );
    let mut c = claims(&idp.base);
    c["sub"] = json!("fresh"); // not in the token cache
    assert_eq!(reason(&auth, &old.token(&c)).await, "unknown_key");
    assert_eq!(auth.issuer_status()[0].kids, ["new"]);
}

#[tokio::test]
async fn idp_outage_and_garbage_keep_the_last_good_keys() {
    let rsa = Signer::rsa("rsa-1");
    let idp = MockIdp::start(&[&rsa]).await;
    let auth = ready_auth(&config(
        "j-down",
        &idp,
        false,
        "unknown_kid_refetch_interval = \"100ms\"",
    ))
    .await;
    let bad_answers = [
        Reply::Status(503),
        Reply::Status(404),
        Reply::Body("<html>maintenance</html>"),
        Reply::Body("{\"keys\": 5}"),
        Reply::Keys(json!({"keys": []})),
        Reply::Keys(json!({"keys": [{"kty":"oct","kid":"rsa-1","k":"c2VjcmV0"}]})),
    ];
    for (i, bad) in bad_answers.into_iter().enumerate() {
        idp.set_reply(bad);
        let failures = refresh_count("j-down", "failure");
        let hits = idp.jwks_hits();
        tokio::time::sleep(Duration::from_millis(120)).await; // past the miss rate limit
                                                              // An unknown kid makes us ask the (broken) IdP ...
        let t = token_with_kid(&rsa, &idp.base, &format!("unknown-{i}"));
        assert_eq!(reason(&auth, &t).await, "unknown_key");
        assert_eq!(idp.jwks_hits(), hits + 1);
        assert_eq!(refresh_count("j-down", "failure"), failures + 1, "case {i}");
        // ... and fresh tokens signed with the cached key keep working.
        let mut c = claims(&idp.base);
        c["sub"] = json!(format!("user-{i}"));
        let id = auth
            .authenticate(&rsa.token(&c))
            .await
            .unwrap_or_else(|r| panic!("case {i}: {r}"));
        assert_eq!(id.sub, format!("user-{i}"));
        let st = &auth.issuer_status()[0];
        assert!(
            st.loaded && st.keys == 1 && st.last_error.is_some(),
            "case {i}: {st:?}"
        );
    }
    assert!(auth.ready(), "still ready: keys were loaded once");
}

#[tokio::test]
async fn late_idp_is_picked_up_by_the_retry_backoff() {
    let rsa = Signer::rsa("rsa-1");
    let idp = MockIdp::start(&[&rsa]).await;
    idp.set_reply(Reply::Status(503));
    idgate::auth::install_crypto_provider();
    let started = Instant::now();
    let auth = Authenticator::new(&config("j-late", &idp, false, ""), None, http());
    assert!(
        started.elapsed() < Duration::from_millis(200),
        "new() never waits for the IdP"
    );
    assert!(!auth.ready());
    assert!(
        eventually(Duration::from_secs(5), || idp.jwks_hits() >= 2).await,
        "retries"
    );
    let t = rsa.token(&claims(&idp.base));
    assert_eq!(reason(&auth, &t).await, "unknown_key");
    let st = &auth.issuer_status()[0];
    assert!(
        !st.loaded && st.last_error.as_deref().unwrap_or("").contains("503"),
        "{st:?}"
    );

    idp.set_keys(&[&rsa]);
    assert!(
        auth.wait_ready(Duration::from_secs(15)).await,
        "late IdP picked up"
    );
    assert!(auth.authenticate(&t).await.is_ok());
}

#[tokio::test]
async fn unreachable_idp_refuses_tokens_without_blocking_startup() {
    idgate::auth::install_crypto_provider();
    // Nothing listens on port 1.
    let cfg = idgate::config::Config::from_toml(
        "[[issuer]]\nname = \"j-unreach\"\nissuer = \"http://127.0.0.1:1\"\naudiences = [\"api\"]\n\
         http_timeout = \"500ms\"\n",
        "t",
    )
    .unwrap();
    let auth = Authenticator::new(&cfg, None, http());
    assert!(!auth.ready());
    let rsa = Signer::rsa("k");
    let t = rsa.token(&claims("http://127.0.0.1:1"));
    assert_eq!(reason(&auth, &t).await, "unknown_key");
    assert!(!auth.wait_ready(Duration::from_millis(300)).await);
    assert!(refresh_count("j-unreach", "failure") >= 1);
}

#[tokio::test]
async fn discovery_is_used_and_checked() {
    let ed = Signer::ed("ed-1");
    let idp = MockIdp::start(&[&ed]).await;
    let auth = ready_auth(&config("j-disco", &idp, true, "")).await;
    assert!(idp.discovery_hits() >= 1);
    assert_eq!(
        auth.issuer_status()[0].jwks_uri.as_deref(),
        Some(idp.jwks_uri().as_str())
    );
    assert!(auth
        .authenticate(&ed.token(&claims(&idp.base)))
        .await
        .is_ok());

    // The discovery document names another issuer: never trusted.
    let idp2 = MockIdp::start(&[&ed]).await;
    idp2.set_discovery(Some(
        json!({"issuer": "https://evil.example.com", "jwks_uri": idp2.jwks_uri()}),
    ));
    let auth2 = Authenticator::new(&config("j-disco-iss", &idp2, true, ""), None, http());
    assert!(!auth2.wait_ready(Duration::from_millis(500)).await);
    let err = auth2.issuer_status()[0]
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(err.contains("does not match"), "{err}");
    assert_eq!(
        idp2.jwks_hits(),
        0,
        "JWKS of an unverified discovery document is not fetched"
    );

    // A plain-http jwks_uri on a non-loopback host is refused.
    let idp3 = MockIdp::start(&[&ed]).await;
    idp3.set_discovery(Some(
        json!({"issuer": idp3.base, "jwks_uri": "http://idp.example.com/jwks"}),
    ));
    let auth3 = Authenticator::new(&config("j-disco-http", &idp3, true, ""), None, http());
    assert!(!auth3.wait_ready(Duration::from_millis(500)).await);
    let err = auth3.issuer_status()[0]
        .last_error
        .clone()
        .unwrap_or_default();
    assert!(err.contains("https"), "{err}");
}

#[tokio::test]
async fn reload_keeps_unchanged_issuers_and_cache() {
    let (a, b) = (Signer::rsa("a"), Signer::ec("b"));
    let idp_a = MockIdp::start(&[&a]).await;
    let idp_b = MockIdp::start(&[&b]).await;
    let two = |aud_b: &str| {
        let text = format!(
            "[[issuer]]\nname = \"r-a\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n\
             [[issuer]]\nname = \"r-b\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"{aud_b}\"]\n",
            idp_a.base,
            idp_a.jwks_uri(),
            idp_b.base,
            idp_b.jwks_uri()
        );
        idgate::config::Config::from_toml(&text, "t").unwrap()
    };
    let first = ready_auth(&two("api")).await;
    let t = a.token(&claims(&idp_a.base));
    assert!(first.authenticate(&t).await.is_ok());

    // Same config: everything shared, ready at once, no new fetch.
    let hits = idp_a.jwks_hits();
    let same = Authenticator::new(&two("api"), Some(&first), http());
    assert!(same.ready());
    assert!(same.shares_keys_with(&first, "r-a") && same.shares_keys_with(&first, "r-b"));
    assert!(same.shares_cache_with(&first));
    assert_eq!(idp_a.jwks_hits(), hits);

    // Issuer b changed: a keeps its keys, b starts over, the token cache is new.
    let changed = Authenticator::new(&two("api2"), Some(&same), http());
    assert!(changed.shares_keys_with(&same, "r-a"));
    assert!(!changed.shares_keys_with(&same, "r-b"));
    assert!(!changed.shares_cache_with(&same));
    assert!(changed.wait_ready(Duration::from_secs(10)).await);
    assert!(changed.authenticate(&t).await.is_ok());
    let mut c = claims(&idp_b.base);
    c["aud"] = json!("api2");
    assert!(changed.authenticate(&b.token(&c)).await.is_ok());
    assert_eq!(reason(&first, &b.token(&c)).await, "wrong_audience");
}

#[tokio::test]
async fn two_issuers_never_share_keys() {
    // Issuer A's key must not verify a token claiming issuer B, even with the same kid.
    let a = Signer::rsa("same-kid");
    let b = Signer::rsa2("same-kid");
    let idp_a = MockIdp::start(&[&a]).await;
    let idp_b = MockIdp::start(&[&b]).await;
    let text = format!(
        "[[issuer]]\nname = \"x-a\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n\
         [[issuer]]\nname = \"x-b\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n",
        idp_a.base,
        idp_a.jwks_uri(),
        idp_b.base,
        idp_b.jwks_uri()
    );
    let auth = ready_auth(&idgate::config::Config::from_toml(&text, "t").unwrap()).await;
    assert_eq!(
        auth.authenticate(&a.token(&claims(&idp_a.base)))
            .await
            .unwrap()
            .issuer
            .as_ref(),
        "x-a"
    );
    assert_eq!(
        auth.authenticate(&b.token(&claims(&idp_b.base)))
            .await
            .unwrap()
            .issuer
            .as_ref(),
        "x-b"
    );
    assert_eq!(
        reason(&auth, &a.token(&claims(&idp_b.base))).await,
        "bad_signature"
    );
}
