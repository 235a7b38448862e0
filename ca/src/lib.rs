//! The RMA Mesh certificate library: identities, keys, revocation, and the trust decision.
//!
//! Every daemon reads certificates and decides trust through this crate; `rma-ca` issues them.
//! Time is always an argument, so every check can be tested without a clock.

pub mod authority;
mod ca_cert;
mod crl;
mod encoding;
pub mod enrollment;
mod expiry;
mod extensions;
pub mod files;
mod ids;
pub mod index;
mod issue;
pub mod join;
pub mod keygen;
mod keys;
mod names;
mod node_cert;
pub mod proof;
#[cfg(any(test, feature = "test-ca"))]
pub mod test_ca;
pub mod timefmt;
mod token_rows;
pub mod tokens;
mod trust_store;
mod verify;
mod x509;

#[cfg(test)]
mod chain_tests;
#[cfg(test)]
mod enrollment_tests;
#[cfg(test)]
mod fixtures;

pub use ca_cert::{CaCert, CaCertError};
pub use crl::{CrlError, RevocationList};
pub use encoding::EncodingError;
pub use expiry::{CRL_WARNING_WINDOW, DEFAULT_WARNING_WINDOW, Expiring, ExpiryWarning};
pub use ids::{BadFingerprint, BadSerial, Fingerprint, Serial};
pub use issue::{
    CaParams, CrlParams, IssueError, NodeCertParams, check_mesh_ip, self_sign_ca, sign_crl,
    sign_issuing_ca, sign_node,
};
pub use keys::{CaKey, KeyError, NodeKeys, NodePublicKeys, WireGuardKey};
pub use names::{Group, NameError, NodeName};
pub use node_cert::{NodeCert, NodeCertError};
pub use trust_store::{CrlOffer, MAX_ISSUING_LISTS, Refusal, TrustStore};
pub use verify::{VerifyError, verify};
