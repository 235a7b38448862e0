//! Parking a lighthouse connection this node does not need ([`rma_proto::parked`]): after
//! `park_after` with no queries or introductions, and no peer that depends on the
//! lighthouse's relay ([`super::peers::Peer::needs_relay`]; copies of packets a direct path
//! also carries do not count), the node asks to park, closes the connection and keeps its
//! registration with signed pings from the WireGuard socket (which also keep that socket's NAT
//! mapping open for peers). It connects again when it has something to ask, when the
//! lighthouse wakes it (a peer asked for it or has packets to relay), when an ack says the
//! revocation lists changed, or when acks stop coming (the lighthouse restarted and forgot it).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rma_proto::parked::{self, Ack, KEY_LEN, Wake};
use rma_proto::wire::TOKEN_LEN;

use super::lighthouses::{LighthouseId, LighthouseState, Lighthouses, REFLECT_KEEPALIVE};
use super::{Node, Output};

/// A parked connection whose pings go unanswered this long connects again: two pings lost in
/// a row, or a lighthouse that no longer knows the registration.
const ACK_TIMEOUT: Duration = Duration::from_secs(50);
/// A park the lighthouse has not answered in this time is given up (the connection stays);
/// the node tries again after `park_after`.
const PARK_ANSWER: Duration = Duration::from_secs(10);

pub(crate) struct ParkState {
    key: parked::Key,
    token: [u8; TOKEN_LEN],
    /// The digest of the lighthouse's revocation lists when the node parked.
    lists: u64,
    /// The counter of the last ping sent.
    counter: u64,
    last_ack: Instant,
    next_ping: Instant,
    /// The counter of the last wake taken: the next must be larger.
    wakes: u64,
}

impl std::fmt::Debug for ParkState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParkState")
            .field("counter", &self.counter)
            .field("last_ack", &self.last_ack)
            .finish_non_exhaustive()
    }
}

impl LighthouseState {
    /// When this lighthouse is next looked at for parking, or for its parked pings.
    pub(super) fn next_park_check(&self) -> Option<Instant> {
        if let Some(parked) = &self.parked {
            return Some(parked.next_ping.min(parked.last_ack + ACK_TIMEOUT));
        }
        if let Some(asked) = self.parking {
            return Some(asked + PARK_ANSWER);
        }
        // A connection over TCP is not parked: it is there because UDP may not get out,
        // and a parked registration lives on UDP pings.
        match (self.up, self.park_after(), self.needed) {
            (true, Some(after), Some(needed))
                if self.observed.is_some() && self.transport == super::Transport::Quic =>
            {
                Some(needed + after)
            }
            _ => None,
        }
    }
}

impl Lighthouses {
    pub(crate) fn needed(&mut self, id: LighthouseId, now: Instant) {
        if let Some(state) = self.get_mut(id) {
            state.needed = Some(now);
        }
    }

    /// Leaves the parked state and has the shell connect again.
    pub(super) fn unpark(&mut self, id: LighthouseId, why: &str, out: &mut impl Output) {
        if let Some(state) = self.get_mut(id)
            && state.parked.take().is_some()
        {
            tracing::info!(lighthouse = %state.name(), why, "connecting to the parked lighthouse again");
            state.token = None;
            out.connect(id);
        }
    }

    /// Parks each connection unneeded for its `park_after` (a lighthouse relaying for a peer
    /// with `relaying` is needed now), sends the parked pings that are due, and connects again
    /// where acks stopped.
    pub(super) fn tend_parking(
        &mut self,
        relaying: impl Fn(LighthouseId) -> bool,
        now: Instant,
        out: &mut impl Output,
    ) {
        let mut ping = Vec::new();
        let mut lost = Vec::new();
        for (id, state) in self.iter_mut() {
            if let Some(parked) = state.parked.as_deref_mut() {
                if now.saturating_duration_since(parked.last_ack) >= ACK_TIMEOUT {
                    lost.push(id);
                } else if parked.next_ping <= now
                    && let Some(reflector) = state.reflector
                {
                    parked.counter += 1;
                    parked.key.ping(&parked.token, parked.counter, &mut ping);
                    out.transmit(reflector, &ping);
                    parked.next_ping = now + REFLECT_KEEPALIVE;
                }
                continue;
            }
            if let Some(asked) = state.parking {
                if now.saturating_duration_since(asked) >= PARK_ANSWER {
                    tracing::debug!(lighthouse = %state.name(), "no answer to the park; staying connected");
                    state.parking = None;
                    state.needed = Some(now);
                }
                continue;
            }
            let Some(due) = state.next_park_check() else {
                continue;
            };
            if due > now {
                continue;
            }
            if relaying(id) {
                state.needed = Some(now);
                continue;
            }
            tracing::debug!(lighthouse = %state.name(), "parking the unneeded lighthouse connection");
            state.parking = Some(now);
            out.park(id);
        }
        for id in lost {
            self.unpark(id, "its acks stopped", out);
        }
    }
}

impl Node {
    /// The shell parked the connection to lighthouse `id`: it answered the park with the
    /// digest `lists`, and the shell derived `key` from the connection and closed it.
    pub fn lighthouse_parked(
        &mut self,
        id: LighthouseId,
        key: &[u8; KEY_LEN],
        lists: u64,
        now: Instant,
    ) {
        let Some(state) = self.lighthouses.get_mut(id) else {
            return;
        };
        let Some(token) = state.token else {
            return;
        };
        tracing::info!(lighthouse = %state.name(), "lighthouse connection parked; staying registered with pings");
        state.up = false;
        state.parking = None;
        // The parked pings keep the mapping and the registration: no plain reflects beside
        // them (the lighthouse ignores those for a parked node).
        state.next_reflect = None;
        state.parked = Some(Box::new(ParkState {
            key: parked::Key::new(key),
            token,
            lists,
            counter: 0,
            last_ack: now,
            next_ping: now,
            wakes: 0,
        }));
    }

    /// The parked lighthouse whose key signed a message with `token`.
    fn parked_by_token(
        &mut self,
        token: &[u8; TOKEN_LEN],
    ) -> Option<(LighthouseId, &mut ParkState)> {
        self.lighthouses.iter_mut().find_map(|(id, state)| {
            let parked = state.parked.as_deref_mut()?;
            (parked.token == *token).then_some((id, parked))
        })
    }

    /// An ack to a parked ping. One that verifies and answers the last ping keeps the park; one
    /// that names other revocation lists connects again to fetch them.
    pub(super) fn handle_parked_ack(&mut self, ack: &Ack, now: Instant, out: &mut impl Output) {
        let Some((id, parked)) = self.parked_by_token(&ack.token) else {
            self.counters.malformed += 1;
            return;
        };
        if ack.counter != parked.counter || !parked.key.verify_ack(ack) {
            self.counters.malformed += 1;
            return;
        }
        parked.last_ack = now;
        let lists_changed = ack.lists != parked.lists;
        if let Some(state) = self.lighthouses.get_mut(id)
            && state.observed != Some(ack.observed)
        {
            tracing::info!(lighthouse = %state.name(), wireguard = %ack.observed, "the parked lighthouse sees this node's WireGuard socket elsewhere");
            state.observed = Some(ack.observed);
        }
        if lists_changed {
            self.lighthouses
                .unpark(id, "its revocation lists changed", out);
        }
    }

    /// A wake from a parked lighthouse: a peer wants this node.
    pub(super) fn handle_wake(
        &mut self,
        from: SocketAddr,
        wake: &Wake,
        now: Instant,
        out: &mut impl Output,
    ) {
        let Some((id, parked)) = self.parked_by_token(&wake.token) else {
            self.counters.malformed += 1;
            return;
        };
        if wake.counter <= parked.wakes || !parked.key.verify_wake(wake) {
            self.counters.malformed += 1;
            tracing::trace!(%from, "dropped a wake that does not verify");
            return;
        }
        parked.wakes = wake.counter;
        self.lighthouses.needed(id, now);
        self.lighthouses.unpark(id, "a peer wants this node", out);
    }

    /// Parks what is unneeded, and keeps parked registrations alive.
    pub(super) fn tend_parking(&mut self, now: Instant, out: &mut impl Output) {
        // The lighthouses whose relay some peer's traffic needs now.
        let wanted: Vec<LighthouseId> = self
            .peers
            .iter()
            .filter(|p| p.needs_relay(now))
            .filter_map(|p| p.relay)
            .collect();
        self.lighthouses
            .tend_parking(|id| wanted.contains(&id), now, out);
        // A parked one among them (a peer's direct path failed) connects again.
        for id in wanted {
            if self.lighthouses.get(id).is_some_and(|s| s.parked.is_some()) {
                self.lighthouses.needed(id, now);
                self.lighthouses.unpark(id, "a peer needs its relay", out);
            }
        }
    }
}
