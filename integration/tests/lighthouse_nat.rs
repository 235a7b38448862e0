//! The lighthouse end to end: a public lighthouse, home routers that masquerade with nftables
//! (port-preserving cone NAT, or `random` for symmetric NAT), and meshd nodes behind them that
//! have no static peers: they find each other through the lighthouse, punch through their
//! NATs, and fall back to the lighthouse's relay when they cannot.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use integration::internet::{Internet, Nat, Site};
use integration::lab::{Lab, Ns};
use integration::mesh::{self, LighthouseProc, MeshNode, NodeConfig, Pki};
use integration::{traffic, wait};

const MIB: u64 = 1 << 20;

fn mesh_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, 0, n)
}

/// Where a test node sits.
#[derive(Debug, Clone, Copy)]
enum Place {
    Behind(Nat),
    Public,
}

struct World {
    net: Internet,
    pki: Pki,
    lighthouses: Vec<LighthouseProc>,
}

impl World {
    /// The internet with `count` lighthouses on public hosts.
    fn new(count: u8) -> Self {
        let lab = Lab::new().unwrap();
        let pki = Pki::new(lab.dir(), "mesh-ca", "10.42.0.0/16").unwrap();
        let mut world = Self {
            net: Internet::new(lab).unwrap(),
            pki,
            lighthouses: Vec::new(),
        };
        for i in 1..=count {
            world.add_lighthouse(&format!("lighthouse-{i}"), Ipv4Addr::new(10, 42, 255, i));
        }
        world
    }

    fn add_lighthouse(&mut self, name: &str, mesh_ip: Ipv4Addr) {
        let (ns, ip) = self.net.public_host(name).unwrap();
        let issued = self.pki.issue_in(name, mesh_ip, "lighthouses").unwrap();
        let crl = self.net.lab.dir().join("mesh.crl");
        self.pki.write_crl(&crl, 1, &[]).unwrap();
        let config = mesh::write_lighthouse_config(
            &self.net.lab,
            &self.pki.ca_path,
            &issued,
            Some(&crl),
            ip,
        )
        .unwrap();
        let lighthouse = mesh::start_lighthouse(&mut self.net.lab, &ns, name, &config, ip).unwrap();
        self.lighthouses.push(lighthouse);
    }

    /// Starts meshd `name` with mesh IP 10.42.0.n in `ns`, knowing only the lighthouses.
    fn node_in(&mut self, ns: &Ns, name: &str, n: u8) -> MeshNode {
        let issued = self.pki.issue(name, mesh_ip(n)).unwrap();
        let entries: Vec<(String, SocketAddr)> =
            self.lighthouses.iter().map(LighthouseProc::entry).collect();
        let config = NodeConfig {
            name,
            ca: &self.pki.ca_path,
            issued: &issued,
            crl: None,
            static_peers: &[],
            firewall: None,
            metrics: None,
            lighthouses: &entries,
        };
        let node = mesh::start(&mut self.net.lab, ns, &config).unwrap();
        node.wait_registered(Duration::from_secs(10)).unwrap();
        node
    }

    /// A node placed as asked: behind a new site of its own, or on a public address.
    fn node(&mut self, name: &str, n: u8, place: Place) -> MeshNode {
        let ns = match place {
            Place::Public => self.net.public_host(name).unwrap().0,
            Place::Behind(nat) => {
                let mut site = self.net.site(&format!("{name}-router"), nat).unwrap();
                self.net.host_behind(&mut site, name).unwrap().0
            }
        };
        self.node_in(&ns, name, n)
    }

    /// Pings `to` once from `from` and returns the round-trip time the first packet took:
    /// lighthouse query, punching and handshake included.
    fn first_ping(&self, from: &MeshNode, to: &MeshNode) -> Duration {
        let out = self
            .net
            .lab
            .exec(
                &from.ns,
                "ping",
                &["-c", "1", "-W", "10", &to.mesh_ip.to_string()],
            )
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let ms: f64 = text
            .split("time=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no time= in {text}"));
        Duration::from_secs_f64(ms / 1e3)
    }

    fn transfer(&mut self, from: &MeshNode, to: &MeshNode, bytes: u64) -> f64 {
        traffic::transfer(&mut self.net.lab, &from.ns, &to.ns, to.mesh_ip, bytes).unwrap()
    }

    /// Waits until `node` reaches `peer` on `path` (`direct` or `relayed`).
    fn wait_path(&self, node: &MeshNode, peer: &MeshNode, path: &str) -> meshd::status::PeerStatus {
        wait::until(
            &format!("{} to reach {} {path}", node.name, peer.name),
            Duration::from_secs(10),
            || node.peer(peer.mesh_ip).filter(|p| p.path == path),
        )
        .unwrap()
    }
}

/// One case of the NAT matrix: cold start, a checked transfer, and the path both ends use.
fn nat_case(a_place: Place, b_place: Place, expected: &str) {
    let mut world = World::new(1);
    let a = world.node("a", 1, a_place);
    let b = world.node("b", 2, b_place);
    let cold = world.first_ping(&a, &b);
    let rate = world.transfer(&a, &b, 16 * MIB);
    let from_a = world.wait_path(&a, &b, expected);
    let from_b = world.wait_path(&b, &a, expected);
    println!(
        "{a_place:?} x {b_place:?}: first packet answered in {:.1} ms; path {expected} \
         (a sees b at {}, b sees a at {}); 16 MiB in {rate:.0} Mbit/s",
        cold.as_secs_f64() * 1e3,
        from_a.endpoint,
        from_b.endpoint
    );
    if expected == "relayed" {
        assert_eq!(from_a.via.as_deref(), Some("lighthouse-1"));
    }
}

#[test]
fn cone_nat_to_cone_nat_is_direct() {
    nat_case(Place::Behind(Nat::Cone), Place::Behind(Nat::Cone), "direct");
}

#[test]
fn cone_nat_to_public_is_direct() {
    nat_case(Place::Behind(Nat::Cone), Place::Public, "direct");
}

#[test]
fn symmetric_nat_to_cone_nat_is_relayed() {
    nat_case(
        Place::Behind(Nat::Symmetric),
        Place::Behind(Nat::Cone),
        "relayed",
    );
}

#[test]
fn symmetric_nat_to_symmetric_nat_is_relayed() {
    nat_case(
        Place::Behind(Nat::Symmetric),
        Place::Behind(Nat::Symmetric),
        "relayed",
    );
}

#[test]
fn nodes_on_one_lan_behind_one_nat_go_direct_over_the_lan() {
    let mut world = World::new(1);
    let mut site: Site = world.net.site("home", Nat::Cone).unwrap();
    let (a_ns, _) = world.net.host_behind(&mut site, "a").unwrap();
    let (b_ns, b_lan) = world.net.host_behind(&mut site, "b").unwrap();
    let a = world.node_in(&a_ns, "a", 1);
    let b = world.node_in(&b_ns, "b", 2);
    world.first_ping(&a, &b);
    world.transfer(&a, &b, 16 * MIB);
    let peer = world.wait_path(&a, &b, "direct");
    assert_eq!(peer.endpoint, SocketAddr::from((b_lan, 4242)).to_string());
}
