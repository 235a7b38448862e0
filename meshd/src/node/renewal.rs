//! This node's own certificate, renewed while it runs: swapped in without touching a session,
//! then handed to every peer on the route its traffic takes (a relayed peer gets it through the
//! lighthouse, which relays it like a WireGuard datagram).

use rma_ca::NodeCert;
use time::OffsetDateTime;

use super::{Messages, Node, Now, Output, paths};
use crate::status::Renewals;

/// What `meshd status` and the metrics say of renewals.
#[derive(Debug, Default)]
pub(super) struct Record {
    succeeded: u64,
    failed: u64,
    next_attempt: Option<OffsetDateTime>,
}

impl Record {
    pub(super) fn status(&self, now: OffsetDateTime) -> Renewals {
        Renewals {
            succeeded: self.succeeded,
            failed: self.failed,
            next_attempt: self.next_attempt.map(rma_ca::timefmt::rfc3339),
            next_attempt_in_secs: self.next_attempt.map(|t| (t - now).whole_seconds()),
        }
    }
}

/// Why a renewed certificate was not swapped in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenewalRefused {
    #[error("it is for another name, mesh IP or keys than this node's")]
    OtherIdentity,
    #[error("it does not expire later than the one in use")]
    NotLater,
    #[error("it is not trusted: {0}")]
    Untrusted(#[from] rma_ca::VerifyError),
}

impl Node {
    /// Swaps in `cert`, this node's renewed certificate: same name, mesh IP and keys, later
    /// expiry, trusted now. Every session stays; each peer gets this node's hello with it, and
    /// takes it in place of the old one (see `certified_slot`).
    pub fn renew_certificate(
        &mut self,
        cert: NodeCert,
        now: Now,
        out: &mut impl Output,
    ) -> Result<(), RenewalRefused> {
        if !self.cert.same_identity(&cert) {
            return Err(RenewalRefused::OtherIdentity);
        }
        if cert.not_after() <= self.cert.not_after() {
            return Err(RenewalRefused::NotLater);
        }
        self.trust.check(&cert, now.wall)?;
        self.messages = Messages::new(&cert);
        self.cert = cert;
        for peer in self.peers.iter() {
            paths::send_control(
                peer,
                &self.lighthouses,
                &self.messages.hello_answer,
                now,
                out,
            );
        }
        Ok(())
    }

    /// Notes an attempt to renew: whether it succeeded, and when the next is due.
    pub fn record_renewal(&mut self, succeeded: bool, next_attempt: OffsetDateTime) {
        if succeeded {
            self.renewals.succeeded += 1;
        } else {
            self.renewals.failed += 1;
        }
        self.renewals.next_attempt = Some(next_attempt);
    }

    /// When the first attempt to renew is due (set once, at start).
    pub fn set_next_renewal(&mut self, at: OffsetDateTime) {
        self.renewals.next_attempt = Some(at);
    }

    /// This node's certificate, as it presents it now.
    pub fn certificate(&self) -> &NodeCert {
        &self.cert
    }
}
