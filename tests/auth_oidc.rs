//! idgate's Authenticator against a REAL OIDC provider (npm `oidc-provider`, tests/oidc):
//! discovery, JWKS, RS256/ES256/EdDSA access tokens from client_credentials, identity claims,
//! key rotation after startup, JWKS faults, and the IdP going away while cached keys keep
//! validating.

#[path = "support/oidc.rs"]
mod oidc;

use std::time::Duration;

use idgate::auth::{install_crypto_provider, Authenticator};
use idgate::config::Config;
use oidc::{header_of, OidcProvider, RESOURCE};

fn config(issuer: &str) -> Config {
    let text = format!(
        r#"
[[issuer]]
name = "oidc"
issuer = "{issuer}"
audiences = ["{RESOURCE}"]
algorithms = ["RS256", "ES256", "EdDSA"]
unknown_kid_refetch_interval = "200ms"
http_timeout = "2s"
"#
    );
    Config::from_toml(&text, "test").unwrap()
}

fn refresh_count(result: &str) -> u64 {
    idgate::metrics::metrics()
        .jwks_refresh
        .with_label_values(&["oidc", result])
        .get()
}

async fn auth_for(idp: &OidcProvider) -> Authenticator {
    install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let a = Authenticator::new(&config(&idp.issuer), None, http);
    assert!(
        a.wait_ready(Duration::from_secs(15)).await,
        "keys never loaded: {:?}",
        a.issuer_status()
    );
    a
}

/// Wait out the unknown-kid rate limit window of the config above.
async fn past_refetch_interval() {
    tokio::time::sleep(Duration::from_millis(250)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_oidc_provider_end_to_end() {
    if oidc::skip() {
        return;
    }
    let mut idp = OidcProvider::start().await;
    let auth = auth_for(&idp).await;

    // Discovery found the provider's JWKS with its three signing keys.
    let st = &auth.issuer_status()[0];
    assert_eq!(
        st.jwks_uri.as_deref(),
        Some(format!("{}/jwks", idp.issuer).as_str())
    );
    assert_eq!(st.keys, 3, "{st:?}");

    // All three algorithms.
    for (client, alg) in [
        ("rs256-client", "RS256"),
        ("es256-client", "ES256"),
        ("eddsa-client", "EdDSA"),
    ] {
        let t = idp.token(client).await;
        assert_eq!(header_of(&t).0, alg, "{client} token alg");
        let id = auth
            .authenticate(&t)
            .await
            .unwrap_or_else(|r| panic!("{client}: {r}"));
        assert_eq!(id.issuer.as_ref(), "oidc");
        assert_eq!(id.sub, client);
        assert_eq!(id.scopes, ["read"]);
        assert!(id.groups.is_empty() && id.email.is_none());
    }

    // Identity claims from extraTokenClaims.
    let alice = auth.authenticate(&idp.token("alice").await).await.unwrap();
    assert_eq!(alice.sub, "alice");
    assert_eq!(alice.groups, ["ml-engineers"]);
    assert_eq!(alice.email.as_deref(), Some("alice@example.com"));
    let bob_token = idp.token("bob").await;
    let bob = auth.authenticate(&bob_token).await.unwrap();
    assert_eq!(bob.groups, ["analysts"]);
    assert_eq!(header_of(&bob_token).0, "ES256");

    // Rotation after idgate started, old keys removed: the new kid triggers one refetch.
    let before = idp.jwks_requests().await;
    let new_kids = idp.rotate(false).await;
    let t = idp.token("alice").await;
    assert!(new_kids.contains(&header_of(&t).1), "signed with a new key");
    let id = auth
        .authenticate(&t)
        .await
        .unwrap_or_else(|r| panic!("after rotation: {r}"));
    assert_eq!(id.sub, "alice");
    assert_eq!(idp.jwks_requests().await, before + 1, "exactly one refetch");
    let mut kids = new_kids.clone();
    kids.sort();
    assert_eq!(auth.issuer_status()[0].kids, kids, "old keys dropped");
    // bob's token from before the rotation is still answered from the token cache.
    assert!(auth.authenticate(&bob_token).await.is_ok());

    // Rotation keeping the old keys published.
    past_refetch_interval().await;
    let kept = idp.rotate(true).await;
    let t = idp.token("eddsa-client").await;
    assert!(kept.contains(&header_of(&t).1));
    assert!(auth.authenticate(&t).await.is_ok());
    assert_eq!(auth.issuer_status()[0].keys, 6, "new and previous keys");

    // JWKS endpoint broken (503, then garbage) while the IdP rotates: the new kid cannot be
    // fetched (unknown_key, failure counted) but tokens from the known keys still validate.
    for mode in ["fail", "garbage"] {
        idp.set_jwks_mode(mode).await;
        past_refetch_interval().await;
        let failures = refresh_count("failure");
        let known = idp.token("rs256-client").await; // current key, already known
        idp.rotate(true).await;
        let unknown = idp.token("rs256-client").await;
        let r = auth.authenticate(&unknown).await.unwrap_err();
        assert_eq!(r.reason.as_str(), "unknown_key", "{mode}");
        assert_eq!(refresh_count("failure"), failures + 1, "{mode}");
        assert!(
            auth.authenticate(&known).await.is_ok(),
            "{mode}: cached keys keep working"
        );
        assert!(auth.issuer_status()[0].last_error.is_some());
        // Healthy again: the next unknown kid is fetched and accepted.
        idp.set_jwks_mode("ok").await;
        past_refetch_interval().await;
        assert!(
            auth.authenticate(&unknown).await.is_ok(),
            "{mode}: recovered"
        );
    }

    // The IdP goes away. Tokens it minted before (never seen by idgate, so not cached) still
    // validate with the keys idgate holds.
    let pending = [
        idp.token("alice").await,
        idp.token("bob").await,
        idp.token("eddsa-client").await,
    ];
    idp.stop();
    for t in &pending {
        let id = auth
            .authenticate(t)
            .await
            .unwrap_or_else(|r| panic!("IdP down: {r}"));
        assert!(["alice", "bob", "eddsa-client"].contains(&id.sub.as_str()));
    }
    // Keys it never published remain unknown, and the failed refetch is counted.
    past_refetch_interval().await;
    let failures = refresh_count("failure");
    let stranger = {
        let rest = pending[0].split_once('.').unwrap().1;
        let header = base64_url(r#"{"alg":"RS256","kid":"never-published","typ":"at+jwt"}"#);
        format!("{header}.{rest}")
    };
    assert_eq!(
        auth.authenticate(&stranger)
            .await
            .unwrap_err()
            .reason
            .as_str(),
        "unknown_key"
    );
    assert_eq!(refresh_count("failure"), failures + 1);
    assert!(auth.ready(), "ready stays true: keys were loaded once");
}

fn base64_url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}
