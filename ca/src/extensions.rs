//! The private X.509 extensions that carry RMA Mesh facts: two in a node certificate, one in
//! an issuing CA's.
//!
//! All are non-critical, so standard tools (openssl, rustls) accept the certificate and show the
//! extensions as unknown. Their values are DER:
//! - WireGuard key: `OCTET STRING (SIZE (32))`, the node's X25519 public key;
//! - groups: `SEQUENCE OF UTF8String`, sorted and without duplicates;
//! - permitted groups (an issuing CA's): the same encoding, the only groups the CA may put in
//!   the certificates it signs. Every RMA Mesh verifier enforces it ([`crate::verify`]); an
//!   issuing CA without it may give any group.
//!
//! The OIDs sit under an arc that RMA Mesh uses privately; it is not registered with IANA. They
//! are defined only here, so a registered arc can replace them in one place.

use der::asn1::OctetStringRef;
use der::{Decode, Encode};
use x509_parser::der_parser::oid::Oid;

use crate::keys::WireGuardKey;
use crate::names::Group;

/// Private arc for RMA Mesh certificate extensions.
const ARC: [u64; 8] = [1, 3, 6, 1, 4, 1, 99999, 4242];

pub const OID_WIREGUARD_KEY: [u64; 9] = extend(ARC, 1);
pub const OID_GROUPS: [u64; 9] = extend(ARC, 2);
pub const OID_PERMITTED_GROUPS: [u64; 9] = extend(ARC, 3);

const fn extend(arc: [u64; 8], last: u64) -> [u64; 9] {
    let mut out = [0; 9];
    let mut i = 0;
    while i < 8 {
        out[i] = arc[i];
        i += 1;
    }
    out[8] = last;
    out
}

/// Whether a parsed OID is exactly `arcs`.
pub(crate) fn oid_is(oid: &Oid<'_>, arcs: &[u64]) -> bool {
    oid.iter().is_some_and(|it| it.eq(arcs.iter().copied()))
}

pub fn encode_wireguard_key(key: &WireGuardKey) -> Vec<u8> {
    OctetStringRef::new(&key.0)
        .and_then(|o| o.to_der())
        .expect("32 bytes always encode as an OCTET STRING")
}

pub fn decode_wireguard_key(content: &[u8]) -> Result<WireGuardKey, String> {
    let octets = OctetStringRef::from_der(content).map_err(|e| e.to_string())?;
    let key: [u8; 32] = octets
        .as_bytes()
        .try_into()
        .map_err(|_| format!("{} bytes, not 32", octets.as_bytes().len()))?;
    Ok(WireGuardKey(key))
}

pub fn encode_groups(groups: &[Group]) -> Vec<u8> {
    let names: Vec<String> = groups.iter().map(|g| g.as_str().to_owned()).collect();
    names
        .to_der()
        .expect("a sequence of UTF-8 strings always encodes")
}

pub fn decode_groups(content: &[u8]) -> Result<Vec<Group>, String> {
    let names = Vec::<String>::from_der(content).map_err(|e| e.to_string())?;
    let groups = names
        .iter()
        .map(|n| n.parse::<Group>().map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let key = WireGuardKey([3; 32]);
        assert_eq!(
            decode_wireguard_key(&encode_wireguard_key(&key)).unwrap(),
            key
        );
        let groups = Group::parse_list("gpu,workers").unwrap();
        assert_eq!(decode_groups(&encode_groups(&groups)).unwrap(), groups);
        assert!(decode_groups(&encode_groups(&[])).unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_contents() {
        assert!(decode_wireguard_key(&[0x04, 0x01, 0x00]).is_err());
        assert!(decode_wireguard_key(&[0x04, 0x20]).is_err());
        let bad_group = vec!["has space".to_owned()].to_der().unwrap();
        assert!(decode_groups(&bad_group).is_err());
        assert!(decode_groups(&[0x30, 0x05, 0x0c]).is_err());
    }

    #[test]
    fn oid_comparison() {
        let oid = Oid::from(&OID_GROUPS[..]).unwrap();
        assert!(oid_is(&oid, &OID_GROUPS));
        assert!(!oid_is(&oid, &OID_WIREGUARD_KEY));
    }
}
