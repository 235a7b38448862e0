//! A worker's response body, read from its connection as the caller's side takes it: the
//! [`Reader`] steps the [`BodyDecoder`] over the connection's buffer, and [`WorkerBody`] is
//! the `http_body::Body` routerd answers with, which hands the connection back when it can be
//! reused.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::net::TcpStream;

use super::codec::{BodyDecoder, Step};
use super::{Conn, Error, Stream};

/// Reads a response body from its connection.
#[derive(Debug)]
pub struct Reader<S = TcpStream> {
    conn: Conn<S>,
    decoder: BodyDecoder,
    /// The worker has closed the connection: what is buffered is all there is.
    ended: bool,
}

impl<S: Stream> Reader<S> {
    pub(super) fn new(conn: Conn<S>, decoder: BodyDecoder) -> Self {
        Self {
            conn,
            decoder,
            ended: false,
        }
    }

    /// The connection closes after this response, however it ends.
    pub(super) fn close_after(&mut self) {
        self.decoder.close_after();
    }

    /// Whether the body has been read to its end.
    pub fn done(&self) -> bool {
        self.decoder.done()
    }

    /// The connection, if it can carry another request: the body was read to its end, the
    /// worker keeps it open, and nothing came after the response.
    pub fn into_reusable(self) -> Option<Conn<S>> {
        let reusable = self.done() && self.decoder.keep_alive();
        let mut conn = self.conn;
        (reusable && conn.buffered().is_empty()).then(|| {
            conn.reused = true;
            conn
        })
    }

    /// Whether the body's end was known from its head (a `Content-Length`, or no body), as
    /// opposed to chunked or until the close.
    pub fn length_framed(&self) -> bool {
        self.decoder.length_framed()
    }

    pub fn size_hint(&self) -> SizeHint {
        self.decoder
            .exact_left()
            .map_or_else(SizeHint::default, SizeHint::with_exact)
    }

    /// The body's next bytes; `None` at its end.
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, Error>> {
        loop {
            match self.decoder.step(self.conn.buffered(), self.ended)? {
                Step::Data(n) => return Poll::Ready(Ok(Some(self.conn.take(n)))),
                Step::Framing(n) => self.conn.consume(n),
                Step::More => {
                    if ready!(self.conn.poll_fill(cx)).map_err(Error::Read)? == 0 {
                        self.ended = true;
                    }
                }
                Step::End => return Poll::Ready(Ok(None)),
            }
        }
    }
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
