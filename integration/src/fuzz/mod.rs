//! The bodies of the fuzz targets in `fuzz/`: one per parser of network input. cargo-fuzz runs
//! them under libFuzzer (`make fuzz`); `tests/fuzz_corpus.rs` runs each over its committed
//! corpus in every `make test`, with the ordinary build.

mod common;
mod control_messages;
mod dns_queries;
mod enrollment;
mod lighthouse_frames;
mod node_datagrams;
mod registration;
mod request_heads;
mod scripted;
mod stream_frames;
mod tun_packets;
mod tun_writes;
mod worker_responses;

pub use control_messages::control_messages;
pub use dns_queries::dns_queries;
pub use enrollment::enrollment;
pub use lighthouse_frames::lighthouse_frames;
pub use node_datagrams::node_datagrams;
pub use registration::registration;
pub use request_heads::request_heads;
pub use stream_frames::stream_frames;
pub use tun_packets::tun_packets;
pub use tun_writes::tun_writes;
pub use worker_responses::worker_responses;

/// A fuzz target's body: any bytes in, a panic on a bug.
pub type Target = fn(&[u8]);

/// Every target, by the name its fuzz binary and corpus directory have.
pub const TARGETS: [(&str, Target); 11] = [
    ("control_messages", control_messages),
    ("dns_queries", dns_queries),
    ("enrollment", enrollment),
    ("lighthouse_frames", lighthouse_frames),
    ("node_datagrams", node_datagrams),
    ("registration", registration),
    ("request_heads", request_heads),
    ("stream_frames", stream_frames),
    ("tun_packets", tun_packets),
    ("tun_writes", tun_writes),
    ("worker_responses", worker_responses),
];
