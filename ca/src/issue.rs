//! Making certificates and revocation lists with rcgen, signed by the CA's Ed25519 key.

use std::net::{IpAddr, Ipv4Addr};

use ed25519_dalek::Signer as _;
use ipnet::Ipv4Net;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CidrSubnet,
    CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, GeneralSubtree, IsCa,
    Issuer, KeyIdMethod, KeyUsagePurpose, NameConstraints, RevokedCertParams, SanType,
    SerialNumber, SignatureAlgorithm,
};
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::ca_cert::CaCert;
use crate::crl::RevocationList;
use crate::extensions::{self, OID_GROUPS, OID_PERMITTED_GROUPS, OID_WIREGUARD_KEY};
use crate::ids::Serial;
use crate::keys::{CaKey, NodePublicKeys, WireGuardKey};
use crate::names::{Group, NodeName};
use crate::node_cert::NodeCert;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    #[error("mesh IP {ip} is outside the CA network {network}")]
    OutsideNetwork { ip: Ipv4Addr, network: Ipv4Net },
    #[error("mesh IP {ip} is the network or broadcast address of {network}")]
    ReservedAddress { ip: Ipv4Addr, network: Ipv4Net },
    #[error("group {group:?} is not one CA {ca:?} may give (its groups: {permitted})")]
    GroupNotPermitted {
        group: String,
        ca: String,
        permitted: String,
    },
    #[error("validity ends ({}) before it starts ({})", crate::timefmt::rfc3339(*not_after), crate::timefmt::rfc3339(*not_before))]
    EmptyValidity {
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    #[error("certificate would end at {}, after the CA expires at {}", crate::timefmt::rfc3339(*not_after), crate::timefmt::rfc3339(*ca_not_after))]
    OutlivesCa {
        not_after: OffsetDateTime,
        ca_not_after: OffsetDateTime,
    },
    #[error("certificate would start at {}, before the CA is valid from {}", crate::timefmt::rfc3339(*not_before), crate::timefmt::rfc3339(*ca_not_before))]
    PredatesCa {
        not_before: OffsetDateTime,
        ca_not_before: OffsetDateTime,
    },
    #[error("{0}")]
    Name(String),
    #[error(
        "the root CA {ca:?} has path length 0 (made before issuing CAs existed): it can sign nodes only; make a new root to use an issuing CA"
    )]
    RootSignsNodesOnly { ca: String },
    #[error("network {network} is not inside the root CA network {root}")]
    NetworkOutsideRoot { network: Ipv4Net, root: Ipv4Net },
    #[error("building the certificate failed: {0}")]
    Build(String),
}

impl From<rcgen::Error> for IssueError {
    fn from(e: rcgen::Error) -> Self {
        Self::Build(e.to_string())
    }
}

/// An Ed25519 key as rcgen's signer, so rcgen signs with the same ed25519-dalek key everything
/// else uses. Ed25519 is deterministic: the same inputs give byte-identical certificates.
struct DalekSigner<'a> {
    key: &'a ed25519_dalek::SigningKey,
    public: [u8; 32],
}

impl<'a> DalekSigner<'a> {
    fn new(key: &'a CaKey) -> Self {
        Self {
            key: key.signing_key(),
            public: key.verifying_key().to_bytes(),
        }
    }
}

impl rcgen::PublicKeyData for DalekSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.public
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

impl rcgen::SigningKey for DalekSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

/// A node's Ed25519 public key as the subject key of its certificate.
struct SubjectKey([u8; 32]);

impl rcgen::PublicKeyData for SubjectKey {
    fn der_bytes(&self) -> &[u8] {
        &self.0
    }
    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &rcgen::PKCS_ED25519
    }
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

/// What a new CA certificate says.
#[derive(Debug, Clone)]
pub struct CaParams {
    pub name: NodeName,
    pub network: Ipv4Net,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub serial: Serial,
    /// The only groups the CA may give (an issuing CA's permitted groups); `None` is any.
    pub groups: Option<Vec<Group>>,
}

/// What a CA certificate says, for a root and an issuing CA alike: a name, a network that
/// becomes a critical IP name constraint (so standard verifiers such as openssl and webpki
/// also refuse node certificates outside it), and how many CAs may follow it.
fn ca_params(params: &CaParams, path_len: u8) -> Result<CertificateParams, IssueError> {
    if params.not_after <= params.not_before {
        return Err(IssueError::EmptyValidity {
            not_before: params.not_before,
            not_after: params.not_after,
        });
    }
    let mut cert = CertificateParams::default();
    cert.distinguished_name = common_name(params.name.as_str());
    cert.not_before = params.not_before;
    cert.not_after = params.not_after;
    cert.serial_number = Some(SerialNumber::from_slice(params.serial.as_bytes()));
    cert.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    cert.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    cert.key_identifier_method = KeyIdMethod::Sha256;
    cert.name_constraints = Some(NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::IpAddress(CidrSubnet::from_v4_prefix(
            params.network.network().octets(),
            params.network.prefix_len(),
        ))],
        excluded_subtrees: vec![],
    });
    if let Some(groups) = &params.groups {
        cert.custom_extensions
            .push(CustomExtension::from_oid_content(
                &OID_PERMITTED_GROUPS,
                extensions::encode_groups(groups),
            ));
    }
    Ok(cert)
}

/// Makes the self-signed root CA certificate, with path length 1: it may sign issuing CAs,
/// which may sign nodes only.
pub fn self_sign_ca(key: &CaKey, params: &CaParams) -> Result<CaCert, IssueError> {
    self_sign_with_path_len(key, params, 1)
}

/// A root with any path length: tests make the path-length-0 roots of earlier versions.
pub(crate) fn self_sign_with_path_len(
    key: &CaKey,
    params: &CaParams,
    path_len: u8,
) -> Result<CaCert, IssueError> {
    let der = ca_params(params, path_len)?.self_signed(&DalekSigner::new(key))?;
    CaCert::from_der(der.der()).map_err(|e| IssueError::Build(e.to_string()))
}

/// Signs an issuing CA for the Ed25519 key `public` with the root: path length 0 (it signs
/// nodes, never another CA), its network inside the root's, its validity inside the root's.
pub fn sign_issuing_ca(
    root: &CaCert,
    root_key: &CaKey,
    public: &ed25519_dalek::VerifyingKey,
    params: &CaParams,
) -> Result<CaCert, IssueError> {
    if root_key.verifying_key() != *root.public_key() {
        return Err(IssueError::KeyMismatch);
    }
    if !root.may_sign_cas() {
        return Err(IssueError::RootSignsNodesOnly {
            ca: root.name().to_owned(),
        });
    }
    let (network, outer) = (params.network.trunc(), root.network());
    if !outer.contains(&network) {
        return Err(IssueError::NetworkOutsideRoot {
            network,
            root: outer,
        });
    }
    check_within(root, params.not_before, params.not_after)?;
    sign_ca_unchecked(
        root,
        root_key,
        public,
        &CaParams {
            network,
            ..params.clone()
        },
        0,
    )
}

/// Signs whatever `params` say as a CA under `root`. Tests use it directly to make the
/// issuing CAs a verifier must refuse.
pub(crate) fn sign_ca_unchecked(
    root: &CaCert,
    root_key: &CaKey,
    public: &ed25519_dalek::VerifyingKey,
    params: &CaParams,
    path_len: u8,
) -> Result<CaCert, IssueError> {
    let mut cert = ca_params(params, path_len)?;
    cert.use_authority_key_identifier_extension = true;
    let issuer = Issuer::from_ca_cert_der(
        &CertificateDer::from(root.der()),
        DalekSigner::new(root_key),
    )?;
    let der = cert.signed_by(&SubjectKey(public.to_bytes()), &issuer)?;
    CaCert::issuing_from_der(der.der()).map_err(|e| IssueError::Build(e.to_string()))
}

/// Refuses a validity window that is empty or not inside the CA's.
fn check_within(
    ca: &CaCert,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<(), IssueError> {
    if not_after <= not_before {
        return Err(IssueError::EmptyValidity {
            not_before,
            not_after,
        });
    }
    if not_after > ca.not_after() {
        return Err(IssueError::OutlivesCa {
            not_after,
            ca_not_after: ca.not_after(),
        });
    }
    if not_before < ca.not_before() {
        return Err(IssueError::PredatesCa {
            not_before,
            ca_not_before: ca.not_before(),
        });
    }
    Ok(())
}

/// What a new node certificate says.
#[derive(Debug, Clone)]
pub struct NodeCertParams {
    pub name: NodeName,
    pub mesh_ip: Ipv4Addr,
    pub groups: Vec<Group>,
    pub keys: NodePublicKeys,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub serial: Serial,
}

/// Signs a node certificate after checking everything a verifier would later refuse: the key
/// belongs to the CA, the mesh IP is a host address inside the network, and the validity window
/// is non-empty and inside the CA's.
pub fn sign_node(
    ca: &CaCert,
    key: &CaKey,
    params: &NodeCertParams,
) -> Result<NodeCert, IssueError> {
    if key.verifying_key() != *ca.public_key() {
        return Err(IssueError::KeyMismatch);
    }
    check_mesh_ip(params.mesh_ip, ca.network())?;
    check_groups(&params.groups, ca)?;
    check_within(ca, params.not_before, params.not_after)?;
    sign_node_unchecked(ca, key, params, Some(&params.keys.wireguard))
}

/// Checks that `ca` may give every one of `groups` (its permitted groups, if it has them).
pub fn check_groups(groups: &[Group], ca: &CaCert) -> Result<(), IssueError> {
    match groups.iter().find(|g| !ca.permits_group(g)) {
        Some(group) => Err(IssueError::GroupNotPermitted {
            group: group.as_str().to_owned(),
            ca: ca.name().to_owned(),
            permitted: ca
                .permitted_groups()
                .map(|p| p.iter().map(|g| g.as_str()).collect::<Vec<_>>().join(","))
                .unwrap_or_default(),
        }),
        None => Ok(()),
    }
}

/// Checks that `ip` can be a node's mesh IP in `network`.
pub fn check_mesh_ip(ip: Ipv4Addr, network: Ipv4Net) -> Result<(), IssueError> {
    if !network.contains(&ip) {
        return Err(IssueError::OutsideNetwork { ip, network });
    }
    if network.prefix_len() < 31 && (ip == network.network() || ip == network.broadcast()) {
        return Err(IssueError::ReservedAddress { ip, network });
    }
    Ok(())
}

/// Signs whatever `params` say, with the WireGuard key extension only when `wireguard` is given.
/// Test fixtures use it directly to make the invalid certificates a verifier must refuse.
pub(crate) fn sign_node_unchecked(
    ca: &CaCert,
    key: &CaKey,
    params: &NodeCertParams,
    wireguard: Option<&WireGuardKey>,
) -> Result<NodeCert, IssueError> {
    let name = params.name.as_str();
    let mut cert = CertificateParams::default();
    cert.distinguished_name = common_name(name);
    cert.subject_alt_names = vec![
        SanType::DnsName(
            name.try_into()
                .map_err(|e: rcgen::Error| IssueError::Name(e.to_string()))?,
        ),
        SanType::IpAddress(IpAddr::V4(params.mesh_ip)),
    ];
    cert.not_before = params.not_before;
    cert.not_after = params.not_after;
    cert.serial_number = Some(SerialNumber::from_slice(params.serial.as_bytes()));
    cert.is_ca = IsCa::ExplicitNoCa;
    cert.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    cert.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    cert.use_authority_key_identifier_extension = true;
    if let Some(wireguard) = wireguard {
        cert.custom_extensions
            .push(CustomExtension::from_oid_content(
                &OID_WIREGUARD_KEY,
                extensions::encode_wireguard_key(wireguard),
            ));
    }
    cert.custom_extensions
        .push(CustomExtension::from_oid_content(
            &OID_GROUPS,
            extensions::encode_groups(&params.groups),
        ));
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca.der()), DalekSigner::new(key))?;
    let der = cert.signed_by(&SubjectKey(params.keys.identity.to_bytes()), &issuer)?;
    let build = |e: crate::NodeCertError| IssueError::Build(e.to_string());
    let cert = NodeCert::from_der(der.der()).map_err(build)?;
    // A node an issuing CA signed is presented with that CA's certificate.
    if ca.is_self_signed() {
        Ok(cert)
    } else {
        cert.with_issuing_ca(ca.clone()).map_err(build)
    }
}

/// What a new revocation list says.
#[derive(Debug, Clone)]
pub struct CrlParams {
    pub number: u64,
    pub this_update: OffsetDateTime,
    pub next_update: OffsetDateTime,
    /// Serial numbers and revocation times.
    pub revoked: Vec<(Serial, OffsetDateTime)>,
}

pub fn sign_crl(
    ca: &CaCert,
    key: &CaKey,
    params: &CrlParams,
) -> Result<RevocationList, IssueError> {
    if key.verifying_key() != *ca.public_key() {
        return Err(IssueError::KeyMismatch);
    }
    let crl = CertificateRevocationListParams {
        this_update: params.this_update,
        next_update: params.next_update,
        crl_number: SerialNumber::from_slice(&params.number.to_be_bytes()),
        issuing_distribution_point: None,
        revoked_certs: params
            .revoked
            .iter()
            .map(|(serial, at)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(serial.as_bytes()),
                revocation_time: *at,
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(ca.der()), DalekSigner::new(key))?;
    let signed = crl.signed_by(&issuer)?;
    RevocationList::from_der(signed.der(), ca).map_err(|e| IssueError::Build(e.to_string()))
}
