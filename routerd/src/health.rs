//! Active health checks: every interval, a GET of each worker's health path for each service
//! it serves, with a timeout; the balancer turns results into health after `rise` passes or
//! `fall` failures.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};
use tokio::task::JoinSet;

use crate::app::Shared;
use rma_daemon::http1::{Head, Payload, WorkerBody};

/// Health bodies are read (so the connection can be pooled) up to this size.
const MAX_HEALTH_BODY: usize = 64 << 10;

/// One check: a 2xx or 3xx within `timeout` passes.
pub async fn probe(app: &Shared, addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let check = async {
        let conn = app.pool.checkout(addr).await.ok()?;
        let target = Uri::try_from(path).ok()?;
        let host = HeaderValue::try_from(addr.to_string()).ok()?;
        let mut headers = HeaderMap::new();
        headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static("routerd-health"),
        );
        let head = Head {
            method: &Method::GET,
            target: &target,
            host: &host,
            headers: &headers,
        };
        let mut payload: Payload = Payload::Kept(Bytes::new());
        let (response, reader) = conn.send(head, &mut payload).await.ok()?;
        let passed = response.status.is_success() || response.status.is_redirection();
        // Read (so that the connection can be pooled) up to a size.
        let (pool, mut kept) = (app.pool.clone(), None);
        let body = WorkerBody::new(reader, |conn| kept = conn.map(|c| (pool, c)));
        if Limited::new(body, MAX_HEALTH_BODY).collect().await.is_ok()
            && let Some((pool, conn)) = kept
        {
            pool.checkin(addr, conn);
        }
        Some(passed)
    };
    tokio::time::timeout(timeout, check)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Checks every (service, worker) pair once, concurrently, and applies the results.
pub async fn round(app: &Shared, timeout: Duration) {
    let targets = app.registry().endpoints();
    let mut checks = JoinSet::new();
    for target in targets {
        let app = app.clone();
        checks.spawn(async move {
            let passed = probe(&app, target.addr, &target.health, timeout).await;
            (target.service, target.worker, passed)
        });
    }
    while let Some(result) = checks.join_next().await {
        let Ok((service, worker, passed)) = result else {
            continue;
        };
        let changed = app.traffic().balancer.checked(&service, &worker, passed);
        match changed {
            Some(true) => tracing::info!(%service, %worker, "worker healthy again"),
            Some(false) => {
                tracing::warn!(%service, %worker, "worker unhealthy: health checks failed")
            }
            None => {}
        }
    }
}

/// Runs rounds forever, one per `interval`.
pub async fn run(app: Shared, interval: Duration, timeout: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        round(&app, timeout).await;
    }
}
