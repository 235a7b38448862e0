//! routerd's shared state: the registry, the data path's state ([`Traffic`]) and the store
//! each under a lock of its own, the trust store and the connection pools beside them, and the
//! settings the handlers read.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use rma_ca::{CaCert, RevocationList};
use rma_daemon::sync::lock;
use rma_daemon::trust::SharedTrust;

use crate::balance::Balancer;
use crate::config::{Config, Limits, RateLimit, Routing};
use crate::conn_limit::ConnLimit;
use crate::edge::Listener;
use crate::metrics::Stats;
use crate::pool::Pool;
use crate::rate_limit::RateLimiter;
use crate::registry::Registry;
use crate::retry_budget::RetryBudget;
use crate::store::Store;

/// What every service call reads and writes, under a lock of its own: heartbeats never wait
/// on it, and calls never wait on a registration's SQLite write.
#[derive(Debug)]
pub struct Traffic {
    pub balancer: Balancer,
    pub retry_budget: RetryBudget,
    pub rate_limiter: Option<RateLimiter>,
    pub stats: Stats,
}

pub struct App {
    /// Locks are taken in this order when more than one is held: store, registry, traffic.
    /// The registry on disk: whatever changes both (a registration, an expiry) takes the store
    /// first, changes the registry, lets go of it, then writes. Writes land in the order the
    /// registry changed, and nobody holds the registry while SQLite writes.
    store: Mutex<Store>,
    registry: Mutex<Registry>,
    traffic: Mutex<Traffic>,
    /// Connections for the health checks, on the main runtime.
    pub pool: Arc<Pool>,
    /// One pool per serving thread ([`crate::server::Servers`]): a connection is driven by
    /// the thread that opened it, so each thread keeps its own.
    pub serving_pools: Vec<Arc<Pool>>,
    pub routing: Routing,
    pub rate_limit: Option<RateLimit>,
    pub limits: Limits,
    /// Open connections on the public and the mesh listener, each bounded on its own, so
    /// that callers on the public one cannot starve workers' heartbeats on the mesh one.
    pub public_connections: Arc<ConnLimit>,
    pub mesh_connections: Arc<ConnLimit>,
    pub admin_token: String,
    /// The CA and the revocation list in use, under a lock of their own: a registration is
    /// verified before the registry's lock is taken.
    pub trust: Arc<SharedTrust>,
    /// A worker's certificate must be in one of these groups.
    pub worker_groups: Vec<String>,
    /// Public-listener peers whose `CF-Connecting-IP` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// This node's mesh IP, for the topology.
    pub mesh_ip: Option<std::net::Ipv4Addr>,
}

impl std::fmt::Debug for App {
    /// Everything but the admin token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("routing", &self.routing)
            .field("rate_limit", &self.rate_limit)
            .field("worker_groups", &self.worker_groups)
            .field("mesh_ip", &self.mesh_ip)
            .finish_non_exhaustive()
    }
}

pub type Shared = Arc<App>;

impl App {
    pub fn new(
        config: &Config,
        ca: CaCert,
        crls: Vec<RevocationList>,
        store: Store,
        mesh_ip: Option<std::net::Ipv4Addr>,
        admin_token: String,
    ) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let pool = || {
            Arc::new(Pool::new(
                config.routing.max_idle_per_worker,
                config.routing.connect_timeout,
            ))
        };
        let traffic = Traffic {
            balancer: Balancer::new(config.routing.balance, config.health, config.ejection),
            retry_budget: RetryBudget::new(config.routing.retry_budget),
            rate_limiter: config
                .rate_limit
                .as_ref()
                .map(|r| RateLimiter::new(r.per_second, r.burst)),
            stats: Stats::default(),
        };
        Self {
            registry: Mutex::new(Registry::new(config.catalog.clone())),
            traffic: Mutex::new(traffic),
            store: Mutex::new(store),
            pool: pool(),
            serving_pools: (0..threads).map(|_| pool()).collect(),
            routing: config.routing.clone(),
            rate_limit: config.rate_limit.clone(),
            limits: config.limits,
            public_connections: ConnLimit::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            mesh_connections: ConnLimit::new(
                config.limits.max_connections,
                config.limits.max_connections_per_ip,
            ),
            admin_token,
            trust: SharedTrust::new(ca, crls),
            worker_groups: config.worker_groups.clone(),
            trusted_proxies: config.trusted_proxies.clone(),
            mesh_ip,
        }
    }

    /// The connection bound of `listener`.
    pub fn connections(&self, listener: Listener) -> &Arc<ConnLimit> {
        match listener {
            Listener::Public => &self.public_connections,
            Listener::Mesh => &self.mesh_connections,
        }
    }

    /// Every pool: the health checks' and the serving threads'.
    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        std::iter::once(&self.pool).chain(&self.serving_pools)
    }

    pub fn registry(&self) -> MutexGuard<'_, Registry> {
        lock(&self.registry)
    }

    pub fn traffic(&self) -> MutexGuard<'_, Traffic> {
        lock(&self.traffic)
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Removes workers silent for a TTL, with their routing state and their record on disk;
    /// returns their names.
    pub fn expire(&self, now: Instant) -> Vec<String> {
        let store = self.store();
        let mut registry = self.registry();
        let gone = registry.expire(now);
        let changed = registry.take_changed();
        if gone.is_empty() {
            drop(registry);
            save_changed(&store, &changed);
            return gone;
        }
        for name in &gone {
            tracing::info!(worker = %name, "worker expired: no heartbeat within the TTL");
        }
        self.traffic().balancer.retain(|service, worker| {
            registry
                .serving(service)
                .iter()
                .any(|(w, _)| w.name == worker)
        });
        drop(registry);
        save_changed(&store, &changed);
        for name in &gone {
            if let Err(e) = store.remove(name) {
                tracing::warn!(worker = %name, error = %e, "could not remove an expired worker from the store");
            }
        }
        gone
    }
}

/// Writes workers whose assignment or states changed (see [`Registry::take_changed`]).
pub fn save_changed(store: &Store, changed: &[crate::registry::Worker]) {
    for worker in changed {
        if let Err(e) = store.save(worker) {
            tracing::warn!(worker = %worker.name, error = %e, "could not write a worker's assignment to the store");
        }
    }
}
