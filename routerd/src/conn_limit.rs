//! How many connections one listener holds open, in all and per caller address. A connection
//! over either bound is closed as soon as it is accepted, so that a flood of held connections
//! (slow-loris) can take at most its share, and never the file descriptors routerd needs for
//! its other listener and its workers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct ConnLimit {
    max_total: usize,
    max_per_ip: usize,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    /// Only addresses with a connection open: bounded by `max_total`.
    by_ip: HashMap<IpAddr, usize>,
    refused: u64,
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    Listener,
    Address,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    limit: Arc<ConnLimit>,
    ip: IpAddr,
}

impl ConnLimit {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_ip,
            open: Mutex::new(Open::default()),
        })
    }

    fn open(&self) -> std::sync::MutexGuard<'_, Open> {
        rma_daemon::sync::lock(&self.open)
    }

    /// A place for a connection from `ip`; `shared_address` (a trusted proxy, which carries
    /// many callers) is held only to the listener's bound.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, shared_address: bool) -> Result<Permit, Full> {
        let mut open = self.open();
        let from_ip = open.by_ip.get(&ip).copied().unwrap_or(0);
        let full = if open.total >= self.max_total {
            Some(Full::Listener)
        } else if !shared_address && from_ip >= self.max_per_ip {
            Some(Full::Address)
        } else {
            None
        };
        if let Some(full) = full {
            open.refused += 1;
            return Err(full);
        }
        open.total += 1;
        open.by_ip.insert(ip, from_ip + 1);
        Ok(Permit {
            limit: Arc::clone(self),
            ip,
        })
    }

    /// Connections open now, and refused since start.
    pub fn counts(&self) -> (usize, u64) {
        let open = self.open();
        (open.total, open.refused)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.limit.open();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn each_address_gets_its_share_and_the_listener_its_bound() {
        let limit = ConnLimit::new(5, 2);
        let a1 = limit.admit(ip(1), false).unwrap();
        let _a2 = limit.admit(ip(1), false).unwrap();
        assert_eq!(limit.admit(ip(1), false).unwrap_err(), Full::Address);
        let _b = limit.admit(ip(2), false).unwrap();
        // A trusted proxy carries many callers: only the listener's bound holds it.
        let _p1 = limit.admit(ip(9), true).unwrap();
        let _p2 = limit.admit(ip(9), true).unwrap();
        assert_eq!(limit.admit(ip(3), false).unwrap_err(), Full::Listener);
        assert_eq!(limit.counts(), (5, 2));
        drop(a1);
        assert!(limit.admit(ip(1), false).is_ok(), "a freed place is free");
    }

    /// A day of connections from ever-new addresses, opened and closed: nothing stays behind.
    #[test]
    fn a_day_of_callers_leaves_no_state() {
        let limit = ConnLimit::new(100, 4);
        for second in 0..86_400u32 {
            let addr = IpAddr::from(second.to_be_bytes());
            let held: Vec<Permit> = (0..4).map(|_| limit.admit(addr, false).unwrap()).collect();
            assert!(limit.admit(addr, false).is_err());
            drop(held);
        }
        assert_eq!(limit.counts().0, 0);
        assert!(limit.open().by_ip.is_empty());
    }
}
