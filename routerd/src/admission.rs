//! Who may register as a worker. Certificates are public and a mesh IP can be borrowed by any
//! local user of the machine that holds it (and on routerd's own machine, traffic to its own
//! mesh IP never crosses the mesh), so a registration is accepted only when it
//! - came from the mesh IP written in its certificate (cheap, checked first),
//! - carries a certificate in one of the worker groups,
//! - is signed, within a time window, with that certificate's identity key
//!   ([`rma_ca::proof`]): this is what names the sender;
//! - and the certificate verifies against the CA and the revocation list.
//!
//! The first three need no shared state: [`prove`] runs before any lock is taken, and
//! [`trust`] reads only the trust store, which has a lock of its own.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use rma_ca::proof::{ProofError, Signed};
use rma_ca::{NodeCert, VerifyError};
use rma_daemon::trust::SharedTrust;
use time::OffsetDateTime;

/// How far a registration's signing time may be from routerd's clock. Certificates already
/// need clocks that roughly agree; this bounds how long a captured registration could be
/// replayed to a routerd that has forgotten the worker.
pub const SIGNATURE_WINDOW: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("not a node certificate: {0}")]
    Malformed(String),
    #[error("certificate not trusted: {0}")]
    Untrusted(VerifyError),
    #[error("the certificate is {cert_ip}'s but the request came from {source_ip}")]
    WrongSource {
        cert_ip: Ipv4Addr,
        source_ip: IpAddr,
    },
    #[error("the certificate is in none of the worker groups ({allowed})")]
    NotAWorker { allowed: String },
    #[error("no proof of the certificate's key: {0}")]
    Unproven(ProofError),
}

/// A registration as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    /// The certificate, PEM or DER.
    pub certificate: &'a [u8],
    pub source_ip: IpAddr,
    pub path: &'a str,
    pub signed: Signed<'a>,
    pub body: &'a [u8],
}

/// What [`prove`] found: the certificate, and when its key signed the registration.
#[derive(Debug, Clone)]
pub struct Proven {
    pub cert: NodeCert,
    pub signed_at_ms: u64,
}

/// Everything that needs no shared state, cheapest first.
pub fn prove(claim: &Claim<'_>, groups: &[String], now_ms: u64) -> Result<Proven, Refusal> {
    let cert =
        NodeCert::from_bytes(claim.certificate).map_err(|e| Refusal::Malformed(e.to_string()))?;
    if claim.source_ip != IpAddr::V4(cert.mesh_ip()) {
        return Err(Refusal::WrongSource {
            cert_ip: cert.mesh_ip(),
            source_ip: claim.source_ip,
        });
    }
    if !groups.iter().any(|g| cert.in_group(g)) {
        return Err(Refusal::NotAWorker {
            allowed: groups.join(", "),
        });
    }
    let signed_at_ms = rma_ca::proof::verify_request(
        &cert,
        "POST",
        claim.path,
        claim.signed,
        claim.body,
        now_ms,
        SIGNATURE_WINDOW,
    )
    .map_err(Refusal::Unproven)?;
    Ok(Proven { cert, signed_at_ms })
}

/// The certificate's chain, validity and revocation at `now`, by the trust store.
pub fn trust(cert: &NodeCert, trust: &SharedTrust, now: OffsetDateTime) -> Result<(), Refusal> {
    trust.check(cert, now).map_err(Refusal::Untrusted)
}

#[cfg(test)]
mod tests {
    use rma_ca::proof::sign_request;
    use rma_ca::test_ca::TestCa;

    use super::*;

    const PATH: &str = "/api/worker/register";

    fn workers() -> Vec<String> {
        vec!["workers".into()]
    }

    fn claim<'a>(
        certificate: &'a [u8],
        source_ip: IpAddr,
        time: &'a str,
        signature: &'a str,
    ) -> Claim<'a> {
        Claim {
            certificate,
            source_ip,
            path: PATH,
            signed: Signed {
                time: Some(time.as_bytes()),
                signature: Some(signature.as_bytes()),
            },
            body: b"{}",
        }
    }

    #[test]
    fn only_a_signed_registration_from_the_certificates_own_mesh_ip_is_proven() {
        let pki = TestCa::new("mesh-ca");
        let ip = Ipv4Addr::new(10, 42, 0, 5);
        let (cert, keys) = pki.node("worker-5", ip);
        let pem = cert.to_pem();
        let pem = pem.as_bytes();
        let now_ms = 1_800_000_000_000;
        let signature = sign_request(&keys, "POST", PATH, now_ms, b"{}");
        let time = now_ms.to_string();
        let claim = |certificate, source_ip| claim(certificate, source_ip, &time, &signature);
        let der = cert.der();
        let proven = prove(&claim(pem, IpAddr::V4(ip)), &workers(), now_ms).unwrap();
        assert_eq!(proven.cert.name().as_str(), "worker-5");
        assert_eq!(proven.signed_at_ms, now_ms);
        assert!(
            prove(&claim(der, IpAddr::V4(ip)), &workers(), now_ms).is_ok(),
            "DER works too"
        );

        let elsewhere: IpAddr = "10.42.0.6".parse().unwrap();
        assert_eq!(
            prove(&claim(pem, elsewhere), &workers(), now_ms).unwrap_err(),
            Refusal::WrongSource {
                cert_ip: ip,
                source_ip: elsewhere
            }
        );
        assert!(matches!(
            prove(&claim(pem, IpAddr::V4(ip)), &["gpu".into()], now_ms),
            Err(Refusal::NotAWorker { .. })
        ));
        assert!(matches!(
            prove(&claim(b"garbage", IpAddr::V4(ip)), &workers(), now_ms),
            Err(Refusal::Malformed(_))
        ));

        // From the right address, with the right certificate, but signed by someone else: a
        // local user who copied the (public) certificate.
        let (_, thief) = pki.node("worker-6", Ipv4Addr::new(10, 42, 0, 6));
        let stolen = sign_request(&thief, "POST", PATH, now_ms, b"{}");
        let unproven = Claim {
            signed: Signed {
                time: Some(time.as_bytes()),
                signature: Some(stolen.as_bytes()),
            },
            ..claim(pem, IpAddr::V4(ip))
        };
        assert_eq!(
            prove(&unproven, &workers(), now_ms).unwrap_err(),
            Refusal::Unproven(ProofError::WrongKey)
        );
        let unsigned = Claim {
            signed: Signed {
                time: None,
                signature: None,
            },
            ..claim(pem, IpAddr::V4(ip))
        };
        assert_eq!(
            prove(&unsigned, &workers(), now_ms).unwrap_err(),
            Refusal::Unproven(ProofError::Unsigned)
        );
    }

    #[test]
    fn trust_checks_the_chain_and_the_revocation_list() {
        let pki = TestCa::new("mesh-ca");
        let (cert, _) = pki.node("worker-5", Ipv4Addr::new(10, 42, 0, 5));
        let store = SharedTrust::new(pki.ca.clone(), Vec::new());
        assert_eq!(trust(&cert, &store, pki.start), Ok(()));
        store.offer(pki.crl_revoking(&[&cert]), pki.start);
        assert!(matches!(
            trust(&cert, &store, pki.start),
            Err(Refusal::Untrusted(VerifyError::Revoked { .. }))
        ));
        let other = TestCa::new("other-ca");
        assert!(matches!(
            trust(
                &cert,
                &SharedTrust::new(other.ca.clone(), Vec::new()),
                pki.start
            ),
            Err(Refusal::Untrusted(_))
        ));
    }
}
