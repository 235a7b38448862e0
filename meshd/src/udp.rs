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
    /// What the last read left to hand over: the buffers it filled, and the next datagram's
    /// buffer and offset in it.
    received: usize,
    next: (usize, usize),
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
            received: 0,
            next: (0, 0),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Ready when datagrams from the last read are still to be handed over, or the socket
    /// has more.
    pub async fn readable(&self) -> io::Result<()> {
        if self.has_pending() {
            return Ok(());
        }
        self.socket.readable().await
    }

    /// Datagrams from the last read are still to be handed over.
    pub fn has_pending(&self) -> bool {
        self.next.0 < self.received
    }

    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.socket)
    }

    /// Hands up to `budget` datagrams to `each`: first those the last read left, then, if
    /// none was left, those of one new read (without waiting). What is over the budget waits
    /// for the next call, so that the caller can write out what the datagrams produced before
    /// taking more. Returns how many were handed over; zero means the socket is drained.
    pub fn drain(
        &mut self,
        budget: usize,
        mut each: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        if self.next.0 >= self.received {
            self.read()?;
        }
        let mut handed = 0;
        while handed < budget && self.next.0 < self.received {
            let (message, offset) = self.next;
            let meta = &self.meta[message];
            let stride = meta.stride.max(1);
            let end = (offset + stride).min(meta.len);
            each(meta.addr, &self.buffers[message][offset..end]);
            handed += 1;
            self.next = if end < meta.len {
                (message, end)
            } else {
                (message + 1, 0)
            };
        }
        Ok(handed)
    }

    /// One batch of datagrams from the socket, without waiting (none when it is drained).
    fn read(&mut self) -> io::Result<()> {
        let mut slices: Vec<IoSliceMut<'_>> = self
            .buffers
            .iter_mut()
            .map(|b| IoSliceMut::new(b))
            .collect();
        self.received = match self.socket.try_io(Interest::READABLE, || {
            self.state
                .recv((&self.socket).into(), &mut slices, &mut self.meta)
        }) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        self.next = (0, 0);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_over_the_budget_is_handed_over_in_later_calls() {
        let mut udp = Udp::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
        let sender = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..5u8 {
            sender
                .send_to(&[i; 100], udp.local_addr().unwrap())
                .unwrap();
        }
        udp.readable().await.unwrap();
        let mut seen = Vec::new();
        // Loopback queues the datagrams at once; the kernel may still hand them over in more
        // than one read, so drain until five arrived, two at most per call.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.len() < 5 && std::time::Instant::now() < deadline {
            let handed = udp.drain(2, |_, d| seen.push(d[0])).unwrap();
            assert!(handed <= 2, "over the budget: {handed}");
        }
        assert_eq!(seen, [0, 1, 2, 3, 4]);
        assert_eq!(udp.drain(2, |_, _| panic!("nothing is left")).unwrap(), 0);
    }
}
