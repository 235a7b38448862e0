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

use std::path::Path;
use std::time::{Duration, Instant};

use integration::internet::Nat;
use integration::join_site::{JoinSite, SERVICE};
use integration::lab::Lab;
use integration::mesh::{self, Started, binary};
use integration::package::{self, ScratchRoot};
use integration::wait;
use rma_ca::NodeCert;

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_new_machine_joins_with_one_token_and_serves_a_call_through_routerd() {
    // Once, before any worker: a root (offline), an issuing CA it signed (online), the
    // lighthouse's and routerd's certificates, the root's list, and the worker bundle.
    let testsvc = binary("testsvc").unwrap();
    let mut site = JoinSite::new(&[path(&testsvc), "--worker", "volunteer"]).unwrap();
    let dir = site.net.lab.dir().to_owned();
    let url = site.url.clone();
    // The commands run for this worker, as the operator and the volunteer would type them.
    let mut commands: Vec<String> = Vec::new();

    // For this worker, the operator: one token.
    let token = site.token(1).unwrap();
    commands.push(format!(
        "rma-ca token create --dir {} --groups workers --name-prefix worker- --uses 1 --ttl 1h \
         --bundle worker --url {url}",
        site.operator.issuing.display()
    ));

    // On the new machine (behind its own NAT): install the package, then join.
    let mut nat = site.net.site("volunteer-router", Nat::Cone).unwrap();
    let (w_ns, _) = site.net.host_behind(&mut nat, "volunteer").unwrap();
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
    let joined = join(&site.net.lab, "volunteer", &etc).unwrap();
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
        &mut site.net.lab,
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
            let (status, body) = site.call(&format!("/service/{SERVICE}/hello")).unwrap();
            (status == 200 && body["worker"] == "volunteer").then_some(body)
        },
    )
    .unwrap();
    let first_call_secs = started.elapsed().as_secs_f64();
    assert_eq!(answered["service"], SERVICE, "{answered}");

    // The token is spent: a second machine with it is refused, and nothing is written.
    let elsewhere = dir.join("second-machine");
    let why = join(&site.net.lab, "other", &elsewhere)
        .unwrap_err()
        .to_string();
    assert!(why.contains("the token is used up"), "{why}");
    assert!(!elsewhere.exists());

    let commands: Vec<&str> = commands.iter().map(String::as_str).collect();
    eprintln!(
        "operator commands for the worker: {} ({commands:?}); join took {join_secs:.2} s; \
         first call answered {first_call_secs:.1} s after join started",
        commands.len()
    );
}
