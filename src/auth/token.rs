//! The pure half of token validation: structure, the JOSE header, the claims. No I/O and no
//! clock (callers pass `now`), so every rejection rule is unit-testable in isolation.
//!
//! Why we parse the header and the payload ourselves although `jsonwebtoken` does too: its
//! `Header` silently ignores `crit`, keeps `jku`/`jwk`/`x5u` for the caller to (mis)use, and its
//! claim checks let a missing or mistyped `aud`/`iss` through unless told otherwise
//! (identity-and-databricks.md §6.4-6.5). serde_json's `Map` silently keeps the last of two
//! duplicate names (RFC 7519 §4 says reject or take the last; we reject). So the strict rules
//! live here, and they are the only claim and header checks: `jsonwebtoken` is used for the
//! signature alone (see the module docs of `auth`).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::decision::{Identity, Reason, Rejection};

/// Longest `kid` we look up. Real IdPs use 20-64 characters (thumbprints, UUIDs); the cap
/// keeps a hostile header from making us hash or log kilobytes (RFC 8725 §3.10).
pub const MAX_KID_BYTES: usize = 256;

/// Longest `typ` / `alg` we bother comparing.
const MAX_SHORT_PARAM_BYTES: usize = 64;

/// Header parameters that point at keys or certificates. We never fetch or trust them (keys
/// come only from the configured issuer's JWKS, RFC 8725 §3.10), and a token carrying one is
/// refused as `unsupported_token`: a legitimate IdP access token has no reason to embed its own
/// key, and accepting-but-ignoring would hide an attack attempt from the logs.
const KEY_REFERENCE_PARAMS: &[&str] = &["jku", "jwk", "x5u", "x5c"];

/// Header parameters of features we do not implement: unencoded payloads (RFC 7797 `b64`),
/// compression and encryption (JWE). Refused as `unsupported_token`.
const UNSUPPORTED_PARAMS: &[&str] = &["b64", "zip", "enc", "epk", "p2s", "p2c"];

/// Registered header parameters we do not use but whose value must be a string when present
/// (RFC 7515 §4.1.7-8 certificate thumbprints, RFC 8555 §6.4 `url`/`nonce`). A mistyped one
/// means a broken or hand-crafted header: `malformed_token` (`null` counts as absent, as it
/// did while `jsonwebtoken` parsed the header a second time).
const STRING_PARAMS: &[&str] = &["x5t", "x5t#S256", "url", "nonce"];

/// The checked JOSE header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// A token whose structure and header passed, with its decoded (not yet parsed) payload.
#[derive(Debug)]
pub struct Parsed {
    pub header: Header,
    payload: Vec<u8>,
    /// Length of `header.payload` (the JWS signing input) in the parsed token.
    signing_input_len: usize,
}

impl Parsed {
    /// The JWS signing input (`header.payload`, RFC 7515 §5.2) and the base64url signature of
    /// `raw`, which must be the token this was parsed from.
    pub fn signing_input_and_signature<'a>(&self, raw: &'a str) -> (&'a str, &'a str) {
        let (input, rest) = raw.split_at(self.signing_input_len);
        (input, rest.strip_prefix('.').unwrap_or(rest))
    }

    /// The payload's claims: the registered ones validation reads and those in `selection`;
    /// every other member is still parsed (syntax, duplicate names at any depth) but dropped.
    pub fn claims<'a>(&'a self, selection: &'a ClaimSelection) -> Result<Claims<'a>, Rejection> {
        match parse_strict_seed(&self.payload, PayloadSeed(selection)) {
            Ok(c) => Ok(c),
            Err(JsonError::Duplicate) => Err(Rejection::new(
                Reason::ClaimInvalid,
                "duplicate claim name in payload",
            )),
            Err(JsonError::Invalid) => Err(Rejection::new(
                Reason::MalformedToken,
                "payload is not a JSON object",
            )),
        }
    }
}

/// Algorithms that may ever be accepted, by their exact (case-sensitive) JOSE name. HMAC is
/// absent on purpose: a JWKS issuer never legitimately signs with a shared secret, and allowing
/// it is the RS/HS key-confusion attack (RFC 8725 §2.1). `none` is absent for obvious reasons.
pub fn algorithm_from_name(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

/// Structural checks, the header, and the payload's base64url. `max_bytes` is checked before
/// anything is decoded. The payload JSON is read by [`Parsed::claims`].
pub fn parse(token: &str, max_bytes: usize) -> Result<Parsed, Rejection> {
    if token.len() > max_bytes {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "token larger than auth.max_token_bytes",
        ));
    }
    let (dots, alphabet_ok) = scan(token.as_bytes());
    if dots == 4 {
        return Err(Rejection::new(
            Reason::UnsupportedToken,
            "encrypted tokens (JWE) are not supported",
        ));
    }
    if dots != 2 {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "not a compact JWS (three dot-separated parts)",
        ));
    }
    if !alphabet_ok {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "token contains characters outside base64url",
        ));
    }
    let mut parts = token.splitn(3, '.');
    let (h, p, s) = match (parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s)) => (h, p, s),
        _ => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "not a compact JWS (three dot-separated parts)",
            ))
        }
    };
    if h.is_empty() || p.is_empty() {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "empty token header or payload",
        ));
    }
    let header = parse_header(h)?;
    // `alg` is judged before the empty-signature check so that `alg: none` tokens (which carry
    // an empty signature) are reported as what they are.
    if s.is_empty() {
        return Err(Rejection::new(Reason::MalformedToken, "empty signature"));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| Rejection::new(Reason::MalformedToken, "payload is not valid base64url"))?;
    Ok(Parsed {
        header,
        payload,
        signing_input_len: h.len() + 1 + p.len(),
    })
}

/// One pass over the bytes: the number of dots, and whether every other byte is in the
/// base64url alphabet (RFC 7515 §7.1; padding `=` is not allowed in compact JWS).
///
/// Written as branch-free range tests over 64-byte blocks so the compiler can use SIMD
/// compares: the byte-class table lookup it replaces was the largest item of `parse` under
/// `perf` (it runs over the whole ~1 KiB token, signature included).
fn scan(bytes: &[u8]) -> (usize, bool) {
    let mut dots = 0usize;
    let mut bad = 0u8;
    for block in bytes.chunks(64) {
        let (mut block_dots, mut block_bad) = (0u8, 0u8);
        for &b in block {
            let dot = u8::from(b == b'.');
            let ok = u8::from(b.wrapping_sub(b'A') < 26)
                | u8::from(b.wrapping_sub(b'a') < 26)
                | u8::from(b.wrapping_sub(b'0') < 10)
                | u8::from(b == b'-')
                | u8::from(b == b'_')
                | dot;
            block_dots += dot;
            block_bad |= ok ^ 1;
        }
        dots += usize::from(block_dots);
        bad |= block_bad;
    }
    (dots, bad == 0)
}

fn parse_header(encoded: &str) -> Result<Header, Rejection> {
    let raw = URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| Rejection::new(Reason::MalformedToken, "header is not valid base64url"))?;
    let obj: RawHeader = match parse_strict(&raw) {
        Ok(h) => h,
        Err(JsonError::Duplicate) => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "duplicate header parameter",
            ))
        }
        Err(JsonError::Invalid) => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "header is not a JSON object",
            ))
        }
    };
    let alg = match &obj.alg {
        Param::Str(a) if a.len() <= MAX_SHORT_PARAM_BYTES => a,
        _ => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "header alg missing or not a string",
            ))
        }
    };
    let Some(alg) = algorithm_from_name(alg) else {
        return Err(Rejection::new(
            Reason::AlgNotAllowed,
            "signature algorithm not allowed",
        ));
    };
    if obj.crit {
        // RFC 7515 §4.1.11: a recipient MUST reject a token whose `crit` lists an extension it
        // does not understand; we understand none, so any `crit` is refused.
        return Err(Rejection::new(
            Reason::ClaimInvalid,
            "critical header extensions are not supported",
        ));
    }
    if obj.key_reference {
        return Err(Rejection::new(
            Reason::UnsupportedToken,
            "embedded or remote key references (jku, jwk, x5u, x5c) are not accepted",
        ));
    }
    if obj.unsupported {
        return Err(Rejection::new(
            Reason::UnsupportedToken,
            "unsupported JOSE header parameter",
        ));
    }
    if obj.mistyped_string_param {
        return Err(Rejection::new(
            Reason::MalformedToken,
            "header parameter is not a string",
        ));
    }
    match &obj.cty {
        Param::Absent => {}
        Param::Str(c) if !c.eq_ignore_ascii_case("JWT") => {}
        _ => {
            return Err(Rejection::new(
                Reason::UnsupportedToken,
                "nested tokens are not supported",
            ))
        }
    }
    let kid = match obj.kid {
        Param::Absent => None,
        Param::Str(k) if valid_kid(&k) => Some(k),
        _ => {
            return Err(Rejection::new(
                Reason::MalformedToken,
                "header kid is not a short printable string",
            ))
        }
    };
    let typ = match obj.typ {
        Param::Absent => None,
        Param::Str(t) if t.len() <= MAX_SHORT_PARAM_BYTES => Some(t),
        _ => {
            return Err(Rejection::new(
                Reason::UnsupportedToken,
                "header typ is not an accepted token type",
            ))
        }
    };
    Ok(Header { alg, kid, typ })
}

/// A header parameter's value, as far as the header rules look at it.
#[derive(Debug, Default)]
enum Param {
    #[default]
    Absent,
    Null,
    Str(String),
    /// A number, a boolean, an array or an object.
    Other,
}

/// The JOSE header reduced to what the rules need, read in one pass without building a
/// `serde_json::Value` tree (the header is parsed for every first-seen token). Every member,
/// kept or not, is still checked for duplicate names at any depth.
#[derive(Debug, Default)]
struct RawHeader {
    alg: Param,
    kid: Param,
    typ: Param,
    cty: Param,
    crit: bool,
    /// One of [`KEY_REFERENCE_PARAMS`] is present.
    key_reference: bool,
    /// One of [`UNSUPPORTED_PARAMS`] is present.
    unsupported: bool,
    /// One of [`STRING_PARAMS`] is present with a value that is neither a string nor null.
    mistyped_string_param: bool,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawHeaderVisitor)
    }
}

struct RawHeaderVisitor;

impl<'de> Visitor<'de> for RawHeaderVisitor {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let mut h = RawHeader::default();
        let mut seen = SeenKeys::default();
        while let Some(Key(k)) = map.next_key()? {
            let slot = match &*k {
                "alg" => Some(&mut h.alg),
                "kid" => Some(&mut h.kid),
                "typ" => Some(&mut h.typ),
                "cty" => Some(&mut h.cty),
                _ => None,
            };
            if let Some(slot) = slot {
                *slot = map.next_value::<ParamValue>()?.0;
            } else if STRING_PARAMS.contains(&&*k) {
                // `null` counts as absent (see STRING_PARAMS).
                h.mistyped_string_param |=
                    matches!(map.next_value::<ParamValue>()?.0, Param::Other);
            } else {
                map.next_value::<StrictIgnored>()?;
                h.crit |= &*k == "crit";
                h.key_reference |= KEY_REFERENCE_PARAMS.contains(&&*k);
                h.unsupported |= UNSUPPORTED_PARAMS.contains(&&*k);
            }
            seen.insert(k)?;
        }
        Ok(h)
    }
}
/// An object member name, borrowed from the input when it has no escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The member names of one object so far; inserting one twice is the duplicate-name error.
/// The first few live in a list on the stack (most objects are small, and this runs for every
/// object of every first-seen token); past that a set, so that a hostile object with
/// thousands of members stays linear-ish.
#[derive(Default)]
struct SeenKeys<'de> {
    few: [Option<Cow<'de, str>>; SEEN_INLINE],
    many: BTreeSet<Cow<'de, str>>,
}

const SEEN_INLINE: usize = 8;

impl<'de> SeenKeys<'de> {
    fn insert<E: de::Error>(&mut self, k: Cow<'de, str>) -> Result<(), E> {
        let duplicate = || E::custom(DUPLICATE_KEY);
        if self.many.is_empty() {
            for slot in &mut self.few {
                match slot {
                    Some(seen) if *seen == k => return Err(duplicate()),
                    Some(_) => {}
                    None => {
                        *slot = Some(k);
                        return Ok(());
                    }
                }
            }
            // The list is full: everything moves to the set, which is used from now on.
            self.many
                .extend(self.few.iter_mut().filter_map(Option::take));
        }
        if self.many.insert(k) {
            Ok(())
        } else {
            Err(duplicate())
        }
    }
}

/// A header parameter value reduced to a [`Param`]; arrays and objects are still walked for
/// duplicate names.
struct ParamValue(Param);

impl<'de> Deserialize<'de> for ParamValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ParamValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<ParamValue, E> {
                Ok(ParamValue(Param::Other))
            }
            fn visit_i64<E>(self, _: i64) -> Result<ParamValue, E> {
                Ok(ParamValue(Param::Other))
            }
            fn visit_u64<E>(self, _: u64) -> Result<ParamValue, E> {
                Ok(ParamValue(Param::Other))
            }
            fn visit_f64<E>(self, _: f64) -> Result<ParamValue, E> {
                Ok(ParamValue(Param::Other))
            }
            fn visit_str<E>(self, v: &str) -> Result<ParamValue, E> {
                Ok(ParamValue(Param::Str(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<ParamValue, E> {
                Ok(ParamValue(Param::Str(v)))
            }
            fn visit_unit<E>(self) -> Result<ParamValue, E> {
                Ok(ParamValue(Param::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ParamValue, A::Error> {
                StrictIgnoredVisitor.visit_seq(seq)?;
                Ok(ParamValue(Param::Other))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ParamValue, A::Error> {
                StrictIgnoredVisitor.visit_map(map)?;
                Ok(ParamValue(Param::Other))
            }
        }
        d.deserialize_any(V)
    }
}

/// Any JSON value, discarded, but refusing duplicate object member names at any depth.
struct StrictIgnored;

impl<'de> Deserialize<'de> for StrictIgnored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictIgnoredVisitor)
    }
}

struct StrictIgnoredVisitor;

impl<'de> Visitor<'de> for StrictIgnoredVisitor {
    type Value = StrictIgnored;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<StrictIgnored, E> {
        Ok(StrictIgnored)
    }
    fn visit_i64<E>(self, _: i64) -> Result<StrictIgnored, E> {
        Ok(StrictIgnored)
    }
    fn visit_u64<E>(self, _: u64) -> Result<StrictIgnored, E> {
        Ok(StrictIgnored)
    }
    fn visit_f64<E>(self, _: f64) -> Result<StrictIgnored, E> {
        Ok(StrictIgnored)
    }
    fn visit_str<E>(self, _: &str) -> Result<StrictIgnored, E> {
        Ok(StrictIgnored)
    }
    fn visit_unit<E>(self) -> Result<StrictIgnored, E> {
        Ok(StrictIgnored)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictIgnored, A::Error> {
        while seq.next_element::<StrictIgnored>()?.is_some() {}
        Ok(StrictIgnored)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictIgnored, A::Error> {
        let mut seen = SeenKeys::default();
        while let Some(Key(k)) = map.next_key()? {
            seen.insert(k)?;
            map.next_value::<StrictIgnored>()?;
        }
        Ok(StrictIgnored)
    }
}

/// `kid`: 1..=256 bytes of printable ASCII without spaces. It is only ever used as a map key
/// into the issuer's cached JWKS (never a path, URL or query), but bounding it keeps logs and
/// lookups cheap and rules out control characters in log lines.
pub fn valid_kid(k: &str) -> bool {
    !k.is_empty() && k.len() <= MAX_KID_BYTES && k.bytes().all(|b| b.is_ascii_graphic())
}

/// `typ` comparison per RFC 7515 §4.1.9: case-insensitive, and the `application/` prefix may be
/// omitted, so `at+jwt` and `application/at+JWT` are the same type.
pub fn typ_matches(token_typ: &str, allowed: &str) -> bool {
    fn strip(s: &str) -> &str {
        const P: &str = "application/";
        if s.len() > P.len() && s[..P.len()].eq_ignore_ascii_case(P) {
            &s[P.len()..]
        } else {
            s
        }
    }
    strip(token_typ).eq_ignore_ascii_case(strip(allowed))
}

#[derive(Debug, PartialEq, Eq)]
enum JsonError {
    Duplicate,
    Invalid,
}

const DUPLICATE_KEY: &str = "duplicate object key";

/// Deserialize with one of the duplicate-refusing visitors of this module.
fn parse_strict<'de, T: Deserialize<'de>>(bytes: &'de [u8]) -> Result<T, JsonError> {
    parse_strict_seed(bytes, PhantomData::<T>)
}

/// [`parse_strict`] for a stateful visitor.
fn parse_strict_seed<'de, S: DeserializeSeed<'de>>(
    bytes: &'de [u8],
    seed: S,
) -> Result<S::Value, JsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
        Ok(v) => Ok(v),
        // Our visitors accept every JSON shape they are given (or fail with a type error, which
        // never starts like this), so this is the duplicate-key error; everything else is a
        // syntax/EOF/shape error.
        Err(e) if e.is_data() && e.to_string().starts_with(DUPLICATE_KEY) => {
            Err(JsonError::Duplicate)
        }
        Err(_) => Err(JsonError::Invalid),
    }
}

/// The registered claims validation reads, in [`Claims::registered`] order.
const REGISTERED: [&str; 8] = ["iss", "sub", "aud", "exp", "nbf", "iat", "scope", "scp"];
const ISS: usize = 0;
const SUB: usize = 1;
const AUD: usize = 2;
const EXP: usize = 3;
const NBF: usize = 4;
const IAT: usize = 5;
const SCOPE: usize = 6;
const SCP: usize = 7;

fn registered_index(name: &str) -> Option<usize> {
    Some(match name {
        "iss" => ISS,
        "sub" => SUB,
        "aud" => AUD,
        "exp" => EXP,
        "nbf" => NBF,
        "iat" => IAT,
        "scope" => SCOPE,
        "scp" => SCP,
        _ => return None,
    })
}

/// The top-level claims, beyond [`REGISTERED`], that the payload parser keeps: what the
/// issuers' `email_claim` / `groups_claim` paths can reach, and the claims an identity keeps
/// for the rules (`auth::claims_read_by_rules`). Built once per configuration.
///
/// A typical access token carries a dozen claims of which validation reads half; the others
/// (`jti`, `client_id`, `name`, ...) are checked for syntax and duplicate names but never
/// allocated. With the kept strings borrowed from the payload ([`ClaimValue`]), reading the
/// claims of the bench's 1 KiB token takes ~1.2 µs instead of ~2 µs for a `serde_json` map of
/// all of them (most of that was allocation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimSelection {
    /// Sorted, without duplicates and without registered names.
    names: Vec<String>,
    /// Top-level names (registered or in `names`) an [`Identity`] keeps in `claims`.
    kept: Vec<String>,
}

impl ClaimSelection {
    /// `paths`: the issuers' email and groups claim paths (a path names either a top-level
    /// claim, dots included, or a nested one by its segments; both are kept). `kept`: the
    /// top-level claims an identity keeps.
    pub fn new<'a>(
        paths: impl IntoIterator<Item = &'a str>,
        kept: impl IntoIterator<Item = &'a str>,
    ) -> ClaimSelection {
        let kept: BTreeSet<&str> = kept.into_iter().collect();
        let mut names = BTreeSet::new();
        for p in paths {
            names.insert(p);
            if let Some((first, _)) = p.split_once('.') {
                names.insert(first);
            }
        }
        names.extend(kept.iter().copied());
        ClaimSelection {
            names: names
                .into_iter()
                .filter(|n| registered_index(n).is_none())
                .map(str::to_owned)
                .collect(),
            kept: kept.into_iter().map(str::to_owned).collect(),
        }
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok()
    }
}

/// A kept claim value. The shapes validation reads (strings and arrays of strings) borrow from
/// the decoded payload, so a first-seen token allocates only what its identity keeps; anything
/// else becomes a `serde_json::Value`.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimValue<'a> {
    Str(Cow<'a, str>),
    /// An array whose elements are all strings (possibly empty).
    Strs(Vec<Cow<'a, str>>),
    Num(Number),
    /// `null`, a boolean, an object, or an array with a non-string element.
    Json(Value),
}

impl ClaimValue<'_> {
    /// As a JSON value (for the claims an identity keeps).
    pub fn to_value(&self) -> Value {
        match self {
            ClaimValue::Str(s) => Value::String(s.to_string()),
            ClaimValue::Strs(v) => v.iter().map(|s| Value::String(s.to_string())).collect(),
            ClaimValue::Num(n) => Value::Number(n.clone()),
            ClaimValue::Json(v) => v.clone(),
        }
    }
}

impl<'de> Deserialize<'de> for ClaimValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ClaimValueVisitor)
    }
}

struct ClaimValueVisitor;

impl<'de> Visitor<'de> for ClaimValueVisitor {
    type Value = ClaimValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<ClaimValue<'de>, E> {
        Ok(ClaimValue::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<ClaimValue<'de>, E> {
        Ok(ClaimValue::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<ClaimValue<'de>, E> {
        Ok(ClaimValue::Str(Cow::Owned(v)))
    }
    fn visit_bool<E>(self, v: bool) -> Result<ClaimValue<'de>, E> {
        Ok(ClaimValue::Json(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<ClaimValue<'de>, E> {
        Ok(ClaimValue::Num(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<ClaimValue<'de>, E> {
        Ok(ClaimValue::Num(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ClaimValue<'de>, E> {
        match StrictVisitor.visit_f64(v)? {
            Value::Number(n) => Ok(ClaimValue::Num(n)),
            other => Ok(ClaimValue::Json(other)),
        }
    }
    fn visit_unit<E>(self) -> Result<ClaimValue<'de>, E> {
        Ok(ClaimValue::Json(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClaimValue<'de>, A::Error> {
        let mut strs = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(e) = seq.next_element::<ClaimValue<'de>>()? {
            match e {
                ClaimValue::Str(s) => strs.push(s),
                other => {
                    // Mixed array: the rest as plain JSON values.
                    let mut all: Vec<Value> = strs
                        .into_iter()
                        .map(|s| Value::String(s.into_owned()))
                        .collect();
                    all.push(other.to_value());
                    while let Some(StrictValue(v)) = seq.next_element()? {
                        all.push(v);
                    }
                    return Ok(ClaimValue::Json(Value::Array(all)));
                }
            }
        }
        Ok(ClaimValue::Strs(strs))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ClaimValue<'de>, A::Error> {
        StrictVisitor.visit_map(map).map(ClaimValue::Json)
    }
}

/// A claim found by path: a top-level claim, or a value nested in one.
#[derive(Debug, Clone, Copy)]
enum Found<'c, 'a> {
    Top(&'c ClaimValue<'a>),
    Nested(&'c Value),
}

impl Found<'_, '_> {
    /// A string, or nothing for `null`.
    fn string(self) -> Result<Option<String>, ()> {
        match self {
            Found::Top(ClaimValue::Str(s)) => Ok(Some(s.to_string())),
            Found::Top(ClaimValue::Json(v)) | Found::Nested(v) => match v {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(()),
            },
            Found::Top(_) => Err(()),
        }
    }

    /// A string or an array of strings (a string split on spaces with `split_spaces`);
    /// nothing for `null`.
    fn strings(self, split_spaces: bool) -> Result<Vec<String>, ()> {
        let one = |s: &str| -> Vec<String> {
            if split_spaces {
                s.split(' ')
                    .filter(|p| !p.is_empty())
                    .map(str::to_owned)
                    .collect()
            } else {
                vec![s.to_owned()]
            }
        };
        match self {
            Found::Top(ClaimValue::Str(s)) => Ok(one(s)),
            Found::Top(ClaimValue::Strs(v)) => Ok(v.iter().map(|s| s.to_string()).collect()),
            Found::Top(ClaimValue::Num(_)) => Err(()),
            Found::Top(ClaimValue::Json(v)) | Found::Nested(v) => match v {
                Value::Null => Ok(Vec::new()),
                Value::String(s) => Ok(one(s)),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map(str::to_owned).ok_or(()))
                    .collect(),
                _ => Err(()),
            },
        }
    }
}

/// `_claim_names` (OpenID Connect Core §5.6.2): the claims the issuer left out of the token
/// (distributed or aggregated claims), by name. Entra ID sends `{"groups": "src1"}` there when
/// a user is in more groups than fit in a token ("group overage").
const CLAIM_NAMES: &str = "_claim_names";
/// Entra ID v1's overage indication in implicit-flow tokens: `"hasgroups": true` instead of
/// `groups`.
const HAS_GROUPS: &str = "hasgroups";
/// The claim [`HAS_GROUPS`] speaks about.
const GROUPS: &str = "groups";

/// The member names of a `_claim_names` object; only they matter (the values point into
/// `_claim_sources`, which idgate never fetches).
#[derive(Debug, Clone, PartialEq)]
enum ClaimNames<'a> {
    Names(Vec<Cow<'a, str>>),
    /// `_claim_names` is present but not an object.
    NotAnObject,
}

impl<'de> Deserialize<'de> for ClaimNames<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ClaimNames<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<ClaimNames<'de>, E> {
                Ok(ClaimNames::NotAnObject)
            }
            fn visit_i64<E>(self, _: i64) -> Result<ClaimNames<'de>, E> {
                Ok(ClaimNames::NotAnObject)
            }
            fn visit_u64<E>(self, _: u64) -> Result<ClaimNames<'de>, E> {
                Ok(ClaimNames::NotAnObject)
            }
            fn visit_f64<E>(self, _: f64) -> Result<ClaimNames<'de>, E> {
                Ok(ClaimNames::NotAnObject)
            }
            fn visit_str<E>(self, _: &str) -> Result<ClaimNames<'de>, E> {
                Ok(ClaimNames::NotAnObject)
            }
            fn visit_unit<E>(self) -> Result<ClaimNames<'de>, E> {
                Ok(ClaimNames::NotAnObject)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ClaimNames<'de>, A::Error> {
                StrictIgnoredVisitor.visit_seq(seq)?;
                Ok(ClaimNames::NotAnObject)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClaimNames<'de>, A::Error> {
                let mut seen = SeenKeys::default();
                let mut names = Vec::new();
                while let Some(Key(k)) = map.next_key()? {
                    map.next_value::<StrictIgnored>()?;
                    seen.insert(k.clone())?;
                    names.push(k);
                }
                Ok(ClaimNames::Names(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// A token's claims as far as validation and the rules read them (see [`ClaimSelection`]),
/// borrowing from the decoded payload.
#[derive(Debug)]
pub struct Claims<'a> {
    registered: [Option<ClaimValue<'a>>; REGISTERED.len()],
    /// By index into `selection.names`.
    selected: Vec<Option<ClaimValue<'a>>>,
    selection: &'a ClaimSelection,
    /// `_claim_names`, when present (and not itself selected by a rule).
    claim_names: Option<ClaimNames<'a>>,
    /// `hasgroups`, when present (and not itself selected by a rule): whether it is `true`.
    has_groups: Option<bool>,
}

impl<'a> Claims<'a> {
    fn new(selection: &'a ClaimSelection) -> Claims<'a> {
        Claims {
            registered: Default::default(),
            selected: vec![None; selection.names.len()],
            selection,
            claim_names: None,
            has_groups: None,
        }
    }

    /// The names in `_claim_names` (empty when absent; `Err` when it is not an object). Read from
    /// the selected claim when a rule reads `_claim_names` itself.
    fn left_out_names(&self) -> Result<Vec<&str>, ()> {
        match (&self.claim_names, self.get(CLAIM_NAMES)) {
            (Some(ClaimNames::Names(n)), _) => Ok(n.iter().map(|n| &**n).collect()),
            (Some(ClaimNames::NotAnObject), _) => Err(()),
            (None, None) => Ok(Vec::new()),
            (None, Some(ClaimValue::Json(Value::Object(m)))) => {
                Ok(m.keys().map(String::as_str).collect())
            }
            (None, Some(_)) => Err(()),
        }
    }

    /// Whether the token says `"hasgroups": true`.
    fn has_groups(&self) -> bool {
        self.has_groups.unwrap_or_else(|| {
            matches!(
                self.get(HAS_GROUPS),
                Some(ClaimValue::Json(Value::Bool(true)))
            )
        })
    }

    fn slot(&mut self, name: &str) -> Option<&mut Option<ClaimValue<'a>>> {
        match registered_index(name) {
            Some(i) => Some(&mut self.registered[i]),
            None => self.selection.index(name).map(|i| &mut self.selected[i]),
        }
    }

    /// A top-level claim by name.
    pub fn get(&self, name: &str) -> Option<&ClaimValue<'a>> {
        match registered_index(name) {
            Some(i) => self.registered[i].as_ref(),
            None => self.selected[self.selection.index(name)?].as_ref(),
        }
    }

    /// The unverified `iss`, when it is a string.
    pub fn iss(&self) -> Option<&str> {
        match &self.registered[ISS] {
            Some(ClaimValue::Str(s)) => Some(s),
            _ => None,
        }
    }

    /// A claim by path: the top-level claim of that exact name (namespaced claims such as
    /// `https://example.com/roles` contain dots), else the nested one the dotted path walks to
    /// (`realm_access.roles`). The rules' `claims` conditions look claims up the same way.
    fn path(&self, path: &str) -> Option<Found<'_, 'a>> {
        if let Some(v) = self.get(path) {
            return Some(Found::Top(v));
        }
        let (first, rest) = path.split_once('.')?;
        let ClaimValue::Json(top) = self.get(first)? else {
            return None;
        };
        let mut cur = top;
        for p in rest.split('.') {
            cur = cur.as_object()?.get(p)?;
        }
        Some(Found::Nested(cur))
    }
}

/// Reads the payload into [`Claims`]: registered and selected claims as values, every other
/// member parsed and dropped; duplicate names refused at any depth.
struct PayloadSeed<'a>(&'a ClaimSelection);

impl<'a> DeserializeSeed<'a> for PayloadSeed<'a> {
    type Value = Claims<'a>;

    fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<Claims<'a>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'a> Visitor<'a> for PayloadSeed<'a> {
    type Value = Claims<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }
    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<Claims<'a>, A::Error> {
        let mut claims = Claims::new(self.0);
        // Kept names are unique by their slots; the dropped ones need a set of their own.
        let mut dropped = SeenKeys::default();
        while let Some(Key(k)) = map.next_key()? {
            match claims.slot(&k) {
                Some(Some(_)) => return Err(de::Error::custom(DUPLICATE_KEY)),
                Some(slot) => *slot = Some(map.next_value()?),
                // The overage indications: kept whatever the selection (only their names or
                // truth value), so that a left-out claim is never mistaken for an absent one.
                None if k == CLAIM_NAMES => {
                    if claims.claim_names.is_some() {
                        return Err(de::Error::custom(DUPLICATE_KEY));
                    }
                    claims.claim_names = Some(map.next_value()?);
                }
                None if k == HAS_GROUPS => {
                    if claims.has_groups.is_some() {
                        return Err(de::Error::custom(DUPLICATE_KEY));
                    }
                    let v: ClaimValue<'a> = map.next_value()?;
                    claims.has_groups = Some(matches!(v, ClaimValue::Json(Value::Bool(true))));
                }
                None => {
                    map.next_value::<StrictIgnored>()?;
                    dropped.insert(k)?;
                }
            }
        }
        Ok(claims)
    }
}

/// A `serde_json::Value` that refuses duplicate object keys while it is being built.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(StrictValue(e)) = seq.next_element()? {
            v.push(e);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            match m.entry(k) {
                serde_json::map::Entry::Occupied(_) => {
                    return Err(de::Error::custom(DUPLICATE_KEY));
                }
                serde_json::map::Entry::Vacant(slot) => {
                    let StrictValue(v) = map.next_value()?;
                    slot.insert(v);
                }
            }
        }
        Ok(Value::Object(m))
    }
}

/// Per-issuer claim rules, derived once from the `[[issuer]]` section.
#[derive(Debug, Clone)]
pub struct ClaimRules {
    /// The configured issuer `name` (goes into [`Identity::issuer`]).
    pub name: Arc<str>,
    /// The exact `iss` value.
    pub issuer: String,
    pub audiences: HashSet<String>,
    pub leeway: u64,
    pub max_lifetime: u64,
    pub email_claim: String,
    pub groups_claim: String,
}

/// How a fractional NumericDate is rounded: always in the direction that makes the token
/// *less* acceptable (exp down, nbf/iat up).
#[derive(Clone, Copy)]
enum Round {
    Down,
    Up,
}

/// `Ok(None)`: absent. `Err`: present but not a non-negative number.
fn numeric_date(v: Option<&ClaimValue<'_>>, round: Round) -> Result<Option<u64>, ()> {
    let Some(v) = v else { return Ok(None) };
    let ClaimValue::Num(n) = v else {
        return Err(());
    };
    if let Some(u) = n.as_u64() {
        return Ok(Some(u));
    }
    match n.as_f64() {
        // 2^63: far beyond any real date; keeps the conversion exact-enough and the arithmetic
        // below free of overflow surprises.
        Some(f) if f.is_finite() && (0.0..9.2e18).contains(&f) => Ok(Some(match round {
            Round::Down => f.floor() as u64,
            Round::Up => f.ceil() as u64,
        })),
        _ => Err(()),
    }
}

/// Whether `name` (a top-level claim name) is what the claim path `path` reads: the whole path
/// (a namespaced top-level claim) or its first segment (a nested lookup).
fn path_reads(path: &str, name: &str) -> bool {
    path == name || path.split_once('.').is_some_and(|(first, _)| first == name)
}

/// Refuse a token whose issuer left out a claim idgate reads, instead of treating that claim as
/// absent: with Entra ID's group overage the token carries `_claim_names: {"groups": ...}` (or,
/// v1 implicit flow, `hasgroups: true`) instead of `groups`, and "no groups" would let the caller
/// past every deny rule keyed on a group. A claim is read when validation reads it (the
/// registered claims), when it is the issuer's `groups_claim` or `email_claim` (whole name or
/// first segment of a dotted path), or when a rule reads it (the selection's kept claims).
/// `_claim_names` entries nobody reads are fine. When neither indication is present this costs
/// two failed lookups and no allocation.
fn check_left_out(rules: &ClaimRules, claims: &Claims<'_>) -> Result<(), Rejection> {
    let bad = |d: &'static str| Rejection::new(Reason::ClaimInvalid, d);
    let names = claims
        .left_out_names()
        .map_err(|()| bad("_claim_names claim is not an object"))?;
    let rule_reads = |n: &str| claims.selection.kept.iter().any(|k| k == n);
    for n in names {
        if path_reads(&rules.groups_claim, n) {
            return Err(bad(
                "groups claim not in token (_claim_names: group overage; configure the IdP to emit groups as app roles or filtered groups)",
            ));
        }
        if path_reads(&rules.email_claim, n) {
            return Err(bad(
                "email claim not in token (_claim_names: distributed claim)",
            ));
        }
        if registered_index(n).is_some() {
            return Err(bad(
                "registered claim named in _claim_names (distributed claims are not supported)",
            ));
        }
        if rule_reads(n) {
            return Err(bad(
                "claim read by a rule not in token (_claim_names: distributed claim)",
            ));
        }
    }
    if claims.has_groups()
        && matches!(
            claims.get(GROUPS),
            None | Some(ClaimValue::Json(Value::Null))
        )
        && (path_reads(&rules.groups_claim, GROUPS) || rule_reads(GROUPS))
    {
        return Err(bad(
            "groups claim not in token (hasgroups: group overage; configure the IdP to emit groups as app roles or filtered groups)",
        ));
    }
    Ok(())
}

/// Check the (signature-verified) claims and build the [`Identity`]: `sub`, email, groups and
/// scopes, plus the claims the rules read ([`ClaimSelection`]'s kept names). Each string is
/// allocated once, here, for the identity; the claims only borrow from the payload.
///
/// Order: type checks of every claim we rely on (`claim_invalid`), then time (`expired`,
/// `not_yet_valid`), lifetime (`claim_invalid`), audience (`wrong_audience`), and the identity
/// claims: claims the issuer left out (`check_left_out`), email/groups/scope types, and
/// whether `sub`, email and groups can be passed on (`super::identity::check_identity`), all
/// `claim_invalid`. Missing or mistyped authorization-relevant claims (groups, email, scopes)
/// are refused rather than dropped: a `deny` rule keyed on a group must not be bypassed by
/// sending the group list in an unexpected shape, or not at all (Entra ID group overage).
pub fn check_claims(
    rules: &ClaimRules,
    claims: &Claims<'_>,
    now: u64,
) -> Result<Identity, Rejection> {
    let bad = |d: &'static str| Rejection::new(Reason::ClaimInvalid, d);
    let reg = &claims.registered;
    let exp = numeric_date(reg[EXP].as_ref(), Round::Down)
        .ok()
        .flatten()
        .ok_or_else(|| bad("exp claim missing or not a number"))?;
    let nbf =
        numeric_date(reg[NBF].as_ref(), Round::Up).map_err(|_| bad("nbf claim is not a number"))?;
    let iat =
        numeric_date(reg[IAT].as_ref(), Round::Up).map_err(|_| bad("iat claim is not a number"))?;
    if claims.iss() != Some(rules.issuer.as_str()) {
        return Err(bad("iss claim does not match the issuer"));
    }
    let sub = match &reg[SUB] {
        Some(ClaimValue::Str(s)) if !s.is_empty() => s,
        _ => return Err(bad("sub claim missing or not a string")),
    };
    let aud_ok = match &reg[AUD] {
        Some(ClaimValue::Str(a)) => rules.audiences.contains(&**a),
        Some(ClaimValue::Strs(items)) if !items.is_empty() => {
            items.iter().any(|a| rules.audiences.contains(&**a))
        }
        Some(ClaimValue::Json(Value::Array(items))) if !items.is_empty() => {
            return Err(bad("aud claim is not a string or an array of strings"))
        }
        _ => {
            return Err(bad(
                "aud claim missing or not a string or an array of strings",
            ))
        }
    };

    if now > exp.saturating_add(rules.leeway) {
        return Err(Rejection::new(Reason::Expired, "token expired"));
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(rules.leeway)) {
        return Err(Rejection::new(
            Reason::NotYetValid,
            "token not valid yet (nbf)",
        ));
    }
    if iat.is_some_and(|iat| iat > now.saturating_add(rules.leeway)) {
        return Err(Rejection::new(
            Reason::NotYetValid,
            "token issued in the future (iat)",
        ));
    }
    let lifetime = exp.saturating_sub(iat.unwrap_or(now));
    if lifetime > rules.max_lifetime {
        return Err(bad("token lifetime exceeds the allowed maximum"));
    }
    if !aud_ok {
        return Err(Rejection::new(
            Reason::WrongAudience,
            "token audience not accepted",
        ));
    }

    check_left_out(rules, claims)?;
    let email = match claims.path(&rules.email_claim) {
        None => None,
        Some(f) => f.string().map_err(|_| bad("email claim is not a string"))?,
    };
    let groups = match claims.path(&rules.groups_claim) {
        None => Vec::new(),
        Some(f) => f
            .strings(false)
            .map_err(|_| bad("groups claim is not a string or an array of strings"))?,
    };
    // `scope` when present (even as null), else `scp`.
    let scopes = match reg[SCOPE].as_ref().or(reg[SCP].as_ref()) {
        None => Vec::new(),
        Some(v) => Found::Top(v)
            .strings(true)
            .map_err(|_| bad("scope claim is not a string or an array of strings"))?,
    };
    super::identity::check_identity(sub, email.as_deref(), &groups)?;
    let kept = claims
        .selection
        .kept
        .iter()
        .filter_map(|k| Some((k.clone(), claims.get(k)?.to_value())))
        .collect();

    Ok(Identity {
        issuer: rules.name.clone(),
        sub: sub.to_string(),
        email,
        groups,
        scopes,
        expires_at: exp,
        claims: kept,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::LazyLock;

    fn b64(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn tok(header: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    const P: &str = r#"{"iss":"https://idp","sub":"u","aud":"api","exp":2000000000}"#;

    /// What an authenticator with `rules()` and a rule reading `tenant` selects.
    static SELECTION: LazyLock<ClaimSelection> =
        LazyLock::new(|| ClaimSelection::new(["email", "realm.roles"], ["tenant"]));

    /// [`super::parse`] and [`Parsed::claims`]: every token check before the signature.
    fn parse(token: &str, max_bytes: usize) -> Result<Parsed, Rejection> {
        let parsed = super::parse(token, max_bytes)?;
        parsed.claims(&SELECTION)?;
        Ok(parsed)
    }

    fn reason(r: Result<Parsed, Rejection>) -> Reason {
        r.map(|_| ()).unwrap_err().reason
    }

    #[test]
    fn structure() {
        assert_eq!(reason(parse("abc", 8192)), Reason::MalformedToken);
        assert_eq!(reason(parse("a.b", 8192)), Reason::MalformedToken);
        assert_eq!(reason(parse("a.b.c.d", 8192)), Reason::MalformedToken);
        assert_eq!(reason(parse("a.b.c.d.e", 8192)), Reason::UnsupportedToken);
        assert_eq!(reason(parse("a.b+.c", 8192)), Reason::MalformedToken);
        assert_eq!(reason(parse("a.b=.c", 8192)), Reason::MalformedToken);
        assert_eq!(reason(parse(".b.c", 8192)), Reason::MalformedToken);
        let t = tok(r#"{"alg":"RS256"}"#, P);
        assert!(parse(&t, 8192).is_ok());
        assert_eq!(reason(parse(&t, t.len() - 1)), Reason::MalformedToken);
        let unsigned = t.rsplit_once('.').unwrap().0.to_string() + ".";
        assert_eq!(reason(parse(&unsigned, 8192)), Reason::MalformedToken);
    }

    #[test]
    fn scan_agrees_with_a_byte_by_byte_check() {
        let naive = |t: &[u8]| {
            let dots = t.iter().filter(|&&b| b == b'.').count();
            let ok = t
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
            (dots, ok)
        };
        // Every byte value, at the edges of the 64-byte blocks and in between.
        for b in 0..=255u8 {
            for at in [0, 1, 63, 64, 65, 127, 128, 199] {
                let mut t = vec![b'A'; 200];
                t[at] = b;
                t[(at + 70) % 200] = b'.';
                assert_eq!(scan(&t), naive(&t), "byte {b:#04x} at {at}");
            }
        }
        // More dots in one block than fit a u8 would not matter (a block holds 64 bytes),
        // but many blocks of dots must all count.
        assert_eq!(scan(&[b'.'; 1000]), (1000, true));
        assert_eq!(scan(b""), (0, true));
    }

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
            assert_eq!(reason(parse(&tok(h, P), 8192)), *want, "header {h}");
        }
        let long_kid = format!(
            r#"{{"alg":"RS256","kid":"{}"}}"#,
            "k".repeat(MAX_KID_BYTES + 1)
        );
        assert_eq!(
            reason(parse(&tok(&long_kid, P), 8192)),
            Reason::MalformedToken
        );
        // alg none with the empty signature it comes with: still alg_not_allowed.
        let none = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(P));
        assert_eq!(reason(parse(&none, 8192)), Reason::AlgNotAllowed);
        let ok = parse(
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
        // Registered string parameters: a string or null is fine, and unknown ones are ignored.
        assert!(parse(
            &tok(
                r#"{"alg":"RS256","x5t#S256":"abc","url":null,"nonce":"n","ext":{"a":[1]}}"#,
                P
            ),
            8192
        )
        .is_ok());
    }

    #[test]
    fn signing_input_is_the_raw_header_and_payload() {
        let t = tok(r#"{"alg":"RS256"}"#, P);
        let parsed = parse(&t, 8192).unwrap();
        let (input, sig) = parsed.signing_input_and_signature(&t);
        let (want_input, want_sig) = t.rsplit_once('.').unwrap();
        assert_eq!((input, sig), (want_input, want_sig));
        assert_eq!(sig, "c2ln");
    }

    #[test]
    fn payload_rules() {
        let h = r#"{"alg":"RS256"}"#;
        let dup = r#"{"iss":"https://idp","sub":"u","aud":"api","aud":"other","exp":2000000000}"#;
        assert_eq!(reason(parse(&tok(h, dup), 8192)), Reason::ClaimInvalid);
        let escaped_dup = r#"{"sub":"a","s\u0075b":"b"}"#;
        assert_eq!(
            reason(parse(&tok(h, escaped_dup), 8192)),
            Reason::ClaimInvalid
        );
        let nested_dup = r#"{"sub":"a","ra":{"roles":[],"roles":["x"]}}"#;
        assert_eq!(
            reason(parse(&tok(h, nested_dup), 8192)),
            Reason::ClaimInvalid
        );
        assert_eq!(reason(parse(&tok(h, "[]"), 8192)), Reason::MalformedToken);
        assert_eq!(reason(parse(&tok(h, "{"), 8192)), Reason::MalformedToken);
        assert_eq!(reason(parse(&tok(h, "{} x"), 8192)), Reason::MalformedToken);
    }

    #[test]
    fn typ_comparison() {
        assert!(typ_matches("JWT", "jwt"));
        assert!(typ_matches("application/at+jwt", "at+jwt"));
        assert!(typ_matches("AT+JWT", "application/at+jwt"));
        assert!(!typ_matches("JOSE", "JWT"));
        assert!(!typ_matches("id+jwt", "at+jwt"));
    }

    fn rules() -> ClaimRules {
        ClaimRules {
            name: "corp".into(),
            issuer: "https://idp".into(),
            audiences: ["api".to_string(), "api2".to_string()].into(),
            leeway: 30,
            max_lifetime: 3600,
            email_claim: "email".into(),
            groups_claim: "realm.roles".into(),
        }
    }

    const NOW: u64 = 1_800_000_000;

    fn check(v: Value) -> Result<Identity, Rejection> {
        let t = tok(r#"{"alg":"RS256"}"#, &v.to_string());
        check_claims(&rules(), &parse(&t, 65536)?.claims(&SELECTION)?, NOW)
    }

    fn base() -> Value {
        json!({"iss":"https://idp","sub":"alice","aud":"api","exp":NOW + 600,"iat":NOW})
    }

    fn with(k: &str, v: Value) -> Value {
        let mut b = base();
        b[k] = v;
        b
    }

    fn without(k: &str) -> Value {
        let mut b = base();
        b.as_object_mut().unwrap().remove(k);
        b
    }

    fn r(v: Value) -> Reason {
        check(v).unwrap_err().reason
    }

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
        assert_eq!(id.claim("tenant.t"), Some(&json!([1])));
        let id = check(with("scope", json!("a  b c"))).unwrap();
        assert_eq!(id.scopes, ["a", "b", "c"]);
        assert!(id.groups.is_empty() && id.email.is_none());
        let id = check(with("realm", json!({"roles":"solo"}))).unwrap();
        assert_eq!(id.groups, ["solo"]);
        // leeway: expired 20 s ago, nbf 20 s ahead: still fine with 30 s leeway
        assert!(check(with("exp", json!(NOW - 20))).is_ok());
        assert!(check(with("nbf", json!(NOW + 20))).is_ok());
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
            let sel = ClaimSelection::new([email, groups], kept.iter().copied());
            let rules = ClaimRules {
                email_claim: email.into(),
                groups_claim: groups.into(),
                ..rules()
            };
            let parsed = parse(&t, 8192).unwrap();
            check_claims(&rules, &parsed.claims(&sel).unwrap(), NOW).unwrap()
        };
        let id = id_with("https://ex.com/email", "ra.roles", &[]);
        assert_eq!(id.email.as_deref(), Some("ns@example.com"));
        assert_eq!(id.groups, ["r1"]);
        let id = id_with("ra.email", "ra.roles", &["ra"]);
        assert_eq!(id.email.as_deref(), Some("ra@example.com"));
        assert_eq!(id.groups, ["r1"]);
        assert_eq!(id.claim("ra.roles"), Some(&json!(["r1"])));
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
        assert!(parse(&p(r#""jti":"a","#), 8192).is_ok());
        assert_eq!(
            reason(parse(&p(r#""jti":"a","jti":"b","#), 8192)),
            Reason::ClaimInvalid
        );
        assert_eq!(
            reason(parse(&p(r#""x":{"a":1,"a":2},"#), 8192)),
            Reason::ClaimInvalid
        );
        assert_eq!(
            reason(parse(&p(r#""x":[{"a":1,"\u0061":2}],"#), 8192)),
            Reason::ClaimInvalid
        );
        assert_eq!(
            reason(parse(&p(r#""tenant":1,"tenant":1,"#), 8192)),
            Reason::ClaimInvalid
        );
        assert_eq!(
            reason(parse(&p(r#""x":tru,"#), 8192)),
            Reason::MalformedToken
        );
        assert_eq!(
            reason(parse(&p(r#""x":1e999,"#), 8192)),
            Reason::MalformedToken
        );
        assert!(parse(&p(r#""x":{"a":{"b":[null,1.5,-2,"\n"]}},"#), 8192).is_ok());
        // Duplicate names are found before and after the seen-names list spills into a set.
        let members = |n: usize, dup: Option<(usize, usize)>| {
            let mut names: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
            if let Some((a, b)) = dup {
                names[b] = names[a].clone();
            }
            let body: Vec<String> = names.iter().map(|k| format!(r#""{k}":1"#)).collect();
            format!(r#""x":{{{}}},"#, body.join(","))
        };
        assert!(parse(&p(&members(40, None)), 8192).is_ok());
        for dup in [(0, 3), (2, 7), (2, 8), (5, 30), (20, 39)] {
            let t = p(&members(40, Some(dup)));
            assert_eq!(reason(parse(&t, 8192)), Reason::ClaimInvalid, "{dup:?}");
        }
        let parsed = parse(&p(r#""jti":"a","tenant":"t","#), 8192).unwrap();
        let claims = parsed.claims(&SELECTION).unwrap();
        let s = |v: &'static str| Some(ClaimValue::Str(v.into()));
        assert_eq!(claims.get("jti"), None);
        assert_eq!(claims.get("tenant").cloned(), s("t"));
        assert_eq!(claims.get("sub").cloned(), s("u"));
        // Strings borrow from the payload unless they had escapes to undo.
        let parsed = parse(&p(r#""tenant":"\u0074","aud":["a","\n",1],"#), 8192).unwrap();
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

    fn check_with(groups_claim: &str, kept: &[&str], v: Value) -> Result<Identity, Rejection> {
        let sel = ClaimSelection::new(["email", groups_claim], kept.iter().copied());
        let rules = ClaimRules {
            groups_claim: groups_claim.into(),
            ..rules()
        };
        let t = tok(r#"{"alg":"RS256"}"#, &v.to_string());
        check_claims(&rules, &super::parse(&t, 65536)?.claims(&sel)?, NOW)
    }

    fn description(r: Result<Identity, Rejection>) -> &'static str {
        r.unwrap_err().description
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
        assert_eq!(reason(parse(&tok(h, dup), 8192)), Reason::ClaimInvalid);
        let inner = r#"{"sub":"a","_claim_names":{"groups":"a","groups":"b"}}"#;
        assert_eq!(reason(parse(&tok(h, inner), 8192)), Reason::ClaimInvalid);

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
}
