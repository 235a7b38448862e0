//! Pooled HTTP/1.1 connections to workers' mesh addresses. A connection goes back to the pool
//! when its response body has been read to the end; one dropped half-way is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A request body on its way to a worker: bytes in hand (most calls, sent again on a retry;
/// not boxed), or a stream passed through once.
pub type Outgoing = Either<Full<Bytes>, Body>;

pub type Sender = SendRequest<Outgoing>;

type Idle = HashMap<SocketAddr, Vec<Sender>, foldhash::fast::RandomState>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {addr}: {cause}")]
    Io {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("HTTP handshake with {addr}: {cause}")]
    Handshake {
        addr: SocketAddr,
        cause: hyper::Error,
    },
}

/// A connection ready for one request.
#[derive(Debug)]
pub struct Conn {
    pub sender: Sender,
    /// It served an earlier request (a closed pooled connection is no fault of the worker).
    pub reused: bool,
}

#[derive(Debug)]
pub struct Pool {
    /// By worker address, hashed fast (the addresses are the registry's).
    idle: Mutex<Idle>,
    max_idle: usize,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(max_idle: usize, connect_timeout: Duration) -> Self {
        Self {
            idle: Mutex::new(Idle::default()),
            max_idle,
            connect_timeout,
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An idle connection to `addr`, or a new one.
    pub async fn checkout(&self, addr: SocketAddr) -> Result<Conn, ConnectError> {
        if let Some(sender) = self.take_idle(addr) {
            return Ok(Conn {
                sender,
                reused: true,
            });
        }
        // Boxed: connecting is rare once the pool is warm, and its state would otherwise make
        // every call's future (which is moved and copied) several hundred bytes larger.
        Box::pin(self.connect(addr)).await
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, ConnectError> {
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr))?
            .map_err(|cause| ConnectError::Io { addr, cause })?;
        stream
            .set_nodelay(true)
            .map_err(|cause| ConnectError::Io { addr, cause })?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|cause| ConnectError::Handshake { addr, cause })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%addr, error = %e, "worker connection ended");
            }
        });
        Ok(Conn {
            sender,
            reused: false,
        })
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle();
        let list = idle.get_mut(&addr)?;
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(sender) = list.pop() {
            if sender.is_closed() {
                continue;
            }
            if sender.is_ready() {
                found = Some(sender);
                break;
            }
            // Its last response ended a moment ago and the connection has not said it is
            // ready yet: keep it for later.
            busy.push(sender);
        }
        list.extend(busy);
        if list.is_empty() {
            idle.remove(&addr);
        }
        found
    }

    /// Returns a connection whose response ended.
    pub fn checkin(&self, addr: SocketAddr, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle {
            list.push(sender);
        }
    }

    /// Closes the idle connections to workers not in `keep`.
    pub fn retain(&self, keep: impl Fn(&SocketAddr) -> bool) {
        self.idle().retain(|addr, _| keep(addr));
    }

    pub fn idle_count(&self) -> usize {
        self.idle().values().map(Vec::len).sum()
    }
}

/// A worker's response body, streamed through: when it ends, its connection goes back to
/// the pool and `on_end` runs (it also runs if the body is dropped early).
pub struct Returning<F: FnOnce() + Send> {
    body: Incoming,
    ret: Option<(Arc<Pool>, SocketAddr, Sender)>,
    on_end: Option<F>,
}

impl<F: FnOnce() + Send> std::fmt::Debug for Returning<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returning").finish_non_exhaustive()
    }
}

impl<F: FnOnce() + Send + Unpin> Returning<F> {
    pub fn new(
        body: Incoming,
        pool: Arc<Pool>,
        addr: SocketAddr,
        sender: Sender,
        on_end: F,
    ) -> Self {
        let mut this = Self {
            body,
            ret: Some((pool, addr, sender)),
            on_end: Some(on_end),
        };
        if this.body.is_end_stream() {
            this.finish(true);
        }
        this
    }

    fn finish(&mut self, complete: bool) {
        if let Some((pool, addr, sender)) = self.ret.take()
            && complete
        {
            pool.checkin(addr, sender);
        }
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}

impl<F: FnOnce() + Send + Unpin> HttpBody for Returning<F> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finish(true),
            Poll::Ready(Some(Err(_))) => this.finish(false),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finish(true),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<F: FnOnce() + Send> Drop for Returning<F> {
    fn drop(&mut self) {
        // Dropped before the end: the connection closes with its sender.
        self.ret.take();
        if let Some(on_end) = self.on_end.take() {
            on_end();
        }
    }
}
