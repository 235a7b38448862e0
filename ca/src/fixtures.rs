//! The committed fixture set in `ca/testdata`, and the generator that remakes it.
//!
//! Keys come from fixed bytes, serials and times are fixed, and Ed25519 signatures are
//! deterministic, so generating twice gives identical bytes. `fixtures_are_current` checks the
//! committed files against a fresh generation; `make testdata` rewrites them
//! (RMA_REGENERATE_TESTDATA=1). Tests judge the fixtures at [`NOW`].

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use time::OffsetDateTime;
use time::macros::datetime;

use crate::issue::{self, CaParams, CrlParams, NodeCertParams, sign_node_unchecked};
use crate::{CaCert, CaKey, Group, NodeCert, NodeKeys, RevocationList, Serial};

/// The moment at which the fixtures are judged.
pub(crate) const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

pub(crate) fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata")
}

/// Reads one committed fixture.
pub(crate) fn load(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn ca() -> CaCert {
    CaCert::from_bytes(&load("ca.crt")).expect("fixture ca.crt parses")
}

pub(crate) fn node(name: &str) -> NodeCert {
    NodeCert::from_bytes(&load(name)).unwrap_or_else(|e| panic!("fixture {name}: {e}"))
}

pub(crate) fn crl() -> RevocationList {
    RevocationList::from_bytes(&load("revoked.crl"), &ca()).expect("fixture revoked.crl verifies")
}

fn make_ca(secret: u8, name: &str, serial: u8) -> (CaKey, CaCert) {
    let key = CaKey::from_secret([secret; 32]);
    let cert = issue::self_sign_ca(
        &key,
        &CaParams {
            name: name.parse().expect("fixture CA name"),
            network: "10.42.0.0/16".parse().expect("fixture network"),
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2036-01-01 0:00 UTC),
            serial: Serial::from_be_bytes(&[serial]),
            groups: None,
        },
    )
    .expect("fixture CA signs");
    (key, cert)
}

struct Node<'a> {
    name: &'a str,
    ip: [u8; 4],
    groups: &'a str,
    secret: u8,
    serial: u8,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
}

impl Node<'_> {
    const VALID_FROM: OffsetDateTime = datetime!(2026-01-01 0:00 UTC);
    const VALID_TO: OffsetDateTime = datetime!(2030-01-01 0:00 UTC);

    fn keys(&self) -> NodeKeys {
        NodeKeys::from_secrets([self.secret; 32], [self.secret.wrapping_add(100); 32])
    }

    fn params(&self) -> NodeCertParams {
        NodeCertParams {
            name: self.name.parse().expect("fixture node name"),
            mesh_ip: Ipv4Addr::from(self.ip),
            groups: Group::parse_list(self.groups).expect("fixture groups"),
            keys: self.keys().public(),
            not_before: self.not_before,
            not_after: self.not_after,
            serial: Serial::from_be_bytes(&[0x10, self.serial]),
        }
    }

    /// Signs without the checks `sign_node` makes, so invalid certificates can be made too.
    fn sign(&self, ca: &CaCert, key: &CaKey, with_wireguard: bool) -> Vec<u8> {
        let params = self.params();
        let wireguard = with_wireguard.then_some(&params.keys.wireguard);
        sign_node_unchecked(ca, key, &params, wireguard)
            .expect("fixture node signs")
            .to_pem()
            .into_bytes()
    }
}

fn spec(name: &'static str, ip: [u8; 4], secret: u8) -> Node<'static> {
    Node {
        name,
        ip,
        groups: "",
        secret,
        serial: secret,
        not_before: Node::VALID_FROM,
        not_after: Node::VALID_TO,
    }
}

/// Every fixture file, by name.
pub(crate) fn generate() -> BTreeMap<&'static str, Vec<u8>> {
    let (ca_key, ca) = make_ca(1, "rma-test", 1);
    let (other_key, other_ca) = make_ca(2, "other-ca", 2);
    let (impostor_key, impostor_ca) = make_ca(3, "rma-test", 3);

    let alpha = Node {
        groups: "workers,gpu",
        ..spec("alpha", [10, 42, 0, 1], 11)
    };
    let revoked = spec("revoked", [10, 42, 0, 3], 13);
    let mut files = BTreeMap::new();
    files.insert("ca.crt", ca.to_pem().into_bytes());
    files.insert("ca.key", ca_key.to_pem().as_bytes().to_vec());
    files.insert("other-ca.crt", other_ca.to_pem().into_bytes());
    files.insert("impostor-ca.crt", impostor_ca.to_pem().into_bytes());
    files.insert("alpha.key", alpha.keys().to_pem().as_bytes().to_vec());
    files.insert("alpha.pub", alpha.keys().public().to_pem().into_bytes());
    let alpha_pem = alpha.sign(&ca, &ca_key, true);
    files.insert("alpha.crt", alpha_pem.clone());
    files.insert(
        "beta.crt",
        Node {
            groups: "workers",
            ..spec("beta", [10, 42, 0, 2], 12)
        }
        .sign(&ca, &ca_key, true),
    );
    files.insert("revoked.crt", revoked.sign(&ca, &ca_key, true));
    let expired = Node {
        not_after: datetime!(2026-02-01 0:00 UTC),
        ..spec("expired", [10, 42, 0, 4], 14)
    };
    files.insert("expired.crt", expired.sign(&ca, &ca_key, true));
    let future = Node {
        not_before: datetime!(2029-01-01 0:00 UTC),
        ..spec("future", [10, 42, 0, 5], 15)
    };
    files.insert("not-yet-valid.crt", future.sign(&ca, &ca_key, true));
    let outside = spec("outside", [10, 99, 0, 1], 16);
    files.insert("outside-network.crt", outside.sign(&ca, &ca_key, true));
    let no_wireguard = spec("nowg", [10, 42, 0, 7], 17);
    files.insert("no-wireguard.crt", no_wireguard.sign(&ca, &ca_key, false));
    let stranger = spec("stranger", [10, 42, 0, 8], 18);
    files.insert(
        "other-ca-node.crt",
        stranger.sign(&other_ca, &other_key, true),
    );
    let impostor = spec("impostor", [10, 42, 0, 9], 19);
    files.insert(
        "impostor-node.crt",
        impostor.sign(&impostor_ca, &impostor_key, true),
    );

    let crl = issue::sign_crl(
        &ca,
        &ca_key,
        &CrlParams {
            number: 1,
            this_update: datetime!(2026-03-01 0:00 UTC),
            next_update: datetime!(2036-01-01 0:00 UTC),
            revoked: vec![(revoked.params().serial, datetime!(2026-03-01 0:00 UTC))],
        },
    )
    .expect("fixture CRL signs");
    files.insert("revoked.crl", crl.to_pem().into_bytes());
    let other_crl = issue::sign_crl(
        &other_ca,
        &other_key,
        &CrlParams {
            number: 1,
            this_update: datetime!(2026-03-01 0:00 UTC),
            next_update: datetime!(2036-01-01 0:00 UTC),
            revoked: vec![],
        },
    )
    .expect("fixture CRL signs");
    files.insert("other-ca.crl", other_crl.to_pem().into_bytes());

    // An issuing CA for the upper half of the network, a node it signed (presented with the
    // issuing CA's certificate), and its list with the root's list in one file.
    let issuing_key = CaKey::from_secret([4; 32]);
    let issuing = issue::sign_issuing_ca(
        &ca,
        &ca_key,
        &issuing_key.verifying_key(),
        &CaParams {
            name: "rma-test-issuing".parse().expect("fixture issuing CA name"),
            network: "10.42.128.0/17".parse().expect("fixture issuing network"),
            not_before: datetime!(2026-01-01 0:00 UTC),
            not_after: datetime!(2031-01-01 0:00 UTC),
            serial: Serial::from_be_bytes(&[4]),
            groups: None,
        },
    )
    .expect("fixture issuing CA signs");
    files.insert("issuing.crt", issuing.to_pem().into_bytes());
    let gamma = Node {
        groups: "workers",
        ..spec("gamma", [10, 42, 128, 1], 20)
    };
    files.insert("gamma-chain.crt", gamma.sign(&issuing, &issuing_key, true));
    let issuing_crl = issue::sign_crl(
        &issuing,
        &issuing_key,
        &CrlParams {
            number: 1,
            this_update: datetime!(2026-03-01 0:00 UTC),
            next_update: datetime!(2031-01-01 0:00 UTC),
            revoked: vec![],
        },
    )
    .expect("fixture issuing CRL signs");
    files.insert(
        "lists.crl",
        format!("{}{}", crl.to_pem(), issuing_crl.to_pem()).into_bytes(),
    );

    let alpha_der = NodeCert::from_bytes(&alpha_pem)
        .expect("alpha parses")
        .der()
        .to_vec();
    files.insert("truncated.der", alpha_der[..alpha_der.len() / 2].to_vec());
    let mut corrupt = String::from_utf8(alpha_pem).expect("PEM is text");
    corrupt.replace_range(100..110, "!!!!!!!!!!");
    files.insert("corrupt.pem", corrupt.into_bytes());
    files
}

#[test]
fn fixtures_are_current() {
    let fresh = generate();
    if std::env::var_os("RMA_REGENERATE_TESTDATA").is_some() {
        std::fs::create_dir_all(dir()).expect("create testdata");
        for (name, bytes) in &fresh {
            std::fs::write(dir().join(name), bytes).expect("write fixture");
        }
        return;
    }
    assert_eq!(fresh, generate(), "the generator must be deterministic");
    for (name, bytes) in &fresh {
        assert!(
            &load(name) == bytes,
            "testdata/{name} is stale; run `make testdata` and commit the result"
        );
    }
}
