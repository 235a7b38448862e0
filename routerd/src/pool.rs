//! Pooled HTTP/1.1 connections to workers' mesh addresses ([`http1::Conn`]). A connection
//! goes back to the pool when its response body has been read to the end; one dropped
//! half-way is closed.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use rma_daemon::http1::{self, Conn};

type Idle = HashMap<SocketAddr, Vec<Conn>, foldhash::fast::RandomState>;

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("connect to {addr}: {cause}")]
    Io {
        addr: SocketAddr,
        cause: std::io::Error,
    },
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
        rma_daemon::sync::lock(&self.idle)
    }

    /// An idle connection to `addr`, or a new one.
    pub async fn checkout(&self, addr: SocketAddr) -> Result<Conn, ConnectError> {
        if let Some(conn) = self.take_idle(addr) {
            return Ok(conn);
        }
        // Boxed: connecting is rare once the pool is warm, and its state would otherwise make
        // every call's future (which is moved and copied) larger.
        Box::pin(self.connect(addr)).await
    }

    async fn connect(&self, addr: SocketAddr) -> Result<Conn, ConnectError> {
        tokio::time::timeout(self.connect_timeout, http1::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr))?
            .map_err(|cause| ConnectError::Io { addr, cause })
    }

    /// The most recently returned idle connection that the worker has not closed.
    fn take_idle(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle();
        let list = idle.get_mut(&addr)?;
        let found = std::iter::from_fn(|| list.pop()).find(|conn| !conn.closed());
        if list.is_empty() {
            idle.remove(&addr);
        }
        found
    }

    /// Returns a connection whose response ended.
    pub fn checkin(&self, addr: SocketAddr, conn: Conn) {
        let mut idle = self.idle();
        let list = idle.entry(addr).or_default();
        if list.len() < self.max_idle {
            list.push(conn);
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
