//! `GET /api/topology`: workers, the services they serve, and each route's health and load;
//! and `GET /`, a page that draws it and refreshes itself.

use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use serde_json::{Value, json};

use crate::app::{Shared, Traffic};
use crate::registry::Registry;

/// The page: plain HTML, CSS and script, no external resources.
const PAGE: &str = include_str!("../assets/topology.html");

pub fn topology(
    registry: &Registry,
    traffic: &Traffic,
    mesh_ip: Option<std::net::Ipv4Addr>,
    now: Instant,
) -> Value {
    let catalog = registry.catalog();
    let mut routes = Vec::new();
    let services: Vec<Value> = catalog
        .iter()
        .map(|(name, spec)| {
            let candidates = registry.candidates(name);
            let mut up = 0;
            for w in &candidates {
                let view = traffic.balancer.view(name, &w.worker, now);
                let state = match (view.healthy, view.ejected) {
                    (false, _) => "unhealthy",
                    (true, true) => "ejected",
                    (true, false) => {
                        up += 1;
                        "up"
                    }
                };
                routes.push(json!({
                    "service": name,
                    "worker": &*w.worker,
                    "address": w.addr.to_string(),
                    "state": state,
                    "outstanding": view.outstanding,
                    "reported_active": view.reported,
                    "calls": view.calls,
                    "errors": view.errors,
                    "ejections": view.ejections,
                }));
            }
            json!({
                "name": name,
                "tier": spec.tier,
                "replicas": spec.replicas,
                "registered": candidates.len(),
                "assigned": registry.workers().filter(|w| w.assigned.iter().any(|a| a == name)).count(),
                "up": up,
                "gap": (candidates.len() as u32) < spec.replicas,
            })
        })
        .collect();
    let workers: Vec<Value> = registry
        .workers()
        .map(|w| {
            json!({
                "worker_id": w.name,
                "mesh_ip": w.mesh_ip,
                "capabilities": w.capabilities,
                "services": w.assigned,
                "offered": w.offered.iter().map(|o| &o.name).collect::<Vec<_>>(),
                "states": w.states,
                "load": w.load,
                "last_seen_secs": registry.age(&w.name, now).map(|a| a.as_secs()),
            })
        })
        .collect();
    json!({
        "routerd": { "mesh_ip": mesh_ip, "version": env!("CARGO_PKG_VERSION") },
        "services": services,
        "workers": workers,
        "routes": routes,
    })
}

pub async fn get_topology(State(app): State<Shared>) -> Json<Value> {
    let registry = app.registry();
    Json(topology(
        &registry,
        &app.traffic(),
        app.mesh_ip,
        Instant::now(),
    ))
}

pub async fn page() -> Html<&'static str> {
    Html(PAGE)
}
