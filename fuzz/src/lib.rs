//! The fuzz targets' bodies, shared by the cargo-fuzz binaries (`fuzz_targets/*.rs`, one call
//! each) and by the main crate's `tests/fuzz_seeds.rs`, which includes this file with `#[path]`
//! and runs every seed and saved crasher (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`)
//! under plain `cargo test`. A crasher, once saved, is a regression test on every CI run
//! without the sanitizer build.
//!
//! Each function panics on an invariant violation (that is what the fuzzer reports) and returns
//! normally otherwise.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use bytes::{Buf, Bytes, BytesMut};

use idgate::auth::fuzzing::{check_claims, parse, valid_kid, ClaimRules, ClaimSelection, IssMatch};
use idgate::claim_path::ClaimPath;
use idgate::config::Config;
use idgate::contract;
use idgate::decision::{Identity, Reason};
use idgate::policy::{normalize_path, Outcome, Policy, RequestView, MAX_PATH_BYTES};
use idgate::spop::frame::{self, Header};
use idgate::spop::{CloseReason, ConnConfig, Connection, Event};

#[path = "../../tests/support/foundation.rs"]
mod foundation;

use foundation::FoundationAuthorizer;

// --- spop_conn ---------------------------------------------------------------------------------

/// What one `spop_conn` input did, for tests that check a seed means what its name says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpopRun {
    /// NOTIFY frames the connection yielded (each was answered).
    pub notifies: usize,
    /// The connection closed (error, DISCONNECT or EOF handling).
    pub closed: bool,
    /// Frame types we wrote, in order (101 AGENT-HELLO, 102 AGENT-DISCONNECT, 103 ACK).
    pub written: Vec<u8>,
}

/// Arbitrary bytes, in arbitrary chunkings, into the SPOP connection state machine, plus the
/// contract's answer (request, stand-in decision, variables) for every NOTIFY it yields.
///
/// Input: `[mode] [stream...]`. Bit 0 of `mode` prepends a valid HAPROXY-HELLO (so the fuzzer
/// reaches NOTIFY parsing without having to discover a HELLO); the other bits seed the chunk
/// sizes the stream is fed in.
pub fn spop_conn(data: &[u8]) -> SpopRun {
    let Some((&mode, stream)) = data.split_first() else {
        return SpopRun {
            notifies: 0,
            closed: false,
            written: Vec::new(),
        };
    };
    let mut conn = Connection::new(ConnConfig {
        max_frame_size: 16380,
    });
    if mode & 1 == 1 {
        let mut hello = BytesMut::new();
        frame::encode_haproxy_hello(&mut hello, "2.0", 16380, "pipelining", false);
        conn.handle_input(&hello);
    }
    let authorizer = FoundationAuthorizer::default();
    let mut seed = u32::from(mode >> 1) | 0x100;
    let mut rest = stream;
    let mut out = BytesMut::new();
    let (mut notifies, mut closed) = (0, false);
    loop {
        // Chunk sizes 1..=64 from a tiny LCG, so the same input always splits the same way.
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = ((seed >> 16) as usize % 64 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        conn.handle_input(chunk);
        rest = tail;
        while let Some(ev) = conn.poll_event() {
            assert!(!closed, "event after Close");
            match ev {
                Event::Ready { max_frame_size, .. } => assert!(max_frame_size >= 256),
                Event::Notify(n) => {
                    notifies += 1;
                    let mfs = conn.max_frame_size().expect("notify only when ready");
                    let ack = ready(contract::answer(
                        &authorizer,
                        n,
                        mfs,
                        std::time::Instant::now(),
                    ));
                    conn.send_ack(ack.stream_id, ack.frame_id, &ack.actions())
                        .expect("the contract fits every ACK into the frame");
                }
                Event::Close(CloseReason::Error(e)) => {
                    let _ = e.status();
                    closed = true;
                }
                Event::Close(_) => closed = true,
            }
        }
        if let Some(b) = conn.poll_transmit() {
            out.extend_from_slice(&b);
        }
        if rest.is_empty() {
            break;
        }
    }
    let _ = conn.handle_eof();
    if let Some(b) = conn.poll_transmit() {
        out.extend_from_slice(&b);
    }
    SpopRun {
        notifies,
        closed,
        written: check_spop_output(out.freeze()),
    }
}

/// Poll once with a no-op waker: the stand-in decision never waits.
fn ready<F: std::future::Future>(fut: F) -> F::Output {
    use std::task::{Context, Poll, Waker};
    match std::pin::pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the stand-in decision completes on its first poll"),
    }
}

/// Everything we wrote is a sequence of well-formed agent frames: FLAGS exactly FIN,
/// AGENT-HELLO/DISCONNECT with ids 00 00, ACK actions that decode, at most one DISCONNECT and
/// it comes last. Returns the frame types.
fn check_spop_output(mut out: Bytes) -> Vec<u8> {
    let mut types = Vec::new();
    while out.has_remaining() {
        assert_ne!(types.last(), Some(&102), "frame after AGENT-DISCONNECT");
        assert!(out.remaining() >= 4, "truncated frame length");
        let len = out.get_u32() as usize;
        assert!(out.remaining() >= len, "truncated frame");
        let mut body = out.split_to(len);
        let h = Header::decode(&mut body).expect("our header decodes");
        assert_eq!(h.flags, 1);
        match h.frame_type {
            101 | 102 => assert_eq!((h.stream_id, h.frame_id), (0, 0)),
            103 => {
                frame::decode_actions(body).expect("our actions decode");
            }
            t => panic!("we sent frame type {t}"),
        }
        types.push(h.frame_type);
    }
    types
}

// --- jwt_parse ---------------------------------------------------------------------------------

/// `auth.max_token_bytes` default.
const MAX_TOKEN_BYTES: usize = 8192;
/// A fixed "now" (2023-11-14) so runs are reproducible.
const NOW: u64 = 1_700_000_000;
const LEEWAY: u64 = 30;

static CLAIM_RULES: LazyLock<ClaimRules> = LazyLock::new(|| ClaimRules {
    name: Arc::from("corp"),
    iss: IssMatch::Exact("https://idp.example.com/realms/corp".into()),
    audiences: HashSet::from(["databricks-gateway".to_string()]),
    leeway: LEEWAY,
    max_lifetime: 86_400,
    email_claim: claim_path("email"),
    groups_claim: claim_path("realm_access.roles"),
    user_claim: None,
});

/// What an authenticator with `CLAIM_RULES` and rules reading `tenant` and `aud` keeps.
static SELECTION: LazyLock<ClaimSelection> = LazyLock::new(|| {
    ClaimSelection::new(
        [&CLAIM_RULES.email_claim, &CLAIM_RULES.groups_claim],
        &[claim_path("tenant"), claim_path("aud")],
    )
});

fn claim_path(p: &str) -> ClaimPath {
    ClaimPath::parse(p).expect("a valid claim path")
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = c
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=c.len() {
            out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// The JWT structure / header / claims parser (`auth::jose::parse`) and the claim checks
/// (`check_claims`) on arbitrary UTF-8, without signature verification (that is AWS-LC's job
/// and needs keys). Returns whether the claims were accepted.
///
/// Two input forms, so the fuzzer reaches the JSON logic without having to discover base64:
/// - anything not starting with `{` is a raw compact token;
/// - `{header json}\n{payload json}` is base64url-encoded here into `header.payload.sig`.
pub fn jwt_parse(data: &[u8]) -> Option<Result<(), Reason>> {
    let s = std::str::from_utf8(data).ok()?;
    let (token, payload) = if s.starts_with('{') {
        let (h, p) = s.split_once('\n').unwrap_or((s, "{}"));
        let t = format!("{}.{}.c2ln", b64url(h.as_bytes()), b64url(p.as_bytes()));
        (t, Some(p))
    } else {
        (s.to_owned(), None)
    };
    let parsed = match parse(&token, MAX_TOKEN_BYTES) {
        Ok(p) => p,
        Err(r) => return Some(Err(r.reason)),
    };
    // What `parse` accepted is structurally a compact JWS within the size limit.
    assert!(token.len() <= MAX_TOKEN_BYTES);
    assert_eq!(token.bytes().filter(|&b| b == b'.').count(), 2);
    assert!(parsed.header.kid.as_deref().is_none_or(valid_kid));
    // The size limit is checked before anything else.
    let tight = parse(&token, token.len() - 1).map(|_| ()).unwrap_err();
    assert_eq!(tight.reason, Reason::MalformedToken);

    let claims = match parsed.claims(&SELECTION) {
        Ok(c) => c,
        Err(r) => return Some(Err(r.reason)),
    };
    let _ = claims.iss();
    Some(match check_claims(&CLAIM_RULES, &claims, NOW) {
        Ok(id) => {
            // Differential check against a plain serde_json parse of the same payload (which
            // keeps the last of duplicate names, but those were refused above).
            if let Some(Ok(serde_json::Value::Object(full))) =
                payload.map(serde_json::from_str::<serde_json::Value>)
            {
                assert_eq!(full["sub"], *id.sub);
                for (k, v) in &id.claims {
                    assert_eq!(full[k], *v, "kept claim {k}");
                }
            }
            assert!(!id.sub.is_empty());
            assert!(
                id.expires_at.saturating_add(LEEWAY) >= NOW,
                "expired token accepted"
            );
            assert_eq!(&*id.issuer, "corp");
            // An identity keeps exactly the selected claims that are present; `aud` is required.
            assert!(id.claims.keys().all(|k| k == "tenant" || k == "aud"));
            assert!(id.claims.contains_key("aud"));
            Ok(())
        }
        Err(r) => Err(r.reason),
    })
}

// --- config_parse ------------------------------------------------------------------------------

/// The TOML configuration: loading (parsing, reading into typed values, every check) and policy
/// compilation on arbitrary text. Returns whether the config is valid.
///
/// A configuration that loads must compile (the policy checks nothing again); one that does not
/// must say why, one line per problem, each once.
pub fn config_parse(data: &[u8]) -> Option<bool> {
    let text = std::str::from_utf8(data).ok()?;
    match Config::from_toml_in(text, "fuzz", &FUZZ_CONFIG_DIR) {
        Ok(cfg) => {
            assert_eq!(Policy::compile(&cfg).rules().len(), cfg.rules.len());
            Some(true)
        }
        Err(e) => {
            assert!(!e.problems.is_empty());
            let lines: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
            assert!(lines.iter().all(|l| !l.contains('\n')), "{lines:?}");
            let unique: HashSet<&String> = lines.iter().collect();
            assert_eq!(
                unique.len(),
                lines.len(),
                "a problem reported twice: {lines:?}"
            );
            Some(false)
        }
    }
}

/// Where the fuzzed configuration "is": the secret files the seeds name (`serving-sp.secret`,
/// `demo-serving-sp.secret` of the shipped examples, `pat`) are there, so they load.
static FUZZ_CONFIG_DIR: LazyLock<std::path::PathBuf> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("idgate-fuzz-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    for name in ["serving-sp.secret", "demo-serving-sp.secret", "pat"] {
        std::fs::write(dir.join(name), "fuzz-secret\n").expect("secret file");
    }
    dir
});

// --- path_match --------------------------------------------------------------------------------

const PATH_RULES: &str = r#"
[[issuer]]
name = "corp"
issuer = "https://idp.example.com/realms/corp"
audiences = ["databricks-gateway"]

[[rule]]
name = "deny-credentials"
paths = ["/api/*/secrets/**", "/api/2.*/token/**", "/api/*/token-management/**"]
effect = "deny"

[[rule]]
name = "health"
public = true
methods = ["GET", "HEAD"]
paths = ["/healthz", "/static/*.js", "/docs/**"]

[[rule]]
name = "serving"
paths = ["/serving-endpoints/*/invocations", "/**/v*-beta/x"]

[[rule]]
name = "api"
paths = ["/api/2.*/**"]
"#;

static POLICY: LazyLock<Policy> = LazyLock::new(|| {
    let cfg = Config::from_toml(PATH_RULES, "fuzz").expect("fixed fuzz config is valid");
    Policy::compile(&cfg)
});

static ID: LazyLock<Identity> = LazyLock::new(|| Identity {
    issuer: Arc::from("corp"),
    sub: "alice".into(),
    user: None,
    email: Some("alice@example.com".into()),
    groups: vec!["ml".into()],
    scopes: vec![],
    expires_at: u64::MAX,
    issued_at: None,
    jti: None,
    claims: Default::default(),
});

/// How the fixed policy treats one normalized path: (public rule, identity rule as
/// (allow, name)), compared by rule name.
pub type PathDecision = (Option<String>, Option<(bool, String)>);

fn decide(path: &str) -> PathDecision {
    let req = RequestView {
        method: "GET",
        path,
        host: Some("dbc-1234.cloud.databricks.com"),
        src: None,
    };
    let public = POLICY.match_public(&req).map(|r| r.name.to_string());
    let private = match POLICY.evaluate(&req, &ID) {
        Outcome::Allow(r) => Some((true, r.name.to_string())),
        Outcome::Deny(r) => Some((false, r.name.to_string())),
        Outcome::NoMatch => None,
    };
    (public, private)
}

fn denied(path: &str) -> bool {
    matches!(decide(path).1, Some((false, _)))
}

/// The letters, digits, `-`, `.`, `_` and `/` of `s`, in order; of the raw path (`raw`: up to
/// the first `?`, `%XX` escapes skipped) as HAProxy sees it.
fn routing_chars(s: &str, raw: bool) -> String {
    let s = if raw {
        s.split('?').next().unwrap_or("")
    } else {
        s
    };
    let b = s.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if raw && is_escape_at(b, i) {
            i += 3;
            continue;
        }
        if b[i].is_ascii_alphanumeric() || b"-._/".contains(&b[i]) {
            out.push(b[i] as char);
        }
        i += 1;
    }
    out
}

fn is_escape_at(b: &[u8], i: usize) -> bool {
    b[i] == b'%'
        && b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
}

fn has_escape(s: &str) -> bool {
    s.as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1].is_ascii_hexdigit() && w[2].is_ascii_hexdigit())
}

/// Request-path normalization and rule matching on arbitrary strings. Returns the normalized
/// path and its decision, or `None` when the path is refused (or not UTF-8).
///
/// Invariants checked (module docs of `idgate::policy::path`):
/// - a normalized path starts with `/`, has no dot-segment, no segment ending in `.` or
///   beginning/ending with a space, no empty segment (`//`) except a single trailing slash, no
///   `\`, `;`, `?` or `#`, no control characters, no non-ASCII character, no still-valid `%XX`
///   escape (so no `%2F`);
/// - the raw path and the normalized one have the same letters, digits, `-`, `.`, `_` and `/`
///   (escapes skipped in the raw one): what HAProxy routes on is what the rules judge;
/// - normalizing is idempotent when the result has nothing a second pass would reinterpret (a
///   decoded `%`, `?` or `#`);
/// - a single trailing slash never changes which rule matches;
/// - the deny rule matches regardless of ASCII case, and (its patterns ending in `/**`) also
///   matches every path below a path it matches.
pub fn path_match(data: &[u8]) -> Option<(String, PathDecision)> {
    let raw = std::str::from_utf8(data).ok()?;
    let p = normalize_path(raw).ok()?;
    let p: &str = &p;
    assert!(p.starts_with('/') && p.len() <= MAX_PATH_BYTES);
    let body = p.strip_suffix('/').unwrap_or(p);
    assert!(!body.contains("//"), "empty segment in {p:?}");
    for seg in p.split('/') {
        assert!(seg != "." && seg != "..", "dot-segment in {p:?}");
        assert!(!seg.ends_with('.'), "trailing dot in {p:?}");
        assert!(
            !seg.starts_with(' ') && !seg.ends_with(' '),
            "edge space in {p:?}"
        );
    }
    assert!(!has_escape(p), "escape left in {p:?}");
    // `\`, `;`, `?` and `#` are refused raw and encoded (a raw `?` ends the path).
    assert!(!p.contains(['\\', ';', '?', '#']));
    assert!(p.is_ascii(), "non-ASCII in {p:?}");
    assert_eq!(
        routing_chars(raw, true),
        routing_chars(p, false),
        "{raw:?} -> {p:?}"
    );
    assert!(
        !p.chars().any(|c| c.is_control()),
        "control character in {p:?}"
    );
    if !p.contains('%') {
        assert_eq!(normalize_path(p), Ok(Cow::Borrowed(p)), "not idempotent");
    }

    let d = decide(p);
    if p != "/" {
        let other = if p.ends_with('/') {
            body.to_owned()
        } else {
            format!("{p}/")
        };
        assert_eq!(d, decide(&other), "trailing slash changed the match: {p:?}");
    }
    let is_denied = matches!(d.1, Some((false, _)));
    assert_eq!(is_denied, denied(&p.to_ascii_uppercase()), "case: {p:?}");
    assert_eq!(is_denied, denied(&p.to_ascii_lowercase()), "case: {p:?}");
    if is_denied {
        assert!(
            denied(&format!("{body}/x")),
            "deny does not cover below {p:?}"
        );
    }
    Some((p.to_owned(), d))
}

/// Serving request bodies (`idgate::payload`, docs/payload.md) on arbitrary bytes. Returns the
/// input format found, or the refusal's message. Invariants:
/// - the refusal message is header-safe (no control characters) and capped;
/// - an accepted body names one of the input formats, and is a JSON object holding that key;
/// - strict JSON agrees with serde_json on bodies without non-finite numbers: whatever
///   serde_json accepts is accepted too unless it has a duplicate key or nests deeper than the
///   bound, and whatever is accepted without `NaN`/`Infinity` or a number beyond f64's range
///   serde_json accepts;
/// - the check without a schema (which only scans the body) judges exactly as the check with
///   a schema that accepts everything (which parses it into a `Value`): same format, or same
///   refusal, path and message.
pub fn payload_check(data: &[u8]) -> Result<&'static str, String> {
    use idgate::payload::{check_json, formats, json, Outcome, Problem, Schema};

    static ACCEPT_ALL: std::sync::LazyLock<Schema> = std::sync::LazyLock::new(|| {
        Schema::compile("all", serde_json::json!({})).expect("{} is a schema")
    });
    let result = check_json(data, None);
    assert_eq!(
        result,
        check_json(data, Some(&ACCEPT_ALL)),
        "scanning and parsing disagree"
    );
    if let Err(p) = &result {
        let msg = Outcome::Invalid(p.clone())
            .message()
            .expect("a refusal has a message");
        assert!(!msg.is_empty() && msg.len() <= 1024, "{msg:?}");
        assert!(!msg.chars().any(char::is_control), "{msg:?}");
    }
    let strict = json::parse(data, json::MAX_DEPTH);
    let loose = serde_json::from_slice::<serde_json::Value>(data);
    let non_finite =
        data.windows(3).any(|w| w == b"NaN") || data.windows(8).any(|w| w == b"Infinity");
    match (&strict, &loose) {
        (Err(Problem { message, .. }), Ok(_)) => assert!(
            message == "duplicate key" || message.starts_with("nested deeper than"),
            "serde_json accepts what strict JSON refused: {message}"
        ),
        // A number beyond f64's range (`1e999`) is valid JSON that serde_json refuses; Python's
        // json (MLflow's scoring server) reads it as infinity, and so may the check.
        (Ok(_), Err(e)) => assert!(
            non_finite || e.is_eof() || e.to_string().starts_with("number out of range"),
            "strict JSON accepted what serde_json refuses: {e}"
        ),
        _ => {}
    }
    match result {
        Ok(format) => {
            assert!(formats::FORMATS.contains(&format));
            let v = strict.expect("an accepted body parses");
            assert!(v.get(format).is_some(), "{format} missing");
            Ok(format)
        }
        Err(p) => Err(p.to_string()),
    }
}
