//! The `tun_packets` fuzz target's body.

use std::cell::RefCell;

use meshd::firewall::{Direction, Firewall, PeerMatch, Policy, Ports, Proto, Rule};
use meshd::ipv4;

/// What the TUN device hands meshd: any bytes. The IPv4 flow parser, the firewall on both
/// directions, the reject answers (which must parse, addressed back) and the node's TUN path:
/// no panic, and every table within its bound.
pub fn tun_packets(data: &[u8]) {
    thread_local! {
        static RUNNING: RefCell<Option<super::common::Running<u64>>> = const { RefCell::new(None) };
    }
    super::common::with_running(&RUNNING, || 0, |running| run(running, data));
}

fn run(running: &mut super::common::Running<u64>, data: &[u8]) {
    let world = super::common::world();
    // Ten milliseconds pass per packet, and the node's timers run every hundred packets.
    running.ms += 10;
    running.extra += 1;
    let now = super::common::now(running.start, world, running.ms);
    if let Some(flow) = ipv4::flow(data) {
        let web = Rule {
            proto: Proto::Tcp,
            ports: Ports::Range(80, 443),
            peer: PeerMatch::Group("workers".into()),
        };
        let mut firewall = Firewall::new(Policy {
            inbound: vec![web.clone()],
            outbound: vec![web],
            ..Policy::default()
        });
        let peer = &world.peers[0].0;
        for direction in [Direction::Inbound, Direction::Outbound] {
            let _ = firewall.check(direction, &flow, peer, now.instant);
        }
        if let Some(answer) = ipv4::reject(data) {
            let back = ipv4::flow(&answer).expect("a reject is a packet meshd itself parses");
            assert_eq!((back.src, back.dst), (flow.dst, flow.src));
            assert!(
                ipv4::reject(&answer).is_none(),
                "a reject is never answered in turn"
            );
        }
        let _ = ipv4::probe(data);
    }
    let mut out = super::common::Sink::default();
    running.node.handle_tun_packet(data, now, &mut out);
    if running.extra.is_multiple_of(100) {
        running.node.handle_timers(now, &mut out);
    }
    super::common::assert_bounded(&running.node);
}
