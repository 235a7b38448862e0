//! routerd's HTTP routes. The registry's, with the payloads the old coordinator's workers
//! and frontend used (seed 000): `/health`, `/api/worker/register`, `/api/worker/heartbeat`,
//! `/api/coordinator/workers`, `/api/admin/workers` and `/api/admin/gaps` (admin routes need
//! the bearer token from the config); the service calls (see [`crate::proxy`]); and
//! `/api/topology`, `/metrics`, `/openapi.json` and the topology page at `/`.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;

use axum::extract::rejection::{BytesRejection, JsonRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde_json::json;
use time::OffsetDateTime;

use crate::admission::{self, Claim};
pub use crate::app::{App, Shared};
use crate::edge::Listener;
use crate::registry::{HEARTBEAT_INTERVAL, Proof, Registry, Report, SessionToken, TTL, Worker};
use crate::secrets;
use crate::topology;
use rma_ca::proof::{self, Signed, unix_ms};

/// Largest registration or heartbeat body: a certificate and a few services.
const MAX_BODY: usize = 64 * 1024;

/// The OpenAPI document for the public API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// An error answered as JSON: `{"error": "..."}` with a status.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({ "error": self.1 }))).into_response();
        if self.0 == StatusCode::REQUEST_TIMEOUT {
            // What is left of the body is not read: the connection cannot carry another call.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
        }
        response
    }
}

/// The answer to a body that could not be read whole: 408 when it came too slowly
/// ([`crate::pace`]), as for a service call; else the extractor's own status and words.
fn unreadable_body(
    rejection: &(dyn std::error::Error + 'static),
    status: StatusCode,
    text: String,
) -> ApiError {
    let mut cause = Some(rejection);
    while let Some(e) = cause {
        if let Some(slow) = e.downcast_ref::<crate::pace::TooSlow>() {
            return ApiError(StatusCode::REQUEST_TIMEOUT, format!("request body: {slow}"));
        }
        cause = e.source();
    }
    ApiError(status, text)
}

pub use rma_proto::registration::{
    HEARTBEAT_PATH, Heartbeat, HeartbeatReply, REGISTER_PATH, Registered, Registration,
};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex_session(text: &str) -> Option<SessionToken> {
    let mut token = SessionToken::default();
    if text.len() != 2 * token.len() {
        return None;
    }
    for (i, byte) in token.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(token)
}

fn refused(shared: &App, status: StatusCode, source: IpAddr, reason: String) -> ApiError {
    shared.traffic().stats.registrations_refused += 1;
    tracing::warn!(%source, %reason, "registration refused");
    ApiError(status, reason)
}

/// A registration. Everything that proves who sent it, the certificate's trust included, is
/// checked before the registry's lock is taken (see [`admission`]); the lock is held only to
/// write the registry, and the store is written after it is let go (see [`App`]).
async fn register(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Registered>, ApiError> {
    let body = body.map_err(|r| unreadable_body(&r, r.status(), r.body_text()))?;
    let source = peer.ip();
    let request: Registration = serde_json::from_slice(&body).map_err(|e| {
        refused(
            &shared,
            StatusCode::BAD_REQUEST,
            source,
            format!("registration: {e}"),
        )
    })?;
    rma_proto::registration::check_version(&request)
        .map_err(|e| refused(&shared, StatusCode::BAD_REQUEST, source, e.to_string()))?;
    let header = |name| {
        headers
            .get(name)
            .map(|v: &axum::http::HeaderValue| v.as_bytes())
    };
    let claim = Claim {
        certificate: request.certificate.as_bytes(),
        source_ip: source,
        path: REGISTER_PATH,
        signed: Signed {
            time: header(proof::TIME_HEADER),
            signature: header(proof::SIGNATURE_HEADER),
        },
        body: &body,
    };
    let now = OffsetDateTime::now_utc();
    let proven = admission::prove(&claim, &shared.worker_groups, unix_ms(now))
        .map_err(|e| refused(&shared, StatusCode::FORBIDDEN, source, e.to_string()))?;
    admission::trust(&proven.cert, &shared.trust, now)
        .map_err(|e| refused(&shared, StatusCode::FORBIDDEN, source, e.to_string()))?;
    let cert = proven.cert;
    let name = cert.name().to_string();
    if let Some(claimed) = &request.worker_id
        && *claimed != name
    {
        return Err(refused(
            &shared,
            StatusCode::FORBIDDEN,
            source,
            format!("worker_id {claimed:?} is not the certificate's name {name:?}"),
        ));
    }
    let session = secrets::new_session();
    let proof = Proof {
        signed_at_ms: proven.signed_at_ms,
        session,
    };
    // The store first (see `App`): the registry is held only while it changes.
    let store = shared.store();
    let mut registry = shared.registry();
    let registered = registry.register(
        &name,
        cert.mesh_ip(),
        request.capabilities,
        request.services,
        request.states,
        proof,
        Instant::now(),
    );
    let worker = match registered {
        Ok(worker) => {
            let worker = worker.clone();
            let now = Instant::now();
            for url in &request.coordinators {
                registry.replicas_mut().named(url, None, now);
            }
            worker
        }
        Err(e) => {
            drop((registry, store));
            shared.traffic().stats.registrations_refused += 1;
            return Err(ApiError(StatusCode::BAD_REQUEST, e.to_string()));
        }
    };
    // Other workers' assignments may have changed with it.
    let changed = registry.take_changed();
    drop(registry);
    store
        .save(&worker)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    crate::app::save_changed(&store, &changed);
    drop(store);
    for refused in &worker.refused {
        tracing::warn!(worker = %name, service = %refused.name, reason = %refused.reason, "offered service refused");
    }
    tracing::info!(worker = %name, mesh_ip = %worker.mesh_ip, assigned = ?worker.assigned, "worker registered");
    Ok(Json(Registered {
        status: "registered".into(),
        worker_id: name,
        assigned_services: worker.assigned,
        refused_services: worker.refused,
        heartbeat_interval_secs: HEARTBEAT_INTERVAL.as_secs(),
        session: hex(&session),
    }))
}

/// A heartbeat: from the worker's mesh IP, with the session its registration opened.
async fn heartbeat(
    State(shared): State<Shared>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Result<Json<Heartbeat>, JsonRejection>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let Json(request) = request.map_err(|r| unreadable_body(&r, r.status(), r.body_text()))?;
    let session = unhex_session(&request.session).ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "session must be the 32 hex digits the registration answered".into(),
        )
    })?;
    let mut registry = shared.registry();
    let Some(worker) = registry.get(&request.worker_id) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "worker {:?} is not registered; register again",
                request.worker_id
            ),
        ));
    };
    if peer.ip() != IpAddr::V4(worker.mesh_ip) {
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
    let now = Instant::now();
    let reported: Vec<(String, u32)> = request
        .services
        .iter()
        .map(|s| (s.name.clone(), s.active_requests.unwrap_or(0)))
        .collect();
    let report = Report {
        load: request.load,
        services: request.services,
    };
    let assigned = registry
        .heartbeat(&request.worker_id, &session, report, now)
        .map_err(|e| ApiError(StatusCode::FORBIDDEN, e.to_string()))?
        .to_vec();
    // Only a heartbeat that proved its session names replicas.
    for contact in &request.coordinators {
        let age = contact
            .last_contact_secs
            .map(std::time::Duration::from_secs);
        registry.replicas_mut().named(&contact.url, age, now);
    }
    let changed = registry.has_changed();
    drop(registry);
    if changed {
        // Locks in order (see `App`): the store, then the registry, only while it is read.
        let store = shared.store();
        let workers = shared.registry().take_changed();
        crate::app::save_changed(&store, &workers);
    }
    let mut traffic = shared.traffic();
    // Only for what it is assigned: the balancer keeps state for routed pairs alone.
    for (service, active) in reported {
        if assigned.contains(&service) {
            traffic
                .balancer
                .reported(&service, &request.worker_id, active);
        }
    }
    drop(traffic);
    Ok(Json(HeartbeatReply {
        status: "ok".into(),
        ttl_secs: TTL.as_secs(),
        assigned_services: Some(assigned),
    }))
}

fn worker_json(worker: &Worker, age_secs: Option<u64>, admin: bool) -> serde_json::Value {
    let mut value = json!({
        "worker_id": worker.name,
        "mesh_ip": worker.mesh_ip,
        "capabilities": worker.capabilities,
        "assigned_services": worker.assigned,
        "service_states": worker.states,
        "load": worker.load,
        "last_seen_secs": age_secs,
    });
    if admin {
        value["services"] = json!(worker.offered);
        value["refused_services"] = json!(worker.refused);
    }
    value
}

fn workers_json(registry: &Registry, admin: bool) -> serde_json::Value {
    let now = Instant::now();
    let workers: Vec<_> = registry
        .workers()
        .map(|w| worker_json(w, registry.age(&w.name, now).map(|a| a.as_secs()), admin))
        .collect();
    json!({ "count": workers.len(), "workers": workers })
}

async fn coordinator_workers(State(shared): State<Shared>) -> Json<serde_json::Value> {
    Json(workers_json(&shared.registry(), false))
}

fn authorized(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let matches = presented.is_some_and(|token| {
        secrets::constant_time_eq(token.as_bytes(), app.admin_token.as_bytes())
    });
    if matches {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "admin routes need `Authorization: Bearer TOKEN`".into(),
        ))
    }
}

async fn admin_workers(
    State(shared): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorized(&shared, &headers)?;
    Ok(Json(workers_json(&shared.registry(), true)))
}

async fn admin_gaps(
    State(shared): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorized(&shared, &headers)?;
    let registry = shared.registry();
    let gaps = registry.gaps();
    let names: Vec<&str> = gaps.iter().map(|g| g.service.as_str()).collect();
    let message = if gaps.is_empty() {
        "every service has its workers".to_owned()
    } else {
        format!(
            "{} of {} services need workers",
            gaps.len(),
            registry.catalog().iter().count()
        )
    };
    Ok(Json(
        json!({ "gaps": names, "details": gaps, "message": message }),
    ))
}

/// A worker silent for longer than this (three heartbeats missed) is counted stale by
/// `/health` until it expires.
const STALE: std::time::Duration = std::time::Duration::from_secs(3 * HEARTBEAT_INTERVAL.as_secs());

/// `/health`: the fields routerd always answered (`services`: workers serving each), in the
/// coordinator's shape from seed 002 §8.2: `status`, `coordinator`, and `workers` as
/// `{total, active, stale}`. `status` is `healthy` when every service has a worker serving
/// it, `degraded` when some have, and `unavailable` when none has.
async fn health(State(shared): State<Shared>) -> Json<serde_json::Value> {
    let registry = shared.registry();
    let now = Instant::now();
    let services: serde_json::Map<String, serde_json::Value> = registry
        .catalog()
        .iter()
        .map(|(name, _)| (name.to_owned(), json!(registry.serving(name).len())))
        .collect();
    let served = services.values().filter(|n| n.as_u64() > Some(0)).count();
    let status = match served {
        0 => "unavailable",
        n if n == services.len() => "healthy",
        _ => "degraded",
    };
    let total = registry.workers().count();
    let stale = registry
        .workers()
        .filter(|w| registry.age(&w.name, now).is_some_and(|age| age > STALE))
        .count();
    let coordinator = shared
        .mesh_ip
        .map_or_else(|| "routerd".to_owned(), |ip| format!("routerd@{ip}"));
    Json(json!({
        "status": status,
        "coordinator": coordinator,
        "workers": { "total": total, "active": total - stale, "stale": stale },
        "services": services,
    }))
}

/// `/api/admin/coordinators`: this routerd and the replicas its workers register with, with
/// their mesh IPs and when a worker last heard from each.
async fn admin_coordinators(
    State(shared): State<Shared>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorized(&shared, &headers)?;
    let registry = shared.registry();
    let now = Instant::now();
    let mut coordinators: Vec<serde_json::Value> = registry
        .replicas()
        .view(now)
        .into_iter()
        .map(|r| {
            let this = r.mesh_ip.is_some() && r.mesh_ip == shared.mesh_ip;
            json!({
                "url": r.url,
                "mesh_ip": r.mesh_ip,
                "self": this,
                "last_contact_secs": if this { Some(0) } else { r.last_contact_secs },
            })
        })
        .collect();
    if let Some(ip) = shared.mesh_ip
        && !coordinators.iter().any(|c| c["self"] == true)
    {
        coordinators.insert(
            0,
            json!({ "url": null, "mesh_ip": ip, "self": true, "last_contact_secs": 0 }),
        );
    }
    Ok(Json(
        json!({ "count": coordinators.len(), "coordinators": coordinators }),
    ))
}

async fn metrics(State(shared): State<Shared>) -> Response {
    let idle = shared.pools().map(|p| p.idle_count()).sum();
    let listener = |name, listener| {
        let (open, refused) = shared.connections(listener).counts();
        (name, open, refused)
    };
    let listeners = [
        listener("public", Listener::Public),
        listener("mesh", Listener::Mesh),
    ];
    let crls = shared.trust.lists();
    let registry = shared.registry();
    let text = crate::metrics::render(
        &registry,
        &shared.traffic(),
        &crls,
        idle,
        &listeners,
        Instant::now(),
        OffsetDateTime::now_utc(),
    );
    (
        [(header::CONTENT_TYPE, rma_daemon::prometheus::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// `/api/dht/stats` from the old coordinator: the registry is what the DHT held.
async fn dht_stats(State(shared): State<Shared>) -> Json<serde_json::Value> {
    let registry = shared.registry();
    let services = registry
        .catalog()
        .iter()
        .filter(|(name, _)| !registry.serving(name).is_empty())
        .count();
    Json(json!({
        "nodes": 1,
        "workers": registry.workers().count(),
        "services": services,
        "backend": "routerd registry (SQLite); the DHT is gone",
    }))
}

/// Other `/api/dht/*` routes (bootstrap and the like) have no successor: nodes join the mesh
/// with a certificate and a lighthouse.
async fn dht_gone() -> ApiError {
    ApiError(
        StatusCode::GONE,
        "the DHT is gone: nodes join with `rma-ca sign` and a lighthouse, workers register with routerd over the mesh".into(),
    )
}

/// Every route but the service calls, which [`crate::server`] sends to the proxy directly.
/// Workers register and heartbeat only on the mesh listener: the public one has no route for
/// them at all.
pub fn routes(shared: Shared, listener: Listener) -> Router {
    let router = match listener {
        Listener::Mesh => Router::new()
            .route(REGISTER_PATH, post(register))
            .route(HEARTBEAT_PATH, post(heartbeat)),
        Listener::Public => Router::new(),
    };
    router
        .route("/health", get(health))
        .route("/api/coordinator/workers", get(coordinator_workers))
        .route("/api/admin/workers", get(admin_workers))
        .route("/api/admin/gaps", get(admin_gaps))
        .route("/api/admin/coordinators", get(admin_coordinators))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .route("/api/topology", get(topology::get_topology))
        .route("/api/dht/stats", get(dht_stats))
        .route("/api/dht/topology", get(topology::get_topology))
        .route("/api/dht/{*rest}", any(dht_gone))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/", get(topology::page))
        .with_state(shared)
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
