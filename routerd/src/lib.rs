//! routerd, the RMA Mesh coordinator: it keeps the registry of workers and the services they
//! run, and (to come) forwards each service call to a worker's mesh IP.
//!
//! Built so far: the service catalog, who may register (admission), the registry
//! (assignment, heartbeats, staleness, gaps), its SQLite store, and the registry's HTTP routes.
//! The service proxy, the listeners and the daemon are not built yet.

pub mod admission;
pub mod api;
pub mod catalog;
pub mod registry;
pub mod store;
