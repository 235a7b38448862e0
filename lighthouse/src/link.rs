//! A node's connection as the relay and the core's effects see it: QUIC, or TLS over TCP
//! ([`crate::tcp`]). Relayed packets go out on it, and a close ends it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

/// Relayed packets waiting for one TCP node's writer; beyond it they are dropped, as a full
/// socket buffer drops UDP.
pub const TCP_RELAY_QUEUE: usize = 512;

#[derive(Debug, Clone)]
pub enum NodeLink {
    Quic(quinn::Connection),
    Tcp(TcpLink),
}

/// The handle on one node's TCP link: its relay queue, and a way to close it.
#[derive(Debug, Clone)]
pub struct TcpLink {
    relay: mpsc::Sender<Bytes>,
    close: Arc<Notify>,
}

/// How a relayed packet fared on a link.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Yes,
    /// Dropped: the link's buffer is full or it is gone.
    Dropped,
    /// Too large for a QUIC datagram at the moment: the packet is handed back for a stream.
    TooLarge(Bytes),
}

impl TcpLink {
    /// A handle, the relay queue its writer drains, and the signal that closes it.
    pub fn new() -> (Self, mpsc::Receiver<Bytes>, Arc<Notify>) {
        let (relay, queue) = mpsc::channel(TCP_RELAY_QUEUE);
        let close = Arc::new(Notify::new());
        let link = Self {
            relay,
            close: Arc::clone(&close),
        };
        (link, queue, close)
    }
}

impl NodeLink {
    /// Sends a relayed packet (mesh IP and datagram, [`rma_proto::lighthouse::relay_frame`]).
    pub fn relay(&self, packet: Bytes) -> Sent {
        match self {
            Self::Quic(connection) => {
                if connection
                    .max_datagram_size()
                    .is_none_or(|max| packet.len() > max)
                {
                    return Sent::TooLarge(packet);
                }
                match connection.send_datagram(packet) {
                    Ok(()) => Sent::Yes,
                    Err(_) => Sent::Dropped,
                }
            }
            Self::Tcp(link) => match link.relay.try_send(packet) {
                Ok(()) => Sent::Yes,
                Err(_) => Sent::Dropped,
            },
        }
    }

    pub fn close(&self, code: u32, reason: &str) {
        match self {
            Self::Quic(connection) => connection.close(code.into(), reason.as_bytes()),
            // The session ends at its next await; TCP has no close reason to carry.
            Self::Tcp(link) => link.close.notify_one(),
        }
    }
}
