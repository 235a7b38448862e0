//! HTTP/1.1 for the client, on bytes alone: the request head it writes, the response head it
//! parses, and how the response body is framed and decoded (RFC 9112 section
//! 6: no body for HEAD, 1xx, 204 and 304; chunked; a Content-Length; or until the worker
//! closes). Nothing here reads or writes a socket.

use std::io::Write as _;

use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::response::Parts;
use axum::http::{Method, StatusCode, Uri, Version};
use bytes::Bytes;

use super::Error;

/// A response head (status line and headers) may not be larger, or have more headers.
pub const MAX_HEAD: usize = 64 << 10;
const MAX_HEADERS: usize = 128;
/// A chunk-size line or a trailer line may not be longer.
pub const MAX_LINE: usize = 4 << 10;

/// What goes in a request's head besides its body's framing.
#[derive(Debug, Clone, Copy)]
pub struct Head<'a> {
    pub method: &'a Method,
    pub target: &'a Uri,
    pub host: &'a HeaderValue,
    /// Without `Host`, `Content-Length`, `Transfer-Encoding` or other hop-by-hop headers.
    pub headers: &'a HeaderMap,
}

/// Writes a request's head: request line, `Host`, the headers, and the body's framing (its
/// length, or chunked when it is `None`).
pub fn write_head(out: &mut Vec<u8>, head: Head<'_>, body_length: Option<u64>) {
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
    match body_length {
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

/// A response head parsed from the front of `buf`: its parts, its Content-Length (if any),
/// and its length in bytes; `None` if it is not all there yet. The head is copied once, and
/// header values point into the copy. Too large is too large however much was buffered.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Parts, Option<u64>, usize)>, Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buf) {
        Ok(httparse::Status::Complete(length)) if length > MAX_HEAD => {
            return Err(Error::Invalid("response head too large"));
        }
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(Error::Invalid("response head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Error::Invalid("too many headers")),
        Err(_) => return Err(Error::Invalid("malformed response head")),
    };
    let base = buf.as_ptr() as usize;
    let copy = Bytes::copy_from_slice(&buf[..length]);
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
    Ok(Some((parts, content_length, length)))
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

/// How a response's body ends.
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

/// A response body's decoder: what to do with the bytes buffered at the front of the
/// connection, one step at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyDecoder {
    framing: Framing,
    /// Whether the body's end was known from its head (a Content-Length, or no body).
    length_framed: bool,
    /// Whether the connection may carry another request once the body is read to its end.
    keep_alive: bool,
}

/// One step of decoding a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// This many buffered bytes, at the front, are body data.
    Data(usize),
    /// This many buffered bytes are framing, and are consumed.
    Framing(usize),
    /// More bytes are needed.
    More,
    /// The body has ended.
    End,
}

impl BodyDecoder {
    /// The decoder for the body of a response with `parts` and `content_length`, to a request
    /// that was a HEAD or not.
    pub fn new(
        parts: &Parts,
        head_request: bool,
        content_length: Option<u64>,
    ) -> Result<Self, Error> {
        let framing = framing(parts, head_request, content_length)?;
        // Both a Content-Length and a Transfer-Encoding: the coding wins (RFC 9112 6.3), but a
        // worker that sends both may mean something else by them, so nothing more is read
        // from its connection.
        let ambiguous =
            content_length.is_some() && parts.headers.contains_key(header::TRANSFER_ENCODING);
        let keep_alive = parts.version == Version::HTTP_11
            && !ambiguous
            && !has_token(&parts.headers, &header::CONNECTION, "close")
            && !matches!(framing, Framing::Close);
        Ok(Self {
            length_framed: matches!(framing, Framing::Length(_) | Framing::Done),
            framing,
            keep_alive,
        })
    }

    /// Whether the body has been read to its end.
    pub fn done(&self) -> bool {
        self.framing == Framing::Done
    }

    /// Whether the connection can carry another request after this body, once it is done.
    pub fn keep_alive(&self) -> bool {
        self.keep_alive
    }

    /// A request that got its answer early, while its own body was still going out: the
    /// connection closes after the answer.
    pub fn close_after(&mut self) {
        self.keep_alive = false;
    }

    /// Whether the body's end was known from its head (a `Content-Length`, or no body), as
    /// opposed to chunked or until the close.
    pub fn length_framed(&self) -> bool {
        self.length_framed
    }

    /// The body's exact length still to come, when it is known.
    pub fn exact_left(&self) -> Option<u64> {
        match self.framing {
            Framing::Length(n) => Some(n),
            Framing::Done => Some(0),
            _ => None,
        }
    }

    /// The next step with `buffered` at the front of the connection; `ended` once the worker
    /// has closed it (and `buffered` is all there will be).
    pub fn step(&mut self, buffered: &[u8], ended: bool) -> Result<Step, Error> {
        match self.framing {
            Framing::Done => Ok(Step::End),
            Framing::Close if buffered.is_empty() && ended => {
                self.framing = Framing::Done;
                Ok(Step::End)
            }
            Framing::Close if buffered.is_empty() => Ok(Step::More),
            Framing::Close => Ok(Step::Data(buffered.len())),
            Framing::Length(left) => {
                let n = take(left, buffered, ended)?;
                if n == 0 {
                    return Ok(Step::More);
                }
                self.framing = match left - n as u64 {
                    0 => Framing::Done,
                    rest => Framing::Length(rest),
                };
                Ok(Step::Data(n))
            }
            Framing::Chunked(Chunk::Data(left)) => {
                let n = take(left, buffered, ended)?;
                if n == 0 {
                    return Ok(Step::More);
                }
                self.framing = Framing::Chunked(match left - n as u64 {
                    0 => Chunk::DataEnd,
                    rest => Chunk::Data(rest),
                });
                Ok(Step::Data(n))
            }
            Framing::Chunked(chunk) => {
                let Some((length, taken)) = line(buffered)? else {
                    return if ended {
                        Err(Error::Closed)
                    } else {
                        Ok(Step::More)
                    };
                };
                let line = &buffered[..length];
                self.framing = match chunk {
                    Chunk::DataEnd if line.is_empty() => Framing::Chunked(Chunk::Size),
                    Chunk::DataEnd => {
                        return Err(Error::Invalid("chunk data longer than its size"));
                    }
                    Chunk::Trailers if line.is_empty() => Framing::Done,
                    Chunk::Trailers => Framing::Chunked(Chunk::Trailers),
                    _ => match chunk_size(line)? {
                        0 => Framing::Chunked(Chunk::Trailers),
                        n => Framing::Chunked(Chunk::Data(n)),
                    },
                };
                Ok(Step::Framing(taken))
            }
        }
    }
}

/// How many of `buffered` belong to a part of the body `left` bytes long: 0 if more must be
/// read first; the end of the stream before then is an error.
fn take(left: u64, buffered: &[u8], ended: bool) -> Result<usize, Error> {
    if buffered.is_empty() {
        return if ended { Err(Error::Closed) } else { Ok(0) };
    }
    Ok(left.min(buffered.len() as u64) as usize)
}

fn framing(
    parts: &Parts,
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

/// A whole line at the front of `buffered`: its length without the CRLF (or LF), and with
/// it; `None` if it is not all there yet. A line is too long for its length, not for how much
/// had been read when it was looked at.
fn line(buffered: &[u8]) -> Result<Option<(usize, usize)>, Error> {
    let newline = buffered.iter().take(MAX_LINE + 2).position(|&b| b == b'\n');
    if let Some(at) = newline {
        let length = if at > 0 && buffered[at - 1] == b'\r' {
            at - 1
        } else {
            at
        };
        if length > MAX_LINE {
            return Err(Error::Invalid("chunk line too long"));
        }
        return Ok(Some((length, at + 1)));
    }
    if buffered.len() > MAX_LINE + 1 {
        return Err(Error::Invalid("chunk line too long"));
    }
    Ok(None)
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

#[cfg(test)]
#[path = "codec_tests.rs"]
mod tests;
