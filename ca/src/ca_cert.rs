//! CA certificates: the self-signed Ed25519 X.509 root that names the mesh network, and the
//! issuing CAs it signs (path length 0, constrained to a part of the network) so that an online
//! service can enroll nodes while the root key stays offline.

use ed25519_dalek::VerifyingKey;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer as _;

use crate::encoding::{CERTIFICATE_TAG, EncodingError, pem_or_der};
use crate::ids::{Fingerprint, Serial};
use crate::names::Group;
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
    #[error("is self-signed: a root, not an issuing CA")]
    SelfSigned,
}

/// A parsed CA certificate: a well-formed Ed25519 CA with exactly one permitted IPv4 network.
/// [`CaCert::from_der`] also proves it is self-signed (a root); [`CaCert::issuing_from_der`]
/// reads one signed by another CA, whose signature [`CaCert::issued_by`] checks. Neither says
/// anything about validity at any time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaCert {
    der: Vec<u8>,
    subject_dn: Vec<u8>,
    issuer_dn: Vec<u8>,
    /// What the issuer signed and its signature, to check against the issuer's key later.
    signed: Vec<u8>,
    signature: Vec<u8>,
    signature_is_ed25519: bool,
    self_signed: bool,
    /// How many CAs may follow this one in a chain: `None` is unlimited.
    path_len: Option<u32>,
    name: String,
    network: Ipv4Net,
    public_key: VerifyingKey,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    fingerprint: Fingerprint,
    /// The CA across renewals of its certificate (see [`CaCert::identity`]).
    identity: Fingerprint,
    /// The only groups it may give, if its certificate says (see [`crate::extensions`]).
    permitted_groups: Option<Vec<Group>>,
}

impl CaCert {
    /// Reads a root CA certificate from PEM or DER.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CaCertError> {
        let der = pem_or_der(bytes, CERTIFICATE_TAG, "a CA certificate")?;
        Self::from_der(&der)
    }

    /// Reads a root CA certificate: it must be self-signed.
    pub fn from_der(der: &[u8]) -> Result<Self, CaCertError> {
        let ca = Self::parse(der)?;
        if !ca.is_self_signed() {
            return Err(CaCertError::NotSelfSigned);
        }
        // Groups bound an issuing CA; a root's would not bound the issuing CAs it signs.
        if ca.permitted_groups.is_some() {
            return Err(CaCertError::Malformed(
                "a root CA carries no permitted groups; only issuing CAs do".into(),
            ));
        }
        Ok(ca)
    }

    /// Reads an issuing CA certificate from PEM or DER (see [`CaCert::issuing_from_der`]).
    pub fn issuing_from_bytes(bytes: &[u8]) -> Result<Self, CaCertError> {
        let der = pem_or_der(bytes, CERTIFICATE_TAG, "an issuing CA certificate")?;
        Self::issuing_from_der(&der)
    }

    /// Reads a CA certificate signed by another CA. Its signature is not checked here: it says
    /// nothing until [`CaCert::issued_by`] checks it against a root.
    pub fn issuing_from_der(der: &[u8]) -> Result<Self, CaCertError> {
        let ca = Self::parse(der)?;
        if ca.is_self_signed() {
            return Err(CaCertError::SelfSigned);
        }
        Ok(ca)
    }

    fn parse(der: &[u8]) -> Result<Self, CaCertError> {
        let cert = x509::parse_certificate(der).map_err(CaCertError::Malformed)?;
        x509::check_critical_extensions(&cert).map_err(CaCertError::Malformed)?;
        let tbs = &cert.tbs_certificate;
        let constraints = tbs
            .basic_constraints()
            .map_err(|e| CaCertError::Malformed(e.to_string()))?
            .filter(|bc| bc.value.ca)
            .ok_or(CaCertError::NotCa)?;
        let public_key = x509::ed25519_subject_key(&cert).map_err(CaCertError::Malformed)?;
        // The name comparison comes first: an issuing CA costs no signature check here.
        let self_signed = tbs.issuer.as_raw() == tbs.subject.as_raw()
            && x509::ed25519_signature_valid(
                &public_key,
                &cert.signature_algorithm.algorithm,
                tbs.as_ref(),
                &cert.signature_value,
            );
        Ok(Self {
            self_signed,
            der: der.to_vec(),
            subject_dn: tbs.subject.as_raw().to_vec(),
            issuer_dn: tbs.issuer.as_raw().to_vec(),
            signed: tbs.as_ref().to_vec(),
            signature: cert.signature_value.data.to_vec(),
            signature_is_ed25519: cert.signature_value.unused_bits == 0
                && crate::extensions::oid_is(
                    &cert.signature_algorithm.algorithm,
                    &x509::OID_ED25519,
                ),
            path_len: constraints.value.path_len_constraint,
            name: x509::common_name(&tbs.subject).map_err(CaCertError::Malformed)?,
            network: permitted_network(&cert)?,
            public_key,
            serial: Serial::from_be_bytes(tbs.raw_serial()),
            not_before: x509::time(tbs.validity.not_before),
            not_after: x509::time(tbs.validity.not_after),
            fingerprint: Fingerprint::of(der),
            identity: Fingerprint::of(&[tbs.subject.as_raw(), public_key.as_bytes()].concat()),
            permitted_groups: permitted_groups(&cert)?,
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
    /// How many CAs may follow this one in a chain; `None` is unlimited. A root made by an
    /// `rma-ca` older than issuing CAs says 0, and can only sign nodes.
    pub fn path_len(&self) -> Option<u32> {
        self.path_len
    }
    /// The only groups this CA may give, or `None` for any.
    pub fn permitted_groups(&self) -> Option<&[Group]> {
        self.permitted_groups.as_deref()
    }
    /// Whether a certificate this CA signed may carry `group`.
    pub fn permits_group(&self, group: &Group) -> bool {
        self.permitted_groups
            .as_ref()
            .is_none_or(|p| p.contains(group))
    }
    /// Whether this CA may sign an issuing CA.
    pub fn may_sign_cas(&self) -> bool {
        self.path_len != Some(0)
    }
    /// Whether the certificate is signed with its own key under its own name: a root.
    pub fn is_self_signed(&self) -> bool {
        self.self_signed
    }
    /// Whether `issuer` signed this certificate: its name is this one's issuer and its key made
    /// the signature.
    pub fn issued_by(&self, issuer: &CaCert) -> bool {
        self.issuer_dn == issuer.subject_dn && self.signature_valid_under(issuer.public_key())
    }
    /// The issuer's common name, for messages.
    pub fn issuer_name(&self) -> String {
        x509_parser::x509::X509Name::from_der(&self.issuer_dn)
            .ok()
            .and_then(|(_, name)| x509::common_name(&name).ok())
            .unwrap_or_else(|| "?".into())
    }
    fn signature_valid_under(&self, key: &VerifyingKey) -> bool {
        self.signature_is_ed25519 && x509::ed25519_verify(key, &self.signed, &self.signature)
    }
    /// The raw DER of the subject name, which every certificate this CA signs carries as issuer.
    /// What names the CA whatever certificate it holds: SHA-256 of its subject name and key.
    /// A certificate renewed for the same name and key is the same CA, so a revocation list it
    /// signs applies to what it issued under either certificate.
    pub fn identity(&self) -> Fingerprint {
        self.identity
    }

    pub(crate) fn subject_dn(&self) -> &[u8] {
        &self.subject_dn
    }
}

/// The permitted-groups extension, if there is one.
fn permitted_groups(cert: &X509Certificate<'_>) -> Result<Option<Vec<Group>>, CaCertError> {
    let mut found = None;
    for ext in cert.tbs_certificate.extensions() {
        if crate::extensions::oid_is(&ext.oid, &crate::extensions::OID_PERMITTED_GROUPS) {
            let groups = crate::extensions::decode_groups(ext.value)
                .map_err(|e| CaCertError::Malformed(format!("permitted groups: {e}")))?;
            if found.replace(groups).is_some() {
                return Err(CaCertError::Malformed(
                    "two permitted-groups extensions".into(),
                ));
            }
        }
    }
    Ok(found)
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
