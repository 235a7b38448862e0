//! What travels on meshd's UDP socket, and how to tell the kinds apart.
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
//! `ver` is 1. `length` is big-endian and must equal the bytes that follow. Kinds:
//!
//! - `1`, **certificate hello**: the body is the sender's node certificate (DER). Flag bit 0
//!   asks the receiver to answer with its own hello. Peers exchange hellos before their first
//!   WireGuard handshake: that is how each learns the other's WireGuard key and mesh IP, and it
//!   is trusted only once the certificate verifies against the CA. The hello itself proves
//!   nothing about the sender (certificates are public); the WireGuard handshake that follows
//!   proves possession of the key the certificate names.

/// First byte of every RMA Mesh control message.
pub const CONTROL_MARKER: u8 = 0xF0;
const MAGIC: [u8; 3] = [CONTROL_MARKER, b'R', b'M'];
const VERSION: u8 = 1;
const HEADER_LEN: usize = 8;
const KIND_CERT_HELLO: u8 = 1;
const FLAG_REPLY_WANTED: u8 = 0x01;
/// A certificate is about 500 bytes; anything far larger is not one of ours.
pub const MAX_CERT_LEN: usize = 4096;

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
}

/// A parsed control message, borrowing from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control<'a> {
    CertHello {
        cert_der: &'a [u8],
        reply_wanted: bool,
    },
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
    match header[4] {
        KIND_CERT_HELLO if body.len() > MAX_CERT_LEN => Err(ControlError::TooLarge(body.len())),
        KIND_CERT_HELLO => Ok(Control::CertHello {
            cert_der: body,
            reply_wanted: header[5] & FLAG_REPLY_WANTED != 0,
        }),
        other => Err(ControlError::Kind(other)),
    }
}

/// Encodes a certificate hello into `out` (cleared first).
pub fn encode_cert_hello(cert_der: &[u8], reply_wanted: bool, out: &mut Vec<u8>) {
    debug_assert!(cert_der.len() <= MAX_CERT_LEN);
    let length = u16::try_from(cert_der.len()).unwrap_or(u16::MAX);
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(KIND_CERT_HELLO);
    out.push(if reply_wanted { FLAG_REPLY_WANTED } else { 0 });
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(cert_der);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        encode_cert_hello(b"der bytes", true, &mut out);
        assert_eq!(classify(&out), Kind::Control);
        assert_eq!(
            parse_control(&out),
            Ok(Control::CertHello {
                cert_der: b"der bytes",
                reply_wanted: true
            })
        );
        encode_cert_hello(b"x", false, &mut out);
        assert_eq!(
            parse_control(&out),
            Ok(Control::CertHello {
                cert_der: b"x",
                reply_wanted: false
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
        encode_cert_hello(b"abcdef", true, &mut out);
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
        wrong[4] = 7;
        assert_eq!(parse_control(&wrong), Err(ControlError::Kind(7)));
        wrong = out.clone();
        wrong[1] = b'X';
        assert_eq!(parse_control(&wrong), Err(ControlError::BadMagic));
        let mut big = vec![CONTROL_MARKER, b'R', b'M', VERSION, KIND_CERT_HELLO, 0];
        big.extend_from_slice(&((MAX_CERT_LEN + 1) as u16).to_be_bytes());
        big.resize(HEADER_LEN + MAX_CERT_LEN + 1, 0);
        assert_eq!(
            parse_control(&big),
            Err(ControlError::TooLarge(MAX_CERT_LEN + 1))
        );
    }
}
