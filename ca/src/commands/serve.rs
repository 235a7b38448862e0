//! `rma-ca serve`: the enrollment service's HTTP, around [`rma_ca::enrollment::Enrollment`].
//!
//! Requests are decided one at a time (the index is one SQLite file) on a blocking thread; at
//! most [`MAX_WAITING`] wait, and more are answered 503 at once, so a flood costs a queue slot
//! and a short answer each. Bodies over [`join::MAX_REQUEST`] are refused unread.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rma_ca::enrollment::{EnrollError, Enrollment, Signed200};
use rma_ca::join::{self, Refusal};
use rma_ca::proof::{SIGNATURE_HEADER, Signed, TIME_HEADER};
use tokio::sync::Semaphore;

/// Requests waiting for the index at once; more are refused with 503.
const MAX_WAITING: usize = 32;

#[derive(Clone)]
struct Service {
    enrollment: Arc<Mutex<Enrollment>>,
    waiting: Arc<Semaphore>,
}

#[derive(Clone, Copy)]
enum Kind {
    Join,
    Renew,
}

pub fn run(
    dir: &Path,
    listen: SocketAddr,
    crl: Option<PathBuf>,
    cert_duration: time::Duration,
) -> anyhow::Result<()> {
    let enrollment = Enrollment::open(dir, crl, cert_duration)?;
    let ca = enrollment.authority().ca().clone();
    let root_pem = enrollment.authority().root().to_pem();
    let service = Service {
        enrollment: Arc::new(Mutex::new(enrollment)),
        waiting: Arc::new(Semaphore::new(MAX_WAITING)),
    };
    let app = Router::new()
        .route(join::JOIN_PATH, post(join_handler))
        .route(join::RENEW_PATH, post(renew_handler))
        .route(
            join::ROOT_PATH,
            get(move || {
                let pem = root_pem.clone();
                async move { ([(header::CONTENT_TYPE, "application/x-pem-file")], pem) }
            }),
        )
        .route("/health", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(join::MAX_REQUEST))
        .with_state(service);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen {listen}"))?;
        eprintln!(
            "rma-ca: serving enrollment for issuing CA {:?} ({}) on http://{}",
            ca.name(),
            ca.network(),
            listener.local_addr()?
        );
        // Under systemd (Type=notify), ready once the listener is bound; a no-op elsewhere.
        if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
            eprintln!("rma-ca: could not notify systemd: {e}");
        }
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown())
            .await
            .context("serving")
    })
}

async fn shutdown() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

async fn join_handler(State(service): State<Service>, headers: HeaderMap, body: Bytes) -> Response {
    decide(service, Kind::Join, headers, body).await
}

async fn renew_handler(
    State(service): State<Service>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(service, Kind::Renew, headers, body).await
}

async fn decide(service: Service, kind: Kind, headers: HeaderMap, body: Bytes) -> Response {
    let Ok(_slot) = service.waiting.clone().try_acquire_owned() else {
        return refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy; try again shortly".into(),
        );
    };
    let enrollment = service.enrollment.clone();
    let decided = tokio::task::spawn_blocking(move || {
        let signed = Signed {
            time: headers.get(TIME_HEADER).map(HeaderValue::as_bytes),
            signature: headers.get(SIGNATURE_HEADER).map(HeaderValue::as_bytes),
        };
        let mut enrollment = enrollment.lock().unwrap_or_else(|e| e.into_inner());
        let now = time::OffsetDateTime::now_utc();
        match kind {
            Kind::Join => enrollment.join(signed, &body, now),
            Kind::Renew => enrollment.renew(signed, &body, now),
        }
    })
    .await;
    match decided {
        Ok(Ok(answer)) => answered(kind, answer),
        Ok(Err(error)) => refused(kind, &error),
        Err(e) => refusal(StatusCode::INTERNAL_SERVER_ERROR, format!("internal: {e}")),
    }
}

fn answered(kind: Kind, answer: Signed200) -> Response {
    let cert = &answer.cert;
    eprintln!(
        "rma-ca: {} {} ({}), fingerprint {}, valid until {}",
        match kind {
            Kind::Join => "enrolled",
            Kind::Renew => "renewed",
        },
        cert.name(),
        cert.mesh_ip(),
        cert.fingerprint(),
        rma_ca::timefmt::rfc3339(cert.not_after())
    );
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&answer.signature) {
        response
            .headers_mut()
            .insert(join::ANSWER_SIGNATURE_HEADER, value);
    }
    response
}

fn refused(kind: Kind, error: &EnrollError) -> Response {
    let what = match kind {
        Kind::Join => "join",
        Kind::Renew => "renewal",
    };
    eprintln!("rma-ca: {what} refused: {error}");
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::BAD_REQUEST);
    if status.is_server_error() {
        // The detail (paths, SQLite) is the operator's, in the log above.
        return refusal(
            status,
            format!("the enrollment service cannot {what} now; its log says why"),
        );
    }
    refusal(status, error.to_string())
}

fn refusal(status: StatusCode, error: String) -> Response {
    let body = serde_json::to_vec(&Refusal { error }).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}
