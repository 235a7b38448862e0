//! The services this machine can run, and running the ones the coordinators assign: a task
//! that owns the [`supervisor::Supervisor`] core, takes each coordinator's assignment from the
//! worker tasks ([`crate::worker`]), runs the union of them through [`runner`], and publishes
//! where each service stands for the heartbeats.
//!
//! While routerd replicas disagree, the machine runs every service any of them assigns. An
//! assignment counts while its coordinator has answered within [`HOLD`]; when none has, the
//! last ones stand (a coordinator outage does not stop what serves).

pub mod runner;
pub mod spec;
pub mod supervisor;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use rma_proto::load::{ServiceState, ServiceStatus};
use tokio::sync::{mpsc, oneshot, watch};

use self::runner::{Event, Running};
use self::spec::{LocalService, Runner};
use self::supervisor::{Action, Generation, Supervisor};

/// A coordinator's assignment counts this long after its last answer, while another has
/// answered since.
pub const HOLD: Duration = Duration::from_secs(30);

/// What the worker tasks and the shell tell the platform.
#[derive(Debug)]
enum Command {
    Assigned {
        coordinator: String,
        services: Vec<String>,
    },
    Reconfigure(Vec<LocalService>, BTreeSet<String>),
    Shutdown(oneshot::Sender<()>),
}

/// The handle the shell and the worker tasks hold.
#[derive(Debug, Clone)]
pub struct Platform {
    commands: mpsc::Sender<Command>,
    statuses: watch::Receiver<Vec<ServiceStatus>>,
    /// Each service's state alone: it changes far less often than the load figures.
    states: watch::Receiver<Vec<(String, ServiceState)>>,
}

/// Where the platform publishes the statuses, and the states alone.
type Publish = (
    watch::Sender<Vec<ServiceStatus>>,
    watch::Sender<Vec<(String, ServiceState)>>,
);

fn states_of(statuses: &[ServiceStatus]) -> Vec<(String, ServiceState)> {
    statuses.iter().map(|s| (s.name.clone(), s.state)).collect()
}

/// Each coordinator's latest assignment, and when it came.
#[derive(Debug, Default)]
pub struct Assignments {
    by_coordinator: BTreeMap<String, (BTreeSet<String>, Instant)>,
}

impl Assignments {
    pub fn set(&mut self, coordinator: &str, services: Vec<String>, now: Instant) {
        self.by_coordinator.insert(
            coordinator.to_owned(),
            (services.into_iter().collect(), now),
        );
    }

    /// Forgets coordinators no longer configured.
    pub fn retain(&mut self, coordinators: &BTreeSet<String>) {
        self.by_coordinator.retain(|c, _| coordinators.contains(c));
    }

    /// What to run: the union of the fresh assignments, or of all of them if none is fresh.
    pub fn union(&self, now: Instant) -> BTreeSet<String> {
        let fresh = |at: &Instant| now.saturating_duration_since(*at) <= HOLD;
        let any_fresh = self.by_coordinator.values().any(|(_, at)| fresh(at));
        self.by_coordinator
            .values()
            .filter(|(_, at)| !any_fresh || fresh(at))
            .flat_map(|(services, _)| services.iter().cloned())
            .collect()
    }

    /// When an assignment next stops counting.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let any_fresh = self
            .by_coordinator
            .values()
            .any(|(_, at)| now.saturating_duration_since(*at) <= HOLD);
        if !any_fresh {
            return None;
        }
        self.by_coordinator
            .values()
            .map(|(_, at)| *at + HOLD + Duration::from_millis(1))
            .filter(|t| *t > now)
            .min()
    }
}

impl Platform {
    /// Starts the platform's task for `services`, on the mesh IP.
    pub fn start(services: Vec<LocalService>, mesh_ip: Ipv4Addr) -> Self {
        let (commands, rx) = mpsc::channel(16);
        let initial = Supervisor::new(services.clone(), Instant::now());
        let (status_tx, statuses) = watch::channel(initial.statuses());
        let (states_tx, states) = watch::channel(states_of(&initial.statuses()));
        tokio::spawn(async move {
            runner::stop_leftover_units(&services).await;
            run(initial, mesh_ip, rx, (status_tx, states_tx)).await;
        });
        Self {
            commands,
            statuses,
            states,
        }
    }

    /// A coordinator's assignment (from its registration's or heartbeat's answer).
    pub async fn assigned(&self, coordinator: &str, services: Vec<String>) {
        let _ = self
            .commands
            .send(Command::Assigned {
                coordinator: coordinator.to_owned(),
                services,
            })
            .await;
    }

    /// The services and coordinator URLs as a reload now reads them: what a coordinator no
    /// longer named assigned stops counting; the others' assignments stand until they answer
    /// again, so that a reload restarts nothing it did not change.
    pub async fn reconfigure(&self, services: Vec<LocalService>, coordinators: BTreeSet<String>) {
        let _ = self
            .commands
            .send(Command::Reconfigure(services, coordinators))
            .await;
    }

    /// As [`Self::reconfigure`], from synchronous code on the runtime (a reload): sent from a
    /// task of its own, so that a full queue delays it rather than losing it.
    pub fn reconfigure_now(&self, services: Vec<LocalService>, coordinators: BTreeSet<String>) {
        let platform = self.clone();
        tokio::spawn(async move { platform.reconfigure(services, coordinators).await });
    }

    /// Where each service stands, with the load its health endpoint reports.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.statuses.borrow().clone()
    }

    /// Each service's state; `changed()` wakes when one changes.
    pub fn states(&self) -> watch::Receiver<Vec<(String, ServiceState)>> {
        self.states.clone()
    }

    /// Stops every service it runs (SIGTERM, then SIGKILL after its grace) and ends.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn run(
    mut supervisor: Supervisor,
    mesh_ip: Ipv4Addr,
    mut commands: mpsc::Receiver<Command>,
    (statuses, states): Publish,
) {
    let (events_tx, mut events) = mpsc::unbounded_channel::<Event>();
    let mut running: BTreeMap<String, (Generation, Running)> = BTreeMap::new();
    let mut assignments = Assignments::default();
    let mut stopping: Option<oneshot::Sender<()>> = None;
    loop {
        let now = Instant::now();
        if stopping.is_none() {
            supervisor.want(&assignments.union(now));
        }
        for action in supervisor.poll(now) {
            act(
                &mut supervisor,
                &mut running,
                action,
                mesh_ip,
                &events_tx,
                now,
            );
        }
        let now_statuses = supervisor.statuses();
        states.send_if_modified(|held| {
            let new = states_of(&now_statuses);
            let changed = *held != new;
            *held = new;
            changed
        });
        statuses.send_replace(now_statuses);
        if stopping.is_some() && supervisor.all_stopped() {
            break;
        }
        let wake = [supervisor.next_wake(now), assignments.next_change(now)]
            .into_iter()
            .flatten()
            .min();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Assigned { coordinator, services }) => {
                    assignments.set(&coordinator, services, Instant::now());
                }
                Some(Command::Reconfigure(services, coordinators)) => {
                    supervisor.reconfigure(services, Instant::now());
                    assignments.retain(&coordinators);
                }
                Some(Command::Shutdown(done)) => {
                    supervisor.want(&BTreeSet::new());
                    stopping = Some(done);
                }
                None => {
                    supervisor.want(&BTreeSet::new());
                    stopping.get_or_insert_with(|| oneshot::channel().0);
                }
            },
            Some(event) = events.recv() => {
                let now = Instant::now();
                // An event of an earlier start leaves the current one's handle alone.
                let mut forget = |name: &str, generation| {
                    if running.get(name).is_some_and(|(g, _)| *g == generation) {
                        running.remove(name);
                    }
                };
                match event {
                    Event::StartFailed(name, generation, why) => {
                        tracing::warn!(service = %name, error = %why, "service could not start");
                        forget(&name, generation);
                        supervisor.start_failed(&name, generation, why, now);
                    }
                    Event::Exited(name, generation, how) => {
                        forget(&name, generation);
                        tracing::info!(service = %name, %how, "service ended");
                        supervisor.exited(&name, generation, how, now);
                    }
                    Event::Probed(name, generation, body) => {
                        supervisor.probed(&name, generation, body.as_deref(), now);
                    }
                }
            }
            () = sleep => {}
        }
    }
    if let Some(done) = stopping {
        let _ = done.send(());
    }
}

fn act(
    supervisor: &mut Supervisor,
    running: &mut BTreeMap<String, (Generation, Running)>,
    action: Action,
    mesh_ip: Ipv4Addr,
    events: &mpsc::UnboundedSender<Event>,
    now: Instant,
) {
    match action {
        Action::Start(name, generation) => {
            let Some(spec) = supervisor.spec(&name).cloned() else {
                return;
            };
            match runner::start(&spec, generation, mesh_ip, events) {
                Ok(Some(started)) => {
                    running.insert(name, (generation, started));
                }
                Ok(None) => {}
                Err(why) => {
                    tracing::warn!(service = %name, error = %why, "service could not start");
                    supervisor.start_failed(&name, generation, why, now);
                }
            }
        }
        Action::Stop(name) | Action::Kill(name) if !running.contains_key(&name) => {
            // Nothing of it runs (a unit whose start failed, say): it has stopped.
            if let Some(generation) = supervisor.generation(&name) {
                supervisor.exited(&name, generation, "not running".into(), now);
            }
        }
        Action::Stop(name) => {
            tracing::info!(service = %name, "stopping service");
            stop(supervisor, running, &name, events, false);
        }
        Action::Kill(name) => {
            tracing::warn!(service = %name, "service outlived its stop grace period; killing it");
            stop(supervisor, running, &name, events, true);
        }
        Action::Probe(name, generation) => {
            if let Some(spec) = supervisor.spec(&name) {
                runner::probe(spec, generation, mesh_ip, events);
            }
        }
    }
}

fn stop(
    supervisor: &Supervisor,
    running: &mut BTreeMap<String, (Generation, Running)>,
    name: &str,
    events: &mpsc::UnboundedSender<Event>,
    kill: bool,
) {
    match (running.get(name), supervisor.spec(name).map(|s| &s.runner)) {
        (Some((_, Running::Unit(_))), Some(Runner::Unit(unit))) if kill => runner::kill_unit(unit),
        (Some((generation, Running::Unit(watcher))), Some(Runner::Unit(unit))) => {
            watcher.abort();
            runner::stop_unit(name, *generation, unit, events);
        }
        (Some((_, process)), _) => {
            let signal = if kill {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            };
            runner::signal(name, process, signal);
        }
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_union_holds_fresh_assignments_and_the_last_ones_when_none_is_fresh() {
        let t0 = Instant::now();
        let mut a = Assignments::default();
        assert!(a.union(t0).is_empty());
        a.set("r1", vec!["ocr".into(), "rag".into()], t0);
        a.set(
            "r2",
            vec!["rag".into(), "ner".into()],
            t0 + Duration::from_secs(10),
        );
        let names = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
        assert_eq!(
            names(a.union(t0 + Duration::from_secs(10))),
            ["ner", "ocr", "rag"]
        );
        // r1 falls silent: its assignment stops counting once r2 is fresher by HOLD.
        let later = t0 + HOLD + Duration::from_secs(1);
        assert_eq!(
            a.next_change(t0 + Duration::from_secs(10)),
            Some(t0 + HOLD + Duration::from_millis(1))
        );
        assert_eq!(names(a.union(later)), ["ner", "rag"]);
        // Both silent: the last of each stands.
        let much_later = later + HOLD * 10;
        assert_eq!(names(a.union(much_later)), ["ner", "ocr", "rag"]);
        assert_eq!(a.next_change(much_later), None);
        a.retain(&["r2".to_owned()].into_iter().collect());
        assert_eq!(names(a.union(much_later)), ["ner", "rag"]);
    }
}
