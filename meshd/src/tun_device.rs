//! The TUN device, read and written in batches. With offload (a virtio-net header on every read
//! and write), one read returns a TCP or UDP super-packet of up to 64 KiB, which tun-rs splits
//! into its segments (GSO), and the packets of one write are merged back into super-packets
//! where they continue one flow (GRO; tun-rs ports both from wireguard-go). A bulk transfer then
//! costs one system call per 64 KiB each way instead of one per packet, and the receiving TCP
//! sees one large segment where it would have acknowledged every other packet. Where the kernel
//! refuses offload, the same calls read and write one packet each.

use std::io;
use std::net::Ipv4Addr;

use tun_rs::{AsyncDevice, DeviceBuilder, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use crate::config;

/// Bytes kept free in front of every packet written to the device: the virtio-net header goes
/// there.
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// The room a packet buffer for [`TunDevice::send`] needs: the writer merges a flow's packets
/// into the first buffer of the flow, and only where that fits without allocating.
pub const PACKET_CAPACITY: usize = 2 * HEADROOM + 65_535;
/// The most one read returns: the header and a super-packet.
const READ_LEN: usize = VIRTIO_NET_HDR_LEN + 65_535;
/// Packets the kernel queues for meshd to read before it drops (its default is 500): a burst
/// from a local sender waits here while the loop serves the socket.
const TX_QUEUE_LEN: u32 = 2_000;

pub struct TunDevice {
    device: AsyncDevice,
    offload: bool,
    /// One read as the kernel gives it.
    raw: Box<[u8]>,
    /// The packets of the last read (one, or the segments of a super-packet), and their sizes.
    segments: Vec<Box<[u8]>>,
    sizes: Vec<usize>,
    /// Merges the packets of one write; kept so that writing allocates nothing.
    gro: GROTable,
}

impl std::fmt::Debug for TunDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TunDevice")
            .field("offload", &self.offload)
            .finish_non_exhaustive()
    }
}

impl TunDevice {
    /// Creates the device with `ip`, and brings it up with IPv6 off. Offload, if configured,
    /// is asked for and given up (with a warning) when the kernel refuses it.
    pub fn open(config: &config::Tun, ip: Ipv4Addr, prefix: u8) -> anyhow::Result<Self> {
        // Created down, so that IPv6 is off before the kernel can send anything into it.
        let build = |offload: bool| {
            DeviceBuilder::new()
                .name(&config.name)
                .ipv4(ip, prefix, None)
                .mtu(config.mtu)
                .tx_queue_len(TX_QUEUE_LEN)
                .offload(offload)
                .enable(false)
                .build_async()
        };
        let device = match build(config.offload) {
            Err(e) if config.offload => {
                tracing::warn!(error = %e, "the kernel refused TUN offload: one packet per read and write");
                build(false)
            }
            built => built,
        }
        .map_err(|e| anyhow::anyhow!("TUN device {}: {e}", config.name))?;
        // The mesh is IPv4; without this the kernel sends IPv6 neighbour discovery into the TUN.
        let ipv6_switch = format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", config.name);
        if let Err(e) = std::fs::write(&ipv6_switch, "1") {
            tracing::debug!(error = %e, "could not disable IPv6 on the TUN device");
        }
        device
            .enabled(true)
            .map_err(|e| anyhow::anyhow!("bringing up {}: {e}", config.name))?;
        let offload = device.tcp_gso();
        // Without offload a read is one packet, which fits the first buffer.
        let segments = if offload { IDEAL_BATCH_SIZE } else { 1 };
        Ok(Self {
            device,
            offload,
            raw: vec![0; if offload { READ_LEN } else { 0 }].into_boxed_slice(),
            segments: (0..segments)
                .map(|_| vec![0; usize::from(config.mtu)].into_boxed_slice())
                .collect(),
            sizes: vec![0; segments],
            gro: GROTable::new(),
        })
    }

    /// Whether reads and writes carry super-packets.
    pub fn offload(&self) -> bool {
        self.offload
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.device.readable().await
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        let device: &tun_rs::DeviceImpl = &self.device;
        std::os::fd::AsFd::as_fd(device)
    }

    /// Reads whatever is queued, without waiting, until `budget` packets have been handed to
    /// `each` (a super-packet's segments all go, so a read may overshoot it) or the device is
    /// drained. Returns how many reads the splitter refused (each dropped, and counted against
    /// the budget); an error of the device itself ends the node.
    pub fn drain(&mut self, budget: usize, mut each: impl FnMut(&[u8])) -> io::Result<u64> {
        let (mut packets, mut refused) = (0, 0);
        while packets < budget {
            match self.device.try_recv_multiple(
                &mut self.raw,
                &mut self.segments,
                &mut self.sizes,
                0,
            ) {
                Ok(n) => {
                    for (segment, size) in self.segments.iter().zip(&self.sizes).take(n) {
                        each(&segment[..*size]);
                    }
                    packets += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // tun-rs's own checks of the header and the segments carry no OS error.
                Err(e) if e.raw_os_error().is_none() => {
                    tracing::debug!(error = %e, "dropped a TUN read");
                    // A refused read spends the budget too, so that it cannot hold the loop.
                    packets += 1;
                    refused += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(refused)
    }

    /// Writes `packets`, each behind [`HEADROOM`] bytes, merging those that continue one flow.
    /// The buffers are changed: a merged packet's payload is appended to the first of its flow.
    pub async fn send(&mut self, packets: &mut [Vec<u8>]) -> io::Result<usize> {
        self.device
            .send_multiple(&mut self.gro, packets, HEADROOM)
            .await
    }
}

/// The merging [`TunDevice::send`] does before it writes, without a device. The packets it
/// merges are what peers sent, so the `tun_writes` fuzz target drives it.
#[derive(Default)]
pub struct Merger {
    gro: GROTable,
}

impl std::fmt::Debug for Merger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Merger").finish_non_exhaustive()
    }
}

impl Merger {
    /// Merges `packets` (each behind [`HEADROOM`] bytes) as a write with offload would, UDP
    /// too if `udp`.
    pub fn merge(&mut self, packets: &mut [Vec<u8>], udp: bool) -> io::Result<()> {
        self.gro.apply_gro(packets, HEADROOM, udp)
    }
}
