//! Azure upstreams against a fake Entra ID token endpoint and IMDS (tests/support/entra.rs,
//! which checks each request as Microsoft documents it): `client_credentials` with a secret
//! (HTTP Basic) and with a certificate credential (`private_key_jwt`), and
//! `azure_managed_identity`.

#[path = "support/entra.rs"]
mod entra;

use std::path::Path;
use std::process::Command;

use entra::{FakeEntra, Registered, CLIENT_ID, CLIENT_SECRET, DATABRICKS_RESOURCE};
use idgate::config::{Config, DataPlaneMode};
use idgate::upstream::{Blame, Broker, UpstreamError};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn load(text: &str, dir: &Path) -> Config {
    Config::from_toml_in(text, "test", dir).unwrap_or_else(|e| panic!("{e}"))
}

fn broker(text: &str, dir: &Path) -> Broker {
    Broker::new(&load(text, dir), None, http()).expect("valid config")
}

fn secret_config(name: &str, token_url: &str, scope: &str) -> String {
    format!(
        "[upstream.{name}]\nkind = \"client_credentials\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_file = \"sp.secret\"\nscope = \"{scope}\"\n"
    )
}

fn dir_with_secret(secret: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("sp.secret"), format!("{secret}\n")).unwrap();
    d
}

#[tokio::test]
async fn entra_client_secret_is_sent_as_basic_and_the_token_cached() {
    let fake = FakeEntra::start().await;
    let d = dir_with_secret(CLIENT_SECRET);
    let text = secret_config("az-sp", &fake.token_url, entra::DATABRICKS_SCOPE);
    let cfg = load(&text, d.path());
    let u = &cfg.upstreams["az-sp"];
    assert_eq!(
        u.data_plane,
        DataPlaneMode::Off,
        "no data plane for Entra tokens"
    );
    assert_eq!(u.workspace_url, None);
    let b = Broker::new(&cfg, None, http()).unwrap();
    let h = b.credential("az-sp", None, None).await.unwrap();
    assert_eq!(&*h, "Bearer eyJ0eXAiOiJKV1Qi.entra-basic-1.sig");
    assert_eq!(b.credential("az-sp", None, None).await.unwrap(), h);
    assert_eq!(fake.requests(), 1, "{:?}", fake.rejections());
    assert_eq!(fake.last_auth(), Some("basic"));
}

#[tokio::test]
async fn synapse_scope() {
    let fake = FakeEntra::start().await;
    fake.expect_scope("https://dev.azuresynapse.net/.default");
    let d = dir_with_secret(CLIENT_SECRET);
    let b = broker(
        &secret_config(
            "az-syn",
            &fake.token_url,
            "https://dev.azuresynapse.net/.default",
        ),
        d.path(),
    );
    let h = b.credential("az-syn", None, None).await.unwrap();
    assert!(h.starts_with("Bearer eyJ"), "{h}");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[tokio::test]
async fn a_wrong_secret_is_the_gateways_fault_and_not_shown() {
    let fake = FakeEntra::start().await;
    let d = dir_with_secret("wrong-secret-value-123");
    let b = broker(
        &secret_config("az-bad", &fake.token_url, entra::DATABRICKS_SCOPE),
        d.path(),
    );
    let e = b.credential("az-bad", None, None).await.unwrap_err();
    assert_eq!(e.blame(), Blame::Gateway, "{e}");
    let UpstreamError::Failed { failure, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(failure.status, Some(401));
    assert_eq!(failure.error_code.as_deref(), Some("invalid_client"));
    assert!(!format!("{e} {e:?}").contains("wrong-secret-value-123"));
    assert_eq!(fake.requests(), 1, "a refusal is not retried");
}

#[tokio::test]
async fn data_plane_auto_with_an_entra_token_url_is_refused() {
    let d = dir_with_secret(CLIENT_SECRET);
    let text = secret_config(
        "az",
        "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        "x/.default",
    ) + "data_plane = \"auto\"\n";
    let e = Config::from_toml_in(&text, "t", d.path()).unwrap_err();
    assert_eq!(e.problems.len(), 1, "{e}");
    assert_eq!(e.problems[0].key, "upstream.az.data_plane");
}

/// An RSA key (PKCS#8 PEM), its self-signed certificate, and what Entra registers of it.
struct Cert {
    key: std::path::PathBuf,
    cert: std::path::PathBuf,
    registered: Registered,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn make_cert(dir: &Path, stem: &str) -> Cert {
    let key = dir.join(format!("{stem}.key"));
    let cert = dir.join(format!("{stem}.crt"));
    let (k, c) = (key.to_str().unwrap(), cert.to_str().unwrap());
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        k,
    ]);
    openssl(&[
        "req",
        "-x509",
        "-new",
        "-key",
        k,
        "-out",
        c,
        "-days",
        "2",
        "-subj",
        "/CN=idgate-sp",
    ]);
    let public_key_pem = openssl(&["x509", "-in", c, "-pubkey", "-noout"]);
    let der = openssl(&["x509", "-in", c, "-outform", "DER"]);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
    use base64::Engine as _;
    let x5t_s256 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref());
    Cert {
        key,
        cert,
        registered: Registered {
            public_key_pem,
            x5t_s256,
        },
    }
}

fn assertion_config(name: &str, token_url: &str, c: &Cert) -> String {
    format!(
        "[upstream.{name}]\nkind = \"client_credentials\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"{CLIENT_ID}\"\nscope = \"{}\"\n\
         client_assertion_key_file = \"{}\"\nclient_assertion_cert_file = \"{}\"\n\
         timeout = \"1s\"\ntotal_budget = \"2s\"\n",
        entra::DATABRICKS_SCOPE,
        c.key.display(),
        c.cert.display()
    )
}

#[tokio::test]
async fn certificate_credential_signs_a_fresh_assertion_per_request() {
    let fake = FakeEntra::start().await;
    let d = tempfile::tempdir().unwrap();
    let c = make_cert(d.path(), "sp");
    fake.register_certificate(c.registered.clone());
    // The first attempt fails (503) and is retried: with a new assertion (a replayed jti is
    // refused by the fake).
    fake.fail_next(&[503]);
    let b = broker(&assertion_config("az-cert", &fake.token_url, &c), d.path());
    let h = b.credential("az-cert", None, None).await.unwrap();
    assert_eq!(&*h, "Bearer eyJ0eXAiOiJKV1Qi.entra-assertion-1.sig");
    assert_eq!(fake.requests(), 2);
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    // A second broker (a reload with another config) asks again, with yet another jti.
    let b2 = broker(
        &(assertion_config("az-cert2", &fake.token_url, &c) + "refresh_ahead = \"1m\"\n"),
        d.path(),
    );
    b2.credential("az-cert2", None, None).await.unwrap();
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    assert_eq!(fake.assertions(), 3, "each attempt had its own jti");
}

/// `assertion_algorithm`: PS256 by default, RS256 on request (Entra accepts both; Okta and
/// Keycloak expect RS256).
#[tokio::test]
async fn assertion_algorithm_is_configurable() {
    let fake = FakeEntra::start().await;
    let d = tempfile::tempdir().unwrap();
    let c = make_cert(d.path(), "alg");
    fake.register_certificate(c.registered.clone());
    let b = broker(&assertion_config("az-ps", &fake.token_url, &c), d.path());
    b.credential("az-ps", None, None).await.unwrap();
    let rs = assertion_config("az-rs", &fake.token_url, &c) + "assertion_algorithm = \"RS256\"\n";
    let b = broker(&rs, d.path());
    b.credential("az-rs", None, None).await.unwrap();
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    assert_eq!(fake.assertion_algorithms(), ["PS256", "RS256"]);
    // Only PS256 and RS256; only with a client assertion.
    let bad = assertion_config("az-es", &fake.token_url, &c) + "assertion_algorithm = \"ES256\"\n";
    let e = Config::from_toml_in(&bad, "t", d.path()).unwrap_err();
    assert_eq!(
        e.problems[0].key, "upstream.az-es.assertion_algorithm",
        "{e}"
    );
    std::fs::write(d.path().join("s"), "secret\n").unwrap();
    let secret = format!(
        "[upstream.x]\nkind = \"client_credentials\"\ntoken_url = \"{}\"\nclient_id = \"a\"\n\
         client_secret_file = \"s\"\nassertion_algorithm = \"RS256\"\n",
        fake.token_url
    );
    let e = Config::from_toml_in(&secret, "t", d.path()).unwrap_err();
    let shown: Vec<String> = e
        .problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect();
    assert_eq!(
        shown,
        ["upstream.x.assertion_algorithm: only with client_assertion_key_file (private_key_jwt)"]
    );
}

#[tokio::test]
async fn a_certificate_entra_does_not_know_is_refused() {
    let fake = FakeEntra::start().await;
    let d = tempfile::tempdir().unwrap();
    let registered = make_cert(d.path(), "registered");
    let other = make_cert(d.path(), "other");
    fake.register_certificate(registered.registered);
    let b = broker(
        &assertion_config("az-other", &fake.token_url, &other),
        d.path(),
    );
    let e = b.credential("az-other", None, None).await.unwrap_err();
    assert_eq!(e.blame(), Blame::Gateway, "{e}");
    assert_eq!(
        fake.rejections(),
        ["x5t#S256 does not name the registered certificate"]
    );
}

#[test]
fn client_authentication_keys_are_checked() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("s"), "secret\n").unwrap();
    std::fs::write(
        d.path().join("k"),
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let base = "kind = \"client_credentials\"\n\
                token_url = \"https://login.microsoftonline.com/t/oauth2/v2.0/token\"\n\
                client_id = \"abc\"\n";
    let keys = |extra: &str| -> Vec<String> {
        let text = format!("[upstream.x]\n{base}{extra}");
        match Config::from_toml_in(&text, "t", d.path()) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.key.clone()).collect(),
        }
    };
    assert_eq!(keys(""), ["upstream.x.client_secret_file"]);
    assert_eq!(
        keys("client_secret_file = \"s\"\nclient_assertion_key_file = \"k\"\nclient_assertion_cert_file = \"k\"\n"),
        ["upstream.x.client_assertion_key_file"]
    );
    assert_eq!(
        keys("client_assertion_key_file = \"k\"\n"),
        ["upstream.x.client_assertion_cert_file"]
    );
    assert_eq!(
        keys("client_assertion_cert_file = \"k\"\n"),
        ["upstream.x.client_assertion_key_file"]
    );
    // A key file that is PEM but no RSA key: refused when the upstream is built, at its key.
    let cfg = load(
        &format!("[upstream.x]\n{base}client_assertion_key_file = \"k\"\nclient_assertion_cert_file = \"k\"\n"),
        d.path(),
    );
    let p = Broker::new(&cfg, None, http()).unwrap_err();
    assert_eq!(p[0].key, "upstream.x.client_assertion_key_file", "{p:?}");
    // The other kinds take none of these keys.
    let text = "[upstream.t]\nkind = \"token_exchange\"\ntoken_url = \"https://d/t\"\n\
                client_assertion_key_file = \"k\"\nresource = \"r\"\n";
    let e = Config::from_toml_in(text, "t", d.path()).unwrap_err();
    let k: Vec<_> = e.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        k,
        [
            "upstream.t.client_assertion_key_file",
            "upstream.t.resource"
        ]
    );
}

fn mi_config(name: &str, imds_url: &str, extra: &str) -> String {
    format!(
        "[upstream.{name}]\nkind = \"azure_managed_identity\"\nresource = \"{DATABRICKS_RESOURCE}\"\n\
         imds_url = \"{imds_url}\"\n{extra}"
    )
}

#[tokio::test]
async fn managed_identity_from_imds() {
    let fake = FakeEntra::start().await;
    let d = tempfile::tempdir().unwrap();
    // IMDS is retried on 5xx like any token endpoint.
    fake.fail_next(&[500]);
    let b = broker(&mi_config("az-mi", &fake.imds_url, ""), d.path());
    let h = b.credential("az-mi", None, None).await.unwrap();
    assert_eq!(&*h, "Bearer eyJ0eXAiOiJKV1Qi.entra-imds-1.sig");
    assert_eq!(b.credential("az-mi", None, None).await.unwrap(), h);
    assert_eq!(fake.requests(), 2, "{:?}", fake.rejections());
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    assert_eq!(b.cached_tokens("az-mi").await, Some(1));
}

#[tokio::test]
async fn user_assigned_managed_identity_sends_its_client_id() {
    let fake = FakeEntra::start().await;
    let id = "712eac09-e943-418c-9be6-9fd5c91078b1";
    fake.expect_mi_client_id(Some(id));
    let d = tempfile::tempdir().unwrap();
    let b = broker(
        &mi_config("az-ua", &fake.imds_url, &format!("client_id = \"{id}\"\n")),
        d.path(),
    );
    b.credential("az-ua", None, None).await.unwrap();
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    // Without it, IMDS cannot tell which identity: refused, and the gateway is at fault.
    let b = broker(&mi_config("az-ua2", &fake.imds_url, ""), d.path());
    let e = b.credential("az-ua2", None, None).await.unwrap_err();
    assert_eq!(e.blame(), Blame::Gateway, "{e}");
}

#[test]
fn managed_identity_keys_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let keys = |text: &str| -> Vec<String> {
        match Config::from_toml_in(text, "t", d.path()) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.key.clone()).collect(),
        }
    };
    // The default and the metadata address over http are fine; another http host is not.
    assert!(keys("[upstream.m]\nkind = \"azure_managed_identity\"\nresource = \"r\"\n").is_empty());
    let cfg = load(
        "[upstream.m]\nkind = \"azure_managed_identity\"\nresource = \"r\"\n",
        d.path(),
    );
    let b = Broker::new(&cfg, None, http()).unwrap();
    assert!(b.contains("m"));
    assert!(keys(&mi_config(
        "m",
        "http://169.254.169.254/metadata/identity/oauth2/token",
        ""
    ))
    .is_empty());
    assert_eq!(
        keys(&mi_config("m", "http://imds.example.com/token", "")),
        ["upstream.m.imds_url"]
    );
    assert_eq!(
        keys("[upstream.m]\nkind = \"azure_managed_identity\"\n"),
        ["upstream.m.resource"]
    );
    assert_eq!(
        keys(
            "[upstream.m]\nkind = \"azure_managed_identity\"\nresource = \"r\"\n\
             token_url = \"https://x/t\"\nscope = \"s\"\ndata_plane = \"auto\"\n"
        ),
        [
            "upstream.m.token_url",
            "upstream.m.scope",
            "upstream.m.data_plane"
        ]
    );
}

fn obo_config(name: &str, token_url: &str, auth: &str) -> String {
    format!(
        "[upstream.{name}]\nkind = \"on_behalf_of\"\ntoken_url = \"{token_url}\"\n\
         client_id = \"{CLIENT_ID}\"\nscope = \"{}\"\n{auth}",
        entra::DATABRICKS_SCOPE
    )
}

#[tokio::test]
async fn on_behalf_of_exchanges_each_callers_token_once() {
    let fake = FakeEntra::start().await;
    let d = dir_with_secret(CLIENT_SECRET);
    let b = broker(
        &obo_config(
            "az-obo",
            &fake.token_url,
            "client_secret_file = \"sp.secret\"\n",
        ),
        d.path(),
    );
    let (alice, bob) = ("eyJ.alice.sig", "eyJ.bob.sig");
    let a1 = b.credential("az-obo", Some(alice), None).await.unwrap();
    let a2 = b.credential("az-obo", Some(alice), None).await.unwrap();
    let b1 = b.credential("az-obo", Some(bob), None).await.unwrap();
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
    assert_eq!(a1, a2, "cached per caller token");
    assert_ne!(a1, b1, "never shared between callers");
    assert!(a1.contains("entra-obo-basic"), "{a1}");
    assert_eq!(fake.obo_requests_for(alice), 1);
    assert_eq!(fake.obo_requests_for(bob), 1);
    // No caller token: refused without a request.
    let e = b.credential("az-obo", None, None).await.unwrap_err();
    assert!(matches!(e, UpstreamError::NoCallerToken(_)), "{e:?}");
    // A user token Entra refuses is the caller's problem (403), not the gateway's.
    let e = b
        .credential("az-obo", Some(entra::REFUSED_USER_TOKEN), None)
        .await
        .unwrap_err();
    assert_eq!(e.blame(), Blame::Caller, "{e}");
    assert!(!format!("{e} {e:?}").contains("refused-user"), "{e:?}");
}

#[tokio::test]
async fn on_behalf_of_with_a_certificate_credential() {
    let fake = FakeEntra::start().await;
    let d = tempfile::tempdir().unwrap();
    let c = make_cert(d.path(), "obo");
    fake.register_certificate(c.registered.clone());
    let auth = format!(
        "client_assertion_key_file = \"{}\"\nclient_assertion_cert_file = \"{}\"\n",
        c.key.display(),
        c.cert.display()
    );
    let b = broker(&obo_config("az-obo-cert", &fake.token_url, &auth), d.path());
    let h = b
        .credential("az-obo-cert", Some("eyJ.carol.sig"), None)
        .await
        .unwrap();
    assert!(h.contains("entra-obo-assertion"), "{h}");
    assert!(fake.rejections().is_empty(), "{:?}", fake.rejections());
}

#[test]
fn on_behalf_of_keys_are_checked() {
    let d = tempfile::tempdir().unwrap();
    let keys = |text: &str| -> Vec<String> {
        match Config::from_toml_in(text, "t", d.path()) {
            Ok(_) => vec![],
            Err(e) => e.problems.iter().map(|p| p.key.clone()).collect(),
        }
    };
    assert_eq!(
        keys("[upstream.o]\nkind = \"on_behalf_of\"\n"),
        [
            "upstream.o.token_url",
            "upstream.o.client_id",
            "upstream.o.scope",
            "upstream.o.client_secret_file"
        ]
    );
    // A public rule has no caller token to exchange.
    std::fs::write(d.path().join("s"), "x\n").unwrap();
    let text = format!(
        "{}[[rule]]\nname = \"p\"\npaths = [\"/x\"]\neffect = \"allow\"\npublic = true\n\
         upstream = \"o\"\n",
        obo_config(
            "o",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "client_secret_file = \"s\"\n"
        )
    );
    assert_eq!(keys(&text), ["rule[0].upstream"]);
}

#[tokio::test]
async fn imds_updating_answers_are_retried() {
    let fake = FakeEntra::start().await;
    let d = tempfile::tempdir().unwrap();
    // 404 "IMDS endpoint is updating", 410 "available within 70 seconds": transient for IMDS.
    fake.fail_next(&[404, 410]);
    let b = broker(
        &mi_config("az-mi-upd", &fake.imds_url, "total_budget = \"5s\"\n"),
        d.path(),
    );
    b.credential("az-mi-upd", None, None).await.unwrap();
    assert_eq!(fake.requests(), 3);
}
