//! One certified peer: its certificate, its WireGuard tunnel and where to reach it.

use std::net::SocketAddr;
use std::time::Duration;

use boringtun::noise::Tunn;
use rma_ca::NodeCert;

use crate::status::{PeerCounters, PeerStatus};

pub(crate) struct Peer {
    pub(crate) cert: NodeCert,
    pub(crate) tunn: Tunn,
    /// Where this peer's datagrams go: set from configuration or a hello, then moved by every
    /// authenticated datagram from a new address (roaming).
    pub(crate) endpoint: SocketAddr,
    pub(crate) counters: PeerCounters,
    /// The span every event about this peer is logged in (name and mesh IP).
    pub(crate) span: tracing::Span,
    /// Completed handshakes, and the time since the last one as of the previous timer tick:
    /// a smaller value now means a handshake completed in between.
    pub(crate) handshakes: u64,
    pub(crate) since_handshake: Option<Duration>,
}

impl Peer {
    /// Notes a handshake that completed since the last call (called every timer tick).
    pub(crate) fn count_handshake(&mut self) {
        let now = self.tunn.time_since_last_handshake();
        let completed = match (self.since_handshake, now) {
            (None, Some(_)) => true,
            (Some(before), Some(after)) => after < before,
            _ => false,
        };
        self.handshakes += u64::from(completed);
        self.since_handshake = now;
    }

    pub(crate) fn status(&self) -> PeerStatus {
        let (since_handshake, tx, rx, _loss, rtt) = self.tunn.stats();
        PeerStatus {
            name: self.cert.name().to_string(),
            mesh_ip: self.cert.mesh_ip().to_string(),
            groups: self.cert.groups().iter().map(ToString::to_string).collect(),
            endpoint: self.endpoint.to_string(),
            path: "direct".into(),
            last_handshake_secs: since_handshake.as_ref().map(Duration::as_secs),
            handshakes: self.handshakes,
            rtt_ms: rtt,
            tx_bytes: tx as u64,
            rx_bytes: rx as u64,
            drops: self.counters,
            cert_not_after: rma_ca::timefmt::rfc3339(self.cert.not_after()),
        }
    }
}
