//! `meshd ping`: probes sent through the tunnel like any other packet, and their answers with
//! the path they took and the round-trip time.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rma_proto::lighthouse::Target;

use super::paths::Source;
use super::{Node, Now, Output};
use crate::ipv4;

/// Probes sent and not yet answered, at most; older ones are forgotten.
const MAX_PROBES: usize = 1024;

/// A `meshd ping` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pong {
    pub seq: u32,
    pub peer: String,
    pub mesh_ip: Ipv4Addr,
    /// How the probe travelled: `direct`, or `relayed via` a lighthouse.
    pub path: String,
    /// The peer's direct endpoint, when the probe travelled directly.
    pub endpoint: Option<SocketAddr>,
    pub rtt: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PingError {
    #[error(
        "no peer with that name or mesh IP, no static endpoint for it, and no lighthouse to ask"
    )]
    UnknownPeer,
}

/// Probes in flight by sequence number, and the answers not yet taken.
#[derive(Debug, Default)]
pub(crate) struct Probes {
    sent: HashMap<u32, (Instant, Ipv4Addr)>,
    pongs: Vec<Pong>,
}

impl Probes {
    pub(crate) fn len(&self) -> usize {
        self.sent.len()
    }

    fn sent(&mut self, seq: u32, to: Ipv4Addr, now: Instant) {
        if self.sent.len() >= MAX_PROBES {
            self.sent.clear();
        }
        self.sent.insert(seq, (now, to));
    }

    /// A pong for probe `seq` from `from` (named `peer`), which came by `path`.
    pub(crate) fn answered(
        &mut self,
        seq: u32,
        from: Ipv4Addr,
        peer: &str,
        source: Source,
        relay_name: &str,
        now: Instant,
    ) {
        let Some((sent, to)) = self.sent.remove(&seq) else {
            return;
        };
        if to != from {
            return;
        }
        let (path, endpoint) = match source {
            Source::Direct(from) => ("direct".to_owned(), Some(from)),
            Source::Relay(..) => (format!("relayed via {relay_name}"), None),
        };
        self.pongs.push(Pong {
            seq,
            peer: peer.to_owned(),
            mesh_ip: from,
            path,
            endpoint,
            rtt: now.saturating_duration_since(sent),
        });
    }
}

impl Node {
    /// Sends probe `seq` to the peer named `target` (a node name or mesh IP). It sets up the
    /// session if there is none yet, like any other packet; the answer, if any, shows up in
    /// [`Node::take_pongs`].
    pub fn ping(
        &mut self,
        target: &str,
        seq: u32,
        now: Now,
        out: &mut impl Output,
    ) -> Result<(), PingError> {
        let lighthouse_up = self.lighthouses.any_up();
        let ip = match (self.peers.by_name(target), target.parse::<Ipv4Addr>()) {
            (Some(peer), _) => peer.cert.mesh_ip(),
            (None, Ok(ip))
                if lighthouse_up
                    || self.peers.slot_of_ip(ip).is_some()
                    || self.static_peers.contains_key(&ip) =>
            {
                ip
            }
            (None, Err(_)) if lighthouse_up => {
                // Learn who has that name; the probes after this one find the peer.
                self.lighthouses
                    .ask_all(&Target::Name(target.to_owned()), now.instant, out);
                return Ok(());
            }
            _ => return Err(PingError::UnknownPeer),
        };
        self.probes.sent(seq, ip, now.instant);
        let packet = ipv4::probe_packet(self.cert.mesh_ip(), ip, ipv4::Probe::Ping(seq));
        self.handle_tun_packet(&packet, now, out);
        Ok(())
    }

    /// Answers to probes received since the last call.
    pub fn take_pongs(&mut self) -> Vec<Pong> {
        std::mem::take(&mut self.probes.pongs)
    }
}
