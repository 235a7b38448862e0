//! What every RMA Mesh daemon (meshd, lighthouse, routerd) shares: config files parsed with
//! precise errors, the `[pki]` and `[log]` sections, loading the daemon's own certified
//! identity, logging with a reloadable filter, and the signals systemd sends.

pub mod config;
pub mod crl_watch;
pub mod http1;
pub mod http_client;
pub mod identity;
pub mod lifecycle;
pub mod logging;
#[cfg(feature = "quic")]
pub mod mesh_tls;
pub mod prometheus;
pub mod signals;
pub mod sync;
pub mod token_bucket;
pub mod trust;

pub use config::{ConfigError, Log, LogFormat, PkiPaths};
pub use identity::Identity;
pub use logging::Reload;
