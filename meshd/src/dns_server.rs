//! Mesh DNS on the wire: the UDP socket on port 53 of the mesh IP, and the queries waiting
//! while the lighthouses are asked for a name. What each query gets is [`crate::dns::answer`].

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::dns::{Answer, Domain, Lookup};
use crate::node::{Node, Now, Output};

/// Queries read per turn of the event loop, at most.
const BURST: usize = 64;
/// Queries waiting for the lighthouses, at most; one more is answered SERVFAIL at once.
pub const MAX_WAITING: usize = 64;

/// The socket, the domain it answers for, and the queries waiting.
pub struct DnsServer {
    socket: tokio::net::UdpSocket,
    domain: Domain,
    /// The mesh's network: only queries from it (or from this machine) are answered.
    network: ipnet::Ipv4Net,
    buffer: Box<[u8]>,
    waiting: Waiting,
}

impl DnsServer {
    /// Binds port 53 on the mesh IP. A machine where something else holds it runs without
    /// mesh names, and says so.
    pub async fn bind(mesh_ip: Ipv4Addr, network: ipnet::Ipv4Net, domain: Domain) -> Option<Self> {
        match tokio::net::UdpSocket::bind((mesh_ip, 53)).await {
            Ok(socket) => {
                tracing::info!(%domain, address = %format!("{mesh_ip}:53"), "answering DNS for the mesh domain");
                Some(Self {
                    socket,
                    domain,
                    network,
                    buffer: vec![0; crate::dns::MAX_QUERY + 1].into_boxed_slice(),
                    waiting: Waiting::default(),
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot answer DNS on {mesh_ip}:53; mesh names will not resolve here");
                None
            }
        }
    }

    pub async fn readable(&self) -> std::io::Result<()> {
        self.socket.readable().await
    }

    /// When the oldest waiting query must be answered, whatever the lighthouses said.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.next_deadline()
    }

    /// Answers the queries on the socket, a burst at most; a name this node must ask the
    /// lighthouses for waits.
    pub fn serve(&mut self, node: &mut Node, now: Now, out: &mut impl Output) {
        for _ in 0..BURST {
            let (len, from) = match self.socket.try_recv_from(&mut self.buffer) {
                Ok(received) => received,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS receive failed");
                    return;
                }
            };
            // The weak host model takes a datagram for the mesh IP on any interface: one
            // from the underlay, with a forged source, must not make meshd answer a third
            // party.
            let from_mesh = match from.ip() {
                IpAddr::V4(ip) => ip.is_loopback() || self.network.contains(&ip),
                IpAddr::V6(_) => false,
            };
            if !from_mesh {
                continue;
            }
            let query = &self.buffer[..len];
            let full = self.waiting.is_full();
            let answer = crate::dns::answer(query, &self.domain, |name| {
                match node.lookup_name(name, now, out) {
                    Lookup::Pending if full => Lookup::Failed,
                    known => known,
                }
            });
            match answer {
                Answer::Reply(reply) => self.send(&reply, from),
                Answer::Wait => self.waiting.push(query, from, now.instant),
                Answer::Ignore => {}
            }
        }
    }

    /// Answers the waiting queries whose names are now known, or whose wait is over.
    pub fn retry(&mut self, node: &mut Node, now: Now, out: &mut impl Output) {
        if self.waiting.queue.is_empty() {
            return;
        }
        let domain = &self.domain;
        let mut replies = Vec::new();
        self.waiting.queue.retain(|query| {
            let expired = query.until <= now.instant;
            let answer = crate::dns::answer(&query.bytes, domain, |name| {
                match node.lookup_name(name, now, out) {
                    Lookup::Pending if expired => Lookup::Failed,
                    known => known,
                }
            });
            match answer {
                Answer::Wait => true,
                Answer::Reply(reply) => {
                    replies.push((reply, query.from));
                    false
                }
                Answer::Ignore => false,
            }
        });
        for (reply, to) in replies {
            self.send(&reply, to);
        }
    }

    fn send(&self, reply: &[u8], to: SocketAddr) {
        if let Err(e) = self.socket.try_send_to(reply, to) {
            tracing::debug!(error = %e, %to, "DNS answer not sent");
        }
    }
}

struct Query {
    bytes: Box<[u8]>,
    from: SocketAddr,
    /// Answered by then, SERVFAIL if the lighthouses have not answered.
    until: Instant,
}

/// Queries waiting, oldest first; at most [`MAX_WAITING`], none longer than
/// [`crate::node::names::ASK_FOR`].
#[derive(Default)]
struct Waiting {
    queue: VecDeque<Query>,
}

impl Waiting {
    fn is_full(&self) -> bool {
        self.queue.len() >= MAX_WAITING
    }

    fn push(&mut self, bytes: &[u8], from: SocketAddr, now: Instant) {
        if self.is_full() {
            return;
        }
        self.queue.push_back(Query {
            bytes: bytes.into(),
            from,
            until: now + crate::node::names::ASK_FOR,
        });
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.queue.front().map(|q| q.until)
    }
}
