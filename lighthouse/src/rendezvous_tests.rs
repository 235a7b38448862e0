//! The rendezvous core driven in-process with certificates from a test CA and time passed in.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rma_ca::NodeCert;
use rma_ca::test_ca::TestCa;

use super::*;
use crate::relay::{self, Relay, RelayCounters};

#[path = "parking_tests.rs"]
mod parked;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

struct World {
    pki: TestCa,
    lighthouse: Rendezvous,
    now: Instant,
    /// Each node's relay, as the shell keeps it on the node's task.
    relays: HashMap<ConnId, Relay<ConnId>>,
    relay_limit: Limit,
    relayed: RelayCounters,
}

impl World {
    fn new() -> Self {
        Self {
            pki: TestCa::new("test-ca"),
            lighthouse: Rendezvous::new(4243, Vec::new()),
            now: Instant::now(),
            relays: HashMap::new(),
            relay_limit: relay::DEFAULT_LIMIT,
            relayed: RelayCounters::default(),
        }
    }

    /// A datagram of `len` bytes that `conn` relays to `to`, through its relay.
    fn relay(
        &mut self,
        conn: ConnId,
        to: Ipv4Addr,
        len: usize,
        now: Instant,
    ) -> relay::Route<ConnId> {
        let epoch = self.lighthouse.epoch().load(Ordering::Acquire);
        let lighthouse = &self.lighthouse;
        self.relays
            .entry(conn)
            .or_insert_with(|| Relay::new(self.relay_limit, now))
            .forward(
                to,
                len,
                now,
                epoch,
                || lighthouse.route(conn, to),
                &self.relayed,
            )
            .map(|(dest, from)| (*dest, from))
    }

    fn relayed(&self) -> (u64, u64, u64, u64) {
        let c = &self.relayed;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            load(&c.packets),
            load(&c.bytes),
            load(&c.dropped),
            load(&c.over_budget),
        )
    }

    /// Connects and registers node `n` (mesh IP 10.42.0.n) behind public address 203.0.113.n.
    fn join(&mut self, conn: ConnId, n: u8) -> NodeCert {
        let (cert, _) = self
            .pki
            .node(&format!("node-{n}"), Ipv4Addr::new(10, 42, 0, n));
        let quic = addr(&format!("203.0.113.{n}:5000"));
        assert!(
            self.lighthouse
                .connect(conn, cert.clone(), quic, [n; 16], self.now)
                .is_empty()
        );
        let effects = self.lighthouse.message(
            conn,
            ToLighthouse::Register {
                local: vec![addr(&format!("192.168.{n}.2:4242"))],
            },
            self.now,
        );
        assert_eq!(
            effects,
            vec![Effect::Send(
                conn,
                FromLighthouse::Welcome {
                    token: [n; 16],
                    reflector_port: 4243,
                    quic_observed: quic
                }
            )]
        );
        let wg = addr(&format!("203.0.113.{n}:4242"));
        assert_eq!(
            self.lighthouse.reflect(wg, &[n; 16]),
            vec![Effect::Send(
                conn,
                FromLighthouse::Observed { wireguard: wg }
            )]
        );
        cert
    }
}

#[test]
fn a_query_answers_the_asker_and_tells_the_target_to_punch() {
    let mut w = World::new();
    let a = w.join(1, 1);
    let b = w.join(2, 2);
    let effects = w.lighthouse.message(
        1,
        ToLighthouse::Query {
            target: Target::MeshIp(b.mesh_ip()),
        },
        w.now,
    );
    assert_eq!(
        effects,
        vec![
            Effect::Send(
                2,
                FromLighthouse::Punch {
                    cert: a.der().to_vec(),
                    endpoints: vec![addr("203.0.113.1:4242"), addr("192.168.1.2:4242")],
                }
            ),
            Effect::Send(
                1,
                FromLighthouse::Peer {
                    cert: b.der().to_vec(),
                    endpoints: vec![addr("203.0.113.2:4242"), addr("192.168.2.2:4242")],
                }
            ),
        ]
    );
    // By name too, in any case (mesh DNS asks in whatever case a program wrote); unknown
    // names and the asker itself are not found.
    for name in ["node-2", "NODE-2"] {
        let by_name = w.lighthouse.message(
            1,
            ToLighthouse::Query {
                target: Target::Name(name.into()),
            },
            w.now,
        );
        assert_eq!(by_name.len(), 2, "{name}");
    }
    for target in [Target::Name("nobody".into()), Target::MeshIp(a.mesh_ip())] {
        assert_eq!(
            w.lighthouse.message(
                1,
                ToLighthouse::Query {
                    target: target.clone()
                },
                w.now
            ),
            vec![Effect::Send(1, FromLighthouse::NotFound { target })]
        );
    }
    assert_eq!(w.lighthouse.counters().queries, 5);
    assert_eq!(w.lighthouse.counters().queries_not_found, 2);
}

#[test]
fn nodes_behind_the_same_nat_get_local_addresses_first() {
    let mut w = World::new();
    w.join(1, 1);
    w.join(2, 2);
    // Node 2's WireGuard socket appears at node 1's public IP: they share a NAT.
    w.lighthouse.reflect(addr("203.0.113.1:6000"), &[2; 16]);
    let effects = w.lighthouse.message(
        1,
        ToLighthouse::Query {
            target: Target::MeshIp(Ipv4Addr::new(10, 42, 0, 2)),
        },
        w.now,
    );
    let Effect::Send(1, FromLighthouse::Peer { endpoints, .. }) = &effects[1] else {
        panic!("{effects:?}")
    };
    assert_eq!(
        endpoints,
        &vec![addr("192.168.2.2:4242"), addr("203.0.113.1:6000")]
    );
}

#[test]
fn registration_is_soft_state_and_a_reconnect_replaces_the_old_connection() {
    let mut w = World::new();
    w.join(1, 1);
    let b = w.join(2, 2);
    let query = ToLighthouse::Query {
        target: Target::MeshIp(b.mesh_ip()),
    };
    // Node 2 connects again before the old connection timed out: the old one is closed.
    let again = w
        .lighthouse
        .connect(3, b.clone(), addr("203.0.113.2:5001"), [9; 16], w.now);
    assert_eq!(again, vec![Effect::Close(2, CloseReason::Replaced)]);
    // The old token no longer maps anywhere; relays to node 2 wait for its new registration.
    assert!(
        w.lighthouse
            .reflect(addr("203.0.113.2:1"), &[2; 16])
            .is_empty()
    );
    assert_eq!(w.lighthouse.counters().reflections_unknown, 1);
    w.lighthouse
        .message(3, ToLighthouse::Register { local: vec![] }, w.now);
    assert_eq!(
        w.relay(1, b.mesh_ip(), 100, w.now),
        Ok((3, Ipv4Addr::new(10, 42, 0, 1)))
    );
    // Its connection ends: it is gone, from node 1's relay too.
    w.lighthouse.disconnect(3);
    assert_eq!(
        w.relay(1, b.mesh_ip(), 100, w.now),
        Err(RelayDrop::UnknownDestination)
    );
    assert_eq!(
        w.lighthouse.message(1, query, w.now),
        vec![Effect::Send(
            1,
            FromLighthouse::NotFound {
                target: Target::MeshIp(b.mesh_ip())
            }
        )]
    );
    assert_eq!(w.lighthouse.registrations().len(), 1);
}

#[test]
fn relay_routes_by_mesh_ip_and_stamps_the_certified_source() {
    let mut w = World::new();
    w.join(1, 1);
    w.join(2, 2);
    let (unregistered, _) = w.pki.node("node-3", Ipv4Addr::new(10, 42, 0, 3));
    w.lighthouse
        .connect(3, unregistered, addr("203.0.113.3:5000"), [3; 16], w.now);

    assert_eq!(
        w.relay(1, Ipv4Addr::new(10, 42, 0, 2), 1400, w.now),
        Ok((2, Ipv4Addr::new(10, 42, 0, 1)))
    );
    assert_eq!(
        w.relay(1, Ipv4Addr::new(10, 42, 0, 9), 10, w.now),
        Err(RelayDrop::UnknownDestination)
    );
    assert_eq!(
        w.relay(1, Ipv4Addr::new(10, 42, 0, 1), 10, w.now),
        Err(RelayDrop::ToSelf)
    );
    assert_eq!(
        w.relay(3, Ipv4Addr::new(10, 42, 0, 1), 10, w.now),
        Err(RelayDrop::UnregisteredSender)
    );
    assert_eq!(
        w.relay(42, Ipv4Addr::new(10, 42, 0, 1), 10, w.now),
        Err(RelayDrop::UnregisteredSender)
    );
    assert_eq!(w.relayed(), (1, 1400, 4, 0));
}

#[test]
fn queries_before_registering_end_the_connection_and_floods_are_limited() {
    let mut w = World::new();
    w.join(1, 1);
    let (cert, _) = w.pki.node("node-5", Ipv4Addr::new(10, 42, 0, 5));
    w.lighthouse
        .connect(5, cert, addr("203.0.113.5:5000"), [5; 16], w.now);
    let query = ToLighthouse::Query {
        target: Target::MeshIp(Ipv4Addr::new(10, 42, 0, 1)),
    };
    assert_eq!(
        w.lighthouse.message(5, query.clone(), w.now),
        vec![Effect::Close(
            5,
            CloseReason::Protocol("query before register")
        )]
    );

    let answered = (0..200)
        .filter(|_| !w.lighthouse.message(1, query.clone(), w.now).is_empty())
        .count();
    assert_eq!(answered, QUERY_BURST as usize);
    // Time refills the bucket at the steady rate.
    w.now += Duration::from_millis(500);
    let answered = (0..200)
        .filter(|_| !w.lighthouse.message(1, query.clone(), w.now).is_empty())
        .count();
    assert_eq!(answered, (QUERY_RATE / 2.0) as usize);
    assert_eq!(
        w.lighthouse.counters().queries_rate_limited,
        400 - QUERY_BURST as u64 - (QUERY_RATE / 2.0) as u64
    );
}

#[test]
fn a_new_revocation_list_cuts_off_revoked_nodes_and_reaches_everyone_else() {
    let mut w = World::new();
    w.join(1, 1);
    let b = w.join(2, 2);
    w.join(3, 3);
    let crl = w.pki.crl_revoking(&[&b]);
    let effects = w.lighthouse.set_crl(crl.clone());
    let der = crl.der().to_vec();
    assert_eq!(
        effects,
        vec![
            Effect::Close(2, CloseReason::Revoked),
            Effect::Send(1, FromLighthouse::Crl { der: der.clone() }),
            Effect::Send(3, FromLighthouse::Crl { der: der.clone() }),
        ]
    );
    assert_eq!(
        w.relay(1, b.mesh_ip(), 10, w.now),
        Err(RelayDrop::UnknownDestination)
    );
    // A node registering later is handed the list after its welcome.
    let (cert, _) = w.pki.node("node-4", Ipv4Addr::new(10, 42, 0, 4));
    w.lighthouse
        .connect(4, cert, addr("203.0.113.4:5000"), [4; 16], w.now);
    let effects = w
        .lighthouse
        .message(4, ToLighthouse::Register { local: vec![] }, w.now);
    assert_eq!(effects.len(), 2);
    assert_eq!(effects[1], Effect::Send(4, FromLighthouse::Crl { der }));
    // A revoked node whose handshake finished just before the list came in is refused when
    // its connection reaches the core, and does not replace anything.
    let effects = w
        .lighthouse
        .connect(5, b.clone(), addr("203.0.113.2:5001"), [5; 16], w.now);
    assert_eq!(effects, vec![Effect::Close(5, CloseReason::Revoked)]);
    assert_eq!(w.lighthouse.counters().closed_revoked, 2);
    assert_eq!(w.lighthouse.connected(), 3);
    assert!(w.lighthouse.token(5).is_none());
}

#[test]
fn expired_certificates_are_cut_off_when_their_time_comes() {
    let mut w = World::new();
    w.join(1, 1);
    let end = w.pki.start + time::Duration::hours(1);
    let (short, _) = w.pki.node_valid(
        "short",
        Ipv4Addr::new(10, 42, 0, 7),
        w.pki.start - time::Duration::hours(1),
        end,
    );
    w.lighthouse
        .connect(7, short, addr("203.0.113.7:5000"), [7; 16], w.now);
    assert_eq!(w.lighthouse.next_expiry(), Some(end));
    assert!(w.lighthouse.expire(end).is_empty());
    assert_eq!(
        w.lighthouse.expire(end + time::Duration::seconds(1)),
        vec![Effect::Close(7, CloseReason::CertificateExpired)]
    );
    assert_eq!(w.lighthouse.connected(), 1);
    // The soonest expiry is now node 1's, and none once it has gone too.
    assert!(w.lighthouse.next_expiry() > Some(end));
    w.lighthouse.disconnect(1);
    assert_eq!(w.lighthouse.next_expiry(), None);
}

#[test]
fn registered_endpoints_are_filtered_and_bounded() {
    let local = vec![
        addr("127.0.0.1:4242"),
        addr("0.0.0.0:4242"),
        addr("192.168.1.2:0"),
        addr("224.0.0.1:4242"),
        addr("[::1]:4242"),
        addr("192.168.1.2:4242"),
    ];
    assert_eq!(usable_endpoints(local), vec![addr("192.168.1.2:4242")]);
    let many = (0..40).map(|i| addr(&format!("10.0.0.{i}:1"))).collect();
    assert_eq!(usable_endpoints(many).len(), MAX_LOCAL_ENDPOINTS);
}

/// A node relaying flat out spends its own budget: its datagrams beyond it are dropped, and
/// another pair's relayed traffic passes all the while. Over an hour of it the budget refills
/// at its rate, no faster.
#[test]
fn a_node_relaying_flat_out_does_not_starve_another_pair() {
    let mut w = World::new();
    let limit = Limit {
        rate: 100_000.0,
        burst: 20_000.0,
    };
    w.relay_limit = limit;
    for n in 1..=4 {
        w.join(u64::from(n), n);
    }
    let (hog, quiet) = (1, 3);
    let (to_hog_peer, to_quiet_peer) = (Ipv4Addr::new(10, 42, 0, 2), Ipv4Addr::new(10, 42, 0, 4));
    let step = Duration::from_millis(10);
    let mut hog_bytes = 0u64;
    for i in 0..360_000u32 {
        let now = w.now + step * i;
        // The hog offers 1,400-byte datagrams at ten times its rate; the quiet pair a tenth.
        for _ in 0..7 {
            if w.relay(hog, to_hog_peer, 1400, now).is_ok() {
                hog_bytes += 1400;
            }
        }
        if i % 10 == 0 {
            assert_eq!(
                w.relay(quiet, to_quiet_peer, 1400, now),
                Ok((4, Ipv4Addr::new(10, 42, 0, 3))),
                "the quiet pair at step {i}"
            );
        }
    }
    let hour = 3600.0;
    let allowed = limit.burst + limit.rate * hour;
    assert!(hog_bytes as f64 <= allowed, "{hog_bytes} > {allowed}");
    assert!(hog_bytes as f64 >= 0.95 * limit.rate * hour, "{hog_bytes}");
    assert!(w.relayed().3 > 0);
}

#[test]
fn a_renewed_certificate_replaces_the_connections_and_outlives_the_old_one() {
    let mut w = World::new();
    w.join(1, 1);
    let end = w.pki.start + time::Duration::hours(1);
    let keys = rma_ca::NodeKeys::generate();
    let ip7 = Ipv4Addr::new(10, 42, 0, 7);
    let start = w.pki.start - time::Duration::hours(1);
    let old = w.pki.sign_keys("node-7", ip7, &keys, start, end);
    w.lighthouse
        .connect(7, old, addr("203.0.113.7:5000"), [7; 16], w.now);
    w.lighthouse
        .message(7, ToLighthouse::Register { local: vec![] }, w.now);
    // An older or equal renewal changes nothing; a later one replaces it, and peers get it.
    let same = w.pki.sign_keys("node-7", ip7, &keys, start, end);
    assert!(w.lighthouse.renewed(7, same).is_empty());
    assert_eq!(w.lighthouse.next_expiry(), Some(end));
    let later = end + time::Duration::days(30);
    let renewed = w.pki.sign_keys("node-7", ip7, &keys, w.pki.start, later);
    assert!(w.lighthouse.renewed(7, renewed.clone()).is_empty());
    assert_eq!(w.lighthouse.counters().renewals, 1);
    assert!(w.lighthouse.next_expiry() > Some(end));
    assert!(
        w.lighthouse
            .expire(end + time::Duration::seconds(1))
            .is_empty()
    );
    let effects = w.lighthouse.message(
        1,
        ToLighthouse::Query {
            target: Target::MeshIp(ip7),
        },
        w.now,
    );
    let answered = effects.iter().any(|e| {
        matches!(e, Effect::Send(1, FromLighthouse::Peer { cert, .. }) if *cert == renewed.chain_der())
    });
    assert!(answered, "{effects:?}");
    // Another key, name or IP is another identity: the connection ends.
    for (name, ip, k) in [
        ("node-7", ip7, rma_ca::NodeKeys::generate()),
        ("node-8", ip7, keys.clone()),
        ("node-7", Ipv4Addr::new(10, 42, 0, 8), keys.clone()),
    ] {
        let other = w
            .pki
            .sign_keys(name, ip, &k, w.pki.start, later + time::Duration::days(1));
        assert!(matches!(
            w.lighthouse.renewed(7, other).as_slice(),
            [Effect::Close(7, CloseReason::Protocol(_))]
        ));
    }
    // Unverified, it never reaches `renewed`: the core refuses the message itself.
    assert!(matches!(
        w.lighthouse
            .message(1, ToLighthouse::Renewed { cert: vec![1, 2] }, w.now)
            .as_slice(),
        [Effect::Close(1, CloseReason::Protocol(_))]
    ));
}

/// Lists of issuing CAs that have expired are forgotten, so that a lighthouse running for months
/// while issuing CAs come and go holds (and pushes to every node) only the live ones.
#[test]
fn lists_of_expired_issuing_cas_are_forgotten_over_simulated_months() {
    let mut w = World::new();
    let root_list = w.pki.crl(1, &[]);
    w.lighthouse.set_crl(root_list);
    let mut now = w.pki.start;
    for month in 0..10 {
        let issuing = w.pki.issuing_valid(
            &format!("enroll-{month}"),
            "10.42.128.0/17",
            now - time::Duration::days(1),
            now + time::Duration::days(60),
        );
        w.lighthouse.set_crl(issuing.crl(1, &[]));
        now += time::Duration::days(30);
        w.lighthouse.expire(now);
        // The root's list, and the issuing CAs made in the last two months.
        assert!(
            w.lighthouse.lists().len() <= 3,
            "month {month}: {}",
            w.lighthouse.lists().len()
        );
        assert!(w.lighthouse.crl().is_some(), "the root's list stays");
    }
}
