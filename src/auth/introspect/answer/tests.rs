use serde_json::json;

use super::*;
use crate::auth::entra::IssMatch;
use crate::claim_path::ClaimPath;

const OKTA_ISS: &str = "https://dev-133337.okta.com/oauth2/default";
const NOW: u64 = 1_767_225_600;

fn rules(iss: &str, aud: &str, groups: &str) -> ClaimRules {
    ClaimRules {
        name: Arc::from("idp"),
        iss: IssMatch::Exact(iss.into()),
        audiences: [aud.to_owned()].into(),
        leeway: 30,
        max_lifetime: 24 * 3600,
        email_claim: ClaimPath::parse("email").unwrap(),
        groups_claim: ClaimPath::parse(groups).unwrap(),
        user_claim: None,
    }
}

fn judge_json(v: serde_json::Value, r: &ClaimRules) -> Result<Answer, &'static str> {
    let sel = ClaimSelection::new([&r.email_claim, &r.groups_claim], &[]);
    let iss = match &r.iss {
        IssMatch::Exact(e) => e.clone(),
        IssMatch::Tenant { .. } => unreachable!(),
    };
    judge(v.to_string().as_bytes(), &iss, r, &sel, NOW, None)
}

/// Okta's documented answer for an active access token (custom authorization server), with
/// the `groups` claim an operator adds to the access token.
fn okta_active() -> serde_json::Value {
    json!({
        "active": true, "token_type": "Bearer", "scope": "openid profile",
        "client_id": "0oa1abcdEFGH2ijk3l4m", "username": "john.doe@example.com",
        "exp": NOW + 3600, "iat": NOW, "sub": "john.doe@example.com",
        "aud": "api://default", "iss": OKTA_ISS,
        "jti": "AT.7P4KlczBYVcWLkxduEuKeZfeiNYkZIC9uGJ28Cc-YaI", "uid": "00uid4BxXw6I6TV4m0g3",
        "groups": ["Everyone", "ml-engineers"],
    })
}

#[test]
fn okta_active_answer_is_the_caller() {
    let r = rules(OKTA_ISS, "api://default", "groups");
    let Ok(Answer::Active(id)) = judge_json(okta_active(), &r) else {
        panic!("not active")
    };
    assert_eq!(id.sub, "john.doe@example.com");
    assert_eq!(id.groups, ["Everyone", "ml-engineers"]);
    assert_eq!(id.scopes, ["openid", "profile"]);
    assert_eq!(id.expires_at, NOW + 3600);
    assert_eq!(&*id.issuer, "idp");
}

#[test]
fn keycloak_answer_with_realm_roles_and_array_audience() {
    let iss = "https://kc.example.com/realms/corp";
    let r = rules(iss, "idgate", "realm_access.roles");
    let answer = json!({
        "exp": NOW + 300, "iat": NOW, "jti": "6a0e1b5c-1a43-4a5b-9d0b-8c7c3e0c7f21",
        "iss": iss, "aud": ["idgate", "account"], "sub": "f1c2d3e4-0000-4000-8000-000000000001",
        "typ": "Bearer", "azp": "databricks-cli", "session_state": "0d5b8a1e",
        "realm_access": {"roles": ["offline_access", "ml-engineers"]},
        "scope": "openid email profile", "email_verified": true,
        "preferred_username": "alice", "email": "alice@example.com",
        "client_id": "databricks-cli", "username": "alice", "token_type": "Bearer",
        "active": true,
    });
    let Ok(Answer::Active(id)) = judge_json(answer, &r) else {
        panic!("not active")
    };
    assert_eq!(id.groups, ["offline_access", "ml-engineers"]);
    assert_eq!(id.email.as_deref(), Some("alice@example.com"));
}

fn refused(v: serde_json::Value, r: &ClaimRules) -> Rejection {
    match judge_json(v, r) {
        Ok(Answer::Refused(rej)) => rej,
        other => panic!("{other:?}"),
    }
}

#[test]
fn refusals() {
    let r = rules(OKTA_ISS, "api://default", "groups");
    assert_eq!(
        refused(json!({"active": false}), &r).reason,
        Reason::BadSignature
    );
    let mut v = okta_active();
    v["aud"] = json!("api://other");
    assert_eq!(refused(v, &r).reason, Reason::WrongAudience);
    let mut v = okta_active();
    v["iss"] = json!("https://dev-133337.okta.com");
    assert_eq!(refused(v, &r).reason, Reason::ClaimInvalid);
    let mut v = okta_active();
    v["exp"] = json!(NOW - 60);
    assert_eq!(refused(v, &r).reason, Reason::Expired);
    let mut v = okta_active();
    v["nbf"] = json!(NOW + 600);
    assert_eq!(refused(v, &r).reason, Reason::NotYetValid);
    let mut v = okta_active();
    v.as_object_mut().unwrap().remove("exp");
    assert_eq!(refused(v, &r).reason, Reason::ClaimInvalid);
    // A refresh token Keycloak reports active.
    let mut v = okta_active();
    v["typ"] = json!("Refresh");
    assert_eq!(refused(v, &r).reason, Reason::UnsupportedToken);
    let mut v = okta_active();
    v["token_type"] = json!("DPoP");
    assert_eq!(refused(v, &r).reason, Reason::UnsupportedToken);
    let mut v = okta_active();
    v["groups"] = json!({"not": "a list"});
    assert_eq!(refused(v, &r).reason, Reason::ClaimInvalid);
}

#[test]
fn absent_iss_is_the_configured_issuer() {
    let r = rules(OKTA_ISS, "api://default", "groups");
    let mut v = okta_active();
    v.as_object_mut().unwrap().remove("iss");
    assert!(matches!(judge_json(v, &r), Ok(Answer::Active(_))));
}

#[test]
fn inactive_with_a_past_exp_is_expired() {
    assert_eq!(inactive(Some(NOW - 1), NOW).reason, Reason::Expired);
    assert_eq!(inactive(Some(NOW + 60), NOW).reason, Reason::BadSignature);
    assert_eq!(inactive(None, NOW).reason, Reason::BadSignature);
}

#[test]
fn bodies_that_are_no_answer() {
    let r = rules(OKTA_ISS, "api://default", "groups");
    let sel = ClaimSelection::new([&r.groups_claim], &[]);
    let j = |b: &str| judge(b.as_bytes(), OKTA_ISS, &r, &sel, NOW, None).err();
    assert_eq!(j("<html>"), Some("the answer is not a JSON object"));
    assert_eq!(j("[]"), Some("the answer is not a JSON object"));
    assert_eq!(j("{}"), Some("the answer has no boolean active member"));
    assert_eq!(
        j(r#"{"active":"true"}"#),
        Some("the answer has no boolean active member")
    );
    assert_eq!(
        j(r#"{"active":true,"active":false}"#),
        Some("the answer is not a JSON object")
    );
    let dup = format!(
        r#"{{"active":true,"sub":"a","sub":"b","aud":"api://default","exp":{}}}"#,
        NOW + 60
    );
    assert_eq!(j(&dup), Some("the answer has duplicate member names"));
}
