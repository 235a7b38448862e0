//! The one HTTP/1.1 client of RMA Mesh: routerd calls its workers with it (on pooled
//! connections), and meshd registers with routerd through it ([`crate::http_client`]). A call
//! writes its request and reads the response head on its own task, and the response body is
//! read from the socket as the caller takes it. There is no task per connection and no channel
//! between a call and its connection; the bytes of a request usually go out in one write, and
//! its response usually comes in one read.
//!
//! - [`codec`]: the HTTP/1.1 of it on bytes alone (request heads, response heads, framing,
//!   the chunked decoder), parsed with httparse (what hyper parses with);
//! - [`conn`]: a connection, which sends a request and reads its response head;
//! - [`body`]: the response body, read from the connection as it is polled.
//!
//! A connection is reused only after a response read to its end, with nothing after it, from
//! an HTTP/1.1 server that did not say `Connection: close` and did not frame the response
//! twice (both a `Content-Length` and a `Transfer-Encoding`). The docs call the server the
//! worker, after routerd's use.

use std::io;
use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::LengthLimitError;
use tokio::net::{TcpSocket, TcpStream};

pub mod body;
pub mod codec;
pub mod conn;

pub use body::{Reader, WorkerBody};
pub use codec::{Head, MAX_HEAD};
pub use conn::{Conn, SendBody, Stream};

/// A request body: bytes in hand (sent again on a retry), or a stream (sent once; routerd's
/// is the caller's body, limited to the service's `max_body`).
#[derive(Debug)]
pub enum Payload<B = http_body_util::Empty<Bytes>> {
    Kept(Bytes),
    Streamed(B),
}

/// Why a request got no response head, or its body no end.
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

/// Opens a connection to `addr`.
pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
    let io = TcpStream::connect(addr).await?;
    io.set_nodelay(true)?;
    Ok(Conn::new(io))
}

/// Opens a connection to `addr` from the address `source` (meshd registers from its mesh IP).
pub async fn connect_from(addr: SocketAddr, source: IpAddr) -> io::Result<Conn> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let io = socket.connect(addr).await?;
    io.set_nodelay(true)?;
    Ok(Conn::new(io))
}

#[cfg(test)]
mod tests;
