//! What the stateful fuzz targets share: a CA with a few certified nodes, made once per
//! process, a meshd node built from them, and an output that keeps nothing.

use std::cell::RefCell;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::LazyLock;
use std::time::Instant;

use meshd::firewall::{PeerMatch, Policy, Ports, Proto, Rule};
use meshd::node::{Identity, LighthouseId, Node, Now, Output, Settings};
use rma_ca::test_ca::TestCa;
use rma_ca::{NodeCert, NodeKeys};

/// How many certified peers the world has (besides the node under test).
pub(super) const PEERS: usize = 4;

pub(super) struct World {
    pub(super) pki: TestCa,
    /// The node under test (mesh IP 10.42.0.1) and its peers (10.42.0.2 and on).
    pub(super) me: (NodeCert, NodeKeys),
    pub(super) peers: Vec<(NodeCert, NodeKeys)>,
    /// The node under test's WireGuard public key (derived once: it costs a scalar
    /// multiplication).
    pub(super) me_wireguard: [u8; 32],
    /// A certificate from another CA, for the same network.
    pub(super) foreign: NodeCert,
    /// The CA's trust store, as routerd holds one.
    pub(super) trust: std::sync::Arc<rma_daemon::trust::SharedTrust>,
}

pub(super) fn world() -> &'static World {
    static WORLD: LazyLock<World> = LazyLock::new(|| {
        let pki = TestCa::new("fuzz-ca");
        let me = pki.node("me", Ipv4Addr::new(10, 42, 0, 1));
        let peers = (0..PEERS as u8)
            .map(|i| pki.node(&format!("peer-{i}"), Ipv4Addr::new(10, 42, 0, 2 + i)))
            .collect();
        let foreign = TestCa::new("other-ca")
            .node("stranger", Ipv4Addr::new(10, 42, 0, 200))
            .0;
        World {
            trust: rma_daemon::trust::SharedTrust::new(pki.ca.clone(), Vec::new()),
            pki,
            me_wireguard: me.1.public().wireguard.0,
            me,
            peers,
            foreign,
        }
    });
    &WORLD
}

/// A node with every traffic allowed, one lighthouse (connected), and the peers' first one as
/// a static peer.
pub(super) fn node(world: &World) -> Node {
    let any = Rule {
        proto: Proto::Any,
        ports: Ports::Any,
        peer: PeerMatch::Any,
    };
    const LIGHTHOUSE: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 4243);
    let settings = Settings {
        keepalive: Some(25),
        static_peers: vec![meshd::config::StaticPeer {
            mesh_ip: world.peers[0].0.mesh_ip(),
            endpoints: vec![source(0)],
        }],
        firewall: Policy {
            inbound: vec![any.clone()],
            outbound: vec![any],
            ..Policy::default()
        },
        lighthouses: vec![meshd::config::Lighthouse {
            name: "lighthouse-1".into(),
            address: meshd::lighthouse_address::LighthouseAddress::Ip(LIGHTHOUSE),
            park_after: None,
            tcp: None,
            proxy: None,
        }],
    };
    let identity = Identity {
        cert: world.me.0.clone(),
        keys: world.me.1.clone(),
        ca: world.pki.ca.clone(),
        crls: Vec::new(),
    };
    let mut node = Node::new(identity, &settings);
    node.lighthouse_up(
        LighthouseId(0),
        Some(LIGHTHOUSE),
        meshd::node::Transport::Quic,
        Instant::now(),
    );
    node
}

/// A node that lives from one input to the next, as a daemon lives from one datagram to the
/// next: what an input leaves behind is what the next one finds, and the bounds must hold over
/// millions of inputs. (A crash is then sometimes the work of several inputs; its reproducer
/// starts from a fresh node.) Its certificates verify once, so an input costs what its new
/// work costs. It starts again after a simulated day, before the certificates expire.
pub(super) struct Running<T> {
    pub(super) node: Node,
    /// What else the target keeps (the lighthouse's core, for one).
    pub(super) extra: T,
    pub(super) start: Instant,
    pub(super) ms: u64,
}

const DAY_MS: u64 = 86_400_000;

/// Runs `f` on this thread's running node, made (with `extra`) when there is none or its day
/// is over.
pub(super) fn with_running<T: 'static, R>(
    slot: &'static std::thread::LocalKey<RefCell<Option<Running<T>>>>,
    extra: impl FnOnce() -> T,
    f: impl FnOnce(&mut Running<T>) -> R,
) -> R {
    slot.with(|cell| {
        let mut running = cell.borrow_mut();
        if running.as_ref().is_none_or(|r| r.ms > DAY_MS) {
            *running = Some(Running {
                node: node(world()),
                extra: extra(),
                start: Instant::now(),
                ms: 0,
            });
        }
        f(running.as_mut().expect("made just now"))
    })
}

/// One of a few underlay addresses datagrams come from.
pub(super) fn source(n: u8) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, n % 8], 4242 + u16::from(n % 3)))
}

/// The moment `ms` milliseconds after the start, inside every certificate's validity.
pub(super) fn now(start: Instant, world: &World, ms: u64) -> Now {
    let elapsed = std::time::Duration::from_millis(ms);
    Now {
        instant: start + elapsed,
        wall: world.pki.start + elapsed,
    }
}

/// Output that keeps nothing, counting what it was handed.
#[derive(Debug, Default)]
pub(super) struct Sink {
    pub(super) transmitted: usize,
    written: Vec<u8>,
}

impl Output for Sink {
    fn transmit(&mut self, _: SocketAddr, datagram: &[u8]) {
        self.transmitted += datagram.len();
    }
    fn deliver(&mut self, _: &[u8]) {}
    fn relay(&mut self, _: LighthouseId, _: Ipv4Addr, datagram: &[u8]) {
        self.transmitted += datagram.len();
    }
    fn ask(&mut self, _: LighthouseId, _: rma_proto::lighthouse::ToLighthouse) {}
    fn crl_changed(&mut self, _: &rma_ca::RevocationList) {}
    fn park(&mut self, _: LighthouseId) {}
    fn connect(&mut self, _: LighthouseId) {}
    fn datagram_buffer(&mut self, len: usize) -> &mut [u8] {
        self.written.resize(len, 0);
        &mut self.written
    }
    fn transmit_written(&mut self, _: SocketAddr, len: usize) {
        self.transmitted += len;
    }
    fn relay_written(&mut self, _: LighthouseId, _: Ipv4Addr, len: usize) {
        self.transmitted += len;
    }
    fn packet_buffer(&mut self, len: usize) -> &mut [u8] {
        self.written.resize(len, 0);
        &mut self.written
    }
    fn deliver_written(&mut self, _: usize) {}
}

/// Every table of `node` within its stated bound.
pub(super) fn assert_bounded(node: &Node) {
    let t = node.tables();
    assert!(t.peers <= PEERS, "{t:?}");
    assert!(t.pending <= 1024 && t.pending_bytes <= 4 << 20, "{t:?}");
    assert!(
        t.flows <= 1 << 16 && t.held_handshakes <= 256 && t.probes <= 1024,
        "{t:?}"
    );
    assert!(t.hello_sources <= 4096 && t.answer_sources <= 4096, "{t:?}");
    assert!(t.refused_certificates <= 4096, "{t:?}");
}
