//! meshd: the RMA Mesh node daemon. A sans-IO core ([`node`]) holds the peers and their
//! WireGuard tunnels; a thin tokio shell ([`shell`]) owns the TUN device and the UDP socket.

mod batch;
pub mod busy_poll;
pub mod capabilities;
pub mod config;
pub mod control;
pub mod coordinator;
pub mod dns;
mod dns_server;
pub mod enroll_http;
pub mod firewall;
#[cfg(any(test, feature = "forge"))]
pub mod forge;
pub mod http_proxy;
pub mod ipv4;
pub mod join;
pub mod lighthouse_address;
pub mod lighthouse_links;
mod lighthouse_tcp;
pub mod metrics;
pub mod node;
mod port_mapping;
pub mod renewal;
pub mod renewer;
mod resolved;
pub mod services;
pub mod shell;
pub mod status;
pub mod tun_device;
mod udp;
pub mod worker;
