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
}

impl Peer {
    pub(crate) fn status(&self) -> PeerStatus {
        let (since_handshake, tx, rx, _loss, _rtt) = self.tunn.stats();
        PeerStatus {
            name: self.cert.name().to_string(),
            mesh_ip: self.cert.mesh_ip().to_string(),
            groups: self.cert.groups().iter().map(ToString::to_string).collect(),
            endpoint: self.endpoint.to_string(),
            last_handshake_secs: since_handshake.as_ref().map(Duration::as_secs),
            tx_bytes: tx as u64,
            rx_bytes: rx as u64,
            drops: self.counters,
            cert_not_after: rma_ca::timefmt::rfc3339(self.cert.not_after()),
        }
    }
}
