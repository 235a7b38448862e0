//! The trust store shared between threads: the TLS verifiers and request handlers read it
//! while the daemon offers it newer revocation lists.

use std::sync::{Arc, RwLock};

use rma_ca::{CaCert, CrlOffer, NodeCert, Refusal, RevocationList, TrustStore, VerifyError};
use time::OffsetDateTime;

use crate::sync::{read, write};

#[derive(Debug)]
pub struct SharedTrust {
    store: RwLock<TrustStore>,
}

impl SharedTrust {
    /// A store for the root `ca` with the lists of `crls` that apply in use.
    pub fn new(ca: CaCert, crls: Vec<RevocationList>) -> Arc<Self> {
        Arc::new(Self {
            store: RwLock::new(TrustStore::with_lists(ca, crls)),
        })
    }

    pub fn ca(&self) -> CaCert {
        read(&self.store).ca().clone()
    }

    /// The root's list in use.
    pub fn crl(&self) -> Option<RevocationList> {
        read(&self.store).crl().cloned()
    }

    /// Every list in use: the root's, then issuing CAs'.
    pub fn lists(&self) -> Vec<RevocationList> {
        read(&self.store).lists().cloned().collect()
    }

    /// Puts `crl` in use if it is newer than the list of its CA in use.
    pub fn offer(&self, crl: RevocationList, now: OffsetDateTime) -> CrlOffer {
        write(&self.store).offer(crl, now)
    }

    /// Parses and verifies a peer's certificate (with its issuing CA's after it, if any) at
    /// `now`.
    pub fn accept(&self, der: &[u8], now: OffsetDateTime) -> Result<NodeCert, Refusal> {
        read(&self.store).accept(der, now)
    }

    /// Verifies a parsed certificate at `now`.
    pub fn check(&self, cert: &NodeCert, now: OffsetDateTime) -> Result<(), VerifyError> {
        read(&self.store).check(cert, now)
    }
}
