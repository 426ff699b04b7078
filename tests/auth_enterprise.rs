//! Enterprise identity providers (issue #17), end to end through the `Authenticator` against a
//! mock IdP, with tokens shaped as each IdP documents them: Entra ID multi-tenant issuers
//! (`{tenantid}` + `tid`), Microsoft Graph tokens (a `nonce` in the header), Google's bare
//! `accounts.google.com` issuer, and a JWKS publishing two keys under one kid.

mod support;

use idgate::auth::Authenticator;
use idgate::config::Config;
use serde_json::{json, Value};
use support::auth_kit::*;
use support::idp_tokens::{entra_v2, google_id_token, ENTRA_CLIENT_ID, ENTRA_TENANT};

const TENANT: &str = ENTRA_TENANT;
const OTHER_TENANT: &str = "9188040d-6c67-4c5b-b112-36a304b66dad";
const CLIENT_ID: &str = ENTRA_CLIENT_ID;

fn cfg(text: &str) -> Config {
    Config::from_toml(text, "test").unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// `[[issuer]]` for Entra ID multi-tenant v2 tokens at the mock (`{base}/{tenantid}/v2.0`).
fn entra_config(idp: &MockIdp, extra: &str) -> Config {
    cfg(&format!(
        "[[issuer]]\nname = \"entra\"\nissuer = \"{}/{{tenantid}}/v2.0\"\njwks_uri = \"{}\"\n\
         audiences = [\"{CLIENT_ID}\"]\ngroups_claim = \"roles\"\nemail_claim = \"preferred_username\"\n{extra}",
        idp.base,
        idp.jwks_uri()
    ))
}

#[tokio::test]
async fn entra_multi_tenant_issuer_accepts_the_tid_of_iss() {
    let rsa = Signer::rsa("nOo3ZDrODXEK1jKWhXslHR_KXEg");
    let idp = MockIdp::start(&[&rsa]).await;
    let auth = ready_auth(&entra_config(&idp, "")).await;
    let id = auth
        .authenticate(&entra_v2(&rsa, &idp.base, TENANT, TENANT))
        .await
        .expect("a v2 token of any tenant");
    assert_eq!(
        &*id.issuer, "entra",
        "the configured name, not the tenant's iss"
    );
    assert_eq!(id.email.as_deref(), Some("alice@contoso.com"));
    assert_eq!(id.groups, ["Gateway.Invoke"]);
    // Another tenant too (no tenants list).
    assert!(auth
        .authenticate(&entra_v2(&rsa, &idp.base, OTHER_TENANT, OTHER_TENANT))
        .await
        .is_ok());
    // iss names one tenant, tid another: refused before any key is looked at.
    assert_eq!(
        reason(&auth, &entra_v2(&rsa, &idp.base, TENANT, OTHER_TENANT)).await,
        "claim_invalid"
    );
    // The tenant part must be a GUID: `common` or a domain is no tenant.
    assert_eq!(
        reason(&auth, &entra_v2(&rsa, &idp.base, "common", "common")).await,
        "unknown_issuer"
    );
    // A v1 issuer (sts.windows.net shape) is not this template's.
    let mut v1 = json!({"iss": format!("{}/{TENANT}/", idp.base), "tid": TENANT});
    v1["aud"] = json!(CLIENT_ID);
    assert_eq!(reason(&auth, &rsa.token(&v1)).await, "unknown_issuer");
}

#[tokio::test]
async fn entra_tenants_restrict_the_template() {
    let rsa = Signer::rsa("entra-k1");
    let idp = MockIdp::start(&[&rsa]).await;
    let auth = ready_auth(&entra_config(
        &idp,
        &format!("tenants = [\"{}\"]\n", TENANT.to_uppercase()),
    ))
    .await;
    assert!(auth
        .authenticate(&entra_v2(&rsa, &idp.base, TENANT, TENANT))
        .await
        .is_ok());
    let err = auth
        .authenticate(&entra_v2(&rsa, &idp.base, OTHER_TENANT, OTHER_TENANT))
        .await
        .unwrap_err();
    assert_eq!(err.reason.as_str(), "unknown_issuer");
    assert_eq!(
        err.description,
        "token tenant is not accepted by this issuer"
    );
}

#[tokio::test]
async fn an_exact_issuer_wins_over_a_template() {
    let (a, b) = (Signer::rsa("exact"), Signer::rsa2("tmpl"));
    let exact_idp = MockIdp::start(&[&a]).await;
    let idp = MockIdp::start(&[&b]).await;
    let text = format!(
        "[[issuer]]\nname = \"one-tenant\"\nissuer = \"{base}/{TENANT}/v2.0\"\njwks_uri = \"{}\"\n\
         audiences = [\"{CLIENT_ID}\"]\n\
         [[issuer]]\nname = \"entra\"\nissuer = \"{base}/{{tenantid}}/v2.0\"\njwks_uri = \"{}\"\n\
         audiences = [\"{CLIENT_ID}\"]\n",
        exact_idp.jwks_uri(),
        idp.jwks_uri(),
        base = idp.base,
    );
    let auth = ready_auth(&cfg(&text)).await;
    let id = auth
        .authenticate(&entra_v2(&a, &idp.base, TENANT, TENANT))
        .await
        .unwrap();
    assert_eq!(&*id.issuer, "one-tenant");
    let id = auth
        .authenticate(&entra_v2(&b, &idp.base, OTHER_TENANT, OTHER_TENANT))
        .await
        .unwrap();
    assert_eq!(&*id.issuer, "entra");
    // The template's keys do not verify the exact issuer's tokens.
    assert_eq!(
        reason(&auth, &entra_v2(&b, &idp.base, TENANT, TENANT)).await,
        "unknown_key"
    );
}

/// A Microsoft Graph access token as Entra ID v1 issues it: typ JWT, RS256, kid and x5t, and a
/// `nonce` in the header; aud Graph, iss sts.windows.net.
fn graph_token(signer: &Signer, base: &str, aud: &str) -> String {
    let n = now();
    let header = json!({
        "typ": "JWT",
        "nonce": "dEI1SElpR1Nlc3BfYXp3UXp0ZmRLUUlZMm9UUlRtbGk3c3Z3X0c2VmpmRQ",
        "alg": "RS256",
        "x5t": signer.kid,
        "kid": signer.kid
    });
    let claims = json!({
        "aud": aud,
        "iss": format!("{base}/{TENANT}/"),
        "iat": n, "nbf": n, "exp": n + 4000,
        "acct": 0, "acr": "1", "aio": "E2RgYJg...",
        "amr": ["pwd", "mfa"],
        "app_displayname": "Graph Explorer",
        "appid": "de8bc8b5-d9f9-48b1-a8ad-b748da725064",
        "appidacr": "0",
        "idtyp": "user",
        "name": "Alice Example",
        "oid": "00000000-0000-0000-66f3-3332eca7ea81",
        "platf": "3",
        "scp": "openid profile User.Read email",
        "sub": "9n2ahC1v1NQK-6Fn3nT-a7yCqWsS3nLDoNYlBiYdJN8",
        "tid": TENANT,
        "unique_name": "alice@contoso.com",
        "upn": "alice@contoso.com",
        "uti": "TVVhV1mt5EG5_Hv8UUh1AA",
        "ver": "1.0",
        "wids": ["b79fbf4d-3ef9-4689-8143-76b194e85509"]
    });
    signer.sign_with_header(&header, &claims)
}

#[tokio::test]
async fn graph_tokens_are_refused_as_unsupported_not_bad_signature() {
    let rsa = Signer::rsa("-KI3Q9nNR7bRofxmeZoXqbHZGew");
    let idp = MockIdp::start(&[&rsa]).await;
    // Even with Entra's v1 issuer configured (same keys), a Graph token is never "bad_signature".
    let auth = ready_auth(&cfg(&format!(
        "[[issuer]]\nname = \"entra-v1\"\nissuer = \"{}/{{tenantid}}/\"\njwks_uri = \"{}\"\n\
         audiences = [\"00000003-0000-0000-c000-000000000000\", \"{CLIENT_ID}\"]\n",
        idp.base,
        idp.jwks_uri()
    )))
    .await;
    for aud in [
        "00000003-0000-0000-c000-000000000000",
        "https://graph.microsoft.com",
    ] {
        let err = auth
            .authenticate(&graph_token(&rsa, &idp.base, aud))
            .await
            .unwrap_err();
        assert_eq!(err.reason.as_str(), "unsupported_token", "{aud}");
        assert_eq!(
            err.description,
            "a Microsoft Graph token (nonce in header): request a token for this gateway's audience"
        );
    }
    // A nonce with another audience: still refused, without claiming it is Graph's.
    let err = auth
        .authenticate(&graph_token(&rsa, &idp.base, CLIENT_ID))
        .await
        .unwrap_err();
    assert_eq!(err.reason.as_str(), "unsupported_token");
    assert!(err.description.contains("nonce"), "{}", err.description);
    assert!(!err.description.starts_with("a Microsoft Graph token"));
    // No header nonce: the same claims are accepted (the refusal is about the nonce alone).
    let mut h = rsa.header();
    h["x5t"] = json!(rsa.kid);
    let n = now();
    let ok = rsa.sign_with_header(
        &h,
        &json!({"aud": CLIENT_ID, "iss": format!("{}/{TENANT}/", idp.base), "tid": TENANT,
                "sub": "s", "iat": n, "exp": n + 600, "ver": "1.0"}),
    );
    assert!(auth.authenticate(&ok).await.is_ok());
}

#[tokio::test]
async fn google_bare_issuer_is_an_exact_iss() {
    let rsa = Signer::rsa("c8ab71530972bba20b49f78a09c9852c43ff9118");
    let idp = MockIdp::start(&[&rsa]).await;
    let auth = ready_auth(&cfg(&format!(
        "[[issuer]]\nname = \"google\"\nissuer = \"accounts.google.com\"\njwks_uri = \"{}\"\n\
         audiences = [\"1234987819200.apps.googleusercontent.com\"]\n",
        idp.jwks_uri()
    )))
    .await;
    let id = auth
        .authenticate(&google_id_token(&rsa, "accounts.google.com"))
        .await
        .unwrap();
    assert_eq!(&*id.issuer, "google");
    assert_eq!(id.email.as_deref(), Some("jsmith@example.com"));
    // Exact: the https form is another issuer (configure both to accept both).
    assert_eq!(
        reason(&auth, &google_id_token(&rsa, "https://accounts.google.com")).await,
        "unknown_issuer"
    );
}

#[tokio::test]
async fn two_keys_under_one_kid_are_both_tried() {
    // Rotation overlap: the old and the new RSA key, and an EC key, all published as "k1".
    let old = Signer::rsa("k1");
    let new = Signer::rsa2("k1");
    let ec = Signer::ec("k1");
    let idp = MockIdp::start(&[&old, &ec, &new]).await;
    let auth = ready_auth(&config("kid-twins", &idp, false, "")).await;
    for s in [&old, &new, &ec] {
        let id = auth.authenticate(&s.token(&claims(&idp.base))).await;
        assert!(id.is_ok(), "{}: {:?}", s.alg_name(), id.err());
    }
    // A signature no key of the kid verifies is still bad_signature.
    let stranger = Signer::new("rsa1.pem", jsonwebtoken::Algorithm::PS256, "k1");
    let mut forged = new.token(&claims(&idp.base));
    let (head, _) = forged.rsplit_once('.').unwrap();
    let other_sig = stranger.token(&claims(&idp.base));
    forged = format!("{head}.{}", other_sig.rsplit_once('.').unwrap().1);
    assert_eq!(reason(&auth, &forged).await, "bad_signature");
}

#[tokio::test]
async fn unknown_issuer_description_never_echoes_the_iss() {
    let rsa = Signer::rsa("k");
    let idp = MockIdp::start(&[&rsa]).await;
    let auth: Authenticator = ready_auth(&config("corp", &idp, false, "")).await;
    let evil = format!("{}/\r\nX-Injected: 1", idp.base);
    let mut c: Value = claims(&evil);
    c["iss"] = json!(evil);
    let err = auth.authenticate(&rsa.token(&c)).await.unwrap_err();
    assert_eq!(err.reason.as_str(), "unknown_issuer");
    assert_eq!(err.description, "token issuer is not configured");
}
