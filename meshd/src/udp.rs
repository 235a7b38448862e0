//! The UDP socket every peer shares, read and written in batches: recvmmsg and GRO in, GSO
//! trains out (through quinn-udp, which also falls back where the kernel lacks them).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::batch::Batch;

/// Datagram buffers read per system call.
const RECV_BATCH: usize = 32;
/// Each buffer holds one GRO-coalesced run of datagrams.
const RECV_BUFFER: usize = 65_536;

pub struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    buffers: Vec<Box<[u8]>>,
    meta: Vec<RecvMeta>,
}

impl std::fmt::Debug for Udp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Udp")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Udp {
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let socket = std::net::UdpSocket::bind(addr)?;
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        // Large buffers absorb bursts while the loop is busy with the TUN side.
        let _ = state.set_recv_buffer_size((&socket).into(), 4 << 20);
        let _ = state.set_send_buffer_size((&socket).into(), 4 << 20);
        Ok(Self {
            socket: UdpSocket::from_std(socket)?,
            state,
            buffers: (0..RECV_BATCH)
                .map(|_| vec![0; RECV_BUFFER].into_boxed_slice())
                .collect(),
            meta: vec![RecvMeta::default(); RECV_BATCH],
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    pub async fn readable(&self) -> io::Result<()> {
        self.socket.readable().await
    }

    /// Reads whatever is queued, without waiting, and hands each datagram to `each`.
    /// Returns how many datagrams were read; zero means the socket is drained.
    pub fn drain(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = self
            .buffers
            .iter_mut()
            .map(|b| IoSliceMut::new(b))
            .collect();
        let received = match self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut slices, &mut self.meta)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut datagrams = 0;
        for (meta, buffer) in self.meta.iter().zip(&self.buffers).take(received) {
            let stride = meta.stride.max(1);
            for datagram in buffer[..meta.len].chunks(stride) {
                each(meta.addr, datagram);
                datagrams += 1;
            }
        }
        Ok(datagrams)
    }

    /// Sends every datagram of `batch`, as GSO trains where possible. Returns how many
    /// datagrams could not be sent.
    pub async fn send(&self, batch: &Batch) -> u64 {
        let mut failed = 0;
        for train in batch.trains(self.state.max_gso_segments()) {
            let transmit = Transmit {
                destination: train.to,
                ecn: None,
                contents: train.contents,
                segment_size: Some(train.segment_size),
                src_ip: None,
            };
            let sent = self
                .socket
                .async_io(Interest::WRITABLE, || {
                    self.state.try_send((&self.socket).into(), &transmit)
                })
                .await;
            if let Err(e) = sent {
                // An unreachable peer must not stop the node; the next packet tries again.
                // Failures are counted in the status, so none goes unseen.
                tracing::trace!(to = %train.to, error = %e, "send failed");
                failed += train.contents.len().div_ceil(train.segment_size.max(1)) as u64;
            }
        }
        failed
    }
}
