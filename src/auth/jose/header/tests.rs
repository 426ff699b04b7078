use super::*;
use crate::auth::jose::testing::*;

#[test]
fn header_rules() {
    let cases: &[(&str, Reason)] = &[
        (r#"{"alg":"none"}"#, Reason::AlgNotAllowed),
        (r#"{"alg":"HS256"}"#, Reason::AlgNotAllowed),
        (r#"{"alg":"rs256"}"#, Reason::AlgNotAllowed),
        (r#"{"alg":"ES512"}"#, Reason::AlgNotAllowed),
        (r#"{"alg":1}"#, Reason::MalformedToken),
        (r#"{"typ":"JWT"}"#, Reason::MalformedToken),
        (r#"{"alg":"RS256","alg":"RS256"}"#, Reason::MalformedToken),
        (
            r#"{"alg":"RS256","crit":["b64"],"b64":false}"#,
            Reason::ClaimInvalid,
        ),
        (
            r#"{"alg":"RS256","jku":"https://evil/jwks"}"#,
            Reason::UnsupportedToken,
        ),
        (
            r#"{"alg":"RS256","jwk":{"kty":"oct","k":"AA"}}"#,
            Reason::UnsupportedToken,
        ),
        (
            r#"{"alg":"RS256","x5u":"https://evil/c"}"#,
            Reason::UnsupportedToken,
        ),
        (r#"{"alg":"RS256","x5c":["MII"]}"#, Reason::UnsupportedToken),
        (r#"{"alg":"RS256","zip":"DEF"}"#, Reason::UnsupportedToken),
        (r#"{"alg":"RS256","cty":"JWT"}"#, Reason::UnsupportedToken),
        (r#"{"alg":"RS256","kid":""}"#, Reason::MalformedToken),
        (r#"{"alg":"RS256","kid":"a b"}"#, Reason::MalformedToken),
        (r#"{"alg":"RS256","kid":7}"#, Reason::MalformedToken),
        (r#"{"alg":"RS256","typ":5}"#, Reason::UnsupportedToken),
        (r#"{"alg":"RS256","x5t":5}"#, Reason::MalformedToken),
        (r#"{"alg":"RS256","x5t#S256":[]}"#, Reason::MalformedToken),
        (r#"{"alg":"RS256","url":{}}"#, Reason::MalformedToken),
        (r#"{"alg":"RS256","nonce":true}"#, Reason::MalformedToken),
        (
            r#"{"alg":"RS256","ext":{"a":1,"a":2}}"#,
            Reason::MalformedToken,
        ),
        ("[1]", Reason::MalformedToken),
        ("not json", Reason::MalformedToken),
    ];
    for (h, want) in cases {
        assert_eq!(reason(parse_all(&tok(h, P), 8192)), *want, "header {h}");
    }
    let long_kid = format!(
        r#"{{"alg":"RS256","kid":"{}"}}"#,
        "k".repeat(MAX_KID_BYTES + 1)
    );
    assert_eq!(
        reason(parse_all(&tok(&long_kid, P), 8192)),
        Reason::MalformedToken
    );
    // alg none with the empty signature it comes with: still alg_not_allowed.
    let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(P));
    assert_eq!(reason(parse_all(&none, 8192)), Reason::AlgNotAllowed);
    let ok = parse_all(
        &tok(
            r#"{"alg":"EdDSA","kid":"k-1","typ":"at+jwt","x5t":"abc"}"#,
            P,
        ),
        8192,
    )
    .unwrap();
    assert_eq!(ok.header.alg, Algorithm::EdDSA);
    assert_eq!(ok.header.kid.as_deref(), Some("k-1"));
    assert_eq!(ok.header.typ.as_deref(), Some("at+jwt"));
    assert!(!ok.header.nonce);
    // Registered string parameters: a string or null is fine, and unknown ones are ignored.
    let graph = parse_all(
        &tok(
            r#"{"alg":"RS256","x5t#S256":"abc","url":null,"nonce":"n","ext":{"a":[1]}}"#,
            P,
        ),
        8192,
    )
    .unwrap();
    // A string nonce is recorded (auth refuses such a token as a Microsoft Graph token).
    assert!(graph.header.nonce);
    let null_nonce = parse_all(&tok(r#"{"alg":"RS256","nonce":null}"#, P), 8192).unwrap();
    assert!(!null_nonce.header.nonce);
}

#[test]
fn typ_comparison() {
    assert!(typ_matches("JWT", "jwt"));
    assert!(typ_matches("application/at+jwt", "at+jwt"));
    assert!(typ_matches("AT+JWT", "application/at+jwt"));
    assert!(!typ_matches("JOSE", "JWT"));
    assert!(!typ_matches("id+jwt", "at+jwt"));
}

#[test]
fn issuer_rules() {
    let header = |typ: Option<&str>| Header {
        alg: Algorithm::RS256,
        kid: None,
        typ: typ.map(str::to_owned),
        nonce: false,
    };
    let reason = |h: Header, algs: &[Algorithm], typs: &[&str]| {
        let typs: Vec<String> = typs.iter().map(|t| t.to_string()).collect();
        h.check_issuer(algs, &typs).map_err(|r| r.reason)
    };
    let rs = [Algorithm::RS256, Algorithm::ES256];
    assert_eq!(reason(header(None), &rs, &[]), Ok(()));
    assert_eq!(
        reason(header(None), &[Algorithm::ES256], &["JWT"]),
        Err(Reason::AlgNotAllowed)
    );
    assert_eq!(
        reason(header(Some("application/AT+JWT")), &rs, &["JWT", "at+jwt"]),
        Ok(())
    );
    assert_eq!(
        reason(header(Some("JWT")), &rs, &["at+jwt"]),
        Err(Reason::UnsupportedToken)
    );
    assert_eq!(
        reason(header(Some("JWT")), &rs, &[]),
        Err(Reason::UnsupportedToken)
    );
    // The algorithm is judged first.
    assert_eq!(
        reason(header(Some("JWT")), &[Algorithm::EdDSA], &[]),
        Err(Reason::AlgNotAllowed)
    );
}
