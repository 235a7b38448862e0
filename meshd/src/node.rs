//! The sans-IO core of meshd: datagrams, TUN packets and the time go in; datagrams to send,
//! packets for the TUN and the next deadline come out. No sockets, no clock, no allocation per
//! packet on the data path. The tokio shell in [`crate::shell`] owns the IO.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Packet, Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};
use lighthouse::proto::{Target, ToLighthouse};
use rma_ca::{CaCert, Fingerprint, NodeCert, RevocationList};
use time::OffsetDateTime;

use crate::config::StaticPeer;
pub use rma_daemon::Identity;

mod budget;
mod introductions;
use crate::firewall::{Action, Direction, Firewall, Policy, Verdict};
use crate::ipv4;
use crate::peer::{LighthouseId, Peer, Source};
use crate::status::{NodeCounters, Status, Tables};
use introductions::Beacon;
use lighthouse::wire::{self, Control, Kind};

/// The moment an event happens: monotonic time for timers, wall-clock time for certificates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub wall: OffsetDateTime,
}

/// Where the core's results go. The shell batches them into socket and TUN writes.
pub trait Output {
    fn transmit(&mut self, to: SocketAddr, datagram: &[u8]);
    fn deliver(&mut self, packet: &[u8]);
    /// Sends a WireGuard datagram for the peer with mesh IP `to` through a lighthouse.
    fn relay(&mut self, via: LighthouseId, to: Ipv4Addr, datagram: &[u8]);
    /// Sends a control message to a lighthouse.
    fn ask(&mut self, via: LighthouseId, message: ToLighthouse);
}

/// Packets held for a peer whose certificate has not arrived yet.
const PENDING_QUEUE: usize = 64;
/// Destinations being set up at once, and the bytes held for all of them: a local program
/// sending to every address of the mesh network holds a bounded amount of memory.
const MAX_PENDING_DESTINATIONS: usize = 1024;
const MAX_PENDING_BYTES: usize = 4 << 20;
/// How often an unanswered hello is repeated, and how many times.
const HELLO_RETRY: Duration = Duration::from_secs(1);
const HELLO_ATTEMPTS: u32 = 10;
/// boringtun's timers want a tick at least this often while any tunnel exists.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Handshake messages per second, over all peers, before every handshake must first prove its
/// sender's address with a cookie round trip (WireGuard's load shedding). The count starts again
/// every [`HANDSHAKE_WINDOW`].
const HANDSHAKES_PER_WINDOW: u64 = 100;
const HANDSHAKE_WINDOW: Duration = Duration::from_secs(1);
/// A session whose last handshake is younger than this is established: a hello never
/// replaces its peer (WireGuard's REJECT_AFTER_TIME, after which the session is dead anyway).
const ESTABLISHED: Duration = Duration::from_secs(180);
/// Largest datagram or packet the core handles, plus WireGuard's overhead.
const SCRATCH_LEN: usize = 65_536 + 64;
/// boringtun's session index is 24 bits; peers are numbered by slot below it.
const MAX_PEERS: usize = 1 << 24;

/// A `meshd ping` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pong {
    pub seq: u32,
    pub peer: String,
    pub mesh_ip: Ipv4Addr,
    /// How the probe travelled: `direct`, or `relayed via` a lighthouse.
    pub path: String,
    /// The peer's direct endpoint, when the probe travelled directly.
    pub endpoint: Option<SocketAddr>,
    pub rtt: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    #[error(
        "no peer with that name or mesh IP, no static endpoint for it, and no lighthouse to ask"
    )]
    UnknownPeer,
}

/// Probes sent and not yet answered, at most; older ones are forgotten.
const MAX_PROBES: usize = 1024;

/// How often idle firewall flows are forgotten.
const FLOW_SWEEP: Duration = Duration::from_secs(10);

/// What a node is configured with besides its identity; all of it can change on reload.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Seconds between keepalives on an idle tunnel.
    pub keepalive: Option<u16>,
    pub static_peers: Vec<StaticPeer>,
    pub firewall: Policy,
    /// Fixed for the life of the node: a reload does not change them.
    pub lighthouses: Vec<crate::config::Lighthouse>,
}

/// Packets for a mesh IP with no peer yet, while its certificate is fetched: with hellos to its
/// static endpoints, or by asking the lighthouses (when `endpoints` is empty).
struct Pending {
    endpoints: Vec<SocketAddr>,
    queue: VecDeque<Vec<u8>>,
    next_hello: Instant,
    hellos_sent: u32,
}

impl Pending {
    fn queued_bytes(&self) -> usize {
        self.queue.iter().map(Vec::len).sum()
    }
}

pub struct Node {
    cert: NodeCert,
    hello_reply_wanted: Vec<u8>,
    hello_answer: Vec<u8>,
    secret: StaticSecret,
    public: PublicKey,
    ca: CaCert,
    crl: Option<RevocationList>,
    keepalive: Option<u16>,
    rate_limiter: Arc<RateLimiter>,
    /// When the handshake count last started again.
    handshake_window_start: Option<Instant>,
    /// Checks a handshake's MAC1 alone (its limit is never reached).
    mac1: RateLimiter,
    peers: Vec<Option<Peer>>,
    free_slots: Vec<usize>,
    by_ip: HashMap<Ipv4Addr, usize>,
    by_key: HashMap<[u8; 32], usize>,
    static_peers: HashMap<Ipv4Addr, Vec<SocketAddr>>,
    pending: HashMap<Ipv4Addr, Pending>,
    /// The bytes queued in `pending`.
    pending_bytes: usize,
    /// What unauthenticated input may cost: hellos, answers, refusals, log lines.
    budget: budget::Budget,
    by_fingerprint: HashMap<Fingerprint, usize>,
    next_tick: Option<Instant>,
    firewall: Firewall,
    next_flow_sweep: Option<Instant>,
    probes: HashMap<u32, (Instant, Ipv4Addr)>,
    pongs: Vec<Pong>,
    counters: NodeCounters,
    scratch: Box<[u8]>,
    beacons: Vec<Beacon>,
    /// Relayed handshake initiations from mesh IPs this node has no certificate for yet.
    held: introductions::HeldInits,
    punch_request: Vec<u8>,
    punch_answer: Vec<u8>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.cert.name().as_str())
            .field("peers", &self.by_ip.len())
            .finish_non_exhaustive()
    }
}

impl Node {
    pub fn new(identity: Identity, settings: &Settings) -> Self {
        let secret = identity.keys.wireguard_secret().clone();
        let public = PublicKey::from(&secret);
        let mut hello_reply_wanted = Vec::new();
        wire::encode_cert_hello(identity.cert.der(), true, &mut hello_reply_wanted);
        let mut hello_answer = Vec::new();
        wire::encode_cert_hello(identity.cert.der(), false, &mut hello_answer);
        let mut punch_request = Vec::new();
        wire::encode_punch(identity.cert.mesh_ip(), true, &mut punch_request);
        let mut punch_answer = Vec::new();
        wire::encode_punch(identity.cert.mesh_ip(), false, &mut punch_answer);
        Self {
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKES_PER_WINDOW)),
            handshake_window_start: None,
            mac1: RateLimiter::new(&public, u64::MAX),
            cert: identity.cert,
            hello_reply_wanted,
            hello_answer,
            secret,
            public,
            ca: identity.ca,
            crl: identity.crl,
            keepalive: settings.keepalive,
            peers: Vec::new(),
            free_slots: Vec::new(),
            by_ip: HashMap::new(),
            by_key: HashMap::new(),
            static_peers: settings
                .static_peers
                .iter()
                .map(|p| (p.mesh_ip, p.endpoints.clone()))
                .collect(),
            pending: HashMap::new(),
            pending_bytes: 0,
            budget: budget::Budget::new(Instant::now()),
            by_fingerprint: HashMap::new(),
            next_tick: None,
            firewall: Firewall::new(settings.firewall.clone()),
            next_flow_sweep: None,
            probes: HashMap::new(),
            pongs: Vec::new(),
            counters: NodeCounters::default(),
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
            beacons: settings.lighthouses.iter().map(Beacon::new).collect(),
            held: introductions::HeldInits::default(),
            punch_request,
            punch_answer,
        }
    }

    pub fn mesh_ip(&self) -> Ipv4Addr {
        self.cert.mesh_ip()
    }

    #[cfg(test)]
    pub(crate) fn wireguard_public(&self) -> [u8; 32] {
        *self.public.as_bytes()
    }

    /// The earliest moment [`Node::handle_timers`] has work to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        let hellos = self.pending.values().map(|p| p.next_hello);
        let reflects = self.beacons.iter().filter_map(|b| b.next_reflect);
        hellos.chain(reflects).chain(self.next_tick).min()
    }

    /// A datagram arrived on the UDP socket from `from`.
    pub fn handle_datagram(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        match wire::classify(datagram) {
            Kind::WireGuard => self.handle_wireguard(Source::Direct(from), datagram, now, out),
            Kind::Control => match wire::parse_control(datagram) {
                Ok(Control::CertHello {
                    cert_der,
                    reply_wanted,
                }) => {
                    if self.budget.hello(from.ip(), now.instant) {
                        self.handle_hello(from, cert_der, reply_wanted, datagram.len(), now, out);
                    } else {
                        self.counters.over_budget += 1;
                    }
                }
                Ok(Control::Punch {
                    mesh_ip,
                    reply_wanted,
                }) => self.handle_punch(from, mesh_ip, reply_wanted, now, out),
                Ok(Control::Reflect { .. }) => self.counters.malformed += 1,
                Err(e) => {
                    self.counters.malformed += 1;
                    tracing::trace!(%from, error = %e, "dropped control message");
                }
            },
            Kind::Unknown => {
                self.counters.malformed += 1;
                tracing::trace!(%from, len = datagram.len(), "dropped unknown datagram");
            }
        }
    }

    /// A packet arrived from the TUN device, to go to a peer.
    pub fn handle_tun_packet(&mut self, packet: &[u8], now: Now, out: &mut impl Output) {
        let Some(flow) = ipv4::flow(packet) else {
            self.counters.no_route += 1;
            return;
        };
        let dst = flow.dst;
        if let Some(&slot) = self.by_ip.get(&dst) {
            self.send_to_peer(slot, packet, flow, now, out);
            return;
        }
        let endpoints = match self.static_peers.get(&dst) {
            Some(endpoints) => endpoints.clone(),
            None if self.beacons.iter().any(|b| b.up) => Vec::new(),
            None => {
                self.counters.no_route += 1;
                return;
            }
        };
        if !self.pending.contains_key(&dst) && self.pending.len() >= MAX_PENDING_DESTINATIONS {
            self.counters.queue_dropped += 1;
            return;
        }
        let pending = self.pending.entry(dst).or_insert_with(|| Pending {
            endpoints,
            queue: VecDeque::new(),
            next_hello: now.instant,
            hellos_sent: 0,
        });
        if pending.queue.len() >= PENDING_QUEUE
            || self.pending_bytes + packet.len() > MAX_PENDING_BYTES
        {
            self.counters.queue_dropped += 1;
        } else {
            self.pending_bytes += packet.len();
            pending.queue.push_back(packet.to_vec());
        }
        if pending.next_hello <= now.instant {
            Self::send_hello(
                &self.hello_reply_wanted,
                &self.beacons,
                dst,
                pending,
                now,
                out,
            );
        }
    }

    /// Drives hello retries and WireGuard's timers (handshake retry, rekey, keepalive).
    pub fn handle_timers(&mut self, now: Now, out: &mut impl Output) {
        let mut expired = Vec::new();
        let pending_bytes = &mut self.pending_bytes;
        self.pending.retain(|ip, pending| {
            if pending.next_hello > now.instant {
                return true;
            }
            if pending.hellos_sent >= HELLO_ATTEMPTS {
                tracing::debug!(peer = %ip, "no certificate hello or lighthouse answer; dropping queued packets");
                expired.push(pending.queue.len());
                *pending_bytes -= pending.queued_bytes();
                return false;
            }
            Self::send_hello(&self.hello_reply_wanted, &self.beacons, *ip, pending, now, out);
            true
        });
        self.beacon_timers(now, out);
        self.held.expire(now.instant);
        self.counters.queue_dropped += expired.iter().sum::<usize>() as u64;

        if self.next_flow_sweep.is_none_or(|t| t <= now.instant) {
            self.firewall.expire(now.instant);
            self.budget.sweep(now.instant);
            self.next_flow_sweep = Some(now.instant + FLOW_SWEEP);
        }
        if self.next_tick.is_some_and(|t| t <= now.instant) {
            self.restart_handshake_window(now.instant);
            let mut ended = Vec::new();
            for (slot, peer) in self.peers.iter_mut().enumerate() {
                let Some(peer) = peer else { continue };
                if now.wall > peer.cert.not_after() {
                    tracing::info!(parent: &peer.span, "peer certificate expired; ending session");
                    ended.push(slot);
                    continue;
                }
                peer.count_handshake();
                let relay_up = Self::relay_up(&self.beacons, peer);
                match peer.tunn.update_timers(&mut self.scratch) {
                    TunnResult::WriteToNetwork(datagram) => {
                        Self::send_datagram(peer, relay_up, datagram, &self.hello_answer, now, out)
                    }
                    TunnResult::Err(e) => {
                        tracing::trace!(parent: &peer.span, error = ?e, "timer")
                    }
                    _ => {}
                }
                if relay_up
                    && !peer.direct_trusted(now.instant)
                    && peer.next_probe.is_none_or(|t| t <= now.instant)
                {
                    Self::probe_direct(&self.punch_request, peer, now, out);
                }
            }
            for slot in ended {
                self.remove_peer(slot);
            }
            self.next_tick = (!self.by_ip.is_empty()).then(|| now.instant + TIMER_TICK);
        }
    }

    /// Starts the handshake count again once a window has passed. boringtun resets only a
    /// limiter it made itself; this one is shared by every peer's tunnel, so the node does it.
    /// The count only grows for messages to known peers, which exist whenever the tick runs.
    fn restart_handshake_window(&mut self, now: Instant) {
        if self
            .handshake_window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= HANDSHAKE_WINDOW)
        {
            self.rate_limiter.reset_count();
            self.handshake_window_start = Some(now);
        }
    }

    /// Sends probe `seq` to the peer named `target` (a node name or mesh IP). It sets up the
    /// session if there is none yet, like any other packet; the answer, if any, shows up in
    /// [`Node::take_pongs`].
    pub fn ping(
        &mut self,
        target: &str,
        seq: u32,
        now: Now,
        out: &mut impl Output,
    ) -> Result<(), PingError> {
        let by_name = self
            .peers
            .iter()
            .flatten()
            .find(|p| p.cert.name().as_str() == target);
        let lighthouse_up = self.beacons.iter().any(|b| b.up);
        let ip = match (by_name, target.parse::<Ipv4Addr>()) {
            (Some(peer), _) => peer.cert.mesh_ip(),
            (None, Ok(ip))
                if lighthouse_up
                    || self.by_ip.contains_key(&ip)
                    || self.static_peers.contains_key(&ip) =>
            {
                ip
            }
            (None, Err(_)) if lighthouse_up => {
                // Learn who has that name; the probes after this one find the peer.
                self.ask_all(Target::Name(target.to_owned()), out);
                return Ok(());
            }
            _ => return Err(PingError::UnknownPeer),
        };
        if self.probes.len() >= MAX_PROBES {
            self.probes.clear();
        }
        self.probes.insert(seq, (now.instant, ip));
        let packet = ipv4::probe_packet(self.cert.mesh_ip(), ip, ipv4::Probe::Ping(seq));
        self.handle_tun_packet(&packet, now, out);
        Ok(())
    }

    /// Warnings for this node's certificate and the CA when either expires within the
    /// warning window at `wall`, and for the revocation list in use when its next update is
    /// due within its window or past. The shell logs them at start and once a day.
    pub fn expiry_warnings(&self, wall: OffsetDateTime) -> Vec<rma_ca::ExpiryWarning> {
        use rma_ca::Expiring as _;
        [
            self.cert
                .expiry_warning(wall, rma_ca::DEFAULT_WARNING_WINDOW),
            self.ca.expiry_warning(wall, rma_ca::DEFAULT_WARNING_WINDOW),
            self.crl
                .as_ref()
                .and_then(|crl| crl.next_update_warning(wall, rma_ca::CRL_WARNING_WINDOW)),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Answers to probes received since the last call.
    pub fn take_pongs(&mut self) -> Vec<Pong> {
        std::mem::take(&mut self.pongs)
    }

    /// Replaces the firewall rules; tracked flows and sessions stay.
    pub fn set_firewall(&mut self, policy: Policy) {
        self.firewall.set_policy(policy);
    }

    /// Applies a reloaded configuration without touching established sessions, except that a
    /// peer whose certificate no longer verifies (revoked by the new list) is cut off at once.
    /// A new keepalive interval applies to sessions made after the reload.
    pub fn reload(&mut self, settings: &Settings, crl: Option<RevocationList>, now: Now) {
        self.keepalive = settings.keepalive;
        self.static_peers = settings
            .static_peers
            .iter()
            .map(|p| (p.mesh_ip, p.endpoints.clone()))
            .collect();
        let pending_bytes = &mut self.pending_bytes;
        self.pending.retain(|ip, pending| {
            let kept = settings.static_peers.iter().any(|p| p.mesh_ip == *ip);
            if !kept {
                *pending_bytes -= pending.queued_bytes();
            }
            kept
        });
        self.firewall.set_policy(settings.firewall.clone());
        // A list a lighthouse pushed may be newer than the file. Revocations never go back: the
        // list in use is replaced only by a newer one, never by an older one or by none.
        match crl {
            Some(file) if file.supersedes(self.crl.as_ref()) => {
                self.crl = Some(file);
            }
            Some(_) => tracing::info!(
                "the revocation list file is not newer than the one in use; keeping it"
            ),
            None => {}
        }
        self.end_untrusted_sessions(now);
    }

    /// Ends the session of every peer whose certificate no longer verifies.
    fn end_untrusted_sessions(&mut self, now: Now) {
        let untrusted: Vec<(usize, String)> = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(slot, peer)| {
                let peer = peer.as_ref()?;
                let verdict = rma_ca::verify(&peer.cert, &self.ca, self.crl.as_ref(), now.wall);
                verdict
                    .err()
                    .map(|e| (slot, format!("{}: {e}", peer.cert.name())))
            })
            .collect();
        for (slot, reason) in untrusted {
            tracing::warn!(%reason, "peer no longer trusted; session ended");
            self.remove_peer(slot);
        }
    }

    /// The sizes of the node's tables, each of which has a bound.
    pub fn tables(&self) -> Tables {
        let (hello_sources, answer_sources, refused_certificates) = self.budget.sizes();
        Tables {
            peers: self.by_ip.len(),
            pending: self.pending.len(),
            pending_bytes: self.pending_bytes,
            flows: self.firewall.tracked(),
            held_handshakes: self.held.len(),
            probes: self.probes.len(),
            hello_sources,
            answer_sources,
            refused_certificates,
        }
    }

    /// The shell reports datagrams the socket could not send.
    pub fn count_send_failures(&mut self, datagrams: u64) {
        self.counters.send_failed += datagrams;
    }

    /// A snapshot of the node and its peers, with certificate lifetimes measured at `wall`.
    pub fn status_at(&mut self, now: Now) -> Status {
        for peer in self.peers.iter_mut().flatten() {
            peer.count_handshake();
        }
        let mut status = self.status(now.instant);
        status.cert_expires_in_secs = (self.cert.not_after() - now.wall).whole_seconds();
        status.ca_expires_in_secs = (self.ca.not_after() - now.wall).whole_seconds();
        status.crl_next_update_in_secs = self
            .crl
            .as_ref()
            .and_then(|crl| crl.seconds_to_next_update(now.wall));
        status
    }

    pub fn status(&self, now: Instant) -> Status {
        let mut peers: Vec<_> = self
            .peers
            .iter()
            .flatten()
            .map(|p| {
                let relay = p
                    .relay
                    .and_then(|id| self.beacons.get(id))
                    .map(|b| (b.name.as_str(), b.up));
                p.status(now, relay)
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
            peers,
            lighthouses: self.beacons.iter().map(Beacon::status).collect(),
        }
    }

    /// Asks for a pending peer's certificate: a hello to its static endpoints, or a query to
    /// every connected lighthouse.
    fn send_hello(
        hello: &[u8],
        beacons: &[Beacon],
        ip: Ipv4Addr,
        pending: &mut Pending,
        now: Now,
        out: &mut impl Output,
    ) {
        for endpoint in &pending.endpoints {
            out.transmit(*endpoint, hello);
        }
        if pending.endpoints.is_empty() {
            for (id, _) in beacons.iter().enumerate().filter(|(_, b)| b.up) {
                out.ask(
                    id,
                    ToLighthouse::Query {
                        target: Target::MeshIp(ip),
                    },
                );
            }
        }
        pending.hellos_sent += 1;
        pending.next_hello = now.instant + HELLO_RETRY;
    }

    fn handle_hello(
        &mut self,
        from: SocketAddr,
        cert_der: &[u8],
        reply_wanted: bool,
        received: usize,
        now: Now,
        out: &mut impl Output,
    ) {
        let slot = self.certified_slot(cert_der, now);
        let Some(slot) = slot else { return };
        if reply_wanted {
            self.answer_hello(from, received, now, out);
        }
        self.flush_pending(slot, now, out);
    }

    /// Sends what was queued for the peer in `slot` while it was being set up.
    fn flush_pending(&mut self, slot: usize, now: Now, out: &mut impl Output) {
        let Some(peer) = &self.peers[slot] else {
            return;
        };
        if let Some(pending) = self.pending.remove(&peer.cert.mesh_ip()) {
            self.pending_bytes -= pending.queued_bytes();
            for packet in pending.queue {
                if let Some(flow) = ipv4::flow(&packet) {
                    self.send_to_peer(slot, &packet, flow, now, out);
                }
            }
        }
    }

    /// Answers a hello of `received` bytes from `to` with this node's: never with more bytes
    /// than it carried, and within the budget for answers to that address and to all.
    fn answer_hello(&mut self, to: SocketAddr, received: usize, now: Now, out: &mut impl Output) {
        if self.hello_answer.len() > received || !self.budget.answer(to.ip(), now.instant) {
            self.counters.over_budget += 1;
            return;
        }
        out.transmit(to, &self.hello_answer);
    }

    /// The peer holding the certificate `cert_der`: one already known (unless it has expired
    /// since), or a new peer if the certificate verifies. A peer with an established session is
    /// never replaced: only renewed, by a certificate for the same key and mesh IP that lasts
    /// longer. Where a certificate came from says nothing about where its holder is: a new
    /// peer's addresses are its configured ones, until the lighthouse or an authenticated
    /// packet says otherwise.
    fn certified_slot(&mut self, cert_der: &[u8], now: Now) -> Option<usize> {
        let fingerprint = Fingerprint::of(cert_der);
        let known = self
            .by_fingerprint
            .get(&fingerprint)
            .copied()
            .filter(|slot| {
                self.peers[*slot]
                    .as_ref()
                    .is_some_and(|p| now.wall <= p.cert.not_after())
            });
        if let Some(slot) = known {
            return Some(slot);
        }
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
        let holders: HashSet<usize> = [self.by_ip.get(&cert.mesh_ip()), self.by_key.get(&key)]
            .into_iter()
            .flatten()
            .copied()
            .collect();
        for slot in holders {
            let Some(peer) = self.peers[slot].as_mut() else {
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
            self.by_fingerprint.remove(&peer.cert.fingerprint());
            self.by_fingerprint.insert(fingerprint, slot);
            peer.cert = cert;
            return Some(slot);
        }
        self.add_peer(cert, now)
    }

    /// Parses and verifies a peer's certificate; refusals are counted, remembered for a while,
    /// and logged within a budget of lines.
    fn accept_certificate(
        &mut self,
        cert_der: &[u8],
        fingerprint: Fingerprint,
        now: Now,
    ) -> Option<NodeCert> {
        let verdict = NodeCert::from_der(cert_der)
            .map_err(|e| e.to_string())
            .and_then(|cert| {
                rma_ca::verify(&cert, &self.ca, self.crl.as_ref(), now.wall)
                    .map(|()| cert)
                    .map_err(|e| e.to_string())
            });
        match verdict {
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
        let replaced = [self.by_ip.get(&cert.mesh_ip()), self.by_key.get(&key)];
        for slot in replaced
            .into_iter()
            .flatten()
            .copied()
            .collect::<HashSet<_>>()
        {
            self.remove_peer(slot);
        }
        let slot = match self.free_slots.pop() {
            Some(slot) => slot,
            None if self.peers.len() < MAX_PEERS => {
                self.peers.push(None);
                self.peers.len() - 1
            }
            None => return None,
        };
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
        self.by_ip.insert(cert.mesh_ip(), slot);
        self.by_key.insert(key, slot);
        self.by_fingerprint.insert(cert.fingerprint(), slot);
        let mut peer = Peer::new(cert, tunn, span);
        peer.candidates = self
            .static_peers
            .get(&peer.cert.mesh_ip())
            .cloned()
            .unwrap_or_default();
        self.peers[slot] = Some(peer);
        self.next_tick.get_or_insert(now.instant);
        Some(slot)
    }

    fn remove_peer(&mut self, slot: usize) {
        if let Some(peer) = self.peers.get_mut(slot).and_then(Option::take) {
            self.by_ip.remove(&peer.cert.mesh_ip());
            if let Some(key) = peer.cert.wireguard_key() {
                self.by_key.remove(&key.0);
            }
            self.by_fingerprint.remove(&peer.cert.fingerprint());
            self.free_slots.push(slot);
        }
    }

    /// Sends a packet from the TUN to a peer, if the firewall lets it out.
    fn send_to_peer(
        &mut self,
        slot: usize,
        packet: &[u8],
        flow: ipv4::Flow,
        now: Now,
        out: &mut impl Output,
    ) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        // meshd's own probes are not the node's traffic: the firewall does not judge them.
        let verdict = if flow.proto == ipv4::PROTO_MESH_PROBE && flow.src == self.cert.mesh_ip() {
            Verdict::Allow
        } else {
            self.firewall
                .check(Direction::Outbound, &flow, &peer.cert, now.instant)
        };
        match verdict {
            Verdict::Allow => self.encapsulate(slot, packet, now, out),
            Verdict::Deny(action) => {
                peer.counters.firewall_out += 1;
                tracing::trace!(parent: &peer.span, ?flow, "firewall dropped outbound packet");
                if action == Action::Reject
                    && let Some(answer) = ipv4::reject(packet)
                {
                    out.deliver(&answer);
                }
            }
        }
    }

    fn encapsulate(&mut self, slot: usize, packet: &[u8], now: Now, out: &mut impl Output) {
        let Some(peer) = self.peers[slot].as_mut() else {
            return;
        };
        let relay_up = Self::relay_up(&self.beacons, peer);
        match peer.tunn.encapsulate(packet, &mut self.scratch) {
            TunnResult::WriteToNetwork(datagram) => {
                Self::send_datagram(peer, relay_up, datagram, &self.hello_answer, now, out)
            }
            TunnResult::Err(e) => {
                tracing::trace!(parent: &peer.span, error = ?e, "encapsulate failed");
            }
            _ => {}
        }
    }

    fn handle_wireguard(
        &mut self,
        source: Source,
        datagram: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        let slot = match Tunn::parse_incoming_packet(datagram) {
            Ok(Packet::HandshakeInit(init)) => {
                // The key exchange that names the sender costs far more than the MAC1 check,
                // which needs nothing but this node's public key: a forgery without a valid
                // MAC1 costs a hash.
                if self
                    .mac1
                    .verify_packet(None, datagram, &mut self.scratch)
                    .is_err()
                {
                    self.counters.malformed += 1;
                    return;
                }
                match parse_handshake_anon(&self.secret, &self.public, &init) {
                    Ok(half) => self.by_key.get(&half.peer_static_public).copied(),
                    Err(_) => None,
                }
            }
            Ok(Packet::HandshakeResponse(p)) => Some((p.receiver_idx >> 8) as usize),
            Ok(Packet::PacketCookieReply(p)) => Some((p.receiver_idx >> 8) as usize),
            Ok(Packet::PacketData(p)) => Some((p.receiver_idx >> 8) as usize),
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        let known = slot.filter(|s| self.peers.get(*s).is_some_and(Option::is_some));
        match (known, source) {
            (Some(slot), _) => self.decapsulate(slot, source, datagram, now, out),
            // A handshake from a key this node does not know is not answered: its sender
            // repeats its hello with its retries ([`Node::send_datagram`]), and an answer to a
            // forged one would go wherever the forger pointed it.
            (None, Source::Direct(_)) => self.counters.unknown_peer += 1,
            (None, Source::Relay(via, from)) => {
                self.counters.unknown_peer += 1;
                if datagram[0] == 1 {
                    self.hold_relayed_init(via, from, datagram, now, out);
                }
            }
        }
    }

    fn decapsulate(
        &mut self,
        slot: usize,
        source: Source,
        datagram: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        let my_ip = self.cert.mesh_ip();
        let Self {
            peers,
            firewall,
            scratch,
            probes,
            pongs,
            beacons,
            ..
        } = self;
        let Some(peer) = peers[slot].as_mut() else {
            return;
        };
        let peer_ip = peer.cert.mesh_ip();
        if let Source::Relay(_, from_ip) = source
            && from_ip != peer_ip
        {
            // The lighthouse stamps the certified sender; a mismatch is not this peer's.
            peer.counters.rejected += 1;
            return;
        }
        // An answer to send back through the tunnel: a firewall reject or a pong.
        let mut reject = None;
        // Under load, a handshake must carry a cookie bound to its sender's address. A relayed
        // one has no address of its own, but the lighthouse delivers to a mesh IP only the node
        // that proved that certificate's key over mutual TLS: the stamped mesh IP is the address
        // the cookie binds, and the cookie reply goes back over the relay. (Given no address,
        // boringtun refuses every handshake under load.)
        let source_ip = match source {
            Source::Direct(from) => from.ip(),
            Source::Relay(_, mesh_ip) => IpAddr::V4(mesh_ip),
        };
        let authenticated = match peer.tunn.decapsulate(Some(source_ip), datagram, scratch) {
            TunnResult::Done => true,
            TunnResult::Err(e) => {
                peer.counters.rejected += 1;
                tracing::trace!(parent: &peer.span, error = ?e, "rejected datagram");
                false
            }
            TunnResult::WriteToNetwork(reply) => {
                // A cookie reply (type 3) comes from load shedding, before any authentication.
                let authenticated = reply.first() != Some(&3);
                Self::send_back(source, peer_ip, reply, out);
                while let TunnResult::WriteToNetwork(queued) =
                    peer.tunn.decapsulate(None, &[], scratch)
                {
                    Self::send_back(source, peer_ip, queued, out);
                }
                authenticated
            }
            TunnResult::WriteToTunnelV4(packet, src) => {
                let flow = ipv4::flow(packet);
                if src != peer.cert.mesh_ip() {
                    peer.counters.spoofed += 1;
                    tracing::trace!(parent: &peer.span, %src, "dropped spoofed packet");
                } else if flow.map(|f| f.dst) != Some(my_ip) {
                    peer.counters.misrouted += 1;
                } else if let Some(probe) = ipv4::probe(packet) {
                    match probe {
                        ipv4::Probe::Ping(seq) => {
                            reject = Some(ipv4::probe_packet(my_ip, src, ipv4::Probe::Pong(seq)));
                        }
                        ipv4::Probe::Pong(seq) => {
                            if let Some((sent, ip)) = probes.remove(&seq)
                                && ip == src
                            {
                                let (path, endpoint) = match source {
                                    Source::Direct(from) => ("direct".to_owned(), Some(from)),
                                    Source::Relay(id, _) => (
                                        format!(
                                            "relayed via {}",
                                            beacons.get(id).map_or("?", |b| b.name.as_str())
                                        ),
                                        None,
                                    ),
                                };
                                pongs.push(Pong {
                                    seq,
                                    peer: peer.cert.name().to_string(),
                                    mesh_ip: src,
                                    path,
                                    endpoint,
                                    rtt: now.instant.saturating_duration_since(sent),
                                });
                            }
                        }
                    }
                } else if let Some(flow) = flow {
                    match firewall.check(Direction::Inbound, &flow, &peer.cert, now.instant) {
                        Verdict::Allow => out.deliver(packet),
                        Verdict::Deny(action) => {
                            peer.counters.firewall_in += 1;
                            tracing::trace!(parent: &peer.span, ?flow, "firewall dropped inbound packet");
                            if action == Action::Reject {
                                reject = ipv4::reject(packet);
                            }
                        }
                    }
                }
                true
            }
            TunnResult::WriteToTunnelV6(..) => {
                peer.counters.misrouted += 1;
                true
            }
        };
        if let Some(answer) = reject {
            // Rare, so a buffer of its own rather than the one the packet arrived in.
            let mut buf = vec![0u8; answer.len() + 148];
            if let TunnResult::WriteToNetwork(datagram) = peer.tunn.encapsulate(&answer, &mut buf) {
                Self::send_back(source, peer_ip, datagram, out);
            }
        }
        if authenticated {
            match (peer.authenticated(source, now.instant), source) {
                (Some(Some(old)), Source::Direct(new)) => {
                    tracing::info!(parent: &peer.span, %old, %new, "peer roamed");
                }
                (Some(None), Source::Direct(endpoint)) => {
                    tracing::info!(parent: &peer.span, %endpoint, "direct path established");
                }
                _ => {}
            }
        }
    }
}
