//! The `tun_writes` fuzz target's body.

use std::net::Ipv4Addr;

use arbitrary::{Arbitrary, Unstructured};
use meshd::ipv4::{self, PROTO_TCP, PROTO_UDP};
use meshd::tun_device::{HEADROOM, Merger, PACKET_CAPACITY};

/// The most packets one write merges: a turn's budget of datagrams, and a few answers.
const MAX_PACKETS: usize = 160;

/// One packet a peer sent, as it reaches the TUN writer once decrypted. Most are well formed
/// and continue one of four flows, so that the merger has something to merge; the rest are
/// any bytes, or well formed but for one field.
#[derive(Debug, Arbitrary)]
enum Packet {
    Raw(Vec<u8>),
    Segment {
        flow: u8,
        udp: bool,
        /// Payload bytes (repeated up to `len`).
        fill: u8,
        len: u16,
        /// TCP: skip ahead in the sequence instead of continuing it.
        jump: Option<u32>,
        /// TCP flags beyond ACK.
        flags: u8,
        /// Written over one header byte after the checksums are set.
        spoil: Option<(u8, u8)>,
    },
}

/// Whatever peers send, merged as the TUN writer does before a write, with and without UDP
/// merging: no panic, and no buffer grows past the room it was given (the writer never
/// allocates).
pub fn tun_writes(data: &[u8]) {
    let Ok(steps) = Vec::<Packet>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut seqs = [0u32; 4];
    let packets: Vec<Vec<u8>> = steps
        .into_iter()
        .take(MAX_PACKETS)
        .map(|step| match step {
            Packet::Raw(bytes) => bytes,
            Packet::Segment {
                flow,
                udp,
                fill,
                len,
                jump,
                flags,
                spoil,
            } => {
                let flow = usize::from(flow % 4);
                let payload = vec![fill; usize::from(len % 1500)];
                let seq = &mut seqs[flow];
                *seq = seq.wrapping_add(jump.unwrap_or(0));
                let mut packet = segment(flow as u16, udp, *seq, flags, &payload);
                *seq = seq.wrapping_add(payload.len() as u32);
                if let Some((at, byte)) = spoil {
                    let at = usize::from(at) % packet.len();
                    packet[at] = byte;
                }
                packet
            }
        })
        .collect();
    for udp in [false, true] {
        let mut buffers: Vec<Vec<u8>> = packets
            .iter()
            .map(|packet| {
                let mut buffer = Vec::with_capacity(PACKET_CAPACITY);
                buffer.resize(HEADROOM, 0);
                buffer.extend_from_slice(packet);
                buffer
            })
            .collect();
        // A refusal is an answer too (the write is skipped and counted); a panic is the bug.
        let _ = Merger::default().merge(&mut buffers, udp);
        for buffer in &buffers {
            assert_eq!(buffer.capacity(), PACKET_CAPACITY, "the merger allocated");
        }
    }
}

/// A TCP or UDP segment from 10.42.0.2 to 10.42.0.1 on one of four flows, with correct lengths
/// and checksums.
fn segment(flow: u16, udp: bool, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let (src, dst) = (Ipv4Addr::new(10, 42, 0, 2), Ipv4Addr::new(10, 42, 0, 1));
    let proto = if udp { PROTO_UDP } else { PROTO_TCP };
    let mut transport = Vec::with_capacity(20 + payload.len());
    transport.extend_from_slice(&(40_000 + flow).to_be_bytes());
    transport.extend_from_slice(&8080u16.to_be_bytes());
    if udp {
        transport.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        transport.extend_from_slice(&[0, 0]);
    } else {
        transport.extend_from_slice(&seq.to_be_bytes());
        transport.extend_from_slice(&1u32.to_be_bytes());
        transport.extend_from_slice(&[0x50, 0x10 | flags, 0xff, 0xff, 0, 0, 0, 0]);
    }
    transport.extend_from_slice(payload);
    let length = transport.len() as u16;
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&length.to_be_bytes());
    let sum = ipv4::checksum(&[&pseudo, &transport]);
    let at = if udp { 6 } else { 16 };
    transport[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    let mut packet = ipv4::ipv4_header(src, dst, proto, transport.len());
    packet.extend_from_slice(&transport);
    packet
}
