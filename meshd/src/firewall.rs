//! The certificate-driven firewall, on Nebula's model: default deny, allow rules matched on
//! port, protocol and the peer's certificate (name, groups, mesh IP), and connection tracking
//! so replies to an allowed flow pass in either direction. Pure logic, time passed in.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use foldhash::fast::RandomState;

use ipnet::Ipv4Net;
use rma_ca::NodeCert;
use serde::Deserialize;

use crate::ipv4::{Flow, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    fn matches(self, proto: u8) -> bool {
        match self {
            Self::Any => true,
            Self::Tcp => proto == PROTO_TCP,
            Self::Udp => proto == PROTO_UDP,
            Self::Icmp => proto == PROTO_ICMP,
        }
    }
}

/// `any`, one port, or an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    Any,
    Range(u16, u16),
}

/// Whose packets a rule allows, from their certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerMatch {
    Any,
    Host(String),
    Group(String),
    /// Every one of these groups.
    Groups(Vec<String>),
    Cidr(Ipv4Net),
}

impl PeerMatch {
    fn matches(&self, cert: &NodeCert) -> bool {
        match self {
            Self::Any => true,
            Self::Host(name) => cert.name().as_str() == name,
            Self::Group(group) => cert.in_group(group),
            Self::Groups(groups) => groups.iter().all(|g| cert.in_group(g)),
            Self::Cidr(net) => net.contains(&cert.mesh_ip()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub proto: Proto,
    pub ports: Ports,
    pub peer: PeerMatch,
}

impl Rule {
    /// Ports are the destination's: the local port for inbound packets, the remote port for
    /// outbound ones. A portless packet (ICMP, a later fragment) matches only `any`.
    fn matches(&self, flow: &Flow, cert: &NodeCert) -> bool {
        let ports = match self.ports {
            Ports::Any => true,
            Ports::Range(lo, hi) => {
                matches!(flow.proto, PROTO_TCP | PROTO_UDP)
                    && flow.dst_port != 0
                    && (lo..=hi).contains(&flow.dst_port)
            }
        };
        ports && self.proto.matches(flow.proto) && self.peer.matches(cert)
    }
}

/// What happens to a packet no rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Drop,
    /// Answer with a TCP reset or an ICMP unreachable, so the sender fails fast.
    Reject,
}

/// How long an idle tracked flow is remembered (Nebula's defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp: Duration,
    pub udp: Duration,
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            tcp: Duration::from_secs(12 * 60),
            udp: Duration::from_secs(3 * 60),
            other: Duration::from_secs(10 * 60),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Policy {
    pub inbound: Vec<Rule>,
    pub outbound: Vec<Rule>,
    pub inbound_action: Action,
    pub outbound_action: Action,
    pub timeouts: Timeouts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From a peer, decrypted, towards the local TUN.
    Inbound,
    /// From the local TUN towards a peer.
    Outbound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny(Action),
}

/// A flow as seen from this node, the same key for both directions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    proto: u8,
    local_port: u16,
    remote: std::net::Ipv4Addr,
    remote_port: u16,
}

/// Tracked flows at most; beyond that, new flows are denied until old ones expire.
const MAX_FLOWS: usize = 1 << 16;
/// Tracked flows per peer at most: one permitted peer sweeping ports fills its share, not the
/// table, and every other peer's new flows still pass.
const MAX_FLOWS_PER_PEER: usize = 1 << 12;
/// While the table is full, idle flows are looked for at most this often: a new flow then costs
/// a lookup, not a scan of the table.
const FULL_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// A tracked flow: when it goes idle, and what let it in, so that new rules can judge it again.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    expires: Instant,
    generation: u64,
    origin: Direction,
    first: Flow,
}

#[derive(Debug)]
pub struct Firewall {
    policy: Policy,
    /// Bumped by every new policy; flows admitted under an older one are judged again.
    generation: u64,
    /// Looked up for every packet: a seeded fast hash rather than SipHash (the keys are
    /// authenticated peers' flows, and each peer's share of the table is bounded).
    flows: HashMap<FlowKey, Tracked, RandomState>,
    /// Tracked flows by peer (mesh IP); only peers with flows have an entry.
    per_peer: HashMap<std::net::Ipv4Addr, usize, RandomState>,
    /// When a full table was last swept for idle flows.
    full_sweep: Option<Instant>,
    /// The flow the last allowed packet belonged to, when, and under which policy: the
    /// segments of one read or one batch of datagrams share a flow and a time, and the
    /// table already says what another check at that time would write.
    last_allowed: Option<(FlowKey, Instant, u64)>,
}

impl Firewall {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            generation: 0,
            flows: HashMap::default(),
            per_peer: HashMap::default(),
            full_sweep: None,
            last_allowed: None,
        }
    }

    fn forget(
        per_peer: &mut HashMap<std::net::Ipv4Addr, usize, RandomState>,
        peer: std::net::Ipv4Addr,
    ) {
        if let Some(n) = per_peer.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                per_peer.remove(&peer);
            }
        }
    }

    /// Replaces the rules. A tracked flow lives on while the new rules would still admit the
    /// packet that started it (as Nebula does), so a rule taken away also ends its flows.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
        self.generation += 1;
        self.last_allowed = None;
    }

    fn rules(&self, direction: Direction) -> (&[Rule], Action) {
        match direction {
            Direction::Inbound => (&self.policy.inbound, self.policy.inbound_action),
            Direction::Outbound => (&self.policy.outbound, self.policy.outbound_action),
        }
    }

    fn timeout(&self, proto: u8) -> Duration {
        match proto {
            PROTO_TCP => self.policy.timeouts.tcp,
            PROTO_UDP => self.policy.timeouts.udp,
            _ => self.policy.timeouts.other,
        }
    }

    /// Judges a packet to or from `peer`, tracking the flows it allows.
    pub fn check(
        &mut self,
        direction: Direction,
        flow: &Flow,
        peer: &NodeCert,
        now: Instant,
    ) -> Verdict {
        let key = match direction {
            Direction::Outbound => FlowKey {
                proto: flow.proto,
                local_port: flow.src_port,
                remote: flow.dst,
                remote_port: flow.dst_port,
            },
            Direction::Inbound => FlowKey {
                proto: flow.proto,
                local_port: flow.dst_port,
                remote: flow.src,
                remote_port: flow.src_port,
            },
        };
        let generation = self.generation;
        if self.last_allowed == Some((key, now, generation)) {
            return Verdict::Allow;
        }
        let verdict = self.judge(direction, key, flow, peer, now);
        if verdict == Verdict::Allow {
            self.last_allowed = Some((key, now, generation));
        }
        verdict
    }

    /// [`Firewall::check`] for a packet that is not the last allowed one's flow and time.
    fn judge(
        &mut self,
        direction: Direction,
        key: FlowKey,
        flow: &Flow,
        peer: &NodeCert,
        now: Instant,
    ) -> Verdict {
        let expires = now + self.timeout(flow.proto);
        let generation = self.generation;
        if let Some(tracked) = self.flows.get_mut(&key)
            && tracked.expires > now
        {
            let rules = match tracked.origin {
                Direction::Inbound => &self.policy.inbound,
                Direction::Outbound => &self.policy.outbound,
            };
            let still_allowed = tracked.generation == generation
                || rules.iter().any(|r| r.matches(&tracked.first, peer));
            if still_allowed {
                tracked.expires = expires;
                tracked.generation = generation;
                return Verdict::Allow;
            }
            if self.flows.remove(&key).is_some() {
                Self::forget(&mut self.per_peer, key.remote);
            }
        }
        let (rules, action) = self.rules(direction);
        if !rules.iter().any(|r| r.matches(flow, peer)) {
            return Verdict::Deny(action);
        }
        if self.flows.len() >= MAX_FLOWS
            && self
                .full_sweep
                .is_none_or(|at| now.saturating_duration_since(at) >= FULL_SWEEP_INTERVAL)
        {
            self.full_sweep = Some(now);
            self.expire(now);
        }
        let peer_flows = self.per_peer.get(&key.remote).copied().unwrap_or(0);
        // An expired entry for this very key is overwritten in place, so it takes no room.
        let replaces = self.flows.contains_key(&key);
        if !replaces && (self.flows.len() >= MAX_FLOWS || peer_flows >= MAX_FLOWS_PER_PEER) {
            return Verdict::Deny(Action::Drop);
        }
        let first = *flow;
        self.flows.insert(
            key,
            Tracked {
                expires,
                generation,
                origin: direction,
                first,
            },
        );
        if !replaces {
            self.per_peer.insert(key.remote, peer_flows + 1);
        }
        Verdict::Allow
    }

    /// Forgets idle flows.
    pub fn expire(&mut self, now: Instant) {
        self.last_allowed = None;
        let per_peer = &mut self.per_peer;
        self.flows.retain(|key, tracked| {
            let live = tracked.expires > now;
            if !live {
                Self::forget(per_peer, key.remote);
            }
            live
        });
    }

    pub fn tracked(&self) -> usize {
        self.flows.len()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::node::tests::{Pki, ip};

    const ME: u8 = 1;

    fn rule(proto: Proto, ports: Ports, peer: PeerMatch) -> Rule {
        Rule { proto, ports, peer }
    }

    fn flow(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> Flow {
        Flow {
            proto,
            src,
            dst,
            src_port,
            dst_port,
        }
    }

    /// Inbound packet from `peer` to this node's `port`.
    fn inbound(proto: u8, peer: &NodeCert, port: u16) -> Flow {
        flow(proto, peer.mesh_ip(), ip(ME), 40000, port)
    }

    #[test]
    fn rules_match_port_protocol_and_certificate() {
        let pki = Pki::new("fw-ca");
        let alice = pki.node_in("alice", ip(10), "admins,workers").0;
        let bob = pki.node_in("bob", ip(20), "workers").0;
        let gpu = pki.node_in("gpu-1", ip(21), "workers,gpu").0;
        let eve = pki.node_in("eve", ip(40), "").0;
        let mut fw = Firewall::new(Policy {
            inbound: vec![
                rule(
                    Proto::Tcp,
                    Ports::Range(22, 22),
                    PeerMatch::Group("admins".into()),
                ),
                rule(
                    Proto::Tcp,
                    Ports::Range(8000, 8100),
                    PeerMatch::Groups(vec!["workers".into(), "gpu".into()]),
                ),
                rule(
                    Proto::Udp,
                    Ports::Any,
                    PeerMatch::Cidr("10.42.0.16/28".parse().unwrap()),
                ),
                rule(Proto::Icmp, Ports::Any, PeerMatch::Host("eve".into())),
            ],
            inbound_action: Action::Reject,
            ..Policy::default()
        });
        let now = Instant::now();
        let (tcp, udp, icmp) = (PROTO_TCP, PROTO_UDP, PROTO_ICMP);
        let deny = Verdict::Deny(Action::Reject);
        let cases = [
            (
                "admin to ssh",
                inbound(tcp, &alice, 22),
                &alice,
                Verdict::Allow,
            ),
            ("worker to ssh", inbound(tcp, &bob, 22), &bob, deny),
            ("no groups to ssh", inbound(tcp, &eve, 22), &eve, deny),
            ("admin, wrong port", inbound(tcp, &alice, 23), &alice, deny),
            (
                "admin, udp to a tcp rule",
                inbound(udp, &alice, 22),
                &alice,
                deny,
            ),
            ("workers without gpu", inbound(tcp, &bob, 8050), &bob, deny),
            (
                "workers and gpu",
                inbound(tcp, &gpu, 8050),
                &gpu,
                Verdict::Allow,
            ),
            (
                "range start",
                inbound(tcp, &gpu, 8000),
                &gpu,
                Verdict::Allow,
            ),
            ("past the range", inbound(tcp, &gpu, 8101), &gpu, deny),
            (
                "udp inside the cidr",
                inbound(udp, &bob, 53),
                &bob,
                Verdict::Allow,
            ),
            (
                "udp outside the cidr",
                inbound(udp, &alice, 53),
                &alice,
                deny,
            ),
            (
                "icmp from the named host",
                inbound(icmp, &eve, 0),
                &eve,
                Verdict::Allow,
            ),
            (
                "icmp from another host",
                inbound(icmp, &alice, 0),
                &alice,
                deny,
            ),
        ];
        for (what, flow, peer, expected) in cases {
            assert_eq!(
                fw.check(Direction::Inbound, &flow, peer, now),
                expected,
                "{what}"
            );
        }
        let outbound = flow(tcp, ip(ME), bob.mesh_ip(), 50000, 80);
        assert_eq!(
            fw.check(Direction::Outbound, &outbound, &bob, now),
            Verdict::Deny(Action::Drop),
            "no outbound rules: default deny"
        );
    }

    #[test]
    fn replies_to_allowed_flows_pass_until_the_flow_goes_idle() {
        let pki = Pki::new("fw-ca");
        let bob = pki.node_in("bob", ip(20), "workers").0;
        let mut fw = Firewall::new(Policy {
            outbound: vec![rule(Proto::Any, Ports::Any, PeerMatch::Any)],
            ..Policy::default()
        });
        let t0 = Instant::now();
        let request = flow(PROTO_UDP, ip(ME), bob.mesh_ip(), 5000, 53);
        let reply = flow(PROTO_UDP, bob.mesh_ip(), ip(ME), 53, 5000);
        let stranger = flow(PROTO_UDP, bob.mesh_ip(), ip(ME), 53, 5001);
        assert_eq!(
            fw.check(Direction::Inbound, &reply, &bob, t0),
            Verdict::Deny(Action::Drop)
        );
        assert_eq!(
            fw.check(Direction::Outbound, &request, &bob, t0),
            Verdict::Allow
        );
        assert_eq!(
            fw.check(Direction::Inbound, &reply, &bob, t0),
            Verdict::Allow
        );
        assert_eq!(
            fw.check(Direction::Inbound, &stranger, &bob, t0),
            Verdict::Deny(Action::Drop)
        );
        // Replies keep the flow alive; three idle minutes end it.
        let t1 = t0 + Duration::from_secs(170);
        assert_eq!(
            fw.check(Direction::Inbound, &reply, &bob, t1),
            Verdict::Allow
        );
        let t2 = t1 + Duration::from_secs(181);
        assert_eq!(
            fw.check(Direction::Inbound, &reply, &bob, t2),
            Verdict::Deny(Action::Drop)
        );
        fw.expire(t2);
        assert_eq!(fw.tracked(), 0);
    }

    #[test]
    fn an_allowed_inbound_flow_lets_its_replies_out() {
        let pki = Pki::new("fw-ca");
        let bob = pki.node_in("bob", ip(20), "workers").0;
        let mut fw = Firewall::new(Policy {
            inbound: vec![rule(
                Proto::Tcp,
                Ports::Range(80, 80),
                PeerMatch::Group("workers".into()),
            )],
            ..Policy::default()
        });
        let now = Instant::now();
        let syn = flow(PROTO_TCP, bob.mesh_ip(), ip(ME), 41000, 80);
        let syn_ack = flow(PROTO_TCP, ip(ME), bob.mesh_ip(), 80, 41000);
        assert_eq!(
            fw.check(Direction::Outbound, &syn_ack, &bob, now),
            Verdict::Deny(Action::Drop)
        );
        assert_eq!(
            fw.check(Direction::Inbound, &syn, &bob, now),
            Verdict::Allow
        );
        assert_eq!(
            fw.check(Direction::Outbound, &syn_ack, &bob, now),
            Verdict::Allow
        );
        // New rules that still admit the flow keep it; rules that no longer do end it.
        let same_rules = fw.policy.clone();
        fw.set_policy(same_rules);
        assert_eq!(
            fw.check(Direction::Outbound, &syn_ack, &bob, now),
            Verdict::Allow
        );
        fw.set_policy(Policy::default());
        assert_eq!(
            fw.check(Direction::Outbound, &syn_ack, &bob, now),
            Verdict::Deny(Action::Drop)
        );
        assert_eq!(fw.tracked(), 0);
        let other = flow(PROTO_TCP, bob.mesh_ip(), ip(ME), 41001, 80);
        assert_eq!(
            fw.check(Direction::Inbound, &other, &bob, now),
            Verdict::Deny(Action::Drop)
        );
    }

    /// The segments of one read share a flow and a time: the first is judged, the rest take
    /// the memo. The memo is never a lease: over an hour of such runs the flow lives exactly as
    /// its packets keep it, and a new policy or an idle flow ends it at the same instant.
    #[test]
    fn a_run_of_one_flows_packets_is_judged_once_and_never_outlives_the_flow() {
        let pki = Pki::new("fw-ca");
        let bob = pki.node_in("bob", ip(20), "workers").0;
        let mut fw = Firewall::new(Policy {
            outbound: vec![rule(Proto::Any, Ports::Any, PeerMatch::Any)],
            ..Policy::default()
        });
        let request = flow(PROTO_UDP, ip(ME), bob.mesh_ip(), 5000, 53);
        let reply = flow(PROTO_UDP, bob.mesh_ip(), ip(ME), 53, 5000);
        let t0 = Instant::now();
        let mut last = t0;
        for minute in 0..60 {
            last = t0 + Duration::from_secs(60 * minute);
            for _ in 0..45 {
                assert_eq!(
                    fw.check(Direction::Outbound, &request, &bob, last),
                    Verdict::Allow
                );
            }
            let key = fw
                .last_allowed
                .map(|(key, at, _)| (key.remote, key.local_port, at));
            assert_eq!(key, Some((bob.mesh_ip(), 5000, last)));
            assert_eq!(
                fw.check(Direction::Inbound, &reply, &bob, last),
                Verdict::Allow
            );
        }
        assert_eq!(fw.tracked(), 1);
        // Idle past the UDP timeout: the reply is a new inbound flow, which no rule allows.
        let idle = last + fw.timeout(PROTO_UDP) + Duration::from_secs(1);
        assert_eq!(
            fw.check(Direction::Inbound, &reply, &bob, idle),
            Verdict::Deny(Action::Drop)
        );
        // A new policy at the very instant of the last allowed packet ends the flow.
        assert_eq!(
            fw.check(Direction::Outbound, &request, &bob, idle),
            Verdict::Allow
        );
        fw.set_policy(Policy::default());
        assert_eq!(
            fw.check(Direction::Outbound, &request, &bob, idle),
            Verdict::Deny(Action::Drop)
        );
        fw.expire(idle + fw.timeout(PROTO_UDP));
        assert_eq!((fw.tracked(), fw.last_allowed), (0, None));
    }

    /// A permitted peer sweeping ports fills its own share of the table, not the table; a full
    /// table refuses new flows without a scan per flow, frees idle ones at most once a second,
    /// and a day of churn leaves it empty.
    #[test]
    fn each_peer_has_a_share_and_a_full_table_recovers() {
        let pki = Pki::new("fw-ca");
        let allow_all = Policy {
            inbound: vec![rule(Proto::Any, Ports::Any, PeerMatch::Any)],
            ..Policy::default()
        };
        let mut fw = Firewall::new(allow_all);
        let t0 = Instant::now();
        let sweeper = pki.node("sweeper", ip(30)).0;
        let other = pki.node("other", ip(31)).0;
        let sweep = |port: u16| flow(PROTO_UDP, sweeper.mesh_ip(), ip(ME), 40000, port);
        let mut allowed = 0;
        for port in 1..=10_000u16 {
            if fw.check(Direction::Inbound, &sweep(port), &sweeper, t0) == Verdict::Allow {
                allowed += 1;
            }
        }
        assert_eq!(allowed, MAX_FLOWS_PER_PEER);
        assert_eq!(
            fw.check(
                Direction::Inbound,
                &inbound(PROTO_TCP, &other, 80),
                &other,
                t0
            ),
            Verdict::Allow,
            "another peer's new flow"
        );
        // Known flows of the sweeper still pass.
        assert_eq!(
            fw.check(Direction::Inbound, &sweep(7), &sweeper, t0),
            Verdict::Allow
        );

        // Sixteen sweepers fill the table. While full, a new flow is refused at once; once the
        // flows have gone idle, the next new flow finds room.
        let mut fw = Firewall::new(Policy {
            inbound: vec![rule(Proto::Any, Ports::Any, PeerMatch::Any)],
            ..Policy::default()
        });
        let sweepers: Vec<NodeCert> = (0..16)
            .map(|i| pki.node(&format!("s{i}"), ip(100 + i)).0)
            .collect();
        for peer in &sweepers {
            for port in 0..MAX_FLOWS_PER_PEER as u16 {
                let f = flow(PROTO_UDP, peer.mesh_ip(), ip(ME), 40000, port);
                assert_eq!(fw.check(Direction::Inbound, &f, peer, t0), Verdict::Allow);
            }
        }
        assert_eq!(fw.tracked(), MAX_FLOWS);
        let late = inbound(PROTO_TCP, &other, 80);
        assert_eq!(
            fw.check(Direction::Inbound, &late, &other, t0),
            Verdict::Deny(Action::Drop)
        );
        let idle = t0 + fw.timeout(PROTO_UDP) + Duration::from_secs(1);
        assert_eq!(
            fw.check(Direction::Inbound, &late, &other, idle),
            Verdict::Allow
        );
        assert_eq!(fw.tracked(), 1);
        assert_eq!(fw.per_peer.len(), 1);

        // A day of flows from ever-new peers, with the node's sweep every 10 s.
        let mut most = 0;
        for step in 0..8_640u32 {
            let now = t0 + Duration::from_secs(u64::from(step) * 10);
            let peer = pki_free_peer(step);
            for port in 0..20 {
                let f = flow(PROTO_UDP, peer, ip(ME), 40000, port);
                fw.check(Direction::Inbound, &f, &other, now);
            }
            fw.expire(now);
            most = most.max(fw.tracked());
        }
        // The flows of the steps within one UDP timeout, no more.
        let bound = 20 * (fw.timeout(PROTO_UDP).as_secs() as usize / 10 + 1);
        assert!(most <= bound, "{most} > {bound}");
        fw.expire(t0 + Duration::from_secs(86_400 * 2));
        assert_eq!((fw.tracked(), fw.per_peer.len()), (0, 0));
    }

    /// A mesh IP for step `n` of a long run (the certificate does not matter to tracking).
    fn pki_free_peer(n: u32) -> Ipv4Addr {
        Ipv4Addr::from(0x0a2a_0000 | (n & 0xffff))
    }
}
