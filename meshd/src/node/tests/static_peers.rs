//! Nodes that know each other's addresses (static peers), on the simulated network.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rma_ca::{NodeCert, NodeKeys};

use super::{Collected, Pki, Sim, allow_all, ip, settings, underlay};
use crate::config::StaticPeer;
use crate::firewall::{Action, PeerMatch, Policy, Ports, Proto, Rule};
use crate::ipv4::{self, Flow, flow_packet, test_packet};
use crate::node::{Identity, Node, Now, Settings};

type Net = Sim;

impl Sim {
    /// Adds a node whose static peers are every host added before it.
    fn add(&mut self, pki: &Pki, cert: NodeCert, keys: NodeKeys, addr: SocketAddr) -> usize {
        let statics: Vec<StaticPeer> = self
            .hosts
            .iter()
            .map(|h| StaticPeer {
                mesh_ip: h.node.mesh_ip(),
                endpoints: vec![h.addr],
            })
            .collect();
        let identity = Identity {
            cert,
            keys,
            ca: pki.ca.clone(),
            crls: Vec::new(),
        };
        self.add_node(Node::new(identity, &settings(Some(25), &statics)), addr)
    }

    /// Host `h` sends an IP packet through its TUN.
    fn send(&mut self, h: usize, packet: &[u8]) {
        self.send_packet(h, packet);
    }
}

/// Two certified nodes, A statically configured towards B's address.
pub(crate) fn pair() -> (Pki, Net) {
    let pki = Pki::new("test-ca");
    let mut net = Net::new(&pki);
    let (b_cert, b_keys) = pki.node("b", ip(2));
    net.add(&pki, b_cert, b_keys, underlay(2));
    let (a_cert, a_keys) = pki.node("a", ip(1));
    net.add(&pki, a_cert, a_keys, underlay(1));
    (pki, net)
}
const B: usize = 0;
const A: usize = 1;

#[test]
fn first_packet_waits_for_certificates_and_handshake_then_arrives() {
    let (_pki, mut net) = pair();
    let packet = test_packet(ip(1), ip(2), b"hello b");
    net.send(A, &packet);
    net.run();
    assert_eq!(net.take_delivered(B), vec![packet]);
    let reply = test_packet(ip(2), ip(1), b"hello a");
    net.send(B, &reply);
    net.run();
    assert_eq!(net.take_delivered(A), vec![reply]);

    let status = net.hosts[B].node.status(net.now.instant);
    assert_eq!(status.peers.len(), 1);
    let peer = &status.peers[0];
    assert_eq!(
        (peer.name.as_str(), peer.mesh_ip.as_str()),
        ("a", "10.42.0.1")
    );
    assert_eq!(peer.endpoint, underlay(1).to_string());
    assert!(peer.last_handshake_secs.is_some());
    assert!(peer.rx_bytes > 0 && peer.tx_bytes > 0);
}

#[test]
fn packets_queue_while_the_session_is_set_up_and_the_queue_is_bounded() {
    let (_pki, mut net) = pair();
    let packets: Vec<_> = (0..100u8)
        .map(|i| test_packet(ip(1), ip(2), &[i; 32]))
        .collect();
    for packet in &packets {
        net.send(A, packet);
    }
    net.run();
    let delivered = net.take_delivered(B);
    assert_eq!(
        delivered,
        packets[..64].to_vec(),
        "the first 64 arrive in order"
    );
    assert_eq!(
        net.hosts[A]
            .node
            .status(net.now.instant)
            .drops
            .queue_dropped,
        36
    );
}

#[test]
fn a_packet_for_an_unknown_mesh_ip_is_dropped_and_counted() {
    let (_pki, mut net) = pair();
    net.send(A, &test_packet(ip(1), ip(77), b"nobody"));
    assert_eq!(net.run(), 0);
    assert_eq!(net.hosts[A].node.status(net.now.instant).drops.no_route, 1);
}

#[test]
fn unanswered_hellos_are_retried_then_given_up() {
    let pki = Pki::new("test-ca");
    let mut net = Net::new(&pki);
    let (ghost, _) = pki.node("ghost", ip(9));
    let statics = [StaticPeer {
        mesh_ip: ghost.mesh_ip(),
        endpoints: vec![underlay(9)],
    }];
    let (cert, keys) = pki.node("a", ip(1));
    let identity = Identity {
        cert,
        keys,
        ca: pki.ca.clone(),
        crls: Vec::new(),
    };
    let a = net.add_node(Node::new(identity, &settings(None, &statics)), underlay(1));
    net.send(a, &test_packet(ip(1), ip(9), b"anyone?"));
    net.run();
    for _ in 0..12 {
        net.advance(Duration::from_secs(1));
    }
    assert_eq!(net.lost, 10, "one hello and nine retries, then silence");
    assert_eq!(
        net.hosts[a]
            .node
            .status(net.now.instant)
            .drops
            .queue_dropped,
        1
    );
    assert_eq!(net.hosts[a].node.next_timeout(), None);
}

fn refused(bad: (NodeCert, NodeKeys), pki: &Pki, crl: Option<rma_ca::RevocationList>) {
    let mut net = Net::new(pki);
    let (b_cert, b_keys) = pki.node("b", ip(2));
    let identity = Identity {
        cert: b_cert,
        keys: b_keys,
        ca: pki.ca.clone(),
        crls: crl.into_iter().collect(),
    };
    let b = net.add_node(Node::new(identity, &settings(None, &[])), underlay(2));
    let bad_ip = bad.0.mesh_ip();
    let statics = [StaticPeer {
        mesh_ip: ip(2),
        endpoints: vec![underlay(2)],
    }];
    // The bad node trusts its own CA, so it believes its certificate is fine.
    let bad_ca = pki.ca.clone();
    let identity = Identity {
        cert: bad.0,
        keys: bad.1,
        ca: bad_ca,
        crls: Vec::new(),
    };
    let m = net.add_node(Node::new(identity, &settings(None, &statics)), underlay(3));
    for _ in 0..3 {
        net.send(m, &test_packet(bad_ip, ip(2), b"let me in"));
        net.run();
        net.advance(Duration::from_secs(1));
    }
    let status = net.hosts[b].node.status(net.now.instant);
    assert!(status.peers.is_empty(), "{status:?}");
    assert!(status.drops.bad_cert >= 3, "{status:?}");
    assert!(net.take_delivered(b).is_empty());
}

#[test]
fn certificates_that_do_not_verify_get_no_session() {
    let pki = Pki::new("test-ca");
    let other = Pki::new("other-ca");
    refused(other.node("stranger", ip(3)), &pki, None);
    let expired = pki.node_valid(
        "old",
        ip(3),
        pki.start - time::Duration::days(20),
        pki.start - time::Duration::days(1),
    );
    refused(expired, &pki, None);
    let revoked = pki.node("revoked", ip(3));
    let crl = pki.crl_revoking(&[&revoked.0]);
    refused(revoked, &pki, Some(crl));
}

#[test]
fn a_peer_may_only_speak_as_itself() {
    let (_pki, mut net) = pair();
    net.send(A, &test_packet(ip(1), ip(2), b"genuine"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 1);
    net.send(A, &test_packet(ip(3), ip(2), b"forged source"));
    net.run();
    assert!(net.take_delivered(B).is_empty());
    assert_eq!(
        net.hosts[B].node.status(net.now.instant).peers[0]
            .drops
            .spoofed,
        1
    );
}

#[test]
fn an_authenticated_datagram_from_a_new_address_moves_the_peer() {
    let (_pki, mut net) = pair();
    net.send(A, &test_packet(ip(1), ip(2), b"before"));
    net.run();
    net.take_delivered(B);
    let roamed = underlay(11);
    net.hosts[A].addr = roamed;
    net.send(A, &test_packet(ip(1), ip(2), b"after roaming"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 1);
    assert_eq!(
        net.hosts[B].node.status(net.now.instant).peers[0].endpoint,
        roamed.to_string()
    );
    // Replies follow the peer to its new address.
    net.send(B, &test_packet(ip(2), ip(1), b"reply"));
    net.run();
    assert_eq!(net.take_delivered(A).len(), 1);
    assert_eq!(net.lost, 0);
}

#[test]
fn unauthenticated_datagrams_do_not_move_the_peer() {
    let (_pki, mut net) = pair();
    net.send(A, &test_packet(ip(1), ip(2), b"hi"));
    net.run();
    let mut forged = vec![4, 0, 0, 0];
    forged.extend_from_slice(&[0; 12]);
    forged.extend_from_slice(&[7; 64]);
    // Data message for B's session index 0 (A is B's first peer) with garbage ciphertext.
    net.inject(underlay(66), underlay(2), forged);
    net.inject(
        underlay(66),
        underlay(2),
        vec![0xF0, b'R', b'M', 1, 1, 0, 0, 9],
    );
    net.inject(underlay(66), underlay(2), vec![1, 0, 0, 0, 5]);
    net.inject(underlay(66), underlay(2), b"random junk".to_vec());
    net.run();
    let status = net.hosts[B].node.status(net.now.instant);
    assert_eq!(status.peers[0].endpoint, underlay(1).to_string());
    assert_eq!(status.peers[0].drops.rejected, 1);
    assert_eq!(status.drops.malformed, 3);
    net.send(A, &test_packet(ip(1), ip(2), b"still fine"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 2);
}

#[test]
fn an_expired_peer_certificate_ends_the_session() {
    let pki = Pki::new("test-ca");
    let mut net = Net::new(&pki);
    let (b_cert, b_keys) = pki.node("b", ip(2));
    net.add(&pki, b_cert, b_keys, underlay(2));
    let (a_cert, a_keys) = pki.node_valid(
        "a",
        ip(1),
        pki.start - time::Duration::days(1),
        pki.start + time::Duration::seconds(30),
    );
    net.add(&pki, a_cert, a_keys, underlay(1));
    net.send(A, &test_packet(ip(1), ip(2), b"hi"));
    net.run();
    assert_eq!(net.hosts[B].node.status(net.now.instant).peers.len(), 1);
    net.advance(Duration::from_secs(31));
    assert!(net.hosts[B].node.status(net.now.instant).peers.is_empty());
}

#[cfg(feature = "fake-clock")]
#[test]
fn sessions_rekey_as_time_passes_and_keep_carrying_traffic() {
    let (_pki, mut net) = pair();
    net.send(A, &test_packet(ip(1), ip(2), b"t=0"));
    net.run();
    let first = net.hosts[B].node.status(net.now.instant).peers[0].last_handshake_secs;
    assert_eq!(first, Some(0));
    // WireGuard rekeys after 120 s of sending; step through it the way the shell would.
    for second in 1..=130u8 {
        net.advance(Duration::from_secs(1));
        net.send(A, &test_packet(ip(1), ip(2), &[second]));
        net.run();
    }
    let delivered = net.take_delivered(B);
    assert_eq!(delivered.len(), 131, "no packet lost across the rekey");
    let since = net.hosts[B].node.status(net.now.instant).peers[0]
        .last_handshake_secs
        .unwrap();
    assert!(
        since < 20,
        "a new handshake happened around t=120 s, {since} s ago"
    );
}

#[test]
fn the_firewall_filters_by_certificate_and_tracks_replies() {
    let pki = Pki::new("test-ca");
    let mut net = Net::new(&pki);
    // The server lets members of `workers` reach TCP 8080 and rejects everything else inbound.
    let (s_cert, s_keys) = pki.node_in("server", ip(1), "servers");
    let policy = Policy {
        inbound: vec![Rule {
            proto: Proto::Tcp,
            ports: Ports::Range(8080, 8080),
            peer: PeerMatch::Group("workers".into()),
        }],
        outbound: allow_all().outbound,
        inbound_action: Action::Reject,
        ..Policy::default()
    };
    let identity = Identity {
        cert: s_cert,
        keys: s_keys,
        ca: pki.ca.clone(),
        crls: Vec::new(),
    };
    let server = net.add_node(
        Node::new(
            identity,
            &Settings {
                firewall: policy,
                ..Settings::default()
            },
        ),
        underlay(1),
    );
    let statics = [StaticPeer {
        mesh_ip: ip(1),
        endpoints: vec![underlay(1)],
    }];
    let mut client = |name: &str, n: u8, groups: &str| {
        let (cert, keys) = pki.node_in(name, ip(n), groups);
        let identity = Identity {
            cert,
            keys,
            ca: pki.ca.clone(),
            crls: Vec::new(),
        };
        net.add_node(Node::new(identity, &settings(None, &statics)), underlay(n))
    };
    let worker = client("worker", 2, "workers");
    let guest = client("guest", 3, "guests");
    let tcp = |from: u8, to: u8, sport: u16, dport: u16| {
        flow_packet(
            Flow {
                proto: ipv4::PROTO_TCP,
                src: ip(from),
                dst: ip(to),
                src_port: sport,
                dst_port: dport,
            },
            0x02,
        )
    };

    net.send(worker, &tcp(2, 1, 40000, 8080));
    net.send(guest, &tcp(3, 1, 40000, 8080));
    net.run();
    let delivered = net.take_delivered(server);
    assert_eq!(
        delivered,
        [tcp(2, 1, 40000, 8080)],
        "only the worker's SYN gets through"
    );
    // The guest was answered with a reset, through its tunnel.
    let answers = net.take_delivered(guest);
    assert_eq!(answers.len(), 1);
    let rst = ipv4::flow(&answers[0]).unwrap();
    assert_eq!(
        (rst.src, rst.dst, rst.src_port, rst.dst_port),
        (ip(1), ip(3), 8080, 40000)
    );
    assert_eq!(answers[0][20 + 13] & 0x04, 0x04, "RST flag");

    // The server's own outbound flow to the guest lets the guest's replies back in.
    net.send(server, &tcp(1, 3, 50000, 22));
    net.run();
    assert_eq!(net.take_delivered(guest).len(), 1);
    net.send(guest, &tcp(3, 1, 22, 50000));
    net.run();
    assert_eq!(net.take_delivered(server), [tcp(3, 1, 22, 50000)]);

    let status = net.hosts[server].node.status(net.now.instant);
    let drops = |ip_last: u8| {
        status
            .peers
            .iter()
            .find(|p| p.mesh_ip == ip(ip_last).to_string())
            .unwrap()
            .drops
    };
    assert_eq!((drops(2).firewall_in, drops(3).firewall_in), (0, 1));
}

#[test]
fn outbound_rules_and_local_rejects() {
    let (_pki, mut net) = pair();
    net.send(A, &test_packet(ip(1), ip(2), b"open the session"));
    net.run();
    net.take_delivered(B);
    let only_udp = Policy {
        inbound: allow_all().inbound,
        outbound: vec![Rule {
            proto: Proto::Udp,
            ports: Ports::Any,
            peer: PeerMatch::Any,
        }],
        outbound_action: Action::Reject,
        ..Policy::default()
    };
    net.hosts[A].node.set_firewall(only_udp);
    let syn = flow_packet(
        Flow {
            proto: ipv4::PROTO_TCP,
            src: ip(1),
            dst: ip(2),
            src_port: 1234,
            dst_port: 80,
        },
        0x02,
    );
    net.send(A, &syn);
    net.run();
    assert!(net.take_delivered(B).is_empty());
    // The reset comes straight back to the local TUN, as if from the destination.
    let local = net.take_delivered(A);
    assert_eq!(ipv4::addresses(&local[0]), Some((ip(2), ip(1))));
    assert_eq!(
        net.hosts[A].node.status(net.now.instant).peers[0]
            .drops
            .firewall_out,
        1
    );
    net.send(A, &test_packet(ip(1), ip(2), b"udp still goes"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 1);
}

#[test]
fn a_reload_that_revokes_a_peer_cuts_it_off_and_keeps_the_rest() {
    let pki = Pki::new("test-ca");
    let mut net = Net::new(&pki);
    let (b_cert, b_keys) = pki.node("b", ip(2));
    net.add(&pki, b_cert, b_keys, underlay(2));
    let (a_cert, a_keys) = pki.node("a", ip(1));
    let revoked = a_cert.clone();
    net.add(&pki, a_cert, a_keys, underlay(1));
    let (c_cert, c_keys) = pki.node("c", ip(3));
    let c = net.add(&pki, c_cert, c_keys, underlay(3));
    net.send(A, &test_packet(ip(1), ip(2), b"a to b"));
    net.send(c, &test_packet(ip(3), ip(2), b"c to b"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 2);

    let crl = pki.crl_revoking(&[&revoked]);
    let now = net.now;
    net.hosts[B].node.reload(&settings(None, &[]), now);
    let mut out = Collected::default();
    let offer = net.hosts[B].node.offer_crl(crl, now, &mut out);
    assert_eq!(offer, rma_ca::CrlOffer::Replaced);
    assert_eq!(
        out.crl_changes,
        [Some(1)],
        "the shell hears of the new list"
    );
    let names: Vec<_> = net.hosts[B]
        .node
        .status(now.instant)
        .peers
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["c"], "a is cut off at once, c keeps its session");
    net.send(A, &test_packet(ip(1), ip(2), b"still there?"));
    net.send(c, &test_packet(ip(3), ip(2), b"c again"));
    net.run();
    assert_eq!(
        net.take_delivered(B),
        [test_packet(ip(3), ip(2), b"c again")]
    );
    // a's datagrams now belong to no session on b.
    assert_eq!(
        net.hosts[B].node.status(net.now.instant).drops.unknown_peer,
        1
    );
}

#[test]
fn ping_measures_the_round_trip_through_the_tunnel_past_the_firewall() {
    let (_pki, mut net) = pair();
    // b's firewall admits nothing; meshd's own probes are not judged by it.
    net.hosts[B].node.set_firewall(Policy::default());
    let mut out = Collected::default();
    let now = net.now;
    net.hosts[A]
        .node
        .ping("10.42.0.2", 1, now, &mut out)
        .unwrap();
    for (to, datagram) in out.transmits {
        net.inject(underlay(1), to, datagram);
    }
    net.run();
    // The first probe opened the session; the second measures a known delay.
    let mut out = Collected::default();
    let now = net.now;
    net.hosts[A].node.ping("b", 2, now, &mut out).unwrap();
    net.now.instant += Duration::from_millis(7);
    for (to, datagram) in out.transmits {
        net.inject(underlay(1), to, datagram);
    }
    net.run();
    let pongs = net.hosts[A].node.take_pongs();
    let seqs: Vec<u32> = pongs.iter().map(|p| p.seq).collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(pongs[1].rtt, Duration::from_millis(7));
    assert_eq!(
        (pongs[1].peer.as_str(), pongs[1].endpoint),
        ("b", Some(underlay(2)))
    );
    assert!(
        net.take_delivered(B).is_empty(),
        "probes never reach the TUN"
    );
    assert_eq!(
        net.hosts[B].node.status(net.now.instant).peers[0]
            .drops
            .firewall_in,
        0
    );
    let mut out = Collected::default();
    let now = net.now;
    assert!(net.hosts[A].node.ping("nobody", 3, now, &mut out).is_err());
}

#[test]
fn certificates_near_expiry_are_named() {
    let pki = Pki::new("test-ca");
    let (cert, keys) = pki.node_valid(
        "soon",
        ip(1),
        pki.start - time::Duration::days(1),
        pki.start + time::Duration::days(10),
    );
    let identity = Identity {
        cert,
        keys,
        ca: pki.ca.clone(),
        crls: Vec::new(),
    };
    let node = Node::new(identity, &settings(None, &[]));
    let warnings = node.expiry_warnings(pki.start);
    assert_eq!(
        warnings.len(),
        1,
        "the node's certificate, not the CA (a year left)"
    );
    assert!(
        warnings[0]
            .to_string()
            .contains("certificate \"soon\" expires at"),
        "{}",
        warnings[0]
    );
    assert_eq!(
        node.expiry_warnings(pki.start - time::Duration::days(30))
            .len(),
        0
    );
    let near_ca_end = pki.start + time::Duration::days(340);
    assert_eq!(
        node.expiry_warnings(near_ca_end).len(),
        2,
        "both, once the CA is within 30 days"
    );
}

/// A revocation list past its next update stays in use (revocations never go back), and is
/// named in the warnings and the status from a week before.
#[test]
fn a_revocation_list_near_or_past_its_next_update_is_named_and_kept() {
    let pki = Pki::new("test-ca");
    let (revoked, _) = pki.node("revoked", ip(9));
    // Valid for long enough that only the list is named.
    let (cert, keys) = pki.node_valid(
        "n1",
        ip(1),
        pki.start - time::Duration::days(1),
        pki.start + time::Duration::days(200),
    );
    let identity = Identity {
        cert,
        keys,
        ca: pki.ca.clone(),
        // Issued at `start`, due a week later.
        crls: vec![pki.crl(3, &[&revoked])],
    };
    let mut node = Node::new(identity, &settings(None, &[]));
    let at = |days: i64| Now {
        instant: Instant::now(),
        wall: pki.start + time::Duration::days(days),
    };
    assert!(
        node.expiry_warnings(at(-1).wall).is_empty(),
        "eight days left"
    );
    assert_eq!(
        node.status_at(at(-1)).crl_next_update_in_secs,
        Some(8 * 86_400)
    );
    let before = node.expiry_warnings(at(1).wall);
    assert_eq!(before.len(), 1, "{before:?}");
    assert!(
        before[0]
            .to_string()
            .starts_with("revocation list number 3")
    );
    let after = node.expiry_warnings(at(9).wall);
    assert!(after[0].to_string().contains("expired at"), "{}", after[0]);
    assert_eq!(
        node.status_at(at(9)).crl_next_update_in_secs,
        Some(-2 * 86_400)
    );
    assert_eq!(node.crl().and_then(|c| c.number()), Some(3), "still in use");
}

/// Packets for destinations still being set up are held within a bound on destinations and on
/// bytes, and what does not fit is dropped and counted; given up, they leave nothing behind.
#[test]
fn packets_for_destinations_being_set_up_are_held_within_bounds() {
    let pki = Pki::new("test-ca");
    let (cert, keys) = pki.node("n1", ip(1));
    let identity = Identity {
        cert,
        keys,
        ca: pki.ca.clone(),
        crls: Vec::new(),
    };
    let settings = Settings {
        lighthouses: vec![crate::config::Lighthouse {
            name: "lighthouse-1".into(),
            address: crate::lighthouse_address::LighthouseAddress::Ip(
                "198.51.100.1:4243".parse().unwrap(),
            ),
            park_after: None,
            tcp: None,
            proxy: None,
        }],
        ..settings(None, &[])
    };
    let mut node = Node::new(identity, &settings);
    node.lighthouse_up(
        crate::node::LighthouseId(0),
        Some("198.51.100.1:4243".parse().unwrap()),
        crate::node::Transport::Quic,
        Instant::now(),
    );
    let mut now = Now {
        instant: Instant::now(),
        wall: pki.start,
    };
    let mut out = Collected::default();
    // A local program writing to 3,000 addresses of the mesh, ten packets each.
    let payload = [0u8; 1372];
    let packet_len = test_packet(ip(1), ip(2), &payload).len() as u64;
    let mut sent = 0u64;
    for round in 0..10 {
        for n in 0..3_000u32 {
            let dst = Ipv4Addr::from(0x0a2a_0000 + 2 + n);
            node.handle_tun_packet(&test_packet(ip(1), dst, &payload), now, &mut out);
            sent += 1;
        }
        let tables = node.tables();
        let (destinations, bytes) = (tables.pending, tables.pending_bytes);
        assert!(destinations <= 1024, "round {round}: {destinations}");
        assert!(bytes <= 4 << 20, "round {round}: {bytes}");
    }
    let held = node.tables().pending_bytes as u64 / packet_len;
    assert_eq!(node.status(now.instant).drops.queue_dropped, sent - held);
    // No lighthouse ever answers: after the hellos run out everything is let go.
    for _ in 0..20 {
        now.instant += Duration::from_secs(1);
        node.handle_timers(now, &mut out);
    }
    assert_eq!((node.tables().pending, node.tables().pending_bytes), (0, 0));
    assert_eq!(node.status(now.instant).drops.queue_dropped, sent);
}

/// What node `h` sends back for one datagram from `from`.
fn answer_to(net: &mut Net, h: usize, from: SocketAddr, datagram: &[u8]) -> Collected {
    let mut out = Collected::default();
    let now = net.now;
    net.hosts[h]
        .node
        .handle_datagram(from, datagram, now, &mut out);
    out
}

/// A hello is unauthenticated (certificates are public): it never replaces a peer whose
/// session is established, whatever valid certificate it carries for that peer's mesh IP or
/// key; only a renewal (same key and mesh IP, later expiry) updates the peer, in place. Nor
/// does it move the peer's endpoint.
#[test]
fn a_hello_never_tears_down_an_established_session() {
    let (pki, mut net) = pair();
    net.send(A, &test_packet(ip(1), ip(2), b"hi"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 1);
    let attacker = underlay(66);
    // Another valid certificate for A's mesh IP, with another key, from another address.
    let (impostor, _) = pki.node("a-again", ip(1));
    let mut hello = Vec::new();
    rma_proto::wire::encode_cert_hello(impostor.der(), false, &mut hello);
    answer_to(&mut net, B, attacker, &hello);
    let status = net.hosts[B].node.status(net.now.instant);
    assert_eq!(status.drops.hello_conflict, 1);
    assert_eq!(status.peers[0].name, "a");
    assert_eq!(status.peers[0].endpoint, underlay(1).to_string());
    net.send(A, &test_packet(ip(1), ip(2), b"still a"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 1, "the session lives on");
}

#[test]
fn a_renewed_certificate_updates_its_peer_without_a_new_session() {
    let pki = Pki::new("test-ca");
    let mut net = Net::new(&pki);
    let (b_cert, b_keys) = pki.node("b", ip(2));
    net.add(&pki, b_cert, b_keys, underlay(2));
    let (a_cert, a_keys) = pki.node("a", ip(1));
    net.add(&pki, a_cert, a_keys.clone(), underlay(1));
    net.send(A, &test_packet(ip(1), ip(2), b"hi"));
    net.run();
    let handshakes = |net: &mut Net| {
        let now = net.now;
        net.hosts[B].node.status_at(now).peers[0].handshakes
    };
    let before = handshakes(&mut net);
    // The same keys, signed again for longer.
    let renewed = renew(&pki, &a_keys, "a", ip(1));
    let mut hello = Vec::new();
    rma_proto::wire::encode_cert_hello(renewed.der(), false, &mut hello);
    answer_to(&mut net, B, underlay(1), &hello);
    let now = net.now;
    let status = net.hosts[B].node.status_at(now);
    assert_eq!(
        status.peers[0].cert_not_after,
        rma_ca::timefmt::rfc3339(renewed.not_after())
    );
    assert_eq!(status.drops.hello_conflict, 0);
    assert_eq!(handshakes(&mut net), before, "no new handshake");
    net.send(A, &test_packet(ip(1), ip(2), b"after renewal"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 2);
}

/// A certificate for `keys` valid for 60 days from a day ago.
fn renew(pki: &Pki, keys: &NodeKeys, name: &str, mesh_ip: Ipv4Addr) -> NodeCert {
    pki.sign_keys(
        name,
        mesh_ip,
        keys,
        pki.start - time::Duration::days(1),
        pki.start + time::Duration::days(60),
    )
}

/// A handshake from an unknown key (its MAC1 needs only this node's public key) gets no answer
/// at all; a hello is answered only by one no longer than it, within a budget per address.
#[test]
fn unauthenticated_input_is_never_answered_with_more_bytes_than_it_carried() {
    let (pki, mut net) = pair();
    net.send(A, &test_packet(ip(1), ip(2), b"hi"));
    net.run();
    let b_key = net.hosts[B].node.wireguard_public();
    let victim = underlay(77);
    for i in 0..1_000u32 {
        let init = crate::forge::handshake_init(&b_key, i, &[i as u8; 108]);
        let out = answer_to(&mut net, B, victim, &init);
        assert!(out.transmits.is_empty(), "init {i} was answered");
    }
    // A hello that asks for an answer without the padding gets one only if B's is no longer;
    // a padded one gets B's, four times from one address and then no more for a while.
    let (stranger, _) = pki.node("c", ip(3));
    let mut small = Vec::new();
    rma_proto::wire::encode_cert_hello(stranger.der(), false, &mut small);
    small[5] = 1; // reply wanted, yet unpadded
    for (_, datagram) in answer_to(&mut net, B, victim, &small).transmits {
        assert!(datagram.len() <= small.len());
    }
    let mut padded = Vec::new();
    rma_proto::wire::encode_cert_hello(stranger.der(), true, &mut padded);
    let mut answers = 0;
    for _ in 0..20 {
        for (to, datagram) in answer_to(&mut net, B, victim, &padded).transmits {
            assert_eq!(to, victim);
            assert!(datagram.len() <= padded.len());
            answers += 1;
        }
    }
    assert!(answers <= 4, "{answers} answers to one address");
}

/// A peer that lost this node's certificate (it restarted) does not answer its handshakes;
/// the retried handshake carries this node's hello, and the session forms again.
#[cfg(feature = "fake-clock")]
#[test]
fn a_restarted_peer_learns_the_node_again_from_the_hello_sent_with_a_retry() {
    let pki = Pki::new("test-ca");
    let mut net = Net::new(&pki);
    let (b_cert, b_keys) = pki.node("b", ip(2));
    net.add(&pki, b_cert.clone(), b_keys.clone(), underlay(2));
    let (a_cert, a_keys) = pki.node("a", ip(1));
    net.add(&pki, a_cert, a_keys, underlay(1));
    net.send(A, &test_packet(ip(1), ip(2), b"before"));
    net.run();
    assert_eq!(net.take_delivered(B).len(), 1);
    // B starts again knowing nobody (A is not among its static peers).
    let identity = Identity {
        cert: b_cert,
        keys: b_keys,
        ca: pki.ca.clone(),
        crls: Vec::new(),
    };
    net.hosts[B].node = Node::new(identity, &settings(Some(25), &[]));
    let mut delivered = 0;
    for i in 0..60u32 {
        net.send(A, &test_packet(ip(1), ip(2), &i.to_be_bytes()));
        net.advance(Duration::from_secs(1));
        delivered += net.take_delivered(B).len();
    }
    assert!(delivered > 0, "A's traffic never reached the restarted B");
    let status = net.hosts[B].node.status(net.now.instant);
    assert_eq!(status.peers.len(), 1);
    assert_eq!(status.peers[0].name, "a");
}

/// Hellos cost a signature check each: one source gets a burst and then two a second, and a
/// certificate refused once is refused again from memory.
#[test]
fn hellos_from_one_source_are_budgeted_and_refusals_remembered() {
    let (_pki, mut net) = pair();
    let foreign = Pki::new("other-ca");
    let (cert, _) = foreign.node("x", ip(5));
    let mut hello = Vec::new();
    rma_proto::wire::encode_cert_hello(cert.der(), true, &mut hello);
    for _ in 0..100 {
        let out = answer_to(&mut net, B, underlay(66), &hello);
        assert!(
            out.transmits.is_empty(),
            "a refused certificate gets no answer"
        );
    }
    let drops = net.hosts[B].node.status(net.now.instant).drops;
    assert_eq!(drops.bad_cert, 8, "the source's burst");
    assert_eq!(drops.over_budget, 92);
    // From other sources the same certificate is refused from memory.
    for n in 100..110u8 {
        answer_to(&mut net, B, underlay(n), &hello);
    }
    let tables = net.hosts[B].node.tables();
    assert_eq!(tables.refused_certificates, 1);
    assert_eq!(net.hosts[B].node.status(net.now.instant).drops.bad_cert, 18);
}
