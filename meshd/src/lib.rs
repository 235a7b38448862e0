//! meshd: the RMA Mesh node daemon. A sans-IO core ([`node`]) holds the peers and their
//! WireGuard tunnels; a thin tokio shell ([`shell`]) owns the TUN device and the UDP socket.

mod batch;
pub mod config;
pub mod control;
pub mod firewall;
pub mod identity;
mod ipv4;
pub mod metrics;
pub mod node;
mod peer;
pub mod shell;
pub mod status;
mod udp;
pub mod wire;

#[cfg(test)]
mod node_tests;
