//! Active health checks: every interval, a GET of each worker's health path for each service
//! it serves, with a timeout; the balancer turns results into health after `rise` passes or
//! `fall` failures.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt as _, Full};
use tokio::task::JoinSet;

use crate::app::Shared;
use crate::pool::Outgoing;

/// Health bodies are read (so the connection can be pooled) up to this size.
const MAX_HEALTH_BODY: usize = 64 << 10;

/// One check: a 2xx or 3xx within `timeout` passes.
pub async fn probe(app: &Shared, addr: SocketAddr, path: &str, timeout: Duration) -> bool {
    let check = async {
        let mut conn = app.pool.checkout(addr).await.ok()?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::USER_AGENT, "routerd-health")
            .body(Outgoing::Left(Full::default()))
            .ok()?;
        let response = conn.sender.send_request(request).await.ok()?;
        let passed = response.status().is_success() || response.status().is_redirection();
        let body = http_body_util::Limited::new(response.into_body(), MAX_HEALTH_BODY);
        if body.collect().await.is_ok() {
            app.pool.checkin(addr, conn.sender);
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
    let targets = app.lock().registry.endpoints();
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
        let changed = app.lock().balancer.checked(&service, &worker, passed);
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
