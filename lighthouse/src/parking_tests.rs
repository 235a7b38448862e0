//! Parked registrations in the core, over simulated hours.

use rma_proto::parked::{KEY_LEN, Key};
use rma_proto::wire::{Control, parse_control};

use super::*;

const KEY: [u8; KEY_LEN] = [7; KEY_LEN];

/// Parks node `n` (joined on connection `conn`) with [`KEY`], and closes its connection.
fn park(w: &mut World, conn: ConnId) {
    let effects = w.lighthouse.park(conn, &KEY, w.now);
    assert_eq!(
        effects,
        vec![Effect::Send(
            conn,
            FromLighthouse::Parked {
                lists: parking::lists_digest(w.lighthouse.lists())
            }
        )]
    );
    w.lighthouse.disconnect(conn);
}

/// Node `n`'s ping with `counter` from `from`, under `key`: the ack's counter and observed
/// address, if one came.
fn ping(
    w: &mut World,
    n: u8,
    counter: u64,
    from: SocketAddr,
    key: &Key,
) -> Option<(u64, u64, SocketAddr)> {
    let mut datagram = Vec::new();
    key.ping(&[n; 16], counter, &mut datagram);
    let Ok(Control::ParkedPing(ping)) = parse_control(&datagram) else {
        panic!("a ping that does not parse");
    };
    match w.lighthouse.parked_ping(from, &ping, w.now).as_slice() {
        [] => None,
        [Effect::Datagram(to, ack)] => {
            assert_eq!(*to, from, "the ack goes where the ping came from");
            assert!(
                ack.len() <= datagram.len(),
                "an ack is never longer than its ping"
            );
            let Ok(Control::ParkedAck(ack)) = parse_control(ack) else {
                panic!("an ack that does not parse");
            };
            assert!(Key::new(&KEY).verify_ack(&ack));
            Some((ack.counter, ack.lists, ack.observed))
        }
        other => panic!("{other:?}"),
    }
}

/// The wake in `effect`, checked: its address and counter.
fn wake(effect: &Effect) -> (SocketAddr, u64) {
    let Effect::Datagram(to, datagram) = effect else {
        panic!("expected a wake, got {effect:?}");
    };
    let Ok(Control::Wake(wake)) = parse_control(datagram) else {
        panic!("a wake that does not parse");
    };
    assert!(Key::new(&KEY).verify_wake(&wake));
    (*to, wake.counter)
}

/// The punches and peer answers in `effects`, by connection, in order.
fn introductions(effects: &[Effect]) -> Vec<(ConnId, &'static str)> {
    effects
        .iter()
        .map(|e| match e {
            Effect::Send(c, FromLighthouse::Punch { .. }) => (*c, "punch"),
            Effect::Send(c, FromLighthouse::Peer { .. }) => (*c, "peer"),
            other => panic!("{other:?}"),
        })
        .collect()
}

#[test]
fn a_parked_node_stays_registered_on_its_pings_for_hours_and_goes_when_they_stop() {
    let mut w = World::new();
    w.join(1, 1);
    w.join(2, 2);
    park(&mut w, 2);
    let key = Key::new(&KEY);
    assert_eq!((w.lighthouse.connected(), w.lighthouse.parked()), (1, 1));
    let wg = addr("203.0.113.2:4242");
    // Six hours of pings every 20 s, the NAT moving the node's port once an hour.
    let mut from = wg;
    for counter in 1..=6 * 180 {
        w.now += Duration::from_secs(20);
        if counter % 180 == 0 {
            from = SocketAddr::new(from.ip(), from.port() + 1);
        }
        w.lighthouse.sweep(w.now);
        let lists = parking::lists_digest(&[]);
        assert_eq!(
            ping(&mut w, 2, counter, from, &key),
            Some((counter, lists, from))
        );
    }
    let registered = w.lighthouse.registrations();
    assert_eq!(registered.len(), 2);
    assert!(registered[1].parked);
    assert_eq!(
        registered[1].wireguard,
        Some(from),
        "the pings moved its address"
    );
    assert_eq!(w.lighthouse.counters().parked_pings, 6 * 180);
    // Then they stop: it is kept for PARKED_EXPIRY, and no longer.
    w.now += PARKED_EXPIRY;
    w.lighthouse.sweep(w.now);
    assert_eq!(w.lighthouse.parked(), 1);
    w.now += Duration::from_secs(1);
    assert_eq!(
        w.lighthouse.sweep(w.now),
        vec![Effect::Close(
            2,
            CloseReason::Protocol("parked pings stopped")
        )]
    );
    assert_eq!(w.lighthouse.parked(), 0);
    assert_eq!(w.lighthouse.registrations().len(), 1);
    assert_eq!(w.lighthouse.counters().parked_expired, 1);
    // Its late ping is refused and answers nothing, and its token is free.
    assert_eq!(ping(&mut w, 2, 10_000, from, &key), None);
    assert_eq!(w.lighthouse.counters().parked_pings_refused, 1);
    assert!(w.lighthouse.tokens.len() == 1 && w.lighthouse.nodes.len() == 1);
}

#[test]
fn replayed_forged_or_misdirected_pings_and_clear_reflects_change_nothing() {
    let mut w = World::new();
    w.join(1, 1);
    w.join(2, 2);
    park(&mut w, 2);
    let key = Key::new(&KEY);
    let wg = addr("203.0.113.2:4242");
    let elsewhere = addr("198.51.100.9:999");
    assert!(ping(&mut w, 2, 5, wg, &key).is_some());
    // The same counter again, or an older one, from anywhere: a replay.
    assert_eq!(ping(&mut w, 2, 5, elsewhere, &key), None);
    assert_eq!(ping(&mut w, 2, 4, elsewhere, &key), None);
    // The right token under another key.
    assert_eq!(
        ping(&mut w, 2, 6, elsewhere, &Key::new(&[8; KEY_LEN])),
        None
    );
    // A token nobody holds, and the token of a node that is connected, not parked.
    assert_eq!(ping(&mut w, 9, 6, elsewhere, &key), None);
    assert_eq!(ping(&mut w, 1, 6, elsewhere, &key), None);
    // The parked node's token was seen in clear: a reflect with it moves nothing.
    assert!(w.lighthouse.reflect(elsewhere, &[2; 16]).is_empty());
    assert_eq!(w.lighthouse.counters().parked_pings_refused, 5);
    assert_eq!(w.lighthouse.registrations()[1].wireguard, Some(wg));
    assert_eq!(
        w.lighthouse.registrations()[0].wireguard,
        Some(addr("203.0.113.1:4242"))
    );
    // The next counter, signed, is taken.
    assert!(ping(&mut w, 2, 6, wg, &key).is_some());
}

#[test]
fn a_query_for_a_parked_node_wakes_it_and_the_introduction_waits_for_its_return() {
    let mut w = World::new();
    let a = w.join(1, 1);
    let b = w.join(2, 2);
    w.join(4, 4);
    park(&mut w, 2);
    let query = ToLighthouse::Query {
        target: Target::MeshIp(b.mesh_ip()),
    };
    // Nothing for the asker yet: its packets would reach b's NAT before b's punch left it.
    let effects = w.lighthouse.message(1, query.clone(), w.now);
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(wake(&effects[0]), (addr("203.0.113.2:4242"), 1));
    // More queries within the second wake nobody; the next second's first one wakes it
    // again (a wake may be lost). Another node asks too.
    for i in 0..20 {
        w.now += Duration::from_millis(100);
        let effects = w.lighthouse.message(1, query.clone(), w.now);
        match i {
            9 | 19 => assert_eq!(wake(&effects[0]).1, if i == 9 { 2 } else { 3 }),
            _ => assert!(effects.is_empty(), "{i}: {effects:?}"),
        }
    }
    assert!(w.lighthouse.message(4, query.clone(), w.now).is_empty());
    assert_eq!(w.lighthouse.counters().wakes, 3);
    // It connects again: the parked registration goes without a close, and once it has
    // registered, each node that asked is introduced to it, its punch first.
    let quic = addr("203.0.113.2:5001");
    assert!(
        w.lighthouse
            .connect(3, b.clone(), quic, [3; 16], w.now)
            .is_empty()
    );
    assert_eq!(
        (w.lighthouse.parked(), w.lighthouse.counters().unparked),
        (0, 1)
    );
    assert_eq!(w.lighthouse.counters().closed_replaced, 0);
    let effects = w.lighthouse.message(
        3,
        ToLighthouse::Register {
            local: vec![addr("192.168.2.2:4242")],
        },
        w.now,
    );
    assert!(matches!(
        effects[0],
        Effect::Send(3, FromLighthouse::Welcome { .. })
    ));
    let sent = introductions(&effects[1..]);
    assert_eq!(
        sent,
        vec![(3, "punch"), (1, "peer"), (3, "punch"), (4, "peer")]
    );
    assert_eq!(
        effects[1],
        Effect::Send(
            3,
            FromLighthouse::Punch {
                cert: a.der().to_vec(),
                endpoints: vec![addr("203.0.113.1:4242"), addr("192.168.1.2:4242")],
            }
        )
    );
    // Connected again, it is introduced at once.
    let effects = w.lighthouse.message(1, query, w.now);
    assert!(matches!(
        &effects[0],
        Effect::Send(3, FromLighthouse::Punch { .. })
    ));
}

#[test]
fn the_askers_waiting_for_a_parked_node_are_bounded() {
    let mut w = World::new();
    let target = w.join(1, 1);
    park(&mut w, 1);
    for n in 2..40 {
        w.join(ConnId::from(n), n);
        w.lighthouse.message(
            ConnId::from(n),
            ToLighthouse::Query {
                target: Target::MeshIp(target.mesh_ip()),
            },
            w.now,
        );
    }
    w.lighthouse
        .connect(100, target, addr("203.0.113.1:5001"), [100; 16], w.now);
    let effects = w
        .lighthouse
        .message(100, ToLighthouse::Register { local: vec![] }, w.now);
    let askers: Vec<ConnId> = effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(c, FromLighthouse::Peer { .. }) => Some(*c),
            _ => None,
        })
        .collect();
    // The newest ones; the older ones ask again, as meshd does until it is answered.
    assert_eq!(
        askers,
        (40 - parking::WAITING_MAX as ConnId..40).collect::<Vec<_>>()
    );
}

#[test]
fn relayed_packets_for_a_parked_node_wake_it_and_flow_once_it_is_back() {
    let mut w = World::new();
    w.join(1, 1);
    let b = w.join(2, 2);
    assert_eq!(
        w.relay(1, b.mesh_ip(), 100, w.now),
        Ok((2, Ipv4Addr::new(10, 42, 0, 1)))
    );
    park(&mut w, 2);
    // The route held before the park is gone with it (the epoch moved).
    for _ in 0..3 {
        assert_eq!(w.relay(1, b.mesh_ip(), 100, w.now), Err(RelayDrop::Parked));
    }
    let wakes: Vec<_> = (0..3)
        .flat_map(|_| w.lighthouse.wake_for_relay(b.mesh_ip(), w.now))
        .collect();
    assert_eq!(wakes.len(), 1, "one wake a second");
    assert!(
        w.lighthouse
            .wake_for_relay(Ipv4Addr::new(10, 42, 0, 99), w.now)
            .is_empty()
    );
    // Not held by the relay: once it is back, the next packet finds it.
    w.lighthouse
        .connect(3, b.clone(), addr("203.0.113.2:5001"), [3; 16], w.now);
    w.lighthouse
        .message(3, ToLighthouse::Register { local: vec![] }, w.now);
    assert_eq!(
        w.relay(1, b.mesh_ip(), 100, w.now),
        Ok((3, Ipv4Addr::new(10, 42, 0, 1)))
    );
}

#[test]
fn a_parked_node_learns_of_new_lists_from_its_acks_and_is_cut_off_if_revoked() {
    let mut w = World::new();
    w.join(1, 1);
    let b = w.join(2, 2);
    let c = w.join(3, 3);
    park(&mut w, 2);
    park(&mut w, 3);
    let key = Key::new(&KEY);
    let before = ping(&mut w, 2, 1, addr("203.0.113.2:4242"), &key)
        .unwrap()
        .1;
    let effects = w.lighthouse.set_crl(w.pki.crl_revoking(&[&c]));
    // The parked node revoked goes (its close finds no connection, unless one lingers); the
    // other parked one is not pushed the list, but its next ack carries the new digest.
    assert_eq!(effects.len(), 2, "{effects:?}");
    assert_eq!(effects[0], Effect::Close(3, CloseReason::Revoked));
    assert!(matches!(
        &effects[1],
        Effect::Send(1, FromLighthouse::Crl { .. })
    ));
    assert_eq!(w.lighthouse.parked(), 1);
    assert_eq!(ping(&mut w, 3, 1, addr("203.0.113.3:4242"), &key), None);
    let after = ping(&mut w, 2, 2, addr("203.0.113.2:4242"), &key)
        .unwrap()
        .1;
    assert_ne!(before, after);
    assert_eq!(after, parking::lists_digest(w.lighthouse.lists()));
    // A parked node whose certificate expires goes the same way.
    let (short, _) = w.pki.node_valid(
        "node-4",
        Ipv4Addr::new(10, 42, 0, 4),
        w.pki.start,
        w.pki.start + time::Duration::hours(1),
    );
    w.lighthouse
        .connect(4, short, addr("203.0.113.4:5000"), [4; 16], w.now);
    w.lighthouse
        .message(4, ToLighthouse::Register { local: vec![] }, w.now);
    park(&mut w, 4);
    assert_eq!(
        w.lighthouse.expire(w.pki.start + time::Duration::hours(2)),
        vec![Effect::Close(4, CloseReason::CertificateExpired)]
    );
    assert_eq!(w.lighthouse.parked(), 1);
    drop(b);
}

#[test]
fn a_park_before_registering_or_a_message_after_parking_is_handled() {
    let mut w = World::new();
    w.join(1, 1);
    let (cert, _) = w.pki.node("node-2", Ipv4Addr::new(10, 42, 0, 2));
    w.lighthouse
        .connect(2, cert, addr("203.0.113.2:5000"), [2; 16], w.now);
    assert_eq!(
        w.lighthouse.park(2, &KEY, w.now),
        vec![Effect::Close(
            2,
            CloseReason::Protocol("park before register")
        )]
    );
    w.lighthouse
        .message(2, ToLighthouse::Register { local: vec![] }, w.now);
    // A node that parks and then speaks on the connection it kept (its park crossed a
    // message) is connected again, and whoever asked for it meanwhile is introduced.
    w.lighthouse.park(1, &KEY, w.now);
    assert_eq!(w.lighthouse.parked(), 1);
    let for_1 = ToLighthouse::Query {
        target: Target::Name("node-1".into()),
    };
    let held = w.lighthouse.message(2, for_1.clone(), w.now);
    assert!(
        matches!(held.as_slice(), [Effect::Datagram(..)]),
        "{held:?}"
    );
    let effects = w.lighthouse.message(
        1,
        ToLighthouse::Query {
            target: Target::Name("node-2".into()),
        },
        w.now,
    );
    assert_eq!(w.lighthouse.parked(), 0);
    let sent = introductions(&effects);
    // Node 2's wait ends first (1 is punched, 2 answered), then 1's own query is answered.
    assert_eq!(
        sent,
        vec![(1, "punch"), (2, "peer"), (2, "punch"), (1, "peer")]
    );
    // The same goes for a renewal that crossed the park (the shell calls this for it).
    w.lighthouse.park(2, &KEY, w.now);
    assert_eq!(w.lighthouse.parked(), 1);
    assert!(w.lighthouse.back_on_connection(2, w.now).is_empty());
    assert_eq!(w.lighthouse.parked(), 0);
    // The park key comes from the connection: a second park on one would reuse it.
    assert_eq!(
        w.lighthouse.park(1, &KEY, w.now),
        vec![Effect::Close(
            1,
            CloseReason::Protocol("a second park on one connection")
        )]
    );
    // A connection whose registration is gone has nothing to say.
    assert_eq!(
        w.lighthouse.message(9, for_1, w.now),
        vec![Effect::Close(
            9,
            CloseReason::Protocol("no registration on this connection")
        )]
    );
}

/// A parked registration hands its askers and address only to the same identity coming
/// back: another certificate with the same name or mesh IP replaces it as any node would.
#[test]
fn only_the_same_identity_inherits_a_parked_registration() {
    let mut w = World::new();
    w.join(1, 1);
    let b = w.join(2, 2);
    park(&mut w, 2);
    let query = ToLighthouse::Query {
        target: Target::MeshIp(b.mesh_ip()),
    };
    assert_eq!(w.lighthouse.message(1, query, w.now).len(), 1, "a wake");
    let (other, _) = w.pki.node("node-2", b.mesh_ip());
    w.lighthouse
        .connect(3, other, addr("203.0.113.9:5000"), [3; 16], w.now);
    assert_eq!(w.lighthouse.counters().unparked, 0);
    assert_eq!(w.lighthouse.counters().closed_replaced, 1);
    let effects = w
        .lighthouse
        .message(3, ToLighthouse::Register { local: vec![] }, w.now);
    assert!(
        effects
            .iter()
            .all(|e| matches!(e, Effect::Send(3, FromLighthouse::Welcome { .. }))),
        "{effects:?}"
    );
    let registered = w.lighthouse.registrations();
    assert_eq!(registered[1].wireguard, None, "no address it did not prove");
}
