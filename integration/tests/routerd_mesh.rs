//! routerd end to end: a public lighthouse; routerd's node behind a cone NAT; three workers,
//! two behind cone NATs and one behind a symmetric NAT (so its path to routerd is relayed),
//! each running meshd (which registers its services with routerd over the mesh) and the test
//! service on its mesh IP. Calls go to routerd's public listener, as cloudflared's would.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::internet::{Internet, Nat, Site};
use integration::lab::{Lab, Ns};
use integration::mesh::{self, LighthouseProc, MeshNode, NodeConfig, Pki};
use integration::names::{self, NetnsResolver};
use integration::{traffic, wait};
use rma_ca::NodeKeys;
use serde_json::{Value, json};

const TOKEN: &str = "e2e-admin-token-0123456789";
const ROUTERD_IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
const PUBLIC: &str = "127.0.0.1:8080";
const SERVICE_PORT: u16 = 8101;
/// The CPU services every worker offers (one test service answers for all of them).
const SERVICES: [&str; 4] = [
    "rag-embeddings",
    "document-processing",
    "notes-coa",
    "ner-extraction",
];

struct Mesh {
    net: Internet,
    pki: Pki,
    lighthouse: LighthouseProc,
    routerd_node: MeshNode,
    routerd: usize,
    routerd_config: PathBuf,
    crl: PathBuf,
    workers: Vec<(MeshNode, usize)>,
    /// The site of the worker whose router drops all UDP, if one does.
    udp_blocked: Option<Site>,
}

fn worker_ip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, 0, 11 + i)
}

/// The worker's services, registered with routerd at `url`.
fn coordinator_toml(url: &str) -> String {
    let mut text = format!("[coordinator]\nurls = [\"{url}\"]\n");
    for s in SERVICES {
        text.push_str(&format!(
            "\n[[service]]\nname = \"{s}\"\nport = {SERVICE_PORT}\nhealth = \"/health\"\n"
        ));
    }
    text
}

/// The default catalog, with every worker wanted for each CPU service, so that calls spread
/// across all three.
fn catalog_toml() -> String {
    let mut text = String::new();
    for s in SERVICES {
        text.push_str(&format!(
            "[[service]]\nname = \"{s}\"\ntier = \"cpu\"\nreplicas = 3\n"
        ));
    }
    for s in ["llm-inference", "vision-ocr"] {
        text.push_str(&format!("[[service]]\nname = \"{s}\"\ntier = \"gpu\"\n"));
    }
    text
}

impl Mesh {
    fn new() -> Self {
        Self::build(None)
    }

    /// As [`Mesh::new`], with worker `blocked`'s router dropping every UDP packet it would
    /// forward: that worker reaches the lighthouse over TCP only.
    fn build(blocked: Option<usize>) -> Self {
        let lab = Lab::new().unwrap();
        let pki = Pki::new(lab.dir(), "mesh-ca", "10.42.0.0/16").unwrap();
        let mut net = Internet::new(lab).unwrap();
        let crl = net.lab.dir().join("mesh.crl");
        pki.write_crl(&crl, 1, &[]).unwrap();

        let lighthouse = mesh::start_public_lighthouse(&mut net, &pki).unwrap();
        let entries = vec![lighthouse.entry()];

        let mut site = net.site("routerd-router", Nat::Cone).unwrap();
        let (r_ns, _) = net.host_behind(&mut site, "routerd").unwrap();
        let routerd_node = start_meshd(
            &mut net.lab,
            &pki,
            &r_ns,
            "routerd",
            ROUTERD_IP,
            &entries,
            "",
        );
        let routerd_config = net.lab.dir().join("routerd.toml");
        std::fs::write(
            &routerd_config,
            format!(
                "[listen]\npublic = \"{PUBLIC}\"\nmesh = \"{ROUTERD_IP}:8080\"\n\
                 [pki]\nca = {ca:?}\ncrl = {crl:?}\n[admin]\ntoken = \"{TOKEN}\"\n\
                 [store]\npath = {store:?}\n[health]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
                 [log]\nlevel = \"info\"\n{catalog}",
                catalog = catalog_toml(),
                ca = pki.ca_path,
                store = net.lab.dir().join("registry.db"),
            ),
        )
        .unwrap();
        let routerd = start_routerd(&mut net.lab, &r_ns, &routerd_config);

        // The third worker enrolled through an issuing CA, as `meshd join` enrolls: every
        // verifier on the way (the lighthouse's TLS, routerd's meshd, routerd's registration
        // check) trusts its chain through the root alone.
        let issuing = pki.issuing("mesh-issuing", "10.42.0.0/16");
        let mut workers = Vec::new();
        let mut udp_blocked = None;
        for (i, nat) in [Nat::Cone, Nat::Cone, Nat::Symmetric]
            .into_iter()
            .enumerate()
        {
            let signer = if nat == Nat::Symmetric {
                &issuing
            } else {
                &pki
            };
            let name = format!("worker-{}", i + 1);
            let mut site = net.site(&format!("{name}-router"), nat).unwrap();
            let (ns, _) = net.host_behind(&mut site, &name).unwrap();
            if blocked == Some(i) {
                net.block_udp(&site).unwrap();
                udp_blocked = Some(site);
            }
            let ip = worker_ip(i as u8);
            // The first worker names routerd by its mesh name, which its meshd resolves
            // through the lighthouse (it holds no certificate of routerd's yet).
            let url = match i {
                0 => "http://routerd.mesh:8080".to_owned(),
                _ => format!("http://{ROUTERD_IP}:8080"),
            };
            let toml = coordinator_toml(&url);
            let node = match blocked == Some(i) {
                false => start_meshd(&mut net.lab, signer, &ns, &name, ip, &entries, &toml),
                true => {
                    let node = launch_meshd(&mut net.lab, signer, &ns, &name, ip, &entries, &toml);
                    node.wait_transport("tcp", Duration::from_secs(15)).unwrap();
                    node
                }
            };
            let svc = start_service(&mut net.lab, &ns, &name, ip);
            workers.push((node, svc));
        }
        let mesh = Self {
            net,
            pki,
            lighthouse,
            routerd_node,
            routerd,
            routerd_config,
            crl,
            workers,
            udp_blocked,
        };
        mesh.wait_workers(3);
        mesh
    }

    fn routerd_ns(&self) -> &Ns {
        &self.routerd_node.ns
    }

    /// One HTTP call (`request` is `METHOD PATH`) from `ns`, from `source` if given; the
    /// status, headers and body (JSON, or null).
    fn http(
        &self,
        ns: &Ns,
        addr: &str,
        request: &str,
        source: Option<Ipv4Addr>,
        headers: &[&str],
        body: Option<&Value>,
    ) -> (u16, Value, Value) {
        let mut headers = headers.to_vec();
        let file = body.map(|body| {
            let file = self
                .net
                .lab
                .dir()
                .join(format!("body-{}.json", traffic::next_port()));
            std::fs::write(&file, body.to_string()).unwrap();
            headers.push("content-type: application/json");
            file
        });
        traffic::http(ns, addr, request, source, &headers, file.as_deref()).unwrap()
    }

    /// A call to routerd's public listener, from routerd's machine (where cloudflared runs).
    fn public(&self, method: &str, path: &str) -> (u16, Value) {
        let (status, _, body) = self.http(
            self.routerd_ns(),
            PUBLIC,
            &format!("{method} {path}"),
            None,
            &[],
            None,
        );
        (status, body)
    }

    fn admin(&self, path: &str) -> Value {
        let auth = format!("authorization: Bearer {TOKEN}");
        let (status, _, body) = self.http(
            self.routerd_ns(),
            PUBLIC,
            &format!("GET {path}"),
            None,
            &[&auth],
            None,
        );
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Posts a registration carrying `certificate`, signed with `keys`, to `addr` from `ns`
    /// (and `source`).
    fn register(
        &self,
        ns: &Ns,
        addr: &str,
        source: Option<Ipv4Addr>,
        certificate: &str,
        keys: &NodeKeys,
    ) -> (u16, Value) {
        let body = json!({
            "certificate": certificate,
            "capabilities": {"cpu_cores": 1, "ram": "1 GiB", "has_gpu": false, "free_disk": "1 GiB", "worker_type": "cpu"},
            "services": [{"name": "rag-embeddings", "port": SERVICE_PORT, "health": "/health"}],
        });
        let headers = traffic::signed_header_lines(keys, "/api/worker/register", &body);
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let (status, _, reply) = self.http(
            ns,
            addr,
            "POST /api/worker/register",
            source,
            &headers,
            Some(&body),
        );
        (status, reply)
    }

    fn wait_workers(&self, n: u64) {
        wait::until(
            "workers to register over the mesh",
            Duration::from_secs(30),
            || (self.public("GET", "/api/coordinator/workers").1["count"] == n).then_some(()),
        )
        .unwrap();
    }

    fn route_state(&self, worker: &str) -> String {
        let (_, topology) = self.public("GET", "/api/topology");
        topology["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["worker"] == worker && r["service"] == "rag-embeddings")
            .map(|r| r["state"].as_str().unwrap().to_owned())
            .unwrap_or_else(|| "gone".into())
    }
}

/// Starts meshd and waits until it has registered with its lighthouses.
fn start_meshd(
    lab: &mut Lab,
    pki: &Pki,
    ns: &Ns,
    name: &str,
    ip: Ipv4Addr,
    lighthouses: &[(String, SocketAddr)],
    extra: &str,
) -> MeshNode {
    let node = launch_meshd(lab, pki, ns, name, ip, lighthouses, extra);
    node.wait_registered(Duration::from_secs(10)).unwrap();
    node
}

fn launch_meshd(
    lab: &mut Lab,
    pki: &Pki,
    ns: &Ns,
    name: &str,
    ip: Ipv4Addr,
    lighthouses: &[(String, SocketAddr)],
    extra: &str,
) -> MeshNode {
    let issued = pki.issue(name, ip).unwrap();
    mesh::start(
        lab,
        ns,
        &NodeConfig {
            name,
            ca: &pki.ca_path,
            issued: &issued,
            crl: None,
            static_peers: &[],
            firewall: None,
            metrics: None,
            lighthouses,
            mtu: None,
            busy_poll_us: None,
            park_after: None,
            extra,
        },
    )
    .unwrap()
}

fn start_routerd(lab: &mut Lab, ns: &Ns, config: &std::path::Path) -> usize {
    mesh::start_routerd(lab, ns, config).unwrap()
}

fn start_service(lab: &mut Lab, ns: &Ns, name: &str, ip: Ipv4Addr) -> usize {
    let testsvc = mesh::binary("testsvc").unwrap();
    lab.spawn_listening(
        ns,
        &format!("{name}-service"),
        &testsvc,
        &[
            "--listen",
            &format!("{ip}:{SERVICE_PORT}"),
            "--worker",
            name,
        ],
    )
    .unwrap()
}

/// Who answered each of `count` calls to rag-embeddings through routerd's public listener.
fn answering_workers(mesh: &Mesh, count: u32) -> BTreeMap<String, u32> {
    let mut seen = BTreeMap::new();
    for i in 0..count {
        let (status, body) = mesh.public("GET", &format!("/service/rag/query?i={i}"));
        assert_eq!(status, 200, "{body}");
        *seen
            .entry(body["worker"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    seen
}

#[test]
fn a_worker_whose_network_lets_no_udp_out_serves_calls_over_tcp_and_moves_back() {
    let mut mesh = Mesh::build(Some(1));
    let (worker, _) = &mesh.workers[1];
    let seen = answering_workers(&mesh, 30);
    println!("30 calls answered by {seen:?}");
    assert!(seen.contains_key("worker-2"), "{seen:?}");
    let to_routerd = worker.peer(ROUTERD_IP).unwrap();
    assert_eq!(to_routerd.via.as_deref(), Some("lighthouse-1 (tcp)"));
    let from_routerd = mesh.routerd_node.peer(worker_ip(1)).unwrap();
    assert_eq!(from_routerd.via.as_deref(), Some("lighthouse-1"));
    let (worker_ns, routerd_ns) = (worker.ns.clone(), mesh.routerd_ns().clone());
    let up = traffic::transfer(
        &mut mesh.net.lab,
        &worker_ns,
        &routerd_ns,
        ROUTERD_IP,
        16 << 20,
    )
    .unwrap();
    let down = traffic::transfer(
        &mut mesh.net.lab,
        &routerd_ns,
        &worker_ns,
        worker_ip(1),
        16 << 20,
    )
    .unwrap();
    println!(
        "relayed over worker-2's TCP link: 16 MiB up in {up:.0} Mbit/s, down in {down:.0} Mbit/s"
    );

    // UDP is let out again: the worker's lighthouse link goes back to QUIC and its path to
    // routerd to direct, while its route stays up and pings to routerd cross the change.
    let pinger = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            worker_ns.name(),
            "ping",
            "-c",
            "120",
            "-i",
            "0.25",
        ])
        .args(["-W", "2", &ROUTERD_IP.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    mesh.net
        .allow_udp(mesh.udp_blocked.as_ref().unwrap())
        .unwrap();
    let (worker, _) = &mesh.workers[1];
    wait::until(
        "worker-2's lighthouse link to move back to QUIC",
        Duration::from_secs(20),
        || {
            assert_eq!(mesh.route_state("worker-2"), "up");
            (worker.lighthouse_transport().as_deref() == Some("quic")).then_some(())
        },
    )
    .unwrap();
    wait::until(
        "worker-2 to reach routerd directly",
        Duration::from_secs(20),
        || {
            assert_eq!(mesh.route_state("worker-2"), "up");
            worker.peer(ROUTERD_IP).filter(|p| p.path == "direct")
        },
    )
    .unwrap();
    let seen = answering_workers(&mesh, 30);
    assert!(seen.contains_key("worker-2"), "{seen:?}");
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let received: u32 = text
        .split(',')
        .find_map(|part| part.trim().strip_suffix(" received")?.parse().ok())
        .unwrap_or(0);
    println!("{received} of 120 pings from worker-2 to routerd across the change answered");
    assert!(received >= 114, "{text}");
}

#[test]
fn calls_reach_workers_over_the_mesh_and_spread_across_them() {
    let mesh = Mesh::new();
    let mut seen = BTreeMap::new();
    for i in 0..30 {
        let (status, body) = mesh.public("GET", &format!("/service/rag/query?i={i}"));
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["caller"],
            ROUTERD_IP.to_string(),
            "workers see routerd's mesh IP"
        );
        assert_eq!(body["path"], "/query");
        *seen
            .entry(body["worker"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    println!("30 calls answered by {seen:?}");
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The symmetric-NAT worker is reached through the lighthouse's relay.
    let relayed = mesh.routerd_node.peer(worker_ip(2)).unwrap();
    assert_eq!(relayed.via.as_deref(), Some("lighthouse-1"));
    // Capabilities arrived as meshd detected them.
    let workers = mesh.admin("/api/admin/workers");
    let caps = &workers["workers"][0]["capabilities"];
    assert!(caps["cpu_cores"].as_u64().unwrap() >= 1, "{caps}");
    assert_eq!(caps["worker_type"], "cpu");
    assert_eq!(
        workers["workers"][0]["services"].as_array().unwrap().len(),
        4
    );
    let gaps = mesh.admin("/api/admin/gaps");
    assert_eq!(gaps["gaps"], json!(["llm-inference", "vision-ocr"]));
}

/// Names on the mesh from a machine that has talked to no one yet: its meshd asks the
/// lighthouse for `routerd.mesh`, and the system's resolver, pointed at meshd, takes curl to
/// routerd by name. A worker registered by name too (`Mesh::new`), and routerd knows it by
/// the mesh-IP URL it knows itself by.
#[test]
fn a_new_machine_reaches_routerd_by_its_mesh_name() {
    let mut mesh = Mesh::new();
    let coordinators = mesh.admin("/api/admin/coordinators");
    let urls: Vec<&str> = coordinators["coordinators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["url"].as_str().unwrap())
        .collect();
    assert_eq!(
        urls,
        [format!("http://{ROUTERD_IP}:8080")],
        "{coordinators}"
    );

    let mut site = mesh.net.site("visitor-router", Nat::Cone).unwrap();
    let (ns, _) = mesh.net.host_behind(&mut site, "visitor").unwrap();
    let ip = Ipv4Addr::new(10, 42, 0, 30);
    let entries = vec![mesh.lighthouse.entry()];
    let visitor = start_meshd(
        &mut mesh.net.lab,
        &mesh.pki,
        &ns,
        "visitor",
        ip,
        &entries,
        "",
    );
    assert!(
        visitor.peer(ROUTERD_IP).is_none(),
        "no routerd certificate yet"
    );

    let (status, answers, msec) = names::dig(&mesh.net.lab, &ns, ip, "routerd.mesh").unwrap();
    assert_eq!(
        (status.as_str(), answers),
        ("NOERROR", vec![ROUTERD_IP.to_string()])
    );
    println!("routerd.mesh from the lighthouse in {msec} ms");
    let (status, answers, msec) = names::dig(&mesh.net.lab, &ns, ip, "Worker-3.mesh").unwrap();
    assert_eq!(
        (status.as_str(), answers),
        ("NOERROR", vec![worker_ip(2).to_string()])
    );
    assert!(msec < 1000, "worker-3.mesh took {msec} ms");
    let (status, answers, msec) = names::dig(&mesh.net.lab, &ns, ip, "nobody.mesh").unwrap();
    assert_eq!((status.as_str(), answers.len()), ("NXDOMAIN", 0));
    assert!(msec < 500, "NXDOMAIN took {msec} ms");
    let (status, _, _) = names::dig(&mesh.net.lab, &ns, ip, "example.com").unwrap();
    assert_eq!(
        status, "REFUSED",
        "names outside the mesh domain are not meshd's"
    );

    let _resolver = NetnsResolver::point(&ns, ip).unwrap();
    let out = mesh
        .net
        .lab
        .exec(
            &ns,
            "curl",
            &["-sS", "--max-time", "10", "http://routerd.mesh:8080/health"],
        )
        .unwrap();
    let health: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(health["services"].is_object(), "{health}");
}

#[test]
fn a_killed_worker_fails_no_get_and_leaves_rotation_within_a_second() {
    let mut mesh = Mesh::new();
    let probe = traffic::probe_path().unwrap();
    let ns = mesh.routerd_ns().clone();
    let stream = mesh
        .net
        .lab
        .spawn(
            &ns,
            "get-stream",
            std::path::Path::new(&probe),
            &[
                "http-stream",
                "--addr",
                PUBLIC,
                "--path",
                "/service/rag/x",
                "--millis",
                "4000",
                "--concurrency",
                "4",
            ],
        )
        .unwrap();
    wait::until("the GET stream to start", Duration::from_secs(5), || {
        mesh.net
            .lab
            .proc(stream)
            .log_text()
            .contains("started")
            .then_some(())
    })
    .unwrap();
    // Let traffic reach every worker, then kill worker-1's service.
    wait::until("calls to flow", Duration::from_secs(5), || {
        (mesh.route_state("worker-1") == "up").then_some(())
    })
    .unwrap();
    let victim = mesh.workers[0].1;
    mesh.net.lab.stop(victim);
    let killed = Instant::now();
    wait::until("worker-1 out of rotation", Duration::from_secs(3), || {
        (mesh.route_state("worker-1") != "up").then_some(())
    })
    .unwrap();
    let out_after = killed.elapsed();
    mesh.net
        .lab
        .wait_exit(stream, Duration::from_secs(20))
        .unwrap();
    let text = mesh.net.lab.proc(stream).log_text();
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    println!(
        "worker-1 out of rotation {out_after:?} after its service died; {} GETs, {} failed",
        summary["calls"], summary["failed"]
    );
    assert_eq!(summary["failed"], 0, "{}", summary["failures"]);
    assert!(summary["calls"].as_u64().unwrap() > 100);
    assert!(out_after < Duration::from_secs(1), "{out_after:?}");
}

#[test]
fn a_restarted_routerd_answers_within_a_second_from_its_store() {
    let mut mesh = Mesh::new();
    mesh.net.lab.stop(mesh.routerd);
    let ns = mesh.routerd_ns().clone();
    let config = mesh.routerd_config.clone();
    let started = Instant::now();
    mesh.routerd = start_routerd(&mut mesh.net.lab, &ns, &config);
    let mut answered = None;
    wait::until(
        "a call through the restarted routerd",
        Duration::from_secs(5),
        || {
            let (status, body) = mesh.public("GET", "/service/rag/x");
            if status == 200 {
                answered = Some((started.elapsed(), body));
                Some(())
            } else {
                None
            }
        },
    )
    .unwrap();
    let (after, body) = answered.unwrap();
    println!(
        "first call after the restart answered by {} {after:?} after starting routerd",
        body["worker"]
    );
    assert!(after < Duration::from_secs(1), "{after:?}");
}

#[test]
fn registrations_from_outside_with_another_cert_or_revoked_are_refused() {
    let mesh = Mesh::new();
    let (worker_1, _) = &mesh.workers[0];
    let (worker_2, _) = &mesh.workers[1];
    let issued_1 = mesh.pki.issue("worker-1", worker_ip(0)).unwrap();
    let cert_1 = issued_1.cert.to_pem();
    let cert_2 = mesh.pki.issue("worker-2", worker_ip(1)).unwrap();
    // The public listener has no worker routes at all.
    let (status, body) = mesh.register(mesh.routerd_ns(), PUBLIC, None, &cert_1, &issued_1.keys);
    assert_eq!(status, 404, "{body}");
    let mesh_listener = format!("{ROUTERD_IP}:8080");
    // A local user on routerd's own machine: its traffic to routerd's mesh IP never crosses
    // the mesh, so it comes from that IP. It has routerd's certificate (certificates are
    // public), but not routerd's key.
    let routerd_cert = mesh.pki.issue("routerd-copy", ROUTERD_IP).unwrap();
    let (status, body) = mesh.register(
        mesh.routerd_ns(),
        &mesh_listener,
        Some(ROUTERD_IP),
        &routerd_cert.cert.to_pem(),
        &issued_1.keys,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("identity key"),
        "{body}"
    );
    // worker-1 presenting worker-2's certificate, over the mesh.
    let cert_2_pem = cert_2.cert.to_pem();
    let (status, body) = mesh.register(
        &worker_1.ns,
        &mesh_listener,
        Some(worker_ip(0)),
        &cert_2_pem,
        &cert_2.keys,
    );
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("10.42.0.12"),
        "{body}"
    );
    // worker-2's own certificate from its mesh IP is accepted...
    let (status, body) = mesh.register(
        &worker_2.ns,
        &mesh_listener,
        Some(worker_ip(1)),
        &cert_2_pem,
        &cert_2.keys,
    );
    assert_eq!(status, 200, "{body}");
    // ...until routerd's revocation list names it (routerd sees the file change).
    mesh.pki.write_crl(&mesh.crl, 2, &[&cert_2.cert]).unwrap();
    wait::until(
        "routerd to refuse the revoked certificate",
        Duration::from_secs(10),
        || {
            let (status, body) = mesh.register(
                &worker_2.ns,
                &mesh_listener,
                Some(worker_ip(1)),
                &cert_2_pem,
                &cert_2.keys,
            );
            (status == 403 && body["error"].as_str().unwrap().contains("revoked")).then_some(())
        },
    )
    .unwrap();
}

#[test]
fn every_frontend_route_from_the_seed_answers_through_routerd() {
    let mesh = Mesh::new();
    // Seed 000, section 9: the service routes each frontend component calls.
    let service_routes = [
        ("POST", "/service/notes/convert"),
        ("POST", "/service/rag/query"),
        ("GET", "/service/rag/sample_dro_manual"),
        ("GET", "/service/rag/stats"),
        ("GET", "/service/rag/debug/sources"),
        ("GET", "/service/rag/debug/documents"),
        ("GET", "/service/rag/api/graph/nodes"),
        ("POST", "/service/rag/api/graph/build"),
        ("GET", "/service/upload/clients"),
        ("GET", "/service/upload/client-stats/client-7"),
        ("POST", "/service/upload/query-client-documents"),
        ("POST", "/service/upload/generate-qr"),
        ("POST", "/service/rag/should-i-worry"),
        ("POST", "/service/rag/eligibility-check"),
        ("POST", "/service/ner/extract"),
        ("POST", "/api/service/rag/query"),
        ("GET", "/service/notes-coa/convert"),
    ];
    for (method, path) in service_routes {
        let (status, body) = mesh.public(method, path);
        assert_eq!(status, 200, "{method} {path}: {body}");
        let rest = path
            .strip_prefix("/service/")
            .or_else(|| path.strip_prefix("/api/service/"))
            .unwrap();
        let tail = rest
            .split_once('/')
            .map_or_else(|| "/".to_owned(), |(_, t)| format!("/{t}"));
        assert_eq!(body["path"], tail, "{method} {path}");
        assert_eq!(body["method"], method);
    }
    // The coordinator routes (SystemOrchestrator, the health checks of section 10).
    for path in [
        "/health",
        "/api/coordinator/workers",
        "/api/dht/stats",
        "/api/dht/topology",
        "/api/topology",
    ] {
        let (status, body) = mesh.public("GET", path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    mesh.admin("/api/admin/workers");
    mesh.admin("/api/admin/gaps");
    let (status, body) = mesh.public("GET", "/api/dht/bootstrap");
    assert_eq!(status, 410, "{body}");
}

/// The topology page in a real browser: headless Chromium, in routerd's namespace (which has
/// no route to the host's network), loads `/` from the public listener, runs the page's script
/// for five seconds of virtual time and dumps the resulting DOM.
#[test]
fn the_topology_page_draws_the_registered_workers_in_chromium() {
    let mesh = Mesh::new();
    let lab = &mesh.net.lab;
    let log = lab.dir().join("routerd.log");
    let fetches = || {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter(|l| l.contains("path=/api/topology "))
            .count()
    };
    let before = fetches();
    let profile = lab.dir().join("chromium-profile");
    let out = lab
        .exec(
            mesh.routerd_ns(),
            "timeout",
            &[
                "60",
                "chromium",
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--no-first-run",
                &format!("--user-data-dir={}", profile.display()),
                "--virtual-time-budget=5000",
                "--dump-dom",
                &format!("http://{PUBLIC}/"),
            ],
        )
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    for i in 1..=3 {
        let id = format!("id=\"worker-worker-{i}\"");
        assert!(dom.contains(&id), "{id} is not drawn:\n{dom}");
    }
    assert_eq!(dom.matches("class=\"worker-row\"").count(), 3, "{dom}");
    // What each worker runs, with the state its meshd reports (operator-run here).
    assert_eq!(dom.matches("rag-embeddings (external)").count(), 3, "{dom}");
    // Every route (4 services on 3 workers) is drawn as healthy.
    assert_eq!(dom.matches("class=\"up\"").count(), 12, "{dom}");
    assert!(dom.contains("3 workers"), "{dom}");
    assert!(
        dom.contains("below target: llm-inference, vision-ocr"),
        "{dom}"
    );
    // The page refreshed itself (every 2 s; at 0, 2 and 4 s of virtual time).
    let fetched = fetches() - before;
    println!("the page fetched /api/topology {fetched} times");
    assert!(
        fetched >= 2,
        "the page fetched /api/topology {fetched} times"
    );
}
