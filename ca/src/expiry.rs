//! Early warning for certificates and CAs that will soon expire, for daemons to log and export.

use time::{Duration, OffsetDateTime};

use crate::ca_cert::CaCert;
use crate::node_cert::NodeCert;
use crate::timefmt::rfc3339;

/// How far ahead of expiry the daemons start warning.
pub const DEFAULT_WARNING_WINDOW: Duration = Duration::days(30);

/// How far ahead of a revocation list's next-update time the daemons start warning: a quarter
/// of the 30 days `rma-ca crl` gives a list by default.
pub const CRL_WARNING_WINDOW: Duration = Duration::days(7);

/// A certificate that expires within the warning window (or already has).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryWarning {
    /// What expires, such as `CA "rma"` or `certificate "worker-1"`.
    pub subject: String,
    pub not_after: OffsetDateTime,
    /// Time left; zero or negative once expired.
    pub remaining: Duration,
}

impl std::fmt::Display for ExpiryWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.remaining <= Duration::ZERO {
            write!(f, "{} expired at {}", self.subject, rfc3339(self.not_after))
        } else {
            write!(
                f,
                "{} expires at {} (in {} days)",
                self.subject,
                rfc3339(self.not_after),
                self.remaining.whole_days()
            )
        }
    }
}

/// Anything with an end of validity that operators must renew in time.
pub trait Expiring {
    fn expiry_subject(&self) -> String;
    fn expires_at(&self) -> OffsetDateTime;

    /// Seconds until expiry at `now`, negative once expired: the value daemons export as a metric.
    fn seconds_to_expiry(&self, now: OffsetDateTime) -> i64 {
        (self.expires_at() - now).whole_seconds()
    }

    /// A warning when expiry is at most `window` after `now`.
    fn expiry_warning(&self, now: OffsetDateTime, window: Duration) -> Option<ExpiryWarning> {
        let remaining = self.expires_at() - now;
        (remaining <= window).then(|| ExpiryWarning {
            subject: self.expiry_subject(),
            not_after: self.expires_at(),
            remaining,
        })
    }
}

impl crate::RevocationList {
    /// A warning when this list's next-update time is at most `window` after `now`, or past.
    /// A list past it is still used (revocations never go back, and refusing every peer
    /// because a newer list is late would take the mesh down): the warning asks the CA holder
    /// to publish one.
    pub fn next_update_warning(
        &self,
        now: OffsetDateTime,
        window: Duration,
    ) -> Option<ExpiryWarning> {
        let next = self.next_update()?;
        let remaining = next - now;
        (remaining <= window).then(|| ExpiryWarning {
            subject: match self.number() {
                Some(n) => {
                    format!("revocation list number {n} (publish a newer one with `rma-ca crl`)")
                }
                None => "revocation list (publish a newer one with `rma-ca crl`)".to_owned(),
            },
            not_after: next,
            remaining,
        })
    }

    /// Seconds until the next-update time at `now`, negative once past; `None` for a list
    /// without one. The value daemons export as a metric.
    pub fn seconds_to_next_update(&self, now: OffsetDateTime) -> Option<i64> {
        self.next_update().map(|next| (next - now).whole_seconds())
    }

    /// The soonest [`RevocationList::seconds_to_next_update`] of `lists`: what daemons export,
    /// since any list past due needs the operator.
    pub fn soonest_next_update<'a>(
        lists: impl IntoIterator<Item = &'a Self>,
        now: OffsetDateTime,
    ) -> Option<i64> {
        lists
            .into_iter()
            .filter_map(|crl| crl.seconds_to_next_update(now))
            .min()
    }
}

impl Expiring for CaCert {
    fn expiry_subject(&self) -> String {
        format!("CA {:?}", self.name())
    }
    fn expires_at(&self) -> OffsetDateTime {
        self.not_after()
    }
}

impl Expiring for NodeCert {
    fn expiry_subject(&self) -> String {
        format!("certificate {:?}", self.name().as_str())
    }
    fn expires_at(&self) -> OffsetDateTime {
        self.not_after()
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::fixtures;

    #[test]
    fn warns_inside_the_window_only() {
        let alpha = fixtures::node("alpha.crt");
        assert_eq!(
            alpha.expiry_warning(fixtures::NOW, DEFAULT_WARNING_WINDOW),
            None
        );
        let soon = datetime!(2029-12-10 0:00 UTC);
        let warning = alpha.expiry_warning(soon, DEFAULT_WARNING_WINDOW).unwrap();
        assert_eq!(warning.remaining, Duration::days(22));
        assert_eq!(
            warning.to_string(),
            "certificate \"alpha\" expires at 2030-01-01T00:00:00Z (in 22 days)"
        );
        let late = alpha.expiry_warning(datetime!(2030-02-01 0:00 UTC), DEFAULT_WARNING_WINDOW);
        assert!(late.unwrap().to_string().contains("expired at"));
        let ca = fixtures::ca();
        assert_eq!(ca.seconds_to_expiry(datetime!(2035-12-31 0:00 UTC)), 86_400);
        assert!(
            ca.expiry_warning(datetime!(2035-12-31 0:00 UTC), DEFAULT_WARNING_WINDOW)
                .is_some()
        );
    }

    #[test]
    fn a_revocation_list_is_named_before_and_after_its_next_update() {
        let pki = crate::test_ca::TestCa::new("ca");
        // Issued at `start`, next update a week later.
        let crl = pki.crl(4, &[]);
        let issued = pki.start;
        assert_eq!(
            crl.seconds_to_next_update(issued),
            Some(7 * 86_400),
            "a week"
        );
        let window = Duration::days(2);
        assert_eq!(crl.next_update_warning(issued, window), None);
        let before = crl
            .next_update_warning(issued + Duration::days(6), window)
            .unwrap();
        assert_eq!(before.remaining, Duration::days(1));
        let text = before.to_string();
        assert!(text.starts_with("revocation list number 4"), "{text}");
        assert!(
            text.contains("rma-ca crl") && text.contains("in 1 days"),
            "{text}"
        );
        let after = issued + Duration::days(8);
        assert!(
            crl.next_update_warning(after, window)
                .unwrap()
                .to_string()
                .contains("expired at")
        );
        assert_eq!(crl.seconds_to_next_update(after), Some(-86_400));
    }
}
