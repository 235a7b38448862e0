//! The enrollment service's decisions over simulated time: joins, refusals, renewals, and the
//! bounds on what a token holder can make it keep.

use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use crate::authority::{Authority, IssuingScope};
use crate::enrollment::{EnrollError, Enrollment, Signed200, TokenTerms};
use crate::join::{self, AnswerError, JoinRequest, RenewRequest};
use crate::proof::{self, Signed};
use crate::tokens::{JoinToken, MAX_REFUSALS_KEPT};
use crate::{Group, NodeKeys, verify};

const NOW: OffsetDateTime = datetime!(2026-06-01 12:00 UTC);

const BUNDLE: &str = "listen = \"0.0.0.0:4242\"\n\n[[lighthouse]]\nname = \"lighthouse-1\"\naddress = \"192.0.2.1:4243\"\n";

struct Pki {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    root: Authority,
    service: Enrollment,
}

fn pki() -> Pki {
    let root_dir = tempfile::tempdir().unwrap();
    let mut root = Authority::init(
        root_dir.path(),
        "lab".parse().unwrap(),
        "10.42.0.0/16".parse().unwrap(),
        Duration::days(3650),
        NOW,
    )
    .unwrap();
    let issuing_dir = tempfile::tempdir().unwrap();
    let dir = issuing_dir.path();
    let public = Authority::init_issuing(dir).unwrap();
    let cert = root
        .sign_ca(&public, enroll_scope(), None, false, NOW, |_| Ok(()))
        .unwrap();
    Authority::install_issuing(
        dir,
        cert.to_pem().as_bytes(),
        root.ca().to_pem().as_bytes(),
        false,
    )
    .unwrap();
    std::fs::create_dir(dir.join("bundles")).unwrap();
    std::fs::write(dir.join("bundles/default.toml"), BUNDLE).unwrap();
    let service = Enrollment::open(dir, None, Duration::days(30)).unwrap();
    Pki {
        _dirs: (root_dir, issuing_dir),
        root,
        service,
    }
}

/// The issuing CA's scope in these tests: the upper half of the mesh, group `workers` only.
fn enroll_scope() -> IssuingScope {
    IssuingScope {
        name: "enroll".parse().unwrap(),
        network: "10.42.128.0/17".parse().unwrap(),
        groups: Some(Group::parse_list("workers").unwrap()),
    }
}

fn terms(uses: u32, ttl: Duration) -> TokenTerms {
    TokenTerms {
        groups: Group::parse_list("workers").unwrap(),
        name_prefix: "worker-".into(),
        uses,
        ttl,
        bundle: "default".into(),
    }
}

fn token(pki: &mut Pki, uses: u32, ttl: Duration) -> JoinToken {
    let mut authority = Authority::open(pki.service.authority().dir()).unwrap();
    authority.create_token(&terms(uses, ttl), NOW).unwrap()
}

/// A join request's body and signed headers, as `meshd join` makes them.
fn join_body(token: &str, name: &str, keys: &NodeKeys) -> Vec<u8> {
    serde_json::to_vec(&JoinRequest {
        token: token.to_owned(),
        name: name.to_owned(),
        public: keys.public().to_pem(),
    })
    .unwrap()
}

fn post(
    service: &mut Enrollment,
    path: &str,
    body: &[u8],
    signer: &NodeKeys,
    now: OffsetDateTime,
) -> Result<Signed200, EnrollError> {
    let headers = proof::signed_headers(signer, "POST", path, proof::unix_ms(now), body);
    let signed = Signed::from_headers(&headers);
    if path == join::JOIN_PATH {
        service.join(signed, body, now)
    } else {
        service.renew(signed, body, now)
    }
}

fn join(
    pki: &mut Pki,
    token: &JoinToken,
    name: &str,
    keys: &NodeKeys,
    now: OffsetDateTime,
) -> Result<Signed200, EnrollError> {
    let body = join_body(&token.credential.to_string(), name, keys);
    post(&mut pki.service, join::JOIN_PATH, &body, keys, now)
}

fn renew(
    pki: &mut Pki,
    cert: &crate::NodeCert,
    keys: &NodeKeys,
    now: OffsetDateTime,
) -> Result<Signed200, EnrollError> {
    let body = serde_json::to_vec(&RenewRequest {
        cert: cert.to_pem(),
    })
    .unwrap();
    post(&mut pki.service, join::RENEW_PATH, &body, keys, now)
}

fn check(
    answer: &Signed200,
    token: &JoinToken,
    keys: &NodeKeys,
    now: OffsetDateTime,
) -> Result<join::Checked, AnswerError> {
    join::check_answer(
        &answer.body,
        Some(answer.signature.as_bytes()),
        &token.root,
        keys,
        now,
    )
}

#[test]
fn a_token_enrolls_once_and_the_answer_checks_out_against_the_root_it_names() {
    let mut pki = pki();
    let token = token(&mut pki, 1, Duration::hours(24));
    assert_eq!(token.root, pki.root.ca().fingerprint());
    let keys = NodeKeys::generate();
    let answer = join(&mut pki, &token, "gpu-7", &keys, NOW).unwrap();
    let checked = check(&answer, &token, &keys, NOW).unwrap();
    // The prefix is put in front, the groups are the token's, the IP is the issuing CA's.
    assert_eq!(checked.name(), "worker-gpu-7");
    assert_eq!(
        checked.cert.groups(),
        &Group::parse_list("workers").unwrap()[..]
    );
    assert!(
        "10.42.128.0/17"
            .parse::<ipnet::Ipv4Net>()
            .unwrap()
            .contains(&checked.mesh_ip())
    );
    assert_eq!(checked.cert.not_after(), NOW + Duration::days(30));
    assert_eq!(checked.config, BUNDLE);
    assert_eq!(checked.root, *pki.root.ca());
    verify(
        &checked.cert,
        pki.root.ca(),
        &checked.lists.iter().collect::<Vec<_>>(),
        NOW,
    )
    .unwrap();
    assert_eq!(checked.lists.len(), 1, "a fresh list of the issuing CA");

    // Used up: a second machine is refused, and both uses are recorded.
    let other = NodeKeys::generate();
    let err = join(&mut pki, &token, "worker-8", &other, NOW).unwrap_err();
    assert!(matches!(err, EnrollError::TokenUsedUp { uses: 1 }), "{err}");
    assert_eq!(err.status(), 403);
    let uses = pki
        .service
        .authority()
        .token_uses(token.credential.id)
        .unwrap();
    assert_eq!(uses.len(), 2);
    assert_eq!(uses[0].fingerprint, Some(checked.cert.fingerprint()));
    assert_eq!(uses[0].name, "worker-gpu-7");
    assert_eq!(
        (uses[1].fingerprint, uses[1].outcome.as_str()),
        (None, "used-up")
    );
    let rows = pki.service.authority().tokens().unwrap();
    assert_eq!(rows[0].used, 1);
}

#[test]
fn every_refusal_is_clear_and_issues_nothing() {
    let mut pki = pki();
    let token = token(&mut pki, 5, Duration::hours(1));
    let keys = NodeKeys::generate();
    fn issued(pki: &Pki) -> usize {
        pki.service.authority().list().unwrap().len()
    }
    fn pki_dir(pki: &Pki) -> &std::path::Path {
        pki.service.authority().dir()
    }
    // Not JSON, or no token in it.
    let err = post(&mut pki.service, join::JOIN_PATH, b"{", &keys, NOW).unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    let body = join_body("nonsense", "a", &keys);
    let err = post(&mut pki.service, join::JOIN_PATH, &body, &keys, NOW).unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    // A token of another CA, and a wrong secret for a known id.
    let stranger = JoinToken::generate(token.root);
    let err = join(&mut pki, &stranger, "a", &keys, NOW).unwrap_err();
    assert!(matches!(err, EnrollError::UnknownToken), "{err}");
    assert_eq!(err.status(), 401);
    let guess = format!("{}_{}", token.credential.id, "00".repeat(16));
    let body = join_body(&guess, "a", &keys);
    let err = post(&mut pki.service, join::JOIN_PATH, &body, &keys, NOW).unwrap_err();
    assert!(matches!(err, EnrollError::UnknownToken), "{err}");
    // Signed by another key than the one the certificate would bind.
    let body = join_body(&token.credential.to_string(), "a", &keys);
    let err = post(
        &mut pki.service,
        join::JOIN_PATH,
        &body,
        &NodeKeys::generate(),
        NOW,
    )
    .unwrap_err();
    assert!(matches!(err, EnrollError::Proof(_)), "{err}");
    // A bad name.
    let err = join(&mut pki, &token, "no spaces", &keys, NOW).unwrap_err();
    assert_eq!(err.status(), 400, "{err}");
    // A name a live certificate holds.
    join(&mut pki, &token, "a", &keys, NOW).unwrap();
    let err = join(&mut pki, &token, "worker-a", &NodeKeys::generate(), NOW).unwrap_err();
    assert!(matches!(err, EnrollError::NameTaken { .. }), "{err}");
    assert_eq!(err.status(), 409);
    // Expired, then revoked.
    let later = NOW + Duration::hours(1);
    let err = join(&mut pki, &token, "b", &NodeKeys::generate(), later).unwrap_err();
    assert!(matches!(err, EnrollError::TokenExpired { .. }), "{err}");
    let fresh = self::token(&mut pki, 5, Duration::hours(1));
    let mut authority = Authority::open(pki_dir(&pki)).unwrap();
    let id = fresh.credential.id.to_string();
    assert_eq!(
        authority.revoke_token(&id[..6], NOW).unwrap(),
        fresh.credential.id
    );
    assert!(authority.revoke_token(&id, NOW).is_err(), "already revoked");
    let err = join(&mut pki, &fresh, "c", &NodeKeys::generate(), NOW).unwrap_err();
    assert!(matches!(err, EnrollError::TokenRevoked), "{err}");
    assert_eq!(issued(&pki), 1, "worker-a alone");
    let uses = pki
        .service
        .authority()
        .token_uses(token.credential.id)
        .unwrap();
    let outcomes: Vec<_> = uses.iter().map(|u| u.outcome.as_str()).collect();
    // A wrong secret is not the holder's: nothing is written for it.
    assert_eq!(
        outcomes,
        [
            "bad-proof",
            "bad-request",
            "issued",
            "name-taken",
            "expired"
        ]
    );
}

#[test]
fn answers_from_another_root_or_tampered_or_for_other_keys_are_refused() {
    let mut pki = pki();
    let token = token(&mut pki, 1, Duration::hours(1));
    let keys = NodeKeys::generate();
    let answer = join(&mut pki, &token, "a", &keys, NOW).unwrap();
    let mut other_root = token.clone();
    other_root.root = crate::Fingerprint::of(b"another root");
    assert!(matches!(
        check(&answer, &other_root, &keys, NOW),
        Err(AnswerError::WrongRoot { .. })
    ));
    assert!(matches!(
        check(&answer, &token, &NodeKeys::generate(), NOW),
        Err(AnswerError::OtherKeys)
    ));
    let mut tampered = answer.clone();
    let text = String::from_utf8(tampered.body).unwrap();
    tampered.body = text.replace("192.0.2.1", "192.0.2.9").into_bytes();
    assert!(matches!(
        check(&tampered, &token, &keys, NOW),
        Err(AnswerError::BadSignature)
    ));
    let unsigned = join::check_answer(&answer.body, None, &token.root, &keys, NOW);
    assert!(matches!(unsigned, Err(AnswerError::BadSignature)));
    assert!(matches!(
        join::check_answer(b"[]", None, &token.root, &keys, NOW),
        Err(AnswerError::Malformed(_))
    ));
}

#[test]
fn a_certificate_renews_itself_from_half_its_life_and_a_lost_answer_is_served_again() {
    let mut pki = pki();
    let token = token(&mut pki, 1, Duration::hours(1));
    let keys = NodeKeys::generate();
    let first = join(&mut pki, &token, "a", &keys, NOW).unwrap().cert;
    let err = renew(&mut pki, &first, &keys, NOW + Duration::days(10)).unwrap_err();
    assert!(matches!(err, EnrollError::TooEarly { .. }), "{err}");
    let at = NOW + Duration::days(20);
    let err = renew(&mut pki, &first, &NodeKeys::generate(), at).unwrap_err();
    assert!(matches!(err, EnrollError::Proof(_)), "{err}");
    let answer = renew(&mut pki, &first, &keys, at).unwrap();
    let renewed = check(&answer, &token, &keys, at).unwrap();
    assert!(
        renewed.config.is_empty(),
        "a renewal keeps the machine's config"
    );
    let second = renewed.cert;
    assert_ne!(second.fingerprint(), first.fingerprint());
    assert_eq!(
        (second.name(), second.mesh_ip(), second.groups()),
        (first.name(), first.mesh_ip(), first.groups())
    );
    assert_eq!(second.not_after(), at + Duration::days(30));
    // Asked again with the old certificate: the same replacement, nothing new issued.
    let again = renew(&mut pki, &first, &keys, at + Duration::minutes(1)).unwrap();
    assert_eq!(again.cert.fingerprint(), second.fingerprint());
    let count = pki.service.authority().list().unwrap().len();
    assert_eq!(count, 2);
    // Expired, revoked, or issued elsewhere: refused.
    let err = renew(&mut pki, &second, &keys, at + Duration::days(31)).unwrap_err();
    assert!(matches!(err, EnrollError::Expired { .. }), "{err}");
    let mut authority = Authority::open(pki.service.authority().dir()).unwrap();
    authority
        .revoke(&second.fingerprint().to_string(), None, at)
        .unwrap();
    let err = renew(&mut pki, &second, &keys, at + Duration::days(20)).unwrap_err();
    assert!(matches!(err, EnrollError::Revoked), "{err}");
    let (root_signed, root_keys) = {
        let mut request = crate::authority::SignRequest {
            name: "r".parse().unwrap(),
            ip: crate::authority::IpChoice::Auto,
            groups: vec![],
            keys: NodeKeys::generate().public(),
            duration: None,
            force: false,
        };
        let k = NodeKeys::generate();
        request.keys = k.public();
        (pki.root.sign(&request, NOW, |_| Ok(())).unwrap(), k)
    };
    let err = renew(&mut pki, &root_signed, &root_keys, at).unwrap_err();
    assert!(matches!(err, EnrollError::NotIssuedHere), "{err}");
}

#[test]
fn a_spent_token_hammered_for_a_simulated_week_keeps_a_bounded_record() {
    let mut pki = pki();
    let token = token(&mut pki, 2, Duration::days(2));
    let keys = NodeKeys::generate();
    join(&mut pki, &token, "a", &keys, NOW).unwrap();
    // Until it expires it still works for its second use; then every attempt is refused.
    let mut now = NOW;
    let mut issued = 1;
    for i in 0..2016 {
        now += Duration::minutes(5);
        let result = join(
            &mut pki,
            &token,
            &format!("n{i}"),
            &NodeKeys::generate(),
            now,
        );
        match result {
            Ok(_) => issued += 1,
            Err(e) => assert!(
                matches!(
                    e,
                    EnrollError::TokenUsedUp { .. } | EnrollError::TokenExpired { .. }
                ),
                "{e}"
            ),
        }
    }
    assert_eq!(issued, 2);
    let uses = pki
        .service
        .authority()
        .token_uses(token.credential.id)
        .unwrap();
    assert_eq!(uses.iter().filter(|u| u.fingerprint.is_some()).count(), 2);
    assert_eq!(uses.len(), 2 + MAX_REFUSALS_KEPT);
    assert_eq!(uses.last().unwrap().outcome, "expired");
}

#[test]
fn tokens_are_refused_in_a_root_and_with_a_missing_bundle() {
    let mut pki = pki();
    let err = pki
        .root
        .create_token(&terms(1, Duration::hours(1)), NOW)
        .unwrap_err();
    assert!(err.to_string().contains("root CA"), "{err}");
    let mut authority = Authority::open(pki.service.authority().dir()).unwrap();
    let mut bad = terms(1, Duration::hours(1));
    bad.bundle = "absent".into();
    assert!(authority.create_token(&bad, NOW).is_err());
    bad.bundle = "../default".into();
    assert!(authority.create_token(&bad, NOW).is_err());
    let mut zero = terms(0, Duration::hours(1));
    assert!(authority.create_token(&zero, NOW).is_err());
    zero.uses = 1;
    zero.name_prefix = "-bad".into();
    assert!(authority.create_token(&zero, NOW).is_err());
    assert!(Enrollment::open(pki.root.dir(), None, Duration::days(1)).is_err());
}

/// An issuing CA whose certificate the root renews stays the same CA: nodes still presenting
/// its previous certificate renew through the service.
#[test]
fn nodes_renew_after_the_issuing_cas_own_certificate_is_renewed() {
    let mut pki = pki();
    let token = token(&mut pki, 1, Duration::hours(1));
    let keys = NodeKeys::generate();
    let node = join(&mut pki, &token, "a", &keys, NOW).unwrap().cert;
    let dir = pki.service.authority().dir().to_owned();
    let public = *pki.service.authority().ca().public_key();
    let renewed_ca = pki
        .root
        .sign_ca(
            &public,
            enroll_scope(),
            None,
            true,
            NOW + Duration::days(1),
            |_| Ok(()),
        )
        .unwrap();
    assert_ne!(
        renewed_ca.fingerprint(),
        node.issuing_ca().unwrap().fingerprint()
    );
    Authority::install_issuing(
        &dir,
        renewed_ca.to_pem().as_bytes(),
        pki.root.ca().to_pem().as_bytes(),
        true,
    )
    .unwrap();
    pki.service = Enrollment::open(&dir, None, Duration::days(30)).unwrap();
    let at = NOW + Duration::days(20);
    let answer = renew(&mut pki, &node, &keys, at).unwrap();
    let renewed = check(&answer, &token, &keys, at).unwrap().cert;
    assert_eq!(
        renewed.issuing_ca().unwrap().fingerprint(),
        renewed_ca.fingerprint()
    );
    assert!(node.same_identity(&renewed));
}

/// A token can only promise groups the issuing CA may give: one for `routerd` is refused at
/// creation, with nothing stored.
#[test]
fn a_token_for_a_group_the_issuing_ca_may_not_give_is_refused() {
    let pki = pki();
    let mut authority = Authority::open(pki.service.authority().dir()).unwrap();
    let before = authority.tokens().unwrap().len();
    let err = authority
        .create_token(
            &TokenTerms {
                groups: Group::parse_list("workers,routerd").unwrap(),
                name_prefix: "worker-".into(),
                uses: 1,
                ttl: Duration::hours(1),
                bundle: "default".into(),
            },
            NOW,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--groups") && err.contains("\"routerd\" is not one CA \"enroll\" may give"),
        "{err}"
    );
    assert_eq!(authority.tokens().unwrap().len(), before);
}

/// A join or renewal for a group the issuing CA may no longer give (its certificate was
/// narrowed after the token was made) is refused as such, not as the service's fault.
#[test]
fn a_group_the_ca_may_no_longer_give_is_a_refusal_not_a_server_error() {
    let e = EnrollError::from(crate::authority::AuthorityError::Issue(
        crate::IssueError::GroupNotPermitted {
            group: "routerd".into(),
            ca: "enroll".into(),
            permitted: "workers".into(),
        },
    ));
    assert_eq!(e.status(), 403);
    assert!(e.to_string().contains("may no longer give it"), "{e}");
}
