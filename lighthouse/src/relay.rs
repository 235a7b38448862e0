//! One node's relay, kept by the task that serves its connection: its budget, and the routes
//! it has looked up, good for as long as the registrations they were found in. A relayed
//! datagram takes the core's lock only to look up a route the node has not used since the
//! registrations last changed (a node connected, registered or left), not once per packet.
//! Sans-IO, like the core: the shell passes the time and the lookup.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rma_daemon::token_bucket::{Limit, TokenBucket};

use crate::rendezvous::RelayDrop;

/// The most routes one node keeps; past it they are all looked up again. A node relays to a
/// few peers; one that sprays mesh IPs costs a lookup per new address, as it did before.
pub const MAX_ROUTES: usize = 1024;

/// How long a destination found parked is taken for parked without asking the core again:
/// the core wakes the node at most once a second anyway, and a sender relaying flat out to a
/// parked address must not take the core's lock for every packet.
pub const PARKED_RECHECK: Duration = Duration::from_secs(1);

/// How many bytes a node may have relayed, by default: 128 MiB a second (about a gigabit, more
/// than one relayed stream carries on the test machine), 4 MiB at once. A relayed path is the
/// fallback when no direct one exists; on a lighthouse with a smaller uplink, set `[relay]`
/// lower so that one node relaying flat out cannot take another pair's share.
pub const DEFAULT_LIMIT: Limit = Limit {
    rate: 128.0 * 1024.0 * 1024.0,
    burst: 4.0 * 1024.0 * 1024.0,
};

/// Where relayed datagrams to one mesh IP go (`D`: the destination's connection), and the
/// sender's certified mesh IP to stamp on them; or why they are dropped.
pub type Route<D> = Result<(D, Ipv4Addr), RelayDrop>;

/// Relay totals over every node, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct RelayCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// No registered sender, no such destination, or to itself.
    pub dropped: AtomicU64,
    pub over_budget: AtomicU64,
}

impl RelayCounters {
    fn count<D>(&self, verdict: &Result<D, RelayDrop>, len: usize) {
        let counter = match verdict {
            Ok(_) => {
                self.bytes.fetch_add(len as u64, Ordering::Relaxed);
                &self.packets
            }
            Err(RelayDrop::OverBudget) => &self.over_budget,
            Err(_) => &self.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub struct Relay<D> {
    limit: Limit,
    /// Bytes the node may still have relayed.
    budget: TokenBucket,
    /// The registrations' epoch the routes were found in ([`crate::rendezvous::Rendezvous::epoch`]).
    epoch: u64,
    routes: HashMap<Ipv4Addr, Route<D>>,
    /// Destinations found parked, and when: looked up again after [`PARKED_RECHECK`] (that
    /// lookup wakes the node again if the last wake was lost), or at once when the
    /// registrations change (the node came back). Bounded with the routes.
    parked: HashMap<Ipv4Addr, Instant>,
}

impl<D> Relay<D> {
    pub fn new(limit: Limit, now: Instant) -> Self {
        Self {
            limit,
            budget: TokenBucket::new(limit, now),
            epoch: 0,
            routes: HashMap::new(),
            parked: HashMap::new(),
        }
    }

    /// Where a datagram of `len` bytes to mesh IP `to` goes, with the registrations at
    /// `epoch`: a route this node used since then, else what `lookup` finds. Each byte
    /// forwarded comes out of the node's budget.
    pub fn forward(
        &mut self,
        to: Ipv4Addr,
        len: usize,
        now: Instant,
        epoch: u64,
        lookup: impl FnOnce() -> Route<D>,
        counters: &RelayCounters,
    ) -> Result<(&D, Ipv4Addr), RelayDrop> {
        if epoch != self.epoch {
            self.routes.clear();
            self.parked.clear();
            self.epoch = epoch;
        }
        let known = self.routes.contains_key(&to) || self.parked.contains_key(&to);
        if self.routes.len() + self.parked.len() >= MAX_ROUTES && !known {
            self.routes.clear();
            self.parked.clear();
        }
        if let Some(seen) = self.parked.get(&to) {
            if now.saturating_duration_since(*seen) < PARKED_RECHECK {
                counters.count::<()>(&Err(RelayDrop::Parked), len);
                return Err(RelayDrop::Parked);
            }
            self.parked.remove(&to);
        }
        if let std::collections::hash_map::Entry::Vacant(entry) = self.routes.entry(to) {
            let route = lookup();
            if matches!(route, Err(RelayDrop::Parked)) {
                self.parked.insert(to, now);
                counters.count::<()>(&Err(RelayDrop::Parked), len);
                return Err(RelayDrop::Parked);
            }
            entry.insert(route);
        }
        let verdict = match self.routes.get(&to).expect("inserted above") {
            Ok((dest, from)) => match self.budget.take_n(self.limit, len as f64, now) {
                Ok(()) => Ok((dest, *from)),
                Err(_) => Err(RelayDrop::OverBudget),
            },
            Err(drop) => Err(*drop),
        };
        counters.count(&verdict, len);
        verdict
    }

    /// Routes held now, parked destinations included.
    pub fn routes(&self) -> usize {
        self.routes.len() + self.parked.len()
    }

    /// The route held for `to`, if it is good at `epoch`.
    pub fn held(&self, to: Ipv4Addr, epoch: u64) -> Option<Result<(&D, Ipv4Addr), RelayDrop>> {
        if epoch != self.epoch {
            return None;
        }
        self.routes.get(&to).map(|route| {
            route
                .as_ref()
                .map(|(dest, from)| (dest, *from))
                .map_err(|e| *e)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    const LIMIT: Limit = Limit {
        rate: 1000.0,
        burst: 4000.0,
    };

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 42, 0, n)
    }

    #[test]
    fn a_route_is_looked_up_once_per_epoch_and_bounded() {
        let start = Instant::now();
        let counters = RelayCounters::default();
        let mut relay = Relay::<u64>::new(LIMIT, start);
        let lookups = Cell::new(0);
        let lookup = |dest: u64| {
            lookups.set(lookups.get() + 1);
            Ok((dest, ip(1)))
        };
        for _ in 0..3 {
            let got = relay.forward(ip(2), 10, start, 7, || lookup(2), &counters);
            assert_eq!(got, Ok((&2, ip(1))));
        }
        assert_eq!(lookups.get(), 1, "one lookup while the registrations stand");
        // A node left or came: the route is found again, and may have moved.
        let got = relay.forward(ip(2), 10, start, 8, || lookup(5), &counters);
        assert_eq!((got, lookups.get()), (Ok((&5, ip(1))), 2));
        // Drops are remembered too, until the registrations change.
        for _ in 0..3 {
            let got = relay.forward(
                ip(9),
                10,
                start,
                8,
                || {
                    lookups.set(lookups.get() + 1);
                    Err(RelayDrop::UnknownDestination)
                },
                &counters,
            );
            assert_eq!(got, Err(RelayDrop::UnknownDestination));
        }
        assert_eq!(lookups.get(), 3);
        // A node spraying addresses holds at most MAX_ROUTES of them.
        for n in 0..(3 * MAX_ROUTES as u32) {
            let to = Ipv4Addr::from(0x0a2b_0000 + n);
            let _ = relay.forward(
                to,
                1,
                start,
                8,
                || Err(RelayDrop::UnknownDestination),
                &counters,
            );
            assert!(relay.routes() <= MAX_ROUTES);
        }
        assert_eq!(counters.packets.load(Ordering::Relaxed), 4);
        assert_eq!(counters.bytes.load(Ordering::Relaxed), 40);
        assert_eq!(
            counters.dropped.load(Ordering::Relaxed),
            3 + 3 * MAX_ROUTES as u64
        );
    }

    /// A sender relaying flat out to a parked node for an hour asks the core once a second,
    /// not once a packet; when the registrations change (the node is back) it asks at once.
    #[test]
    fn a_parked_destination_is_looked_up_once_a_second_over_an_hour() {
        let start = Instant::now();
        let counters = RelayCounters::default();
        let mut relay = Relay::<u64>::new(LIMIT, start);
        let lookups = Cell::new(0u32);
        let parked = || {
            lookups.set(lookups.get() + 1);
            Err(RelayDrop::Parked)
        };
        let step = Duration::from_millis(10);
        for i in 0..360_000u32 {
            let got = relay.forward(ip(2), 100, start + step * i, 3, parked, &counters);
            assert_eq!(got, Err(RelayDrop::Parked));
            assert!(relay.routes() <= 1);
        }
        assert_eq!(lookups.get(), 3600);
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 360_000);
        // Back: the registrations moved on, and the very next packet finds the route.
        let later = start + step * 360_000;
        let got = relay.forward(ip(2), 100, later, 4, || Ok((7, ip(1))), &counters);
        assert_eq!(got, Ok((&7, ip(1))));
    }
}
