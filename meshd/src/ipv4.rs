//! The few IPv4 header fields meshd routes and checks by.

use std::net::Ipv4Addr;

/// Source and destination of an IPv4 packet, if `packet` starts with a plausible IPv4 header.
pub fn addresses(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let header = packet.get(..20)?;
    let version = header[0] >> 4;
    let header_len = usize::from(header[0] & 0x0f) * 4;
    if version != 4 || header_len < 20 || packet.len() < header_len {
        return None;
    }
    let src = Ipv4Addr::new(header[12], header[13], header[14], header[15]);
    let dst = Ipv4Addr::new(header[16], header[17], header[18], header[19]);
    Some((src, dst))
}

#[cfg(test)]
pub(crate) fn test_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let total = u16::try_from(20 + payload.len()).expect("test packets are small");
    let mut packet = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0];
    packet[2..4].copy_from_slice(&total.to_be_bytes());
    packet.extend_from_slice(&src.octets());
    packet.extend_from_slice(&dst.octets());
    let checksum = {
        let sum: u32 = packet
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        !(((folded & 0xffff) + (folded >> 16)) as u16)
    };
    packet[10..12].copy_from_slice(&checksum.to_be_bytes());
    packet.extend_from_slice(payload);
    packet
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_addresses() {
        let (a, b) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(addresses(&test_packet(a, b, b"hi")), Some((a, b)));
        assert_eq!(addresses(&[0x45; 19]), None);
        let mut v6 = test_packet(a, b, b"");
        v6[0] = 0x60;
        assert_eq!(addresses(&v6), None);
        let mut short_ihl = test_packet(a, b, b"");
        short_ihl[0] = 0x44;
        assert_eq!(addresses(&short_ihl), None);
    }
}
