//! How long the event loop spins for more input after a turn that moved data, before it sleeps.
//!
//! On a virtual machine a sleeping vCPU is woken by an inter-processor interrupt, which costs
//! more than a request/response exchange over the mesh itself. Spinning a few tens of
//! microseconds after a data turn catches the reply that is about to come. The window adapts
//! the way the kernel's haltpoll governor does: it grows while the next data comes after the
//! window but within the cap, and shrinks while it comes later than the cap, down to nothing
//! when traffic is sparse. The shell tells it only of turns that moved data (a TUN read, or
//! datagrams that decrypted to packets), so unauthenticated traffic neither adapts the window
//! nor earns a spin.

use std::time::{Duration, Instant};

/// The first window when traffic starts, and the smallest kept when shrinking.
pub const START: Duration = Duration::from_micros(10);
/// The cap of `[tun] busy_poll_us` when none is configured: off, until measurements on more
/// than one machine show that the spin pays for its CPU.
pub const DEFAULT_MAX: Duration = Duration::ZERO;
/// The largest cap a configuration may ask for.
pub const LIMIT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
pub struct BusyPoll {
    max: Duration,
    window: Duration,
    /// When the last data turn ended.
    last_data: Option<Instant>,
}

impl BusyPoll {
    /// `max` zero turns spinning off.
    pub fn new(max: Duration) -> Self {
        Self {
            max: max.min(LIMIT),
            window: Duration::ZERO,
            last_data: None,
        }
    }

    /// The current window.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Whether it ever spins: the shell then need not read the clock after each turn.
    pub fn is_on(&self) -> bool {
        !self.max.is_zero()
    }

    /// A turn that moved data (the shell's call: a TUN read, or datagrams that decrypted to
    /// packets, never unauthenticated traffic) began at `started` and ended at `ended`.
    /// Returns how long to spin for input now (zero: sleep at once).
    pub fn after_data(&mut self, started: Instant, ended: Instant) -> Duration {
        if !self.is_on() {
            return Duration::ZERO;
        }
        if let Some(last) = self.last_data {
            let gap = started.saturating_duration_since(last);
            if gap > self.max {
                self.window /= 2;
                if self.window < START {
                    self.window = Duration::ZERO;
                }
            } else if gap > self.window {
                self.window = (self.window * 2).max(START).min(self.max);
            }
        }
        self.last_data = Some(ended);
        self.window
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);
    const CAP: Duration = Duration::from_micros(50);

    /// Drives `poll` with data turns `gap` apart for `span` of fake time, each turn 2 µs long.
    fn drive(poll: &mut BusyPoll, at: &mut Instant, gap: Duration, span: Duration) -> Duration {
        let end = *at + span;
        let mut widest = Duration::ZERO;
        while *at < end {
            let window = poll.after_data(*at, *at + 2 * US);
            assert!(window <= poll.max, "window {window:?} over the cap");
            widest = widest.max(window);
            *at += gap;
        }
        widest
    }

    #[test]
    fn grows_to_the_cap_while_replies_come_soon() {
        let mut poll = BusyPoll::new(CAP);
        let mut at = Instant::now();
        drive(&mut poll, &mut at, 45 * US, Duration::from_millis(1));
        assert_eq!(poll.window(), CAP);
    }

    #[test]
    fn shrinks_to_nothing_when_traffic_is_sparse_and_stays_bounded_for_hours() {
        let mut poll = BusyPoll::new(CAP);
        let mut at = Instant::now();
        drive(&mut poll, &mut at, 20 * US, Duration::from_millis(1));
        assert!(poll.window() > Duration::ZERO);
        // A keepalive every 25 s for six simulated hours: no spin after the first few.
        let widest_late = {
            drive(
                &mut poll,
                &mut at,
                Duration::from_secs(25),
                Duration::from_secs(100),
            );
            drive(
                &mut poll,
                &mut at,
                Duration::from_secs(25),
                Duration::from_secs(6 * 3600),
            )
        };
        assert_eq!(widest_late, Duration::ZERO);
        assert_eq!(poll.window(), Duration::ZERO);
        // And it comes back when the traffic does, still within the cap.
        drive(&mut poll, &mut at, 45 * US, Duration::from_millis(1));
        assert_eq!(poll.window(), CAP);
    }

    #[test]
    fn a_zero_cap_turns_it_off_and_the_cap_is_limited() {
        let mut off = BusyPoll::new(Duration::ZERO);
        let mut at = Instant::now();
        assert_eq!(
            drive(&mut off, &mut at, 5 * US, Duration::from_millis(10)),
            Duration::ZERO
        );
        let mut huge = BusyPoll::new(Duration::from_secs(5));
        let widest = drive(&mut huge, &mut at, 900 * US, Duration::from_secs(1));
        assert_eq!(widest, LIMIT);
    }
}
