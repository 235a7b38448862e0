//! The `registration` fuzz target's body.

use std::net::{IpAddr, Ipv4Addr};

use arbitrary::{Arbitrary, Unstructured};
use rma_ca::proof::{self, Signed};
use rma_proto::load::{ServiceState, ServiceStatus};
use routerd::admission::{self, Claim};
use routerd::api::{Heartbeat, Registration};
use routerd::catalog::Catalog;
use routerd::registry::{Capabilities, Offered, Proof, Registry, Report, TTL};

#[derive(Debug, Arbitrary)]
struct Input {
    body: Vec<u8>,
    time: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
    /// Sign the body properly with this peer's key (if `Some`), at this offset from now.
    sign_as: Option<(u8, i16)>,
    source: u8,
    /// Put this peer's certificate in the body instead of what it carries.
    certificate_of: Option<u8>,
}

/// A worker registration as routerd's mesh listener receives it: any body and any signature
/// headers, from any source; sometimes signed correctly, so that the later checks run too. No
/// panic, and nothing is admitted that was not signed by its certificate's key from its own
/// mesh IP. Then what routerd makes of what a registration and a heartbeat say (offers,
/// capabilities, states, load: the assignment), and what meshd makes of a service's health
/// body: no panic there either.
pub fn registration(data: &[u8]) {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let world = super::common::world();
    let now = world.pki.start;
    let now_ms = proof::unix_ms(now);
    let mut body = input.body;
    if let Some(p) = input.certificate_of {
        let cert = &world.peers[usize::from(p) % super::common::PEERS].0;
        let json = serde_json::json!({
            "certificate": cert.to_pem(),
            "capabilities": {"cpu_cores": 1, "ram": "1 GiB", "has_gpu": false, "worker_type": "cpu"},
            "services": serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default(),
        });
        body = json.to_string().into_bytes();
    }
    let mut health = ServiceStatus::new("fuzz", ServiceState::Running);
    health.read_health_body(&body);
    let Ok(registration) = serde_json::from_slice::<Registration>(&body) else {
        if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&body) {
            assign_after(None, Some(beat));
        }
        return;
    };
    assign_after(Some(&registration), None);
    let (time, signature) = match input.sign_as {
        Some((p, offset)) => {
            let keys = &world.peers[usize::from(p) % super::common::PEERS].1;
            let at = now_ms.saturating_add_signed(i64::from(offset) * 1000);
            let signature =
                proof::sign_request(keys, "POST", routerd::api::REGISTER_PATH, at, &body);
            (
                Some(at.to_string().into_bytes()),
                Some(signature.into_bytes()),
            )
        }
        None => (input.time, input.signature),
    };
    let source = IpAddr::V4(Ipv4Addr::new(10, 42, 0, input.source % 8));
    let claim = Claim {
        certificate: registration.certificate.as_bytes(),
        source_ip: source,
        path: routerd::api::REGISTER_PATH,
        signed: Signed {
            time: time.as_deref(),
            signature: signature.as_deref(),
        },
        body: &body,
    };
    if let Ok(proven) = admission::prove(&claim, &["workers".to_owned()], now_ms) {
        assert_eq!(source, IpAddr::V4(proven.cert.mesh_ip()));
        let signer = world
            .peers
            .iter()
            .find(|(cert, _)| cert.mesh_ip() == proven.cert.mesh_ip())
            .expect("only this CA's peers can sign");
        assert_eq!(signer.0.identity_key(), proven.cert.identity_key());
        let _ = admission::trust(&proven.cert, &world.trust, now);
    }
}

/// A registry with one settled worker (running every CPU service), then the fuzzed one's
/// registration, or a registration offering every CPU service and the fuzzed heartbeat.
fn assign_after(registration: Option<&Registration>, beat: Option<Heartbeat>) {
    let catalog = Catalog::default();
    let cpu: Vec<String> = catalog
        .iter()
        .filter(|(_, spec)| spec.tier == routerd::catalog::Tier::Cpu)
        .map(|(name, _)| name.to_owned())
        .collect();
    let offers = |port: u16| -> Vec<Offered> {
        cpu.iter()
            .map(|name| Offered {
                name: name.clone(),
                port,
                health: "/health".into(),
            })
            .collect()
    };
    let mut registry = Registry::new(catalog.clone());
    let t = std::time::Instant::now();
    let caps = Capabilities {
        cpu_cores: 4,
        ram: "8 GiB".into(),
        has_gpu: false,
        gpu_memory: None,
        free_disk: "100 GiB".into(),
        worker_type: "cpu".into(),
    };
    let running = cpu
        .iter()
        .map(|n| ServiceStatus::new(n, ServiceState::Running))
        .collect();
    let settled = Proof {
        signed_at_ms: 1,
        session: [1; 16],
    };
    let ip = Ipv4Addr::new(10, 42, 0, 8);
    registry
        .register(
            "settled",
            ip,
            caps.clone(),
            offers(8100),
            running,
            settled,
            t,
        )
        .expect("a plain registration registers");
    let session = [7u8; 16];
    let (capabilities, services, states) = match registration {
        Some(r) => (r.capabilities.clone(), r.services.clone(), r.states.clone()),
        None => (caps, offers(8200), Vec::new()),
    };
    let proof = Proof {
        signed_at_ms: 2,
        session,
    };
    let ip = Ipv4Addr::new(10, 42, 0, 9);
    let _ = registry.register("fuzz", ip, capabilities, services, states, proof, t);
    if let Some(beat) = beat {
        let report = Report {
            load: beat.load,
            services: beat.services,
        };
        let _ = registry.heartbeat("fuzz", &session, report, t);
    }
    for worker in registry.workers() {
        assert!(
            worker
                .assigned
                .iter()
                .all(|a| worker.offered.iter().any(|o| o.name == *a))
        );
    }
    // Every CPU service runs (the settled worker holds each), on no more workers than its
    // target, whatever the newcomer says.
    for name in &cpu {
        let on = registry
            .workers()
            .filter(|w| w.assigned.contains(name))
            .count();
        let want = catalog.get(name).map_or(0, |spec| spec.replicas as usize);
        assert!((1..=want).contains(&on), "{name} on {on} workers");
    }
    for gap in registry.gaps() {
        assert!(gap.have < gap.want);
    }
    let _ = registry.take_changed();
    registry.expire(t + TTL * 2);
    assert!(registry.workers().next().is_none(), "both expire");
}
