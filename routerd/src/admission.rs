//! Who may register as a worker. A registration carries the worker's certificate; it is
//! accepted only if the certificate verifies against the CA and revocation list *and* the
//! request came from the mesh IP written in it. The mesh guarantees that only the holder of
//! that certificate can send from that IP (meshd drops decrypted packets whose source is not
//! the peer's certificate IP), so a copied certificate is useless from anywhere else.

use std::net::{IpAddr, Ipv4Addr};

use rma_ca::{CaCert, NodeCert, RevocationList, VerifyError};
use time::OffsetDateTime;

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
}

/// Checks a registration's certificate (PEM or DER) against the CA, the revocation list and
/// the address the request came from, at `now`.
pub fn admit(
    certificate: &[u8],
    source_ip: IpAddr,
    ca: &CaCert,
    crl: Option<&RevocationList>,
    now: OffsetDateTime,
) -> Result<NodeCert, Refusal> {
    let cert = NodeCert::from_bytes(certificate).map_err(|e| Refusal::Malformed(e.to_string()))?;
    rma_ca::verify(&cert, ca, crl, now).map_err(Refusal::Untrusted)?;
    if source_ip != IpAddr::V4(cert.mesh_ip()) {
        return Err(Refusal::WrongSource {
            cert_ip: cert.mesh_ip(),
            source_ip,
        });
    }
    Ok(cert)
}

#[cfg(test)]
mod tests {
    use rma_ca::test_ca::TestCa;

    use super::*;

    #[test]
    fn only_a_trusted_certificate_from_its_own_mesh_ip_is_admitted() {
        let pki = TestCa::new("mesh-ca");
        let ip = Ipv4Addr::new(10, 42, 0, 5);
        let (cert, _) = pki.node("worker-5", ip);
        let pem = cert.to_pem();
        let now = pki.start;
        let admitted = admit(pem.as_bytes(), IpAddr::V4(ip), &pki.ca, None, now).unwrap();
        assert_eq!(admitted.name().as_str(), "worker-5");
        assert_eq!(
            admit(cert.der(), IpAddr::V4(ip), &pki.ca, None, now).map(|c| c.mesh_ip()),
            Ok(ip),
            "DER works too"
        );

        let elsewhere: IpAddr = "10.42.0.6".parse().unwrap();
        assert_eq!(
            admit(pem.as_bytes(), elsewhere, &pki.ca, None, now).unwrap_err(),
            Refusal::WrongSource {
                cert_ip: ip,
                source_ip: elsewhere
            }
        );
        let outside: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(matches!(
            admit(pem.as_bytes(), outside, &pki.ca, None, now),
            Err(Refusal::WrongSource { .. })
        ));

        let crl = pki.crl_revoking(&[&cert]);
        assert!(matches!(
            admit(pem.as_bytes(), IpAddr::V4(ip), &pki.ca, Some(&crl), now),
            Err(Refusal::Untrusted(VerifyError::Revoked { .. }))
        ));
        let other = TestCa::new("other-ca");
        assert!(matches!(
            admit(pem.as_bytes(), IpAddr::V4(ip), &other.ca, None, now),
            Err(Refusal::Untrusted(_))
        ));
        assert!(matches!(
            admit(b"garbage", IpAddr::V4(ip), &pki.ca, None, now),
            Err(Refusal::Malformed(_))
        ));
    }
}
