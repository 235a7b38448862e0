//! Where the node decides whom to trust: a certificate from a hello or a lighthouse becomes a
//! peer only if the [`TrustStore`](rma_ca::TrustStore) accepts it, an established session is
//! never taken over by another certificate, and a newer revocation list ends the sessions it
//! revokes.

use std::sync::Arc;
use std::time::Duration;

use boringtun::noise::Tunn;
use boringtun::x25519::PublicKey;
use rma_ca::{CrlOffer, Fingerprint, NodeCert, RevocationList};

use super::peers::Peer;
use super::{Node, Now, Output};

/// A session whose last handshake is younger than this is established: a hello never
/// replaces its peer (WireGuard's REJECT_AFTER_TIME, after which the session is dead anyway).
const ESTABLISHED: Duration = Duration::from_secs(180);

impl Node {
    /// The peer holding the certificate `cert_der`: one already known (unless it has expired
    /// since), or a new peer if the certificate verifies. A peer with an established session is
    /// never replaced: only renewed, by a certificate for the same key and mesh IP that lasts
    /// longer. Where a certificate came from says nothing about where its holder is: a new
    /// peer's addresses are its configured ones, until the lighthouse or an authenticated
    /// packet says otherwise.
    ///
    /// `cert_der` is the certificate as presented: its DER, then its issuing CA's if any.
    pub(super) fn certified_slot(&mut self, cert_der: &[u8], now: Now) -> Option<usize> {
        let leaf = Fingerprint::of_first(cert_der);
        let known = self.peers.slot_of_fingerprint(&leaf).filter(|slot| {
            self.peers
                .get(*slot)
                .is_some_and(|p| now.wall <= p.cert.not_after())
        });
        if let Some(slot) = known {
            return Some(slot);
        }
        // Refusals are remembered by all the bytes presented: the same certificate with another
        // issuing CA's is another claim.
        let fingerprint = Fingerprint::of(cert_der);
        if self.budget.refused_recently(&fingerprint, now.instant) {
            self.counters.bad_cert += 1;
            return None;
        }
        if !self.budget.verification(now.instant) {
            self.counters.over_budget += 1;
            return None;
        }
        let cert = self.accept_certificate(cert_der, fingerprint, now)?;
        let key = cert.wireguard_key()?.0;
        for slot in self.peers.holders(cert.mesh_ip(), &key) {
            let Some(peer) = self.peers.get(slot) else {
                continue;
            };
            let established = peer
                .tunn
                .time_since_last_handshake()
                .is_some_and(|age| age < ESTABLISHED);
            if !established {
                continue;
            }
            let renewal = peer.cert.mesh_ip() == cert.mesh_ip()
                && peer.cert.wireguard_key() == cert.wireguard_key()
                && cert.not_after() > peer.cert.not_after();
            if !renewal {
                self.counters.hello_conflict += 1;
                return None;
            }
            tracing::info!(parent: &peer.span, not_after = %rma_ca::timefmt::rfc3339(cert.not_after()), "peer certificate renewed");
            self.peers.renew(slot, cert);
            return Some(slot);
        }
        self.add_peer(cert, now)
    }

    /// Verifies a peer's certificate; refusals are counted, remembered for a while, and logged
    /// within a budget of lines.
    fn accept_certificate(
        &mut self,
        cert_der: &[u8],
        fingerprint: Fingerprint,
        now: Now,
    ) -> Option<NodeCert> {
        match self.trust.accept(cert_der, now.wall) {
            Ok(cert) if cert.mesh_ip() == self.cert.mesh_ip() => {
                tracing::debug!(peer = %cert.name(), "ignored a hello carrying this node's mesh IP");
                None
            }
            Ok(cert) => Some(cert),
            Err(reason) => {
                self.counters.bad_cert += 1;
                self.budget.remember_refusal(fingerprint, now.instant);
                match self.budget.log_line(now.instant) {
                    Some(0) => tracing::warn!(%fingerprint, %reason, "refused peer certificate"),
                    Some(held_back) => {
                        tracing::warn!(%fingerprint, %reason, held_back, "refused peer certificate (and others not logged)")
                    }
                    None => {}
                }
                None
            }
        }
    }

    /// Makes `cert` a peer, replacing whatever held its mesh IP or WireGuard key before (the
    /// caller has made sure no established session is among them).
    fn add_peer(&mut self, cert: NodeCert, now: Now) -> Option<usize> {
        let key = cert.wireguard_key()?.0;
        for slot in self.peers.holders(cert.mesh_ip(), &key) {
            self.peers.remove(slot);
        }
        let slot = self.peers.vacant()?;
        let tunn = Tunn::new(
            self.secret.clone(),
            PublicKey::from(key),
            None,
            self.keepalive,
            u32::try_from(slot).ok()?,
            Some(Arc::clone(&self.rate_limiter)),
        );
        // Every event about this peer is logged in its span, made once here.
        let span = tracing::info_span!("peer", name = %cert.name(), mesh_ip = %cert.mesh_ip());
        tracing::info!(parent: &span, "peer certified");
        let mut peer = Peer::new(cert, tunn, span);
        peer.candidates = self
            .static_peers
            .get(&peer.cert.mesh_ip())
            .cloned()
            .unwrap_or_default();
        self.peers.insert(slot, peer);
        self.next_tick.get_or_insert(now.instant);
        Some(slot)
    }

    /// Offers a revocation list read from the configured file. A list a lighthouse pushed may
    /// be newer than the file: the list in use is replaced only by a newer one.
    pub fn offer_crl(&mut self, crl: RevocationList, now: Now, out: &mut impl Output) -> CrlOffer {
        let offer = self.trust.offer(crl.clone(), now.wall);
        if offer == CrlOffer::Replaced {
            self.crl_replaced(&crl, now, out);
        }
        offer
    }

    /// The root's revocation list in use (from the config, or newer from a lighthouse).
    pub fn crl(&self) -> Option<&RevocationList> {
        self.trust.crl()
    }

    /// Every revocation list in use: the root's, then issuing CAs'.
    pub fn lists(&self) -> impl Iterator<Item = &RevocationList> {
        self.trust.lists()
    }

    /// A newer list `crl` is in use: the shell hears of it, and every session it revokes ends.
    pub(super) fn crl_replaced(&mut self, crl: &RevocationList, now: Now, out: &mut impl Output) {
        out.crl_changed(crl);
        self.end_untrusted_sessions(now);
    }

    /// Ends the session of every peer whose certificate no longer verifies.
    pub(super) fn end_untrusted_sessions(&mut self, now: Now) {
        let untrusted: Vec<(usize, String)> = self
            .peers
            .slots()
            .filter_map(|(slot, peer)| {
                let verdict = self.trust.check(&peer.cert, now.wall);
                verdict
                    .err()
                    .map(|e| (slot, format!("{}: {e}", peer.cert.name())))
            })
            .collect();
        for (slot, reason) in untrusted {
            tracing::warn!(%reason, "peer no longer trusted; session ended");
            self.peers.remove(slot);
        }
    }
}
