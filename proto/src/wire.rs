//! What travels on a node's WireGuard UDP socket, and how to tell the kinds apart.
//!
//! Every peer's traffic shares one socket. A datagram is one of:
//!
//! - a **WireGuard message**: its first four bytes are a little-endian message type 1 to 4
//!   (handshake initiation, handshake response, cookie reply, transport data), so its first
//!   byte is 1 to 4 and the next three are zero;
//! - an **RMA Mesh control message**, which always starts with the byte `0xF0` and so can never
//!   be taken for WireGuard:
//!
//! ```text
//!  0      1      2      3      4      5      6..8         8..
//! +------+------+------+------+------+------+------------+------------------+
//! | 0xF0 | 'R'  | 'M'  | ver  | kind | flags| length u16 | body (length B)  |
//! +------+------+------+------+------+------+------------+------------------+
//! ```
//!
//! `ver` is 1. `length` is big-endian and must equal the bytes that follow. Flag bit 0 asks the
//! receiver to answer in kind. Kinds:
//!
//! - `1`, **certificate hello**: the body is the sender's node certificate (DER), then the DER
//!   certificate of the issuing CA that signed it if the root did not, followed by zero
//!   padding. Peers with static endpoints exchange hellos before their first WireGuard
//!   handshake: that is how each learns the other's WireGuard key and mesh IP, and it is
//!   trusted only once the certificate verifies against the CA. The hello itself proves nothing
//!   about the sender (certificates are public); the WireGuard handshake that follows proves
//!   possession of the key the certificate names. A hello that asks for an answer is padded to
//!   at least [`HELLO_REQUEST_MIN`] bytes, and is answered only with a hello no longer than it:
//!   an answer never amplifies.
//! - `2`, **punch**: the body is the sender's mesh IP (4 bytes) followed by zero padding up to
//!   [`PUNCH_LEN`]. Peers introduced by a lighthouse send punches to each other's candidate
//!   endpoints to open their NATs. A punch is unauthenticated: it only tells the receiver which
//!   address to try, and the path is used only once WireGuard packets arrive on it. It is padded
//!   to the size of a handshake initiation so that answering it never amplifies.
//! - `3`, **reflect**: the body is a 16-byte token the lighthouse handed out over QUIC. The node
//!   sends it from its WireGuard socket to the lighthouse's reflector port, so the lighthouse
//!   learns the public address of that socket (the NAT mapping peers must hit) and ties it to
//!   the QUIC connection the token was issued on.
//! - `4`, `5` and `6`, **parked ping**, **parked ack** and **wake**: how a node whose QUIC
//!   connection to a lighthouse is parked stays registered ([`crate::parked`]).

use std::net::Ipv4Addr;

/// First byte of every RMA Mesh control message.
pub const CONTROL_MARKER: u8 = 0xF0;
const MAGIC: [u8; 3] = [CONTROL_MARKER, b'R', b'M'];
const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
const KIND_CERT_HELLO: u8 = 1;
const KIND_PUNCH: u8 = 2;
const KIND_REFLECT: u8 = 3;
pub(crate) const KIND_PARKED_PING: u8 = 4;
pub(crate) const KIND_PARKED_ACK: u8 = 5;
pub(crate) const KIND_WAKE: u8 = 6;
const FLAG_REPLY_WANTED: u8 = 0x01;
/// A certificate is about 500 bytes, with its issuing CA's about 950; anything far larger is
/// not one of ours.
pub const MAX_CERT_LEN: usize = 4096;
/// A punch is as long as a WireGuard handshake initiation (148 bytes).
pub const PUNCH_LEN: usize = 148;
/// A hello that asks for an answer is at least this long (as a QUIC client's first packet is),
/// so that the answer, a hello of about 500 bytes (950 with an issuing CA's certificate), is
/// never larger than what asked for it.
pub const HELLO_REQUEST_MIN: usize = 1200;
/// The reflect token's length.
pub const TOKEN_LEN: usize = 16;

/// What a datagram is, judged from its first bytes only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    WireGuard,
    Control,
    Unknown,
}

pub fn classify(datagram: &[u8]) -> Kind {
    match datagram {
        [1..=4, 0, 0, 0, ..] => Kind::WireGuard,
        [CONTROL_MARKER, ..] => Kind::Control,
        _ => Kind::Unknown,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("control message shorter than its header")]
    Truncated,
    #[error("not an RMA Mesh control message")]
    BadMagic,
    #[error("control message version {0} is not supported")]
    Version(u8),
    #[error("control message kind {0} is not known")]
    Kind(u8),
    #[error("control message says {declared} bytes but carries {actual}")]
    Length { declared: usize, actual: usize },
    #[error("certificate of {0} bytes is too large")]
    TooLarge(usize),
    #[error("{what} body of {len} bytes has the wrong length")]
    BodyLength { what: &'static str, len: usize },
    #[error("hello body is not one or two DER certificates followed by zero padding")]
    BadPadding,
}

/// A parsed control message, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control<'a> {
    CertHello {
        cert_der: &'a [u8],
        reply_wanted: bool,
    },
    Punch {
        mesh_ip: Ipv4Addr,
        reply_wanted: bool,
    },
    Reflect {
        token: [u8; TOKEN_LEN],
    },
    ParkedPing(crate::parked::Ping),
    ParkedAck(crate::parked::Ack),
    Wake(crate::parked::Wake),
}

/// The length of the DER element (tag, length, contents) `body` starts with.
fn der_element_len(body: &[u8]) -> Option<usize> {
    let (&first, rest) = body.get(1..)?.split_first()?;
    let (header, contents) = match first {
        0..=0x7f => (2, usize::from(first)),
        0x81 => (3, usize::from(*rest.first()?)),
        0x82 => (
            4,
            usize::from(u16::from_be_bytes([*rest.first()?, *rest.get(1)?])),
        ),
        _ => return None,
    };
    let total = header + contents;
    (total <= body.len()).then_some(total)
}

/// The certificate in a hello body: its first DER element and, if a second follows (a DER
/// SEQUENCE, as the issuing CA's certificate is), that one too, with only zeros after them.
fn hello_cert(body: &[u8]) -> Result<&[u8], ControlError> {
    let mut len = der_element_len(body).ok_or(ControlError::BadPadding)?;
    if body.get(len) == Some(&0x30) {
        len += der_element_len(&body[len..]).ok_or(ControlError::BadPadding)?;
    }
    let (cert, padding) = body.split_at(len);
    if padding.iter().any(|&b| b != 0) {
        return Err(ControlError::BadPadding);
    }
    Ok(cert)
}

pub fn parse_control(datagram: &[u8]) -> Result<Control<'_>, ControlError> {
    let Some((header, body)) = datagram.split_first_chunk::<HEADER_LEN>() else {
        return Err(ControlError::Truncated);
    };
    if header[..3] != MAGIC {
        return Err(ControlError::BadMagic);
    }
    if header[3] != VERSION {
        return Err(ControlError::Version(header[3]));
    }
    let declared = usize::from(u16::from_be_bytes([header[6], header[7]]));
    if declared != body.len() {
        return Err(ControlError::Length {
            declared,
            actual: body.len(),
        });
    }
    let reply_wanted = header[5] & FLAG_REPLY_WANTED != 0;
    match header[4] {
        KIND_CERT_HELLO if body.len() > MAX_CERT_LEN + HELLO_REQUEST_MIN => {
            Err(ControlError::TooLarge(body.len()))
        }
        KIND_CERT_HELLO => Ok(Control::CertHello {
            cert_der: hello_cert(body)?,
            reply_wanted,
        }),

        KIND_PUNCH => match body.first_chunk::<4>() {
            Some(ip) if body.len() == PUNCH_LEN - HEADER_LEN => Ok(Control::Punch {
                mesh_ip: Ipv4Addr::from(*ip),
                reply_wanted,
            }),
            _ => Err(ControlError::BodyLength {
                what: "punch",
                len: body.len(),
            }),
        },
        KIND_REFLECT => match <[u8; TOKEN_LEN]>::try_from(body) {
            Ok(token) => Ok(Control::Reflect { token }),
            Err(_) => Err(ControlError::BodyLength {
                what: "reflect",
                len: body.len(),
            }),
        },
        KIND_PARKED_PING => crate::parked::parse_ping(body)
            .map(Control::ParkedPing)
            .ok_or(ControlError::BodyLength {
                what: "parked ping",
                len: body.len(),
            }),
        KIND_PARKED_ACK => crate::parked::parse_ack(body)
            .map(Control::ParkedAck)
            .ok_or(ControlError::BodyLength {
                what: "parked ack",
                len: body.len(),
            }),
        KIND_WAKE => {
            crate::parked::parse_wake(body)
                .map(Control::Wake)
                .ok_or(ControlError::BodyLength {
                    what: "wake",
                    len: body.len(),
                })
        }
        other => Err(ControlError::Kind(other)),
    }
}

/// A message of `kind` that asks for no answer.
pub(crate) fn encode_kind(kind: u8, body: &[u8], out: &mut Vec<u8>) {
    encode(kind, false, body, out);
}

fn encode(kind: u8, reply_wanted: bool, body: &[u8], out: &mut Vec<u8>) {
    let length = u16::try_from(body.len()).unwrap_or(u16::MAX);
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind);
    out.push(if reply_wanted { FLAG_REPLY_WANTED } else { 0 });
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(body);
}

/// Encodes a certificate hello into `out` (cleared first); one that asks for an answer is
/// padded to [`HELLO_REQUEST_MIN`] bytes.
pub fn encode_cert_hello(cert_der: &[u8], reply_wanted: bool, out: &mut Vec<u8>) {
    debug_assert!(cert_der.len() <= MAX_CERT_LEN);
    let mut body = cert_der.to_vec();
    if reply_wanted {
        body.resize(body.len().max(HELLO_REQUEST_MIN - HEADER_LEN), 0);
    }
    encode(KIND_CERT_HELLO, reply_wanted, &body, out);
}

/// Encodes a punch from `mesh_ip` into `out` (cleared first).
pub fn encode_punch(mesh_ip: Ipv4Addr, reply_wanted: bool, out: &mut Vec<u8>) {
    let mut body = [0u8; PUNCH_LEN - HEADER_LEN];
    body[..4].copy_from_slice(&mesh_ip.octets());
    encode(KIND_PUNCH, reply_wanted, &body, out);
}

/// Encodes a reflect message carrying `token` into `out` (cleared first).
pub fn encode_reflect(token: &[u8; TOKEN_LEN], out: &mut Vec<u8>) {
    encode(KIND_REFLECT, false, token, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER SEQUENCE of `n` content bytes, the shape of a certificate.
    fn der(n: usize) -> Vec<u8> {
        let mut d = vec![0x30];
        match n {
            0..=0x7f => d.push(n as u8),
            0x80..=0xff => d.extend([0x81, n as u8]),
            _ => d.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        d.extend(std::iter::repeat_n(7u8, n));
        d
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        for n in [5, 200, 600] {
            let cert = der(n);
            encode_cert_hello(&cert, true, &mut out);
            assert_eq!(classify(&out), Kind::Control);
            assert!(out.len() >= HELLO_REQUEST_MIN, "padded: {}", out.len());
            assert_eq!(
                parse_control(&out),
                Ok(Control::CertHello {
                    cert_der: &cert,
                    reply_wanted: true
                })
            );
            encode_cert_hello(&cert, false, &mut out);
            assert_eq!(
                out.len(),
                HEADER_LEN + cert.len(),
                "an answer is not padded"
            );
            assert_eq!(
                parse_control(&out),
                Ok(Control::CertHello {
                    cert_der: &cert,
                    reply_wanted: false
                })
            );
        }
        // Anything but zeros after the certificate, or a body that is no DER element.
        encode_cert_hello(&der(5), true, &mut out);
        let last = out.len() - 1;
        out[last] = 1;
        assert_eq!(parse_control(&out), Err(ControlError::BadPadding));
        let mut out = Vec::new();
        encode(KIND_CERT_HELLO, false, b"\x30\x09short", &mut out);
        assert_eq!(parse_control(&out), Err(ControlError::BadPadding));
    }

    /// A certificate and its issuing CA's travel together; a third element, or a second that
    /// is cut short, is refused.
    #[test]
    fn a_chain_of_two_round_trips_and_no_more() {
        let mut out = Vec::new();
        let chain = [der(560), der(400)].concat();
        encode_cert_hello(&chain, true, &mut out);
        assert_eq!(
            out.len(),
            HELLO_REQUEST_MIN,
            "a chain still fits the padded request"
        );
        assert_eq!(
            parse_control(&out),
            Ok(Control::CertHello {
                cert_der: &chain,
                reply_wanted: true
            })
        );
        let three = [der(100), der(100), der(100)].concat();
        encode_cert_hello(&three, false, &mut out);
        assert_eq!(parse_control(&out), Err(ControlError::BadPadding));
        let cut = [der(100), der(100)[..50].to_vec()].concat();
        encode_cert_hello(&cut, false, &mut out);
        assert_eq!(parse_control(&out), Err(ControlError::BadPadding));
    }

    #[test]
    fn punch_and_reflect_round_trip() {
        let mut out = Vec::new();
        encode_punch(Ipv4Addr::new(10, 42, 0, 7), true, &mut out);
        assert_eq!(out.len(), PUNCH_LEN);
        assert_eq!(
            parse_control(&out),
            Ok(Control::Punch {
                mesh_ip: Ipv4Addr::new(10, 42, 0, 7),
                reply_wanted: true
            })
        );
        assert_eq!(
            parse_control(&out[..PUNCH_LEN - 1]),
            Err(ControlError::Length {
                declared: PUNCH_LEN - HEADER_LEN,
                actual: PUNCH_LEN - HEADER_LEN - 1
            })
        );
        encode_reflect(&[7; TOKEN_LEN], &mut out);
        assert_eq!(
            parse_control(&out),
            Ok(Control::Reflect {
                token: [7; TOKEN_LEN]
            })
        );
        let mut short = Vec::new();
        encode(KIND_REFLECT, false, &[1, 2, 3], &mut short);
        assert_eq!(
            parse_control(&short),
            Err(ControlError::BodyLength {
                what: "reflect",
                len: 3
            })
        );
        encode(KIND_PUNCH, false, &[1, 2, 3], &mut short);
        assert_eq!(
            parse_control(&short),
            Err(ControlError::BodyLength {
                what: "punch",
                len: 3
            })
        );
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&[1, 0, 0, 0, 9]), Kind::WireGuard);
        assert_eq!(classify(&[4, 0, 0, 0]), Kind::WireGuard);
        assert_eq!(classify(&[5, 0, 0, 0]), Kind::Unknown);
        assert_eq!(classify(&[1, 0, 0]), Kind::Unknown);
        assert_eq!(classify(&[]), Kind::Unknown);
        assert_eq!(classify(&[0xF0]), Kind::Control);
    }

    #[test]
    fn malformed_control_messages() {
        let mut out = Vec::new();
        encode_cert_hello(b"abcdef", false, &mut out);
        assert_eq!(parse_control(&out[..5]), Err(ControlError::Truncated));
        assert_eq!(
            parse_control(&out[..10]),
            Err(ControlError::Length {
                declared: 6,
                actual: 2
            })
        );
        let mut wrong = out.clone();
        wrong[3] = 9;
        assert_eq!(parse_control(&wrong), Err(ControlError::Version(9)));
        wrong = out.clone();
        wrong[4] = 9;
        assert_eq!(parse_control(&wrong), Err(ControlError::Kind(9)));
        wrong = out.clone();
        wrong[1] = b'X';
        assert_eq!(parse_control(&wrong), Err(ControlError::BadMagic));
        let mut big = vec![CONTROL_MARKER, b'R', b'M', VERSION, KIND_CERT_HELLO, 0];
        let too_large = MAX_CERT_LEN + HELLO_REQUEST_MIN + 1;
        big.extend_from_slice(&(too_large as u16).to_be_bytes());
        big.resize(HEADER_LEN + too_large, 0);
        assert_eq!(parse_control(&big), Err(ControlError::TooLarge(too_large)));
    }
}
