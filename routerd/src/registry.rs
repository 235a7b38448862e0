//! The worker registry: who is registered, what each can run and runs, who is stale, and
//! which services lack workers. Pure logic with time passed in; the daemon persists it in
//! [`crate::store`] and serves it over HTTP.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::assign::WorkerView;
use crate::catalog::{Catalog, Tier};
use crate::replicas::Replicas;
use crate::routes::{Candidate, Route, Routes};

/// How often workers heartbeat, and how long a silent worker stays registered. A heartbeat's
/// answer is how a worker learns a new assignment, so the interval bounds how long a
/// service whose worker left waits for its new one to hear of it.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(2);
pub const TTL: Duration = Duration::from_secs(15);
/// How long a new assignment is held while its worker still reports the service stopped.
pub const START_GRACE: Duration = Duration::from_secs(10);

pub use rma_proto::load::{MachineLoad, ServiceState, ServiceStatus};
/// What a worker's machine has, and a service it offers: the registration contract's types.
pub use rma_proto::registration::{Capabilities, RefusedService, Service as Offered};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Worker {
    /// The node name in the worker's certificate.
    pub name: String,
    pub mesh_ip: Ipv4Addr,
    pub capabilities: Capabilities,
    /// The offered services registration accepted.
    pub offered: Vec<Offered>,
    /// Services the coordinator asked this worker to run (see [`crate::assign`]).
    pub assigned: Vec<String>,
    /// Offered services registration refused, with why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedService>,
    /// Where each offered service stands, as the worker last reported it.
    #[serde(default)]
    pub states: Vec<ServiceStatus>,
    /// The machine's load from its last heartbeat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<MachineLoad>,
}

impl Worker {
    /// Where `service` stands on this worker. A service the worker reports nothing about is
    /// run by its operator: what a meshd from before service states meant by offering it.
    pub fn state(&self, service: &str) -> ServiceState {
        self.status(service)
            .map_or(ServiceState::External, |s| s.state)
    }

    pub fn status(&self, service: &str) -> Option<&ServiceStatus> {
        self.states.iter().find(|s| s.name == service)
    }
}

/// What a heartbeat reports besides being alive.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub load: Option<MachineLoad>,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("worker {0:?} is not registered")]
    NotRegistered(String),
    #[error("worker {name:?} has a registration signed at or after this one's time; a replay?")]
    Replayed { name: String },
    #[error("the heartbeat's session is not worker {0:?}'s registration; register again")]
    WrongSession(String),
}

/// The secret a registration's answer gives the worker, which its heartbeats carry: it binds
/// them to that registration (and so to the key that signed it).
pub type SessionToken = [u8; 16];

/// What a registration proved: when its signature was made, and the session it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proof {
    pub signed_at_ms: u64,
    pub session: SessionToken,
}

/// Where one worker serves one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub service: String,
    pub worker: String,
    pub addr: std::net::SocketAddr,
    pub health: String,
}

/// A service with fewer workers than its target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    pub service: String,
    pub tier: Tier,
    /// Workers serving it (assigned, running, and reported so).
    pub have: u32,
    /// Workers assigned it, those still starting included.
    pub assigned: u32,
    pub want: u32,
}

#[derive(Debug)]
struct Entry {
    worker: Worker,
    last_seen: Instant,
    /// When each of its assignments was made: one its worker has not yet reported starting
    /// is held for [`START_GRACE`], so that workers registering together do not take each
    /// other's new assignments before they can report them.
    assigned_at: BTreeMap<String, Instant>,
    /// The proof of the registration in force; none for a worker restored from the store,
    /// whose heartbeats are refused until it registers again.
    proof: Option<Proof>,
}

#[derive(Debug)]
pub struct Registry {
    catalog: Catalog,
    workers: BTreeMap<String, Entry>,
    /// Rebuilt whenever `workers` changes, except for heartbeats.
    routes: Routes,
    /// The routerd replicas the workers name.
    replicas: Replicas,
    /// When the first assignment held by [`START_GRACE`] stops being held.
    held_until: Option<Instant>,
    /// Workers whose assignment or reported states changed since [`Self::take_changed`]:
    /// what the store must write again, so that a restarted routerd starts from them.
    changed: std::collections::BTreeSet<String>,
}

impl Registry {
    pub fn new(catalog: Catalog) -> Self {
        let mut registry = Self {
            catalog,
            workers: BTreeMap::new(),
            routes: Routes::default(),
            replicas: Replicas::default(),
            held_until: None,
            changed: std::collections::BTreeSet::new(),
        };
        registry.routes = Routes::build(&registry);
        registry
    }

    /// The route for `name` (a service or an alias); `None` for a service not in the catalog.
    pub fn route(&self, name: &str) -> Option<Arc<Route>> {
        let service = self.catalog.resolve(name)?;
        self.routes.get(service).cloned()
    }

    /// The workers the registry has for `service`, with their addresses.
    pub fn candidates(&self, service: &str) -> Vec<Candidate> {
        self.route(service)
            .map(|route| route.workers.clone())
            .unwrap_or_default()
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The routerd replicas the workers name ([`Replicas`]).
    pub fn replicas(&self) -> &Replicas {
        &self.replicas
    }

    pub fn replicas_mut(&mut self) -> &mut Replicas {
        &mut self.replicas
    }

    /// Registers (or re-registers) a worker whose identity the caller has checked. Each offered
    /// service that is not in the catalog, is listed twice or that the worker cannot run is
    /// refused alone, with why; then every worker's assignment is worked out again.
    #[allow(clippy::too_many_arguments)] // one registration's parts, each checked by the caller
    pub fn register(
        &mut self,
        name: &str,
        mesh_ip: Ipv4Addr,
        capabilities: Capabilities,
        offered: Vec<Offered>,
        states: Vec<ServiceStatus>,
        proof: Proof,
        now: Instant,
    ) -> Result<&Worker, RegistryError> {
        let replayed = self
            .workers
            .get(name)
            .and_then(|e| e.proof)
            .is_some_and(|p| p.signed_at_ms >= proof.signed_at_ms);
        if replayed {
            return Err(RegistryError::Replayed {
                name: name.to_owned(),
            });
        }
        let mut accepted: Vec<Offered> = Vec::new();
        let mut refused = Vec::new();
        for service in offered {
            let refuse = |reason: String| RefusedService {
                name: service.name.clone(),
                reason,
            };
            match self.catalog.get(&service.name) {
                None => refused.push(refuse("it is not in the catalog".into())),
                Some(_) if accepted.iter().any(|o| o.name == service.name) => {
                    refused.push(refuse("it is listed twice".into()));
                }
                Some(spec) => match crate::assign::unfit(spec, &capabilities) {
                    Some(reason) => refused.push(refuse(reason)),
                    None => accepted.push(service),
                },
            }
        }
        let states = states
            .into_iter()
            .filter(|s| accepted.iter().any(|o| o.name == s.name))
            .collect();
        let worker = Worker {
            name: name.to_owned(),
            mesh_ip,
            capabilities,
            offered: accepted,
            assigned: Vec::new(),
            refused,
            states,
            load: None,
        };
        self.workers.insert(
            name.to_owned(),
            Entry {
                worker,
                last_seen: now,
                proof: Some(proof),
                assigned_at: BTreeMap::new(),
            },
        );
        self.reassign(now);
        Ok(&self.workers[name].worker)
    }

    /// Restores a worker from the store as if it had just heartbeated: after a restart the
    /// registry routes to the workers it knew at once, and drops those that stay silent for
    /// one TTL.
    pub fn restore(&mut self, worker: Worker, now: Instant) {
        self.workers.insert(
            worker.name.clone(),
            Entry {
                worker,
                last_seen: now,
                proof: None,
                assigned_at: BTreeMap::new(),
            },
        );
        self.reassign(now);
    }

    /// A heartbeat from the worker that holds `session`, with what it reports. A change in
    /// where its services stand is worked into the assignment at once; returns what the
    /// worker should run now.
    pub fn heartbeat(
        &mut self,
        name: &str,
        session: &SessionToken,
        report: Report,
        now: Instant,
    ) -> Result<&[String], RegistryError> {
        let entry = self
            .workers
            .get_mut(name)
            .ok_or_else(|| RegistryError::NotRegistered(name.to_owned()))?;
        let bound = entry
            .proof
            .is_some_and(|p| crate::secrets::constant_time_eq(&p.session, session));
        if !bound {
            return Err(RegistryError::WrongSession(name.to_owned()));
        }
        entry.last_seen = now;
        let worker = &mut entry.worker;
        if let Some(free) = report.load.as_ref().and_then(|l| l.free_disk_bytes) {
            worker.capabilities.free_disk = rma_proto::load::gib(free);
        }
        if report.load.is_some() {
            worker.load = report.load;
        }
        let mut changed = false;
        for status in report.services {
            let Some(offered) = worker.offered.iter().find(|o| o.name == status.name) else {
                continue;
            };
            let before = worker.state(&offered.name);
            changed |= before != status.state;
            match worker.states.iter_mut().find(|s| s.name == status.name) {
                Some(held) => *held = status,
                None => worker.states.push(status),
            }
        }
        if changed {
            self.changed.insert(name.to_owned());
            self.reassign(now);
        }
        Ok(&self.workers[name].worker.assigned)
    }

    /// Whether [`Self::take_changed`] has anything.
    pub fn has_changed(&self) -> bool {
        !self.changed.is_empty()
    }

    /// The workers whose assignment or reported states changed since the last call (those
    /// still registered), for the store.
    pub fn take_changed(&mut self) -> Vec<Worker> {
        let names = std::mem::take(&mut self.changed);
        names
            .iter()
            .filter_map(|n| self.workers.get(n).map(|e| e.worker.clone()))
            .collect()
    }

    /// Works out every worker's assignment again ([`crate::assign`]) and the routes with it.
    fn reassign(&mut self, now: Instant) {
        let states: Vec<_> = self
            .workers
            .values()
            .map(|e| {
                move |service: &str| match e.worker.state(service) {
                    ServiceState::Stopped
                        if e.assigned_at
                            .get(service)
                            .is_some_and(|t| now.saturating_duration_since(*t) < START_GRACE) =>
                    {
                        ServiceState::Starting
                    }
                    state => state,
                }
            })
            .collect();
        let offers: Vec<Vec<String>> = self
            .workers
            .values()
            .map(|e| e.worker.offered.iter().map(|o| o.name.clone()).collect())
            .collect();
        let views: Vec<WorkerView<'_>> = self
            .workers
            .values()
            .zip(&states)
            .zip(&offers)
            .map(|((e, state), offers)| WorkerView {
                name: &e.worker.name,
                capabilities: &e.worker.capabilities,
                offers,
                state,
            })
            .collect();
        let assigned = crate::assign::assign(&self.catalog, &views);
        drop(views);
        let mut held_until: Option<Instant> = None;
        for (entry, assigned) in self.workers.values_mut().zip(assigned) {
            if entry.worker.assigned != assigned {
                self.changed.insert(entry.worker.name.clone());
            }
            entry.assigned_at.retain(|s, _| assigned.contains(s));
            for service in &assigned {
                let at = *entry.assigned_at.entry(service.clone()).or_insert(now);
                let ends = at + START_GRACE;
                if ends > now && entry.worker.state(service) == ServiceState::Stopped {
                    held_until = Some(held_until.map_or(ends, |h| h.min(ends)));
                }
            }
            entry.worker.assigned = assigned;
        }
        self.held_until = held_until;
        self.routes = Routes::build(self);
    }

    /// Removes workers silent for longer than [`TTL`]; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let stale: Vec<String> = self
            .workers
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.last_seen) > TTL)
            .map(|(name, _)| name.clone())
            .collect();
        for name in &stale {
            self.workers.remove(name);
        }
        self.replicas.expire(now);
        let grace_over = self.held_until.is_some_and(|t| t <= now);
        if !stale.is_empty() || grace_over {
            self.reassign(now);
        }
        stale
    }

    /// The earliest moment a worker goes stale.
    /// (Or the end of a new assignment's [`START_GRACE`], when [`Self::expire`] works the
    /// assignment out again.)
    pub fn next_expiry(&self) -> Option<Instant> {
        let expiry = self.workers.values().map(|e| e.last_seen + TTL).min();
        [expiry, self.held_until].into_iter().flatten().min()
    }

    pub fn get(&self, name: &str) -> Option<&Worker> {
        self.workers.get(name).map(|e| &e.worker)
    }

    /// Seconds since the worker's last registration or heartbeat.
    pub fn age(&self, name: &str, now: Instant) -> Option<Duration> {
        self.workers
            .get(name)
            .map(|e| now.saturating_duration_since(e.last_seen))
    }

    /// Every registered worker, by name.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values().map(|e| &e.worker)
    }

    /// Workers assigned `service` (a canonical name), by name, with the port it listens on.
    pub fn serving(&self, service: &str) -> Vec<(&Worker, &Offered)> {
        self.workers
            .values()
            .filter_map(|e| {
                let offered = e.worker.offered.iter().find(|o| o.name == service)?;
                let assigned = e.worker.assigned.iter().any(|a| a == service);
                (assigned && e.worker.state(service).serves()).then_some((&e.worker, offered))
            })
            .collect()
    }

    /// Every (service, worker, address, health path) that calls can go to.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.workers
            .values()
            .flat_map(|e| {
                let w = &e.worker;
                w.offered
                    .iter()
                    .filter(|o| w.assigned.contains(&o.name) && w.state(&o.name).serves())
                    .map(|o| Endpoint {
                        service: o.name.clone(),
                        worker: w.name.clone(),
                        addr: (w.mesh_ip, o.port).into(),
                        health: o.health.clone(),
                    })
            })
            .collect()
    }

    /// Services with fewer workers serving them than their replica target, in catalog order.
    pub fn gaps(&self) -> Vec<Gap> {
        self.catalog
            .iter()
            .filter_map(|(name, spec)| {
                let have = self.serving(name).len() as u32;
                let assigned = self
                    .workers
                    .values()
                    .filter(|e| e.worker.assigned.iter().any(|a| a == name))
                    .count() as u32;
                (have < spec.replicas).then(|| Gap {
                    service: name.to_owned(),
                    tier: spec.tier,
                    have,
                    assigned,
                    want: spec.replicas,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assign::score;

    fn caps(gpu: bool) -> Capabilities {
        Capabilities {
            cpu_cores: 8,
            ram: "16 GiB".into(),
            has_gpu: gpu,
            gpu_memory: gpu.then(|| "24 GiB".into()),
            free_disk: "100 GiB".into(),
            worker_type: if gpu { "gpu" } else { "cpu" }.into(),
        }
    }

    /// A registration's proof signed at `ms`, with a session token made from it.
    fn proof(ms: u64) -> Proof {
        Proof {
            signed_at_ms: ms,
            session: [ms as u8; 16],
        }
    }

    fn offer(name: &str, port: u16) -> Offered {
        Offered {
            name: name.into(),
            port,
            health: "/health".into(),
        }
    }

    #[test]
    fn a_lone_worker_is_assigned_what_it_offers_and_closes_gaps() {
        let mut registry = Registry::new(Catalog::default());
        let t0 = Instant::now();
        assert_eq!(registry.gaps().len(), 6);
        let worker = registry
            .register(
                "w1",
                Ipv4Addr::new(10, 42, 0, 11),
                caps(false),
                vec![offer("rag-embeddings", 8101), offer("notes-coa", 8102)],
                vec![],
                proof(1),
                t0,
            )
            .unwrap();
        assert_eq!(
            worker.assigned,
            ["notes-coa", "rag-embeddings"],
            "in catalog order"
        );
        let gaps: Vec<_> = registry.gaps().into_iter().map(|g| g.service).collect();
        assert_eq!(
            gaps,
            [
                "document-processing",
                "llm-inference",
                "ner-extraction",
                "vision-ocr"
            ]
        );
        let serving = registry.serving("rag-embeddings");
        assert_eq!(serving.len(), 1);
        assert_eq!(serving[0].1.port, 8101);
    }

    #[test]
    fn an_unknown_unfit_or_repeated_service_is_refused_alone_with_why() {
        let mut registry = Registry::new(Catalog::default());
        let now = Instant::now();
        let ip = Ipv4Addr::new(10, 42, 0, 12);
        let worker = registry
            .register(
                "w",
                ip,
                caps(false),
                vec![
                    offer("llm-inference", 1),
                    offer("mining", 2),
                    offer("rag-embeddings", 3),
                    offer("rag-embeddings", 4),
                ],
                vec![],
                proof(1),
                now,
            )
            .unwrap();
        let refused: Vec<(&str, &str)> = worker
            .refused
            .iter()
            .map(|r| (r.name.as_str(), r.reason.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                (
                    "llm-inference",
                    "it needs a GPU, and this worker reports none"
                ),
                ("mining", "it is not in the catalog"),
                ("rag-embeddings", "it is listed twice"),
            ]
        );
        assert_eq!(worker.offered.len(), 1);
        assert_eq!(worker.offered[0].port, 3, "the first listing stands");
        assert_eq!(worker.assigned, ["rag-embeddings"]);
        registry
            .register(
                "w",
                ip,
                caps(true),
                vec![offer("llm-inference", 1)],
                vec![],
                proof(2),
                now,
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(registry.serving("llm-inference").len(), 1);
    }

    fn status(name: &str, state: ServiceState) -> ServiceStatus {
        ServiceStatus::new(name, state)
    }

    #[test]
    fn reported_states_decide_routing_and_a_failure_moves_the_assignment_at_once() {
        let mut registry = Registry::new(Catalog::default());
        let t0 = Instant::now();
        let states = |s| vec![status("rag-embeddings", s)];
        for (name, n) in [("a", 1u8), ("b", 2)] {
            registry
                .register(
                    name,
                    Ipv4Addr::new(10, 42, 0, n),
                    caps(false),
                    vec![offer("rag-embeddings", 8101)],
                    states(ServiceState::Stopped),
                    proof(u64::from(n)),
                    t0,
                )
                .unwrap();
        }
        // One replica wanted: one of the two is assigned, and routed to only once running.
        let holder = if registry.get("a").unwrap().assigned.is_empty() {
            "b"
        } else {
            "a"
        };
        let other = if holder == "a" { "b" } else { "a" };
        let session = |w: &str| proof(if w == "a" { 1 } else { 2 }).session;
        assert!(registry.serving("rag-embeddings").is_empty());
        let gap = |r: &Registry| {
            let g = r.gaps().into_iter().find(|g| g.service == "rag-embeddings");
            g.map(|g| (g.have, g.assigned))
        };
        assert_eq!(gap(&registry), Some((0, 1)), "assigned, not yet serving");
        let beat = |registry: &mut Registry, w: &str, s| {
            let report = Report {
                load: None,
                services: states(s),
            };
            registry
                .heartbeat(w, &session(w), report, t0)
                .unwrap()
                .to_vec()
        };
        assert_eq!(
            beat(&mut registry, holder, ServiceState::Starting),
            ["rag-embeddings"]
        );
        assert!(
            registry.serving("rag-embeddings").is_empty(),
            "starting is not served"
        );
        beat(&mut registry, holder, ServiceState::Running);
        assert_eq!(registry.serving("rag-embeddings")[0].0.name, holder);
        assert_eq!(gap(&registry), None);
        assert!(registry.route("rag").unwrap().workers.len() == 1);
        // It fails: the other worker is assigned at once, and the failed one is not routed to.
        beat(&mut registry, holder, ServiceState::Failed);
        assert!(registry.serving("rag-embeddings").is_empty());
        assert_eq!(registry.get(other).unwrap().assigned, ["rag-embeddings"]);
        assert!(registry.get(holder).unwrap().assigned.is_empty());
        // The worker that has it dies: the failed one, the only one left, gets it back.
        registry
            .heartbeat(holder, &session(holder), Report::default(), t0 + TTL)
            .unwrap();
        assert_eq!(
            registry.expire(t0 + TTL + Duration::from_millis(1)),
            [other]
        );
        assert_eq!(registry.get(holder).unwrap().assigned, ["rag-embeddings"]);
    }

    #[test]
    fn a_new_assignment_is_held_while_its_worker_starts_it_and_not_forever() {
        let mut registry = Registry::new(Catalog::default());
        let t0 = Instant::now();
        let stopped = || vec![status("notes-coa", ServiceState::Stopped)];
        let register = |r: &mut Registry, name: &str, n: u8, at: Instant| {
            r.register(
                name,
                Ipv4Addr::new(10, 42, 0, n),
                caps(false),
                vec![offer("notes-coa", 8103)],
                stopped(),
                proof(u64::from(n)),
                at,
            )
            .unwrap()
            .assigned
            .clone()
        };
        assert_eq!(register(&mut registry, "a", 1, t0), ["notes-coa"]);
        // b joins before a could say it is starting: a keeps it (b would outscore it or not).
        register(&mut registry, "b", 2, t0 + Duration::from_millis(100));
        assert_eq!(registry.get("a").unwrap().assigned, ["notes-coa"]);
        assert!(registry.get("b").unwrap().assigned.is_empty());
        // a never starts it: once the grace is over, the assignment is worked out afresh,
        // as it would have been had a's report come in time.
        let ends = t0 + START_GRACE;
        assert_eq!(registry.next_expiry(), Some(ends));
        let beat = || Report {
            load: None,
            services: stopped(),
        };
        registry
            .heartbeat("a", &proof(1).session, beat(), ends)
            .unwrap();
        registry
            .heartbeat("b", &proof(2).session, beat(), ends)
            .unwrap();
        assert!(registry.expire(ends).is_empty());
        let holder = if score("notes-coa", "a") > score("notes-coa", "b") {
            "a"
        } else {
            "b"
        };
        assert_eq!(registry.get(holder).unwrap().assigned, ["notes-coa"]);
        // a's assignment is no longer held; if b took it, b's new one is, from now.
        let held = if holder == "b" {
            ends + START_GRACE
        } else {
            ends + TTL
        };
        assert_eq!(registry.next_expiry(), Some(held));
    }

    #[test]
    fn silent_workers_expire_after_the_ttl_and_heartbeats_keep_them() {
        let mut registry = Registry::new(Catalog::default());
        let t0 = Instant::now();
        for (name, n) in [("a", 1), ("b", 2)] {
            registry
                .register(
                    name,
                    Ipv4Addr::new(10, 42, 0, n),
                    caps(false),
                    vec![offer("rag-embeddings", 8101)],
                    vec![],
                    proof(u64::from(n)),
                    t0,
                )
                .unwrap();
        }
        assert_eq!(registry.next_expiry(), Some(t0 + TTL));
        registry
            .heartbeat(
                "a",
                &proof(1).session,
                Report::default(),
                t0 + Duration::from_secs(10),
            )
            .unwrap();
        assert!(
            registry.expire(t0 + TTL).is_empty(),
            "exactly the TTL is not stale yet"
        );
        assert_eq!(registry.expire(t0 + TTL + Duration::from_millis(1)), ["b"]);
        assert_eq!(registry.serving("rag-embeddings").len(), 1);
        assert_eq!(
            registry.heartbeat("b", &proof(2).session, Report::default(), t0 + TTL),
            Err(RegistryError::NotRegistered("b".into()))
        );
        assert_eq!(
            registry.age("a", t0 + Duration::from_secs(12)),
            Some(Duration::from_secs(2))
        );
    }

    #[test]
    fn heartbeats_need_the_registrations_session_and_old_registrations_are_refused() {
        let mut registry = Registry::new(Catalog::default());
        let t0 = Instant::now();
        let ip = Ipv4Addr::new(10, 42, 0, 7);
        let offered = || vec![offer("rag-embeddings", 8101)];
        registry
            .register("w", ip, caps(false), offered(), vec![], proof(100), t0)
            .unwrap();
        assert_eq!(
            registry.heartbeat("w", &proof(99).session, Report::default(), t0),
            Err(RegistryError::WrongSession("w".into()))
        );
        registry
            .heartbeat("w", &proof(100).session, Report::default(), t0)
            .unwrap();
        // The same signed registration again (a replay), or an older one, changes nothing.
        for old in [100, 50] {
            assert_eq!(
                registry
                    .register("w", ip, caps(false), vec![], vec![], proof(old), t0)
                    .unwrap_err(),
                RegistryError::Replayed { name: "w".into() }
            );
        }
        assert_eq!(registry.serving("rag-embeddings").len(), 1);
        // A newer one replaces it, and only its session heartbeats from then on.
        registry
            .register("w", ip, caps(false), offered(), vec![], proof(101), t0)
            .unwrap();
        assert!(
            registry
                .heartbeat("w", &proof(100).session, Report::default(), t0)
                .is_err()
        );
        registry
            .heartbeat("w", &proof(101).session, Report::default(), t0)
            .unwrap();
        // A worker restored from the store has no session until it registers again.
        let restored = registry.get("w").unwrap().clone();
        let mut warm = Registry::new(Catalog::default());
        warm.restore(restored, t0);
        assert_eq!(
            warm.heartbeat("w", &proof(101).session, Report::default(), t0),
            Err(RegistryError::WrongSession("w".into()))
        );
        warm.register("w", ip, caps(false), offered(), vec![], proof(102), t0)
            .unwrap();
        warm.heartbeat("w", &proof(102).session, Report::default(), t0)
            .unwrap();
    }

    #[test]
    fn restored_workers_route_at_once_and_go_if_they_stay_silent() {
        let mut registry = Registry::new(Catalog::default());
        let t0 = Instant::now();
        let worker = Worker {
            name: "w".into(),
            mesh_ip: Ipv4Addr::new(10, 42, 0, 9),
            capabilities: caps(false),
            offered: vec![offer("ner-extraction", 8104)],
            assigned: vec!["ner-extraction".into()],
            refused: Vec::new(),
            states: Vec::new(),
            load: None,
        };
        registry.restore(worker, t0);
        assert_eq!(registry.serving("ner-extraction").len(), 1);
        assert_eq!(registry.expire(t0 + TTL + Duration::from_secs(1)), ["w"]);
    }

    /// The names of the workers the route for `name` sends calls to.
    fn routed(registry: &Registry, name: &str) -> Vec<String> {
        let route = registry.route(name).expect("a catalog service");
        route.workers.iter().map(|c| c.worker.to_string()).collect()
    }

    #[test]
    fn routes_follow_registrations_restores_and_expiries() {
        // Two replicas of rag-embeddings wanted, so that both workers serve it.
        let catalog = Catalog::new(Catalog::default().iter().map(|(name, spec)| {
            let mut spec = spec.clone();
            if name == "rag-embeddings" {
                spec.replicas = 2;
            }
            (name.to_owned(), spec)
        }));
        let mut registry = Registry::new(catalog);
        let t0 = Instant::now();
        assert!(registry.route("nope").is_none(), "not in the catalog");
        assert!(routed(&registry, "rag").is_empty());
        registry
            .register(
                "a",
                Ipv4Addr::new(10, 42, 0, 11),
                caps(false),
                vec![offer("rag-embeddings", 8101)],
                vec![],
                proof(1),
                t0,
            )
            .unwrap();
        let route = registry.route("rag").unwrap();
        assert_eq!(route.service, "rag-embeddings");
        assert_eq!(route.workers[0].addr.to_string(), "10.42.0.11:8101");
        assert_eq!(route.workers[0].host, "10.42.0.11:8101");
        assert_eq!(routed(&registry, "rag-embeddings"), ["a"]);

        let later = t0 + Duration::from_secs(10);
        registry.restore(
            Worker {
                name: "b".into(),
                mesh_ip: Ipv4Addr::new(10, 42, 0, 12),
                capabilities: caps(false),
                offered: vec![offer("rag-embeddings", 8101)],
                assigned: vec!["rag-embeddings".into()],
                refused: Vec::new(),
                states: Vec::new(),
                load: None,
            },
            later,
        );
        assert_eq!(routed(&registry, "rag"), ["a", "b"]);
        // A re-registration that no longer offers the service leaves its route.
        registry
            .register(
                "a",
                Ipv4Addr::new(10, 42, 0, 11),
                caps(false),
                vec![offer("notes-coa", 8102)],
                vec![],
                proof(2),
                later,
            )
            .unwrap();
        assert_eq!(routed(&registry, "rag"), ["b"]);
        assert_eq!(routed(&registry, "notes"), ["a"]);
        assert_eq!(
            route.workers.len(),
            1,
            "a route taken before a change stays as it was"
        );
        registry.expire(later + TTL + Duration::from_secs(1));
        assert!(routed(&registry, "rag").is_empty());
        assert!(routed(&registry, "notes").is_empty());
    }
}
