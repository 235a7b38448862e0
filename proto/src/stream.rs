//! The lighthouse over TCP, for networks that let no UDP out: TLS 1.3 on TCP (port 443 by
//! default, mutual certificates as on QUIC, ALPN `http/1.1`), then an HTTP/1.1 upgrade, then
//! frames. The upgrade makes the connection an ordinary HTTPS request to anything that looks:
//! a firewall that passes only HTTPS, and an HTTP proxy that carries it with `CONNECT`.
//!
//! - **Upgrade**: the node sends `GET /rma-mesh/lighthouse HTTP/1.1` with `Upgrade:
//!   rma-lighthouse/1` and waits for `101 Switching Protocols`; neither side sends a frame
//!   before. A head is at most [`MAX_HEAD`] bytes.
//! - **Frames**, both ways: a kind byte, a big-endian `u32` length, the body. A control frame's
//!   body is a message as on QUIC's control stream (postcard, at most
//!   [`lighthouse::MAX_FRAME`]); a relay frame's is a relayed packet as in a QUIC datagram (a
//!   4-byte mesh IP, then one WireGuard datagram). A keepalive frame is empty; each side sends
//!   one when it has sent nothing for a while, as QUIC would. Anything else ends the
//!   connection.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

use crate::lighthouse::{self, FrameError, MAX_FRAME, MAX_RELAYED};

/// The lighthouse's TCP port unless configured otherwise.
pub const DEFAULT_TCP_PORT: u16 = 443;
/// The ALPN both sides offer: what an HTTPS client would.
pub const ALPN: &[u8] = b"http/1.1";
pub const UPGRADE_PATH: &str = "/rma-mesh/lighthouse";
pub const UPGRADE_TOKEN: &str = "rma-lighthouse/1";
/// Longest request or response head either side reads.
pub const MAX_HEAD: usize = 2048;

const CONTROL: u8 = 0;
const RELAY: u8 = 1;
const KEEPALIVE: u8 = 2;
const HEADER: usize = 5;

/// The request a node opens the link with.
pub fn upgrade_request(host: &str) -> String {
    format!(
        "GET {UPGRADE_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n\r\n"
    )
}

/// The lighthouse's answer to a request for the link.
pub fn upgrade_response() -> String {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n\r\n"
    )
}

/// The lighthouse's answer to any other request.
pub const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeadError {
    #[error("the head is longer than {MAX_HEAD} bytes")]
    TooLong,
    #[error("the connection ended in the head")]
    Truncated,
    #[error("not an upgrade to {UPGRADE_TOKEN}: {0}")]
    NotUpgrade(String),
}

/// Reads one HTTP head (up to the blank line), no further: nothing follows it until the other
/// side has answered.
pub async fn read_head(stream: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() == MAX_HEAD {
            return Err(HeadError::TooLong);
        }
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return Err(HeadError::Truncated),
        }
    }
    Ok(head)
}

/// Whether a request head asks for the link: `GET` of [`UPGRADE_PATH`] with an `Upgrade`
/// header naming [`UPGRADE_TOKEN`].
pub fn check_request(head: &[u8]) -> Result<(), HeadError> {
    let (start, headers) = split_head(head)?;
    let mut parts = start.split(' ');
    let wanted = (parts.next(), parts.next(), parts.next(), parts.next());
    if wanted != (Some("GET"), Some(UPGRADE_PATH), Some("HTTP/1.1"), None) {
        return Err(HeadError::NotUpgrade(start.to_owned()));
    }
    upgrades(&headers, start)
}

/// Whether a response head is the lighthouse's `101` to [`UPGRADE_TOKEN`].
pub fn check_response(head: &[u8]) -> Result<(), HeadError> {
    let (start, headers) = split_head(head)?;
    if !start.starts_with("HTTP/1.1 101 ") {
        return Err(HeadError::NotUpgrade(start.to_owned()));
    }
    upgrades(&headers, start)
}

/// A head's start line, and its headers as (name, value).
type Head<'a> = (&'a str, Vec<(&'a str, &'a str)>);

fn split_head(head: &[u8]) -> Result<Head<'_>, HeadError> {
    let text =
        std::str::from_utf8(head).map_err(|_| HeadError::NotUpgrade("not UTF-8".to_owned()))?;
    let mut lines = text.split("\r\n");
    let start = lines.next().unwrap_or_default();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(name, value)| (name.trim(), value.trim()))
        .collect();
    Ok((start, headers))
}

fn upgrades(headers: &[(&str, &str)], start: &str) -> Result<(), HeadError> {
    let names = |header: &str, token: &str| {
        headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case(header)
                && value
                    .split(',')
                    .any(|v| v.trim().eq_ignore_ascii_case(token))
        })
    };
    if names("Upgrade", UPGRADE_TOKEN) && names("Connection", "upgrade") {
        Ok(())
    } else {
        Err(HeadError::NotUpgrade(start.to_owned()))
    }
}

/// One frame read from the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A control message's body, in the buffer.
    Control,
    /// A relayed packet, in the buffer.
    Relay,
    Keepalive,
}

/// A control message as a frame.
pub fn control_frame<T: serde::Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    // The control stream's encoding, with the kind byte in front of its length.
    let mut frame = lighthouse::encode(message)?;
    frame.insert(0, CONTROL);
    Ok(frame)
}

/// A relayed packet ([`lighthouse::relay_frame`]'s layout) as a frame.
pub fn relay_frame(packet: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER + packet.len());
    frame.push(RELAY);
    frame.extend_from_slice(&(packet.len() as u32).to_be_bytes());
    frame.extend_from_slice(packet);
    frame
}

pub fn keepalive_frame() -> Vec<u8> {
    vec![KEEPALIVE, 0, 0, 0, 0]
}

/// Reads one frame into `buf`; `None` when the stream ended cleanly between frames. A frame
/// of an unknown kind, or longer than its kind allows, is an error.
pub async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut Vec<u8>,
) -> Result<Option<Frame>, FrameError> {
    let mut header = [0u8; HEADER];
    match stream.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let [kind, len @ ..] = header;
    let len = u32::from_be_bytes(len) as usize;
    let (frame, max) = match kind {
        CONTROL => (Frame::Control, MAX_FRAME),
        RELAY => (Frame::Relay, 4 + MAX_RELAYED),
        KEEPALIVE => (Frame::Keepalive, 0),
        other => {
            return Err(FrameError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("unknown frame kind {other}"),
            )));
        }
    };
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    // Grown as the body arrives, not allocated at once for the length claimed.
    buf.clear();
    let read = (&mut *stream).take(len as u64).read_to_end(buf).await?;
    if read < len {
        return Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    Ok(Some(frame))
}

/// Writes control messages (first) and relayed packets as frames, flushing once both queues
/// are empty, and a keepalive when nothing went for `keepalive`. A write that does not finish
/// within `stall` (a peer that stopped reading) ends it. Returns why it stopped; the control
/// messages it had not taken are still in `control`.
pub async fn write_frames<M: serde::Serialize>(
    mut out: BufWriter<impl AsyncWrite + Unpin>,
    control: &mut mpsc::Receiver<M>,
    mut relay: mpsc::Receiver<Bytes>,
    keepalive: Duration,
    stall: Duration,
) -> String {
    let mut last_sent = Instant::now();
    loop {
        let idle = keepalive.saturating_sub(last_sent.elapsed());
        let frame = tokio::select! {
            biased;
            message = control.recv() => match message {
                Some(message) => match control_frame(&message) {
                    Ok(frame) => frame,
                    Err(e) => return format!("control message: {e}"),
                },
                None => return "control queue closed".to_owned(),
            },
            packet = relay.recv() => match packet {
                Some(packet) => relay_frame(&packet),
                None => return "relay queue closed".to_owned(),
            },
            () = tokio::time::sleep(idle) => keepalive_frame(),
        };
        let write = async {
            out.write_all(&frame).await?;
            if control.is_empty() && relay.is_empty() {
                out.flush().await?;
                last_sent = Instant::now();
            }
            std::io::Result::Ok(())
        };
        match tokio::time::timeout(stall, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return format!("connection: {e}"),
            Err(_) => return format!("a write stalled for {stall:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lighthouse::ToLighthouse;
    use std::net::Ipv4Addr;

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn the_upgrade_is_an_http_request_and_its_101() {
        let request = upgrade_request("lh1.example.org");
        let head = block_on(read_head(&mut request.as_bytes())).unwrap();
        assert_eq!(check_request(&head), Ok(()));
        assert_eq!(check_response(upgrade_response().as_bytes()), Ok(()));
        // Header names and tokens are case-insensitive, as HTTP has them.
        let loose = "GET /rma-mesh/lighthouse HTTP/1.1\r\nconnection: keep-alive, UPGRADE\r\nupgrade: RMA-Lighthouse/1\r\n\r\n";
        assert_eq!(check_request(loose.as_bytes()), Ok(()));
        for wrong in [
            "GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: rma-lighthouse/1\r\n\r\n",
            "POST /rma-mesh/lighthouse HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: rma-lighthouse/1\r\n\r\n",
            "GET /rma-mesh/lighthouse HTTP/1.1\r\nUpgrade: rma-lighthouse/1\r\n\r\n",
            "GET /rma-mesh/lighthouse HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            "\u{0}\r\n\r\n",
        ] {
            assert!(check_request(wrong.as_bytes()).is_err(), "{wrong:?}");
        }
        let refused = "HTTP/1.1 404 Not Found\r\n\r\n";
        assert!(check_response(refused.as_bytes()).is_err());
        assert!(check_response(NOT_FOUND).is_err());
    }

    #[test]
    fn a_head_is_read_no_further_than_its_end_and_no_longer_than_its_limit() {
        let mut input: &[u8] = b"GET / HTTP/1.1\r\n\r\nFRAMES";
        let head = block_on(read_head(&mut input)).unwrap();
        assert_eq!(head, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(input, b"FRAMES");
        let long = vec![b'a'; MAX_HEAD + 10];
        assert_eq!(block_on(read_head(&mut &long[..])), Err(HeadError::TooLong));
        assert_eq!(
            block_on(read_head(&mut &b"GET / HTTP/1.1\r\n"[..])),
            Err(HeadError::Truncated)
        );
    }

    #[test]
    fn frames_carry_control_messages_and_relayed_packets() {
        let packet = lighthouse::relay_frame(Ipv4Addr::new(10, 42, 0, 7), &[9; 1400]);
        let mut stream = control_frame(&ToLighthouse::Park).unwrap();
        stream.extend(keepalive_frame());
        stream.extend(relay_frame(&packet));
        let mut input = &stream[..];
        let mut buf = Vec::new();
        let read = |input: &mut &[u8], buf: &mut Vec<u8>| block_on(read_frame(input, buf));
        assert_eq!(read(&mut input, &mut buf).unwrap(), Some(Frame::Control));
        assert_eq!(
            lighthouse::decode::<ToLighthouse>(&buf).unwrap(),
            ToLighthouse::Park
        );
        assert_eq!(read(&mut input, &mut buf).unwrap(), Some(Frame::Keepalive));
        assert_eq!(read(&mut input, &mut buf).unwrap(), Some(Frame::Relay));
        assert_eq!(buf, packet);
        assert_eq!(read(&mut input, &mut buf).unwrap(), None);
    }

    #[test]
    fn unknown_and_oversized_frames_end_the_link() {
        let mut buf = Vec::new();
        let unknown = [7u8, 0, 0, 0, 1, 0];
        assert!(block_on(read_frame(&mut &unknown[..], &mut buf)).is_err());
        let mut huge = vec![RELAY];
        huge.extend_from_slice(&((4 + MAX_RELAYED + 1) as u32).to_be_bytes());
        assert!(matches!(
            block_on(read_frame(&mut &huge[..], &mut buf)),
            Err(FrameError::TooLarge(_))
        ));
        // A frame cut short is an error, not a clean end.
        let cut = [RELAY, 0, 0, 0, 10, 1, 2];
        assert!(block_on(read_frame(&mut &cut[..], &mut buf)).is_err());
        // The length is read before the body is allocated: a claimed 4 GiB costs nothing.
        let claim = [CONTROL, 0xff, 0xff, 0xff, 0xff];
        assert!(block_on(read_frame(&mut &claim[..], &mut buf)).is_err());
    }
}
