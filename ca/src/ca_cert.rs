//! The CA certificate: a self-signed Ed25519 X.509 root that names the mesh network.

use ed25519_dalek::VerifyingKey;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::encoding::{CERTIFICATE_TAG, EncodingError, pem_or_der};
use crate::ids::{Fingerprint, Serial};
use crate::x509;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaCertError {
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("not a CA certificate (basic constraints do not say CA)")]
    NotCa,
    #[error("not self-signed: issuer differs from subject or the signature does not verify")]
    NotSelfSigned,
    #[error("has no IPv4 network name constraint, so it cannot be an RMA Mesh CA")]
    NoNetwork,
}

/// A parsed CA certificate. Constructing one proves it is a well-formed, self-signed Ed25519 CA
/// with exactly one permitted IPv4 network; it says nothing about validity at any time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    der: Vec<u8>,
    subject_dn: Vec<u8>,
    name: String,
    network: Ipv4Net,
    public_key: VerifyingKey,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    fingerprint: Fingerprint,
}

impl CaCert {
    /// Reads a CA certificate from PEM or DER.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CaCertError> {
        let der = pem_or_der(bytes, CERTIFICATE_TAG, "a CA certificate")?;
        Self::from_der(&der)
    }

    pub fn from_der(der: &[u8]) -> Result<Self, CaCertError> {
        let cert = x509::parse_certificate(der).map_err(CaCertError::Malformed)?;
        x509::check_critical_extensions(&cert).map_err(CaCertError::Malformed)?;
        let tbs = &cert.tbs_certificate;
        let is_ca = tbs
            .basic_constraints()
            .map_err(|e| CaCertError::Malformed(e.to_string()))?
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CaCertError::NotCa);
        }
        let public_key = x509::ed25519_subject_key(&cert).map_err(CaCertError::Malformed)?;
        let self_signed = tbs.issuer.as_raw() == tbs.subject.as_raw()
            && x509::ed25519_signature_valid(
                &public_key,
                &cert.signature_algorithm.algorithm,
                tbs.as_ref(),
                &cert.signature_value,
            );
        if !self_signed {
            return Err(CaCertError::NotSelfSigned);
        }
        Ok(Self {
            der: der.to_vec(),
            subject_dn: tbs.subject.as_raw().to_vec(),
            name: x509::common_name(&tbs.subject).map_err(CaCertError::Malformed)?,
            network: permitted_network(&cert)?,
            public_key,
            serial: Serial::from_be_bytes(tbs.raw_serial()),
            not_before: x509::time(tbs.validity.not_before),
            not_after: x509::time(tbs.validity.not_after),
            fingerprint: Fingerprint::of(der),
        })
    }

    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(CERTIFICATE_TAG, self.der.clone()))
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn network(&self) -> Ipv4Net {
        self.network
    }
    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }
    pub fn serial(&self) -> &Serial {
        &self.serial
    }
    pub fn not_before(&self) -> OffsetDateTime {
        self.not_before
    }
    pub fn not_after(&self) -> OffsetDateTime {
        self.not_after
    }
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
    /// The raw DER of the subject name, which every certificate this CA signs carries as issuer.
    pub(crate) fn subject_dn(&self) -> &[u8] {
        &self.subject_dn
    }
}

/// The single IPv4 subtree permitted by the CA's name constraints.
fn permitted_network(cert: &X509Certificate<'_>) -> Result<Ipv4Net, CaCertError> {
    let constraints = cert
        .tbs_certificate
        .name_constraints()
        .map_err(|e| CaCertError::Malformed(e.to_string()))?
        .ok_or(CaCertError::NoNetwork)?;
    let mut networks = constraints
        .value
        .permitted_subtrees
        .iter()
        .flatten()
        .filter_map(|subtree| match subtree.base {
            GeneralName::IPAddress(bytes) => Some(bytes),
            _ => None,
        });
    let (Some(bytes), None) = (networks.next(), networks.next()) else {
        return Err(CaCertError::NoNetwork);
    };
    let (addr, mask) = match <[u8; 8]>::try_from(bytes) {
        Ok(b) => (
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ),
        Err(_) => return Err(CaCertError::NoNetwork),
    };
    let prefix = mask.leading_ones();
    if mask.checked_shl(prefix).unwrap_or(0) != 0 || addr & !mask != 0 {
        return Err(CaCertError::Malformed(format!(
            "name constraint {}/{} is not a network address and contiguous mask",
            Ipv4Addr::from(addr),
            Ipv4Addr::from(mask)
        )));
    }
    Ipv4Net::new(Ipv4Addr::from(addr), prefix as u8)
        .map_err(|e| CaCertError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn reads_the_network() {
        let ca = fixtures::ca();
        assert_eq!(ca.name(), "rma-test");
        assert_eq!(ca.network(), "10.42.0.0/16".parse::<Ipv4Net>().unwrap());
        assert_eq!(CaCert::from_der(ca.der()).unwrap(), ca);
    }

    #[test]
    fn a_node_certificate_is_not_a_ca() {
        let err = CaCert::from_bytes(&fixtures::load("alpha.crt")).unwrap_err();
        assert_eq!(err, CaCertError::NotCa);
        let err = CaCert::from_bytes(&fixtures::load("alpha.key")).unwrap_err();
        assert!(
            err.to_string()
                .contains("holds 2 PEM blocks, expected just a CA certificate"),
            "{err}"
        );
    }

    #[test]
    fn a_tampered_ca_is_not_self_signed() {
        let mut der = fixtures::ca().der().to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        assert_eq!(
            CaCert::from_der(&der).unwrap_err(),
            CaCertError::NotSelfSigned
        );
    }
}
