use super::*;
use crate::auth::jose::testing::*;

#[test]
fn claims_accept_and_identity() {
    let id = check(json!({
        "iss":"https://idp","sub":"alice","aud":["x","api2"],"exp":NOW as f64 + 60.9,"iat":NOW,
        "email":"a@example.com","realm":{"roles":["r1","r2"]},"scp":["read","write"]
    }))
    .unwrap();
    assert_eq!(id.issuer.as_ref(), "corp");
    assert_eq!(id.sub, "alice");
    assert_eq!(id.email.as_deref(), Some("a@example.com"));
    assert_eq!(id.groups, ["r1", "r2"]);
    assert_eq!(id.scopes, ["read", "write"]);
    assert_eq!(id.expires_at, NOW + 60);
    // Only the claims the rules read stay (`tenant` in SELECTION); absent here.
    assert!(id.claims.is_empty());
    let id = check(with("tenant", json!({"t": [1]}))).unwrap();
    assert_eq!(id.claims.len(), 1);
    assert_eq!(id.claim(&path("tenant.t")), Some(&json!([1])));
    let id = check(with("scope", json!("a  b c"))).unwrap();
    assert_eq!(id.scopes, ["a", "b", "c"]);
    assert!(id.groups.is_empty() && id.email.is_none());
    let id = check(with("realm", json!({"roles":"solo"}))).unwrap();
    assert_eq!(id.groups, ["solo"]);
    // leeway: expired 20 s ago, nbf 20 s ahead: still fine with 30 s leeway
    assert!(check(with("exp", json!(NOW - 20))).is_ok());
    assert!(check(with("nbf", json!(NOW + 20))).is_ok());
}

/// Identity values that cannot be passed on faithfully refuse the token, naming the claim.
#[test]
fn unpassable_identity_values_are_claim_invalid() {
    let cases: &[(Value, &str)] = &[
        (
            with("sub", json!("a\u{1}")),
            "sub contains a control character",
        ),
        (
            with("sub", json!("a\u{7f}")),
            "sub contains a control character",
        ),
        (
            with("sub", json!("a\u{85}")),
            "sub contains a control character",
        ),
        (
            with("sub", json!("\u{202e}nimda")),
            "sub contains an invisible or bidirectional formatting character",
        ),
        (
            with("sub", json!("admin\u{200b}")),
            "sub contains an invisible or bidirectional formatting character",
        ),
        (
            with("sub", json!("s".repeat(1025))),
            "sub longer than 1024 bytes",
        ),
        (
            with("email", json!("a@b\r\nX-Evil: 1")),
            "email contains a control character",
        ),
        (
            with("email", json!("e".repeat(1025))),
            "email longer than 1024 bytes",
        ),
        (
            with("realm", json!({"roles": ["a", "b,c"]})),
            "groups claim has a group containing a comma",
        ),
        (
            with("realm", json!({"roles": ["a", ""]})),
            "groups claim has an empty group",
        ),
        (
            with("realm", json!({"roles": "\u{2066}admin"})),
            "groups claim has a group with an invisible or bidirectional formatting character",
        ),
        (
            with("realm", json!({"roles": ["x\n"]})),
            "groups claim has a group with a control character",
        ),
    ];
    for (v, want) in cases {
        let r = check(v.clone());
        assert_eq!(
            r.as_ref().map_err(|r| r.reason),
            Err(Reason::ClaimInvalid),
            "{want}"
        );
        assert_eq!(description(r), *want);
    }
    let forty: Vec<String> = (0..201).map(|i| format!("{i:040}")).collect();
    assert_eq!(
        description(check(with("realm", json!({ "roles": forty })))),
        "groups claim longer than 8192 bytes (comma-joined)"
    );
    let guids: Vec<String> = (0..200)
        .map(|i| format!("{i:08x}-1111-4222-8333-{i:012x}"))
        .collect();
    let id = check(with("realm", json!({ "roles": guids }))).unwrap();
    assert_eq!(id.groups.len(), 200);
    assert!(check(with("sub", json!("s".repeat(1024)))).is_ok());
    assert!(check(with("sub", json!("Zoë 佐藤"))).is_ok());
}

/// Entra ID group overage, exactly as documented: v2.0 access/ID tokens carry
/// `_claim_names`/`_claim_sources` instead of `groups`; v1 implicit-flow tokens `hasgroups`.
#[test]
fn left_out_claims_are_claim_invalid_when_read() {
    let overage = |names: Value| {
        let mut v = base();
        v["_claim_names"] = names;
        v["_claim_sources"] = json!({"src1": {
            "endpoint": "https://graph.microsoft.com/v1.0/users/00000000-0000-0000-0000-000000000000/getMemberObjects"
        }});
        v
    };
    let groups_overage =
        "groups claim not in token (_claim_names: group overage; configure the IdP to emit groups as app roles or filtered groups)";
    // groups_claim "groups" (the default): refused.
    let r = check_with("groups", &[], overage(json!({"groups": "src1"})));
    assert_eq!(r.as_ref().unwrap_err().reason, Reason::ClaimInvalid);
    assert_eq!(description(r), groups_overage);
    // A dotted groups claim whose top-level object was left out, or the whole path.
    assert_eq!(
        description(check(overage(json!({"realm": "src1"})))),
        groups_overage
    );
    assert_eq!(
        description(check(overage(json!({"realm.roles": "src1"})))),
        groups_overage
    );
    assert_eq!(
        description(check(overage(json!({"email": "src1"})))),
        "email claim not in token (_claim_names: distributed claim)"
    );
    assert_eq!(
        description(check(overage(json!({"tenant": "src1"})))),
        "claim read by a rule not in token (_claim_names: distributed claim)"
    );
    assert_eq!(
        description(check(overage(json!({"scp": "src1"})))),
        "registered claim named in _claim_names (distributed claims are not supported)"
    );
    // Nobody reads `groups` (groups come from app roles): fine.
    let id = check_with("roles", &[], overage(json!({"groups": "src1"}))).unwrap();
    assert!(id.groups.is_empty());
    assert!(check(overage(json!({"groups": "src1", "other": "src2"}))).is_ok());
    assert!(check(overage(json!({}))).is_ok());
    // ... unless a rule reads it.
    assert_eq!(
        description(check_with(
            "roles",
            &["groups"],
            overage(json!({"groups": "src1"}))
        )),
        "claim read by a rule not in token (_claim_names: distributed claim)"
    );
    // A rule reading `_claim_names` itself still sees it, and the check still applies.
    assert!(check_with("groups", &["_claim_names"], overage(json!({"groups": "s"}))).is_err());
    let id = check_with("roles", &["_claim_names"], overage(json!({"groups": "s"}))).unwrap();
    assert_eq!(id.claims["_claim_names"], json!({"groups": "s"}));
    // Malformed or duplicated.
    assert_eq!(
        description(check(overage(json!("groups")))),
        "_claim_names claim is not an object"
    );
    assert_eq!(
        description(check(overage(json!(["groups"])))),
        "_claim_names claim is not an object"
    );
    let h = r#"{"alg":"RS256"}"#;
    let dup = r#"{"sub":"a","_claim_names":{},"_claim_names":{}}"#;
    assert_eq!(reason(parse_all(&tok(h, dup), 8192)), Reason::ClaimInvalid);
    let inner = r#"{"sub":"a","_claim_names":{"groups":"a","groups":"b"}}"#;
    assert_eq!(
        reason(parse_all(&tok(h, inner), 8192)),
        Reason::ClaimInvalid
    );

    // v1: `hasgroups: true` without `groups`.
    let hasgroups = with("hasgroups", json!(true));
    let r = check_with("groups", &[], hasgroups.clone());
    assert_eq!(
        description(r),
        "groups claim not in token (hasgroups: group overage; configure the IdP to emit groups as app roles or filtered groups)"
    );
    assert!(check_with("roles", &[], hasgroups.clone()).is_ok());
    assert!(check_with("roles", &["groups"], hasgroups.clone()).is_err());
    assert!(check_with("groups", &[], with("hasgroups", json!(false))).is_ok());
    let mut both = hasgroups.clone();
    both["groups"] = json!(["g1"]);
    assert_eq!(check_with("groups", &[], both).unwrap().groups, ["g1"]);
    let mut null = hasgroups;
    null["groups"] = json!(null);
    assert!(check_with("groups", &[], null).is_err());
    // A rule reading `hasgroups` sees it (a deny rule on `hasgroups = true` must work).
    let id = check_with("roles", &["hasgroups"], with("hasgroups", json!(true))).unwrap();
    assert_eq!(id.claims["hasgroups"], json!(true));
    assert!(check_with("groups", &["hasgroups"], with("hasgroups", json!(true))).is_err());
}

#[test]
fn claims_reject() {
    assert_eq!(r(without("exp")), Reason::ClaimInvalid);
    assert_eq!(r(with("exp", json!("2000000000"))), Reason::ClaimInvalid);
    assert_eq!(r(with("exp", json!(-5))), Reason::ClaimInvalid);
    assert_eq!(r(with("exp", json!(NOW - 31))), Reason::Expired);
    assert_eq!(r(with("nbf", json!(NOW + 31))), Reason::NotYetValid);
    assert_eq!(r(with("nbf", json!("soon"))), Reason::ClaimInvalid);
    assert_eq!(r(with("iat", json!(NOW + 31))), Reason::NotYetValid);
    assert_eq!(r(with("iat", json!(null))), Reason::ClaimInvalid);
    assert_eq!(r(with("exp", json!(NOW + 3601))), Reason::ClaimInvalid);
    let mut no_iat_long = without("iat");
    no_iat_long["exp"] = json!(NOW + 7200);
    assert_eq!(r(no_iat_long), Reason::ClaimInvalid);
    assert_eq!(r(with("exp", json!(u64::MAX))), Reason::ClaimInvalid);
    assert_eq!(r(without("aud")), Reason::ClaimInvalid);
    assert_eq!(r(with("aud", json!(42))), Reason::ClaimInvalid);
    assert_eq!(r(with("aud", json!([]))), Reason::ClaimInvalid);
    assert_eq!(r(with("aud", json!(["api", 1]))), Reason::ClaimInvalid);
    assert_eq!(r(with("aud", json!("other"))), Reason::WrongAudience);
    assert_eq!(r(with("aud", json!(["x", "y"]))), Reason::WrongAudience);
    assert_eq!(r(with("aud", json!("API"))), Reason::WrongAudience);
    assert_eq!(r(without("sub")), Reason::ClaimInvalid);
    assert_eq!(r(with("sub", json!(7))), Reason::ClaimInvalid);
    assert_eq!(r(with("iss", json!("https://other"))), Reason::ClaimInvalid);
    assert_eq!(r(with("iss", json!({"x":1}))), Reason::ClaimInvalid);
    assert_eq!(r(with("email", json!(["a@b"]))), Reason::ClaimInvalid);
    assert_eq!(r(with("realm", json!({"roles":[1]}))), Reason::ClaimInvalid);
    assert_eq!(r(with("scope", json!(3))), Reason::ClaimInvalid);
}
