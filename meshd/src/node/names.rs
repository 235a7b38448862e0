//! Names this node holds no certificate for, asked of the lighthouses for mesh DNS: which are
//! in flight, and what the lighthouses said. Bounded in entries and in asks per second, and
//! every entry expires, so that a local program looping over random names costs the
//! lighthouses a few queries a second and this node a fixed table.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use rma_daemon::token_bucket::{Limit, TokenBucket};
use rma_proto::lighthouse::Target;

use super::{Node, Now, Output};

/// How long a name waits for the lighthouses' answers before it fails (SERVFAIL): far longer
/// than a round trip to a lighthouse, well inside a stub resolver's timeout.
pub const ASK_FOR: Duration = Duration::from_secs(2);
/// How long an answer that the lighthouses do not know a name (or did not answer) stands
/// before the name is asked again.
pub const REMEMBER: Duration = Duration::from_secs(10);
/// Names asked and remembered, at most.
pub const MAX_NAMES: usize = 256;
/// New names asked of the lighthouses: a burst, then a few a second. The lighthouse's own
/// query limit is several times this, so name lookups never starve session setup.
const ASKS: Limit = Limit {
    rate: 4.0,
    burst: 16.0,
};

/// What this node can say of a name in the mesh domain now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A certificate this node holds bears the name.
    Found(Ipv4Addr),
    /// No certificate this node holds bears it, and no lighthouse knows it (or there is none
    /// to ask).
    Unknown,
    /// The lighthouses were asked and have not all answered yet.
    Pending,
    /// They could not be asked (too many names at once), or did not answer in time.
    Failed,
}

#[derive(Debug)]
struct Ask {
    at: Instant,
    /// Lighthouses asked that have not answered that they do not know the name.
    waiting: usize,
}

#[derive(Debug)]
pub(crate) struct NameAsks {
    asks: HashMap<String, Ask>,
    budget: TokenBucket,
}

impl NameAsks {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            asks: HashMap::new(),
            budget: TokenBucket::new(ASKS, now),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.asks.len()
    }

    /// A lighthouse does not know `name`.
    pub(crate) fn not_found(&mut self, name: &str) {
        if let Some(ask) = self.asks.get_mut(&name.to_ascii_lowercase()) {
            ask.waiting = ask.waiting.saturating_sub(1);
        }
    }

    /// What is known of `name` (lowercase) from asking; `None` when it was never asked or the
    /// answer expired, so it should be asked (again).
    fn known(&mut self, name: &str, now: Instant) -> Option<Lookup> {
        let ask = self.asks.get(name)?;
        let age = now.saturating_duration_since(ask.at);
        if age >= REMEMBER {
            self.asks.remove(name);
            return None;
        }
        Some(match ask.waiting {
            0 => Lookup::Unknown,
            _ if age >= ASK_FOR => Lookup::Failed,
            _ => Lookup::Pending,
        })
    }

    /// Takes room and budget for asking `name` of `lighthouses` lighthouses; false when there
    /// is neither.
    fn asking(&mut self, name: &str, lighthouses: usize, now: Instant) -> bool {
        if self.asks.len() >= MAX_NAMES {
            self.asks
                .retain(|_, ask| now.saturating_duration_since(ask.at) < REMEMBER);
        }
        if self.asks.len() >= MAX_NAMES || self.budget.take(ASKS, now).is_err() {
            return false;
        }
        self.asks.insert(
            name.to_owned(),
            Ask {
                at: now,
                waiting: lighthouses,
            },
        );
        true
    }
}

impl Node {
    /// What this node can say of the node named `name` (any case) now: from the certificates
    /// it holds, else from what the lighthouses answered. A name never asked is asked of every
    /// reachable lighthouse; their answer, a peer introduced or a "not found", shows in the
    /// next call. A name found this way is a peer from then on, with a session being set up.
    pub fn lookup_name(&mut self, name: &str, now: Now, out: &mut impl Output) -> Lookup {
        if let Some(ip) = self.resolve(name) {
            return Lookup::Found(ip);
        }
        let name = name.to_ascii_lowercase();
        if let Some(known) = self.names.known(&name, now.instant) {
            return known;
        }
        let reachable = self.lighthouses.reachable_count();
        if reachable == 0 {
            return Lookup::Unknown;
        }
        if !self.names.asking(&name, reachable, now.instant) {
            return Lookup::Failed;
        }
        self.lighthouses
            .ask_all(&Target::Name(name), now.instant, out);
        Lookup::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_expire_and_the_table_and_the_asks_stay_bounded_over_hours() {
        let start = Instant::now();
        let mut names = NameAsks::new(start);
        assert!(names.asking("a", 2, start));
        assert_eq!(names.known("a", start), Some(Lookup::Pending));
        names.not_found("A");
        assert_eq!(
            names.known("a", start),
            Some(Lookup::Pending),
            "one of two answered"
        );
        names.not_found("a");
        assert_eq!(names.known("a", start), Some(Lookup::Unknown));
        assert!(names.asking("b", 1, start));
        assert_eq!(names.known("b", start + ASK_FOR), Some(Lookup::Failed));
        assert_eq!(
            names.known("b", start + REMEMBER),
            None,
            "asked again after a while"
        );
        assert_eq!(names.known("never", start), None);

        // A program asking for a new random name every 10 ms, for six hours: the lighthouses
        // get no more than the budget allows, and the table never grows past its bound.
        let mut names = NameAsks::new(start);
        let step = Duration::from_millis(10);
        let steps = 6 * 3600 * 100;
        let mut asked = 0u64;
        for i in 0..steps {
            let now = start + step * i;
            if names.asking(&format!("name-{i}"), 1, now) {
                asked += 1;
            }
            assert!(names.len() <= MAX_NAMES);
        }
        let hours = Duration::from_secs(6 * 3600).as_secs_f64();
        let most = ASKS.burst + ASKS.rate * hours;
        assert!(asked as f64 <= most, "{asked} asks, at most {most}");
        assert!(
            asked as f64 >= most * 0.9,
            "{asked} asks: the budget refills"
        );

        // After the storm, a name is asked at once, and answered from the table.
        let later = start + step * steps + REMEMBER;
        assert!(names.asking("routerd", 1, later));
        names.not_found("routerd");
        assert_eq!(names.known("routerd", later), Some(Lookup::Unknown));
    }
}
