//! What a node and a lighthouse say to each other over their QUIC connection (mutual TLS, ALPN
//! [`ALPN`]).
//!
//! - **Control**: one bidirectional stream, opened by the node right after the handshake.
//!   Each message is a frame: a big-endian `u32` length, then the message encoded with
//!   postcard. A frame longer than [`MAX_FRAME`] ends the connection.
//! - **Relay**: QUIC datagrams, each a 4-byte mesh IP followed by one WireGuard datagram. From
//!   a node the IP names the destination; from the lighthouse it names the source, which the
//!   lighthouse takes from the sender's certificate. A relayed packet that does not fit in a
//!   datagram at the moment (QUIC is still discovering the path MTU) travels alone on a
//!   unidirectional stream with the same layout.

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::wire::TOKEN_LEN;

pub const ALPN: &[u8] = b"rma-lighthouse/1";
/// The lighthouse's QUIC port unless configured otherwise; the reflector listens on the next.
pub const DEFAULT_PORT: u16 = 4243;
/// Largest control frame: a peer answer is a certificate and a few endpoints; a CRL with
/// thousands of entries still fits.
pub const MAX_FRAME: usize = 256 * 1024;
/// Largest relayed packet: a WireGuard datagram for the largest TUN MTU meshd accepts.
pub const MAX_RELAYED: usize = 65_536;
/// Endpoints a node may register, at most.
pub const MAX_LOCAL_ENDPOINTS: usize = 16;

/// Whom a node asks about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Target {
    MeshIp(Ipv4Addr),
    Name(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::MeshIp(ip) => ip.fmt(f),
            Self::Name(name) => name.fmt(f),
        }
    }
}

/// Messages from a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ToLighthouse {
    /// The node's local candidate endpoints: its own addresses with its WireGuard port.
    /// Sent first, and again whenever they change.
    Register { local: Vec<SocketAddr> },
    /// Asks for a peer; the answer is [`FromLighthouse::Peer`] or [`FromLighthouse::NotFound`].
    Query { target: Target },
    /// The node renewed its certificate (DER, with its issuing CA's after it): same name, mesh
    /// IP and keys as the one the connection was made with, later expiry. The lighthouse hands
    /// it to peers from now on, and keeps the connection past the old one's expiry.
    Renewed { cert: Vec<u8> },
    /// The node does not need this connection for now: it will close it and keep its
    /// registration with parked pings ([`crate::parked`]). Only after `Register`.
    Park,
}

/// Messages from a lighthouse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FromLighthouse {
    /// The answer to the first `Register`: send `token` in a reflect message from the
    /// WireGuard socket to the lighthouse's `reflector_port`.
    Welcome {
        token: [u8; TOKEN_LEN],
        reflector_port: u16,
        /// The address the lighthouse sees for the node's QUIC socket.
        quic_observed: SocketAddr,
    },
    /// The public address of the node's WireGuard socket, as the reflector saw it.
    Observed {
        wireguard: SocketAddr,
    },
    /// A registered peer: its certificate (DER) and where to reach it, best first.
    Peer {
        cert: Vec<u8>,
        endpoints: Vec<SocketAddr>,
    },
    NotFound {
        target: Target,
    },
    /// Another node is about to contact this one: punch towards its endpoints.
    Punch {
        cert: Vec<u8>,
        endpoints: Vec<SocketAddr>,
    },
    /// The CA's current revocation list (DER); check its signature before using it.
    Crl {
        der: Vec<u8>,
    },
    /// The answer to `Park`: the registration now lives on parked pings, under the key both
    /// ends derive from this connection. `lists` is the digest of the revocation lists the
    /// lighthouse holds, which its acks repeat; when it changes, the node connects again.
    Parked {
        lists: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    #[error("malformed message: {0}")]
    Decode(#[from] postcard::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes one control frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut frame = vec![0; 4];
    frame = postcard::to_extend(message, frame)?;
    let len = frame.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    frame[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(frame)
}

pub async fn write<T: Serialize>(
    stream: &mut (impl AsyncWrite + Unpin),
    message: &T,
) -> Result<(), FrameError> {
    stream.write_all(&encode(message)?).await?;
    Ok(())
}

/// Reads one control frame; `None` when the stream ended cleanly between frames.
pub async fn read<T: for<'de> Deserialize<'de>>(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<Option<T>, FrameError> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf.resize(len, 0);
    stream.read_exact(buf).await?;
    decode(buf).map(Some)
}

/// Decodes one control frame's body (without its length prefix).
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, FrameError> {
    Ok(postcard::from_bytes(body)?)
}

/// A relayed packet: the mesh IP it is for (from a node) or from (from the lighthouse), and
/// the WireGuard datagram.
pub fn relay_frame(ip: Ipv4Addr, datagram: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(4 + datagram.len());
    frame.extend_from_slice(&ip.octets());
    frame.extend_from_slice(datagram);
    frame
}

/// Splits a relayed packet into its mesh IP and datagram; `None` if it is too short or too long.
pub fn split_relay(frame: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    let (ip, datagram) = frame.split_first_chunk::<4>()?;
    (!datagram.is_empty() && datagram.len() <= MAX_RELAYED).then(|| (Ipv4Addr::from(*ip), datagram))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let message = FromLighthouse::Peer {
            cert: vec![1, 2, 3],
            endpoints: vec!["192.0.2.1:4242".parse().unwrap()],
        };
        let mut bytes = encode(&message).unwrap();
        bytes.extend(
            encode(&ToLighthouse::Query {
                target: Target::Name("worker-1".into()),
            })
            .unwrap(),
        );
        let mut reader = bytes.as_slice();
        let mut buf = Vec::new();
        assert_eq!(
            read::<FromLighthouse>(&mut reader, &mut buf).await.unwrap(),
            Some(message)
        );
        assert_eq!(
            read::<ToLighthouse>(&mut reader, &mut buf).await.unwrap(),
            Some(ToLighthouse::Query {
                target: Target::Name("worker-1".into())
            })
        );
        assert_eq!(
            read::<ToLighthouse>(&mut reader, &mut buf).await.unwrap(),
            None
        );

        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read::<ToLighthouse>(&mut huge.as_slice(), &mut buf).await,
            Err(FrameError::TooLarge(_))
        ));
        let garbage = [0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert!(matches!(
            read::<ToLighthouse>(&mut garbage.as_slice(), &mut buf).await,
            Err(FrameError::Decode(_))
        ));
        let truncated = [0, 0, 0, 9, 1];
        assert!(matches!(
            read::<ToLighthouse>(&mut truncated.as_slice(), &mut buf).await,
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn relay_frames() {
        let frame = relay_frame(Ipv4Addr::new(10, 42, 0, 2), b"wg");
        assert_eq!(
            split_relay(&frame),
            Some((Ipv4Addr::new(10, 42, 0, 2), &b"wg"[..]))
        );
        assert_eq!(split_relay(&frame[..4]), None);
        assert_eq!(split_relay(&frame[..3]), None);
    }
}
