//! Rate limits per caller: a token bucket per API key or client address. Pure logic; time is
//! passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// More callers than this and buckets that are full again are dropped.
const SWEEP_ABOVE: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: HashMap<String, Bucket>,
}

impl RateLimiter {
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
    }

    /// Takes one call from `key`'s bucket, or says how long until one is allowed.
    pub fn check(&mut self, key: &str, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= SWEEP_ABOVE && !self.buckets.contains_key(key) {
            self.sweep(now);
        }
        let mut bucket = self.buckets.get(key).copied().unwrap_or(Bucket {
            tokens: self.burst,
            at: now,
        });
        self.refill(&mut bucket, now);
        let result = if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.per_second,
            ))
        };
        self.buckets.insert(key.to_owned(), bucket);
        result
    }

    /// Forgets callers whose buckets have refilled: they are as if never seen.
    pub fn sweep(&mut self, now: Instant) {
        let (per_second, burst) = (self.per_second, self.burst);
        self.buckets.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst
        });
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
