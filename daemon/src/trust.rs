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
    pub fn new(ca: CaCert, crl: Option<RevocationList>) -> Arc<Self> {
        Arc::new(Self {
            store: RwLock::new(TrustStore::new(ca, crl)),
        })
    }

    pub fn ca(&self) -> CaCert {
        read(&self.store).ca().clone()
    }

    pub fn crl(&self) -> Option<RevocationList> {
        read(&self.store).crl().cloned()
    }

    /// Puts `crl` in use if it is newer than the list in use.
    pub fn offer(&self, crl: RevocationList) -> CrlOffer {
        write(&self.store).offer(crl)
    }

    /// Parses and verifies a peer's certificate at `now`.
    pub fn accept(&self, der: &[u8], now: OffsetDateTime) -> Result<NodeCert, Refusal> {
        read(&self.store).accept(der, now)
    }

    /// Verifies a parsed certificate at `now`.
    pub fn check(&self, cert: &NodeCert, now: OffsetDateTime) -> Result<(), VerifyError> {
        read(&self.store).check(cert, now)
    }
}
