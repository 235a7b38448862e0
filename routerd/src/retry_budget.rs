//! The retry budget: retries may add about `ratio` of the calls, plus a small reserve, so a
//! failing fleet is not hit with twice its load.

/// Retries a budget holds when routerd starts, and at most.
const RESERVE: f64 = 10.0;

#[derive(Debug, Clone)]
pub struct RetryBudget {
    ratio: f64,
    tokens: f64,
}

impl RetryBudget {
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio,
            tokens: RESERVE,
        }
    }

    /// Every call earns `ratio` of a retry.
    pub fn called(&mut self) {
        self.tokens = (self.tokens + self.ratio).min(RESERVE);
    }

    /// Takes a retry from the budget, if one is left.
    pub fn try_retry(&mut self) -> bool {
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_near_the_ratio_of_calls() {
        let mut budget = RetryBudget::new(0.2);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.called();
            // Every call fails and wants a retry.
            if budget.try_retry() {
                retries += 1;
            }
        }
        assert!(
            (200..=211).contains(&retries),
            "{retries} retries for 1000 calls"
        );
        let mut none = RetryBudget::new(0.0);
        let spent = (0..100).filter(|_| none.try_retry()).count();
        assert_eq!(spent, 10, "only the reserve, once");
    }
}
