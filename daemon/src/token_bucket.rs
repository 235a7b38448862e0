//! A token bucket: `burst` calls at once, then `rate` per second. Pure logic; time is passed
//! in. The lighthouse limits each node's queries with it, routerd each caller's calls.

use std::time::{Duration, Instant};

/// How fast a bucket refills and how much it holds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Tokens added per second.
    pub rate: f64,
    /// The most a bucket holds (and what a new one starts with).
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(limit: Limit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            at: now,
        }
    }

    /// The tokens held at `now`, refill included (not stored).
    fn level(&self, limit: Limit, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * limit.rate).min(limit.burst)
    }

    /// Takes one token, or says how long until one is there.
    pub fn take(&mut self, limit: Limit, now: Instant) -> Result<(), Duration> {
        self.tokens = self.level(limit, now);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / limit.rate))
        }
    }

    /// Whether the bucket has refilled by `now`: it is then as good as a new one.
    pub fn is_full(&self, limit: Limit, now: Instant) -> bool {
        self.level(limit, now) >= limit.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_with_the_wait_for_the_next_token() {
        let limit = Limit {
            rate: 2.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(limit, t0);
        for _ in 0..3 {
            assert_eq!(bucket.take(limit, t0), Ok(()));
        }
        assert_eq!(bucket.take(limit, t0), Err(Duration::from_millis(500)));
        assert!(!bucket.is_full(limit, t0));
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(bucket.take(limit, t1), Ok(()));
        assert!(bucket.take(limit, t1).is_err());
        assert!(bucket.is_full(limit, t1 + Duration::from_millis(1500)));
    }
}
