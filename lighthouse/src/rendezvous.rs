//! The lighthouse's sans-IO core: who is registered where, introductions between nodes, the
//! relay's routing decisions and revocation. Connections, certificates, messages and the time
//! go in; messages to send and connections to close come out. The quinn shell in
//! [`crate::shell`] owns the sockets, the clock and the randomness.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rma_ca::{NodeCert, RevocationList};
use rma_daemon::token_bucket::{Limit, TokenBucket};
use time::OffsetDateTime;

use rma_proto::lighthouse::{FromLighthouse, MAX_LOCAL_ENDPOINTS, Target, ToLighthouse};
use rma_proto::wire::TOKEN_LEN;

/// One QUIC connection, numbered by the shell.
pub type ConnId = u64;

/// Queries a node may make: a burst, then a steady rate per second.
const QUERY_BURST: f64 = 64.0;
const QUERY_RATE: f64 = 32.0;
const QUERY_LIMIT: Limit = Limit {
    rate: QUERY_RATE,
    burst: QUERY_BURST,
};

/// What the shell must do after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Send(ConnId, FromLighthouse),
    Close(ConnId, CloseReason),
    /// A datagram to send from the reflector's socket: an ack to a parked ping, or a wake.
    Datagram(SocketAddr, Vec<u8>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The same node connected again; the older connection goes.
    Replaced,
    Revoked,
    CertificateExpired,
    /// The node broke the protocol (for example, a query before registering).
    Protocol(&'static str),
}

impl CloseReason {
    /// The QUIC application error code the connection is closed with.
    pub fn code(&self) -> u32 {
        match self {
            Self::Replaced => 1,
            Self::Revoked => 2,
            Self::CertificateExpired => 3,
            Self::Protocol(_) => 4,
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Replaced => f.write_str("replaced by a newer connection"),
            Self::Revoked => f.write_str("certificate revoked"),
            Self::CertificateExpired => f.write_str("certificate expired"),
            Self::Protocol(what) => write!(f, "protocol violation: {what}"),
        }
    }
}

/// Why a relayed packet was not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayDrop {
    #[error("the sender has not registered")]
    UnregisteredSender,
    #[error("no node with that mesh IP is connected")]
    UnknownDestination,
    #[error("a node may not relay to itself")]
    ToSelf,
    #[error("the sender is over its relay budget")]
    OverBudget,
    #[error("the destination is parked; it has been woken")]
    Parked,
}

/// Running totals for the metrics endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub queries: u64,
    pub queries_not_found: u64,
    pub queries_rate_limited: u64,
    pub punches: u64,
    pub reflections: u64,
    pub reflections_unknown: u64,
    pub closed_revoked: u64,
    pub closed_replaced: u64,
    /// Certificates replaced by their renewal on a live connection.
    pub renewals: u64,
    pub parks: u64,
    /// Parked registrations whose node connected again.
    pub unparked: u64,
    /// Parked registrations dropped because their pings stopped.
    pub parked_expired: u64,
    pub parked_pings: u64,
    /// Pings refused: an unknown token, a registration that is not parked, a tag that does not
    /// verify or a counter that does not grow.
    pub parked_pings_refused: u64,
    pub wakes: u64,
}

#[derive(Debug)]
struct Node {
    cert: NodeCert,
    quic_addr: SocketAddr,
    token: [u8; TOKEN_LEN],
    /// `None` until the node has sent `Register`.
    local: Option<Vec<SocketAddr>>,
    /// The public address of its WireGuard socket, from the reflector.
    observed: Option<SocketAddr>,
    queries: TokenBucket,
    /// Set while the node's connection is parked.
    parked: Option<Box<parking::Parked>>,
    /// The connection has parked once: its park key, the same each time, is used up.
    has_parked: bool,
    /// The nodes that asked for it while it was parked: introduced once it is back.
    waiting: Vec<ConnId>,
}

impl Node {
    /// Where peers should try to reach this node, best first, for a peer whose WireGuard
    /// socket appears at `asker`. Behind the same NAT the local addresses come first.
    fn endpoints(&self, asker: Option<SocketAddr>) -> Vec<SocketAddr> {
        let local = self.local.as_deref().unwrap_or_default();
        let same_nat = matches!((asker, self.observed), (Some(a), Some(o)) if a.ip() == o.ip());
        let mut endpoints = Vec::with_capacity(local.len() + 1);
        if !same_nat {
            endpoints.extend(self.observed);
        }
        endpoints.extend(local.iter().copied());
        if same_nat {
            endpoints.extend(self.observed);
        }
        let mut seen = Vec::with_capacity(endpoints.len());
        endpoints.retain(|e| {
            let fresh = !seen.contains(e);
            seen.push(*e);
            fresh
        });
        endpoints
    }
}

/// How many nodes are in each state ([`Rendezvous::census`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Nodes with a connection, registered or not.
    pub connected: usize,
    /// Nodes registered, connected or parked.
    pub registered: usize,
    /// Registered nodes whose WireGuard address the reflector has seen.
    pub reflected: usize,
    /// Registrations kept by parked pings, without a connection.
    pub parked: usize,
}

/// A snapshot of one registration, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub mesh_ip: Ipv4Addr,
    pub quic_addr: SocketAddr,
    pub wireguard: Option<SocketAddr>,
    pub local: Vec<SocketAddr>,
    /// Its connection is parked: it keeps the registration with parked pings.
    pub parked: bool,
}

/// The key a node's name is found under: its lowercase form.
fn name_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

#[derive(Debug)]
pub struct Rendezvous {
    reflector_port: u16,
    /// The revocation lists in use: the root's and issuing CAs', one per CA.
    lists: Vec<RevocationList>,
    nodes: HashMap<ConnId, Node>,
    by_ip: HashMap<Ipv4Addr, ConnId>,
    /// By name in lowercase: names are DNS names, and mesh DNS asks in any case.
    by_name: HashMap<String, ConnId>,
    tokens: HashMap<[u8; TOKEN_LEN], ConnId>,
    /// Every node's certificate expiry, soonest first: the shell asks for the soonest after
    /// each event, so it must not cost a pass over every node.
    expiries: BTreeSet<(OffsetDateTime, ConnId)>,
    /// Moves on whenever a relay route may have changed; the shell's relays read it without
    /// the lock ([`crate::relay`]).
    epoch: Arc<AtomicU64>,
    counters: Counters,
    /// [`parking::lists_digest`] of `lists`, which parked nodes' acks carry.
    lists_digest: u64,
}

impl Rendezvous {
    pub fn new(reflector_port: u16, lists: Vec<RevocationList>) -> Self {
        Self {
            reflector_port,
            lists_digest: parking::lists_digest(&lists),
            lists,
            nodes: HashMap::new(),
            by_ip: HashMap::new(),
            by_name: HashMap::new(),
            tokens: HashMap::new(),
            expiries: BTreeSet::new(),
            counters: Counters::default(),
            epoch: Arc::default(),
        }
    }

    /// The reflect token issued on `conn`, which also keys its park.
    pub fn token(&self, conn: ConnId) -> Option<[u8; TOKEN_LEN]> {
        self.nodes.get(&conn).map(|n| n.token)
    }

    /// The registrations' epoch, which moves on whenever a relay route may have changed: a
    /// relay's cached routes are good while it stands.
    pub fn epoch(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.epoch)
    }

    fn routes_changed(&self) {
        self.epoch.fetch_add(1, Ordering::Release);
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Nodes connected, registered or not (parked ones not counted).
    pub fn connected(&self) -> usize {
        self.census().connected
    }

    /// How many nodes are in each state, counted in one pass without copying anything: a
    /// metrics scrape takes it under the lock every registration also needs.
    pub fn census(&self) -> Census {
        let mut census = Census::default();
        for node in self.nodes.values() {
            if node.parked.is_some() {
                census.parked += 1;
            } else {
                census.connected += 1;
            }
            if node.local.is_some() {
                census.registered += 1;
                census.reflected += usize::from(node.observed.is_some());
            }
        }
        census
    }

    /// Registered nodes, sorted by mesh IP.
    pub fn registrations(&self) -> Vec<Registration> {
        let mut all: Vec<_> = self
            .nodes
            .values()
            .filter_map(|n| {
                Some(Registration {
                    name: n.cert.name().to_string(),
                    mesh_ip: n.cert.mesh_ip(),
                    quic_addr: n.quic_addr,
                    wireguard: n.observed,
                    local: n.local.clone()?,
                    parked: n.parked.is_some(),
                })
            })
            .collect();
        all.sort_by_key(|r| r.mesh_ip);
        all
    }

    /// A connection completed mutual TLS with `cert`, which the TLS layer has verified.
    /// `token` is fresh randomness from the shell.
    pub fn connect(
        &mut self,
        conn: ConnId,
        cert: NodeCert,
        quic_addr: SocketAddr,
        token: [u8; TOKEN_LEN],
        now: Instant,
    ) -> Vec<Effect> {
        // The TLS verifier checked the certificate against the lists of that moment; one
        // loaded between the handshake and now may revoke it.
        if self.lists.iter().any(|l| l.revokes(&cert).is_some()) {
            self.counters.closed_revoked += 1;
            return vec![Effect::Close(conn, CloseReason::Revoked)];
        }
        let mut effects = Vec::new();
        let older = [
            self.by_ip.get(&cert.mesh_ip()).copied(),
            self.by_name.get(&name_key(cert.name().as_str())).copied(),
        ];
        let mut waiting = Vec::new();
        let mut observed = None;
        for old in older.into_iter().flatten() {
            if old == conn {
                continue;
            }
            match self.remove(old) {
                // A parked node back (the same certificate identity, not just the same name or
                // address): what came for it while it was away goes to the new connection
                // once it registers.
                Some(node) if node.parked.is_some() && node.cert.same_identity(&cert) => {
                    self.counters.unparked += 1;
                    waiting.extend(node.waiting);
                    // Its pings kept this address current: peers introduced before its first
                    // reflect on the new connection lands get its public endpoint.
                    observed = node.observed;
                }
                Some(_) => {
                    self.counters.closed_replaced += 1;
                    effects.push(Effect::Close(old, CloseReason::Replaced));
                }
                None => {}
            }
        }
        self.by_ip.insert(cert.mesh_ip(), conn);
        self.by_name.insert(name_key(cert.name().as_str()), conn);
        self.tokens.insert(token, conn);
        self.expiries.insert((cert.not_after(), conn));
        self.nodes.insert(
            conn,
            Node {
                cert,
                quic_addr,
                token,
                local: None,
                observed,
                queries: TokenBucket::new(QUERY_LIMIT, now),
                parked: None,
                has_parked: false,
                waiting,
            },
        );
        self.routes_changed();
        effects
    }

    /// The node on `conn` renewed its certificate; `cert` has been verified. It replaces the
    /// connection's if it keeps the name, mesh IP and both keys (the connection proved the
    /// identity key in its handshake) and expires later; another identity ends the connection.
    pub fn renewed(&mut self, conn: ConnId, cert: NodeCert) -> Vec<Effect> {
        let Some(node) = self.nodes.get_mut(&conn) else {
            return Vec::new();
        };
        if !node.cert.same_identity(&cert) {
            return vec![Effect::Close(
                conn,
                CloseReason::Protocol("a renewal must keep the name, mesh IP and keys"),
            )];
        }
        if cert.not_after() > node.cert.not_after() {
            self.expiries.remove(&(node.cert.not_after(), conn));
            self.expiries.insert((cert.not_after(), conn));
            node.cert = cert;
            self.counters.renewals += 1;
        }
        Vec::new()
    }

    /// The connection ended; its registration goes with it unless it is parked.
    pub fn disconnect(&mut self, conn: ConnId) {
        if self.nodes.get(&conn).is_some_and(|n| n.parked.is_none()) {
            self.remove(conn);
        }
    }

    fn remove(&mut self, conn: ConnId) -> Option<Node> {
        let node = self.nodes.remove(&conn)?;
        self.expiries.remove(&(node.cert.not_after(), conn));
        if self.by_ip.get(&node.cert.mesh_ip()) == Some(&conn) {
            self.by_ip.remove(&node.cert.mesh_ip());
        }
        let name = name_key(node.cert.name().as_str());
        if self.by_name.get(&name) == Some(&conn) {
            self.by_name.remove(&name);
        }
        self.tokens.remove(&node.token);
        self.routes_changed();
        Some(node)
    }

    /// A control message from a connected node.
    pub fn message(&mut self, conn: ConnId, message: ToLighthouse, now: Instant) -> Vec<Effect> {
        if !self.nodes.contains_key(&conn) {
            // Its registration is gone (a park that expired, say): the connection has nothing
            // left to speak for.
            return vec![Effect::Close(
                conn,
                CloseReason::Protocol("no registration on this connection"),
            )];
        }
        let mut effects = if message == ToLighthouse::Park {
            Vec::new()
        } else {
            self.back_on_connection(conn, now)
        };
        effects.extend(self.answer(conn, message, now));
        effects
    }

    /// A parked node spoke on its connection after all (its park crossed something it sent):
    /// it is connected again, and the nodes that asked for it meanwhile are introduced.
    pub fn back_on_connection(&mut self, conn: ConnId, now: Instant) -> Vec<Effect> {
        let Some(node) = self.nodes.get_mut(&conn) else {
            return Vec::new();
        };
        if node.parked.take().is_none() {
            return Vec::new();
        }
        self.routes_changed();
        self.introduce_waiting(conn, now)
    }

    /// Introduces the nodes waiting for `conn`'s node, the punch reaching it before each
    /// asker's packets, as on any introduction.
    fn introduce_waiting(&mut self, conn: ConnId, now: Instant) -> Vec<Effect> {
        let Some(node) = self.nodes.get_mut(&conn) else {
            return Vec::new();
        };
        let ip = node.cert.mesh_ip();
        let mut effects = Vec::new();
        for asker in std::mem::take(&mut node.waiting) {
            if self.nodes.get(&asker).is_some_and(|n| n.parked.is_none()) {
                effects.extend(self.introduce(asker, Target::MeshIp(ip), now));
            }
        }
        effects
    }

    fn answer(&mut self, conn: ConnId, message: ToLighthouse, now: Instant) -> Vec<Effect> {
        let Some(node) = self.nodes.get_mut(&conn) else {
            return Vec::new();
        };
        match message {
            ToLighthouse::Park if node.local.is_none() => {
                vec![Effect::Close(
                    conn,
                    CloseReason::Protocol("park before register"),
                )]
            }
            // The shell derives the key from the connection and calls `park`; a park that
            // reaches here came on a connection it could not derive one from.
            ToLighthouse::Park => vec![Effect::Close(
                conn,
                CloseReason::Protocol("park without a key"),
            )],
            ToLighthouse::Register { local } => {
                let first = node.local.is_none();
                node.local = Some(usable_endpoints(local));
                if !first {
                    return Vec::new();
                }
                // It may relay from now on.
                self.routes_changed();
                let node = self.nodes.get(&conn).expect("found above");
                let mut effects = vec![Effect::Send(
                    conn,
                    FromLighthouse::Welcome {
                        token: node.token,
                        reflector_port: self.reflector_port,
                        quic_observed: node.quic_addr,
                    },
                )];
                for crl in &self.lists {
                    effects.push(Effect::Send(
                        conn,
                        FromLighthouse::Crl {
                            der: crl.published_der(),
                        },
                    ));
                }
                // Back from a park: the nodes that asked for it meanwhile are introduced now.
                effects.extend(self.introduce_waiting(conn, now));
                effects
            }
            ToLighthouse::Query { .. } if node.local.is_none() => {
                vec![Effect::Close(
                    conn,
                    CloseReason::Protocol("query before register"),
                )]
            }
            ToLighthouse::Renewed { .. } => {
                // The shell verifies the certificate and calls `renewed`; one that reaches here
                // did not verify.
                vec![Effect::Close(
                    conn,
                    CloseReason::Protocol("a renewed certificate that does not verify"),
                )]
            }
            ToLighthouse::Query { target } => {
                if node.queries.take(QUERY_LIMIT, now).is_err() {
                    self.counters.queries_rate_limited += 1;
                    return Vec::new();
                }
                self.counters.queries += 1;
                self.introduce(conn, target, now)
            }
        }
    }

    /// Answers `asker`'s query and, at the same moment, tells the target to punch back.
    fn introduce(&mut self, asker: ConnId, target: Target, now: Instant) -> Vec<Effect> {
        let found = match &target {
            Target::MeshIp(ip) => self.by_ip.get(ip),
            Target::Name(name) => self.by_name.get(&name_key(name)),
        }
        .copied()
        .filter(|t| *t != asker)
        .and_then(|t| Some((t, self.nodes.get(&t)?)))
        .filter(|(_, n)| n.local.is_some());
        let (Some((target_conn, target_node)), Some(asker_node)) = (found, self.nodes.get(&asker))
        else {
            self.counters.queries_not_found += 1;
            return vec![Effect::Send(asker, FromLighthouse::NotFound { target })];
        };
        // A parked target is woken, and the asker answered once it is back: were the asker
        // told now, its packets would beat the target's punch to the target's NAT.
        if target_node.parked.is_some() {
            return self.hold_for_parked(target_conn, asker, now);
        }
        self.counters.punches += 1;
        let punch = FromLighthouse::Punch {
            cert: asker_node.cert.chain_der(),
            endpoints: asker_node.endpoints(target_node.observed),
        };
        let peer = FromLighthouse::Peer {
            cert: target_node.cert.chain_der(),
            endpoints: target_node.endpoints(asker_node.observed),
        };
        // The punch goes out first, so the target knows the asker before its packets come.
        vec![Effect::Send(target_conn, punch), Effect::Send(asker, peer)]
    }

    /// A reflect message with `token` arrived on the reflector port from `from`.
    pub fn reflect(&mut self, from: SocketAddr, token: &[u8; TOKEN_LEN]) -> Vec<Effect> {
        let Some(&conn) = self.tokens.get(token) else {
            self.counters.reflections_unknown += 1;
            return Vec::new();
        };
        self.counters.reflections += 1;
        let Some(node) = self.nodes.get_mut(&conn) else {
            return Vec::new();
        };
        // A parked node's address moves only with a ping that verifies: its token has been
        // seen in clear, and a replayed reflect must not move it.
        if node.parked.is_some() || node.observed == Some(from) {
            return Vec::new();
        }
        node.observed = Some(from);
        vec![Effect::Send(
            conn,
            FromLighthouse::Observed { wireguard: from },
        )]
    }

    /// Where datagrams that `conn` relays to mesh IP `to` go, and the sender's mesh IP to
    /// stamp on them. The sender's budget is its [`crate::relay::Relay`]'s.
    pub fn route(&self, conn: ConnId, to: Ipv4Addr) -> crate::relay::Route<ConnId> {
        match self.nodes.get(&conn) {
            Some(node) if node.local.is_some() => {
                let from = node.cert.mesh_ip();
                match self.by_ip.get(&to) {
                    _ if to == from => Err(RelayDrop::ToSelf),
                    Some(dest) if self.nodes.get(dest).is_some_and(|n| n.parked.is_some()) => {
                        Err(RelayDrop::Parked)
                    }
                    Some(&dest) => Ok((dest, from)),
                    None => Err(RelayDrop::UnknownDestination),
                }
            }
            _ => Err(RelayDrop::UnregisteredSender),
        }
    }

    /// The root's revocation list in use, if any.
    pub fn crl(&self) -> Option<&RevocationList> {
        self.lists.iter().find(|l| l.issuing_ca().is_none())
    }

    /// Every revocation list in use.
    pub fn lists(&self) -> &[RevocationList] {
        &self.lists
    }

    /// A new revocation list (already checked against the root, and newer than the one of its
    /// CA in use). It replaces that CA's list; the nodes it revokes (or whose issuing CA it
    /// revokes) are cut off; every other node is sent the list.
    pub fn set_crl(&mut self, crl: RevocationList) -> Vec<Effect> {
        let revoked: Vec<ConnId> = self
            .nodes
            .iter()
            .filter(|(_, n)| crl.revokes(&n.cert).is_some())
            .map(|(c, _)| *c)
            .collect();
        let mut effects = Vec::new();
        for conn in revoked {
            // A parked node's connection is normally gone already; closing an id without a
            // connection does nothing, and one that lingers (a park that crossed a message)
            // must not outlive the registration.
            if self.remove(conn).is_some() {
                effects.push(Effect::Close(conn, CloseReason::Revoked));
            }
            self.counters.closed_revoked += 1;
        }
        // Parked nodes see the lists' digest change in their next ack, and come for them.
        let mut registered: Vec<ConnId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.local.is_some() && n.parked.is_none())
            .map(|(c, _)| *c)
            .collect();
        registered.sort_unstable();
        for conn in registered {
            effects.push(Effect::Send(
                conn,
                FromLighthouse::Crl {
                    der: crl.published_der(),
                },
            ));
        }
        self.lists.retain(|l| l.ca_identity() != crl.ca_identity());
        self.lists.push(crl);
        self.lists_digest = parking::lists_digest(&self.lists);
        effects
    }

    /// The earliest moment a connected node's certificate expires.
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        self.expiries.first().map(|(at, _)| *at)
    }

    /// Cuts off nodes whose certificates have expired by `wall`, and forgets the lists of
    /// issuing CAs that have (no node can present a chain through them any more).
    pub fn expire(&mut self, wall: OffsetDateTime) -> Vec<Effect> {
        self.lists
            .retain(|l| l.issuing_ca().is_none_or(|ca| ca.not_after() >= wall));
        self.lists_digest = parking::lists_digest(&self.lists);
        let expired: Vec<ConnId> = self
            .expiries
            .iter()
            .take_while(|(at, _)| *at < wall)
            .map(|(_, c)| *c)
            .collect();
        expired
            .into_iter()
            .filter_map(|conn| {
                self.remove(conn)?;
                Some(Effect::Close(conn, CloseReason::CertificateExpired))
            })
            .collect()
    }
}

/// Drops addresses no peer could use and bounds the list.
fn usable_endpoints(mut local: Vec<SocketAddr>) -> Vec<SocketAddr> {
    local.retain(|a| {
        a.port() != 0
            && match a.ip() {
                IpAddr::V4(ip) => {
                    !(ip.is_unspecified()
                        || ip.is_loopback()
                        || ip.is_multicast()
                        || ip.is_broadcast())
                }
                IpAddr::V6(ip) => !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast()),
            }
    });
    local.truncate(MAX_LOCAL_ENDPOINTS);
    local
}

/// How long to wait before the next expiry check; the shell never sleeps longer than this.
pub const EXPIRY_CHECK: Duration = Duration::from_secs(60);

#[path = "parking.rs"]
mod parking;
pub use parking::PARKED_EXPIRY;

#[cfg(test)]
#[path = "rendezvous_tests.rs"]
mod tests;
