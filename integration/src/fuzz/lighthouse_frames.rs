//! The `lighthouse_frames` fuzz target's body.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;

use ::lighthouse::relay::{self, Relay, RelayCounters};
use ::lighthouse::rendezvous::{RelayDrop, Rendezvous};
use arbitrary::{Arbitrary, Unstructured};
use rma_proto::lighthouse::{self, FromLighthouse, ToLighthouse};

#[derive(Debug, Arbitrary)]
enum Step {
    ToLighthouse { conn: u8, frame: Vec<u8> },
    Relay { conn: u8, to: [u8; 4], len: u16 },
    Reflect { from: u8, token: [u8; 16] },
    Connect { conn: u8, peer: u8, token: [u8; 16] },
    Disconnect { conn: u8 },
    FromLighthouse { frame: Vec<u8> },
    Advance { ms: u16 },
}

const CONNS: u8 = 6;

/// The lighthouse protocol's frames, both ways: what nodes send into the rendezvous core
/// (with relays, reflections, connections and disconnections between them), and what a
/// lighthouse sends into meshd's core. No panic, and the tables stay bounded.
pub fn lighthouse_frames(data: &[u8]) {
    let Ok(steps) = Vec::<Step>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    thread_local! {
        static RUNNING: RefCell<Option<super::common::Running<Lighthouse>>> =
            const { RefCell::new(None) };
    }
    let core = || Lighthouse {
        core: Rendezvous::new(4244, Vec::new()),
        relays: HashMap::new(),
        counters: RelayCounters::default(),
    };
    super::common::with_running(&RUNNING, core, |running| run(running, steps));
}

/// The core and each connection's relay, as the shell keeps them.
struct Lighthouse {
    core: Rendezvous,
    relays: HashMap<u64, Relay<u64>>,
    counters: RelayCounters,
}

fn run(running: &mut super::common::Running<Lighthouse>, steps: Vec<Step>) {
    let world = super::common::world();
    let (node, lighthouse) = (&mut running.node, &mut running.extra);
    let Lighthouse {
        core,
        relays,
        counters,
    } = lighthouse;
    let mut out = super::common::Sink::default();
    for step in steps.into_iter().take(256) {
        let now = super::common::now(running.start, world, running.ms);
        match step {
            Step::ToLighthouse { conn, frame } => {
                if let Ok(message) = lighthouse::decode::<ToLighthouse>(&frame) {
                    let _ = core.message(u64::from(conn % CONNS), message, now.instant);
                }
            }
            Step::Relay { conn, to, len } => {
                let conn = u64::from(conn % CONNS);
                let to = Ipv4Addr::from(to);
                let epoch = core.epoch().load(Ordering::Acquire);
                let relay = relays
                    .entry(conn)
                    .or_insert_with(|| Relay::new(relay::DEFAULT_LIMIT, now.instant));
                let verdict = relay.forward(
                    to,
                    usize::from(len),
                    now.instant,
                    epoch,
                    || core.route(conn, to),
                    counters,
                );
                let fresh = core.route(conn, to);
                match verdict {
                    Err(RelayDrop::OverBudget) => {}
                    verdict => assert_eq!(verdict.map(|(dest, from)| (*dest, from)), fresh),
                }
                // Over budget or not, the route the relay keeps is the one the core gives now.
                let held = relay.held(to, epoch).expect("a route held for this epoch");
                assert_eq!(held.map(|(dest, from)| (*dest, from)), fresh);
                assert!(relay.routes() <= relay::MAX_ROUTES);
            }
            Step::Reflect { from, token } => {
                let _ = core.reflect(SocketAddr::from(([203, 0, 113, from], 4242)), &token);
            }
            Step::Connect { conn, peer, token } => {
                let cert = world.peers[usize::from(peer) % super::common::PEERS]
                    .0
                    .clone();
                let quic = SocketAddr::from(([203, 0, 113, peer], 5000));
                // A new connection is a new session, with a relay of its own.
                relays.remove(&u64::from(conn % CONNS));
                let _ = core.connect(u64::from(conn % CONNS), cert, quic, token, now.instant);
            }
            Step::Disconnect { conn } => {
                relays.remove(&u64::from(conn % CONNS));
                core.disconnect(u64::from(conn % CONNS));
            }
            Step::FromLighthouse { frame } => {
                if let Ok(message) = lighthouse::decode::<FromLighthouse>(&frame) {
                    node.handle_lighthouse(meshd::node::LighthouseId(0), message, now, &mut out);
                }
            }
            Step::Advance { ms: by } => {
                running.ms += u64::from(by);
                let now = super::common::now(running.start, world, running.ms);
                node.handle_timers(now, &mut out);
                let _ = core.expire(now.wall);
            }
        }
        assert!(core.connected() <= usize::from(CONNS));
        assert!(core.registrations().len() <= super::common::PEERS);
        super::common::assert_bounded(node);
    }
}
