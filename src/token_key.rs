//! The key of a caller's token in idgate's caches: SHA-256 of the whole token.
//!
//! One definition shared by [`crate::auth`] (the validated-token cache) and
//! [`crate::upstream`] (the token-exchange credential cache): the authenticator hashes the token
//! once per decision and the broker reuses that key, so the two caches can never disagree on
//! what "the same token" is, and a token is not hashed twice.
//!
//! Why SHA-256: a fast keyed 64-bit hash (SipHash, aHash) would be a few hundred nanoseconds
//! cheaper, but a key collision would answer one caller with another caller's identity (or
//! hand caller B the upstream token exchanged for caller A), so the key must be collision
//! resistant without relying on a secret. It is AWS-LC's SHA-256 (already linked for the
//! signatures; `perf` put the `sha2` crate's SHA-NI code at about twice its time for the same
//! bytes): ~0.6 µs for a typical 1 KiB token. The raw token is never stored, only this.

/// SHA-256 of a caller's token. A distinct type rather than a bare `[u8; 32]`, so that no
/// other 32-byte value can be passed where a token's key is expected.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenKey([u8; 32]);

impl TokenKey {
    /// The digest (keyed again before it leaves the process: see `upstream::shared`).
    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The cache key of `token`.
pub fn token_key(token: &str) -> TokenKey {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0; 32];
    key.copy_from_slice(digest.as_ref());
    TokenKey(key)
}

impl std::fmt::Debug for TokenKey {
    /// The first 8 bytes in hex: enough to tell keys apart in a test failure.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_tokens_equal_keys_and_different_tokens_differ() {
        assert_eq!(token_key("a.b.c"), token_key("a.b.c"));
        assert_ne!(token_key("a.b.c"), token_key("a.b.d"));
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            format!("{:?}", token_key("abc")),
            "TokenKey(ba7816bf8f01cfea…)"
        );
    }
}
