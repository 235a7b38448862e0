//! When meshd renews its certificate through the enrollment service it joined with: at a
//! share of the certificate's lifetime (two-thirds by default), and after a failure again with
//! backoff, from a minute up to an hour, never later than a minute before expiry. Time is an
//! argument; the shell does the asking.

use rma_ca::NodeCert;
use time::{Duration, OffsetDateTime};

/// The first retry after a failed renewal, doubling up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::minutes(1);
const MAX_RETRY: Duration = Duration::hours(1);

#[derive(Debug, Clone)]
pub struct Schedule {
    renew_at_permille: u16,
    next: OffsetDateTime,
    /// Failures since the last renewal.
    failures: u32,
}

impl Schedule {
    pub fn new(cert: &NodeCert, renew_at_permille: u16) -> Self {
        Self {
            renew_at_permille,
            next: due(cert, renew_at_permille),
            failures: 0,
        }
    }

    /// When the next attempt is due.
    pub fn next(&self) -> OffsetDateTime {
        self.next
    }

    pub fn is_due(&self, now: OffsetDateTime) -> bool {
        now >= self.next
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A renewal gave `cert`: the next is due at its share of that one's lifetime.
    pub fn renewed(&mut self, cert: &NodeCert) {
        self.failures = 0;
        self.next = due(cert, self.renew_at_permille);
    }

    /// An attempt at `now` failed for the certificate `cert`: try again after the backoff,
    /// but before `cert` expires.
    pub fn failed(&mut self, cert: &NodeCert, now: OffsetDateTime) {
        self.failures = self.failures.saturating_add(1);
        let doublings = self.failures.saturating_sub(1).min(6);
        let wait = (FIRST_RETRY * 2i32.pow(doublings)).min(MAX_RETRY);
        let last_chance = cert.not_after() - FIRST_RETRY;
        self.next = (now + wait).min(last_chance.max(now + FIRST_RETRY));
    }
}

/// `permille` thousandths of the way from `cert`'s start to its end.
fn due(cert: &NodeCert, permille: u16) -> OffsetDateTime {
    let lifetime = cert.not_after() - cert.not_before();
    cert.not_before() + lifetime * (f64::from(permille) / 1000.0)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use rma_ca::test_ca::TestCa;

    use super::*;

    fn cert(pki: &TestCa, keys: &rma_ca::NodeKeys, from: OffsetDateTime, days: i64) -> NodeCert {
        pki.sign_keys(
            "n",
            Ipv4Addr::new(10, 42, 0, 9),
            keys,
            from,
            from + Duration::days(days),
        )
    }

    /// 300 days of 30-day certificates, every fifth attempt failing for a while: renewals come at
    /// two-thirds of each lifetime, retries back off to an hour at most, a certificate never
    /// lapses, and the failure count starts again after each success.
    #[test]
    fn three_hundred_simulated_days_of_renewals_with_outages() {
        let pki = TestCa::new("ca");
        let keys = rma_ca::NodeKeys::generate();
        let mut current = cert(&pki, &keys, pki.start, 30);
        let mut schedule = Schedule::new(&current, 667);
        assert_eq!(schedule.next(), pki.start + Duration::days(30) * 0.667);
        let mut now = pki.start;
        let (mut renewals, mut attempts, mut most_failures) = (0, 0u32, 0);
        let end = pki.start + Duration::days(300);
        while now < end {
            // The shell wakes at least once a minute.
            now += Duration::seconds(30);
            assert!(now < current.not_after(), "the certificate lapsed at {now}");
            if !schedule.is_due(now) {
                continue;
            }
            attempts += 1;
            // An outage of twelve attempts after every fifth renewal.
            let outage = renewals % 5 == 4 && schedule.failures() < 12;
            if outage {
                let before = schedule.next();
                schedule.failed(&current, now);
                let wait = schedule.next() - now;
                assert!(
                    wait >= Duration::minutes(1) && wait <= Duration::hours(1),
                    "{wait}"
                );
                assert!(schedule.next() > before);
                most_failures = most_failures.max(schedule.failures());
                continue;
            }
            current = cert(&pki, &keys, now, 30);
            schedule.renewed(&current);
            assert_eq!(schedule.failures(), 0);
            renewals += 1;
        }
        assert_eq!(
            renewals, 14,
            "300 days of renewals every 20 days, less the outages"
        );
        assert_eq!(most_failures, 12);
        assert!(attempts < renewals + 12 * 4 + 1, "{attempts} attempts");
    }

    #[test]
    fn retries_never_wait_past_the_last_minute_of_a_certificate() {
        let pki = TestCa::new("ca");
        let keys = rma_ca::NodeKeys::generate();
        let current = cert(&pki, &keys, pki.start, 1);
        let mut schedule = Schedule::new(&current, 667);
        let late = current.not_after() - Duration::minutes(10);
        for _ in 0..20 {
            schedule.failed(&current, late);
        }
        assert_eq!(schedule.next(), current.not_after() - Duration::minutes(1));
        // Past that, a retry a minute on at the least, never a busy loop.
        let later = current.not_after() + Duration::hours(1);
        schedule.failed(&current, later);
        assert_eq!(schedule.next(), later + Duration::minutes(1));
    }
}
