//! Keeping slow peers from holding routerd's connections: a request body must keep up a
//! minimum average rate, and a response write may stall only so long. hyper bounds the time to
//! send a request's head; these bound the rest of a request's life.
//!
//! Both arm a timer only once the peer makes them wait, so a call whose body is already in
//! hand, or whose answer fits the socket, never touches the timer wheel (a body notes the time
//! of each frame it delivers, a clock read).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every request body routerd reads, as hyper hands it over and held to the listener's pace.
pub type RequestBody = Paced<hyper::body::Incoming>;

/// A call's body as it goes to a worker: kept for a retry, or streamed once within the
/// service's `max_body`.
pub type Payload = rma_daemon::http1::Payload<http_body_util::Limited<RequestBody>>;

/// How fast a request body must arrive: `min_rate` bytes a second on average, after `grace`,
/// and never silent for longer than [`MAX_SILENCE`] (a body sent fast and then held would
/// otherwise have earned hours).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub grace: Duration,
    pub min_rate: u64,
}

/// The longest a request body may go without a byte, whatever it sent before.
pub const MAX_SILENCE: Duration = Duration::from_secs(30);

impl Pace {
    /// When a body that began at `started`, has delivered `received` bytes and last delivered
    /// some at `last` is late.
    fn deadline(self, started: Instant, received: u64, last: Instant) -> Instant {
        let earned = Duration::from_secs_f64(received as f64 / self.min_rate.max(1) as f64);
        (started + self.grace + earned).min(last + MAX_SILENCE.max(self.grace))
    }
}

/// The error a body that fell behind its pace ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrived slower than {min_rate} bytes a second")]
pub struct TooSlow {
    pub min_rate: u64,
}

/// A request body held to a [`Pace`] from the moment its head arrived.
#[derive(Debug)]
pub struct Paced<B> {
    inner: B,
    pace: Pace,
    started: Instant,
    received: u64,
    /// When data last arrived (or the head, before any).
    last: Instant,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<B> Paced<B> {
    pub fn new(inner: B, pace: Pace) -> Self {
        let now = Instant::now();
        Self {
            inner,
            pace,
            started: now,
            received: 0,
            last: now,
            timer: None,
        }
    }
}

impl<B> Body for Paced<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    this.last = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.pace.deadline(this.started, this.received, this.last);
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                ready!(timer.as_mut().poll(cx));
                let min_rate = this.pace.min_rate;
                Poll::Ready(Some(Err(Box::new(TooSlow { min_rate }))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A stream whose writes fail with `TimedOut` once one has waited `limit` for room: the peer
/// stopped reading. Reads pass through (hyper times the request head itself).
#[derive(Debug)]
pub struct WriteDeadline<S> {
    inner: S,
    limit: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<S> WriteDeadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            limit,
            timer: None,
            waiting: false,
        }
    }

    /// Called when a write could not proceed: starts the clock on the first wait, and says
    /// whether the limit has passed since.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let deadline = Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            timer.as_mut().reset(deadline);
            self.waiting = true;
        }
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer stopped reading the response",
        ))
    }

    fn wrote<T>(&mut self, done: Poll<io::Result<T>>, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        match done {
            Poll::Ready(result) => {
                self.waiting = false;
                Poll::Ready(result)
            }
            Poll::Pending => self.stalled(cx).map(Err),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.wrote(done, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.wrote(done, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_flush(cx);
        this.wrote(done, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let done = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.wrote(done, cx)
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use tokio::io::AsyncWriteExt as _;

    use super::*;

    const PACE: Pace = Pace {
        grace: Duration::from_secs(10),
        min_rate: 100,
    };

    /// A body fed by the test through a channel.
    #[derive(Debug)]
    struct Fed(tokio::sync::mpsc::Receiver<Bytes>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0
                .poll_recv(cx)
                .map(|next| next.map(|b| Ok(Frame::data(b))))
        }
    }

    fn channel() -> (tokio::sync::mpsc::Sender<Bytes>, Paced<Fed>) {
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        (tx, Paced::new(Fed(rx), PACE))
    }

    fn chunk(n: usize) -> Bytes {
        Bytes::from(vec![0u8; n])
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_keeps_its_pace_arrives_whole() {
        let (tx, body) = channel();
        tokio::spawn(async move {
            // 200 bytes a second for a minute, above the 100 required.
            for _ in 0..60 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tx.send(chunk(200)).await.unwrap();
            }
        });
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 12_000);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dribbled_body_fails_once_it_falls_behind() {
        let (tx, mut body) = channel();
        let started = Instant::now();
        tokio::spawn(async move {
            // A byte a second: 10 s of grace, then behind.
            for _ in 0..1_000 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx.send(chunk(1)).await.is_err() {
                    return;
                }
            }
        });
        let error = loop {
            match body.frame().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => break e,
                None => panic!("the dribble ended"),
            }
        };
        assert!(error.is::<TooSlow>(), "{error}");
        let took = started.elapsed();
        assert!(
            took >= Duration::from_secs(10) && took < Duration::from_secs(11),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_sent_fast_then_held_fails_after_the_longest_silence() {
        let (tx, mut body) = channel();
        // A megabyte at once has earned 10,000 s at 100 bytes a second; then silence.
        tx.send(chunk(1 << 20)).await.unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let started = Instant::now();
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.is::<TooSlow>(), "{error}");
        assert_eq!(started.elapsed(), MAX_SILENCE);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_stalls_past_the_limit_fails() {
        // A pipe whose reader never reads: writes stall once its buffer is full.
        let (writer, _reader) = tokio::io::duplex(1024);
        let mut stream = WriteDeadline::new(writer, Duration::from_secs(30));
        let started = Instant::now();
        let error = stream.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        // A reader that keeps up gets everything, however long it takes in all.
        let (writer, mut reader) = tokio::io::duplex(1024);
        let mut stream = WriteDeadline::new(writer, Duration::from_secs(30));
        let drain = tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let mut total = 0;
            while total < 64 * 1024 {
                tokio::time::sleep(Duration::from_secs(20)).await;
                total += tokio::io::AsyncReadExt::read(&mut reader, &mut buf)
                    .await
                    .unwrap();
            }
            total
        });
        stream.write_all(&[0u8; 64 * 1024]).await.unwrap();
        assert_eq!(drain.await.unwrap(), 64 * 1024);
    }
}
