//! Parked registrations, the core's side ([`rma_proto::parked`] has the protocol). A parked
//! node has no connection: the core keeps its registration, the key its pings are signed
//! with and the nodes that asked for it, and answers and wakes it with datagrams the shell
//! sends from the reflector's socket.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rma_ca::RevocationList;
use rma_proto::lighthouse::FromLighthouse;
use rma_proto::parked::{self, KEY_LEN, Ping};

use super::{CloseReason, ConnId, Effect, Rendezvous};

/// A parked registration whose pings stop for this long is dropped. Nodes ping every 20 s.
pub const PARKED_EXPIRY: Duration = Duration::from_secs(90);
/// The least time between two wakes to one node: the first of a burst of queries or relayed
/// packets wakes it, and a lost wake is sent again by the next.
const WAKE_SPACING: Duration = Duration::from_secs(1);
/// Askers waiting for a parked node, at most; the oldest goes first (it asks again).
pub(super) const WAITING_MAX: usize = 16;

pub(super) struct Parked {
    key: parked::Key,
    /// The counter of the last ping taken: the next must be larger.
    counter: u64,
    last_seen: Instant,
    wakes: u64,
    last_wake: Option<Instant>,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("counter", &self.counter)
            .field("last_seen", &self.last_seen)
            .field("wakes", &self.wakes)
            .finish_non_exhaustive()
    }
}

/// What parked nodes compare to learn that the revocation lists changed: the first eight bytes
/// of a SHA-256 over the lists' published DER, in byte order (so the order they were taken in
/// does not matter).
pub(super) fn lists_digest(lists: &[RevocationList]) -> u64 {
    let mut ders: Vec<Vec<u8>> = lists.iter().map(RevocationList::published_der).collect();
    ders.sort();
    let mut digest = ring::digest::Context::new(&ring::digest::SHA256);
    for der in &ders {
        digest.update(&(der.len() as u64).to_be_bytes());
        digest.update(der);
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.finish().as_ref()[..8]);
    u64::from_be_bytes(first)
}

impl Rendezvous {
    /// The node on `conn` asked to park, and the shell derived `key` from its connection. It
    /// is answered with the lists' digest; once the connection closes, the registration lives
    /// on its pings.
    pub fn park(&mut self, conn: ConnId, key: &[u8; KEY_LEN], now: Instant) -> Vec<Effect> {
        let Some(node) = self.nodes.get_mut(&conn) else {
            return Vec::new();
        };
        if node.local.is_none() {
            return vec![Effect::Close(
                conn,
                CloseReason::Protocol("park before register"),
            )];
        }
        // The key comes from the connection and its token, so a second park would reuse it
        // and start its counter again, and pings captured under the first would replay.
        if node.has_parked {
            return vec![Effect::Close(
                conn,
                CloseReason::Protocol("a second park on one connection"),
            )];
        }
        node.has_parked = true;
        node.parked = Some(Box::new(Parked {
            key: parked::Key::new(key),
            counter: 0,
            last_seen: now,
            wakes: 0,
            last_wake: None,
        }));
        self.counters.parks += 1;
        // Relays must stop sending to the connection that is about to close.
        self.routes_changed();
        vec![Effect::Send(
            conn,
            FromLighthouse::Parked {
                lists: self.lists_digest,
            },
        )]
    }

    /// A parked ping from `from`. One that verifies, with a counter larger than the last,
    /// keeps the registration, moves its public address to `from` and is answered with an
    /// ack (shorter than the ping). Anything else is counted and dropped: an unknown token
    /// costs a lookup, a known one an HMAC.
    pub fn parked_ping(&mut self, from: SocketAddr, ping: &Ping, now: Instant) -> Vec<Effect> {
        let lists = self.lists_digest;
        let node = self
            .tokens
            .get(&ping.token)
            .and_then(|conn| self.nodes.get_mut(conn));
        let Some((node, parked)) = node.and_then(|n| {
            let parked = n.parked.as_deref_mut()?;
            Some((&mut n.observed, parked))
        }) else {
            self.counters.parked_pings_refused += 1;
            return Vec::new();
        };
        if ping.counter <= parked.counter || !parked.key.verify_ping(ping) {
            self.counters.parked_pings_refused += 1;
            return Vec::new();
        }
        parked.counter = ping.counter;
        parked.last_seen = now;
        *node = Some(from);
        self.counters.parked_pings += 1;
        let mut ack = Vec::new();
        parked
            .key
            .ack(&ping.token, ping.counter, lists, from, &mut ack);
        vec![Effect::Datagram(from, ack)]
    }

    /// Notes that `asker` waits for the parked node on `conn`, and wakes it.
    pub(super) fn hold_for_parked(
        &mut self,
        conn: ConnId,
        asker: ConnId,
        now: Instant,
    ) -> Vec<Effect> {
        if let Some(node) = self.nodes.get_mut(&conn)
            && !node.waiting.contains(&asker)
        {
            if node.waiting.len() >= WAITING_MAX {
                node.waiting.remove(0);
            }
            node.waiting.push(asker);
        }
        self.wake(conn, now).into_iter().collect()
    }

    /// A peer has packets to relay to mesh IP `to`, whose node is parked: wakes it.
    pub fn wake_for_relay(&mut self, to: Ipv4Addr, now: Instant) -> Vec<Effect> {
        match self.by_ip.get(&to).copied() {
            Some(conn) => self.wake(conn, now).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// A wake for the parked node on `conn`, to its public address, unless one went within
    /// [`WAKE_SPACING`].
    fn wake(&mut self, conn: ConnId, now: Instant) -> Option<Effect> {
        let node = self.nodes.get_mut(&conn)?;
        let to = node.observed?;
        let parked = node.parked.as_deref_mut()?;
        if parked
            .last_wake
            .is_some_and(|at| now.saturating_duration_since(at) < WAKE_SPACING)
        {
            return None;
        }
        parked.last_wake = Some(now);
        parked.wakes += 1;
        let mut wake = Vec::new();
        parked.key.wake(&node.token, parked.wakes, &mut wake);
        self.counters.wakes += 1;
        Some(Effect::Datagram(to, wake))
    }

    /// Drops the parked registrations whose pings stopped [`PARKED_EXPIRY`] ago, and closes
    /// any connection one still has (a park that crossed a message left it open).
    pub fn sweep(&mut self, now: Instant) -> Vec<Effect> {
        let gone: Vec<ConnId> = self
            .nodes
            .iter()
            .filter(|(_, n)| {
                n.parked
                    .as_ref()
                    .is_some_and(|p| now.saturating_duration_since(p.last_seen) > PARKED_EXPIRY)
            })
            .map(|(conn, _)| *conn)
            .collect();
        gone.into_iter()
            .filter_map(|conn| {
                self.remove(conn)?;
                self.counters.parked_expired += 1;
                Some(Effect::Close(
                    conn,
                    CloseReason::Protocol("parked pings stopped"),
                ))
            })
            .collect()
    }

    /// Registrations that are parked now.
    pub fn parked(&self) -> usize {
        self.census().parked
    }
}
