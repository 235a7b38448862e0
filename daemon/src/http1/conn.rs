//! One HTTP/1.1 connection to a worker: its stream and read buffer. It writes a request (head
//! and body) and reads the response head; the body is then read through a [`Reader`].

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::response::Parts;
use axum::http::{Method, StatusCode};
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::codec::{self, BodyDecoder, Head};
use super::{Error, Payload, Reader, SendError};

/// The read buffer's first size, and the most it grows to for large bodies.
const READ_FIRST: usize = 8 << 10;
const READ_MOST: usize = 64 << 10;
/// A request body up to this size goes out in the same write as its head.
const INLINE_BODY: usize = 16 << 10;

/// A streamed request body.
pub trait SendBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin
{
}

impl<B> SendBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Unpin
{
}

/// What a connection to a worker runs on: a TCP stream in routerd; a scripted stream in the
/// fuzz targets, which split the worker's bytes at random.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + std::fmt::Debug {
    /// Whether the worker has closed the stream or sent something unasked, found without
    /// waiting.
    fn has_news(&self) -> bool;
}

impl Stream for TcpStream {
    fn has_news(&self) -> bool {
        let mut probe = [0u8; 1];
        !matches!(self.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// One HTTP/1.1 connection to a worker.
#[derive(Debug)]
pub struct Conn<S = TcpStream> {
    pub(super) io: S,
    /// Bytes read; `buf[start..end]` are not consumed yet.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// Request heads are written here (kept from one request to the next).
    out: Vec<u8>,
    /// It carried an earlier exchange (a worker may close an idle connection at any time).
    pub reused: bool,
}

impl<S: Stream> Conn<S> {
    pub fn new(io: S) -> Self {
        Self {
            io,
            buf: vec![0; READ_FIRST],
            start: 0,
            end: 0,
            out: Vec::new(),
            reused: false,
        }
    }

    /// Whether the worker has closed it (or sent something unasked), found without a system
    /// call unless the socket was reported readable.
    pub fn closed(&self) -> bool {
        self.start != self.end || self.io.has_news()
    }

    /// The bytes read and not consumed yet.
    pub(super) fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    pub(super) fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The next `n` buffered bytes, copied out: the buffer stays this connection's alone and
    /// is read into again without reallocating.
    pub(super) fn take(&mut self, n: usize) -> Bytes {
        let data = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
        self.consume(n);
        data
    }

    /// Reads more; `Ok(0)` at the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                let larger = (self.buf.len() * 2).max(READ_FIRST);
                self.buf.resize(larger, 0);
            }
        }
        let space = self.buf.len() - self.end;
        let mut read = ReadBuf::new(&mut self.buf[self.end..]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        let n = read.filled().len();
        self.end += n;
        // A read that filled all the room there was: large bodies get a larger buffer.
        if n == space && self.buf.len() < READ_MOST && self.start == 0 {
            let larger = (self.buf.len() * 2).min(READ_MOST);
            self.buf.resize(larger, 0);
        }
        Poll::Ready(Ok(n))
    }

    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    /// Writes all of `data`; on failure, also how much of it went out.
    async fn write_all(&mut self, mut data: &[u8]) -> Result<(), (usize, io::Error)> {
        let mut written = 0;
        while !data.is_empty() {
            match poll_fn(|cx| Pin::new(&mut self.io).poll_write(cx, data)).await {
                Ok(0) => return Err((written, io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    written += n;
                    data = &data[n..];
                }
                Err(e) => return Err((written, e)),
            }
        }
        Ok(())
    }

    /// Sends a request and reads its response head; the body is then read through the
    /// [`Reader`], which owns the connection.
    pub async fn send<B: SendBody>(
        mut self,
        head: Head<'_>,
        payload: &mut Payload<B>,
    ) -> Result<(Parts, Reader<S>), SendError> {
        let head_request = *head.method == Method::HEAD;
        if let Err(e) = self.write_request(head, payload).await {
            if e.unsent || !matches!(e.error, Error::Write(_)) {
                return Err(e);
            }
            // A worker may answer before it has read the whole request (an early refusal of
            // an upload) and stop reading: its answer is the call's, on a connection that
            // is then closed.
            return match self.read_head(head_request).await {
                Ok((parts, mut reader)) => {
                    reader.close_after();
                    Ok((parts, reader))
                }
                Err(_) => Err(e),
            };
        }
        let reader = self.read_head(head_request).await;
        reader.map_err(|error| SendError {
            error,
            unsent: false,
        })
    }

    /// Writes the request: its head (with a small body, in the same write), then its body.
    async fn write_request<B: SendBody>(
        &mut self,
        head: Head<'_>,
        payload: &mut Payload<B>,
    ) -> Result<(), SendError> {
        let sent = |error| SendError {
            error,
            unsent: false,
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let length = match payload {
            Payload::Kept(bytes) => Some(bytes.len() as u64),
            Payload::Streamed(body) => body.size_hint().exact(),
        };
        codec::write_head(&mut out, head, length);
        let inline = match payload {
            Payload::Kept(bytes) if bytes.len() <= INLINE_BODY => {
                out.extend_from_slice(bytes);
                true
            }
            _ => false,
        };
        let first = self.write_all(&out).await;
        self.out = out;
        // Only a request of which not one byte went out is sure not to have reached the
        // worker (a pooled connection it had closed refuses the first byte).
        first.map_err(|(written, e)| SendError {
            error: Error::Write(e),
            unsent: written == 0,
        })?;
        let write = |r: Result<(), (usize, io::Error)>| r.map_err(|(_, e)| sent(Error::Write(e)));
        match payload {
            Payload::Kept(_) if inline => Ok(()),
            Payload::Kept(bytes) => write(self.write_all(bytes).await),
            Payload::Streamed(body) => {
                let chunked = length.is_none();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| sent(Error::Body(e.into())))?;
                    // Trailers are not passed on.
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    if data.is_empty() {
                        continue;
                    }
                    if chunked {
                        write(
                            self.write_all(format!("{:x}\r\n", data.len()).as_bytes())
                                .await,
                        )?;
                    }
                    write(self.write_all(&data).await)?;
                    if chunked {
                        write(self.write_all(b"\r\n").await)?;
                    }
                }
                if chunked {
                    write(self.write_all(b"0\r\n\r\n").await)?;
                }
                Ok(())
            }
        }
    }

    /// Reads a response head (after any 1xx ones) and how its body is framed.
    async fn read_head(mut self, head_request: bool) -> Result<(Parts, Reader<S>), Error> {
        loop {
            if let Some((parts, length, taken)) = codec::parse_head(self.buffered())? {
                self.consume(taken);
                let informational = parts.status.is_informational();
                if informational && parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    continue; // 100 Continue, 103 Early Hints: the answer comes after
                }
                if informational {
                    return Err(Error::Switched);
                }
                let decoder = BodyDecoder::new(&parts, head_request, length)?;
                return Ok((parts, Reader::new(self, decoder)));
            }
            match self.fill().await {
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(e) => return Err(Error::Read(e)),
            }
        }
    }
}
