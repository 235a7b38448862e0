//! The CA-signed revocation list (X.509 CRL) that lighthouses hand to every node.

use std::collections::BTreeMap;

use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::ca_cert::CaCert;
use crate::encoding::{CRL_TAG, EncodingError, pem_or_der};
use crate::ids::{Fingerprint, Serial};
use crate::x509;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrlError {
    #[error(transparent)]
    Encoding(#[from] EncodingError),
    #[error("malformed revocation list: {0}")]
    Malformed(String),
    #[error("issued by {issuer:?}, not by CA {ca:?}")]
    OtherCa { issuer: String, ca: String },
    #[error("signature does not verify against CA {ca:?}")]
    BadSignature { ca: String },
}

/// A revocation list whose signature has been checked against a CA. Holding one means the CA
/// signed it; which CA is recorded, so it cannot be applied to another CA's certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    der: Vec<u8>,
    ca: Fingerprint,
    number: Option<u64>,
    this_update: OffsetDateTime,
    next_update: Option<OffsetDateTime>,
    revoked: BTreeMap<Serial, OffsetDateTime>,
}

impl RevocationList {
    /// Reads a CRL from PEM or DER and checks that `ca` signed it.
    pub fn from_bytes(bytes: &[u8], ca: &CaCert) -> Result<Self, CrlError> {
        let der = pem_or_der(bytes, CRL_TAG, "a revocation list (X509 CRL)")?;
        Self::from_der(&der, ca)
    }

    pub fn from_der(der: &[u8], ca: &CaCert) -> Result<Self, CrlError> {
        let (rest, crl) = CertificateRevocationList::from_der(der)
            .map_err(|e| CrlError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(CrlError::Malformed(format!(
                "{} bytes after the list",
                rest.len()
            )));
        }
        let tbs = &crl.tbs_cert_list;
        if tbs.issuer.as_raw() != ca.subject_dn() {
            return Err(CrlError::OtherCa {
                issuer: x509::common_name(&tbs.issuer).unwrap_or_else(|_| tbs.issuer.to_string()),
                ca: ca.name().to_owned(),
            });
        }
        if !x509::ed25519_signature_valid(
            ca.public_key(),
            &crl.signature_algorithm.algorithm,
            tbs.as_ref(),
            &crl.signature_value,
        ) {
            return Err(CrlError::BadSignature {
                ca: ca.name().to_owned(),
            });
        }
        let revoked = tbs
            .revoked_certificates
            .iter()
            .map(|entry| {
                (
                    Serial::from_be_bytes(entry.raw_serial()),
                    x509::time(entry.revocation_date),
                )
            })
            .collect();
        let number = crl
            .crl_number()
            .and_then(|n| match n.to_u64_digits().as_slice() {
                [] => Some(0),
                [one] => Some(*one),
                _ => None,
            });
        Ok(Self {
            der: der.to_vec(),
            ca: ca.fingerprint(),
            number,
            this_update: x509::time(tbs.this_update),
            next_update: tbs.next_update.map(x509::time),
            revoked,
        })
    }

    pub fn to_pem(&self) -> String {
        pem::encode(&pem::Pem::new(CRL_TAG, self.der.clone()))
    }

    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// Fingerprint of the CA whose signature was checked.
    pub fn ca_fingerprint(&self) -> Fingerprint {
        self.ca
    }
    pub fn number(&self) -> Option<u64> {
        self.number
    }
    pub fn this_update(&self) -> OffsetDateTime {
        self.this_update
    }
    pub fn next_update(&self) -> Option<OffsetDateTime> {
        self.next_update
    }
    /// When the certificate with `serial` was revoked, if it was.
    pub fn revoked_at(&self, serial: &Serial) -> Option<OffsetDateTime> {
        self.revoked.get(serial).copied()
    }
    pub fn len(&self) -> usize {
        self.revoked.len()
    }
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }
    /// Past its next-update time: the CA should have published a newer list by now.
    pub fn is_stale(&self, now: OffsetDateTime) -> bool {
        self.next_update.is_some_and(|next| now > next)
    }

    /// Whether this list should replace `current`: a higher CRL number, or a later issue time
    /// when either list has no number. Revocations never go back to an older list.
    pub fn supersedes(&self, current: Option<&Self>) -> bool {
        match current {
            None => true,
            Some(current) => match (self.number, current.number) {
                (Some(new), Some(old)) => new > old,
                _ => self.this_update > current.this_update,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{self, NOW};

    #[test]
    fn a_list_supersedes_none_and_older_ones_only() {
        let crl = fixtures::crl();
        assert!(crl.supersedes(None));
        assert!(!crl.supersedes(Some(&crl)), "the same list is not newer");
    }

    #[test]
    fn reads_entries_of_its_own_ca_only() {
        let crl = fixtures::crl();
        assert_eq!(crl.len(), 1);
        assert_eq!(crl.number(), Some(1));
        assert!(
            crl.revoked_at(fixtures::node("revoked.crt").serial())
                .is_some()
        );
        assert!(
            crl.revoked_at(fixtures::node("alpha.crt").serial())
                .is_none()
        );
        assert!(!crl.is_stale(NOW));

        let other = fixtures::load("other-ca.crl");
        let err = RevocationList::from_bytes(&other, &fixtures::ca()).unwrap_err();
        assert!(
            matches!(err, CrlError::OtherCa { ref issuer, .. } if issuer == "other-ca"),
            "{err}"
        );
        let impostor = CaCert::from_bytes(&fixtures::load("impostor-ca.crt")).unwrap();
        let err =
            RevocationList::from_bytes(&fixtures::load("revoked.crl"), &impostor).unwrap_err();
        assert!(matches!(err, CrlError::BadSignature { .. }), "{err}");
    }
}
