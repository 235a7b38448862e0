//! The paths to a peer: where a datagram for it goes (direct, relayed, both, or every
//! candidate endpoint), answers sent back the way a datagram came, and the punches that look
//! for a direct path while a peer is relayed.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use boringtun::noise::TunnResult;

use super::lighthouses::{LighthouseId, Lighthouses};
use super::peers::Peer;
use super::{Node, Now, Output};

/// A direct path is trusted this long after the last authenticated packet that came over it.
/// After that, while a relay is available, packets go both ways until one proves itself.
pub(crate) const DIRECT_TRUST: Duration = Duration::from_secs(15);
/// How often a relayed peer is probed for a direct path: starting quickly, backing off.
pub(crate) const PROBE_FIRST: Duration = Duration::from_millis(500);
pub(crate) const PROBE_MAX: Duration = Duration::from_secs(16);
/// A retried handshake initiation carries this node's hello at most this often.
const HELLO_WITH_RETRY: Duration = Duration::from_secs(5);
/// A peer's punches are acted on at most this often.
const PUNCH_ANSWER_INTERVAL: Duration = Duration::from_millis(100);

/// Where a datagram for a peer goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    Direct(SocketAddr),
    Relay(LighthouseId),
    /// The direct path has gone quiet: send on both until one answers.
    Both(SocketAddr, LighthouseId),
    /// No path yet: try every candidate endpoint.
    Candidates,
}

/// Where a datagram from a peer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    Direct(SocketAddr),
    /// Through a lighthouse, which names the sender's mesh IP.
    Relay(LighthouseId, Ipv4Addr),
}

/// Sends one WireGuard datagram to a peer on its current route. A handshake initiation also
/// goes to every candidate endpoint while there is no trusted direct path: it opens this side's
/// NAT towards the peer, and whichever copy arrives first wins. A retried initiation that goes
/// direct also carries this node's `hello` (at most every [`HELLO_WITH_RETRY`]): the peer may
/// have lost this node's certificate (it restarted, or the first hello was lost), and it does
/// not answer a handshake from a key it does not know, since an answer to unauthenticated input
/// could be aimed at anyone.
pub(super) fn send(
    peer: &mut Peer,
    lighthouses: &Lighthouses,
    datagram: &[u8],
    hello: &[u8],
    now: Now,
    out: &mut impl Output,
) {
    let route = peer.route(now.instant, lighthouses.relay_up(peer));
    let init = datagram.first() == Some(&1);
    if init {
        peer.initiated = true;
        peer.unanswered_inits += 1;
        let due = peer
            .hello_sent
            .is_none_or(|t| now.instant.saturating_duration_since(t) >= HELLO_WITH_RETRY);
        // Ahead of the initiation, so that a peer that learns the certificate from it takes the
        // initiation at once.
        if peer.unanswered_inits >= 2 && due {
            peer.hello_sent = Some(now.instant);
            for to in peer.endpoint.iter().chain(&peer.candidates) {
                out.transmit(*to, hello);
            }
        }
    }
    on_route(route, peer, datagram, out);
    if init && !matches!(route, Route::Direct(_) | Route::Candidates) {
        for to in peer
            .candidates
            .iter()
            .filter(|c| Some(**c) != peer.endpoint)
        {
            out.transmit(*to, datagram);
        }
    }
}

/// Sends the datagram a peer's tunnel produced (for a packet, or on a timer), if any.
pub(super) fn send_produced(
    peer: &mut Peer,
    produced: TunnResult<'_>,
    lighthouses: &Lighthouses,
    hello: &[u8],
    now: Now,
    out: &mut impl Output,
) {
    match produced {
        TunnResult::WriteToNetwork(datagram) => send(peer, lighthouses, datagram, hello, now, out),
        TunnResult::Err(e) => {
            tracing::trace!(parent: &peer.span, error = ?e, "tunnel produced an error")
        }
        _ => {}
    }
}

/// Sends a control datagram (this node's hello) to a peer on the route its traffic takes now.
pub(super) fn send_control(
    peer: &Peer,
    lighthouses: &Lighthouses,
    datagram: &[u8],
    now: Now,
    out: &mut impl Output,
) {
    on_route(
        peer.route(now.instant, lighthouses.relay_up(peer)),
        peer,
        datagram,
        out,
    );
}

/// Sends `datagram` to `peer` the way `route` says.
fn on_route(route: Route, peer: &Peer, datagram: &[u8], out: &mut impl Output) {
    let ip = peer.cert.mesh_ip();
    match route {
        Route::Direct(to) => out.transmit(to, datagram),
        Route::Relay(via) => out.relay(via, ip, datagram),
        Route::Both(to, via) => {
            out.transmit(to, datagram);
            out.relay(via, ip, datagram);
        }
        Route::Candidates => {
            for to in &peer.candidates {
                out.transmit(*to, datagram);
            }
        }
    }
}

/// Sends the `len` bytes a tunnel sealed into the output's datagram buffer the way `route`
/// says, without copying them but for a relay that also goes directly. Returns false for a
/// route without one path (a peer known only by its candidates): the caller sends a copy.
pub(super) fn send_written(
    route: Route,
    peer_ip: Ipv4Addr,
    len: usize,
    out: &mut impl Output,
) -> bool {
    match route {
        Route::Direct(to) => out.transmit_written(to, len),
        Route::Relay(via) => out.relay_written(via, peer_ip, len),
        Route::Both(to, via) => {
            out.relay_written(via, peer_ip, len);
            out.transmit_written(to, len);
        }
        Route::Candidates => return false,
    }
    true
}

/// Answers a datagram the way it came.
pub(super) fn send_back(source: Source, peer_ip: Ipv4Addr, datagram: &[u8], out: &mut impl Output) {
    match source {
        Source::Direct(to) => out.transmit(to, datagram),
        Source::Relay(via, _) => out.relay(via, peer_ip, datagram),
    }
}

/// Punches towards a relayed peer's endpoints; an answer leads to authenticated traffic on that
/// path (see [`Node::handle_punch`]), which moves the session onto it.
pub(super) fn probe_direct(punch: &[u8], peer: &mut Peer, now: Instant, out: &mut impl Output) {
    for to in peer.candidates.iter().chain(peer.endpoint.iter()) {
        out.transmit(*to, punch);
    }
    peer.next_probe = Some(now + peer.probe_interval);
    peer.probe_interval = (peer.probe_interval * 2).min(PROBE_MAX);
}

impl Node {
    /// A punch arrived at the WireGuard socket from `from`. If it comes from a peer this node
    /// knows, the path it came over may work: answer it, and send authenticated traffic over it
    /// (a keepalive, or the handshake this node is waiting on), which the peer adopts.
    pub(super) fn handle_punch(
        &mut self,
        from: SocketAddr,
        mesh_ip: Ipv4Addr,
        reply_wanted: bool,
        now: Now,
        out: &mut impl Output,
    ) {
        let Some(peer) = self.peers.by_ip_mut(mesh_ip) else {
            self.counters.unknown_peer += 1;
            return;
        };
        if peer
            .punch_answered
            .is_some_and(|t| now.instant.saturating_duration_since(t) < PUNCH_ANSWER_INTERVAL)
        {
            return;
        }
        // A punch is unauthenticated: what answers it comes out of the budget for answers to
        // its source, and is one datagram no longer than the punch (148 bytes).
        if !self.budget.answer(from.ip(), now.instant) {
            self.counters.over_budget += 1;
            return;
        }
        peer.punch_answered = Some(now.instant);
        let settled = peer.endpoint == Some(from) && peer.direct_trusted(now.instant);
        // Authenticated traffic over the path the punch came by both opens this side's NAT and
        // lets the peer adopt the path; a punch back only asks the peer to do the same.
        let answer = if settled {
            None
        } else if peer.tunn.time_since_last_handshake().is_some() {
            match peer.tunn.encapsulate(&[], &mut self.scratch) {
                TunnResult::WriteToNetwork(keepalive) => Some(&*keepalive),
                _ => None,
            }
        } else if peer.initiated {
            match peer
                .tunn
                .format_handshake_initiation(&mut self.scratch, true)
            {
                TunnResult::WriteToNetwork(init) => Some(&*init),
                _ => None,
            }
        } else {
            None
        };
        match answer {
            Some(datagram) => out.transmit(from, datagram),
            None if reply_wanted => out.transmit(from, &self.messages.punch_answer),
            None => {}
        }
    }
}
