//! Parked lighthouse connections: nodes that park when idle, stay registered for hours on
//! their pings, and come back when a peer wants them, when the lighthouse forgets them or
//! when its revocation lists change.

use std::time::Duration;

use lighthouse::rendezvous::Rendezvous;
use rma_proto::parked::{KEY_LEN, Key};

use super::super::REFLECTOR;
use super::{Internet, NatKind, ip};

const PARK_AFTER: Duration = Duration::from_secs(60);

fn parked(net: &Internet, h: usize) -> bool {
    net.hosts[h].node.status(net.now.instant).lighthouses[0].parked
}

/// Two nodes behind cone NATs, parked after a minute without needing the lighthouse.
fn parked_pair() -> (Internet, usize, usize) {
    let mut net = Internet::new();
    net.park_after = Some(PARK_AFTER);
    let a = net.add(1, Some(NatKind::Cone));
    let b = net.add(2, Some(NatKind::Cone));
    net.advance(PARK_AFTER - Duration::from_secs(1));
    assert_eq!(net.lighthouse.parked(), 0, "not before park_after");
    net.advance(Duration::from_secs(2));
    assert_eq!(net.lighthouse.parked(), 2);
    assert!(parked(&net, a) && parked(&net, b));
    assert_eq!(net.lighthouse.connected(), 0);
    (net, a, b)
}

#[test]
fn idle_nodes_park_stay_registered_for_hours_and_come_back_when_a_peer_asks() {
    let (mut net, a, b) = parked_pair();
    let before = net.lighthouse.counters();
    let pings = before.parked_pings;
    // Two hours: every ping answered, nobody reconnects, and no plain reflect goes beside the
    // pings.
    net.advance(Duration::from_secs(2 * 3600));
    let counters = net.lighthouse.counters();
    assert_eq!(counters.reflections, before.reflections);
    assert!(
        counters.parked_pings - pings >= 2 * (2 * 3600 / 20 - 1),
        "{counters:?}"
    );
    assert_eq!(counters.parked_pings_refused, 0);
    assert_eq!((net.lighthouse.parked(), net.reconnects), (2, 0));
    assert_eq!(net.lighthouse.registrations().len(), 2);
    // a wants b: a connects again to ask; the lighthouse wakes b, which connects again and
    // gets a's punch; they meet directly.
    assert!(net.send(a, ip(2), b"after two hours"));
    assert_eq!(net.path(a, ip(2)).0, "direct");
    assert_eq!(net.path(b, ip(1)).0, "direct");
    assert_eq!(net.lighthouse.counters().wakes, 1);
    assert_eq!(net.reconnects, 2);
    assert!(!parked(&net, a) && !parked(&net, b));
    // The direct session needs no lighthouse: after another idle minute both park again,
    // and the session goes on.
    net.advance(PARK_AFTER + Duration::from_secs(1));
    assert_eq!(net.lighthouse.parked(), 2);
    assert!(net.send(b, ip(1), b"parked, and still direct"));
}

#[test]
fn a_parked_node_the_lighthouse_forgot_registers_again_when_its_acks_stop() {
    let (mut net, a, b) = parked_pair();
    // The lighthouse restarts: a new process knows no parked registration.
    net.lighthouse = Rendezvous::new(REFLECTOR.port(), Vec::new());
    net.advance(Duration::from_secs(25));
    assert_eq!(net.lighthouse.registrations().len(), 0);
    // Its pings unanswered for 50 s, each node connects and registers again.
    net.advance(Duration::from_secs(35));
    assert_eq!(net.lighthouse.registrations().len(), 2);
    assert!(!parked(&net, a) && !parked(&net, b));
    assert!(net.lighthouse.counters().parked_pings_refused > 0);
    assert!(net.send(a, ip(2), b"found again"));
}

#[test]
fn a_node_whose_peer_depends_on_the_relay_does_not_park() {
    let mut net = Internet::new();
    net.park_after = Some(PARK_AFTER);
    let a = net.add(1, Some(NatKind::Symmetric));
    let b = net.add(2, Some(NatKind::Symmetric));
    assert!(net.send(a, ip(2), b"relayed"));
    assert_eq!(net.path(a, ip(2)).0, "relayed");
    net.advance(PARK_AFTER * 5);
    assert_eq!(net.lighthouse.parked(), 0);
    assert!(!parked(&net, a) && !parked(&net, b));
    assert!(net.send(b, ip(1), b"still relayed"));
}

#[test]
fn a_new_revocation_list_reaches_parked_nodes_through_their_acks() {
    let (mut net, a, b) = parked_pair();
    let revoked = net.pki.node("retired", ip(99)).0;
    let crl = net.pki.crl(1, &[&revoked]);
    let effects = net.lighthouse.set_crl(crl);
    assert!(effects.is_empty(), "parked nodes are not pushed the list");
    // The next ack names other lists: each node connects again and is handed the list.
    net.advance(Duration::from_secs(21));
    assert_eq!(net.reconnects, 2);
    let changed: Vec<usize> = net.crl_changes.iter().map(|(h, _)| *h).collect();
    assert!(changed.contains(&a) && changed.contains(&b), "{changed:?}");
    // And parks again once idle.
    net.advance(PARK_AFTER + Duration::from_secs(1));
    assert_eq!(net.lighthouse.parked(), 2);
}

#[test]
fn forged_or_replayed_wakes_and_acks_change_nothing() {
    let (mut net, _, b) = parked_pair();
    // The token is in every ping in clear; the key is not.
    let mut token = [b as u8 + 1; 16];
    token[..8].copy_from_slice(&net.conn_of(b).to_be_bytes());
    let forger = Key::new(&[0xee; KEY_LEN]);
    let mut wake = Vec::new();
    forger.wake(&token, 1, &mut wake);
    let mut ack = Vec::new();
    forger.ack(&token, 1, 0, REFLECTOR, &mut ack);
    let b_public = net.lighthouse.registrations()[1]
        .wireguard
        .expect("observed");
    let before = net.hosts[b].node.status(net.now.instant).drops.malformed;
    for datagram in [wake.clone(), ack] {
        net.inject(REFLECTOR, b_public, datagram);
    }
    net.run();
    assert!(parked(&net, b));
    assert_eq!(net.reconnects, 0);
    assert_eq!(
        net.hosts[b].node.status(net.now.instant).drops.malformed,
        before + 2
    );
    // A genuine wake, then the same wake replayed after the node parked again.
    let genuine = Key::new(&super::super::park_key(net.conn_of(b)));
    genuine.wake(&token, 1, &mut wake);
    net.inject(REFLECTOR, b_public, wake.clone());
    net.run();
    assert_eq!(net.reconnects, 1);
    net.advance(PARK_AFTER + Duration::from_secs(1));
    assert!(parked(&net, b));
    net.inject(REFLECTOR, b_public, wake);
    net.run();
    assert_eq!(net.reconnects, 1, "a wake for an old park is not taken");
}

/// boringtun's handshake retries run on its own clock, which only the fake-clock build moves.
#[cfg(feature = "fake-clock")]
#[test]
fn a_direct_path_that_breaks_while_parked_brings_the_relay_back() {
    let (mut net, a, b) = parked_pair();
    assert!(net.send(a, ip(2), b"direct"));
    net.advance_in_seconds(PARK_AFTER + Duration::from_secs(2));
    assert_eq!(net.lighthouse.parked(), 2);
    // b's NAT moves to a new public address: a's packets to the old one are lost, and a's
    // NAT refuses b's from the new one. b's pings tell the lighthouse where b is now.
    if let Some(nat) = &mut net.hosts[b].nat {
        nat.public = std::net::Ipv4Addr::new(203, 0, 113, 250);
    }
    let packet = crate::ipv4::test_packet(ip(1), ip(2), b"after the move");
    let mut arrived = false;
    for _ in 0..60 {
        net.send_packet(a, &packet);
        net.advance_in_seconds(Duration::from_secs(1));
        if net.take_delivered(b).contains(&packet) {
            arrived = true;
            break;
        }
    }
    assert!(
        arrived,
        "a's handshakes went unanswered, and the relay never came back"
    );
    assert!(!parked(&net, a), "a connected again for the relay");
}
