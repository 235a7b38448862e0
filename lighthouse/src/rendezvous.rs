//! The lighthouse's sans-IO core: who is registered where, introductions between nodes, the
//! relay's routing decisions and revocation. Connections, certificates, messages and the time
//! go in; messages to send and connections to close come out. The quinn shell in
//! [`crate::shell`] owns the sockets, the clock and the randomness.

use std::collections::HashMap;
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

/// A snapshot of one registration, for status and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub name: String,
    pub mesh_ip: Ipv4Addr,
    pub quic_addr: SocketAddr,
    pub wireguard: Option<SocketAddr>,
    pub local: Vec<SocketAddr>,
}

#[derive(Debug)]
pub struct Rendezvous {
    reflector_port: u16,
    /// The revocation lists in use: the root's and issuing CAs', one per CA.
    lists: Vec<RevocationList>,
    nodes: HashMap<ConnId, Node>,
    by_ip: HashMap<Ipv4Addr, ConnId>,
    by_name: HashMap<String, ConnId>,
    tokens: HashMap<[u8; TOKEN_LEN], ConnId>,
    /// Moves on whenever a relay route may have changed; the shell's relays read it without
    /// the lock ([`crate::relay`]).
    epoch: Arc<AtomicU64>,
    counters: Counters,
}

impl Rendezvous {
    pub fn new(reflector_port: u16, lists: Vec<RevocationList>) -> Self {
        Self {
            reflector_port,
            lists,
            nodes: HashMap::new(),
            by_ip: HashMap::new(),
            by_name: HashMap::new(),
            tokens: HashMap::new(),
            counters: Counters::default(),
            epoch: Arc::default(),
        }
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

    /// Nodes connected, registered or not.
    pub fn connected(&self) -> usize {
        self.nodes.len()
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
        let mut effects = Vec::new();
        let older = [
            self.by_ip.get(&cert.mesh_ip()).copied(),
            self.by_name.get(cert.name().as_str()).copied(),
        ];
        for old in older.into_iter().flatten() {
            if old != conn && self.remove(old) {
                self.counters.closed_replaced += 1;
                effects.push(Effect::Close(old, CloseReason::Replaced));
            }
        }
        self.by_ip.insert(cert.mesh_ip(), conn);
        self.by_name.insert(cert.name().to_string(), conn);
        self.tokens.insert(token, conn);
        self.nodes.insert(
            conn,
            Node {
                cert,
                quic_addr,
                token,
                local: None,
                observed: None,
                queries: TokenBucket::new(QUERY_LIMIT, now),
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
            node.cert = cert;
            self.counters.renewals += 1;
        }
        Vec::new()
    }

    /// The connection ended; its registration goes with it.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.remove(conn);
    }

    fn remove(&mut self, conn: ConnId) -> bool {
        let Some(node) = self.nodes.remove(&conn) else {
            return false;
        };
        if self.by_ip.get(&node.cert.mesh_ip()) == Some(&conn) {
            self.by_ip.remove(&node.cert.mesh_ip());
        }
        if self.by_name.get(node.cert.name().as_str()) == Some(&conn) {
            self.by_name.remove(node.cert.name().as_str());
        }
        self.tokens.remove(&node.token);
        self.routes_changed();
        true
    }

    /// A control message from a connected node.
    pub fn message(&mut self, conn: ConnId, message: ToLighthouse, now: Instant) -> Vec<Effect> {
        let Some(node) = self.nodes.get_mut(&conn) else {
            return Vec::new();
        };
        match message {
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
                self.introduce(conn, target)
            }
        }
    }

    /// Answers `asker`'s query and, at the same moment, tells the target to punch back.
    fn introduce(&mut self, asker: ConnId, target: Target) -> Vec<Effect> {
        let found = match &target {
            Target::MeshIp(ip) => self.by_ip.get(ip),
            Target::Name(name) => self.by_name.get(name),
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
        self.counters.punches += 1;
        vec![
            // The punch goes out first, so the target knows the asker before its packets come.
            Effect::Send(
                target_conn,
                FromLighthouse::Punch {
                    cert: asker_node.cert.chain_der(),
                    endpoints: asker_node.endpoints(target_node.observed),
                },
            ),
            Effect::Send(
                asker,
                FromLighthouse::Peer {
                    cert: target_node.cert.chain_der(),
                    endpoints: target_node.endpoints(asker_node.observed),
                },
            ),
        ]
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
        if node.observed == Some(from) {
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
            self.remove(conn);
            self.counters.closed_revoked += 1;
            effects.push(Effect::Close(conn, CloseReason::Revoked));
        }
        let mut registered: Vec<ConnId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.local.is_some())
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
        effects
    }

    /// The earliest moment a connected node's certificate expires.
    pub fn next_expiry(&self) -> Option<OffsetDateTime> {
        self.nodes.values().map(|n| n.cert.not_after()).min()
    }

    /// Cuts off nodes whose certificates have expired by `wall`, and forgets the lists of
    /// issuing CAs that have (no node can present a chain through them any more).
    pub fn expire(&mut self, wall: OffsetDateTime) -> Vec<Effect> {
        self.lists
            .retain(|l| l.issuing_ca().is_none_or(|ca| ca.not_after() >= wall));
        let expired: Vec<ConnId> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.cert.not_after() < wall)
            .map(|(c, _)| *c)
            .collect();
        expired
            .into_iter()
            .map(|conn| {
                self.remove(conn);
                Effect::Close(conn, CloseReason::CertificateExpired)
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

#[cfg(test)]
#[path = "rendezvous_tests.rs"]
mod tests;
