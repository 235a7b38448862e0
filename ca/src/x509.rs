//! Parsing helpers shared by CA certificates, node certificates and revocation lists.

use ed25519_dalek::{Signature, VerifyingKey};
use time::OffsetDateTime;
use x509_parser::asn1_rs::BitString;
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::oid::Oid;
use x509_parser::prelude::{ASN1Time, FromDer, X509Name};

use crate::extensions::oid_is;

pub(crate) const OID_ED25519: [u64; 4] = [1, 3, 101, 112];

/// Standard extensions this crate understands; any other extension marked critical is refused.
const KNOWN_CRITICAL: [&[u64]; 5] = [
    &[2, 5, 29, 15], // key usage
    &[2, 5, 29, 17], // subject alternative name
    &[2, 5, 29, 19], // basic constraints
    &[2, 5, 29, 30], // name constraints
    &[2, 5, 29, 37], // extended key usage
];

/// Parses one DER certificate and refuses trailing bytes.
pub(crate) fn parse_certificate(der: &[u8]) -> Result<X509Certificate<'_>, String> {
    let (rest, cert) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the certificate", rest.len()));
    }
    Ok(cert)
}

/// Splits the first DER certificate off `der`: its bytes, and whatever follows.
pub(crate) fn split_first(der: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (rest, _) = X509Certificate::from_der(der).map_err(|e| e.to_string())?;
    Ok(der.split_at(der.len() - rest.len()))
}

pub(crate) fn time(t: ASN1Time) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(t.timestamp())
        .expect("ASN.1 times are between years 0 and 9999, inside OffsetDateTime's range")
}

/// The single common name of an X.509 name.
pub(crate) fn common_name(name: &X509Name<'_>) -> Result<String, String> {
    let mut names = name.iter_common_name();
    let first = names.next().ok_or("no common name")?;
    if names.next().is_some() {
        return Err("more than one common name".into());
    }
    first
        .as_str()
        .map(str::to_owned)
        .map_err(|e| format!("common name is not a string: {e}"))
}

/// Reads a subject key that must be Ed25519.
pub(crate) fn ed25519_subject_key(cert: &X509Certificate<'_>) -> Result<VerifyingKey, String> {
    let spki = &cert.tbs_certificate.subject_pki;
    if !oid_is(&spki.algorithm.algorithm, &OID_ED25519) {
        return Err(format!(
            "subject key algorithm is {}, not Ed25519",
            spki.algorithm.algorithm
        ));
    }
    let bytes: [u8; 32] = spki
        .subject_public_key
        .data
        .as_ref()
        .try_into()
        .map_err(|_| "Ed25519 subject key is not 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| format!("invalid Ed25519 subject key: {e}"))
}

/// Refuses critical extensions that this crate does not understand (RFC 5280 §4.2).
pub(crate) fn check_critical_extensions(cert: &X509Certificate<'_>) -> Result<(), String> {
    let unknown = cert
        .tbs_certificate
        .extensions()
        .iter()
        .find(|ext| ext.critical && !KNOWN_CRITICAL.iter().any(|k| oid_is(&ext.oid, k)));
    match unknown {
        Some(ext) => Err(format!("unknown critical extension {}", ext.oid)),
        None => Ok(()),
    }
}

/// Checks an Ed25519 signature over `signed` made by `key`. Any other algorithm fails.
pub(crate) fn ed25519_signature_valid(
    key: &VerifyingKey,
    algorithm: &Oid<'_>,
    signed: &[u8],
    signature: &BitString<'_>,
) -> bool {
    oid_is(algorithm, &OID_ED25519)
        && signature.unused_bits == 0
        && ed25519_verify(key, signed, &signature.data)
}

/// Strict Ed25519 verification of raw signature bytes.
pub(crate) fn ed25519_verify(key: &VerifyingKey, signed: &[u8], signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|sig| key.verify_strict(signed, &sig).is_ok())
}
