//! Rate limits per caller: a token bucket per API key or client address. Pure logic; time is
//! passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rma_daemon::token_bucket::{Limit, TokenBucket};

/// More callers than this and buckets that are full again are dropped.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    limit: Limit,
    buckets: HashMap<String, TokenBucket>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            limit: Limit {
                rate: per_second,
                burst,
            },
            buckets: HashMap::new(),
        }
    }

    /// Takes one call from `key`'s bucket, or says how long until one is allowed. A known
    /// caller's check allocates nothing.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if let Some(bucket) = self.buckets.get_mut(key) {
            return bucket.take(self.limit, now);
        }
        if self.buckets.len() >= SWEEP_ABOVE {
            self.sweep(now);
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
}
