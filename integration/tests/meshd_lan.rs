//! meshd end to end: real daemons in network namespaces on one LAN (a bridge in a switch
//! namespace), talking through real TUN devices and WireGuard.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use integration::lab::{Lab, Ns};
use integration::mesh::{self, Issued, MeshNode, NodeConfig, Pki};
use integration::names::{self, NetnsResolver};
use integration::resolved::ResolvedMachine;
use integration::{traffic, wait};

const PROBE: &str = env!("CARGO_BIN_EXE_probe");
const MIB: u64 = 1 << 20;

fn mesh_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 42, 0, n)
}

fn lan_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 100, n)
}

fn underlay(n: u8) -> SocketAddr {
    SocketAddr::from((lan_ip(n), 4242))
}

/// How a test node differs from the default: another CA file, a CRL, its own firewall rules.
#[derive(Default)]
struct Extra<'a> {
    ca: Option<&'a Path>,
    crl: Option<&'a Path>,
    firewall: Option<&'a str>,
    busy_poll_us: Option<u32>,
}

/// Hosts on one Ethernet segment: a switch namespace bridges every host's eth0.
struct Lan {
    lab: Lab,
    switch: Ns,
    pki: Pki,
}

impl Lan {
    fn new() -> Self {
        let mut lab = Lab::new().unwrap();
        let switch = lab.namespace("sw").unwrap();
        lab.ip(&switch, &["link", "add", "br0", "type", "bridge"])
            .unwrap();
        lab.ip(&switch, &["link", "set", "br0", "up"]).unwrap();
        let pki = Pki::new(lab.dir(), "mesh-ca", "10.42.0.0/16").unwrap();
        Self { lab, switch, pki }
    }

    /// A host on the LAN with address 192.168.100.n.
    fn host(&mut self, role: &str, n: u8) -> Ns {
        let ns = self.lab.namespace(role).unwrap();
        let port = format!("p{n}");
        self.lab.link(&ns, "eth0", &self.switch, &port).unwrap();
        self.lab
            .ip(&self.switch, &["link", "set", &port, "master", "br0"])
            .unwrap();
        self.lab
            .addr(&ns, "eth0", &format!("{}/24", lan_ip(n)))
            .unwrap();
        ns
    }

    /// A host running meshd with mesh IP 10.42.0.n, statically peered with `peers`.
    fn node(&mut self, name: &str, n: u8, peers: &[u8], crl: Option<&Path>) -> MeshNode {
        let issued = self.pki.issue(name, mesh_ip(n)).unwrap();
        self.node_from(
            n,
            peers,
            &issued,
            Extra {
                crl,
                ..Extra::default()
            },
        )
    }

    /// A host running meshd with a certificate the test issued itself, named after it.
    fn node_from(&mut self, n: u8, peers: &[u8], issued: &Issued, extra: Extra<'_>) -> MeshNode {
        let name = issued.cert.name().to_string();
        let ns = self.host(&name, n);
        let statics: Vec<_> = peers.iter().map(|&p| (mesh_ip(p), underlay(p))).collect();
        let config = NodeConfig {
            name: &name,
            ca: extra.ca.unwrap_or(&self.pki.ca_path),
            issued,
            crl: extra.crl,
            static_peers: &statics,
            firewall: extra.firewall,
            metrics: None,
            lighthouses: &[],
            mtu: None,
            busy_poll_us: extra.busy_poll_us,
            park_after: None,
            extra: "",
        };
        mesh::start(&mut self.lab, &ns, &config).unwrap()
    }

    fn ping(&self, from: &Ns, to: Ipv4Addr) -> bool {
        let to = to.to_string();
        self.lab
            .exec(from, "ping", &["-c", "3", "-i", "0.2", "-W", "2", &to])
            .is_ok()
    }

    /// Sends `bytes` over TCP from `from` to `to_ip` (a host in `to`), checks the SHA-256 on
    /// both ends, and returns the sender's rate in Mbit/s.
    fn transfer(&mut self, from: &Ns, to: &Ns, to_ip: Ipv4Addr, bytes: u64) -> f64 {
        traffic::transfer(&mut self.lab, from, to, to_ip, bytes).unwrap()
    }
}

fn peer_status(status: &meshd::status::Status, ip: Ipv4Addr) -> Option<&meshd::status::PeerStatus> {
    status.peers.iter().find(|p| p.mesh_ip == ip.to_string())
}

/// With `[tun] busy_poll_us`, meshd spins for input after data turns while exchanges run, the
/// spins catch replies, and the spins stop once traffic is sparse: pings 200 ms apart that b's
/// firewall drops, so that a's meshd reads one packet from its TUN each time and no reply
/// comes. Then it costs next to no CPU.
#[test]
fn busy_poll_spins_during_exchanges_and_stops_when_traffic_is_sparse() {
    const TCP_ONLY: &str = "[[firewall.inbound]]\nport = \"any\"\nproto = \"tcp\"\nhost = \"any\"\n\n\
                            [[firewall.outbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n";
    const EXCHANGES: u64 = 2000;
    let mut lan = Lan::new();
    let spinning = || Extra {
        busy_poll_us: Some(200),
        firewall: Some(TCP_ONLY),
        ..Extra::default()
    };
    let issued_a = lan.pki.issue("a", mesh_ip(1)).unwrap();
    let issued_b = lan.pki.issue("b", mesh_ip(2)).unwrap();
    let a = lan.node_from(1, &[2], &issued_a, spinning());
    let b = lan.node_from(2, &[1], &issued_b, spinning());
    lan.transfer(&a.ns, &b.ns, b.mesh_ip, 16 * MIB);

    let listen = format!("{}:{}", b.mesh_ip, traffic::next_port());
    lan.lab
        .spawn_listening(
            &b.ns,
            "rr-server",
            Path::new(PROBE),
            &["rr-server", "--listen", &listen],
        )
        .unwrap();
    let before = a.status().unwrap().busy_polls;
    let count = EXCHANGES.to_string();
    let out = lan
        .lab
        .exec(
            &a.ns,
            PROBE,
            &["rr-client", "--connect", &listen, "--count", &count],
        )
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout).trim());
    let during = a.status().unwrap().busy_polls;
    // Two data turns an exchange (the request read, the reply decrypted); under load some
    // gaps outgrow the window, and those turns sleep instead.
    assert!(
        during.spins - before.spins >= EXCHANGES,
        "{before:?}, then {during:?} over {EXCHANGES} exchanges"
    );
    assert!(during.caught > before.caught, "{before:?}, then {during:?}");

    // Sparse traffic: once HISTORY pings have come 200 ms apart, no gap within the window is
    // remembered (whatever the connection's close added), and the next pings spin not at all.
    // A spin that never ended would also cost all of the time they take.
    let pid = lan.lab.proc(a.proc).pid();
    let to = b.mesh_ip.to_string();
    let ping = |count: u32| {
        let count = count.to_string();
        lan.lab
            .exec(&a.ns, "ping", &["-c", &count, "-i", "0.2", "-W", "1", &to])
    };
    let pinged = ping(meshd::busy_poll::HISTORY + 1);
    assert!(pinged.is_err(), "b's firewall lets ICMP in: {pinged:?}");
    let settled = a.status().unwrap().busy_polls;
    let cpu = integration::lab::cpu_time(pid).unwrap();
    let started = std::time::Instant::now();
    assert!(ping(5).is_err());
    let (took, sparse_cpu) = (
        started.elapsed(),
        integration::lab::cpu_time(pid).unwrap().saturating_sub(cpu),
    );
    let after = a.status().unwrap().busy_polls;
    assert_eq!(after, settled, "spins over 5 pings 200 ms apart");
    assert!(
        sparse_cpu < took / 20,
        "{sparse_cpu:?} of CPU in {took:?} of sparse traffic"
    );
}

#[test]
fn two_nodes_carry_tcp_udp_and_icmp() {
    let mut lan = Lan::new();
    let a = lan.node("a", 1, &[2], None);
    let b = lan.node("b", 2, &[1], None);
    assert!(lan.ping(&a.ns, b.mesh_ip), "ICMP over the mesh");
    let a_to_b = lan.transfer(&a.ns, &b.ns, b.mesh_ip, 64 * MIB);
    let b_to_a = lan.transfer(&b.ns, &a.ns, a.mesh_ip, 64 * MIB);
    let raw = lan.transfer(&a.ns, &b.ns, lan_ip(2), 64 * MIB);

    let port = traffic::next_port();
    let listen = format!("{}:{port}", b.mesh_ip);
    lan.lab
        .spawn(
            &b.ns,
            "udp-echo",
            Path::new(PROBE),
            &["udp-echo", "--listen", &listen],
        )
        .unwrap();
    let echoed = wait::until("UDP echoes over the mesh", Duration::from_secs(20), || {
        let out = lan
            .lab
            .exec(
                &a.ns,
                PROBE,
                &["udp-ping", "--to", &listen, "--count", "10"],
            )
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains("echoed 10 of 10,").then_some(text)
    })
    .unwrap();
    println!("udp: {}", echoed.trim());
    println!(
        "throughput (64 MiB, single TCP stream): mesh a->b {a_to_b:.0} Mbit/s, b->a {b_to_a:.0} \
         Mbit/s; raw veth {raw:.0} Mbit/s"
    );
    let status = b.status().unwrap();
    let peer = peer_status(&status, a.mesh_ip).unwrap();
    assert!(
        peer.rx_bytes > 64 * MIB && peer.tx_bytes > 64 * MIB,
        "{peer:?}"
    );
    // Events about a peer are logged in that peer's span.
    let log = lan.lab.proc(b.proc).log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("peer{name=a mesh_ip=10.42.0.1}") && l.contains("peer certified")),
        "{log}"
    );
    // Nothing but mesh traffic reached the TUN: no stray IPv6 from the kernel, no drops.
    assert_eq!(
        status.drops,
        meshd::status::NodeCounters::default(),
        "{status:?}"
    );
}

#[test]
fn three_nodes_form_a_full_mesh() {
    let mut lan = Lan::new();
    let nodes = [
        lan.node("n1", 1, &[2, 3], None),
        lan.node("n2", 2, &[1, 3], None),
        lan.node("n3", 3, &[1, 2], None),
    ];
    for from in &nodes {
        for to in &nodes {
            if from.name != to.name {
                assert!(
                    lan.ping(&from.ns, to.mesh_ip),
                    "{} -> {}",
                    from.name,
                    to.name
                );
            }
        }
    }
    let meshd = mesh::binary("meshd").unwrap();
    for node in &nodes {
        let out = std::process::Command::new(&meshd)
            .args(["status", "--json", "--socket"])
            .arg(&node.socket)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let live: Vec<_> = status["peers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["last_handshake_secs"].is_u64())
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(live.len(), 2, "{}: {status}", node.name);
    }
}

#[test]
fn a_peer_cannot_send_as_another_node() {
    let mut lan = Lan::new();
    let a = lan.node("a", 1, &[2], None);
    let b = lan.node("b", 2, &[1], None);
    let c_ip = mesh_ip(3);
    assert!(lan.ping(&a.ns, b.mesh_ip));
    let port = traffic::next_port();
    let target = format!("{}:{port}", b.mesh_ip);
    let echo = lan
        .lab
        .spawn_listening(
            &b.ns,
            "echo",
            Path::new(PROBE),
            &["udp-echo", "--listen", &target],
        )
        .unwrap();

    lan.lab
        .exec(
            &a.ns,
            PROBE,
            &[
                "spoof",
                "--src",
                &c_ip.to_string(),
                "--to",
                &target,
                "--count",
                "5",
            ],
        )
        .unwrap();
    wait::until(
        "b to count five spoofed packets",
        Duration::from_secs(10),
        || {
            let status = b.status().ok()?;
            (peer_status(&status, a.mesh_ip)?.drops.spoofed >= 5).then_some(())
        },
    )
    .unwrap();
    // A genuine datagram after the forged ones arrives; none of the forged ones did.
    let out = lan
        .lab
        .exec(&a.ns, PROBE, &["udp-ping", "--to", &target, "--count", "1"])
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("echoed 1 of 1,"));
    let log = lan.lab.proc(echo).log_text();
    let datagrams: Vec<&str> = log.lines().filter(|l| l.starts_with("datagram")).collect();
    assert_eq!(datagrams.len(), 1, "{log}");
    assert!(
        datagrams[0].contains(&format!("from {}:", a.mesh_ip)),
        "{log}"
    );
}

#[test]
fn untrusted_certificates_get_no_session() {
    let mut lan = Lan::new();
    let revoked = lan.pki.issue("revoked", mesh_ip(5)).unwrap();
    let crl = lan.pki.crl(&[&revoked.cert]).unwrap();
    let a = lan.node("a", 1, &[2], Some(&crl));
    let b = lan.node("b", 2, &[1], Some(&crl));
    assert!(lan.ping(&a.ns, b.mesh_ip));

    // A node of another CA, with its own CA file so that it starts.
    let other_dir = lan.lab.dir().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Pki::new(&other_dir, "other-ca", "10.42.0.0/16").unwrap();
    let stranger = other.issue("stranger", mesh_ip(4)).unwrap();
    let stranger = lan.node_from(
        4,
        &[1],
        &stranger,
        Extra {
            ca: Some(&other.ca_path),
            ..Extra::default()
        },
    );
    // The revoked node does not know it is revoked: its own config has no CRL.
    let ca = lan.pki.ca_path.clone();
    let revoked = lan.node_from(5, &[1], &revoked, Extra::default());
    // An expired certificate: meshd refuses to start on it.
    let now = time::OffsetDateTime::now_utc();
    let expired = lan
        .pki
        .issue_valid(
            "expired",
            mesh_ip(6),
            now - time::Duration::days(10),
            now - time::Duration::days(1),
        )
        .unwrap();
    let expired_ns = lan.host("expired", 6);
    let config = NodeConfig {
        name: "expired",
        ca: &ca,
        issued: &expired,
        crl: None,
        static_peers: &[(a.mesh_ip, underlay(1))],
        firewall: None,
        metrics: None,
        lighthouses: &[],
        mtu: None,
        busy_poll_us: None,
        park_after: None,
        extra: "",
    };
    let (config_path, _) = mesh::write_config(&lan.lab, &config).unwrap();
    let meshd = mesh::binary("meshd").unwrap();
    let refused = lan
        .lab
        .spawn(
            &expired_ns,
            "expired-meshd",
            &meshd,
            &["--config", &config_path.to_string_lossy()],
        )
        .unwrap();
    let status = lan.lab.wait_exit(refused, Duration::from_secs(10)).unwrap();
    assert!(!status.success());
    let log = lan.lab.proc(refused).log_text();
    assert!(log.contains("not trusted: expired at"), "{log}");
    // It still cannot talk its way in: its certificate, sent as a hello, is refused.
    lan.lab
        .exec(
            &expired_ns,
            PROBE,
            &[
                "hello",
                "--to",
                &underlay(1).to_string(),
                "--cert",
                &expired.cert_path.to_string_lossy(),
            ],
        )
        .unwrap();

    for bad in [&stranger, &revoked] {
        assert!(!lan.ping(&bad.ns, a.mesh_ip), "{} reached a", bad.name);
    }
    // meshd logs each refused certificate once: three distinct fingerprints, one per case.
    let refused = wait::until(
        "a to refuse three certificates",
        Duration::from_secs(10),
        || {
            let log = lan.lab.proc(a.proc).log_text();
            let fingerprints: std::collections::BTreeSet<String> = log
                .lines()
                .filter(|l| l.contains("refused peer certificate"))
                .filter_map(|l| {
                    let rest = l.split("fingerprint=").nth(1)?;
                    rest.split_whitespace().next().map(str::to_owned)
                })
                .collect();
            (fingerprints.len() >= 3).then_some(log)
        },
    )
    .unwrap();
    for reason in ["signed by another CA", "revoked at", "expired at"] {
        assert!(
            refused.contains(reason),
            "a never refused a certificate as {reason:?}"
        );
    }
    let status = a.status().unwrap();
    let peers: Vec<&str> = status.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(peers, ["b"], "{status:?}");
    assert!(lan.ping(&a.ns, b.mesh_ip), "the healthy pair keeps talking");
    assert!(lan.ping(&b.ns, a.mesh_ip));
}

#[test]
fn a_transfer_survives_its_sender_changing_address() {
    let mut lan = Lan::new();
    let a = lan.node("a", 1, &[2], None);
    let b = lan.node("b", 2, &[1], None);
    assert!(lan.ping(&a.ns, b.mesh_ip));
    let bytes = 64 * MIB;
    let transfer = traffic::start(&mut lan.lab, &b.ns, b.mesh_ip, bytes).unwrap();
    let args = &transfer.source_args;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let source = lan
        .lab
        .spawn(&a.ns, "source", Path::new(PROBE), &args)
        .unwrap();
    wait::until(
        "8 MiB to cross before the move",
        Duration::from_secs(30),
        || {
            let status = b.status().ok()?;
            (peer_status(&status, a.mesh_ip)?.rx_bytes > 8 * MIB).then_some(())
        },
    )
    .unwrap();
    lan.lab
        .ip(
            &a.ns,
            &["addr", "del", &format!("{}/24", lan_ip(1)), "dev", "eth0"],
        )
        .unwrap();
    lan.lab
        .addr(&a.ns, "eth0", &format!("{}/24", lan_ip(11)))
        .unwrap();
    let exit = lan.lab.wait_exit(source, Duration::from_secs(120)).unwrap();
    assert!(exit.success(), "{}", lan.lab.proc(source).log_text());
    let sent = lan.lab.proc(source).log_text();
    traffic::finish(&mut lan.lab, &transfer, &sent).unwrap();
    let status = b.status().unwrap();
    assert_eq!(
        peer_status(&status, a.mesh_ip).unwrap().endpoint,
        underlay(11).to_string()
    );
}

#[test]
fn hostile_datagrams_do_not_disturb_an_established_session() {
    let mut lan = Lan::new();
    let a = lan.node("a", 1, &[2], None);
    let b = lan.node("b", 2, &[1], None);
    let attacker = lan.host("attacker", 9);
    assert!(lan.ping(&a.ns, b.mesh_ip));
    let transfer = traffic::start(&mut lan.lab, &a.ns, a.mesh_ip, 16 * MIB).unwrap();
    let args = &transfer.source_args;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let source = lan
        .lab
        .spawn(&b.ns, "source", Path::new(PROBE), &args)
        .unwrap();
    for seed in ["1", "2", "3"] {
        lan.lab
            .exec(
                &attacker,
                PROBE,
                &[
                    "garbage",
                    "--to",
                    &underlay(1).to_string(),
                    "--count",
                    "2000",
                    "--seed",
                    seed,
                ],
            )
            .unwrap();
    }
    let exit = lan.lab.wait_exit(source, Duration::from_secs(120)).unwrap();
    assert!(exit.success(), "{}", lan.lab.proc(source).log_text());
    let sent = lan.lab.proc(source).log_text();
    traffic::finish(&mut lan.lab, &transfer, &sent).unwrap();
    assert!(lan.lab.proc(a.proc).exited().is_none(), "meshd a died");
    let status = a.status().unwrap();
    assert!(
        status.drops.malformed + status.drops.bad_cert + status.drops.unknown_peer >= 3000,
        "{status:?}"
    );
    assert_eq!(status.peers.len(), 1, "{status:?}");
    assert!(lan.ping(&a.ns, b.mesh_ip));
}

/// Runs `probe udp-ping` from `from` to `to` and returns its summary line.
fn udp_ping(lan: &Lan, from: &Ns, to: &str, count: u32) -> String {
    let out = lan
        .lab
        .exec(
            from,
            PROBE,
            &["udp-ping", "--to", to, "--count", &count.to_string()],
        )
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn echo(lan: &mut Lan, ns: &Ns, listen: &str) {
    let name = format!("echo-{}", listen.replace([':', '.'], "-"));
    lan.lab
        .spawn_listening(
            ns,
            &name,
            Path::new(PROBE),
            &["udp-echo", "--listen", listen],
        )
        .unwrap();
}

#[test]
fn the_firewall_admits_by_group_rejects_the_rest_and_lets_replies_in() {
    let mut lan = Lan::new();
    let server_cert = lan.pki.issue_in("server", mesh_ip(1), "servers").unwrap();
    let rules = "[firewall]\ninbound_action = \"reject\"\n\n\
                 [[firewall.outbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n\n\
                 [[firewall.inbound]]\nport = 7000\nproto = \"udp\"\ngroup = \"workers\"\n\n\
                 [[firewall.inbound]]\nport = \"7001-7002\"\nproto = \"tcp\"\ngroup = \"workers\"\n";
    let server = lan.node_from(
        1,
        &[],
        &server_cert,
        Extra {
            firewall: Some(rules),
            ..Extra::default()
        },
    );
    let worker_cert = lan.pki.issue_in("worker", mesh_ip(2), "workers").unwrap();
    let worker = lan.node_from(2, &[1], &worker_cert, Extra::default());
    let guest_cert = lan.pki.issue_in("guest", mesh_ip(3), "guests").unwrap();
    let guest = lan.node_from(3, &[1], &guest_cert, Extra::default());

    let service = format!("{}:7000", server.mesh_ip);
    echo(&mut lan, &server.ns, &service);
    // Allowed: the worker's group may reach UDP 7000.
    let answer = wait::until("the worker to be echoed", Duration::from_secs(20), || {
        let line = udp_ping(&lan, &worker.ns, &service, 5);
        line.starts_with("echoed 5 of 5").then_some(line)
    })
    .unwrap();
    println!("worker: {answer}");
    // Denied: the guest's group may not, and is told so (ICMP port unreachable).
    let answer = wait::until("the guest to be refused", Duration::from_secs(20), || {
        let line = udp_ping(&lan, &guest.ns, &service, 3);
        line.ends_with("refused 3").then_some(line)
    })
    .unwrap();
    assert!(answer.starts_with("echoed 0 of 3"), "{answer}");
    println!("guest: {answer}");
    // TCP is refused with a reset: the connection fails at once instead of timing out.
    let tcp = lan.lab.exec(
        &guest.ns,
        PROBE,
        &[
            "tcp-source",
            "--connect",
            &format!("{}:7001", server.mesh_ip),
            "--bytes",
            "1",
        ],
    );
    let err = format!("{:#}", tcp.unwrap_err());
    assert!(err.contains("refused"), "{err}");

    // A reply to the server's own outbound flow comes in, though no inbound rule names it.
    let guest_service = format!("{}:7100", guest.mesh_ip);
    echo(&mut lan, &guest.ns, &guest_service);
    let answer = udp_ping(&lan, &server.ns, &guest_service, 5);
    assert!(answer.starts_with("echoed 5 of 5"), "{answer}");

    let status = server.status().unwrap();
    let worker_drops = peer_status(&status, worker.mesh_ip).unwrap().drops;
    let guest_drops = peer_status(&status, guest.mesh_ip).unwrap().drops;
    assert_eq!(worker_drops.firewall_in, 0, "{status:?}");
    assert!(
        guest_drops.firewall_in >= 4,
        "3 datagrams and a SYN refused: {status:?}"
    );
    println!(
        "server counts: worker firewall_in={} guest firewall_in={}",
        worker_drops.firewall_in, guest_drops.firewall_in
    );
}

#[test]
fn sighup_reloads_rules_and_revocations_without_dropping_sessions() {
    let mut lan = Lan::new();
    let ca = lan.pki.ca_path.clone();
    let crl = lan.pki.crl(&[]).unwrap();
    let a_cert = lan.pki.issue("a", mesh_ip(1)).unwrap();
    let c_cert = lan.pki.issue("c", mesh_ip(3)).unwrap();
    let a = lan.node_from(
        1,
        &[],
        &a_cert,
        Extra {
            crl: Some(&crl),
            ..Extra::default()
        },
    );
    let b = lan.node("b", 2, &[1], None);
    let c = lan.node_from(3, &[1], &c_cert, Extra::default());
    assert!(lan.ping(&b.ns, a.mesh_ip) && lan.ping(&c.ns, a.mesh_ip));
    let handshake_before = peer_status(&a.status().unwrap(), b.mesh_ip)
        .unwrap()
        .last_handshake_secs;
    assert!(handshake_before.is_some());
    let log_lines = |lan: &mut Lan, needle: &str| {
        lan.lab
            .proc(a.proc)
            .log_text()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    };

    // A config that no longer parses is refused; the running one stays.
    std::fs::write(&a.config, "[pki\nbroken").unwrap();
    lan.lab.signal(a.proc, "HUP").unwrap();
    wait::until(
        "a to refuse the broken config",
        Duration::from_secs(10),
        || (log_lines(&mut lan, "reload refused") == 1).then_some(()),
    )
    .unwrap();
    assert!(
        lan.lab.proc(a.proc).log_text().contains("a.toml:1:"),
        "the refusal names the line"
    );
    assert_eq!(a.status().unwrap().peers.len(), 2);
    assert!(lan.ping(&b.ns, a.mesh_ip), "old rules still in force");

    // New rules (no more ICMP in), applied on the next SIGHUP, and a list that revokes c,
    // taken on that SIGHUP or when meshd next looks at the file, whichever comes first.
    lan.pki.crl(&[&c_cert.cert]).unwrap();
    let rules = "[[firewall.inbound]]\nport = \"any\"\nproto = \"udp\"\nhost = \"any\"\n\n\
                 [[firewall.outbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n";
    let config = NodeConfig {
        name: "a",
        ca: &ca,
        issued: &a_cert,
        crl: Some(&crl),
        static_peers: &[],
        firewall: Some(rules),
        metrics: None,
        lighthouses: &[],
        mtu: None,
        busy_poll_us: None,
        park_after: None,
        extra: "",
    };
    mesh::write_config(&lan.lab, &config).unwrap();
    lan.lab.signal(a.proc, "HUP").unwrap();
    wait::until("a to cut c off", Duration::from_secs(10), || {
        let status = a.status().ok()?;
        (status.peers.len() == 1 && status.peers[0].name == "b").then_some(())
    })
    .unwrap();
    assert_eq!(log_lines(&mut lan, "configuration reloaded"), 1);
    assert!(
        !lan.ping(&b.ns, a.mesh_ip),
        "ICMP is refused under the new rules"
    );
    let port = traffic::next_port();
    let service = format!("{}:{port}", a.mesh_ip);
    echo(&mut lan, &a.ns, &service);
    let answer = udp_ping(&lan, &b.ns, &service, 3);
    assert!(
        answer.starts_with("echoed 3 of 3"),
        "b's session carries on: {answer}"
    );
    let b_peer = peer_status(&a.status().unwrap(), b.mesh_ip)
        .unwrap()
        .clone();
    assert!(b_peer.drops.firewall_in >= 1, "{b_peer:?}");
    assert!(!lan.ping(&c.ns, a.mesh_ip), "c stays out");

    // The log level follows the file too: at trace, each firewall refusal is logged.
    let refusal = "firewall dropped inbound packet";
    assert_eq!(log_lines(&mut lan, refusal), 0, "not logged at debug");
    let text = std::fs::read_to_string(&a.config).unwrap().replace(
        "level = \"info,meshd=debug\"",
        "level = \"info,meshd=trace\"",
    );
    std::fs::write(&a.config, text).unwrap();
    lan.lab.signal(a.proc, "HUP").unwrap();
    wait::until("the second reload", Duration::from_secs(10), || {
        (log_lines(&mut lan, "configuration reloaded") == 2).then_some(())
    })
    .unwrap();
    assert!(!lan.ping(&b.ns, a.mesh_ip));
    wait::until("a refusal logged at trace", Duration::from_secs(10), || {
        (log_lines(&mut lan, refusal) >= 1).then_some(())
    })
    .unwrap();
}

#[test]
fn meshd_tells_systemd_it_is_ready_and_cleans_up_on_sigterm() {
    let mut lan = Lan::new();
    let issued = lan.pki.issue("solo", mesh_ip(1)).unwrap();
    let ns = lan.host("solo", 1);
    let ca = lan.pki.ca_path.clone();
    let config = NodeConfig {
        name: "solo",
        ca: &ca,
        issued: &issued,
        crl: None,
        static_peers: &[],
        firewall: None,
        metrics: None,
        lighthouses: &[],
        mtu: None,
        busy_poll_us: None,
        park_after: None,
        extra: "",
    };
    let (config_path, socket) = mesh::write_config(&lan.lab, &config).unwrap();
    // Stand in for systemd's notification socket.
    let notify_path = lan.lab.dir().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let meshd = mesh::binary("meshd").unwrap();
    let args = ["--config", &*config_path.to_string_lossy()];
    let proc = lan
        .lab
        .spawn_env(
            &ns,
            "solo",
            &meshd,
            &args,
            &[("NOTIFY_SOCKET", &notify_path)],
        )
        .unwrap();

    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("READY within 10 s");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "READY=1");
    // By READY, the TUN carries the mesh IP and the status socket answers.
    let addr = lan
        .lab
        .ip(&ns, &["-4", "addr", "show", "dev", "rma0"])
        .unwrap();
    assert!(String::from_utf8_lossy(&addr.stdout).contains("10.42.0.1/16"));
    assert_eq!(mesh::status(&socket).unwrap().name, "solo");

    lan.lab.signal(proc, "TERM").unwrap();
    let exit = lan.lab.wait_exit(proc, Duration::from_secs(10)).unwrap();
    assert!(exit.success(), "{}", lan.lab.proc(proc).log_text());
    let n = notify.recv(&mut buf).expect("STOPPING");
    assert_eq!(String::from_utf8_lossy(&buf[..n]).trim(), "STOPPING=1");
    assert!(
        lan.lab.ip(&ns, &["link", "show", "rma0"]).is_err(),
        "the TUN device is gone"
    );
    assert!(!socket.exists(), "the status socket is removed");
}

#[test]
fn metrics_are_served_in_the_prometheus_format() {
    let mut lan = Lan::new();
    let ca = lan.pki.ca_path.clone();
    let a_cert = lan.pki.issue("a", mesh_ip(1)).unwrap();
    let ns = lan.host("a", 1);
    let metrics_addr: SocketAddr = "127.0.0.1:9101".parse().unwrap();
    let config = NodeConfig {
        name: "a",
        ca: &ca,
        issued: &a_cert,
        crl: None,
        static_peers: &[],
        firewall: None,
        metrics: Some(metrics_addr),
        lighthouses: &[],
        mtu: None,
        busy_poll_us: None,
        park_after: None,
        extra: "",
    };
    let a = mesh::start(&mut lan.lab, &ns, &config).unwrap();
    let b = lan.node("b", 2, &[1], None);
    assert!(lan.ping(&b.ns, a.mesh_ip));
    lan.lab
        .exec(
            &b.ns,
            PROBE,
            &[
                "spoof",
                "--src",
                "10.42.0.9",
                "--to",
                &format!("{}:9", a.mesh_ip),
                "--count",
                "3",
            ],
        )
        .unwrap();
    wait::until(
        "a to count the forged packets",
        Duration::from_secs(10),
        || (peer_status(&a.status().ok()?, b.mesh_ip)?.drops.spoofed == 3).then_some(()),
    )
    .unwrap();

    let out = lan
        .lab
        .exec(
            &a.ns,
            PROBE,
            &[
                "http-get",
                "--addr",
                &metrics_addr.to_string(),
                "--path",
                "/metrics",
            ],
        )
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let sample = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
            .unwrap_or_else(|| panic!("{name} {label:?} missing in\n{text}"));
        match sample.value {
            prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(value("meshd_peers_up", None), 1.0);
    assert!(value("meshd_peer_handshakes_total", Some(("peer", "b"))) >= 1.0);
    assert!(value("meshd_peer_rx_bytes_total", Some(("peer", "b"))) > 0.0);
    assert!(value("meshd_peer_tx_bytes_total", Some(("peer", "b"))) > 0.0);
    assert_eq!(value("meshd_drops_total", Some(("reason", "spoofed"))), 3.0);
    assert_eq!(
        value("meshd_drops_total", Some(("reason", "bad_cert"))),
        0.0
    );
    let expiry = value("meshd_cert_expiry_seconds", Some(("cert", "node")));
    assert!(
        expiry > 29.0 * 86_400.0 && expiry <= 30.0 * 86_400.0,
        "{expiry}"
    );
    assert!(value("meshd_cert_expiry_seconds", Some(("cert", "ca"))) > expiry);
    let families = [
        "meshd_peers",
        "meshd_peers_up",
        "meshd_peer_handshakes_total",
        "meshd_drops_total",
        "meshd_cert_expiry_seconds",
    ];
    for family in families {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} has no TYPE line"
        );
    }
}

#[test]
fn meshd_ping_reports_path_endpoint_and_rtt() {
    let mut lan = Lan::new();
    let a = lan.node("a", 1, &[2], None);
    // b admits nothing inbound; meshd's probes are answered all the same, as tailscale ping's.
    let b_cert = lan.pki.issue("b", mesh_ip(2)).unwrap();
    let deny_in = "[[firewall.outbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n";
    let b = lan.node_from(
        2,
        &[1],
        &b_cert,
        Extra {
            firewall: Some(deny_in),
            ..Extra::default()
        },
    );
    let meshd = mesh::binary("meshd").unwrap();
    let ping = |target: &str| {
        std::process::Command::new(&meshd)
            .args(["ping", target, "-c", "3", "--socket"])
            .arg(&a.socket)
            .output()
            .unwrap()
    };
    // Before any exchange a only knows b's mesh IP (static peer); the probe sets up the session.
    let out = ping("10.42.0.2");
    assert!(out.status.success(), "{out:?}");
    // Now b's certificate has told a its name.
    let out = ping("b");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pongs: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("pong from b (10.42.0.2) direct 192.168.100.2:4242 in "))
        .collect();
    assert_eq!(pongs.len(), 3, "{text}");
    println!("{}", text.trim());
    assert!(
        !lan.ping(&a.ns, b.mesh_ip),
        "ICMP is still refused by b's firewall"
    );

    let out = ping("nobody");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nobody: no peer with that name"),
        "{out:?}"
    );
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Log lines above debug level (meshd logs `info,meshd=debug` in these tests).
fn log_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.contains("DEBUG") && !l.contains("TRACE"))
        .count()
}

/// A neighbour floods a node with what anyone can make: random bytes, handshakes with a valid
/// MAC1 (from the node's public key alone), hellos with another CA's certificate and with a
/// valid one, asking for answers with and without the padding that pays for them, 20,000 a
/// second for 10 s. A TCP stream through the node keeps at least half its rate, its memory and
/// its log stay within bounds, and it never answers with more bytes than it received.
#[test]
fn a_flood_of_forged_datagrams_costs_the_node_little() {
    let mut lan = Lan::new();
    let issued = lan.pki.issue("a", mesh_ip(1)).unwrap();
    let a = lan.node_from(1, &[2], &issued, Extra::default());
    let b = lan.node("b", 2, &[1], None);
    let attacker = lan.host("attacker", 9);
    assert!(lan.ping(&b.ns, a.mesh_ip));
    let key: String = issued
        .cert
        .wireguard_key()
        .unwrap()
        .0
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let valid = lan.pki.issue("c", mesh_ip(3)).unwrap();
    let other_dir = lan.lab.dir().join("other");
    std::fs::create_dir_all(&other_dir).unwrap();
    let other = Pki::new(&other_dir, "other-ca", "10.42.0.0/16").unwrap();
    let foreign = other.issue("x", mesh_ip(4)).unwrap();

    let baseline = lan.transfer(&b.ns, &a.ns, a.mesh_ip, 64 * MIB);
    // About eight seconds of the stream at that rate, all inside the flood.
    let bytes = ((baseline * 1e6 / 8.0) * 8.0) as u64;
    let pid = lan.lab.proc(a.proc).pid();
    let (rss_before, lines_before) = (rss_kib(pid), log_lines(&lan.lab.proc(a.proc).log_text()));
    let to = underlay(1).to_string();
    let certs = [
        valid.cert_path.to_string_lossy().into_owned(),
        foreign.cert_path.to_string_lossy().into_owned(),
    ];
    let flood = lan
        .lab
        .spawn(
            &attacker,
            "flood",
            Path::new(PROBE),
            &[
                "flood",
                "--to",
                &to,
                "--key",
                &key,
                "--cert",
                &certs[0],
                "--cert",
                &certs[1],
                "--rate",
                "20000",
                "--seconds",
                "10",
            ],
        )
        .unwrap();
    // The stream starts once the flood is arriving.
    wait::until("the flood to reach meshd", Duration::from_secs(5), || {
        (a.status().ok()?.drops.malformed > 100).then_some(())
    })
    .unwrap();
    let flooded = lan.transfer(&b.ns, &a.ns, a.mesh_ip, bytes);
    let exit = lan.lab.wait_exit(flood, Duration::from_secs(60)).unwrap();
    let report = lan.lab.proc(flood).log_text();
    assert!(exit.success(), "{report}");
    let (rss_after, lines_after) = (rss_kib(pid), log_lines(&lan.lab.proc(a.proc).log_text()));
    let number = |key: &str| -> u64 {
        let words: Vec<&str> = report.split_whitespace().collect();
        let at = words.iter().position(|w| *w == key).unwrap();
        words[at + 1].parse().unwrap()
    };
    let words: Vec<&str> = report.split_whitespace().collect();
    let (sent, sent_bytes) = (number("sent"), words[4].parse::<u64>().unwrap());
    let (answers, answer_bytes) = (number("answers"), words[8].parse::<u64>().unwrap());
    let largest = number("largest");
    println!(
        "flood: {sent} datagrams ({sent_bytes} bytes) in {}; answered {answers} ({answer_bytes} bytes, largest {largest}); \
         stream {baseline:.0} Mbit/s before, {flooded:.0} during ({:.0}%); meshd RSS {rss_before} -> {rss_after} KiB; \
         {} log lines",
        words.last().unwrap(),
        100.0 * flooded / baseline,
        lines_after - lines_before
    );
    assert!(sent >= 150_000, "the flood was {sent} datagrams");
    assert!(
        flooded >= baseline / 2.0,
        "{flooded:.0} of {baseline:.0} Mbit/s"
    );
    assert!(
        rss_after <= rss_before + 32 * 1024,
        "{rss_before} -> {rss_after} KiB"
    );
    assert!(
        lines_after - lines_before <= 30,
        "{} lines",
        lines_after - lines_before
    );
    assert!(answer_bytes <= sent_bytes, "{answer_bytes} > {sent_bytes}");
    assert!(largest <= 1200, "an answer of {largest} bytes");
    assert!(lan.lab.proc(a.proc).exited().is_none(), "meshd a died");
    assert!(lan.ping(&b.ns, a.mesh_ip));
}

fn dig(lan: &Lan, ns: &Ns, server: Ipv4Addr, name: &str) -> (String, Vec<String>, u64) {
    names::dig(&lan.lab, ns, server, name).unwrap()
}

#[test]
fn mesh_names_resolve_on_the_mesh_ip_and_a_revoked_name_stops_resolving() {
    let mut lan = Lan::new();
    let crl = lan.pki.crl(&[]).unwrap();
    let a = lan.node("a", 1, &[], Some(&crl));
    let b = lan.node("b", 2, &[1], None);
    let c_cert = lan.pki.issue("worker-c", mesh_ip(3)).unwrap();
    let c = lan.node_from(3, &[1], &c_cert, Extra::default());
    assert!(lan.ping(&b.ns, a.mesh_ip) && lan.ping(&c.ns, a.mesh_ip));

    // From a's own machine: its peers by name, itself, and names it has no certificate for.
    let found = |ip: Ipv4Addr| ("NOERROR".to_owned(), vec![ip.to_string()]);
    let (status, answers, _) = dig(&lan, &a.ns, a.mesh_ip, "worker-c.mesh");
    assert_eq!((status, answers), found(c.mesh_ip));
    let (status, answers, _) = dig(&lan, &a.ns, a.mesh_ip, "B.Mesh.");
    assert_eq!((status, answers), found(b.mesh_ip));
    let (status, answers, _) = dig(&lan, &a.ns, a.mesh_ip, "a.mesh");
    assert_eq!((status, answers), found(a.mesh_ip));
    let (status, answers, msec) = dig(&lan, &a.ns, a.mesh_ip, "nobody.mesh");
    assert_eq!((status.as_str(), answers.len()), ("NXDOMAIN", 0));
    assert!(msec < 100, "NXDOMAIN took {msec} ms");
    let (status, _, _) = dig(&lan, &a.ns, a.mesh_ip, "example.com");
    assert_eq!(
        status, "REFUSED",
        "names outside the mesh domain are not meshd's"
    );

    // A peer asks through the tunnel; a's inbound rules let it.
    let (status, answers, _) = dig(&lan, &b.ns, a.mesh_ip, "worker-c.mesh");
    assert_eq!((status, answers), found(c.mesh_ip));

    // A host on the LAN that routes the mesh IP to a's underlay address reaches the socket
    // (the weak host model), but a query from outside the mesh gets no answer.
    let outsider = lan.host("outsider", 9);
    let route = format!("{}/32", a.mesh_ip);
    lan.lab
        .ip(
            &outsider,
            &["route", "add", &route, "via", &lan_ip(1).to_string()],
        )
        .unwrap();
    let server = format!("@{}", a.mesh_ip);
    let asked = lan.lab.exec(
        &outsider,
        "dig",
        &[&server, "worker-c.mesh", "A", "+time=1", "+tries=1"],
    );
    assert!(asked.is_err(), "answered outside the mesh: {asked:?}");

    // The system's resolver, pointed at meshd (`ip netns exec` mounts /etc/netns/NS/*).
    let _resolver = NetnsResolver::point(&a.ns, a.mesh_ip).unwrap();
    let out = lan
        .lab
        .exec(&a.ns, "getent", &["hosts", "worker-c.mesh"])
        .unwrap();
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(line.starts_with(&format!("{} ", c.mesh_ip)), "{line}");
    assert!(
        lan.lab
            .exec(&a.ns, "getent", &["hosts", "nobody.mesh"])
            .is_err()
    );

    // A list that revokes worker-c: once a has it, the name is gone.
    lan.pki.crl(&[&c_cert.cert]).unwrap();
    lan.lab.signal(a.proc, "HUP").unwrap();
    wait::until(
        "worker-c.mesh to stop resolving",
        Duration::from_secs(10),
        || {
            let (status, _, _) = dig(&lan, &a.ns, a.mesh_ip, "worker-c.mesh");
            (status == "NXDOMAIN").then_some(())
        },
    )
    .unwrap();
    let (status, answers, _) = dig(&lan, &a.ns, a.mesh_ip, "b.mesh");
    assert_eq!((status, answers), found(b.mesh_ip));
}

/// Standard output of a command that must succeed, as text.
fn stdout(out: anyhow::Result<std::process::Output>) -> String {
    String::from_utf8_lossy(&out.unwrap().stdout).into_owned()
}

#[test]
fn systemd_resolved_sends_the_mesh_domain_and_nothing_else_to_meshd() {
    let mut lan = Lan::new();
    let b = lan.node("b", 2, &[1], None);
    let ns = lan.host("a", 1);
    let machine = ResolvedMachine::start(&mut lan.lab, &ns).unwrap();
    let issued = lan.pki.issue("a", mesh_ip(1)).unwrap();
    let ca = lan.pki.ca_path.clone();
    let statics = [(mesh_ip(2), underlay(2))];
    let node = |extra| NodeConfig {
        name: "a",
        ca: &ca,
        issued: &issued,
        crl: None,
        static_peers: &statics,
        firewall: None,
        metrics: None,
        lighthouses: &[],
        mtu: None,
        busy_poll_us: None,
        park_after: None,
        extra,
    };
    let a = machine.start_meshd(&mut lan.lab, &ns, &node("")).unwrap();
    assert!(lan.ping(&ns, b.mesh_ip));
    assert!(
        lan.lab
            .proc(a.proc)
            .log_text()
            .contains("mesh domain registered with systemd-resolved")
    );

    // resolved holds the mesh domain for the TUN link only, served by meshd on its mesh IP.
    let link = |verb| stdout(machine.exec("resolvectl", &[verb, "rma0"]));
    assert!(
        link("dns").trim_end().ends_with("(rma0): 10.42.0.1"),
        "{}",
        link("dns")
    );
    assert!(
        link("domain").trim_end().ends_with("(rma0): ~mesh"),
        "{}",
        link("domain")
    );
    assert!(link("default-route").trim_end().ends_with("(rma0): no"));

    // A mesh name through resolved, and through the system's resolver (glibc asks resolved's
    // stub on 127.0.0.53, which routes the name to the link).
    let query = stdout(machine.exec("resolvectl", &["query", "--cache=no", "b.mesh"]));
    assert!(
        query.contains("b.mesh: 10.42.0.2") && query.contains("link: rma0"),
        "{query}"
    );
    let hosts = stdout(machine.exec("getent", &["hosts", "b.mesh"]));
    assert!(hosts.starts_with("10.42.0.2 "), "{hosts}");
    assert!(machine.exec("getent", &["hosts", "nobody.mesh"]).is_err());
    // Any other name is not routed to the link; this machine has no other server for it.
    let other = machine
        .exec("resolvectl", &["query", "--cache=no", "example.com"])
        .unwrap_err()
        .to_string();
    assert!(other.contains("No appropriate name servers"), "{other}");

    // On shutdown meshd hands the link's settings back.
    lan.lab.signal(a.proc, "TERM").unwrap();
    let exit = lan.lab.wait_exit(a.proc, Duration::from_secs(10)).unwrap();
    let log = lan.lab.proc(a.proc).log_text();
    assert!(exit.success(), "{log}");
    assert!(
        log.contains("mesh domain unregistered from systemd-resolved"),
        "{log}"
    );
    assert!(machine.exec("getent", &["hosts", "b.mesh"]).is_err());

    // Switched off, meshd still answers on its mesh IP but leaves resolved alone.
    let off = "[dns]\nsystemd_resolved = false\n";
    let a = machine.start_meshd(&mut lan.lab, &ns, &node(off)).unwrap();
    assert!(
        link("domain").trim_end().ends_with("(rma0):"),
        "{}",
        link("domain")
    );
    assert!(lan.ping(&ns, b.mesh_ip));
    let (status, answers, _) = dig(&lan, &ns, a.mesh_ip, "b.mesh");
    assert_eq!(
        (status.as_str(), answers),
        ("NOERROR", vec!["10.42.0.2".to_owned()])
    );
}
