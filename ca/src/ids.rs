//! Identifiers of issued objects: certificate fingerprints and serial numbers.

use std::fmt;
use std::str::FromStr;

use rand_core::{OsRng, RngCore};

/// SHA-256 of a certificate's DER encoding; shown as lowercase hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    pub fn of(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        Self(digest.as_ref().try_into().expect("SHA-256 is 32 bytes"))
    }

    /// The fingerprint of the first certificate in `chain` (a node's, before its issuing
    /// CA's), found from its DER header alone without parsing it; of all of `chain` when the
    /// header does not fit in it.
    pub fn of_first(chain: &[u8]) -> Self {
        Self::of(first_element(chain).unwrap_or(chain))
    }
}

/// The first DER element of `bytes`, by its header's length (definite lengths of up to four
/// bytes, which any certificate has).
fn first_element(bytes: &[u8]) -> Option<&[u8]> {
    let first = *bytes.get(1)?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let count = usize::from(first & 0x7f);
        if !(1..=4).contains(&count) {
            return None;
        }
        let digits = bytes.get(2..2 + count)?;
        let len = digits
            .iter()
            .fold(0usize, |n, d| (n << 8) | usize::from(*d));
        (2 + count, len)
    };
    bytes.get(..header.checked_add(len)?)
}

fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    bytes.iter().try_for_each(|b| write!(f, "{b:02x}"))
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a 64-digit hex SHA-256 fingerprint")]
pub struct BadFingerprint(pub String);

/// Decodes an even-length hex string.
fn parse_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

impl FromStr for Fingerprint {
    type Err = BadFingerprint;
    fn from_str(text: &str) -> Result<Self, BadFingerprint> {
        parse_hex(text)
            .and_then(|bytes| bytes.try_into().ok())
            .map(Self)
            .ok_or_else(|| BadFingerprint(text.to_owned()))
    }
}

/// A certificate serial number: a positive integer, kept as minimal big-endian bytes so that the
/// same number compares equal however it was encoded.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

impl Serial {
    /// 127 random bits: unique without coordination, and positive in DER without padding.
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        OsRng.fill_bytes(&mut bytes);
        bytes[0] = (bytes[0] & 0x7f) | 0x01;
        Self(bytes.to_vec())
    }

    pub fn from_be_bytes(bytes: &[u8]) -> Self {
        let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        Self(bytes[first..].to_vec())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a hex serial number")]
pub struct BadSerial(pub String);

impl FromStr for Serial {
    type Err = BadSerial;
    fn from_str(text: &str) -> Result<Self, BadSerial> {
        parse_hex(text)
            .map(|bytes| Self::from_be_bytes(&bytes))
            .ok_or_else(|| BadSerial(text.to_owned()))
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("00");
        }
        write_hex(f, &self.0)
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_round_trips_through_hex() {
        let fp = Fingerprint::of(b"abc");
        assert_eq!(
            fp.to_string(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
        assert!("ba78".parse::<Fingerprint>().is_err());
        assert!("zz".repeat(32).parse::<Fingerprint>().is_err());
    }

    #[test]
    fn the_first_certificate_of_a_chain_is_found_by_its_header() {
        let gamma = crate::fixtures::node("gamma-chain.crt");
        let chain = gamma.chain_der();
        assert!(chain.len() > gamma.der().len());
        assert_eq!(Fingerprint::of_first(&chain), gamma.fingerprint());
        assert_eq!(Fingerprint::of_first(gamma.der()), gamma.fingerprint());
        // A header claiming more than there is, or no header, is the fingerprint of it all.
        for bad in [
            &b"\x30\x82\xff\xff"[..],
            b"\x30",
            b"",
            b"\x30\x85\x01\x01\x01\x01\x01",
        ] {
            assert_eq!(Fingerprint::of_first(bad), Fingerprint::of(bad));
        }
    }

    #[test]
    fn serials_ignore_leading_zeros() {
        assert_eq!(
            Serial::from_be_bytes(&[0, 0, 5]),
            Serial::from_be_bytes(&[5])
        );
        assert_eq!(Serial::from_be_bytes(&[0, 0x12, 0xab]).to_string(), "12ab");
        assert_eq!("0012ab".parse::<Serial>().unwrap().to_string(), "12ab");
        assert!("12a".parse::<Serial>().is_err());
        let random = Serial::random();
        assert_eq!(random.as_bytes().len(), 16);
        assert!(random.as_bytes()[0] < 0x80 && random.as_bytes()[0] != 0);
    }
}
