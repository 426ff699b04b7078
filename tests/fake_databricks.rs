//! The fake Databricks itself (tests/support/databricks): the serving-endpoint API, the
//! jwt-bearer grant and the data plane behave as the module documents, so the end-to-end
//! tests that rely on it test idgate and HAProxy, not the fake.

mod support;

use reqwest::StatusCode;
use serde_json::Value;
use support::databricks::{
    Endpoint, Fail, FakeDatabricks, Plane, TokenKind, CLIENT_ID, CLIENT_SECRET, DATA_PLANE_DOMAIN,
    GRANT_CLIENT_CREDENTIALS, GRANT_JWT_BEARER, WORKSPACE_ID,
};

async fn client_credentials(fake: &FakeDatabricks) -> String {
    let r = reqwest::Client::new()
        .post(&fake.token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn jwt_bearer(fake: &FakeDatabricks, assertion: &str, details: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(&fake.token_url)
        .form(&[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", assertion),
            ("authorization_details", details),
        ])
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn lookup(fake: &FakeDatabricks, name: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!(
        "{}/api/2.0/serving-endpoints/{name}",
        fake.base_url
    ));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// A client for the TLS listeners: trusts the fake's CA and resolves the workspace and every
/// data-plane name to 127.0.0.1.
fn tls_client(fake: &FakeDatabricks, endpoints: &[&Endpoint]) -> reqwest::Client {
    let pem = std::fs::read(fake.ca_file()).unwrap();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .resolve(support::echo::UPSTREAM_HOST, fake.upstream().addr);
    for ep in endpoints {
        b = b.resolve(&ep.data_plane_host().unwrap(), fake.data_plane_addr());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn serving_endpoint_api_needs_a_workspace_token_and_has_the_sdk_shape() {
    let fake = FakeDatabricks::start().await;
    let classic = fake.add_endpoint("classic");
    let ro = fake.add_route_optimized("fast");
    let (status, body) = lookup(&fake, "classic", None).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let (status, _) = lookup(&fake, "classic", Some("dapi-not-issued")).await;
    assert_eq!(status, 401);
    let cc = client_credentials(&fake).await;
    let (status, body) = lookup(&fake, "classic", Some(&cc)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["name"], "classic");
    assert_eq!(body["id"], classic.id.as_str());
    assert!(body.get("route_optimized").is_none() && body.get("data_plane_info").is_none());

    let (status, body) = lookup(&fake, "fast", Some(&cc)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["route_optimized"], true);
    let url = format!(
        "https://{}.{DATA_PLANE_DOMAIN}/{WORKSPACE_ID}/serving-endpoints/fast/invocations",
        ro.id
    );
    assert_eq!(body["endpoint_url"], url.as_str());
    let q = &body["data_plane_info"]["query_info"];
    assert_eq!(q["endpoint_url"], url.as_str());
    let details: Value = serde_json::from_str(q["authorization_details"].as_str().unwrap())
        .expect("authorization_details is a JSON document in a string");
    assert_eq!(
        details,
        serde_json::json!([{
            "type": "workspace_permission",
            "object_type": "serving-endpoints",
            "object_path": format!("/serving-endpoints/{}", ro.id),
            "actions": ["query_inference_endpoint"],
        }])
    );

    let (status, body) = lookup(&fake, "nope", Some(&cc)).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    assert_eq!(fake.lookups("classic"), 3);
    assert_eq!(fake.lookups("fast"), 1);
    assert_eq!(fake.lookups("nope"), 1);
}

#[tokio::test]
async fn jwt_bearer_grant_issues_endpoint_scoped_tokens_only_for_its_own_assertions() {
    let fake = FakeDatabricks::start().await;
    let a = fake.add_route_optimized("a");
    let b = fake.add_route_optimized("b");
    let classic = fake.add_endpoint("classic");
    let cc = client_credentials(&fake).await;

    let (status, body) = jwt_bearer(&fake, &cc, &a.authorization_details()).await;
    assert_eq!(status, 200, "{body}");
    let dp_a = body["access_token"].as_str().unwrap().to_string();
    assert!(dp_a.starts_with("dbx-dp-"), "{dp_a}");
    assert_eq!(fake.kind_of(&dp_a), Some(TokenKind::DataPlane));
    assert_eq!(fake.endpoint_of(&dp_a).as_deref(), Some("a"));
    let (_, body) = jwt_bearer(&fake, &cc, &b.authorization_details()).await;
    let dp_b = body["access_token"].as_str().unwrap().to_string();
    assert_ne!(dp_a, dp_b);
    assert_eq!(fake.endpoint_of(&dp_b).as_deref(), Some("b"));

    // Refusals: an assertion it never issued, a data-plane token as assertion, details of a
    // classic endpoint, details re-serialized differently, client authentication present.
    for (assertion, details, code) in [
        ("eyJ.forged", a.authorization_details(), "invalid_grant"),
        (dp_a.as_str(), a.authorization_details(), "invalid_grant"),
        (
            cc.as_str(),
            classic.authorization_details(),
            "invalid_request",
        ),
        (
            cc.as_str(),
            a.authorization_details().replace(",", ", "),
            "invalid_request",
        ),
    ] {
        let (status, body) = jwt_bearer(&fake, assertion, &details).await;
        assert_eq!(
            (status, body["error_code"].as_str()),
            (400, Some(code)),
            "{details}"
        );
    }
    let r = reqwest::Client::new()
        .post(&fake.token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[
            ("grant_type", GRANT_JWT_BEARER),
            ("assertion", cc.as_str()),
            ("authorization_details", &a.authorization_details()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    fake.expire_token(&cc);
    let (status, body) = jwt_bearer(&fake, &cc, &a.authorization_details()).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(fake.requests_for_grant(GRANT_JWT_BEARER), 8);
    assert_eq!(fake.data_plane_tokens().len(), 2);
}

#[tokio::test]
async fn failures_can_target_one_grant_type() {
    let fake = FakeDatabricks::start().await;
    let a = fake.add_route_optimized("a");
    fake.fail_always_for(GRANT_JWT_BEARER, Some(Fail::Status(401, "invalid_client")));
    fake.fail_next_for(GRANT_CLIENT_CREDENTIALS, Fail::Unavailable, 1);
    let r = reqwest::Client::new()
        .post(&fake.token_url)
        .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
        .form(&[("grant_type", "client_credentials"), ("scope", "all-apis")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let cc = client_credentials(&fake).await;
    let (status, body) = jwt_bearer(&fake, &cc, &a.authorization_details()).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("invalid_client"))
    );
    fake.fail_always_for(GRANT_JWT_BEARER, None);
    let (status, _) = jwt_bearer(&fake, &cc, &a.authorization_details()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tls_workspace_and_data_plane_check_tokens_and_record_requests() {
    let fake = FakeDatabricks::start_workspace().await;
    let classic = fake.add_endpoint("classic");
    let a = fake.add_route_optimized("a");
    let b = fake.add_route_optimized("b");
    assert!(a
        .data_plane
        .as_deref()
        .unwrap()
        .ends_with(&format!(":{}", fake.data_plane_addr().port())));
    let cc = client_credentials(&fake).await;
    let (_, body) = jwt_bearer(&fake, &cc, &a.authorization_details()).await;
    let dp_a = body["access_token"].as_str().unwrap().to_string();
    let (_, body) = jwt_bearer(&fake, &cc, &b.authorization_details()).await;
    let dp_b = body["access_token"].as_str().unwrap().to_string();
    let http = tls_client(&fake, &[&a, &b]);
    let ws = format!(
        "https://{}:{}",
        support::echo::UPSTREAM_HOST,
        fake.upstream().addr.port()
    );
    let _ = classic;

    // Workspace host: classic invocation with a workspace token; a route-optimized one is
    // refused there; the well-known configuration needs no token.
    let r = http
        .post(format!("{ws}/serving-endpoints/classic/invocations"))
        .bearer_auth(&cc)
        .json(&serde_json::json!({"inputs": [1, 2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["predictions"][0],
        serde_json::json!({"endpoint": "classic", "plane": "workspace", "input": {"inputs": [1, 2]}})
    );
    let r = http
        .post(format!("{ws}/serving-endpoints/a/invocations"))
        .bearer_auth(&cc)
        .json(&serde_json::json!({"inputs": [1]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = http
        .post(format!("{ws}/serving-endpoints/classic/invocations"))
        .bearer_auth(&dp_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "a data-plane token is no workspace token");
    let r = http
        .get(format!("{ws}/.well-known/databricks-config"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let meta: Value = r.json().await.unwrap();
    assert_eq!(meta["workspace_id"], WORKSPACE_ID);
    assert!(meta["oidc_endpoint"]
        .as_str()
        .unwrap()
        .starts_with("https://"));

    // Data plane: only a token scoped to exactly that endpoint.
    let url = a.endpoint_url().unwrap();
    let call = |token: String| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&serde_json::json!({"inputs": [3]}))
                .send()
                .await
                .unwrap()
        }
    };
    let r = call(dp_a.clone()).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["predictions"][0]["plane"], "data_plane");
    assert_eq!(body["predictions"][0]["endpoint"], "a");
    let r = call(dp_b).await;
    assert_eq!(r.status(), 403, "token scoped to another endpoint");
    let r = call(cc.clone()).await;
    assert_eq!(r.status(), 401, "a workspace token on the data plane");

    let dp = fake.requests_on(Plane::DataPlane);
    assert_eq!(dp.len(), 3);
    assert_eq!(dp[0].sni.as_deref(), a.data_plane_host().as_deref());
    assert_eq!(dp[0].path, a.data_plane_path());
    assert_eq!(dp[0].bearer(), Some(dp_a.as_str()));
    let wsr = fake.requests_on(Plane::Workspace);
    assert_eq!(wsr.len(), 4);
    assert_eq!(wsr[0].sni.as_deref(), Some(support::echo::UPSTREAM_HOST));
    assert!(fake.requests_on(Plane::Agent).is_empty());
}
