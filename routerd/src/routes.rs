//! The routing table: for each catalog service, its settings and the workers that serve it,
//! as one shared snapshot. The registry rebuilds it when its workers change (a registration,
//! a restore, an expiry); a call takes its service's route with one reference count, without
//! copying names or formatting addresses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::HeaderValue;

use crate::catalog::ServiceSpec;
use crate::registry::Registry;

/// A worker that serves a service, as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub worker: Arc<str>,
    pub addr: SocketAddr,
    /// The `Host` a call to it carries (its mesh address), written once.
    pub host: HeaderValue,
}

impl Candidate {
    pub fn new(worker: &str, addr: SocketAddr) -> Self {
        let host = HeaderValue::from_str(&addr.to_string())
            .unwrap_or_else(|_| unreachable!("a socket address is a valid header value"));
        Self {
            worker: worker.into(),
            addr,
            host,
        }
    }
}

/// Where calls to one service go.
#[derive(Debug)]
pub struct Route {
    /// The canonical name.
    pub service: String,
    pub spec: ServiceSpec,
    /// In the registry's order (by worker name).
    pub workers: Vec<Candidate>,
}

#[derive(Debug, Default)]
pub struct Routes {
    by_service: BTreeMap<String, Arc<Route>>,
}

impl Routes {
    /// A route for every service in the registry's catalog, with the workers it assigned.
    pub fn build(registry: &Registry) -> Self {
        let by_service = registry
            .catalog()
            .iter()
            .map(|(service, spec)| {
                let workers = registry
                    .serving(service)
                    .into_iter()
                    .map(|(w, offered)| {
                        Candidate::new(&w.name, SocketAddr::from((w.mesh_ip, offered.port)))
                    })
                    .collect();
                let route = Route {
                    service: service.to_owned(),
                    spec: spec.clone(),
                    workers,
                };
                (service.to_owned(), Arc::new(route))
            })
            .collect();
        Self { by_service }
    }

    /// The route for `service` (canonical); `None` for a service not in the catalog.
    pub fn get(&self, service: &str) -> Option<&Arc<Route>> {
        self.by_service.get(service)
    }
}
