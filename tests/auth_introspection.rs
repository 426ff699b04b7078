//! Issuers of `kind = "introspection"` (RFC 7662), agent-level: the real `idgate` binary asked
//! over SPOP, an Okta-shaped and a Keycloak-shaped fake introspection endpoint
//! ([`support::introspection`]) minting tokens as those IdPs document them, and the policies
//! their operators write (Okta `groups`, Keycloak realm roles). Caching (one call for many
//! requests, single flight, negative cache, exp cap), failures (IdP down, wrong client secret)
//! and the metrics.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::agent::Agent;
use support::introspection::{FakeIntrospection, KEYCLOAK_SECRET, OKTA_SECRET};
use support::spop_client::{Request, SpopClient, Vars};

struct Setup {
    agent: Agent,
    fake: FakeIntrospection,
    _dir: tempfile::TempDir,
    _rt: tokio::runtime::Runtime,
}

/// An Okta issuer (opaque tokens, client_secret_basic) and a Keycloak issuer (its JWTs, by
/// `iss`, client_secret_post), with `okta_extra` in the Okta table.
fn config(fake: &FakeIntrospection, dir: &Path, okta_extra: &str) -> String {
    support::write_secret(&dir.join("okta.secret"), &format!("{OKTA_SECRET}\n"));
    support::write_secret(&dir.join("kc.secret"), KEYCLOAK_SECRET);
    let okta = fake.okta_issuer_toml(
        &dir.join("okta.secret"),
        &format!("groups_claim = \"groups\"\n{okta_extra}"),
    );
    format!(
        r#"
[log]
level = "info"

{okta}
[[issuer]]
name = "keycloak"
kind = "introspection"
issuer = "{kc_iss}"
introspection_url = "{kc_url}"
client_id = "idgate"
client_secret_file = "{dir}/kc.secret"
client_auth = "client_secret_post"
opaque_tokens = false
audiences = ["idgate"]
groups_claim = "realm_access.roles"
user_claim = "preferred_username"

[[rule]]
name = "serving"
methods = ["POST"]
paths = ["/serving-endpoints/*/invocations"]
groups = ["ml-engineers"]
effect = "allow"

[[rule]]
name = "read"
methods = ["GET"]
paths = ["/api/2.0/**"]
effect = "allow"
"#,
        kc_iss = fake.keycloak_issuer(),
        kc_url = fake.keycloak_url(),
        dir = dir.display(),
    )
}

fn setup(okta_extra: &str) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeIntrospection::start());
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&config(&fake, dir.path(), okta_extra));
    Setup {
        agent,
        fake,
        _dir: dir,
        _rt: rt,
    }
}

const INVOKE: &str = "/serving-endpoints/churn/invocations";

fn invoke(s: &Setup, token: &str) -> Vars {
    let mut c = SpopClient::open_to(&s.agent.spop_addr());
    c.decide(&Request::new("POST", INVOKE).bearer(token))
}

fn metric(s: &Setup, name: &str, issuer: &str, result: &str) -> f64 {
    s.agent
        .metric(name, &[("issuer", issuer), ("result", result)])
        .unwrap_or(0.0)
}

/// The first answer refusing `token`, asked every 100 ms for at most 10 s (the last answer
/// then, which the caller's assertion shows).
fn first_refusal(s: &Setup, token: &str) -> Vars {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = invoke(s, token);
        if !v.allow() || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The agent's log once it contains `what` (its writer is asynchronous), at most 10 s.
fn wait_log(s: &Setup, what: &str) -> String {
    support::poll_until(Duration::from_secs(10), || {
        let log = s.agent.log();
        log.contains(what).then_some(log)
    })
    .unwrap_or_else(|| panic!("no {what:?} in the log:\n{}", s.agent.log()))
}

const CALLS: &str = "idgate_introspection_requests_total";
const CACHE: &str = "idgate_introspection_cache_requests_total";

#[test]
fn okta_opaque_token_is_introspected_once_for_many_requests() {
    let s = setup("");
    let t = s.fake.mint_okta(
        "alice@example.com",
        &["Everyone", "ml-engineers"],
        Duration::from_secs(3600),
    );
    for _ in 0..5 {
        let v = invoke(&s, &t);
        assert!(v.allow(), "{v:?}\n{}", s.agent.log());
        assert_eq!(v.str("issuer").as_deref(), Some("okta"));
        assert_eq!(v.str("sub").as_deref(), Some("alice@example.com"));
        assert_eq!(v.str("groups").as_deref(), Some("Everyone,ml-engineers"));
        assert_eq!(v.str("rule").as_deref(), Some("serving"));
    }
    assert_eq!(s.fake.calls("okta"), 1);
    assert_eq!(s.fake.last_auth(), Some("basic"));
    assert_eq!(s.fake.last_hint().as_deref(), Some("access_token"));
    assert_eq!(metric(&s, CALLS, "okta", "active"), 1.0);
    assert_eq!(metric(&s, CACHE, "okta", "miss"), 1.0);
    assert_eq!(metric(&s, CACHE, "okta", "hit"), 4.0);
    // Not in the group: a valid identity the rules refuse.
    let bob = s
        .fake
        .mint_okta("bob@example.com", &["Everyone"], Duration::from_secs(3600));
    let v = invoke(&s, &bob);
    assert_eq!((v.status(), v.reason().as_str()), (403, "no_matching_rule"));
    let log = s.agent.log();
    assert!(!log.contains(&t) && !log.contains(OKTA_SECRET), "{log}");
}

#[test]
fn concurrent_requests_with_one_token_make_one_call() {
    let s = setup("");
    s.fake.set_delay(Duration::from_millis(400));
    let t = s.fake.mint_okta(
        "carol@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    let allowed = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| invoke(&s, &t).allow()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(allowed, [true; 8], "{}", s.agent.log());
    assert_eq!(s.fake.calls("okta"), 1, "single flight");
    assert_eq!(metric(&s, CALLS, "okta", "active"), 1.0);
}

#[test]
fn inactive_tokens_are_refused_and_negatively_cached() {
    let s = setup("");
    for _ in 0..3 {
        let v = invoke(&s, "2YotnFZFEjr1zCsicMWpAA");
        assert_eq!((v.status(), v.reason().as_str()), (401, "bad_signature"));
        let challenge = v.str("www_authenticate").unwrap();
        assert!(challenge.contains("token is not active"), "{challenge}");
    }
    assert_eq!(s.fake.calls("okta"), 1);
    assert_eq!(metric(&s, CALLS, "okta", "inactive"), 1.0);
    assert_eq!(metric(&s, CACHE, "okta", "hit"), 2.0);
}

/// `introspection_cache_ttl` bounds how long a revoked token stays accepted.
#[test]
fn revocation_is_seen_after_the_cache_ttl() {
    let s = setup("introspection_cache_ttl = \"1s\"\nintrospection_negative_ttl = \"0s\"");
    let t = s.fake.mint_okta(
        "dave@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    assert!(invoke(&s, &t).allow());
    s.fake.revoke(&t);
    let refused = first_refusal(&s, &t);
    assert_eq!(
        (refused.status(), refused.reason().as_str()),
        (401, "bad_signature")
    );
    assert!(s.fake.calls("okta") >= 2);
}

/// The cached answer never outlives the token's `exp`: after it, `expired` (from the cache,
/// without asking the IdP).
#[test]
fn cached_answer_ends_at_the_tokens_exp() {
    let s = setup("");
    let t = s.fake.mint_okta(
        "erin@example.com",
        &["ml-engineers"],
        Duration::from_secs(2),
    );
    assert!(invoke(&s, &t).allow(), "{}", s.agent.log());
    let refused = first_refusal(&s, &t);
    assert_eq!(
        (refused.status(), refused.reason().as_str()),
        (401, "expired")
    );
    assert_eq!(s.fake.calls("okta"), 1, "answered from the cache");
}

#[test]
fn idp_down_fails_closed_with_503() {
    let s = setup("http_timeout = \"1s\"");
    s.fake.fail_next(&[503, 500]);
    let t = s.fake.mint_okta(
        "frank@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    for _ in 0..2 {
        let v = invoke(&s, &t);
        assert_eq!(
            (v.allow(), v.status(), v.reason().as_str()),
            (false, 503, "upstream_unavailable")
        );
        assert!(!v.contains("www_authenticate"), "{v:?}");
    }
    assert_eq!(metric(&s, CALLS, "okta", "unavailable"), 2.0);
    // Failures are not cached: the IdP is back, the token works.
    assert!(invoke(&s, &t).allow());
    // Timeouts too.
    s.fake.set_delay(Duration::from_secs(3));
    let t2 = s.fake.mint_okta(
        "gina@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    let v = invoke(&s, &t2);
    assert_eq!(
        (v.status(), v.reason().as_str()),
        (503, "upstream_unavailable")
    );
    let log = wait_log(&s, "timed out");
    assert!(log.contains("token introspection failed"), "{log}");
    assert!(log.contains("HTTP 503"), "{log}");
}

#[test]
fn wrong_client_secret_is_refused_and_logged() {
    let s = setup("");
    s.fake.expect_secret("okta", "rotated-secret");
    let t = s.fake.mint_okta(
        "hank@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    let v = invoke(&s, &t);
    assert_eq!(
        (v.allow(), v.status(), v.reason().as_str()),
        (false, 502, "upstream_refused")
    );
    assert_eq!(metric(&s, CALLS, "okta", "refused"), 1.0);
    let log = wait_log(&s, "invalid_client");
    assert!(
        log.contains("HTTP 401, error=invalid_client")
            && log.contains("check client_id, client_secret_file and client_auth"),
        "{log}"
    );
    assert!(!log.contains(OKTA_SECRET) && !log.contains(&t), "{log}");
}

#[test]
fn keycloak_jwts_are_introspected_by_iss_with_realm_roles() {
    let s = setup("");
    let t = s.fake.mint_keycloak(
        "alice",
        &["offline_access", "ml-engineers"],
        &["idgate", "account"],
        "Bearer",
    );
    let v = invoke(&s, &t);
    assert!(v.allow(), "{v:?}\n{}", s.agent.log());
    assert_eq!(v.str("issuer").as_deref(), Some("keycloak"));
    assert_eq!(v.str("email").as_deref(), Some("alice@example.com"));
    assert_eq!(s.fake.calls("keycloak"), 1);
    assert_eq!(s.fake.calls("okta"), 0, "a JWT goes to its iss only");
    assert_eq!(s.fake.last_auth(), Some("post"));
    // Keycloak's default audience only ("account"): no audience mapper for idgate.
    let t = s
        .fake
        .mint_keycloak("alice", &["ml-engineers"], &["account"], "Bearer");
    let v = invoke(&s, &t);
    assert_eq!((v.status(), v.reason().as_str()), (401, "wrong_audience"));
    // A refresh token Keycloak reports active is no access token.
    let t = s
        .fake
        .mint_keycloak("alice", &["ml-engineers"], &["idgate"], "Refresh");
    let v = invoke(&s, &t);
    assert_eq!(
        (v.status(), v.reason().as_str()),
        (401, "unsupported_token")
    );
}

#[test]
fn unreadable_client_secret_fails_check_config() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeIntrospection::start());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idgate.toml");
    std::fs::write(&path, config(&fake, dir.path(), "")).unwrap();
    support::write_secret(&dir.path().join("okta.secret"), "");
    let out = std::process::Command::new(Agent::binary())
        .args(["check-config", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("issuer[0].client_secret_file"), "{stderr}");
}

/// `idgate explain` with an opaque token: the introspection outcome, never the token.
#[test]
fn explain_reports_the_introspection_outcome() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(FakeIntrospection::start());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idgate.toml");
    std::fs::write(&path, config(&fake, dir.path(), "")).unwrap();
    let explain = |token: &str| {
        let out = std::process::Command::new(Agent::binary())
            .args(["explain", "-c"])
            .arg(&path)
            .args(["--method", "POST", "--path", INVOKE, "--token", token])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!text.contains(token), "the token is never printed: {text}");
        let v: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{e}: {text}\n{}", String::from_utf8_lossy(&out.stderr)));
        v
    };
    let t = fake.mint_okta(
        "alice@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    let r = explain(&t);
    assert_eq!(r["introspection"]["issuer"], "okta", "{r:#}");
    assert_eq!(
        r["introspection"]["endpoint"],
        fake.okta_url().as_str(),
        "{r:#}"
    );
    let outcome = r["introspection"]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("active"), "{r:#}");
    assert_eq!(r["variables"]["sub"], "alice@example.com", "{r:#}");
    let r = explain("2YotnFZFEjr1zCsicMWpAA");
    let outcome = r["introspection"]["outcome"].as_str().unwrap();
    assert!(outcome.starts_with("inactive"), "{r:#}");
    assert_eq!(r["variables"]["reason"], "bad_signature", "{r:#}");
    fake.expect_secret("okta", "other");
    let r = explain(&t);
    let outcome = r["introspection"]["outcome"].as_str().unwrap();
    assert!(outcome.contains("client_secret_file"), "{r:#}");
    assert_eq!(r["variables"]["status"], 502, "{r:#}");
}

/// SIGHUP with the issuer unchanged keeps the cached answers (no new call); a rotated secret
/// file is read again (the fake then expects the new one).
#[test]
fn reload_keeps_cached_answers_and_rereads_the_secret() {
    let s = setup("");
    let t = s.fake.mint_okta(
        "ivy@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    assert!(invoke(&s, &t).allow());
    let secret_file = s._dir.path().join("okta.secret");
    support::write_secret(&secret_file, "rotated-secret");
    s.fake.expect_secret("okta", "rotated-secret");
    s.agent.signal("HUP");
    let reloaded = support::poll_until(Duration::from_secs(10), || {
        (s.agent
            .metric("idgate_config_reloads_total", &[("result", "success")])
            .unwrap_or(0.0)
            >= 1.0)
            .then_some(())
    });
    assert!(reloaded.is_some(), "{}", s.agent.log());
    assert!(invoke(&s, &t).allow());
    assert_eq!(s.fake.calls("okta"), 1, "answered from the kept cache");
    let other = s.fake.mint_okta(
        "jay@example.com",
        &["ml-engineers"],
        Duration::from_secs(3600),
    );
    let v = invoke(&s, &other);
    assert!(
        v.allow(),
        "the new secret is used: {v:?}\n{}",
        s.agent.log()
    );
    assert_eq!(s.fake.calls("okta"), 2);
}

/// A JWT issuer next to an introspection issuer receiving opaque tokens: a signed JWT of the
/// JWT issuer is validated locally (no call), an opaque token goes to introspection, and a
/// JWT of an unknown issuer is not sent anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_issuers_and_an_introspection_issuer_side_by_side() {
    use support::auth_kit::{self, MockIdp, Signer};
    let fake = FakeIntrospection::start().await;
    let signer = Signer::rsa("k1");
    let idp = MockIdp::start(&[&signer]).await;
    let dir = tempfile::tempdir().unwrap();
    support::write_secret(&dir.path().join("okta.secret"), OKTA_SECRET);
    let text = format!(
        "[[issuer]]\nname = \"corp\"\nissuer = \"{}\"\njwks_uri = \"{}\"\naudiences = [\"api\"]\n\n{}",
        idp.base,
        idp.jwks_uri(),
        fake.okta_issuer_toml(&dir.path().join("okta.secret"), ""),
    );
    let cfg = idgate::config::Config::from_toml_in(&text, "t", dir.path())
        .unwrap_or_else(|e| panic!("{e}"));
    let a = auth_kit::ready_auth(&cfg).await;
    let jwt = signer.token(&auth_kit::claims(&idp.base));
    assert_eq!(&*a.authenticate(&jwt).await.unwrap().issuer, "corp");
    let opaque = fake.mint_okta("kim@example.com", &[], Duration::from_secs(600));
    assert_eq!(&*a.authenticate(&opaque).await.unwrap().issuer, "okta");
    let stranger = signer.token(&auth_kit::claims("https://elsewhere.example.com"));
    assert_eq!(auth_kit::reason(&a, &stranger).await, "unknown_issuer");
    assert_eq!(
        fake.calls("okta"),
        1,
        "only the opaque token was introspected"
    );
}
