//! The CA-signed revocation list (X.509 CRL) that lighthouses hand to every node.
//!
//! The root's list revokes the nodes it signed and the issuing CAs; an issuing CA's list revokes
//! the nodes it signed. An issuing CA's list travels with that CA's certificate, so whoever
//! receives it can check it against the root alone: as DER, the list then the certificate back
//! to back; in a file, a `X509 CRL` PEM block followed by a `CERTIFICATE` block. A file may hold
//! several lists (the root's and each issuing CA's).

use std::collections::BTreeMap;

use time::OffsetDateTime;
use x509_parser::prelude::FromDer;
use x509_parser::revocation_list::CertificateRevocationList;

use crate::ca_cert::CaCert;
use crate::encoding::{CERTIFICATE_TAG, CRL_TAG, EncodingError, describe_block, pem_or_der};
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
    #[error("the issuing CA certificate with it: {0}")]
    Issuer(crate::CaCertError),
    #[error("issued by {issuer:?}, an issuing CA the root {root:?} did not sign")]
    IssuerNotFromRoot { issuer: String, root: String },
    #[error(
        "holds {0}, expected revocation lists (each optionally followed by its issuing CA's certificate)"
    )]
    Unexpected(String),
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
    /// The issuing CA that signed it, when the root did not.
    issuing: Option<Box<CaCert>>,
}

impl RevocationList {
    /// Reads every list in `bytes` (PEM, or one DER list) whose signer chains to `root`: the
    /// root's own, and issuing CAs' lists each with the issuing CA's certificate after it.
    pub fn read_all(bytes: &[u8], root: &CaCert) -> Result<Vec<Self>, CrlError> {
        let trimmed = bytes.trim_ascii_start();
        if !trimmed.starts_with(b"-----BEGIN") {
            return Ok(vec![Self::from_published_der(bytes, root)?]);
        }
        let blocks = pem::parse_many(trimmed).map_err(|e| EncodingError::Pem(e.to_string()))?;
        if blocks.is_empty() {
            return Err(EncodingError::NoBlock {
                expected: "a revocation list (X509 CRL)",
            }
            .into());
        }
        let mut lists = Vec::new();
        let mut blocks = blocks.into_iter().peekable();
        while let Some(block) = blocks.next() {
            if block.tag() != CRL_TAG {
                return Err(CrlError::Unexpected(describe_block(block.tag())));
            }
            let mut der = block.into_contents();
            if let Some(cert) = blocks.next_if(|b| b.tag() == CERTIFICATE_TAG) {
                der.extend_from_slice(cert.contents());
            }
            lists.push(Self::from_published_der(&der, root)?);
        }
        Ok(lists)
    }

    /// Reads a list as it travels: the DER list, followed by the DER certificate of the issuing
    /// CA that signed it unless `root` did. The issuing CA must be one `root` signed.
    pub fn from_published_der(der: &[u8], root: &CaCert) -> Result<Self, CrlError> {
        let (rest, _) = CertificateRevocationList::from_der(der)
            .map_err(|e| CrlError::Malformed(e.to_string()))?;
        if rest.is_empty() {
            return Self::from_der(der, root);
        }
        let issuing = CaCert::issuing_from_der(rest).map_err(CrlError::Issuer)?;
        if !issuing.issued_by(root) {
            return Err(CrlError::IssuerNotFromRoot {
                issuer: issuing.name().to_owned(),
                root: root.name().to_owned(),
            });
        }
        Self::from_der(&der[..der.len() - rest.len()], &issuing)
    }

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
            ca: ca.identity(),
            number,
            this_update: x509::time(tbs.this_update),
            next_update: tbs.next_update.map(x509::time),
            revoked,
            issuing: (!ca.is_self_signed()).then(|| Box::new(ca.clone())),
        })
    }

    /// The list as PEM, with its issuing CA's certificate after it when that CA signed it.
    pub fn to_pem(&self) -> String {
        let mut blocks = vec![pem::Pem::new(CRL_TAG, self.der.clone())];
        if let Some(issuing) = &self.issuing {
            blocks.push(pem::Pem::new(CERTIFICATE_TAG, issuing.der().to_vec()));
        }
        pem::encode_many(&blocks)
    }

    /// The list alone.
    pub fn der(&self) -> &[u8] {
        &self.der
    }
    /// The list as it travels: its DER, then its issuing CA's certificate if that CA signed it.
    pub fn published_der(&self) -> Vec<u8> {
        let mut out = self.der.clone();
        if let Some(issuing) = &self.issuing {
            out.extend_from_slice(issuing.der());
        }
        out
    }
    /// The issuing CA that signed the list; `None` when the root did.
    pub fn issuing_ca(&self) -> Option<&CaCert> {
        self.issuing.as_deref()
    }
    /// The identity ([`CaCert::identity`]) of the CA whose signature was checked.
    pub fn ca_identity(&self) -> Fingerprint {
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
    /// When this list revoked `cert`, or its issuing CA, if it did. A root's list revokes the
    /// nodes the root signed and its issuing CAs; an issuing CA's list only the nodes that CA
    /// signed (serial numbers are only unique per CA). The list must be one of the root that
    /// `cert` chains to.
    pub fn revokes(&self, cert: &crate::NodeCert) -> Option<OffsetDateTime> {
        match (&self.issuing, cert.issuing_ca()) {
            (None, None) => self.revoked_at(cert.serial()),
            (None, Some(issuing)) => self.revoked_at(issuing.serial()),
            (Some(list_ca), Some(issuing)) if list_ca.identity() == issuing.identity() => {
                self.revoked_at(cert.serial())
            }
            (Some(_), _) => None,
        }
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
