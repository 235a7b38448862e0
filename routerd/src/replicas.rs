//! The routerd replicas this one knows of, learnt from workers: each registration names the
//! routerd mesh URLs its worker registers with, and each heartbeat says when the worker last
//! heard from each. Replicas do not talk to each other; this is what `/api/admin/coordinators`
//! shows. Bounded: at most [`MAX`] replicas, and one no worker has named for [`FORGET`] is
//! forgotten. Pure logic; time is passed in.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::Serialize;

/// At most this many replicas are kept; the one named longest ago goes first.
pub const MAX: usize = 64;
/// A replica that no worker has named for this long is forgotten.
pub const FORGET: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Known {
    /// When a worker last named it.
    named: Instant,
    /// The latest moment any worker heard from it.
    contact: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct Replicas {
    by_url: BTreeMap<String, Known>,
}

/// One replica, as `/api/admin/coordinators` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplicaView {
    pub url: String,
    pub mesh_ip: Option<Ipv4Addr>,
    /// Seconds since any worker last heard from it; `None` if none has said it did.
    pub last_contact_secs: Option<u64>,
}

/// The mesh IP in a routerd mesh URL such as `http://10.42.0.1:8080`.
pub fn mesh_ip(url: &str) -> Option<Ipv4Addr> {
    let rest = url.strip_prefix("http://")?;
    let host = rest.split(['/', ':']).next()?;
    host.parse().ok()
}

impl Replicas {
    /// A worker named `url` as a routerd it registers with; `contact_age` is how long ago it
    /// last heard from it, if it has.
    pub fn named(&mut self, url: &str, contact_age: Option<Duration>, now: Instant) {
        if mesh_ip(url).is_none() || url.len() > 64 {
            return;
        }
        let contact = contact_age.and_then(|age| now.checked_sub(age));
        if let Some(known) = self.by_url.get_mut(url) {
            known.named = now;
            known.contact = known.contact.max(contact);
            return;
        }
        if self.by_url.len() >= MAX {
            let oldest = self
                .by_url
                .iter()
                .min_by_key(|(_, k)| k.named)
                .map(|(url, _)| url.clone());
            if let Some(oldest) = oldest {
                self.by_url.remove(&oldest);
            }
        }
        self.by_url.insert(
            url.to_owned(),
            Known {
                named: now,
                contact,
            },
        );
    }

    /// Forgets replicas no worker has named for [`FORGET`].
    pub fn expire(&mut self, now: Instant) {
        self.by_url
            .retain(|_, k| now.saturating_duration_since(k.named) <= FORGET);
    }

    pub fn len(&self) -> usize {
        self.by_url.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_url.is_empty()
    }

    pub fn view(&self, now: Instant) -> Vec<ReplicaView> {
        self.by_url
            .iter()
            .map(|(url, k)| ReplicaView {
                url: url.clone(),
                mesh_ip: mesh_ip(url),
                last_contact_secs: k
                    .contact
                    .map(|c| now.saturating_duration_since(c).as_secs()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_learnt_from_workers_and_the_freshest_contact_wins() {
        let mut replicas = Replicas::default();
        let t0 = Instant::now() + Duration::from_secs(100);
        replicas.named("http://10.42.0.1:8080", None, t0);
        replicas.named("http://10.42.0.2:8080", Some(Duration::from_secs(3)), t0);
        replicas.named("http://10.42.0.2:8080", Some(Duration::from_secs(30)), t0);
        replicas.named("not a url", None, t0);
        let view = replicas.view(t0 + Duration::from_secs(1));
        assert_eq!(view.len(), 2);
        assert_eq!(view[0].last_contact_secs, None);
        assert_eq!(view[1].mesh_ip, Some(Ipv4Addr::new(10, 42, 0, 2)));
        assert_eq!(
            view[1].last_contact_secs,
            Some(4),
            "the fresher contact stands"
        );
    }

    #[test]
    fn a_day_of_workers_naming_random_replicas_stays_bounded_and_forgets() {
        let mut replicas = Replicas::default();
        let t0 = Instant::now();
        let mut rng = fastrand::Rng::with_seed(1);
        // A worker a second names a replica, from a pool far larger than the bound.
        for second in 0..86_400u64 {
            let n = rng.u64(..500);
            let now = t0 + Duration::from_secs(second);
            replicas.named(
                &format!("http://10.42.{}.{}:8080", n / 250, n % 250),
                Some(Duration::ZERO),
                now,
            );
            replicas.expire(now);
            assert!(replicas.len() <= MAX);
        }
        // Named ones stay; after an hour of silence none is left.
        replicas.named(
            "http://10.42.9.9:8080",
            None,
            t0 + Duration::from_secs(86_400),
        );
        replicas.expire(t0 + Duration::from_secs(86_400) + FORGET);
        assert_eq!(replicas.len(), 1);
        replicas.expire(t0 + Duration::from_secs(86_401) + FORGET);
        assert!(replicas.is_empty());
    }
}
