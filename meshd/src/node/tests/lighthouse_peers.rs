//! The node's lighthouse logic driven in-process: nodes behind simulated NATs, the real
//! rendezvous core as the lighthouse, datagrams and relayed packets carried by the simulated
//! network, and time passed in. No sockets, no QUIC, no sleeping.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::{Deref, DerefMut};
use std::time::Duration;

#[cfg(feature = "fake-clock")]
use lighthouse::rendezvous::Rendezvous;
use rma_ca::NodeCert;
use rma_proto::lighthouse::FromLighthouse;

#[cfg(feature = "fake-clock")]
use super::REFLECTOR;
use super::{Collected, LIGHTHOUSE, Nat, NatKind, Pki, Sim, allow_all, ip};
use crate::config::Lighthouse;
use crate::ipv4::test_packet;
use crate::node::{Identity, LighthouseId, Node, Settings};

#[path = "parking.rs"]
mod parking;

/// The simulated network with nodes that know only the lighthouse, made by one CA.
struct Internet {
    sim: Sim,
    pki: Pki,
    /// Each host's certificate and keys, by host index.
    certs: Vec<NodeCert>,
    keys: Vec<rma_ca::NodeKeys>,
    /// The persistent keepalive of nodes added from now on.
    keepalive: Option<u16>,
    /// The issuing CA that signs nodes added from now on, instead of the root.
    issuing: Option<Pki>,
    /// How long nodes added from now on leave the lighthouse connection unneeded before they
    /// park it.
    park_after: Option<Duration>,
}

impl Deref for Internet {
    type Target = Sim;
    fn deref(&self) -> &Sim {
        &self.sim
    }
}

impl DerefMut for Internet {
    fn deref_mut(&mut self) -> &mut Sim {
        &mut self.sim
    }
}

impl Internet {
    fn new() -> Self {
        let pki = Pki::new("test-ca");
        Self {
            sim: Sim::new(&pki).with_step(Duration::from_millis(250)),
            pki,
            certs: Vec::new(),
            keys: Vec::new(),
            keepalive: Some(25),
            issuing: None,
            park_after: None,
        }
    }

    /// Adds node n (mesh IP 10.42.0.n): behind a NAT of `kind` with public address
    /// 203.0.113.n, or public at 203.0.113.n itself. It registers with the lighthouse.
    fn add(&mut self, n: u8, nat: Option<NatKind>) -> usize {
        let signer = self.issuing.as_ref().unwrap_or(&self.pki);
        let (cert, keys) = signer.node(&format!("n{n}"), ip(n));
        let public = Ipv4Addr::new(203, 0, 113, n);
        let addr = match nat {
            Some(_) => SocketAddr::from(([192, 168, n, 2], 4242)),
            None => SocketAddr::from((public, 4242)),
        };
        let settings = Settings {
            keepalive: self.keepalive,
            static_peers: Vec::new(),
            firewall: allow_all(),
            lighthouses: vec![Lighthouse {
                name: "lighthouse-1".into(),
                address: LIGHTHOUSE.into(),
                park_after: self.park_after,
                tcp: None,
                proxy: None,
            }],
        };
        self.keys.push(keys.clone());
        let identity = Identity {
            cert: cert.clone(),
            keys,
            ca: self.pki.ca.clone(),
            crls: Vec::new(),
        };
        let h = self.sim.add_node(Node::new(identity, &settings), addr);
        self.sim.hosts[h].nat = nat.map(|kind| Nat::new(public, kind));
        self.certs.push(cert.clone());
        self.connect(h, cert);
        h
    }

    /// Host `h` connects to the lighthouse (again: on a connection of its own each time).
    fn connect(&mut self, h: usize, cert: NodeCert) {
        assert_eq!(&cert, self.hosts[h].node.certificate());
        let c = self.conn_of(h);
        self.sim.connect_host(h, c);
        self.run();
    }

    /// Host `h` sends a packet to the node with mesh IP `to`; returns whether it arrived.
    fn send(&mut self, h: usize, to: Ipv4Addr, payload: &[u8]) -> bool {
        let packet = test_packet(self.hosts[h].node.mesh_ip(), to, payload);
        self.send_packet(h, &packet);
        self.run();
        let Some(target) = self.hosts.iter().position(|host| host.node.mesh_ip() == to) else {
            return false;
        };
        let arrived = self.hosts[target].delivered.contains(&packet);
        self.hosts[target].delivered.clear();
        arrived
    }

    #[cfg(feature = "fake-clock")]
    /// `count` handshake responses with a valid MAC1, made from host `h`'s public key alone,
    /// sent to `h` from a neighbour on its LAN and addressed to its first peer's session.
    fn forge_handshakes(&mut self, h: usize, count: u32) {
        let public = self.certs[h].wireguard_key().expect("a WireGuard key").0;
        let neighbour = SocketAddr::from(([192, 168, h as u8 + 1, 66], 9999));
        for i in 0..count {
            let forged = crate::forge::handshake_response(&public, i, 0, &[i as u8; 48]);
            let mut out = Collected::default();
            let now = self.now;
            self.hosts[h]
                .node
                .handle_datagram(neighbour, &forged, now, &mut out);
            // Cookie replies to the forger's address go nowhere.
            out.transmits.retain(|(to, _)| *to != neighbour);
            self.absorb(h, out);
        }
        self.run();
    }

    #[cfg(feature = "fake-clock")]
    fn handshakes(&self, h: usize, to: Ipv4Addr) -> u64 {
        let status = self.hosts[h].node.status(self.now.instant);
        status
            .peers
            .into_iter()
            .find(|p| p.mesh_ip == to.to_string())
            .map_or(0, |p| p.handshakes)
    }

    fn path(&self, h: usize, to: Ipv4Addr) -> (String, Option<String>, String) {
        let status = self.hosts[h].node.status(self.now.instant);
        let peer = status
            .peers
            .into_iter()
            .find(|p| p.mesh_ip == to.to_string())
            .expect("a peer with that mesh IP");
        (peer.path, peer.via, peer.endpoint)
    }
}

#[test]
fn cone_nats_punch_through_and_the_session_goes_direct() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Cone));
    let b = net.add(2, Some(NatKind::Cone));
    assert!(net.send(a, ip(2), b"first"));
    assert_eq!(
        net.path(a, ip(2)),
        ("direct".into(), None, "203.0.113.2:4242".into())
    );
    assert_eq!(
        net.path(b, ip(1)),
        ("direct".into(), None, "203.0.113.1:4242".into())
    );
    assert!(net.send(b, ip(1), b"reply"));
}

/// Mesh DNS for a node this one holds no certificate for: the lighthouse is asked, and its
/// answer (an introduction, or "not found") settles the name. Asked again, a known name costs
/// the lighthouse nothing; an unknown one is not asked again until its answer expires.
#[test]
fn a_name_this_node_has_not_seen_is_asked_of_the_lighthouse_and_settled_by_its_answer() {
    use crate::node::Lookup;
    use crate::node::names::{ASK_FOR, REMEMBER};

    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Cone));
    net.add(2, Some(NatKind::Cone));
    let lookup = |net: &mut Internet, name: &str| {
        let mut out = Collected::default();
        let now = net.now;
        let found = net.hosts[a].node.lookup_name(name, now, &mut out);
        let asked = out.asked.len();
        net.absorb(a, out);
        (found, asked)
    };
    assert_eq!(
        lookup(&mut net, "n1"),
        (Lookup::Found(ip(1)), 0),
        "its own name"
    );
    // The lighthouse answers as the ask is carried (the sim's control stream is instant).
    assert_eq!(lookup(&mut net, "N2"), (Lookup::Pending, 1));
    net.run();
    assert_eq!(lookup(&mut net, "n2"), (Lookup::Found(ip(2)), 0));
    // Found means introduced: the session is under way, and the first packet goes direct.
    assert!(net.send(a, ip(2), b"by name"));
    assert_eq!(net.path(a, ip(2)).0, "direct");

    assert_eq!(lookup(&mut net, "nobody"), (Lookup::Pending, 1));
    net.run();
    assert_eq!(lookup(&mut net, "nobody"), (Lookup::Unknown, 0));
    net.advance(REMEMBER);
    assert_eq!(
        lookup(&mut net, "nobody"),
        (Lookup::Pending, 1),
        "asked again"
    );

    net.run();

    // A lighthouse that takes the ask and never answers: the name fails after the wait,
    // and is not asked again until that answer expires too.
    net.lighthouse_up = false;
    assert_eq!(lookup(&mut net, "silent"), (Lookup::Pending, 1));
    assert_eq!(
        lookup(&mut net, "silent"),
        (Lookup::Pending, 0),
        "asked once"
    );
    net.advance(ASK_FOR);
    assert_eq!(lookup(&mut net, "silent"), (Lookup::Failed, 0));
    net.advance(REMEMBER - ASK_FOR);
    assert_eq!(lookup(&mut net, "silent"), (Lookup::Pending, 1));

    // With the lighthouse gone (and nothing parked), what this node holds is all there is.
    net.hosts[a].node.lighthouse_down(LighthouseId(0));
    net.advance(REMEMBER);
    assert_eq!(lookup(&mut net, "nobody"), (Lookup::Unknown, 0));
    assert_eq!(lookup(&mut net, "n2"), (Lookup::Found(ip(2)), 0));
}

/// A node that asks for a peer before the lighthouse has seen its WireGuard socket (its first
/// query beats its first reflect, as a worker that registers with routerd at once can) gets
/// the peer introduced with only its LAN endpoint: the peer punches nowhere useful, and the
/// asker's punches die at the peer's NAT. Once the lighthouse reports the public address, the
/// node asks again, the peer learns it, and the pair goes direct.
#[test]
fn a_query_that_beats_the_first_reflect_is_asked_again_once_the_lighthouse_sees_the_node() {
    let mut net = Internet::new();
    let b = net.add(2, Some(NatKind::Cone));
    net.reflector_up = false;
    let a = net.add(1, Some(NatKind::Cone));
    assert!(net.send(a, ip(2), b"first"));
    net.advance(Duration::from_secs(5));
    assert_eq!(net.path(b, ip(1)).0, "relayed");
    assert_eq!(net.path(a, ip(2)).0, "relayed");

    net.reflector_up = true;
    net.advance(Duration::from_secs(2));
    assert!(net.send(a, ip(2), b"second"));
    assert_eq!(
        net.path(a, ip(2)),
        ("direct".into(), None, "203.0.113.2:4242".into())
    );
    assert_eq!(
        net.path(b, ip(1)),
        ("direct".into(), None, "203.0.113.1:4242".into())
    );
}

#[test]
fn symmetric_nats_are_relayed_and_stay_reachable() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Symmetric));
    let b = net.add(2, Some(NatKind::Symmetric));
    assert!(net.send(a, ip(2), b"first"));
    assert_eq!(
        net.path(a, ip(2)),
        ("relayed".into(), Some("lighthouse-1".into()), "-".into())
    );
    // A minute of probing finds no direct path; the relay keeps carrying.
    net.advance(Duration::from_secs(60));
    assert_eq!(net.path(b, ip(1)).0, "relayed");
    assert!(net.send(b, ip(1), b"still here"));
    assert!(net.relayed > 0);
}

#[test]
fn a_relayed_session_moves_to_a_direct_path_once_one_opens_without_losing_a_packet() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Cone));
    let b = net.add(2, Some(NatKind::Closed));
    assert!(net.send(a, ip(2), b"over the relay"));
    assert_eq!(net.path(a, ip(2)).0, "relayed");
    // Handshakes are counted on the timer tick.
    net.advance(Duration::from_millis(250));
    let handshakes = net.hosts[a].node.status(net.now.instant).peers[0].handshakes;
    assert_eq!(handshakes, 1);

    // b's firewall opens: the next direct-path probe finds it. A packet every quarter second
    // meanwhile: none is lost while the session moves.
    if let Some(nat) = &mut net.hosts[b].nat {
        nat.kind = NatKind::Cone;
    }
    for i in 0..80u32 {
        net.advance(Duration::from_millis(250));
        assert!(net.send(a, ip(2), &i.to_be_bytes()), "packet {i} lost");
    }
    assert_eq!(net.path(a, ip(2)).0, "direct");
    assert_eq!(net.path(b, ip(1)).0, "direct");
    let status = net.hosts[a].node.status(net.now.instant);
    assert!(status.peers[0].handshakes >= handshakes);
}

#[test]
fn peers_learned_from_the_lighthouse_stay_reachable_while_it_is_down() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Cone));
    let b = net.add(2, None);
    assert!(net.send(a, ip(2), b"hello"));
    net.lighthouse_up = false;
    for h in [a, b] {
        net.hosts[h].node.lighthouse_down(LighthouseId(0));
    }
    net.advance(Duration::from_secs(90));
    assert!(net.send(a, ip(2), b"still direct"));
    assert!(net.send(b, ip(1), b"both ways"));
    // A node it never met cannot be found without a lighthouse, and says so.
    let before = net.hosts[a].node.status(net.now.instant).drops.no_route;
    assert!(!net.send(a, ip(9), b"nobody"));
    assert_eq!(
        net.hosts[a].node.status(net.now.instant).drops.no_route,
        before + 1
    );
}

/// New handshakes to a peer learned from the lighthouse work while the lighthouse is down.
#[cfg(feature = "fake-clock")]
#[test]
fn a_cached_peer_gets_a_new_handshake_while_every_lighthouse_is_down() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Cone));
    // Only a keeps the NAT mappings open. In this lockstep simulation two nodes whose
    // keepalives fire at the same instant would both start the new handshake at once, and
    // boringtun retries such a collision without jitter.
    net.keepalive = None;
    let b = net.add(2, Some(NatKind::Cone));
    assert!(net.send(a, ip(2), b"hello"));
    net.lighthouse_up = false;
    for h in [a, b] {
        net.hosts[h].node.lighthouse_down(LighthouseId(0));
    }
    // Past WireGuard's session lifetime (REJECT_AFTER_TIME, 180 s), with keepalives only.
    net.advance(Duration::from_secs(200));
    // a's keepalives made it rekey (the initiator does after REKEY_AFTER_TIME, 120 s) with
    // the lighthouse gone: the handshakes went straight to the cached endpoint.
    let handshakes = net.hosts[a].node.status(net.now.instant).peers[0].handshakes;
    assert!(handshakes >= 2, "{handshakes} handshakes");
    assert!(net.send(a, ip(2), b"after expiry"));
    assert!(net.send(b, ip(1), b"and back"));
}

/// A mesh of nodes signed by an issuing CA and by the root: the lighthouse hands out chains,
/// which peers verify to the root alone. The issuing CA's list (travelling with its
/// certificate) ends the session of the node it revokes; the root's list revoking the issuing
/// CA ends every session with the nodes it signed, and the root's own node stays.
#[test]
fn lists_of_an_issuing_ca_and_of_the_root_reach_every_node_through_the_lighthouse() {
    let mut net = Internet::new();
    net.issuing = Some(net.pki.issuing("enroll", "10.42.0.0/24"));
    let a = net.add(1, Some(NatKind::Cone));
    let b = net.add(2, Some(NatKind::Cone));
    net.add(4, Some(NatKind::Cone));
    let enroll = net.issuing.take().expect("set above");
    let root_signed = net.add(3, Some(NatKind::Cone));
    assert!(net.certs[a].issuing_ca().is_some() && net.certs[root_signed].issuing_ca().is_none());
    for (from, to) in [(b, 1), (b, 3), (b, 4), (root_signed, 1), (root_signed, 4)] {
        assert!(net.send(from, ip(to), b"hello"), "{from} to {to}");
    }

    // The issuing CA's list revoking a: b ends its session with a only.
    let own = enroll.crl(1, &[&net.certs[a]]);
    assert_eq!(own.issuing_ca(), Some(&enroll.ca));
    let effects = net.lighthouse.set_crl(own);
    net.apply(effects);
    assert!(!net.send(b, ip(1), b"a is revoked"));
    assert!(net.send(b, ip(4), b"the node at .4 is not"));
    assert!(net.send(root_signed, ip(4), b"nor for the root's node"));
    assert_eq!(
        net.hosts[b].node.lists().count(),
        1,
        "b holds the issuing CA's list"
    );

    // The root's list revoking the issuing CA: the root's node ends its sessions with the
    // nodes it signed; the lighthouse cuts them off.
    let revoking = net.pki.crl_revoking_cas(1, &[&enroll.ca]);
    let effects = net.lighthouse.set_crl(revoking);
    net.apply(effects);
    assert!(!net.send(root_signed, ip(4), b"c's issuing CA is revoked"));
    assert!(!net.send(root_signed, ip(2), b"so is b's"));
    assert_eq!(net.hosts[root_signed].node.lists().count(), 2);
}

#[test]
fn a_revocation_list_from_the_lighthouse_ends_sessions_once_its_signature_checks() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Cone));
    let b = net.add(2, Some(NatKind::Cone));
    let c = net.add(3, Some(NatKind::Cone));
    assert!(net.send(b, ip(1), b"to a"));
    assert!(net.send(b, ip(3), b"to c"));
    let revoked = net.certs[a].clone();

    // A list signed by another CA is ignored.
    let other = Pki::new("other-ca");
    net.tell_node(
        b,
        FromLighthouse::Crl {
            der: other.crl_revoking(&[&revoked]).der().to_vec(),
        },
    );
    assert!(net.send(b, ip(1), b"still trusted"));
    assert!(net.crl_changes.is_empty());

    let crl = net.pki.crl_revoking(&[&revoked]);
    let effects = net.lighthouse.set_crl(crl);
    net.apply(effects);
    // Every node still connected tells its shell (which gives the list to the lighthouse
    // connections' TLS); the lighthouse closed the revoked node's connection instead.
    let mut told: Vec<usize> = net.crl_changes.iter().map(|(h, _)| *h).collect();
    told.sort_unstable();
    assert_eq!(told, [b, c]);
    assert!(net.crl_changes.iter().all(|(_, n)| *n == Some(1)));
    let peers: Vec<String> = net.hosts[b]
        .node
        .status(net.now.instant)
        .peers
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(peers, ["n3"], "a's session ended, c's stayed");
    assert!(!net.send(b, ip(1), b"refused"));
    assert!(net.send(b, ip(3), b"c still reachable"));
    // A reload with an older list from the config file does not bring a back.
    let settings = Settings {
        keepalive: Some(25),
        static_peers: Vec::new(),
        firewall: allow_all(),
        lighthouses: Vec::new(),
    };
    let now = net.now;
    let older = net.pki.crl(0, &[]);
    net.hosts[b].node.reload(&settings, now);
    let mut out = Collected::default();
    assert_eq!(
        net.hosts[b].node.offer_crl(older, now, &mut out),
        rma_ca::CrlOffer::NotNewer
    );
    assert!(out.crl_changes.is_empty());
    assert_eq!(
        net.hosts[b].node.crl().and_then(|c| c.number()),
        Some(1),
        "the pushed list stays"
    );
    assert_eq!(net.path(c, ip(2)).0, "direct");
}

#[test]
fn a_relayed_handshake_that_outruns_the_punch_request_is_answered_at_once() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Symmetric));
    let b = net.add(2, Some(NatKind::Symmetric));
    net.late_punches = Some(Vec::new());
    // No time passes: the packet arrives without waiting for WireGuard's retry.
    assert!(net.send(a, ip(2), b"first"));
    let status = net.hosts[b].node.status(net.now.instant);
    assert_eq!(
        status.drops.unknown_peer, 1,
        "the early handshake was held, then answered"
    );
    assert_eq!(net.path(b, ip(1)).0, "relayed");
}

/// Handshake messages with a valid MAC1 count against the node's load limit; the count starts
/// again every second, so a trickle of them, and ordinary rekeys, never add up to "under load"
/// (where every new handshake would first need a cookie round trip and WireGuard's 5 s retry).
#[cfg(feature = "fake-clock")]
#[test]
fn forged_handshakes_over_minutes_leave_a_relayed_session_rekeying() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Symmetric));
    let b = net.add(2, Some(NatKind::Symmetric));
    assert!(net.send(a, ip(2), b"first"));
    // Three a second for six minutes: 1,080, ten times the limit had the count never reset.
    for second in 0..360u32 {
        net.forge_handshakes(b, 3);
        net.advance(Duration::from_secs(1));
        if second % 10 == 0 {
            assert!(
                net.send(a, ip(2), &second.to_be_bytes()),
                "lost at {second} s"
            );
        }
    }
    assert_eq!(net.path(a, ip(2)).0, "relayed");
    // The session outlived two of WireGuard's rekeys (every 120 s) and its 180 s lifetime.
    let handshakes = net.handshakes(a, ip(2)).max(net.handshakes(b, ip(1)));
    assert!(handshakes >= 3, "{handshakes} handshakes");
    assert!(net.send(b, ip(1), b"and back"));
    // b is not under load: a new peer's first packet arrives without any time passing.
    let c = net.add(3, None);
    assert!(net.send(c, ip(2), b"no cookie needed"));
}

/// A flood above the limit puts the node under load for as long as it lasts. Handshakes must
/// then prove their address with a cookie; a relayed one proves its certified mesh IP, over the
/// relay, and still completes.
#[cfg(feature = "fake-clock")]
#[test]
fn a_relayed_session_rekeys_with_a_cookie_while_a_flood_keeps_the_node_under_load() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Symmetric));
    let b = net.add(2, Some(NatKind::Symmetric));
    assert!(net.send(a, ip(2), b"first"));
    let step = Duration::from_millis(250);
    // 480 forged handshakes a second at each node, for five minutes.
    for i in 0..1_200u32 {
        net.forge_handshakes(a, 120);
        net.forge_handshakes(b, 120);
        net.advance(step);
        if i % 40 == 0 {
            assert!(net.send(a, ip(2), &i.to_be_bytes()), "lost at step {i}");
        }
    }
    let handshakes = net.handshakes(a, ip(2)).max(net.handshakes(b, ip(1)));
    assert!(handshakes >= 3, "{handshakes} handshakes");
    assert!(net.send(b, ip(1), b"and back"));
}

/// A day of simulated time on a mesh of twenty nodes: public, behind cone NATs and behind
/// symmetric NATs (whose pairs are relayed), each pair carrying a packet each way every few
/// minutes, through rekeys and keepalives, a lighthouse restart, two revocation-list refreshes,
/// conntrack expiry and a node whose NAT changes its public address. Every pair carries traffic
/// at the end, and every table stays within its bound all day.
#[cfg(feature = "fake-clock")]
#[test]
fn a_day_of_simulated_time_passes_cleanly() {
    const NODES: u8 = 20;
    let mut net = Internet::new();
    use NatKind::{Cone, Symmetric};
    // The two ends of each pair; `None` is a public address.
    let kinds = [
        (Some(Cone), Some(Cone)),
        (Some(Cone), None),
        (Some(Symmetric), Some(Symmetric)),
        (None, Some(Cone)),
        (Some(Cone), Some(Symmetric)),
        (None, None),
        (Some(Symmetric), Some(Symmetric)),
        (Some(Cone), Some(Cone)),
        (None, Some(Symmetric)),
        (Some(Cone), None),
    ];
    let mut hosts = Vec::new();
    for n in 1..=NODES {
        let (first, second) = kinds[usize::from(n - 1) % 10];
        let nat = if n <= 10 { first } else { second };
        hosts.push(net.add(n, nat));
        // Nodes come up at different moments, as real ones do: their timers do not tick in
        // lockstep.
        net.advance(Duration::from_millis(250 * u64::from(n % 7)));
    }
    // Pairs: 1-11, 2-12, ..., 10-20; 3-13 and 7-17 are symmetric x symmetric (relayed).
    // Tables: each node has one peer, a tracked flow each way, nothing pending or held.
    let pairs: Vec<(usize, usize)> = (0..10).map(|i| (hosts[i], hosts[i + 10])).collect();
    let mesh_ip = |h: usize| ip(h as u8 + 1);
    let exchange = |net: &mut Internet, round: u32| -> Vec<String> {
        let mut lost = Vec::new();
        for (i, &(a, b)) in pairs.iter().enumerate() {
            // Fixed ports (the payload's first bytes), so each pair keeps one tracked flow.
            let payload = [b"longhaul".as_slice(), &round.to_be_bytes()].concat();
            if !net.send(a, mesh_ip(b), &payload) {
                lost.push(format!("pair {i} forth"));
            }
            if !net.send(b, mesh_ip(a), &payload) {
                lost.push(format!("pair {i} back"));
            }
        }
        lost
    };
    assert_eq!(exchange(&mut net, 0), Vec::<String>::new());
    assert!(
        net.path(pairs[2].0, mesh_ip(pairs[2].1)).0 == "relayed",
        "symmetric pairs are relayed"
    );

    let check_tables = |net: &Internet| {
        for (h, host) in net.hosts.iter().enumerate() {
            let t = host.node.tables();
            assert!(t.peers <= 1, "host {h}: {t:?}");
            assert!(t.pending == 0 && t.pending_bytes == 0, "host {h}: {t:?}");
            assert!(t.flows <= 2, "host {h}: {t:?}");
            assert!(t.held_handshakes == 0 && t.probes == 0, "host {h}: {t:?}");
            assert!(
                t.hello_sources <= 4 && t.answer_sources <= 4,
                "host {h}: {t:?}"
            );
            assert!(t.refused_certificates == 0, "host {h}: {t:?}");
        }
        assert!(net.lighthouse.connected() <= usize::from(NODES));
        assert!(net.lighthouse.registrations().len() <= usize::from(NODES));
    };
    // Behind a cone NAT, paired with a public node (which sees its new address at once).
    let roamer = pairs[1].0;
    let unrelated = net.pki.node("retired", ip(99)).0;
    let minute = Duration::from_secs(60);
    for round in 1..=(24 * 60 / 5) {
        let hour = round * 5 / 60;
        let at_minute = round * 5;
        net.advance_in_seconds(minute * 5);
        match at_minute {
            // 06:00: the lighthouse stops for two minutes and comes back as a new process.
            360 => {
                net.lighthouse_up = false;
                for h in 0..net.hosts.len() {
                    net.hosts[h].node.lighthouse_down(LighthouseId(0));
                }
                net.advance_in_seconds(minute * 2);
                net.lighthouse = Rendezvous::new(REFLECTOR.port(), net.lighthouse.lists().to_vec());
                net.lighthouse_up = true;
                for h in 0..net.hosts.len() {
                    let cert = net.certs[h].clone();
                    net.connect(h, cert);
                }
            }
            // 09:00: the roamer's NAT gets a new public address.
            540 => {
                if let Some(nat) = &mut net.hosts[roamer].nat {
                    nat.public = Ipv4Addr::new(203, 0, 113, 250);
                }
            }
            // 12:00 and 18:00: newer revocation lists, pushed by the lighthouse.
            720 | 1080 => {
                let number = if at_minute == 720 { 1 } else { 2 };
                let crl = net.pki.crl(number, &[&unrelated]);
                let effects = net.lighthouse.set_crl(crl);
                net.apply(effects);
            }
            _ => {}
        }
        let lost = exchange(&mut net, round);
        // Right after the roamer's address changes, its peer's first packet may go to the old
        // address; the roamer's own traffic moves the session, and the next exchange is whole.
        if at_minute != 540 {
            assert_eq!(lost, Vec::<String>::new(), "round {round} (hour {hour})");
        }
        check_tables(&net);
    }
    assert_eq!(exchange(&mut net, 0), Vec::<String>::new());
    for &(a, b) in &pairs {
        let handshakes = net
            .handshakes(a, mesh_ip(b))
            .max(net.handshakes(b, mesh_ip(a)));
        assert!(handshakes >= 24 * 60 / 3, "a day of rekeys: {handshakes}");
        assert_eq!(
            net.hosts[a].node.crl().and_then(|c| c.number()),
            Some(2),
            "the last pushed list"
        );
    }
    let (path, _, endpoint) = net.path(pairs[1].1, mesh_ip(roamer));
    assert_eq!(path, "direct");
    assert!(
        endpoint.starts_with("203.0.113.250:"),
        "roamed to {endpoint}"
    );
}

/// Host `h` renews its certificate for `days` more, as meshd does after the enrollment service
/// answers: the node swaps it in, and the lighthouse takes it on the node's connection.
fn renew(net: &mut Internet, h: usize, days: i64) -> NodeCert {
    let old = net.certs[h].clone();
    let signer = net.issuing.as_ref().unwrap_or(&net.pki);
    let renewed = signer.sign_keys(
        old.name().as_str(),
        old.mesh_ip(),
        &net.keys[h],
        net.now.wall - time::Duration::minutes(1),
        old.not_after() + time::Duration::days(days),
    );
    let mut out = Collected::default();
    let now = net.now;
    net.hosts[h]
        .node
        .renew_certificate(renewed.clone(), now, &mut out)
        .unwrap();
    net.absorb(h, out);
    let c = net.conn_of(h);
    let effects = net.lighthouse.renewed(c, renewed.clone());
    net.apply(effects);
    net.run();
    net.certs[h] = renewed.clone();
    renewed
}

fn peer_view(net: &Internet, h: usize, of: Ipv4Addr) -> crate::status::PeerStatus {
    net.hosts[h]
        .node
        .status(net.now.instant)
        .peers
        .into_iter()
        .find(|p| p.mesh_ip == of.to_string())
        .expect("a peer with that mesh IP")
}

#[test]
fn a_renewed_certificate_reaches_direct_and_relayed_peers_and_sessions_outlive_the_old_one() {
    let mut net = Internet::new();
    let a = net.add(1, Some(NatKind::Symmetric));
    let b = net.add(2, Some(NatKind::Symmetric));
    let c = net.add(3, None);
    assert!(net.send(a, ip(2), b"to b"));
    assert!(net.send(b, ip(1), b"to a"));
    assert!(net.send(a, ip(3), b"to c"));
    assert!(net.send(c, ip(1), b"to a"));
    assert_eq!(net.path(a, ip(2)).0, "relayed");
    assert_eq!(net.path(a, ip(3)).0, "direct");
    net.advance(Duration::from_millis(250));
    let handshakes = |net: &Internet, h: usize, of: Ipv4Addr| peer_view(net, h, of).handshakes;
    let before = [handshakes(&net, b, ip(1)), handshakes(&net, c, ip(1))];

    // A renews: b hears of it over the relay, c directly; neither makes a new session.
    let renewed = renew(&mut net, a, 30);
    let expected = rma_ca::timefmt::rfc3339(renewed.not_after());
    assert_eq!(
        peer_view(&net, b, ip(1)).cert_not_after,
        expected,
        "relayed peer"
    );
    assert_eq!(
        peer_view(&net, c, ip(1)).cert_not_after,
        expected,
        "direct peer"
    );
    assert_eq!(
        [handshakes(&net, b, ip(1)), handshakes(&net, c, ip(1))],
        before
    );
    // Another identity, or an older certificate, is refused and changes nothing.
    let (stranger, _) = net.pki.node("n1", ip(1));
    let mut out = Collected::default();
    let now = net.now;
    assert!(
        net.hosts[a]
            .node
            .renew_certificate(stranger, now, &mut out)
            .is_err()
    );
    let stale = net.certs[a].clone();
    assert!(
        net.hosts[a]
            .node
            .renew_certificate(stale, now, &mut out)
            .is_err()
    );
    assert!(out.transmits.is_empty() && out.relayed.is_empty());

    // b renews too; c does not. Past the old expiry, a's sessions with b live on, while a's
    // with c, whose certificate expired, ends.
    renew(&mut net, b, 30);
    net.now.wall = net.certs[c].not_after() + time::Duration::seconds(1);
    net.advance(Duration::from_secs(2));
    assert!(net.send(a, ip(2), b"after the old expiry"));
    assert!(net.send(b, ip(1), b"and back"));
    assert_eq!(handshakes(&net, b, ip(1)), before[0]);
    let status = net.hosts[a].node.status(net.now.instant);
    assert!(
        status.peers.iter().all(|p| p.mesh_ip != ip(3).to_string()),
        "the unrenewed peer is gone"
    );
}
