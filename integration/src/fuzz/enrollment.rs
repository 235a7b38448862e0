//! The `enrollment` fuzz target's body.

use std::path::Path;
use std::sync::{LazyLock, Mutex};

use arbitrary::{Arbitrary, Unstructured};
use rma_ca::authority::{Authority, IssuingScope};
use rma_ca::enrollment::{Enrollment, TokenTerms};
use rma_ca::join::{self, JoinRequest, RenewRequest};
use rma_ca::proof::{self, Signed};
use rma_ca::{Fingerprint, Group, NodeCert, NodeKeys};
use time::{Duration, OffsetDateTime};

#[derive(Debug, Arbitrary)]
struct Input {
    renew: bool,
    body: Vec<u8>,
    time: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
    /// Build a well-formed request instead of `body`: with the live token (or a garbled one),
    /// this name, and the world's keys.
    well_formed: Option<(bool, String)>,
    /// Sign the body with the world's keys, at this many seconds from now.
    sign_at: Option<i16>,
    /// What the client side makes of `body` as an answer, with `signature` as its signature.
    as_answer: bool,
}

/// What the service holds: an issuing CA on disk with a live token, a certificate it issued,
/// and the keys of that certificate.
struct World {
    service: Mutex<Enrollment>,
    token: String,
    root: Fingerprint,
    cert: NodeCert,
    keys: NodeKeys,
    now: OffsetDateTime,
}

fn world() -> &'static World {
    static WORLD: LazyLock<World> = LazyLock::new(|| {
        let now = OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .expect("zero nanoseconds is valid");
        let dir = tempfile::tempdir().expect("a scratch directory").keep();
        let root_dir = dir.join("root");
        let issuing = dir.join("issuing");
        let mut root = Authority::init(
            &root_dir,
            "fuzz".parse().unwrap_or_else(|_| unreachable!()),
            "10.42.0.0/16".parse().unwrap_or_else(|_| unreachable!()),
            Duration::days(3650),
            now,
        )
        .expect("a root");
        let public = Authority::init_issuing(&issuing).expect("an issuing CA");
        let cert = root
            .sign_ca(
                &public,
                IssuingScope {
                    name: "enroll".parse().unwrap_or_else(|_| unreachable!()),
                    network: "10.42.128.0/17".parse().unwrap_or_else(|_| unreachable!()),
                    groups: Some(vec!["workers".parse().unwrap_or_else(|_| unreachable!())]),
                },
                None,
                false,
                now,
                |_| Ok(()),
            )
            .expect("signed");
        Authority::install_issuing(
            &issuing,
            cert.to_pem().as_bytes(),
            root.ca().to_pem().as_bytes(),
            false,
        )
        .expect("installed");
        bundle(&issuing);
        let mut authority = Authority::open(&issuing).expect("opens");
        let terms = TokenTerms {
            groups: Group::parse_list("workers").unwrap_or_default(),
            name_prefix: "w-".into(),
            uses: 1000,
            ttl: Duration::days(365),
            bundle: "default".into(),
        };
        let token = authority.create_token(&terms, now).expect("a token");
        let mut service =
            Enrollment::open(&issuing, None, Duration::days(30)).expect("the service opens");
        let keys = NodeKeys::generate();
        let body = serde_json::to_vec(&JoinRequest {
            token: token.credential.to_string(),
            name: "first".into(),
            public: keys.public().to_pem(),
        })
        .unwrap_or_default();
        let first = post(&mut service, false, &body, &keys, now, now).expect("the first join");
        World {
            service: Mutex::new(service),
            token: token.credential.to_string(),
            root: token.root,
            cert: first,
            keys,
            now,
        }
    });
    &WORLD
}

fn bundle(dir: &Path) {
    let bundles = dir.join(rma_ca::enrollment::BUNDLES_DIR);
    std::fs::create_dir_all(&bundles).expect("bundles");
    std::fs::write(bundles.join("default.toml"), "listen = \"0.0.0.0:4242\"\n").expect("bundle");
}

fn post(
    service: &mut Enrollment,
    renew: bool,
    body: &[u8],
    keys: &NodeKeys,
    at: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<NodeCert> {
    let path = if renew {
        join::RENEW_PATH
    } else {
        join::JOIN_PATH
    };
    let headers = proof::signed_headers(keys, "POST", path, proof::unix_ms(at), body);
    let signed = Signed::from_headers(&headers);
    let answer = if renew {
        service.renew(signed, body, now)
    } else {
        service.join(signed, body, now)
    };
    answer.ok().map(|a| a.cert)
}

/// Joins and renewals as `rma-ca serve` receives them: any body and signature headers,
/// sometimes well-formed and signed with the right key, so that the later checks run. No
/// panic; nothing is issued for a request its key did not sign; a renewal keeps the name, IP
/// and keys. Then what `meshd join` makes of any bytes as an answer: no panic, and nothing but
/// a service's own signed answer is accepted.
pub fn enrollment(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let world = world();
    if input.as_answer {
        let checked = join::check_answer(
            &input.body,
            input.signature.as_deref(),
            &world.root,
            &world.keys,
            world.now,
        );
        assert!(
            checked.is_err(),
            "fuzzed bytes were taken as a signed answer"
        );
        return;
    }
    // Renewals are asked for at two-thirds of the certificate's life.
    let now = if input.renew {
        world.now + Duration::days(20)
    } else {
        world.now
    };
    let body = match input.well_formed {
        Some(_) if input.renew => serde_json::to_vec(&RenewRequest {
            cert: world.cert.to_pem(),
        })
        .unwrap_or_default(),
        Some((live, name)) => {
            let token = if live {
                world.token.clone()
            } else {
                // The last digit of the secret, changed: the right id, a wrong secret.
                let (head, last) = world.token.split_at(world.token.len() - 1);
                format!("{head}{}", if last == "0" { "1" } else { "0" })
            };
            serde_json::to_vec(&JoinRequest {
                token,
                name,
                public: world.keys.public().to_pem(),
            })
            .unwrap_or_default()
        }
        None => input.body,
    };
    let mut service = world.service.lock().unwrap_or_else(|e| e.into_inner());
    let issued = match input.sign_at {
        Some(offset) => {
            let at = now + Duration::seconds(i64::from(offset));
            post(&mut service, input.renew, &body, &world.keys, at, now)
        }
        None => {
            let signed = Signed {
                time: input.time.as_deref(),
                signature: input.signature.as_deref(),
            };
            let answer = if input.renew {
                service.renew(signed, &body, now)
            } else {
                service.join(signed, &body, now)
            };
            // Without the key, a signature over the body is out of reach.
            assert!(answer.is_err(), "issued without a signature by the key");
            None
        }
    };
    if let Some(cert) = issued {
        assert_eq!(*cert.identity_key(), world.keys.public().identity);
        if input.renew {
            assert_eq!(
                (cert.name(), cert.mesh_ip()),
                (world.cert.name(), world.cert.mesh_ip())
            );
        }
    }
}
