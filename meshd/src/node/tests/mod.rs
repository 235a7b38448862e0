//! The core driven in-process: nodes exchange datagrams through one simulated network, with
//! time passed in. No sockets, no TUN, no sleeping. Hosts may sit behind simulated NATs, and
//! the network has one lighthouse (the real rendezvous core) that nodes configured with it
//! register with. [`static_peers`] drives nodes that know each other's addresses;
//! [`lighthouse_peers`] drives nodes that find each other through the lighthouse.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lighthouse::rendezvous::{ConnId, Effect, Rendezvous};
use rma_ca::RevocationList;
pub(crate) use rma_ca::test_ca::TestCa as Pki;
use rma_proto::lighthouse::{FromLighthouse, ToLighthouse};
use rma_proto::wire::{self, Control};

use crate::config::StaticPeer;
use crate::firewall::{PeerMatch, Policy, Ports, Proto, Rule};
use crate::node::{LighthouseId, Node, Now, Output, Settings, Transport};

mod lighthouse_peers;
mod static_peers;

/// The lighthouse's QUIC address and its reflector, on the simulated internet.
pub(crate) const LIGHTHOUSE: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 4243);
pub(crate) const REFLECTOR: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 4244);

/// What one call on a node produced.
#[derive(Default)]
pub(crate) struct Collected {
    pub(crate) transmits: Vec<(SocketAddr, Vec<u8>)>,
    pub(crate) delivered: Vec<Vec<u8>>,
    pub(crate) relayed: Vec<(LighthouseId, Ipv4Addr, Vec<u8>)>,
    pub(crate) asked: Vec<(LighthouseId, ToLighthouse)>,
    pub(crate) crl_changes: Vec<Option<u64>>,
    pub(crate) parks: usize,
    pub(crate) connects: usize,
    /// What a tunnel sealed or opened in place, until it is sent.
    written: Vec<u8>,
}

impl Output for Collected {
    fn transmit(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.transmits.push((to, datagram.to_vec()));
    }
    fn deliver(&mut self, packet: &[u8]) {
        self.delivered.push(packet.to_vec());
    }
    fn relay(&mut self, via: LighthouseId, to: Ipv4Addr, datagram: &[u8]) {
        self.relayed.push((via, to, datagram.to_vec()));
    }
    fn ask(&mut self, via: LighthouseId, message: ToLighthouse) {
        self.asked.push((via, message));
    }
    fn crl_changed(&mut self, crl: &RevocationList) {
        self.crl_changes.push(crl.number());
    }
    fn park(&mut self, _: LighthouseId) {
        self.parks += 1;
    }
    fn connect(&mut self, _: LighthouseId) {
        self.connects += 1;
    }
    fn datagram_buffer(&mut self, len: usize) -> &mut [u8] {
        self.written.resize(len, 0);
        &mut self.written
    }
    fn transmit_written(&mut self, to: SocketAddr, len: usize) {
        self.transmits.push((to, self.written[..len].to_vec()));
    }
    fn relay_written(&mut self, via: LighthouseId, to: Ipv4Addr, len: usize) {
        self.relayed.push((via, to, self.written[..len].to_vec()));
    }
    fn packet_buffer(&mut self, len: usize) -> &mut [u8] {
        self.written.resize(len, 0);
        &mut self.written
    }
    fn deliver_written(&mut self, len: usize) {
        self.delivered.push(self.written[..len].to_vec());
    }
}

/// Everything in and out allowed.
pub(crate) fn allow_all() -> Policy {
    let any = Rule {
        proto: Proto::Any,
        ports: Ports::Any,
        peer: PeerMatch::Any,
    };
    Policy {
        inbound: vec![any.clone()],
        outbound: vec![any],
        ..Policy::default()
    }
}

pub(crate) fn settings(keepalive: Option<u16>, static_peers: &[StaticPeer]) -> Settings {
    Settings {
        keepalive,
        static_peers: static_peers.to_vec(),
        firewall: allow_all(),
        lighthouses: Vec::new(),
    }
}

pub(crate) fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, 0, last)
}

pub(crate) fn underlay(last: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, last], 4242))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NatKind {
    /// Keeps the port; admits replies from addresses the inside has sent to.
    Cone,
    /// A new port per destination; admits replies only on that port.
    Symmetric,
    /// Admits nothing from outside (UDP blocked).
    Closed,
}

pub(crate) struct Nat {
    pub(crate) public: Ipv4Addr,
    pub(crate) kind: NatKind,
    /// (inside port, destination for symmetric NATs) -> outside port.
    mappings: HashMap<(u16, Option<SocketAddr>), u16>,
    /// (outside port, remote) pairs that may send in.
    admitted: Vec<(u16, SocketAddr)>,
    next_port: u16,
}

impl Nat {
    pub(crate) fn new(public: Ipv4Addr, kind: NatKind) -> Self {
        Self {
            public,
            kind,
            mappings: HashMap::new(),
            admitted: Vec::new(),
            next_port: 30_000,
        }
    }

    fn outbound(&mut self, inside: SocketAddr, to: SocketAddr) -> SocketAddr {
        let key = match self.kind {
            NatKind::Symmetric => (inside.port(), Some(to)),
            NatKind::Cone | NatKind::Closed => (inside.port(), None),
        };
        let port = match self.mappings.get(&key) {
            Some(port) => *port,
            None => {
                let port = if self.kind == NatKind::Symmetric {
                    self.next_port += 1;
                    self.next_port
                } else {
                    inside.port()
                };
                self.mappings.insert(key, port);
                port
            }
        };
        if !self.admitted.contains(&(port, to)) {
            self.admitted.push((port, to));
        }
        SocketAddr::from((self.public, port))
    }

    fn admits(&self, port: u16, from: SocketAddr) -> bool {
        self.kind != NatKind::Closed && self.admitted.contains(&(port, from))
    }
}

pub(crate) struct Host {
    pub(crate) node: Node,
    /// The node's own socket address (on its LAN, or public).
    pub(crate) addr: SocketAddr,
    pub(crate) nat: Option<Nat>,
    pub(crate) delivered: Vec<Vec<u8>>,
}

/// Host `h`'s first connection to the lighthouse; each connection after a park is numbered
/// [`CONNS_PER_GENERATION`] on from the one before.
pub(crate) fn conn(host: usize) -> ConnId {
    host as ConnId
}

const CONNS_PER_GENERATION: ConnId = 1000;

fn host_of(conn: ConnId) -> usize {
    (conn % CONNS_PER_GENERATION) as usize
}

/// The park key the simulated shells derive for a connection (real ones take it from TLS).
pub(crate) fn park_key(conn: ConnId) -> [u8; rma_proto::parked::KEY_LEN] {
    let mut key = [0u8; rma_proto::parked::KEY_LEN];
    key[..8].copy_from_slice(&conn.to_be_bytes());
    key
}

/// Hosts, their NATs, and one lighthouse on a lossless network. Time only moves when a test
/// moves it.
pub(crate) struct Sim {
    pub(crate) hosts: Vec<Host>,
    in_flight: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub(crate) now: Now,
    /// Datagrams dropped because no host had their address (or its NAT refused them).
    pub(crate) lost: usize,
    /// Time moves in steps of at most this, each running every host's timers; `None` moves it
    /// in one step.
    step: Option<Duration>,
    /// The lighthouse (connection ids are host indices), and whether it is running.
    pub(crate) lighthouse: Rendezvous,
    pub(crate) lighthouse_up: bool,
    /// Whether the lighthouse's reflector port gets reflect messages (off: a node's queries
    /// race ahead of the lighthouse learning its public address).
    pub(crate) reflector_up: bool,
    /// Relayed packets: (from host, to host, source mesh IP, datagram).
    relay_queue: VecDeque<(usize, usize, Ipv4Addr, Vec<u8>)>,
    /// Packets the lighthouse relayed.
    pub(crate) relayed: u64,
    /// Punch requests held back until the network is otherwise quiet: the control stream
    /// losing the race against relayed datagrams.
    pub(crate) late_punches: Option<Vec<(usize, FromLighthouse)>>,
    /// Revocation lists the nodes put in use: (host, list number).
    pub(crate) crl_changes: Vec<(usize, Option<u64>)>,
    /// Each host's connection to the lighthouse now, where it is not [`conn`]`(h)`.
    conns: HashMap<usize, ConnId>,
    /// Parks the nodes asked for, and connections they made again.
    pub(crate) parks: usize,
    pub(crate) reconnects: usize,
}

impl Sim {
    pub(crate) fn new(pki: &Pki) -> Self {
        Self {
            hosts: Vec::new(),
            in_flight: VecDeque::new(),
            now: Now {
                instant: Instant::now(),
                wall: pki.start,
            },
            lost: 0,
            step: None,
            lighthouse: Rendezvous::new(REFLECTOR.port(), Vec::new()),
            lighthouse_up: true,
            reflector_up: true,
            relay_queue: VecDeque::new(),
            relayed: 0,
            late_punches: None,
            crl_changes: Vec::new(),
            conns: HashMap::new(),
            parks: 0,
            reconnects: 0,
        }
    }

    /// Host `h`'s connection to the lighthouse.
    pub(crate) fn conn_of(&self, h: usize) -> ConnId {
        self.conns.get(&h).copied().unwrap_or(conn(h))
    }

    /// Host `h` connects to the lighthouse on connection `c` and registers.
    pub(crate) fn connect_host(&mut self, h: usize, c: ConnId) {
        let cert = self.hosts[h].node.certificate().clone();
        let public = match &self.hosts[h].nat {
            Some(nat) => IpAddr::V4(nat.public),
            None => self.hosts[h].addr.ip(),
        };
        let quic = SocketAddr::new(public, 5000);
        let mut token = [h as u8 + 1; wire::TOKEN_LEN];
        token[..8].copy_from_slice(&c.to_be_bytes());
        let now = self.now.instant;
        self.conns.insert(h, c);
        let effects = self.lighthouse.connect(c, cert, quic, token, now);
        self.apply(effects);
        self.hosts[h]
            .node
            .lighthouse_up(LighthouseId(0), Some(LIGHTHOUSE), Transport::Quic, now);
        let local = vec![self.hosts[h].addr];
        let effects = self
            .lighthouse
            .message(c, ToLighthouse::Register { local }, now);
        self.apply(effects);
    }

    /// Time moves in steps of `step` from now on.
    pub(crate) fn with_step(mut self, step: Duration) -> Self {
        self.step = Some(step);
        self
    }

    pub(crate) fn add_node(&mut self, node: Node, addr: SocketAddr) -> usize {
        self.hosts.push(Host {
            node,
            addr,
            nat: None,
            delivered: Vec::new(),
        });
        self.hosts.len() - 1
    }

    /// Host `h` sends an IP packet through its TUN.
    pub(crate) fn send_packet(&mut self, h: usize, packet: &[u8]) {
        let mut out = Collected::default();
        let now = self.now;
        self.hosts[h].node.handle_tun_packet(packet, now, &mut out);
        self.absorb(h, out);
    }

    /// Injects a datagram as if it came from `from`.
    pub(crate) fn inject(&mut self, from: SocketAddr, to: SocketAddr, datagram: Vec<u8>) {
        self.in_flight.push_back((from, to, datagram));
    }

    pub(crate) fn take_delivered(&mut self, h: usize) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.hosts[h].delivered)
    }

    /// Carries out what host `h` produced: datagrams out through its NAT, packets to its TUN,
    /// relayed datagrams and questions to the lighthouse.
    pub(crate) fn absorb(&mut self, h: usize, out: Collected) {
        let from = self.hosts[h].addr;
        for (to, datagram) in out.transmits {
            let src = match &mut self.hosts[h].nat {
                Some(nat) => nat.outbound(from, to),
                None => from,
            };
            self.in_flight.push_back((src, to, datagram));
        }
        self.hosts[h].delivered.extend(out.delivered);
        self.crl_changes
            .extend(out.crl_changes.into_iter().map(|number| (h, number)));
        for (_, to, datagram) in out.relayed {
            if !self.lighthouse_up {
                continue;
            }
            match self.lighthouse.route(self.conn_of(h), to) {
                Ok((dest, source)) => {
                    self.relayed += 1;
                    self.relay_queue
                        .push_back((h, host_of(dest), source, datagram));
                }
                Err(lighthouse::rendezvous::RelayDrop::Parked) => {
                    let effects = self.lighthouse.wake_for_relay(to, self.now.instant);
                    self.apply(effects);
                }
                Err(_) => {}
            }
        }
        // As the shell does: a reconnect before the messages it is for.
        for _ in 0..out.connects {
            if self.lighthouse_up {
                self.reconnects += 1;
                let next = self.conn_of(h) + CONNS_PER_GENERATION;
                self.connect_host(h, next);
            }
        }
        for (_, message) in out.asked {
            if self.lighthouse_up {
                let c = self.conn_of(h);
                let effects = self.lighthouse.message(c, message, self.now.instant);
                self.apply(effects);
            }
        }
        for _ in 0..out.parks {
            if self.lighthouse_up {
                self.parks += 1;
                let c = self.conn_of(h);
                let effects = self.lighthouse.park(c, &park_key(c), self.now.instant);
                self.apply(effects);
            }
        }
    }

    /// Carries out what the lighthouse decided.
    pub(crate) fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send(c, message @ FromLighthouse::Punch { .. })
                    if self.late_punches.is_some() =>
                {
                    if let Some(late) = &mut self.late_punches {
                        late.push((c as usize, message));
                    }
                }
                // The shell takes the answer to a park, derives the key and closes the
                // connection.
                Effect::Send(c, FromLighthouse::Parked { lists }) => {
                    let now = self.now.instant;
                    self.hosts[host_of(c)].node.lighthouse_parked(
                        LighthouseId(0),
                        &park_key(c),
                        lists,
                        now,
                    );
                    self.lighthouse.disconnect(c);
                }
                Effect::Send(c, message) => self.tell_node(host_of(c), message),
                Effect::Close(c, _) => self.hosts[host_of(c)].node.lighthouse_down(LighthouseId(0)),
                Effect::Datagram(to, datagram) => {
                    self.in_flight.push_back((REFLECTOR, to, datagram))
                }
            }
        }
    }

    pub(crate) fn tell_node(&mut self, h: usize, message: FromLighthouse) {
        let mut out = Collected::default();
        let now = self.now;
        self.hosts[h]
            .node
            .handle_lighthouse(LighthouseId(0), message, now, &mut out);
        self.absorb(h, out);
    }

    /// The host that receives a datagram sent to `to` from `from`, through its NAT.
    fn receiver(&self, from: SocketAddr, to: SocketAddr) -> Option<usize> {
        self.hosts.iter().position(|host| match &host.nat {
            Some(nat) => IpAddr::V4(nat.public) == to.ip() && nat.admits(to.port(), from),
            None => host.addr == to,
        })
    }

    /// Delivers datagrams and relayed packets until the network is quiet; returns how many
    /// datagrams reached a host.
    pub(crate) fn run(&mut self) -> usize {
        let mut delivered = 0;
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 100_000, "the simulated network never went quiet");
            if let Some((from, to, datagram)) = self.in_flight.pop_front() {
                if to == REFLECTOR {
                    if self.lighthouse_up && self.reflector_up {
                        let effects = match wire::parse_control(&datagram) {
                            Ok(Control::Reflect { token }) => self.lighthouse.reflect(from, &token),
                            Ok(Control::ParkedPing(ping)) => {
                                self.lighthouse.parked_ping(from, &ping, self.now.instant)
                            }
                            _ => Vec::new(),
                        };
                        self.apply(effects);
                    }
                    continue;
                }
                let Some(h) = self.receiver(from, to) else {
                    self.lost += 1;
                    continue;
                };
                let mut out = Collected::default();
                let now = self.now;
                self.hosts[h]
                    .node
                    .handle_datagram(from, &datagram, now, &mut out);
                self.absorb(h, out);
                delivered += 1;
            } else if let Some((_, to, source, datagram)) = self.relay_queue.pop_front() {
                let mut out = Collected::default();
                let now = self.now;
                self.hosts[to].node.handle_relayed(
                    LighthouseId(0),
                    source,
                    &datagram,
                    now,
                    &mut out,
                );
                self.absorb(to, out);
            } else if let Some((h, punch)) = self.late_punches.as_mut().and_then(Vec::pop) {
                self.tell_node(h, punch);
            } else {
                return delivered;
            }
        }
    }

    /// Moves the clocks by `by`.
    fn tick_clocks(&mut self, by: Duration) {
        self.now.instant += by;
        self.now.wall += by;
        #[cfg(feature = "fake-clock")]
        mock_instant::MockClock::advance(by);
    }

    /// Runs the timers of the hosts `which` picks, then lets the network settle.
    fn run_timers(&mut self, which: impl Fn(usize) -> bool) {
        for h in (0..self.hosts.len()).filter(|h| which(*h)) {
            let mut out = Collected::default();
            let now = self.now;
            self.hosts[h].node.handle_timers(now, &mut out);
            self.absorb(h, out);
        }
        self.run();
    }

    /// Moves time forward (in steps, if the network has them), running every node's timers
    /// after each step and letting the network settle.
    pub(crate) fn advance(&mut self, by: Duration) {
        let mut left = by;
        loop {
            let d = self.step.map_or(left, |step| left.min(step));
            left -= d;
            self.tick_clocks(d);
            self.run_timers(|_| true);
            if left.is_zero() {
                return;
            }
        }
    }

    /// Moves time forward in quarter seconds, each host's timers running once a second in the
    /// quarter its index gives it: a quarter as many timer calls as [`Sim::advance`] in
    /// quarter-second steps (boringtun's timers tolerate a coarser tick), for simulating hours.
    /// Real nodes' timers do not fire in lockstep either: two nodes whose handshakes start at
    /// the very same instant collide, and boringtun retries without jitter, so a lockstep
    /// simulation could repeat the collision forever where real networks break the tie.
    #[cfg(feature = "fake-clock")]
    pub(crate) fn advance_in_seconds(&mut self, by: Duration) {
        let quarter = Duration::from_millis(250);
        for tick in 0..(by.as_millis() / quarter.as_millis()) {
            self.tick_clocks(quarter);
            self.run_timers(|h| (h as u128) % 4 == tick % 4);
        }
    }
}
