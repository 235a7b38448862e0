//! The shell's side of [`Output`]: datagrams and TUN packets collected in reusable buffers,
//! then written in as few system calls as the kernel allows.

use std::net::{Ipv4Addr, SocketAddr};
use std::ops::Range;

use rma_ca::RevocationList;
use rma_proto::lighthouse::ToLighthouse;

use crate::lighthouse_links::LighthouseLinks;
use crate::node::LighthouseId;
use crate::node::Output;
use crate::tun_device::{HEADROOM, PACKET_CAPACITY};

/// Packet buffers kept between rounds (a round delivers at most a turn's budget of datagrams,
/// and a few answers); a round that delivered more gives the rest back.
const KEPT_PACKETS: usize = 160;

/// Results of one round of the event loop. Buffers keep their capacity between rounds, so the
/// steady state allocates nothing.
#[derive(Debug, Default)]
pub struct Batch {
    /// This round's datagrams, back to back in the first `used` bytes. Beyond them the
    /// buffer keeps its length (written once, never cleared), so that a tunnel seals the next
    /// datagram straight into it ([`Output::datagram_buffer`]).
    datagrams: Vec<u8>,
    used: usize,
    transmits: Vec<(SocketAddr, Range<usize>)>,
    /// Packets for the TUN, each in a buffer of its own behind [`HEADROOM`] bytes, as the TUN
    /// writer merges them: the first `delivered` are this round's.
    packets: Vec<Vec<u8>>,
    delivered: usize,
    /// Relayed datagrams have a buffer of their own: trains assume that consecutive
    /// transmits sit next to each other in `datagrams`.
    relayed: Vec<u8>,
    relays: Vec<(LighthouseId, Ipv4Addr, Range<usize>)>,
    asks: Vec<(LighthouseId, ToLighthouse)>,
    /// Parks and reconnects, in order with the asks (a reconnect comes before what it is for).
    links: Vec<(LighthouseId, Link)>,
    /// The revocation list the node put in use this round, if it changed.
    crls: Vec<RevocationList>,
}

impl Output for Batch {
    fn transmit(&mut self, to: SocketAddr, datagram: &[u8]) {
        self.datagram_buffer(datagram.len())
            .copy_from_slice(datagram);
        self.transmit_written(to, datagram.len());
    }

    fn deliver(&mut self, packet: &[u8]) {
        self.packet_buffer(packet.len()).copy_from_slice(packet);
        self.deliver_written(packet.len());
    }

    fn datagram_buffer(&mut self, len: usize) -> &mut [u8] {
        let end = self.used + len;
        if self.datagrams.len() < end {
            self.datagrams.resize(end, 0);
        }
        &mut self.datagrams[self.used..end]
    }

    fn transmit_written(&mut self, to: SocketAddr, len: usize) {
        let start = self.used;
        self.used += len;
        self.transmits.push((to, start..self.used));
    }

    fn relay_written(&mut self, via: LighthouseId, to: Ipv4Addr, len: usize) {
        let start = self.relayed.len();
        self.relayed
            .extend_from_slice(&self.datagrams[self.used..self.used + len]);
        self.relays.push((via, to, start..self.relayed.len()));
    }

    fn packet_buffer(&mut self, len: usize) -> &mut [u8] {
        if self.delivered == self.packets.len() {
            // Room for a super-packet; its pages become resident only as far as merges write.
            self.packets.push(Vec::with_capacity(PACKET_CAPACITY));
        }
        let buffer = &mut self.packets[self.delivered];
        // Only what lies beyond the buffer's last packet is zeroed first.
        buffer.resize(HEADROOM + len, 0);
        buffer[..HEADROOM].fill(0);
        &mut buffer[HEADROOM..]
    }

    fn deliver_written(&mut self, len: usize) {
        self.packets[self.delivered].truncate(HEADROOM + len);
        self.delivered += 1;
    }

    fn relay(&mut self, via: LighthouseId, to: Ipv4Addr, datagram: &[u8]) {
        let start = self.relayed.len();
        self.relayed.extend_from_slice(datagram);
        self.relays.push((via, to, start..self.relayed.len()));
    }

    fn ask(&mut self, via: LighthouseId, message: ToLighthouse) {
        self.asks.push((via, message));
    }

    fn crl_changed(&mut self, crl: &RevocationList) {
        self.crls.push(crl.clone());
    }

    fn park(&mut self, via: LighthouseId) {
        self.links.push((via, Link::Park));
    }

    fn connect(&mut self, via: LighthouseId) {
        self.links.push((via, Link::Connect));
    }
}

#[derive(Debug, Clone, Copy)]
enum Link {
    Park,
    Connect,
}

/// The most a GSO train may carry: the UDP length field is 16 bits, so the kernel refuses a
/// larger send outright (EMSGSIZE) and the whole train would be lost.
const MAX_TRAIN_BYTES: usize = 65_535 - 8 - 20;

/// A run of datagrams for one destination that the kernel can send as one GSO train: all of
/// one size except possibly the last, which may be shorter.
#[derive(Debug, PartialEq, Eq)]
pub struct Train<'a> {
    pub to: SocketAddr,
    pub contents: &'a [u8],
    pub segment_size: usize,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.transmits.is_empty()
            && self.delivered == 0
            && self.relays.is_empty()
            && self.asks.is_empty()
            && self.links.is_empty()
    }

    /// The revocation lists the node put in use since the last call.
    pub fn take_crls(&mut self) -> Vec<RevocationList> {
        std::mem::take(&mut self.crls)
    }

    /// Hands relayed datagrams and control messages to the lighthouse connections.
    pub fn send_to_lighthouses(&mut self, links: &mut LighthouseLinks) {
        for (via, to, range) in &self.relays {
            links.relay(*via, *to, &self.relayed[range.clone()]);
        }
        // Reconnects go first: a message for a parked lighthouse is what woke it.
        for (via, link) in self.links.drain(..) {
            match link {
                Link::Park => links.park(via),
                Link::Connect => links.connect(via),
            }
        }
        for (via, message) in self.asks.drain(..) {
            links.ask(via, message);
        }
        self.relays.clear();
        self.relayed.clear();
    }

    /// Packets for the TUN device, in order, each behind [`HEADROOM`] bytes.
    pub fn deliveries(&mut self) -> &mut [Vec<u8>] {
        &mut self.packets[..self.delivered]
    }

    /// Datagrams grouped into trains of at most `max_segments`, in order.
    pub fn trains(&self, max_segments: usize) -> Vec<Train<'_>> {
        let mut trains: Vec<Train<'_>> = Vec::new();
        let mut current: Option<(SocketAddr, Range<usize>, usize, usize)> = None;
        for (to, range) in &self.transmits {
            let len = range.len();
            if let Some((dest, span, size, count)) = &mut current {
                let last_was_short = span.len() != *size * *count;
                let fits = span.len() + len <= MAX_TRAIN_BYTES && *count < max_segments;
                if *dest == *to && len <= *size && !last_was_short && fits {
                    span.end = range.end;
                    *count += 1;
                    continue;
                }
                trains.push(Train {
                    to: *dest,
                    contents: &self.datagrams[span.clone()],
                    segment_size: *size,
                });
            }
            current = Some((*to, range.clone(), len, 1));
        }
        if let Some((to, span, size, _)) = current {
            trains.push(Train {
                to,
                contents: &self.datagrams[span],
                segment_size: size,
            });
        }
        trains
    }

    pub fn clear(&mut self) {
        self.used = 0;
        self.transmits.clear();
        self.packets.truncate(KEPT_PACKETS);
        self.delivered = 0;
        self.relays.clear();
        self.relayed.clear();
        self.asks.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 1], port))
    }

    #[test]
    fn same_destination_same_size_datagrams_form_trains() {
        let mut batch = Batch::default();
        for _ in 0..3 {
            batch.transmit(addr(1), &[1; 100]);
        }
        batch.transmit(addr(1), &[2; 40]);
        batch.transmit(addr(1), &[3; 100]);
        batch.transmit(addr(2), &[4; 100]);
        batch.deliver(b"packet");
        let trains = batch.trains(64);
        let shape: Vec<_> = trains
            .iter()
            .map(|t| (t.to.port(), t.contents.len(), t.segment_size))
            .collect();
        assert_eq!(shape, [(1, 340, 100), (1, 100, 100), (2, 100, 100)]);
        assert_eq!(batch.deliveries().len(), 1);
        assert_eq!(&batch.deliveries()[0][HEADROOM..], b"packet");
        assert_eq!(batch.trains(2)[0].contents.len(), 200);
        batch.clear();
        for _ in 0..64 {
            batch.transmit(addr(1), &[5; 1452]);
        }
        let trains = batch.trains(64);
        assert!(
            trains.iter().all(|t| t.contents.len() <= MAX_TRAIN_BYTES),
            "a train over 64 KiB"
        );
        assert_eq!(
            trains.iter().map(|t| t.contents.len()).sum::<usize>(),
            64 * 1452
        );
        batch.clear();
        assert!(batch.is_empty() && batch.trains(64).is_empty());
    }

    /// What a tunnel seals or opens in place is what goes out; a buffer handed out but not
    /// sent (a dropped packet) is handed out again, and nothing of it is sent.
    #[test]
    fn datagrams_and_packets_written_in_place_go_out_as_written() {
        let mut batch = Batch::default();
        batch.transmit(addr(1), &[1; 10]);
        let buffer = batch.datagram_buffer(200);
        assert_eq!(buffer.len(), 200);
        buffer[..50].fill(2);
        batch.relay_written(LighthouseId(0), Ipv4Addr::new(10, 42, 0, 9), 50);
        batch.transmit_written(addr(2), 50);
        batch.datagram_buffer(30)[..5].fill(3);
        // Not sent: the next datagram is written over it.
        batch.datagram_buffer(30)[..4].fill(4);
        batch.transmit_written(addr(3), 4);
        let trains: Vec<_> = batch
            .trains(64)
            .into_iter()
            .map(|t| (t.to.port(), t.contents.to_vec()))
            .collect();
        assert_eq!(
            trains,
            [(1, vec![1; 10]), (2, vec![2; 50]), (3, vec![4; 4])]
        );
        assert_eq!(batch.relays.len(), 1);
        assert_eq!(&batch.relayed[batch.relays[0].2.clone()], &[2; 50]);

        batch.packet_buffer(1500)[..20].fill(5);
        batch.deliver_written(20);
        batch.packet_buffer(1500)[..8].fill(6);
        batch.packet_buffer(1500)[..7].fill(7);
        batch.deliver_written(7);
        let delivered: Vec<_> = batch
            .deliveries()
            .iter()
            .map(|p| (p[..HEADROOM].to_vec(), p[HEADROOM..].to_vec()))
            .collect();
        assert_eq!(
            delivered,
            [
                (vec![0; HEADROOM], vec![5; 20]),
                (vec![0; HEADROOM], vec![7; 7])
            ]
        );
        // A round later, the same buffers carry new packets of other lengths.
        batch.clear();
        batch.datagram_buffer(3).fill(8);
        batch.transmit_written(addr(1), 3);
        batch.deliver(&[9; 3]);
        assert_eq!(batch.trains(64)[0].contents, &[8; 3]);
        assert_eq!(&batch.deliveries()[0][HEADROOM..], &[9; 3]);
    }

    #[test]
    fn packet_buffers_are_kept_within_bounds() {
        let mut batch = Batch::default();
        for _ in 0..KEPT_PACKETS * 2 {
            batch.deliver(&[7; 1400]);
        }
        // The TUN writer merged a flow's packets into the first buffer, within its capacity.
        batch.deliveries()[0].extend_from_slice(&[7; 60_000]);
        assert_eq!(batch.deliveries()[0].capacity(), PACKET_CAPACITY);
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.packets.len(), KEPT_PACKETS);
        assert!(
            batch
                .packets
                .iter()
                .all(|b| b.capacity() == PACKET_CAPACITY)
        );
        batch.deliver(b"again");
        assert_eq!(&batch.deliveries()[0][HEADROOM..], b"again");
    }
}
