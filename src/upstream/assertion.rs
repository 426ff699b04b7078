//! `private_key_jwt` client authentication (RFC 7523 §2.2, OpenID Connect Core §9), as
//! Microsoft Entra ID documents it ("Microsoft identity platform application authentication
//! certificate credentials"):
//!
//! - header: `alg` `PS256` (or `RS256`: `assertion_algorithm`), `typ` `JWT`, `x5t#S256` (base64url SHA-256 thumbprint of the
//!   certificate's DER) and `x5t` (the SHA-1 one, which older Entra documentation asks for with
//!   RS256; sending both lets the endpoint pick);
//! - claims: `aud` = the token endpoint URL, `iss` = `sub` = the client ID, a unique `jti`,
//!   `nbf` = `iat` = now, `exp` = now + [`ASSERTION_LIFETIME`] ("keep it short - 5-10 minutes
//!   after nbf at most");
//! - form: `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`,
//!   `client_assertion=<jwt>`, `client_id` (and no client secret, no `Authorization`).
//!
//! A fresh assertion is signed for every token request (a replayed `jti` is refused). The
//! private key lives only in the [`jsonwebtoken::EncodingKey`]; nothing here logs it, the
//! assertion, or any part of them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use zeroize::Zeroizing;

use super::secret::Secret;

/// `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub(crate) const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long a signed assertion is valid.
pub(crate) const ASSERTION_LIFETIME: Duration = Duration::from_secs(300);

/// Largest key or certificate file read.
const MAX_PEM_BYTES: usize = 64 * 1024;

/// Signs client assertions for one client.
pub(crate) struct ClientAssertion {
    key: EncodingKey,
    header: Header,
    aud: String,
    client_id: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl ClientAssertion {
    /// `key_pem`: an RSA private key (PKCS#1 or PKCS#8 PEM); `cert_pem`: its certificate (the
    /// first `CERTIFICATE` block is used); `aud`: the token endpoint URL. Errors name the
    /// problem, never the content; `Err((field, message))` with the key it concerns. `alg`:
    /// PS256 or RS256 (`assertion_algorithm`).
    pub(crate) fn new(
        key_pem: &Secret,
        cert_pem: &[u8],
        aud: &str,
        client_id: &str,
        alg: Algorithm,
    ) -> Result<ClientAssertion, (&'static str, String)> {
        crate::auth::install_crypto_provider();
        let key = EncodingKey::from_rsa_pem(key_pem.expose().as_bytes()).map_err(|_| {
            (
                "client_assertion_key_file",
                "is not an RSA private key in PEM form (PKCS#1 or PKCS#8, unencrypted)".into(),
            )
        })?;
        let der = first_certificate(cert_pem).ok_or((
            "client_assertion_cert_file",
            "holds no PEM CERTIFICATE block".to_string(),
        ))?;
        let b64 = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
        let sha256 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der);
        let sha1 = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
        let mut header = Header::new(alg);
        header.typ = Some("JWT".into());
        header.x5t_s256 = Some(b64(sha256.as_ref()));
        header.x5t = Some(b64(sha1.as_ref()));
        let this = ClientAssertion {
            key,
            header,
            aud: aud.to_string(),
            client_id: client_id.to_string(),
        };
        // Sign once now: a key that cannot sign is a configuration error, not a request failure.
        this.sign().map_err(|e| ("client_assertion_key_file", e))?;
        Ok(this)
    }

    /// A freshly signed assertion.
    pub(crate) fn sign(&self) -> Result<Zeroizing<String>, String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_string())?
            .as_secs();
        let claims = Claims {
            aud: &self.aud,
            iss: &self.client_id,
            sub: &self.client_id,
            jti: format!("{:032x}", rand::random::<u128>()),
            nbf: now,
            iat: now,
            exp: now + ASSERTION_LIFETIME.as_secs(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map(Zeroizing::new)
            .map_err(|_| "cannot sign the client assertion with this key".to_string())
    }
}

/// Read a PEM file (a private key: `secret`, or a certificate) whole; the error names the
/// path only.
pub(crate) fn read_pem_file(path: &std::path::Path, secret: bool) -> Result<Secret, String> {
    use std::io::Read;
    let shown = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    if secret {
        super::secret::warn_if_world_readable(&f, path);
    }
    let mut raw = Zeroizing::new(Vec::new());
    f.take(MAX_PEM_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(|e| format!("cannot read {shown}: {e}"))?;
    if raw.len() > MAX_PEM_BYTES {
        return Err(format!("{shown} is larger than {MAX_PEM_BYTES} bytes"));
    }
    let text = std::str::from_utf8(&raw).map_err(|_| format!("{shown} is not PEM text"))?;
    if !text.contains("-----BEGIN ") {
        return Err(format!("{shown} is not PEM (no -----BEGIN line)"));
    }
    Ok(Secret::new(text.to_string()))
}

/// The DER of the first `CERTIFICATE` block of `pem`.
fn first_certificate(pem: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(pem).ok()?;
    let start = text.find("-----BEGIN CERTIFICATE-----")? + "-----BEGIN CERTIFICATE-----".len();
    let len = text[start..].find("-----END CERTIFICATE-----")?;
    let b64: String = text[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let der = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    (!der.is_empty()).then_some(der)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_blocks_are_found_and_garbage_refused() {
        let pem = b"junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAw==\n-----END CERTIFICATE-----\n";
        assert_eq!(first_certificate(pem), Some(vec![0, 1, 2, 3]));
        assert_eq!(
            first_certificate(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----"),
            None
        );
        assert_eq!(first_certificate(b"no pem"), None);
        let e = ClientAssertion::new(
            &Secret::new("not a key".into()),
            pem,
            "a",
            "b",
            Algorithm::PS256,
        )
        .err()
        .unwrap();
        assert_eq!(e.0, "client_assertion_key_file");
        assert!(!e.1.contains("not a key"), "{}", e.1);
    }
}
