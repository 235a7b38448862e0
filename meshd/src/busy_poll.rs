//! How long the event loop spins for more input after a turn that moved data, before it sleeps.
//!
//! On a virtual machine a sleeping vCPU is woken by an inter-processor interrupt, which costs
//! more than a request/response exchange over the mesh itself. Spinning up to the cap after a
//! data turn catches the reply that is about to come. Traffic that is exchanges has one short
//! gap (the local application's answer) and one long gap (the round trip) per exchange, so a
//! rule that grows on short gaps and shrinks on long ones, as the kernel's haltpoll governor
//! does, swings and misses the reply. Here the loop spins the whole cap while any of the last
//! [`HISTORY`] gaps between data turns was within it, and not at all once none was: sparse
//! traffic (keepalives) costs no spin after a few turns. The shell tells it only of turns that
//! moved data (a TUN read, or datagrams that decrypted to packets), so unauthenticated traffic
//! neither earns a spin nor keeps one going.

use std::time::{Duration, Instant};

/// The cap of `[tun] busy_poll_us` when none is configured: off, until measurements on more
/// than one machine show that the spin pays for its CPU.
pub const DEFAULT_MAX: Duration = Duration::ZERO;
/// The largest cap a configuration may ask for.
pub const LIMIT: Duration = Duration::from_millis(1);
/// How many of the latest gaps between data turns are remembered (the bits of a `u8`).
pub const HISTORY: u32 = u8::BITS;

#[derive(Debug, Clone)]
pub struct BusyPoll {
    max: Duration,
    /// One bit per remembered gap, the newest lowest: set when the gap was within `max`.
    short_gaps: u8,
    /// When the last data turn ended.
    last_data: Option<Instant>,
}

impl BusyPoll {
    /// `max` zero turns spinning off.
    pub fn new(max: Duration) -> Self {
        Self {
            max: max.min(LIMIT),
            short_gaps: 0,
            last_data: None,
        }
    }

    /// How long the next spin lasts.
    pub fn window(&self) -> Duration {
        if self.short_gaps == 0 {
            Duration::ZERO
        } else {
            self.max
        }
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
            let short = started.saturating_duration_since(last) <= self.max;
            self.short_gaps = (self.short_gaps << 1) | u8::from(short);
        }
        self.last_data = Some(ended);
        self.window()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);
    const CAP: Duration = Duration::from_micros(50);

    /// Drives `poll` with data turns 2 µs long, the gaps before them taken in turn from `gaps`,
    /// for `span` of fake time. Returns the widest window and how many turns spun.
    fn drive(
        poll: &mut BusyPoll,
        at: &mut Instant,
        gaps: &[Duration],
        span: Duration,
    ) -> (Duration, u64) {
        let end = *at + span;
        let (mut widest, mut spins) = (Duration::ZERO, 0);
        for gap in gaps.iter().cycle() {
            if *at >= end {
                break;
            }
            let window = poll.after_data(*at, *at + 2 * US);
            assert!(window <= poll.max, "window {window:?} over the cap");
            widest = widest.max(window);
            spins += u64::from(!window.is_zero());
            *at += 2 * US + *gap;
        }
        (widest, spins)
    }

    #[test]
    fn exchanges_with_one_short_and_one_long_gap_keep_the_whole_cap() {
        let mut poll = BusyPoll::new(CAP);
        let mut at = Instant::now();
        // The application answers in 15 µs; the round trip over the mesh takes 120.
        let exchange = [15 * US, 120 * US];
        drive(&mut poll, &mut at, &exchange, Duration::from_micros(300));
        let (widest, spins) = drive(&mut poll, &mut at, &exchange, Duration::from_secs(60));
        assert_eq!(widest, CAP);
        // Every turn of a minute of exchanges spins: none is left to a wakeup.
        let turns = 60 * 1_000_000 / (2 + 15 + 2 + 120) * 2;
        assert!(spins + 2 >= turns, "{spins} spins in {turns} turns");
    }

    #[test]
    fn sparse_traffic_stops_the_spin_within_the_history_for_hours() {
        let mut poll = BusyPoll::new(CAP);
        let mut at = Instant::now();
        drive(&mut poll, &mut at, &[20 * US], Duration::from_millis(1));
        assert_eq!(poll.window(), CAP);
        // A keepalive every 25 s for six simulated hours: only the first HISTORY turns spin
        // (the first comes 20 µs after the last burst, then HISTORY - 1 with a short gap still
        // remembered).
        let (_, spins) = drive(
            &mut poll,
            &mut at,
            &[Duration::from_secs(25)],
            Duration::from_secs(6 * 3600),
        );
        assert_eq!(spins, u64::from(HISTORY));
        assert_eq!(poll.window(), Duration::ZERO);
        // And it comes back when the traffic does, still within the cap.
        let (widest, _) = drive(&mut poll, &mut at, &[45 * US], Duration::from_millis(1));
        assert_eq!((widest, poll.window()), (CAP, CAP));
    }

    #[test]
    fn a_zero_cap_turns_it_off_and_the_cap_is_limited() {
        let mut off = BusyPoll::new(Duration::ZERO);
        let mut at = Instant::now();
        let (widest, spins) = drive(&mut off, &mut at, &[5 * US], Duration::from_millis(10));
        assert_eq!((widest, spins), (Duration::ZERO, 0));
        assert!(!off.is_on());
        let mut huge = BusyPoll::new(Duration::from_secs(5));
        let (widest, _) = drive(&mut huge, &mut at, &[900 * US], Duration::from_secs(1));
        assert_eq!(widest, LIMIT);
    }
}
