//! Registering this machine's services with routerd: a task per coordinator that registers
//! (certificate, capabilities, the services it can run and where each stands) from the node's
//! mesh IP, signed with the node's identity key; hands what routerd assigns to the
//! [`Platform`], which runs it; heartbeats with the session the registration opened, the
//! machine's load and each service's state, at the interval routerd asks for and at once when
//! a service's state changes; and registers again when routerd refuses a heartbeat or after an
//! error, with backoff.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rma_ca::NodeKeys;
use rma_daemon::http_client;
use rma_proto::registration::{
    Capabilities, CoordinatorContact, HEARTBEAT_PATH, Heartbeat, HeartbeatReply, REGISTER_PATH,
    Registered, Registration, Service, VERSION,
};
use serde_json::Value;
use time::OffsetDateTime;

use crate::config::WorkerSettings;
use crate::coordinator::Coordinator;
use crate::services::Platform;
use rma_proto::load::{MachineLoad, ServiceState, ServiceStatus};

const TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Heartbeats sent early for a state change are at least this far apart.
const MIN_GAP: Duration = Duration::from_millis(100);

/// The routerd mesh URL of a coordinator address, as registrations name them.
pub fn url(coordinator: SocketAddr) -> String {
    format!("http://{coordinator}")
}

/// What a registration says.
pub fn registration(
    name: &str,
    certificate_pem: &str,
    capabilities: &Capabilities,
    services: &[Service],
) -> Registration {
    Registration {
        version: VERSION,
        worker_id: Some(name.to_owned()),
        certificate: certificate_pem.to_owned(),
        capabilities: capabilities.clone(),
        services: services.to_vec(),
        states: Vec::new(),
        coordinators: Vec::new(),
    }
}

/// When this machine last heard from each coordinator, shared by the worker tasks so that
/// each heartbeat tells its routerd about the others.
pub type Contacts = Arc<Mutex<BTreeMap<String, Instant>>>;

/// Each coordinator's URL as configured, and as routerd knows it: by mesh IP, as last
/// resolved for a URL that names a node.
pub type Resolved = Arc<Mutex<BTreeMap<String, String>>>;

/// The machine's load, measured at most once per [`MEASURE_EVERY`] for all coordinators
/// (`nvidia-smi` is not free).
pub type LoadCache = Arc<Mutex<Option<(Instant, MachineLoad)>>>;

/// How long a measurement of the machine's load is reused.
const MEASURE_EVERY: Duration = Duration::from_secs(5);

/// What every worker task of this machine shares.
#[derive(Debug, Clone)]
pub struct Machine {
    pub name: String,
    pub mesh_ip: Ipv4Addr,
    pub certificate_pem: String,
    pub keys: NodeKeys,
    pub settings: WorkerSettings,
    pub services: Vec<Service>,
    /// Every coordinator's URL, as configured: what assignments and contacts are kept under.
    pub coordinators: Vec<String>,
    pub platform: Platform,
    pub contacts: Contacts,
    pub resolved: Resolved,
    pub load: LoadCache,
}

impl Machine {
    /// The coordinators as routerd knows them (by mesh IP), with when this machine last
    /// heard from each; a named one not yet resolved is left out.
    fn contacts(&self) -> Vec<CoordinatorContact> {
        let now = Instant::now();
        let seen = rma_daemon::sync::lock(&self.contacts);
        let resolved = rma_daemon::sync::lock(&self.resolved);
        self.coordinators
            .iter()
            .filter_map(|url| {
                Some(CoordinatorContact {
                    url: resolved.get(url)?.clone(),
                    last_contact_secs: seen
                        .get(url)
                        .map(|t| now.saturating_duration_since(*t).as_secs()),
                })
            })
            .collect()
    }

    /// Every coordinator's URL as routerd knows it, for a registration to name.
    fn reported_urls(&self) -> Vec<String> {
        let resolved = rma_daemon::sync::lock(&self.resolved);
        self.coordinators
            .iter()
            .filter_map(|url| resolved.get(url).cloned())
            .collect()
    }

    /// Where each offered service stands: the platform's statuses, and `stopped` for one
    /// it has none for yet (a service a reload just added), never nothing, which routerd
    /// would read as run by the operator.
    fn reported_states(&self) -> Vec<ServiceStatus> {
        let statuses = self.platform.statuses();
        self.services
            .iter()
            .map(|offer| {
                statuses
                    .iter()
                    .find(|s| s.name == offer.name)
                    .cloned()
                    .unwrap_or_else(|| ServiceStatus::new(&offer.name, ServiceState::Stopped))
            })
            .collect()
    }

    /// The machine's load: measured off the event loop, or the measurement of the last
    /// [`MEASURE_EVERY`].
    async fn load(&self) -> Option<MachineLoad> {
        let fresh = rma_daemon::sync::lock(&self.load)
            .as_ref()
            .filter(|(at, _)| at.elapsed() < MEASURE_EVERY)
            .map(|(_, load)| load.clone());
        if fresh.is_some() {
            return fresh;
        }
        let settings = self.settings.clone();
        let load = off_loop(move || crate::capabilities::measure(&settings)).await?;
        *rma_daemon::sync::lock(&self.load) = Some((Instant::now(), load.clone()));
        Some(load)
    }

    fn heard_from(&self, url: &str) {
        rma_daemon::sync::lock(&self.contacts).insert(url.to_owned(), Instant::now());
    }
}

/// Posts `body` to `path`; signed with `keys` when given.
async fn post(
    coordinator: SocketAddr,
    mesh_ip: Ipv4Addr,
    path: &str,
    body: &impl serde::Serialize,
    keys: Option<&NodeKeys>,
) -> anyhow::Result<(u16, Value)> {
    let body = Bytes::from(serde_json::to_vec(body)?);
    let signed = keys.map(|keys| {
        let now = rma_ca::proof::unix_ms(OffsetDateTime::now_utc());
        rma_ca::proof::signed_headers(keys, "POST", path, now, &body)
    });
    let mut headers = vec![("content-type", "application/json")];
    for (name, value) in signed.iter().flatten() {
        headers.push((name, value.as_str()));
    }
    let reply = http_client::call(
        coordinator,
        Some(IpAddr::V4(mesh_ip)),
        "POST",
        path,
        &headers,
        body,
        TIMEOUT,
    )
    .await?;
    let value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    Ok((reply.status.as_u16(), value))
}

/// The worker tasks of this machine, one per coordinator, and the platform they feed.
#[derive(Debug)]
pub struct Workers {
    machine: Machine,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The coordinators the tasks register with.
    coordinators: Vec<Coordinator>,
    /// The longest stop grace of the configured services, for the shutdown.
    stop_grace: Duration,
}

impl Workers {
    /// Starts the platform with the configured services, and a task per coordinator.
    pub fn start(
        config: &crate::config::Config,
        name: String,
        mesh_ip: Ipv4Addr,
        certificate_pem: String,
        keys: NodeKeys,
    ) -> Self {
        let machine = Machine {
            name,
            mesh_ip,
            certificate_pem,
            keys,
            settings: config.worker.clone(),
            services: Vec::new(),
            coordinators: Vec::new(),
            platform: Platform::start(config.services.clone(), mesh_ip),
            contacts: Contacts::default(),
            resolved: Resolved::default(),
            load: LoadCache::default(),
        };
        let mut workers = Self {
            machine,
            tasks: Vec::new(),
            coordinators: Vec::new(),
            stop_grace: Duration::ZERO,
        };
        workers.spawn(config);
        workers
    }

    fn spawn(&mut self, config: &crate::config::Config) {
        self.stop_grace = config
            .services
            .iter()
            .map(|s| s.stop_grace)
            .max()
            .unwrap_or_default();
        self.machine.settings = config.worker.clone();
        self.machine.services = config.services.iter().map(|s| s.offer.clone()).collect();
        self.machine.coordinators = config
            .coordinators
            .iter()
            .map(ToString::to_string)
            .collect();
        rma_daemon::sync::lock(&self.machine.contacts)
            .retain(|c, _| self.machine.coordinators.contains(c));
        let mut resolved = rma_daemon::sync::lock(&self.machine.resolved);
        resolved.retain(|c, _| self.machine.coordinators.contains(c));
        for coordinator in &config.coordinators {
            if let Some(addr) = coordinator.literal() {
                resolved.insert(coordinator.to_string(), url(addr));
            }
        }
        drop(resolved);
        self.coordinators = config.coordinators.clone();
        self.register_all();
    }

    /// A task per coordinator, each registering afresh.
    fn register_all(&mut self) {
        self.tasks = self
            .coordinators
            .iter()
            .map(|coordinator| tokio::spawn(run(coordinator.clone(), self.machine.clone())))
            .collect();
    }

    /// A reload: when `[[service]]`, `[worker]` or `[coordinator]` changed, the platform takes
    /// the new services and every coordinator gets a new registration.
    pub fn reload(&mut self, running: &crate::config::Config, new: &crate::config::Config) {
        let same = (&running.services, &running.coordinators, &running.worker)
            == (&new.services, &new.coordinators, &new.worker);
        if same {
            return;
        }
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let urls = new.coordinators.iter().map(ToString::to_string).collect();
        self.machine
            .platform
            .reconfigure_now(new.services.clone(), urls);
        self.spawn(new);
        tracing::info!(
            services = new.services.len(),
            coordinators = new.coordinators.len(),
            "services or coordinators changed: registering again"
        );
    }

    /// This node renewed its certificate: every coordinator gets a registration with it (the
    /// services keep running).
    pub fn renewed(&mut self, certificate_pem: String) {
        self.machine.certificate_pem = certificate_pem;
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.register_all();
    }

    /// Stops registering, then stops every service the platform runs: each has its stop
    /// grace, then SIGKILL; a process that outlives even that (stuck in the kernel) is left
    /// to the service manager after a few more seconds.
    pub async fn shutdown(mut self) {
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let deadline = self.stop_grace + Duration::from_secs(5);
        if tokio::time::timeout(deadline, self.machine.platform.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(
                ?deadline,
                "services still stopping; meshd exits without them"
            );
        }
    }
}

/// Runs a blocking measurement off the event loop.
async fn off_loop<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// Keeps this machine registered with one coordinator, forever.
pub async fn run(configured: Coordinator, machine: Machine) {
    let url = configured.to_string();
    let mut states = machine.platform.states();
    let mut backoff = FIRST_BACKOFF;
    let mut complained = false;
    loop {
        let settings = machine.settings.clone();
        let capabilities = off_loop(move || crate::capabilities::detect(&settings))
            .await
            .unwrap_or_default();
        let mut body = registration(
            &machine.name,
            &machine.certificate_pem,
            &capabilities,
            &machine.services,
        );
        states.borrow_and_update();
        body.states = machine.reported_states();
        // A URL that names a node is resolved for each registration: the routerd may have
        // moved since the last.
        let registered = async {
            let addr = configured.resolve(machine.mesh_ip).await?;
            rma_daemon::sync::lock(&machine.resolved).insert(url.clone(), self::url(addr));
            body.coordinators = machine.reported_urls();
            let reply = post(
                addr,
                machine.mesh_ip,
                REGISTER_PATH,
                &body,
                Some(&machine.keys),
            );
            anyhow::Ok((addr, reply.await?))
        }
        .await;
        let coordinator = match &registered {
            Ok((addr, _)) => addr.to_string(),
            Err(_) => url.clone(),
        };
        let answer = match registered {
            Ok((addr, (200, reply))) => serde_json::from_value::<Registered>(reply)
                .map(|answer| (answer, addr))
                .map_err(|e| format!("the answer is not a registration's: {e}")),
            Ok((_, (status, reply))) => Err(format!("HTTP {status}: {}", reply["error"])),
            Err(e) => Err(format!("{e:#}")),
        };
        let (interval, session, addr) = match answer {
            Ok((answer, addr)) => {
                tracing::info!(%coordinator, assigned = ?answer.assigned_services, "registered with routerd");
                for refused in &answer.refused_services {
                    tracing::warn!(%coordinator, service = %refused.name, reason = %refused.reason, "routerd refused an offered service");
                }
                machine.heard_from(&url);
                machine
                    .platform
                    .assigned(&url, answer.assigned_services)
                    .await;
                backoff = FIRST_BACKOFF;
                complained = false;
                let interval = Duration::from_secs(answer.heartbeat_interval_secs.max(1));
                (interval, answer.session, addr)
            }
            Err(why) => {
                // The first failure is worth a warning; the retries that follow are not.
                if complained {
                    tracing::debug!(%coordinator, error = %why, "registration failed; retrying");
                } else {
                    tracing::warn!(%coordinator, error = %why, "registration failed; retrying with backoff");
                    complained = true;
                }
                let jitter =
                    Duration::from_millis(fastrand::u64(..=backoff.as_millis() as u64 / 4));
                tokio::time::sleep(backoff + jitter).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        loop {
            // At the interval, or sooner when a service's state changes.
            tokio::select! {
                () = tokio::time::sleep(interval) => {}
                Ok(()) = states.changed() => tokio::time::sleep(MIN_GAP).await,
            }
            states.borrow_and_update();
            let load = machine.load().await;
            let beat = Heartbeat {
                worker_id: machine.name.clone(),
                session: session.clone(),
                load,
                services: machine.reported_states(),
                coordinators: machine.contacts(),
            };
            match post(addr, machine.mesh_ip, HEARTBEAT_PATH, &beat, None).await {
                Ok((200, reply)) => {
                    machine.heard_from(&url);
                    let reply: HeartbeatReply = serde_json::from_value(reply).unwrap_or_default();
                    if let Some(assigned) = reply.assigned_services {
                        machine.platform.assigned(&url, assigned).await;
                    }
                }
                Ok((status, reply)) => {
                    tracing::warn!(%coordinator, status, error = %reply["error"], "heartbeat refused; registering again");
                    break;
                }
                Err(e) => {
                    tracing::debug!(%coordinator, error = %format!("{e:#}"), "heartbeat failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_carries_what_routerd_reads() {
        let caps = Capabilities {
            cpu_cores: 8,
            ram: "31.2 GiB".into(),
            has_gpu: false,
            gpu_memory: None,
            free_disk: "100.0 GiB".into(),
            worker_type: "cpu".into(),
        };
        let services = [Service {
            name: "rag-embeddings".into(),
            port: 8101,
            health: "/health".into(),
        }];
        let value =
            serde_json::to_value(registration("worker-1", "PEM", &caps, &services)).unwrap();
        assert!(value.get("version").is_none(), "version 1 is not written");
        assert_eq!(value["worker_id"], "worker-1");
        assert_eq!(value["certificate"], "PEM");
        assert_eq!(value["capabilities"]["cpu_cores"], 8);
        assert!(value["capabilities"].get("gpu_memory").is_none());
        assert_eq!(
            value["services"],
            serde_json::json!([{"name": "rag-embeddings", "port": 8101, "health": "/health"}])
        );
    }
}
