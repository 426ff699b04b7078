//! `[auth]`: settings shared by all issuers.

use super::read::{Cx, Table};
use super::value::{secs, Dur};

/// `[auth]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthConfig {
    /// `realm` of the `WWW-Authenticate` challenge. Default `"idgate"`.
    pub realm: String,
    /// Optional cookie name to take the token from when there is no `Authorization` header.
    pub cookie: Option<String>,
    /// Tokens longer than this are refused as `malformed_token` before decoding. Default 16384:
    /// HAProxy's default `tune.bufsize` (16 KiB) is the real ceiling for a header, and an
    /// Entra ID token with its maximum of 200 groups takes about 11 KB.
    pub max_token_bytes: usize,
    /// Maximum number of validated tokens cached. Default 100000.
    pub token_cache_size: u64,
    /// A cached validation never outlives the token's `exp`, nor this. Default 10m.
    pub token_cache_ttl: Dur,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            realm: "idgate".into(),
            cookie: None,
            max_token_bytes: 16384,
            token_cache_size: 100_000,
            token_cache_ttl: secs(600),
        }
    }
}

impl AuthConfig {
    pub(crate) fn read(t: &mut Table<'_, '_>) -> AuthConfig {
        let mut c = AuthConfig::default();
        t.set("realm", &mut c.realm);
        c.cookie = t.get("cookie");
        t.set("max_token_bytes", &mut c.max_token_bytes);
        t.set("token_cache_size", &mut c.token_cache_size);
        t.set("token_cache_ttl", &mut c.token_cache_ttl);
        c
    }

    pub(crate) fn check(&self, cx: &mut Cx<'_>) {
        if !(64..=65536).contains(&self.max_token_bytes) {
            cx.push("auth.max_token_bytes", "must be between 64 and 65536");
        }
        if let Some(c) = &self.cookie {
            if c.is_empty()
                || !c
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'=' && b != b';')
            {
                cx.push("auth.cookie", "not a valid cookie name");
            }
        }
        if self.realm.contains('"') || self.realm.chars().any(char::is_control) {
            cx.push(
                "auth.realm",
                "must not contain quotes or control characters",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::keys;

    #[test]
    fn checks() {
        assert_eq!(
            keys("[auth]\nmax_token_bytes = 63\ncookie = \"a;b\"\nrealm = \"a\\\"b\"\n"),
            ["auth.max_token_bytes", "auth.cookie", "auth.realm"]
        );
        assert_eq!(
            keys("[auth]\ntoken_cache_ttl = 600\n"),
            ["auth.token_cache_ttl"]
        );
    }
}
