//! Root → issuing CA → node chains: what every verifier accepts and refuses, how lists of
//! both CAs apply, and the trust store's bound on issuing CAs' lists over simulated months.

use std::net::Ipv4Addr;

use time::Duration;
use time::macros::datetime;

use crate::fixtures::{self, NOW};
use crate::issue::{self, CaParams};
use crate::test_ca::TestCa;
use crate::{
    CaCert, CaCertError, CaKey, CrlOffer, IssueError, NodeCert, Refusal, RevocationList, Serial,
    TrustStore, VerifyError, verify,
};

const UPPER: &str = "10.42.128.0/17";
const IN_UPPER: Ipv4Addr = Ipv4Addr::new(10, 42, 128, 7);

fn issuer_problem(result: Result<(), VerifyError>) -> VerifyError {
    match result {
        Err(VerifyError::Issuer { problem, .. }) => *problem,
        other => panic!("expected a refusal of the issuing CA, got {other:?}"),
    }
}

#[test]
fn a_chain_through_an_issuing_ca_is_trusted_and_round_trips() {
    let gamma = fixtures::node("gamma-chain.crt");
    let issuing = gamma.issuing_ca().expect("presented with its issuing CA");
    assert_eq!(issuing.name(), "rma-test-issuing");
    assert_eq!(issuing.path_len(), Some(0));
    assert!(!issuing.is_self_signed() && issuing.issued_by(&fixtures::ca()));
    assert_eq!(gamma.issuer_name(), "rma-test-issuing");
    assert_eq!(verify(&gamma, &fixtures::ca(), &[], NOW), Ok(()));
    let lists = RevocationList::read_all(&fixtures::load("lists.crl"), &fixtures::ca()).unwrap();
    assert_eq!(lists.len(), 2, "the root's list and the issuing CA's");
    let refs: Vec<&RevocationList> = lists.iter().collect();
    assert_eq!(verify(&gamma, &fixtures::ca(), &refs, NOW), Ok(()));

    // The chain travels as DER back to back, and as two PEM blocks.
    assert_eq!(NodeCert::from_der(&gamma.chain_der()).unwrap(), gamma);
    assert_eq!(
        NodeCert::from_bytes(gamma.to_pem().as_bytes()).unwrap(),
        gamma
    );
    assert_eq!(gamma.fingerprint(), crate::Fingerprint::of(gamma.der()));
    // Without its issuing CA the leaf names an issuer the root is not.
    let leaf = NodeCert::from_der(gamma.der()).unwrap();
    assert!(matches!(
        verify(&leaf, &fixtures::ca(), &[], NOW),
        Err(VerifyError::OtherCa { .. })
    ));
    // `--untrusted`: the issuing CA supplied separately, and only the one that signed it.
    let rejoined = leaf.clone().with_issuing_ca(issuing.clone()).unwrap();
    assert_eq!(rejoined, gamma);
    let other = TestCa::new("rma-test").issuing("rma-test-issuing", UPPER);
    assert!(leaf.with_issuing_ca(other.ca).is_err());
}

#[test]
fn an_issuing_ca_is_refused_for_every_reason_a_root_would_refuse_it() {
    let root = TestCa::new("root");
    let issuing = root.issuing("enroll", UPPER);
    let (cert, _) = issuing.node("n1", IN_UPPER);
    let at = root.start;
    assert_eq!(verify(&cert, &root.ca, &[], at), Ok(()));

    // Another root of the same name, and another root's issuing CA.
    let stranger = TestCa::new("root");
    assert!(matches!(
        issuer_problem(verify(&cert, &stranger.ca, &[], at)),
        VerifyError::BadSignature { .. }
    ));
    let elsewhere = TestCa::new("elsewhere");
    assert!(matches!(
        issuer_problem(verify(&cert, &elsewhere.ca, &[], at)),
        VerifyError::OtherCa { .. }
    ));

    // Its validity: before, after.
    let late = at + Duration::days(91);
    assert!(matches!(
        issuer_problem(verify(&cert, &root.ca, &[], late)),
        VerifyError::Expired { .. }
    ));
    let short = root.issuing_valid("brief", UPPER, at, at + Duration::days(60));
    let (early, _) = short.node_valid("n2", IN_UPPER, at, at + Duration::days(10));
    assert!(matches!(
        issuer_problem(verify(&early, &root.ca, &[], at - Duration::hours(1))),
        VerifyError::NotYetValid { .. }
    ));

    // Revoked by the root's list.
    let revoking = root.crl_revoking_cas(1, &[&issuing.ca]);
    assert!(matches!(
        issuer_problem(verify(&cert, &root.ca, &[&revoking], at)),
        VerifyError::Revoked { .. }
    ));

    // A node outside the issuing CA's network, though inside the root's.
    let outside = sign_at(&issuing.ca, issuing.key(), Ipv4Addr::new(10, 42, 0, 9));
    assert!(matches!(
        verify(&outside, &root.ca, &[], at),
        Err(VerifyError::OutsideNetwork { .. })
    ));

    // Revoked by the issuing CA's own list; a list of an unrelated CA is a caller's mistake.
    let own = issuing.crl(1, &[&cert]);
    assert!(matches!(
        verify(&cert, &root.ca, &[&own], at),
        Err(VerifyError::Revoked { .. })
    ));
    let unrelated = root.issuing("other", UPPER).crl(1, &[]);
    assert_eq!(
        verify(&cert, &root.ca, &[&unrelated], at),
        Err(VerifyError::CrlFromOtherCa)
    );
}

/// What the signing side refuses, a verifier refuses too when it meets one made anyway.
#[test]
fn a_root_of_path_length_zero_or_a_network_outside_it_is_refused_on_both_sides() {
    let key = CaKey::generate();
    let params = |name: &str, network: &str| CaParams {
        name: name.parse().unwrap(),
        network: network.parse().unwrap(),
        not_before: datetime!(2026-01-01 0:00 UTC),
        not_after: datetime!(2030-01-01 0:00 UTC),
        serial: Serial::random(),
        groups: None,
    };
    let old_root = issue::self_sign_with_path_len(&key, &params("old", "10.42.0.0/16"), 0).unwrap();
    assert!(!old_root.may_sign_cas());
    let issuing_key = CaKey::generate();
    let err = issue::sign_issuing_ca(
        &old_root,
        &key,
        &issuing_key.verifying_key(),
        &params("enroll", UPPER),
    )
    .unwrap_err();
    assert!(
        matches!(err, IssueError::RootSignsNodesOnly { .. }),
        "{err}"
    );
    let forced = issue::sign_ca_unchecked(
        &old_root,
        &key,
        &issuing_key.verifying_key(),
        &params("enroll", UPPER),
        0,
    )
    .unwrap();
    let node = sign_in(&forced, &issuing_key);
    assert!(matches!(
        issuer_problem(verify(&node, &old_root, &[], NOW)),
        VerifyError::RootSignsNodesOnly { .. }
    ));

    let root = issue::self_sign_ca(&key, &params("root", "10.42.0.0/16")).unwrap();
    let err = issue::sign_issuing_ca(
        &root,
        &key,
        &issuing_key.verifying_key(),
        &params("wide", "10.0.0.0/8"),
    )
    .unwrap_err();
    assert!(
        matches!(err, IssueError::NetworkOutsideRoot { .. }),
        "{err}"
    );
    let wide = issue::sign_ca_unchecked(
        &root,
        &key,
        &issuing_key.verifying_key(),
        &params("wide", "10.0.0.0/8"),
        0,
    )
    .unwrap();
    let node = sign_in(&wide, &issuing_key);
    assert!(matches!(
        issuer_problem(verify(&node, &root, &[], NOW)),
        VerifyError::NetworkOutsideRoot { .. }
    ));
    // An issuing CA is not a root, and a root is not an issuing CA.
    assert_eq!(
        CaCert::from_der(wide.der()).unwrap_err(),
        CaCertError::NotSelfSigned
    );
    assert_eq!(
        CaCert::issuing_from_der(root.der()).unwrap_err(),
        CaCertError::SelfSigned
    );
}

fn sign_in(ca: &CaCert, key: &CaKey) -> NodeCert {
    sign_at(ca, key, IN_UPPER)
}

/// Signs a node at `mesh_ip` without the checks the CA makes.
fn sign_at(ca: &CaCert, key: &CaKey, mesh_ip: Ipv4Addr) -> NodeCert {
    let keys = crate::NodeKeys::generate();
    issue::sign_node_unchecked(
        ca,
        key,
        &crate::NodeCertParams {
            name: "n".parse().unwrap(),
            mesh_ip,
            groups: vec![],
            keys: keys.public(),
            not_before: ca.not_before(),
            not_after: ca.not_after(),
            serial: Serial::random(),
        },
        Some(&keys.public().wireguard),
    )
    .unwrap()
}

#[test]
fn the_store_applies_each_issuing_cas_list_to_its_own_nodes_only() {
    let root = TestCa::new("root");
    let (a, b) = (root.issuing("a", UPPER), root.issuing("b", UPPER));
    let (from_a, _) = a.node("na", IN_UPPER);
    let (from_b, _) = b.node("nb", Ipv4Addr::new(10, 42, 128, 8));
    let (direct, _) = root.node("nd", Ipv4Addr::new(10, 42, 0, 1));
    let at = root.start;
    let mut store = TrustStore::new(root.ca.clone(), None);
    for cert in [&from_a, &from_b, &direct] {
        assert!(
            store.accept(&cert.chain_der(), at).is_ok(),
            "{}",
            cert.name()
        );
    }

    // a's list, as it travels (list then a's certificate), revokes a's node only.
    let a_list = a.crl(1, &[&from_a]);
    assert_eq!(
        store.offer_der(&a_list.published_der(), at),
        Ok(CrlOffer::Replaced)
    );
    assert_eq!(store.offer(a_list.clone(), at), CrlOffer::NotNewer);
    assert!(matches!(
        store.accept(&from_a.chain_der(), at),
        Err(Refusal::Untrusted(VerifyError::Revoked { .. }))
    ));
    assert!(store.accept(&from_b.chain_der(), at).is_ok());
    assert!(store.accept(&direct.chain_der(), at).is_ok());
    assert_eq!(store.lists().count(), 1);

    // The root's list revokes b itself, and with it every node b signed.
    store.offer(root.crl_revoking_cas(1, &[&b.ca]), at);
    assert!(matches!(
        store.accept(&from_b.chain_der(), at),
        Err(Refusal::Untrusted(VerifyError::Issuer { .. }))
    ));
    assert!(store.accept(&direct.chain_der(), at).is_ok());
    assert_eq!(store.lists().count(), 2);

    // A list whose issuing CA another root signed never enters; nor one without its CA.
    let stranger = TestCa::new("root").issuing("a", UPPER);
    assert_eq!(store.offer(stranger.crl(5, &[]), at), CrlOffer::Unrelated);
    assert!(store.offer_der(stranger.crl(5, &[]).der(), at).is_err());
    assert!(
        store
            .offer_der(&stranger.crl(5, &[]).published_der(), at)
            .is_err()
    );
}

/// An issuing CA whose certificate the root renews (same name and key) is the same CA: its
/// list, whichever of its certificates travels with it, applies to nodes presented with
/// either, and a newer list under the new certificate replaces the older one.
#[test]
fn a_renewed_issuing_cas_list_applies_to_nodes_under_either_certificate() {
    let root = TestCa::new("root");
    let at = root.start;
    let first = root.issuing("enroll", UPPER);
    let renewed = root.renew_issuing(&first, at + Duration::days(200));
    assert_ne!(first.ca.fingerprint(), renewed.ca.fingerprint());
    assert_eq!(first.ca.identity(), renewed.ca.identity());
    let (old_node, _) = first.node("old", IN_UPPER);
    let (new_node, _) = renewed.node("new", Ipv4Addr::new(10, 42, 128, 8));
    let mut store = TrustStore::new(root.ca.clone(), None);
    // A list travelling with the first certificate revokes a node under the renewed one.
    assert_eq!(
        store.offer(first.crl(1, &[&new_node]), at),
        CrlOffer::Replaced
    );
    assert!(matches!(
        store.accept(&new_node.chain_der(), at),
        Err(Refusal::Untrusted(VerifyError::Revoked { .. }))
    ));
    assert!(store.accept(&old_node.chain_der(), at).is_ok());
    // The next list, under the renewed certificate, replaces it: one list for the one CA.
    assert_eq!(
        store.offer(renewed.crl(2, &[&old_node]), at),
        CrlOffer::Replaced
    );
    assert_eq!(store.offer(first.crl(1, &[]), at), CrlOffer::NotNewer);
    assert_eq!(store.lists().count(), 1);
    assert!(store.accept(&old_node.chain_der(), at).is_err());
    assert!(store.accept(&new_node.chain_der(), at).is_ok());
    // verify() takes the list with either certificate too.
    let list = renewed.crl(3, &[&old_node]);
    assert!(matches!(
        verify(&old_node, &root.ca, &[&list], at),
        Err(VerifyError::Revoked { .. })
    ));
}

/// Lists of issuing CAs are kept for at most [`crate::MAX_ISSUING_LISTS`] CAs; a CA that has
/// expired gives its place up. Forty weeks of an operator making a new issuing CA every week
/// (as long as the test root lasts), each valid for ninety days, never fill the store, and the
/// lists of live CAs stay in use.
#[test]
fn forty_weeks_of_weekly_issuing_cas_stay_within_the_bound() {
    let root = TestCa::with_network("root", "10.42.0.0/16");
    let mut store = TrustStore::new(root.ca.clone(), None);
    let mut live = Vec::new();
    for week in 0..40 {
        let now = root.start - Duration::days(29) + Duration::weeks(week);
        let issuing = root.issuing_valid(
            &format!("enroll-{week}"),
            UPPER,
            now,
            now + Duration::days(90),
        );
        assert_eq!(store.offer(issuing.crl(1, &[]), now), CrlOffer::Replaced);
        live.push(issuing);
        live.retain(|ca| ca.ca.not_after() >= now);
        assert!(store.lists().count() <= crate::MAX_ISSUING_LISTS);
        for ca in &live {
            assert!(
                store.issuing_list(&ca.ca.identity()).is_some(),
                "week {week}: the list of live {} is in use",
                ca.ca.name()
            );
        }
    }
    assert!(store.lists().count() <= 14, "{}", store.lists().count());
}

#[test]
fn the_bound_refuses_a_new_issuing_ca_only_while_every_kept_one_is_live() {
    let root = TestCa::new("root");
    let at = root.start;
    let mut store = TrustStore::new(root.ca.clone(), None);
    let short = |i: usize| root.issuing_valid(&format!("i{i}"), UPPER, at, at + Duration::days(1));
    for i in 0..crate::MAX_ISSUING_LISTS {
        assert_eq!(store.offer(short(i).crl(1, &[]), at), CrlOffer::Replaced);
    }
    let extra = root.issuing("extra", UPPER);
    assert_eq!(store.offer(extra.crl(1, &[]), at), CrlOffer::Full);
    let later = at + Duration::days(2);
    assert_eq!(store.offer(extra.crl(1, &[]), later), CrlOffer::Replaced);
    assert_eq!(
        store.lists().count(),
        1,
        "the expired ones gave their places up"
    );
}

/// An issuing CA signed for some groups gives only those: the root writes them into its
/// certificate, signing refuses another group, and a certificate that carries one anyway (made
/// around the check, as a compromised issuing CA could) is refused by every verifier. A renewal
/// of the CA keeps its groups; an issuing CA without the extension gives any group.
#[test]
fn an_issuing_ca_gives_only_the_groups_the_root_signed_it_for() {
    let root = TestCa::new("root");
    let now = root.start;
    let issuing = root.issuing_for_groups("enroll", UPPER, &["workers", "gpu"]);
    let permitted = |ca: &CaCert| -> Vec<String> {
        ca.permitted_groups()
            .expect("permitted groups")
            .iter()
            .map(|g| g.as_str().to_owned())
            .collect()
    };
    let reread = CaCert::issuing_from_der(issuing.ca.der()).unwrap();
    assert_eq!(permitted(&reread), ["gpu", "workers"]);

    let (worker, _) = issuing.node_in("w1", IN_UPPER, "gpu,workers");
    assert_eq!(verify(&worker, &root.ca, &[], now), Ok(()));

    let keys = crate::NodeKeys::generate();
    let params = |groups: &str| crate::NodeCertParams {
        name: "w2".parse().unwrap(),
        mesh_ip: Ipv4Addr::new(10, 42, 128, 8),
        groups: crate::Group::parse_list(groups).unwrap(),
        keys: keys.public(),
        not_before: now - Duration::days(1),
        not_after: now + Duration::days(30),
        serial: Serial::random(),
    };
    let refused = issue::sign_node(&issuing.ca, issuing.key(), &params("workers,routerd"));
    assert!(
        matches!(&refused, Err(IssueError::GroupNotPermitted { group, .. }) if group == "routerd"),
        "{refused:?}"
    );
    let forged = issue::sign_node_unchecked(
        &issuing.ca,
        issuing.key(),
        &params("workers,routerd"),
        Some(&keys.public().wireguard),
    )
    .unwrap();
    assert_eq!(
        verify(&forged, &root.ca, &[], now),
        Err(VerifyError::GroupNotPermitted {
            group: "routerd".into(),
            ca: "enroll".into()
        })
    );
    let store = TrustStore::new(root.ca.clone(), None);
    assert!(store.accept(&forged.chain_der(), now).is_err());

    let renewed = root.renew_issuing(&issuing, now + Duration::days(80));
    assert_eq!(permitted(&renewed.ca), ["gpu", "workers"]);

    let open = root.issuing("open", "10.42.64.0/18");
    assert!(open.ca.permitted_groups().is_none());
    let (anyone, _) = open.node_in("r1", Ipv4Addr::new(10, 42, 64, 9), "routerd");
    assert_eq!(verify(&anyone, &root.ca, &[], now), Ok(()));
}
