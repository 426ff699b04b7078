//! Rate-limited logging of the shell's recurring events (module docs of [`super`], "Logging").

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

/// Log rate limiting: a burst of this many lines per kind...
const LOG_BURST: u32 = 10;
/// ...then one line per this interval per kind.
const LOG_REFILL: Duration = Duration::from_secs(1);

/// Token bucket per log kind (module docs).
pub(super) struct LogLimiter {
    buckets: Mutex<HashMap<(&'static str, &'static str), Bucket>>,
}

struct Bucket {
    tokens: u32,
    refilled: std::time::Instant,
    suppressed: u64,
}

pub(super) static LOG_LIMIT: LazyLock<LogLimiter> = LazyLock::new(LogLimiter::new);

impl LogLimiter {
    fn new() -> LogLimiter {
        LogLimiter {
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(lines suppressed since the last one)` if a line of this kind may be logged now.
    pub(super) fn allow(&self, kind: &'static str, label: &'static str) -> Option<u64> {
        self.allow_at(kind, label, std::time::Instant::now())
    }

    fn allow_at(
        &self,
        kind: &'static str,
        label: &'static str,
        now: std::time::Instant,
    ) -> Option<u64> {
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = map.entry((kind, label)).or_insert(Bucket {
            tokens: LOG_BURST,
            refilled: now,
            suppressed: 0,
        });
        let elapsed = now.saturating_duration_since(b.refilled);
        let new = (elapsed.as_nanos() / LOG_REFILL.as_nanos()) as u32;
        if new > 0 {
            b.tokens = b.tokens.saturating_add(new).min(LOG_BURST);
            b.refilled = now;
        }
        if b.tokens == 0 {
            b.suppressed += 1;
            return None;
        }
        b.tokens -= 1;
        Some(std::mem::take(&mut b.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limiter_bursts_then_suppresses_then_reports() {
        let l = LogLimiter::new();
        let t0 = std::time::Instant::now();
        for _ in 0..LOG_BURST {
            assert_eq!(l.allow_at("k", "4", t0), Some(0));
        }
        for _ in 0..500 {
            assert_eq!(l.allow_at("k", "4", t0), None);
        }
        // Other kinds and labels have their own bucket.
        assert_eq!(l.allow_at("k", "10", t0), Some(0));
        let t1 = t0 + LOG_REFILL;
        assert_eq!(l.allow_at("k", "4", t1), Some(500));
        assert_eq!(l.allow_at("k", "4", t1), None);
        assert_eq!(l.allow_at("k", "4", t1 + LOG_REFILL * 100), Some(1));
    }
}
