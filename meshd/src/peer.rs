//! One certified peer: its certificate, its WireGuard tunnel and the paths to it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use boringtun::noise::Tunn;
use rma_ca::NodeCert;

use crate::status::{PeerCounters, PeerStatus};

/// A lighthouse, by its position in the configuration.
pub type LighthouseId = usize;

/// A direct path is trusted this long after the last authenticated packet that came over it.
/// After that, while a relay is available, packets go both ways until one proves itself.
pub(crate) const DIRECT_TRUST: Duration = Duration::from_secs(15);
/// How often a relayed peer is probed for a direct path: starting quickly, backing off.
pub(crate) const PROBE_FIRST: Duration = Duration::from_millis(500);
pub(crate) const PROBE_MAX: Duration = Duration::from_secs(16);

/// Where a datagram for a peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Direct(SocketAddr),
    Relay(LighthouseId),
    /// The direct path has gone quiet: send on both until one answers.
    Both(SocketAddr, LighthouseId),
    /// No path yet: try every candidate endpoint.
    Candidates,
}

/// Where a datagram from a peer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Direct(SocketAddr),
    /// Through a lighthouse, which names the sender's mesh IP.
    Relay(LighthouseId, std::net::Ipv4Addr),
}

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
        let (cert, keys) = pki.node("p", std::net::Ipv4Addr::new(10, 42, 0, 2));
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
        p.relay = Some(1);
        assert_eq!(p.route(t0, true), Route::Relay(1));
        assert_eq!(p.route(t0, false), Route::Candidates);
        assert_eq!(p.authenticated(Source::Direct(a), t0), Some(None));
        assert_eq!(p.route(t0, true), Route::Direct(a));
        assert_eq!(p.authenticated(Source::Direct(a), t0), None);
        let later = t0 + DIRECT_TRUST;
        assert_eq!(p.route(later, true), Route::Both(a, 1));
        assert!(!p.direct_trusted(later));
        // Without a relay, a quiet direct path is still the only path.
        assert_eq!(p.route(later, false), Route::Direct(a));
    }
}
