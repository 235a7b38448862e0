//! The trust decision every party makes about a peer's certificate.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use time::OffsetDateTime;

use crate::ca_cert::CaCert;
use crate::crl::RevocationList;
use crate::ids::Serial;
use crate::node_cert::NodeCert;

/// Why a certificate is not trusted. Each variant carries what an operator needs to act on it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signed by another CA: issuer is {issuer:?}, trusted CA is {ca:?}")]
    OtherCa { issuer: String, ca: String },
    #[error(
        "signature does not verify against CA {ca:?} (another CA of the same name, or a tampered certificate)"
    )]
    BadSignature { ca: String },
    #[error("the CA {ca:?} expired at {}", crate::timefmt::rfc3339(*not_after))]
    CaExpired {
        ca: String,
        not_after: OffsetDateTime,
    },
    #[error("the CA {ca:?} is not valid until {}", crate::timefmt::rfc3339(*not_before))]
    CaNotYetValid {
        ca: String,
        not_before: OffsetDateTime,
    },
    #[error("expired at {}", crate::timefmt::rfc3339(*not_after))]
    Expired { not_after: OffsetDateTime },
    #[error("not valid until {}", crate::timefmt::rfc3339(*not_before))]
    NotYetValid { not_before: OffsetDateTime },
    #[error("mesh IP {ip} is outside the CA network {network}")]
    OutsideNetwork { ip: Ipv4Addr, network: Ipv4Net },
    #[error("revoked at {} (serial {serial})", crate::timefmt::rfc3339(*revoked_at))]
    Revoked {
        serial: Serial,
        revoked_at: OffsetDateTime,
    },
    #[error("the revocation list was checked against another CA")]
    CrlFromOtherCa,
    #[error("has no WireGuard key extension")]
    MissingWireGuardKey,
}

/// Decides whether `cert` is trusted at `now` by `ca`, given the revocation list if there is one.
///
/// Checks, in order: the issuer and Ed25519 signature chain to `ca`; the CA's and the
/// certificate's validity windows; the mesh IP against the CA's network (the name constraint);
/// the revocation list; and the presence of the WireGuard key. Whoever then uses the peer's
/// WireGuard key must take it from this certificate.
pub fn verify(
    cert: &NodeCert,
    ca: &CaCert,
    crl: Option<&RevocationList>,
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    if cert.issuer_dn() != ca.subject_dn() {
        return Err(VerifyError::OtherCa {
            issuer: cert.issuer_name().to_owned(),
            ca: ca.name().to_owned(),
        });
    }
    if !cert.signed_by(ca.public_key()) {
        return Err(VerifyError::BadSignature {
            ca: ca.name().to_owned(),
        });
    }
    if now > ca.not_after() {
        return Err(VerifyError::CaExpired {
            ca: ca.name().to_owned(),
            not_after: ca.not_after(),
        });
    }
    if now < ca.not_before() {
        return Err(VerifyError::CaNotYetValid {
            ca: ca.name().to_owned(),
            not_before: ca.not_before(),
        });
    }
    if now > cert.not_after() {
        return Err(VerifyError::Expired {
            not_after: cert.not_after(),
        });
    }
    if now < cert.not_before() {
        return Err(VerifyError::NotYetValid {
            not_before: cert.not_before(),
        });
    }
    if !ca.network().contains(&cert.mesh_ip()) {
        return Err(VerifyError::OutsideNetwork {
            ip: cert.mesh_ip(),
            network: ca.network(),
        });
    }
    if let Some(crl) = crl {
        if crl.ca_fingerprint() != ca.fingerprint() {
            return Err(VerifyError::CrlFromOtherCa);
        }
        if let Some(revoked_at) = crl.revoked_at(cert.serial()) {
            return Err(VerifyError::Revoked {
                serial: cert.serial().clone(),
                revoked_at,
            });
        }
    }
    if cert.wireguard_key().is_none() {
        return Err(VerifyError::MissingWireGuardKey);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;
    use crate::fixtures::{self, NOW};

    fn verdict(name: &str) -> Result<(), VerifyError> {
        verify(
            &fixtures::node(name),
            &fixtures::ca(),
            Some(&fixtures::crl()),
            NOW,
        )
    }

    #[test]
    fn healthy_certificates_are_trusted() {
        assert_eq!(verdict("alpha.crt"), Ok(()));
        assert_eq!(verdict("beta.crt"), Ok(()));
        let alpha = fixtures::node("alpha.crt");
        assert_eq!(verify(&alpha, &fixtures::ca(), None, NOW), Ok(()));
    }

    #[test]
    fn every_reason_for_refusal() {
        type Expectation = fn(&VerifyError) -> bool;
        let cases: [(&str, Expectation); 7] = [
            (
                "other-ca-node.crt",
                |e| matches!(e, VerifyError::OtherCa { issuer, .. } if issuer == "other-ca"),
            ),
            ("impostor-node.crt", |e| {
                matches!(e, VerifyError::BadSignature { .. })
            }),
            (
                "expired.crt",
                |e| matches!(e, VerifyError::Expired { not_after } if *not_after == datetime!(2026-02-01 0:00 UTC)),
            ),
            ("not-yet-valid.crt", |e| {
                matches!(e, VerifyError::NotYetValid { .. })
            }),
            (
                "outside-network.crt",
                |e| matches!(e, VerifyError::OutsideNetwork { ip, .. } if ip.octets() == [10, 99, 0, 1]),
            ),
            (
                "revoked.crt",
                |e| matches!(e, VerifyError::Revoked { revoked_at, .. } if *revoked_at == datetime!(2026-03-01 0:00 UTC)),
            ),
            ("no-wireguard.crt", |e| {
                matches!(e, VerifyError::MissingWireGuardKey)
            }),
        ];
        for (name, expected) in cases {
            let err = verdict(name).expect_err(name);
            assert!(expected(&err), "{name}: unexpected {err:?}");
        }
    }

    #[test]
    fn revocation_needs_the_list() {
        let revoked = fixtures::node("revoked.crt");
        assert_eq!(verify(&revoked, &fixtures::ca(), None, NOW), Ok(()));
    }

    #[test]
    fn time_is_an_argument() {
        let alpha = fixtures::node("alpha.crt");
        let ca = fixtures::ca();
        assert!(verify(&alpha, &ca, None, datetime!(2029-12-31 23:59 UTC)).is_ok());
        assert!(matches!(
            verify(&alpha, &ca, None, datetime!(2030-01-01 0:00:01 UTC)),
            Err(VerifyError::Expired { .. })
        ));
        assert!(matches!(
            verify(&alpha, &ca, None, datetime!(2036-06-01 0:00 UTC)),
            Err(VerifyError::CaExpired { .. })
        ));
        assert!(matches!(
            verify(&alpha, &ca, None, datetime!(2025-06-01 0:00 UTC)),
            Err(VerifyError::CaNotYetValid { .. })
        ));
    }

    #[test]
    fn a_list_checked_against_another_ca_is_refused() {
        let other_ca = CaCert::from_bytes(&fixtures::load("other-ca.crt")).unwrap();
        let other_crl =
            RevocationList::from_bytes(&fixtures::load("other-ca.crl"), &other_ca).unwrap();
        let alpha = fixtures::node("alpha.crt");
        assert_eq!(
            verify(&alpha, &fixtures::ca(), Some(&other_crl), NOW),
            Err(VerifyError::CrlFromOtherCa)
        );
    }
}
