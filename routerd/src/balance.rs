//! Which worker takes a call: per (service, worker) state for load balancing, active health
//! and passive ejection. Pure logic; time and randomness are passed in.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::{Balance, Ejection, Health};
pub use crate::routes::Candidate;

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick<'a> {
    /// One of the candidates (the call's route holds them).
    Worker(&'a Candidate),
    /// Workers are registered but none can take the call (unhealthy, or already tried).
    NoneHealthy {
        registered: usize,
    },
    NoWorkers,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BackendView {
    pub healthy: bool,
    pub ejected: bool,
    pub outstanding: u32,
    /// In flight as the worker reported it.
    pub reported: u32,
    pub calls: u64,
    pub errors: u64,
    pub ejections: u64,
}

#[derive(Debug, Clone)]
struct State {
    healthy: bool,
    /// Consecutive active-check results against the current state.
    streak: u32,
    consecutive_errors: u32,
    ejected_until: Option<Instant>,
    /// Ejections since the worker last served a full `Ejection::max` without one; sets the
    /// next ejection's length.
    recent_ejections: u32,
    last_ejected: Option<Instant>,
    outstanding: u32,
    /// Calls in flight as the worker last reported them (every replica's, not only ours).
    reported: u32,
    calls: u64,
    errors: u64,
    ejections: u64,
}

impl Default for State {
    /// A worker starts healthy: a registration or a restored one routes at once.
    fn default() -> Self {
        Self {
            healthy: true,
            streak: 0,
            consecutive_errors: 0,
            ejected_until: None,
            recent_ejections: 0,
            last_ejected: None,
            outstanding: 0,
            reported: 0,
            calls: 0,
            errors: 0,
            ejections: 0,
        }
    }
}

impl State {
    fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// The calls the worker has in flight as best this replica knows: its own count, or the
    /// worker's last report when that is higher (other replicas' calls, or work the worker
    /// took on another way). The report is a heartbeat old; our own count is current.
    fn load(&self) -> u32 {
        self.outstanding.max(self.reported)
    }
}

#[derive(Debug)]
pub struct Balancer {
    policy: Balance,
    health: Health,
    ejection: Ejection,
    /// By service, then worker: looked up by `&str` several times on every call, without
    /// allocating, with a fast hash (the names are the registry's, not callers').
    states: FastMap<String, FastMap<String, State>>,
    next_round_robin: FastMap<String, usize>,
}

impl Balancer {
    pub fn new(policy: Balance, health: Health, ejection: Ejection) -> Self {
        Self {
            policy,
            health,
            ejection,
            states: FastMap::default(),
            next_round_robin: FastMap::default(),
        }
    }

    fn state(&self, service: &str, worker: &str) -> Option<&State> {
        self.states.get(service)?.get(worker)
    }

    fn state_mut(&mut self, service: &str, worker: &str) -> &mut State {
        if !self.states.contains_key(service) {
            self.states.insert(service.to_owned(), FastMap::default());
        }
        let workers = self.states.get_mut(service).expect("inserted above");
        if !workers.contains_key(worker) {
            workers.insert(worker.to_owned(), State::default());
        }
        workers.get_mut(worker).expect("inserted above")
    }

    fn healthy(&self, service: &str, worker: &str) -> bool {
        self.state(service, worker).is_none_or(|s| s.healthy)
    }

    fn available(&self, service: &str, worker: &str, now: Instant) -> bool {
        self.state(service, worker)
            .is_none_or(|s| s.healthy && !s.ejected(now))
    }

    /// The workers of `candidates` not in `tried` that may take a call: the available ones
    /// or, when none is, the healthy ones. Ejection never takes the last worker out; if
    /// health checks later took the others, an ejected but healthy worker is better than none.
    fn eligible<'a, 'c: 'a>(
        &'a self,
        service: &'a str,
        candidates: &'c [Candidate],
        tried: &'a [Arc<str>],
        now: Instant,
    ) -> impl Iterator<Item = &'c Candidate> + Clone + 'a {
        let untried = candidates
            .iter()
            .filter(move |c| !tried.contains(&c.worker));
        let any_available = untried
            .clone()
            .any(|c| self.available(service, &c.worker, now));
        untried.filter(move |c| {
            if any_available {
                self.available(service, &c.worker, now)
            } else {
                self.healthy(service, &c.worker)
            }
        })
    }

    /// Chooses among `candidates` (the registry's workers for `service`), skipping the
    /// workers in `tried`. `random(n)` returns a number below `n`.
    pub fn pick<'c>(
        &mut self,
        service: &str,
        candidates: &'c [Candidate],
        tried: &[Arc<str>],
        now: Instant,
        mut random: impl FnMut(usize) -> usize,
    ) -> Pick<'c> {
        if candidates.is_empty() {
            return Pick::NoWorkers;
        }
        let (chosen, next_round_robin) = {
            let eligible = self.eligible(service, candidates, tried, now);
            let nth = |i: usize| eligible.clone().nth(i);
            match eligible.clone().count() {
                0 => {
                    return Pick::NoneHealthy {
                        registered: candidates.len(),
                    };
                }
                1 => (nth(0), None),
                n => match self.policy {
                    Balance::RoundRobin => {
                        let next = self.next_round_robin.get(service).copied().unwrap_or(0);
                        (nth(next % n), Some(next.wrapping_add(1)))
                    }
                    Balance::LeastOutstanding => {
                        let a = random(n);
                        let b = (a + 1 + random(n - 1)) % n;
                        let load = |c: &Option<&Candidate>| {
                            c.and_then(|c| self.state(service, &c.worker))
                                .map_or(0, State::load)
                        };
                        let (a, b) = (nth(a), nth(b));
                        (if load(&b) < load(&a) { b } else { a }, None)
                    }
                },
            }
        };
        if let Some(next) = next_round_robin {
            match self.next_round_robin.get_mut(service) {
                Some(counter) => *counter = next,
                None => {
                    self.next_round_robin.insert(service.to_owned(), next);
                }
            }
        }
        chosen.map_or(
            Pick::NoneHealthy {
                registered: candidates.len(),
            },
            Pick::Worker,
        )
    }

    /// The worker's heartbeat reported `active` calls in flight for `service`.
    pub fn reported(&mut self, service: &str, worker: &str, active: u32) {
        if let Some(state) = self.states.get_mut(service).and_then(|w| w.get_mut(worker)) {
            state.reported = active;
        } else if active > 0 {
            self.state_mut(service, worker).reported = active;
        }
    }

    /// A call was sent to the worker.
    pub fn started(&mut self, service: &str, worker: &str) {
        let state = self.state_mut(service, worker);
        state.outstanding += 1;
        state.calls += 1;
    }

    /// The call's response ended (or it failed).
    pub fn finished(&mut self, service: &str, worker: &str) {
        if let Some(state) = self.states.get_mut(service).and_then(|w| w.get_mut(worker)) {
            state.outstanding = state.outstanding.saturating_sub(1);
        }
    }

    /// The worker answered with something other than a 502 or 503.
    pub fn succeeded(&mut self, service: &str, worker: &str, now: Instant) {
        let max = self.ejection.max;
        let state = self.state_mut(service, worker);
        state.consecutive_errors = 0;
        if state
            .last_ejected
            .is_some_and(|t| now.saturating_duration_since(t) > max)
        {
            state.recent_ejections = 0;
        }
    }

    /// A connect error, 502 or 503 from the worker. Returns how long it is ejected for, if
    /// this ejects it. The last available worker of `candidates` is never ejected.
    pub fn failed(
        &mut self,
        service: &str,
        worker: &str,
        candidates: &[Candidate],
        now: Instant,
    ) -> Option<Duration> {
        let others_available = candidates
            .iter()
            .filter(|c| &*c.worker != worker && self.available(service, &c.worker, now))
            .count();
        let ejection = self.ejection;
        let state = self.state_mut(service, worker);
        state.errors += 1;
        state.consecutive_errors += 1;
        if state.consecutive_errors < ejection.consecutive_errors
            || state.ejected(now)
            || others_available == 0
        {
            return None;
        }
        let factor = 1u32 << state.recent_ejections.min(16);
        let length = ejection.base.saturating_mul(factor).min(ejection.max);
        state.ejected_until = Some(now + length);
        state.last_ejected = Some(now);
        state.recent_ejections += 1;
        state.ejections += 1;
        state.consecutive_errors = 0;
        Some(length)
    }

    /// An active health check's result. Returns the new health when it changed.
    pub fn checked(&mut self, service: &str, worker: &str, passed: bool) -> Option<bool> {
        let Health { rise, fall, .. } = self.health;
        let state = self.state_mut(service, worker);
        if passed == state.healthy {
            state.streak = 0;
            return None;
        }
        state.streak += 1;
        let needed = if state.healthy { fall } else { rise };
        if state.streak < needed {
            return None;
        }
        state.healthy = passed;
        state.streak = 0;
        if passed {
            // Back from an outage: start without the errors that led to it.
            state.consecutive_errors = 0;
            state.ejected_until = None;
        }
        Some(passed)
    }

    /// The (service, worker) pairs with state.
    pub fn tracked(&self) -> usize {
        self.states.values().map(|workers| workers.len()).sum()
    }

    /// Drops the state of (service, worker) pairs the registry no longer has.
    pub fn retain(&mut self, mut present: impl FnMut(&str, &str) -> bool) {
        for (service, workers) in &mut self.states {
            workers.retain(|worker, _| present(service, worker));
        }
        self.states.retain(|_, workers| !workers.is_empty());
    }

    pub fn view(&self, service: &str, worker: &str, now: Instant) -> BackendView {
        let state = self.state(service, worker).cloned().unwrap_or_default();
        BackendView {
            healthy: state.healthy,
            ejected: state.ejected(now),
            outstanding: state.outstanding,
            reported: state.reported,
            calls: state.calls,
            errors: state.errors,
            ejections: state.ejections,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn candidates(n: u8) -> Vec<Candidate> {
        (1..=n)
            .map(|i| Candidate::new(&format!("w{i}"), SocketAddr::from(([10, 42, 0, i], 8101))))
            .collect()
    }

    fn balancer(policy: Balance) -> Balancer {
        Balancer::new(
            policy,
            Health {
                interval: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 2,
                fall: 2,
            },
            Ejection {
                consecutive_errors: 3,
                base: Duration::from_secs(5),
                max: Duration::from_secs(60),
            },
        )
    }

    fn picked(pick: Pick) -> String {
        match pick {
            Pick::Worker(c) => c.worker.to_string(),
            other => panic!("no worker: {other:?}"),
        }
    }

    /// A deterministic stand-in for randomness: cycles through 0, 1, 2, ...
    fn counter() -> impl FnMut(usize) -> usize {
        let mut i = 0;
        move |n| {
            i += 1;
            i % n
        }
    }

    #[test]
    fn round_robin_takes_turns() {
        let mut b = balancer(Balance::RoundRobin);
        let c = candidates(3);
        let now = Instant::now();
        let order: Vec<String> = (0..6)
            .map(|_| picked(b.pick("rag", &c, &[], now, counter())))
            .collect();
        assert_eq!(order, ["w1", "w2", "w3", "w1", "w2", "w3"]);
    }

    #[test]
    fn two_choices_prefer_the_worker_with_fewer_calls_in_flight() {
        let mut b = balancer(Balance::LeastOutstanding);
        let c = candidates(2);
        let now = Instant::now();
        for _ in 0..3 {
            b.started("rag", "w1");
        }
        let mut random = counter();
        for _ in 0..10 {
            assert_eq!(picked(b.pick("rag", &c, &[], now, &mut random)), "w2");
        }
        for _ in 0..3 {
            b.finished("rag", "w1");
        }
        b.started("rag", "w2");
        assert_eq!(picked(b.pick("rag", &c, &[], now, &mut random)), "w1");
        // The two draws are always different workers: a source that always says 0 still
        // compares w1 with w2, so the busier w1 loses.
        let c3 = candidates(3);
        b.started("ner", "w1");
        assert_eq!(picked(b.pick("ner", &c3, &[], now, |_| 0)), "w2");
    }

    #[test]
    fn tried_workers_are_skipped_and_nothing_left_is_reported() {
        let mut b = balancer(Balance::LeastOutstanding);
        let c = candidates(2);
        let now = Instant::now();
        let tried = vec![Arc::from("w1")];
        assert_eq!(picked(b.pick("rag", &c, &tried, now, counter())), "w2");
        let both = vec![Arc::from("w1"), Arc::from("w2")];
        assert_eq!(
            b.pick("rag", &c, &both, now, counter()),
            Pick::NoneHealthy { registered: 2 }
        );
        assert_eq!(b.pick("rag", &[], &[], now, counter()), Pick::NoWorkers);
    }

    #[test]
    fn consecutive_errors_eject_for_a_doubling_time_but_never_the_last_worker() {
        let mut b = balancer(Balance::RoundRobin);
        let c = candidates(2);
        let t0 = Instant::now();
        assert_eq!(b.failed("rag", "w1", &c, t0), None);
        assert_eq!(b.failed("rag", "w1", &c, t0), None);
        assert_eq!(b.failed("rag", "w1", &c, t0), Some(Duration::from_secs(5)));
        for _ in 0..4 {
            assert_eq!(picked(b.pick("rag", &c, &[], t0, counter())), "w2");
        }
        // w2 fails too, but it is the last available worker: it stays.
        for _ in 0..5 {
            assert_eq!(b.failed("rag", "w2", &c, t0), None);
        }
        assert!(!b.view("rag", "w2", t0).ejected);
        // w1 returns after 5 s; its next ejection lasts twice as long.
        let t1 = t0 + Duration::from_secs(5);
        assert!(!b.view("rag", "w1", t1).ejected);
        b.succeeded("rag", "w2", t1);
        for _ in 0..2 {
            b.failed("rag", "w1", &c, t1);
        }
        assert_eq!(b.failed("rag", "w1", &c, t1), Some(Duration::from_secs(10)));
        // A success resets the count of consecutive errors.
        let t2 = t1 + Duration::from_secs(10);
        b.failed("rag", "w1", &c, t2);
        b.failed("rag", "w1", &c, t2);
        b.succeeded("rag", "w1", t2);
        assert_eq!(b.failed("rag", "w1", &c, t2), None);
        // After a quiet `max`, ejections start from `base` again.
        let t3 = t2 + Duration::from_secs(61);
        b.succeeded("rag", "w1", t3);
        for _ in 0..2 {
            b.failed("rag", "w1", &c, t3);
        }
        assert_eq!(b.failed("rag", "w1", &c, t3), Some(Duration::from_secs(5)));
        assert_eq!(b.view("rag", "w1", t3).ejections, 3);
    }

    #[test]
    fn active_checks_need_fall_failures_to_remove_and_rise_passes_to_restore() {
        let mut b = balancer(Balance::RoundRobin);
        let c = candidates(2);
        let now = Instant::now();
        assert_eq!(b.checked("rag", "w1", false), None);
        assert_eq!(
            b.checked("rag", "w1", true),
            None,
            "a pass resets the streak"
        );
        assert_eq!(b.checked("rag", "w1", false), None);
        assert_eq!(b.checked("rag", "w1", false), Some(false));
        for _ in 0..3 {
            assert_eq!(picked(b.pick("rag", &c, &[], now, counter())), "w2");
        }
        assert_eq!(b.checked("rag", "w2", false), None);
        assert_eq!(b.checked("rag", "w2", false), Some(false));
        assert_eq!(
            b.pick("rag", &c, &[], now, counter()),
            Pick::NoneHealthy { registered: 2 }
        );
        assert_eq!(b.checked("rag", "w1", true), None);
        assert_eq!(b.checked("rag", "w1", true), Some(true));
        assert_eq!(picked(b.pick("rag", &c, &[], now, counter())), "w1");
    }

    #[test]
    fn an_ejected_worker_still_serves_when_health_checks_took_every_other() {
        let mut b = balancer(Balance::RoundRobin);
        let c = candidates(2);
        let now = Instant::now();
        for _ in 0..3 {
            b.failed("rag", "w1", &c, now);
        }
        assert!(b.view("rag", "w1", now).ejected);
        b.checked("rag", "w2", false);
        b.checked("rag", "w2", false);
        assert_eq!(picked(b.pick("rag", &c, &[], now, counter())), "w1");
    }

    #[test]
    fn retain_forgets_workers_that_left() {
        let mut b = balancer(Balance::RoundRobin);
        b.started("rag", "w1");
        b.started("rag", "w2");
        b.retain(|_, worker| worker == "w2");
        let now = Instant::now();
        assert_eq!(b.view("rag", "w1", now).calls, 0);
        assert_eq!(b.view("rag", "w2", now).calls, 1);
    }
}
