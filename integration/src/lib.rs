//! The namespace harness for end-to-end tests: build a network out of Linux network namespaces,
//! veth links and nftables, run the real daemons inside it, wait on conditions with deadlines,
//! and always tear it all down.

pub mod bench;
pub mod container;
pub mod enroll;
pub mod fuzz;
pub mod guide;
pub mod http;
pub mod internet;
pub mod join_site;
pub mod lab;
pub mod machine;
pub mod mesh;
pub mod names;
pub mod package;
pub mod quic_client;
pub mod resolved;
pub mod service;
pub mod traffic;
pub mod wait;
