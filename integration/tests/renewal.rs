//! Certificates renewed while traffic runs, in namespaces behind real NAT: an operator's root
//! and issuing CA made with `rma-ca`, `rma-ca serve` on a public host, a lighthouse, and two
//! machines that join with `meshd join` and get 20-second certificates. A checked TCP stream
//! and a ping run through their tunnel for longer than the first certificates live: meshd
//! renews through the service, the peer and the lighthouse take the new certificate on the
//! session and connection they have, and nothing is lost or reconnected.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use integration::enroll::Operator;
use integration::internet::{Internet, Nat};
use integration::lab::{Lab, Ns};
use integration::mesh::{self, MeshNode, Started, binary};
use integration::{traffic, wait};
use rma_ca::NodeCert;

const MIB: u64 = 1 << 20;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `meshd join` in `ns` into its own directory, then meshd started on what it wrote.
fn join_and_start(lab: &mut Lab, ns: &Ns, url: &str, token: &str, name: &str) -> MeshNode {
    let dir = lab.dir().join(name);
    let meshd = binary("meshd").unwrap();
    let out = lab
        .exec(
            ns,
            path(&meshd),
            &["join", url, token, "--name", name, "--dir", path(&dir)],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "meshd join: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let cert = NodeCert::from_bytes(&std::fs::read(dir.join("node.crt")).unwrap()).unwrap();
    let started = Started {
        name,
        mesh_ip: cert.mesh_ip(),
        config: dir.join("meshd.toml"),
        socket: dir.join("meshd.sock"),
    };
    mesh::start_config(lab, ns, started, &meshd, &[]).unwrap()
}

#[test]
fn certificates_renew_under_a_running_stream_without_losing_a_byte_or_a_session() {
    let lab = Lab::new().unwrap();
    let mut net = Internet::new(lab).unwrap();
    let operator = Operator::new(net.lab.dir()).unwrap();
    let lighthouse = operator
        .sign_offline("lighthouse-1", "10.42.0.254", "lighthouses")
        .unwrap();

    let (lh_ns, lh_ip) = net.public_host("lighthouse").unwrap();
    let lh_config =
        mesh::write_lighthouse_config(&net.lab, &operator.ca, &lighthouse, None, lh_ip).unwrap();
    let lighthouse =
        mesh::start_lighthouse(&mut net.lab, &lh_ns, "lighthouse-1", &lh_config, lh_ip).unwrap();

    // The bundle: the lighthouse, every packet allowed, the status socket beside the config.
    let bundle = format!(
        "listen = \"0.0.0.0:4242\"\n\n[status]\nsocket = \"meshd.sock\"\n\n[log]\nlevel = \
         \"info,meshd=debug\"\n\n{}\n[[lighthouse]]\nname = \"lighthouse-1\"\naddress = \
         \"{}\"\n",
        mesh::ALLOW_ALL,
        lighthouse.address
    );
    operator.bundle("lab", &bundle).unwrap();
    let (enroll_ns, enroll_ip) = net.public_host("enroll").unwrap();
    let listen = format!("{enroll_ip}:8090");
    operator
        .serve(
            &mut net.lab,
            &enroll_ns,
            &listen,
            &["--cert-duration", "20s"],
        )
        .unwrap();
    let url = format!("http://{listen}");
    let token = operator.token(&url, 2, "lab").unwrap();
    let token = token.as_str();

    let mut site_a = net.site("a-router", Nat::Cone).unwrap();
    let (a_ns, _) = net.host_behind(&mut site_a, "a").unwrap();
    let mut site_b = net.site("b-router", Nat::Cone).unwrap();
    let (b_ns, _) = net.host_behind(&mut site_b, "b").unwrap();
    let a = join_and_start(&mut net.lab, &a_ns, &url, token, "a");
    let b = join_and_start(&mut net.lab, &b_ns, &url, token, "b");
    let first = a.status().unwrap().cert_not_after;
    for node in [&a, &b] {
        node.wait_registered(Duration::from_secs(10)).unwrap();
    }
    let out = net
        .lab
        .exec(
            &a_ns,
            "ping",
            &["-c", "1", "-W", "10", &b.mesh_ip.to_string()],
        )
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    a.wait_session(b.mesh_ip, Duration::from_secs(10)).unwrap();
    let handshakes = |node: &MeshNode, of: Ipv4Addr| {
        let status = node.status().unwrap();
        let peer = status
            .peers
            .iter()
            .find(|p| p.mesh_ip == of.to_string())
            .unwrap();
        (peer.handshakes, peer.cert_not_after.clone())
    };
    let before = handshakes(&b, a.mesh_ip);

    // 16 MiB in 64 KiB steps a tenth of a second apart (about 26 s), and a ping every 0.2 s
    // meanwhile: both outlast a's first certificate.
    let ping = net
        .lab
        .spawn(
            &b_ns,
            "ping",
            Path::new("ping"),
            &["-i", "0.2", "-c", "120", "-W", "1", &a.mesh_ip.to_string()],
        )
        .unwrap();
    let transfer = traffic::start(&mut net.lab, &b_ns, b.mesh_ip, 16 * MIB).unwrap();
    let mut args: Vec<&str> = transfer.source_args.iter().map(String::as_str).collect();
    args.extend(["--pace-ms", "100"]);
    let sent = net
        .lab
        .exec(&a_ns, &traffic::probe_path().unwrap(), &args)
        .unwrap();
    let rate = traffic::finish(
        &mut net.lab,
        &transfer,
        &String::from_utf8_lossy(&sent.stdout),
    )
    .unwrap();
    net.lab.wait_exit(ping, Duration::from_secs(60)).unwrap();
    let pinged = net.lab.proc(ping).log_text();
    assert!(pinged.contains(" 0% packet loss"), "{pinged}");

    let now = time::OffsetDateTime::now_utc();
    let first_end =
        time::OffsetDateTime::parse(&first, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert!(
        now > first_end,
        "the stream outlived a's first certificate ({first})"
    );
    let status = a.status().unwrap();
    assert!(status.renewals.succeeded >= 1, "{:?}", status.renewals);
    assert_eq!(status.renewals.failed, 0, "{:?}", status.renewals);
    assert_ne!(status.cert_not_after, first);
    // b holds a's newest certificate on the same session; the lighthouse kept both
    // connections and hands out the renewed certificates.
    wait::until(
        "b to hold a's newest certificate",
        Duration::from_secs(20),
        || {
            let current = a.status().ok()?.cert_not_after;
            (handshakes(&b, a.mesh_ip).1 == current).then_some(())
        },
    )
    .unwrap();
    assert_eq!(handshakes(&b, a.mesh_ip).0, before.0, "no new session");
    let lighthouse_log = net.lab.proc(lighthouse.proc).log_text();
    assert!(
        lighthouse_log.contains("node renewed its certificate"),
        "{lighthouse_log}"
    );
    assert!(
        !lighthouse_log.contains("certificate expired"),
        "{lighthouse_log}"
    );
    let a_log = net.lab.proc(a.proc).log_text();
    assert!(
        a_log.contains("certificate renewed; every session kept"),
        "{a_log}"
    );
    // Neither ended (a clean end logs the first) nor cut (the second) once connected.
    for dropped in ["lighthouse connection ended", "lighthouse: connection"] {
        assert!(!a_log.contains(dropped), "{a_log}");
    }
    eprintln!(
        "renewals by a: {}, stream {rate:.1} Mbit/s paced, a's certificate now valid until {}",
        status.renewals.succeeded, status.cert_not_after
    );
}
