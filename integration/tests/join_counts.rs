//! The test that counts: a new machine joins with the operator's token and serves calls.
//!
//! In namespaces behind real NAT: the operator's machine runs `rma-ca serve` with an issuing
//! CA (the root stays in a directory the service never opens), a public lighthouse, a routerd
//! behind a NAT with its meshd, and a new worker namespace with nothing but the installed
//! package and a token. The operator makes the token; on the worker, the package is installed
//! and `meshd join` runs; meshd starts (as `--start` has systemd start it), registers with
//! routerd, is assigned a service, starts it, and a call through routerd's public listener
//! reaches it. The test counts the operator's commands for the worker and the seconds from
//! `join` to the first answered call, and checks that the token cannot be used twice.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use integration::enroll::Operator;
use integration::internet::{Internet, Nat};
use integration::lab::{Lab, Ns};
use integration::mesh::{self, NodeConfig, Started, binary};
use integration::package::{self, ScratchRoot};
use integration::{traffic, wait};
use rma_ca::NodeCert;

const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789";
const ROUTERD_IP: Ipv4Addr = Ipv4Addr::new(10, 42, 0, 1);
const PUBLIC: &str = "127.0.0.1:8080";

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn start_routerd(lab: &mut Lab, ns: &Ns, config: &Path) -> usize {
    mesh::start_routerd(lab, ns, config).unwrap()
}

/// A call through routerd's public listener from routerd's machine (where cloudflared runs).
fn call(routerd_ns: &Ns, target: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = traffic::http(
        routerd_ns,
        PUBLIC,
        &format!("GET {target}"),
        None,
        &[],
        None,
    )
    .unwrap();
    (status, body)
}

#[test]
fn a_new_machine_joins_with_one_token_and_serves_a_call_through_routerd() {
    let lab = Lab::new().unwrap();
    let mut net = Internet::new(lab).unwrap();
    let dir = net.lab.dir().to_owned();
    // The commands run for this worker, as the operator and the volunteer would type them.
    let mut commands: Vec<String> = Vec::new();

    // Once, before any worker: a root (offline), an issuing CA it signed (online), the
    // lighthouse's and routerd's certificates, the root's list, and the worker bundle.
    let operator = Operator::new(&dir).unwrap();
    let lighthouse_issued = operator
        .sign_offline("lighthouse-1", "10.42.0.254", "lighthouses")
        .unwrap();
    let routerd_issued = operator
        .sign_offline("routerd", "10.42.0.1", "routerd")
        .unwrap();
    let (ca, crl) = (operator.ca.clone(), operator.crl.clone());

    let (lh_ns, lh_ip) = net.public_host("lighthouse").unwrap();
    let lh_config =
        mesh::write_lighthouse_config(&net.lab, &ca, &lighthouse_issued, Some(&crl), lh_ip)
            .unwrap();
    let lighthouse =
        mesh::start_lighthouse(&mut net.lab, &lh_ns, "lighthouse-1", &lh_config, lh_ip).unwrap();

    // routerd's machine, enrolled offline, behind a NAT.
    let mut site = net.site("routerd-router", Nat::Cone).unwrap();
    let (r_ns, _) = net.host_behind(&mut site, "routerd").unwrap();
    let routerd_node = mesh::start(
        &mut net.lab,
        &r_ns,
        &NodeConfig {
            name: "routerd",
            ca: &ca,
            issued: &routerd_issued,
            crl: Some(&crl),
            static_peers: &[],
            firewall: None,
            metrics: None,
            lighthouses: &[lighthouse.entry()],
            mtu: None,
            extra: "",
        },
    )
    .unwrap();
    routerd_node
        .wait_registered(Duration::from_secs(10))
        .unwrap();
    let routerd_config = dir.join("routerd.toml");
    std::fs::write(
        &routerd_config,
        format!(
            "[listen]\npublic = \"{PUBLIC}\"\nmesh = \"{ROUTERD_IP}:8080\"\n\
             [pki]\nca = {ca:?}\ncrl = {crl:?}\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n\
             [store]\npath = {store:?}\n[health]\ninterval = \"500ms\"\ntimeout = \"400ms\"\n\
             [log]\nlevel = \"info\"\n\
             [[service]]\nname = \"rag-embeddings\"\ntier = \"cpu\"\nreplicas = 1\n",
            store = dir.join("registry.db"),
        ),
    )
    .unwrap();
    let _routerd = start_routerd(&mut net.lab, &r_ns, &routerd_config);

    // The enrollment service on the operator's public host, with the bundle every worker
    // gets: the lighthouse, routerd, calls from routerd let in, and what the machine can run.
    let testsvc = binary("testsvc").unwrap();
    let bundle = format!(
        "listen = \"0.0.0.0:4242\"\n\n[status]\nsocket = \"meshd.sock\"\n\n[log]\nlevel = \"info\"\n\n\
         [[firewall.outbound]]\nport = \"any\"\nproto = \"any\"\nhost = \"any\"\n\n\
         [[firewall.inbound]]\nport = \"any\"\nproto = \"icmp\"\nhost = \"any\"\n\n\
         [[firewall.inbound]]\nport = \"8100-8299\"\nproto = \"tcp\"\ngroup = \"routerd\"\n\n\
         [[lighthouse]]\nname = \"lighthouse-1\"\naddress = \"{}\"\n\n\
         [coordinator]\nurls = [\"http://{ROUTERD_IP}:8080\"]\n\n\
         [[service]]\nname = \"rag-embeddings\"\nport = 8101\nhealth = \"/health\"\n\
         exec = [{testsvc:?}, \"--worker\", \"volunteer\"]\nstart_timeout = \"20s\"\n",
        lighthouse.address
    );
    operator.bundle("worker", &bundle).unwrap();
    let (op_ns, op_ip) = net.public_host("operator").unwrap();
    let listen = format!("{op_ip}:8090");
    operator
        .serve(&mut net.lab, &op_ns, &listen, &["--crl", path(&crl)])
        .unwrap();
    let url = format!("http://{listen}");

    // For this worker, the operator: one token.
    let token = operator.token(&url, 1, "worker").unwrap();
    commands.push(format!(
        "rma-ca token create --dir {} --groups workers --name-prefix worker- --uses 1 --ttl 1h \
         --bundle worker --url {url}",
        operator.issuing.display()
    ));

    // On the new machine (behind its own NAT): install the package, then join.
    let mut site = net.site("volunteer-router", Nat::Cone).unwrap();
    let (w_ns, _) = net.host_behind(&mut site, "volunteer").unwrap();
    let scratch = ScratchRoot::new().unwrap();
    let deb = package::deb().unwrap();
    commands.push(format!("dpkg -i {}", deb.display()));
    scratch.dpkg(&["--install", path(&deb)]).unwrap();
    let meshd = scratch.file("usr/bin/meshd");
    let etc = scratch.file("etc/meshd");
    let started = Instant::now();
    commands.push(format!("RMA_JOIN_TOKEN={token} meshd join {url} --start"));
    // The token in the environment, as `rma-ca token create` prints the command.
    let join = |lab: &Lab, name: &str, dir: &Path| {
        let env = format!("RMA_JOIN_TOKEN={token}");
        let args = [
            &env,
            path(&meshd),
            "join",
            &url,
            "--name",
            name,
            "--dir",
            path(dir),
        ];
        lab.exec(&w_ns, "env", &args)
    };
    let joined = join(&net.lab, "volunteer", &etc).unwrap();
    let said = String::from_utf8_lossy(&joined.stdout).into_owned();
    assert!(
        joined.status.success(),
        "meshd join: {said}{}",
        String::from_utf8_lossy(&joined.stderr)
    );
    assert!(said.contains("joined as worker-volunteer"), "{said}");
    assert!(
        etc.join("meshd.toml.example").is_file() && !etc.join("meshd.toml.before-join").exists(),
        "the package's example is a file of its own, which the join leaves alone"
    );
    let join_secs = started.elapsed().as_secs_f64();

    // `--start` has systemd run the installed meshd on the written config; here, the lab does.
    let cert = NodeCert::from_bytes(&std::fs::read(etc.join("node.crt")).unwrap()).unwrap();
    let _worker = mesh::start_config(
        &mut net.lab,
        &w_ns,
        Started {
            name: "volunteer",
            mesh_ip: cert.mesh_ip(),
            config: etc.join("meshd.toml"),
            socket: etc.join("meshd.sock"),
        },
        &meshd,
        &[],
    )
    .unwrap();
    let answered = wait::until(
        "a call through routerd to reach the new worker",
        Duration::from_secs(60),
        || {
            let (status, body) = call(&r_ns, "/service/rag-embeddings/hello");
            (status == 200 && body["worker"] == "volunteer").then_some(body)
        },
    )
    .unwrap();
    let first_call_secs = started.elapsed().as_secs_f64();
    assert_eq!(answered["service"], "rag-embeddings", "{answered}");

    // The token is spent: a second machine with it is refused, and nothing is written.
    let elsewhere = dir.join("second-machine");
    let why = join(&net.lab, "other", &elsewhere).unwrap_err().to_string();
    assert!(why.contains("the token is used up"), "{why}");
    assert!(!elsewhere.exists());

    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    eprintln!(
        "operator commands for the worker: {} ({commands:?}); join took {join_secs:.2} s; \
         first call answered {first_call_secs:.1} s after join started",
        commands.len()
    );
}
