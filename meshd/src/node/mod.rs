//! The sans-IO core of meshd: datagrams, TUN packets and the time go in; datagrams to send,
//! packets for the TUN and the next deadline come out. No sockets, no clock, no allocation per
//! packet on the data path. The tokio shell in [`crate::shell`] owns the IO.
//!
//! The entry points are here; each part of the node has a file of its own:
//! - [`peers`]: the peer table (slots, by mesh IP, key, fingerprint and session index);
//! - [`inbound`]: a WireGuard datagram from a peer, and what it turned out to be;
//! - [`paths`]: where a datagram for a peer goes, and the punches for a direct path;
//! - [`setup`]: packets held while a peer is set up, hellos, held relayed handshakes;
//! - [`lighthouses`]: each lighthouse's state, and what lighthouses send;
//! - [`parking`]: lighthouse connections parked while unneeded, and their pings;
//! - [`trust`]: which certificates become peers, and revocation;
//! - [`renewal`]: this node's own certificate, renewed while it runs;
//! - [`probe`]: `meshd ping`; [`budget`]: what unauthenticated input may cost;
//! - [`report`]: status and table sizes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::x25519::{PublicKey, StaticSecret};
use rma_ca::{NodeCert, RevocationList, TrustStore};
use rma_proto::lighthouse::ToLighthouse;
use rma_proto::wire::{self, Control, Kind};
use time::OffsetDateTime;

pub use rma_daemon::Identity;

mod budget;
mod inbound;
pub mod lighthouses;
pub(crate) mod names;
mod parking;
mod paths;
mod peers;
mod probe;
mod renewal;
mod report;
mod setup;
#[cfg(test)]
pub(crate) mod tests;
mod trust;

pub use lighthouses::{LighthouseId, Transport};
pub use names::Lookup;
pub use probe::{PingError, Pong};
pub use renewal::RenewalRefused;

use crate::config::StaticPeer;
use crate::firewall::{Action, Direction, Firewall, Policy, Verdict};
use crate::ipv4;
use crate::status::NodeCounters;
use paths::Source;

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
    /// Sends a control message to a lighthouse (connecting first, if it is parked).
    fn ask(&mut self, via: LighthouseId, message: ToLighthouse);
    /// Asks a lighthouse to park its connection; the shell answers with
    /// [`Node::lighthouse_parked`] once it has.
    fn park(&mut self, via: LighthouseId);
    /// Connects to a parked lighthouse again.
    fn connect(&mut self, via: LighthouseId);
    /// The node put a newer revocation list in use; the lighthouse connections' TLS checks
    /// against it from now on.
    fn crl_changed(&mut self, crl: &RevocationList);

    /// Room for the next datagram, at least `len` bytes, for a tunnel to seal a packet into
    /// where it will be sent from; the `*_written` calls send what it holds. Until one of them
    /// spends it, another call returns the same bytes.
    fn datagram_buffer(&mut self, len: usize) -> &mut [u8];
    /// Sends the first `len` bytes of the datagram buffer to `to`. The buffer is then spent.
    fn transmit_written(&mut self, to: SocketAddr, len: usize);
    /// Relays the first `len` bytes of the datagram buffer, and leaves the buffer as it was,
    /// so that [`Output::transmit_written`] may send it directly too.
    fn relay_written(&mut self, via: LighthouseId, to: Ipv4Addr, len: usize);
    /// Room for the next packet to the TUN, at least `len` bytes, for a tunnel to open a
    /// datagram into where it will be written from.
    fn packet_buffer(&mut self, len: usize) -> &mut [u8];
    /// Delivers the first `len` bytes of the packet buffer to the TUN.
    fn deliver_written(&mut self, len: usize);
}

/// boringtun's timers want a tick at least this often while any tunnel exists.
const TIMER_TICK: Duration = Duration::from_millis(250);
/// Handshake messages per second, over all peers, before every handshake must first prove its
/// sender's address with a cookie round trip (WireGuard's load shedding). The count starts again
/// every [`HANDSHAKE_WINDOW`].
const HANDSHAKES_PER_WINDOW: u64 = 100;
const HANDSHAKE_WINDOW: Duration = Duration::from_secs(1);
/// Largest datagram or packet the core handles, plus WireGuard's overhead.
const SCRATCH_LEN: usize = 65_536 + 64;
/// What sealing adds to a packet: the data message's header and the AEAD tag.
const DATA_OVERHEAD: usize = 32;
/// A handshake initiation's length: what sealing writes when there is no session, and the
/// longest of WireGuard's own answers that opening a datagram may write.
pub const HANDSHAKE_INIT_LEN: usize = 148;
/// The message type of WireGuard's transport data.
const DATA_TYPE: u8 = 4;
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

/// The node's own control messages, encoded once.
struct Messages {
    /// This node's certificate, asking for the peer's in return.
    hello_reply_wanted: Vec<u8>,
    hello_answer: Vec<u8>,
    punch_request: Vec<u8>,
    punch_answer: Vec<u8>,
}

impl Messages {
    fn new(cert: &NodeCert) -> Self {
        let encode = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut buf = Vec::new();
            f(&mut buf);
            buf
        };
        Self {
            hello_reply_wanted: encode(&|b| wire::encode_cert_hello(&cert.chain_der(), true, b)),
            hello_answer: encode(&|b| wire::encode_cert_hello(&cert.chain_der(), false, b)),
            punch_request: encode(&|b| wire::encode_punch(cert.mesh_ip(), true, b)),
            punch_answer: encode(&|b| wire::encode_punch(cert.mesh_ip(), false, b)),
        }
    }
}

pub struct Node {
    // Who this node is.
    cert: NodeCert,
    secret: StaticSecret,
    public: PublicKey,
    messages: Messages,
    keepalive: Option<u16>,
    trust: TrustStore,
    // Its peers and the ways to them.
    peers: peers::PeerTable,
    static_peers: HashMap<Ipv4Addr, Vec<SocketAddr>>,
    pending: setup::PendingTable,
    held: setup::HeldInits,
    lighthouses: lighthouses::Lighthouses,
    // What guards it.
    firewall: Firewall,
    /// What unauthenticated input may cost: hellos, answers, refusals, log lines.
    budget: budget::Budget,
    rate_limiter: Arc<RateLimiter>,
    /// When the handshake count last started again.
    handshake_window_start: Option<Instant>,
    /// Checks a handshake's MAC1 alone (its limit is never reached).
    mac1: RateLimiter,
    // Timers, probes and counters.
    next_tick: Option<Instant>,
    next_flow_sweep: Option<Instant>,
    probes: probe::Probes,
    /// Names asked of the lighthouses for mesh DNS.
    names: names::NameAsks,
    counters: NodeCounters,
    busy_polls: crate::status::BusyPolls,
    renewals: renewal::Record,
    scratch: Box<[u8]>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("name", &self.cert.name().as_str())
            .field("peers", &self.peers.len())
            .finish_non_exhaustive()
    }
}

fn static_endpoints(settings: &Settings) -> HashMap<Ipv4Addr, Vec<SocketAddr>> {
    settings
        .static_peers
        .iter()
        .map(|p| (p.mesh_ip, p.endpoints.clone()))
        .collect()
}

impl Node {
    pub fn new(identity: Identity, settings: &Settings) -> Self {
        let secret = identity.keys.wireguard_secret().clone();
        let public = PublicKey::from(&secret);
        Self {
            messages: Messages::new(&identity.cert),
            rate_limiter: Arc::new(RateLimiter::new(&public, HANDSHAKES_PER_WINDOW)),
            handshake_window_start: None,
            mac1: RateLimiter::new(&public, u64::MAX),
            cert: identity.cert,
            secret,
            public,
            trust: TrustStore::with_lists(identity.ca, identity.crls),
            keepalive: settings.keepalive,
            peers: peers::PeerTable::default(),
            static_peers: static_endpoints(settings),
            pending: setup::PendingTable::default(),
            held: setup::HeldInits::default(),
            lighthouses: lighthouses::Lighthouses::new(&settings.lighthouses),
            budget: budget::Budget::new(Instant::now()),
            firewall: Firewall::new(settings.firewall.clone()),
            next_tick: None,
            next_flow_sweep: None,
            probes: probe::Probes::default(),
            names: names::NameAsks::new(Instant::now()),
            counters: NodeCounters::default(),
            busy_polls: crate::status::BusyPolls::default(),
            renewals: renewal::Record::default(),
            scratch: vec![0; SCRATCH_LEN].into_boxed_slice(),
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
        [
            self.pending.next_timeout(),
            self.lighthouses.next_timeout(),
            self.next_tick,
        ]
        .into_iter()
        .flatten()
        .min()
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
                Ok(Control::ParkedAck(ack)) => self.handle_parked_ack(&ack, now.instant, out),
                Ok(Control::Wake(wake)) => self.handle_wake(from, &wake, now.instant, out),
                Ok(Control::Reflect { .. } | Control::ParkedPing(_)) => {
                    self.counters.malformed += 1;
                }
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

    /// The mesh IP of the node named `name`, from the certificates this node holds: its own
    /// and its peers' (a peer whose certificate a list revoked is no longer among them).
    pub fn resolve(&self, name: &str) -> Option<Ipv4Addr> {
        std::iter::once(&self.cert)
            .chain(self.peers.iter().map(|peer| &peer.cert))
            .find(|cert| cert.name().as_str().eq_ignore_ascii_case(name))
            .map(NodeCert::mesh_ip)
    }

    /// A packet arrived from the TUN device, to go to a peer.
    pub fn handle_tun_packet(&mut self, packet: &[u8], now: Now, out: &mut impl Output) {
        let Some(flow) = ipv4::flow(packet) else {
            self.counters.no_route += 1;
            return;
        };
        match self.peers.slot_of_ip(flow.dst) {
            Some(slot) => self.send_to_peer(slot, packet, flow, now, out),
            None => self.hold_for_setup(flow.dst, packet, now, out),
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
        let Some(peer) = self.peers.get_mut(slot) else {
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
            Verdict::Allow => {
                // Sealed where it is sent from. A handshake instead (no session yet) is copied
                // out: it goes with hellos and to every candidate.
                let route = peer.route(now.instant, self.lighthouses.relay_up(peer));
                let room = (packet.len() + DATA_OVERHEAD).max(HANDSHAKE_INIT_LEN);
                let produced = peer.tunn.encapsulate(packet, out.datagram_buffer(room));
                let copied = match produced {
                    TunnResult::WriteToNetwork(data) if data.first() == Some(&DATA_TYPE) => {
                        let len = data.len();
                        if paths::send_written(route, peer.cert.mesh_ip(), len, out) {
                            return;
                        }
                        Some(len)
                    }
                    TunnResult::WriteToNetwork(datagram) => Some(datagram.len()),
                    TunnResult::Err(e) => {
                        tracing::trace!(parent: &peer.span, error = ?e, "tunnel produced an error");
                        None
                    }
                    _ => None,
                };
                if let Some(len) = copied {
                    let datagram = &mut self.scratch[..len];
                    datagram.copy_from_slice(&out.datagram_buffer(len)[..len]);
                    let hello = &self.messages.hello_answer;
                    paths::send(peer, &self.lighthouses, datagram, hello, now, out);
                }
            }
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

    /// Drives hello retries and WireGuard's timers (handshake retry, rekey, keepalive).
    pub fn handle_timers(&mut self, now: Now, out: &mut impl Output) {
        let dropped = self.pending.retry(
            &self.messages.hello_reply_wanted,
            &mut self.lighthouses,
            now.instant,
            out,
        );
        self.counters.queue_dropped += dropped as u64;
        self.lighthouses.reflect(now.instant, out);
        self.tend_parking(now.instant, out);
        self.held.expire(now.instant);

        if self.next_flow_sweep.is_none_or(|t| t <= now.instant) {
            self.firewall.expire(now.instant);
            self.budget.sweep(now.instant);
            self.next_flow_sweep = Some(now.instant + FLOW_SWEEP);
        }
        if self.next_tick.is_some_and(|t| t <= now.instant) {
            self.restart_handshake_window(now.instant);
            self.tick_tunnels(now, out);
            self.next_tick = (!self.peers.is_empty()).then(|| now.instant + TIMER_TICK);
        }
    }

    /// boringtun's timers for every tunnel; ends sessions whose certificate expired, and
    /// probes relayed peers for a direct path.
    fn tick_tunnels(&mut self, now: Now, out: &mut impl Output) {
        let mut ended = Vec::new();
        for (slot, peer) in self.peers.slots_mut() {
            if now.wall > peer.cert.not_after() {
                tracing::info!(parent: &peer.span, "peer certificate expired; ending session");
                ended.push(slot);
                continue;
            }
            peer.count_handshake();
            let produced = peer.tunn.update_timers(&mut self.scratch);
            let hello = &self.messages.hello_answer;
            paths::send_produced(peer, produced, &self.lighthouses, hello, now, out);
            if self.lighthouses.relay_up(peer)
                && !peer.direct_trusted(now.instant)
                && peer.next_probe.is_none_or(|t| t <= now.instant)
            {
                paths::probe_direct(&self.messages.punch_request, peer, now.instant, out);
            }
        }
        for slot in ended {
            self.peers.remove(slot);
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

    /// Replaces the firewall rules; tracked flows and sessions stay.
    pub fn set_firewall(&mut self, policy: Policy) {
        self.firewall.set_policy(policy);
    }

    /// Applies a reloaded configuration without touching established sessions, except that a
    /// peer whose certificate no longer verifies is cut off at once. A new keepalive interval
    /// applies to sessions made after the reload. The revocation list file is offered on its
    /// own ([`Node::offer_crl`]).
    pub fn reload(&mut self, settings: &Settings, now: Now) {
        self.keepalive = settings.keepalive;
        self.static_peers = static_endpoints(settings);
        let statics = &self.static_peers;
        self.pending.retain(|ip| statics.contains_key(&ip));
        self.firewall.set_policy(settings.firewall.clone());
        self.end_untrusted_sessions(now);
    }

    /// The shell reports datagrams the socket could not send.
    pub fn count_send_failures(&mut self, datagrams: u64) {
        self.counters.send_failed += datagrams;
    }

    /// The shell reports TUN reads it dropped and TUN writes that failed.
    pub fn count_tun_failures(&mut self, failures: u64) {
        self.counters.tun_failed += failures;
    }

    /// The shell reports a busy poll, and whether input came before its window closed.
    pub fn count_busy_poll(&mut self, caught: bool) {
        self.busy_polls.spins += 1;
        self.busy_polls.caught += u64::from(caught);
    }
}
