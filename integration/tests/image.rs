//! The worker image (`make image`), run with podman as a volunteer would run it, in a namespace
//! of its own behind a NAT: on the first start it joins with RMA_JOIN_URL and RMA_JOIN_TOKEN,
//! keeps its keys and certificate in a volume, runs meshd in the foreground, registers with
//! routerd and serves a call through routerd's public listener. Started again on the same
//! volume without a token, it runs with the same certificate and serves again.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::path::Path;
use std::time::{Duration, Instant};

use integration::container::{self, IMAGE, Podman};
use integration::internet::Nat;
use integration::join_site::{JoinSite, SERVICE};
use integration::lab::Ns;
use integration::mesh::binary;
use integration::wait;
use rma_ca::NodeCert;

const VOLUME: &str = "rma-worker";
const NAME: &str = "rma-worker";
/// Where the bundle's service program is inside the container (bind-mounted from the build).
const SERVICE_PROGRAM: &str = "/usr/local/bin/testsvc";

/// `podman run` as the README has it, with the test's storage and limits, in `ns`'s network.
fn run_args(podman: &Podman, ns: &Ns, testsvc: &Path, env: &[&str]) -> Vec<String> {
    let mut args = podman.global_args();
    args.extend(
        [
            "run",
            "--rm",
            "--pull",
            "never",
            "--name",
            NAME,
            "--hostname",
            "volunteer",
            "--network",
            &format!("ns:/run/netns/{}", ns.name()),
            "--cap-add",
            "NET_ADMIN",
            "--device",
            "/dev/net/tun",
            "--volume",
            &format!("{VOLUME}:/etc/meshd"),
            "--volume",
            &format!("{}:{SERVICE_PROGRAM}:ro", testsvc.display()),
        ]
        .map(str::to_owned),
    );
    args.extend(Podman::limit_args());
    for var in env {
        args.extend(["--env".to_owned(), (*var).to_owned()]);
    }
    args.push(IMAGE.to_owned());
    args
}

#[test]
fn the_worker_image_joins_on_first_start_and_reuses_its_volume_after() {
    let testsvc = binary("testsvc").unwrap();
    let mut site = JoinSite::new(&[SERVICE_PROGRAM, "--worker", "volunteer"]).unwrap();
    // Declared after the site, so its containers go before the namespaces do.
    let podman = Podman::new().unwrap();
    let loaded = podman
        .run(&[
            "load",
            "--quiet",
            "--input",
            container::archive().unwrap().to_str().unwrap(),
        ])
        .unwrap();
    assert!(String::from_utf8_lossy(&loaded.stdout).contains(IMAGE));

    let mut nat = site.net.site("volunteer-router", Nat::Cone).unwrap();
    let (w_ns, _) = site.net.host_behind(&mut nat, "volunteer").unwrap();
    let token = site.token(1).unwrap();
    let podman_bin = Path::new("/usr/bin/podman");
    // Waits for a call to be answered, and fails at once if the container has ended.
    let answered = |site: &mut JoinSite, container: usize, what: &str| {
        wait::until(what, Duration::from_secs(90), || {
            let proc = site.net.lab.proc(container);
            if let Some(status) = proc.exited() {
                panic!("the container ended ({status}): {}", proc.log_text());
            }
            let (status, body) = site.call(&format!("/service/{SERVICE}/hello")).unwrap();
            (status == 200 && body["worker"] == "volunteer").then_some(body)
        })
        .unwrap()
    };

    // The first start: the token and the URL in the environment (`--env NAME` takes the value
    // from podman's own environment, so the token is on no command line).
    let started = Instant::now();
    let args = run_args(
        &podman,
        &w_ns,
        &testsvc,
        &["RMA_JOIN_URL", "RMA_JOIN_TOKEN"],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let first = site
        .net
        .lab
        .spawn_outside(
            "worker-first",
            podman_bin,
            &args,
            &[
                ("RMA_JOIN_URL", Path::new(&site.url)),
                ("RMA_JOIN_TOKEN", Path::new(&token)),
            ],
        )
        .unwrap();
    let body = answered(
        &mut site,
        first,
        "a call through routerd to reach the container",
    );
    let first_call_secs = started.elapsed().as_secs_f64();
    assert_eq!(body["service"], SERVICE, "{body}");
    let log = site.net.lab.proc(first).log_text();
    assert!(log.contains("joined as worker-volunteer"), "{log}");

    // The volume holds the keys (0600), the certificate and the config the join wrote.
    let state = podman.volume_path(VOLUME).unwrap();
    let cert = NodeCert::from_bytes(&std::fs::read(state.join("node.crt")).unwrap()).unwrap();
    assert_eq!(cert.name().as_str(), "worker-volunteer");
    let key_mode = std::fs::metadata(state.join("node.key")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode.permissions()) & 0o777,
        0o600
    );
    assert!(state.join("meshd.toml").is_file());

    // Stopped (SIGTERM through tini to meshd) and started again, with no token: no second
    // join, the same certificate, and calls answered again.
    podman.run(&["stop", "--time", "20", NAME]).unwrap();
    site.net
        .lab
        .wait_exit(first, Duration::from_secs(30))
        .unwrap();
    let stopped_at = Instant::now();
    let args = run_args(&podman, &w_ns, &testsvc, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let second = site
        .net
        .lab
        .spawn_outside("worker-second", podman_bin, &args, &[])
        .unwrap();
    answered(
        &mut site,
        second,
        "a call through routerd to reach the restarted container",
    );
    let again_secs = stopped_at.elapsed().as_secs_f64();
    let log = site.net.lab.proc(second).log_text();
    assert!(
        !log.contains("joined as"),
        "a second join on restart: {log}"
    );
    let again = NodeCert::from_bytes(&std::fs::read(state.join("node.crt")).unwrap()).unwrap();
    assert_eq!(
        again.serial(),
        cert.serial(),
        "the volume's certificate is reused"
    );

    eprintln!(
        "image: first start to first answered call {first_call_secs:.1} s; restart on the \
         volume to an answered call {again_secs:.1} s"
    );
}
