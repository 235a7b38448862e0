//! The HTTP/1.1 server both listeners run, on hyper directly. A service call
//! (`/service/...`, `/api/service/...`) goes straight to the proxy; every other route goes
//! through the axum router. Every call gets its request ID and access-log line here (see
//! [`edge::with_request_id`]), and CORS, when configured, covers both.
//!
//! The proxy path skips axum's routing and middleware stack on purpose: that stack cost
//! routerd about a third of its throughput against nginx (`make bench-routerd`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer as _, ServiceExt as _};
use tower_http::cors::CorsLayer;

use crate::app::Shared;
use crate::edge::{self, Listener};
use crate::proxy;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The pause after a failed accept (such as running out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one listener serves.
#[derive(Clone, Debug)]
pub struct Edge {
    pub app: Shared,
    /// Every route but the service calls ([`crate::api::routes`]).
    pub router: Router,
    pub listener: Listener,
    pub cors: Option<CorsLayer>,
}

impl Edge {
    /// Answers one request from `peer`.
    pub async fn call(self, peer: SocketAddr, request: Request) -> Response {
        edge::with_request_id(request, |mut request| async move {
            if proxy::is_service_call(request.uri().path()) {
                // Boxed: the call's state is large, and moving it through the layers above
                // costs more than one allocation.
                Box::pin(proxy::forward(self.app, peer, self.listener, request)).await
            } else {
                request.extensions_mut().insert(ConnectInfo(peer));
                match self.router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                }
            }
        })
        .await
    }
}

/// Accepts connections on `listener` and serves each on its own task, until dropped.
pub async fn serve(listener: TcpListener, edge: Edge, name: &'static str) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let edge = edge.clone();
        tokio::spawn(async move {
            let cors = edge.cors.clone();
            let calls = tower::service_fn(move |request: hyper::Request<Incoming>| {
                let edge = edge.clone();
                async move { Ok::<_, Infallible>(edge.call(peer, request.map(Body::new)).await) }
            });
            let served = match cors {
                Some(cors) => connection(stream, cors.layer(calls)).await,
                None => connection(stream, calls).await,
            };
            if let Err(e) = served {
                tracing::debug!(listener = name, %peer, error = %e, "connection ended");
            }
        });
    }
}

async fn connection<S>(stream: TcpStream, service: S) -> hyper::Result<()>
where
    S: tower::Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .await
}
