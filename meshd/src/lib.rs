//! meshd: the RMA Mesh node daemon. A sans-IO core ([`node`]) holds the peers and their
//! WireGuard tunnels; a thin tokio shell ([`shell`]) owns the TUN device and the UDP socket.

pub mod config;
mod ipv4;
pub mod node;
mod peer;
pub mod status;
pub mod wire;

#[cfg(test)]
mod node_tests;
