//! routerd, the RMA Mesh coordinator: it keeps the registry of workers and the services they
//! run, and forwards each service call to a worker's mesh IP.

pub mod admission;
pub mod api;
pub mod app;
pub mod assign;
pub mod balance;
pub mod catalog;
pub mod config;
pub mod conn_limit;
pub mod edge;
pub mod health;
pub mod metrics;
pub mod pace;
pub mod plan;
pub mod pool;
pub mod proxy;
pub mod rate_limit;
pub mod registry;
pub mod replicas;
pub mod retry_budget;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod shell;
pub mod store;
pub mod topology;
