//! The peer table: every certified peer, its certificate, its WireGuard tunnel and the paths
//! to it, found by slot (the session index boringtun puts in every datagram), mesh IP, WireGuard
//! key or certificate fingerprint.

use std::cell::Cell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use foldhash::fast::RandomState;
use rma_ca::{Fingerprint, NodeCert};

use super::lighthouses::LighthouseId;
use super::paths::{DIRECT_TRUST, PROBE_FIRST, Route, Source};
use crate::status::{PeerCounters, PeerStatus};

/// boringtun's session index is 24 bits; peers are numbered by slot below it.
const MAX_PEERS: usize = 1 << 24;

/// The peers, each in a slot, with one index per way a datagram or packet names its peer.
#[derive(Default)]
pub(crate) struct PeerTable {
    slots: Vec<Option<Peer>>,
    free: Vec<usize>,
    /// Looked up for every packet from the TUN: a seeded fast hash rather than SipHash.
    by_ip: HashMap<Ipv4Addr, usize, RandomState>,
    by_key: HashMap<[u8; 32], usize>,
    by_fingerprint: HashMap<Fingerprint, usize>,
    /// The last mesh IP looked up and its slot: the segments of one read all go to one peer.
    /// Forgotten whenever a peer comes or goes.
    last_ip: Cell<Option<(Ipv4Addr, usize)>>,
}

impl PeerTable {
    pub(crate) fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    pub(crate) fn get(&self, slot: usize) -> Option<&Peer> {
        self.slots.get(slot)?.as_ref()
    }

    pub(crate) fn get_mut(&mut self, slot: usize) -> Option<&mut Peer> {
        self.slots.get_mut(slot)?.as_mut()
    }

    pub(crate) fn slot_of_ip(&self, ip: Ipv4Addr) -> Option<usize> {
        if let Some((last, slot)) = self.last_ip.get()
            && last == ip
        {
            return Some(slot);
        }
        let slot = self.by_ip.get(&ip).copied()?;
        self.last_ip.set(Some((ip, slot)));
        Some(slot)
    }

    pub(crate) fn slot_of_key(&self, key: &[u8; 32]) -> Option<usize> {
        self.by_key.get(key).copied()
    }

    pub(crate) fn slot_of_fingerprint(&self, fingerprint: &Fingerprint) -> Option<usize> {
        self.by_fingerprint.get(fingerprint).copied()
    }

    /// The slot a session's receiver index names, if a peer holds it.
    pub(crate) fn slot_of_session(&self, receiver_idx: u32) -> Option<usize> {
        let slot = (receiver_idx >> 8) as usize;
        self.get(slot).is_some().then_some(slot)
    }

    pub(crate) fn by_ip_mut(&mut self, ip: Ipv4Addr) -> Option<&mut Peer> {
        let slot = self.slot_of_ip(ip)?;
        self.get_mut(slot)
    }

    pub(crate) fn by_name(&self, name: &str) -> Option<&Peer> {
        self.iter().find(|p| p.cert.name().as_str() == name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.slots.iter().flatten()
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Peer> {
        self.slots.iter_mut().flatten()
    }

    /// Every peer with its slot.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (usize, &Peer)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, peer)| Some((slot, peer.as_ref()?)))
    }

    pub(crate) fn slots_mut(&mut self) -> impl Iterator<Item = (usize, &mut Peer)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(slot, peer)| Some((slot, peer.as_mut()?)))
    }

    /// The slots of the peers holding `cert`'s mesh IP or WireGuard key (at most two).
    pub(crate) fn holders(&self, mesh_ip: Ipv4Addr, key: &[u8; 32]) -> Vec<usize> {
        let mut slots: Vec<usize> = [self.slot_of_ip(mesh_ip), self.slot_of_key(key)]
            .into_iter()
            .flatten()
            .collect();
        slots.dedup();
        slots
    }

    /// The slot the next peer takes, if the table has room.
    pub(crate) fn vacant(&self) -> Option<usize> {
        match self.free.last() {
            Some(slot) => Some(*slot),
            None => (self.slots.len() < MAX_PEERS).then_some(self.slots.len()),
        }
    }

    /// Puts `peer` in slot `slot` (from [`PeerTable::vacant`]), after whatever held its mesh
    /// IP or key has been removed.
    pub(crate) fn insert(&mut self, slot: usize, peer: Peer) {
        if self.free.last() == Some(&slot) {
            self.free.pop();
        } else {
            debug_assert_eq!(slot, self.slots.len(), "a slot from PeerTable::vacant");
            self.slots.push(None);
        }
        self.last_ip.set(None);
        self.by_ip.insert(peer.cert.mesh_ip(), slot);
        if let Some(key) = peer.cert.wireguard_key() {
            self.by_key.insert(key.0, slot);
        }
        self.by_fingerprint.insert(peer.cert.fingerprint(), slot);
        self.slots[slot] = Some(peer);
    }

    /// Gives the peer in `slot` a renewed certificate (same mesh IP and key).
    pub(crate) fn renew(&mut self, slot: usize, cert: NodeCert) {
        let Some(peer) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        self.by_fingerprint.remove(&peer.cert.fingerprint());
        self.by_fingerprint.insert(cert.fingerprint(), slot);
        peer.cert = cert;
    }

    pub(crate) fn remove(&mut self, slot: usize) -> Option<Peer> {
        let peer = self.slots.get_mut(slot).and_then(Option::take)?;
        self.last_ip.set(None);
        self.by_ip.remove(&peer.cert.mesh_ip());
        if let Some(key) = peer.cert.wireguard_key() {
            self.by_key.remove(&key.0);
        }
        self.by_fingerprint.remove(&peer.cert.fingerprint());
        self.free.push(slot);
        Some(peer)
    }
}

/// One certified peer.
pub(crate) struct Peer {
    pub(crate) cert: NodeCert,
    pub(crate) tunn: Tunn,
    /// The direct address in use: set from configuration or a hello, then moved by every
    /// authenticated datagram from a new address (roaming).
    pub(crate) endpoint: Option<SocketAddr>,
    /// When an authenticated datagram last arrived directly.
    pub(crate) direct_seen: Option<Instant>,
    /// Endpoints a lighthouse gave for this peer, tried while there is no direct path.
    pub(crate) candidates: Vec<SocketAddr>,
    /// The lighthouse that can relay to this peer.
    pub(crate) relay: Option<LighthouseId>,
    /// The next direct-path probe while relayed, and the interval after it.
    pub(crate) next_probe: Option<Instant>,
    pub(crate) probe_interval: Duration,
    /// The last time a punch from this peer was acted on (rate limit).
    pub(crate) punch_answered: Option<Instant>,
    /// Whether this node has started a handshake with the peer (it had something to send).
    pub(crate) initiated: bool,
    /// Handshake initiations sent since the peer was last heard from, and when this node last
    /// sent its own hello with one (a peer that lost this node's certificate cannot answer).
    pub(crate) unanswered_inits: u32,
    pub(crate) hello_sent: Option<Instant>,
    /// Whether the last authenticated datagram from the peer came through a lighthouse.
    pub(crate) heard_via_relay: bool,
    pub(crate) counters: PeerCounters,
    /// The span every event about this peer is logged in (name and mesh IP).
    pub(crate) span: tracing::Span,
    /// Completed handshakes, and the time since the last one as of the previous timer tick:
    /// a smaller value now means a handshake completed in between.
    pub(crate) handshakes: u64,
    pub(crate) since_handshake: Option<Duration>,
}

impl Peer {
    pub(crate) fn new(cert: NodeCert, tunn: Tunn, span: tracing::Span) -> Self {
        Self {
            cert,
            tunn,
            endpoint: None,
            direct_seen: None,
            candidates: Vec::new(),
            relay: None,
            next_probe: None,
            probe_interval: PROBE_FIRST,
            punch_answered: None,
            initiated: false,
            unanswered_inits: 0,
            hello_sent: None,
            heard_via_relay: false,
            counters: PeerCounters::default(),
            span,
            handshakes: 0,
            since_handshake: None,
        }
    }

    /// Where to send now, given whether the relaying lighthouse is connected.
    pub(crate) fn route(&self, now: Instant, relay_up: bool) -> Route {
        let relay = self.relay.filter(|_| relay_up);
        match (self.endpoint, relay) {
            (Some(endpoint), Some(lh)) if !self.direct_trusted(now) => Route::Both(endpoint, lh),
            (Some(endpoint), _) => Route::Direct(endpoint),
            (None, Some(lh)) => Route::Relay(lh),
            (None, None) => Route::Candidates,
        }
    }

    /// Whether an authenticated datagram arrived on the direct endpoint recently.
    pub(crate) fn direct_trusted(&self, now: Instant) -> bool {
        self.endpoint.is_some()
            && self
                .direct_seen
                .is_some_and(|t| now.saturating_duration_since(t) < DIRECT_TRUST)
    }

    /// Whether the peer's traffic needs its relay now: it has no direct endpoint, it was last
    /// heard through the relay, or handshakes on the direct path go unanswered. A direct path
    /// that is merely quiet between keepalives does not.
    pub(crate) fn needs_relay(&self, now: Instant) -> bool {
        self.relay.is_some()
            && !self.direct_trusted(now)
            && (self.endpoint.is_none() || self.heard_via_relay || self.unanswered_inits >= 2)
    }

    /// Notes an authenticated datagram from `source`; returns the old endpoint if the peer
    /// moved to a new direct address.
    pub(crate) fn authenticated(
        &mut self,
        source: Source,
        now: Instant,
    ) -> Option<Option<SocketAddr>> {
        self.unanswered_inits = 0;
        match source {
            Source::Direct(from) => {
                self.heard_via_relay = false;
                self.direct_seen = Some(now);
                self.probe_interval = PROBE_FIRST;
                (self.endpoint != Some(from)).then(|| self.endpoint.replace(from))
            }
            Source::Relay(lh, _) => {
                self.heard_via_relay = true;
                self.relay = Some(lh);
                None
            }
        }
    }

    /// Notes a handshake that completed since the last call (called every timer tick).
    pub(crate) fn count_handshake(&mut self) {
        let now = self.tunn.time_since_last_handshake();
        let completed = match (self.since_handshake, now) {
            (None, Some(_)) => true,
            (Some(before), Some(after)) => after < before,
            _ => false,
        };
        self.handshakes += u64::from(completed);
        self.since_handshake = now;
    }

    pub(crate) fn status(&self, now: Instant, relay: Option<(&str, bool)>) -> PeerStatus {
        let (since_handshake, tx, rx, _loss, rtt) = self.tunn.stats();
        let relay_up = relay.is_some_and(|(_, up)| up);
        let relayed = || ("relayed", relay.map(|(name, _)| name.to_owned()));
        // How the peer's packets reach this node: a direct path that merely went quiet (and
        // so also gets copies through the relay) is still direct.
        let (path, via) = match self.route(now, relay_up) {
            Route::Direct(_) => ("direct", None),
            Route::Relay(_) => relayed(),
            Route::Both(..) if self.heard_via_relay => relayed(),
            Route::Both(..) => ("direct", None),
            Route::Candidates => ("connecting", None),
        };
        PeerStatus {
            name: self.cert.name().to_string(),
            mesh_ip: self.cert.mesh_ip().to_string(),
            groups: self.cert.groups().iter().map(ToString::to_string).collect(),
            endpoint: self
                .endpoint
                .map_or_else(|| "-".to_owned(), |e| e.to_string()),
            path: path.into(),
            via,
            last_handshake_secs: since_handshake.as_ref().map(Duration::as_secs),
            handshakes: self.handshakes,
            rtt_ms: rtt,
            tx_bytes: tx as u64,
            rx_bytes: rx as u64,
            drops: self.counters,
            cert_not_after: rma_ca::timefmt::rfc3339(self.cert.not_after()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> Peer {
        let pki = rma_ca::test_ca::TestCa::new("ca");
        let (cert, keys) = pki.node("p", Ipv4Addr::new(10, 42, 0, 2));
        let secret = keys.wireguard_secret().clone();
        let public = boringtun::x25519::PublicKey::from(&secret);
        let tunn = Tunn::new(secret, public, None, None, 0, None);
        Peer::new(cert, tunn, tracing::Span::none())
    }

    #[test]
    fn the_route_prefers_a_fresh_direct_path_and_falls_back_to_the_relay() {
        let t0 = Instant::now();
        let a: SocketAddr = "192.0.2.1:4242".parse().unwrap();
        let mut p = peer();
        assert_eq!(p.route(t0, false), Route::Candidates);
        let lh = LighthouseId(1);
        p.relay = Some(lh);
        assert_eq!(p.route(t0, true), Route::Relay(lh));
        assert_eq!(p.route(t0, false), Route::Candidates);
        assert_eq!(p.authenticated(Source::Direct(a), t0), Some(None));
        assert_eq!(p.route(t0, true), Route::Direct(a));
        assert_eq!(p.authenticated(Source::Direct(a), t0), None);
        let later = t0 + DIRECT_TRUST;
        assert_eq!(p.route(later, true), Route::Both(a, lh));
        assert!(!p.direct_trusted(later));
        // Without a relay, a quiet direct path is still the only path.
        assert_eq!(p.route(later, false), Route::Direct(a));
    }
}
