//! What `meshd status` shows: a snapshot of the node and its peers, as JSON on the status socket.

use serde::{Deserialize, Serialize};

/// Packets and messages the node dropped, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeCounters {
    /// Certificate hellos whose certificate did not verify.
    pub bad_cert: u64,
    /// Datagrams that are neither WireGuard nor a well-formed control message.
    pub malformed: u64,
    /// WireGuard messages for no known peer or session.
    pub unknown_peer: u64,
    /// Packets from the TUN for a mesh IP with no peer and no static endpoint.
    pub no_route: u64,
    /// Packets dropped because the queue for a peer being set up was full or timed out.
    pub queue_dropped: u64,
    /// Datagrams that could not be sent: refused by the kernel (no route, buffer full after
    /// waiting, ...), or for a lighthouse relay whose connection was gone or full.
    pub send_failed: u64,
    /// Unauthenticated messages (hellos, answers to them) over their source's or the node's
    /// budget, and hellos that would have been answered with more bytes than they carried.
    #[serde(default)]
    pub over_budget: u64,
    /// Hellos that would have replaced a peer with an established session.
    #[serde(default)]
    pub hello_conflict: u64,
    /// TUN reads the offload splitter refused (a header or segment it could not split), and
    /// writes into the TUN that failed.
    #[serde(default)]
    pub tun_failed: u64,
}

/// The event loop's busy polls since meshd started (`[tun] busy_poll_us`): how often it spun
/// for input after a data turn, and how often input came before the window closed. Their ratio
/// says whether the spin pays for its CPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusyPolls {
    pub spins: u64,
    pub caught: u64,
}

/// This node's certificate renewals since meshd started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewals {
    pub succeeded: u64,
    pub failed: u64,
    /// When the next attempt is due (RFC 3339); none without an `[enrollment]` section.
    pub next_attempt: Option<String>,
    /// Seconds until then (negative while overdue).
    pub next_attempt_in_secs: Option<i64>,
}

/// How many entries the node's tables hold, each of which has a bound: what `meshd status`
/// and the metrics show, and what the long-running tests hold to their bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tables {
    pub peers: usize,
    /// Destinations with packets waiting for their peer, and the bytes waiting.
    pub pending: usize,
    pub pending_bytes: usize,
    pub flows: usize,
    /// Relayed handshakes held until their sender's certificate arrives.
    pub held_handshakes: usize,
    pub probes: usize,
    /// Budget tables: sources of hellos, of answers, and refused certificates remembered.
    pub hello_sources: usize,
    pub answer_sources: usize,
    pub refused_certificates: usize,
}

/// Per-peer drop counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerCounters {
    /// Decrypted packets whose source was not the peer's certificate IP.
    pub spoofed: u64,
    /// Decrypted packets not addressed to this node.
    pub misrouted: u64,
    /// WireGuard messages from this peer that failed to decrypt or authenticate.
    pub rejected: u64,
    /// Packets from this peer that the firewall refused.
    pub firewall_in: u64,
    /// Packets to this peer that the firewall refused.
    pub firewall_out: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    pub name: String,
    pub mesh_ip: String,
    pub groups: Vec<String>,
    pub endpoint: String,
    /// How packets reach the peer: `direct` to its endpoint, `relayed` through a lighthouse,
    /// or `connecting` while its candidate endpoints are being tried.
    pub path: String,
    /// The lighthouse that relays, when the path is `relayed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Seconds since the last completed handshake; absent before the first.
    pub last_handshake_secs: Option<u64>,
    /// Handshakes completed with this peer.
    pub handshakes: u64,
    /// Round-trip time measured by the last handshake, in milliseconds.
    pub rtt_ms: Option<u32>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub drops: PeerCounters,
    pub cert_not_after: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub name: String,
    pub mesh_ip: String,
    pub cert_not_after: String,
    /// Seconds until this node's certificate expires (negative once it has).
    pub cert_expires_in_secs: i64,
    /// Seconds until the CA expires.
    pub ca_expires_in_secs: i64,
    /// Seconds until the revocation list in use is due to be replaced (negative once past);
    /// none without a list, or for a list with no next-update time.
    #[serde(default)]
    pub crl_next_update_in_secs: Option<i64>,
    pub drops: NodeCounters,
    #[serde(default)]
    pub tables: Tables,
    /// Renewals of this node's certificate through its enrollment service.
    #[serde(default)]
    pub renewals: Renewals,
    #[serde(default)]
    pub busy_polls: BusyPolls,
    pub peers: Vec<PeerStatus>,
    #[serde(default)]
    pub lighthouses: Vec<LighthouseStatus>,
}

/// One configured lighthouse, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LighthouseStatus {
    pub name: String,
    pub address: String,
    pub connected: bool,
    /// The connection is parked: the node stays registered with signed pings.
    #[serde(default)]
    pub parked: bool,
    /// The public address of this node's WireGuard socket, as the lighthouse sees it.
    pub observed: Option<String>,
    /// How the connection travels while up: `quic`, or `tcp` where QUIC did not come up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transport: Option<String>,
}
