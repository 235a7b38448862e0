//! Rate limits per caller: a token bucket per API key or client address. Pure logic; time is
//! passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rma_daemon::token_bucket::{Limit, TokenBucket};

/// At most this many callers have buckets of their own. At the bound, buckets that are full
/// again are dropped; callers beyond it that still find no room share one bucket, so that a
/// flood of new addresses costs a bounded table and limits only the newcomers.
const MAX_CALLERS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    limit: Limit,
    buckets: HashMap<String, TokenBucket>,
    overflow: TokenBucket,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            limit: Limit {
                rate: per_second,
                burst,
            },
            buckets: HashMap::new(),
            overflow: TokenBucket::new(
                Limit {
                    rate: per_second,
                    burst,
                },
                Instant::now(),
            ),
        }
    }

    /// Takes one call from `key`'s bucket, or says how long until one is allowed. A known
    /// caller's check allocates nothing.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if let Some(bucket) = self.buckets.get_mut(key) {
            return bucket.take(self.limit, now);
        }
        if self.buckets.len() >= MAX_CALLERS {
            self.sweep(now);
            if self.buckets.len() >= MAX_CALLERS {
                return self.overflow.take(self.limit, now);
            }
        }
        let mut bucket = TokenBucket::new(self.limit, now);
        let result = bucket.take(self.limit, now);
        self.buckets.insert(key.to_owned(), bucket);
        result
    }

    /// Forgets callers whose buckets have refilled: they are as if never seen.
    pub fn sweep(&mut self, now: Instant) {
        let limit = self.limit;
        self.buckets.retain(|_, b| !b.is_full(limit, now));
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_with_a_retry_after() {
        let mut limiter = RateLimiter::new(2.0, 3.0);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check("key-a", t0), Ok(()));
        }
        assert_eq!(limiter.check("key-a", t0), Err(Duration::from_millis(500)));
        assert_eq!(limiter.check("key-b", t0), Ok(()), "callers are separate");
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(limiter.check("key-a", t1), Ok(()));
        assert!(limiter.check("key-a", t1).is_err());
        // Refilled buckets are forgotten (key-b's, after 600 ms); partly used ones are kept.
        limiter.sweep(t1 + Duration::from_millis(100));
        assert_eq!(limiter.tracked(), 1);
        limiter.sweep(t1 + Duration::from_secs(2));
        assert_eq!(limiter.tracked(), 0);
    }

    /// A day of callers from ever-new addresses, fifty every ten seconds, with the sweep the
    /// daemon runs every second: the table holds only the callers of the last few seconds, and
    /// at its bound newcomers share one bucket while known callers keep theirs.
    #[test]
    fn a_day_of_new_callers_keeps_the_table_bounded() {
        let mut limiter = RateLimiter::new(1.0, 2.0);
        let t0 = Instant::now();
        let mut most = 0;
        for step in 0..8_640u64 {
            let now = t0 + Duration::from_secs(step * 10);
            for i in 0..50 {
                assert_eq!(limiter.check(&format!("ip:{step}.{i}"), now), Ok(()));
            }
            most = most.max(limiter.tracked());
            limiter.sweep(now + Duration::from_secs(2));
        }
        assert_eq!(most, 50, "one step's callers at most");
        assert_eq!(limiter.tracked(), 0);

        // Filled at one instant, so that nothing can be swept: newcomers share one bucket.
        let mut limiter = RateLimiter::new(1.0, 2.0);
        for i in 0..MAX_CALLERS {
            limiter.check(&format!("ip:{i}"), t0).unwrap();
        }
        assert_eq!(limiter.check("ip:new-1", t0), Ok(()));
        assert_eq!(limiter.check("ip:new-2", t0), Ok(()));
        assert!(
            limiter.check("ip:new-3", t0).is_err(),
            "the shared bucket is spent"
        );
        assert_eq!(limiter.tracked(), MAX_CALLERS);
        assert_eq!(
            limiter.check("ip:7", t0),
            Ok(()),
            "known callers keep theirs"
        );
    }
}
