//! The validated-token cache: token digest -> verified [`Identity`].
//!
//! Key: SHA-256 of the whole token. A fast keyed 64-bit hash (SipHash, aHash) would be a few
//! hundred nanoseconds cheaper, but a cache key collision would answer one caller with another
//! caller's identity, so the key must be collision resistant without relying on a secret. It is
//! AWS-LC's SHA-256 (already linked for the signatures; `perf` put the `sha2` crate's SHA-NI code
//! at about twice its time for the same bytes): ~0.6 µs for a typical 1 KiB token, well inside
//! the 2 µs budget. The raw token is never stored.
//!
//! An entry lives until the token's `exp` or `auth.token_cache_ttl`, whichever comes first
//! (per-entry moka `Expiry`), and every hit re-checks `exp` against the clock, so an expired
//! token is never answered from the cache even if eviction lags. The cache accepts the usual
//! trade-off of validated-token caches (identity-and-databricks.md §3.5): no revocation within
//! the TTL, and a key removed from the JWKS keeps its already-validated tokens valid until then.
//!
//! Negative results are not cached: most rejections are decided before any cryptography and
//! cost about as much as a cache lookup, and a cache of failures would be trivially flooded by
//! random garbage tokens, evicting the good entries.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moka::sync::Cache;
use moka::Expiry;
use prometheus::IntCounter;

use crate::decision::Identity;
use crate::metrics::metrics;

/// Defined in [`crate::token_key`], shared with the upstream broker's token-exchange cache.
pub use crate::token_key::{token_key, TokenKey};

/// Seconds since the Unix epoch (0 if the clock is before 1970, which fails every `exp`).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

struct UntilExp {
    ttl: Duration,
}

impl Expiry<TokenKey, Arc<Identity>> for UntilExp {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        value: &Arc<Identity>,
        _created_at: Instant,
    ) -> Option<Duration> {
        let left = Duration::from_secs(value.expires_at.saturating_sub(unix_now()));
        Some(left.min(self.ttl))
    }
}

pub(super) struct TokenCache {
    inner: Option<Cache<TokenKey, Arc<Identity>>>,
    size: u64,
    ttl: Duration,
    hit: IntCounter,
    miss: IntCounter,
}

impl TokenCache {
    /// `size == 0` or `ttl == 0` disables caching (every token is validated in full).
    pub(super) fn new(size: u64, ttl: Duration) -> TokenCache {
        let inner = (size > 0 && !ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(size)
                .expire_after(UntilExp { ttl })
                .build()
        });
        let m = metrics();
        TokenCache {
            inner,
            size,
            ttl,
            hit: m.token_cache_requests.with_label_values(&["hit"]),
            miss: m.token_cache_requests.with_label_values(&["miss"]),
        }
    }

    /// Same sizing: a reload may keep this cache.
    pub(super) fn same_settings(&self, size: u64, ttl: Duration) -> bool {
        self.size == size && self.ttl == ttl
    }

    pub(super) fn get(&self, key: &TokenKey, now: u64) -> Option<Arc<Identity>> {
        let found = self.inner.as_ref().and_then(|c| {
            let id = c.get(key)?;
            if now < id.expires_at {
                Some(id)
            } else {
                c.invalidate(key);
                None
            }
        });
        if found.is_some() {
            self.hit.inc();
        } else {
            self.miss.inc();
        }
        found
    }

    pub(super) fn insert(&self, key: TokenKey, id: Arc<Identity>, now: u64) {
        if let Some(c) = &self.inner {
            // A token accepted within the exp leeway is not cached: the cache answers only
            // strictly unexpired tokens.
            if now < id.expires_at {
                c.insert(key, id);
            }
        }
    }

    /// Entries currently held (approximate; for tests and diagnostics).
    pub(super) fn entry_count(&self) -> u64 {
        self.inner.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(exp: u64) -> Arc<Identity> {
        Arc::new(Identity {
            issuer: "i".into(),
            sub: "s".into(),
            user: None,
            email: None,
            groups: vec![],
            scopes: vec![],
            expires_at: exp,
            issued_at: None,
            jti: None,
            claims: Default::default(),
        })
    }

    #[test]
    fn hit_miss_and_expiry_check() {
        let c = TokenCache::new(10, Duration::from_secs(600));
        let now = unix_now();
        let k = token_key("a.b.c");
        assert!(c.get(&k, now).is_none());
        c.insert(k, identity(now + 100), now);
        assert_eq!(c.get(&k, now).unwrap().sub, "s");
        // The same entry, asked at a time past its exp, is not answered and is dropped.
        assert!(c.get(&k, now + 100).is_none());
        assert!(c.get(&k, now).is_none());
        // Already-expired identities are never inserted.
        let k2 = token_key("x.y.z");
        c.insert(k2, identity(now), now);
        assert!(c.get(&k2, now).is_none());
        assert_ne!(token_key("a.b.c"), token_key("a.b.d"));
    }

    #[test]
    fn entry_expires_with_exp() {
        let c = TokenCache::new(10, Duration::from_secs(600));
        let now = unix_now();
        let k = token_key("t");
        c.insert(k, identity(now + 1), now);
        // moka evicts on its own once exp passes; bounded wait (at most ~3 s).
        let deadline = Instant::now() + Duration::from_secs(3);
        while c.entry_count() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(c.entry_count(), 0);
    }

    #[test]
    fn disabled() {
        let c = TokenCache::new(0, Duration::from_secs(600));
        let now = unix_now();
        let k = token_key("t");
        c.insert(k, identity(now + 100), now);
        assert!(c.get(&k, now).is_none());
    }
}
