//! The registry's HTTP routes, with the payloads the old coordinator's workers and frontend
//! used (seed 000): `/health`, `/api/worker/register`, `/api/worker/heartbeat`,
//! `/api/coordinator/workers`, `/api/admin/workers` and `/api/admin/gaps`. Admin routes need
//! the bearer token from the config.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rma_ca::{CaCert, RevocationList};
use serde::{Deserialize, Serialize};
use serde_json::json;
use time::OffsetDateTime;

use crate::admission;
use crate::registry::{Capabilities, HEARTBEAT_INTERVAL, Offered, Registry, TTL, Worker};
use crate::store::Store;

/// Largest registration or heartbeat body: a certificate and a few services.
const MAX_BODY: usize = 64 * 1024;

/// The registry and what it is checked and stored with.
#[derive(Debug)]
pub struct Coordinator {
    pub registry: Registry,
    pub store: Store,
    pub ca: CaCert,
    pub crl: Option<RevocationList>,
    /// The bearer token admin routes require.
    pub admin_token: String,
}

pub type Shared = Arc<Mutex<Coordinator>>;

fn lock(shared: &Shared) -> MutexGuard<'_, Coordinator> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// An error answered as JSON: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// The node name; optional, but if given it must be the certificate's.
    #[serde(default)]
    pub worker_id: Option<String>,
    /// The worker's node certificate, PEM.
    pub certificate: String,
    pub capabilities: Capabilities,
    #[serde(default)]
    pub services: Vec<Offered>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Registered {
    pub status: String,
    pub worker_id: String,
    pub assigned_services: Vec<String>,
    pub heartbeat_interval_secs: u64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Heartbeat {
    pub worker_id: String,
}

async fn register(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(request): Json<Registration>,
) -> Result<Json<Registered>, ApiError> {
    let mut c = lock(&shared);
    let cert = admission::admit(
        request.certificate.as_bytes(),
        peer.ip(),
        &c.ca,
        c.crl.as_ref(),
        OffsetDateTime::now_utc(),
    )
    .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?;
    let name = cert.name().to_string();
    if let Some(claimed) = &request.worker_id
        && *claimed != name
    {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("worker_id {claimed:?} is not the certificate's name {name:?}"),
        ));
    }
    let worker = c
        .registry
        .register(
            &name,
            cert.mesh_ip(),
            request.capabilities,
            request.services,
            Instant::now(),
        )
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?
        .clone();
    c.store
        .save(&worker)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    tracing::info!(worker = %name, mesh_ip = %worker.mesh_ip, assigned = ?worker.assigned, "worker registered");
    Ok(Json(Registered {
        status: "registered".into(),
        worker_id: name,
        assigned_services: worker.assigned,
        heartbeat_interval_secs: HEARTBEAT_INTERVAL.as_secs(),
    }))
}

async fn heartbeat(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(request): Json<Heartbeat>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let mut c = lock(&shared);
    let Some(worker) = c.registry.get(&request.worker_id) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "worker {:?} is not registered; register again",
                request.worker_id
            ),
        ));
    };
    if peer.ip() != std::net::IpAddr::V4(worker.mesh_ip) {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!(
                "worker {:?} is at {}, not {}",
                request.worker_id,
                worker.mesh_ip,
                peer.ip()
            ),
        ));
    }
    c.registry
        .heartbeat(&request.worker_id, Instant::now())
        .map_err(|e| ApiError(StatusCode::NOT_FOUND, e.to_string()))?;
    Ok(Json(json!({ "status": "ok", "ttl_secs": TTL.as_secs() })))
}

fn worker_json(worker: &Worker, age_secs: Option<u64>, admin: bool) -> serde_json::Value {
    let mut value = json!({
        "worker_id": worker.name,
        "mesh_ip": worker.mesh_ip,
        "capabilities": worker.capabilities,
        "assigned_services": worker.assigned,
        "last_seen_secs": age_secs,
    });
    if admin {
        value["services"] = json!(worker.offered);
    }
    value
}

fn workers_json(c: &Coordinator, admin: bool) -> serde_json::Value {
    let now = Instant::now();
    let workers: Vec<_> = c
        .registry
        .workers()
        .map(|w| worker_json(w, c.registry.age(&w.name, now).map(|a| a.as_secs()), admin))
        .collect();
    json!({ "count": workers.len(), "workers": workers })
}

async fn coordinator_workers(State(shared): State<Shared>) -> Json<serde_json::Value> {
    Json(workers_json(&lock(&shared), false))
}

fn authorized(c: &Coordinator, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let matches =
        presented.is_some_and(|token| constant_time_eq(token.as_bytes(), c.admin_token.as_bytes()));
    if matches {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "admin routes need `Authorization: Bearer TOKEN`".into(),
        ))
    }
}

/// Compares in time that does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn admin_workers(
    State(shared): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let c = lock(&shared);
    authorized(&c, &headers)?;
    Ok(Json(workers_json(&c, true)))
}

async fn admin_gaps(
    State(shared): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let c = lock(&shared);
    authorized(&c, &headers)?;
    let gaps = c.registry.gaps();
    let names: Vec<&str> = gaps.iter().map(|g| g.service.as_str()).collect();
    let message = if gaps.is_empty() {
        "every service has its workers".to_owned()
    } else {
        format!(
            "{} of {} services need workers",
            gaps.len(),
            c.registry.catalog().iter().count()
        )
    };
    Ok(Json(
        json!({ "gaps": names, "details": gaps, "message": message }),
    ))
}

async fn health(State(shared): State<Shared>) -> Json<serde_json::Value> {
    let c = lock(&shared);
    let services: serde_json::Map<String, serde_json::Value> = c
        .registry
        .catalog()
        .iter()
        .map(|(name, _)| (name.to_owned(), json!(c.registry.serving(name).len())))
        .collect();
    Json(json!({
        "status": "healthy",
        "workers": c.registry.workers().count(),
        "services": services,
    }))
}

/// The registry routes, on either listener.
pub fn routes(shared: Shared) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/api/worker/register", post(register))
        .route("/api/worker/heartbeat", post(heartbeat))
        .route("/api/coordinator/workers", get(coordinator_workers))
        .route("/api/admin/workers", get(admin_workers))
        .route("/api/admin/gaps", get(admin_gaps))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
