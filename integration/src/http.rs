//! The HTTP client the tests call routerd and the test services with (rma-daemon's).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
pub use rma_daemon::http_client::{Reply, call};

/// A GET with no body, answered within 10 s.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> anyhow::Result<Reply> {
    call(
        addr,
        None,
        "GET",
        path,
        headers,
        Bytes::new(),
        Duration::from_secs(10),
    )
    .await
}
