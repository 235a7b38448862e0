//! What the node reports about itself: `meshd status`, the sizes of its tables, and the
//! certificates and revocation list near their end.

use std::time::Instant;

use time::OffsetDateTime;

use super::{Node, Now};
use crate::status::{Status, Tables};

impl Node {
    /// Warnings for this node's certificate and the CA when either expires within the
    /// warning window at `wall`, and for the revocation list in use when its next update is
    /// due within its window or past. The shell logs them at start and once a day.
    pub fn expiry_warnings(&self, wall: OffsetDateTime) -> Vec<rma_ca::ExpiryWarning> {
        use rma_ca::Expiring as _;
        let lists = self
            .trust
            .lists()
            .filter_map(|crl| crl.next_update_warning(wall, rma_ca::CRL_WARNING_WINDOW));
        [
            self.cert
                .expiry_warning(wall, rma_ca::DEFAULT_WARNING_WINDOW),
            self.cert
                .issuing_ca()
                .and_then(|ca| ca.expiry_warning(wall, rma_ca::DEFAULT_WARNING_WINDOW)),
            self.trust
                .ca()
                .expiry_warning(wall, rma_ca::DEFAULT_WARNING_WINDOW),
        ]
        .into_iter()
        .flatten()
        .chain(lists)
        .collect()
    }

    /// The sizes of the node's tables, each of which has a bound.
    pub fn tables(&self) -> Tables {
        let (hello_sources, answer_sources, refused_certificates) = self.budget.sizes();
        Tables {
            peers: self.peers.len(),
            pending: self.pending.len(),
            pending_bytes: self.pending.bytes(),
            flows: self.firewall.tracked(),
            held_handshakes: self.held.len(),
            probes: self.probes.len(),
            hello_sources,
            answer_sources,
            refused_certificates,
        }
    }

    /// A snapshot of the node and its peers, with certificate lifetimes measured at `wall`.
    pub fn status_at(&mut self, now: Now) -> Status {
        for peer in self.peers.iter_mut() {
            peer.count_handshake();
        }
        let mut status = self.status(now.instant);
        status.cert_expires_in_secs = (self.cert.not_after() - now.wall).whole_seconds();
        status.ca_expires_in_secs = (self.trust.ca().not_after() - now.wall).whole_seconds();
        status.crl_next_update_in_secs =
            rma_ca::RevocationList::soonest_next_update(self.trust.lists(), now.wall);
        status.renewals = self.renewals.status(now.wall);
        status
    }

    pub fn status(&self, now: Instant) -> Status {
        let mut peers: Vec<_> = self
            .peers
            .iter()
            .map(|p| {
                let relay = p
                    .relay
                    .and_then(|id| self.lighthouses.get(id))
                    .map(|r| (r.label(), r.up));
                p.status(now, relay.as_ref().map(|(label, up)| (label.as_str(), *up)))
            })
            .collect();
        peers.sort_by(|a, b| a.mesh_ip.cmp(&b.mesh_ip));
        Status {
            name: self.cert.name().to_string(),
            mesh_ip: self.cert.mesh_ip().to_string(),
            cert_not_after: rma_ca::timefmt::rfc3339(self.cert.not_after()),
            cert_expires_in_secs: 0,
            ca_expires_in_secs: 0,
            crl_next_update_in_secs: None,
            drops: self.counters,
            tables: self.tables(),
            renewals: crate::status::Renewals::default(),
            busy_polls: self.busy_polls,
            peers,
            lighthouses: self.lighthouses.status(),
        }
    }
}
