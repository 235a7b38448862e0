//! The supervisor's core: for each service this machine can run, whether it should run (the
//! union of what the coordinators assign), where it stands, and what to do next: start it,
//! stop it (then kill it after a grace period), probe its health, restart it with backoff
//! when it exits or does not become healthy in time. Pure logic with time passed in; the
//! shell ([`super::runner`]) spawns the processes or drives the units, and feeds back what
//! happened.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rma_proto::load::{ServiceState, ServiceStatus};

use super::spec::LocalService;

/// The first restart waits this long, each next one twice as long, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A service healthy this long has its backoff reset.
pub const STABLE: Duration = Duration::from_secs(60);
/// Health probes: often while a service starts (so it is routed soon), then at this pace.
pub const PROBE_STARTING: Duration = Duration::from_millis(250);
pub const PROBE_RUNNING: Duration = Duration::from_secs(2);

/// Which start of a service an event is about: each start has a new one, and events from an
/// earlier start (an exit reported late, a probe still in flight) are ignored.
pub type Generation = u64;

/// What the shell is asked to do for a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start its process, or `systemctl start` its unit; events about this start carry the
    /// generation.
    Start(String, Generation),
    /// SIGTERM its process group, or `systemctl stop` its unit.
    Stop(String),
    /// SIGKILL its process group: it outlived its grace period.
    Kill(String),
    /// GET its health path.
    Probe(String, Generation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Starting {
        since: Instant,
    },
    Running {
        since: Instant,
    },
    /// Asked to stop; `failed` when it is stopped because it failed (never became healthy).
    Stopping {
        since: Instant,
        killed: bool,
        failed: bool,
    },
    /// It failed; started again at `until` if still wanted.
    Waiting {
        until: Instant,
    },
}

#[derive(Debug)]
struct Slot {
    spec: LocalService,
    /// A new spec (or none: removed) taken once the service has stopped.
    retire: Option<Option<LocalService>>,
    wanted: bool,
    phase: Phase,
    /// Failures since it was last stable, for the backoff.
    failures: u32,
    status: ServiceStatus,
    probing: bool,
    next_probe: Instant,
    generation: Generation,
}

impl Slot {
    fn new(spec: LocalService, now: Instant) -> Self {
        let state = if spec.managed() {
            ServiceState::Stopped
        } else {
            ServiceState::External
        };
        Self {
            status: ServiceStatus::new(spec.name(), state),
            spec,
            retire: None,
            wanted: false,
            phase: Phase::Idle,
            failures: 0,
            probing: false,
            next_probe: now,
            generation: 0,
        }
    }

    /// Starts it (again): a new generation, and the last start's load figures forgotten.
    fn start(&mut self, name: &str, now: Instant, actions: &mut Vec<Action>) {
        self.generation += 1;
        self.phase = Phase::Starting { since: now };
        self.next_probe = now + PROBE_STARTING;
        self.probing = false;
        self.status = ServiceStatus {
            last_exit: self.status.last_exit.take(),
            restarts: self.status.restarts,
            ..ServiceStatus::new(name, ServiceState::Starting)
        };
        actions.push(Action::Start(name.to_owned(), self.generation));
    }

    fn backoff(&self) -> Duration {
        let shift = self.failures.saturating_sub(1).min(16);
        FIRST_BACKOFF.saturating_mul(1 << shift).min(MAX_BACKOFF)
    }

    /// It failed (`how`): wait, then start again.
    fn fail(&mut self, how: String, now: Instant) {
        self.failures = self.failures.saturating_add(1);
        self.status.last_exit = Some(how);
        self.phase = Phase::Waiting {
            until: now + self.backoff(),
        };
    }

    fn probe_due(&self) -> bool {
        match self.phase {
            Phase::Starting { .. } | Phase::Running { .. } => true,
            Phase::Idle => !self.spec.managed() && self.wanted,
            _ => false,
        }
    }

    fn state(&self) -> ServiceState {
        if !self.spec.managed() {
            return ServiceState::External;
        }
        match self.phase {
            Phase::Idle => ServiceState::Stopped,
            Phase::Starting { .. } => ServiceState::Starting,
            Phase::Running { .. } => ServiceState::Running,
            Phase::Stopping { failed: true, .. } | Phase::Waiting { .. } => ServiceState::Failed,
            Phase::Stopping { .. } => ServiceState::Stopped,
        }
    }
}

#[derive(Debug, Default)]
pub struct Supervisor {
    slots: BTreeMap<String, Slot>,
}

impl Supervisor {
    pub fn new(specs: Vec<LocalService>, now: Instant) -> Self {
        let mut supervisor = Self::default();
        supervisor.reconfigure(specs, now);
        supervisor
    }

    /// Takes a new set of services (a reload). A new one is added; one that is gone or
    /// changed is stopped first, then removed or started again as it now reads.
    pub fn reconfigure(&mut self, specs: Vec<LocalService>, now: Instant) {
        let names: BTreeSet<String> = specs.iter().map(|s| s.name().to_owned()).collect();
        for (name, slot) in &mut self.slots {
            if !names.contains(name) {
                slot.retire = Some(None);
            }
        }
        for spec in specs {
            match self.slots.get_mut(spec.name()) {
                Some(slot) if slot.spec == spec => slot.retire = None,
                Some(slot) => slot.retire = Some(Some(spec)),
                None => {
                    self.slots
                        .insert(spec.name().to_owned(), Slot::new(spec, now));
                }
            }
        }
        self.settle(now);
    }

    /// The services to run: the union of what the coordinators assign. Others are stopped.
    pub fn want(&mut self, names: &BTreeSet<String>) {
        for (name, slot) in &mut self.slots {
            slot.wanted = names.contains(name);
        }
    }

    /// Swaps in retired specs of services that have stopped.
    fn settle(&mut self, now: Instant) {
        let mut removed = Vec::new();
        for (name, slot) in &mut self.slots {
            let stopped = matches!(slot.phase, Phase::Idle | Phase::Waiting { .. });
            if !stopped && slot.spec.managed() {
                continue;
            }
            match slot.retire.take() {
                Some(None) => removed.push(name.clone()),
                Some(Some(spec)) => {
                    let wanted = slot.wanted;
                    *slot = Slot::new(spec, now);
                    slot.wanted = wanted;
                }
                None => {}
            }
        }
        for name in removed {
            self.slots.remove(&name);
        }
    }

    /// What to do now.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        self.settle(now);
        let mut actions = Vec::new();
        for (name, slot) in &mut self.slots {
            if !slot.spec.managed() {
                if slot.probe_due() && !slot.probing && now >= slot.next_probe {
                    slot.probing = true;
                    actions.push(Action::Probe(name.clone(), slot.generation));
                }
                continue;
            }
            let keep = slot.wanted && slot.retire.is_none();
            match slot.phase {
                Phase::Idle if keep => slot.start(name, now, &mut actions),
                Phase::Waiting { until } if keep && now >= until => {
                    slot.status.restarts = slot.status.restarts.saturating_add(1);
                    slot.start(name, now, &mut actions);
                }
                // Unassigned while it waits to restart, it stays failed until the wait is
                // over: routerd then does not hand it straight back to this worker, and a
                // service that fails everywhere moves no faster than its backoff.
                Phase::Waiting { until } if !keep && now >= until => slot.phase = Phase::Idle,
                Phase::Starting { .. } | Phase::Running { .. } if !keep => {
                    slot.phase = Phase::Stopping {
                        since: now,
                        killed: false,
                        failed: false,
                    };
                    actions.push(Action::Stop(name.clone()));
                }
                Phase::Starting { since }
                    if now.saturating_duration_since(since) > slot.spec.start_timeout =>
                {
                    slot.status.last_exit = Some(format!(
                        "not healthy within {} s of its start",
                        slot.spec.start_timeout.as_secs()
                    ));
                    slot.phase = Phase::Stopping {
                        since: now,
                        killed: false,
                        failed: true,
                    };
                    actions.push(Action::Stop(name.clone()));
                }
                Phase::Stopping {
                    since,
                    killed: false,
                    failed,
                } if now.saturating_duration_since(since) >= slot.spec.stop_grace => {
                    slot.phase = Phase::Stopping {
                        since,
                        killed: true,
                        failed,
                    };
                    actions.push(Action::Kill(name.clone()));
                }
                _ => {}
            }
            if slot.probe_due() && !slot.probing && now >= slot.next_probe {
                slot.probing = true;
                actions.push(Action::Probe(name.clone(), slot.generation));
            }
        }
        actions
    }

    /// When [`Self::poll`] next has something to do.
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        let mut wake: Option<Instant> = None;
        let mut at = |t: Instant| wake = Some(wake.map_or(t, |w| w.min(t)));
        for slot in self.slots.values() {
            if slot.probe_due() && !slot.probing {
                at(slot.next_probe);
            }
            if !slot.spec.managed() {
                continue;
            }
            let keep = slot.wanted && slot.retire.is_none();
            match slot.phase {
                Phase::Idle if keep => at(now),
                Phase::Waiting { until } => at(until),
                Phase::Starting { .. } | Phase::Running { .. } if !keep => at(now),
                Phase::Starting { since } => {
                    at(since + slot.spec.start_timeout + Duration::from_millis(1))
                }
                Phase::Stopping {
                    since,
                    killed: false,
                    ..
                } => at(since + slot.spec.stop_grace),
                _ => {}
            }
        }
        wake
    }

    /// The slot of `name` if `generation` is its current start: events of earlier starts
    /// find none.
    fn current(&mut self, name: &str, generation: Generation) -> Option<&mut Slot> {
        self.slots
            .get_mut(name)
            .filter(|s| s.generation == generation)
    }

    /// The shell could not start it.
    pub fn start_failed(&mut self, name: &str, generation: Generation, why: String, now: Instant) {
        if let Some(slot) = self.current(name, generation)
            && matches!(slot.phase, Phase::Starting { .. })
        {
            slot.fail(format!("could not start: {why}"), now);
        }
    }

    /// The process of start `generation` exited (or its unit stopped), `how` as
    /// `exit status 1` and the like.
    pub fn exited(&mut self, name: &str, generation: Generation, how: String, now: Instant) {
        let Some(slot) = self.current(name, generation) else {
            return;
        };
        match slot.phase {
            Phase::Stopping { failed: false, .. } => {
                slot.status.last_exit = Some(how);
                slot.phase = Phase::Idle;
            }
            Phase::Stopping { failed: true, .. } => {
                let why = slot.status.last_exit.take().unwrap_or(how);
                slot.fail(why, now);
            }
            Phase::Starting { .. } | Phase::Running { .. } => slot.fail(how, now),
            Phase::Idle | Phase::Waiting { .. } => {}
        }
        slot.probing = false;
        self.settle(now);
    }

    /// A health probe's result for start `generation`, with the body when it passed.
    pub fn probed(
        &mut self,
        name: &str,
        generation: Generation,
        passed: Option<&[u8]>,
        now: Instant,
    ) {
        let Some(slot) = self.current(name, generation) else {
            return;
        };
        slot.probing = false;
        if let Some(body) = passed {
            slot.status.read_health_body(body);
        }
        match (slot.phase, passed.is_some()) {
            (Phase::Starting { .. }, true) => slot.phase = Phase::Running { since: now },
            (Phase::Running { since }, true) if now.saturating_duration_since(since) >= STABLE => {
                slot.failures = 0;
                slot.status.restarts = 0;
            }
            _ => {}
        }
        slot.next_probe = now
            + if matches!(slot.phase, Phase::Starting { .. }) {
                PROBE_STARTING
            } else {
                PROBE_RUNNING
            };
    }

    /// Where each service stands, in name order.
    pub fn statuses(&self) -> Vec<ServiceStatus> {
        self.slots
            .values()
            .map(|slot| ServiceStatus {
                state: slot.state(),
                ..slot.status.clone()
            })
            .collect()
    }

    pub fn spec(&self, name: &str) -> Option<&LocalService> {
        self.slots.get(name).map(|s| &s.spec)
    }

    /// Whether every managed service has stopped (for a clean shutdown).
    pub fn all_stopped(&self) -> bool {
        self.slots
            .values()
            .all(|s| !s.spec.managed() || matches!(s.phase, Phase::Idle | Phase::Waiting { .. }))
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The generation of a service's current start.
    pub fn generation(&self, name: &str) -> Option<Generation> {
        self.slots.get(name).map(|s| s.generation)
    }
}

#[cfg(test)]
mod tests {
    use super::super::spec::{DEFAULT_START_TIMEOUT, DEFAULT_STOP_GRACE, Exec, Runner, Service};
    use super::*;

    fn exec(name: &str) -> LocalService {
        LocalService {
            offer: Service {
                name: name.into(),
                port: 8101,
                health: "/health".into(),
            },
            runner: Runner::Exec(Exec {
                argv: vec!["/bin/true".into()],
                user: None,
                working_dir: None,
                env: Default::default(),
            }),
            stop_grace: DEFAULT_STOP_GRACE,
            start_timeout: DEFAULT_START_TIMEOUT,
        }
    }

    fn want(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn state(s: &Supervisor, name: &str) -> ServiceState {
        s.statuses()
            .into_iter()
            .find(|st| st.name == name)
            .unwrap()
            .state
    }

    /// The generation of a service's current start.
    fn cur(s: &Supervisor, name: &str) -> Generation {
        s.generation(name).unwrap()
    }

    /// Actions as `start NAME`, `probe NAME`, `stop NAME`, `kill NAME`.
    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                Action::Start(n, _) => format!("start {n}"),
                Action::Probe(n, _) => format!("probe {n}"),
                Action::Stop(n) => format!("stop {n}"),
                Action::Kill(n) => format!("kill {n}"),
            })
            .collect()
    }

    #[test]
    fn events_from_an_earlier_start_are_ignored() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(vec![exec("ocr")], t0);
        s.want(&want(&["ocr"]));
        assert_eq!(s.poll(t0), [Action::Start("ocr".into(), 1)]);
        let probe = t0 + PROBE_STARTING;
        assert_eq!(s.poll(probe), [Action::Probe("ocr".into(), 1)]);
        // It exits while that probe is in flight, and is started again.
        s.exited("ocr", 1, "exit status 1".into(), probe);
        let again = probe + FIRST_BACKOFF;
        assert_eq!(s.poll(again), [Action::Start("ocr".into(), 2)]);
        // The old probe passes, and the old start's exit is reported twice: nothing changes.
        s.probed("ocr", 1, Some(b"{}"), again);
        s.exited("ocr", 1, "exit status 1".into(), again);
        s.start_failed("ocr", 1, "gone".into(), again);
        assert_eq!(state(&s, "ocr"), ServiceState::Starting);
        s.probed("ocr", 2, Some(b"{}"), again);
        assert_eq!(state(&s, "ocr"), ServiceState::Running);
    }

    #[test]
    fn a_service_unassigned_while_it_waits_to_restart_stays_failed_until_the_wait_ends() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(vec![exec("ocr")], t0);
        s.want(&want(&["ocr"]));
        s.poll(t0);
        s.exited("ocr", 1, "exit status 1".into(), t0);
        s.want(&want(&[]));
        assert!(s.poll(t0).is_empty());
        assert_eq!(
            state(&s, "ocr"),
            ServiceState::Failed,
            "routerd sees it failed here"
        );
        assert_eq!(s.next_wake(t0), Some(t0 + FIRST_BACKOFF));
        s.poll(t0 + FIRST_BACKOFF);
        assert_eq!(state(&s, "ocr"), ServiceState::Stopped);
        // Assigned again before its wait is over, it waits the rest.
        s.want(&want(&["ocr"]));
        s.poll(t0 + FIRST_BACKOFF);
        s.exited("ocr", 2, "exit status 1".into(), t0 + FIRST_BACKOFF);
        s.want(&want(&[]));
        s.poll(t0 + FIRST_BACKOFF);
        s.want(&want(&["ocr"]));
        assert!(
            s.poll(t0 + FIRST_BACKOFF * 2).is_empty(),
            "the 2 s wait is not over"
        );
        assert_eq!(names(&s.poll(t0 + FIRST_BACKOFF * 3)), ["start ocr"]);
    }

    /// Polls and answers every probe with `healthy`, until nothing is left to do at `now`.
    fn drive(s: &mut Supervisor, now: Instant, healthy: bool) -> Vec<Action> {
        let actions = s.poll(now);
        for a in &actions {
            if let Action::Probe(n, g) = a {
                s.probed(n, *g, healthy.then_some(b"{}".as_slice()), now);
            }
        }
        actions
    }

    #[test]
    fn an_assigned_service_starts_runs_once_healthy_and_stops_when_unassigned() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(vec![exec("ocr"), exec("rag")], t0);
        assert!(s.poll(t0).is_empty(), "nothing is assigned");
        assert_eq!(state(&s, "ocr"), ServiceState::Stopped);
        s.want(&want(&["ocr"]));
        assert_eq!(s.next_wake(t0), Some(t0));
        assert_eq!(names(&s.poll(t0)), ["start ocr"]);
        assert_eq!(state(&s, "ocr"), ServiceState::Starting);
        let t1 = t0 + PROBE_STARTING;
        assert_eq!(s.next_wake(t0), Some(t1));
        assert_eq!(names(&drive(&mut s, t1, false)), ["probe ocr"]);
        assert_eq!(state(&s, "ocr"), ServiceState::Starting, "not healthy yet");
        let t2 = t1 + PROBE_STARTING;
        drive(&mut s, t2, true);
        assert_eq!(state(&s, "ocr"), ServiceState::Running);
        s.want(&want(&[]));
        assert_eq!(names(&s.poll(t2)), ["stop ocr"]);
        assert_eq!(state(&s, "ocr"), ServiceState::Stopped);
        // It ignores SIGTERM: SIGKILL after the grace period, once.
        assert_eq!(s.next_wake(t2), Some(t2 + DEFAULT_STOP_GRACE));
        assert!(s.poll(t2 + DEFAULT_STOP_GRACE / 2).is_empty());
        assert_eq!(names(&s.poll(t2 + DEFAULT_STOP_GRACE)), ["kill ocr"]);
        assert!(s.poll(t2 + DEFAULT_STOP_GRACE * 2).is_empty());
        assert!(!s.all_stopped());
        s.exited(
            "ocr",
            cur(&s, "ocr"),
            "killed by signal 9".into(),
            t2 + DEFAULT_STOP_GRACE,
        );
        assert!(s.all_stopped());
        assert_eq!(
            s.next_wake(t2 + DEFAULT_STOP_GRACE),
            None,
            "nothing left to do"
        );
    }

    #[test]
    fn a_crashing_service_restarts_with_growing_backoff_that_resets_once_stable() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(vec![exec("ocr")], t0);
        s.want(&want(&["ocr"]));
        let mut now = t0;
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert_eq!(names(&s.poll(now)), ["start ocr"]);
            s.exited("ocr", cur(&s, "ocr"), "exit status 1".into(), now);
            assert_eq!(state(&s, "ocr"), ServiceState::Failed);
            let next = s.next_wake(now).unwrap();
            waits.push(next - now);
            assert!(s.poll(now).is_empty(), "no restart before the backoff");
            now = next;
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let status = &s.statuses()[0];
        assert_eq!(status.last_exit.as_deref(), Some("exit status 1"));
        assert_eq!(status.restarts, 8);
        // Healthy for a minute: the next crash waits a second again.
        assert_eq!(names(&s.poll(now)), ["start ocr"]);
        drive(&mut s, now + PROBE_STARTING, true);
        let mut t = now + PROBE_STARTING;
        while t < now + STABLE + PROBE_RUNNING * 2 {
            t += PROBE_RUNNING;
            drive(&mut s, t, true);
        }
        s.exited("ocr", cur(&s, "ocr"), "exit status 2".into(), t);
        assert_eq!(s.next_wake(t), Some(t + FIRST_BACKOFF));
    }

    #[test]
    fn a_start_that_never_becomes_healthy_fails_and_is_retried() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(vec![exec("ocr")], t0);
        s.want(&want(&["ocr"]));
        s.poll(t0);
        let mut t = t0;
        while t <= t0 + DEFAULT_START_TIMEOUT {
            t += PROBE_STARTING;
            let actions = drive(&mut s, t, false);
            if actions.contains(&Action::Stop("ocr".into())) {
                break;
            }
        }
        assert!(
            t > t0 + DEFAULT_START_TIMEOUT && t <= t0 + DEFAULT_START_TIMEOUT + PROBE_STARTING * 2
        );
        assert_eq!(state(&s, "ocr"), ServiceState::Failed);
        s.exited("ocr", cur(&s, "ocr"), "killed by signal 15".into(), t);
        let status = &s.statuses()[0];
        assert_eq!(
            status.last_exit.as_deref(),
            Some("not healthy within 60 s of its start")
        );
        assert_eq!(names(&s.poll(t + FIRST_BACKOFF)), ["start ocr"]);
        // A start the shell could not make fails the same way.
        s.start_failed(
            "ocr",
            cur(&s, "ocr"),
            "No such file or directory".into(),
            t + FIRST_BACKOFF,
        );
        assert_eq!(state(&s, "ocr"), ServiceState::Failed);
    }

    #[test]
    fn an_external_service_is_only_reported_and_probed_while_assigned() {
        let t0 = Instant::now();
        let mut external = exec("notes");
        external.runner = Runner::External;
        let mut s = Supervisor::new(vec![external], t0);
        assert!(s.poll(t0).is_empty());
        assert_eq!(state(&s, "notes"), ServiceState::External);
        s.want(&want(&["notes"]));
        assert_eq!(names(&s.poll(t0)), ["probe notes"]);
        s.probed("notes", 0, Some(br#"{"active_requests": 4}"#), t0);
        assert_eq!(s.statuses()[0].active_requests, Some(4));
        assert_eq!(s.next_wake(t0), Some(t0 + PROBE_RUNNING));
    }

    #[test]
    fn a_reload_stops_a_removed_or_changed_service_before_it_goes_or_restarts() {
        let t0 = Instant::now();
        let mut s = Supervisor::new(vec![exec("ocr"), exec("rag")], t0);
        s.want(&want(&["ocr", "rag"]));
        s.poll(t0);
        let mut changed = exec("ocr");
        changed.offer.port = 9000;
        s.reconfigure(vec![changed], t0);
        let actions = s.poll(t0);
        assert!(actions.contains(&Action::Stop("ocr".into())), "{actions:?}");
        assert!(actions.contains(&Action::Stop("rag".into())));
        s.exited("rag", cur(&s, "rag"), "exit status 0".into(), t0);
        assert_eq!(s.len(), 1, "rag is gone once stopped");
        assert_eq!(
            s.spec("ocr").unwrap().offer.port,
            8101,
            "the old one until it stops"
        );
        s.exited("ocr", cur(&s, "ocr"), "exit status 0".into(), t0);
        assert_eq!(s.spec("ocr").unwrap().offer.port, 9000);
        assert_eq!(
            names(&s.poll(t0)),
            ["start ocr"],
            "still assigned: started anew"
        );
    }

    #[test]
    fn a_day_of_flapping_assignments_and_crashes_keeps_one_slot_per_service() {
        let t0 = Instant::now();
        let names = ["a", "b", "c"];
        let mut s = Supervisor::new(names.iter().map(|n| exec(n)).collect(), t0);
        let mut rng = fastrand::Rng::with_seed(3);
        let mut next = move |n: u64| rng.u64(..n);
        let mut running: BTreeSet<String> = BTreeSet::new();
        let mut now = t0;
        for _ in 0..(86_400 / 5) {
            now += Duration::from_secs(5);
            if next(20) == 0 {
                let wanted: Vec<&str> = names.iter().copied().filter(|_| next(2) == 0).collect();
                s.want(&want(&wanted));
            }
            for action in s.poll(now) {
                match action {
                    Action::Start(n, _) => assert!(running.insert(n), "never two at once"),
                    // Some exit on SIGTERM, the rest on SIGKILL.
                    Action::Stop(n) => {
                        if next(3) > 0 && running.remove(&n) {
                            s.exited(&n, cur(&s, &n), "exit status 0".into(), now);
                        }
                    }
                    Action::Kill(n) => {
                        if running.remove(&n) {
                            s.exited(&n, cur(&s, &n), "killed by signal 9".into(), now);
                        }
                    }
                    Action::Probe(n, g) => {
                        // Now and then a result from the start before (ignored).
                        let g = if next(10) == 0 {
                            g.saturating_sub(1)
                        } else {
                            g
                        };
                        s.probed(&n, g, (next(4) > 0).then_some(b"{}".as_slice()), now)
                    }
                }
            }
            if let Some(n) = running.iter().find(|_| next(50) == 0).cloned() {
                running.remove(&n);
                s.exited(&n, cur(&s, &n), "exit status 1".into(), now);
            }
            // A late exit of an earlier start changes nothing.
            if let Some(n) = running.iter().next().cloned() {
                let before = s.statuses();
                s.exited(&n, cur(&s, &n) - 1, "exit status 9".into(), now);
                assert_eq!(s.statuses(), before);
            }
            if let Some(wake) = s.next_wake(now) {
                assert!(wake >= now && wake <= now + MAX_BACKOFF + DEFAULT_START_TIMEOUT);
            }
        }
    }
}
