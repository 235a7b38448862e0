//! The one place a daemon decides whether a certificate is trusted: the root CA and the
//! revocation lists in use, the root's and each issuing CA's. Certificates are accepted as
//! bytes at a time `now`; revocation lists are offered, and only a newer one replaces the list
//! of the same CA in use (revocations never go back to an older list, or to none).

use std::collections::BTreeMap;

use time::OffsetDateTime;

use crate::ca_cert::CaCert;
use crate::crl::{CrlError, RevocationList};
use crate::ids::Fingerprint;
use crate::node_cert::{NodeCert, NodeCertError};
use crate::verify::{VerifyError, verify};

/// Issuing CAs whose lists a store keeps, at most. Only the root's key can make an issuing CA,
/// and an operator runs a handful; expired ones are dropped first when a new one arrives.
pub const MAX_ISSUING_LISTS: usize = 64;

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
    /// It is newer than the list of its CA in use (or there was none), and is now in use.
    Replaced,
    /// It is the list in use or an older one; the store kept its own.
    NotNewer,
    /// Its CA is not this root or an issuing CA this root signed and that is valid now.
    Unrelated,
    /// Its CA is a new issuing CA, but the store holds [`MAX_ISSUING_LISTS`] lists of live
    /// issuing CAs already: the list is not in use, and that CA's nodes are checked against
    /// the root's list only. An operator running this many live issuing CAs should retire some.
    Full,
}

/// The trust anchor and the revocation lists in use.
#[derive(Debug, Clone)]
pub struct TrustStore {
    ca: CaCert,
    crl: Option<RevocationList>,
    /// Lists of issuing CAs, by the issuing CA's identity (its name and key, so that a list
    /// keeps applying when the CA's certificate is renewed).
    issuing: BTreeMap<Fingerprint, RevocationList>,
}

impl TrustStore {
    /// A store for the root `ca`, with `crl` in use if it was signed by that CA (a list from
    /// another CA is left out: it could never be applied to this CA's certificates).
    pub fn new(ca: CaCert, crl: Option<RevocationList>) -> Self {
        let crl = crl.filter(|crl| crl.ca_identity() == ca.identity());
        Self {
            ca,
            crl,
            issuing: BTreeMap::new(),
        }
    }

    /// A store for the root `ca` with every list of `crls` that applies in use: the root's
    /// newest, and each issuing CA's the root signed (whether or not that CA is valid now; a
    /// certificate it signed is checked for that when it is verified), up to the bound.
    pub fn with_lists(ca: CaCert, crls: Vec<RevocationList>) -> Self {
        let mut store = Self::new(ca, None);
        for crl in crls {
            store.admit(crl, None);
        }
        store
    }

    pub fn ca(&self) -> &CaCert {
        &self.ca
    }

    /// The root's list in use.
    pub fn crl(&self) -> Option<&RevocationList> {
        self.crl.as_ref()
    }

    /// Every list in use: the root's first, then the issuing CAs'.
    pub fn lists(&self) -> impl Iterator<Item = &RevocationList> {
        self.crl.iter().chain(self.issuing.values())
    }

    /// The list in use of the issuing CA with `identity` ([`CaCert::identity`]).
    pub fn issuing_list(&self, identity: &Fingerprint) -> Option<&RevocationList> {
        self.issuing.get(identity)
    }

    /// Parses `der` (a node certificate, optionally followed by its issuing CA's) and verifies
    /// it at `now`: the verified node certificate, or why not.
    pub fn accept(&self, der: &[u8], now: OffsetDateTime) -> Result<NodeCert, Refusal> {
        let cert = NodeCert::from_der(der)?;
        self.check(&cert, now)?;
        Ok(cert)
    }

    /// Verifies a parsed certificate at `now` (see [`verify`]) with the lists that apply.
    pub fn check(&self, cert: &NodeCert, now: OffsetDateTime) -> Result<(), VerifyError> {
        let issuing = cert
            .issuing_ca()
            .and_then(|ca| self.issuing.get(&ca.identity()));
        let lists: Vec<&RevocationList> = self.crl.iter().chain(issuing).collect();
        verify(cert, &self.ca, &lists, now)
    }

    /// Puts `crl` in use if it is newer than the list of its CA in use: the root's, or an
    /// issuing CA's that the root signed and that is valid at `now`.
    pub fn offer(&mut self, crl: RevocationList, now: OffsetDateTime) -> CrlOffer {
        self.admit(crl, Some(now))
    }

    /// [`TrustStore::offer`], checking the issuing CA is live only when `now` is given.
    fn admit(&mut self, crl: RevocationList, now: Option<OffsetDateTime>) -> CrlOffer {
        if crl.ca_identity() == self.ca.identity() {
            if !crl.supersedes(self.crl.as_ref()) {
                return CrlOffer::NotNewer;
            }
            self.crl = Some(crl);
            return CrlOffer::Replaced;
        }
        let Some(issuing) = crl.issuing_ca() else {
            return CrlOffer::Unrelated;
        };
        let live =
            |ca: &CaCert| now.is_none_or(|now| ca.not_before() <= now && now <= ca.not_after());
        if !issuing.issued_by(&self.ca) || !self.ca.may_sign_cas() || !live(issuing) {
            return CrlOffer::Unrelated;
        }
        let identity = issuing.identity();
        if let Some(current) = self.issuing.get(&identity) {
            if !crl.supersedes(Some(current)) {
                return CrlOffer::NotNewer;
            }
        } else {
            self.issuing
                .retain(|_, list| list.issuing_ca().is_some_and(live));
            if self.issuing.len() >= MAX_ISSUING_LISTS {
                return CrlOffer::Full;
            }
        }
        self.issuing.insert(identity, crl);
        CrlOffer::Replaced
    }

    /// Checks the signature of a list received as it travels (see
    /// [`RevocationList::from_published_der`]) against the root, then offers it.
    pub fn offer_der(&mut self, der: &[u8], now: OffsetDateTime) -> Result<CrlOffer, CrlError> {
        let crl = RevocationList::from_published_der(der, &self.ca)?;
        Ok(self.offer(crl, now))
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
        assert_eq!(store.offer(pki.crl(1, &[]), pki.start), CrlOffer::NotNewer);

        let revoking = pki.crl(2, &[&cert]);
        assert_eq!(
            store.offer_der(revoking.der(), pki.start),
            Ok(CrlOffer::Replaced)
        );
        assert_eq!(store.crl().and_then(RevocationList::number), Some(2));
        assert!(matches!(
            store.accept(cert.der(), pki.start),
            Err(Refusal::Untrusted(VerifyError::Revoked { .. }))
        ));
        // An older list never un-revokes anyone.
        assert_eq!(store.offer(pki.crl(1, &[]), pki.start), CrlOffer::NotNewer);
        assert!(store.accept(cert.der(), pki.start).is_err());

        let other = TestCa::new("other");
        assert!(store.offer_der(other.crl(9, &[]).der(), pki.start).is_err());
        let foreign = TrustStore::new(pki.ca.clone(), Some(other.crl(9, &[])));
        assert!(foreign.crl().is_none(), "another CA's list is never in use");
    }
}
