//! A service call's retry policy, without sockets: after each failed attempt, whether another
//! goes out (and whether it spends the retry budget) or the call is answered with the
//! failure. [`crate::proxy`] makes the attempts and asks the plan what comes next.

use std::sync::Arc;

/// Attempts per call that may fail on a worker: the first and one retry.
pub const ATTEMPTS: usize = 2;

/// Why an attempt got no answer the caller should have; its label names it in the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No connection to the worker could be opened.
    Connect,
    ConnectTimeout,
    /// A pooled connection the worker had closed refused the request's first byte: nothing
    /// reached the worker, and it says nothing about the worker.
    StaleConnection,
    /// The request went out, wholly or partly, and no answer came.
    Reset,
    /// The worker answered 502 or 503.
    Unavailable,
}

impl FailureKind {
    pub fn label(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::ConnectTimeout => "connect_timeout",
            Self::StaleConnection => "stale_connection",
            Self::Reset => "reset",
            Self::Unavailable => "status_5xx",
        }
    }

    /// Whether the request may have reached the worker.
    pub fn sent(self) -> bool {
        matches!(self, Self::Reset | Self::Unavailable)
    }

    /// Whether it counts towards the worker's ejection.
    pub fn counts_against_the_worker(self) -> bool {
        self != Self::StaleConnection
    }
}

/// What comes after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Another attempt, without spending the retry budget; the same worker may take it.
    RetryFree,
    /// Another attempt, on another worker, if the retry budget allows one.
    Retry,
    /// The call is answered with this failure.
    Answer,
}

/// One call's attempts so far.
#[derive(Debug)]
pub struct Plan {
    /// The body is in hand, so a request that reached a worker can be sent again.
    kept: bool,
    /// Workers that failed this call; the next pick avoids them.
    failed: Vec<Arc<str>>,
    picks: usize,
}

impl Plan {
    pub fn new(kept: bool) -> Self {
        Self {
            kept,
            failed: Vec::new(),
            picks: 0,
        }
    }

    /// Notes that a worker is being picked; `true` for the call's first pick (the one the
    /// retry budget counts as a call).
    pub fn pick(&mut self) -> bool {
        self.picks += 1;
        self.picks == 1
    }

    pub fn failed(&self) -> &[Arc<str>] {
        &self.failed
    }

    /// After `worker` failed the call with `kind`.
    pub fn next(&mut self, worker: &Arc<str>, kind: FailureKind) -> Next {
        // A closed pooled connection is tried again at no cost, while a retry would still be
        // allowed: each is one idle connection fewer, so this ends.
        if kind == FailureKind::StaleConnection && self.failed.len() < ATTEMPTS {
            return Next::RetryFree;
        }
        self.failed.push(Arc::clone(worker));
        let may = !kind.sent() || self.kept;
        if may && self.failed.len() < ATTEMPTS {
            Next::Retry
        } else {
            Next::Answer
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    #[test]
    fn a_failure_before_sending_is_retried_once_on_another_worker() {
        for kind in [FailureKind::Connect, FailureKind::ConnectTimeout] {
            // Whether the body was kept or streamed: nothing of it went out.
            for kept in [false, true] {
                let mut plan = Plan::new(kept);
                assert!(plan.pick());
                assert_eq!(plan.next(&worker("w1"), kind), Next::Retry);
                assert!(!plan.pick());
                assert_eq!(plan.failed(), [worker("w1")]);
                assert_eq!(plan.next(&worker("w2"), kind), Next::Answer);
            }
        }
    }

    #[test]
    fn a_request_that_went_out_is_sent_again_only_with_its_body_in_hand() {
        for kind in [FailureKind::Reset, FailureKind::Unavailable] {
            assert_eq!(Plan::new(false).next(&worker("w1"), kind), Next::Answer);
            let mut plan = Plan::new(true);
            assert_eq!(plan.next(&worker("w1"), kind), Next::Retry);
            assert_eq!(plan.next(&worker("w2"), kind), Next::Answer);
        }
    }

    #[test]
    fn stale_connections_cost_nothing_and_do_not_mark_the_worker() {
        let mut plan = Plan::new(false);
        assert!(plan.pick());
        for _ in 0..5 {
            assert_eq!(
                plan.next(&worker("w1"), FailureKind::StaleConnection),
                Next::RetryFree
            );
            assert!(!plan.pick(), "one call, counted once by the budget");
        }
        assert!(plan.failed().is_empty(), "w1 may take the call");
        assert!(!FailureKind::StaleConnection.counts_against_the_worker());
        assert_eq!(plan.next(&worker("w1"), FailureKind::Connect), Next::Retry);
        assert_eq!(plan.next(&worker("w2"), FailureKind::Connect), Next::Answer);
        // With no attempt left, a stale connection ends the call as any failure does.
        assert_eq!(
            plan.next(&worker("w2"), FailureKind::StaleConnection),
            Next::Answer
        );
    }
}
