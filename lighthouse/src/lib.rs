//! The RMA Mesh lighthouse: it lets nodes behind NAT find each other, tells both sides of a new
//! pair to punch towards each other at the same moment, and relays WireGuard ciphertext when no
//! direct path forms. This crate also holds the protocol nodes speak to it ([`proto`], [`wire`],
//! [`tls`]), which `meshd` uses.

pub mod config;
pub mod metrics;
pub mod proto;
pub mod relay;
pub mod rendezvous;
pub mod shell;
pub mod tls;
pub mod wire;
