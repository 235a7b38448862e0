//! The wire contracts between RMA Mesh's parts, in one small crate that both sides of each
//! depend on, so that no side is defined twice:
//! - [`lighthouse`]: the messages and framing a node and a lighthouse exchange over QUIC;
//! - [`stream`]: the same over TLS on TCP, for networks that let no UDP out;
//! - [`wire`]: what shares a node's WireGuard UDP socket besides WireGuard (certificate
//!   hellos, punches, reflect tokens);
//! - [`parked`]: the signed datagrams that keep a parked registration with a lighthouse;
//! - [`registration`]: the JSON a worker's meshd sends routerd, and routerd's answers;
//! - [`load`]: the load and service states a worker's heartbeats carry.

pub mod lighthouse;
pub mod load;
pub mod parked;
pub mod registration;
pub mod stream;
pub mod wire;
