//! Rate limits per caller: a token bucket per API key or client address. Pure logic; time is
//! passed in.

use std::time::{Duration, Instant};

use rma_daemon::token_bucket::{KeyedBuckets, Limit};

/// At most this many callers have buckets of their own (see [`KeyedBuckets`]).
const MAX_CALLERS: usize = 100_000;

#[derive(Debug)]
pub struct RateLimiter {
    buckets: KeyedBuckets<String>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        let limit = Limit {
            rate: per_second,
            burst,
        };
        Self {
            buckets: KeyedBuckets::new(limit, MAX_CALLERS, Instant::now()),
        }
    }

    /// Takes one call from `key`'s bucket, or says how long until one is allowed. A known
    /// caller's check allocates nothing.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        self.buckets.take(key, now)
    }

    /// Forgets callers whose buckets have refilled: they are as if never seen.
    pub fn sweep(&mut self, now: Instant) {
        self.buckets.sweep(now);
    }

    pub fn tracked(&self) -> usize {
        self.buckets.tracked()
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
