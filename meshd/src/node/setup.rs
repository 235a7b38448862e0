//! Setting up a session with a peer this node has no certificate for yet: packets held while
//! its certificate is fetched (with hellos to its static endpoints, or by asking the
//! lighthouses), answers to hellos, and relayed handshakes that arrived before their sender's
//! certificate. Every table here has a bound.

use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rma_proto::lighthouse::{Target, ToLighthouse};

use super::lighthouses::{LighthouseId, Lighthouses};
use super::{Node, Now, Output};
use crate::ipv4;

/// Packets held for a peer whose certificate has not arrived yet.
const PENDING_QUEUE: usize = 64;
/// Destinations being set up at once, and the bytes held for all of them: a local program
/// sending to every address of the mesh network holds a bounded amount of memory.
const MAX_PENDING_DESTINATIONS: usize = 1024;
const MAX_PENDING_BYTES: usize = 4 << 20;
/// How often an unanswered hello is repeated, and how many times.
const HELLO_RETRY: Duration = Duration::from_secs(1);
const HELLO_ATTEMPTS: u32 = 10;
/// How long a relayed handshake initiation from an unknown peer is kept, and how many at most.
const HELD_INIT_LIFETIME: Duration = Duration::from_secs(5);
const MAX_HELD_INITS: usize = 256;

/// Packets for a mesh IP with no peer yet: with hellos to its static endpoints, or by asking
/// the lighthouses (when `endpoints` is empty).
struct Pending {
    endpoints: Vec<SocketAddr>,
    queue: VecDeque<Vec<u8>>,
    next_hello: Instant,
    hellos_sent: u32,
}

impl Pending {
    fn queued_bytes(&self) -> usize {
        self.queue.iter().map(Vec::len).sum()
    }

    /// Asks for the peer's certificate: a hello to its static endpoints, or a query to every
    /// connected lighthouse.
    fn send_hello(
        &mut self,
        ip: Ipv4Addr,
        hello: &[u8],
        lighthouses: &mut Lighthouses,
        now: Instant,
        out: &mut impl Output,
    ) {
        for endpoint in &self.endpoints {
            out.transmit(*endpoint, hello);
        }
        if self.endpoints.is_empty() {
            lighthouses.ask_all(&Target::MeshIp(ip), now, out);
        }
        self.hellos_sent += 1;
        self.next_hello = now + HELLO_RETRY;
    }
}

/// Every destination being set up, and the bytes held for all of them.
#[derive(Default)]
pub(crate) struct PendingTable {
    by_ip: HashMap<Ipv4Addr, Pending>,
    bytes: usize,
}

/// Why a packet for a destination being set up was not held.
pub(crate) struct QueueFull;

impl PendingTable {
    pub(crate) fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        self.by_ip.values().map(|p| p.next_hello).min()
    }

    /// Holds `packet` for `dst` (set up through `endpoints`, or the lighthouses when empty),
    /// and says hello at once if one is due.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hold(
        &mut self,
        dst: Ipv4Addr,
        endpoints: impl FnOnce() -> Vec<SocketAddr>,
        packet: &[u8],
        hello: &[u8],
        lighthouses: &mut Lighthouses,
        now: Instant,
        out: &mut impl Output,
    ) -> Result<(), QueueFull> {
        if !self.by_ip.contains_key(&dst) && self.by_ip.len() >= MAX_PENDING_DESTINATIONS {
            return Err(QueueFull);
        }
        let pending = self.by_ip.entry(dst).or_insert_with(|| Pending {
            endpoints: endpoints(),
            queue: VecDeque::new(),
            next_hello: now,
            hellos_sent: 0,
        });
        let held = if pending.queue.len() >= PENDING_QUEUE
            || self.bytes + packet.len() > MAX_PENDING_BYTES
        {
            Err(QueueFull)
        } else {
            self.bytes += packet.len();
            pending.queue.push_back(packet.to_vec());
            Ok(())
        };
        if pending.next_hello <= now {
            pending.send_hello(dst, hello, lighthouses, now, out);
        }
        held
    }

    /// Repeats due hellos; gives up on destinations that never answered and returns how many
    /// packets were dropped with them.
    pub(crate) fn retry(
        &mut self,
        hello: &[u8],
        lighthouses: &mut Lighthouses,
        now: Instant,
        out: &mut impl Output,
    ) -> usize {
        let mut dropped = 0;
        let bytes = &mut self.bytes;
        self.by_ip.retain(|ip, pending| {
            if pending.next_hello > now {
                return true;
            }
            if pending.hellos_sent >= HELLO_ATTEMPTS {
                tracing::debug!(peer = %ip, "no certificate hello or lighthouse answer; dropping queued packets");
                dropped += pending.queue.len();
                *bytes -= pending.queued_bytes();
                return false;
            }
            pending.send_hello(*ip, hello, lighthouses, now, out);
            true
        });
        dropped
    }

    /// The packets held for `ip`, which now has a peer.
    pub(crate) fn take(&mut self, ip: Ipv4Addr) -> VecDeque<Vec<u8>> {
        match self.by_ip.remove(&ip) {
            Some(pending) => {
                self.bytes -= pending.queued_bytes();
                pending.queue
            }
            None => VecDeque::new(),
        }
    }

    /// Forgets destinations `keep` rejects (static peers removed by a reload).
    pub(crate) fn retain(&mut self, keep: impl Fn(Ipv4Addr) -> bool) {
        let bytes = &mut self.bytes;
        self.by_ip.retain(|ip, pending| {
            let kept = keep(*ip);
            if !kept {
                *bytes -= pending.queued_bytes();
            }
            kept
        });
    }
}

/// Relayed handshake initiations that arrived before the lighthouse's punch request naming
/// their sender (the request travels on the control stream, the initiation as a datagram, and
/// either can win). Each is replayed once the sender's certificate arrives, instead of waiting
/// for WireGuard's 5-second retry. Keyed by the sender's certified mesh IP, which the
/// lighthouse stamps on every relayed packet.
#[derive(Debug, Default)]
pub(crate) struct HeldInits {
    by_ip: HashMap<Ipv4Addr, (LighthouseId, Vec<u8>, Instant)>,
}

impl HeldInits {
    pub(crate) fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub(crate) fn expire(&mut self, now: Instant) {
        self.by_ip
            .retain(|_, (_, _, at)| now.saturating_duration_since(*at) < HELD_INIT_LIFETIME);
    }

    pub(crate) fn take(&mut self, from: Ipv4Addr) -> Option<(LighthouseId, Vec<u8>)> {
        self.by_ip.remove(&from).map(|(via, init, _)| (via, init))
    }

    /// Keeps a relayed handshake initiation from a mesh IP with no certificate yet, and asks
    /// the lighthouse that relayed it who that is.
    pub(crate) fn hold(
        &mut self,
        via: LighthouseId,
        from: Ipv4Addr,
        init: &[u8],
        now: Instant,
        out: &mut impl Output,
    ) {
        if self.by_ip.len() >= MAX_HELD_INITS && !self.by_ip.contains_key(&from) {
            return;
        }
        let asked_already = self.by_ip.insert(from, (via, init.to_vec(), now)).is_some();
        if !asked_already {
            out.ask(
                via,
                ToLighthouse::Query {
                    target: Target::MeshIp(from),
                },
            );
        }
    }
}

impl Node {
    /// A packet from the TUN for a mesh IP with no peer: held while the peer is set up, if a
    /// static endpoint or a lighthouse can find it.
    pub(super) fn hold_for_setup(
        &mut self,
        dst: Ipv4Addr,
        packet: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        let statics = self.static_peers.get(&dst);
        if statics.is_none() && !self.lighthouses.any_up() {
            self.counters.no_route += 1;
            return;
        }
        let held = self.pending.hold(
            dst,
            || statics.cloned().unwrap_or_default(),
            packet,
            &self.messages.hello_reply_wanted,
            &mut self.lighthouses,
            now.instant,
            out,
        );
        if held.is_err() {
            self.counters.queue_dropped += 1;
        }
    }

    pub(super) fn handle_hello(
        &mut self,
        from: SocketAddr,
        cert_der: &[u8],
        reply_wanted: bool,
        received: usize,
        now: Now,
        out: &mut impl Output,
    ) {
        let Some(slot) = self.certified_slot(cert_der, now) else {
            return;
        };
        if reply_wanted {
            self.answer_hello(from, received, now, out);
        }
        self.flush_pending(slot, now, out);
    }

    /// Sends what was queued for the peer in `slot` while it was being set up.
    pub(super) fn flush_pending(&mut self, slot: usize, now: Now, out: &mut impl Output) {
        let Some(peer) = self.peers.get(slot) else {
            return;
        };
        for packet in self.pending.take(peer.cert.mesh_ip()) {
            if let Some(flow) = ipv4::flow(&packet) {
                self.send_to_peer(slot, &packet, flow, now, out);
            }
        }
    }

    /// Answers a hello of `received` bytes from `to` with this node's: never with more bytes
    /// than it carried, and within the budget for answers to that address and to all.
    fn answer_hello(&mut self, to: SocketAddr, received: usize, now: Now, out: &mut impl Output) {
        let answer = &self.messages.hello_answer;
        if answer.len() > received || !self.budget.answer(to.ip(), now.instant) {
            self.counters.over_budget += 1;
            return;
        }
        out.transmit(to, answer);
    }
}
