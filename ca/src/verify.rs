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
    #[error("issuing CA {issuer:?}: {problem}")]
    Issuer {
        issuer: String,
        problem: Box<VerifyError>,
    },
    #[error("the root CA {ca:?} has path length 0: it may not have issuing CAs")]
    RootSignsNodesOnly { ca: String },
    #[error("network {network} is outside the root CA network {root}")]
    NetworkOutsideRoot { network: Ipv4Net, root: Ipv4Net },
    #[error("group {group:?} is not one its CA {ca:?} may give")]
    GroupNotPermitted { group: String, ca: String },
}

/// Decides whether `cert` is trusted at `now` by the root `root`, given the revocation lists
/// in `crls` (the root's, and the issuing CA's when one signed the certificate).
///
/// A certificate the root signed is checked against the root. One presented with an issuing CA
/// is checked against that CA, and the CA against the root first: its signature, that the root
/// may sign CAs (path length), its validity, its network inside the root's, and the root's
/// revocation list. Each check, in order: the issuer and Ed25519 signature; the CA's and the
/// certificate's validity windows; the mesh IP against the CA's network (the name constraint);
/// the groups against the CA's permitted groups, if it has them; the revocation list of the CA
/// that signed; and the presence of the WireGuard key. Whoever
/// then uses the peer's WireGuard key must take it from this certificate.
///
/// A list of any other CA is refused ([`VerifyError::CrlFromOtherCa`]): it would be a mistake
/// of the caller's to think it applies.
pub fn verify(
    cert: &NodeCert,
    root: &CaCert,
    crls: &[&RevocationList],
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    let signer = cert.issuing_ca().unwrap_or(root);
    for crl in crls {
        let ca = crl.ca_identity();
        if ca != root.identity() && ca != signer.identity() {
            return Err(VerifyError::CrlFromOtherCa);
        }
    }
    let list_of = |ca: &CaCert| {
        crls.iter()
            .copied()
            .find(|crl| crl.ca_identity() == ca.identity())
    };
    if let Some(issuing) = cert.issuing_ca() {
        verify_issuing(issuing, root, list_of(root), now).map_err(|problem| {
            VerifyError::Issuer {
                issuer: issuing.name().to_owned(),
                problem: Box::new(problem),
            }
        })?;
    }
    verify_signed_by(cert, signer, list_of(signer), now)
}

/// An issuing CA against the root: signed by it, allowed by its path length, valid at `now`,
/// inside its network, and not on its revocation list.
fn verify_issuing(
    issuing: &CaCert,
    root: &CaCert,
    crl: Option<&RevocationList>,
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    if !issuing.issued_by(root) {
        return Err(if issuing.issuer_name() == root.name() {
            VerifyError::BadSignature {
                ca: root.name().to_owned(),
            }
        } else {
            VerifyError::OtherCa {
                issuer: issuing.issuer_name(),
                ca: root.name().to_owned(),
            }
        });
    }
    if !root.may_sign_cas() {
        return Err(VerifyError::RootSignsNodesOnly {
            ca: root.name().to_owned(),
        });
    }
    valid_at(root, now)?;
    window(issuing.not_before(), issuing.not_after(), now)?;
    let (network, outer) = (issuing.network(), root.network());
    if !outer.contains(&network) {
        return Err(VerifyError::NetworkOutsideRoot {
            network,
            root: outer,
        });
    }
    if let Some(revoked_at) = crl.and_then(|crl| crl.revoked_at(issuing.serial())) {
        return Err(VerifyError::Revoked {
            serial: issuing.serial().clone(),
            revoked_at,
        });
    }
    Ok(())
}

/// A certificate's own validity window at `now`.
fn window(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<(), VerifyError> {
    if now > not_after {
        return Err(VerifyError::Expired { not_after });
    }
    if now < not_before {
        return Err(VerifyError::NotYetValid { not_before });
    }
    Ok(())
}

fn valid_at(ca: &CaCert, now: OffsetDateTime) -> Result<(), VerifyError> {
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
    Ok(())
}

/// A node certificate against the CA that signed it, and that CA's list.
fn verify_signed_by(
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
    valid_at(ca, now)?;
    window(cert.not_before(), cert.not_after(), now)?;
    if !ca.network().contains(&cert.mesh_ip()) {
        return Err(VerifyError::OutsideNetwork {
            ip: cert.mesh_ip(),
            network: ca.network(),
        });
    }
    if let Some(group) = cert.groups().iter().find(|g| !ca.permits_group(g)) {
        return Err(VerifyError::GroupNotPermitted {
            group: group.as_str().to_owned(),
            ca: ca.name().to_owned(),
        });
    }
    if let Some(revoked_at) = crl.and_then(|crl| crl.revoked_at(cert.serial())) {
        return Err(VerifyError::Revoked {
            serial: cert.serial().clone(),
            revoked_at,
        });
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
            &[&fixtures::crl()],
            NOW,
        )
    }

    #[test]
    fn healthy_certificates_are_trusted() {
        assert_eq!(verdict("alpha.crt"), Ok(()));
        assert_eq!(verdict("beta.crt"), Ok(()));
        let alpha = fixtures::node("alpha.crt");
        assert_eq!(verify(&alpha, &fixtures::ca(), &[], NOW), Ok(()));
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
        assert_eq!(verify(&revoked, &fixtures::ca(), &[], NOW), Ok(()));
    }

    #[test]
    fn time_is_an_argument() {
        let alpha = fixtures::node("alpha.crt");
        let ca = fixtures::ca();
        assert!(verify(&alpha, &ca, &[], datetime!(2029-12-31 23:59 UTC)).is_ok());
        assert!(matches!(
            verify(&alpha, &ca, &[], datetime!(2030-01-01 0:00:01 UTC)),
            Err(VerifyError::Expired { .. })
        ));
        assert!(matches!(
            verify(&alpha, &ca, &[], datetime!(2036-06-01 0:00 UTC)),
            Err(VerifyError::CaExpired { .. })
        ));
        assert!(matches!(
            verify(&alpha, &ca, &[], datetime!(2025-06-01 0:00 UTC)),
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
            verify(&alpha, &fixtures::ca(), &[&other_crl], NOW),
            Err(VerifyError::CrlFromOtherCa)
        );
    }
}
