//! HTTP/1.1 to workers, on pooled connections that the call itself reads and writes: a call
//! writes its request and reads the response head on its own task, and the response body is
//! read from the socket as the caller's connection takes it. There is no task per connection
//! and no channel between a call and its connection; the bytes of a call's request usually go
//! out in one write, and its response usually comes in one read.
//!
//! Responses are parsed with httparse (what hyper parses with) and framed as RFC 9112
//! section 6 says: no body for HEAD, 1xx, 204 and 304; chunked; a Content-Length; or until
//! the worker closes. A connection is reused only after a response read to its end, with
//! nothing after it, from an HTTP/1.1 worker that did not say `Connection: close`.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Uri, Version};
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use crate::pace::RequestBody;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The read buffer's first size, and the most it grows to for large bodies.
const READ_FIRST: usize = 8 << 10;
const READ_MOST: usize = 64 << 10;
/// A response head (status line and headers) may not be larger, or have more headers.
pub const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 128;
/// A chunk-size line or a trailer line may not be longer.
const MAX_LINE: usize = 4 << 10;
/// A request body up to this size goes out in the same write as its head.
const INLINE_BODY: usize = 16 << 10;

/// A request body: bytes in hand (sent again on a retry), or a stream from the caller
/// (sent once), limited to the service's `max_body`.
#[derive(Debug)]
pub enum Payload {
    Kept(Bytes),
    Streamed(Limited<RequestBody>),
}

/// What goes in a request's head besides its body's framing.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    pub target: &'a Uri,
    pub host: &'a HeaderValue,
    /// Without `Host`, `Content-Length`, `Transfer-Encoding` or other hop-by-hop headers.
    pub headers: &'a HeaderMap,
}

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("writing the request: {0}")]
    Write(io::Error),
    #[error("reading the response: {0}")]
    Read(io::Error),
    #[error("the worker closed the connection before its response was complete")]
    Closed,
    #[error("invalid response from the worker: {0}")]
    Invalid(&'static str),
    #[error("the request body ended with an error: {0}")]
    Body(Box<dyn std::error::Error + Send + Sync>),
    /// A 101: routerd never asks for a protocol switch (`Upgrade` is not passed on), and does
    /// not carry one. The worker answered; it is not failing.
    #[error("the worker switched protocols (101), which routerd does not carry")]
    Switched,
}

impl Error {
    /// Whether the caller's body was larger than the service takes.
    pub fn too_large(&self) -> bool {
        matches!(self, Self::Body(e) if e.is::<LengthLimitError>())
    }
}

/// A request that got no response, and whether any of it reached the worker.
#[derive(Debug)]
pub struct SendError {
    pub error: Error,
    /// Nothing was written: another worker may take the request, body and all.
    pub unsent: bool,
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
    io: S,
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

    fn buffered(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// The next `n` buffered bytes, copied out: the buffer stays this connection's alone and
    /// is read into again without reallocating.
    fn take(&mut self, n: usize) -> Bytes {
        let data = Bytes::copy_from_slice(&self.buf[self.start..self.start + n]);
        self.consume(n);
        data
    }

    /// Reads more; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
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
    pub async fn send(
        mut self,
        head: Head<'_>,
        payload: &mut Payload,
    ) -> Result<(axum::http::response::Parts, Reader<S>), SendError> {
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
                    reader.keep_alive = false;
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
    async fn write_request(
        &mut self,
        head: Head<'_>,
        payload: &mut Payload,
    ) -> Result<(), SendError> {
        let sent = |error| SendError {
            error,
            unsent: false,
        };
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        write_head(&mut out, head, payload);
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
                let chunked = body.size_hint().exact().is_none();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| sent(Error::Body(e)))?;
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
    async fn read_head(
        mut self,
        head_request: bool,
    ) -> Result<(axum::http::response::Parts, Reader<S>), Error> {
        loop {
            if let Some((parts, length)) = self.parse_head()? {
                let informational = parts.status.is_informational();
                if informational && parts.status != StatusCode::SWITCHING_PROTOCOLS {
                    continue; // 100 Continue, 103 Early Hints: the answer comes after
                }
                if informational {
                    return Err(Error::Switched);
                }
                let framing = framing(&parts, head_request, length)?;
                // Both a Content-Length and a Transfer-Encoding: the coding wins (RFC 9112
                // 6.3), but a worker that sends both may mean something else by them, so
                // nothing more is read from its connection.
                let ambiguous =
                    length.is_some() && parts.headers.contains_key(header::TRANSFER_ENCODING);
                let keep_alive = parts.version == Version::HTTP_11
                    && !ambiguous
                    && !has_token(&parts.headers, &header::CONNECTION, "close")
                    && !matches!(framing, Framing::Close);
                let reader = Reader {
                    conn: self,
                    length_framed: matches!(framing, Framing::Length(_) | Framing::Done),
                    framing,
                    keep_alive,
                };
                return Ok((parts, reader));
            }
            if self.end - self.start >= MAX_HEAD {
                return Err(Error::Invalid("response head too large"));
            }
            match self.fill().await {
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(e) => return Err(Error::Read(e)),
            }
        }
    }

    /// Parses a complete response head from the buffer and consumes it; `None` if it is
    /// not all there yet. The head is copied once, and header values point into the copy.
    fn parse_head(&mut self) -> Result<Option<(axum::http::response::Parts, Option<u64>)>, Error> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        let buffered = &self.buf[self.start..self.end];
        let length = match response.parse(buffered) {
            // However the bytes arrived: a head is too large for its length.
            Ok(httparse::Status::Complete(length)) if length > MAX_HEAD => {
                return Err(Error::Invalid("response head too large"));
            }
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many headers")),
            Err(_) => return Err(Error::Invalid("malformed response head")),
        };
        let base = buffered.as_ptr() as usize;
        let copy = Bytes::copy_from_slice(&buffered[..length]);
        let status = StatusCode::from_u16(response.code.unwrap_or(0))
            .map_err(|_| Error::Invalid("status code"))?;
        let version = match response.version {
            Some(1) => Version::HTTP_11,
            _ => Version::HTTP_10,
        };
        let mut map = HeaderMap::with_capacity(response.headers.len());
        let mut content_length: Option<u64> = None;
        for field in response.headers.iter() {
            let name = HeaderName::from_bytes(field.name.as_bytes())
                .map_err(|_| Error::Invalid("header name"))?;
            let at = field.value.as_ptr() as usize - base;
            let value = HeaderValue::from_maybe_shared(copy.slice(at..at + field.value.len()))
                .map_err(|_| Error::Invalid("header value"))?;
            if name == header::CONTENT_LENGTH {
                let n = content_length_value(&value)?;
                if content_length.is_some_and(|earlier| earlier != n) {
                    return Err(Error::Invalid("conflicting Content-Length values"));
                }
                content_length = Some(n);
            }
            map.append(name, value);
        }
        let (mut parts, ()) = axum::http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        parts.headers = map;
        self.consume(length);
        Ok(Some((parts, content_length)))
    }
}

/// A Content-Length value: digits only, possibly a list of the same number.
fn content_length_value(value: &HeaderValue) -> Result<u64, Error> {
    let invalid = Error::Invalid("Content-Length");
    let text = value
        .to_str()
        .map_err(|_| Error::Invalid("Content-Length"))?;
    let mut found = None;
    for item in text.split(',') {
        let item = item.trim();
        if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid);
        }
        let n: u64 = item.parse().map_err(|_| Error::Invalid("Content-Length"))?;
        if found.is_some_and(|f| f != n) {
            return Err(invalid);
        }
        found = Some(n);
    }
    found.ok_or(invalid)
}

/// Whether a comma-separated header (such as `Connection`) lists `token`.
fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// A request's head: request line, `Host`, the headers, and its body's framing.
fn write_head(out: &mut Vec<u8>, head: Head<'_>, payload: &Payload) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = head.target.path_and_query().map_or("/", |p| p.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(head.host.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let length = match payload {
        Payload::Kept(bytes) => Some(bytes.len() as u64),
        Payload::Streamed(body) => body.size_hint().exact(),
    };
    match length {
        // An empty body is declared only where a body is expected.
        Some(0) if !matches!(*head.method, Method::POST | Method::PUT | Method::PATCH) => {}
        Some(n) => {
            // Writing to a Vec cannot fail.
            let _ = write!(out, "content-length: {n}\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes are still to come.
    Length(u64),
    Chunked(Chunk),
    /// At the end of the stream (the connection is not reused).
    Close,
    Done,
}

/// Where a chunked body's reading is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, with this many bytes left.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// At the trailer section after the last chunk.
    Trailers,
}

fn framing(
    parts: &axum::http::response::Parts,
    head_request: bool,
    content_length: Option<u64>,
) -> Result<Framing, Error> {
    let status = parts.status;
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Done);
    }
    let codings = parts.headers.get_all(header::TRANSFER_ENCODING);
    if codings.iter().next().is_some() {
        // RFC 9112 6.3: chunked only as the final coding; otherwise until the close.
        let last = codings
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .rfind(|t| !t.is_empty());
        return Ok(match last {
            Some(t) if t.eq_ignore_ascii_case("chunked") => Framing::Chunked(Chunk::Size),
            _ => Framing::Close,
        });
    }
    Ok(match content_length {
        Some(0) => Framing::Done,
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// Reads a response body from its connection.
#[derive(Debug)]
pub struct Reader<S = TcpStream> {
    conn: Conn<S>,
    framing: Framing,
    keep_alive: bool,
    length_framed: bool,
}

impl<S: Stream> Reader<S> {
    /// Whether the body has been read to its end.
    pub fn done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// The connection, if it can carry another request: the body was read to its end, the
    /// worker keeps it open, and nothing came after the response.
    pub fn into_reusable(self) -> Option<Conn<S>> {
        let reusable = self.done() && self.keep_alive;
        let mut conn = self.conn;
        (reusable && conn.start == conn.end).then(|| {
            conn.reused = true;
            conn
        })
    }

    /// Whether the body's end was known from its head (a `Content-Length`, or no body), as
    /// opposed to chunked or until the close.
    pub fn length_framed(&self) -> bool {
        self.length_framed
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The body's next bytes; `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            match self.framing {
                Framing::Done => return Poll::Ready(Ok(None)),
                Framing::Length(left) => {
                    let (data, rest) = ready!(self.poll_take(cx, left))?;
                    self.framing = match rest {
                        0 => Framing::Done,
                        rest => Framing::Length(rest),
                    };
                    return Poll::Ready(Ok(Some(data)));
                }
                Framing::Close => {
                    // Not kept alive (see `read_head`): the end is the connection's.
                    if self.conn.start == self.conn.end && ready!(self.fill(cx))? == 0 {
                        self.framing = Framing::Done;
                        return Poll::Ready(Ok(None));
                    }
                    let n = self.conn.end - self.conn.start;
                    return Poll::Ready(Ok(Some(self.conn.take(n))));
                }
                Framing::Chunked(chunk) => {
                    if let Some(data) = ready!(self.poll_chunked(cx, chunk))? {
                        return Poll::Ready(Ok(Some(data)));
                    }
                }
            }
        }
    }

    /// Up to `left` bytes of a body whose length is known (all of it, or a chunk); with how
    /// many are left after them. The end of the stream before then is an error.
    fn poll_take(&mut self, cx: &mut Context<'_>, left: u64) -> Poll<Result<(Bytes, u64), Error>> {
        if self.conn.start == self.conn.end && ready!(self.fill(cx))? == 0 {
            return Poll::Ready(Err(Error::Closed));
        }
        let n = left.min((self.conn.end - self.conn.start) as u64);
        Poll::Ready(Ok((self.conn.take(n as usize), left - n)))
    }

    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, Error>> {
        self.conn.poll_fill(cx).map_err(Error::Read)
    }

    /// One step of a chunked body: data, or `None` after moving on (or at the end, where
    /// the framing is then `Done`).
    fn poll_chunked(
        &mut self,
        cx: &mut Context<'_>,
        chunk: Chunk,
    ) -> Poll<Result<Option<Bytes>, Error>> {
        match chunk {
            Chunk::Data(left) => {
                let (data, rest) = ready!(self.poll_take(cx, left))?;
                self.framing = Framing::Chunked(match rest {
                    0 => Chunk::DataEnd,
                    rest => Chunk::Data(rest),
                });
                Poll::Ready(Ok(Some(data)))
            }
            Chunk::Size | Chunk::DataEnd | Chunk::Trailers => {
                let Some((length, taken)) = ready!(self.poll_line(cx))? else {
                    return Poll::Ready(Err(Error::Closed));
                };
                let line = &self.conn.buffered()[..length];
                let next = match chunk {
                    Chunk::DataEnd if line.is_empty() => Framing::Chunked(Chunk::Size),
                    Chunk::DataEnd => {
                        return Poll::Ready(Err(Error::Invalid("chunk data longer than its size")));
                    }
                    Chunk::Trailers if line.is_empty() => Framing::Done,
                    Chunk::Trailers => Framing::Chunked(Chunk::Trailers),
                    _ => match chunk_size(line)? {
                        0 => Framing::Chunked(Chunk::Trailers),
                        n => Framing::Chunked(Chunk::Data(n)),
                    },
                };
                self.conn.consume(taken);
                self.framing = next;
                Poll::Ready(Ok(None))
            }
        }
    }

    /// Waits for a whole line at the front of the buffer: its length without the CRLF (or
    /// LF), and with it; `None` at the end of the stream.
    fn poll_line(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<(usize, usize)>, Error>> {
        loop {
            let buffered = self.conn.buffered();
            // However the bytes arrived: a line is too long for its length, not for how
            // much had been read when it was looked at.
            let newline = buffered.iter().take(MAX_LINE + 2).position(|&b| b == b'\n');
            if let Some(at) = newline {
                let length = if at > 0 && buffered[at - 1] == b'\r' {
                    at - 1
                } else {
                    at
                };
                return Poll::Ready(Ok(Some((length, at + 1))));
            }
            if buffered.len() > MAX_LINE + 1 {
                return Poll::Ready(Err(Error::Invalid("chunk line too long")));
            }
            if ready!(self.fill(cx))? == 0 {
                return Poll::Ready(Ok(None));
            }
        }
    }
}

/// A chunk-size line's size (hex, before any `;` extension).
fn chunk_size(line: &[u8]) -> Result<u64, Error> {
    let digits = line.split(|&b| b == b';').next().unwrap_or_default();
    let digits = digits.trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err(Error::Invalid("chunk size"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| Error::Invalid("chunk size"))?;
    u64::from_str_radix(text, 16).map_err(|_| Error::Invalid("chunk size"))
}

/// A worker's response body, read from its connection as it is polled. When it has been
/// read to the end, `on_end` gets the connection if it can be reused (and `None` if not, or
/// if the body is dropped before its end, which closes the connection).
pub struct WorkerBody<F: FnOnce(Option<Conn<S>>) + Send, S: Stream = TcpStream> {
    reader: Option<Reader<S>>,
    on_end: Option<F>,
}

impl<F: FnOnce(Option<Conn<S>>) + Send, S: Stream> std::fmt::Debug for WorkerBody<F, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBody")
            .field("reader", &self.reader)
            .finish_non_exhaustive()
    }
}

impl<F: FnOnce(Option<Conn<S>>) + Send + Unpin, S: Stream> WorkerBody<F, S> {
    pub fn new(reader: Reader<S>, on_end: F) -> Self {
        let mut this = Self {
            reader: Some(reader),
            on_end: Some(on_end),
        };
        if this.reader.as_ref().is_some_and(Reader::done) {
            this.end();
        }
        this
    }

    fn end(&mut self) {
        let conn = self.reader.take().and_then(Reader::into_reusable);
        if let Some(on_end) = self.on_end.take() {
            on_end(conn);
        }
    }
}

impl<F: FnOnce(Option<Conn<S>>) + Send + Unpin, S: Stream> http_body::Body for WorkerBody<F, S> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let Some(reader) = this.reader.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = ready!(reader.poll_data(cx));
        let ended = reader.done();
        match polled {
            Ok(Some(data)) => {
                if ended {
                    this.end();
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Ok(None) => {
                this.end();
                Poll::Ready(None)
            }
            Err(e) => {
                this.reader = None;
                this.end();
                Poll::Ready(Some(Err(e)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reader.as_ref().is_none_or(Reader::done)
    }

    fn size_hint(&self) -> SizeHint {
        self.reader
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Reader::size_hint)
    }
}

impl<F: FnOnce(Option<Conn<S>>) + Send, S: Stream> Drop for WorkerBody<F, S> {
    fn drop(&mut self) {
        // Dropped before its end: the connection closes.
        self.reader.take();
        if let Some(on_end) = self.on_end.take() {
            on_end(None);
        }
    }
}

/// Opens a connection to `addr`.
pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
    let io = TcpStream::connect(addr).await?;
    io.set_nodelay(true)?;
    Ok(Conn::new(io))
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
