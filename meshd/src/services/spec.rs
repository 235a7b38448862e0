//! What `[[service]]` says a machine can run, and how.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

pub use rma_proto::registration::Service;

/// How meshd runs a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Runner {
    /// The operator runs it; meshd only reports it.
    External,
    /// meshd runs this process itself.
    Exec(Exec),
    /// meshd starts and stops this systemd unit.
    Unit(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Runs it as this user (and the user's group) when set.
    pub user: Option<String>,
    pub working_dir: Option<PathBuf>,
    /// More environment, beside `RMA_SERVICE`, `RMA_MESH_IP` and `RMA_PORT`.
    pub env: BTreeMap<String, String>,
}

/// A service this machine can run: what a registration offers, and how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalService {
    pub offer: Service,
    pub runner: Runner,
    /// After SIGTERM (or `systemctl stop`), how long it has to exit before SIGKILL.
    pub stop_grace: Duration,
    /// How long a start has to pass its health check before it counts as failed.
    pub start_timeout: Duration,
}

impl LocalService {
    pub fn name(&self) -> &str {
        &self.offer.name
    }

    pub fn managed(&self) -> bool {
        self.runner != Runner::External
    }
}

pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
