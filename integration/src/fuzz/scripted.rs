//! A worker's end of a connection, scripted: routerd's worker client ([`rma_daemon::http1`])
//! runs on it in the fuzz targets as it runs on a TCP stream, with the worker's bytes cut into
//! reads of the sizes the input gives.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the worker answers (all of it at once, read in pieces), then the end of the stream
/// or silence; what routerd wrote is kept in `written`.
#[derive(Debug)]
pub(super) struct Scripted {
    answer: Vec<u8>,
    at: usize,
    /// Each read (and each write) takes at most the next of these sizes, in turn.
    splits: Vec<u16>,
    turn: usize,
    closes: bool,
    pub(super) written: Arc<Mutex<Vec<u8>>>,
}

impl Scripted {
    pub(super) fn new(answer: Vec<u8>, splits: Vec<u16>, closes: bool) -> Self {
        Self {
            answer,
            at: 0,
            splits,
            turn: 0,
            closes,
            written: Arc::default(),
        }
    }

    /// The size the next read or write may have: from the script, at least 1.
    fn next_split(&mut self, most: usize) -> usize {
        let split = match self.splits.get(self.turn % self.splits.len().max(1)) {
            Some(&n) => usize::from(n).max(1),
            None => usize::MAX,
        };
        self.turn += 1;
        split.min(most)
    }
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.answer.len() - self.at;
        if left == 0 {
            // Silence is a read that never completes; nothing wakes it.
            return if self.closes {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            };
        }
        let n = self.next_split(left.min(buf.remaining()));
        let at = self.at;
        buf.put_slice(&self.answer[at..at + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let n = self.next_split(data.len());
        self.written
            .lock()
            .expect("one thread")
            .extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl rma_daemon::http1::Stream for Scripted {
    fn has_news(&self) -> bool {
        self.at < self.answer.len() || self.closes
    }
}

/// Runs `future` as far as the script lets it: its output, or `None` when it waits for bytes
/// the worker never sends. Nothing else can wake it, so one poll is the whole run.
pub(super) fn run<F: Future>(future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}
