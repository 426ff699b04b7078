//! Route-optimized serving endpoints at the broker (no HAProxy): the serving-endpoint lookup,
//! the endpoint-scoped data-plane token (jwt-bearer grant with the API's
//! `authorization_details`), the route (`upstream_host`, `upstream_path`), caching, the host
//! allow-list, and who is blamed when something fails. Against the fake Databricks, which
//! refuses a malformed jwt-bearer request and remembers which endpoint each token is scoped to.

mod support;
use support::databricks;

use std::path::Path;
use std::time::Instant;

use databricks::{
    Fail, FakeDatabricks, TokenKind, CLIENT_ID, CLIENT_SECRET, DATA_PLANE_DOMAIN,
    GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER,
};
use idgate::config::Config;
use idgate::upstream::{Blame, Broker, Caller, Grant, UpstreamError};

const INVOKE: &str = "/serving-endpoints/{}/invocations";

fn http() -> reqwest::Client {
    idgate::outbound::client()
}

/// A client_credentials upstream `sp` at the fake (its secret in `dir`), plus `extra` keys.
fn broker(fake: &FakeDatabricks, dir: &Path, extra: &str) -> Broker {
    std::fs::write(dir.join("sp.secret"), format!("{CLIENT_SECRET}\n")).unwrap();
    let text = format!(
        "[upstream.sp]\nkind = \"client_credentials\"\ntoken_url = \"{}\"\n\
         client_id = \"{CLIENT_ID}\"\nclient_secret_file = \"sp.secret\"\n{extra}\n\
         [upstream.tx]\nkind = \"token_exchange\"\ntoken_url = \"{}\"\n{extra}\n",
        fake.token_url, fake.token_url
    );
    let cfg = Config::from_toml_in(&text, "test", dir).unwrap_or_else(|e| panic!("{e}"));
    Broker::new(&cfg, None, http()).expect("valid config")
}

async fn grant(
    b: &Broker,
    upstream: &str,
    caller: Option<&str>,
    endpoint: &str,
) -> Result<Grant, UpstreamError> {
    let path = INVOKE.replace("{}", endpoint);
    let serving = idgate::upstream::serving_invocation("POST", &path);
    assert_eq!(serving, Some(endpoint), "{path} is an invocation");
    let caller = Caller {
        token: caller,
        ..Caller::ANONYMOUS
    };
    b.grant_for(upstream, caller, Instant::now(), serving).await
}

fn bearer(g: &Grant) -> &str {
    g.authorization
        .strip_prefix("Bearer ")
        .expect("a Bearer credential")
}

#[tokio::test]
async fn a_route_optimized_endpoint_gets_its_data_plane_and_a_token_scoped_to_it() {
    let fake = FakeDatabricks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let churn = fake.add_route_optimized("churn");
    let other = fake.add_route_optimized("fraud");
    fake.add_endpoint("classic");
    let b = broker(
        &fake,
        dir.path(),
        "data_plane_hosts = [\"*.serving.cloud.databricks.com\"]",
    );

    let g = grant(&b, "sp", None, "churn").await.unwrap();
    let route = g.route.as_deref().expect("a data-plane route");
    assert_eq!(&*route.host, churn.data_plane.as_deref().unwrap());
    assert!(route.host.ends_with(DATA_PLANE_DOMAIN));
    assert_eq!(&*route.path, churn.data_plane_path());
    assert_eq!(fake.kind_of(bearer(&g)), Some(TokenKind::DataPlane));
    assert_eq!(fake.endpoint_of(bearer(&g)).as_deref(), Some("churn"));

    // Cached: the same route and token, no second lookup or mint.
    for _ in 0..5 {
        let again = grant(&b, "sp", None, "churn").await.unwrap();
        assert_eq!(again.authorization, g.authorization);
    }
    assert_eq!(fake.lookups("churn"), 1);
    assert_eq!(fake.requests_for_grant(GRANT_JWT_BEARER), 1);

    // Another endpoint: its own token, scoped to it.
    let f = grant(&b, "sp", None, "fraud").await.unwrap();
    assert_ne!(f.authorization, g.authorization);
    assert_eq!(fake.endpoint_of(bearer(&f)).as_deref(), Some("fraud"));
    assert_eq!(
        f.route.as_deref().unwrap().path.as_ref(),
        other.data_plane_path()
    );

    // A classic endpoint goes to the workspace with the workspace token; one control-plane
    // token serves everything.
    let c = grant(&b, "sp", None, "classic").await.unwrap();
    assert!(c.route.is_none());
    assert_eq!(fake.kind_of(bearer(&c)), Some(TokenKind::ClientCredentials));
    assert_eq!(fake.requests_for_grant(GRANT_CLIENT_CREDENTIALS), 1);

    // Not an invocation: no lookup at all.
    let before = fake.rest_requests().len();
    let w = b
        .grant_for("sp", Caller::ANONYMOUS, Instant::now(), None)
        .await
        .unwrap();
    assert!(w.route.is_none());
    assert_eq!(fake.rest_requests().len(), before);
}

#[tokio::test]
async fn data_plane_tokens_are_per_caller_for_token_exchange() {
    let fake = FakeDatabricks::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.add_route_optimized("churn");
    let b = broker(&fake, dir.path(), "");
    let alice = grant(&b, "tx", Some("alice.jwt"), "churn").await.unwrap();
    let bob = grant(&b, "tx", Some("bob.jwt"), "churn").await.unwrap();
    assert_ne!(alice.authorization, bob.authorization);
    for g in [&alice, &bob] {
        assert_eq!(fake.kind_of(bearer(g)), Some(TokenKind::DataPlane));
    }
    // Minted from each caller's own exchanged token (the fake remembers whose it is).
    assert_eq!(
        fake.subject_of(bearer(&alice)),
        Some(Some("alice.jwt".into()))
    );
    assert_eq!(fake.subject_of(bearer(&bob)), Some(Some("bob.jwt".into())));
    let again = grant(&b, "tx", Some("alice.jwt"), "churn").await.unwrap();
    assert_eq!(again.authorization, alice.authorization);
    assert_eq!(fake.requests_for_grant(GRANT_JWT_BEARER), 2);
}

#[tokio::test]
async fn a_host_outside_data_plane_hosts_is_never_followed() {
    let fake = FakeDatabricks::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.add_route_optimized_at("evil", "attacker.example.com");
    fake.add_route_optimized("fine");
    let b = broker(&fake, dir.path(), "");
    let e = grant(&b, "sp", None, "evil").await.unwrap_err();
    assert_eq!(e.blame(), Blame::Gateway, "{e}");
    assert_eq!(
        fake.requests_for_grant(GRANT_JWT_BEARER),
        0,
        "no token minted"
    );
    // data_plane = "off": every invocation goes to the workspace.
    let off = broker(&fake, dir.path(), "data_plane = \"off\"");
    let g = grant(&off, "sp", None, "fine").await.unwrap();
    assert!(g.route.is_none());
    assert_eq!(fake.lookups("fine"), 0);
}

#[tokio::test]
async fn failures_are_blamed_on_the_right_side() {
    let fake = FakeDatabricks::start().await;
    let dir = tempfile::tempdir().unwrap();
    fake.add_route_optimized("churn");
    let b = broker(&fake, dir.path(), "");

    // The token endpoint refuses the jwt-bearer grant: for a shared service principal it is
    // the gateway's credential; for an exchanged token, this caller's.
    fake.fail_always_for(
        GRANT_JWT_BEARER,
        Some(Fail::Status(403, "PERMISSION_DENIED")),
    );
    let e = grant(&b, "sp", None, "churn").await.unwrap_err();
    assert_eq!(e.blame(), Blame::Gateway, "{e}");
    let e = grant(&b, "tx", Some("carol.jwt"), "churn")
        .await
        .unwrap_err();
    assert_eq!(e.blame(), Blame::Caller, "{e}");
    // Remembered: asking again does not call the endpoint.
    let minted = fake.requests_for_grant(GRANT_JWT_BEARER);
    grant(&b, "tx", Some("carol.jwt"), "churn")
        .await
        .unwrap_err();
    assert_eq!(fake.requests_for_grant(GRANT_JWT_BEARER), minted);

    // A 5xx from the token endpoint is transient.
    fake.fail_always_for(GRANT_JWT_BEARER, Some(Fail::Unavailable));
    let e = grant(&b, "tx", Some("dave.jwt"), "churn")
        .await
        .unwrap_err();
    assert_eq!(e.blame(), Blame::Transient, "{e}");
}

#[tokio::test]
async fn an_unknown_endpoint_goes_to_the_workspace() {
    let fake = FakeDatabricks::start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = broker(&fake, dir.path(), "");
    let g = grant(&b, "sp", None, "nope").await.unwrap();
    assert!(g.route.is_none(), "the workspace answers 404 itself");
    assert_eq!(fake.lookups("nope"), 1);
    // Remembered for a moment: no lookup per request.
    grant(&b, "sp", None, "nope").await.unwrap();
    assert_eq!(fake.lookups("nope"), 1);
}
