//! Random and mutated bytes fed to every parser (PEM framing, certificates, keys, revocation
//! lists) must come back as errors, never as panics. Mutations start from the committed fixtures
//! so that they reach deep into the DER structures, not just the first byte check.

#![allow(clippy::unwrap_used)] // test helpers: a failed unwrap is a failed test

use std::path::Path;

use proptest::prelude::*;
use rma_ca::{CaCert, CaKey, NodeCert, NodeKeys, NodePublicKeys, RevocationList};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("testdata")
            .join(name),
    )
    .unwrap()
}

/// The DER inside a PEM fixture: its blocks back to back, as chains and lists travel.
fn der_of(name: &str) -> Vec<u8> {
    pem::parse_many(fixture(name))
        .unwrap()
        .iter()
        .flat_map(|block| block.contents().to_vec())
        .collect()
}

fn trusted_ca() -> CaCert {
    CaCert::from_bytes(&fixture("ca.crt")).unwrap()
}

/// Every parser in the crate, on the same input.
fn parse_everything(bytes: &[u8], ca: &CaCert) {
    let now = time::macros::datetime!(2026-06-01 12:00 UTC);
    if let Ok(cert) = NodeCert::from_bytes(bytes) {
        let _ = rma_ca::verify(&cert, ca, &[], now);
        let _ = cert.to_pem();
    }
    let _ = NodeCert::from_der(bytes);
    let _ = CaCert::from_bytes(bytes);
    if let Ok(issuing) = CaCert::issuing_from_bytes(bytes) {
        let _ = issuing.issued_by(ca);
    }
    if let Ok(crl) = RevocationList::from_bytes(bytes, ca) {
        let _ = crl.is_stale(now);
    }
    if let Ok(lists) = RevocationList::read_all(bytes, ca) {
        let _ = rma_ca::TrustStore::with_lists(ca.clone(), lists);
    }
    let _ = RevocationList::from_published_der(bytes, ca);
    let _ = NodeKeys::from_pem(bytes);
    let _ = NodePublicKeys::from_pem(bytes);
    let _ = CaKey::from_pem(bytes);
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { at: usize, mask: u8 },
    Truncate { at: usize },
    Insert { at: usize, byte: u8 },
    Remove { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..=255u8).prop_map(|(at, mask)| Mutation::Flip { at, mask }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        (any::<usize>(), any::<u8>()).prop_map(|(at, byte)| Mutation::Insert { at, byte }),
        any::<usize>().prop_map(|at| Mutation::Remove { at }),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Flip { at, mask } => {
                if let Some(b) = bytes.get_mut(at % len) {
                    *b ^= mask;
                }
            }
            Mutation::Truncate { at } => bytes.truncate(at % len),
            Mutation::Insert { at, byte } => bytes.insert(at % (bytes.len() + 1), byte),
            Mutation::Remove { at } => {
                if !bytes.is_empty() {
                    bytes.remove(at % len);
                }
            }
        }
    }
    bytes
}

const PEM_FIXTURES: [&str; 10] = [
    "alpha.crt",
    "gamma-chain.crt",
    "issuing.crt",
    "lists.crl",
    "ca.crt",
    "revoked.crl",
    "alpha.key",
    "alpha.pub",
    "ca.key",
    "no-wireguard.crt",
];
const DER_FIXTURES: [&str; 5] = [
    "alpha.crt",
    "ca.crt",
    "revoked.crl",
    "gamma-chain.crt",
    "issuing.crt",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        parse_everything(&bytes, &trusted_ca());
    }

    #[test]
    fn random_text_in_pem_armour(
        label in prop_oneof![Just("CERTIFICATE"), Just("PRIVATE KEY"), Just("PUBLIC KEY"), Just("X509 CRL")],
        body in proptest::collection::vec(any::<u8>(), 0..600),
    ) {
        let text = pem::encode(&pem::Pem::new(label, body));
        parse_everything(text.as_bytes(), &trusted_ca());
    }

    #[test]
    fn mutated_der(
        which in 0..DER_FIXTURES.len(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(der_of(DER_FIXTURES[which]), &mutations);
        parse_everything(&bytes, &trusted_ca());
        // Re-armoured, so the mutated DER also goes through the PEM path of every parser.
        let armoured = pem::encode(&pem::Pem::new("CERTIFICATE", bytes.clone()));
        parse_everything(armoured.as_bytes(), &trusted_ca());
    }

    #[test]
    fn mutated_pem_files(
        which in 0..PEM_FIXTURES.len(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let bytes = apply(fixture(PEM_FIXTURES[which]), &mutations);
        parse_everything(&bytes, &trusted_ca());
    }

    #[test]
    fn mutated_key_contents(
        which in 0..3usize,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let (name, tag) = [("alpha.key", "PRIVATE KEY"), ("alpha.pub", "PUBLIC KEY"), ("ca.key", "PRIVATE KEY")][which];
        let blocks: Vec<pem::Pem> = pem::parse_many(fixture(name))
            .unwrap()
            .into_iter()
            .map(|b| pem::Pem::new(tag, apply(b.into_contents(), &mutations)))
            .collect();
        parse_everything(pem::encode_many(&blocks).as_bytes(), &trusted_ca());
    }
}
