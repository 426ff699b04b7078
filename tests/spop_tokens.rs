//! An adversarial token corpus against the `idgate` BINARY over raw SPOP (no HAProxy): the tests'
//! SPOP client (tests/support/spop_client.rs, async: HELLO, NOTIFY `authorize`, ACK parsing on
//! the crate's own encoder and decoder) talks to `idgate run`, whose one issuer is a mock IdP publishing fixture RSA, EC
//! and Ed25519 keys.
//!
//! Every RFC 8725 pitfall we know of is one case with its exact contract reason code: `alg`
//! none and its case variants, HS256 keyed with the RSA public key, algorithm/key mismatch,
//! unknown `kid`, tampered payload, wrong/object/missing `iss`, `aud` missing/number/empty/
//! wrong, `exp` missing/string/past, `nbf`/`iat` in the future, lifetime too long, `crit`,
//! wrong `typ`, `jku`/`jwk`/`x5u`/`x5c`, duplicate claims (also inside claims no check reads)
//! and header parameters, invalid JSON in an unread claim, oversized
//! tokens, 2/4-part and 5-part (JWE) tokens, non-base64url characters, empty or malformed
//! Bearer credentials, other schemes. Every refusal is `allow=false`, `status=401`, the exact
//! reason, an RFC 6750 challenge, and no identity variables. The valid cases (each algorithm,
//! lowercase `bearer`, JSON escapes in the identity claims, the token in the configured cookie)
//! are accepted with `sub`/`email`/`groups`/`issuer`/`rule` set.
//!
//! Then 20 NOTIFYs pipelined on one connection, each with a distinct token (some expired),
//! are each answered once, on their own stream, with their own caller's identity.
//!
//! Then, with two issuers and a few rules: identity values that cannot be passed on (control,
//! bidi and zero-width characters in `sub`/email/groups, over-long values, commas or empty
//! groups, a `claim:` principal) are refused as `claim_invalid` instead of allowed without the
//! variable; Entra ID group overage (`_claim_names`, `hasgroups`) is refused where groups are
//! read and harmless where they are not; request paths an upstream or HAProxy's raw-path
//! routing would read differently (Unicode folding, encoded letters, `%3F`, trailing dots and
//! spaces, `%00`, `%u` escapes) are refused with 400 before any rule, and `[paths]
//! allow_non_ascii` relaxes only non-ASCII; and an allowed ACK that does not fit a small
//! max-frame-size is refused (500 `internal_error`) rather than sent without its identity.

mod support;

use support::auth_kit;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use auth_kit::{b64, claims, now, MockIdp, Signer};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::agent::Agent;
use support::spop_client::{AsyncSpopClient, Request, Vars, HAPROXY_MAX_FRAME_SIZE};
use tokio::io::AsyncReadExt;
use tokio::time::timeout;

/// The cookie the agent is configured to read the token from.
const COOKIE: &str = "idgate_at";

/// NOTIFYs pipelined on one connection (HAProxy keeps at most 20 in flight per connection).
const PIPELINED: u64 = 20;

fn agent_config(mock: &MockIdp) -> String {
    format!(
        r#"
[log]
level = "warn"
audit = "off"

[auth]
cookie = "{COOKIE}"
# Below the default (16384) so that an oversized token still fits one SPOP frame.
max_token_bytes = 8192

[[issuer]]
name = "fixture"
issuer = "{iss}"
jwks_uri = "{jwks}"
audiences = ["api"]
algorithms = ["RS256", "ES256", "EdDSA"]

[[rule]]
name = "everything"
paths = ["/**"]
effect = "allow"
"#,
        iss = mock.base,
        jwks = mock.jwks_uri(),
    )
}

// ----- requests -----

/// The path of the corpus requests.
const DEFAULT_PATH: &str = "/serving-endpoints/m/invocations";

/// A corpus request without credentials, with the arguments the shipped SPOE file sends
/// (an absent Authorization or Cookie header as NULL).
fn req() -> Request {
    Request::new("POST", DEFAULT_PATH)
        .host("gateway.example.com")
        .absent_as_null()
}

fn bearer(token: &str) -> Request {
    req().bearer(token)
}

fn header_only(value: &str) -> Request {
    req().authorization(value)
}

fn cookie_only(value: &str) -> Request {
    req().cookie(value)
}

/// `req` as the NOTIFY on stream `sid` carries it: with HAProxy's `unique_id`.
fn on_stream(sid: u64, req: &Request) -> Request {
    req.clone().unique_id(&format!("spop-tokens-{sid}"))
}

/// One `authorize` round trip on stream `sid`.
async fn authorize(c: &mut AsyncSpopClient, sid: u64, req: &Request) -> Vars {
    c.decide_as(sid, &on_stream(sid, req)).await
}

/// A refusal: allow=false, 401, exactly `reason`, the right challenge, no identity.
fn assert_refused(case: &str, vars: &Vars, reason: &str) {
    assert_eq!(vars.bool("allow"), Some(false), "{case}: {vars:?}");
    assert_eq!(vars.int("status"), Some(401), "{case}: {vars:?}");
    assert_eq!(vars.text("reason"), Some(reason), "{case}: {vars:?}");
    let challenge = vars
        .text("www_authenticate")
        .unwrap_or_else(|| panic!("{case}: 401 without www_authenticate: {vars:?}"));
    if reason == "missing_token" {
        assert_eq!(challenge, r#"Bearer realm="idgate""#, "{case}");
    } else {
        assert!(
            challenge.starts_with(r#"Bearer realm="idgate", error="invalid_token""#),
            "{case}: {challenge:?}"
        );
    }
    for name in [
        "sub",
        "email",
        "groups",
        "issuer",
        "rule",
        "principal",
        "upstream_authorization",
    ] {
        assert!(
            !vars.contains(name),
            "{case}: {name} set on a refusal: {vars:?}"
        );
    }
}

/// An acceptance with the identity of [`valid_claims`] (`sub` given).
fn assert_accepted(case: &str, vars: &Vars, sub: &str) {
    assert_eq!(vars.bool("allow"), Some(true), "{case}: {vars:?}");
    assert_eq!(vars.int("status"), Some(200), "{case}: {vars:?}");
    assert_eq!(vars.text("reason"), Some("ok"), "{case}: {vars:?}");
    assert_eq!(vars.text("sub"), Some(sub), "{case}");
    assert_eq!(
        vars.text("email"),
        Some(format!("{sub}@example.com").as_str()),
        "{case}"
    );
    assert_eq!(vars.text("groups"), Some("ml-engineers,analysts"), "{case}");
    assert_eq!(vars.text("issuer"), Some("fixture"), "{case}");
    assert_eq!(vars.text("rule"), Some("everything"), "{case}");
    assert!(!vars.contains("www_authenticate"), "{case}: {vars:?}");
}

// ----- the corpus -----

/// Valid claims for `iss` with a distinctive identity.
fn valid_claims(iss: &str, sub: &str) -> Value {
    let mut c = claims(iss);
    c["sub"] = json!(sub);
    c["email"] = json!(format!("{sub}@example.com"));
    c["groups"] = json!(["ml-engineers", "analysts"]);
    c
}

/// `header.payload.signature` from JSON texts, with any signature text.
fn unsigned(header: &str, payload: &str, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        b64(header.as_bytes()),
        b64(payload.as_bytes())
    )
}

/// The fixture RSA public key as PEM: what an attacker finds at the IdP and uses as an HMAC
/// secret in the RS256 -> HS256 key-confusion attack.
fn rsa_public_pem() -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/keys/rsa1.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-in", &path, "-pubout"])
        .output()
        .expect("running openssl");
    assert!(out.status.success(), "openssl pkey -pubout failed");
    assert!(out.stdout.starts_with(b"-----BEGIN PUBLIC KEY-----"));
    out.stdout
}

/// `sig` (unpadded base64url of 256 bytes: 342 characters) with one unused bit set in its
/// last character.
fn non_canonical(sig: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    assert_eq!(sig.len() % 4, 2, "a 256-byte RSA signature");
    let last = sig.as_bytes()[sig.len() - 1];
    let v = ALPHABET.iter().position(|&c| c == last).unwrap();
    // With two characters in the final group, their 12 bits carry 8 data bits: the last
    // character's low 4 bits are unused and canonically zero.
    assert_eq!(v & 0xF, 0, "canonical encoding");
    format!("{}{}", &sig[..sig.len() - 1], ALPHABET[v | 1] as char)
}

fn hs256_with(secret: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = jsonwebtoken::crypto::sign(
        input.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .expect("HMAC");
    format!("{input}.{sig}")
}

struct Keys {
    rsa: Signer,
    ec: Signer,
    ed: Signer,
}

/// (case, request, expected reason). Built once the mock issuer's URL is known.
fn refusals(k: &Keys, iss: &str) -> Vec<(&'static str, Request, &'static str)> {
    let n = now();
    let good = valid_claims(iss, "mallory");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        f(&mut c);
        c
    };
    let rsa_header = k.rsa.header();
    let header_with = |f: &dyn Fn(&mut Value)| {
        let mut h = rsa_header.clone();
        f(&mut h);
        h
    };
    let rsa = |c: &Value| k.rsa.token(c);
    let rsa_h = |h: &Value| k.rsa.sign_with_header(h, &good);
    let good_text = good.to_string();
    let valid = rsa(&good);
    let (valid_input, valid_sig) = valid.rsplit_once('.').unwrap();
    let pem = rsa_public_pem();

    let mut cases: Vec<(&'static str, Request, &'static str)> = vec![
        // --- alg ---
        (
            "alg none, empty signature",
            bearer(&unsigned(r#"{"alg":"none","typ":"JWT"}"#, &good_text, "")),
            "alg_not_allowed",
        ),
        (
            "alg NoNe",
            bearer(&unsigned(r#"{"alg":"NoNe","typ":"JWT"}"#, &good_text, "")),
            "alg_not_allowed",
        ),
        (
            "alg NONE with a signature",
            bearer(&unsigned(r#"{"alg":"NONE"}"#, &good_text, valid_sig)),
            "alg_not_allowed",
        ),
        (
            "HS256 keyed with the RSA public key, RSA kid",
            bearer(&hs256_with(
                &pem,
                &json!({"alg": "HS256", "kid": k.rsa.kid, "typ": "JWT"}),
                &good,
            )),
            "alg_not_allowed",
        ),
        (
            "HS256 keyed with the RSA public key, no kid",
            bearer(&hs256_with(&pem, &json!({"alg": "HS256"}), &good)),
            "alg_not_allowed",
        ),
        (
            "alg rs256 (wrong case)",
            bearer(&k.rsa.sign_raw(
                &json!({"alg": "rs256", "kid": k.rsa.kid}).to_string(),
                &good_text,
            )),
            "alg_not_allowed",
        ),
        (
            "ES256 header on the RSA key's kid",
            bearer(&k.ec.sign_with_header(
                &json!({"alg": "ES256", "kid": k.rsa.kid, "typ": "JWT"}),
                &good,
            )),
            "alg_not_allowed",
        ),
        (
            "PS256 (not in the issuer's algorithms)",
            bearer(&Signer::new("rsa1.pem", Algorithm::PS256, &k.rsa.kid).token(&good)),
            "alg_not_allowed",
        ),
        // --- keys and signatures ---
        (
            "unknown kid",
            bearer(&Signer::rsa2("not-in-the-jwks").token(&good)),
            "unknown_key",
        ),
        (
            "known kid, other key's signature",
            bearer(&Signer::rsa2(&k.rsa.kid).token(&good)),
            "bad_signature",
        ),
        (
            "tampered payload",
            bearer(&format!(
                "{}.{}.{valid_sig}",
                valid_input.split('.').next().unwrap(),
                b64(with(&|c| c["sub"] = json!("admin")).to_string().as_bytes())
            )),
            "bad_signature",
        ),
        (
            "signature truncated",
            bearer(&format!(
                "{valid_input}.{}",
                // A multiple of 4 characters keeps the base64url canonical (no stray trailing
                // bits), so the refusal is about the signature, not its encoding.
                &valid_sig[..(valid_sig.len() / 2) & !3]
            )),
            "bad_signature",
        ),
        (
            // Same signature bytes, but the unused low bits of the last character set: a
            // second spelling of the same token, refused rather than decoded leniently.
            "signature with non-canonical base64url",
            bearer(&format!("{valid_input}.{}", non_canonical(valid_sig))),
            "malformed_token",
        ),
        // --- iss ---
        (
            "wrong iss",
            bearer(&rsa(&with(&|c| c["iss"] = json!("https://evil.example")))),
            "unknown_issuer",
        ),
        (
            "iss with a trailing slash",
            bearer(&rsa(&with(&|c| c["iss"] = json!(format!("{iss}/"))))),
            "unknown_issuer",
        ),
        (
            "iss object",
            bearer(&rsa(&with(&|c| c["iss"] = json!({"iss": iss})))),
            "claim_invalid",
        ),
        (
            "iss array",
            bearer(&rsa(&with(&|c| c["iss"] = json!([iss])))),
            "claim_invalid",
        ),
        (
            "iss missing",
            bearer(&rsa(&with(&|c| {
                c.as_object_mut().unwrap().remove("iss");
            }))),
            "claim_invalid",
        ),
        // --- aud ---
        (
            "aud missing",
            bearer(&rsa(&with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            }))),
            "claim_invalid",
        ),
        (
            "aud number",
            bearer(&rsa(&with(&|c| c["aud"] = json!(42)))),
            "claim_invalid",
        ),
        (
            "aud empty array",
            bearer(&rsa(&with(&|c| c["aud"] = json!([])))),
            "claim_invalid",
        ),
        (
            "aud array with a number",
            bearer(&rsa(&with(&|c| c["aud"] = json!(["api", 1])))),
            "claim_invalid",
        ),
        (
            "aud wrong",
            bearer(&rsa(&with(&|c| c["aud"] = json!("other-api")))),
            "wrong_audience",
        ),
        (
            "aud array without ours",
            bearer(&rsa(&with(&|c| c["aud"] = json!(["a", "b"])))),
            "wrong_audience",
        ),
        // --- time ---
        (
            "exp missing",
            bearer(&rsa(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            }))),
            "claim_invalid",
        ),
        (
            "exp string",
            bearer(&rsa(&with(&|c| c["exp"] = json!((n + 300).to_string())))),
            "claim_invalid",
        ),
        (
            "exp past",
            bearer(&rsa(&with(&|c| {
                c["iat"] = json!(n - 900);
                c["exp"] = json!(n - 600);
            }))),
            "expired",
        ),
        (
            "nbf future",
            bearer(&rsa(&with(&|c| c["nbf"] = json!(n + 600)))),
            "not_yet_valid",
        ),
        (
            "iat future",
            bearer(&rsa(&with(&|c| {
                c["iat"] = json!(n + 600);
                c["exp"] = json!(n + 900);
            }))),
            "not_yet_valid",
        ),
        (
            "lifetime 48h (max 24h)",
            bearer(&rsa(&with(&|c| c["exp"] = json!(n + 48 * 3600)))),
            "claim_invalid",
        ),
        // --- other claims ---
        (
            "sub missing",
            bearer(&rsa(&with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            }))),
            "claim_invalid",
        ),
        (
            "sub number",
            bearer(&rsa(&with(&|c| c["sub"] = json!(7)))),
            "claim_invalid",
        ),
        (
            "groups object",
            bearer(&rsa(&with(&|c| c["groups"] = json!({"admin": true})))),
            "claim_invalid",
        ),
        (
            "duplicate claim (sub twice)",
            bearer(&k.rsa.sign_raw(
                &rsa_header.to_string(),
                &good_text.replacen('{', r#"{"sub":"admin","#, 1),
            )),
            "claim_invalid",
        ),
        (
            "duplicate claim via escape (s\\u0075b)",
            bearer(&k.rsa.sign_raw(
                &rsa_header.to_string(),
                &good_text.replacen('{', r#"{"s\u0075b":"admin","#, 1),
            )),
            "claim_invalid",
        ),
        (
            "duplicate claim nobody reads (jti twice)",
            bearer(&k.rsa.sign_raw(
                &rsa_header.to_string(),
                &good_text.replacen('{', r#"{"jti":"a","jti":"b","#, 1),
            )),
            "claim_invalid",
        ),
        (
            "duplicate name nested in a claim nobody reads",
            bearer(&k.rsa.sign_raw(
                &rsa_header.to_string(),
                &good_text.replacen('{', r#"{"ext":[{"role":"a","r\u006fle":"b"}],"#, 1),
            )),
            "claim_invalid",
        ),
        (
            "claim nobody reads is not JSON (bare word)",
            bearer(&k.rsa.sign_raw(
                &rsa_header.to_string(),
                &good_text.replacen('{', r#"{"ext":tru,"#, 1),
            )),
            "malformed_token",
        ),
        (
            "nbf out of the JSON number range",
            bearer(&k.rsa.sign_raw(
                &rsa_header.to_string(),
                &good_text.replacen('{', r#"{"nbf":1e999,"#, 1),
            )),
            "malformed_token",
        ),
        // --- header ---
        (
            "crit",
            bearer(&rsa_h(&header_with(&|h| h["crit"] = json!(["exp"])))),
            "claim_invalid",
        ),
        (
            "typ wrong",
            bearer(&rsa_h(&header_with(&|h| h["typ"] = json!("secevent+jwt")))),
            "unsupported_token",
        ),
        (
            "jku",
            bearer(&rsa_h(&header_with(&|h| {
                h["jku"] = json!("https://evil.example/jwks")
            }))),
            "unsupported_token",
        ),
        (
            "jwk (embedded public key)",
            bearer(&rsa_h(&header_with(&|h| h["jwk"] = k.rsa.jwk.clone()))),
            "unsupported_token",
        ),
        (
            "x5u",
            bearer(&rsa_h(&header_with(&|h| {
                h["x5u"] = json!("https://evil.example/cert.pem")
            }))),
            "unsupported_token",
        ),
        (
            "x5c",
            bearer(&rsa_h(&header_with(&|h| h["x5c"] = json!(["MIIBIjAN"])))),
            "unsupported_token",
        ),
        (
            "duplicate header parameter (alg twice)",
            bearer(&k.rsa.sign_raw(
                &format!(r#"{{"alg":"HS256","kid":"{}","alg":"RS256"}}"#, k.rsa.kid),
                &good_text,
            )),
            "malformed_token",
        ),
        (
            "kid with a control character",
            bearer(&rsa_h(&header_with(&|h| h["kid"] = json!("k\u{1}")))),
            "malformed_token",
        ),
        // --- structure ---
        (
            "oversized (> 8192 bytes)",
            bearer(&rsa(&with(&|c| c["pad"] = json!("x".repeat(9000))))),
            "malformed_token",
        ),
        ("two parts", bearer(valid_input), "malformed_token"),
        (
            "four parts",
            bearer(&format!("{valid}.AAAA")),
            "malformed_token",
        ),
        (
            "five parts (JWE)",
            bearer(&format!(
                "{}.AAAA.AAAA.AAAA.AAAA",
                b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)
            )),
            "unsupported_token",
        ),
        (
            "standard base64 alphabet (+ /)",
            bearer(&format!("{valid_input}.{}+/", &valid_sig[2..])),
            "malformed_token",
        ),
        (
            "base64 padding",
            bearer(&format!("{valid}==")),
            "malformed_token",
        ),
        (
            "non-base64 characters",
            bearer(&format!("{valid_input}.!!{valid_sig}")),
            "malformed_token",
        ),
        (
            "non-ASCII characters",
            bearer(&format!("{valid_input}.é{valid_sig}")),
            "malformed_token",
        ),
        ("empty parts", bearer(".."), "malformed_token"),
        (
            "header not JSON",
            bearer(&unsigned("not json", &good_text, valid_sig)),
            "malformed_token",
        ),
        (
            "payload not an object",
            bearer(&k.rsa.sign_raw(&rsa_header.to_string(), "[1,2]")),
            "malformed_token",
        ),
        // --- the Authorization header itself ---
        ("no credentials at all", req(), "missing_token"),
        ("empty Authorization", header_only(""), "missing_token"),
        (
            "Bearer without token",
            header_only("Bearer"),
            "malformed_token",
        ),
        (
            "Bearer and a space",
            header_only("Bearer "),
            "malformed_token",
        ),
        (
            "Bearer and spaces",
            header_only("Bearer    "),
            "malformed_token",
        ),
        (
            "Bearer with two tokens",
            header_only(&format!("Bearer {valid} {valid}")),
            "malformed_token",
        ),
        (
            "Basic scheme",
            header_only("Basic YWxpY2U6c2VjcmV0"),
            "unsupported_token",
        ),
        (
            "Basic scheme carrying a JWT",
            header_only(&format!("Basic {valid}")),
            "unsupported_token",
        ),
        (
            "DPoP scheme",
            header_only(&format!("DPoP {valid}")),
            "unsupported_token",
        ),
        (
            "no scheme, bare JWT",
            header_only(&valid),
            "unsupported_token",
        ),
        // --- cookies ---
        (
            "another cookie only",
            cookie_only(&format!("session={valid}")),
            "missing_token",
        ),
        (
            "cookie name as a suffix",
            cookie_only(&format!("x{COOKIE}={valid}")),
            "missing_token",
        ),
        (
            "configured cookie, expired token",
            cookie_only(&format!(
                "{COOKIE}={}",
                rsa(&with(&|c| {
                    c["iat"] = json!(n - 900);
                    c["exp"] = json!(n - 600);
                }))
            )),
            "expired",
        ),
        (
            "configured cookie, garbage",
            cookie_only(&format!("{COOKIE}=garbage")),
            "malformed_token",
        ),
    ];
    // A wrong Authorization wins over a good cookie: the header is what the caller sent
    // explicitly, and falling back would let a cookie override a refused credential.
    cases.push((
        "Basic header plus a valid cookie",
        header_only("Basic YWxpY2U6c2VjcmV0").cookie(&format!("{COOKIE}={valid}")),
        "unsupported_token",
    ));
    cases
}

/// (case, request, expected sub). Every one must be accepted.
fn acceptances(k: &Keys, iss: &str) -> Vec<(&'static str, Request, String)> {
    let t = |s: &Signer, sub: &str| s.token(&valid_claims(iss, sub));
    vec![
        ("RS256", bearer(&t(&k.rsa, "rs-user")), "rs-user".into()),
        ("ES256", bearer(&t(&k.ec, "ec-user")), "ec-user".into()),
        ("EdDSA", bearer(&t(&k.ed, "ed-user")), "ed-user".into()),
        (
            "lowercase bearer",
            header_only(&format!("bearer {}", t(&k.rsa, "lower"))),
            "lower".into(),
        ),
        (
            "uppercase BEARER, extra spaces",
            header_only(&format!("BEARER   {}", t(&k.ec, "upper"))),
            "upper".into(),
        ),
        (
            "typ at+jwt",
            bearer(&k.ed.sign_with_header(
                &json!({"alg": "EdDSA", "kid": k.ed.kid, "typ": "at+jwt"}),
                &valid_claims(iss, "at-jwt"),
            )),
            "at-jwt".into(),
        ),
        (
            "aud array containing ours",
            bearer(&k.rsa.token(&{
                let mut c = valid_claims(iss, "aud-array");
                c["aud"] = json!(["other", "api"]);
                c
            })),
            "aud-array".into(),
        ),
        (
            "JSON escapes in sub, email and groups",
            bearer(&{
                let payload = valid_claims(iss, "escaped")
                    .to_string()
                    .replace(r#""sub":"escaped""#, r#""sub":"esc\u0061ped""#)
                    .replace("escaped@", r"escaped\u0040")
                    .replace(r#""analysts""#, r#""an\u0061lysts""#);
                assert_eq!(payload.matches(r"\u00").count(), 3, "{payload}");
                let header = json!({"alg": "RS256", "kid": k.rsa.kid}).to_string();
                k.rsa.sign_raw(&header, &payload)
            }),
            "escaped".into(),
        ),
        (
            "token in the configured cookie",
            cookie_only(&format!("{COOKIE}={}", t(&k.rsa, "cookie-user"))),
            "cookie-user".into(),
        ),
        (
            "configured cookie among others, quoted",
            cookie_only(&format!(
                "a=b; {COOKIE}=\"{}\"; c=d",
                t(&k.ed, "cookie-quoted")
            )),
            "cookie-quoted".into(),
        ),
        (
            "empty Authorization falls back to the cookie",
            header_only("").cookie(&format!("{COOKIE}={}", t(&k.ec, "cookie-fallback"))),
            "cookie-fallback".into(),
        ),
    ]
}

#[test]
fn adversarial_token_corpus_over_raw_spop() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys = Keys {
        rsa: Signer::rsa("fixture-rsa"),
        ec: Signer::ec("fixture-ec"),
        ed: Signer::ed("fixture-ed"),
    };
    let mock = rt.block_on(MockIdp::start(&[&keys.rsa, &keys.ec, &keys.ed]));
    let agent = Agent::start(&agent_config(&mock));
    assert!(
        agent.wait_ready(support::READY_TIMEOUT),
        "idgate never loaded the mock issuer's keys\n{}",
        agent.log()
    );
    let refusals = refusals(&keys, &mock.base);
    let acceptances = acceptances(&keys, &mock.base);
    let spop = agent.spop;
    let cases = rt.block_on(async move {
        let mut c = AsyncSpopClient::open(spop).await;
        let mut sid = 0;
        for (case, req, reason) in &refusals {
            sid += 1;
            let vars = authorize(&mut c, sid, req).await;
            assert_refused(case, &vars, reason);
        }
        for (case, req, sub) in &acceptances {
            sid += 1;
            let vars = authorize(&mut c, sid, req).await;
            assert_accepted(case, &vars, sub);
        }
        refusals.len() + acceptances.len()
    });
    assert!(cases > 70, "the corpus shrank: {cases} cases");
    assert_eq!(
        agent.log().matches("panicked").count(),
        0,
        "{}",
        agent.log()
    );
    drop(mock);
}

#[test]
fn twenty_pipelined_notifies_with_distinct_tokens() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let keys = [Signer::rsa("p-rsa"), Signer::ec("p-ec"), Signer::ed("p-ed")];
    let mock = rt.block_on(MockIdp::start(&keys.iter().collect::<Vec<_>>()));
    let agent = Agent::start(&agent_config(&mock));
    assert!(
        agent.wait_ready(support::READY_TIMEOUT),
        "idgate never loaded the mock issuer's keys\n{}",
        agent.log()
    );
    let n = now();
    // Stream IDs large and sparse, as HAProxy's are; every fourth token expired.
    let streams: Vec<(u64, Request, Option<String>)> = (0..PIPELINED)
        .map(|i| {
            let sub = format!("user-{i}");
            let mut c = valid_claims(&mock.base, &sub);
            let expired = i % 4 == 3;
            if expired {
                c["iat"] = json!(n - 900);
                c["exp"] = json!(n - 600);
            }
            let key = &keys[(i % 3) as usize];
            (
                1_000_000 + i * 7919,
                bearer(&key.token(&c)),
                (!expired).then_some(sub),
            )
        })
        .collect();
    let spop = agent.spop;
    rt.block_on(async move {
        let mut c = AsyncSpopClient::open(spop).await;
        let mut all = Vec::new();
        for (sid, req, _) in &streams {
            all.extend(on_stream(*sid, req).notify(*sid, 1));
        }
        c.send_raw(&all).await.unwrap();
        let mut answered: HashMap<u64, Vars> = HashMap::new();
        for _ in 0..PIPELINED {
            let (sid, fid, vars) = c.frame().await.ack();
            assert_eq!(fid, 1);
            assert!(
                answered.insert(sid, vars).is_none(),
                "stream {sid} acked twice"
            );
        }
        for (sid, _, want) in &streams {
            let vars = answered
                .get(sid)
                .unwrap_or_else(|| panic!("stream {sid} never answered"));
            match want {
                Some(sub) => assert_accepted(&format!("stream {sid}"), vars, sub),
                None => assert_refused(&format!("stream {sid}"), vars, "expired"),
            }
        }
        // Nothing more arrives: exactly one ACK per NOTIFY.
        let mut extra = [0u8; 1];
        let more = timeout(Duration::from_millis(300), c.stream().read(&mut extra)).await;
        assert!(more.is_err(), "unexpected data after the {PIPELINED} ACKs");
    });
    drop(mock);
}

// ----- identity values, group overage, path variants, tiny frames -----

/// Two issuers: `fixture` reads groups from `groups` (the default), `roles-only` from `roles`
/// (Entra app roles, the documented way around group overage). Rules: a path deny, a group
/// deny, a `claim:` principal, an upstream credential (a static token read from
/// `credential_file`), and a catch-all allow.
fn identity_config(a: &MockIdp, b: &MockIdp, extra: &str, credential_file: &Path) -> String {
    format!(
        r#"
[log]
level = "warn"
audit = "off"

[auth]
# 200 Entra object IDs make a token of about 11 KB.
max_token_bytes = 16384
{extra}
[[issuer]]
name = "fixture"
issuer = "{iss_a}"
jwks_uri = "{jwks_a}"
audiences = ["api"]

[[issuer]]
name = "roles-only"
issuer = "{iss_b}"
jwks_uri = "{jwks_b}"
audiences = ["api"]
groups_claim = "roles"

[[rule]]
name = "no-secrets"
paths = ["/api/*/secrets/**", "/api/*/token/**"]
effect = "deny"

[[rule]]
name = "no-contractors"
groups = ["contractors"]
effect = "deny"

[[rule]]
name = "by-username"
paths = ["/by-username/**"]
principal = "claim:preferred_username"

[[rule]]
name = "with-credential"
paths = ["/with-credential/**"]
upstream = "pat"

[[rule]]
name = "everything"
paths = ["/**"]

[upstream.pat]
kind = "static"
token_file = "{credential}"
"#,
        credential = credential_file.display(),
        iss_a = a.base,
        jwks_a = a.jwks_uri(),
        iss_b = b.base,
        jwks_b = b.jwks_uri(),
    )
}

/// A running agent with [`identity_config`] and the runtime its mock IdPs live on.
struct IdentityEnv {
    rt: tokio::runtime::Runtime,
    a: MockIdp,
    b: MockIdp,
    agent: Option<Agent>,
    key: Signer,
    dir: tempfile::TempDir,
}

/// The mock IdPs; the agent is started by [`IdentityEnv::start`].
fn identity_idps() -> IdentityEnv {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let key = Signer::rsa("identity-rsa");
    let a = rt.block_on(MockIdp::start(&[&key]));
    let b = rt.block_on(MockIdp::start(&[&key]));
    IdentityEnv {
        rt,
        a,
        b,
        agent: None,
        key,
        dir: tempfile::tempdir().unwrap(),
    }
}

/// [`identity_idps`] and a started agent (`extra` goes into the config after `[auth]`).
fn identity_env(extra: &str) -> IdentityEnv {
    let mut env = identity_idps();
    env.start(extra, "dapi-static-credential");
    env
}

impl IdentityEnv {
    /// Start the agent, with `credential` as the static upstream token.
    fn start(&mut self, extra: &str, credential: &str) {
        let file = self.dir.path().join("pat.token");
        std::fs::write(&file, credential).unwrap();
        let agent = Agent::start(&identity_config(&self.a, &self.b, extra, &file));
        assert!(
            agent.wait_ready(support::READY_TIMEOUT),
            "idgate never loaded the mock issuers' keys\n{}",
            agent.log()
        );
        self.agent = Some(agent);
    }

    fn agent(&self) -> &Agent {
        self.agent.as_ref().expect("agent started")
    }

    /// One request per `(case, request)`, in order, on one connection.
    fn run(&self, max_frame: u32, reqs: &[(String, Request)]) -> Vec<Vars> {
        let spop = self.agent().spop;
        self.rt.block_on(async {
            let mut c = AsyncSpopClient::open_with(spop, max_frame).await;
            let mut out = Vec::new();
            for (sid, (_, req)) in reqs.iter().enumerate() {
                out.push(authorize(&mut c, sid as u64 + 1, req).await);
            }
            out
        })
    }

    fn no_panics(&self) {
        let log = self.agent().log();
        assert_eq!(log.matches("panicked").count(), 0, "{log}");
    }
}

/// The `error_description` of a 401's challenge.
fn error_description(vars: &Vars) -> &str {
    let c = vars.text("www_authenticate").expect("challenge");
    let (_, d) = c
        .split_once("error_description=\"")
        .unwrap_or_else(|| panic!("no error_description in {c:?}"));
    d.strip_suffix('"').unwrap()
}

/// Entra-style group object IDs.
fn guids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("{i:08x}-5e2f-4c1a-9d3b-{i:012x}"))
        .collect()
}

/// A token whose `sub`, email or groups cannot be passed on faithfully is refused at
/// validation (401 `claim_invalid`, the claim named in `error_description`) instead of being
/// allowed with the variable silently left out; so is an allowed request whose `claim:`
/// principal cannot be sent. 200 Entra object IDs still fit.
#[test]
fn unpassable_identities_are_refused_over_raw_spop() {
    let env = identity_env("");
    let iss = env.a.base.clone();
    let token = |f: &dyn Fn(&mut Value)| {
        let mut c = valid_claims(&iss, "ident");
        f(&mut c);
        env.key.token(&c)
    };
    let control = "sub contains a control character";
    let invisible = "sub contains an invisible or bidirectional formatting character";
    let refused: Vec<(&str, String, &str)> = vec![
        (
            "sub with U+0001",
            token(&|c| c["sub"] = json!("a\u{1}b")),
            control,
        ),
        (
            "sub with DEL",
            token(&|c| c["sub"] = json!("admin\u{7f}")),
            control,
        ),
        (
            "sub with NEL (C1)",
            token(&|c| c["sub"] = json!("admin\u{85}")),
            control,
        ),
        (
            "sub with RLO",
            token(&|c| c["sub"] = json!("\u{202e}nimda")),
            invisible,
        ),
        (
            "sub with ZWSP",
            token(&|c| c["sub"] = json!("admin\u{200b}")),
            invisible,
        ),
        (
            "sub of 1025 bytes",
            token(&|c| c["sub"] = json!("s".repeat(1025))),
            "sub longer than 1024 bytes",
        ),
        (
            "email with CR LF",
            token(&|c| c["email"] = json!("ident@example.com\r\nX-Forwarded-User: admin")),
            "email contains a control character",
        ),
        (
            "a group with a comma",
            token(&|c| c["groups"] = json!(["analysts", "admins,ops"])),
            "groups claim has a group containing a comma",
        ),
        (
            "an empty group",
            token(&|c| c["groups"] = json!(["analysts", ""])),
            "groups claim has an empty group",
        ),
        (
            "a group with U+2066",
            token(&|c| c["groups"] = json!(["\u{2066}contractors\u{2069}"])),
            "groups claim has a group with an invisible or bidirectional formatting character",
        ),
        (
            "201 groups of 40 bytes",
            token(&|c| {
                c["groups"] = json!((0..201).map(|i| format!("{i:040}")).collect::<Vec<_>>())
            }),
            "groups claim longer than 8192 bytes (comma-joined)",
        ),
    ];
    let entra = guids(200);
    let accepted = token(&|c| c["groups"] = json!(entra));
    let principal = |name: &str| token(&|c| c["preferred_username"] = json!(name));
    let mut reqs: Vec<(String, Request)> = refused
        .iter()
        .map(|(case, t, _)| (case.to_string(), bearer(t)))
        .collect();
    reqs.push(("200 Entra object IDs".into(), bearer(&accepted)));
    reqs.push((
        "principal claim with RLO".into(),
        bearer(&principal("bob\u{202e}")).path("/by-username/x"),
    ));
    reqs.push((
        "principal claim with a control character".into(),
        bearer(&principal("bob\u{1}")).path("/by-username/x"),
    ));
    reqs.push((
        "plain principal claim".into(),
        bearer(&principal("bob")).path("/by-username/x"),
    ));
    let answers = env.run(HAPROXY_MAX_FRAME_SIZE, &reqs);

    for ((case, _, description), vars) in refused.iter().zip(&answers) {
        assert_refused(case, vars, "claim_invalid");
        assert_eq!(error_description(vars), *description, "{case}");
    }
    let n = refused.len();
    let ok = &answers[n];
    assert_eq!(ok.bool("allow"), Some(true), "{ok:?}");
    assert_eq!(ok.text("sub"), Some("ident"));
    assert_eq!(ok.text("groups"), Some(entra.join(",").as_str()));
    assert_eq!(ok.text("groups").unwrap().len(), 7399);
    for (vars, description) in answers[n + 1..n + 3].iter().zip([
        "principal claim contains an invisible or bidirectional formatting character",
        "principal claim contains a control character",
    ]) {
        assert_eq!(vars.bool("allow"), Some(false), "{vars:?}");
        assert_eq!(vars.int("status"), Some(401));
        assert_eq!(vars.text("reason"), Some("claim_invalid"));
        assert_eq!(error_description(vars), description);
        // Which rule, and who, for the logs; nothing to forward.
        assert_eq!(vars.text("rule"), Some("by-username"));
        assert_eq!(vars.text("sub"), Some("ident"));
        assert!(!vars.contains("principal") && !vars.contains("upstream_authorization"));
    }
    let plain = &answers[n + 3];
    assert_eq!(plain.bool("allow"), Some(true), "{plain:?}");
    assert_eq!(plain.text("principal"), Some("bob"));
    env.no_panics();
}

/// Entra ID group overage: the token names `groups` in `_claim_names` (v2) or says
/// `hasgroups: true` (v1 implicit flow) instead of carrying the groups. Where groups are read,
/// that is 401 `claim_invalid`, never "no groups" (which would slip past the group deny); where
/// nothing reads the `groups` claim (groups from app roles), the token works.
#[test]
fn group_overage_over_raw_spop() {
    let env = identity_env("");
    let overage = |iss: &str, sub: &str| {
        let mut c = valid_claims(iss, sub);
        c.as_object_mut().unwrap().remove("groups");
        c["_claim_names"] = json!({"groups": "src1"});
        c["_claim_sources"] = json!({"src1": {
            "endpoint": "https://graph.microsoft.com/v1.0/users/6e2b3a4c-0000-4000-8000-000000000001/getMemberObjects"
        }});
        c
    };
    let hasgroups = |iss: &str, sub: &str| {
        let mut c = valid_claims(iss, sub);
        c.as_object_mut().unwrap().remove("groups");
        c["hasgroups"] = json!(true);
        c
    };
    let with_roles = |mut c: Value, roles: &[&str]| {
        c["roles"] = json!(roles);
        c
    };
    let (a, b) = (env.a.base.clone(), env.b.base.clone());
    let t = |c: &Value| bearer(&env.key.token(c));
    let reqs = vec![
        (
            "v2 overage, groups read".to_string(),
            t(&overage(&a, "over")),
        ),
        (
            "v1 hasgroups, groups read".to_string(),
            t(&hasgroups(&a, "hasg")),
        ),
        (
            "control: groups present".to_string(),
            t(&{
                let mut c = valid_claims(&a, "contractor");
                c["groups"] = json!(["contractors"]);
                c
            }),
        ),
        (
            "v2 overage, groups from roles".to_string(),
            t(&with_roles(overage(&b, "roles-user"), &["reader"])),
        ),
        (
            "v1 hasgroups, groups from roles".to_string(),
            t(&with_roles(hasgroups(&b, "roles-hasg"), &["reader"])),
        ),
        (
            "overage, roles say contractor".to_string(),
            t(&with_roles(
                overage(&b, "roles-contractor"),
                &["contractors"],
            )),
        ),
    ];
    let answers = env.run(HAPROXY_MAX_FRAME_SIZE, &reqs);
    let v2 = &answers[0];
    assert_refused("v2 overage", v2, "claim_invalid");
    assert_eq!(
        error_description(v2),
        "groups claim not in token (_claim_names: group overage; configure the IdP to emit groups as app roles or filtered groups)"
    );
    let v1 = &answers[1];
    assert_refused("v1 hasgroups", v1, "claim_invalid");
    assert!(error_description(v1).starts_with("groups claim not in token (hasgroups"));
    assert_eq!(answers[2].text("reason"), Some("denied_by_rule"));
    assert_eq!(answers[2].text("rule"), Some("no-contractors"));
    for (i, sub) in [(3, "roles-user"), (4, "roles-hasg")] {
        let vars = &answers[i];
        assert_eq!(vars.bool("allow"), Some(true), "{vars:?}");
        assert_eq!(vars.text("sub"), Some(sub));
        assert_eq!(vars.text("issuer"), Some("roles-only"));
        assert_eq!(vars.text("groups"), Some("reader"));
    }
    assert_eq!(answers[5].text("reason"), Some("denied_by_rule"));
    assert_eq!(answers[5].text("rule"), Some("no-contractors"));
    env.no_panics();
}

/// Paths an upstream (Tomcat/Spring, IIS, nginx, Go, anything folding Unicode) or HAProxy's
/// own raw-path routing would read differently from the rules: 400 `bad_request` before any
/// rule, through the binary. The `[paths] allow_non_ascii` opt-out relaxes only non-ASCII.
#[test]
fn path_variants_are_refused_over_raw_spop() {
    let variants = [
        "/api/2.0/to%E2%84%AAen/create",
        "/api/2.0/to\u{212A}en/create",
        "/api/2.0/%C5%BFecrets/list",
        "/api/2.0/%EF%BD%93%EF%BD%85crets/list",
        "/api/2.0/x/%EF%BC%8E%EF%BC%8E/secrets/list",
        "/api/2.0/secrets%3F/list",
        "/api/2.0/secrets%23/list",
        "/api/2.0/secrets%20/list",
        "/api/2.0/secrets./list",
        "/api/2.0/secrets%2e/list",
        "/api/2.0/secrets%00",
        "/api/2.0/secrets%09/list",
        "/api/2.0/%u0073ecrets/list",
        "/api/2.0/%c0%ae%c0%ae/secrets",
        "/%73erving-endpoints/m/invocations",
        "/api/2.0/%53ECRETS/list",
    ];
    let strict = identity_env("");
    let good = bearer(&strict.key.token(&valid_claims(&strict.a.base, "paths")));
    let mut reqs: Vec<(String, Request)> = variants
        .iter()
        .map(|p| (p.to_string(), good.clone().path(p)))
        .collect();
    reqs.push((
        "plain deny".into(),
        good.clone().path("/api/2.0/secrets/list"),
    ));
    reqs.push((
        "space inside".into(),
        good.clone().path("/serving-endpoints/m%20x/invocations"),
    ));
    reqs.push(("non-ASCII".into(), good.clone().path("/files/caf%C3%A9")));
    let answers = strict.run(HAPROXY_MAX_FRAME_SIZE, &reqs);
    for ((path, _), vars) in reqs.iter().zip(&answers).take(variants.len()) {
        assert_eq!(vars.bool("allow"), Some(false), "{path}: {vars:?}");
        assert_eq!(vars.int("status"), Some(400), "{path}: {vars:?}");
        assert_eq!(vars.text("reason"), Some("bad_request"), "{path}");
    }
    let n = variants.len();
    assert_eq!(answers[n].text("reason"), Some("denied_by_rule"));
    assert_eq!(answers[n + 1].bool("allow"), Some(true));
    assert_eq!(answers[n + 2].text("reason"), Some("bad_request"));
    strict.no_panics();
    drop(strict);

    let lenient = identity_env("\n[paths]\nallow_non_ascii = true\n");
    let good = bearer(&lenient.key.token(&valid_claims(&lenient.a.base, "paths")));
    let reqs = vec![
        (
            "non-ASCII".to_string(),
            good.clone().path("/files/caf%C3%A9"),
        ),
        (
            "raw non-ASCII".to_string(),
            good.clone().path("/files/\u{65E5}\u{672C}"),
        ),
        (
            "Kelvin sign".to_string(),
            good.clone().path("/api/2.0/to%E2%84%AAen/create"),
        ),
        (
            "long s".to_string(),
            good.clone().path("/api/2.0/%C5%BFecrets/list"),
        ),
        (
            "fullwidth dots".to_string(),
            good.clone().path("/a/%EF%BC%8E%EF%BC%8E/api"),
        ),
        (
            "encoded letter".to_string(),
            good.clone().path("/%73erving-endpoints/m/invocations"),
        ),
        (
            "trailing dot".to_string(),
            good.clone().path("/api/2.0/secrets./list"),
        ),
    ];
    let answers = lenient.run(HAPROXY_MAX_FRAME_SIZE, &reqs);
    assert_eq!(answers[0].bool("allow"), Some(true), "{:?}", answers[0]);
    assert_eq!(answers[1].bool("allow"), Some(true), "{:?}", answers[1]);
    for vars in &answers[2..] {
        assert_eq!(vars.text("reason"), Some("bad_request"), "{vars:?}");
    }
    lenient.no_panics();
}

/// With a max-frame-size too small for an allowed request's identity, the agent refuses it
/// (500 `internal_error`) rather than allow it without sub/email/groups/principal. The ACK's
/// identity comes from the token, which the NOTIFY carries (base64: larger), so only an
/// upstream credential makes an allowed ACK outgrow the frame its NOTIFY fit in: the static
/// credential here is sized so that it fits alone, and not with the identity.
#[test]
fn tiny_max_frame_size_never_drops_an_allowed_identity() {
    let mut env = identity_idps();
    let iss = env.a.base.clone();
    let mut claims = valid_claims(&iss, "many-groups");
    claims["groups"] = json!((0..12)
        .map(|i| format!("a-rather-long-group-name-{i:02}"))
        .collect::<Vec<_>>());
    let req = bearer(&env.key.token(&claims)).path("/with-credential/x");
    // The frame HAProxy's NOTIFY needs (without the 4-byte length), plus a little.
    let max_frame = (on_stream(1, &req).notify(1, 1).len() - 4 + 16) as u32;
    // `Bearer <credential>` plus allow/status/reason fit; the identity (~500 bytes) does not.
    let credential = format!("dapi{}", "0".repeat(max_frame as usize - 150));
    env.start("", &credential);
    let ok_req = bearer(&env.key.token(&valid_claims(&iss, "u"))).path("/x");
    let reqs = vec![
        ("big identity with a credential".to_string(), req.clone()),
        ("no credential".to_string(), req.clone().path("/x")),
        (
            "refusal".to_string(),
            req.clone().path("/api/2.0/secrets/list"),
        ),
        ("small".to_string(), ok_req),
    ];
    let answers = env.run(max_frame, &reqs);
    let refused = &answers[0];
    assert_eq!(refused.bool("allow"), Some(false), "{refused:?}");
    assert_eq!(refused.int("status"), Some(500));
    assert_eq!(refused.text("reason"), Some("internal_error"));
    assert!(!refused.contains("upstream_authorization"));
    // Without the credential the same identity fits, and is sent whole.
    let ok = &answers[1];
    assert_eq!(ok.bool("allow"), Some(true), "{ok:?}");
    for name in ["sub", "issuer", "email", "groups", "principal"] {
        assert!(ok.contains(name), "{name} missing: {ok:?}");
    }
    assert_eq!(ok.text("groups").unwrap().split(',').count(), 12);
    assert_eq!(answers[2].text("reason"), Some("denied_by_rule"));
    assert_eq!(answers[3].bool("allow"), Some(true));
    // At the default size the credential and the identity fit together.
    let answers = env.run(HAPROXY_MAX_FRAME_SIZE, &reqs[..1]);
    assert_eq!(answers[0].bool("allow"), Some(true), "{:?}", answers[0]);
    assert_eq!(
        answers[0].text("upstream_authorization"),
        Some(format!("Bearer {credential}").as_str())
    );
    env.no_panics();
}
