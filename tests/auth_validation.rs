//! Token validation against a local mock JWKS server: every rejection rule of src/auth with
//! tokens minted here (RS256, ES256, EdDSA), plus the identity built from accepted tokens.

#[path = "support/auth_kit.rs"]
mod kit;

use idgate::claim_path::ClaimPath;
use jsonwebtoken::{Algorithm, EncodingKey};
use kit::*;
use serde_json::json;

struct Env {
    idp: MockIdp,
    auth: idgate::auth::Authenticator,
    rsa: Signer,
    ec: Signer,
    ed: Signer,
}

async fn env(name: &str, extra: &str) -> Env {
    let (rsa, ec, ed) = (Signer::rsa("rsa-1"), Signer::ec("ec-1"), Signer::ed("ed-1"));
    let idp = MockIdp::start(&[&rsa, &ec, &ed]).await;
    let auth = ready_auth(&config(name, &idp, false, extra)).await;
    Env {
        idp,
        auth,
        rsa,
        ec,
        ed,
    }
}

#[tokio::test]
async fn identity_keeps_only_the_claims_rules_read() {
    let rule = "\n[[rule]]\nname = \"r\"\nclaims = { \"realm.roles\" = \"r1\" }\n\
                principal = \"claim:preferred_username\"\n";
    let e = env("v-kept", rule).await;
    let mut c = claims(&e.idp.base);
    c["realm"] = json!({"roles": ["r1"], "other": 1});
    c["preferred_username"] = json!("al");
    c["unread"] = json!("dropped");
    let id = e.auth.authenticate(&e.rsa.token(&c)).await.unwrap();
    let claim = |p: &str| id.claim(&ClaimPath::parse(p).unwrap()).cloned();
    assert_eq!(claim("realm.roles"), Some(json!(["r1"])));
    assert_eq!(claim("preferred_username"), Some(json!("al")));
    assert_eq!(claim("unread"), None);
    assert_eq!(claim("scope"), None);
    let mut names: Vec<_> = id.claims.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["preferred_username", "realm"]);
    // The typed fields do not depend on it.
    assert_eq!(id.scopes, ["read", "write"]);
    assert_eq!(id.groups, ["ml-engineers"]);
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
}

#[tokio::test]
async fn accepts_all_three_algorithms_and_builds_identity() {
    let e = env("v-accept", "").await;
    for s in [&e.rsa, &e.ec, &e.ed] {
        let mut c = claims(&e.idp.base);
        c["sub"] = json!(format!("user-{}", s.alg_name()));
        let id = e
            .auth
            .authenticate(&s.token(&c))
            .await
            .unwrap_or_else(|r| panic!("{}: {r}", s.alg_name()));
        assert_eq!(id.issuer.as_ref(), "v-accept");
        assert_eq!(id.sub, format!("user-{}", s.alg_name()));
        assert_eq!(id.email.as_deref(), Some("alice@example.com"));
        assert_eq!(id.groups, ["ml-engineers"]);
        assert_eq!(id.scopes, ["read", "write"]);
        assert_eq!(id.expires_at, c["exp"].as_u64().unwrap());
        // No rule reads any claim: the identity keeps none (the typed fields above hold
        // what the rules need; see identity_keeps_only_the_claims_rules_read).
        assert!(id.claims.is_empty());
    }
    // typ at+jwt (RFC 9068) and a header without typ are fine too.
    let c = claims(&e.idp.base);
    let h = json!({"alg":"RS256","kid":"rsa-1","typ":"at+jwt"});
    assert!(e
        .auth
        .authenticate(&e.rsa.sign_with_header(&h, &c))
        .await
        .is_ok());
    let h = json!({"alg":"ES256","kid":"ec-1"});
    assert!(e
        .auth
        .authenticate(&e.ec.sign_with_header(&h, &c))
        .await
        .is_ok());
    let st = &e.auth.issuer_status()[0];
    assert!(
        st.loaded && st.keys == 3 && st.last_error.is_none(),
        "{st:?}"
    );
    assert_eq!(st.kids, ["ec-1", "ed-1", "rsa-1"]);
    let m = idgate::metrics::metrics();
    assert_eq!(m.jwks_keys.with_label_values(&["v-accept"]).get(), 3);
    assert!(m.jwks_last_success.with_label_values(&["v-accept"]).get() > 1_600_000_000);
    assert!(refresh_count("v-accept", "success") >= 1);
}

/// Entra ID group overage through the authenticator: the issuer's groups claim, or a claim a
/// rule reads, named in `_claim_names` refuses the token; a claim nobody reads does not. A
/// refused token is not cached: the same token is refused again.
#[tokio::test]
async fn left_out_claims_refuse_the_token_when_read() {
    let overage = |base: &str| {
        let mut c = claims(base);
        c.as_object_mut().unwrap().remove("groups");
        c["_claim_names"] = json!({"groups": "src1"});
        c["_claim_sources"] = json!({"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}});
        c
    };
    let e = env("v-overage", "").await;
    let t = e.rsa.token(&overage(&e.idp.base));
    for _ in 0..2 {
        let r = e.auth.authenticate(&t).await.unwrap_err();
        assert_eq!(r.reason.as_str(), "claim_invalid");
        assert!(
            r.description
                .starts_with("groups claim not in token (_claim_names"),
            "{r}"
        );
    }
    // Groups from app roles and no rule reading `groups`: the overage is irrelevant.
    let e = env("v-roles", "groups_claim = \"roles\"").await;
    let mut c = overage(&e.idp.base);
    c["roles"] = json!(["reader"]);
    let id = e.auth.authenticate(&e.rsa.token(&c)).await.unwrap();
    assert_eq!(id.groups, ["reader"]);
    // ... unless a rule reads the `groups` claim itself.
    let rule =
        "groups_claim = \"roles\"\n[[rule]]\nname = \"r\"\nclaims = { groups = \"admins\" }\n";
    let e = env("v-roles-rule", rule).await;
    let mut c = overage(&e.idp.base);
    c["roles"] = json!(["reader"]);
    assert_eq!(reason(&e.auth, &e.rsa.token(&c)).await, "claim_invalid");
}

/// `sub`, email and groups that cannot be passed on are refused with the claim named.
#[tokio::test]
async fn unpassable_identity_values_refuse_the_token() {
    let e = env("v-unpassable", "").await;
    for (claim, value, want) in [
        (
            "sub",
            json!("alice\u{202e}"),
            "sub contains an invisible or bidirectional formatting character",
        ),
        (
            "email",
            json!("a@b\r\n"),
            "email contains a control character",
        ),
        (
            "groups",
            json!(["a,b"]),
            "groups claim has a group containing a comma",
        ),
    ] {
        let mut c = claims(&e.idp.base);
        c[claim] = value;
        let r = e.auth.authenticate(&e.rsa.token(&c)).await.unwrap_err();
        assert_eq!((r.reason.as_str(), r.description), ("claim_invalid", want));
    }
}

#[tokio::test]
async fn nested_groups_claim_and_scp() {
    let e = env(
        "v-nested",
        "groups_claim = \"realm_access.roles\"\nemail_claim = \"upn\"",
    )
    .await;
    let mut c = claims(&e.idp.base);
    c["realm_access"] = json!({"roles": ["a", "b"]});
    c["upn"] = json!("bob@corp");
    c.as_object_mut().unwrap().remove("scope");
    c["scp"] = json!(["x", "y"]);
    let id = e.auth.authenticate(&e.rsa.token(&c)).await.unwrap();
    assert_eq!(id.groups, ["a", "b"]);
    assert_eq!(id.email.as_deref(), Some("bob@corp"));
    assert_eq!(id.scopes, ["x", "y"]);
}

#[tokio::test]
async fn algorithm_attacks() {
    let e = env("v-alg", "algorithms = [\"RS256\", \"ES256\"]").await;
    let c = claims(&e.idp.base);
    let payload = c.to_string();
    // alg none, with and without a signature part.
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(payload.as_bytes())
    );
    assert_eq!(reason(&e.auth, &none).await, "alg_not_allowed");
    let none_case = format!("{}.{}.", b64(br#"{"alg":"nOnE"}"#), b64(payload.as_bytes()));
    assert_eq!(reason(&e.auth, &none_case).await, "alg_not_allowed");
    // HS256 signed with the RSA public key (as served in the JWKS) as the HMAC secret.
    let public_n = e.rsa.jwk["n"].as_str().unwrap().as_bytes().to_vec();
    for secret in [public_n, fixture("rsa1.pem")] {
        let hs = EncodingKey::from_secret(&secret);
        let input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","kid":"rsa-1","typ":"JWT"}"#),
            b64(payload.as_bytes())
        );
        let sig = jsonwebtoken::crypto::sign(input.as_bytes(), &hs, Algorithm::HS256).unwrap();
        assert_eq!(
            reason(&e.auth, &format!("{input}.{sig}")).await,
            "alg_not_allowed"
        );
    }
    // EdDSA is supported in general but not allowed for this issuer.
    assert_eq!(reason(&e.auth, &e.ed.token(&c)).await, "alg_not_allowed");
    // An ES256 token naming the RSA key's kid: key/alg family confusion.
    let h = json!({"alg":"ES256","kid":"rsa-1"});
    assert_eq!(
        reason(&e.auth, &e.ec.sign_with_header(&h, &c)).await,
        "alg_not_allowed"
    );
    // Wrong case of an allowed algorithm.
    let h = json!({"alg":"rs256","kid":"rsa-1"});
    let t = format!(
        "{}.{}.c2ln",
        b64(h.to_string().as_bytes()),
        b64(payload.as_bytes())
    );
    assert_eq!(reason(&e.auth, &t).await, "alg_not_allowed");
}

#[tokio::test]
async fn signature_failures() {
    signature_failures_in(&env("v-sig", "").await).await;
}

/// The agent's runtime is multi-threaded, where each signature check is a task of its own
/// (spread over the workers): the same answers there, also for many checks at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signature_checks_as_tasks_of_their_own() {
    let e = env("v-sig-mt", "").await;
    signature_failures_in(&e).await;
    let auth = &e.auth;
    let mut checks = Vec::new();
    for i in 0..32 {
        let mut c = claims(&e.idp.base);
        c["sub"] = json!(format!("user-{i}"));
        let signer = [&e.rsa, &e.ec, &e.ed][i % 3];
        let mut token = signer.token(&c);
        if i % 4 == 3 {
            // Tamper with the payload: the signature no longer covers it.
            let (head, rest) = token.split_once('.').unwrap();
            let (_, sig) = rest.rsplit_once('.').unwrap();
            c["sub"] = json!("mallory");
            token = format!("{head}.{}.{sig}", b64(c.to_string().as_bytes()));
        }
        checks.push(async move { (i, auth.authenticate(&token).await) });
    }
    for (i, got) in futures_util::future::join_all(checks).await {
        match got {
            Ok(id) => {
                assert_ne!(i % 4, 3, "tampered token {i} accepted");
                assert_eq!(id.sub, format!("user-{i}"));
            }
            Err(r) => {
                assert_eq!(i % 4, 3, "token {i} refused: {r:?}");
                assert_eq!(r.reason.as_str(), "bad_signature");
            }
        }
    }
}

async fn signature_failures_in(e: &Env) {
    let c = claims(&e.idp.base);
    let good = e.rsa.token(&c);
    // Payload swapped after signing (sub changed).
    let mut c2 = c.clone();
    c2["sub"] = json!("mallory");
    let forged = {
        let parts: Vec<&str> = good.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(c2.to_string().as_bytes()),
            parts[2]
        )
    };
    assert_eq!(reason(&e.auth, &forged).await, "bad_signature");
    // Signed by another key that claims the published kid.
    let imposter = Signer::rsa2("rsa-1");
    assert_eq!(reason(&e.auth, &imposter.token(&c)).await, "bad_signature");
    let imposter = Signer::ec2("ec-1");
    assert_eq!(reason(&e.auth, &imposter.token(&c)).await, "bad_signature");
    // Garbage signature bytes.
    let (input, _) = good.rsplit_once('.').unwrap();
    assert_eq!(
        reason(&e.auth, &format!("{input}.AAAA")).await,
        "bad_signature"
    );
    // A signature that is not even base64url (one character cannot encode a byte).
    assert_eq!(
        reason(&e.auth, &format!("{input}.A")).await,
        "malformed_token"
    );
    // And the good one still passes.
    assert!(e.auth.authenticate(&good).await.is_ok());
}

#[tokio::test]
async fn issuer_and_audience() {
    let e = env("v-aud", "").await;
    let mut c = claims("https://other.example.com");
    assert_eq!(reason(&e.auth, &e.rsa.token(&c)).await, "unknown_issuer");
    c["iss"] = json!(format!("{}/", e.idp.base));
    assert_eq!(reason(&e.auth, &e.rsa.token(&c)).await, "unknown_issuer");
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(reason(&e.auth, &e.rsa.token(&c)).await, "claim_invalid");
    c["iss"] = json!([e.idp.base]);
    assert_eq!(reason(&e.auth, &e.rsa.token(&c)).await, "claim_invalid");

    let base = claims(&e.idp.base);
    let with_aud = |v: serde_json::Value| {
        let mut c = base.clone();
        c["aud"] = v;
        c
    };
    let mut no_aud = base.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    assert_eq!(
        reason(&e.auth, &e.rsa.token(&no_aud)).await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &e.rsa.token(&with_aud(json!(42)))).await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &e.rsa.token(&with_aud(json!({"a":1})))).await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &e.rsa.token(&with_aud(json!(["x", "y"])))).await,
        "wrong_audience"
    );
    assert_eq!(
        reason(&e.auth, &e.rsa.token(&with_aud(json!("apis")))).await,
        "wrong_audience"
    );
    assert!(e
        .auth
        .authenticate(&e.rsa.token(&with_aud(json!(["x", "api"]))))
        .await
        .is_ok());
}

#[tokio::test]
async fn time_claims() {
    let e = env("v-time", "leeway = \"30s\"\nmax_token_lifetime = \"1h\"").await;
    let n = now();
    let tok = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims(&e.idp.base);
        f(&mut c);
        e.ed.token(&c)
    };
    assert_eq!(
        reason(
            &e.auth,
            &tok(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })
        )
        .await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &tok(&|c| c["exp"] = json!((n + 60).to_string()))).await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &tok(&|c| c["exp"] = json!(n - 120))).await,
        "expired"
    );
    assert_eq!(
        reason(&e.auth, &tok(&|c| c["nbf"] = json!(n + 120))).await,
        "not_yet_valid"
    );
    assert_eq!(
        reason(&e.auth, &tok(&|c| c["iat"] = json!(n + 120))).await,
        "not_yet_valid"
    );
    assert_eq!(
        reason(&e.auth, &tok(&|c| c["exp"] = json!(n + 7200))).await,
        "claim_invalid"
    );
    assert_eq!(
        reason(
            &e.auth,
            &tok(&|c| {
                c.as_object_mut().unwrap().remove("iat");
                c["exp"] = json!(n + 7200);
            })
        )
        .await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &tok(&|c| c["exp"] = json!(253402300799u64))).await,
        "claim_invalid"
    );
    // Within the leeway: 10 s past exp, nbf 10 s ahead.
    assert!(e
        .auth
        .authenticate(&tok(&|c| c["exp"] = json!(n - 10)))
        .await
        .is_ok());
    assert!(e
        .auth
        .authenticate(&tok(&|c| c["nbf"] = json!(n + 10)))
        .await
        .is_ok());
    assert_eq!(
        reason(
            &e.auth,
            &tok(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            })
        )
        .await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &tok(&|c| c["sub"] = json!(1))).await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &tok(&|c| c["groups"] = json!({"g":1}))).await,
        "claim_invalid"
    );
}

#[tokio::test]
async fn header_rules() {
    let e = env("v-header", "").await;
    let c = claims(&e.idp.base);
    let with = |extra: serde_json::Value| {
        let mut h = e.rsa.header();
        for (k, v) in extra.as_object().unwrap() {
            h[k] = v.clone();
        }
        e.rsa.sign_with_header(&h, &c)
    };
    assert_eq!(
        reason(&e.auth, &with(json!({"crit":["exp"]}))).await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &with(json!({"crit":["b64"],"b64":false}))).await,
        "claim_invalid"
    );
    assert_eq!(
        reason(&e.auth, &with(json!({"typ":"id+jwt"}))).await,
        "unsupported_token"
    );
    assert_eq!(
        reason(&e.auth, &with(json!({"typ":"JWE"}))).await,
        "unsupported_token"
    );
    assert!(e
        .auth
        .authenticate(&with(json!({"typ":"application/AT+JWT"})))
        .await
        .is_ok());
    assert_eq!(
        reason(
            &e.auth,
            &with(json!({"jku": format!("{}/jwks", e.idp.base)}))
        )
        .await,
        "unsupported_token"
    );
    assert_eq!(
        reason(&e.auth, &with(json!({"x5u":"https://evil.example/c.pem"}))).await,
        "unsupported_token"
    );
    assert_eq!(
        reason(&e.auth, &with(json!({"jwk": e.rsa.jwk.clone()}))).await,
        "unsupported_token"
    );
    assert_eq!(
        reason(&e.auth, &with(json!({"kid":"../../etc/passwd\n"}))).await,
        "malformed_token"
    );
    assert_eq!(
        reason(&e.auth, &with(json!({"kid":"k".repeat(300)}))).await,
        "malformed_token"
    );
    // Duplicate header parameter, duplicate claims (signed, so only the duplicate is wrong).
    let h = r#"{"alg":"RS256","kid":"rsa-1","kid":"rsa-1"}"#;
    assert_eq!(
        reason(&e.auth, &e.rsa.sign_raw(h, &c.to_string())).await,
        "malformed_token"
    );
    let body = c.to_string();
    let dup = format!("{},\"aud\":\"evil\"}}", &body[..body.len() - 1]);
    let t = e.rsa.sign_raw(&e.rsa.header().to_string(), &dup);
    assert_eq!(reason(&e.auth, &t).await, "claim_invalid");
    let dup_sub = format!("{},\"s\\u0075b\":\"root\"}}", &body[..body.len() - 1]);
    let t = e.rsa.sign_raw(&e.rsa.header().to_string(), &dup_sub);
    assert_eq!(reason(&e.auth, &t).await, "claim_invalid");
}

#[tokio::test]
async fn shapes_and_sizes() {
    let e = env("v-shape", "").await;
    let good = e.rsa.token(&claims(&e.idp.base));
    let parts: Vec<&str> = good.split('.').collect();
    assert_eq!(
        reason(&e.auth, &format!("{}.{}", parts[0], parts[1])).await,
        "malformed_token"
    );
    assert_eq!(
        reason(&e.auth, &format!("{good}.x.y")).await,
        "unsupported_token"
    );
    assert_eq!(reason(&e.auth, "not a token").await, "malformed_token");
    assert_eq!(reason(&e.auth, "").await, "malformed_token");
    assert_eq!(
        reason(&e.auth, &format!("{}.{}.{}=", parts[0], parts[1], parts[2])).await,
        "malformed_token"
    );
    // Oversized: refused on length alone (default cap 16384), even though it is well formed.
    let mut c = claims(&e.idp.base);
    c["pad"] = json!("x".repeat(13000));
    let big = e.rsa.token(&c);
    assert!(big.len() > 16384);
    assert_eq!(reason(&e.auth, &big).await, "malformed_token");
    let huge = "a".repeat(1 << 20);
    assert_eq!(reason(&e.auth, &huge).await, "malformed_token");
}

#[tokio::test]
async fn token_without_kid() {
    // One key: a token without kid uses the only key fitting its alg.
    let rsa = Signer::rsa("only");
    let idp = MockIdp::start(&[&rsa]).await;
    let auth = ready_auth(&config("v-nokid-1", &idp, false, "")).await;
    let c = claims(&idp.base);
    let h = json!({"alg":"RS256","typ":"JWT"});
    assert!(auth
        .authenticate(&rsa.sign_with_header(&h, &c))
        .await
        .is_ok());
    // Two RSA keys: ambiguous, refused.
    let (a, b) = (Signer::rsa("a"), Signer::rsa2("b"));
    let idp2 = MockIdp::start(&[&a, &b]).await;
    let auth2 = ready_auth(&config("v-nokid-2", &idp2, false, "")).await;
    let c = claims(&idp2.base);
    assert_eq!(
        reason(&auth2, &b.sign_with_header(&h, &c)).await,
        "unknown_key"
    );
}

#[tokio::test]
async fn cache_hits_are_counted_and_identical() {
    let e = env("v-cache", "").await;
    let t = e.ec.token(&claims(&e.idp.base));
    let m = idgate::metrics::metrics();
    let hits = m.token_cache_requests.with_label_values(&["hit"]);
    let first = e.auth.authenticate(&t).await.unwrap();
    let before = hits.get();
    let second = e.auth.authenticate(&t).await.unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&first, &second),
        "second call served from the cache"
    );
    assert!(hits.get() > before);
    assert!(e.auth.cached_tokens() >= 1);
    // A rejected token is not cached: still rejected, still validated.
    let bad = format!("{}x", &t[..t.len() - 1]);
    assert_ne!(bad, t);
    assert!(e.auth.authenticate(&bad).await.is_err());
    assert!(e.auth.authenticate(&bad).await.is_err());
}

#[test]
fn extract_then_authenticate_uses_the_bearer_value() {
    use bytestring::ByteString;
    let req = idgate::decision::AuthzRequest {
        authorization: Some(ByteString::from("bearer eyJ.a.b")),
        ..Default::default()
    };
    assert_eq!(
        idgate::auth::extract_token(&req, None).unwrap(),
        Some("eyJ.a.b")
    );
}
