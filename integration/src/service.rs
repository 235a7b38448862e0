//! The small HTTP service the routerd tests (and the demo) run on workers: it answers every
//! path with what it saw (its worker's name, the caller, the request ID, a hash of the body),
//! so a test can tell who answered and what arrived. A few paths behave on purpose: `/health`,
//! `/status/{code}`, `/slow?ms=N`, `/bytes/{n}`, and `/control/exit/{code}` (the process exits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Debug)]
pub struct Service {
    pub worker: String,
    pub service: String,
    healthy: AtomicBool,
    /// Calls answered, health checks aside.
    pub calls: AtomicU64,
    /// `/slow` calls in flight, which `/health` reports as `active_requests` (seed 003).
    active: AtomicU64,
}

impl Service {
    pub fn new(worker: &str, service: &str) -> Arc<Self> {
        Arc::new(Self {
            worker: worker.into(),
            service: service.into(),
            healthy: AtomicBool::new(true),
            calls: AtomicU64::new(0),
            active: AtomicU64::new(0),
        })
    }

    pub fn set_healthy(&self, up: bool) {
        self.healthy.store(up, Ordering::SeqCst);
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_owned)
}

async fn echo(
    State(s): State<Arc<Service>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = request.into_parts();
    let mut hash = Sha256::new();
    let mut bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    hash.update(data);
                    bytes += data.len() as u64;
                }
            }
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        }
    }
    axum::Json(json!({
        "worker": s.worker,
        "service": s.service,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "caller": peer.ip().to_string(),
        "request_id": header(&parts.headers, "x-request-id"),
        "forwarded_for": header(&parts.headers, "x-forwarded-for"),
        "body_bytes": bytes,
        "body_sha256": format!("{:x}", hash.finalize()),
    }))
    .into_response()
}

async fn health(State(s): State<Arc<Service>>) -> Response {
    if s.healthy.load(Ordering::SeqCst) {
        let body = json!({
            "status": "ok",
            "service": s.service,
            "active_requests": s.active.load(Ordering::SeqCst),
        });
        (StatusCode::OK, axum::Json(body)).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "down").into_response()
    }
}

async fn set_health(State(s): State<Arc<Service>>, Path(state): Path<String>) -> StatusCode {
    s.set_healthy(state == "up");
    StatusCode::NO_CONTENT
}

async fn status(State(s): State<Arc<Service>>, Path(code): Path<u16>) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        axum::Json(json!({ "worker": s.worker, "status": code.as_u16() })),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct Slow {
    ms: u64,
}

/// Answers after `ms` milliseconds: a worker that is slow on purpose.
async fn slow(State(s): State<Arc<Service>>, Query(q): Query<Slow>) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    s.active.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    s.active.fetch_sub(1, Ordering::SeqCst);
    axum::Json(json!({ "worker": s.worker, "slept_ms": q.ms })).into_response()
}

/// Streams `n` bytes of a repeating pattern in 64 KiB chunks.
async fn bytes(State(s): State<Arc<Service>>, Path(n): Path<u64>) -> Response {
    s.calls.fetch_add(1, Ordering::SeqCst);
    let chunk = Bytes::from((0..65536u32).map(|i| (i % 251) as u8).collect::<Vec<u8>>());
    let chunks = (0..n.div_ceil(65536)).map(move |i| {
        let len = (n - i * 65536).min(65536) as usize;
        Ok::<_, std::io::Error>(chunk.slice(..len))
    });
    Body::from_stream(futures_util::stream::iter(chunks)).into_response()
}

/// Ends the whole process with exit status `code`, just after answering: a service that
/// crashes on purpose.
async fn exit(Path(code): Path<i32>) -> StatusCode {
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        std::process::exit(code);
    });
    StatusCode::ACCEPTED
}

pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/control/health/{state}", post(set_health))
        .route("/control/exit/{code}", post(exit))
        .route("/status/{code}", any(status))
        .route("/slow", get(slow))
        .route("/bytes/{n}", get(bytes))
        .fallback(echo)
        .with_state(service)
}

/// Serves `service` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, service: Arc<Service>) {
    let app = router(service).into_make_service_with_connect_info::<SocketAddr>();
    let _ = axum::serve(listener, app).await;
}
