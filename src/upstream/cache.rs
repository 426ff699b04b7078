//! What the credential kinds that fetch tokens share: a cached token with its deadlines
//! (freshness at read time, refresh ahead of expiry claimed by one caller), the hold-off after
//! an endpoint failure, and spawning background refreshes.
//!
//! Deadlines that several callers race on are monotonic nanoseconds in atomics (since
//! [`CLOCK_BASE`]), so the cache-hit path takes no lock and reads no clock of its own: it is
//! handed the decision's clock reading.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use super::failure::{Failure, Outcome};
use super::oauth::Token;
use super::UpstreamError;

/// A token is not served once it is this close to expiry (or a tenth of its lifetime, for
/// short-lived tokens): HAProxy may queue the upstream request for a moment, and a token that
/// expires in flight is a 401 the caller cannot fix.
pub(crate) const EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// After a background refresh failed, the next one starts no sooner than this (the current,
/// still valid token keeps being served meanwhile). Keeps a failing endpoint from being hit
/// on every request.
pub(crate) const REFRESH_RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// After the token endpoint failed (5xx, 429, timeout, network, garbage), requests that have no
/// cached token fail at once for this long (or for the `Retry-After` of a 429) instead of each
/// waiting a full `total_budget`: an outage then costs HAProxy fast 503s, not piled-up
/// SPOE timeouts, and the endpoint is not hammered while it recovers.
pub(crate) const FAILURE_HOLDOFF: Duration = Duration::from_secs(1);

/// A token request the endpoint refused for good (4xx: a wrong client secret, a federation
/// policy that does not accept this caller's token) is remembered, and answered again without
/// asking, for this long: callers retrying cannot make idgate hammer the token endpoint, and
/// a fixed configuration is picked up soon after.
pub(crate) const REFUSAL_TTL: Duration = Duration::from_secs(10);

/// Origin of the monotonic nanosecond timestamps kept in atomics. Forced when a broker is
/// built, so that no request pays for its initialisation.
pub(crate) static CLOCK_BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

#[inline]
fn nanos(i: Instant) -> u64 {
    u64::try_from(i.saturating_duration_since(*CLOCK_BASE).as_nanos()).unwrap_or(u64::MAX)
}

fn nanos_of(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A token with its deadlines.
#[derive(Debug)]
pub(crate) struct TokenEntry {
    pub(crate) header: Arc<str>,
    /// Never served at or after this instant.
    pub(crate) usable_until: Instant,
    /// When the next background refresh may start ([`nanos`] since [`CLOCK_BASE`];
    /// `u64::MAX` = never). A refresher moves it forward by [`REFRESH_RETRY_INTERVAL`] with a
    /// compare-and-swap, which is both the single-flight of refreshes and their retry pacing.
    refresh_due: AtomicU64,
}

impl TokenEntry {
    /// Deadlines from the token's lifetime: served until `lifetime - min(EXPIRY_MARGIN,
    /// lifetime/10)`, refreshed from `lifetime - min(refresh_ahead, lifetime/2)` (a token
    /// shorter than twice `refresh_ahead` is refreshed at half-life instead of constantly).
    /// `refresh: false` never refreshes ahead.
    pub(crate) fn new(tok: &Token, refresh_ahead: Duration, refresh: bool) -> TokenEntry {
        let life = tok.lifetime;
        let usable_until = tok.requested_at + (life - EXPIRY_MARGIN.min(life / 10));
        let refresh_at = tok.requested_at + (life - refresh_ahead.min(life / 2));
        let due = if refresh && !refresh_ahead.is_zero() {
            nanos(refresh_at)
        } else {
            u64::MAX
        };
        TokenEntry {
            header: Arc::clone(&tok.header),
            usable_until,
            refresh_due: AtomicU64::new(due),
        }
    }

    /// May be served at `now`. On the cache-hit path.
    #[inline]
    pub(crate) fn fresh(&self, now: Instant) -> bool {
        now < self.usable_until
    }

    /// True for exactly one caller once the refresh is due (and again after
    /// [`REFRESH_RETRY_INTERVAL`] if that refresh did not replace this entry). On the
    /// cache-hit path: one atomic load until the refresh is due.
    #[inline]
    pub(crate) fn claim_refresh(&self, now: Instant) -> bool {
        let due = self.refresh_due.load(Ordering::Relaxed);
        let n = nanos(now);
        n >= due
            && self
                .refresh_due
                .compare_exchange(
                    due,
                    n.saturating_add(nanos_of(REFRESH_RETRY_INTERVAL)),
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// "Do not call the endpoint before this instant" after an endpoint failure.
#[derive(Debug, Default)]
pub(crate) struct Holdoff(AtomicU64);

impl Holdoff {
    pub(crate) fn remaining(&self, now: Instant) -> Option<Duration> {
        let until = self.0.load(Ordering::Relaxed);
        let n = nanos(now);
        (n < until).then(|| Duration::from_nanos(until - n))
    }

    pub(crate) fn after(&self, f: &Failure) {
        let d = match (f.outcome, f.retry_after) {
            (Outcome::Http429, Some(ra)) => ra.max(FAILURE_HOLDOFF),
            _ => FAILURE_HOLDOFF,
        };
        let until = nanos(Instant::now()).saturating_add(nanos_of(d));
        self.0.fetch_max(until, Ordering::Relaxed);
    }

    /// `Err(BackingOff)` while the hold-off lasts. Not logged: the failure that started it
    /// was, and every request refused meanwhile is counted in the audit log and metrics.
    pub(crate) fn error(&self, upstream: &Arc<str>, now: Instant) -> Result<(), UpstreamError> {
        match self.remaining(now) {
            Some(retry_in) => Err(UpstreamError::BackingOff {
                upstream: Arc::clone(upstream),
                retry_in,
            }),
            None => Ok(()),
        }
    }
}

/// Run a background refresh.
pub(crate) fn spawn(task: impl std::future::Future<Output = ()> + Send + 'static) {
    // Outside a Tokio runtime (a benchmark polling by hand) there is nothing to run a
    // background refresh on; the token is then refreshed on expiry instead.
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(task);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn token(life: Duration) -> Token {
        Token {
            header: Arc::from("Bearer t"),
            lifetime: life,
            requested_at: Instant::now(),
        }
    }

    #[test]
    fn deadlines_respect_margin_and_refresh_ahead() {
        let t = token(Duration::from_secs(3600));
        let e = TokenEntry::new(&t, Duration::from_secs(300), true);
        assert_eq!(e.usable_until, t.requested_at + Duration::from_secs(3590));
        assert!(e.fresh(t.requested_at + Duration::from_secs(3589)));
        assert!(!e.fresh(t.requested_at + Duration::from_secs(3590)));
        let due = t.requested_at + Duration::from_secs(3300);
        assert!(!e.claim_refresh(due - Duration::from_millis(1)));
        assert!(e.claim_refresh(due), "due at lifetime - refresh_ahead");
        assert!(!e.claim_refresh(due), "claimed once");
        assert!(!e.claim_refresh(due + REFRESH_RETRY_INTERVAL - Duration::from_millis(1)));
        assert!(
            e.claim_refresh(due + REFRESH_RETRY_INTERVAL),
            "retried after the interval"
        );

        // Short token: margin is a tenth, refresh at half-life.
        let t = token(Duration::from_secs(2));
        let e = TokenEntry::new(&t, Duration::from_secs(300), true);
        assert_eq!(e.usable_until, t.requested_at + Duration::from_millis(1800));
        assert!(e.claim_refresh(t.requested_at + Duration::from_secs(1)));

        // No refresh when not worthwhile or disabled.
        let e = TokenEntry::new(&t, Duration::from_secs(300), false);
        assert!(!e.claim_refresh(t.requested_at + Duration::from_secs(100)));
        let e = TokenEntry::new(&t, Duration::ZERO, true);
        assert!(!e.claim_refresh(t.requested_at + Duration::from_secs(100)));
    }

    #[test]
    fn holdoff_honours_retry_after() {
        let h = Holdoff::default();
        assert!(h.remaining(Instant::now()).is_none());
        h.after(&Failure {
            status: Some(429),
            retry_after: Some(Duration::from_secs(7)),
            ..Failure::new(Outcome::Http429)
        });
        let left = h.remaining(Instant::now()).unwrap();
        assert!(
            left > Duration::from_secs(6) && left <= Duration::from_secs(7),
            "{left:?}"
        );
        // A shorter hold-off never shortens a longer one.
        h.after(&Failure {
            status: Some(503),
            ..Failure::new(Outcome::Http5xx)
        });
        assert!(h.remaining(Instant::now()).unwrap() > Duration::from_secs(6));
    }
}
