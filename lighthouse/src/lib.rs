//! The RMA Mesh lighthouse: it lets nodes behind NAT find each other, tells both sides of a new
//! pair to punch towards each other at the same moment, and relays WireGuard ciphertext when no
//! direct path forms. The protocol nodes speak to it is in `rma-proto` (messages and datagrams)
//! and `rma_daemon::mesh_tls` (the mutual TLS), which `meshd` shares.

pub mod config;
pub mod link;
pub mod metrics;
pub mod relay;
pub mod rendezvous;
pub mod shell;
pub mod tcp;
