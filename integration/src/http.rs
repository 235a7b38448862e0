//! The HTTP client the tests call routerd and the test services with (rma-daemon's).

pub use rma_daemon::http_client::{Reply, call, get};
