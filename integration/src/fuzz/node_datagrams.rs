//! The `node_datagrams` fuzz target's body.

use std::cell::RefCell;

use arbitrary::{Arbitrary, Unstructured};
use rma_proto::wire;

#[derive(Debug, Arbitrary)]
enum Step {
    Raw {
        from: u8,
        bytes: Vec<u8>,
    },
    ForgedInit {
        from: u8,
        sender: u32,
        filler: [u8; 108],
    },
    ForgedResponse {
        from: u8,
        receiver: u32,
        filler: [u8; 48],
    },
    Hello {
        from: u8,
        peer: u8,
        reply: bool,
    },
    ForeignHello {
        from: u8,
        reply: bool,
    },
    Punch {
        from: u8,
        peer: u8,
        reply: bool,
    },
    Relayed {
        peer: u8,
        bytes: Vec<u8>,
    },
    Tun {
        bytes: Vec<u8>,
    },
    Advance {
        ms: u16,
    },
}

/// meshd's core fed what the network can send it: raw datagrams, handshakes with a valid MAC1
/// (which anyone can make), hellos with this CA's and another CA's certificates, punches, relayed
/// frames and packets from the TUN, with time passing. No panic, and every
/// table stays within its bound.
pub fn node_datagrams(data: &[u8]) {
    let Ok(steps) = Vec::<Step>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    thread_local! {
        static RUNNING: RefCell<Option<super::common::Running<()>>> = const { RefCell::new(None) };
    }
    super::common::with_running(&RUNNING, || (), |running| run(running, steps));
}

fn run(running: &mut super::common::Running<()>, steps: Vec<Step>) {
    let world = super::common::world();
    let node = &mut running.node;
    let public = world.me_wireguard;
    let mut out = super::common::Sink::default();
    let mut buf = Vec::new();
    let peer = |n: u8| &world.peers[usize::from(n) % super::common::PEERS].0;
    for step in steps.into_iter().take(256) {
        let now = super::common::now(running.start, world, running.ms);
        match step {
            Step::Raw { from, bytes } => {
                node.handle_datagram(super::common::source(from), &bytes, now, &mut out);
            }
            Step::ForgedInit {
                from,
                sender,
                filler,
            } => {
                let init = meshd::forge::handshake_init(&public, sender, &filler);
                node.handle_datagram(super::common::source(from), &init, now, &mut out);
            }
            Step::ForgedResponse {
                from,
                receiver,
                filler,
            } => {
                let response = meshd::forge::handshake_response(&public, 1, receiver, &filler);
                node.handle_datagram(super::common::source(from), &response, now, &mut out);
            }
            Step::Hello {
                from,
                peer: p,
                reply,
            } => {
                wire::encode_cert_hello(peer(p).der(), reply, &mut buf);
                node.handle_datagram(super::common::source(from), &buf, now, &mut out);
            }
            Step::ForeignHello { from, reply } => {
                wire::encode_cert_hello(world.foreign.der(), reply, &mut buf);
                node.handle_datagram(super::common::source(from), &buf, now, &mut out);
            }
            Step::Punch {
                from,
                peer: p,
                reply,
            } => {
                wire::encode_punch(peer(p).mesh_ip(), reply, &mut buf);
                node.handle_datagram(super::common::source(from), &buf, now, &mut out);
            }
            Step::Relayed { peer: p, bytes } => {
                node.handle_relayed(
                    meshd::node::LighthouseId(0),
                    peer(p).mesh_ip(),
                    &bytes,
                    now,
                    &mut out,
                );
            }
            Step::Tun { bytes } => node.handle_tun_packet(&bytes, now, &mut out),
            Step::Advance { ms: by } => {
                running.ms += u64::from(by);
                let now = super::common::now(running.start, world, running.ms);
                node.handle_timers(now, &mut out);
            }
        }
        super::common::assert_bounded(node);
    }
}
