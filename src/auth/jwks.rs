//! JWKS documents -> verification keys, and picking the key for a token. Pure: no I/O.
//!
//! `DecodingKey`s are built here, once per fetched JWKS, never per request. Every key the set
//! cannot use safely is skipped (with a reason the caller logs) rather than failing the whole
//! set: one odd key (an encryption key, a P-521 key) must not take the others down.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::jose::{algorithm_from_name, valid_kid};

/// Most keys we take from one JWKS. Real IdPs publish 1-5; a document with hundreds is a bug or
/// an attack on our memory and our per-token key search.
pub(super) const MAX_KEYS: usize = 64;

/// Most keys one `kid` may name. IdPs reuse a kid during a rotation overlap (the old and the new
/// RSA key, or an RSA and an EC key published side by side), so a token is tried against every
/// key of its kid that fits its `alg`; the bound keeps a JWKS with one kid on every key from
/// turning each forged token into dozens of signature verifications.
pub(super) const MAX_KEYS_PER_KID: usize = 4;

/// RSA modulus bounds in bits. RFC 7518 §3.3 requires at least 2048; above 8192 verification
/// gets slow enough to be a CPU-exhaustion lever and no IdP uses it.
const RSA_MIN_BITS: usize = 2048;
const RSA_MAX_BITS: usize = 8192;
/// Largest RSA public exponent we take (bytes). 65537 is 3 bytes; the cap rules out absurd values.
const RSA_MAX_EXPONENT_BYTES: usize = 8;

/// One usable signature-verification key.
#[derive(Debug)]
pub(super) struct VerifyKey {
    pub kid: Option<String>,
    pub family: AlgorithmFamily,
    /// The single algorithm this key may be used with, when the JWK (or its curve) pins one.
    /// RSA keys without `alg` accept any RS*/PS* algorithm the issuer allows.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl VerifyKey {
    /// RFC 8725 §3.1: a key is used only with the algorithm (family) it was published for.
    pub(super) fn accepts(&self, alg: Algorithm) -> bool {
        alg.family() == self.family && self.alg.is_none_or(|a| a == alg)
    }
}

/// The usable keys of one JWKS fetch.
#[derive(Debug, Default)]
pub(super) struct KeySet {
    /// At most [`MAX_KEYS_PER_KID`] keys per kid, in document order. In an `Arc` so that a
    /// selection is a reference count, not a copy.
    by_kid: HashMap<String, Arc<[Arc<VerifyKey>]>>,
    all: Vec<Arc<VerifyKey>>,
}

/// The keys a token may be verified with: those of its kid (at most [`MAX_KEYS_PER_KID`]),
/// or the one key that fits its `alg` when it has no kid. Only the keys that accept the
/// token's `alg` are ever tried ([`Candidates::accepting`]).
#[derive(Debug, Clone)]
pub(super) enum Candidates {
    Kid(Arc<[Arc<VerifyKey>]>),
    One(Arc<VerifyKey>),
}

impl Candidates {
    /// The candidate keys that accept `alg`, in document order.
    pub(super) fn accepting(&self, alg: Algorithm) -> impl Iterator<Item = &VerifyKey> {
        let keys: &[Arc<VerifyKey>] = match self {
            Candidates::Kid(keys) => keys,
            Candidates::One(k) => std::slice::from_ref(k),
        };
        keys.iter().map(|k| &**k).filter(move |k| k.accepts(alg))
    }
}

/// Outcome of [`KeySet::select`].
#[derive(Debug)]
pub(super) enum Selection {
    /// At least one key accepts the token's `alg`.
    Found(Candidates),
    /// No key with this kid (or, without kid, no key for the algorithm): may refetch.
    NotFound,
    /// The kid exists but its key is for another algorithm: key confusion, never refetch.
    WrongAlgorithm,
    /// No kid in the token and several keys could verify it.
    Ambiguous,
}

impl KeySet {
    pub(super) fn len(&self) -> usize {
        self.all.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// The kids in this set, for logs and `idgate explain`.
    pub(super) fn kids(&self) -> Vec<String> {
        let mut k: Vec<String> = self.by_kid.keys().cloned().collect();
        k.sort();
        k
    }

    /// The key for a token: by `kid` when the token has one; otherwise the only key that
    /// accepts `alg` (a token without kid against a multi-key set is refused rather than tried
    /// against every key).
    pub(super) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Selection {
        match kid {
            Some(kid) => match self.by_kid.get(kid) {
                None => Selection::NotFound,
                Some(keys) if keys.iter().any(|k| k.accepts(alg)) => {
                    Selection::Found(Candidates::Kid(keys.clone()))
                }
                Some(_) => Selection::WrongAlgorithm,
            },
            None => {
                let mut it = self.all.iter().filter(|k| k.accepts(alg));
                match (it.next(), it.next()) {
                    (Some(k), None) => Selection::Found(Candidates::One(k.clone())),
                    (None, _) => Selection::NotFound,
                    (Some(_), Some(_)) => Selection::Ambiguous,
                }
            }
        }
    }
}

/// A [`KeySet`] being built from a document.
#[derive(Default)]
struct Builder {
    by_kid: HashMap<String, Vec<Arc<VerifyKey>>>,
    all: Vec<Arc<VerifyKey>>,
}

impl Builder {
    /// Add `k`, or say why not (its kid already names [`MAX_KEYS_PER_KID`] keys).
    fn push(&mut self, k: VerifyKey) -> Result<(), String> {
        let k = Arc::new(k);
        if let Some(kid) = &k.kid {
            let same = self.by_kid.entry(kid.clone()).or_default();
            if same.len() >= MAX_KEYS_PER_KID {
                return Err(format!(
                    "its kid already names {MAX_KEYS_PER_KID} keys (at most {MAX_KEYS_PER_KID} \
                     keys per kid)"
                ));
            }
            same.push(k.clone());
        }
        self.all.push(k);
        Ok(())
    }

    fn finish(self) -> KeySet {
        KeySet {
            by_kid: self
                .by_kid
                .into_iter()
                .map(|(kid, keys)| (kid, Arc::from(keys)))
                .collect(),
            all: self.all,
        }
    }
}

/// The members of a JWK we read. Unknown members are ignored (RFC 7517 §4).
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

/// Parse a JWKS document. `Err` when the document itself is unusable (not JSON, no `keys`
/// array); skipped keys are returned as human-readable reasons (with the kid, never key
/// material) for the caller to log.
pub(super) fn parse_jwks(body: &[u8]) -> Result<(KeySet, Vec<String>), String> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| format!("JWKS is not JSON: {e}"))?;
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Err("JWKS has no \"keys\" array".into());
    };
    let mut set = Builder::default();
    let mut skipped = Vec::new();
    for (i, raw) in keys.iter().enumerate() {
        if i >= MAX_KEYS {
            skipped.push(format!(
                "{} keys beyond the first {MAX_KEYS} ignored",
                keys.len() - MAX_KEYS
            ));
            break;
        }
        match build_key(raw).and_then(|k| set.push(k)) {
            Ok(()) => {}
            Err(why) => {
                let kid = raw.get("kid").and_then(Value::as_str).unwrap_or("(none)");
                let kid: String = kid.chars().take(64).filter(|c| !c.is_control()).collect();
                skipped.push(format!("key {i} (kid {kid:?}) skipped: {why}"));
            }
        }
    }
    Ok((set.finish(), skipped))
}

fn b64(field: &Option<String>, name: &str) -> Result<Vec<u8>, String> {
    let s = field.as_deref().ok_or_else(|| format!("missing {name}"))?;
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| format!("{name} is not base64url"))
}

fn build_key(raw: &Value) -> Result<VerifyKey, String> {
    let jwk: RawJwk =
        serde_json::from_value(raw.clone()).map_err(|e| format!("not a valid JWK: {e}"))?;
    if let Some(u) = &jwk.use_ {
        if u != "sig" {
            return Err(format!("use is {u:?}, not \"sig\""));
        }
    }
    if let Some(ops) = &jwk.key_ops {
        if !ops.iter().any(|o| o == "verify") {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    if let Some(kid) = &jwk.kid {
        if !valid_kid(kid) {
            return Err("kid is empty, too long or not printable ASCII".into());
        }
    }
    // The JWK's own `alg`, when given, must be one we support *and* fit the key type.
    let declared = match &jwk.alg {
        None => None,
        // RFC 9864 fully-specified name for EdDSA over Ed25519.
        Some(a) if a == "Ed25519" => Some(Algorithm::EdDSA),
        Some(a) => Some(algorithm_from_name(a).ok_or_else(|| format!("alg {a:?} not supported"))?),
    };
    let (family, implied, key) = match jwk.kty.as_str() {
        "RSA" => {
            let n = b64(&jwk.n, "n")?;
            let e = b64(&jwk.e, "e")?;
            let n_bits = significant_bits(&n);
            if !(RSA_MIN_BITS..=RSA_MAX_BITS).contains(&n_bits) {
                return Err(format!(
                    "RSA modulus of {n_bits} bits (allowed {RSA_MIN_BITS}..={RSA_MAX_BITS})"
                ));
            }
            let e_len = e.iter().skip_while(|&&b| b == 0).count();
            if e_len == 0 || e_len > RSA_MAX_EXPONENT_BYTES {
                return Err("RSA exponent out of range".into());
            }
            (
                AlgorithmFamily::Rsa,
                None,
                DecodingKey::from_rsa_raw_components(&n, &e),
            )
        }
        "EC" => {
            let (alg, len) = match jwk.crv.as_deref() {
                Some("P-256") => (Algorithm::ES256, 32),
                Some("P-384") => (Algorithm::ES384, 48),
                other => return Err(format!("EC curve {other:?} not supported")),
            };
            let x = b64(&jwk.x, "x")?;
            let y = b64(&jwk.y, "y")?;
            if x.len() != len || y.len() != len {
                return Err("EC coordinates have the wrong length".into());
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (
                AlgorithmFamily::Ec,
                Some(alg),
                DecodingKey::from_ec_der(&point),
            )
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err(format!("OKP curve {:?} not supported", jwk.crv));
            }
            let x = b64(&jwk.x, "x")?;
            if x.len() != 32 {
                return Err("Ed25519 public key must be 32 bytes".into());
            }
            (
                AlgorithmFamily::Ed,
                Some(Algorithm::EdDSA),
                DecodingKey::from_ed_der(&x),
            )
        }
        "oct" => return Err("symmetric (oct) keys are never used".into()),
        other => return Err(format!("key type {other:?} not supported")),
    };
    let alg = match (declared, implied) {
        (Some(d), _) if d.family() != family => {
            return Err(format!("alg {d:?} contradicts key type {}", jwk.kty));
        }
        (Some(d), Some(i)) if d != i => {
            return Err(format!("alg {d:?} contradicts curve {:?}", jwk.crv));
        }
        (Some(d), _) => Some(d),
        (None, i) => i,
    };
    Ok(VerifyKey {
        kid: jwk.kid,
        family,
        alg,
        key,
    })
}

fn significant_bits(be: &[u8]) -> usize {
    match be.iter().position(|&b| b != 0) {
        None => 0,
        Some(i) => (be.len() - i - 1) * 8 + (8 - be[i].leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(b: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(b)
    }

    fn rsa(kid: &str, bits: usize) -> Value {
        let mut n = vec![0xC5u8; bits / 8];
        n[0] = 0xC5;
        json!({"kty":"RSA","kid":kid,"n":enc(&n),"e":"AQAB"})
    }

    fn ec(kid: &str, crv: &str, len: usize) -> Value {
        json!({"kty":"EC","kid":kid,"crv":crv,"x":enc(&vec![1; len]),"y":enc(&vec![2; len])})
    }

    fn parse(keys: Vec<Value>) -> (KeySet, Vec<String>) {
        parse_jwks(json!({ "keys": keys }).to_string().as_bytes()).unwrap()
    }

    #[test]
    fn filters_unusable_keys() {
        let mut enc_key = rsa("enc", 2048);
        enc_key["use"] = json!("enc");
        let mut wrong_alg = rsa("wrong-alg", 2048);
        wrong_alg["alg"] = json!("ES256");
        let mut hs = rsa("hs", 2048);
        hs["alg"] = json!("HS256");
        let mut ops = rsa("ops", 2048);
        ops["key_ops"] = json!(["encrypt"]);
        let mut ec_wrong = ec("ec-wrong", "P-256", 32);
        ec_wrong["alg"] = json!("ES384");
        let (set, skipped) = parse(vec![
            rsa("good-rsa", 2048),
            enc_key,
            wrong_alg,
            hs,
            ops,
            rsa("small", 1024),
            json!({"kty":"oct","kid":"sym","k":"c2VjcmV0"}),
            ec("p256", "P-256", 32),
            ec("p384", "P-384", 48),
            ec("p521", "P-521", 66),
            ec("short", "P-256", 31),
            ec_wrong,
            json!({"kty":"OKP","crv":"Ed25519","kid":"ed","x":enc(&[3; 32])}),
            json!({"kty":"OKP","crv":"X25519","kid":"x","x":enc(&[3; 32])}),
            json!({"kty":"RSA","kid":"no-n","e":"AQAB"}),
            json!({"kty":"RSA","kid":7}),
            json!("garbage"),
        ]);
        assert_eq!(set.kids(), ["ed", "good-rsa", "p256", "p384"]);
        assert_eq!(skipped.len(), 13, "{skipped:#?}");
        assert!(
            skipped.iter().all(|s| !s.contains("xcXF")),
            "no key material in logs"
        );
    }

    #[test]
    fn selection() {
        let mut pinned = rsa("pinned", 2048);
        pinned["alg"] = json!("PS256");
        let (set, _) = parse(vec![rsa("r", 2048), pinned, ec("e", "P-256", 32)]);
        assert!(matches!(
            set.select(Some("r"), Algorithm::RS256),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Some("r"), Algorithm::PS384),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(Some("r"), Algorithm::ES256),
            Selection::WrongAlgorithm
        ));
        assert!(matches!(
            set.select(Some("pinned"), Algorithm::RS256),
            Selection::WrongAlgorithm
        ));
        assert!(matches!(
            set.select(Some("e"), Algorithm::ES384),
            Selection::WrongAlgorithm
        ));
        assert!(matches!(
            set.select(Some("zz"), Algorithm::RS256),
            Selection::NotFound
        ));
        // No kid: the only ES256 key is chosen; two RSA keys accept RS256 -> ambiguous.
        assert!(matches!(
            set.select(None, Algorithm::ES256),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(None, Algorithm::RS256),
            Selection::Found(_)
        ));
        assert!(matches!(
            set.select(None, Algorithm::PS256),
            Selection::Ambiguous
        ));
        assert!(matches!(
            set.select(None, Algorithm::EdDSA),
            Selection::NotFound
        ));
    }

    fn accepting(sel: Selection, alg: Algorithm) -> Vec<(AlgorithmFamily, Option<Algorithm>)> {
        match sel {
            Selection::Found(c) => c.accepting(alg).map(|k| (k.family, k.alg)).collect(),
            other => panic!("not found: {other:?}"),
        }
    }

    #[test]
    fn keys_sharing_a_kid_are_all_candidates() {
        // Rotation overlap: two RSA keys and an EC key published under one kid.
        let mut other_rsa = rsa("k", 2048);
        other_rsa["n"] = json!(enc(&[0xA7; 256]));
        let (set, skipped) = parse(vec![rsa("k", 2048), ec("k", "P-256", 32), other_rsa]);
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(set.kids(), ["k"]);
        let rs = accepting(set.select(Some("k"), Algorithm::RS256), Algorithm::RS256);
        assert_eq!(
            rs,
            [(AlgorithmFamily::Rsa, None), (AlgorithmFamily::Rsa, None)]
        );
        let es = accepting(set.select(Some("k"), Algorithm::ES256), Algorithm::ES256);
        assert_eq!(es, [(AlgorithmFamily::Ec, Some(Algorithm::ES256))]);
        // Only a key fitting the alg is ever a candidate: ES384 finds none under that kid.
        assert!(matches!(
            set.select(Some("k"), Algorithm::ES384),
            Selection::WrongAlgorithm
        ));
    }

    #[test]
    fn at_most_four_keys_per_kid() {
        let keys: Vec<Value> = (0..MAX_KEYS_PER_KID + 2)
            .map(|_| rsa("same", 2048))
            .collect();
        let (set, skipped) = parse(keys);
        assert_eq!(set.len(), MAX_KEYS_PER_KID);
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(
            skipped[0].contains("kid \"same\"") && skipped[0].contains("at most 4 keys per kid"),
            "{}",
            skipped[0]
        );
        let n = accepting(set.select(Some("same"), Algorithm::RS256), Algorithm::RS256).len();
        assert_eq!(n, MAX_KEYS_PER_KID);
    }

    #[test]
    fn garbage_documents() {
        assert!(parse_jwks(b"<html>").is_err());
        assert!(parse_jwks(b"{}").is_err());
        assert!(parse_jwks(br#"{"keys":{}}"#).is_err());
        let many: Vec<Value> = (0..MAX_KEYS + 5)
            .map(|i| rsa(&format!("k{i}"), 2048))
            .collect();
        let (set, skipped) = parse(many);
        assert_eq!(set.len(), MAX_KEYS);
        assert_eq!(skipped.len(), 1);
    }
}
