use super::*;
use crate::auth::jose::testing::*;
use crate::auth::jose::{check_claims, ClaimRules};

#[test]
fn payload_rules() {
    let h = r#"{"alg":"RS256"}"#;
    let dup = r#"{"iss":"https://idp","sub":"u","aud":"api","aud":"other","exp":2000000000}"#;
    assert_eq!(reason(parse_all(&tok(h, dup), 8192)), Reason::ClaimInvalid);
    let escaped_dup = r#"{"sub":"a","s\u0075b":"b"}"#;
    assert_eq!(
        reason(parse_all(&tok(h, escaped_dup), 8192)),
        Reason::ClaimInvalid
    );
    let nested_dup = r#"{"sub":"a","ra":{"roles":[],"roles":["x"]}}"#;
    assert_eq!(
        reason(parse_all(&tok(h, nested_dup), 8192)),
        Reason::ClaimInvalid
    );
    assert_eq!(
        reason(parse_all(&tok(h, "[]"), 8192)),
        Reason::MalformedToken
    );
    assert_eq!(
        reason(parse_all(&tok(h, "{"), 8192)),
        Reason::MalformedToken
    );
    assert_eq!(
        reason(parse_all(&tok(h, "{} x"), 8192)),
        Reason::MalformedToken
    );
}

/// Email/groups paths: a namespaced top-level name wins over the nested walk; paths sharing
/// a top-level claim, or reaching into registered or kept claims, all still see their value.
#[test]
fn claim_paths_and_selection() {
    let payload = json!({
        "iss":"https://idp","sub":"alice","aud":["api"],"exp":NOW + 60,"iat":NOW,
        "https://ex.com/email":"ns@example.com",
        "https":{"//ex":{"com/email":"nested@example.com"}},
        "ra":{"email":"ra@example.com","roles":["r1"]},"tenant":"t1","jti":"dropped"
    });
    let t = tok(r#"{"alg":"RS256"}"#, &payload.to_string());
    let id_with = |email: &str, groups: &str, kept: &[&str]| {
        let sel = ClaimSelection::new(&paths([email, groups]), &paths(kept.iter().copied()));
        let rules = ClaimRules {
            email_claim: path(email),
            groups_claim: path(groups),
            ..rules()
        };
        let parsed = parse_all(&t, 8192).unwrap();
        check_claims(&rules, &parsed.claims(&sel).unwrap(), NOW).unwrap()
    };
    let id = id_with("https://ex.com/email", "ra.roles", &[]);
    assert_eq!(id.email.as_deref(), Some("ns@example.com"));
    assert_eq!(id.groups, ["r1"]);
    let id = id_with("ra.email", "ra.roles", &["ra"]);
    assert_eq!(id.email.as_deref(), Some("ra@example.com"));
    assert_eq!(id.groups, ["r1"]);
    assert_eq!(id.claim(&path("ra.roles")), Some(&json!(["r1"])));
    let id = id_with("tenant", "aud", &["tenant", "aud", "jti"]);
    assert_eq!(id.email.as_deref(), Some("t1"));
    assert_eq!(id.groups, ["api"]);
    assert_eq!(id.claims["aud"], json!(["api"]));
    assert_eq!(id.claims["tenant"], "t1");
    assert_eq!(id.claims["jti"], "dropped");
    let id = id_with("ra.email", "ra.email", &[]);
    assert_eq!(id.email.as_deref(), Some("ra@example.com"));
    assert_eq!(id.groups, ["ra@example.com"]);
    let id = id_with("sub", "ra.nope", &[]);
    assert_eq!(
        (id.email.as_deref(), id.sub.as_str()),
        (Some("alice"), "alice")
    );
    assert!(id.groups.is_empty());
}

/// Claims nobody reads are parsed for syntax and duplicates but not kept.
#[test]
fn dropped_claims_are_still_checked() {
    let h = r#"{"alg":"RS256"}"#;
    let p = |extra: &str| tok(h, &format!(r#"{{"iss":"https://idp",{extra}"sub":"u"}}"#));
    assert!(parse_all(&p(r#""jti":"a","#), 8192).is_ok());
    assert_eq!(
        reason(parse_all(&p(r#""jti":"a","jti":"b","#), 8192)),
        Reason::ClaimInvalid
    );
    assert_eq!(
        reason(parse_all(&p(r#""x":{"a":1,"a":2},"#), 8192)),
        Reason::ClaimInvalid
    );
    assert_eq!(
        reason(parse_all(&p(r#""x":[{"a":1,"\u0061":2}],"#), 8192)),
        Reason::ClaimInvalid
    );
    assert_eq!(
        reason(parse_all(&p(r#""tenant":1,"tenant":1,"#), 8192)),
        Reason::ClaimInvalid
    );
    assert_eq!(
        reason(parse_all(&p(r#""x":tru,"#), 8192)),
        Reason::MalformedToken
    );
    assert_eq!(
        reason(parse_all(&p(r#""x":1e999,"#), 8192)),
        Reason::MalformedToken
    );
    assert!(parse_all(&p(r#""x":{"a":{"b":[null,1.5,-2,"\n"]}},"#), 8192).is_ok());
    // Duplicate names are found before and after the seen-names list spills into a set.
    let members = |n: usize, dup: Option<(usize, usize)>| {
        let mut names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
        if let Some((a, b)) = dup {
            names[b] = names[a].clone();
        }
        let body: Vec<String> = names.iter().map(|k| format!(r#""{k}":1"#)).collect();
        format!(r#""x":{{{}}},"#, body.join(","))
    };
    assert!(parse_all(&p(&members(40, None)), 8192).is_ok());
    for dup in [(0, 3), (2, 7), (2, 8), (5, 30), (20, 39)] {
        let t = p(&members(40, Some(dup)));
        assert_eq!(reason(parse_all(&t, 8192)), Reason::ClaimInvalid, "{dup:?}");
    }
    let parsed = parse_all(&p(r#""azp":"a","jti":"j","tenant":"t","#), 8192).unwrap();
    let claims = parsed.claims(&SELECTION).unwrap();
    let s = |v: &'static str| Some(ClaimValue::Str(v.into()));
    assert_eq!(claims.get("azp"), None);
    // `jti` is registered: revocations of one token read it.
    assert_eq!(claims.get("jti").cloned(), s("j"));
    assert_eq!(claims.get("tenant").cloned(), s("t"));
    assert_eq!(claims.get("sub").cloned(), s("u"));
    // Strings borrow from the payload unless they had escapes to undo.
    let parsed = parse_all(&p(r#""tenant":"\u0074","aud":["a","\n",1],"#), 8192).unwrap();
    let claims = parsed.claims(&SELECTION).unwrap();
    assert!(matches!(
        claims.get("sub"),
        Some(ClaimValue::Str(Cow::Borrowed("u")))
    ));
    assert!(matches!(claims.get("tenant"), Some(ClaimValue::Str(Cow::Owned(t))) if t == "t"));
    assert_eq!(
        claims.get("aud").cloned(),
        Some(ClaimValue::Json(json!(["a", "\n", 1])))
    );
}

/// A token's claims and an identity's answer every lookup of the shared table
/// (`claim_path::lookup_cases`) the same: with the payload parser keeping only what the path
/// reads, through [`ClaimPath::find`] on the token's claims, and through [`Identity::claim`]
/// (the policy's lookup) on the identity built from them.
///
/// [`Identity::claim`]: crate::decision::Identity::claim
#[test]
fn token_and_identity_lookups_agree_with_the_table() {
    for (extra, p, want) in crate::claim_path::lookup_cases() {
        let mut payload = base();
        for (k, v) in extra.as_object().unwrap() {
            payload[k] = v.clone();
        }
        let t = tok(r#"{"alg":"RS256"}"#, &payload.to_string());
        let p = path(p);
        // As the issuers' email/groups claim: selected, not kept.
        let sel = ClaimSelection::new([&p], []);
        let parsed = crate::auth::jose::parse(&t, 8192).unwrap();
        let claims = parsed.claims(&sel).unwrap();
        let got = p.find(&claims).map(|f| match f {
            Found::Top(v) => v.to_value(),
            Found::Nested(v) => v.clone(),
        });
        assert_eq!(got, want, "token: {p} in {extra}");
        // As a rule's claim: kept by the identity, looked up there.
        let sel = ClaimSelection::new([], [&p]);
        let claims = parsed.claims(&sel).unwrap();
        let id = check_claims(&rules(), &claims, NOW).unwrap();
        assert_eq!(id.claim(&p), want.as_ref(), "identity: {p} in {extra}");
        assert!(id.claims.keys().all(|k| p.reads(k)), "{:?}", id.claims);
    }
}
