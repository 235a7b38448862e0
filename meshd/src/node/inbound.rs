//! A WireGuard datagram from a peer, direct or relayed: which peer it is for, what it turned
//! out to be once decrypted ([`Inbound`]), and what the node does about it.

use std::net::IpAddr;

use boringtun::noise::handshake::parse_handshake_anon;
use boringtun::noise::{Packet, Tunn, TunnResult};

use super::paths::{self, Source};
use super::peers::Peer;
use super::{Node, Now, Output};
use crate::firewall::{Action, Direction, Firewall, Verdict};
use crate::ipv4;

/// What a datagram for a known peer turned out to be.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Inbound<'a> {
    /// A packet for this node that the firewall lets in: it goes to the TUN.
    Deliver(&'a [u8]),
    /// Authenticated, with nothing to deliver (a keepalive, a completed handshake).
    Authenticated,
    /// WireGuard's own answer (a handshake response, or a cookie reply under load), to go back
    /// the way the datagram came. A cookie reply comes before any authentication.
    Reply {
        datagram: &'a [u8],
        cookie: bool,
    },
    /// A packet to send back through the tunnel: the pong for the peer's ping.
    Answer(Vec<u8>),
    /// The answer to this node's probe `seq`.
    Pong(u32),
    Drop(Dropped),
}

/// Why an inbound datagram or packet was dropped.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Dropped {
    /// Relayed with another sender's mesh IP stamped on it: not this peer's.
    WrongStamp,
    /// It did not decrypt or authenticate.
    Rejected,
    /// Its source is not the peer's certified mesh IP.
    Spoofed,
    /// Not addressed to this node (or not IPv4).
    Misrouted,
    /// The inbound firewall refused it, with the answer its rule asks for.
    Firewall { reject: Option<Vec<u8>> },
}

impl Inbound<'_> {
    /// Whether the datagram proved the peer's key (and so may move its endpoint).
    fn authenticated(&self) -> bool {
        !matches!(
            self,
            Inbound::Reply { cookie: true, .. }
                | Inbound::Drop(Dropped::WrongStamp | Dropped::Rejected)
        )
    }
}

/// Decrypts `datagram` from `peer` and says what it is, judging a decrypted packet by the
/// checks every inbound packet passes: its source, its destination, probes, the firewall.
pub(super) fn decapsulate<'a>(
    peer: &mut Peer,
    source: Source,
    datagram: &[u8],
    my_ip: std::net::Ipv4Addr,
    firewall: &mut Firewall,
    scratch: &'a mut [u8],
    now: Now,
) -> Inbound<'a> {
    let peer_ip = peer.cert.mesh_ip();
    // Under load, a handshake must carry a cookie bound to its sender's address. A relayed one
    // has no address of its own, but the lighthouse delivers to a mesh IP only the node that
    // proved that certificate's key over mutual TLS: the stamped mesh IP is the address the
    // cookie binds, and the cookie reply goes back over the relay. (Given no address,
    // boringtun refuses every handshake under load.)
    let source_ip = match source {
        Source::Relay(_, stamped) if stamped != peer_ip => {
            return Inbound::Drop(Dropped::WrongStamp);
        }
        Source::Direct(from) => from.ip(),
        Source::Relay(_, stamped) => IpAddr::V4(stamped),
    };
    match peer.tunn.decapsulate(Some(source_ip), datagram, scratch) {
        TunnResult::Done => Inbound::Authenticated,
        TunnResult::Err(e) => {
            tracing::trace!(parent: &peer.span, error = ?e, "rejected datagram");
            Inbound::Drop(Dropped::Rejected)
        }
        TunnResult::WriteToNetwork(reply) => Inbound::Reply {
            cookie: reply.first() == Some(&3),
            datagram: reply,
        },
        TunnResult::WriteToTunnelV4(packet, src) => {
            if src != peer_ip {
                tracing::trace!(parent: &peer.span, %src, "dropped spoofed packet");
                return Inbound::Drop(Dropped::Spoofed);
            }
            let Some(flow) = ipv4::flow(packet).filter(|f| f.dst == my_ip) else {
                return Inbound::Drop(Dropped::Misrouted);
            };
            match ipv4::probe(packet) {
                Some(ipv4::Probe::Ping(seq)) => {
                    return Inbound::Answer(ipv4::probe_packet(my_ip, src, ipv4::Probe::Pong(seq)));
                }
                Some(ipv4::Probe::Pong(seq)) => return Inbound::Pong(seq),
                None => {}
            }
            match firewall.check(Direction::Inbound, &flow, &peer.cert, now.instant) {
                Verdict::Allow => Inbound::Deliver(packet),
                Verdict::Deny(action) => {
                    tracing::trace!(parent: &peer.span, ?flow, "firewall dropped inbound packet");
                    let reject = (action == Action::Reject)
                        .then(|| ipv4::reject(packet))
                        .flatten();
                    Inbound::Drop(Dropped::Firewall { reject })
                }
            }
        }
        TunnResult::WriteToTunnelV6(..) => Inbound::Drop(Dropped::Misrouted),
    }
}

impl Node {
    /// A WireGuard datagram: the peer it is for comes from the session index it carries, or
    /// for a handshake initiation from the sender's key, which only this node can decrypt.
    pub(super) fn handle_wireguard(
        &mut self,
        source: Source,
        datagram: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        let slot = match Tunn::parse_incoming_packet(datagram) {
            Ok(Packet::HandshakeInit(init)) => {
                // The key exchange that names the sender costs far more than the MAC1 check,
                // which needs nothing but this node's public key: a forgery without a valid
                // MAC1 costs a hash.
                if self
                    .mac1
                    .verify_packet(None, datagram, &mut self.scratch)
                    .is_err()
                {
                    self.counters.malformed += 1;
                    return;
                }
                parse_handshake_anon(&self.secret, &self.public, &init)
                    .ok()
                    .and_then(|half| self.peers.slot_of_key(&half.peer_static_public))
            }
            Ok(Packet::HandshakeResponse(p)) => self.peers.slot_of_session(p.receiver_idx),
            Ok(Packet::PacketCookieReply(p)) => self.peers.slot_of_session(p.receiver_idx),
            Ok(Packet::PacketData(p)) => self.peers.slot_of_session(p.receiver_idx),
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        match (slot, source) {
            (Some(slot), _) => self.handle_inbound(slot, source, datagram, now, out),
            // A handshake from a key this node does not know is not answered: its sender
            // repeats its hello with its retries ([`paths::send`]), and an answer to a forged
            // one would go wherever the forger pointed it.
            (None, Source::Direct(_)) => self.counters.unknown_peer += 1,
            (None, Source::Relay(via, from)) => {
                self.counters.unknown_peer += 1;
                if datagram[0] == 1 {
                    self.held.hold(via, from, datagram, now.instant, out);
                }
            }
        }
    }

    /// Decrypts a datagram for the peer in `slot` and acts on what it was.
    fn handle_inbound(
        &mut self,
        slot: usize,
        source: Source,
        datagram: &[u8],
        now: Now,
        out: &mut impl Output,
    ) {
        let my_ip = self.cert.mesh_ip();
        let Some(peer) = self.peers.get_mut(slot) else {
            return;
        };
        let peer_ip = peer.cert.mesh_ip();
        // Opened where it is written to the TUN from; a handshake's reply needs more room than
        // its datagram only for the smallest messages.
        let room = datagram.len().max(super::HANDSHAKE_INIT_LEN);
        let inbound = decapsulate(
            peer,
            source,
            datagram,
            my_ip,
            &mut self.firewall,
            out.packet_buffer(room),
            now,
        );
        let authenticated = inbound.authenticated();
        // An answer to send back through the tunnel: a pong or a firewall reject.
        let mut answer = None;
        match inbound {
            Inbound::Deliver(packet) => {
                let len = packet.len();
                out.deliver_written(len);
            }
            Inbound::Authenticated => {}
            Inbound::Reply { datagram, .. } => {
                // Copied out of the packet buffer, which the output is about to be handed.
                let reply = &mut self.scratch[..datagram.len()];
                reply.copy_from_slice(datagram);
                paths::send_back(source, peer_ip, reply, out);
                while let TunnResult::WriteToNetwork(queued) =
                    peer.tunn.decapsulate(None, &[], &mut self.scratch)
                {
                    paths::send_back(source, peer_ip, queued, out);
                }
            }
            Inbound::Answer(packet) => answer = Some(packet),
            Inbound::Pong(seq) => {
                let relay = match source {
                    Source::Relay(id, _) => self.lighthouses.label(id),
                    Source::Direct(_) => String::new(),
                };
                let name = peer.cert.name().as_str();
                self.probes
                    .answered(seq, peer_ip, name, source, &relay, now.instant);
            }
            Inbound::Drop(reason) => match reason {
                Dropped::WrongStamp | Dropped::Rejected => peer.counters.rejected += 1,
                Dropped::Spoofed => peer.counters.spoofed += 1,
                Dropped::Misrouted => peer.counters.misrouted += 1,
                Dropped::Firewall { reject } => {
                    peer.counters.firewall_in += 1;
                    answer = reject;
                }
            },
        }
        if let Some(answer) = answer {
            // Rare, so a buffer of its own rather than the one the packet arrived in.
            let mut buf = vec![0u8; answer.len() + 148];
            if let TunnResult::WriteToNetwork(datagram) = peer.tunn.encapsulate(&answer, &mut buf) {
                paths::send_back(source, peer_ip, datagram, out);
            }
        }
        if authenticated {
            match (peer.authenticated(source, now.instant), source) {
                (Some(Some(old)), Source::Direct(new)) => {
                    tracing::info!(parent: &peer.span, %old, %new, "peer roamed");
                }
                (Some(None), Source::Direct(endpoint)) => {
                    tracing::info!(parent: &peer.span, %endpoint, "direct path established");
                }
                _ => {}
            }
        }
    }
}
