//! The few IPv4, TCP, UDP and ICMP header fields meshd routes and filters by, and the reject
//! packets (TCP reset, ICMP unreachable) its firewall answers with.

use std::net::Ipv4Addr;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// RFC 3692's experimental protocol number, which meshd uses for its in-tunnel probes.
pub const PROTO_MESH_PROBE: u8 = 253;
const PROBE_MAGIC: &[u8; 4] = b"RMAP";

/// A `meshd ping` probe, carried inside the WireGuard session as an IPv4 packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Ping(u32),
    Pong(u32),
}

/// Builds a probe packet from `src` to `dst`.
pub fn probe_packet(src: Ipv4Addr, dst: Ipv4Addr, probe: Probe) -> Vec<u8> {
    let (kind, seq) = match probe {
        Probe::Ping(seq) => (1, seq),
        Probe::Pong(seq) => (2, seq),
    };
    let mut payload = PROBE_MAGIC.to_vec();
    payload.push(kind);
    payload.extend_from_slice(&seq.to_be_bytes());
    let mut packet = ipv4_header(src, dst, PROTO_MESH_PROBE, payload.len());
    packet.extend_from_slice(&payload);
    packet
}

/// The probe in `packet`, if it is one.
pub fn probe(packet: &[u8]) -> Option<Probe> {
    let ihl = header_len(packet)?;
    if packet[9] != PROTO_MESH_PROBE {
        return None;
    }
    let body = packet.get(ihl..ihl + 9)?;
    if &body[..4] != PROBE_MAGIC {
        return None;
    }
    let seq = u32::from_be_bytes([body[5], body[6], body[7], body[8]]);
    match body[4] {
        1 => Some(Probe::Ping(seq)),
        2 => Some(Probe::Pong(seq)),
        _ => None,
    }
}

/// Source and destination of an IPv4 packet, if `packet` starts with a plausible IPv4 header.
pub fn addresses(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    header_len(packet)?;
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    let dst = Ipv4Addr::new(packet[16], packet[17], packet[18], packet[19]);
    Some((src, dst))
}

fn header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    let len = usize::from(first & 0x0f) * 4;
    (first >> 4 == 4 && len >= 20 && packet.len() >= len).then_some(len)
}

/// What the firewall judges a packet by. Ports are zero for protocols without them, for
/// fragments after the first, and when the transport header is cut short: such packets can
/// match only rules for any port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
}

pub fn flow(packet: &[u8]) -> Option<Flow> {
    let ihl = header_len(packet)?;
    let (src, dst) = addresses(packet)?;
    let proto = packet[9];
    let fragment_offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
    let ports = match proto {
        PROTO_TCP | PROTO_UDP if fragment_offset == 0 => match packet.get(ihl..ihl + 4) {
            Some(l4) => (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            ),
            None => (0, 0),
        },
        _ => (0, 0),
    };
    Some(Flow {
        proto,
        src,
        dst,
        src_port: ports.0,
        dst_port: ports.1,
    })
}

/// The Internet checksum (RFC 1071) of `chunks` taken as one byte string, each chunk of even
/// length but the last.
pub fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut words = chunk.chunks_exact(2);
        for w in &mut words {
            sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            sum += u32::from(*last) << 8;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 header without options from `src` to `dst`, for `payload_len` bytes of `proto`.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize) -> Vec<u8> {
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    let mut header = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
    header[2..4].copy_from_slice(&total.to_be_bytes());
    header.extend_from_slice(&src.octets());
    header.extend_from_slice(&dst.octets());
    let sum = checksum(&[&header]);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
    header
}

/// The answer that refuses `packet` as its destination would: a TCP reset for TCP (none for a
/// reset), an ICMP unreachable otherwise (never for ICMP errors, which must not be answered).
pub fn reject(packet: &[u8]) -> Option<Vec<u8>> {
    let ihl = header_len(packet)?;
    let flow = flow(packet)?;
    match flow.proto {
        PROTO_TCP => tcp_reset(packet, ihl, &flow),
        PROTO_ICMP => {
            let icmp_type = *packet.get(ihl)?;
            // Only queries (echo, timestamp, ...) get an answer; errors never do.
            matches!(icmp_type, 8 | 13 | 15 | 17).then(|| icmp_unreachable(packet, ihl, &flow, 13))
        }
        PROTO_UDP => Some(icmp_unreachable(packet, ihl, &flow, 3)),
        _ => Some(icmp_unreachable(packet, ihl, &flow, 13)),
    }
}

fn tcp_reset(packet: &[u8], ihl: usize, flow: &Flow) -> Option<Vec<u8>> {
    let tcp = packet.get(ihl..ihl + 20)?;
    let flags = tcp[13];
    if flags & 0x04 != 0 {
        return None;
    }
    let seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    let payload = packet.len().saturating_sub(ihl + data_offset) as u32;
    let syn_fin = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
    // RFC 793: answer an ACK with a bare RST at its ack number; otherwise RST|ACK covering it.
    let (seq_out, ack_out, flags_out) = if flags & 0x10 != 0 {
        (ack, 0, 0x04)
    } else {
        (0, seq.wrapping_add(payload + syn_fin), 0x14)
    };
    let mut segment = Vec::with_capacity(20);
    segment.extend_from_slice(&flow.dst_port.to_be_bytes());
    segment.extend_from_slice(&flow.src_port.to_be_bytes());
    segment.extend_from_slice(&seq_out.to_be_bytes());
    segment.extend_from_slice(&ack_out.to_be_bytes());
    segment.extend_from_slice(&[0x50, flags_out, 0, 0, 0, 0, 0, 0]);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&flow.dst.octets());
    pseudo.extend_from_slice(&flow.src.octets());
    pseudo.extend_from_slice(&[0, PROTO_TCP, 0, 20]);
    let sum = checksum(&[&pseudo, &segment]);
    segment[16..18].copy_from_slice(&sum.to_be_bytes());
    let mut out = ipv4_header(flow.dst, flow.src, PROTO_TCP, segment.len());
    out.extend_from_slice(&segment);
    Some(out)
}

fn icmp_unreachable(packet: &[u8], ihl: usize, flow: &Flow, code: u8) -> Vec<u8> {
    // The offending header and the first 8 bytes of its payload (RFC 792).
    let quoted = &packet[..packet.len().min(ihl + 8)];
    let mut icmp = vec![3, code, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(quoted);
    let sum = checksum(&[&icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut out = ipv4_header(flow.dst, flow.src, PROTO_ICMP, icmp.len());
    out.extend_from_slice(&icmp);
    out
}

#[cfg(test)]
pub(crate) fn test_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let mut packet = ipv4_header(src, dst, PROTO_UDP, payload.len());
    packet.extend_from_slice(payload);
    packet
}

/// A packet of `proto` with an 8-byte transport header carrying the ports (a minimal TCP
/// header when `proto` is TCP, with `tcp_flags`).
#[cfg(test)]
pub(crate) fn flow_packet(f: Flow, tcp_flags: u8) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&f.src_port.to_be_bytes());
    l4.extend_from_slice(&f.dst_port.to_be_bytes());
    match f.proto {
        PROTO_TCP => {
            l4.extend_from_slice(&1000u32.to_be_bytes());
            l4.extend_from_slice(&0u32.to_be_bytes());
            l4.extend_from_slice(&[0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
        }
        PROTO_ICMP => l4 = vec![8, 0, 0, 0, 0, 1, 0, 1],
        _ => l4.extend_from_slice(&[0, 8, 0, 0]),
    }
    let mut packet = ipv4_header(f.src, f.dst, f.proto, l4.len());
    packet.extend_from_slice(&l4);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn f(proto: u8, sp: u16, dp: u16) -> Flow {
        Flow {
            proto,
            src: A,
            dst: B,
            src_port: sp,
            dst_port: dp,
        }
    }

    #[test]
    fn reads_addresses_and_flows() {
        assert_eq!(addresses(&test_packet(A, B, b"hi")), Some((A, B)));
        assert_eq!(addresses(&[0x45; 19]), None);
        let mut v6 = test_packet(A, B, b"");
        v6[0] = 0x60;
        assert_eq!(addresses(&v6), None);
        let mut short_ihl = test_packet(A, B, b"");
        short_ihl[0] = 0x44;
        assert_eq!(addresses(&short_ihl), None);
        for flow in [
            f(PROTO_TCP, 4000, 80),
            f(PROTO_UDP, 53, 5353),
            f(PROTO_ICMP, 0, 0),
        ] {
            assert_eq!(super::flow(&flow_packet(flow, 0x02)), Some(flow));
        }
        let mut fragment = flow_packet(f(PROTO_UDP, 1, 2), 0);
        fragment[7] = 1;
        assert_eq!(flow(&fragment).unwrap().dst_port, 0);
        let truncated = flow(&flow_packet(f(PROTO_TCP, 1, 2), 0)[..22]).unwrap();
        assert_eq!((truncated.src_port, truncated.dst_port), (0, 0));
    }

    #[test]
    fn probes_round_trip() {
        for p in [Probe::Ping(7), Probe::Pong(u32::MAX)] {
            let packet = probe_packet(A, B, p);
            assert_eq!(probe(&packet), Some(p));
            assert_eq!(addresses(&packet), Some((A, B)));
        }
        let mut other = probe_packet(A, B, Probe::Ping(1));
        other[20] = b'X';
        assert_eq!(probe(&other), None);
        assert_eq!(
            probe(&test_packet(A, B, b"RMAP\x01\0\0\0\x01")),
            None,
            "wrong protocol"
        );
    }

    #[test]
    fn rejects_are_well_formed_answers() {
        let syn = flow_packet(f(PROTO_TCP, 4000, 80), 0x02);
        let rst = reject(&syn).unwrap();
        assert_eq!(checksum(&[&rst[..20]]), 0, "IP checksum");
        let answer = flow(&rst).unwrap();
        assert_eq!(
            answer,
            Flow {
                proto: PROTO_TCP,
                src: B,
                dst: A,
                src_port: 80,
                dst_port: 4000
            }
        );
        assert_eq!(rst[20 + 13], 0x14, "RST|ACK");
        assert_eq!(
            u32::from_be_bytes(rst[28..32].try_into().unwrap()),
            1001,
            "acks the SYN"
        );
        let mut pseudo = B.octets().to_vec();
        pseudo.extend_from_slice(&A.octets());
        pseudo.extend_from_slice(&[0, PROTO_TCP, 0, 20]);
        assert_eq!(checksum(&[&pseudo, &rst[20..]]), 0, "TCP checksum");
        assert_eq!(
            reject(&flow_packet(f(PROTO_TCP, 4000, 80), 0x04)),
            None,
            "never answer a RST"
        );

        let udp = flow_packet(f(PROTO_UDP, 5000, 53), 0);
        let icmp = reject(&udp).unwrap();
        assert_eq!(
            (icmp[9], icmp[20], icmp[21]),
            (PROTO_ICMP, 3, 3),
            "port unreachable"
        );
        assert_eq!(checksum(&[&icmp[20..]]), 0, "ICMP checksum");
        assert_eq!(&icmp[28..], &udp[..28], "quotes the header and 8 bytes");
        let ping = flow_packet(f(PROTO_ICMP, 0, 0), 0);
        assert_eq!(
            reject(&ping).unwrap()[21],
            13,
            "administratively prohibited"
        );
        let mut icmp_error = ping.clone();
        icmp_error[20] = 3;
        assert_eq!(reject(&icmp_error), None, "ICMP errors are never answered");
    }
}
