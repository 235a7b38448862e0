//! The node's side of the lighthouse protocol: registering the WireGuard socket's public
//! address, introductions (answers to queries, and punch requests), hole punching, relayed
//! datagrams, the choice between direct and relayed paths, and revocation lists pushed by a
//! lighthouse. Still sans-IO: the shell carries the QUIC connections.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;
use lighthouse::proto::{FromLighthouse, MAX_LOCAL_ENDPOINTS, Target, ToLighthouse};
use lighthouse::wire::{self, TOKEN_LEN};
use rma_ca::RevocationList;

use super::{Node, Now, Output};
use crate::config::Lighthouse;
use crate::peer::{LighthouseId, PROBE_MAX, Peer, Route, Source};
use crate::status::LighthouseStatus;

/// How often the reflect token is sent until the lighthouse confirms it, and after that (which
/// also keeps the NAT mapping of the WireGuard socket open towards the lighthouse).
const REFLECT_RETRY: Duration = Duration::from_millis(500);
const REFLECT_KEEPALIVE: Duration = Duration::from_secs(20);
/// A retried handshake initiation carries this node's hello at most this often.
const HELLO_WITH_RETRY: Duration = Duration::from_secs(5);
/// A peer's punches are acted on at most this often.
const PUNCH_ANSWER_INTERVAL: Duration = Duration::from_millis(100);
/// How long a relayed handshake initiation from an unknown peer is kept, and how many at most.
const HELD_INIT_LIFETIME: Duration = Duration::from_secs(5);
const MAX_HELD_INITS: usize = 256;

/// Relayed handshake initiations that arrived before the lighthouse's punch request naming
/// their sender (the request travels on the control stream, the initiation as a datagram, and
/// either can win). Each is replayed once the sender's certificate arrives, instead of waiting
/// for WireGuard's 5-second retry. Keyed by the sender's certified mesh IP, which the
/// lighthouse stamps on every relayed packet.
#[derive(Debug, Default)]
pub(crate) struct HeldInits {
    by_ip: HashMap<Ipv4Addr, (LighthouseId, Vec<u8>, Instant)>,
}

impl HeldInits {
    pub(crate) fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        self.by_ip
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < HELD_INIT_LIFETIME);
    }
}

/// A configured lighthouse, as the core sees it.
#[derive(Debug)]
pub(crate) struct Beacon {
    pub(crate) name: String,
    address: SocketAddr,
    pub(crate) up: bool,
    token: Option<[u8; TOKEN_LEN]>,
    reflector: Option<SocketAddr>,
    observed: Option<SocketAddr>,
    pub(crate) next_reflect: Option<Instant>,
}

impl Beacon {
    pub(crate) fn new(config: &Lighthouse) -> Self {
        Self {
            name: config.name.clone(),
            address: config.address,
            up: false,
            token: None,
            reflector: None,
            observed: None,
            next_reflect: None,
        }
    }

    pub(crate) fn status(&self) -> LighthouseStatus {
        LighthouseStatus {
            name: self.name.clone(),
            address: self.address.to_string(),
            connected: self.up,
            observed: self.observed.map(|a| a.to_string()),
        }
    }
}

impl Node {
    /// Whether the lighthouse relaying for `peer` is connected.
    pub(super) fn relay_up(beacons: &[Beacon], peer: &Peer) -> bool {
        peer.relay
            .and_then(|id| beacons.get(id))
            .is_some_and(|b| b.up)
    }

    /// Sends one WireGuard datagram to a peer on its current route. A handshake initiation
    /// also goes to every candidate endpoint while there is no trusted direct path: it opens
    /// this side's NAT towards the peer, and whichever copy arrives first wins. A retried
    /// initiation that goes direct also carries this node's `hello` (at most every
    /// [`HELLO_WITH_RETRY`]): the peer may have lost this node's certificate (it restarted, or
    /// the first hello was lost), and it does not answer a handshake from a key it does not
    /// know, since an answer to unauthenticated input could be aimed at anyone.
    pub(super) fn send_datagram(
        peer: &mut Peer,
        relay_up: bool,
        datagram: &[u8],
        hello: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        let route = peer.route(now.instant, relay_up);
        let ip = peer.cert.mesh_ip();
        let init = datagram.first() == Some(&1);
        if init {
            peer.initiated = true;
            peer.unanswered_inits += 1;
            let due = peer
                .hello_sent
                .is_none_or(|t| now.instant.saturating_duration_since(t) >= HELLO_WITH_RETRY);
            // Ahead of the initiation, so that a peer that learns the certificate from it takes
            // the initiation at once.
            if peer.unanswered_inits >= 2 && due {
                peer.hello_sent = Some(now.instant);
                for to in peer.endpoint.iter().chain(&peer.candidates) {
                    out.transmit(*to, hello);
                }
            }
        }
        match route {
            Route::Direct(to) => out.transmit(to, datagram),
            Route::Relay(via) => out.relay(via, ip, datagram),
            Route::Both(to, via) => {
                out.transmit(to, datagram);
                out.relay(via, ip, datagram);
            }
            Route::Candidates => {
                for to in &peer.candidates {
                    out.transmit(*to, datagram);
                }
            }
        }
        if init && !matches!(route, Route::Direct(_) | Route::Candidates) {
            for to in peer
                .candidates
                .iter()
                .filter(|c| Some(**c) != peer.endpoint)
            {
                out.transmit(*to, datagram);
            }
        }
    }

    /// Answers a datagram the way it came.
    pub(super) fn send_back(
        source: Source,
        peer_ip: Ipv4Addr,
        datagram: &[u8],
        out: &mut impl Output,
    ) {
        match source {
            Source::Direct(to) => out.transmit(to, datagram),
            Source::Relay(via, _) => out.relay(via, peer_ip, datagram),
        }
    }

    /// Punches towards a relayed peer's endpoints; an answer leads to authenticated traffic on
    /// that path (see [`Node::handle_punch`]), which moves the session onto it.
    pub(super) fn probe_direct(punch: &[u8], peer: &mut Peer, now: Now, out: &mut impl Output) {
        for to in peer.candidates.iter().chain(peer.endpoint.iter()) {
            out.transmit(*to, punch);
        }
        peer.next_probe = Some(now.instant + peer.probe_interval);
        peer.probe_interval = (peer.probe_interval * 2).min(PROBE_MAX);
    }

    pub(super) fn ask_all(&self, target: Target, out: &mut impl Output) {
        for (id, _) in self.beacons.iter().enumerate().filter(|(_, b)| b.up) {
            out.ask(
                id,
                ToLighthouse::Query {
                    target: target.clone(),
                },
            );
        }
    }

    /// Repeats reflect messages until each lighthouse has seen the WireGuard socket, then keeps
    /// the mapping fresh.
    pub(super) fn beacon_timers(&mut self, now: Now, out: &mut impl Output) {
        let mut message = Vec::new();
        for beacon in &mut self.beacons {
            let (Some(token), Some(reflector), Some(due)) =
                (beacon.token, beacon.reflector, beacon.next_reflect)
            else {
                continue;
            };
            if due > now.instant {
                continue;
            }
            wire::encode_reflect(&token, &mut message);
            out.transmit(reflector, &message);
            let wait = if beacon.observed.is_some() {
                REFLECT_KEEPALIVE
            } else {
                REFLECT_RETRY
            };
            beacon.next_reflect = Some(now.instant + wait);
        }
    }

    /// The shell connected to lighthouse `id` and sent its registration.
    pub fn lighthouse_up(&mut self, id: LighthouseId) {
        if let Some(beacon) = self.beacons.get_mut(id) {
            beacon.up = true;
        }
    }

    /// The connection to lighthouse `id` ended. Peers it relayed for fall back to their direct
    /// endpoints until another lighthouse introduces them again.
    pub fn lighthouse_down(&mut self, id: LighthouseId) {
        if let Some(beacon) = self.beacons.get_mut(id) {
            beacon.up = false;
            beacon.token = None;
            beacon.next_reflect = None;
        }
    }

    /// A control message from lighthouse `id`.
    pub fn handle_lighthouse(
        &mut self,
        id: LighthouseId,
        message: FromLighthouse,
        now: Now,
        out: &mut impl Output,
    ) {
        let Some(beacon) = self.beacons.get_mut(id) else {
            return;
        };
        match message {
            FromLighthouse::Welcome {
                token,
                reflector_port,
                ..
            } => {
                beacon.token = Some(token);
                beacon.reflector = Some(SocketAddr::new(beacon.address.ip(), reflector_port));
                beacon.next_reflect = Some(now.instant);
                self.beacon_timers(now, out);
            }
            FromLighthouse::Observed { wireguard } => {
                if beacon.observed != Some(wireguard) {
                    tracing::info!(lighthouse = %beacon.name, %wireguard, "lighthouse sees this node's WireGuard socket");
                }
                beacon.observed = Some(wireguard);
                beacon.next_reflect = Some(now.instant + REFLECT_KEEPALIVE);
            }
            FromLighthouse::Peer { cert, endpoints } => {
                self.introduced(id, &cert, endpoints, true, now, out);
            }
            FromLighthouse::Punch { cert, endpoints } => {
                self.introduced(id, &cert, endpoints, false, now, out);
            }
            FromLighthouse::NotFound { target } => {
                tracing::debug!(lighthouse = %beacon.name, %target, "lighthouse does not know the peer");
            }
            FromLighthouse::Crl { der } => self.apply_pushed_crl(id, &der, now),
        }
    }

    /// A lighthouse introduced a peer: as the answer to this node's query (`asked`), or because
    /// the peer asked for this node. Both sides punch at once; the asker then sends what it
    /// queued, which starts the handshake on every path.
    fn introduced(
        &mut self,
        id: LighthouseId,
        cert_der: &[u8],
        mut endpoints: Vec<SocketAddr>,
        asked: bool,
        now: Now,
        out: &mut impl Output,
    ) {
        let Some(slot) = self.certified_slot(cert_der, now) else {
            return;
        };
        endpoints.truncate(MAX_LOCAL_ENDPOINTS);
        let beacons = &self.beacons;
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        peer.candidates = endpoints;
        if !Self::relay_up(beacons, peer) {
            peer.relay = Some(id);
        }
        if !peer.direct_trusted(now.instant) {
            Self::probe_direct(&self.punch_request, peer, now, out);
        }
        let ip = peer.cert.mesh_ip();
        if asked {
            self.flush_pending(slot, now, out);
        }
        if let Some((via, init, _)) = self.held.by_ip.remove(&ip) {
            self.handle_wireguard(Source::Relay(via, ip), &init, now, out);
        }
    }

    /// Keeps a relayed handshake initiation from a mesh IP with no certificate yet, and asks
    /// the lighthouse that relayed it who that is.
    pub(super) fn hold_relayed_init(
        &mut self,
        via: LighthouseId,
        from: Ipv4Addr,
        init: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        if self.held.by_ip.len() >= MAX_HELD_INITS && !self.held.by_ip.contains_key(&from) {
            return;
        }
        let asked_already = self
            .held
            .by_ip
            .insert(from, (via, init.to_vec(), now.instant))
            .is_some();
        if !asked_already {
            out.ask(
                via,
                ToLighthouse::Query {
                    target: Target::MeshIp(from),
                },
            );
        }
    }

    /// A punch arrived at the WireGuard socket from `from`. If it comes from a peer this node
    /// knows, the path it came over may work: answer it, and send authenticated traffic over
    /// it (a keepalive, or the handshake this node is waiting on), which the peer adopts.
    pub(super) fn handle_punch(
        &mut self,
        from: SocketAddr,
        mesh_ip: Ipv4Addr,
        reply_wanted: bool,
        now: Now,
        out: &mut impl Output,
    ) {
        let Some(peer) = self
            .by_ip
            .get(&mesh_ip)
            .and_then(|slot| self.peers[*slot].as_mut())
        else {
            self.counters.unknown_peer += 1;
            return;
        };
        if peer
            .punch_answered
            .is_some_and(|t| now.instant.saturating_duration_since(t) < PUNCH_ANSWER_INTERVAL)
        {
            return;
        }
        // A punch is unauthenticated: what answers it comes out of the budget for answers to
        // its source, and is one datagram no longer than the punch (148 bytes).
        if !self.budget.answer(from.ip(), now.instant) {
            self.counters.over_budget += 1;
            return;
        }
        peer.punch_answered = Some(now.instant);
        let settled = peer.endpoint == Some(from) && peer.direct_trusted(now.instant);
        // Authenticated traffic over the path the punch came by both opens this side's NAT and
        // lets the peer adopt the path; a punch back only asks the peer to do the same.
        let answer = if settled {
            None
        } else if peer.tunn.time_since_last_handshake().is_some() {
            match peer.tunn.encapsulate(&[], &mut self.scratch) {
                TunnResult::WriteToNetwork(keepalive) => Some(&*keepalive),
                _ => None,
            }
        } else if peer.initiated {
            match peer
                .tunn
                .format_handshake_initiation(&mut self.scratch, true)
            {
                TunnResult::WriteToNetwork(init) => Some(&*init),
                _ => None,
            }
        } else {
            None
        };
        match answer {
            Some(datagram) => out.transmit(from, datagram),
            None if reply_wanted => out.transmit(from, &self.punch_answer),
            None => {}
        }
    }

    /// A WireGuard datagram relayed by lighthouse `id` from the node with mesh IP `from`.
    pub fn handle_relayed(
        &mut self,
        id: LighthouseId,
        from: Ipv4Addr,
        datagram: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        match wire::classify(datagram) {
            wire::Kind::WireGuard => {
                self.handle_wireguard(Source::Relay(id, from), datagram, now, out);
            }
            _ => self.counters.malformed += 1,
        }
    }

    /// Applies a revocation list a lighthouse pushed, if its signature verifies against this
    /// node's CA and it is newer than the one in use.
    fn apply_pushed_crl(&mut self, id: LighthouseId, der: &[u8], now: Now) {
        let name = self.beacons.get(id).map_or("?", |b| b.name.as_str());
        let crl = match RevocationList::from_der(der, &self.ca) {
            Ok(crl) => crl,
            Err(e) => {
                tracing::warn!(lighthouse = %name, error = %e, "ignored a revocation list that does not verify");
                return;
            }
        };
        if !crl.supersedes(self.crl.as_ref()) {
            return;
        }
        tracing::info!(lighthouse = %name, revoked = crl.len(), number = ?crl.number(), "applying a revocation list from the lighthouse");
        if let Some(warning) = crl.next_update_warning(now.wall, rma_ca::CRL_WARNING_WINDOW) {
            tracing::warn!(lighthouse = %name, "{warning}; it stays in use until a newer one arrives");
        }
        self.crl = Some(crl);
        self.end_untrusted_sessions(now);
    }

    /// The revocation list in use (from the config, or newer from a lighthouse).
    pub fn crl(&self) -> Option<&RevocationList> {
        self.crl.as_ref()
    }
}
