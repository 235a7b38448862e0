//! The HTTP/1.1 server both listeners run, on hyper directly. A service call
//! (`/service/...`, `/api/service/...`) goes straight to the proxy; every other route goes
//! through the axum router. Every call gets its request ID and access-log line here (see
//! [`crate::edge::Stamp`]), and CORS, when configured, covers both.
//!
//! Connections are accepted on the main runtime and served by [`Servers`]: one thread per
//! core, each with a single-threaded runtime and its own pool of connections to workers, so a
//! call, its worker connection and the response stay on one thread.
//!
//! Both choices are about cost per call (`make bench-routerd`): going through axum's routing
//! and middleware stack cost routerd about 15% of its throughput, and one multi-threaded
//! runtime, handing each call between threads, about a fifth of its CPU per call.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tower::{Layer as _, ServiceExt as _};
use tower_http::cors::CorsLayer;

use crate::app::Shared;
use crate::config::Limits;
use crate::edge::{Listener, Remote, Stamp};
use crate::pace::{Pace, Paced, WriteDeadline};
use crate::pool::Pool;
use crate::proxy::{self, Call};

/// The pause after a failed accept (such as running out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What one listener serves, shared by its connections ([`serve`] takes it in an `Arc`: each
/// call holds a pointer to it, not a copy).
#[derive(Debug)]
pub struct Edge {
    pub app: Shared,
    /// Every route but the service calls ([`crate::api::routes`]).
    pub router: Router,
    pub listener: Listener,
    pub cors: Option<CorsLayer>,
}

/// The threads that serve connections.
#[derive(Debug)]
pub struct Servers {
    threads: Vec<Serving>,
    next: AtomicUsize,
}

#[derive(Debug)]
struct Serving {
    runtime: Handle,
    pool: Arc<Pool>,
    /// Dropped with [`Servers`]: the thread's runtime then stops, with its connections.
    _stop: oneshot::Sender<()>,
}

impl Servers {
    /// Starts one thread for each of `pools`.
    pub fn start(pools: &[Arc<Pool>]) -> std::io::Result<Self> {
        let mut threads = Vec::with_capacity(pools.len());
        for (i, pool) in pools.iter().enumerate() {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("routerd-serve-{i}"))
                .spawn(move || {
                    let _ = runtime.block_on(stopped);
                })?;
            threads.push(Serving {
                runtime: handle,
                pool: pool.clone(),
                _stop: stop,
            });
        }
        Ok(Self {
            threads,
            next: AtomicUsize::new(0),
        })
    }

    /// The thread for the next connection, in turn.
    fn next(&self) -> &Serving {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.threads[i % self.threads.len()]
    }
}

/// Accepts connections on `listener` and hands each to a serving thread, until dropped.
pub async fn serve(
    listener: TcpListener,
    edge: Arc<Edge>,
    servers: Arc<Servers>,
    name: &'static str,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let peer = Remote::new(peer, &edge.app.trusted_proxies);
        // A trusted proxy carries many callers on its connections: only the listener's own
        // bound holds it.
        let shared_address = edge.listener == Listener::Public && peer.trusted_proxy;
        let permit = match edge
            .app
            .connections(edge.listener)
            .admit(peer.addr.ip(), shared_address)
        {
            Ok(permit) => permit,
            Err(full) => {
                tracing::debug!(listener = name, peer = %peer.addr, ?full, "connection refused: too many open");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // Deregistered from this runtime, registered again with the serving thread's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(listener = name, peer = %peer.addr, error = %e, "cannot hand a connection over");
                continue;
            }
        };
        let serving = servers.next();
        let pool = serving.pool.clone();
        let edge = edge.clone();
        serving.runtime.spawn(async move {
            let _permit = permit;
            let addr = peer.addr;
            let stream = match TcpStream::from_std(stream) {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!(listener = name, peer = %addr, error = %e, "cannot serve a connection");
                    return;
                }
            };
            let limits = edge.app.limits;
            let calls = Calls { edge, pool, peer };
            let served = match calls.edge.cors.clone() {
                Some(cors) => {
                    let service = TowerToHyperService::new(cors.layer(calls));
                    connection(stream, service, &limits).await
                }
                None => connection(stream, calls, &limits).await,
            };
            if let Err(e) = served {
                tracing::debug!(listener = name, peer = %addr, error = %e, "connection ended");
            }
        });
    }
}

/// The calls on one connection. A hyper service itself, so a call without CORS goes from
/// hyper straight to [`Calls::answer`]; a tower service too, for the CORS layer.
#[derive(Clone)]
struct Calls {
    edge: Arc<Edge>,
    pool: Arc<Pool>,
    peer: Remote,
}

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl Calls {
    /// Answers one request. A service call is checked here, and only sending it is a future
    /// (one allocation per call, small); its body goes to the worker as hyper read it. The
    /// other routes get axum's body.
    fn answer(&self, request: hyper::Request<Incoming>) -> Answer {
        let edge = &self.edge;
        let limits = &edge.app.limits;
        let pace = Pace {
            grace: limits.body_grace,
            min_rate: limits.body_min_rate,
        };
        let mut request = request.map(|body| Paced::new(body, pace));
        let stamp = Stamp::take(&mut request);
        if !proxy::is_service_call(request.uri().path()) {
            let mut request = request.map(Body::new);
            request.extensions_mut().insert(ConnectInfo(self.peer.addr));
            let routed = edge.router.clone().oneshot(request);
            return Box::pin(async move {
                let Ok(response) = routed.await;
                Ok(stamp.finish(response))
            });
        }
        match Call::admit(&edge.app, &self.peer, edge.listener, request) {
            Ok((call, body)) => {
                let (app, pool) = (edge.app.clone(), self.pool.clone());
                Box::pin(async move {
                    let response = call.send(&app, &pool, body).await;
                    Ok(stamp.finish(response))
                })
            }
            Err(response) => Box::pin(std::future::ready(Ok(stamp.finish(response)))),
        }
    }
}

impl hyper::service::Service<hyper::Request<Incoming>> for Calls {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: hyper::Request<Incoming>) -> Answer {
        self.answer(request)
    }
}

impl tower::Service<hyper::Request<Incoming>> for Calls {
    type Response = Response;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: hyper::Request<Incoming>) -> Answer {
        self.answer(request)
    }
}

/// Serves one connection within `limits`: its request heads (hyper answers 431 to one too
/// large, and closes a connection whose head, or the next one, takes too long), and its
/// response writes ([`WriteDeadline`]). Request bodies are paced in [`Calls::answer`].
async fn connection<S>(stream: TcpStream, service: S, limits: &Limits) -> hyper::Result<()>
where
    S: hyper::service::Service<hyper::Request<Incoming>, Response = Response, Error = Infallible>
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(WriteDeadline::new(stream, limits.write_timeout));
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(io, service)
        .await
}
