//! The one place a daemon decides whether a certificate is trusted: the mesh CA and the
//! revocation list in use. Certificates are accepted as bytes at a time `now`; revocation
//! lists are offered, and only a newer one replaces the list in use (revocations never go
//! back to an older list, or to none).

use time::OffsetDateTime;

use crate::ca_cert::CaCert;
use crate::crl::{CrlError, RevocationList};
use crate::node_cert::{NodeCert, NodeCertError};
use crate::verify::{VerifyError, verify};

/// Why certificate bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a node certificate: {0}")]
    Malformed(#[from] NodeCertError),
    #[error("{0}")]
    Untrusted(#[from] VerifyError),
}

/// What became of a revocation list offered to a [`TrustStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrlOffer {
    /// It is newer than the list in use (or there was none), and is now in use.
    Replaced,
    /// It is the list in use or an older one; the store kept its own.
    NotNewer,
}

/// The trust anchor and the revocation list in use.
#[derive(Debug, Clone)]
pub struct TrustStore {
    ca: CaCert,
    crl: Option<RevocationList>,
}

impl TrustStore {
    /// A store for `ca`, with `crl` in use if it was signed by that CA (a list from another CA
    /// is left out: it could never be applied to this CA's certificates).
    pub fn new(ca: CaCert, crl: Option<RevocationList>) -> Self {
        let crl = crl.filter(|crl| crl.ca_fingerprint() == ca.fingerprint());
        Self { ca, crl }
    }

    pub fn ca(&self) -> &CaCert {
        &self.ca
    }

    pub fn crl(&self) -> Option<&RevocationList> {
        self.crl.as_ref()
    }

    /// Parses `der` and verifies it at `now`: the verified node certificate, or why not.
    pub fn accept(&self, der: &[u8], now: OffsetDateTime) -> Result<NodeCert, Refusal> {
        let cert = NodeCert::from_der(der)?;
        self.check(&cert, now)?;
        Ok(cert)
    }

    /// Verifies a parsed certificate at `now` (see [`verify`]).
    pub fn check(&self, cert: &NodeCert, now: OffsetDateTime) -> Result<(), VerifyError> {
        verify(cert, &self.ca, self.crl.as_ref(), now)
    }

    /// Puts `crl` in use if it is newer than the list in use. A list signed by another CA is
    /// never newer.
    pub fn offer(&mut self, crl: RevocationList) -> CrlOffer {
        if crl.ca_fingerprint() != self.ca.fingerprint() || !crl.supersedes(self.crl.as_ref()) {
            return CrlOffer::NotNewer;
        }
        self.crl = Some(crl);
        CrlOffer::Replaced
    }

    /// Checks the signature of a list received as DER against the CA, then offers it.
    pub fn offer_der(&mut self, der: &[u8]) -> Result<CrlOffer, CrlError> {
        let crl = RevocationList::from_der(der, &self.ca)?;
        Ok(self.offer(crl))
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::test_ca::TestCa;

    #[test]
    fn accepts_its_own_certificates_and_names_why_others_are_refused() {
        let pki = TestCa::new("ca");
        let store = TrustStore::new(pki.ca.clone(), None);
        let (cert, _) = pki.node("n1", Ipv4Addr::new(10, 42, 0, 1));
        let accepted = store.accept(cert.der(), pki.start).unwrap();
        assert_eq!(accepted.name().as_str(), "n1");

        let other = TestCa::new("other");
        let (foreign, _) = other.node("n2", Ipv4Addr::new(10, 42, 0, 2));
        assert!(matches!(
            store.accept(foreign.der(), pki.start),
            Err(Refusal::Untrusted(VerifyError::OtherCa { .. }))
        ));
        assert!(matches!(
            store.accept(&cert.der()[..40], pki.start),
            Err(Refusal::Malformed(_))
        ));
        let later = pki.start + time::Duration::days(60);
        assert!(matches!(
            store.accept(cert.der(), later),
            Err(Refusal::Untrusted(VerifyError::Expired { .. }))
        ));
    }

    #[test]
    fn only_a_newer_list_of_the_same_ca_replaces_the_one_in_use() {
        let pki = TestCa::new("ca");
        let (cert, _) = pki.node("n1", Ipv4Addr::new(10, 42, 0, 1));
        let mut store = TrustStore::new(pki.ca.clone(), Some(pki.crl(1, &[])));
        assert_eq!(store.offer(pki.crl(1, &[])), CrlOffer::NotNewer);

        let revoking = pki.crl(2, &[&cert]);
        assert_eq!(store.offer_der(revoking.der()), Ok(CrlOffer::Replaced));
        assert_eq!(store.crl().and_then(RevocationList::number), Some(2));
        assert!(matches!(
            store.accept(cert.der(), pki.start),
            Err(Refusal::Untrusted(VerifyError::Revoked { .. }))
        ));
        // An older list never un-revokes anyone.
        assert_eq!(store.offer(pki.crl(1, &[])), CrlOffer::NotNewer);
        assert!(store.accept(cert.der(), pki.start).is_err());

        let other = TestCa::new("other");
        assert!(store.offer_der(other.crl(9, &[]).der()).is_err());
        let foreign = TrustStore::new(pki.ca.clone(), Some(other.crl(9, &[])));
        assert!(foreign.crl().is_none(), "another CA's list is never in use");
    }
}
