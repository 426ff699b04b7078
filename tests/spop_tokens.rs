//! An adversarial token corpus against the `idgate` BINARY over raw SPOP (no HAProxy): a tiny
//! SPOP client (HELLO, NOTIFY `authorize`, ACK parsing, built on the crate's own encoder and
//! decoder) talks to `idgate run`, whose one issuer is a mock IdP publishing fixture RSA, EC
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
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use auth_kit::{b64, claims, now, MockIdp, Signer};
use bytes::{Bytes, BytesMut};
use idgate::spop::frame::{self, decode_actions, Action, Arg, FrameType, Header, Message};
use idgate::spop::TypedData;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::{json, Value};
use support::agent::Agent;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// Bound on any single SPOP exchange.
const WAIT: Duration = Duration::from_secs(10);

/// The max-frame-size we announce (HAProxy's default).
const MAX_FRAME: u32 = 16380;

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

// ----- the SPOP client -----

/// One HAProxy-side SPOP connection, HELLO done.
struct Spop {
    s: TcpStream,
    /// The max-frame-size announced in our HELLO (the agent may only lower it).
    max_frame: u32,
}

/// The variables of one ACK, by name.
type Vars = HashMap<String, TypedData>;

impl Spop {
    async fn connect(addr: SocketAddr) -> Spop {
        Spop::connect_with(addr, MAX_FRAME).await
    }

    /// [`Spop::connect`] announcing `max_frame` as HAProxy's max-frame-size.
    async fn connect_with(addr: SocketAddr, max_frame: u32) -> Spop {
        let s = timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect to idgate's SPOP listener");
        s.set_nodelay(true).unwrap();
        let mut c = Spop { s, max_frame };
        let mut hello = BytesMut::new();
        frame::encode_haproxy_hello(&mut hello, "2.0", max_frame, "pipelining", false);
        c.s.write_all(&hello).await.unwrap();
        let mut body = c.read_frame().await;
        let h = Header::decode(&mut body).unwrap();
        assert_eq!(
            h.frame_type,
            FrameType::AgentHello as u8,
            "AGENT-HELLO expected"
        );
        c
    }

    async fn read_frame(&mut self) -> Bytes {
        let max_frame = self.max_frame;
        timeout(WAIT, async {
            let mut len = [0u8; 4];
            self.s.read_exact(&mut len).await.expect("frame length");
            let n = u32::from_be_bytes(len);
            assert!(
                n <= max_frame,
                "frame of {n} bytes exceeds the negotiated size"
            );
            let mut body = vec![0u8; n as usize];
            self.s.read_exact(&mut body).await.expect("frame body");
            Bytes::from(body)
        })
        .await
        .expect("a frame within the time limit")
    }

    /// Reads one ACK: (stream-id, frame-id, variables).
    async fn read_ack(&mut self) -> (u64, u64, Vars) {
        let mut body = self.read_frame().await;
        let h = Header::decode(&mut body).unwrap();
        assert_eq!(h.frame_type, FrameType::Ack as u8, "ACK expected");
        let mut vars = Vars::new();
        for a in decode_actions(body).unwrap() {
            if let Action::SetVar { name, value, .. } = a {
                let name = String::from_utf8(name.to_vec()).unwrap();
                assert!(
                    vars.insert(name.clone(), value).is_none(),
                    "variable {name} set twice"
                );
            }
        }
        (h.stream_id, h.frame_id, vars)
    }

    async fn send(&mut self, frames: &[u8]) {
        self.s.write_all(frames).await.unwrap();
    }

    /// One `authorize` round trip.
    async fn authorize(&mut self, sid: u64, req: &Req) -> Vars {
        self.send(&notify(sid, 1, req)).await;
        let (got_sid, fid, vars) = self.read_ack().await;
        assert_eq!((got_sid, fid), (sid, 1));
        vars
    }
}

/// What one NOTIFY carries besides the method.
#[derive(Debug, Clone, Default)]
struct Req {
    authorization: Option<String>,
    cookie: Option<String>,
    /// The `path` argument; `None`: [`DEFAULT_PATH`].
    path: Option<String>,
}

/// The path of the corpus requests.
const DEFAULT_PATH: &str = "/serving-endpoints/m/invocations";

fn bearer(token: &str) -> Req {
    Req {
        authorization: Some(format!("Bearer {token}")),
        ..Req::default()
    }
}

fn header_only(value: &str) -> Req {
    Req {
        authorization: Some(value.to_string()),
        ..Req::default()
    }
}

fn cookie_only(value: &str) -> Req {
    Req {
        cookie: Some(value.to_string()),
        ..Req::default()
    }
}

impl Req {
    fn at(mut self, path: &str) -> Req {
        self.path = Some(path.to_string());
        self
    }
}

fn string(s: &str) -> TypedData {
    TypedData::String(Bytes::copy_from_slice(s.as_bytes()))
}

/// A NOTIFY with the `authorize` message, as the shipped SPOE file sends it.
fn notify(sid: u64, fid: u64, req: &Req) -> Vec<u8> {
    let arg = |name: &'static str, value: TypedData| Arg {
        name: Bytes::from_static(name.as_bytes()),
        value,
    };
    let mut args = vec![
        arg("method", TypedData::static_str("POST")),
        arg("path", string(req.path.as_deref().unwrap_or(DEFAULT_PATH))),
        arg("host", TypedData::static_str("gateway.example.com")),
    ];
    args.push(arg(
        "authorization",
        req.authorization.as_deref().map_or(TypedData::Null, string),
    ));
    args.push(arg(
        "cookie",
        req.cookie.as_deref().map_or(TypedData::Null, string),
    ));
    args.push(arg("src", TypedData::Ipv4([127, 0, 0, 1].into())));
    args.push(arg("unique_id", string(&format!("spop-tokens-{sid}"))));
    let msg = Message {
        name: Bytes::from_static(b"authorize"),
        args,
    };
    let mut buf = BytesMut::new();
    frame::encode_notify(&mut buf, sid, fid, &[msg]);
    buf.to_vec()
}

fn str_var<'a>(vars: &'a Vars, name: &str) -> Option<&'a str> {
    match vars.get(name)? {
        TypedData::String(b) => Some(std::str::from_utf8(b).expect("UTF-8 variable")),
        other => panic!("{name} is not a string: {other:?}"),
    }
}

fn int_var(vars: &Vars, name: &str) -> Option<i64> {
    vars.get(name)
        .map(|v| v.as_i64().expect("integer variable"))
}

fn bool_var(vars: &Vars, name: &str) -> Option<bool> {
    match vars.get(name)? {
        TypedData::Bool(b) => Some(*b),
        other => panic!("{name} is not a bool: {other:?}"),
    }
}

/// A refusal: allow=false, 401, exactly `reason`, the right challenge, no identity.
fn assert_refused(case: &str, vars: &Vars, reason: &str) {
    assert_eq!(bool_var(vars, "allow"), Some(false), "{case}: {vars:?}");
    assert_eq!(int_var(vars, "status"), Some(401), "{case}: {vars:?}");
    assert_eq!(str_var(vars, "reason"), Some(reason), "{case}: {vars:?}");
    let challenge = str_var(vars, "www_authenticate")
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
            !vars.contains_key(name),
            "{case}: {name} set on a refusal: {vars:?}"
        );
    }
}

/// An acceptance with the identity of [`valid_claims`] (`sub` given).
fn assert_accepted(case: &str, vars: &Vars, sub: &str) {
    assert_eq!(bool_var(vars, "allow"), Some(true), "{case}: {vars:?}");
    assert_eq!(int_var(vars, "status"), Some(200), "{case}: {vars:?}");
    assert_eq!(str_var(vars, "reason"), Some("ok"), "{case}: {vars:?}");
    assert_eq!(str_var(vars, "sub"), Some(sub), "{case}");
    assert_eq!(
        str_var(vars, "email"),
        Some(format!("{sub}@example.com").as_str()),
        "{case}"
    );
    assert_eq!(
        str_var(vars, "groups"),
        Some("ml-engineers,analysts"),
        "{case}"
    );
    assert_eq!(str_var(vars, "issuer"), Some("fixture"), "{case}");
    assert_eq!(str_var(vars, "rule"), Some("everything"), "{case}");
    assert!(!vars.contains_key("www_authenticate"), "{case}: {vars:?}");
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
fn refusals(k: &Keys, iss: &str) -> Vec<(&'static str, Req, &'static str)> {
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

    let mut cases: Vec<(&'static str, Req, &'static str)> = vec![
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
        ("no credentials at all", Req::default(), "missing_token"),
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
        Req {
            authorization: Some("Basic YWxpY2U6c2VjcmV0".into()),
            cookie: Some(format!("{COOKIE}={valid}")),
            ..Req::default()
        },
        "unsupported_token",
    ));
    cases
}

/// (case, request, expected sub). Every one must be accepted.
fn acceptances(k: &Keys, iss: &str) -> Vec<(&'static str, Req, String)> {
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
            Req {
                authorization: Some(String::new()),
                cookie: Some(format!("{COOKIE}={}", t(&k.ec, "cookie-fallback"))),
                ..Req::default()
            },
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
        let mut c = Spop::connect(spop).await;
        let mut sid = 0;
        for (case, req, reason) in &refusals {
            sid += 1;
            let vars = c.authorize(sid, req).await;
            assert_refused(case, &vars, reason);
        }
        for (case, req, sub) in &acceptances {
            sid += 1;
            let vars = c.authorize(sid, req).await;
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
    let streams: Vec<(u64, Req, Option<String>)> = (0..PIPELINED)
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
        let mut c = Spop::connect(spop).await;
        let mut all = Vec::new();
        for (sid, req, _) in &streams {
            all.extend(notify(*sid, 1, req));
        }
        c.send(&all).await;
        let mut answered: HashMap<u64, Vars> = HashMap::new();
        for _ in 0..PIPELINED {
            let (sid, fid, vars) = c.read_ack().await;
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
        let more = timeout(Duration::from_millis(300), c.s.read(&mut extra)).await;
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
    fn run(&self, max_frame: u32, reqs: &[(String, Req)]) -> Vec<Vars> {
        let spop = self.agent().spop;
        self.rt.block_on(async {
            let mut c = Spop::connect_with(spop, max_frame).await;
            let mut out = Vec::new();
            for (sid, (_, req)) in reqs.iter().enumerate() {
                out.push(c.authorize(sid as u64 + 1, req).await);
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
    let c = str_var(vars, "www_authenticate").expect("challenge");
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
    let mut reqs: Vec<(String, Req)> = refused
        .iter()
        .map(|(case, t, _)| (case.to_string(), bearer(t)))
        .collect();
    reqs.push(("200 Entra object IDs".into(), bearer(&accepted)));
    reqs.push((
        "principal claim with RLO".into(),
        bearer(&principal("bob\u{202e}")).at("/by-username/x"),
    ));
    reqs.push((
        "principal claim with a control character".into(),
        bearer(&principal("bob\u{1}")).at("/by-username/x"),
    ));
    reqs.push((
        "plain principal claim".into(),
        bearer(&principal("bob")).at("/by-username/x"),
    ));
    let answers = env.run(MAX_FRAME, &reqs);

    for ((case, _, description), vars) in refused.iter().zip(&answers) {
        assert_refused(case, vars, "claim_invalid");
        assert_eq!(error_description(vars), *description, "{case}");
    }
    let n = refused.len();
    let ok = &answers[n];
    assert_eq!(bool_var(ok, "allow"), Some(true), "{ok:?}");
    assert_eq!(str_var(ok, "sub"), Some("ident"));
    assert_eq!(str_var(ok, "groups"), Some(entra.join(",").as_str()));
    assert_eq!(str_var(ok, "groups").unwrap().len(), 7399);
    for (vars, description) in answers[n + 1..n + 3].iter().zip([
        "principal claim contains an invisible or bidirectional formatting character",
        "principal claim contains a control character",
    ]) {
        assert_eq!(bool_var(vars, "allow"), Some(false), "{vars:?}");
        assert_eq!(int_var(vars, "status"), Some(401));
        assert_eq!(str_var(vars, "reason"), Some("claim_invalid"));
        assert_eq!(error_description(vars), description);
        // Which rule, and who, for the logs; nothing to forward.
        assert_eq!(str_var(vars, "rule"), Some("by-username"));
        assert_eq!(str_var(vars, "sub"), Some("ident"));
        assert!(!vars.contains_key("principal") && !vars.contains_key("upstream_authorization"));
    }
    let plain = &answers[n + 3];
    assert_eq!(bool_var(plain, "allow"), Some(true), "{plain:?}");
    assert_eq!(str_var(plain, "principal"), Some("bob"));
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
    let answers = env.run(MAX_FRAME, &reqs);
    let v2 = &answers[0];
    assert_refused("v2 overage", v2, "claim_invalid");
    assert_eq!(
        error_description(v2),
        "groups claim not in token (_claim_names: group overage; configure the IdP to emit groups as app roles or filtered groups)"
    );
    let v1 = &answers[1];
    assert_refused("v1 hasgroups", v1, "claim_invalid");
    assert!(error_description(v1).starts_with("groups claim not in token (hasgroups"));
    assert_eq!(str_var(&answers[2], "reason"), Some("denied_by_rule"));
    assert_eq!(str_var(&answers[2], "rule"), Some("no-contractors"));
    for (i, sub) in [(3, "roles-user"), (4, "roles-hasg")] {
        let vars = &answers[i];
        assert_eq!(bool_var(vars, "allow"), Some(true), "{vars:?}");
        assert_eq!(str_var(vars, "sub"), Some(sub));
        assert_eq!(str_var(vars, "issuer"), Some("roles-only"));
        assert_eq!(str_var(vars, "groups"), Some("reader"));
    }
    assert_eq!(str_var(&answers[5], "reason"), Some("denied_by_rule"));
    assert_eq!(str_var(&answers[5], "rule"), Some("no-contractors"));
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
    let mut reqs: Vec<(String, Req)> = variants
        .iter()
        .map(|p| (p.to_string(), good.clone().at(p)))
        .collect();
    reqs.push((
        "plain deny".into(),
        good.clone().at("/api/2.0/secrets/list"),
    ));
    reqs.push((
        "space inside".into(),
        good.clone().at("/serving-endpoints/m%20x/invocations"),
    ));
    reqs.push(("non-ASCII".into(), good.clone().at("/files/caf%C3%A9")));
    let answers = strict.run(MAX_FRAME, &reqs);
    for ((path, _), vars) in reqs.iter().zip(&answers).take(variants.len()) {
        assert_eq!(bool_var(vars, "allow"), Some(false), "{path}: {vars:?}");
        assert_eq!(int_var(vars, "status"), Some(400), "{path}: {vars:?}");
        assert_eq!(str_var(vars, "reason"), Some("bad_request"), "{path}");
    }
    let n = variants.len();
    assert_eq!(str_var(&answers[n], "reason"), Some("denied_by_rule"));
    assert_eq!(bool_var(&answers[n + 1], "allow"), Some(true));
    assert_eq!(str_var(&answers[n + 2], "reason"), Some("bad_request"));
    strict.no_panics();
    drop(strict);

    let lenient = identity_env("\n[paths]\nallow_non_ascii = true\n");
    let good = bearer(&lenient.key.token(&valid_claims(&lenient.a.base, "paths")));
    let reqs = vec![
        ("non-ASCII".to_string(), good.clone().at("/files/caf%C3%A9")),
        (
            "raw non-ASCII".to_string(),
            good.clone().at("/files/\u{65E5}\u{672C}"),
        ),
        (
            "Kelvin sign".to_string(),
            good.clone().at("/api/2.0/to%E2%84%AAen/create"),
        ),
        (
            "long s".to_string(),
            good.clone().at("/api/2.0/%C5%BFecrets/list"),
        ),
        (
            "fullwidth dots".to_string(),
            good.clone().at("/a/%EF%BC%8E%EF%BC%8E/api"),
        ),
        (
            "encoded letter".to_string(),
            good.clone().at("/%73erving-endpoints/m/invocations"),
        ),
        (
            "trailing dot".to_string(),
            good.clone().at("/api/2.0/secrets./list"),
        ),
    ];
    let answers = lenient.run(MAX_FRAME, &reqs);
    assert_eq!(
        bool_var(&answers[0], "allow"),
        Some(true),
        "{:?}",
        answers[0]
    );
    assert_eq!(
        bool_var(&answers[1], "allow"),
        Some(true),
        "{:?}",
        answers[1]
    );
    for vars in &answers[2..] {
        assert_eq!(str_var(vars, "reason"), Some("bad_request"), "{vars:?}");
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
    let req = bearer(&env.key.token(&claims)).at("/with-credential/x");
    // The frame HAProxy's NOTIFY needs (without the 4-byte length), plus a little.
    let max_frame = (notify(1, 1, &req).len() - 4 + 16) as u32;
    // `Bearer <credential>` plus allow/status/reason fit; the identity (~500 bytes) does not.
    let credential = format!("dapi{}", "0".repeat(max_frame as usize - 150));
    env.start("", &credential);
    let ok_req = bearer(&env.key.token(&valid_claims(&iss, "u"))).at("/x");
    let reqs = vec![
        ("big identity with a credential".to_string(), req.clone()),
        ("no credential".to_string(), req.clone().at("/x")),
        (
            "refusal".to_string(),
            req.clone().at("/api/2.0/secrets/list"),
        ),
        ("small".to_string(), ok_req),
    ];
    let answers = env.run(max_frame, &reqs);
    let refused = &answers[0];
    assert_eq!(bool_var(refused, "allow"), Some(false), "{refused:?}");
    assert_eq!(int_var(refused, "status"), Some(500));
    assert_eq!(str_var(refused, "reason"), Some("internal_error"));
    assert!(!refused.contains_key("upstream_authorization"));
    // Without the credential the same identity fits, and is sent whole.
    let ok = &answers[1];
    assert_eq!(bool_var(ok, "allow"), Some(true), "{ok:?}");
    for name in ["sub", "issuer", "email", "groups", "principal"] {
        assert!(ok.contains_key(name), "{name} missing: {ok:?}");
    }
    assert_eq!(str_var(ok, "groups").unwrap().split(',').count(), 12);
    assert_eq!(str_var(&answers[2], "reason"), Some("denied_by_rule"));
    assert_eq!(bool_var(&answers[3], "allow"), Some(true));
    // At the default size the credential and the identity fit together.
    let answers = env.run(MAX_FRAME, &reqs[..1]);
    assert_eq!(
        bool_var(&answers[0], "allow"),
        Some(true),
        "{:?}",
        answers[0]
    );
    assert_eq!(
        str_var(&answers[0], "upstream_authorization"),
        Some(format!("Bearer {credential}").as_str())
    );
    env.no_panics();
}
