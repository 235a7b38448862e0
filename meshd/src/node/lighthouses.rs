//! The node's side of the lighthouse protocol: registering the WireGuard socket's public
//! address (reflect), introductions (answers to queries, and punch requests), relayed
//! datagrams, and revocation lists a lighthouse pushes. Still sans-IO: the shell carries the
//! QUIC connections ([`crate::lighthouse_links`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rma_proto::lighthouse::{FromLighthouse, MAX_LOCAL_ENDPOINTS, Target, ToLighthouse};
use rma_proto::wire::{self, TOKEN_LEN};

use super::paths::{self, Source};
use super::peers::Peer;
use super::{Node, Now, Output};
use crate::config::Lighthouse;
use crate::status::LighthouseStatus;

/// How often the reflect token is sent until the lighthouse confirms it, and after that (which
/// also keeps the NAT mapping of the WireGuard socket open towards the lighthouse).
const REFLECT_RETRY: Duration = Duration::from_millis(500);
pub(super) const REFLECT_KEEPALIVE: Duration = Duration::from_secs(20);
/// Peers asked for again, at most, when a lighthouse reports a new public address for this
/// node: half the lighthouse's query burst, so the re-asks never trip its limiter.
const REINTRODUCE_MAX: usize = 32;

/// A lighthouse, by its position in the configuration: the one name for it everywhere in
/// meshd (the core, the connections, the relay routes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LighthouseId(pub usize);

/// How a lighthouse connection travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Quic,
    /// TLS over TCP ([`rma_proto::stream`]): QUIC did not come up.
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Quic => "quic",
            Self::Tcp => "tcp",
        }
    }
}

/// What this node knows of one configured lighthouse: whether it is connected, its reflect
/// token and reflector, and the address it sees for this node's WireGuard socket.
#[derive(Debug)]
pub(crate) struct LighthouseState {
    lighthouse: Lighthouse,
    /// The connection is up and the registration was sent.
    pub(crate) up: bool,
    /// How the connection travels, the last time it was up.
    pub(super) transport: Transport,
    pub(super) token: Option<[u8; TOKEN_LEN]>,
    pub(super) reflector: Option<SocketAddr>,
    /// Where the connection went, the last time it was up: the reflector and parked pings
    /// go to the same host.
    remote: Option<SocketAddr>,
    pub(super) observed: Option<SocketAddr>,
    pub(super) next_reflect: Option<Instant>,
    /// The last moment this node needed the connection: it connected, asked, or was told of a
    /// peer. Parking waits for `park_after` past it (and for no peer to need its relay).
    pub(super) needed: Option<Instant>,
    /// Asked to park, at this moment; waiting for the answer.
    pub(super) parking: Option<Instant>,
    /// The connection is parked ([`super::parking`]).
    pub(super) parked: Option<Box<super::parking::ParkState>>,
}

impl LighthouseState {
    pub(crate) fn name(&self) -> &str {
        &self.lighthouse.name
    }

    /// The name, and the transport when it is not QUIC: `lighthouse-1 (tcp)`.
    pub(crate) fn label(&self) -> String {
        match self.transport {
            Transport::Quic => self.lighthouse.name.clone(),
            Transport::Tcp => format!("{} (tcp)", self.lighthouse.name),
        }
    }

    pub(super) fn park_after(&self) -> Option<Duration> {
        self.lighthouse.park_after
    }

    /// Connected, or parked (and so one message away from connected).
    pub(crate) fn reachable(&self) -> bool {
        self.up || self.parked.is_some()
    }

    fn status(&self) -> LighthouseStatus {
        LighthouseStatus {
            name: self.lighthouse.name.clone(),
            address: self.lighthouse.address.to_string(),
            connected: self.up,
            parked: self.parked.is_some(),
            observed: self.observed.map(|a| a.to_string()),
            transport: self.up.then(|| self.transport.as_str().to_owned()),
        }
    }
}

/// Every configured lighthouse's state, by [`LighthouseId`].
#[derive(Debug)]
pub(crate) struct Lighthouses(Vec<LighthouseState>);

impl Lighthouses {
    pub(crate) fn new(configured: &[Lighthouse]) -> Self {
        Self(
            configured
                .iter()
                .map(|lighthouse| LighthouseState {
                    lighthouse: lighthouse.clone(),
                    up: false,
                    transport: Transport::Quic,
                    token: None,
                    reflector: None,
                    remote: None,
                    observed: None,
                    next_reflect: None,
                    needed: None,
                    parking: None,
                    parked: None,
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, id: LighthouseId) -> Option<&LighthouseState> {
        self.0.get(id.0)
    }

    pub(super) fn get_mut(&mut self, id: LighthouseId) -> Option<&mut LighthouseState> {
        self.0.get_mut(id.0)
    }

    pub(super) fn iter_mut(
        &mut self,
    ) -> impl Iterator<Item = (LighthouseId, &mut LighthouseState)> {
        self.0
            .iter_mut()
            .enumerate()
            .map(|(id, state)| (LighthouseId(id), state))
    }

    /// Whether any lighthouse can be asked: connected, or parked.
    pub(crate) fn any_up(&self) -> bool {
        self.0.iter().any(LighthouseState::reachable)
    }

    /// How many lighthouses can be asked: connected, or parked.
    pub(crate) fn reachable_count(&self) -> usize {
        self.0.iter().filter(|l| l.reachable()).count()
    }

    /// The name of lighthouse `id`, for logs and `meshd ping`.
    pub(crate) fn name(&self, id: LighthouseId) -> &str {
        self.get(id).map_or("?", LighthouseState::name)
    }

    /// [`LighthouseState::label`] of lighthouse `id`.
    pub(crate) fn label(&self, id: LighthouseId) -> String {
        self.get(id)
            .map_or_else(|| "?".to_owned(), LighthouseState::label)
    }

    /// Whether the lighthouse relaying for `peer` is connected.
    pub(crate) fn relay_up(&self, peer: &Peer) -> bool {
        peer.relay.and_then(|id| self.get(id)).is_some_and(|r| r.up)
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.0
            .iter()
            .flat_map(|r| [r.next_reflect, r.next_park_check()])
            .flatten()
            .min()
    }

    pub(crate) fn status(&self) -> Vec<LighthouseStatus> {
        self.0.iter().map(LighthouseState::status).collect()
    }

    /// Asks every lighthouse connected or parked about `target` (a parked one connects again
    /// for it).
    pub(crate) fn ask_all(&mut self, target: &Target, now: Instant, out: &mut impl Output) {
        for id in 0..self.0.len() {
            if self.0[id].reachable() {
                self.ask(
                    LighthouseId(id),
                    ToLighthouse::Query {
                        target: target.clone(),
                    },
                    now,
                    out,
                );
            }
        }
    }

    /// Sends lighthouse `id` a message: the connection is needed now, and a parked one
    /// connects again first.
    pub(crate) fn ask(
        &mut self,
        id: LighthouseId,
        message: ToLighthouse,
        now: Instant,
        out: &mut impl Output,
    ) {
        self.needed(id, now);
        if let Some(state) = self.get_mut(id) {
            // A park asked for is given up by a message after it (the shell keeps the
            // connection, and the lighthouse takes the node as back).
            state.parking = None;
        }
        if self.get(id).is_some_and(|s| s.parked.is_some()) {
            self.unpark(id, "a message to send", out);
        }
        out.ask(id, message);
    }

    /// Repeats reflect messages until each lighthouse has seen the WireGuard socket, then keeps
    /// the mapping fresh.
    pub(crate) fn reflect(&mut self, now: Instant, out: &mut impl Output) {
        let mut message = Vec::new();
        for state in &mut self.0 {
            let (Some(token), Some(reflector), Some(due)) =
                (state.token, state.reflector, state.next_reflect)
            else {
                continue;
            };
            if due > now {
                continue;
            }
            wire::encode_reflect(&token, &mut message);
            out.transmit(reflector, &message);
            let wait = if state.observed.is_some() {
                REFLECT_KEEPALIVE
            } else {
                REFLECT_RETRY
            };
            state.next_reflect = Some(now + wait);
        }
    }
}

impl Node {
    /// The shell connected to lighthouse `id`, at `remote` (its address as looked up for this
    /// connection), and sent its state.
    pub fn lighthouse_up(
        &mut self,
        id: LighthouseId,
        remote: Option<SocketAddr>,
        transport: Transport,
        now: Instant,
    ) {
        if let Some(state) = self.lighthouses.0.get_mut(id.0) {
            state.up = true;
            state.transport = transport;
            state.remote = remote;
            state.parked = None;
            state.parking = None;
            state.needed = Some(now);
        }
    }

    /// This node's candidate endpoints changed (the router mapped its port): the lighthouses
    /// have been sent them, and every peer whose traffic still needs a relay is asked for
    /// again, so that the lighthouse introduces the pair anew and the peer punches towards the
    /// new candidates.
    pub fn candidates_changed(&mut self, now: Instant, out: &mut impl Output) {
        let relayed: Vec<Ipv4Addr> = self
            .peers
            .iter()
            .filter(|p| p.needs_relay(now))
            .map(|p| p.cert.mesh_ip())
            .collect();
        for ip in relayed {
            self.lighthouses.ask_all(&Target::MeshIp(ip), now, out);
        }
    }

    /// The connection to lighthouse `id` ended. Peers it relayed for fall back to their direct
    /// endpoints until another lighthouse introduces them again.
    pub fn lighthouse_down(&mut self, id: LighthouseId) {
        if let Some(state) = self.lighthouses.0.get_mut(id.0) {
            state.up = false;
            state.token = None;
            state.next_reflect = None;
            state.parking = None;
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
        let Some(state) = self.lighthouses.0.get_mut(id.0) else {
            return;
        };
        // Told of a peer or sent a list: the connection is in use.
        if !matches!(
            message,
            FromLighthouse::Welcome { .. }
                | FromLighthouse::Observed { .. }
                | FromLighthouse::Parked { .. }
        ) {
            state.needed = Some(now.instant);
        }
        match message {
            // The shell hands the park over as [`Node::lighthouse_parked`], with the key.
            FromLighthouse::Parked { .. } => {}
            FromLighthouse::Welcome {
                token,
                reflector_port,
                ..
            } => {
                state.token = Some(token);
                state.reflector = state
                    .remote
                    .map(|remote| SocketAddr::new(remote.ip(), reflector_port));
                state.next_reflect = Some(now.instant);
                self.lighthouses.reflect(now.instant, out);
            }
            FromLighthouse::Observed { wireguard } => {
                let changed = state.observed != Some(wireguard);
                if changed {
                    tracing::info!(lighthouse = %state.name(), %wireguard, "lighthouse sees this node's WireGuard socket");
                }
                state.observed = Some(wireguard);
                state.next_reflect = Some(now.instant + REFLECT_KEEPALIVE);
                if changed {
                    self.reintroduce(id, now.instant, out);
                }
            }
            FromLighthouse::Peer { cert, endpoints } => {
                self.introduced(id, &cert, endpoints, true, now, out);
            }
            FromLighthouse::Punch { cert, endpoints } => {
                self.introduced(id, &cert, endpoints, false, now, out);
            }
            FromLighthouse::NotFound { target } => {
                tracing::debug!(lighthouse = %state.name(), %target, "lighthouse does not know the peer");
                if let Target::Name(name) = &target {
                    self.names.not_found(name);
                }
            }
            FromLighthouse::Crl { der } => self.apply_pushed_crl(id, &der, now, out),
        }
    }

    /// Asks lighthouse `id` again for every peer without a trusted direct path, now that it
    /// knows this node's public address. A peer introduced before it did (a query that raced
    /// ahead of the first reflect, or an address that changed since) was given only this
    /// node's LAN endpoints, so it punches nowhere useful and this node's punches die at its
    /// NAT; the new introduction hands it the public one, and both sides punch again.
    fn reintroduce(&mut self, id: LighthouseId, now: Instant, out: &mut impl Output) {
        for peer in self
            .peers
            .iter_mut()
            .filter(|p| !p.direct_trusted(now))
            .take(REINTRODUCE_MAX)
        {
            peer.probe_interval = paths::PROBE_FIRST;
            self.lighthouses.ask(
                id,
                ToLighthouse::Query {
                    target: Target::MeshIp(peer.cert.mesh_ip()),
                },
                now,
                out,
            );
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
        let Some(peer) = self.peers.get_mut(slot) else {
            return;
        };
        peer.candidates = endpoints;
        if !self.lighthouses.relay_up(peer) {
            peer.relay = Some(id);
        }
        if !peer.direct_trusted(now.instant) {
            paths::probe_direct(&self.messages.punch_request, peer, now.instant, out);
        }
        let ip = peer.cert.mesh_ip();
        if asked {
            self.flush_pending(slot, now, out);
        }
        if let Some((via, init)) = self.held.take(ip) {
            self.handle_wireguard(Source::Relay(via, ip), &init, now, out);
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
            // A relayed peer's renewed certificate: taken only from a peer already known at
            // the mesh IP the lighthouse vouches for, only for that mesh IP, and never answered
            // over the relay.
            wire::Kind::Control => match wire::parse_control(datagram) {
                Ok(wire::Control::CertHello { cert_der, .. })
                    if self.peers.slot_of_ip(from).is_some() =>
                {
                    if !self.budget.hello(std::net::IpAddr::V4(from), now.instant) {
                        self.counters.over_budget += 1;
                    } else if rma_ca::NodeCert::from_der(cert_der)
                        .is_ok_and(|cert| cert.mesh_ip() == from)
                    {
                        self.certified_slot(cert_der, now);
                    } else {
                        self.counters.malformed += 1;
                    }
                }
                _ => self.counters.malformed += 1,
            },
            wire::Kind::Unknown => self.counters.malformed += 1,
        }
    }

    /// Applies a revocation list a lighthouse pushed, if its signature verifies against this
    /// node's CA and it is newer than the one in use.
    fn apply_pushed_crl(&mut self, id: LighthouseId, der: &[u8], now: Now, out: &mut impl Output) {
        let name = self.lighthouses.name(id).to_owned();
        let crl = match rma_ca::RevocationList::from_published_der(der, self.trust.ca()) {
            Ok(crl) => crl,
            Err(e) => {
                tracing::warn!(lighthouse = %name, error = %e, "ignored a revocation list that does not verify");
                return;
            }
        };
        match self.trust.offer(crl.clone(), now.wall) {
            rma_ca::CrlOffer::Replaced => {
                let ca = crl
                    .issuing_ca()
                    .map_or(self.trust.ca().name(), |ca| ca.name());
                tracing::info!(lighthouse = %name, %ca, revoked = crl.len(), number = ?crl.number(), "applying a revocation list from the lighthouse");
                rma_daemon::crl_watch::warn_if_due(Some(&crl), now.wall);
                self.crl_replaced(&crl, now, out);
            }
            rma_ca::CrlOffer::NotNewer => {}
            rma_ca::CrlOffer::Unrelated => {
                tracing::warn!(lighthouse = %name, ca = crl.issuing_ca().map(|ca| ca.name()), "ignored a revocation list of an issuing CA that is not live here");
            }
            rma_ca::CrlOffer::Full => {
                tracing::error!(lighthouse = %name, ca = crl.issuing_ca().map(|ca| ca.name()), max = rma_ca::MAX_ISSUING_LISTS, "a revocation list of one issuing CA too many is not in use: that CA's nodes are checked against the root's list only; retire issuing CAs");
            }
        }
    }
}
