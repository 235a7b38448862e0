//! A token bucket: `burst` calls at once, then `rate` per second, and a bounded table of them by
//! key. Pure logic; time is passed in. The lighthouse limits each node's queries with it,
//! routerd each caller's calls, meshd each source's hellos.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
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
        self.take_n(limit, 1.0, now)
    }

    /// Takes `n` tokens at once (bytes, for a budget of bandwidth), or says how long until
    /// they are there. Nothing is taken when they are not.
    pub fn take_n(&mut self, limit: Limit, n: f64, now: Instant) -> Result<(), Duration> {
        self.tokens = self.level(limit, now);
        self.at = now;
        if self.tokens >= n {
            self.tokens -= n;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((n - self.tokens) / limit.rate))
        }
    }

    /// Whether the bucket has refilled by `now`: it is then as good as a new one.
    pub fn is_full(&self, limit: Limit, now: Instant) -> bool {
        self.level(limit, now) >= limit.burst
    }
}

/// A token bucket per key, at most `max_keys` of them. At the bound, buckets that are full again
/// are dropped (they are as good as new); keys that still find no room share one bucket, so a
/// flood of new keys costs a bounded table and limits only the newcomers.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    limit: Limit,
    max_keys: usize,
    buckets: HashMap<K, TokenBucket>,
    overflow: TokenBucket,
    /// When a full table was last swept: at most once a second, so that a flood of new keys
    /// costs a lookup each, not a scan of the table.
    full_sweep: Option<Instant>,
}

impl<K: Hash + Eq> KeyedBuckets<K> {
    pub fn new(limit: Limit, max_keys: usize, now: Instant) -> Self {
        Self {
            limit,
            max_keys,
            buckets: HashMap::new(),
            overflow: TokenBucket::new(limit, now),
            full_sweep: None,
        }
    }

    /// Takes one token from `key`'s bucket, or says how long until one is there. A known key's
    /// take allocates nothing.
    pub fn take<Q>(&mut self, key: &Q, now: Instant) -> Result<(), Duration>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some(bucket) = self.buckets.get_mut(key) {
            return bucket.take(self.limit, now);
        }
        if self.buckets.len() >= self.max_keys {
            let due = self
                .full_sweep
                .is_none_or(|at| now.saturating_duration_since(at) >= Duration::from_secs(1));
            if due {
                self.full_sweep = Some(now);
                self.sweep(now);
            }
            if self.buckets.len() >= self.max_keys {
                return self.overflow.take(self.limit, now);
            }
        }
        let mut bucket = TokenBucket::new(self.limit, now);
        let taken = bucket.take(self.limit, now);
        self.buckets.insert(key.to_owned(), bucket);
        taken
    }

    /// Forgets keys whose buckets have refilled.
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

    /// A day of ever-new keys with a sweep every ten seconds keeps only the keys of the last
    /// few seconds; at the bound, newcomers share one bucket and known keys keep theirs.
    #[test]
    fn keyed_buckets_stay_bounded_over_a_day() {
        let limit = Limit {
            rate: 1.0,
            burst: 2.0,
        };
        let t0 = Instant::now();
        let mut table = KeyedBuckets::<u64>::new(limit, 1_000, t0);
        let mut most = 0;
        for step in 0..8_640u64 {
            let now = t0 + Duration::from_secs(step * 10);
            for i in 0..50 {
                assert_eq!(table.take(&(step * 50 + i), now), Ok(()));
            }
            most = most.max(table.tracked());
            table.sweep(now + Duration::from_secs(2));
        }
        assert_eq!((most, table.tracked()), (50, 0));

        for key in 0..1_000u64 {
            table.take(&key, t0).unwrap();
        }
        assert_eq!(table.take(&5_000, t0), Ok(()));
        assert_eq!(table.take(&5_001, t0), Ok(()));
        assert!(
            table.take(&5_002, t0).is_err(),
            "the shared bucket is spent"
        );
        assert_eq!(table.tracked(), 1_000);
        assert_eq!(table.take(&7, t0), Ok(()), "known keys keep theirs");
    }

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
