//! A node certificate: binds a node's name, mesh IP, groups, Ed25519 identity and WireGuard key.
//!
//! A node signed by an issuing CA presents that CA's certificate with its own, the way TLS
//! presents a chain: as PEM, two `CERTIFICATE` blocks; as DER, the two certificates back to
//! back. Everything that carries a certificate on the wire carries [`NodeCert::chain_der`].

use std::net::{IpAddr, Ipv4Addr};

use ed25519_dalek::VerifyingKey;
use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::ca_cert::{CaCert, CaCertError};
use crate::encoding::{CERTIFICATE_TAG, EncodingError, pem_chain_or_der};
use crate::extensions::{self, OID_GROUPS, OID_WIREGUARD_KEY, oid_is};
use crate::ids::{Fingerprint, Serial};
use crate::keys::WireGuardKey;
use crate::names::{Group, NodeName};
use crate::x509;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeCertError {
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    #[error("malformed certificate: {0}")]
    Malformed(String),
    #[error("is a CA certificate, not a node certificate")]
    IsCa,
    #[error("the issuing CA certificate after it: {0}")]
    Issuer(CaCertError),
    #[error("malformed {extension} extension: {detail}")]
    BadExtension {
        extension: &'static str,
        detail: String,
    },
}

/// A parsed node certificate. Parsing checks its form only; trust comes from [`crate::verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCert {
    der: Vec<u8>,
    signed: Vec<u8>,
    signature: Vec<u8>,
    signature_is_ed25519: bool,
    issuer_dn: Vec<u8>,
    issuer_name: String,
    name: NodeName,
    mesh_ip: Ipv4Addr,
    groups: Vec<Group>,
    wireguard_key: Option<WireGuardKey>,
    identity_key: VerifyingKey,
    serial: Serial,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    fingerprint: Fingerprint,
    /// The issuing CA that signed it, when the root did not.
    issuer: Option<Box<CaCert>>,
}

impl NodeCert {
    /// Reads a node certificate, and the issuing CA's after it if there is one, from PEM or DER.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, NodeCertError> {
        let der = pem_chain_or_der(bytes, CERTIFICATE_TAG, "a node certificate", 2)?;
        Self::from_der(&der)
    }

    /// Reads a DER node certificate, optionally followed by the DER of its issuing CA.
    pub fn from_der(der: &[u8]) -> Result<Self, NodeCertError> {
        let (leaf, rest) = x509::split_first(der).map_err(NodeCertError::Malformed)?;
        let mut cert = Self::leaf_from_der(leaf)?;
        if !rest.is_empty() {
            let issuer = CaCert::issuing_from_der(rest).map_err(NodeCertError::Issuer)?;
            cert.issuer = Some(Box::new(issuer));
        }
        Ok(cert)
    }

    fn leaf_from_der(der: &[u8]) -> Result<Self, NodeCertError> {
        let malformed = NodeCertError::Malformed;
        let cert = x509::parse_certificate(der).map_err(malformed)?;
        x509::check_critical_extensions(&cert).map_err(malformed)?;
        let tbs = &cert.tbs_certificate;
        if tbs.is_ca() {
            return Err(NodeCertError::IsCa);
        }
        let name = x509::common_name(&tbs.subject).map_err(malformed)?;
        let name: NodeName = name
            .parse()
            .map_err(|e: crate::NameError| malformed(e.to_string()))?;
        let mesh_ip = subject_alt_names(&cert, &name)?;
        let (wireguard_key, groups) = private_extensions(&cert)?;
        Ok(Self {
            der: der.to_vec(),
            signed: tbs.as_ref().to_vec(),
            signature: cert.signature_value.data.to_vec(),
            signature_is_ed25519: cert.signature_value.unused_bits == 0
                && oid_is(&cert.signature_algorithm.algorithm, &x509::OID_ED25519),
            issuer_dn: tbs.issuer.as_raw().to_vec(),
            issuer_name: x509::common_name(&tbs.issuer).unwrap_or_else(|_| tbs.issuer.to_string()),
            name,
            mesh_ip,
            groups,
            wireguard_key,
            identity_key: x509::ed25519_subject_key(&cert).map_err(malformed)?,
            serial: Serial::from_be_bytes(tbs.raw_serial()),
            not_before: x509::time(tbs.validity.not_before),
            not_after: x509::time(tbs.validity.not_after),
            fingerprint: Fingerprint::of(der),
            issuer: None,
        })
    }

    /// The certificate and its issuing CA's, if any, as PEM blocks.
    pub fn to_pem(&self) -> String {
        let mut blocks = vec![pem::Pem::new(CERTIFICATE_TAG, self.der.clone())];
        if let Some(issuer) = &self.issuer {
            blocks.push(pem::Pem::new(CERTIFICATE_TAG, issuer.der().to_vec()));
        }
        pem::encode_many(&blocks)
    }

    /// The node certificate alone (its fingerprint is of these bytes).
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// The certificate as a node presents it: its DER, then its issuing CA's if any.
    pub fn chain_der(&self) -> Vec<u8> {
        let mut out = self.der.clone();
        if let Some(issuer) = &self.issuer {
            out.extend_from_slice(issuer.der());
        }
        out
    }
    /// The issuing CA presented with the certificate; `None` when the root signed it.
    pub fn issuing_ca(&self) -> Option<&CaCert> {
        self.issuer.as_deref()
    }
    /// The same certificate presented with `issuer`, which must be the issuing CA that signed
    /// it (checked: a chain that does not hold together is refused).
    pub fn with_issuing_ca(mut self, issuer: CaCert) -> Result<Self, NodeCertError> {
        if self.issuer_dn != issuer.subject_dn() || !self.signed_by(issuer.public_key()) {
            return Err(NodeCertError::Malformed(format!(
                "not signed by the issuing CA {:?}",
                issuer.name()
            )));
        }
        self.issuer = Some(Box::new(issuer));
        Ok(self)
    }
    pub fn name(&self) -> &NodeName {
        &self.name
    }
    pub fn mesh_ip(&self) -> Ipv4Addr {
        self.mesh_ip
    }
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g.as_str() == group)
    }
    /// The WireGuard key, if the certificate carries one; [`crate::verify`] refuses it if not.
    pub fn wireguard_key(&self) -> Option<&WireGuardKey> {
        self.wireguard_key.as_ref()
    }
    /// Whether `other` is this node renewed: the same name, mesh IP, identity key and
    /// WireGuard key (its validity and serial may differ).
    pub fn same_identity(&self, other: &NodeCert) -> bool {
        self.name() == other.name()
            && self.mesh_ip() == other.mesh_ip()
            && self.identity_key() == other.identity_key()
            && self.wireguard_key() == other.wireguard_key()
    }

    pub fn identity_key(&self) -> &VerifyingKey {
        &self.identity_key
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
    /// The issuer's common name, for messages.
    pub fn issuer_name(&self) -> &str {
        &self.issuer_name
    }

    pub(crate) fn issuer_dn(&self) -> &[u8] {
        &self.issuer_dn
    }
    /// Whether the certificate's Ed25519 signature verifies under `key`.
    pub(crate) fn signed_by(&self, key: &VerifyingKey) -> bool {
        self.signature_is_ed25519 && x509::ed25519_verify(key, &self.signed, &self.signature)
    }
}

/// Requires a DNS SAN equal to the common name and exactly one IPv4 SAN, the mesh IP.
fn subject_alt_names(
    cert: &X509Certificate<'_>,
    name: &NodeName,
) -> Result<Ipv4Addr, NodeCertError> {
    let malformed = NodeCertError::Malformed;
    let san = cert
        .tbs_certificate
        .subject_alternative_name()
        .map_err(|e| malformed(e.to_string()))?
        .ok_or_else(|| malformed("no subject alternative names".into()))?;
    let mut ips = Vec::new();
    let mut dns_matches = false;
    for general_name in &san.value.general_names {
        match general_name {
            GeneralName::IPAddress(bytes) => ips.push(*bytes),
            GeneralName::DNSName(dns) => dns_matches |= *dns == name.as_str(),
            _ => {}
        }
    }
    if !dns_matches {
        return Err(malformed(format!(
            "no DNS name {name} matching the common name"
        )));
    }
    match ips.as_slice() {
        [bytes] => match <[u8; 4]>::try_from(*bytes) {
            Ok(octets) => Ok(Ipv4Addr::from(octets)),
            Err(_) => match <[u8; 16]>::try_from(*bytes) {
                Ok(v6) => Err(malformed(format!(
                    "mesh IP {} is not IPv4",
                    IpAddr::from(v6)
                ))),
                Err(_) => Err(malformed(format!("IP SAN of {} bytes", bytes.len()))),
            },
        },
        [] => Err(malformed("no IP address (the mesh IP)".into())),
        _ => Err(malformed(format!(
            "{} IP addresses; a node has one mesh IP",
            ips.len()
        ))),
    }
}

fn private_extensions(
    cert: &X509Certificate<'_>,
) -> Result<(Option<WireGuardKey>, Vec<Group>), NodeCertError> {
    let mut wireguard = None;
    let mut groups = None;
    for ext in cert.tbs_certificate.extensions() {
        if oid_is(&ext.oid, &OID_WIREGUARD_KEY) {
            let key = extensions::decode_wireguard_key(ext.value).map_err(|detail| {
                NodeCertError::BadExtension {
                    extension: "WireGuard key",
                    detail,
                }
            })?;
            if wireguard.replace(key).is_some() {
                return Err(NodeCertError::Malformed(
                    "two WireGuard key extensions".into(),
                ));
            }
        } else if oid_is(&ext.oid, &OID_GROUPS) {
            let list = extensions::decode_groups(ext.value).map_err(|detail| {
                NodeCertError::BadExtension {
                    extension: "groups",
                    detail,
                }
            })?;
            if groups.replace(list).is_some() {
                return Err(NodeCertError::Malformed("two groups extensions".into()));
            }
        }
    }
    Ok((wireguard, groups.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn reads_every_field() {
        let alpha = fixtures::node("alpha.crt");
        assert_eq!(alpha.name().as_str(), "alpha");
        assert_eq!(alpha.mesh_ip(), Ipv4Addr::new(10, 42, 0, 1));
        let groups: Vec<_> = alpha.groups().iter().map(Group::as_str).collect();
        assert_eq!(groups, ["gpu", "workers"]);
        assert!(alpha.in_group("gpu") && !alpha.in_group("admin"));
        assert_eq!(alpha.issuer_name(), "rma-test");
        let keys = crate::NodePublicKeys::from_pem(&fixtures::load("alpha.pub")).unwrap();
        assert_eq!(alpha.wireguard_key(), Some(&keys.wireguard));
        assert_eq!(alpha.identity_key(), &keys.identity);
        assert_eq!(alpha.fingerprint(), Fingerprint::of(alpha.der()));
        assert_eq!(NodeCert::from_der(alpha.der()).unwrap(), alpha);
    }

    #[test]
    fn bad_input_is_named() {
        let err = NodeCert::from_bytes(&fixtures::load("truncated.der")).unwrap_err();
        assert!(matches!(err, NodeCertError::Malformed(_)), "{err}");
        let err = NodeCert::from_bytes(&fixtures::load("corrupt.pem")).unwrap_err();
        assert!(
            matches!(err, NodeCertError::Encoding(EncodingError::Pem(_))),
            "{err}"
        );
        let err = NodeCert::from_bytes(&fixtures::load("ca.crt")).unwrap_err();
        assert_eq!(err, NodeCertError::IsCa);
        let err = NodeCert::from_bytes(&fixtures::load("revoked.crl")).unwrap_err();
        assert!(err.to_string().contains("holds a revocation list"), "{err}");
        let mut trailing = fixtures::node("alpha.crt").der().to_vec();
        trailing.push(0);
        assert!(matches!(
            NodeCert::from_der(&trailing),
            Err(NodeCertError::Issuer(_))
        ));
    }
}
