//! What unauthenticated input may cost the node. A hello costs a SHA-256, an X.509 parse and an
//! Ed25519 verification on the event loop, and an answer costs bytes on the wire, so both come
//! out of token buckets, per source address and for all sources together; a certificate that
//! was refused is refused again for a while from a cache, for the price of its hash; and the
//! log lines refusals write have a budget of their own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rma_ca::Fingerprint;
use rma_daemon::token_bucket::{KeyedBuckets, Limit, TokenBucket};

/// Hellos taken from one source address, and from all sources.
const HELLOS_PER_SOURCE: Limit = Limit {
    rate: 2.0,
    burst: 8.0,
};
const HELLOS: Limit = Limit {
    rate: 200.0,
    burst: 400.0,
};
/// Answers (hellos, punches) sent to one source address, and to all.
const ANSWERS_PER_SOURCE: Limit = Limit {
    rate: 1.0,
    burst: 4.0,
};
const ANSWERS: Limit = Limit {
    rate: 200.0,
    burst: 400.0,
};
/// Source addresses with buckets of their own, at most, per kind.
const MAX_SOURCES: usize = 4096;
/// How long a refused certificate stays refused without another look, and how many are kept.
const REFUSAL_MEMORY: Duration = Duration::from_secs(60);
const MAX_REFUSALS: usize = 4096;
/// Warning lines about refused certificates: a few a minute, the rest counted.
const LOG_LINES: Limit = Limit {
    rate: 10.0 / 60.0,
    burst: 10.0,
};

#[derive(Debug)]
pub(crate) struct Budget {
    hellos: KeyedBuckets<IpAddr>,
    all_hellos: TokenBucket,
    answers: KeyedBuckets<IpAddr>,
    all_answers: TokenBucket,
    refused: HashMap<Fingerprint, Instant>,
    log: TokenBucket,
    log_suppressed: u64,
}

impl Budget {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            hellos: KeyedBuckets::new(HELLOS_PER_SOURCE, MAX_SOURCES, now),
            all_hellos: TokenBucket::new(HELLOS, now),
            answers: KeyedBuckets::new(ANSWERS_PER_SOURCE, MAX_SOURCES, now),
            all_answers: TokenBucket::new(ANSWERS, now),
            refused: HashMap::new(),
            log: TokenBucket::new(LOG_LINES, now),
            log_suppressed: 0,
        }
    }

    /// Whether a hello from `source` may be looked at now: its source's budget.
    pub(crate) fn hello(&mut self, source: IpAddr, now: Instant) -> bool {
        self.hellos.take(&source, now).is_ok()
    }

    /// Whether a hello's certificate may be verified now: the budget all sources share, spent
    /// only on certificates that are neither known nor refused recently, so that floods of
    /// garbage from forged sources cannot starve the hellos of real peers.
    pub(crate) fn verification(&mut self, now: Instant) -> bool {
        self.all_hellos.take(HELLOS, now).is_ok()
    }

    /// Whether an answer may be sent to `to` now.
    pub(crate) fn answer(&mut self, to: IpAddr, now: Instant) -> bool {
        self.answers.take(&to, now).is_ok() && self.all_answers.take(ANSWERS, now).is_ok()
    }

    pub(crate) fn refused_recently(&self, fingerprint: &Fingerprint, now: Instant) -> bool {
        self.refused
            .get(fingerprint)
            .is_some_and(|until| *until > now)
    }

    pub(crate) fn remember_refusal(&mut self, fingerprint: Fingerprint, now: Instant) {
        if self.refused.len() >= MAX_REFUSALS {
            self.refused.retain(|_, until| *until > now);
            if self.refused.len() >= MAX_REFUSALS {
                self.refused.clear();
            }
        }
        self.refused.insert(fingerprint, now + REFUSAL_MEMORY);
    }

    /// Whether a warning may be logged now; if so, how many were held back since the last.
    pub(crate) fn log_line(&mut self, now: Instant) -> Option<u64> {
        if self.log.take(LOG_LINES, now).is_ok() {
            Some(std::mem::take(&mut self.log_suppressed))
        } else {
            self.log_suppressed += 1;
            None
        }
    }

    /// Forgets sources whose buckets have refilled and refusals that have run out.
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.hellos.sweep(now);
        self.answers.sweep(now);
        self.refused.retain(|_, until| *until > now);
    }

    /// Entries held: hello sources, answer sources, refused certificates.
    pub(crate) fn sizes(&self) -> (usize, usize, usize) {
        (
            self.hellos.tracked(),
            self.answers.tracked(),
            self.refused.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_source_spends_its_own_budget_and_the_node_caps_them_all() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let flooder = IpAddr::from([203, 0, 113, 66]);
        let taken = (0..100).filter(|_| budget.hello(flooder, t0)).count();
        assert_eq!(taken, 8, "the burst");
        assert!(
            budget.hello(IpAddr::from([203, 0, 113, 7]), t0),
            "another source"
        );
        // However many sources, verifications have the node's own cap.
        let verified = (0..10_000).filter(|_| budget.verification(t0)).count();
        assert_eq!(verified, 400);
        // A second later a source has two more.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!((0..10).filter(|_| budget.hello(flooder, t1)).count(), 2);
    }

    /// Six hours of a hostile neighbour rotating addresses, with the sweep the node runs every
    /// ten seconds: the tables never pass their bounds and empty out once it stops.
    #[test]
    fn hours_of_rotating_sources_stay_within_bounds() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let mut most = (0, 0, 0);
        for step in 0..2_160u32 {
            let now = t0 + Duration::from_secs(u64::from(step) * 10);
            for i in 0..500u32 {
                let source = IpAddr::from((step * 500 + i).to_be_bytes());
                budget.hello(source, now);
                budget.answer(source, now);
                budget.remember_refusal(Fingerprint::of(&source.to_string().into_bytes()), now);
            }
            budget.sweep(now);
            let (h, a, r) = budget.sizes();
            most = (most.0.max(h), most.1.max(a), most.2.max(r));
        }
        assert!(most.0 <= MAX_SOURCES && most.1 <= MAX_SOURCES, "{most:?}");
        assert!(most.2 <= MAX_REFUSALS, "{most:?}");
        budget.sweep(t0 + Duration::from_secs(7 * 3600));
        assert_eq!(budget.sizes(), (0, 0, 0));
    }

    #[test]
    fn log_lines_have_a_budget_and_say_how_many_were_held_back() {
        let t0 = Instant::now();
        let mut budget = Budget::new(t0);
        let logged = (0..100).filter_map(|_| budget.log_line(t0)).count();
        assert_eq!(logged, 10);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(budget.log_line(later), Some(90));
    }
}
