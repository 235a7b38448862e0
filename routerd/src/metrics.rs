//! What routerd counts, and `/metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rma_daemon::prometheus::Exposition;

use crate::app::Traffic;
use crate::registry::{MachineLoad, Registry};

/// Upper bounds of the call-duration histogram, in seconds: up to [`LONGEST`], past the
/// longest timeout a service may have, so that a quantile can reach every real duration
/// (GPU calls wait up to 120 s by default).
const BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 600.0,
];

/// The largest bucket bound; the config refuses a service timeout above it.
pub const LONGEST: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        for (bound, count) in BUCKETS.iter().zip(&mut self.counts) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

#[derive(Debug, Default)]
pub struct Stats {
    /// Calls answered, by service and status.
    calls: BTreeMap<(String, u16), u64>,
    durations: BTreeMap<String, Histogram>,
    retries: BTreeMap<(String, &'static str), u64>,
    upstream_errors: BTreeMap<(String, &'static str), u64>,
    pub retries_refused: u64,
    pub rate_limited: u64,
    pub registrations_refused: u64,
}

impl Stats {
    /// A call to `service` answered `status` after `elapsed` (to the response headers).
    pub fn answered(&mut self, service: &str, status: u16, elapsed: Duration) {
        // Looked up before inserting: a call to a known service allocates nothing here.
        match self
            .calls
            .iter_mut()
            .find(|((s, code), _)| *code == status && s == service)
        {
            Some((_, n)) => *n += 1,
            None => {
                self.calls.insert((service.to_owned(), status), 1);
            }
        }
        match self.durations.get_mut(service) {
            Some(histogram) => histogram.observe(elapsed.as_secs_f64()),
            None => {
                let mut histogram = Histogram::default();
                histogram.observe(elapsed.as_secs_f64());
                self.durations.insert(service.to_owned(), histogram);
            }
        }
    }

    pub fn retried(&mut self, service: &str, reason: &'static str) {
        *self
            .retries
            .entry((service.to_owned(), reason))
            .or_default() += 1;
    }

    pub fn upstream_error(&mut self, service: &str, kind: &'static str) {
        *self
            .upstream_errors
            .entry((service.to_owned(), kind))
            .or_default() += 1;
    }
}

/// The whole exposition, read under the lock.
/// One listener's connections: its name, how many are open, how many were refused.
pub type ListenerConnections = (&'static str, usize, u64);

pub fn render(
    registry: &Registry,
    traffic: &Traffic,
    crls: &[rma_ca::RevocationList],
    idle_connections: usize,
    listeners: &[ListenerConnections],
    now: Instant,
    wall: time::OffsetDateTime,
) -> String {
    let mut e = Exposition::default();
    let s = &traffic.stats;
    e.header(
        "routerd_calls_total",
        "counter",
        "Service calls answered, by service and HTTP status.",
    );
    for ((service, status), n) in &s.calls {
        e.sample(
            "routerd_calls_total",
            &[("service", service), ("code", &status.to_string())],
            n,
        );
    }
    e.header(
        "routerd_call_duration_seconds",
        "histogram",
        "Time from a call's arrival to its response headers, by service.",
    );
    for (service, h) in &s.durations {
        for (bound, count) in BUCKETS.iter().zip(h.counts) {
            e.sample(
                "routerd_call_duration_seconds_bucket",
                &[("service", service), ("le", &bound.to_string())],
                count,
            );
        }
        e.sample(
            "routerd_call_duration_seconds_bucket",
            &[("service", service), ("le", "+Inf")],
            h.count,
        );
        e.sample(
            "routerd_call_duration_seconds_sum",
            &[("service", service)],
            h.sum,
        );
        e.sample(
            "routerd_call_duration_seconds_count",
            &[("service", service)],
            h.count,
        );
    }
    e.header(
        "routerd_retries_total",
        "counter",
        "Calls sent again to another worker, by service and reason.",
    );
    for ((service, reason), n) in &s.retries {
        e.sample(
            "routerd_retries_total",
            &[("service", service), ("reason", reason)],
            n,
        );
    }
    e.header(
        "routerd_upstream_errors_total",
        "counter",
        "Failed attempts to reach a worker, by service and kind.",
    );
    for ((service, kind), n) in &s.upstream_errors {
        e.sample(
            "routerd_upstream_errors_total",
            &[("service", service), ("kind", kind)],
            n,
        );
    }
    e.single(
        "routerd_retries_refused_total",
        "counter",
        "Retries the retry budget did not allow.",
        s.retries_refused,
    );
    e.single(
        "routerd_rate_limited_total",
        "counter",
        "Calls answered 429 by the rate limit.",
        s.rate_limited,
    );
    e.single(
        "routerd_registrations_refused_total",
        "counter",
        "Worker registrations refused (certificate, source address or payload).",
        s.registrations_refused,
    );
    e.single(
        "routerd_workers",
        "gauge",
        "Registered workers.",
        registry.workers().count(),
    );
    if let Some(secs) = rma_ca::RevocationList::soonest_next_update(crls, wall) {
        e.single(
            "routerd_crl_next_update_seconds",
            "gauge",
            "Seconds until the soonest-due revocation list in use is due to be replaced (negative once past; it stays in use).",
            secs,
        );
    }
    e.single(
        "routerd_idle_connections",
        "gauge",
        "Pooled idle connections to workers.",
        idle_connections,
    );
    e.header(
        "routerd_connections",
        "gauge",
        "Open connections from callers, by listener.",
    );
    for (listener, open, _) in listeners {
        e.sample("routerd_connections", &[("listener", listener)], open);
    }
    e.header(
        "routerd_connections_refused_total",
        "counter",
        "Connections closed at once: the listener, or the caller's address, had its most open.",
    );
    for (listener, _, refused) in listeners {
        e.sample(
            "routerd_connections_refused_total",
            &[("listener", listener)],
            refused,
        );
    }
    let catalog = registry.catalog();
    e.header(
        "routerd_service_workers",
        "gauge",
        "Workers that can take a service's calls now (healthy, not ejected).",
    );
    for (service, _) in catalog.iter() {
        let up = registry
            .candidates(service)
            .iter()
            .filter(|w| {
                let v = traffic.balancer.view(service, &w.worker, now);
                v.healthy && !v.ejected
            })
            .count();
        e.sample("routerd_service_workers", &[("service", service)], up);
    }
    e.header(
        "routerd_service_replicas_wanted",
        "gauge",
        "The catalog's replica target for each service.",
    );
    for (service, spec) in catalog.iter() {
        e.sample(
            "routerd_service_replicas_wanted",
            &[("service", service)],
            spec.replicas,
        );
    }
    e.header(
        "routerd_worker_up",
        "gauge",
        "1 if the worker takes the service's calls now, by service and worker.",
    );
    let mut outstanding = Vec::new();
    let mut ejections = Vec::new();
    for (service, _) in catalog.iter() {
        for w in registry.candidates(service) {
            let v = traffic.balancer.view(service, &w.worker, now);
            e.sample(
                "routerd_worker_up",
                &[("service", service), ("worker", &w.worker)],
                u8::from(v.healthy && !v.ejected),
            );
            outstanding.push((service.to_owned(), w.worker.clone(), v.outstanding));
            ejections.push((service.to_owned(), w.worker, v.ejections));
        }
    }
    e.header(
        "routerd_worker_outstanding",
        "gauge",
        "Calls in flight to the worker, by service and worker.",
    );
    for (service, worker, n) in outstanding {
        e.sample(
            "routerd_worker_outstanding",
            &[("service", &service), ("worker", &worker)],
            n,
        );
    }
    worker_reports(&mut e, registry);
    e.header(
        "routerd_worker_ejections_total",
        "counter",
        "Passive ejections of the worker, by service and worker.",
    );
    for (service, worker, n) in ejections {
        e.sample(
            "routerd_worker_ejections_total",
            &[("service", &service), ("worker", &worker)],
            n,
        );
    }
    e.finish()
}

/// What workers report: machine load, and each offered service's state and load.
fn worker_reports(e: &mut Exposition, registry: &Registry) {
    e.header(
        "routerd_service_assigned",
        "gauge",
        "Workers assigned each service (running it or starting it).",
    );
    for (service, _) in registry.catalog().iter() {
        let n = registry
            .workers()
            .filter(|w| w.assigned.iter().any(|a| a == service))
            .count();
        e.sample("routerd_service_assigned", &[("service", service)], n);
    }
    let loads: Vec<_> = registry
        .workers()
        .filter_map(|w| Some((w.name.as_str(), w.load.as_ref()?)))
        .collect();
    type Gauge = fn(&MachineLoad) -> Option<f64>;
    let gauges: [(&str, &str, Gauge); 4] = [
        (
            "routerd_worker_load_average",
            "The worker machine's one-minute load average, from its last heartbeat.",
            |l| Some(l.load_average),
        ),
        (
            "routerd_worker_memory_used_bytes",
            "Memory in use on the worker machine, from its last heartbeat.",
            |l| Some(l.memory_used_bytes as f64),
        ),
        (
            "routerd_worker_gpu_utilization_percent",
            "The busiest GPU's utilisation on the worker machine, from its last heartbeat.",
            |l| l.gpu_utilization,
        ),
        (
            "routerd_worker_gpu_memory_used_bytes",
            "GPU memory in use on the worker machine, from its last heartbeat.",
            |l| l.gpu_memory_used_bytes.map(|b| b as f64),
        ),
    ];
    for (name, help, value) in gauges {
        e.header(name, "gauge", help);
        for (worker, load) in &loads {
            if let Some(v) = value(load) {
                e.sample(name, &[("worker", worker)], v);
            }
        }
    }
    e.header(
        "routerd_worker_service_state",
        "gauge",
        "1 for the state each offered service is in on its worker, as the worker reports it.",
    );
    for w in registry.workers() {
        for offered in &w.offered {
            let state = w.state(&offered.name);
            e.sample(
                "routerd_worker_service_state",
                &[
                    ("worker", &w.name),
                    ("service", &offered.name),
                    ("state", state.as_str()),
                ],
                1,
            );
        }
    }
    e.header(
        "routerd_worker_service_active_requests",
        "gauge",
        "Requests in flight in each service, as its health endpoint reports them.",
    );
    for w in registry.workers() {
        for status in &w.states {
            if let Some(active) = status.active_requests {
                e.sample(
                    "routerd_worker_service_active_requests",
                    &[("worker", &w.name), ("service", &status.name)],
                    active,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gpu_call_of_two_minutes_lands_in_a_bucket_below_infinity() {
        let mut histogram = Histogram::default();
        histogram.observe(100.0);
        let (bound, _) = BUCKETS
            .iter()
            .zip(histogram.counts)
            .find(|(_, n)| *n == 1)
            .unwrap();
        assert_eq!(*bound, 120.0);
        assert_eq!(BUCKETS.last().copied(), Some(LONGEST.as_secs_f64()));
        // Every default timeout is within the histogram.
        for (_, spec) in crate::catalog::Catalog::default().iter() {
            assert!(spec.timeout <= LONGEST);
        }
    }
}
