//! The README's deployment guide, followed as written: every `sh` block of "Deploying it" runs
//! in order on the machine it names, and the files the text says to carry are carried. Each
//! machine is a namespace of its own with its own install of the package (see
//! `integration::machine`): the root CA's has no network; the enrollment service and the
//! lighthouse are public hosts (the lighthouse at the example configs' 198.51.100.7); routerd's
//! machine and the worker are behind NAT. The guide ends with a call through routerd reaching
//! the worker that joined, and that worker retired; the test checks both.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use integration::guide::{self, Step};
use integration::internet::{Internet, Nat};
use integration::lab::Lab;
use integration::machine::Machine;
use integration::{package, wait};

const LIGHTHOUSE_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const ENROLL_HOST: &str = "enroll.example.org";
const CALL: &str = "/service/rag-embeddings/hello";

/// The last lines each machine's daemons wrote (the stand-in systemctl's logs), for a failure.
fn daemon_logs(machines: &BTreeMap<String, Machine>) -> String {
    let mut text = String::new();
    for machine in machines.values() {
        if let Ok(out) = machine.run("tail -n 30 /var/log/standin/*.log 2>/dev/null || true") {
            text.push_str(&format!(
                "\n=== {} ===\n{}",
                machine.name,
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    text
}

#[test]
fn the_deployment_guide_works_as_written() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let steps = guide::steps(&readme).unwrap();
    let began = Instant::now();

    let mut net = Internet::new(Lab::new().unwrap()).unwrap();
    let ca = net.lab.namespace("ca").unwrap();
    let (enroll, enroll_ip) = net.public_host("enroll").unwrap();
    let lighthouse = net.public_host_at("lighthouse", LIGHTHOUSE_IP).unwrap();
    let mut home = net.site("routerd-router", Nat::Cone).unwrap();
    let (routerd, _) = net.host_behind(&mut home, "routerd").unwrap();
    let mut home = net.site("worker-router", Nat::Cone).unwrap();
    let (worker, _) = net.host_behind(&mut home, "worker").unwrap();

    // Each machine, with the package carried to it.
    let deb = package::deb().unwrap();
    let mut machines = BTreeMap::new();
    for (name, ns) in [
        ("ca", &ca),
        ("enroll", &enroll),
        ("lighthouse", &lighthouse),
        ("routerd", &routerd),
        ("worker", &worker),
    ] {
        let machine = Machine::new(&mut net.lab, ns, name).unwrap();
        machine.sh(&format!("cp {} /root/", deb.display())).unwrap();
        machines.insert(name.to_owned(), machine);
    }

    // What stands in for the internet's side of step 5: the worker finds enroll.example.org
    // at the enrollment machine, where a TLS terminator with a certificate the worker's system
    // roots trust (as Cloudflare's edge would be) forwards to the service's listener.
    let tls = rcgen::generate_simple_self_signed(vec![ENROLL_HOST.to_owned()]).unwrap();
    let (cert_pem, key_pem) = (
        net.lab.dir().join("edge.crt"),
        net.lab.dir().join("edge.key"),
    );
    std::fs::write(&cert_pem, tls.cert.pem()).unwrap();
    std::fs::write(&key_pem, tls.signing_key.serialize_pem()).unwrap();
    let listen = format!(
        "OPENSSL-LISTEN:443,reuseaddr,fork,verify=0,cert={},key={}",
        cert_pem.display(),
        key_pem.display()
    );
    net.lab
        .spawn(
            &enroll,
            "edge",
            std::path::Path::new("socat"),
            &[&listen, "TCP:127.0.0.1:8090"],
        )
        .unwrap();
    wait::until(
        "the TLS terminator to listen",
        Duration::from_secs(10),
        || {
            let out = net
                .lab
                .exec(&enroll, "ss", &["-Hltn", "sport = :443"])
                .ok()?;
            (!out.stdout.is_empty()).then_some(())
        },
    )
    .unwrap();
    let w = &machines["worker"];
    w.sh(&format!("echo '{enroll_ip} {ENROLL_HOST}' >> /etc/hosts"))
        .unwrap();
    w.write("edge-root.pem", tls.cert.pem().as_bytes()).unwrap();
    w.sh("cat edge-root.pem >> /etc/ssl/certs/ca-certificates.crt && rm edge-root.pem")
        .unwrap();

    // The guide, block by block.
    let mut outputs = Vec::new();
    let mut skipped = Vec::new();
    for step in &steps {
        match step {
            Step::Run {
                machine,
                script,
                line,
            } => {
                let on = machines
                    .get(machine)
                    .unwrap_or_else(|| panic!("README line {line}: no machine {machine:?}"));
                let out = on.run(script).unwrap();
                let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
                assert!(
                    out.status.success(),
                    "README line {line}, on {machine}, failed ({}):\n{script}\n--- stdout\n{stdout}\
                     --- stderr\n{}{}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr),
                    daemon_logs(&machines)
                );
                outputs.push((*line, script.clone(), stdout));
            }
            Step::Carry { from, to, files } => {
                for file in files {
                    let bytes = machines[from].read(file).unwrap();
                    machines[to].write(file, &bytes).unwrap();
                }
            }
            Step::Skip { why, .. } => skipped.push(why.clone()),
        }
    }
    assert_eq!(
        skipped,
        [
            "step-6-in-brief",
            "needs-a-cloudflare-account",
            "needs-a-cloudflare-account"
        ],
        "only the summary of step 6 and cloudflared are not run"
    );

    // The call through routerd reached the joined worker's service.
    let (line, _, answer) = outputs
        .iter()
        .find(|(_, script, _)| script.contains(CALL))
        .expect("the guide makes a call through routerd");
    assert_eq!(answer.trim(), "hello from worker-7", "README line {line}");
    let joined = machines["worker"].sh("cat /etc/meshd/node.crt").unwrap();
    assert!(joined.contains("BEGIN CERTIFICATE"));

    // Retired: the lists reach routerd's meshd through the lighthouse and routerd itself, and
    // the worker stops answering.
    let status = wait::until(
        "the retired worker to stop answering",
        Duration::from_secs(60),
        || {
            let code = machines["routerd"]
                .sh(&format!(
                    "curl -s -o /dev/null -w '%{{http_code}}' http://127.0.0.1:8080{CALL}"
                ))
                .ok()?;
            (code != "200").then_some(code)
        },
    )
    .unwrap_or_else(|e| panic!("{e}{}", daemon_logs(&machines)));
    eprintln!(
        "guide: {} blocks run on {} machines, {} skipped; retired worker answered {status}; \
         {:.1} s in all",
        outputs.len(),
        machines.len(),
        skipped.len(),
        began.elapsed().as_secs_f64()
    );
}
